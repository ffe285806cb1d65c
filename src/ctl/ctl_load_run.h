/*
 * Copyright (C) nginx-matrix-join authors.
 * What the files of a load share: mxj_load_snapshot() (ctl_load_snapshot.c)
 * takes the lock, has the staging keys written (ctl_load_stage.c) through
 * a pipeline (ctl_load_pipe.c), switches them in and finishes.
 */

#ifndef MXJ_CTL_LOAD_RUN_H
#define MXJ_CTL_LOAD_RUN_H

#include <stdint.h>

#include "ctl_load.h"
#include "ctl_redis.h"
#include "mx_snapshot.h"


#define MXJ_LOAD_NKEYS        19
#define MXJ_LOAD_LOCK_MS      "600000"
#define MXJ_LOAD_PROGRESS_MIN (8 * 1024 * 1024)   /* bytes of snapshot */

/* a pipeline: commands of at most this many arguments or bytes, replies
 * read back every so many commands or bytes */
#define MXJ_LOAD_EXTREM_LEN   128     /* {"depth":N,"sha256":"..."} */
#define MXJ_LOAD_MCHUNK_LEN   72      /* c:o:l:a, three size_t and a bit */

#define MXJ_PIPE_ARGS         2048
#define MXJ_PIPE_ARG_BYTES    (1024 * 1024)
#define MXJ_PIPE_CMDS         64
#define MXJ_PIPE_BYTES        (16 * 1024 * 1024)


enum {
    MXJ_K_META = 0, MXJ_K_STATE, MXJ_K_MEMBER, MXJ_K_PDU, MXJ_K_STATE_NM,
    MXJ_K_STATE_M, MXJ_K_AUTH, MXJ_K_EXTREM, MXJ_K_SERVERS, MXJ_K_SERVER_USER,
    MXJ_K_MCHUNK, MXJ_K_AUTH_NM, MXJ_K_PARTIAL, MXJ_K_MEVENT, MXJ_K_EDGE,
    MXJ_K_EDGE_PDU
};

/* the names of those keys, in that order (ctl_load_snapshot.c) */
extern const char  *mxj_load_names[MXJ_LOAD_NKEYS];


typedef struct {
    mxj_redis_t    *r;
    const char    **argv;
    size_t         *lens;
    size_t          argc;
    size_t          arg_bytes;
    size_t          pending;        /* commands sent, replies not read */
    unsigned        slot;           /* a cluster's: the pending ones' */
    size_t          pending_bytes;
    uint64_t        done_bytes;     /* for the progress line */
    uint64_t        total_bytes;
    int             progress;
} mxj_pipe_t;


typedef struct {
    mxj_redis_t          *r;
    const mx_snapshot_t  *snap;
    mxj_load_opts_t      *opts;
    char                 *cur[MXJ_LOAD_NKEYS];
    char                 *load[MXJ_LOAD_NKEYS];
    char                 *old[MXJ_LOAD_NKEYS];
    char                 *lock;
    char                  token[33];
    int                   locked;
    int                   progress;
} mxj_load_t;


/* ctl_load_stage.c */
int mxj_load_stage(mxj_load_t *ld);

/* ctl_load_pipe.c */
int mxj_pipe_start(mxj_pipe_t *p, const char *cmd, const char *key);
int mxj_pipe_arg(mxj_pipe_t *p, const char *cmd, const char *key,
    const char *arg, size_t len);
int mxj_pipe_end(mxj_pipe_t *p);
int mxj_pipe_drain(mxj_pipe_t *p);

#endif /* MXJ_CTL_LOAD_RUN_H */
