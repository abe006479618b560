/* brake.c — see brake.h. Separate chaining: a bucket holds a list of entries. */
#include "auth/brake.h"
#include "core/common.h"
#include "core/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SEED_LEN 16

typedef struct entry {
    char name[CTI_BRAKE_NAME_MAX];
    int64_t window_start;
    int failures;
    struct entry *next;
} entry_t;

struct cti_brake {
    pthread_mutex_t lock; /* protects everything below */
    int limit;
    int64_t window_ms;
    size_t max_entries, n;
    size_t mask; /* buckets - 1 (a power of two) */
    entry_t **buckets;
    unsigned char seed[SEED_LEN];
    int64_t next_sweep_at; /* while full: no sweep before this (nothing would expire) */
};

cti_brake_t *cti_brake_new(int limit, int64_t window_ms, size_t max_entries)
{
    assert(limit > 0 && window_ms > 0 && max_entries > 0);
    cti_brake_t *b = cti_calloc(1, sizeof *b);
    size_t buckets = 16;
    while (buckets < max_entries)
        buckets *= 2;
    b->limit = limit;
    b->window_ms = window_ms;
    b->max_entries = max_entries;
    b->mask = buckets - 1;
    b->buckets = cti_calloc_table(buckets * sizeof *b->buckets);
    cti_random_bytes(b->seed, sizeof b->seed);
    pthread_mutex_init(&b->lock, NULL);
    return b;
}

void cti_brake_free(cti_brake_t *b)
{
    if (!b)
        return;
    for (size_t i = 0; i <= b->mask; i++)
        for (entry_t *e = b->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    cti_free_table(b->buckets, (b->mask + 1) * sizeof *b->buckets);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static entry_t **bucket(cti_brake_t *b, const char *name)
{
    unsigned char buf[SEED_LEN + CTI_BRAKE_NAME_MAX];
    size_t len = strlen(name);
    memcpy(buf, b->seed, SEED_LEN);
    memcpy(buf + SEED_LEN, name, len);
    return &b->buckets[cti_hash_bytes(buf, SEED_LEN + len) & b->mask];
}

static bool live(const cti_brake_t *b, const entry_t *e, int64_t now)
{
    return now - e->window_start < b->window_ms;
}

/* name's entry, or NULL. name is already cut to CTI_BRAKE_NAME_MAX - 1. */
static entry_t *find(cti_brake_t *b, const char *name)
{
    for (entry_t *e = *bucket(b, name); e; e = e->next)
        if (!strcmp(e->name, name))
            return e;
    return NULL;
}

/* Frees every entry whose window is over. */
static void sweep(cti_brake_t *b, int64_t now)
{
    int64_t earliest_end = INT64_MAX;
    for (size_t i = 0; i <= b->mask; i++)
        for (entry_t **p = &b->buckets[i]; *p;) {
            entry_t *e = *p;
            if (live(b, e, now)) {
                if (e->window_start + b->window_ms < earliest_end)
                    earliest_end = e->window_start + b->window_ms;
                p = &e->next;
                continue;
            }
            *p = e->next;
            free(e);
            b->n--;
        }
    b->next_sweep_at = b->n >= b->max_entries ? earliest_end : 0;
}

static void cut(const char *name, char out[CTI_BRAKE_NAME_MAX])
{
    size_t len = strnlen(name, CTI_BRAKE_NAME_MAX - 1);
    memcpy(out, name, len);
    out[len] = '\0';
}

int cti_brake_count(cti_brake_t *b, const char *name, int64_t now, int64_t *retry_after_ms)
{
    char n[CTI_BRAKE_NAME_MAX];
    cut(name, n);
    pthread_mutex_lock(&b->lock);
    entry_t *e = find(b, n);
    int count = e && live(b, e, now) ? e->failures : 0;
    if (count >= b->limit && retry_after_ms)
        *retry_after_ms = e->window_start + b->window_ms - now;
    pthread_mutex_unlock(&b->lock);
    return count;
}

bool cti_brake_on(cti_brake_t *b, const char *name, int64_t now, int64_t *retry_after_ms)
{
    return cti_brake_count(b, name, now, retry_after_ms) >= b->limit;
}

bool cti_brake_fail(cti_brake_t *b, const char *name, int64_t now)
{
    char n[CTI_BRAKE_NAME_MAX];
    bool crossed = false;
    cut(name, n);
    pthread_mutex_lock(&b->lock);
    entry_t *e = find(b, n);
    if (!e && b->n >= b->max_entries && now >= b->next_sweep_at)
        sweep(b, now);
    if (!e && b->n < b->max_entries) {
        entry_t **head = bucket(b, n);
        e = cti_calloc(1, sizeof *e);
        memcpy(e->name, n, sizeof n);
        e->window_start = now;
        e->next = *head;
        *head = e;
        b->n++;
    }
    if (e) {
        if (!live(b, e, now)) { /* its own window is over: only its own count restarts */
            e->window_start = now;
            e->failures = 0;
        }
        crossed = ++e->failures == b->limit;
    }
    pthread_mutex_unlock(&b->lock);
    return crossed;
}

size_t cti_brake_size(cti_brake_t *b)
{
    pthread_mutex_lock(&b->lock);
    size_t n = b->n;
    pthread_mutex_unlock(&b->lock);
    return n;
}
