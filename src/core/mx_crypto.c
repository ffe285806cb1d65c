/*
 * Copyright (C) nginx-matrix-join authors.
 * SHA-256 and ed25519 (libsodium), signing keys, and the Matrix
 * "Signing JSON" algorithm.
 */

#include <string.h>
#include <sodium.h>

#include "mx_base64.h"
#include "mx_crypto.h"
#include "mx_json.h"


#define MX_ED25519_PREFIX      "ed25519:"
#define MX_ED25519_PREFIX_LEN  (sizeof(MX_ED25519_PREFIX) - 1)


static int mx_key_version_valid(const char *p, size_t n);


int
mx_crypto_init(void)
{
    /* 1 means "already initialised" */
    return (sodium_init() < 0) ? -1 : 0;
}


void
mx_sha256(uint8_t out[MX_SHA256_LEN], const void *in, size_t n)
{
    crypto_hash_sha256(out, in, n);
}


int
mx_signing_key_from_seed(mx_signing_key_t *k, const char *key_id,
    const uint8_t seed[MX_ED25519_SEED_LEN], mx_err_t *err)
{
    size_t  len;

    len = strlen(key_id);

    if (len >= MX_KEY_ID_MAX
        || len <= MX_ED25519_PREFIX_LEN
        || memcmp(key_id, MX_ED25519_PREFIX, MX_ED25519_PREFIX_LEN) != 0
        || !mx_key_version_valid(key_id + MX_ED25519_PREFIX_LEN,
                                 len - MX_ED25519_PREFIX_LEN))
    {
        mx_err_set(err, "invalid signing key id \"%.64s\"", key_id);
        return -1;
    }

    if (crypto_sign_seed_keypair(k->pk, k->sk, seed) != 0) {
        mx_err_set(err, "cannot expand signing key seed");
        return -1;
    }

    memcpy(k->key_id, key_id, len + 1);

    return 0;
}


void
mx_signing_key_wipe(mx_signing_key_t *k)
{
    sodium_memzero(k, sizeof(mx_signing_key_t));
}


int
mx_key_id_valid(const char *id, size_t len)
{
    size_t         i;
    unsigned char  ch;

    for (i = 0; i < len; i++) {
        ch = (unsigned char) id[i];

        if (ch == ':') {
            break;
        }

        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
              || ch == '_'))
        {
            return 0;
        }
    }

    if (i == 0 || i == len) {
        return 0;
    }

    return mx_key_version_valid(id + i + 1, len - i - 1);
}


/* [a-zA-Z0-9_]+ */
static int
mx_key_version_valid(const char *p, size_t n)
{
    size_t         i;
    unsigned char  ch;

    if (n == 0) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        ch = (unsigned char) p[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '_'))
        {
            return 0;
        }
    }

    return 1;
}


void
mx_ed25519_sign(uint8_t sig[MX_ED25519_SIG_LEN], const void *m, size_t n,
    const mx_signing_key_t *k)
{
    crypto_sign_detached(sig, NULL, m, n, k->sk);
}


int
mx_ed25519_verify(const uint8_t sig[MX_ED25519_SIG_LEN], const void *m,
    size_t n, const uint8_t pk[MX_ED25519_PK_LEN])
{
    return (crypto_sign_verify_detached(sig, m, n, pk) == 0) ? 0 : -1;
}


int
mx_json_signing_bytes(const json_t *obj, mx_buf_t *out, mx_err_t *err)
{
    int      rc;
    json_t  *copy;

    if (!json_is_object(obj)) {
        mx_err_set(err, "signed JSON must be an object");
        return -1;
    }

    /* A shallow copy: only the top-level keys are removed. */
    copy = json_copy((json_t *) obj);
    if (copy == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    json_object_del(copy, "signatures");
    json_object_del(copy, "unsigned");

    rc = mx_json_canonical(copy, out, err);

    json_decref(copy);

    return rc;
}


int
mx_json_sign(json_t *obj, const char *entity, const mx_signing_key_t *k,
    mx_err_t *err)
{
    int       rc;
    char      b64[MX_ED25519_SIG_B64_LEN + 1];
    json_t   *sigs, *mine, *s;
    uint8_t   sig[MX_ED25519_SIG_LEN];
    mx_buf_t  bytes = MX_BUF_INIT;

    sigs = json_object_get(obj, "signatures");

    if (sigs != NULL && !json_is_object(sigs)) {
        mx_err_set(err, "\"signatures\" is not an object");
        return -1;
    }

    mine = (sigs != NULL) ? json_object_get(sigs, entity) : NULL;

    if (mine != NULL && !json_is_object(mine)) {
        mx_err_set(err, "\"signatures.%.64s\" is not an object", entity);
        return -1;
    }

    if (mx_json_signing_bytes(obj, &bytes, err) != 0) {
        mx_buf_free(&bytes);
        return -1;
    }

    mx_ed25519_sign(sig, bytes.data, bytes.len, k);
    mx_buf_free(&bytes);

    mx_b64_encode(b64, sig, sizeof(sig), MX_B64_STD);

    s = json_string(b64);
    if (s == NULL) {
        goto nomem;
    }

    if (mine == NULL) {
        mine = json_object();
        if (mine == NULL) {
            json_decref(s);
            goto nomem;
        }

        if (json_object_set_new(mine, k->key_id, s) != 0) {
            json_decref(mine);
            goto nomem;
        }

        if (sigs == NULL) {
            sigs = json_object();
            if (sigs == NULL) {
                json_decref(mine);
                goto nomem;
            }

            rc = json_object_set_new(sigs, entity, mine);

            if (rc == 0) {
                rc = json_object_set_new(obj, "signatures", sigs);

            } else {
                json_decref(sigs);
            }

        } else {
            rc = json_object_set_new(sigs, entity, mine);
        }

    } else {
        rc = json_object_set_new(mine, k->key_id, s);
    }

    if (rc != 0) {
        /* also an invalid UTF-8 entity name */
        mx_err_set(err, "cannot add signature for \"%.64s\"", entity);
        return -1;
    }

    return 0;

nomem:

    mx_err_set(err, "out of memory");
    return -1;
}


int
mx_json_verify(const json_t *obj, const char *entity, const char *key_id,
    const uint8_t pk[MX_ED25519_PK_LEN], mx_err_t *err)
{
    json_t      *sigs, *mine, *s;
    uint8_t      sig[MX_ED25519_SIG_LEN];
    mx_buf_t     bytes = MX_BUF_INIT;

    if (!json_is_object(obj)) {
        mx_err_set(err, "signed JSON must be an object");
        return -1;
    }

    sigs = json_object_get(obj, "signatures");
    mine = json_is_object(sigs) ? json_object_get(sigs, entity) : NULL;

    if (!json_is_object(mine)) {
        mx_err_set(err, "no signatures for \"%.64s\"", entity);
        return -1;
    }

    s = json_object_get(mine, key_id);

    if (s == NULL) {
        mx_err_set(err, "no signature by \"%.64s\" with key \"%.64s\"",
                   entity, key_id);
        return -1;
    }

    if (mx_json_signature_decode(s, sig, err) != 0) {
        return -1;
    }

    if (mx_json_signing_bytes(obj, &bytes, err) != 0) {
        mx_buf_free(&bytes);
        return -1;
    }

    if (mx_ed25519_verify(sig, bytes.data, bytes.len, pk) != 0) {
        mx_buf_free(&bytes);
        mx_err_set(err, "bad signature by \"%.64s\" with key \"%.64s\"",
                   entity, key_id);
        return -1;
    }

    mx_buf_free(&bytes);

    return 0;
}


int
mx_json_signature_decode(const json_t *s, uint8_t sig[MX_ED25519_SIG_LEN],
    mx_err_t *err)
{
    long         n;
    size_t       len;
    uint8_t      buf[MX_ED25519_SIG_LEN + 3];
    const char  *b64;

    if (!json_is_string(s)) {
        mx_err_set(err, "signature is not a string");
        return -1;
    }

    b64 = json_string_value(s);
    len = json_string_length(s);

    /* 64 bytes are 86 characters, 88 when padded */
    if (len > MX_ED25519_SIG_B64_LEN + 2) {
        mx_err_set(err, "signature has wrong length");
        return -1;
    }

    n = mx_b64_decode(buf, sizeof(buf), b64, len, MX_B64_STD);

    if (n < 0) {
        mx_err_set(err, "signature is not base64");
        return -1;
    }

    if (n != MX_ED25519_SIG_LEN) {
        mx_err_set(err, "signature has wrong length");
        return -1;
    }

    memcpy(sig, buf, MX_ED25519_SIG_LEN);

    return 0;
}
