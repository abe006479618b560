/* verifier.c — see verifier.h. A list guarded by a mutex, a condvar to wake. */
#include "auth/verifier.h"
#include "core/common.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct work {
    void (*fn)(void *arg);
    void *arg;
    struct work *next;
} work_t;

struct cti_verifier {
    pthread_mutex_t lock; /* protects head, tail, last_first, stopping */
    pthread_cond_t wake;
    work_t *head, *tail;
    work_t *last_first; /* the last of the items queued first at the head, or NULL */
    bool stopping;
    int nthreads;
    pthread_t *threads;
};

static void *loop(void *p)
{
    cti_verifier_t *v = p;
    pthread_mutex_lock(&v->lock);
    for (;;) {
        while (!v->head && !v->stopping)
            pthread_cond_wait(&v->wake, &v->lock);
        work_t *w = v->head;
        if (!w) /* stopping, and nothing left */
            break;
        v->head = w->next;
        if (!v->head)
            v->tail = NULL;
        if (v->last_first == w)
            v->last_first = NULL;
        pthread_mutex_unlock(&v->lock);
        w->fn(w->arg);
        free(w);
        pthread_mutex_lock(&v->lock);
    }
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

cti_verifier_t *cti_verifier_start(int threads)
{
    assert(threads > 0);
    cti_verifier_t *v = cti_calloc(1, sizeof *v);
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->wake, NULL);
    v->threads = cti_calloc((size_t)threads, sizeof *v->threads);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&v->threads[i], NULL, loop, v) != 0)
            cti_fatal("cannot start a verifier thread");
        pthread_setname_np(v->threads[i], "cti-verify");
        v->nthreads++;
    }
    return v;
}

void cti_verifier_run(cti_verifier_t *v, void (*fn)(void *arg), void *arg, bool first)
{
    work_t *w = cti_malloc(sizeof *w);
    w->fn = fn;
    w->arg = arg;
    pthread_mutex_lock(&v->lock);
    assert(!v->stopping);
    work_t **at = first ? (v->last_first ? &v->last_first->next : &v->head) : NULL;
    if (at) { /* after the other firsts, before the rest */
        w->next = *at;
        *at = w;
        v->last_first = w;
    } else {
        w->next = NULL;
        if (v->tail)
            v->tail->next = w;
        else
            v->head = w;
    }
    if (!w->next)
        v->tail = w;
    pthread_cond_signal(&v->wake);
    pthread_mutex_unlock(&v->lock);
}

void cti_verifier_stop(cti_verifier_t *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&v->lock);
    v->stopping = true;
    pthread_cond_broadcast(&v->wake);
    pthread_mutex_unlock(&v->lock);
    for (int i = 0; i < v->nthreads; i++)
        pthread_join(v->threads[i], NULL);
    assert(!v->head);
    pthread_cond_destroy(&v->wake);
    pthread_mutex_destroy(&v->lock);
    free(v->threads);
    free(v);
}
