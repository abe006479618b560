/* test_cidr.c — unit tests for src/core/cidr.c: TRUSTED_PROXIES parsing
 * (IPv4, IPv6, bare hosts, bad items named), matching (IPv4-mapped peers
 * match IPv4 blocks), and the choice of the client address from
 * X-Forwarded-For: only a trusted peer's header is believed, and then the
 * right-most address that is not itself a trusted proxy. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/cidr.h"
#include "core/common.h"

static bool has(const cti_cidr_list_t *l, const char *ip)
{
    uint8_t a[16];
    assert_int_equal(cti_ip_parse(ip, a), 0);
    return cti_cidr_list_has(l, a);
}

static void lists_parse_and_match(void **state)
{
    cti_cidr_list_t l;
    char err[160] = "";
    assert_int_equal(cti_cidr_list_parse(" 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,fd00::1,,", &l,
                                         err, sizeof err),
                     0);
    assert_int_equal((int)l.n, 4);
    assert_true(has(&l, "10.255.1.2"));
    assert_true(has(&l, "::ffff:10.1.2.3")); /* a dual-stack socket's view of 10.1.2.3 */
    assert_false(has(&l, "11.0.0.1"));
    assert_true(has(&l, "192.168.1.7"));
    assert_false(has(&l, "192.168.1.8")); /* a bare address is a /32 */
    assert_true(has(&l, "2001:db8:ffff::1"));
    assert_false(has(&l, "2001:db9::1"));
    assert_true(has(&l, "fd00::1"));
    assert_false(has(&l, "fd00::2"));
    cti_cidr_list_free(&l);

    assert_int_equal(cti_cidr_list_parse("0.0.0.0/0", &l, err, sizeof err), 0);
    assert_true(has(&l, "8.8.8.8"));
    assert_false(has(&l, "2001:db8::1")); /* an IPv4 /0 is not every IPv6 address */
    cti_cidr_list_free(&l);
    assert_int_equal(cti_cidr_list_parse("", &l, err, sizeof err), 0);
    assert_int_equal((int)l.n, 0);
    assert_int_equal(cti_cidr_list_parse(NULL, &l, err, sizeof err), 0);
    assert_int_equal((int)l.n, 0);
}

static void bad_items_are_named(void **state)
{
    const char *bad[] = {"10.0.0.0/33", "10.0.0/8",    "example.com", "::1/129",
                         "10.0.0.0/",   "10.0.0.0/-1", "10.0.0.0/8x", "1.2.3.4 5.6.7.8"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        cti_cidr_list_t l;
        char list[80], err[160] = "";
        snprintf(list, sizeof list, "10.0.0.0/8,%s", bad[i]);
        assert_int_equal(cti_cidr_list_parse(list, &l, err, sizeof err), CTI_EINVAL);
        assert_non_null(strstr(err, bad[i]));
        assert_int_equal((int)l.n, 0);
        assert_null(l.items);
    }
}

static const char *choose(const char *trusted, const char *peer, const char *xff)
{
    static char out[64];
    cti_cidr_list_t l;
    char err[160];
    assert_int_equal(cti_cidr_list_parse(trusted, &l, err, sizeof err), 0);
    cti_client_addr_choose(&l, peer, xff, out, sizeof out);
    cti_cidr_list_free(&l);
    return out;
}

static void forwarded_for_is_believed_only_from_trusted_peers(void **state)
{
    /* no proxies trusted: the header is anybody's say-so */
    assert_string_equal(choose("", "203.0.113.9", "1.2.3.4"), "203.0.113.9");
    /* an untrusted peer's header is ignored */
    assert_string_equal(choose("10.0.0.0/8", "203.0.113.9", "1.2.3.4"), "203.0.113.9");
    /* a trusted peer: the right-most entry it added */
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "1.2.3.4"), "1.2.3.4");
    /* a client's forged left entries are passed over: right-most untrusted wins */
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "6.6.6.6, 1.2.3.4"), "1.2.3.4");
    /* chains of trusted proxies are walked */
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "6.6.6.6, 1.2.3.4, 10.9.9.9"), "1.2.3.4");
    /* all trusted: the left-most */
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "10.1.1.1, 10.2.2.2"), "10.1.1.1");
    /* no header: the peer */
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", NULL), "10.0.0.5");
    /* garbage stops the walk at the hop to its right */
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "1.2.3.4, nonsense"), "10.0.0.5");
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "nonsense, 1.2.3.4, 10.2.2.2"), "1.2.3.4");
    /* ports, brackets, IPv6, mapped peers, headers joined */
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "1.2.3.4:5555"), "1.2.3.4");
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "[2001:db8::7]:443"), "2001:db8::7");
    assert_string_equal(choose("10.0.0.0/8,::1", "::1", "2001:db8::7"), "2001:db8::7");
    assert_string_equal(choose("10.0.0.0/8", "::ffff:10.0.0.5", "1.2.3.4"), "1.2.3.4");
    assert_string_equal(choose("10.0.0.0/8", "10.0.0.5", "1.2.3.4,,10.3.3.3"), "1.2.3.4");
}

static void ipv6_addresses_are_limited_by_their_64(void **state)
{
    char key[64];
    cti_ip_limit_key("2001:db8:1:2:aaaa::1", key, sizeof key);
    assert_string_equal(key, "2001:db8:1:2::/64");
    cti_ip_limit_key("2001:db8:1:2:bbbb::9", key, sizeof key);
    assert_string_equal(key, "2001:db8:1:2::/64");
    cti_ip_limit_key("10.1.2.3", key, sizeof key);
    assert_string_equal(key, "10.1.2.3");
    cti_ip_limit_key("unknown", key, sizeof key);
    assert_string_equal(key, "unknown");
}

static bool private_ip(const char *ip)
{
    uint8_t a[16];
    assert_int_equal(cti_ip_parse(ip, a), 0);
    return cti_ip_is_private(a);
}

/* What outbound webhooks refuse in production (SSRF): every address a public
 * service cannot have, also when written as IPv6. */
static void private_addresses_are_told_apart(void **state)
{
    (void)state;
    const char *inside[] = {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255",
                            "192.168.0.10", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                            "224.0.0.1", "255.255.255.255", "::1", "::", "fd00::1",
                            "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                            "64:ff9b::a00:1", "198.18.0.1", "192.0.0.8", "::10.0.0.1",
                            "::127.0.0.1", "2002:a00:1::1", "2002:7f00:1::", "fec0::1"};
    for (size_t i = 0; i < sizeof inside / sizeof *inside; i++)
        if (!private_ip(inside[i]))
            fail_msg("%s should be private", inside[i]);
    const char *outside[] = {"8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1",
                             "192.169.0.1", "2001:4860:4860::8888", "::ffff:1.1.1.1",
                             "203.0.113.9", "::8.8.8.8", "2002:808:808::1"};
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++)
        if (private_ip(outside[i]))
            fail_msg("%s should be public", outside[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lists_parse_and_match),
        cmocka_unit_test(bad_items_are_named),
        cmocka_unit_test(forwarded_for_is_believed_only_from_trusted_peers),
        cmocka_unit_test(ipv6_addresses_are_limited_by_their_64),
        cmocka_unit_test(private_addresses_are_told_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
