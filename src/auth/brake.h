/*
 * brake.h — counts failed attempts per name (a client address, a key id) in
 * fixed windows: past `limit` failures in a window the name is braked until
 * the window ends.
 *
 * A real hash table: each name has its own entry, compared in full, so two
 * names never share a count and one never resets another's. Buckets are
 * chosen by a hash seeded at random per table, so a caller cannot pick names
 * that pile into one bucket. Bounded: at `max_entries` the entries whose
 * window is over are swept out (at most once per window while the table stays
 * full); a new name that still finds no room is not counted (it is not
 * braked), and no live entry is ever evicted to make room.
 *
 * Threads: any; one mutex per table, held for O(1) work (a sweep: O(n), at
 * most once per window).
 */
#ifndef CTI_AUTH_BRAKE_H
#define CTI_AUTH_BRAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTI_BRAKE_NAME_MAX 64 /* longer names are cut (an IPv6 address is ≤ 45) */

typedef struct cti_brake cti_brake_t;

/* A table braking a name after limit failures within window_ms, holding at
 * most max_entries names. Never returns NULL; free with cti_brake_free. */
cti_brake_t *cti_brake_new(int limit, int64_t window_ms, size_t max_entries);
void cti_brake_free(cti_brake_t *b);

/* Failures counted for name in its current window (0 when none, or over).
 * When that reaches the limit and retry_after_ms is not NULL, it is set to
 * the ms left until the window ends. */
int cti_brake_count(cti_brake_t *b, const char *name, int64_t now, int64_t *retry_after_ms);
/* True while name is braked (cti_brake_count(...) >= limit). */
bool cti_brake_on(cti_brake_t *b, const char *name, int64_t now, int64_t *retry_after_ms);
/* Counts one failure of name. True when this one reached the limit. */
bool cti_brake_fail(cti_brake_t *b, const char *name, int64_t now);
/* Names tracked now (tests). */
size_t cti_brake_size(cti_brake_t *b);

#endif
