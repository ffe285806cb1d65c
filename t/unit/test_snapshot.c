/*
 * Copyright (C) nginx-matrix-join authors.
 * Room snapshots: a small room (create, two members, power levels, join
 * rules, a message as forward extremity) of every version, made by
 * t/unit/snapshot_fixtures.py with python3-canonicaljson and hashlib
 * (snapshot_fixtures.h), accepted with the IDs, hashes and byte counts
 * the script computed; the same room built here with the core
 * (room_build(), checked equal to the script's) broken one way at a time,
 * each rejection naming the event and the reason; then where each PDU
 * lies in its chunk, and the partial state (heroes and their auth
 * chain).
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
#include "mx_snapshot.h"
#include "snapshot_fixtures.h"


enum { CREATE = 0, ALICE, PL, JR, BOB, MSG, NEVENTS };

typedef struct {
    const mx_room_version_t  *rv;
    char                      room_id[MX_ID_MAX_LEN + 1];
    json_t                   *ev[NEVENTS];
    json_t                   *doc;
    int                       serial;
} room_t;


static char *
event_id(room_t *r, json_t *ev)
{
    static char  id[MX_EVENT_ID_MAX];
    mx_err_t     err;

    assert_true(mx_event_id(r->rv, ev, id, sizeof(id), &err) > 0);

    return id;
}


/* A reference to ev in prev_events / auth_events: v1/v2 pairs. */
static json_t *
ref(room_t *r, json_t *ev)
{
    char      b64[64];
    uint8_t   hash[MX_SHA256_LEN];
    mx_err_t  err;

    if (!r->rv->event_refs_with_hashes) {
        return json_string(event_id(r, ev));
    }

    assert_int_equal(mx_event_reference_hash(r->rv, ev, hash, &err), 0);
    mx_b64_encode(b64, hash, sizeof(hash), MX_B64_STD);

    return json_pack("[s{ss}]", event_id(r, ev), "sha256", b64);
}


static void
rehash(room_t *r, json_t *ev)
{
    mx_err_t  err;

    assert_int_equal(mx_event_set_content_hash(ev, &err), 0);
}


/* An event with its content hash; auth and prev are NULL-ended. */
static json_t *
event(room_t *r, const char *type, const char *skey, const char *sender,
    json_t *content, int depth, json_t **auth, json_t *prev)
{
    char     id[64];
    json_t  *ev, *a, *p;

    a = json_array();

    for ( /* void */ ; auth && *auth; auth++) {
        if (!r->rv->create_in_auth_events && *auth == r->ev[CREATE]) {
            continue;
        }

        json_array_append_new(a, ref(r, *auth));
    }

    p = json_array();

    if (prev) {
        json_array_append_new(p, ref(r, prev));
    }

    ev = json_pack("{ss ss so si sI so so s{} s{s{ss}}}",
                   "type", type, "sender", sender, "content", content,
                   "depth", depth, "origin_server_ts",
                   (json_int_t) 1700000000000 + depth,
                   "auth_events", a, "prev_events", p, "hashes",
                   "signatures", "example.org", "ed25519:1", "c2ln");
    assert_non_null(ev);

    if (skey) {
        json_object_set_new(ev, "state_key", json_string(skey));
    }

    if (r->room_id[0]) {
        json_object_set_new(ev, "room_id", json_string(r->room_id));
    }

    if (r->rv->event_id_format == MX_EVENT_ID_SERVER) {
        snprintf(id, sizeof(id), "$ev%d:example.org", r->serial++);
        json_object_set_new(ev, "event_id", json_string(id));
    }

    rehash(r, ev);

    return ev;
}


static void
room_build(room_t *r, const char *version)
{
    json_t  *content, *auth[5];

    memset(r, 0, sizeof(room_t));
    r->rv = mx_room_version(version, strlen(version));
    assert_non_null(r->rv);

    if (!r->rv->room_id_from_create) {
        strcpy(r->room_id, "!room:example.org");
    }

    content = json_pack("{ss}", "room_version", version);
    if (!r->rv->creator_is_sender) {
        json_object_set_new(content, "creator",
                            json_string("@alice:example.org"));
    }

    r->ev[CREATE] = event(r, "m.room.create", "", "@alice:example.org",
                          content, 1, NULL, NULL);

    if (r->rv->room_id_from_create) {
        snprintf(r->room_id, sizeof(r->room_id), "!%s",
                 event_id(r, r->ev[CREATE]) + 1);
    }

    auth[0] = r->ev[CREATE];
    auth[1] = NULL;
    r->ev[ALICE] = event(r, "m.room.member", "@alice:example.org",
                         "@alice:example.org",
                         json_pack("{ss}", "membership", "join"), 2, auth,
                         r->ev[CREATE]);

    auth[1] = r->ev[ALICE];
    auth[2] = NULL;
    r->ev[PL] = event(r, "m.room.power_levels", "", "@alice:example.org",
                      r->rv->creators_infinite_power
                      ? json_pack("{s{}}", "users")
                      : json_pack("{s{si}}", "users", "@alice:example.org",
                                  100),
                      3, auth, r->ev[ALICE]);

    auth[2] = r->ev[PL];
    auth[3] = NULL;
    r->ev[JR] = event(r, "m.room.join_rules", "", "@alice:example.org",
                      json_pack("{ss}", "join_rule", "public"), 4, auth,
                      r->ev[PL]);

    auth[1] = r->ev[PL];
    auth[2] = r->ev[JR];
    auth[3] = NULL;
    r->ev[BOB] = event(r, "m.room.member", "@bob:b.example.org",
                       "@bob:b.example.org",
                       json_pack("{ss ss}", "membership", "join",
                                 "displayname", "Bob"),
                       5, auth, r->ev[JR]);

    auth[2] = r->ev[BOB];
    r->ev[MSG] = event(r, "m.room.message", NULL, "@bob:b.example.org",
                       json_pack("{ss ss}", "msgtype", "m.text",
                                 "body", "hello"),
                       6, auth, r->ev[BOB]);

    r->doc = json_pack("{ss s[OOOOO] s[OOOO] s[O] s[s]}",
                       "room_version", version,
                       "state", r->ev[CREATE], r->ev[PL], r->ev[JR],
                       r->ev[ALICE], r->ev[BOB],
                       "auth_chain", r->ev[CREATE], r->ev[ALICE], r->ev[PL],
                       r->ev[JR],
                       "forward_extremities", r->ev[MSG],
                       "aliases", "#room:example.org");
    assert_non_null(r->doc);
}


static void
room_free(room_t *r)
{
    int  i;

    for (i = 0; i < NEVENTS; i++) {
        json_decref(r->ev[i]);
    }

    json_decref(r->doc);
}


static json_t *
list(room_t *r, const char *name)
{
    return json_object_get(r->doc, name);
}


static int
parse_text(const char *text, mx_snapshot_t **snap, mx_snapshot_err_t *err)
{
    return mx_snapshot_parse(text, strlen(text), NULL, NULL, snap, err);
}


static int
parse(room_t *r, mx_snapshot_t **snap, mx_snapshot_err_t *err)
{
    int    rc;
    char  *text;

    text = json_dumps(r->doc, JSON_COMPACT);
    assert_non_null(text);

    rc = parse_text(text, snap, err);
    free(text);

    return rc;
}


static void
expect_error(const mx_snapshot_err_t *err, const char *where,
    const char *reason)
{
    if (strstr(err->where, where) == NULL
        || strstr(err->reason, reason) == NULL)
    {
        fail_msg("want \"%s\" / \"%s\", got \"%s\" / \"%s\"", where, reason,
                 err->where, err->reason);
    }
}


static void
expect_reject(room_t *r, const char *where, const char *reason)
{
    mx_snapshot_t      *snap;
    mx_snapshot_err_t   err;

    assert_int_equal(parse(r, &snap, &err), -1);
    assert_null(snap);
    expect_error(&err, where, reason);
}


/* The fixture of version: made by t/unit/snapshot_fixtures.py. */
static const snapshot_fixture_t *
fixture(const char *version)
{
    size_t  i;

    for (i = 0; i < sizeof(snapshot_fixtures) / sizeof(snapshot_fixtures[0]);
         i++)
    {
        if (strcmp(snapshot_fixtures[i].version, version) == 0) {
            return &snapshot_fixtures[i];
        }
    }

    fail_msg("no fixture for v%s", version);

    return NULL;
}


/*
 * The small room of room_build() as t/unit/snapshot_fixtures.py made it
 * (python3-canonicaljson, hashlib): every ID, hash and byte count the
 * loader reports is compared with the script's.
 */
static void
check_ok(const char *version)
{
    long                        pl;
    size_t                      i, l;
    json_t                     *chunk;
    mx_buf_t                    b = MX_BUF_INIT;
    mx_err_t                    e;
    mx_snapshot_t              *snap;
    mx_snapshot_err_t           err;
    const mx_snapshot_event_t  *x;
    const snapshot_fixture_t   *f;

    f = fixture(version);

    if (parse_text(f->doc, &snap, &err) != 0) {
        fail_msg("v%s: %s: %s", version, err.where, err.reason);
    }

    assert_ptr_equal(snap->rv, mx_room_version(version, strlen(version)));
    assert_string_equal(snap->room_id, f->room_id);
    assert_string_equal(snap->create_event_id, f->create_id);
    assert_int_equal(snap->state_events, 5);
    assert_int_equal(snap->member_events, 2);
    assert_int_equal(snap->members, 2);
    assert_int_equal(snap->auth_chain, 4);
    assert_int_equal(snap->nevents, 5);
    assert_int_equal(snap->nextrem, 1);
    assert_int_equal(snap->max_depth, 6);
    assert_string_equal(snap->extrem[0].id, f->msg_id);
    assert_int_equal(snap->naliases, 1);
    assert_string_equal(snap->aliases[0], "#room:example.org");

    /* the extremity's reference hash, standard unpadded base64 */
    assert_string_equal(snap->extrem[0].sha256, f->msg_sha256);

    /* the lists hold canonical PDUs and chunks parse when bracketed */

    assert_int_equal(snap->lists[MX_SNAPSHOT_STATE_NM].n, 3);
    assert_int_equal(snap->lists[MX_SNAPSHOT_STATE_M].n, 2);
    assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH].n, 4);

    /*
     * No name, no alias: the heroes are alice and bob, so the partial
     * state is all of the state and its auth chain is empty.
     */
    assert_false(snap->named);
    assert_int_equal(snap->nheroes, 2);
    assert_string_equal(snap->events[snap->heroes[0]].user,
                        "@alice:example.org");
    assert_string_equal(snap->events[snap->heroes[1]].user,
                        "@bob:b.example.org");
    assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH_NM].n, 0);
    assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH_NM].nchunks, 0);

    for (i = 0; i < snap->nevents; i++) {
        assert_true(snap->events[i].partial);
        assert_false(snap->events[i].in_auth_nm);
    }

    for (l = 0; l < MX_SNAPSHOT_AUTH_NM; l++) {
        assert_int_equal(snap->lists[l].nchunks, 1);

        mx_buf_reset(&b);
        assert_int_equal(mx_buf_append_byte(&b, '['), 0);
        assert_int_equal(mx_snapshot_chunk(snap, l, 0, &b), 0);
        assert_int_equal(mx_buf_append_byte(&b, ']'), 0);

        chunk = mx_json_parse(b.data, b.len, MX_JSON_STRICT, &e);
        assert_non_null(chunk);
        assert_int_equal(json_array_size(chunk), snap->lists[l].n);
        json_decref(chunk);
    }

    x = mx_snapshot_list_event(snap, MX_SNAPSHOT_STATE_M, 1);
    assert_string_equal(x->id, f->bob_id);
    assert_string_equal(x->state_key,
                        "[\"m.room.member\",\"@bob:b.example.org\"]");
    assert_string_equal(x->user, "@bob:b.example.org");
    assert_string_equal(x->membership, "join");
    assert_true(x->in_state && !x->in_auth && x->member);

    pl = mx_snapshot_find(snap, f->pl_id);
    assert_true(pl >= 0);
    x = &snap->events[pl];
    assert_true(x->in_state && x->in_auth && !x->member);
    assert_string_equal(x->state_key, "[\"m.room.power_levels\",\"\"]");
    assert_int_equal(mx_snapshot_find(snap, "$nope"), -1);

    /* bytes: every PDU of the state and of the auth chain, as the script
     * counted them */
    assert_int_equal(snap->bytes, f->bytes);

    mx_buf_free(&b);
    mx_snapshot_free(snap);
}


/* The fixtures are the rooms room_build() makes with the core. */
static void
test_fixtures_are_room_build(void **state)
{
    size_t                     i;
    char                      *text;
    json_t                    *want;
    room_t                     r;
    json_error_t               e;
    const snapshot_fixture_t  *f;

    for (i = 0; i < sizeof(snapshot_fixtures) / sizeof(snapshot_fixtures[0]);
         i++)
    {
        f = &snapshot_fixtures[i];
        room_build(&r, f->version);

        want = json_loads(f->doc, 0, &e);
        assert_non_null(want);

        if (!json_equal(want, r.doc)) {
            text = json_dumps(r.doc, JSON_COMPACT | JSON_SORT_KEYS);
            fail_msg("v%s: room_build() made %s", f->version, text);
        }

        json_decref(want);
        room_free(&r);
    }

}


static void
test_ok_v10(void **state)
{
    check_ok("10");
}


static void
test_ok_v1(void **state)
{
    check_ok("1");
}


static void
test_ok_v12(void **state)
{
    check_ok("12");
}


static void
test_ok_every_version(void **state)
{
    size_t                    i, n;
    const mx_room_version_t  *rv;

    rv = mx_room_versions(&n);

    for (i = 0; i < n; i++) {
        check_ok(rv[i].id);
    }
}


static void
test_v1_event_id_is_the_field(void **state)
{
    room_t              r;
    mx_snapshot_t      *snap;
    mx_snapshot_err_t   err;

    room_build(&r, "1");

    assert_int_equal(parse(&r, &snap, &err), 0);
    assert_string_equal(snap->create_event_id, "$ev0:example.org");
    assert_string_equal(snap->extrem[0].id, "$ev5:example.org");
    assert_true(mx_snapshot_find(snap, "$ev4:example.org") >= 0);

    mx_snapshot_free(snap);
    room_free(&r);
}


static void
test_reject_bad_json(void **state)
{
    mx_snapshot_t      *snap;
    mx_snapshot_err_t   err;

    assert_int_equal(parse_text("{\"room_version\": \"10\", \"state\": [",
                                &snap, &err), -1);
    expect_error(&err, "document", "unexpected end of input");

    assert_int_equal(parse_text("{\"room_version\": \"10\",\n \"state\": "
                                "[{\"a\": 1]}, \"auth_chain\": [], "
                                "\"forward_extremities\": []}", &snap, &err),
                     -1);
    expect_error(&err, "state[0]", "invalid JSON");

    assert_int_equal(parse_text("{\"room_version\": \"10\",\n \"state\": "
                                "[ , ], \"auth_chain\": [], "
                                "\"forward_extremities\": []}", &snap, &err),
                     -1);
    expect_error(&err, "state[0]", "invalid JSON at line 2 column 13: "
                 "unexpected character");

    assert_int_equal(parse_text("[]", &snap, &err), -1);
    expect_error(&err, "document", "not a JSON object");

    assert_int_equal(parse_text("{} x", &snap, &err), -1);
    expect_error(&err, "document", "data after the document");

    assert_int_equal(parse_text("{}", &snap, &err), -1);
    expect_error(&err, "room_version", "missing");

    assert_int_equal(parse_text("{\"room_version\": \"10\", \"state\": [],"
                                "\"state\": []}", &snap, &err), -1);
    expect_error(&err, "document", "duplicate key \"state\"");
}


/* An unknown key whose value is not JSON: the error names the key, which
 * was read after its string was freed (found by t/fuzz fuzz_snapshot with
 * {"foo":tru}). */
static void
test_reject_unknown_key_bad_value(void **state)
{
    mx_snapshot_t      *snap;
    mx_snapshot_err_t   err;

    assert_int_equal(parse_text("{\"foo\":tru}", &snap, &err), -1);
    assert_string_equal(err.where, "document");
    assert_non_null(strstr(err.reason, "key \"foo\": invalid JSON"));

    assert_int_equal(parse_text("{\"room_version\": \"10\", "
                                "\"x-some-extension\": [1,]}", &snap, &err),
                     -1);
    assert_string_equal(err.where, "document");
    assert_non_null(strstr(err.reason,
                           "key \"x-some-extension\": invalid JSON"));
}


static void
test_reject_unknown_room_version(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_object_set_new(r.doc, "room_version", json_string("99"));
    expect_reject(&r, "room_version", "unknown room version \"99\"");
    room_free(&r);
}


static void
test_reject_float_v10(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_object_set_new(json_object_get(r.ev[BOB], "content"), "x",
                        json_real(1.5));
    expect_reject(&r, "state[4]", "float not allowed at content.x");
    room_free(&r);

    /* v5 is not strict, but canonical JSON has no floats at all */

    room_build(&r, "5");
    json_object_set_new(json_object_get(r.ev[BOB], "content"), "x",
                        json_real(1.5));
    expect_reject(&r, "state[4]", "float");
    room_free(&r);
}


static void
test_duplicate_keys_strict_only(void **state)
{
    char               *text, *p, *out;
    room_t              r;
    mx_snapshot_t      *snap;
    mx_snapshot_err_t   err;
    static const char   key[] = "\"type\":\"m.room.join_rules\"";

    room_build(&r, "5");
    text = json_dumps(r.doc, JSON_COMPACT);
    p = strstr(text, key);
    assert_non_null(p);

    out = malloc(strlen(text) + sizeof(key) + 2);
    memcpy(out, text, (size_t) (p - text));
    sprintf(out + (p - text), "%s,%s", key, p);

    /* v5: the last value wins, as Python's json does */
    assert_int_equal(parse_text(out, &snap, &err), 0);
    mx_snapshot_free(snap);

    /* the same text claiming v9 is judged strictly */
    memcpy(strstr(out, "\"room_version\":\"5\""), "\"room_version\":\"9\"",
           18);
    assert_int_equal(parse_text(out, &snap, &err), -1);
    expect_error(&err, "state[2]", "duplicate key");

    free(out);
    free(text);
    room_free(&r);
}


static void
test_reject_content_hash(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_object_set_new(json_object_get(r.ev[BOB], "content"), "displayname",
                        json_string("Mallory"));
    expect_reject(&r, "state[4] ($", "content hash mismatch");
    room_free(&r);
}


static void
test_reject_dangling_auth_event(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_array_append_new(json_object_get(r.ev[BOB], "auth_events"),
                          json_string("$missing"));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4] ($",
                  "auth event $missing is in neither state nor auth_chain");
    room_free(&r);

    /* the v1 pair form */

    room_build(&r, "1");
    json_array_append_new(json_object_get(r.ev[BOB], "auth_events"),
                          json_pack("[s{ss}]", "$gone:example.org",
                                    "sha256", "AAAA"));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4] ($ev4:example.org)",
                  "auth event $gone:example.org is in neither");
    room_free(&r);
}


static void
test_reject_wrong_reference_shape(void **state)
{
    room_t  r;

    room_build(&r, "2");
    json_array_append_new(json_object_get(r.ev[BOB], "auth_events"),
                          json_string("$ev0:example.org"));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "auth_events[3] is not an [event ID");
    room_free(&r);
}


static void
test_reject_duplicate_state(void **state)
{
    json_t  *again;
    room_t   r;

    room_build(&r, "10");
    again = json_deep_copy(r.ev[BOB]);
    json_object_set_new(json_object_get(again, "content"), "displayname",
                        json_string("Bobby"));
    rehash(&r, again);
    json_array_append_new(list(&r, "state"), again);
    expect_reject(&r, "state[5]", "duplicate state [\"m.room.member\","
                  "\"@bob:b.example.org\"]: also given by state[4]");
    room_free(&r);

    /* the same event twice */

    room_build(&r, "10");
    json_array_append(list(&r, "state"), r.ev[JR]);
    expect_reject(&r, "state[5]", "listed twice in state");
    room_free(&r);
}


static void
test_reject_missing_create(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_array_remove(list(&r, "state"), 0);
    expect_reject(&r, "state", "no m.room.create event");
    room_free(&r);
}


static void
test_reject_room_id_mismatch(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_object_set_new(r.ev[BOB], "room_id",
                        json_string("!other:example.org"));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "room ID \"!other:example.org\" differs");
    room_free(&r);

    /* v12: the room ID derived from the create event */

    room_build(&r, "12");
    json_object_set_new(r.ev[JR], "room_id",
                        json_string("!AAAAAAAAAAAAAAAAAAAAA"
                                    "AAAAAAAAAAAAAAAAAAAAAA"));
    rehash(&r, r.ev[JR]);
    expect_reject(&r, "state[2]", "differs");
    room_free(&r);
}


static void
test_reject_missing_fields(void **state)
{
    size_t        i;
    room_t        r;
    const char   *fields[] = { "type", "sender", "content", "depth",
                               "origin_server_ts", "hashes", "signatures",
                               "prev_events", "auth_events", "room_id" };

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        room_build(&r, "10");
        json_object_del(r.ev[JR], fields[i]);

        if (strcmp(fields[i], "hashes") != 0) {
            rehash(&r, r.ev[JR]);
        }

        expect_reject(&r, "state[2]", fields[i]);
        room_free(&r);
    }

    room_build(&r, "10");
    json_object_del(r.ev[PL], "state_key");
    rehash(&r, r.ev[PL]);
    expect_reject(&r, "state[1]", "state event without a state_key");
    room_free(&r);

    room_build(&r, "1");
    json_object_del(r.ev[JR], "event_id");
    expect_reject(&r, "state[2]", "event has no event_id");
    room_free(&r);

    room_build(&r, "10");
    json_object_del(json_object_get(r.ev[BOB], "content"), "membership");
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "content.membership");
    room_free(&r);

    room_build(&r, "10");
    json_object_set_new(r.ev[BOB], "depth", json_string("5"));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "non-integer \"depth\"");
    room_free(&r);
}


static void
test_reject_v12_create_with_room_id(void **state)
{
    room_t  r;

    room_build(&r, "12");
    json_object_set_new(r.ev[CREATE], "room_id", json_string(r.room_id));
    rehash(&r, r.ev[CREATE]);
    expect_reject(&r, "state[0]", "must not have a room_id");
    room_free(&r);
}


static void
test_reject_v12_create_in_auth_events(void **state)
{
    room_t  r;

    room_build(&r, "12");
    json_array_append_new(json_object_get(r.ev[BOB], "auth_events"),
                          json_string(event_id(&r, r.ev[CREATE])));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "auth_events lists the create event");
    room_free(&r);
}


static void
test_reject_oversize_ids(void **state)
{
    char    big[300];
    room_t  r;

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[0] = '$';
    memcpy(big + 280, ":example.org", 13);

    room_build(&r, "1");
    json_object_set_new(r.ev[BOB], "event_id", json_string(big));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "invalid event_id");
    room_free(&r);

    big[0] = '@';
    room_build(&r, "10");
    json_object_set_new(r.ev[BOB], "state_key", json_string(big));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "state_key is longer than 255 bytes");
    room_free(&r);

    room_build(&r, "10");
    json_object_set_new(r.ev[BOB], "sender", json_string(big));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "sender is longer than 255 bytes");
    room_free(&r);

    big[0] = '!';
    room_build(&r, "10");
    json_object_set_new(r.ev[BOB], "room_id", json_string(big));
    rehash(&r, r.ev[BOB]);
    expect_reject(&r, "state[4]", "room_id is longer than 255 bytes");
    room_free(&r);

    big[0] = '#';
    room_build(&r, "10");
    json_array_append_new(list(&r, "aliases"), json_string(big));
    expect_reject(&r, "aliases[1]", "longer than 255 bytes");
    room_free(&r);
}


static void
test_reject_bad_alias(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_array_append_new(list(&r, "aliases"), json_string("room:example"));
    expect_reject(&r, "aliases[1]", "invalid room alias \"room:example\"");
    room_free(&r);
}


static void
test_reject_extremities(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_array_clear(list(&r, "forward_extremities"));
    expect_reject(&r, "forward_extremities", "no forward extremity");
    room_free(&r);

    room_build(&r, "10");
    json_array_append(list(&r, "forward_extremities"), r.ev[MSG]);
    expect_reject(&r, "forward_extremities[1]", "listed twice");
    room_free(&r);

    room_build(&r, "10");
    json_array_set_new(list(&r, "forward_extremities"), 0,
                       json_string("$abc"));
    expect_reject(&r, "forward_extremities[0]", "not a JSON object");
    room_free(&r);
}


static void
test_reject_duplicate_in_auth_chain(void **state)
{
    room_t  r;

    room_build(&r, "10");
    json_array_append(list(&r, "auth_chain"), r.ev[PL]);
    expect_reject(&r, "auth_chain[4]", "listed twice in auth_chain");
    room_free(&r);
}


static void
test_reject_v1_same_id_different_event(void **state)
{
    json_t  *other;
    room_t   r;

    room_build(&r, "1");
    other = json_deep_copy(r.ev[PL]);
    json_object_set_new(json_object_get(other, "content"), "ban",
                        json_integer(10));
    rehash(&r, other);
    json_array_set_new(list(&r, "auth_chain"), 2, other);
    expect_reject(&r, "auth_chain[2] ($ev2:example.org)",
                  "differs from the event with the same ID in state[1]");
    room_free(&r);
}


/* 600 members of ~1 KiB: three chunks of state_m, each <= 64 KiB. */

static void
test_chunks(void **state)
{
    char                 user[64], pad[900];
    size_t               i, c, total;
    json_t              *content, *auth[4], *ev;
    mx_buf_t             b = MX_BUF_INIT;
    room_t               r;
    mx_snapshot_t       *snap;
    mx_snapshot_err_t    err;
    mx_snapshot_list_t  *l;

    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';

    room_build(&r, "10");

    auth[0] = r.ev[CREATE];
    auth[1] = r.ev[PL];
    auth[2] = r.ev[JR];
    auth[3] = NULL;

    for (i = 0; i < 600; i++) {
        snprintf(user, sizeof(user), "@u%zu:s%zu.example.org", i, i % 7);
        content = json_pack("{ss ss}", "membership", i % 10 ? "join" : "leave",
                            "displayname", pad);
        ev = event(&r, "m.room.member", user, user, content, 5, auth,
                   r.ev[JR]);
        json_array_append_new(list(&r, "state"), ev);
    }

    if (parse(&r, &snap, &err) != 0) {
        fail_msg("%s: %s", err.where, err.reason);
    }

    assert_int_equal(snap->member_events, 602);
    assert_int_equal(snap->members, 2 + 540);

    l = &snap->lists[MX_SNAPSHOT_STATE_M];
    assert_true(l->nchunks >= 10);

    total = 0;

    for (c = 0; c < l->nchunks; c++) {
        assert_true(l->chunks[c].bytes <= MX_SNAPSHOT_CHUNK_MAX);

        mx_buf_reset(&b);
        assert_int_equal(mx_snapshot_chunk(snap, MX_SNAPSHOT_STATE_M, c, &b),
                         0);
        assert_int_equal(b.len, l->chunks[c].bytes);

        /* the next PDU did not fit */
        if (c + 1 < l->nchunks) {
            assert_true(l->chunks[c].bytes + 1
                        + mx_snapshot_list_event(snap, MX_SNAPSHOT_STATE_M,
                                                 l->chunks[c + 1].first)
                          ->pdu_len
                        > MX_SNAPSHOT_CHUNK_MAX);
        }

        total += l->chunks[c].count;
    }

    assert_int_equal(total, 602);

    mx_buf_free(&b);
    mx_snapshot_free(snap);
    room_free(&r);
}


/*
 * Every PDU of every list is found by mx_snapshot_locate: its bytes in
 * the chunk are the event's canonical PDU, framed by the chunk's ends or
 * commas; a member event parses as that member's.
 */

static void
check_locate(mx_snapshot_t *snap)
{
    char                        want[300];
    size_t                      i, l, c, off, start;
    json_t                     *ev;
    mx_buf_t                    b = MX_BUF_INIT;
    mx_err_t                    e;
    const mx_snapshot_event_t  *x;

    for (l = 0; l < MX_SNAPSHOT_NLISTS; l++) {
        start = 0;

        for (i = 0; i < snap->lists[l].n; i++) {
            x = mx_snapshot_list_event(snap, l, i);
            mx_snapshot_locate(snap, l, i, &c, &off);

            assert_true(c < snap->lists[l].nchunks);

            /* entries run in order: the next chunk starts at offset 0 */
            if (i > 0 && c != start) {
                assert_int_equal(c, start + 1);
                assert_int_equal(off, 0);
                start = c;
            }

            mx_buf_reset(&b);
            assert_int_equal(mx_snapshot_chunk(snap, l, c, &b), 0);

            assert_true(off + x->pdu_len <= b.len);
            assert_true(off == 0 || b.data[off - 1] == ',');
            assert_true(off + x->pdu_len == b.len
                        || b.data[off + x->pdu_len] == ',');
            assert_int_equal(b.data[off], '{');
            assert_memory_equal(b.data + off, x->pdu, x->pdu_len);

            if (l != MX_SNAPSHOT_STATE_M) {
                continue;
            }

            ev = mx_json_parse(b.data + off, x->pdu_len, MX_JSON_STRICT,
                               &e);
            assert_non_null(ev);
            snprintf(want, sizeof(want), "%s",
                     json_string_value(json_object_get(ev, "state_key")));
            assert_string_equal(want, x->user);
            assert_string_equal(json_string_value(json_object_get(ev,
                                                                  "type")),
                                "m.room.member");
            json_decref(ev);
        }
    }

    mx_buf_free(&b);
}


static void
test_locate_small(void **state)
{
    size_t              c, off;
    room_t              r;
    mx_snapshot_t      *snap;
    mx_snapshot_err_t   err;

    room_build(&r, "1");
    assert_int_equal(parse(&r, &snap, &err), 0);

    check_locate(snap);

    /* state_m is [alice, bob]: bob right after alice and the comma */
    mx_snapshot_locate(snap, MX_SNAPSHOT_STATE_M, 0, &c, &off);
    assert_int_equal(c, 0);
    assert_int_equal(off, 0);
    mx_snapshot_locate(snap, MX_SNAPSHOT_STATE_M, 1, &c, &off);
    assert_int_equal(c, 0);
    assert_int_equal(off,
                     mx_snapshot_list_event(snap, MX_SNAPSHOT_STATE_M, 0)
                     ->pdu_len + 1);

    mx_snapshot_free(snap);
    room_free(&r);
}


/* Members of ~1 KiB over many chunks: entries at the chunk boundaries. */

static void
test_locate_many_chunks(void **state)
{
    char                 user[64], pad[900];
    size_t               i, c, off, last;
    json_t              *content, *auth[4], *ev;
    room_t               r;
    mx_snapshot_t       *snap;
    mx_snapshot_err_t    err;
    mx_snapshot_list_t  *l;

    room_build(&r, "10");

    auth[0] = r.ev[CREATE];
    auth[1] = r.ev[PL];
    auth[2] = r.ev[JR];
    auth[3] = NULL;

    for (i = 0; i < 300; i++) {
        /* sizes that vary, so that chunks end at different offsets */
        memset(pad, 'x', sizeof(pad));
        pad[300 + (i * 37) % 590] = '\0';

        snprintf(user, sizeof(user), "@m%zu:example.org", i);
        content = json_pack("{ss ss}", "membership", "join", "displayname",
                            pad);
        ev = event(&r, "m.room.member", user, user, content, 6, auth,
                   r.ev[JR]);
        json_array_append_new(list(&r, "state"), ev);
    }

    if (parse(&r, &snap, &err) != 0) {
        fail_msg("%s: %s", err.where, err.reason);
    }

    l = &snap->lists[MX_SNAPSHOT_STATE_M];
    assert_true(l->nchunks >= 3);

    check_locate(snap);

    /* the first of each chunk at 0, the last ends the chunk */

    for (c = 0; c < l->nchunks; c++) {
        mx_snapshot_locate(snap, MX_SNAPSHOT_STATE_M, l->chunks[c].first,
                           &i, &off);
        assert_int_equal(i, c);
        assert_int_equal(off, 0);

        last = l->chunks[c].first + l->chunks[c].count - 1;
        mx_snapshot_locate(snap, MX_SNAPSHOT_STATE_M, last, &i, &off);
        assert_int_equal(i, c);
        assert_int_equal(off + mx_snapshot_list_event(snap,
                                                      MX_SNAPSHOT_STATE_M,
                                                      last)->pdu_len,
                         l->chunks[c].bytes);
    }

    mx_snapshot_free(snap);
    room_free(&r);
}


/* The event with this JSON's ID: it must be in the model. */
static const mx_snapshot_event_t *
model_event(room_t *r, mx_snapshot_t *snap, json_t *ev)
{
    long  i;

    i = mx_snapshot_find(snap, event_id(r, ev));
    assert_true(i >= 0);

    return &snap->events[i];
}


static int
id_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/*
 * Heroes: join or invite members by depth then ID, at most 6; the partial
 * state's auth chain reaches a non-hero member's join and, through it,
 * an invite that is only in the auth chain.
 */
static void
test_heroes_and_partial(void **state)
{
    char                *tie_ids[3];
    size_t               i, k, n;
    json_t              *auth[6], *u[8], *invite, *cjoin, *topic, *tie[3];
    room_t               r;
    mx_snapshot_t       *snap;
    mx_snapshot_err_t    err;
    const mx_snapshot_event_t  *x;

    static const struct {
        const char  *membership;
        int          depth;
    } m[8] = {
        { "join", 9 }, { "invite", 7 }, { "join", 7 }, { "join", 8 },
        { "leave", 3 }, { "knock", 3 }, { "ban", 3 }, { "join", 7 }
    };

    room_build(&r, "10");

    auth[0] = r.ev[CREATE];
    auth[1] = r.ev[PL];
    auth[2] = r.ev[JR];
    auth[3] = NULL;

    for (i = 0; i < 8; i++) {
        char  user[64];

        snprintf(user, sizeof(user), "@u%zu:example.org", i);
        u[i] = event(&r, "m.room.member", user, user,
                     json_pack("{ss}", "membership", m[i].membership),
                     m[i].depth, auth, r.ev[JR]);
    }

    /* the three at depth 7 go into state in descending ID order */

    tie[0] = u[1];
    tie[1] = u[2];
    tie[2] = u[7];

    for (i = 0; i < 3; i++) {
        tie_ids[i] = strdup(event_id(&r, tie[i]));
    }

    qsort(tie_ids, 3, sizeof(char *), id_cmp);

    for (k = 3; k-- > 0; ) {
        for (i = 0; i < 8; i++) {
            if (strcmp(event_id(&r, u[i]), tie_ids[k]) == 0) {
                json_array_append(list(&r, "state"), u[i]);
            }
        }
    }

    for (i = 0; i < 8; i++) {
        if (m[i].depth != 7) {
            json_array_append(list(&r, "state"), u[i]);
        }
    }

    /* carol: invited (auth chain only), joined, sets the topic */

    auth[3] = r.ev[ALICE];
    auth[4] = NULL;
    invite = event(&r, "m.room.member", "@carol:example.org",
                   "@alice:example.org",
                   json_pack("{ss}", "membership", "invite"), 10, auth,
                   r.ev[JR]);

    auth[3] = invite;
    cjoin = event(&r, "m.room.member", "@carol:example.org",
                  "@carol:example.org",
                  json_pack("{ss}", "membership", "join"), 40, auth,
                  invite);

    auth[2] = cjoin;
    auth[3] = NULL;
    topic = event(&r, "m.room.topic", "", "@carol:example.org",
                  json_pack("{ss}", "topic", "hi"), 41, auth, cjoin);

    json_array_append(list(&r, "state"), cjoin);
    json_array_append(list(&r, "state"), topic);
    json_array_append(list(&r, "auth_chain"), invite);
    json_array_append(list(&r, "auth_chain"), cjoin);

    if (parse(&r, &snap, &err) != 0) {
        fail_msg("%s: %s", err.where, err.reason);
    }

    assert_false(snap->named);
    assert_int_equal(snap->nheroes, 6);

    /* alice (2), bob (5), the three at 7 by ID, u3 (8); not u0 (9) */

    assert_string_equal(snap->events[snap->heroes[0]].user,
                        "@alice:example.org");
    assert_string_equal(snap->events[snap->heroes[1]].user,
                        "@bob:b.example.org");

    for (i = 0; i < 3; i++) {
        assert_string_equal(snap->events[snap->heroes[2 + i]].id,
                            tie_ids[i]);
    }

    assert_string_equal(snap->events[snap->heroes[5]].user,
                        "@u3:example.org");

    /* partial: create, power levels, join rules, topic, the heroes */

    n = 0;

    for (i = 0; i < snap->nevents; i++) {
        n += snap->events[i].partial;
        assert_false(snap->events[i].partial && snap->events[i].in_auth_nm);
    }

    assert_int_equal(n, 4 + 6);
    assert_true(model_event(&r, snap, topic)->partial);
    assert_true(model_event(&r, snap, r.ev[PL])->partial);
    assert_false(model_event(&r, snap, u[0])->partial);
    assert_false(model_event(&r, snap, u[4])->partial);
    assert_false(model_event(&r, snap, cjoin)->partial);

    /* its auth chain: carol's join (the topic's) and her invite */

    assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH_NM].n, 2);
    assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH_NM].nchunks, 1);
    assert_true(model_event(&r, snap, cjoin)->in_auth_nm);
    assert_true(model_event(&r, snap, invite)->in_auth_nm);

    for (i = 0; i < 2; i++) {
        x = mx_snapshot_list_event(snap, MX_SNAPSHOT_AUTH_NM, i);
        assert_true(x->in_auth_nm);
    }

    /* not part of what a full answer weighs */

    for (i = 0, n = 0; i < snap->nevents; i++) {
        n += snap->events[i].pdu_len
             * (snap->events[i].in_state + snap->events[i].in_auth);
    }

    assert_int_equal(snap->bytes, n);

    check_locate(snap);

    for (i = 0; i < 3; i++) {
        free(tie_ids[i]);
    }

    for (i = 0; i < 8; i++) {
        json_decref(u[i]);
    }

    json_decref(invite);
    json_decref(cjoin);
    json_decref(topic);
    mx_snapshot_free(snap);
    room_free(&r);
}


/* No one joined or invited: the heroes are those who left or were banned. */

static void
test_heroes_leave_ban(void **state)
{
    json_t              *auth[5], *leave, *ban, *knock;
    room_t               r;
    mx_snapshot_t       *snap;
    mx_snapshot_err_t    err;

    room_build(&r, "12");

    auth[0] = r.ev[CREATE];
    auth[1] = r.ev[PL];
    auth[2] = r.ev[ALICE];
    auth[3] = NULL;
    leave = event(&r, "m.room.member", "@alice:example.org",
                  "@alice:example.org",
                  json_pack("{ss}", "membership", "leave"), 9, auth,
                  r.ev[BOB]);

    auth[3] = r.ev[BOB];
    auth[4] = NULL;
    ban = event(&r, "m.room.member", "@bob:b.example.org",
                "@alice:example.org", json_pack("{ss}", "membership", "ban"),
                8, auth, r.ev[BOB]);

    auth[2] = r.ev[JR];
    auth[3] = NULL;
    knock = event(&r, "m.room.member", "@k:example.org", "@k:example.org",
                  json_pack("{ss}", "membership", "knock"), 1, auth,
                  r.ev[JR]);

    /* state: the leave and the ban replace alice's and bob's joins */

    json_array_set(list(&r, "state"), 3, leave);
    json_array_set(list(&r, "state"), 4, ban);
    json_array_append(list(&r, "state"), knock);
    json_array_append(list(&r, "auth_chain"), r.ev[BOB]);

    if (parse(&r, &snap, &err) != 0) {
        fail_msg("%s: %s", err.where, err.reason);
    }

    assert_false(snap->named);
    assert_int_equal(snap->nheroes, 2);
    assert_ptr_equal(&snap->events[snap->heroes[0]],
                     model_event(&r, snap, ban));
    assert_ptr_equal(&snap->events[snap->heroes[1]],
                     model_event(&r, snap, leave));

    /* the joins they replaced are reached through their auth events */

    assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH_NM].n, 2);
    assert_true(model_event(&r, snap, r.ev[ALICE])->in_auth_nm);
    assert_true(model_event(&r, snap, r.ev[BOB])->in_auth_nm);
    assert_false(model_event(&r, snap, knock)->partial);
    assert_false(model_event(&r, snap, knock)->in_auth_nm);

    check_locate(snap);

    json_decref(leave);
    json_decref(ban);
    json_decref(knock);
    mx_snapshot_free(snap);
    room_free(&r);
}


/*
 * A name or a canonical alias (state key ""): no heroes, the partial
 * state is the non-member state, and alice's join (the sender of power
 * levels, join rules and name) is its auth chain.
 */
static void
check_named(const char *version, const char *type, const char *skey,
    int named)
{
    size_t               i, n;
    json_t              *auth[4], *ev;
    room_t               r;
    mx_snapshot_t       *snap;
    mx_snapshot_err_t    err;

    room_build(&r, version);

    auth[0] = r.ev[CREATE];
    auth[1] = r.ev[PL];
    auth[2] = r.ev[ALICE];
    auth[3] = NULL;
    ev = event(&r, type, skey, "@alice:example.org",
               json_pack("{ss}", "name", "x"), 7, auth, r.ev[JR]);
    json_array_append_new(list(&r, "state"), ev);

    if (parse(&r, &snap, &err) != 0) {
        fail_msg("%s: %s", err.where, err.reason);
    }

    if (!named) {
        assert_false(snap->named);
        assert_int_equal(snap->nheroes, 2);
        assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH_NM].n, 0);
        goto done;
    }

    assert_true(snap->named);
    assert_int_equal(snap->nheroes, 0);

    for (i = 0, n = 0; i < snap->nevents; i++) {
        n += snap->events[i].partial;
        assert_int_equal(snap->events[i].partial,
                         snap->events[i].in_state
                         && !snap->events[i].member);
    }

    assert_int_equal(n, 4);
    assert_int_equal(snap->lists[MX_SNAPSHOT_AUTH_NM].n, 1);
    assert_ptr_equal(mx_snapshot_list_event(snap, MX_SNAPSHOT_AUTH_NM, 0),
                     model_event(&r, snap, r.ev[ALICE]));
    assert_false(model_event(&r, snap, r.ev[BOB])->in_auth_nm);

    check_locate(snap);

done:

    mx_snapshot_free(snap);
    room_free(&r);
}


static void
test_named_no_heroes(void **state)
{
    check_named("10", "m.room.name", "", 1);
    check_named("1", "m.room.canonical_alias", "", 1);
    check_named("12", "m.room.name", "", 1);

    /* another state key is not the room's name */
    check_named("10", "m.room.name", "x", 0);
}


/* The auth_events as event indices, v1 pairs and v12's implied create. */

static void
test_auth_refs(void **state)
{
    size_t                      i;
    room_t                      r;
    mx_snapshot_t              *snap;
    mx_snapshot_err_t           err;
    const mx_snapshot_event_t  *x;
    static const char          *versions[] = { "1", "10", "12" };

    for (i = 0; i < 3; i++) {
        room_build(&r, versions[i]);
        assert_int_equal(parse(&r, &snap, &err), 0);

        /* bob: create (not in v12), power levels, join rules */
        x = model_event(&r, snap, r.ev[BOB]);

        if (r.rv->create_in_auth_events) {
            assert_int_equal(x->auth_n, 3);
            assert_ptr_equal(&snap->events[snap->auth_refs[x->auth_off]],
                             model_event(&r, snap, r.ev[CREATE]));
            x = &snap->events[snap->auth_refs[x->auth_off + 1]];

        } else {
            assert_int_equal(x->auth_n, 2);
            x = &snap->events[snap->auth_refs[x->auth_off]];
        }

        assert_ptr_equal(x, model_event(&r, snap, r.ev[PL]));
        x = model_event(&r, snap, r.ev[BOB]);
        assert_ptr_equal(&snap->events[snap->auth_refs[x->auth_off
                                                       + x->auth_n - 1]],
                         model_event(&r, snap, r.ev[JR]));

        assert_int_equal(model_event(&r, snap, r.ev[CREATE])->auth_n, 0);

        mx_snapshot_free(snap);
        room_free(&r);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_fixtures_are_room_build),
        cmocka_unit_test(test_ok_v10),
        cmocka_unit_test(test_ok_v1),
        cmocka_unit_test(test_ok_v12),
        cmocka_unit_test(test_ok_every_version),
        cmocka_unit_test(test_v1_event_id_is_the_field),
        cmocka_unit_test(test_reject_bad_json),
        cmocka_unit_test(test_reject_unknown_key_bad_value),
        cmocka_unit_test(test_reject_unknown_room_version),
        cmocka_unit_test(test_reject_float_v10),
        cmocka_unit_test(test_duplicate_keys_strict_only),
        cmocka_unit_test(test_reject_content_hash),
        cmocka_unit_test(test_reject_dangling_auth_event),
        cmocka_unit_test(test_reject_wrong_reference_shape),
        cmocka_unit_test(test_reject_duplicate_state),
        cmocka_unit_test(test_reject_missing_create),
        cmocka_unit_test(test_reject_room_id_mismatch),
        cmocka_unit_test(test_reject_missing_fields),
        cmocka_unit_test(test_reject_v12_create_with_room_id),
        cmocka_unit_test(test_reject_v12_create_in_auth_events),
        cmocka_unit_test(test_reject_oversize_ids),
        cmocka_unit_test(test_reject_bad_alias),
        cmocka_unit_test(test_reject_extremities),
        cmocka_unit_test(test_reject_duplicate_in_auth_chain),
        cmocka_unit_test(test_reject_v1_same_id_different_event),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_locate_small),
        cmocka_unit_test(test_locate_many_chunks),
        cmocka_unit_test(test_heroes_and_partial),
        cmocka_unit_test(test_heroes_leave_ban),
        cmocka_unit_test(test_named_no_heroes),
        cmocka_unit_test(test_auth_refs),
    };

    return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
