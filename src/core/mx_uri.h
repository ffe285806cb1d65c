/*
 * Copyright (C) nginx-matrix-join authors.
 * The parts of a request URI the handlers read, decoded the way Synapse
 * reads them, so the edge and the homeserver agree on what was asked:
 *
 *   - path parameters: the raw path split at '/', then each part
 *     percent-decoded as Python's urllib.parse.unquote does ('+' stays,
 *     a '%' not followed by two hex digits stays as it is);
 *   - query arguments: Twisted's parse_qs (what Synapse's request.args
 *     is): items split at '&' and at ';', an item without '=' ignored,
 *     '+' in name and value becomes ' ', then both are percent-decoded.
 *
 * Nothing here allocates; decoding never lengthens, so a destination of
 * the source's length is always enough.
 */

#ifndef MX_URI_H
#define MX_URI_H

#include <stddef.h>


typedef struct {
    char        *data;
    size_t       len;
} mx_uri_part_t;


/*
 * Decodes src[0..len) into dst (room for len bytes; dst == src is
 * allowed): "%XX" with two hex digits of either case becomes that byte,
 * any other '%' is copied; with plus, '+' becomes ' ' (query strings).
 * Returns the decoded length. Does not NUL-terminate.
 */
size_t mx_uri_unescape(char *dst, const char *src, size_t len, int plus);

/* True when src[0..len), decoded as mx_uri_unescape does, equals s. */
int mx_uri_unescaped_eq(const char *src, size_t len, const char *s,
    size_t slen, int plus);


#define MX_URI_OK       0
#define MX_URI_SHAPE    1       /* not exactly "{a}/{b}" */
#define MX_URI_NUL      2       /* a parameter decodes to a NUL byte */

/*
 * The two path parameters of "{a}/{b}", path[0..len) being the raw path
 * after the route's fixed prefix and without the query: exactly one '/'
 * (an encoded "%2F" is part of a parameter, as in Synapse's routes), each
 * part decoded into buf (room for len + 2 bytes) and NUL-terminated;
 * seg[] points into buf. Returns MX_URI_OK, MX_URI_SHAPE or MX_URI_NUL.
 * An empty part is returned as such (the identifier checks refuse it).
 */
int mx_uri_path_params(const char *path, size_t len, char *buf,
    mx_uri_part_t seg[2]);

/*
 * The next query argument whose decoded name is name, from *pos (start
 * at 0) in query[0..len): its raw (undecoded) value in *val, *vlen;
 * returns 1, or 0 when there is none left. Decode the value with
 * mx_uri_unescape(..., 1).
 */
int mx_uri_arg_next(const char *query, size_t len, size_t *pos,
    const char *name, const char **val, size_t *vlen);

/*
 * make_join's ver (repeatable): 1 if one decoded value equals version,
 * or, with no ver argument at all, if version is "1" (the spec's
 * default); else 0.
 */
int mx_uri_ver_listed(const char *query, size_t len, const char *version);

/*
 * A boolean argument as Synapse's parse_boolean reads it: the first
 * value decoded is "true" (1) or "false" (0); absent: dflt; anything
 * else: -1 (a 400).
 */
int mx_uri_arg_bool(const char *query, size_t len, const char *name,
    int dflt);

#endif /* MX_URI_H */
