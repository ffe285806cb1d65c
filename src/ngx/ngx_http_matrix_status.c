/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * matrix_status: what the room cache holds, read from Redis, how far the
 * forwarder is behind (each room's outbox and the totals), and the state
 * of this worker's Redis connection. An operator's tool; protect it with
 * allow/deny.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_matrix_join.h"
#include "ngx_matrix_chunk_cache.h"


#define NGX_HTTP_MATRIX_STATUS_MAX_ROOMS  10000

/* the consumer group of matrix-join-ctl forward (docs/forwarder.md) */
#define NGX_HTTP_MATRIX_FORWARDER_GROUP   "forwarder"


typedef struct {
    json_t                      *rooms;
    json_t                      *names;     /* the rooms to read, a set */
    ngx_uint_t                   pending;
    ngx_uint_t                   one_room;
    ngx_matrix_redis_status_e    failed;
    ngx_uint_t                   done;
} ngx_http_matrix_status_ctx_t;


static ngx_int_t ngx_http_matrix_status_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_matrix_status_list(ngx_http_request_t *r,
    ngx_http_matrix_status_ctx_t *ctx, const char *set);
static ngx_int_t ngx_http_matrix_status_room(ngx_http_request_t *r,
    ngx_http_matrix_status_ctx_t *ctx, ngx_str_t *room_id);
static void ngx_http_matrix_status_rooms_reply(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static void ngx_http_matrix_status_room_reply(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static json_t *ngx_http_matrix_status_outbox(redisReply *counts);
static void ngx_http_matrix_status_done(ngx_http_request_t *r,
    ngx_http_matrix_status_ctx_t *ctx);
static void ngx_http_matrix_status_cleanup(void *data);


static ngx_int_t
ngx_http_matrix_status_handler(ngx_http_request_t *r)
{
    ngx_str_t                          room_id;
    ngx_int_t                          rc;
    ngx_pool_cleanup_t                *cln;
    ngx_http_matrix_status_ctx_t      *ctx;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "only GET is supported here");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_status_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->rooms = json_object();
    ctx->names = json_object();

    if (ctx->rooms == NULL || ctx->names == NULL) {
        json_decref(ctx->rooms);
        json_decref(ctx->names);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        json_decref(ctx->rooms);
        json_decref(ctx->names);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_matrix_status_cleanup;
    cln->data = ctx;

    rc = ngx_http_matrix_query_arg(r, "room_id", &room_id);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        if (room_id.len == 0 || room_id.len > 255 || room_id.data[0] != '!'
            || ngx_strlchr(room_id.data, room_id.data + room_id.len, '}'))
        {
            return ngx_http_matrix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                              "M_INVALID_PARAM",
                                              "room_id is not a room ID");
        }

        ctx->one_room = 1;
        rc = ngx_http_matrix_status_room(r, ctx, &room_id);

    } else {
        /*
         * The cached rooms and the rooms with an outbox (the forwarder's
         * two lists): two keys of two slots, two commands; the rooms are
         * read once both have answered.
         */

        rc = ngx_http_matrix_status_list(r, ctx, MX_KEY_ROOMS);

        if (rc == NGX_OK) {
            rc = ngx_http_matrix_status_list(r, ctx,
                                             NGX_HTTP_MATRIX_KEY_OUTBOX_ROOMS);

            if (rc != NGX_OK) {
                /* the first reply is awaited, then this is answered */
                ctx->failed = rc;
                rc = NGX_OK;
            }
        }
    }

    if (rc != NGX_OK) {
        return ngx_http_matrix_send_error(r,
                                     ngx_matrix_redis_http_status(rc),
                                     "M_UNKNOWN", "%s",
                                     ngx_matrix_redis_status_text(rc));
    }

    if (!r->discard_body) {
        r->read_event_handler = ngx_http_test_reading;
    }

    r->main->count++;

    return NGX_DONE;
}


/* SMEMBERS of the global set P + set, answered to rooms_reply */

static ngx_int_t
ngx_http_matrix_status_list(ngx_http_request_t *r,
    ngx_http_matrix_status_ctx_t *ctx, const char *set)
{
    ngx_int_t    rc;
    ngx_str_t    key;
    const char  *argv[2];
    size_t       argvlen[2];

    if (ngx_http_matrix_global_key(r, set, NULL, 0, &key) != NGX_OK) {
        return NGX_MATRIX_REDIS_UNAVAILABLE;
    }

    argv[0] = "SMEMBERS";
    argvlen[0] = sizeof("SMEMBERS") - 1;
    argv[1] = (char *) key.data;
    argvlen[1] = key.len;

    rc = ngx_matrix_redis_command(r, ngx_http_matrix_status_rooms_reply,
                                  ctx, 2, argv, argvlen);
    if (rc == NGX_OK) {
        ctx->pending++;
    }

    return rc;
}


static ngx_int_t
ngx_http_matrix_status_room(ngx_http_request_t *r,
    ngx_http_matrix_status_ctx_t *ctx, ngx_str_t *room_id)
{
    ngx_int_t    rc;
    ngx_str_t    meta, extrem, outbox, dead;
    const char  *argv[6];
    size_t       argvlen[6];

    if (ngx_http_matrix_room_key(r, room_id, MX_KEY_META, &meta) != NGX_OK
        || ngx_http_matrix_room_key(r, room_id, MX_KEY_EXTREM, &extrem)
           != NGX_OK
        || ngx_http_matrix_room_key(r, room_id, MX_KEY_OUTBOX, &outbox)
           != NGX_OK
        || ngx_http_matrix_room_key(r, room_id, MX_KEY_DEAD, &dead)
           != NGX_OK)
    {
        return NGX_MATRIX_REDIS_UNAVAILABLE;
    }

    /* all the keys of one room: one slot */

    argv[0] = (char *) meta.data;
    argvlen[0] = meta.len;
    argv[1] = (char *) extrem.data;
    argvlen[1] = extrem.len;
    argv[2] = (char *) outbox.data;
    argvlen[2] = outbox.len;
    argv[3] = (char *) dead.data;
    argvlen[3] = dead.len;
    argv[4] = NGX_HTTP_MATRIX_FORWARDER_GROUP;
    argvlen[4] = sizeof(NGX_HTTP_MATRIX_FORWARDER_GROUP) - 1;
    argv[5] = (char *) room_id->data;
    argvlen[5] = room_id->len;

    rc = ngx_matrix_redis_script(r, MX_LUA_ROOM_STATUS,
                                 ngx_http_matrix_status_room_reply, ctx,
                                 4, 2, argv, argvlen);
    if (rc == NGX_OK) {
        ctx->pending++;
    }

    return rc;
}


static void
ngx_http_matrix_status_rooms_reply(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_status_ctx_t *ctx = data;

    size_t        i;
    json_t       *v;
    ngx_str_t     room_id;
    ngx_int_t     rc;
    redisReply   *e;
    const char   *name;

    ctx->pending--;

    if (status != NGX_MATRIX_REDIS_OK) {
        ctx->failed = status;

    } else if (reply->type == REDIS_REPLY_ARRAY) {
        for (i = 0; i < reply->elements; i++) {
            e = reply->element[i];

            /* a brace would take the room's keys out of its slot */

            if (e->type != REDIS_REPLY_STRING || e->len == 0
                || ngx_strlen(e->str) != e->len
                || ngx_strlchr((u_char *) e->str, (u_char *) e->str + e->len,
                               '}'))
            {
                continue;
            }

            if (json_object_size(ctx->names)
                >= NGX_HTTP_MATRIX_STATUS_MAX_ROOMS)
            {
                break;
            }

            /* not UTF-8: not a room ID, left out */
            (void) json_object_set_new(ctx->names, e->str, json_true());
        }
    }

    if (ctx->pending == 0 && ctx->failed == NGX_MATRIX_REDIS_OK) {
        json_object_foreach(ctx->names, name, v) {
            room_id.data = (u_char *) name;
            room_id.len = ngx_strlen(name);

            rc = ngx_http_matrix_status_room(r, ctx, &room_id);
            if (rc != NGX_OK) {
                ctx->failed = rc;
                break;
            }
        }
    }

    ngx_http_matrix_status_done(r, ctx);
}


static json_t *
ngx_http_matrix_status_number(redisReply *v)
{
    char       *end;
    long long   n;

    n = strtoll(v->str, &end, 10);

    if (v->len == 0 || end != v->str + v->len) {
        return json_stringn(v->str, v->len);
    }

    return json_integer(n);
}


static void
ngx_http_matrix_status_room_reply(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_status_ctx_t *ctx = data;

    size_t        i;
    json_t       *room, *ex, *e, *parsed, *depth, *outbox;
    int64_t       loaded_at, live_at;
    const char   *room_id;
    redisReply   *meta, *extrem, *k, *v;

    ctx->pending--;

    if (status != NGX_MATRIX_REDIS_OK) {
        ctx->failed = status;
        ngx_http_matrix_status_done(r, ctx);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[1]->type != REDIS_REPLY_ARRAY
        || reply->element[2]->type != REDIS_REPLY_ARRAY
        || reply->element[3]->type != REDIS_REPLY_STRING)
    {
        /* nil: neither a snapshot nor an outbox (any more) */
        ngx_http_matrix_status_done(r, ctx);
        return;
    }

    meta = reply->element[0];
    extrem = reply->element[1];

    room = json_object();
    ex = json_array();
    outbox = ngx_http_matrix_status_outbox(reply->element[2]);

    if (room == NULL || ex == NULL || outbox == NULL) {
        json_decref(room);
        json_decref(ex);
        json_decref(outbox);
        ctx->failed = NGX_MATRIX_REDIS_UNAVAILABLE;
        ngx_http_matrix_status_done(r, ctx);
        return;
    }

    room_id = NULL;
    loaded_at = 0;
    live_at = 0;

    for (i = 0; i + 1 < meta->elements; i += 2) {
        k = meta->element[i];
        v = meta->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (ngx_strcmp(k->str, MX_META_ROOM_VERSION) == 0
            || ngx_strcmp(k->str, MX_META_CREATE_EVENT_ID) == 0
            || ngx_strcmp(k->str, MX_META_ROOM_ID) == 0)
        {
            json_object_set_new(room, k->str, json_stringn(v->str, v->len));

        } else {
            json_object_set_new(room, k->str,
                                ngx_http_matrix_status_number(v));
        }

        if (ngx_strcmp(k->str, MX_META_LOADED_AT) == 0) {
            loaded_at = strtoll(v->str, NULL, 10);
        }

        if (ngx_strcmp(k->str, MX_META_LIVE_AT) == 0) {
            live_at = strtoll(v->str, NULL, 10);
        }

        if (ngx_strcmp(k->str, MX_META_ROOM_ID) == 0) {
            room_id = v->str;
        }
    }

    for (i = 0; i + 1 < extrem->elements; i += 2) {
        k = extrem->element[i];
        v = extrem->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        parsed = json_loadb(v->str, v->len, 0, NULL);
        depth = parsed ? json_object_get(parsed, "depth") : NULL;

        e = json_pack("{s:s%, s:O?}", "event_id", k->str, k->len,
                      "depth", depth);
        json_decref(parsed);

        if (e) {
            json_array_append_new(ex, e);
        }
    }

    if (meta->elements) {
        json_object_set_new(room, "forward_extremities", ex);

    } else {
        /* an outbox without a snapshot: only the outbox is known */
        json_decref(ex);
    }

    if (loaded_at) {
        json_object_set_new(room, "snapshot_age_ms",
                            json_integer(ngx_http_matrix_now_ms()
                                         - loaded_at));
    }

    /* the last homeserver event sync applied live, how long ago */

    if (live_at) {
        json_object_set_new(room, "live_age_ms",
                            json_integer(ngx_http_matrix_now_ms()
                                         - live_at));
    }

    json_object_set_new(room, "outbox", outbox);

    /* the meta hash carries the room ID; the key is the fallback */
    if (room_id == NULL) {
        room_id = reply->element[3]->str;
        json_object_set_new(room, "room_id", json_string(room_id));
    }

    json_object_set_new(ctx->rooms, room_id, room);

    ngx_http_matrix_status_done(r, ctx);
}


/* {pending, in_flight, dead, oldest_age_ms} from the script's numbers */

static json_t *
ngx_http_matrix_status_outbox(redisReply *counts)
{
    size_t       i;
    json_int_t   n[4];

    for (i = 0; i < 4; i++) {
        n[i] = (i < counts->elements
                && counts->element[i]->type == REDIS_REPLY_INTEGER)
               ? counts->element[i]->integer : 0;
    }

    return json_pack("{s:I, s:I, s:I, s:I}", "pending", n[0],
                     "in_flight", n[1], "dead", n[2], "oldest_age_ms", n[3]);
}


static void
ngx_http_matrix_status_done(ngx_http_request_t *r,
    ngx_http_matrix_status_ctx_t *ctx)
{
    json_t                            *doc, *redis, *room, *ob, *total, *cache;
    json_t                            *nodes, *node, *cl;
    ngx_int_t                          rc;
    ngx_uint_t                         i;
    json_int_t                         n[4];
    const char                        *id;
    ngx_matrix_chunks_stats_t          st;
    ngx_matrix_redis_node_info_t       ni;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    if (ctx->pending || ctx->done) {
        return;
    }

    ctx->done = 1;

    if (ctx->failed != NGX_MATRIX_REDIS_OK) {
        rc = ngx_http_matrix_send_error(r,
                                 ngx_matrix_redis_http_status(ctx->failed),
                                 "M_UNKNOWN", "%s",
                                 ngx_matrix_redis_status_text(ctx->failed));
        ngx_http_matrix_finalize(r, rc);
        return;
    }

    if (ctx->one_room && json_object_size(ctx->rooms) == 0) {
        rc = ngx_http_matrix_send_error(r, NGX_HTTP_NOT_FOUND, "M_NOT_FOUND",
                                        "room not in the cache");
        ngx_http_matrix_finalize(r, rc);
        return;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    redis = json_pack("{s:s%, s:s, s:I, s:I, s:I, s:s, s:I}",
                      "address", mmcf->redis.address.data,
                      mmcf->redis.address.len,
                      "state", ngx_matrix_redis_state(),
                      "connects", (json_int_t) ngx_matrix_redis_connects(),
                      "hung", (json_int_t) ngx_matrix_redis_hangs(),
                      "outstanding",
                      (json_int_t) ngx_matrix_redis_outstanding(),
                      "last_error", ngx_matrix_redis_last_error(),
                      "worker_pid", (json_int_t) ngx_pid);

    /* a cluster: this worker's map and connections, node by node */

    if (redis != NULL && mmcf->redis.cluster) {
        nodes = json_array();

        for (i = 0; nodes != NULL
                    && ngx_matrix_redis_cluster_node(i, &ni) == NGX_OK; i++)
        {
            node = json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:s}",
                             "host", ni.host, "port", ni.port,
                             "state", ni.state,
                             "slots", (json_int_t) ni.slots,
                             "connects", (json_int_t) ni.connects,
                             "hung", (json_int_t) ni.hangs,
                             "outstanding", (json_int_t) ni.outstanding,
                             "last_error", ni.last_error);
            if (node == NULL || json_array_append_new(nodes, node) != 0) {
                json_decref(nodes);
                nodes = NULL;
            }
        }

        cl = nodes ? json_pack("{s:o, s:I, s:I}", "nodes", nodes,
                               "slot_map_refreshes",
                               (json_int_t)
                               ngx_matrix_redis_cluster_refreshes(),
                               "redirects",
                               (json_int_t)
                               ngx_matrix_redis_cluster_redirects())
                   : NULL;

        if (cl == NULL || json_object_set_new(redis, "cluster", cl) != 0) {
            json_decref(redis);
            redis = NULL;
        }
    }

    /* the totals of the rooms listed: the oldest age is the largest */

    ngx_memzero(n, sizeof(n));

    json_object_foreach(ctx->rooms, id, room) {
        ob = json_object_get(room, "outbox");

        n[0] += json_integer_value(json_object_get(ob, "pending"));
        n[1] += json_integer_value(json_object_get(ob, "in_flight"));
        n[2] += json_integer_value(json_object_get(ob, "dead"));
        n[3] = ngx_max(n[3], json_integer_value(json_object_get(ob,
                                                      "oldest_age_ms")));
    }

    total = json_pack("{s:I, s:I, s:I, s:I}", "pending", n[0],
                      "in_flight", n[1], "dead", n[2], "oldest_age_ms", n[3]);

    /* the machine's copy of rooms' chunks (matrix_send_join_cache) */

    ngx_matrix_chunks_stats(mmcf->send_join_zone, &st);

    cache = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
                      "size", (json_int_t) st.size,
                      "bytes", (json_int_t) st.bytes,
                      "entries", (json_int_t) st.entries,
                      "unlinked_bytes", (json_int_t) st.unlinked_bytes,
                      "unlinked", (json_int_t) st.unlinked,
                      "free_bytes",
                      (json_int_t) (st.free_pages * ngx_pagesize));

    doc = json_pack("{s:o?, s:O, s:o?, s:o?}", "redis", redis, "rooms",
                    ctx->rooms, "outbox", total, "send_join_cache", cache);

    ngx_http_matrix_finalize(r, ngx_http_matrix_send_body(r, NGX_HTTP_OK,
                                                          doc));
}


static void
ngx_http_matrix_status_cleanup(void *data)
{
    ngx_http_matrix_status_ctx_t *ctx = data;

    json_decref(ctx->rooms);
    json_decref(ctx->names);
}


char *
ngx_http_matrix_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_status_handler, &mmcf->redis_users);
}
