/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * GET /_matrix/federation/v1/query/directory?room_alias=#alias:server
 *
 * The alias is resolved in Redis; an alias (or room) the cache cannot
 * answer for goes to the fallback before any authentication, so that the
 * homeserver handles it as it always did. A cached one is authenticated,
 * then answered with our server first and the servers with joined members,
 * most members first: the loader keeps that list ready as JSON in the
 * room's meta, so the answer is two Redis reads and a concatenation.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_join.h"
#include "mx_id.h"
#include "mx_json.h"




typedef struct {
    ngx_str_t                    alias;
    ngx_str_t                    room_id;
    ngx_str_t                    servers;      /* meta.servers, a JSON list */
} ngx_http_matrix_directory_ctx_t;


static ngx_int_t ngx_http_matrix_directory_handler(ngx_http_request_t *r);
static void ngx_http_matrix_directory_alias(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static void ngx_http_matrix_directory_room(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static void ngx_http_matrix_directory_answer(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);


static ngx_int_t
ngx_http_matrix_directory_handler(ngx_http_request_t *r)
{
    const char                        *srv;
    size_t                             slen;
    ngx_str_t                          key;
    ngx_int_t                          rc;
    ngx_http_matrix_ctx_t             *ctx;
    ngx_http_matrix_directory_ctx_t   *dctx;
    const char                        *argv[2];
    size_t                             argvlen[2];

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "Unrecognized request: only GET "
                                          "is supported here");
    }

    ctx = ngx_http_matrix_ctx(r);
    dctx = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_directory_ctx_t));

    if (ctx == NULL || dctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->data = dctx;

    rc = ngx_http_matrix_query_arg(r, "room_alias", &dctx->alias);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_INVALID_PARAM",
                                          "room_alias is missing");
    }

    srv = mx_id_server((char *) dctx->alias.data, dctx->alias.len, '#',
                       &slen);

    if (dctx->alias.len > MX_ID_MAX_LEN
        || srv == NULL
        || srv - (const char *) dctx->alias.data < 3    /* "#" local ":" */
        || ngx_strlchr(dctx->alias.data, dctx->alias.data + dctx->alias.len,
                       '\0') != NULL
        || !mx_server_name_valid(srv, slen))
    {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_INVALID_PARAM",
                                          "room_alias is not a room alias "
                                          "(#localpart:server, at most 255 "
                                          "bytes)");
    }

    if (ngx_http_matrix_global_key(r, MX_KEY_ALIAS, dctx->alias.data,
                                   dctx->alias.len, &key)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "GET";
    argvlen[0] = 3;
    argv[1] = (char *) key.data;
    argvlen[1] = key.len;

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
    ctx->sync = 1;

    rc = ngx_matrix_redis_command(r, ngx_http_matrix_directory_alias, ctx,
                                  2, argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(rc));
    }

    ctx->sync = 0;

    return NGX_DONE;
}


static void
ngx_http_matrix_directory_alias(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    ngx_int_t                         rc;
    ngx_str_t                         meta;
    const char                       *argv[5];
    size_t                            argvlen[5];
    ngx_http_matrix_directory_ctx_t  *dctx;

    dctx = ctx->data;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len == 0
        || reply->len > MX_ID_MAX_LEN)
    {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "Room alias not found");
        return;
    }

    dctx->room_id.len = reply->len;
    dctx->room_id.data = ngx_pnalloc(r->pool, reply->len);
    if (dctx->room_id.data == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(dctx->room_id.data, reply->str, reply->len);

    if (ngx_http_matrix_room_key(r, &dctx->room_id, MX_KEY_META, &meta)
        != NGX_OK)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    argv[0] = "HMGET";
    argvlen[0] = 5;
    argv[1] = (char *) meta.data;
    argvlen[1] = meta.len;
    argv[2] = MX_META_LOADED_AT;
    argvlen[2] = sizeof(MX_META_LOADED_AT) - 1;
    argv[3] = MX_META_STALE;
    argvlen[3] = sizeof(MX_META_STALE) - 1;
    argv[4] = MX_META_SERVERS;
    argvlen[4] = sizeof(MX_META_SERVERS) - 1;

    rc = ngx_matrix_redis_command(r, ngx_http_matrix_directory_room, ctx, 5,
                                  argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(rc));
    }
}


/* meta's loaded_at, stale, servers; loaded_at is nil when not cached */

static void
ngx_http_matrix_directory_room(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    const char                        *why;
    redisReply                        *e;
    ngx_http_matrix_directory_ctx_t   *dctx;

    dctx = ctx->data;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "Room alias not found (its room is not "
                                 "cached)");
        return;
    }

    why = ngx_http_matrix_snapshot_unusable(r, reply->element[0],
                                            reply->element[1]);
    if (why) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND, why);
        return;
    }

    e = reply->element[2];

    if (e->type == REDIS_REPLY_STRING && e->len >= 2 && e->str[0] == '['
        && e->str[e->len - 1] == ']')
    {
        /* the list without its brackets */
        dctx->servers.len = e->len - 2;
        dctx->servers.data = ngx_pnalloc(r->pool, e->len);
        if (dctx->servers.data == NULL) {
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_memcpy(dctx->servers.data, e->str + 1, dctx->servers.len);
    }

    ngx_http_matrix_authenticate(r, ctx, ngx_http_matrix_directory_answer);
}


/*
 * {"room_id":R,"servers":["ours",...]}: our own name is taken out of the
 * stored list (the loader does not know it); names need no escaping.
 */
static void
ngx_http_matrix_directory_answer(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    u_char                           *p, *q, *last, *end;
    size_t                            len, n;
    mx_buf_t                          out = MX_BUF_INIT;
    ngx_int_t                         rc;
    ngx_http_matrix_directory_ctx_t  *dctx;
    ngx_http_matrix_join_srv_conf_t  *mscf;

    dctx = ctx->data;
    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    if (mx_buf_append_str(&out, "{\"room_id\":") != 0
        || mx_json_canonical_string((char *) dctx->room_id.data,
                                    dctx->room_id.len, &out) != 0
        || mx_buf_append_str(&out, ",\"servers\":[") != 0
        || mx_json_canonical_string((char *) mscf->server_name.data,
                                    mscf->server_name.len, &out) != 0)
    {
        goto failed;
    }

    p = dctx->servers.data;
    end = p + dctx->servers.len;
    n = 1;

    /* ours first, then up to 99 others: at most 100 in all */

    while (p < end && n < 100) {
        last = ngx_strlchr(p, end, ',');
        if (last == NULL) {
            last = end;
        }

        /* one "name" */
        q = p;
        len = last - p;

        if (!(len == mscf->server_name.len + 2
              && ngx_strncmp(q + 1, mscf->server_name.data,
                             mscf->server_name.len) == 0))
        {
            if (mx_buf_append_byte(&out, ',') != 0
                || mx_buf_append(&out, q, len) != 0)
            {
                goto failed;
            }

            n++;
        }

        p = last + 1;
    }

    if (mx_buf_append_str(&out, "]}") != 0) {
        goto failed;
    }

    rc = ngx_http_matrix_send_json(r, NGX_HTTP_OK, (u_char *) out.data,
                                   out.len, 1);
    mx_buf_free(&out);

    ngx_http_matrix_finalize(r, rc);
    return;

failed:

    mx_buf_free(&out);
    ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
}


char *
ngx_http_matrix_directory(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t   *mlcf = conf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    mlcf->endpoint = NGX_HTTP_MATRIX_EP_DIRECTORY;    /* matrix_metrics */

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_directory_handler,
                                       &mmcf->fed_users);
}
