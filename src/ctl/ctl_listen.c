/*
 * Copyright (C) nginx-matrix-join authors.
 * The listening sockets of matrix-join-ctl's HTTP servers (ctl_listen.h).
 */

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "ctl_listen.h"


#define MXJ_LISTEN_HOST_MAX  256


/* host (NUL-terminated, brackets removed) and port of value; NULL: why */

static const char *
mxj_listen_split(const char *value, char *host, const char **port)
{
    size_t       n, i;
    const char  *a, *colon;

    a = value;
    colon = strrchr(a, ':');

    if (colon == NULL || colon == a || colon[1] == '\0') {
        return "want HOST:PORT";
    }

    *port = colon + 1;
    n = (size_t) (colon - a);

    if (a[0] == '[') {
        if (n < 3 || a[n - 1] != ']') {
            return "want [IPV6]:PORT";
        }

        a++;
        n -= 2;

    } else if (memchr(a, ':', n) != NULL) {
        return "an IPv6 address goes in brackets: [IPV6]:PORT";
    }

    if (n >= MXJ_LISTEN_HOST_MAX) {
        return "the host is too long";
    }

    for (i = 0; i < n; i++) {
        if ((unsigned char) a[i] <= ' ' || a[i] == '/' || a[i] == '['
            || a[i] == ']' || a[i] == 0x7f)
        {
            return "not a host name or address";
        }
    }

    memcpy(host, a, n);
    host[n] = '\0';

    for (i = 0; (*port)[i] != '\0'; i++) {
        if ((*port)[i] < '0' || (*port)[i] > '9' || i >= 5) {
            return "the port is a number from 1 to 65535";
        }
    }

    if (atol(*port) < 1 || atol(*port) > 65535) {
        return "the port is a number from 1 to 65535";
    }

    return NULL;
}


int
mxj_listen_check(const char *cmd, const char *opt, const char *value)
{
    char         host[MXJ_LISTEN_HOST_MAX];
    const char  *why, *port;

    why = mxj_listen_split(value, host, &port);

    if (why != NULL) {
        fprintf(stderr, "matrix-join-ctl: %s: invalid %s \"%s\" (%s)\n", cmd,
                opt, value, why);
        return -1;
    }

    return 0;
}


int
mxj_listen_bind(const char *cmd, const char *opt, const char *value)
{
    int               fd, on, rc;
    char              host[MXJ_LISTEN_HOST_MAX];
    const char       *why, *port;
    struct addrinfo   hints, *res, *ai;

    why = mxj_listen_split(value, host, &port);

    if (why != NULL) {
        fprintf(stderr, "matrix-join-ctl: %s: invalid %s \"%s\" (%s)\n", cmd,
                opt, value, why);
        return -1;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;

    rc = getaddrinfo(host, port, &hints, &res);

    if (rc != 0) {
        fprintf(stderr, "matrix-join-ctl: %s: %s \"%s\": %s\n", cmd, opt,
                value, gai_strerror(rc));
        return -1;
    }

    fd = -1;
    rc = 0;

    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);

        if (fd < 0) {
            rc = errno;
            continue;
        }

        on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));

        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0
            && listen(fd, 64) == 0)
        {
            break;
        }

        rc = errno;
        close(fd);
        fd = -1;
    }

    freeaddrinfo(res);

    if (fd < 0) {
        fprintf(stderr, "matrix-join-ctl: %s: cannot listen on %s (%s): %s\n",
                cmd, value, opt, strerror(rc));
        return -1;
    }

    return fd;
}
