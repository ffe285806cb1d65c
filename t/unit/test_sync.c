/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync's pure pieces (docs/sync.md): durations, which
 * pushed events are auth-relevant, the registration's regexes, the
 * listener's routes, tokens and transaction IDs, the fate of edge joins,
 * the JSON scanner and the snapshot document built from the homeserver's
 * events and the kept joins.
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


/* --- the registration's regexes --------------------------------------- */

static void
test_room_regex(void **state)
{
    mx_buf_t  out = MX_BUF_INIT;

    assert_int_equal(mxj_sync_room_regex(&out, "!abc:example.org"), 0);
    assert_int_equal(mx_buf_append_byte(&out, '\0'), 0);
    assert_string_equal(out.data, "^!abc:example\\.org$");

    mx_buf_reset(&out);
    assert_int_equal(mxj_sync_room_regex(&out, "!x.y+z*(a|b)[c]{2}^$?\\/"
                                               ":h.example.org:8448"), 0);
    assert_int_equal(mx_buf_append_byte(&out, '\0'), 0);
    assert_string_equal(out.data, "^!x\\.y\\+z\\*\\(a\\|b\\)\\[c\\]\\{2\\}"
                                  "\\^\\$\\?\\\\\\/:h\\.example\\.org:8448$");
    mx_buf_free(&out);
}


/* --- the listener's routes, tokens and transaction IDs ----------------- */

static void
test_as_route(void **state)
{
    char  txn[MXJ_SYNC_TXN_MAX + 1], path[1024];

    /* the v1 path and the legacy one (Synapse before 1.81) */
    assert_int_equal(mxj_sync_as_route("PUT", "/_matrix/app/v1/transactions/"
                                       "t%2F1", txn),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(txn, "t/1");
    assert_int_equal(mxj_sync_as_route("PUT", "/transactions/42", txn),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(txn, "42");

    /* a '%' without two hex digits stays, as the homeservers read it */
    assert_int_equal(mxj_sync_as_route("PUT", "/transactions/%4", txn),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_string_equal(txn, "%4");

    assert_int_equal(mxj_sync_as_route("POST", "/transactions/1", txn),
                     MXJ_SYNC_AS_BAD_METHOD);
    assert_int_equal(mxj_sync_as_route("GET", "/_matrix/app/v1/transactions/"
                                       "1", txn), MXJ_SYNC_AS_BAD_METHOD);
    assert_int_equal(mxj_sync_as_route("PUT", "/_matrix/app/v1/transactions/",
                                       txn), MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(mxj_sync_as_route("PUT", "/transactions/", txn),
                     MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(mxj_sync_as_route("PUT", "/transactions/a/b", txn),
                     MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(mxj_sync_as_route("PUT", "/_matrix/app/v1/transactions/"
                                       "%00", txn), MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(mxj_sync_as_route("PUT", "/_matrix/app/v2/transactions/"
                                       "1", txn), MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(mxj_sync_as_route("PUT", "/_matrix/app/v1transactions/"
                                       "1", txn), MXJ_SYNC_AS_UNKNOWN);

    /* the queries, v1 and legacy */
    assert_int_equal(mxj_sync_as_route("GET", "/_matrix/app/v1/users/"
                                       "%40a%3Ah", txn), MXJ_SYNC_AS_QUERY);
    assert_int_equal(mxj_sync_as_route("GET", "/users/@a:h", txn),
                     MXJ_SYNC_AS_QUERY);
    assert_int_equal(mxj_sync_as_route("GET", "/rooms/%23a%3Ah", txn),
                     MXJ_SYNC_AS_QUERY);
    assert_int_equal(mxj_sync_as_route("PUT", "/rooms/%23a%3Ah", txn),
                     MXJ_SYNC_AS_BAD_METHOD);
    assert_int_equal(mxj_sync_as_route("GET", "/rooms/", txn),
                     MXJ_SYNC_AS_UNKNOWN);

    assert_int_equal(mxj_sync_as_route("POST", "/_matrix/app/v1/ping", txn),
                     MXJ_SYNC_AS_PING);
    assert_int_equal(mxj_sync_as_route("GET", "/_matrix/app/v1/ping", txn),
                     MXJ_SYNC_AS_BAD_METHOD);
    assert_int_equal(mxj_sync_as_route("POST", "/ping", txn),
                     MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(mxj_sync_as_route("GET", "/", txn),
                     MXJ_SYNC_AS_UNKNOWN);
    assert_int_equal(mxj_sync_as_route("GET", "/_matrix/app/v1/thirdparty/"
                                       "protocol/irc", txn),
                     MXJ_SYNC_AS_UNKNOWN);

    /* a transaction ID of 255 bytes, and one over */
    strcpy(path, "/transactions/");
    memset(path + 14, 'a', 255);
    path[14 + 255] = '\0';
    assert_int_equal(mxj_sync_as_route("PUT", path, txn),
                     MXJ_SYNC_AS_TRANSACTION);
    assert_int_equal(strlen(txn), 255);
    strcpy(path + 14 + 255, "a");
    assert_int_equal(mxj_sync_as_route("PUT", path, txn),
                     MXJ_SYNC_AS_UNKNOWN);
    assert_string_equal(txn, "");
}


static void
test_as_tokens(void **state)
{
    char  b[MXJ_SYNC_TOKEN_MAX + 1], p[MXJ_SYNC_TOKEN_MAX + 1];
    char  big[MXJ_SYNC_TOKEN_MAX + 16];

    assert_int_equal(mxj_sync_as_tokens("Bearer abc", NULL, b, p), 0);
    assert_string_equal(b, "abc");
    assert_string_equal(p, "");
    assert_int_equal(mxj_sync_as_tokens("bearer  abc ", NULL, b, p), 0);
    assert_string_equal(b, "abc");

    assert_int_equal(mxj_sync_as_tokens(NULL, "s%3Dq", b, p), 0);
    assert_string_equal(b, "");
    assert_string_equal(p, "s=q");
    assert_int_equal(mxj_sync_as_tokens(NULL, "a+b%2B", b, p), 0);
    assert_string_equal(p, "a b+");

    /* both: both returned, for the caller to check each */
    assert_int_equal(mxj_sync_as_tokens("Bearer h", "q", b, p), 0);
    assert_string_equal(b, "h");
    assert_string_equal(p, "q");

    assert_int_equal(mxj_sync_as_tokens(NULL, NULL, b, p), 0);
    assert_string_equal(b, "");
    assert_string_equal(p, "");

    /* given and malformed: a credential that is not the hs_token */
    assert_int_equal(mxj_sync_as_tokens("Basic abc", NULL, b, p), -1);
    assert_int_equal(mxj_sync_as_tokens("Bearer", NULL, b, p), -1);
    assert_int_equal(mxj_sync_as_tokens("Bearer    ", NULL, b, p), -1);
    assert_int_equal(mxj_sync_as_tokens(NULL, "", b, p), -1);
    assert_int_equal(mxj_sync_as_tokens(NULL, "a%00b", b, p), -1);

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(mxj_sync_as_tokens(NULL, big, b, p), -1);
    memcpy(big, "Bearer ", 7);
    assert_int_equal(mxj_sync_as_tokens(big, NULL, b, p), -1);
    big[7 + MXJ_SYNC_TOKEN_MAX] = '\0';
    assert_int_equal(mxj_sync_as_tokens(big, NULL, b, p), 0);
    assert_int_equal(strlen(b), MXJ_SYNC_TOKEN_MAX);
}


static void
test_txns(void **state)
{
    char             id[32];
    size_t           i;
    mxj_sync_txns_t  t;

    memset(&t, 0, sizeof(t));

    assert_false(mxj_sync_txns_seen(&t, "1"));
    assert_int_equal(mxj_sync_txns_add(&t, "1"), 0);
    assert_true(mxj_sync_txns_seen(&t, "1"));
    assert_false(mxj_sync_txns_seen(&t, "10"));

    /* bounded: the oldest forgotten once MXJ_SYNC_TXNS more came */
    for (i = 2; i <= MXJ_SYNC_TXNS; i++) {
        snprintf(id, sizeof(id), "%zu", i);
        assert_int_equal(mxj_sync_txns_add(&t, id), 0);
    }

    assert_true(mxj_sync_txns_seen(&t, "1"));
    assert_int_equal(mxj_sync_txns_add(&t, "next"), 0);
    assert_false(mxj_sync_txns_seen(&t, "1"));
    assert_true(mxj_sync_txns_seen(&t, "2"));
    assert_true(mxj_sync_txns_seen(&t, "next"));

    mxj_sync_txns_free(&t);
    assert_false(mxj_sync_txns_seen(&t, "2"));
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
        cmocka_unit_test(test_room_regex),
        cmocka_unit_test(test_as_route),
        cmocka_unit_test(test_as_tokens),
        cmocka_unit_test(test_txns),
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
