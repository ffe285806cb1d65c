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
#include "ctl_redis.h"


/*
 * KEYS: outbox, dead; ARGV: the group. One room read atomically:
 * {keys that exist, pending, in_flight, dead, oldest_age_ms}. The
 * oldest entry is the first of the stream: delivered ones are deleted.
 */
static const char  mxj_outbox_lua[] =
    "local function n(v) if type(v) == 'number' then return v end"
    " return 0 end\n"
    "local exists = redis.call('EXISTS', KEYS[1], KEYS[2])\n"
    "local pending = n(redis.pcall('XLEN', KEYS[1]))\n"
    "local dead = n(redis.pcall('XLEN', KEYS[2]))\n"
    "local inflight, age = 0, 0\n"
    "if pending > 0 then\n"
    "  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1])\n"
    "  if type(p) == 'table' then inflight = n(p[1]) end\n"
    "  local f = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)\n"
    "  if f[1] then\n"
    "    local t = redis.call('TIME')\n"
    "    local ms = tonumber(string.match(f[1][1], '^(%d+)')) or 0\n"
    "    age = math.max(0, tonumber(t[1]) * 1000"
    " + math.floor(tonumber(t[2]) / 1000) - ms)\n"
    "  end\n"
    "end\n"
    "return {exists, pending, inflight, dead, age}\n";


typedef struct {
    long long   pending;
    long long   in_flight;
    long long   dead;
    long long   oldest_age_ms;
} mxj_outbox_count_t;


static int mxj_outbox_args(int argc, char **argv, mxj_redis_t *r);
static char **mxj_outbox_rooms(mxj_redis_t *r, size_t *n);
static void mxj_outbox_free(char **names, size_t n);


int
mxj_cmd_outbox(int argc, char **argv)
{
    int                  rc;
    char                *outbox, *dead, **rooms;
    size_t               i, k, n;
    redisReply          *reply;
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

    /* one script per room, pipelined */

    for (i = 0; i < n; i++) {
        outbox = mxj_room_key(&r, rooms[i], ":outbox");
        dead = mxj_room_key(&r, rooms[i], ":dead");

        if (outbox == NULL || dead == NULL) {
            free(outbox);
            free(dead);
            goto done;
        }

        k = redisAppendCommand(r.c, "EVAL %s 2 %s %s %s", mxj_outbox_lua,
                               outbox, dead, MXJ_FWD_GROUP);
        free(outbox);
        free(dead);

        if (k != REDIS_OK) {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            goto done;
        }
    }

    for (i = 0; i < n; i++) {
        if (redisGetReply(r.c, (void **) &reply) != REDIS_OK) {
            fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", r.address,
                    r.c->errstr);
            goto done;
        }

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

    mxj_outbox_free(rooms, n);

    mxj_redis_close(&r);

    return rc;
}


static int
mxj_outbox_args(int argc, char **argv, mxj_redis_t *r)
{
    int  i, o;

    mxj_redis_init(r);

    for (i = 1; i < argc; i++) {
        o = mxj_redis_option(r, argc, argv, &i);

        if (o < 0) {
            goto usage;
        }

        if (o == 0) {
            fprintf(stderr, "matrix-join-ctl: outbox: unexpected argument "
                    "\"%s\"\n", argv[i]);
            goto usage;
        }
    }

    if (r->address != NULL) {
        return 0;
    }

usage:

    fprintf(stderr, "usage: matrix-join-ctl outbox --redis ADDRESS "
            "[--prefix P] [--password PW] [--db N]\n");

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

    static const char  *sets[2] = { "outbox:rooms", "rooms" };

    names = NULL;
    cap = 0;
    *n = 0;

    /* two keys of different slots: two commands */

    for (j = 0; j < 2; j++) {
        key = mxj_global_key(r, sets[j]);
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
