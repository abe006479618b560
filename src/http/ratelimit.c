/* ratelimit.c — see ratelimit.h. */
#include "http/ratelimit.h"
#include "core/common.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAYS    8
#define KEY_MAX 64

typedef struct {
    uint64_t hash;   /* 0: empty */
    int64_t last_ms; /* when tokens was computed */
    double tokens;
    char key[KEY_MAX];
} bucket_t;

typedef struct {
    bucket_t ways[WAYS];
} set_t;

/* Sets share LOCKS mutexes (set i: lock i % LOCKS), so the table itself is
 * only zeroed memory, touched as keys arrive. */
#define LOCKS 64

struct cti_ratelimit {
    double rate, burst;
    size_t nsets; /* a power of two */
    set_t *sets;
    pthread_mutex_t locks[LOCKS];
};

/* FNV-1a, never 0 (0 marks an empty bucket). */
static uint64_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

/* Refills b up to now and takes a token when there is one. */
static bool bucket_take(bucket_t *b, double rate, double burst, int64_t now_ms, int *retry_after_s)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * rate / 1000.0;
        if (b->tokens > burst)
            b->tokens = burst;
        b->last_ms = now_ms;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return true;
    }
    double wait_s = ceil((1.0 - b->tokens) / rate);
    *retry_after_s = wait_s < 1 ? 1 : wait_s > 86400 ? 86400 : (int)wait_s;
    return false;
}

cti_ratelimit_t *cti_ratelimit_new(double rate, double burst, int keys)
{
    assert(rate > 0 && burst >= 1);
    cti_ratelimit_t *rl = cti_calloc(1, sizeof *rl);
    rl->rate = rate;
    rl->burst = burst;
    rl->nsets = 1;
    while (rl->nsets * WAYS < (size_t)(keys > WAYS ? keys : WAYS))
        rl->nsets *= 2;
    rl->sets = cti_calloc_table(rl->nsets * sizeof *rl->sets);
    for (size_t i = 0; i < LOCKS; i++)
        pthread_mutex_init(&rl->locks[i], NULL);
    return rl;
}

void cti_ratelimit_free(cti_ratelimit_t *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < LOCKS; i++)
        pthread_mutex_destroy(&rl->locks[i]);
    cti_free_table(rl->sets, rl->nsets * sizeof *rl->sets);
    free(rl);
}

/* key's bucket in set s, or a new full one in the place of the empty or
 * least recently used. Under its set's lock. */
static bucket_t *find(set_t *s, uint64_t h, const char *key, double burst, int64_t now_ms)
{
    bucket_t *victim = &s->ways[0];
    for (int i = 0; i < WAYS; i++) {
        bucket_t *b = &s->ways[i];
        if (b->hash == h && !strncmp(b->key, key, KEY_MAX - 1))
            return b;
        if (victim->hash && (!b->hash || b->last_ms < victim->last_ms))
            victim = b;
    }
    victim->hash = h;
    snprintf(victim->key, sizeof victim->key, "%s", key);
    victim->tokens = burst;
    victim->last_ms = now_ms;
    return victim;
}

bool cti_ratelimit_take(cti_ratelimit_t *rl, const char *key, int64_t now_ms, int *retry_after_s)
{
    uint64_t h = key_hash(key);
    size_t i = (h >> 17) & (rl->nsets - 1);
    pthread_mutex_t *lock = &rl->locks[i % LOCKS];
    pthread_mutex_lock(lock);
    bool ok = bucket_take(find(&rl->sets[i], h, key, rl->burst, now_ms), rl->rate, rl->burst,
                          now_ms, retry_after_s);
    pthread_mutex_unlock(lock);
    return ok;
}
