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

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "ctl.h"
#include "ctl_forward.h"
#include "ctl_run.h"
#include "ctl_redis.h"
#include "mx_crypto.h"


#define MXJ_FWD_REFRESH_MS      1000    /* the room list read again */
#define MXJ_FWD_SCAN_MS         100     /* rooms looked at for entries */
#define MXJ_FWD_BATCH           64      /* entries before a room yields */
#define MXJ_FWD_LEASE_BUSY_MS   1000    /* a room leased elsewhere: retry */
#define MXJ_FWD_REDIS_MIN_MS    100     /* reconnect backoff */
#define MXJ_FWD_REDIS_MAX_MS    5000
#define MXJ_FWD_REDIS_IO        10      /* s, one Redis reply */
#define MXJ_FWD_LOG_MAX         2048


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
} mxj_fwd_room_t;


typedef struct {
    mxj_redis_t         r;              /* the main thread's connection */
    const char         *upstream;
    const char         *path;           /* the upstream URL's path */
    size_t              path_len;
    const char         *consumer;
    char               *consumer_buf;
    int                 once;
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
} mxj_fwd_t;


typedef struct {
    mxj_fwd_t          *fwd;
    long                index;
    pthread_t           tid;
    mxj_redis_t         r;
    CURL               *curl;
    char                token[33];      /* our lease value */
    mxj_fwd_room_t     *room;           /* the room whose lease we hold */
    int64_t             renewed;        /* monotonic ms */
    int                 lease_lost;
    char                resp[MXJ_FWD_RESPONSE_MAX];
    size_t              resp_len;
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


static int mxj_fwd_args(int argc, char **argv, mxj_fwd_t *fwd);
static int mxj_fwd_usage(void);
static void mxj_fwd_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int mxj_fwd_connect(mxj_fwd_t *fwd, mxj_redis_t *r, int *failures);
static int mxj_fwd_refresh(mxj_fwd_t *fwd);
static mxj_fwd_room_t *mxj_fwd_room_new(mxj_fwd_t *fwd, const char *id);
static void mxj_fwd_room_free(mxj_fwd_room_t *room);
static int mxj_fwd_scan(mxj_fwd_t *fwd, int *idle);
static int mxj_fwd_group(mxj_fwd_t *fwd, mxj_redis_t *r,
    mxj_fwd_room_t *room);
static void mxj_fwd_leave(mxj_fwd_t *fwd);
static void *mxj_fwd_worker(void *data);
static mxj_fwd_room_t *mxj_fwd_take(mxj_fwd_t *fwd);
static void mxj_fwd_put(mxj_fwd_t *fwd, mxj_fwd_room_t *room,
    mxj_fwd_end_e end, long wait);
static mxj_fwd_end_e mxj_fwd_serve(mxj_fwd_worker_t *w,
    mxj_fwd_room_t *room, long *wait);
static int mxj_fwd_lease(mxj_fwd_worker_t *w, mxj_fwd_room_t *room);
static void mxj_fwd_release(mxj_fwd_worker_t *w, mxj_fwd_room_t *room);
static int mxj_fwd_renew_due(mxj_fwd_worker_t *w);
static mxj_fwd_end_e mxj_fwd_next(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e, long *wait);
static int mxj_fwd_entry(redisReply *reply, redisReply *item,
    mxj_fwd_entry_t *e);
static mxj_fwd_end_e mxj_fwd_deliver(mxj_fwd_worker_t *w,
    mxj_fwd_room_t *room, mxj_fwd_entry_t *e);
static long mxj_fwd_http(mxj_fwd_worker_t *w, mxj_fwd_entry_t *e,
    const char *target, struct curl_slist *headers, int64_t *latency,
    char *err);
static int mxj_fwd_ack(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e);
static int mxj_fwd_dead(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e, long status, const char *response, size_t len,
    unsigned long attempts);
static mxj_fwd_end_e mxj_fwd_wait(mxj_fwd_worker_t *w, long ms);
static size_t mxj_fwd_write(char *data, size_t size, size_t n, void *ctx);
static int mxj_fwd_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow);
static redisReply *mxj_fwd_script(mxj_redis_t *r, mx_lua_e which, int nkeys,
    int argc, const char **argv, const size_t *lens);
static redisReply *mxj_fwd_cmd(mxj_redis_t *r, int argc, const char **argv,
    const size_t *lens);
static int mxj_fwd_is_error(redisReply *reply, const char *prefix);
static const char *mxj_fwd_str(redisReply *v);


int
mxj_cmd_forward(int argc, char **argv)
{
    int                 rc, idle, failures, schema;
    long                i, started;
    int64_t             now, next_refresh;
    mxj_fwd_t           fwd;
    mxj_fwd_worker_t   *workers;

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

    /* SIGPIPE ignored; SIGTERM and SIGINT go to one thread (ctl_run.h) */

    if (mxj_run_start(&fwd.run, CLOCK_REALTIME, mxj_fwd_log,
                      "no new entries; finishing the deliveries in flight",
                      "already stopping")
        != 0)
    {
        return MXJ_EXIT_FAIL;
    }

    mxj_fwd_log("starting: consumer=%s upstream=%s concurrency=%ld "
                "claim_idle_ms=%ld max_attempts=%ld timeout_ms=%ld%s",
                fwd.consumer, fwd.upstream, fwd.concurrency, fwd.claim_idle,
                fwd.max_attempts, fwd.timeout, fwd.once ? " once" : "");

    /* the schema, before anything is written; absent: nothing loaded yet */

    failures = 0;

    for ( ;; ) {
        if (mxj_fwd_connect(&fwd, &fwd.r, &failures) != 0) {
            mxj_fwd_log("stopped");
            return MXJ_EXIT_OK;
        }

        schema = mxj_redis_schema(&fwd.r, 0);

        if (schema >= 0) {
            break;
        }

        if (fwd.r.c->err == 0) {
            mxj_redis_close(&fwd.r);
            return MXJ_EXIT_FAIL;
        }

        mxj_redis_close(&fwd.r);
    }

    workers = calloc(fwd.concurrency, sizeof(mxj_fwd_worker_t));
    if (workers == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return MXJ_EXIT_FAIL;
    }

    for (started = 0; started < fwd.concurrency; started++) {
        workers[started].fwd = &fwd;
        workers[started].index = started;

        if (pthread_create(&workers[started].tid, NULL, mxj_fwd_worker,
                           &workers[started])
            != 0)
        {
            mxj_fwd_log("cannot start worker %ld", started);
            mxj_run_stop(&fwd.run);
            break;
        }
    }

    /* the main thread: which rooms, which of them have entries */

    next_refresh = 0;

    while (!mxj_run_stopping(&fwd.run)) {
        if (mxj_fwd_connect(&fwd, &fwd.r, &failures) != 0) {
            break;
        }

        now = mxj_run_mono_ms();

        if (now >= next_refresh) {
            if (mxj_fwd_refresh(&fwd) != 0) {
                mxj_redis_close(&fwd.r);
                continue;
            }

            next_refresh = now + MXJ_FWD_REFRESH_MS;
        }

        if (mxj_fwd_scan(&fwd, &idle) != 0) {
            mxj_redis_close(&fwd.r);
            continue;
        }

        if (fwd.once && idle) {
            mxj_fwd_log("every outbox is empty");
            mxj_run_stop(&fwd.run);
            break;
        }

        /* more rooms, fewer looks: at most some 10,000 XLEN a second */

        mxj_run_sleep(&fwd.run, fwd.nrooms / 10 > MXJ_FWD_SCAN_MS
                            ? (long) (fwd.nrooms / 10) : MXJ_FWD_SCAN_MS);
    }

    mxj_run_stop(&fwd.run);

    for (i = 0; i < started; i++) {
        pthread_join(workers[i].tid, NULL);
    }

    free(workers);
    mxj_fwd_leave(&fwd);
    mxj_redis_close(&fwd.r);

    rc = MXJ_EXIT_OK;

    if (fwd.once && fwd.dead_letters > 0) {
        rc = MXJ_EXIT_FAIL;
    }

    mxj_fwd_log("stopped (%ld dead letters in this run)", fwd.dead_letters);

    for (i = 0; i < (long) fwd.nrooms; i++) {
        mxj_fwd_room_free(fwd.rooms[i]);
    }

    free(fwd.rooms);
    free(fwd.consumer_buf);
    curl_global_cleanup();

    return rc;
}


static int
mxj_fwd_args(int argc, char **argv, mxj_fwd_t *fwd)
{
    int          i, o;
    char         host[256];
    size_t       n;
    const char  *arg, *value, *why;

    static const struct {
        const char  *name;
        long         min;
        long         max;
        size_t       off;
    } numbers[] = {
        { "--concurrency", 1, 256, offsetof(mxj_fwd_t, concurrency) },
        { "--claim-idle", 100, 86400000, offsetof(mxj_fwd_t, claim_idle) },
        { "--max-attempts", 1, 1000000, offsetof(mxj_fwd_t, max_attempts) },
        { "--timeout", 100, 86400000, offsetof(mxj_fwd_t, timeout) },
        { NULL, 0, 0, 0 }
    };

    memset(fwd, 0, sizeof(mxj_fwd_t));
    mxj_redis_init(&fwd->r);

    fwd->concurrency = 4;
    fwd->claim_idle = 60000;
    fwd->max_attempts = 10;
    fwd->timeout = 30000;

    for (i = 1; i < argc; i++) {
        o = mxj_redis_option(&fwd->r, argc, argv, &i);

        if (o < 0) {
            return mxj_fwd_usage();
        }

        if (o > 0) {
            continue;
        }

        arg = argv[i];

        if (strcmp(arg, "--once") == 0) {
            fwd->once = 1;
            continue;
        }

        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "matrix-join-ctl: forward: unexpected argument "
                    "\"%s\"\n", arg);
            return mxj_fwd_usage();
        }

        /* the options with a value: "--name value" or "--name=value" */

        n = strcspn(arg, "=");

        if (arg[n] == '=') {
            value = arg + n + 1;

        } else if (i + 1 < argc) {
            value = argv[++i];

        } else {
            fprintf(stderr, "matrix-join-ctl: %s needs a value\n", arg);
            return mxj_fwd_usage();
        }

        if (n == 10 && strncmp(arg, "--upstream", n) == 0) {
            fwd->upstream = value;
            continue;
        }

        if (n == 10 && strncmp(arg, "--consumer", n) == 0) {
            if (*value == '\0') {
                fprintf(stderr, "matrix-join-ctl: forward: empty "
                        "--consumer\n");
                return mxj_fwd_usage();
            }

            fwd->consumer = value;
            continue;
        }

        for (o = 0; numbers[o].name; o++) {
            if (strlen(numbers[o].name) == n
                && strncmp(arg, numbers[o].name, n) == 0)
            {
                break;
            }
        }

        if (numbers[o].name == NULL) {
            fprintf(stderr, "matrix-join-ctl: forward: unknown option "
                    "\"%.*s\"\n", (int) n, arg);
            return mxj_fwd_usage();
        }

        if (mxj_run_number("forward", numbers[o].name, value, numbers[o].min,
                           numbers[o].max,
                           (long *) ((char *) fwd + numbers[o].off))
            != 0)
        {
            return mxj_fwd_usage();
        }
    }

    if (fwd->r.address == NULL || fwd->upstream == NULL) {
        return mxj_fwd_usage();
    }

    if (mxj_fwd_upstream(fwd->upstream, &fwd->path, &fwd->path_len, &why)
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
    fprintf(stderr, "usage: matrix-join-ctl forward --redis ADDRESS "
            "--upstream URL [--prefix P]\n"
            "           [--once] [--concurrency N] [--claim-idle MS] "
            "[--max-attempts N]\n"
            "           [--timeout MS] [--consumer NAME] [--password PW] "
            "[--db N]\n");

    return -1;
}


/* One line on standard error, written at once (threads share it). */

static void
mxj_fwd_log(const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    mxj_run_vlog("forward: ", MXJ_FWD_LOG_MAX, fmt, args);
    va_end(args);
}


/*
 * Makes sure r is connected, reconnecting with a backoff (logged) for as
 * long as it takes. 0, or -1 when a stop came first.
 */

static int
mxj_fwd_connect(mxj_fwd_t *fwd, mxj_redis_t *r, int *failures)
{
    int             i;
    long            ms;
    struct timeval  tv;

    if (r->c != NULL && r->c->err == 0) {
        return 0;
    }

    mxj_redis_close(r);

    while (!mxj_run_stopping(&fwd->run)) {
        if (mxj_redis_connect(r) == 0) {
            tv.tv_sec = MXJ_FWD_REDIS_IO;
            tv.tv_usec = 0;
            redisSetTimeout(r->c, tv);

            if (*failures) {
                mxj_fwd_log("redis at %s: connected again", r->address);
            }

            *failures = 0;
            return 0;
        }

        ms = MXJ_FWD_REDIS_MIN_MS;

        for (i = 0; i < *failures && ms < MXJ_FWD_REDIS_MAX_MS; i++) {
            ms *= 2;
        }

        if (ms > MXJ_FWD_REDIS_MAX_MS) {
            ms = MXJ_FWD_REDIS_MAX_MS;
        }

        (*failures)++;

        mxj_fwd_log("redis at %s unavailable, connecting again in %.1f s",
                    r->address, ms / 1000.0);

        mxj_run_sleep(&fwd->run, ms);
    }

    return -1;
}


static int
mxj_fwd_room_cmp(const void *a, const void *b)
{
    const mxj_fwd_room_t  *x, *y;

    x = *(mxj_fwd_room_t *const *) a;
    y = *(mxj_fwd_room_t *const *) b;

    return strcmp(x->id, y->id);
}


static mxj_fwd_room_t *
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


static mxj_fwd_room_t *
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


static void
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

static int
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


/*
 * XLEN of every room's outbox, pipelined: a room has work while its
 * stream has entries (delivered ones are deleted). *idle: no room has
 * entries and none is being served.
 */

static int
mxj_fwd_scan(mxj_fwd_t *fwd, int *idle)
{
    int               rc, ready;
    size_t            i, n, sent;
    redisReply       *reply;
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

    for (i = 0; i < n; i++) {
        if (redisAppendCommand(fwd->r.c, "XLEN %s", rooms[i]->outbox)
            != REDIS_OK)
        {
            goto done;
        }

        sent++;
    }

    for (i = 0; i < n; i++) {
        if (redisGetReply(fwd->r.c, (void **) &reply) != REDIS_OK) {
            mxj_fwd_log("redis at %s: %s", fwd->r.address, fwd->r.c->errstr);
            goto done;
        }

        sent--;

        pthread_mutex_lock(&fwd->run.mutex);

        /* a wrong type counts as no work: the worker would only fail */

        rooms[i]->work = (reply->type == REDIS_REPLY_INTEGER
                          && reply->integer > 0);

        if (rooms[i]->work && !rooms[i]->grouped) {
            rooms[i]->work = 0;
        }

        pthread_mutex_unlock(&fwd->run.mutex);

        freeReplyObject(reply);
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


static void *
mxj_fwd_worker(void *data)
{
    mxj_fwd_worker_t *w = data;

    int               failures;
    long              wait;
    unsigned char     raw[16];
    mxj_fwd_end_e     end;
    mxj_fwd_room_t   *room;

    w->r = w->fwd->r;
    w->r.c = NULL;

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(w->token, sizeof(w->token), raw, sizeof(raw));

    w->curl = curl_easy_init();
    if (w->curl == NULL) {
        mxj_fwd_log("worker %ld: curl_easy_init() failed", w->index);
        mxj_run_stop(&w->fwd->run);
        return NULL;
    }

    curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w->curl, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(w->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(w->curl, CURLOPT_TIMEOUT_MS, w->fwd->timeout);
    curl_easy_setopt(w->curl, CURLOPT_CONNECTTIMEOUT_MS, w->fwd->timeout);
    curl_easy_setopt(w->curl, CURLOPT_USERAGENT,
                     "matrix-join-ctl/" MXJ_VERSION);
    curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, mxj_fwd_write);
    curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(w->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(w->curl, CURLOPT_XFERINFOFUNCTION, mxj_fwd_progress);
    curl_easy_setopt(w->curl, CURLOPT_XFERINFODATA, w);

    failures = 0;

    for ( ;; ) {
        if (mxj_fwd_connect(w->fwd, &w->r, &failures) != 0) {
            break;
        }

        room = mxj_fwd_take(w->fwd);
        if (room == NULL) {
            break;
        }

        wait = 0;
        end = mxj_fwd_serve(w, room, &wait);

        mxj_fwd_put(w->fwd, room, end, wait);
    }

    mxj_redis_close(&w->r);
    curl_easy_cleanup(w->curl);

    return NULL;
}


/* A room with entries that no worker serves and that may be tried now. */

static mxj_fwd_room_t *
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


static void
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


/*
 * Serves a room: its lease, then its entries oldest first, one at a time,
 * until none is left, a wait, a stop, a Redis error, or MXJ_FWD_BATCH
 * deliveries (then another room may have the worker).
 */

static mxj_fwd_end_e
mxj_fwd_serve(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, long *wait)
{
    int               n, lease;
    mxj_fwd_end_e     end;
    mxj_fwd_entry_t   e;

    lease = mxj_fwd_lease(w, room);

    if (lease < 0) {
        return MXJ_FWD_REDIS_ERROR;
    }

    if (lease == 0) {
        /* another forwarder serves it */
        *wait = w->fwd->claim_idle < MXJ_FWD_LEASE_BUSY_MS
                ? w->fwd->claim_idle : MXJ_FWD_LEASE_BUSY_MS;
        return MXJ_FWD_WAIT;
    }

    w->room = room;
    w->lease_lost = 0;
    end = MXJ_FWD_MORE;

    for (n = 0; n < MXJ_FWD_BATCH; n++) {
        if (mxj_run_stopping(&w->fwd->run)) {
            end = MXJ_FWD_STOPPED;
            break;
        }

        if (mxj_fwd_renew_due(w) != 0) {
            end = w->lease_lost ? MXJ_FWD_WAIT : MXJ_FWD_REDIS_ERROR;
            *wait = MXJ_FWD_LEASE_BUSY_MS;
            break;
        }

        end = mxj_fwd_next(w, room, &e, wait);
        if (end != MXJ_FWD_MORE) {
            break;
        }

        end = mxj_fwd_deliver(w, room, &e);
        freeReplyObject(e.reply);

        if (end != MXJ_FWD_MORE) {
            if (end == MXJ_FWD_WAIT) {
                *wait = MXJ_FWD_LEASE_BUSY_MS;
            }

            break;
        }
    }

    mxj_fwd_release(w, room);
    w->room = NULL;

    if (end == MXJ_FWD_REDIS_ERROR && w->r.c != NULL && w->r.c->err == 0) {
        /* an error reply, not a lost connection: not in a tight loop */
        end = MXJ_FWD_WAIT;
        *wait = 10000;
    }

    return end;
}


/* 1: the lease is ours (taken or renewed), 0: someone else's, -1: error */

static int
mxj_fwd_lease(mxj_fwd_worker_t *w, mxj_fwd_room_t *room)
{
    int          rc;
    char         ms[24];
    redisReply  *reply;

    snprintf(ms, sizeof(ms), "%ld", w->fwd->claim_idle);

    reply = mxj_fwd_script(&w->r, MX_LUA_LOCK_TAKE, 1, 3,
                           (const char *[]) { room->lock, w->token, ms },
                           NULL);
    if (reply == NULL) {
        return -1;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        mxj_fwd_log("room=%s: the lease %s: %s", room->id, room->lock,
                    mxj_fwd_str(reply));
        freeReplyObject(reply);
        return 0;
    }

    rc = reply->integer == 1;
    freeReplyObject(reply);

    if (rc) {
        w->renewed = mxj_run_mono_ms();
    }

    return rc;
}


static void
mxj_fwd_release(mxj_fwd_worker_t *w, mxj_fwd_room_t *room)
{
    redisReply  *reply;

    if (w->r.c == NULL || w->r.c->err) {
        return;     /* it expires */
    }

    reply = mxj_fwd_script(&w->r, MX_LUA_LOCK_RELEASE, 1, 2,
                           (const char *[]) { room->lock, w->token },
                           NULL);
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


/*
 * Renews the lease when a third of its time has passed. 0 while it is
 * ours; -1 when it was lost (w->lease_lost) or Redis failed.
 */

static int
mxj_fwd_renew_due(mxj_fwd_worker_t *w)
{
    int  rc;

    if (w->room == NULL || w->lease_lost) {
        return w->lease_lost ? -1 : 0;
    }

    if (mxj_run_mono_ms() - w->renewed < w->fwd->claim_idle / 3) {
        return 0;
    }

    rc = mxj_fwd_lease(w, w->room);

    if (rc == 0) {
        w->lease_lost = 1;
        mxj_fwd_log("room=%s: lease %s lost to another forwarder",
                    w->room->id, w->room->lock);
    }

    return rc == 1 ? 0 : -1;
}


/*
 * The room's oldest undelivered entry: the oldest pending one of the group
 * (ours, or another consumer's once idle for --claim-idle), else the next
 * new one. MXJ_FWD_MORE with *e filled, MXJ_FWD_DONE, MXJ_FWD_WAIT with
 * *wait, or MXJ_FWD_REDIS_ERROR.
 */

static mxj_fwd_end_e
mxj_fwd_next(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, mxj_fwd_entry_t *e,
    long *wait)
{
    int           tries;
    long long     idle;
    char          min_idle[24], id[48];
    redisReply   *reply, *p, *item;
    mxj_fwd_t    *fwd;
    const char   *owner;

    fwd = w->fwd;

    for (tries = 0; tries < 8; tries++) {
        reply = mxj_fwd_cmd(&w->r, 6, (const char *[]) { "XPENDING",
                                                          room->outbox,
                                                          MXJ_FWD_GROUP,
                                                          "-", "+", "1" },
                            NULL);
        if (reply == NULL) {
            return MXJ_FWD_REDIS_ERROR;
        }

        if (mxj_fwd_is_error(reply, "NOGROUP")) {
            /* the stream was removed and written again */
            freeReplyObject(reply);

            if (mxj_fwd_group(fwd, &w->r, room) != 0) {
                *wait = 10000;
                return w->r.c->err ? MXJ_FWD_REDIS_ERROR : MXJ_FWD_WAIT;
            }

            continue;
        }

        if (reply->type != REDIS_REPLY_ARRAY) {
            mxj_fwd_log("room=%s: XPENDING %s: %s", room->id, room->outbox,
                        mxj_fwd_str(reply));
            freeReplyObject(reply);
            *wait = 10000;
            return MXJ_FWD_WAIT;
        }

        if (reply->elements == 0) {
            freeReplyObject(reply);

            reply = mxj_fwd_cmd(&w->r, 9,
                                (const char *[]) { "XREADGROUP", "GROUP",
                                                   MXJ_FWD_GROUP,
                                                   fwd->consumer, "COUNT",
                                                   "1", "STREAMS",
                                                   room->outbox, ">" },
                                NULL);
            if (reply == NULL) {
                return MXJ_FWD_REDIS_ERROR;
            }

            if (mxj_fwd_is_error(reply, "NOGROUP")) {
                freeReplyObject(reply);

                if (mxj_fwd_group(fwd, &w->r, room) != 0) {
                    *wait = 10000;
                    return w->r.c->err ? MXJ_FWD_REDIS_ERROR : MXJ_FWD_WAIT;
                }

                continue;
            }

            if (reply->type == REDIS_REPLY_NIL) {
                freeReplyObject(reply);
                return MXJ_FWD_DONE;
            }

            /* [[stream, [[id, fields]]]] */

            if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1
                || reply->element[0]->type != REDIS_REPLY_ARRAY
                || reply->element[0]->elements != 2
                || reply->element[0]->element[1]->type != REDIS_REPLY_ARRAY
                || reply->element[0]->element[1]->elements == 0)
            {
                mxj_fwd_log("room=%s: unexpected XREADGROUP reply: %s",
                            room->id, mxj_fwd_str(reply));
                freeReplyObject(reply);
                *wait = 10000;
                return MXJ_FWD_WAIT;
            }

            item = reply->element[0]->element[1]->element[0];

            pthread_mutex_lock(&fwd->run.mutex);
            room->used = 1;
            pthread_mutex_unlock(&fwd->run.mutex);

            if (mxj_fwd_entry(reply, item, e) != 0) {
                freeReplyObject(reply);
                continue;
            }

            return MXJ_FWD_MORE;
        }

        /* [[id, consumer, idle ms, deliveries]] */

        p = reply->element[0];

        if (p->type != REDIS_REPLY_ARRAY || p->elements < 3
            || p->element[0]->type != REDIS_REPLY_STRING
            || p->element[1]->type != REDIS_REPLY_STRING
            || p->element[2]->type != REDIS_REPLY_INTEGER
            || p->element[0]->len >= sizeof(id))
        {
            mxj_fwd_log("room=%s: unexpected XPENDING reply", room->id);
            freeReplyObject(reply);
            *wait = 10000;
            return MXJ_FWD_WAIT;
        }

        memcpy(id, p->element[0]->str, p->element[0]->len + 1);
        owner = p->element[1]->str;
        idle = p->element[2]->integer;

        if (strcmp(owner, fwd->consumer) == 0) {
            strcpy(min_idle, "0");

        } else if (idle >= fwd->claim_idle) {
            snprintf(min_idle, sizeof(min_idle), "%ld", fwd->claim_idle);
            mxj_fwd_log("room=%s: claiming entry %s from consumer %s "
                        "(idle %lld ms)", room->id, id, owner, idle);

        } else {
            if (strcmp(room->waited, id) != 0) {
                mxj_fwd_log("room=%s: entry %s is pending at consumer %s, "
                            "idle %lld ms: waiting until %ld ms", room->id,
                            id, owner, idle, fwd->claim_idle);
                snprintf(room->waited, sizeof(room->waited), "%s", id);
            }

            *wait = (long) (fwd->claim_idle - idle);
            freeReplyObject(reply);
            return MXJ_FWD_WAIT;
        }

        freeReplyObject(reply);

        pthread_mutex_lock(&fwd->run.mutex);
        room->used = 1;
        pthread_mutex_unlock(&fwd->run.mutex);

        reply = mxj_fwd_cmd(&w->r, 6, (const char *[]) { "XCLAIM",
                                                          room->outbox,
                                                          MXJ_FWD_GROUP,
                                                          fwd->consumer,
                                                          min_idle, id },
                            NULL);
        if (reply == NULL) {
            return MXJ_FWD_REDIS_ERROR;
        }

        if (reply->type != REDIS_REPLY_ARRAY) {
            mxj_fwd_log("room=%s: XCLAIM %s: %s", room->id, id,
                        mxj_fwd_str(reply));
            freeReplyObject(reply);
            *wait = 10000;
            return MXJ_FWD_WAIT;
        }

        if (reply->elements == 0) {
            /* taken by someone else meanwhile, or deleted (Redis 7 drops
             * it from the pending list then): look again */
            freeReplyObject(reply);
            continue;
        }

        item = reply->element[0];

        if (item->type != REDIS_REPLY_ARRAY) {
            /* Redis 6: a pending entry that was deleted */
            freeReplyObject(reply);

            reply = mxj_fwd_cmd(&w->r, 4, (const char *[]) { "XACK",
                                                              room->outbox,
                                                              MXJ_FWD_GROUP,
                                                              id },
                                NULL);
            if (reply == NULL) {
                return MXJ_FWD_REDIS_ERROR;
            }

            freeReplyObject(reply);
            continue;
        }

        if (mxj_fwd_entry(reply, item, e) != 0) {
            freeReplyObject(reply);
            continue;
        }

        room->waited[0] = '\0';

        return MXJ_FWD_MORE;
    }

    *wait = 1000;

    return MXJ_FWD_WAIT;
}


static int
mxj_fwd_entry(redisReply *reply, redisReply *item, mxj_fwd_entry_t *e)
{
    size_t        i;
    redisReply   *k, *v;

    memset(e, 0, sizeof(mxj_fwd_entry_t));

    if (item->type != REDIS_REPLY_ARRAY || item->elements != 2
        || item->element[0]->type != REDIS_REPLY_STRING
        || item->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return -1;
    }

    e->reply = reply;
    e->id = item->element[0]->str;
    e->fields = item->element[1];

    for (i = 0; i + 1 < e->fields->elements; i += 2) {
        k = e->fields->element[i];
        v = e->fields->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (strcmp(k->str, MX_OUTBOX_METHOD) == 0) {
            e->method = v;

        } else if (strcmp(k->str, MX_OUTBOX_URI) == 0) {
            e->uri = v;

        } else if (strcmp(k->str, MX_OUTBOX_AUTHORIZATION) == 0) {
            e->authorization = v;

        } else if (strcmp(k->str, MX_OUTBOX_BODY) == 0) {
            e->body = v;

        } else if (strcmp(k->str, MX_OUTBOX_EVENT_ID) == 0) {
            e->event_id = v;

        } else if (strcmp(k->str, MX_OUTBOX_RECEIVED_TS) == 0) {
            e->received_ts = v;
        }
    }

    return 0;
}


/*
 * Delivers one entry, retrying until a 2xx (acknowledged) or a dead
 * letter. MXJ_FWD_MORE when the room may go on, else why not.
 */

static mxj_fwd_end_e
mxj_fwd_deliver(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e)
{
    long                 nauth, i, status, counted, wait, after;
    char                *target, **auth, err[CURL_ERROR_SIZE];
    int64_t              latency, since, lag, received;
    const char          *bad, *event;
    mxj_fwd_t           *fwd;
    mxj_fwd_end_e        end;
    unsigned long        attempt;
    mxj_fwd_action_e     action;
    struct curl_slist   *headers, *h;

    fwd = w->fwd;
    event = e->event_id ? e->event_id->str : "?";
    auth = NULL;
    nauth = 0;
    headers = NULL;
    target = NULL;

    /* what the module wrote is trusted, but a bad entry must not loop */

    bad = NULL;

    if (e->method == NULL || e->uri == NULL || e->body == NULL
        || e->event_id == NULL)
    {
        bad = "malformed outbox entry: method, uri, body or event_id "
              "missing";

    } else if (e->method->len == 0 || strlen(e->method->str) != e->method->len
               || strpbrk(e->method->str, " \t\r\n") != NULL)
    {
        bad = "malformed outbox entry: bad method";

    } else if (e->uri->str[0] != '/' || strlen(e->uri->str) != e->uri->len
               || strpbrk(e->uri->str, " \t\r\n") != NULL)
    {
        bad = "malformed outbox entry: uri is not a path";

    } else if (e->authorization != NULL) {
        nauth = mxj_fwd_auth_headers(e->authorization->str,
                                     e->authorization->len, &auth);

        if (nauth == -1) {
            bad = "malformed outbox entry: a control character in "
                  "authorization";

        } else if (nauth < 0) {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            return MXJ_FWD_REDIS_ERROR;
        }
    }

    if (bad != NULL) {
        if (mxj_fwd_dead(w, room, e, 0, bad, strlen(bad), 0) != 0) {
            return MXJ_FWD_REDIS_ERROR;
        }

        return MXJ_FWD_MORE;
    }

    end = MXJ_FWD_REDIS_ERROR;

    for (i = 0; i < nauth; i++) {
        h = curl_slist_append(headers, auth[i]);
        if (h == NULL) {
            goto nomem;
        }

        headers = h;
    }

    /* "Expect:" and "Accept:" keep curl from adding its own */

    h = curl_slist_append(headers, "Content-Type: application/json");
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    h = h ? curl_slist_append(h, "Accept:") : NULL;

    if (h == NULL) {
        goto nomem;
    }

    headers = h;

    target = malloc(fwd->path_len + e->uri->len + 1);
    if (target == NULL) {
        goto nomem;
    }

    memcpy(target, fwd->path, fwd->path_len);
    memcpy(target + fwd->path_len, e->uri->str, e->uri->len + 1);

    counted = 0;

    for (attempt = 1; /* void */; attempt++) {
        err[0] = '\0';
        status = mxj_fwd_http(w, e, target, headers, &latency, err);

        since = room->last_delivered
                ? mxj_run_mono_ms() - room->last_delivered : -1;

        action = mxj_fwd_judge(status, (long) since, fwd->max_attempts,
                               &counted);

        if (action == MXJ_FWD_ACK) {
            if (mxj_fwd_ack(w, room, e) != 0) {
                /* left pending: it is delivered again */
                mxj_fwd_log("delivered, not acknowledged room=%s event=%s "
                            "status=%ld: it stays in the outbox and is sent "
                            "again", room->id, event, status);
                break;
            }

            room->last_delivered = mxj_run_mono_ms();

            received = e->received_ts ? atoll(e->received_ts->str) : 0;
            lag = received > 0 ? mxj_run_wall_ms() - received : -1;

            mxj_fwd_log("delivered room=%s event=%s status=%ld attempts=%lu "
                        "latency_ms=%lld lag_ms=%lld", room->id, event,
                        status, attempt, (long long) latency,
                        (long long) lag);

            end = MXJ_FWD_MORE;
            break;
        }

        if (action == MXJ_FWD_DEAD) {
            if (mxj_fwd_dead(w, room, e, status, w->resp, w->resp_len,
                             attempt)
                == 0)
            {
                end = MXJ_FWD_MORE;
            }

            break;
        }

        wait = mxj_fwd_backoff_ms(attempt,
                                  randombytes_uniform(1000001) / 1e6);

        if (status == 429) {
            after = mxj_fwd_retry_after_ms(w->resp, w->resp_len);

            if (after > wait) {
                wait = after;
            }
        }

        if (status == 0) {
            mxj_fwd_log("retrying room=%s event=%s status=0 attempt=%lu in "
                        "%.1f s (%s)", room->id, event, attempt,
                        wait / 1000.0, err);

        } else {
            mxj_fwd_log("retrying room=%s event=%s status=%ld attempt=%lu in "
                        "%.1f s", room->id, event, status, attempt,
                        wait / 1000.0);
        }

        end = mxj_fwd_wait(w, wait);
        if (end != MXJ_FWD_MORE) {
            break;
        }
    }

    curl_slist_free_all(headers);
    mxj_fwd_auth_free(auth, nauth);
    free(target);

    return end;

nomem:

    fprintf(stderr, "matrix-join-ctl: out of memory\n");
    curl_slist_free_all(headers);
    mxj_fwd_auth_free(auth, nauth);
    free(target);

    return MXJ_FWD_REDIS_ERROR;
}


/*
 * One attempt. The HTTP status, or 0 with err set when there was no
 * answer. The response's first bytes are in w->resp.
 */

static long
mxj_fwd_http(mxj_fwd_worker_t *w, mxj_fwd_entry_t *e, const char *target,
    struct curl_slist *headers, int64_t *latency, char *err)
{
    long       code;
    int64_t    t0;
    CURLcode   rc;

    /*
     * The request target goes out byte for byte: the joining server signed
     * it as it sent it, and any normalisation would break the signature.
     */

    curl_easy_setopt(w->curl, CURLOPT_URL, w->fwd->upstream);
    curl_easy_setopt(w->curl, CURLOPT_REQUEST_TARGET, target);
    curl_easy_setopt(w->curl, CURLOPT_CUSTOMREQUEST, e->method->str);
    curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, e->body->str);
    curl_easy_setopt(w->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t) e->body->len);
    curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(w->curl, CURLOPT_ERRORBUFFER, err);

    w->resp_len = 0;
    t0 = mxj_run_mono_ms();

    rc = curl_easy_perform(w->curl);

    *latency = mxj_run_mono_ms() - t0;

    curl_easy_setopt(w->curl, CURLOPT_ERRORBUFFER, NULL);

    if (rc != CURLE_OK) {
        if (err[0] == '\0') {
            snprintf(err, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
        }

        return 0;
    }

    code = 0;
    curl_easy_getinfo(w->curl, CURLINFO_RESPONSE_CODE, &code);

    if (code == 0) {
        snprintf(err, CURL_ERROR_SIZE, "no HTTP status");
    }

    return code;
}


static size_t
mxj_fwd_write(char *data, size_t size, size_t n, void *ctx)
{
    mxj_fwd_worker_t *w = ctx;

    size_t  len;

    len = size * n;

    if (len > sizeof(w->resp) - w->resp_len) {
        len = sizeof(w->resp) - w->resp_len;
    }

    memcpy(w->resp + w->resp_len, data, len);
    w->resp_len += len;

    /* the rest is read and dropped */

    return size * n;
}


/* During a long attempt the lease is renewed; the attempt is never cut. */

static int
mxj_fwd_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
    mxj_fwd_worker_t *w = ctx;

    if (w->r.c != NULL && w->r.c->err == 0) {
        (void) mxj_fwd_renew_due(w);
    }

    return 0;
}


/* 2xx: XACK, XDEL and HSET delivered, in one MULTI. */

static int
mxj_fwd_ack(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, mxj_fwd_entry_t *e)
{
    int           rc;
    char          ms[24];
    size_t        i, k;
    redisReply   *reply;
    redisContext *c;

    c = w->r.c;

    if (c == NULL || c->err) {
        return -1;
    }

    snprintf(ms, sizeof(ms), "%lld", (long long) mxj_run_wall_ms());

    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "XACK %s %s %s", room->outbox, MXJ_FWD_GROUP,
                       e->id);
    redisAppendCommand(c, "XDEL %s %s", room->outbox, e->id);
    redisAppendCommand(c, "HSET %s %b %s", room->delivered,
                       e->event_id->str, e->event_id->len, ms);
    redisAppendCommand(c, "EXEC");

    rc = 0;

    for (i = 0; i < 5; i++) {
        if (redisGetReply(c, (void **) &reply) != REDIS_OK) {
            mxj_fwd_log("redis at %s: %s", w->r.address, c->errstr);
            return -1;
        }

        if (reply->type == REDIS_REPLY_ERROR) {
            mxj_fwd_log("room=%s: acknowledging %s: %s", room->id, e->id,
                        reply->str);
            rc = -1;
        }

        if (i == 4 && reply->type == REDIS_REPLY_ARRAY) {
            for (k = 0; k < reply->elements; k++) {
                if (reply->element[k]->type == REDIS_REPLY_ERROR) {
                    mxj_fwd_log("room=%s: acknowledging %s: %s", room->id,
                                e->id, reply->element[k]->str);
                    rc = -1;
                }
            }

        } else if (i == 4) {
            rc = -1;
        }

        freeReplyObject(reply);
    }

    return rc;
}


/*
 * The entry becomes a dead letter: copied with status, response, attempts
 * and failed_ts to P{R}:dead, acknowledged, deleted, and the room's
 * snapshot marked stale, in one script.
 */

static int
mxj_fwd_dead(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, mxj_fwd_entry_t *e,
    long status, const char *response, size_t len, unsigned long attempts)
{
    int           argc;
    char          st[24], at[24], ts[24], shown[201];
    size_t        i, n, *lens;
    redisReply   *reply;
    const char  **argv;

    n = e->fields->elements & ~(size_t) 1;
    argc = 5 + n + 8;

    argv = malloc(argc * sizeof(char *));
    lens = malloc(argc * sizeof(size_t));

    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    snprintf(st, sizeof(st), "%ld", status);
    snprintf(at, sizeof(at), "%lu", attempts);
    snprintf(ts, sizeof(ts), "%lld", (long long) mxj_run_wall_ms());

    argv[0] = room->outbox;
    argv[1] = room->dead;
    argv[2] = room->meta;
    argv[3] = MXJ_FWD_GROUP;
    argv[4] = e->id;

    for (i = 0; i < 5; i++) {
        lens[i] = strlen(argv[i]);
    }

    for (i = 0; i < n; i++) {
        argv[5 + i] = e->fields->element[i]->str;
        lens[5 + i] = e->fields->element[i]->len;
    }

    i = 5 + n;
    argv[i] = "status";     lens[i++] = 6;
    argv[i] = st;           lens[i++] = strlen(st);
    argv[i] = "response";   lens[i++] = 8;
    argv[i] = response;     lens[i++] = len;
    argv[i] = "attempts";   lens[i++] = 8;
    argv[i] = at;           lens[i++] = strlen(at);
    argv[i] = "failed_ts";  lens[i++] = 9;
    argv[i] = ts;           lens[i++] = strlen(ts);

    reply = mxj_fwd_script(&w->r, MX_LUA_FORWARD_DEAD, 3, argc, argv, lens);

    free(argv);
    free(lens);

    if (reply == NULL) {
        return -1;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        mxj_fwd_log("room=%s: the dead letter of %s: %s", room->id, e->id,
                    reply->str);
        freeReplyObject(reply);
        return -1;
    }

    freeReplyObject(reply);

    pthread_mutex_lock(&w->fwd->run.mutex);
    w->fwd->dead_letters++;
    pthread_mutex_unlock(&w->fwd->run.mutex);

    /* the response, shown on one line */

    n = len < sizeof(shown) - 1 ? len : sizeof(shown) - 1;

    for (i = 0; i < n; i++) {
        shown[i] = ((unsigned char) response[i] < 0x20 || response[i] == 0x7f)
                   ? ' ' : response[i];
    }

    shown[n] = '\0';

    mxj_fwd_log("dead letter room=%s event=%s status=%ld attempts=%lu "
                "entry=%s stream=%s response=%s",
                room->id, e->event_id ? e->event_id->str : "?", status,
                attempts, e->id, room->dead, shown);

    return 0;
}


/* A backoff wait: the lease renewed, a stop honoured. */

static mxj_fwd_end_e
mxj_fwd_wait(mxj_fwd_worker_t *w, long ms)
{
    int64_t  until, now;

    until = mxj_run_mono_ms() + ms;

    for ( ;; ) {
        if (mxj_run_stopping(&w->fwd->run)) {
            return MXJ_FWD_STOPPED;
        }

        if (mxj_fwd_renew_due(w) != 0) {
            return w->lease_lost ? MXJ_FWD_WAIT : MXJ_FWD_REDIS_ERROR;
        }

        now = mxj_run_mono_ms();

        if (now >= until) {
            return MXJ_FWD_MORE;
        }

        mxj_run_sleep(&w->fwd->run, until - now < MXJ_RUN_SLICE_MS
                              ? (long) (until - now) : MXJ_RUN_SLICE_MS);
    }
}


/* One command; error replies are the caller's; NULL (logged) when the
 * connection failed (then r->c->err is set). */

static redisReply *
mxj_fwd_cmd(mxj_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    redisReply  *reply;

    if (r->c == NULL || r->c->err) {
        return NULL;
    }

    reply = redisCommandArgv(r->c, argc, argv, lens);

    if (reply == NULL) {
        mxj_fwd_log("redis at %s: %s", r->address,
                    r->c->errstr[0] ? r->c->errstr : "no reply");

        if (r->c->err == 0) {
            r->c->err = REDIS_ERR_OTHER;
        }
    }

    return reply;
}


/* A script of src/lua, as mxj_fwd_cmd() runs a command. */

static redisReply *
mxj_fwd_script(mxj_redis_t *r, mx_lua_e which, int nkeys, int argc,
    const char **argv, const size_t *lens)
{
    redisReply  *reply;

    if (r->c == NULL || r->c->err) {
        return NULL;
    }

    reply = mxj_redis_eval(r->c, which, nkeys, argc, argv, lens);

    if (reply == NULL) {
        mxj_fwd_log("redis at %s: %s", r->address,
                    r->c->errstr[0] ? r->c->errstr : "no reply");

        if (r->c->err == 0) {
            r->c->err = REDIS_ERR_OTHER;
        }
    }

    return reply;
}


static int
mxj_fwd_is_error(redisReply *reply, const char *prefix)
{
    return reply->type == REDIS_REPLY_ERROR
           && strncmp(reply->str, prefix, strlen(prefix)) == 0;
}


static const char *
mxj_fwd_str(redisReply *v)
{
    switch (v->type) {

    case REDIS_REPLY_ERROR:
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        return v->str;

    case REDIS_REPLY_NIL:
        return "(nil)";

    case REDIS_REPLY_ARRAY:
        return "(array)";

    default:
        return "(integer)";
    }
}
