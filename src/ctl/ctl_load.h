/*
 * Copyright (C) nginx-matrix-join authors.
 * Loading a checked snapshot into Redis (docs/redis-schema.md, "Loading a
 * snapshot"): what load does with a file and sync with the document it
 * built from the homeserver's answers.
 */

#ifndef MXJ_CTL_LOAD_H
#define MXJ_CTL_LOAD_H

#include <stddef.h>

#include "ctl_redis.h"
#include "mx_snapshot.h"


typedef struct {
    const char    **meta;           /* more meta fields, staged with the
                                       rest: name, value, name, value... */
    size_t          nmeta;          /* strings in meta (twice the pairs) */
    int             progress;       /* progress lines on stderr */
    const char     *edge_to;        /* a hash the accepted edge joins
                                       are copied into by the switch,
                                       before the edge keys are reset
                                       (sync: P{R}:unconfirmed), or NULL */
    const char     *edge_prefix;    /* each PDU copied as prefix + PDU */
    const char     *edge_suffix;    /* + suffix (HSETNX by event ID) */
    char            generation[33]; /* out: meta.generation of this load */
} mxj_load_opts_t;


/*
 * Loads snap over the room's current generation through r (connected):
 * the schema key, the load lock, the staging keys, the switch, the
 * previous generation's UNLINK, the rooms set and the aliases. 0, or -1
 * with the reason printed on stderr (the current generation then stays).
 */
int mxj_load_snapshot(mxj_redis_t *r, const mx_snapshot_t *snap,
    mxj_load_opts_t *opts);

#endif /* MXJ_CTL_LOAD_H */
