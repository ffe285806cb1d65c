/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: the Application Service side (docs/sync.md,
 * "Pushed changes"). The registration the operator gives the homeserver,
 * and a listener for PUT /_matrix/app/v1/transactions/{txnId}: an
 * auth-relevant state event of a managed room marks the room stale at
 * once (the module sends its requests to the fallback) and wakes the
 * passes for it.
 *
 * The listener is a small HTTP/1.1 server on a blocking socket in its own
 * thread: one connection at a time, answered and closed ("Connection:
 * close"), the head at most 16 KiB, the body at most 1 MiB, each
 * connection given 10 s in all and 2 s between reads; what cannot start
 * a request line is refused at its first byte. The homeserver is its only
 * client.
 */

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <sodium.h>

#include "ctl_sync_run.h"
#include "mx_json.h"


#define MXJ_SYNC_AS_BODY_MAX    (1024 * 1024)
#define MXJ_SYNC_AS_HEAD_MAX    16384
#define MXJ_SYNC_AS_CONN_MS     10000   /* a connection in all */
#define MXJ_SYNC_AS_IDLE_MS     2000    /* and between two reads */
#define MXJ_SYNC_AS_POLL_MS     200
#define MXJ_SYNC_AS_TXNS        1024    /* transaction IDs remembered */


typedef struct {
    mxj_sync_t     *s;
    mxj_redis_t     r;                  /* the listener's own connection */
    char           *txns[MXJ_SYNC_AS_TXNS];
    size_t          next_txn;
} mxj_sync_as_t;


/* KEYS: meta. Only an existing meta: its existence means "room known". */
static const char  mxj_sync_as_stale_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  redis.call('HSET', KEYS[1], 'stale', '1')\n"
    "  return 1\n"
    "end\n"
    "return 0\n";


static void *mxj_sync_as_thread(void *data);
static void mxj_sync_as_conn(mxj_sync_as_t *as, int fd);
static int mxj_sync_as_read(int fd, char *buf, size_t cap, size_t *len,
    int64_t deadline);
static void mxj_sync_as_answer(int fd, int status, const char *body);
static void mxj_sync_as_close(int fd);
static int mxj_sync_as_transaction(mxj_sync_as_t *as, const char *txn,
    const char *body, size_t len, int *status, const char **answer);
static int mxj_sync_as_seen(mxj_sync_as_t *as, const char *txn);
static int mxj_sync_as_mark(mxj_sync_as_t *as, const char *room_id,
    const json_t *ev, const char *txn);


/* --- the registration -------------------------------------------------- */

/*
 * Written before the first pass (its rooms: the room IDs known then) and
 * again when they change. The tokens of a registration written before
 * are kept: the homeserver has them.
 */

int
mxj_sync_as_register(mxj_sync_t *s)
{
    int             fd, same;
    char           *text, *tmp;
    FILE           *f;
    size_t          i, n, len;
    mx_buf_t        out = MX_BUF_INIT;
    struct stat     st;
    unsigned char   raw[32];
    mxj_sync_ids_t  ids;
    const char    **rooms;

    memset(&ids, 0, sizeof(mxj_sync_ids_t));

    for (i = 0; i < s->nrooms; i++) {
        if (s->rooms[i].id == NULL) {
            continue;
        }

        for (n = 0; n < ids.n; n++) {
            if (strcmp(ids.v[n], s->rooms[i].id) == 0) {
                break;
            }
        }

        if (n == ids.n && mxj_sync_ids_push(&ids, s->rooms[i].id) != 0) {
            goto nomem;
        }
    }

    if (s->as_token[0] != '\0') {
        same = (s->registered.n > 0 || ids.n == 0)
               && mxj_sync_ids_same(&ids, &s->registered);

        if (same) {
            mxj_sync_ids_free(&ids);
            return 0;
        }

    } else {
        /* the tokens: the file's, or new ones */

        f = fopen(s->registration, "rb");

        if (f != NULL && fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)
            && st.st_size < 65536)
        {
            text = malloc((size_t) st.st_size + 1);

            if (text != NULL) {
                len = fread(text, 1, (size_t) st.st_size, f);

                if (mxj_sync_registration_tokens(text, len, s->as_token,
                                                 s->hs_token) != 0)
                {
                    s->as_token[0] = '\0';
                    s->hs_token[0] = '\0';
                }

                free(text);
            }
        }

        if (f != NULL) {
            fclose(f);
        }

        if (s->as_token[0] == '\0') {
            randombytes_buf(raw, sizeof(raw));
            sodium_bin2hex(s->as_token, sizeof(s->as_token), raw,
                           sizeof(raw));
            randombytes_buf(raw, sizeof(raw));
            sodium_bin2hex(s->hs_token, sizeof(s->hs_token), raw,
                           sizeof(raw));
            sodium_memzero(raw, sizeof(raw));

        } else {
            mxj_sync_log("the registration %s exists: its tokens are kept",
                         s->registration);
        }
    }

    rooms = (const char **) ids.v;

    if (mxj_sync_registration(&out, s->as_url, s->as_token, s->hs_token,
                              rooms, ids.n) != 0)
    {
        goto nomem;
    }

    /* written whole, readable by us alone (it holds the tokens) */

    n = strlen(s->registration) + 8;
    tmp = malloc(n);
    if (tmp == NULL) {
        goto nomem;
    }

    snprintf(tmp, n, "%s.tmp", s->registration);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd < 0 || write(fd, out.data, out.len) != (ssize_t) out.len
        || fsync(fd) != 0 || close(fd) != 0
        || rename(tmp, s->registration) != 0)
    {
        fprintf(stderr, "matrix-join-ctl: %s: cannot write: %s\n", tmp,
                strerror(errno));

        if (fd >= 0) {
            close(fd);
        }

        unlink(tmp);
        free(tmp);
        mx_buf_free(&out);
        mxj_sync_ids_free(&ids);
        return -1;
    }

    free(tmp);
    mx_buf_free(&out);

    mxj_sync_log("wrote the application service registration %s (%zu room%s%s)"
                 ": the homeserver reads it at start "
                 "(app_service_config_files)", s->registration, ids.n,
                 ids.n == 1 ? "" : "s", s->registered.n ? ", changed" : "");

    mxj_sync_ids_free(&s->registered);
    s->registered = ids;

    return 0;

nomem:

    mx_buf_free(&out);
    mxj_sync_ids_free(&ids);
    fprintf(stderr, "matrix-join-ctl: out of memory\n");

    return -1;
}


/* --- the listener ------------------------------------------------------ */

int
mxj_sync_as_bind(mxj_sync_t *s)
{
    int               fd, on, rc;
    char              host[256];
    size_t            n;
    const char       *colon, *a, *port;
    struct addrinfo   hints, *res, *ai;

    a = s->as_listen;
    colon = strrchr(a, ':');

    if (colon == NULL || colon == a || colon[1] == '\0') {
        fprintf(stderr, "matrix-join-ctl: sync: invalid --appservice-listen "
                "\"%s\" (want HOST:PORT)\n", a);
        return -1;
    }

    port = colon + 1;
    n = (size_t) (colon - a);

    if (a[0] == '[' && n >= 2 && a[n - 1] == ']') {
        a++;
        n -= 2;
    }

    if (n >= sizeof(host)) {
        fprintf(stderr, "matrix-join-ctl: sync: host too long in "
                "--appservice-listen\n");
        return -1;
    }

    memcpy(host, a, n);
    host[n] = '\0';

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;

    rc = getaddrinfo(host, port, &hints, &res);

    if (rc != 0) {
        fprintf(stderr, "matrix-join-ctl: sync: --appservice-listen "
                "\"%s\": %s\n", s->as_listen, gai_strerror(rc));
        return -1;
    }

    fd = -1;

    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);

        if (fd < 0) {
            continue;
        }

        on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));

        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0
            && listen(fd, 64) == 0)
        {
            break;
        }

        close(fd);
        fd = -1;
    }

    rc = errno;
    freeaddrinfo(res);

    if (fd < 0) {
        fprintf(stderr, "matrix-join-ctl: sync: cannot listen on %s: %s\n",
                s->as_listen, strerror(rc));
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


int
mxj_sync_as_start(mxj_sync_t *s)
{
    mxj_sync_as_t  *as;

    as = calloc(1, sizeof(mxj_sync_as_t));
    if (as == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    as->s = s;
    as->r = s->r;
    as->r.c = NULL;

    if (pthread_create(&s->as_tid, NULL, mxj_sync_as_thread, as) != 0) {
        free(as);
        fprintf(stderr, "matrix-join-ctl: cannot start a thread\n");
        return -1;
    }

    s->as_started = 1;

    mxj_sync_log("application service listening on %s", s->as_listen);

    return 0;
}


void
mxj_sync_as_stop(mxj_sync_t *s)
{
    if (s->as_started) {
        pthread_join(s->as_tid, NULL);
        s->as_started = 0;
    }

    if (s->as_fd >= 0) {
        close(s->as_fd);
        s->as_fd = -1;
    }
}


static void *
mxj_sync_as_thread(void *data)
{
    int             fd, rc;
    size_t          i;
    struct pollfd   pfd;
    mxj_sync_as_t  *as = data;

    while (!mxj_run_stopping(&as->s->run)) {
        pfd.fd = as->s->as_fd;
        pfd.events = POLLIN;
        pfd.revents = 0;

        rc = poll(&pfd, 1, MXJ_SYNC_AS_POLL_MS);

        if (rc <= 0) {
            continue;
        }

        fd = accept(as->s->as_fd, NULL, NULL);

        if (fd < 0) {
            continue;
        }

        (void) fcntl(fd, F_SETFD, FD_CLOEXEC);

        mxj_sync_as_conn(as, fd);
    }

    mxj_redis_close(&as->r);

    for (i = 0; i < MXJ_SYNC_AS_TXNS; i++) {
        free(as->txns[i]);
    }

    free(as);

    return NULL;
}


static void
mxj_sync_as_conn(mxj_sync_as_t *as, int fd)
{
    int                   rc, status;
    char                 *buf, txn[MXJ_SYNC_TXN_MAX + 1];
    char                  token[MXJ_SYNC_TOKEN_MAX + 1], answer[256];
    size_t                len, want;
    int64_t               deadline;
    const char           *why, *body;
    struct timeval        tv;
    mxj_sync_http_req_t   req;

    deadline = mxj_run_mono_ms() + MXJ_SYNC_AS_CONN_MS;

    tv.tv_sec = 1;
    tv.tv_usec = 0;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    buf = malloc(MXJ_SYNC_AS_HEAD_MAX + MXJ_SYNC_AS_BODY_MAX + 1);
    if (buf == NULL) {
        mxj_sync_as_answer(fd, 500, "{\"errcode\":\"M_UNKNOWN\","
                           "\"error\":\"out of memory\"}");
        mxj_sync_as_close(fd);
        return;
    }

    /* the head */

    len = 0;

    for ( ;; ) {
        rc = mxj_sync_http_parse(buf, len, &req, &why);

        if (rc == 0) {
            break;
        }

        if (rc < 0) {
            snprintf(answer, sizeof(answer), "{\"errcode\":\"M_UNKNOWN\","
                     "\"error\":\"%s\"}", why);
            mxj_sync_as_answer(fd, 400, answer);
            goto done;
        }

        if (mxj_sync_as_read(fd, buf, MXJ_SYNC_AS_HEAD_MAX, &len, deadline)
            != 0)
        {
            goto done;          /* gone, silent or too slow: no answer */
        }
    }

    if (req.transfer_encoding) {
        mxj_sync_as_answer(fd, 411, "{\"errcode\":\"M_UNKNOWN\",\"error\":"
                           "\"a body needs a Content-Length\"}");
        goto done;
    }

    if (req.content_length > MXJ_SYNC_AS_BODY_MAX) {
        mxj_sync_as_answer(fd, 413, "{\"errcode\":\"M_TOO_LARGE\","
                           "\"error\":\"the body is over 1 MiB\"}");
        goto done;
    }

    /* the body */

    want = req.head_len + (req.content_length > 0
                           ? (size_t) req.content_length : 0);

    if (req.expect_continue && len < want && !req.http10) {
        if (write(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 25) {
            goto done;
        }
    }

    while (len < want) {
        if (mxj_sync_as_read(fd, buf, want, &len, deadline) != 0) {
            goto done;
        }
    }

    body = buf + req.head_len;
    buf[want] = '\0';

    switch (mxj_sync_as_route(&req, txn, token)) {

    case MXJ_SYNC_AS_UNKNOWN:
        mxj_sync_as_answer(fd, 404, "{\"errcode\":\"M_UNRECOGNIZED\","
                           "\"error\":\"Unrecognized request\"}");
        goto done;

    case MXJ_SYNC_AS_BAD_METHOD:
        mxj_sync_as_answer(fd, 405, "{\"errcode\":\"M_UNRECOGNIZED\","
                           "\"error\":\"Unrecognized request\"}");
        goto done;

    default:
        break;
    }

    if (token[0] == '\0') {
        mxj_sync_as_answer(fd, 401, "{\"errcode\":\"M_UNAUTHORIZED\","
                           "\"error\":\"no hs_token\"}");
        goto done;
    }

    if (strlen(token) != strlen(as->s->hs_token)
        || sodium_memcmp(token, as->s->hs_token, strlen(token)) != 0)
    {
        mxj_sync_log("appservice: a request with a wrong hs_token refused");
        mxj_sync_as_answer(fd, 403, "{\"errcode\":\"M_FORBIDDEN\","
                           "\"error\":\"wrong hs_token\"}");
        goto done;
    }

    if (txn[0] == '\0') {
        mxj_sync_as_answer(fd, 200, "{}");      /* the ping */
        goto done;
    }

    status = 200;
    body = (mxj_sync_as_transaction(as, txn, body, want - req.head_len,
                                    &status, &why) == 0) ? "{}" : why;

    mxj_sync_as_answer(fd, status, body);

done:

    free(buf);
    mxj_sync_as_close(fd);
}


/* Reads more into buf[*len..cap); -1 when closed, failed or too late. */

static int
mxj_sync_as_read(int fd, char *buf, size_t cap, size_t *len,
    int64_t deadline)
{
    int            rc;
    ssize_t        n;
    int64_t        left;
    struct pollfd  pfd;

    for ( ;; ) {
        left = deadline - mxj_run_mono_ms();

        if (left <= 0) {
            return -1;
        }

        if (left > MXJ_SYNC_AS_IDLE_MS) {
            left = MXJ_SYNC_AS_IDLE_MS;
        }

        pfd.fd = fd;
        pfd.events = POLLIN;
        pfd.revents = 0;

        rc = poll(&pfd, 1, (int) left);

        if (rc < 0 && errno == EINTR) {
            continue;
        }

        if (rc <= 0) {
            return -1;
        }

        n = read(fd, buf + *len, cap - *len);

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            return -1;
        }

        *len += (size_t) n;

        return 0;
    }
}


static void
mxj_sync_as_answer(int fd, int status, const char *body)
{
    int          n;
    char         head[256];
    size_t       len;
    const char  *reason;

    switch (status) {
    case 200: reason = "OK"; break;
    case 400: reason = "Bad Request"; break;
    case 401: reason = "Unauthorized"; break;
    case 403: reason = "Forbidden"; break;
    case 404: reason = "Not Found"; break;
    case 405: reason = "Method Not Allowed"; break;
    case 411: reason = "Length Required"; break;
    case 413: reason = "Payload Too Large"; break;
    default: reason = "Internal Server Error"; break;
    }

    len = strlen(body);

    n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n\r\n", status, reason, len);

    /* a client gone by now has nothing more to be told */

    if (write(fd, head, n) != n || len == 0) {
        return;
    }

    if (write(fd, body, len) != (ssize_t) len) {
        return;
    }
}


/*
 * The answer is out; what the client still sends is read and dropped for
 * a moment, so that closing does not reset the connection under it.
 */

static void
mxj_sync_as_close(int fd)
{
    char           drop[4096];
    int64_t        until;
    struct pollfd  pfd;

    shutdown(fd, SHUT_WR);
    until = mxj_run_mono_ms() + 200;

    while (mxj_run_mono_ms() < until) {
        pfd.fd = fd;
        pfd.events = POLLIN;
        pfd.revents = 0;

        if (poll(&pfd, 1, 50) <= 0) {
            break;
        }

        if (read(fd, drop, sizeof(drop)) <= 0) {
            break;
        }
    }

    close(fd);
}


/* --- transactions ------------------------------------------------------ */

static int
mxj_sync_as_transaction(mxj_sync_as_t *as, const char *txn,
    const char *body, size_t len, int *status, const char **answer)
{
    size_t        i;
    json_t       *doc, *events, *ev;
    mx_err_t      err;
    const char   *room_id;

    if (mxj_sync_as_seen(as, txn)) {
        return 0;               /* answered {} again, nothing done twice */
    }

    doc = mx_json_parse(body, len, 0, &err);

    if (doc == NULL) {
        *status = 400;
        *answer = "{\"errcode\":\"M_NOT_JSON\",\"error\":\"Content not "
                  "JSON.\"}";
        return -1;
    }

    events = json_object_get(doc, "events");

    if (!json_is_object(doc) || (events != NULL && !json_is_array(events)))
    {
        json_decref(doc);
        *status = 400;
        *answer = "{\"errcode\":\"M_BAD_JSON\",\"error\":\"want "
                  "{\\\"events\\\": [...]}\"}";
        return -1;
    }

    for (i = 0; i < json_array_size(events); i++) {
        ev = json_array_get(events, i);
        room_id = json_string_value(json_object_get(ev, "room_id"));

        if (room_id == NULL || !mxj_sync_auth_relevant(ev)) {
            continue;
        }

        if (mxj_sync_as_mark(as, room_id, ev, txn) != 0) {
            json_decref(doc);
            *status = 500;
            *answer = "{\"errcode\":\"M_UNKNOWN\",\"error\":\"Redis is "
                      "unavailable\"}";
            return -1;
        }
    }

    json_decref(doc);

    /* remembered once done: a transaction that failed comes again */

    i = as->next_txn++ % MXJ_SYNC_AS_TXNS;
    free(as->txns[i]);
    as->txns[i] = strdup(txn);

    return 0;
}


static int
mxj_sync_as_seen(mxj_sync_as_t *as, const char *txn)
{
    size_t  i;

    for (i = 0; i < MXJ_SYNC_AS_TXNS; i++) {
        if (as->txns[i] != NULL && strcmp(as->txns[i], txn) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * An auth-relevant event of a managed room: the push counted (so that a
 * pass under way knows its snapshot may predate it), the room's snapshot
 * marked stale, the passes woken for it. -1 when Redis failed.
 */

static int
mxj_sync_as_mark(mxj_sync_as_t *as, const char *room_id, const json_t *ev,
    const char *txn)
{
    int               found;
    char             *key;
    size_t            i;
    redisReply       *reply;
    const char       *m;
    mxj_sync_t       *s;

    s = as->s;
    found = 0;

    pthread_mutex_lock(&s->run.mutex);

    for (i = 0; i < s->nrooms; i++) {
        if (s->rooms[i].id != NULL && strcmp(s->rooms[i].id, room_id) == 0)
        {
            s->rooms[i].pushes++;
            found = 1;
        }
    }

    pthread_mutex_unlock(&s->run.mutex);

    if (!found) {
        return 0;
    }

    if (as->r.c == NULL || as->r.c->err) {
        mxj_redis_close(&as->r);

        if (mxj_redis_connect(&as->r) != 0) {
            return -1;
        }
    }

    key = mxj_room_key(&as->r, room_id, MX_KEY_META);
    if (key == NULL) {
        return -1;
    }

    reply = mxj_redis_cmdf(&as->r, "EVAL %s 1 %s", mxj_sync_as_stale_lua,
                           key);
    free(key);

    if (reply == NULL) {
        return -1;
    }

    freeReplyObject(reply);

    pthread_mutex_lock(&s->run.mutex);

    for (i = 0; i < s->nrooms; i++) {
        if (s->rooms[i].id != NULL && strcmp(s->rooms[i].id, room_id) == 0)
        {
            s->rooms[i].dirty = 1;
        }
    }

    pthread_cond_broadcast(&s->run.cond);
    pthread_mutex_unlock(&s->run.mutex);

    m = json_string_value(json_object_get(json_object_get(ev, "content"),
                                          "membership"));

    mxj_sync_log("appservice: txn=%s room=%s %s%s%s %s: marked stale, a "
                 "pass started", txn, room_id,
                 json_string_value(json_object_get(ev, "type")),
                 m ? " " : "", m ? m : "",
                 json_string_value(json_object_get(ev, "state_key")));

    return 0;
}
