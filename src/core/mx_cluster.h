/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Redis Cluster's routing facts, for the module and matrix-join-ctl alike
 * (hiredis 0.14 has no cluster support): the slot of a key (CRC16 of its
 * hash tag, as the Redis Cluster specification defines it), where a
 * command's first key is, and the MOVED and ASK redirections. Pure
 * functions: the connections and the slot maps are their callers'.
 */

#ifndef MX_CLUSTER_H
#define MX_CLUSTER_H

#include <stddef.h>

#include "mx_redis_addr.h"


#define MX_CLUSTER_SLOTS  16384


/* The slot of a key: CRC16 (XMODEM) of its hash tag, or of all of it. */
unsigned mx_cluster_slot(const char *key, size_t len);

/*
 * The index in argv of the command's first key, the one it is routed by;
 * -1 for a command with no key (AUTH, MULTI, EXEC, WAIT, SCRIPT, SCAN,
 * INFO, an EVAL with no keys, ...), which goes where the one before it
 * went. Command names in any case.
 */
int mx_cluster_key_index(int argc, const char **argv, const size_t *lens);

/*
 * An error reply "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>":
 * returns 1 (MOVED) or 2 (ASK) with the slot and the node filled in
 * (host "" when Redis left it out: the node that answered), else 0.
 */
#define MX_CLUSTER_MOVED  1
#define MX_CLUSTER_ASK    2

int mx_cluster_redirect(const char *err, size_t len, unsigned *slot,
    mx_redis_host_t *node);

/*
 * 1 for an error reply that a cluster in change gives and a later try
 * (with a fresh slot map) may not: MOVED, ASK, TRYAGAIN, CLUSTERDOWN.
 */
int mx_cluster_retry_error(const char *err, size_t len);

#endif /* MX_CLUSTER_H */
