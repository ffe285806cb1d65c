/*
 * Copyright (C) nginx-matrix-join authors.
 * The hash table over the caller's entries (mx_table.h): FNV-1a's
 * published values, finds after growth, absent keys, colliding slots.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "mx_table.h"


#define N  5000


static char  names[N][16];


static const char *
key_of(const void *data, size_t i)
{
    return ((const char (*)[16]) data)[i];
}


/* FNV-1a 64 test values (the FNV authors' list, "" and "a" and "foobar") */

static void
test_hash(void **state)
{
    assert_true(mx_table_hash("") == (size_t) 0xcbf29ce484222325ULL);
    assert_true(mx_table_hash("a") == (size_t) 0xaf63dc4c8601ec8cULL);
    assert_true(mx_table_hash("foobar") == (size_t) 0x85944171f73967e8ULL);
}


static void
test_find_after_growth(void **state)
{
    size_t      i;
    mx_table_t  t;

    memset(&t, 0, sizeof(mx_table_t));

    assert_int_equal(mx_table_find(&t, "$0", key_of, names), -1);

    for (i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "$%zu", i);
        assert_int_equal(mx_table_add(&t, i, key_of, names), 0);
    }

    assert_int_equal(t.n, N);
    assert_int_equal(t.cap, 16384);         /* 64 doubled to half load */

    for (i = 0; i < N; i++) {
        assert_int_equal(mx_table_find(&t, names[i], key_of, names),
                         (long) i);
    }

    assert_int_equal(mx_table_find(&t, "$5000", key_of, names), -1);
    assert_int_equal(mx_table_find(&t, "", key_of, names), -1);

    mx_table_free(&t);
    assert_null(t.slot);
    assert_int_equal(t.cap, 0);
    assert_int_equal(mx_table_find(&t, "$1", key_of, names), -1);
}


/* Two keys in one slot of 64: the second is found by probing on. */

static void
test_collision(void **state)
{
    size_t      a, b, h;
    mx_table_t  t;

    memset(&t, 0, sizeof(mx_table_t));

    snprintf(names[0], sizeof(names[0]), "k0");
    h = mx_table_hash(names[0]) & 63;

    for (b = 1; b < N; b++) {
        snprintf(names[b], sizeof(names[b]), "k%zu", b);

        if ((mx_table_hash(names[b]) & 63) == h) {
            break;
        }
    }

    assert_true(b < N);

    a = 0;
    assert_int_equal(mx_table_add(&t, a, key_of, names), 0);
    assert_int_equal(mx_table_add(&t, b, key_of, names), 0);
    assert_int_equal(t.cap, 64);
    assert_int_equal(mx_table_find(&t, names[a], key_of, names), (long) a);
    assert_int_equal(mx_table_find(&t, names[b], key_of, names), (long) b);

    mx_table_free(&t);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_find_after_growth),
        cmocka_unit_test(test_collision),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
