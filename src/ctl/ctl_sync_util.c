/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: the small decisions and formats that need neither
 * Redis nor HTTP (ctl_sync.h): durations, which pushed events matter, the
 * application service registration, the listener's request parsing, and
 * what becomes of a join accepted at the edge.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl_sync.h"
#include "mx_uri.h"


#define MXJ_SYNC_DURATION_MAX  (365LL * 86400 * 1000)
#define MXJ_SYNC_HEAD_MAX      16384


static int mxj_sync_unescape(const char *s, size_t n, char *out,
    size_t cap, int plus);
static int mxj_sync_token_line(const char *line, size_t n, const char *name,
    char *out);
static int mxj_sync_yaml_quoted(mx_buf_t *out, const char *s);


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


int
mxj_sync_registration(mx_buf_t *out, const char *url, const char *as_token,
    const char *hs_token, const char *const *rooms, size_t nrooms)
{
    size_t    i;
    mx_buf_t  re = MX_BUF_INIT;

    if (mx_buf_append_str(out,
            "# Written by matrix-join-ctl sync: add this file to the "
            "homeserver's\n"
            "# app_service_config_files. sync keeps the tokens when it "
            "writes it again.\n"
            "id: " MXJ_SYNC_AS_ID "\n"
            "url: ") != 0
        || mxj_sync_yaml_quoted(out, url) != 0
        || mx_buf_append_str(out, "\nas_token: ") != 0
        || mxj_sync_yaml_quoted(out, as_token) != 0
        || mx_buf_append_str(out, "\nhs_token: ") != 0
        || mxj_sync_yaml_quoted(out, hs_token) != 0
        || mx_buf_append_str(out,
               "\nsender_localpart: " MXJ_SYNC_LOCALPART "\n"
               "rate_limited: false\n"
               "namespaces:\n"
               "  users: []\n"
               "  aliases: []\n") != 0)
    {
        return -1;
    }

    if (nrooms == 0) {
        return mx_buf_append_str(out, "  rooms: []\n");
    }

    if (mx_buf_append_str(out, "  rooms:\n") != 0) {
        return -1;
    }

    for (i = 0; i < nrooms; i++) {
        mx_buf_reset(&re);

        if (mxj_sync_room_regex(&re, rooms[i]) != 0
            || mx_buf_append_str(out, "    - exclusive: false\n"
                                      "      regex: ") != 0
            || mxj_sync_yaml_quoted(out, re.data) != 0
            || mx_buf_append_byte(out, '\n') != 0)
        {
            mx_buf_free(&re);
            return -1;
        }
    }

    mx_buf_free(&re);

    return 0;
}


/* A YAML single-quoted scalar: only the quote itself is doubled. */

static int
mxj_sync_yaml_quoted(mx_buf_t *out, const char *s)
{
    if (mx_buf_append_byte(out, '\'') != 0) {
        return -1;
    }

    for ( /* void */ ; *s; s++) {
        if (*s == '\'' && mx_buf_append_byte(out, '\'') != 0) {
            return -1;
        }

        if (mx_buf_append_byte(out, *s) != 0) {
            return -1;
        }
    }

    return mx_buf_append_byte(out, '\'');
}


int
mxj_sync_registration_tokens(const char *text, size_t len, char *as,
    char *hs)
{
    int          got_as, got_hs;
    size_t       n;
    const char  *p, *end, *nl;

    got_as = 0;
    got_hs = 0;
    p = text;
    end = text + len;

    while (p < end) {
        nl = memchr(p, '\n', end - p);
        n = nl ? (size_t) (nl - p) : (size_t) (end - p);

        if (!got_as) {
            got_as = mxj_sync_token_line(p, n, "as_token:", as);
        }

        if (!got_hs) {
            got_hs = mxj_sync_token_line(p, n, "hs_token:", hs);
        }

        p += n + 1;
    }

    return (got_as && got_hs) ? 0 : -1;
}


/*
 * "name: value", "name: 'value'" or "name: \"value\"" at the start of a
 * line; the value printable ASCII without quotes or spaces. 1 when found.
 */

static int
mxj_sync_token_line(const char *line, size_t n, const char *name, char *out)
{
    char         q;
    size_t       k, i, start;

    k = strlen(name);

    if (n < k || memcmp(line, name, k) != 0) {
        return 0;
    }

    while (k < n && (line[k] == ' ' || line[k] == '\t')) {
        k++;
    }

    q = (k < n && (line[k] == '\'' || line[k] == '"')) ? line[k++] : 0;
    start = k;

    for (i = 0; k < n; k++, i++) {
        if (line[k] == q || line[k] == ' ' || line[k] == '\t'
            || line[k] == '\r' || line[k] == '#')
        {
            break;
        }

        if (line[k] <= 0x20 || line[k] >= 0x7f || line[k] == '\''
            || line[k] == '"' || i >= MXJ_SYNC_TOKEN_MAX)
        {
            return 0;
        }
    }

    if (k == start || (q && (k >= n || line[k] != q))) {
        return 0;
    }

    memcpy(out, line + start, k - start);
    out[k - start] = '\0';

    return 1;
}


int
mxj_sync_http_parse(const char *buf, size_t len, mxj_sync_http_req_t *req,
    const char **why)
{
    char         *end;
    size_t        i, n, line, k, vstart, vend;
    long long     cl;
    const char   *p, *eol, *name, *value;

    memset(req, 0, sizeof(mxj_sync_http_req_t));
    req->content_length = -1;

    /* the head ends with an empty line (CRLF, or a bare LF, tolerated) */

    for (i = 0, n = 0; i < len; i++) {
        if (buf[i] != '\n') {
            continue;
        }

        if ((i >= 1 && buf[i - 1] == '\n')
            || (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n'))
        {
            n = i + 1;
            break;
        }
    }

    if (n == 0) {
        if (len >= MXJ_SYNC_HEAD_MAX) {
            *why = "request head too large";
            return -1;
        }

        /* what came so far must be able to start a request line */

        for (i = 0; i < len && buf[i] != ' '; i++) {
            if (!isupper((unsigned char) buf[i]) || i >= 16) {
                *why = "bad request method";
                return -1;
            }
        }

        for (i++; i < len && buf[i] != ' ' && buf[i] != '\r'
                  && buf[i] != '\n'; i++)
        {
            if ((unsigned char) buf[i] <= 0x20
                || (unsigned char) buf[i] >= 0x7f)
            {
                *why = "bad request target";
                return -1;
            }
        }

        return 1;
    }

    if (n > MXJ_SYNC_HEAD_MAX) {
        *why = "request head too large";
        return -1;
    }

    req->head_len = n;

    /* the request line: METHOD SP target SP HTTP/1.x */

    p = buf;
    eol = memchr(p, '\n', n);
    line = (size_t) (eol - p);

    if (line > 0 && p[line - 1] == '\r') {
        line--;
    }

    for (k = 0; k < line && p[k] != ' '; k++) {
        if (!isupper((unsigned char) p[k])) {
            *why = "bad request method";
            return -1;
        }
    }

    if (k == 0 || k >= line) {
        *why = "bad request line";
        return -1;
    }

    req->method = p;
    req->method_len = k;
    req->target = p + k + 1;

    for (k = k + 1; k < line && p[k] != ' '; k++) {
        if ((unsigned char) p[k] <= 0x20 || (unsigned char) p[k] >= 0x7f) {
            *why = "bad request target";
            return -1;
        }
    }

    req->target_len = (size_t) (p + k - req->target);

    if (req->target_len == 0 || req->target[0] != '/' || k >= line) {
        *why = "bad request target";
        return -1;
    }

    if (line - k - 1 != 8 || memcmp(p + k + 1, "HTTP/1.", 7) != 0
        || (p[k + 8] != '0' && p[k + 8] != '1'))
    {
        *why = "not HTTP/1.x";
        return -1;
    }

    req->http10 = (p[k + 8] == '0');

    /* the headers */

    p = eol + 1;

    while (p < buf + n) {
        eol = memchr(p, '\n', buf + n - p);
        line = (size_t) (eol - p);

        if (line > 0 && p[line - 1] == '\r') {
            line--;
        }

        if (line == 0) {
            break;
        }

        if (*p == ' ' || *p == '\t') {
            *why = "folded header line";
            return -1;
        }

        for (k = 0; k < line && p[k] != ':'; k++) {
            if ((unsigned char) p[k] <= 0x20 || (unsigned char) p[k] >= 0x7f)
            {
                *why = "bad header name";
                return -1;
            }
        }

        if (k == 0 || k >= line) {
            *why = "bad header line";
            return -1;
        }

        name = p;

        for (vstart = k + 1; vstart < line
                             && (p[vstart] == ' ' || p[vstart] == '\t');
             vstart++)
        {
            /* void */
        }

        for (vend = line; vend > vstart
                          && (p[vend - 1] == ' ' || p[vend - 1] == '\t');
             vend--)
        {
            /* void */
        }

        value = p + vstart;

        if (k == 14 && strncasecmp(name, "content-length", 14) == 0) {
            if (vend == vstart || vend - vstart > 15) {
                *why = "bad Content-Length";
                return -1;
            }

            cl = strtoll(value, &end, 10);

            if (end != p + vend || !isdigit((unsigned char) *value)
                || (req->content_length >= 0 && req->content_length != cl))
            {
                *why = "bad Content-Length";
                return -1;
            }

            req->content_length = cl;

        } else if (k == 17
                   && strncasecmp(name, "transfer-encoding", 17) == 0)
        {
            req->transfer_encoding = 1;

        } else if (k == 6 && strncasecmp(name, "expect", 6) == 0) {
            req->expect_continue = (vend - vstart == 12
                                    && strncasecmp(value, "100-continue", 12)
                                       == 0);

        } else if (k == 13 && strncasecmp(name, "authorization", 13) == 0) {
            if (req->authorization != NULL) {
                *why = "more than one Authorization header";
                return -1;
            }

            req->authorization = value;
            req->authorization_len = vend - vstart;
        }

        p = eol + 1;
    }

    return 0;
}


mxj_sync_as_route_e
mxj_sync_as_route(const mxj_sync_http_req_t *req, char *txn, char *token)
{
    size_t       n, plen, k;
    const char  *path, *query, *q;

    static const char  txn_prefix[] = "/_matrix/app/v1/transactions/";
    static const char  ping[] = "/_matrix/app/v1/ping";

    txn[0] = '\0';
    token[0] = '\0';

    /* the token: the header first, else the query parameter */

    if (req->authorization != NULL) {
        n = req->authorization_len;

        if (n > 7 && strncasecmp(req->authorization, "Bearer ", 7) == 0) {
            for (k = 7; k < n && req->authorization[k] == ' '; k++) {
                /* void */
            }

            if (n - k > 0 && n - k <= MXJ_SYNC_TOKEN_MAX) {
                memcpy(token, req->authorization + k, n - k);
                token[n - k] = '\0';
            }
        }
    }

    path = req->target;
    query = memchr(path, '?', req->target_len);
    plen = query ? (size_t) (query - path) : req->target_len;

    if (req->authorization == NULL && query != NULL) {
        k = 0;

        if (mx_uri_arg_next(query + 1, path + req->target_len - query - 1,
                            &k, "access_token", &q, &n)
            && mxj_sync_unescape(q, n, token, MXJ_SYNC_TOKEN_MAX + 1, 1) != 0)
        {
            token[0] = '\0';
        }
    }

    if (plen == sizeof(ping) - 1 && memcmp(path, ping, plen) == 0) {
        if (req->method_len == 4 && memcmp(req->method, "POST", 4) == 0) {
            return MXJ_SYNC_AS_PING;
        }

        return MXJ_SYNC_AS_BAD_METHOD;
    }

    n = sizeof(txn_prefix) - 1;

    if (plen <= n || memcmp(path, txn_prefix, n) != 0
        || memchr(path + n, '/', plen - n) != NULL)
    {
        return MXJ_SYNC_AS_UNKNOWN;
    }

    if (mxj_sync_unescape(path + n, plen - n, txn, MXJ_SYNC_TXN_MAX + 1, 0)
        != 0 || txn[0] == '\0')
    {
        txn[0] = '\0';
        return MXJ_SYNC_AS_UNKNOWN;
    }

    if (req->method_len != 3 || memcmp(req->method, "PUT", 3) != 0) {
        return MXJ_SYNC_AS_BAD_METHOD;
    }

    return MXJ_SYNC_AS_TRANSACTION;
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
