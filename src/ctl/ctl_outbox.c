/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl outbox --redis ADDRESS [--prefix P]
 *
 * How far the forwarder is behind (docs/forwarder.md): one line per room
 * with an outbox, then the total, the same numbers matrix_status reports.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ctl_forward.h"
#include "ctl_opt.h"
#include "ctl_redis.h"


typedef struct {
    long long   pending;
    long long   in_flight;
    long long   dead;
    long long   oldest_age_ms;
} mxj_outbox_count_t;


static int mxj_outbox_args(int argc, char **argv, mxj_redis_t *r);
static int mxj_outbox_set(void *conf, int id, const char *value);
static int mxj_outbox_keys(mxj_redis_t *r, const char *room,
    const char **argv);
static char **mxj_outbox_rooms(mxj_redis_t *r, size_t *n);
static void mxj_outbox_free(char **names, size_t n);


int
mxj_cmd_outbox(int argc, char **argv)
{
    int                  rc;
    char               **rooms;
    size_t               i, k, n;
    const char          *cmd[6];
    redisReply          *reply, **replies;
    mxj_redis_t          r;
    mxj_outbox_count_t   room, total;

    if (mxj_outbox_args(argc, argv, &r) != 0) {
        return MXJ_EXIT_USAGE;
    }

    if (mxj_redis_connect(&r) != 0) {
        return MXJ_EXIT_FAIL;
    }

    rc = MXJ_EXIT_FAIL;
    rooms = NULL;
    replies = NULL;
    n = 0;
    memset(&total, 0, sizeof(mxj_outbox_count_t));

    switch (mxj_redis_schema(&r, 0)) {

    case 0:
        break;

    case 1:
        goto print_total;       /* nothing loaded yet: no outbox */

    default:
        goto done;
    }

    rooms = mxj_outbox_rooms(&r, &n);
    if (rooms == NULL) {
        goto done;
    }

    /*
     * src/lua/outbox_count.lua per room, pipelined by its SHA-1; a room
     * answered NOSCRIPT (an empty script cache) is asked again alone,
     * once the pipeline is read, with the text (mxj_redis_script()).
     */

    replies = calloc(n ? n : 1, sizeof(redisReply *));
    if (replies == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (mxj_outbox_keys(&r, rooms[i], cmd) != 0) {
            goto done;
        }

        /* a cluster: each room on its node, one at a time */

        k = mxj_redis_route(&r, cmd[3], strlen(cmd[3])) != 0 ? REDIS_ERR
            : redisAppendCommandArgv(r.c, 6, cmd, NULL);
        free((char *) cmd[3]);
        free((char *) cmd[4]);

        if (k != REDIS_OK) {
            fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", r.address,
                    r.c != NULL && r.c->err ? r.c->errstr
                                            : "out of memory");
            goto done;
        }

        if (r.cluster != NULL
            && redisGetReply(r.c, (void **) &replies[i]) != REDIS_OK)
        {
            fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", r.address,
                    r.c->errstr);
            goto done;
        }
    }

    for (i = 0; r.cluster == NULL && i < n; i++) {
        if (redisGetReply(r.c, (void **) &replies[i]) != REDIS_OK) {
            fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", r.address,
                    r.c->errstr);
            goto done;
        }
    }

    for (i = 0; i < n; i++) {
        reply = replies[i];

        if (reply->type == REDIS_REPLY_ERROR
            && strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            freeReplyObject(reply);
            replies[i] = NULL;

            if (mxj_outbox_keys(&r, rooms[i], cmd) != 0) {
                goto done;
            }

            reply = mxj_redis_script(&r, MX_LUA_OUTBOX_COUNT, 2, 3, cmd + 3,
                                     NULL);
            free((char *) cmd[3]);
            free((char *) cmd[4]);

            if (reply == NULL) {
                goto done;
            }
        }

        replies[i] = NULL;

        if (reply->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", r.address,
                    reply->str);
            freeReplyObject(reply);
            goto done;
        }

        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5) {
            fprintf(stderr, "matrix-join-ctl: unexpected reply for room "
                    "%s\n", rooms[i]);
            freeReplyObject(reply);
            goto done;
        }

        for (k = 0; k < 5; k++) {
            if (reply->element[k]->type != REDIS_REPLY_INTEGER) {
                break;
            }
        }

        if (k < 5 || reply->element[0]->integer == 0) {
            /* neither an outbox nor a dead-letter stream */
            freeReplyObject(reply);
            continue;
        }

        room.pending = reply->element[1]->integer;
        room.in_flight = reply->element[2]->integer;
        room.dead = reply->element[3]->integer;
        room.oldest_age_ms = reply->element[4]->integer;
        freeReplyObject(reply);

        printf("%s pending=%lld in_flight=%lld dead=%lld "
               "oldest_age_ms=%lld\n", rooms[i], room.pending,
               room.in_flight, room.dead, room.oldest_age_ms);

        total.pending += room.pending;
        total.in_flight += room.in_flight;
        total.dead += room.dead;

        if (room.oldest_age_ms > total.oldest_age_ms) {
            total.oldest_age_ms = room.oldest_age_ms;
        }
    }

print_total:

    printf("total pending=%lld in_flight=%lld dead=%lld oldest_age_ms=%lld\n",
           total.pending, total.in_flight, total.dead, total.oldest_age_ms);

    rc = (fflush(stdout) == 0) ? MXJ_EXIT_OK : MXJ_EXIT_FAIL;

done:

    /* replies left unread go with the connection */

    if (replies != NULL) {
        for (i = 0; i < n; i++) {
            if (replies[i] != NULL) {
                freeReplyObject(replies[i]);
            }
        }

        free(replies);
    }

    mxj_outbox_free(rooms, n);

    mxj_redis_close(&r);

    return rc;
}


/*
 * EVALSHA sha 2 outbox dead group: the two keys malloc'ed in argv[3] and
 * argv[4]; -1 when out of memory (printed).
 */

static int
mxj_outbox_keys(mxj_redis_t *r, const char *room, const char **argv)
{
    const mx_lua_script_t  *s;

    s = &mx_lua_scripts[MX_LUA_OUTBOX_COUNT];

    argv[0] = "EVALSHA";
    argv[1] = s->sha1;
    argv[2] = "2";
    argv[3] = mxj_room_key(r, room, MX_KEY_OUTBOX);
    argv[4] = mxj_room_key(r, room, MX_KEY_DEAD);
    argv[5] = MXJ_FWD_GROUP;

    if (argv[3] == NULL || argv[4] == NULL) {
        free((char *) argv[3]);
        free((char *) argv[4]);
        return -1;
    }

    return 0;
}


static int
mxj_outbox_set(void *conf, int id, const char *value)
{
    fprintf(stderr, "matrix-join-ctl: outbox: unexpected argument \"%s\"\n",
            value);
    return -1;
}


static int
mxj_outbox_args(int argc, char **argv, mxj_redis_t *r)
{
    static const mxj_opt_t  none[] = { { NULL, 0, 0 } };

    mxj_redis_init(r);

    if (mxj_opt_parse("outbox", argc, argv, r, none, mxj_outbox_set, NULL)
        != 0)
    {
        goto usage;
    }

    if (r->address != NULL) {
        return 0;
    }

usage:

    mxj_usage(stderr, "outbox");

    return -1;
}


static int
mxj_outbox_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/*
 * The rooms of P outbox:rooms and P rooms (the forwarder's), sorted, each
 * once: a malloc'ed array of *n malloc'ed names, or NULL (printed).
 */

static char **
mxj_outbox_rooms(mxj_redis_t *r, size_t *n)
{
    int          j;
    char        *key, **names, **grow;
    size_t       i, k, cap;
    redisReply  *set, *v;

    static const char  *sets[2] = { MX_KEY_OUTBOX_ROOMS, MX_KEY_ROOMS };

    names = NULL;
    cap = 0;
    *n = 0;

    /* two keys of different slots: two commands */

    for (j = 0; j < 2; j++) {
        key = mxj_global_key(r, sets[j], NULL);
        if (key == NULL) {
            goto failed;
        }

        set = mxj_redis_cmdf(r, "SMEMBERS %s", key);
        free(key);

        if (set == NULL) {
            goto failed;
        }

        if (set->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "matrix-join-ctl: unexpected SMEMBERS reply\n");
            freeReplyObject(set);
            goto failed;
        }

        for (i = 0; i < set->elements; i++) {
            v = set->element[i];

            /* a brace would move the room's keys out of its slot */

            if (v->type != REDIS_REPLY_STRING || v->len == 0
                || strlen(v->str) != v->len || strchr(v->str, '}') != NULL)
            {
                continue;
            }

            if (*n == cap) {
                cap = cap ? 2 * cap : 64;
                grow = realloc(names, cap * sizeof(char *));

                if (grow == NULL) {
                    freeReplyObject(set);
                    goto nomem;
                }

                names = grow;
            }

            names[*n] = strdup(v->str);

            if (names[*n] == NULL) {
                freeReplyObject(set);
                goto nomem;
            }

            (*n)++;
        }

        freeReplyObject(set);
    }

    if (*n == 0) {
        free(names);
        return calloc(1, sizeof(char *));
    }

    qsort(names, *n, sizeof(char *), mxj_outbox_cmp);

    for (i = 1, k = 1; i < *n; i++) {
        if (strcmp(names[k - 1], names[i]) == 0) {
            free(names[i]);
            continue;
        }

        names[k++] = names[i];
    }

    *n = k;

    return names;

nomem:

    fprintf(stderr, "matrix-join-ctl: out of memory\n");

failed:

    mxj_outbox_free(names, *n);

    return NULL;
}


static void
mxj_outbox_free(char **names, size_t n)
{
    size_t  i;

    if (names == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        free(names[i]);
    }

    free(names);
}
