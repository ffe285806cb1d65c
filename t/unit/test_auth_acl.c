/*
 * Copyright (C) nginx-matrix-join authors.
 * Server ACLs, reference §6.5: port stripped, case-insensitive globs,
 * IP literals, deny before allow, missing allow denies everyone, and a
 * glob that would take exponential time in a backtracking matcher.
 *
 * One table, acl_cases[]: an m.room.server_acl content, a server name and
 * the answer; each row is its own cmocka test, named after the row.
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


typedef struct {
    const char  *name;
    const char  *acl;           /* the content, JSON */
    const char  *server;
    int          len;           /* of server to pass; -1: all of it */
    int          allowed;
    const char  *rule;          /* in res.rule, or NULL: not checked */
} acl_case_t;


#define DENY_EVIL  "{\"allow\": [\"*\"], \"deny\": [\"evil.example\"]}"
#define PORTS  "{\"allow\": [\"good.example\", \"[::1]\", \"10.0.0.1\"]," \
               " \"deny\": [\"EVIL.example\"]}"
#define NO_IP  "{\"allow\": [\"*\"], \"allow_ip_literals\": false}"
#define IP_OK  "{\"allow\": [\"*\"], \"allow_ip_literals\": true}"
#define ALL    "{\"allow\": [\"*\"]}"
#define MIXED  "{\"allow\": [1, null, true, {\"a\": 1}, [\"*\"]," \
               "  \"good.example\"]," \
               " \"deny\": [42, {\"x\": \"*\"}, \"evil.example\"]}"


static const acl_case_t  acl_cases[] = {

    /* deny and allow */
    { "deny: listed", DENY_EVIL, "evil.example", -1, 0,
      "server ACL denies evil.example" },
    { "allow: not denied", DENY_EVIL, "good.example", -1, 1,
      "allows good.example" },
    { "deny: not a suffix match", DENY_EVIL, "notevil.example", -1,
      1, NULL },
    { "deny: not a prefix match", DENY_EVIL, "evil.example.org", -1,
      1, NULL },
    { "the length is honoured, not the NUL", DENY_EVIL,
      "evil.example.org", 12, 0, NULL },
    { "deny wins over allow: *", "{\"allow\": [\"*\"], \"deny\": [\"*\"]}",
      "good.example", -1, 0, NULL },
    { "deny wins over allow: a name",
      "{\"allow\": [\"good.example\"], \"deny\": [\"good.example\"]}",
      "good.example", -1, 0, NULL },

    /* a missing allow denies everyone */
    { "missing allow", "{\"deny\": [\"evil.example\"]}", "good.example", -1,
      0, "no allow pattern matches" },
    { "empty content", "{}", "good.example", -1, 0, NULL },
    { "empty allow", "{\"allow\": []}", "good.example", -1, 0, NULL },
    { "an allow that is not a list is an empty one", "{\"allow\": \"*\"}",
      "good.example", -1, 0, NULL },
    { "a deny that is not a list denies nothing",
      "{\"allow\": [\"*\"], \"deny\": \"*\"}", "good.example", -1, 1, NULL },

    /* the port is stripped, names are matched without case */
    { "port: denied name", PORTS, "evil.example:8448", -1, 0, NULL },
    { "case: denied name", PORTS, "Evil.Example", -1, 0, NULL },
    { "case and port: denied name", PORTS, "EVIL.EXAMPLE:443", -1, 0, NULL },
    { "port: allowed name", PORTS, "good.example:8448", -1, 1, NULL },
    { "case: allowed name", PORTS, "GOOD.example", -1, 1, NULL },
    { "port: IPv6 literal", PORTS, "[::1]:8448", -1, 1, NULL },
    { "port: IPv4 literal", PORTS, "10.0.0.1:8448", -1, 1, NULL },
    { "the port is stripped only after a colon", PORTS, "good.example8448",
      -1, 0, NULL },
    { "the port is never matched", "{\"allow\": [\"*:8448\"]}",
      "good.example:8448", -1, 0, NULL },

    /* wildcards */
    { "?: a letter", "{\"allow\": [\"ev?l.example\"]}", "evil.example", -1, 1,
      NULL },
    { "?: another letter", "{\"allow\": [\"ev?l.example\"]}", "evXl.example",
      -1, 1, NULL },
    { "?: a dot", "{\"allow\": [\"ev?l.example\"]}", "ev.l.example", -1, 1,
      NULL },
    { "?: not nothing", "{\"allow\": [\"ev?l.example\"]}", "evl.example", -1,
      0, NULL },
    { "?: not two", "{\"allow\": [\"ev?l.example\"]}", "eviil.example", -1, 0,
      NULL },
    { "*.: one label", "{\"allow\": [\"*.evil.example\"]}", "a.evil.example",
      -1, 1, NULL },
    { "*.: two labels", "{\"allow\": [\"*.evil.example\"]}",
      "a.b.evil.example", -1, 1, NULL },
    { "*.: an empty label", "{\"allow\": [\"*.evil.example\"]}",
      ".evil.example", -1, 1, NULL },
    { "*.: not the name itself", "{\"allow\": [\"*.evil.example\"]}",
      "evil.example", -1, 0, NULL },
    { "*.: anchored at the end", "{\"allow\": [\"*.evil.example\"]}",
      "a.evil.example.org", -1, 0, NULL },
    { "trailing *: nothing", "{\"allow\": [\"evil*\"]}", "evil", -1, 1, NULL },
    { "trailing *: more", "{\"allow\": [\"evil*\"]}", "evil.example", -1, 1,
      NULL },
    { "trailing *: anchored at the start", "{\"allow\": [\"evil*\"]}",
      "notevil", -1, 0, NULL },
    { "*: the empty name", ALL, "", -1, 1, NULL },
    { "*: any name", ALL, "anything.at.all", -1, 1, NULL },
    { "a*b?c*: short", "{\"allow\": [\"a*b?c*\"]}", "abxc", -1, 1, NULL },
    { "a*b?c*: long", "{\"allow\": [\"a*b?c*\"]}", "a123b4c567", -1, 1,
      NULL },
    { "a*b?c*: backtracking", "{\"allow\": [\"a*b?c*\"]}", "abbbbxcbxc", -1,
      1, NULL },
    { "a*b?c*: ? needs a letter", "{\"allow\": [\"a*b?c*\"]}", "abc", -1, 0,
      NULL },
    { "a*b?c*: anchored at the start", "{\"allow\": [\"a*b?c*\"]}", "xabxc",
      -1, 0, NULL },
    { "??: two", "{\"allow\": [\"??\"]}", "ab", -1, 1, NULL },
    { "??: not one", "{\"allow\": [\"??\"]}", "a", -1, 0, NULL },
    { "??: not three", "{\"allow\": [\"??\"]}", "abc", -1, 0, NULL },
    { "**?**: one", "{\"allow\": [\"**?**\"]}", "a", -1, 1, NULL },
    { "**?**: not none", "{\"allow\": [\"**?**\"]}", "", -1, 0, NULL },

    /* IP literals */
    { "no IP literals: IPv4", NO_IP, "1.2.3.4", -1, 0, "IP literal 1.2.3.4" },
    { "no IP literals: IPv4 and port", NO_IP, "1.2.3.4:8448", -1, 0, NULL },
    { "no IP literals: IPv4 broadcast", NO_IP, "255.255.255.255", -1, 0,
      NULL },
    { "no IP literals: IPv6", NO_IP, "[::1]", -1, 0, NULL },
    { "no IP literals: IPv6 and port", NO_IP, "[2001:db8::1]:8448", -1, 0,
      NULL },
    { "no IP literals: three parts is a name", NO_IP, "1.2.3", -1, 1, NULL },
    { "no IP literals: five parts is a name", NO_IP, "1.2.3.4.5", -1, 1,
      NULL },
    { "no IP literals: 256 is a name", NO_IP, "256.1.1.1", -1, 1, NULL },
    { "no IP literals: a letter after is a name", NO_IP, "1.2.3.4x", -1, 1,
      NULL },
    { "no IP literals: four digits is a name", NO_IP, "1234.1.1.1", -1, 1,
      NULL },
    { "no IP literals: an empty part is a name", NO_IP, "1..2.3", -1, 1,
      NULL },
    { "no IP literals: a name", NO_IP, "good.example", -1, 1, NULL },
    { "IP literals true: IPv4", IP_OK, "1.2.3.4", -1, 1, NULL },
    { "IP literals true: IPv6 and port", IP_OK, "[::1]:8448", -1, 1, NULL },
    { "IP literals missing: IPv4", ALL, "1.2.3.4", -1, 1, NULL },
    { "IP literals missing: IPv6", ALL, "[::1]", -1, 1, NULL },
    { "IP literals \"false\" is not false",
      "{\"allow\": [\"*\"], \"allow_ip_literals\": \"false\"}", "1.2.3.4", -1,
      1, NULL },
    { "IP literals 0 is not false",
      "{\"allow\": [\"*\"], \"allow_ip_literals\": 0}", "[::1]", -1, 1, NULL },
    { "IP literals null is not false",
      "{\"allow\": [\"*\"], \"allow_ip_literals\": null}", "1.2.3.4", -1, 1,
      NULL },
    { "an allowed IP literal is allowed by a glob",
      "{\"allow\": [\"1.2.3.*\"], \"deny\": [\"1.2.3.66\"]}", "1.2.3.4", -1,
      1, NULL },
    { "an allowed IP literal is denied by deny",
      "{\"allow\": [\"1.2.3.*\"], \"deny\": [\"1.2.3.66\"]}", "1.2.3.66", -1,
      0, NULL },
    { "an allowed IP literal needs an allow",
      "{\"allow\": [\"1.2.3.*\"], \"deny\": [\"1.2.3.66\"]}", "1.2.4.4", -1,
      0, NULL },

    /* entries that are not strings are no patterns */
    { "mixed entries: the string allows", MIXED, "good.example", -1, 1, NULL },
    { "mixed entries: the string denies", MIXED, "evil.example", -1, 0, NULL },
    { "mixed entries: no * from a nested list", MIXED, "other.example", -1, 0,
      NULL },
    { "non-strings are not even an empty allow",
      "{\"allow\": [1, null, {}], \"deny\": [2]}", "", -1, 0, NULL },
    { "non-strings are not even an empty deny",
      "{\"allow\": [\"*\"], \"deny\": [2, null]}", "", -1, 1, NULL },
};


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


static void
test_acl_case(void **state)
{
    const acl_case_t  *c = *state;

    int                rc;
    size_t             len;
    json_t            *a;
    mx_auth_result_t   res;

    a = acl(c->acl);
    len = c->len < 0 ? strlen(c->server) : (size_t) c->len;

    memset(&res, 0, sizeof(res));
    rc = mx_acl_allows(a, c->server, len, &res);

    assert_int_equal(rc, c->allowed);
    assert_int_equal(res.code, c->allowed ? MX_AUTH_ALLOW : MX_AUTH_FORBIDDEN);

    if (c->rule != NULL && strstr(res.rule, c->rule) == NULL) {
        fail_msg("rule \"%s\" does not say \"%s\"", res.rule, c->rule);
    }

    /* without a result to fill, the same answer */
    assert_int_equal(mx_acl_allows(a, c->server, len, NULL), c->allowed);

    json_decref(a);
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
test_denied_result(void **state)
{
    json_t            *a;
    mx_auth_result_t   res;

    a = acl(DENY_EVIL);

    assert_int_equal(mx_acl_allows(a, "evil.example", 12, &res), 0);
    assert_int_equal(res.code, MX_AUTH_FORBIDDEN);
    assert_int_equal(res.status, 403);
    assert_string_equal(res.errcode, "M_FORBIDDEN");

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
    int                 rc;
    size_t              i, n;
    struct CMUnitTest  *tests;

    static const struct CMUnitTest  fixed[] = {
        cmocka_unit_test(test_no_acl),
        cmocka_unit_test(test_denied_result),
        cmocka_unit_test(test_hostile_glob),
    };

    n = sizeof(acl_cases) / sizeof(acl_cases[0]);
    tests = calloc(n + 3, sizeof(struct CMUnitTest));
    if (tests == NULL) {
        return 1;
    }

    memcpy(tests, fixed, sizeof(fixed));

    for (i = 0; i < n; i++) {
        tests[3 + i].name = acl_cases[i].name;
        tests[3 + i].test_func = test_acl_case;
        tests[3 + i].initial_state = (void *) &acl_cases[i];
    }

    rc = _cmocka_run_group_tests("auth_acl", tests, n + 3, NULL, NULL);

    free(tests);

    return rc;
}
