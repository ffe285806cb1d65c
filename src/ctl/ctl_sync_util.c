/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: the small decisions and formats that need neither
 * Redis nor HTTP (ctl_sync.h): durations, which pushed events matter, the
 * regexes of the registration, the listener's routes, tokens and
 * transaction IDs, and what becomes of a join accepted at the edge.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl_sync.h"
#include "mx_uri.h"


#define MXJ_SYNC_DURATION_MAX  (365LL * 86400 * 1000)


static int mxj_sync_unescape(const char *s, size_t n, char *out,
    size_t cap, int plus);


long long
mxj_sync_duration_ms(const char *s)
{
    long long    total, n, unit;
    const char  *p, *start;

    if (s == NULL || *s == '\0') {
        return -1;
    }

    total = 0;
    p = s;

    while (*p) {
        if (!isdigit((unsigned char) *p)) {
            return -1;
        }

        n = 0;
        start = p;

        while (isdigit((unsigned char) *p)) {
            n = n * 10 + (*p++ - '0');

            if (n > MXJ_SYNC_DURATION_MAX) {
                return -1;
            }
        }

        if (*p == '\0') {
            /* a bare number is seconds, alone only */
            if (start != s) {
                return -1;
            }

            unit = 1000;

        } else if (strncmp(p, "ms", 2) == 0) {
            unit = 1;
            p += 2;

        } else if (*p == 's') {
            unit = 1000;
            p++;

        } else if (*p == 'm') {
            unit = 60 * 1000;
            p++;

        } else if (*p == 'h') {
            unit = 3600 * 1000;
            p++;

        } else if (*p == 'd') {
            unit = 86400 * 1000;
            p++;

        } else {
            return -1;
        }

        if (n > MXJ_SYNC_DURATION_MAX / unit) {
            return -1;
        }

        total += n * unit;

        if (total > MXJ_SYNC_DURATION_MAX) {
            return -1;
        }
    }

    return total > 0 ? total : -1;
}


int
mxj_sync_auth_relevant(const json_t *ev)
{
    const char  *type, *m;
    json_t      *sk;

    static const char  *types[] = {
        "m.room.join_rules", "m.room.power_levels", "m.room.server_acl",
        "m.room.create", "m.room.tombstone", NULL
    };
    const char        **t;

    if (!json_is_object(ev)) {
        return 0;
    }

    type = json_string_value(json_object_get(ev, "type"));
    sk = json_object_get(ev, "state_key");

    if (type == NULL || !json_is_string(sk)) {
        return 0;
    }

    if (strcmp(type, "m.room.member") == 0) {
        m = json_string_value(json_object_get(json_object_get(ev, "content"),
                                              "membership"));

        return m != NULL && (strcmp(m, "ban") == 0 || strcmp(m, "leave") == 0);
    }

    for (t = types; *t; t++) {
        if (strcmp(type, *t) == 0) {
            return 1;
        }
    }

    return 0;
}


int
mxj_sync_room_regex(mx_buf_t *out, const char *room)
{
    const char  *p;

    if (mx_buf_append_byte(out, '^') != 0) {
        return -1;
    }

    for (p = room; *p; p++) {
        if (strchr(".^$*+?()[]{}|\\/", *p) != NULL
            && mx_buf_append_byte(out, '\\') != 0)
        {
            return -1;
        }

        if (mx_buf_append_byte(out, *p) != 0) {
            return -1;
        }
    }

    return mx_buf_append_byte(out, '$');
}


mxj_sync_as_route_e
mxj_sync_as_route(const char *method, const char *path, char *txn)
{
    int          i, get, put;
    size_t       n, plen;
    const char  *p, *rest;

    static const char  v1[] = "/_matrix/app/v1";
    static const char  ping[] = "/_matrix/app/v1/ping";
    static const char *queries[] = { "/users/", "/rooms/", NULL };

    txn[0] = '\0';
    put = (strcmp(method, "PUT") == 0);
    get = (strcmp(method, "GET") == 0);

    if (strcmp(path, ping) == 0) {
        return strcmp(method, "POST") == 0 ? MXJ_SYNC_AS_PING
                                           : MXJ_SYNC_AS_BAD_METHOD;
    }

    /* the prefix, or none (the legacy paths) */

    p = path;
    n = sizeof(v1) - 1;

    if (strncmp(p, v1, n) == 0 && p[n] == '/') {
        p += n;
    }

    n = sizeof("/transactions/") - 1;

    if (strncmp(p, "/transactions/", n) == 0) {
        rest = p + n;
        plen = strlen(rest);

        if (plen == 0 || strchr(rest, '/') != NULL
            || mxj_sync_unescape(rest, plen, txn, MXJ_SYNC_TXN_MAX + 1, 0)
               != 0
            || txn[0] == '\0')
        {
            txn[0] = '\0';
            return MXJ_SYNC_AS_UNKNOWN;
        }

        return put ? MXJ_SYNC_AS_TRANSACTION : MXJ_SYNC_AS_BAD_METHOD;
    }

    for (i = 0; queries[i] != NULL; i++) {
        n = strlen(queries[i]);

        if (strncmp(p, queries[i], n) == 0 && p[n] != '\0'
            && strchr(p + n, '/') == NULL)
        {
            return get ? MXJ_SYNC_AS_QUERY : MXJ_SYNC_AS_BAD_METHOD;
        }
    }

    return MXJ_SYNC_AS_UNKNOWN;
}


int
mxj_sync_as_tokens(const char *authorization, const char *access_token,
    char *bearer, char *param)
{
    size_t       n;
    const char  *t;

    bearer[0] = '\0';
    param[0] = '\0';

    if (authorization != NULL) {
        if (strncasecmp(authorization, "Bearer ", 7) != 0) {
            return -1;
        }

        for (t = authorization + 7; *t == ' '; t++) {
            /* void */
        }

        n = strlen(t);

        while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t')) {
            n--;
        }

        if (n == 0 || n > MXJ_SYNC_TOKEN_MAX) {
            return -1;
        }

        memcpy(bearer, t, n);
        bearer[n] = '\0';
    }

    if (access_token != NULL) {
        if (mxj_sync_unescape(access_token, strlen(access_token), param,
                              MXJ_SYNC_TOKEN_MAX + 1, 1)
            != 0 || param[0] == '\0')
        {
            param[0] = '\0';
            return -1;
        }
    }

    return 0;
}


int
mxj_sync_txns_seen(const mxj_sync_txns_t *t, const char *txn)
{
    size_t  i;

    for (i = 0; i < MXJ_SYNC_TXNS; i++) {
        if (t->ids[i] != NULL && strcmp(t->ids[i], txn) == 0) {
            return 1;
        }
    }

    return 0;
}


int
mxj_sync_txns_add(mxj_sync_txns_t *t, const char *txn)
{
    char    *copy;
    size_t   i;

    copy = strdup(txn);
    if (copy == NULL) {
        return -1;
    }

    i = t->next++ % MXJ_SYNC_TXNS;
    free(t->ids[i]);
    t->ids[i] = copy;

    return 0;
}


void
mxj_sync_txns_free(mxj_sync_txns_t *t)
{
    size_t  i;

    for (i = 0; i < MXJ_SYNC_TXNS; i++) {
        free(t->ids[i]);
        t->ids[i] = NULL;
    }

    t->next = 0;
}


/*
 * Percent-decoding (mx_uri_unescape, as the homeserver's side reads URIs)
 * into out, cap bytes with the NUL; -1 when it does not fit or holds a
 * NUL.
 */

static int
mxj_sync_unescape(const char *s, size_t n, char *out, size_t cap, int plus)
{
    char    tmp[3 * (MXJ_SYNC_TOKEN_MAX + 1)];    /* the longer of the two */
    size_t  k;

    /* decoding shortens at most threefold: longer cannot fit */
    if (n > sizeof(tmp)) {
        return -1;
    }

    k = mx_uri_unescape(tmp, s, n, plus);

    if (k + 1 > cap || memchr(tmp, '\0', k) != NULL) {
        return -1;
    }

    memcpy(out, tmp, k);
    out[k] = '\0';

    return 0;
}


int
mxj_sync_uri_escape(mx_buf_t *out, const char *s)
{
    char                 esc[3];
    const unsigned char *p;

    static const char    hex[] = "0123456789ABCDEF";

    for (p = (const unsigned char *) s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            if (mx_buf_append_byte(out, (char) *p) != 0) {
                return -1;
            }

            continue;
        }

        esc[0] = '%';
        esc[1] = hex[*p >> 4];
        esc[2] = hex[*p & 0xf];

        if (mx_buf_append(out, esc, 3) != 0) {
            return -1;
        }
    }

    return 0;
}


mxj_sync_join_e
mxj_sync_judge_join(int known, int delivered, int queued, long *passes,
    long confirm_passes, const char **why)
{
    *why = NULL;

    if (known) {
        return MXJ_SYNC_JOIN_CONFIRMED;
    }

    if (delivered) {
        (*passes)++;

        if (*passes > confirm_passes) {
            *why = "delivered, but not in the homeserver's state";
            return MXJ_SYNC_JOIN_DROP;
        }

        return MXJ_SYNC_JOIN_KEEP;
    }

    if (queued) {
        return MXJ_SYNC_JOIN_KEEP;
    }

    *why = "neither delivered nor in the outbox (a dead letter)";

    return MXJ_SYNC_JOIN_DROP;
}
