/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Redis Cluster for matrix-join-ctl (--redis cluster:host:port ...):
 * hiredis 0.14 has no cluster support, so the routing is here, small and
 * blocking like the rest of the CLI.
 *
 * One connection per master, made when a command first needs it; the slot
 * map from CLUSTER SLOTS of any node that answers. Every key of a room
 * shares the room's hash tag (docs/redis-schema.md), so a room's commands,
 * its MULTI blocks and its scripts all go to one node: the callers that
 * drive r->c themselves (pipelines, MULTI) call mxj_redis_route() with one
 * of the room's keys first, and mxj_redis_cmd(), mxj_redis_cmdf() and
 * mxj_redis_script() route each command by its first key.
 *
 * A MOVED answer reloads the map and sends the command again; ASK sends it
 * once to the node named, after ASKING; a command with no key goes where
 * the one before it went. A MOVED answer to a command inside a caller's
 * own pipeline or MULTI marks the connection failed (mxj_redis_demoted()):
 * the caller's reconnect loads the map again.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ctl_redis.h"
#include "mx_cluster.h"
#include "mx_cluster_slots.h"


#define MXJ_CLUSTER_NODES      64
#define MXJ_CLUSTER_REDIRECTS  5
#define MXJ_CLUSTER_CONNECT_TIMEOUT  5      /* seconds */
#define MXJ_CLUSTER_IO_TIMEOUT       120


typedef struct {
    mx_redis_host_t   host;
    redisContext     *c;
} mxj_cluster_node_t;


struct mxj_redis_cluster_s {
    size_t              nnodes;
    mxj_cluster_node_t  nodes[MXJ_CLUSTER_NODES];
    unsigned char       slot[MX_CLUSTER_SLOTS];     /* index in nodes */
    size_t              nseeds;
    mx_redis_host_t     seeds[MX_REDIS_ADDR_SENTINELS];
};


static int
mxj_cluster_node(mxj_redis_cluster_t *cl, const mx_redis_host_t *h)
{
    size_t  i;

    for (i = 0; i < cl->nnodes; i++) {
        if (cl->nodes[i].host.port == h->port
            && strcmp(cl->nodes[i].host.host, h->host) == 0)
        {
            return (int) i;
        }
    }

    if (cl->nnodes == MXJ_CLUSTER_NODES) {
        fprintf(stderr, "matrix-join-ctl: more than %d Redis Cluster "
                "nodes\n", MXJ_CLUSTER_NODES);
        return -1;
    }

    cl->nodes[cl->nnodes].host = *h;
    cl->nodes[cl->nnodes].c = NULL;

    return (int) cl->nnodes++;
}


/* The node's connection, made (and authenticated) when it has none. */

static redisContext *
mxj_cluster_connect_node(mxj_redis_t *r, int i)
{
    redisReply          *reply;
    redisContext        *c;
    struct timeval       tv;
    mxj_cluster_node_t  *n;

    n = &r->cluster->nodes[i];

    if (n->c != NULL && n->c->err == 0) {
        return n->c;
    }

    /* a failed connection stays until a new one is made: r->c may be it,
     * and callers read r->c->err */

    tv.tv_sec = MXJ_CLUSTER_CONNECT_TIMEOUT;
    tv.tv_usec = 0;

    c = redisConnectWithTimeout(n->host.host, n->host.port, tv);

    if (c == NULL || c->err) {
        fprintf(stderr, "matrix-join-ctl: cannot connect to Redis Cluster "
                "node %s:%d: %s\n", n->host.host, n->host.port,
                c ? c->errstr : "out of memory");
        if (c) {
            redisFree(c);
        }
        mxj_redis_count_error();
        return NULL;
    }

    tv.tv_sec = MXJ_CLUSTER_IO_TIMEOUT;
    (void) redisSetTimeout(c, tv);

    if (r->password != NULL) {
        reply = redisCommand(c, "AUTH %s", r->password);

        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "matrix-join-ctl: Redis Cluster node %s:%d: "
                    "AUTH failed: %s\n", n->host.host, n->host.port,
                    reply ? reply->str : c->errstr);
            if (reply) {
                freeReplyObject(reply);
            }
            redisFree(c);
            return NULL;
        }

        freeReplyObject(reply);
    }

    if (n->c != NULL) {
        if (r->c == n->c) {
            r->c = c;
        }

        redisFree(n->c);
    }

    n->c = c;

    return c;
}


/*
 * CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...].
 * A host "" (Redis 7, an unknown endpoint) is the node asked.
 */

static int
mxj_cluster_load_from(mxj_redis_t *r, int asked)
{
    int                   j, port;
    long long             a, b, s;
    size_t                i, covered, hostlen;
    const char           *host;
    redisReply           *reply;
    redisContext         *c;
    mx_redis_host_t       h;
    mxj_redis_cluster_t  *cl;

    cl = r->cluster;

    c = mxj_cluster_connect_node(r, asked);
    if (c == NULL) {
        return -1;
    }

    reply = redisCommand(c, "CLUSTER SLOTS");

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "matrix-join-ctl: Redis Cluster node %s:%d: "
                "CLUSTER SLOTS: %s\n", cl->nodes[asked].host.host,
                cl->nodes[asked].host.port,
                reply == NULL ? c->errstr
                : reply->type == REDIS_REPLY_ERROR ? reply->str
                : "unexpected reply");
        if (reply) {
            freeReplyObject(reply);
        } else {
            mxj_redis_count_error();
        }
        return -1;
    }

    memset(cl->slot, 0xff, sizeof(cl->slot));
    covered = 0;

    for (i = 0; i < reply->elements; i++) {
        if (!mx_cluster_slots_range(reply->element[i], &a, &b, &host,
                                    &hostlen, &port)
            || hostlen >= sizeof(h.host))
        {
            continue;
        }

        if (host == NULL) {
            h = cl->nodes[asked].host;

        } else {
            memset(&h, 0, sizeof(h));
            memcpy(h.host, host, hostlen);
            h.port = port;
        }

        j = mxj_cluster_node(cl, &h);
        if (j < 0) {
            freeReplyObject(reply);
            return -1;
        }

        for (s = a; s <= b; s++) {
            cl->slot[s] = (unsigned char) j;
        }

        covered += (size_t) (b - a + 1);
    }

    freeReplyObject(reply);

    if (covered < MX_CLUSTER_SLOTS) {
        fprintf(stderr, "matrix-join-ctl: Redis Cluster node %s:%d serves "
                "%zu of %d slots (the cluster is not ready?)\n",
                cl->nodes[asked].host.host, cl->nodes[asked].host.port,
                covered, MX_CLUSTER_SLOTS);
        /* the slots nobody serves go to the node asked: CLUSTERDOWN */
        for (s = 0; s < MX_CLUSTER_SLOTS; s++) {
            if (cl->slot[s] == 0xff) {
                cl->slot[s] = (unsigned char) asked;
            }
        }
    }

    return 0;
}


/*
 * The map from the first node that gives it: the known ones, the seeds.
 * Returns that node's index, or -1.
 */

static int
mxj_cluster_load(mxj_redis_t *r)
{
    int                   j;
    size_t                i, n;
    mxj_redis_cluster_t  *cl;

    cl = r->cluster;
    n = cl->nnodes;

    for (i = 0; i < n; i++) {
        if (mxj_cluster_load_from(r, (int) i) == 0) {
            return (int) i;
        }
    }

    for (i = 0; i < cl->nseeds; i++) {
        j = mxj_cluster_node(cl, &cl->seeds[i]);

        if (j >= (int) n && mxj_cluster_load_from(r, j) == 0) {
            return j;
        }
    }

    fprintf(stderr, "matrix-join-ctl: no node of the Redis Cluster \"%s\" "
            "gave its slot map\n", r->address);

    return -1;
}


int
mxj_redis_cluster_connect(mxj_redis_t *r, const mx_redis_addr_t *a)
{
    size_t                i;
    mxj_redis_cluster_t  *cl;

    if (r->db != 0) {
        fprintf(stderr, "matrix-join-ctl: Redis Cluster has only database "
                "0 (--db %ld)\n", r->db);
        return -1;
    }

    if (r->cluster == NULL) {
        cl = calloc(1, sizeof(mxj_redis_cluster_t));
        if (cl == NULL) {
            fprintf(stderr, "matrix-join-ctl: out of memory\n");
            return -1;
        }

        for (i = 0; i < a->nhosts; i++) {
            cl->seeds[i] = a->hosts[i];
        }

        cl->nseeds = a->nhosts;
        r->cluster = cl;
    }

    i = (size_t) mxj_cluster_load(r);

    if (i != (size_t) -1) {
        /* the connection keyless commands go to first: the node that gave
         * the map (a master down in a failover does not stop the rest) */

        r->c = mxj_cluster_connect_node(r, (int) i);

        if (r->c != NULL) {
            return 0;
        }
    }

    mxj_redis_cluster_free(r);

    return -1;
}


static void
mxj_redis_cluster_close(mxj_redis_t *r)
{
    size_t                i;
    mxj_redis_cluster_t  *cl;

    cl = r->cluster;

    for (i = 0; i < cl->nnodes; i++) {
        if (cl->nodes[i].c != NULL) {
            redisFree(cl->nodes[i].c);
            cl->nodes[i].c = NULL;
        }
    }

    r->c = NULL;
}


void
mxj_redis_cluster_free(mxj_redis_t *r)
{
    if (r->cluster != NULL) {
        mxj_redis_cluster_close(r);
        free(r->cluster);
        r->cluster = NULL;
    }
}


static int
mxj_cluster_route_slot(mxj_redis_t *r, unsigned slot)
{
    redisContext  *c;

    c = mxj_cluster_connect_node(r, r->cluster->slot[slot]);

    if (c == NULL) {
        /* r->c stays a failed or closed connection: callers reconnect */
        if (r->c != NULL && r->c->err == 0) {
            r->c->err = REDIS_ERR_IO;
            snprintf(r->c->errstr, sizeof(r->c->errstr), "the Redis Cluster "
                     "node of slot %u cannot be reached", slot);
        }
        return -1;
    }

    r->c = c;

    return 0;
}


int
mxj_redis_route(mxj_redis_t *r, const char *key, size_t len)
{
    if (r->cluster == NULL) {
        return 0;
    }

    return mxj_cluster_route_slot(r, mx_cluster_slot(key, len));
}


/*
 * One command (argv given), routed by its first key, redirections
 * followed. The reply as Redis gave it (an error reply included), or
 * NULL when a connection failed.
 */

redisReply *
mxj_redis_cluster_cmd(mxj_redis_t *r, int argc, const char **argv,
    const size_t *lens, int script, mx_lua_e which, int nkeys)
{
    int              k, kind, j, tries;
    unsigned         slot;
    redisReply      *reply, *asking;
    redisContext    *c;
    mx_redis_host_t  to;

    if (script) {
        k = nkeys > 0 ? 0 : -1;
    } else {
        k = mx_cluster_key_index(argc, argv, lens);
    }

    if (k >= 0
        && mxj_redis_route(r, argv[k], lens ? lens[k] : strlen(argv[k])) != 0)
    {
        return NULL;
    }

    if (r->c == NULL) {
        return NULL;
    }

    c = r->c;

    for (tries = 0; ; tries++) {
        reply = script ? mxj_redis_eval_raw(c, which, nkeys, argc, argv, lens)
                       : redisCommandArgv(c, argc, argv, lens);

        if (reply == NULL || reply->type != REDIS_REPLY_ERROR
            || tries == MXJ_CLUSTER_REDIRECTS)
        {
            return reply;
        }

        kind = mx_cluster_redirect(reply->str, reply->len, &slot, &to);
        if (kind == 0) {
            return reply;
        }

        if (to.host[0] == '\0') {
            /* the node that answered, by its address */
            for (j = 0; j < (int) r->cluster->nnodes; j++) {
                if (r->cluster->nodes[j].c == c) {
                    memcpy(to.host, r->cluster->nodes[j].host.host,
                           sizeof(to.host));
                }
            }
        }

        freeReplyObject(reply);

        if (kind == MX_CLUSTER_MOVED) {
            /* the slot moved for good (a reshard, a failover): the map */
            if (mxj_cluster_load(r) < 0) {
                return NULL;
            }

            j = mxj_cluster_node(r->cluster, &to);
            if (j < 0) {
                return NULL;
            }

            r->cluster->slot[slot] = (unsigned char) j;

            if (mxj_cluster_route_slot(r, slot) != 0) {
                return NULL;
            }

            c = r->c;
            continue;
        }

        /* ASK: this command only, on the node importing the slot */

        j = mxj_cluster_node(r->cluster, &to);
        if (j < 0) {
            return NULL;
        }

        c = mxj_cluster_connect_node(r, j);
        if (c == NULL) {
            return NULL;
        }

        asking = redisCommand(c, "ASKING");
        if (asking == NULL) {
            return NULL;
        }

        freeReplyObject(asking);
    }
}


size_t
mxj_redis_masters(mxj_redis_t *r)
{
    size_t  i, n;

    if (r->cluster == NULL) {
        return 1;
    }

    /* the nodes that own slots now: the map's */

    n = 0;

    for (i = 0; i < r->cluster->nnodes; i++) {
        if (memchr(r->cluster->slot, (int) i, MX_CLUSTER_SLOTS) != NULL) {
            n++;
        }
    }

    return n;
}


int
mxj_redis_route_master(mxj_redis_t *r, size_t which)
{
    size_t  i, n;

    if (r->cluster == NULL) {
        return 0;
    }

    n = 0;

    for (i = 0; i < r->cluster->nnodes; i++) {
        if (memchr(r->cluster->slot, (int) i, MX_CLUSTER_SLOTS) == NULL) {
            continue;
        }

        if (n++ == which) {
            r->c = mxj_cluster_connect_node(r, (int) i);
            return r->c ? 0 : -1;
        }
    }

    return -1;
}


/*
 * hiredis's own formatting (redisvFormatCommand), read back into argv:
 * "*N\r\n" and N times "$len\r\n<bytes>\r\n". The pointers are into cmd.
 */

int
mxj_redis_cluster_argv(char *cmd, size_t len, int max, const char **argv,
    size_t *lens)
{
    int     argc, n;
    char   *p, *end, *e;
    long    l;

    p = cmd;
    end = cmd + len;

    if (p == end || *p != '*') {
        return -1;
    }

    n = (int) strtol(p + 1, &e, 10);

    if (n < 1 || n > max || e + 2 > end || e[0] != '\r') {
        return -1;
    }

    p = e + 2;

    for (argc = 0; argc < n; argc++) {
        if (p >= end || *p != '$') {
            return -1;
        }

        l = strtol(p + 1, &e, 10);

        if (l < 0 || e + 2 > end || e[0] != '\r' || e + 2 + l + 2 > end) {
            return -1;
        }

        argv[argc] = e + 2;
        lens[argc] = (size_t) l;
        p = e + 2 + l + 2;
    }

    return argc;
}
