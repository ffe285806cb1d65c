/*
 * Copyright (C) nginx-matrix-join authors.
 * Events: content hash, redaction, reference hash, event IDs, signing and
 * signature checks. Expected values come from the reference §8 (spec
 * vectors and the extra computed vectors), the §5.6/§5.7 tables written
 * out by hand, or Python's canonicaljson + hashlib (named where used).
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_base64.h"
#include "mx_event.h"
#include "mx_json.h"
#include "spec_vectors.h"


/* reference §8, event signing 1 and 2 */
#define EVENT1 \
    "{\"room_id\":\"!x:domain\",\"sender\":\"@a:domain\"," \
    "\"origin\":\"domain\",\"origin_server_ts\":1000000,\"signatures\":{}," \
    "\"hashes\":{},\"type\":\"X\",\"content\":{},\"prev_events\":[]," \
    "\"auth_events\":[],\"depth\":3,\"unsigned\":{\"age_ts\":1000000}}"
#define EVENT1_HASH  "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
#define EVENT1_SIG   "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqf" \
                     "IReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
#define EVENT1_SIG_V11 "Jxp+1glFcZM+nnHpY0EkedRR7u0VmKsJYGnQqIvqus3UvL5X/p1" \
                       "y6wSkLhGoTBel6MZ9lrMIzUqrjqFquWJKBw"
#define EVENT1_HASH_INPUT \
    "{\"auth_events\":[],\"content\":{},\"depth\":3,\"origin\":\"domain\"," \
    "\"origin_server_ts\":1000000,\"prev_events\":[]," \
    "\"room_id\":\"!x:domain\",\"sender\":\"@a:domain\",\"type\":\"X\"}"
#define EVENT1_SIGNING_INPUT \
    "{\"auth_events\":[],\"content\":{},\"depth\":3,\"hashes\":{\"sha256\":" \
    "\"" EVENT1_HASH "\"},\"origin\":\"domain\"," \
    "\"origin_server_ts\":1000000,\"prev_events\":[]," \
    "\"room_id\":\"!x:domain\",\"sender\":\"@a:domain\",\"type\":\"X\"}"
#define EVENT1_ID_V1     "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"
#define EVENT1_ID_V11    "$70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I"
#define EVENT1_ID_V11_STD "$70O/oKlXzFbkfu0KE88USi98DjSWrOELrPj+8tisl8I"

#define EVENT2 \
    "{\"content\":{\"body\":\"Here is the message content\"}," \
    "\"event_id\":\"$0:domain\",\"origin\":\"domain\"," \
    "\"origin_server_ts\":1000000,\"type\":\"m.room.message\"," \
    "\"room_id\":\"!r:domain\",\"sender\":\"@u:domain\",\"signatures\":{}," \
    "\"unsigned\":{\"age_ts\":1000000}}"
#define EVENT2_HASH  "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
#define EVENT2_SIG   "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78Funo" \
                     "D7KNWzqFn241eYHYMGCA5McEiVPdhzBA"

/* a v12 create event; its room ID by Python canonicaljson + hashlib over
 * the redacted form written from the reference §5.6/§5.7 */
#define CREATE12 \
    "{\"type\":\"m.room.create\",\"sender\":\"@a:domain\"," \
    "\"state_key\":\"\",\"content\":{\"room_version\":\"12\"," \
    "\"additional_creators\":[\"@b:other\"]},\"origin_server_ts\":1000000," \
    "\"depth\":1,\"prev_events\":[],\"auth_events\":[]," \
    "\"hashes\":{\"sha256\":\"abc\"}," \
    "\"signatures\":{\"domain\":{\"ed25519:1\":\"x\"}}," \
    "\"unsigned\":{\"age_ts\":5},\"origin\":\"domain\"}"
#define CREATE12_ROOM_ID  "!_k1ioeTbFXPfHPo6nPxwPAneNWRpzFAjssCI3Cprj2U"


static const mx_room_version_t *
rv(int v)
{
    char                      id[16];
    const mx_room_version_t  *r;

    snprintf(id, sizeof(id), "%d", v);
    r = mx_room_version(id, strlen(id));
    assert_non_null(r);

    return r;
}


static json_t *
load(const char *text)
{
    json_t        *v;
    json_error_t   e;

    v = json_loads(text, 0, &e);
    if (v == NULL) {
        fail_msg("bad test JSON: %s: %s", e.text, text);
    }

    return v;
}


static mx_signing_key_t  spec_key;
static mx_signing_key_t  other_key;

/* RFC 8032 §7.1 TEST 1 secret key: just a second, different key */
static const uint8_t  rfc_seed[32] = {
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60,
    0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
    0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60
};


static int
setup(void **state)
{
    mx_err_t  err;

    if (mx_crypto_init() != 0
        || mx_signing_key_from_seed(&spec_key, SPEC_KEY_ID, spec_seed, &err)
        || mx_signing_key_from_seed(&other_key, "ed25519:o", rfc_seed, &err))
    {
        return -1;
    }

    return 0;
}


static const char *
sig_of(const json_t *ev, const char *server, const char *key_id)
{
    return json_string_value(json_object_get(json_object_get(
               json_object_get(ev, "signatures"), server), key_id));
}


static void
assert_canonical(const json_t *v, const char *expect)
{
    char      *s;
    mx_err_t   err;

    s = mx_json_canonical_str(v, NULL, &err);
    assert_non_null(s);
    assert_string_equal(s, expect);
    free(s);
}


/* §8 event signing vectors */

static void
test_spec_event_vectors(void **state)
{
    int        v;
    json_t    *ev, *unsig;
    mx_err_t   err;

    for (v = 1; v <= 10; v++) {
        ev = load(EVENT1);
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);
        assert_string_equal(json_string_value(json_object_get(
                                json_object_get(ev, "hashes"), "sha256")),
                            EVENT1_HASH);
        assert_string_equal(sig_of(ev, SPEC_SERVER, SPEC_KEY_ID), EVENT1_SIG);

        unsig = load("{\"age_ts\":1000000}");
        assert_true(json_equal(json_object_get(ev, "unsigned"), unsig));
        json_decref(unsig);
        json_decref(ev);

        ev = load(EVENT2);
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);
        assert_string_equal(json_string_value(json_object_get(
                                json_object_get(ev, "hashes"), "sha256")),
                            EVENT2_HASH);
        assert_string_equal(sig_of(ev, SPEC_SERVER, SPEC_KEY_ID), EVENT2_SIG);
        json_decref(ev);
    }

    /* the extra computed vector: v11/v12 redaction strips "origin" */
    for (v = 11; v <= 12; v++) {
        ev = load(EVENT1);
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);
        assert_string_equal(sig_of(ev, SPEC_SERVER, SPEC_KEY_ID),
                            EVENT1_SIG_V11);
        json_decref(ev);
    }
}


static void
test_intermediate_values(void **state)
{
    json_t    *ev, *red;
    mx_buf_t   buf = MX_BUF_INIT;
    mx_err_t   err;

    ev = load(EVENT1);
    assert_int_equal(mx_event_set_content_hash(ev, &err), 0);

    json_object_del(ev, "hashes");
    json_object_del(ev, "signatures");
    json_object_del(ev, "unsigned");
    assert_canonical(ev, EVENT1_HASH_INPUT);
    json_decref(ev);

    ev = load(EVENT1);
    assert_int_equal(mx_event_set_content_hash(ev, &err), 0);
    red = mx_event_redact(rv(1), ev);
    assert_non_null(red);
    assert_int_equal(mx_json_signing_bytes(red, &buf, &err), 0);
    assert_string_equal(buf.data, EVENT1_SIGNING_INPUT);

    mx_buf_free(&buf);
    json_decref(red);
    json_decref(ev);
}


static void
test_content_hash(void **state)
{
    json_t    *ev;
    mx_err_t   err;

    ev = load(EVENT1);

    /* Synapse's legacy keys are not hashed */
    json_object_set_new(ev, "age_ts", json_integer(5));
    json_object_set_new(ev, "outlier", json_true());
    json_object_set_new(ev, "destinations", json_object());
    json_object_set_new(ev, "hashes", json_pack("{ss}", "sha256", "x"));

    assert_int_equal(mx_event_check_content_hash(ev, &err), -1);
    assert_string_equal(err.text, "hashes.sha256 is not base64 of 32 bytes");

    json_object_set_new(ev, "hashes", json_pack("{ss}", "sha256",
                                                EVENT1_HASH));
    assert_int_equal(mx_event_check_content_hash(ev, &err), 0);

    /* padded base64 is accepted too */
    json_object_set_new(ev, "hashes", json_pack("{ss}", "sha256",
                                                EVENT1_HASH "="));
    assert_int_equal(mx_event_check_content_hash(ev, &err), 0);

    json_object_set_new(ev, "hashes", json_pack("{ss}", "sha256",
                                                EVENT2_HASH));
    assert_int_equal(mx_event_check_content_hash(ev, &err), -1);
    assert_string_equal(err.text, "content hash mismatch");

    json_object_set_new(ev, "hashes", json_pack("{ss}", "sha256",
                                                EVENT1_HASH));
    json_object_set_new(ev, "depth", json_integer(4));
    assert_int_equal(mx_event_check_content_hash(ev, &err), -1);
    assert_string_equal(err.text, "content hash mismatch");

    json_object_del(ev, "hashes");
    assert_int_equal(mx_event_check_content_hash(ev, &err), -1);
    assert_string_equal(err.text, "event has no hashes.sha256");

    json_object_set_new(ev, "hashes", json_pack("{si}", "sha256", 1));
    assert_int_equal(mx_event_check_content_hash(ev, &err), -1);
    assert_string_equal(err.text, "event has no hashes.sha256");

    json_decref(ev);

    /* canonical JSON has no floats */
    ev = load("{\"type\":\"X\",\"content\":{\"f\":1.5}}");
    assert_int_equal(mx_event_set_content_hash(ev, &err), -1);
    json_decref(ev);
}


/* §5.5 event IDs and the extra computed vectors of §8 */

static void
test_event_ids(void **state)
{
    int        v;
    char       id[MX_EVENT_ID_MAX], b64[64], long_id[257];
    json_t    *ev;
    uint8_t    hash[MX_SHA256_LEN];
    mx_err_t   err;

    ev = load(EVENT1);
    assert_int_equal(mx_event_sign(rv(1), ev, SPEC_SERVER, &spec_key, &err),
                     0);

    for (v = 3; v <= 10; v++) {
        assert_int_equal(mx_event_id(rv(v), ev, id, sizeof(id), &err), 44);
        assert_string_equal(id, EVENT1_ID_V1);
    }

    for (v = 11; v <= 12; v++) {
        assert_int_equal(mx_event_id(rv(v), ev, id, sizeof(id), &err), 44);
        assert_string_equal(id, EVENT1_ID_V11);
    }

    /* the same hash in the standard alphabet, as a v3 ID would show it */
    assert_int_equal(mx_event_reference_hash(rv(11), ev, hash, &err), 0);
    b64[0] = '$';
    mx_b64_encode(b64 + 1, hash, sizeof(hash), MX_B64_STD);
    assert_string_equal(b64, EVENT1_ID_V11_STD);

    /* signatures and unsigned are not part of the reference hash */
    json_object_set_new(ev, "signatures", json_object());
    json_object_set_new(ev, "unsigned", json_pack("{si}", "age", 1));
    assert_int_equal(mx_event_id(rv(11), ev, id, sizeof(id), &err), 44);
    assert_string_equal(id, EVENT1_ID_V11);

    /* v1/v2 have no event ID in the event: an error */
    assert_int_equal(mx_event_id(rv(1), ev, id, sizeof(id), &err), -1);

    /* too small a buffer: 44 characters and the NUL */
    assert_int_equal(mx_event_id(rv(11), ev, id, 45, &err), 44);
    assert_int_equal(mx_event_id(rv(11), ev, id, 44, &err), -1);
    json_decref(ev);

    /* v1/v2: the event_id field */
    ev = load(EVENT2);
    for (v = 1; v <= 2; v++) {
        assert_int_equal(mx_event_id(rv(v), ev, id, sizeof(id), &err), 9);
        assert_string_equal(id, "$0:domain");
    }

    assert_int_equal(mx_event_id(rv(1), ev, id, 9, &err), -1);

    json_object_set_new(ev, "event_id", json_string("$0"));
    assert_int_equal(mx_event_id(rv(1), ev, id, sizeof(id), &err), -1);
    json_object_set_new(ev, "event_id", json_string("$0:localhost:http"));
    assert_int_equal(mx_event_id(rv(1), ev, id, sizeof(id), &err), -1);
    json_object_set_new(ev, "event_id", json_string("!0:domain"));
    assert_int_equal(mx_event_id(rv(1), ev, id, sizeof(id), &err), -1);
    json_object_set_new(ev, "event_id", json_integer(1));
    assert_int_equal(mx_event_id(rv(1), ev, id, sizeof(id), &err), -1);

    /* 256 bytes */
    memset(long_id, 'a', sizeof(long_id));
    long_id[0] = '$';
    memcpy(long_id + 249, ":domain", 8);
    json_object_set_new(ev, "event_id", json_string(long_id));
    assert_int_equal(mx_event_id(rv(1), ev, id, sizeof(id), &err), -1);
    assert_memory_equal(err.text, "invalid event_id \"$aaa", 22);

    long_id[248] = '\0';
    strcat(long_id, ":domain");
    json_object_set_new(ev, "event_id", json_string(long_id));
    assert_int_equal(mx_event_id(rv(1), ev, id, sizeof(id), &err), 255);
    json_decref(ev);
}


static void
test_room_id_from_create(void **state)
{
    char       id[MX_EVENT_ID_MAX];
    json_t    *ev;
    mx_err_t   err;

    ev = load(CREATE12);
    assert_int_equal(mx_event_room_id_from_create(rv(12), ev, id, sizeof(id),
                                                  &err), 44);
    assert_string_equal(id, CREATE12_ROOM_ID);

    /* the create event's ID is the same hash */
    assert_int_equal(mx_event_id(rv(12), ev, id, sizeof(id), &err), 44);
    assert_string_equal(id + 1, CREATE12_ROOM_ID + 1);
    assert_int_equal(id[0], '$');

    /* a room_id on a v12 create event is redacted away */
    json_object_set_new(ev, "room_id", json_string("!x:domain"));
    assert_int_equal(mx_event_room_id_from_create(rv(12), ev, id, sizeof(id),
                                                  &err), 44);
    assert_string_equal(id, CREATE12_ROOM_ID);

    assert_int_equal(mx_event_room_id_from_create(rv(11), ev, id, sizeof(id),
                                                  &err), -1);

    json_object_set_new(ev, "type", json_string("m.room.member"));
    assert_int_equal(mx_event_room_id_from_create(rv(12), ev, id, sizeof(id),
                                                  &err), -1);
    json_decref(ev);
}


/*
 * §5.6 top-level keys. Every key of the table, plus ones that must go.
 */

#define ALL_TOP \
    "\"event_id\":\"$e:hs\",\"room_id\":\"!r:hs\",\"sender\":\"@u:hs\"," \
    "\"state_key\":\"\",\"hashes\":{\"sha256\":\"h\"}," \
    "\"signatures\":{\"hs\":{\"ed25519:1\":\"s\"}},\"depth\":5," \
    "\"prev_events\":[\"$p\"],\"prev_state\":[\"$q\"]," \
    "\"auth_events\":[\"$a\"],\"origin\":\"hs\"," \
    "\"origin_server_ts\":7,\"membership\":\"join\"," \
    "\"unsigned\":{\"age_ts\":1},\"redacts\":\"$r\",\"extra\":{\"x\":1}," \
    "\"age_ts\":1,\"outlier\":true,\"destinations\":{}"

#define TOP_V1 \
    "\"event_id\":\"$e:hs\",\"room_id\":\"!r:hs\",\"sender\":\"@u:hs\"," \
    "\"state_key\":\"\",\"hashes\":{\"sha256\":\"h\"}," \
    "\"signatures\":{\"hs\":{\"ed25519:1\":\"s\"}},\"depth\":5," \
    "\"prev_events\":[\"$p\"],\"prev_state\":[\"$q\"]," \
    "\"auth_events\":[\"$a\"],\"origin\":\"hs\"," \
    "\"origin_server_ts\":7,\"membership\":\"join\""

#define TOP_V11 \
    "\"event_id\":\"$e:hs\",\"room_id\":\"!r:hs\",\"sender\":\"@u:hs\"," \
    "\"state_key\":\"\",\"hashes\":{\"sha256\":\"h\"}," \
    "\"signatures\":{\"hs\":{\"ed25519:1\":\"s\"}},\"depth\":5," \
    "\"prev_events\":[\"$p\"]," \
    "\"auth_events\":[\"$a\"]," \
    "\"origin_server_ts\":7"

#define TOP_V12_CREATE \
    "\"event_id\":\"$e:hs\",\"sender\":\"@u:hs\"," \
    "\"state_key\":\"\",\"hashes\":{\"sha256\":\"h\"}," \
    "\"signatures\":{\"hs\":{\"ed25519:1\":\"s\"}},\"depth\":5," \
    "\"prev_events\":[\"$p\"]," \
    "\"auth_events\":[\"$a\"]," \
    "\"origin_server_ts\":7"


#define PL_V1 \
    "{\"ban\":50,\"events\":{\"m.room.name\":50},\"events_default\":0," \
    "\"kick\":51,\"redact\":52,\"state_default\":53," \
    "\"users\":{\"@u:hs\":100},\"users_default\":1}"
#define PL_V11 \
    "{\"ban\":50,\"events\":{\"m.room.name\":50},\"events_default\":0," \
    "\"invite\":0,\"kick\":51,\"redact\":52,\"state_default\":53," \
    "\"users\":{\"@u:hs\":100},\"users_default\":1}"


typedef struct {
    const char  *type;
    const char  *content;
    /* the content kept, by version column: v1-v5, v6-v7, v8, v9-v10,
     * v11, v12 */
    const char  *kept[6];
} redact_case_t;


static const redact_case_t  redact_cases[] = {

    { "m.room.member",
      "{\"membership\":\"join\",\"displayname\":\"U\","
      "\"avatar_url\":\"mxc://hs/a\","
      "\"join_authorised_via_users_server\":\"@a:hs\","
      "\"third_party_invite\":{\"display_name\":\"d\","
      "\"signed\":{\"mxid\":\"@u:hs\",\"token\":\"t\"}},\"reason\":\"r\"}",
      { "{\"membership\":\"join\"}",
        "{\"membership\":\"join\"}",
        "{\"membership\":\"join\"}",
        "{\"membership\":\"join\","
        "\"join_authorised_via_users_server\":\"@a:hs\"}",
        "{\"membership\":\"join\","
        "\"join_authorised_via_users_server\":\"@a:hs\","
        "\"third_party_invite\":{\"signed\":{\"mxid\":\"@u:hs\","
        "\"token\":\"t\"}}}",
        "{\"membership\":\"join\","
        "\"join_authorised_via_users_server\":\"@a:hs\","
        "\"third_party_invite\":{\"signed\":{\"mxid\":\"@u:hs\","
        "\"token\":\"t\"}}}" } },

    { "m.room.create",
      "{\"creator\":\"@u:hs\",\"room_version\":\"9\",\"m.federate\":false,"
      "\"predecessor\":{\"room_id\":\"!o:hs\"},"
      "\"additional_creators\":[\"@b:hs\"]}",
      { "{\"creator\":\"@u:hs\"}",
        "{\"creator\":\"@u:hs\"}",
        "{\"creator\":\"@u:hs\"}",
        "{\"creator\":\"@u:hs\"}",
        "{\"creator\":\"@u:hs\",\"room_version\":\"9\",\"m.federate\":false,"
        "\"predecessor\":{\"room_id\":\"!o:hs\"},"
        "\"additional_creators\":[\"@b:hs\"]}",
        "{\"creator\":\"@u:hs\",\"room_version\":\"9\",\"m.federate\":false,"
        "\"predecessor\":{\"room_id\":\"!o:hs\"},"
        "\"additional_creators\":[\"@b:hs\"]}" } },

    { "m.room.join_rules",
      "{\"join_rule\":\"restricted\",\"allow\":[{\"type\":"
      "\"m.room_membership\",\"room_id\":\"!o:hs\"}],\"other\":1}",
      { "{\"join_rule\":\"restricted\"}",
        "{\"join_rule\":\"restricted\"}",
        "{\"join_rule\":\"restricted\",\"allow\":[{\"type\":"
        "\"m.room_membership\",\"room_id\":\"!o:hs\"}]}",
        "{\"join_rule\":\"restricted\",\"allow\":[{\"type\":"
        "\"m.room_membership\",\"room_id\":\"!o:hs\"}]}",
        "{\"join_rule\":\"restricted\",\"allow\":[{\"type\":"
        "\"m.room_membership\",\"room_id\":\"!o:hs\"}]}",
        "{\"join_rule\":\"restricted\",\"allow\":[{\"type\":"
        "\"m.room_membership\",\"room_id\":\"!o:hs\"}]}" } },

    { "m.room.power_levels",
      "{\"ban\":50,\"events\":{\"m.room.name\":50},\"events_default\":0,"
      "\"invite\":0,\"kick\":51,\"redact\":52,\"state_default\":53,"
      "\"users\":{\"@u:hs\":100},\"users_default\":1,"
      "\"notifications\":{\"room\":50},\"historical\":100}",
      { PL_V1, PL_V1, PL_V1, PL_V1, PL_V11, PL_V11 } },

    { "m.room.history_visibility",
      "{\"history_visibility\":\"shared\",\"other\":1}",
      { "{\"history_visibility\":\"shared\"}",
        "{\"history_visibility\":\"shared\"}",
        "{\"history_visibility\":\"shared\"}",
        "{\"history_visibility\":\"shared\"}",
        "{\"history_visibility\":\"shared\"}",
        "{\"history_visibility\":\"shared\"}" } },

    { "m.room.aliases",
      "{\"aliases\":[\"#a:hs\"],\"other\":1}",
      { "{\"aliases\":[\"#a:hs\"]}", "{}", "{}", "{}", "{}", "{}" } },

    { "m.room.redaction",
      "{\"redacts\":\"$r\",\"reason\":\"spam\"}",
      { "{}", "{}", "{}", "{}", "{\"redacts\":\"$r\"}",
        "{\"redacts\":\"$r\"}" } },

    { "m.room.message",
      "{\"body\":\"hi\",\"msgtype\":\"m.text\",\"membership\":\"join\"}",
      { "{}", "{}", "{}", "{}", "{}", "{}" } },

    /* type names are exact */
    { "m.room.Member",
      "{\"membership\":\"join\"}",
      { "{}", "{}", "{}", "{}", "{}", "{}" } },
};


static void
check_redact(int v, const char *type, const char *content,
    const char *expect)
{
    char      *s, *got;
    json_t    *ev, *red, *want;
    mx_err_t   err;

    ev = load(content);
    want = load(expect);

    assert_int_equal(json_object_set_new(ev, "type", json_string(type)), 0);
    assert_int_equal(json_object_set_new(want, "type", json_string(type)), 0);

    red = mx_event_redact(rv(v), ev);
    assert_non_null(red);

    if (!json_equal(red, want)) {
        got = mx_json_canonical_str(red, NULL, &err);
        s = mx_json_canonical_str(want, NULL, &err);
        fail_msg("v%d %s:\n got  %s\n want %s", v, type, got, s);
    }

    json_decref(ev);
    json_decref(want);
    json_decref(red);
}


static void
test_redact_top_level(void **state)
{
    int  v;

    for (v = 1; v <= 12; v++) {
        check_redact(v, "m.room.message",
                     "{" ALL_TOP ",\"content\":{\"body\":\"x\"}}",
                     v <= 10 ? "{" TOP_V1 ",\"content\":{}}"
                             : "{" TOP_V11 ",\"content\":{}}");
    }

    /* "content" is there after redaction even when the event had none */
    check_redact(1, "m.room.message", "{\"sender\":\"@u:hs\"}",
                 "{\"sender\":\"@u:hs\",\"content\":{}}");
    check_redact(12, "m.room.create", "{\"content\":3}", "{\"content\":{}}");
}


static void
test_redact_content(void **state)
{
    int          v, col;
    char         ev[2048], want[2048];
    size_t       i;
    const char  *top;

    /* version -> column of the §5.7 table */
    static const int  column[13] = { 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5 };

    for (i = 0; i < sizeof(redact_cases) / sizeof(redact_cases[0]); i++) {
        for (v = 1; v <= 12; v++) {
            col = column[v];

            top = (v <= 10) ? TOP_V1 : TOP_V11;

            if (v == 12 && strcmp(redact_cases[i].type, "m.room.create") == 0)
            {
                top = TOP_V12_CREATE;
            }

            snprintf(ev, sizeof(ev), "{" ALL_TOP ",\"content\":%s}",
                     redact_cases[i].content);
            snprintf(want, sizeof(want), "{%s,\"content\":%s}", top,
                     redact_cases[i].kept[col]);

            check_redact(v, redact_cases[i].type, ev, want);
        }
    }
}


static void
test_redact_odd_content(void **state)
{
    int  v;

    /* v11 third_party_invite: "signed" only, {} without it, gone if not
     * an object (Synapse's rust redact() does the same) */
    for (v = 11; v <= 12; v++) {
        check_redact(v, "m.room.member",
                     "{\"content\":{\"membership\":\"invite\","
                     "\"third_party_invite\":{\"display_name\":\"d\"}}}",
                     "{\"content\":{\"membership\":\"invite\","
                     "\"third_party_invite\":{}}}");
        check_redact(v, "m.room.member",
                     "{\"content\":{\"membership\":\"invite\","
                     "\"third_party_invite\":\"x\"}}",
                     "{\"content\":{\"membership\":\"invite\"}}");
        check_redact(v, "m.room.member",
                     "{\"content\":{\"third_party_invite\":"
                     "{\"signed\":null}}}",
                     "{\"content\":{\"third_party_invite\":"
                     "{\"signed\":null}}}");
    }

    /* kept keys keep any value, whatever its type */
    check_redact(1, "m.room.join_rules",
                 "{\"content\":{\"join_rule\":[1,{\"a\":null}]}}",
                 "{\"content\":{\"join_rule\":[1,{\"a\":null}]}}");

    /* a content that is not an object */
    check_redact(11, "m.room.create", "{\"content\":[1]}",
                 "{\"content\":{}}");
}


static void
test_redact_is_a_copy(void **state)
{
    json_t  *ev, *red, *orig;

    ev = load("{\"type\":\"m.room.create\",\"content\":{\"a\":{\"b\":1}},"
              "\"signatures\":{\"hs\":{\"ed25519:1\":\"s\"}}}");
    orig = json_deep_copy(ev);

    red = mx_event_redact(rv(11), ev);
    assert_non_null(red);

    json_object_set_new(json_object_get(json_object_get(red, "content"), "a"),
                        "c", json_integer(2));
    json_object_set_new(json_object_get(red, "signatures"), "x",
                        json_object());

    assert_true(json_equal(ev, orig));

    json_decref(red);
    json_decref(ev);
    json_decref(orig);
}


/* key lookup for check_signatures: a small table */

typedef struct {
    const char     *server;
    const char     *key_id;
    const uint8_t  *pk;
    int64_t         valid_until;
} key_row_t;

typedef struct {
    key_row_t       rows[4];
    size_t          n;
} keys_t;


static int
lookup(void *data, const char *server, const char *key_id,
    uint8_t pk[MX_ED25519_PK_LEN], int64_t *valid_until_ts)
{
    size_t   i;
    keys_t  *keys = data;

    for (i = 0; i < keys->n; i++) {
        if (strcmp(keys->rows[i].server, server) == 0
            && strcmp(keys->rows[i].key_id, key_id) == 0)
        {
            memcpy(pk, keys->rows[i].pk, MX_ED25519_PK_LEN);
            *valid_until_ts = keys->rows[i].valid_until;
            return 0;
        }
    }

    return -1;
}


static void
test_verify_signature(void **state)
{
    int        v;
    json_t    *ev;
    mx_err_t   err;

    for (v = 1; v <= 12; v++) {
        ev = load(EVENT2);
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);
        assert_int_equal(mx_event_verify_signature(rv(v), ev, SPEC_SERVER,
                                                   SPEC_KEY_ID, spec_pk,
                                                   &err), 0);
        assert_int_equal(mx_event_verify_signature(rv(v), ev, SPEC_SERVER,
                                                   SPEC_KEY_ID, other_key.pk,
                                                   &err), -1);
        assert_int_equal(mx_event_verify_signature(rv(v), ev, SPEC_SERVER,
                                                   "ed25519:2", spec_pk,
                                                   &err), -1);
        assert_int_equal(mx_event_verify_signature(rv(v), ev, "other",
                                                   SPEC_KEY_ID, spec_pk,
                                                   &err), -1);

        /* the body is redacted away: the signature still holds */
        json_object_set_new(ev, "content", json_pack("{ss}", "body", "x"));
        assert_int_equal(mx_event_verify_signature(rv(v), ev, SPEC_SERVER,
                                                   SPEC_KEY_ID, spec_pk,
                                                   &err), 0);
        assert_int_equal(mx_event_check_content_hash(ev, &err), -1);

        json_decref(ev);
    }

    /* a v1-v10 signature does not hold under v11 rules, and back */
    ev = load(EVENT2);
    assert_int_equal(mx_event_sign(rv(10), ev, SPEC_SERVER, &spec_key, &err),
                     0);
    assert_int_equal(mx_event_verify_signature(rv(11), ev, SPEC_SERVER,
                                               SPEC_KEY_ID, spec_pk, &err),
                     -1);
    json_decref(ev);
}


static void
test_sign_keeps_other_signatures(void **state)
{
    json_t    *ev;
    mx_err_t   err;

    ev = load(EVENT2);
    assert_int_equal(mx_event_sign(rv(6), ev, "other", &other_key, &err), 0);
    assert_int_equal(mx_event_sign(rv(6), ev, SPEC_SERVER, &spec_key, &err),
                     0);

    /* both hold; signatures are outside what is signed */
    assert_int_equal(mx_event_verify_signature(rv(6), ev, "other",
                                               "ed25519:o", other_key.pk,
                                               &err), 0);
    assert_int_equal(mx_event_verify_signature(rv(6), ev, SPEC_SERVER,
                                               SPEC_KEY_ID, spec_pk, &err), 0);
    assert_string_equal(sig_of(ev, SPEC_SERVER, SPEC_KEY_ID), EVENT2_SIG);
    json_decref(ev);

    /* a broken "signatures" is refused */
    ev = load(EVENT2);
    json_object_set_new(ev, "signatures", json_string("x"));
    assert_int_equal(mx_event_sign(rv(6), ev, SPEC_SERVER, &spec_key, &err),
                     -1);
    json_decref(ev);
}


static void
test_required_signers(void **state)
{
    char       names[2][256];
    json_t    *ev;
    mx_err_t   err;

    ev = load("{\"sender\":\"@a:hs1:8448\",\"event_id\":\"$x:hs2\"}");

    assert_int_equal(mx_event_required_signers(rv(1), ev, names, &err), 2);
    assert_string_equal(names[0], "hs1:8448");
    assert_string_equal(names[1], "hs2");
    assert_int_equal(mx_event_required_signers(rv(2), ev, names, &err), 2);
    assert_int_equal(mx_event_required_signers(rv(3), ev, names, &err), 1);
    assert_string_equal(names[0], "hs1:8448");
    assert_int_equal(mx_event_required_signers(rv(12), ev, names, &err), 1);

    json_object_set_new(ev, "event_id", json_string("$x:hs1:8448"));
    assert_int_equal(mx_event_required_signers(rv(1), ev, names, &err), 1);

    json_object_set_new(ev, "event_id", json_string("$x"));
    assert_int_equal(mx_event_required_signers(rv(1), ev, names, &err), -1);
    assert_int_equal(mx_event_required_signers(rv(3), ev, names, &err), 1);

    json_object_set_new(ev, "sender", json_string("@a:localhost:http"));
    assert_int_equal(mx_event_required_signers(rv(3), ev, names, &err), -1);
    assert_string_equal(err.text, "invalid sender \"@a:localhost:http\"");

    json_object_del(ev, "sender");
    assert_int_equal(mx_event_required_signers(rv(3), ev, names, &err), -1);
    assert_string_equal(err.text, "event has no sender");
    json_decref(ev);
}


static void
test_check_signatures(void **state)
{
    int        v;
    json_t    *ev, *sigs;
    keys_t     keys;
    mx_err_t   err;

    keys.n = 1;
    keys.rows[0].server = SPEC_SERVER;
    keys.rows[0].key_id = SPEC_KEY_ID;
    keys.rows[0].pk = spec_pk;
    keys.rows[0].valid_until = INT64_MAX;

    for (v = 1; v <= 12; v++) {
        ev = load(EVENT2);
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), 0);

        /* other algorithms and unknown keys are skipped */
        sigs = json_object_get(json_object_get(ev, "signatures"),
                               SPEC_SERVER);
        json_object_set_new(sigs, "curve25519:x", json_string("junk"));
        json_object_set_new(sigs, "ed25519:unknown", json_string("junk"));
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), 0);

        /* tampered with a field the signature covers */
        json_object_set_new(ev, "origin_server_ts", json_integer(1000001));
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), -1);
        assert_string_equal(err.text, "bad signature by \"domain\" with key "
                            "\"ed25519:1\"");
        json_decref(ev);

        /* only an unknown key */
        ev = load(EVENT2);
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &other_key,
                                       &err), 0);
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), -1);
        assert_string_equal(err.text, "no signature by \"domain\" with a "
                            "known, unexpired key");

        /* a known key with a bad signature beside a good one */
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), 0);
        sigs = json_object_get(json_object_get(ev, "signatures"),
                               SPEC_SERVER);
        json_object_set_new(sigs, SPEC_KEY_ID, json_string(EVENT1_SIG));
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), -1);
        json_object_set_new(sigs, SPEC_KEY_ID, json_string("!!"));
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), -1);
        assert_string_equal(err.text, "signature by \"domain\" with key "
                            "\"ed25519:1\" is not base64 of 64 bytes");

        /* no signatures at all */
        json_object_del(ev, "signatures");
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), -1);
        assert_string_equal(err.text, "no signatures by \"domain\"");
        json_decref(ev);
    }
}


static void
test_key_validity(void **state)
{
    int        v;
    json_t    *ev;
    keys_t     keys;
    mx_err_t   err;

    keys.n = 1;
    keys.rows[0].server = SPEC_SERVER;
    keys.rows[0].key_id = SPEC_KEY_ID;
    keys.rows[0].pk = spec_pk;

    for (v = 1; v <= 12; v++) {
        ev = load(EVENT2);      /* origin_server_ts 1000000 */
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);

        /* expired one millisecond before the event */
        keys.rows[0].valid_until = 999999;
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err),
                         v >= 5 ? -1 : 0);

        /* valid until the event's own timestamp is enough */
        keys.rows[0].valid_until = 1000000;
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), 0);

        /* v5+ needs the timestamp to compare with (earlier versions fail
         * later, on the signature over the changed field) */
        json_object_set_new(ev, "origin_server_ts", json_string("1000000"));
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), -1);
        assert_string_equal(err.text, v >= 5
                            ? "event has no integer origin_server_ts"
                            : "bad signature by \"domain\" with key "
                              "\"ed25519:1\"");
        json_decref(ev);
    }
}


static void
test_event_id_domain_signer(void **state)
{
    int        v;
    json_t    *ev;
    keys_t     keys;
    mx_err_t   err;

    keys.n = 2;
    keys.rows[0].server = SPEC_SERVER;
    keys.rows[0].key_id = SPEC_KEY_ID;
    keys.rows[0].pk = spec_pk;
    keys.rows[0].valid_until = INT64_MAX;
    keys.rows[1].server = "other";
    keys.rows[1].key_id = "ed25519:o";
    keys.rows[1].pk = other_key.pk;
    keys.rows[1].valid_until = INT64_MAX;

    for (v = 1; v <= 12; v++) {
        ev = load(EVENT2);
        json_object_set_new(ev, "event_id", json_string("$0:other"));
        assert_int_equal(mx_event_sign(rv(v), ev, SPEC_SERVER, &spec_key,
                                       &err), 0);

        /* v1/v2: the event ID's server must sign too */
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err),
                         v <= 2 ? -1 : 0);
        if (v <= 2) {
            assert_string_equal(err.text, "no signatures by \"other\"");
        }

        assert_int_equal(mx_event_sign(rv(v), ev, "other", &other_key, &err),
                         0);
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), 0);

        /* only the event ID's server signed: the sender's is missing */
        json_object_del(json_object_get(ev, "signatures"), SPEC_SERVER);
        assert_int_equal(mx_event_check_signatures(rv(v), ev, lookup, &keys,
                                                   &err), -1);
        assert_string_equal(err.text, "no signatures by \"domain\"");
        json_decref(ev);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_spec_event_vectors),
        cmocka_unit_test(test_intermediate_values),
        cmocka_unit_test(test_content_hash),
        cmocka_unit_test(test_event_ids),
        cmocka_unit_test(test_room_id_from_create),
        cmocka_unit_test(test_redact_top_level),
        cmocka_unit_test(test_redact_content),
        cmocka_unit_test(test_redact_odd_content),
        cmocka_unit_test(test_redact_is_a_copy),
        cmocka_unit_test(test_verify_signature),
        cmocka_unit_test(test_sign_keeps_other_signatures),
        cmocka_unit_test(test_required_signers),
        cmocka_unit_test(test_check_signatures),
        cmocka_unit_test(test_key_validity),
        cmocka_unit_test(test_event_id_domain_signer),
    };

    return cmocka_run_group_tests_name("event", tests, setup, NULL);
}
