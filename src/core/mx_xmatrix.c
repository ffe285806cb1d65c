/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <string.h>
#include <strings.h>

#include "mx_base64.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_xmatrix.h"


#define MX_XMATRIX_SCHEME      "X-Matrix"
#define MX_XMATRIX_SCHEME_LEN  (sizeof(MX_XMATRIX_SCHEME) - 1)

/* a sig value is 86 characters, 88 when padded: one more is too long */
#define MX_XMATRIX_SIG_B64_MAX  (MX_ED25519_SIG_B64_LEN + 3)

/* the known parameters, as bits of "seen" */
#define MX_XMATRIX_ORIGIN       0x01
#define MX_XMATRIX_DESTINATION  0x02
#define MX_XMATRIX_KEY          0x04
#define MX_XMATRIX_SIG          0x08


typedef struct {
    const char  *start;
    const char  *p;
    const char  *end;
    mx_err_t    *err;
} mx_xmatrix_ctx_t;


static int mx_xmatrix_is_tchar(unsigned char ch);
static void mx_xmatrix_skip_ows(mx_xmatrix_ctx_t *ctx);
static int mx_xmatrix_value(mx_xmatrix_ctx_t *ctx, const char *name,
    char *dst, size_t cap);
static int mx_xmatrix_param(mx_xmatrix_ctx_t *ctx, mx_xmatrix_t *out,
    unsigned *seen, char *sig, size_t sig_cap);
static int mx_xmatrix_append_param(mx_buf_t *out, const char *name,
    const char *value);


int
mx_xmatrix_parse(const char *value, size_t len, mx_xmatrix_t *out,
    mx_err_t *err)
{
    long              n;
    char              sig[MX_XMATRIX_SIG_B64_MAX + 1];
    unsigned          seen;
    const char       *scheme;
    mx_xmatrix_ctx_t  ctx;

    ctx.start = value;
    ctx.p = value;
    ctx.end = value + len;
    ctx.err = err;

    memset(out, 0, sizeof(mx_xmatrix_t));

    mx_xmatrix_skip_ows(&ctx);

    scheme = ctx.p;

    while (ctx.p < ctx.end && mx_xmatrix_is_tchar(*ctx.p)) {
        ctx.p++;
    }

    if ((size_t) (ctx.p - scheme) != MX_XMATRIX_SCHEME_LEN
        || strncasecmp(scheme, MX_XMATRIX_SCHEME, MX_XMATRIX_SCHEME_LEN) != 0)
    {
        mx_err_set(err, "not an X-Matrix authorization");
        return MX_XMATRIX_OTHER_SCHEME;
    }

    /* RFC 9110 §11.4: auth-scheme [ 1*SP ( token68 / #auth-param ) ] */

    if (ctx.p < ctx.end && *ctx.p != ' ') {
        mx_err_set(err, "expected a space after X-Matrix");
        return MX_XMATRIX_MALFORMED;
    }

    seen = 0;

    for ( ;; ) {

        /* OWS and empty list elements ("a=b, ,c=d") are allowed */

        while (ctx.p < ctx.end
               && (*ctx.p == ' ' || *ctx.p == '\t' || *ctx.p == ','))
        {
            ctx.p++;
        }

        if (ctx.p == ctx.end) {
            break;
        }

        if (mx_xmatrix_param(&ctx, out, &seen, sig, sizeof(sig)) != 0) {
            return MX_XMATRIX_MALFORMED;
        }
    }

    if (!(seen & MX_XMATRIX_ORIGIN)) {
        mx_err_set(err, "X-Matrix has no origin");
        return MX_XMATRIX_MALFORMED;
    }

    if (!(seen & MX_XMATRIX_KEY)) {
        mx_err_set(err, "X-Matrix has no key");
        return MX_XMATRIX_MALFORMED;
    }

    if (!(seen & MX_XMATRIX_SIG)) {
        mx_err_set(err, "X-Matrix has no sig");
        return MX_XMATRIX_MALFORMED;
    }

    if (!mx_server_name_valid(out->origin, strlen(out->origin))) {
        mx_err_set(err, "invalid X-Matrix origin \"%.128s\"", out->origin);
        return MX_XMATRIX_MALFORMED;
    }

    if (!mx_key_id_valid(out->key_id, strlen(out->key_id))) {
        mx_err_set(err, "invalid X-Matrix key \"%.128s\"", out->key_id);
        return MX_XMATRIX_MALFORMED;
    }

    n = mx_b64_decode(out->sig, sizeof(out->sig), sig, strlen(sig),
                      MX_B64_STD);

    if (n != MX_ED25519_SIG_LEN) {
        mx_err_set(err, "X-Matrix sig is not base64 of %d bytes",
                   MX_ED25519_SIG_LEN);
        return MX_XMATRIX_MALFORMED;
    }

    out->has_destination = (seen & MX_XMATRIX_DESTINATION) ? 1 : 0;

    return MX_XMATRIX_OK;
}


json_t *
mx_xmatrix_request_object(const char *method, size_t method_len,
    const char *uri, size_t uri_len, const char *origin,
    const char *destination, const json_t *content)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    /* json_stringn() also refuses bytes that are not UTF-8 */

    if (json_object_set_new(obj, "method", json_stringn(method, method_len))
        || json_object_set_new(obj, "uri", json_stringn(uri, uri_len))
        || json_object_set_new(obj, "origin", json_string(origin)))
    {
        goto failed;
    }

    if (destination != NULL
        && json_object_set_new(obj, "destination", json_string(destination)))
    {
        goto failed;
    }

    /* the body is shared, not copied: it can be large and is only read */

    if (content != NULL
        && json_object_set(obj, "content", (json_t *) content) != 0)
    {
        goto failed;
    }

    return obj;

failed:

    json_decref(obj);
    return NULL;
}


int
mx_xmatrix_sign(const char *method, const char *uri, const char *origin,
    const char *destination, const json_t *content,
    const mx_signing_key_t *k, mx_buf_t *out, mx_err_t *err)
{
    char      b64[MX_ED25519_SIG_B64_LEN + 1];
    json_t   *obj;
    uint8_t   sig[MX_ED25519_SIG_LEN];
    mx_buf_t  bytes = MX_BUF_INIT;

    obj = mx_xmatrix_request_object(method, strlen(method), uri, strlen(uri),
                                    origin, destination, content);
    if (obj == NULL) {
        mx_err_set(err, "cannot build the X-Matrix request object");
        return -1;
    }

    if (mx_json_signing_bytes(obj, &bytes, err) != 0) {
        json_decref(obj);
        mx_buf_free(&bytes);
        return -1;
    }

    json_decref(obj);

    mx_ed25519_sign(sig, bytes.data, bytes.len, k);
    mx_buf_free(&bytes);

    mx_b64_encode(b64, sig, sizeof(sig), MX_B64_STD);

    /* as the spec asks of senders: one space, lower-case names, no OWS */

    if (mx_buf_append_str(out, MX_XMATRIX_SCHEME " ") != 0
        || mx_xmatrix_append_param(out, "origin", origin) != 0
        || (destination != NULL
            && (mx_buf_append_byte(out, ',') != 0
                || mx_xmatrix_append_param(out, "destination", destination)
                   != 0))
        || mx_buf_append_byte(out, ',') != 0
        || mx_xmatrix_append_param(out, "key", k->key_id) != 0
        || mx_buf_append_byte(out, ',') != 0
        || mx_xmatrix_append_param(out, "sig", b64) != 0)
    {
        mx_err_set(err, "out of memory");
        return -1;
    }

    return 0;
}


/* Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */

static int
mx_xmatrix_utf8_valid(const char *s, size_t n)
{
    size_t          i, k, more;
    uint32_t        cp, min;
    unsigned char   c;

    for (i = 0; i < n; i++) {
        c = (unsigned char) s[i];

        if (c < 0x80) {
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            more = 1; cp = c & 0x1f; min = 0x80;

        } else if ((c & 0xf0) == 0xe0) {
            more = 2; cp = c & 0x0f; min = 0x800;

        } else if ((c & 0xf8) == 0xf0) {
            more = 3; cp = c & 0x07; min = 0x10000;

        } else {
            return 0;
        }

        if (n - i - 1 < more) {
            return 0;
        }

        for (k = 1; k <= more; k++) {
            c = (unsigned char) s[i + k];

            if ((c & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (c & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }

        i += more;
    }

    return 1;
}


/*
 * The object {"content"?, "destination", "method", "origin", "uri"} has a
 * fixed shape, so its canonical form is written directly, keys already in
 * code point order: no JSON object is built for every request.
 */
int
mx_xmatrix_signed_bytes(const mx_xmatrix_t *h, const char *method,
    size_t method_len, const char *uri, size_t uri_len, const char *our_name,
    const json_t *content, mx_buf_t *out, mx_err_t *err)
{
    size_t  start;

    if (!mx_xmatrix_utf8_valid(uri, uri_len)
        || !mx_xmatrix_utf8_valid(method, method_len))
    {
        mx_err_set(err, "the request URI or method is not valid UTF-8");
        return -1;
    }

    start = out->len;

    if (mx_buf_append_byte(out, '{') != 0) {
        goto nomem;
    }

    if (content) {
        if (mx_buf_append_str(out, "\"content\":") != 0) {
            goto nomem;
        }

        if (mx_json_canonical(content, out, err) != 0) {
            out->len = start;
            return -1;
        }

        if (mx_buf_append_byte(out, ',') != 0) {
            goto nomem;
        }
    }

    if (mx_buf_append_str(out, "\"destination\":") != 0
        || mx_json_canonical_string(our_name, strlen(our_name), out) != 0
        || mx_buf_append_str(out, ",\"method\":") != 0
        || mx_json_canonical_string(method, method_len, out) != 0
        || mx_buf_append_str(out, ",\"origin\":") != 0
        || mx_json_canonical_string(h->origin, strlen(h->origin), out) != 0
        || mx_buf_append_str(out, ",\"uri\":") != 0
        || mx_json_canonical_string(uri, uri_len, out) != 0
        || mx_buf_append_byte(out, '}') != 0)
    {
        goto nomem;
    }

    return 0;

nomem:

    out->len = start;
    mx_err_set(err, "out of memory");
    return -1;
}


int
mx_xmatrix_verify(const mx_xmatrix_t *h, const char *method,
    size_t method_len, const char *uri, size_t uri_len, const char *our_name,
    const json_t *content, const uint8_t pk[MX_ED25519_PK_LEN],
    mx_err_t *err)
{
    int       rc;
    mx_buf_t  bytes = MX_BUF_INIT;

    if (mx_xmatrix_signed_bytes(h, method, method_len, uri, uri_len,
                                our_name, content, &bytes, err)
        != 0)
    {
        mx_buf_free(&bytes);
        return -1;
    }

    rc = mx_ed25519_verify(h->sig, bytes.data, bytes.len, pk);

    mx_buf_free(&bytes);

    if (rc != 0) {
        mx_err_set(err, "bad X-Matrix signature by \"%.128s\" with key "
                   "\"%.64s\"", h->origin, h->key_id);
        return -1;
    }

    return 0;
}


/*
 * One auth-param: token BWS "=" BWS ( token / quoted-string ), then OWS
 * and either a comma or the end. Known names are stored in out (sig as
 * text, decoded by the caller); a second occurrence is malformed.
 */

static int
mx_xmatrix_param(mx_xmatrix_ctx_t *ctx, mx_xmatrix_t *out, unsigned *seen,
    char *sig, size_t sig_cap)
{
    char         name[16];
    size_t       name_len, cap;
    unsigned     bit;
    const char  *start;
    char        *dst;

    start = ctx->p;

    while (ctx->p < ctx->end && mx_xmatrix_is_tchar(*ctx->p)) {
        ctx->p++;
    }

    name_len = ctx->p - start;

    if (name_len == 0) {
        mx_err_set(ctx->err, "expected an X-Matrix parameter name at "
                   "offset %zu", (size_t) (ctx->p - ctx->start));
        return -1;
    }

    /* names we care about are short; longer ones are unknown */

    if (name_len < sizeof(name)) {
        memcpy(name, start, name_len);
        name[name_len] = '\0';

    } else {
        name[0] = '\0';
    }

    mx_xmatrix_skip_ows(ctx);

    if (ctx->p == ctx->end || *ctx->p != '=') {
        mx_err_set(ctx->err, "expected '=' after X-Matrix parameter "
                   "\"%.*s\"", (int) (name_len > 32 ? 32 : name_len), start);
        return -1;
    }

    ctx->p++;

    mx_xmatrix_skip_ows(ctx);

    if (strcasecmp(name, "origin") == 0) {
        bit = MX_XMATRIX_ORIGIN;
        dst = out->origin;
        cap = sizeof(out->origin);

    } else if (strcasecmp(name, "destination") == 0) {
        bit = MX_XMATRIX_DESTINATION;
        dst = out->destination;
        cap = sizeof(out->destination);

    } else if (strcasecmp(name, "key") == 0) {
        bit = MX_XMATRIX_KEY;
        dst = out->key_id;
        cap = sizeof(out->key_id);

    } else if (strcasecmp(name, "sig") == 0) {
        bit = MX_XMATRIX_SIG;
        dst = sig;
        cap = sig_cap;

    } else {
        bit = 0;
        dst = NULL;
        cap = 0;
    }

    if (bit && (*seen & bit)) {
        mx_err_set(ctx->err, "duplicate X-Matrix parameter \"%s\"", name);
        return -1;
    }

    *seen |= bit;

    if (mx_xmatrix_value(ctx, name, dst, cap) != 0) {
        return -1;
    }

    mx_xmatrix_skip_ows(ctx);

    if (ctx->p < ctx->end && *ctx->p != ',') {
        mx_err_set(ctx->err, "expected ',' after X-Matrix parameter "
                   "\"%.*s\"", (int) (name_len > 32 ? 32 : name_len), start);
        return -1;
    }

    return 0;
}


/*
 * A token (':' accepted too, as the spec asks of recipients) or a
 * quoted-string, unescaped into dst[0..cap) and NUL-terminated; dst NULL
 * only checks the syntax.
 */

static int
mx_xmatrix_value(mx_xmatrix_ctx_t *ctx, const char *name, char *dst,
    size_t cap)
{
    size_t         n;
    unsigned char  ch;

    n = 0;

    if (ctx->p < ctx->end && *ctx->p == '"') {
        ctx->p++;

        for ( ;; ) {
            if (ctx->p == ctx->end) {
                mx_err_set(ctx->err, "unterminated quoted X-Matrix "
                           "parameter \"%s\"", name);
                return -1;
            }

            ch = *ctx->p++;

            if (ch == '"') {
                break;
            }

            if (ch == '\\') {
                if (ctx->p == ctx->end) {
                    mx_err_set(ctx->err, "unterminated quoted X-Matrix "
                               "parameter \"%s\"", name);
                    return -1;
                }

                ch = *ctx->p++;

                /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */

                if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
                    goto invalid;
                }

            } else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
                goto invalid;           /* not qdtext */
            }

            if (dst != NULL) {
                if (n + 1 >= cap) {
                    goto too_long;
                }

                dst[n] = ch;
            }

            n++;
        }

    } else {
        while (ctx->p < ctx->end
               && (mx_xmatrix_is_tchar(*ctx->p) || *ctx->p == ':'))
        {
            if (dst != NULL) {
                if (n + 1 >= cap) {
                    goto too_long;
                }

                dst[n] = *ctx->p;
            }

            n++;
            ctx->p++;
        }

        if (n == 0) {
            mx_err_set(ctx->err, "X-Matrix parameter \"%s\" has no value",
                       name);
            return -1;
        }
    }

    if (dst != NULL) {
        dst[n] = '\0';
    }

    return 0;

invalid:

    mx_err_set(ctx->err, "invalid character in X-Matrix parameter \"%s\"",
               name);
    return -1;

too_long:

    mx_err_set(ctx->err, "X-Matrix parameter \"%s\" is too long", name);
    return -1;
}


/* name="value", escaping '"' and '\' (server names never need it) */

static int
mx_xmatrix_append_param(mx_buf_t *out, const char *name, const char *value)
{
    if (mx_buf_append_str(out, name) != 0
        || mx_buf_append_str(out, "=\"") != 0)
    {
        return -1;
    }

    for ( /* void */ ; *value; value++) {
        if ((*value == '"' || *value == '\\')
            && mx_buf_append_byte(out, '\\') != 0)
        {
            return -1;
        }

        if (mx_buf_append_byte(out, *value) != 0) {
            return -1;
        }
    }

    return mx_buf_append_byte(out, '"');
}


static void
mx_xmatrix_skip_ows(mx_xmatrix_ctx_t *ctx)
{
    while (ctx->p < ctx->end && (*ctx->p == ' ' || *ctx->p == '\t')) {
        ctx->p++;
    }
}


/* RFC 9110 §5.6.2 tchar */

static int
mx_xmatrix_is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z')
        || (ch >= 'a' && ch <= 'z'))
    {
        return 1;
    }

    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}
