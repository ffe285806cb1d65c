/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: requests to the homeserver, X-Matrix signed as
 * its own name with its own key (a homeserver answers its own name's
 * reads for the rooms it is in), at most 8 a second (two back to back),
 * 429s waited out;
 * and the server keys its notary vouches for, each document's
 * self-signature checked.
 *
 * One thread (the passes) makes every request; the libcurl handle is
 * used the way the forwarder uses its own: the request target is set
 * byte for byte, no redirect is followed.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl.h"
#include "ctl_sync_run.h"
#include "mx_json.h"
#include "mx_keydoc.h"
#include "mx_xmatrix.h"


#define MXJ_SYNC_KEYS_FRESH_MS   3600000   /* a server's keys asked again */
#define MXJ_SYNC_KEY_DAYS_MS     (7LL * 86400 * 1000)


static long mxj_sync_http_once(mxj_sync_http_t *h, const char *method,
    const char *uri, const char *body, size_t body_len,
    struct curl_slist *headers);
static int mxj_sync_wait(mxj_sync_http_t *h, int64_t until);
static int mxj_sync_keyring_doc(mxj_sync_keyring_t *ring, json_t *doc,
    const mxj_sync_ids_t *want, int64_t now);
static mxj_sync_server_t *mxj_sync_keyring_server(mxj_sync_keyring_t *ring,
    const char *server);


int
mxj_sync_http_init(mxj_sync_http_t *h, mxj_sync_t *s)
{
    const char  *why;

    memset(h, 0, sizeof(mxj_sync_http_t));

    h->name = s->name;
    h->key = &s->keys[0];
    h->timeout = s->timeout;
    h->sync = s;
    h->interval = MXJ_SYNC_INTERVAL_MS;

    if (mxj_http_init(&h->c, s->homeserver, h->timeout, MXJ_HTTP_COMPRESSED,
                      &why)
        != 0)
    {
        fprintf(stderr, "matrix-join-ctl: sync: invalid --homeserver "
                "\"%s\": %s\n", s->homeserver, why);
        return -1;
    }

    h->c.max = MXJ_SYNC_BODY_MAX;

    return 0;
}


void
mxj_sync_http_free(mxj_sync_http_t *h)
{
    mxj_http_free(&h->c);
}


long
mxj_sync_http_request(mxj_sync_http_t *h, const char *method,
    const char *uri, const json_t *content, int sign)
{
    int                  tries;
    int64_t              now;
    long                 status, ms;
    char                *body;
    size_t               body_len;
    mx_err_t             err;
    mx_buf_t             auth = MX_BUF_INIT;
    struct curl_slist   *headers, *l;

    body = NULL;
    body_len = 0;
    headers = NULL;
    status = 0;

    if (content != NULL) {
        body = mx_json_canonical_str(content, &body_len, &err);

        if (body == NULL) {
            snprintf(h->err, sizeof(h->err), "the request body: %s",
                     err.text);
            return 0;
        }
    }

    if (sign) {
        if (mx_buf_append_str(&auth, "Authorization: ") != 0
            || mx_xmatrix_sign(method, uri, h->name, h->name, content,
                               h->key, &auth, &err) != 0)
        {
            snprintf(h->err, sizeof(h->err), "signing the request: %s",
                     err.text);
            goto done;
        }

        l = curl_slist_append(headers, auth.data);
        if (l == NULL) {
            goto nomem;
        }

        headers = l;
    }

    if (content != NULL) {
        l = curl_slist_append(headers, "Content-Type: application/json");
        if (l == NULL) {
            goto nomem;
        }

        headers = l;
    }

    l = curl_slist_append(headers, "Expect:");
    if (l == NULL) {
        goto nomem;
    }

    headers = l;

    for (tries = 0; ; tries++) {

        /*
         * The rate as a bucket of MXJ_SYNC_BURST requests filled one each
         * interval (GCRA): next_ms is when the bucket is full again, so
         * a request may go MXJ_SYNC_BURST - 1 intervals before it. The
         * long-run rate stays one per interval; the live advance's batch
         * (/event and /get_missing_events) goes back to back.
         */

        if (mxj_sync_wait(h, h->next_ms - (MXJ_SYNC_BURST - 1) * h->interval)
            != 0)
        {
            snprintf(h->err, sizeof(h->err), "stopped");
            status = 0;
            goto done;
        }

        now = mxj_run_mono_ms();
        h->next_ms = (h->next_ms > now ? h->next_ms : now) + h->interval;

        status = mxj_sync_http_once(h, method, uri, body, body_len, headers);

        if (status != 429) {
            /* answers again: back toward 8 a second */
            if (status != 0 && h->interval > MXJ_SYNC_INTERVAL_MS) {
                h->interval -= 5;
            }

            goto done;
        }

        if (tries + 1 >= MXJ_SYNC_RETRY_MAX) {
            snprintf(h->err, sizeof(h->err), "still 429 after %d tries",
                     tries + 1);
            goto done;
        }

        /*
         * Told to wait: that long, and slower from now on (doubling, then
         * 5 ms less per answer): a homeserver's per-origin limit is
         * fewer requests a second than ours.
         */

        ms = mxj_http_retry_after_ms(h->c.body.data, h->c.body.len);

        if (ms < 0) {
            ms = 1000;
        }

        if (ms > MXJ_SYNC_RETRY_WAIT_MAX) {
            ms = MXJ_SYNC_RETRY_WAIT_MAX;
        }

        h->interval = h->interval * 2 > MXJ_SYNC_INTERVAL_MAX
                      ? MXJ_SYNC_INTERVAL_MAX : h->interval * 2;

        mxj_sync_log("429 from the homeserver for %s %.200s: waiting %ld ms",
                     method, uri, ms);

        if (mxj_sync_wait(h, mxj_run_mono_ms() + ms) != 0) {
            snprintf(h->err, sizeof(h->err), "stopped");
            status = 0;
            goto done;
        }

        if (h->next_ms < mxj_run_mono_ms()) {
            h->next_ms = mxj_run_mono_ms();
        }
    }

nomem:

    snprintf(h->err, sizeof(h->err), "out of memory");
    status = 0;

done:

    curl_slist_free_all(headers);
    mx_buf_free(&auth);
    free(body);

    return status;
}


static long
mxj_sync_http_once(mxj_sync_http_t *h, const char *method, const char *uri,
    const char *body, size_t body_len, struct curl_slist *headers)
{
    h->status = mxj_http_send(&h->c, method, uri, strlen(uri), body,
                              body_len, headers);

    mxj_sync_count(h->sync->stats.hs[h->status >= 100 && h->status < 600
                                      ? h->status / 100 : 0], 1);

    if (h->status == 0) {
        snprintf(h->err, sizeof(h->err), "%s", h->c.err);
    }

    return h->status;
}


/* Until a monotonic time; 1 when a stop came first. */

static int
mxj_sync_wait(mxj_sync_http_t *h, int64_t until)
{
    int64_t  now;

    now = mxj_run_mono_ms();

    if (until <= now) {
        return mxj_run_stopping(&h->sync->run);
    }

    return mxj_run_sleep(&h->sync->run, (long) (until - now));
}


void
mxj_sync_http_why(mxj_sync_http_t *h, const char *what, char *why,
    size_t len)
{
    json_t      *doc;
    const char  *code, *error;

    if (h->status == 0) {
        snprintf(why, len, "%s: %s", what, h->err);
        return;
    }

    doc = json_loadb(h->c.body.data ? h->c.body.data : "", h->c.body.len, 0,
                     NULL);
    code = json_string_value(json_object_get(doc, "errcode"));
    error = json_string_value(json_object_get(doc, "error"));

    if (code != NULL) {
        snprintf(why, len, "%s: %ld %s%s%.200s", what, h->status, code,
                 error ? ": " : "", error ? error : "");

    } else {
        snprintf(why, len, "%s: %ld", what, h->status);
    }

    json_decref(doc);
}


/* --- keys -------------------------------------------------------------- */

static mxj_sync_server_t *
mxj_sync_keyring_server(mxj_sync_keyring_t *ring, const char *server)
{
    mxj_sync_server_t  *sv;

    sv = mxj_sync_map_get(&ring->servers, server);

    if (sv != NULL) {
        return sv;
    }

    sv = calloc(1, sizeof(mxj_sync_server_t));
    if (sv == NULL) {
        return NULL;
    }

    sv->server = strdup(server);

    if (sv->server == NULL
        || mxj_sync_map_put(&ring->servers, sv->server, sv) != 0)
    {
        free(sv->server);
        free(sv);
        return NULL;
    }

    return sv;
}


static int
mxj_sync_server_key(mxj_sync_server_t *sv, const char *key_id,
    const uint8_t pk[MX_ED25519_PK_LEN], int64_t valid_until)
{
    size_t           i;
    mxj_sync_key_t  *k;

    for (i = 0; i < sv->nkeys; i++) {
        if (strcmp(sv->keys[i].key_id, key_id) == 0) {
            break;
        }
    }

    if (i == sv->nkeys) {
        k = realloc(sv->keys, (sv->nkeys + 1) * sizeof(mxj_sync_key_t));
        if (k == NULL) {
            return -1;
        }

        sv->keys = k;
        sv->nkeys++;
    }

    k = &sv->keys[i];

    snprintf(k->key_id, sizeof(k->key_id), "%s", key_id);
    memcpy(k->pk, pk, MX_ED25519_PK_LEN);
    k->valid_until = valid_until;

    return 0;
}


int
mxj_sync_keyring_add(mxj_sync_keyring_t *ring, const char *server,
    const char *key_id, const uint8_t pk[MX_ED25519_PK_LEN],
    int64_t valid_until)
{
    mxj_sync_server_t  *sv;

    sv = mxj_sync_keyring_server(ring, server);

    if (sv == NULL) {
        return -1;
    }

    return mxj_sync_server_key(sv, key_id, pk, valid_until);
}


int
mxj_sync_keyring_fetch(mxj_sync_keyring_t *ring, mxj_sync_http_t *h,
    const mxj_sync_ids_t *want, char *why, size_t len)
{
    int                  rc;
    long                 status;
    size_t               i, n;
    json_t              *q, *sk, *doc, *list;
    int64_t              now;
    mx_err_t             err;
    mxj_sync_server_t   *sv;

    now = mxj_run_mono_ms();

    q = json_object();
    sk = json_object();

    if (q == NULL || sk == NULL || json_object_set_new(q, "server_keys", sk))
    {
        json_decref(q);
        snprintf(why, len, "out of memory");
        return -1;
    }

    n = 0;

    for (i = 0; i < want->n; i++) {
        sv = mxj_sync_map_get(&ring->servers, want->v[i]);

        if (sv != NULL && sv->fetched != 0
            && now - sv->fetched < MXJ_SYNC_KEYS_FRESH_MS)
        {
            continue;
        }

        if (json_object_set_new(sk, want->v[i], json_object()) != 0) {
            json_decref(q);
            snprintf(why, len, "out of memory");
            return -1;
        }

        n++;
    }

    if (n == 0) {
        json_decref(q);
        return 0;
    }

    status = mxj_sync_http_request(h, "POST", "/_matrix/key/v2/query", q, 0);

    if (status != 200) {
        mxj_sync_http_why(h, "POST /_matrix/key/v2/query", why, len);
        json_decref(q);
        return -1;
    }

    doc = mx_json_parse(h->c.body.data, h->c.body.len, 0, &err);

    if (doc == NULL) {
        snprintf(why, len, "POST /_matrix/key/v2/query: %s", err.text);
        json_decref(q);
        return -1;
    }

    list = json_object_get(doc, "server_keys");

    if (!json_is_array(list)) {
        snprintf(why, len, "POST /_matrix/key/v2/query: no server_keys "
                 "list");
        json_decref(doc);
        json_decref(q);
        return -1;
    }

    rc = 0;

    /* the servers asked: fetched now, whatever the notary had of them */

    for (i = 0; i < want->n; i++) {
        if (json_object_get(sk, want->v[i]) == NULL) {
            continue;
        }

        sv = mxj_sync_keyring_server(ring, want->v[i]);

        if (sv == NULL) {
            rc = -1;
            break;
        }

        sv->fetched = now;
        free(sv->why);
        sv->why = strdup("the notary returned no key document of it");
    }

    for (i = 0; rc == 0 && i < json_array_size(list); i++) {
        if (mxj_sync_keyring_doc(ring, json_array_get(list, i), want,
                                 mxj_run_wall_ms()) != 0)
        {
            rc = -1;
        }
    }

    if (rc != 0) {
        snprintf(why, len, "out of memory");
    }

    json_decref(doc);
    json_decref(q);

    return rc;
}


/*
 * One key document of a server asked for, by the rules of mx_keydoc: its
 * keys are then known until valid_until_ts (verify_keys, at most 7 days
 * from now) or expired_ts (old_verify_keys), whether the document is
 * still valid or not: an event is judged at its own time. A bad document
 * is ignored, the reason kept. -1 only when out of memory.
 */

static int
mxj_sync_keyring_doc(mxj_sync_keyring_t *ring, json_t *doc,
    const mxj_sync_ids_t *want, int64_t now)
{
    size_t               i, n;
    const char          *server, *why;
    mx_keydoc_key_t      keys[MX_KEYDOC_MAX_KEYS];
    mxj_sync_server_t   *sv;

    server = json_string_value(json_object_get(doc, "server_name"));

    if (server == NULL) {
        return 0;
    }

    for (i = 0; i < want->n; i++) {
        if (strcmp(want->v[i], server) == 0) {
            break;
        }
    }

    if (i == want->n) {
        return 0;
    }

    sv = mxj_sync_keyring_server(ring, server);
    if (sv == NULL) {
        return -1;
    }

    if (mx_keydoc_check(doc, server, now, MXJ_SYNC_KEY_DAYS_MS, keys,
                        MX_KEYDOC_MAX_KEYS, &n, &why)
        != 0)
    {
        free(sv->why);
        sv->why = strdup(why);
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (mxj_sync_server_key(sv, keys[i].key_id, keys[i].pk,
                                keys[i].valid_until)
            != 0)
        {
            return -1;
        }
    }

    free(sv->why);
    sv->why = NULL;

    return 0;
}


int
mxj_sync_keyring_lookup(void *data, const char *server, const char *key_id,
    uint8_t pk[MX_ED25519_PK_LEN], int64_t *valid_until_ts)
{
    size_t               i;
    mxj_sync_server_t   *sv;
    mxj_sync_keyring_t  *ring = data;

    sv = mxj_sync_map_get(&ring->servers, server);

    if (sv == NULL) {
        return -1;
    }

    for (i = 0; i < sv->nkeys; i++) {
        if (strcmp(sv->keys[i].key_id, key_id) == 0) {
            memcpy(pk, sv->keys[i].pk, MX_ED25519_PK_LEN);
            *valid_until_ts = sv->keys[i].valid_until;
            return 0;
        }
    }

    return -1;
}


int
mxj_sync_keyring_expire(mxj_sync_keyring_t *ring, const char *server,
    int64_t min_age_ms)
{
    mxj_sync_server_t  *sv;

    sv = mxj_sync_map_get(&ring->servers, server);

    if (sv == NULL || sv->fetched == 0
        || mxj_run_mono_ms() - sv->fetched < min_age_ms)
    {
        return 0;
    }

    sv->fetched = 0;

    return 1;
}


const char *
mxj_sync_keyring_why(mxj_sync_keyring_t *ring, const char *server)
{
    mxj_sync_server_t  *sv;

    sv = mxj_sync_map_get(&ring->servers, server);

    return sv ? sv->why : NULL;
}


void
mxj_sync_keyring_free(mxj_sync_keyring_t *ring)
{
    size_t              i;
    mxj_sync_server_t  *sv;

    for (i = 0; i < ring->servers.n; i++) {
        sv = ring->servers.vals[i];
        free(sv->keys);
        free(sv->why);
        free(sv->server);
        free(sv);
    }

    mxj_sync_map_free(&ring->servers);
}
