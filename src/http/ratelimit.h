/*
 * ratelimit.h — token buckets by key (an app id, a client address), for the
 * contract's rate limits (RATE_LIMIT_API, RATE_LIMIT_ADMIN; api/limits.c).
 *
 * A bucket holds up to `burst` tokens and refills at `rate` tokens a second;
 * a request takes one or is refused with the whole seconds until one is back.
 *
 * Memory is bounded: a fixed table of sets of 8 buckets, a key hashed to one
 * set; a new key takes an empty bucket or the one of its set used longest
 * ago. A bucket idle for burst/rate seconds is full, so forgetting it loses
 * nothing; forgetting a busier one (more than 8 busy keys hashed to one set)
 * only ever gives that key a full bucket again, never refuses anyone wrongly.
 * Each set has its own mutex (striped: threads taking different keys rarely
 * meet), held for a few dozen instructions.
 *
 * Buckets are per process: behind a load balancer over N instances a key
 * may get up to N times the rate.
 *
 * Threads: any, once created; new/free on the main thread.
 */
#ifndef CTI_HTTP_RATELIMIT_H
#define CTI_HTTP_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cti_ratelimit cti_ratelimit_t;

/* A table of about `keys` buckets (rounded up to a power of two, >= 8) of
 * `rate` tokens/s and `burst` tokens. Never NULL. Free with cti_ratelimit_free(). */
cti_ratelimit_t *cti_ratelimit_new(double rate, double burst, int keys);
void cti_ratelimit_free(cti_ratelimit_t *rl);

/* Takes a token from key's bucket at now_ms (a monotonic clock). True when
 * there was one; else false and *retry_after_s the whole seconds (>= 1)
 * until there is. */
bool cti_ratelimit_take(cti_ratelimit_t *rl, const char *key, int64_t now_ms, int *retry_after_s);

#endif
