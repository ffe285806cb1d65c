/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * matrix_metrics: the module's counters in the Prometheus text format
 * (0.0.4). The counters are the machine's, not a worker's: one shared
 * memory zone, "matrix_join_metrics", added whenever the module is in the
 * configuration, which every worker adds to with ngx_atomic_fetch_add (no
 * lock). A reload keeps the zone (same name, size and tag), so the
 * counters go on; a restart or a binary upgrade starts them at 0.
 *
 * The requests are counted where they end, not where they are answered:
 * a log phase handler classifies the status of every main request of a
 * location with one of the module's federation handlers (the ways a
 * handler answers: the module's helpers, a status returned to nginx, a
 * client that went away); a request handed over to the fallback is
 * counted by ngx_http_matrix_fallback() before it leaves, since it ends
 * in the fallback's location.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_join.h"
#include "ngx_http_matrix_metrics.h"
#include "ngx_matrix_chunk_cache.h"


#define NGX_HTTP_MATRIX_METRICS_ZONE_SIZE  (64 * 1024)

#define NGX_HTTP_MATRIX_METRICS_BUF        32768

#define NGX_HTTP_MATRIX_METRICS_BUCKETS    12


/* the errcodes the module's answers carry; "other": any other, "none": an
 * error answer nginx made itself (a body too large, a bad request line) */
static const char  *ngx_http_matrix_metrics_errcodes[] = {
    "M_FORBIDDEN", "M_UNAUTHORIZED", "M_NOT_FOUND", "M_LIMIT_EXCEEDED",
    "M_BAD_JSON", "M_NOT_JSON", "M_TOO_LARGE", "M_INVALID_PARAM",
    "M_UNRECOGNIZED", "M_INCOMPATIBLE_ROOM_VERSION",
    "M_UNABLE_TO_AUTHORISE_JOIN", "M_UNABLE_TO_GRANT_JOIN", "M_UNKNOWN",
    "other", "none"
};

#define NGX_HTTP_MATRIX_METRICS_ERRCODES                                      \
    (sizeof(ngx_http_matrix_metrics_errcodes) / sizeof(char *))

static const char  *ngx_http_matrix_metrics_whys[] = {
    "snapshot", "redis", "undecided"
};

static const char  *ngx_http_matrix_metrics_fetches[] = {
    "fetched", "failed", "rate_limited", "too_many"
};


/* a histogram's upper bounds, ms (the cached clock's steps) */
static const ngx_msec_t  ngx_http_matrix_metrics_le[] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000
};


typedef struct {
    ngx_atomic_t   requests[NGX_HTTP_MATRIX_EP_N][NGX_HTTP_MATRIX_OUT_N];
    ngx_atomic_t   join_accepted;
    ngx_atomic_t   redis_errors;
    ngx_atomic_t   redis_redirects;     /* a cluster's MOVED and ASK */
    ngx_atomic_t   redis_slot_maps;     /* a cluster's CLUSTER SLOTS */

    /* request durations per endpoint: per bucket (the last: +Inf), sum */
    ngx_atomic_t   duration[NGX_HTTP_MATRIX_EP_N]
                           [NGX_HTTP_MATRIX_METRICS_BUCKETS + 1];
    ngx_atomic_t   duration_ms[NGX_HTTP_MATRIX_EP_N];

    ngx_atomic_t   errcodes[NGX_HTTP_MATRIX_EP_N]
                           [sizeof(ngx_http_matrix_metrics_errcodes)
                            / sizeof(char *)];
    ngx_atomic_t   handed_over[NGX_HTTP_MATRIX_EP_N][NGX_HTTP_MATRIX_WHY_N];
    ngx_atomic_t   key_fetches[NGX_HTTP_MATRIX_KF_N];
} ngx_http_matrix_metrics_shm_t;


static ngx_http_matrix_metrics_shm_t *ngx_http_matrix_metrics_get(
    ngx_http_matrix_join_main_conf_t *mmcf);
static ngx_int_t ngx_http_matrix_metrics_log_handler(ngx_http_request_t *r);
static void ngx_http_matrix_metrics_count(ngx_http_request_t *r,
    ngx_http_matrix_join_loc_conf_t *mlcf,
    ngx_http_matrix_join_main_conf_t *mmcf, ngx_uint_t outcome);
static ngx_int_t ngx_http_matrix_metrics_handler(ngx_http_request_t *r);
static void ngx_http_matrix_metrics_count_errcode(ngx_http_request_t *r,
    ngx_http_matrix_join_loc_conf_t *mlcf);


static ngx_str_t  ngx_http_matrix_metrics_zone_name =
    ngx_string("matrix_join_metrics");

/* label values, in the order of the enums */
static const char  *ngx_http_matrix_metrics_endpoints[] = {
    "", "make_join", "send_join", "directory", "key_server", "state", "event"
};

static const char  *ngx_http_matrix_metrics_outcomes[] = {
    "answered", "handed_over", "refused", "error"
};


ngx_int_t
ngx_http_matrix_metrics_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt               *h;
    ngx_http_core_main_conf_t         *cmcf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    mmcf->metrics = ngx_http_matrix_shared_struct(cf,
                                       &ngx_http_matrix_metrics_zone_name,
                                       sizeof(ngx_http_matrix_metrics_shm_t),
                                       NGX_HTTP_MATRIX_METRICS_ZONE_SIZE);
    if (mmcf->metrics == NULL) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_matrix_metrics_log_handler;

    return NGX_OK;
}


static ngx_http_matrix_metrics_shm_t *
ngx_http_matrix_metrics_get(ngx_http_matrix_join_main_conf_t *mmcf)
{
    if (mmcf == NULL || mmcf->metrics == NULL) {
        return NULL;
    }

    return mmcf->metrics->data;
}


/*
 * One request of an endpoint ended (answered, refused, an error) or left
 * for the fallback: its outcome, and the time since its first byte, as
 * $request_time reads it.
 */
static void
ngx_http_matrix_metrics_count(ngx_http_request_t *r,
    ngx_http_matrix_join_loc_conf_t *mlcf,
    ngx_http_matrix_join_main_conf_t *mmcf, ngx_uint_t outcome)
{
    ngx_uint_t                      b;
    ngx_msec_int_t                  ms;
    ngx_time_t                     *tp;
    ngx_http_matrix_metrics_shm_t  *m;

    if (mlcf->endpoint == NGX_HTTP_MATRIX_EP_NONE
        || mlcf->endpoint >= NGX_HTTP_MATRIX_EP_N)
    {
        return;
    }

    m = ngx_http_matrix_metrics_get(mmcf);
    if (m == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&m->requests[mlcf->endpoint][outcome], 1);

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    for (b = 0; b < NGX_HTTP_MATRIX_METRICS_BUCKETS; b++) {
        if ((ngx_msec_t) ms <= ngx_http_matrix_metrics_le[b]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&m->duration[mlcf->endpoint][b], 1);
    (void) ngx_atomic_fetch_add(&m->duration_ms[mlcf->endpoint], ms);
}


static ngx_int_t
ngx_http_matrix_metrics_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                         status, outcome;
    ngx_http_matrix_join_loc_conf_t   *mlcf;

    if (r != r->main) {
        return NGX_OK;
    }

    /*
     * A request handed over ends in the fallback's location, whose
     * endpoint is none: it was counted when it left.
     */

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf == NULL || mlcf->endpoint == NGX_HTTP_MATRIX_EP_NONE) {
        return NGX_OK;
    }

    /* the status as the access log reads it */
    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status == 0 || status == NGX_HTTP_CLIENT_CLOSED_REQUEST) {
        /* the client went away before an answer: no outcome */
        return NGX_OK;
    }

    if (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
        outcome = NGX_HTTP_MATRIX_OUT_ERROR;

    } else if (status >= NGX_HTTP_BAD_REQUEST) {
        outcome = NGX_HTTP_MATRIX_OUT_REFUSED;

    } else {
        outcome = NGX_HTTP_MATRIX_OUT_ANSWERED;
    }

    ngx_http_matrix_metrics_count(r, mlcf,
              ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module),
              outcome);

    if (outcome == NGX_HTTP_MATRIX_OUT_REFUSED
        || outcome == NGX_HTTP_MATRIX_OUT_ERROR)
    {
        ngx_http_matrix_metrics_count_errcode(r, mlcf);
    }

    return NGX_OK;
}


static void
ngx_http_matrix_metrics_count_errcode(ngx_http_request_t *r,
    ngx_http_matrix_join_loc_conf_t *mlcf)
{
    ngx_uint_t                      i;
    ngx_http_matrix_ctx_t          *ctx;
    ngx_http_matrix_metrics_shm_t  *m;

    m = ngx_http_matrix_metrics_get(
              ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module));
    if (m == NULL || mlcf->endpoint >= NGX_HTTP_MATRIX_EP_N) {
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    if (ctx == NULL || ctx->errcode == NULL) {
        i = NGX_HTTP_MATRIX_METRICS_ERRCODES - 1;          /* none */

    } else {
        for (i = 0; i < NGX_HTTP_MATRIX_METRICS_ERRCODES - 2; i++) {
            if (ngx_strcmp(ctx->errcode, ngx_http_matrix_metrics_errcodes[i])
                == 0)
            {
                break;
            }
        }
    }

    (void) ngx_atomic_fetch_add(&m->errcodes[mlcf->endpoint][i], 1);
}


void
ngx_http_matrix_metrics_errcode(ngx_http_request_t *r, const char *errcode)
{
    ngx_http_matrix_ctx_t  *ctx;

    ctx = ngx_http_matrix_ctx(r->main);

    if (ctx) {
        ctx->errcode = errcode;
    }
}


void
ngx_http_matrix_metrics_handed_over(ngx_http_request_t *r,
    ngx_http_matrix_why_e why)
{
    ngx_http_matrix_metrics_shm_t     *m;
    ngx_http_matrix_join_loc_conf_t   *mlcf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    if (r != r->main) {
        return;
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    ngx_http_matrix_metrics_count(r, mlcf, mmcf,
                                  NGX_HTTP_MATRIX_OUT_HANDED_OVER);

    m = ngx_http_matrix_metrics_get(mmcf);

    if (m && mlcf->endpoint != NGX_HTTP_MATRIX_EP_NONE
        && mlcf->endpoint < NGX_HTTP_MATRIX_EP_N && why < NGX_HTTP_MATRIX_WHY_N)
    {
        (void) ngx_atomic_fetch_add(&m->handed_over[mlcf->endpoint][why], 1);
    }
}


/* outside a request: the running cycle's zone (a reload keeps it) */

static ngx_http_matrix_metrics_shm_t *
ngx_http_matrix_metrics_cycle(void)
{
    return ngx_http_matrix_metrics_get(
               ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                ngx_http_matrix_join_module));
}


void
ngx_http_matrix_metrics_join_accepted(void)
{
    ngx_http_matrix_metrics_shm_t  *m;

    m = ngx_http_matrix_metrics_cycle();

    if (m) {
        (void) ngx_atomic_fetch_add(&m->join_accepted, 1);
    }
}


void
ngx_http_matrix_metrics_key_fetch(ngx_http_matrix_fetch_result_e res)
{
    ngx_http_matrix_metrics_shm_t  *m;

    m = ngx_http_matrix_metrics_cycle();

    if (m && res < NGX_HTTP_MATRIX_KF_N) {
        (void) ngx_atomic_fetch_add(&m->key_fetches[res], 1);
    }
}


void
ngx_http_matrix_metrics_redis_cluster(ngx_uint_t redirect)
{
    ngx_http_matrix_metrics_shm_t  *m;

    m = ngx_http_matrix_metrics_cycle();

    if (m) {
        (void) ngx_atomic_fetch_add(redirect ? &m->redis_redirects
                                             : &m->redis_slot_maps, 1);
    }
}


void
ngx_http_matrix_metrics_redis_error(void)
{
    ngx_http_matrix_metrics_shm_t  *m;

    m = ngx_http_matrix_metrics_cycle();

    if (m) {
        (void) ngx_atomic_fetch_add(&m->redis_errors, 1);
    }
}


/*
 * The samples of a counter by endpoint and one more label: counts[e *
 * stride + v] for every endpoint e (but none) and value v of values.
 */
static u_char *
ngx_http_matrix_metrics_by_endpoint(u_char *p, u_char *last,
    const char *name, const char *label, const char **values, ngx_uint_t n,
    ngx_atomic_t *counts, ngx_uint_t stride)
{
    ngx_uint_t  e, v;

    for (e = 1; e < NGX_HTTP_MATRIX_EP_N; e++) {
        for (v = 0; v < n; v++) {
            p = ngx_slprintf(p, last, "%s{endpoint=\"%s\",%s=\"%s\"} %uA\n",
                             name, ngx_http_matrix_metrics_endpoints[e],
                             label, values[v], counts[e * stride + v]);
        }
    }

    return p;
}


static ngx_int_t
ngx_http_matrix_metrics_handler(ngx_http_request_t *r)
{
    u_char                            *p, *last;
    ngx_int_t                          rc;
    ngx_uint_t                         e, o, b;
    ngx_atomic_uint_t                  n;
    ngx_buf_t                         *buf;
    ngx_chain_t                        out;
    ngx_matrix_chunks_stats_t          st;
    ngx_http_matrix_metrics_shm_t     *m;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "only GET is supported here");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    m = ngx_http_matrix_metrics_get(
              ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module));
    if (m == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    buf = ngx_create_temp_buf(r->pool, NGX_HTTP_MATRIX_METRICS_BUF);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = buf->pos;
    last = buf->end;

    p = ngx_slprintf(p, last,
            "# HELP matrix_join_requests_total Federation requests of the "
            "module's locations by how they ended: answered (1xx-3xx), "
            "refused (4xx) or error (5xx) by the module, or handed_over to "
            "matrix_join_fallback.\n"
            "# TYPE matrix_join_requests_total counter\n");

    p = ngx_http_matrix_metrics_by_endpoint(p, last,
                                     "matrix_join_requests_total", "outcome",
                                     ngx_http_matrix_metrics_outcomes,
                                     NGX_HTTP_MATRIX_OUT_N, &m->requests[0][0],
                                     NGX_HTTP_MATRIX_OUT_N);

    p = ngx_slprintf(p, last,
            "# HELP matrix_join_error_answers_total The requests of "
            "matrix_join_requests_total refused or an error, by the "
            "errcode of their answer (none: an answer nginx made "
            "itself).\n"
            "# TYPE matrix_join_error_answers_total counter\n");

    p = ngx_http_matrix_metrics_by_endpoint(p, last,
                                     "matrix_join_error_answers_total",
                                     "errcode",
                                     ngx_http_matrix_metrics_errcodes,
                                     NGX_HTTP_MATRIX_METRICS_ERRCODES,
                                     &m->errcodes[0][0],
                                     NGX_HTTP_MATRIX_METRICS_ERRCODES);

    p = ngx_slprintf(p, last,
            "# HELP matrix_join_handed_over_total The requests of "
            "matrix_join_requests_total handed over, by why: snapshot (the "
            "cache cannot answer: the room not cached, stale, too old, an "
            "event it does not hold), redis (Redis failing), undecided "
            "(the edge cannot decide where the homeserver can).\n"
            "# TYPE matrix_join_handed_over_total counter\n");

    p = ngx_http_matrix_metrics_by_endpoint(p, last,
                                     "matrix_join_handed_over_total",
                                     "reason", ngx_http_matrix_metrics_whys,
                                     NGX_HTTP_MATRIX_WHY_N,
                                     &m->handed_over[0][0],
                                     NGX_HTTP_MATRIX_WHY_N);

    p = ngx_slprintf(p, last,
            "# HELP matrix_join_key_fetches_total Remote key fetches of the "
            "machine by how they ended (fetched, failed), or why none was "
            "made (rate_limited: matrix_key_fetch_rate; too_many: 64 "
            "under way).\n"
            "# TYPE matrix_join_key_fetches_total counter\n");

    for (o = 0; o < NGX_HTTP_MATRIX_KF_N; o++) {
        p = ngx_slprintf(p, last,
                         "matrix_join_key_fetches_total{result=\"%s\"} "
                         "%uA\n", ngx_http_matrix_metrics_fetches[o],
                         m->key_fetches[o]);
    }

    p = ngx_slprintf(p, last,
            "# HELP matrix_join_request_duration_seconds Time from a "
            "request's first byte until the module answered it or handed "
            "it over, by endpoint (nginx's cached clock: millisecond "
            "steps).\n"
            "# TYPE matrix_join_request_duration_seconds histogram\n");

    for (e = 1; e < NGX_HTTP_MATRIX_EP_N; e++) {
        n = 0;

        for (b = 0; b <= NGX_HTTP_MATRIX_METRICS_BUCKETS; b++) {
            n += m->duration[e][b];

            if (b == NGX_HTTP_MATRIX_METRICS_BUCKETS) {
                p = ngx_slprintf(p, last,
                                 "matrix_join_request_duration_seconds_bucket"
                                 "{endpoint=\"%s\",le=\"+Inf\"} %uA\n",
                                 ngx_http_matrix_metrics_endpoints[e], n);
                break;
            }

            p = ngx_slprintf(p, last,
                             "matrix_join_request_duration_seconds_bucket"
                             "{endpoint=\"%s\",le=\"%M.%03M\"} %uA\n",
                             ngx_http_matrix_metrics_endpoints[e],
                             ngx_http_matrix_metrics_le[b] / 1000,
                             ngx_http_matrix_metrics_le[b] % 1000, n);
        }

        p = ngx_slprintf(p, last,
                         "matrix_join_request_duration_seconds_sum"
                         "{endpoint=\"%s\"} %uA.%03uA\n"
                         "matrix_join_request_duration_seconds_count"
                         "{endpoint=\"%s\"} %uA\n",
                         ngx_http_matrix_metrics_endpoints[e],
                         m->duration_ms[e] / 1000, m->duration_ms[e] % 1000,
                         ngx_http_matrix_metrics_endpoints[e], n);
    }

    p = ngx_slprintf(p, last,
            "# HELP matrix_join_send_join_accepted_total Joins newly "
            "accepted into a room's outbox (a retry of an accepted join is "
            "not counted again).\n"
            "# TYPE matrix_join_send_join_accepted_total counter\n"
            "matrix_join_send_join_accepted_total %uA\n"
            "# HELP matrix_join_redis_errors_total Redis commands that "
            "failed (an error reply, a timeout, the connection gone before "
            "the reply) and Redis connections that failed or were lost.\n"
            "# TYPE matrix_join_redis_errors_total counter\n"
            "matrix_join_redis_errors_total %uA\n"
            "# HELP matrix_join_redis_cluster_redirects_total MOVED and "
            "ASK answers of a Redis Cluster (matrix_redis cluster:...).\n"
            "# TYPE matrix_join_redis_cluster_redirects_total counter\n"
            "matrix_join_redis_cluster_redirects_total %uA\n"
            "# HELP matrix_join_redis_cluster_slot_maps_total CLUSTER "
            "SLOTS asked for a Redis Cluster's slot map.\n"
            "# TYPE matrix_join_redis_cluster_slot_maps_total counter\n"
            "matrix_join_redis_cluster_slot_maps_total %uA\n",
            m->join_accepted, m->redis_errors, m->redis_redirects,
            m->redis_slot_maps);

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);
    ngx_matrix_chunks_stats(mmcf->send_join_zone, &st);

    p = ngx_slprintf(p, last,
            "# HELP matrix_join_send_join_cache_size_bytes The size of the "
            "matrix_send_join_cache zone (0: off).\n"
            "# TYPE matrix_join_send_join_cache_size_bytes gauge\n"
            "matrix_join_send_join_cache_size_bytes %uz\n"
            "# HELP matrix_join_send_join_cache_bytes Chunk bytes in the "
            "zone: linked (found by the next answers) or unlinked (replaced "
            "or evicted, still being sent).\n"
            "# TYPE matrix_join_send_join_cache_bytes gauge\n"
            "matrix_join_send_join_cache_bytes{state=\"linked\"} %uz\n"
            "matrix_join_send_join_cache_bytes{state=\"unlinked\"} %uz\n"
            "# HELP matrix_join_send_join_cache_entries Room generations in "
            "the zone (linked or unlinked, as above).\n"
            "# TYPE matrix_join_send_join_cache_entries gauge\n"
            "matrix_join_send_join_cache_entries{state=\"linked\"} %ui\n"
            "matrix_join_send_join_cache_entries{state=\"unlinked\"} %ui\n"
            "# HELP matrix_join_send_join_cache_free_bytes The zone's free "
            "pages.\n"
            "# TYPE matrix_join_send_join_cache_free_bytes gauge\n"
            "matrix_join_send_join_cache_free_bytes %uz\n",
            st.size, st.bytes, st.unlinked_bytes, st.entries, st.unlinked,
            (size_t) (st.free_pages * ngx_pagesize));

    if (p == last) {
        /* cannot happen with the buffer's size: never a cut answer */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "matrix_metrics: the answer does not fit in %d bytes",
                      NGX_HTTP_MATRIX_METRICS_BUF);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    buf->last = p;
    buf->last_buf = (r == r->main) ? 1 : 0;
    buf->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = buf->last - buf->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = buf;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


char *
ngx_http_matrix_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate: this location already has a content handler";
    }

    clcf->handler = ngx_http_matrix_metrics_handler;

    return NGX_CONF_OK;
}
