/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The hiredis async adapter: one context per worker on nginx's event loop.
 *
 * The rules it follows (each one was broken by a public adapter once):
 *
 * 1. Level-triggered events: hiredis reads at most 16 KiB per call, so with
 *    edge-triggered registration a larger reply would stall.
 * 2. The fd belongs to hiredis: our cleanup hook frees the nginx connection
 *    but never closes the fd; redisFree() does.
 * 3. hiredis never gets a request as privdata, but an operation record; a
 *    request cleanup detaches the request when it dies first. hiredis calls
 *    every callback exactly once (with a NULL reply when the context dies),
 *    so the callback always frees the record.
 * 4. Every operation in flight has a non-cancelable timer: it is the
 *    timeout (hiredis 0.14 has none) and it makes a graceful shutdown wait
 *    for the reply instead of dropping the request.
 * 5. A request that times out is answered, but its command stays queued
 *    in hiredis until Redis answers; a Redis that never does (stopped,
 *    or a network that drops packets while TCP stays up) would let every
 *    later command pile up in the worker, bodies included. So when a
 *    command times out and nothing at all was read from the connection
 *    since it was sent, the connection is declared hung: freed (every
 *    command on it answered 504 at once) and made again.
 *
 * With Sentinel (matrix_redis sentinel:NAME ...), the master is whatever a
 * sentinel names: asked on a second, short-lived context before each
 * connect, every second while connected, and after a WAIT that fell
 * short; commands that come during the lookup wait for it in rd->waiting.
 *
 * With Redis Cluster (matrix_redis cluster:host:port ...), each master has
 * a record of its own (a connection, its backoff, its hang detection) and
 * every command goes to the one that owns its first key's slot (a room's
 * keys share one: docs/redis-schema.md); a command with no key (MULTI,
 * EXEC, WAIT) goes where the one before it went, or where the caller
 * pointed with ngx_matrix_redis_route(). The slot map comes from CLUSTER
 * SLOTS: asked at start, after a MOVED and when a node's connection is
 * lost (a failover). A MOVED or ASK answer to a command outside MULTI is
 * followed at once (a few times at most), with the command's own timer;
 * inside MULTI it fails the transaction (EXECABORT), as a reshard may.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "mx_cluster.h"
#include "mx_cluster_slots.h"
#include "mx_redis_addr.h"
#include "mx_schema.h"
#include "ngx_matrix_redis.h"
#include "ngx_http_matrix_metrics.h"


#define NGX_MATRIX_REDIS_BACKOFF_MIN   100
#define NGX_MATRIX_REDIS_BACKOFF_MAX   5000

/* a failover names a new master within seconds: look soon, not in 5 s */
#define NGX_MATRIX_REDIS_BACKOFF_SENTINEL_MAX   500

/* while connected, a sentinel is asked this often whether it still is */
#define NGX_MATRIX_REDIS_SENTINEL_RECHECK       1000

/* Redis Cluster: nodes known, redirections per command, and the least
 * time between two CLUSTER SLOTS */
#define NGX_MATRIX_REDIS_NODES                  64
#define NGX_MATRIX_REDIS_REDIRECTS              5
#define NGX_MATRIX_REDIS_REFRESH_MIN            100


typedef enum {
    NGX_MATRIX_REDIS_DISCONNECTED = 0,
    NGX_MATRIX_REDIS_CONNECTING,
    NGX_MATRIX_REDIS_CONNECTED
} ngx_matrix_redis_state_e;


typedef struct {
    ngx_matrix_redis_conf_t     *conf;
    ngx_log_t                   *log;
    redisAsyncContext           *ac;
    ngx_matrix_redis_state_e     state;
    ngx_msec_t                   backoff;
    ngx_msec_t                   next_connect;  /* ngx_current_msec based */
    ngx_uint_t                   connects;
    ngx_uint_t                   hangs;
    ngx_uint_t                   outstanding;   /* ops hiredis holds */
    ngx_uint_t                   context;       /* counts contexts made */
    ngx_uint_t                   reads;         /* read events on it */
    ngx_uint_t                   schema_bad;
    redisAsyncContext           *broken;    /* AUTH or SELECT failed on it */
    redisAsyncContext           *hung;      /* being freed as hung */
    char                         last_error[128];

    /* Sentinel: the lookup in flight, and the master it named */
    redisAsyncContext           *sac;
    ngx_event_t                  lookup_timer;
    ngx_uint_t                   sentinel;      /* the next one to ask */
    ngx_uint_t                   lookup_tries;  /* in this round */
    ngx_queue_t                  waiting;       /* ops sent once it ends */
    ngx_event_t                  recheck;
    char                         master_host[NGX_SOCKADDR_STRLEN + 1];
    int                          master_port;
    char                         conn_host[NGX_SOCKADDR_STRLEN + 1];
    int                          conn_port;     /* what rd->ac is to */

    /* Redis Cluster: the node's address (numeric), its index */
    char                         node_host[NGX_SOCKADDR_STRLEN + 1];
    int                          node_port;
    ngx_uint_t                   node;

    unsigned                     exiting:1;
    unsigned                     in_multi:1;    /* MULTI sent, no EXEC yet */
} ngx_matrix_redis_t;


typedef struct {
    ngx_matrix_redis_t          *nodes[NGX_MATRIX_REDIS_NODES];
    ngx_uint_t                   nnodes;
    u_char                       slot[MX_CLUSTER_SLOTS];   /* node index */
    ngx_int_t                    last_slot; /* keyless commands go there */
    ngx_queue_t                  waiting;   /* ops sent once mapped */
    redisAsyncContext           *refreshing;    /* CLUSTER SLOTS on it */
    ngx_msec_t                   refreshed;     /* when the last one went */
    ngx_event_t                  refresh;
    ngx_uint_t                   refreshes;
    ngx_uint_t                   redirects;
    ngx_cycle_t                 *cycle;
    ngx_matrix_redis_conf_t     *conf;
    ngx_uint_t                   schema_bad;    /* its one schema key's */
    unsigned                     mapped:1;  /* a CLUSTER SLOTS answered */
} ngx_matrix_redis_cluster_t;


typedef struct {
    ngx_http_request_t          *request;       /* NULL once it is gone */
    ngx_http_cleanup_t          *cleanup;
    ngx_matrix_redis_handler_pt  handler;
    void                        *data;
    ngx_event_t                  timer;
    ngx_queue_t                  queue;         /* in rd->waiting */
    mx_lua_e                     script;
    ngx_uint_t                   context;       /* rd->context when sent */
    ngx_uint_t                   reads;         /* rd->reads when sent */
    ngx_matrix_redis_t          *rd;            /* the node it went to */
    ngx_int_t                    slot;          /* a cluster's, or -1 */
    ngx_uint_t                   redirects;
    int                          nkeys;
    int                          argc;
    char                       **argv;          /* a copy, for NOSCRIPT */
    size_t                      *argvlen;
    unsigned                     is_script:1;
    unsigned                     retried:1;
    unsigned                     timed_out:1;
    unsigned                     in_multi:1;    /* queued inside MULTI */
    unsigned                     asking:1;      /* ASKING first (ASK) */
} ngx_matrix_redis_op_t;


static ngx_int_t ngx_matrix_redis_connect(ngx_matrix_redis_t *rd);
static ngx_int_t ngx_matrix_redis_open(ngx_matrix_redis_t *rd,
    const char *host, int port);
static void ngx_matrix_redis_lookup_next(ngx_matrix_redis_t *rd);
static ngx_int_t ngx_matrix_redis_lookup_open(ngx_matrix_redis_t *rd,
    ngx_matrix_redis_host_t *s);
static void ngx_matrix_redis_lookup_connected(const redisAsyncContext *ac,
    int status);
static void ngx_matrix_redis_lookup_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_matrix_redis_lookup_auth(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_matrix_redis_lookup_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_matrix_redis_lookup_failed(ngx_matrix_redis_t *rd,
    const char *why);
static void ngx_matrix_redis_lookup_timeout(ngx_event_t *ev);
static void ngx_matrix_redis_lookup_read(ngx_event_t *ev);
static void ngx_matrix_redis_lookup_write(ngx_event_t *ev);
static void ngx_matrix_redis_role_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_matrix_redis_drop(ngx_matrix_redis_t *rd,
    redisAsyncContext *ac, const char *why);
static void ngx_matrix_redis_flush(ngx_matrix_redis_t *rd);
static void ngx_matrix_redis_recheck(ngx_event_t *ev);
static void ngx_matrix_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_matrix_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_matrix_redis_lost(ngx_matrix_redis_t *rd, const char *why);
static void ngx_matrix_redis_read_handler(ngx_event_t *ev);
static void ngx_matrix_redis_write_handler(ngx_event_t *ev);
static void ngx_matrix_redis_add_read(void *privdata);
static void ngx_matrix_redis_del_read(void *privdata);
static void ngx_matrix_redis_add_write(void *privdata);
static void ngx_matrix_redis_del_write(void *privdata);
static void ngx_matrix_redis_cleanup(void *privdata);
static ngx_int_t ngx_matrix_redis_attach(ngx_matrix_redis_t *rd,
    redisAsyncContext *ac, void *data, ngx_event_handler_pt read,
    ngx_event_handler_pt write);
static void ngx_matrix_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_matrix_redis_schema_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_int_t ngx_matrix_redis_start(ngx_http_request_t *r,
    ngx_matrix_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen, ngx_uint_t is_script,
    mx_lua_e script, int nkeys, ngx_msec_t extra);
static ngx_int_t ngx_matrix_redis_send_op(ngx_matrix_redis_op_t *op);
static void ngx_matrix_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_matrix_redis_timeout(ngx_event_t *ev);
static void ngx_matrix_redis_hung(ngx_matrix_redis_t *rd);
static void ngx_matrix_redis_request_gone(void *data);
static void ngx_matrix_redis_finish(ngx_matrix_redis_op_t *op,
    redisReply *reply, ngx_matrix_redis_status_e status, const char *err);
static void ngx_matrix_redis_op_free(ngx_matrix_redis_op_t *op);


/* the worker's only context */
static ngx_matrix_redis_t  *ngx_matrix_redis;  /* the first node's */
static ngx_matrix_redis_cluster_t  *ngx_matrix_redis_cl;

static ngx_matrix_redis_t *ngx_matrix_redis_node(const char *host, int port);
static void ngx_matrix_redis_init_rd(ngx_matrix_redis_t *rd,
    ngx_matrix_redis_conf_t *rcf, ngx_log_t *log);
static void ngx_matrix_redis_exit_rd(ngx_matrix_redis_t *rd);
static ngx_matrix_redis_t *ngx_matrix_redis_pick(int argc, const char **argv,
    const size_t *argvlen, ngx_uint_t is_script, int nkeys, ngx_int_t *slot);
static void ngx_matrix_redis_cluster_flush(void);
static ngx_uint_t ngx_matrix_redis_schema_bad(ngx_matrix_redis_t *rd);
static void ngx_matrix_redis_dispatch(ngx_matrix_redis_op_t *op,
    ngx_matrix_redis_t *rd);
static void ngx_matrix_redis_refresh(ngx_matrix_redis_t *rd);
static void ngx_matrix_redis_refresh_timer(ngx_event_t *ev);
static void ngx_matrix_redis_slots_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_int_t ngx_matrix_redis_redirect(ngx_matrix_redis_t *rd,
    ngx_matrix_redis_op_t *op, redisReply *reply);


const char *
ngx_matrix_redis_script_sha1(mx_lua_e script)
{
    return mx_lua_scripts[script].sha1;
}


const char *
ngx_matrix_redis_script_source(mx_lua_e script)
{
    return mx_lua_scripts[script].source;
}


static char *
ngx_matrix_redis_resolve(ngx_conf_t *cf, ngx_str_t *address,
    mx_redis_host_t *h, ngx_str_t *host, int *port)
{
    u_char     *p;
    ngx_url_t   u;

    if (h->port == 0) {
        host->len = ngx_strlen(h->host);
        host->data = ngx_pnalloc(cf->pool, host->len + 1);
        if (host->data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(host->data, h->host, host->len + 1);
        *port = 0;

        return NGX_CONF_OK;
    }

    /* names are resolved once, here: hiredis would resolve while blocking */

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.len = ngx_strlen(h->host);
    u.url.data = ngx_pnalloc(cf->pool, u.url.len + 2);
    if (u.url.data == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_strchr(h->host, ':')) {
        u.url.len = ngx_sprintf(u.url.data, "[%s]", h->host) - u.url.data;
    } else {
        ngx_memcpy(u.url.data, h->host, u.url.len);
    }

    u.default_port = (in_port_t) h->port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address \"%V\": cannot resolve "
                           "\"%s\"%s%s", address, h->host,
                           u.err ? ": " : "", u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    host->len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                              p, NGX_SOCKADDR_STRLEN, 0);
    p[host->len] = '\0';
    host->data = p;

    /* hiredis wants IPv6 addresses without brackets */

    if (host->len > 2 && p[0] == '[') {
        host->data = p + 1;
        host->len -= 2;
        p[host->len + 1] = '\0';
    }

    *port = h->port;

    return NGX_CONF_OK;
}


char *
ngx_matrix_redis_parse_address(ngx_conf_t *cf, ngx_matrix_redis_conf_t *rcf,
    ngx_str_t *args, ngx_uint_t nargs)
{
    u_char           *p;
    size_t            len;
    ngx_uint_t        i;
    mx_redis_addr_t  *a;
    char              err[128];

    /* the words joined by spaces: the syntax --redis has too */

    len = 0;

    for (i = 0; i < nargs; i++) {
        len += args[i].len + 1;
    }

    p = ngx_pnalloc(cf->pool, len);
    a = ngx_palloc(cf->pool, sizeof(mx_redis_addr_t));
    if (p == NULL || a == NULL) {
        return NGX_CONF_ERROR;
    }

    rcf->address.data = p;

    for (i = 0; i < nargs; i++) {
        p = ngx_cpymem(p, args[i].data, args[i].len);
        *p++ = ' ';
    }

    rcf->address.len = len - 1;

    if (mx_redis_addr_parse((char *) rcf->address.data, rcf->address.len, a,
                            err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address \"%V\": %s",
                           &rcf->address, err);
        return NGX_CONF_ERROR;
    }

    if (a->cluster) {
        rcf->cluster = 1;
        rcf->nseeds = a->nhosts;
        rcf->seeds = ngx_pcalloc(cf->pool,
                                 a->nhosts * sizeof(ngx_matrix_redis_host_t));
        if (rcf->seeds == NULL) {
            return NGX_CONF_ERROR;
        }

        for (i = 0; i < a->nhosts; i++) {
            if (ngx_matrix_redis_resolve(cf, &rcf->address, &a->hosts[i],
                                         &rcf->seeds[i].host,
                                         &rcf->seeds[i].port)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }
        }

        rcf->host = rcf->seeds[0].host;
        rcf->port = rcf->seeds[0].port;

        return NGX_CONF_OK;
    }

    if (a->master[0] == '\0') {
        return ngx_matrix_redis_resolve(cf, &rcf->address, &a->hosts[0],
                                        &rcf->host, &rcf->port);
    }

    rcf->master.len = ngx_strlen(a->master);
    rcf->master.data = ngx_pnalloc(cf->pool, rcf->master.len + 1);
    rcf->sentinels = ngx_pcalloc(cf->pool,
                                 a->nhosts * sizeof(ngx_matrix_redis_host_t));
    if (rcf->master.data == NULL || rcf->sentinels == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(rcf->master.data, a->master, rcf->master.len + 1);
    rcf->nsentinels = a->nhosts;

    for (i = 0; i < a->nhosts; i++) {
        if (ngx_matrix_redis_resolve(cf, &rcf->address, &a->hosts[i],
                                     &rcf->sentinels[i].host,
                                     &rcf->sentinels[i].port)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_matrix_redis_init_worker(ngx_cycle_t *cycle, ngx_matrix_redis_conf_t *rcf)
{
    ngx_uint_t                   i;
    ngx_matrix_redis_t          *rd;
    ngx_matrix_redis_cluster_t  *cl;

    if (rcf->cluster) {
        cl = ngx_pcalloc(cycle->pool, sizeof(ngx_matrix_redis_cluster_t));
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->cycle = cycle;
        cl->conf = rcf;
        cl->refresh.handler = ngx_matrix_redis_refresh_timer;
        cl->refresh.log = cycle->log;
        cl->refresh.cancelable = 1;
        ngx_matrix_redis_cl = cl;

        /* the seeds are nodes; every slot is the first's until the map
         * comes (a MOVED says otherwise sooner) */

        for (i = 0; i < rcf->nseeds; i++) {
            if (ngx_matrix_redis_node((char *) rcf->seeds[i].host.data,
                                      rcf->seeds[i].port)
                == NULL)
            {
                return NGX_ERROR;
            }
        }

        rd = cl->nodes[0];
        cl->last_slot = -1;
        ngx_queue_init(&cl->waiting);
        ngx_matrix_redis = rd;

        if (ngx_process == NGX_PROCESS_WORKER
            || ngx_process == NGX_PROCESS_SINGLE)
        {
            (void) ngx_matrix_redis_connect(rd);
            ngx_matrix_redis_refresh(rd);
        }

        return NGX_OK;
    }

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_matrix_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    ngx_matrix_redis_init_rd(rd, rcf, cycle->log);

    ngx_matrix_redis = rd;

    /* workers connect now, so that the first request does not pay for it */

    if (ngx_process == NGX_PROCESS_WORKER
        || ngx_process == NGX_PROCESS_SINGLE)
    {
        (void) ngx_matrix_redis_connect(rd);
    }

    return NGX_OK;
}


static void
ngx_matrix_redis_init_rd(ngx_matrix_redis_t *rd, ngx_matrix_redis_conf_t *rcf,
    ngx_log_t *log)
{
    rd->conf = rcf;
    rd->log = log;
    rd->backoff = NGX_MATRIX_REDIS_BACKOFF_MIN;
    rd->next_connect = ngx_current_msec;

    rd->lookup_timer.handler = ngx_matrix_redis_lookup_timeout;
    rd->lookup_timer.data = rd;
    rd->lookup_timer.log = log;
    rd->lookup_timer.cancelable = 1;
    ngx_queue_init(&rd->waiting);

    rd->recheck.handler = ngx_matrix_redis_recheck;
    rd->recheck.data = rd;
    rd->recheck.log = log;
    rd->recheck.cancelable = 1;
}


void
ngx_matrix_redis_exit_worker(void)
{
    ngx_uint_t                   i;
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    if (cl != NULL) {
        if (cl->refresh.timer_set) {
            ngx_del_timer(&cl->refresh);
        }

        for (i = 0; i < cl->nnodes; i++) {
            cl->nodes[i]->exiting = 1;
        }

        ngx_matrix_redis_cluster_flush();   /* answered "unavailable" */

        for (i = 0; i < cl->nnodes; i++) {
            ngx_matrix_redis_exit_rd(cl->nodes[i]);
        }

        ngx_matrix_redis_cl = NULL;

    } else if (ngx_matrix_redis != NULL) {
        ngx_matrix_redis_exit_rd(ngx_matrix_redis);
    }

    ngx_matrix_redis = NULL;
}


static void
ngx_matrix_redis_exit_rd(ngx_matrix_redis_t *rd)
{
    redisAsyncContext  *ac;

    rd->exiting = 1;

    if (rd->lookup_timer.timer_set) {
        ngx_del_timer(&rd->lookup_timer);
    }

    if (rd->recheck.timer_set) {
        ngx_del_timer(&rd->recheck);
    }

    if (rd->sac) {
        ac = rd->sac;
        rd->sac = NULL;
        redisAsyncFree(ac);
    }

    ngx_matrix_redis_flush(rd);

    if (rd->ac) {
        /* calls every pending callback with a NULL reply, then cleanup */
        redisAsyncFree(rd->ac);
        rd->ac = NULL;
    }
}


static ngx_int_t
ngx_matrix_redis_connect(ngx_matrix_redis_t *rd)
{
    ngx_msec_t                max;
    ngx_matrix_redis_conf_t  *rcf;

    rcf = rd->conf;

    if ((ngx_msec_int_t) (ngx_current_msec - rd->next_connect) < 0) {
        return NGX_DECLINED;    /* backing off after a failure */
    }

    max = (rcf->nsentinels || rcf->cluster)
          ? NGX_MATRIX_REDIS_BACKOFF_SENTINEL_MAX
          : NGX_MATRIX_REDIS_BACKOFF_MAX;

    rd->next_connect = ngx_current_msec + rd->backoff;
    rd->backoff = ngx_min(rd->backoff * 2, max);

    if (rcf->cluster) {
        return ngx_matrix_redis_open(rd, rd->node_host, rd->node_port);
    }

    if (rcf->nsentinels == 0) {
        return ngx_matrix_redis_open(rd, (char *) rcf->host.data, rcf->port);
    }

    /* the master is whatever a sentinel names now: ask, then connect */

    if (rd->sac == NULL) {
        rd->lookup_tries = 0;
        ngx_matrix_redis_lookup_next(rd);
    }

    return NGX_DECLINED;
}


/*
 * Puts a new hiredis context on nginx's event loop: an nginx connection
 * for its fd (which stays hiredis's: rule 2 of docs/architecture.md), the
 * given handlers with data as the connection's data, and the adapter's
 * event hooks. NGX_ERROR when no connection is free (the caller frees ac).
 */

static ngx_int_t
ngx_matrix_redis_attach(ngx_matrix_redis_t *rd, redisAsyncContext *ac,
    void *data, ngx_event_handler_pt read, ngx_event_handler_pt write)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = data;
    c->read->handler = read;
    c->write->handler = write;
    c->read->log = rd->log;
    c->write->log = rd->log;

    ac->data = rd;
    ac->ev.data = c;
    ac->ev.addRead = ngx_matrix_redis_add_read;
    ac->ev.delRead = ngx_matrix_redis_del_read;
    ac->ev.addWrite = ngx_matrix_redis_add_write;
    ac->ev.delWrite = ngx_matrix_redis_del_write;
    ac->ev.cleanup = ngx_matrix_redis_cleanup;

    return NGX_OK;
}


static ngx_int_t
ngx_matrix_redis_open(ngx_matrix_redis_t *rd, const char *host, int port)
{
    u_char                    *p;
    redisAsyncContext         *ac;
    ngx_matrix_redis_conf_t   *rcf;
    ngx_uint_t                 i;
    const char                *argv[3];
    size_t                     argvlen[3];

    rcf = rd->conf;

    if (port) {
        ac = redisAsyncConnect(host, port);
    } else {
        ac = redisAsyncConnectUnix(host);
    }

    ngx_cpystrn((u_char *) rd->conn_host, (u_char *) host,
                sizeof(rd->conn_host));
    rd->conn_port = port;

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "redis %V: cannot allocate a context", &rcf->address);
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "redis %V: connect failed: %s",
                      &rcf->address, ac->errstr);
        ngx_http_matrix_metrics_redis_error();
        p = ngx_cpystrn((u_char *) rd->last_error, (u_char *) ac->errstr,
                        sizeof(rd->last_error));
        (void) p;
        redisAsyncFree(ac);

        if (ngx_matrix_redis_cl) {
            ngx_matrix_redis_refresh(NULL);     /* a master gone? */
        }

        return NGX_ERROR;
    }

    if (ngx_matrix_redis_attach(rd, ac, rd, ngx_matrix_redis_read_handler,
                                ngx_matrix_redis_write_handler)
        != NGX_OK)
    {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    rd->ac = ac;
    rd->state = NGX_MATRIX_REDIS_CONNECTING;
    rd->context++;

    redisAsyncSetConnectCallback(ac, ngx_matrix_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_matrix_redis_disconnected);

    /*
     * Queued before any request's command, so they run first: AUTH,
     * SELECT, the schema check and the scripts.
     */

    if (rcf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (char *) rcf->password.data;
        argvlen[1] = rcf->password.len;
        redisAsyncCommandArgv(ac, ngx_matrix_redis_setup_reply, "AUTH", 2,
                              argv, argvlen);
    }

    if (rcf->db) {
        redisAsyncCommand(ac, ngx_matrix_redis_setup_reply, "SELECT",
                          "SELECT %d", (int) rcf->db);
    }

    /* a sentinel's answer may be stale: a demoted master is a replica */

    if (rcf->nsentinels) {
        redisAsyncCommand(ac, ngx_matrix_redis_role_reply, NULL, "ROLE");
    }

    /* a cluster's schema key is on one node: asked there, with the map */

    if (!rcf->cluster) {
        redisAsyncCommand(ac, ngx_matrix_redis_schema_reply, NULL,
                          "GET %bschema", rcf->prefix.data, rcf->prefix.len);
    }

    /* the scripts this binary was built with (src/lua, mx_lua_scripts[]) */

    for (i = 0; i < MX_LUA_COUNT; i++) {
        redisAsyncCommand(ac, ngx_matrix_redis_setup_reply, "SCRIPT LOAD",
                          "SCRIPT LOAD %b", mx_lua_scripts[i].source,
                          mx_lua_scripts[i].len);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "redis %V: connecting", &rcf->address);

    return NGX_OK;
}


/*
 * Sentinel: SENTINEL get-master-addr-by-name on a connection of its own,
 * one sentinel after the other until one names the master; then the
 * master's connection is made (and checked with ROLE). Every lost or
 * refused master connection asks again, so a failover is followed on the
 * first command after it (docs/reliability.md).
 */

static void
ngx_matrix_redis_lookup_next(ngx_matrix_redis_t *rd)
{
    ngx_matrix_redis_conf_t  *rcf;

    rcf = rd->conf;

    while (!rd->exiting && rd->lookup_tries < rcf->nsentinels) {
        rd->lookup_tries++;

        if (ngx_matrix_redis_lookup_open(rd,
                &rcf->sentinels[rd->sentinel++ % rcf->nsentinels])
            == NGX_OK)
        {
            return;
        }
    }

    /* none answered: the next command asks again, after the backoff */
    rd->lookup_tries = 0;

    ngx_matrix_redis_flush(rd);     /* the commands waiting fail now */
}


static ngx_int_t
ngx_matrix_redis_lookup_open(ngx_matrix_redis_t *rd,
    ngx_matrix_redis_host_t *s)
{
    redisAsyncContext  *ac;
    const char         *argv[3];
    size_t              argvlen[3];

    ac = redisAsyncConnect((char *) s->host.data, s->port);

    if (ac == NULL) {
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "redis sentinel %V:%d: connect failed: %s",
                      &s->host, s->port, ac->errstr);
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    if (ngx_matrix_redis_attach(rd, ac, ac, ngx_matrix_redis_lookup_read,
                                ngx_matrix_redis_lookup_write)
        != NGX_OK)
    {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    rd->sac = ac;

    redisAsyncSetConnectCallback(ac, ngx_matrix_redis_lookup_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_matrix_redis_lookup_disconnected);

    /*
     * The sentinel's own password first (requirepass in sentinel.conf);
     * when it is refused, the SENTINEL command's NOAUTH says so too.
     */

    if (rd->conf->sentinel_password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (char *) rd->conf->sentinel_password.data;
        argvlen[1] = rd->conf->sentinel_password.len;

        if (redisAsyncCommandArgv(ac, ngx_matrix_redis_lookup_auth, s, 2,
                                  argv, argvlen)
            != REDIS_OK)
        {
            rd->sac = NULL;
            redisAsyncFree(ac);
            return NGX_ERROR;
        }
    }

    argv[0] = "SENTINEL";
    argvlen[0] = 8;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = 23;
    argv[2] = (char *) rd->conf->master.data;
    argvlen[2] = rd->conf->master.len;

    if (redisAsyncCommandArgv(ac, ngx_matrix_redis_lookup_reply, s, 3, argv,
                              argvlen)
        != REDIS_OK)
    {
        rd->sac = NULL;
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    ngx_add_timer(&rd->lookup_timer, rd->conf->timeout);

    return NGX_OK;
}


static void
ngx_matrix_redis_lookup_auth(redisAsyncContext *sac, void *r, void *privdata)
{
    redisReply               *reply = r;
    ngx_matrix_redis_t       *rd = sac->data;
    ngx_matrix_redis_host_t  *s = privdata;

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "redis sentinel %V:%d: AUTH failed: %s "
                      "(matrix_redis_sentinel_password)", &s->host, s->port,
                      reply->str);
    }
}


static void
ngx_matrix_redis_lookup_connected(const redisAsyncContext *ac, int status)
{
    ngx_matrix_redis_t  *rd = ac->data;

    if (status != REDIS_OK && rd->sac == ac) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "redis sentinel: connect failed: %s", ac->errstr);

        /* hiredis frees the context after this */
        rd->sac = NULL;
        ngx_matrix_redis_lookup_failed(rd, ac->errstr);
    }
}


static void
ngx_matrix_redis_lookup_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_matrix_redis_t  *rd = ac->data;

    if (rd->sac == ac) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "redis sentinel: connection closed before the answer");
        rd->sac = NULL;
        ngx_matrix_redis_lookup_failed(rd, "connection closed");
    }
}


static void
ngx_matrix_redis_lookup_reply(redisAsyncContext *sac, void *r,
    void *privdata)
{
    redisAsyncContext        *ac;
    redisReply               *reply = r;
    ngx_matrix_redis_t       *rd = sac->data;
    ngx_matrix_redis_host_t  *s = privdata;
    char                     *end;
    long                      port;

    if (reply == NULL || rd->sac != sac || rd->exiting) {
        return;         /* a lookup given up: timed out, or worker exit */
    }

    rd->sac = NULL;

    if (rd->lookup_timer.timer_set) {
        ngx_del_timer(&rd->lookup_timer);
    }

    redisAsyncFree(sac);    /* once this callback returns */

    port = 0;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING
        && reply->element[0]->len < sizeof(rd->master_host))
    {
        port = strtol(reply->element[1]->str, &end, 10);

        if (*end != '\0' || port < 1 || port > 65535) {
            port = 0;
        }
    }

    if (port == 0) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "redis sentinel %V:%d does not name master \"%V\"%s%s",
                      &s->host, s->port, &rd->conf->master,
                      reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        ngx_matrix_redis_lookup_failed(rd, "no master named");
        return;
    }

    if (rd->master_port != (int) port
        || ngx_strcmp(rd->master_host, reply->element[0]->str) != 0)
    {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "redis sentinel %V:%d: master \"%V\" is %s:%l",
                      &s->host, s->port, &rd->conf->master,
                      reply->element[0]->str, port);
    }

    ngx_memcpy(rd->master_host, reply->element[0]->str,
               reply->element[0]->len + 1);
    rd->master_port = (int) port;

    rd->sentinel--;         /* the next round starts with this one */
    rd->lookup_tries = 0;

    if (rd->ac != NULL
        && (rd->conn_port != rd->master_port
            || ngx_strcmp(rd->conn_host, rd->master_host) != 0))
    {
        /* a failover since we connected: leave the old master now */

        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "redis %s:%d is not the master any more: leaving it",
                      rd->conn_host, rd->conn_port);

        ac = rd->ac;
        rd->broken = ac;
        redisAsyncFree(ac);     /* its commands answered "unavailable" */

        rd->ac = NULL;
        rd->broken = NULL;
        rd->state = NGX_MATRIX_REDIS_DISCONNECTED;
    }

    if (rd->ac == NULL) {
        (void) ngx_matrix_redis_open(rd, rd->master_host, rd->master_port);
    }

    ngx_matrix_redis_flush(rd);
}


/*
 * While connected, a sentinel is asked again now and then (and at once
 * after a WAIT that fell short, ngx_matrix_redis_suspect()): a master
 * stopped and let run again after a failover still answers as one.
 */

static void
ngx_matrix_redis_recheck(ngx_event_t *ev)
{
    ngx_matrix_redis_t  *rd = ev->data;

    if (rd->exiting || rd->ac == NULL) {
        return;     /* re-armed by the next connection */
    }

    ngx_matrix_redis_suspect();

    ngx_add_timer(&rd->recheck, NGX_MATRIX_REDIS_SENTINEL_RECHECK);
}


void
ngx_matrix_redis_suspect(void)
{
    ngx_matrix_redis_t  *rd;

    rd = ngx_matrix_redis;

    if (rd != NULL && rd->conf->nsentinels && rd->sac == NULL
        && !rd->exiting)
    {
        rd->lookup_tries = 0;
        ngx_matrix_redis_lookup_next(rd);
    }
}


/*
 * The commands that came while a sentinel was asked: sent on the master's
 * new connection, in their order, or answered "unavailable" without one.
 */

static void
ngx_matrix_redis_flush(ngx_matrix_redis_t *rd)
{
    ngx_queue_t            *q;
    ngx_matrix_redis_op_t  *op;

    while (!ngx_queue_empty(&rd->waiting)) {
        q = ngx_queue_head(&rd->waiting);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_matrix_redis_op_t, queue);

        ngx_matrix_redis_dispatch(op, rd);
    }
}


/*
 * A command that waited (for a sentinel's answer, a cluster's first map)
 * sent on rd, where it is counted from now on, or answered "unavailable".
 */

static void
ngx_matrix_redis_dispatch(ngx_matrix_redis_op_t *op, ngx_matrix_redis_t *rd)
{
    op->rd->outstanding--;
    rd->outstanding++;
    op->rd = rd;

    if (rd->ac != NULL && !rd->exiting
        && ngx_matrix_redis_send_op(op) == NGX_OK)
    {
        op->context = rd->context;
        op->reads = rd->reads;
        return;
    }

    ngx_matrix_redis_finish(op, NULL, NGX_MATRIX_REDIS_UNAVAILABLE, NULL);
}


static void
ngx_matrix_redis_lookup_failed(ngx_matrix_redis_t *rd, const char *why)
{
    if (rd->lookup_timer.timer_set) {
        ngx_del_timer(&rd->lookup_timer);
    }

    ngx_cpystrn((u_char *) rd->last_error, (u_char *) why,
                sizeof(rd->last_error));

    ngx_matrix_redis_lookup_next(rd);
}


static void
ngx_matrix_redis_lookup_timeout(ngx_event_t *ev)
{
    redisAsyncContext   *ac;
    ngx_matrix_redis_t  *rd = ev->data;

    ac = rd->sac;

    if (ac == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "redis sentinel: no answer within %M ms",
                  rd->conf->timeout);

    rd->sac = NULL;
    redisAsyncFree(ac);

    ngx_matrix_redis_lookup_failed(rd, "a sentinel did not answer");
}


static void
ngx_matrix_redis_lookup_read(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleRead(c->data);
}


static void
ngx_matrix_redis_lookup_write(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleWrite(c->data);
}


static void
ngx_matrix_redis_role_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply          *reply = r;
    ngx_matrix_redis_t  *rd = ac->data;

    if (reply == NULL || rd->broken == ac || reply->type == REDIS_REPLY_ERROR)
    {
        return;         /* an error: AUTH's or SELECT's said it already */
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
        && reply->element[0]->type == REDIS_REPLY_STRING
        && ngx_strcmp(reply->element[0]->str, "master") == 0)
    {
        return;
    }

    ngx_matrix_redis_drop(rd, ac, "the server Sentinel named is not a master");
}


/* a master that is not one any more: close, the next command asks again */

static void
ngx_matrix_redis_drop(ngx_matrix_redis_t *rd, redisAsyncContext *ac,
    const char *why)
{
    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "redis %s:%d: %s: asking the sentinels again",
                  rd->master_host, rd->master_port, why);

    ngx_cpystrn((u_char *) rd->last_error, (u_char *) why,
                sizeof(rd->last_error));

    /* the replies queued behind are answered as "unavailable" */
    rd->broken = ac;
    rd->master_port = 0;
    redisAsyncFree(ac);
}


static void
ngx_matrix_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_matrix_redis_t  *rd = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this; 0.14 calls no onDisconnect */
        ngx_matrix_redis_lost(rd, ac->errstr);
        return;
    }

    rd->state = NGX_MATRIX_REDIS_CONNECTED;
    rd->backoff = NGX_MATRIX_REDIS_BACKOFF_MIN;
    rd->connects++;

    if (rd->conf->nsentinels && !rd->recheck.timer_set) {
        ngx_add_timer(&rd->recheck, NGX_MATRIX_REDIS_SENTINEL_RECHECK);
    }

    ngx_log_error(NGX_LOG_INFO, rd->log, 0, "redis %V: connected",
                  &rd->conf->address);
}


static void
ngx_matrix_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_matrix_redis_t  *rd = ac->data;

    if (rd->hung == ac) {
        return;         /* closed by ngx_matrix_redis_hung(), which says so */
    }

    ngx_matrix_redis_lost(rd, status == REDIS_OK ? "closed" : ac->errstr);
}


static void
ngx_matrix_redis_lost(ngx_matrix_redis_t *rd, const char *why)
{
    if (!rd->exiting) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0, "redis %V: connection %s: %s",
                      &rd->conf->address,
                      rd->state == NGX_MATRIX_REDIS_CONNECTED
                      ? "lost" : "failed", why);
        ngx_http_matrix_metrics_redis_error();
    }

    ngx_cpystrn((u_char *) rd->last_error, (u_char *) why,
                sizeof(rd->last_error));

    rd->ac = NULL;
    rd->broken = NULL;
    rd->state = NGX_MATRIX_REDIS_DISCONNECTED;
    rd->in_multi = 0;

    /* a cluster's master lost: a failover may be under way, ask another
     * node which master serves its slots now */

    if (ngx_matrix_redis_cl && !rd->exiting) {
        ngx_matrix_redis_refresh(NULL);
    }
}


static void
ngx_matrix_redis_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply          *reply = r;
    ngx_matrix_redis_t  *rd = ac->data;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR
        || rd->broken == ac)
    {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0, "redis %V: %s failed: %s",
                  &rd->conf->address, (char *) privdata, reply->str);

    ngx_cpystrn((u_char *) rd->last_error, (u_char *) reply->str,
                sizeof(rd->last_error));

    /*
     * A wrong password or database makes every later reply meaningless:
     * the replies already read for commands queued behind are answered as
     * "unavailable" (not as the NOAUTH errors they are), and the context
     * is freed (hiredis defers that until the replies in hand are
     * processed). A script that fails to load is retried with EVAL.
     */
    if (ngx_strcmp(privdata, "SCRIPT LOAD") != 0) {
        rd->broken = ac;
        redisAsyncFree(ac);
    }
}


static void
ngx_matrix_redis_schema_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply          *reply = r;
    ngx_matrix_redis_t  *rd = ac->data;

    ngx_uint_t  *bad;

    if (reply == NULL || rd->broken == ac) {
        return;
    }

    /* a cluster's one schema key speaks for every node */

    bad = ngx_matrix_redis_cl ? &ngx_matrix_redis_cl->schema_bad
                              : &rd->schema_bad;

    if (ngx_matrix_redis_cl && reply->type == REDIS_REPLY_ERROR) {
        return;     /* the map moved on since: the next refresh asks */
    }

    *bad = 0;

    if (reply->type == REDIS_REPLY_STRING
        && (reply->len != sizeof(MX_SCHEMA_VERSION) - 1
            || ngx_strncmp(reply->str, MX_SCHEMA_VERSION, reply->len)
               != 0))
    {
        *bad = 1;
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "redis %V: unsupported schema version \"%*s\" under "
                      "prefix \"%V\" (this module knows "
                      MX_SCHEMA_VERSION ")", &rd->conf->address,
                      (size_t) ngx_min(reply->len, 32), reply->str,
                      &rd->conf->prefix);
    }
}


static ngx_uint_t
ngx_matrix_redis_schema_bad(ngx_matrix_redis_t *rd)
{
    return ngx_matrix_redis_cl ? ngx_matrix_redis_cl->schema_bad
                               : rd->schema_bad;
}


/* event glue: level-triggered, idempotent */

static void
ngx_matrix_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (!c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                          "redis: adding the read event failed");
        }
    }
}


static void
ngx_matrix_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_matrix_redis_add_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (!c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                          "redis: adding the write event failed");
        }
    }
}


static void
ngx_matrix_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis is freeing the context: free the connection, not the fd */

static void
ngx_matrix_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* as ngx_close_connection() does, but hiredis closes the fd itself */

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}


static void
ngx_matrix_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t    *c = ev->data;
    ngx_matrix_redis_t  *rd = c->data;

    if (rd->ac) {
        rd->reads++;            /* Redis is alive, even mid-reply */
        redisAsyncHandleRead(rd->ac);
    }
}


static void
ngx_matrix_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t    *c = ev->data;
    ngx_matrix_redis_t  *rd = c->data;

    if (rd->ac) {
        redisAsyncHandleWrite(rd->ac);
    }
}


/* operations */

static ngx_int_t
ngx_matrix_redis_start(ngx_http_request_t *r, ngx_matrix_redis_handler_pt
    handler, void *data, int argc, const char **argv, const size_t *argvlen,
    ngx_uint_t is_script, mx_lua_e script, int nkeys, ngx_msec_t extra)
{
    u_char                 *p;
    size_t                  size;
    ngx_int_t               i, rc, slot;
    ngx_matrix_redis_t     *rd;
    ngx_matrix_redis_op_t  *op;

    slot = -1;
    rd = ngx_matrix_redis_cl
         ? ngx_matrix_redis_pick(argc, argv, argvlen, is_script, nkeys,
                                 &slot)
         : ngx_matrix_redis;

    if (rd == NULL) {
        return NGX_MATRIX_REDIS_UNAVAILABLE;
    }

    if (rd->ac == NULL) {
        (void) ngx_matrix_redis_connect(rd);

        /* with Sentinel, a command may wait for the lookup in flight */

        if (rd->ac == NULL && rd->sac == NULL) {

            /* a cluster's master that cannot be reached: which one serves
             * its slots now? (at most every 100 ms) */

            if (ngx_matrix_redis_cl) {
                ngx_matrix_redis_refresh(NULL);
            }

            return NGX_MATRIX_REDIS_UNAVAILABLE;
        }
    }

    if (ngx_matrix_redis_schema_bad(rd)) {
        return NGX_MATRIX_REDIS_SCHEMA_ERROR;
    }

    /* one block: the record, then argv, argvlen and the argument bytes */

    size = sizeof(ngx_matrix_redis_op_t)
           + argc * (sizeof(char *) + sizeof(size_t));

    for (i = 0; i < argc; i++) {
        size += argvlen[i];
    }

    op = ngx_calloc(size, r ? r->connection->log : rd->log);
    if (op == NULL) {
        return NGX_MATRIX_REDIS_UNAVAILABLE;
    }

    op->argv = (char **) (op + 1);
    op->argvlen = (size_t *) (op->argv + argc);
    p = (u_char *) (op->argvlen + argc);

    for (i = 0; i < argc; i++) {
        op->argv[i] = (char *) p;
        op->argvlen[i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    op->argc = argc;
    op->rd = rd;
    op->slot = slot;
    op->request = r;
    op->handler = handler;
    op->data = data;
    op->is_script = is_script;
    op->script = script;
    op->nkeys = nkeys;

    if (r) {
        op->cleanup = ngx_http_cleanup_add(r, 0);
        if (op->cleanup == NULL) {
            ngx_free(op);
            return NGX_MATRIX_REDIS_UNAVAILABLE;
        }

        op->cleanup->handler = ngx_matrix_redis_request_gone;
        op->cleanup->data = op;
    }

    if (rd->ac == NULL) {
        ngx_queue_insert_tail(&rd->waiting, &op->queue);
        rc = NGX_OK;

    } else if (ngx_matrix_redis_cl && !ngx_matrix_redis_cl->mapped
               && ngx_matrix_redis_cl->refreshing)
    {
        /* a cluster's first map is on its way: where to send is in it */
        ngx_queue_insert_tail(&ngx_matrix_redis_cl->waiting, &op->queue);
        rc = NGX_OK;

    } else {
        rc = ngx_matrix_redis_send_op(op);
    }

    if (rc != NGX_OK) {
        if (op->cleanup) {
            op->cleanup->handler = NULL;
        }

        ngx_free(op);
        return NGX_MATRIX_REDIS_UNAVAILABLE;
    }

    rd->outstanding++;
    op->context = rd->context;
    op->reads = rd->reads;

    op->timer.handler = ngx_matrix_redis_timeout;
    op->timer.data = op;
    op->timer.log = rd->log;
    op->timer.cancelable = 0;   /* a graceful quit waits for the reply */

    ngx_add_timer(&op->timer, rd->conf->timeout + extra);

    return NGX_OK;
}


static ngx_int_t
ngx_matrix_redis_send_op(ngx_matrix_redis_op_t *op)
{
    int                   argc, rc;
    const char          **argv;
    size_t               *argvlen;
    ngx_matrix_redis_t   *rd;
    const char           *sargv[64];
    size_t                sargvlen[64];
    char                  nkeys[NGX_INT_T_LEN + 1];

    rd = op->rd;

    argc = op->argc;
    argv = (const char **) op->argv;
    argvlen = op->argvlen;

    if (op->is_script) {
        /* EVALSHA sha nkeys keys... args...; EVAL source ... after NOSCRIPT */

        if (argc + 3 > 64) {
            return NGX_ERROR;
        }

        if (op->retried) {
            sargv[0] = "EVAL";
            sargv[1] = mx_lua_scripts[op->script].source;
        } else {
            sargv[0] = "EVALSHA";
            sargv[1] = mx_lua_scripts[op->script].sha1;
        }

        sargvlen[0] = ngx_strlen(sargv[0]);
        sargvlen[1] = ngx_strlen(sargv[1]);

        ngx_sprintf((u_char *) nkeys, "%d%Z", op->nkeys);

        sargv[2] = nkeys;
        sargvlen[2] = ngx_strlen(nkeys);

        ngx_memcpy(&sargv[3], argv, argc * sizeof(char *));
        ngx_memcpy(&sargvlen[3], argvlen, argc * sizeof(size_t));

        argv = sargv;
        argvlen = sargvlen;
        argc += 3;
    }

    if (op->asking) {
        /* ASK: the node importing the slot serves this command only */
        if (redisAsyncCommand(rd->ac, NULL, NULL, "ASKING") != REDIS_OK) {
            return NGX_ERROR;
        }
    }

    /* a cluster: a MOVED inside MULTI is the transaction's to fail, not
     * followed */

    if (ngx_matrix_redis_cl == NULL) {
        /* void */

    } else if (argvlen[0] == 5
               && ngx_strncasecmp((u_char *) argv[0], (u_char *) "MULTI", 5)
                  == 0)
    {
        rd->in_multi = 1;

    } else if ((argvlen[0] == 4
                && ngx_strncasecmp((u_char *) argv[0], (u_char *) "EXEC", 4)
                   == 0)
               || (argvlen[0] == 7
                   && ngx_strncasecmp((u_char *) argv[0],
                                      (u_char *) "DISCARD", 7) == 0))
    {
        rd->in_multi = 0;

    } else {
        op->in_multi = rd->in_multi;
    }

    rc = redisAsyncCommandArgv(rd->ac, ngx_matrix_redis_reply, op, argc,
                               argv, argvlen);

    return rc == REDIS_OK ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_matrix_redis_command(ngx_http_request_t *r,
    ngx_matrix_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    return ngx_matrix_redis_start(r, handler, data, argc, argv, argvlen, 0,
                                  0, 0, 0);
}


ngx_int_t
ngx_matrix_redis_wait(ngx_http_request_t *r,
    ngx_matrix_redis_handler_pt handler, void *data)
{
    u_char                   *p;
    const char               *argv[3];
    size_t                    argvlen[3];
    ngx_matrix_redis_conf_t  *rcf;
    u_char                    buf[2 * NGX_INT_T_LEN];

    if (ngx_matrix_redis == NULL) {
        return NGX_MATRIX_REDIS_UNAVAILABLE;
    }

    rcf = ngx_matrix_redis->conf;

    /* with a cluster, the node of the last command (the caller routes) */

    argv[0] = "WAIT";
    argvlen[0] = 4;

    p = ngx_sprintf(buf, "%ui", rcf->wait_replicas);
    argv[1] = (char *) buf;
    argvlen[1] = p - buf;

    argv[2] = (char *) p;
    argvlen[2] = ngx_sprintf(p, "%M", rcf->wait_timeout) - p;

    return ngx_matrix_redis_start(r, handler, data, 3, argv, argvlen, 0, 0, 0,
                                  rcf->wait_timeout);
}


ngx_int_t
ngx_matrix_redis_script(ngx_http_request_t *r, mx_lua_e script,
    ngx_matrix_redis_handler_pt handler, void *data, int nkeys, int nargs,
    const char **argv, const size_t *argvlen)
{
    return ngx_matrix_redis_start(r, handler, data, nkeys + nargs, argv,
                                  argvlen, 1, script, nkeys, 0);
}


static void
ngx_matrix_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply             *reply = r;
    ngx_matrix_redis_t     *rd = ac->data;
    ngx_matrix_redis_op_t  *op = privdata;

    if (reply == NULL || rd->broken == ac) {
        /* the context is going away: lost, hung, or worker exit */
        ngx_matrix_redis_finish(op, NULL,
                                rd->hung == ac ? NGX_MATRIX_REDIS_TIMEOUT
                                               : NGX_MATRIX_REDIS_UNAVAILABLE,
                                NULL);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        if (ngx_matrix_redis_cl && ngx_matrix_redis_redirect(rd, op, reply)
            == NGX_OK)
        {
            return;     /* sent to the node named, with the same timer */
        }

        if (op->is_script && !op->retried
            && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
            && !rd->exiting && rd->ac == ac)
        {
            /* script cache flushed or a new server: EVAL caches it again */
            op->retried = 1;

            ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                          "redis %V: script not cached, sending it again",
                          &rd->conf->address);

            if (ngx_matrix_redis_send_op(op) == NGX_OK) {
                return;     /* the op lives on, with the same timer */
            }
        }

        /* a cluster reconfiguring (a slot moving, a failover): retry;
         * EXECABORT is a MULTI whose commands were answered so */

        if (ngx_matrix_redis_cl
            && (mx_cluster_retry_error(reply->str, reply->len)
                || ngx_strncmp(reply->str, "EXECABORT", 9) == 0))
        {
            ngx_matrix_redis_finish(op, NULL, NGX_MATRIX_REDIS_UNAVAILABLE,
                                    reply->str);
            return;
        }

        ngx_matrix_redis_finish(op, NULL, NGX_MATRIX_REDIS_REPLY_ERROR,
                                reply->str);

        /* the master was demoted, or lost its own: follow Sentinel */

        if (rd->conf->nsentinels && rd->ac == ac && !rd->exiting
            && (ngx_strstr(reply->str, "READONLY") != NULL
                || ngx_strncmp(reply->str, "MASTERDOWN", 10) == 0))
        {
            ngx_matrix_redis_drop(rd, ac, reply->str);
        }

        return;
    }

    ngx_matrix_redis_finish(op, reply, NGX_MATRIX_REDIS_OK, NULL);
}


/* the reply or the loss of the context: the op ends here, always */

static void
ngx_matrix_redis_finish(ngx_matrix_redis_op_t *op, redisReply *reply,
    ngx_matrix_redis_status_e status, const char *err)
{
    ngx_http_request_t  *r;
    ngx_matrix_redis_t  *rd;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    rd = op->rd;

    rd->outstanding--;      /* before the handler reads it */

    r = op->request;

    if (status == NGX_MATRIX_REDIS_OK && ngx_matrix_redis_schema_bad(rd)) {
        /* queued before the schema check answered: do not trust it */
        status = NGX_MATRIX_REDIS_SCHEMA_ERROR;
        reply = NULL;
    }

    if (status != NGX_MATRIX_REDIS_OK && !op->timed_out && !rd->exiting) {
        /* matrix_join_redis_errors_total: each failed command once (a
         * timed out one was counted by its timer) */
        ngx_http_matrix_metrics_redis_error();
    }

    if (r == NULL && op->cleanup == NULL && status != NGX_MATRIX_REDIS_OK
        && !rd->exiting)
    {
        /* a write no request waits for: its failure is only logged */
        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "redis %V: %*s failed: %s",
                      &rd->conf->address, op->argvlen[0],
                      op->argv[0],
                      err ? err : ngx_matrix_redis_status_text(status));
    }

    if (r && !op->timed_out && !rd->exiting) {
        op->request = NULL;
        op->cleanup->handler = NULL;

        if (status == NGX_MATRIX_REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "redis error: %s", err);
        }

        op->handler(r, op->data, reply, status, err);
    }

    ngx_matrix_redis_op_free(op);
}


static void
ngx_matrix_redis_timeout(ngx_event_t *ev)
{
    ngx_http_request_t     *r;
    ngx_matrix_redis_t     *rd;
    ngx_matrix_redis_op_t  *op = ev->data;

    /*
     * The request is answered now; the record stays with hiredis until
     * its callback, which frees it.
     */

    op->timed_out = 1;
    rd = op->rd;

    ngx_http_matrix_metrics_redis_error();

    r = op->request;

    if (r != NULL) {
        op->request = NULL;
        op->cleanup->handler = NULL;

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "redis %V: no reply within %M ms",
                      &rd->conf->address, rd->conf->timeout);

        op->handler(r, op->data, NULL, NGX_MATRIX_REDIS_TIMEOUT, NULL);
    }

    /* nothing read since this command went out: the connection is hung */

    if (rd != NULL && !rd->exiting && rd->ac != NULL && rd->hung == NULL
        && op->context == rd->context && op->reads == rd->reads)
    {
        ngx_matrix_redis_hung(rd);      /* frees op too */
    }
}


static void
ngx_matrix_redis_hung(ngx_matrix_redis_t *rd)
{
    redisAsyncContext  *ac;

    ac = rd->ac;

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "redis %V: nothing read for %M ms with %ui commands "
                  "waiting: closing the connection",
                  &rd->conf->address, rd->conf->timeout, rd->outstanding);

    rd->hangs++;

    /*
     * hiredis calls every callback now, with a NULL reply (answered as
     * timeouts), refuses commands queued from them, and calls the
     * disconnect callback only if the connection had been made.
     */

    rd->hung = ac;
    redisAsyncFree(ac);
    rd->hung = NULL;

    ngx_cpystrn((u_char *) rd->last_error,
                (u_char *) "no reply within matrix_redis_timeout",
                sizeof(rd->last_error));

    rd->ac = NULL;
    rd->broken = NULL;
    rd->state = NGX_MATRIX_REDIS_DISCONNECTED;
    rd->in_multi = 0;

    if (ngx_matrix_redis_cl) {
        ngx_matrix_redis_refresh(NULL);
    }

    /* the next request reconnects, after the current backoff */
    rd->next_connect = ngx_current_msec + rd->backoff;
}


static void
ngx_matrix_redis_request_gone(void *data)
{
    ngx_matrix_redis_op_t  *op = data;

    /* the timer stays: it is harmless, and the callback deletes it */
    op->request = NULL;
}


static void
ngx_matrix_redis_op_free(ngx_matrix_redis_op_t *op)
{
    ngx_free(op);
}


/*
 * Redis Cluster: the node records, routing, the slot map and redirections.
 */

static ngx_matrix_redis_t *
ngx_matrix_redis_node(const char *host, int port)
{
    ngx_uint_t                   i;
    ngx_matrix_redis_t          *rd;
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    for (i = 0; i < cl->nnodes; i++) {
        if (cl->nodes[i]->node_port == port
            && ngx_strcmp(cl->nodes[i]->node_host, host) == 0)
        {
            return cl->nodes[i];
        }
    }

    if (cl->nnodes == NGX_MATRIX_REDIS_NODES
        || ngx_strlen(host) > NGX_SOCKADDR_STRLEN)
    {
        ngx_log_error(NGX_LOG_ERR, cl->cycle->log, 0,
                      "redis cluster: more than %d nodes, \"%s:%d\" is not "
                      "used", NGX_MATRIX_REDIS_NODES, host, port);
        return NULL;
    }

    /* hiredis resolves a name while blocking: numeric addresses only */

    if (ngx_inet_addr((u_char *) host, ngx_strlen(host)) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_strchr(host, ':') == NULL
#endif
        )
    {
        ngx_log_error(NGX_LOG_ERR, cl->cycle->log, 0,
                      "redis cluster: node \"%s:%d\" is not a numeric "
                      "address (cluster-preferred-endpoint-type ip)", host,
                      port);
        return NULL;
    }

    rd = ngx_pcalloc(cl->cycle->pool, sizeof(ngx_matrix_redis_t));
    if (rd == NULL) {
        return NULL;
    }

    ngx_matrix_redis_init_rd(rd, cl->conf, cl->cycle->log);

    ngx_cpystrn((u_char *) rd->node_host, (u_char *) host,
                sizeof(rd->node_host));
    rd->node_port = port;
    rd->node = cl->nnodes;

    cl->nodes[cl->nnodes++] = rd;

    return rd;
}


/* The node a command goes to: its first key's slot's, else the last. */

static ngx_matrix_redis_t *
ngx_matrix_redis_pick(int argc, const char **argv, const size_t *argvlen,
    ngx_uint_t is_script, int nkeys, ngx_int_t *slot)
{
    int                          k;
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    if (is_script) {
        k = nkeys > 0 ? 0 : -1;

    } else {
        k = mx_cluster_key_index(argc, argv, argvlen);
    }

    if (k >= 0 && k < argc) {
        cl->last_slot = mx_cluster_slot(argv[k], argvlen[k]);
    }

    *slot = cl->last_slot;

    return cl->nodes[cl->last_slot >= 0 ? cl->slot[cl->last_slot] : 0];
}


void
ngx_matrix_redis_route(const u_char *key, size_t len)
{
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    if (cl != NULL) {
        cl->last_slot = mx_cluster_slot((const char *) key, len);
    }
}


/*
 * The commands that came before the first map: each to the node its slot
 * has now, in their order (a MULTI block stays together: its commands
 * share a slot), or answered "unavailable".
 */

static void
ngx_matrix_redis_cluster_flush(void)
{
    ngx_queue_t                 *q;
    ngx_matrix_redis_t          *node;
    ngx_matrix_redis_op_t       *op;
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    while (!ngx_queue_empty(&cl->waiting)) {
        q = ngx_queue_head(&cl->waiting);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_matrix_redis_op_t, queue);

        node = cl->nodes[op->slot >= 0 ? cl->slot[op->slot] : 0];

        if (node->ac == NULL && !node->exiting) {
            (void) ngx_matrix_redis_connect(node);
        }

        ngx_matrix_redis_dispatch(op, node);
    }
}


/*
 * CLUSTER SLOTS on a connected node (rd, or any when NULL): one at a time,
 * at most every NGX_MATRIX_REDIS_REFRESH_MIN ms (a timer takes the rest).
 */

static void
ngx_matrix_redis_refresh(ngx_matrix_redis_t *rd)
{
    ngx_uint_t                   i;
    ngx_msec_int_t               since;
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    if (cl == NULL || cl->refreshing != NULL || cl->refresh.timer_set
        || ngx_terminate || ngx_exiting)
    {
        return;
    }

    since = (ngx_msec_int_t) (ngx_current_msec - cl->refreshed);

    if (cl->refreshes && since >= 0 && since < NGX_MATRIX_REDIS_REFRESH_MIN)
    {
        ngx_add_timer(&cl->refresh, NGX_MATRIX_REDIS_REFRESH_MIN - since);
        return;
    }

    if (rd == NULL || rd->ac == NULL || rd->exiting) {
        rd = NULL;

        for (i = 0; i < cl->nnodes; i++) {
            if (cl->nodes[i]->ac != NULL
                && cl->nodes[i]->state == NGX_MATRIX_REDIS_CONNECTED
                && !cl->nodes[i]->exiting)
            {
                rd = cl->nodes[i];
                break;
            }
        }
    }

    if (rd == NULL) {
        /* none connected: connect to the next that may answer, and ask
         * again soon */

        for (i = 0; i < cl->nnodes; i++) {
            if (cl->nodes[(cl->refreshes + i) % cl->nnodes]->ac == NULL
                && ngx_matrix_redis_connect(
                       cl->nodes[(cl->refreshes + i) % cl->nnodes])
                   == NGX_OK)
            {
                break;
            }
        }

        cl->refreshes++;
        cl->refreshed = ngx_current_msec;
        ngx_add_timer(&cl->refresh, NGX_MATRIX_REDIS_REFRESH_MIN);
        return;
    }

    if (redisAsyncCommand(rd->ac, ngx_matrix_redis_slots_reply, NULL,
                          "CLUSTER SLOTS")
        == REDIS_OK)
    {
        cl->refreshing = rd->ac;
        cl->refreshes++;
        cl->refreshed = ngx_current_msec;
        ngx_http_matrix_metrics_redis_cluster(0);
    }
}


static void
ngx_matrix_redis_refresh_timer(ngx_event_t *ev)
{
    ngx_matrix_redis_refresh(NULL);
}


/* [[start, end, [host, port, id, ...], replicas...], ...] */

static void
ngx_matrix_redis_slots_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                  *reply = r;
    ngx_matrix_redis_t          *rd = ac->data;

    int                          port;
    u_char                      *key;
    size_t                       klen, namelen;
    char                         host[NGX_SOCKADDR_STRLEN + 1];
    long long                    a, b, s;
    const char                  *name;
    ngx_uint_t                   i, covered;
    ngx_matrix_redis_conf_t     *rcf;
    ngx_matrix_redis_t          *node;
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    if (cl == NULL) {
        return;
    }

    if (cl->refreshing == ac) {
        cl->refreshing = NULL;
    }

    if (reply == NULL || rd->broken == ac || rd->exiting
        || reply->type != REDIS_REPLY_ARRAY)
    {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "redis cluster %s:%d: CLUSTER SLOTS: %s",
                          rd->node_host, rd->node_port, reply->str);
        }

        if (!rd->exiting) {
            ngx_add_timer(&cl->refresh, NGX_MATRIX_REDIS_REFRESH_MIN);
            ngx_matrix_redis_cluster_flush();
        }

        return;
    }

    covered = 0;

    for (i = 0; i < reply->elements; i++) {
        if (!mx_cluster_slots_range(reply->element[i], &a, &b, &name,
                                    &namelen, &port)
            || namelen > NGX_SOCKADDR_STRLEN)
        {
            continue;
        }

        if (name == NULL) {
            node = rd;      /* Redis 7: an unknown endpoint, the node asked */

        } else {
            ngx_memcpy(host, name, namelen);
            host[namelen] = '\0';

            node = ngx_matrix_redis_node(host, port);
        }

        if (node == NULL) {
            continue;
        }

        for (s = a; s <= b; s++) {
            cl->slot[s] = (u_char) node->node;
        }

        covered += (ngx_uint_t) (b - a + 1);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "redis cluster: %ui slots on %ui nodes", covered,
                   cl->nnodes);

    if (covered < MX_CLUSTER_SLOTS) {
        /* a failover under way: the rest is asked for again soon */
        ngx_add_timer(&cl->refresh, NGX_MATRIX_REDIS_REFRESH_MIN * 5);
    }

    if (covered) {
        cl->mapped = 1;
    }

    ngx_matrix_redis_cluster_flush();

    /* the schema check, on the node of its key */

    rcf = cl->conf;
    key = ngx_alloc(rcf->prefix.len + sizeof(MX_KEY_SCHEMA), rd->log);
    if (key == NULL) {
        return;
    }

    klen = ngx_cpymem(ngx_cpymem(key, rcf->prefix.data, rcf->prefix.len),
                      MX_KEY_SCHEMA, sizeof(MX_KEY_SCHEMA) - 1) - key;

    node = cl->nodes[cl->slot[mx_cluster_slot((char *) key, klen)]];

    if (node->ac == NULL) {
        (void) ngx_matrix_redis_connect(node);
    }

    if (node->ac != NULL) {
        redisAsyncCommand(node->ac, ngx_matrix_redis_schema_reply, NULL,
                          "GET %b", key, klen);
    }

    ngx_free(key);
}


/*
 * A MOVED or ASK answer: the command goes to the node named (a MOVED also
 * updates the map, and asks for all of it). NGX_OK when it was sent, with
 * its timer; NGX_DECLINED when the reply is the caller's.
 */

static ngx_int_t
ngx_matrix_redis_redirect(ngx_matrix_redis_t *rd, ngx_matrix_redis_op_t *op,
    redisReply *reply)
{
    int                          kind;
    unsigned                     slot;
    mx_redis_host_t              to;
    ngx_matrix_redis_t          *node;
    ngx_matrix_redis_cluster_t  *cl;

    cl = ngx_matrix_redis_cl;

    kind = mx_cluster_redirect(reply->str, reply->len, &slot, &to);

    if (kind == 0) {
        if (mx_cluster_retry_error(reply->str, reply->len)) {
            ngx_matrix_redis_refresh(rd);   /* TRYAGAIN, CLUSTERDOWN */
        }

        return NGX_DECLINED;
    }

    cl->redirects++;
    ngx_http_matrix_metrics_redis_cluster(1);

    node = ngx_matrix_redis_node(to.host[0] ? to.host : rd->node_host,
                                 to.port);

    if (kind == MX_CLUSTER_MOVED) {
        if (node != NULL) {
            cl->slot[slot] = (u_char) node->node;
        }

        ngx_matrix_redis_refresh(node);
    }

    if (node == NULL || op->in_multi || rd->exiting
        || op->redirects >= NGX_MATRIX_REDIS_REDIRECTS)
    {
        return NGX_DECLINED;
    }

    if (node->ac == NULL) {
        (void) ngx_matrix_redis_connect(node);

        if (node->ac == NULL) {
            return NGX_DECLINED;
        }
    }

    op->redirects++;
    op->asking = (kind == MX_CLUSTER_ASK);

    rd->outstanding--;
    op->rd = node;

    if (ngx_matrix_redis_send_op(op) != NGX_OK) {
        op->rd = rd;
        rd->outstanding++;
        return NGX_DECLINED;
    }

    node->outstanding++;
    op->context = node->context;
    op->reads = node->reads;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "redis cluster: %s slot %ud to %s:%d",
                   kind == MX_CLUSTER_MOVED ? "MOVED" : "ASK", slot,
                   node->node_host, node->node_port);

    return NGX_OK;
}


ngx_uint_t
ngx_matrix_redis_http_status(ngx_matrix_redis_status_e status)
{
    switch (status) {

    case NGX_MATRIX_REDIS_TIMEOUT:
        return NGX_HTTP_GATEWAY_TIME_OUT;

    case NGX_MATRIX_REDIS_SCHEMA_ERROR:
        return NGX_HTTP_SERVICE_UNAVAILABLE;

    case NGX_MATRIX_REDIS_REPLY_ERROR:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    default:
        return NGX_HTTP_BAD_GATEWAY;
    }
}


const char *
ngx_matrix_redis_status_text(ngx_matrix_redis_status_e status)
{
    switch (status) {

    case NGX_MATRIX_REDIS_OK:
        return "ok";

    case NGX_MATRIX_REDIS_TIMEOUT:
        return "the room cache (Redis) did not answer in time";

    case NGX_MATRIX_REDIS_SCHEMA_ERROR:
        return "the room cache (Redis) holds a schema version this module "
               "does not know";

    case NGX_MATRIX_REDIS_REPLY_ERROR:
        return "the room cache (Redis) answered with an error";

    default:
        return "the room cache (Redis) is unavailable";
    }
}


static const char *
ngx_matrix_redis_rd_state(ngx_matrix_redis_t *rd)
{
    switch (rd->state) {

    case NGX_MATRIX_REDIS_CONNECTED:
        return ngx_matrix_redis_schema_bad(rd) ? "unsupported schema"
                                               : "connected";

    case NGX_MATRIX_REDIS_CONNECTING:
        return "connecting";

    default:
        return "disconnected";
    }
}


/* a cluster: is node i serving slots in the map, and how many */

static ngx_uint_t
ngx_matrix_redis_node_slots(ngx_uint_t i)
{
    ngx_uint_t   s, n;
    u_char      *slot;

    slot = ngx_matrix_redis_cl->slot;
    n = 0;

    for (s = 0; s < MX_CLUSTER_SLOTS; s++) {
        n += (slot[s] == i);
    }

    return n;
}


ngx_int_t
ngx_matrix_redis_cluster_node(ngx_uint_t i, ngx_matrix_redis_node_info_t *ni)
{
    ngx_matrix_redis_t  *rd;

    if (ngx_matrix_redis_cl == NULL || i >= ngx_matrix_redis_cl->nnodes) {
        return NGX_DECLINED;
    }

    rd = ngx_matrix_redis_cl->nodes[i];

    ni->host = rd->node_host;
    ni->port = rd->node_port;
    ni->state = ngx_matrix_redis_rd_state(rd);
    ni->slots = ngx_matrix_redis_node_slots(i);
    ni->connects = rd->connects;
    ni->hangs = rd->hangs;
    ni->outstanding = rd->outstanding;
    ni->last_error = rd->last_error;

    return NGX_OK;
}


ngx_uint_t
ngx_matrix_redis_cluster_refreshes(void)
{
    return ngx_matrix_redis_cl ? ngx_matrix_redis_cl->refreshes : 0;
}


ngx_uint_t
ngx_matrix_redis_cluster_redirects(void)
{
    return ngx_matrix_redis_cl ? ngx_matrix_redis_cl->redirects : 0;
}


const char *
ngx_matrix_redis_state(void)
{
    ngx_uint_t  i, up, serving;

    if (ngx_matrix_redis == NULL) {
        return "not configured";
    }

    if (ngx_matrix_redis_cl) {
        /* the masters that serve slots: all, some or none connected */

        up = 0;
        serving = 0;

        for (i = 0; i < ngx_matrix_redis_cl->nnodes; i++) {
            if (ngx_matrix_redis_node_slots(i) == 0) {
                continue;
            }

            serving++;

            if (ngx_matrix_redis_cl->nodes[i]->state
                == NGX_MATRIX_REDIS_CONNECTED)
            {
                if (ngx_matrix_redis_cl->schema_bad) {
                    return "unsupported schema";
                }

                up++;
            }
        }

        return up == serving ? "connected"
               : up ? "partly connected" : "disconnected";
    }

    return ngx_matrix_redis_rd_state(ngx_matrix_redis);
}


/* a count of the connection's, or of every node's with a cluster */

static ngx_uint_t
ngx_matrix_redis_sum(size_t off)
{
    ngx_uint_t  i, n;

    if (ngx_matrix_redis_cl) {
        n = 0;

        for (i = 0; i < ngx_matrix_redis_cl->nnodes; i++) {
            n += *(ngx_uint_t *) ((u_char *) ngx_matrix_redis_cl->nodes[i]
                                  + off);
        }

        return n;
    }

    return ngx_matrix_redis
           ? *(ngx_uint_t *) ((u_char *) ngx_matrix_redis + off) : 0;
}


ngx_uint_t
ngx_matrix_redis_connects(void)
{
    return ngx_matrix_redis_sum(offsetof(ngx_matrix_redis_t, connects));
}


ngx_uint_t
ngx_matrix_redis_hangs(void)
{
    return ngx_matrix_redis_sum(offsetof(ngx_matrix_redis_t, hangs));
}


ngx_uint_t
ngx_matrix_redis_outstanding(void)
{
    return ngx_matrix_redis_sum(offsetof(ngx_matrix_redis_t, outstanding));
}


const char *
ngx_matrix_redis_last_error(void)
{
    return ngx_matrix_redis ? ngx_matrix_redis->last_error : "";
}
