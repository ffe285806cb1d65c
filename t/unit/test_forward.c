/*
 * Copyright (C) nginx-matrix-join authors.
 * The forwarder's decisions (docs/forwarder.md): which answers are retried
 * and which become dead letters, the backoff, the Authorization headers
 * and the upstream URL.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ctl_forward.h"
#include "ctl_http.h"


static void
test_judge_2xx(void **state)
{
    long  counted = 0;

    assert_int_equal(mxj_fwd_judge(200, -1, 10, &counted), MXJ_FWD_ACK);
    assert_int_equal(mxj_fwd_judge(202, 5, 10, &counted), MXJ_FWD_ACK);
    assert_int_equal(mxj_fwd_judge(299, -1, 1, &counted), MXJ_FWD_ACK);
    assert_int_equal(counted, 0);
}


static void
test_judge_transient_forever(void **state)
{
    int   i;
    long  counted = 0;

    /* no answer, 5xx, 429: retried forever, never counted */

    for (i = 0; i < 1000; i++) {
        assert_int_equal(mxj_fwd_judge(0, -1, 3, &counted), MXJ_FWD_RETRY);
        assert_int_equal(mxj_fwd_judge(502, -1, 3, &counted), MXJ_FWD_RETRY);
        assert_int_equal(mxj_fwd_judge(429, -1, 3, &counted), MXJ_FWD_RETRY);
        assert_int_equal(mxj_fwd_judge(599, 100000, 3, &counted),
                         MXJ_FWD_RETRY);
    }

    assert_int_equal(counted, 0);
}


static void
test_judge_4xx_dead_after_max(void **state)
{
    long  counted = 0;

    assert_int_equal(mxj_fwd_judge(403, -1, 3, &counted), MXJ_FWD_RETRY);
    assert_int_equal(counted, 1);
    assert_int_equal(mxj_fwd_judge(400, -1, 3, &counted), MXJ_FWD_RETRY);
    assert_int_equal(counted, 2);
    assert_int_equal(mxj_fwd_judge(404, 30000, 3, &counted), MXJ_FWD_DEAD);
    assert_int_equal(counted, 3);

    counted = 0;
    assert_int_equal(mxj_fwd_judge(403, -1, 1, &counted), MXJ_FWD_DEAD);
}


static void
test_judge_4xx_after_recent_delivery(void **state)
{
    int   i;
    long  counted = 0;

    /*
     * An earlier join of the room delivered < 30 s ago: retried, counted,
     * never a dead letter
     */

    for (i = 0; i < 100; i++) {
        assert_int_equal(mxj_fwd_judge(403, 29999, 2, &counted),
                         MXJ_FWD_RETRY);
        assert_int_equal(mxj_fwd_judge(400, 0, 2, &counted), MXJ_FWD_RETRY);
    }

    assert_int_equal(counted, 200);

    /* then the first 4xx is the last when max_attempts are behind */

    assert_int_equal(mxj_fwd_judge(403, 30000, 2, &counted), MXJ_FWD_DEAD);
    assert_int_equal(counted, 201);

    /* and not before */

    counted = 0;
    assert_int_equal(mxj_fwd_judge(403, 1000, 3, &counted), MXJ_FWD_RETRY);
    assert_int_equal(mxj_fwd_judge(403, 31000, 3, &counted), MXJ_FWD_RETRY);
    assert_int_equal(mxj_fwd_judge(403, 32000, 3, &counted), MXJ_FWD_DEAD);
}


static void
test_backoff(void **state)
{
    /* r = 0.5: no jitter; 0.5 s doubling to 60 s */

    assert_int_equal(mxj_fwd_backoff_ms(1, 0.5), 500);
    assert_int_equal(mxj_fwd_backoff_ms(2, 0.5), 1000);
    assert_int_equal(mxj_fwd_backoff_ms(3, 0.5), 2000);
    assert_int_equal(mxj_fwd_backoff_ms(7, 0.5), 32000);
    assert_int_equal(mxj_fwd_backoff_ms(8, 0.5), 60000);
    assert_int_equal(mxj_fwd_backoff_ms(9, 0.5), 60000);
    assert_int_equal(mxj_fwd_backoff_ms(1000000, 0.5), 60000);
    assert_int_equal(mxj_fwd_backoff_ms(0, 0.5), 500);

    /* +-20 % */

    assert_int_equal(mxj_fwd_backoff_ms(1, 0), 400);
    assert_int_equal(mxj_fwd_backoff_ms(1, 1), 600);
    assert_int_equal(mxj_fwd_backoff_ms(9, 0), 48000);
    assert_int_equal(mxj_fwd_backoff_ms(9, 1), 72000);
    assert_int_equal(mxj_fwd_backoff_ms(2, -3), 800);
    assert_int_equal(mxj_fwd_backoff_ms(2, 7), 1200);
}


static void
test_retry_after(void **state)
{
    static const char  ok[] =
        "{\"errcode\":\"M_LIMIT_EXCEEDED\",\"error\":\"Too many requests\","
        "\"retry_after_ms\":2500}";

    assert_int_equal(mxj_http_retry_after_ms(ok, sizeof(ok) - 1), 2500);
    assert_int_equal(mxj_http_retry_after_ms("{\"retry_after_ms\":1.5e3}",
                                            24), 1500);
    assert_int_equal(mxj_http_retry_after_ms("{\"retry_after_ms\":1e12}", 23),
                     MXJ_HTTP_RETRY_AFTER_MAX);
    assert_int_equal(mxj_http_retry_after_ms("{\"retry_after_ms\":-1}", 21),
                     -1);
    assert_int_equal(mxj_http_retry_after_ms("{\"retry_after_ms\":\"9\"}", 22),
                     -1);
    assert_int_equal(mxj_http_retry_after_ms("{}", 2), -1);
    assert_int_equal(mxj_http_retry_after_ms("<html>busy</html>", 17), -1);
    assert_int_equal(mxj_http_retry_after_ms("", 0), -1);

    /* a body cut at 4 KiB is not JSON */
    assert_int_equal(mxj_http_retry_after_ms("{\"retry_after_ms\":2", 19), -1);
}


static void
test_auth_headers(void **state)
{
    long          n;
    char        **h;

    static const char  two[] =
        "X-Matrix origin=\"a.example\",key=\"ed25519:1\",sig=\"abc\","
        "destination=\"b.example\"\n"
        "X-Matrix origin=\"a.example\",key=\"ed25519:2\",sig=\"def\"";

    n = mxj_fwd_auth_headers(two, sizeof(two) - 1, &h);
    assert_int_equal(n, 2);
    assert_string_equal(h[0], "Authorization: X-Matrix origin=\"a.example\","
                        "key=\"ed25519:1\",sig=\"abc\","
                        "destination=\"b.example\"");
    assert_string_equal(h[1], "Authorization: X-Matrix origin=\"a.example\","
                        "key=\"ed25519:2\",sig=\"def\"");
    mxj_fwd_auth_free(h, n);

    /* one line, no newline; empty lines skipped */

    n = mxj_fwd_auth_headers("X-Matrix a=1", 12, &h);
    assert_int_equal(n, 1);
    assert_string_equal(h[0], "Authorization: X-Matrix a=1");
    mxj_fwd_auth_free(h, n);

    n = mxj_fwd_auth_headers("\nA\n\nB\n", 6, &h);
    assert_int_equal(n, 2);
    assert_string_equal(h[0], "Authorization: A");
    assert_string_equal(h[1], "Authorization: B");
    mxj_fwd_auth_free(h, n);

    /* none */

    n = mxj_fwd_auth_headers("", 0, &h);
    assert_int_equal(n, 0);
    assert_null(h);

    n = mxj_fwd_auth_headers("\n\n", 2, &h);
    assert_int_equal(n, 0);

    /* the length counts, not a NUL; tabs pass */

    n = mxj_fwd_auth_headers("A\tB\nC", 3, &h);
    assert_int_equal(n, 1);
    assert_string_equal(h[0], "Authorization: A\tB");
    mxj_fwd_auth_free(h, n);

    /* a line that would inject a header, or hide one */

    assert_int_equal(mxj_fwd_auth_headers("A\r\nX-Evil: 1", 12, &h), -1);
    assert_null(h);
    assert_int_equal(mxj_fwd_auth_headers("A\rB", 3, &h), -1);
    assert_int_equal(mxj_fwd_auth_headers("A\0B", 3, &h), -1);
    assert_int_equal(mxj_fwd_auth_headers("ok\nA\x7f", 5, &h), -1);
}


static void
test_upstream(void **state)
{
    size_t       n;
    const char  *path, *why;

    assert_int_equal(mxj_http_url("http://127.0.0.1:8008", &path, &n,
                                      &why), 0);
    assert_int_equal(n, 0);

    assert_int_equal(mxj_http_url("https://hs.example.org/", &path, &n,
                                      &why), 0);
    assert_int_equal(n, 0);

    assert_int_equal(mxj_http_url("HTTP://[::1]:8008/synapse//", &path,
                                      &n, &why), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(path, "/synapse", 8);

    assert_int_equal(mxj_http_url("ftp://x", &path, &n, &why), -1);
    assert_int_equal(mxj_http_url("127.0.0.1:8008", &path, &n, &why),
                     -1);
    assert_int_equal(mxj_http_url("http://", &path, &n, &why), -1);
    assert_int_equal(mxj_http_url("http:///x", &path, &n, &why), -1);
    assert_int_equal(mxj_http_url("http://h/?a=1", &path, &n, &why), -1);
    assert_int_equal(mxj_http_url("http://h#f", &path, &n, &why), -1);
}


static void
test_stream_id_ms(void **state)
{
    assert_true(mxj_fwd_stream_id_ms("1700000000123-0", 15)
                == 1700000000123LL);
    assert_true(mxj_fwd_stream_id_ms("5-17", 4) == 5);
    assert_true(mxj_fwd_stream_id_ms("42", 2) == 42);
    assert_true(mxj_fwd_stream_id_ms("-1", 2) == -1);
    assert_true(mxj_fwd_stream_id_ms("", 0) == -1);
    assert_true(mxj_fwd_stream_id_ms("12a-0", 5) == -1);
    assert_true(mxj_fwd_stream_id_ms("99999999999999999999-0", 22) == -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_judge_2xx),
        cmocka_unit_test(test_judge_transient_forever),
        cmocka_unit_test(test_judge_4xx_dead_after_max),
        cmocka_unit_test(test_judge_4xx_after_recent_delivery),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_auth_headers),
        cmocka_unit_test(test_upstream),
        cmocka_unit_test(test_stream_id_ms),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
