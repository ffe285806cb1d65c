/*
 * Copyright (C) nginx-matrix-join authors.
 * Matrix canonical JSON over jansson values.
 *
 * json_dumps() is close but not Matrix canonical JSON (upper-case \u001F,
 * reals printed), so the encoder below walks the values itself.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_json.h"


/*
 * Values from the parser are at most JSON_PARSER_MAX_DEPTH (2048) deep;
 * the limit here also stops a reference cycle built in code.
 */
#define MX_JSON_MAX_DEPTH  2048

#define MX_JSON_PATH_MAX   160


typedef struct {
    const char  *key;
    size_t       len;
    json_t      *value;
} mx_json_member_t;


/* The dotted path of the value being checked, for error messages. */
typedef struct {
    char         text[MX_JSON_PATH_MAX];
    size_t       len;
    unsigned     truncated;
} mx_json_path_t;


static int mx_json_canonical_value(const json_t *v, mx_buf_t *out,
    unsigned depth, mx_err_t *err);
static int mx_json_canonical_object(const json_t *v, mx_buf_t *out,
    unsigned depth, mx_err_t *err);
static int mx_json_member_cmp(const void *a, const void *b);
static int mx_json_check_value(const json_t *v, mx_json_path_t *path,
    unsigned depth, mx_err_t *err);
static void mx_json_path_push(mx_json_path_t *path, const char *seg,
    size_t n, int is_key);
static const char *mx_json_path_str(mx_json_path_t *path);


json_t *
mx_json_parse(const char *buf, size_t len, unsigned flags, mx_err_t *err)
{
    size_t        n;
    json_t       *v;
    const char   *p;
    json_error_t  e;

    v = json_loadb(buf, len,
                   JSON_ALLOW_NUL | JSON_DECODE_ANY
                   | ((flags & MX_JSON_STRICT) ? JSON_REJECT_DUPLICATES : 0),
                   &e);

    if (v == NULL) {
        /* jansson: "duplicate object key near '"a"'" */
        p = "duplicate object key near '";
        n = strlen(p);

        if (strncmp(e.text, p, n) == 0
            && strlen(e.text) > n + 1
            && e.text[strlen(e.text) - 1] == '\'')
        {
            mx_err_set(err, "duplicate key %.*s at line %d column %d",
                       (int) (strlen(e.text) - n - 1), e.text + n,
                       e.line, e.column);
            return NULL;
        }

        mx_err_set(err, "invalid JSON at line %d column %d: %s",
                   e.line, e.column, e.text);
        return NULL;
    }

    if ((flags & MX_JSON_STRICT) && mx_json_check_strict(v, err) != 0) {
        json_decref(v);
        return NULL;
    }

    return v;
}


int
mx_json_check_strict(const json_t *v, mx_err_t *err)
{
    mx_json_path_t  path;

    path.text[0] = '\0';
    path.len = 0;
    path.truncated = 0;

    return mx_json_check_value(v, &path, 0, err);
}


static int
mx_json_check_value(const json_t *v, mx_json_path_t *path, unsigned depth,
    mx_err_t *err)
{
    char          idx[32];
    void         *it;
    size_t        i, saved;
    unsigned      saved_trunc;
    json_int_t    n;
    const char   *key;

    if (v == NULL) {
        mx_err_set(err, "no value at %s", mx_json_path_str(path));
        return -1;
    }

    if (depth > MX_JSON_MAX_DEPTH) {
        mx_err_set(err, "nesting too deep at %s", mx_json_path_str(path));
        return -1;
    }

    switch (json_typeof(v)) {

    case JSON_REAL:
        mx_err_set(err, "float not allowed at %s", mx_json_path_str(path));
        return -1;

    case JSON_INTEGER:
        n = json_integer_value(v);

        if (n < MX_JSON_INT_MIN || n > MX_JSON_INT_MAX) {
            mx_err_set(err, "integer out of range at %s",
                       mx_json_path_str(path));
            return -1;
        }

        return 0;

    case JSON_ARRAY:
        for (i = 0; i < json_array_size(v); i++) {
            saved = path->len;
            saved_trunc = path->truncated;

            snprintf(idx, sizeof(idx), "[%zu]", i);
            mx_json_path_push(path, idx, strlen(idx), 0);

            if (mx_json_check_value(json_array_get(v, i), path, depth + 1,
                                    err)
                != 0)
            {
                return -1;
            }

            path->len = saved;
            path->truncated = saved_trunc;
            path->text[saved] = '\0';
        }

        return 0;

    case JSON_OBJECT:
        /* jansson's iterator API takes a non-const object; it is read only */
        for (it = json_object_iter((json_t *) v);
             it != NULL;
             it = json_object_iter_next((json_t *) v, it))
        {
            key = json_object_iter_key(it);

            saved = path->len;
            saved_trunc = path->truncated;

            mx_json_path_push(path, key, json_object_iter_key_len(it), 1);

            if (mx_json_check_value(json_object_iter_value(it), path,
                                    depth + 1, err)
                != 0)
            {
                return -1;
            }

            path->len = saved;
            path->truncated = saved_trunc;
            path->text[saved] = '\0';
        }

        return 0;

    default:
        return 0;
    }
}


/*
 * Appends ".key" (no dot at the start) or "[i]". Bytes that are not
 * printable ASCII become '?', so the path is safe to log.
 */
static void
mx_json_path_push(mx_json_path_t *path, const char *seg, size_t n,
    int is_key)
{
    size_t         i, need;
    unsigned char  ch;

    if (path->truncated) {
        return;
    }

    need = n + ((is_key && path->len) ? 1 : 0);

    /* keep room for "..." and the NUL */
    if (need > MX_JSON_PATH_MAX - 4 - path->len) {
        path->truncated = 1;
        return;
    }

    if (is_key && path->len) {
        path->text[path->len++] = '.';
    }

    for (i = 0; i < n; i++) {
        ch = (unsigned char) seg[i];
        path->text[path->len++] = (ch >= 0x20 && ch < 0x7f) ? (char) ch : '?';
    }

    path->text[path->len] = '\0';
}


static const char *
mx_json_path_str(mx_json_path_t *path)
{
    if (path->truncated) {
        /* the buffer always keeps room for the marker */
        memcpy(path->text + path->len, "...", 4);
        return path->text;
    }

    if (path->len == 0) {
        return "top level";
    }

    return path->text;
}


int
mx_json_canonical(const json_t *v, mx_buf_t *out, mx_err_t *err)
{
    size_t  len;

    len = out->len;

    if (mx_json_canonical_value(v, out, 0, err) != 0) {
        /* leave out as it was */
        out->len = len;

        if (out->data) {
            out->data[len] = '\0';
        }

        return -1;
    }

    return 0;
}


char *
mx_json_canonical_str(const json_t *v, size_t *len, mx_err_t *err)
{
    mx_buf_t  b = MX_BUF_INIT;

    if (mx_json_canonical(v, &b, err) != 0) {
        mx_buf_free(&b);
        return NULL;
    }

    if (len) {
        *len = b.len;
    }

    return b.data;
}


static int
mx_json_canonical_value(const json_t *v, mx_buf_t *out, unsigned depth,
    mx_err_t *err)
{
    int     n;
    char    num[32];
    size_t  i;

    if (v == NULL) {
        mx_err_set(err, "no value");
        return -1;
    }

    if (depth > MX_JSON_MAX_DEPTH) {
        mx_err_set(err, "nesting too deep");
        return -1;
    }

    switch (json_typeof(v)) {

    case JSON_OBJECT:
        return mx_json_canonical_object(v, out, depth, err);

    case JSON_ARRAY:
        if (mx_buf_append_byte(out, '[') != 0) {
            goto nomem;
        }

        for (i = 0; i < json_array_size(v); i++) {
            if (i && mx_buf_append_byte(out, ',') != 0) {
                goto nomem;
            }

            if (mx_json_canonical_value(json_array_get(v, i), out, depth + 1,
                                        err)
                != 0)
            {
                return -1;
            }
        }

        if (mx_buf_append_byte(out, ']') != 0) {
            goto nomem;
        }

        return 0;

    case JSON_STRING:
        if (mx_json_canonical_string(json_string_value(v),
                                     json_string_length(v), out)
            != 0)
        {
            goto nomem;
        }

        return 0;

    case JSON_INTEGER:
        n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(v));

        if (n < 0 || (size_t) n >= sizeof(num)) {
            mx_err_set(err, "cannot format integer");
            return -1;
        }

        if (mx_buf_append(out, num, (size_t) n) != 0) {
            goto nomem;
        }

        return 0;

    case JSON_REAL:
        mx_err_set(err, "float not allowed in canonical JSON");
        return -1;

    case JSON_TRUE:
        if (mx_buf_append(out, "true", 4) != 0) {
            goto nomem;
        }

        return 0;

    case JSON_FALSE:
        if (mx_buf_append(out, "false", 5) != 0) {
            goto nomem;
        }

        return 0;

    case JSON_NULL:
        if (mx_buf_append(out, "null", 4) != 0) {
            goto nomem;
        }

        return 0;

    default:
        mx_err_set(err, "unknown JSON type");
        return -1;
    }

nomem:

    mx_err_set(err, "out of memory");
    return -1;
}


static int
mx_json_canonical_object(const json_t *v, mx_buf_t *out, unsigned depth,
    mx_err_t *err)
{
    int                rc;
    void              *it;
    size_t             i, n;
    mx_json_member_t  *m;

    n = json_object_size(v);

    if (n == 0) {
        if (mx_buf_append(out, "{}", 2) != 0) {
            mx_err_set(err, "out of memory");
            return -1;
        }

        return 0;
    }

    m = malloc(n * sizeof(mx_json_member_t));
    if (m == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    /* jansson's iterator API takes a non-const object; it is read only */
    i = 0;

    for (it = json_object_iter((json_t *) v);
         it != NULL && i < n;
         it = json_object_iter_next((json_t *) v, it))
    {
        m[i].key = json_object_iter_key(it);
        m[i].len = json_object_iter_key_len(it);
        m[i].value = json_object_iter_value(it);
        i++;
    }

    n = i;

    /*
     * For valid UTF-8 (jansson checks every key), byte order is code point
     * order, so memcmp sorts as the spec asks, non-BMP keys included.
     */
    qsort(m, n, sizeof(mx_json_member_t), mx_json_member_cmp);

    rc = -1;

    if (mx_buf_append_byte(out, '{') != 0) {
        goto nomem;
    }

    for (i = 0; i < n; i++) {
        if (i && mx_buf_append_byte(out, ',') != 0) {
            goto nomem;
        }

        if (mx_json_canonical_string(m[i].key, m[i].len, out) != 0
            || mx_buf_append_byte(out, ':') != 0)
        {
            goto nomem;
        }

        if (mx_json_canonical_value(m[i].value, out, depth + 1, err) != 0) {
            goto done;
        }
    }

    if (mx_buf_append_byte(out, '}') != 0) {
        goto nomem;
    }

    rc = 0;
    goto done;

nomem:

    mx_err_set(err, "out of memory");

done:

    free(m);
    return rc;
}


static int
mx_json_member_cmp(const void *a, const void *b)
{
    int                      rc;
    const mx_json_member_t  *x, *y;

    x = a;
    y = b;

    rc = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    if (rc != 0) {
        return rc;
    }

    return (x->len > y->len) - (x->len < y->len);
}


/*
 * Only '"', '\\' and U+0000-U+001F are escaped; everything else, U+007F,
 * '/' and U+2028 included, is copied as raw UTF-8.
 */
int
mx_json_canonical_string(const char *s, size_t n, mx_buf_t *out)
{
    char           esc[8];
    size_t         i, run, elen;
    unsigned char  ch;

    static const char  hex[] = "0123456789abcdef";

    if (mx_buf_append_byte(out, '"') != 0) {
        return -1;
    }

    run = 0;

    for (i = 0; i < n; i++) {
        ch = (unsigned char) s[i];

        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            continue;
        }

        esc[0] = '\\';
        elen = 2;

        switch (ch) {

        case '"':
        case '\\':
            esc[1] = (char) ch;
            break;

        case '\b':
            esc[1] = 'b';
            break;

        case '\t':
            esc[1] = 't';
            break;

        case '\n':
            esc[1] = 'n';
            break;

        case '\f':
            esc[1] = 'f';
            break;

        case '\r':
            esc[1] = 'r';
            break;

        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 0x0f];
            elen = 6;
            break;
        }

        if (mx_buf_append(out, s + run, i - run) != 0
            || mx_buf_append(out, esc, elen) != 0)
        {
            return -1;
        }

        run = i + 1;
    }

    if (mx_buf_append(out, s + run, n - run) != 0
        || mx_buf_append_byte(out, '"') != 0)
    {
        return -1;
    }

    return 0;
}
