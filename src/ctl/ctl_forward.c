/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl forward --redis ADDRESS --upstream URL [options]
 *
 * Replays each join the module accepted (the room's outbox stream) to the
 * homeserver, room by room in outbox order (docs/forwarder.md).
 *
 * Threads: the main thread lists the rooms every second and finds those
 * with entries (XLEN, pipelined, every 100 ms); --concurrency workers
 * each serve one room at a time with their own Redis connection and curl
 * handle; a signal thread turns SIGTERM and SIGINT into a stop. A room is
 * served by one worker of one forwarder at a time: the busy flag within
 * the process, the room's lease between processes.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "ctl_forward_run.h"
#include "ctl_opt.h"
#include "mx_crypto.h"


enum {
    MXJ_FWD_OPT_UPSTREAM = 0, MXJ_FWD_OPT_CONSUMER, MXJ_FWD_OPT_ONCE,
    MXJ_FWD_OPT_CONCURRENCY, MXJ_FWD_OPT_CLAIM_IDLE, MXJ_FWD_OPT_MAX_ATTEMPTS,
    MXJ_FWD_OPT_TIMEOUT, MXJ_FWD_OPT_METRICS
};

static const mxj_opt_t  mxj_fwd_opts[] = {
    { "upstream", 1, MXJ_FWD_OPT_UPSTREAM },
    { "consumer", 1, MXJ_FWD_OPT_CONSUMER },
    { "once", 0, MXJ_FWD_OPT_ONCE },
    { "concurrency", 1, MXJ_FWD_OPT_CONCURRENCY },
    { "claim-idle", 1, MXJ_FWD_OPT_CLAIM_IDLE },
    { "max-attempts", 1, MXJ_FWD_OPT_MAX_ATTEMPTS },
    { "timeout", 1, MXJ_FWD_OPT_TIMEOUT },
    { "metrics", 1, MXJ_FWD_OPT_METRICS },
    { NULL, 0, 0 }
};


static int mxj_fwd_run(mxj_fwd_t *fwd);
static int mxj_fwd_set(void *conf, int id, const char *value);
static int mxj_fwd_args(int argc, char **argv, mxj_fwd_t *fwd);
static int mxj_fwd_usage(void);
static int mxj_fwd_refresh(mxj_fwd_t *fwd);
static int mxj_fwd_scan(mxj_fwd_t *fwd, int *idle);
static void mxj_fwd_leave(mxj_fwd_t *fwd);


int
mxj_cmd_forward(int argc, char **argv)
{
    int                 rc;
    mxj_fwd_t           fwd;

    if (mxj_fwd_args(argc, argv, &fwd) != 0) {
        return MXJ_EXIT_USAGE;
    }

    if (mx_crypto_init() != 0) {
        fprintf(stderr, "matrix-join-ctl: sodium_init() failed\n");
        return MXJ_EXIT_FAIL;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "matrix-join-ctl: curl_global_init() failed\n");
        return MXJ_EXIT_FAIL;
    }

    /* a port taken fails at once, before anything is delivered */

    if (mxj_metrics_bind(&fwd.metrics) != 0) {
        return MXJ_EXIT_FAIL;
    }

    /* SIGPIPE ignored; SIGTERM and SIGINT go to one thread (ctl_run.h),
     * before any other thread is made (the listener's included) */

    if (mxj_run_start(&fwd.run, CLOCK_REALTIME, mxj_fwd_log,
                      "no new entries; finishing the deliveries in flight",
                      "already stopping")
        != 0
        || mxj_metrics_start(&fwd.metrics, mxj_fwd_metrics, &fwd) != 0)
    {
        mxj_metrics_stop(&fwd.metrics);
        return MXJ_EXIT_FAIL;
    }

    mxj_fwd_log("starting: consumer=%s upstream=%s concurrency=%ld "
                "claim_idle_ms=%ld max_attempts=%ld timeout_ms=%ld%s%s%s",
                fwd.consumer, fwd.upstream, fwd.concurrency, fwd.claim_idle,
                fwd.max_attempts, fwd.timeout, fwd.once ? " once" : "",
                fwd.metrics.address ? " metrics=" : "",
                fwd.metrics.address ? fwd.metrics.address : "");

    rc = mxj_fwd_run(&fwd);

    mxj_metrics_stop(&fwd.metrics);
    curl_global_cleanup();

    return rc;
}


/* The command, once started: the main thread's loop and the workers. */

static int
mxj_fwd_run(mxj_fwd_t *fwd)
{
    int                 rc, idle, failures, schema;
    long                i, started;
    int64_t             now, next_refresh;
    mxj_fwd_worker_t   *workers;

    /* the schema, before anything is written; absent: nothing loaded yet */

    failures = 0;

    for ( ;; ) {
        if (mxj_fwd_connect(fwd, &fwd->r, &failures) != 0) {
            mxj_fwd_log("stopped");
            return fwd->gave_up ? MXJ_EXIT_FAIL : MXJ_EXIT_OK;
        }

        schema = mxj_redis_schema(&fwd->r, 0);

        if (schema >= 0) {
            break;
        }

        if (fwd->r.c->err == 0) {
            mxj_redis_close(&fwd->r);
            return MXJ_EXIT_FAIL;
        }

        mxj_redis_close(&fwd->r);
    }

    workers = calloc(fwd->concurrency, sizeof(mxj_fwd_worker_t));
    if (workers == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return MXJ_EXIT_FAIL;
    }

    for (started = 0; started < fwd->concurrency; started++) {
        workers[started].fwd = fwd;
        workers[started].index = started;

        if (pthread_create(&workers[started].tid, NULL, mxj_fwd_worker,
                           &workers[started])
            != 0)
        {
            mxj_fwd_log("cannot start worker %ld", started);
            mxj_run_stop(&fwd->run);
            break;
        }
    }

    /* the main thread: which rooms, which of them have entries */

    next_refresh = 0;

    while (!mxj_run_stopping(&fwd->run)) {
        if (mxj_fwd_connect(fwd, &fwd->r, &failures) != 0) {
            break;
        }

        now = mxj_run_mono_ms();

        if (now >= next_refresh) {
            if (mxj_fwd_refresh(fwd) != 0) {
                mxj_redis_close(&fwd->r);
                continue;
            }

            next_refresh = now + MXJ_FWD_REFRESH_MS;
        }

        if (mxj_fwd_scan(fwd, &idle) != 0) {
            mxj_redis_close(&fwd->r);
            continue;
        }

        if (fwd->once && idle) {
            mxj_fwd_log("every outbox is empty");
            mxj_run_stop(&fwd->run);
            break;
        }

        /* more rooms, fewer looks: at most some 10,000 XLEN a second */

        mxj_run_sleep(&fwd->run, fwd->nrooms / 10 > MXJ_FWD_SCAN_MS
                            ? (long) (fwd->nrooms / 10) : MXJ_FWD_SCAN_MS);
    }

    mxj_run_stop(&fwd->run);

    for (i = 0; i < started; i++) {
        pthread_join(workers[i].tid, NULL);
    }

    free(workers);
    mxj_fwd_leave(fwd);
    mxj_redis_close(&fwd->r);

    rc = MXJ_EXIT_OK;

    if (fwd->once && (fwd->dead_letters > 0 || fwd->gave_up)) {
        rc = MXJ_EXIT_FAIL;
    }

    mxj_fwd_log("stopped (%ld dead letters in this run)", fwd->dead_letters);

    /* the listener reads the rooms: stopped before they are freed */

    mxj_metrics_stop(&fwd->metrics);

    for (i = 0; i < (long) fwd->nrooms; i++) {
        mxj_fwd_room_free(fwd->rooms[i]);
    }

    free(fwd->rooms);
    free(fwd->consumer_buf);

    return rc;

}



static int
mxj_fwd_set(void *conf, int id, const char *value)
{
    mxj_fwd_t *fwd = conf;

    switch (id) {

    case MXJ_FWD_OPT_UPSTREAM:
        fwd->upstream = value;
        return 0;

    case MXJ_FWD_OPT_CONSUMER:
        if (*value == '\0') {
            fprintf(stderr, "matrix-join-ctl: forward: empty --consumer\n");
            return -1;
        }

        fwd->consumer = value;
        return 0;

    case MXJ_FWD_OPT_ONCE:
        fwd->once = 1;
        return 0;

    case MXJ_FWD_OPT_CONCURRENCY:
        return mxj_run_number("forward", "--concurrency", value, 1, 256,
                              &fwd->concurrency);

    case MXJ_FWD_OPT_CLAIM_IDLE:
        return mxj_run_number("forward", "--claim-idle", value, 100,
                              86400000, &fwd->claim_idle);

    case MXJ_FWD_OPT_MAX_ATTEMPTS:
        return mxj_run_number("forward", "--max-attempts", value, 1, 1000000,
                              &fwd->max_attempts);

    case MXJ_FWD_OPT_TIMEOUT:
        return mxj_run_number("forward", "--timeout", value, 100, 86400000,
                              &fwd->timeout);

    case MXJ_FWD_OPT_METRICS:
        return mxj_metrics_set(&fwd->metrics, "forward", value);

    default: /* MXJ_OPT_OPERAND */
        fprintf(stderr, "matrix-join-ctl: forward: unexpected argument "
                "\"%s\"\n", value);
        return -1;
    }
}


static int
mxj_fwd_args(int argc, char **argv, mxj_fwd_t *fwd)
{
    char         host[256];
    size_t       n;
    const char  *why;

    memset(fwd, 0, sizeof(mxj_fwd_t));
    mxj_redis_init(&fwd->r);
    fwd->metrics.fd = -1;

    fwd->concurrency = 4;
    fwd->claim_idle = 60000;
    fwd->max_attempts = 10;
    fwd->timeout = 30000;

    if (mxj_opt_parse("forward", argc, argv, &fwd->r, mxj_fwd_opts,
                      mxj_fwd_set, fwd)
        != 0)
    {
        return mxj_fwd_usage();
    }

    if (fwd->r.address == NULL || fwd->upstream == NULL) {
        return mxj_fwd_usage();
    }

    if (mxj_http_url(fwd->upstream, &fwd->path, &fwd->path_len, &why)
        != 0)
    {
        fprintf(stderr, "matrix-join-ctl: forward: invalid --upstream "
                "\"%s\": %s\n", fwd->upstream, why);
        return mxj_fwd_usage();
    }

    if (fwd->consumer == NULL) {
        if (gethostname(host, sizeof(host)) != 0) {
            strcpy(host, "localhost");
        }

        host[sizeof(host) - 1] = '\0';
        n = strlen(host) + 24;

        fwd->consumer_buf = malloc(n);
        if (fwd->consumer_buf == NULL) {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            return -1;
        }

        snprintf(fwd->consumer_buf, n, "%s-%ld", host, (long) getpid());
        fwd->consumer = fwd->consumer_buf;
    }

    return 0;
}


static int
mxj_fwd_usage(void)
{
    mxj_usage(stderr, "forward");

    return -1;
}


/*
 * The rooms: P outbox:rooms and P rooms, read again every second. A room
 * new to us gets the group (XGROUP CREATE ... 0 MKSTREAM when missing).
 * Rooms are never removed during a run: workers hold pointers to them.
 */

static int
mxj_fwd_refresh(mxj_fwd_t *fwd)
{
    int               rc;
    char             *key;
    size_t            i, j, k, known, added;
    redisReply       *sets[2], *v;
    mxj_fwd_room_t   *room, **grow;

    static const char  *names[2] = { MX_KEY_OUTBOX_ROOMS, MX_KEY_ROOMS };

    sets[0] = NULL;
    sets[1] = NULL;
    added = 0;
    rc = -1;

    for (i = 0; i < 2; i++) {
        key = mxj_global_key(&fwd->r, names[i], NULL);
        if (key == NULL) {
            goto done;
        }

        sets[i] = mxj_fwd_cmd(&fwd->r, 2, (const char *[]) { "SMEMBERS", key },
                              NULL);
        free(key);

        if (sets[i] == NULL) {
            goto done;
        }

        if (sets[i]->type != REDIS_REPLY_ARRAY) {
            mxj_fwd_log("redis at %s: SMEMBERS %s%s: %s", fwd->r.address,
                        fwd->r.prefix, names[i], mxj_fwd_str(sets[i]));
            rc = 0;
            goto done;
        }
    }

    /* new rooms are appended, then the table is sorted once */

    pthread_mutex_lock(&fwd->run.mutex);

    known = fwd->nrooms;

    for (i = 0; i < 2; i++) {
        for (j = 0; j < sets[i]->elements; j++) {
            v = sets[i]->element[j];

            /* a brace would move the room's keys out of its slot */

            if (v->type != REDIS_REPLY_STRING || v->len == 0
                || strlen(v->str) != v->len || strchr(v->str, '}') != NULL)
            {
                continue;
            }

            /* known before (the first known entries are sorted) */

            fwd->nrooms = known;
            room = mxj_fwd_find(fwd, v->str);
            fwd->nrooms = known + added;

            if (room != NULL) {
                continue;
            }

            room = mxj_fwd_room_new(fwd, v->str);
            if (room == NULL) {
                break;
            }

            if (fwd->nrooms == fwd->cap) {
                grow = realloc(fwd->rooms, (fwd->cap ? 2 * fwd->cap : 64)
                                           * sizeof(mxj_fwd_room_t *));
                if (grow == NULL) {
                    fprintf(stderr, "matrix-join-ctl: out of memory\n");
                    mxj_fwd_room_free(room);
                    room = NULL;
                    break;
                }

                fwd->rooms = grow;
                fwd->cap = fwd->cap ? 2 * fwd->cap : 64;
            }

            fwd->rooms[fwd->nrooms++] = room;
            added++;
        }

        if (j < sets[i]->elements) {
            break;
        }
    }

    qsort(fwd->rooms, fwd->nrooms, sizeof(mxj_fwd_room_t *),
          mxj_fwd_room_cmp);

    /* a room in both sets was added twice: no worker has seen it yet */

    for (j = 1, k = fwd->nrooms ? 1 : 0; j < fwd->nrooms; j++) {
        if (strcmp(fwd->rooms[k - 1]->id, fwd->rooms[j]->id) == 0) {
            mxj_fwd_room_free(fwd->rooms[j]);
            continue;
        }

        fwd->rooms[k++] = fwd->rooms[j];
    }

    fwd->nrooms = k;

    pthread_mutex_unlock(&fwd->run.mutex);

    if (i < 2) {
        goto done;
    }

    /* the group of each room that does not have it yet */

    for (i = 0; i < fwd->nrooms; i++) {
        pthread_mutex_lock(&fwd->run.mutex);
        room = fwd->rooms[i];
        j = room->grouped;
        pthread_mutex_unlock(&fwd->run.mutex);

        if (!j && mxj_fwd_group(fwd, &fwd->r, room) != 0 && fwd->r.c->err) {
            goto done;
        }
    }

    rc = 0;

done:

    for (i = 0; i < 2; i++) {
        if (sets[i] != NULL) {
            freeReplyObject(sets[i]);
        }
    }

    return rc;
}


/*
 * XLEN of every room's outbox, pipelined: a room has work while its
 * stream has entries (delivered ones are deleted). *idle: no room has
 * entries and none is being served. With --metrics, the first entry of
 * each too (XRANGE - + COUNT 1): the oldest entry's age.
 */

static int
mxj_fwd_scan(mxj_fwd_t *fwd, int *idle)
{
    int               rc, ready, each;
    size_t            i, b, e, n, sent;
    int64_t           oldest;
    redisReply       *reply, *first;
    mxj_fwd_room_t  **rooms;

    *idle = 0;

    pthread_mutex_lock(&fwd->run.mutex);

    n = fwd->nrooms;
    rooms = malloc((n ? n : 1) * sizeof(mxj_fwd_room_t *));

    if (rooms != NULL && n) {
        memcpy(rooms, fwd->rooms, n * sizeof(mxj_fwd_room_t *));
    }

    pthread_mutex_unlock(&fwd->run.mutex);

    if (rooms == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    rc = -1;
    sent = 0;
    each = fwd->metrics.address != NULL ? 2 : 1;

    /* with a cluster, one room at a time: its node's connection */

    for (b = 0; b < n; b = e) {
        e = fwd->r.cluster ? b + 1 : n;

        if (mxj_redis_route(&fwd->r, rooms[b]->outbox,
                            strlen(rooms[b]->outbox))
            != 0)
        {
            goto done;
        }

        for (i = b; i < e; i++) {
            if (redisAppendCommand(fwd->r.c, "XLEN %s", rooms[i]->outbox)
                != REDIS_OK
                || (each == 2
                    && redisAppendCommand(fwd->r.c, "XRANGE %s - + COUNT 1",
                                          rooms[i]->outbox)
                       != REDIS_OK))
            {
                goto done;
            }

            sent += each;
        }

        for (i = b; i < e; i++) {
            if (redisGetReply(fwd->r.c, (void **) &reply) != REDIS_OK) {
                mxj_redis_count_error();
                mxj_fwd_log("redis at %s: %s", fwd->r.address,
                            fwd->r.c->errstr);
                goto done;
            }

            sent--;
            oldest = 0;

            if (each == 2) {
                if (redisGetReply(fwd->r.c, (void **) &first) != REDIS_OK) {
                    freeReplyObject(reply);
                    mxj_redis_count_error();
                    mxj_fwd_log("redis at %s: %s", fwd->r.address,
                                fwd->r.c->errstr);
                    goto done;
                }

                sent--;

                /* [[id, fields]] */

                if (first->type == REDIS_REPLY_ARRAY && first->elements == 1
                    && first->element[0]->type == REDIS_REPLY_ARRAY
                    && first->element[0]->elements == 2
                    && first->element[0]->element[0]->type
                       == REDIS_REPLY_STRING)
                {
                    oldest = mxj_fwd_stream_id_ms(
                                 first->element[0]->element[0]->str,
                                 first->element[0]->element[0]->len);
                }

                freeReplyObject(first);
            }

            if (mxj_redis_demoted(fwd->r.c, reply)) {
                /* a cluster's slot moved: the reconnect loads the map */
                mxj_fwd_log("redis at %s: %s", fwd->r.address,
                            fwd->r.c->errstr);
                freeReplyObject(reply);
                goto done;
            }

            pthread_mutex_lock(&fwd->run.mutex);

            /* a wrong type counts as no work: the worker would only fail */

            rooms[i]->work = (reply->type == REDIS_REPLY_INTEGER
                              && reply->integer > 0);
            rooms[i]->depth = reply->type == REDIS_REPLY_INTEGER
                              ? reply->integer : 0;
            rooms[i]->oldest_ms = oldest > 0 ? oldest : 0;

            if (rooms[i]->work && !rooms[i]->grouped) {
                rooms[i]->work = 0;
            }

            pthread_mutex_unlock(&fwd->run.mutex);

            freeReplyObject(reply);
        }
    }

    pthread_mutex_lock(&fwd->run.mutex);

    *idle = 1;
    ready = 0;

    for (i = 0; i < fwd->nrooms; i++) {
        if (fwd->rooms[i]->work || fwd->rooms[i]->busy) {
            *idle = 0;
        }

        if (fwd->rooms[i]->work && !fwd->rooms[i]->busy) {
            ready = 1;
        }
    }

    /* idle workers are woken only for something to take */

    if (ready) {
        pthread_cond_broadcast(&fwd->run.cond);
    }

    pthread_mutex_unlock(&fwd->run.mutex);

    rc = 0;

done:

    if (sent && fwd->r.c->err == 0) {
        /* replies still due on a live connection: it is out of step */
        fwd->r.c->err = REDIS_ERR_OTHER;
    }

    free(rooms);

    return rc;
}


/* Our consumer leaves the groups it joined, where nothing is pending at
 * it (best effort: a consumer left behind is only clutter). */

static void
mxj_fwd_leave(mxj_fwd_t *fwd)
{
    size_t        i;
    redisReply   *reply;
    const char   *argv[3];

    argv[1] = MXJ_FWD_GROUP;
    argv[2] = fwd->consumer;

    for (i = 0; i < fwd->nrooms; i++) {
        if (!fwd->rooms[i]->used || fwd->r.c == NULL || fwd->r.c->err) {
            continue;
        }

        argv[0] = fwd->rooms[i]->outbox;

        reply = mxj_fwd_script(&fwd->r, MX_LUA_FORWARD_LEAVE, 1, 3, argv,
                               NULL);
        if (reply != NULL) {
            freeReplyObject(reply);
        }
    }
}
