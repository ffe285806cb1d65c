/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * One hiredis async context per worker, driven by nginx's event loop.
 */

#ifndef NGX_MATRIX_REDIS_H
#define NGX_MATRIX_REDIS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "mx_lua.h"


typedef enum {
    NGX_MATRIX_REDIS_OK = 0,
    NGX_MATRIX_REDIS_UNAVAILABLE,   /* cannot connect, or connection lost */
    NGX_MATRIX_REDIS_TIMEOUT,       /* no reply within matrix_redis_timeout */
    NGX_MATRIX_REDIS_SCHEMA_ERROR,  /* Redis holds a schema we do not know */
    NGX_MATRIX_REDIS_REPLY_ERROR    /* Redis answered with an error */
} ngx_matrix_redis_status_e;


typedef struct {
    ngx_str_t                    host;          /* numeric, NUL'ed */
    int                          port;
} ngx_matrix_redis_host_t;


typedef struct {
    ngx_str_t                    address;       /* as configured */
    ngx_str_t                    host;          /* numeric, or unix path */
    int                          port;          /* 0 for unix sockets */
    ngx_str_t                    master;        /* Sentinel's name, or "" */
    ngx_matrix_redis_host_t     *sentinels;
    ngx_uint_t                   nsentinels;
    ngx_flag_t                   cluster;       /* "cluster:host:port ..." */
    ngx_matrix_redis_host_t     *seeds;         /* its nodes to ask first */
    ngx_uint_t                   nseeds;
    ngx_uint_t                   wait_replicas; /* matrix_redis_wait; 0 off */
    ngx_msec_t                   wait_timeout;
    ngx_flag_t                   wait_set;
    ngx_str_t                    password;
    ngx_str_t                    sentinel_password;  /* the sentinels' */
    ngx_int_t                    db;
    ngx_msec_t                   timeout;
    ngx_str_t                    prefix;
} ngx_matrix_redis_conf_t;


/*
 * Called once per command with the reply (valid only during the call) and
 * a status; only while the request is alive. reply is NULL unless status is
 * NGX_MATRIX_REDIS_OK. Error replies come as NGX_MATRIX_REDIS_REPLY_ERROR
 * with err set to Redis's message.
 */
typedef void (*ngx_matrix_redis_handler_pt)(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);


ngx_int_t ngx_matrix_redis_init_worker(ngx_cycle_t *cycle,
    ngx_matrix_redis_conf_t *rcf);
void ngx_matrix_redis_exit_worker(void);

/*
 * Sends a command on behalf of r, or of no request when r is NULL (a
 * write nobody waits for: handler may be NULL, failures are logged).
 * Returns NGX_OK when the handler will be
 * called (exactly once, unless the request dies first), or an error status
 * (not NGX_OK) when the command could not even be queued; the handler is
 * not called then.
 */
ngx_int_t ngx_matrix_redis_command(ngx_http_request_t *r,
    ngx_matrix_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);

/*
 * EVALSHA of a script of src/lua (mx_lua_scripts[], loaded with SCRIPT
 * LOAD at connect; EVAL after NOSCRIPT) with nkeys keys and nargs args
 * (keys first).
 */
ngx_int_t ngx_matrix_redis_script(ngx_http_request_t *r, mx_lua_e script,
    ngx_matrix_redis_handler_pt handler, void *data, int nkeys, int nargs,
    const char **argv, const size_t *argvlen);

/*
 * WAIT wait_replicas wait_timeout (matrix_redis_wait) on the connection
 * the writes before it went out on: its reply is the number of replicas
 * that acknowledged them. Its timer is matrix_redis_timeout plus the WAIT
 * timeout.
 */
ngx_int_t ngx_matrix_redis_wait(ngx_http_request_t *r,
    ngx_matrix_redis_handler_pt handler, void *data);

/*
 * With Sentinel: asks a sentinel now which server is the master, and
 * leaves the connection when it names another (a WAIT that fell short).
 */
void ngx_matrix_redis_suspect(void);

/*
 * Redis Cluster: the next command with no key of its own (MULTI, EXEC,
 * WAIT) goes to the node of this key; a command with a key sets it too.
 * Call it before a MULTI block or a WAIT with one of the keys they are
 * about. Nothing without a cluster.
 */
void ngx_matrix_redis_route(const u_char *key, size_t len);

/* For scripts run inside MULTI: their SHA-1 (hex) and source. */
const char *ngx_matrix_redis_script_sha1(mx_lua_e script);
const char *ngx_matrix_redis_script_source(mx_lua_e script);

/* The status code and Matrix message for an adapter status. */
ngx_uint_t ngx_matrix_redis_http_status(ngx_matrix_redis_status_e status);
const char *ngx_matrix_redis_status_text(ngx_matrix_redis_status_e status);

/* A Redis Cluster's node i for matrix_status; NGX_DECLINED past the end
 * (or without a cluster). */
typedef struct {
    const char                  *host;
    int                          port;
    const char                  *state;
    ngx_uint_t                   slots;         /* in this worker's map */
    ngx_uint_t                   connects;
    ngx_uint_t                   hangs;
    ngx_uint_t                   outstanding;
    const char                  *last_error;
} ngx_matrix_redis_node_info_t;

ngx_int_t ngx_matrix_redis_cluster_node(ngx_uint_t i,
    ngx_matrix_redis_node_info_t *ni);
ngx_uint_t ngx_matrix_redis_cluster_refreshes(void);   /* CLUSTER SLOTS */
ngx_uint_t ngx_matrix_redis_cluster_redirects(void);   /* MOVED and ASK */

/* Connection state for matrix_status: "connected", "connecting", ...;
 * with a cluster, of the masters that serve slots ("partly connected"),
 * and the counts below are the sum of every node's. */
const char *ngx_matrix_redis_state(void);
ngx_uint_t ngx_matrix_redis_connects(void);
ngx_uint_t ngx_matrix_redis_hangs(void);         /* connections closed as hung */
ngx_uint_t ngx_matrix_redis_outstanding(void);   /* commands awaiting replies */
const char *ngx_matrix_redis_last_error(void);

/*
 * The arguments of matrix_redis (mx_redis_addr.h): one address, or
 * "sentinel:NAME" and the sentinels' addresses; names resolved here.
 */
char *ngx_matrix_redis_parse_address(ngx_conf_t *cf,
    ngx_matrix_redis_conf_t *rcf, ngx_str_t *args, ngx_uint_t nargs);

#endif /* NGX_MATRIX_REDIS_H */
