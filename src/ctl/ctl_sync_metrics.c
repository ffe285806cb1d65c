/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync --metrics: what the passes, the live advance, the
 * federation client and the Application Service listener count, and
 * each room's record as the main thread last read it from Redis (every
 * MXJ_SYNC_METRICS_MS while it waits, and after each round), formatted
 * for the listener's thread (ctl_metrics.c), which never asks Redis.
 */

#include <stdlib.h>
#include <string.h>

#include "ctl_sync_run.h"


typedef struct {
    char                     *id;       /* a copy: an alias may name
                                           another room meanwhile */
    uint64_t                  loads;
    int                       cached;
    int64_t                   loaded_at;
    int                       stale;
    int64_t                   live_pending;
    int64_t                   edge_joins;
} mxj_sync_metrics_room_t;


static uint64_t
mxj_sync_get(uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}


/* The fields of P{R}:meta the listener shows, for each room resolved. */

void
mxj_sync_metrics_rooms(mxj_sync_t *s)
{
    char             *key;
    size_t            i;
    redisReply       *reply;
    mxj_sync_room_t  *room;

    s->metrics_at = mxj_run_mono_ms();

    /* a broken connection is the next pass's to make again */

    for (i = 0; i < s->nrooms; i++) {
        room = &s->rooms[i];

        if (room->id == NULL || s->r.c == NULL || s->r.c->err)
        {
            continue;
        }

        key = mxj_room_key(&s->r, room->id, MX_KEY_META);
        if (key == NULL) {
            return;
        }

        reply = mxj_redis_route(&s->r, key, strlen(key)) != 0 ? NULL
                : redisCommand(s->r.c, "HMGET %s %s %s %s %s", key,
                               MX_META_LOADED_AT, MX_META_STALE,
                               MX_META_LIVE_PENDING, MX_META_EDGE_JOINS);
        free(key);

        if (reply == NULL) {
            mxj_redis_count_error();
            mxj_sync_log("redis at %s: %s", s->r.address, s->r.c->errstr);
            return;
        }

        (void) mxj_redis_demoted(s->r.c, reply);

        pthread_mutex_lock(&s->run.mutex);

        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 4) {
            room->m_cached = reply->element[0]->type == REDIS_REPLY_STRING;
            room->m_loaded_at = room->m_cached
                                ? atoll(reply->element[0]->str) : 0;
            room->m_stale = reply->element[1]->type == REDIS_REPLY_STRING
                            && strcmp(reply->element[1]->str, "0") != 0
                            && reply->element[1]->str[0] != '\0';
            room->m_live_pending =
                reply->element[2]->type == REDIS_REPLY_STRING
                ? atoll(reply->element[2]->str) : 0;
            room->m_edge_joins =
                reply->element[3]->type == REDIS_REPLY_STRING
                ? atoll(reply->element[3]->str) : 0;
        }

        pthread_mutex_unlock(&s->run.mutex);

        freeReplyObject(reply);
    }
}


int
mxj_sync_metrics(void *data, mx_buf_t *b)
{
    int                        rc;
    char                       cls[4];
    size_t                     i, k, n;
    int64_t                    now;
    mxj_sync_t                *s = data;
    mxj_metrics_hist_t         hist;
    mxj_sync_metrics_room_t   *rooms;

    static const char  *passes[MXJ_SYNC_PASS_N] = {
        "loaded", "unchanged", "failed"
    };
    static const char  *txns[MXJ_SYNC_TXN_N] = {
        "accepted", "repeated", "refused"
    };

    rooms = calloc(s->nrooms ? s->nrooms : 1,
                   sizeof(mxj_sync_metrics_room_t));
    if (rooms == NULL) {
        return -1;
    }

    /* a copy under the lock; formatted after it */

    pthread_mutex_lock(&s->run.mutex);

    hist = s->stats.pass_duration;

    for (i = 0, n = 0; i < s->nrooms; i++) {
        if (s->rooms[i].id == NULL) {
            continue;
        }

        /* an alias and its room ID both given: one series */

        for (k = 0; k < n; k++) {
            if (strcmp(rooms[k].id, s->rooms[i].id) == 0) {
                break;
            }
        }

        if (k < n) {
            continue;
        }

        rooms[n].id = strdup(s->rooms[i].id);

        if (rooms[n].id == NULL) {
            break;
        }

        rooms[n].loads = mxj_sync_get(&s->rooms[i].loads);
        rooms[n].cached = s->rooms[i].m_cached;
        rooms[n].loaded_at = s->rooms[i].m_loaded_at;
        rooms[n].stale = s->rooms[i].m_stale;
        rooms[n].live_pending = s->rooms[i].m_live_pending;
        rooms[n].edge_joins = s->rooms[i].m_edge_joins;
        n++;
    }

    pthread_mutex_unlock(&s->run.mutex);

    now = mxj_run_wall_ms();
    rc = -1;

    if (i < s->nrooms) {
        goto done;              /* out of memory */
    }

    if (mxj_metrics_head(b, "matrix_join_sync_passes_total", "counter",
                         "Passes of a room by how they ended: loaded (a new "
                         "snapshot), unchanged (nothing new upstream, its "
                         "age renewed), failed (the snapshot stays as it "
                         "was).") != 0)
    {
        goto done;
    }

    for (i = 0; i < MXJ_SYNC_PASS_N; i++) {
        if (mxj_metrics_u64(b, "matrix_join_sync_passes_total", "outcome",
                            passes[i], mxj_sync_get(&s->stats.passes[i]))
            != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_hist(b, "matrix_join_sync_pass_duration_seconds",
                         "How long each pass of a room took, whatever its "
                         "outcome.", &hist) != 0
        || mxj_metrics_head(b, "matrix_join_sync_homeserver_requests_total",
                            "counter", "Federation requests to the "
                            "homeserver by the status class of its answer "
                            "(each 429 waited out included); none: no "
                            "answer (connection failed, timeout).") != 0)
    {
        goto done;
    }

    for (i = 1; i <= 6; i++) {
        cls[0] = (char) ('0' + i);
        cls[1] = 'x';
        cls[2] = 'x';
        cls[3] = '\0';

        if (mxj_metrics_u64(b, "matrix_join_sync_homeserver_requests_total",
                            "status_class", i == 6 ? "none" : cls,
                            mxj_sync_get(&s->stats.hs[i == 6 ? 0 : i]))
            != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_head(b, "matrix_join_sync_appservice_transactions_total",
                         "counter", "Application Service transactions the "
                         "homeserver pushed, by what was done: accepted "
                         "(answered {} and acted on), repeated (a "
                         "transaction ID seen last, answered {} again), "
                         "refused (not JSON, not a transaction).") != 0)
    {
        goto done;
    }

    for (i = 0; i < MXJ_SYNC_TXN_N; i++) {
        if (mxj_metrics_u64(b,
                            "matrix_join_sync_appservice_transactions_total",
                            "outcome", txns[i],
                            mxj_sync_get(&s->stats.txns[i]))
            != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_head(b, "matrix_join_sync_appservice_events_total",
                         "counter", "Events of the rooms synced here in the "
                         "transactions accepted.") != 0
        || mxj_metrics_u64(b, "matrix_join_sync_appservice_events_total",
                           NULL, NULL, mxj_sync_get(&s->stats.txn_events))
           != 0
        || mxj_metrics_head(b, "matrix_join_sync_live_events_applied_total",
                            "counter", "Pushed events applied to a "
                            "snapshot in place, without a pass (those "
                            "known already not counted).") != 0
        || mxj_metrics_u64(b, "matrix_join_sync_live_events_applied_total",
                           NULL, NULL, mxj_sync_get(&s->stats.live_applied))
           != 0
        || mxj_metrics_head(b, "matrix_join_sync_redis_errors_total",
                            "counter", "Redis connections that failed and "
                            "commands that got no reply (connection lost, "
                            "timeout).") != 0
        || mxj_metrics_u64(b, "matrix_join_sync_redis_errors_total", NULL,
                           NULL, mxj_redis_errors()) != 0
        || mxj_metrics_head(b, "matrix_join_sync_snapshot_loads_total",
                            "counter", "Snapshots of the room this process "
                            "loaded (each a new generation).") != 0)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (mxj_metrics_u64(b, "matrix_join_sync_snapshot_loads_total",
                            "room", rooms[i].id, rooms[i].loads) != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_head(b, "matrix_join_sync_snapshot_age_seconds", "gauge",
                         "Age of the room's snapshot in Redis (its "
                         "loaded_at, renewed by each pass that found it "
                         "current); absent while it has none.") != 0)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (rooms[i].cached
            && mxj_metrics_double(b, "matrix_join_sync_snapshot_age_seconds",
                                  "room", rooms[i].id,
                                  now > rooms[i].loaded_at
                                  ? (double) (now - rooms[i].loaded_at)
                                    / 1000
                                  : 0)
               != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_head(b, "matrix_join_sync_snapshot_stale", "gauge",
                         "1 while the room's snapshot is marked stale (its "
                         "joins go to the homeserver), else 0.") != 0)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (rooms[i].cached
            && mxj_metrics_u64(b, "matrix_join_sync_snapshot_stale", "room",
                               rooms[i].id, (uint64_t) rooms[i].stale)
               != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_head(b, "matrix_join_sync_live_pending", "gauge",
                         "Pushed events of the room queued and not applied "
                         "yet (its meta's live_pending).") != 0)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (rooms[i].cached
            && mxj_metrics_u64(b, "matrix_join_sync_live_pending", "room",
                               rooms[i].id,
                               (uint64_t) (rooms[i].live_pending > 0
                                           ? rooms[i].live_pending : 0))
               != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_head(b, "matrix_join_sync_edge_joins", "gauge",
                         "Joins the edge accepted into the room since its "
                         "snapshot was loaded (its meta's edge_joins; a "
                         "load starts again at 0).") != 0)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (rooms[i].cached
            && mxj_metrics_u64(b, "matrix_join_sync_edge_joins", "room",
                               rooms[i].id,
                               (uint64_t) (rooms[i].edge_joins > 0
                                           ? rooms[i].edge_joins : 0))
               != 0)
        {
            goto done;
        }
    }

    rc = 0;

done:

    for (k = 0; k < n; k++) {
        free(rooms[k].id);
    }

    free(rooms);

    return rc;
}
