/* test_outbound_url.c — unit tests for src/outbound/url.c: the URLs an
 * outbound webhook endpoint may have (structure everywhere; https:// and
 * public IP literals in production unless OUTBOUND_ALLOW_PRIVATE), IPv4 forms
 * hidden in IPv6 and the legacy IPv4 spellings a resolver accepts included,
 * and the edges of the private ranges. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "outbound/url.h"

/* The message for url (NULL when accepted). */
static const char *check(const char *url, bool production, bool allow_private)
{
    static char why[300];
    why[0] = '\0';
    int rc = cti_outbound_url_check(url, production, allow_private, why, sizeof why);
    if (rc == 0) {
        assert_string_equal(why, "");
        return NULL;
    }
    assert_int_equal(rc, CTI_EINVAL);
    assert_int_equal(strncmp(why, "'url' ", 6), 0); /* names the field */
    return why;
}

static void ok(const char *url, bool production, bool allow_private)
{
    const char *why = check(url, production, allow_private);
    if (why)
        fail_msg("%s (production %d) refused: %s", url, production, why);
}

static void bad(const char *url, bool production, bool allow_private, const char *says)
{
    const char *why = check(url, production, allow_private);
    if (!why || !strstr(why, says))
        fail_msg("%s (production %d): expected a refusal naming \"%s\", got %s", url,
                 production, says, why ? why : "acceptance");
}

#define OK(u, prod, allow) ok(u, prod, allow)
#define BAD(u, prod, allow, says) bad(u, prod, allow, says)

static void structure_is_checked_everywhere(void **state)
{
    for (int prod = 0; prod < 2; prod++) {
        OK("https://hooks.example.com/cti?token=abc&x=1", prod, false);
        OK("https://hooks.example.com:8443/a/b", prod, false);
        OK("HTTPS://Hooks.Example.com", prod, false);
        OK("https://[2001:db8::1]:443/x", prod, false);
        BAD("ftp://example.com/", prod, true, "http:// or https://");
        BAD("javascript:alert(1)", prod, true, "http:// or https://");
        BAD("example.com/hook", prod, true, "http:// or https://");
        BAD("https://user:pw@example.com/", prod, true, "credentials");
        BAD("https://@example.com/", prod, true, "credentials");
        BAD("https://example.com/#frag", prod, true, "#fragment");
        BAD("https://example.com/a b", prod, true, "ASCII");
        BAD("https://example.com/\r\nX-Evil: 1", prod, true, "control");
        BAD("https://exämple.com/", prod, true, "ASCII");
        BAD("https:///path", prod, true, "host");
        BAD("https://", prod, true, "host");
        BAD("https://example.com:/", prod, true, "port");
        BAD("https://example.com:0/", prod, true, "port");
        BAD("https://example.com:65536/", prod, true, "port");
        BAD("https://example.com:99999999999999999999/", prod, true, "port");
        BAD("https://example.com:80x/", prod, true, "port");
        BAD("https://[::1/", prod, true, "closing ]");
        BAD("https://[::1]x/", prod, true, "after the IPv6");
        BAD("https://[zz::1]/", prod, true, "malformed IPv6");
        BAD("https://[fe80::1%25eth0]/", prod, true, "malformed IPv6");
        BAD("https://exa%6dple.com/", prod, true, "DNS name");
        BAD("https://exa$mple.com/", prod, true, "DNS name");
    }
    /* the path may hold an @ (only the authority may not) */
    OK("https://example.com/users/@me", true, false);
    char url[2100] = "https://example.com/";
    memset(url + strlen(url), 'a', 2048 - strlen(url));
    url[2048] = '\0';
    OK(url, true, false);
    strcat(url, "a");
    BAD(url, true, false, "2048");
}

static void production_wants_https_and_public_addresses(void **state)
{
    OK("http://example.com/hook", false, false);
    BAD("http://example.com/hook", true, false, "https:// in production");
    BAD("http://example.com/hook", true, true, "https:// in production");
    const char *private_hosts[] = {
        "127.0.0.1", "127.1", "2130706433", "0x7f.0.0.1", "0.0.0.0", "10.1.2.3",
        "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "224.0.0.1", "255.255.255.255", "240.0.0.1", "[::1]", "[::]", "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]", "[fe80::1]", "[fc00::1]", "[fd12:3456::1]", "[ff02::1]",
        "[64:ff9b::a9fe:a9fe]", "localhost", "LOCALHOST.", "api.localhost", "127.255.0.1",
        "192.0.0.8", "198.19.255.255", "100.127.255.255", NULL};
    for (int i = 0; private_hosts[i]; i++) {
        char url[200];
        snprintf(url, sizeof url, "https://%s:8443/hook", private_hosts[i]);
        BAD(url, true, false, "OUTBOUND_ALLOW_PRIVATE");
        OK(url, true, true);   /* allowed by the setting */
        OK(url, false, false); /* and in sandbox (local receivers) */
        url[4] = ':';          /* "http:" + "//..." */
        memmove(url + 5, url + 6, strlen(url + 6) + 1);
        OK(url, false, false);
    }
    const char *public_hosts[] = {"93.184.216.34", "8.8.8.8", "172.32.0.1", "172.15.255.255",
                                  "100.128.0.1", "198.20.0.1", "11.0.0.1", "223.255.255.255",
                                  "[2001:4860:4860::8888]", "[::ffff:8.8.8.8]",
                                  "hooks.example.com", "localhost.example.com", NULL};
    for (int i = 0; public_hosts[i]; i++) {
        char url[200];
        snprintf(url, sizeof url, "https://%s/hook", public_hosts[i]);
        OK(url, true, false);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(structure_is_checked_everywhere),
        cmocka_unit_test(production_wants_https_and_public_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
