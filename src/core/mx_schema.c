/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <string.h>

#include "mx_schema.h"


int
mx_schema_prefix_valid(const char *prefix, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        unsigned char  c = (unsigned char) prefix[i];

        if (c == '{' || c == '}' || c <= ' ' || c == 0x7f) {
            return 0;
        }
    }

    return 1;
}


static size_t
mx_schema_put(char *out, size_t size, size_t at, const char *s, size_t n)
{
    if (at < size) {
        memcpy(out + at, s, at + n <= size ? n : size - at);
    }

    return at + n;
}


size_t
mx_schema_room_key(char *out, size_t size, const char *prefix,
    size_t prefix_len, const char *room, size_t room_len, const char *suffix)
{
    size_t  n;

    n = mx_schema_put(out, size, 0, prefix, prefix_len);
    n = mx_schema_put(out, size, n, "{", 1);
    n = mx_schema_put(out, size, n, room, room_len);
    n = mx_schema_put(out, size, n, "}:", 2);
    n = mx_schema_put(out, size, n, suffix, strlen(suffix));

    if (n < size) {
        out[n] = '\0';
    }

    return n;
}


size_t
mx_schema_global_key(char *out, size_t size, const char *prefix,
    size_t prefix_len, const char *name, const char *arg, size_t arg_len)
{
    size_t  n;

    n = mx_schema_put(out, size, 0, prefix, prefix_len);
    n = mx_schema_put(out, size, n, name, strlen(name));

    if (arg != NULL) {
        n = mx_schema_put(out, size, n, arg, arg_len);
    }

    if (n < size) {
        out[n] = '\0';
    }

    return n;
}
