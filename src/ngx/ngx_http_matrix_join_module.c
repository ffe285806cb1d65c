/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The module: directives, configuration, worker start and exit. The
 * handlers are in files of their own; what they share is in
 * ngx_http_matrix_util.c and ngx_http_matrix_join_check.c.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_matrix_join.h"
#include "ngx_matrix_chunk_cache.h"
#include "ngx_matrix_pdu_cache.h"
#include "ngx_matrix_wake.h"
#include "mx_base64.h"
#include "mx_id.h"
#include "mx_pdu.h"


#define NGX_HTTP_MATRIX_KEY_VALIDITY_MIN  (3600 * 1000)
#define NGX_HTTP_MATRIX_MAX_AGE_DEFAULT   (600 * 1000)    /* 10m */


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
static char *ngx_http_matrix_redis_wait(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_redis_prefix(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_key_fetch(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_matrix_key_fetch_rate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_matrix_join_max_age(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_matrix_join_check_locations(ngx_conf_t *cf,
    ngx_http_matrix_key_server_ref_t *ref);
static ngx_http_core_loc_conf_t *ngx_http_matrix_join_find_location(
    ngx_http_core_srv_conf_t *cscf, ngx_str_t *uri);
static char *ngx_http_matrix_send_join_cache_check(ngx_conf_t *cf,
    void *post, void *data);


static ngx_conf_post_t  ngx_http_matrix_send_join_cache_post = {
    ngx_http_matrix_send_join_cache_check
};


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
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
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

    { ngx_string("matrix_redis_sentinel_password"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_matrix_join_main_conf_t, redis.sentinel_password),
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

    { ngx_string("matrix_redis_wait"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_matrix_redis_wait,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_key_fetch"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_matrix_key_fetch,
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
      ngx_http_matrix_key_fetch_rate,
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
      ngx_http_matrix_join_max_age,
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
      &ngx_http_matrix_send_join_cache_post },

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

    { ngx_string("matrix_state"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_state,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("matrix_event"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_matrix_event,
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

    ngx_matrix_chunks_init_process(cycle);
    ngx_http_matrix_auth_init_worker(cycle);
    ngx_matrix_wake_init_process(cycle);

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
    ngx_matrix_chunks_exit_process(mmcf->send_join_zone);
    ngx_http_matrix_keys_exit_worker(mmcf);
    ngx_http_matrix_auth_exit_worker();
    ngx_matrix_wake_exit_process();     /* after those that wake others */
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

    if (ngx_http_matrix_auth_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_matrix_metrics_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

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

        if (ngx_http_matrix_join_check_locations(cf, &ref[i]) != NGX_OK) {
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

    if (mmcf->redis.cluster && mmcf->redis.db != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "matrix_redis_db %i: Redis Cluster has only "
                           "database 0", mmcf->redis.db);
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_size_value(mmcf->send_join_cache, 256 * 1024 * 1024);

    if (mmcf->send_join_cache) {
        mmcf->send_join_zone = ngx_matrix_chunks_zone_add(cf,
                                                      mmcf->send_join_cache);
        if (mmcf->send_join_zone == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (mmcf->redis.prefix.data == NULL) {
        ngx_str_set(&mmcf->redis.prefix, MX_SCHEMA_PREFIX_DEFAULT);
    }

    return NGX_CONF_OK;
}


/* a slab pool needs room for its page index: as ssl_session_cache's */

static char *
ngx_http_matrix_send_join_cache_check(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    if (*sp != 0 && *sp < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "matrix_send_join_cache of %uz bytes is too "
                           "small: 0 (off) or at least %uz", *sp,
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
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
                    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                                  "\"matrix_old_verify_key\" \"%V\" is "
                                  "also a current key in \"%V\" in %s:%ui",
                                  &old[i].key_id, &conf->keyset->path,
                                  old[i].file, old[i].line);
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
     *     mlcf->endpoint = NGX_HTTP_MATRIX_EP_NONE;
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

    if (conf->key_fetch.data == NULL) {
        conf->key_fetch_file = prev->key_fetch_file;
        conf->key_fetch_line = prev->key_fetch_line;
    }

    if (conf->fallback.data == NULL) {
        conf->fallback_file = prev->fallback_file;
        conf->fallback_line = prev->fallback_line;
    }

    ngx_conf_merge_str_value(conf->key_fetch, prev->key_fetch, "");
    ngx_conf_merge_msec_value(conf->key_fetch_negative_ttl,
                              prev->key_fetch_negative_ttl, 30000);
    ngx_conf_merge_msec_value(conf->key_fetch_timeout,
                              prev->key_fetch_timeout, 10000);
    ngx_conf_merge_uint_value(conf->key_fetch_rate, prev->key_fetch_rate, 10);
    ngx_conf_merge_str_value(conf->fallback, prev->fallback, "");
    ngx_conf_merge_msec_value(conf->max_age, prev->max_age,
                              NGX_HTTP_MATRIX_MAX_AGE_DEFAULT);
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
    mlcf->fallback_file = cf->conf_file->file.name.data;
    mlcf->fallback_line = cf->conf_file->line;

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
    ok->file = cf->conf_file->file.name.data;
    ok->line = cf->conf_file->line;

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

    return ngx_matrix_redis_parse_address(cf, &mmcf->redis, &value[1],
                                          cf->args->nelts - 1);
}


/* matrix_redis_wait off | N TIMEOUT: WAIT N TIMEOUT before a join's 200 */

static char *
ngx_http_matrix_redis_wait(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_main_conf_t *mmcf = conf;

    ngx_int_t   n;
    ngx_msec_t  t;
    ngx_str_t  *value;

    if (mmcf->redis.wait_set) {
        return "is duplicate";
    }

    mmcf->redis.wait_set = 1;
    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "off") == 0) {
            return NGX_CONF_OK;
        }

        return "takes \"off\" or the number of replicas and a timeout";
    }

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR || n < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of replicas \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    t = ngx_parse_time(&value[2], 0);
    if (t == (ngx_msec_t) NGX_ERROR || t == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid timeout \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    mmcf->redis.wait_replicas = n;
    mmcf->redis.wait_timeout = t;

    return NGX_CONF_OK;
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


static char *
ngx_http_matrix_key_fetch(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t *mlcf = conf;

    ngx_str_t  *value;

    if (mlcf->key_fetch.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* a subrequest's URI: the location is checked in postconfiguration */

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"matrix_key_fetch\" URI prefix \"%V\" must "
                           "start with \"/\" (the URI of an internal "
                           "location)", &value[1]);
        return NGX_CONF_ERROR;
    }

    mlcf->key_fetch = value[1];
    mlcf->key_fetch_file = cf->conf_file->file.name.data;
    mlcf->key_fetch_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static char *
ngx_http_matrix_key_fetch_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_matrix_join_loc_conf_t *mlcf = conf;

    char       *rv;
    ngx_str_t  *value;

    rv = ngx_conf_set_num_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (mlcf->key_fetch_rate == 0) {
        value = cf->args->elts;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"matrix_key_fetch_rate\" \"%V\": at least 1 "
                           "fetch a minute (without \"matrix_key_fetch\" nothing "
                           "is fetched)", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* matrix_join_max_age time | off; off is kept as 0 */

static char *
ngx_http_matrix_join_max_age(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t *mlcf = conf;

    char       *rv;
    ngx_str_t  *value;

    if (mlcf->max_age != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        mlcf->max_age = 0;
        return NGX_CONF_OK;
    }

    rv = ngx_conf_set_msec_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (mlcf->max_age == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"matrix_join_max_age\" \"%V\": no snapshot is "
                           "that young; \"off\" uses snapshots of any age",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The locations a federation handler goes to at run time exist in its
 * server: the fallback's named location, and an internal location for the
 * key fetch subrequest. Found now, they are not an HTML 500 later.
 */

static ngx_int_t
ngx_http_matrix_join_check_locations(ngx_conf_t *cf,
    ngx_http_matrix_key_server_ref_t *ref)
{
    u_char                           *p;
    ngx_str_t                         uri;
    ngx_http_core_loc_conf_t        **clcfp, *clcf;
    ngx_http_matrix_join_loc_conf_t  *mlcf;

    static u_char  probe[] = "example.org/ed25519:a";

    mlcf = ref->mlcf;

    if (mlcf->fallback.len) {

        for (clcfp = ref->cscf->named_locations; clcfp && *clcfp; clcfp++) {
            if ((*clcfp)->name.len == mlcf->fallback.len
                && ngx_strncmp((*clcfp)->name.data, mlcf->fallback.data,
                               mlcf->fallback.len)
                   == 0)
            {
                break;
            }
        }

        if (clcfp == NULL || *clcfp == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"matrix_join_fallback\" names \"%V\", which is "
                          "not a named location of the server of the "
                          "handler in %s:%ui, in %s:%ui", &mlcf->fallback,
                          ref->file, ref->line, mlcf->fallback_file,
                          mlcf->fallback_line);
            return NGX_ERROR;
        }
    }

    if (mlcf->key_fetch.len == 0) {
        return NGX_OK;
    }

    /* a key fetch's URI: the prefix, a server name, a key ID */

    uri.len = mlcf->key_fetch.len + sizeof(probe) - 1;
    uri.data = ngx_pnalloc(cf->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(uri.data, mlcf->key_fetch.data, mlcf->key_fetch.len);
    ngx_memcpy(p, probe, sizeof(probe) - 1);

    clcf = ngx_http_matrix_join_find_location(ref->cscf, &uri);

    if (clcf == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"matrix_key_fetch\" URI prefix \"%V\" matches no "
                      "location in the server of the handler in %s:%ui, "
                      "in %s:%ui", &mlcf->key_fetch, ref->file, ref->line,
                      mlcf->key_fetch_file, mlcf->key_fetch_line);
        return NGX_ERROR;
    }

    if (clcf->internal != 1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"matrix_key_fetch\" URI prefix \"%V\" goes to "
                      "location \"%V\", which is not \"internal\" (clients "
                      "could use it as an open key proxy), in %s:%ui",
                      &mlcf->key_fetch, &clcf->name, mlcf->key_fetch_file,
                      mlcf->key_fetch_line);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The top-level location of server cscf that a request for uri would get:
 * the longest prefix location in the static tree, then, unless it is "^~"
 * or "=", the first regex location that matches. NULL: none.
 */

static ngx_http_core_loc_conf_t *
ngx_http_matrix_join_find_location(ngx_http_core_srv_conf_t *cscf,
    ngx_str_t *uri)
{
    u_char                         *u;
    size_t                          len, n;
    ngx_int_t                       rc;
    ngx_http_core_loc_conf_t       *clcf, *found;
    ngx_http_location_tree_node_t  *node;
#if (NGX_PCRE)
    ngx_http_core_loc_conf_t      **clcfp;
#endif

    clcf = cscf->ctx->loc_conf[ngx_http_core_module.ctx_index];

    found = NULL;
    node = clcf->static_locations;
    u = uri->data;
    len = uri->len;

    while (node) {
        n = ngx_min(len, (size_t) node->len);
        rc = ngx_filename_cmp(u, node->name, n);

        if (rc != 0) {
            node = (rc < 0) ? node->left : node->right;
            continue;
        }

        if (len > (size_t) node->len) {

            if (node->inclusive == NULL) {
                node = node->right;
                continue;
            }

            /* a prefix location: longer ones are in its tree */

            found = node->inclusive;
            u += node->len;
            len -= node->len;
            node = node->tree;
            continue;
        }

        if (len == (size_t) node->len) {
            if (node->exact) {
                return node->exact;
            }

            if (node->inclusive) {
                found = node->inclusive;
            }

            break;
        }

        node = node->left;
    }

#if (NGX_PCRE)

    if (found && found->noregex) {
        return found;
    }

    for (clcfp = clcf->regex_locations; clcfp && *clcfp; clcfp++) {
        if (ngx_regex_exec((*clcfp)->regex->regex, uri, NULL, 0) >= 0) {
            return *clcfp;
        }
    }

#endif

    return found;
}
