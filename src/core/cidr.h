/*
 * cidr.h — IP addresses and CIDR blocks (IPv4 and IPv6), for TRUSTED_PROXIES
 * and for choosing a request's client address from X-Forwarded-For.
 *
 * Addresses are kept as 16 bytes: IPv4 as the IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d), so "10.0.0.0/8" and a peer seen as ::ffff:10.1.2.3 on a
 * dual-stack socket match. Pure functions; any thread.
 */
#ifndef CTI_CORE_CIDR_H
#define CTI_CORE_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t addr[16]; /* masked to bits */
    int bits;         /* 0..128 (an IPv4 /n is 96 + n) */
} cti_cidr_t;

typedef struct cti_cidr_list {
    size_t n;
    cti_cidr_t *items;
} cti_cidr_list_t;

/* Parses a numeric address ("10.1.2.3", "2001:db8::1", "::ffff:10.1.2.3").
 * 0, or CTI_EINVAL. */
int cti_ip_parse(const char *text, uint8_t out[16]);
/* True for an address no public service has: unspecified, loopback, private
 * (RFC 1918, fc00::/7), shared (100.64/10), link-local, multicast, reserved,
 * and IPv4 ones written as IPv6 (mapped, compatible ::a.b.c.d, NAT64's
 * 64:ff9b::/96, 6to4's 2002::/16) of those; also fec0::/10. For
 * refusing outbound requests a user could aim inside the network (SSRF). */
bool cti_ip_is_private(const uint8_t addr[16]);
/* Writes addr as text: dotted IPv4 for an IPv4(-mapped) address. cap >= 46. */
void cti_ip_format(const uint8_t addr[16], char *out, size_t cap);
/* Parses "addr/bits" or a bare address (a host: /32 or /128). 0 or CTI_EINVAL. */
int cti_cidr_parse(const char *text, cti_cidr_t *out);
/* Parses a comma-separated list (spaces around items ignored; empty text is
 * an empty list). On CTI_EINVAL, err says which item and the list is empty.
 * Free with cti_cidr_list_free(). */
int cti_cidr_list_parse(const char *text, cti_cidr_list_t *out, char *err, size_t errcap);
void cti_cidr_list_free(cti_cidr_list_t *l);
/* Whether addr is inside one of the list's blocks. */
bool cti_cidr_list_has(const cti_cidr_list_t *l, const uint8_t addr[16]);

/* The client address of a request whose TCP peer is `peer` (text) and whose
 * X-Forwarded-For headers, joined with commas in the order received, are
 * `xff` (NULL: none). Unless the peer is inside `trusted`, the peer is the
 * client and the header is ignored. Otherwise the header is walked from the
 * right: the first address that is not itself a trusted proxy is the client;
 * an entry that is not an address stops the walk at the hop to its right (what
 * a trusted proxy said it saw is all we know); every entry trusted means the
 * left-most is the client. Writes the chosen address as text to out (cap >= 46)
 * and returns out. */
const char *cti_client_addr_choose(const cti_cidr_list_t *trusted, const char *peer,
                                   const char *xff, char *out, size_t cap);

/* A key for per-address limits: the address's text, but an IPv6 address's
 * /64 ("2001:db8:1:2::/64"), since one host holds a whole /64. */
void cti_ip_limit_key(const char *addr_text, char *out, size_t cap);

#endif
