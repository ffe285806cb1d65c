/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The module: directives, configuration, worker start and exit, and the
 * Matrix error responses shared by every handler.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdarg.h>
#include <stdio.h>

#include <jansson.h>

#include "ngx_http_matrix_join.h"
#include "mx_auth.h"
#include "mx_pdu.h"
#include "ngx_matrix_chunk_cache.h"
#include "ngx_matrix_pdu_cache.h"
#include "mx_base64.h"
#include "mx_id.h"
#include "mx_uri.h"


#define NGX_HTTP_MATRIX_KEY_VALIDITY_MIN  (3600 * 1000)


static ngx_int_t ngx_http_matrix_join_init_process(ngx_cycle_t *cycle);
static void ngx_http_matrix_join_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_matrix_join_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_matrix_join_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_matrix_join_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_matrix_join_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_matrix_join_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_matrix_server_name(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_signing_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_old_verify_key(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_matrix_key_validity(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_matrix_join_preconfiguration(ngx_conf_t *cf);
static void *ngx_http_matrix_join_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_matrix_join_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_matrix_join_fallback(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_join_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_redis_prefix(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_matrix_join_commands[] = {

    { ngx_string("matrix_server_name"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_matrix_server_name,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_signing_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_matrix_signing_key,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_old_verify_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE3,
      ngx_http_matrix_old_verify_key,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_key_validity"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_matrix_key_validity,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_srv_conf_t, key_validity),
      NULL },

    { ngx_string("matrix_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_matrix_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_redis_password"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_main_conf_t, redis.password),
      NULL },

    { ngx_string("matrix_redis_db"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_main_conf_t, redis.db),
      NULL },

    { ngx_string("matrix_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_main_conf_t, redis.timeout),
      NULL },

    { ngx_string("matrix_redis_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_matrix_redis_prefix,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_key_fetch"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_loc_conf_t, key_fetch),
      NULL },

    { ngx_string("matrix_key_fetch_negative_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_loc_conf_t, key_fetch_negative_ttl),
      NULL },

    { ngx_string("matrix_key_fetch_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_loc_conf_t, key_fetch_timeout),
      NULL },

    { ngx_string("matrix_key_fetch_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_loc_conf_t, key_fetch_rate),
      NULL },

    { ngx_string("matrix_join_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_matrix_join_fallback,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_join_max_age"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_loc_conf_t, max_age),
      NULL },

    { ngx_string("matrix_join_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_matrix_join_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_send_join_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_main_conf_t, send_join_cache),
      NULL },

    { ngx_string("matrix_send_join"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_send_join,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_make_join"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_make_join,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_directory"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_directory,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_key_server"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_key_server,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_matrix_join_module_ctx = {
    ngx_http_matrix_join_preconfiguration, /* preconfiguration */
    ngx_http_matrix_join_postconfiguration, /* postconfiguration */

    ngx_http_matrix_join_create_main_conf, /* create main configuration */
    ngx_http_matrix_join_init_main_conf,   /* init main configuration */

    ngx_http_matrix_join_create_srv_conf,  /* create server configuration */
    ngx_http_matrix_join_merge_srv_conf,   /* merge server configuration */

    ngx_http_matrix_join_create_loc_conf,  /* create location configuration */
    ngx_http_matrix_join_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_matrix_join_module = {
    NGX_MODULE_V1,
    &ngx_http_matrix_join_module_ctx,      /* module context */
    ngx_http_matrix_join_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_matrix_join_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_matrix_join_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_matrix_join_init_process(ngx_cycle_t *cycle)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_matrix_join_module);
    if (mmcf == NULL) {
        return NGX_OK;
    }

    if (ngx_http_matrix_keys_init_worker(cycle, mmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mmcf->redis.address.len) {
        return ngx_matrix_redis_init_worker(cycle, &mmcf->redis);
    }

    return NGX_OK;
}


static void
ngx_http_matrix_join_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_matrix_join_module);
    if (mmcf == NULL) {
        return;
    }

    ngx_matrix_redis_exit_worker();
    ngx_matrix_pdu_cache_free();
    ngx_matrix_chunks_free_all();
    ngx_http_matrix_keys_exit_worker(mmcf);
}


ngx_int_t
ngx_http_matrix_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len, ngx_uint_t copy)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_http_discard_request_body(r);

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (copy && len) {
        b->start = ngx_pnalloc(r->pool, len);
        if (b->start == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(b->start, data, len);
        data = b->start;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = len ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_matrix_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...)
{
    u_char    msg[512], *last;
    json_t   *obj;
    va_list   ap;

    va_start(ap, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, ap);
    va_end(ap);

    *last = '\0';

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: %ui %s: %s", status, errcode, msg);

    obj = json_pack("{s:s, s:s}", "errcode", errcode, "error", (char *) msg);

    return ngx_http_matrix_send_body(r, status, obj);
}


ngx_int_t
ngx_http_matrix_send_body(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body)
{
    char       *text;
    ngx_int_t   rc;

    text = body ? json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(body);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_matrix_send_json(r, status, (u_char *) text,
                                   ngx_strlen(text), 1);
    free(text);

    return rc;
}


int64_t
ngx_http_matrix_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


static ngx_int_t
ngx_http_matrix_join_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_matrix_auth_add_variables(cf);
}


static ngx_int_t
ngx_http_matrix_join_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                         i;
    ngx_http_matrix_key_server_ref_t  *ref;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    /* the servers are merged by now: every key server needs a name and key */

    ref = mmcf->key_servers.elts;

    for (i = 0; i < mmcf->key_servers.nelts; i++) {

        if (ref[i].mscf->server_name.len == 0
            || ref[i].mscf->keyset == NULL)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"matrix_key_server\" in %s:%ui needs "
                          "\"matrix_server_name\" and \"matrix_signing_key\" "
                          "in its server or http block",
                          ref[i].file, ref[i].line);
            return NGX_ERROR;
        }
    }

    ref = mmcf->fed_users.elts;

    for (i = 0; i < mmcf->fed_users.nelts; i++) {

        if (ref[i].mscf->server_name.len == 0
            || ref[i].mscf->keyset == NULL
            || mmcf->redis.address.len == 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "the federation handler in %s:%ui needs "
                          "\"matrix_server_name\", \"matrix_signing_key\" "
                          "and \"matrix_redis\"", ref[i].file, ref[i].line);
            return NGX_ERROR;
        }
    }

    ref = mmcf->redis_users.elts;

    if (mmcf->redis.address.len == 0 && mmcf->redis_users.nelts) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the handler in %s:%ui needs \"matrix_redis\" in the "
                      "http block", ref[0].file, ref[0].line);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void *
ngx_http_matrix_join_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_matrix_join_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mmcf->keysets, cf->pool, 2,
                       sizeof(ngx_http_matrix_keyset_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mmcf->key_servers, cf->pool, 2,
                       sizeof(ngx_http_matrix_key_server_ref_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mmcf->key_docs, cf->pool, 4,
                       sizeof(ngx_http_matrix_key_doc_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mmcf->fed_users, cf->pool, 4,
                       sizeof(ngx_http_matrix_key_server_ref_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mmcf->redis_users, cf->pool, 2,
                       sizeof(ngx_http_matrix_key_server_ref_t))
        != NGX_OK)
    {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->redis.address = { 0, NULL };
     *     mmcf->redis.password = { 0, NULL };
     *     mmcf->redis.prefix = { 0, NULL };
     */

    mmcf->redis.db = NGX_CONF_UNSET;
    mmcf->redis.timeout = NGX_CONF_UNSET_MSEC;
    mmcf->send_join_cache = NGX_CONF_UNSET_SIZE;

    return mmcf;
}


static char *
ngx_http_matrix_join_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_matrix_join_main_conf_t *mmcf = conf;

    ngx_conf_init_value(mmcf->redis.db, 0);
    ngx_conf_init_msec_value(mmcf->redis.timeout, 1000);
    ngx_conf_init_size_value(mmcf->send_join_cache, 256 * 1024 * 1024);

    if (mmcf->redis.prefix.data == NULL) {
        ngx_str_set(&mmcf->redis.prefix, MX_SCHEMA_PREFIX_DEFAULT);
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_matrix_join_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_matrix_join_srv_conf_t  *mscf;

    mscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_matrix_join_srv_conf_t));
    if (mscf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mscf->server_name = { 0, NULL };
     *     mscf->keyset = NULL;
     *     mscf->key_doc = NULL;
     */

    mscf->old_keys = NGX_CONF_UNSET_PTR;
    mscf->key_validity = NGX_CONF_UNSET_MSEC;

    return mscf;
}


static char *
ngx_http_matrix_join_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_matrix_join_srv_conf_t *prev = parent;
    ngx_http_matrix_join_srv_conf_t *conf = child;

    ngx_http_matrix_key_doc_t         **doc;
    ngx_http_matrix_join_main_conf_t   *mmcf;

    ngx_conf_merge_str_value(conf->server_name, prev->server_name, "");

    if (conf->keyset == NULL) {
        conf->keyset = prev->keyset;
    }

    ngx_conf_merge_ptr_value(conf->old_keys, prev->old_keys, NULL);
    ngx_conf_merge_msec_value(conf->key_validity, prev->key_validity,
                              86400 * 1000);

    /* a key is either current or old, never both (Complement checks it) */

    if (conf->keyset && conf->old_keys) {
        ngx_uint_t                  i, k;
        ngx_http_matrix_old_key_t  *old;

        old = conf->old_keys->elts;

        for (i = 0; i < conf->old_keys->nelts; i++) {
            for (k = 0; k < conf->keyset->nkeys; k++) {
                if (ngx_strcmp(old[i].key_id.data, conf->keyset->key_ids[k])
                    == 0)
                {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "old verify key \"%V\" is also a "
                                       "current key in \"%V\"",
                                       &old[i].key_id, &conf->keyset->path);
                    return NGX_CONF_ERROR;
                }
            }
        }
    }

    /* each server block caches its own key document, per worker */

    conf->key_doc = ngx_pcalloc(cf->pool, sizeof(ngx_http_matrix_key_doc_t));
    if (conf->key_doc == NULL) {
        return NGX_CONF_ERROR;
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    doc = ngx_array_push(&mmcf->key_docs);
    if (doc == NULL) {
        return NGX_CONF_ERROR;
    }

    *doc = conf->key_doc;

    return NGX_CONF_OK;
}


static void *
ngx_http_matrix_join_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    mlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_matrix_join_loc_conf_t));
    if (mlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mlcf->key_fetch = { 0, NULL };
     *     mlcf->fallback = { 0, NULL };
     */

    mlcf->key_fetch_negative_ttl = NGX_CONF_UNSET_MSEC;
    mlcf->key_fetch_timeout = NGX_CONF_UNSET_MSEC;
    mlcf->key_fetch_rate = NGX_CONF_UNSET_UINT;
    mlcf->max_age = NGX_CONF_UNSET_MSEC;
    mlcf->join_rate = NGX_CONF_UNSET_UINT;
    mlcf->join_burst = NGX_CONF_UNSET_UINT;

    return mlcf;
}


static char *
ngx_http_matrix_join_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_matrix_join_loc_conf_t *prev = parent;
    ngx_http_matrix_join_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_str_value(conf->key_fetch, prev->key_fetch, "");
    ngx_conf_merge_msec_value(conf->key_fetch_negative_ttl,
                              prev->key_fetch_negative_ttl, 30000);
    ngx_conf_merge_msec_value(conf->key_fetch_timeout,
                              prev->key_fetch_timeout, 10000);
    ngx_conf_merge_uint_value(conf->key_fetch_rate, prev->key_fetch_rate, 10);
    ngx_conf_merge_str_value(conf->fallback, prev->fallback, "");
    ngx_conf_merge_msec_value(conf->max_age, prev->max_age, 0);
    ngx_conf_merge_uint_value(conf->join_rate, prev->join_rate, 0);
    ngx_conf_merge_uint_value(conf->join_burst, prev->join_burst, 1);

    if (conf->send_join) {
        /*
         * A send_join body (at most 64 KiB) is read into memory, never into
         * a temporary file that would have to be read back with blocking
         * I/O: the core module's settings are merged before ours.
         */
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->client_body_buffer_size < MX_PDU_MAX_LEN) {
            clcf->client_body_buffer_size = MX_PDU_MAX_LEN;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_matrix_join_fallback(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t *mlcf = conf;

    ngx_str_t  *value;

    if (mlcf->fallback.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len < 2 || value[1].data[0] != '@') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid fallback \"%V\": a named location "
                           "(\"@name\") is expected", &value[1]);
        return NGX_CONF_ERROR;
    }

    mlcf->fallback = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_matrix_server_name(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_srv_conf_t *mscf = conf;

    ngx_str_t  *value;

    if (mscf->server_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (!mx_server_name_valid((char *) value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Matrix server name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    mscf->server_name = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_matrix_signing_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_srv_conf_t *mscf = conf;

    ngx_str_t                          *value;
    ngx_http_matrix_keyset_t           *ks, **ksp;
    ngx_http_matrix_join_main_conf_t   *mmcf;

    if (mscf->keyset) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ks = ngx_pcalloc(cf->pool, sizeof(ngx_http_matrix_keyset_t));
    if (ks == NULL) {
        return NGX_CONF_ERROR;
    }

    ks->path = value[1];

    if (ngx_conf_full_name(cf->cycle, &ks->path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_matrix_keyset_read(cf, ks) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    ksp = ngx_array_push(&mmcf->keysets);
    if (ksp == NULL) {
        return NGX_CONF_ERROR;
    }

    *ksp = ks;
    mscf->keyset = ks;

    return NGX_CONF_OK;
}


static char *
ngx_http_matrix_old_verify_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_matrix_join_srv_conf_t *mscf = conf;

    long                        n;
    ngx_str_t                  *value;
    ngx_uint_t                  i;
    ngx_http_matrix_old_key_t  *ok, *old;

    value = cf->args->elts;

    if (mscf->old_keys == NGX_CONF_UNSET_PTR) {
        mscf->old_keys = ngx_array_create(cf->pool, 2,
                                          sizeof(ngx_http_matrix_old_key_t));
        if (mscf->old_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len < sizeof("ed25519:") - 1 + 1
        || ngx_strncmp(value[1].data, "ed25519:", sizeof("ed25519:") - 1)
           != 0
        || !mx_key_id_valid((char *) value[1].data, value[1].len)
        || value[1].len >= MX_KEY_ID_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid key id \"%V\", expected "
                           "\"ed25519:<version>\" with a version of "
                           "[a-zA-Z0-9_]", &value[1]);
        return NGX_CONF_ERROR;
    }

    old = mscf->old_keys->elts;

    for (i = 0; i < mscf->old_keys->nelts; i++) {
        if (old[i].key_id.len == value[1].len
            && ngx_strncmp(old[i].key_id.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate old verify key \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    ok = ngx_array_push(mscf->old_keys);
    if (ok == NULL) {
        return NGX_CONF_ERROR;
    }

    ok->key_id = value[1];

    n = mx_b64_decode(ok->key, sizeof(ok->key), (char *) value[2].data,
                      value[2].len, MX_B64_STD);
    if (n != MX_ED25519_PK_LEN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid public key \"%V\", expected the unpadded "
                           "base64 of 32 bytes", &value[2]);
        return NGX_CONF_ERROR;
    }

    ok->expired_ts = ngx_atoof(value[3].data, value[3].len);
    if (ok->expired_ts == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid expiry \"%V\", expected milliseconds "
                           "since the epoch", &value[3]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_matrix_key_validity(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *rv;

    ngx_msec_t  *msp;

    rv = ngx_conf_set_msec_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    msp = (ngx_msec_t *) ((char *) conf + cmd->offset);

    if (*msp < NGX_HTTP_MATRIX_KEY_VALIDITY_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"matrix_key_validity\" must be at least 1h: "
                           "servers must not publish keys that expire "
                           "within the hour");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_matrix_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_main_conf_t *mmcf = conf;

    ngx_str_t  *value;

    if (mmcf->redis.address.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_matrix_redis_parse_address(cf, &mmcf->redis, &value[1]);
}


static char *
ngx_http_matrix_redis_prefix(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_main_conf_t *mmcf = conf;

    ngx_str_t  *value;

    if (mmcf->redis.prefix.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* braces would change the hash tag that keeps a room in one slot */

    if (!mx_schema_prefix_valid((char *) value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis key prefix \"%V\": braces, "
                           "spaces and control characters are not "
                           "allowed", &value[1]);
        return NGX_CONF_ERROR;
    }

    mmcf->redis.prefix = value[1];

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_matrix_room_key(ngx_http_request_t *r, ngx_str_t *room_id,
    const char *suffix, ngx_str_t *key)
{
    size_t                             n;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    n = mx_schema_room_key(NULL, 0, (char *) mmcf->redis.prefix.data,
                           mmcf->redis.prefix.len, (char *) room_id->data,
                           room_id->len, suffix);

    key->data = ngx_pnalloc(r->pool, n + 1);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    key->len = mx_schema_room_key((char *) key->data, n + 1,
                                  (char *) mmcf->redis.prefix.data,
                                  mmcf->redis.prefix.len,
                                  (char *) room_id->data, room_id->len,
                                  suffix);

    return NGX_OK;
}


ngx_int_t
ngx_http_matrix_global_key(ngx_http_request_t *r, const char *name,
    const u_char *arg, size_t arg_len, ngx_str_t *key)
{
    size_t                             n;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    n = mx_schema_global_key(NULL, 0, (char *) mmcf->redis.prefix.data,
                             mmcf->redis.prefix.len, name,
                             (const char *) arg, arg_len);

    key->data = ngx_pnalloc(r->pool, n + 1);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    key->len = mx_schema_global_key((char *) key->data, n + 1,
                                    (char *) mmcf->redis.prefix.data,
                                    mmcf->redis.prefix.len, name,
                                    (const char *) arg, arg_len);

    return NGX_OK;
}


void
ngx_http_matrix_undecided(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...)
{
    u_char                           msg[512], *last;
    va_list                          ap;
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    va_start(ap, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, ap);
    va_end(ap);

    *last = '\0';

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->fallback.len) {
        ngx_http_matrix_fallback(r, status, (char *) msg);
        return;
    }

    ngx_http_matrix_fail(r, status, errcode, "%s", msg);
}


void
ngx_http_matrix_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_uint_t              sync;
    ngx_connection_t       *c;
    ngx_http_matrix_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    /* read before: finalizing may free the request and its pool */
    sync = (ctx && ctx->sync);

    ngx_http_finalize_request(r, rc);

    /* inside the content handler nginx runs them itself, after it */
    if (!sync) {
        ngx_http_run_posted_requests(c);
    }
}


ngx_http_matrix_ctx_t *
ngx_http_matrix_ctx(ngx_http_request_t *r)
{
    ngx_http_matrix_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_matrix_join_module);
    }

    return ctx;
}


void
ngx_http_matrix_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *errcode, const char *fmt, ...)
{
    u_char     msg[512], *last;
    va_list    ap;
    ngx_int_t  rc;

    /* nginx's formats: %V for ngx_str_t, %s, %ui, %L, ... */
    va_start(ap, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, ap);
    va_end(ap);

    *last = '\0';

    rc = ngx_http_matrix_send_error(r, status, errcode, "%s", msg);

    ngx_http_matrix_finalize(r, rc);
}


void
ngx_http_matrix_fallback(ngx_http_request_t *r, ngx_uint_t status,
    const char *reason)
{
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->fallback.len == 0) {
        if (status == NGX_HTTP_NOT_FOUND) {
            ngx_http_matrix_fail(r, status, "M_NOT_FOUND", "%s", reason);

        } else {
            ngx_http_matrix_fail(r, NGX_HTTP_SERVICE_UNAVAILABLE, "M_UNKNOWN",
                                 "%s", reason);
        }

        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: %s, passing the request to \"%V\"", reason,
                  &mlcf->fallback);

    /* the request continues there unchanged: our count goes with it */

    (void) ngx_http_named_location(r, &mlcf->fallback);

    ngx_http_matrix_finalize(r, NGX_DONE);
}


char *
ngx_http_matrix_set_handler(ngx_conf_t *cf, ngx_http_handler_pt handler,
    ngx_array_t *uses)
{
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_matrix_key_server_ref_t  *ref;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate: this location already has a content handler";
    }

    clcf->handler = handler;

    /* remembered so that postconfiguration can name the location */

    ref = ngx_array_push(uses);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    ref->mscf = ngx_http_conf_get_module_srv_conf(cf,
                                                  ngx_http_matrix_join_module);
    ref->file = cf->conf_file->file.name.data;
    ref->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/* matrix_join_rate 1r/s [burst=10]; kept as tokens per 1000 s */

static char *
ngx_http_matrix_join_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t *mlcf = conf;

    u_char     *p;
    size_t      len;
    ngx_int_t   rate, scale, burst;
    ngx_str_t  *value;

    if (mlcf->join_rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    p = value[1].data;
    len = value[1].len;
    scale = 0;

    if (len > 3 && ngx_strncmp(p + len - 3, "r/s", 3) == 0) {
        scale = 1000;
        len -= 3;

    } else if (len > 3 && ngx_strncmp(p + len - 3, "r/m", 3) == 0) {
        scale = 60;
        len -= 3;
    }

    rate = ngx_atoi(p, len);

    if (scale == 0 || rate <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid join rate \"%V\", expected like "
                           "\"1r/s\" or \"30r/m\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    /* tokens per 1000 s: r/s * 1000, r/m * 1000 / 60 */
    mlcf->join_rate = (scale == 1000) ? (ngx_uint_t) rate * 1000
                                      : (ngx_uint_t) rate * 1000 / 60;

    if (mlcf->join_rate == 0) {
        mlcf->join_rate = 1;
    }

    burst = 1;

    if (cf->args->nelts == 3) {
        if (value[2].len <= 6
            || ngx_strncmp(value[2].data, "burst=", 6) != 0
            || (burst = ngx_atoi(value[2].data + 6, value[2].len - 6)) <= 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\", expected \"burst=N\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    mlcf->join_burst = burst;

    return NGX_CONF_OK;
}


const char *
ngx_http_matrix_snapshot_unusable(ngx_http_request_t *r, redisReply *loaded_at,
    redisReply *stale)
{
    int64_t                           at;
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    if (stale->type == REDIS_REPLY_STRING && stale->len == 1
        && stale->str[0] == '1')
    {
        return "the room's snapshot is marked stale";
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->max_age == 0) {
        return NULL;
    }

    at = (loaded_at->type == REDIS_REPLY_STRING)
         ? strtoll(loaded_at->str, NULL, 10) : 0;

    if (ngx_http_matrix_now_ms() - at > (int64_t) mlcf->max_age) {
        return "the room's snapshot is older than matrix_join_max_age";
    }

    return NULL;
}


/* The join rate and the allowed rooms, shared by make_join and send_join */

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


const char *
ngx_http_matrix_path_params(ngx_http_request_t *r, size_t skip,
    ngx_str_t seg[2], const char *shape)
{
    u_char         *p, *end, *buf;
    ngx_uint_t      n;
    mx_uri_part_t   part[2];

    p = r->unparsed_uri.data + skip;
    end = r->unparsed_uri.data + r->unparsed_uri.len;

    if (r->args_start) {
        end = r->args_start - 1;     /* the '?' */
    }

    if (p > end) {
        return shape;
    }

    buf = ngx_pnalloc(r->pool, end - p + 2);
    if (buf == NULL) {
        return "out of memory";
    }

    switch (mx_uri_path_params((char *) p, end - p, (char *) buf, part)) {

    case MX_URI_OK:
        break;

    case MX_URI_NUL:
        return "a path parameter holds a NUL byte";

    default:
        return shape;
    }

    for (n = 0; n < 2; n++) {
        seg[n].data = (u_char *) part[n].data;
        seg[n].len = part[n].len;
    }

    return NULL;
}


ngx_int_t
ngx_http_matrix_query_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    size_t       pos, vlen;
    const char  *val;

    pos = 0;

    if (!mx_uri_arg_next((char *) r->args.data, r->args.len, &pos, name,
                         &val, &vlen))
    {
        return NGX_DECLINED;
    }

    value->data = ngx_pnalloc(r->pool, vlen + 1);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    value->len = mx_uri_unescape((char *) value->data, val, vlen, 1);
    value->data[value->len] = '\0';

    return NGX_OK;
}


char *
ngx_http_matrix_reply_str(ngx_http_request_t *r, redisReply *e)
{
    char  *s;

    if (e == NULL || e->type != REDIS_REPLY_STRING) {
        return NULL;
    }

    s = ngx_pnalloc(r->pool, e->len + 1);
    if (s == NULL) {
        return NULL;
    }

    ngx_memcpy(s, e->str, e->len);
    s[e->len] = '\0';

    return s;
}
