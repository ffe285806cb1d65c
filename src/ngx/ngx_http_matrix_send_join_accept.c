/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * send_join, steps 4 and 5 (ngx_http_matrix_send_join.c does 1-3): the
 * state at the join's prev_events (src/lua/send_join_state.lua), the
 * restricted conditions, the join rules and the auth events selection
 * (src/core's mx_auth), our signature when we authorise, then MULTI {
 * accept (src/lua/send_join_accept.lua), LRANGE of the chunks } EXEC,
 * whose replies ngx_http_matrix_send_join_answer.c writes out; with
 * matrix_redis_wait, only once WAIT says enough replicas have the join.
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
static void ngx_http_matrix_send_join_durable(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static void ngx_http_matrix_send_join_kept_free(void *data);


/* the accept script's reply, kept from hiredis while WAIT runs */

typedef struct {
    ngx_http_matrix_ctx_t       *ctx;
    redisReply                  *res;
} ngx_http_matrix_send_join_kept_t;


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

void
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

    sj = ctx->data;
    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    /*
     * The machine holds this generation's chunks already: the script alone
     * will do (it answers "generation" when the snapshot is not the one
     * they belong to). Else one request reads them from Redis, and the
     * others wait for its copy rather than read the same megabytes.
     */

    if (ngx_http_matrix_chunks_look(r, ctx, sj,
                                    ngx_http_matrix_send_join_accept)
        == NGX_AGAIN)
    {
        return;
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

    /* a cluster: MULTI on the node of the room's keys */
    ngx_matrix_redis_route((u_char *) argv[3], argvlen[3]);

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
    ngx_pool_cleanup_t                *cln;
    ngx_http_matrix_send_join_kept_t  *kept;
    ngx_http_matrix_send_join_ctx_t   *sj;
    ngx_http_matrix_join_loc_conf_t   *mlcf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    sj = ctx->data;

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

    if (s->len == 6 && ngx_strncmp(s->str, "banned", 6) == 0) {
        /*
         * Allowed at its prev_events, but sync has applied a ban since:
         * the homeserver would soft-fail the join against its current
         * state, so it is refused as a banned user's join is.
         */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "matrix: send_join of \"%s\" refused: \"%s\" is "
                      "banned now", sj->id, sj->sender);
        ngx_http_matrix_fail(r, NGX_HTTP_FORBIDDEN, "M_FORBIDDEN",
                             "user is banned");
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

    if (s->len == 2) {
        /* in the outbox now, whatever the answer becomes */
        ngx_http_matrix_metrics_join_accepted();
    }

    if (ngx_http_matrix_chunks_take(r, sj, &reply->element[1],
                                    reply->elements - 1)
        != NGX_OK)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    if (mmcf->redis.wait_replicas == 0) {
        rc = ngx_http_matrix_send_join_answer(r, sj, res);
        ngx_http_matrix_finalize(r, rc);
        return;
    }

    /*
     * matrix_redis_wait: the 200 only once the replicas acknowledged the
     * accept (and a "dup"'s first accept: WAIT covers every write made
     * before it on this connection). res is taken from hiredis: its
     * struct copied, the original left as an empty nil that hiredis frees.
     */

    kept = ngx_palloc(r->pool, sizeof(ngx_http_matrix_send_join_kept_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (kept == NULL || cln == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    kept->res = ngx_alloc(sizeof(redisReply), r->connection->log);
    if (kept->res == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(kept->res, res, sizeof(redisReply));
    ngx_memzero(res, sizeof(redisReply));
    res->type = REDIS_REPLY_NIL;

    kept->ctx = ctx;
    cln->handler = ngx_http_matrix_send_join_kept_free;
    cln->data = kept->res;

    /* a cluster: WAIT on the node that took the join */
    ngx_matrix_redis_route(sj->keys[0].data, sj->keys[0].len);

    rc = ngx_matrix_redis_wait(r, ngx_http_matrix_send_join_durable, kept);
    if (rc != NGX_OK) {
        ngx_http_matrix_fail(r, ngx_matrix_redis_http_status(rc),
                             "M_UNKNOWN", "The join was stored, but not yet "
                             "on a replica: %s",
                             ngx_matrix_redis_status_text(rc));
    }
}


/*
 * WAIT's reply. Fewer replicas than asked: the join is in the master's
 * outbox but may not survive a failover, so the joiner is told 503 and
 * retries; the retry finds it ("dup", then WAIT again) or, after a
 * failover that lost it, accepts it anew (docs/reliability.md).
 */

static void
ngx_http_matrix_send_join_durable(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_send_join_kept_t *kept = data;

    ngx_int_t                          rc;
    ngx_http_matrix_send_join_ctx_t   *sj;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    sj = kept->ctx->data;
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    if (status != NGX_MATRIX_REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "matrix: WAIT for join \"%s\" failed: %s", sj->id,
                      err ? err : ngx_matrix_redis_status_text(status));
        ngx_http_matrix_fail(r, ngx_matrix_redis_http_status(status),
                             "M_UNKNOWN", "The join was stored, but not yet "
                             "on a replica: %s",
                             ngx_matrix_redis_status_text(status));
        return;
    }

    if (reply->type != REDIS_REPLY_INTEGER
        || reply->integer < (long long) mmcf->redis.wait_replicas)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "matrix: join \"%s\" reached %L of %ui replicas "
                      "within %M ms: answered 503", sj->id,
                      reply->type == REDIS_REPLY_INTEGER
                      ? (int64_t) reply->integer : (int64_t) -1,
                      mmcf->redis.wait_replicas, mmcf->redis.wait_timeout);

        /* a master left behind by a failover has no replicas either */
        ngx_matrix_redis_suspect();

        ngx_http_matrix_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "M_UNKNOWN",
                             "The join is not yet durable: too few Redis "
                             "replicas acknowledged it; retry");
        return;
    }

    rc = ngx_http_matrix_send_join_answer(r, sj, kept->res);

    ngx_http_matrix_finalize(r, rc);
}


static void
ngx_http_matrix_send_join_kept_free(void *data)
{
    freeReplyObject(data);
}


