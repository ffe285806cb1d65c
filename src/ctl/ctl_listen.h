/*
 * Copyright (C) nginx-matrix-join authors.
 * The listening sockets of matrix-join-ctl's HTTP servers (sync's
 * --appservice-listen, forward's and sync's --metrics): one HOST:PORT
 * syntax, checked when the options are read, and one way to bind it.
 */

#ifndef MXJ_CTL_LISTEN_H
#define MXJ_CTL_LISTEN_H

#include <stddef.h>


/*
 * The option opt of command cmd, value "HOST:PORT" or "[V6]:PORT", the
 * port a number 1 to 65535: 0, or -1 after "invalid OPT" on stderr (a
 * usage error). Names are resolved when bound.
 */
int mxj_listen_check(const char *cmd, const char *opt, const char *value);

/*
 * A socket listening on value (checked by mxj_listen_check): the file
 * descriptor (close-on-exec), or -1 after a message on stderr (a name
 * that does not resolve, an address taken).
 */
int mxj_listen_bind(const char *cmd, const char *opt, const char *value);

#endif /* MXJ_CTL_LISTEN_H */
