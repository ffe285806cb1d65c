/*
 * Copyright (C) nginx-matrix-join authors.
 * The Redis address syntax of matrix_redis and --redis (mx_redis_addr.h):
 * the expected values are written out by hand.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_redis_addr.h"


static void
parse_ok(const char *s, mx_redis_addr_t *a)
{
    char  err[128];

    err[0] = '\0';

    if (mx_redis_addr_parse(s, strlen(s), a, err, sizeof(err)) != 0) {
        fail_msg("\"%s\": %s", s, err);
    }
}


static void
parse_fails(const char *s, const char *want)
{
    char             err[128];
    mx_redis_addr_t  a;

    err[0] = '\0';
    assert_int_equal(mx_redis_addr_parse(s, strlen(s), &a, err, sizeof(err)),
                     -1);
    assert_string_equal(err, want);
}


static void
test_single(void **state)
{
    mx_redis_addr_t  a;

    parse_ok("127.0.0.1:6379", &a);
    assert_string_equal(a.master, "");
    assert_int_equal(a.nhosts, 1);
    assert_string_equal(a.hosts[0].host, "127.0.0.1");
    assert_int_equal(a.hosts[0].port, 6379);

    parse_ok("  redis.example:1 ", &a);
    assert_string_equal(a.hosts[0].host, "redis.example");
    assert_int_equal(a.hosts[0].port, 1);

    parse_ok("[::1]:65535", &a);
    assert_string_equal(a.hosts[0].host, "::1");
    assert_int_equal(a.hosts[0].port, 65535);

    parse_ok("unix:/run/redis/redis.sock", &a);
    assert_string_equal(a.hosts[0].host, "/run/redis/redis.sock");
    assert_int_equal(a.hosts[0].port, 0);
}


static void
test_sentinel(void **state)
{
    mx_redis_addr_t  a;

    parse_ok("sentinel:mymaster 127.0.0.1:26379 [::1]:26380,10.0.0.3:26381",
             &a);
    assert_string_equal(a.master, "mymaster");
    assert_int_equal(a.nhosts, 3);
    assert_string_equal(a.hosts[0].host, "127.0.0.1");
    assert_int_equal(a.hosts[0].port, 26379);
    assert_string_equal(a.hosts[1].host, "::1");
    assert_int_equal(a.hosts[1].port, 26380);
    assert_string_equal(a.hosts[2].host, "10.0.0.3");
    assert_int_equal(a.hosts[2].port, 26381);

    parse_ok("sentinel:m,s1:5", &a);
    assert_string_equal(a.master, "m");
    assert_int_equal(a.nhosts, 1);
    assert_string_equal(a.hosts[0].host, "s1");
    assert_int_equal(a.hosts[0].port, 5);
}


static void
test_invalid(void **state)
{
    parse_fails("", "empty");
    parse_fails(" , ", "empty");
    parse_fails("localhost", "expected \"host:port\" or \"unix:/path\"");
    parse_fails(":6379", "expected \"host:port\" or \"unix:/path\"");
    parse_fails("h:", "expected \"host:port\" or \"unix:/path\"");
    parse_fails("h:0", "invalid port");
    parse_fails("h:65536", "invalid port");
    parse_fails("h:99999999999999999999", "invalid port");
    parse_fails("h:12a", "invalid port");
    parse_fails("::1:6379", "an IPv6 address needs brackets: "
                "\"[addr]:port\"");
    parse_fails("[::1:6379", "an IPv6 address needs its closing \"]\"");
    parse_fails("unix:run/redis.sock", "a unix socket needs an absolute "
                "path");
    parse_fails("h:1 h:2", "one address, \"sentinel:NAME\" and the "
                "sentinels' addresses, or \"cluster:host:port\" and more "
                "nodes");
    parse_fails("sentinel:m", "no sentinel address");
    parse_fails("sentinel: h:1", "\"sentinel:\" needs the master's name "
                "(at most 127 bytes)");
    parse_fails("sentinel:m unix:/s.sock", "sentinels are asked over TCP: "
                "\"host:port\"");
    parse_fails("sentinel:m h:1 h:2 h:3 h:4 h:5 h:6 h:7 h:8 h:9 h:10 h:11 "
                "h:12 h:13 h:14 h:15 h:16 h:17", "at most 16 sentinels");
}


static void
test_not_nul_terminated(void **state)
{
    char             err[128];
    mx_redis_addr_t  a;

    /* the nginx argument is a length, the byte after it is not ours */
    assert_int_equal(mx_redis_addr_parse("h:12345", 4, &a, err, sizeof(err)),
                     0);
    assert_int_equal(a.hosts[0].port, 12);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_sentinel),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_not_nul_terminated),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
