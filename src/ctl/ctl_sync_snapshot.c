/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync, a pass's steps 5 and 6: the snapshot document
 * built and loaded through load's code, then the records of the edge
 * joins kept, confirmed or dropped.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"


static void mxj_sync_log_dropped(mxj_sync_pass_t *p, mxj_sync_join_t *j);


/*
 * The document, fetching (and checking) the events it needs that were not
 * received: the auth events of a kept join that the homeserver's state no
 * longer reaches, say.
 */

int
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


int
mxj_sync_load(mxj_sync_pass_t *p, const char *doc, size_t len,
    mx_snapshot_t **snap)
{
    int                rc;
    char               count[32];
    mx_buf_t           ext = MX_BUF_INIT;
    redisReply        *reply;
    const char        *old, *meta[8];
    size_t             i, nmeta;
    unsigned long      pushes;
    mxj_sync_ev_t     *e;
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
    nmeta = 6;

    /*
     * The snapshot's state is exactly the homeserver's state before E
     * when E is not a state event and no kept join sits on top of it:
     * /state and /state_ids at E can then be answered from it.
     */

    e = p->e ? mxj_sync_pool_get(&p->room->pool, p->e) : NULL;

    for (i = 0; i < p->njoins; i++) {
        if (p->joins[i].ev != NULL && p->joins[i].fate == MXJ_SYNC_JOIN_KEEP)
        {
            break;
        }
    }

    meta[6] = MX_META_STATE_BEFORE;
    meta[7] = (e != NULL && e->state_key == NULL && i == p->njoins)
              ? p->e : "";
    nmeta = 8;

    memset(&opts, 0, sizeof(mxj_load_opts_t));
    opts.meta = meta;
    opts.nmeta = nmeta;

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

int
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

    if (mxj_redis_route(&p->s->r, p->k_unconfirmed,
                        strlen(p->k_unconfirmed))
        != 0)
    {
        return -1;
    }

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
            mxj_redis_count_error();
            return -1;
        }

        if (reply->type == REDIS_REPLY_ERROR) {
            (void) mxj_redis_demoted(c, reply);     /* a MOVED: the map */
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
