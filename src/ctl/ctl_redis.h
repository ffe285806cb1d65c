/*
 * Copyright (C) nginx-matrix-join authors.
 * What load, show and rooms share: the Redis options, a blocking hiredis
 * connection (the CLI may block, the nginx worker never does), the key
 * names of src/core/mx_schema.h and the schema version check.
 */

#ifndef MXJ_CTL_REDIS_H
#define MXJ_CTL_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "mx_lua.h"
#include "mx_redis_addr.h"
#include "mx_schema.h"


typedef struct mxj_redis_cluster_s  mxj_redis_cluster_t;


typedef struct {
    const char     *address;    /* mx_redis_addr.h: an address, or */
                                /* "sentinel:NAME host:port,..." */
    const char     *prefix;
    const char     *password;   /* --password or MXJ_REDIS_PASSWORD */
    const char     *sentinel_password;  /* MXJ_REDIS_SENTINEL_PASSWORD */
    long            db;
    redisContext   *c;          /* with a cluster: the node routed to */
    mxj_redis_cluster_t  *cluster;  /* ctl_redis_cluster.c; NULL without */
} mxj_redis_t;


void mxj_redis_init(mxj_redis_t *r);

/*
 * Sets the Redis option --name (redis, prefix, password or db) of the
 * command line (ctl_opt.c). 0, or -1 when the value is invalid (printed).
 */
int mxj_redis_set(mxj_redis_t *r, const char *name, const char *value);

/*
 * Connects (to the master a sentinel names now, with sentinel:NAME),
 * authenticates, selects the db; prints why not. 0 or -1. Reconnecting
 * after an error (forward, sync) asks the sentinels again.
 */
int mxj_redis_connect(mxj_redis_t *r);

void mxj_redis_close(mxj_redis_t *r);

/*
 * One command, waiting for its reply. Returns the reply, or NULL with the
 * reason printed (connection error or an error reply).
 */
redisReply *mxj_redis_cmd(mxj_redis_t *r, int argc, const char **argv,
    const size_t *lens);

/* Same with printf-style hiredis formatting. */
redisReply *mxj_redis_cmdf(mxj_redis_t *r, const char *fmt, ...);

/*
 * Runs the script of src/lua `which` as the module does: EVALSHA with the
 * embedded SHA-1, EVAL with its text after a NOSCRIPT reply. keys and
 * args (lens may be NULL: strlen) follow in argv, nkeys of them keys.
 * Returns the reply as hiredis gave it, an error reply included, or NULL
 * when the connection failed (c->err says why). Prints nothing.
 */
redisReply *mxj_redis_eval(redisContext *c, mx_lua_e which, int nkeys,
    int argc, const char **argv, const size_t *lens);

/*
 * One command, or a script as mxj_redis_eval() runs it, on r: routed by
 * its first key and redirected with a cluster. The reply as Redis gave
 * it, an error reply included, or NULL when a connection failed. Prints
 * nothing (the forwarder's wrappers log their own way).
 */
redisReply *mxj_redis_argv(mxj_redis_t *r, int argc, const char **argv,
    const size_t *lens);
redisReply *mxj_redis_evalr(mxj_redis_t *r, mx_lua_e which, int nkeys,
    int argc, const char **argv, const size_t *lens);

/* mxj_redis_eval() with mxj_redis_cmd()'s error handling. */
redisReply *mxj_redis_script(mxj_redis_t *r, mx_lua_e which, int nkeys,
    int argc, const char **argv, const size_t *lens);

/*
 * A READONLY or MASTERDOWN error reply (a master demoted by a failover, or
 * cut off from its replicas): marks c failed (c->err), so that the
 * callers that reconnect after a failure (forward, sync) make a new
 * connection, through a new Sentinel lookup. 1 when it did.
 */
int mxj_redis_demoted(redisContext *c, const redisReply *reply);

/*
 * Checks P schema. With create set, an absent key is set to the version
 * this build knows. Returns 0 when it matches, 1 when it is absent (and
 * not created), -1 on any other value (printed) or error.
 */
int mxj_redis_schema(mxj_redis_t *r, int create);

/*
 * malloc'ed "P{R}:suffix" (mx_schema_room_key), suffix an MX_KEY_ name
 * without a colon; NULL when out of memory (printed).
 */
char *mxj_room_key(const mxj_redis_t *r, const char *room,
    const char *suffix);

/*
 * The process's Redis errors, for forward's and sync's metrics: a
 * connection that could not be made, a command that got no reply (the
 * connection failed, a timeout), a master found demoted. Error replies
 * are their callers' (some are expected) and not counted. Any thread.
 */
void mxj_redis_count_error(void);
uint64_t mxj_redis_errors(void);

/*
 * Redis Cluster (--redis cluster:host:port ..., ctl_redis_cluster.c).
 * mxj_redis_cmd(), mxj_redis_cmdf() and mxj_redis_script() route each
 * command by its first key and follow MOVED and ASK; a caller that drives
 * r->c itself (a pipeline, a MULTI block) first routes it with one of the
 * keys it will use: all of them must share its slot (one room's keys do).
 * Without a cluster these do nothing. mxj_redis_route(): 0, or -1 when the
 * node cannot be reached (printed; r->c is marked failed).
 */
int mxj_redis_route(mxj_redis_t *r, const char *key, size_t len);

/* The masters that own slots now (1 without a cluster), and routing r->c
 * to the i-th of them: for SCAN, which walks one node. */
size_t mxj_redis_masters(mxj_redis_t *r);
int mxj_redis_route_master(mxj_redis_t *r, size_t i);

/* A thread's copy of another's options: no connection, no cluster map. */
void mxj_redis_copy(mxj_redis_t *to, const mxj_redis_t *from);

/* ctl_redis.c's, behind mxj_redis_connect(), _argv() and _evalr() */
int mxj_redis_cluster_connect(mxj_redis_t *r, const mx_redis_addr_t *a);
void mxj_redis_cluster_free(mxj_redis_t *r);
redisReply *mxj_redis_cluster_cmd(mxj_redis_t *r, int argc,
    const char **argv, const size_t *lens, int script, mx_lua_e which,
    int nkeys);
int mxj_redis_cluster_argv(char *cmd, size_t len, int max,
    const char **argv, size_t *lens);
/* mxj_redis_eval() without the demoted check (a MOVED is followed) */
redisReply *mxj_redis_eval_raw(redisContext *c, mx_lua_e which, int nkeys,
    int argc, const char **argv, const size_t *lens);

/* malloc'ed "P" + name + arg (arg may be NULL): mx_schema_global_key. */
char *mxj_global_key(const mxj_redis_t *r, const char *name,
    const char *arg);

#endif /* MXJ_CTL_REDIS_H */
