/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "mx_base64.h"
#include "mx_keyfile.h"


#define MX_KEYFILE_ALG       "ed25519"
#define MX_KEYFILE_ALG_LEN   (sizeof(MX_KEYFILE_ALG) - 1)
#define MX_KEYFILE_FIELDS    3

/* a padded 32-byte seed is 44 characters; anything far longer is wrong */
#define MX_KEYFILE_SEED_B64_MAX  64


typedef struct {
    const char  *p;
    size_t       len;
} mx_keyfile_field_t;


static int mx_keyfile_is_space(char ch);
static int mx_keyfile_line(const char *p, size_t len, size_t line,
    mx_signing_key_t *k, mx_err_t *err);


int
mx_keyfile_parse(const char *text, size_t len, mx_signing_key_t *keys,
    size_t cap, size_t *n, mx_err_t *err)
{
    size_t       i, line, count;
    const char  *p, *end, *eol;

    count = 0;
    line = 0;
    p = text;
    end = text + len;

    while (p < end) {
        line++;

        eol = memchr(p, '\n', end - p);
        if (eol == NULL) {
            eol = end;
        }

        for (i = 0; p + i < eol && mx_keyfile_is_space(p[i]); i++) {
            /* void */
        }

        if (p + i == eol) {
            p = eol + 1;
            continue;               /* blank line, or a CR alone */
        }

        if (count == cap) {
            mx_err_set(err, "line %zu: more than %zu signing keys",
                       line, cap);
            goto failed;
        }

        if (mx_keyfile_line(p, eol - p, line, &keys[count], err) != 0) {
            goto failed;
        }

        for (i = 0; i < count; i++) {
            if (strcmp(keys[i].key_id, keys[count].key_id) == 0) {
                mx_err_set(err, "line %zu: duplicate key \"%s\"",
                           line, keys[count].key_id);
                count++;
                goto failed;
            }
        }

        count++;
        p = eol + 1;
    }

    if (count == 0) {
        mx_err_set(err, "no signing key");
        return -1;
    }

    *n = count;

    return 0;

failed:

    for (i = 0; i < count; i++) {
        mx_signing_key_wipe(&keys[i]);
    }

    return -1;
}


long
mx_keyfile_format(const mx_signing_key_t *k, char *buf, size_t cap)
{
    int   len;
    char  seed[mx_b64_encoded_len(MX_ED25519_SEED_LEN) + 1];

    if (strncmp(k->key_id, MX_KEYFILE_ALG ":", MX_KEYFILE_ALG_LEN + 1) != 0) {
        return -1;
    }

    /* libsodium keeps the seed as the first half of the secret key */
    mx_b64_encode(seed, k->sk, MX_ED25519_SEED_LEN, MX_B64_STD);

    len = snprintf(buf, cap, "%s %s %s\n", MX_KEYFILE_ALG,
                   k->key_id + MX_KEYFILE_ALG_LEN + 1, seed);

    sodium_memzero(seed, sizeof(seed));

    if (len < 0 || (size_t) len >= cap) {
        if (cap) {
            sodium_memzero(buf, cap);
        }

        return -1;
    }

    return len;
}


/* One non-blank line: "ed25519 <version> <seed b64>". */

static int
mx_keyfile_line(const char *p, size_t len, size_t line, mx_signing_key_t *k,
    mx_err_t *err)
{
    int                 rc;
    long                n;
    char                key_id[MX_KEY_ID_MAX];
    size_t              i, nf;
    uint8_t             seed[mx_b64_decoded_max(MX_KEYFILE_SEED_B64_MAX)];
    mx_keyfile_field_t  f[MX_KEYFILE_FIELDS];

    nf = 0;
    i = 0;

    for ( ;; ) {
        while (i < len && mx_keyfile_is_space(p[i])) {
            i++;
        }

        if (i == len) {
            break;
        }

        if (nf == MX_KEYFILE_FIELDS) {
            mx_err_set(err, "line %zu: too many fields, expected "
                       "\"ed25519 <version> <seed>\"", line);
            return -1;
        }

        f[nf].p = p + i;

        while (i < len && !mx_keyfile_is_space(p[i])) {
            i++;
        }

        f[nf].len = p + i - f[nf].p;
        nf++;
    }

    if (nf < MX_KEYFILE_FIELDS) {
        mx_err_set(err, "line %zu: too few fields, expected "
                   "\"ed25519 <version> <seed>\"", line);
        return -1;
    }

    if (f[0].len != MX_KEYFILE_ALG_LEN
        || memcmp(f[0].p, MX_KEYFILE_ALG, MX_KEYFILE_ALG_LEN) != 0)
    {
        mx_err_set(err, "line %zu: unsupported key algorithm \"%.*s\"",
                   line, (int) (f[0].len > 32 ? 32 : f[0].len), f[0].p);
        return -1;
    }

    if (f[1].len > MX_KEY_ID_MAX - MX_KEYFILE_ALG_LEN - 2) {
        mx_err_set(err, "line %zu: key version is too long", line);
        return -1;
    }

    memcpy(key_id, MX_KEYFILE_ALG ":", MX_KEYFILE_ALG_LEN + 1);
    memcpy(key_id + MX_KEYFILE_ALG_LEN + 1, f[1].p, f[1].len);
    key_id[MX_KEYFILE_ALG_LEN + 1 + f[1].len] = '\0';

    if (!mx_key_id_valid(key_id, MX_KEYFILE_ALG_LEN + 1 + f[1].len)) {
        mx_err_set(err, "line %zu: invalid key version \"%.*s\", "
                   "expected [a-zA-Z0-9_]", line, (int) f[1].len, f[1].p);
        return -1;
    }

    if (f[2].len > MX_KEYFILE_SEED_B64_MAX) {
        mx_err_set(err, "line %zu: seed is too long for a 32-byte key",
                   line);
        return -1;
    }

    n = mx_b64_decode(seed, sizeof(seed), f[2].p, f[2].len, MX_B64_STD);

    if (n < 0) {
        sodium_memzero(seed, sizeof(seed));
        mx_err_set(err, "line %zu: seed is not valid base64", line);
        return -1;
    }

    if (n != MX_ED25519_SEED_LEN) {
        sodium_memzero(seed, sizeof(seed));
        mx_err_set(err, "line %zu: seed is %ld bytes, expected %d",
                   line, n, MX_ED25519_SEED_LEN);
        return -1;
    }

    rc = mx_signing_key_from_seed(k, key_id, seed, err);

    sodium_memzero(seed, sizeof(seed));

    if (rc != 0) {
        /* the checks above should make this unreachable */
        mx_err_set(err, "line %zu: cannot use key \"%s\"", line, key_id);
        return -1;
    }

    return 0;
}


static int
mx_keyfile_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}
