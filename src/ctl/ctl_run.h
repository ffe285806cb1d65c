/*
 * Copyright (C) nginx-matrix-join authors.
 * What the long-running commands (forward, sync) share: a stop that is
 * set once and seen by every thread, the lock and condition their
 * threads wait on, a sleep that a stop cuts short, and one thread that
 * takes SIGTERM and SIGINT so that no other thread's read is ever
 * interrupted by them.
 */

#ifndef MXJ_CTL_RUN_H
#define MXJ_CTL_RUN_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>


#define MXJ_RUN_SLICE_MS  100       /* sleeps look for a stop this often */
#define MXJ_RUN_LOG_MAX   4096      /* the longest log line, newline included */


typedef void (*mxj_run_log_pt)(const char *fmt, ...);

typedef struct {
    pthread_mutex_t     mutex;      /* also the command's own state's */
    pthread_cond_t      cond;       /* broadcast on a stop, and by the command */
    int                 stop;       /* __atomic */
    mxj_run_log_pt      log;
    const char         *stopping;   /* logged after "SIGTERM: " at the first */
    const char         *again;      /* at later ones; NULL: stopping again */
} mxj_run_t;


/*
 * Ignores SIGPIPE (a peer closing its socket must not kill us), blocks
 * SIGTERM and SIGINT in this thread and so in every thread made after
 * it, makes the lock and the condition (timed waits on it use clock) and
 * starts the thread that turns those signals into a stop. Call before
 * any other thread is made. 0, or -1 (said on stderr).
 */
int mxj_run_start(mxj_run_t *run, clockid_t clock, mxj_run_log_pt log,
    const char *stopping, const char *again);

/* 1 once a stop was asked for. */
int mxj_run_stopping(mxj_run_t *run);

/* Asks every thread to stop: sets the flag, wakes the condition. */
void mxj_run_stop(mxj_run_t *run);

/* Sleeps ms in slices of MXJ_RUN_SLICE_MS; 1 when a stop cut it short
 * (or came during it). */
int mxj_run_sleep(mxj_run_t *run, long ms);

/* The clocks, in milliseconds. */
int64_t mxj_run_mono_ms(void);
int64_t mxj_run_wall_ms(void);

/*
 * One log line on standard error, "<prefix><message>\n", written with one
 * write so that the threads' lines do not mix; cut at max bytes
 * (at most MXJ_RUN_LOG_MAX).
 */
void mxj_run_vlog(const char *prefix, size_t max, const char *fmt,
    va_list args);

/*
 * The log lines of forward ("forward: <message>") and sync ("sync: "):
 * here, below every file of each command, so that none calls up into the
 * command's own file.
 */
void mxj_fwd_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void mxj_sync_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/*
 * A numeric option of command cmd: value must be a whole decimal number
 * in [min, max]. 0 with *out set, or -1 (said on stderr).
 */
int mxj_run_number(const char *cmd, const char *name, const char *value,
    long min, long max, long *out);

#endif /* MXJ_CTL_RUN_H */
