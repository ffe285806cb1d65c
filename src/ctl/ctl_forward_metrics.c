/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl forward --metrics: what the workers count and the main
 * loop reads from Redis (each room's outbox, at its look every 100 ms),
 * formatted for the listener's thread (ctl_metrics.c). The listener
 * copies the numbers under the run's mutex and formats them after it,
 * and never asks Redis.
 */

#include <stdlib.h>
#include <string.h>

#include "ctl_forward_run.h"


typedef struct {
    const char         *id;         /* rooms are never freed during a run */
    int64_t             depth;
    int64_t             oldest_ms;
} mxj_fwd_metrics_room_t;


void
mxj_fwd_count_attempt(mxj_fwd_t *fwd, long status, mxj_fwd_action_e action)
{
    pthread_mutex_lock(&fwd->run.mutex);

    if (status >= 100 && status < 600) {
        fwd->stats.answers[status / 100]++;

    } else {
        fwd->stats.no_answer++;
    }

    if (action == MXJ_FWD_RETRY) {
        fwd->stats.retries++;
    }

    pthread_mutex_unlock(&fwd->run.mutex);
}


void
mxj_fwd_count_delivered(mxj_fwd_t *fwd, int64_t lag_ms, int64_t latency_ms)
{
    pthread_mutex_lock(&fwd->run.mutex);

    fwd->stats.delivered++;
    mxj_metrics_observe(&fwd->stats.lag,
                        (double) (lag_ms >= 0 ? lag_ms : latency_ms) / 1000);

    pthread_mutex_unlock(&fwd->run.mutex);
}


int
mxj_fwd_metrics(void *data, mx_buf_t *b)
{
    int                       rc;
    char                      cls[4];
    size_t                    i, n;
    int64_t                   now;
    uint64_t                  dead;
    mxj_fwd_t                *fwd = data;
    mxj_fwd_stats_t           st;
    mxj_fwd_metrics_room_t   *rooms;

    /* a copy under the lock; formatted after it */

    pthread_mutex_lock(&fwd->run.mutex);

    st = fwd->stats;
    dead = (uint64_t) fwd->dead_letters;
    n = fwd->nrooms;
    rooms = malloc((n ? n : 1) * sizeof(mxj_fwd_metrics_room_t));

    for (i = 0; rooms != NULL && i < n; i++) {
        rooms[i].id = fwd->rooms[i]->id;
        rooms[i].depth = fwd->rooms[i]->depth;
        rooms[i].oldest_ms = fwd->rooms[i]->oldest_ms;
    }

    pthread_mutex_unlock(&fwd->run.mutex);

    if (rooms == NULL) {
        return -1;
    }

    now = mxj_run_wall_ms();
    rc = -1;

    if (mxj_metrics_head(b, "matrix_join_forward_delivered_total", "counter",
                         "Outbox entries the homeserver answered 2xx and "
                         "that were acknowledged.") != 0
        || mxj_metrics_u64(b, "matrix_join_forward_delivered_total", NULL,
                           NULL, st.delivered) != 0
        || mxj_metrics_head(b, "matrix_join_forward_dead_letters_total",
                            "counter", "Outbox entries made dead letters "
                            "(refused after --max-attempts, or malformed)."
                            ) != 0
        || mxj_metrics_u64(b, "matrix_join_forward_dead_letters_total", NULL,
                           NULL, dead) != 0
        || mxj_metrics_head(b, "matrix_join_forward_retries_total", "counter",
                            "Delivery attempts followed by a backoff and "
                            "another attempt.") != 0
        || mxj_metrics_u64(b, "matrix_join_forward_retries_total", NULL,
                           NULL, st.retries) != 0
        || mxj_metrics_head(b, "matrix_join_forward_attempts_total",
                            "counter", "Delivery requests to the "
                            "homeserver by the status class of its answer; "
                            "none: no answer (connection failed, timeout)."
                            ) != 0)
    {
        goto done;
    }

    for (i = 1; i <= 5; i++) {
        cls[0] = (char) ('0' + i);
        cls[1] = 'x';
        cls[2] = 'x';
        cls[3] = '\0';

        if (mxj_metrics_u64(b, "matrix_join_forward_attempts_total",
                            "status_class", cls, st.answers[i]) != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_u64(b, "matrix_join_forward_attempts_total",
                        "status_class", "none", st.no_answer) != 0
        || mxj_metrics_hist(b, "matrix_join_forward_delivery_lag_seconds",
                            "From the edge's 200 to the homeserver's 2xx "
                            "for each entry delivered (the last request's "
                            "duration for an entry without received_ts).",
                            &st.lag) != 0
        || mxj_metrics_head(b, "matrix_join_forward_redis_errors_total",
                            "counter", "Redis connections that failed and "
                            "commands that got no reply (connection lost, "
                            "timeout).") != 0
        || mxj_metrics_u64(b, "matrix_join_forward_redis_errors_total", NULL,
                           NULL, mxj_redis_errors()) != 0
        || mxj_metrics_head(b, "matrix_join_forward_outbox_entries", "gauge",
                            "Entries in the room's outbox (pending ones "
                            "included) at the forwarder's last look.") != 0)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (mxj_metrics_u64(b, "matrix_join_forward_outbox_entries", "room",
                            rooms[i].id, (uint64_t) rooms[i].depth) != 0)
        {
            goto done;
        }
    }

    if (mxj_metrics_head(b, "matrix_join_forward_outbox_oldest_age_seconds",
                         "gauge", "Age of the oldest entry the last look "
                         "found in the room's outbox (0: empty).") != 0)
    {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (mxj_metrics_double(b,
                               "matrix_join_forward_outbox_oldest_age_seconds",
                               "room", rooms[i].id,
                               rooms[i].depth > 0 && rooms[i].oldest_ms > 0
                               && now > rooms[i].oldest_ms
                               ? (double) (now - rooms[i].oldest_ms) / 1000
                               : 0)
            != 0)
        {
            goto done;
        }
    }

    rc = 0;

done:

    free(rooms);

    return rc;
}
