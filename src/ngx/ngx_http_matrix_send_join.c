/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * PUT /_matrix/federation/v{1,2}/send_join/{roomId}/{eventId}
 *
 * The steps, each one Redis round trip or a key lookup at most:
 *   1. the body (at most 64 KiB, in memory), the room's version and
 *      snapshot generation (src/lua/send_join_meta.lua), the fallback
 *      decision;
 *   2. X-Matrix, the server ACL, the join rate;
 *   3. the PDU: format, shape, the signers' keys, the signatures (src/core);
 *   4. the state at the join's prev_events (send_join_state.lua): the
 *      auth events selection and the join rules (src/core), the allowed
 *      rooms of a restricted room; our signature when we authorise;
 *   5. MULTI { accept (send_join_accept.lua), LRANGE of the chunks }
 *      EXEC: the join is applied and queued for the homeserver in the same
 *      moment as the chunks are read, and the answer is those chunks, with
 *      what the script adds and cuts, sent as they came from Redis.
 *
 * This file is steps 1-3; ngx_http_matrix_send_join_accept.c 4-5, and
 * ngx_http_matrix_send_join_answer.c writes the answer.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_send_join.h"
#include "ngx_matrix_chunk_cache.h"
#include "ngx_matrix_pdu_cache.h"
#include "mx_auth.h"
#include "mx_base64.h"
#include "mx_event.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_pdu.h"
#include "mx_room_version.h"
#include "mx_uri.h"


#define NGX_HTTP_MATRIX_SJ_PREFIX      "/_matrix/federation/v"


static ngx_int_t ngx_http_matrix_send_join_handler(ngx_http_request_t *r);
static const char *ngx_http_matrix_send_join_path(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj);
static void ngx_http_matrix_send_join_body(ngx_http_request_t *r);
static void ngx_http_matrix_send_join_meta(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static void ngx_http_matrix_send_join_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_send_join_rated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_send_join_next_key(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_send_join_cleanup(void *data);


/* The signature lookup: the worker's key memory, filled by key_ensure. */

static int
ngx_http_matrix_send_join_key(void *data, const char *server,
    const char *key_id, uint8_t pk[MX_ED25519_PK_LEN],
    int64_t *valid_until_ts)
{
    return ngx_http_matrix_key_get(server, key_id, pk, valid_until_ts)
           == NGX_OK ? 0 : -1;
}


static char *
ngx_http_matrix_strdup(ngx_http_request_t *r, const char *s)
{
    char    *d;
    size_t   n;

    n = ngx_strlen(s) + 1;
    d = ngx_pnalloc(r->pool, n);

    if (d) {
        ngx_memcpy(d, s, n);
    }

    return d;
}


static ngx_int_t
ngx_http_matrix_send_join_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_uint_t                         i;
    const char                        *invalid;
    ngx_pool_cleanup_t                *cln;
    ngx_http_matrix_ctx_t             *ctx;
    ngx_http_matrix_send_join_ctx_t   *sj;
    static const char  *names[SJ_NKEYS] = {
        MX_KEY_META, MX_KEY_STATE, MX_KEY_MEMBER, MX_KEY_PDU, MX_KEY_EXTREM,
        MX_KEY_EDGE, MX_KEY_EDGE_PDU, MX_KEY_EDGE_M, MX_KEY_EDGE_OLD,
        MX_KEY_EDGE_ORIG, MX_KEY_MCHUNK, MX_KEY_STATE_M, MX_KEY_SERVERS,
        MX_KEY_SERVER_USER, MX_KEY_OUTBOX, MX_KEY_PARTIAL, MX_KEY_STATE_NM,
        MX_KEY_AUTH, MX_KEY_AUTH_NM
    };

    if (r->method != NGX_HTTP_PUT) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "Unrecognized request: only PUT "
                                          "is supported here");
    }

    ctx = ngx_http_matrix_ctx(r);
    sj = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_send_join_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (ctx == NULL || sj == NULL || cln == NULL
        || ngx_array_init(&sj->stolen, r->pool, 16, sizeof(char *))
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_matrix_send_join_cleanup;
    cln->data = sj;
    ctx->data = sj;

    invalid = ngx_http_matrix_send_join_path(r, sj);
    if (invalid) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_INVALID_PARAM", "%s", invalid);
    }

    if (r->headers_in.content_length_n > MX_PDU_MAX_LEN) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          "M_TOO_LARGE",
                                          "The join is larger than %d bytes",
                                          MX_PDU_MAX_LEN);
    }

    for (i = 0; i < SJ_NKEYS; i++) {
        if (ngx_http_matrix_room_key(r, &sj->room_id, names[i], &sj->keys[i])
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* the body stays in memory: see ngx_http_matrix_send_join() */

    r->request_body_in_single_buf = 1;

    ctx->sync = 1;
    rc = ngx_http_read_client_request_body(r, ngx_http_matrix_send_join_body);
    ctx->sync = 0;

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * v{1,2}/send_join/{roomId}/{eventId} from the raw URI, and omit_members.
 * Returns NULL, or what is wrong.
 */

static const char *
ngx_http_matrix_send_join_path(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj)
{
    u_char      *p, *end;
    size_t       n;
    int          omit;
    ngx_str_t    seg[2];
    const char  *err;
    static const char  shape[] = "expected /_matrix/federation/v1/"
                                 "send_join/{roomId}/{eventId} or v2";

    p = r->unparsed_uri.data;
    end = p + r->unparsed_uri.len;
    n = sizeof(NGX_HTTP_MATRIX_SJ_PREFIX) - 1;

    if ((size_t) (end - p) < n + sizeof("1/send_join/") - 1
        || ngx_strncmp(p, NGX_HTTP_MATRIX_SJ_PREFIX, n) != 0
        || (p[n] != '1' && p[n] != '2')
        || ngx_strncmp(p + n + 1, "/send_join/", sizeof("/send_join/") - 1)
           != 0)
    {
        return shape;
    }

    sj->v1 = (p[n] == '1');
    p += n + sizeof("1/send_join/") - 1;

    err = ngx_http_matrix_path_params(r, p - r->unparsed_uri.data, seg,
                                      shape);
    if (err) {
        return err;
    }

    if (!mx_room_id_valid((char *) seg[0].data, seg[0].len, 1)
        || ngx_strlchr(seg[0].data, seg[0].data + seg[0].len, '}') != NULL)
    {
        return "roomId is not a valid room ID";
    }

    if (seg[1].len < 2 || seg[1].len > 255 || seg[1].data[0] != '$') {
        return "eventId is not a valid event ID";
    }

    sj->room_id = seg[0];
    sj->event_id = seg[1];

    /* omit_members: true or false, nothing else (MSC3706) */

    omit = mx_uri_arg_bool((char *) r->args.data, r->args.len,
                           "omit_members", 0);
    if (omit < 0) {
        return "omit_members must be true or false";
    }

    sj->omit = omit;

    return NULL;
}


/* The body is read: ask for the room's version and generation. */

static void
ngx_http_matrix_send_join_body(ngx_http_request_t *r)
{
    size_t                             len;
    u_char                            *p;
    ngx_int_t                          rc;
    ngx_chain_t                       *cl;
    const char                        *argv[3];
    size_t                             argvlen[3];
    ngx_http_matrix_ctx_t             *ctx;
    ngx_http_matrix_send_join_ctx_t   *sj;

    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);
    sj = ctx->data;

    r->read_event_handler = ngx_http_test_reading;

    if (r->request_body == NULL || r->request_body->temp_file) {
        /* more than client_body_buffer_size, which is at least 64 KiB */
        ngx_http_matrix_fail(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                             "M_TOO_LARGE", "The join is larger than %d "
                             "bytes", MX_PDU_MAX_LEN);
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->in_file && !ngx_buf_in_memory(cl->buf)) {
            ngx_http_matrix_fail(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "M_TOO_LARGE", "The join is larger than %d "
                                 "bytes", MX_PDU_MAX_LEN);
            return;
        }

        len += cl->buf->last - cl->buf->pos;
    }

    if (len > MX_PDU_MAX_LEN) {
        ngx_http_matrix_fail(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                             "M_TOO_LARGE", "The join is larger than %d "
                             "bytes", MX_PDU_MAX_LEN);
        return;
    }

    sj->body = ngx_pnalloc(r->pool, len + 1);
    if (sj->body == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = sj->body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->last > cl->buf->pos) {     /* chunked: empty bufs */
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    *p = '\0';
    sj->body_len = len;

    argv[0] = (char *) sj->keys[SJ_META].data;
    argvlen[0] = sj->keys[SJ_META].len;
    argv[1] = (char *) sj->keys[SJ_STATE].data;
    argvlen[1] = sj->keys[SJ_STATE].len;
    argv[2] = (char *) sj->keys[SJ_PDU].data;
    argvlen[2] = sj->keys[SJ_PDU].len;

    rc = ngx_matrix_redis_script(r, MX_LUA_SEND_JOIN_META,
                                 ngx_http_matrix_send_join_meta, ctx, 3, 0,
                                 argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(rc));
    }
}


/*
 * The reply of send_join_meta.lua, {{room_version, loaded_at, stale,
 * generation}, acl PDU} or nil, into sj (room version, generation, the
 * server ACL); NGX_OK, or NGX_DONE when the request was finalized: handed
 * over (not cached, stale, too old, Redis failing) or 500.
 */
ngx_int_t
ngx_http_matrix_send_join_meta_read(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *reply,
    ngx_matrix_redis_status_e status)
{
    mx_err_t     e;
    redisReply  *meta, *v;
    const char  *why;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(status));
        return NGX_DONE;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "Unknown room (not in the cache)");
        return NGX_DONE;
    }

    meta = reply->element[0];

    if (reply->elements != 2 || meta->type != REDIS_REPLY_ARRAY
        || meta->elements != 4)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    why = ngx_http_matrix_snapshot_unusable(r, meta->element[1],
                                            meta->element[2]);
    if (why) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND, why);
        return NGX_DONE;
    }

    v = meta->element[0];
    sj->rv = (v->type == REDIS_REPLY_STRING) ? mx_room_version(v->str, v->len)
                                             : NULL;
    if (sj->rv == NULL) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the cached room has an unknown version");
        return NGX_DONE;
    }

    sj->generation = ngx_http_matrix_reply_str(r, meta->element[3]);
    if (sj->generation == NULL) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the snapshot was loaded without what "
                                 "send_join needs (load it again with this "
                                 "version of matrix-join-ctl)");
        return NGX_DONE;
    }

    v = reply->element[1];

    if (v->type == REDIS_REPLY_STRING) {
        sj->acl = ngx_matrix_pdu_parse(v->str, v->len, &e);
        if (sj->acl == NULL) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "matrix: a cached event of \"%V\" is not JSON: %s",
                          &sj->room_id, e.text);
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return NGX_DONE;
        }
    }

    return NGX_OK;
}


/* {{room_version, loaded_at, stale, generation}, acl PDU} or nil */

static void
ngx_http_matrix_send_join_meta(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    mx_err_t                          e;
    ngx_http_matrix_send_join_ctx_t  *sj;

    sj = ctx->data;

    if (ngx_http_matrix_send_join_meta_read(r, sj, reply, status) != NGX_OK) {
        return;
    }

    /* X-Matrix signs the body as JSON: "content" */

    ctx->content = mx_json_parse((char *) sj->body, sj->body_len, 0, &e);
    if (ctx->content == NULL) {
        ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_NOT_JSON",
                             "Content not JSON: %s", e.text);
        return;
    }

    sj->content = ctx->content;

    /*
     * v6+: a float (or an integer out of range) is 400 M_BAD_JSON (sytest),
     * before X-Matrix, which could not rebuild the signed bytes of a body
     * that canonical JSON cannot write.
     */

    if (sj->rv->strict_json && mx_json_check_strict(ctx->content, &e) != 0) {
        ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_BAD_JSON",
                             "Bad JSON value: %s", e.text);
        return;
    }

    ngx_http_matrix_authenticate(r, ctx,
                                 ngx_http_matrix_send_join_authenticated);
}


static void
ngx_http_matrix_send_join_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    mx_auth_result_t                   res;
    ngx_http_matrix_send_join_ctx_t   *sj;

    sj = ctx->data;

    if (sj->acl
        && !mx_acl_allows(json_object_get(sj->acl, "content"),
                          (char *) ctx->origin.data, ctx->origin.len, &res))
    {
        ngx_http_matrix_fail(r, NGX_HTTP_FORBIDDEN, "M_FORBIDDEN",
                             "Server is banned from room: %s", res.rule);
        return;
    }

    ngx_http_matrix_join_rate_take(r, ctx, &sj->room_id,
                                   ngx_http_matrix_send_join_rated);
}

/* Fails r with the outcome of a core check. */

static void
ngx_http_matrix_send_join_refuse(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, mx_pdu_result_t *res)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: send_join of \"%V\" to \"%V\" refused: %s",
                  &sj->event_id, &sj->room_id, res->reason);

    ngx_http_matrix_fail(r, res->status, res->errcode, "%s", res->reason);
}


/* 3. the PDU itself, then the keys its signatures need */

static void
ngx_http_matrix_send_join_rated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    int                                n, i;
    char                               names[2][256];
    char                              *origin;
    const char                        *key_id;
    json_t                            *sigs, *v;
    mx_pdu_result_t                    res;
    ngx_http_matrix_send_join_ctx_t   *sj;
    ngx_http_matrix_join_srv_conf_t   *mscf;

    sj = ctx->data;
    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    if (mx_pdu_parse_join(sj->rv, (char *) sj->body, sj->body_len, &sj->pdu,
                          &res)
        != MX_PDU_OK)
    {
        ngx_http_matrix_send_join_refuse(r, sj, &res);
        return;
    }

    origin = ngx_pnalloc(r->pool, ctx->origin.len + 1);
    if (origin == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(origin, ctx->origin.data, ctx->origin.len);
    origin[ctx->origin.len] = '\0';

    if (mx_pdu_check_join_shape(sj->rv, sj->pdu, (char *) sj->room_id.data,
                                (char *) sj->event_id.data, origin,
                                (char *) mscf->server_name.data, sj->id,
                                &res)
        != MX_PDU_OK)
    {
        ngx_http_matrix_send_join_refuse(r, sj, &res);
        return;
    }

    sj->sender = json_string_value(json_object_get(sj->pdu, "sender"));
    sj->server = origin;
    sj->authoriser = json_string_value(json_object_get(
                         json_object_get(sj->pdu, "content"),
                         "join_authorised_via_users_server"));
    if (!sj->rv->restricted) {
        sj->authoriser = NULL;      /* a plain content key before v8 */
    }

    n = mx_pdu_join_signers(sj->rv, sj->pdu, names, &res);
    if (n < 0) {
        ngx_http_matrix_send_join_refuse(r, sj, &res);
        return;
    }

    /* every ed25519 key each required signer signed with */

    sigs = json_object_get(sj->pdu, "signatures");

    for (i = 0; i < n; i++) {
        json_object_foreach(json_object_get(sigs, names[i]), key_id, v) {
            if (ngx_strncmp(key_id, "ed25519:", 8) != 0
                || sj->nkeys == NGX_HTTP_MATRIX_SJ_KEYS_MAX)
            {
                continue;
            }

            sj->key_server[sj->nkeys] = ngx_http_matrix_strdup(r, names[i]);
            sj->key_id[sj->nkeys] = ngx_http_matrix_strdup(r, key_id);

            if (sj->key_server[sj->nkeys] == NULL
                || sj->key_id[sj->nkeys] == NULL)
            {
                ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }

            sj->nkeys++;
        }
    }

    sj->next_key = 0;
    ngx_http_matrix_send_join_next_key(r, ctx);
}


static void
ngx_http_matrix_send_join_next_key(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    mx_pdu_result_t                   res;
    ngx_http_matrix_send_join_ctx_t  *sj;

    sj = ctx->data;

    if (sj->next_key < sj->nkeys) {
        sj->next_key++;
        ngx_http_matrix_key_ensure(r, ctx, sj->key_server[sj->next_key - 1],
                                   sj->key_id[sj->next_key - 1],
                                   ngx_http_matrix_send_join_next_key);
        return;
    }

    if (mx_pdu_check_join_signatures(sj->rv, sj->pdu,
                                     ngx_http_matrix_send_join_key, sj, &res)
        != MX_PDU_OK)
    {
        ngx_http_matrix_send_join_refuse(r, sj, &res);
        return;
    }

    ngx_http_matrix_send_join_read_state(r, ctx);
}


static void
ngx_http_matrix_send_join_cleanup(void *data)
{
    ngx_http_matrix_send_join_ctx_t *sj = data;

    ngx_uint_t   i;
    char       **s;

    ngx_http_matrix_chunks_end(sj);
    json_decref(sj->content);
    json_decref(sj->pdu);
    json_decref(sj->acl);
    json_decref(sj->create);
    json_decref(sj->power_levels);
    json_decref(sj->join_rules);
    json_decref(sj->member);
    json_decref(sj->auth_member);
    free(sj->accepted);

    s = sj->stolen.elts;

    for (i = 0; i < sj->stolen.nelts; i++) {
        free(s[i]);
    }
}


char *
ngx_http_matrix_send_join(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t   *mlcf = conf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    /* the body must stay in memory: client_body_buffer_size is raised to
     * 64 KiB at merge time where it is smaller */
    mlcf->send_join = 1;
    mlcf->endpoint = NGX_HTTP_MATRIX_EP_SEND_JOIN;    /* matrix_metrics */

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_send_join_handler,
                                       &mmcf->fed_users);
}
