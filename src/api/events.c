/*
 * events.c — GET /api/events?since=<seq>&limit= (API key): the app's
 * normalized events in seq order, the same objects the WebSocket stream
 * sends. {"data": [event...], "next_since": <seq to pass next time>}.
 * since older than the retained history → 410 history_unavailable; since
 * ahead of the newest seq (up to INT64_MAX) → an empty page: nothing yet.
 */
#include "api/common.h"
#include "core/common.h"
#include "core/util.h"
#include "repo/events.h"

#include <string.h>

typedef struct {
    cti_jw_t out; /* {"data":[ and the bodies, copied as stored */
    int64_t last;
} page_t;

static int add_event(int64_t seq, const char *body, void *ud)
{
    page_t *p = ud;
    cti_jw_item(&p->out);
    cti_jw_raw(&p->out, body, strlen(body));
    p->last = seq;
    return 0;
}

static void get_events(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    const char *s = cti_http_query(req, "since"), *l = cti_http_query(req, "limit");
    int64_t since = 0, limit = 50, oldest, newest;
    if (!cti_api_tenant(req, api, &who))
        return;
    if (s && (cti_parse_i64(s, &since) != 0 || since < 0)) {
        cti_http_error(req, 400, "invalid_request", "'since' must be a seq: a whole number >= 0");
        return;
    }
    if (l && (cti_parse_i64(l, &limit) != 0 || limit < 1 || limit > 500)) {
        cti_http_error(req, 400, "invalid_request", "'limit' must be a whole number from 1 to 500");
        return;
    }
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_eventlog_bounds(db, who.app_id, &oldest, &newest);
    if (rc == 0 && since < oldest - 1) { /* (since + 1 would overflow at INT64_MAX) */
        cti_http_json(req, 410,
                      json_pack("{s:s, s:s, s:I, s:I}", "error", "history_unavailable", "message",
                                "events after this seq are no longer retained; start again from "
                                "oldest_seq - 1 (or resync through the REST API)",
                                "oldest_seq", (json_int_t)oldest, "latest_seq",
                                (json_int_t)newest));
        return;
    }
    page_t page = {.last = since};
    cti_jw_lit(&page.out, "{\"data\":[");
    if (rc == 0)
        rc = cti_eventlog_since(db, who.app_id, since, (int)limit, add_event, &page);
    if (rc < 0) {
        cti_jw_free(&page.out);
        cti_api_store_error(req, rc, "reading events");
        return;
    }
    cti_jw_lit(&page.out, "]");
    cti_jw_key(&page.out, "next_since"), cti_jw_int(&page.out, page.last);
    cti_jw_lit(&page.out, "}");
    cti_api_answer_text(req, &page.out);
}

void cti_api_events_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_GET, "/api/events", get_events, api);
}
