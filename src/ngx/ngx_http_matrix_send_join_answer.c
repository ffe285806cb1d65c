/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The send_join answer, {"auth_chain":[...],"state":[...],"event":...,
 * ...}: a chain of buffers with Content-Length, made of the snapshot's
 * chunk lists as they came from Redis (the reply strings are taken over
 * from hiredis, not copied), the member events the edge joins replaced
 * cut out by position, and what the accept script added.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_matrix_send_join.h"


typedef struct {
    ngx_http_request_t          *r;
    ngx_chain_t                 *first;
    ngx_chain_t                **last;
    off_t                        len;
    ngx_uint_t                   items;     /* in the current array */
} ngx_http_matrix_out_t;


static ngx_int_t
ngx_http_matrix_out(ngx_http_matrix_out_t *o, u_char *data, size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (len == 0) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(o->r->pool);
    cl = ngx_alloc_chain_link(o->r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->start = data;
    b->end = b->last;
    b->memory = 1;

    cl->buf = b;
    cl->next = NULL;
    *o->last = cl;
    o->last = &cl->next;
    o->len += len;

    return NGX_OK;
}


#define ngx_http_matrix_out_lit(o, s)                                         \
    ngx_http_matrix_out(o, (u_char *) s, sizeof(s) - 1)


/* One array item: a comma before every item but the first. */

static ngx_int_t
ngx_http_matrix_out_item(ngx_http_matrix_out_t *o, u_char *data, size_t len)
{
    if (len == 0) {
        return NGX_OK;
    }

    if (o->items++ && ngx_http_matrix_out_lit(o, ",") != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_matrix_out(o, data, len);
}


/*
 * A reply string's memory becomes ours: hiredis frees a string reply's
 * str only when it is not NULL, so the chunks reach the client as Redis
 * sent them, without a copy. They are freed with the request.
 */

static u_char *
ngx_http_matrix_steal(ngx_http_matrix_send_join_ctx_t *sj, redisReply *e)
{
    char  **slot;

    slot = ngx_array_push(&sj->stolen);
    if (slot == NULL) {
        return NULL;
    }

    *slot = e->str;
    e->str = NULL;

    return (u_char *) *slot;
}


typedef struct {
    ngx_uint_t                   chunk;
    size_t                       off;
    size_t                       len;
    ngx_uint_t                   in_auth;
} ngx_http_matrix_cut_t;


static int ngx_libc_cdecl
ngx_http_matrix_cut_cmp(const void *a, const void *b)
{
    const ngx_http_matrix_cut_t  *x = a, *y = b;

    if (x->chunk != y->chunk) {
        return x->chunk < y->chunk ? -1 : 1;
    }

    return x->off < y->off ? -1 : (x->off > y->off);
}


/*
 * The events of one list of chunks as array items, leaving out the cut
 * ranges (sorted). A chunk is "ev,ev,ev": between cuts the rest is split
 * into spans, each trimmed of the commas at its ends.
 */

static ngx_int_t
ngx_http_matrix_out_chunks(ngx_http_matrix_out_t *o,
    ngx_matrix_chunk_list_t *list, ngx_http_matrix_cut_t *cuts,
    ngx_uint_t ncuts)
{
    u_char      *data, *p, *end, *s, *e;
    size_t       i;
    ngx_uint_t   k;

    k = 0;

    for (i = 0; i < list->n; i++) {
        if (list->len[i] == 0) {
            continue;
        }

        data = list->data[i];
        end = data + list->len[i];
        p = data;

        while (k < ncuts && cuts[k].chunk < i) {
            k++;
        }

        for ( ;; ) {
            s = p;
            e = end;

            if (k < ncuts && cuts[k].chunk == i) {
                e = data + cuts[k].off;
                p = e + cuts[k].len;
                k++;

            } else {
                p = NULL;
            }

            while (s < e && *s == ',') {
                s++;
            }

            while (e > s && e[-1] == ',') {
                e--;
            }

            if (ngx_http_matrix_out_item(o, s, e - s) != NGX_OK) {
                return NGX_ERROR;
            }

            if (p == NULL) {
                break;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_matrix_out_strings(ngx_http_matrix_out_t *o,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *list)
{
    size_t       i;
    u_char      *data;
    redisReply  *e;

    if (list->type != REDIS_REPLY_ARRAY) {
        return NGX_OK;
    }

    for (i = 0; i < list->elements; i++) {
        e = list->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            continue;
        }

        data = ngx_http_matrix_steal(sj, e);
        if (data == NULL
            || ngx_http_matrix_out_item(o, data, e->len) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The member events the edge records replaced, "c:o:l:a" each, as sorted
 * cuts into list (state_m).
 */

static ngx_int_t
ngx_http_matrix_cuts(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *cr,
    ngx_matrix_chunk_list_t *list, ngx_http_matrix_cut_t **out,
    ngx_uint_t *nout)
{
    ngx_uint_t              i, n;
    ngx_http_matrix_cut_t  *cuts;
    unsigned long           c, off, len, a;

    n = (cr->type == REDIS_REPLY_ARRAY) ? cr->elements : 0;
    cuts = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_http_matrix_cut_t));
    if (cuts == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (cr->element[i]->type != REDIS_REPLY_STRING
            || sscanf(cr->element[i]->str, "%lu:%lu:%lu:%lu", &c, &off, &len,
                      &a) != 4
            || list == NULL || c >= list->n
            || off + len > list->len[c])
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "matrix: a bad member position in the snapshot of "
                          "\"%V\"", &sj->room_id);
            return NGX_ERROR;
        }

        cuts[i].chunk = c;
        cuts[i].off = off;
        cuts[i].len = len;
        cuts[i].in_auth = a;
    }

    ngx_qsort(cuts, n, sizeof(ngx_http_matrix_cut_t),
              ngx_http_matrix_cut_cmp);

    *out = cuts;
    *nout = n;

    return NGX_OK;
}


/* The headers, then the chain o holds. */

static ngx_int_t
ngx_http_matrix_out_send(ngx_http_request_t *r, ngx_http_matrix_out_t *o)
{
    ngx_int_t     rc;
    ngx_chain_t  *last;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = o->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    last = (ngx_chain_t *) ((u_char *) o->last
                            - offsetof(ngx_chain_t, next));
    last->buf->last_buf = (r == r->main);
    last->buf->last_in_chain = 1;

    return ngx_http_output_filter(r, o->first);
}


/*
 * res: {status, seq, state extra, cuts, auth extra, servers, partial
 * state, partial auth}; lists: the LRANGE replies (state_nm, state_m, auth
 * or state_nm, auth_nm).
 */

ngx_int_t
ngx_http_matrix_send_join_answer(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *res)
{
    ngx_uint_t                i, n;
    redisReply               *cr;
    ngx_http_matrix_out_t     o;
    ngx_http_matrix_cut_t    *cuts;
    ngx_matrix_chunk_list_t  *lists, *list;

    /* full: state_nm, state_m, auth; partial: state_nm, auth_nm */

    lists = sj->chunks->lists;

    /* the member events the edge joins replaced: "c:o:l:a" */

    cr = res->element[3];
    list = sj->omit ? NULL : &lists[1];

    if (ngx_http_matrix_cuts(r, sj, cr, list, &cuts, &n) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&o, sizeof(ngx_http_matrix_out_t));
    o.r = r;
    o.last = &o.first;

    if (sj->v1 && ngx_http_matrix_out_lit(&o, "[200,") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* auth_chain; a cut event that is not in the auth list goes here */

    if (ngx_http_matrix_out_lit(&o, "{\"auth_chain\":[") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (cuts[i].in_auth) {
            continue;
        }

        if (ngx_http_matrix_out_item(&o, list->data[cuts[i].chunk]
                                         + cuts[i].off, cuts[i].len)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_matrix_out_chunks(&o, &lists[sj->omit ? 1 : 2], NULL, 0)
        != NGX_OK
        || ngx_http_matrix_out_strings(&o, sj, res->element[4]) != NGX_OK
        || (sj->omit
            && ngx_http_matrix_out_strings(&o, sj, res->element[7])
               != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* event, members_omitted, servers_in_room */

    if (ngx_http_matrix_out_lit(&o, "],\"event\":") != NGX_OK
        || ngx_http_matrix_out(&o, (u_char *) sj->accepted, sj->accepted_len)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (sj->omit) {
        cr = res->element[5];

        if (ngx_http_matrix_out_lit(&o, ",\"members_omitted\":true") != NGX_OK
            || (cr->type == REDIS_REPLY_STRING
                && (ngx_http_matrix_out_lit(&o, ",\"servers_in_room\":")
                    != NGX_OK
                    || ngx_http_matrix_out(&o, (u_char *) cr->str, cr->len)
                       != NGX_OK
                    || ngx_http_matrix_steal(sj, cr) == NULL)))
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (ngx_http_matrix_out_lit(&o, ",\"members_omitted\":false")
               != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* state */

    o.items = 0;

    if (ngx_http_matrix_out_lit(&o, ",\"state\":[") != NGX_OK
        || ngx_http_matrix_out_chunks(&o, &lists[0], NULL, 0) != NGX_OK
        || (!sj->omit
            && ngx_http_matrix_out_chunks(&o, &lists[1], cuts, n) != NGX_OK)
        || ngx_http_matrix_out_strings(&o, sj, res->element[2]) != NGX_OK
        || (sj->omit
            && ngx_http_matrix_out_strings(&o, sj, res->element[6])
               != NGX_OK)
        || ngx_http_matrix_out_lit(&o, "]}") != NGX_OK
        || (sj->v1 && ngx_http_matrix_out_lit(&o, "]") != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_matrix_out_send(r, &o);
}


/*
 * The /state answer, {"auth_chain":[...],"pdus":[...]}, from the full
 * chunk lists (state_nm, state_m, auth): the state is the chunks minus
 * the cut member events plus sx, the auth chain the auth list plus
 * extra (which holds the cut events it needs: they are not added here).
 */

ngx_int_t
ngx_http_matrix_state_answer(ngx_http_request_t *r,
    ngx_http_matrix_send_join_ctx_t *sj, redisReply *sx, redisReply *cr,
    redisReply *extra)
{
    ngx_uint_t                n;
    ngx_http_matrix_out_t     o;
    ngx_http_matrix_cut_t    *cuts;
    ngx_matrix_chunk_list_t  *lists;

    lists = sj->chunks->lists;

    if (ngx_http_matrix_cuts(r, sj, cr, &lists[1], &cuts, &n) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&o, sizeof(ngx_http_matrix_out_t));
    o.r = r;
    o.last = &o.first;

    if (ngx_http_matrix_out_lit(&o, "{\"auth_chain\":[") != NGX_OK
        || ngx_http_matrix_out_chunks(&o, &lists[2], NULL, 0) != NGX_OK
        || ngx_http_matrix_out_strings(&o, sj, extra) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    o.items = 0;

    if (ngx_http_matrix_out_lit(&o, "],\"pdus\":[") != NGX_OK
        || ngx_http_matrix_out_chunks(&o, &lists[0], NULL, 0) != NGX_OK
        || ngx_http_matrix_out_chunks(&o, &lists[1], cuts, n) != NGX_OK
        || ngx_http_matrix_out_strings(&o, sj, sx) != NGX_OK
        || ngx_http_matrix_out_lit(&o, "]}") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_matrix_out_send(r, &o);
}
