/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * What every federation handler's request uses: the JSON answers and
 * Matrix errors, the one finalize of a suspended request, the fallback
 * (and ngx_http_matrix_undecided(), when the edge cannot decide), the
 * Redis key names, the path parameters and query arguments as Synapse
 * reads them, and whether a snapshot may answer. It calls nothing of the
 * module's other files.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdarg.h>

#include <jansson.h>

#include "ngx_http_matrix_join.h"
#include "mx_uri.h"


ngx_int_t
ngx_http_matrix_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len, ngx_uint_t copy)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_http_discard_request_body(r);

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (copy && len) {
        b->start = ngx_pnalloc(r->pool, len);
        if (b->start == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(b->start, data, len);
        data = b->start;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = len ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_matrix_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...)
{
    u_char    msg[512], *last;
    json_t   *obj;
    va_list   ap;

    va_start(ap, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, ap);
    va_end(ap);

    *last = '\0';

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: %ui %s: %s", status, errcode, msg);

    ngx_http_matrix_metrics_errcode(r, errcode);

    obj = json_pack("{s:s, s:s}", "errcode", errcode, "error", (char *) msg);

    return ngx_http_matrix_send_body(r, status, obj);
}


ngx_int_t
ngx_http_matrix_send_body(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body)
{
    char       *text;
    ngx_int_t   rc;

    text = body ? json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(body);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_matrix_send_json(r, status, (u_char *) text,
                                   ngx_strlen(text), 1);
    free(text);

    return rc;
}


static ngx_int_t
ngx_http_matrix_shared_struct_init(ngx_shm_zone_t *shm_zone, void *data)
{
    size_t            size;
    ngx_slab_pool_t  *shpool;

    if (data) {
        /* a reload: what the previous cycle counted goes on */
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    size = (size_t) (uintptr_t) shm_zone->data;   /* as the zone was added */

    shpool->data = ngx_slab_calloc(shpool, size);
    if (shpool->data == NULL) {
        return NGX_ERROR;
    }

    shm_zone->data = shpool->data;

    return NGX_OK;
}


ngx_shm_zone_t *
ngx_http_matrix_shared_struct(ngx_conf_t *cf, ngx_str_t *name,
    size_t struct_size, size_t zone_size)
{
    ngx_shm_zone_t  *zone;

    zone = ngx_shared_memory_add(cf, name, zone_size,
                                 &ngx_http_matrix_join_module);
    if (zone == NULL) {
        return NULL;
    }

    zone->init = ngx_http_matrix_shared_struct_init;
    zone->data = (void *) (uintptr_t) struct_size;

    return zone;
}


int64_t
ngx_http_matrix_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


ngx_int_t
ngx_http_matrix_room_key(ngx_http_request_t *r, ngx_str_t *room_id,
    const char *suffix, ngx_str_t *key)
{
    size_t                             n;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    n = mx_schema_room_key(NULL, 0, (char *) mmcf->redis.prefix.data,
                           mmcf->redis.prefix.len, (char *) room_id->data,
                           room_id->len, suffix);

    key->data = ngx_pnalloc(r->pool, n + 1);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    key->len = mx_schema_room_key((char *) key->data, n + 1,
                                  (char *) mmcf->redis.prefix.data,
                                  mmcf->redis.prefix.len,
                                  (char *) room_id->data, room_id->len,
                                  suffix);

    return NGX_OK;
}


ngx_int_t
ngx_http_matrix_global_key(ngx_http_request_t *r, const char *name,
    const u_char *arg, size_t arg_len, ngx_str_t *key)
{
    size_t                             n;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    n = mx_schema_global_key(NULL, 0, (char *) mmcf->redis.prefix.data,
                             mmcf->redis.prefix.len, name,
                             (const char *) arg, arg_len);

    key->data = ngx_pnalloc(r->pool, n + 1);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    key->len = mx_schema_global_key((char *) key->data, n + 1,
                                    (char *) mmcf->redis.prefix.data,
                                    mmcf->redis.prefix.len, name,
                                    (const char *) arg, arg_len);

    return NGX_OK;
}


void
ngx_http_matrix_undecided(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...)
{
    u_char                           msg[512], *last;
    va_list                          ap;
    ngx_http_matrix_ctx_t            *ctx;
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    va_start(ap, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, ap);
    va_end(ap);

    *last = '\0';

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->fallback.len) {
        ctx = ngx_http_matrix_ctx(r);
        if (ctx) {
            ctx->undecided = 1;
        }

        ngx_http_matrix_fallback(r, status, (char *) msg);
        return;
    }

    ngx_http_matrix_fail(r, status, errcode, "%s", msg);
}


void
ngx_http_matrix_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_uint_t              sync;
    ngx_connection_t       *c;
    ngx_http_matrix_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    /* read before: finalizing may free the request and its pool */
    sync = (ctx && ctx->sync);

    ngx_http_finalize_request(r, rc);

    /* inside the content handler nginx runs them itself, after it */
    if (!sync) {
        ngx_http_run_posted_requests(c);
    }
}


ngx_http_matrix_ctx_t *
ngx_http_matrix_ctx(ngx_http_request_t *r)
{
    ngx_http_matrix_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_matrix_join_module);
    }

    return ctx;
}


void
ngx_http_matrix_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...)
{
    u_char     msg[512], *last;
    va_list    ap;
    ngx_int_t  rc;

    /* nginx's formats: %V for ngx_str_t, %s, %ui, %L, ... */
    va_start(ap, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, ap);
    va_end(ap);

    *last = '\0';

    rc = ngx_http_matrix_send_error(r, status, errcode, "%s", msg);

    ngx_http_matrix_finalize(r, rc);
}


void
ngx_http_matrix_fallback(ngx_http_request_t *r, ngx_uint_t status,
    const char *reason)
{
    ngx_http_matrix_ctx_t            *ctx;
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->fallback.len == 0) {
        if (status == NGX_HTTP_NOT_FOUND) {
            ngx_http_matrix_fail(r, status, "M_NOT_FOUND", "%s", reason);

        } else {
            ngx_http_matrix_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "M_UNKNOWN",
                                 "%s", reason);
        }

        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: %s, passing the request to \"%V\"", reason,
                  &mlcf->fallback);

    /* counted here: the request ends in the fallback's location */

    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    ngx_http_matrix_metrics_handed_over(r,
        (ctx && ctx->undecided) ? NGX_HTTP_MATRIX_WHY_UNDECIDED
        : (status == NGX_HTTP_SERVICE_UNAVAILABLE) ? NGX_HTTP_MATRIX_WHY_REDIS
        : NGX_HTTP_MATRIX_WHY_SNAPSHOT);

    /* the request continues there unchanged: our count goes with it */

    (void) ngx_http_named_location(r, &mlcf->fallback);

    ngx_http_matrix_finalize(r, NGX_DONE);
}


char *
ngx_http_matrix_set_handler(ngx_conf_t *cf, ngx_http_handler_pt handler,
    ngx_array_t *uses)
{
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_matrix_key_server_ref_t  *ref;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate: this location already has a content handler";
    }

    clcf->handler = handler;

    /* remembered so that postconfiguration can name the location */

    ref = ngx_array_push(uses);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    ref->mscf = ngx_http_conf_get_module_srv_conf(cf,
                                                  ngx_http_matrix_join_module);
    ref->mlcf = ngx_http_conf_get_module_loc_conf(cf,
                                                  ngx_http_matrix_join_module);
    ref->cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    ref->file = cf->conf_file->file.name.data;
    ref->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


const char *
ngx_http_matrix_snapshot_unusable(ngx_http_request_t *r, redisReply *loaded_at,
    redisReply *stale)
{
    int64_t                           at;
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    if (stale->type == REDIS_REPLY_STRING && stale->len == 1
        && stale->str[0] == '1')
    {
        return "the room's snapshot is marked stale";
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->max_age == 0) {
        return NULL;
    }

    at = (loaded_at->type == REDIS_REPLY_STRING)
         ? strtoll(loaded_at->str, NULL, 10) : 0;

    if (ngx_http_matrix_now_ms() - at > (int64_t) mlcf->max_age) {
        return "the room's snapshot is older than matrix_join_max_age";
    }

    return NULL;
}


const char *
ngx_http_matrix_path_params(ngx_http_request_t *r, size_t skip,
    ngx_str_t seg[2], const char *shape)
{
    u_char         *p, *end, *buf;
    ngx_uint_t      n;
    mx_uri_part_t   part[2];

    p = r->unparsed_uri.data + skip;
    end = r->unparsed_uri.data + r->unparsed_uri.len;

    if (r->args_start) {
        end = r->args_start - 1;     /* the '?' */
    }

    if (p > end) {
        return shape;
    }

    buf = ngx_pnalloc(r->pool, end - p + 2);
    if (buf == NULL) {
        return "out of memory";
    }

    switch (mx_uri_path_params((char *) p, end - p, (char *) buf, part)) {

    case MX_URI_OK:
        break;

    case MX_URI_NUL:
        return "a path parameter holds a NUL byte";

    default:
        return shape;
    }

    for (n = 0; n < 2; n++) {
        seg[n].data = (u_char *) part[n].data;
        seg[n].len = part[n].len;
    }

    return NULL;
}


/*
 * The one path parameter "{a}" (Synapse's "(?P<a>[^/]*)/?": no '/' in
 * it, one trailing '/' allowed) of the raw URI after skip bytes, decoded
 * and NUL-terminated in r's pool.
 */

const char *
ngx_http_matrix_path_param(ngx_http_request_t *r, size_t skip,
    ngx_str_t *seg, const char *shape)
{
    u_char  *p, *end, *buf;
    size_t   n;

    p = r->unparsed_uri.data + skip;
    end = r->unparsed_uri.data + r->unparsed_uri.len;

    if (r->args_start) {
        end = r->args_start - 1;     /* the '?' */
    }

    if (p > end) {
        return shape;
    }

    if (end > p && end[-1] == '/') {
        end--;
    }

    if (ngx_strlchr(p, end, '/') != NULL) {
        return shape;
    }

    buf = ngx_pnalloc(r->pool, end - p + 1);
    if (buf == NULL) {
        return "out of memory";
    }

    n = mx_uri_unescape((char *) buf, (char *) p, end - p, 0);

    if (ngx_strlchr(buf, buf + n, '\0') != NULL) {
        return "a path parameter holds a NUL byte";
    }

    buf[n] = '\0';
    seg->data = buf;
    seg->len = n;

    return NULL;
}


ngx_int_t
ngx_http_matrix_query_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    size_t       pos, vlen;
    const char  *val;

    pos = 0;

    if (!mx_uri_arg_next((char *) r->args.data, r->args.len, &pos, name,
                         &val, &vlen))
    {
        return NGX_DECLINED;
    }

    value->data = ngx_pnalloc(r->pool, vlen + 1);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    value->len = mx_uri_unescape((char *) value->data, val, vlen, 1);
    value->data[value->len] = '\0';

    return NGX_OK;
}


char *
ngx_http_matrix_reply_str(ngx_http_request_t *r, redisReply *e)
{
    char  *s;

    if (e == NULL || e->type != REDIS_REPLY_STRING) {
        return NULL;
    }

    s = ngx_pnalloc(r->pool, e->len + 1);
    if (s == NULL) {
        return NULL;
    }

    ngx_memcpy(s, e->str, e->len);
    s[e->len] = '\0';

    return s;
}
