/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl forward: the rooms the forwarder knows (sorted by ID,
 * under the run's mutex), their consumer group, and which worker serves
 * which: one room is served by one worker at a time, round robin.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_forward_run.h"


int
mxj_fwd_room_cmp(const void *a, const void *b)
{
    const mxj_fwd_room_t  *x, *y;

    x = *(mxj_fwd_room_t *const *) a;
    y = *(mxj_fwd_room_t *const *) b;

    return strcmp(x->id, y->id);
}


mxj_fwd_room_t *
mxj_fwd_find(mxj_fwd_t *fwd, const char *id)
{
    mxj_fwd_room_t    key, *k, **found;

    if (fwd->nrooms == 0) {
        return NULL;        /* and no NULL base for bsearch() */
    }

    key.id = (char *) id;
    k = &key;

    found = bsearch(&k, fwd->rooms, fwd->nrooms, sizeof(mxj_fwd_room_t *),
                    mxj_fwd_room_cmp);

    return found ? *found : NULL;
}


mxj_fwd_room_t *
mxj_fwd_room_new(mxj_fwd_t *fwd, const char *id)
{
    mxj_fwd_room_t  *room;

    room = calloc(1, sizeof(mxj_fwd_room_t));
    if (room == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return NULL;
    }

    room->id = strdup(id);
    room->outbox = mxj_room_key(&fwd->r, id, MX_KEY_OUTBOX);
    room->dead = mxj_room_key(&fwd->r, id, MX_KEY_DEAD);
    room->meta = mxj_room_key(&fwd->r, id, MX_KEY_META);
    room->delivered = mxj_room_key(&fwd->r, id, MX_KEY_DELIVERED);
    room->lock = mxj_room_key(&fwd->r, id, MX_KEY_FWDLOCK);

    if (room->id == NULL || room->outbox == NULL || room->dead == NULL
        || room->meta == NULL || room->delivered == NULL
        || room->lock == NULL)
    {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        mxj_fwd_room_free(room);
        return NULL;
    }

    return room;
}


void
mxj_fwd_room_free(mxj_fwd_room_t *room)
{
    free(room->id);
    free(room->outbox);
    free(room->dead);
    free(room->meta);
    free(room->delivered);
    free(room->lock);
    free(room);
}


/*
 * XGROUP CREATE outbox forwarder 0 MKSTREAM: from the first entry on.
 * 0 when the group exists now; -1 otherwise (the connection's err set
 * when it broke).
 */

int
mxj_fwd_group(mxj_fwd_t *fwd, mxj_redis_t *r, mxj_fwd_room_t *room)
{
    int          rc;
    redisReply  *reply;

    reply = mxj_fwd_cmd(r, 6, (const char *[]) { "XGROUP", "CREATE",
                                                  room->outbox,
                                                  MXJ_FWD_GROUP, "0",
                                                  "MKSTREAM" },
                        NULL);
    if (reply == NULL) {
        return -1;
    }

    rc = 0;

    if (reply->type == REDIS_REPLY_ERROR
        && !mxj_fwd_is_error(reply, "BUSYGROUP"))
    {
        mxj_fwd_log("room=%s: cannot create the group on %s: %s", room->id,
                    room->outbox, reply->str);
        rc = -1;
    }

    freeReplyObject(reply);

    if (rc == 0) {
        pthread_mutex_lock(&fwd->run.mutex);
        room->grouped = 1;
        pthread_mutex_unlock(&fwd->run.mutex);
    }

    return rc;
}


/* A room with entries that no worker serves and that may be tried now. */

mxj_fwd_room_t *
mxj_fwd_take(mxj_fwd_t *fwd)
{
    size_t            i, k;
    int64_t           now, until;
    struct timespec   ts;
    mxj_fwd_room_t   *room;

    pthread_mutex_lock(&fwd->run.mutex);

    while (!mxj_run_stopping(&fwd->run)) {
        now = mxj_run_mono_ms();
        until = now + 1000;

        for (k = 0; k < fwd->nrooms; k++) {
            i = (fwd->next + k) % fwd->nrooms;
            room = fwd->rooms[i];

            if (room->busy || !room->work) {
                continue;
            }

            if (room->not_before > now) {
                if (room->not_before < until) {
                    until = room->not_before;
                }

                continue;
            }

            room->busy = 1;
            fwd->next = i + 1;
            pthread_mutex_unlock(&fwd->run.mutex);

            return room;
        }

        /* the condition's clock is the realtime one: wait a duration */

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (until - now) / 1000;
        ts.tv_nsec += ((until - now) % 1000) * 1000000;

        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }

        pthread_cond_timedwait(&fwd->run.cond, &fwd->run.mutex, &ts);
    }

    pthread_mutex_unlock(&fwd->run.mutex);

    return NULL;
}


void
mxj_fwd_put(mxj_fwd_t *fwd, mxj_fwd_room_t *room, mxj_fwd_end_e end,
    long wait)
{
    pthread_mutex_lock(&fwd->run.mutex);

    room->busy = 0;

    switch (end) {

    case MXJ_FWD_DONE:
        room->work = 0;
        break;

    case MXJ_FWD_WAIT:
        room->not_before = mxj_run_mono_ms() + wait;
        break;

    default:
        break;
    }

    pthread_cond_broadcast(&fwd->run.cond);
    pthread_mutex_unlock(&fwd->run.mutex);
}
