/*
 * Copyright (C) nginx-matrix-join authors.
 * The C core's canonical JSON and Signing JSON on a pipe, for the
 * differential tests in t/differential. One output line per input line:
 *
 *   mxj-json-tool canon [--strict]
 *       each line a JSON value -> its canonical encoding, or "ERROR reason"
 *   mxj-json-tool sign ENTITY KEY_ID SEED_B64
 *       each line a JSON object -> the signed object, canonical
 *   mxj-json-tool verify ENTITY KEY_ID PUBKEY_B64
 *       each line a signed object -> "OK" or "FAIL reason"
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "mxj_tool_lines.h"
#include "mx_base64.h"
#include "mx_crypto.h"
#include "mx_json.h"


#define MODE_CANON   0
#define MODE_SIGN    1
#define MODE_VERIFY  2


typedef struct {
    int                mode;
    unsigned           flags;
    const char        *entity;
    const char        *key_id;
    mx_signing_key_t   key;
    uint8_t            pk[MX_ED25519_PK_LEN];
} tool_conf_t;


static void usage(void);
static int decode_key(const char *b64, uint8_t *out, size_t len);
static void process_line(tool_conf_t *cf, const char *line, size_t n,
    mx_buf_t *out);
static void process_line_cb(void *conf, const char *line, size_t n,
    mx_buf_t *out);
static void put_reason(mx_buf_t *out, const char *prefix, const char *text);


int
main(int argc, char **argv)
{
    int           rc;
    uint8_t       seed[MX_ED25519_SEED_LEN];
    mx_err_t      err;
    tool_conf_t   cf;

    memset(&cf, 0, sizeof(tool_conf_t));

    if (argc < 2) {
        usage();
        return 2;
    }

    if (mx_crypto_init() != 0) {
        fprintf(stderr, "mxj-json-tool: sodium_init() failed\n");
        return 1;
    }

    if (strcmp(argv[1], "canon") == 0) {
        cf.mode = MODE_CANON;

        if (argc == 3 && strcmp(argv[2], "--strict") == 0) {
            cf.flags = MX_JSON_STRICT;

        } else if (argc != 2) {
            usage();
            return 2;
        }

    } else if (strcmp(argv[1], "sign") == 0 && argc == 5) {
        cf.mode = MODE_SIGN;
        cf.entity = argv[2];
        cf.key_id = argv[3];

        if (decode_key(argv[4], seed, sizeof(seed)) != 0) {
            fprintf(stderr, "mxj-json-tool: seed is not %d bytes of base64\n",
                    MX_ED25519_SEED_LEN);
            return 2;
        }

        if (mx_signing_key_from_seed(&cf.key, cf.key_id, seed, &err) != 0) {
            fprintf(stderr, "mxj-json-tool: %s\n", err.text);
            return 2;
        }

    } else if (strcmp(argv[1], "verify") == 0 && argc == 5) {
        cf.mode = MODE_VERIFY;
        cf.entity = argv[2];
        cf.key_id = argv[3];

        if (decode_key(argv[4], cf.pk, sizeof(cf.pk)) != 0) {
            fprintf(stderr, "mxj-json-tool: public key is not %d bytes "
                    "of base64\n", MX_ED25519_PK_LEN);
            return 2;
        }

    } else {
        usage();
        return 2;
    }

    rc = mxj_tool_lines("mxj-json-tool", process_line_cb, &cf);

    mx_signing_key_wipe(&cf.key);

    return rc;
}


static void
usage(void)
{
    fprintf(stderr,
            "usage: mxj-json-tool canon [--strict]\n"
            "       mxj-json-tool sign ENTITY KEY_ID SEED_B64\n"
            "       mxj-json-tool verify ENTITY KEY_ID PUBKEY_B64\n");
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

    v = mx_json_parse(line, n, (cf->mode == MODE_CANON) ? cf->flags : 0,
                      &err);
    if (v == NULL) {
        put_reason(out, (cf->mode == MODE_VERIFY) ? "FAIL " : "ERROR ",
                   err.text);
        return;
    }

    switch (cf->mode) {

    case MODE_CANON:
        if (mx_json_canonical(v, out, &err) != 0) {
            put_reason(out, "ERROR ", err.text);
        }

        break;

    case MODE_SIGN:
        if (mx_json_sign(v, cf->entity, &cf->key, &err) != 0
            || mx_json_canonical(v, out, &err) != 0)
        {
            put_reason(out, "ERROR ", err.text);
        }

        break;

    default: /* MODE_VERIFY */
        if (mx_json_verify(v, cf->entity, cf->key_id, cf->pk, &err) != 0) {
            put_reason(out, "FAIL ", err.text);

        } else {
            (void) mx_buf_append_str(out, "OK");
        }

        break;
    }

    json_decref(v);
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
