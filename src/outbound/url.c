/* url.c — see url.h. */
#include "outbound/url.h"
#include "core/cidr.h"
#include "core/common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- URLs ---------------------------------------------------------------------------------- */

static int refuse(char *why, size_t cap, const char *text)
{
    snprintf(why, cap, "%s", text);
    return CTI_EINVAL;
}

/* Splits "host[:port]" or "[v6][:port]" (n bytes at a) into host (copied
 * without brackets, cap bytes) and checks the port; *v6 says which. */
static int split_authority(const char *a, size_t n, char *host, size_t cap, bool *v6, char *why,
                           size_t whycap)
{
    const char *end = a + n, *colon;
    *v6 = a < end && *a == '[';
    if (*v6) {
        const char *close = memchr(a, ']', n);
        if (!close)
            return refuse(why, whycap, "'url' has an IPv6 address without its closing ]");
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':')
            return refuse(why, whycap, "'url' has characters after the IPv6 address's ]");
        a++;
        n = (size_t)(close - a);
    } else {
        colon = memchr(a, ':', n);
        if (colon)
            n = (size_t)(colon - a);
    }
    if (n == 0)
        return refuse(why, whycap, "'url' must name a host");
    if (n >= cap)
        return refuse(why, whycap, "'url' has a host name over 253 characters");
    memcpy(host, a, n);
    host[n] = '\0';
    if (colon) {
        size_t digits = (size_t)(end - colon - 1);
        long port = 0;
        for (const char *p = colon + 1; p < end && port <= 65535; p++)
            port = *p >= '0' && *p <= '9' ? port * 10 + (*p - '0') : 65536;
        if (digits == 0 || digits > 5 || port < 1 || port > 65535)
            return refuse(why, whycap, "'url' has a port that is not a number from 1 to 65535");
    }
    return 0;
}

/* Refuses what production does not deliver to (unless allowed). */
static int check_host(const char *host, bool v6, bool guard, char *why, size_t whycap)
{
    unsigned char addr[16];
    struct in_addr v4;
    static const char private_msg[] =
        "'url' points to a loopback, private, link-local, multicast or reserved address: "
        "production delivers only to public addresses (OUTBOUND_ALLOW_PRIVATE=true allows "
        "them)";
    if (v6) {
        if (inet_pton(AF_INET6, host, addr) != 1)
            return refuse(why, whycap, "'url' has a malformed IPv6 address");
        return guard && cti_ip_is_private(addr) ? refuse(why, whycap, private_msg) : 0;
    }
    if (strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") !=
        strlen(host))
        return refuse(why, whycap, "'url' must have a DNS name (internationalized names in "
                                   "their xn-- form) or an IP address as its host");
    /* inet_aton also reads the forms a resolver does: 127.1, 0x7f.0.0.1, 2130706433 */
    if (inet_aton(host, &v4)) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(addr, mapped, 12);
        memcpy(addr + 12, &v4.s_addr, 4); /* network order */
        return guard && cti_ip_is_private(addr) ? refuse(why, whycap, private_msg) : 0;
    }
    size_t n = strlen(host);
    if (n && host[n - 1] == '.')
        n--; /* "localhost." is localhost */
    bool local = (n == 9 && !strncasecmp(host, "localhost", 9)) ||
                 (n > 10 && !strncasecmp(host + n - 10, ".localhost", 10));
    return guard && local ? refuse(why, whycap, private_msg) : 0;
}

int cti_outbound_url_check(const char *url, bool production, bool allow_private, char *why,
                           size_t whycap)
{
    size_t len = strlen(url);
    if (len > CTI_ENDPOINT_URL_MAX)
        return refuse(why, whycap, "'url' must be at most 2048 characters");
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return refuse(why, whycap, "'url' must be ASCII without spaces or control "
                                       "characters (percent-encode the rest)");
    bool https = !strncasecmp(url, "https://", 8);
    if (!https && strncasecmp(url, "http://", 7))
        return refuse(why, whycap, "'url' must be an http:// or https:// URL");
    if (production && !https)
        return refuse(why, whycap, "'url' must be https:// in production");
    if (strchr(url, '#'))
        return refuse(why, whycap, "'url' must not have a #fragment");
    const char *a = url + (https ? 8 : 7);
    size_t n = strcspn(a, "/?");
    if (memchr(a, '@', n))
        return refuse(why, whycap, "'url' must not carry credentials (user:password@)");
    char host[254];
    bool v6;
    int rc = split_authority(a, n, host, sizeof host, &v6, why, whycap);
    if (rc == 0)
        rc = check_host(host, v6, production && !allow_private, why, whycap);
    return rc;
}
