/*
 * Copyright (C) nginx-matrix-join authors.
 * Room snapshots: the document matrix-join-ctl loads, parsed and checked,
 * and the model the loader writes to Redis (docs/redis-schema.md).
 *
 * The document:
 *   {"room_version": "10", "state": [PDU...], "auth_chain": [PDU...],
 *    "forward_extremities": [PDU...], "aliases": ["#a:example.org"]}
 * PDUs are as sent over federation (v1/v2 carry event_id, v3+ do not).
 */

#ifndef MX_SNAPSHOT_H
#define MX_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "mx_util.h"
#include "mx_crypto.h"
#include "mx_id.h"
#include "mx_event.h"
#include "mx_room_version.h"


/* Chunks are at most 64 KiB (the schema's limit) unless one PDU is larger. */
#define MX_SNAPSHOT_CHUNK_MAX   65536

/* unpadded base64 of a SHA-256, with the NUL */
#define MX_SNAPSHOT_SHA256_B64  44

/* at most this many heroes (the module drops the joiner, keeps 5) */
#define MX_SNAPSHOT_HEROES      6


/* The chunked lists of the schema. */
typedef enum {
    MX_SNAPSHOT_STATE_NM = 0,   /* state, type != m.room.member */
    MX_SNAPSHOT_STATE_M,        /* state, m.room.member */
    MX_SNAPSHOT_AUTH,           /* auth chain */
    MX_SNAPSHOT_AUTH_NM,        /* the partial state's auth chain: see
                                   mx_snapshot_t.heroes */
    MX_SNAPSHOT_NLISTS
} mx_snapshot_list_e;


/* One event of state or auth chain (stored once when in both). */
typedef struct {
    char           *id;         /* event ID, NUL-terminated */
    char           *pdu;        /* canonical PDU bytes, NUL-terminated */
    size_t          pdu_len;
    char           *state_key;  /* canonical ["type","state_key"], state
                                   events only, else NULL */
    char           *user;       /* the state_key of a member event in
                                   state (a user ID), else NULL */
    char           *membership; /* its content.membership, else NULL */
    int64_t         depth;
    size_t          auth_off;   /* its auth_events, as event indices: */
    size_t          auth_n;     /* snap->auth_refs[auth_off..+auth_n) */
    unsigned        in_state:1;
    unsigned        in_auth:1;
    unsigned        member:1;   /* m.room.member in state */
    unsigned        partial:1;  /* in the partial state (omit_members):
                                   non-member state, heroes' members */
    unsigned        in_auth_nm:1;  /* in the partial state's auth chain */
} mx_snapshot_event_t;


typedef struct {
    size_t          first;      /* index into the list's events */
    size_t          count;
    size_t          bytes;      /* PDU bytes plus the commas between */
} mx_snapshot_chunk_t;


typedef struct {
    size_t                *events;     /* indices into snap->events */
    size_t                 n;
    mx_snapshot_chunk_t   *chunks;
    size_t                 nchunks;
} mx_snapshot_list_t;


typedef struct {
    char            id[MX_EVENT_ID_MAX];
    int64_t         depth;
    char            sha256[MX_SNAPSHOT_SHA256_B64]; /* std b64 ref hash */
} mx_snapshot_extrem_t;


typedef struct {
    const mx_room_version_t  *rv;
    char                      room_id[MX_ID_MAX_LEN + 1];
    char                      create_event_id[MX_EVENT_ID_MAX];

    mx_snapshot_event_t      *events;
    size_t                    nevents;

    mx_snapshot_list_t        lists[MX_SNAPSHOT_NLISTS];

    mx_snapshot_extrem_t     *extrem;
    size_t                    nextrem;

    char                    **aliases;
    size_t                    naliases;

    /* the counts of the schema's meta hash */
    size_t                    state_events;
    size_t                    member_events;
    size_t                    members;        /* membership "join" */
    size_t                    auth_chain;
    int64_t                   max_depth;      /* among the extremities */
    uint64_t                  bytes;          /* state + auth chain PDUs,
                                                 as the chunks hold them */

    /* every event's auth_events, resolved to event indices */
    size_t                   *auth_refs;
    size_t                    nauth_refs;

    /*
     * The partial state (send_join with omit_members): every non-member
     * state event and the heroes' member events; its auth chain
     * (lists[MX_SNAPSHOT_AUTH_NM]) is the closure over auth_events of
     * the partial state minus the partial state itself.
     *
     * named: state has m.room.name or m.room.canonical_alias (state key
     * ""), then there are no heroes. Otherwise the heroes are the member
     * events of up to MX_SNAPSHOT_HEROES members with membership join or
     * invite, or when there are none, leave or ban; by depth, then
     * event ID (bytes), as event indices.
     */
    unsigned                  named:1;
    size_t                    heroes[MX_SNAPSHOT_HEROES];
    size_t                    nheroes;

    /* the ID index of mx_snapshot_find: event index + 1, 0 is empty */
    size_t                   *index;
    size_t                    index_cap;
} mx_snapshot_t;


/*
 * What was wrong: where names the event ("state[3] ($abc...)") or the
 * part of the document ("room_version", "aliases[0]", "document");
 * reason says why ("content hash mismatch").
 */
typedef struct {
    char            where[384];
    char            reason[256];
} mx_snapshot_err_t;


/* Called now and then while parsing: bytes of the document done so far. */
typedef void (*mx_snapshot_progress_pt)(void *data, size_t done,
    size_t total);

/*
 * Parses and checks the snapshot document buf[0..len). On success *out is
 * a new model (mx_snapshot_free) and 0 is returned; on failure -1 with
 * err filled. buf is not needed after the call. progress may be NULL.
 */
int mx_snapshot_parse(const char *buf, size_t len,
    mx_snapshot_progress_pt progress, void *data, mx_snapshot_t **out,
    mx_snapshot_err_t *err);

void mx_snapshot_free(mx_snapshot_t *snap);

/* Event i of the given list. */
#define mx_snapshot_list_event(snap, l, i)                                    \
    (&(snap)->events[(snap)->lists[l].events[i]])

/*
 * Appends chunk c of list l (canonical PDUs joined by ',') to out.
 * 0 or -1 (out of memory).
 */
int mx_snapshot_chunk(const mx_snapshot_t *snap, mx_snapshot_list_e l,
    size_t c, mx_buf_t *out);

/*
 * Where entry i of list l lies in the list's chunks: the chunk *c and the
 * byte offset *off of the PDU's first byte ('{') inside it; the PDU is
 * mx_snapshot_list_event(snap, l, i)->pdu_len bytes from there.
 */
void mx_snapshot_locate(const mx_snapshot_t *snap, mx_snapshot_list_e l,
    size_t i, size_t *c, size_t *off);

/* Index of the event with ID id, or -1. */
long mx_snapshot_find(const mx_snapshot_t *snap, const char *id);

#endif /* MX_SNAPSHOT_H */
