/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl's libcurl wrapper (ctl_http.h): the URL check, the
 * handle's settings, one request and its answer, a 429's retry_after_ms.
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "ctl.h"
#include "ctl_http.h"


static size_t mxj_http_write(char *data, size_t size, size_t n, void *ctx);
static int mxj_http_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow);


int
mxj_http_url(const char *url, const char **path, size_t *path_len,
    const char **why)
{
    size_t       n;
    const char  *host, *p;

    if (strncasecmp(url, "http://", 7) == 0) {
        host = url + 7;

    } else if (strncasecmp(url, "https://", 8) == 0) {
        host = url + 8;

    } else {
        *why = "want http:// or https://";
        return -1;
    }

    n = strcspn(host, "/?#");

    if (n == 0) {
        *why = "no host";
        return -1;
    }

    p = host + n;

    if (strpbrk(p, "?#") != NULL) {
        *why = "a query or fragment would come before the entry's URI";
        return -1;
    }

    n = strlen(p);

    while (n > 0 && p[n - 1] == '/') {
        n--;
    }

    *path = p;
    *path_len = n;

    return 0;
}


long
mxj_http_retry_after_ms(const char *body, size_t len)
{
    long       ms;
    json_t    *doc, *v;
    double     d;

    doc = json_loadb(body, len, 0, NULL);
    if (doc == NULL) {
        return -1;
    }

    ms = -1;
    v = json_object_get(doc, "retry_after_ms");

    if (json_is_number(v)) {
        d = json_number_value(v);

        if (d >= 0) {
            ms = (d > MXJ_HTTP_RETRY_AFTER_MAX) ? MXJ_HTTP_RETRY_AFTER_MAX
                                                : (long) d;
        }
    }

    json_decref(doc);

    return ms;
}


int
mxj_http_init(mxj_http_t *h, const char *url, long timeout_ms, int flags,
    const char **why)
{
    memset(h, 0, sizeof(mxj_http_t));

    if (mxj_http_url(url, &h->path, &h->path_len, why) != 0) {
        return -1;
    }

    h->url = url;

    if (mx_buf_append(&h->body, "", 0) != 0) {
        *why = "out of memory";
        return -1;
    }

    h->curl = curl_easy_init();
    if (h->curl == NULL) {
        mx_buf_free(&h->body);
        *why = "curl_easy_init() failed";
        return -1;
    }

    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->curl, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_USERAGENT,
                     "matrix-join-ctl/" MXJ_VERSION);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, mxj_http_write);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, mxj_http_progress);
    curl_easy_setopt(h->curl, CURLOPT_XFERINFODATA, h);

    if (flags & MXJ_HTTP_COMPRESSED) {
        curl_easy_setopt(h->curl, CURLOPT_ACCEPT_ENCODING, "");
    }

    return 0;
}


void
mxj_http_free(mxj_http_t *h)
{
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }

    mx_buf_free(&h->body);
}


long
mxj_http_send(mxj_http_t *h, const char *method, const char *uri,
    size_t uri_len, const char *body, size_t body_len,
    struct curl_slist *headers)
{
    long       code;
    char       err[CURL_ERROR_SIZE];
    CURLcode   rc;
    mx_buf_t   target = MX_BUF_INIT;

    h->err[0] = '\0';

    /*
     * The request target goes out byte for byte: a joining server signed
     * it as it sent it, and any normalisation would break the signature.
     */

    if (mx_buf_append(&target, h->path, h->path_len) != 0
        || mx_buf_append(&target, uri, uri_len) != 0
        || mx_buf_append(&h->body, "", 0) != 0)
    {
        mx_buf_free(&target);
        snprintf(h->err, sizeof(h->err), "out of memory");
        return 0;
    }

    err[0] = '\0';
    mx_buf_reset(&h->body);
    h->body.data[0] = '\0';
    h->too_big = 0;

    curl_easy_setopt(h->curl, CURLOPT_URL, h->url);
    curl_easy_setopt(h->curl, CURLOPT_REQUEST_TARGET, target.data);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, err);

    if (body != NULL) {
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t) body_len);
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);

    } else {
        curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(method, "GET") == 0 ? NULL : method);
    }

    h->requests++;

    rc = curl_easy_perform(h->curl);

    curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, NULL);
    mx_buf_free(&target);

    if (rc != CURLE_OK) {
        if (h->too_big) {
            snprintf(h->err, sizeof(h->err), "the answer is larger than "
                     "%lld bytes", h->max);

        } else {
            snprintf(h->err, sizeof(h->err), "%s",
                     err[0] ? err : curl_easy_strerror(rc));
        }

        return 0;
    }

    code = 0;
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &code);

    if (code == 0) {
        snprintf(h->err, sizeof(h->err), "no HTTP status");
    }

    return code;
}


static size_t
mxj_http_write(char *data, size_t size, size_t n, void *ctx)
{
    mxj_http_t *h = ctx;

    size_t  len, room;

    len = size * n;
    h->bytes_in += len;

    if (h->keep > 0) {
        room = h->keep > h->body.len ? h->keep - h->body.len : 0;

        /* the rest is read and dropped */

        if (mx_buf_append(&h->body, data, len < room ? len : room) != 0) {
            return 0;
        }

        return len;
    }

    if (h->max > 0 && (long long) (h->body.len + len) > h->max) {
        h->too_big = 1;
        return 0;
    }

    if (mx_buf_append(&h->body, data, len) != 0) {
        return 0;
    }

    return len;
}


static int
mxj_http_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
    mxj_http_t *h = ctx;

    if (h->tick != NULL) {
        h->tick(h->data);
    }

    return 0;
}
