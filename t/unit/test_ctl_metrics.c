/*
 * Copyright (C) nginx-matrix-join authors.
 * What forward --metrics and sync --metrics write (ctl_metrics.h): the
 * text format's lines, a label value escaped, a histogram's cumulative
 * buckets; and the HOST:PORT check of every listening option
 * (ctl_listen.h). Every expected text is written out here.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ctl_listen.h"
#include "ctl_metrics.h"


static char *
text(mx_buf_t *b)
{
    assert_int_equal(mx_buf_append_byte(b, '\0'), 0);
    b->len--;

    return b->data;
}


static void
test_head_and_samples(void **state)
{
    mx_buf_t  b = MX_BUF_INIT;

    assert_int_equal(mxj_metrics_head(&b, "x_total", "counter",
                                      "Things counted."), 0);
    assert_int_equal(mxj_metrics_u64(&b, "x_total", NULL, NULL, 0), 0);
    assert_int_equal(mxj_metrics_u64(&b, "x_total", "status_class", "2xx",
                                     18446744073709551615ULL), 0);
    assert_int_equal(mxj_metrics_double(&b, "age_seconds", "room",
                                        "!a:b.c", 1.5), 0);

    assert_string_equal(text(&b),
        "# HELP x_total Things counted.\n"
        "# TYPE x_total counter\n"
        "x_total 0\n"
        "x_total{status_class=\"2xx\"} 18446744073709551615\n"
        "age_seconds{room=\"!a:b.c\"} 1.500000\n");

    mx_buf_free(&b);
}


static void
test_label_value_escaped(void **state)
{
    mx_buf_t  b = MX_BUF_INIT;

    /* a room ID's opaque part may hold what the format must escape */

    assert_int_equal(mxj_metrics_u64(&b, "g", "room", "!a\"b\\c\nd:e.f", 7),
                     0);
    assert_string_equal(text(&b), "g{room=\"!a\\\"b\\\\c\\nd:e.f\"} 7\n");

    mx_buf_free(&b);
}


static void
test_histogram_cumulative(void **state)
{
    mx_buf_t            b = MX_BUF_INIT;
    mxj_metrics_hist_t  h;

    memset(&h, 0, sizeof(h));

    mxj_metrics_observe(&h, 0.005);     /* on a bound: in it */
    mxj_metrics_observe(&h, 0.02);
    mxj_metrics_observe(&h, 0.02);
    mxj_metrics_observe(&h, 7);
    mxj_metrics_observe(&h, 1000);      /* past the last: +Inf alone */
    mxj_metrics_observe(&h, -1);        /* a clock step back: 0 */

    assert_int_equal(mxj_metrics_hist(&b, "d_seconds", "Durations.", &h),
                     0);
    assert_string_equal(text(&b),
        "# HELP d_seconds Durations.\n"
        "# TYPE d_seconds histogram\n"
        "d_seconds_bucket{le=\"0.005\"} 2\n"
        "d_seconds_bucket{le=\"0.01\"} 2\n"
        "d_seconds_bucket{le=\"0.025\"} 4\n"
        "d_seconds_bucket{le=\"0.05\"} 4\n"
        "d_seconds_bucket{le=\"0.1\"} 4\n"
        "d_seconds_bucket{le=\"0.25\"} 4\n"
        "d_seconds_bucket{le=\"0.5\"} 4\n"
        "d_seconds_bucket{le=\"1\"} 4\n"
        "d_seconds_bucket{le=\"2.5\"} 4\n"
        "d_seconds_bucket{le=\"5\"} 4\n"
        "d_seconds_bucket{le=\"10\"} 5\n"
        "d_seconds_bucket{le=\"30\"} 5\n"
        "d_seconds_bucket{le=\"60\"} 5\n"
        "d_seconds_bucket{le=\"300\"} 5\n"
        "d_seconds_bucket{le=\"+Inf\"} 6\n"
        "d_seconds_sum 1007.045000\n"
        "d_seconds_count 6\n");

    mx_buf_free(&b);
}


static void
test_listen_check(void **state)
{
    size_t  i;

    static const char  *good[] = {
        "127.0.0.1:9101", "localhost:1", "[::1]:65535", "0.0.0.0:00080",
        "metrics.example.org:9102"
    };
    static const char  *bad[] = {
        "", "127.0.0.1", "127.0.0.1:", ":9101", "127.0.0.1:0",
        "127.0.0.1:65536", "127.0.0.1:x", "127.0.0.1:9101x", "::1:9101",
        "[::1:9101", "[]:9101", "a b:9101", "a/b:9101", "1.2.3.4:000080"
    };

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (mxj_listen_check("forward", "--metrics", good[i]) != 0) {
            fail_msg("\"%s\" refused", good[i]);
        }
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mxj_listen_check("forward", "--metrics", bad[i]) != -1) {
            fail_msg("\"%s\" taken", bad[i]);
        }
    }
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_and_samples),
        cmocka_unit_test(test_label_value_escaped),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_listen_check),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
