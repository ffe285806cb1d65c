/*
 * Copyright (C) nginx-matrix-join authors.
 * Server key documents (the answer of GET /_matrix/key/v2/server) and
 * notary answers ({"server_keys": [doc, ...]} of /_matrix/key/v2/query):
 * the one set of rules by which the module's key fetch and the sync's
 * keyring believe a server's keys.
 *
 * A document of server is good when:
 *   - it is an object and its server_name is exactly server;
 *   - verify_keys is an object and valid_until_ts an integer;
 *   - signatures[server] is an object, and of its signatures, those by
 *     one of the document's current keys (its keys from verify_keys, as
 *     below) all verify, at least one of them; signatures by any other
 *     key ID are ignored.
 * Its keys are the entries of verify_keys (and of old_verify_keys, given
 * an integer expired_ts) whose ID is "ed25519:" and a version as
 * mx_key_id_valid has it, shorter than MX_KEY_ID_MAX, and whose "key" is
 * the std base64 (padded or not) of 32 bytes; any other entry is skipped,
 * not an error (a key of a future algorithm is no reason to distrust the
 * document). An old_verify_keys that is not an object is ignored.
 *
 * Whether the document is still valid at now is the caller's policy: a
 * request signed now needs a current key of a document not expired (the
 * key_id form of mx_keydoc_parse), an event is judged at its own time.
 */

#ifndef MX_KEYDOC_H
#define MX_KEYDOC_H

#include <jansson.h>

#include "mx_crypto.h"

/* keys taken of one document: Synapse lists one current key and the few
 * it retired, so more is not a real server's */
#define MX_KEYDOC_MAX_KEYS  64


typedef struct {
    char          key_id[MX_KEY_ID_MAX];    /* "ed25519:xyz", valid */
    uint8_t       pk[MX_ED25519_PK_LEN];
    /* ms; verify_keys: valid_until_ts, at most now + max_age;
     * old_verify_keys: expired_ts as it is */
    int64_t       valid_until;
    unsigned      old:1;                    /* from old_verify_keys */
} mx_keydoc_key_t;


/*
 * Checks one key document of server and takes its keys into keys[0..nmax)
 * in document order, verify_keys first, then old_verify_keys; *nkeys is
 * how many. A document with more than nmax keys still checks; the keys
 * past nmax are not returned. 0 (*why untouched), or -1 with *why, a
 * static sentence ("the key document's self-signature does not verify"),
 * and *nkeys 0.
 */
int mx_keydoc_check(const json_t *doc, const char *server, int64_t now,
    int64_t max_age, mx_keydoc_key_t *keys, size_t nmax, size_t *nkeys,
    const char **why);

/*
 * The body of an answer, body[0..len) (JSON decoded by jansson without
 * flags, as the module always did: no NUL in strings, nothing after the
 * value): a key document, or a notary's {"server_keys": [...]}, whose
 * documents of other servers are skipped. The first document of server
 * that checks (mx_keydoc_check), and with key_id not NULL, that also has
 * key_id among its current keys (in the first nmax) and a valid_until_ts
 * after now. 0 with its keys as mx_keydoc_check gives them (*why
 * untouched), or -1 with *why the reason of the last document of server
 * that did not do, or "the answer has no key document of the server",
 * and *nkeys 0.
 */
int mx_keydoc_parse(const char *body, size_t len, const char *server,
    const char *key_id, int64_t now, int64_t max_age, mx_keydoc_key_t *keys,
    size_t nmax, size_t *nkeys, const char **why);

/* The current key key_id of keys[0..n) (not an old one), or NULL. */
const mx_keydoc_key_t *mx_keydoc_find(const mx_keydoc_key_t *keys,
    size_t n, const char *key_id);

#endif /* MX_KEYDOC_H */
