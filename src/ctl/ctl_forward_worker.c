/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl forward: a worker (docs/forwarder.md). It takes a room
 * with entries, holds the room's lease while it serves it, reads the
 * room's oldest undelivered entry each time (the oldest pending one of
 * the group, else the next new one) and delivers it to the upstream,
 * retrying until a 2xx (acknowledged) or a dead letter; after a batch the
 * room yields.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl_forward_run.h"


static mxj_fwd_end_e mxj_fwd_serve(mxj_fwd_worker_t *w,
    mxj_fwd_room_t *room, long *wait);
static int mxj_fwd_lease(mxj_fwd_worker_t *w, mxj_fwd_room_t *room);
static void mxj_fwd_release(mxj_fwd_worker_t *w, mxj_fwd_room_t *room);
static int mxj_fwd_renew_due(mxj_fwd_worker_t *w);
static mxj_fwd_end_e mxj_fwd_next(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e, long *wait);
static int mxj_fwd_entry(redisReply *reply, redisReply *item,
    mxj_fwd_entry_t *e);
static mxj_fwd_end_e mxj_fwd_deliver(mxj_fwd_worker_t *w,
    mxj_fwd_room_t *room, mxj_fwd_entry_t *e);
static void mxj_fwd_tick(void *data);
static int mxj_fwd_ack(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e);
static int mxj_fwd_dead(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e, long status, const char *response, size_t len,
    unsigned long attempts);
static mxj_fwd_end_e mxj_fwd_wait(mxj_fwd_worker_t *w, long ms);


void *
mxj_fwd_worker(void *data)
{
    mxj_fwd_worker_t *w = data;

    int               failures;
    long              wait;
    const char       *why;
    unsigned char     raw[16];
    mxj_fwd_end_e     end;
    mxj_fwd_room_t   *room;

    mxj_redis_copy(&w->r, &w->fwd->r);

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(w->token, sizeof(w->token), raw, sizeof(raw));

    if (mxj_http_init(&w->http, w->fwd->upstream, w->fwd->timeout, 0, &why)
        != 0)
    {
        mxj_fwd_log("worker %ld: %s", w->index, why);
        mxj_run_stop(&w->fwd->run);
        return NULL;
    }

    w->http.keep = MXJ_FWD_RESPONSE_MAX;
    w->http.tick = mxj_fwd_tick;
    w->http.data = w;

    failures = 0;

    for ( ;; ) {
        if (mxj_fwd_connect(w->fwd, &w->r, &failures) != 0) {
            break;
        }

        room = mxj_fwd_take(w->fwd);
        if (room == NULL) {
            break;
        }

        wait = 0;
        end = mxj_fwd_serve(w, room, &wait);

        mxj_fwd_put(w->fwd, room, end, wait);
    }

    mxj_redis_close(&w->r);
    mxj_http_free(&w->http);

    return NULL;
}


/*
 * Serves a room: its lease, then its entries oldest first, one at a time,
 * until none is left, a wait, a stop, a Redis error, or MXJ_FWD_BATCH
 * deliveries (then another room may have the worker).
 */

static mxj_fwd_end_e
mxj_fwd_serve(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, long *wait)
{
    int               n, lease;
    mxj_fwd_end_e     end;
    mxj_fwd_entry_t   e;

    lease = mxj_fwd_lease(w, room);

    if (lease < 0) {
        return MXJ_FWD_REDIS_ERROR;
    }

    if (lease == 0) {
        /* another forwarder serves it */
        *wait = w->fwd->claim_idle < MXJ_FWD_LEASE_BUSY_MS
                ? w->fwd->claim_idle : MXJ_FWD_LEASE_BUSY_MS;
        return MXJ_FWD_WAIT;
    }

    w->room = room;
    w->lease_lost = 0;
    end = MXJ_FWD_MORE;

    for (n = 0; n < MXJ_FWD_BATCH; n++) {
        if (mxj_run_stopping(&w->fwd->run)) {
            end = MXJ_FWD_STOPPED;
            break;
        }

        if (mxj_fwd_renew_due(w) != 0) {
            end = w->lease_lost ? MXJ_FWD_WAIT : MXJ_FWD_REDIS_ERROR;
            *wait = MXJ_FWD_LEASE_BUSY_MS;
            break;
        }

        end = mxj_fwd_next(w, room, &e, wait);
        if (end != MXJ_FWD_MORE) {
            break;
        }

        end = mxj_fwd_deliver(w, room, &e);
        freeReplyObject(e.reply);

        if (end != MXJ_FWD_MORE) {
            if (end == MXJ_FWD_WAIT) {
                *wait = MXJ_FWD_LEASE_BUSY_MS;
            }

            break;
        }
    }

    mxj_fwd_release(w, room);
    w->room = NULL;

    if (end == MXJ_FWD_REDIS_ERROR && w->r.c != NULL && w->r.c->err == 0) {
        /* an error reply, not a lost connection: not in a tight loop */
        end = MXJ_FWD_WAIT;
        *wait = 10000;
    }

    return end;
}


/* 1: the lease is ours (taken or renewed), 0: someone else's, -1: error */

static int
mxj_fwd_lease(mxj_fwd_worker_t *w, mxj_fwd_room_t *room)
{
    int          rc;
    char         ms[24];
    redisReply  *reply;

    snprintf(ms, sizeof(ms), "%ld", w->fwd->claim_idle);

    reply = mxj_fwd_script(&w->r, MX_LUA_LOCK_TAKE, 1, 3,
                           (const char *[]) { room->lock, w->token, ms },
                           NULL);
    if (reply == NULL) {
        return -1;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        mxj_fwd_log("room=%s: the lease %s: %s", room->id, room->lock,
                    mxj_fwd_str(reply));
        freeReplyObject(reply);
        return 0;
    }

    rc = reply->integer == 1;
    freeReplyObject(reply);

    if (rc) {
        w->renewed = mxj_run_mono_ms();
    }

    return rc;
}


static void
mxj_fwd_release(mxj_fwd_worker_t *w, mxj_fwd_room_t *room)
{
    redisReply  *reply;

    if (w->r.c == NULL || w->r.c->err) {
        return;     /* it expires */
    }

    reply = mxj_fwd_script(&w->r, MX_LUA_LOCK_RELEASE, 1, 2,
                           (const char *[]) { room->lock, w->token },
                           NULL);
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


/*
 * Renews the lease when a third of its time has passed. 0 while it is
 * ours; -1 when it was lost (w->lease_lost) or Redis failed.
 */

static int
mxj_fwd_renew_due(mxj_fwd_worker_t *w)
{
    int  rc;

    if (w->room == NULL || w->lease_lost) {
        return w->lease_lost ? -1 : 0;
    }

    if (mxj_run_mono_ms() - w->renewed < w->fwd->claim_idle / 3) {
        return 0;
    }

    rc = mxj_fwd_lease(w, w->room);

    if (rc == 0) {
        w->lease_lost = 1;
        mxj_fwd_log("room=%s: lease %s lost to another forwarder",
                    w->room->id, w->room->lock);
    }

    return rc == 1 ? 0 : -1;
}


/*
 * The room's oldest undelivered entry: the oldest pending one of the group
 * (ours, or another consumer's once idle for --claim-idle), else the next
 * new one. MXJ_FWD_MORE with *e filled, MXJ_FWD_DONE, MXJ_FWD_WAIT with
 * *wait, or MXJ_FWD_REDIS_ERROR.
 */

static mxj_fwd_end_e
mxj_fwd_next(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, mxj_fwd_entry_t *e,
    long *wait)
{
    int           tries;
    long long     idle;
    char          min_idle[24], id[48];
    redisReply   *reply, *p, *item;
    mxj_fwd_t    *fwd;
    const char   *owner;

    fwd = w->fwd;

    for (tries = 0; tries < 8; tries++) {
        reply = mxj_fwd_cmd(&w->r, 6, (const char *[]) { "XPENDING",
                                                          room->outbox,
                                                          MXJ_FWD_GROUP,
                                                          "-", "+", "1" },
                            NULL);
        if (reply == NULL) {
            return MXJ_FWD_REDIS_ERROR;
        }

        if (mxj_fwd_is_error(reply, "NOGROUP")) {
            /* the stream was removed and written again */
            freeReplyObject(reply);

            if (mxj_fwd_group(fwd, &w->r, room) != 0) {
                *wait = 10000;
                return w->r.c->err ? MXJ_FWD_REDIS_ERROR : MXJ_FWD_WAIT;
            }

            continue;
        }

        if (reply->type != REDIS_REPLY_ARRAY) {
            mxj_fwd_log("room=%s: XPENDING %s: %s", room->id, room->outbox,
                        mxj_fwd_str(reply));
            freeReplyObject(reply);
            *wait = 10000;
            return MXJ_FWD_WAIT;
        }

        if (reply->elements == 0) {
            freeReplyObject(reply);

            reply = mxj_fwd_cmd(&w->r, 9,
                                (const char *[]) { "XREADGROUP", "GROUP",
                                                   MXJ_FWD_GROUP,
                                                   fwd->consumer, "COUNT",
                                                   "1", "STREAMS",
                                                   room->outbox, ">" },
                                NULL);
            if (reply == NULL) {
                return MXJ_FWD_REDIS_ERROR;
            }

            if (mxj_fwd_is_error(reply, "NOGROUP")) {
                freeReplyObject(reply);

                if (mxj_fwd_group(fwd, &w->r, room) != 0) {
                    *wait = 10000;
                    return w->r.c->err ? MXJ_FWD_REDIS_ERROR : MXJ_FWD_WAIT;
                }

                continue;
            }

            if (reply->type == REDIS_REPLY_NIL) {
                freeReplyObject(reply);
                return MXJ_FWD_DONE;
            }

            /* [[stream, [[id, fields]]]] */

            if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1
                || reply->element[0]->type != REDIS_REPLY_ARRAY
                || reply->element[0]->elements != 2
                || reply->element[0]->element[1]->type != REDIS_REPLY_ARRAY
                || reply->element[0]->element[1]->elements == 0)
            {
                mxj_fwd_log("room=%s: unexpected XREADGROUP reply: %s",
                            room->id, mxj_fwd_str(reply));
                freeReplyObject(reply);
                *wait = 10000;
                return MXJ_FWD_WAIT;
            }

            item = reply->element[0]->element[1]->element[0];

            pthread_mutex_lock(&fwd->run.mutex);
            room->used = 1;
            pthread_mutex_unlock(&fwd->run.mutex);

            if (mxj_fwd_entry(reply, item, e) != 0) {
                freeReplyObject(reply);
                continue;
            }

            return MXJ_FWD_MORE;
        }

        /* [[id, consumer, idle ms, deliveries]] */

        p = reply->element[0];

        if (p->type != REDIS_REPLY_ARRAY || p->elements < 3
            || p->element[0]->type != REDIS_REPLY_STRING
            || p->element[1]->type != REDIS_REPLY_STRING
            || p->element[2]->type != REDIS_REPLY_INTEGER
            || p->element[0]->len >= sizeof(id))
        {
            mxj_fwd_log("room=%s: unexpected XPENDING reply", room->id);
            freeReplyObject(reply);
            *wait = 10000;
            return MXJ_FWD_WAIT;
        }

        memcpy(id, p->element[0]->str, p->element[0]->len + 1);
        owner = p->element[1]->str;
        idle = p->element[2]->integer;

        if (strcmp(owner, fwd->consumer) == 0) {
            strcpy(min_idle, "0");

        } else if (idle >= fwd->claim_idle) {
            snprintf(min_idle, sizeof(min_idle), "%ld", fwd->claim_idle);
            mxj_fwd_log("room=%s: claiming entry %s from consumer %s "
                        "(idle %lld ms)", room->id, id, owner, idle);

        } else {
            if (strcmp(room->waited, id) != 0) {
                mxj_fwd_log("room=%s: entry %s is pending at consumer %s, "
                            "idle %lld ms: waiting until %ld ms", room->id,
                            id, owner, idle, fwd->claim_idle);
                snprintf(room->waited, sizeof(room->waited), "%s", id);
            }

            *wait = (long) (fwd->claim_idle - idle);
            freeReplyObject(reply);
            return MXJ_FWD_WAIT;
        }

        freeReplyObject(reply);

        pthread_mutex_lock(&fwd->run.mutex);
        room->used = 1;
        pthread_mutex_unlock(&fwd->run.mutex);

        reply = mxj_fwd_cmd(&w->r, 6, (const char *[]) { "XCLAIM",
                                                          room->outbox,
                                                          MXJ_FWD_GROUP,
                                                          fwd->consumer,
                                                          min_idle, id },
                            NULL);
        if (reply == NULL) {
            return MXJ_FWD_REDIS_ERROR;
        }

        if (reply->type != REDIS_REPLY_ARRAY) {
            mxj_fwd_log("room=%s: XCLAIM %s: %s", room->id, id,
                        mxj_fwd_str(reply));
            freeReplyObject(reply);
            *wait = 10000;
            return MXJ_FWD_WAIT;
        }

        if (reply->elements == 0) {
            /* taken by someone else meanwhile, or deleted (Redis 7 drops
             * it from the pending list then): look again */
            freeReplyObject(reply);
            continue;
        }

        item = reply->element[0];

        if (item->type != REDIS_REPLY_ARRAY) {
            /* Redis 6: a pending entry that was deleted */
            freeReplyObject(reply);

            reply = mxj_fwd_cmd(&w->r, 4, (const char *[]) { "XACK",
                                                              room->outbox,
                                                              MXJ_FWD_GROUP,
                                                              id },
                                NULL);
            if (reply == NULL) {
                return MXJ_FWD_REDIS_ERROR;
            }

            freeReplyObject(reply);
            continue;
        }

        if (mxj_fwd_entry(reply, item, e) != 0) {
            freeReplyObject(reply);
            continue;
        }

        room->waited[0] = '\0';

        return MXJ_FWD_MORE;
    }

    *wait = 1000;

    return MXJ_FWD_WAIT;
}


static int
mxj_fwd_entry(redisReply *reply, redisReply *item, mxj_fwd_entry_t *e)
{
    size_t        i;
    redisReply   *k, *v;

    memset(e, 0, sizeof(mxj_fwd_entry_t));

    if (item->type != REDIS_REPLY_ARRAY || item->elements != 2
        || item->element[0]->type != REDIS_REPLY_STRING
        || item->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return -1;
    }

    e->reply = reply;
    e->id = item->element[0]->str;
    e->fields = item->element[1];

    for (i = 0; i + 1 < e->fields->elements; i += 2) {
        k = e->fields->element[i];
        v = e->fields->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (strcmp(k->str, MX_OUTBOX_METHOD) == 0) {
            e->method = v;

        } else if (strcmp(k->str, MX_OUTBOX_URI) == 0) {
            e->uri = v;

        } else if (strcmp(k->str, MX_OUTBOX_AUTHORIZATION) == 0) {
            e->authorization = v;

        } else if (strcmp(k->str, MX_OUTBOX_BODY) == 0) {
            e->body = v;

        } else if (strcmp(k->str, MX_OUTBOX_EVENT_ID) == 0) {
            e->event_id = v;

        } else if (strcmp(k->str, MX_OUTBOX_RECEIVED_TS) == 0) {
            e->received_ts = v;
        }
    }

    return 0;
}


/*
 * Delivers one entry, retrying until a 2xx (acknowledged) or a dead
 * letter. MXJ_FWD_MORE when the room may go on, else why not.
 */

static mxj_fwd_end_e
mxj_fwd_deliver(mxj_fwd_worker_t *w, mxj_fwd_room_t *room,
    mxj_fwd_entry_t *e)
{
    long                 nauth, i, status, counted, wait, after;
    char               **auth;
    int64_t              t0, latency, since, lag, received;
    const char          *bad, *event;
    mxj_fwd_t           *fwd;
    mxj_fwd_end_e        end;
    unsigned long        attempt;
    mxj_fwd_action_e     action;
    struct curl_slist   *headers, *h;

    fwd = w->fwd;
    event = e->event_id ? e->event_id->str : "?";
    auth = NULL;
    nauth = 0;
    headers = NULL;

    /* what the module wrote is trusted, but a bad entry must not loop */

    bad = NULL;

    if (e->method == NULL || e->uri == NULL || e->body == NULL
        || e->event_id == NULL)
    {
        bad = "malformed outbox entry: method, uri, body or event_id "
              "missing";

    } else if (e->method->len == 0 || strlen(e->method->str) != e->method->len
               || strpbrk(e->method->str, " \t\r\n") != NULL)
    {
        bad = "malformed outbox entry: bad method";

    } else if (e->uri->str[0] != '/' || strlen(e->uri->str) != e->uri->len
               || strpbrk(e->uri->str, " \t\r\n") != NULL)
    {
        bad = "malformed outbox entry: uri is not a path";

    } else if (e->authorization != NULL) {
        nauth = mxj_fwd_auth_headers(e->authorization->str,
                                     e->authorization->len, &auth);

        if (nauth == -1) {
            bad = "malformed outbox entry: a control character in "
                  "authorization";

        } else if (nauth < 0) {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            return MXJ_FWD_REDIS_ERROR;
        }
    }

    if (bad != NULL) {
        if (mxj_fwd_dead(w, room, e, 0, bad, strlen(bad), 0) != 0) {
            return MXJ_FWD_REDIS_ERROR;
        }

        return MXJ_FWD_MORE;
    }

    end = MXJ_FWD_REDIS_ERROR;

    for (i = 0; i < nauth; i++) {
        h = curl_slist_append(headers, auth[i]);
        if (h == NULL) {
            goto nomem;
        }

        headers = h;
    }

    /* "Expect:" and "Accept:" keep curl from adding its own */

    h = curl_slist_append(headers, "Content-Type: application/json");
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    h = h ? curl_slist_append(h, "Accept:") : NULL;

    if (h == NULL) {
        goto nomem;
    }

    headers = h;

    counted = 0;

    for (attempt = 1; /* void */; attempt++) {
        t0 = mxj_run_mono_ms();
        status = mxj_http_send(&w->http, e->method->str, e->uri->str,
                               e->uri->len, e->body->str, e->body->len,
                               headers);
        latency = mxj_run_mono_ms() - t0;

        since = room->last_delivered
                ? mxj_run_mono_ms() - room->last_delivered : -1;

        action = mxj_fwd_judge(status, (long) since, fwd->max_attempts,
                               &counted);

        mxj_fwd_count_attempt(fwd, status, action);

        if (action == MXJ_FWD_ACK) {
            if (mxj_fwd_ack(w, room, e) != 0) {
                /* left pending: it is delivered again */
                mxj_fwd_log("delivered, not acknowledged room=%s event=%s "
                            "status=%ld: it stays in the outbox and is sent "
                            "again", room->id, event, status);
                break;
            }

            room->last_delivered = mxj_run_mono_ms();

            received = e->received_ts ? atoll(e->received_ts->str) : 0;
            lag = received > 0 ? mxj_run_wall_ms() - received : -1;

            mxj_fwd_count_delivered(fwd, lag, latency);

            mxj_fwd_log("delivered room=%s event=%s status=%ld attempts=%lu "
                        "latency_ms=%lld lag_ms=%lld", room->id, event,
                        status, attempt, (long long) latency,
                        (long long) lag);

            end = MXJ_FWD_MORE;
            break;
        }

        if (action == MXJ_FWD_DEAD) {
            if (mxj_fwd_dead(w, room, e, status, w->http.body.data,
                             w->http.body.len,
                             attempt)
                == 0)
            {
                end = MXJ_FWD_MORE;
            }

            break;
        }

        wait = mxj_fwd_backoff_ms(attempt,
                                  randombytes_uniform(1000001) / 1e6);

        if (status == 429) {
            after = mxj_http_retry_after_ms(w->http.body.data,
                                           w->http.body.len);

            if (after > wait) {
                wait = after;
            }
        }

        if (status == 0) {
            mxj_fwd_log("retrying room=%s event=%s status=0 attempt=%lu in "
                        "%.1f s (%s)", room->id, event, attempt,
                        wait / 1000.0, w->http.err);

        } else {
            mxj_fwd_log("retrying room=%s event=%s status=%ld attempt=%lu in "
                        "%.1f s", room->id, event, status, attempt,
                        wait / 1000.0);
        }

        end = mxj_fwd_wait(w, wait);
        if (end != MXJ_FWD_MORE) {
            break;
        }
    }

    curl_slist_free_all(headers);
    mxj_fwd_auth_free(auth, nauth);

    return end;

nomem:

    fprintf(stderr, "matrix-join-ctl: out of memory\n");
    curl_slist_free_all(headers);
    mxj_fwd_auth_free(auth, nauth);

    return MXJ_FWD_REDIS_ERROR;
}


/* During a long attempt the lease is renewed; the attempt is never cut. */

static void
mxj_fwd_tick(void *data)
{
    mxj_fwd_worker_t *w = data;

    if (w->r.c != NULL && w->r.c->err == 0) {
        (void) mxj_fwd_renew_due(w);
    }
}


/* 2xx: XACK, XDEL and HSET delivered, in one MULTI. */

static int
mxj_fwd_ack(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, mxj_fwd_entry_t *e)
{
    int           rc;
    char          ms[24];
    size_t        i, k;
    redisReply   *reply;
    redisContext *c;

    if (w->r.c == NULL || w->r.c->err
        || mxj_redis_route(&w->r, room->outbox, strlen(room->outbox)) != 0)
    {
        return -1;
    }

    c = w->r.c;

    snprintf(ms, sizeof(ms), "%lld", (long long) mxj_run_wall_ms());

    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "XACK %s %s %s", room->outbox, MXJ_FWD_GROUP,
                       e->id);
    redisAppendCommand(c, "XDEL %s %s", room->outbox, e->id);
    redisAppendCommand(c, "HSET %s %b %s", room->delivered,
                       e->event_id->str, e->event_id->len, ms);
    redisAppendCommand(c, "EXEC");

    rc = 0;

    for (i = 0; i < 5; i++) {
        if (redisGetReply(c, (void **) &reply) != REDIS_OK) {
            mxj_redis_count_error();
            mxj_fwd_log("redis at %s: %s", w->r.address, c->errstr);
            return -1;
        }

        if (reply->type == REDIS_REPLY_ERROR) {
            mxj_fwd_log("room=%s: acknowledging %s: %s", room->id, e->id,
                        reply->str);
            (void) mxj_redis_demoted(c, reply);     /* a MOVED: the map */
            rc = -1;
        }

        if (i == 4 && reply->type == REDIS_REPLY_ARRAY) {
            for (k = 0; k < reply->elements; k++) {
                if (reply->element[k]->type == REDIS_REPLY_ERROR) {
                    mxj_fwd_log("room=%s: acknowledging %s: %s", room->id,
                                e->id, reply->element[k]->str);
                    rc = -1;
                }
            }

        } else if (i == 4) {
            rc = -1;
        }

        freeReplyObject(reply);
    }

    return rc;
}


/*
 * The entry becomes a dead letter: copied with status, response, attempts
 * and failed_ts to P{R}:dead, acknowledged, deleted, and the room's
 * snapshot marked stale, in one script.
 */

static int
mxj_fwd_dead(mxj_fwd_worker_t *w, mxj_fwd_room_t *room, mxj_fwd_entry_t *e,
    long status, const char *response, size_t len, unsigned long attempts)
{
    int           argc;
    char          st[24], at[24], ts[24], shown[201];
    size_t        i, n, *lens;
    redisReply   *reply;
    const char  **argv;

    n = e->fields->elements & ~(size_t) 1;
    argc = 5 + n + 8;

    argv = malloc(argc * sizeof(char *));
    lens = malloc(argc * sizeof(size_t));

    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    snprintf(st, sizeof(st), "%ld", status);
    snprintf(at, sizeof(at), "%lu", attempts);
    snprintf(ts, sizeof(ts), "%lld", (long long) mxj_run_wall_ms());

    argv[0] = room->outbox;
    argv[1] = room->dead;
    argv[2] = room->meta;
    argv[3] = MXJ_FWD_GROUP;
    argv[4] = e->id;

    for (i = 0; i < 5; i++) {
        lens[i] = strlen(argv[i]);
    }

    for (i = 0; i < n; i++) {
        argv[5 + i] = e->fields->element[i]->str;
        lens[5 + i] = e->fields->element[i]->len;
    }

    i = 5 + n;
    argv[i] = "status";     lens[i++] = 6;
    argv[i] = st;           lens[i++] = strlen(st);
    argv[i] = "response";   lens[i++] = 8;
    argv[i] = response;     lens[i++] = len;
    argv[i] = "attempts";   lens[i++] = 8;
    argv[i] = at;           lens[i++] = strlen(at);
    argv[i] = "failed_ts";  lens[i++] = 9;
    argv[i] = ts;           lens[i++] = strlen(ts);

    reply = mxj_fwd_script(&w->r, MX_LUA_FORWARD_DEAD, 3, argc, argv, lens);

    free(argv);
    free(lens);

    if (reply == NULL) {
        return -1;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        mxj_fwd_log("room=%s: the dead letter of %s: %s", room->id, e->id,
                    reply->str);
        freeReplyObject(reply);
        return -1;
    }

    freeReplyObject(reply);

    pthread_mutex_lock(&w->fwd->run.mutex);
    w->fwd->dead_letters++;
    pthread_mutex_unlock(&w->fwd->run.mutex);

    /* the response, shown on one line */

    n = len < sizeof(shown) - 1 ? len : sizeof(shown) - 1;

    for (i = 0; i < n; i++) {
        shown[i] = ((unsigned char) response[i] < 0x20 || response[i] == 0x7f)
                   ? ' ' : response[i];
    }

    shown[n] = '\0';

    mxj_fwd_log("dead letter room=%s event=%s status=%ld attempts=%lu "
                "entry=%s stream=%s response=%s",
                room->id, e->event_id ? e->event_id->str : "?", status,
                attempts, e->id, room->dead, shown);

    return 0;
}


/* A backoff wait: the lease renewed, a stop honoured. */

static mxj_fwd_end_e
mxj_fwd_wait(mxj_fwd_worker_t *w, long ms)
{
    int64_t  until, now;

    until = mxj_run_mono_ms() + ms;

    for ( ;; ) {
        if (mxj_run_stopping(&w->fwd->run)) {
            return MXJ_FWD_STOPPED;
        }

        if (mxj_fwd_renew_due(w) != 0) {
            return w->lease_lost ? MXJ_FWD_WAIT : MXJ_FWD_REDIS_ERROR;
        }

        now = mxj_run_mono_ms();

        if (now >= until) {
            return MXJ_FWD_MORE;
        }

        mxj_run_sleep(&w->fwd->run, until - now < MXJ_RUN_SLICE_MS
                              ? (long) (until - now) : MXJ_RUN_SLICE_MS);
    }
}
