/*
 * Copyright (C) nginx-matrix-join authors.
 * The identifier checks the send_join and make_join path parameters go
 * through: mx_server_name_valid, mx_user_id_valid, mx_room_id_valid (both
 * modes), mx_id_server and mx_key_id_valid, each against an oracle written
 * here from the specification's grammar (appendices, "Server name",
 * "User identifiers", "Room IDs") rather than from the code under test.
 *
 * The decoding around them (splitting the raw URI, percent-decoding with
 * ngx_unescape_uri, omit_members with ngx_http_arg, the event ID's shape)
 * lives in nginx code (src/ngx/ngx_http_matrix_send_join.c) and cannot run
 * without nginx; the integration tests cover it.
 *
 * Input: first byte selects nothing (all checks run on every input); the
 * bytes are the identifier as it would be after percent-decoding.
 */

#include "fuzz_common.h"
#include "mx_id.h"


static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}


static int
oracle_server(const unsigned char *s, size_t len)
{
    /* server_name = hostname [ ":" port ]
     * hostname    = IPv4address / "[" IPv6address "]" / dns-name
     * IPv6address = 2*45IPv6char (0-9 A-F a-f : .)
     * dns-name    = 1*255dns-char (0-9 A-Z a-z - .); IPv4 is a dns-name
     * port        = 1*5DIGIT */
    const unsigned char  *close, *p, *end = s + len;
    size_t                n;

    if (len == 0) {
        return 0;
    }

    if (s[0] == '[') {
        close = memchr(s, ']', len);
        if (close == NULL) {
            return 0;
        }
        n = (size_t) (close - s) - 1;
        if (n < 2 || n > 45) {
            return 0;
        }
        for (p = s + 1; p < close; p++) {
            if (!(is_digit(*p) || (*p >= 'A' && *p <= 'F')
                  || (*p >= 'a' && *p <= 'f') || *p == ':' || *p == '.'))
            {
                return 0;
            }
        }
        p = close + 1;

    } else {
        for (p = s; p < end && *p != ':'; p++) {
            if (!(is_digit(*p) || (*p >= 'A' && *p <= 'Z')
                  || (*p >= 'a' && *p <= 'z') || *p == '-' || *p == '.'))
            {
                return 0;
            }
        }
        n = (size_t) (p - s);
        if (n < 1 || n > 255) {
            return 0;
        }
    }

    if (p == end) {
        return 1;
    }

    if (*p != ':') {
        return 0;
    }

    n = (size_t) (end - p) - 1;
    if (n < 1 || n > 5) {
        return 0;
    }

    for (p++; p < end; p++) {
        if (!is_digit(*p)) {
            return 0;
        }
    }

    return 1;
}


/* "<sigil>localpart:server": non-empty localpart without ':' or NUL,
 * the whole within 255 bytes, a valid server name. */
static int
oracle_sigil_id(const unsigned char *s, size_t len, unsigned char sigil)
{
    size_t  i;

    if (len < 1 || len > 255 || s[0] != sigil
        || memchr(s, '\0', len) != NULL)
    {
        return 0;
    }

    for (i = 1; i < len && s[i] != ':'; i++) {
        /* the localpart */
    }

    if (i == len || i == 1) {
        return 0;
    }

    return oracle_server(s + i + 1, len - i - 1);
}


/* v12 room IDs: "!" + 43 url-safe unpadded base64 characters. */
static int
oracle_hash_room(const unsigned char *s, size_t len)
{
    size_t  i;

    if (len != 44 || s[0] != '!') {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if (!(is_digit(s[i]) || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= 'a' && s[i] <= 'z') || s[i] == '-' || s[i] == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/* Key IDs: "<algorithm>:<version>", the algorithm [a-z0-9_]+; the
 * version's own grammar is only checked as "non-empty" here. */
static int
oracle_key_id_prefix(const unsigned char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len && s[i] != ':'; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || is_digit(s[i]) || s[i] == '_'))
        {
            return 0;
        }
    }

    return i > 0 && i + 1 < len;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char  *s = (const char *) data, *server;
    size_t       slen;
    int          room, room_hash;

    check(mx_server_name_valid(s, size) == oracle_server(data, size));
    check(mx_user_id_valid(s, size) == oracle_sigil_id(data, size, '@'));

    room = mx_room_id_valid(s, size, 0);
    room_hash = mx_room_id_valid(s, size, 1);
    check(room == oracle_sigil_id(data, size, '!'));
    check(room_hash == (room || (oracle_hash_room(data, size)
                                 && memchr(data, '\0', size) == NULL)));

    server = mx_id_server(s, size, size ? s[0] : '@', &slen);
    if (server != NULL) {
        check(size > 0 && server > s && server <= s + size);
        check(server[-1] == ':');
        check(memchr(s, ':', (size_t) (server - s) - 1) == NULL);
        check(slen == (size_t) (s + size - server));
    } else {
        check(size == 0 || memchr(s, ':', size) == NULL);
    }

    if (mx_key_id_valid(s, size)) {
        check(oracle_key_id_prefix(data, size));
    }

    return 0;
}
