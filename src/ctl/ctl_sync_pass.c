/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: one room's pass (docs/sync.md "One pass, per
 * room"): the room ID, the forward extremities from the homeserver's own
 * make_join, the state before one of them (all of it, or what the current
 * snapshot lacks), every event received checked with the core, the edge
 * joins kept or dropped, and the snapshot loaded through load's code.
 *
 * Nothing is written to the room's snapshot keys before everything was
 * received and checked: a failed pass leaves the old snapshot as it was.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_run.h"
#include "mx_event.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_snapshot.h"


#define MXJ_SYNC_MISSING_ROUNDS  4       /* auth events fetched, rounds */
#define MXJ_SYNC_MISSING_MAX     200     /* and events in one round */
#define MXJ_SYNC_ORPHAN_MS       3600000 /* delivered records of joins
                                            no longer known: pruned */
#define MXJ_SYNC_USERS_TRIED     8       /* make_join candidates */
#define MXJ_SYNC_KEYS_AGAIN_MS   60000   /* keys this old asked again when
                                            a signature does not verify */
#define MXJ_SYNC_FED             "/_matrix/federation/v1/"


enum {
    MXJ_SYNC_BODY_STATE = 0,        /* /state: pdus and auth_chain */
    MXJ_SYNC_BODY_EVENT             /* /event/X: pdus[0], event X */
};

typedef struct {
    mx_buf_t                  text;
    int                       kind;
    char                     *expect;       /* the event asked for */
    int                       checked;
} mxj_sync_body_t;


/* A join accepted at the edge, from P{R}:unconfirmed. */
typedef struct {
    char                     *id;
    char                     *pdu;          /* the PDU, canonical */
    json_t                   *json;
    long                      passes;
    long                      old_passes;
    int                       delivered;
    int                       queued;
    mxj_sync_join_e           fate;
    const char               *why;
    mxj_sync_ev_t            *ev;
} mxj_sync_join_t;


typedef struct {
    mxj_sync_t               *s;
    mxj_sync_room_t          *room;
    char                     *why;
    size_t                    len;
    const char               *id;           /* the room ID */

    char                     *k_meta;
    char                     *k_server_user;
    char                     *k_edge_pdu;
    char                     *k_unconfirmed;
    char                     *k_delivered;
    char                     *k_outbox;

    redisReply               *read;         /* owns what follows */
    redisReply               *meta;
    const char               *server_user;
    redisReply               *delivered;
    redisReply               *outbox;

    mxj_sync_join_t          *joins;
    size_t                    njoins;

    const mx_room_version_t  *rv;
    mxj_sync_ids_t            x;            /* the forward extremities */
    int64_t                   template_depth;
    char                     *e;            /* E */

    mxj_sync_ids_t            hs_state;
    mxj_sync_ids_t            hs_auth;
    int                       full;         /* hs_* come from /state */

    mxj_sync_body_t          *bodies;
    size_t                    nbodies;

    mxj_sync_ids_t            signers;      /* servers whose keys to ask */
    mxj_sync_map_t            signers_seen;

    unsigned long             pushes;
    int64_t                   t0;
    uint64_t                  requests0;
    uint64_t                  bytes0;
    const char               *how;
    size_t                    kept, confirmed, dropped;
} mxj_sync_pass_t;


static int mxj_sync_fail(mxj_sync_pass_t *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int mxj_sync_resolve(mxj_sync_pass_t *p);
static int mxj_sync_keys(mxj_sync_pass_t *p);
static int mxj_sync_read(mxj_sync_pass_t *p);
static const char *mxj_sync_meta(mxj_sync_pass_t *p, const char *name);
static int mxj_sync_index(mxj_sync_map_t *m, redisReply *list,
    size_t step);
static int mxj_sync_make_join(mxj_sync_pass_t *p);
static int mxj_sync_try_make_join(mxj_sync_pass_t *p, const char *user,
    int *next);
static int mxj_sync_joins(mxj_sync_pass_t *p);
static int mxj_sync_extremities_json(mxj_sync_pass_t *p, mx_buf_t *out);
static void mxj_sync_judge(mxj_sync_pass_t *p, mxj_sync_map_t *known);
static int mxj_sync_unchanged(mxj_sync_pass_t *p);
static int mxj_sync_pool(mxj_sync_pass_t *p);
static int mxj_sync_pool_redis(mxj_sync_pass_t *p);
static int mxj_sync_pool_pdu(mxj_sync_pass_t *p, const char *id,
    const char *pdu, size_t len);
static int mxj_sync_fetch(mxj_sync_pass_t *p);
static int mxj_sync_choose(mxj_sync_pass_t *p);
static int mxj_sync_get_event(mxj_sync_pass_t *p, const char *id);
static int mxj_sync_get_state(mxj_sync_pass_t *p);
static int mxj_sync_received(mxj_sync_pass_t *p, const char *id);
static int mxj_sync_check(mxj_sync_pass_t *p);
static int mxj_sync_check_pdu(mxj_sync_pass_t *p, const char *text,
    size_t len, mxj_sync_body_t *b, mxj_sync_ids_t *into);
static int mxj_sync_each_pdu(mxj_sync_pass_t *p, mxj_sync_body_t *b,
    int (*fn)(mxj_sync_pass_t *p, const char *text, size_t len,
        mxj_sync_body_t *b, mxj_sync_ids_t *into));
static int mxj_sync_signers(mxj_sync_pass_t *p, const char *text,
    size_t len, mxj_sync_body_t *b, mxj_sync_ids_t *into);
static int mxj_sync_keys_again(mxj_sync_pass_t *p, const json_t *ev);
static int mxj_sync_build(mxj_sync_pass_t *p, mx_buf_t *doc);
static int mxj_sync_load(mxj_sync_pass_t *p, const char *doc, size_t len,
    mx_snapshot_t **snap);
static int mxj_sync_bookkeep(mxj_sync_pass_t *p);
static void mxj_sync_log_dropped(mxj_sync_pass_t *p, mxj_sync_join_t *j);
static void mxj_sync_pass_free(mxj_sync_pass_t *p);
static int mxj_sync_uri(mx_buf_t *out, const char *a, const char *b,
    const char *c, const char *d);
static int mxj_sync_fed_get(mxj_sync_pass_t *p, const char *a,
    const char *b, const char *c, const char *d, const char *what);
static int mxj_sync_in_ids(const mxj_sync_ids_t *l, const char *s,
    size_t n);
static mxj_sync_body_t *mxj_sync_body(mxj_sync_pass_t *p, int kind,
    const char *expect);


int
mxj_sync_pass(mxj_sync_t *s, mxj_sync_room_t *room, char *why, size_t len)
{
    int               rc;
    mx_buf_t          doc = MX_BUF_INIT;
    mx_snapshot_t    *snap;
    mxj_sync_map_t    known;
    mxj_sync_pass_t   p;
    size_t            i;

    memset(&p, 0, sizeof(mxj_sync_pass_t));
    memset(&known, 0, sizeof(mxj_sync_map_t));
    p.s = s;
    p.room = room;
    p.why = why;
    p.len = len;
    p.t0 = mxj_run_mono_ms();
    p.requests0 = s->http.requests;
    p.bytes0 = s->http.bytes_in;
    snap = NULL;
    why[0] = '\0';

    pthread_mutex_lock(&s->run.mutex);
    room->dirty = 0;
    p.pushes = room->pushes;
    pthread_mutex_unlock(&s->run.mutex);

    rc = -1;

    /* 1. the room ID; the room's records in Redis */

    if (mxj_sync_resolve(&p) != 0 || mxj_sync_keys(&p) != 0
        || mxj_sync_read(&p) != 0)
    {
        goto done;
    }

    /* 2. the forward extremities */

    if (mxj_sync_make_join(&p) != 0 || mxj_sync_joins(&p) != 0) {
        goto done;
    }

    /* nothing new upstream: the joins' passes counted, the age renewed */

    rc = mxj_sync_unchanged(&p);

    if (rc <= 0) {
        goto done;
    }

    rc = -1;

    /* 3. the state before E, 4. every event received checked */

    if (mxj_sync_pool(&p) != 0 || mxj_sync_fetch(&p) != 0
        || mxj_sync_check(&p) != 0)
    {
        goto done;
    }

    /* 5. the edge joins: confirmed, kept or dropped */

    for (i = 0; i < p.hs_state.n; i++) {
        if (mxj_sync_map_put(&known, p.hs_state.v[i], p.hs_state.v[i]) != 0)
        {
            goto nomem;
        }
    }

    for (i = 0; i < p.hs_auth.n; i++) {
        if (mxj_sync_map_put(&known, p.hs_auth.v[i], p.hs_auth.v[i]) != 0) {
            goto nomem;
        }
    }

    for (i = 0; i < p.x.n; i++) {
        if (mxj_sync_map_put(&known, p.x.v[i], p.x.v[i]) != 0) {
            goto nomem;
        }
    }

    if (mxj_sync_map_put(&known, p.e, p.e) != 0) {
        goto nomem;
    }

    mxj_sync_judge(&p, &known);

    /* 6. the snapshot, loaded as load does */

    if (mxj_sync_build(&p, &doc) != 0
        || mxj_sync_load(&p, doc.data, doc.len, &snap) != 0)
    {
        goto done;
    }

    mx_buf_free(&doc);

    if (mxj_sync_bookkeep(&p) != 0) {
        mxj_sync_log("room=%s: the edge joins' records were not updated "
                     "(the next pass judges them again)", p.id);
    }

    mxj_sync_log("room=%s synced from %s: extremity %s (%s), %zu state "
                 "events, %zu members, %zu auth chain events; edge joins "
                 "kept %zu, confirmed %zu, unconfirmed %zu; %llu requests, "
                 "%llu bytes, %.2f s",
                 p.id, s->homeserver, p.e, p.how, snap->state_events,
                 snap->members, snap->auth_chain, p.kept, p.confirmed,
                 p.dropped,
                 (unsigned long long) (s->http.requests - p.requests0),
                 (unsigned long long) (s->http.bytes_in - p.bytes0),
                 (double) (mxj_run_mono_ms() - p.t0) / 1000);

    rc = 0;
    goto done;

nomem:

    mxj_sync_fail(&p, "out of memory");

done:

    mx_snapshot_free(snap);
    mx_buf_free(&doc);
    mxj_sync_map_free(&known);

    if (rc != 0 && why[0] == '\0') {
        snprintf(why, len, "failed");
    }

    mxj_sync_pass_free(&p);

    return rc;
}


static int
mxj_sync_fail(mxj_sync_pass_t *p, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(p->why, p->len, fmt, args);
    va_end(args);

    return -1;
}


static void
mxj_sync_pass_free(mxj_sync_pass_t *p)
{
    size_t  i;

    free(p->k_meta);
    free(p->k_server_user);
    free(p->k_edge_pdu);
    free(p->k_unconfirmed);
    free(p->k_delivered);
    free(p->k_outbox);

    if (p->read != NULL) {
        freeReplyObject(p->read);
    }

    for (i = 0; i < p->njoins; i++) {
        free(p->joins[i].id);
        free(p->joins[i].pdu);
        json_decref(p->joins[i].json);
        mxj_sync_ev_free(p->joins[i].ev);
    }

    free(p->joins);

    for (i = 0; i < p->nbodies; i++) {
        mx_buf_free(&p->bodies[i].text);
        free(p->bodies[i].expect);
    }

    free(p->bodies);
    free(p->e);
    mxj_sync_ids_free(&p->signers);
    mxj_sync_map_free(&p->signers_seen);
    mxj_sync_ids_free(&p->x);
    mxj_sync_ids_free(&p->hs_state);
    mxj_sync_ids_free(&p->hs_auth);
}


/* A federation URI: the prefix, then each part escaped, then the rest. */

static int
mxj_sync_uri(mx_buf_t *out, const char *a, const char *b, const char *c,
    const char *d)
{
    mx_buf_reset(out);

    if (mx_buf_append_str(out, a) != 0
        || (b != NULL && mxj_sync_uri_escape(out, b) != 0)
        || (c != NULL && mx_buf_append_str(out, c) != 0)
        || (d != NULL && mxj_sync_uri_escape(out, d) != 0))
    {
        return -1;
    }

    return 0;
}


/*
 * GET of the federation URI mxj_sync_uri makes of a, b, c, d: 0 with the
 * answer in p->s->http.body, or -1 with p->why (what names the request).
 */

static int
mxj_sync_fed_get(mxj_sync_pass_t *p, const char *a, const char *b,
    const char *c, const char *d, const char *what)
{
    long      status;
    mx_buf_t  uri = MX_BUF_INIT;

    if (mxj_sync_uri(&uri, a, b, c, d) != 0) {
        mx_buf_free(&uri);
        return mxj_sync_fail(p, "out of memory");
    }

    status = mxj_sync_http_request(&p->s->http, "GET", uri.data, NULL, 1);
    mx_buf_free(&uri);

    if (status != 200) {
        mxj_sync_http_why(&p->s->http, what, p->why, p->len);
        return -1;
    }

    return 0;
}


/* --- 1. the room ------------------------------------------------------- */

int
mxj_sync_resolve_room(mxj_sync_t *s, mxj_sync_room_t *room, char *why,
    size_t len)
{
    mxj_sync_pass_t  p;

    memset(&p, 0, sizeof(mxj_sync_pass_t));
    p.s = s;
    p.room = room;
    p.why = why;
    p.len = len;
    why[0] = '\0';

    return mxj_sync_resolve(&p);
}


static int
mxj_sync_resolve(mxj_sync_pass_t *p)
{
    char             *id;
    json_t           *doc;
    const char       *rid;
    mxj_sync_room_t  *room;

    room = p->room;

    if (room->alias == NULL) {
        p->id = room->id;
        return 0;
    }

    if (mxj_sync_fed_get(p, MXJ_SYNC_FED "query/directory?room_alias=",
                         room->alias, NULL, NULL,
                         "the directory query of the alias")
        != 0)
    {
        return -1;
    }

    doc = json_loadb(p->s->http.body.data, p->s->http.body.len, 0, NULL);
    rid = json_string_value(json_object_get(doc, "room_id"));

    if (rid == NULL || !mx_room_id_valid(rid, strlen(rid), 1)) {
        json_decref(doc);
        return mxj_sync_fail(p, "the directory query of %s answered no "
                             "valid room_id", room->alias);
    }

    if (room->id == NULL || strcmp(room->id, rid) != 0) {
        if (room->id != NULL) {
            mxj_sync_log("alias %s now names room %s (was %s)", room->alias,
                         rid, room->id);
        }

        /* another room: what was cached of the old one goes */

        id = strdup(rid);

        if (id == NULL) {
            json_decref(doc);
            return mxj_sync_fail(p, "out of memory");
        }

        pthread_mutex_lock(&p->s->run.mutex);
        free(room->id);
        room->id = id;
        pthread_mutex_unlock(&p->s->run.mutex);

        mxj_sync_pool_free(&room->pool);
        room->generation[0] = '\0';
    }

    json_decref(doc);
    p->id = room->id;

    return 0;
}


static int
mxj_sync_keys(mxj_sync_pass_t *p)
{
    mxj_redis_t  *r;

    r = &p->s->r;

    p->k_meta = mxj_room_key(r, p->id, MX_KEY_META);
    p->k_server_user = mxj_room_key(r, p->id, MX_KEY_SERVER_USER);
    p->k_edge_pdu = mxj_room_key(r, p->id, MX_KEY_EDGE_PDU);
    p->k_unconfirmed = mxj_room_key(r, p->id, MX_KEY_UNCONFIRMED);
    p->k_delivered = mxj_room_key(r, p->id, MX_KEY_DELIVERED);
    p->k_outbox = mxj_room_key(r, p->id, MX_KEY_OUTBOX);

    if (p->k_meta == NULL || p->k_server_user == NULL
        || p->k_edge_pdu == NULL || p->k_unconfirmed == NULL
        || p->k_delivered == NULL || p->k_outbox == NULL)
    {
        return mxj_sync_fail(p, "out of memory");
    }

    return 0;
}


static int
mxj_sync_read(mxj_sync_pass_t *p)
{
    redisReply  *reply;

    if (p->s->r.c == NULL || p->s->r.c->err) {
        mxj_redis_close(&p->s->r);

        if (mxj_redis_connect(&p->s->r) != 0) {
            return mxj_sync_fail(p, "Redis at %s is unavailable",
                                 p->s->r.address);
        }
    }

    /* src/lua/sync_read.lua: every record of the pass, as one generation */

    reply = mxj_redis_script(&p->s->r, MX_LUA_SYNC_READ, 6, 7,
                             (const char *[]) { p->k_meta, p->k_server_user,
                                                p->k_edge_pdu,
                                                p->k_unconfirmed,
                                                p->k_delivered, p->k_outbox,
                                                p->s->name },
                             NULL);
    if (reply == NULL) {
        return mxj_sync_fail(p, "reading the room's records from Redis "
                             "failed");
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[2]->type != REDIS_REPLY_ARRAY
        || reply->element[3]->type != REDIS_REPLY_ARRAY
        || reply->element[4]->type != REDIS_REPLY_ARRAY)
    {
        freeReplyObject(reply);
        return mxj_sync_fail(p, "unexpected reply reading the room's "
                             "records from Redis");
    }

    p->read = reply;
    p->meta = reply->element[0];
    p->server_user = reply->element[1]->str;
    p->delivered = reply->element[3];
    p->outbox = reply->element[4];

    /* the joins: parsed once the room version is known */

    p->njoins = reply->element[2]->elements / 2;

    if (p->njoins > 0) {
        p->joins = calloc(p->njoins, sizeof(mxj_sync_join_t));

        if (p->joins == NULL) {
            p->njoins = 0;
            return mxj_sync_fail(p, "out of memory");
        }
    }

    return 0;
}


static const char *
mxj_sync_meta(mxj_sync_pass_t *p, const char *name)
{
    size_t  i;

    for (i = 0; i + 1 < p->meta->elements; i += 2) {
        if (strcmp(p->meta->element[i]->str, name) == 0) {
            return p->meta->element[i + 1]->str;
        }
    }

    return NULL;
}


/* A reply's strings (step 2: an HGETALL's fields) as a set. */

static int
mxj_sync_index(mxj_sync_map_t *m, redisReply *list, size_t step)
{
    size_t  i;

    for (i = 0; i < list->elements; i += step) {
        if (list->element[i]->type == REDIS_REPLY_STRING
            && mxj_sync_map_put(m, list->element[i]->str,
                                list->element[i]) != 0)
        {
            return -1;
        }
    }

    return 0;
}


/* --- 2. the forward extremities ---------------------------------------- */

/*
 * make_join for a joined local user: the template's prev_events are the
 * room's forward extremities (a soft-failed event is never one). The
 * candidates: the snapshot's joined user of NAME, the --user options,
 * then @matrix-join-sync:NAME; a 403 or 404 tries the next.
 */

static int
mxj_sync_make_join(mxj_sync_pass_t *p)
{
    int              next;
    char             tried[MXJ_SYNC_WHY_LEN];
    size_t           i, n;
    mx_buf_t         sync_user = MX_BUF_INIT;
    mxj_sync_ids_t   cands;

    memset(&cands, 0, sizeof(mxj_sync_ids_t));

    if (p->server_user[0] != '\0'
        && mxj_sync_ids_push(&cands, p->server_user) != 0)
    {
        return mxj_sync_fail(p, "out of memory");
    }

    for (i = 0; i < p->s->users.n; i++) {
        if (mxj_sync_ids_push(&cands, p->s->users.v[i]) != 0) {
            mxj_sync_ids_free(&cands);
            return mxj_sync_fail(p, "out of memory");
        }
    }

    if (mx_buf_append_str(&sync_user, "@" MXJ_SYNC_LOCALPART ":") != 0
        || mx_buf_append_str(&sync_user, p->s->name) != 0
        || mxj_sync_ids_push(&cands, sync_user.data) != 0)
    {
        mx_buf_free(&sync_user);
        mxj_sync_ids_free(&cands);
        return mxj_sync_fail(p, "out of memory");
    }

    mx_buf_free(&sync_user);

    tried[0] = '\0';
    n = 0;

    for (i = 0; i < cands.n && n < MXJ_SYNC_USERS_TRIED; i++) {
        if (i > 0 && mxj_sync_in_ids(&cands, cands.v[i], i)) {
            continue;
        }

        n++;
        next = 0;

        if (mxj_sync_try_make_join(p, cands.v[i], &next) == 0) {
            mxj_sync_ids_free(&cands);
            return 0;
        }

        if (!next) {
            mxj_sync_ids_free(&cands);
            return -1;
        }

        snprintf(tried + strlen(tried), sizeof(tried) - strlen(tried),
                 "%s%s", tried[0] ? "; " : "", p->why);
    }

    mxj_sync_ids_free(&cands);

    return mxj_sync_fail(p, "no local user could make_join: %s", tried);
}


static int
mxj_sync_in_ids(const mxj_sync_ids_t *l, const char *s, size_t n)
{
    size_t  i;

    for (i = 0; i < n && i < l->n; i++) {
        if (strcmp(l->v[i], s) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
mxj_sync_try_make_join(mxj_sync_pass_t *p, const char *user, int *next)
{
    long                      status;
    char                      what[300];
    size_t                    i, n;
    json_t                   *doc, *ev, *prev, *r, *d;
    mx_buf_t                  uri = MX_BUF_INIT;
    const char               *ver;
    const mx_room_version_t  *versions;

    versions = mx_room_versions(&n);

    if (mxj_sync_uri(&uri, MXJ_SYNC_FED "make_join/", p->id, "/", user)
        != 0)
    {
        goto nomem;
    }

    for (i = 0; i < n; i++) {
        if (mx_buf_append_str(&uri, i ? "&ver=" : "?ver=") != 0
            || mx_buf_append_str(&uri, versions[i].id) != 0)
        {
            goto nomem;
        }
    }

    status = mxj_sync_http_request(&p->s->http, "GET", uri.data, NULL, 1);
    mx_buf_free(&uri);

    if (status != 200) {
        snprintf(what, sizeof(what), "make_join for %.255s", user);
        mxj_sync_http_why(&p->s->http, what, p->why, p->len);
        *next = (status == 403 || status == 404);
        return -1;
    }

    doc = json_loadb(p->s->http.body.data, p->s->http.body.len, 0, NULL);
    ver = json_string_value(json_object_get(doc, "room_version"));
    ev = json_object_get(doc, "event");
    prev = json_object_get(ev, "prev_events");
    d = json_object_get(ev, "depth");

    if (ver == NULL || !json_is_array(prev) || json_array_size(prev) == 0
        || !json_is_integer(d))
    {
        json_decref(doc);
        return mxj_sync_fail(p, "make_join for %s: no room_version, "
                             "prev_events or depth in the answer", user);
    }

    p->rv = mx_room_version(ver, strlen(ver));

    if (p->rv == NULL) {
        json_decref(doc);
        return mxj_sync_fail(p, "make_join for %s: unknown room version "
                             "\"%.32s\"", user, ver);
    }

    p->template_depth = json_integer_value(d);

    for (i = 0; i < json_array_size(prev); i++) {
        r = json_array_get(prev, i);

        if (p->rv->event_refs_with_hashes) {
            r = json_is_array(r) ? json_array_get(r, 0) : NULL;
        }

        if (!json_is_string(r) || json_string_length(r) == 0
            || json_string_length(r) >= MX_EVENT_ID_MAX
            || memchr(json_string_value(r), '\0', json_string_length(r)))
        {
            json_decref(doc);
            return mxj_sync_fail(p, "make_join for %s: prev_events[%zu] is "
                                 "not an event ID", user, i);
        }

        if (!mxj_sync_in_ids(&p->x, json_string_value(r), p->x.n)
            && mxj_sync_ids_push(&p->x, json_string_value(r)) != 0)
        {
            json_decref(doc);
            return mxj_sync_fail(p, "out of memory");
        }
    }

    json_decref(doc);

    return 0;

nomem:

    mx_buf_free(&uri);

    return mxj_sync_fail(p, "out of memory");
}


/* The joins of P{R}:unconfirmed, parsed now that the version is known. */

static int
mxj_sync_joins(mxj_sync_pass_t *p)
{
    char              id[MX_EVENT_ID_MAX];
    size_t            i;
    json_t           *rec, *pdu, *passes;
    mx_err_t          err;
    redisReply       *list;
    mxj_sync_map_t    delivered, queued;
    mxj_sync_join_t  *j;

    list = p->read->element[2];

    memset(&delivered, 0, sizeof(mxj_sync_map_t));
    memset(&queued, 0, sizeof(mxj_sync_map_t));

    if (p->njoins > 0
        && (mxj_sync_index(&delivered, p->delivered, 2) != 0
            || mxj_sync_index(&queued, p->outbox, 1) != 0))
    {
        mxj_sync_map_free(&delivered);
        mxj_sync_map_free(&queued);
        return mxj_sync_fail(p, "out of memory");
    }

    for (i = 0; i < p->njoins; i++) {
        j = &p->joins[i];
        j->id = strdup(list->element[2 * i]->str);

        if (j->id == NULL) {
            mxj_sync_map_free(&delivered);
            mxj_sync_map_free(&queued);
            return mxj_sync_fail(p, "out of memory");
        }

        j->delivered = (mxj_sync_map_get(&delivered, j->id) != NULL);
        j->queued = (mxj_sync_map_get(&queued, j->id) != NULL);

        rec = mx_json_parse(list->element[2 * i + 1]->str,
                            list->element[2 * i + 1]->len, 0, &err);
        pdu = json_object_get(rec, "pdu");
        passes = json_object_get(rec, "passes");

        if (!json_is_object(pdu) || !json_is_integer(passes)
            || mx_event_id(p->rv, pdu, id, sizeof(id), &err) < 0
            || strcmp(id, j->id) != 0)
        {
            mxj_sync_log("room=%s: the record of edge join %s in %s is not "
                         "{\"pdu\": <its PDU>, \"passes\": N}: removed",
                         p->id, j->id, p->k_unconfirmed);
            json_decref(rec);
            j->fate = MXJ_SYNC_JOIN_CONFIRMED;
            j->why = "malformed";
            continue;
        }

        j->old_passes = json_integer_value(passes);
        j->json = json_incref(pdu);
        json_decref(rec);

        j->pdu = mx_json_canonical_str(j->json, NULL, &err);
        j->ev = mxj_sync_ev_new(p->rv, j->json, j->id, &err);

        if (j->pdu == NULL || j->ev == NULL) {
            mxj_sync_map_free(&delivered);
            mxj_sync_map_free(&queued);
            return mxj_sync_fail(p, "edge join %s: %s", j->id, err.text);
        }
    }

    mxj_sync_map_free(&delivered);
    mxj_sync_map_free(&queued);

    return 0;
}


static int
mxj_sync_extremities_json(mxj_sync_pass_t *p, mx_buf_t *out)
{
    size_t   i, k;
    char   **v, *t;

    v = malloc(p->x.n * sizeof(char *));
    if (v == NULL) {
        return -1;
    }

    memcpy(v, p->x.v, p->x.n * sizeof(char *));

    /* a few IDs: an insertion sort */

    for (i = 1; i < p->x.n; i++) {
        for (k = i; k > 0 && strcmp(v[k - 1], v[k]) > 0; k--) {
            t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    }

    if (mx_buf_append_byte(out, '[') != 0) {
        free(v);
        return -1;
    }

    for (i = 0; i < p->x.n; i++) {
        if ((i && mx_buf_append_byte(out, ',') != 0)
            || mx_json_canonical_string(v[i], strlen(v[i]), out) != 0)
        {
            free(v);
            return -1;
        }
    }

    free(v);

    return mx_buf_append_byte(out, ']');
}


/* Each join's fate, against what the homeserver is known to hold. */

static void
mxj_sync_judge(mxj_sync_pass_t *p, mxj_sync_map_t *known)
{
    size_t            i;
    mxj_sync_join_t  *j;

    p->kept = 0;
    p->confirmed = 0;
    p->dropped = 0;

    for (i = 0; i < p->njoins; i++) {
        j = &p->joins[i];

        if (j->ev == NULL) {
            continue;           /* a malformed record: removed */
        }

        j->passes = j->old_passes;
        j->fate = mxj_sync_judge_join(mxj_sync_map_get(known, j->id)
                                      != NULL,
                                      j->delivered, j->queued, &j->passes,
                                      p->s->confirm_passes, &j->why);

        switch (j->fate) {

        case MXJ_SYNC_JOIN_CONFIRMED:
            p->confirmed++;
            break;

        case MXJ_SYNC_JOIN_KEEP:
            p->kept++;
            break;

        default:
            p->dropped++;
            break;
        }
    }
}


/*
 * The extremities are those the last pass loaded from (meta), the snapshot
 * is ours and not stale, and no join is to be dropped: nothing to fetch.
 * The joins' passes are counted, loaded_at renewed (the snapshot was
 * checked against the homeserver now). 0 when so, 1 when the pass must
 * fetch, -1 on an error.
 */

static int
mxj_sync_unchanged(mxj_sync_pass_t *p)
{
    int              rc;
    size_t           i;
    mx_buf_t         ext = MX_BUF_INIT;
    const char      *gen, *from, *was;
    redisReply      *reply;
    mxj_sync_map_t   known;

    gen = mxj_sync_meta(p, MX_META_GENERATION);
    from = mxj_sync_meta(p, MX_META_SYNCED_FROM);
    was = mxj_sync_meta(p, MX_META_SYNCED_EXTREMITIES);

    if (gen == NULL || from == NULL || was == NULL
        || strcmp(from, p->s->homeserver) != 0
        || mxj_sync_meta(p, MX_META_STALE) != NULL)
    {
        return 1;
    }

    if (mxj_sync_extremities_json(p, &ext) != 0) {
        mx_buf_free(&ext);
        return mxj_sync_fail(p, "out of memory");
    }

    rc = strcmp(ext.data, was);
    mx_buf_free(&ext);

    if (rc != 0) {
        return 1;
    }

    memset(&known, 0, sizeof(mxj_sync_map_t));

    for (i = 0; i < p->x.n; i++) {
        if (mxj_sync_map_put(&known, p->x.v[i], p->x.v[i]) != 0) {
            mxj_sync_map_free(&known);
            return mxj_sync_fail(p, "out of memory");
        }
    }

    mxj_sync_judge(p, &known);
    mxj_sync_map_free(&known);

    if (p->dropped > 0) {
        return 1;
    }

    reply = mxj_redis_script(&p->s->r, MX_LUA_SYNC_FRESH, 1, 2,
                             (const char *[]) { p->k_meta, gen }, NULL);
    if (reply == NULL) {
        return mxj_sync_fail(p, "renewing loaded_at failed");
    }

    rc = (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1);
    freeReplyObject(reply);

    if (!rc) {
        return 1;               /* loaded by someone else meanwhile */
    }

    if (mxj_sync_bookkeep(p) != 0) {
        mxj_sync_log("room=%s: the edge joins' records were not updated "
                     "(the next pass judges them again)", p->id);
    }

    mxj_sync_log("room=%s unchanged on %s: %zu forward extremities as at "
                 "the last pass, nothing fetched; edge joins kept %zu; "
                 "%llu requests, %.2f s", p->id, p->s->homeserver, p->x.n,
                 p->kept,
                 (unsigned long long) (p->s->http.requests - p->requests0),
                 (double) (mxj_run_mono_ms() - p->t0) / 1000);

    return 0;
}


/* --- 3. the state before E --------------------------------------------- */

/*
 * The events the current snapshot holds, by ID: what the last pass of this
 * process kept, or read from Redis (one generation, in one MULTI).
 */

static int
mxj_sync_pool(mxj_sync_pass_t *p)
{
    const char       *gen;
    mxj_sync_room_t  *room;

    room = p->room;
    gen = mxj_sync_meta(p, MX_META_GENERATION);

    if (gen != NULL && strcmp(room->generation, gen) == 0
        && room->pool.map.n > 0)
    {
        return 0;
    }

    mxj_sync_pool_free(&room->pool);
    room->generation[0] = '\0';

    if (gen == NULL) {
        return 0;
    }

    if (mxj_sync_pool_redis(p) != 0) {
        if (p->why[0] != '\0' && strcmp(p->why, "out of memory") == 0) {
            return -1;
        }

        mxj_sync_log("room=%s: the current snapshot could not be read (%s): "
                     "fetching all of the state", p->id,
                     p->why[0] ? p->why : "?");
        mxj_sync_pool_free(&room->pool);
        p->why[0] = '\0';
    }

    return 0;
}


static int
mxj_sync_pool_redis(mxj_sync_pass_t *p)
{
    int               rc;
    char             *k[7];
    size_t            i, c, o, l;
    mx_buf_t          skey = MX_BUF_INIT;
    redisReply       *reply, *pdu, *state, *mchunk, *orig, *chunks, *edge;
    redisContext     *ctx;
    const char       *gen, *id, *where;
    mxj_redis_t      *r;
    mxj_sync_map_t    st, om;

    static const char  *names[] = {
        MX_KEY_PDU, MX_KEY_STATE, MX_KEY_MCHUNK, MX_KEY_EDGE_ORIG,
        MX_KEY_STATE_M, MX_KEY_EDGE_PDU, MX_KEY_META
    };

    r = &p->s->r;
    ctx = r->c;
    gen = mxj_sync_meta(p, MX_META_GENERATION);
    rc = -1;
    reply = NULL;

    memset(k, 0, sizeof(k));
    memset(&st, 0, sizeof(mxj_sync_map_t));
    memset(&om, 0, sizeof(mxj_sync_map_t));

    for (i = 0; i < 7; i++) {
        k[i] = mxj_room_key(r, p->id, names[i]);

        if (k[i] == NULL) {
            mxj_sync_fail(p, "out of memory");
            goto done;
        }
    }

    redisAppendCommand(ctx, "MULTI");
    redisAppendCommand(ctx, "HGET %s generation", k[6]);
    redisAppendCommand(ctx, "HGETALL %s", k[0]);
    redisAppendCommand(ctx, "HGETALL %s", k[1]);
    redisAppendCommand(ctx, "HGETALL %s", k[2]);
    redisAppendCommand(ctx, "HGETALL %s", k[3]);
    redisAppendCommand(ctx, "LRANGE %s 0 -1", k[4]);
    redisAppendCommand(ctx, "HGETALL %s", k[5]);
    redisAppendCommand(ctx, "EXEC");

    for (i = 0; i < 9; i++) {
        if (reply != NULL) {
            freeReplyObject(reply);
            reply = NULL;
        }

        if (redisGetReply(ctx, (void **) &reply) != REDIS_OK) {
            reply = NULL;
            mxj_sync_fail(p, "Redis at %s: %s", r->address, ctx->errstr);
            goto done;
        }
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 7) {
        mxj_sync_fail(p, "reading the snapshot: unexpected reply");
        goto done;
    }

    for (i = 1; i < 7; i++) {
        if (reply->element[i]->type != REDIS_REPLY_ARRAY) {
            mxj_sync_fail(p, "reading the snapshot: %s is not a hash or "
                          "list", k[i - 1]);
            goto done;
        }
    }

    if (reply->element[0]->type != REDIS_REPLY_STRING
        || strcmp(reply->element[0]->str, gen) != 0)
    {
        mxj_sync_fail(p, "loaded again meanwhile");
        goto done;
    }

    pdu = reply->element[1];
    state = reply->element[2];
    mchunk = reply->element[3];
    orig = reply->element[4];
    chunks = reply->element[5];
    edge = reply->element[6];

    for (i = 0; i + 1 < pdu->elements; i += 2) {
        if (mxj_sync_pool_pdu(p, pdu->element[i]->str,
                              pdu->element[i + 1]->str,
                              pdu->element[i + 1]->len) != 0)
        {
            goto done;
        }
    }

    for (i = 0; i + 1 < edge->elements; i += 2) {
        if (mxj_sync_pool_pdu(p, edge->element[i]->str,
                              edge->element[i + 1]->str,
                              edge->element[i + 1]->len) != 0)
        {
            goto done;
        }
    }

    /*
     * The member events: their bytes where mchunk says, their ID the
     * state's, or for a user who joined again at the edge, edge_orig's.
     */

    for (i = 0; i + 1 < state->elements; i += 2) {
        if (mxj_sync_map_put(&st, state->element[i]->str,
                             state->element[i + 1]->str) != 0)
        {
            mxj_sync_fail(p, "out of memory");
            goto done;
        }
    }

    for (i = 0; i + 1 < orig->elements; i += 2) {
        if (mxj_sync_map_put(&om, orig->element[i]->str,
                             orig->element[i + 1]->str) != 0)
        {
            mxj_sync_fail(p, "out of memory");
            goto done;
        }
    }

    for (i = 0; i + 1 < mchunk->elements; i += 2) {
        id = mxj_sync_map_get(&om, mchunk->element[i]->str);

        if (id == NULL) {
            mx_buf_reset(&skey);

            if (mx_buf_append_str(&skey, "[\"m.room.member\",") != 0
                || mx_json_canonical_string(mchunk->element[i]->str,
                                            mchunk->element[i]->len, &skey)
                   != 0
                || mx_buf_append_byte(&skey, ']') != 0)
            {
                mxj_sync_fail(p, "out of memory");
                goto done;
            }

            id = mxj_sync_map_get(&st, skey.data);
        }

        where = mchunk->element[i + 1]->str;

        if (id == NULL
            || sscanf(where, "%zu:%zu:%zu", &c, &o, &l) != 3
            || c >= chunks->elements || o > chunks->element[c]->len
            || l > chunks->element[c]->len - o)
        {
            mxj_sync_fail(p, "mchunk of %.100s: \"%.64s\" is not in the "
                          "chunks", mchunk->element[i]->str, where);
            goto done;
        }

        if (mxj_sync_pool_pdu(p, id, chunks->element[c]->str + o, l) != 0) {
            goto done;
        }
    }

    snprintf(p->room->generation, sizeof(p->room->generation), "%s", gen);
    rc = 0;

done:

    if (reply != NULL) {
        freeReplyObject(reply);
    }

    for (i = 0; i < 7; i++) {
        free(k[i]);
    }

    mx_buf_free(&skey);
    mxj_sync_map_free(&st);
    mxj_sync_map_free(&om);

    return rc;
}


static int
mxj_sync_pool_pdu(mxj_sync_pass_t *p, const char *id, const char *pdu,
    size_t len)
{
    json_t         *ev;
    mx_err_t        err;
    mxj_sync_ev_t  *x;

    if (mxj_sync_pool_get(&p->room->pool, id) != NULL) {
        return 0;
    }

    ev = mx_json_parse(pdu, len, 0, &err);

    if (ev == NULL) {
        return mxj_sync_fail(p, "the snapshot's event %.100s: %s", id,
                             err.text);
    }

    x = mxj_sync_ev_new(p->rv, ev, id, &err);
    json_decref(ev);

    if (x == NULL) {
        return mxj_sync_fail(p, "the snapshot's event %.100s: %s", id,
                             err.text);
    }

    if (mxj_sync_pool_add(&p->room->pool, x) != 0) {
        return mxj_sync_fail(p, "out of memory");
    }

    return 0;
}


/*
 * E and the events to check: with a snapshot to start from, /state_ids
 * and /event for what it lacks (one /state when more than 50 are
 * missing); without, one /state. E itself with /event when not held.
 */

static int
mxj_sync_fetch(mxj_sync_pass_t *p)
{
    size_t            i, k;
    json_t           *doc, *lists[2], *v;
    mxj_sync_ids_t    missing, *into[2];
    mxj_sync_map_t    seen;

    if (mxj_sync_choose(p) != 0) {
        return -1;
    }

    if (p->room->pool.map.n == 0) {
        p->how = "full";
        goto full;
    }

    if (mxj_sync_fed_get(p, MXJ_SYNC_FED "state_ids/", p->id, "?event_id=",
                         p->e, "/state_ids")
        != 0)
    {
        return -1;
    }

    doc = json_loadb(p->s->http.body.data, p->s->http.body.len, 0, NULL);
    lists[0] = json_object_get(doc, "pdu_ids");
    lists[1] = json_object_get(doc, "auth_chain_ids");
    into[0] = &p->hs_state;
    into[1] = &p->hs_auth;

    if (!json_is_array(lists[0]) || !json_is_array(lists[1])) {
        json_decref(doc);
        return mxj_sync_fail(p, "/state_ids: no pdu_ids or auth_chain_ids "
                             "list");
    }

    memset(&missing, 0, sizeof(mxj_sync_ids_t));
    memset(&seen, 0, sizeof(mxj_sync_map_t));

    for (k = 0; k < 2; k++) {
        for (i = 0; i < json_array_size(lists[k]); i++) {
            v = json_array_get(lists[k], i);

            if (!json_is_string(v) || json_string_length(v) == 0
                || json_string_length(v) >= MX_EVENT_ID_MAX
                || memchr(json_string_value(v), '\0', json_string_length(v)))
            {
                json_decref(doc);
                mxj_sync_ids_free(&missing);
                mxj_sync_map_free(&seen);
                return mxj_sync_fail(p, "/state_ids: an entry is not an "
                                     "event ID");
            }

            if (mxj_sync_ids_push(into[k], json_string_value(v)) != 0) {
                goto nomem;
            }

            if (mxj_sync_pool_get(&p->room->pool, json_string_value(v))
                != NULL
                || mxj_sync_received(p, json_string_value(v))
                || mxj_sync_map_get(&seen, json_string_value(v)) != NULL)
            {
                continue;
            }

            if (mxj_sync_ids_push(&missing, json_string_value(v)) != 0
                || mxj_sync_map_put(&seen, missing.v[missing.n - 1],
                                    missing.v[missing.n - 1]) != 0)
            {
                goto nomem;
            }
        }
    }

    json_decref(doc);
    doc = NULL;

    if (mxj_sync_pool_get(&p->room->pool, p->e) == NULL
        && !mxj_sync_received(p, p->e)
        && mxj_sync_map_get(&seen, p->e) == NULL
        && mxj_sync_ids_push(&missing, p->e) != 0)
    {
        goto nomem;
    }

    mxj_sync_map_free(&seen);

    if (missing.n > MXJ_SYNC_INCREMENTAL_MAX) {
        mxj_sync_ids_free(&missing);
        mxj_sync_ids_free(&p->hs_state);
        mxj_sync_ids_free(&p->hs_auth);
        p->how = "incremental, one /state";
        goto full;
    }

    p->how = "incremental";

    for (i = 0; i < missing.n; i++) {
        if (mxj_sync_get_event(p, missing.v[i]) != 0) {
            mxj_sync_ids_free(&missing);
            return -1;
        }
    }

    mxj_sync_ids_free(&missing);

    return 0;

full:

    p->full = 1;

    if (mxj_sync_get_state(p) != 0) {
        return -1;
    }

    if (mxj_sync_pool_get(&p->room->pool, p->e) == NULL
        && !mxj_sync_received(p, p->e))
    {
        return mxj_sync_get_event(p, p->e);
    }

    return 0;

nomem:

    json_decref(doc);
    mxj_sync_ids_free(&missing);
    mxj_sync_map_free(&seen);

    return mxj_sync_fail(p, "out of memory");
}


/*
 * E: the deepest extremity, ties by ID (the first in byte order). The
 * template's depth is one more than the deepest's, so in ID order the
 * first extremity of that depth is E, and the others need not be asked.
 */

static int
mxj_sync_choose(mxj_sync_pass_t *p)
{
    char            **v, *t, *best;
    size_t            i, k;
    json_t           *doc, *d;
    int64_t           depth, best_depth;
    const char       *el, *list;
    size_t            el_len, list_len, pos;
    mxj_sync_ev_t    *ev;
    mxj_sync_body_t  *b;

    if (p->x.n == 1) {
        p->e = strdup(p->x.v[0]);
        return p->e ? 0 : mxj_sync_fail(p, "out of memory");
    }

    v = malloc(p->x.n * sizeof(char *));
    if (v == NULL) {
        return mxj_sync_fail(p, "out of memory");
    }

    memcpy(v, p->x.v, p->x.n * sizeof(char *));

    for (i = 1; i < p->x.n; i++) {
        for (k = i; k > 0 && strcmp(v[k - 1], v[k]) > 0; k--) {
            t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    }

    best = NULL;
    best_depth = -1;

    for (i = 0; i < p->x.n; i++) {
        ev = mxj_sync_pool_get(&p->room->pool, v[i]);

        if (ev != NULL) {
            depth = ev->depth;

        } else {
            /* its depth as sent; it is checked with the rest */

            if (mxj_sync_get_event(p, v[i]) != 0) {
                free(v);
                return -1;
            }

            b = &p->bodies[p->nbodies - 1];
            depth = -1;
            pos = 0;

            if (mxj_sync_json_member(b->text.data, b->text.len, "pdus",
                                     &list, &list_len) == 0
                && mxj_sync_json_next(list, list_len, &pos, &el, &el_len)
                   == 1)
            {
                doc = json_loadb(el, el_len, 0, NULL);
                d = json_object_get(doc, "depth");

                if (json_is_integer(d)) {
                    depth = json_integer_value(d);
                }

                json_decref(doc);
            }

            if (depth < 0) {
                mxj_sync_fail(p, "/event/%s: no event with a depth", v[i]);
                free(v);
                return -1;
            }
        }

        if (depth > best_depth) {
            best = v[i];
            best_depth = depth;
        }

        if (depth == p->template_depth - 1) {
            break;
        }
    }

    p->e = strdup(best);
    free(v);

    return p->e ? 0 : mxj_sync_fail(p, "out of memory");
}


static mxj_sync_body_t *
mxj_sync_body(mxj_sync_pass_t *p, int kind, const char *expect)
{
    mxj_sync_body_t  *b;

    b = realloc(p->bodies, (p->nbodies + 1) * sizeof(mxj_sync_body_t));
    if (b == NULL) {
        return NULL;
    }

    p->bodies = b;
    b = &p->bodies[p->nbodies];
    memset(b, 0, sizeof(mxj_sync_body_t));

    if (expect != NULL) {
        b->expect = strdup(expect);

        if (b->expect == NULL) {
            return NULL;
        }
    }

    b->kind = kind;

    /* the answer moves over, no copy of a big /state */

    b->text = p->s->http.body;
    memset(&p->s->http.body, 0, sizeof(mx_buf_t));
    p->nbodies++;

    return b;
}


static int
mxj_sync_get_event(mxj_sync_pass_t *p, const char *id)
{
    char  what[MX_EVENT_ID_MAX + 16];

    snprintf(what, sizeof(what), "/event/%s", id);

    if (mxj_sync_fed_get(p, MXJ_SYNC_FED "event/", id, NULL, NULL, what)
        != 0)
    {
        return -1;
    }

    if (mxj_sync_body(p, MXJ_SYNC_BODY_EVENT, id) == NULL) {
        return mxj_sync_fail(p, "out of memory");
    }

    return 0;
}


static int
mxj_sync_get_state(mxj_sync_pass_t *p)
{
    if (mxj_sync_fed_get(p, MXJ_SYNC_FED "state/", p->id, "?event_id=", p->e,
                         "/state")
        != 0)
    {
        return -1;
    }

    if (mxj_sync_body(p, MXJ_SYNC_BODY_STATE, NULL) == NULL) {
        return mxj_sync_fail(p, "out of memory");
    }

    return 0;
}


static int
mxj_sync_received(mxj_sync_pass_t *p, const char *id)
{
    size_t  i;

    for (i = 0; i < p->nbodies; i++) {
        if (p->bodies[i].expect != NULL
            && strcmp(p->bodies[i].expect, id) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* --- 4. checks --------------------------------------------------------- */

/*
 * Every event received: the keys of the servers that signed them first,
 * from the homeserver's notary, all at once; then each event checked and
 * kept by ID.
 */

static int
mxj_sync_check(mxj_sync_pass_t *p)
{
    size_t  i;
    char    why[MXJ_SYNC_WHY_LEN];

    for (i = 0; i < p->nbodies; i++) {
        if (!p->bodies[i].checked
            && mxj_sync_each_pdu(p, &p->bodies[i], mxj_sync_signers) != 0)
        {
            return -1;
        }
    }

    if (p->signers.n > 0
        && mxj_sync_keyring_fetch(&p->s->keyring, &p->s->http, &p->signers,
                                  why, sizeof(why)) != 0)
    {
        return mxj_sync_fail(p, "server keys: %s", why);
    }

    for (i = 0; i < p->nbodies; i++) {
        if (p->bodies[i].checked) {
            continue;
        }

        if (mxj_sync_each_pdu(p, &p->bodies[i], mxj_sync_check_pdu) != 0) {
            return -1;
        }

        /* checked and kept as events: the text is not needed any more */

        p->bodies[i].checked = 1;
        mx_buf_free(&p->bodies[i].text);
    }

    return 0;
}


/*
 * Calls fn for each PDU of an answer: /state's pdus (the state, into
 * hs_state when the pass is full) and auth_chain (hs_auth); /event's one.
 */

static int
mxj_sync_each_pdu(mxj_sync_pass_t *p, mxj_sync_body_t *b,
    int (*fn)(mxj_sync_pass_t *p, const char *text, size_t len,
        mxj_sync_body_t *b, mxj_sync_ids_t *into))
{
    int              rc, k, n;
    size_t           pos, list_len, el_len;
    const char      *list, *el;
    mxj_sync_ids_t  *into;

    static const char  *names[] = { "pdus", "auth_chain" };

    n = (b->kind == MXJ_SYNC_BODY_STATE) ? 2 : 1;

    for (k = 0; k < n; k++) {
        if (mxj_sync_json_member(b->text.data, b->text.len, names[k], &list,
                                 &list_len) != 0)
        {
            return mxj_sync_fail(p, "%s%s: no %s list in the answer",
                                 b->kind == MXJ_SYNC_BODY_STATE
                                 ? "/state" : "/event/",
                                 b->expect ? b->expect : "", names[k]);
        }

        into = (b->kind != MXJ_SYNC_BODY_STATE) ? NULL
               : (k == 0) ? &p->hs_state : &p->hs_auth;
        pos = 0;

        for ( ;; ) {
            rc = mxj_sync_json_next(list, list_len, &pos, &el, &el_len);

            if (rc == 0) {
                break;
            }

            if (rc < 0) {
                return mxj_sync_fail(p, "%s%s: the %s list is not JSON",
                                     b->kind == MXJ_SYNC_BODY_STATE
                                     ? "/state" : "/event/",
                                     b->expect ? b->expect : "", names[k]);
            }

            if (fn(p, el, el_len, b, into) != 0) {
                return -1;
            }

            if (b->kind == MXJ_SYNC_BODY_EVENT) {
                return 0;       /* one event asked, the first one */
            }
        }

        if (b->kind == MXJ_SYNC_BODY_EVENT) {
            return mxj_sync_fail(p, "/event/%s: no event in the answer",
                                 b->expect);
        }
    }

    return 0;
}


/* The servers that must have signed one event (stage one of the checks). */

static int
mxj_sync_signers(mxj_sync_pass_t *p, const char *text, size_t len,
    mxj_sync_body_t *b, mxj_sync_ids_t *into)
{
    int        i, n;
    char       names[2][256];
    json_t    *ev;
    mx_err_t   err;

    ev = mx_json_parse(text, len, p->rv->strict_json ? MX_JSON_STRICT : 0,
                       &err);

    if (ev == NULL) {
        return mxj_sync_fail(p, "an event of %s%s: %s",
                             b->kind == MXJ_SYNC_BODY_STATE
                             ? "/state" : "/event/",
                             b->expect ? b->expect : "", err.text);
    }

    n = json_is_object(ev) ? mx_event_required_signers(p->rv, ev, names,
                                                       &err)
                           : -1;
    json_decref(ev);

    if (n < 0) {
        return 0;               /* the check proper says what is wrong */
    }

    for (i = 0; i < n; i++) {
        if (mxj_sync_map_get(&p->signers_seen, names[i]) != NULL) {
            continue;
        }

        if (mxj_sync_ids_push(&p->signers, names[i]) != 0
            || mxj_sync_map_put(&p->signers_seen,
                                p->signers.v[p->signers.n - 1],
                                p->signers.v[p->signers.n - 1]) != 0)
        {
            return mxj_sync_fail(p, "out of memory");
        }
    }

    return 0;
}


/*
 * One event received: its ID (the one asked for, for /event), its room,
 * its content hash, the signatures of its sender's server (and in v1/v2
 * of its event ID's server) with the notary's keys.
 */

static int
mxj_sync_check_pdu(mxj_sync_pass_t *p, const char *text, size_t len,
    mxj_sync_body_t *b, mxj_sync_ids_t *into)
{
    int             rc, n, i;
    char            id[MX_EVENT_ID_MAX], rid[MX_ID_MAX_LEN + 1];
    char            names[2][256];
    json_t         *ev;
    mx_err_t        err;
    const char     *room, *type, *sk, *why;
    mxj_sync_ev_t  *x;

    ev = mx_json_parse(text, len, p->rv->strict_json ? MX_JSON_STRICT : 0,
                       &err);

    if (ev == NULL) {
        return mxj_sync_fail(p, "an event of %s%s: %s",
                             b->kind == MXJ_SYNC_BODY_STATE
                             ? "/state" : "/event/",
                             b->expect ? b->expect : "", err.text);
    }

    rc = -1;

    if (!json_is_object(ev)) {
        mxj_sync_fail(p, "an event of %s%s is not an object",
                      b->kind == MXJ_SYNC_BODY_STATE ? "/state" : "/event/",
                      b->expect ? b->expect : "");
        goto done;
    }

    if (mx_event_id(p->rv, ev, id, sizeof(id), &err) < 0) {
        mxj_sync_fail(p, "an event of %s%s: %s",
                      b->kind == MXJ_SYNC_BODY_STATE ? "/state" : "/event/",
                      b->expect ? b->expect : "", err.text);
        goto done;
    }

    if (b->expect != NULL && strcmp(id, b->expect) != 0) {
        mxj_sync_fail(p, "/event/%s answered event %s", b->expect, id);
        goto done;
    }

    /* the room: room_id, or in v12 the create event's own hash */

    type = json_string_value(json_object_get(ev, "type"));
    sk = json_string_value(json_object_get(ev, "state_key"));

    if (p->rv->room_id_from_create && type != NULL && sk != NULL
        && strcmp(type, "m.room.create") == 0 && sk[0] == '\0')
    {
        room = (mx_event_room_id_from_create(p->rv, ev, rid, sizeof(rid),
                                             &err) < 0) ? NULL : rid;

    } else {
        room = json_string_value(json_object_get(ev, "room_id"));
    }

    if (room == NULL || strcmp(room, p->id) != 0) {
        mxj_sync_fail(p, "event %s is of room %.100s, not %s", id,
                      room ? room : "(none)", p->id);
        goto done;
    }

    if (mx_event_check_content_hash(ev, &err) != 0) {
        mxj_sync_fail(p, "event %s: %s", id, err.text);
        goto done;
    }

    rc = mx_event_check_signatures(p->rv, ev, mxj_sync_keyring_lookup,
                                   &p->s->keyring, &err);

    if (rc != 0 && mxj_sync_keys_again(p, ev)) {
        rc = mx_event_check_signatures(p->rv, ev, mxj_sync_keyring_lookup,
                                       &p->s->keyring, &err);
    }

    if (rc != 0) {
        rc = -1;
        why = NULL;
        n = mx_event_required_signers(p->rv, ev, names, NULL);

        for (i = 0; why == NULL && i < n; i++) {
            why = mxj_sync_keyring_why(&p->s->keyring, names[i]);
        }

        mxj_sync_fail(p, "event %s: signature: %s%s%s%s", id, err.text,
                      why ? " (" : "", why ? why : "", why ? ")" : "");
        goto done;
    }

    if (into != NULL && mxj_sync_ids_push(into, id) != 0) {
        mxj_sync_fail(p, "out of memory");
        goto done;
    }

    if (mxj_sync_pool_get(&p->room->pool, id) == NULL) {
        x = mxj_sync_ev_new(p->rv, ev, id, &err);

        if (x == NULL) {
            mxj_sync_fail(p, "event %s: %s", id, err.text);
            goto done;
        }

        if (mxj_sync_pool_add(&p->room->pool, x) != 0) {
            mxj_sync_fail(p, "out of memory");
            goto done;
        }
    }

    rc = 0;

done:

    json_decref(ev);

    return rc;
}


/*
 * A signature that did not verify, with keys asked a minute ago or more:
 * the server may have a new key since. Its signers' keys asked again,
 * once; 1 when they were.
 */

static int
mxj_sync_keys_again(mxj_sync_pass_t *p, const json_t *ev)
{
    int              i, n, again;
    char             names[2][256], why[MXJ_SYNC_WHY_LEN];
    mxj_sync_ids_t   want;

    n = mx_event_required_signers(p->rv, ev, names, NULL);
    again = 0;

    memset(&want, 0, sizeof(mxj_sync_ids_t));

    for (i = 0; i < n; i++) {
        if (mxj_sync_keyring_expire(&p->s->keyring, names[i],
                                    MXJ_SYNC_KEYS_AGAIN_MS)
            && mxj_sync_ids_push(&want, names[i]) == 0)
        {
            again = 1;
        }
    }

    if (again && mxj_sync_keyring_fetch(&p->s->keyring, &p->s->http, &want,
                                        why, sizeof(why)) != 0)
    {
        mxj_sync_log("room=%s: server keys asked again: %s", p->id, why);
        again = 0;
    }

    mxj_sync_ids_free(&want);

    return again;
}


/* --- 5, 6. the snapshot ------------------------------------------------ */

/*
 * The document, fetching (and checking) the events it needs that were not
 * received: the auth events of a kept join that the homeserver's state no
 * longer reaches, say.
 */

static int
mxj_sync_build(mxj_sync_pass_t *p, mx_buf_t *doc)
{
    int               rc, round;
    size_t            i, n;
    mx_err_t          err;
    mxj_sync_ev_t   **kept;
    mxj_sync_doc_t    d;
    mxj_sync_ids_t    missing;
    const char       *aliases[1];

    kept = NULL;

    if (p->njoins > 0) {
        kept = malloc(p->njoins * sizeof(mxj_sync_ev_t *));
        if (kept == NULL) {
            return mxj_sync_fail(p, "out of memory");
        }
    }

    n = 0;

    for (i = 0; i < p->njoins; i++) {
        if (p->joins[i].ev != NULL && p->joins[i].fate == MXJ_SYNC_JOIN_KEEP)
        {
            kept[n++] = p->joins[i].ev;
        }
    }

    memset(&d, 0, sizeof(mxj_sync_doc_t));
    memset(&missing, 0, sizeof(mxj_sync_ids_t));

    aliases[0] = p->room->alias;

    d.rv = p->rv;
    d.pool = &p->room->pool;
    d.state = &p->hs_state;
    d.auth = &p->hs_auth;
    d.extremity = p->e;
    d.joins = kept;
    d.njoins = n;
    d.aliases = aliases;
    d.naliases = p->room->alias ? 1 : 0;

    rc = -1;

    for (round = 0; round < MXJ_SYNC_MISSING_ROUNDS; round++) {
        mxj_sync_ids_free(&missing);
        mx_buf_reset(doc);

        rc = mxj_sync_build_doc(&d, doc, &missing, &err);

        if (rc == 0) {
            break;
        }

        if (rc < 0) {
            mxj_sync_fail(p, "the snapshot: %s", err.text);
            break;
        }

        rc = -1;

        if (missing.n > MXJ_SYNC_MISSING_MAX) {
            mxj_sync_fail(p, "the snapshot needs %zu events not received "
                          "(%s, ...)", missing.n, missing.v[0]);
            break;
        }

        for (i = 0; i < missing.n; i++) {
            if (mxj_sync_get_event(p, missing.v[i]) != 0) {
                break;
            }
        }

        if (i < missing.n || mxj_sync_check(p) != 0) {
            break;
        }
    }

    if (rc != 0 && p->why[0] == '\0') {
        mxj_sync_fail(p, "the snapshot still needs %zu events not "
                      "received (%s, ...)", missing.n,
                      missing.n ? missing.v[0] : "?");
    }

    mxj_sync_ids_free(&missing);
    free(kept);

    return rc;
}


static int
mxj_sync_load(mxj_sync_pass_t *p, const char *doc, size_t len,
    mx_snapshot_t **snap)
{
    int                rc;
    char               count[32];
    mx_buf_t           ext = MX_BUF_INIT;
    redisReply        *reply;
    const char        *old, *meta[6];
    unsigned long      pushes;
    mxj_load_opts_t    opts;
    mx_snapshot_err_t  err;

    if (mx_snapshot_parse(doc, len, NULL, NULL, snap, &err) != 0) {
        *snap = NULL;
        return mxj_sync_fail(p, "the snapshot: %s: %s", err.where,
                             err.reason);
    }

    if (strcmp((*snap)->room_id, p->id) != 0) {
        return mxj_sync_fail(p, "the snapshot is of room %s",
                             (*snap)->room_id);
    }

    if (mxj_sync_extremities_json(p, &ext) != 0) {
        mx_buf_free(&ext);
        return mxj_sync_fail(p, "out of memory");
    }

    /* the count of unconfirmed joins outlives the loads */

    old = mxj_sync_meta(p, "unconfirmed");
    snprintf(count, sizeof(count), "%lld",
             (old ? atoll(old) : 0) + (long long) p->dropped);

    meta[0] = MX_META_SYNCED_FROM;
    meta[1] = p->s->homeserver;
    meta[2] = MX_META_SYNCED_EXTREMITIES;
    meta[3] = ext.data;
    meta[4] = "unconfirmed";
    meta[5] = count;

    memset(&opts, 0, sizeof(mxj_load_opts_t));
    opts.meta = meta;
    opts.nmeta = 6;

    /*
     * Joins the edge accepts while the pass runs are copied by the switch
     * itself: read after the pass's first script, they would be reset with
     * edge_pdu and never judged. The next pass puts them back on top.
     */

    opts.edge_to = p->k_unconfirmed;
    opts.edge_prefix = "{\"passes\":0,\"pdu\":";
    opts.edge_suffix = "}";

    rc = mxj_load_snapshot(&p->s->r, *snap, &opts);
    mx_buf_free(&ext);

    if (rc != 0) {
        return mxj_sync_fail(p, "the load into Redis failed (the reason is "
                             "above)");
    }

    snprintf(p->room->generation, sizeof(p->room->generation), "%s",
             opts.generation);

    /*
     * A push that came during the pass marked the old generation stale;
     * the switch replaced that meta. The new snapshot may predate the
     * change pushed: stale again, and another pass is due.
     */

    pthread_mutex_lock(&p->s->run.mutex);
    pushes = p->room->pushes;
    pthread_mutex_unlock(&p->s->run.mutex);

    if (pushes != p->pushes) {
        reply = mxj_redis_script(&p->s->r, MX_LUA_META_STALE, 1, 1,
                                 (const char *[]) { p->k_meta }, NULL);
        if (reply != NULL) {
            freeReplyObject(reply);
        }

        pthread_mutex_lock(&p->s->run.mutex);
        p->room->dirty = 1;
        pthread_mutex_unlock(&p->s->run.mutex);
    }

    mxj_sync_pool_sweep(&p->room->pool);

    return 0;
}


/*
 * P{R}:unconfirmed and P{R}:delivered after a pass: confirmed and dropped
 * joins leave both, kept ones record their passes; a delivered record of
 * a join no longer known anywhere goes after an hour. One MULTI.
 */

static int
mxj_sync_bookkeep(mxj_sync_pass_t *p)
{
    int               rc;
    char              num[32];
    size_t            i, k, cmds;
    mx_buf_t          v = MX_BUF_INIT;
    int64_t           now;
    redisReply       *reply;
    redisContext     *c;
    mxj_sync_map_t    joins;
    mxj_sync_join_t  *j;

    c = p->s->r.c;
    memset(&joins, 0, sizeof(mxj_sync_map_t));
    now = mxj_run_wall_ms();
    cmds = 0;

    if (redisAppendCommand(c, "MULTI") != REDIS_OK) {
        return -1;
    }

    for (i = 0; i < p->njoins; i++) {
        j = &p->joins[i];

        if (j->fate == MXJ_SYNC_JOIN_DROP) {
            mxj_sync_log_dropped(p, j);
        }

        if (j->fate != MXJ_SYNC_JOIN_KEEP) {
            redisAppendCommand(c, "HDEL %s %s", p->k_unconfirmed, j->id);
            redisAppendCommand(c, "HDEL %s %s", p->k_delivered, j->id);
            cmds += 2;
            continue;
        }

        if (j->passes == j->old_passes) {
            continue;
        }

        snprintf(num, sizeof(num), "%ld", j->passes);
        mx_buf_reset(&v);

        if (mx_buf_append_str(&v, "{\"passes\":") != 0
            || mx_buf_append_str(&v, num) != 0
            || mx_buf_append_str(&v, ",\"pdu\":") != 0
            || mx_buf_append_str(&v, j->pdu) != 0
            || mx_buf_append_byte(&v, '}') != 0)
        {
            break;
        }

        redisAppendCommand(c, "HSET %s %s %b", p->k_unconfirmed, j->id,
                           v.data, v.len);
        cmds++;
    }

    for (i = 0; i < p->njoins; i++) {
        if (mxj_sync_map_put(&joins, p->joins[i].id, &p->joins[i]) != 0) {
            break;
        }
    }

    for (k = 0; i == p->njoins && k + 1 < p->delivered->elements; k += 2) {
        if (mxj_sync_map_get(&joins, p->delivered->element[k]->str) == NULL
            && atoll(p->delivered->element[k + 1]->str)
               < now - MXJ_SYNC_ORPHAN_MS)
        {
            redisAppendCommand(c, "HDEL %s %s", p->k_delivered,
                               p->delivered->element[k]->str);
            cmds++;
        }
    }

    mx_buf_free(&v);
    mxj_sync_map_free(&joins);

    redisAppendCommand(c, "EXEC");

    rc = 0;

    for (i = 0; i < cmds + 2; i++) {
        if (redisGetReply(c, (void **) &reply) != REDIS_OK) {
            return -1;
        }

        if (reply->type == REDIS_REPLY_ERROR) {
            rc = -1;
        }

        freeReplyObject(reply);
    }

    return rc;
}


/* What the homeserver's state says of a dropped join's user. */

static void
mxj_sync_log_dropped(mxj_sync_pass_t *p, mxj_sync_join_t *j)
{
    size_t          i;
    mxj_sync_ev_t  *ev, *m;

    m = NULL;

    for (i = 0; i <= p->hs_state.n; i++) {
        ev = mxj_sync_pool_get(&p->room->pool,
                               i < p->hs_state.n ? p->hs_state.v[i] : p->e);

        if (ev != NULL && ev->membership != NULL
            && strcmp(ev->state_key, j->ev->state_key) == 0)
        {
            m = ev;             /* E, last, wins */
        }
    }

    if (m == NULL) {
        mxj_sync_log("room=%s: edge join %s of %s unconfirmed (%s, %ld "
                     "passes): the homeserver's state has no membership of "
                     "the user", p->id, j->id, j->ev->state_key, j->why,
                     j->passes);
        return;
    }

    mxj_sync_log("room=%s: edge join %s of %s unconfirmed (%s, %ld passes): "
                 "the homeserver's state has the user %s (%s, sent by %s)",
                 p->id, j->id, j->ev->state_key, j->why, j->passes,
                 m->membership, m->id, m->sender);
}
