/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <string.h>

#include "mx_id.h"


#define MX_HOST_MAX_LEN      255     /* dns-name = 1*255dns-char */
#define MX_IPV6_MIN_LEN      2       /* IPv6address = 2*45IPv6char */
#define MX_IPV6_MAX_LEN      45
#define MX_PORT_MAX_DIGITS   5
#define MX_ROOM_HASH_LEN     43      /* url-safe unpadded b64 of sha256 */


static int mx_id_is_digit(char ch);
static int mx_id_is_ipv6_char(char ch);
static int mx_id_is_dns_char(char ch);
static int mx_id_is_url_b64_char(char ch);


/*
 * The grammar of the spec appendix ("Server Name"):
 *   server_name = hostname [ ":" port ]
 *   port        = 1*5DIGIT
 *   hostname    = IPv4address / "[" IPv6address "]" / dns-name
 *   IPv6address = 2*45IPv6char        (DIGIT, A-F, a-f, ":", ".")
 *   dns-name    = 1*255dns-char       (DIGIT, ALPHA, "-", ".")
 * An IPv4address is also a dns-name, so it needs no branch of its own.
 */

int
mx_server_name_valid(const char *s, size_t len)
{
    size_t  i, host_len, port_len;

    if (s == NULL || len == 0) {
        return 0;
    }

    if (s[0] == '[') {
        for (i = 1; i < len && s[i] != ']'; i++) {
            if (!mx_id_is_ipv6_char(s[i])) {
                return 0;
            }
        }

        if (i == len) {
            return 0;               /* no closing bracket */
        }

        if (i - 1 < MX_IPV6_MIN_LEN || i - 1 > MX_IPV6_MAX_LEN) {
            return 0;
        }

        host_len = i + 1;

    } else {
        for (i = 0; i < len && s[i] != ':'; i++) {
            if (!mx_id_is_dns_char(s[i])) {
                return 0;
            }
        }

        if (i == 0 || i > MX_HOST_MAX_LEN) {
            return 0;
        }

        host_len = i;
    }

    if (host_len == len) {
        return 1;
    }

    if (s[host_len] != ':') {
        return 0;
    }

    port_len = len - host_len - 1;

    if (port_len == 0 || port_len > MX_PORT_MAX_DIGITS) {
        return 0;                   /* "localhost:" or a 6+ digit port */
    }

    for (i = host_len + 1; i < len; i++) {
        if (!mx_id_is_digit(s[i])) {
            return 0;               /* "localhost:http" */
        }
    }

    return 1;
}


const char *
mx_id_server(const char *id, size_t len, char sigil, size_t *slen)
{
    const char  *colon;

    if (id == NULL || len == 0 || id[0] != sigil) {
        return NULL;
    }

    colon = memchr(id, ':', len);
    if (colon == NULL) {
        return NULL;
    }

    *slen = len - (size_t) (colon + 1 - id);

    return colon + 1;
}


int
mx_user_id_valid(const char *s, size_t len)
{
    size_t       slen;
    const char  *server;

    if (len > MX_ID_MAX_LEN) {
        return 0;
    }

    server = mx_id_server(s, len, '@', &slen);
    if (server == NULL) {
        return 0;
    }

    /* the localpart is s[1 .. server - 1): ':' cannot occur in it */

    if (server - 1 == s + 1) {
        return 0;
    }

    if (memchr(s, '\0', len) != NULL) {
        return 0;
    }

    return mx_server_name_valid(server, slen);
}


int
mx_room_id_valid(const char *s, size_t len, int allow_hash)
{
    size_t       i, slen;
    const char  *server;

    if (s == NULL || len == 0 || len > MX_ID_MAX_LEN || s[0] != '!') {
        return 0;
    }

    if (memchr(s, '\0', len) != NULL) {
        return 0;
    }

    if (allow_hash && len == 1 + MX_ROOM_HASH_LEN) {
        for (i = 1; i < len; i++) {
            if (!mx_id_is_url_b64_char(s[i])) {
                break;
            }
        }

        if (i == len) {
            return 1;
        }
    }

    server = mx_id_server(s, len, '!', &slen);
    if (server == NULL || server - 1 == s + 1) {
        return 0;
    }

    return mx_server_name_valid(server, slen);
}


static int
mx_id_is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}


static int
mx_id_is_ipv6_char(char ch)
{
    return mx_id_is_digit(ch)
           || (ch >= 'A' && ch <= 'F')
           || (ch >= 'a' && ch <= 'f')
           || ch == ':' || ch == '.';
}


static int
mx_id_is_dns_char(char ch)
{
    return mx_id_is_digit(ch)
           || (ch >= 'A' && ch <= 'Z')
           || (ch >= 'a' && ch <= 'z')
           || ch == '-' || ch == '.';
}


static int
mx_id_is_url_b64_char(char ch)
{
    return mx_id_is_digit(ch)
           || (ch >= 'A' && ch <= 'Z')
           || (ch >= 'a' && ch <= 'z')
           || ch == '-' || ch == '_';
}
