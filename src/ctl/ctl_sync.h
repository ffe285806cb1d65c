/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync (docs/sync.md): what the files of the command
 * share, and the pieces that need neither Redis nor HTTP, kept apart so
 * that unit tests can call them (ctl_sync_util.c, ctl_sync_pool.c,
 * ctl_sync_doc.c).
 */

#ifndef MXJ_CTL_SYNC_H
#define MXJ_CTL_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mx_util.h"
#include "mx_room_version.h"
#include "mx_table.h"


#define MXJ_SYNC_AS_ID           "matrix-join-sync"
#define MXJ_SYNC_LOCALPART       "matrix-join-sync"
#define MXJ_SYNC_TOKEN_MAX       256     /* bytes of an as/hs token */
#define MXJ_SYNC_TXN_MAX         255     /* bytes of a transaction ID */
#define MXJ_SYNC_TXNS            1024    /* transaction IDs remembered */
#define MXJ_SYNC_CONFIRM_PASSES  3
#define MXJ_SYNC_INCREMENTAL_MAX 50      /* missing events fetched one by
                                            one; more: one /state */


/* --- ctl_sync_util.c --------------------------------------------------- */

/*
 * A duration: one or more <number><unit> ("30s", "5m", "1h30m",
 * "250ms"; units ms, s, m, h, d), or a bare number of seconds. The
 * milliseconds, or -1 when malformed, zero or over 365 days.
 */
long long mxj_sync_duration_ms(const char *s);

/*
 * Whether an event pushed by the homeserver (client format or PDU) can
 * change who may join: a state event of type m.room.member with
 * membership ban or leave (kicks included), m.room.join_rules,
 * m.room.power_levels, m.room.server_acl, m.room.create or
 * m.room.tombstone. 1 or 0.
 */
int mxj_sync_auth_relevant(const json_t *ev);

/* The regex of one room ID: ^ + the ID, metacharacters escaped, + $. */
int mxj_sync_room_regex(mx_buf_t *out, const char *room);


typedef enum {
    MXJ_SYNC_AS_TRANSACTION = 0,   /* PUT .../transactions/T */
    MXJ_SYNC_AS_PING,              /* POST /_matrix/app/v1/ping */
    MXJ_SYNC_AS_QUERY,             /* GET .../users/U, .../rooms/A */
    MXJ_SYNC_AS_BAD_METHOD,        /* a known path, another method */
    MXJ_SYNC_AS_UNKNOWN
} mxj_sync_as_route_e;

/*
 * Where a request of the Application Service API goes, by its method and
 * its path as sent (not yet percent-decoded, without the query): the
 * paths under /_matrix/app/v1 and the legacy ones without that prefix
 * (/transactions/T, /users/U, /rooms/A). The transaction ID is decoded
 * into txn (MXJ_SYNC_TXN_MAX + 1 bytes); one empty, too long, holding a
 * '/' or a NUL routes to MXJ_SYNC_AS_UNKNOWN.
 */
mxj_sync_as_route_e mxj_sync_as_route(const char *method, const char *path,
    char *txn);

/*
 * The hs_token of a request, as the homeservers send it: the value of an
 * Authorization header ("Bearer TOKEN") into bearer, the access_token
 * query parameter (as sent, percent-decoded here) into param; "" for one
 * absent (NULL). Both hold MXJ_SYNC_TOKEN_MAX + 1 bytes. -1 when one given
 * is malformed (another scheme, empty, too long, a NUL): a credential
 * given and not the hs_token.
 */
int mxj_sync_as_tokens(const char *authorization, const char *access_token,
    char *bearer, char *param);

/* The transaction IDs seen last, MXJ_SYNC_TXNS of them. */
typedef struct {
    char           *ids[MXJ_SYNC_TXNS];
    size_t          next;
} mxj_sync_txns_t;

/* 1 when txn is one of the last MXJ_SYNC_TXNS remembered. */
int mxj_sync_txns_seen(const mxj_sync_txns_t *t, const char *txn);
/* Remembers txn, forgetting the oldest; 0 or -1 (out of memory). */
int mxj_sync_txns_add(mxj_sync_txns_t *t, const char *txn);
void mxj_sync_txns_free(mxj_sync_txns_t *t);

/* Appends s percent-encoded (everything but A-Z a-z 0-9 - . _ ~). */
int mxj_sync_uri_escape(mx_buf_t *out, const char *s);


/* What a pass decides about one join accepted at the edge. */
typedef enum {
    MXJ_SYNC_JOIN_CONFIRMED = 0,   /* the homeserver has it: forget it */
    MXJ_SYNC_JOIN_KEEP,            /* put back on top of the snapshot */
    MXJ_SYNC_JOIN_DROP             /* unconfirmed: left out, counted */
} mxj_sync_join_e;

/*
 * known: the homeserver's answers name the join (its state, its auth
 * chain, its forward extremities); delivered: in P{R}:delivered (read
 * before this pass asked the homeserver anything); queued: still in the
 * outbox. *passes counts the passes that did not find a delivered join;
 * one more than confirm_passes drops it. A join neither delivered nor
 * queued was refused (a dead letter): dropped. *why says why a join is
 * dropped.
 */
mxj_sync_join_e mxj_sync_judge_join(int known, int delivered, int queued,
    long *passes, long confirm_passes, const char **why);


/* --- ctl_sync_pool.c --------------------------------------------------- */

/*
 * A string -> pointer table; the keys belong to the values. The entries
 * in the order they came (keys[i], vals[i], i < n), found by mx_table.h.
 */
typedef struct {
    const char    **keys;
    void          **vals;
    size_t          n;
    size_t          cap;
    mx_table_t      index;
} mxj_sync_map_t;

void *mxj_sync_map_get(const mxj_sync_map_t *m, const char *key);
/* Sets key -> val (replacing); 0 or -1 (out of memory). */
int mxj_sync_map_put(mxj_sync_map_t *m, const char *key, void *val);
void mxj_sync_map_free(mxj_sync_map_t *m);


/* A list of malloc'ed strings. */
typedef struct {
    char          **v;
    size_t          n;
    size_t          cap;
} mxj_sync_ids_t;

int mxj_sync_ids_push(mxj_sync_ids_t *l, const char *s);
void mxj_sync_ids_free(mxj_sync_ids_t *l);
/* Sorted copy comparison: 1 when a and b hold the same strings. */
int mxj_sync_ids_same(const mxj_sync_ids_t *a, const mxj_sync_ids_t *b);


/* An event received and checked: what building a snapshot needs. */
typedef struct {
    char           *id;
    char           *pdu;            /* canonical JSON */
    size_t          pdu_len;
    char           *type;
    char           *state_key;      /* NULL: not a state event */
    char           *sender;
    char           *membership;     /* content.membership of a member
                                       event, else NULL */
    int64_t         depth;
    int64_t         ts;             /* origin_server_ts */
    char          **auth;           /* auth_events, as IDs */
    size_t          nauth;
    char          **prev;           /* prev_events, as IDs */
    size_t          nprev;
    unsigned        mark:1;         /* kept by mxj_sync_pool_sweep */
} mxj_sync_ev_t;

/*
 * The record of ev, whose event ID is id (already computed and checked by
 * the caller). NULL with err set when a field it needs is missing or of
 * the wrong type, or out of memory.
 */
mxj_sync_ev_t *mxj_sync_ev_new(const mx_room_version_t *rv,
    const json_t *ev, const char *id, mx_err_t *err);
void mxj_sync_ev_free(mxj_sync_ev_t *ev);

/* Events by ID. */
typedef struct {
    mxj_sync_map_t  map;
} mxj_sync_pool_t;

/* Adds ev (the pool owns it); an ID already there keeps the first. */
int mxj_sync_pool_add(mxj_sync_pool_t *pool, mxj_sync_ev_t *ev);
mxj_sync_ev_t *mxj_sync_pool_get(const mxj_sync_pool_t *pool,
    const char *id);
/* Frees the events not marked, and clears the marks. */
void mxj_sync_pool_sweep(mxj_sync_pool_t *pool);
void mxj_sync_pool_free(mxj_sync_pool_t *pool);


/* --- ctl_sync_doc.c ---------------------------------------------------- */

/* What a snapshot is made of (docs/sync.md, steps 3 and 5). */
typedef struct {
    const mx_room_version_t  *rv;
    mxj_sync_pool_t          *pool;
    const mxj_sync_ids_t     *state;     /* the state before E, IDs */
    const mxj_sync_ids_t     *auth;      /* the homeserver's auth chain
                                            (its order is kept) */
    const char               *extremity; /* E */
    mxj_sync_ev_t           **joins;     /* edge joins kept */
    size_t                    njoins;
    const char *const        *aliases;
    size_t                    naliases;
} mxj_sync_doc_t;

/*
 * The snapshot document (the format load reads) appended to out: the
 * state before E, with E in place of its key's event when E is a state
 * event, and each kept join in place of its user's member event (the
 * latest join of a user when there are several); the auth chain: every
 * event reachable from that state over auth_events (v12: and the create
 * event), and the member events the joins replaced; the forward
 * extremities: E and the joins in the state, minus those a join names in
 * prev_events. The events used are marked in the pool.
 *
 * 0 when done; 1 when events are not in the pool (their IDs appended to
 * missing, nothing to out): the caller fetches them and calls again; -1
 * with err set.
 */
int mxj_sync_build_doc(const mxj_sync_doc_t *d, mx_buf_t *out,
    mxj_sync_ids_t *missing, mx_err_t *err);

#endif /* MXJ_CTL_SYNC_H */
