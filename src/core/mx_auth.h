/*
 * Copyright (C) nginx-matrix-join authors.
 * The authorisation rules a resident applies to a join, a knock and a
 * leave by oneself (reference §6.2), with the power levels (§6.3), the
 * auth events selection (§6.1), restricted rooms (§6.4) and server ACLs
 * (§6.5), per room version.
 *
 * State is reached through callbacks: the caller (nginx or the CLI)
 * fetches only the few events a decision asks for. Every decision fills an
 * mx_auth_result_t naming, in plain words, the rule that decided it, and
 * the status and errcode a handler answers with.
 */

#ifndef MX_AUTH_H
#define MX_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mx_id.h"
#include "mx_room_version.h"


#define MX_AUTH_EVENTS_MAX   10          /* the PDU schema's cap (§7) */
#define MX_AUTH_KEYS_MAX     5           /* the most a member event selects */
#define MX_AUTH_RULE_LEN     512

/* v12 creators; every other level is clamped below it */
#define MX_POWER_INFINITE    INT64_MAX


/*
 * The current state event (a full PDU object) for (type, state_key), or
 * NULL when the room has none. The returned value must stay valid until
 * the call that asked for it returns.
 */
typedef const json_t *(*mx_state_get_pt)(void *data, const char *type,
    const char *state_key);

/* The event ID of that same current state event, or NULL. It must know
 * the create event in every version, v12 included. */
typedef const char *(*mx_state_id_pt)(void *data, const char *type,
    const char *state_key);

/*
 * Restricted rooms: whether user is joined to the allowed room room_id:
 * 1 joined, 0 not joined, MX_AUTH_ROOM_UNKNOWN when this server is not in
 * that room and cannot tell.
 */
#define MX_AUTH_ROOM_UNKNOWN  (-1)

typedef int (*mx_room_joined_pt)(void *data, const char *room_id,
    const char *user);


typedef enum {
    MX_AUTH_ALLOW = 0,              /* allowed, nothing more needed */
    MX_AUTH_AUTHORISED,             /* restricted join: allowed with the
                                       authoriser in res->authoriser */
    MX_AUTH_FORBIDDEN,              /* 403 M_FORBIDDEN */
    MX_AUTH_BAD_JSON,               /* 400 M_BAD_JSON: malformed event */
    MX_AUTH_UNABLE_TO_AUTHORISE,    /* 400 M_UNABLE_TO_AUTHORISE_JOIN */
    MX_AUTH_UNABLE_TO_GRANT         /* 400 M_UNABLE_TO_GRANT_JOIN */
} mx_auth_e;


typedef struct {
    mx_auth_e       code;
    int             status;         /* 200 when allowed, else 403 / 400 */
    const char     *errcode;        /* NULL when allowed */
    char            rule[MX_AUTH_RULE_LEN];  /* the deciding rule, for the
                                                error body and the log */
    char            authoriser[MX_ID_MAX_LEN + 1];  /* MX_AUTH_AUTHORISED */
} mx_auth_result_t;


/* content.membership of a member event; anything unknown is NONE. */
typedef enum {
    MX_MEMBERSHIP_NONE = 0,
    MX_MEMBERSHIP_JOIN,
    MX_MEMBERSHIP_INVITE,
    MX_MEMBERSHIP_LEAVE,
    MX_MEMBERSHIP_BAN,
    MX_MEMBERSHIP_KNOCK
} mx_membership_e;


typedef struct {
    const char     *type;
    const char     *state_key;
} mx_auth_key_t;


/* What the resident knows about itself, for restricted joins. */
typedef struct {
    const char          *server;        /* our server name */
    const char *const   *local_joined;  /* local users joined to the room,
                                           may be NULL */
    size_t               nlocal;
    mx_room_joined_pt    room_joined;   /* may be NULL: no room known */
    void                *room_data;
} mx_auth_resident_t;


/*
 * Server ACL (§6.5) for server[0..len) (a port is ignored), given the
 * content of the room's m.room.server_acl, or NULL when it has none.
 * Returns 1 when allowed, 0 when denied; res (may be NULL) names the
 * pattern or rule.
 */
int mx_acl_allows(const json_t *acl_content, const char *server, size_t len,
    mx_auth_result_t *res);

/*
 * Power levels (§6.3). A missing or invalid value takes its default;
 * strings count in v1-v9 (as Synapse's int()), only integers from v10.
 * v12 creators have MX_POWER_INFINITE.
 */
int64_t mx_auth_user_power(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *user);
int64_t mx_auth_invite_level(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data);

/* The room creator: content.creator (v1-v10) or the create event's sender
 * (v11+), and in v12 also content.additional_creators. */
int mx_auth_is_creator(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *user);

mx_membership_e mx_auth_membership(mx_state_get_pt get, void *data,
    const char *user);
mx_membership_e mx_membership_parse(const char *s);

/*
 * Auth events selection (§6.1) for a membership event of user about
 * itself (join, knock, leave); authoriser is the join's
 * join_authorised_via_users_server or NULL. Writes the (type, state_key)
 * pairs to reference, if the room has them, and returns their number.
 * The pointers are user, authoriser and constants.
 */
size_t mx_auth_select(const mx_room_version_t *rv, mx_membership_e membership,
    const char *user, const char *authoriser,
    mx_auth_key_t keys[MX_AUTH_KEYS_MAX]);

/*
 * The event IDs of a PDU's auth_events (v1/v2 [id, hashes] pairs or v3+
 * strings) into ids (pointers into refs), *n their number. MX_AUTH_ALLOW
 * or MX_AUTH_BAD_JSON (not a list, a bad entry, more than 10).
 */
mx_auth_e mx_auth_event_refs(const mx_room_version_t *rv, const json_t *refs,
    const char *ids[MX_AUTH_EVENTS_MAX], size_t *n, mx_auth_result_t *res);

/*
 * A received membership event's auth_events against current state: they
 * must be exactly the current state events mx_auth_select picks, each
 * once, nothing else (so the create event in v1-v11, never in v12). The
 * edge is stricter than the spec here: auth events that are not the
 * current ones mean the joiner's template is stale.
 */
mx_auth_e mx_auth_check_auth_events(const mx_room_version_t *rv,
    mx_membership_e membership, const char *user, const char *authoriser,
    const char *const *ids, size_t n, mx_state_id_pt id, void *data,
    mx_auth_result_t *res);

/*
 * The membership rules (§6.2) against current state, the m.federate rule
 * included. The caller checks the event's shape, the sender's origin, the
 * auth events and, in v8+, the authoriser server's signature (rule 2).
 * Return MX_AUTH_ALLOW or a rejection; sender != state_key is 400
 * M_BAD_JSON as residents answer it (§2.2). authoriser may point into
 * res->authoriser (the result of mx_auth_restricted): it is read before
 * res is written, but res->authoriser is emptied on return unless the
 * code is MX_AUTH_AUTHORISED, so a caller that needs the name afterwards
 * copies it first.
 */
mx_auth_e mx_auth_join(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *sender, const char *state_key,
    const char *authoriser, mx_auth_result_t *res);
mx_auth_e mx_auth_knock(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *sender, const char *state_key,
    mx_auth_result_t *res);
mx_auth_e mx_auth_leave(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *sender, const char *state_key,
    mx_auth_result_t *res);

/*
 * The same for a whole m.room.member PDU: checks its shape (400
 * M_BAD_JSON) and applies the join, knock or leave rules by its
 * content.membership; other memberships are rejected.
 */
mx_auth_e mx_auth_member_event(const mx_room_version_t *rv,
    mx_state_get_pt get, void *data, const json_t *ev,
    mx_auth_result_t *res);

/*
 * Restricted rooms (§6.4). The room IDs of the valid allow conditions of a
 * join rules content, malformed ones dropped; up to cap of them written to
 * rooms (pointers into content). Returns how many there are.
 */
size_t mx_auth_allow_rooms(const json_t *join_rules_content,
    const char **rooms, size_t cap);

/*
 * A local user who can authorise a restricted join: of our server,
 * currently joined, power >= the invite level; the highest power wins,
 * then the smallest user ID. MX_AUTH_AUTHORISED with res->authoriser, or
 * MX_AUTH_UNABLE_TO_GRANT.
 */
mx_auth_e mx_auth_pick_authoriser(const mx_room_version_t *rv,
    mx_state_get_pt get, void *data, const mx_auth_resident_t *me,
    mx_auth_result_t *res);

/*
 * What a make_join for user needs in a restricted room: MX_AUTH_ALLOW when
 * no condition applies (the rule is not restricted here, or the user is
 * invited or joined), MX_AUTH_AUTHORISED, MX_AUTH_UNABLE_TO_AUTHORISE,
 * MX_AUTH_UNABLE_TO_GRANT or MX_AUTH_FORBIDDEN. mx_auth_join still has
 * the last word (a banned user, for one).
 */
mx_auth_e mx_auth_restricted(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *user, const mx_auth_resident_t *me,
    mx_auth_result_t *res);

#endif /* MX_AUTH_H */
