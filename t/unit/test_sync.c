/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync's pure pieces (docs/sync.md): durations, which
 * pushed events are auth-relevant, the registration file, the listener's
 * request parsing, the fate of edge joins, the JSON scanner and the
 * snapshot document built from the homeserver's events and the kept joins.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ctl_sync.h"
#include "mx_json.h"


/* --- durations --------------------------------------------------------- */

static void
test_duration(void **state)
{
    assert_int_equal(mxj_sync_duration_ms("30s"), 30000);
    assert_int_equal(mxj_sync_duration_ms("5m"), 300000);
    assert_int_equal(mxj_sync_duration_ms("1h30m"), 5400000);
    assert_int_equal(mxj_sync_duration_ms("250ms"), 250);
    assert_int_equal(mxj_sync_duration_ms("1s500ms"), 1500);
    assert_int_equal(mxj_sync_duration_ms("2d"), 2LL * 86400000);
    assert_int_equal(mxj_sync_duration_ms("10"), 10000);
    assert_int_equal(mxj_sync_duration_ms("365d"), 365LL * 86400000);

    assert_int_equal(mxj_sync_duration_ms(""), -1);
    assert_int_equal(mxj_sync_duration_ms("0s"), -1);
    assert_int_equal(mxj_sync_duration_ms("0"), -1);
    assert_int_equal(mxj_sync_duration_ms("1m30"), -1);
    assert_int_equal(mxj_sync_duration_ms("s"), -1);
    assert_int_equal(mxj_sync_duration_ms("-5s"), -1);
    assert_int_equal(mxj_sync_duration_ms("5 s"), -1);
    assert_int_equal(mxj_sync_duration_ms("1x"), -1);
    assert_int_equal(mxj_sync_duration_ms("366d"), -1);
    assert_int_equal(mxj_sync_duration_ms("99999999999999999999s"), -1);
}


/* --- auth-relevant events ---------------------------------------------- */

static int
relevant(const char *json)
{
    int      r;
    json_t  *ev;

    ev = json_loads(json, 0, NULL);
    assert_non_null(ev);

    r = mxj_sync_auth_relevant(ev);
    json_decref(ev);

    return r;
}


static void
test_auth_relevant(void **state)
{
    assert_true(relevant("{\"type\":\"m.room.member\",\"state_key\":\"@u:x\","
                         "\"content\":{\"membership\":\"ban\"}}"));
    assert_true(relevant("{\"type\":\"m.room.member\",\"state_key\":\"@u:x\","
                         "\"sender\":\"@mod:x\","
                         "\"content\":{\"membership\":\"leave\"}}"));
    assert_true(relevant("{\"type\":\"m.room.join_rules\",\"state_key\":\"\","
                         "\"content\":{\"join_rule\":\"invite\"}}"));
    assert_true(relevant("{\"type\":\"m.room.power_levels\","
                         "\"state_key\":\"\",\"content\":{}}"));
    assert_true(relevant("{\"type\":\"m.room.server_acl\",\"state_key\":\"\","
                         "\"content\":{}}"));
    assert_true(relevant("{\"type\":\"m.room.create\",\"state_key\":\"\","
                         "\"content\":{}}"));
    assert_true(relevant("{\"type\":\"m.room.tombstone\",\"state_key\":\"\","
                         "\"content\":{}}"));

    assert_false(relevant("{\"type\":\"m.room.member\",\"state_key\":\"@u:x\","
                          "\"content\":{\"membership\":\"join\"}}"));
    assert_false(relevant("{\"type\":\"m.room.member\",\"state_key\":\"@u:x\","
                          "\"content\":{\"membership\":\"invite\"}}"));
    assert_false(relevant("{\"type\":\"m.room.member\",\"state_key\":\"@u:x\","
                          "\"content\":{}}"));
    assert_false(relevant("{\"type\":\"m.room.topic\",\"state_key\":\"\","
                          "\"content\":{\"topic\":\"t\"}}"));
    assert_false(relevant("{\"type\":\"m.room.message\","
                          "\"content\":{\"body\":\"ban\"}}"));

    /* not state: a message of an auth type is nothing */
    assert_false(relevant("{\"type\":\"m.room.power_levels\","
                          "\"content\":{}}"));
    assert_false(relevant("[]"));
    assert_false(relevant("{\"state_key\":\"\"}"));
}


/* --- the registration -------------------------------------------------- */

static void
test_registration(void **state)
{
    char         as[MXJ_SYNC_TOKEN_MAX + 1], hs[MXJ_SYNC_TOKEN_MAX + 1];
    mx_buf_t     out = MX_BUF_INIT;
    const char  *rooms[] = { "!abc:example.org", "!x.y+z:h.example.org:8448" };

    assert_int_equal(mxj_sync_registration(&out, "http://127.0.0.1:9000",
                                           "ASTOK", "HSTOK", rooms, 2), 0);

    assert_string_equal(out.data,
        "# Written by matrix-join-ctl sync: add this file to the "
        "homeserver's\n"
        "# app_service_config_files. sync keeps the tokens when it writes "
        "it again.\n"
        "id: matrix-join-sync\n"
        "url: 'http://127.0.0.1:9000'\n"
        "as_token: 'ASTOK'\n"
        "hs_token: 'HSTOK'\n"
        "sender_localpart: matrix-join-sync\n"
        "rate_limited: false\n"
        "namespaces:\n"
        "  users: []\n"
        "  aliases: []\n"
        "  rooms:\n"
        "    - exclusive: false\n"
        "      regex: '^!abc:example\\.org$'\n"
        "    - exclusive: false\n"
        "      regex: '^!x\\.y\\+z:h\\.example\\.org:8448$'\n");

    assert_int_equal(mxj_sync_registration_tokens(out.data, out.len, as, hs),
                     0);
    assert_string_equal(as, "ASTOK");
    assert_string_equal(hs, "HSTOK");

    mx_buf_reset(&out);
    assert_int_equal(mxj_sync_registration(&out, "http://h:1", "a'b", "c",
                                           NULL, 0), 0);
    assert_non_null(strstr(out.data, "as_token: 'a''b'\n"));
    assert_non_null(strstr(out.data, "  rooms: []\n"));
    mx_buf_free(&out);

    /* tokens written by hand: unquoted, double-quoted, a comment after */

    assert_int_equal(mxj_sync_registration_tokens(
        "id: x\nas_token: abc123\nhs_token: \"def\"  # secret\n", 50, as, hs),
        0);
    assert_string_equal(as, "abc123");
    assert_string_equal(hs, "def");

    assert_int_equal(mxj_sync_registration_tokens("as_token: a\n", 12, as,
                                                  hs), -1);
    assert_int_equal(mxj_sync_registration_tokens(
        "as_token: 'a\nhs_token: b\n", 25, as, hs), -1);
    assert_int_equal(mxj_sync_registration_tokens(
        "as_token: ''\nhs_token: b\n", 25, as, hs), -1);
}


/* --- the listener's requests ------------------------------------------- */

static void
test_http_parse(void **state)
{
    const char           *why;
    mxj_sync_http_req_t   req;

    static const char  full[] =
        "PUT /_matrix/app/v1/transactions/42 HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "content-length:  17 \r\n"
        "Authorization: Bearer tok\r\n"
        "\r\n"
        "{\"events\":[]}";

    assert_int_equal(mxj_sync_http_parse(full, sizeof(full) - 1, &req, &why),
                     0);
    assert_int_equal(req.method_len, 3);
    assert_memory_equal(req.method, "PUT", 3);
    assert_int_equal(req.target_len, 31);
    assert_memory_equal(req.target, "/_matrix/app/v1/transactions/42", 31);
    assert_int_equal(req.content_length, 17);
    assert_int_equal(req.authorization_len, 10);
    assert_memory_equal(req.authorization, "Bearer tok", 10);
    assert_int_equal(req.head_len, strstr(full, "{") - full);
    assert_false(req.http10);

    /* not complete yet */
    assert_int_equal(mxj_sync_http_parse(full, 40, &req, &why), 1);
    assert_int_equal(mxj_sync_http_parse(full, 0, &req, &why), 1);

    /* bare LF lines */
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/1.0\nA: b\n\n", 21, &req,
                                         &why), 0);
    assert_true(req.http10);
    assert_int_equal(req.content_length, -1);
    assert_null(req.authorization);

    assert_int_equal(mxj_sync_http_parse("POST /x HTTP/1.1\r\nExpect: "
        "100-continue\r\nTransfer-Encoding: chunked\r\n\r\n", 70, &req, &why),
        0);
    assert_true(req.expect_continue);
    assert_true(req.transfer_encoding);

    /* garbage, refused at once when it cannot start a request line */
    assert_int_equal(mxj_sync_http_parse("GE", 2, &req, &why), 1);
    assert_int_equal(mxj_sync_http_parse("PUT /_matrix/a", 14, &req, &why),
                     1);
    assert_int_equal(mxj_sync_http_parse("\x00\xff", 2, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("get", 3, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET /a\x01", 7, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("ABCDEFGHIJKLMNOPQRS", 19, &req,
                                         &why), -1);
    {
        char  big[16384];

        memset(big, 'a', sizeof(big));
        memcpy(big, "GET /", 5);
        assert_int_equal(mxj_sync_http_parse(big, sizeof(big), &req, &why),
                         -1);
    }

    assert_int_equal(mxj_sync_http_parse("\r\n\r\n", 4, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("get / HTTP/1.1\r\n\r\n", 18, &req,
                                         &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET x HTTP/1.1\r\n\r\n", 18, &req,
                                         &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/2.0\r\n\r\n", 18, &req,
                                         &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET /\r\n\r\n", 9, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n",
                                         27, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/1.1\r\n x: y\r\n\r\n",
                                         25, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/1.1\r\n"
        "Content-Length: 1\r\nContent-Length: 2\r\n\r\n", 56, &req, &why),
        -1);
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/1.1\r\n"
        "Content-Length: -1\r\n\r\n", 38, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/1.1\r\n"
        "Content-Length: 1x\r\n\r\n", 38, &req, &why), -1);
    assert_int_equal(mxj_sync_http_parse("GET / HTTP/1.1\r\n"
        "Authorization: a\r\nAuthorization: b\r\n\r\n", 54, &req, &why), -1);
}


static mxj_sync_as_route_e
route(const char *head, char *txn, char *token)
{
    const char           *why;
    mxj_sync_http_req_t   req;

    assert_int_equal(mxj_sync_http_parse(head, strlen(head), &req, &why), 0);

    return mxj_sync_as_route(&req, txn, token);
}


static void
test_as_route(void **state)
{
    char  txn[MXJ_SYNC_TXN_MAX + 1], token[MXJ_SYNC_TOKEN_MAX + 1];
    char  head[1024];

    assert_int_equal(route("PUT /_matrix/app/v1/transactions/t%2F1 "
                           "HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n",
                           txn, token),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(txn, "t/1");
    assert_string_equal(token, "abc");

    assert_int_equal(route("PUT /_matrix/app/v1/transactions/9?x=1&"
                           "access_token=s%3Dq HTTP/1.1\r\n\r\n", txn, token),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(txn, "9");
    assert_string_equal(token, "s=q");

    /* the header wins over the parameter */
    assert_int_equal(route("PUT /_matrix/app/v1/transactions/9?access_token=q "
                           "HTTP/1.1\r\nAuthorization: bearer h\r\n\r\n", txn,
                           token), MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(token, "h");

    assert_int_equal(route("PUT /_matrix/app/v1/transactions/9 HTTP/1.1\r\n"
                           "Authorization: Basic abc\r\n\r\n", txn, token),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(token, "");

    assert_int_equal(route("POST /_matrix/app/v1/ping HTTP/1.1\r\n\r\n", txn,
                           token), MXJ_SYNC_AS_PING);
    assert_int_equal(route("GET /_matrix/app/v1/ping HTTP/1.1\r\n\r\n", txn,
                           token), MXJ_SYNC_AS_BAD_METHOD);
    assert_int_equal(route("POST /_matrix/app/v1/transactions/1 HTTP/1.1\r\n"
                           "\r\n", txn, token), MXJ_SYNC_AS_BAD_METHOD);
    assert_int_equal(route("PUT /_matrix/app/v1/transactions/ HTTP/1.1\r\n"
                           "\r\n", txn, token), MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(route("PUT /_matrix/app/v1/transactions/a/b HTTP/1.1\r\n"
                           "\r\n", txn, token), MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(route("PUT /_matrix/app/v1/transactions/%00 HTTP/1.1\r\n"
                           "\r\n", txn, token), MXJ_SYNC_AS_UNKNOWN);
    /* a '%' without two hex digits stays, as the homeservers read it */
    assert_int_equal(route("PUT /_matrix/app/v1/transactions/%4 HTTP/1.1\r\n"
                           "\r\n", txn, token), MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(txn, "%4");
    assert_int_equal(route("PUT /_matrix/app/v1/transactions/9?access_token"
                           "=a+b%2B;x=1 HTTP/1.1\r\n\r\n", txn, token),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(token, "a b+");
    assert_int_equal(route("PUT /transactions/1 HTTP/1.1\r\n\r\n", txn,
                           token), MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(route("GET / HTTP/1.1\r\n\r\n", txn, token),
                     MXJ_SYNC_AS_UNKNOWN);

    /* a transaction ID over 255 bytes */
    strcpy(head, "PUT /_matrix/app/v1/transactions/");
    memset(head + strlen(head), 'a', 256);
    strcpy(head + 33 + 256, " HTTP/1.1\r\n\r\n");
    assert_int_equal(route(head, txn, token), MXJ_SYNC_AS_UNKNOWN);
}


static void
test_uri_escape(void **state)
{
    mx_buf_t  out = MX_BUF_INIT;

    assert_int_equal(mxj_sync_uri_escape(&out, "!a:b.c"), 0);
    assert_int_equal(mxj_sync_uri_escape(&out, "/#@$+ ~_-\xc3\xa9"), 0);
    assert_string_equal(out.data, "%21a%3Ab.c%2F%23%40%24%2B%20~_-%C3%A9");
    mx_buf_free(&out);
}


/* --- edge joins -------------------------------------------------------- */

static void
test_judge_join(void **state)
{
    long         passes;
    const char  *why;

    passes = 5;
    assert_int_equal(mxj_sync_judge_join(1, 1, 0, &passes, 3, &why),
                     MXJ_SYNC_JOIN_CONFIRMED);
    assert_int_equal(passes, 5);
    assert_null(why);

    /* delivered: kept for confirm_passes passes, dropped at the next */

    passes = 0;
    assert_int_equal(mxj_sync_judge_join(0, 1, 0, &passes, 2, &why),
                     MXJ_SYNC_JOIN_KEEP);
    assert_int_equal(mxj_sync_judge_join(0, 1, 0, &passes, 2, &why),
                     MXJ_SYNC_JOIN_KEEP);
    assert_int_equal(mxj_sync_judge_join(0, 1, 0, &passes, 2, &why),
                     MXJ_SYNC_JOIN_DROP);
    assert_int_equal(passes, 3);
    assert_non_null(strstr(why, "delivered"));

    passes = 0;
    assert_int_equal(mxj_sync_judge_join(0, 1, 0, &passes, 0, &why),
                     MXJ_SYNC_JOIN_DROP);

    /* delivered while in the outbox still (read in one script): counted */

    passes = 0;
    assert_int_equal(mxj_sync_judge_join(0, 1, 1, &passes, 1, &why),
                     MXJ_SYNC_JOIN_KEEP);
    assert_int_equal(passes, 1);

    /* in the outbox: kept, not counted, however long */

    passes = 0;
    assert_int_equal(mxj_sync_judge_join(0, 0, 1, &passes, 0, &why),
                     MXJ_SYNC_JOIN_KEEP);
    assert_int_equal(passes, 0);

    /* neither: a dead letter */
    assert_int_equal(mxj_sync_judge_join(0, 0, 0, &passes, 3, &why),
                     MXJ_SYNC_JOIN_DROP);
    assert_non_null(strstr(why, "dead letter"));
}


/* --- the snapshot document --------------------------------------------- */

static const mx_room_version_t  *rv10;

/* An event with ID id (nothing is hashed: the builder takes IDs as given). */

static mxj_sync_ev_t *
ev(const char *id, const char *type, const char *state_key,
    const char *sender, const char *membership, int depth,
    const char *auth, const char *prev)
{
    char            text[2048];
    json_t         *j;
    mx_err_t        err;
    mxj_sync_ev_t  *x;

    snprintf(text, sizeof(text),
             "{\"type\":\"%s\",%s%s%s\"sender\":\"%s\",\"depth\":%d,"
             "\"origin_server_ts\":%d,\"room_id\":\"!r:x\","
             "\"content\":{%s%s%s},\"auth_events\":[%s],"
             "\"prev_events\":[%s],\"id\":\"%s\"}",
             type, state_key ? "\"state_key\":\"" : "",
             state_key ? state_key : "", state_key ? "\"," : "", sender,
             depth, 1000 + depth,
             membership ? "\"membership\":\"" : "",
             membership ? membership : "", membership ? "\"" : "",
             auth, prev, id);

    j = json_loads(text, 0, NULL);
    assert_non_null(j);

    x = mxj_sync_ev_new(rv10, j, id, &err);
    json_decref(j);
    assert_non_null(x);

    return x;
}


static void
push(mxj_sync_ids_t *l, const char *s)
{
    assert_int_equal(mxj_sync_ids_push(l, s), 0);
}


/* The IDs ("id" fields) of one list of the document, comma-joined. */

static void
ids_of(json_t *doc, const char *list, char *out, size_t cap)
{
    size_t   i;
    json_t  *a;

    a = json_object_get(doc, list);
    assert_true(json_is_array(a));
    out[0] = '\0';

    for (i = 0; i < json_array_size(a); i++) {
        if (i) {
            strncat(out, ",", cap - strlen(out) - 1);
        }

        strncat(out, json_string_value(json_object_get(json_array_get(a, i),
                                                       "id")),
                cap - strlen(out) - 1);
    }
}


typedef struct {
    mxj_sync_pool_t   pool;
    mxj_sync_ids_t    state;
    mxj_sync_ids_t    auth;
} room_t;


static void
room_init(room_t *r)
{
    memset(r, 0, sizeof(room_t));

    rv10 = mx_room_version("10", 2);

    /* create, alice joins, power levels, join rules, bob joins */

    mxj_sync_pool_add(&r->pool, ev("$c", "m.room.create", "", "@a:x", NULL,
                                   1, "", ""));
    mxj_sync_pool_add(&r->pool, ev("$ma", "m.room.member", "@a:x", "@a:x",
                                   "join", 2, "\"$c\"", "\"$c\""));
    mxj_sync_pool_add(&r->pool, ev("$pl", "m.room.power_levels", "", "@a:x",
                                   NULL, 3, "\"$c\",\"$ma\"", "\"$ma\""));
    mxj_sync_pool_add(&r->pool, ev("$jr", "m.room.join_rules", "", "@a:x",
                                   NULL, 4, "\"$c\",\"$ma\",\"$pl\"",
                                   "\"$pl\""));
    mxj_sync_pool_add(&r->pool, ev("$mb", "m.room.member", "@b:y", "@b:y",
                                   "join", 5, "\"$c\",\"$pl\",\"$jr\"",
                                   "\"$jr\""));
    mxj_sync_pool_add(&r->pool, ev("$msg", "m.room.message", NULL, "@b:y",
                                   NULL, 6, "\"$c\",\"$pl\",\"$mb\"",
                                   "\"$mb\""));

    push(&r->state, "$c");
    push(&r->state, "$ma");
    push(&r->state, "$pl");
    push(&r->state, "$jr");
    push(&r->state, "$mb");

    /* the homeserver's auth chain order */
    push(&r->auth, "$pl");
    push(&r->auth, "$c");
    push(&r->auth, "$ma");
    push(&r->auth, "$jr");
}


static void
room_free(room_t *r)
{
    mxj_sync_pool_free(&r->pool);
    mxj_sync_ids_free(&r->state);
    mxj_sync_ids_free(&r->auth);
}


static json_t *
build(room_t *r, const char *extremity, mxj_sync_ev_t **joins, size_t n,
    int expect)
{
    int              rc;
    json_t          *doc;
    mx_err_t         err;
    mx_buf_t         out = MX_BUF_INIT;
    mxj_sync_ids_t   missing;
    mxj_sync_doc_t   d;
    const char      *aliases[] = { "#a:x" };

    memset(&d, 0, sizeof(mxj_sync_doc_t));
    memset(&missing, 0, sizeof(mxj_sync_ids_t));

    d.rv = rv10;
    d.pool = &r->pool;
    d.state = &r->state;
    d.auth = &r->auth;
    d.extremity = extremity;
    d.joins = joins;
    d.njoins = n;
    d.aliases = aliases;
    d.naliases = 1;

    rc = mxj_sync_build_doc(&d, &out, &missing, &err);
    assert_int_equal(rc, expect);

    if (rc != 0) {
        mxj_sync_ids_free(&missing);
        mx_buf_free(&out);
        return NULL;
    }

    assert_int_equal(missing.n, 0);

    doc = json_loadb(out.data, out.len, 0, NULL);
    assert_non_null(doc);
    mx_buf_free(&out);

    assert_string_equal(json_string_value(json_object_get(doc,
                                                           "room_version")),
                        "10");
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(doc, "aliases"), 0)), "#a:x");

    return doc;
}


static void
test_doc_plain(void **state)
{
    char     ids[512];
    json_t  *doc;
    room_t   r;

    room_init(&r);

    doc = build(&r, "$msg", NULL, 0, 0);

    ids_of(doc, "state", ids, sizeof(ids));
    assert_string_equal(ids, "$c,$ma,$pl,$jr,$mb");

    /* the homeserver's order, then what it did not list */
    ids_of(doc, "auth_chain", ids, sizeof(ids));
    assert_string_equal(ids, "$pl,$c,$ma,$jr");

    ids_of(doc, "forward_extremities", ids, sizeof(ids));
    assert_string_equal(ids, "$msg");

    json_decref(doc);

    /* used events marked, the others go at the sweep */
    mxj_sync_pool_add(&r.pool, ev("$old", "m.room.topic", "", "@a:x", NULL,
                                  2, "\"$c\"", "\"$c\""));
    doc = build(&r, "$msg", NULL, 0, 0);
    json_decref(doc);
    mxj_sync_pool_sweep(&r.pool);
    assert_null(mxj_sync_pool_get(&r.pool, "$old"));
    assert_non_null(mxj_sync_pool_get(&r.pool, "$msg"));
    assert_non_null(mxj_sync_pool_get(&r.pool, "$mb"));

    room_free(&r);
}


static void
test_doc_state_extremity(void **state)
{
    char     ids[512];
    json_t  *doc;
    room_t   r;

    room_init(&r);

    /* E bans bob: it takes the place of bob's join, which it names */

    mxj_sync_pool_add(&r.pool, ev("$ban", "m.room.member", "@b:y", "@a:x",
                                  "ban", 6, "\"$c\",\"$pl\",\"$ma\",\"$mb\"",
                                  "\"$mb\""));

    doc = build(&r, "$ban", NULL, 0, 0);

    ids_of(doc, "state", ids, sizeof(ids));
    assert_string_equal(ids, "$c,$ma,$pl,$jr,$ban");
    ids_of(doc, "auth_chain", ids, sizeof(ids));
    assert_string_equal(ids, "$pl,$c,$ma,$jr,$mb");
    ids_of(doc, "forward_extremities", ids, sizeof(ids));
    assert_string_equal(ids, "$ban");

    json_decref(doc);
    room_free(&r);
}


static void
test_doc_joins(void **state)
{
    char            ids[512];
    json_t         *doc;
    room_t          r;
    mxj_sync_ev_t  *joins[3];

    room_init(&r);

    /*
     * carol joins at the edge on $msg, then bob joins again on carol's
     * join, then carol again: carol's latest join and bob's take their
     * users' places; carol's first join and bob's old one are in the auth
     * chain; the extremity is the last join alone
     */

    joins[0] = ev("$j1", "m.room.member", "@c:z", "@c:z", "join", 7,
                  "\"$c\",\"$pl\",\"$jr\"", "\"$msg\"");
    joins[1] = ev("$j2", "m.room.member", "@b:y", "@b:y", "join", 8,
                  "\"$c\",\"$pl\",\"$jr\",\"$mb\"", "\"$j1\"");
    joins[2] = ev("$j3", "m.room.member", "@c:z", "@c:z", "join", 9,
                  "\"$c\",\"$pl\",\"$jr\",\"$j1\"", "\"$j2\"");

    doc = build(&r, "$msg", joins, 3, 0);

    ids_of(doc, "state", ids, sizeof(ids));
    assert_string_equal(ids, "$c,$ma,$pl,$jr,$j2,$j3");
    ids_of(doc, "auth_chain", ids, sizeof(ids));
    assert_string_equal(ids, "$pl,$c,$ma,$jr,$mb,$j1");
    ids_of(doc, "forward_extremities", ids, sizeof(ids));
    assert_string_equal(ids, "$j3");
    json_decref(doc);

    /* a join on an older extremity: E stays one too */

    doc = build(&r, "$msg", joins + 1, 1, 0);
    ids_of(doc, "forward_extremities", ids, sizeof(ids));
    assert_string_equal(ids, "$j2,$msg");
    json_decref(doc);

    mxj_sync_ev_free(joins[0]);
    mxj_sync_ev_free(joins[1]);
    mxj_sync_ev_free(joins[2]);
    room_free(&r);
}


static void
test_doc_missing(void **state)
{
    int              rc;
    room_t           r;
    mx_err_t         err;
    mx_buf_t         out = MX_BUF_INIT;
    mxj_sync_ids_t   missing;
    mxj_sync_doc_t   d;
    mxj_sync_ev_t   *join;

    room_init(&r);

    /* a join naming an old join rules event the pool does not have, and
     * a state event and an extremity not received */

    join = ev("$j", "m.room.member", "@c:z", "@c:z", "join", 7,
              "\"$c\",\"$pl\",\"$jr0\"", "\"$msg\"");
    push(&r.state, "$topic");

    memset(&d, 0, sizeof(mxj_sync_doc_t));
    memset(&missing, 0, sizeof(mxj_sync_ids_t));
    d.rv = rv10;
    d.pool = &r.pool;
    d.state = &r.state;
    d.auth = &r.auth;
    d.extremity = "$e";
    d.joins = &join;
    d.njoins = 1;

    rc = mxj_sync_build_doc(&d, &out, &missing, &err);
    assert_int_equal(rc, 1);
    assert_int_equal(out.len, 0);
    assert_int_equal(missing.n, 3);
    assert_string_equal(missing.v[0], "$topic");
    assert_string_equal(missing.v[1], "$e");
    assert_string_equal(missing.v[2], "$jr0");

    mxj_sync_ids_free(&missing);
    mxj_sync_ev_free(join);
    room_free(&r);
}


static void
test_doc_duplicate_key(void **state)
{
    room_t   r;

    room_init(&r);

    mxj_sync_pool_add(&r.pool, ev("$jr2", "m.room.join_rules", "", "@a:x",
                                  NULL, 5, "\"$c\"", "\"$jr\""));
    push(&r.state, "$jr2");

    assert_null(build(&r, "$msg", NULL, 0, -1));

    room_free(&r);
}


static void
test_doc_v12_create_implied(void **state)
{
    int              rc;
    json_t          *doc, *j;
    mx_err_t         err;
    mx_buf_t         out = MX_BUF_INIT;
    mxj_sync_ids_t   st, au, missing;
    mxj_sync_doc_t   d;
    mxj_sync_pool_t  pool;
    const mx_room_version_t  *rv12;

    rv12 = mx_room_version("12", 2);

    memset(&pool, 0, sizeof(mxj_sync_pool_t));
    memset(&st, 0, sizeof(mxj_sync_ids_t));
    memset(&au, 0, sizeof(mxj_sync_ids_t));
    memset(&missing, 0, sizeof(mxj_sync_ids_t));

    j = json_loads("{\"type\":\"m.room.create\",\"state_key\":\"\","
                   "\"sender\":\"@a:x\",\"depth\":1,\"origin_server_ts\":1,"
                   "\"content\":{},\"auth_events\":[],\"prev_events\":[]}",
                   0, NULL);
    mxj_sync_pool_add(&pool, mxj_sync_ev_new(rv12, j, "$c", &err));
    json_decref(j);

    j = json_loads("{\"type\":\"m.room.member\",\"state_key\":\"@a:x\","
                   "\"sender\":\"@a:x\",\"depth\":2,\"origin_server_ts\":2,"
                   "\"content\":{\"membership\":\"join\"},"
                   "\"auth_events\":[],\"prev_events\":[\"$c\"]}", 0, NULL);
    mxj_sync_pool_add(&pool, mxj_sync_ev_new(rv12, j, "$m", &err));
    json_decref(j);

    push(&st, "$c");

    memset(&d, 0, sizeof(mxj_sync_doc_t));
    d.rv = rv12;
    d.pool = &pool;
    d.state = &st;
    d.auth = &au;
    d.extremity = "$m";

    rc = mxj_sync_build_doc(&d, &out, &missing, &err);
    assert_int_equal(rc, 0);

    doc = json_loadb(out.data, out.len, 0, NULL);
    assert_non_null(doc);

    /* E (a state event) joins the state; create is in the chain, implied */
    assert_int_equal(json_array_size(json_object_get(doc, "state")), 2);
    assert_int_equal(json_array_size(json_object_get(doc, "auth_chain")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
        json_object_get(doc, "auth_chain"), 0), "type")), "m.room.create");

    json_decref(doc);
    mx_buf_free(&out);
    mxj_sync_ids_free(&st);
    mxj_sync_ids_free(&au);
    mxj_sync_pool_free(&pool);
}


static void
test_ids_same(void **state)
{
    mxj_sync_ids_t  a, b;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));

    assert_true(mxj_sync_ids_same(&a, &b));
    push(&a, "$x");
    push(&a, "$y");
    assert_false(mxj_sync_ids_same(&a, &b));
    push(&b, "$y");
    push(&b, "$x");
    assert_true(mxj_sync_ids_same(&a, &b));
    push(&b, "$z");
    push(&a, "$w");
    assert_false(mxj_sync_ids_same(&a, &b));

    mxj_sync_ids_free(&a);
    mxj_sync_ids_free(&b);
}


static void
test_ev_new_malformed(void **state)
{
    json_t         *j;
    mx_err_t        err;

    rv10 = mx_room_version("10", 2);

    j = json_loads("{\"type\":\"m.room.member\",\"state_key\":\"@a:x\","
                   "\"sender\":\"@a:x\",\"depth\":2,\"origin_server_ts\":2,"
                   "\"content\":{},\"auth_events\":[],\"prev_events\":[]}",
                   0, NULL);
    assert_null(mxj_sync_ev_new(rv10, j, "$m", &err));
    json_decref(j);

    j = json_loads("{\"type\":\"m.room.topic\",\"state_key\":1,"
                   "\"sender\":\"@a:x\",\"depth\":2,\"origin_server_ts\":2,"
                   "\"content\":{},\"auth_events\":[],\"prev_events\":[]}",
                   0, NULL);
    assert_null(mxj_sync_ev_new(rv10, j, "$m", &err));
    json_decref(j);

    j = json_loads("{\"type\":\"m.room.topic\",\"sender\":\"@a:x\","
                   "\"depth\":2,\"origin_server_ts\":2,\"content\":{},"
                   "\"auth_events\":[1],\"prev_events\":[]}", 0, NULL);
    assert_null(mxj_sync_ev_new(rv10, j, "$m", &err));
    json_decref(j);

    j = json_loads("{\"type\":\"m.room.topic\",\"sender\":\"@a:x\","
                   "\"depth\":\"2\",\"origin_server_ts\":2,\"content\":{},"
                   "\"auth_events\":[],\"prev_events\":[]}", 0, NULL);
    assert_null(mxj_sync_ev_new(rv10, j, "$m", &err));
    json_decref(j);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_auth_relevant),
        cmocka_unit_test(test_registration),
        cmocka_unit_test(test_http_parse),
        cmocka_unit_test(test_as_route),
        cmocka_unit_test(test_uri_escape),
        cmocka_unit_test(test_judge_join),
        cmocka_unit_test(test_doc_plain),
        cmocka_unit_test(test_doc_state_extremity),
        cmocka_unit_test(test_doc_joins),
        cmocka_unit_test(test_doc_missing),
        cmocka_unit_test(test_doc_duplicate_key),
        cmocka_unit_test(test_doc_v12_create_implied),
        cmocka_unit_test(test_ids_same),
        cmocka_unit_test(test_ev_new_malformed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
