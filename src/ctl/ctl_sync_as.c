/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: the Application Service side (docs/sync.md,
 * "Pushed changes"). The registration the operator gives the homeserver
 * (YAML, by libyaml), and the worker that acts on the transactions the
 * listener (ctl_sync_as_http.c) answered and queued: a state event of a
 * managed room marks the room stale (the module sends its requests to
 * the fallback) and wakes the passes for it; another event is queued for
 * the per-event advance (ctl_sync_live.c).
 *
 * The worker is a thread of its own, so that a mark never waits for a
 * pass under way, and the answer to the homeserver never waits for
 * Redis. A room the worker could not mark (the queue was full, Redis
 * failed) is kept in s->as->lost and marked again until it is.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <sodium.h>
#include <yaml.h>

#include "ctl_sync_as.h"
#include "mx_lua.h"
#include "mx_schema.h"


#define MXJ_SYNC_AS_WAIT_MS     200     /* the worker checks for a stop */
#define MXJ_SYNC_AS_RETRY_MS    500     /* a room Redis failed to mark */
#define MXJ_SYNC_AS_REG_MAX     65536   /* a registration read back */


static int mxj_sync_as_registration(mx_buf_t *out, mxj_sync_t *s,
    const char *const *rooms, size_t nrooms);
static int mxj_sync_as_emit_pair(yaml_emitter_t *e, const char *key,
    const char *value, yaml_scalar_style_t style);
static int mxj_sync_as_emit_scalar(yaml_emitter_t *e, const char *value,
    yaml_scalar_style_t style);
static int mxj_sync_as_yaml_write(void *data, unsigned char *buf,
    size_t size);
static int mxj_sync_as_tokens_read(const char *text, size_t len, char *as,
    char *hs);
static int mxj_sync_as_token_ok(const char *t, size_t n);
static void *mxj_sync_as_thread(void *data);
static void mxj_sync_as_apply(mxj_sync_as_t *as, mxj_sync_as_item_t *item);
static int mxj_sync_as_live(mxj_sync_as_t *as, mxj_sync_ids_t *batch,
    const char *room_id, const char *id, int gate);
static void mxj_sync_as_live_queue(mxj_sync_as_t *as,
    mxj_sync_ids_t *batch);
static int mxj_sync_as_mark(mxj_sync_as_t *as, const char *room_id,
    const char *why, const char *id);
static int mxj_sync_as_script(mxj_sync_as_t *as, const char *room_id,
    const char *id, const char *why, int gate);
static void mxj_sync_as_wake(mxj_sync_as_t *as, const char *room_id);


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
            && st.st_size < MXJ_SYNC_AS_REG_MAX)
        {
            text = malloc((size_t) st.st_size + 1);

            if (text != NULL) {
                len = fread(text, 1, (size_t) st.st_size, f);

                if (mxj_sync_as_tokens_read(text, len, s->as_token,
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

    if (mxj_sync_as_registration(&out, s, rooms, ids.n) != 0) {
        goto nomem;
    }

    /* written whole, readable by us alone (it holds the tokens) */

    n = strlen(s->registration) + 8;
    tmp = malloc(n);
    if (tmp == NULL) {
        goto nomem;
    }

    snprintf(tmp, n, "%s.tmp", s->registration);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

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


/*
 * The registration: id, url, as_token, hs_token, sender_localpart,
 * rate_limited false, namespaces (users and aliases empty, one
 * non-exclusive regex per room ID: every event of those rooms is pushed).
 * A comment first; then one YAML document by libyaml's emitter.
 */

static int
mxj_sync_as_registration(mx_buf_t *out, mxj_sync_t *s,
    const char *const *rooms, size_t nrooms)
{
    int              ok;
    size_t           i;
    mx_buf_t         re = MX_BUF_INIT;
    yaml_event_t     ev;
    yaml_emitter_t   e;

    if (mx_buf_append_str(out,
            "# Written by matrix-join-ctl sync: add this file to the "
            "homeserver's\n"
            "# app_service_config_files. sync keeps the tokens when it "
            "writes it again.\n") != 0)
    {
        return -1;
    }

    if (!yaml_emitter_initialize(&e)) {
        return -1;
    }

    yaml_emitter_set_output(&e, mxj_sync_as_yaml_write, out);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);        /* a long regex on one line */

#define MXJ_EMIT(init)  (init && yaml_emitter_emit(&e, &ev))

    ok = MXJ_EMIT(yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING))
         && MXJ_EMIT(yaml_document_start_event_initialize(&ev, NULL, NULL,
                                                          NULL, 1))
         && MXJ_EMIT(yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                    YAML_BLOCK_MAPPING_STYLE))
         && mxj_sync_as_emit_pair(&e, "id", MXJ_SYNC_AS_ID,
                                  YAML_PLAIN_SCALAR_STYLE) == 0
         && mxj_sync_as_emit_pair(&e, "url", s->as_url,
                                  YAML_SINGLE_QUOTED_SCALAR_STYLE) == 0
         && mxj_sync_as_emit_pair(&e, "as_token", s->as_token,
                                  YAML_SINGLE_QUOTED_SCALAR_STYLE) == 0
         && mxj_sync_as_emit_pair(&e, "hs_token", s->hs_token,
                                  YAML_SINGLE_QUOTED_SCALAR_STYLE) == 0
         && mxj_sync_as_emit_pair(&e, "sender_localpart", MXJ_SYNC_LOCALPART,
                                  YAML_PLAIN_SCALAR_STYLE) == 0
         && mxj_sync_as_emit_pair(&e, "rate_limited", "false",
                                  YAML_PLAIN_SCALAR_STYLE) == 0
         && mxj_sync_as_emit_scalar(&e, "namespaces",
                                    YAML_PLAIN_SCALAR_STYLE) == 0
         && MXJ_EMIT(yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                    YAML_BLOCK_MAPPING_STYLE));

    /* users: [] and aliases: [] */

    for (i = 0; ok && i < 2; i++) {
        ok = mxj_sync_as_emit_scalar(&e, i == 0 ? "users" : "aliases",
                                     YAML_PLAIN_SCALAR_STYLE) == 0
             && MXJ_EMIT(yaml_sequence_start_event_initialize(&ev, NULL,
                             NULL, 1, YAML_FLOW_SEQUENCE_STYLE))
             && MXJ_EMIT(yaml_sequence_end_event_initialize(&ev));
    }

    ok = ok && mxj_sync_as_emit_scalar(&e, "rooms",
                                       YAML_PLAIN_SCALAR_STYLE) == 0
         && MXJ_EMIT(yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                         nrooms ? YAML_BLOCK_SEQUENCE_STYLE
                                : YAML_FLOW_SEQUENCE_STYLE));

    for (i = 0; ok && i < nrooms; i++) {
        mx_buf_reset(&re);

        ok = mxj_sync_room_regex(&re, rooms[i]) == 0
             && MXJ_EMIT(yaml_mapping_start_event_initialize(&ev, NULL, NULL,
                             1, YAML_BLOCK_MAPPING_STYLE))
             && mxj_sync_as_emit_pair(&e, "exclusive", "false",
                                      YAML_PLAIN_SCALAR_STYLE) == 0
             && mxj_sync_as_emit_pair(&e, "regex", re.data,
                                      YAML_SINGLE_QUOTED_SCALAR_STYLE) == 0
             && MXJ_EMIT(yaml_mapping_end_event_initialize(&ev));
    }

    ok = ok && MXJ_EMIT(yaml_sequence_end_event_initialize(&ev))
         && MXJ_EMIT(yaml_mapping_end_event_initialize(&ev))
         && MXJ_EMIT(yaml_mapping_end_event_initialize(&ev))
         && MXJ_EMIT(yaml_document_end_event_initialize(&ev, 1))
         && MXJ_EMIT(yaml_stream_end_event_initialize(&ev))
         && yaml_emitter_flush(&e);

#undef MXJ_EMIT

    if (!ok && e.error != YAML_NO_ERROR) {
        mxj_sync_log("the registration: libyaml: %s",
                     e.problem ? e.problem : "an error");
    }

    yaml_emitter_delete(&e);
    mx_buf_free(&re);

    return ok ? 0 : -1;
}


static int
mxj_sync_as_emit_pair(yaml_emitter_t *e, const char *key, const char *value,
    yaml_scalar_style_t style)
{
    if (mxj_sync_as_emit_scalar(e, key, YAML_PLAIN_SCALAR_STYLE) != 0) {
        return -1;
    }

    return mxj_sync_as_emit_scalar(e, value, style);
}


static int
mxj_sync_as_emit_scalar(yaml_emitter_t *e, const char *value,
    yaml_scalar_style_t style)
{
    yaml_event_t  ev;

    if (!yaml_scalar_event_initialize(&ev, NULL, NULL,
                                      (yaml_char_t *) value,
                                      (int) strlen(value), 1, 1, style))
    {
        return -1;
    }

    return yaml_emitter_emit(e, &ev) ? 0 : -1;
}


static int
mxj_sync_as_yaml_write(void *data, unsigned char *buf, size_t size)
{
    return mx_buf_append(data, (const char *) buf, size) == 0;
}


/*
 * The as_token and hs_token of a registration written before (so that a
 * restart keeps the tokens the homeserver knows): the scalars of those
 * keys of the top-level mapping, by libyaml's parser. 0 when both were
 * found, and well-formed; -1 otherwise.
 */

static int
mxj_sync_as_tokens_read(const char *text, size_t len, char *as, char *hs)
{
    int             depth, got, done, key;
    char           *want;
    size_t          n;
    yaml_event_t    ev;
    yaml_parser_t   p;

    if (!yaml_parser_initialize(&p)) {
        return -1;
    }

    yaml_parser_set_input_string(&p, (const unsigned char *) text, len);

    depth = 0;
    got = 0;
    done = 0;
    key = 1;            /* at depth 1: a key comes next */
    want = NULL;

    while (!done) {
        if (!yaml_parser_parse(&p, &ev)) {
            break;
        }

        switch (ev.type) {

        case YAML_STREAM_END_EVENT:
            done = 1;
            break;

        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            if (depth == 1) {
                key = 1;        /* a nested value: the next is a key */
                want = NULL;
            }

            depth++;
            break;

        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            depth--;
            break;

        case YAML_SCALAR_EVENT:
            if (depth != 1) {
                break;
            }

            n = ev.data.scalar.length;

            if (key) {
                want = NULL;

                if (n == 8 && memcmp(ev.data.scalar.value, "as_token", 8)
                              == 0)
                {
                    want = as;

                } else if (n == 8 && memcmp(ev.data.scalar.value,
                                            "hs_token", 8) == 0)
                {
                    want = hs;
                }

                key = 0;
                break;
            }

            if (want != NULL
                && mxj_sync_as_token_ok((const char *) ev.data.scalar.value,
                                        n))
            {
                memcpy(want, ev.data.scalar.value, n);
                want[n] = '\0';
                got |= (want == as) ? 1 : 2;
            }

            want = NULL;
            key = 1;
            break;

        default:
            break;
        }

        yaml_event_delete(&ev);
    }

    yaml_parser_delete(&p);

    return (done && got == 3) ? 0 : -1;
}


/* A token as sync writes them: printable ASCII, no quotes or spaces. */

static int
mxj_sync_as_token_ok(const char *t, size_t n)
{
    size_t  i;

    if (n == 0 || n > MXJ_SYNC_TOKEN_MAX) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (t[i] <= 0x20 || t[i] >= 0x7f || t[i] == '\'' || t[i] == '"') {
            return 0;
        }
    }

    return 1;
}


/* --- start and stop ---------------------------------------------------- */

int
mxj_sync_as_start(mxj_sync_t *s)
{
    mxj_sync_as_t  *as;

    as = calloc(1, sizeof(mxj_sync_as_t));
    if (as == NULL) {
        goto nomem;
    }

    as->lost = calloc(s->nrooms ? s->nrooms : 1, 1);
    if (as->lost == NULL) {
        free(as);
        goto nomem;
    }

    as->s = s;
    mxj_redis_copy(&as->r, &s->r);
    pthread_mutex_init(&as->mutex, NULL);
    pthread_cond_init(&as->cond, NULL);

    crypto_generichash(as->hs_hash, sizeof(as->hs_hash),
                       (const unsigned char *) s->hs_token,
                       strlen(s->hs_token), NULL, 0);

    s->as = as;

    if (pthread_create(&as->tid, NULL, mxj_sync_as_thread, as) != 0) {
        fprintf(stderr, "matrix-join-ctl: cannot start a thread\n");
        return -1;
    }

    as->started = 1;

    if (mxj_sync_as_listen(as) != 0) {
        return -1;
    }

    mxj_sync_log("application service listening on %s", s->as_listen);

    return 0;

nomem:

    fprintf(stderr, "matrix-join-ctl: out of memory\n");
    return -1;
}


/*
 * The listener first (nothing more is queued), then the worker, which
 * finishes the item at hand. Transactions still queued were answered:
 * they are logged, and the first pass of the next start covers them.
 */

void
mxj_sync_as_stop(mxj_sync_t *s)
{
    size_t               n;
    mxj_sync_as_t       *as;
    mxj_sync_as_item_t  *item, *next;

    as = s->as;

    if (as == NULL) {
        if (s->as_fd >= 0) {
            close(s->as_fd);
            s->as_fd = -1;
        }

        return;
    }

    mxj_sync_as_unlisten(as);

    if (as->started) {
        pthread_mutex_lock(&as->mutex);
        as->stop = 1;
        pthread_cond_broadcast(&as->cond);
        pthread_mutex_unlock(&as->mutex);

        pthread_join(as->tid, NULL);
    }

    n = 0;

    for (item = as->head; item != NULL; item = next) {
        next = item->next;
        mxj_sync_as_item_free(item);
        n++;
    }

    if (n > 0 || as->any_lost) {
        mxj_sync_log("appservice: stopped with %zu transaction%s queued%s: "
                     "the first pass of the next start covers them", n,
                     n == 1 ? "" : "s",
                     as->any_lost ? " and rooms not yet marked stale" : "");
    }

    mxj_redis_close(&as->r);
    mxj_sync_txns_free(&as->txns);
    pthread_cond_destroy(&as->cond);
    pthread_mutex_destroy(&as->mutex);
    sodium_memzero(as->hs_hash, sizeof(as->hs_hash));
    free(as->lost);
    free(as);
    s->as = NULL;

    if (s->as_fd >= 0) {
        close(s->as_fd);
        s->as_fd = -1;
    }
}


/* --- the queue --------------------------------------------------------- */

void
mxj_sync_as_queue(mxj_sync_as_t *as, mxj_sync_as_item_t *item)
{
    size_t        i, nrooms;
    ssize_t       k;
    json_t       *ev;
    const char   *room_id;

    pthread_mutex_lock(&as->mutex);

    if (as->queued < MXJ_SYNC_AS_QUEUE_MAX
        && as->queued_bytes + item->bytes <= MXJ_SYNC_AS_QUEUE_BYTES)
    {
        item->next = NULL;

        if (as->tail != NULL) {
            as->tail->next = item;

        } else {
            as->head = item;
        }

        as->tail = item;
        as->queued++;
        as->queued_bytes += item->bytes;

        pthread_cond_broadcast(&as->cond);
        pthread_mutex_unlock(&as->mutex);

        return;
    }

    /* full: its rooms marked stale and synced without it */

    as->overflows++;
    pthread_mutex_unlock(&as->mutex);

    nrooms = 0;

    json_array_foreach(item->events, i, ev) {
        room_id = json_string_value(json_object_get(ev, "room_id"));
        k = room_id ? mxj_sync_as_room(as->s, room_id) : -1;

        if (k < 0) {
            continue;
        }

        pthread_mutex_lock(&as->mutex);
        nrooms += !as->lost[k];
        as->lost[k] = 1;
        as->any_lost = 1;
        pthread_mutex_unlock(&as->mutex);
    }

    pthread_mutex_lock(&as->mutex);
    pthread_cond_broadcast(&as->cond);
    pthread_mutex_unlock(&as->mutex);

    mxj_sync_log("appservice: txn=%s not queued (the queue is full: %d "
                 "transactions or %d MiB): its %zu event%s not looked at, "
                 "%zu more room%s marked stale and synced instead",
                 item->txn, MXJ_SYNC_AS_QUEUE_MAX,
                 MXJ_SYNC_AS_QUEUE_BYTES / (1024 * 1024),
                 json_array_size(item->events),
                 json_array_size(item->events) == 1 ? "" : "s", nrooms,
                 nrooms == 1 ? "" : "s");

    mxj_sync_as_item_free(item);
}


void
mxj_sync_as_lose_all(mxj_sync_as_t *as, const char *txn, const char *why)
{
    size_t  i;

    pthread_mutex_lock(&as->mutex);

    for (i = 0; i < as->s->nrooms; i++) {
        as->lost[i] = 1;
    }

    as->any_lost = 1;
    pthread_cond_broadcast(&as->cond);
    pthread_mutex_unlock(&as->mutex);

    mxj_sync_log("appservice: txn=%s %s: every room marked stale and "
                 "synced instead", txn, why);
}


ssize_t
mxj_sync_as_room(mxj_sync_t *s, const char *room_id)
{
    size_t   i;
    ssize_t  k;

    k = -1;

    pthread_mutex_lock(&s->run.mutex);

    for (i = 0; i < s->nrooms; i++) {
        if (s->rooms[i].id != NULL && strcmp(s->rooms[i].id, room_id) == 0)
        {
            k = (ssize_t) i;
            break;
        }
    }

    pthread_mutex_unlock(&s->run.mutex);

    return k;
}


void
mxj_sync_as_item_free(mxj_sync_as_item_t *item)
{
    if (item == NULL) {
        return;
    }

    free(item->txn);
    json_decref(item->events);
    free(item);
}


/* --- the worker -------------------------------------------------------- */

static void *
mxj_sync_as_thread(void *data)
{
    int                  failed;
    char                *room_id;
    size_t               i;
    int64_t              retry, now;
    mxj_sync_t          *s;
    mxj_sync_as_t       *as = data;
    struct timespec      ts;
    mxj_sync_as_item_t  *item;

    s = as->s;
    retry = 0;

    pthread_mutex_lock(&as->mutex);

    while (!as->stop) {
        now = mxj_run_mono_ms();

        if (as->head == NULL && !(as->any_lost && now >= retry)) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += MXJ_SYNC_AS_WAIT_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&as->cond, &as->mutex, &ts);
            continue;
        }

        item = as->head;

        if (item != NULL) {
            as->head = item->next;

            if (as->head == NULL) {
                as->tail = NULL;
            }

            as->queued--;
            as->queued_bytes -= item->bytes;
            pthread_mutex_unlock(&as->mutex);

            mxj_sync_as_apply(as, item);
            mxj_sync_as_item_free(item);

            pthread_mutex_lock(&as->mutex);
            continue;
        }

        /* the rooms to mark without an item */

        as->any_lost = 0;
        retry = 0;

        for (i = 0; i < s->nrooms; i++) {
            if (!as->lost[i]) {
                continue;
            }

            as->lost[i] = 0;
            pthread_mutex_unlock(&as->mutex);

            pthread_mutex_lock(&s->run.mutex);
            room_id = s->rooms[i].id ? strdup(s->rooms[i].id) : NULL;
            pthread_mutex_unlock(&s->run.mutex);

            failed = (room_id != NULL
                      && mxj_sync_as_mark(as, room_id, "pushes not looked "
                                          "at", NULL) != 0);

            if (room_id != NULL && !failed) {
                mxj_sync_log("appservice: room=%s marked stale, a pass "
                             "started (for pushes not looked at)", room_id);
            }

            free(room_id);

            pthread_mutex_lock(&as->mutex);

            if (failed) {
                as->lost[i] = 1;        /* again, a moment later */
                as->any_lost = 1;
                retry = mxj_run_mono_ms() + MXJ_SYNC_AS_RETRY_MS;
            }
        }
    }

    pthread_mutex_unlock(&as->mutex);

    return NULL;
}


/*
 * The events of a transaction, in order. A non-state event and a member
 * event are queued for the per-event advance (ctl_sync_live.c), the room
 * stale ("pushed") until applied when it was quiet, and always for a
 * member event (a ban or kick may refuse a user; an invite, unban or a
 * local user's join, who may authorise restricted joins, admit one: the
 * edge hands joins over until it has applied it, a few milliseconds).
 * Another state event (or a redaction, which may change a state event)
 * marks its room stale and starts a pass.
 */

static void
mxj_sync_as_apply(mxj_sync_as_t *as, mxj_sync_as_item_t *item)
{
    int              rc, member, gate;
    char             why[256];
    size_t           i;
    ssize_t          k;
    json_t          *ev;
    const char      *room_id, *m, *type, *id;
    mxj_sync_ids_t  *batch;

    batch = calloc(as->s->nrooms ? as->s->nrooms : 1,
                   sizeof(mxj_sync_ids_t));

    json_array_foreach(item->events, i, ev) {
        room_id = json_string_value(json_object_get(ev, "room_id"));
        type = json_string_value(json_object_get(ev, "type"));
        id = json_string_value(json_object_get(ev, "event_id"));

        if (room_id == NULL || type == NULL) {
            continue;
        }

        m = json_string_value(json_object_get(json_object_get(ev, "content"),
                                              "membership"));

        member = json_is_string(json_object_get(ev, "state_key"))
                 && strcmp(type, "m.room.member") == 0 && m != NULL;

        if (((!json_is_string(json_object_get(ev, "state_key"))
              && strcmp(type, "m.room.redaction") != 0) || member)
            && id != NULL)
        {
            gate = member;
            rc = (batch != NULL)
                 ? mxj_sync_as_live(as, batch, room_id, id, gate) : -1;

            if (rc >= 0) {
                if (member) {
                    mxj_sync_log("appservice: txn=%s room=%s m.room.member "
                                 "%s %s: to be applied in place%s",
                                 item->txn, room_id, m,
                                 json_string_value(json_object_get(ev,
                                     "state_key")),
                                 gate ? " (stale until then)" : "");
                }

                continue;
            }

            snprintf(why, sizeof(why), "pushed %.200s %.40s", type, id);

        } else {
            snprintf(why, sizeof(why), "pushed %.200s%s%.20s", type,
                     m ? " " : "", m ? m : "");

            rc = mxj_sync_as_mark(as, room_id, why, id);

            if (rc == 1) {
                mxj_sync_log("appservice: txn=%s room=%s %s %s: known "
                             "already (%s)", item->txn, room_id,
                             why + sizeof("pushed"),
                             json_string_value(json_object_get(ev,
                                                               "state_key")),
                             id);
                continue;
            }
        }

        if (rc != 0) {
            k = mxj_sync_as_room(as->s, room_id);

            mxj_sync_log("appservice: txn=%s room=%s %s: Redis failed, "
                         "the room is marked again until it is", item->txn,
                         room_id, why + sizeof("pushed"));

            if (k >= 0) {
                pthread_mutex_lock(&as->mutex);
                as->lost[k] = 1;
                as->any_lost = 1;
                pthread_mutex_unlock(&as->mutex);
            }

            continue;
        }

        mxj_sync_log("appservice: txn=%s room=%s %s %s: marked stale, a "
                     "pass started", item->txn, room_id,
                     why + sizeof("pushed"),
                     json_string_value(json_object_get(ev, "state_key")));
    }

    if (batch != NULL) {
        mxj_sync_as_live_queue(as, batch);
        free(batch);
    }
}


/*
 * An event of a managed room for the advance: counted in live_pending
 * and the room stale ("pushed", src/lua/live_push.lua; with gate, until
 * applied whatever came before, and counted as a push, so that a pass
 * under way whose snapshot may predate it does not clear the mark), its
 * ID put in the transaction's batch for its room (queued at once, so that
 * the advance sees a transaction whole). 0 when batched or the room is
 * not cached (nothing to follow); -1 when Redis failed: then the caller
 * marks the room stale for a pass.
 */

static int
mxj_sync_as_live(mxj_sync_as_t *as, mxj_sync_ids_t *batch,
    const char *room_id, const char *id, int gate)
{
    int      rc;
    ssize_t  k;

    k = mxj_sync_as_room(as->s, room_id);
    if (k < 0) {
        return 0;
    }

    if (gate) {
        pthread_mutex_lock(&as->s->run.mutex);
        as->s->rooms[k].pushes++;
        pthread_mutex_unlock(&as->s->run.mutex);
    }

    rc = mxj_sync_as_script(as, room_id, id, "", gate);

    if (rc < 0) {
        return -1;
    }

    if (rc != 1) {
        return 0;               /* not cached (its first pass loads it), or
                                   known already */
    }

    return mxj_sync_ids_push(&batch[k], id) == 0 ? 0 : -1;
}


/*
 * A transaction's batches onto the rooms' queues, the passes woken. A
 * room whose queue would go over MXJ_SYNC_LIVE_MAX gets a pass instead
 * (stale; nothing pushed is dropped without that).
 */

static void
mxj_sync_as_live_queue(mxj_sync_as_t *as, mxj_sync_ids_t *batch)
{
    size_t            i, k;
    unsigned char    *full;
    mxj_sync_t       *s;
    mxj_sync_room_t  *room;

    s = as->s;
    full = calloc(s->nrooms ? s->nrooms : 1, 1);

    pthread_mutex_lock(&s->run.mutex);

    for (i = 0; i < s->nrooms; i++) {
        room = &s->rooms[i];

        if (batch[i].n == 0) {
            continue;
        }

        if (room->live.n + batch[i].n > MXJ_SYNC_LIVE_MAX) {
            if (full != NULL) {
                full[i] = 1;
            }

            room->dirty = 1;
            continue;
        }

        for (k = 0; k < batch[i].n; k++) {
            if (mxj_sync_ids_push(&room->live, batch[i].v[k]) != 0) {
                room->dirty = 1;
                break;
            }
        }
    }

    pthread_cond_broadcast(&s->run.cond);
    pthread_mutex_unlock(&s->run.mutex);

    for (i = 0; i < s->nrooms; i++) {
        if (full != NULL && full[i] && s->rooms[i].id != NULL) {
            mxj_sync_log("appservice: room=%s: over %d pushed events "
                         "queued: a pass instead", s->rooms[i].id,
                         MXJ_SYNC_LIVE_MAX);
            (void) mxj_sync_as_mark(as, s->rooms[i].id,
                                    "too many pushed events queued", NULL);
        }

        mxj_sync_ids_free(&batch[i]);
    }

    free(full);
}


/*
 * A managed room: the push counted (so that a pass under way knows its
 * snapshot may predate it), the snapshot marked stale (why), the passes
 * woken for it. With id (a pushed state event), through
 * src/lua/live_push.lua: an event the snapshot has already (an edge join
 * pushed back) changes nothing. 0, 1 when id was known, or -1 when Redis
 * failed (the passes are woken all the same).
 */

static int
mxj_sync_as_mark(mxj_sync_as_t *as, const char *room_id, const char *why,
    const char *id)
{
    int               rc;
    size_t            i;
    mxj_sync_t       *s;

    s = as->s;

    pthread_mutex_lock(&s->run.mutex);

    for (i = 0; i < s->nrooms; i++) {
        if (s->rooms[i].id != NULL && strcmp(s->rooms[i].id, room_id) == 0)
        {
            s->rooms[i].pushes++;
        }
    }

    pthread_mutex_unlock(&s->run.mutex);

    rc = mxj_sync_as_script(as, room_id, id, why, 0);

    if (rc == 2) {
        return 1;
    }

    mxj_sync_as_wake(as, room_id);

    return rc < 0 ? -1 : 0;
}


/*
 * src/lua/meta_stale.lua (id NULL) or src/lua/live_push.lua (why "" for
 * an event for the advance, gate: stale until applied): its answer, or
 * -1 when Redis failed.
 */

static int
mxj_sync_as_script(mxj_sync_as_t *as, const char *room_id, const char *id,
    const char *why, int gate)
{
    int          rc;
    char        *k[3];
    size_t       i;
    redisReply  *reply;

    if (as->r.c == NULL || as->r.c->err) {
        mxj_redis_close(&as->r);

        if (mxj_redis_connect(&as->r) != 0) {
            return -1;
        }
    }

    k[0] = mxj_room_key(&as->r, room_id, MX_KEY_META);
    k[1] = mxj_room_key(&as->r, room_id, MX_KEY_EXTREM);
    k[2] = mxj_room_key(&as->r, room_id, MX_KEY_EDGE);

    rc = -1;

    if (k[0] == NULL || k[1] == NULL || k[2] == NULL) {
        goto done;
    }

    if (id == NULL) {
        reply = mxj_redis_script(&as->r, MX_LUA_META_STALE, 1, 2,
                                 (const char *[]) { k[0], why }, NULL);
    } else {
        reply = mxj_redis_script(&as->r, MX_LUA_LIVE_PUSH, 3, 6,
                                 (const char *[]) { k[0], k[1], k[2], id,
                                                    why, gate ? "1" : "" },
                                 NULL);
    }

    if (reply != NULL) {
        rc = (reply->type == REDIS_REPLY_INTEGER) ? (int) reply->integer
                                                  : -1;
        freeReplyObject(reply);
    }

done:

    for (i = 0; i < 3; i++) {
        free(k[i]);
    }

    return rc;
}


static void
mxj_sync_as_wake(mxj_sync_as_t *as, const char *room_id)
{
    size_t       i;
    mxj_sync_t  *s;

    s = as->s;

    pthread_mutex_lock(&s->run.mutex);

    for (i = 0; i < s->nrooms; i++) {
        if (s->rooms[i].id != NULL && strcmp(s->rooms[i].id, room_id) == 0)
        {
            s->rooms[i].dirty = 1;
        }
    }

    pthread_cond_broadcast(&s->run.cond);
    pthread_mutex_unlock(&s->run.mutex);
}
