/*
 * Copyright (C) nginx-matrix-join authors.
 * Request URI decoding (see mx_uri.h for the rules and where they come
 * from).
 */

#include <string.h>

#include "mx_uri.h"


static int mx_uri_hex(unsigned char c);
static size_t mx_uri_decode_one(const char *src, size_t len, size_t i,
    int plus, unsigned char *out);


static int
mx_uri_hex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* The byte that src[i..] decodes to in *out; returns how many it took. */

static size_t
mx_uri_decode_one(const char *src, size_t len, size_t i, int plus,
    unsigned char *out)
{
    int  hi, lo;

    if (src[i] == '%' && len - i >= 3) {
        hi = mx_uri_hex((unsigned char) src[i + 1]);
        lo = mx_uri_hex((unsigned char) src[i + 2]);

        if (hi >= 0 && lo >= 0) {
            *out = (unsigned char) (hi << 4 | lo);
            return 3;
        }
    }

    *out = (plus && src[i] == '+') ? ' ' : (unsigned char) src[i];

    return 1;
}


size_t
mx_uri_unescape(char *dst, const char *src, size_t len, int plus)
{
    size_t          i, n;
    unsigned char   c;

    n = 0;

    for (i = 0; i < len; /* void */) {
        i += mx_uri_decode_one(src, len, i, plus, &c);
        dst[n++] = (char) c;
    }

    return n;
}


int
mx_uri_unescaped_eq(const char *src, size_t len, const char *s, size_t slen,
    int plus)
{
    size_t          i, n;
    unsigned char   c;

    n = 0;

    for (i = 0; i < len; /* void */) {
        i += mx_uri_decode_one(src, len, i, plus, &c);

        if (n == slen || (unsigned char) s[n] != c) {
            return 0;
        }

        n++;
    }

    return n == slen;
}


int
mx_uri_path_params(const char *path, size_t len, char *buf,
    mx_uri_part_t seg[2])
{
    int          rc;
    size_t       i, start, part;
    const char  *slash;

    slash = memchr(path, '/', len);

    if (slash == NULL
        || memchr(slash + 1, '/', len - (size_t) (slash - path) - 1) != NULL)
    {
        return MX_URI_SHAPE;
    }

    rc = MX_URI_OK;
    start = 0;

    for (i = 0; i < 2; i++) {
        part = (i == 0) ? (size_t) (slash - path)
                        : len - (size_t) (slash - path) - 1;

        seg[i].data = buf;
        seg[i].len = mx_uri_unescape(buf, path + start, part, 0);
        buf[seg[i].len] = '\0';

        if (memchr(seg[i].data, '\0', seg[i].len) != NULL) {
            rc = MX_URI_NUL;
        }

        buf += seg[i].len + 1;
        start += part + 1;
    }

    return rc;
}


int
mx_uri_arg_next(const char *query, size_t len, size_t *pos, const char *name,
    const char **val, size_t *vlen)
{
    size_t       i, end, eq, nlen;

    nlen = strlen(name);

    for (i = *pos; i < len; i = end + 1) {

        /* one item: up to the next '&' or ';' */

        for (end = i; end < len && query[end] != '&' && query[end] != ';';
             end++)
        {
            /* void */
        }

        for (eq = i; eq < end && query[eq] != '='; eq++) {
            /* void */
        }

        if (eq == end) {
            continue;               /* no '=': Twisted skips the item */
        }

        if (mx_uri_unescaped_eq(query + i, eq - i, name, nlen, 1)) {
            *val = query + eq + 1;
            *vlen = end - eq - 1;
            *pos = end + 1;
            return 1;
        }
    }

    *pos = len;

    return 0;
}


int
mx_uri_ver_listed(const char *query, size_t len, const char *version)
{
    int          seen;
    size_t       pos, vlen;
    const char  *val;

    seen = 0;
    pos = 0;

    while (mx_uri_arg_next(query, len, &pos, "ver", &val, &vlen)) {
        if (mx_uri_unescaped_eq(val, vlen, version, strlen(version), 1)) {
            return 1;
        }

        seen = 1;
    }

    return !seen && strcmp(version, "1") == 0;
}


int
mx_uri_arg_bool(const char *query, size_t len, const char *name, int dflt)
{
    size_t       pos, vlen;
    const char  *val;

    pos = 0;

    if (!mx_uri_arg_next(query, len, &pos, name, &val, &vlen)) {
        return dflt;
    }

    if (mx_uri_unescaped_eq(val, vlen, "true", 4, 1)) {
        return 1;
    }

    if (mx_uri_unescaped_eq(val, vlen, "false", 5, 1)) {
        return 0;
    }

    return -1;
}
