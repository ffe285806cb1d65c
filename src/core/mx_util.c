/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_util.h"


void
mx_err_set(mx_err_t *err, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
}


int
mx_buf_reserve(mx_buf_t *b, size_t extra)
{
    char    *p;
    size_t   cap;

    if (b->cap - b->len > extra) {
        return 0;
    }

    if (extra > (size_t) -1 / 2 - b->len) {
        return -1;
    }

    cap = b->cap ? b->cap : 256;

    while (cap - b->len <= extra) {
        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        return -1;
    }

    b->data = p;
    b->cap = cap;
    return 0;
}


int
mx_buf_append(mx_buf_t *b, const void *p, size_t n)
{
    if (mx_buf_reserve(b, n) != 0) {
        return -1;
    }

    if (n) {
        memcpy(b->data + b->len, p, n);
    }

    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}


int
mx_buf_append_str(mx_buf_t *b, const char *s)
{
    return mx_buf_append(b, s, strlen(s));
}


int
mx_buf_append_byte(mx_buf_t *b, char ch)
{
    return mx_buf_append(b, &ch, 1);
}


void
mx_buf_reset(mx_buf_t *b)
{
    b->len = 0;

    if (b->data) {
        b->data[0] = '\0';
    }
}


void
mx_buf_free(mx_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
