/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: what the steps of a pass share: the failure that
 * ends it, the federation GETs, the room's records read, the forward
 * extremities as the meta keeps them.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"
#include "mx_json.h"


int
mxj_sync_fail(mxj_sync_pass_t *p, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(p->why, p->len, fmt, args);
    va_end(args);

    return -1;
}


/* A federation URI: the prefix, then each part escaped, then the rest. */

int
mxj_sync_uri(mx_buf_t *out, const char *a, const char *b, const char *c,
    const char *d)
{
    mx_buf_reset(out);

    if (mx_buf_append_str(out, a) != 0
        || (b != NULL && mxj_sync_uri_escape(out, b) != 0)
        || (c != NULL && mx_buf_append_str(out, c) != 0)
        || (d != NULL && mxj_sync_uri_escape(out, d) != 0))
    {
        return -1;
    }

    return 0;
}


/*
 * GET of the federation URI mxj_sync_uri makes of a, b, c, d: 0 with the
 * answer in p->s->http.c.body, or -1 with p->why (what names the request).
 */

int
mxj_sync_fed_get(mxj_sync_pass_t *p, const char *a, const char *b,
    const char *c, const char *d, const char *what)
{
    long      status;
    mx_buf_t  uri = MX_BUF_INIT;

    if (mxj_sync_uri(&uri, a, b, c, d) != 0) {
        mx_buf_free(&uri);
        return mxj_sync_fail(p, "out of memory");
    }

    status = mxj_sync_http_request(&p->s->http, "GET", uri.data, NULL, 1);
    mx_buf_free(&uri);

    if (status != 200) {
        mxj_sync_http_why(&p->s->http, what, p->why, p->len);
        return -1;
    }

    return 0;
}


const char *
mxj_sync_meta(mxj_sync_pass_t *p, const char *name)
{
    size_t  i;

    for (i = 0; i + 1 < p->meta->elements; i += 2) {
        if (strcmp(p->meta->element[i]->str, name) == 0) {
            return p->meta->element[i + 1]->str;
        }
    }

    return NULL;
}


/* A reply's strings (step 2: an HGETALL's fields) as a set. */

int
mxj_sync_index(mxj_sync_map_t *m, redisReply *list, size_t step)
{
    size_t  i;

    for (i = 0; i < list->elements; i += step) {
        if (list->element[i]->type == REDIS_REPLY_STRING
            && mxj_sync_map_put(m, list->element[i]->str,
                                list->element[i]) != 0)
        {
            return -1;
        }
    }

    return 0;
}


int
mxj_sync_extremities_json(mxj_sync_pass_t *p, mx_buf_t *out)
{
    size_t   i, k;
    char   **v, *t;

    v = malloc(p->x.n * sizeof(char *));
    if (v == NULL) {
        return -1;
    }

    memcpy(v, p->x.v, p->x.n * sizeof(char *));

    /* a few IDs: an insertion sort */

    for (i = 1; i < p->x.n; i++) {
        for (k = i; k > 0 && strcmp(v[k - 1], v[k]) > 0; k--) {
            t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    }

    if (mx_buf_append_byte(out, '[') != 0) {
        free(v);
        return -1;
    }

    for (i = 0; i < p->x.n; i++) {
        if ((i && mx_buf_append_byte(out, ',') != 0)
            || mx_json_canonical_string(v[i], strlen(v[i]), out) != 0)
        {
            free(v);
            return -1;
        }
    }

    free(v);

    return mx_buf_append_byte(out, ']');
}
