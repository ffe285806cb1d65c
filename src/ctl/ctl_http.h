/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl's HTTP client, one libcurl handle per thread, shared by
 * forward (to the homeserver's send_join) and sync (its federation
 * reads): the request target goes out byte for byte after the base URL's
 * path, no redirect is followed, no signal is used.
 */

#ifndef MXJ_CTL_HTTP_H
#define MXJ_CTL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "mx_util.h"


#define MXJ_HTTP_RETRY_AFTER_MAX  600000  /* ms, a 429's retry_after_ms cap */

/* mxj_http_init() flags */
#define MXJ_HTTP_COMPRESSED       1       /* Accept-Encoding: what curl has */


typedef struct {
    CURL               *curl;
    const char         *url;        /* http(s)://host[:port][/path] */
    const char         *path;       /* url's path, before each URI */
    size_t              path_len;

    mx_buf_t            body;       /* the last answer (always allocated) */
    size_t              keep;       /* > 0: bytes kept, the rest dropped */
    long long           max;        /* keep == 0: a larger answer fails */
    int                 too_big;

    void              (*tick)(void *data);  /* called during a transfer */
    void               *data;

    uint64_t            requests;   /* counters for the log */
    uint64_t            bytes_in;
    char                err[CURL_ERROR_SIZE + 64];
} mxj_http_t;


/*
 * Checks an upstream URL (http:// or https://, a host, an optional path,
 * no query or fragment) and finds its path without trailing slashes, which
 * goes before each request's URI. 0, or -1 with *why set.
 */
int mxj_http_url(const char *url, const char **path, size_t *path_len,
    const char **why);

/* A 429 body's "retry_after_ms" (capped), or -1 when it has none. */
long mxj_http_retry_after_ms(const char *body, size_t len);

/*
 * A handle for url (checked: -1 with *why set) with timeout_ms for the
 * connection and for each whole request. keep, max, tick and data may be
 * set afterwards. 0 or -1 (*why says why).
 */
int mxj_http_init(mxj_http_t *h, const char *url, long timeout_ms,
    int flags, const char **why);

void mxj_http_free(mxj_http_t *h);

/*
 * One request: method, the path's URI (sent as is after url's path), a
 * body (NULL: none) and headers. Returns the status, or 0 with h->err set
 * when there was no answer; the answer is in h->body.
 */
long mxj_http_send(mxj_http_t *h, const char *method, const char *uri,
    size_t uri_len, const char *body, size_t body_len,
    struct curl_slist *headers);

#endif /* MXJ_CTL_HTTP_H */
