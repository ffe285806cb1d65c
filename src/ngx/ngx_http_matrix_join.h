/*
 * Copyright (C) nginx-matrix-join authors.
 * Types shared by the module's files. The Matrix rules live in src/core;
 * these files only translate HTTP to calls of the core and back.
 */

#ifndef NGX_HTTP_MATRIX_JOIN_H
#define NGX_HTTP_MATRIX_JOIN_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "mx_crypto.h"
#include "mx_schema.h"
#include "ngx_matrix_redis.h"
#include "ngx_http_matrix_metrics.h"


#define NGX_HTTP_MATRIX_JOIN_VERSION  "0.1.0"


/*
 * The keys of one "matrix_signing_key" file. The seeds are read with the
 * configuration (so "nginx -t" reports a bad file); each worker expands
 * them into keys[] in locked memory at startup and wipes the seeds from
 * its copy of the configuration.
 */
typedef struct {
    ngx_str_t                    path;
    ngx_uint_t                   nkeys;
    char                       (*key_ids)[MX_KEY_ID_MAX];
    u_char                     (*seeds)[MX_ED25519_SEED_LEN];
    mx_signing_key_t            *keys;          /* per worker, sodium_malloc */
} ngx_http_matrix_keyset_t;


typedef struct {
    ngx_str_t                    key_id;
    u_char                       key[MX_ED25519_PK_LEN];
    int64_t                      expired_ts;
    u_char                      *file;          /* where it was set */
    ngx_uint_t                   line;
} ngx_http_matrix_old_key_t;


/* The signed key document, built once per worker and re-signed when half
 * of its validity has passed. */
typedef struct {
    u_char                      *data;          /* malloc'ed */
    size_t                       len;
    int64_t                      refresh_at_ms;
} ngx_http_matrix_key_doc_t;


typedef struct {
    ngx_array_t                  keysets;   /* of ngx_http_matrix_keyset_t * */
    ngx_array_t                  key_servers;  /* of ..._key_server_ref_t */
    ngx_array_t                  key_docs;  /* of ngx_http_matrix_key_doc_t * */
    ngx_array_t                  fed_users;     /* of ..._key_server_ref_t */
    ngx_matrix_redis_conf_t      redis;
    ngx_array_t                  redis_users;  /* of ..._key_server_ref_t */
    size_t                       send_join_cache;   /* the zone's bytes */
    ngx_shm_zone_t              *send_join_zone;    /* NULL: off */
    ngx_shm_zone_t              *metrics;       /* matrix_join_metrics */
    ngx_shm_zone_t              *keys;          /* matrix_join_keys */
} ngx_http_matrix_join_main_conf_t;


typedef struct {
    ngx_str_t                    server_name;
    ngx_http_matrix_keyset_t    *keyset;
    ngx_array_t                 *old_keys;  /* of ngx_http_matrix_old_key_t */
    ngx_msec_t                   key_validity;
    ngx_http_matrix_key_doc_t   *key_doc;
} ngx_http_matrix_join_srv_conf_t;


typedef struct {
    ngx_str_t                    key_fetch;         /* URI prefix */
    ngx_msec_t                   key_fetch_negative_ttl;
    ngx_msec_t                   key_fetch_timeout;
    ngx_uint_t                   key_fetch_rate;    /* per origin a minute */
    ngx_str_t                    fallback;          /* @name */
    ngx_msec_t                   max_age;           /* 0: off */
    ngx_uint_t                   join_rate;         /* per 1000 s; 0: off */
    ngx_uint_t                   join_burst;
    ngx_uint_t                   send_join;         /* matrix_send_join here */
    ngx_uint_t                   endpoint;  /* its handler: _EP_, not merged */
    u_char                      *key_fetch_file;    /* where they were set, */
    ngx_uint_t                   key_fetch_line;    /* for postconfiguration */
    u_char                      *fallback_file;
    ngx_uint_t                   fallback_line;
} ngx_http_matrix_join_loc_conf_t;


typedef struct ngx_http_matrix_ctx_s  ngx_http_matrix_ctx_t;

typedef void (*ngx_http_matrix_next_pt)(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);


#define NGX_HTTP_MATRIX_ALLOW_ROOMS_MAX   8

/* A restricted room's allowed rooms and the user's membership in each. */
typedef struct {
    const char                  *user;
    const char                  *rooms[NGX_HTTP_MATRIX_ALLOW_ROOMS_MAX];
    int                          joined[NGX_HTTP_MATRIX_ALLOW_ROOMS_MAX];
    size_t                       n;
    size_t                       next;
} ngx_http_matrix_allow_t;


/*
 * Per-request state shared by the federation handlers. A handler suspends
 * the request once (r->main->count++, NGX_DONE) and every path then ends in
 * exactly one ngx_http_matrix_finalize() (or the fallback).
 */
struct ngx_http_matrix_ctx_s {
    ngx_str_t                    origin;        /* verified: $matrix_origin */
    const char                  *errcode;       /* of an error answer */
    ngx_uint_t                   undecided;     /* handed over: cannot say */
    json_t                      *content;       /* parsed body, or NULL */

    /* X-Matrix headers and the one being checked */
    void                        *xm;            /* mx_xmatrix_t[] */
    ngx_uint_t                   nxm;
    ngx_uint_t                   cur;
    ngx_http_matrix_next_pt      authenticated;
    ngx_str_t                    why;           /* the last failure */

    /* waiting for a key fetch */
    void                        *fetch;
    ngx_queue_t                  wait_link;
    ngx_event_t                  wait_timer;
    ngx_event_t                  resume;
    ngx_http_cleanup_t          *cleanup;

    /* in a key fetch subrequest: the variables */
    ngx_str_t                    fetch_server;
    ngx_str_t                    fetch_key_id;

    void                        *data;          /* the handler's own */

    /* the join rate and the allowed rooms of make_join and send_join */
    ngx_http_matrix_next_pt      then;
    ngx_http_matrix_allow_t     *allow;
    unsigned                     sync:1;        /* inside the handler */
    unsigned                     suspended:1;
    unsigned                     waiting:1;
    unsigned                     key_only:1;    /* key_ensure, not auth */
};


/* Where a handler directive was used, checked once the servers are merged. */
typedef struct {
    ngx_http_matrix_join_srv_conf_t  *mscf;
    ngx_http_matrix_join_loc_conf_t  *mlcf;
    ngx_http_core_srv_conf_t         *cscf;     /* its server */
    u_char                           *file;
    ngx_uint_t                        line;
} ngx_http_matrix_key_server_ref_t;


extern ngx_module_t  ngx_http_matrix_join_module;


/* ngx_http_matrix_util.c */

/* Sends {"errcode": ..., "error": ...} with status; returns what the
 * content handler should return. */
ngx_int_t ngx_http_matrix_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *errcode, const char *fmt, ...);

/* Sends a complete JSON body from memory that outlives the request. */
ngx_int_t ngx_http_matrix_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len, ngx_uint_t copy);

/* Sends a JSON object (its reference is taken) as the whole answer. */
ngx_int_t ngx_http_matrix_send_body(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body);

int64_t ngx_http_matrix_now_ms(void);

/*
 * A shared memory zone of zone_size bytes holding one zeroed struct of
 * struct_size bytes, zone->data once the zone is initialised; a reload
 * keeps the previous cycle's. For the module's own zones (metrics, keys).
 */
ngx_shm_zone_t *ngx_http_matrix_shared_struct(ngx_conf_t *cf,
    ngx_str_t *name, size_t struct_size, size_t zone_size);

/*
 * Why a snapshot must not answer (marked stale, older than
 * matrix_join_max_age), from meta's stale and loaded_at; NULL if usable.
 */
const char *ngx_http_matrix_snapshot_unusable(ngx_http_request_t *r,
    redisReply *loaded_at, redisReply *stale);

/* Sets a location's content handler and records the use in uses[]. */
char *ngx_http_matrix_set_handler(ngx_conf_t *cf, ngx_http_handler_pt handler,
    ngx_array_t *uses);

/*
 * The two path parameters "{a}/{b}" of the raw URI after its first skip
 * bytes (the query left out), each percent-decoded as Synapse decodes
 * them (mx_uri_path_params) and NUL-terminated in r's pool. Returns NULL,
 * or what is wrong ("shape" when the path does not have that form).
 */
const char *ngx_http_matrix_path_params(ngx_http_request_t *r, size_t skip,
    ngx_str_t seg[2], const char *shape);

/*
 * The one path parameter "{a}" (an optional trailing '/') of the raw URI
 * after skip bytes, decoded as above; NULL, or what is wrong.
 */
const char *ngx_http_matrix_path_param(ngx_http_request_t *r, size_t skip,
    ngx_str_t *seg, const char *shape);

/*
 * The first query argument called name, decoded as Synapse (Twisted)
 * decodes it (mx_uri_arg_next) and NUL-terminated in r's pool: NGX_OK,
 * NGX_DECLINED when there is none, NGX_ERROR without memory.
 */
ngx_int_t ngx_http_matrix_query_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);

/* A string reply copied into r's pool, NUL-terminated; NULL if e is not
 * a string (or on allocation failure). */
char *ngx_http_matrix_reply_str(ngx_http_request_t *r, redisReply *e);

/*
 * The Redis keys, in r's pool, NUL-terminated, by src/core/mx_schema.h's
 * builders: "P{R}:suffix" (suffix an MX_KEY_ of a room) and "P name arg"
 * (name a global MX_KEY_, arg NULL or its argument).
 */
ngx_int_t ngx_http_matrix_room_key(ngx_http_request_t *r, ngx_str_t *room_id,
    const char *suffix, ngx_str_t *key);
/* the forwarder's index of rooms with an outbox: "P outbox:rooms" */
#define NGX_HTTP_MATRIX_KEY_OUTBOX_ROOMS  MX_KEY_OUTBOX ":" MX_KEY_ROOMS

ngx_int_t ngx_http_matrix_global_key(ngx_http_request_t *r, const char *name,
    const u_char *arg, size_t arg_len, ngx_str_t *key);

/* Ends a request suspended with NGX_DONE after a reply. */
void ngx_http_matrix_finalize(ngx_http_request_t *r, ngx_int_t rc);

/* The request's context, created on first use; NULL on allocation error. */
ngx_http_matrix_ctx_t *ngx_http_matrix_ctx(ngx_http_request_t *r);

/* Sends a Matrix error on a suspended request and finalizes it. */
void ngx_http_matrix_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...);

/*
 * The cache cannot answer (reason is logged): continue at the fallback
 * location, or answer status with M_NOT_FOUND / M_UNKNOWN.
 */
void ngx_http_matrix_fallback(ngx_http_request_t *r, ngx_uint_t status,
    const char *reason);

/*
 * The edge cannot decide where the homeserver can (an allowed room it
 * does not cache or whose snapshot may not answer, Redis failing before
 * anything was stored): the request goes to the fallback unchanged when
 * there is one, as an uncached room's does; else the Matrix error
 * status/errcode with the formatted reason (docs/directives.md, "When the
 * edge cannot decide").
 */
void ngx_http_matrix_undecided(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...);

/* ngx_http_matrix_join_check.c */

/*
 * The room's join rate (matrix_join_rate, a token bucket in Redis): next
 * runs when a token was taken or no rate is set; else 429, or Redis
 * failing: ngx_http_matrix_undecided().
 */
void ngx_http_matrix_join_rate_take(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx, ngx_str_t *room_id,
    ngx_http_matrix_next_pt next);

/*
 * Reads the user's membership in each of allow->rooms from those rooms'
 * snapshots (one script each), then runs next; a room that is not cached,
 * or whose snapshot may not answer (ngx_http_matrix_snapshot_unusable),
 * is MX_AUTH_ROOM_UNKNOWN; Redis failing is ngx_http_matrix_undecided().
 * ngx_http_matrix_allow_joined() answers mx_auth's room_joined() from the
 * result.
 */
void ngx_http_matrix_allow_check(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx, ngx_http_matrix_allow_t *allow,
    ngx_http_matrix_next_pt next);
int ngx_http_matrix_allow_joined(ngx_http_matrix_allow_t *allow,
    const char *room_id);

/* ngx_http_matrix_auth.c */
void ngx_http_matrix_authenticate(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx, ngx_http_matrix_next_pt next);
ngx_int_t ngx_http_matrix_auth_add_variables(ngx_conf_t *cf);
void ngx_http_matrix_key_ensure(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx, const char *server, const char *key_id,
    ngx_http_matrix_next_pt next);
ngx_int_t ngx_http_matrix_key_get(const char *server, const char *key_id,
    u_char *pk, int64_t *valid_until);
void ngx_http_matrix_auth_exit_worker(void);
ngx_int_t ngx_http_matrix_auth_init(ngx_conf_t *cf);
void ngx_http_matrix_auth_init_worker(ngx_cycle_t *cycle);

/* ngx_http_matrix_directory.c */
char *ngx_http_matrix_directory(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_matrix_send_join.c */
char *ngx_http_matrix_send_join(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_matrix_state.c, ngx_http_matrix_event.c */
char *ngx_http_matrix_state(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_matrix_event(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* ngx_http_matrix_make_join.c */
char *ngx_http_matrix_make_join(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_matrix_status.c */
char *ngx_http_matrix_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* ngx_http_matrix_key_server.c */
char *ngx_http_matrix_key_server(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_matrix_signing_key.c */
ngx_int_t ngx_http_matrix_keyset_read(ngx_conf_t *cf,
    ngx_http_matrix_keyset_t *ks);
ngx_int_t ngx_http_matrix_keys_init_worker(ngx_cycle_t *cycle,
    ngx_http_matrix_join_main_conf_t *mmcf);
void ngx_http_matrix_keys_exit_worker(ngx_http_matrix_join_main_conf_t *mmcf);

#endif /* NGX_HTTP_MATRIX_JOIN_H */
