/* url.c — see url.h. */
#include "outbound/url.h"
#include "core/common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool v4_private(uint32_t a)
{
    return (a >> 24) == 0 ||                  /* 0/8 "this network", unspecified */
           (a >> 24) == 10 ||                 /* 10/8 */
           (a >> 24) == 127 ||                /* loopback */
           (a & 0xffc00000u) == 0x64400000u || /* 100.64/10 shared (CGNAT) */
           (a & 0xffff0000u) == 0xa9fe0000u || /* 169.254/16 link-local (cloud metadata) */
           (a & 0xfff00000u) == 0xac100000u || /* 172.16/12 */
           (a & 0xffffff00u) == 0xc0000000u || /* 192.0.0/24 protocol assignments */
           (a & 0xffff0000u) == 0xc0a80000u || /* 192.168/16 */
           (a & 0xfffe0000u) == 0xc6120000u || /* 198.18/15 benchmarking */
           a >= 0xe0000000u;                   /* multicast, reserved, broadcast */
}

static uint32_t v4_at(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool v6_private(const unsigned char *b)
{
    static const unsigned char zero[12], mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff},
                                          nat64[12] = {0, 0x64, 0xff, 0x9b};
    if (!memcmp(b, zero, 12) || !memcmp(b, mapped, 12) || !memcmp(b, nat64, 12))
        return v4_private(v4_at(b + 12)); /* ::, ::1 and ::a.b.c.d included */
    if (b[0] == 0x20 && b[1] == 0x02)
        return v4_private(v4_at(b + 2)); /* 6to4 */
    return (b[0] & 0xfe) == 0xfc ||               /* fc00::/7 unique local */
           (b[0] == 0xfe && (b[1] & 0x80) == 0x80) || /* fe80::/10 link-, fec0::/10 site-local */
           b[0] == 0xff;                          /* multicast */
}

bool cti_outbound_ip_private(int family, const unsigned char *addr)
{
    return family == AF_INET ? v4_private(v4_at(addr)) : v6_private(addr);
}

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
        return guard && v6_private(addr) ? refuse(why, whycap, private_msg) : 0;
    }
    if (strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") !=
        strlen(host))
        return refuse(why, whycap, "'url' must have a DNS name (internationalized names in "
                                   "their xn-- form) or an IP address as its host");
    /* inet_aton also reads the forms a resolver does: 127.1, 0x7f.0.0.1, 2130706433 */
    if (inet_aton(host, &v4))
        return guard && v4_private(ntohl(v4.s_addr)) ? refuse(why, whycap, private_msg) : 0;
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
