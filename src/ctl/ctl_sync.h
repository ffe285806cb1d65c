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

/*
 * The application service registration (YAML) for the rooms, appended to
 * out: id, url, as_token, hs_token, sender_localpart, rate_limited false,
 * namespaces (users and aliases empty, one non-exclusive regex per room
 * ID). 0 or -1 (out of memory).
 */
int mxj_sync_registration(mx_buf_t *out, const char *url,
    const char *as_token, const char *hs_token, const char *const *rooms,
    size_t nrooms);

/*
 * The as_token and hs_token of a registration written before (so that a
 * restart keeps the tokens the homeserver knows). 0 when both were found,
 * -1 otherwise. as and hs hold MXJ_SYNC_TOKEN_MAX + 1 bytes.
 */
int mxj_sync_registration_tokens(const char *text, size_t len, char *as,
    char *hs);

/* The regex of one room ID: ^ + the ID, metacharacters escaped, + $. */
int mxj_sync_room_regex(mx_buf_t *out, const char *room);


/*
 * The head of an HTTP/1.x request, as the application service listener
 * reads it. The pointers are into the buffer parsed.
 */
typedef struct {
    const char     *method;
    size_t          method_len;
    const char     *target;
    size_t          target_len;
    const char     *authorization;      /* NULL when absent */
    size_t          authorization_len;
    long long       content_length;     /* -1 when absent */
    size_t          head_len;           /* bytes of the head, the blank
                                           line included */
    unsigned        transfer_encoding:1;
    unsigned        expect_continue:1;
    unsigned        http10:1;
} mxj_sync_http_req_t;

/*
 * Parses the request head in buf[0..len): 0 when complete (req filled),
 * 1 when more bytes are needed, -1 when malformed (*why set).
 */
int mxj_sync_http_parse(const char *buf, size_t len,
    mxj_sync_http_req_t *req, const char **why);

typedef enum {
    MXJ_SYNC_AS_TRANSACTION = 0,   /* PUT /_matrix/app/v1/transactions/T */
    MXJ_SYNC_AS_PING,              /* POST /_matrix/app/v1/ping */
    MXJ_SYNC_AS_BAD_METHOD,        /* a known path, another method */
    MXJ_SYNC_AS_UNKNOWN
} mxj_sync_as_route_e;

/*
 * Where a request goes, its transaction ID (percent-decoded, for
 * transactions) and the token it carries: the Authorization header's
 * Bearer token, else the access_token query parameter ("" when none).
 * txn and token hold MXJ_SYNC_TXN_MAX + 1 and MXJ_SYNC_TOKEN_MAX + 1
 * bytes; a transaction ID or token too long or malformed routes to
 * MXJ_SYNC_AS_UNKNOWN or leaves the token "".
 */
mxj_sync_as_route_e mxj_sync_as_route(const mxj_sync_http_req_t *req,
    char *txn, char *token);

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
