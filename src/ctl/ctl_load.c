/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl load --redis ADDRESS [--prefix P] SNAPSHOT.json
 *
 * Checks the whole snapshot first (nothing is written for a bad one),
 * then loads it with mxj_load_snapshot() (ctl_load_snapshot.c), the half
 * shared with sync, which builds its snapshot document in memory.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ctl.h"
#include "ctl_load_run.h"
#include "ctl_opt.h"


typedef struct {
    const char     *path;
} mxj_load_cmd_t;


static const mxj_opt_t  mxj_load_opts[] = {
    { NULL, 0, 0 }
};


static int mxj_load_set(void *conf, int id, const char *value);
static int mxj_load_usage(void);
static char *mxj_load_read(const char *path, size_t *len);
static void mxj_load_progress(void *data, size_t done, size_t total);
static double mxj_now(void);


int
mxj_cmd_load(int argc, char **argv)
{
    int                rc;
    char              *doc;
    size_t             len;
    double             t0;
    mxj_redis_t        r;
    mx_snapshot_t     *snap;
    mxj_load_cmd_t     cmd;
    mxj_load_opts_t    opts;
    mx_snapshot_err_t  err;

    t0 = mxj_now();

    memset(&cmd, 0, sizeof(mxj_load_cmd_t));
    memset(&opts, 0, sizeof(mxj_load_opts_t));
    mxj_redis_init(&r);

    if (mxj_opt_parse("load", argc, argv, &r, mxj_load_opts, mxj_load_set,
                      &cmd)
        != 0)
    {
        return mxj_load_usage();
    }

    if (cmd.path == NULL || r.address == NULL) {
        return mxj_load_usage();
    }

    if (mx_crypto_init() != 0) {
        fprintf(stderr, "matrix-join-ctl: sodium_init() failed\n");
        return MXJ_EXIT_FAIL;
    }

    /* 1. check everything before Redis is touched */

    doc = mxj_load_read(cmd.path, &len);
    if (doc == NULL) {
        return MXJ_EXIT_FAIL;
    }

    opts.progress = isatty(STDERR_FILENO) && len >= MXJ_LOAD_PROGRESS_MIN;

    rc = mx_snapshot_parse(doc, len, opts.progress ? mxj_load_progress : NULL,
                           &cmd, &snap, &err);
    free(doc);

    if (opts.progress) {
        fprintf(stderr, "\r\033[K");
    }

    if (rc != 0) {
        fprintf(stderr, "matrix-join-ctl: %s: %s: %s\n", cmd.path, err.where,
                err.reason);
        return MXJ_EXIT_FAIL;
    }

    /* 2. load */

    rc = MXJ_EXIT_FAIL;

    if (mxj_redis_connect(&r) != 0) {
        goto done;
    }

    if (mxj_load_snapshot(&r, snap, &opts) != 0) {
        goto done;
    }

    printf("loaded %s: version %s, %zu state events, %zu members, "
           "%zu auth chain events, %zu forward extremities, %llu bytes "
           "in %.2f s\n",
           snap->room_id, snap->rv->id, snap->state_events,
           snap->members, snap->auth_chain, snap->nextrem,
           (unsigned long long) snap->bytes, mxj_now() - t0);

    rc = (fflush(stdout) == 0) ? MXJ_EXIT_OK : MXJ_EXIT_FAIL;

done:

    mxj_redis_close(&r);
    mx_snapshot_free(snap);

    return rc;
}


/* The one operand: the snapshot's file. */

static int
mxj_load_set(void *conf, int id, const char *value)
{
    mxj_load_cmd_t *cmd = conf;

    if (cmd->path != NULL) {
        fprintf(stderr, "matrix-join-ctl: load: one snapshot at a time\n");
        return -1;
    }

    cmd->path = value;

    return 0;
}


static int
mxj_load_usage(void)
{
    fprintf(stderr, "usage: matrix-join-ctl load --redis ADDRESS "
            "[--prefix P] [--password PW] [--db N] SNAPSHOT.json\n");

    return MXJ_EXIT_USAGE;
}


static char *
mxj_load_read(const char *path, size_t *len)
{
    char         *buf;
    FILE         *f;
    size_t        n;
    struct stat   st;

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "matrix-join-ctl: %s: cannot open: %s\n", path,
                strerror(errno));
        return NULL;
    }

    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "matrix-join-ctl: %s: not a regular file\n", path);
        fclose(f);
        return NULL;
    }

    buf = malloc((size_t) st.st_size + 1);
    if (buf == NULL) {
        fprintf(stderr, "matrix-join-ctl: %s: out of memory for %lld "
                "bytes\n", path, (long long) st.st_size);
        fclose(f);
        return NULL;
    }

    n = fread(buf, 1, (size_t) st.st_size, f);

    if (n != (size_t) st.st_size || ferror(f)) {
        fprintf(stderr, "matrix-join-ctl: %s: cannot read: %s\n", path,
                ferror(f) ? strerror(errno) : "file changed size");
        free(buf);
        fclose(f);
        return NULL;
    }

    fclose(f);

    buf[n] = '\0';
    *len = n;

    return buf;
}


static void
mxj_load_progress(void *data, size_t done, size_t total)
{
    mxj_load_cmd_t  *cmd;

    cmd = data;

    fprintf(stderr, "\r\033[Kmatrix-join-ctl: checking %s: %3d%%", cmd->path,
            total ? (int) ((done * 100) / total) : 100);
}


static double
mxj_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}
