/*
 * Copyright (C) nginx-matrix-join authors.
 * The option parser of every matrix-join-ctl command but keygen:
 * getopt_long over the Redis options and the command's own table.
 */

#ifndef MXJ_CTL_OPT_H
#define MXJ_CTL_OPT_H

#include "ctl_redis.h"


#define MXJ_OPT_OPERAND  (-1)       /* the id of an argument not an option */


typedef struct {
    const char     *name;           /* spelled --name */
    int             value;          /* 1: takes a value, 0: a flag */
    int             id;             /* handed to the set function */
} mxj_opt_t;

/* One option (value NULL for a flag) or operand: 0, or -1 when said why. */
typedef int (*mxj_opt_set_pt)(void *conf, int id, const char *value);


/*
 * Reads argv[1..argc) of command cmd: "--name value" and "--name=value"
 * alike, no abbreviation. The Redis options (--redis, --prefix,
 * --password, --db) go to r (mxj_redis_set()), the command's own (opts,
 * ending with a NULL name) and the operands, in their order, to
 * set(conf, id, value). 0, or -1 after a message on stderr ("CMD:
 * unknown option", "needs a value", or set's own).
 */
int mxj_opt_parse(const char *cmd, int argc, char **argv, mxj_redis_t *r,
    const mxj_opt_t *opts, mxj_opt_set_pt set, void *conf);

#endif /* MXJ_CTL_OPT_H */
