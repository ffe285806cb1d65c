/*
 * Copyright (C) nginx-matrix-join authors.
 * A received join PDU, the body of PUT /send_join, checked before any
 * room state is read (reference §2.2, §5, §7):
 *
 *   1. mx_pdu_parse_join(): the body as JSON (canonical rules from v6) and
 *      the PDU format of the room version;
 *   2. mx_pdu_check_join_shape(): a join for this path, by a user of the
 *      requesting server, with its content hash, in the order of the
 *      "what the tests expect" table;
 *   3. the signatures, with keys only the caller has: mx_pdu_join_signers()
 *      names the servers whose keys to fetch, mx_pdu_check_join_signatures()
 *      checks them (mx_event_check_signatures with the mapping below);
 *   4. the auth rules, with mx_auth.
 *
 * Every step fills an mx_pdu_result_t with the status, errcode and a
 * plain-words reason the handler answers with and logs.
 */

#ifndef MX_PDU_H
#define MX_PDU_H

#include <stddef.h>

#include <jansson.h>

#include "mx_event.h"
#include "mx_room_version.h"


#define MX_PDU_MAX_LEN          65536   /* body, and canonical PDU (§7) */
#define MX_PDU_PREV_EVENTS_MAX  20      /* every room version (§7) */
#define MX_PDU_AUTH_EVENTS_MAX  10
#define MX_PDU_REASON_LEN       512


/*
 * Outcomes and what a handler answers with. The statuses follow what
 * Synapse and GMSL answer and what Complement and sytest check (§2.2).
 */
typedef enum {
    MX_PDU_OK = 0,          /* 200 */
    MX_PDU_NOT_JSON,        /* 400 M_NOT_JSON: the body is not JSON */
    MX_PDU_BAD_JSON,        /* 400 M_BAD_JSON: not canonical JSON (v6+),
                               not the version's PDU format, not a join,
                               not the path's room or event, content hash,
                               an authoriser that is not ours */
    MX_PDU_TOO_LARGE,       /* 413 M_TOO_LARGE: the body or the canonical
                               PDU over 65536 bytes; sender, room_id,
                               type, state_key or v1/v2 event_id over 255
                               (Synapse's EventSizeError) */
    MX_PDU_FORBIDDEN,       /* 403 M_FORBIDDEN: the sender is not of the
                               requesting server; a signature is missing,
                               unknown or bad (sytest; not the spec's
                               M_INVALID_PARAM of v1.18) */
    MX_PDU_ERROR            /* 500 M_UNKNOWN: out of memory */
} mx_pdu_e;


typedef struct {
    mx_pdu_e        code;
    int             status;                     /* 200 when MX_PDU_OK */
    const char     *errcode;                    /* NULL when MX_PDU_OK */
    char            reason[MX_PDU_REASON_LEN];  /* for the error body and
                                                   the log */
} mx_pdu_result_t;


/*
 * Parses the body of a send_join for room version rv: at most
 * MX_PDU_MAX_LEN bytes, strictly for rv->strict_json versions (a float,
 * an integer outside +-(2^53-1) or a duplicate key is M_BAD_JSON), then
 * mx_pdu_check_format(). On MX_PDU_OK *pdu is a new reference the caller
 * releases with json_decref(); on any other outcome *pdu is NULL.
 * res may be NULL.
 */
mx_pdu_e mx_pdu_parse_join(const mx_room_version_t *rv, const char *body,
    size_t len, json_t **pdu, mx_pdu_result_t *res);

/*
 * The format of a membership PDU as send_join receives it, for an already
 * parsed value (what mx_pdu_parse_join checks after parsing):
 *   - room_id, sender, type, state_key: strings without NUL, at most 255
 *     bytes; room_id a room ID (v12: also "!" + hash), sender a user ID;
 *   - content an object; hashes.sha256 a string; signatures an object;
 *   - depth an integer in [0, rv->max_depth]; origin_server_ts an integer;
 *   - prev_events a list of at most 20, auth_events of at most 10, each
 *     entry an event ID string (v3+) or an [event ID, {"sha256": string}]
 *     pair (v1, v2: rv->event_refs_with_hashes);
 *   - v1, v2: event_id a "$opaque:server" string of at most 255 bytes;
 *   - v6+: canonical JSON values only (no floats, integers in range);
 *   - the whole PDU at most 65536 bytes as canonical JSON (v1-v5 floats,
 *     which canonical JSON cannot write, are measured as jansson writes
 *     them).
 * "origin" is neither required nor read: joining servers copy the
 * template, which may lack it or name the resident (§2).
 */
mx_pdu_e mx_pdu_check_format(const mx_room_version_t *rv, const json_t *pdu,
    mx_pdu_result_t *res);

/*
 * What makes a well-formed PDU a join this request may send, checked in
 * this order (the first failure is reported):
 *   1. room_id equals path_room_id                         400 M_BAD_JSON
 *   2. its event ID (computed for v3+, carried for v1/v2)
 *      equals path_event_id                                400 M_BAD_JSON
 *   3. type m.room.member, content.membership join,
 *      state_key equal to sender                           400 M_BAD_JSON
 *   4. the sender's server is origin, the requesting
 *      server as X-Matrix verified it                      403 M_FORBIDDEN
 *   5. the content hash matches (a mismatched event would
 *      be treated as redacted: refused, not rewritten)     400 M_BAD_JSON
 *   6. v8+ (rv->restricted): a
 *      content.join_authorised_via_users_server is a user
 *      of server, our own name (§2.3)                      400 M_BAD_JSON
 * A v1-v5 join holding a float outside "unsigned" fails at 5: the core's
 * canonical JSON writes no floats, so its content hash cannot be made.
 * pdu must have passed mx_pdu_check_format(). The strings are
 * NUL-terminated and compared byte for byte. event_id (may be NULL)
 * receives the event's ID as soon as it is known, "" before; the caller
 * keeps it for the outbox and the log. res may be NULL.
 */
mx_pdu_e mx_pdu_check_join_shape(const mx_room_version_t *rv,
    const json_t *pdu, const char *path_room_id, const char *path_event_id,
    const char *origin, const char *server, char event_id[MX_EVENT_ID_MAX],
    mx_pdu_result_t *res);

/*
 * The servers that must have signed the join, whose keys the caller
 * fetches before mx_pdu_check_join_signatures(): the sender's server and,
 * in v1/v2, the event ID's server when it differs (it is
 * mx_event_required_signers()). The resident's own signature of a
 * restricted join (§2.3) is added after the checks and is not asked of
 * the joiner. Returns the count (1 or 2), or -1 with res 400 M_BAD_JSON.
 */
int mx_pdu_join_signers(const mx_room_version_t *rv, const json_t *pdu,
    char names[2][256], mx_pdu_result_t *res);

/*
 * mx_event_check_signatures() with lookup, mapped for send_join: a
 * missing, unknown, expired (v5+) or bad signature of a required signer
 * is 403 M_FORBIDDEN, as sytest expects ("rejects incorrectly-signed
 * joins"). A caller using mx_event_check_signatures() directly answers
 * its failure the same way.
 */
mx_pdu_e mx_pdu_check_join_signatures(const mx_room_version_t *rv,
    const json_t *pdu, mx_key_lookup_pt lookup, void *data,
    mx_pdu_result_t *res);

#endif /* MX_PDU_H */
