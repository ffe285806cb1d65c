/*
 * Copyright (C) nginx-matrix-join authors.
 * Redis for matrix-join-ctl: options, a blocking connection, key names
 * and the schema check (docs/redis-schema.md).
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ctl_redis.h"
#include "mx_cluster.h"
#include "mx_redis_addr.h"


#define MXJ_REDIS_CONNECT_TIMEOUT  5      /* seconds */
#define MXJ_REDIS_IO_TIMEOUT       120    /* a big pipeline reply */
#define MXJ_REDIS_SENTINEL_TIMEOUT 2      /* seconds, per sentinel */


static int mxj_redis_reply_ok(mxj_redis_t *r, redisReply *reply);


void
mxj_redis_init(mxj_redis_t *r)
{
    memset(r, 0, sizeof(mxj_redis_t));

    r->prefix = MX_SCHEMA_PREFIX_DEFAULT;
    r->password = getenv("MXJ_REDIS_PASSWORD");

    if (r->password != NULL && r->password[0] == '\0') {
        r->password = NULL;
    }

    /* the sentinels' own (requirepass in sentinel.conf): no option, so
     * that it is never in the process list */
    r->sentinel_password = getenv("MXJ_REDIS_SENTINEL_PASSWORD");

    if (r->sentinel_password != NULL && r->sentinel_password[0] == '\0') {
        r->sentinel_password = NULL;
    }
}


int
mxj_redis_set(mxj_redis_t *r, const char *name, const char *value)
{
    int               rc;
    char             *end, err[128];
    mx_redis_addr_t  *a;

    if (strcmp(name, "db") == 0) {
        errno = 0;
        r->db = strtol(value, &end, 10);

        if (errno || *value == '\0' || *end != '\0' || r->db < 0) {
            fprintf(stderr, "matrix-join-ctl: invalid --db \"%s\"\n", value);
            return -1;
        }

    } else if (strcmp(name, "prefix") == 0) {

        /* the module refuses it in the same words (matrix_redis_prefix) */

        if (!mx_schema_prefix_valid(value, strlen(value))) {
            fprintf(stderr, "matrix-join-ctl: invalid Redis key prefix "
                    "\"%s\": braces, spaces and control characters are "
                    "not allowed\n", value);
            return -1;
        }

        r->prefix = value;

    } else if (strcmp(name, "redis") == 0) {

        /* as matrix_redis parses it: a malformed address is a usage
         * error here, one that does not answer fails later (exit 1) */

        a = malloc(sizeof(mx_redis_addr_t));
        if (a == NULL) {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            return -1;
        }

        rc = mx_redis_addr_parse(value, strlen(value), a, err, sizeof(err));
        free(a);

        if (rc != 0) {
            fprintf(stderr, "matrix-join-ctl: invalid Redis address \"%s\": "
                    "%s\n", value, err);
            return -1;
        }

        r->address = value;

    } else {
        r->password = value;
    }

    return 0;
}


/*
 * Sentinel: the first sentinel that names the master wins; a sentinel
 * down or not knowing the name sends us to the next one.
 */

static int
mxj_redis_sentinel(mxj_redis_t *r, const mx_redis_addr_t *a,
    mx_redis_host_t *master)
{
    char            *end;
    long             port;
    size_t           i;
    redisReply      *reply;
    redisContext    *c;
    struct timeval   tv;

    tv.tv_sec = MXJ_REDIS_SENTINEL_TIMEOUT;
    tv.tv_usec = 0;

    for (i = 0; i < a->nhosts; i++) {
        c = redisConnectWithTimeout(a->hosts[i].host, a->hosts[i].port, tv);

        if (c == NULL || c->err) {
            fprintf(stderr, "matrix-join-ctl: sentinel %s:%d: %s\n",
                    a->hosts[i].host, a->hosts[i].port,
                    c ? c->errstr : "out of memory");
            if (c) {
                redisFree(c);
            }
            continue;
        }

        (void) redisSetTimeout(c, tv);

        if (r->sentinel_password != NULL) {
            reply = redisCommand(c, "AUTH %s", r->sentinel_password);

            if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
                fprintf(stderr, "matrix-join-ctl: sentinel %s:%d: AUTH "
                        "failed: %s (MXJ_REDIS_SENTINEL_PASSWORD)\n",
                        a->hosts[i].host, a->hosts[i].port, reply->str);
            }

            freeReplyObject(reply);
        }

        reply = redisCommand(c, "SENTINEL get-master-addr-by-name %s",
                             a->master);
        port = 0;

        if (reply != NULL && reply->type == REDIS_REPLY_ARRAY
            && reply->elements == 2
            && reply->element[0]->type == REDIS_REPLY_STRING
            && reply->element[1]->type == REDIS_REPLY_STRING
            && reply->element[0]->len < sizeof(master->host))
        {
            port = strtol(reply->element[1]->str, &end, 10);

            if (*end != '\0' || port < 1 || port > 65535) {
                port = 0;
            }
        }

        if (port == 0) {
            fprintf(stderr, "matrix-join-ctl: sentinel %s:%d does not name "
                    "master \"%s\"%s%s\n", a->hosts[i].host,
                    a->hosts[i].port, a->master,
                    reply == NULL ? ": " : "",
                    reply == NULL ? c->errstr : "");
        } else {
            memset(master, 0, sizeof(mx_redis_host_t));
            memcpy(master->host, reply->element[0]->str,
                   reply->element[0]->len);
            master->port = (int) port;
        }

        if (reply != NULL) {
            freeReplyObject(reply);
        }

        redisFree(c);

        if (port != 0) {
            return 0;
        }
    }

    fprintf(stderr, "matrix-join-ctl: no sentinel of \"%s\" named master "
            "\"%s\"\n", r->address, a->master);

    return -1;
}


static int mxj_redis_connect_once(mxj_redis_t *r);

static uint64_t  mxj_redis_nerrors;


void
mxj_redis_count_error(void)
{
    (void) __atomic_add_fetch(&mxj_redis_nerrors, 1, __ATOMIC_RELAXED);
}


uint64_t
mxj_redis_errors(void)
{
    return __atomic_load_n(&mxj_redis_nerrors, __ATOMIC_RELAXED);
}


int
mxj_redis_connect(mxj_redis_t *r)
{
    if (mxj_redis_connect_once(r) != 0) {
        mxj_redis_count_error();
        return -1;
    }

    return 0;
}


static int
mxj_redis_connect_once(mxj_redis_t *r)
{
    int               rc;
    char              err[128];
    redisReply       *reply;
    struct timeval    tv;
    mx_redis_host_t   h;
    mx_redis_addr_t  *a;

    tv.tv_sec = MXJ_REDIS_CONNECT_TIMEOUT;
    tv.tv_usec = 0;

    a = malloc(sizeof(mx_redis_addr_t));
    if (a == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    if (mx_redis_addr_parse(r->address, strlen(r->address), a, err,
                            sizeof(err))
        != 0)
    {
        fprintf(stderr, "matrix-join-ctl: invalid Redis address \"%s\": "
                "%s\n", r->address, err);
        free(a);
        return -1;
    }

    if (a->cluster) {
        rc = mxj_redis_cluster_connect(r, a);
        free(a);
        return rc;
    }

    /* with sentinels, a new lookup on every (re)connect: a failover */

    if (a->master[0] != '\0') {
        if (mxj_redis_sentinel(r, a, &h) != 0) {
            free(a);
            return -1;
        }

    } else {
        h = a->hosts[0];
    }

    if (h.port == 0) {
        r->c = redisConnectUnixWithTimeout(h.host, tv);

    } else {
        r->c = redisConnectWithTimeout(h.host, h.port, tv);
    }

    if (r->c == NULL) {
        fprintf(stderr, "matrix-join-ctl: cannot connect to Redis at %s: "
                "out of memory\n", r->address);
        free(a);
        return -1;
    }

    if (r->c->err) {
        fprintf(stderr, "matrix-join-ctl: cannot connect to Redis at %s: "
                "%s\n", r->address, r->c->errstr);
        mxj_redis_close(r);
        free(a);
        return -1;
    }

    tv.tv_sec = MXJ_REDIS_IO_TIMEOUT;

    if (redisSetTimeout(r->c, tv) != REDIS_OK) {
        fprintf(stderr, "matrix-join-ctl: cannot set the Redis timeout\n");
        mxj_redis_close(r);
        free(a);
        return -1;
    }

    if (r->password != NULL) {
        reply = mxj_redis_cmdf(r, "AUTH %s", r->password);

        if (reply == NULL) {
            mxj_redis_close(r);
            free(a);
            return -1;
        }

        freeReplyObject(reply);
    }

    if (r->db != 0) {
        reply = mxj_redis_cmdf(r, "SELECT %ld", r->db);

        if (reply == NULL) {
            mxj_redis_close(r);
            free(a);
            return -1;
        }

        freeReplyObject(reply);
    }

    /* a sentinel's answer may be stale: a demoted master is a replica */

    if (a->master[0] != '\0') {
        reply = mxj_redis_cmdf(r, "ROLE");

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
            || reply->elements == 0
            || reply->element[0]->type != REDIS_REPLY_STRING
            || strcmp(reply->element[0]->str, "master") != 0)
        {
            fprintf(stderr, "matrix-join-ctl: %s:%d, named by the sentinels "
                    "of \"%s\", is not a master (a failover under way?)\n",
                    h.host, h.port, a->master);
            if (reply != NULL) {
                freeReplyObject(reply);
            }
            mxj_redis_close(r);
            free(a);
            return -1;
        }

        freeReplyObject(reply);
    }

    free(a);

    return 0;
}


void
mxj_redis_copy(mxj_redis_t *to, const mxj_redis_t *from)
{
    *to = *from;
    to->c = NULL;
    to->cluster = NULL;
}


void
mxj_redis_close(mxj_redis_t *r)
{
    if (r->cluster != NULL) {
        /* the map too: the next connect loads it again */
        mxj_redis_cluster_free(r);
        return;
    }

    if (r->c != NULL) {
        redisFree(r->c);
        r->c = NULL;
    }
}


/*
 * A connection that failed is closed (r->c NULL) until the caller connects
 * again: a command on it fails with a message instead of reaching hiredis.
 */

static int
mxj_redis_connected(mxj_redis_t *r)
{
    if (r->c == NULL) {
        fprintf(stderr, "matrix-join-ctl: Redis at %s: not connected\n",
                r->address);
        return 0;
    }

    return 1;
}


redisReply *
mxj_redis_cmd(mxj_redis_t *r, int argc, const char **argv,
    const size_t *lens)
{
    redisReply  *reply;

    if (!mxj_redis_connected(r)) {
        return NULL;
    }

    reply = mxj_redis_argv(r, argc, argv, lens);

    if (reply == NULL) {
        mxj_redis_count_error();
    }

    if (!mxj_redis_reply_ok(r, reply)) {
        return NULL;
    }

    return reply;
}


redisReply *
mxj_redis_cmdf(mxj_redis_t *r, const char *fmt, ...)
{
    int          n, argc;
    char        *cmd;
    size_t       lens[64];
    va_list      args;
    const char  *argv[64];
    redisReply  *reply;

    if (!mxj_redis_connected(r)) {
        return NULL;
    }

    va_start(args, fmt);

    if (r->cluster == NULL) {
        reply = redisvCommand(r->c, fmt, args);

    } else {
        /* hiredis formats, and the arguments are routed as argv */
        reply = NULL;
        n = redisvFormatCommand(&cmd, fmt, args);

        if (n > 0) {
            argc = mxj_redis_cluster_argv(cmd, (size_t) n, 64, argv, lens);

            if (argc > 0) {
                reply = mxj_redis_argv(r, argc, argv, lens);
            }

            free(cmd);
        }

        if (n <= 0 || (argc <= 0 && r->c->err == 0)) {
            r->c->err = REDIS_ERR_OTHER;
            snprintf(r->c->errstr, sizeof(r->c->errstr),
                     "cannot format the command \"%.32s\"", fmt);
        }
    }

    va_end(args);

    if (reply == NULL) {
        mxj_redis_count_error();
    }

    if (!mxj_redis_reply_ok(r, reply)) {
        return NULL;
    }

    return reply;
}


redisReply *
mxj_redis_eval(redisContext *c, mx_lua_e which, int nkeys, int argc,
    const char **argv, const size_t *lens)
{
    redisReply  *reply;

    reply = mxj_redis_eval_raw(c, which, nkeys, argc, argv, lens);

    (void) mxj_redis_demoted(c, reply);

    return reply;
}


redisReply *
mxj_redis_eval_raw(redisContext *c, mx_lua_e which, int nkeys, int argc,
    const char **argv, const size_t *lens)
{
    int                     i, n;
    char                    num[16];
    size_t                 *l;
    const char            **a;
    redisReply             *reply;
    const mx_lua_script_t  *s;

    s = &mx_lua_scripts[which];
    n = argc + 3;

    a = malloc(n * sizeof(char *));
    l = malloc(n * sizeof(size_t));

    if (a == NULL || l == NULL) {
        free(a);
        free(l);
        c->err = REDIS_ERR_OOM;
        snprintf(c->errstr, sizeof(c->errstr), "out of memory");
        return NULL;
    }

    snprintf(num, sizeof(num), "%d", nkeys);

    a[0] = "EVALSHA";   l[0] = 7;
    a[1] = s->sha1;     l[1] = 40;
    a[2] = num;         l[2] = strlen(num);

    for (i = 0; i < argc; i++) {
        a[3 + i] = argv[i];
        l[3 + i] = (lens != NULL) ? lens[i] : strlen(argv[i]);
    }

    reply = redisCommandArgv(c, n, a, l);

    /* a fresh or flushed script cache: the text once, cached by Redis */

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(reply);

        a[0] = "EVAL";      l[0] = 4;
        a[1] = s->source;   l[1] = s->len;

        reply = redisCommandArgv(c, n, a, l);
    }

    free(a);
    free(l);

    if (reply == NULL) {
        mxj_redis_count_error();
    }

    return reply;
}


redisReply *
mxj_redis_script(mxj_redis_t *r, mx_lua_e which, int nkeys, int argc,
    const char **argv, const size_t *lens)
{
    redisReply  *reply;

    if (!mxj_redis_connected(r)) {
        return NULL;
    }

    reply = mxj_redis_evalr(r, which, nkeys, argc, argv, lens);

    if (!mxj_redis_reply_ok(r, reply)) {
        return NULL;
    }

    return reply;
}


redisReply *
mxj_redis_argv(mxj_redis_t *r, int argc, const char **argv,
    const size_t *lens)
{
    return r->cluster ? mxj_redis_cluster_cmd(r, argc, argv, lens, 0, 0, 0)
                      : redisCommandArgv(r->c, argc, argv, lens);
}


redisReply *
mxj_redis_evalr(mxj_redis_t *r, mx_lua_e which, int nkeys, int argc,
    const char **argv, const size_t *lens)
{
    redisReply  *reply;

    if (r->cluster == NULL) {
        return mxj_redis_eval(r->c, which, nkeys, argc, argv, lens);
    }

    reply = mxj_redis_cluster_cmd(r, argc, argv, lens, 1, which, nkeys);

    (void) mxj_redis_demoted(r->c, reply);

    return reply;
}


/* Prints what went wrong and frees the reply; 1 when all is well. */

static int
mxj_redis_reply_ok(mxj_redis_t *r, redisReply *reply)
{
    if (reply == NULL) {
        fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", r->address,
                r->c->errstr[0] ? r->c->errstr : "no reply");
        return 0;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", r->address,
                reply->str);
        (void) mxj_redis_demoted(r->c, reply);
        freeReplyObject(reply);
        return 0;
    }

    return 1;
}


int
mxj_redis_demoted(redisContext *c, const redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ERROR
        || (strstr(reply->str, "READONLY") == NULL
            && strncmp(reply->str, "MASTERDOWN", 10) != 0
            && !mx_cluster_retry_error(reply->str, reply->len)))
    {
        return 0;
    }

    /*
     * refuses further commands: the reconnect asks the sentinels again,
     * or loads the cluster's slot map again (a MOVED inside a caller's
     * pipeline or MULTI: a slot moved, or a master failed over)
     */

    if (c->err == 0) {
        mxj_redis_count_error();
        c->err = REDIS_ERR_OTHER;
        snprintf(c->errstr, sizeof(c->errstr), "not a master any more: %s",
                 reply->str);
    }

    return 1;
}


int
mxj_redis_schema(mxj_redis_t *r, int create)
{
    int          rc;
    char        *key;
    redisReply  *reply;

    key = mxj_global_key(r, MX_KEY_SCHEMA, NULL);
    if (key == NULL) {
        return -1;
    }

    rc = -1;

    reply = mxj_redis_cmdf(r, "GET %s", key);
    if (reply == NULL) {
        goto done;
    }

    if (reply->type == REDIS_REPLY_NIL && create) {
        freeReplyObject(reply);

        /* NX: a concurrent first load may win; the GET below judges */

        reply = mxj_redis_cmdf(r, "SET %s %s NX", key, MX_SCHEMA_VERSION);
        if (reply == NULL) {
            goto done;
        }

        freeReplyObject(reply);

        reply = mxj_redis_cmdf(r, "GET %s", key);
        if (reply == NULL) {
            goto done;
        }
    }

    if (reply->type == REDIS_REPLY_NIL) {
        rc = 1;

    } else if (reply->type == REDIS_REPLY_STRING
               && strcmp(reply->str, MX_SCHEMA_VERSION) == 0)
    {
        rc = 0;

    } else {
        fprintf(stderr, "matrix-join-ctl: unsupported Redis schema version "
                "\"%.64s\" under prefix \"%s\" (this build knows %s)\n",
                reply->type == REDIS_REPLY_STRING ? reply->str : "?",
                r->prefix, MX_SCHEMA_VERSION);
    }

    freeReplyObject(reply);

done:

    free(key);

    return rc;
}


char *
mxj_room_key(const mxj_redis_t *r, const char *room, const char *suffix)
{
    char    *key;
    size_t   n, plen, rlen;

    /* the old spelling (":meta") would make "P{R}::meta" */

    if (suffix[0] == ':') {
        fprintf(stderr, "matrix-join-ctl: key suffix \"%s\" starts with a "
                "colon\n", suffix);
        return NULL;
    }

    plen = strlen(r->prefix);
    rlen = strlen(room);
    n = mx_schema_room_key(NULL, 0, r->prefix, plen, room, rlen, suffix) + 1;

    key = malloc(n);
    if (key == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return NULL;
    }

    mx_schema_room_key(key, n, r->prefix, plen, room, rlen, suffix);

    return key;
}


char *
mxj_global_key(const mxj_redis_t *r, const char *name, const char *arg)
{
    char    *key;
    size_t   n, plen, alen;

    plen = strlen(r->prefix);
    alen = (arg != NULL) ? strlen(arg) : 0;
    n = mx_schema_global_key(NULL, 0, r->prefix, plen, name, arg, alen) + 1;

    key = malloc(n);
    if (key == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return NULL;
    }

    mx_schema_global_key(key, n, r->prefix, plen, name, arg, alen);

    return key;
}
