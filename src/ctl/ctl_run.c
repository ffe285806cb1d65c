/*
 * Copyright (C) nginx-matrix-join authors.
 * The stop, the sliced sleep and the signal thread of forward and sync
 * (ctl_run.h).
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_run.h"


#define MXJ_RUN_FWD_LOG_MAX  2048


static void *mxj_run_signals(void *data);


int
mxj_run_start(mxj_run_t *run, clockid_t clock, mxj_run_log_pt log,
    const char *stopping, const char *again)
{
    sigset_t            set;
    pthread_t           tid;
    pthread_condattr_t  attr;

    run->stop = 0;
    run->log = log;
    run->stopping = stopping;
    run->again = again;

    signal(SIGPIPE, SIG_IGN);

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    pthread_mutex_init(&run->mutex, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, clock);
    pthread_cond_init(&run->cond, &attr);
    pthread_condattr_destroy(&attr);

    if (pthread_create(&tid, NULL, mxj_run_signals, run) != 0) {
        fprintf(stderr, "matrix-join-ctl: cannot start a thread\n");
        return -1;
    }

    pthread_detach(tid);

    return 0;
}


int
mxj_run_stopping(mxj_run_t *run)
{
    return __atomic_load_n(&run->stop, __ATOMIC_ACQUIRE);
}


void
mxj_run_stop(mxj_run_t *run)
{
    pthread_mutex_lock(&run->mutex);
    __atomic_store_n(&run->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&run->cond);
    pthread_mutex_unlock(&run->mutex);
}


int
mxj_run_sleep(mxj_run_t *run, long ms)
{
    long             slice;
    struct timespec  ts;

    while (ms > 0) {
        if (mxj_run_stopping(run)) {
            return 1;
        }

        slice = ms < MXJ_RUN_SLICE_MS ? ms : MXJ_RUN_SLICE_MS;
        ts.tv_sec = slice / 1000;
        ts.tv_nsec = (slice % 1000) * 1000000;
        nanosleep(&ts, NULL);
        ms -= slice;
    }

    return mxj_run_stopping(run);
}


static void *
mxj_run_signals(void *data)
{
    int          signo;
    sigset_t     set;
    mxj_run_t   *run = data;
    const char  *name;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);

    for ( ;; ) {
        if (sigwait(&set, &signo) != 0) {
            continue;
        }

        name = (signo == SIGTERM) ? "SIGTERM" : "SIGINT";

        if (mxj_run_stopping(run) && run->again != NULL) {
            run->log("%s: %s", name, run->again);
            continue;
        }

        run->log("%s: %s", name, run->stopping);
        mxj_run_stop(run);
    }

    return NULL;
}


int64_t
mxj_run_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int64_t
mxj_run_wall_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


void
mxj_run_vlog(const char *prefix, size_t max, const char *fmt, va_list args)
{
    int     n;
    char    line[MXJ_RUN_LOG_MAX];
    size_t  plen;

    if (max > sizeof(line)) {
        max = sizeof(line);
    }

    plen = strlen(prefix);
    memcpy(line, prefix, plen);

    n = vsnprintf(line + plen, max - plen - 1, fmt, args);

    if (n < 0) {
        return;
    }

    n += plen;

    if (n > (int) max - 2) {
        n = max - 2;
    }

    line[n++] = '\n';

    fwrite(line, 1, n, stderr);
}


void
mxj_fwd_log(const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    mxj_run_vlog("forward: ", MXJ_RUN_FWD_LOG_MAX, fmt, args);
    va_end(args);
}


void
mxj_sync_log(const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    mxj_run_vlog("sync: ", MXJ_RUN_LOG_MAX, fmt, args);
    va_end(args);
}


int
mxj_run_number(const char *cmd, const char *name, const char *value,
    long min, long max, long *out)
{
    char  *end;
    long   n;

    errno = 0;
    n = strtol(value, &end, 10);

    if (errno || *value == '\0' || *end != '\0' || n < min || n > max) {
        fprintf(stderr, "matrix-join-ctl: %s: invalid %s \"%s\" "
                "(%ld to %ld)\n", cmd, name, value, min, max);
        return -1;
    }

    *out = n;

    return 0;
}
