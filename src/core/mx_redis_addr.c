/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The Redis address syntax (mx_redis_addr.h).
 */

#include <stdio.h>
#include <string.h>

#include "mx_redis_addr.h"


static int mx_redis_addr_space(char ch);


static int
mx_redis_addr_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == ',' || ch == '\n' || ch == '\r';
}


int
mx_redis_host_parse(const char *s, size_t len, mx_redis_host_t *h,
    char *err, size_t errlen)
{
    size_t       i, n;
    long         port;
    const char  *colon;

    memset(h, 0, sizeof(mx_redis_host_t));

    if (len > 5 && memcmp(s, "unix:", 5) == 0) {
        if (s[5] != '/') {
            snprintf(err, errlen, "a unix socket needs an absolute path");
            return -1;
        }

        if (len - 5 >= sizeof(h->host)) {
            snprintf(err, errlen, "the path is too long");
            return -1;
        }

        memcpy(h->host, s + 5, len - 5);
        return 0;
    }

    colon = NULL;

    for (i = len; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    }

    if (colon == NULL || colon == s || colon == s + len - 1) {
        snprintf(err, errlen, "expected \"host:port\" or \"unix:/path\"");
        return -1;
    }

    port = 0;

    for (i = colon + 1 - s; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || port > 65535) {
            port = -1;
            break;
        }

        port = port * 10 + (s[i] - '0');
    }

    if (port < 1 || port > 65535) {
        snprintf(err, errlen, "invalid port");
        return -1;
    }

    n = colon - s;

    if (s[0] == '[') {
        if (n < 3 || s[n - 1] != ']') {
            snprintf(err, errlen, "an IPv6 address needs its closing \"]\"");
            return -1;
        }

        s++;
        n -= 2;
    }

    for (i = 0; i < n; i++) {
        if (s[i] == '[' || s[i] == ']' || s[i] == '/'
            || mx_redis_addr_space(s[i]) || (unsigned char) s[i] < 0x20)
        {
            snprintf(err, errlen, "invalid host");
            return -1;
        }

        if (s[i] == ':' && colon[-1] != ']') {
            snprintf(err, errlen, "an IPv6 address needs brackets: "
                     "\"[addr]:port\"");
            return -1;
        }
    }

    if (n >= sizeof(h->host)) {
        snprintf(err, errlen, "the host name is too long");
        return -1;
    }

    memcpy(h->host, s, n);
    h->port = (int) port;

    return 0;
}


int
mx_redis_addr_parse(const char *s, size_t len, mx_redis_addr_t *a,
    char *err, size_t errlen)
{
    size_t       i, j, n, words;
    const char  *w;

    memset(a, 0, sizeof(mx_redis_addr_t));

    words = 0;
    i = 0;

    for ( ;; ) {
        while (i < len && mx_redis_addr_space(s[i])) {
            i++;
        }

        if (i == len) {
            break;
        }

        w = s + i;

        for (j = i; j < len && !mx_redis_addr_space(s[j]); j++) {
            /* void */
        }

        n = j - i;
        i = j;

        if (words == 0 && n >= 9 && memcmp(w, "sentinel:", 9) == 0) {
            if (n == 9 || n - 9 >= sizeof(a->master)) {
                snprintf(err, errlen, "\"sentinel:\" needs the master's "
                         "name (at most %zu bytes)", sizeof(a->master) - 1);
                return -1;
            }

            memcpy(a->master, w + 9, n - 9);
            words++;
            continue;
        }

        if (words == 0 && n > 8 && memcmp(w, "cluster:", 8) == 0
            && mx_redis_host_parse(w + 8, n - 8, &a->hosts[0], err, errlen)
               == 0)
        {
            /* "cluster:host:port": "cluster:6379" is the host "cluster" */

            if (a->hosts[0].port == 0) {
                snprintf(err, errlen, "cluster nodes are asked over TCP: "
                         "\"host:port\"");
                return -1;
            }

            a->cluster = 1;
            a->nhosts = 1;
            words++;
            continue;
        }

        if (words > 0 && a->master[0] == '\0' && !a->cluster) {
            snprintf(err, errlen, "one address, \"sentinel:NAME\" and "
                     "the sentinels' addresses, or \"cluster:host:port\" "
                     "and more nodes");
            return -1;
        }

        if (a->nhosts == MX_REDIS_ADDR_SENTINELS) {
            snprintf(err, errlen, "at most %d %s", MX_REDIS_ADDR_SENTINELS,
                     a->cluster ? "cluster nodes" : "sentinels");
            return -1;
        }

        if (mx_redis_host_parse(w, n, &a->hosts[a->nhosts], err, errlen)
            != 0)
        {
            return -1;
        }

        if ((a->master[0] || a->cluster) && a->hosts[a->nhosts].port == 0)
        {
            snprintf(err, errlen, "%s are asked over TCP: \"host:port\"",
                     a->cluster ? "cluster nodes" : "sentinels");
            return -1;
        }

        a->nhosts++;
        words++;
    }

    if (a->nhosts == 0) {
        snprintf(err, errlen, a->master[0] ? "no sentinel address"
                                           : "empty");
        return -1;
    }

    return 0;
}
