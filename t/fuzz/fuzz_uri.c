/*
 * Copyright (C) nginx-matrix-join authors.
 * The request URI decoding every handler goes through (mx_uri.h): path
 * parameters ({roomId}/{userId}, {roomId}/{eventId}), query arguments
 * (make_join's ver, send_join's omit_members, the directory's
 * room_alias), against oracles written here in another way: a decoder
 * over isxdigit and strtoul, a splitter that cuts the whole query into a
 * list first. t/differential/test_uri.py holds the same rules
 * against Python's urllib and Twisted.
 *
 * Input: the first byte picks the argument name to look for (one of a
 * few, or the first item's own name); the rest is the raw text, used
 * both as a path and as a query.
 */

#include <ctype.h>

#include "fuzz_common.h"
#include "mx_uri.h"


/* The bytes in[0..len) decode to, into out; returns the length. */
static size_t
oracle_unescape(const unsigned char *in, size_t len, int plus,
    unsigned char *out)
{
    size_t  i, n;
    char    hex[3];

    n = 0;

    for (i = 0; i < len; i++) {
        if (in[i] == '%' && i + 2 < len
            && isxdigit(in[i + 1]) && isxdigit(in[i + 2]))
        {
            hex[0] = (char) in[i + 1];
            hex[1] = (char) in[i + 2];
            hex[2] = '\0';
            out[n++] = (unsigned char) strtoul(hex, NULL, 16);
            i += 2;
            continue;
        }

        out[n++] = (plus && in[i] == '+') ? ' ' : in[i];
    }

    return n;
}


typedef struct {
    const unsigned char  *name;
    size_t                nlen;
    const unsigned char  *val;
    size_t                vlen;
} oracle_item_t;


/* Twisted's parse_qs as a list: cut at every '&' and ';', keep items with
 * a '=' (name before the first one). Returns how many, at most max. */
static size_t
oracle_items(const unsigned char *q, size_t len, oracle_item_t *items,
    size_t max)
{
    size_t                n, start, i;
    const unsigned char  *eq;

    n = 0;
    start = 0;

    for (i = 0; i <= len; i++) {
        if (i < len && q[i] != '&' && q[i] != ';') {
            continue;
        }

        eq = memchr(q + start, '=', i - start);

        if (eq != NULL && n < max) {
            items[n].name = q + start;
            items[n].nlen = (size_t) (eq - (q + start));
            items[n].val = eq + 1;
            items[n].vlen = (size_t) (q + i - eq - 1);
            n++;
        }

        start = i + 1;
    }

    return n;
}


static int
oracle_name_is(const oracle_item_t *it, const char *name, unsigned char *tmp)
{
    size_t  n;

    n = oracle_unescape(it->name, it->nlen, 1, tmp);

    return n == strlen(name) && memcmp(tmp, name, n) == 0;
}


static int
oracle_val_is(const oracle_item_t *it, const char *s, unsigned char *tmp)
{
    size_t  n;

    n = oracle_unescape(it->val, it->vlen, 1, tmp);

    return n == strlen(s) && memcmp(tmp, s, n) == 0;
}


#define MAX_ITEMS  4096

static oracle_item_t  items[MAX_ITEMS];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                   rc, bool_rc, want_bool, ver, want_ver, seen;
    char                 *buf, *name, *dec;
    size_t                len, n, i, k, pos, vlen, nitems, slashes;
    const char           *s, *val;
    unsigned char        *tmp, *o1, *o2;
    mx_uri_part_t         seg[2];
    static const char    *names[] = { "ver", "omit_members", "room_alias",
                                      "" };

    if (size == 0) {
        return 0;
    }

    s = (const char *) data + 1;
    len = size - 1;

    /* exact-size heap buffers, so ASan sees any overrun */
    buf = malloc(len + 2);
    tmp = malloc(len + 1);
    o1 = malloc(len + 1);
    o2 = malloc(len + 1);
    dec = malloc(len + 1);
    check(buf && tmp && o1 && o2 && dec);

    /* unescape, both modes; and the comparison against its own output */

    for (k = 0; k < 2; k++) {
        n = mx_uri_unescape(dec, s, len, (int) k);
        check(n <= len);
        check(n == oracle_unescape((const unsigned char *) s, len, (int) k,
                                   tmp));
        check(memcmp(dec, tmp, n) == 0);
        check(mx_uri_unescaped_eq(s, len, dec, n, (int) k));
        if (n > 0) {
            check(!mx_uri_unescaped_eq(s, len, dec, n - 1, (int) k));
        }
    }

    /* path parameters */

    rc = mx_uri_path_params(s, len, buf, seg);

    for (slashes = 0, i = 0; i < len; i++) {
        slashes += (s[i] == '/');
    }

    if (slashes != 1) {
        check(rc == MX_URI_SHAPE);

    } else {
        const char  *slash = memchr(s, '/', len);
        size_t       alen = (size_t) (slash - s);
        size_t       n1, n2;

        n1 = oracle_unescape((const unsigned char *) s, alen, 0, o1);
        n2 = oracle_unescape((const unsigned char *) slash + 1,
                             len - alen - 1, 0, o2);

        if (memchr(o1, '\0', n1) || memchr(o2, '\0', n2)) {
            check(rc == MX_URI_NUL);

        } else {
            check(rc == MX_URI_OK);
            check(seg[0].len == n1 && memcmp(seg[0].data, o1, n1) == 0);
            check(seg[1].len == n2 && memcmp(seg[1].data, o2, n2) == 0);
            check(seg[0].data[n1] == '\0' && seg[1].data[n2] == '\0');
            check(seg[0].data >= buf && seg[1].data + n2 < buf + len + 2);
        }
    }

    /* query arguments: the name from the first byte */

    nitems = oracle_items((const unsigned char *) s, len, items, MAX_ITEMS);

    if (data[0] % 5 < 4) {
        name = strdup(names[data[0] % 5]);
    } else if (nitems > 0) {
        /* the first item's decoded name, if it holds no NUL */
        n = oracle_unescape(items[0].name, items[0].nlen, 1, tmp);
        name = memchr(tmp, '\0', n) ? strdup("ver") : strndup((char *) tmp, n);
    } else {
        name = strdup("x");
    }
    check(name != NULL);

    pos = 0;
    seen = 0;
    want_bool = 2;
    want_ver = -1;

    for (i = 0; i < nitems; i++) {
        if (!oracle_name_is(&items[i], name, tmp)) {
            continue;
        }

        check(mx_uri_arg_next(s, len, &pos, name, &val, &vlen) == 1);
        check(val == (const char *) items[i].val && vlen == items[i].vlen);

        if (!seen) {
            want_bool = oracle_val_is(&items[i], "true", tmp) ? 1
                        : oracle_val_is(&items[i], "false", tmp) ? 0 : -1;
        }

        if (want_ver != 1) {
            want_ver = oracle_val_is(&items[i], "10", tmp);
        }

        seen = 1;
    }

    if (nitems < MAX_ITEMS) {
        check(mx_uri_arg_next(s, len, &pos, name, &val, &vlen) == 0);

        bool_rc = mx_uri_arg_bool(s, len, name, 2);
        check(bool_rc == want_bool);

        if (strcmp(name, "ver") == 0) {
            ver = mx_uri_ver_listed(s, len, "10");
            check(ver == (seen ? want_ver : 0));
            if (!seen) {
                check(mx_uri_ver_listed(s, len, "1") == 1);
            }
        }
    }

    free(name);
    free(buf);
    free(tmp);
    free(o1);
    free(o2);
    free(dec);

    return 0;
}
