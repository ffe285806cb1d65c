/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Parsed PDUs, per worker, addressed by their bytes: the handful of state
 * events every join reads (create, power levels, join rules, ACL) are
 * parsed once, not on every request. An entry is used only when the bytes
 * are identical (compared in full), so it can never answer for another
 * event; a slot holds the last PDU that hashed to it.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_matrix_pdu_cache.h"
#include "mx_json.h"


#define NGX_MATRIX_PDU_CACHE_SIZE  256
#define NGX_MATRIX_PDU_CACHE_MAX   65536     /* larger PDUs are not kept */


typedef struct {
    u_char     *bytes;          /* malloc'ed copy */
    size_t      len;
    json_t     *pdu;
} ngx_matrix_pdu_slot_t;


static ngx_matrix_pdu_slot_t  ngx_matrix_pdu_cache[NGX_MATRIX_PDU_CACHE_SIZE];


json_t *
ngx_matrix_pdu_parse(const char *bytes, size_t len, mx_err_t *err)
{
    u_char                 *copy;
    json_t                 *pdu;
    ngx_matrix_pdu_slot_t  *slot;

    slot = &ngx_matrix_pdu_cache[ngx_crc32_short((u_char *) bytes, len)
                                 % NGX_MATRIX_PDU_CACHE_SIZE];

    if (slot->pdu && slot->len == len
        && ngx_memcmp(slot->bytes, bytes, len) == 0)
    {
        return json_incref(slot->pdu);
    }

    pdu = mx_json_parse(bytes, len, 0, err);
    if (pdu == NULL || len > NGX_MATRIX_PDU_CACHE_MAX) {
        return pdu;
    }

    copy = ngx_alloc(len, ngx_cycle->log);
    if (copy == NULL) {
        return pdu;
    }

    ngx_memcpy(copy, bytes, len);

    ngx_free(slot->bytes);
    json_decref(slot->pdu);

    slot->bytes = copy;
    slot->len = len;
    slot->pdu = json_incref(pdu);

    return pdu;
}


void
ngx_matrix_pdu_cache_free(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_MATRIX_PDU_CACHE_SIZE; i++) {
        ngx_free(ngx_matrix_pdu_cache[i].bytes);
        json_decref(ngx_matrix_pdu_cache[i].pdu);
        ngx_memzero(&ngx_matrix_pdu_cache[i], sizeof(ngx_matrix_pdu_slot_t));
    }
}
