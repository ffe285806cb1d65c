/*
 * Copyright (C) nginx-matrix-join authors.
 * Matrix canonical JSON over jansson values.
 */

#ifndef MX_JSON_H
#define MX_JSON_H

#include <jansson.h>
#include "mx_util.h"

/* +-(2^53 - 1): the only integers canonical JSON allows (strict, v6+). */
#define MX_JSON_INT_MAX   9007199254740991LL
#define MX_JSON_INT_MIN  (-9007199254740991LL)

/*
 * Parse flags.
 * MX_JSON_STRICT: room versions 6+. Rejects floats (any number with a
 * fraction or exponent), integers outside +-(2^53-1) and duplicate object
 * keys. NaN/Infinity are never accepted (not JSON).
 * Without it: duplicate keys keep the last value (as Python's json does),
 * floats and large integers that fit int64 are kept.
 * Both modes accept "\u0000" inside strings.
 */
#define MX_JSON_STRICT  0x01

/*
 * Parses exactly one JSON value from buf[0..len). Returns a new reference or
 * NULL with err set ("float not allowed", "duplicate key \"a\"", "invalid
 * JSON at line 1 column 5: ...").
 */
json_t *mx_json_parse(const char *buf, size_t len, unsigned flags,
    mx_err_t *err);

/*
 * Checks an already-built value against the strict rules (no reals,
 * integers in range). Returns 0 or -1 with err naming the offending path.
 */
int mx_json_check_strict(const json_t *v, mx_err_t *err);

/*
 * Appends the Matrix canonical JSON encoding of v to out: keys sorted by
 * Unicode code point, compact, raw UTF-8, only '"', '\\' and U+0000-U+001F
 * escaped (short escapes \b \t \n \f \r, else lower-case \u00xx).
 * Fails (-1) on a real number: canonical JSON has no floats.
 * Strings may contain NUL (json_string_length is honoured).
 */
int mx_json_canonical(const json_t *v, mx_buf_t *out, mx_err_t *err);

/*
 * Appends s[0..n) as a canonical JSON string, quotes included (s must be
 * valid UTF-8). For callers that format a known object shape directly.
 */
int mx_json_canonical_string(const char *s, size_t n, mx_buf_t *out);

/* Same, into a fresh malloc'ed NUL-terminated string (free()); NULL on error. */
char *mx_json_canonical_str(const json_t *v, size_t *len, mx_err_t *err);

#endif /* MX_JSON_H */
