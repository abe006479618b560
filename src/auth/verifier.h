/*
 * verifier.h — the threads that run bcrypt, so that no HTTP thread ever does.
 *
 * A small pool (CTI_AUTH_VERIFIERS threads, "cti-verify") runs queued work
 * items in order, those queued as first before the others. The queue itself is unbounded: its one
 * user (apikey.c) bounds what it queues (CTI_AUTH_PENDING_MAX distinct keys at a time), so the
 * bcrypt work in progress, and its CPU, are bounded by construction.
 *
 * Threads: cti_verifier_start/stop on the main thread; cti_verifier_run from
 * any thread; fn runs on a verifier thread.
 */
#ifndef CTI_AUTH_VERIFIER_H
#define CTI_AUTH_VERIFIER_H

#include <stdbool.h>

typedef struct cti_verifier cti_verifier_t;

/* Starts threads verifier threads. Never returns NULL. */
cti_verifier_t *cti_verifier_start(int threads);
/* Queues fn(arg) for a verifier thread, at the back, or at the front when
 * first (before everything queued not first). arg belongs to fn. */
void cti_verifier_run(cti_verifier_t *v, void (*fn)(void *arg), void *arg, bool first);
/* Runs what is queued, then stops the threads and frees v. NULL is fine. */
void cti_verifier_stop(cti_verifier_t *v);

#endif
