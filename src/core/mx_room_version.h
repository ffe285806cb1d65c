/*
 * Copyright (C) nginx-matrix-join authors.
 * Room versions as data: one row per version, the facts code branches on.
 * Code asks the row (rv->knock), never compares version strings.
 */

#ifndef MX_ROOM_VERSION_H
#define MX_ROOM_VERSION_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MX_EVENT_ID_SERVER = 1,     /* v1, v2: "$opaque:domain", a PDU field */
    MX_EVENT_ID_HASH_STD,       /* v3: "$" + std unpadded b64 ref hash */
    MX_EVENT_ID_HASH_URL        /* v4+: "$" + url-safe unpadded b64 */
} mx_event_id_format_e;

/* Redaction algorithms, named by the version that introduced them. */
typedef enum {
    MX_REDACT_V1 = 1,   /* v1-v5: m.room.aliases keeps "aliases" */
    MX_REDACT_V6,       /* v6, v7: aliases no longer special */
    MX_REDACT_V8,       /* v8: join_rules keeps "allow" */
    MX_REDACT_V9,       /* v9, v10: member keeps join_authorised_via_users_server */
    MX_REDACT_V11       /* v11, v12: MSC2176/MSC3821/MSC3989 */
} mx_redaction_e;

typedef struct {
    const char             *id;                 /* "1" ... "12" */
    mx_event_id_format_e    event_id_format;
    mx_redaction_e          redaction;
    int64_t                 max_depth;          /* depth must be <= this */

    unsigned                event_refs_with_hashes:1; /* v1/v2 [id,{sha256}] */
    unsigned                aliases_auth_rule:1;      /* v1-v5 */
    unsigned                enforce_key_validity:1;   /* v5+ */
    unsigned                strict_json:1;            /* v6+ */
    unsigned                knock:1;                  /* v7+ */
    unsigned                restricted:1;             /* v8+ */
    unsigned                knock_restricted:1;       /* v10+ */
    unsigned                integer_power_levels:1;   /* v10+ */
    unsigned                creator_is_sender:1;      /* v11+ */
    unsigned                create_in_auth_events:1;  /* v1-v11 */
    unsigned                room_id_from_create:1;    /* v12 */
    unsigned                additional_creators:1;    /* v12 */
    unsigned                creators_infinite_power:1;/* v12 */
} mx_room_version_t;

/* The row for id[0..len), or NULL for a version we do not know. */
const mx_room_version_t *mx_room_version(const char *id, size_t len);

/* All known rows in order, *n set to their number. */
const mx_room_version_t *mx_room_versions(size_t *n);

#endif /* MX_ROOM_VERSION_H */
