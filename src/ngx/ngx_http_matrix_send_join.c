/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * PUT /_matrix/federation/v{1,2}/send_join/{roomId}/{eventId}
 *
 * The steps, each one Redis round trip or a key lookup at most:
 *   1. the body (at most 64 KiB, in memory), the room's version and
 *      snapshot generation (script SEND_JOIN_META), the fallback decision;
 *   2. X-Matrix, the server ACL, the join rate;
 *   3. the PDU: format, shape, the signers' keys, the signatures (src/core);
 *   4. the state at the join's prev_events (script SEND_JOIN_STATE): the
 *      auth events selection and the join rules (src/core), the allowed
 *      rooms of a restricted room; our signature when we authorise;
 *   5. MULTI { accept (script SEND_JOIN_ACCEPT), LRANGE of the chunks }
 *      EXEC: the join is applied and queued for the homeserver in the same
 *      moment as the chunks are read, and the answer is those chunks, with
 *      what the script adds and cuts, sent as they came from Redis.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_join.h"
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
#define NGX_HTTP_MATRIX_SJ_KEYS_MAX    8
#define NGX_HTTP_MATRIX_SJ_TRIES       3

enum {
    SJ_META = 0, SJ_STATE, SJ_MEMBER, SJ_PDU, SJ_EXTREM, SJ_EDGE,
    SJ_EDGE_PDU, SJ_EDGE_M, SJ_EDGE_OLD, SJ_EDGE_ORIG, SJ_MCHUNK,
    SJ_STATE_M, SJ_SERVERS, SJ_SERVER_USER, SJ_OUTBOX, SJ_PARTIAL,
    SJ_STATE_NM, SJ_AUTH, SJ_AUTH_NM, SJ_NKEYS
};

#define SJ_SCRIPT_KEYS  16      /* the scripts take the first 16 */


typedef struct {
    u_char                      *data;
    size_t                       len;
} ngx_http_matrix_span_t;


typedef struct {
    ngx_str_t                    room_id;
    ngx_str_t                    event_id;      /* from the path */
    ngx_uint_t                   v1;
    ngx_uint_t                   omit;
    ngx_str_t                    keys[SJ_NKEYS];

    u_char                      *body;
    size_t                       body_len;

    const mx_room_version_t     *rv;
    char                        *generation;
    json_t                      *acl;

    json_t                      *content;       /* ctx->content's owner */
    json_t                      *pdu;
    char                         id[MX_EVENT_ID_MAX];
    const char                  *sender;
    const char                  *server;        /* the sender's, NUL'ed */
    const char                  *authoriser;
    char                        *prevs;         /* JSON array of IDs */
    char                        *auth_ids;      /* JSON array of IDs */

    /* keys to bring into memory before the signatures are checked */
    char                        *key_server[NGX_HTTP_MATRIX_SJ_KEYS_MAX];
    char                        *key_id[NGX_HTTP_MATRIX_SJ_KEYS_MAX];
    ngx_uint_t                   nkeys;
    ngx_uint_t                   next_key;

    /* the state at prev_events */
    json_t                      *create, *power_levels, *join_rules;
    char                        *create_id, *power_levels_id, *join_rules_id;
    json_t                      *member;        /* the sender's */
    char                        *member_id;
    json_t                      *auth_member;   /* the authoriser's */
    char                        *auth_member_id;

    ngx_http_matrix_allow_t      allow;

    /* the join as accepted */
    char                        *accepted;      /* canonical, malloc'ed */
    size_t                       accepted_len;
    char                         refhash[mx_b64_encoded_len(MX_SHA256_LEN)
                                         + 1];
    ngx_uint_t                   tries;
    ngx_uint_t                   eval;          /* EVAL, not EVALSHA */

    /* reply strings taken over from hiredis, freed with the request */
    ngx_array_t                  stolen;        /* of char * */

    /* the chunk lists of the answer: the worker's copy, or this answer's */
    ngx_matrix_chunks_t         *chunks;
    ngx_uint_t                   filling;   /* this request reads them */
    ngx_event_t                  wait;      /* for another one's reading */
} ngx_http_matrix_send_join_ctx_t;


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
static void ngx_http_matrix_send_join_read_state(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_send_join_state(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static void ngx_http_matrix_send_join_decide(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_send_join_accept(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_send_join_accepted(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static ngx_int_t ngx_http_matrix_send_join_answer(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *res);
static void ngx_http_matrix_send_join_wait(ngx_event_t *ev);
static void ngx_http_matrix_send_join_cleanup(void *data);


/* mx_auth's view of the state at the join's prev_events */

static const json_t *
ngx_http_matrix_send_join_get(void *data, const char *type,
    const char *state_key)
{
    ngx_http_matrix_send_join_ctx_t *sj = data;

    if (ngx_strcmp(type, "m.room.member") == 0) {
        if (ngx_strcmp(state_key, sj->sender) == 0) {
            return sj->member;
        }

        if (sj->authoriser && ngx_strcmp(state_key, sj->authoriser) == 0) {
            return sj->auth_member;
        }

        return NULL;
    }

    if (state_key[0] != '\0') {
        return NULL;
    }

    if (ngx_strcmp(type, "m.room.create") == 0) {
        return sj->create;
    }

    if (ngx_strcmp(type, "m.room.power_levels") == 0) {
        return sj->power_levels;
    }

    if (ngx_strcmp(type, "m.room.join_rules") == 0) {
        return sj->join_rules;
    }

    if (ngx_strcmp(type, "m.room.server_acl") == 0) {
        return sj->acl;
    }

    return NULL;
}


static const char *
ngx_http_matrix_send_join_id(void *data, const char *type,
    const char *state_key)
{
    ngx_http_matrix_send_join_ctx_t *sj = data;

    if (ngx_strcmp(type, "m.room.member") == 0) {
        if (ngx_strcmp(state_key, sj->sender) == 0) {
            return sj->member_id;
        }

        if (sj->authoriser && ngx_strcmp(state_key, sj->authoriser) == 0) {
            return sj->auth_member_id;
        }

        return NULL;
    }

    if (state_key[0] != '\0') {
        return NULL;
    }

    if (ngx_strcmp(type, "m.room.create") == 0) {
        return sj->create_id;
    }

    if (ngx_strcmp(type, "m.room.power_levels") == 0) {
        return sj->power_levels_id;
    }

    if (ngx_strcmp(type, "m.room.join_rules") == 0) {
        return sj->join_rules_id;
    }

    return NULL;
}


static int
ngx_http_matrix_send_join_room_joined(void *data, const char *room_id,
    const char *user)
{
    ngx_http_matrix_send_join_ctx_t *sj = data;

    return ngx_http_matrix_allow_joined(&sj->allow, room_id);
}


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


/* {{room_version, loaded_at, stale, generation}, acl PDU} or nil */

static void
ngx_http_matrix_send_join_meta(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    mx_err_t                          e;
    redisReply                       *meta, *v;
    const char                       *why;
    ngx_http_matrix_send_join_ctx_t  *sj;

    sj = ctx->data;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "Unknown room (not in the cache)");
        return;
    }

    meta = reply->element[0];

    if (reply->elements != 2 || meta->type != REDIS_REPLY_ARRAY
        || meta->elements != 4)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    why = ngx_http_matrix_snapshot_unusable(r, meta->element[1],
                                            meta->element[2]);
    if (why) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND, why);
        return;
    }

    v = meta->element[0];
    sj->rv = (v->type == REDIS_REPLY_STRING) ? mx_room_version(v->str, v->len)
                                             : NULL;
    if (sj->rv == NULL) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the cached room has an unknown version");
        return;
    }

    sj->generation = ngx_http_matrix_reply_str(r, meta->element[3]);
    if (sj->generation == NULL) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the snapshot was loaded without what "
                                 "send_join needs (load it again with this "
                                 "version of matrix-join-ctl)");
        return;
    }

    v = reply->element[1];

    if (v->type == REDIS_REPLY_STRING) {
        sj->acl = ngx_matrix_pdu_parse(v->str, v->len, &e);
        if (sj->acl == NULL) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "matrix: a cached event of \"%V\" is not JSON: %s",
                          &sj->room_id, e.text);
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
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


/* A JSON array of the IDs of a PDU's prev_events or auth_events. */

static char *
ngx_http_matrix_send_join_ids(ngx_http_request_t *r,
    const mx_room_version_t *rv, const json_t *refs)
{
    size_t   i;
    char    *s, *out;
    size_t   len;
    json_t  *ids, *ref;

    ids = json_array();
    if (ids == NULL) {
        return NULL;
    }

    json_array_foreach(refs, i, ref) {
        if (rv->event_refs_with_hashes) {
            ref = json_array_get(ref, 0);
        }

        if (json_is_string(ref)) {
            json_array_append(ids, ref);
        }
    }

    s = mx_json_canonical_str(ids, &len, NULL);
    json_decref(ids);

    if (s == NULL) {
        return NULL;
    }

    out = ngx_pnalloc(r->pool, len + 1);
    if (out) {
        ngx_memcpy(out, s, len + 1);
    }

    free(s);

    return out;
}


/* 4. the state at prev_events */

static void
ngx_http_matrix_send_join_read_state(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_uint_t                         i;
    const char                        *argv[SJ_SCRIPT_KEYS + 4];
    size_t                             argvlen[SJ_SCRIPT_KEYS + 4];
    ngx_http_matrix_send_join_ctx_t   *sj;

    sj = ctx->data;

    if (sj->prevs == NULL) {
        sj->prevs = ngx_http_matrix_send_join_ids(r, sj->rv,
                        json_object_get(sj->pdu, "prev_events"));
        sj->auth_ids = ngx_http_matrix_send_join_ids(r, sj->rv,
                           json_object_get(sj->pdu, "auth_events"));

        if (sj->prevs == NULL || sj->auth_ids == NULL) {
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    for (i = 0; i < SJ_SCRIPT_KEYS; i++) {
        argv[i] = (char *) sj->keys[i].data;
        argvlen[i] = sj->keys[i].len;
    }

    argv[i] = sj->generation;
    argvlen[i++] = ngx_strlen(sj->generation);
    argv[i] = sj->sender;
    argvlen[i++] = ngx_strlen(sj->sender);
    argv[i] = sj->authoriser ? sj->authoriser : "";
    argvlen[i++] = sj->authoriser ? ngx_strlen(sj->authoriser) : 0;
    argv[i] = sj->prevs;
    argvlen[i++] = ngx_strlen(sj->prevs);

    rc = ngx_matrix_redis_script(r, MX_LUA_SEND_JOIN_STATE,
                                 ngx_http_matrix_send_join_state, ctx,
                                 SJ_SCRIPT_KEYS, 4, argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(rc),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(rc));
    }
}


static ngx_int_t
ngx_http_matrix_send_join_event(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *id, redisReply *pdu,
    char **id_out, json_t **pdu_out)
{
    mx_err_t  err;

    *id_out = ngx_http_matrix_reply_str(r, id);

    if (pdu == NULL || pdu->type != REDIS_REPLY_STRING) {
        return NGX_OK;
    }

    *pdu_out = ngx_matrix_pdu_parse(pdu->str, pdu->len, &err);
    if (*pdu_out == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: a cached event of \"%V\" is not JSON: %s",
                      &sj->room_id, err.text);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_matrix_send_join_state(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    const char                       *rule;
    mx_membership_e                   ms;
    redisReply                       *s;
    ngx_http_matrix_send_join_ctx_t  *sj;
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    sj = ctx->data;

    if (status != NGX_MATRIX_REDIS_OK) {
        /* nothing is stored yet: the homeserver can take it */
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(status),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    s = reply->element[0];

    if (s->len != 2 || ngx_strncmp(s->str, "ok", 2) != 0) {

        if (s->len == 7 && ngx_strncmp(s->str, "unknown", 7) == 0) {
            mlcf = ngx_http_get_module_loc_conf(r,
                                                ngx_http_matrix_join_module);

            if (mlcf->fallback.len == 0) {
                ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_BAD_JSON",
                                     "The prev_event \"%*s\" is not known "
                                     "here", reply->elements > 1
                                     ? reply->element[1]->len : (size_t) 0,
                                     reply->elements > 1
                                     ? reply->element[1]->str : "");
                return;
            }

            ngx_http_matrix_fallback(r, NGX_HTTP_BAD_REQUEST,
                                     "a prev_event of the join is not known "
                                     "to the snapshot");
            return;
        }

        /* gone, or loaded again meanwhile */
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the snapshot changed while the join was "
                                 "checked");
        return;
    }

    if (reply->elements != 11) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_http_matrix_send_join_event(r, sj, reply->element[1],
                                        reply->element[4], &sj->create_id,
                                        &sj->create) != NGX_OK
        || ngx_http_matrix_send_join_event(r, sj, reply->element[2],
                                           reply->element[5],
                                           &sj->power_levels_id,
                                           &sj->power_levels) != NGX_OK
        || ngx_http_matrix_send_join_event(r, sj, reply->element[3],
                                           reply->element[6],
                                           &sj->join_rules_id,
                                           &sj->join_rules) != NGX_OK
        || ngx_http_matrix_send_join_event(r, sj, reply->element[7],
                                           reply->element[8], &sj->member_id,
                                           &sj->member) != NGX_OK
        || ngx_http_matrix_send_join_event(r, sj, reply->element[9],
                                           reply->element[10],
                                           &sj->auth_member_id,
                                           &sj->auth_member) != NGX_OK)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* a restricted room asks other rooms whether the user is in them */

    rule = json_string_value(json_object_get(
               json_object_get(sj->join_rules, "content"), "join_rule"));
    ms = mx_auth_membership(ngx_http_matrix_send_join_get, sj, sj->sender);

    if (rule && ms != MX_MEMBERSHIP_JOIN && ms != MX_MEMBERSHIP_INVITE
        && ((sj->rv->restricted && ngx_strcmp(rule, "restricted") == 0)
            || (sj->rv->knock_restricted
                && ngx_strcmp(rule, "knock_restricted") == 0)))
    {
        sj->allow.user = sj->sender;
        sj->allow.n = mx_auth_allow_rooms(
                          json_object_get(sj->join_rules, "content"),
                          sj->allow.rooms, NGX_HTTP_MATRIX_ALLOW_ROOMS_MAX);

        ngx_http_matrix_allow_check(r, ctx, &sj->allow,
                                    ngx_http_matrix_send_join_decide);
        return;
    }

    ngx_http_matrix_send_join_decide(r, ctx);
}




/* The auth events, the restricted conditions, the join rules; we sign. */

static void
ngx_http_matrix_send_join_decide(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    size_t                             n;
    mx_err_t                           err;
    mx_auth_e                          code;
    const char                        *ids[MX_AUTH_EVENTS_MAX];
    const char                        *joined[1];
    uint8_t                            hash[MX_SHA256_LEN];
    mx_auth_result_t                   res;
    mx_auth_resident_t                 me;
    ngx_http_matrix_send_join_ctx_t   *sj;
    ngx_http_matrix_join_srv_conf_t   *mscf;

    sj = ctx->data;
    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    /* restricted rooms: the conditions, with the named authoriser */

    ngx_memzero(&me, sizeof(mx_auth_resident_t));
    me.server = (char *) mscf->server_name.data;
    me.room_joined = ngx_http_matrix_send_join_room_joined;
    me.room_data = sj;

    if (sj->authoriser
        && mx_auth_membership(ngx_http_matrix_send_join_get, sj,
                              sj->authoriser) == MX_MEMBERSHIP_JOIN)
    {
        joined[0] = sj->authoriser;
        me.local_joined = joined;
        me.nlocal = 1;
    }

    code = mx_auth_restricted(sj->rv, ngx_http_matrix_send_join_get, sj,
                              sj->sender, &me, &res);

    if (code == MX_AUTH_UNABLE_TO_AUTHORISE) {
        /* an allowed room we do not cache: the homeserver can tell */
        ngx_http_matrix_undecided(r, res.status, res.errcode, "%s",
                                  res.rule);
        return;
    }

    if (code != MX_AUTH_ALLOW && code != MX_AUTH_AUTHORISED
        && !(code == MX_AUTH_UNABLE_TO_GRANT && sj->authoriser))
    {
        ngx_http_matrix_fail(r, res.status, res.errcode, "%s", res.rule);
        return;
    }

    /* the join rules, with the authoriser the event names */

    code = mx_auth_join(sj->rv, ngx_http_matrix_send_join_get, sj,
                        sj->sender, sj->sender, sj->authoriser, &res);

    if (code != MX_AUTH_ALLOW && code != MX_AUTH_AUTHORISED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "matrix: send_join of \"%s\" refused: %s", sj->id,
                      res.rule);
        ngx_http_matrix_fail(r, res.status, res.errcode, "%s", res.rule);
        return;
    }

    /*
     * auth_events: exactly the selection from the state at prev_events.
     * After the rules: a banned user whose join names the wrong auth
     * events is told 403, as Complement's TestBannedUserCannotSendJoin
     * expects.
     */

    if (mx_auth_event_refs(sj->rv, json_object_get(sj->pdu, "auth_events"),
                           ids, &n, &res) != MX_AUTH_ALLOW
        || mx_auth_check_auth_events(sj->rv, MX_MEMBERSHIP_JOIN, sj->sender,
                                     sj->authoriser, ids, n,
                                     ngx_http_matrix_send_join_id, sj, &res)
           != MX_AUTH_ALLOW)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "matrix: send_join of \"%s\" refused: %s", sj->id,
                      res.rule);
        ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_BAD_JSON",
                             "%s", res.rule);
        return;
    }

    /* §2.3: we authorise it, so we sign it, before anything is stored */

    if (sj->authoriser) {
        if (mscf->keyset == NULL || mscf->keyset->keys == NULL
            || mx_event_sign(sj->rv, sj->pdu,
                             (char *) mscf->server_name.data,
                             &mscf->keyset->keys[0], &err) != 0)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "matrix: cannot sign the restricted join \"%s\"",
                          sj->id);
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    sj->accepted = mx_json_canonical_str(sj->pdu, &sj->accepted_len, &err);

    if (sj->accepted == NULL
        || mx_event_reference_hash(sj->rv, sj->pdu, hash, &err) != 0)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    mx_b64_encode(sj->refhash, hash, MX_SHA256_LEN, MX_B64_STD);

    ngx_http_matrix_send_join_accept(r, ctx);
}


/* Every Authorization header, in order, joined by "\n". */

static ngx_int_t
ngx_http_matrix_send_join_authorization(ngx_http_request_t *r, ngx_str_t *out)
{
    u_char           *p;
    size_t            len;
    ngx_uint_t        i, pass;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = 0;
    p = NULL;

    for (pass = 0; pass < 2; pass++) {
        part = &r->headers_in.headers.part;
        h = part->elts;

        for (i = 0; /* void */; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].key.len != sizeof("Authorization") - 1
                || ngx_strncasecmp(h[i].key.data, (u_char *) "Authorization",
                                   sizeof("Authorization") - 1) != 0)
            {
                continue;
            }

            if (pass == 0) {
                len += h[i].value.len + 1;
                continue;
            }

            if (p != out->data) {
                *p++ = '\n';
            }

            p = ngx_cpymem(p, h[i].value.data, h[i].value.len);
        }

        if (pass == 0) {
            out->data = ngx_pnalloc(r->pool, len + 1);
            if (out->data == NULL) {
                return NGX_ERROR;
            }

            p = out->data;
        }
    }

    out->len = p - out->data;

    return NGX_OK;
}


/* 5. MULTI { accept; LRANGE the chunks } EXEC */

static void
ngx_http_matrix_send_join_accept(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_str_t                          authz, rooms, depth, ts;
    ngx_uint_t                         i, n, nlists;
    const char                        *argv[3 + SJ_SCRIPT_KEYS + 19];
    size_t                             argvlen[3 + SJ_SCRIPT_KEYS + 19];
    const char                        *lr[4];
    size_t                             lrlen[4];
    static const ngx_uint_t            full[3] = {
        SJ_STATE_NM, SJ_STATE_M, SJ_AUTH
    };
    static const ngx_uint_t            partial[2] = { SJ_STATE_NM, SJ_AUTH_NM };
    ngx_http_matrix_send_join_ctx_t   *sj;
    ngx_http_matrix_join_srv_conf_t   *mscf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    sj = ctx->data;
    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    /*
     * The worker holds this generation's chunks already: the script alone
     * will do (it answers "generation" when the snapshot is not the one
     * they belong to). Else one request reads them from Redis, and the
     * others wait for its copy rather than read the same megabytes.
     */

    ngx_matrix_chunks_release(sj->chunks);
    sj->chunks = ngx_matrix_chunks_get(&sj->room_id, sj->generation,
                                       sj->omit);

    if (sj->chunks == NULL && !sj->filling) {
        if (!ngx_matrix_chunks_fill_start(&sj->room_id, sj->generation,
                                          sj->omit,
                                          mmcf->redis.timeout + 500))
        {
            sj->wait.handler = ngx_http_matrix_send_join_wait;
            sj->wait.data = r;
            sj->wait.log = r->connection->log;
            ngx_add_timer(&sj->wait, 5);
            return;
        }

        sj->filling = 1;
    }

    if (ngx_http_matrix_send_join_authorization(r, &authz) != NGX_OK) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    depth.data = ngx_pnalloc(r->pool, 2 * NGX_INT64_LEN);

    if (depth.data == NULL
        || ngx_http_matrix_global_key(r, NGX_HTTP_MATRIX_KEY_OUTBOX_ROOMS,
                                      NULL, 0, &rooms)
           != NGX_OK)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    depth.len = ngx_sprintf(depth.data, "%L",
                            (int64_t) json_integer_value(
                                json_object_get(sj->pdu, "depth")))
                - depth.data;
    ts.data = depth.data + NGX_INT64_LEN;
    ts.len = ngx_sprintf(ts.data, "%L", ngx_http_matrix_now_ms()) - ts.data;

    /* the forwarder's index of rooms with an outbox; harmless if alone */

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = (char *) rooms.data;
    argvlen[1] = rooms.len;
    argv[2] = (char *) sj->room_id.data;
    argvlen[2] = sj->room_id.len;

    rc = ngx_matrix_redis_command(NULL, NULL, NULL, 3, argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fail(r, ngx_matrix_redis_http_status(rc),
                             "M_UNKNOWN", "%s",
                             ngx_matrix_redis_status_text(rc));
        return;
    }

    /* the script's keys and arguments, after EVALSHA sha 16 */

    n = 3;

    for (i = 0; i < SJ_SCRIPT_KEYS; i++) {
        argv[n] = (char *) sj->keys[i].data;
        argvlen[n++] = sj->keys[i].len;
    }

#define SJ_ARG(s, l)  argv[n] = (const char *) (s); argvlen[n++] = (l)

    SJ_ARG(sj->generation, ngx_strlen(sj->generation));
    SJ_ARG(sj->id, ngx_strlen(sj->id));
    SJ_ARG(sj->sender, ngx_strlen(sj->sender));
    SJ_ARG(sj->server, ngx_strlen(sj->server));
    SJ_ARG(depth.data, depth.len);
    SJ_ARG(sj->refhash, ngx_strlen(sj->refhash));
    SJ_ARG(sj->rv->event_refs_with_hashes ? "1" : "0", 1);
    SJ_ARG(sj->accepted, sj->accepted_len);
    SJ_ARG(sj->prevs, ngx_strlen(sj->prevs));
    SJ_ARG(sj->omit ? "1" : "0", 1);
    SJ_ARG(sj->auth_ids, ngx_strlen(sj->auth_ids));
    SJ_ARG(r->method_name.data, r->method_name.len);
    SJ_ARG(r->unparsed_uri.data, r->unparsed_uri.len);
    SJ_ARG(authz.data, authz.len);
    SJ_ARG(sj->body, sj->body_len);
    SJ_ARG(ctx->origin.data, ctx->origin.len);
    SJ_ARG(mscf->server_name.data, mscf->server_name.len);
    SJ_ARG(ts.data, ts.len);
    SJ_ARG(sj->authoriser ? sj->authoriser : "",
           sj->authoriser ? ngx_strlen(sj->authoriser) : 0);

#undef SJ_ARG

    if (sj->chunks) {
        rc = ngx_matrix_redis_script(r, MX_LUA_SEND_JOIN_ACCEPT,
                                     ngx_http_matrix_send_join_accepted, ctx,
                                     SJ_SCRIPT_KEYS, n - 3 - SJ_SCRIPT_KEYS,
                                     argv + 3, argvlen + 3);
        if (rc != NGX_OK) {
            ngx_http_matrix_fail(r, ngx_matrix_redis_http_status(rc),
                                 "M_UNKNOWN", "%s",
                                 ngx_matrix_redis_status_text(rc));
        }

        return;
    }

    /* else MULTI { the script; LRANGE the chunk lists } EXEC */

    if (sj->eval) {
        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = ngx_matrix_redis_script_source(
                      MX_LUA_SEND_JOIN_ACCEPT);
        argvlen[1] = ngx_strlen(argv[1]);

    } else {
        argv[0] = "EVALSHA";
        argvlen[0] = 7;
        argv[1] = ngx_matrix_redis_script_sha1(
                      MX_LUA_SEND_JOIN_ACCEPT);
        argvlen[1] = 40;
    }

    argv[2] = "16";
    argvlen[2] = 2;

    lr[0] = "MULTI";
    lrlen[0] = 5;

    rc = ngx_matrix_redis_command(NULL, NULL, NULL, 1, lr, lrlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fail(r, ngx_matrix_redis_http_status(rc),
                             "M_UNKNOWN", "%s",
                             ngx_matrix_redis_status_text(rc));
        return;
    }

    /* from here on the transaction must be closed: EXEC or DISCARD */

    rc = ngx_matrix_redis_command(NULL, NULL, NULL, n, argv, argvlen);

    nlists = sj->omit ? 2 : 3;

    for (i = 0; rc == NGX_OK && i < nlists; i++) {
        lr[0] = "LRANGE";
        lrlen[0] = 6;
        lr[1] = (char *) sj->keys[sj->omit ? partial[i] : full[i]].data;
        lrlen[1] = sj->keys[sj->omit ? partial[i] : full[i]].len;
        lr[2] = "0";
        lrlen[2] = 1;
        lr[3] = "-1";
        lrlen[3] = 2;

        rc = ngx_matrix_redis_command(NULL, NULL, NULL, 4, lr, lrlen);
    }

    if (rc == NGX_OK) {
        argv[0] = "EXEC";
        argvlen[0] = 4;

        rc = ngx_matrix_redis_command(r, ngx_http_matrix_send_join_accepted,
                                      ctx, 1, argv, argvlen);
        if (rc == NGX_OK) {
            return;
        }
    }

    argv[0] = "DISCARD";
    argvlen[0] = 7;
    (void) ngx_matrix_redis_command(NULL, NULL, NULL, 1, argv, argvlen);

    ngx_http_matrix_fail(r, ngx_matrix_redis_http_status(rc), "M_UNKNOWN",
                         "%s", ngx_matrix_redis_status_text(rc));
}


static void
ngx_http_matrix_send_join_accepted(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    ngx_int_t                          rc;
    redisReply                        *res, *s;
    ngx_http_matrix_send_join_ctx_t   *sj;
    ngx_http_matrix_join_loc_conf_t   *mlcf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    sj = ctx->data;

    if (sj->filling && sj->chunks == NULL) {
        /* whatever came, the waiting requests look again (the copy is
         * made below, before any of them runs) */
        ngx_matrix_chunks_fill_end(&sj->room_id, sj->generation, sj->omit);
        sj->filling = 0;
    }

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: accepting \"%s\" into \"%V\" failed: %s",
                      sj->id, &sj->room_id,
                      err ? err : ngx_matrix_redis_status_text(status));
        ngx_http_matrix_fail(r, ngx_matrix_redis_http_status(status),
                             "M_UNKNOWN", "%s",
                             ngx_matrix_redis_status_text(status));
        return;
    }

    if (sj->chunks) {
        res = reply;      /* the script alone: the chunks are the worker's */

    } else if (reply->type != REDIS_REPLY_ARRAY
               || reply->elements != (sj->omit ? 3 : 4))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: accepting \"%s\": the transaction was "
                      "aborted", sj->id);
        ngx_http_matrix_finalize(r, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;

    } else {
        res = reply->element[0];
    }

    if (res->type == REDIS_REPLY_ERROR) {
        if (!sj->eval && ngx_strncmp(res->str, "NOSCRIPT", 8) == 0) {
            /* the script cache was flushed: send the source this time */
            sj->eval = 1;
            ngx_http_matrix_send_join_accept(r, ctx);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: accepting \"%s\" into \"%V\": redis error: "
                      "%s", sj->id, &sj->room_id, res->str);
        ngx_http_matrix_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "M_UNKNOWN",
                             "The join could not be stored");
        return;
    }

    if (res->type != REDIS_REPLY_ARRAY || res->elements < 1
        || res->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    s = res->element[0];

    if (s->len == 10 && ngx_strncmp(s->str, "generation", 10) == 0
        && ++sj->tries < NGX_HTTP_MATRIX_SJ_TRIES)
    {
        /* a new snapshot was switched in since step 4: check again */
        ngx_http_matrix_send_join_read_state(r, ctx);
        return;
    }

    if (s->len == 8 && ngx_strncmp(s->str, "conflict", 8) == 0) {
        /*
         * The ID is a snapshot event's: a v1/v2 ID taken from another
         * event, or this very join, put into the snapshot by a sync
         * before it reached the homeserver and now sent again. The
         * homeserver tells the two apart; without it, 400.
         */
        mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

        if (mlcf->fallback.len) {
            ngx_http_matrix_fallback(r, NGX_HTTP_BAD_REQUEST,
                                     "the join's event ID is already in the "
                                     "snapshot");
            return;
        }

        ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_BAD_JSON",
                             "The event ID \"%s\" is already in the room's "
                             "snapshot", sj->id);
        return;
    }

    if (!((s->len == 2 && ngx_strncmp(s->str, "ok", 2) == 0)
          || (s->len == 3 && ngx_strncmp(s->str, "dup", 3) == 0)))
    {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the snapshot changed while the join was "
                                 "accepted");
        return;
    }

    if (res->elements != 8) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: join \"%s\" of \"%s\" to \"%V\" %s", sj->id,
                  sj->sender, &sj->room_id,
                  s->len == 2 ? "accepted" : "accepted before (a retry)");

    if (sj->chunks == NULL) {
        mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

        sj->chunks = ngx_matrix_chunks_from_replies(&sj->room_id,
                                                    sj->generation, sj->omit,
                                                    &reply->element[1],
                                                    reply->elements - 1,
                                                    mmcf->send_join_cache,
                                                    r->connection->log);
        if (sj->chunks == NULL) {
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    rc = ngx_http_matrix_send_join_answer(r, sj, res);

    ngx_http_matrix_finalize(r, rc);
}


/* ---- the answer ---------------------------------------------------------- */


typedef struct {
    ngx_http_request_t          *r;
    ngx_chain_t                 *first;
    ngx_chain_t                **last;
    off_t                        len;
    ngx_uint_t                   items;     /* in the current array */
} ngx_http_matrix_out_t;


static ngx_int_t
ngx_http_matrix_out(ngx_http_matrix_out_t *o, u_char *data, size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (len == 0) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(o->r->pool);
    cl = ngx_alloc_chain_link(o->r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->start = data;
    b->end = b->last;
    b->memory = 1;

    cl->buf = b;
    cl->next = NULL;
    *o->last = cl;
    o->last = &cl->next;
    o->len += len;

    return NGX_OK;
}


#define ngx_http_matrix_out_lit(o, s)                                         \
    ngx_http_matrix_out(o, (u_char *) s, sizeof(s) - 1)


/* One array item: a comma before every item but the first. */

static ngx_int_t
ngx_http_matrix_out_item(ngx_http_matrix_out_t *o, u_char *data, size_t len)
{
    if (len == 0) {
        return NGX_OK;
    }

    if (o->items++ && ngx_http_matrix_out_lit(o, ",") != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_matrix_out(o, data, len);
}


/*
 * A reply string's memory becomes ours: hiredis frees a string reply's
 * str only when it is not NULL, so the chunks reach the client as Redis
 * sent them, without a copy. They are freed with the request.
 */

static u_char *
ngx_http_matrix_steal(ngx_http_matrix_send_join_ctx_t *sj, redisReply *e)
{
    char  **slot;

    slot = ngx_array_push(&sj->stolen);
    if (slot == NULL) {
        return NULL;
    }

    *slot = e->str;
    e->str = NULL;

    return (u_char *) *slot;
}


typedef struct {
    ngx_uint_t                   chunk;
    size_t                       off;
    size_t                       len;
    ngx_uint_t                   in_auth;
} ngx_http_matrix_cut_t;


static int ngx_libc_cdecl
ngx_http_matrix_cut_cmp(const void *a, const void *b)
{
    const ngx_http_matrix_cut_t  *x = a, *y = b;

    if (x->chunk != y->chunk) {
        return x->chunk < y->chunk ? -1 : 1;
    }

    return x->off < y->off ? -1 : (x->off > y->off);
}


/*
 * The events of one list of chunks as array items, leaving out the cut
 * ranges (sorted). A chunk is "ev,ev,ev": between cuts the rest is split
 * into spans, each trimmed of the commas at its ends.
 */

static ngx_int_t
ngx_http_matrix_out_chunks(ngx_http_matrix_out_t *o,
    ngx_matrix_chunk_list_t *list, ngx_http_matrix_cut_t *cuts,
    ngx_uint_t ncuts)
{
    u_char      *data, *p, *end, *s, *e;
    size_t       i;
    ngx_uint_t   k;

    k = 0;

    for (i = 0; i < list->n; i++) {
        if (list->len[i] == 0) {
            continue;
        }

        data = list->data[i];
        end = data + list->len[i];
        p = data;

        while (k < ncuts && cuts[k].chunk < i) {
            k++;
        }

        for ( ;; ) {
            s = p;
            e = end;

            if (k < ncuts && cuts[k].chunk == i) {
                e = data + cuts[k].off;
                p = e + cuts[k].len;
                k++;

            } else {
                p = NULL;
            }

            while (s < e && *s == ',') {
                s++;
            }

            while (e > s && e[-1] == ',') {
                e--;
            }

            if (ngx_http_matrix_out_item(o, s, e - s) != NGX_OK) {
                return NGX_ERROR;
            }

            if (p == NULL) {
                break;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_matrix_out_strings(ngx_http_matrix_out_t *o,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *list)
{
    size_t       i;
    u_char      *data;
    redisReply  *e;

    if (list->type != REDIS_REPLY_ARRAY) {
        return NGX_OK;
    }

    for (i = 0; i < list->elements; i++) {
        e = list->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        data = ngx_http_matrix_steal(sj, e);
        if (data == NULL
            || ngx_http_matrix_out_item(o, data, e->len) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * res: {status, seq, state extra, cuts, auth extra, servers, partial
 * state, partial auth}; lists: the LRANGE replies (state_nm, state_m, auth
 * or state_nm, auth_nm).
 */

static ngx_int_t
ngx_http_matrix_send_join_answer(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *res)
{
    ngx_int_t                 rc;
    ngx_uint_t                i, n;
    redisReply               *cr;
    ngx_chain_t              *last;
    ngx_http_matrix_out_t     o;
    ngx_http_matrix_cut_t    *cuts;
    ngx_matrix_chunk_list_t  *lists, *list;
    unsigned long             c, off, len, a;

    /* full: state_nm, state_m, auth; partial: state_nm, auth_nm */

    lists = sj->chunks->lists;

    /* the member events the edge joins replaced: "c:o:l:a" */

    cr = res->element[3];
    n = (cr->type == REDIS_REPLY_ARRAY) ? cr->elements : 0;
    cuts = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_http_matrix_cut_t));
    if (cuts == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    list = sj->omit ? NULL : &lists[1];

    for (i = 0; i < n; i++) {
        if (cr->element[i]->type != REDIS_REPLY_STRING
            || sscanf(cr->element[i]->str, "%lu:%lu:%lu:%lu", &c, &off, &len,
                      &a) != 4
            || list == NULL || c >= list->n
            || off + len > list->len[c])
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "matrix: a bad member position in the snapshot of "
                          "\"%V\"", &sj->room_id);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cuts[i].chunk = c;
        cuts[i].off = off;
        cuts[i].len = len;
        cuts[i].in_auth = a;
    }

    ngx_qsort(cuts, n, sizeof(ngx_http_matrix_cut_t),
              ngx_http_matrix_cut_cmp);

    ngx_memzero(&o, sizeof(ngx_http_matrix_out_t));
    o.r = r;
    o.last = &o.first;

    if (sj->v1 && ngx_http_matrix_out_lit(&o, "[200,") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* auth_chain; a cut event that is not in the auth list goes here */

    if (ngx_http_matrix_out_lit(&o, "{\"auth_chain\":[") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (cuts[i].in_auth) {
            continue;
        }

        if (ngx_http_matrix_out_item(&o, list->data[cuts[i].chunk]
                                         + cuts[i].off, cuts[i].len)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_matrix_out_chunks(&o, &lists[sj->omit ? 1 : 2], NULL, 0)
        != NGX_OK
        || ngx_http_matrix_out_strings(&o, sj, res->element[4]) != NGX_OK
        || (sj->omit
            && ngx_http_matrix_out_strings(&o, sj, res->element[7])
               != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* event, members_omitted, servers_in_room */

    if (ngx_http_matrix_out_lit(&o, "],\"event\":") != NGX_OK
        || ngx_http_matrix_out(&o, (u_char *) sj->accepted, sj->accepted_len)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (sj->omit) {
        cr = res->element[5];

        if (ngx_http_matrix_out_lit(&o, ",\"members_omitted\":true") != NGX_OK
            || (cr->type == REDIS_REPLY_STRING
                && (ngx_http_matrix_out_lit(&o, ",\"servers_in_room\":")
                    != NGX_OK
                    || ngx_http_matrix_out(&o, (u_char *) cr->str, cr->len)
                       != NGX_OK
                    || ngx_http_matrix_steal(sj, cr) == NULL)))
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (ngx_http_matrix_out_lit(&o, ",\"members_omitted\":false")
               != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* state */

    o.items = 0;

    if (ngx_http_matrix_out_lit(&o, ",\"state\":[") != NGX_OK
        || ngx_http_matrix_out_chunks(&o, &lists[0], NULL, 0) != NGX_OK
        || (!sj->omit
            && ngx_http_matrix_out_chunks(&o, &lists[1], cuts, n) != NGX_OK)
        || ngx_http_matrix_out_strings(&o, sj, res->element[2]) != NGX_OK
        || (sj->omit
            && ngx_http_matrix_out_strings(&o, sj, res->element[6])
               != NGX_OK)
        || ngx_http_matrix_out_lit(&o, "]}") != NGX_OK
        || (sj->v1 && ngx_http_matrix_out_lit(&o, "]") != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the headers and the chain */

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = o.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    last = (ngx_chain_t *) ((u_char *) o.last
                            - offsetof(ngx_chain_t, next));
    last->buf->last_buf = (r == r->main);
    last->buf->last_in_chain = 1;

    return ngx_http_output_filter(r, o.first);
}


static void
ngx_http_matrix_send_join_wait(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_request_t     *r;
    ngx_http_matrix_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    ngx_http_matrix_send_join_accept(r, ctx);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_matrix_send_join_cleanup(void *data)
{
    ngx_http_matrix_send_join_ctx_t *sj = data;

    ngx_uint_t   i;
    char       **s;

    if (sj->wait.timer_set) {
        ngx_del_timer(&sj->wait);
    }

    if (sj->filling) {
        ngx_matrix_chunks_fill_end(&sj->room_id, sj->generation, sj->omit);
    }

    ngx_matrix_chunks_release(sj->chunks);
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

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_send_join_handler,
                                       &mmcf->fed_users);
}
