/* test_outbound.c — unit tests for src/outbound/sign.c (Standard Webhooks
 * secrets, ids and signatures: the specification's own example, two
 * signatures during a rotation, malformed secrets refused) and
 * src/outbound/types.c (endpoints' event type patterns). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "outbound/sign.h"
#include "outbound/types.h"

/* The example of standardwebhooks.com's specification and libraries. */
static void signs_the_specifications_example(void **state)
{
    (void)state;
    const char *secret[] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"};
    const char *body = "{\"test\": 2432232314}";
    char sig[CTI_WHSIG_MAX];
    assert_int_equal(cti_whsec_sign(secret, 1, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
                                    strlen(body), sig),
                     0);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

static void two_secrets_give_two_signatures(void **state)
{
    (void)state;
    char *a = cti_whsec_new(), *b = cti_whsec_new();
    assert_true(cti_whsec_valid(a));
    assert_true(strncmp(a, "whsec_", 6) == 0);
    assert_string_not_equal(a, b);
    const char *both[] = {a, b}, *first[] = {a}, *second[] = {b};
    char s2[CTI_WHSIG_MAX], s1a[CTI_WHSIG_MAX], s1b[CTI_WHSIG_MAX];
    assert_int_equal(cti_whsec_sign(both, 2, "msg_x_1", 1700000000, "{}", 2, s2), 0);
    assert_int_equal(cti_whsec_sign(first, 1, "msg_x_1", 1700000000, "{}", 2, s1a), 0);
    assert_int_equal(cti_whsec_sign(second, 1, "msg_x_1", 1700000000, "{}", 2, s1b), 0);
    char want[CTI_WHSIG_MAX * 2];
    snprintf(want, sizeof want, "%s %s", s1a, s1b);
    assert_string_equal(s2, want);
    /* the signature covers the id, the time and the body */
    char other[CTI_WHSIG_MAX];
    assert_int_equal(cti_whsec_sign(first, 1, "msg_x_2", 1700000000, "{}", 2, other), 0);
    assert_string_not_equal(other, s1a);
    assert_int_equal(cti_whsec_sign(first, 1, "msg_x_1", 1700000001, "{}", 2, other), 0);
    assert_string_not_equal(other, s1a);
    assert_int_equal(cti_whsec_sign(first, 1, "msg_x_1", 1700000000, "{ }", 3, other), 0);
    assert_string_not_equal(other, s1a);
    free(a);
    free(b);
}

static void malformed_secrets_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {NULL, "", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                         "whsec_short", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",
                         "whsec_AAAAAAAAAAAAAAAAAAAAAAA"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_false(cti_whsec_valid(bad[i]));
        char sig[CTI_WHSIG_MAX] = "x";
        const char *one[] = {bad[i]};
        assert_int_equal(cti_whsec_sign(one, 1, "msg", 1, "{}", 2, sig), CTI_EINVAL);
        assert_string_equal(sig, "");
    }
}

static void message_ids_are_per_endpoint_and_event(void **state)
{
    (void)state;
    char id[CTI_WHID_MAX];
    cti_whsec_msg_id("0b5e4a8c-1f2d-4e3a-9b8c-7d6e5f4a3b2c", 42, id);
    assert_string_equal(id, "msg_0b5e4a8c1f2d4e3a9b8c7d6e5f4a3b2c_42");
}

static void type_patterns_match_names_and_families(void **state)
{
    (void)state;
    assert_true(cti_evtypes_match(NULL, "call.ringing"));
    assert_true(cti_evtypes_match("*", "sms.received"));
    assert_true(cti_evtypes_match("call.*", "call.ringing"));
    assert_false(cti_evtypes_match("call.*", "sms.received"));
    assert_false(cti_evtypes_match("call.*", "callx.ringing"));
    assert_true(cti_evtypes_match("sms.sent call.ended", "call.ended"));
    assert_false(cti_evtypes_match("sms.sent call.ended", "call.end"));
    assert_false(cti_evtypes_match("call.ended", "call.ended2"));
    assert_false(cti_evtypes_match("", "call.ended"));
    char why[200];
    assert_int_equal(cti_evtypes_check("call.ringing", why, sizeof why), 0);
    assert_int_equal(cti_evtypes_check("voicemail.*", why, sizeof why), 0);
    assert_int_equal(cti_evtypes_check("*", why, sizeof why), 0);
    assert_int_equal(cti_evtypes_check("call.rang", why, sizeof why), CTI_EINVAL);
    assert_non_null(strstr(why, "call.rang"));
    assert_int_equal(cti_evtypes_check("bogus.*", why, sizeof why), CTI_EINVAL);
    assert_int_equal(cti_evtypes_check("call*", why, sizeof why), CTI_EINVAL);
    assert_int_equal(cti_evtypes_check("", why, sizeof why), CTI_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(signs_the_specifications_example),
        cmocka_unit_test(two_secrets_give_two_signatures),
        cmocka_unit_test(malformed_secrets_are_refused),
        cmocka_unit_test(message_ids_are_per_endpoint_and_event),
        cmocka_unit_test(type_patterns_match_names_and_families),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
