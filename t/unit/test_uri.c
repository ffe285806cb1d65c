/*
 * Copyright (C) nginx-matrix-join authors.
 * Request URI decoding (mx_uri.h). The expected values are written out by
 * hand from Python's urllib.parse.unquote_to_bytes and Twisted's parse_qs
 * (t/differential/test_uri.py compares thousands more against the real
 * ones); here the cases a reader should see at once, and the buffer
 * bounds.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_uri.h"


static void
unescape_is(const char *in, int plus, const char *want, size_t wlen)
{
    char    *out;
    size_t   n, len;

    len = strlen(in);

    /* exactly len bytes: decoding must never need more */
    out = malloc(len ? len : 1);
    assert_non_null(out);

    n = mx_uri_unescape(out, in, len, plus);
    assert_int_equal(n, wlen);
    assert_memory_equal(out, want, wlen);
    assert_true(mx_uri_unescaped_eq(in, len, want, wlen, plus));

    free(out);
}


static void
test_unescape(void **state)
{
    unescape_is("", 0, "", 0);
    unescape_is("%21r%3Aexample.org", 0, "!r:example.org", 14);
    unescape_is("%2f%2F", 0, "//", 2);              /* either case */
    unescape_is("%00", 0, "\0", 1);
    unescape_is("%", 0, "%", 1);                    /* left as it is */
    unescape_is("%4", 0, "%4", 2);
    unescape_is("%zz", 0, "%zz", 3);                /* nginx: "zz" */
    unescape_is("%4g", 0, "%4g", 3);                /* nginx: "" */
    unescape_is("%%41", 0, "%A", 2);
    unescape_is("a+b", 0, "a+b", 3);                /* paths keep '+' */
    unescape_is("a+b", 1, "a b", 3);                /* queries do not */
    unescape_is("%2B+", 1, "+ ", 2);
    unescape_is("%C3%A9", 0, "\xc3\xa9", 2);
}


static void
test_unescaped_eq(void **state)
{
    assert_true(mx_uri_unescaped_eq("v%65r", 5, "ver", 3, 1));
    assert_false(mx_uri_unescaped_eq("ver", 3, "ve", 2, 1));
    assert_false(mx_uri_unescaped_eq("ve", 2, "ver", 3, 1));
    assert_false(mx_uri_unescaped_eq("VER", 3, "ver", 3, 1));
    assert_true(mx_uri_unescaped_eq("", 0, "", 0, 1));
}


static int
path(const char *in, const char *a, const char *b)
{
    int             rc;
    char           *buf;
    size_t          len;
    mx_uri_part_t   seg[2];

    len = strlen(in);
    buf = malloc(len + 2);                  /* the documented room */
    assert_non_null(buf);

    rc = mx_uri_path_params(in, len, buf, seg);

    if (rc == MX_URI_OK) {
        assert_int_equal(seg[0].len, strlen(a));
        assert_string_equal(seg[0].data, a);
        assert_int_equal(seg[1].len, strlen(b));
        assert_string_equal(seg[1].data, b);
    }

    free(buf);

    return rc;
}


static void
test_path_params(void **state)
{
    assert_int_equal(path("%21r%3Ax/%40u%3Ax", "!r:x", "@u:x"), MX_URI_OK);
    assert_int_equal(path("a%2Fb/c", "a/b", "c"), MX_URI_OK);
    assert_int_equal(path("/", "", ""), MX_URI_OK);
    assert_int_equal(path("a+b/c", "a+b", "c"), MX_URI_OK);
    assert_int_equal(path("", NULL, NULL), MX_URI_SHAPE);
    assert_int_equal(path("ab", NULL, NULL), MX_URI_SHAPE);
    assert_int_equal(path("a/b/", NULL, NULL), MX_URI_SHAPE);
    assert_int_equal(path("a//b", NULL, NULL), MX_URI_SHAPE);
    assert_int_equal(path("a%00/b", NULL, NULL), MX_URI_NUL);
    assert_int_equal(path("a/%00", NULL, NULL), MX_URI_NUL);
}


static void
test_args(void **state)
{
    const char  *q, *val;
    size_t       pos, vlen;

    /* '&' and ';' both separate; an item without '=' is skipped; the
     * name is decoded before it is compared */
    q = "ver;ver=1&x=2;v%65r=9&&ver=";
    pos = 0;
    assert_true(mx_uri_arg_next(q, strlen(q), &pos, "ver", &val, &vlen));
    assert_int_equal(vlen, 1);
    assert_memory_equal(val, "1", 1);
    assert_true(mx_uri_arg_next(q, strlen(q), &pos, "ver", &val, &vlen));
    assert_int_equal(vlen, 1);
    assert_memory_equal(val, "9", 1);
    assert_true(mx_uri_arg_next(q, strlen(q), &pos, "ver", &val, &vlen));
    assert_int_equal(vlen, 0);
    assert_false(mx_uri_arg_next(q, strlen(q), &pos, "ver", &val, &vlen));
    assert_false(mx_uri_arg_next(q, strlen(q), &pos, "ver", &val, &vlen));

    /* the value keeps any further '=' */
    q = "a==b=";
    pos = 0;
    assert_true(mx_uri_arg_next(q, strlen(q), &pos, "a", &val, &vlen));
    assert_int_equal(vlen, 3);
    assert_memory_equal(val, "=b=", 3);
}


static void
test_ver(void **state)
{
    assert_true(mx_uri_ver_listed("", 0, "1"));         /* the default */
    assert_false(mx_uri_ver_listed("", 0, "10"));
    assert_true(mx_uri_ver_listed("ver", 3, "1"));      /* no '=': none */
    assert_false(mx_uri_ver_listed("ver=", 4, "1"));    /* one, empty */
    assert_true(mx_uri_ver_listed("ver=9&ver=10", 12, "10"));
    assert_false(mx_uri_ver_listed("ver=9&ver=10", 12, "1"));
    assert_true(mx_uri_ver_listed("ver=%31%30", 10, "10"));
    assert_true(mx_uri_ver_listed("ver=org.matrix.msc3787", 22,
                                  "org.matrix.msc3787"));
}


static void
test_bool(void **state)
{
    assert_int_equal(mx_uri_arg_bool("", 0, "omit_members", 0), 0);
    assert_int_equal(mx_uri_arg_bool("", 0, "omit_members", 7), 7);
    assert_int_equal(mx_uri_arg_bool("omit_members=true", 17,
                                     "omit_members", 0), 1);
    assert_int_equal(mx_uri_arg_bool("omit_members=false", 18,
                                     "omit_members", 1), 0);
    assert_int_equal(mx_uri_arg_bool("omit_members=tru%65", 19,
                                     "omit_members", 0), 1);
    assert_int_equal(mx_uri_arg_bool("omit_members=True", 17,
                                     "omit_members", 0), -1);
    assert_int_equal(mx_uri_arg_bool("omit_members=", 13,
                                     "omit_members", 0), -1);
    /* the first one counts */
    assert_int_equal(mx_uri_arg_bool("omit_members=x&omit_members=true", 32,
                                     "omit_members", 0), -1);
    /* not the same name: nginx's ngx_http_arg would have matched it */
    assert_int_equal(mx_uri_arg_bool("OMIT_MEMBERS=true", 17,
                                     "omit_members", 0), 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_unescaped_eq),
        cmocka_unit_test(test_path_params),
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_ver),
        cmocka_unit_test(test_bool),
    };

    return cmocka_run_group_tests_name("uri", tests, NULL, NULL);
}
