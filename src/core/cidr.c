/* cidr.c — see cidr.h. */
#include "core/cidr.h"
#include "core/common.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int cti_ip_parse(const char *text, uint8_t out[16])
{
    struct in_addr a4;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        memcpy(out, v4_prefix, 12);
        memcpy(out + 12, &a4, 4);
        return 0;
    }
    return inet_pton(AF_INET6, text, out) == 1 ? 0 : CTI_EINVAL;
}

void cti_ip_format(const uint8_t addr[16], char *out, size_t cap)
{
    if (!memcmp(addr, v4_prefix, 12))
        inet_ntop(AF_INET, addr + 12, out, (socklen_t)cap);
    else
        inet_ntop(AF_INET6, addr, out, (socklen_t)cap);
}

static bool v4_private(const uint8_t a[4])
{
    return a[0] == 0 || a[0] == 10 || a[0] == 127 || a[0] >= 224 ||
           (a[0] == 100 && (a[1] & 0xc0) == 64) || (a[0] == 169 && a[1] == 254) ||
           (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
           (a[0] == 192 && a[1] == 0 && a[2] == 0) || (a[0] == 198 && (a[1] & 0xfe) == 18);
}

bool cti_ip_is_private(const uint8_t addr[16])
{
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const uint8_t zero[12] = {0};
    /* IPv4 written as IPv6: mapped, NAT64, and the deprecated compatible
     * ::a.b.c.d (which takes in :: and ::1: 0.0.0.0 and 0.0.0.1 are private) */
    if (!memcmp(addr, v4_prefix, 12) || !memcmp(addr, nat64, 12) || !memcmp(addr, zero, 12))
        return v4_private(addr + 12);
    if (addr[0] == 0x20 && addr[1] == 0x02) /* 6to4 2002:a.b.c.d::/48 */
        return v4_private(addr + 2);
    return (addr[0] & 0xfe) == 0xfc ||                      /* fc00::/7 unique local */
           (addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
           (addr[0] == 0xfe && (addr[1] & 0xc0) == 0xc0) || /* fec0::/10 site-local */
           addr[0] == 0xff;                                 /* multicast */
}

static void mask(uint8_t addr[16], int bits)
{
    for (int i = 0; i < 16; i++) {
        int keep = bits - 8 * i;
        if (keep <= 0)
            addr[i] = 0;
        else if (keep < 8)
            addr[i] &= (uint8_t)(0xff << (8 - keep));
    }
}

int cti_cidr_parse(const char *text, cti_cidr_t *out)
{
    char buf[64];
    const char *slash = strchr(text, '/');
    size_t len = slash ? (size_t)(slash - text) : strlen(text);
    if (len == 0 || len >= sizeof buf)
        return CTI_EINVAL;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (cti_ip_parse(buf, out->addr) != 0)
        return CTI_EINVAL;
    bool v4 = strchr(buf, ':') == NULL;
    int max = v4 ? 32 : 128;
    int64_t bits = max;
    if (slash && (!slash[1] || strspn(slash + 1, "0123456789") != strlen(slash + 1) ||
                  strlen(slash + 1) > 3 || cti_parse_i64(slash + 1, &bits) != 0 || bits > max))
        return CTI_EINVAL;
    out->bits = (int)bits + (v4 ? 96 : 0);
    mask(out->addr, out->bits);
    return 0;
}

int cti_cidr_list_parse(const char *text, cti_cidr_list_t *out, char *err, size_t errcap)
{
    out->n = 0;
    out->items = NULL;
    for (const char *p = text ? text : ""; *p;) {
        size_t len = strcspn(p, ",");
        char item[80];
        const char *s = p, *e = p + len;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        p += len + (p[len] == ',');
        if (s == e)
            continue;
        cti_cidr_t c;
        snprintf(item, sizeof item, "%.*s", (int)(e - s), s);
        if ((size_t)(e - s) >= sizeof item || cti_cidr_parse(item, &c) != 0) {
            snprintf(err, errcap,
                     "\"%.*s\" is not an address or CIDR block (such as "
                     "10.0.0.0/8 or 2001:db8::/32)",
                     (int)(e - s > 64 ? 64 : e - s), s);
            cti_cidr_list_free(out);
            return CTI_EINVAL;
        }
        out->items = cti_realloc(out->items, (out->n + 1) * sizeof *out->items);
        out->items[out->n++] = c;
    }
    return 0;
}

void cti_cidr_list_free(cti_cidr_list_t *l)
{
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

bool cti_cidr_list_has(const cti_cidr_list_t *l, const uint8_t addr[16])
{
    for (size_t i = 0; l && i < l->n; i++) {
        uint8_t a[16];
        memcpy(a, addr, 16);
        mask(a, l->items[i].bits);
        if (!memcmp(a, l->items[i].addr, 16))
            return true;
    }
    return false;
}

/* One X-Forwarded-For entry as an address: spaces trimmed, and the port some
 * proxies add ("1.2.3.4:5678", "[2001:db8::1]:443") dropped. */
static bool xff_entry(const char *s, size_t len, uint8_t out[16])
{
    char buf[64];
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= sizeof buf)
        return false;
    if (*s == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return false;
        s++;
        len = (size_t)(close - s);
    } else if (memchr(s, '.', len)) {
        const char *colon = memchr(s, ':', len);
        if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)))
            len = (size_t)(colon - s); /* a.b.c.d:port */
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return cti_ip_parse(buf, out) == 0;
}

const char *cti_client_addr_choose(const cti_cidr_list_t *trusted, const char *peer,
                                   const char *xff, char *out, size_t cap)
{
    uint8_t a[16], chosen[16];
    snprintf(out, cap, "%s", peer);
    if (!xff || !trusted || trusted->n == 0 || cti_ip_parse(peer, a) != 0 ||
        !cti_cidr_list_has(trusted, a))
        return out;
    bool any = false;
    for (size_t end = strlen(xff); end > 0;) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        if (!xff_entry(xff + start, end - start, a)) {
            if (start == end || strspn(xff + start, " \t") == end - start) {
                end = start ? start - 1 : 0; /* an empty entry (",,"): skip it */
                continue;
            }
            break;
        }
        memcpy(chosen, a, 16);
        any = true;
        if (!cti_cidr_list_has(trusted, a))
            break;
        end = start ? start - 1 : 0;
    }
    if (any)
        cti_ip_format(chosen, out, cap);
    return out;
}

void cti_ip_limit_key(const char *addr_text, char *out, size_t cap)
{
    uint8_t a[16];
    if (cti_ip_parse(addr_text, a) != 0 || !memcmp(a, v4_prefix, 12)) {
        snprintf(out, cap, "%s", addr_text);
        return;
    }
    char text[INET6_ADDRSTRLEN];
    mask(a, 64);
    inet_ntop(AF_INET6, a, text, sizeof text);
    snprintf(out, cap, "%s/64", text);
}
