/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync, a pass's step 3: the state before E. The events
 * the current snapshot holds, then what the homeserver says the state is
 * (/state_ids), and only the events missing fetched (/state or /event).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"
#include "mx_json.h"
#include "mx_scan.h"


static int mxj_sync_pool_redis(mxj_sync_pass_t *p);
static int mxj_sync_pool_pdu(mxj_sync_pass_t *p, const char *id,
    const char *pdu, size_t len);
static int mxj_sync_choose(mxj_sync_pass_t *p);
static mxj_sync_body_t *mxj_sync_body(mxj_sync_pass_t *p, int kind,
    const char *expect);
static int mxj_sync_get_state(mxj_sync_pass_t *p);
static int mxj_sync_received(mxj_sync_pass_t *p, const char *id);


/*
 * The events the current snapshot holds, by ID: what the last pass of this
 * process kept, or read from Redis (one generation, in one MULTI).
 */

int
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

    if (mxj_redis_route(r, k[6], strlen(k[6])) != 0) {
        mxj_sync_fail(p, "Redis at %s: %s", r->address, r->c->errstr);
        goto done;
    }

    ctx = r->c;

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
            mxj_redis_count_error();
            reply = NULL;
            mxj_sync_fail(p, "Redis at %s: %s", r->address, ctx->errstr);
            goto done;
        }
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 7) {
        (void) mxj_redis_demoted(ctx, reply);       /* a MOVED: the map */
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

int
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

    doc = json_loadb(p->s->http.c.body.data, p->s->http.c.body.len, 0,
                     NULL);
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

            if (mx_scan_member(b->text.data, b->text.len, "pdus",
                                     &list, &list_len) == 0
                && mx_scan_next(list, list_len, &pos, &el, &el_len)
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

    b->text = p->s->http.c.body;
    memset(&p->s->http.c.body, 0, sizeof(mx_buf_t));
    p->nbodies++;

    return b;
}


int
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


/*
 * POST /get_missing_events/{room}: the events between earliest (what the
 * snapshot has) and latest, at most limit, in one request (the
 * per-event advance's batch).
 */

int
mxj_sync_get_missing(mxj_sync_pass_t *p, const mxj_sync_ids_t *earliest,
    const char *latest, size_t limit)
{
    long      status;
    size_t    i;
    json_t   *body, *e;
    mx_buf_t  uri = MX_BUF_INIT;

    body = json_pack("{s:[], s:[s], s:I, s:I}", "earliest_events",
                     "latest_events", latest, "limit", (json_int_t) limit,
                     "min_depth", (json_int_t) 0);
    e = json_object_get(body, "earliest_events");

    for (i = 0; body != NULL && i < earliest->n; i++) {
        if (json_array_append_new(e, json_string(earliest->v[i])) != 0) {
            json_decref(body);
            body = NULL;
        }
    }

    if (body == NULL
        || mxj_sync_uri(&uri, MXJ_SYNC_FED "get_missing_events/", p->id,
                        NULL, NULL) != 0)
    {
        json_decref(body);
        mx_buf_free(&uri);
        return mxj_sync_fail(p, "out of memory");
    }

    status = mxj_sync_http_request(&p->s->http, "POST", uri.data, body, 1);
    mx_buf_free(&uri);
    json_decref(body);

    if (status != 200) {
        mxj_sync_http_why(&p->s->http, "/get_missing_events", p->why,
                          p->len);
        return -1;
    }

    if (mxj_sync_body(p, MXJ_SYNC_BODY_MISSING, NULL) == NULL) {
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
