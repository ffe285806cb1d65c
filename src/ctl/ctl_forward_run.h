/*
 * Copyright (C) nginx-matrix-join authors.
 * What the files of matrix-join-ctl forward share: the command
 * (ctl_forward.c), its workers (ctl_forward_worker.c), the rooms and who
 * serves them (ctl_forward_rooms.c) and Redis as their threads use it
 * (ctl_forward_redis.c). The pure decisions are in ctl_forward.h.
 */

#ifndef MXJ_CTL_FORWARD_RUN_H
#define MXJ_CTL_FORWARD_RUN_H

#include <pthread.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "ctl_forward.h"
#include "ctl_http.h"
#include "ctl_metrics.h"
#include "ctl_redis.h"
#include "ctl_run.h"


#define MXJ_FWD_REFRESH_MS      1000    /* the room list read again */
#define MXJ_FWD_SCAN_MS         100     /* rooms looked at for entries */
#define MXJ_FWD_BATCH           64      /* entries before a room yields */
#define MXJ_FWD_LEASE_BUSY_MS   1000    /* a room leased elsewhere: retry */
#define MXJ_FWD_REDIS_MIN_MS    100     /* reconnect backoff */
#define MXJ_FWD_REDIS_MAX_MS    5000
#define MXJ_FWD_REDIS_IO        10      /* s, one Redis reply */
#define MXJ_FWD_ONCE_TRIES      5       /* --once: connects before giving up */


typedef struct {
    char               *id;             /* the room ID */
    char               *outbox;
    char               *dead;
    char               *meta;
    char               *delivered;
    char               *lock;
    int64_t             not_before;     /* monotonic ms */
    int64_t             last_delivered; /* monotonic ms, 0: none yet */
    char                waited[48];     /* the entry whose wait was logged */

    /* under the mutex: */
    int                 busy;           /* a worker of ours serves it */
    int                 work;           /* entries at the last look */
    int                 grouped;        /* the group is known to exist */
    int                 used;           /* we read from it: a consumer */
    int64_t             depth;          /* XLEN at the last look */
    int64_t             oldest_ms;      /* its first entry's ID time (wall
                                           ms), 0: none; with --metrics */
} mxj_fwd_room_t;


/* What --metrics tells (ctl_forward_metrics.c), under the run's mutex. */
typedef struct {
    uint64_t            delivered;      /* entries answered 2xx, acked */
    uint64_t            retries;        /* attempts followed by a wait */
    uint64_t            answers[6];     /* attempts answered, by status
                                           class: [1] 1xx ... [5] 5xx */
    uint64_t            no_answer;      /* attempts without an answer */
    mxj_metrics_hist_t  lag;            /* edge 200 to the homeserver's
                                           2xx (else the request's time) */
} mxj_fwd_stats_t;


typedef struct {
    mxj_redis_t         r;              /* the main thread's connection */
    const char         *upstream;
    const char         *path;           /* the upstream URL's path */
    size_t              path_len;
    const char         *consumer;
    char               *consumer_buf;
    int                 once;
    int                 gave_up;        /* --once: Redis unreachable */
    long                concurrency;
    long                claim_idle;
    long                max_attempts;
    long                timeout;

    mxj_run_t           run;            /* its mutex: the rooms, the counters */
    mxj_fwd_room_t    **rooms;          /* sorted by ID */
    size_t              nrooms;
    size_t              cap;
    size_t              next;           /* round robin */
    long                dead_letters;
    mxj_fwd_stats_t     stats;
    mxj_metrics_t       metrics;        /* --metrics */
} mxj_fwd_t;


typedef struct {
    mxj_fwd_t          *fwd;
    long                index;
    pthread_t           tid;
    mxj_redis_t         r;
    mxj_http_t          http;           /* keeps the response's first bytes */
    char                token[33];      /* our lease value */
    mxj_fwd_room_t     *room;           /* the room whose lease we hold */
    int64_t             renewed;        /* monotonic ms */
    int                 lease_lost;
} mxj_fwd_worker_t;


typedef struct {
    redisReply         *reply;          /* owns everything below */
    const char         *id;
    redisReply         *fields;         /* [name, value, ...] */
    redisReply         *method;
    redisReply         *uri;
    redisReply         *authorization;
    redisReply         *body;
    redisReply         *event_id;
    redisReply         *received_ts;
} mxj_fwd_entry_t;


/* what serving a room ended with */
typedef enum {
    MXJ_FWD_DONE = 0,       /* no entry left */
    MXJ_FWD_MORE,           /* entries left: the room yields its worker */
    MXJ_FWD_WAIT,           /* not before a time */
    MXJ_FWD_STOPPED,
    MXJ_FWD_REDIS_ERROR
} mxj_fwd_end_e;


/* --- ctl_forward_worker.c: a worker, serving one room at a time ------- */

void *mxj_fwd_worker(void *data);

/* --- ctl_forward_rooms.c: the rooms known, who serves which ----------- */

/* fwd->rooms is kept sorted with mxj_fwd_room_cmp (qsort). */
int mxj_fwd_room_cmp(const void *a, const void *b);
mxj_fwd_room_t *mxj_fwd_find(mxj_fwd_t *fwd, const char *id);
mxj_fwd_room_t *mxj_fwd_room_new(mxj_fwd_t *fwd, const char *id);
void mxj_fwd_room_free(mxj_fwd_room_t *room);

/*
 * XGROUP CREATE outbox forwarder 0 MKSTREAM: 0 when the group exists now,
 * -1 otherwise (the connection's err set when it broke).
 */
int mxj_fwd_group(mxj_fwd_t *fwd, mxj_redis_t *r,
    mxj_fwd_room_t *room);

/*
 * Waits for a room with entries that no worker serves and that may be
 * tried now, and marks it busy; NULL at a stop.
 */
mxj_fwd_room_t *mxj_fwd_take(mxj_fwd_t *fwd);

/* The room back, with how its serving ended (and the wait asked). */
void mxj_fwd_put(mxj_fwd_t *fwd, mxj_fwd_room_t *room,
    mxj_fwd_end_e end, long wait);

/* --- ctl_forward_metrics.c: what --metrics serves ---------------------- */

/* The render function of the listener (ctl_metrics.h); data is fwd. */
int mxj_fwd_metrics(void *data, mx_buf_t *out);

/* One attempt's end: its status (0: no answer), the action judged. */
void mxj_fwd_count_attempt(mxj_fwd_t *fwd, long status,
    mxj_fwd_action_e action);

/* A delivery acknowledged: lag_ms from the edge's 200 (-1: not known),
 * latency_ms of its last request. */
void mxj_fwd_count_delivered(mxj_fwd_t *fwd, int64_t lag_ms,
    int64_t latency_ms);

/* --- ctl_forward_redis.c: Redis, as forward's threads use it ---------- */

/*
 * Makes sure r is connected, reconnecting with a backoff (logged) for as
 * long as it takes. 0, or -1 when a stop came first.
 */
int mxj_fwd_connect(mxj_fwd_t *fwd, mxj_redis_t *r, int *failures);

/*
 * One command, or a script of src/lua: the reply (an error reply
 * included), or NULL with the connection marked failed and the reason
 * logged.
 */
redisReply *mxj_fwd_cmd(mxj_redis_t *r, int argc, const char **argv,
    const size_t *lens);
redisReply *mxj_fwd_script(mxj_redis_t *r, mx_lua_e which, int nkeys,
    int argc, const char **argv, const size_t *lens);

int mxj_fwd_is_error(redisReply *reply, const char *prefix);

/* A reply as a string for a log line. */
const char *mxj_fwd_str(redisReply *v);

#endif /* MXJ_CTL_FORWARD_RUN_H */
