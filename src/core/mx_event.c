/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <string.h>

#include "mx_base64.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_event.h"


#define MX_ED25519_PREFIX      "ed25519:"
#define MX_ED25519_PREFIX_LEN  (sizeof(MX_ED25519_PREFIX) - 1)


/*
 * A content key that survives redaction for events of one type, from
 * redaction algorithm "from" to "to" (the enum is ordered by version).
 */
typedef struct {
    const char      *type;
    const char      *key;       /* NULL: every key of the content */
    mx_redaction_e   from;
    mx_redaction_e   to;
    unsigned         signed_only:1;  /* keep an object's "signed" only */
} mx_redact_rule_t;


static json_t *mx_event_strip_copy(const json_t *ev,
    const char *const *drop);
static int mx_event_hash_of(const json_t *obj, uint8_t out[MX_SHA256_LEN],
    mx_err_t *err);
static int mx_event_redact_content(const mx_room_version_t *rv,
    const char *type, const json_t *content, json_t *out);
static long mx_event_hash_id(const mx_room_version_t *rv, const json_t *ev,
    char sigil, int alphabet, char *buf, size_t cap, mx_err_t *err);
static int mx_event_signer(const json_t *ev, const char *field, char sigil,
    char name[256], mx_err_t *err);


/* Not hashed by the content hash: reference §5.4, Synapse's legacy keys */
static const char *const  mx_event_hash_drop[] = {
    "unsigned", "signatures", "hashes", "age_ts", "outlier", "destinations",
    NULL
};

/* Not part of the reference hash (§5.4); "hashes" stays */
static const char *const  mx_event_ref_drop[] = {
    "signatures", "unsigned", NULL
};

/* Top-level keys kept by redaction (§5.6); "content" is handled apart */
static const char *const  mx_redact_keys_v1[] = {
    "event_id", "type", "room_id", "sender", "state_key", "hashes",
    "signatures", "depth", "prev_events", "prev_state", "auth_events",
    "origin", "origin_server_ts", "membership", NULL
};

static const char *const  mx_redact_keys_v11[] = {
    "event_id", "type", "room_id", "sender", "state_key", "hashes",
    "signatures", "depth", "prev_events", "auth_events", "origin_server_ts",
    NULL
};

/* Content keys kept by redaction (§5.7) */
static const mx_redact_rule_t  mx_redact_rules[] = {
    { "m.room.member", "membership", MX_REDACT_V1, MX_REDACT_V11, 0 },
    { "m.room.member", "join_authorised_via_users_server",
      MX_REDACT_V9, MX_REDACT_V11, 0 },
    { "m.room.member", "third_party_invite", MX_REDACT_V11, MX_REDACT_V11, 1 },

    { "m.room.create", "creator", MX_REDACT_V1, MX_REDACT_V9, 0 },
    { "m.room.create", NULL, MX_REDACT_V11, MX_REDACT_V11, 0 },

    { "m.room.join_rules", "join_rule", MX_REDACT_V1, MX_REDACT_V11, 0 },
    { "m.room.join_rules", "allow", MX_REDACT_V8, MX_REDACT_V11, 0 },

    { "m.room.power_levels", "ban", MX_REDACT_V1, MX_REDACT_V11, 0 },
    { "m.room.power_levels", "events", MX_REDACT_V1, MX_REDACT_V11, 0 },
    { "m.room.power_levels", "events_default", MX_REDACT_V1, MX_REDACT_V11,
      0 },
    { "m.room.power_levels", "kick", MX_REDACT_V1, MX_REDACT_V11, 0 },
    { "m.room.power_levels", "redact", MX_REDACT_V1, MX_REDACT_V11, 0 },
    { "m.room.power_levels", "state_default", MX_REDACT_V1, MX_REDACT_V11,
      0 },
    { "m.room.power_levels", "users", MX_REDACT_V1, MX_REDACT_V11, 0 },
    { "m.room.power_levels", "users_default", MX_REDACT_V1, MX_REDACT_V11,
      0 },
    { "m.room.power_levels", "invite", MX_REDACT_V11, MX_REDACT_V11, 0 },

    { "m.room.history_visibility", "history_visibility",
      MX_REDACT_V1, MX_REDACT_V11, 0 },

    { "m.room.aliases", "aliases", MX_REDACT_V1, MX_REDACT_V1, 0 },

    { "m.room.redaction", "redacts", MX_REDACT_V11, MX_REDACT_V11, 0 },

    { NULL, NULL, 0, 0, 0 }
};


int
mx_event_content_hash(const json_t *ev, uint8_t out[MX_SHA256_LEN],
    mx_err_t *err)
{
    int      rc;
    json_t  *copy;

    if (!json_is_object(ev)) {
        mx_err_set(err, "event is not an object");
        return -1;
    }

    copy = mx_event_strip_copy(ev, mx_event_hash_drop);
    if (copy == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    rc = mx_event_hash_of(copy, out, err);

    json_decref(copy);

    return rc;
}


int
mx_event_set_content_hash(json_t *ev, mx_err_t *err)
{
    char     b64[mx_b64_encoded_len(MX_SHA256_LEN) + 1];
    json_t  *hashes;
    uint8_t  hash[MX_SHA256_LEN];

    if (mx_event_content_hash(ev, hash, err) != 0) {
        return -1;
    }

    mx_b64_encode(b64, hash, sizeof(hash), MX_B64_STD);

    hashes = json_pack("{ss}", "sha256", b64);

    if (hashes == NULL || json_object_set_new(ev, "hashes", hashes) != 0) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    return 0;
}


int
mx_event_check_content_hash(const json_t *ev, mx_err_t *err)
{
    long         n;
    json_t      *s;
    uint8_t      got[mx_b64_decoded_max(44)], want[MX_SHA256_LEN];
    const char  *b64;

    s = json_object_get(json_object_get(ev, "hashes"), "sha256");

    if (!json_is_string(s)) {
        mx_err_set(err, "event has no hashes.sha256");
        return -1;
    }

    b64 = json_string_value(s);

    /* 43 characters, 44 when padded */
    n = (json_string_length(s) > 44)
        ? -1
        : mx_b64_decode(got, sizeof(got), b64, json_string_length(s),
                        MX_B64_STD);

    if (n != MX_SHA256_LEN) {
        mx_err_set(err, "hashes.sha256 is not base64 of %d bytes",
                   MX_SHA256_LEN);
        return -1;
    }

    if (mx_event_content_hash(ev, want, err) != 0) {
        return -1;
    }

    if (memcmp(got, want, MX_SHA256_LEN) != 0) {
        mx_err_set(err, "content hash mismatch");
        return -1;
    }

    return 0;
}


json_t *
mx_event_redact(const mx_room_version_t *rv, const json_t *ev)
{
    json_t             *out, *v, *content;
    const char         *type;
    const char *const  *key;

    out = json_object();
    if (out == NULL) {
        return NULL;
    }

    type = json_string_value(json_object_get(ev, "type"));

    key = (rv->redaction >= MX_REDACT_V11) ? mx_redact_keys_v11
                                           : mx_redact_keys_v1;

    for ( /* void */ ; *key; key++) {
        v = json_object_get(ev, *key);
        if (v == NULL) {
            continue;
        }

        /* v12: the room ID is derived from the create event's ID */

        if (rv->room_id_from_create
            && type != NULL && strcmp(type, "m.room.create") == 0
            && strcmp(*key, "room_id") == 0)
        {
            continue;
        }

        if (json_object_set_new(out, *key, json_deep_copy(v)) != 0) {
            goto failed;
        }
    }

    /* "content" is always there after redaction, even if emptied */

    content = json_object();
    if (content == NULL) {
        goto failed;
    }

    if (json_object_set_new(out, "content", content) != 0) {
        goto failed;
    }

    if (mx_event_redact_content(rv, type, json_object_get(ev, "content"),
                                content)
        != 0)
    {
        goto failed;
    }

    return out;

failed:

    json_decref(out);
    return NULL;
}


int
mx_event_reference_hash(const mx_room_version_t *rv, const json_t *ev,
    uint8_t out[MX_SHA256_LEN], mx_err_t *err)
{
    int      rc;
    json_t  *red, *copy;

    if (!json_is_object(ev)) {
        mx_err_set(err, "event is not an object");
        return -1;
    }

    red = mx_event_redact(rv, ev);
    if (red == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    copy = mx_event_strip_copy(red, mx_event_ref_drop);

    json_decref(red);

    if (copy == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    rc = mx_event_hash_of(copy, out, err);

    json_decref(copy);

    return rc;
}


long
mx_event_id(const mx_room_version_t *rv, const json_t *ev, char *buf,
    size_t cap, mx_err_t *err)
{
    size_t       len, slen;
    json_t      *id;
    const char  *s, *server;

    switch (rv->event_id_format) {

    case MX_EVENT_ID_HASH_STD:
        return mx_event_hash_id(rv, ev, '$', MX_B64_STD, buf, cap, err);

    case MX_EVENT_ID_HASH_URL:
        return mx_event_hash_id(rv, ev, '$', MX_B64_URL, buf, cap, err);

    default: /* MX_EVENT_ID_SERVER */
        break;
    }

    id = json_object_get(ev, "event_id");

    if (!json_is_string(id)) {
        mx_err_set(err, "event has no event_id");
        return -1;
    }

    s = json_string_value(id);
    len = json_string_length(id);

    server = mx_id_server(s, len, '$', &slen);

    if (len > MX_ID_MAX_LEN || server == NULL
        || server - 1 == s + 1
        || memchr(s, '\0', len) != NULL
        || !mx_server_name_valid(server, slen))
    {
        mx_err_set(err, "invalid event_id \"%.128s\"", s);
        return -1;
    }

    if (len >= cap) {
        mx_err_set(err, "event_id buffer too small");
        return -1;
    }

    memcpy(buf, s, len + 1);

    return (long) len;
}


long
mx_event_room_id_from_create(const mx_room_version_t *rv,
    const json_t *create, char *buf, size_t cap, mx_err_t *err)
{
    const char  *type;

    if (!rv->room_id_from_create) {
        mx_err_set(err, "room version %s does not derive room IDs from the "
                   "create event", rv->id);
        return -1;
    }

    type = json_string_value(json_object_get(create, "type"));

    if (type == NULL || strcmp(type, "m.room.create") != 0) {
        mx_err_set(err, "not an m.room.create event");
        return -1;
    }

    return mx_event_hash_id(rv, create, '!', MX_B64_URL, buf, cap, err);
}


int
mx_event_sign(const mx_room_version_t *rv, json_t *ev, const char *server,
    const mx_signing_key_t *k, mx_err_t *err)
{
    json_t  *red, *sig, *sigs, *mine;

    sigs = json_object_get(ev, "signatures");

    if (sigs != NULL && !json_is_object(sigs)) {
        mx_err_set(err, "\"signatures\" is not an object");
        return -1;
    }

    if (mx_event_set_content_hash(ev, err) != 0) {
        return -1;
    }

    red = mx_event_redact(rv, ev);
    if (red == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    if (mx_json_sign(red, server, k, err) != 0) {
        json_decref(red);
        return -1;
    }

    sig = json_object_get(json_object_get(json_object_get(red, "signatures"),
                                          server),
                          k->key_id);

    if (sig == NULL) {
        json_decref(red);
        mx_err_set(err, "signature missing after signing");
        return -1;
    }

    json_incref(sig);
    json_decref(red);

    /* mx_json_sign() checked that signatures[server] is an object */

    if (sigs == NULL) {
        sigs = json_object();
        if (sigs == NULL || json_object_set_new(ev, "signatures", sigs) != 0) {
            goto nomem;
        }
    }

    mine = json_object_get(sigs, server);

    if (mine == NULL) {
        mine = json_object();
        if (mine == NULL || json_object_set_new(sigs, server, mine) != 0) {
            goto nomem;
        }
    }

    if (json_object_set_new(mine, k->key_id, sig) != 0) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    return 0;

nomem:

    json_decref(sig);
    mx_err_set(err, "out of memory");
    return -1;
}


int
mx_event_verify_signature(const mx_room_version_t *rv, const json_t *ev,
    const char *server, const char *key_id,
    const uint8_t pk[MX_ED25519_PK_LEN], mx_err_t *err)
{
    int      rc;
    json_t  *red;

    red = mx_event_redact(rv, ev);
    if (red == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    rc = mx_json_verify(red, server, key_id, pk, err);

    json_decref(red);

    return rc;
}


int
mx_event_required_signers(const mx_room_version_t *rv, const json_t *ev,
    char names[2][256], mx_err_t *err)
{
    if (mx_event_signer(ev, "sender", '@', names[0], err) != 0) {
        return -1;
    }

    /* v1, v2: the server that chose the event ID signs too (§5.4) */

    if (rv->event_id_format != MX_EVENT_ID_SERVER) {
        return 1;
    }

    if (mx_event_signer(ev, "event_id", '$', names[1], err) != 0) {
        return -1;
    }

    return strcmp(names[0], names[1]) == 0 ? 1 : 2;
}


int
mx_event_check_signatures(const mx_room_version_t *rv, const json_t *ev,
    mx_key_lookup_pt lookup, void *data, mx_err_t *err)
{
    int          i, n, verified, rc;
    long         len;
    char         names[2][256];
    json_t      *red, *sigs, *mine, *s;
    int64_t      ts, valid_until;
    uint8_t      pk[MX_ED25519_PK_LEN], sig[MX_ED25519_SIG_LEN + 3];
    mx_buf_t     bytes = MX_BUF_INIT;
    const char  *key_id;

    n = mx_event_required_signers(rv, ev, names, err);
    if (n < 0) {
        return -1;
    }

    ts = 0;

    if (rv->enforce_key_validity) {
        s = json_object_get(ev, "origin_server_ts");

        if (!json_is_integer(s)) {
            mx_err_set(err, "event has no integer origin_server_ts");
            return -1;
        }

        ts = json_integer_value(s);
    }

    red = mx_event_redact(rv, ev);
    if (red == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    rc = -1;

    /* the signed bytes are the same for every signature: build them once */

    if (mx_json_signing_bytes(red, &bytes, err) != 0) {
        goto done;
    }

    sigs = json_object_get(red, "signatures");

    for (i = 0; i < n; i++) {
        mine = json_object_get(sigs, names[i]);

        if (!json_is_object(mine)) {
            mx_err_set(err, "no signatures by \"%.128s\"", names[i]);
            goto done;
        }

        verified = 0;

        json_object_foreach(mine, key_id, s) {

            /* other algorithms are ignored (§5.3) */

            if (strncmp(key_id, MX_ED25519_PREFIX, MX_ED25519_PREFIX_LEN)
                != 0)
            {
                continue;
            }

            valid_until = INT64_MAX;

            if (lookup(data, names[i], key_id, pk, &valid_until) != 0) {
                continue;                   /* unknown key: skipped */
            }

            /* §4.6: for v5+ a key expired before the event is unknown */

            if (rv->enforce_key_validity && valid_until < ts) {
                continue;
            }

            len = -1;

            if (json_is_string(s)
                && json_string_length(s) <= MX_ED25519_SIG_B64_LEN + 2)
            {
                len = mx_b64_decode(sig, sizeof(sig), json_string_value(s),
                                    json_string_length(s), MX_B64_STD);
            }

            if (len != MX_ED25519_SIG_LEN) {
                mx_err_set(err, "signature by \"%.128s\" with key \"%.64s\" "
                           "is not base64 of %d bytes", names[i], key_id,
                           MX_ED25519_SIG_LEN);
                goto done;
            }

            if (mx_ed25519_verify(sig, bytes.data, bytes.len, pk) != 0) {
                mx_err_set(err, "bad signature by \"%.128s\" with key "
                           "\"%.64s\"", names[i], key_id);
                goto done;
            }

            verified++;
        }

        if (verified == 0) {
            mx_err_set(err, "no signature by \"%.128s\" with a known, "
                       "unexpired key", names[i]);
            goto done;
        }
    }

    rc = 0;

done:

    mx_buf_free(&bytes);
    json_decref(red);

    return rc;
}


/* A shallow copy of the object ev without the keys in drop. */

static json_t *
mx_event_strip_copy(const json_t *ev, const char *const *drop)
{
    json_t  *copy;

    copy = json_copy((json_t *) ev);
    if (copy == NULL) {
        return NULL;
    }

    for ( /* void */ ; *drop; drop++) {
        json_object_del(copy, *drop);
    }

    return copy;
}


/* SHA-256 of the canonical JSON of obj. */

static int
mx_event_hash_of(const json_t *obj, uint8_t out[MX_SHA256_LEN],
    mx_err_t *err)
{
    mx_buf_t  buf = MX_BUF_INIT;

    if (mx_json_canonical(obj, &buf, err) != 0) {
        mx_buf_free(&buf);
        return -1;
    }

    mx_sha256(out, buf.data, buf.len);
    mx_buf_free(&buf);

    return 0;
}


/* Copies into out the content keys that rv's redaction keeps (§5.7). */

static int
mx_event_redact_content(const mx_room_version_t *rv, const char *type,
    const json_t *content, json_t *out)
{
    json_t                  *v, *copy;
    const mx_redact_rule_t  *r;

    if (type == NULL || !json_is_object(content)) {
        return 0;
    }

    for (r = mx_redact_rules; r->type; r++) {
        if (rv->redaction < r->from || rv->redaction > r->to
            || strcmp(r->type, type) != 0)
        {
            continue;
        }

        if (r->key == NULL) {
            copy = json_deep_copy(content);

            if (copy == NULL || json_object_update(out, copy) != 0) {
                json_decref(copy);
                return -1;
            }

            json_decref(copy);
            continue;
        }

        v = json_object_get(content, r->key);
        if (v == NULL) {
            continue;
        }

        if (r->signed_only) {

            /* v11 third_party_invite: an object keeps only "signed" */

            if (!json_is_object(v)) {
                continue;
            }

            copy = json_object();

            if (copy != NULL && json_object_get(v, "signed") != NULL
                && json_object_set_new(copy, "signed",
                           json_deep_copy(json_object_get(v, "signed")))
                   != 0)
            {
                json_decref(copy);
                return -1;
            }

        } else {
            copy = json_deep_copy(v);
        }

        if (json_object_set_new(out, r->key, copy) != 0) {
            return -1;
        }
    }

    return 0;
}


/* sigil + the reference hash in the given alphabet. */

static long
mx_event_hash_id(const mx_room_version_t *rv, const json_t *ev, char sigil,
    int alphabet, char *buf, size_t cap, mx_err_t *err)
{
    uint8_t  hash[MX_SHA256_LEN];

    if (cap < 1 + mx_b64_encoded_len(MX_SHA256_LEN) + 1) {
        mx_err_set(err, "event ID buffer too small");
        return -1;
    }

    if (mx_event_reference_hash(rv, ev, hash, err) != 0) {
        return -1;
    }

    buf[0] = sigil;

    return 1 + (long) mx_b64_encode(buf + 1, hash, sizeof(hash), alphabet);
}


/* The server part of the ID in ev[field], checked, into name. */

static int
mx_event_signer(const json_t *ev, const char *field, char sigil,
    char name[256], mx_err_t *err)
{
    size_t       slen;
    json_t      *v;
    const char  *server;

    v = json_object_get(ev, field);

    if (!json_is_string(v)) {
        mx_err_set(err, "event has no %s", field);
        return -1;
    }

    server = mx_id_server(json_string_value(v), json_string_length(v), sigil,
                          &slen);

    if (server == NULL || slen > 255 || !mx_server_name_valid(server, slen)) {
        mx_err_set(err, "invalid %s \"%.128s\"", field, json_string_value(v));
        return -1;
    }

    memcpy(name, server, slen);
    name[slen] = '\0';

    return 0;
}
