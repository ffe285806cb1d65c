/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The checks make_join and send_join share that need Redis: the room's
 * join rate (a token bucket, src/lua/join_rate.lua) and the user's
 * membership in the allowed rooms of a restricted room, read from those
 * rooms' snapshots (src/lua/room_membership.lua).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_matrix_join.h"
#include "mx_auth.h"


static void ngx_http_matrix_join_rate_reply(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static void ngx_http_matrix_allow_next(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_allow_reply(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);


void
ngx_http_matrix_join_rate_take(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx,
    ngx_str_t *room_id, ngx_http_matrix_next_pt next)
{
    ngx_str_t                          key;
    ngx_int_t                          rc;
    const char                        *argv[3];
    size_t                             argvlen[3];
    char                               rate[32], burst[32];
    ngx_http_matrix_join_loc_conf_t   *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->join_rate == 0) {
        next(r, ctx);
        return;
    }

    if (ngx_http_matrix_room_key(r, room_id, MX_KEY_RATE, &key) != NGX_OK) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    argv[0] = (char *) key.data;
    argvlen[0] = key.len;
    argv[1] = rate;
    argvlen[1] = ngx_sprintf((u_char *) rate, "%.9f",
                             mlcf->join_rate / 1000.0 / 1000.0)
                 - (u_char *) rate;
    argv[2] = burst;
    argvlen[2] = ngx_sprintf((u_char *) burst, "%ui", mlcf->join_burst)
                 - (u_char *) burst;

    ctx->then = next;

    rc = ngx_matrix_redis_script(r, MX_LUA_JOIN_RATE,
                                 ngx_http_matrix_join_rate_reply, ctx,
                                 1, 2, argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(rc),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(rc));
    }
}


static void
ngx_http_matrix_join_rate_reply(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    json_t  *body;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(status),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        body = json_pack("{s:s, s:s, s:I}", "errcode", "M_LIMIT_EXCEEDED",
                         "error", "Too many joins to this room",
                         "retry_after_ms", (json_int_t) reply->integer);
        ngx_http_matrix_finalize(r, ngx_http_matrix_send_body(r,
                                        NGX_HTTP_TOO_MANY_REQUESTS, body));
        return;
    }

    ctx->then(r, ctx);
}


void
ngx_http_matrix_allow_check(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx,
    ngx_http_matrix_allow_t *allow, ngx_http_matrix_next_pt next)
{
    allow->next = 0;
    ctx->allow = allow;
    ctx->then = next;

    ngx_http_matrix_allow_next(r, ctx);
}


int
ngx_http_matrix_allow_joined(ngx_http_matrix_allow_t *allow,
    const char *room_id)
{
    size_t  i;

    for (i = 0; i < allow->n; i++) {
        if (ngx_strcmp(allow->rooms[i], room_id) == 0) {
            return allow->joined[i];
        }
    }

    return MX_AUTH_ROOM_UNKNOWN;
}


static void
ngx_http_matrix_allow_next(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx)
{
    ngx_str_t                 room, meta, member;
    ngx_int_t                 rc;
    const char               *argv[3];
    size_t                    argvlen[3];
    ngx_http_matrix_allow_t  *a;

    a = ctx->allow;

    if (a->next == a->n) {
        ctx->then(r, ctx);
        return;
    }

    room.data = (u_char *) a->rooms[a->next];
    room.len = ngx_strlen(room.data);

    if (ngx_strlchr(room.data, room.data + room.len, '}') != NULL
        || ngx_http_matrix_room_key(r, &room, MX_KEY_META, &meta) != NGX_OK
        || ngx_http_matrix_room_key(r, &room, MX_KEY_MEMBER, &member)
           != NGX_OK)
    {
        a->joined[a->next++] = MX_AUTH_ROOM_UNKNOWN;
        ngx_http_matrix_allow_next(r, ctx);
        return;
    }

    argv[0] = (char *) meta.data;
    argvlen[0] = meta.len;
    argv[1] = (char *) member.data;
    argvlen[1] = member.len;
    argv[2] = a->user;
    argvlen[2] = ngx_strlen(a->user);

    rc = ngx_matrix_redis_script(r, MX_LUA_ROOM_MEMBERSHIP,
                                 ngx_http_matrix_allow_reply, ctx, 2, 1,
                                 argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(rc),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(rc));
    }
}


/*
 * {known, membership, loaded_at, stale} of the user in an allowed room; a
 * snapshot that may not answer (stale, too old) knows nothing either.
 */

static void
ngx_http_matrix_allow_reply(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    int                       joined;
    redisReply               *m;
    ngx_http_matrix_allow_t  *a;

    a = ctx->allow;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(status),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(status));
        return;
    }

    joined = MX_AUTH_ROOM_UNKNOWN;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 4
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[0]->integer == 1
        && ngx_http_matrix_snapshot_unusable(r, reply->element[2],
                                             reply->element[3])
           == NULL)
    {
        m = reply->element[1];
        joined = (m->type == REDIS_REPLY_STRING && m->len == 4
                  && ngx_strncmp(m->str, "join", 4) == 0);
    }

    a->joined[a->next++] = joined;

    ngx_http_matrix_allow_next(r, ctx);
}
