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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"


static void mxj_sync_pass_free(mxj_sync_pass_t *p);


int
mxj_sync_pass(mxj_sync_t *s, mxj_sync_room_t *room, char *why, size_t len)
{
    int               rc, quiet;
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
    p.requests0 = s->http.c.requests;
    p.bytes0 = s->http.c.bytes_in;
    snap = NULL;
    why[0] = '\0';

    pthread_mutex_lock(&s->run.mutex);
    room->dirty = 0;
    p.pushes = room->pushes;
    quiet = (room->passes > 0 && room->pushes == room->pushes_passed
             && room->live.n == 0);

    /* pushed before the pass: its make_join sees them */

    mxj_sync_ids_free(&room->live);
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

    /*
     * Drift: with no push since the last pass, every extremity the probe
     * names should be one the edge has (applied live, or an edge join);
     * one it lacks is a push lost. Counted, then the pass catches up.
     */

    if (quiet && mxj_sync_live_drift(&p)) {
        room->drift++;
    }

    room->passes++;
    room->pushes_passed = p.pushes;

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
    mxj_sync_count(room->loads, 1);

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
                 (unsigned long long) (s->http.c.requests - p.requests0),
                 (unsigned long long) (s->http.c.bytes_in - p.bytes0),
                 (double) (mxj_run_mono_ms() - p.t0) / 1000);

    rc = 0;
    goto done;

nomem:

    mxj_sync_fail(&p, "out of memory");

done:

    if (p.k_meta != NULL && room->passes > 0) {
        mxj_sync_live_counts(&p);
    }

    mx_snapshot_free(snap);
    mx_buf_free(&doc);
    mxj_sync_map_free(&known);

    if (rc != 0 && why[0] == '\0') {
        snprintf(why, len, "failed");
    }

    mxj_sync_pass_free(&p);

    return rc;
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
