/*
 * Copyright (C) nginx-matrix-join authors.
 * The counters of matrix_metrics, per machine: they live in one shared
 * memory zone that every worker adds to (ngx_http_matrix_metrics.c).
 */

#ifndef NGX_HTTP_MATRIX_METRICS_H
#define NGX_HTTP_MATRIX_METRICS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* the handler a location has, for matrix_join_requests_total{endpoint} */
typedef enum {
    NGX_HTTP_MATRIX_EP_NONE = 0,
    NGX_HTTP_MATRIX_EP_MAKE_JOIN,
    NGX_HTTP_MATRIX_EP_SEND_JOIN,
    NGX_HTTP_MATRIX_EP_DIRECTORY,
    NGX_HTTP_MATRIX_EP_KEY_SERVER,
    NGX_HTTP_MATRIX_EP_STATE,
    NGX_HTTP_MATRIX_EP_EVENT,
    NGX_HTTP_MATRIX_EP_N
} ngx_http_matrix_endpoint_e;


typedef enum {
    NGX_HTTP_MATRIX_OUT_ANSWERED = 0,   /* 1xx-3xx sent by the module */
    NGX_HTTP_MATRIX_OUT_HANDED_OVER,    /* continued at the fallback */
    NGX_HTTP_MATRIX_OUT_REFUSED,        /* 4xx */
    NGX_HTTP_MATRIX_OUT_ERROR,          /* 5xx */
    NGX_HTTP_MATRIX_OUT_N
} ngx_http_matrix_outcome_e;


/* Adds the zone and the log phase handler that counts the answers. */
ngx_int_t ngx_http_matrix_metrics_init(ngx_conf_t *cf);

/* why a request went to the fallback */
typedef enum {
    NGX_HTTP_MATRIX_WHY_SNAPSHOT = 0,   /* the cache cannot answer it */
    NGX_HTTP_MATRIX_WHY_REDIS,          /* Redis failing */
    NGX_HTTP_MATRIX_WHY_UNDECIDED,      /* the edge cannot decide */
    NGX_HTTP_MATRIX_WHY_N
} ngx_http_matrix_why_e;


/* how a key fetch ended, or why none was made */
typedef enum {
    NGX_HTTP_MATRIX_KF_FETCHED = 0,     /* the key */
    NGX_HTTP_MATRIX_KF_FAILED,          /* no key: remembered as failed */
    NGX_HTTP_MATRIX_KF_RATE,            /* matrix_key_fetch_rate reached */
    NGX_HTTP_MATRIX_KF_BUSY,            /* 64 fetches under way already */
    NGX_HTTP_MATRIX_KF_N
} ngx_http_matrix_fetch_result_e;


/* The request r (of a location with a handler) goes to the fallback. */
void ngx_http_matrix_metrics_handed_over(ngx_http_request_t *r,
    ngx_http_matrix_why_e why);

/* The errcode of the error answer r is being sent (a static string). */
void ngx_http_matrix_metrics_errcode(ngx_http_request_t *r,
    const char *errcode);

/* A key fetch of the machine ended, or was not made. */
void ngx_http_matrix_metrics_key_fetch(ngx_http_matrix_fetch_result_e res);

/* A join newly accepted into the outbox (not a retry's "dup"). */
void ngx_http_matrix_metrics_join_accepted(void);

/* A Redis command failed, or a connection failed or was lost. */
void ngx_http_matrix_metrics_redis_error(void);
/* a Redis Cluster's redirect (1: MOVED or ASK) or slot map asked (0) */
void ngx_http_matrix_metrics_redis_cluster(ngx_uint_t redirect);

char *ngx_http_matrix_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

#endif /* NGX_HTTP_MATRIX_METRICS_H */
