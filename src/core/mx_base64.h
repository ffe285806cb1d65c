/*
 * Copyright (C) nginx-matrix-join authors.
 * Unpadded base64 (RFC 4648), standard and URL-safe alphabets.
 */

#ifndef MX_BASE64_H
#define MX_BASE64_H

#include <stddef.h>
#include <stdint.h>

#define MX_B64_STD  0
#define MX_B64_URL  1

/* Length of the unpadded encoding of n bytes (without the NUL). */
#define mx_b64_encoded_len(n)  (((n) / 3) * 4 + (((n) % 3) ? ((n) % 3) + 1 : 0))

/* Upper bound of decoded bytes for an input of n characters. */
#define mx_b64_decoded_max(n)  (((n) / 4) * 3 + 3)

/*
 * Writes the unpadded encoding of src[0..n) to dst (which must hold
 * mx_b64_encoded_len(n) + 1 bytes), NUL-terminates it, returns its length.
 */
size_t mx_b64_encode(char *dst, const uint8_t *src, size_t n, int alphabet);

/*
 * Decodes src[0..n) in the given alphabet; trailing '=' padding is accepted
 * but not required (at most two '=', only at the end). Rejects characters
 * outside the alphabet and a length of 4k+1. Non-zero trailing bits are
 * ignored, as Python's decoder (and so Synapse) does. Returns the decoded
 * length, or -1 on invalid input or when dst (dstcap bytes) is too small.
 */
long mx_b64_decode(uint8_t *dst, size_t dstcap, const char *src, size_t n,
    int alphabet);

#endif /* MX_BASE64_H */
