/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync --redis ADDRESS --homeserver URL --server-name NAME
 *     --signing-key FILE [--every DURATION] [options] ROOM_ID_OR_ALIAS...
 *
 * Pulls each room's snapshot from the homeserver over federation and
 * loads it as load does (docs/sync.md). One pass and exit, or a pass
 * every DURATION; with --appservice-listen, a thread serves the
 * Application Service API and a push of an auth-relevant event starts a
 * pass of its room at once.
 *
 * Threads: the main thread runs the passes, one room after another (the
 * homeserver is asked at most 8 times a second, by this thread alone); a
 * signal thread turns SIGTERM and SIGINT into a stop, honoured between
 * rooms and during waits; the listener thread, when there is one.
 */

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

#include "ctl.h"
#include "ctl_listen.h"
#include "ctl_opt.h"
#include "ctl_sync_run.h"
#include "mx_id.h"


#define MXJ_SYNC_KEYFILE_MAX  65536


enum {
    MXJ_SYNC_OPT_HOMESERVER = 0, MXJ_SYNC_OPT_SERVER_NAME,
    MXJ_SYNC_OPT_SIGNING_KEY, MXJ_SYNC_OPT_EVERY, MXJ_SYNC_OPT_USER,
    MXJ_SYNC_OPT_CONFIRM_PASSES, MXJ_SYNC_OPT_TIMEOUT,
    MXJ_SYNC_OPT_AS_LISTEN, MXJ_SYNC_OPT_REGISTRATION, MXJ_SYNC_OPT_METRICS
};

static const mxj_opt_t  mxj_sync_opts[] = {
    { "homeserver", 1, MXJ_SYNC_OPT_HOMESERVER },
    { "server-name", 1, MXJ_SYNC_OPT_SERVER_NAME },
    { "signing-key", 1, MXJ_SYNC_OPT_SIGNING_KEY },
    { "every", 1, MXJ_SYNC_OPT_EVERY },
    { "user", 1, MXJ_SYNC_OPT_USER },
    { "confirm-passes", 1, MXJ_SYNC_OPT_CONFIRM_PASSES },
    { "timeout", 1, MXJ_SYNC_OPT_TIMEOUT },
    { "appservice-listen", 1, MXJ_SYNC_OPT_AS_LISTEN },
    { "registration", 1, MXJ_SYNC_OPT_REGISTRATION },
    { "metrics", 1, MXJ_SYNC_OPT_METRICS },
    { NULL, 0, 0 }
};


static int mxj_sync_args(int argc, char **argv, mxj_sync_t *s);
static int mxj_sync_set(void *conf, int id, const char *value);
static int mxj_sync_usage(void);
static int mxj_sync_room_arg(mxj_sync_t *s, const char *arg);
static int mxj_sync_read_key(mxj_sync_t *s);
static int mxj_sync_loop(mxj_sync_t *s);
static int mxj_sync_round(mxj_sync_t *s, int all);
static void mxj_sync_free(mxj_sync_t *s);


int
mxj_cmd_sync(int argc, char **argv)
{
    int                  rc, schema;
    size_t               i;
    mxj_sync_t           s;

    if (mxj_sync_args(argc, argv, &s) != 0) {
        mxj_sync_free(&s);
        return MXJ_EXIT_USAGE;
    }

    rc = MXJ_EXIT_FAIL;

    if (mx_crypto_init() != 0) {
        fprintf(stderr, "matrix-join-ctl: sodium_init() failed\n");
        goto done;
    }

    if (mxj_sync_read_key(&s) != 0) {
        goto done;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "matrix-join-ctl: curl_global_init() failed\n");
        goto done;
    }

    /* SIGPIPE ignored; SIGTERM and SIGINT go to one thread (ctl_run.h) */

    if (mxj_run_start(&s.run, CLOCK_MONOTONIC, mxj_sync_log,
                      "stopping after the room being synced", NULL)
        != 0)
    {
        goto cleanup;
    }

    if (mxj_sync_http_init(&s.http, &s) != 0) {
        goto cleanup;
    }

    /* NAME's own keys, from its key file, need no notary */

    for (i = 0; i < s.nkeys; i++) {
        if (mxj_sync_keyring_add(&s.keyring, s.name, s.keys[i].key_id,
                                 s.keys[i].pk, INT64_MAX) != 0)
        {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            goto cleanup;
        }
    }

    if (mxj_redis_connect(&s.r) != 0) {
        goto cleanup;
    }

    /* absent: nothing loaded yet, the first load sets it */

    schema = mxj_redis_schema(&s.r, 0);

    if (schema < 0) {
        goto cleanup;
    }

    if (s.as_listen != NULL && mxj_sync_as_bind(&s) != 0) {
        goto cleanup;
    }

    if (mxj_metrics_bind(&s.metrics) != 0
        || mxj_metrics_start(&s.metrics, mxj_sync_metrics, &s) != 0)
    {
        goto cleanup;
    }

    mxj_sync_log("starting: homeserver=%s server_name=%s key=%s rooms=%zu "
                 "every_ms=%lld confirm_passes=%ld timeout_ms=%ld%s%s%s%s",
                 s.homeserver, s.name, s.keys[0].key_id, s.nrooms, s.every,
                 s.confirm_passes, s.timeout,
                 s.as_listen ? " appservice=" : "",
                 s.as_listen ? s.as_listen : "",
                 s.metrics.address ? " metrics=" : "",
                 s.metrics.address ? s.metrics.address : "");

    rc = mxj_sync_loop(&s);

    mxj_sync_as_stop(&s);

cleanup:

    /* the listener reads the rooms: stopped before they are freed */

    mxj_metrics_stop(&s.metrics);
    mxj_sync_http_free(&s.http);
    curl_global_cleanup();

done:

    mxj_sync_free(&s);

    return rc;
}


static int
mxj_sync_usage(void)
{
    mxj_usage(stderr, "sync");

    return -1;
}


static int
mxj_sync_set(void *conf, int id, const char *value)
{
    mxj_sync_t *s = conf;

    switch (id) {

    case MXJ_SYNC_OPT_HOMESERVER:
        s->homeserver = value;
        return 0;

    case MXJ_SYNC_OPT_SERVER_NAME:
        s->name = value;
        return 0;

    case MXJ_SYNC_OPT_SIGNING_KEY:
        s->key_path = value;
        return 0;

    case MXJ_SYNC_OPT_EVERY:
        s->every = mxj_sync_duration_ms(value);

        if (s->every < 0) {
            fprintf(stderr, "matrix-join-ctl: sync: invalid --every "
                    "\"%s\" (for example 30s, 5m, 1h)\n", value);
            return -1;
        }

        return 0;

    case MXJ_SYNC_OPT_USER:
        if (mxj_sync_ids_push(&s->users, value) != 0) {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            return -1;
        }

        return 0;

    case MXJ_SYNC_OPT_CONFIRM_PASSES:
        return mxj_run_number("sync", "--confirm-passes", value, 0, 1000000,
                              &s->confirm_passes);

    case MXJ_SYNC_OPT_TIMEOUT:
        return mxj_run_number("sync", "--timeout", value, 100, 86400000,
                              &s->timeout);

    case MXJ_SYNC_OPT_AS_LISTEN:
        if (mxj_listen_check("sync", "--appservice-listen", value) != 0) {
            return -1;
        }

        s->as_listen = value;
        return 0;

    case MXJ_SYNC_OPT_METRICS:
        return mxj_metrics_set(&s->metrics, "sync", value);

    case MXJ_SYNC_OPT_REGISTRATION:
        s->registration = value;
        return 0;

    default: /* MXJ_OPT_OPERAND: a room */
        return mxj_sync_room_arg(s, value);
    }
}


static int
mxj_sync_args(int argc, char **argv, mxj_sync_t *s)
{
    size_t       n, slen;
    const char  *server;

    memset(s, 0, sizeof(mxj_sync_t));
    mxj_redis_init(&s->r);

    s->confirm_passes = MXJ_SYNC_CONFIRM_PASSES;
    s->timeout = 30000;
    s->as_fd = -1;
    s->metrics.fd = -1;

    if (mxj_opt_parse("sync", argc, argv, &s->r, mxj_sync_opts, mxj_sync_set,
                      s)
        != 0)
    {
        return mxj_sync_usage();
    }

    if (s->r.address == NULL || s->homeserver == NULL || s->name == NULL
        || s->key_path == NULL || s->nrooms == 0)
    {
        return mxj_sync_usage();
    }

    if (!mx_server_name_valid(s->name, strlen(s->name))) {
        fprintf(stderr, "matrix-join-ctl: sync: invalid --server-name "
                "\"%s\"\n", s->name);
        return mxj_sync_usage();
    }

    for (n = 0; n < s->users.n; n++) {
        server = mx_id_server(s->users.v[n], strlen(s->users.v[n]), '@',
                              &slen);

        if (!mx_user_id_valid(s->users.v[n], strlen(s->users.v[n]))
            || server == NULL || slen != strlen(s->name)
            || memcmp(server, s->name, slen) != 0)
        {
            fprintf(stderr, "matrix-join-ctl: sync: --user \"%s\" is not a "
                    "user of %s\n", s->users.v[n], s->name);
            return mxj_sync_usage();
        }
    }

    if ((s->as_listen == NULL) != (s->registration == NULL)) {
        fprintf(stderr, "matrix-join-ctl: sync: --appservice-listen and "
                "--registration go together\n");
        return mxj_sync_usage();
    }

    if (s->as_listen != NULL && s->every == 0) {
        fprintf(stderr, "matrix-join-ctl: sync: the Application Service "
                "needs --every (one pass would not listen)\n");
        return mxj_sync_usage();
    }

    return 0;
}


static int
mxj_sync_room_arg(mxj_sync_t *s, const char *arg)
{
    size_t            len;
    mxj_sync_room_t  *rooms, *room;

    len = strlen(arg);

    if (arg[0] == '!') {
        if (!mx_room_id_valid(arg, len, 1)) {
            fprintf(stderr, "matrix-join-ctl: sync: invalid room ID "
                    "\"%s\"\n", arg);
            return -1;
        }

    } else if (arg[0] == '#') {
        if (len > MX_ID_MAX_LEN || strchr(arg, ':') == NULL || len < 4) {
            fprintf(stderr, "matrix-join-ctl: sync: invalid room alias "
                    "\"%s\"\n", arg);
            return -1;
        }

    } else {
        fprintf(stderr, "matrix-join-ctl: sync: \"%s\" is neither a room ID "
                "(!...) nor an alias (#...)\n", arg);
        return -1;
    }

    rooms = realloc(s->rooms, (s->nrooms + 1) * sizeof(mxj_sync_room_t));
    if (rooms == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    s->rooms = rooms;
    room = &s->rooms[s->nrooms];
    memset(room, 0, sizeof(mxj_sync_room_t));

    room->arg = strdup(arg);

    if (arg[0] == '#') {
        room->alias = room->arg;

    } else {
        room->id = strdup(arg);
    }

    if (room->arg == NULL || (arg[0] == '!' && room->id == NULL)) {
        free(room->arg);
        free(room->id);
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    s->nrooms++;

    return 0;
}


static int
mxj_sync_read_key(mxj_sync_t *s)
{
    int          rc;
    char        *text;
    FILE        *f;
    size_t       n;
    mx_err_t     err;
    struct stat  st;

    f = fopen(s->key_path, "rb");
    if (f == NULL) {
        fprintf(stderr, "matrix-join-ctl: %s: cannot open: %s\n",
                s->key_path, strerror(errno));
        return -1;
    }

    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)
        || st.st_size > MXJ_SYNC_KEYFILE_MAX)
    {
        fprintf(stderr, "matrix-join-ctl: %s: not a key file\n",
                s->key_path);
        fclose(f);
        return -1;
    }

    text = malloc((size_t) st.st_size + 1);
    if (text == NULL) {
        fclose(f);
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    n = fread(text, 1, (size_t) st.st_size, f);
    fclose(f);

    rc = mx_keyfile_parse(text, n, s->keys, MX_KEYFILE_MAX_KEYS, &s->nkeys,
                          &err);

    sodium_memzero(text, n);
    free(text);

    if (rc != 0) {
        fprintf(stderr, "matrix-join-ctl: %s: %s\n", s->key_path, err.text);
        return -1;
    }

    return 0;
}


static void
mxj_sync_free(mxj_sync_t *s)
{
    size_t  i;

    for (i = 0; i < s->nrooms; i++) {
        free(s->rooms[i].arg);
        free(s->rooms[i].id);
        mxj_sync_pool_free(&s->rooms[i].pool);
        mxj_sync_ids_free(&s->rooms[i].live);
    }

    for (i = 0; i < s->nkeys; i++) {
        mx_signing_key_wipe(&s->keys[i]);
    }

    free(s->rooms);
    free(s->as_url);
    mxj_sync_ids_free(&s->users);
    mxj_sync_ids_free(&s->registered);
    mxj_sync_keyring_free(&s->keyring);
    mxj_redis_close(&s->r);
}


/* --- the passes -------------------------------------------------------- */

/*
 * One pass of every room, then (with --every) one every DURATION from the
 * start of the last, and between them a pass of each room an
 * auth-relevant push marked. One pass alone: 0 only when every room
 * synced. With --every: 0 at a stop.
 */

static int
mxj_sync_loop(mxj_sync_t *s)
{
    int              ok, all, dirty, refresh;
    char             why[MXJ_SYNC_WHY_LEN];
    size_t           i;
    int64_t          next, now, start, wake;
    struct timespec  ts;

    next = mxj_run_mono_ms();

    /* the registration names room IDs: the aliases resolved first */

    if (s->as_listen != NULL) {
        for (i = 0; i < s->nrooms && !mxj_run_stopping(&s->run); i++) {
            if (s->rooms[i].alias != NULL
                && mxj_sync_resolve_room(s, &s->rooms[i], why, sizeof(why))
                   != 0)
            {
                mxj_sync_log("alias %s: %s (not in the registration until "
                             "it resolves)", s->rooms[i].alias, why);
            }
        }

        if (mxj_sync_as_register(s) != 0 || mxj_sync_as_start(s) != 0) {
            return MXJ_EXIT_FAIL;
        }
    }

    for ( ;; ) {
        pthread_mutex_lock(&s->run.mutex);

        for ( ;; ) {
            if (mxj_run_stopping(&s->run)) {
                pthread_mutex_unlock(&s->run.mutex);
                mxj_sync_log("stopped");
                return MXJ_EXIT_OK;
            }

            now = mxj_run_mono_ms();
            all = (now >= next);
            dirty = 0;

            for (i = 0; i < s->nrooms; i++) {
                if (!s->rooms[i].unsupported) {
                    dirty |= s->rooms[i].dirty
                             | (s->rooms[i].live.n > 0);
                }
            }

            /* --metrics: the rooms' records read again while idle */

            wake = next;
            refresh = 0;

            if (s->metrics.address != NULL) {
                wake = s->metrics_at + MXJ_SYNC_METRICS_MS;
                refresh = (now >= wake);
                wake = wake < next ? wake : next;
            }

            if (all || dirty || refresh) {
                break;
            }

            ts.tv_sec = wake / 1000;
            ts.tv_nsec = (wake % 1000) * 1000000;
            pthread_cond_timedwait(&s->run.cond, &s->run.mutex, &ts);
        }

        pthread_mutex_unlock(&s->run.mutex);

        if (!all && !dirty) {
            mxj_sync_metrics_rooms(s);
            continue;
        }

        start = mxj_run_mono_ms();
        ok = mxj_sync_round(s, all);

        if (s->metrics.address != NULL) {
            mxj_sync_metrics_rooms(s);
        }

        if (s->every == 0) {
            return ok ? MXJ_EXIT_OK : MXJ_EXIT_FAIL;
        }

        if (all) {
            next = start + s->every;
        }

        if (s->as_listen != NULL && mxj_sync_as_register(s) != 0) {
            mxj_sync_log("the registration %s could not be written again",
                         s->registration);
        }
    }
}


/* Every room (all), or those a push marked. 1 when each one synced. */

static int
mxj_sync_round(mxj_sync_t *s, int all)
{
    int               ok, dirty, rc;
    char              why[MXJ_SYNC_WHY_LEN];
    size_t            i, live;
    int64_t           t0;
    uint64_t          loads;
    mxj_sync_room_t  *room;

    ok = 1;

    for (i = 0; i < s->nrooms; i++) {
        room = &s->rooms[i];

        if (room->unsupported) {
            continue;           /* said once, at its first pass */
        }

        /* the pushed non-state events first: most need no pass */

        for ( ;; ) {
            pthread_mutex_lock(&s->run.mutex);
            dirty = room->dirty;
            live = room->live.n;
            pthread_mutex_unlock(&s->run.mutex);

            if (all || dirty || live == 0 || mxj_run_stopping(&s->run)) {
                break;
            }

            rc = mxj_sync_live(s, room, why, sizeof(why));

            if (rc == 1) {
                mxj_sync_log("room=%s stale: %s (a pass follows)", room->id,
                             why);

            } else if (rc < 0) {

                /* the batch could not be applied: a pass covers it */

                mxj_sync_log("room=%s live: %s (a pass instead)", room->id,
                             why[0] ? why : "Redis failed");

                pthread_mutex_lock(&s->run.mutex);
                room->dirty = 1;
                pthread_mutex_unlock(&s->run.mutex);
            }
        }

        if (!all && !dirty) {
            continue;
        }

        if (mxj_run_stopping(&s->run)) {
            ok = 0;
            break;
        }

        loads = __atomic_load_n(&room->loads, __ATOMIC_RELAXED);
        t0 = mxj_run_mono_ms();

        rc = mxj_sync_pass(s, room, why, sizeof(why));

        pthread_mutex_lock(&s->run.mutex);
        mxj_metrics_observe(&s->stats.pass_duration,
                            (double) (mxj_run_mono_ms() - t0) / 1000);
        pthread_mutex_unlock(&s->run.mutex);

        mxj_sync_count(s->stats.passes[
                           rc != 0 ? MXJ_SYNC_PASS_FAILED
                           : __atomic_load_n(&room->loads, __ATOMIC_RELAXED)
                             != loads ? MXJ_SYNC_PASS_LOADED
                           : MXJ_SYNC_PASS_UNCHANGED], 1);

        if (rc != 0) {
            mxj_sync_log("room=%s failed: %s (its snapshot stays as it was)",
                         room->id ? room->id : room->arg, why);
            ok = 0;

            if (room->unsupported) {
                mxj_sync_log("room=%s: not synced again (the edge cannot "
                             "serve its room version)",
                             room->id ? room->id : room->arg);
            }
        }
    }

    return ok;
}
