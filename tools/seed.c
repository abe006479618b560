/*
 * seed.c — the bulk path of make bench-scale: stores Dialpad webhooks of a
 * realistic shape straight into a store (no HTTP) through the real code the
 * ingest worker runs: cti_raw_insert (the raw events, stored as applied) and
 * cti_process_stored (the call model, legs, timelines, voicemails, messages,
 * the event log and its seqs), in transactions of --batch events instead of
 * the worker's few hundred, with one commit each.
 *
 * The shape (per customer call, from its number g):
 *   6 of 10  inbound to a call center: an entry-point leg and two operator
 *            legs (master/entry point = the first), the first agent missing
 *            it, the second answering: ringing, connected, hangup / missed
 *   3 of 10  outbound by an agent (one in three unanswered)
 *   1 of 10  inbound to an agent, to voicemail (voicemail_uploaded with its
 *            link and recording id)
 *   every 5th call also an SMS; 200 agents; 50,000 external numbers;
 *   one dead letter per 10,000 calls; the last 20 calls of a run left
 *   ringing or connected (the live calls of /api/calls/active).
 * Calls start every 1.6 s from 85 days ago, so 10 M legs fit the default
 * 90-day retention; a run continues where --first-call says.
 *
 *   seed --database URL --app APP_ID --legs N [--first-call G] [--batch 4096]
 * prints one JSON line: calls, legs, events, seconds, legs_per_second, next_call.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jscan.h"
#include "core/log.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "ingest/processor.h"
#include "repo/events.h"
#include "repo/schema.h"
#include "store/store.h"

#define AGENTS 200
#define NUMBERS 50000
#define LIVE_TAIL 20
#define EV_MAX 2048

static const int64_t LEG_BASE = 5000000000000000LL;
static const int64_t AGENT_BASE = 6000000000000000LL;
static const int64_t SMS_BASE = 7000000000000000LL;
static const int64_t STEP_MS = 1600;

typedef struct {
    char *payload;
    size_t len;
    int64_t received_at;
    bool dead; /* stored pending, then parked as a dead letter */
} ev_t;

static ev_t *evs;
static int nev, capev;
static int64_t t0;

static void add_event(char *payload, size_t len, int64_t ts, bool dead)
{
    if (len >= EV_MAX) {
        fprintf(stderr, "seed: an event outgrew its buffer\n");
        abort();
    }
    if (nev == capev) {
        capev = capev ? capev * 2 : 8192;
        evs = realloc(evs, (size_t)capev * sizeof *evs);
        if (!evs)
            abort();
    }
    evs[nev++] = (ev_t){payload, len, ts + 150, dead};
}

static void external(int64_t g, char *out, size_t cap)
{
    uint64_t h = (uint64_t)g * 2654435761u;
    snprintf(out, cap, "+1212%07llu", 5000000ULL + (unsigned long long)(h % NUMBERS));
}

typedef struct {
    int64_t id, master, entry, agent; /* agent: index, or -1 (the call center) */
    const char *direction;
    const char *ext;
    int64_t started, connected, ended; /* 0 = not (yet) */
    bool voicemail;
} leg_t;

/* One call event of leg l in state at ts, as Dialpad sends it (~1.3 KB). */
static void call_event(const leg_t *l, const char *state, int64_t ts)
{
    char target[320], vm[256] = "", master[32] = "null", entry[32] = "null", connected[32] = "null",
         ended[32] = "null", duration[32] = "null";
    if (l->agent >= 0)
        snprintf(target, sizeof target,
                 "{\"id\":%lld,\"type\":\"user\",\"name\":\"Agent %03lld\","
                 "\"email\":\"agent%03lld@example.com\",\"phone\":\"+1617555%04lld\","
                 "\"office_id\":6204481935753216}",
                 (long long)(AGENT_BASE + l->agent), (long long)l->agent, (long long)l->agent,
                 (long long)(1000 + l->agent));
    else
        snprintf(target, sizeof target,
                 "{\"id\":6100000000000001,\"type\":\"callcenter\",\"name\":\"Support\","
                 "\"email\":\"\",\"phone\":\"+16175550100\",\"office_id\":6204481935753216}");
    if (l->master)
        snprintf(master, sizeof master, "%lld", (long long)l->master);
    if (l->entry)
        snprintf(entry, sizeof entry, "%lld", (long long)l->entry);
    bool end = !strcmp(state, "hangup") || !strcmp(state, "missed") ||
               !strcmp(state, "voicemail") || !strcmp(state, "voicemail_uploaded");
    if (l->connected && ts >= l->connected)
        snprintf(connected, sizeof connected, "%lld", (long long)l->connected);
    if (end && l->ended) {
        snprintf(ended, sizeof ended, "%lld", (long long)l->ended);
        snprintf(duration, sizeof duration, "%lld",
                 (long long)(l->connected ? l->ended - l->connected : 0));
    }
    if (!strcmp(state, "voicemail_uploaded"))
        snprintf(vm, sizeof vm,
                 ",\"voicemail_link\":\"https://dialpad.com/r/%lld\","
                 "\"voicemail_recording_id\":%lld,\"recording_details\":[{\"id\":%lld,"
                 "\"recording_type\":\"voicemail\",\"duration\":18230}]",
                 (long long)l->id, (long long)l->id, (long long)l->id);
    char *p = malloc(EV_MAX);
    if (!p)
        abort();
    int n = snprintf(
        p, EV_MAX,
        "{\"call_id\":%lld,\"state\":\"%s\",\"direction\":\"%s\",\"external_number\":\"%s\","
        "\"internal_number\":\"%s\",\"selected_caller_id\":null,\"date_started\":%lld,"
        "\"date_rang\":%lld,\"date_queued\":null,\"date_connected\":%s,\"date_ended\":%s,"
        "\"duration\":%s,\"total_duration\":%s,\"talk_time\":null,\"hold_time\":null,"
        "\"event_timestamp\":%lld,\"master_call_id\":%s,\"entry_point_call_id\":%s,"
        "\"operator_call_id\":null,\"is_transferred\":false,\"contact\":{\"id\":%lld,"
        "\"type\":\"local\",\"name\":\"Customer %s\",\"phone\":\"%s\",\"email\":\"\"},"
        "\"target\":%s,\"proxy_target\":null,\"group_id\":null,\"entry_point_target\":{},"
        "\"labels\":[],\"mos_score\":null,\"was_recorded\":false,\"transcription_text\":null,"
        "\"call_recording_share_links\":[],\"voicemail_share_link\":null%s}",
        (long long)l->id, state, l->direction, l->ext,
        l->agent >= 0 ? "+16175551000" : "+16175550100", (long long)l->started,
        (long long)l->started, connected, ended, duration,
        end && l->ended ? duration : "null", (long long)ts, master, entry,
        (long long)(6272614887833600LL + atoll(l->ext + 5)), l->ext, l->ext, target, vm);
    add_event(p, (size_t)n, ts, false);
}

static void sms_event(int64_t g, const char *ext, int64_t agent, int64_t ts)
{
    char *p = malloc(EV_MAX);
    if (!p)
        abort();
    int n = snprintf(p, EV_MAX,
                     "{\"id\":%lld,\"created_date\":%lld,\"direction\":\"inbound\","
                     "\"event_timestamp\":%lld,\"from_number\":\"%s\",\"to_number\":"
                     "[\"+1617555%04lld\"],\"text\":\"Hi, can you call me back about order "
                     "%lld?\",\"message_status\":\"pending\",\"contact\":{\"id\":%lld,"
                     "\"name\":\"Customer %s\",\"phone_number\":\"%s\"},\"target\":{\"id\":%lld,"
                     "\"type\":\"user\",\"name\":\"Agent %03lld\",\"phone_number\":"
                     "\"+1617555%04lld\"}}",
                     (long long)(SMS_BASE + g), (long long)ts, (long long)ts, ext,
                     (long long)(1000 + agent), (long long)g,
                     (long long)(6272614887833600LL + atoll(ext + 5)), ext, ext,
                     (long long)(AGENT_BASE + agent), (long long)agent, (long long)(1000 + agent));
    add_event(p, (size_t)n, ts, false);
}

static void dead_event(int64_t g, int64_t ts)
{
    char *p = malloc(256);
    if (!p)
        abort();
    int n = snprintf(p, 256,
                     "{\"call_id\":%lld,\"state\":\"hangup\",\"event_timestamp\":%lld,"
                     "\"date_started\":\"not a time\"}",
                     (long long)(LEG_BASE - 1 - g), (long long)ts);
    add_event(p, (size_t)n, ts, true);
}

/* The events of call g (live: its last events have not come yet). Returns legs. */
static int make_call(int64_t g, int64_t *next_leg, bool live)
{
    int64_t t = t0 + g * STEP_MS;
    char ext[24];
    external(g, ext, sizeof ext);
    int agent = (int)((g * 7919) % AGENTS), kind = (int)(g % 10);
    int64_t talk = 30000 + (g * 104729) % 400000;
    int legs = 0;
    if (kind < 6) {
        leg_t e = {.id = (*next_leg)++, .agent = -1, .direction = "inbound", .ext = ext,
                   .started = t, .connected = t + 8000, .ended = t + 8000 + talk};
        leg_t o1 = {.id = (*next_leg)++, .master = e.id, .entry = e.id, .agent = (agent + 1) % AGENTS,
                    .direction = "inbound", .ext = ext, .started = t + 1000, .ended = t + 6000};
        leg_t o2 = {.id = (*next_leg)++, .master = e.id, .entry = e.id, .agent = agent,
                    .direction = "inbound", .ext = ext, .started = t + 6000,
                    .connected = t + 8000, .ended = t + 8000 + talk};
        legs = 3;
        call_event(&e, "ringing", t);
        call_event(&o1, "ringing", t + 1000);
        call_event(&o1, "missed", t + 6000);
        call_event(&o2, "ringing", t + 6000);
        call_event(&e, "connected", t + 8000);
        call_event(&o2, "connected", t + 8000);
        if (!live) {
            call_event(&e, "hangup", e.ended);
            call_event(&o2, "hangup", o2.ended);
        }
    } else if (kind < 9) {
        bool answered = g % 3 != 0;
        leg_t l = {.id = (*next_leg)++, .agent = agent, .direction = "outbound", .ext = ext,
                   .started = t, .connected = answered ? t + 12000 : 0,
                   .ended = t + (answered ? 12000 + talk : 25000)};
        legs = 1;
        call_event(&l, "calling", t);
        if (answered)
            call_event(&l, "connected", l.connected);
        if (!live)
            call_event(&l, "hangup", l.ended);
    } else {
        leg_t l = {.id = (*next_leg)++, .agent = agent, .direction = "inbound", .ext = ext,
                   .started = t, .ended = t + 47000, .voicemail = true};
        legs = 1;
        call_event(&l, "ringing", t);
        if (!live) {
            call_event(&l, "voicemail", t + 20000);
            call_event(&l, "voicemail_uploaded", t + 47000);
        }
    }
    if (g % 5 == 0)
        sms_event(g, ext, agent, t + 500);
    if (g % 10000 == 5000)
        dead_event(g, t + 700);
    return legs;
}

/* Stores and applies evs[from, to) in one transaction, as the ingest worker does. */
static int store_batch(cti_db_t *db, const char *app, int from, int to)
{
    int n = to - from;
    cti_raw_new_t *rows = calloc((size_t)n, sizeof *rows);
    cti_jdoc_t *docs = calloc((size_t)n, sizeof *docs);
    cti_ev_info_t *info = calloc((size_t)n, sizeof *info);
    cti_stored_t *fresh = calloc((size_t)n, sizeof *fresh);
    if (!rows || !docs || !info || !fresh)
        abort();
    char err[128];
    for (int i = 0; i < n; i++) {
        ev_t *e = &evs[from + i];
        if (cti_jdoc_parse(&docs[i], e->payload, e->len, err, sizeof err) != 0) {
            fprintf(stderr, "seed: bad payload: %s\n", err);
            abort();
        }
        cti_ev_classify(&docs[i], e->payload, e->len, &info[i]);
        rows[i] = (cti_raw_new_t){app, info[i].dedupe_key, cti_ev_kind_name(info[i].kind),
                                  e->payload, e->received_at, false, 0};
    }
    int rc = cti_db_begin(db);
    /* the dead letters are stored pending and parked: the worker's path for an event it
       cannot apply after its attempts */
    int m = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        if (evs[from + i].dead && (rc = cti_raw_insert(db, &rows[i], 1, CTI_RAW_PENDING)) == 0 &&
            rows[i].inserted)
            rc = cti_raw_mark_failed(db, rows[i].id, "date_started: not a time", 0, true);
    cti_raw_new_t *live = calloc((size_t)n, sizeof *live);
    int *where = calloc((size_t)n, sizeof *where);
    for (int i = 0; i < n; i++)
        if (!evs[from + i].dead)
            where[m] = i, live[m++] = rows[i];
    if (rc == 0)
        rc = cti_raw_insert(db, live, m, CTI_RAW_APPLIED);
    int k = 0;
    for (int j = 0; rc == 0 && j < m; j++)
        if (live[j].inserted) {
            int i = where[j];
            fresh[k++] = (cti_stored_t){live[j].id, app, evs[from + i].payload, &docs[i], &info[i],
                                        evs[from + i].received_at, false};
        }
    cti_processed_t *done = cti_processed_new();
    if (rc == 0)
        rc = cti_process_stored(db, cti_now_ms(), fresh, k, done);
    if (rc == 0)
        rc = cti_db_commit(db);
    else
        cti_db_rollback(db);
    if (rc != 0)
        fprintf(stderr, "seed: %s\n", cti_db_errmsg(db));
    cti_processed_free(done);
    for (int i = 0; i < n; i++)
        cti_jdoc_free(&docs[i]);
    free(rows), free(docs), free(info), free(fresh), free(live), free(where);
    return rc;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *app = NULL;
    long long legs = 0, first = 0;
    int batch = 4096;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--database"))
            url = argv[i + 1];
        else if (!strcmp(argv[i], "--app"))
            app = argv[i + 1];
        else if (!strcmp(argv[i], "--legs"))
            legs = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--first-call"))
            first = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch"))
            batch = atoi(argv[i + 1]);
    }
    if (!url || !app || legs <= 0 || batch < 1) {
        fprintf(stderr, "usage: seed --database URL --app APP_ID --legs N [--first-call G] "
                        "[--batch 4096]\n");
        return 2;
    }
    cti_log_set_level(CTI_LOG_WARN);
    bool sqlite = !strncmp(url, "sqlite:", 7);
    cti_store_options_t so = {.kind = sqlite ? CTI_DB_SQLITE : CTI_DB_POSTGRES,
                              .conninfo = sqlite ? url + 7 : url, .display = "seed",
                              .sqlite_sync_full = false};
    cti_store_t *st = NULL;
    if (cti_store_open(&so, &st) != 0 || cti_store_migrate(st) != 0) {
        fprintf(stderr, "seed: cannot open or migrate the store\n");
        return 1;
    }
    cti_db_t *db = cti_store_db(st);
    t0 = (cti_now_ms() - 85LL * 86400000) / 1000 * 1000;
    int64_t start = cti_mono_us(), next_leg = LEG_BASE, g = first, done_legs = 0, events = 0;
    /* leg ids follow call numbers: about 2.2 legs a call, so leave room for 3 */
    next_leg = LEG_BASE + first * 3;
    int rc = 0;
    while (rc == 0 && done_legs < legs) {
        nev = 0;
        while (nev < batch && done_legs < legs) {
            /* the run's last calls stay live; only this run's, not any before */
            bool live = legs - done_legs <= LIVE_TAIL * 2;
            done_legs += make_call(g++, &next_leg, live);
        }
        rc = store_batch(db, app, 0, nev);
        events += nev;
        for (int i = 0; i < nev; i++)
            free(evs[i].payload);
    }
    double secs = (double)(cti_mono_us() - start) / 1e6;
    if (rc == 0)
        rc = cti_store_analyze_ingest(db);
    cti_store_close(st);
    free(evs);
    printf("{\"calls\":%lld,\"legs\":%lld,\"events\":%lld,\"seconds\":%.1f,"
           "\"legs_per_second\":%.0f,\"events_per_second\":%.0f,\"next_call\":%lld}\n",
           (long long)(g - first), (long long)done_legs, (long long)events, secs,
           (double)done_legs / secs, (double)events / secs, (long long)g);
    return rc == 0 ? 0 : 1;
}
