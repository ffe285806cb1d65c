/*
 * Copyright (C) nginx-matrix-join authors.
 * Events (PDUs): content hash, redaction, reference hash, event IDs,
 * signing and signature checking, per room version.
 */

#ifndef MX_EVENT_H
#define MX_EVENT_H

#include <jansson.h>
#include "mx_util.h"
#include "mx_crypto.h"
#include "mx_room_version.h"

#define MX_EVENT_ID_MAX  256    /* 255 bytes + NUL */

/*
 * SHA-256 of the canonical JSON of ev without "unsigned", "signatures",
 * "hashes" (and the legacy "age_ts", "outlier", "destinations").
 */
int mx_event_content_hash(const json_t *ev, uint8_t out[MX_SHA256_LEN],
    mx_err_t *err);

/* Sets ev.hashes = {"sha256": <unpadded std b64 content hash>}. */
int mx_event_set_content_hash(json_t *ev, mx_err_t *err);

/* 0 when ev.hashes.sha256 matches the content hash; -1 with err otherwise
 * (missing, not base64, mismatch). */
int mx_event_check_content_hash(const json_t *ev, mx_err_t *err);

/*
 * The redacted copy of ev under rv's algorithm (top-level keys and content
 * keys kept, per reference §5.6/5.7; v12 create events lose room_id).
 * Returns a new reference, NULL only on allocation failure.
 */
json_t *mx_event_redact(const mx_room_version_t *rv, const json_t *ev);

/* SHA-256 of the canonical JSON of the redacted event without
 * "signatures" and "unsigned" ("hashes" stays). */
int mx_event_reference_hash(const mx_room_version_t *rv, const json_t *ev,
    uint8_t out[MX_SHA256_LEN], mx_err_t *err);

/*
 * The event ID into buf (cap >= MX_EVENT_ID_MAX recommended):
 * v1/v2: the "event_id" field (must be a string "$...:server");
 * v3: "$" + std b64 reference hash; v4+: "$" + url-safe.
 * Returns its length, or -1.
 */
long mx_event_id(const mx_room_version_t *rv, const json_t *ev, char *buf,
    size_t cap, mx_err_t *err);

/*
 * v12: the room ID implied by a create event ("!" + url-safe ref hash).
 * Returns its length or -1.
 */
long mx_event_room_id_from_create(const mx_room_version_t *rv,
    const json_t *create, char *buf, size_t cap, mx_err_t *err);

/*
 * Signs ev in place as `server` with k: sets the content hash, redacts,
 * signs the redacted form, copies signatures[server][key_id] back onto ev
 * (other signatures are kept).
 */
int mx_event_sign(const mx_room_version_t *rv, json_t *ev, const char *server,
    const mx_signing_key_t *k, mx_err_t *err);

/* Verifies signatures[server][key_id] on the redacted form of ev. */
int mx_event_verify_signature(const mx_room_version_t *rv, const json_t *ev,
    const char *server, const char *key_id,
    const uint8_t pk[MX_ED25519_PK_LEN], mx_err_t *err);

/*
 * Key lookup for mx_event_check_signatures: fill pk and *valid_until_ts
 * (ms; INT64_MAX for "no expiry known") for server's key_id. Return 0 when
 * found, -1 when unknown.
 */
typedef int (*mx_key_lookup_pt)(void *data, const char *server,
    const char *key_id, uint8_t pk[MX_ED25519_PK_LEN],
    int64_t *valid_until_ts);

/*
 * The servers that must have signed ev: the sender's server and, for
 * v1/v2, the event_id's server when it differs. Writes up to 2 pointers
 * into ev's own strings (NUL-terminated copies in names[i], each up to 256
 * bytes). Returns the count or -1.
 */
int mx_event_required_signers(const mx_room_version_t *rv, const json_t *ev,
    char names[2][256], mx_err_t *err);

/*
 * Full signature check of a received event: for every required signer,
 * every signature under an "ed25519:" key id that lookup knows must verify,
 * and at least one must exist. For v5+ (rv->enforce_key_validity) a key
 * whose valid_until_ts < origin_server_ts is treated as unknown.
 * 0 or -1 with err naming the server and key.
 */
int mx_event_check_signatures(const mx_room_version_t *rv, const json_t *ev,
    mx_key_lookup_pt lookup, void *data, mx_err_t *err);

#endif /* MX_EVENT_H */
