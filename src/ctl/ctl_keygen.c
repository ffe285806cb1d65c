/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl keygen SERVER_NAME: a new ed25519 signing key in the
 * format Synapse reads ("ed25519 <version> <unpadded b64 seed>").
 */

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"
#include "mx_base64.h"
#include "mx_crypto.h"
#include "mx_id.h"
#include "mx_keyfile.h"


int
mxj_cmd_keygen(int argc, char **argv)
{
    static const char  alphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    char              key_id[MX_KEY_ID_MAX];
    char              line[256];
    char              pkb64[MX_ED25519_PK_B64_LEN + 1];
    long              n;
    size_t            i;
    uint8_t           seed[MX_ED25519_SEED_LEN];
    mx_err_t          err;
    mx_signing_key_t  key;

    /* "-h" and "--help" never get here (ctl_main.c): no key for them */

    if (argc == 2 && argv[1][0] == '-') {
        fprintf(stderr, "matrix-join-ctl: keygen: unknown option \"%s\"\n",
                argv[1]);
        argc = 0;
    }

    if (argc != 2) {
        mxj_usage(stderr, "keygen");
        return MXJ_EXIT_USAGE;
    }

    if (!mx_server_name_valid(argv[1], strlen(argv[1]))) {
        fprintf(stderr, "matrix-join-ctl: invalid server name \"%s\"\n",
                argv[1]);
        return MXJ_EXIT_USAGE;
    }

    if (mx_crypto_init() != 0) {
        fprintf(stderr, "matrix-join-ctl: sodium_init() failed\n");
        return MXJ_EXIT_FAIL;
    }

    /* Synapse names its keys "a_" and four random characters */

    memcpy(key_id, "ed25519:a_", sizeof("ed25519:a_"));

    for (i = 0; i < 4; i++) {
        key_id[sizeof("ed25519:a_") - 1 + i] =
            alphabet[randombytes_uniform(sizeof(alphabet) - 1)];
    }

    key_id[sizeof("ed25519:a_") - 1 + 4] = '\0';

    randombytes_buf(seed, sizeof(seed));

    if (mx_signing_key_from_seed(&key, key_id, seed, &err) != 0) {
        sodium_memzero(seed, sizeof(seed));
        fprintf(stderr, "matrix-join-ctl: %s\n", err.text);
        return MXJ_EXIT_FAIL;
    }

    sodium_memzero(seed, sizeof(seed));

    n = mx_keyfile_format(&key, line, sizeof(line));
    mx_b64_encode(pkb64, key.pk, MX_ED25519_PK_LEN, MX_B64_STD);
    mx_signing_key_wipe(&key);

    if (n < 0) {
        fprintf(stderr, "matrix-join-ctl: cannot format the key\n");
        return MXJ_EXIT_FAIL;
    }

    fwrite(line, 1, (size_t) n, stdout);
    sodium_memzero(line, sizeof(line));

    if (fflush(stdout) != 0) {
        perror("matrix-join-ctl: stdout");
        return MXJ_EXIT_FAIL;
    }

    fprintf(stderr, "server %s, key %s, public key %s\n", argv[1], key_id,
            pkb64);

    return MXJ_EXIT_OK;
}
