/*
 * url.h — which URLs an outbound webhook endpoint may have, and which
 * addresses are not the public internet.
 *
 * Checked when an endpoint is created or changed (api/endpoints.c); the
 * sender checks the addresses a host name resolves to when it connects,
 * since a name may point anywhere later. Both judge an address with
 * cti_ip_is_private (core/cidr.h).
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
 * that is an IP literal cti_ip_is_private calls private (IPv4 in any of the
 * forms a resolver reads: 127.1, 2130706433, 0x7f.0.0.1), or "localhost", is
 * refused unless allow_private (OUTBOUND_ALLOW_PRIVATE). */
int cti_outbound_url_check(const char *url, bool production, bool allow_private, char *why,
                           size_t whycap);

#endif
