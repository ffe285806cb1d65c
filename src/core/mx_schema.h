/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The Redis schema: the one contract between the nginx module and
 * matrix-join-ctl (docs/redis-schema.md describes it; this header is its
 * source). Key names, field names, the schema version and the hash-tag
 * rule live here and nowhere else; the module and the CLI build every key
 * with mx_schema_room_key() / mx_schema_global_key().
 */

#ifndef MX_SCHEMA_H
#define MX_SCHEMA_H

#include <stddef.h>


/* "P schema" holds this; both sides refuse any other value */
#define MX_SCHEMA_VERSION          "1"
#define MX_SCHEMA_PREFIX_DEFAULT   "mxj:"


/* Global keys: P + name (+ argument for the two families). */
#define MX_KEY_SCHEMA              "schema"
#define MX_KEY_ROOMS               "rooms"
#define MX_KEY_ALIAS               "alias:"     /* + room alias */
#define MX_KEY_KEYS                "keys:"      /* + server name */
#define MX_KEY_OUTBOX_ROOMS        "outbox:rooms"


/*
 * Per-room keys: P{R}:suffix. The hash tag {R} keeps every key of a room
 * in one Cluster slot, so each script names all its keys in KEYS.
 */
#define MX_KEY_META                "meta"
#define MX_KEY_STATE               "state"
#define MX_KEY_MEMBER              "member"
#define MX_KEY_PDU                 "pdu"
#define MX_KEY_STATE_NM            "state_nm"
#define MX_KEY_STATE_M             "state_m"
#define MX_KEY_AUTH                "auth"
#define MX_KEY_EXTREM              "extrem"
#define MX_KEY_RATE                "rate"
#define MX_KEY_SERVER_USER         "server_user"
#define MX_KEY_SERVERS             "servers"
#define MX_KEY_MCHUNK              "mchunk"
#define MX_KEY_AUTH_NM             "auth_nm"
#define MX_KEY_PARTIAL             "partial"
#define MX_KEY_MEVENT              "mevent"
#define MX_KEY_EDGE                "edge"
#define MX_KEY_EDGE_PDU            "edge_pdu"
#define MX_KEY_EDGE_M              "edge_m"
#define MX_KEY_EDGE_ORIG           "edge_orig"
#define MX_KEY_EDGE_OLD            "edge_old"
#define MX_KEY_OUTBOX              "outbox"
#define MX_KEY_DEAD                "dead"
#define MX_KEY_DELIVERED           "delivered"
#define MX_KEY_UNCONFIRMED         "unconfirmed"
#define MX_KEY_FWDLOCK             "fwdlock"
#define MX_KEY_LOADLOCK            "loadlock"

/* a load's generations: P{R}:load:X staged, P{R}:old:X replaced */
#define MX_KEY_GEN_LOAD            "load:"
#define MX_KEY_GEN_OLD             "old:"


/* P{R}:meta fields (docs/redis-schema.md, "P{R}:meta fields") */
#define MX_META_SCHEMA             "schema"
#define MX_META_ROOM_ID            "room_id"
#define MX_META_ROOM_VERSION       "room_version"
#define MX_META_CREATE_EVENT_ID    "create_event_id"
#define MX_META_LOADED_AT          "loaded_at"
#define MX_META_STATE_EVENTS       "state_events"
#define MX_META_MEMBERS            "members"
#define MX_META_MEMBER_EVENTS      "member_events"
#define MX_META_AUTH_CHAIN         "auth_chain"
#define MX_META_EXTREMITIES        "extremities"
#define MX_META_MAX_DEPTH          "max_depth"
#define MX_META_SERVERS            "servers"
#define MX_META_STALE              "stale"
#define MX_META_BYTES              "bytes"
#define MX_META_GENERATION         "generation"
#define MX_META_NM_UNREFERENCED    "nm_unreferenced"
#define MX_META_EDGE_SEQ           "edge_seq"
#define MX_META_HEROES             "heroes"
#define MX_META_SYNCED_FROM        "synced_from"
#define MX_META_SYNCED_EXTREMITIES "synced_extremities"
#define MX_META_STALE_REASON       "stale_reason"
#define MX_META_LIVE_PENDING       "live_pending"
#define MX_META_EDGE_JOINS         "edge_joins"
#define MX_META_LIVE_EVENTS        "live_events"
#define MX_META_LIVE_AT            "live_at"
#define MX_META_STATE_BEFORE       "state_before"


/*
 * The outbox entry (P{R}:outbox stream): written by the module's accept
 * script (src/lua/send_join_accept.lua), read by the forwarder.
 */
#define MX_OUTBOX_METHOD           "method"
#define MX_OUTBOX_URI              "uri"
#define MX_OUTBOX_AUTHORIZATION    "authorization"
#define MX_OUTBOX_BODY             "body"
#define MX_OUTBOX_ORIGIN           "origin"
#define MX_OUTBOX_DESTINATION      "destination"
#define MX_OUTBOX_ROOM_ID          "room_id"
#define MX_OUTBOX_EVENT_ID         "event_id"
#define MX_OUTBOX_RECEIVED_TS      "received_ts"


/*
 * A prefix may not hold a brace (it would move the hash tag), a space or a
 * control character. Returns 1 when prefix[0..len) is valid.
 */
int mx_schema_prefix_valid(const char *prefix, size_t len);

/*
 * Writes "P{R}:suffix" into out (at most size bytes, NUL-terminated when
 * it fits). Returns the key's length without the NUL, whether or not it
 * fitted: a caller sizes its buffer with a first call of size 0.
 */
size_t mx_schema_room_key(char *out, size_t size, const char *prefix,
    size_t prefix_len, const char *room, size_t room_len, const char *suffix);

/* Writes "P" + name + arg (arg may be NULL); as mx_schema_room_key(). */
size_t mx_schema_global_key(char *out, size_t size, const char *prefix,
    size_t prefix_len, const char *name, const char *arg, size_t arg_len);

#endif /* MX_SCHEMA_H */
