/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync at run time: the command's state, the federation
 * client (ctl_sync_http.c), one room's pass (ctl_sync_pass.c) and the
 * Application Service (ctl_sync_as.c, ctl_sync_as_http.c). The pure
 * pieces are in ctl_sync.h.
 */

#ifndef MXJ_CTL_SYNC_RUN_H
#define MXJ_CTL_SYNC_RUN_H

#include <pthread.h>
#include <stdint.h>

#include <curl/curl.h>

#include "ctl_http.h"
#include "ctl_metrics.h"
#include "ctl_redis.h"
#include "ctl_run.h"
#include "ctl_sync.h"
#include "mx_crypto.h"
#include "mx_keyfile.h"


#define MXJ_SYNC_INTERVAL_MS     125     /* 8 requests a second at most */
#define MXJ_SYNC_INTERVAL_MAX    2000    /* after 429s */
#define MXJ_SYNC_BURST           2       /* requests back to back at most */
#define MXJ_SYNC_RETRY_MAX       10      /* 429s in a row for one request */
#define MXJ_SYNC_RETRY_WAIT_MAX  60000   /* ms, a retry_after_ms cap */
#define MXJ_SYNC_BODY_MAX        (1024LL * 1024 * 1024)   /* an answer */
#define MXJ_SYNC_WHY_LEN         1024
#define MXJ_SYNC_LIVE_MAX        4096    /* pushed events queued, a room */
#define MXJ_SYNC_LIVE_BATCH      32      /* advanced at once */
#define MXJ_SYNC_LIVE_PASS       32      /* more queued: a pass instead */


/* --- the federation client (ctl_sync_http.c) --------------------------- */

typedef struct mxj_sync_s  mxj_sync_t;

typedef struct {
    mxj_http_t                c;            /* --homeserver; the answer in
                                               c.body, counters */
    const char               *name;         /* origin and destination */
    const mx_signing_key_t   *key;
    long                      timeout;
    mxj_sync_t               *sync;         /* for a stop during waits */

    int64_t                   next_ms;      /* monotonic: the rate's
                                               bucket full again */
    long                      interval;     /* ms between requests */

    long                      status;       /* of the last answer */
    char                      err[CURL_ERROR_SIZE + 128];
} mxj_sync_http_t;

int mxj_sync_http_init(mxj_sync_http_t *h, mxj_sync_t *s);
void mxj_sync_http_free(mxj_sync_http_t *h);

/*
 * One request to the homeserver (uri: path and query, escaped), signed as
 * NAME unless unsigned; content is the JSON body or NULL. A 429 is waited
 * out (retry_after_ms) and the request sent again. The status, or 0 with
 * h->err set (no answer, or a stop); the answer in h->body.
 */
long mxj_sync_http_request(mxj_sync_http_t *h, const char *method,
    const char *uri, const json_t *content, int sign);

/* "403 M_FORBIDDEN: You are banned" for the last answer, into why. */
void mxj_sync_http_why(mxj_sync_http_t *h, const char *what, char *why,
    size_t len);


/* --- server keys, from the homeserver's notary (ctl_sync_http.c) -------- */

typedef struct {
    char                      key_id[MX_KEY_ID_MAX];
    uint8_t                   pk[MX_ED25519_PK_LEN];
    int64_t                   valid_until;  /* ms; INT64_MAX: no limit */
} mxj_sync_key_t;

typedef struct {
    char                     *server;
    mxj_sync_key_t           *keys;
    size_t                    nkeys;
    int64_t                   fetched;      /* monotonic ms, 0: never */
    char                     *why;          /* why it has no keys */
} mxj_sync_server_t;

typedef struct {
    mxj_sync_map_t            servers;      /* name -> mxj_sync_server_t */
} mxj_sync_keyring_t;

/* Keys that need no fetch: NAME's, from the key file. */
int mxj_sync_keyring_add(mxj_sync_keyring_t *ring, const char *server,
    const char *key_id, const uint8_t pk[MX_ED25519_PK_LEN],
    int64_t valid_until);

/*
 * POST /_matrix/key/v2/query for the servers of want whose keys are not
 * known or older than an hour, all at once; each key document's
 * self-signature checked. 0, or -1 with why set (the notary did not
 * answer; a server it has no good document of is no error here: its
 * events fail their signature check).
 */
int mxj_sync_keyring_fetch(mxj_sync_keyring_t *ring, mxj_sync_http_t *h,
    const mxj_sync_ids_t *want, char *why, size_t len);

/* The lookup of mx_event_check_signatures; data is the keyring. */
int mxj_sync_keyring_lookup(void *data, const char *server,
    const char *key_id, uint8_t pk[MX_ED25519_PK_LEN],
    int64_t *valid_until_ts);

/*
 * Forgets when server's keys were asked if that was at least min_age_ms
 * ago (not NAME's key file keys, never asked): 1 when so, and the next
 * mxj_sync_keyring_fetch asks for them.
 */
int mxj_sync_keyring_expire(mxj_sync_keyring_t *ring, const char *server,
    int64_t min_age_ms);

/* Why server has no keys, or NULL. */
const char *mxj_sync_keyring_why(mxj_sync_keyring_t *ring,
    const char *server);

void mxj_sync_keyring_free(mxj_sync_keyring_t *ring);


/* --- the command ------------------------------------------------------- */

typedef struct {
    char                     *arg;          /* as given */
    char                     *alias;        /* the alias given, or NULL */
    char                     *id;           /* the room ID, NULL until
                                               resolved */
    int                       same_as;      /* another arg's room: -1 */

    /* what the last pass of this process left (a cache of Redis) */
    mxj_sync_pool_t           pool;
    char                      generation[33];

    /* under sync->mutex */
    int                       dirty;        /* a push that needs a pass */
    unsigned long             pushes;       /* such pushes */
    mxj_sync_ids_t            live;         /* non-state events pushed,
                                               to advance (ctl_sync_live.c) */
    int                       unsupported;  /* a room version the edge
                                               does not have: not passed
                                               again */

    /* the pass thread's alone */
    unsigned long             passes;       /* make_join probes made */
    unsigned long             pushes_passed; /* pushes at the last one */
    unsigned long             drift;        /* probes that found an
                                               extremity the edge lacked
                                               with no push meanwhile */

    /* --metrics: __atomic (loads), under sync->mutex (the others) */
    uint64_t                  loads;        /* snapshots this process
                                               loaded */
    int                       m_cached;     /* P{R}:meta has loaded_at */
    int64_t                   m_loaded_at;  /* wall ms */
    int                       m_stale;
    int64_t                   m_live_pending;
    int64_t                   m_edge_joins;
} mxj_sync_room_t;


/* What --metrics tells (ctl_sync_metrics.c). */
enum {
    MXJ_SYNC_PASS_LOADED = 0, MXJ_SYNC_PASS_UNCHANGED, MXJ_SYNC_PASS_FAILED,
    MXJ_SYNC_PASS_N
};

enum {
    MXJ_SYNC_TXN_ACCEPTED = 0, MXJ_SYNC_TXN_REPEATED, MXJ_SYNC_TXN_REFUSED,
    MXJ_SYNC_TXN_N
};

typedef struct {
    /* __atomic */
    uint64_t                  passes[MXJ_SYNC_PASS_N];
    uint64_t                  txns[MXJ_SYNC_TXN_N];
    uint64_t                  txn_events;   /* events of managed rooms in
                                               the transactions accepted */
    uint64_t                  live_applied; /* events applied in place */
    uint64_t                  hs[6];        /* homeserver requests: [0] no
                                               answer, [1] 1xx ... [5] 5xx */
    /* under sync->mutex */
    mxj_metrics_hist_t        pass_duration;
} mxj_sync_stats_t;


struct mxj_sync_s {
    mxj_redis_t               r;
    const char               *homeserver;
    const char               *name;
    const char               *key_path;
    mx_signing_key_t          keys[MX_KEYFILE_MAX_KEYS];
    size_t                    nkeys;
    long long                 every;        /* ms, 0: one pass */
    mxj_sync_ids_t            users;        /* --user */
    long                      confirm_passes;
    long                      timeout;
    const char               *as_listen;
    const char               *registration;

    mxj_sync_room_t          *rooms;
    size_t                    nrooms;

    mxj_sync_http_t           http;
    mxj_sync_keyring_t        keyring;

    mxj_run_t                 run;          /* its mutex: the state below */

    /* the Application Service (ctl_sync_as.h) */
    int                       as_fd;
    struct mxj_sync_as_s     *as;
    char                      as_token[MXJ_SYNC_TOKEN_MAX + 1];
    char                      hs_token[MXJ_SYNC_TOKEN_MAX + 1];
    char                     *as_url;
    mxj_sync_ids_t            registered;   /* the room IDs written */

    mxj_metrics_t             metrics;      /* --metrics */
    mxj_sync_stats_t          stats;
    int64_t                   metrics_at;   /* monotonic ms: rooms read */
};


/* One room's pass (docs/sync.md "One pass, per room"): 0, or -1 with why. */
int mxj_sync_pass(mxj_sync_t *s, mxj_sync_room_t *room, char *why,
    size_t len);

/*
 * The per-event advance of the non-state events pushed for a room
 * (docs/sync.md "Following the homeserver"): 0 when each was applied (or
 * already known); 1 when the room needs a pass (why says why, the room
 * is marked stale); -1 when Redis failed.
 */
int mxj_sync_live(mxj_sync_t *s, mxj_sync_room_t *room, char *why,
    size_t len);

/* The room ID of an alias, by the directory query (step 1 alone). */
int mxj_sync_resolve_room(mxj_sync_t *s, mxj_sync_room_t *room, char *why,
    size_t len);

/* --- --metrics (ctl_sync_metrics.c) --------------------------------- */

#define MXJ_SYNC_METRICS_MS      1000    /* the rooms' records read again */

/* The render function of the listener (ctl_metrics.h); data is s. */
int mxj_sync_metrics(void *data, mx_buf_t *out);

/* The main thread: each room's loaded_at, stale, live_pending from Redis
 * (HMGET of its meta), for the listener to show. */
void mxj_sync_metrics_rooms(mxj_sync_t *s);

/* Adds n to a counter of s->stats (any thread). */
#define mxj_sync_count(counter, n)                                            \
    (void) __atomic_add_fetch(&(counter), (n), __ATOMIC_RELAXED)

/* The Application Service: its listener and registration. */
int mxj_sync_as_bind(mxj_sync_t *s);
int mxj_sync_as_start(mxj_sync_t *s);
void mxj_sync_as_stop(mxj_sync_t *s);
int mxj_sync_as_register(mxj_sync_t *s);

#endif /* MXJ_CTL_SYNC_RUN_H */
