/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync, the Application Service (docs/sync.md, "Pushed
 * changes"): what its listener (ctl_sync_as_http.c) and the worker that
 * acts on the pushes (ctl_sync_as.c) share. The listener answers at once
 * and queues; the worker marks rooms stale and wakes the passes.
 */

#ifndef MXJ_CTL_SYNC_AS_H
#define MXJ_CTL_SYNC_AS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "ctl_sync_run.h"


#define MXJ_SYNC_AS_BODY_MAX     (8 * 1024 * 1024)  /* a transaction read */
#define MXJ_SYNC_AS_QUEUE_MAX    128     /* transactions queued */
#define MXJ_SYNC_AS_QUEUE_BYTES  (32 * 1024 * 1024) /* their bodies */
#define MXJ_SYNC_AS_IDLE_S       2       /* between two reads */
#define MXJ_SYNC_AS_CONN_MS      10000   /* a request's body in all */
#define MXJ_SYNC_AS_CONNS        8       /* connections at once */


/* One transaction answered and not yet acted on. */
typedef struct mxj_sync_as_item_s  mxj_sync_as_item_t;

struct mxj_sync_as_item_s {
    mxj_sync_as_item_t       *next;
    char                     *txn;
    json_t                   *events;       /* those of managed rooms */
    size_t                    bytes;        /* the body's length */
};


typedef struct mxj_sync_as_s {
    mxj_sync_t               *s;

    /* the listener's (ctl_sync_as_http.c) */
    struct MHD_Daemon        *daemon;
    mxj_sync_txns_t           txns;         /* its thread alone */
    unsigned char             hs_hash[32];  /* BLAKE2b of the hs_token */

    /* the worker's (ctl_sync_as.c) */
    pthread_t                 tid;
    int                       started;
    mxj_redis_t               r;            /* its own connection */

    /* under mutex: the queue, and the rooms to mark without an item */
    pthread_mutex_t           mutex;
    pthread_cond_t            cond;
    mxj_sync_as_item_t       *head;
    mxj_sync_as_item_t       *tail;
    size_t                    queued;
    size_t                    queued_bytes;
    unsigned char            *lost;         /* per room of s->rooms */
    int                       any_lost;
    int                       stop;

    uint64_t                  overflows;    /* transactions not queued */
} mxj_sync_as_t;


/* The listener on the socket bound (ctl_sync_as_http.c). */
int mxj_sync_as_listen(mxj_sync_as_t *as);
void mxj_sync_as_unlisten(mxj_sync_as_t *as);

/*
 * Hands a transaction answered to the worker: the item's events are of
 * managed rooms; when the queue is full, their rooms are marked to be
 * made stale and synced without it (logged, never dropped silently) and
 * the item freed. The item is the worker's either way.
 */
void mxj_sync_as_queue(mxj_sync_as_t *as, mxj_sync_as_item_t *item);

/* Every managed room to be made stale and synced, why logged. */
void mxj_sync_as_lose_all(mxj_sync_as_t *as, const char *txn,
    const char *why);

/* The index in s->rooms of a managed room ID, or -1. */
ssize_t mxj_sync_as_room(mxj_sync_t *s, const char *room_id);

void mxj_sync_as_item_free(mxj_sync_as_item_t *item);

#endif /* MXJ_CTL_SYNC_AS_H */
