/*
 * Copyright (C) nginx-matrix-join authors.
 */

#ifndef NGX_MATRIX_PDU_CACHE_H
#define NGX_MATRIX_PDU_CACHE_H

#include <jansson.h>

#include "mx_util.h"


/*
 * The parsed PDU of bytes[0..len) (a new reference; the caller must not
 * modify it: it may be shared), or NULL with err. Non-strict parse.
 */
json_t *ngx_matrix_pdu_parse(const char *bytes, size_t len, mx_err_t *err);

/* At worker exit. */
void ngx_matrix_pdu_cache_free(void);

#endif /* NGX_MATRIX_PDU_CACHE_H */
