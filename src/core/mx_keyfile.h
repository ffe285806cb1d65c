/*
 * Copyright (C) nginx-matrix-join authors.
 * Synapse-format signing key files: one "ed25519 <version> <b64 seed>"
 * per line; the first key signs.
 */

#ifndef MX_KEYFILE_H
#define MX_KEYFILE_H

#include "mx_crypto.h"

#define MX_KEYFILE_MAX_KEYS  16

/*
 * Parses text[0..len). Blank lines (only whitespace) are skipped; every
 * other line must be exactly three whitespace-separated fields: "ed25519",
 * a version [a-zA-Z0-9_]+, and the unpadded (or padded) std base64 of a
 * 32-byte seed. On error returns -1 with err like
 * "line 2: seed is not valid base64"; an empty file is an error
 * ("no signing key"). On success *n >= 1 keys are stored in keys[0..cap).
 */
int mx_keyfile_parse(const char *text, size_t len, mx_signing_key_t *keys,
    size_t cap, size_t *n, mx_err_t *err);

/* Formats k as a key file line "ed25519 <version> <seed b64>\n" into buf.
 * Returns its length or -1 when cap is too small. */
long mx_keyfile_format(const mx_signing_key_t *k, char *buf, size_t cap);

#endif /* MX_KEYFILE_H */
