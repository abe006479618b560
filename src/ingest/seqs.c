/* seqs.c — see seqs.h. */
#include "ingest/seqs.h"
#include "core/common.h"
#include "repo/events.h"
#include "store/wakeup.h"

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
    counter_t *c;
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

/* The app's counter; the first use locks its row. */
static int counter(cti_seqs_t *s, const char *app_id, counter_t **out)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->c[i].app_id, app_id)) {
            *out = &s->c[i];
            return 0;
        }
    if (s->n == s->cap)
        s->c = cti_realloc(s->c, (size_t)(s->cap = s->cap ? 2 * s->cap : 16) * sizeof *s->c);
    counter_t *c = &s->c[s->n];
    int rc = cti_seq_lock(s->db, app_id, &c->last);
    if (rc != 0)
        return rc;
    c->first = c->last + 1;
    snprintf(c->app_id, sizeof c->app_id, "%s", app_id);
    s->n++;
    *out = c;
    return 0;
}

static int by_name(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

int cti_seqs_lock(cti_seqs_t *s, const char *const *apps, int n)
{
    const char **sorted = cti_malloc((size_t)(n ? n : 1) * sizeof *sorted);
    memcpy(sorted, apps, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, by_name);
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        counter_t *c;
        if (i == 0 || strcmp(sorted[i], sorted[i - 1]))
            rc = counter(s, sorted[i], &c);
    }
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
    int rc = 0;
    for (int i = 0; rc == 0 && i < s->n; i++)
        if (s->c[i].last >= s->c[i].first)
            rc = cti_seq_set(s->db, s->c[i].app_id, s->c[i].last);
    return rc == 0 ? notify_ranges(s) : rc;
}
