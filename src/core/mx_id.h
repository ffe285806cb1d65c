/*
 * Copyright (C) nginx-matrix-join authors.
 * Identifier grammar: server names, user/room/event IDs (spec appendix).
 */

#ifndef MX_ID_H
#define MX_ID_H

#include <stddef.h>

#define MX_ID_MAX_LEN  255     /* bytes, for user, room, event IDs, aliases */

/*
 * Server name: host [":" port]; host is a DNS name ([A-Za-z0-9.-], 1-255),
 * an IPv4 literal, or "[" IPv6 literal "]"; port is 1-5 digits.
 * "localhost:http" is invalid.
 */
int mx_server_name_valid(const char *s, size_t len);

/*
 * For "<sigil>localpart:server" identifiers: returns a pointer to the
 * server part (after the first ':') and its length in *slen, or NULL when
 * there is no ':' or the sigil differs. Does not validate the server.
 */
const char *mx_id_server(const char *id, size_t len, char sigil,
    size_t *slen);

/* True for a user ID "@local:server" within 255 bytes, valid server name,
 * localpart non-empty and free of NUL and ':' (historical IDs accepted). */
int mx_user_id_valid(const char *s, size_t len);

/* True for "!opaque:server" (v1-v11) or, with allow_hash, "!" + 43 url-safe
 * base64 characters (v12); within 255 bytes. */
int mx_room_id_valid(const char *s, size_t len, int allow_hash);

#endif /* MX_ID_H */
