/*
 * Copyright (C) nginx-matrix-join authors.
 * A received join PDU (send_join): the body's JSON and PDU format per
 * room version (reference §5.1, §7), the join checks in the order and
 * with the statuses of §2.2's "what the tests expect" table, and the
 * signers and signature mapping (sytest: 403 M_FORBIDDEN).
 *
 * The joins are built here and signed with mx_event_sign and the spec's
 * §8 key, as the joining server "remote.example"; the resident is
 * "edge.example".
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_event.h"
#include "mx_json.h"
#include "mx_pdu.h"
#include "spec_vectors.h"


#define ORIGIN   "remote.example"
#define OTHER    "other.example"
#define SERVER   "edge.example"
#define JOINER   "@bob:" ORIGIN
#define ROOM     "!room:" SERVER
#define ROOM12   "!_k1ioeTbFXPfHPo6nPxwPAneNWRpzFAjssCI3Cprj2U"
#define REF_V3   "$CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"
#define REF_V4   "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
#define REF_HASH "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
#define V1_ID    "$join1:" ORIGIN
#define TS       1700000000000LL


/* what the test sends as the path and the X-Matrix origin */
typedef struct {
    const char  *room_id;       /* NULL: the event's room_id */
    const char  *event_id;      /* NULL: the event's own ID */
    const char  *origin;        /* NULL: ORIGIN */
} path_t;


static mx_signing_key_t  key;


static int
setup(void **state)
{
    mx_err_t  err;

    if (mx_crypto_init() != 0
        || mx_signing_key_from_seed(&key, SPEC_KEY_ID, spec_seed, &err) != 0)
    {
        return -1;
    }

    return 0;
}


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


/* The i-th event reference in the shape of room version v. */
static json_t *
ref(int v, int i)
{
    char  id[64];

    if (rv(v)->event_refs_with_hashes) {
        snprintf(id, sizeof(id), "$ev%d:%s", i, SERVER);
        return json_pack("[s,{s:s}]", id, "sha256", REF_HASH);
    }

    snprintf(id, sizeof(id), "%s",
             rv(v)->event_id_format == MX_EVENT_ID_HASH_STD ? REF_V3
                                                            : REF_V4);
    id[1] = 'A' + i % 26;

    return json_string(id);
}


static json_t *
refs(int v, int n)
{
    int      i;
    json_t  *list;

    list = json_array();
    assert_non_null(list);

    for (i = 0; i < n; i++) {
        assert_int_equal(json_array_append_new(list, ref(v, i)), 0);
    }

    return list;
}


/* A join of JOINER to the room as a make_join template gives it, not yet
 * signed. */
static json_t *
join_event(int v)
{
    json_t  *ev;

    ev = json_pack("{s:s, s:s, s:s, s:s, s:{s:s}, s:I, s:I, s:s, s:o, s:o}",
                   "type", "m.room.member",
                   "room_id", v == 12 ? ROOM12 : ROOM,
                   "sender", JOINER,
                   "state_key", JOINER,
                   "content", "membership", "join",
                   "depth", (json_int_t) 12,
                   "origin_server_ts", (json_int_t) TS,
                   "origin", ORIGIN,
                   "prev_events", refs(v, 1),
                   "auth_events", refs(v, v == 12 ? 2 : 3));
    assert_non_null(ev);

    if (rv(v)->event_id_format == MX_EVENT_ID_SERVER) {
        json_object_set_new(ev, "event_id", json_string(V1_ID));
    }

    return ev;
}


static void
sign_as(int v, json_t *ev, const char *server)
{
    mx_err_t  err;

    if (mx_event_sign(rv(v), ev, server, &key, &err) != 0) {
        fail_msg("cannot sign: %s", err.text);
    }
}


static json_t *
signed_join(int v)
{
    json_t  *ev;

    ev = join_event(v);
    sign_as(v, ev, ORIGIN);

    return ev;
}


static json_t *
content(json_t *ev)
{
    return json_object_get(ev, "content");
}


/* "@aaa...:server" of exactly len bytes */
static char *
user_of_len(size_t len, const char *server)
{
    char    *s;
    size_t   local;

    local = len - 2 - strlen(server);
    s = malloc(len + 1);
    assert_non_null(s);

    s[0] = '@';
    memset(s + 1, 'a', local);
    snprintf(s + 1 + local, len + 1 - 1 - local, ":%s", server);
    assert_int_equal(strlen(s), len);

    return s;
}


static void
expect(const mx_pdu_result_t *res, mx_pdu_e code, int status,
    const char *errcode, const char *part)
{
    if (res->code != code || res->status != status
        || (errcode == NULL) != (res->errcode == NULL)
        || (errcode != NULL && strcmp(errcode, res->errcode) != 0)
        || strstr(res->reason, part) == NULL)
    {
        fail_msg("got %d %d %s \"%s\", want %d %d %s with \"%s\"",
                 res->code, res->status,
                 res->errcode ? res->errcode : "-", res->reason,
                 code, status, errcode ? errcode : "-", part);
    }
}


/* mx_pdu_parse_join of body[0..len) must fail so. */
static void
expect_body(int v, const char *body, size_t len, mx_pdu_e code, int status,
    const char *errcode, const char *part)
{
    json_t           *pdu;
    mx_pdu_result_t   res;

    pdu = (json_t *) 1;

    assert_int_equal(mx_pdu_parse_join(rv(v), body, len, &pdu, &res), code);
    assert_null(pdu);
    expect(&res, code, status, errcode, part);
}


/* ev as a body must fail mx_pdu_parse_join so; ev is released. */
static void
expect_parse(int v, json_t *ev, mx_pdu_e code, int status,
    const char *errcode, const char *part)
{
    char  *body;

    body = json_dumps(ev, JSON_COMPACT);
    assert_non_null(body);

    expect_body(v, body, strlen(body), code, status, errcode, part);

    free(body);
    json_decref(ev);
}


/* ev as a body parses; returns the parsed PDU, ev is released. */
static json_t *
parse_ok(int v, json_t *ev)
{
    char             *body;
    json_t           *pdu;
    mx_pdu_result_t   res;

    body = json_dumps(ev, JSON_COMPACT);
    assert_non_null(body);

    if (mx_pdu_parse_join(rv(v), body, strlen(body), &pdu, &res)
        != MX_PDU_OK)
    {
        fail_msg("v%d: parse failed: %d %s: %s", v, res.status,
                 res.errcode, res.reason);
    }

    assert_non_null(pdu);
    expect(&res, MX_PDU_OK, 200, NULL, "");

    free(body);
    json_decref(ev);

    return pdu;
}


/* ev through parse and the join checks for path p (may be NULL); ev is
 * released. The event ID the checks exposed goes to id (may be NULL). */
static mx_pdu_e
shape(int v, json_t *ev, const path_t *p, mx_pdu_result_t *res,
    char id[MX_EVENT_ID_MAX])
{
    char         own[MX_EVENT_ID_MAX];
    json_t      *pdu;
    mx_err_t     err;
    mx_pdu_e     rc;
    const char  *room_id, *event_id, *origin;

    pdu = parse_ok(v, ev);

    room_id = (p && p->room_id)
              ? p->room_id
              : json_string_value(json_object_get(pdu, "room_id"));
    origin = (p && p->origin) ? p->origin : ORIGIN;
    event_id = p ? p->event_id : NULL;

    if (event_id == NULL) {
        assert_true(mx_event_id(rv(v), pdu, own, sizeof(own), &err) > 0);
        event_id = own;
    }

    rc = mx_pdu_check_join_shape(rv(v), pdu, room_id, event_id, origin,
                                 SERVER, id, res);

    json_decref(pdu);

    return rc;
}


static void
expect_shape(int v, json_t *ev, const path_t *p, mx_pdu_e code, int status,
    const char *errcode, const char *part)
{
    mx_pdu_result_t  res;

    assert_int_equal(shape(v, ev, p, &res, NULL), code);
    expect(&res, code, status, errcode, part);
}


/* Key lookup: the spec key for ORIGIN and OTHER, nothing else. */
static int
lookup(void *data, const char *server, const char *key_id,
    uint8_t pk[MX_ED25519_PK_LEN], int64_t *valid_until_ts)
{
    if ((strcmp(server, ORIGIN) != 0 && strcmp(server, OTHER) != 0)
        || strcmp(key_id, SPEC_KEY_ID) != 0)
    {
        return -1;
    }

    memcpy(pk, spec_pk, MX_ED25519_PK_LEN);
    *valid_until_ts = INT64_MAX;

    return 0;
}


/* Good joins */

static void
test_good_join_every_version(void **state)
{
    int                v;
    char               id[MX_EVENT_ID_MAX], names[2][256];
    json_t            *pdu;
    mx_pdu_result_t    res;

    for (v = 1; v <= 12; v++) {
        pdu = parse_ok(v, signed_join(v));

        /* a wrong path still exposes the event's ID, for the log */

        assert_int_equal(mx_pdu_check_join_shape(rv(v), pdu,
                             v == 12 ? ROOM12 : ROOM, "$x", ORIGIN, SERVER,
                             id, &res),
                         MX_PDU_BAD_JSON);

        /* the exposed ID is the one to put in the path */

        switch (rv(v)->event_id_format) {
        case MX_EVENT_ID_SERVER:
            assert_string_equal(id, V1_ID);
            break;
        case MX_EVENT_ID_HASH_STD:
            assert_int_equal(strlen(id), 44);
            assert_null(strpbrk(id, "-_"));
            break;
        default:
            assert_int_equal(strlen(id), 44);
            assert_null(strpbrk(id, "+/"));
        }

        assert_non_null(strstr(res.reason, "is not the path's \"$x\""));

        assert_int_equal(mx_pdu_check_join_shape(rv(v), pdu,
                             v == 12 ? ROOM12 : ROOM, id, ORIGIN, SERVER,
                             id, &res),
                         MX_PDU_OK);
        expect(&res, MX_PDU_OK, 200, NULL, JOINER);

        assert_int_equal(mx_pdu_join_signers(rv(v), pdu, names, &res), 1);
        assert_string_equal(names[0], ORIGIN);

        assert_int_equal(mx_pdu_check_join_signatures(rv(v), pdu, lookup,
                                                      NULL, &res),
                         MX_PDU_OK);
        expect(&res, MX_PDU_OK, 200, NULL, "");

        json_decref(pdu);
    }
}


static void
test_origin_field_ignored(void **state)
{
    json_t           *ev;
    mx_pdu_result_t   res;

    /* Synapse 1.134+ copies a template without origin */
    ev = join_event(11);
    json_object_del(ev, "origin");
    sign_as(11, ev, ORIGIN);
    assert_int_equal(shape(11, ev, NULL, &res, NULL), MX_PDU_OK);

    /* or one naming the resident */
    ev = join_event(4);
    json_object_set_new(ev, "origin", json_string(SERVER));
    sign_as(4, ev, ORIGIN);
    assert_int_equal(shape(4, ev, NULL, &res, NULL), MX_PDU_OK);

    /* or something else entirely */
    ev = join_event(6);
    json_object_set_new(ev, "origin", json_integer(5));
    sign_as(6, ev, ORIGIN);
    assert_int_equal(shape(6, ev, NULL, &res, NULL), MX_PDU_OK);
}


static void
test_result_may_be_null(void **state)
{
    json_t  *pdu;

    assert_int_equal(mx_pdu_parse_join(rv(6), "{", 1, &pdu, NULL),
                     MX_PDU_NOT_JSON);
    assert_null(pdu);
    assert_int_equal(mx_pdu_check_format(rv(6), NULL, NULL),
                     MX_PDU_BAD_JSON);
}


/* The body as JSON */

static void
test_not_json(void **state)
{
    expect_body(6, "{\"type\":", 8, MX_PDU_NOT_JSON, 400, "M_NOT_JSON",
                "body is not JSON");
    expect_body(1, "{\"type\":", 8, MX_PDU_NOT_JSON, 400, "M_NOT_JSON",
                "body is not JSON");
    expect_body(6, "{} x", 4, MX_PDU_NOT_JSON, 400, "M_NOT_JSON",
                "body is not JSON");
    expect_body(6, "", 0, MX_PDU_NOT_JSON, 400, "M_NOT_JSON",
                "body is empty");
    expect_body(6, NULL, 0, MX_PDU_NOT_JSON, 400, "M_NOT_JSON",
                "body is empty");
    expect_body(6, "[1]", 3, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                "not a JSON object");
    expect_body(1, "\"join\"", 6, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                "not a JSON object");
}


static void
test_float(void **state)
{
    json_t           *ev, *pdu;
    mx_pdu_result_t   res;

    /* sytest "send_join rejects invalid JSON for room version 6" */
    ev = signed_join(6);
    json_object_set_new(content(ev), "bad_val", json_real(1.1));
    expect_parse(6, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "float not allowed at content.bad_val");

    ev = signed_join(12);
    json_object_set_new(ev, "depth", json_real(12.0));
    expect_parse(12, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "float not allowed at depth");

    /* a value built in code, not parsed: the same rule */
    ev = signed_join(7);
    json_object_set_new(content(ev), "bad_val", json_real(1.1));
    assert_int_equal(mx_pdu_check_format(rv(7), ev, &res), MX_PDU_BAD_JSON);
    expect(&res, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
           "float not allowed at content.bad_val: room version 7 requires "
           "canonical JSON");
    assert_int_equal(mx_pdu_check_format(rv(4), ev, &res), MX_PDU_OK);
    json_decref(ev);

    /* v1-v5 must cope with non-canonical values */
    ev = signed_join(5);
    json_object_set_new(content(ev), "bad_val", json_real(1.1));
    pdu = parse_ok(5, ev);
    assert_true(json_is_real(json_object_get(content(pdu), "bad_val")));
    json_decref(pdu);
}


static void
test_float_in_unsigned_v5(void **state)
{
    json_t           *ev;
    mx_pdu_result_t   res;

    /* outside the hashes and signatures: the whole join goes through */
    ev = signed_join(5);
    json_object_set_new(ev, "unsigned", json_pack("{s:f}", "age", 1.5));
    assert_int_equal(shape(5, ev, NULL, &res, NULL), MX_PDU_OK);

    ev = signed_join(6);
    json_object_set_new(ev, "unsigned", json_pack("{s:f}", "age", 1.5));
    expect_parse(6, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "float not allowed at unsigned.age");
}


static void
test_int_out_of_range(void **state)
{
    json_t  *ev;

    ev = signed_join(6);
    json_object_set_new(content(ev), "n",
                        json_integer(MX_JSON_INT_MAX + 1));
    expect_parse(6, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "integer out of range at content.n");

    ev = signed_join(10);
    json_object_set_new(content(ev), "n",
                        json_integer(MX_JSON_INT_MIN - 1));
    expect_parse(10, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "integer out of range at content.n");

    /* in range at the edge */
    ev = signed_join(6);
    json_object_set_new(content(ev), "n", json_integer(MX_JSON_INT_MAX));
    json_decref(parse_ok(6, ev));

    /* v5: kept */
    ev = signed_join(5);
    json_object_set_new(content(ev), "n",
                        json_integer(MX_JSON_INT_MAX + 1));
    json_decref(parse_ok(5, ev));

    /* beyond 64 bits: JSON, but nothing we can hold, in any version */
    expect_body(1, "{\"n\":99999999999999999999}", 26, MX_PDU_BAD_JSON, 400,
                "M_BAD_JSON", "beyond 64 bits");
    expect_body(6, "{\"n\":99999999999999999999}", 26, MX_PDU_BAD_JSON, 400,
                "M_BAD_JSON", "integer");
}


/* A good join of version v as a body with "depth":1 put first: depth
 * twice. */
static char *
body_with_two_depths(int v, size_t *len)
{
    char    *body, *dup;
    json_t  *ev;

    ev = signed_join(v);
    body = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    assert_non_null(body);

    *len = strlen(body) + 10;
    dup = malloc(*len + 1);
    assert_non_null(dup);
    snprintf(dup, *len + 1, "{\"depth\":1,%s", body + 1);
    assert_int_equal(strlen(dup), *len);

    free(body);

    return dup;
}


static void
test_duplicate_keys(void **state)
{
    char             *body;
    size_t            len;
    json_t           *pdu;
    mx_pdu_result_t   res;

    body = body_with_two_depths(6, &len);
    expect_body(6, body, len, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                "duplicate key \"depth\"");
    free(body);

    /* v1-v5: the last one wins, as with Python's json */
    body = body_with_two_depths(5, &len);
    assert_int_equal(mx_pdu_parse_join(rv(5), body, len, &pdu, &res),
                     MX_PDU_OK);
    assert_int_equal(json_integer_value(json_object_get(pdu, "depth")), 12);
    json_decref(pdu);
    free(body);
}


/* Sizes */

static void
test_body_too_large(void **state)
{
    char             *body, *pad;
    size_t            len;
    json_t           *ev, *pdu;
    mx_pdu_result_t   res;

    /* refused before parsing: garbage or not */
    pad = malloc(MX_PDU_MAX_LEN + 2);
    assert_non_null(pad);
    memset(pad, 'x', MX_PDU_MAX_LEN + 1);
    expect_body(6, pad, MX_PDU_MAX_LEN + 1, MX_PDU_TOO_LARGE, 413,
                "M_TOO_LARGE", "body is 65537 bytes, more than 65536");

    /* a good join padded with spaces to exactly the limit is fine, one
     * more byte is not */
    ev = signed_join(6);
    body = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    assert_non_null(body);
    len = strlen(body);
    assert_true(len < MX_PDU_MAX_LEN);

    memcpy(pad, body, len);
    memset(pad + len, ' ', MX_PDU_MAX_LEN + 1 - len);

    assert_int_equal(mx_pdu_parse_join(rv(6), pad, MX_PDU_MAX_LEN, &pdu,
                                       &res),
                     MX_PDU_OK);
    json_decref(pdu);

    expect_body(6, pad, MX_PDU_MAX_LEN + 1, MX_PDU_TOO_LARGE, 413,
                "M_TOO_LARGE", "more than 65536");

    free(body);
    free(pad);
}


/* ev with content.pad sized so that its canonical JSON is len bytes */
static json_t *
event_of_canonical_len(int v, size_t len)
{
    char      *pad;
    size_t     base;
    json_t    *ev;
    mx_buf_t   buf = MX_BUF_INIT;
    mx_err_t   err;

    ev = signed_join(v);
    json_object_set_new(content(ev), "pad", json_string(""));
    assert_int_equal(mx_json_canonical(ev, &buf, &err), 0);
    base = buf.len;
    mx_buf_free(&buf);

    pad = malloc(len - base + 1);
    assert_non_null(pad);
    memset(pad, 'p', len - base);
    pad[len - base] = '\0';
    json_object_set_new(content(ev), "pad", json_string(pad));
    free(pad);

    assert_int_equal(mx_json_canonical(ev, &buf, &err), 0);
    assert_int_equal(buf.len, len);
    mx_buf_free(&buf);

    return ev;
}


static void
test_canonical_too_large(void **state)
{
    json_t           *ev;
    mx_pdu_result_t   res;

    /* a body cannot be longer as canonical JSON than as sent, so this
     * limit is for values that were not parsed from a body */

    ev = event_of_canonical_len(6, MX_PDU_MAX_LEN);
    assert_int_equal(mx_pdu_check_format(rv(6), ev, &res), MX_PDU_OK);
    json_decref(ev);

    ev = event_of_canonical_len(6, MX_PDU_MAX_LEN + 1);
    assert_int_equal(mx_pdu_check_format(rv(6), ev, &res), MX_PDU_TOO_LARGE);
    expect(&res, MX_PDU_TOO_LARGE, 413, "M_TOO_LARGE",
           "PDU is 65537 bytes as canonical JSON");
    json_decref(ev);

    /* signatures count */
    ev = event_of_canonical_len(1, MX_PDU_MAX_LEN);
    sign_as(1, ev, OTHER);
    assert_int_equal(mx_pdu_check_format(rv(1), ev, &res), MX_PDU_TOO_LARGE);
    json_decref(ev);

    /* v5 with a float: measured all the same */
    ev = event_of_canonical_len(5, MX_PDU_MAX_LEN - 40);
    json_object_set_new(ev, "unsigned", json_pack("{s:f}", "age", 1.5));
    assert_int_equal(mx_pdu_check_format(rv(5), ev, &res), MX_PDU_OK);
    json_object_set_new(ev, "unsigned", json_pack("{s:f}", "age",
                                                  1.0e300));
    assert_int_equal(mx_pdu_check_format(rv(5), ev, &res), MX_PDU_TOO_LARGE);
    expect(&res, MX_PDU_TOO_LARGE, 413, "M_TOO_LARGE", "canonical JSON");
    json_decref(ev);
}


static void
test_id_too_long(void **state)
{
    char             *user;
    json_t           *ev;
    mx_pdu_result_t   res;

    /* 255 bytes is fine */
    user = user_of_len(255, ORIGIN);
    ev = join_event(11);
    json_object_set_new(ev, "sender", json_string(user));
    json_object_set_new(ev, "state_key", json_string(user));
    sign_as(11, ev, ORIGIN);
    assert_int_equal(shape(11, ev, NULL, &res, NULL), MX_PDU_OK);
    free(user);

    /* 256 is not: 413 as Synapse's EventSizeError */
    user = user_of_len(256, ORIGIN);

    ev = signed_join(11);
    json_object_set_new(ev, "sender", json_string(user));
    expect_parse(11, ev, MX_PDU_TOO_LARGE, 413, "M_TOO_LARGE",
                 "sender is 256 bytes, more than 255");

    ev = signed_join(11);
    json_object_set_new(ev, "state_key", json_string(user));
    expect_parse(11, ev, MX_PDU_TOO_LARGE, 413, "M_TOO_LARGE",
                 "state_key is 256 bytes");

    user[0] = '!';
    ev = signed_join(4);
    json_object_set_new(ev, "room_id", json_string(user));
    expect_parse(4, ev, MX_PDU_TOO_LARGE, 413, "M_TOO_LARGE",
                 "room_id is 256 bytes");

    ev = signed_join(4);
    json_object_set_new(ev, "type", json_string(user));
    expect_parse(4, ev, MX_PDU_TOO_LARGE, 413, "M_TOO_LARGE",
                 "type is 256 bytes");

    user[0] = '$';
    ev = signed_join(1);
    json_object_set_new(ev, "event_id", json_string(user));
    expect_parse(1, ev, MX_PDU_TOO_LARGE, 413, "M_TOO_LARGE",
                 "event_id is 256 bytes");

    /* a reference to an event: not an event ID at all */
    ev = signed_join(4);
    json_array_set_new(json_object_get(ev, "prev_events"), 0,
                       json_string(user));
    expect_parse(4, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "prev_events[0] is not an event ID");

    ev = signed_join(2);
    json_array_set_new(json_object_get(ev, "auth_events"), 1,
                       json_pack("[s,{s:s}]", user, "sha256", REF_HASH));
    expect_parse(2, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "auth_events[1] is not an event ID");

    free(user);
}


/*
 * The PDU format: a signed join with one field (or one key of a field)
 * removed or replaced, for each version from v_from to v_to, must fail
 * to parse with code and a reason holding reason. One cmocka test per
 * row of field_cases[] (main() adds them).
 */

typedef struct {
    const char  *name;
    int          v_from;
    int          v_to;
    const char  *field;
    const char  *key;           /* in field, or NULL: field itself */
    const char  *value;         /* JSON, or NULL: removed */
    mx_pdu_e     code;
    const char  *reason;
} field_case_t;


static const field_case_t  field_cases[] = {

    /* missing fields, every version */
    { "missing room_id", 1, 12, "room_id", NULL, NULL, MX_PDU_BAD_JSON,
      "room_id is missing" },
    { "missing sender", 1, 12, "sender", NULL, NULL, MX_PDU_BAD_JSON,
      "sender is missing" },
    { "missing type", 1, 12, "type", NULL, NULL, MX_PDU_BAD_JSON,
      "type is missing" },
    { "missing state_key", 1, 12, "state_key", NULL, NULL, MX_PDU_BAD_JSON,
      "state_key is missing" },
    { "missing content", 1, 12, "content", NULL, NULL, MX_PDU_BAD_JSON,
      "content is missing" },
    { "missing depth", 1, 12, "depth", NULL, NULL, MX_PDU_BAD_JSON,
      "depth is missing" },
    { "missing origin_server_ts", 1, 12, "origin_server_ts", NULL, NULL,
      MX_PDU_BAD_JSON, "origin_server_ts is missing" },
    { "missing prev_events", 1, 12, "prev_events", NULL, NULL,
      MX_PDU_BAD_JSON, "prev_events is missing" },
    { "missing auth_events", 1, 12, "auth_events", NULL, NULL,
      MX_PDU_BAD_JSON, "auth_events is missing" },
    { "missing hashes", 1, 12, "hashes", NULL, NULL, MX_PDU_BAD_JSON,
      "hashes is missing" },
    /* unsigned: the signature check's answer (sytest) */
    { "missing signatures", 1, 12, "signatures", NULL, NULL,
      MX_PDU_FORBIDDEN, "not signed" },
    { "missing hashes.sha256", 1, 12, "hashes", "sha256", NULL,
      MX_PDU_FORBIDDEN, "hashes.sha256 is missing" },
    /* v1, v2 carry their event ID */
    { "missing event_id", 1, 2, "event_id", NULL, NULL, MX_PDU_BAD_JSON,
      "event_id is missing" },

    /* wrong types and values */
    { "content a string", 4, 4, "content", NULL, "\"join\"",
      MX_PDU_BAD_JSON, "content is not an object" },
    { "sender an integer", 4, 4, "sender", NULL, "1", MX_PDU_BAD_JSON,
      "sender is not a string" },
    { "sender not a user ID", 4, 4, "sender", NULL, "\"bob\"",
      MX_PDU_BAD_JSON, "sender \"bob\" is not a user ID" },
    { "room_id not a room ID", 4, 4, "room_id", NULL, "\"room\"",
      MX_PDU_BAD_JSON, "room_id \"room\" is not a room ID" },
    /* a hash room ID only from v12 */
    { "v11 room_id a v12 hash", 11, 11, "room_id", NULL, "\"" ROOM12 "\"",
      MX_PDU_BAD_JSON, "is not a room ID" },
    { "type with a NUL", 4, 4, "type", NULL, "\"m.room.member\\u0000x\"",
      MX_PDU_BAD_JSON, "type contains a NUL character" },
    { "depth a string", 4, 4, "depth", NULL, "\"12\"", MX_PDU_BAD_JSON,
      "depth is not an integer" },
    { "depth a real", 5, 5, "depth", NULL, "12.5", MX_PDU_BAD_JSON,
      "depth is not an integer" },
    { "origin_server_ts a string", 4, 4, "origin_server_ts", NULL,
      "\"now\"", MX_PDU_BAD_JSON, "origin_server_ts is not an integer" },
    { "prev_events an object", 4, 4, "prev_events", NULL, "{}",
      MX_PDU_BAD_JSON, "prev_events is not a list" },
    { "hashes a string", 4, 4, "hashes", NULL, "\"x\"", MX_PDU_BAD_JSON,
      "hashes is not an object" },
    { "hashes.sha256 an integer", 4, 4, "hashes", "sha256", "1",
      MX_PDU_BAD_JSON, "hashes.sha256 is not a string" },
    { "signatures a list", 4, 4, "signatures", NULL, "[]", MX_PDU_BAD_JSON,
      "signatures is not an object" },
    { "v1 event_id without a server", 1, 1, "event_id", NULL,
      "\"$nodomain\"", MX_PDU_BAD_JSON,
      "event_id \"$nodomain\" is not \"$opaque:server\"" },
    { "v2 event_id with a bad server", 2, 2, "event_id", NULL,
      "\"$x:localhost:http\"", MX_PDU_BAD_JSON,
      "is not \"$opaque:server\"" },
};


static void
test_field_case(void **state)
{
    const field_case_t *c = *state;

    int            v;
    json_t        *ev, *obj, *val;
    const char    *name;
    json_error_t   e;

    for (v = c->v_from; v <= c->v_to; v++) {
        ev = signed_join(v);

        obj = c->key ? json_object_get(ev, c->field) : ev;
        name = c->key ? c->key : c->field;
        assert_non_null(obj);

        if (c->value == NULL) {
            assert_int_equal(json_object_del(obj, name), 0);

        } else {
            val = json_loads(c->value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
            if (val == NULL) {
                fail_msg("bad test JSON %s: %s", c->value, e.text);
            }

            assert_int_equal(json_object_set_new(obj, name, val), 0);
        }

        if (c->code == MX_PDU_FORBIDDEN) {
            expect_parse(v, ev, c->code, 403, "M_FORBIDDEN", c->reason);

        } else {
            expect_parse(v, ev, c->code, 400, "M_BAD_JSON", c->reason);
        }
    }
}


static void
test_depth(void **state)
{
    json_t             *ev;
    mx_pdu_result_t     res;
    mx_room_version_t   low;

    ev = signed_join(6);
    json_object_set_new(ev, "depth", json_integer(-1));
    expect_parse(6, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "depth -1 is outside 0 to 9007199254740991");

    ev = signed_join(1);
    json_object_set_new(ev, "depth", json_integer(-1));
    expect_parse(1, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "depth -1 is outside 0 to 9223372036854775807");

    /* 0 and the maximum are allowed */
    ev = signed_join(6);
    json_object_set_new(ev, "depth", json_integer(0));
    json_decref(parse_ok(6, ev));

    ev = signed_join(6);
    json_object_set_new(ev, "depth", json_integer(MX_JSON_INT_MAX));
    json_decref(parse_ok(6, ev));

    ev = signed_join(3);
    json_object_set_new(ev, "depth", json_integer(INT64_MAX));
    json_decref(parse_ok(3, ev));

    /* v6+: 2^53 is already not canonical JSON */
    ev = signed_join(6);
    json_object_set_new(ev, "depth", json_integer(MX_JSON_INT_MAX + 1));
    expect_parse(6, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "integer out of range at depth");

    /* the row's max_depth is what counts: one with a low one */
    low = *rv(6);
    low.max_depth = 100;

    ev = signed_join(6);
    json_object_set_new(ev, "depth", json_integer(100));
    assert_int_equal(mx_pdu_check_format(&low, ev, &res), MX_PDU_OK);
    json_object_set_new(ev, "depth", json_integer(101));
    assert_int_equal(mx_pdu_check_format(&low, ev, &res), MX_PDU_BAD_JSON);
    expect(&res, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
           "depth 101 is outside 0 to 100");
    json_decref(ev);
}


static void
test_prev_events_count(void **state)
{
    int      v;
    json_t  *ev;

    for (v = 1; v <= 12; v += 3) {
        ev = signed_join(v);
        json_object_set_new(ev, "prev_events", refs(v, 20));
        json_decref(parse_ok(v, ev));

        ev = signed_join(v);
        json_object_set_new(ev, "prev_events", refs(v, 21));
        expect_parse(v, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "prev_events has 21 entries, more than 20");
    }
}


static void
test_auth_events_count(void **state)
{
    int      v;
    json_t  *ev;

    for (v = 2; v <= 12; v += 5) {
        ev = signed_join(v);
        json_object_set_new(ev, "auth_events", refs(v, 10));
        json_decref(parse_ok(v, ev));

        ev = signed_join(v);
        json_object_set_new(ev, "auth_events", refs(v, 11));
        expect_parse(v, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "auth_events has 11 entries, more than 10");
    }
}


static void
test_ref_shapes(void **state)
{
    json_t  *ev;

    /* v1/v2 want pairs */
    ev = signed_join(1);
    json_object_set_new(ev, "prev_events", refs(4, 1));
    expect_parse(1, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "prev_events[0] is not an [event ID, hashes] pair "
                 "(room version 1)");

    ev = signed_join(2);
    json_object_set_new(ev, "auth_events", refs(3, 2));
    expect_parse(2, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "auth_events[0] is not an [event ID, hashes] pair");

    ev = signed_join(1);
    json_array_set_new(json_object_get(ev, "auth_events"), 2,
                       json_pack("[s,{s:s},i]", "$a:b", "sha256", REF_HASH,
                                 1));
    expect_parse(1, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "auth_events[2] is not an [event ID, hashes] pair");

    ev = signed_join(1);
    json_array_set_new(json_object_get(ev, "prev_events"), 0,
                       json_pack("[s,{}]", "$a:b"));
    expect_parse(1, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "prev_events[0] has no sha256 hash");

    ev = signed_join(1);
    json_array_set_new(json_object_get(ev, "prev_events"), 0,
                       json_pack("[i,{s:s}]", 1, "sha256", REF_HASH));
    expect_parse(1, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "prev_events[0] is not an event ID");

    /* v3+ want strings */
    ev = signed_join(3);
    json_object_set_new(ev, "prev_events", refs(1, 1));
    expect_parse(3, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "prev_events[0] is not an event ID string (room version 3)");

    ev = signed_join(12);
    json_object_set_new(ev, "auth_events", refs(2, 2));
    expect_parse(12, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "auth_events[0] is not an event ID string");

    ev = signed_join(10);
    json_array_set_new(json_object_get(ev, "auth_events"), 1,
                       json_string("abc"));
    expect_parse(10, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "auth_events[1] is not an event ID");

    ev = signed_join(10);
    json_array_set_new(json_object_get(ev, "auth_events"), 0,
                       json_string("$"));
    expect_parse(10, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "auth_events[0] is not an event ID");
}


/* The join checks, in the table's order */

static void
test_room_id_mismatch(void **state)
{
    path_t  p = { "!other:" SERVER, NULL, NULL };

    expect_shape(4, signed_join(4), &p, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "room_id \"" ROOM "\" is not the path's room \"!other:"
                 SERVER "\"");

    p.room_id = ROOM;
    expect_shape(12, signed_join(12), &p, MX_PDU_BAD_JSON, 400,
                 "M_BAD_JSON", "is not the path's room");
}


static void
test_event_id_mismatch(void **state)
{
    path_t  p = { NULL, REF_V4, NULL };

    expect_shape(4, signed_join(4), &p, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "(from its reference hash) is not the path's \""
                 REF_V4 "\"");

    p.event_id = "$other:" ORIGIN;
    expect_shape(1, signed_join(1), &p, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "the event's ID \"" V1_ID "\" (its event_id) is not the "
                 "path's \"$other:" ORIGIN "\"");
}


static void
test_event_id_other_alphabet(void **state)
{
    char              id[MX_EVENT_ID_MAX], url[MX_EVENT_ID_MAX];
    json_t           *pdu;
    mx_err_t          err;
    mx_pdu_result_t   res;

    /* v3 IDs are standard base64; the url-safe form of the same hash (the
     * v4 ID, v4 redacts as v3) is another ID */
    pdu = parse_ok(3, signed_join(3));
    assert_true(mx_event_id(rv(3), pdu, id, sizeof(id), &err) > 0);
    assert_true(mx_event_id(rv(4), pdu, url, sizeof(url), &err) > 0);
    assert_non_null(strpbrk(id, "+/"));

    assert_int_equal(mx_pdu_check_join_shape(rv(3), pdu, ROOM, url, ORIGIN,
                                             SERVER, NULL, &res),
                     MX_PDU_BAD_JSON);
    assert_int_equal(mx_pdu_check_join_shape(rv(3), pdu, ROOM, id, ORIGIN,
                                             SERVER, NULL, &res),
                     MX_PDU_OK);
    json_decref(pdu);
}


static void
test_event_id_of_changed_event(void **state)
{
    char              id[MX_EVENT_ID_MAX];
    json_t           *ev, *pdu;
    mx_err_t          err;
    mx_pdu_result_t   res;

    /* the path names the event as it was; it changed and was signed
     * again: another event */
    ev = signed_join(11);
    assert_true(mx_event_id(rv(11), ev, id, sizeof(id), &err) > 0);
    json_object_set_new(ev, "depth", json_integer(13));
    sign_as(11, ev, ORIGIN);

    pdu = parse_ok(11, ev);
    assert_int_equal(mx_pdu_check_join_shape(rv(11), pdu, ROOM, id, ORIGIN,
                                             SERVER, NULL, &res),
                     MX_PDU_BAD_JSON);
    expect(&res, MX_PDU_BAD_JSON, 400, "M_BAD_JSON", "is not the path's");
    json_decref(pdu);
}


static void
test_not_a_member_event(void **state)
{
    json_t  *ev;

    /* Complement TestCannotSendNonJoinViaSendJoinV2: an m.room.message
     * (no state_key: the body schema wants one) */
    ev = join_event(10);
    json_object_set_new(ev, "type", json_string("m.room.message"));
    json_object_set_new(ev, "content", json_pack("{s:s,s:s}", "msgtype",
                                                 "m.text", "body", "hi"));
    json_object_del(ev, "state_key");
    sign_as(10, ev, ORIGIN);
    expect_parse(10, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "state_key is missing");

    /* with one */
    ev = join_event(10);
    json_object_set_new(ev, "type", json_string("m.room.message"));
    sign_as(10, ev, ORIGIN);
    expect_shape(10, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "type \"m.room.message\" is not m.room.member");
}


static void
test_member_without_state_key(void **state)
{
    int      v;
    json_t  *ev;

    for (v = 1; v <= 12; v += 11) {
        ev = join_event(v);
        json_object_del(ev, "state_key");
        sign_as(v, ev, ORIGIN);
        expect_parse(v, ev, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "state_key is missing");
    }
}


static void
test_not_join(void **state)
{
    size_t             i;
    json_t            *ev;
    char               want[64];
    static const char *other[] = { "leave", "knock", "invite", "ban",
                                   "Join", "" };

    for (i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        ev = join_event(7);
        json_object_set_new(content(ev), "membership",
                            json_string(other[i]));
        sign_as(7, ev, ORIGIN);
        snprintf(want, sizeof(want), "content.membership \"%s\" is not join",
                 other[i]);
        expect_shape(7, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON", want);
    }

    ev = join_event(7);
    json_object_del(content(ev), "membership");
    sign_as(7, ev, ORIGIN);
    expect_shape(7, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "content.membership is missing or not a string");

    ev = join_event(1);
    json_object_set_new(content(ev), "membership", json_true());
    sign_as(1, ev, ORIGIN);
    expect_shape(1, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "content.membership is missing or not a string");

    /* "join" and something after a NUL is not "join" */
    ev = join_event(4);
    json_object_set_new(content(ev), "membership",
                        json_stringn("join\0x", 6));
    sign_as(4, ev, ORIGIN);
    expect_shape(4, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "content.membership is missing or not a string");
}


static void
test_state_key_not_sender(void **state)
{
    json_t  *ev;

    /* Complement: a join of doris sent as bob */
    ev = join_event(11);
    json_object_set_new(ev, "state_key", json_string("@doris:" ORIGIN));
    sign_as(11, ev, ORIGIN);
    expect_shape(11, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "state_key \"@doris:" ORIGIN "\" is not the sender \""
                 JOINER "\"");

    /* a local user joined by a remote server: still 400, before the
     * origin rule */
    ev = join_event(11);
    json_object_set_new(ev, "state_key", json_string("@alice:" SERVER));
    sign_as(11, ev, ORIGIN);
    expect_shape(11, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "is not the sender");
}


static void
test_sender_not_of_origin(void **state)
{
    json_t  *ev;
    path_t   p = { NULL, NULL, OTHER };

    /* sytest replays another server's join: 403 M_FORBIDDEN */
    expect_shape(4, signed_join(4), &p, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN",
                 "sender \"" JOINER "\" is not a user of the requesting "
                 "server \"" OTHER "\"");

    expect_shape(1, signed_join(1), &p, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN",
                 "not a user of the requesting server");

    /* server names compare byte for byte, the port included */
    p.origin = "Remote.example";
    expect_shape(6, signed_join(6), &p, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN",
                 "requesting server");

    p.origin = ORIGIN ":8448";
    expect_shape(6, signed_join(6), &p, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN",
                 "requesting server");

    /* a user on the origin with a port */
    ev = join_event(6);
    json_object_set_new(ev, "sender", json_string("@bob:" ORIGIN ":8448"));
    json_object_set_new(ev, "state_key", json_string("@bob:" ORIGIN ":8448"));
    sign_as(6, ev, ORIGIN ":8448");
    p.origin = ORIGIN ":8448";
    expect_shape(6, ev, &p, MX_PDU_OK, 200, NULL, "");
}


static void
test_content_hash_mismatch(void **state)
{
    int      v;
    json_t  *ev;

    for (v = 1; v <= 12; v++) {
        /* changed after signing: the signature over the redacted form
         * still holds, the hash does not */
        ev = signed_join(v);
        json_object_set_new(content(ev), "displayname", json_string("Bob"));
        expect_shape(v, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "content hash: content hash mismatch (the event would "
                     "be treated as redacted)");
    }

    ev = signed_join(4);
    json_object_set_new(json_object_get(ev, "hashes"), "sha256",
                        json_string("not base64!"));
    expect_shape(4, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "content hash: hashes.sha256 is not base64");

    /* "unsigned" is not hashed */
    ev = signed_join(4);
    json_object_set_new(ev, "unsigned", json_pack("{s:i}", "age", 5));
    expect_shape(4, ev, NULL, MX_PDU_OK, 200, NULL, "");
}


static void
test_authoriser(void **state)
{
    int      v;
    json_t  *ev;

    for (v = 8; v <= 12; v++) {
        /* ours: fine (the resident signs it later, §2.3) */
        ev = join_event(v);
        json_object_set_new(content(ev), "join_authorised_via_users_server",
                            json_string("@alice:" SERVER));
        sign_as(v, ev, ORIGIN);
        expect_shape(v, ev, NULL, MX_PDU_OK, 200, NULL, "");

        /* not ours: 400, naming the user and our server */
        ev = join_event(v);
        json_object_set_new(content(ev), "join_authorised_via_users_server",
                            json_string("@carol:" OTHER));
        sign_as(v, ev, ORIGIN);
        expect_shape(v, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "content.join_authorised_via_users_server \"@carol:"
                     OTHER "\" is not a user of this server \"" SERVER
                     "\"");

        /* the joiner's own server cannot authorise at ours either */
        ev = join_event(v);
        json_object_set_new(content(ev), "join_authorised_via_users_server",
                            json_string("@dave:" ORIGIN));
        sign_as(v, ev, ORIGIN);
        expect_shape(v, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "is not a user of this server");

        ev = join_event(v);
        json_object_set_new(content(ev), "join_authorised_via_users_server",
                            json_integer(1));
        sign_as(v, ev, ORIGIN);
        expect_shape(v, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "content.join_authorised_via_users_server is not a "
                     "user ID");

        ev = join_event(v);
        json_object_set_new(content(ev), "join_authorised_via_users_server",
                            json_string("alice"));
        sign_as(v, ev, ORIGIN);
        expect_shape(v, ev, NULL, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                     "is not a user ID");
    }

    /* before v8 the key means nothing */
    for (v = 1; v <= 7; v++) {
        ev = join_event(v);
        json_object_set_new(content(ev), "join_authorised_via_users_server",
                            json_string("@carol:" OTHER));
        sign_as(v, ev, ORIGIN);
        expect_shape(v, ev, NULL, MX_PDU_OK, 200, NULL, "");
    }
}


static void
test_check_order(void **state)
{
    json_t  *ev;
    path_t   p = { "!other:" SERVER, "$x", OTHER };

    /* every check fails: the room comes first */
    ev = join_event(10);
    json_object_set_new(ev, "type", json_string("m.room.message"));
    json_object_set_new(content(ev), "join_authorised_via_users_server",
                        json_string("@carol:" OTHER));
    sign_as(10, ev, ORIGIN);
    json_object_set_new(content(ev), "membership", json_string("leave"));
    expect_shape(10, json_deep_copy(ev), &p, MX_PDU_BAD_JSON, 400,
                 "M_BAD_JSON", "room_id");

    /* then the event ID */
    p.room_id = NULL;
    expect_shape(10, json_deep_copy(ev), &p, MX_PDU_BAD_JSON, 400,
                 "M_BAD_JSON", "is not the path's \"$x\"");

    /* then the type (400 before the origin's 403) */
    p.event_id = NULL;
    expect_shape(10, json_deep_copy(ev), &p, MX_PDU_BAD_JSON, 400,
                 "M_BAD_JSON", "type");

    /* then the membership */
    json_object_set_new(ev, "type", json_string("m.room.member"));
    expect_shape(10, json_deep_copy(ev), &p, MX_PDU_BAD_JSON, 400,
                 "M_BAD_JSON", "content.membership \"leave\"");

    /* then the origin, before the content hash */
    json_object_set_new(content(ev), "membership", json_string("join"));
    expect_shape(10, json_deep_copy(ev), &p, MX_PDU_FORBIDDEN, 403,
                 "M_FORBIDDEN", "requesting server");

    /* then the content hash (the event changed after signing) */
    p.origin = NULL;
    expect_shape(10, json_deep_copy(ev), &p, MX_PDU_BAD_JSON, 400,
                 "M_BAD_JSON", "content hash");

    /* and the authoriser last */
    sign_as(10, ev, ORIGIN);
    expect_shape(10, ev, &p, MX_PDU_BAD_JSON, 400, "M_BAD_JSON",
                 "join_authorised_via_users_server");
}


/* Signatures, checked by the caller with keys it has */

static void
test_signers(void **state)
{
    json_t           *ev;
    char              names[2][256];
    mx_pdu_result_t   res;

    ev = signed_join(4);
    assert_int_equal(mx_pdu_join_signers(rv(4), ev, names, &res), 1);
    assert_string_equal(names[0], ORIGIN);
    json_decref(ev);

    /* v1, v2: the server of the event ID too, when it differs */
    ev = join_event(1);
    json_object_set_new(ev, "event_id", json_string("$join1:" OTHER));
    assert_int_equal(mx_pdu_join_signers(rv(1), ev, names, &res), 2);
    assert_string_equal(names[0], ORIGIN);
    assert_string_equal(names[1], OTHER);
    expect(&res, MX_PDU_OK, 200, NULL, ORIGIN " and " OTHER);
    json_decref(ev);

    ev = join_event(2);
    assert_int_equal(mx_pdu_join_signers(rv(2), ev, names, &res), 1);
    json_decref(ev);

    /* and v3+ carry no event ID to sign for */
    ev = join_event(3);
    json_object_set_new(ev, "event_id", json_string("$join1:" OTHER));
    assert_int_equal(mx_pdu_join_signers(rv(3), ev, names, &res), 1);
    json_decref(ev);

    ev = join_event(4);
    json_object_set_new(ev, "sender", json_string("bob"));
    assert_int_equal(mx_pdu_join_signers(rv(4), ev, names, &res), -1);
    expect(&res, MX_PDU_BAD_JSON, 400, "M_BAD_JSON", "invalid sender");
    json_decref(ev);
}


static void
test_signatures(void **state)
{
    int               v;
    char              fake[MX_ED25519_SIG_B64_LEN + 1];
    json_t           *ev, *mine, *sig;
    mx_pdu_result_t   res;

    memset(fake, 'a', MX_ED25519_SIG_B64_LEN);
    fake[MX_ED25519_SIG_B64_LEN] = '\0';

    for (v = 1; v <= 12; v++) {
        /* sytest "rejects incorrectly-signed joins": unsigned */
        ev = join_event(v);
        assert_int_equal(mx_event_set_content_hash(ev, NULL), 0);
        json_object_set_new(ev, "signatures", json_object());
        assert_int_equal(mx_pdu_check_join_signatures(rv(v), ev, lookup,
                                                      NULL, &res),
                         MX_PDU_FORBIDDEN);
        expect(&res, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN",
               "no signatures by \"" ORIGIN "\"");
        json_decref(ev);

        /* a fake signature: "a" x 86 */
        ev = signed_join(v);
        json_object_set_new(json_object_get(json_object_get(ev,
                                "signatures"), ORIGIN),
                            SPEC_KEY_ID, json_string(fake));
        assert_int_equal(mx_pdu_check_join_signatures(rv(v), ev, lookup,
                                                      NULL, &res),
                         MX_PDU_FORBIDDEN);
        expect(&res, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN",
               "bad signature by \"" ORIGIN "\"");
        json_decref(ev);

        /* signed by another server only */
        ev = join_event(v);
        sign_as(v, ev, OTHER);
        assert_int_equal(mx_pdu_check_join_signatures(rv(v), ev, lookup,
                                                      NULL, &res),
                         MX_PDU_FORBIDDEN);
        json_decref(ev);

        /* with a key we do not know */
        ev = signed_join(v);
        mine = json_object_get(json_object_get(ev, "signatures"), ORIGIN);
        sig = json_object_get(mine, SPEC_KEY_ID);
        json_object_set(mine, "ed25519:other", sig);
        json_object_del(mine, SPEC_KEY_ID);
        assert_int_equal(mx_pdu_check_join_signatures(rv(v), ev, lookup,
                                                      NULL, &res),
                         MX_PDU_FORBIDDEN);
        expect(&res, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN",
               "no signature by \"" ORIGIN "\" with a known");
        json_decref(ev);
    }

    /* v1: the event ID's server must sign too */
    ev = join_event(1);
    json_object_set_new(ev, "event_id", json_string("$join1:" OTHER));
    sign_as(1, ev, ORIGIN);
    assert_int_equal(mx_pdu_check_join_signatures(rv(1), ev, lookup, NULL,
                                                  &res),
                     MX_PDU_FORBIDDEN);
    expect(&res, MX_PDU_FORBIDDEN, 403, "M_FORBIDDEN", OTHER);

    sign_as(1, ev, OTHER);
    assert_int_equal(mx_pdu_check_join_signatures(rv(1), ev, lookup, NULL,
                                                  &res),
                     MX_PDU_OK);
    json_decref(ev);
}


int
main(void)
{
    int                 rc;
    size_t              i, n, nfixed;
    struct CMUnitTest  *all;

    static const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_good_join_every_version),
        cmocka_unit_test(test_origin_field_ignored),
        cmocka_unit_test(test_result_may_be_null),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_float),
        cmocka_unit_test(test_float_in_unsigned_v5),
        cmocka_unit_test(test_int_out_of_range),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_canonical_too_large),
        cmocka_unit_test(test_id_too_long),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_prev_events_count),
        cmocka_unit_test(test_auth_events_count),
        cmocka_unit_test(test_ref_shapes),
        cmocka_unit_test(test_room_id_mismatch),
        cmocka_unit_test(test_event_id_mismatch),
        cmocka_unit_test(test_event_id_other_alphabet),
        cmocka_unit_test(test_event_id_of_changed_event),
        cmocka_unit_test(test_not_a_member_event),
        cmocka_unit_test(test_member_without_state_key),
        cmocka_unit_test(test_not_join),
        cmocka_unit_test(test_state_key_not_sender),
        cmocka_unit_test(test_sender_not_of_origin),
        cmocka_unit_test(test_content_hash_mismatch),
        cmocka_unit_test(test_authoriser),
        cmocka_unit_test(test_check_order),
        cmocka_unit_test(test_signers),
        cmocka_unit_test(test_signatures),
    };

    nfixed = sizeof(tests) / sizeof(tests[0]);
    n = sizeof(field_cases) / sizeof(field_cases[0]);

    all = calloc(nfixed + n, sizeof(struct CMUnitTest));
    if (all == NULL) {
        return 1;
    }

    memcpy(all, tests, sizeof(tests));

    for (i = 0; i < n; i++) {
        all[nfixed + i].name = field_cases[i].name;
        all[nfixed + i].test_func = test_field_case;
        all[nfixed + i].initial_state = (void *) &field_cases[i];
    }

    rc = _cmocka_run_group_tests("pdu", all, nfixed + n, setup, NULL);

    free(all);

    return rc;
}
