/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * GET /_matrix/federation/v1/state_ids/{roomId}?event_id=E
 * GET /_matrix/federation/v1/state/{roomId}?event_id=E
 *
 * Answered when E is a join accepted at the edge: the state before E (at
 * its prev_events, what E's send_join answer gave) and its auth chain,
 * as the homeserver answers them (Synapse's on_state_ids_request and
 * on_room_state_request). The steps:
 *   1. the room's version, generation and server ACL
 *      (src/lua/send_join_meta.lua); not cached, stale, too old: the
 *      fallback, before anything is authenticated;
 *   2. X-Matrix, the server ACL (403 as the homeserver refuses);
 *   3. src/lua/state_at.lua: the requesting server must have a joined
 *      member now (403 "Host not in room.", as Synapse), E must be an
 *      edge join whose state the edge knows exactly, else the fallback;
 *      /state_ids gets the IDs from the state index, /state the
 *      overlay's PDUs and cuts, sent with the snapshot's chunk lists as
 *      send_join's answer is (the worker's chunk cache, else MULTI {
 *      script, LRANGE } EXEC, one request of the worker reading them
 *      while the others wait for its copy).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_send_join.h"
#include "ngx_matrix_chunk_cache.h"
#include "ngx_matrix_pdu_cache.h"
#include "mx_auth.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_util.h"


#define NGX_HTTP_MATRIX_ST_PREFIX   "/_matrix/federation/v1/state"


typedef struct {
    ngx_http_matrix_send_join_ctx_t  sj;    /* keys, chunks, stolen, ... */
    ngx_uint_t                       ids;   /* /state_ids */
} ngx_http_matrix_state_ctx_t;


static ngx_int_t ngx_http_matrix_state_handler(ngx_http_request_t *r);
static void ngx_http_matrix_state_meta(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static void ngx_http_matrix_state_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_state_read(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_state_done(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static ngx_int_t ngx_http_matrix_state_ids(ngx_http_request_t *r,
    redisReply *pdus, redisReply *auth);
static void ngx_http_matrix_state_cleanup(void *data);


static ngx_int_t
ngx_http_matrix_state_handler(ngx_http_request_t *r)
{
    size_t                          skip;
    ngx_int_t                       rc;
    ngx_uint_t                      i;
    ngx_str_t                       seg;
    const char                     *invalid;
    const char                     *argv[3];
    size_t                          argvlen[3];
    ngx_pool_cleanup_t             *cln;
    ngx_http_matrix_ctx_t          *ctx;
    ngx_http_matrix_state_ctx_t    *st;
    ngx_http_matrix_send_join_ctx_t  *sj;
    static const char  shape[] = "expected /_matrix/federation/v1/"
                                 "state/{roomId} or state_ids/{roomId}";
    static const char  *names[SJ_NKEYS] = {
        MX_KEY_META, MX_KEY_STATE, MX_KEY_MEMBER, MX_KEY_PDU, MX_KEY_EXTREM,
        MX_KEY_EDGE, MX_KEY_EDGE_PDU, MX_KEY_EDGE_M, MX_KEY_EDGE_OLD,
        MX_KEY_EDGE_ORIG, MX_KEY_MCHUNK, MX_KEY_STATE_M, MX_KEY_SERVERS,
        MX_KEY_SERVER_USER, MX_KEY_OUTBOX, MX_KEY_PARTIAL, MX_KEY_STATE_NM,
        MX_KEY_AUTH, MX_KEY_AUTH_NM
    };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "Unrecognized request: only GET "
                                          "is supported here");
    }

    ctx = ngx_http_matrix_ctx(r);
    st = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_state_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (ctx == NULL || st == NULL || cln == NULL
        || ngx_array_init(&st->sj.stolen, r->pool, 16, sizeof(char *))
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sj = &st->sj;
    cln->handler = ngx_http_matrix_state_cleanup;
    cln->data = sj;
    ctx->data = st;

    /* state/{roomId} or state_ids/{roomId} */

    skip = sizeof(NGX_HTTP_MATRIX_ST_PREFIX) - 1;

    if (r->unparsed_uri.len < skip + 1
        || ngx_strncmp(r->unparsed_uri.data, NGX_HTTP_MATRIX_ST_PREFIX, skip)
           != 0)
    {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_UNRECOGNIZED", "%s", shape);
    }

    if (r->unparsed_uri.len > skip + 4
        && ngx_strncmp(r->unparsed_uri.data + skip, "_ids/", 5) == 0)
    {
        st->ids = 1;
        skip += 5;

    } else if (r->unparsed_uri.data[skip] == '/') {
        skip += 1;

    } else {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_UNRECOGNIZED", "%s", shape);
    }

    invalid = ngx_http_matrix_path_param(r, skip, &seg, shape);
    if (invalid) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_UNRECOGNIZED", "%s", invalid);
    }

    sj->room_id = seg;

    /*
     * Anything but a valid room and one event_id is the homeserver's to
     * answer (its own 400s): the request goes on unchanged.
     */

    rc = ngx_http_matrix_query_arg(r, "event_id", &sj->event_id);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
    ctx->sync = 1;

    if (rc == NGX_DECLINED
        || !mx_room_id_valid((char *) seg.data, seg.len, 1)
        || ngx_strlchr(seg.data, seg.data + seg.len, '}') != NULL
        || sj->event_id.len < 2 || sj->event_id.len > 255
        || sj->event_id.data[0] != '$')
    {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "not a state request the edge answers");
        ctx->sync = 0;
        return NGX_DONE;
    }

    for (i = 0; i < SJ_NKEYS; i++) {
        if (ngx_http_matrix_room_key(r, &sj->room_id, names[i], &sj->keys[i])
            != NGX_OK)
        {
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            ctx->sync = 0;
            return NGX_DONE;
        }
    }

    argv[0] = (char *) sj->keys[SJ_META].data;
    argvlen[0] = sj->keys[SJ_META].len;
    argv[1] = (char *) sj->keys[SJ_STATE].data;
    argvlen[1] = sj->keys[SJ_STATE].len;
    argv[2] = (char *) sj->keys[SJ_PDU].data;
    argvlen[2] = sj->keys[SJ_PDU].len;

    rc = ngx_matrix_redis_script(r, MX_LUA_SEND_JOIN_META,
                                 ngx_http_matrix_state_meta, ctx, 3, 0,
                                 argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(rc));
    }

    ctx->sync = 0;

    return NGX_DONE;
}


/* {{room_version, loaded_at, stale, generation}, acl PDU} or nil */

static void
ngx_http_matrix_state_meta(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    ngx_http_matrix_state_ctx_t      *st;
    ngx_http_matrix_send_join_ctx_t  *sj;

    st = ctx->data;
    sj = &st->sj;

    if (ngx_http_matrix_send_join_meta_read(r, sj, reply, status) != NGX_OK) {
        return;
    }

    ngx_http_matrix_authenticate(r, ctx, ngx_http_matrix_state_authenticated);
}


static void
ngx_http_matrix_state_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    mx_auth_result_t              res;
    ngx_http_matrix_state_ctx_t  *st;

    st = ctx->data;

    /* Synapse: check_server_matches_acl, 403 "Server is banned from room" */

    if (st->sj.acl
        && !mx_acl_allows(json_object_get(st->sj.acl, "content"),
                          (char *) ctx->origin.data, ctx->origin.len, &res))
    {
        ngx_http_matrix_fail(r, NGX_HTTP_FORBIDDEN, "M_FORBIDDEN",
                             "Server is banned from room");
        return;
    }

    ngx_http_matrix_state_read(r, ctx);
}


static void
ngx_http_matrix_state_read(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_uint_t                         i, n;
    const char                        *argv[3 + SJ_SCRIPT_KEYS + 4];
    size_t                             argvlen[3 + SJ_SCRIPT_KEYS + 4];
    const char                        *lr[4];
    size_t                             lrlen[4];
    ngx_http_matrix_state_ctx_t       *st;
    ngx_http_matrix_send_join_ctx_t   *sj;
    static const ngx_uint_t            full[3] = {
        SJ_STATE_NM, SJ_STATE_M, SJ_AUTH
    };

    st = ctx->data;
    sj = &st->sj;

    n = 3;

    for (i = 0; i < SJ_SCRIPT_KEYS; i++) {
        argv[n] = (char *) sj->keys[i].data;
        argvlen[n++] = sj->keys[i].len;
    }

    argv[n] = sj->generation;
    argvlen[n++] = ngx_strlen(sj->generation);
    argv[n] = (char *) sj->event_id.data;
    argvlen[n++] = sj->event_id.len;
    argv[n] = st->ids ? "ids" : "pdus";
    argvlen[n++] = st->ids ? 3 : 4;
    argv[n] = (char *) ctx->origin.data;
    argvlen[n++] = ctx->origin.len;

    /* one reader of a generation's chunks at a time, as send_join */

    if (!st->ids
        && ngx_http_matrix_chunks_look(r, ctx, sj, ngx_http_matrix_state_read)
           == NGX_AGAIN)
    {
        return;
    }

    if (st->ids || sj->chunks) {
        rc = ngx_matrix_redis_script(r, MX_LUA_STATE_AT,
                                     ngx_http_matrix_state_done, ctx,
                                     SJ_SCRIPT_KEYS, 4, argv + 3,
                                     argvlen + 3);
        if (rc != NGX_OK) {
            ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     ngx_matrix_redis_status_text(rc));
        }

        return;
    }

    /* MULTI { the script; LRANGE the chunk lists } EXEC */

    if (sj->eval) {
        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = ngx_matrix_redis_script_source(MX_LUA_STATE_AT);
        argvlen[1] = ngx_strlen(argv[1]);

    } else {
        argv[0] = "EVALSHA";
        argvlen[0] = 7;
        argv[1] = ngx_matrix_redis_script_sha1(MX_LUA_STATE_AT);
        argvlen[1] = 40;
    }

    argv[2] = "16";
    argvlen[2] = 2;

    /* a cluster: MULTI on the node of the room's keys */
    ngx_matrix_redis_route((u_char *) argv[3], argvlen[3]);

    lr[0] = "MULTI";
    lrlen[0] = 5;

    rc = ngx_matrix_redis_command(NULL, NULL, NULL, 1, lr, lrlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(rc));
        return;
    }

    /* from here on the transaction must be closed: EXEC or DISCARD */

    rc = ngx_matrix_redis_command(NULL, NULL, NULL, n, argv, argvlen);

    for (i = 0; rc == NGX_OK && i < 3; i++) {
        lr[0] = "LRANGE";
        lrlen[0] = 6;
        lr[1] = (char *) sj->keys[full[i]].data;
        lrlen[1] = sj->keys[full[i]].len;
        lr[2] = "0";
        lrlen[2] = 1;
        lr[3] = "-1";
        lrlen[3] = 2;

        rc = ngx_matrix_redis_command(NULL, NULL, NULL, 4, lr, lrlen);
    }

    if (rc == NGX_OK) {
        argv[0] = "EXEC";
        argvlen[0] = 4;

        rc = ngx_matrix_redis_command(r, ngx_http_matrix_state_done, ctx, 1,
                                      argv, argvlen);
        if (rc == NGX_OK) {
            return;
        }
    }

    argv[0] = "DISCARD";
    argvlen[0] = 7;
    (void) ngx_matrix_redis_command(NULL, NULL, NULL, 1, argv, argvlen);

    ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                             ngx_matrix_redis_status_text(rc));
}


static void
ngx_http_matrix_state_done(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    ngx_int_t                          rc;
    ngx_uint_t                         multi;
    redisReply                        *res, *s;
    ngx_http_matrix_state_ctx_t       *st;
    ngx_http_matrix_send_join_ctx_t   *sj;

    st = ctx->data;
    sj = &st->sj;
    multi = (!st->ids && sj->chunks == NULL);

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: the state of \"%V\" at \"%V\": %s",
                      &sj->room_id, &sj->event_id,
                      err ? err : ngx_matrix_redis_status_text(status));
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(status));
        return;
    }

    if (!multi) {
        res = reply;

    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "the transaction was aborted");
        return;

    } else {
        res = reply->element[0];
    }

    if (res->type == REDIS_REPLY_ERROR) {
        if (multi && !sj->eval && ngx_strncmp(res->str, "NOSCRIPT", 8) == 0)
        {
            sj->eval = 1;
            ngx_http_matrix_state_read(r, ctx);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: the state of \"%V\" at \"%V\": redis error: "
                      "%s", &sj->room_id, &sj->event_id, res->str);
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "Redis failed");
        return;
    }

    if (res->type != REDIS_REPLY_ARRAY || res->elements < 1
        || res->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    s = res->element[0];

    if (s->len == 10 && ngx_strncmp(s->str, "generation", 10) == 0) {
        /* a new snapshot was switched in since step 1 */
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the snapshot changed");
        return;
    }

    if (s->len == 11 && ngx_strncmp(s->str, "not_in_room", 11) == 0) {
        /* Synapse: check_host_in_room, AuthError(403, "Host not in room.") */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "matrix: state of \"%V\" refused to \"%V\": no member "
                      "in the room", &sj->room_id, &ctx->origin);
        ngx_http_matrix_fail(r, NGX_HTTP_FORBIDDEN, "M_FORBIDDEN",
                             "Host not in room.");
        return;
    }

    if (!(s->len == 2 && ngx_strncmp(s->str, "ok", 2) == 0)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "matrix: state of \"%V\" at \"%V\" not known here: "
                      "%s%s%s", &sj->room_id, &sj->event_id, s->str,
                      res->elements > 1
                      && res->element[1]->type == REDIS_REPLY_STRING
                      ? ": " : "",
                      res->elements > 1
                      && res->element[1]->type == REDIS_REPLY_STRING
                      ? res->element[1]->str : "");
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the state at the event is not known here");
        return;
    }

    if (st->ids) {
        if (res->elements != 3) {
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        rc = ngx_http_matrix_state_ids(r, res->element[1], res->element[2]);
        ngx_http_matrix_finalize(r, rc);
        return;
    }

    if (res->elements != 4) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_http_matrix_chunks_take(r, sj, &reply->element[1], 3) != NGX_OK) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: state of \"%V\" at \"%V\" answered", &sj->room_id,
                  &sj->event_id);

    rc = ngx_http_matrix_state_answer(r, sj, res->element[1],
                                      res->element[2], res->element[3]);
    ngx_http_matrix_finalize(r, rc);
}


/* {"auth_chain_ids":[...],"pdu_ids":[...]} */

static ngx_int_t
ngx_http_matrix_state_ids(ngx_http_request_t *r, redisReply *pdus,
    redisReply *auth)
{
    size_t       i, k;
    ngx_int_t    rc;
    mx_buf_t     out = MX_BUF_INIT;
    redisReply  *list, *e;

    if (mx_buf_append_str(&out, "{\"auth_chain_ids\":[") != 0) {
        goto failed;
    }

    for (k = 0; k < 2; k++) {
        list = k ? pdus : auth;

        if (k && mx_buf_append_str(&out, "],\"pdu_ids\":[") != 0) {
            goto failed;
        }

        if (list->type != REDIS_REPLY_ARRAY) {
            continue;
        }

        for (i = 0; i < list->elements; i++) {
            e = list->element[i];

            if (e->type != REDIS_REPLY_STRING) {
                continue;
            }

            if ((i && mx_buf_append_byte(&out, ',') != 0)
                || mx_json_canonical_string(e->str, e->len, &out) != 0)
            {
                goto failed;
            }
        }
    }

    if (mx_buf_append_str(&out, "]}") != 0) {
        goto failed;
    }

    rc = ngx_http_matrix_send_json(r, NGX_HTTP_OK, (u_char *) out.data,
                                   out.len, 1);
    mx_buf_free(&out);

    return rc;

failed:

    mx_buf_free(&out);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static void
ngx_http_matrix_state_cleanup(void *data)
{
    ngx_http_matrix_send_join_ctx_t *sj = data;

    ngx_uint_t   i;
    char       **s;

    ngx_http_matrix_chunks_end(sj);
    json_decref(sj->acl);

    s = sj->stolen.elts;

    for (i = 0; i < sj->stolen.nelts; i++) {
        free(s[i]);
    }
}


char *
ngx_http_matrix_state(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t   *mlcf = conf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    mlcf->endpoint = NGX_HTTP_MATRIX_EP_STATE;        /* matrix_metrics */

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_state_handler,
                                       &mmcf->fed_users);
}
