/*
 * deliveries.h — outbound webhook deliveries (webhook_deliveries): one row
 * per (event, endpoint) whose types match, written in the transaction that
 * appends the event, so no event is lost between the two.
 *
 * A row is pending (0) until an attempt gets a 2xx (succeeded, 1) or the
 * last retry fails (failed, 2). The sender leases due rows (lease_until) so
 * that with several instances each is sent by one at a time; per endpoint, a
 * call's events are leased in seq order (a later one waits while an earlier
 * one is pending). Callable from any thread with that thread's db.
 */
#ifndef CTI_REPO_DELIVERIES_H
#define CTI_REPO_DELIVERIES_H

#include <stdbool.h>
#include <stdint.h>

#include "repo/events.h"
#include "store/store.h"

enum { CTI_DLV_PENDING = 0, CTI_DLV_SUCCEEDED = 1, CTI_DLV_FAILED = 2 };

/* In the ingest transaction (asserted), after the rows were appended: a
 * delivery for each row and each enabled endpoint of its app whose types
 * match, due at now. */
int cti_deliveries_enqueue(cti_db_t *db, const cti_logrow_t *rows, int n, int64_t now);

typedef struct {
    int64_t id;
    const char *endpoint_id;
    int64_t seq;
    const char *event;
    int status;
    int attempts;
    int64_t last_attempt_at; /* 0: none */
    int last_status_code;    /* 0: none (or no HTTP answer) */
    const char *last_error;  /* NULL: none */
    int64_t next_attempt_at; /* 0 unless pending */
    int64_t created_at;
} cti_delivery_t;
typedef int (*cti_delivery_fn)(const cti_delivery_t *d, void *ud);

/* The endpoint's deliveries, newest first, id < before (0: from the newest),
 * of one status (-1: any), at most limit. */
int cti_deliveries_list(cti_db_t *db, const char *endpoint_id, int status, int64_t before,
                        int limit, cti_delivery_fn fn, void *ud);
/* One more attempt of a delivery of endpoint_id, due now (whatever its
 * status). CTI_ENOTFOUND when it is not that endpoint's. */
int cti_delivery_retry(cti_db_t *db, const char *endpoint_id, int64_t id, int64_t now);
/* New deliveries to the endpoint of every event of app_id with seq > since
 * whose types match (NULL: all), due now; *count says how many. A
 * transaction per page of the log (REPLAY_PAGE events), so a long replay
 * never holds the database's write lock for long (ingest goes on between
 * pages); after an error the pages already committed stay (*count of them):
 * sending them again on a retry is what replay means anyway. */
int cti_deliveries_replay(cti_db_t *db, const char *app_id, const char *endpoint_id,
                          const char *types, int64_t since, int64_t now, int64_t *count);
/* Pending deliveries (all endpoints), for the queue-depth gauge. */
int cti_deliveries_pending_count(cti_db_t *db, int64_t *count);

/* ---- the sender's (outbound/sender.c) ---- */

typedef struct {
    int64_t id;
    int64_t seq;
    int attempts;
    int64_t created_at; /* when the delivery was made (its event committed, or a replay) */
    const char *body;   /* the event (event_log.body), NULL when retention purged it;
                           valid during the callback */
} cti_lease_t;
typedef int (*cti_lease_fn)(const cti_lease_t *l, void *ud);
/* Leases up to limit due deliveries of endpoint (oldest first; a call's
 * events one at a time, in seq order) until now + lease_ms, and gives each
 * with its event's body. In the caller's transaction (asserted): send them
 * once it has committed. */
int cti_deliveries_lease(cti_db_t *db, const char *endpoint_id, const char *app_id, int64_t now,
                         int64_t lease_ms, int limit, cti_lease_fn fn, void *ud);

typedef struct {
    int64_t id;
    int status;              /* CTI_DLV_*: pending = retry at next_attempt_at */
    int attempts;            /* attempts made, this one included */
    int64_t attempted_at;
    int status_code;         /* 0: no HTTP answer */
    const char *error;       /* NULL on success */
    int64_t next_attempt_at; /* when pending */
} cti_attempt_t;
/* Records attempts (their leases end), in the caller's transaction (asserted). */
int cti_deliveries_record(cti_db_t *db, const cti_attempt_t *a, int n);
/* Ends every lease (a restarted single instance: SQLite). */
int cti_deliveries_release_all(cti_db_t *db);

#endif
