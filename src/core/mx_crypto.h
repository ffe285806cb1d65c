/*
 * Copyright (C) nginx-matrix-join authors.
 * SHA-256 and ed25519 (libsodium), signing keys, and the Matrix
 * "Signing JSON" algorithm.
 */

#ifndef MX_CRYPTO_H
#define MX_CRYPTO_H

#include <jansson.h>
#include "mx_util.h"

#define MX_SHA256_LEN       32
#define MX_ED25519_SEED_LEN 32
#define MX_ED25519_PK_LEN   32
#define MX_ED25519_SK_LEN   64
#define MX_ED25519_SIG_LEN  64
#define MX_ED25519_SIG_B64_LEN  86      /* unpadded base64 of 64 bytes */
#define MX_ED25519_PK_B64_LEN   43
#define MX_KEY_ID_MAX       128         /* "ed25519:" + version, NUL incl. */

/* A signing key: "ed25519:<version>" plus its expanded keypair. */
typedef struct {
    char        key_id[MX_KEY_ID_MAX];
    uint8_t     pk[MX_ED25519_PK_LEN];
    uint8_t     sk[MX_ED25519_SK_LEN];  /* libsodium form: seed || pk */
} mx_signing_key_t;

/* sodium_init(); safe to call many times. 0 or -1. */
int mx_crypto_init(void);

void mx_sha256(uint8_t out[MX_SHA256_LEN], const void *in, size_t n);

/*
 * Expands seed into k. key_id is the full "ed25519:<version>"; the version
 * must match [a-zA-Z0-9_]+. 0 or -1.
 */
int mx_signing_key_from_seed(mx_signing_key_t *k, const char *key_id,
    const uint8_t seed[MX_ED25519_SEED_LEN], mx_err_t *err);

/* Zeroes k with sodium_memzero. */
void mx_signing_key_wipe(mx_signing_key_t *k);

/* True when id is "ed25519:" followed by [a-zA-Z0-9_]+ (any algorithm
 * name for mx_key_id_valid: [a-z0-9_]+ ":" [a-zA-Z0-9_]+). */
int mx_key_id_valid(const char *id, size_t len);

void mx_ed25519_sign(uint8_t sig[MX_ED25519_SIG_LEN], const void *m,
    size_t n, const mx_signing_key_t *k);

/* 0 when sig is a valid signature of m by pk, -1 otherwise. */
int mx_ed25519_verify(const uint8_t sig[MX_ED25519_SIG_LEN], const void *m,
    size_t n, const uint8_t pk[MX_ED25519_PK_LEN]);

/*
 * Signing JSON (spec appendix): signs obj without "signatures"/"unsigned"
 * in canonical form and adds signatures[entity][k->key_id], keeping other
 * signatures; obj is modified in place. 0 or -1.
 */
int mx_json_sign(json_t *obj, const char *entity, const mx_signing_key_t *k,
    mx_err_t *err);

/*
 * Checks signatures[entity][key_id] on obj against pk. Returns 0 when it
 * verifies; -1 with err saying which step failed (no signatures for the
 * entity, no such key id, not base64, wrong length, bad signature).
 */
int mx_json_verify(const json_t *obj, const char *entity, const char *key_id,
    const uint8_t pk[MX_ED25519_PK_LEN], mx_err_t *err);

/*
 * A signature value of signed JSON: a string, the std base64 (padded or
 * not) of 64 bytes, into sig. What mx_json_verify checks before it
 * verifies, for a caller that makes the signing bytes once and checks
 * several signatures over them. 0, or -1 with err ("signature is not
 * base64", "signature has wrong length", "signature is not a string").
 */
int mx_json_signature_decode(const json_t *s, uint8_t sig[MX_ED25519_SIG_LEN],
    mx_err_t *err);

/*
 * Canonical bytes that get signed: obj without "signatures" and "unsigned".
 * Appended to out. 0 or -1.
 */
int mx_json_signing_bytes(const json_t *obj, mx_buf_t *out, mx_err_t *err);

#endif /* MX_CRYPTO_H */
