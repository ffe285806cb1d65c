/*
 * Copyright (C) nginx-matrix-join authors.
 * Redis Cluster's routing facts (mx_cluster.h) and the cluster: address.
 * The slots are the Redis Cluster specification's and the Redis
 * documentation's own examples (CRC16 of "123456789" is 0x31C3; CLUSTER
 * KEYSLOT's page); t/integration/test_cluster.py judges many more keys
 * against a real cluster (no command of ours is ever answered MOVED).
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_cluster.h"


#define SLOT(s)  mx_cluster_slot(s, strlen(s))


static void
test_slot_vectors(void **state)
{
    /* the specification: CRC16("123456789") = 0x31C3, mod 16384 */
    assert_int_equal(SLOT("123456789"), 0x31C3 & 16383);

    /* CLUSTER KEYSLOT's documentation */
    assert_int_equal(SLOT("somekey"), 11058);
    assert_int_equal(SLOT("foo{hash_tag}"), 2515);
    assert_int_equal(SLOT("bar{hash_tag}"), 2515);
}


static void
test_hash_tags(void **state)
{
    /* the specification's hash tag examples */
    assert_int_equal(SLOT("{user1000}.following"), SLOT("user1000"));
    assert_int_equal(SLOT("{user1000}.followers"), SLOT("user1000"));
    assert_int_equal(SLOT("foo{}{bar}"),
                     mx_cluster_slot("foo{}{bar}", 10));
    assert_int_not_equal(SLOT("foo{}{bar}"), SLOT("bar"));
    assert_int_equal(SLOT("foo{{bar}}zap"), SLOT("{bar"));
    assert_int_equal(SLOT("foo{bar}{zap}"), SLOT("bar"));
    assert_int_equal(SLOT("no}tag{"), mx_cluster_slot("no}tag{", 7));

    /* a room's keys: one slot, the room ID's */
    assert_int_equal(SLOT("mxj:{!a:example.org}:meta"),
                     SLOT("!a:example.org"));
    assert_int_equal(SLOT("mxj:{!a:example.org}:outbox"),
                     SLOT("mxj:{!a:example.org}:meta"));

    /* the length is the key's: the bytes after it are not read */
    assert_int_equal(mx_cluster_slot("{ab}c", 3), SLOT("{ab"));
}


static int
key(const char *cmd, ...)
{
    int          argc;
    va_list      ap;
    const char  *argv[16], *a;

    argv[0] = cmd;
    argc = 1;

    va_start(ap, cmd);

    while (argc < 16 && (a = va_arg(ap, const char *)) != NULL) {
        argv[argc++] = a;
    }

    va_end(ap);

    return mx_cluster_key_index(argc, argv, NULL);
}


static void
test_key_index(void **state)
{
    assert_int_equal(key("GET", "k", NULL), 1);
    assert_int_equal(key("hset", "k", "f", "v", NULL), 1);
    assert_int_equal(key("XADD", "k", "*", "f", "v", NULL), 1);
    assert_int_equal(key("EVALSHA", "sha", "2", "k1", "k2", "a", NULL), 3);
    assert_int_equal(key("eval", "return 1", "0", NULL), -1);
    assert_int_equal(key("EVAL", "return 1", "x", "k", NULL), -1);
    assert_int_equal(key("XREADGROUP", "GROUP", "g", "c", "COUNT", "1",
                         "STREAMS", "k", ">", NULL), 7);
    assert_int_equal(key("XGROUP", "CREATE", "k", "g", "$", NULL), 2);
    assert_int_equal(key("MEMORY", "USAGE", "k", NULL), 2);
    assert_int_equal(key("MULTI", NULL), -1);
    assert_int_equal(key("EXEC", NULL), -1);
    assert_int_equal(key("WAIT", "1", "100", NULL), -1);
    assert_int_equal(key("SCRIPT", "LOAD", "return 1", NULL), -1);
    assert_int_equal(key("SCAN", "0", "MATCH", "x*", NULL), -1);
    assert_int_equal(key("AUTH", "pw", NULL), -1);
    assert_int_equal(key("PING", NULL), -1);
}


static int
redirect(const char *s, unsigned *slot, mx_redis_host_t *h)
{
    return mx_cluster_redirect(s, strlen(s), slot, h);
}


static void
test_redirect(void **state)
{
    unsigned         slot;
    mx_redis_host_t  h;

    assert_int_equal(redirect("MOVED 3999 127.0.0.1:6381", &slot, &h),
                     MX_CLUSTER_MOVED);
    assert_int_equal(slot, 3999);
    assert_string_equal(h.host, "127.0.0.1");
    assert_int_equal(h.port, 6381);

    assert_int_equal(redirect("ASK 16383 [::1]:7000", &slot, &h),
                     MX_CLUSTER_ASK);
    assert_int_equal(slot, 16383);
    assert_string_equal(h.host, "::1");
    assert_int_equal(h.port, 7000);

    /* Redis 7 with an unknown endpoint: the node that answered */
    assert_int_equal(redirect("MOVED 0 :7001", &slot, &h), MX_CLUSTER_MOVED);
    assert_string_equal(h.host, "");
    assert_int_equal(h.port, 7001);

    assert_int_equal(redirect("MOVED 16384 127.0.0.1:1", &slot, &h), 0);
    assert_int_equal(redirect("MOVED x 127.0.0.1:1", &slot, &h), 0);
    assert_int_equal(redirect("MOVED 1 127.0.0.1", &slot, &h), 0);
    assert_int_equal(redirect("MOVED 1 unix:/tmp/s", &slot, &h), 0);
    assert_int_equal(redirect("MOVED", &slot, &h), 0);
    assert_int_equal(redirect("ERR MOVED 1 h:1", &slot, &h), 0);
    assert_int_equal(redirect("ASKING", &slot, &h), 0);
    assert_int_equal(redirect("TRYAGAIN Multiple keys request during "
                              "rehashing of slot", &slot, &h), 0);
}


static void
test_address(void **state)
{
    char             err[160];
    mx_redis_addr_t  a;
    const char      *s;

    s = "cluster:127.0.0.1:7000 127.0.0.1:7001,[::1]:7002";
    assert_int_equal(mx_redis_addr_parse(s, strlen(s), &a, err, sizeof(err)),
                     0);
    assert_int_equal(a.cluster, 1);
    assert_string_equal(a.master, "");
    assert_int_equal(a.nhosts, 3);
    assert_string_equal(a.hosts[0].host, "127.0.0.1");
    assert_int_equal(a.hosts[0].port, 7000);
    assert_int_equal(a.hosts[1].port, 7001);
    assert_string_equal(a.hosts[2].host, "::1");

    /* "cluster:6379" is the host named cluster */
    s = "cluster:6379";
    assert_int_equal(mx_redis_addr_parse(s, strlen(s), &a, err, sizeof(err)),
                     0);
    assert_int_equal(a.cluster, 0);
    assert_string_equal(a.hosts[0].host, "cluster");
    assert_int_equal(a.hosts[0].port, 6379);

    s = "cluster:unix:/tmp/r.sock";
    assert_int_equal(mx_redis_addr_parse(s, strlen(s), &a, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "cluster nodes are asked over TCP: "
                        "\"host:port\"");

    s = "cluster:h:1 unix:/tmp/r.sock";
    assert_int_equal(mx_redis_addr_parse(s, strlen(s), &a, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "cluster nodes are asked over TCP: "
                        "\"host:port\"");

    s = "h:1 cluster:h:2";
    assert_int_equal(mx_redis_addr_parse(s, strlen(s), &a, err, sizeof(err)),
                     -1);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_vectors),
        cmocka_unit_test(test_hash_tags),
        cmocka_unit_test(test_key_index),
        cmocka_unit_test(test_redirect),
        cmocka_unit_test(test_address),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
