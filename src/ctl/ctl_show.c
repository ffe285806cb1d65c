/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl show --redis ADDRESS [--prefix P] ROOM_ID
 * matrix-join-ctl rooms --redis ADDRESS [--prefix P]
 *
 * Read-only views of what load wrote (docs/redis-schema.md): one room's
 * meta (its age; for a room sync keeps, where from and how many edge
 * joins it found unconfirmed), extremities and aliases, with the number
 * of edge joins that send_join added since the load; or one line per
 * room.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ctl.h"
#include "ctl_opt.h"
#include "ctl_redis.h"
#include "mx_id.h"


typedef struct {
    const char     *cmd;
    const char    **room;           /* show's ROOM_ID; NULL for rooms */
} mxj_show_args_t;


static const mxj_opt_t  mxj_show_opts[] = {
    { NULL, 0, 0 }
};


static int mxj_show_set(void *conf, int id, const char *value);
static int mxj_show_args(const char *cmd, int argc, char **argv,
    mxj_redis_t *r, const char **room);
static int mxj_show_aliases(mxj_redis_t *r, const char *room);
static long long mxj_show_now_ms(mxj_redis_t *r);
static void mxj_show_age(char *buf, size_t size, long long ms);
static void mxj_show_edge(const redisReply *edge);
static const char *mxj_show_field(redisReply *hash, const char *name);
static const char *mxj_show_value(redisReply *hash, const char *name);


int
mxj_cmd_show(int argc, char **argv)
{
    int           rc;
    char         *key, age[64], when[64];
    size_t        i;
    time_t        t;
    long long     now, at;
    struct tm     tm;
    const char   *room, *v;
    redisReply   *meta, *ext, *edge;
    mxj_redis_t   r;

    static const char  *fields[] = {
        "room_version", "create_event_id", "state_events", "member_events",
        "members", "auth_chain", "bytes", "extremities", "max_depth",
        "generation", NULL
    };
    static const char  *synced[] = {
        "synced_from", "unconfirmed", "stale", "stale_reason",
        "live_events", "live_pending", "live_at", "passes", "drift", NULL
    };
    const char        **f;

    if (mxj_show_args("show", argc, argv, &r, &room) != 0) {
        return MXJ_EXIT_USAGE;
    }

    if (mxj_redis_connect(&r) != 0) {
        return MXJ_EXIT_FAIL;
    }

    rc = MXJ_EXIT_FAIL;
    meta = NULL;
    ext = NULL;
    edge = NULL;

    switch (mxj_redis_schema(&r, 0)) {

    case 0:
        break;

    case 1:
        fprintf(stderr, "matrix-join-ctl: no room snapshot under prefix "
                "\"%s\" (nothing was loaded)\n", r.prefix);
        goto done;

    default:
        goto done;
    }

    key = mxj_room_key(&r, room, MX_KEY_META);
    if (key == NULL) {
        goto done;
    }

    meta = mxj_redis_cmdf(&r, "HGETALL %s", key);
    free(key);

    if (meta == NULL) {
        goto done;
    }

    if (meta->type != REDIS_REPLY_ARRAY || meta->elements == 0) {
        fprintf(stderr, "matrix-join-ctl: room %s has no snapshot under "
                "prefix \"%s\"\n", room, r.prefix);
        goto done;
    }

    key = mxj_room_key(&r, room, MX_KEY_EXTREM);
    if (key == NULL) {
        goto done;
    }

    ext = mxj_redis_cmdf(&r, "HGETALL %s", key);
    free(key);

    if (ext == NULL) {
        goto done;
    }

    key = mxj_room_key(&r, room, MX_KEY_EDGE);
    if (key == NULL) {
        goto done;
    }

    /* informative only: a key of another type (WRONGTYPE) prints nothing */

    edge = mxj_redis_route(&r, key, strlen(key)) == 0
           ? redisCommand(r.c, "HVALS %s", key) : NULL;
    free(key);

    printf("room: %s\n", room);

    for (f = fields; *f; f++) {
        v = mxj_show_field(meta, *f);
        printf("%s: %s\n", *f, v ? v : "(missing)");
    }

    v = mxj_show_field(meta, "loaded_at");
    now = mxj_show_now_ms(&r);

    if (v != NULL && now >= 0) {
        at = atoll(v);
        t = (time_t) (at / 1000);
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        mxj_show_age(age, sizeof(age), now - at);
        printf("loaded_at: %s (%s, %s ago)\n", v, when, age);
        printf("age_ms: %lld\n", now - at);
    }

    /* what sync adds: where from, joins it found unconfirmed; a mark */

    for (f = synced; *f; f++) {
        v = mxj_show_field(meta, *f);

        if (v != NULL) {
            printf("%s: %s\n", *f, v);
        }
    }

    v = mxj_show_field(meta, "heroes");

    if (v != NULL) {
        printf("heroes: %s\n", v);
    }

    if (edge != NULL && edge->type == REDIS_REPLY_ARRAY) {
        mxj_show_edge(edge);
    }

    for (i = 0; ext->type == REDIS_REPLY_ARRAY && i + 1 < ext->elements;
         i += 2)
    {
        printf("extremity: %s %s\n", ext->element[i]->str,
               ext->element[i + 1]->str);
    }

    if (mxj_show_aliases(&r, room) != 0) {
        goto done;
    }

    rc = (fflush(stdout) == 0) ? MXJ_EXIT_OK : MXJ_EXIT_FAIL;

done:

    if (meta != NULL) {
        freeReplyObject(meta);
    }

    if (ext != NULL) {
        freeReplyObject(ext);
    }

    if (edge != NULL) {
        freeReplyObject(edge);
    }

    mxj_redis_close(&r);

    return rc;
}


static int
mxj_show_cmp(const void *a, const void *b)
{
    const redisReply  *x, *y;

    x = *(redisReply *const *) a;
    y = *(redisReply *const *) b;

    return strcmp(x->str, y->str);
}


int
mxj_cmd_rooms(int argc, char **argv)
{
    int           rc;
    char         *key, age[64];
    size_t        i;
    long long     now;
    const char   *v;
    redisReply   *rooms, *m;
    mxj_redis_t   r;

    if (mxj_show_args("rooms", argc, argv, &r, NULL) != 0) {
        return MXJ_EXIT_USAGE;
    }

    if (mxj_redis_connect(&r) != 0) {
        return MXJ_EXIT_FAIL;
    }

    rc = MXJ_EXIT_FAIL;
    rooms = NULL;

    switch (mxj_redis_schema(&r, 0)) {

    case 0:
        break;

    case 1:
        rc = MXJ_EXIT_OK;       /* nothing loaded yet: no rooms */
        goto done;

    default:
        goto done;
    }

    key = mxj_global_key(&r, MX_KEY_ROOMS, NULL);
    if (key == NULL) {
        goto done;
    }

    rooms = mxj_redis_cmdf(&r, "SMEMBERS %s", key);
    free(key);

    if (rooms == NULL || rooms->type != REDIS_REPLY_ARRAY) {
        goto done;
    }

    qsort(rooms->element, rooms->elements, sizeof(redisReply *),
          mxj_show_cmp);

    now = mxj_show_now_ms(&r);

    for (i = 0; i < rooms->elements; i++) {
        key = mxj_room_key(&r, rooms->element[i]->str, MX_KEY_META);
        if (key == NULL) {
            goto done;
        }

        m = mxj_redis_cmdf(&r, "HGETALL %s", key);
        free(key);

        if (m == NULL) {
            goto done;
        }

        if (m->type != REDIS_REPLY_ARRAY || m->elements == 0) {
            printf("%s: listed, but has no snapshot\n",
                   rooms->element[i]->str);
            freeReplyObject(m);
            continue;
        }

        v = mxj_show_field(m, "loaded_at");
        mxj_show_age(age, sizeof(age),
                     (v && now >= 0) ? now - atoll(v) : -1);

        printf("%s: version %s, %s state events, %s members, %s auth chain "
               "events, %s forward extremities, %s bytes, loaded %s ago\n",
               rooms->element[i]->str,
               mxj_show_value(m, "room_version"),
               mxj_show_value(m, "state_events"),
               mxj_show_value(m, "members"),
               mxj_show_value(m, "auth_chain"),
               mxj_show_value(m, "extremities"),
               mxj_show_value(m, "bytes"), age);

        freeReplyObject(m);
    }

    rc = (fflush(stdout) == 0) ? MXJ_EXIT_OK : MXJ_EXIT_FAIL;

done:

    if (rooms != NULL) {
        freeReplyObject(rooms);
    }

    mxj_redis_close(&r);

    return rc;
}


/* show's one operand, the room ID; rooms has none */

static int
mxj_show_set(void *conf, int id, const char *value)
{
    mxj_show_args_t *a = conf;

    if (a->room == NULL || *a->room != NULL) {
        fprintf(stderr, "matrix-join-ctl: %s: unexpected argument \"%s\"\n",
                a->cmd, value);
        return -1;
    }

    if (!mx_room_id_valid(value, strlen(value), 0)) {
        fprintf(stderr, "matrix-join-ctl: %s: invalid room ID \"%s\", "
                "expected \"!opaque_id:server.name\"\n", a->cmd, value);
        return -1;
    }

    *a->room = value;

    return 0;
}


static int
mxj_show_args(const char *cmd, int argc, char **argv, mxj_redis_t *r,
    const char **room)
{
    mxj_show_args_t  a;

    mxj_redis_init(r);

    if (room) {
        *room = NULL;
    }

    a.cmd = cmd;
    a.room = room;

    if (mxj_opt_parse(cmd, argc, argv, r, mxj_show_opts, mxj_show_set, &a)
        != 0)
    {
        goto usage;
    }

    if (r->address == NULL || (room != NULL && *room == NULL)) {
        goto usage;
    }

    return 0;

usage:

    mxj_usage(stderr, cmd);

    return -1;
}


/* The aliases pointing to room: a SCAN over P alias:*, for an operator. */

static int
mxj_show_aliases(mxj_redis_t *r, const char *room)
{
    char         *pattern, *p, cursor[32];
    size_t        i, m, n, plen;
    const char   *s;
    redisReply   *scan, *keys, *vals;

    plen = strlen(r->prefix);

    pattern = malloc(2 * plen + sizeof(MX_KEY_ALIAS "*"));
    if (pattern == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    /* the prefix is literal: escape the glob characters */

    for (p = pattern, s = r->prefix; *s; s++) {
        if (strchr("*?[]\\", *s)) {
            *p++ = '\\';
        }

        *p++ = *s;
    }

    memcpy(p, MX_KEY_ALIAS "*", sizeof(MX_KEY_ALIAS "*"));

    /* a cluster's keys are on its masters: a SCAN on each */

    for (m = 0; m < mxj_redis_masters(r); m++) {
        strcpy(cursor, "0");

        do {
            if (mxj_redis_route_master(r, m) != 0) {
                fprintf(stderr, "matrix-join-ctl: Redis at %s: cannot reach "
                        "every master to list the aliases\n", r->address);
                free(pattern);
                return -1;
            }

            scan = mxj_redis_cmdf(r, "SCAN %s MATCH %s COUNT 1000", cursor,
                                  pattern);

            if (scan == NULL) {
                free(pattern);
                return -1;
            }

            if (scan->type != REDIS_REPLY_ARRAY || scan->elements != 2) {
                fprintf(stderr, "matrix-join-ctl: unexpected SCAN reply\n");
                freeReplyObject(scan);
                free(pattern);
                return -1;
            }

            snprintf(cursor, sizeof(cursor), "%s", scan->element[0]->str);
            keys = scan->element[1];
            n = keys->elements;

            for (i = 0; i < n; i++) {
                vals = mxj_redis_cmdf(r, "GET %b", keys->element[i]->str,
                                      keys->element[i]->len);

                if (vals == NULL) {
                    freeReplyObject(scan);
                    free(pattern);
                    return -1;
                }

                if (vals->type == REDIS_REPLY_STRING
                    && strcmp(vals->str, room) == 0)
                {
                    printf("alias: %s\n", keys->element[i]->str + plen
                           + sizeof(MX_KEY_ALIAS) - 1);
                }

                freeReplyObject(vals);
            }

            freeReplyObject(scan);

        } while (strcmp(cursor, "0") != 0);

    }

    free(pattern);

    return 0;
}


/* Redis's clock, so that the age does not depend on this host's. */

static long long
mxj_show_now_ms(mxj_redis_t *r)
{
    long long    ms;
    redisReply  *t;

    t = mxj_redis_cmdf(r, "TIME");
    if (t == NULL) {
        return -1;
    }

    ms = -1;

    if (t->type == REDIS_REPLY_ARRAY && t->elements == 2) {
        ms = atoll(t->element[0]->str) * 1000
             + atoll(t->element[1]->str) / 1000;
    }

    freeReplyObject(t);

    return ms;
}



/*
 * P{R}:edge holds the joins accepted at the edge and, with "h", the
 * homeserver's events sync applied in place: counted apart.
 */
static void
mxj_show_edge(const redisReply *edge)
{
    size_t        i;
    json_t       *v;
    long long     joins, hs;

    joins = 0;
    hs = 0;

    for (i = 0; i < edge->elements; i++) {
        v = NULL;

        if (edge->element[i]->type == REDIS_REPLY_STRING) {
            v = json_loadb(edge->element[i]->str, edge->element[i]->len, 0,
                           NULL);
        }

        if (json_is_true(json_object_get(v, "h"))
            || json_integer_value(json_object_get(v, "h")) == 1)
        {
            hs++;

        } else {
            joins++;
        }

        json_decref(v);
    }

    printf("edge_joins: %lld\n", joins);
    printf("homeserver_events_applied: %lld\n", hs);
}

static void
mxj_show_age(char *buf, size_t size, long long ms)
{
    long long  s;

    if (ms < 0) {
        snprintf(buf, size, "?");
        return;
    }

    s = ms / 1000;

    if (s < 120) {
        snprintf(buf, size, "%lld s", s);

    } else if (s < 7200) {
        snprintf(buf, size, "%lld min", s / 60);

    } else if (s < 172800) {
        snprintf(buf, size, "%lld h", s / 3600);

    } else {
        snprintf(buf, size, "%lld d", s / 86400);
    }
}


/* The value of field name in an HGETALL reply, or NULL. */

static const char *
mxj_show_field(redisReply *hash, const char *name)
{
    size_t  i;

    for (i = 0; i + 1 < hash->elements; i += 2) {
        if (strcmp(hash->element[i]->str, name) == 0) {
            return hash->element[i + 1]->str;
        }
    }

    return NULL;
}


static const char *
mxj_show_value(redisReply *hash, const char *name)
{
    const char  *v;

    v = mxj_show_field(hash, name);

    return v ? v : "?";
}
