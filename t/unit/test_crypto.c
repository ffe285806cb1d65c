/*
 * Copyright (C) nginx-matrix-join authors.
 * SHA-256, ed25519 keys and Signing JSON against the spec's
 * "Cryptographic Test Vectors" and the FIPS 180-2 SHA-256 examples.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_base64.h"
#include "mx_crypto.h"
#include "mx_json.h"


#define SEED_B64    "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
#define PUBKEY_B64  "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"

/* the signature of {}, split after its first character for tampering */
#define SIG_EMPTY_TAIL                                                      \
    "8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ah" \
    "LwYGYZzuHGZKM5ZAQ"
#define SIG_EMPTY  "K" SIG_EMPTY_TAIL

#define SIG_ONE_TWO                                                         \
    "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6k" \
    "YdD13EIMJpvhJI+6Bw"


/* Every test starts from the spec's signing key. */
static void
load_key(mx_signing_key_t *k)
{
    long      n;
    uint8_t   seed[MX_ED25519_SEED_LEN + 3];
    mx_err_t  err;

    assert_int_equal(mx_crypto_init(), 0);

    n = mx_b64_decode(seed, sizeof(seed), SEED_B64, strlen(SEED_B64),
                      MX_B64_STD);
    assert_int_equal(n, MX_ED25519_SEED_LEN);

    if (mx_signing_key_from_seed(k, "ed25519:1", seed, &err) != 0) {
        fail_msg("cannot load the spec key: %s", err.text);
    }
}


static json_t *
parse(const char *text)
{
    json_t    *v;
    mx_err_t   err;

    v = mx_json_parse(text, strlen(text), MX_JSON_STRICT, &err);
    if (v == NULL) {
        fail_msg("cannot parse %s: %s", text, err.text);
    }

    return v;
}


static char *
canon(const json_t *v)
{
    char      *s;
    mx_err_t   err;

    s = mx_json_canonical_str(v, NULL, &err);
    if (s == NULL) {
        fail_msg("canonical failed: %s", err.text);
    }

    return s;
}


/* FIPS 180-2 appendix B.1 and the digest of the empty string. */
static void
test_sha256(void **state)
{
    uint8_t  out[MX_SHA256_LEN];

    static const uint8_t  empty[MX_SHA256_LEN] = {
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
        0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
        0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c,
        0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
    };

    static const uint8_t  abc[MX_SHA256_LEN] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
        0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
        0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
    };

    mx_sha256(out, "", 0);
    assert_memory_equal(out, empty, MX_SHA256_LEN);

    mx_sha256(out, "abc", 3);
    assert_memory_equal(out, abc, MX_SHA256_LEN);
}


/* Spec: the content-hash input of "Event signing 1" hashes to 5jM4... */
static void
test_sha256_event_vector(void **state)
{
    char         b64[MX_SHA256_LEN * 2];
    uint8_t      out[MX_SHA256_LEN];
    const char  *in;

    in = "{\"auth_events\":[],\"content\":{},\"depth\":3,\"origin\":\"domain\","
         "\"origin_server_ts\":1000000,\"prev_events\":[],"
         "\"room_id\":\"!x:domain\",\"sender\":\"@a:domain\",\"type\":\"X\"}";

    mx_sha256(out, in, strlen(in));
    mx_b64_encode(b64, out, MX_SHA256_LEN, MX_B64_STD);

    assert_string_equal(b64, "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos");
}


static void
test_public_key(void **state)
{
    char             b64[MX_ED25519_PK_B64_LEN + 1];
    mx_signing_key_t  key;

    load_key(&key);

    assert_string_equal(key.key_id, "ed25519:1");

    mx_b64_encode(b64, key.pk, MX_ED25519_PK_LEN, MX_B64_STD);
    assert_string_equal(b64, PUBKEY_B64);
}


static void
test_key_ids(void **state)
{
    uint8_t           seed[MX_ED25519_SEED_LEN];
    mx_err_t          err;
    mx_signing_key_t  k;

    assert_true(mx_key_id_valid("ed25519:1", 9));
    assert_true(mx_key_id_valid("ed25519:a_B9", 12));
    assert_true(mx_key_id_valid("curve25519:AAAA", 15));
    assert_true(mx_key_id_valid("signed_curve25519:x", 19));

    assert_false(mx_key_id_valid("ed25519:", 8));
    assert_false(mx_key_id_valid("ed25519", 7));
    assert_false(mx_key_id_valid(":1", 2));
    assert_false(mx_key_id_valid("ED25519:1", 9));
    assert_false(mx_key_id_valid("ed25519:a-b", 11));
    assert_false(mx_key_id_valid("ed25519:a:b", 11));
    assert_false(mx_key_id_valid("ed25519:a b", 11));
    assert_false(mx_key_id_valid("ed25519:1\0", 10));

    /* the length is honoured, not the NUL */
    assert_true(mx_key_id_valid("ed25519:1xyz", 9));

    memset(seed, 7, sizeof(seed));

    assert_int_equal(mx_signing_key_from_seed(&k, "ed25519:abc_DEF_1", seed,
                                              &err), 0);
    assert_string_equal(k.key_id, "ed25519:abc_DEF_1");

    assert_int_equal(mx_signing_key_from_seed(&k, "curve25519:1", seed,
                                              &err), -1);
    assert_int_equal(mx_signing_key_from_seed(&k, "ed25519:", seed, &err),
                     -1);
    assert_int_equal(mx_signing_key_from_seed(&k, "ed25519:a.b", seed, &err),
                     -1);

    mx_signing_key_wipe(&k);
    assert_int_equal(k.key_id[0], 0);
    assert_int_equal(k.sk[0] | k.sk[31] | k.sk[63], 0);
}


static void
test_sign_empty_object(void **state)
{
    char            *s;
    json_t          *v;
    mx_err_t         err;
    mx_signing_key_t  key;

    load_key(&key);

    v = parse("{}");
    assert_int_equal(mx_json_sign(v, "domain", &key, &err), 0);

    s = canon(v);
    assert_string_equal(s, "{\"signatures\":{\"domain\":{\"ed25519:1\":\""
                           SIG_EMPTY "\"}}}");

    free(s);
    json_decref(v);
}


static void
test_sign_one_two(void **state)
{
    char            *s;
    json_t          *v;
    mx_err_t         err;
    mx_signing_key_t  key;

    load_key(&key);

    v = parse("{\"one\":1,\"two\":\"Two\"}");
    assert_int_equal(mx_json_sign(v, "domain", &key, &err), 0);

    s = canon(v);
    assert_string_equal(s, "{\"one\":1,\"signatures\":{\"domain\":"
                           "{\"ed25519:1\":\"" SIG_ONE_TWO "\"}},"
                           "\"two\":\"Two\"}");

    free(s);
    json_decref(v);
}


/* Existing signatures and "unsigned" are kept and not signed over. */
static void
test_sign_keeps_others(void **state)
{
    char            *s;
    json_t          *v;
    mx_err_t         err;
    mx_signing_key_t  key;

    load_key(&key);

    v = parse("{\"one\":1,\"two\":\"Two\",\"unsigned\":{\"age\":5},"
              "\"signatures\":{\"other\":{\"ed25519:x\":\"abc\"},"
              "\"domain\":{\"ed25519:old\":\"def\"}}}");
    assert_int_equal(mx_json_sign(v, "domain", &key, &err), 0);

    s = canon(v);
    assert_string_equal(s, "{\"one\":1,\"signatures\":{\"domain\":"
                           "{\"ed25519:1\":\"" SIG_ONE_TWO "\","
                           "\"ed25519:old\":\"def\"},"
                           "\"other\":{\"ed25519:x\":\"abc\"}},"
                           "\"two\":\"Two\",\"unsigned\":{\"age\":5}}");
    free(s);

    assert_int_equal(mx_json_verify(v, "domain", "ed25519:1", key.pk,
                                    &err), 0);
    json_decref(v);
}


static void
test_signing_bytes(void **state)
{
    json_t    *v;
    mx_buf_t   b = MX_BUF_INIT;
    mx_err_t   err;

    v = parse("{\"b\":1,\"signatures\":{},\"unsigned\":{},"
              "\"a\":{\"unsigned\":1}}");
    assert_int_equal(mx_json_signing_bytes(v, &b, &err), 0);

    /* only the top-level keys go */
    assert_string_equal(b.data, "{\"a\":{\"unsigned\":1},\"b\":1}");

    /* the object itself is untouched */
    assert_non_null(json_object_get(v, "signatures"));
    assert_non_null(json_object_get(v, "unsigned"));

    json_decref(v);
    mx_buf_free(&b);

    v = parse("[]");
    assert_int_equal(mx_json_signing_bytes(v, &b, &err), -1);
    json_decref(v);
    mx_buf_free(&b);
}


static void
verify_fails(const char *text, const char *key_id, const uint8_t *pk,
    const char *reason)
{
    json_t    *v;
    mx_err_t   err;

    err.text[0] = '\0';

    v = parse(text);

    if (mx_json_verify(v, "domain", key_id, pk, &err) == 0) {
        fail_msg("%s verified", text);
    }

    if (strstr(err.text, reason) == NULL) {
        fail_msg("verify of %s: \"%s\" does not say \"%s\"",
                 text, err.text, reason);
    }

    json_decref(v);
}


static void
test_verify(void **state)
{
    json_t    *v;
    uint8_t    pk[MX_ED25519_PK_LEN];
    mx_err_t   err;

    /* the published public key, not one derived by our code */
    assert_int_equal(mx_b64_decode(pk, sizeof(pk), PUBKEY_B64,
                                   strlen(PUBKEY_B64), MX_B64_STD),
                     MX_ED25519_PK_LEN);

    /* the published vectors verify with the published public key */
    v = parse("{\"one\":1,\"two\":\"Two\",\"signatures\":{\"domain\":"
              "{\"ed25519:1\":\"" SIG_ONE_TWO "\"}}}");
    assert_int_equal(mx_json_verify(v, "domain", "ed25519:1", pk, &err), 0);
    json_decref(v);

    /* "unsigned" may change after signing */
    v = parse("{\"signatures\":{\"domain\":{\"ed25519:1\":\"" SIG_EMPTY
              "\"}},\"unsigned\":{\"x\":1}}");
    assert_int_equal(mx_json_verify(v, "domain", "ed25519:1", pk, &err), 0);
    json_decref(v);

    /* padding on the signature is accepted */
    v = parse("{\"signatures\":{\"domain\":{\"ed25519:1\":\"" SIG_EMPTY
              "==\"}}}");
    assert_int_equal(mx_json_verify(v, "domain", "ed25519:1", pk, &err), 0);
    json_decref(v);

    /* tampered content */
    verify_fails("{\"one\":2,\"two\":\"Two\",\"signatures\":{\"domain\":"
                 "{\"ed25519:1\":\"" SIG_ONE_TWO "\"}}}",
                 "ed25519:1", pk, "bad signature");

    verify_fails("{\"one\":1,\"two\":\"Two\",\"three\":3,\"signatures\":"
                 "{\"domain\":{\"ed25519:1\":\"" SIG_ONE_TWO "\"}}}",
                 "ed25519:1", pk, "bad signature");

    /* the signature of {} is not the signature of {"one":1,...} */
    verify_fails("{\"one\":1,\"two\":\"Two\",\"signatures\":{\"domain\":"
                 "{\"ed25519:1\":\"" SIG_EMPTY "\"}}}",
                 "ed25519:1", pk, "bad signature");

    /* a flipped signature character */
    verify_fails("{\"signatures\":{\"domain\":{\"ed25519:1\":\"L"
                 SIG_EMPTY_TAIL "\"}}}", "ed25519:1", pk, "bad signature");

    verify_fails("{\"signatures\":{\"domain\":{\"ed25519:1\":\"" SIG_EMPTY
                 "\"}}}", "ed25519:2", pk, "no signature by");

    verify_fails("{\"signatures\":{\"other\":{\"ed25519:1\":\"" SIG_EMPTY
                 "\"}}}", "ed25519:1", pk, "no signatures for");

    verify_fails("{}", "ed25519:1", pk, "no signatures for");

    verify_fails("{\"signatures\":{\"domain\":\"x\"}}", "ed25519:1", pk,
                 "no signatures for");

    verify_fails("{\"signatures\":{\"domain\":{\"ed25519:1\":\"*"
                 SIG_EMPTY_TAIL "\"}}}", "ed25519:1", pk, "not base64");

    verify_fails("{\"signatures\":{\"domain\":{\"ed25519:1\":\"K828\"}}}",
                 "ed25519:1", pk, "wrong length");

    verify_fails("{\"signatures\":{\"domain\":{\"ed25519:1\":\"" SIG_EMPTY
                 "AAAA\"}}}", "ed25519:1", pk, "wrong length");

    verify_fails("{\"signatures\":{\"domain\":{\"ed25519:1\":\"\"}}}",
                 "ed25519:1", pk, "wrong length");

    verify_fails("{\"signatures\":{\"domain\":{\"ed25519:1\":7}}}",
                 "ed25519:1", pk, "not a string");
}


static void
test_verify_wrong_key(void **state)
{
    json_t    *v;
    uint8_t    pk[MX_ED25519_PK_LEN];
    mx_err_t   err;

    assert_int_equal(mx_b64_decode(pk, sizeof(pk), PUBKEY_B64,
                                   strlen(PUBKEY_B64), MX_B64_STD),
                     MX_ED25519_PK_LEN);

    pk[0] ^= 1;

    v = parse("{\"signatures\":{\"domain\":{\"ed25519:1\":\"" SIG_EMPTY
              "\"}}}");
    assert_int_equal(mx_json_verify(v, "domain", "ed25519:1", pk, &err), -1);

    pk[0] ^= 1;
    assert_int_equal(mx_json_verify(v, "domain", "ed25519:1", pk, &err), 0);
    json_decref(v);
}


static void
test_sign_errors(void **state)
{
    json_t          *v;
    mx_err_t         err;
    mx_signing_key_t  key;

    load_key(&key);

    v = parse("{\"signatures\":[]}");
    assert_int_equal(mx_json_sign(v, "domain", &key, &err), -1);
    json_decref(v);

    v = parse("{\"signatures\":{\"domain\":1}}");
    assert_int_equal(mx_json_sign(v, "domain", &key, &err), -1);
    json_decref(v);

    /* a float cannot be signed: canonical JSON has none */
    v = json_pack("{s:f}", "x", 1.5);
    assert_non_null(v);
    assert_int_equal(mx_json_sign(v, "domain", &key, &err), -1);
    assert_null(json_object_get(v, "signatures"));
    json_decref(v);

    v = parse("[]");
    assert_int_equal(mx_json_sign(v, "domain", &key, &err), -1);
    json_decref(v);
}


static void
test_raw_sign_verify(void **state)
{
    uint8_t          sig[MX_ED25519_SIG_LEN];
    mx_signing_key_t  key;

    load_key(&key);

    mx_ed25519_sign(sig, "{}", 2, &key);
    assert_int_equal(mx_ed25519_verify(sig, "{}", 2, key.pk), 0);
    assert_int_equal(mx_ed25519_verify(sig, "{ }", 3, key.pk), -1);

    sig[63] ^= 0x40;
    assert_int_equal(mx_ed25519_verify(sig, "{}", 2, key.pk), -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_sha256_event_vector),
        cmocka_unit_test(test_public_key),
        cmocka_unit_test(test_key_ids),
        cmocka_unit_test(test_sign_empty_object),
        cmocka_unit_test(test_sign_one_two),
        cmocka_unit_test(test_sign_keeps_others),
        cmocka_unit_test(test_signing_bytes),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_verify_wrong_key),
        cmocka_unit_test(test_sign_errors),
        cmocka_unit_test(test_raw_sign_verify),
    };

    return cmocka_run_group_tests_name("crypto", tests, NULL, NULL);
}
