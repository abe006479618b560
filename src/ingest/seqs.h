/*
 * seqs.h — the per-app event-log counters of one transaction.
 *
 * The first use of an app locks its app_seq row (an upsert, held to the end
 * of the transaction): instances applying events of the same app take turns,
 * so each reads the legs the other wrote, and seqs stay gapless. Seqs are
 * then handed out in memory and written back once, with (PostgreSQL) one
 * NOTIFY naming the new ranges, "app:first:last;...", delivered at commit in
 * commit order, so every instance's listener reads the new rows.
 *
 * Thread: the ingest worker (one transaction at a time).
 */
#ifndef CTI_INGEST_SEQS_H
#define CTI_INGEST_SEQS_H

#include <stdint.h>

#include "store/store.h"

typedef struct cti_seqs cti_seqs_t;

/* The counters of a transaction on db. Free with cti_seqs_free. */
cti_seqs_t *cti_seqs_new(cti_db_t *db);
void cti_seqs_free(cti_seqs_t *s);

/* Locks the counters of n apps (repeats allowed) in sorted order, so two
 * instances never wait on each other. 0 or a store error. */
int cti_seqs_lock(cti_seqs_t *s, const char *const *apps, int n);
/* The app's next seq (locking its counter first if it is new here). */
int cti_seqs_next(cti_seqs_t *s, const char *app_id, int64_t *seq);
/* Writes back every counter that moved, and sends the NOTIFY (PostgreSQL). */
int cti_seqs_save(cti_seqs_t *s);

#endif
