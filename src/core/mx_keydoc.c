/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <stdint.h>
#include <string.h>

#include "mx_base64.h"
#include "mx_json.h"
#include "mx_keydoc.h"


#define MX_KEYDOC_ED25519      "ed25519:"
#define MX_KEYDOC_ED25519_LEN  (sizeof(MX_KEYDOC_ED25519) - 1)

/* 32 bytes are 43 characters, 44 when padded */
#define MX_KEYDOC_PK_B64_MAX   (MX_ED25519_PK_B64_LEN + 1)


static int mx_keydoc_of(const json_t *doc, const char *server);
static int mx_keydoc_signed(const json_t *doc, const json_t *vk,
    const json_t *sigs, const char **why);
static size_t mx_keydoc_take(const json_t *obj, unsigned old, int64_t until,
    mx_keydoc_key_t *keys, size_t n, size_t nmax);
static int mx_keydoc_key(const char *key_id, const json_t *entry,
    uint8_t pk[MX_ED25519_PK_LEN]);


int
mx_keydoc_check(const json_t *doc, const char *server, int64_t now,
    int64_t max_age, mx_keydoc_key_t *keys, size_t nmax, size_t *nkeys,
    const char **why)
{
    size_t    n;
    json_t   *vk, *old, *sigs, *until;
    int64_t   cap, valid_until;

    *nkeys = 0;

    if (!json_is_object(doc)) {
        *why = "the key document is not a JSON object";
        return -1;
    }

    if (!mx_keydoc_of(doc, server)) {
        *why = "the key document's server_name is not the server's";
        return -1;
    }

    vk = json_object_get(doc, "verify_keys");
    until = json_object_get(doc, "valid_until_ts");
    sigs = json_object_get(json_object_get(doc, "signatures"), server);

    if (!json_is_object(vk)) {
        *why = "the key document has no verify_keys object";
        return -1;
    }

    if (!json_is_integer(until)) {
        *why = "the key document has no integer valid_until_ts";
        return -1;
    }

    if (!json_is_object(sigs)) {
        *why = "the key document has no signatures of its server";
        return -1;
    }

    if (mx_keydoc_signed(doc, vk, sigs, why) != 0) {
        return -1;
    }

    /* a server cannot make us trust a key for long: it may lose it */

    if (max_age < 0) {
        max_age = 0;
    }

    cap = (now > INT64_MAX - max_age) ? INT64_MAX : now + max_age;
    valid_until = json_integer_value(until);

    if (valid_until > cap) {
        valid_until = cap;
    }

    n = mx_keydoc_take(vk, 0, valid_until, keys, 0, nmax);

    old = json_object_get(doc, "old_verify_keys");

    if (json_is_object(old)) {
        n = mx_keydoc_take(old, 1, 0, keys, n, nmax);
    }

    *nkeys = n;

    return 0;
}


int
mx_keydoc_parse(const char *body, size_t len, const char *server,
    const char *key_id, int64_t now, int64_t max_age, mx_keydoc_key_t *keys,
    size_t nmax, size_t *nkeys, const char **why)
{
    size_t                  i, n;
    json_t                 *root, *docs, *doc;
    const char             *reason;
    const mx_keydoc_key_t  *k;

    *nkeys = 0;

    root = json_loadb(body, len, 0, NULL);

    if (!json_is_object(root)) {
        json_decref(root);
        *why = "the answer is not a JSON object";
        return -1;
    }

    docs = json_object_get(root, "server_keys");

    if (docs == NULL) {
        n = 1;                      /* the answer is the document */

    } else if (json_is_array(docs)) {
        n = json_array_size(docs);

    } else {
        json_decref(root);
        *why = "\"server_keys\" is not a list";
        return -1;
    }

    reason = "the answer has no key document of the server";

    for (i = 0; i < n; i++) {
        doc = (docs == NULL) ? root : json_array_get(docs, i);

        if (!mx_keydoc_of(doc, server)) {
            continue;               /* a notary answers for many */
        }

        if (mx_keydoc_check(doc, server, now, max_age, keys, nmax, nkeys,
                            &reason)
            != 0)
        {
            continue;
        }

        if (key_id == NULL) {
            break;
        }

        /*
         * A notary may hold several documents of a server, older ones
         * too: the one that vouches for the key now is looked for.
         */

        k = mx_keydoc_find(keys, *nkeys, key_id);

        if (k != NULL && k->valid_until > now) {
            break;
        }

        reason = (k == NULL) ? "the server's document does not list the key"
                             : "the key's document has expired";
        *nkeys = 0;
    }

    json_decref(root);

    if (i == n) {
        *why = reason;
        return -1;
    }

    return 0;
}


const mx_keydoc_key_t *
mx_keydoc_find(const mx_keydoc_key_t *keys, size_t n, const char *key_id)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (!keys[i].old && strcmp(keys[i].key_id, key_id) == 0) {
            return &keys[i];
        }
    }

    return NULL;
}


/* An object whose server_name is exactly server (a NUL inside is not). */

static int
mx_keydoc_of(const json_t *doc, const char *server)
{
    size_t   len;
    json_t  *name;

    name = json_object_get(doc, "server_name");

    if (!json_is_string(name)) {
        return 0;
    }

    len = strlen(server);

    return json_string_length(name) == len
           && memcmp(json_string_value(name), server, len) == 0;
}


/*
 * The self-signature: every signature of the server by one of the keys
 * the document lists verifies, and there is one. The signed bytes are the
 * same for each, so they are made once: a document with many signatures
 * costs many ed25519 checks, not many canonical encodings too.
 */

static int
mx_keydoc_signed(const json_t *doc, const json_t *vk, const json_t *sigs,
    const char **why)
{
    int           good;
    json_t       *s;
    uint8_t       pk[MX_ED25519_PK_LEN], sig[MX_ED25519_SIG_LEN];
    mx_buf_t      bytes = MX_BUF_INIT;
    mx_err_t      err;
    const char   *key_id;

    good = 0;

    json_object_foreach((json_t *) sigs, key_id, s) {
        if (mx_keydoc_key(key_id, json_object_get(vk, key_id), pk) != 0) {
            continue;           /* not a key of this document's */
        }

        if (bytes.data == NULL
            && mx_json_signing_bytes(doc, &bytes, &err) != 0)
        {
            mx_buf_free(&bytes);
            *why = "the key document has no canonical JSON form";
            return -1;
        }

        if (mx_json_signature_decode(s, sig, &err) != 0
            || mx_ed25519_verify(sig, bytes.data, bytes.len, pk) != 0)
        {
            mx_buf_free(&bytes);
            *why = "the key document's self-signature does not verify";
            return -1;
        }

        good = 1;
    }

    mx_buf_free(&bytes);

    if (!good) {
        *why = "the key document is not signed by one of its verify_keys";
        return -1;
    }

    return 0;
}


/* The keys of verify_keys or old_verify_keys, appended to keys[n..nmax). */

static size_t
mx_keydoc_take(const json_t *obj, unsigned old, int64_t until,
    mx_keydoc_key_t *keys, size_t n, size_t nmax)
{
    json_t       *v, *ts;
    const char   *key_id;

    json_object_foreach((json_t *) obj, key_id, v) {
        if (n == nmax) {
            break;
        }

        ts = NULL;

        if (old) {
            ts = json_object_get(v, "expired_ts");

            if (!json_is_integer(ts)) {
                continue;
            }
        }

        if (mx_keydoc_key(key_id, v, keys[n].pk) != 0) {
            continue;
        }

        memcpy(keys[n].key_id, key_id, strlen(key_id) + 1);
        keys[n].valid_until = old ? json_integer_value(ts) : until;
        keys[n].old = old;
        n++;
    }

    return n;
}


/*
 * One entry {"key": "<b64>"} of verify_keys or old_verify_keys: an
 * ed25519 key ID that fits mx_keydoc_key_t and a 32-byte key. 0 or -1.
 */

static int
mx_keydoc_key(const char *key_id, const json_t *entry,
    uint8_t pk[MX_ED25519_PK_LEN])
{
    size_t   len;
    json_t  *k;
    uint8_t  buf[mx_b64_decoded_max(MX_KEYDOC_PK_B64_MAX)];

    len = strlen(key_id);

    if (len >= MX_KEY_ID_MAX
        || len <= MX_KEYDOC_ED25519_LEN
        || memcmp(key_id, MX_KEYDOC_ED25519, MX_KEYDOC_ED25519_LEN) != 0
        || !mx_key_id_valid(key_id, len))
    {
        return -1;
    }

    k = json_object_get(entry, "key");

    if (!json_is_string(k) || json_string_length(k) > MX_KEYDOC_PK_B64_MAX
        || mx_b64_decode(buf, sizeof(buf), json_string_value(k),
                         json_string_length(k), MX_B64_STD)
           != MX_ED25519_PK_LEN)
    {
        return -1;
    }

    memcpy(pk, buf, MX_ED25519_PK_LEN);

    return 0;
}
