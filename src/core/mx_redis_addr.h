/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The Redis address of `matrix_redis` and of matrix-join-ctl --redis, one
 * syntax for both (docs/directives.md):
 *
 *     host:port | [v6]:port | unix:/path
 *     sentinel:NAME host:port [host:port ...]
 *     cluster:host:port [host:port ...]
 *
 * Words are separated by spaces or commas. The second form names the
 * master a set of Redis Sentinels watch, and the sentinels to ask for it;
 * the third, nodes of a Redis Cluster to ask for its slot map (any one
 * that answers will do: the others are found through it).
 * A pure function: nothing is resolved or connected.
 */

#ifndef MX_REDIS_ADDR_H
#define MX_REDIS_ADDR_H

#include <stddef.h>


#define MX_REDIS_ADDR_HOST_MAX   256      /* with the NUL */
#define MX_REDIS_ADDR_NAME_MAX   128      /* with the NUL */
#define MX_REDIS_ADDR_SENTINELS  16


typedef struct {
    char            host[MX_REDIS_ADDR_HOST_MAX];   /* or a unix path */
    int             port;                           /* 0: unix socket */
} mx_redis_host_t;


typedef struct {
    char            master[MX_REDIS_ADDR_NAME_MAX]; /* "": no sentinels */
    int             cluster;    /* hosts are a Redis Cluster's seeds */
    size_t          nhosts;     /* 1 without sentinels or cluster */
    mx_redis_host_t hosts[MX_REDIS_ADDR_SENTINELS];
} mx_redis_addr_t;


/*
 * Parses s (len bytes, no NUL needed). 0, or -1 with a message for
 * "invalid Redis address \"...\": <message>" in err.
 */
int mx_redis_addr_parse(const char *s, size_t len, mx_redis_addr_t *a,
    char *err, size_t errlen);

/* One "host:port", "[v6]:port" or "unix:/path". 0 or -1 (err as above). */
int mx_redis_host_parse(const char *s, size_t len, mx_redis_host_t *h,
    char *err, size_t errlen);

#endif /* MX_REDIS_ADDR_H */
