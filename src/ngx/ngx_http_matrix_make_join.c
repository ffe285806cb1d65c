/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=...
 *
 * One Redis script reads everything the answer needs from the room's
 * snapshot at once (version, the few state events the auth rules look at,
 * the user's membership, the forward extremities, the local users that
 * could authorise a restricted join), so the template's prev_events and
 * auth_events come from one moment. The Matrix rules are src/core's.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sodium.h>

#include "ngx_http_matrix_join.h"
#include "ngx_matrix_pdu_cache.h"
#include "mx_auth.h"
#include "mx_base64.h"
#include "mx_event.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_room_version.h"
#include "mx_uri.h"


/*
 * prev_events: the deepest 10 forward extremities, as Synapse names them
 * (get_prev_events_for_room: ORDER BY depth DESC LIMIT 10); the room
 * versions allow 20.
 */
#define NGX_HTTP_MATRIX_PREV_EVENTS_MAX   10

#define NGX_HTTP_MATRIX_MAKE_JOIN_PREFIX  "/_matrix/federation/v1/make_join/"


enum {
    MJ_CREATE = 0, MJ_POWER_LEVELS, MJ_JOIN_RULES, MJ_SERVER_ACL, MJ_MEMBER,
    MJ_NSTATE
};


typedef struct {
    ngx_str_t                    room_id;
    ngx_str_t                    user;
    const mx_room_version_t     *rv;

    json_t                      *state[MJ_NSTATE];   /* parsed PDUs */
    char                        *ids[MJ_NSTATE];
    json_t                      *members;     /* user -> minimal member ev */
    json_t                      *member_ids;  /* user -> event ID */
    json_t                      *member_pdus; /* user -> PDU (v1/v2) */
    json_t                      *extrem;      /* [{id, depth, sha256}] */
    int64_t                      our_joined;

    const char                 **local_joined;
    size_t                       nlocal;

    ngx_http_matrix_allow_t      allow;
} ngx_http_matrix_make_join_ctx_t;


static ngx_int_t ngx_http_matrix_make_join_handler(ngx_http_request_t *r);
static const char *ngx_http_matrix_make_join_path(ngx_http_request_t *r,
    ngx_http_matrix_make_join_ctx_t *mj);
static void ngx_http_matrix_make_join_read(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static ngx_int_t ngx_http_matrix_make_join_view(ngx_http_request_t *r,
    ngx_http_matrix_make_join_ctx_t *mj, redisReply *reply);
static void ngx_http_matrix_make_join_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_make_join_rated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_make_join_decide(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static json_t *ngx_http_matrix_make_join_template(ngx_http_request_t *r,
    ngx_http_matrix_make_join_ctx_t *mj, const char *authoriser);
static ngx_uint_t ngx_http_matrix_make_join_ver_ok(ngx_http_request_t *r,
    const char *version);
static void ngx_http_matrix_make_join_cleanup(void *data);


/* mx_auth's view of the snapshot */

static const json_t *
ngx_http_matrix_make_join_get(void *data, const char *type,
    const char *state_key)
{
    ngx_http_matrix_make_join_ctx_t *mj = data;

    if (ngx_strcmp(type, "m.room.member") == 0) {
        return json_object_get(mj->members, state_key);
    }

    if (state_key[0] != '\0') {
        return NULL;
    }

    if (ngx_strcmp(type, "m.room.create") == 0) {
        return mj->state[MJ_CREATE];
    }

    if (ngx_strcmp(type, "m.room.power_levels") == 0) {
        return mj->state[MJ_POWER_LEVELS];
    }

    if (ngx_strcmp(type, "m.room.join_rules") == 0) {
        return mj->state[MJ_JOIN_RULES];
    }

    if (ngx_strcmp(type, "m.room.server_acl") == 0) {
        return mj->state[MJ_SERVER_ACL];
    }

    return NULL;
}


static const char *
ngx_http_matrix_make_join_id(void *data, const char *type,
    const char *state_key)
{
    ngx_http_matrix_make_join_ctx_t *mj = data;

    if (ngx_strcmp(type, "m.room.member") == 0) {
        return json_string_value(json_object_get(mj->member_ids, state_key));
    }

    if (state_key[0] != '\0') {
        return NULL;
    }

    if (ngx_strcmp(type, "m.room.create") == 0) {
        return mj->ids[MJ_CREATE];
    }

    if (ngx_strcmp(type, "m.room.power_levels") == 0) {
        return mj->ids[MJ_POWER_LEVELS];
    }

    if (ngx_strcmp(type, "m.room.join_rules") == 0) {
        return mj->ids[MJ_JOIN_RULES];
    }

    return NULL;
}


static int
ngx_http_matrix_make_join_room_joined(void *data, const char *room_id,
    const char *user)
{
    ngx_http_matrix_make_join_ctx_t *mj = data;

    return ngx_http_matrix_allow_joined(&mj->allow, room_id);
}


static ngx_int_t
ngx_http_matrix_make_join_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_str_t                          keys[7];
    const char                        *invalid;
    ngx_uint_t                         i;
    ngx_pool_cleanup_t                *cln;
    ngx_http_matrix_ctx_t             *ctx;
    ngx_http_matrix_make_join_ctx_t   *mj;
    ngx_http_matrix_join_srv_conf_t   *mscf;
    mx_buf_t                           field = MX_BUF_INIT;
    const char                        *argv[10];
    size_t                             argvlen[10];

    static const char  *names[7] = {
        MX_KEY_META, MX_KEY_STATE, MX_KEY_MEMBER, MX_KEY_PDU, MX_KEY_EXTREM,
        MX_KEY_SERVERS, MX_KEY_SERVER_USER
    };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "Unrecognized request: only GET "
                                          "is supported here");
    }

    ctx = ngx_http_matrix_ctx(r);
    mj = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_make_join_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (ctx == NULL || mj == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_matrix_make_join_cleanup;
    cln->data = mj;
    ctx->data = mj;

    invalid = ngx_http_matrix_make_join_path(r, mj);
    if (invalid) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_INVALID_PARAM", "%s", invalid);
    }

    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    for (i = 0; i < 7; i++) {
        if (ngx_http_matrix_room_key(r, &mj->room_id, names[i], &keys[i])
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[i] = (char *) keys[i].data;
        argvlen[i] = keys[i].len;
    }

    argv[7] = (char *) mj->user.data;
    argvlen[7] = mj->user.len;
    argv[8] = (char *) mscf->server_name.data;
    argvlen[8] = mscf->server_name.len;

    /* the user's field in the state index: ["m.room.member",<user>] */

    if (mx_buf_append_str(&field, "[\"m.room.member\",") != 0
        || mx_json_canonical_string((char *) mj->user.data, mj->user.len,
                                    &field) != 0
        || mx_buf_append_byte(&field, ']') != 0)
    {
        mx_buf_free(&field);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[9] = ngx_pnalloc(r->pool, field.len);
    if (argv[9] == NULL) {
        mx_buf_free(&field);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy((char *) argv[9], field.data, field.len);
    argvlen[9] = field.len;
    mx_buf_free(&field);

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
    ctx->sync = 1;

    rc = ngx_matrix_redis_script(r, MX_LUA_MAKE_JOIN,
                                 ngx_http_matrix_make_join_read, ctx, 7, 3,
                                 argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(rc));
    }

    ctx->sync = 0;

    return NGX_DONE;
}


/*
 * {roomId}/{userId} from the raw URI, each percent-decoded and checked.
 * Returns NULL, or what is wrong with them.
 */
static const char *
ngx_http_matrix_make_join_path(ngx_http_request_t *r,
    ngx_http_matrix_make_join_ctx_t *mj)
{
    u_char      *p, *end;
    size_t       n;
    ngx_str_t    seg[2];
    const char  *err;
    static const char  shape[] = "expected /_matrix/federation/v1/"
                                 "make_join/{roomId}/{userId}";

    p = r->unparsed_uri.data;
    end = p + r->unparsed_uri.len;

    n = sizeof(NGX_HTTP_MATRIX_MAKE_JOIN_PREFIX) - 1;

    if ((size_t) (end - p) < n
        || ngx_strncmp(p, NGX_HTTP_MATRIX_MAKE_JOIN_PREFIX, n) != 0)
    {
        return shape;
    }

    err = ngx_http_matrix_path_params(r, n, seg, shape);
    if (err) {
        return err;
    }

    if (!mx_room_id_valid((char *) seg[0].data, seg[0].len, 1)
        || ngx_strlchr(seg[0].data, seg[0].data + seg[0].len, '}') != NULL)
    {
        return "roomId is not a valid room ID";
    }

    if (!mx_user_id_valid((char *) seg[1].data, seg[1].len)) {
        return "userId is not a valid user ID";
    }

    mj->room_id = seg[0];
    mj->user = seg[1];

    return NULL;
}


static void
ngx_http_matrix_make_join_read(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    ngx_int_t                          rc;
    ngx_http_matrix_make_join_ctx_t   *mj;

    mj = ctx->data;

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

    rc = ngx_http_matrix_make_join_view(r, mj, reply);

    if (rc == NGX_DECLINED) {
        return;     /* the fallback took the request */
    }

    if (rc != NGX_OK) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_matrix_authenticate(r, ctx,
                                 ngx_http_matrix_make_join_authenticated);
}


static json_t *
ngx_http_matrix_member_event(const char *user, const char *membership)
{
    return json_pack("{s:s, s:s, s:{s:s}}", "type", "m.room.member",
                     "state_key", user, "content", "membership", membership);
}


/*
 * The script's reply: {meta, ids, pdus, membership, our_score, extrem,
 * candidates}; see src/lua/make_join.lua. Everything is copied out of it.
 */
static ngx_int_t
ngx_http_matrix_make_join_view(ngx_http_request_t *r,
    ngx_http_matrix_make_join_ctx_t *mj, redisReply *reply)
{
    size_t                            i;
    json_t                           *v;
    char                             *s, *u, *ms, *id;
    const char                       *why;
    redisReply                       *meta, *ids, *pdus, *e, *c;
    mx_err_t                          err;

    if (reply->elements != 7) {
        return NGX_ERROR;
    }

    meta = reply->element[0];
    ids = reply->element[1];
    pdus = reply->element[2];

    if (meta->type != REDIS_REPLY_ARRAY || meta->elements != 4
        || ids->type != REDIS_REPLY_ARRAY || ids->elements != MJ_NSTATE
        || pdus->type != REDIS_REPLY_ARRAY || pdus->elements != MJ_NSTATE
        || reply->element[5]->type != REDIS_REPLY_ARRAY
        || reply->element[6]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    /* usable at all? */

    why = ngx_http_matrix_snapshot_unusable(r, meta->element[1],
                                            meta->element[2]);
    if (why) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND, why);
        return NGX_DECLINED;
    }

    e = meta->element[0];
    mj->rv = (e->type == REDIS_REPLY_STRING) ? mx_room_version(e->str, e->len)
                                             : NULL;
    if (mj->rv == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: room \"%V\" has an unknown room version in "
                      "the cache", &mj->room_id);
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the cached room has an unknown version");
        return NGX_DECLINED;
    }

    mj->members = json_object();
    mj->member_ids = json_object();
    mj->member_pdus = json_object();
    mj->extrem = json_array();

    if (mj->members == NULL || mj->member_ids == NULL
        || mj->member_pdus == NULL || mj->extrem == NULL)
    {
        return NGX_ERROR;
    }

    /* the four state events the rules read, and the user's own */

    for (i = 0; i < MJ_NSTATE; i++) {
        mj->ids[i] = ngx_http_matrix_reply_str(r, ids->element[i]);

        if (pdus->element[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        v = ngx_matrix_pdu_parse(pdus->element[i]->str,
                                 pdus->element[i]->len, &err);
        if (v == NULL) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "matrix: a cached event of \"%V\" is not JSON: %s",
                          &mj->room_id, err.text);
            return NGX_ERROR;
        }

        if (i == MJ_MEMBER) {
            json_object_set_new(mj->member_pdus, (char *) mj->user.data, v);

        } else {
            mj->state[i] = v;
        }
    }

    ms = ngx_http_matrix_reply_str(r, reply->element[3]);

    if (ms && mj->ids[MJ_MEMBER]) {
        json_object_set_new(mj->members, (char *) mj->user.data,
                            ngx_http_matrix_member_event(
                                (char *) mj->user.data, ms));
        json_object_set_new(mj->member_ids, (char *) mj->user.data,
                            json_string(mj->ids[MJ_MEMBER]));
    }

    /* our joined members: the score is the negated count */

    s = ngx_http_matrix_reply_str(r, reply->element[4]);
    mj->our_joined = s ? -strtoll(s, NULL, 10) : 0;

    /* forward extremities: id -> {"depth":N,"sha256":"..."} */

    e = reply->element[5];

    for (i = 0; i + 1 < e->elements; i += 2) {
        id = ngx_http_matrix_reply_str(r, e->element[i]);
        s = ngx_http_matrix_reply_str(r, e->element[i + 1]);

        if (id == NULL || s == NULL) {
            continue;
        }

        v = json_loads(s, 0, NULL);
        if (!json_is_integer(json_object_get(v, "depth"))) {
            json_decref(v);
            continue;
        }

        json_object_set_new(v, "event_id", json_string(id));
        json_array_append_new(mj->extrem, v);
    }

    if (json_array_size(mj->extrem) == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: room \"%V\" has no forward extremity in the "
                      "cache", &mj->room_id);
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the cached room has no forward extremity");
        return NGX_DECLINED;
    }

    /* local users who could authorise: {user, membership, id, pdu} */

    e = reply->element[6];

    mj->local_joined = ngx_pcalloc(r->pool,
                                   (e->elements + 1) * sizeof(char *));
    if (mj->local_joined == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < e->elements; i++) {
        c = e->element[i];

        if (c->type != REDIS_REPLY_ARRAY || c->elements != 4) {
            continue;
        }

        u = ngx_http_matrix_reply_str(r, c->element[0]);
        ms = ngx_http_matrix_reply_str(r, c->element[1]);
        id = ngx_http_matrix_reply_str(r, c->element[2]);

        if (u == NULL || ms == NULL || id == NULL) {
            continue;
        }

        json_object_set_new(mj->members, u,
                            ngx_http_matrix_member_event(u, ms));
        json_object_set_new(mj->member_ids, u, json_string(id));

        if (c->element[3]->type == REDIS_REPLY_STRING) {
            v = ngx_matrix_pdu_parse(c->element[3]->str, c->element[3]->len,
                                     NULL);
            if (v) {
                json_object_set_new(mj->member_pdus, u, v);
            }
        }

        if (ngx_strcmp(ms, "join") == 0) {
            mj->local_joined[mj->nlocal++] = u;
        }
    }

    return NGX_OK;
}


static void
ngx_http_matrix_make_join_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    json_t                            *body;
    mx_auth_result_t                   res;
    ngx_http_matrix_make_join_ctx_t   *mj;

    mj = ctx->data;

    /* 1. the room's server ACL, on the origin */

    if (mj->state[MJ_SERVER_ACL]
        && !mx_acl_allows(json_object_get(mj->state[MJ_SERVER_ACL],
                                          "content"),
                          (char *) ctx->origin.data, ctx->origin.len, &res))
    {
        ngx_http_matrix_fail(r, NGX_HTTP_FORBIDDEN, "M_FORBIDDEN",
                             "Server is banned from room: %s", res.rule);
        return;
    }

    /* 2. the room version must be one the caller knows */

    if (!ngx_http_matrix_make_join_ver_ok(r, mj->rv->id)) {
        body = json_pack("{s:s, s:s, s:s}", "errcode",
                         "M_INCOMPATIBLE_ROOM_VERSION", "error",
                         "Your homeserver does not support the features "
                         "required to join this room", "room_version",
                         mj->rv->id);
        ngx_http_matrix_finalize(r, ngx_http_matrix_send_body(r,
                                        NGX_HTTP_BAD_REQUEST, body));
        return;
    }

    /* 3. the room's join rate, shared through Redis */

    ngx_http_matrix_join_rate_take(r, ctx, &mj->room_id,
                                   ngx_http_matrix_make_join_rated);
}



static void
ngx_http_matrix_make_join_rated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    size_t                            slen;
    const char                       *server, *rule;
    mx_membership_e                   ms;
    ngx_http_matrix_make_join_ctx_t  *mj;

    mj = ctx->data;

    /* 4. the user must be the origin's */

    server = mx_id_server((char *) mj->user.data, mj->user.len, '@', &slen);

    if (server == NULL || slen != ctx->origin.len
        || ngx_strncmp(server, ctx->origin.data, slen) != 0)
    {
        ngx_http_matrix_fail(r, NGX_HTTP_FORBIDDEN, "M_FORBIDDEN",
                             "User not from origin: \"%V\" is not a user of "
                             "\"%V\"", &mj->user, &ctx->origin);
        return;
    }

    /* 5. we must still be in the room */

    if (mj->our_joined <= 0) {
        ngx_http_matrix_fail(r, NGX_HTTP_NOT_FOUND, "M_NOT_FOUND",
                             "Not an active room on this server");
        return;
    }

    /* 6. a restricted room asks other rooms whether the user is in them */

    rule = json_string_value(json_object_get(
               json_object_get(mj->state[MJ_JOIN_RULES], "content"),
               "join_rule"));
    ms = mx_auth_membership(ngx_http_matrix_make_join_get, mj,
                            (char *) mj->user.data);

    if (rule && ms != MX_MEMBERSHIP_JOIN && ms != MX_MEMBERSHIP_INVITE
        && ((mj->rv->restricted && ngx_strcmp(rule, "restricted") == 0)
            || (mj->rv->knock_restricted
                && ngx_strcmp(rule, "knock_restricted") == 0)))
    {
        mj->allow.user = (char *) mj->user.data;
        mj->allow.n = mx_auth_allow_rooms(
                          json_object_get(mj->state[MJ_JOIN_RULES], "content"),
                          mj->allow.rooms, NGX_HTTP_MATRIX_ALLOW_ROOMS_MAX);

        ngx_http_matrix_allow_check(r, ctx, &mj->allow,
                                    ngx_http_matrix_make_join_decide);
        return;
    }

    ngx_http_matrix_make_join_decide(r, ctx);
}



static void
ngx_http_matrix_make_join_decide(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    json_t                            *ev, *doc;
    mx_auth_e                          code;
    char                               who[MX_ID_MAX_LEN + 1];
    const char                        *authoriser;
    mx_auth_result_t                   res;
    mx_auth_resident_t                 me;
    ngx_http_matrix_make_join_ctx_t   *mj;
    ngx_http_matrix_join_srv_conf_t   *mscf;

    mj = ctx->data;
    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    ngx_memzero(&me, sizeof(mx_auth_resident_t));
    me.server = (char *) mscf->server_name.data;
    me.local_joined = mj->local_joined;
    me.nlocal = mj->nlocal;
    me.room_joined = ngx_http_matrix_make_join_room_joined;
    me.room_data = mj;

    authoriser = NULL;

    /* restricted rooms: the conditions, and who authorises */

    code = mx_auth_restricted(mj->rv, ngx_http_matrix_make_join_get, mj,
                              (char *) mj->user.data, &me, &res);

    if (code == MX_AUTH_AUTHORISED) {
        /* res is written again by the next check */
        ngx_cpystrn((u_char *) who, (u_char *) res.authoriser, sizeof(who));
        authoriser = who;

    } else if (code == MX_AUTH_UNABLE_TO_AUTHORISE) {
        /* an allowed room we do not cache: the homeserver can tell */
        ngx_http_matrix_undecided(r, res.status, res.errcode, "%s",
                                  res.rule);
        return;

    } else if (code != MX_AUTH_ALLOW) {
        ngx_http_matrix_fail(r, res.status, res.errcode, "%s", res.rule);
        return;
    }

    /* the join rules, as the event will be checked */

    code = mx_auth_join(mj->rv, ngx_http_matrix_make_join_get, mj,
                        (char *) mj->user.data, (char *) mj->user.data,
                        authoriser, &res);

    if (code != MX_AUTH_ALLOW && code != MX_AUTH_AUTHORISED) {
        ngx_http_matrix_fail(r, res.status, res.errcode, "%s", res.rule);
        return;
    }

    ev = ngx_http_matrix_make_join_template(r, mj, authoriser);
    if (ev == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    doc = json_pack("{s:s, s:o}", "room_version", mj->rv->id, "event", ev);

    ngx_http_matrix_finalize(r, ngx_http_matrix_send_body(r, NGX_HTTP_OK,
                                                          doc));
}


/* v1/v2 references: [id, {"sha256": <reference hash>}] */

static json_t *
ngx_http_matrix_ref(const mx_room_version_t *rv, const char *id,
    const json_t *pdu, const char *sha256)
{
    char      b64[MX_SHA256_LEN * 2];
    uint8_t   hash[MX_SHA256_LEN];

    if (!rv->event_refs_with_hashes) {
        return json_string(id);
    }

    if (sha256 == NULL) {
        if (pdu == NULL
            || mx_event_reference_hash(rv, pdu, hash, NULL) != 0)
        {
            return NULL;
        }

        mx_b64_encode(b64, hash, MX_SHA256_LEN, MX_B64_STD);
        sha256 = b64;
    }

    return json_pack("[s, {s:s}]", id, "sha256", sha256);
}


static int
ngx_http_matrix_depth_cmp(const void *a, const void *b)
{
    json_int_t  x, y;

    x = json_integer_value(json_object_get(*(json_t **) a, "depth"));
    y = json_integer_value(json_object_get(*(json_t **) b, "depth"));

    return (x < y) - (x > y);
}


static json_t *
ngx_http_matrix_make_join_template(ngx_http_request_t *r,
    ngx_http_matrix_make_join_ctx_t *mj, const char *authoriser)
{
    u_char                            rnd[12];
    char                              eid[MX_EVENT_ID_MAX];
    char                              b64[32];
    size_t                            i, n, nkeys;
    json_t                           *ev, *content, *prev, *auth, *ref, *x;
    json_t                           *sorted[NGX_HTTP_MATRIX_PREV_EVENTS_MAX];
    json_t                          **all;
    int64_t                           depth;
    const char                       *id;
    const json_t                     *pdu;
    mx_auth_key_t                     keys[MX_AUTH_KEYS_MAX];
    ngx_http_matrix_join_srv_conf_t  *mscf;

    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    /* prev_events: the deepest forward extremities, at most 10 */

    n = json_array_size(mj->extrem);
    all = ngx_palloc(r->pool, n * sizeof(json_t *));
    if (all == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        all[i] = json_array_get(mj->extrem, i);
    }

    ngx_qsort(all, n, sizeof(json_t *), ngx_http_matrix_depth_cmp);

    if (n > NGX_HTTP_MATRIX_PREV_EVENTS_MAX) {
        n = NGX_HTTP_MATRIX_PREV_EVENTS_MAX;
    }

    ngx_memcpy(sorted, all, n * sizeof(json_t *));

    depth = json_integer_value(json_object_get(sorted[0], "depth")) + 1;
    if (depth > mj->rv->max_depth) {
        depth = mj->rv->max_depth;
    }

    ev = json_object();
    content = json_pack("{s:s}", "membership", "join");
    prev = json_array();
    auth = json_array();

    if (ev == NULL || content == NULL || prev == NULL || auth == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        x = sorted[i];
        ref = ngx_http_matrix_ref(mj->rv,
                  json_string_value(json_object_get(x, "event_id")), NULL,
                  json_string_value(json_object_get(x, "sha256")));
        if (ref == NULL || json_array_append_new(prev, ref) != 0) {
            goto failed;
        }
    }

    /* auth_events: the selection for this join, from the same read */

    nkeys = mx_auth_select(mj->rv, MX_MEMBERSHIP_JOIN,
                           (char *) mj->user.data, authoriser, keys);

    for (i = 0; i < nkeys; i++) {
        id = ngx_http_matrix_make_join_id(mj, keys[i].type, keys[i].state_key);
        if (id == NULL) {
            continue;       /* "if any" */
        }

        if (ngx_strcmp(keys[i].type, "m.room.member") == 0) {
            pdu = json_object_get(mj->member_pdus, keys[i].state_key);

        } else {
            pdu = ngx_http_matrix_make_join_get(mj, keys[i].type,
                                                keys[i].state_key);
        }

        ref = ngx_http_matrix_ref(mj->rv, id, pdu, NULL);
        if (ref == NULL || json_array_append_new(auth, ref) != 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "matrix: cannot reference auth event \"%s\" of "
                          "\"%V\"", id, &mj->room_id);
            goto failed;
        }
    }

    if (authoriser
        && json_object_set_new(content, "join_authorised_via_users_server",
                               json_string(authoriser)) != 0)
    {
        goto failed;
    }

    if (json_object_set_new(ev, "room_id",
                            json_stringn((char *) mj->room_id.data,
                                         mj->room_id.len))
        || json_object_set_new(ev, "type", json_string("m.room.member"))
        || json_object_set_new(ev, "sender",
                               json_stringn((char *) mj->user.data,
                                            mj->user.len))
        || json_object_set_new(ev, "state_key",
                               json_stringn((char *) mj->user.data,
                                            mj->user.len))
        || json_object_set_new(ev, "content", content)
        || json_object_set_new(ev, "depth", json_integer(depth))
        || json_object_set_new(ev, "prev_events", prev)
        || json_object_set_new(ev, "auth_events", auth)
        || json_object_set_new(ev, "origin_server_ts",
                               json_integer(ngx_http_matrix_now_ms())))
    {
        content = prev = auth = NULL;
        goto failed;
    }

    /*
     * origin: v1-v10 redaction keeps it under the signature and the
     * template schema lists it; v11+ drops it, so it is left out there.
     */

    if (mj->rv->redaction != MX_REDACT_V11
        && json_object_set_new(ev, "origin",
                               json_stringn((char *) mscf->server_name.data,
                                            mscf->server_name.len)) != 0)
    {
        json_decref(ev);
        return NULL;
    }

    if (mj->rv->event_id_format == MX_EVENT_ID_SERVER) {
        randombytes_buf(rnd, sizeof(rnd));
        mx_b64_encode(b64, rnd, sizeof(rnd), MX_B64_URL);
        ngx_snprintf((u_char *) eid, sizeof(eid), "$%s:%V%Z", b64,
                     &mscf->server_name);

        if (json_object_set_new(ev, "event_id", json_string(eid)) != 0) {
            json_decref(ev);
            return NULL;
        }
    }

    return ev;

failed:

    json_decref(ev);
    json_decref(content);
    json_decref(prev);
    json_decref(auth);

    return NULL;
}


/* ver=... repeated; absent means ["1"]; compared as opaque strings */

static ngx_uint_t
ngx_http_matrix_make_join_ver_ok(ngx_http_request_t *r, const char *version)
{
    return mx_uri_ver_listed((char *) r->args.data, r->args.len, version);
}


static void
ngx_http_matrix_make_join_cleanup(void *data)
{
    ngx_http_matrix_make_join_ctx_t *mj = data;

    ngx_uint_t  i;

    for (i = 0; i < MJ_NSTATE; i++) {
        json_decref(mj->state[i]);
    }

    json_decref(mj->members);
    json_decref(mj->member_ids);
    json_decref(mj->member_pdus);
    json_decref(mj->extrem);
}


char *
ngx_http_matrix_make_join(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t   *mlcf = conf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    mlcf->endpoint = NGX_HTTP_MATRIX_EP_MAKE_JOIN;    /* matrix_metrics */

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_make_join_handler,
                                       &mmcf->fed_users);
}
