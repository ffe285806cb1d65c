/*
 * Copyright (C) nginx-matrix-join authors.
 * What the libFuzzer targets in t/fuzz share: the spec's signing key
 * (reference §8), a room version picked by one input byte, and check(),
 * an assert that stays on whatever NDEBUG says.
 */

#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mx_crypto.h"
#include "mx_room_version.h"


#define check(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)


static const uint8_t  fuzz_seed[32] = {
    0x60, 0x90, 0xc1, 0x03, 0xd5, 0xe7, 0xaf, 0x6b,
    0x15, 0xa9, 0x70, 0xfd, 0x56, 0x3e, 0xd7, 0x55,
    0x49, 0xe6, 0x15, 0x97, 0x19, 0xae, 0x5c, 0x3c,
    0x31, 0xde, 0xe4, 0x31, 0x6f, 0xb7, 0x5c, 0x0d
};

static mx_signing_key_t  fuzz_key;


/* Once per process: libsodium and the key (spec §8, "ed25519:1"). */
static void
fuzz_init(void)
{
    static int  done;
    mx_err_t    err;

    if (done) {
        return;
    }

    check(mx_crypto_init() == 0);
    check(mx_signing_key_from_seed(&fuzz_key, "ed25519:1", fuzz_seed, &err)
          == 0);
    done = 1;
}


/* The room version byte b selects: rows in order, modulo their number. */
static const mx_room_version_t *
fuzz_room_version(uint8_t b)
{
    size_t                    n;
    const mx_room_version_t  *rows;

    rows = mx_room_versions(&n);

    return &rows[b % n];
}


/* A key lookup that knows every server's "ed25519:1" as the spec key. */
static int
fuzz_lookup(void *data, const char *server, const char *key_id,
    uint8_t pk[MX_ED25519_PK_LEN], int64_t *valid_until_ts)
{
    if (strcmp(key_id, "ed25519:1") != 0) {
        return -1;
    }

    memcpy(pk, fuzz_key.pk, MX_ED25519_PK_LEN);
    *valid_until_ts = INT64_MAX;

    return 0;
}

#endif /* FUZZ_COMMON_H */
