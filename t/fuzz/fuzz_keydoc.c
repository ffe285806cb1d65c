/*
 * Copyright (C) nginx-matrix-join authors.
 * Server key documents and notary answers: mx_keydoc_parse on a body.
 * The first byte is the mode:
 *   bit 0   0: the rest is the body as it is; 1: the rest is parsed as
 *           JSON, and the document (or each object of server_keys) gets
 *           the spec key as "ed25519:1" of example.org and is signed with
 *           it before being serialised again, so that the accepting paths
 *           are reached
 *   bit 1   ask for the key "ed25519:1" (the module) or for none (sync)
 *   bits 2-3  nmax: MX_KEYDOC_MAX_KEYS, 0, 1 or 2
 *   bit 4   the valid_until_ts put in: two weeks on, or already past
 * Then: a success returns at most nmax valid ed25519 keys, current ones
 * at most a week on, past keys[nmax] nothing written, and the input holds
 * a document of the server listing them and signed by one of them (seen
 * with mx_json_verify, not mx_keydoc); a failure gives a reason.
 */

#include "fuzz_common.h"
#include "mx_base64.h"
#include "mx_keydoc.h"


#define SERVER  "example.org"
#define KEY_ID  "ed25519:1"
#define NOW     1600000000000LL
#define WEEK    (7 * 86400 * 1000LL)


static void fuzz_sign(json_t *doc, uint8_t mode);
static int fuzz_vouches(const json_t *doc, const mx_keydoc_key_t *keys,
    size_t n);
static int fuzz_in_input(const char *body, size_t len,
    const mx_keydoc_key_t *keys, size_t n);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               rc;
    char             *body;
    size_t            i, n, nmax, len;
    json_t           *root, *docs;
    uint8_t           mode;
    const char       *why, *key_id;
    mx_keydoc_key_t   keys[MX_KEYDOC_MAX_KEYS + 1], canary;

    static const size_t  nmaxes[4] = { MX_KEYDOC_MAX_KEYS, 0, 1, 2 };

    fuzz_init();

    if (size == 0) {
        return 0;
    }

    mode = data[0];
    body = (char *) data + 1;
    len = size - 1;
    root = NULL;

    if (mode & 1) {
        root = json_loadb(body, len, 0, NULL);

        if (!json_is_object(root)) {
            json_decref(root);
            return 0;
        }

        docs = json_object_get(root, "server_keys");

        if (json_is_array(docs)) {
            for (i = 0; i < json_array_size(docs); i++) {
                fuzz_sign(json_array_get(docs, i), mode);
            }

        } else {
            fuzz_sign(root, mode);
        }

        body = json_dumps(root, JSON_COMPACT);
        json_decref(root);

        if (body == NULL) {
            return 0;
        }

        len = strlen(body);
    }

    key_id = (mode & 2) ? KEY_ID : NULL;
    nmax = nmaxes[(mode >> 2) & 3];

    memset(&canary, 0xa5, sizeof(canary));
    keys[nmax] = canary;

    n = 12345;
    why = NULL;

    rc = mx_keydoc_parse(body, len, SERVER, key_id, NOW, WEEK, keys, nmax,
                         &n, &why);

    check(memcmp(&keys[nmax], &canary, sizeof(canary)) == 0);

    if (rc != 0) {
        check(rc == -1);
        check(n == 0);
        check(why != NULL && why[0] != '\0');
        goto done;
    }

    check(n <= nmax);

    for (i = 0; i < n; i++) {
        check(memchr(keys[i].key_id, '\0', sizeof(keys[i].key_id)) != NULL);
        check(strncmp(keys[i].key_id, "ed25519:", 8) == 0);
        check(mx_key_id_valid(keys[i].key_id, strlen(keys[i].key_id)));

        if (!keys[i].old) {
            check(keys[i].valid_until <= NOW + WEEK);
        }
    }

    if (key_id != NULL) {
        check(mx_keydoc_find(keys, n, key_id) != NULL);
        check(mx_keydoc_find(keys, n, key_id)->valid_until > NOW);
    }

    check(fuzz_in_input(body, len, keys, n));

done:

    if (mode & 1) {
        free(body);
    }

    return 0;
}


/* An object gets the spec key as KEY_ID of SERVER and is signed by it. */

static void
fuzz_sign(json_t *doc, uint8_t mode)
{
    char      b64[MX_ED25519_PK_B64_LEN + 1];
    json_t   *vk;
    mx_err_t  err;

    if (!json_is_object(doc)) {
        return;
    }

    if (!json_is_string(json_object_get(doc, "server_name"))) {
        json_object_set_new(doc, "server_name", json_string(SERVER));
    }

    vk = json_object_get(doc, "verify_keys");

    if (vk == NULL) {
        vk = json_object();
        json_object_set_new(doc, "verify_keys", vk);
    }

    if (json_is_object(vk)) {
        mx_b64_encode(b64, fuzz_key.pk, MX_ED25519_PK_LEN, MX_B64_STD);
        json_object_set_new(vk, KEY_ID, json_pack("{ss}", "key", b64));
    }

    if (json_object_get(doc, "valid_until_ts") == NULL) {
        json_object_set_new(doc, "valid_until_ts",
                            json_integer((mode & 16) ? NOW - 1
                                                     : NOW + 2 * WEEK));
    }

    /* a float cannot be signed: the document goes on unsigned */
    (void) mx_json_sign(doc, SERVER, &fuzz_key, &err);
}


/*
 * The answer as jansson reads it holds a document of SERVER that lists
 * every current key returned and is signed by one of those it lists.
 */

static int
fuzz_in_input(const char *body, size_t len, const mx_keydoc_key_t *keys,
    size_t n)
{
    int      found;
    size_t   i;
    json_t  *root, *docs;

    root = json_loadb(body, len, 0, NULL);
    check(json_is_object(root));

    docs = json_object_get(root, "server_keys");
    found = 0;

    if (docs == NULL) {
        found = fuzz_vouches(root, keys, n);

    } else {
        check(json_is_array(docs));

        for (i = 0; !found && i < json_array_size(docs); i++) {
            found = fuzz_vouches(json_array_get(docs, i), keys, n);
        }
    }

    json_decref(root);

    return found;
}


static int
fuzz_vouches(const json_t *doc, const mx_keydoc_key_t *keys, size_t n)
{
    long          len;
    size_t        i;
    json_t       *vk, *sigs, *s;
    uint8_t       pk[MX_ED25519_PK_LEN + 3];
    mx_err_t      err;
    const char   *b64, *key_id, *name;

    name = json_string_value(json_object_get(doc, "server_name"));

    if (name == NULL || strcmp(name, SERVER) != 0
        || json_string_length(json_object_get(doc, "server_name"))
           != sizeof(SERVER) - 1)
    {
        return 0;
    }

    vk = json_object_get(doc, "verify_keys");

    for (i = 0; i < n; i++) {
        if (keys[i].old) {
            continue;
        }

        b64 = json_string_value(json_object_get(
                  json_object_get(vk, keys[i].key_id), "key"));

        if (b64 == NULL) {
            return 0;
        }

        len = mx_b64_decode(pk, sizeof(pk), b64, strlen(b64), MX_B64_STD);

        if (len != MX_ED25519_PK_LEN
            || memcmp(pk, keys[i].pk, MX_ED25519_PK_LEN) != 0)
        {
            return 0;
        }
    }

    sigs = json_object_get(json_object_get(doc, "signatures"), SERVER);

    json_object_foreach(sigs, key_id, s) {
        b64 = json_string_value(json_object_get(
                  json_object_get(vk, key_id), "key"));

        if (b64 == NULL || strncmp(key_id, "ed25519:", 8) != 0) {
            continue;
        }

        len = mx_b64_decode(pk, sizeof(pk), b64, strlen(b64), MX_B64_STD);

        if (len == MX_ED25519_PK_LEN
            && mx_json_verify(doc, SERVER, key_id, pk, &err) == 0)
        {
            return 1;
        }
    }

    return 0;
}
