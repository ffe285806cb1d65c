/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * A request's read of a generation's chunk lists, for send_join's answer
 * and /state's: from the machine's zone (ngx_matrix_chunk_cache.h), or
 * from Redis by one request of the machine while the others wait for its
 * copy, woken when its read ends.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_join.h"
#include "ngx_http_matrix_send_join.h"


static void ngx_http_matrix_chunks_wait(ngx_event_t *ev);


/* how long a request waits for another's read before it reads itself */

static ngx_msec_t
ngx_http_matrix_chunks_max_wait(ngx_http_request_t *r)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    return mmcf->redis.timeout + 500;
}


ngx_int_t
ngx_http_matrix_chunks_look(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx,
    ngx_http_matrix_send_join_ctx_t *sj, ngx_http_matrix_next_pt retry)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    ngx_matrix_chunks_release(sj->chunks);
    sj->chunks = ngx_matrix_chunks_get(mmcf->send_join_zone, &sj->room_id,
                                       sj->generation, sj->omit,
                                       r->connection->log);

    if (sj->chunks != NULL || sj->filling) {
        return NGX_OK;
    }

    sj->wait.handler = ngx_http_matrix_chunks_wait;
    sj->wait.data = sj;
    sj->wait.log = r->connection->log;
    sj->wait_r = r;
    sj->wait_ctx = ctx;
    sj->wait_retry = retry;

    if (ngx_matrix_chunks_fill_start(mmcf->send_join_zone, &sj->room_id,
                                     sj->generation, sj->omit,
                                     ngx_http_matrix_chunks_max_wait(r),
                                     &sj->waiter, &sj->wait))
    {
        sj->filling = 1;
        return NGX_OK;
    }

    /* posted when the read ends; the timer if it never does */

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: a request of \"%V\" waits for another request's "
                  "read of generation %s", &sj->room_id, sj->generation);

    ngx_add_timer(&sj->wait, ngx_http_matrix_chunks_max_wait(r));

    return NGX_AGAIN;
}


ngx_int_t
ngx_http_matrix_chunks_take(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply **lists, ngx_uint_t n)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    if (sj->chunks == NULL) {
        sj->chunks = ngx_matrix_chunks_from_replies(mmcf->send_join_zone,
                                                    &sj->room_id,
                                                    sj->generation, sj->omit,
                                                    lists, n,
                                                    r->connection->log);
        if (sj->chunks == NULL) {
            return NGX_ERROR;
        }
    }

    if (sj->filling) {
        /*
         * The copy is published: the waiting requests, of every worker,
         * find it. (A request that ends before this point ends its read
         * in ngx_http_matrix_chunks_end(); they then read themselves.)
         */
        ngx_matrix_chunks_fill_end(mmcf->send_join_zone, &sj->room_id,
                                   sj->generation, sj->omit);
        sj->filling = 0;
    }

    return NGX_OK;
}


void
ngx_http_matrix_chunks_end(ngx_http_matrix_send_join_ctx_t *sj)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    if (sj->wait.timer_set) {
        ngx_del_timer(&sj->wait);
    }

    if (sj->wait.posted) {
        ngx_delete_posted_event(&sj->wait);
    }

    ngx_matrix_chunks_wait_done(&sj->waiter);

    if (sj->filling) {
        mmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_matrix_join_module);
        ngx_matrix_chunks_fill_end(mmcf->send_join_zone, &sj->room_id,
                                   sj->generation, sj->omit);
        sj->filling = 0;
    }

    ngx_matrix_chunks_release(sj->chunks);
    sj->chunks = NULL;
}


static void
ngx_http_matrix_chunks_wait(ngx_event_t *ev)
{
    ngx_connection_t                 *c;
    ngx_http_request_t               *r;
    ngx_http_matrix_send_join_ctx_t  *sj;

    sj = ev->data;
    r = sj->wait_r;
    c = r->connection;

    /* woken by the read's end, or its timer: either way, look again */

    if (ev->timedout) {
        ev->timedout = 0;
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "matrix: a request of \"%V\" waited %M ms for another "
                      "request's read of generation %s, in vain: it reads "
                      "for itself", &sj->room_id,
                      ngx_http_matrix_chunks_max_wait(r), sj->generation);

    } else if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    ngx_matrix_chunks_wait_done(&sj->waiter);

    sj->wait_retry(r, sj->wait_ctx);
    ngx_http_run_posted_requests(c);
}
