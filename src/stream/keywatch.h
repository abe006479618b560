/*
 * keywatch.h — the API keys that hold WebSockets open, and whether they
 * still work.
 *
 * A socket authenticated by a key (directly or through a ticket the key
 * issued) is counted under that key while it is open. Once a second the
 * hub's replay worker reads every counted key in one statement (an IN list)
 * and the hub closes the sockets of keys that stopped working: revoked,
 * expired (a rotation's grace ended), deleted (4001), or whose app was
 * deactivated (4003). Reading the database, not this instance's caches, makes
 * a revocation through any instance close the sockets of every instance.
 *
 * Threads: any (a mutex guards the table, held for O(distinct keys) work and
 * never across the database read).
 */
#ifndef CTI_STREAM_KEYWATCH_H
#define CTI_STREAM_KEYWATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "repo/tenants.h"

#define CTI_WS_CLOSE_KEY_GONE     4001 /* the key was revoked, expired or deleted */
#define CTI_WS_CLOSE_APP_INACTIVE 4003 /* the app was deactivated */

typedef struct cti_keywatch cti_keywatch_t;

cti_keywatch_t *cti_keywatch_new(void);
void cti_keywatch_free(cti_keywatch_t *kw);
/* One more (add) or one fewer (remove) open socket authenticated by key_id. */
void cti_keywatch_add(cti_keywatch_t *kw, const char *key_id);
void cti_keywatch_remove(cti_keywatch_t *kw, const char *key_id);

/* Whether a key (as cti_keys_get reads it) lets its holder in at now; when
 * not, *code is the close code and *why a short reason. */
bool cti_keywatch_usable(const cti_key_t *k, int64_t now, int *code, const char **why);

typedef void (*cti_keywatch_dead_fn)(const char *key_id, int code, const char *why, void *ud);
/* Reads every watched key; calls dead for each that no longer works. 0, or
 * the store's error (nothing is called then). */
int cti_keywatch_check(cti_keywatch_t *kw, cti_db_t *db, int64_t now, cti_keywatch_dead_fn dead,
                       void *ud);

#endif
