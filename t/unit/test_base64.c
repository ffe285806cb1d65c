/*
 * Copyright (C) nginx-matrix-join authors.
 * Unpadded base64: the spec's examples (appendices, "Unpadded Base64").
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mx_base64.h"


typedef struct {
    const char  *plain;
    const char  *b64;
} b64_vector_t;


/* Spec appendix "Unpadded Base64" (RFC 4648 section 10, padding removed). */
static const b64_vector_t  spec_vectors[] = {
    { "", "" },
    { "f", "Zg" },
    { "fo", "Zm8" },
    { "foo", "Zm9v" },
    { "foob", "Zm9vYg" },
    { "fooba", "Zm9vYmE" },
    { "foobar", "Zm9vYmFy" },
};

#define NVECTORS  (sizeof(spec_vectors) / sizeof(spec_vectors[0]))


static void
test_encode_spec(void **state)
{
    char    out[32];
    size_t  i, n, len;

    for (i = 0; i < NVECTORS; i++) {
        n = strlen(spec_vectors[i].plain);
        memset(out, 'x', sizeof(out));

        len = mx_b64_encode(out, (const uint8_t *) spec_vectors[i].plain, n,
                            MX_B64_STD);

        assert_string_equal(out, spec_vectors[i].b64);
        assert_int_equal(len, strlen(spec_vectors[i].b64));
        assert_int_equal(mx_b64_encoded_len(n), len);
    }
}


static void
test_decode_spec(void **state)
{
    long     len;
    size_t   i, n;
    uint8_t  out[32];

    for (i = 0; i < NVECTORS; i++) {
        n = strlen(spec_vectors[i].b64);

        len = mx_b64_decode(out, sizeof(out), spec_vectors[i].b64, n,
                            MX_B64_STD);

        assert_int_equal(len, strlen(spec_vectors[i].plain));
        assert_memory_equal(out, spec_vectors[i].plain, (size_t) len);
        assert_true((size_t) len <= mx_b64_decoded_max(n));
    }
}


static void
test_decode_padded(void **state)
{
    long     len;
    uint8_t  out[32];

    len = mx_b64_decode(out, sizeof(out), "Zg==", 4, MX_B64_STD);
    assert_int_equal(len, 1);
    assert_memory_equal(out, "f", 1);

    len = mx_b64_decode(out, sizeof(out), "Zm8=", 4, MX_B64_STD);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "fo", 2);

    len = mx_b64_decode(out, sizeof(out), "Zm9vYmE=", 8, MX_B64_STD);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "fooba", 5);

    /* Incomplete padding is tolerated, as by Python's unpaddedbase64. */
    len = mx_b64_decode(out, sizeof(out), "Zg=", 3, MX_B64_STD);
    assert_int_equal(len, 1);
    assert_memory_equal(out, "f", 1);

    /* More than two '=' or '=' in the middle is not base64. */
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zg===", 5, MX_B64_STD),
                     -1);
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zg==Zg", 6,
                                   MX_B64_STD), -1);
    assert_int_equal(mx_b64_decode(out, sizeof(out), "=", 1, MX_B64_STD), -1);

    /* Padding after a whole quad (Python would take it) is refused. */
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zm9v=", 5, MX_B64_STD),
                     -1);
}


/*
 * 0xfb 0xff 0xbf encodes to "+/+/" in the standard alphabet and "-_-_" in
 * the URL-safe one (RFC 4648 tables 1 and 2).
 */
static void
test_url_alphabet(void **state)
{
    long           len;
    char           out[8];
    uint8_t        dec[8];
    const uint8_t  raw[] = { 0xfb, 0xff, 0xbf };

    mx_b64_encode(out, raw, sizeof(raw), MX_B64_STD);
    assert_string_equal(out, "+/+/");

    mx_b64_encode(out, raw, sizeof(raw), MX_B64_URL);
    assert_string_equal(out, "-_-_");

    len = mx_b64_decode(dec, sizeof(dec), "-_-_", 4, MX_B64_URL);
    assert_int_equal(len, 3);
    assert_memory_equal(dec, raw, 3);

    len = mx_b64_decode(dec, sizeof(dec), "+/+/", 4, MX_B64_STD);
    assert_int_equal(len, 3);
    assert_memory_equal(dec, raw, 3);

    /* Each alphabet refuses the other's two characters. */
    assert_int_equal(mx_b64_decode(dec, sizeof(dec), "-_-_", 4, MX_B64_STD),
                     -1);
    assert_int_equal(mx_b64_decode(dec, sizeof(dec), "+/+/", 4, MX_B64_URL),
                     -1);
}


/* The spec's event ID pair (v3 standard form vs v4+ URL-safe form). */
static void
test_event_id_pair(void **state)
{
    long     len;
    char     out[64];
    uint8_t  hash[40];

    len = mx_b64_decode(hash, sizeof(hash),
                        "70O/oKlXzFbkfu0KE88USi98DjSWrOELrPj+8tisl8I", 43,
                        MX_B64_STD);
    assert_int_equal(len, 32);

    mx_b64_encode(out, hash, 32, MX_B64_URL);
    assert_string_equal(out, "70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I");
}


static void
test_decode_invalid(void **state)
{
    uint8_t  out[32];

    /* 4k+1 characters can never be base64. */
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Z", 1, MX_B64_STD), -1);
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zm9vY", 5, MX_B64_STD),
                     -1);

    /* Characters outside the alphabet. */
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zm9v!", 5, MX_B64_STD),
                     -1);
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zm 9v", 5, MX_B64_STD),
                     -1);
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zm9\n", 4, MX_B64_STD),
                     -1);
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zm\0v", 4, MX_B64_STD),
                     -1);
    assert_int_equal(mx_b64_decode(out, sizeof(out), "Zm\xc3\xa9", 4,
                                   MX_B64_STD), -1);
}


static void
test_decode_too_small(void **state)
{
    uint8_t  out[8];

    memset(out, 0xaa, sizeof(out));

    assert_int_equal(mx_b64_decode(out, 5, "Zm9vYmFy", 8, MX_B64_STD), -1);
    assert_int_equal(mx_b64_decode(out, 0, "Zg", 2, MX_B64_STD), -1);

    /* The exact size is enough; nothing is written past it. */
    assert_int_equal(mx_b64_decode(out, 6, "Zm9vYmFy", 8, MX_B64_STD), 6);
    assert_memory_equal(out, "foobar", 6);
    assert_int_equal(out[6], 0xaa);
}


/* Python's decoder ignores non-zero unused bits: "Zh" decodes to "f". */
static void
test_decode_trailing_bits(void **state)
{
    long     len;
    uint8_t  out[8];

    len = mx_b64_decode(out, sizeof(out), "Zh", 2, MX_B64_STD);
    assert_int_equal(len, 1);
    assert_memory_equal(out, "f", 1);

    len = mx_b64_decode(out, sizeof(out), "Zm9", 3, MX_B64_STD);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "fo", 2);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_encode_spec),
        cmocka_unit_test(test_decode_spec),
        cmocka_unit_test(test_decode_padded),
        cmocka_unit_test(test_url_alphabet),
        cmocka_unit_test(test_event_id_pair),
        cmocka_unit_test(test_decode_invalid),
        cmocka_unit_test(test_decode_too_small),
        cmocka_unit_test(test_decode_trailing_bits),
    };

    return cmocka_run_group_tests_name("base64", tests, NULL, NULL);
}
