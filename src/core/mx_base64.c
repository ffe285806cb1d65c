/*
 * Copyright (C) nginx-matrix-join authors.
 * Unpadded base64 (RFC 4648), standard and URL-safe alphabets.
 */

#include <stddef.h>
#include <stdint.h>

#include "mx_base64.h"


static const char  mx_b64_std_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char  mx_b64_url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


/* The 6-bit value of ch in the alphabet, or -1. */
static int
mx_b64_value(unsigned char ch, int alphabet)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }

    if (ch >= 'a' && ch <= 'z') {
        return ch - 'a' + 26;
    }

    if (ch >= '0' && ch <= '9') {
        return ch - '0' + 52;
    }

    if (alphabet == MX_B64_URL) {
        if (ch == '-') {
            return 62;
        }

        if (ch == '_') {
            return 63;
        }

    } else {
        if (ch == '+') {
            return 62;
        }

        if (ch == '/') {
            return 63;
        }
    }

    return -1;
}


size_t
mx_b64_encode(char *dst, const uint8_t *src, size_t n, int alphabet)
{
    char        *p;
    uint32_t     v;
    const char  *chars;

    chars = (alphabet == MX_B64_URL) ? mx_b64_url_chars : mx_b64_std_chars;
    p = dst;

    while (n >= 3) {
        v = ((uint32_t) src[0] << 16) | ((uint32_t) src[1] << 8) | src[2];

        *p++ = chars[(v >> 18) & 0x3f];
        *p++ = chars[(v >> 12) & 0x3f];
        *p++ = chars[(v >> 6) & 0x3f];
        *p++ = chars[v & 0x3f];

        src += 3;
        n -= 3;
    }

    if (n == 1) {
        v = (uint32_t) src[0] << 16;

        *p++ = chars[(v >> 18) & 0x3f];
        *p++ = chars[(v >> 12) & 0x3f];

    } else if (n == 2) {
        v = ((uint32_t) src[0] << 16) | ((uint32_t) src[1] << 8);

        *p++ = chars[(v >> 18) & 0x3f];
        *p++ = chars[(v >> 12) & 0x3f];
        *p++ = chars[(v >> 6) & 0x3f];
    }

    *p = '\0';

    return (size_t) (p - dst);
}


long
mx_b64_decode(uint8_t *dst, size_t dstcap, const char *src, size_t n,
    int alphabet)
{
    int       c;
    size_t    i, pad, out, need;
    uint32_t  v;

    /*
     * Strip at most two '=' of padding, only at the end. Like Python's
     * decoder (and so Synapse), incomplete padding ("Zg=") is tolerated.
     */
    pad = 0;

    while (n > 0 && src[n - 1] == '=') {
        if (++pad > 2) {
            return -1;
        }

        n--;
    }

    /* Padding only ever follows a partial quad. */
    if (pad && n % 4 == 0) {
        return -1;
    }

    if (n % 4 == 1) {
        return -1;
    }

    need = (n / 4) * 3 + ((n % 4) ? (n % 4) - 1 : 0);

    if (need > dstcap || need > (size_t) (((unsigned long) -1) >> 1)) {
        return -1;
    }

    out = 0;
    v = 0;

    for (i = 0; i < n; i++) {
        c = mx_b64_value((unsigned char) src[i], alphabet);
        if (c < 0) {
            return -1;
        }

        v = (v << 6) | (uint32_t) c;

        if (i % 4 == 3) {
            dst[out++] = (uint8_t) (v >> 16);
            dst[out++] = (uint8_t) (v >> 8);
            dst[out++] = (uint8_t) v;
            v = 0;
        }
    }

    /* A tail of 2 or 3 characters; unused low bits are ignored. */
    switch (n % 4) {

    case 2:
        dst[out++] = (uint8_t) (v >> 4);
        break;

    case 3:
        dst[out++] = (uint8_t) (v >> 10);
        dst[out++] = (uint8_t) (v >> 2);
        break;

    default:
        break;
    }

    return (long) out;
}
