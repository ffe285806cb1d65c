/*
 * Copyright (C) nginx-matrix-join authors.
 * --metrics of forward and sync (ctl_metrics.h): the listener, one
 * thread of libmicrohttpd's, and the exposition format's writing.
 *
 * The thread serves GET (and HEAD) /metrics with the text the command's
 * render function makes from its counters; anything else is 404, another
 * method 405. At most MXJ_METRICS_CONNS connections, each closed after
 * MXJ_METRICS_IDLE_S of silence: a scraper that hangs holds nothing the
 * command's own threads need.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "ctl_listen.h"
#include "ctl_metrics.h"
#include "ctl_run.h"


#define MXJ_METRICS_CONNS    8
#define MXJ_METRICS_IDLE_S   10


static const double  mxj_metrics_bounds[MXJ_METRICS_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
};


static enum MHD_Result mxj_metrics_handler(void *cls,
    struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload, size_t *upload_size,
    void **ctx);
static enum MHD_Result mxj_metrics_answer(struct MHD_Connection *c,
    unsigned status, const char *type, const char *body, size_t len);
static void mxj_metrics_mhd_log(void *cls, const char *fmt, va_list ap);
static int mxj_metrics_printf(mx_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int mxj_metrics_name(mx_buf_t *b, const char *name,
    const char *label, const char *value);


/* --- the listener ------------------------------------------------------ */

int
mxj_metrics_set(mxj_metrics_t *m, const char *cmd, const char *value)
{
    if (mxj_listen_check(cmd, "--metrics", value) != 0) {
        return -1;
    }

    m->cmd = cmd;
    m->address = value;
    m->fd = -1;

    return 0;
}


int
mxj_metrics_bind(mxj_metrics_t *m)
{
    if (m->address == NULL) {
        return 0;
    }

    m->fd = mxj_listen_bind(m->cmd, "--metrics", m->address);

    return m->fd < 0 ? -1 : 0;
}


int
mxj_metrics_start(mxj_metrics_t *m, mxj_metrics_render_pt render,
    void *data)
{
    if (m->address == NULL) {
        return 0;
    }

    m->render = render;
    m->data = data;

    m->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        mxj_metrics_handler, m,
        MHD_OPTION_EXTERNAL_LOGGER, mxj_metrics_mhd_log, m,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket) m->fd,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) MXJ_METRICS_IDLE_S,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) MXJ_METRICS_CONNS,
        MHD_OPTION_END);

    if (m->daemon == NULL) {
        fprintf(stderr, "matrix-join-ctl: %s: the metrics listener on %s "
                "did not start\n", m->cmd, m->address);
        return -1;
    }

    m->fd = -1;                     /* the daemon's, closed by it */

    return 0;
}


void
mxj_metrics_stop(mxj_metrics_t *m)
{
    if (m->daemon != NULL) {
        MHD_stop_daemon(m->daemon);
        m->daemon = NULL;
    }

    if (m->fd >= 0) {
        close(m->fd);
        m->fd = -1;
    }
}


static enum MHD_Result
mxj_metrics_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **ctx)
{
    static int        head;
    mxj_metrics_t    *m = cls;
    enum MHD_Result   rc;
    mx_buf_t          out = MX_BUF_INIT;

    /* the head first: a body (none is wanted) is read and dropped */

    if (*ctx == NULL) {
        *ctx = &head;
        return MHD_YES;
    }

    if (*upload_size > 0) {
        *upload_size = 0;
        return MHD_YES;
    }

    if (strcmp(url, MXJ_METRICS_PATH) != 0) {
        return mxj_metrics_answer(c, MHD_HTTP_NOT_FOUND, "text/plain",
                                  "not found\n", 10);
    }

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0
        && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    {
        return mxj_metrics_answer(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                                  "text/plain", "only GET\n", 9);
    }

    if (m->render(m->data, &out) != 0) {
        mx_buf_free(&out);
        return mxj_metrics_answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                  "text/plain", "out of memory\n", 14);
    }

    rc = mxj_metrics_answer(c, MHD_HTTP_OK, MXJ_METRICS_CONTENT,
                            out.data ? out.data : "", out.len);
    mx_buf_free(&out);

    return rc;
}


static enum MHD_Result
mxj_metrics_answer(struct MHD_Connection *c, unsigned status,
    const char *type, const char *body, size_t len)
{
    enum MHD_Result       rc;
    struct MHD_Response  *r;

    r = MHD_create_response_from_buffer(len, (void *) body,
                                        MHD_RESPMEM_MUST_COPY);
    if (r == NULL) {
        return MHD_NO;
    }

    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type)
        != MHD_YES)
    {
        MHD_destroy_response(r);
        return MHD_NO;
    }

    rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);

    return rc;
}


static void
mxj_metrics_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char            line[512];
    size_t          n;
    mxj_metrics_t  *m = cls;

    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);

    while (n > 0 && line[n - 1] == '\n') {
        line[--n] = '\0';
    }

    if (strcmp(m->cmd, "forward") == 0) {
        mxj_fwd_log("metrics: libmicrohttpd: %s", line);

    } else {
        mxj_sync_log("metrics: libmicrohttpd: %s", line);
    }
}


/* --- the text format --------------------------------------------------- */

void
mxj_metrics_observe(mxj_metrics_hist_t *h, double seconds)
{
    int  i;

    if (seconds < 0) {
        seconds = 0;
    }

    for (i = 0; i < MXJ_METRICS_BUCKETS; i++) {
        if (seconds <= mxj_metrics_bounds[i]) {
            h->le[i]++;
            break;
        }
    }

    h->count++;
    h->sum += seconds;
}


int
mxj_metrics_head(mx_buf_t *b, const char *name, const char *type,
    const char *help)
{
    return mxj_metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                              name, type);
}


int
mxj_metrics_u64(mx_buf_t *b, const char *name, const char *label,
    const char *value, uint64_t v)
{
    if (mxj_metrics_name(b, name, label, value) != 0) {
        return -1;
    }

    return mxj_metrics_printf(b, " %llu\n", (unsigned long long) v);
}


int
mxj_metrics_double(mx_buf_t *b, const char *name, const char *label,
    const char *value, double v)
{
    if (mxj_metrics_name(b, name, label, value) != 0) {
        return -1;
    }

    return mxj_metrics_printf(b, " %.6f\n", v);
}


int
mxj_metrics_hist(mx_buf_t *b, const char *name, const char *help,
    const mxj_metrics_hist_t *h)
{
    int       i;
    char      le[32];
    uint64_t  n;

    if (mxj_metrics_head(b, name, "histogram", help) != 0) {
        return -1;
    }

    n = 0;

    for (i = 0; i < MXJ_METRICS_BUCKETS; i++) {
        n += h->le[i];
        snprintf(le, sizeof(le), "%g", mxj_metrics_bounds[i]);

        if (mxj_metrics_printf(b, "%s_bucket{le=\"%s\"} %llu\n", name, le,
                               (unsigned long long) n)
            != 0)
        {
            return -1;
        }
    }

    return mxj_metrics_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n"
                              "%s_sum %.6f\n%s_count %llu\n",
                              name, (unsigned long long) h->count,
                              name, h->sum,
                              name, (unsigned long long) h->count);
}


/* name, or name{label="value"} with value escaped: \\, \" and \n */

static int
mxj_metrics_name(mx_buf_t *b, const char *name, const char *label,
    const char *value)
{
    const char  *p;

    if (mx_buf_append_str(b, name) != 0) {
        return -1;
    }

    if (label == NULL) {
        return 0;
    }

    if (mxj_metrics_printf(b, "{%s=\"", label) != 0) {
        return -1;
    }

    for (p = value; *p; p++) {
        if (*p == '\\' || *p == '"') {
            if (mx_buf_append_byte(b, '\\') != 0
                || mx_buf_append_byte(b, *p) != 0)
            {
                return -1;
            }

        } else if (*p == '\n') {
            if (mx_buf_append_str(b, "\\n") != 0) {
                return -1;
            }

        } else if (mx_buf_append_byte(b, *p) != 0) {
            return -1;
        }
    }

    return mx_buf_append_str(b, "\"}");
}


static int
mxj_metrics_printf(mx_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);

    if (n < 0 || mx_buf_reserve(b, (size_t) n + 1) != 0) {
        return -1;
    }

    va_start(args, fmt);
    vsnprintf(b->data + b->len, (size_t) n + 1, fmt, args);
    va_end(args);

    b->len += (size_t) n;

    return 0;
}
