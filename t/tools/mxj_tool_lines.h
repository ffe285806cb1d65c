/*
 * Copyright (C) nginx-matrix-join authors.
 * What the differential tools share: one output line per input line.
 */

#ifndef MXJ_TOOL_LINES_H
#define MXJ_TOOL_LINES_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "mx_util.h"


typedef void (*mxj_tool_line_pt)(void *conf, const char *line, size_t n,
    mx_buf_t *out);


/*
 * Reads stdin line by line (any length), calls process for each line
 * without its newline, writes what it produced plus a newline to stdout.
 * Returns the exit code: 0, or 1 on an i/o or memory error.
 */
static int
mxj_tool_lines(const char *name, mxj_tool_line_pt process, void *conf)
{
    char      *line;
    size_t     cap;
    ssize_t    n;
    mx_buf_t   out = MX_BUF_INIT;
    int        rc;

    line = NULL;
    cap = 0;
    rc = 0;

    while ((n = getline(&line, &cap, stdin)) != -1) {
        if (n > 0 && line[n - 1] == '\n') {
            n--;
        }

        mx_buf_reset(&out);
        process(conf, line, (size_t) n, &out);

        if (mx_buf_append_byte(&out, '\n') != 0) {
            fprintf(stderr, "%s: out of memory\n", name);
            rc = 1;
            break;
        }

        if (fwrite(out.data, 1, out.len, stdout) != out.len) {
            fprintf(stderr, "%s: write error\n", name);
            rc = 1;
            break;
        }
    }

    free(line);
    mx_buf_free(&out);

    if (rc == 0 && (ferror(stdin) || fflush(stdout) != 0)) {
        fprintf(stderr, "%s: i/o error\n", name);
        rc = 1;
    }

    return rc;
}

#endif /* MXJ_TOOL_LINES_H */
