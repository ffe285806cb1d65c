/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Our signing keys: the key file read with the configuration (nginx -t
 * reports a bad one), the keypairs expanded in each worker in
 * sodium_malloc() memory, the seeds wiped, everything freed at exit.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sodium.h>

#include "ngx_http_matrix_join.h"
#include "mx_keyfile.h"


static void ngx_http_matrix_keyset_wipe(void *data);


/* Signing key files are small; anything bigger is not one. */
#define NGX_HTTP_MATRIX_KEYFILE_MAX  65536


ngx_int_t
ngx_http_matrix_keyset_read(ngx_conf_t *cf, ngx_http_matrix_keyset_t *ks)
{
    u_char               *text;
    size_t                n, i;
    ssize_t               got;
    ngx_fd_t              fd;
    mx_err_t              err;
    ngx_file_info_t       fi;
    ngx_pool_cleanup_t   *cln;
    mx_signing_key_t     *keys;

    if (mx_crypto_init() != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "sodium_init() failed");
        return NGX_ERROR;
    }

    fd = ngx_open_file(ks->path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " signing key \"%s\" failed",
                           ks->path.data);
        return NGX_ERROR;
    }

    text = NULL;
    keys = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " signing key \"%s\" failed",
                           ks->path.data);
        goto failed;
    }

    if (ngx_file_size(&fi) > NGX_HTTP_MATRIX_KEYFILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "signing key \"%s\" is too large to be a key file",
                           ks->path.data);
        goto failed;
    }

    n = (size_t) ngx_file_size(&fi);

    /* the key material passes through locked memory that is wiped after */

    text = sodium_malloc(n + 1);
    keys = sodium_malloc(MX_KEYFILE_MAX_KEYS * sizeof(mx_signing_key_t));

    if (text == NULL || keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "sodium_malloc() failed");
        goto failed;
    }

    got = ngx_read_fd(fd, text, n);
    if (got == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " signing key \"%s\" failed",
                           ks->path.data);
        goto failed;
    }

    text[got] = '\0';

    if (mx_keyfile_parse((char *) text, (size_t) got, keys,
                         MX_KEYFILE_MAX_KEYS, &n, &err)
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid signing key file \"%s\": %s",
                           ks->path.data, err.text);
        goto failed;
    }

    ks->nkeys = n;
    ks->key_ids = ngx_pcalloc(cf->pool, n * sizeof(ks->key_ids[0]));
    ks->seeds = ngx_pcalloc(cf->pool, n * sizeof(ks->seeds[0]));

    if (ks->key_ids == NULL || ks->seeds == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        ngx_memcpy(ks->key_ids[i], keys[i].key_id, MX_KEY_ID_MAX);
        ngx_memcpy(ks->seeds[i], keys[i].sk, MX_ED25519_SEED_LEN);
    }

    /* the configuration's copy of the seeds is wiped when it is freed */

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    cln->handler = ngx_http_matrix_keyset_wipe;
    cln->data = ks;

    ngx_close_file(fd);
    sodium_free(text);
    sodium_free(keys);

    return NGX_OK;

failed:

    ngx_close_file(fd);

    if (text) {
        sodium_free(text);
    }

    if (keys) {
        sodium_free(keys);
    }

    return NGX_ERROR;
}


static void
ngx_http_matrix_keyset_wipe(void *data)
{
    ngx_http_matrix_keyset_t *ks = data;

    if (ks->seeds) {
        sodium_memzero(ks->seeds, ks->nkeys * sizeof(ks->seeds[0]));
    }
}


ngx_int_t
ngx_http_matrix_keys_init_worker(ngx_cycle_t *cycle,
    ngx_http_matrix_join_main_conf_t *mmcf)
{
    mx_err_t                    err;
    ngx_uint_t                  i, k;
    ngx_http_matrix_keyset_t  **ksp, *ks;

    if (mmcf->keysets.nelts == 0) {
        return NGX_OK;
    }

    if (mx_crypto_init() != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "sodium_init() failed");
        return NGX_ERROR;
    }

    ksp = mmcf->keysets.elts;

    for (i = 0; i < mmcf->keysets.nelts; i++) {
        ks = ksp[i];

        /* sodium_malloc() locks the pages and surrounds them with guards */

        ks->keys = sodium_malloc(ks->nkeys * sizeof(mx_signing_key_t));
        if (ks->keys == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "sodium_malloc() for the signing keys failed");
            return NGX_ERROR;
        }

        for (k = 0; k < ks->nkeys; k++) {
            if (mx_signing_key_from_seed(&ks->keys[k], ks->key_ids[k],
                                         ks->seeds[k], &err)
                != 0)
            {
                /* the seeds were validated with the configuration */
                ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                              "signing key \"%s\": %s", ks->path.data,
                              err.text);
                return NGX_ERROR;
            }
        }

        /* the worker keeps only the expanded keys */
        sodium_memzero(ks->seeds, ks->nkeys * sizeof(ks->seeds[0]));
    }

    return NGX_OK;
}


void
ngx_http_matrix_keys_exit_worker(ngx_http_matrix_join_main_conf_t *mmcf)
{
    ngx_uint_t                  i;
    ngx_http_matrix_keyset_t  **ksp;
    ngx_http_matrix_key_doc_t **docs;

    /* the documents are malloc'ed; the pool that points to them is not */

    docs = mmcf->key_docs.elts;

    for (i = 0; i < mmcf->key_docs.nelts; i++) {
        free(docs[i]->data);
        docs[i]->data = NULL;
    }

    ksp = mmcf->keysets.elts;

    for (i = 0; i < mmcf->keysets.nelts; i++) {
        if (ksp[i]->keys) {
            sodium_free(ksp[i]->keys);      /* zeroes before unmapping */
            ksp[i]->keys = NULL;
        }
    }
}
