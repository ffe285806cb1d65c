/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The front door of every federation handler: X-Matrix authentication.
 *
 * The origin's key is looked up in the machine's memory (a shared memory
 * zone, matrix_join_keys), then in Redis, then fetched with an nginx
 * subrequest to the matrix_key_fetch location. Misses for one key share
 * one fetch per machine: requests of the fetching worker wait on its slot,
 * those of other workers on a local slot that the fetching worker's wake
 * (ngx_matrix_wake.h) ends. Failed fetches are remembered for a while;
 * fetches per origin are rate-limited, per machine; signatures that
 * verified are remembered, per machine. Nothing blocks.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sodium.h>

#include "ngx_http_matrix_join.h"
#include "ngx_matrix_wake.h"
#include "mx_base64.h"
#include "mx_crypto.h"
#include "mx_json.h"
#include "mx_keydoc.h"
#include "mx_xmatrix.h"


#define NGX_HTTP_MATRIX_KEY_CACHE_SIZE    1024
#define NGX_HTTP_MATRIX_RATE_SIZE         1024
#define NGX_HTTP_MATRIX_MAX_FETCHES       64
#define NGX_HTTP_MATRIX_MAX_HEADERS       8
#define NGX_HTTP_MATRIX_KEY_MAX_AGE       (7 * 86400 * 1000LL)
#define NGX_HTTP_MATRIX_VERIFIED_SIZE     4096


/* a remote key in the worker's memory; negative entries have no key */
typedef struct {
    uint32_t                     hash;
    char                         server[MX_XMATRIX_NAME_MAX];
    char                         key_id[MX_KEY_ID_MAX];
    u_char                       pk[MX_ED25519_PK_LEN];
    int64_t                      valid_until;   /* ms; 0: empty slot */
    int64_t                      negative_until;
} ngx_http_matrix_key_entry_t;


typedef struct {
    uint32_t                     hash;
    char                         server[MX_XMATRIX_NAME_MAX];
    double                       tokens;
    int64_t                      last;
} ngx_http_matrix_rate_entry_t;


/*
 * One fetch in flight, in this worker: its owner runs the subrequest, the
 * others wait; or (remote) another worker fetches, and its wake ends the
 * slot.
 */
typedef struct {
    char                         server[MX_XMATRIX_NAME_MAX];
    char                         key_id[MX_KEY_ID_MAX];
    ngx_http_request_t          *owner;
    ngx_queue_t                  waiters;
    unsigned                     used:1;
    unsigned                     remote:1;
} ngx_http_matrix_fetch_t;


/* one fetch in flight on the machine */
typedef struct {
    char                         server[MX_XMATRIX_NAME_MAX];
    char                         key_id[MX_KEY_ID_MAX];
    ngx_pid_t                    pid;       /* 0: free */
    int64_t                      started;
    ngx_matrix_wake_list_t       waiters;
} ngx_http_matrix_fetch_sh_t;


/*
 * The zone. Signatures that verified: SHA-256 over (signed bytes,
 * signature, public key). Verifying is a pure function of those, and
 * X-Matrix has no nonce: the same request from the same server (a
 * directory query for the same alias by every user of a remote server)
 * needs one ed25519 check.
 */
typedef struct {
    ngx_http_matrix_key_entry_t  keys[NGX_HTTP_MATRIX_KEY_CACHE_SIZE];
    ngx_http_matrix_rate_entry_t rates[NGX_HTTP_MATRIX_RATE_SIZE];
    ngx_http_matrix_fetch_sh_t   fetches[NGX_HTTP_MATRIX_MAX_FETCHES];
    u_char                       verified[NGX_HTTP_MATRIX_VERIFIED_SIZE]
                                         [MX_SHA256_LEN];
} ngx_http_matrix_keys_sh_t;


typedef enum {
    NGX_HTTP_MATRIX_KEY_FOUND = 0,
    NGX_HTTP_MATRIX_KEY_UNKNOWN,        /* recently failed to fetch */
    NGX_HTTP_MATRIX_KEY_MISS
} ngx_http_matrix_key_lookup_e;


static void ngx_http_matrix_auth_step(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_auth_redis_reply(ngx_http_request_t *r,
    void *data, redisReply *reply, ngx_matrix_redis_status_e status,
    const char *err);
static ngx_int_t ngx_http_matrix_auth_verify(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx, const u_char *pk);
static void ngx_http_matrix_auth_next_header(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static void ngx_http_matrix_auth_fetch(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx);
static ngx_int_t ngx_http_matrix_auth_fetch_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_matrix_auth_owner_gone(void *data);
static void ngx_http_matrix_auth_waiter_gone(void *data);
static void ngx_http_matrix_auth_wait_timeout(ngx_event_t *ev);
static void ngx_http_matrix_auth_resume(ngx_event_t *ev);
static void ngx_http_matrix_auth_fetch_end(ngx_http_matrix_fetch_t *f);
static void ngx_http_matrix_key_store(ngx_http_request_t *r,
    const char *server, const char *key_id, const u_char *pk,
    int64_t valid_until);
static ngx_int_t ngx_http_matrix_variable_origin(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_matrix_variable_fetch(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_matrix_fetch_t
    ngx_http_matrix_fetches[NGX_HTTP_MATRIX_MAX_FETCHES];

/* the zone, as this worker's cycle has it (set at worker start) */
static ngx_http_matrix_keys_sh_t  *ngx_http_matrix_keys_sh;
static ngx_slab_pool_t            *ngx_http_matrix_keys_pool;

static ngx_str_t  ngx_http_matrix_keys_zone_name =
    ngx_string("matrix_join_keys");

#define ngx_http_matrix_keys_lock()                                          \
    ngx_shmtx_lock(&ngx_http_matrix_keys_pool->mutex)
#define ngx_http_matrix_keys_unlock()                                        \
    ngx_shmtx_unlock(&ngx_http_matrix_keys_pool->mutex)


static ngx_http_variable_t  ngx_http_matrix_vars[] = {

    { ngx_string("matrix_origin"), NULL, ngx_http_matrix_variable_origin,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("matrix_key_fetch_server"), NULL,
      ngx_http_matrix_variable_fetch,
      offsetof(ngx_http_matrix_ctx_t, fetch_server),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("matrix_key_fetch_key_id"), NULL,
      ngx_http_matrix_variable_fetch,
      offsetof(ngx_http_matrix_ctx_t, fetch_key_id),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/*
 * Collects and parses the X-Matrix headers, then checks them one by one
 * until one verifies; next() runs when one does. The request is suspended.
 */
void
ngx_http_matrix_authenticate(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx, ngx_http_matrix_next_pt next)
{
    int                                rc;
    mx_err_t                           err;
    ngx_uint_t                         i, n;
    ngx_list_part_t                   *part;
    ngx_table_elt_t                   *h;
    mx_xmatrix_t                      *xm;
    ngx_http_matrix_join_srv_conf_t   *mscf;

    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    xm = ngx_pcalloc(r->pool,
                     NGX_HTTP_MATRIX_MAX_HEADERS * sizeof(mx_xmatrix_t));
    if (xm == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    n = 0;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Authorization") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Authorization",
                               sizeof("Authorization") - 1) != 0)
        {
            continue;
        }

        if (n == NGX_HTTP_MATRIX_MAX_HEADERS) {
            ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_UNAUTHORIZED",
                                 "too many Authorization headers");
            return;
        }

        rc = mx_xmatrix_parse((char *) h[i].value.data, h[i].value.len,
                              &xm[n], &err);

        if (rc == MX_XMATRIX_OTHER_SCHEME) {
            continue;
        }

        if (rc != MX_XMATRIX_OK) {
            ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_UNAUTHORIZED",
                                 "Invalid X-Matrix Authorization header: %s",
                                 err.text);
            return;
        }

        if (n && ngx_strcmp(xm[n].origin, xm[0].origin) != 0) {
            ngx_http_matrix_fail(r, NGX_HTTP_BAD_REQUEST, "M_UNAUTHORIZED",
                                 "X-Matrix headers name different origins "
                                 "(\"%s\" and \"%s\")", xm[0].origin,
                                 xm[n].origin);
            return;
        }

        if (xm[n].has_destination
            && (ngx_strlen(xm[n].destination) != mscf->server_name.len
                || ngx_strncmp(xm[n].destination, mscf->server_name.data,
                               mscf->server_name.len) != 0))
        {
            ngx_http_matrix_fail(r, NGX_HTTP_UNAUTHORIZED, "M_UNAUTHORIZED",
                                 "Destination mismatch in auth header: "
                                 "\"%s\" is not \"%V\"", xm[n].destination,
                                 &mscf->server_name);
            return;
        }

        n++;
    }

    if (n == 0) {
        ngx_http_matrix_fail(r, NGX_HTTP_UNAUTHORIZED, "M_UNAUTHORIZED",
                             "Missing X-Matrix Authorization header");
        return;
    }

    ctx->xm = xm;
    ctx->nxm = n;
    ctx->cur = 0;
    ctx->authenticated = next;

    ngx_http_matrix_auth_step(r, ctx);
}


static uint32_t
ngx_http_matrix_key_hash(const char *server, const char *key_id)
{
    uint32_t  h;

    h = ngx_crc32_short((u_char *) server, ngx_strlen(server));

    return h ^ ngx_crc32_short((u_char *) key_id, ngx_strlen(key_id));
}


static ngx_http_matrix_key_entry_t *
ngx_http_matrix_key_slot(const char *server, const char *key_id,
    uint32_t *hash)
{
    *hash = ngx_http_matrix_key_hash(server, key_id);

    return &ngx_http_matrix_keys_sh->keys[*hash
                                          % NGX_HTTP_MATRIX_KEY_CACHE_SIZE];
}


/* under the zone's lock */

static ngx_http_matrix_key_lookup_e
ngx_http_matrix_key_lookup_locked(const char *server, const char *key_id,
    u_char *pk, int64_t *valid_until)
{
    int64_t                       now;
    uint32_t                      hash;
    ngx_http_matrix_key_entry_t  *e;

    e = ngx_http_matrix_key_slot(server, key_id, &hash);

    if (e->hash != hash || ngx_strcmp(e->server, server) != 0
        || ngx_strcmp(e->key_id, key_id) != 0)
    {
        return NGX_HTTP_MATRIX_KEY_MISS;
    }

    now = ngx_http_matrix_now_ms();

    if (e->negative_until > now) {
        return NGX_HTTP_MATRIX_KEY_UNKNOWN;
    }

    if (e->valid_until > now) {
        ngx_memcpy(pk, e->pk, MX_ED25519_PK_LEN);
        *valid_until = e->valid_until;
        return NGX_HTTP_MATRIX_KEY_FOUND;
    }

    return NGX_HTTP_MATRIX_KEY_MISS;
}


static ngx_http_matrix_key_lookup_e
ngx_http_matrix_key_lookup(const char *server, const char *key_id,
    u_char *pk)
{
    int64_t                       valid_until;
    ngx_http_matrix_key_lookup_e  rc;

    ngx_http_matrix_keys_lock();
    rc = ngx_http_matrix_key_lookup_locked(server, key_id, pk, &valid_until);
    ngx_http_matrix_keys_unlock();

    return rc;
}


static void
ngx_http_matrix_key_remember(const char *server, const char *key_id,
    const u_char *pk, int64_t valid_until, int64_t negative_until)
{
    uint32_t                      hash;
    ngx_http_matrix_key_entry_t  *e;

    ngx_http_matrix_keys_lock();

    e = ngx_http_matrix_key_slot(server, key_id, &hash);

    e->hash = hash;
    ngx_cpystrn((u_char *) e->server, (u_char *) server, sizeof(e->server));
    ngx_cpystrn((u_char *) e->key_id, (u_char *) key_id, sizeof(e->key_id));

    if (pk) {
        ngx_memcpy(e->pk, pk, MX_ED25519_PK_LEN);
    }

    e->valid_until = valid_until;
    e->negative_until = negative_until;

    ngx_http_matrix_keys_unlock();
}


/*
 * Brings server's key_id into this worker's memory if it can (from Redis,
 * or a fetch through matrix_key_fetch, as for a request's own key), then
 * calls next; ngx_http_matrix_key_get() answers from memory afterwards and
 * ctx->why says why a key is missing. For keys that sign events.
 */
void
ngx_http_matrix_key_ensure(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx,
    const char *server, const char *key_id, ngx_http_matrix_next_pt next)
{
    mx_xmatrix_t  *h;

    h = ngx_pcalloc(r->pool, sizeof(mx_xmatrix_t));
    if (h == NULL
        || ngx_strlen(server) >= sizeof(h->origin)
        || ngx_strlen(key_id) >= sizeof(h->key_id))
    {
        ngx_str_set(&ctx->why, "the server name or key ID is too long");
        next(r, ctx);
        return;
    }

    ngx_cpystrn((u_char *) h->origin, (u_char *) server, sizeof(h->origin));
    ngx_cpystrn((u_char *) h->key_id, (u_char *) key_id, sizeof(h->key_id));

    ctx->xm = h;
    ctx->nxm = 1;
    ctx->cur = 0;
    ctx->key_only = 1;
    ctx->authenticated = next;
    ngx_str_null(&ctx->why);

    ngx_http_matrix_auth_step(r, ctx);
}


ngx_int_t
ngx_http_matrix_key_get(const char *server, const char *key_id, u_char *pk,
    int64_t *valid_until)
{
    ngx_http_matrix_key_lookup_e  rc;

    ngx_http_matrix_keys_lock();
    rc = ngx_http_matrix_key_lookup_locked(server, key_id, pk, valid_until);
    ngx_http_matrix_keys_unlock();

    return rc == NGX_HTTP_MATRIX_KEY_FOUND ? NGX_OK : NGX_DECLINED;
}


/* Checks the current header; waits, moves on, or ends. */

static void
ngx_http_matrix_auth_step(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx)
{
    u_char                             pk[MX_ED25519_PK_LEN];
    ngx_int_t                          rc;
    ngx_str_t                          key;
    mx_xmatrix_t                      *h;
    const char                        *argv[3];
    size_t                             argvlen[3];
    ngx_http_matrix_join_main_conf_t  *mmcf;

    while (ctx->cur < ctx->nxm) {
        h = &((mx_xmatrix_t *) ctx->xm)[ctx->cur];

        switch (ngx_http_matrix_key_lookup(h->origin, h->key_id, pk)) {

        case NGX_HTTP_MATRIX_KEY_FOUND:
            if (ctx->key_only) {
                ctx->authenticated(r, ctx);
                return;
            }

            if (ngx_http_matrix_auth_verify(r, ctx, pk) == NGX_OK) {
                return;
            }

            ctx->cur++;
            continue;

        case NGX_HTTP_MATRIX_KEY_UNKNOWN:
            ngx_str_set(&ctx->why, "the key could not be fetched recently");
            ctx->cur++;
            continue;

        default: /* NGX_HTTP_MATRIX_KEY_MISS */
            break;
        }

        /* the shared cache in Redis */

        mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

        if (mmcf->redis.address.len == 0) {
            ngx_http_matrix_auth_fetch(r, ctx);
            return;
        }

        if (ngx_http_matrix_global_key(r, MX_KEY_KEYS, (u_char *) h->origin,
                                       ngx_strlen(h->origin), &key)
            != NGX_OK)
        {
            ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        argv[0] = "HGET";
        argvlen[0] = 4;
        argv[1] = (char *) key.data;
        argvlen[1] = key.len;
        argv[2] = h->key_id;
        argvlen[2] = ngx_strlen(h->key_id);

        rc = ngx_matrix_redis_command(r, ngx_http_matrix_auth_redis_reply,
                                      ctx, 3, argv, argvlen);
        if (rc != NGX_OK) {
            /* Redis is optional here: fetch the key instead */
            ngx_http_matrix_auth_fetch(r, ctx);
        }

        return;
    }

    if (ctx->key_only) {
        /* the caller looks the key up and names what is missing */
        ctx->authenticated(r, ctx);
        return;
    }

    ngx_http_matrix_fail(r, NGX_HTTP_UNAUTHORIZED, "M_UNAUTHORIZED",
                         "Failed to verify the X-Matrix signature of "
                         "\"%s\" with key \"%s\": %V",
                         ((mx_xmatrix_t *) ctx->xm)[ctx->nxm - 1].origin,
                         ((mx_xmatrix_t *) ctx->xm)[ctx->nxm - 1].key_id,
                         &ctx->why);
}


static void
ngx_http_matrix_auth_redis_reply(ngx_http_request_t *r, void *data,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_matrix_ctx_t *ctx = data;

    u_char             pk[MX_ED25519_PK_LEN];
    json_t            *v, *key, *until;
    int64_t            valid_until;
    mx_xmatrix_t      *h;
    ngx_connection_t  *c;

    /* the fetch may finalize (and free) r: posted requests run on c */
    c = r->connection;

    h = &((mx_xmatrix_t *) ctx->xm)[ctx->cur];

    if (status != NGX_MATRIX_REDIS_OK || reply->type != REDIS_REPLY_STRING) {
        ngx_http_matrix_auth_fetch(r, ctx);
        ngx_http_run_posted_requests(c);
        return;
    }

    v = json_loadb(reply->str, reply->len, 0, NULL);
    key = json_object_get(v, "key");
    until = json_object_get(v, "valid_until_ts");

    if (!json_is_string(key) || !json_is_integer(until)
        || mx_b64_decode(pk, sizeof(pk), json_string_value(key),
                         json_string_length(key), MX_B64_STD)
           != MX_ED25519_PK_LEN)
    {
        json_decref(v);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "matrix: ignoring a malformed cached key \"%s\" of "
                      "\"%s\"", h->key_id, h->origin);
        ngx_http_matrix_auth_fetch(r, ctx);
        ngx_http_run_posted_requests(c);
        return;
    }

    valid_until = json_integer_value(until);
    json_decref(v);

    if (valid_until <= ngx_http_matrix_now_ms()) {
        /* expired: perhaps the server has a newer document */
        ngx_http_matrix_auth_fetch(r, ctx);
        ngx_http_run_posted_requests(c);
        return;
    }

    ngx_http_matrix_key_remember(h->origin, h->key_id, pk, valid_until, 0);

    ngx_http_matrix_auth_step(r, ctx);
}


static ngx_int_t
ngx_http_matrix_auth_verify(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx,
    const u_char *pk)
{
    u_char                           *slot;
    u_char                            digest[MX_SHA256_LEN];
    ngx_uint_t                        known;
    mx_err_t                          err;
    mx_buf_t                          bytes = MX_BUF_INIT;
    ngx_int_t                         rc;
    mx_xmatrix_t                     *h;
    crypto_hash_sha256_state          st;
    ngx_http_matrix_join_srv_conf_t  *mscf;

    mscf = ngx_http_get_module_srv_conf(r, ngx_http_matrix_join_module);

    h = &((mx_xmatrix_t *) ctx->xm)[ctx->cur];

    /* configuration arguments are NUL-terminated */

    if (mx_xmatrix_signed_bytes(h, (char *) r->method_name.data,
                                r->method_name.len,
                                (char *) r->unparsed_uri.data,
                                r->unparsed_uri.len,
                                (char *) mscf->server_name.data,
                                ctx->content, &bytes, &err)
        != 0)
    {
        mx_buf_free(&bytes);

        ctx->why.data = ngx_pnalloc(r->pool, sizeof(err.text));
        if (ctx->why.data) {
            ctx->why.len = ngx_cpystrn(ctx->why.data, (u_char *) err.text,
                                       sizeof(err.text))
                           - ctx->why.data;
        }

        return NGX_DECLINED;
    }

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (u_char *) bytes.data, bytes.len);
    crypto_hash_sha256_update(&st, h->sig, MX_ED25519_SIG_LEN);
    crypto_hash_sha256_update(&st, pk, MX_ED25519_PK_LEN);
    crypto_hash_sha256_final(&st, digest);

    slot = ngx_http_matrix_keys_sh->verified[(digest[0] | digest[1] << 8)
                                             % NGX_HTTP_MATRIX_VERIFIED_SIZE];

    rc = NGX_OK;

    ngx_http_matrix_keys_lock();
    known = (ngx_memcmp(slot, digest, MX_SHA256_LEN) == 0);
    ngx_http_matrix_keys_unlock();

    if (!known) {

        if (mx_ed25519_verify(h->sig, bytes.data, bytes.len, pk) != 0) {
            rc = NGX_DECLINED;

        } else {
            ngx_http_matrix_keys_lock();
            ngx_memcpy(slot, digest, MX_SHA256_LEN);
            ngx_http_matrix_keys_unlock();
        }
    }

    mx_buf_free(&bytes);

    if (rc != NGX_OK) {
        ngx_str_set(&ctx->why, "bad signature");
        return NGX_DECLINED;
    }

    ctx->origin.len = ngx_strlen(h->origin);
    ctx->origin.data = ngx_pnalloc(r->pool, ctx->origin.len);
    if (ctx->origin.data == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_OK;
    }

    ngx_memcpy(ctx->origin.data, h->origin, ctx->origin.len);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "matrix: request authenticated as \"%V\"", &ctx->origin);

    ctx->authenticated(r, ctx);

    return NGX_OK;
}


static void
ngx_http_matrix_auth_next_header(ngx_http_request_t *r,
    ngx_http_matrix_ctx_t *ctx)
{
    ctx->cur++;
    ngx_http_matrix_auth_step(r, ctx);
}


/* a bucket of key_fetch_rate tokens per origin, refilled over a minute */

static ngx_uint_t
ngx_http_matrix_rate_allows_locked(const char *server, double rate)
{
    int64_t                        now;
    uint32_t                       hash;
    ngx_http_matrix_rate_entry_t  *e;

    hash = ngx_crc32_short((u_char *) server, ngx_strlen(server));
    now = ngx_http_matrix_now_ms();

    e = &ngx_http_matrix_keys_sh->rates[hash % NGX_HTTP_MATRIX_RATE_SIZE];

    if (e->hash != hash || ngx_strcmp(e->server, server) != 0) {
        e->hash = hash;
        ngx_cpystrn((u_char *) e->server, (u_char *) server,
                    sizeof(e->server));
        e->tokens = rate;
        e->last = now;
    }

    e->tokens += (double) (now - e->last) * rate / 60000.0;
    e->last = now;

    if (e->tokens > rate) {
        e->tokens = rate;
    }

    if (e->tokens < 1.0) {
        return 0;
    }

    e->tokens -= 1.0;

    return 1;
}


typedef enum {
    NGX_HTTP_MATRIX_FETCH_OURS = 0,     /* this worker fetches */
    NGX_HTTP_MATRIX_FETCH_REMOTE,       /* another does: wait for its wake */
    NGX_HTTP_MATRIX_FETCH_LIMITED,      /* key_fetch_rate reached */
    NGX_HTTP_MATRIX_FETCH_FULL          /* too many fetches on the machine */
} ngx_http_matrix_fetch_claim_e;


/*
 * The machine's fetch of server's key_id: another worker's, alive and not
 * older than timeout (this worker then listed for its wake), or a new one
 * of this worker's, within the rate.
 */
static ngx_http_matrix_fetch_claim_e
ngx_http_matrix_fetch_claim(const char *server, const char *key_id,
    double rate, ngx_msec_t timeout)
{
    int64_t                      now;
    ngx_uint_t                   i;
    ngx_http_matrix_fetch_sh_t  *f, *free;

    now = ngx_http_matrix_now_ms();
    free = NULL;

    ngx_http_matrix_keys_lock();

    for (i = 0; i < NGX_HTTP_MATRIX_MAX_FETCHES; i++) {
        f = &ngx_http_matrix_keys_sh->fetches[i];

        if (f->pid != 0
            && (now - f->started > (int64_t) timeout + 1000
                || (f->pid != ngx_pid && kill(f->pid, 0) == -1
                    && ngx_errno == NGX_ESRCH)))
        {
            f->pid = 0;     /* a fetch that hung, or a worker that died */
        }

        if (f->pid == 0) {
            if (free == NULL) {
                free = f;
            }

            continue;
        }

        if (f->pid != ngx_pid && ngx_strcmp(f->server, server) == 0
            && ngx_strcmp(f->key_id, key_id) == 0)
        {
            ngx_matrix_wake_enlist(&f->waiters);
            ngx_http_matrix_keys_unlock();
            return NGX_HTTP_MATRIX_FETCH_REMOTE;
        }
    }

    if (free == NULL) {
        ngx_http_matrix_keys_unlock();
        return NGX_HTTP_MATRIX_FETCH_FULL;
    }

    if (!ngx_http_matrix_rate_allows_locked(server, rate)) {
        ngx_http_matrix_keys_unlock();
        return NGX_HTTP_MATRIX_FETCH_LIMITED;
    }

    ngx_cpystrn((u_char *) free->server, (u_char *) server,
                sizeof(free->server));
    ngx_cpystrn((u_char *) free->key_id, (u_char *) key_id,
                sizeof(free->key_id));
    free->pid = ngx_pid;
    free->started = now;
    free->waiters.n = 0;

    ngx_http_matrix_keys_unlock();

    return NGX_HTTP_MATRIX_FETCH_OURS;
}


/* This worker's fetch is over: the workers waiting for it look again. */

static void
ngx_http_matrix_fetch_release(const char *server, const char *key_id)
{
    ngx_uint_t                   i;
    ngx_matrix_wake_list_t       waiters;
    ngx_http_matrix_fetch_sh_t  *f;

    waiters.n = 0;

    ngx_http_matrix_keys_lock();

    for (i = 0; i < NGX_HTTP_MATRIX_MAX_FETCHES; i++) {
        f = &ngx_http_matrix_keys_sh->fetches[i];

        if (f->pid == ngx_pid && ngx_strcmp(f->server, server) == 0
            && ngx_strcmp(f->key_id, key_id) == 0)
        {
            waiters = f->waiters;
            f->pid = 0;
            break;
        }
    }

    ngx_http_matrix_keys_unlock();

    ngx_matrix_wake(&waiters);
}


/* The key is not cached: wait for a fetch of it, or start one. */

static void
ngx_http_matrix_auth_fetch(ngx_http_request_t *r, ngx_http_matrix_ctx_t *ctx)
{
    u_char                            *p;
    ngx_str_t                          uri, args;
    ngx_uint_t                         i;
    mx_xmatrix_t                      *h;
    ngx_http_request_t                *sr;
    ngx_http_matrix_ctx_t             *sctx;
    ngx_http_matrix_fetch_t           *f, *free_slot;
    ngx_http_cleanup_t                *fcln;
    ngx_http_matrix_fetch_claim_e      claim;
    ngx_http_post_subrequest_t        *ps;
    ngx_http_matrix_join_loc_conf_t   *mlcf;

    h = &((mx_xmatrix_t *) ctx->xm)[ctx->cur];
    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_matrix_join_module);

    if (mlcf->key_fetch.len == 0) {
        ngx_str_set(&ctx->why, "the key is unknown and no matrix_key_fetch "
                               "location is configured");
        ngx_http_matrix_auth_next_header(r, ctx);
        return;
    }

    free_slot = NULL;

    for (i = 0; i < NGX_HTTP_MATRIX_MAX_FETCHES; i++) {
        f = &ngx_http_matrix_fetches[i];

        if (!f->used) {
            if (free_slot == NULL) {
                free_slot = f;
            }

            continue;
        }

        if (ngx_strcmp(f->server, h->origin) == 0
            && ngx_strcmp(f->key_id, h->key_id) == 0)
        {
            /* somebody fetches it already: wait for that */
            break;
        }
    }

    if (i < NGX_HTTP_MATRIX_MAX_FETCHES) {
        f = &ngx_http_matrix_fetches[i];
        goto wait;
    }

    if (free_slot == NULL) {
        ngx_http_matrix_metrics_key_fetch(NGX_HTTP_MATRIX_KF_BUSY);
        ngx_str_set(&ctx->why, "too many key fetches in progress");
        ngx_http_matrix_auth_next_header(r, ctx);
        return;
    }

    claim = ngx_http_matrix_fetch_claim(h->origin, h->key_id,
                                        (double) mlcf->key_fetch_rate,
                                        mlcf->key_fetch_timeout);

    if (claim == NGX_HTTP_MATRIX_FETCH_FULL) {
        ngx_http_matrix_metrics_key_fetch(NGX_HTTP_MATRIX_KF_BUSY);
        ngx_str_set(&ctx->why, "too many key fetches in progress");
        ngx_http_matrix_auth_next_header(r, ctx);
        return;
    }

    if (claim == NGX_HTTP_MATRIX_FETCH_LIMITED) {
        ngx_http_matrix_metrics_key_fetch(NGX_HTTP_MATRIX_KF_RATE);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "matrix: key fetch rate limit reached for \"%s\"",
                      h->origin);
        ngx_str_set(&ctx->why, "the key is unknown and the key fetch rate "
                               "limit for this server is reached");
        ngx_http_matrix_auth_next_header(r, ctx);
        return;
    }

    f = free_slot;
    ngx_memzero(f, sizeof(ngx_http_matrix_fetch_t));
    f->used = 1;
    ngx_cpystrn((u_char *) f->server, (u_char *) h->origin, sizeof(f->server));
    ngx_cpystrn((u_char *) f->key_id, (u_char *) h->key_id, sizeof(f->key_id));
    ngx_queue_init(&f->waiters);

    if (claim == NGX_HTTP_MATRIX_FETCH_REMOTE) {
        /* another worker fetches it: its wake ends this slot */
        f->remote = 1;
        goto wait;
    }

    /* start a fetch: this request owns it */

    f->owner = r;

    uri.len = mlcf->key_fetch.len + ngx_strlen(h->origin) + 1
              + ngx_strlen(h->key_id);
    uri.data = ngx_pnalloc(r->pool, uri.len);

    args.data = ngx_pnalloc(r->pool, sizeof("minimum_valid_until_ts=") - 1
                                     + NGX_INT64_LEN);

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    sctx = ngx_pcalloc(r->pool, sizeof(ngx_http_matrix_ctx_t));

    if (uri.data == NULL || args.data == NULL || ps == NULL || sctx == NULL) {
        ngx_http_matrix_auth_fetch_end(f);
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ngx_cpymem(uri.data, mlcf->key_fetch.data, mlcf->key_fetch.len);
    sctx->fetch_server.data = p;
    sctx->fetch_server.len = ngx_strlen(h->origin);
    p = ngx_cpymem(p, h->origin, sctx->fetch_server.len);
    *p++ = '/';
    sctx->fetch_key_id.data = p;
    sctx->fetch_key_id.len = ngx_strlen(h->key_id);
    ngx_memcpy(p, h->key_id, sctx->fetch_key_id.len);

    args.len = ngx_sprintf(args.data, "minimum_valid_until_ts=%L",
                           ngx_http_matrix_now_ms())
               - args.data;

    ps->handler = ngx_http_matrix_auth_fetch_done;
    ps->data = f;

    /*
     * In the background: the request does not wait for the subrequest to
     * answer (it waits, with its timer, like every other waiter), and its
     * own headers and body are not the fetch's.
     */

    if (ngx_http_subrequest(r, &uri, &args, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        ngx_http_matrix_auth_fetch_end(f);
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 1,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    sr->headers_in.content_length_n = -1;
    sr->headers_in.keep_alive_n = -1;
    sr->request_body = NULL;
    sr->header_only = 0;

    ngx_http_set_ctx(sr, sctx, ngx_http_matrix_join_module);

    /* if this request dies first, the fetch is given up and retried */

    fcln = ngx_http_cleanup_add(r, 0);
    if (fcln == NULL) {
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    fcln->handler = ngx_http_matrix_auth_owner_gone;
    fcln->data = f;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "matrix: fetching key \"%s\" of \"%s\" via \"%V\"",
                  h->key_id, h->origin, &uri);

wait:

    ctx->fetch = f;
    ctx->waiting = 1;
    ngx_queue_insert_tail(&f->waiters, &ctx->wait_link);

    ctx->cleanup = ngx_http_cleanup_add(r, 0);
    if (ctx->cleanup == NULL) {
        ngx_queue_remove(&ctx->wait_link);
        ctx->waiting = 0;
        ngx_http_matrix_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->cleanup->handler = ngx_http_matrix_auth_waiter_gone;
    ctx->cleanup->data = ctx;

    ctx->wait_timer.handler = ngx_http_matrix_auth_wait_timeout;
    ctx->wait_timer.data = r;
    ctx->wait_timer.log = r->connection->log;

    ctx->resume.handler = ngx_http_matrix_auth_resume;
    ctx->resume.data = r;
    ctx->resume.log = r->connection->log;

    ngx_add_timer(&ctx->wait_timer, mlcf->key_fetch_timeout);
}


/* In the subrequest's context, when it is done: read the key document. */

static ngx_int_t
ngx_http_matrix_auth_fetch_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_matrix_fetch_t *f = data;

    u_char                            *body;
    size_t                             len, nkeys;
    int64_t                            now;
    const char                        *why;
    mx_keydoc_key_t                    keys[MX_KEYDOC_MAX_KEYS];
    const mx_keydoc_key_t             *k;
    ngx_http_matrix_join_loc_conf_t   *mlcf;

    if (!f->used || f->owner != sr->parent) {
        return rc;      /* the owner went away; nobody waits for this */
    }

    body = NULL;
    len = 0;

    if (sr->out && sr->out->buf) {
        body = sr->out->buf->pos;
        len = sr->out->buf->last - sr->out->buf->pos;
    }

    why = NULL;
    k = NULL;
    now = ngx_http_matrix_now_ms();

    if (rc != NGX_OK && rc != NGX_HTTP_OK) {
        why = "the fetch failed";

    } else if (sr->headers_out.status != NGX_HTTP_OK) {
        why = "the key server did not answer 200";

    } else if (body == NULL || len == 0) {
        why = "the key server's answer is empty (or larger than "
              "subrequest_output_buffer_size)";

    } else if (mx_keydoc_parse((char *) body, len, f->server, f->key_id,
                               now, NGX_HTTP_MATRIX_KEY_MAX_AGE, keys,
                               MX_KEYDOC_MAX_KEYS, &nkeys, &why)
               == 0)
    {
        k = mx_keydoc_find(keys, nkeys, f->key_id);
    }

    mlcf = ngx_http_get_module_loc_conf(sr->parent,
                                        ngx_http_matrix_join_module);

    if (k == NULL) {
        ngx_log_error(NGX_LOG_WARN, sr->connection->log, 0,
                      "matrix: fetching key \"%s\" of \"%s\" failed: %s "
                      "(status %ui)", f->key_id, f->server, why,
                      sr->headers_out.status);

        ngx_http_matrix_key_remember(f->server, f->key_id, NULL, 0,
                                     now + mlcf->key_fetch_negative_ttl);
        ngx_http_matrix_metrics_key_fetch(NGX_HTTP_MATRIX_KF_FAILED);

    } else {
        ngx_http_matrix_key_remember(f->server, f->key_id, k->pk,
                                     k->valid_until, 0);
        ngx_http_matrix_metrics_key_fetch(NGX_HTTP_MATRIX_KF_FETCHED);
        ngx_http_matrix_key_store(sr, f->server, f->key_id, k->pk,
                                  k->valid_until);
    }

    /* everyone waiting, the owner too, looks the key up again */

    ngx_http_matrix_auth_fetch_end(f);

    return rc;
}


/* Into Redis, for the other workers and hosts; nobody waits for it. */

static void
ngx_http_matrix_key_store(ngx_http_request_t *r, const char *server,
    const char *key_id, const u_char *pk, int64_t valid_until)
{
    u_char                             *p;
    char                                b64[MX_ED25519_PK_B64_LEN + 1];
    char                                value[128], until[NGX_INT64_LEN + 1];
    ngx_str_t                           key;
    const char                         *argv[4];
    size_t                              argvlen[4];
    ngx_http_matrix_join_main_conf_t   *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_matrix_join_module);

    if (mmcf->redis.address.len == 0) {
        return;
    }

    if (ngx_http_matrix_global_key(r, MX_KEY_KEYS, (u_char *) server,
                                   ngx_strlen(server), &key)
        != NGX_OK)
    {
        return;
    }

    mx_b64_encode(b64, pk, MX_ED25519_PK_LEN, MX_B64_STD);

    /* canonical: keys sorted, compact */
    p = ngx_snprintf((u_char *) value, sizeof(value),
                     "{\"key\":\"%s\",\"valid_until_ts\":%L}", b64,
                     valid_until);

    argv[0] = "HSET";
    argvlen[0] = 4;
    argv[1] = (char *) key.data;
    argvlen[1] = key.len;
    argv[2] = key_id;
    argvlen[2] = ngx_strlen(key_id);
    argv[3] = value;
    argvlen[3] = p - (u_char *) value;

    (void) ngx_matrix_redis_command(NULL, NULL, NULL, 4, argv, argvlen);

    /* the hash lives as long as its newest key */
    p = ngx_sprintf((u_char *) until, "%L", valid_until);

    argv[0] = "PEXPIREAT";
    argvlen[0] = sizeof("PEXPIREAT") - 1;
    argv[2] = until;
    argvlen[2] = p - (u_char *) until;

    (void) ngx_matrix_redis_command(NULL, NULL, NULL, 3, argv, argvlen);
}


/* The fetch is over: wake everyone waiting for it, free the slot. */

static void
ngx_http_matrix_auth_fetch_end(ngx_http_matrix_fetch_t *f)
{
    ngx_queue_t            *q;
    ngx_http_matrix_ctx_t  *ctx;

    while (!ngx_queue_empty(&f->waiters)) {
        q = ngx_queue_head(&f->waiters);
        ngx_queue_remove(q);

        ctx = ngx_queue_data(q, ngx_http_matrix_ctx_t, wait_link);
        ctx->waiting = 0;
        ctx->fetch = NULL;

        if (ctx->wait_timer.timer_set) {
            ngx_del_timer(&ctx->wait_timer);
        }

        /* each waiter looks its key up again, from its own event */
        ngx_post_event(&ctx->resume, &ngx_posted_events);
    }

    if (!f->remote) {
        ngx_http_matrix_fetch_release(f->server, f->key_id);
    }

    f->used = 0;
    f->remote = 0;
    f->owner = NULL;
}


/*
 * This worker was woken: another worker's fetch (or read) ended. Every
 * slot waiting for another worker ends: its requests look their key up
 * again, in the zone, and wait again if that fetch is still under way.
 */
static void
ngx_http_matrix_auth_wake(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_MATRIX_MAX_FETCHES; i++) {
        if (ngx_http_matrix_fetches[i].used
            && ngx_http_matrix_fetches[i].remote)
        {
            ngx_http_matrix_auth_fetch_end(&ngx_http_matrix_fetches[i]);
        }
    }
}


/* A waiter leaves: a slot waiting for another worker, with none, goes. */

static void
ngx_http_matrix_auth_unwait(ngx_http_matrix_ctx_t *ctx)
{
    ngx_http_matrix_fetch_t  *f;

    if (!ctx->waiting) {
        return;
    }

    ngx_queue_remove(&ctx->wait_link);
    ctx->waiting = 0;

    f = ctx->fetch;
    ctx->fetch = NULL;

    if (f && f->used && f->remote && ngx_queue_empty(&f->waiters)) {
        f->used = 0;
        f->remote = 0;
    }
}


static void
ngx_http_matrix_auth_owner_gone(void *data)
{
    ngx_http_matrix_fetch_t *f = data;

    /*
     * The subrequest dies with its request: the others look again and
     * one of them starts a fetch of its own.
     */

    if (f->used) {
        ngx_http_matrix_auth_fetch_end(f);
    }
}


static void
ngx_http_matrix_auth_waiter_gone(void *data)
{
    ngx_http_matrix_ctx_t *ctx = data;

    ngx_http_matrix_auth_unwait(ctx);

    if (ctx->wait_timer.timer_set) {
        ngx_del_timer(&ctx->wait_timer);
    }

    if (ctx->resume.posted) {
        ngx_delete_posted_event(&ctx->resume);
    }
}


static void
ngx_http_matrix_auth_wait_timeout(ngx_event_t *ev)
{
    ngx_http_request_t     *r = ev->data;
    ngx_http_matrix_ctx_t  *ctx;
    mx_xmatrix_t           *h;

    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    ngx_http_matrix_auth_unwait(ctx);

    ctx->cleanup->handler = NULL;
    h = &((mx_xmatrix_t *) ctx->xm)[ctx->cur];

    if (ctx->key_only) {
        ngx_str_set(&ctx->why, "timed out fetching the key");
        ctx->cur++;
        ngx_http_matrix_auth_step(r, ctx);
        return;
    }

    ngx_http_matrix_fail(r, NGX_HTTP_UNAUTHORIZED, "M_UNAUTHORIZED",
                         "Timed out fetching key \"%s\" of \"%s\"",
                         h->key_id, h->origin);
}


static void
ngx_http_matrix_auth_resume(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_request_t     *r = ev->data;
    ngx_http_matrix_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    ctx->cleanup->handler = NULL;

    ngx_http_matrix_auth_step(r, ctx);
    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_matrix_auth_init(ngx_conf_t *cf)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_matrix_join_module);

    /* the struct, and the slab pool's own pages around it */
    mmcf->keys = ngx_http_matrix_shared_struct(cf,
                                           &ngx_http_matrix_keys_zone_name,
                                           sizeof(ngx_http_matrix_keys_sh_t),
                                           ngx_align(sizeof(
                                               ngx_http_matrix_keys_sh_t),
                                               ngx_pagesize)
                                           + 16 * ngx_pagesize);
    if (mmcf->keys == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_matrix_auth_init_worker(ngx_cycle_t *cycle)
{
    ngx_http_matrix_join_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_matrix_join_module);

    ngx_http_matrix_keys_sh = mmcf->keys->data;
    ngx_http_matrix_keys_pool = (ngx_slab_pool_t *) mmcf->keys->shm.addr;

    ngx_matrix_wake_on(ngx_http_matrix_auth_wake);
}


void
ngx_http_matrix_auth_exit_worker(void)
{
    ngx_uint_t  i;

    /* the machine's fetches this worker had, for the others to take */

    for (i = 0; i < NGX_HTTP_MATRIX_MAX_FETCHES; i++) {
        if (ngx_http_matrix_fetches[i].used
            && !ngx_http_matrix_fetches[i].remote)
        {
            ngx_http_matrix_fetch_release(ngx_http_matrix_fetches[i].server,
                                          ngx_http_matrix_fetches[i].key_id);
        }
    }
}


ngx_int_t
ngx_http_matrix_auth_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_matrix_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_matrix_variable_origin(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_matrix_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_matrix_join_module);

    if (ctx == NULL || ctx->origin.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->origin.len;
    v->data = ctx->origin.data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_matrix_variable_fetch(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t              *s;
    ngx_http_matrix_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_matrix_join_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((char *) ctx + data);

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
