/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <string.h>

#include "mx_scan.h"


static int mx_scan_string(const char *text, size_t len, size_t *pos);


size_t
mx_scan_ws(const char *text, size_t len, size_t pos)
{
    while (pos < len
           && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n'
               || text[pos] == '\r'))
    {
        pos++;
    }

    return pos;
}


/* *pos is on the opening quote; leaves it after the closing one. */

static int
mx_scan_string(const char *text, size_t len, size_t *pos)
{
    size_t  p;

    for (p = *pos + 1; p < len; p++) {
        if (text[p] == '\\') {
            p++;
            continue;
        }

        if (text[p] == '"') {
            *pos = p + 1;
            return 0;
        }
    }

    *pos = len;

    return -1;
}


int
mx_scan_value(const char *text, size_t len, size_t *pos, const char **why)
{
    size_t  p, b, depth;

    p = *pos;
    b = p;

    if (p >= len) {
        *why = "unexpected end of input";
        return -1;
    }

    switch (text[p]) {

    case '"':
        if (mx_scan_string(text, len, pos) != 0) {
            *why = "unterminated string";
            return -1;
        }

        return 0;

    case '{':
    case '[':
        depth = 0;

        while (p < len) {
            if (text[p] == '"') {
                if (mx_scan_string(text, len, &p) != 0) {
                    *pos = p;
                    *why = "unterminated string";
                    return -1;
                }

                continue;
            }

            if (text[p] == '{' || text[p] == '[') {
                depth++;

            } else if (text[p] == '}' || text[p] == ']') {
                if (--depth == 0) {
                    *pos = p + 1;
                    return 0;
                }
            }

            p++;
        }

        *pos = p;
        *why = "unexpected end of input";

        return -1;

    default:
        while (p < len && strchr(" \t\r\n,:[]{}\"", text[p]) == NULL) {
            p++;
        }

        *pos = p;

        if (p == b) {
            *why = "unexpected character";
            return -1;
        }

        return 0;
    }
}


int
mx_scan_member(const char *text, size_t len, const char *name,
    const char **val, size_t *val_len)
{
    size_t       pos, start, klen, nlen, v;
    const char  *why;

    nlen = strlen(name);
    pos = mx_scan_ws(text, len, 0);

    if (pos >= len || text[pos] != '{') {
        return -1;
    }

    pos++;

    for ( ;; ) {
        pos = mx_scan_ws(text, len, pos);

        if (pos >= len || text[pos] != '"') {
            return -1;
        }

        start = pos + 1;

        if (mx_scan_string(text, len, &pos) != 0) {
            return -1;
        }

        klen = pos - 1 - start;
        pos = mx_scan_ws(text, len, pos);

        if (pos >= len || text[pos] != ':') {
            return -1;
        }

        pos = mx_scan_ws(text, len, pos + 1);
        v = pos;

        if (mx_scan_value(text, len, &pos, &why) != 0) {
            return -1;
        }

        if (klen == nlen && memcmp(text + start, name, nlen) == 0) {
            *val = text + v;
            *val_len = pos - v;
            return 0;
        }

        pos = mx_scan_ws(text, len, pos);

        if (pos < len && text[pos] == ',') {
            pos++;
            continue;
        }

        return -1;
    }
}


int
mx_scan_next(const char *text, size_t len, size_t *pos, const char **el,
    size_t *el_len)
{
    size_t       p, start;
    const char  *why;

    p = *pos;

    if (p == 0) {
        p = mx_scan_ws(text, len, p);

        if (p >= len || text[p] != '[') {
            return -1;
        }

        p = mx_scan_ws(text, len, p + 1);

        if (p < len && text[p] == ']') {
            *pos = len;
            return 0;
        }

    } else {
        if (p >= len) {
            return 0;
        }

        p = mx_scan_ws(text, len, p);

        if (p < len && text[p] == ']') {
            *pos = len;
            return 0;
        }

        if (p >= len || text[p] != ',') {
            return -1;
        }

        p = mx_scan_ws(text, len, p + 1);
    }

    start = p;

    if (mx_scan_value(text, len, &p, &why) != 0) {
        return -1;
    }

    *el = text + start;
    *el_len = p - start;
    *pos = p;

    return 1;
}
