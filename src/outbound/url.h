/*
 * url.h — which URLs an outbound webhook endpoint may have, and which
 * addresses are not the public internet.
 *
 * Checked when an endpoint is created or changed (api/endpoints.c); the
 * sender checks the addresses a host name resolves to when it connects
 * (cti_outbound_ip_private), since a name may point anywhere later.
 * Pure functions; thread-safe.
 */
#ifndef CTI_OUTBOUND_URL_H
#define CTI_OUTBOUND_URL_H

#include <stdbool.h>
#include <stddef.h>

#define CTI_ENDPOINT_URL_MAX 2048 /* characters (ASCII) */

/* 0 when url may be an endpoint's; else CTI_EINVAL with a sentence in why
 * naming the problem (it starts "'url' ..."). Every environment: http:// or
 * https:// only, ASCII without spaces or control characters, a host, no
 * credentials (user:password@), no #fragment, at most CTI_ENDPOINT_URL_MAX
 * characters, a port of 1-65535. Production also: https:// only, and a host
 * that is an IP literal in a loopback, private, link-local, unspecified,
 * multicast or reserved range (or "localhost") is refused unless
 * allow_private (OUTBOUND_ALLOW_PRIVATE). */
int cti_outbound_url_check(const char *url, bool production, bool allow_private, char *why,
                           size_t whycap);

/* Is the address (family AF_INET: 4 bytes, AF_INET6: 16 bytes, network
 * order) loopback, private, shared (100.64/10), link-local, unspecified,
 * multicast, broadcast or reserved? IPv6 forms embedding an IPv4 address
 * (mapped, compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by it. */
bool cti_outbound_ip_private(int family, const unsigned char *addr);

#endif
