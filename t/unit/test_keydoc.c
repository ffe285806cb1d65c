/*
 * Copyright (C) nginx-matrix-join authors.
 * Server key documents and notary answers (mx_keydoc). The signed
 * documents below were made by python3-signedjson and canonicaljson, not
 * by our signer: t/unit/keydoc_fixtures.py prints them (run once by hand
 * with /usr/bin/python3, its output pasted here). "domain"'s ed25519:1 is
 * the spec's key (reference §8, spec_vectors.h); the second key, and the
 * notary's, is RFC 8032 §7.1 TEST 1's.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_keydoc.h"
#include "spec_vectors.h"


#define NOW      1600000000000LL
#define WEEK     (7 * 86400 * 1000LL)
#define FAR      1700000000000LL            /* the fixtures' valid_until_ts */
#define OLD      1500000000000LL            /* their expired_ts */

/* RFC 8032 §7.1 TEST 1's public key */
static const uint8_t  rfc_pk[32] = {
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7,
    0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
    0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a
};


/* --- made by t/unit/keydoc_fixtures.py --------------------------------- */

#define GOOD \
    "{\"old_verify_keys\":{\"ed25519:noexp\":{\"key\":\"11qYAYKxCrfVS/7TyWQHO" \
    "g7hcvPapiMlrwIaaPcHURo\"},\"ed25519:old\":{\"expired_ts\":1500000000000," \
    "\"key\":\"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},\"ed25519:strex" \
    "p\":{\"expired_ts\":\"1500000000000\",\"key\":\"11qYAYKxCrfVS/7TyWQHOg7h" \
    "cvPapiMlrwIaaPcHURo\"}},\"server_name\":\"domain\",\"signatures\":{\"dom" \
    "ain\":{\"ed25519:1\":\"ZbxKzXLx4/6LBdiwHT8qC0fxz/kzvLJYyksXgqUJiCY2XsMhO" \
    "IeIvd722puzMaUuK7WRGYsAI6/liF1NUI71Dw\"}},\"valid_until_ts\":17000000000" \
    "00,\"verify_keys\":{\"ed25519:1\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm" \
    "2Dh61gXDJA8kcJNI\"}}}"

#define OLD_LIST \
    "{\"old_verify_keys\":[],\"server_name\":\"domain\",\"signatures\":{\"dom" \
    "ain\":{\"ed25519:1\":\"JObnIJm1xIxbMZfIXndwVUilh8SuGlbZ0shEgMwN43vL0zVBR" \
    "hA6qKS2LBBREe9I9qQT+dE5eYNgHTiEepTcAA\"}},\"valid_until_ts\":17000000000" \
    "00,\"verify_keys\":{\"ed25519:1\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm" \
    "2Dh61gXDJA8kcJNI\"}}}"

#define NOTARY_DOMAIN \
    "{\"server_name\":\"domain\",\"signatures\":{\"domain\":{\"ed25519:1\":\"" \
    "HXKZ7655MdQpkJkgNhFiEfIcmaF/JUbmZrT9zlyGh2IdDh7p2CuU/fY21+0Cy1Ln31yC8DNC" \
    "nHwC9xO2ayIvBg\"},\"notary.example\":{\"ed25519:n\":\"4r2sA8gGhAZQ6hOu8t" \
    "wPV3UoMGrRP/RYEvf1kUKv8TeZYtmqzpfk9jnKPq7/2PTh8Q1BvwQf1JC3e3FEjXQCCQ\"}}" \
    ",\"valid_until_ts\":1700000000000,\"verify_keys\":{\"ed25519:1\":{\"key" \
    "\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"}}}"

#define NOTARY_OTHER \
    "{\"server_name\":\"other.example\",\"signatures\":{\"notary.example\":{" \
    "\"ed25519:n\":\"gFqH/n9rwbj7j2QaF3gwhojJ9VBiCojElVjKn3XLYPqBiSRgovi0bVe/" \
    "6MBm/C0GKbQ9FfX+LR5GyuRrHg96AA\"},\"other.example\":{\"ed25519:a\":\"gFq" \
    "H/n9rwbj7j2QaF3gwhojJ9VBiCojElVjKn3XLYPqBiSRgovi0bVe/6MBm/C0GKbQ9FfX+LR5" \
    "GyuRrHg96AA\"}},\"valid_until_ts\":1700000000000,\"verify_keys\":{\"ed25" \
    "519:a\":{\"key\":\"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}}}"

#define EXPIRED \
    "{\"server_name\":\"domain\",\"signatures\":{\"domain\":{\"ed25519:1\":\"" \
    "5mwmzC9twq5LAsQGZT15hPG4DD6K31DKkovWjPnxykWOzyEGqj1m7LjCprhClOUJgSyEBLnC" \
    "zc9WosczP0tIAQ\"}},\"valid_until_ts\":1000,\"verify_keys\":{\"ed25519:1" \
    "\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"}}}"

#define ROTATED \
    "{\"old_verify_keys\":{\"ed25519:1\":{\"expired_ts\":1500000000000,\"key" \
    "\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"}},\"server_name\":\"d" \
    "omain\",\"signatures\":{\"domain\":{\"ed25519:2\":\"irGUNyepgW9w1N8ecBab" \
    "VH4y+slCF4kqLKqCW2g5QHpQKyvJ9slCuW7STwddfuFRsC69EJVqNbsM69otXuKNBw\"}}," \
    "\"valid_until_ts\":1700000000000,\"verify_keys\":{\"ed25519:2\":{\"key\"" \
    ":\"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}}}"

#define UNLISTED \
    "{\"server_name\":\"domain\",\"signatures\":{\"domain\":{\"ed25519:2\":\"" \
    "4r2sA8gGhAZQ6hOu8twPV3UoMGrRP/RYEvf1kUKv8TeZYtmqzpfk9jnKPq7/2PTh8Q1BvwQf" \
    "1JC3e3FEjXQCCQ\"}},\"valid_until_ts\":1700000000000,\"verify_keys\":{\"e" \
    "d25519:1\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"}}}"

#define TWO \
    "{\"server_name\":\"domain\",\"signatures\":{\"domain\":{\"ed25519:1\":\"" \
    "maPkDPOHj+jAIJH2Hnt4Aq6bcLjcnHKjco/2ea0an35NGqqUF+PT9hA1x06RzY8Kz48PT6VY" \
    "AiHGFY+XcfZzAw\",\"ed25519:2\":\"8Ac9tKlVAsWRjm0ZBFZM57mdvhaqMpvn6T4/oSd" \
    "fwpSS+GqV2W79Da1jOw8lg3WXQqfCs+mScfIyMbxcESIfDw\"}},\"valid_until_ts\":1" \
    "700000000000,\"verify_keys\":{\"ed25519:1\":{\"key\":\"XGX0JRS2Af3be3knz" \
    "2fBiRbApjm2Dh61gXDJA8kcJNI\"},\"ed25519:2\":{\"key\":\"11qYAYKxCrfVS/7Ty" \
    "WQHOg7hcvPapiMlrwIaaPcHURo\"}}}"

#define PADDED \
    "{\"server_name\":\"domain\",\"signatures\":{\"domain\":{\"ed25519:1\":\"" \
    "qyaYwtDFx4Bwa3ijNHQ1a35OgR6I7m71xbydZoskmWrcE1b8oKFEidMpzqBA7/NXX7RygNmQ" \
    "xFywGafiUg3ADA\"}},\"valid_until_ts\":1700000000000,\"verify_keys\":{\"e" \
    "d25519:1\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI=\"}}}"

#define SKIP \
    "{\"server_name\":\"domain\",\"signatures\":{\"domain\":{\"curve25519:x\"" \
    ":\"bm90IGEgc2lnbmF0dXJl\",\"ed25519:1\":\"KfD9jZVKFh+Hq0DP7hIt8HHvJrifvB" \
    "Td/keCebf4PW9TIwf7DemUYvHlIovNd2q5s3iTO9Vn3Wdcsm1Tw0P9AA\",\"ed25519:bad" \
    "-id\":\"bm90IGEgc2lnbmF0dXJl\",\"ed25519:short\":\"bm90IGEgc2lnbmF0dXJl" \
    "\"}},\"valid_until_ts\":1700000000000,\"verify_keys\":{\"curve25519:x\":" \
    "{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"},\"ed25519:1\":" \
    "{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"},\"ed25519:bad-" \
    "id\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI\"},\"ed25519" \
    ":nokey\":{},\"ed25519:short\":{\"key\":\"AAAA\"}}}"

#define LONG_ID \
    "{\"server_name\":\"domain\",\"signatures\":{\"domain\":{\"ed25519:1\":\"" \
    "hXXcaQB9uNDsqhOs3rcfetsHM0hqhw7E+x93tHOysOUySkNneO7GZODlOmx/QqJAalDU+VTx" \
    "aLq+GZmQWYPkBQ\",\"ed25519:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaa\":\"bm90IGEgc2lnbmF0dXJl\"}},\"valid_until_ts\":1700000000" \
    "000,\"verify_keys\":{\"ed25519:1\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApj" \
    "m2Dh61gXDJA8kcJNI\"},\"ed25519:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaaaaaa\":{\"key\":\"XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJ" \
    "NI\"}}}"

/* --- end of the pasted output ------------------------------------------ */


static json_t *
load(const char *text)
{
    json_t  *v;

    v = json_loads(text, 0, NULL);
    assert_non_null(v);

    return v;
}


/* mx_keydoc_check at NOW, max age a week; *n and *why poisoned first */
static int
check(const json_t *doc, const char *server, mx_keydoc_key_t *keys,
    size_t nmax, size_t *n, const char **why)
{
    *n = 99;
    *why = NULL;

    return mx_keydoc_check(doc, server, NOW, WEEK, keys, nmax, n, why);
}


static int
parse(const char *body, const char *server, const char *key_id,
    mx_keydoc_key_t *keys, size_t nmax, size_t *n, const char **why)
{
    *n = 99;
    *why = NULL;

    return mx_keydoc_parse(body, strlen(body), server, key_id, NOW, WEEK,
                           keys, nmax, n, why);
}


/* the document is refused for why, and no key is given */
static void
refused(const json_t *doc, const char *server, const char *why)
{
    size_t            n;
    const char       *w;
    mx_keydoc_key_t   keys[4];

    assert_int_equal(check(doc, server, keys, 4, &n, &w), -1);
    assert_int_equal(n, 0);
    assert_non_null(w);
    assert_string_equal(w, why);
}


static void
assert_key(const mx_keydoc_key_t *k, const char *key_id, const uint8_t *pk,
    int64_t valid_until, unsigned old)
{
    assert_string_equal(k->key_id, key_id);
    assert_memory_equal(k->pk, pk, 32);
    assert_true(k->valid_until == valid_until);
    assert_int_equal(k->old, old);
}


static void
test_good(void **state)
{
    size_t            n;
    json_t           *doc;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    doc = load(GOOD);
    assert_int_equal(check(doc, "domain", keys, 8, &n, &why), 0);
    assert_null(why);

    /* the current key capped at a week; ed25519:noexp and :strexp lack
     * an integer expired_ts */
    assert_int_equal(n, 2);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);
    assert_key(&keys[1], "ed25519:old", rfc_pk, OLD, 1);

    assert_ptr_equal(mx_keydoc_find(keys, n, "ed25519:1"), &keys[0]);
    assert_null(mx_keydoc_find(keys, n, "ed25519:old"));
    assert_null(mx_keydoc_find(keys, n, "ed25519:2"));
    json_decref(doc);

    /* the answer of /_matrix/key/v2/server, as it is */
    assert_int_equal(parse(GOOD, "domain", NULL, keys, 8, &n, &why), 0);
    assert_int_equal(n, 2);
    assert_int_equal(parse(GOOD, "domain", "ed25519:1", keys, 8, &n, &why),
                     0);
    assert_null(why);
    assert_int_equal(n, 2);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);

    /* a padded key */
    assert_int_equal(parse(PADDED, "domain", "ed25519:1", keys, 8, &n,
                           &why), 0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);

    /* old_verify_keys not an object: no old key, no error */
    doc = load(OLD_LIST);
    assert_int_equal(check(doc, "domain", keys, 8, &n, &why), 0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);
    json_decref(doc);
}


static void
test_valid_until(void **state)
{
    size_t            n;
    json_t           *doc;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    doc = load(GOOD);

    /* within the week: as the document says */
    assert_int_equal(mx_keydoc_check(doc, "domain", FAR - 1000, WEEK, keys,
                                     8, &n, &why), 0);
    assert_key(&keys[0], "ed25519:1", spec_pk, FAR, 0);

    /* no max age: now; a negative one is none */
    assert_int_equal(mx_keydoc_check(doc, "domain", NOW, 0, keys, 8, &n,
                                     &why), 0);
    assert_true(keys[0].valid_until == NOW);
    assert_int_equal(mx_keydoc_check(doc, "domain", NOW, -WEEK, keys, 8, &n,
                                     &why), 0);
    assert_true(keys[0].valid_until == NOW);

    /* now + max_age does not overflow */
    assert_int_equal(mx_keydoc_check(doc, "domain", INT64_MAX - 5, WEEK,
                                     keys, 8, &n, &why), 0);
    assert_true(keys[0].valid_until == FAR);

    /* an expired document checks: whether it is too old is the caller's */
    assert_int_equal(mx_keydoc_check(doc, "domain", FAR + WEEK, WEEK, keys,
                                     8, &n, &why), 0);
    assert_true(keys[0].valid_until == FAR);

    /* old keys keep expired_ts */
    assert_key(&keys[1], "ed25519:old", rfc_pk, OLD, 1);
    json_decref(doc);
}


static void
test_notary(void **state)
{
    size_t            n;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    /* several servers, signed by the notary too */
    const char  *both = "{\"server_keys\":[" NOTARY_OTHER "," NOTARY_DOMAIN
                        "]}";

    assert_int_equal(parse(both, "domain", "ed25519:1", keys, 8, &n, &why),
                     0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);

    assert_int_equal(parse(both, "other.example", "ed25519:a", keys, 8, &n,
                           &why), 0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:a", rfc_pk, NOW + WEEK, 0);

    assert_int_equal(parse(both, "other.example", NULL, keys, 8, &n, &why),
                     0);
    assert_int_equal(n, 1);

    /* the notary's own signature is not the server's */
    assert_int_equal(parse(both, "notary.example", NULL, keys, 8, &n, &why),
                     -1);
    assert_int_equal(n, 0);
    assert_string_equal(why, "the answer has no key document of the server");

    /* entries that are no documents are passed over */
    assert_int_equal(parse("{\"server_keys\":[1,\"x\",null,[],{},"
                           NOTARY_DOMAIN "]}", "domain", "ed25519:1", keys,
                           8, &n, &why), 0);
    assert_int_equal(n, 1);

    assert_int_equal(parse("{\"server_keys\":[]}", "domain", "ed25519:1",
                           keys, 8, &n, &why), -1);
    assert_string_equal(why, "the answer has no key document of the server");
}


/* A notary holds several documents of one server: the one for the key. */
static void
test_notary_documents(void **state)
{
    size_t            n;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    const char  *old_first = "{\"server_keys\":[" EXPIRED "," NOTARY_DOMAIN
                             "]}";
    const char  *bad_first = "{\"server_keys\":[" UNLISTED "," NOTARY_DOMAIN
                             "]}";
    const char  *rotated = "{\"server_keys\":[" ROTATED "," NOTARY_OTHER
                           "]}";

    /* the expired document is passed over for a request signed now */
    assert_int_equal(parse(old_first, "domain", "ed25519:1", keys, 8, &n,
                           &why), 0);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);

    /* without a key: the first that checks, expired or not */
    assert_int_equal(parse(old_first, "domain", NULL, keys, 8, &n, &why), 0);
    assert_key(&keys[0], "ed25519:1", spec_pk, 1000, 0);

    assert_int_equal(parse(bad_first, "domain", "ed25519:1", keys, 8, &n,
                           &why), 0);
    assert_int_equal(parse(bad_first, "domain", NULL, keys, 8, &n, &why), 0);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);

    /* the reason of the last document of the server */
    assert_int_equal(parse(EXPIRED, "domain", "ed25519:1", keys, 8, &n,
                           &why), -1);
    assert_int_equal(n, 0);
    assert_string_equal(why, "the key's document has expired");

    /* ed25519:1 is an old key there, not one to sign requests with */
    assert_int_equal(parse(rotated, "domain", "ed25519:1", keys, 8, &n,
                           &why), -1);
    assert_int_equal(n, 0);
    assert_string_equal(why, "the server's document does not list the key");

    assert_int_equal(parse(rotated, "domain", "ed25519:2", keys, 8, &n,
                           &why), 0);
    assert_int_equal(n, 2);
    assert_key(&keys[0], "ed25519:2", rfc_pk, NOW + WEEK, 0);
    assert_key(&keys[1], "ed25519:1", spec_pk, OLD, 1);

    assert_int_equal(parse("{\"server_keys\":[" UNLISTED "]}", "domain",
                           "ed25519:1", keys, 8, &n, &why), -1);
    assert_string_equal(why,
        "the key document is not signed by one of its verify_keys");
}


static void
test_server_name(void **state)
{
    size_t            n;
    json_t           *doc;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    doc = load(GOOD);
    refused(doc, "other.example", "the key document's server_name is not "
            "the server's");
    refused(doc, "domai", "the key document's server_name is not the "
            "server's");
    refused(doc, "domain2", "the key document's server_name is not the "
            "server's");

    /* a NUL inside is not the name's end */
    assert_int_equal(json_object_set_new(doc, "server_name",
                                         json_stringn("domain\0x", 8)), 0);
    refused(doc, "domain", "the key document's server_name is not the "
            "server's");

    assert_int_equal(json_object_set_new(doc, "server_name",
                                         json_integer(1)), 0);
    refused(doc, "domain", "the key document's server_name is not the "
            "server's");

    assert_int_equal(json_object_del(doc, "server_name"), 0);
    refused(doc, "domain", "the key document's server_name is not the "
            "server's");
    json_decref(doc);

    assert_int_equal(parse(GOOD, "other.example", "ed25519:1", keys, 8, &n,
                           &why), -1);
    assert_string_equal(why, "the answer has no key document of the server");

    doc = json_array();
    refused(doc, "domain", "the key document is not a JSON object");
    json_decref(doc);
}


static void
test_malformed(void **state)
{
    json_t  *doc;

    doc = load(GOOD);
    assert_int_equal(json_object_del(doc, "verify_keys"), 0);
    refused(doc, "domain", "the key document has no verify_keys object");
    assert_int_equal(json_object_set_new(doc, "verify_keys", json_array()),
                     0);
    refused(doc, "domain", "the key document has no verify_keys object");
    json_decref(doc);

    doc = load(GOOD);
    assert_int_equal(json_object_del(doc, "valid_until_ts"), 0);
    refused(doc, "domain", "the key document has no integer valid_until_ts");
    assert_int_equal(json_object_set_new(doc, "valid_until_ts",
                                         json_string("1700000000000")), 0);
    refused(doc, "domain", "the key document has no integer valid_until_ts");
    assert_int_equal(json_object_set_new(doc, "valid_until_ts",
                                         json_real(1.7e12)), 0);
    refused(doc, "domain", "the key document has no integer valid_until_ts");
    json_decref(doc);

    doc = load(GOOD);
    assert_int_equal(json_object_set_new(json_object_get(doc, "signatures"),
                                         "domain", json_string("x")), 0);
    refused(doc, "domain", "the key document has no signatures of its "
            "server");
    assert_int_equal(json_object_set_new(doc, "signatures", json_array()),
                     0);
    refused(doc, "domain", "the key document has no signatures of its "
            "server");
    assert_int_equal(json_object_del(doc, "signatures"), 0);
    refused(doc, "domain", "the key document has no signatures of its "
            "server");
    json_decref(doc);
}


static void
test_signatures(void **state)
{
    size_t            n;
    json_t           *doc, *mine;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    /* by a key it does not list, only */
    doc = load(UNLISTED);
    refused(doc, "domain", "the key document is not signed by one of its "
            "verify_keys");
    json_decref(doc);

    doc = load(GOOD);
    assert_int_equal(json_object_set_new(json_object_get(doc, "signatures"),
                                         "domain", json_object()), 0);
    refused(doc, "domain", "the key document is not signed by one of its "
            "verify_keys");
    json_decref(doc);

    /* both listed keys sign: good; one of the two bad: refused */
    doc = load(TWO);
    assert_int_equal(check(doc, "domain", keys, 8, &n, &why), 0);
    assert_int_equal(n, 2);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);
    assert_key(&keys[1], "ed25519:2", rfc_pk, NOW + WEEK, 0);

    mine = json_object_get(json_object_get(doc, "signatures"), "domain");
    assert_int_equal(json_object_set(mine, "ed25519:2",
                                     json_object_get(mine, "ed25519:1")), 0);
    refused(doc, "domain", "the key document's self-signature does not "
            "verify");

    assert_int_equal(json_object_set_new(mine, "ed25519:2",
                                         json_string("!!")), 0);
    refused(doc, "domain", "the key document's self-signature does not "
            "verify");

    assert_int_equal(json_object_set_new(mine, "ed25519:2",
                                         json_integer(1)), 0);
    refused(doc, "domain", "the key document's self-signature does not "
            "verify");

    /* without it, ed25519:1's alone does */
    assert_int_equal(json_object_del(mine, "ed25519:2"), 0);
    assert_int_equal(check(doc, "domain", keys, 8, &n, &why), 0);
    assert_int_equal(n, 2);
    json_decref(doc);
}


static void
test_tampered(void **state)
{
    size_t            n;
    json_t           *doc, *old;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    doc = load(GOOD);
    assert_int_equal(json_object_set_new(doc, "valid_until_ts",
                                         json_integer(FAR + 1)), 0);
    refused(doc, "domain", "the key document's self-signature does not "
            "verify");
    json_decref(doc);

    doc = load(GOOD);
    old = json_object_get(json_object_get(doc, "old_verify_keys"),
                          "ed25519:old");
    assert_int_equal(json_object_set_new(old, "expired_ts",
                                         json_integer(OLD + 1)), 0);
    refused(doc, "domain", "the key document's self-signature does not "
            "verify");
    json_decref(doc);

    doc = load(GOOD);
    assert_int_equal(json_object_set_new(doc, "extra", json_true()), 0);
    refused(doc, "domain", "the key document's self-signature does not "
            "verify");

    /* a float has no canonical form: nothing can have signed it */
    assert_int_equal(json_object_set_new(doc, "extra", json_real(0.5)), 0);
    refused(doc, "domain", "the key document has no canonical JSON form");
    json_decref(doc);

    /* unsigned and the signatures of others are not signed */
    doc = load(GOOD);
    assert_int_equal(json_object_set_new(doc, "unsigned", json_true()), 0);
    assert_int_equal(json_object_set_new(json_object_get(doc, "signatures"),
                                         "notary.example", json_object()),
                     0);
    assert_int_equal(check(doc, "domain", keys, 8, &n, &why), 0);
    json_decref(doc);
}


/* Entries that are not ed25519 keys of 32 bytes are no keys, nor signers. */
static void
test_skipped_keys(void **state)
{
    size_t            n;
    json_t           *doc;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    doc = load(SKIP);
    assert_int_equal(check(doc, "domain", keys, 8, &n, &why), 0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);
    json_decref(doc);

    /* an ID longer than mx_keydoc_key_t holds: no key, nor a signer */
    doc = load(LONG_ID);
    assert_int_equal(check(doc, "domain", keys, 8, &n, &why), 0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);
    json_decref(doc);
}


static void
test_nmax(void **state)
{
    size_t            n;
    json_t           *doc;
    const char       *why;
    mx_keydoc_key_t   keys[3], canary;

    memset(&canary, 0xa5, sizeof(canary));

    /* two current keys, room for one: the first, the rest dropped */
    doc = load(TWO);
    keys[1] = canary;
    assert_int_equal(check(doc, "domain", keys, 1, &n, &why), 0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);
    assert_memory_equal(&keys[1], &canary, sizeof(canary));

    /* no room at all: still checked */
    assert_int_equal(check(doc, "domain", NULL, 0, &n, &why), 0);
    assert_int_equal(n, 0);
    json_decref(doc);

    /* verify_keys come first: the old key is the one dropped */
    doc = load(GOOD);
    keys[1] = canary;
    assert_int_equal(check(doc, "domain", keys, 1, &n, &why), 0);
    assert_int_equal(n, 1);
    assert_key(&keys[0], "ed25519:1", spec_pk, NOW + WEEK, 0);
    assert_memory_equal(&keys[1], &canary, sizeof(canary));
    json_decref(doc);

    /* a key past nmax is not there for a request */
    assert_int_equal(parse(TWO, "domain", "ed25519:2", keys, 1, &n, &why),
                     -1);
    assert_string_equal(why, "the server's document does not list the key");
    assert_int_equal(parse(TWO, "domain", "ed25519:2", keys, 2, &n, &why),
                     0);
}


static void
test_not_json(void **state)
{
    char              body[sizeof(GOOD) + 1];
    size_t            i, n;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    static const char  *bad[] = {
        "", "nope", "[]", "\"domain\"", "1", "null", "{", GOOD " x",
        "{\"server_name\":\"dom\\u0000ain\"}"
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(bad[i], "domain", "ed25519:1", keys, 8, &n,
                               &why), -1);
        assert_int_equal(n, 0);
        assert_string_equal(why, "the answer is not a JSON object");
    }

    /* truncated, and with a NUL after it */
    assert_int_equal(mx_keydoc_parse(GOOD, sizeof(GOOD) - 2, "domain",
                                     "ed25519:1", NOW, WEEK, keys, 8, &n,
                                     &why), -1);
    memcpy(body, GOOD, sizeof(GOOD));
    assert_int_equal(mx_keydoc_parse(body, sizeof(GOOD), "domain",
                                     "ed25519:1", NOW, WEEK, keys, 8, &n,
                                     &why), -1);
    assert_string_equal(why, "the answer is not a JSON object");
    assert_int_equal(mx_keydoc_parse(body, sizeof(GOOD) - 1, "domain",
                                     "ed25519:1", NOW, WEEK, keys, 8, &n,
                                     &why), 0);
}


static void
test_server_keys_not_list(void **state)
{
    size_t            i, n;
    const char       *why;
    mx_keydoc_key_t   keys[8];

    static const char  *bad[] = {
        "{\"server_keys\":{}}", "{\"server_keys\":\"x\"}",
        "{\"server_keys\":null}", "{\"server_keys\":" GOOD "}"
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(bad[i], "domain", NULL, keys, 8, &n, &why),
                         -1);
        assert_int_equal(n, 0);
        assert_string_equal(why, "\"server_keys\" is not a list");
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_valid_until),
        cmocka_unit_test(test_notary),
        cmocka_unit_test(test_notary_documents),
        cmocka_unit_test(test_server_name),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_skipped_keys),
        cmocka_unit_test(test_nmax),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_server_keys_not_list),
    };

    return cmocka_run_group_tests_name("keydoc", tests, NULL, NULL);
}
