/*
 * Copyright (C) nginx-matrix-join authors.
 * The X-Matrix Authorization scheme: parse, build, verify.
 */

#ifndef MX_XMATRIX_H
#define MX_XMATRIX_H

#include <jansson.h>
#include "mx_util.h"
#include "mx_crypto.h"

#define MX_XMATRIX_NAME_MAX  256

typedef enum {
    MX_XMATRIX_OK = 0,
    MX_XMATRIX_MALFORMED = -1,     /* X-Matrix, but not usable: 400 */
    MX_XMATRIX_OTHER_SCHEME = -2   /* not an X-Matrix header: ignore it */
} mx_xmatrix_rc_e;

typedef struct {
    char        origin[MX_XMATRIX_NAME_MAX];
    char        destination[MX_XMATRIX_NAME_MAX];   /* "" when absent */
    char        key_id[MX_KEY_ID_MAX];
    uint8_t     sig[MX_ED25519_SIG_LEN];
    unsigned    has_destination:1;
} mx_xmatrix_t;

/*
 * Parses one Authorization header value. Scheme "X-Matrix" is matched
 * case-insensitively and followed by one or more spaces; then
 * comma-separated auth-params (RFC 9110 §11.4): names case-insensitive,
 * any order, optional whitespace around commas and '=', values either a
 * token (':' also accepted) or a quoted-string with backslash escapes.
 * Unknown params are ignored; a repeated known param is malformed.
 * origin, key and sig are required; origin must be a valid server name
 * (mx_server_name_valid), key a valid key id, sig unpadded base64 of 64
 * bytes. Returns an mx_xmatrix_rc_e; err says why when malformed.
 */
int mx_xmatrix_parse(const char *value, size_t len, mx_xmatrix_t *out,
    mx_err_t *err);

/*
 * The object that gets signed: {"method", "uri", "origin", "destination"
 * [, "content"]}; content is included only when not NULL. New reference.
 */
json_t *mx_xmatrix_request_object(const char *method, size_t method_len,
    const char *uri, size_t uri_len, const char *origin,
    const char *destination, const json_t *content);

/*
 * Builds a complete header value
 * `X-Matrix origin="o",destination="d",key="ed25519:x",sig="..."` signed
 * with k, appended to out. 0 or -1.
 */
int mx_xmatrix_sign(const char *method, const char *uri, const char *origin,
    const char *destination, const json_t *content,
    const mx_signing_key_t *k, mx_buf_t *out, mx_err_t *err);

/*
 * The canonical bytes an X-Matrix signature covers for this request
 * (destination = our_name), appended to out. 0 or -1.
 */
int mx_xmatrix_signed_bytes(const mx_xmatrix_t *h, const char *method,
    size_t method_len, const char *uri, size_t uri_len, const char *our_name,
    const json_t *content, mx_buf_t *out, mx_err_t *err);

/*
 * Verifies a parsed header for a request (method, raw uri incl. query,
 * body content or NULL) received by our_name: rebuilds the object with
 * destination = our_name and checks h->sig with pk. Does not compare
 * h->destination (the caller answers 401 for a mismatch). 0 or -1.
 */
int mx_xmatrix_verify(const mx_xmatrix_t *h, const char *method,
    size_t method_len, const char *uri, size_t uri_len, const char *our_name,
    const json_t *content, const uint8_t pk[MX_ED25519_PK_LEN],
    mx_err_t *err);

#endif /* MX_XMATRIX_H */
