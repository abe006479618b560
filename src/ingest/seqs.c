/* seqs.c — see seqs.h. */
#include "ingest/seqs.h"
#include "core/common.h"
#include "repo/events.h"
#include "store/wakeup.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char app_id[37];
    int64_t first; /* the first seq this transaction appended */
    int64_t last;
} counter_t;

struct cti_seqs {
    cti_db_t *db;
    counter_t *c; /* sorted by app_id (strcmp): found by binary search */
    int n, cap;
};

cti_seqs_t *cti_seqs_new(cti_db_t *db)
{
    cti_seqs_t *s = cti_calloc(1, sizeof *s);
    s->db = db;
    return s;
}

void cti_seqs_free(cti_seqs_t *s)
{
    if (!s)
        return;
    free(s->c);
    free(s);
}

/* Where app_id's counter is, or would go to keep the order: *found says which. */
static int position(const cti_seqs_t *s, const char *app_id, bool *found)
{
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2, cmp = strcmp(s->c[mid].app_id, app_id);
        if (cmp == 0) {
            *found = true;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* A new counter for app_id at i (last = -1: not locked yet). */
static counter_t *insert_at(cti_seqs_t *s, int i, const char *app_id)
{
    if (s->n == s->cap)
        s->c = cti_realloc(s->c, (size_t)(s->cap = s->cap ? 2 * s->cap : 16) * sizeof *s->c);
    memmove(&s->c[i + 1], &s->c[i], (size_t)(s->n - i) * sizeof *s->c);
    s->n++;
    counter_t *c = &s->c[i];
    snprintf(c->app_id, sizeof c->app_id, "%s", app_id);
    c->first = 0;
    c->last = -1;
    return c;
}

/* Locks c's row alone (an app not in cti_seqs_lock's list). */
static int lock_one(cti_seqs_t *s, counter_t *c)
{
    int rc = cti_seq_lock(s->db, c->app_id, &c->last);
    if (rc == 0)
        c->first = c->last + 1;
    return rc;
}

/* The app's counter; the first use locks its row. */
static int counter(cti_seqs_t *s, const char *app_id, counter_t **out)
{
    bool found;
    int i = position(s, app_id, &found);
    if (!found) {
        int rc = lock_one(s, insert_at(s, i, app_id));
        if (rc != 0) { /* not counted: the caller's transaction fails */
            memmove(&s->c[i], &s->c[i + 1], (size_t)(s->n - i - 1) * sizeof *s->c);
            s->n--;
            return rc;
        }
    }
    *out = &s->c[i];
    return 0;
}

static int by_name(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static int note_locked(const char *app_id, int64_t last, void *ud)
{
    cti_seqs_t *s = ud;
    bool found;
    int i = position(s, app_id, &found);
    if (found && s->c[i].last < 0) {
        s->c[i].last = last;
        s->c[i].first = last + 1;
    }
    return 0;
}

/* All the apps' rows in one round trip (cti_seq_lock_many), not one each: a
 * batch spread over many apps names up to one app per event. */
int cti_seqs_lock(cti_seqs_t *s, const char *const *apps, int n)
{
    const char **sorted = cti_malloc((size_t)(n ? n : 1) * sizeof *sorted);
    memcpy(sorted, apps, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, by_name);
    int k = 0;
    for (int i = 0; i < n; i++) { /* each app once, and only those not counted yet */
        bool found;
        if (i > 0 && !strcmp(sorted[i], sorted[i - 1]))
            continue;
        int at = position(s, sorted[i], &found);
        if (!found) {
            insert_at(s, at, sorted[i]);
            sorted[k++] = sorted[i]; /* the caller's string (counters move as they are added) */
        }
    }
    int rc = cti_seq_lock_many(s->db, sorted, k, note_locked, s);
    for (int i = 0; rc == 0 && i < s->n; i++) /* a row the lock did not return: alone */
        if (s->c[i].last < 0)
            rc = lock_one(s, &s->c[i]);
    free(sorted);
    return rc;
}

int cti_seqs_next(cti_seqs_t *s, const char *app_id, int64_t *seq)
{
    counter_t *c;
    int rc = counter(s, app_id, &c);
    if (rc == 0)
        *seq = ++c->last;
    return rc;
}

/* PostgreSQL: one NOTIFY per transaction (split if it would not fit). */
static int notify_ranges(cti_seqs_t *s)
{
    if (!cti_store_has(cti_db_store(s->db), CTI_CAP_NOTIFY))
        return 0;
    char payload[7800];
    size_t len = 0;
    int rc = 0;
    for (int i = 0; rc == 0 && i < s->n; i++) {
        const counter_t *c = &s->c[i];
        if (c->last < c->first)
            continue;
        char one[128];
        int n = snprintf(one, sizeof one, "%s:%lld:%lld", c->app_id, (long long)c->first,
                         (long long)c->last);
        if (len + (size_t)n + 2 > sizeof payload) { /* full: send this part */
            rc = cti_notify(s->db, CTI_EVENTS_CHANNEL, payload);
            len = 0;
        }
        len += (size_t)snprintf(payload + len, sizeof payload - len, "%s%s", len ? ";" : "", one);
    }
    return rc == 0 && len ? cti_notify(s->db, CTI_EVENTS_CHANNEL, payload) : rc;
}

int cti_seqs_save(cti_seqs_t *s)
{
    const char **apps = cti_malloc((size_t)(s->n ? s->n : 1) * sizeof *apps);
    int64_t *last = cti_malloc((size_t)(s->n ? s->n : 1) * sizeof *last);
    int n = 0;
    for (int i = 0; i < s->n; i++)
        if (s->c[i].last >= s->c[i].first) {
            apps[n] = s->c[i].app_id;
            last[n++] = s->c[i].last;
        }
    int rc = cti_seq_set_many(s->db, apps, last, n); /* all apps' at once */
    free(apps);
    free(last);
    return rc == 0 ? notify_ranges(s) : rc;
}
