/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: the Application Service listener (docs/sync.md,
 * "Pushed changes"), on libmicrohttpd. The homeserver is its only client:
 * PUT /_matrix/app/v1/transactions/{txnId} and the legacy
 * /transactions/{txnId}, the hs_token as "Authorization: Bearer" or as
 * the legacy access_token parameter, each transaction answered {} as soon
 * as it is read, its events of managed rooms queued for the worker
 * (ctl_sync_as.c); a transaction ID seen last is answered {} again and
 * not queued twice. The user and alias queries are answered as an
 * application service that claims none (404).
 *
 * One thread (libmicrohttpd's), at most MXJ_SYNC_AS_CONNS connections,
 * 2 s of silence closes one, a body read in 10 s at most.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>
#include <sodium.h>

#include "ctl_listen.h"
#include "ctl_sync_as.h"
#include "mx_json.h"


#define MXJ_SYNC_AS_HEAD_MEM    (64 * 1024)   /* a connection's head */


/* One request of the homeserver, from its head to its answer. */
typedef struct {
    mxj_sync_as_route_e       route;
    char                      txn[MXJ_SYNC_TXN_MAX + 1];
    mx_buf_t                  body;
    size_t                    got;          /* bytes of the body */
    int64_t                   deadline;     /* monotonic ms */
} mxj_sync_as_req_t;


static enum MHD_Result mxj_sync_as_handler(void *cls,
    struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload, size_t *upload_size,
    void **ctx);
static int mxj_sync_as_auth(mxj_sync_as_t *as, struct MHD_Connection *c,
    unsigned *status, const char **answer);
static int mxj_sync_as_token_is(mxj_sync_as_t *as, const char *token);
static unsigned mxj_sync_as_transaction(mxj_sync_as_t *as,
    mxj_sync_as_req_t *req, const char **answer);
static enum MHD_Result mxj_sync_as_answer(struct MHD_Connection *c,
    unsigned status, const char *body);
static void mxj_sync_as_completed(void *cls, struct MHD_Connection *c,
    void **ctx, enum MHD_RequestTerminationCode why);
static size_t mxj_sync_as_unescape(void *cls, struct MHD_Connection *c,
    char *s);
static void mxj_sync_as_mhd_log(void *cls, const char *fmt, va_list ap);


#define MXJ_SYNC_AS_UNRECOGNIZED                                              \
    "{\"errcode\":\"M_UNRECOGNIZED\",\"error\":\"Unrecognized request\"}"


/* --- the socket -------------------------------------------------------- */

/* Bound before the first pass, so that a port taken fails at once. */

int
mxj_sync_as_bind(mxj_sync_t *s)
{
    int     fd;
    size_t  n;

    fd = mxj_listen_bind("sync", "--appservice-listen", s->as_listen);

    if (fd < 0) {
        return -1;
    }

    s->as_fd = fd;

    n = strlen(s->as_listen) + 8;
    s->as_url = malloc(n);

    if (s->as_url == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    snprintf(s->as_url, n, "http://%s", s->as_listen);

    return 0;
}


/* --- the daemon -------------------------------------------------------- */

int
mxj_sync_as_listen(mxj_sync_as_t *as)
{
    as->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        mxj_sync_as_handler, as,
        MHD_OPTION_EXTERNAL_LOGGER, mxj_sync_as_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket) as->s->as_fd,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) MXJ_SYNC_AS_IDLE_S,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) MXJ_SYNC_AS_CONNS,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) MXJ_SYNC_AS_HEAD_MEM,
        MHD_OPTION_NOTIFY_COMPLETED, mxj_sync_as_completed, as,
        MHD_OPTION_UNESCAPE_CALLBACK, mxj_sync_as_unescape, NULL,
        MHD_OPTION_STRICT_FOR_CLIENT, (int) 1,
        MHD_OPTION_END);

    if (as->daemon == NULL) {
        fprintf(stderr, "matrix-join-ctl: sync: the application service "
                "listener on %s did not start\n", as->s->as_listen);
        return -1;
    }

    as->s->as_fd = -1;              /* the daemon's, closed by it */

    return 0;
}


void
mxj_sync_as_unlisten(mxj_sync_as_t *as)
{
    if (as->daemon != NULL) {
        MHD_stop_daemon(as->daemon);
        as->daemon = NULL;
    }
}


/*
 * Called for the head (*ctx NULL), for each piece of the body, and once
 * the body is whole (*upload_size 0). What is refused is refused at the
 * head, before any body is read.
 */

static enum MHD_Result
mxj_sync_as_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **ctx)
{
    unsigned             status;
    const char          *answer;
    mxj_sync_as_t       *as = cls;
    mxj_sync_as_req_t   *req, head;

    req = *ctx;

    if (req == NULL) {
        memset(&head, 0, sizeof(head));
        head.route = mxj_sync_as_route(method, url, head.txn);

        switch (head.route) {

        case MXJ_SYNC_AS_UNKNOWN:
            return mxj_sync_as_answer(c, MHD_HTTP_NOT_FOUND,
                                      MXJ_SYNC_AS_UNRECOGNIZED);

        case MXJ_SYNC_AS_BAD_METHOD:
            return mxj_sync_as_answer(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                                      MXJ_SYNC_AS_UNRECOGNIZED);

        default:
            break;
        }

        if (mxj_sync_as_auth(as, c, &status, &answer) != 0) {
            return mxj_sync_as_answer(c, status, answer);
        }

        if (head.route == MXJ_SYNC_AS_QUERY) {
            /* the namespaces users and aliases are empty: none is ours */
            return mxj_sync_as_answer(c, MHD_HTTP_NOT_FOUND,
                                      "{\"errcode\":\"M_NOT_FOUND\","
                                      "\"error\":\"not provided by this "
                                      "application service\"}");
        }

        req = malloc(sizeof(mxj_sync_as_req_t));
        if (req == NULL) {
            return MHD_NO;
        }

        *req = head;
        req->deadline = mxj_run_mono_ms() + MXJ_SYNC_AS_CONN_MS;
        *ctx = req;

        return MHD_YES;
    }

    if (*upload_size > 0) {
        if (mxj_run_mono_ms() > req->deadline) {
            mxj_sync_log("appservice: a body not read within %d s: the "
                         "connection closed", MXJ_SYNC_AS_CONN_MS / 1000);
            return MHD_NO;
        }

        req->got += *upload_size;

        /* over the limit: read to the end, kept no more */

        if (req->got <= MXJ_SYNC_AS_BODY_MAX) {
            if (mx_buf_append(&req->body, upload, *upload_size) != 0) {
                return MHD_NO;
            }

        } else {
            mx_buf_free(&req->body);
        }

        *upload_size = 0;

        return MHD_YES;
    }

    /* the whole request */

    if (req->route == MXJ_SYNC_AS_PING) {
        return mxj_sync_as_answer(c, MHD_HTTP_OK, "{}");
    }

    status = mxj_sync_as_transaction(as, req, &answer);

    return mxj_sync_as_answer(c, status, answer);
}


/*
 * The hs_token, as a Bearer header or an access_token parameter, compared
 * in constant time (their BLAKE2b hashes); both given: both must be it.
 * No credential: 401 M_UNAUTHORIZED; a wrong one: 403 M_FORBIDDEN (the
 * Application Service API, "Authorization").
 */

static int
mxj_sync_as_auth(mxj_sync_as_t *as, struct MHD_Connection *c,
    unsigned *status, const char **answer)
{
    int          rc;
    char         bearer[MXJ_SYNC_TOKEN_MAX + 1];
    char         param[MXJ_SYNC_TOKEN_MAX + 1];
    const char  *h, *q;

    h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION);
    q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
                                    "access_token");

    rc = mxj_sync_as_tokens(h, q, bearer, param);

    if (rc == 0 && bearer[0] == '\0' && param[0] == '\0') {
        *status = MHD_HTTP_UNAUTHORIZED;
        *answer = "{\"errcode\":\"M_UNAUTHORIZED\",\"error\":\"no "
                  "hs_token\"}";
        return -1;
    }

    if (rc != 0
        || (bearer[0] != '\0' && !mxj_sync_as_token_is(as, bearer))
        || (param[0] != '\0' && !mxj_sync_as_token_is(as, param)))
    {
        mxj_sync_log("appservice: a request with a wrong hs_token refused");
        *status = MHD_HTTP_FORBIDDEN;
        *answer = "{\"errcode\":\"M_FORBIDDEN\",\"error\":\"wrong "
                  "hs_token\"}";
        sodium_memzero(bearer, sizeof(bearer));
        sodium_memzero(param, sizeof(param));
        return -1;
    }

    sodium_memzero(bearer, sizeof(bearer));
    sodium_memzero(param, sizeof(param));

    return 0;
}


static int
mxj_sync_as_token_is(mxj_sync_as_t *as, const char *token)
{
    unsigned char  h[sizeof(as->hs_hash)];

    crypto_generichash(h, sizeof(h), (const unsigned char *) token,
                       strlen(token), NULL, 0);

    return sodium_memcmp(h, as->hs_hash, sizeof(h)) == 0;
}


/*
 * A transaction whole: {"events": [...], and what else homeservers add
 * (ephemeral, to_device: not looked at)}. The events of managed rooms
 * are queued; the others are not ours. The status, *answer its body.
 */

static unsigned
mxj_sync_as_transaction(mxj_sync_as_t *as, mxj_sync_as_req_t *req,
    const char **answer)
{
    size_t               i, ignored;
    json_t              *doc, *events, *ev, *mine;
    mx_err_t             err;
    const char          *room_id;
    mxj_sync_as_item_t  *item;

    *answer = "{}";

    if (mxj_sync_txns_seen(&as->txns, req->txn)) {
        mxj_sync_log("appservice: txn=%s again: answered, not done twice",
                     req->txn);
        mxj_sync_count(as->s->stats.txns[MXJ_SYNC_TXN_REPEATED], 1);
        return MHD_HTTP_OK;
    }

    if (req->got > MXJ_SYNC_AS_BODY_MAX) {
        /* not read: what it held is made up for by passes */

        if (mxj_sync_txns_add(&as->txns, req->txn) != 0) {
            goto nomem;
        }

        mxj_sync_as_lose_all(as, req->txn, "over the body limit "
                             "(8 MiB), not read");
        mxj_sync_count(as->s->stats.txns[MXJ_SYNC_TXN_ACCEPTED], 1);
        return MHD_HTTP_OK;
    }

    doc = mx_json_parse(req->body.data ? req->body.data : "",
                        req->body.len, 0, &err);

    if (doc == NULL) {
        *answer = "{\"errcode\":\"M_NOT_JSON\",\"error\":\"Content not "
                  "JSON.\"}";
        mxj_sync_count(as->s->stats.txns[MXJ_SYNC_TXN_REFUSED], 1);
        return MHD_HTTP_BAD_REQUEST;
    }

    events = json_object_get(doc, "events");

    if (!json_is_object(doc) || !json_is_array(events)) {
        json_decref(doc);
        *answer = "{\"errcode\":\"M_BAD_JSON\",\"error\":\"want "
                  "{\\\"events\\\": [...]}\"}";
        mxj_sync_count(as->s->stats.txns[MXJ_SYNC_TXN_REFUSED], 1);
        return MHD_HTTP_BAD_REQUEST;
    }

    mine = json_array();
    if (mine == NULL) {
        json_decref(doc);
        goto nomem;
    }

    ignored = 0;

    json_array_foreach(events, i, ev) {
        room_id = json_string_value(json_object_get(ev, "room_id"));

        if (room_id == NULL || mxj_sync_as_room(as->s, room_id) < 0) {
            ignored++;
            continue;
        }

        if (json_array_append(mine, ev) != 0) {
            json_decref(mine);
            json_decref(doc);
            goto nomem;
        }
    }

    json_decref(doc);

    if (ignored > 0) {
        mxj_sync_log("appservice: txn=%s: %zu event%s of rooms not managed "
                     "here ignored", req->txn, ignored,
                     ignored == 1 ? "" : "s");
    }

    if (mxj_sync_txns_add(&as->txns, req->txn) != 0) {
        json_decref(mine);
        goto nomem;
    }

    mxj_sync_count(as->s->stats.txns[MXJ_SYNC_TXN_ACCEPTED], 1);
    mxj_sync_count(as->s->stats.txn_events, json_array_size(mine));

    if (json_array_size(mine) == 0) {
        json_decref(mine);
        return MHD_HTTP_OK;
    }

    item = calloc(1, sizeof(mxj_sync_as_item_t));

    if (item == NULL || (item->txn = strdup(req->txn)) == NULL) {
        free(item);
        json_decref(mine);
        mxj_sync_as_lose_all(as, req->txn, "out of memory");
        return MHD_HTTP_OK;
    }

    item->events = mine;
    item->bytes = req->body.len;

    mxj_sync_as_queue(as, item);

    return MHD_HTTP_OK;

nomem:

    /* not remembered: the homeserver sends it again */

    *answer = "{\"errcode\":\"M_UNKNOWN\",\"error\":\"out of memory\"}";

    return MHD_HTTP_INTERNAL_SERVER_ERROR;
}


static enum MHD_Result
mxj_sync_as_answer(struct MHD_Connection *c, unsigned status,
    const char *body)
{
    enum MHD_Result       rc;
    struct MHD_Response  *r;

    r = MHD_create_response_from_buffer(strlen(body), (void *) body,
                                        MHD_RESPMEM_MUST_COPY);
    if (r == NULL) {
        return MHD_NO;
    }

    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json") != MHD_YES)
    {
        MHD_destroy_response(r);
        return MHD_NO;
    }

    rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);

    return rc;
}


static void
mxj_sync_as_completed(void *cls, struct MHD_Connection *c, void **ctx,
    enum MHD_RequestTerminationCode why)
{
    mxj_sync_as_req_t  *req = *ctx;

    if (req == NULL) {
        return;
    }

    if (why == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED) {
        mxj_sync_log("appservice: a request silent for %d s: the connection "
                     "closed", MXJ_SYNC_AS_IDLE_S);
    }

    mx_buf_free(&req->body);
    free(req);
    *ctx = NULL;
}


/*
 * The path and the parameters as sent: a transaction ID is decoded by
 * mxj_sync_as_route (so that "%2F" stays in it, not a '/' of the path),
 * the access_token by mxj_sync_as_tokens.
 */

static size_t
mxj_sync_as_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    return strlen(s);
}


static void
mxj_sync_as_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char    line[512];
    size_t  n;

    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);

    while (n > 0 && line[n - 1] == '\n') {
        line[--n] = '\0';
    }

    mxj_sync_log("appservice: libmicrohttpd: %s", line);
}
