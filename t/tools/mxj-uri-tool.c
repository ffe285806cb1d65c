/*
 * Copyright (C) nginx-matrix-join authors.
 * The core's request URI decoding (mx_uri.h) on a pipe, for the
 * differential tests against Python's urllib and Twisted's parse_qs.
 * Every input line is the hex of the bytes to decode (so any byte can be
 * sent); one output line per input line:
 *
 *   mxj-uri-tool unescape [--plus]
 *       -> hex of mx_uri_unescape's output
 *   mxj-uri-tool path
 *       -> "OK <hex a> <hex b>", "SHAPE" or "NUL" (mx_uri_path_params)
 *   mxj-uri-tool args NAME
 *       -> "N" followed by " v<hex>" for each decoded value of NAME, in
 *          order (mx_uri_arg_next, then mx_uri_unescape with plus)
 *   mxj-uri-tool ver VERSION
 *       -> "1" or "0" (mx_uri_ver_listed)
 *   mxj-uri-tool bool NAME
 *       -> "1", "0", "-1", or "absent" (mx_uri_arg_bool)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mxj_tool_lines.h"
#include "mx_uri.h"


typedef struct {
    const char   *mode;
    const char   *arg;
    int           plus;
} tool_conf_t;


static int
unhex(const char *s, size_t n, char *out)
{
    size_t        i;
    unsigned int  b;

    if (n % 2) {
        return -1;
    }

    for (i = 0; i < n; i += 2) {
        if (sscanf(s + i, "%2x", &b) != 1) {
            return -1;
        }
        out[i / 2] = (char) b;
    }

    return 0;
}


static int
put_hex(mx_buf_t *out, const char *p, size_t n)
{
    size_t  i;
    char    h[3];

    for (i = 0; i < n; i++) {
        snprintf(h, sizeof(h), "%02x", (unsigned char) p[i]);
        if (mx_buf_append(out, h, 2) != 0) {
            return -1;
        }
    }

    return 0;
}


static void
process_line(void *data, const char *line, size_t n, mx_buf_t *out)
{
    tool_conf_t *cf = data;

    int             rc;
    char           *in, *buf;
    size_t          len, pos, vlen;
    const char     *val;
    mx_uri_part_t   seg[2];

    in = malloc(n / 2 + 1);
    buf = malloc(n / 2 + 2);

    if (in == NULL || buf == NULL || unhex(line, n, in) != 0) {
        mx_buf_append_str(out, "ERROR bad input line");
        goto done;
    }

    len = n / 2;

    if (strcmp(cf->mode, "unescape") == 0) {
        put_hex(out, buf, mx_uri_unescape(buf, in, len, cf->plus));

    } else if (strcmp(cf->mode, "path") == 0) {
        rc = mx_uri_path_params(in, len, buf, seg);

        if (rc == MX_URI_SHAPE) {
            mx_buf_append_str(out, "SHAPE");

        } else if (rc == MX_URI_NUL) {
            mx_buf_append_str(out, "NUL");

        } else {
            mx_buf_append_str(out, "OK ");
            put_hex(out, seg[0].data, seg[0].len);
            mx_buf_append_str(out, " ");
            put_hex(out, seg[1].data, seg[1].len);
        }

    } else if (strcmp(cf->mode, "args") == 0) {
        mx_buf_append_str(out, "N");
        pos = 0;

        while (mx_uri_arg_next(in, len, &pos, cf->arg, &val, &vlen)) {
            mx_buf_append_str(out, " v");
            put_hex(out, buf, mx_uri_unescape(buf, val, vlen, 1));
        }

    } else if (strcmp(cf->mode, "ver") == 0) {
        mx_buf_append_str(out, mx_uri_ver_listed(in, len, cf->arg) ? "1"
                                                                    : "0");

    } else {
        rc = mx_uri_arg_bool(in, len, cf->arg, 2);
        mx_buf_append_str(out, rc == 2 ? "absent"
                               : rc == 1 ? "1" : rc == 0 ? "0" : "-1");
    }

done:

    free(in);
    free(buf);
}


int
main(int argc, char **argv)
{
    tool_conf_t  cf;

    memset(&cf, 0, sizeof(tool_conf_t));

    if (argc < 2) {
        goto usage;
    }

    cf.mode = argv[1];

    if (strcmp(cf.mode, "unescape") == 0) {
        if (argc == 3 && strcmp(argv[2], "--plus") == 0) {
            cf.plus = 1;
        } else if (argc != 2) {
            goto usage;
        }

    } else if (strcmp(cf.mode, "path") == 0) {
        if (argc != 2) {
            goto usage;
        }

    } else if (strcmp(cf.mode, "args") == 0 || strcmp(cf.mode, "ver") == 0
               || strcmp(cf.mode, "bool") == 0)
    {
        if (argc != 3) {
            goto usage;
        }
        cf.arg = argv[2];

    } else {
        goto usage;
    }

    return mxj_tool_lines("mxj-uri-tool", process_line, &cf);

usage:

    fprintf(stderr, "usage: mxj-uri-tool unescape [--plus] | path | "
            "args NAME | ver VERSION | bool NAME  (input: hex lines)\n");
    return 2;
}
