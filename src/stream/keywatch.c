/* keywatch.c — see keywatch.h. */
#include "stream/keywatch.h"
#include "core/common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char key_id[CTI_KEY_ID_LEN + 1];
    int sockets;
    bool seen; /* during a check: the key's row was read */
} watched_t;

struct cti_keywatch {
    pthread_mutex_t lock; /* protects keys, n, cap */
    watched_t *keys;
    int n, cap;
};

cti_keywatch_t *cti_keywatch_new(void)
{
    cti_keywatch_t *kw = cti_calloc(1, sizeof *kw);
    pthread_mutex_init(&kw->lock, NULL);
    return kw;
}

void cti_keywatch_free(cti_keywatch_t *kw)
{
    if (!kw)
        return;
    pthread_mutex_destroy(&kw->lock);
    free(kw->keys);
    free(kw);
}

static watched_t *find(cti_keywatch_t *kw, const char *key_id)
{
    for (int i = 0; i < kw->n; i++)
        if (!strcmp(kw->keys[i].key_id, key_id))
            return &kw->keys[i];
    return NULL;
}

void cti_keywatch_add(cti_keywatch_t *kw, const char *key_id)
{
    if (!key_id[0])
        return;
    pthread_mutex_lock(&kw->lock);
    watched_t *w = find(kw, key_id);
    if (!w) {
        if (kw->n == kw->cap)
            kw->keys = cti_realloc(kw->keys, (size_t)(kw->cap = kw->cap ? 2 * kw->cap : 16) *
                                                 sizeof *kw->keys);
        w = &kw->keys[kw->n++];
        memset(w, 0, sizeof *w);
        snprintf(w->key_id, sizeof w->key_id, "%s", key_id);
    }
    w->sockets++;
    pthread_mutex_unlock(&kw->lock);
}

void cti_keywatch_remove(cti_keywatch_t *kw, const char *key_id)
{
    if (!key_id[0])
        return;
    pthread_mutex_lock(&kw->lock);
    watched_t *w = find(kw, key_id);
    if (w && --w->sockets == 0)
        *w = kw->keys[--kw->n];
    pthread_mutex_unlock(&kw->lock);
}

bool cti_keywatch_usable(const cti_key_t *k, int64_t now, int *code, const char **why)
{
    if (!k->app_active) {
        *code = CTI_WS_CLOSE_APP_INACTIVE;
        *why = "the app was deactivated";
        return false;
    }
    if (k->revoked_at || (k->expires_at && now >= k->expires_at)) {
        *code = CTI_WS_CLOSE_KEY_GONE;
        *why = k->revoked_at ? "the API key was revoked" : "the API key expired";
        return false;
    }
    return true;
}

typedef struct {
    const char **ids; /* the keys read; NULL once found usable */
    int *codes;
    const char **whys;
    int n;
    int64_t now;
} check_t;

static int note_key(const cti_key_t *k, void *ud)
{
    check_t *c = ud;
    for (int i = 0; i < c->n; i++)
        if (c->ids[i] && !strcmp(c->ids[i], k->key_id)) {
            if (cti_keywatch_usable(k, c->now, &c->codes[i], &c->whys[i]))
                c->ids[i] = NULL;
            break;
        }
    return 0;
}

int cti_keywatch_check(cti_keywatch_t *kw, cti_db_t *db, int64_t now, cti_keywatch_dead_fn dead,
                       void *ud)
{
    pthread_mutex_lock(&kw->lock); /* a copy: the read happens without the lock */
    int n = kw->n;
    char(*copy)[CTI_KEY_ID_LEN + 1] = cti_malloc((size_t)(n ? n : 1) * sizeof *copy);
    for (int i = 0; i < n; i++)
        memcpy(copy[i], kw->keys[i].key_id, sizeof copy[i]);
    pthread_mutex_unlock(&kw->lock);
    check_t c = {.n = n, .now = now};
    c.ids = cti_malloc((size_t)(n ? n : 1) * sizeof *c.ids);
    c.codes = cti_malloc((size_t)(n ? n : 1) * sizeof *c.codes);
    c.whys = cti_malloc((size_t)(n ? n : 1) * sizeof *c.whys);
    for (int i = 0; i < n; i++) {
        c.ids[i] = copy[i];
        c.codes[i] = CTI_WS_CLOSE_KEY_GONE; /* a key whose row is gone */
        c.whys[i] = "the API key no longer exists";
    }
    int rc = n ? cti_keys_get_many(db, c.ids, n, note_key, &c) : 0;
    for (int i = 0; rc == 0 && i < n; i++)
        if (c.ids[i])
            dead(c.ids[i], c.codes[i], c.whys[i], ud);
    free(c.ids);
    free(c.codes);
    free(c.whys);
    free(copy);
    return rc;
}
