/*
 * types.h — which events an outbound webhook endpoint receives.
 *
 * An endpoint's types are patterns: an event name ("call.ringing"), a
 * family ("call.*": every name starting "call."), or "*" (every event).
 * Stored space-separated (webhook_endpoints.types); NULL means every event.
 */
#ifndef CTI_OUTBOUND_TYPES_H
#define CTI_OUTBOUND_TYPES_H

#include <stdbool.h>
#include <stddef.h>

/* The event names the server emits (NULL-terminated), and their families. */
extern const char *const cti_event_names[];
extern const char *const cti_event_families[]; /* "call", "sms", ... */

/* 0 when pattern is a known name, a known family followed by ".*", or "*";
 * else CTI_EINVAL with a sentence in why naming the problem. */
int cti_evtypes_check(const char *pattern, char *why, size_t whycap);
/* Does event match the space-separated patterns (NULL: everything)? */
bool cti_evtypes_match(const char *types, const char *event);

#endif
