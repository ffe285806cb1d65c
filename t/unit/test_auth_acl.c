/*
 * Copyright (C) nginx-matrix-join authors.
 * Server ACLs, reference §6.5: port stripped, case-insensitive globs,
 * IP literals, deny before allow, missing allow denies everyone, and a
 * glob that would take exponential time in a backtracking matcher.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mx_auth.h"


static json_t *
acl(const char *text)
{
    json_t        *v;
    json_error_t   e;

    v = json_loads(text, 0, &e);
    if (v == NULL) {
        fail_msg("bad test JSON: %s", e.text);
    }

    return v;
}


static int
allows(const json_t *content, const char *server)
{
    return mx_acl_allows(content, server, strlen(server), NULL);
}


static void
test_no_acl(void **state)
{
    mx_auth_result_t  res;

    assert_int_equal(mx_acl_allows(NULL, "evil.example", 12, &res), 1);
    assert_int_equal(res.code, MX_AUTH_ALLOW);
    assert_int_equal(res.status, 200);
    assert_null(res.errcode);
}


static void
test_deny_and_allow(void **state)
{
    json_t            *a;
    mx_auth_result_t   res;

    a = acl("{\"allow\": [\"*\"], \"deny\": [\"evil.example\"]}");

    assert_int_equal(mx_acl_allows(a, "evil.example", 12, &res), 0);
    assert_int_equal(res.code, MX_AUTH_FORBIDDEN);
    assert_int_equal(res.status, 403);
    assert_string_equal(res.errcode, "M_FORBIDDEN");
    assert_non_null(strstr(res.rule, "server ACL denies evil.example"));

    assert_int_equal(mx_acl_allows(a, "good.example", 12, &res), 1);
    assert_int_equal(res.code, MX_AUTH_ALLOW);
    assert_non_null(strstr(res.rule, "allows good.example"));

    /* not a suffix or prefix match */
    assert_true(allows(a, "notevil.example"));
    assert_true(allows(a, "evil.example.org"));

    /* the length is honoured, not the NUL */
    assert_int_equal(mx_acl_allows(a, "evil.example.org", 12, NULL), 0);

    json_decref(a);

    /* deny wins over allow */
    a = acl("{\"allow\": [\"*\"], \"deny\": [\"*\"]}");
    assert_false(allows(a, "good.example"));
    json_decref(a);

    a = acl("{\"allow\": [\"good.example\"], \"deny\": [\"good.example\"]}");
    assert_false(allows(a, "good.example"));
    json_decref(a);
}


static void
test_missing_allow(void **state)
{
    json_t            *a;
    mx_auth_result_t   res;

    a = acl("{\"deny\": [\"evil.example\"]}");
    assert_int_equal(mx_acl_allows(a, "good.example", 12, &res), 0);
    assert_non_null(strstr(res.rule, "no allow pattern matches"));
    json_decref(a);

    a = acl("{}");
    assert_false(allows(a, "good.example"));
    json_decref(a);

    a = acl("{\"allow\": []}");
    assert_false(allows(a, "good.example"));
    json_decref(a);

    /* an allow that is not a list is an empty one */
    a = acl("{\"allow\": \"*\"}");
    assert_false(allows(a, "good.example"));
    json_decref(a);

    /* a deny that is not a list denies nothing */
    a = acl("{\"allow\": [\"*\"], \"deny\": \"*\"}");
    assert_true(allows(a, "good.example"));
    json_decref(a);
}


static void
test_port_and_case(void **state)
{
    json_t  *a;

    a = acl("{\"allow\": [\"good.example\", \"[::1]\", \"10.0.0.1\"],"
            " \"deny\": [\"EVIL.example\"]}");

    assert_false(allows(a, "evil.example:8448"));
    assert_false(allows(a, "Evil.Example"));
    assert_false(allows(a, "EVIL.EXAMPLE:443"));

    assert_true(allows(a, "good.example:8448"));
    assert_true(allows(a, "GOOD.example"));
    assert_true(allows(a, "[::1]:8448"));
    assert_true(allows(a, "10.0.0.1:8448"));

    /* the port is stripped, never matched */
    assert_false(allows(a, "good.example8448"));

    json_decref(a);

    a = acl("{\"allow\": [\"*:8448\"]}");
    assert_false(allows(a, "good.example:8448"));
    json_decref(a);
}


static void
test_wildcards(void **state)
{
    json_t  *a;

    a = acl("{\"allow\": [\"ev?l.example\"]}");
    assert_true(allows(a, "evil.example"));
    assert_true(allows(a, "evXl.example"));
    assert_true(allows(a, "ev.l.example"));
    assert_false(allows(a, "evl.example"));
    assert_false(allows(a, "eviil.example"));
    json_decref(a);

    a = acl("{\"allow\": [\"*.evil.example\"]}");
    assert_true(allows(a, "a.evil.example"));
    assert_true(allows(a, "a.b.evil.example"));
    assert_true(allows(a, ".evil.example"));
    assert_false(allows(a, "evil.example"));
    assert_false(allows(a, "a.evil.example.org"));
    json_decref(a);

    a = acl("{\"allow\": [\"evil*\"]}");
    assert_true(allows(a, "evil"));
    assert_true(allows(a, "evil.example"));
    assert_false(allows(a, "notevil"));
    json_decref(a);

    a = acl("{\"allow\": [\"*\"]}");
    assert_true(allows(a, ""));
    assert_true(allows(a, "anything.at.all"));
    json_decref(a);

    a = acl("{\"allow\": [\"a*b?c*\"]}");
    assert_true(allows(a, "abxc"));
    assert_true(allows(a, "a123b4c567"));
    assert_true(allows(a, "abbbbxcbxc"));
    assert_false(allows(a, "abc"));
    assert_false(allows(a, "xabxc"));
    json_decref(a);

    a = acl("{\"allow\": [\"??\"]}");
    assert_true(allows(a, "ab"));
    assert_false(allows(a, "a"));
    assert_false(allows(a, "abc"));
    json_decref(a);

    a = acl("{\"allow\": [\"**?**\"]}");
    assert_true(allows(a, "a"));
    assert_false(allows(a, ""));
    json_decref(a);
}


static void
test_ip_literals(void **state)
{
    json_t            *a;
    mx_auth_result_t   res;

    a = acl("{\"allow\": [\"*\"], \"allow_ip_literals\": false}");

    assert_int_equal(mx_acl_allows(a, "1.2.3.4", 7, &res), 0);
    assert_non_null(strstr(res.rule, "IP literal 1.2.3.4"));
    assert_false(allows(a, "1.2.3.4:8448"));
    assert_false(allows(a, "255.255.255.255"));
    assert_false(allows(a, "[::1]"));
    assert_false(allows(a, "[2001:db8::1]:8448"));

    /* names that only look a little like addresses */
    assert_true(allows(a, "1.2.3"));
    assert_true(allows(a, "1.2.3.4.5"));
    assert_true(allows(a, "256.1.1.1"));
    assert_true(allows(a, "1.2.3.4x"));
    assert_true(allows(a, "1234.1.1.1"));
    assert_true(allows(a, "1..2.3"));
    assert_true(allows(a, "good.example"));

    json_decref(a);

    a = acl("{\"allow\": [\"*\"], \"allow_ip_literals\": true}");
    assert_true(allows(a, "1.2.3.4"));
    assert_true(allows(a, "[::1]:8448"));
    json_decref(a);

    /* missing or not a boolean: true */
    a = acl("{\"allow\": [\"*\"]}");
    assert_true(allows(a, "1.2.3.4"));
    assert_true(allows(a, "[::1]"));
    json_decref(a);

    a = acl("{\"allow\": [\"*\"], \"allow_ip_literals\": \"false\"}");
    assert_true(allows(a, "1.2.3.4"));
    json_decref(a);

    a = acl("{\"allow\": [\"*\"], \"allow_ip_literals\": 0}");
    assert_true(allows(a, "[::1]"));
    json_decref(a);

    a = acl("{\"allow\": [\"*\"], \"allow_ip_literals\": null}");
    assert_true(allows(a, "1.2.3.4"));
    json_decref(a);

    /* allowed literals still go through deny and allow */
    a = acl("{\"allow\": [\"1.2.3.*\"], \"deny\": [\"1.2.3.66\"]}");
    assert_true(allows(a, "1.2.3.4"));
    assert_false(allows(a, "1.2.3.66"));
    assert_false(allows(a, "1.2.4.4"));
    json_decref(a);
}


static void
test_non_string_entries(void **state)
{
    json_t  *a;

    a = acl("{\"allow\": [1, null, true, {\"a\": 1}, [\"*\"],"
            "  \"good.example\"],"
            " \"deny\": [42, {\"x\": \"*\"}, \"evil.example\"]}");
    assert_true(allows(a, "good.example"));
    assert_false(allows(a, "evil.example"));
    assert_false(allows(a, "other.example"));
    json_decref(a);

    /* not even as an empty pattern */
    a = acl("{\"allow\": [1, null, {}], \"deny\": [2]}");
    assert_false(allows(a, ""));
    json_decref(a);

    a = acl("{\"allow\": [\"*\"], \"deny\": [2, null]}");
    assert_true(allows(a, ""));
    json_decref(a);
}


static void
too_slow(int sig)
{
    fail_msg("the glob matcher took more than 5 seconds");
}


/*
 * "*a*a*a*a*a*a*a*a*b" against 20,000 'a's: a backtracking matcher tries
 * every split (exponential); an iterative one is done in well under a
 * second. The alarm turns a hang into a failure.
 */
static void
test_hostile_glob(void **state)
{
    char     *s;
    size_t    n;
    json_t   *a;
    clock_t   t;

    signal(SIGALRM, too_slow);
    alarm(5);

    n = 20000;
    s = malloc(n + 2);
    assert_non_null(s);
    memset(s, 'a', n);
    s[n] = '\0';

    a = acl("{\"allow\": [\"*a*a*a*a*a*a*a*a*b\"]}");

    t = clock();
    assert_false(mx_acl_allows(a, s, n, NULL));
    assert_true(clock() - t < 2 * CLOCKS_PER_SEC);

    s[n] = 'b';
    s[n + 1] = '\0';
    t = clock();
    assert_true(mx_acl_allows(a, s, n + 1, NULL));
    assert_true(clock() - t < 2 * CLOCKS_PER_SEC);

    alarm(0);

    json_decref(a);
    free(s);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_no_acl),
        cmocka_unit_test(test_deny_and_allow),
        cmocka_unit_test(test_missing_allow),
        cmocka_unit_test(test_port_and_case),
        cmocka_unit_test(test_wildcards),
        cmocka_unit_test(test_ip_literals),
        cmocka_unit_test(test_non_string_entries),
        cmocka_unit_test(test_hostile_glob),
    };

    return cmocka_run_group_tests_name("auth_acl", tests, NULL, NULL);
}
