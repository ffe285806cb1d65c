/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: the per-event advance (docs/sync.md "Following
 * the homeserver"). The non-state events the homeserver pushed (client
 * format: no prev_events, no signatures) are fetched as PDUs with
 * /event (several: the last, and the others with one
 * /get_missing_events), checked as a pass checks every event, and each
 * one whose prev_events the snapshot knows becomes a forward extremity in one
 * script (src/lua/live_advance.lua); the state is unchanged. Anything
 * else (a state event behind a non-state push, a gap, a fetch or a check
 * that fails) marks the room stale and asks for a pass: nothing is
 * guessed.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"
#include "mx_base64.h"
#include "mx_event.h"
#include "mx_json.h"
#include "mx_lua.h"
#include "mx_schema.h"


#define MXJ_SYNC_MEMBER_NKEYS  16      /* src/lua/lib/send_join.lua */


static int mxj_sync_live_take(mxj_sync_t *s, mxj_sync_room_t *room,
    mxj_sync_ids_t *ids, size_t *queued);
static int mxj_sync_live_apply(mxj_sync_pass_t *p, const char *k_extrem,
    const char *k_edge, const char *id, int *known);
static redisReply *mxj_sync_live_member(mxj_sync_pass_t *p,
    const mxj_sync_ev_t *x, const char *depth, const char *b64,
    const char *prevs);


int
mxj_sync_live(mxj_sync_t *s, mxj_sync_room_t *room, char *why, size_t len)
{
    int               rc, progress, known;
    char             *k_extrem, *k_edge;
    size_t            i, left, applied, dup, queued, nfetch;
    int64_t           wait;
    const char       *last;
    redisReply       *meta, *reply, *ext;
    struct timespec   ts;
    unsigned char    *done;
    mxj_sync_ids_t    ids, earliest;
    mxj_sync_pass_t   p;

    memset(&p, 0, sizeof(mxj_sync_pass_t));
    memset(&ids, 0, sizeof(mxj_sync_ids_t));
    memset(&earliest, 0, sizeof(mxj_sync_ids_t));
    p.s = s;
    p.room = room;
    p.why = why;
    p.len = len;
    p.id = room->id;
    p.requests0 = s->http.c.requests;
    why[0] = '\0';
    meta = NULL;
    done = NULL;
    k_extrem = NULL;
    k_edge = NULL;
    rc = -1;

    /*
     * Until the next request to the homeserver is due (its rate), the
     * events pushed meanwhile join the batch: a burst costs two requests,
     * not one each.
     */

    wait = s->http.next_ms - mxj_run_mono_ms();

    if (wait > 0) {
        wait = (wait > MXJ_SYNC_INTERVAL_MAX) ? MXJ_SYNC_INTERVAL_MAX : wait;
        ts.tv_sec = wait / 1000;
        ts.tv_nsec = (wait % 1000) * 1000000;
        nanosleep(&ts, NULL);
    }

    queued = 0;

    if (mxj_sync_live_take(s, room, &ids, &queued) != 0 || ids.n == 0
        || p.id == NULL)
    {
        mxj_sync_ids_free(&ids);
        return 0;
    }

    if (queued > MXJ_SYNC_LIVE_PASS) {

        /* a burst: one pass costs the homeserver less than an /event each */

        if (mxj_sync_keys(&p) != 0) {
            goto done;
        }

        mxj_sync_fail(&p, "%zu events pushed at once (a pass costs less "
                      "than an /event each)", queued);
        rc = 1;
        goto stale;
    }

    if (s->r.c == NULL || s->r.c->err) {
        mxj_redis_close(&s->r);

        if (mxj_redis_connect(&s->r) != 0) {
            mxj_sync_fail(&p, "Redis at %s is unavailable", s->r.address);
            goto done;
        }
    }

    if (mxj_sync_keys(&p) != 0) {
        goto done;
    }

    k_extrem = mxj_room_key(&s->r, p.id, MX_KEY_EXTREM);
    k_edge = mxj_room_key(&s->r, p.id, MX_KEY_EDGE);
    done = calloc(ids.n, 1);

    if (k_extrem == NULL || k_edge == NULL || done == NULL) {
        mxj_sync_fail(&p, "out of memory");
        goto done;
    }

    meta = mxj_redis_cmdf(&s->r, "HMGET %s room_version", p.k_meta);

    if (meta == NULL || meta->type != REDIS_REPLY_ARRAY
        || meta->elements != 1)
    {
        mxj_sync_fail(&p, "reading the room's meta from Redis failed");
        goto done;
    }

    if (meta->element[0]->type != REDIS_REPLY_STRING) {
        rc = 0;                 /* not cached (any more): nothing to follow */
        goto done;
    }

    p.rv = mx_room_version(meta->element[0]->str, meta->element[0]->len);

    if (p.rv == NULL) {
        rc = 0;
        goto done;
    }

    /*
     * The PDUs, checked as a pass checks them (the keys asked at once).
     * Several: the last by /event, the others in one /get_missing_events
     * from the forward extremities; what that does not bring, by /event.
     */

    last = NULL;
    nfetch = 0;

    for (i = 0; i < ids.n; i++) {
        if (mxj_sync_pool_get(&room->pool, ids.v[i]) == NULL) {
            last = ids.v[i];
            nfetch++;
        }
    }

    if (nfetch >= 2) {
        if (mxj_sync_get_event(&p, last) != 0) {
            rc = 1;
            goto stale;
        }

        ext = mxj_redis_cmdf(&s->r, "HKEYS %s", k_extrem);

        if (ext != NULL && ext->type == REDIS_REPLY_ARRAY) {
            for (i = 0; i < ext->elements; i++) {
                if (ext->element[i]->type == REDIS_REPLY_STRING
                    && mxj_sync_ids_push(&earliest, ext->element[i]->str)
                       != 0)
                {
                    break;
                }
            }
        }

        if (ext != NULL) {
            freeReplyObject(ext);
        }

        if (earliest.n > 0
            && mxj_sync_get_missing(&p, &earliest, last, 2 * ids.n) != 0)
        {
            mxj_sync_log("room=%s live: %s (an /event each instead)", p.id,
                         why);
        }

        if (mxj_sync_check(&p) != 0) {
            rc = 1;
            goto stale;
        }
    }

    for (i = 0; i < ids.n; i++) {
        if (mxj_sync_pool_get(&room->pool, ids.v[i]) != NULL) {
            continue;           /* received and checked before */
        }

        if (mxj_sync_get_event(&p, ids.v[i]) != 0) {
            rc = 1;
            goto stale;
        }
    }

    if (mxj_sync_check(&p) != 0) {
        rc = 1;
        goto stale;
    }

    /* in order; one whose prev_events come later in the batch, after */

    applied = 0;
    dup = 0;

    do {
        progress = 0;

        for (i = 0; i < ids.n; i++) {
            if (done[i]) {
                continue;
            }

            known = 0;

            switch (mxj_sync_live_apply(&p, k_extrem, k_edge, ids.v[i],
                                        &known))
            {
            case 0:
                done[i] = 1;
                progress = 1;

                if (known) {
                    dup++;
                } else {
                    applied++;
                }

                break;

            case 1:
                break;          /* its prev_events not (yet) known: why
                                   says which */

            case 2:
                rc = 0;         /* the room is not cached any more */
                goto done;

            default:
                rc = (why[0] != '\0' && p.rv != NULL) ? 1 : -1;
                goto stale;
            }
        }
    } while (progress);

    left = 0;

    for (i = 0; i < ids.n; i++) {
        left += !done[i];
    }

    mxj_sync_count(s->stats.live_applied, applied);

    mxj_sync_log("room=%s live: %zu events applied, %zu known already%s; "
                 "%llu requests", p.id, applied, dup,
                 left ? ", the others wait for a pass" : "",
                 (unsigned long long) (s->http.c.requests - p.requests0));

    if (left > 0) {
        rc = 1;
        goto stale;
    }

    rc = 0;
    goto done;

stale:

    /* rc 1: the room needs a pass; until it is loaded, it is stale */

    if (rc == 1) {
        reply = mxj_redis_script(&s->r, MX_LUA_META_STALE, 1, 2,
                                 (const char *[]) { p.k_meta, why }, NULL);
        if (reply != NULL) {
            freeReplyObject(reply);
        }

        pthread_mutex_lock(&s->run.mutex);
        room->dirty = 1;
        pthread_mutex_unlock(&s->run.mutex);
    }

done:

    if (meta != NULL) {
        freeReplyObject(meta);
    }

    for (i = 0; i < p.nbodies; i++) {
        mx_buf_free(&p.bodies[i].text);
        free(p.bodies[i].expect);
    }

    free(p.bodies);
    mxj_sync_ids_free(&p.signers);
    mxj_sync_map_free(&p.signers_seen);
    free(p.k_meta);
    free(p.k_server_user);
    free(p.k_edge_pdu);
    free(p.k_unconfirmed);
    free(p.k_delivered);
    free(p.k_outbox);
    free(k_extrem);
    free(k_edge);
    free(done);
    mxj_sync_ids_free(&ids);
    mxj_sync_ids_free(&earliest);

    return rc;
}


/*
 * The first MXJ_SYNC_LIVE_BATCH IDs queued, moved out of the queue;
 * *queued: how many were queued.
 */

static int
mxj_sync_live_take(mxj_sync_t *s, mxj_sync_room_t *room,
    mxj_sync_ids_t *ids, size_t *queued)
{
    size_t  n;

    pthread_mutex_lock(&s->run.mutex);

    *queued = room->live.n;

    n = room->live.n < MXJ_SYNC_LIVE_BATCH ? room->live.n
                                           : MXJ_SYNC_LIVE_BATCH;

    if (n > 0) {
        ids->v = malloc(n * sizeof(char *));

        if (ids->v == NULL) {
            pthread_mutex_unlock(&s->run.mutex);
            return -1;
        }

        memcpy(ids->v, room->live.v, n * sizeof(char *));
        memmove(room->live.v, room->live.v + n,
                (room->live.n - n) * sizeof(char *));
        room->live.n -= n;
        ids->n = n;
        ids->cap = n;
    }

    pthread_mutex_unlock(&s->run.mutex);

    return 0;
}


/*
 * One checked event through src/lua/live_advance.lua. 0 when applied
 * (*known when it was already an extremity or an edge record), 1 when a
 * prev_event is not known, 2 when the room is gone, -1 with why (a state
 * event: a pass; or Redis failed).
 */

static int
mxj_sync_live_apply(mxj_sync_pass_t *p, const char *k_extrem,
    const char *k_edge, const char *id, int *known)
{
    int             rc;
    char            depth[24], b64[mx_b64_encoded_len(MX_SHA256_LEN) + 1];
    size_t          i;
    json_t         *ev;
    uint8_t         hash[MX_SHA256_LEN];
    mx_err_t        err;
    mx_buf_t        prevs = MX_BUF_INIT;
    redisReply     *reply;
    mxj_sync_ev_t  *x;

    x = mxj_sync_pool_get(&p->room->pool, id);

    if (x == NULL) {
        return mxj_sync_fail(p, "pushed event %s: not received", id);
    }

    if (x->state_key != NULL
        && (strcmp(x->type, "m.room.member") != 0 || x->membership == NULL
            || strchr(x->state_key, ':') == NULL))
    {
        return mxj_sync_fail(p, "pushed event %s is a state event (%s)", id,
                             x->type);
    }

    ev = mx_json_parse(x->pdu, x->pdu_len, 0, &err);

    if (ev == NULL || mx_event_reference_hash(p->rv, ev, hash, &err) != 0) {
        json_decref(ev);
        return mxj_sync_fail(p, "pushed event %s: %s", id, err.text);
    }

    json_decref(ev);
    mx_b64_encode(b64, hash, MX_SHA256_LEN, MX_B64_STD);
    snprintf(depth, sizeof(depth), "%lld", (long long) x->depth);

    if (mx_buf_append_str(&prevs, "[") != 0) {
        goto nomem;
    }

    for (i = 0; i < x->nprev; i++) {
        if ((i > 0 && mx_buf_append_str(&prevs, ",") != 0)
            || mx_json_canonical_string(x->prev[i], strlen(x->prev[i]),
                                        &prevs) != 0)
        {
            goto nomem;
        }
    }

    if (mx_buf_append_str(&prevs, "]") != 0) {
        goto nomem;
    }

    if (x->state_key != NULL) {
        reply = mxj_sync_live_member(p, x, depth, b64, prevs.data);

    } else {
        reply = mxj_redis_script(&p->s->r, MX_LUA_LIVE_ADVANCE, 3, 8,
                                 (const char *[]) { p->k_meta, k_extrem,
                                                    k_edge, id, depth, b64,
                                                    prevs.data, "1" },
                                 NULL);
    }

    mx_buf_free(&prevs);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        if (reply != NULL) {
            freeReplyObject(reply);
        }

        p->why[0] = '\0';
        return -1;
    }

    rc = -1;

    if (strcmp(reply->element[0]->str, "ok") == 0) {
        rc = 0;

    } else if (strcmp(reply->element[0]->str, "dup") == 0) {
        *known = 1;
        rc = 0;

    } else if (strcmp(reply->element[0]->str, "unknown") == 0) {
        rc = 1;

        if (reply->elements > 1
            && reply->element[1]->type == REDIS_REPLY_STRING)
        {
            mxj_sync_fail(p, "pushed event %s: its prev_event %s is not "
                          "known to the snapshot (a gap)", id,
                          reply->element[1]->str);
        }

    } else if (strcmp(reply->element[0]->str, "gone") == 0) {
        rc = 2;
    }

    freeReplyObject(reply);

    if (rc == -1) {
        p->why[0] = '\0';
    }

    return rc;

nomem:

    mx_buf_free(&prevs);

    return mxj_sync_fail(p, "out of memory");
}


/*
 * A checked member event through src/lua/live_member.lua: the room's
 * state changes by it in place (the keys of src/lua/lib/send_join.lua).
 */

static redisReply *
mxj_sync_live_member(mxj_sync_pass_t *p, const mxj_sync_ev_t *x,
    const char *depth, const char *b64, const char *prevs)
{
    size_t        i;
    const char   *argv[MXJ_SYNC_MEMBER_NKEYS + 9];
    redisReply   *reply;
    char         *keys[MXJ_SYNC_MEMBER_NKEYS];
    static const char  *names[MXJ_SYNC_MEMBER_NKEYS] = {
        MX_KEY_META, MX_KEY_STATE, MX_KEY_MEMBER, MX_KEY_PDU, MX_KEY_EXTREM,
        MX_KEY_EDGE, MX_KEY_EDGE_PDU, MX_KEY_EDGE_M, MX_KEY_EDGE_OLD,
        MX_KEY_EDGE_ORIG, MX_KEY_MCHUNK, MX_KEY_STATE_M, MX_KEY_SERVERS,
        MX_KEY_SERVER_USER, MX_KEY_OUTBOX, MX_KEY_PARTIAL
    };

    reply = NULL;

    for (i = 0; i < MXJ_SYNC_MEMBER_NKEYS; i++) {
        keys[i] = mxj_room_key(&p->s->r, p->id, names[i]);
        argv[i] = keys[i];
    }

    for (i = 0; i < MXJ_SYNC_MEMBER_NKEYS; i++) {
        if (keys[i] == NULL) {
            goto done;
        }
    }

    argv[i++] = x->id;
    argv[i++] = x->state_key;
    argv[i++] = x->membership;
    argv[i++] = strchr(x->state_key, ':') + 1;
    argv[i++] = depth;
    argv[i++] = b64;
    argv[i++] = prevs;
    argv[i++] = x->pdu;
    argv[i++] = "1";

    reply = mxj_redis_script(&p->s->r, MX_LUA_LIVE_MEMBER,
                             MXJ_SYNC_MEMBER_NKEYS, (int) i, argv, NULL);

done:

    for (i = 0; i < MXJ_SYNC_MEMBER_NKEYS; i++) {
        free(keys[i]);
    }

    return reply;
}


int
mxj_sync_live_drift(mxj_sync_pass_t *p)
{
    int          drift;
    char        *k[2];
    size_t       i;
    redisReply  *reply;

    k[0] = mxj_room_key(&p->s->r, p->id, MX_KEY_EXTREM);
    k[1] = mxj_room_key(&p->s->r, p->id, MX_KEY_EDGE);
    drift = 0;

    for (i = 0; k[0] != NULL && k[1] != NULL && i < p->x.n && !drift; i++) {
        reply = mxj_redis_cmdf(&p->s->r, "HEXISTS %s %s", k[0], p->x.v[i]);

        if (reply != NULL && reply->type == REDIS_REPLY_INTEGER
            && reply->integer == 0)
        {
            freeReplyObject(reply);
            reply = mxj_redis_cmdf(&p->s->r, "HEXISTS %s %s", k[1],
                                   p->x.v[i]);

            if (reply != NULL && reply->type == REDIS_REPLY_INTEGER
                && reply->integer == 0)
            {
                drift = 1;
                mxj_sync_log("room=%s drift: the homeserver's extremity %s "
                             "was never pushed (drift found %lu times)",
                             p->id, p->x.v[i], p->room->drift + 1);
            }
        }

        if (reply != NULL) {
            freeReplyObject(reply);
        }
    }

    free(k[0]);
    free(k[1]);

    return drift;
}


void
mxj_sync_live_counts(mxj_sync_pass_t *p)
{
    char         passes[24], drift[24];
    redisReply  *reply;

    snprintf(passes, sizeof(passes), "%lu", p->room->passes);
    snprintf(drift, sizeof(drift), "%lu", p->room->drift);

    reply = mxj_redis_script(&p->s->r, MX_LUA_LIVE_COUNTS, 1, 3,
                             (const char *[]) { p->k_meta, passes, drift },
                             NULL);
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}
