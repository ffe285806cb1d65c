/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * GET /_matrix/federation/v1/event/{eventId}
 *
 * The path names no room: the cached rooms (P rooms) are searched, one
 * src/lua/event_find.lua each, sent together (each script touches one
 * room's slot). An event found whose snapshot may answer is
 * authenticated, then answered as Synapse's on_pdu_request does,
 * {"origin": ours, "origin_server_ts": now, "pdus": [the stored PDU]},
 * when the requesting server has a joined member in the room now (else
 * 403 "Host not in room.", Synapse's get_persisted_pdu) and the history
 * visibility at the event lets it see the event (Synapse's
 * filter_events_for_server would redact it otherwise: when the edge
 * cannot tell, the fallback). Not found, stale, too many rooms to search,
 * Redis failing: the fallback, before anything is authenticated.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_join.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_util.h"


#define NGX_HTTP_MATRIX_EV_PREFIX     "/_matrix/federation/v1/event/"

/* more cached rooms than this are not searched: the homeserver answers */
#define NGX_HTTP_MATRIX_EV_ROOMS_MAX  256


typedef struct {
    ngx_str_t                    event_id;
    ngx_uint_t                   pending;
    ngx_uint_t                   failed;

    /* the room that holds it */
    ngx_uint_t                   found;
    ngx_str_t                    room_id;
    ngx_str_t                    pdu;
    ngx_str_t                    vis;       /* open, member, unknown */
    ngx_str_t                    state_key;
    const char                  *unusable;
} ngx_http_matrix_event_ctx_t;


typedef struct {
    ngx_http_matrix_ctx_t       *ctx;
    ngx_str_t                    room_id;
} ngx_http_matrix_event_room_t;


static ngx_int_t ngx_http_matrix_event_handler(ngx_http_request_t *r);
static void ngx_http_matrix_event_rooms(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static void ngx_http_matrix_event_found(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static void ngx_http_matrix_event_decide(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_event_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_event_member(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);


static ngx_int_t
ngx_http_matrix_str_copy(ngx_http_request_t *r, ngx_str_t *dst,
    const char *s, size_t len)
{
    dst->data = ngx_pnalloc(r->pool, len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, s, len);
    dst->data[len] = '\0';
    dst->len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_matrix_event_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      key;
    const char                    *invalid;
    const char                    *argv[2];
    size_t                         argvlen[2];
    ngx_http_matrix_ctx_t         *ctx;
    ngx_http_matrix_event_ctx_t   *ev;
    static const char  shape[] = "expected /_matrix/federation/v1/"
                                 "event/{eventId}";

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "Unrecognized request: only GET "
                                          "is supported here");
    }

    ctx = ngx_http_matrix_ctx(r);
    ev = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_event_ctx_t));

    if (ctx == NULL || ev == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->data = ev;

    if (r->unparsed_uri.len < sizeof(NGX_HTTP_MATRIX_EV_PREFIX) - 1
        || ngx_strncmp(r->unparsed_uri.data, NGX_HTTP_MATRIX_EV_PREFIX,
                       sizeof(NGX_HTTP_MATRIX_EV_PREFIX) - 1) != 0)
    {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_UNRECOGNIZED", "%s", shape);
    }

    invalid = ngx_http_matrix_path_param(r,
                                         sizeof(NGX_HTTP_MATRIX_EV_PREFIX)
                                         - 1, &ev->event_id, shape);
    if (invalid) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "M_UNRECOGNIZED", "%s", invalid);
    }

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
    ctx->sync = 1;

    if (ev->event_id.len < 2 || ev->event_id.len > 255
        || ev->event_id.data[0] != '$')
    {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "not an event ID the edge looks up");
        ctx->sync = 0;
        return NGX_DONE;
    }

    if (ngx_http_matrix_global_key(r, MX_KEY_ROOMS, NULL, 0, &key) != NGX_OK) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        ctx->sync = 0;
        return NGX_DONE;
    }

    argv[0] = "SMEMBERS";
    argvlen[0] = 8;
    argv[1] = (char *) key.data;
    argvlen[1] = key.len;

    rc = ngx_matrix_redis_command(r, ngx_http_matrix_event_rooms, ctx, 2,
                                  argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(rc));
    }

    ctx->sync = 0;

    return NGX_DONE;
}


/* The cached rooms: one event_find each, all sent at once. */

static void
ngx_http_matrix_event_rooms(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    size_t                          i, k;
    ngx_int_t                       rc;
    ngx_str_t                       keys[7];
    redisReply                     *e;
    const char                     *argv[8];
    size_t                          argvlen[8];
    ngx_http_matrix_event_ctx_t    *ev;
    ngx_http_matrix_event_room_t   *room;
    static const char              *names[7] = {
        MX_KEY_META, MX_KEY_PDU, MX_KEY_EDGE_PDU, MX_KEY_STATE,
        MX_KEY_MEVENT, MX_KEY_MCHUNK, MX_KEY_STATE_M
    };

    ev = ctx->data;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "no room is cached");
        return;
    }

    if (reply->elements > NGX_HTTP_MATRIX_EV_ROOMS_MAX) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "too many cached rooms to search for an "
                                 "event");
        return;
    }

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        room = ngx_palloc(r->pool, sizeof(ngx_http_matrix_event_room_t));
        if (room == NULL
            || ngx_http_matrix_str_copy(r, &room->room_id, e->str, e->len)
               != NGX_OK)
        {
            ev->failed = 1;
            break;
        }

        room->ctx = ctx;

        for (k = 0; k < 7; k++) {
            if (ngx_http_matrix_room_key(r, &room->room_id, names[k],
                                         &keys[k])
                != NGX_OK)
            {
                break;
            }

            argv[k] = (char *) keys[k].data;
            argvlen[k] = keys[k].len;
        }

        if (k < 7) {
            ev->failed = 1;
            break;
        }

        argv[7] = (char *) ev->event_id.data;
        argvlen[7] = ev->event_id.len;

        rc = ngx_matrix_redis_script(r, MX_LUA_EVENT_FIND,
                                     ngx_http_matrix_event_found, room, 7, 1,
                                     argv, argvlen);
        if (rc != NGX_OK) {
            ev->failed = 1;
            break;
        }

        ev->pending++;
    }

    if (ev->pending == 0) {
        ngx_http_matrix_event_decide(r, ctx);
    }
}


/* One room's answer: nil, or {PDU, loaded_at, stale, visibility, key}. */

static void
ngx_http_matrix_event_found(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_event_room_t *room = data;

    redisReply                   *e;
    ngx_http_matrix_ctx_t        *ctx;
    ngx_http_matrix_event_ctx_t  *ev;

    ctx = room->ctx;
    ev = ctx->data;
    ev->pending--;

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: looking up \"%V\" in \"%V\": %s",
                      &ev->event_id, &room->room_id,
                      err ? err : ngx_matrix_redis_status_text(status));
        ev->failed = 1;

    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 5
               && reply->element[0]->type == REDIS_REPLY_STRING
               && reply->element[3]->type == REDIS_REPLY_STRING
               && !ev->found)
    {
        ev->found = 1;
        ev->room_id = room->room_id;
        ev->unusable = ngx_http_matrix_snapshot_unusable(r, reply->element[1],
                                                         reply->element[2]);
        e = reply->element[4];

        if (ngx_http_matrix_str_copy(r, &ev->pdu, reply->element[0]->str,
                                     reply->element[0]->len) != NGX_OK
            || ngx_http_matrix_str_copy(r, &ev->vis, reply->element[3]->str,
                                        reply->element[3]->len) != NGX_OK
            || (e->type == REDIS_REPLY_STRING
                && ngx_http_matrix_str_copy(r, &ev->state_key, e->str,
                                            e->len) != NGX_OK))
        {
            ev->found = 0;
            ev->failed = 1;
        }
    }

    if (ev->pending == 0) {
        ngx_http_matrix_event_decide(r, ctx);
    }
}


static void
ngx_http_matrix_event_decide(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    ngx_http_matrix_event_ctx_t  *ev;

    ev = ctx->data;

    if (!ev->found) {
        if (ev->failed) {
            ngx_http_matrix_fallback(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "Redis failed while the event was "
                                     "looked up");
            return;
        }

        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "Unknown event (not in the cache)");
        return;
    }

    if (ev->unusable) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND, ev->unusable);
        return;
    }

    if (ev->vis.len == 7 && ngx_strncmp(ev->vis.data, "unknown", 7) == 0) {
        ngx_http_matrix_fallback(r, NGX_HTTP_NOT_FOUND,
                                 "the history visibility at the event is "
                                 "not known here");
        return;
    }

    ngx_http_matrix_authenticate(r, ctx, ngx_http_matrix_event_authenticated);
}


/* Synapse's check_host_in_room: a joined member of the server, now. */

static void
ngx_http_matrix_event_authenticated(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_str_t                     key;
    const char                   *argv[3];
    size_t                        argvlen[3];
    ngx_http_matrix_event_ctx_t  *ev;

    ev = ctx->data;

    if (ngx_http_matrix_room_key(r, &ev->room_id, MX_KEY_SERVERS, &key)
        != NGX_OK)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    argv[0] = "ZSCORE";
    argvlen[0] = 6;
    argv[1] = (char *) key.data;
    argvlen[1] = key.len;
    argv[2] = (char *) ctx->origin.data;
    argvlen[2] = ctx->origin.len;

    rc = ngx_matrix_redis_command(r, ngx_http_matrix_event_member, ctx, 3,
                                  argv, argvlen);
    if (rc != NGX_OK) {
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(rc),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(rc));
    }
}


static void
ngx_http_matrix_event_member(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    size_t                            slen;
    ngx_int_t                         rc;
    const char                       *srv;
    mx_buf_t                          out = MX_BUF_INIT;
    char                              ts[NGX_INT64_LEN + 1];
    ngx_http_matrix_event_ctx_t      *ev;
    ngx_http_matrix_join_srv_conf_t  *mscf;

    ev = ctx->data;
    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_http_matrix_undecided(r, ngx_matrix_redis_http_status(status),
                                  "M_UNKNOWN", "%s",
                                  ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type != REDIS_REPLY_STRING || strtod(reply->str, NULL) >= 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "matrix: event \"%V\" of \"%V\" refused to \"%V\": no "
                      "member in the room", &ev->event_id, &ev->room_id,
                      &ctx->origin);
        ngx_http_matrix_fail(r, NGX_HTTP_FORBIDDEN, "M_FORBIDDEN",
                             "Host not in room.");
        return;
    }

    if (ev->vis.len == 6 && ngx_strncmp(ev->vis.data, "member", 6) == 0) {
        /* history_visibility joined or invited: the user's own server */
        srv = mx_id_server((char *) ev->state_key.data, ev->state_key.len,
                           '@', &slen);

        if (srv == NULL || slen != ctx->origin.len
            || ngx_strncmp(srv, ctx->origin.data, slen) != 0)
        {
            ngx_http_matrix_undecided(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "M_UNKNOWN", "the history visibility "
                                      "at the event is not known here");
            return;
        }
    }

    ngx_sprintf((u_char *) ts, "%L%Z", ngx_http_matrix_now_ms());

    if (mx_buf_append_str(&out, "{\"origin\":") != 0
        || mx_json_canonical_string((char *) mscf->server_name.data,
                                    mscf->server_name.len, &out) != 0
        || mx_buf_append_str(&out, ",\"origin_server_ts\":") != 0
        || mx_buf_append_str(&out, ts) != 0
        || mx_buf_append_str(&out, ",\"pdus\":[") != 0
        || mx_buf_append(&out, ev->pdu.data, ev->pdu.len) != 0
        || mx_buf_append_str(&out, "]}") != 0)
    {
        mx_buf_free(&out);
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: event \"%V\" of \"%V\" answered", &ev->event_id,
                  &ev->room_id);

    rc = ngx_http_matrix_send_json(r, NGX_HTTP_OK, (u_char *) out.data,
                                   out.len, 1);
    mx_buf_free(&out);

    ngx_http_matrix_finalize(r, rc);
}


char *
ngx_http_matrix_event(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t   *mlcf = conf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    mlcf->endpoint = NGX_HTTP_MATRIX_EP_EVENT;        /* matrix_metrics */

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_event_handler,
                                       &mmcf->fed_users);
}
