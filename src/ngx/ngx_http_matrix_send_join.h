/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * What the three files of send_join share: the request's state and the
 * keys of the room. ngx_http_matrix_send_join.c (the handler, steps 1-3)
 * calls ngx_http_matrix_send_join_accept.c (steps 4-5), which calls
 * ngx_http_matrix_send_join_answer.c (the answer's buffer chain).
 */

#ifndef NGX_HTTP_MATRIX_SEND_JOIN_H
#define NGX_HTTP_MATRIX_SEND_JOIN_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_join.h"
#include "ngx_matrix_chunk_cache.h"
#include "mx_base64.h"
#include "mx_event.h"
#include "mx_room_version.h"


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
    ngx_matrix_chunks_waiter_t   waiter;    /* in the worker's wait queue */
    ngx_http_request_t          *wait_r;
    ngx_http_matrix_ctx_t       *wait_ctx;
    ngx_http_matrix_next_pt      wait_retry;
} ngx_http_matrix_send_join_ctx_t;


/*
 * The chunk lists of sj's generation (ngx_http_matrix_chunk_read.c; sj->omit
 * chooses the partial lists). look(), before the script that may read
 * them: NGX_OK with sj->chunks from the machine's zone, or without and
 * sj->filling set (this request's script reads them); NGX_AGAIN when
 * another request reads them: retry(r, ctx) runs once that read ended (or
 * was given up). take() puts the script's lists into the zone (or keeps
 * them for this answer) and tells the waiting requests; end() at the
 * request's end.
 */
/*
 * The reply of send_join_meta.lua into sj (ngx_http_matrix_send_join.c):
 * NGX_OK, or NGX_DONE when the request was finalized.
 */
ngx_int_t ngx_http_matrix_send_join_meta_read(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *reply,
    ngx_matrix_redis_status_e status);

ngx_int_t ngx_http_matrix_chunks_look(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx, ngx_http_matrix_send_join_ctx_t *sj,
    ngx_http_matrix_next_pt retry);
ngx_int_t ngx_http_matrix_chunks_take(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply **lists, ngx_uint_t n);
void ngx_http_matrix_chunks_end(ngx_http_matrix_send_join_ctx_t *sj);


/*
 * Step 4 and on (ngx_http_matrix_send_join_accept.c), once the join's
 * signatures are checked: the state at its prev_events, the decision,
 * accepting it, the answer; every path finalizes the request.
 */
void ngx_http_matrix_send_join_read_state(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);

/*
 * Writes the 200 answer: the chunk lists as Redis sent them (the reply
 * strings are taken over), minus the cut member events, plus what the
 * accept script returned in res: {status, seq, state extra, cuts, auth
 * extra, servers, partial state, partial auth}. Returns what the handler
 * finalizes with.
 */
ngx_int_t ngx_http_matrix_send_join_answer(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *res);

/*
 * The /state answer (ngx_http_matrix_state.c) from the full chunk lists:
 * {"auth_chain": auth list + extra, "pdus": state_nm + state_m minus the
 * cuts + sx}, the reply strings taken over. Returns what the handler
 * finalizes with.
 */
ngx_int_t ngx_http_matrix_state_answer(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *sx, redisReply *cuts,
    redisReply *extra);

#endif /* NGX_HTTP_MATRIX_SEND_JOIN_H */
