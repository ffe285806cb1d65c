/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl forward: retries, backoff, headers and stream IDs,
 * as docs/forwarder.md says; no I/O here.
 */

#include <stdlib.h>
#include <string.h>

#include "ctl_forward.h"


mxj_fwd_action_e
mxj_fwd_judge(long status, long since_delivery_ms, long max_attempts,
    long *counted)
{
    if (status >= 200 && status <= 299) {
        return MXJ_FWD_ACK;
    }

    /* connection errors, timeouts, 5xx, 429 and the odd 1xx or 3xx */

    if (status < 400 || status > 499 || status == 429) {
        return MXJ_FWD_RETRY;
    }

    /*
     * Every 4xx counts (the dead letter's "attempts" says how many there
     * were), but none makes a dead letter while the room's previous join
     * is fresh: the homeserver may still be processing it.
     */

    if (++*counted < max_attempts) {
        return MXJ_FWD_RETRY;
    }

    if (since_delivery_ms >= 0 && since_delivery_ms < MXJ_FWD_RECENT_MS) {
        return MXJ_FWD_RETRY;
    }

    return MXJ_FWD_DEAD;
}


long
mxj_fwd_backoff_ms(unsigned long attempt, double r)
{
    long  ms;

    ms = MXJ_FWD_BACKOFF_MIN;

    while (attempt > 1 && ms < MXJ_FWD_BACKOFF_MAX) {
        ms *= 2;
        attempt--;
    }

    if (ms > MXJ_FWD_BACKOFF_MAX) {
        ms = MXJ_FWD_BACKOFF_MAX;
    }

    if (r < 0) {
        r = 0;

    } else if (r > 1) {
        r = 1;
    }

    return (long) (ms * (0.8 + 0.4 * r) + 0.5);
}


long
mxj_fwd_auth_headers(const char *auth, size_t len, char ***headers)
{
    long          n, i;
    char        **h, *s;
    size_t        k;
    const char   *p, *end, *nl;

    static const char  name[] = "Authorization: ";

    *headers = NULL;
    end = auth + len;

    /* count the lines and refuse control characters before allocating */

    n = 0;

    for (p = auth; p < end; p = nl + 1) {
        nl = memchr(p, '\n', end - p);
        if (nl == NULL) {
            nl = end;
        }

        if (nl == p) {
            continue;
        }

        for (k = 0; k < (size_t) (nl - p); k++) {
            if (((unsigned char) p[k] < 0x20 && p[k] != '\t')
                || p[k] == 0x7f)
            {
                return -1;
            }
        }

        n++;
    }

    if (n == 0) {
        return 0;
    }

    h = calloc(n, sizeof(char *));
    if (h == NULL) {
        return -2;
    }

    i = 0;

    for (p = auth; p < end; p = nl + 1) {
        nl = memchr(p, '\n', end - p);
        if (nl == NULL) {
            nl = end;
        }

        if (nl == p) {
            continue;
        }

        s = malloc(sizeof(name) + (nl - p));
        if (s == NULL) {
            mxj_fwd_auth_free(h, i);
            return -2;
        }

        memcpy(s, name, sizeof(name) - 1);
        memcpy(s + sizeof(name) - 1, p, nl - p);
        s[sizeof(name) - 1 + (nl - p)] = '\0';

        h[i++] = s;
    }

    *headers = h;

    return n;
}


void
mxj_fwd_auth_free(char **headers, long n)
{
    long  i;

    if (headers == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        free(headers[i]);
    }

    free(headers);
}


long long
mxj_fwd_stream_id_ms(const char *id, size_t len)
{
    size_t      i;
    long long   ms;

    ms = 0;

    for (i = 0; i < len && id[i] != '-'; i++) {
        if (id[i] < '0' || id[i] > '9' || ms > (1LL << 52)) {
            return -1;
        }

        ms = ms * 10 + (id[i] - '0');
    }

    if (i == 0) {
        return -1;
    }

    return ms;
}
