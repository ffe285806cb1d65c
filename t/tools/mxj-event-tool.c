/*
 * Copyright (C) nginx-matrix-join authors.
 * The C core's event and X-Matrix functions on a pipe, for the
 * differential tests in t/differential. One output line per input line;
 * a line that cannot be handled gives "ERROR reason" ("FAIL reason" in
 * the verify modes). RV is a room version ("1" ... "12"); events are
 * parsed strictly for v6+.
 *
 *   mxj-event-tool redact RV            event -> redacted event, canonical
 *   mxj-event-tool content-hash         event -> unpadded std b64
 *   mxj-event-tool reference-hash RV    event -> unpadded std b64
 *   mxj-event-tool event-id RV          event -> its event ID
 *   mxj-event-tool room-id RV           create event -> v12 room ID
 *   mxj-event-tool sign RV SERVER KEY_ID SEED_B64
 *       event -> the signed event, canonical
 *   mxj-event-tool verify RV SERVER KEY_ID PUBKEY_B64
 *       event -> "OK" or "FAIL reason" (that one signature)
 *   mxj-event-tool check RV SERVER KEY_ID PUBKEY_B64 VALID_UNTIL_TS
 *       event -> "OK" or "FAIL reason": mx_event_check_signatures() with
 *       this one key known
 *   mxj-event-tool xmatrix-sign METHOD URI ORIGIN DESTINATION KEY_ID SEED_B64
 *       content JSON or "-" for none -> the Authorization header value
 *   mxj-event-tool xmatrix-verify OUR_NAME PUBKEY_B64
 *       {"method", "uri", "authorization", ["content"]} -> "OK",
 *       "FAIL reason", or "OTHER" for a header of another scheme
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "mxj_tool_lines.h"
#include "mx_base64.h"
#include "mx_crypto.h"
#include "mx_event.h"
#include "mx_json.h"
#include "mx_xmatrix.h"


typedef enum {
    MODE_REDACT = 0,
    MODE_CONTENT_HASH,
    MODE_REFERENCE_HASH,
    MODE_EVENT_ID,
    MODE_ROOM_ID,
    MODE_SIGN,
    MODE_VERIFY,
    MODE_CHECK,
    MODE_XMATRIX_SIGN,
    MODE_XMATRIX_VERIFY
} tool_mode_e;


typedef struct {
    const char  *name;
    tool_mode_e  mode;
    int          argc;          /* arguments after the mode */
    unsigned     has_rv:1;
} tool_cmd_t;


typedef struct {
    tool_mode_e                mode;
    const mx_room_version_t   *rv;
    unsigned                   flags;
    const char                *server;
    const char                *key_id;
    const char                *method;
    const char                *uri;
    const char                *destination;
    mx_signing_key_t           key;
    uint8_t                    pk[MX_ED25519_PK_LEN];
    int64_t                    valid_until;
} tool_conf_t;


static const tool_cmd_t  cmds[] = {
    { "redact",          MODE_REDACT,          1, 1 },
    { "content-hash",    MODE_CONTENT_HASH,    0, 0 },
    { "reference-hash",  MODE_REFERENCE_HASH,  1, 1 },
    { "event-id",        MODE_EVENT_ID,        1, 1 },
    { "room-id",         MODE_ROOM_ID,         1, 1 },
    { "sign",            MODE_SIGN,            4, 1 },
    { "verify",          MODE_VERIFY,          4, 1 },
    { "check",           MODE_CHECK,           5, 1 },
    { "xmatrix-sign",    MODE_XMATRIX_SIGN,    6, 0 },
    { "xmatrix-verify",  MODE_XMATRIX_VERIFY,  2, 0 },
    { NULL, 0, 0, 0 }
};


static void usage(void);
static int setup(tool_conf_t *cf, const tool_cmd_t *cmd, char **argv);
static int decode_key(const char *b64, uint8_t *out, size_t len);
static void process_line(tool_conf_t *cf, const char *line, size_t n,
    mx_buf_t *out);
static void process_line_cb(void *conf, const char *line, size_t n,
    mx_buf_t *out);
static void process_event(tool_conf_t *cf, json_t *ev, mx_buf_t *out);
static void process_xmatrix_verify(tool_conf_t *cf, json_t *req,
    mx_buf_t *out);
static int one_key_lookup(void *data, const char *server, const char *key_id,
    uint8_t pk[MX_ED25519_PK_LEN], int64_t *valid_until_ts);
static void put_hash(mx_buf_t *out, const uint8_t hash[MX_SHA256_LEN]);
static void put_reason(mx_buf_t *out, const char *prefix, const char *text);


int
main(int argc, char **argv)
{
    int                rc;
    tool_conf_t        cf;
    const tool_cmd_t  *cmd;

    if (argc < 2) {
        usage();
        return 2;
    }

    for (cmd = cmds; cmd->name; cmd++) {
        if (strcmp(cmd->name, argv[1]) == 0 && argc - 2 == cmd->argc) {
            break;
        }
    }

    if (cmd->name == NULL) {
        usage();
        return 2;
    }

    if (mx_crypto_init() != 0) {
        fprintf(stderr, "mxj-event-tool: sodium_init() failed\n");
        return 1;
    }

    if (setup(&cf, cmd, argv + 2) != 0) {
        return 2;
    }

    rc = mxj_tool_lines("mxj-event-tool", process_line_cb, &cf);

    mx_signing_key_wipe(&cf.key);

    return rc;
}


static void
usage(void)
{
    fprintf(stderr,
        "usage: mxj-event-tool redact|reference-hash|event-id|room-id RV\n"
        "       mxj-event-tool content-hash\n"
        "       mxj-event-tool sign RV SERVER KEY_ID SEED_B64\n"
        "       mxj-event-tool verify RV SERVER KEY_ID PUBKEY_B64\n"
        "       mxj-event-tool check RV SERVER KEY_ID PUBKEY_B64 "
        "VALID_UNTIL_TS\n"
        "       mxj-event-tool xmatrix-sign METHOD URI ORIGIN DESTINATION "
        "KEY_ID SEED_B64\n"
        "       mxj-event-tool xmatrix-verify OUR_NAME PUBKEY_B64\n");
}


static int
setup(tool_conf_t *cf, const tool_cmd_t *cmd, char **argv)
{
    char      *end;
    uint8_t    seed[MX_ED25519_SEED_LEN];
    mx_err_t   err;

    memset(cf, 0, sizeof(tool_conf_t));
    cf->mode = cmd->mode;

    if (cmd->has_rv) {
        cf->rv = mx_room_version(argv[0], strlen(argv[0]));
        if (cf->rv == NULL) {
            fprintf(stderr, "mxj-event-tool: unknown room version \"%s\"\n",
                    argv[0]);
            return -1;
        }

        cf->flags = cf->rv->strict_json ? MX_JSON_STRICT : 0;
        argv++;
    }

    switch (cf->mode) {

    case MODE_SIGN:
    case MODE_VERIFY:
    case MODE_CHECK:
        cf->server = argv[0];
        cf->key_id = argv[1];

        if (cf->mode == MODE_SIGN) {
            if (decode_key(argv[2], seed, sizeof(seed)) != 0) {
                fprintf(stderr, "mxj-event-tool: bad seed\n");
                return -1;
            }

            if (mx_signing_key_from_seed(&cf->key, cf->key_id, seed, &err)) {
                fprintf(stderr, "mxj-event-tool: %s\n", err.text);
                return -1;
            }

        } else if (decode_key(argv[2], cf->pk, sizeof(cf->pk)) != 0) {
            fprintf(stderr, "mxj-event-tool: bad public key\n");
            return -1;
        }

        if (cf->mode == MODE_CHECK) {
            cf->valid_until = strtoll(argv[3], &end, 10);
            if (*end != '\0') {
                fprintf(stderr, "mxj-event-tool: bad VALID_UNTIL_TS\n");
                return -1;
            }
        }

        break;

    case MODE_XMATRIX_SIGN:
        cf->method = argv[0];
        cf->uri = argv[1];
        cf->server = argv[2];
        cf->destination = argv[3];

        if (decode_key(argv[5], seed, sizeof(seed)) != 0
            || mx_signing_key_from_seed(&cf->key, argv[4], seed, &err) != 0)
        {
            fprintf(stderr, "mxj-event-tool: bad key\n");
            return -1;
        }

        break;

    case MODE_XMATRIX_VERIFY:
        cf->destination = argv[0];

        if (decode_key(argv[1], cf->pk, sizeof(cf->pk)) != 0) {
            fprintf(stderr, "mxj-event-tool: bad public key\n");
            return -1;
        }

        break;

    default:
        break;
    }

    return 0;
}


static int
decode_key(const char *b64, uint8_t *out, size_t len)
{
    long     n;
    uint8_t  buf[64];

    n = mx_b64_decode(buf, sizeof(buf), b64, strlen(b64), MX_B64_STD);

    if (n < 0 || (size_t) n != len) {
        return -1;
    }

    memcpy(out, buf, len);
    return 0;
}


static void
process_line_cb(void *conf, const char *line, size_t n, mx_buf_t *out)
{
    process_line(conf, line, n, out);
}


static void
process_line(tool_conf_t *cf, const char *line, size_t n, mx_buf_t *out)
{
    json_t    *v;
    mx_err_t   err;

    err.text[0] = '\0';

    if (cf->mode == MODE_XMATRIX_SIGN) {
        v = NULL;

        if (!(n == 1 && line[0] == '-')) {
            v = mx_json_parse(line, n, 0, &err);
            if (v == NULL) {
                put_reason(out, "ERROR ", err.text);
                return;
            }
        }

        if (mx_xmatrix_sign(cf->method, cf->uri, cf->server,
                            cf->destination, v, &cf->key, out, &err)
            != 0)
        {
            put_reason(out, "ERROR ", err.text);
        }

        json_decref(v);
        return;
    }

    v = mx_json_parse(line, n, cf->flags, &err);
    if (v == NULL) {
        put_reason(out, (cf->mode == MODE_VERIFY || cf->mode == MODE_CHECK
                         || cf->mode == MODE_XMATRIX_VERIFY)
                        ? "FAIL " : "ERROR ", err.text);
        return;
    }

    if (cf->mode == MODE_XMATRIX_VERIFY) {
        process_xmatrix_verify(cf, v, out);

    } else {
        process_event(cf, v, out);
    }

    json_decref(v);
}


static void
process_event(tool_conf_t *cf, json_t *ev, mx_buf_t *out)
{
    long       len;
    char       id[MX_EVENT_ID_MAX];
    json_t    *red;
    uint8_t    hash[MX_SHA256_LEN];
    mx_err_t   err;

    err.text[0] = '\0';

    switch (cf->mode) {

    case MODE_REDACT:
        red = mx_event_redact(cf->rv, ev);
        if (red == NULL) {
            put_reason(out, "ERROR ", "out of memory");
            return;
        }

        if (mx_json_canonical(red, out, &err) != 0) {
            put_reason(out, "ERROR ", err.text);
        }

        json_decref(red);
        return;

    case MODE_CONTENT_HASH:
        if (mx_event_content_hash(ev, hash, &err) != 0) {
            put_reason(out, "ERROR ", err.text);
            return;
        }

        put_hash(out, hash);
        return;

    case MODE_REFERENCE_HASH:
        if (mx_event_reference_hash(cf->rv, ev, hash, &err) != 0) {
            put_reason(out, "ERROR ", err.text);
            return;
        }

        put_hash(out, hash);
        return;

    case MODE_EVENT_ID:
    case MODE_ROOM_ID:
        len = (cf->mode == MODE_EVENT_ID)
              ? mx_event_id(cf->rv, ev, id, sizeof(id), &err)
              : mx_event_room_id_from_create(cf->rv, ev, id, sizeof(id),
                                             &err);
        if (len < 0) {
            put_reason(out, "ERROR ", err.text);
            return;
        }

        (void) mx_buf_append(out, id, (size_t) len);
        return;

    case MODE_SIGN:
        if (mx_event_sign(cf->rv, ev, cf->server, &cf->key, &err) != 0
            || mx_json_canonical(ev, out, &err) != 0)
        {
            put_reason(out, "ERROR ", err.text);
        }

        return;

    case MODE_VERIFY:
        if (mx_event_verify_signature(cf->rv, ev, cf->server, cf->key_id,
                                      cf->pk, &err)
            != 0)
        {
            put_reason(out, "FAIL ", err.text);
            return;
        }

        (void) mx_buf_append_str(out, "OK");
        return;

    default: /* MODE_CHECK */
        if (mx_event_check_signatures(cf->rv, ev, one_key_lookup, cf, &err)
            != 0)
        {
            put_reason(out, "FAIL ", err.text);
            return;
        }

        (void) mx_buf_append_str(out, "OK");
        return;
    }
}


static void
process_xmatrix_verify(tool_conf_t *cf, json_t *req, mx_buf_t *out)
{
    int            rc;
    json_t        *method, *uri, *auth;
    mx_err_t       err;
    mx_xmatrix_t   h;

    err.text[0] = '\0';

    method = json_object_get(req, "method");
    uri = json_object_get(req, "uri");
    auth = json_object_get(req, "authorization");

    if (!json_is_string(method) || !json_is_string(uri)
        || !json_is_string(auth))
    {
        put_reason(out, "ERROR ", "need method, uri and authorization");
        return;
    }

    rc = mx_xmatrix_parse(json_string_value(auth), json_string_length(auth),
                          &h, &err);

    if (rc == MX_XMATRIX_OTHER_SCHEME) {
        (void) mx_buf_append_str(out, "OTHER");
        return;
    }

    if (rc != MX_XMATRIX_OK) {
        put_reason(out, "FAIL ", err.text);
        return;
    }

    if (mx_xmatrix_verify(&h, json_string_value(method),
                          json_string_length(method), json_string_value(uri),
                          json_string_length(uri), cf->destination,
                          json_object_get(req, "content"), cf->pk, &err)
        != 0)
    {
        put_reason(out, "FAIL ", err.text);
        return;
    }

    (void) mx_buf_append_str(out, "OK");
}


static int
one_key_lookup(void *data, const char *server, const char *key_id,
    uint8_t pk[MX_ED25519_PK_LEN], int64_t *valid_until_ts)
{
    tool_conf_t  *cf = data;

    if (strcmp(server, cf->server) != 0 || strcmp(key_id, cf->key_id) != 0) {
        return -1;
    }

    memcpy(pk, cf->pk, MX_ED25519_PK_LEN);
    *valid_until_ts = cf->valid_until;

    return 0;
}


static void
put_hash(mx_buf_t *out, const uint8_t hash[MX_SHA256_LEN])
{
    char  b64[mx_b64_encoded_len(MX_SHA256_LEN) + 1];

    mx_b64_encode(b64, hash, MX_SHA256_LEN, MX_B64_STD);
    (void) mx_buf_append_str(out, b64);
}


/* Writes prefix and text, keeping the answer on one line. */
static void
put_reason(mx_buf_t *out, const char *prefix, const char *text)
{
    size_t  i;

    mx_buf_reset(out);

    if (mx_buf_append_str(out, prefix) != 0
        || mx_buf_append_str(out, text) != 0)
    {
        return;
    }

    for (i = 0; i < out->len; i++) {
        if (out->data[i] == '\n' || out->data[i] == '\r') {
            out->data[i] = ' ';
        }
    }
}
