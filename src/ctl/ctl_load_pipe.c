/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl load: the pipeline the staging keys are written
 * through. Commands of at most MXJ_PIPE_ARGS arguments or
 * MXJ_PIPE_ARG_BYTES bytes; replies read back every MXJ_PIPE_CMDS commands
 * or MXJ_PIPE_BYTES bytes, so neither side buffers a whole snapshot.
 */

#include <stdio.h>
#include <string.h>

#include "ctl_load_run.h"
#include "mx_cluster.h"


int
mxj_pipe_start(mxj_pipe_t *p, const char *cmd, const char *key)
{
    p->argv[0] = cmd;
    p->lens[0] = strlen(cmd);
    p->argv[1] = key;
    p->lens[1] = strlen(key);
    p->argc = 2;
    p->arg_bytes = 0;

    return 0;
}


/*
 * Adds an argument; a full command is sent and a new one started with the
 * same cmd and key. Field/value pairs stay together: MXJ_PIPE_ARGS is even
 * and a command is only cut after an even number of arguments.
 */
int
mxj_pipe_arg(mxj_pipe_t *p, const char *cmd, const char *key,
    const char *arg, size_t len)
{
    p->argv[p->argc] = arg;
    p->lens[p->argc] = len;
    p->argc++;
    p->arg_bytes += len;

    if (p->argc % 2 == 0
        && (p->argc >= MXJ_PIPE_ARGS || p->arg_bytes >= MXJ_PIPE_ARG_BYTES))
    {
        if (mxj_pipe_end(p) != 0) {
            return -1;
        }

        return mxj_pipe_start(p, cmd, key);
    }

    return 0;
}


int
mxj_pipe_end(mxj_pipe_t *p)
{
    unsigned  slot;

    if (p->argc <= 2) {
        /* nothing to send (a hash with no field) */
        p->argc = 0;
        return 0;
    }

    if (p->r->cluster != NULL) {
        /* one node's pipeline: a key of another slot waits for the
         * replies due (a room's keys share one slot) */

        slot = mx_cluster_slot(p->argv[1], p->lens[1]);

        if (p->pending && slot != p->slot && mxj_pipe_drain(p) != 0) {
            return -1;
        }

        if (p->pending == 0
            && mxj_redis_route(p->r, p->argv[1], p->lens[1]) != 0)
        {
            return -1;
        }

        p->slot = slot;
    }

    if (redisAppendCommandArgv(p->r->c, (int) p->argc, p->argv, p->lens)
        != REDIS_OK)
    {
        fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n", p->r->address,
                p->r->c->errstr);
        return -1;
    }

    p->pending++;
    p->pending_bytes += p->arg_bytes;
    p->argc = 0;
    p->arg_bytes = 0;

    if (p->pending >= MXJ_PIPE_CMDS || p->pending_bytes >= MXJ_PIPE_BYTES) {
        return mxj_pipe_drain(p);
    }

    return 0;
}


int
mxj_pipe_drain(mxj_pipe_t *p)
{
    int          rc;
    void        *v;
    redisReply  *reply;

    rc = 0;

    while (p->pending) {
        if (redisGetReply(p->r->c, &v) != REDIS_OK) {
            mxj_redis_count_error();
            fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n",
                    p->r->address, p->r->c->errstr);
            return -1;
        }

        p->pending--;
        reply = v;

        if (reply->type == REDIS_REPLY_ERROR && rc == 0) {
            fprintf(stderr, "matrix-join-ctl: Redis at %s: %s\n",
                    p->r->address, reply->str);
            rc = -1;
        }

        freeReplyObject(reply);
    }

    p->pending_bytes = 0;

    if (p->progress && p->total_bytes) {
        fprintf(stderr, "\r\033[Kmatrix-join-ctl: writing: %3d%%",
                (int) ((p->done_bytes * 100) / p->total_bytes));
    }

    return rc;
}
