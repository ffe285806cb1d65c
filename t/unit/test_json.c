/*
 * Copyright (C) nginx-matrix-join authors.
 * Canonical JSON (spec appendix "Canonical JSON") and the strict parser.
 * Expected outputs are the spec's published examples or written out by
 * hand from the spec's grammar, never produced by the code under test.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_json.h"


/* Parses text (non-strict), encodes it and compares with expected. */
static void
check_canon(const char *text, const char *expected)
{
    char      *out;
    size_t     len;
    json_t    *v;
    mx_err_t   err;

    v = mx_json_parse(text, strlen(text), 0, &err);
    if (v == NULL) {
        fail_msg("parse of %s failed: %s", text, err.text);
    }

    out = mx_json_canonical_str(v, &len, &err);
    if (out == NULL) {
        fail_msg("canonical of %s failed: %s", text, err.text);
    }

    assert_string_equal(out, expected);
    assert_int_equal(len, strlen(expected));

    free(out);
    json_decref(v);
}


/* Expects strict parsing of text to fail with err containing reason. */
static void
check_strict_rejects(const char *text, const char *reason)
{
    json_t    *v;
    mx_err_t   err;

    err.text[0] = '\0';

    v = mx_json_parse(text, strlen(text), MX_JSON_STRICT, &err);
    if (v != NULL) {
        json_decref(v);
        fail_msg("strict parse of %s succeeded", text);
    }

    if (strstr(err.text, reason) == NULL) {
        fail_msg("strict parse of %s: \"%s\" does not say \"%s\"",
                 text, err.text, reason);
    }
}


static void
check_strict_accepts(const char *text)
{
    json_t    *v;
    mx_err_t   err;

    v = mx_json_parse(text, strlen(text), MX_JSON_STRICT, &err);
    if (v == NULL) {
        fail_msg("strict parse of %s failed: %s", text, err.text);
    }

    json_decref(v);
}


/* The spec appendix's published examples. */
static void
test_spec_examples(void **state)
{
    check_canon("{}", "{}");

    check_canon("{\"one\": 1, \"two\": \"Two\"}",
                "{\"one\":1,\"two\":\"Two\"}");

    check_canon("{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}",
                "{\"a\":\"1\",\"b\":\"2\"}");

    check_canon("{\"b\":\"2\",\"a\":\"1\"}", "{\"a\":\"1\",\"b\":\"2\"}");

    check_canon(
        "{\n"
        "    \"auth\": {\n"
        "        \"success\": true,\n"
        "        \"mxid\": \"@john.doe:example.com\",\n"
        "        \"profile\": {\n"
        "            \"display_name\": \"John Doe\",\n"
        "            \"three_pids\": [\n"
        "                {\n"
        "                    \"medium\": \"email\",\n"
        "                    \"address\": \"john.doe@example.org\"\n"
        "                },\n"
        "                {\n"
        "                    \"medium\": \"msisdn\",\n"
        "                    \"address\": \"123456789\"\n"
        "                }\n"
        "            ]\n"
        "        }\n"
        "    }\n"
        "}",
        "{\"auth\":{\"mxid\":\"@john.doe:example.com\",\"profile\":"
        "{\"display_name\":\"John Doe\",\"three_pids\":[{\"address\":"
        "\"john.doe@example.org\",\"medium\":\"email\"},{\"address\":"
        "\"123456789\",\"medium\":\"msisdn\"}]},\"success\":true}}");

    check_canon("{\"a\": \"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\"}",
                "{\"a\":\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\"}");

    /* {"本": 2, "日": 1} -> {"日":1,"本":2} */
    check_canon("{\"\xe6\x9c\xac\": 2, \"\xe6\x97\xa5\": 1}",
                "{\"\xe6\x97\xa5\":1,\"\xe6\x9c\xac\":2}");

    /* {"a": "\u65E5"} -> {"a":"日"} */
    check_canon("{\"a\": \"\\u65E5\"}", "{\"a\":\"\xe6\x97\xa5\"}");

    check_canon("{\"a\": null}", "{\"a\":null}");

    /* -0 is an integer to jansson and comes out as 0, as in the spec */
    check_canon("{\"a\": -0}", "{\"a\":0}");
}


static void
test_scalars(void **state)
{
    check_canon("true", "true");
    check_canon("false", "false");
    check_canon("null", "null");
    check_canon("0", "0");
    check_canon("-1", "-1");
    check_canon("9007199254740991", "9007199254740991");
    check_canon("-9007199254740991", "-9007199254740991");
    check_canon("[ 1 , [ ] , { } , \"\" ]", "[1,[],{},\"\"]");
    check_canon("  \"x\"  ", "\"x\"");
}


/*
 * Every control character, spelled out from the spec's grammar: short
 * escapes for 08 09 0a 0c 0d, else \u00 and two lower-case hex digits.
 */
static const char  *control_escapes[32] = {
    "\\u0000", "\\u0001", "\\u0002", "\\u0003",
    "\\u0004", "\\u0005", "\\u0006", "\\u0007",
    "\\b",     "\\t",     "\\n",     "\\u000b",
    "\\f",     "\\r",     "\\u000e", "\\u000f",
    "\\u0010", "\\u0011", "\\u0012", "\\u0013",
    "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b",
    "\\u001c", "\\u001d", "\\u001e", "\\u001f",
};


static void
test_control_escapes(void **state)
{
    char      in[4], expected[16], *out;
    json_t   *v;
    unsigned  c;
    mx_err_t  err;

    for (c = 0; c < 32; c++) {
        in[0] = 'a';
        in[1] = (char) c;
        in[2] = 'z';

        v = json_stringn(in, 3);
        assert_non_null(v);

        out = mx_json_canonical_str(v, NULL, &err);
        assert_non_null(out);

        strcpy(expected, "\"a");
        strcat(expected, control_escapes[c]);
        strcat(expected, "z\"");

        assert_string_equal(out, expected);

        free(out);
        json_decref(v);
    }
}


static void
test_raw_characters(void **state)
{
    /* '"' and '\\' are the only printable characters escaped */
    check_canon("\"\\\"\\\\\"", "\"\\\"\\\\\"");

    /* '/' (even when escaped in the input) stays raw */
    check_canon("\"a/b\\/c\"", "\"a/b/c\"");

    /* U+007F DEL is not a control character for canonical JSON */
    check_canon("\"\\u007f\"", "\"\x7f\"");

    /* U+2028 and U+2029 are emitted raw, as UTF-8 */
    check_canon("\"\\u2028\\u2029\"", "\"\xe2\x80\xa8\xe2\x80\xa9\"");

    /* non-BMP from a surrogate pair, raw 4-byte UTF-8 */
    check_canon("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"");

    /* upper-case hex in the input does not matter */
    check_canon("\"\\u001F\\u000B\"", "\"\\u001f\\u000b\"");
}


/*
 * Code point order, not UTF-16 order: U+1F600 (surrogates D83D DE00)
 * sorts after U+E000 and U+FFFF; a prefix sorts first.
 */
static void
test_key_order(void **state)
{
    check_canon("{\"\\ud83d\\ude00\": 1, \"\\uffff\": 2, \"a\": 3,"
                " \"\\ue000\": 4, \"aa\": 5, \"\\u00e9\": 6, \"B\": 7}",
                "{\"B\":7,\"a\":3,\"aa\":5,\"\xc3\xa9\":6,\"\xee\x80\x80\":4,"
                "\"\xef\xbf\xbf\":2,\"\xf0\x9f\x98\x80\":1}");

    /* nested objects are sorted too */
    check_canon("{\"z\":{\"y\":1,\"x\":[{\"b\":1,\"a\":2}]},\"a\":0}",
                "{\"a\":0,\"z\":{\"x\":[{\"a\":2,\"b\":1}],\"y\":1}}");
}


/* Keys containing NUL, built in code: sorted by length after the prefix. */
static void
test_key_with_nul(void **state)
{
    char      *out;
    json_t    *o;
    mx_err_t   err;

    o = json_object();
    assert_non_null(o);

    assert_int_equal(json_object_setn_new(o, "a\0b", 3, json_integer(1)), 0);
    assert_int_equal(json_object_setn_new(o, "a", 1, json_integer(2)), 0);
    assert_int_equal(json_object_setn_new(o, "a\x01", 2, json_integer(3)), 0);

    out = mx_json_canonical_str(o, NULL, &err);
    assert_non_null(out);
    assert_string_equal(out, "{\"a\":2,\"a\\u0000b\":1,\"a\\u0001\":3}");

    free(out);
    json_decref(o);
}


/* "\u0000" in string values parses (JSON_ALLOW_NUL) and round-trips. */
static void
test_nul_in_string(void **state)
{
    json_t    *v;
    mx_err_t   err;

    v = mx_json_parse("\"a\\u0000b\"", 10, MX_JSON_STRICT, &err);
    assert_non_null(v);
    assert_int_equal(json_string_length(v), 3);
    assert_memory_equal(json_string_value(v), "a\0b", 3);
    json_decref(v);

    check_canon("{\"k\":\"\\u0000\"}", "{\"k\":\"\\u0000\"}");
}


/*
 * Documented behaviour of jansson 2.14: "\u0000" in an object key is a
 * parse error ("NUL byte in object key not supported") in both modes, even
 * with JSON_ALLOW_NUL. Python's json would accept such a key; we refuse
 * the whole document instead.
 */
static void
test_nul_in_key_rejected(void **state)
{
    json_t      *v;
    mx_err_t     err;
    const char  *text;

    text = "{\"a\\u0000b\":1}";

    v = mx_json_parse(text, strlen(text), 0, &err);
    assert_null(v);
    assert_non_null(strstr(err.text, "NUL byte in object key"));

    v = mx_json_parse(text, strlen(text), MX_JSON_STRICT, &err);
    assert_null(v);
    assert_non_null(strstr(err.text, "NUL byte in object key"));
}


static void
test_strict_numbers(void **state)
{
    check_strict_rejects("1.5", "float not allowed at top level");
    check_strict_rejects("1.0", "float not allowed");
    check_strict_rejects("1e10", "float not allowed");
    check_strict_rejects("1E2", "float not allowed");
    check_strict_rejects("-0.0", "float not allowed");
    check_strict_rejects("9007199254740992", "integer out of range");
    check_strict_rejects("-9007199254740992", "integer out of range");
    check_strict_rejects("9223372036854775807", "integer out of range");

    check_strict_accepts("9007199254740991");
    check_strict_accepts("-9007199254740991");
    check_strict_accepts("-0");
    check_strict_accepts("[0, 1, -1]");
}


static void
test_strict_paths(void **state)
{
    check_strict_rejects("{\"content\":{\"x\":1.5}}",
                         "float not allowed at content.x");
    check_strict_rejects("{\"a\":[1,{\"b\":2.0}]}",
                         "float not allowed at a[1].b");
    check_strict_rejects("[[0,[9007199254740992]]]",
                         "integer out of range at [0][1][0]");
    check_strict_rejects("{\"depth\":-9007199254740992}",
                         "integer out of range at depth");
}


static void
test_strict_duplicates(void **state)
{
    json_t      *v;
    mx_err_t     err;
    const char  *text;

    check_strict_rejects("{\"a\":1,\"a\":2}", "duplicate key \"a\"");
    check_strict_rejects("{\"x\":{\"k\":1,\"k\":1}}", "duplicate key");

    /* the same key spelled with an escape is still a duplicate */
    check_strict_rejects("{\"a\":1,\"\\u0061\":2}", "duplicate key");

    /* non-strict: the last value wins, as in Python's json */
    text = "{\"a\":1,\"a\":2}";
    v = mx_json_parse(text, strlen(text), 0, &err);
    assert_non_null(v);
    assert_int_equal(json_object_size(v), 1);
    assert_int_equal(json_integer_value(json_object_get(v, "a")), 2);
    json_decref(v);

    check_canon("{\"a\":1,\"b\":0,\"a\":2}", "{\"a\":2,\"b\":0}");
}


static void
test_not_json(void **state)
{
    json_t      *v;
    size_t       i;
    mx_err_t     err;
    unsigned     flags;

    static const char  *bad[] = {
        "NaN", "Infinity", "-Infinity", "[NaN]", "{\"a\":nan}",
        "", "1 2", "{\"a\":1,}", "[1,]", "'a'", "{a:1}", "\"\x01\"",
        "\"\xff\"", "18446744073709551616", "-9223372036854775809",
    };

    for (flags = 0; flags <= MX_JSON_STRICT; flags++) {
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            err.text[0] = '\0';

            v = mx_json_parse(bad[i], strlen(bad[i]), flags, &err);
            if (v != NULL) {
                fail_msg("\"%s\" was accepted (flags %u)", bad[i], flags);
            }

            assert_non_null(strstr(err.text, "invalid JSON"));
        }
    }
}


static void
test_lenient_numbers(void **state)
{
    char      *out;
    json_t    *v;
    mx_err_t   err;

    /* non-strict keeps reals and int64, but they cannot be canonical */
    v = mx_json_parse("{\"a\":1.5}", 9, 0, &err);
    assert_non_null(v);
    assert_true(json_is_real(json_object_get(v, "a")));

    out = mx_json_canonical_str(v, NULL, &err);
    assert_null(out);
    assert_non_null(strstr(err.text, "float"));
    json_decref(v);

    check_canon("9007199254740992", "9007199254740992");
    check_canon("-9223372036854775808", "-9223372036854775808");

    /* a missing value is an error, not a crash */
    assert_int_equal(mx_json_check_strict(NULL, &err), -1);
    assert_int_equal(mx_json_canonical_str(NULL, NULL, &err) == NULL, 1);
}


/* The encoder appends, and leaves the buffer alone when it fails. */
static void
test_append_and_rollback(void **state)
{
    json_t    *v;
    mx_buf_t   b = MX_BUF_INIT;
    mx_err_t   err;

    assert_int_equal(mx_buf_append_str(&b, "prefix:"), 0);

    v = json_pack("{s:i,s:[b,n]}", "k", 7, "l", 1);
    assert_non_null(v);
    assert_int_equal(mx_json_canonical(v, &b, &err), 0);
    assert_string_equal(b.data, "prefix:{\"k\":7,\"l\":[true,null]}");
    json_decref(v);

    v = json_pack("{s:i,s:[i,f]}", "k", 7, "l", 1, 0.5);
    assert_non_null(v);
    assert_int_equal(mx_json_canonical(v, &b, &err), -1);
    assert_string_equal(b.data, "prefix:{\"k\":7,\"l\":[true,null]}");
    assert_int_equal(b.len, strlen("prefix:{\"k\":7,\"l\":[true,null]}"));
    json_decref(v);

    mx_buf_free(&b);
}


static void
test_check_strict_built(void **state)
{
    json_t    *v;
    mx_err_t   err;

    v = json_pack("{s:{s:I}}", "content", "n", (json_int_t) 9007199254740992LL);
    assert_non_null(v);
    assert_int_equal(mx_json_check_strict(v, &err), -1);
    assert_string_equal(err.text, "integer out of range at content.n");
    json_decref(v);

    v = json_pack("{s:{s:I}}", "content", "n", (json_int_t) 9007199254740991LL);
    assert_non_null(v);
    assert_int_equal(mx_json_check_strict(v, &err), 0);
    json_decref(v);

    v = json_real(0.0);
    assert_non_null(v);
    assert_int_equal(mx_json_check_strict(v, &err), -1);
    assert_string_equal(err.text, "float not allowed at top level");
    json_decref(v);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_control_escapes),
        cmocka_unit_test(test_raw_characters),
        cmocka_unit_test(test_key_order),
        cmocka_unit_test(test_key_with_nul),
        cmocka_unit_test(test_nul_in_string),
        cmocka_unit_test(test_nul_in_key_rejected),
        cmocka_unit_test(test_strict_numbers),
        cmocka_unit_test(test_strict_paths),
        cmocka_unit_test(test_strict_duplicates),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_lenient_numbers),
        cmocka_unit_test(test_append_and_rollback),
        cmocka_unit_test(test_check_strict_built),
    };

    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
