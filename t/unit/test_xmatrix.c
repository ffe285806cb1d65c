/*
 * Copyright (C) nginx-matrix-join authors.
 * X-Matrix Authorization (reference §4.1-4.3, RFC 9110 §11.4). Expected
 * signatures were made by signedjson 1.1.1 (sign_json) over the request
 * object with the spec's key renamed "ed25519:key1".
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_xmatrix.h"
#include "spec_vectors.h"


#define ORIGIN  "origin.hs.example.com"
#define DEST    "destination.hs.example.com"
#define GET_URI "/_matrix/federation/v1/make_join/%21r%3Adomain/" \
                "%40u%3Aorigin.hs.example.com?ver=1&ver=12"
#define PUT_URI "/_matrix/federation/v2/send_join/%21r%3Adomain/%24e"
#define PUT_BODY "{\"type\":\"m.room.member\"," \
                 "\"content\":{\"membership\":\"join\"}," \
                 "\"\xe6\x97\xa5\":\"\xc3\xa9\"}"

/* signedjson over {method GET, uri GET_URI, origin, destination} */
#define GET_SIG "PnFtmBUiq8O9NbRtfdqYfBavh+gKhCA8dZfqDEYhxpIcMRJfqv9FdqMtgr5z" \
                "yHc4H1HmtyathwKT0jRX99ZOBA"

/* signedjson over {method PUT, uri PUT_URI, ..., content PUT_BODY} */
#define PUT_SIG "Es1boOcFfVvU1CvZ8CIT/gWTGmdbOMfImDCOjMln9patjL1C/rIfJiT69/pI" \
                "0fWoUPLW2dHSOAW6DCXCTVRvAA"

static const uint8_t  get_sig[64] = {
    0x3e, 0x71, 0x6d, 0x98, 0x15, 0x22, 0xab, 0xc3,
    0xbd, 0x35, 0xb4, 0x6d, 0x7d, 0xda, 0x98, 0x7c,
    0x16, 0xaf, 0x87, 0xe8, 0x0a, 0x84, 0x20, 0x3c,
    0x75, 0x97, 0xea, 0x0c, 0x46, 0x21, 0xc6, 0x92,
    0x1c, 0x31, 0x12, 0x5f, 0xaa, 0xff, 0x45, 0x76,
    0xa3, 0x2d, 0x82, 0xbe, 0x73, 0xc8, 0x77, 0x38,
    0x1f, 0x51, 0xe6, 0xb7, 0x26, 0xad, 0x87, 0x02,
    0x93, 0xd2, 0x34, 0x57, 0xf7, 0xd6, 0x4e, 0x04
};


static int
parse(const char *value, mx_xmatrix_t *h, mx_err_t *err)
{
    memset(err, 0, sizeof(*err));

    return mx_xmatrix_parse(value, strlen(value), h, err);
}


static void
check_get_header(const mx_xmatrix_t *h, int has_destination)
{
    mx_err_t  err;

    assert_string_equal(h->origin, ORIGIN);
    assert_string_equal(h->key_id, "ed25519:key1");
    assert_memory_equal(h->sig, get_sig, 64);
    assert_int_equal(h->has_destination, has_destination);
    assert_string_equal(h->destination, has_destination ? DEST : "");

    assert_int_equal(mx_xmatrix_verify(h, "GET", 3, GET_URI, strlen(GET_URI),
                                       DEST, NULL, spec_pk, &err), 0);
}


static void
malformed(const char *value, const char *expect)
{
    mx_err_t      err;
    mx_xmatrix_t  h;

    assert_int_equal(parse(value, &h, &err), MX_XMATRIX_MALFORMED);

    if (strstr(err.text, expect) == NULL) {
        fail_msg("\"%s\": \"%s\" does not contain \"%s\"",
                 value, err.text, expect);
    }
}


static void
test_spec_example(void **state)
{
    mx_err_t      err;
    mx_xmatrix_t  h;

    /* the spec's example header, with a real signature */
    assert_int_equal(parse("X-Matrix origin=\"" ORIGIN "\",destination=\""
                           DEST "\",key=\"ed25519:key1\",sig=\"" GET_SIG "\"",
                           &h, &err), MX_XMATRIX_OK);
    check_get_header(&h, 1);

    /* destination is optional for recipients */
    assert_int_equal(parse("X-Matrix origin=\"" ORIGIN "\","
                           "key=\"ed25519:key1\",sig=\"" GET_SIG "\"",
                           &h, &err), MX_XMATRIX_OK);
    check_get_header(&h, 0);

    /* the length is given: trailing garbage outside it is not seen */
    assert_int_equal(mx_xmatrix_parse("X-Matrix origin=" ORIGIN ",key="
                                      "ed25519:key1,sig=" GET_SIG "\"garbage",
                                      strlen("X-Matrix origin=" ORIGIN ",key="
                                             "ed25519:key1,sig=" GET_SIG),
                                      &h, &err), MX_XMATRIX_OK);
    check_get_header(&h, 0);
}


static void
test_token_and_quoted_values(void **state)
{
    mx_err_t      err;
    mx_xmatrix_t  h;

    /* token values, with the ':' recipients should accept */
    assert_int_equal(parse("X-Matrix origin=" ORIGIN ",destination=" DEST
                           ",key=ed25519:key1,sig=" GET_SIG, &h, &err),
                     MX_XMATRIX_OK);
    check_get_header(&h, 1);

    /* mixed */
    assert_int_equal(parse("X-Matrix origin=" ORIGIN ",destination=\"" DEST
                           "\",key=ed25519:key1,sig=\"" GET_SIG "\"", &h,
                           &err), MX_XMATRIX_OK);
    check_get_header(&h, 1);
}


static void
test_backslash_escapes(void **state)
{
    mx_err_t      err;
    mx_xmatrix_t  h;

    assert_int_equal(parse("X-Matrix origin=\"origin\\.hs.example\\.com\","
                           "destination=\"destination.hs.example.co\\m\","
                           "key=\"ed25519:\\k\\e\\y1\",sig=\"" GET_SIG "\"",
                           &h, &err), MX_XMATRIX_OK);
    check_get_header(&h, 1);

    /* an escaped quote stays inside the value: an unknown parameter */
    assert_int_equal(parse("X-Matrix foo=\"a\\\",b=c\",origin=" ORIGIN
                           ",key=ed25519:key1,sig=" GET_SIG, &h, &err),
                     MX_XMATRIX_OK);
    check_get_header(&h, 0);

    /* "origin.hs.example.com\"" after unescaping: not a server name */
    malformed("X-Matrix origin=\"" ORIGIN "\\\"\",key=ed25519:key1,sig="
              GET_SIG, "invalid X-Matrix origin");
}


static void
test_case_order_whitespace(void **state)
{
    mx_err_t      err;
    mx_xmatrix_t  h;

    assert_int_equal(parse("x-matrix ORIGIN=\"" ORIGIN "\",Destination=\""
                           DEST "\",kEy=\"ed25519:key1\",SIG=\"" GET_SIG "\"",
                           &h, &err), MX_XMATRIX_OK);
    check_get_header(&h, 1);

    assert_int_equal(parse("X-MATRIX sig=\"" GET_SIG "\",key=\"ed25519:key1\""
                           ",destination=\"" DEST "\",origin=\"" ORIGIN "\"",
                           &h, &err), MX_XMATRIX_OK);
    check_get_header(&h, 1);

    /* several spaces after the scheme, OWS around commas and '=',
     * empty list elements */
    assert_int_equal(parse("X-Matrix   origin = \"" ORIGIN "\" ,\t"
                           "destination=\"" DEST "\"\t, , key=\"ed25519:key1\""
                           " ,sig=\"" GET_SIG "\" ,", &h, &err),
                     MX_XMATRIX_OK);
    check_get_header(&h, 1);
}


static void
test_unknown_params(void **state)
{
    mx_err_t      err;
    mx_xmatrix_t  h;

    assert_int_equal(parse("X-Matrix foo=bar,origin=\"" ORIGIN "\","
                           "signature=\"x y\",key=\"ed25519:key1\","
                           "a_very_long_parameter_name=\"\",sig=\"" GET_SIG
                           "\",zzz=1", &h, &err), MX_XMATRIX_OK);
    check_get_header(&h, 0);
}


static void
test_malformed(void **state)
{
    malformed("X-Matrix key=\"ed25519:key1\",sig=\"" GET_SIG "\"",
              "no origin");
    malformed("X-Matrix origin=\"" ORIGIN "\",sig=\"" GET_SIG "\"",
              "no key");
    malformed("X-Matrix origin=\"" ORIGIN "\",key=\"ed25519:key1\"",
              "no sig");
    malformed("X-Matrix", "no origin");
    malformed("X-Matrix ", "no origin");

    /* sytest "Non-numeric ports in server names are rejected" */
    malformed("X-Matrix origin=\"localhost:http\",key=\"ed25519:key1\","
              "sig=\"" GET_SIG "\"", "invalid X-Matrix origin "
              "\"localhost:http\"");
    malformed("X-Matrix origin=localhost:http,key=ed25519:key1,sig=" GET_SIG,
              "invalid X-Matrix origin");
    malformed("X-Matrix origin=\"\",key=ed25519:key1,sig=" GET_SIG,
              "invalid X-Matrix origin");

    malformed("X-Matrix origin=" ORIGIN ",key=\"key1\",sig=" GET_SIG,
              "invalid X-Matrix key");
    malformed("X-Matrix origin=" ORIGIN ",key=\"ed25519:a-b\",sig=" GET_SIG,
              "invalid X-Matrix key");

    /* 32 bytes; 63 bytes; not base64 */
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,"
              "sig=\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"",
              "sig is not base64 of 64 bytes");
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,"
              "sig=\"PnFtmBUiq8O9NbRtfdqYfBavh+gKhCA8dZfqDEYhxpIcMRJfqv9Fd"
              "qMtgr5zyHc4H1HmtyathwKT0jRX99ZO\"", "sig is not base64");
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,"
              "sig=\"" GET_SIG "AAAA\"", "too long");
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,"
              "sig=\"PnFtmBUiq8O9NbRtfdqYfBavh-gKhCA8dZfqDEYhxpIcMRJfqv9Fd"
              "qMtgr5zyHc4H1HmtyathwKT0jRX99ZOBA\"", "sig is not base64");

    malformed("X-Matrix origin=\"" ORIGIN "\",origin=\"" ORIGIN "\","
              "key=ed25519:key1,sig=" GET_SIG,
              "duplicate X-Matrix parameter \"origin\"");
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,sig=" GET_SIG
              ",SIG=" GET_SIG, "duplicate X-Matrix parameter \"SIG\"");
    malformed("X-Matrix origin=" ORIGIN ",destination=a,Destination=a,"
              "key=ed25519:key1,sig=" GET_SIG, "duplicate");

    malformed("X-Matrix origin=\"" ORIGIN ",key=ed25519:key1,sig=" GET_SIG,
              "unterminated quoted X-Matrix parameter \"origin\"");
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,sig=\"" GET_SIG,
              "unterminated");
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,sig=" GET_SIG
              ",x=\"a\\", "unterminated");

    malformed("X-Matrix origin=" ORIGIN " key=ed25519:key1,sig=" GET_SIG,
              "expected ','");
    malformed("X-Matrix origin=\"" ORIGIN "\"key=ed25519:key1,sig=" GET_SIG,
              "expected ','");
    malformed("X-Matrix origin,key=ed25519:key1,sig=" GET_SIG,
              "expected '='");
    malformed("X-Matrix origin=,key=ed25519:key1,sig=" GET_SIG,
              "has no value");
    malformed("X-Matrix =x,origin=" ORIGIN, "expected an X-Matrix parameter");
    malformed("X-Matrix origin=" ORIGIN "/x,key=ed25519:key1,sig=" GET_SIG,
              "expected ','");
    malformed("X-Matrix\torigin=" ORIGIN ",key=ed25519:key1,sig=" GET_SIG,
              "expected a space");
    malformed("X-Matrix origin=\"a\x01\",key=ed25519:key1,sig=" GET_SIG,
              "invalid character");
    malformed("X-Matrix origin=" ORIGIN ",key=ed25519:key1,sig=" GET_SIG
              ",x=\"\n\"", "invalid character");
}


static void
test_too_long(void **state)
{
    char          buf[512];
    mx_err_t      err;
    mx_xmatrix_t  h;

    /* origin and destination hold 255 bytes, key 127 */
    memset(buf, 0, sizeof(buf));
    strcpy(buf, "X-Matrix key=ed25519:key1,sig=" GET_SIG ",origin=");
    memset(buf + strlen(buf), 'a', 256);
    malformed(buf, "parameter \"origin\" is too long");

    /* 255 bytes fit, and a dns-name may be that long */
    buf[strlen(buf) - 1] = '\0';
    assert_int_equal(mx_xmatrix_parse(buf, strlen(buf), &h, &err),
                     MX_XMATRIX_OK);
    assert_int_equal(strlen(h.origin), 255);

    memset(buf, 0, sizeof(buf));
    strcpy(buf, "X-Matrix origin=a,sig=" GET_SIG ",key=ed25519:");
    memset(buf + strlen(buf), 'k', 120);
    malformed(buf, "parameter \"key\" is too long");
}


static void
test_other_scheme(void **state)
{
    mx_err_t      err;
    mx_xmatrix_t  h;

    assert_int_equal(parse("Bearer x", &h, &err), MX_XMATRIX_OTHER_SCHEME);
    assert_int_equal(parse("Basic dXNlcjpwYXNz", &h, &err),
                     MX_XMATRIX_OTHER_SCHEME);
    assert_int_equal(parse("", &h, &err), MX_XMATRIX_OTHER_SCHEME);
    assert_int_equal(parse("X-Matrixx origin=" ORIGIN ",key=ed25519:key1,sig="
                           GET_SIG, &h, &err), MX_XMATRIX_OTHER_SCHEME);
    assert_int_equal(parse("X-Matri origin=a", &h, &err),
                     MX_XMATRIX_OTHER_SCHEME);
    assert_int_equal(parse("X_Matrix origin=a", &h, &err),
                     MX_XMATRIX_OTHER_SCHEME);
}


static void
test_request_object(void **state)
{
    char    *s;
    json_t  *obj, *content;

    obj = mx_xmatrix_request_object("GET", 3, "/a?b=c", 6, "o", "d", NULL);
    assert_non_null(obj);
    s = json_dumps(obj, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(s, "{\"destination\":\"d\",\"method\":\"GET\","
                        "\"origin\":\"o\",\"uri\":\"/a?b=c\"}");
    free(s);
    json_decref(obj);

    content = json_pack("{s:i}", "a", 1);
    assert_non_null(content);
    obj = mx_xmatrix_request_object("PUTX", 3, "/a?b=cX", 6, "o", "d",
                                    content);
    assert_non_null(obj);
    s = json_dumps(obj, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(s, "{\"content\":{\"a\":1},\"destination\":\"d\","
                        "\"method\":\"PUT\",\"origin\":\"o\","
                        "\"uri\":\"/a?b=c\"}");
    free(s);
    json_decref(obj);
    json_decref(content);
}


static void
test_sign(void **state)
{
    json_t            *content;
    mx_err_t           err;
    mx_buf_t           out = MX_BUF_INIT;
    mx_signing_key_t   k;

    assert_int_equal(mx_signing_key_from_seed(&k, "ed25519:key1", spec_seed,
                                              &err), 0);

    assert_int_equal(mx_xmatrix_sign("GET", GET_URI, ORIGIN, DEST, NULL, &k,
                                     &out, &err), 0);
    assert_string_equal(out.data,
                        "X-Matrix origin=\"" ORIGIN "\",destination=\"" DEST
                        "\",key=\"ed25519:key1\",sig=\"" GET_SIG "\"");
    mx_buf_free(&out);

    content = json_loads(PUT_BODY, 0, NULL);
    assert_non_null(content);

    /* appends */
    assert_int_equal(mx_buf_append_str(&out, "Authorization: "), 0);
    assert_int_equal(mx_xmatrix_sign("PUT", PUT_URI, ORIGIN, DEST, content,
                                     &k, &out, &err), 0);
    assert_string_equal(out.data,
                        "Authorization: X-Matrix origin=\"" ORIGIN
                        "\",destination=\"" DEST "\",key=\"ed25519:key1\","
                        "sig=\"" PUT_SIG "\"");
    mx_buf_free(&out);
    json_decref(content);
}


static void
test_verify(void **state)
{
    json_t            *content, *other;
    mx_err_t           err;
    mx_buf_t           out = MX_BUF_INIT;
    mx_xmatrix_t       h;
    mx_signing_key_t   k, k2;

    assert_int_equal(mx_signing_key_from_seed(&k, "ed25519:key1", spec_seed,
                                              &err), 0);
    assert_int_equal(mx_signing_key_from_seed(&k2, "ed25519:key1", spec_pk,
                                              &err), 0);

    content = json_loads(PUT_BODY, 0, NULL);
    other = json_loads("{\"type\":\"m.room.member\"}", 0, NULL);
    assert_non_null(content);
    assert_non_null(other);

    /* a header made by signedjson */
    assert_int_equal(parse("X-Matrix origin=\"" ORIGIN "\",destination=\""
                           DEST "\",key=\"ed25519:key1\",sig=\"" PUT_SIG "\"",
                           &h, &err), MX_XMATRIX_OK);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       DEST, content, spec_pk, &err), 0);

    /* sign, parse, verify */
    assert_int_equal(mx_xmatrix_sign("PUT", PUT_URI, ORIGIN, DEST, content,
                                     &k, &out, &err), 0);
    assert_int_equal(parse(out.data, &h, &err), MX_XMATRIX_OK);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       DEST, content, k.pk, &err), 0);

    /* another method, uri, content, destination or key */
    assert_int_equal(mx_xmatrix_verify(&h, "POST", 4, PUT_URI,
                                       strlen(PUT_URI), DEST, content, k.pk,
                                       &err), -1);
    assert_non_null(strstr(err.text, "bad X-Matrix signature by \"" ORIGIN
                           "\" with key \"ed25519:key1\""));
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI "?x=1",
                                       strlen(PUT_URI) + 4, DEST, content,
                                       k.pk, &err), -1);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI,
                                       strlen(PUT_URI) - 1, DEST, content,
                                       k.pk, &err), -1);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       DEST, other, k.pk, &err), -1);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       DEST, NULL, k.pk, &err), -1);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       "other.example.com", content, k.pk,
                                       &err), -1);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       DEST, content, k2.pk, &err), -1);

    /* the destination in the header does not matter, ours does */
    mx_buf_free(&out);
    assert_int_equal(mx_xmatrix_sign("PUT", PUT_URI, ORIGIN, "evil.example",
                                     content, &k, &out, &err), 0);
    assert_int_equal(parse(out.data, &h, &err), MX_XMATRIX_OK);
    assert_string_equal(h.destination, "evil.example");
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       DEST, content, k.pk, &err), -1);
    assert_int_equal(mx_xmatrix_verify(&h, "PUT", 3, PUT_URI, strlen(PUT_URI),
                                       "evil.example", content, k.pk, &err),
                     0);

    mx_buf_free(&out);
    json_decref(content);
    json_decref(other);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_spec_example),
        cmocka_unit_test(test_token_and_quoted_values),
        cmocka_unit_test(test_backslash_escapes),
        cmocka_unit_test(test_case_order_whitespace),
        cmocka_unit_test(test_unknown_params),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_other_scheme),
        cmocka_unit_test(test_request_object),
        cmocka_unit_test(test_sign),
        cmocka_unit_test(test_verify),
    };

    return cmocka_run_group_tests_name("xmatrix", tests, NULL, NULL);
}
