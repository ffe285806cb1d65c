/*
 * Copyright (C) nginx-matrix-join authors.
 * The commands' option parser (ctl_opt.h), on getopt_long.
 */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_opt.h"


#define MXJ_OPT_FIRST  256          /* getopt_long's val of the first entry */


static const mxj_opt_t  mxj_opt_redis[] = {
    { "redis", 1, 0 },
    { "prefix", 1, 0 },
    { "password", 1, 0 },
    { "db", 1, 0 },
    { NULL, 0, 0 }
};


static int mxj_opt_unknown(const char *cmd, const char *arg);


int
mxj_opt_parse(const char *cmd, int argc, char **argv, mxj_redis_t *r,
    const mxj_opt_t *opts, mxj_opt_set_pt set, void *conf)
{
    int                  c, n, nr, i, at, rc;
    size_t               len;
    const char          *arg;
    const mxj_opt_t     *o;
    struct option       *longopts;

    for (nr = 0; mxj_opt_redis[nr].name; nr++) { /* void */ }
    for (n = 0; opts[n].name; n++) { /* void */ }

    longopts = calloc(nr + n + 1, sizeof(struct option));
    if (longopts == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    for (i = 0; i < nr + n; i++) {
        o = (i < nr) ? &mxj_opt_redis[i] : &opts[i - nr];

        longopts[i].name = o->name;
        longopts[i].has_arg = o->value ? required_argument : no_argument;
        longopts[i].val = MXJ_OPT_FIRST + i;
    }

    /* "-": operands in their order (code 1); ":": a missing value is ':' */

    opterr = 0;
    optind = 0;
    rc = 0;

    for ( ;; ) {
        at = optind ? optind : 1;
        c = getopt_long(argc, argv, "-:", longopts, NULL);

        if (c == -1) {
            break;
        }

        arg = argv[at];

        if (c == 1) {
            rc = set(conf, MXJ_OPT_OPERAND, optarg);

        } else if (c == ':') {
            fprintf(stderr, "matrix-join-ctl: %s needs a value\n", arg);
            rc = -1;

        } else if (c < MXJ_OPT_FIRST) {
            rc = mxj_opt_unknown(cmd, arg);

        } else {
            i = c - MXJ_OPT_FIRST;
            len = strcspn(arg + 2, "=");

            /* getopt_long takes "--up" for "--upstream": we do not */

            if (strlen(longopts[i].name) != len) {
                rc = mxj_opt_unknown(cmd, arg);

            } else if (i < nr) {
                rc = mxj_redis_set(r, longopts[i].name, optarg);

            } else {
                rc = set(conf, opts[i - nr].id, optarg);
            }
        }

        if (rc != 0) {
            goto done;
        }
    }

    /* after "--", operands only */

    for (i = optind; i < argc; i++) {
        rc = set(conf, MXJ_OPT_OPERAND, argv[i]);

        if (rc != 0) {
            goto done;
        }
    }

done:

    free(longopts);

    return rc;
}


static int
mxj_opt_unknown(const char *cmd, const char *arg)
{
    fprintf(stderr, "matrix-join-ctl: %s: unknown option \"%.*s\"\n", cmd,
            (int) strcspn(arg, "="), arg);

    return -1;
}
