/*
 * Copyright (C) nginx-matrix-join authors.
 * The JSON extent scanner of the snapshot and of sync (mx_scan.h): the
 * members and elements of big texts, and where and why a bad one stops.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mx_scan.h"


static void
test_member_and_elements(void **state)
{
    size_t       n, len, pos;
    const char  *v, *el;

    static const char  doc[] =
        " { \"a\\\"]\" : [1, {\"x\": \"]}\"}], \"pdus\" :[ {\"k\":[1,2]} ,"
        "\"s\\\"\" , 3,null ] , \"auth_chain\":[] }";

    assert_int_equal(mx_scan_member(doc, sizeof(doc) - 1, "pdus", &v, &n),
                     0);
    assert_int_equal(n, 31);
    assert_memory_equal(v, "[ {\"k\":[1,2]} ,\"s\\\"\" , 3,null ]", n);

    len = n;
    pos = 0;
    assert_int_equal(mx_scan_next(v, len, &pos, &el, &n), 1);
    assert_int_equal(n, 11);
    assert_memory_equal(el, "{\"k\":[1,2]}", 11);
    assert_int_equal(mx_scan_next(v, len, &pos, &el, &n), 1);
    assert_int_equal(n, 5);
    assert_memory_equal(el, "\"s\\\"\"", 5);
    assert_int_equal(mx_scan_next(v, len, &pos, &el, &n), 1);
    assert_int_equal(n, 1);
    assert_memory_equal(el, "3", 1);
    assert_int_equal(mx_scan_next(v, len, &pos, &el, &n), 1);
    assert_int_equal(n, 4);
    assert_memory_equal(el, "null", 4);
    assert_int_equal(mx_scan_next(v, len, &pos, &el, &n), 0);
    assert_int_equal(mx_scan_next(v, len, &pos, &el, &n), 0);

    assert_int_equal(mx_scan_member(doc, sizeof(doc) - 1, "auth_chain", &v,
                                    &n), 0);
    assert_int_equal(n, 2);
    pos = 0;
    assert_int_equal(mx_scan_next(v, n, &pos, &el, &n), 0);
}


static void
test_malformed(void **state)
{
    size_t       n, pos;
    const char  *v, *el;

    static const char  doc[] = "{\"a\":1}";

    assert_int_equal(mx_scan_member(doc, sizeof(doc) - 1, "nope", &v, &n),
                     -1);
    assert_int_equal(mx_scan_member("[1]", 3, "a", &v, &n), -1);
    assert_int_equal(mx_scan_member("{\"a\":[1", 7, "a", &v, &n), -1);
    assert_int_equal(mx_scan_member("{\"a", 3, "a", &v, &n), -1);
    assert_int_equal(mx_scan_member("{\"b\":1 \"a\":2}", 14, "a", &v, &n),
                     -1);
    assert_int_equal(mx_scan_member("{}", 2, "a", &v, &n), -1);

    pos = 0;
    assert_int_equal(mx_scan_next("[1 2]", 5, &pos, &el, &n), 1);
    assert_int_equal(mx_scan_next("[1 2]", 5, &pos, &el, &n), -1);
    pos = 0;
    assert_int_equal(mx_scan_next("[1,]", 4, &pos, &el, &n), 1);
    assert_int_equal(mx_scan_next("[1,]", 4, &pos, &el, &n), -1);
    pos = 0;
    assert_int_equal(mx_scan_next("{}", 2, &pos, &el, &n), -1);
    pos = 0;
    assert_int_equal(mx_scan_next("[\"]", 3, &pos, &el, &n), -1);
    pos = 0;
    assert_int_equal(mx_scan_next(" [ ] ", 5, &pos, &el, &n), 0);
}


typedef struct {
    const char  *text;
    size_t       start;
    int          rc;
    size_t       end;           /* where the scan stopped */
    const char  *why;
} scan_case_t;


static const scan_case_t  value_cases[] = {
    { "\"a\\\"b\" ,", 0, 0, 6, NULL },
    { "[1,[2],{\"]\":3}] x", 0, 0, 15, NULL },
    { "true,", 0, 0, 4, NULL },
    { "-1.5e3}", 0, 0, 6, NULL },
    { "x 12 ", 2, 0, 4, NULL },
    { "\"abc", 0, -1, 4, "unterminated string" },
    { "[\"ab", 0, -1, 4, "unterminated string" },
    { "{\"a\":[1,2}", 0, -1, 10, "unexpected end of input" },
    { "", 0, -1, 0, "unexpected end of input" },
    { "  ", 2, -1, 2, "unexpected end of input" },
    { ",1", 0, -1, 0, "unexpected character" },
    { "]", 0, -1, 0, "unexpected character" },
};


static void
test_value(void **state)
{
    size_t              i, pos;
    const char         *why;
    const scan_case_t  *c;

    for (i = 0; i < sizeof(value_cases) / sizeof(value_cases[0]); i++) {
        c = &value_cases[i];
        pos = c->start;
        why = NULL;

        assert_int_equal(mx_scan_value(c->text, strlen(c->text), &pos, &why),
                         c->rc);
        assert_int_equal(pos, c->end);

        if (c->why == NULL) {
            assert_null(why);

        } else {
            assert_string_equal(why, c->why);
        }
    }
}


static void
test_ws(void **state)
{
    assert_int_equal(mx_scan_ws(" \t\r\n x", 6, 0), 5);
    assert_int_equal(mx_scan_ws("x ", 2, 0), 0);
    assert_int_equal(mx_scan_ws("  ", 2, 1), 2);
    assert_int_equal(mx_scan_ws("\f", 1, 0), 0);   /* not JSON's space */
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_member_and_elements),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_value),
        cmocka_unit_test(test_ws),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
