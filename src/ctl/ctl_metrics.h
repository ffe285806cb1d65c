/*
 * Copyright (C) nginx-matrix-join authors.
 * --metrics HOST:PORT of forward and sync: an HTTP listener on
 * libmicrohttpd, in a thread of its own, answering GET /metrics in the
 * Prometheus text exposition format 0.0.4, and what the commands write
 * the format with. The listener never touches Redis or the homeserver:
 * the command's render function formats what its own threads counted
 * (under its own lock, held only while copying numbers).
 */

#ifndef MXJ_CTL_METRICS_H
#define MXJ_CTL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "mx_util.h"


#define MXJ_METRICS_PATH     "/metrics"
#define MXJ_METRICS_CONTENT  "text/plain; version=0.0.4; charset=utf-8"

/* the histograms' upper bounds, in seconds (+Inf follows) */
#define MXJ_METRICS_BUCKETS  14


typedef struct {
    uint64_t                  le[MXJ_METRICS_BUCKETS];  /* not cumulative */
    uint64_t                  count;
    double                    sum;                      /* seconds */
} mxj_metrics_hist_t;


/* The answer's text, appended to out: 0, or -1 (out of memory). */
typedef int (*mxj_metrics_render_pt)(void *data, mx_buf_t *out);

typedef struct {
    const char               *cmd;          /* "forward", "sync" */
    const char               *address;      /* --metrics, NULL: none */
    int                       fd;
    struct MHD_Daemon        *daemon;
    mxj_metrics_render_pt     render;
    void                     *data;
} mxj_metrics_t;


/* --metrics VALUE of cmd, checked (a usage error when not HOST:PORT). */
int mxj_metrics_set(mxj_metrics_t *m, const char *cmd, const char *value);

/*
 * Binds the socket (before the command's work starts, so that a port
 * taken fails at once), then starts the listener's thread. Nothing to do
 * without --metrics. 0, or -1 (said on stderr).
 */
int mxj_metrics_bind(mxj_metrics_t *m);
int mxj_metrics_start(mxj_metrics_t *m, mxj_metrics_render_pt render,
    void *data);
void mxj_metrics_stop(mxj_metrics_t *m);

/* A histogram observation; the caller holds the lock it lives under. */
void mxj_metrics_observe(mxj_metrics_hist_t *h, double seconds);

/*
 * The text: "# HELP" and "# TYPE" of a metric, then its samples. A
 * sample has no label (label NULL) or one, whose value is escaped as the
 * format says. The histogram writes its cumulative _bucket series, _sum
 * and _count. Each returns 0, or -1 (out of memory).
 */
int mxj_metrics_head(mx_buf_t *b, const char *name, const char *type,
    const char *help);
int mxj_metrics_u64(mx_buf_t *b, const char *name, const char *label,
    const char *value, uint64_t v);
int mxj_metrics_double(mx_buf_t *b, const char *name, const char *label,
    const char *value, double v);
int mxj_metrics_hist(mx_buf_t *b, const char *name, const char *help,
    const mxj_metrics_hist_t *h);

#endif /* MXJ_CTL_METRICS_H */
