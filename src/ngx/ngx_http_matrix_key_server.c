/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * GET /_matrix/key/v2/server (matrix_key_server): our key document, built
 * per worker on the first request and signed again when half of
 * matrix_key_validity has passed.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_matrix_join.h"
#include "mx_base64.h"
#include "mx_json.h"


static ngx_int_t ngx_http_matrix_key_server_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_matrix_key_doc_build(ngx_http_request_t *r,
    ngx_http_matrix_join_srv_conf_t *mscf, int64_t now);


static ngx_int_t
ngx_http_matrix_key_server_handler(ngx_http_request_t *r)
{
    int64_t                           now;
    ngx_http_matrix_key_doc_t        *doc;
    ngx_http_matrix_join_srv_conf_t  *mscf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_matrix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                          "M_UNRECOGNIZED",
                                          "Unrecognized request: only GET "
                                          "is supported here");
    }

    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    if (mscf->keyset->keys == NULL) {
        /* reconfigured without a worker start (master_process off) */
        return ngx_http_matrix_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "M_UNKNOWN",
                                          "the signing keys are not loaded "
                                          "in this process");
    }

    doc = mscf->key_doc;
    now = ngx_http_matrix_now_ms();

    if (doc->data == NULL || now >= doc->refresh_at_ms) {
        if (ngx_http_matrix_key_doc_build(r, mscf, now) != NGX_OK) {
            if (doc->data == NULL) {
                return ngx_http_matrix_send_error(r,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "M_UNKNOWN",
                                          "cannot build the key document");
            }

            /* the previous document is still valid for half its life */
        }
    }

    return ngx_http_matrix_send_json(r, NGX_HTTP_OK, doc->data, doc->len, 1);
}


/*
 * The document lives in malloc'ed memory owned by the worker and is replaced
 * when half of its validity has passed; requests send a copy from their own
 * pool (a few hundred bytes), so a slow client never holds the old one.
 */
static ngx_int_t
ngx_http_matrix_key_doc_build(ngx_http_request_t *r,
    ngx_http_matrix_join_srv_conf_t *mscf, int64_t now)
{
    char                        pkb64[MX_ED25519_PK_B64_LEN + 1];
    char                       *key_id;
    size_t                      len;
    json_t                     *doc, *vk, *ovk, *k;
    mx_err_t                    err;
    ngx_uint_t                  i;
    mx_signing_key_t           *keys;
    ngx_http_matrix_keyset_t   *ks;
    ngx_http_matrix_old_key_t  *old;
    ngx_http_matrix_key_doc_t  *kd;

    ks = mscf->keyset;
    keys = ks->keys;
    kd = mscf->key_doc;

    doc = json_object();
    vk = json_object();
    ovk = json_object();

    if (doc == NULL || vk == NULL || ovk == NULL) {
        goto failed;
    }

    if (json_object_set_new(doc, "server_name",
                            json_stringn((char *) mscf->server_name.data,
                                         mscf->server_name.len))
        || json_object_set(doc, "verify_keys", vk)
        || json_object_set(doc, "old_verify_keys", ovk)
        || json_object_set_new(doc, "valid_until_ts",
                               json_integer(now + (int64_t) mscf->key_validity)))
    {
        goto failed;
    }

    for (i = 0; i < ks->nkeys; i++) {
        mx_b64_encode(pkb64, keys[i].pk, MX_ED25519_PK_LEN, MX_B64_STD);

        k = json_pack("{s:s}", "key", pkb64);
        if (k == NULL || json_object_set_new(vk, keys[i].key_id, k) != 0) {
            goto failed;
        }
    }

    if (mscf->old_keys) {
        old = mscf->old_keys->elts;

        for (i = 0; i < mscf->old_keys->nelts; i++) {
            mx_b64_encode(pkb64, old[i].key, MX_ED25519_PK_LEN, MX_B64_STD);

            /* configuration arguments are NUL-terminated */
            key_id = (char *) old[i].key_id.data;

            k = json_pack("{s:s, s:I}", "key", pkb64,
                          "expired_ts", (json_int_t) old[i].expired_ts);
            if (k == NULL || json_object_set_new(ovk, key_id, k) != 0) {
                goto failed;
            }
        }
    }

    /* every current key signs, as Synapse does */

    for (i = 0; i < ks->nkeys; i++) {
        if (mx_json_sign(doc, (char *) mscf->server_name.data, &keys[i], &err)
            != 0)
        {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "signing the key document failed: %s", err.text);
            goto failed;
        }
    }

    {
        mx_buf_t  out = MX_BUF_INIT;

        if (mx_json_canonical(doc, &out, &err) != 0) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "encoding the key document failed: %s", err.text);
            mx_buf_free(&out);
            goto failed;
        }

        len = out.len;

        if (kd->data) {
            free(kd->data);
        }

        kd->data = (u_char *) out.data;
        kd->len = len;
    }

    kd->refresh_at_ms = now + (int64_t) mscf->key_validity / 2;

    json_decref(vk);
    json_decref(ovk);
    json_decref(doc);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "matrix key document built, %uz bytes", len);

    return NGX_OK;

failed:

    json_decref(vk);
    json_decref(ovk);
    json_decref(doc);

    return NGX_ERROR;
}


char *
ngx_http_matrix_key_server(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_matrix_join_loc_conf_t   *mlcf = conf;
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    mlcf->endpoint = NGX_HTTP_MATRIX_EP_KEY_SERVER;    /* matrix_metrics */

    return ngx_http_matrix_set_handler(cf, ngx_http_matrix_key_server_handler, &mmcf->key_servers);
}
