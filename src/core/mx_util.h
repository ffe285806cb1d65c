/*
 * Copyright (C) nginx-matrix-join authors.
 * Small helpers shared by the core: a growable byte buffer and an error
 * record that carries a human-readable reason out of every core function.
 */

#ifndef MX_UTIL_H
#define MX_UTIL_H

#include <stddef.h>
#include <stdint.h>


/*
 * Every fallible core function returns 0 on success and -1 on failure and,
 * when err is not NULL, writes a short lower-case reason into err->text
 * ("integer out of range at content.depth").  err may be NULL.
 */
typedef struct {
    char        text[256];
} mx_err_t;

void mx_err_set(mx_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


/* A malloc'ed, growable byte buffer; data is always NUL-terminated. */
typedef struct {
    char       *data;
    size_t      len;
    size_t      cap;
} mx_buf_t;

#define MX_BUF_INIT  { NULL, 0, 0 }

int mx_buf_reserve(mx_buf_t *b, size_t extra);
int mx_buf_append(mx_buf_t *b, const void *p, size_t n);
int mx_buf_append_str(mx_buf_t *b, const char *s);
int mx_buf_append_byte(mx_buf_t *b, char ch);
void mx_buf_reset(mx_buf_t *b);     /* len = 0, memory kept */
void mx_buf_free(mx_buf_t *b);      /* frees and re-initialises */

#endif /* MX_UTIL_H */
