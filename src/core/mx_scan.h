/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Extents of JSON values in big texts, without parsing them: a snapshot
 * (mx_snapshot.c) or a homeserver's /state answer (matrix-join-ctl sync)
 * is cut into its members and elements here, and each is parsed alone by
 * jansson, which checks it. Only strings and brackets are followed.
 */

#ifndef MX_SCAN_H
#define MX_SCAN_H

#include <stddef.h>


/* The position after the white space at pos. */
size_t mx_scan_ws(const char *text, size_t len, size_t pos);

/*
 * Skips the value at *pos: a string, an array or object (brackets
 * balanced, strings followed), or a scalar (up to white space or one of
 * ,:[]{}"). 0 with *pos after it, or -1 with *pos where the scan stopped
 * and *why ("unterminated string", "unexpected end of input",
 * "unexpected character").
 */
int mx_scan_value(const char *text, size_t len, size_t *pos,
    const char **why);

/*
 * The value of the member name of the object that is the whole text (the
 * first one of that name). 0 with its extent, -1 when the text is not an
 * object or has no such member.
 */
int mx_scan_member(const char *text, size_t len, const char *name,
    const char **val, size_t *val_len);

/*
 * The elements of the array that is the whole text, one per call: *pos
 * starts at 0. 1 with the next element's extent, 0 at the end, -1 when
 * the text is not an array of values.
 */
int mx_scan_next(const char *text, size_t len, size_t *pos, const char **el,
    size_t *el_len);

#endif /* MX_SCAN_H */
