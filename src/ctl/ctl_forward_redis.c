/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl forward: Redis as the forwarder's threads use it, each
 * its own connection: reconnects with a backoff, commands and scripts
 * whose failures are logged and mark the connection for a reconnect.
 */

#include <string.h>

#include "ctl_forward_run.h"


/*
 * Makes sure r is connected, reconnecting with a backoff (logged) for as
 * long as it takes. 0, or -1 when a stop came first.
 */

int
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

        /* --once delivers what is there: with Redis gone, nothing is */

        if (fwd->once && *failures >= MXJ_FWD_ONCE_TRIES) {
            mxj_fwd_log("redis at %s unreachable after %d tries, giving up "
                        "(--once)", r->address, *failures);
            __atomic_store_n(&fwd->gave_up, 1, __ATOMIC_SEQ_CST);
            mxj_run_stop(&fwd->run);
            break;
        }

        mxj_fwd_log("redis at %s unavailable, connecting again in %.1f s",
                    r->address, ms / 1000.0);

        mxj_run_sleep(&fwd->run, ms);
    }

    return -1;
}


/* One command; error replies are the caller's; NULL (logged) when the
 * connection failed (then r->c->err is set). */

redisReply *
mxj_fwd_cmd(mxj_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    redisReply  *reply;

    if (r->c == NULL || r->c->err) {
        return NULL;
    }

    reply = mxj_redis_argv(r, argc, argv, lens);

    if (reply == NULL) {
        mxj_redis_count_error();
    }

    if (mxj_redis_demoted(r->c, reply)) {
        mxj_fwd_log("redis at %s: %s", r->address, r->c->errstr);
    }

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

redisReply *
mxj_fwd_script(mxj_redis_t *r, mx_lua_e which, int nkeys, int argc,
    const char **argv, const size_t *lens)
{
    redisReply  *reply;

    if (r->c == NULL || r->c->err) {
        return NULL;
    }

    reply = mxj_redis_evalr(r, which, nkeys, argc, argv, lens);

    if (reply == NULL) {
        mxj_fwd_log("redis at %s: %s", r->address,
                    r->c->errstr[0] ? r->c->errstr : "no reply");

        if (r->c->err == 0) {
            r->c->err = REDIS_ERR_OTHER;
        }
    }

    return reply;
}


int
mxj_fwd_is_error(redisReply *reply, const char *prefix)
{
    return reply->type == REDIS_REPLY_ERROR
           && strncmp(reply->str, prefix, strlen(prefix)) == 0;
}


const char *
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
