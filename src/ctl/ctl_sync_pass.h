/*
 * Copyright (C) nginx-matrix-join authors.
 * One room's pass of matrix-join-ctl sync, shared by the files of its
 * steps (docs/sync.md "One pass, per room"): ctl_sync_pass.c runs them,
 * ctl_sync_room.c (1), ctl_sync_extrem.c (2), ctl_sync_state.c (3),
 * ctl_sync_check.c (4), ctl_sync_snapshot.c (5, 6); ctl_sync_pass_util.c
 * holds what they share.
 */

#ifndef MXJ_CTL_SYNC_PASS_H
#define MXJ_CTL_SYNC_PASS_H

#include "ctl_sync_run.h"


#define MXJ_SYNC_MISSING_ROUNDS  4       /* auth events fetched, rounds */
#define MXJ_SYNC_MISSING_MAX     200     /* and events in one round */
#define MXJ_SYNC_ORPHAN_MS       3600000 /* delivered records of joins
                                            no longer known: pruned */
#define MXJ_SYNC_USERS_TRIED     8       /* make_join candidates */
#define MXJ_SYNC_KEYS_AGAIN_MS   60000   /* keys this old asked again when
                                            a signature does not verify */
#define MXJ_SYNC_FED             "/_matrix/federation/v1/"


enum {
    MXJ_SYNC_BODY_STATE = 0,        /* /state: pdus and auth_chain */
    MXJ_SYNC_BODY_EVENT,            /* /event/X: pdus[0], event X */
    MXJ_SYNC_BODY_MISSING           /* /get_missing_events: events */
};

typedef struct {
    mx_buf_t                  text;
    int                       kind;
    char                     *expect;       /* the event asked for */
    int                       checked;
} mxj_sync_body_t;


/* A join accepted at the edge, from P{R}:unconfirmed. */
typedef struct {
    char                     *id;
    char                     *pdu;          /* the PDU, canonical */
    json_t                   *json;
    long                      passes;
    long                      old_passes;
    int                       delivered;
    int                       queued;
    mxj_sync_join_e           fate;
    const char               *why;
    mxj_sync_ev_t            *ev;
} mxj_sync_join_t;


typedef struct {
    mxj_sync_t               *s;
    mxj_sync_room_t          *room;
    char                     *why;
    size_t                    len;
    const char               *id;           /* the room ID */

    char                     *k_meta;
    char                     *k_server_user;
    char                     *k_edge_pdu;
    char                     *k_unconfirmed;
    char                     *k_delivered;
    char                     *k_outbox;

    redisReply               *read;         /* owns what follows */
    redisReply               *meta;
    const char               *server_user;
    redisReply               *delivered;
    redisReply               *outbox;

    mxj_sync_join_t          *joins;
    size_t                    njoins;

    const mx_room_version_t  *rv;
    mxj_sync_ids_t            x;            /* the forward extremities */
    int64_t                   template_depth;
    char                     *e;            /* E */

    mxj_sync_ids_t            hs_state;
    mxj_sync_ids_t            hs_auth;
    int                       full;         /* hs_* come from /state */

    mxj_sync_body_t          *bodies;
    size_t                    nbodies;

    mxj_sync_ids_t            signers;      /* servers whose keys to ask */
    mxj_sync_map_t            signers_seen;

    unsigned long             pushes;
    int64_t                   t0;
    uint64_t                  requests0;
    uint64_t                  bytes0;
    const char               *how;
    size_t                    kept, confirmed, dropped;
} mxj_sync_pass_t;


/* ctl_sync_room.c */
int mxj_sync_resolve(mxj_sync_pass_t *p);
int mxj_sync_keys(mxj_sync_pass_t *p);
int mxj_sync_read(mxj_sync_pass_t *p);

/* ctl_sync_extrem.c */
int mxj_sync_make_join(mxj_sync_pass_t *p);
int mxj_sync_joins(mxj_sync_pass_t *p);
void mxj_sync_judge(mxj_sync_pass_t *p, mxj_sync_map_t *known);
int mxj_sync_unchanged(mxj_sync_pass_t *p);

/* ctl_sync_state.c */
int mxj_sync_pool(mxj_sync_pass_t *p);
int mxj_sync_fetch(mxj_sync_pass_t *p);
int mxj_sync_get_event(mxj_sync_pass_t *p, const char *id);
int mxj_sync_get_missing(mxj_sync_pass_t *p, const mxj_sync_ids_t *earliest,
    const char *latest, size_t limit);

/* ctl_sync_check.c */
int mxj_sync_check(mxj_sync_pass_t *p);

/* ctl_sync_snapshot.c */
int mxj_sync_build(mxj_sync_pass_t *p, mx_buf_t *doc);
int mxj_sync_load(mxj_sync_pass_t *p, const char *doc, size_t len,
    mx_snapshot_t **snap);
int mxj_sync_bookkeep(mxj_sync_pass_t *p);

/* ctl_sync_live.c: 1 when an extremity of x is unknown to the edge */
int mxj_sync_live_drift(mxj_sync_pass_t *p);
/* meta.passes and meta.drift: the room's counts in this process */
void mxj_sync_live_counts(mxj_sync_pass_t *p);

/* ctl_sync_pass_util.c */
int mxj_sync_fail(mxj_sync_pass_t *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int mxj_sync_uri(mx_buf_t *out, const char *a, const char *b,
    const char *c, const char *d);
int mxj_sync_fed_get(mxj_sync_pass_t *p, const char *a,
    const char *b, const char *c, const char *d, const char *what);
const char *mxj_sync_meta(mxj_sync_pass_t *p, const char *name);
int mxj_sync_index(mxj_sync_map_t *m, redisReply *list,
    size_t step);
int mxj_sync_extremities_json(mxj_sync_pass_t *p, mx_buf_t *out);

#endif /* MXJ_CTL_SYNC_PASS_H */
