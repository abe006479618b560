/* types.c — see types.h. */
#include "outbound/types.h"
#include "core/common.h"

#include <stdio.h>
#include <string.h>

const char *const cti_event_names[] = {
    "call.ringing", "call.dialing", "call.queued", "call.connected", "call.resumed",
    "call.hold", "call.ended", "call.missed", "call.voicemail", "call.recording",
    "call.transcription", "call.recap", "call.state", "call.dial_requested",
    "voicemail.ready", "voicemail.transcribed", "sms.received", "sms.sent", "sms.status",
    "contact.changed", "agent.status", "connection.connected", "connection.disconnected",
    "connection.broken", "connection.link_created", NULL};

const char *const cti_event_families[] = {"call", "voicemail", "sms", "contact", "agent",
                                          "connection", NULL};

int cti_evtypes_check(const char *pattern, char *why, size_t whycap)
{
    if (!strcmp(pattern, "*"))
        return 0;
    size_t n = strlen(pattern);
    if (n > 2 && !strcmp(pattern + n - 2, ".*")) {
        for (int i = 0; cti_event_families[i]; i++)
            if (strlen(cti_event_families[i]) == n - 2 &&
                !strncmp(pattern, cti_event_families[i], n - 2))
                return 0;
        snprintf(why, whycap, "\"%.64s\" is not a family of events (call.*, voicemail.*, "
                              "sms.*, contact.*, agent.*, connection.*)", pattern);
        return CTI_EINVAL;
    }
    for (int i = 0; cti_event_names[i]; i++)
        if (!strcmp(pattern, cti_event_names[i]))
            return 0;
    snprintf(why, whycap, "\"%.64s\" is not an event name (e.g. call.ringing) or a family "
                          "(e.g. call.*)", pattern);
    return CTI_EINVAL;
}

bool cti_evtypes_match(const char *types, const char *event)
{
    if (!types)
        return true;
    size_t elen = strlen(event);
    for (const char *p = types; *p;) {
        size_t n = strcspn(p, " ");
        if ((n == 1 && *p == '*') || (n == elen && !strncmp(p, event, n)) ||
            (n > 2 && p[n - 1] == '*' && p[n - 2] == '.' && elen > n - 1 &&
             !strncmp(p, event, n - 1)))
            return true;
        p += n;
        p += strspn(p, " ");
    }
    return false;
}
