/*
 * Copyright (C) nginx-matrix-join authors.
 * The membership auth rules of reference §6, written from the spec text
 * and cross-checked against Synapse's event_auth.py where the spec leaves
 * a choice (the notes say which).
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mx_auth.h"


#define MX_AUTH_CREATE       "m.room.create"
#define MX_AUTH_PL           "m.room.power_levels"
#define MX_AUTH_JOIN_RULES   "m.room.join_rules"
#define MX_AUTH_MEMBER       "m.room.member"
#define MX_AUTH_AUTHORISER   "join_authorised_via_users_server"

#define MX_POWER_MAX         (INT64_MAX - 1)
#define MX_POWER_MIN         INT64_MIN
#define MX_POWER_CREATOR     100     /* no power levels event, v1-v11 */
#define MX_POWER_STR_LEN     24


typedef enum {
    MX_JR_INVITE = 0,
    MX_JR_PUBLIC,
    MX_JR_KNOCK,
    MX_JR_RESTRICTED,
    MX_JR_KNOCK_RESTRICTED,
    MX_JR_PRIVATE,
    MX_JR_OTHER
} mx_join_rule_e;


/* The best candidate so far of mx_auth_pick_authoriser. */
typedef struct {
    const mx_room_version_t   *rv;
    mx_state_get_pt            get;
    void                      *data;
    const mx_auth_resident_t  *me;
    int64_t                    invite;
    const char                *best;
    int64_t                    best_power;
} mx_auth_pick_t;


static mx_auth_e mx_auth_set(mx_auth_result_t *res, mx_auth_e code,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static const char *mx_auth_str(const json_t *obj, const char *key);
static const json_t *mx_auth_content(const json_t *ev);
static const char *mx_auth_power_str(int64_t v, char buf[MX_POWER_STR_LEN]);
static int mx_auth_level(const mx_room_version_t *rv, const json_t *v,
    int64_t *out);
static int mx_auth_level_str(const char *s, size_t len, int64_t *out);
static int mx_auth_creator(const mx_room_version_t *rv, const json_t *create,
    const char *user);
static int mx_auth_on_server(const char *user, const char *server,
    size_t slen);
static mx_auth_e mx_auth_federate(const json_t *create, const char *sender,
    const char *state_key, mx_auth_result_t *res);
static mx_join_rule_e mx_auth_join_rule(mx_state_get_pt get, void *data,
    const char **name);
static const char *mx_auth_membership_name(mx_membership_e m);
static const char *mx_auth_allow_room(const json_t *entry);
static void mx_auth_consider(mx_auth_pick_t *pk, const char *user);
static size_t mx_acl_host(const char *server, size_t len);
static int mx_acl_ipv4(const char *s, size_t len);
static const char *mx_acl_match(const json_t *list, const char *s,
    size_t len);
static int mx_acl_glob(const char *pat, size_t plen, const char *s,
    size_t len);
static char mx_acl_lower(char ch);


/* Server ACLs */

int
mx_acl_allows(const json_t *acl_content, const char *server, size_t len,
    mx_auth_result_t *res)
{
    size_t         hlen;
    const char    *pat;
    const json_t  *ip;

    if (server == NULL) {
        server = "";
        len = 0;
    }

    if (acl_content == NULL) {
        mx_auth_set(res, MX_AUTH_ALLOW, "no server ACL in the room");
        return 1;
    }

    hlen = mx_acl_host(server, len);

    /* allow_ip_literals defaults to true when missing or not a boolean */

    ip = json_object_get(acl_content, "allow_ip_literals");

    if (json_is_false(ip)
        && ((hlen > 0 && server[0] == '[') || mx_acl_ipv4(server, hlen)))
    {
        mx_auth_set(res, MX_AUTH_FORBIDDEN,
                    "server ACL denies IP literal %.*s "
                    "(allow_ip_literals is false)", (int) hlen, server);
        return 0;
    }

    pat = mx_acl_match(json_object_get(acl_content, "deny"), server, hlen);
    if (pat != NULL) {
        mx_auth_set(res, MX_AUTH_FORBIDDEN,
                    "server ACL denies %.*s (deny \"%s\")",
                    (int) hlen, server, pat);
        return 0;
    }

    pat = mx_acl_match(json_object_get(acl_content, "allow"), server, hlen);
    if (pat != NULL) {
        mx_auth_set(res, MX_AUTH_ALLOW, "server ACL allows %.*s (allow \"%s\")",
                    (int) hlen, server, pat);
        return 1;
    }

    mx_auth_set(res, MX_AUTH_FORBIDDEN,
                "server ACL denies %.*s (no allow pattern matches)",
                (int) hlen, server);
    return 0;
}


/* The host part of "host[:port]" or "[v6][:port]": its length. */

static size_t
mx_acl_host(const char *server, size_t len)
{
    const char  *p;

    if (len > 0 && server[0] == '[') {
        p = memchr(server, ']', len);
        return p ? (size_t) (p - server) + 1 : len;
    }

    p = memchr(server, ':', len);

    return p ? (size_t) (p - server) : len;
}


/* Dotted-quad IPv4: four groups of 1-3 digits, each at most 255. */

static int
mx_acl_ipv4(const char *s, size_t len)
{
    size_t    i, digits, groups;
    unsigned  v;

    digits = 0;
    groups = 0;
    v = 0;

    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (digits == 0 || v > 255) {
                return 0;
            }

            groups++;
            digits = 0;
            v = 0;
            continue;
        }

        if (s[i] < '0' || s[i] > '9' || ++digits > 3) {
            return 0;
        }

        v = v * 10 + (unsigned) (s[i] - '0');
    }

    return groups == 4;
}


/* The first pattern of list matching s, or NULL. A list that is not an
 * array counts as empty; entries that are not strings are skipped. */

static const char *
mx_acl_match(const json_t *list, const char *s, size_t len)
{
    size_t        i;
    const json_t  *e;

    if (!json_is_array(list)) {
        return NULL;
    }

    json_array_foreach(list, i, e) {
        if (json_is_string(e)
            && mx_acl_glob(json_string_value(e), json_string_length(e),
                           s, len))
        {
            return json_string_value(e);
        }
    }

    return NULL;
}


/*
 * Case-insensitive glob: '*' any run, '?' exactly one byte. Iterative:
 * on a mismatch only the last '*' is retried one byte further on, which
 * is enough for '*' and '?' and bounds the work by plen * len, so a
 * pattern like "*a*a*a*a*b" cannot make it exponential.
 */

static int
mx_acl_glob(const char *pat, size_t plen, const char *s, size_t len)
{
    size_t  p, i, star, star_i;
    int     have_star;

    p = 0;
    i = 0;
    star = 0;
    star_i = 0;
    have_star = 0;

    while (i < len) {
        if (p < plen && pat[p] == '*') {
            have_star = 1;
            star = p++;
            star_i = i;

        } else if (p < plen
                   && (pat[p] == '?'
                       || mx_acl_lower(pat[p]) == mx_acl_lower(s[i])))
        {
            p++;
            i++;

        } else if (have_star) {
            p = star + 1;
            i = ++star_i;

        } else {
            return 0;
        }
    }

    while (p < plen && pat[p] == '*') {
        p++;
    }

    return p == plen;
}


static char
mx_acl_lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char) (ch | 0x20) : ch;
}


/* Power levels */

int64_t
mx_auth_user_power(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *user)
{
    int64_t        v;
    const json_t  *create, *pl, *content, *users;

    create = get(data, MX_AUTH_CREATE, "");

    if (rv->creators_infinite_power && mx_auth_creator(rv, create, user)) {
        return MX_POWER_INFINITE;
    }

    pl = get(data, MX_AUTH_PL, "");

    if (pl == NULL) {
        /* no power levels event: the creator 100, everyone else 0 */
        return mx_auth_creator(rv, create, user) ? MX_POWER_CREATOR : 0;
    }

    content = mx_auth_content(pl);

    users = json_object_get(content, "users");

    if (json_is_object(users)
        && mx_auth_level(rv, json_object_get(users, user), &v))
    {
        return v;
    }

    if (mx_auth_level(rv, json_object_get(content, "users_default"), &v)) {
        return v;
    }

    return 0;
}


int64_t
mx_auth_invite_level(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data)
{
    int64_t        v;
    const json_t  *pl;

    pl = get(data, MX_AUTH_PL, "");

    if (pl != NULL
        && mx_auth_level(rv, json_object_get(mx_auth_content(pl), "invite"),
                         &v))
    {
        return v;
    }

    return 0;
}


int
mx_auth_is_creator(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *user)
{
    return mx_auth_creator(rv, get(data, MX_AUTH_CREATE, ""), user);
}


static int
mx_auth_creator(const mx_room_version_t *rv, const json_t *create,
    const char *user)
{
    size_t         i;
    const char    *creator;
    const json_t  *more, *e;

    if (create == NULL || user == NULL) {
        return 0;
    }

    if (rv->creator_is_sender) {
        creator = mx_auth_str(create, "sender");

    } else {
        creator = mx_auth_str(mx_auth_content(create), "creator");
    }

    if (creator != NULL && strcmp(creator, user) == 0) {
        return 1;
    }

    if (!rv->additional_creators) {
        return 0;
    }

    more = json_object_get(mx_auth_content(create), "additional_creators");

    json_array_foreach(more, i, e) {
        if (json_is_string(e) && strcmp(json_string_value(e), user) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * A level value: 1 with *out, or 0 when the default applies (missing,
 * null, or not a level). v10+ accept integers only. Before, Synapse runs
 * int() on the value, so a string with optional whitespace, a sign and
 * digits counts, a boolean is 0 or 1 and a real is truncated.
 */

static int
mx_auth_level(const mx_room_version_t *rv, const json_t *v, int64_t *out)
{
    double      d;
    json_int_t  i;

    if (json_is_integer(v)) {
        i = json_integer_value(v);
        *out = i > MX_POWER_MAX ? MX_POWER_MAX : (int64_t) i;
        return 1;
    }

    if (v == NULL || rv->integer_power_levels) {
        return 0;
    }

    if (json_is_string(v)) {
        return mx_auth_level_str(json_string_value(v), json_string_length(v),
                                 out);
    }

    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 1;
    }

    if (json_is_real(v)) {
        d = json_real_value(v);

        if (!isfinite(d)) {
            return 0;
        }

        if (d >= 9.2e18) {
            *out = MX_POWER_MAX;

        } else if (d <= -9.2e18) {
            *out = MX_POWER_MIN;

        } else {
            *out = (int64_t) d;     /* toward zero, as int() */
        }

        return 1;
    }

    return 0;
}


/*
 * Python's int(str) for base 10 over ASCII: surrounding whitespace, an
 * optional sign, digits with single '_' between them. Out-of-range values
 * are clamped (Python has no range, and only the order matters here).
 */

static int
mx_auth_level_str(const char *s, size_t len, int64_t *out)
{
    int       neg, digits, over;
    size_t    i;
    uint64_t  v;

    i = 0;

    while (i < len && strchr(" \t\n\v\f\r", s[i]) != NULL && s[i] != '\0') {
        i++;
    }

    neg = 0;

    if (i < len && (s[i] == '+' || s[i] == '-')) {
        neg = (s[i] == '-');
        i++;
    }

    v = 0;
    digits = 0;
    over = 0;

    for ( /* void */ ; i < len; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            if (v > (UINT64_MAX - 9) / 10) {
                over = 1;

            } else {
                v = v * 10 + (uint64_t) (s[i] - '0');
            }

            digits++;
            continue;
        }

        if (s[i] == '_' && digits > 0 && i + 1 < len
            && s[i + 1] >= '0' && s[i + 1] <= '9')
        {
            continue;
        }

        break;
    }

    while (i < len && strchr(" \t\n\v\f\r", s[i]) != NULL && s[i] != '\0') {
        i++;
    }

    if (digits == 0 || i != len) {
        return 0;
    }

    if (neg) {
        *out = (over || v > (uint64_t) INT64_MAX) ? MX_POWER_MIN
                                                  : -(int64_t) v;

    } else {
        *out = (over || v > (uint64_t) MX_POWER_MAX) ? MX_POWER_MAX
                                                     : (int64_t) v;
    }

    return 1;
}


/* Membership */

mx_membership_e
mx_membership_parse(const char *s)
{
    if (s == NULL) {
        return MX_MEMBERSHIP_NONE;
    }

    if (strcmp(s, "join") == 0) {
        return MX_MEMBERSHIP_JOIN;
    }

    if (strcmp(s, "invite") == 0) {
        return MX_MEMBERSHIP_INVITE;
    }

    if (strcmp(s, "leave") == 0) {
        return MX_MEMBERSHIP_LEAVE;
    }

    if (strcmp(s, "ban") == 0) {
        return MX_MEMBERSHIP_BAN;
    }

    if (strcmp(s, "knock") == 0) {
        return MX_MEMBERSHIP_KNOCK;
    }

    return MX_MEMBERSHIP_NONE;
}


mx_membership_e
mx_auth_membership(mx_state_get_pt get, void *data, const char *user)
{
    const json_t  *ev;

    if (user == NULL) {
        return MX_MEMBERSHIP_NONE;
    }

    ev = get(data, MX_AUTH_MEMBER, user);
    if (ev == NULL) {
        return MX_MEMBERSHIP_NONE;
    }

    return mx_membership_parse(mx_auth_str(mx_auth_content(ev), "membership"));
}


static const char *
mx_auth_membership_name(mx_membership_e m)
{
    static const char  *names[] = {
        "none", "join", "invite", "leave", "ban", "knock"
    };

    return names[m];
}


/* Auth events selection and checking */

size_t
mx_auth_select(const mx_room_version_t *rv, mx_membership_e membership,
    const char *user, const char *authoriser,
    mx_auth_key_t keys[MX_AUTH_KEYS_MAX])
{
    size_t  n;

    n = 0;

    /* v12: the room ID stands for the create event */

    if (rv->create_in_auth_events) {
        keys[n].type = MX_AUTH_CREATE;
        keys[n++].state_key = "";
    }

    keys[n].type = MX_AUTH_PL;
    keys[n++].state_key = "";

    /* the sender's membership, which is also the target's */

    keys[n].type = MX_AUTH_MEMBER;
    keys[n++].state_key = user;

    if (membership == MX_MEMBERSHIP_JOIN
        || membership == MX_MEMBERSHIP_INVITE
        || membership == MX_MEMBERSHIP_KNOCK)
    {
        keys[n].type = MX_AUTH_JOIN_RULES;
        keys[n++].state_key = "";
    }

    if (rv->restricted && membership == MX_MEMBERSHIP_JOIN
        && authoriser != NULL && strcmp(authoriser, user) != 0)
    {
        keys[n].type = MX_AUTH_MEMBER;
        keys[n++].state_key = authoriser;
    }

    return n;
}


mx_auth_e
mx_auth_event_refs(const mx_room_version_t *rv, const json_t *refs,
    const char *ids[MX_AUTH_EVENTS_MAX], size_t *n, mx_auth_result_t *res)
{
    size_t         i;
    const json_t  *e, *id;

    *n = 0;

    if (!json_is_array(refs)) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON, "auth_events is not a list");
    }

    if (json_array_size(refs) > MX_AUTH_EVENTS_MAX) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "auth_events has %zu entries, more than %d",
                           json_array_size(refs), MX_AUTH_EVENTS_MAX);
    }

    json_array_foreach(refs, i, e) {
        id = e;

        if (rv->event_refs_with_hashes) {
            /* v1/v2: [event_id, {"sha256": ...}] */
            id = (json_array_size(e) == 2
                  && json_is_object(json_array_get(e, 1)))
                 ? json_array_get(e, 0) : NULL;
        }

        if (!json_is_string(id)
            || strlen(json_string_value(id)) != json_string_length(id))
        {
            return mx_auth_set(res, MX_AUTH_BAD_JSON,
                               "auth_events[%zu] is not an event reference",
                               i);
        }

        ids[i] = json_string_value(id);
    }

    *n = json_array_size(refs);

    return mx_auth_set(res, MX_AUTH_ALLOW, "auth_events are well-formed");
}


mx_auth_e
mx_auth_check_auth_events(const mx_room_version_t *rv,
    mx_membership_e membership, const char *user, const char *authoriser,
    const char *const *ids, size_t n, mx_state_id_pt id, void *data,
    mx_auth_result_t *res)
{
    size_t         i, j, k, nkeys;
    const char    *want[MX_AUTH_KEYS_MAX], *create;
    unsigned       found[MX_AUTH_KEYS_MAX];
    mx_auth_key_t  keys[MX_AUTH_KEYS_MAX];

    if (user == NULL) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "member event without sender");
    }

    if (n > MX_AUTH_EVENTS_MAX) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "auth_events has %zu entries, more than %d",
                           n, MX_AUTH_EVENTS_MAX);
    }

    for (i = 0; i < n; i++) {
        for (j = 0; j < i; j++) {
            if (strcmp(ids[i], ids[j]) == 0) {
                return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                                   "auth event %s is listed twice", ids[i]);
            }
        }
    }

    create = id(data, MX_AUTH_CREATE, "");

    if (create == NULL) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "the room has no create event");
    }

    nkeys = mx_auth_select(rv, membership, user, authoriser, keys);

    for (k = 0; k < nkeys; k++) {
        want[k] = id(data, keys[k].type, keys[k].state_key);
        found[k] = 0;
    }

    for (i = 0; i < n; i++) {
        for (k = 0; k < nkeys; k++) {
            if (want[k] != NULL && strcmp(ids[i], want[k]) == 0) {
                found[k] = 1;
                break;
            }
        }

        if (k < nkeys) {
            continue;
        }

        if (!rv->create_in_auth_events && strcmp(ids[i], create) == 0) {
            return mx_auth_set(res, MX_AUTH_BAD_JSON,
                               "room version %s does not list the create "
                               "event in auth_events", rv->id);
        }

        /* another event of a selected pair (not the current one) or an
         * event the selection does not pick: the same answer either way */

        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "auth event %s is not a current state event "
                           "the %s selects", ids[i],
                           mx_auth_membership_name(membership));
    }

    for (k = 0; k < nkeys; k++) {
        if (want[k] != NULL && !found[k]) {
            return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                               "auth_events lack the current %s%s%s",
                               keys[k].type,
                               keys[k].state_key[0] ? " of " : "",
                               keys[k].state_key);
        }
    }

    return mx_auth_set(res, MX_AUTH_ALLOW,
                       "auth_events are the current state events selected");
}


/*
 * What every member event needs first: a sender and a state_key, a create
 * event, and m.federate satisfied for both users.
 */
static mx_auth_e
mx_auth_member_preamble(mx_state_get_pt get, void *data, const char *sender,
    const char *state_key, mx_auth_result_t *res)
{
    const json_t  *create;

    if (sender == NULL || state_key == NULL) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "member event without sender or state_key");
    }

    create = get(data, MX_AUTH_CREATE, "");

    if (create == NULL) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "the room has no create event");
    }

    return mx_auth_federate(create, sender, state_key, res);
}


/* Membership rules */

mx_auth_e
mx_auth_join(const mx_room_version_t *rv, mx_state_get_pt get, void *data,
    const char *sender, const char *state_key, const char *authoriser,
    mx_auth_result_t *res)
{
    char               have[MX_POWER_STR_LEN], need[MX_POWER_STR_LEN];
    int64_t            power, invite;
    const char        *name;
    mx_join_rule_e     rule;
    mx_membership_e    m;
    mx_auth_result_t   tmp;

    if (res == NULL) {
        res = &tmp;
    }

    if (mx_auth_member_preamble(get, data, sender, state_key, res)
        != MX_AUTH_ALLOW)
    {
        return res->code;
    }

    /*
     * The rule "the only prev event is the create event and the state_key
     * is the creator: allow" is not applied: it admits the creator's
     * first join in a new room, and a remote server joining through the
     * edge joins a room that already has state, never at that point.
     */

    /* §2.2: Synapse and GMSL answer 400 M_BAD_JSON, Complement wants 400 */

    if (strcmp(sender, state_key) != 0) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "sender %s is not the state_key %s: "
                           "a user can only join for themselves",
                           sender, state_key);
    }

    m = mx_auth_membership(get, data, state_key);

    if (m == MX_MEMBERSHIP_BAN) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN, "user is banned");
    }

    rule = mx_auth_join_rule(get, data, &name);

    switch (rule) {

    case MX_JR_PUBLIC:
        return mx_auth_set(res, MX_AUTH_ALLOW, "join rule is public");

    case MX_JR_KNOCK:
        if (!rv->knock) {
            break;
        }

        /* fall through */

    case MX_JR_INVITE:
        if (m == MX_MEMBERSHIP_JOIN) {
            return mx_auth_set(res, MX_AUTH_ALLOW,
                               "join rule is %s and the user is already "
                               "joined", name);
        }

        if (m == MX_MEMBERSHIP_INVITE) {
            return mx_auth_set(res, MX_AUTH_ALLOW,
                               "join rule is %s and the user is invited",
                               name);
        }

        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "join rule is %s and the user is not invited",
                           name);

    case MX_JR_RESTRICTED:
    case MX_JR_KNOCK_RESTRICTED:
        if ((rule == MX_JR_RESTRICTED && !rv->restricted)
            || (rule == MX_JR_KNOCK_RESTRICTED && !rv->knock_restricted))
        {
            break;
        }

        if (m == MX_MEMBERSHIP_JOIN || m == MX_MEMBERSHIP_INVITE) {
            return mx_auth_set(res, MX_AUTH_ALLOW,
                               "join rule is %s and the user is already %s",
                               name, m == MX_MEMBERSHIP_JOIN ? "joined"
                                                             : "invited");
        }

        if (authoriser == NULL) {
            return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                               "join rule is %s and the join has no "
                               MX_AUTH_AUTHORISER, name);
        }

        if (mx_auth_membership(get, data, authoriser) != MX_MEMBERSHIP_JOIN) {
            return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                               "join rule is %s and the authorising user %s "
                               "is not joined", name, authoriser);
        }

        power = mx_auth_user_power(rv, get, data, authoriser);
        invite = mx_auth_invite_level(rv, get, data);

        if (power < invite) {
            return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                               "join rule is %s and the authorising user %s "
                               "has power %s, below the invite level %s",
                               name, authoriser, mx_auth_power_str(power, have),
                               mx_auth_power_str(invite, need));
        }

        return mx_auth_set(res, MX_AUTH_ALLOW,
                           "join rule is %s and %s authorised the join",
                           name, authoriser);

    case MX_JR_PRIVATE:
    case MX_JR_OTHER:
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "join rule is %s, which admits no join", name);
    }

    /* knock, restricted or knock_restricted in a version without it */

    return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                       "join rule %s is not supported in room version %s",
                       name, rv->id);
}


mx_auth_e
mx_auth_knock(const mx_room_version_t *rv, mx_state_get_pt get, void *data,
    const char *sender, const char *state_key, mx_auth_result_t *res)
{
    const char        *name;
    mx_join_rule_e     rule;
    mx_membership_e    m;
    mx_auth_result_t   tmp;

    if (res == NULL) {
        res = &tmp;
    }

    if (sender == NULL || state_key == NULL) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "member event without sender or state_key");
    }

    if (!rv->knock) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "knocking is not supported in room version %s",
                           rv->id);
    }

    if (mx_auth_member_preamble(get, data, sender, state_key, res)
        != MX_AUTH_ALLOW)
    {
        return res->code;
    }

    rule = mx_auth_join_rule(get, data, &name);

    if (rule != MX_JR_KNOCK
        && !(rule == MX_JR_KNOCK_RESTRICTED && rv->knock_restricted))
    {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "join rule is %s, which admits no knock", name);
    }

    if (strcmp(sender, state_key) != 0) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "sender %s is not the state_key %s: "
                           "a user can only knock for themselves",
                           sender, state_key);
    }

    m = mx_auth_membership(get, data, state_key);

    switch (m) {

    case MX_MEMBERSHIP_BAN:
        return mx_auth_set(res, MX_AUTH_FORBIDDEN, "user is banned");

    case MX_MEMBERSHIP_INVITE:
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "user is already invited and cannot knock");

    case MX_MEMBERSHIP_JOIN:
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "user is already joined and cannot knock");

    default:
        return mx_auth_set(res, MX_AUTH_ALLOW,
                           "join rule is %s and the user may knock", name);
    }
}


mx_auth_e
mx_auth_leave(const mx_room_version_t *rv, mx_state_get_pt get, void *data,
    const char *sender, const char *state_key, mx_auth_result_t *res)
{
    mx_membership_e   m;
    mx_auth_result_t  tmp;

    if (res == NULL) {
        res = &tmp;
    }

    if (mx_auth_member_preamble(get, data, sender, state_key, res)
        != MX_AUTH_ALLOW)
    {
        return res->code;
    }

    /* a leave for another user is a kick or an unban: not ours to judge */

    if (strcmp(sender, state_key) != 0) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "sender %s is not the state_key %s: "
                           "only a leave by oneself is handled",
                           sender, state_key);
    }

    m = mx_auth_membership(get, data, state_key);

    if (m == MX_MEMBERSHIP_INVITE || m == MX_MEMBERSHIP_JOIN
        || (m == MX_MEMBERSHIP_KNOCK && rv->knock))
    {
        return mx_auth_set(res, MX_AUTH_ALLOW,
                           "user leaves from membership %s",
                           mx_auth_membership_name(m));
    }

    return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                       "user's membership is %s; leaving by oneself needs "
                       "invite, join%s", mx_auth_membership_name(m),
                       rv->knock ? " or knock" : "");
}


mx_auth_e
mx_auth_member_event(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const json_t *ev, mx_auth_result_t *res)
{
    const char     *type, *sender, *state_key, *membership, *authoriser;
    const json_t   *content, *v;

    type = mx_auth_str(ev, "type");

    if (type == NULL || strcmp(type, MX_AUTH_MEMBER) != 0) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "event type is not " MX_AUTH_MEMBER);
    }

    sender = mx_auth_str(ev, "sender");
    state_key = mx_auth_str(ev, "state_key");
    content = json_object_get(ev, "content");

    if (sender == NULL || state_key == NULL || !json_is_object(content)) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "member event without sender, state_key or "
                           "content");
    }

    membership = mx_auth_str(content, "membership");

    if (membership == NULL) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON,
                           "member event without content.membership");
    }

    authoriser = NULL;

    if (rv->restricted) {
        v = json_object_get(content, MX_AUTH_AUTHORISER);
        authoriser = mx_auth_str(content, MX_AUTH_AUTHORISER);

        if (v != NULL && authoriser == NULL) {
            return mx_auth_set(res, MX_AUTH_BAD_JSON,
                               MX_AUTH_AUTHORISER " is not a user ID");
        }
    }

    switch (mx_membership_parse(membership)) {

    case MX_MEMBERSHIP_JOIN:
        return mx_auth_join(rv, get, data, sender, state_key, authoriser,
                            res);

    case MX_MEMBERSHIP_KNOCK:
        return mx_auth_knock(rv, get, data, sender, state_key, res);

    case MX_MEMBERSHIP_LEAVE:
        return mx_auth_leave(rv, get, data, sender, state_key, res);

    default:
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "membership %s is not handled here "
                           "(only join, knock and leave by oneself)",
                           membership);
    }
}


/*
 * Rule 4 of every event: with m.federate false, the sender (and, as
 * Synapse adds for member events, the target) must be on the creator's
 * server. Synapse federates only when m.federate is absent or exactly
 * true; the edge does the same rather than admit what the homeserver
 * would reject.
 */

static mx_auth_e
mx_auth_federate(const json_t *create, const char *sender,
    const char *state_key, mx_auth_result_t *res)
{
    size_t         slen;
    const char    *csender, *server;
    const json_t  *fed;

    fed = json_object_get(mx_auth_content(create), "m.federate");

    /* res is written only on a rejection: the caller's authoriser may
     * live in it */

    if (fed == NULL || json_is_true(fed)) {
        return MX_AUTH_ALLOW;
    }

    csender = mx_auth_str(create, "sender");
    server = csender ? mx_id_server(csender, strlen(csender), '@', &slen)
                     : NULL;

    if (server == NULL) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "m.federate is %s and the create event has no "
                           "valid sender", json_is_false(fed) ? "false"
                                                              : "not true");
    }

    if (!mx_auth_on_server(sender, server, slen)) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "m.federate is %s and %s is not on the creator's "
                           "server %.*s",
                           json_is_false(fed) ? "false" : "not true",
                           sender, (int) slen, server);
    }

    if (!mx_auth_on_server(state_key, server, slen)) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           "m.federate is %s and %s is not on the creator's "
                           "server %.*s",
                           json_is_false(fed) ? "false" : "not true",
                           state_key, (int) slen, server);
    }

    return MX_AUTH_ALLOW;
}


/* The current join rule; no join rules event means invite (Synapse). */

static mx_join_rule_e
mx_auth_join_rule(mx_state_get_pt get, void *data, const char **name)
{
    size_t         i;
    const json_t  *ev, *v;

    static const struct {
        const char      *name;
        mx_join_rule_e   rule;
    } rules[] = {
        { "public", MX_JR_PUBLIC },
        { "invite", MX_JR_INVITE },
        { "knock", MX_JR_KNOCK },
        { "restricted", MX_JR_RESTRICTED },
        { "knock_restricted", MX_JR_KNOCK_RESTRICTED },
        { "private", MX_JR_PRIVATE }
    };

    ev = get(data, MX_AUTH_JOIN_RULES, "");

    if (ev == NULL) {
        *name = "invite (no join rules event)";
        return MX_JR_INVITE;
    }

    v = json_object_get(mx_auth_content(ev), "join_rule");

    if (v == NULL) {
        *name = "invite (join_rule missing)";
        return MX_JR_INVITE;
    }

    if (!json_is_string(v)) {
        *name = "not a string";
        return MX_JR_OTHER;
    }

    *name = json_string_value(v);

    for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        if (strcmp(*name, rules[i].name) == 0) {
            return rules[i].rule;
        }
    }

    return MX_JR_OTHER;
}


/* Restricted rooms */

size_t
mx_auth_allow_rooms(const json_t *join_rules_content, const char **rooms,
    size_t cap)
{
    size_t         i, n;
    const char    *room;
    const json_t  *e;

    n = 0;

    json_array_foreach(json_object_get(join_rules_content, "allow"), i, e) {
        room = mx_auth_allow_room(e);

        if (room == NULL) {
            continue;
        }

        if (n < cap) {
            rooms[n] = room;
        }

        n++;
    }

    return n;
}


/* The room ID of a valid allow condition, or NULL (as Synapse drops). */

static const char *
mx_auth_allow_room(const json_t *entry)
{
    const char  *type;

    if (!json_is_object(entry)) {
        return NULL;
    }

    type = mx_auth_str(entry, "type");

    if (type == NULL || strcmp(type, "m.room_membership") != 0) {
        return NULL;
    }

    return mx_auth_str(entry, "room_id");
}


mx_auth_e
mx_auth_pick_authoriser(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const mx_auth_resident_t *me, mx_auth_result_t *res)
{
    char             need[MX_POWER_STR_LEN];
    size_t           i;
    int64_t          users_default;
    const char      *key;
    const json_t    *create, *pl, *content, *users, *v;
    mx_auth_pick_t   pk;

    if (me == NULL || me->server == NULL) {
        return mx_auth_set(res, MX_AUTH_UNABLE_TO_GRANT,
                           "no local server name to pick an authoriser of");
    }

    pk.rv = rv;
    pk.get = get;
    pk.data = data;
    pk.me = me;
    pk.invite = mx_auth_invite_level(rv, get, data);
    pk.best = NULL;
    pk.best_power = 0;

    /* the creators: infinite power in v12, 100 without power levels */

    create = get(data, MX_AUTH_CREATE, "");
    content = mx_auth_content(create);

    mx_auth_consider(&pk, mx_auth_str(create, "sender"));
    mx_auth_consider(&pk, mx_auth_str(content, "creator"));

    if (rv->additional_creators) {
        json_array_foreach(json_object_get(content, "additional_creators"),
                           i, v)
        {
            mx_auth_consider(&pk, json_string_value(v));
        }
    }

    /* everyone the power levels name */

    pl = get(data, MX_AUTH_PL, "");
    content = mx_auth_content(pl);
    users = json_object_get(content, "users");

    if (json_is_object(users)) {
        json_object_foreach((json_t *) users, key, v) {
            mx_auth_consider(&pk, key);
        }
    }

    /* and when unlisted users are enough, the local joined ones */

    if (pl == NULL || !mx_auth_level(rv, json_object_get(content,
                                                         "users_default"),
                                     &users_default))
    {
        users_default = 0;
    }

    if (pk.invite <= users_default && me->local_joined != NULL) {
        for (i = 0; i < me->nlocal; i++) {
            mx_auth_consider(&pk, me->local_joined[i]);
        }
    }

    if (pk.best == NULL) {
        return mx_auth_set(res, MX_AUTH_UNABLE_TO_GRANT,
                           "no user of %s is joined with power at least "
                           "the invite level %s", me->server,
                           mx_auth_power_str(pk.invite, need));
    }

    if (res != NULL) {
        snprintf(res->authoriser, sizeof(res->authoriser), "%s", pk.best);
    }

    return mx_auth_set(res, MX_AUTH_AUTHORISED, "%s can authorise the join",
                       pk.best);
}


static void
mx_auth_consider(mx_auth_pick_t *pk, const char *user)
{
    int64_t  power;

    if (user == NULL || strlen(user) > MX_ID_MAX_LEN
        || !mx_auth_on_server(user, pk->me->server, strlen(pk->me->server)))
    {
        return;
    }

    if (pk->best != NULL && strcmp(user, pk->best) == 0) {
        return;
    }

    if (mx_auth_membership(pk->get, pk->data, user) != MX_MEMBERSHIP_JOIN) {
        return;
    }

    power = mx_auth_user_power(pk->rv, pk->get, pk->data, user);

    if (power < pk->invite) {
        return;
    }

    if (pk->best == NULL || power > pk->best_power
        || (power == pk->best_power && strcmp(user, pk->best) < 0))
    {
        pk->best = user;
        pk->best_power = power;
    }
}


/*
 * The conditions first, then the authoriser: "unable to grant" means the
 * user qualifies (reference §1). Synapse picks the authoriser first; the
 * two orders differ only when both fail.
 */

mx_auth_e
mx_auth_restricted(const mx_room_version_t *rv, mx_state_get_pt get,
    void *data, const char *user, const mx_auth_resident_t *me,
    mx_auth_result_t *res)
{
    int                r;
    char               who[MX_ID_MAX_LEN + 1];
    size_t             i, n;
    const char        *name, *room, *met, *unknown;
    const json_t      *jr, *e;
    mx_join_rule_e     jrule;
    mx_membership_e    m;
    mx_auth_result_t   tmp;

    if (res == NULL) {
        res = &tmp;
    }

    if (user == NULL) {
        return mx_auth_set(res, MX_AUTH_BAD_JSON, "no user to join");
    }

    jrule = mx_auth_join_rule(get, data, &name);

    if (!(jrule == MX_JR_RESTRICTED && rv->restricted)
        && !(jrule == MX_JR_KNOCK_RESTRICTED && rv->knock_restricted))
    {
        return mx_auth_set(res, MX_AUTH_ALLOW,
                           "join rule is %s: no restricted condition "
                           "applies", name);
    }

    m = mx_auth_membership(get, data, user);

    if (m == MX_MEMBERSHIP_JOIN || m == MX_MEMBERSHIP_INVITE) {
        return mx_auth_set(res, MX_AUTH_ALLOW,
                           "user is already %s: no condition needed",
                           m == MX_MEMBERSHIP_JOIN ? "joined" : "invited");
    }

    jr = get(data, MX_AUTH_JOIN_RULES, "");
    met = NULL;
    unknown = NULL;
    n = 0;

    json_array_foreach(json_object_get(mx_auth_content(jr), "allow"), i, e) {
        room = mx_auth_allow_room(e);

        if (room == NULL) {
            continue;
        }

        n++;

        r = (me != NULL && me->room_joined != NULL)
            ? me->room_joined(me->room_data, room, user)
            : MX_AUTH_ROOM_UNKNOWN;

        if (r == 1) {
            met = room;
            break;
        }

        if (r == MX_AUTH_ROOM_UNKNOWN && unknown == NULL) {
            unknown = room;
        }
    }

    if (met == NULL && unknown != NULL) {
        return mx_auth_set(res, MX_AUTH_UNABLE_TO_AUTHORISE,
                           "this server is not in the allowed room %s and "
                           "cannot check the user's membership there",
                           unknown);
    }

    if (met == NULL) {
        return mx_auth_set(res, MX_AUTH_FORBIDDEN,
                           n ? "join rule is %s and the user is not joined "
                               "to any allowed room"
                             : "join rule is %s with no valid allow "
                               "condition and the user is not invited",
                           name);
    }

    if (mx_auth_pick_authoriser(rv, get, data, me, res)
        != MX_AUTH_AUTHORISED)
    {
        return res->code;
    }

    snprintf(who, sizeof(who), "%s", res->authoriser);

    return mx_auth_set(res, MX_AUTH_AUTHORISED,
                       "user is joined to the allowed room %s; %s "
                       "authorises", met, who);
}


/* Helpers */

static mx_auth_e
mx_auth_set(mx_auth_result_t *res, mx_auth_e code, const char *fmt, ...)
{
    va_list  args;

    if (res == NULL) {
        return code;
    }

    res->code = code;

    switch (code) {

    case MX_AUTH_ALLOW:
    case MX_AUTH_AUTHORISED:
        res->status = 200;
        res->errcode = NULL;
        break;

    case MX_AUTH_FORBIDDEN:
        res->status = 403;
        res->errcode = "M_FORBIDDEN";
        break;

    case MX_AUTH_BAD_JSON:
        res->status = 400;
        res->errcode = "M_BAD_JSON";
        break;

    case MX_AUTH_UNABLE_TO_AUTHORISE:
        res->status = 400;
        res->errcode = "M_UNABLE_TO_AUTHORISE_JOIN";
        break;

    case MX_AUTH_UNABLE_TO_GRANT:
        res->status = 400;
        res->errcode = "M_UNABLE_TO_GRANT_JOIN";
        break;
    }

    /* after formatting: an argument may be res->authoriser itself */

    va_start(args, fmt);
    vsnprintf(res->rule, sizeof(res->rule), fmt, args);
    va_end(args);

    if (code != MX_AUTH_AUTHORISED) {
        res->authoriser[0] = '\0';
    }

    return code;
}


/* obj[key] when it is a string without NUL inside, else NULL. */

static const char *
mx_auth_str(const json_t *obj, const char *key)
{
    const json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v)
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        return NULL;
    }

    return json_string_value(v);
}


static const json_t *
mx_auth_content(const json_t *ev)
{
    const json_t  *c;

    c = json_object_get(ev, "content");

    return json_is_object(c) ? c : NULL;
}


static const char *
mx_auth_power_str(int64_t v, char buf[MX_POWER_STR_LEN])
{
    if (v == MX_POWER_INFINITE) {
        return "infinite";
    }

    snprintf(buf, MX_POWER_STR_LEN, "%lld", (long long) v);

    return buf;
}


/* Server names compare case-sensitively (reference §7). */

static int
mx_auth_on_server(const char *user, const char *server, size_t slen)
{
    size_t       ulen;
    const char  *s;

    if (user == NULL) {
        return 0;
    }

    s = mx_id_server(user, strlen(user), '@', &ulen);

    return s != NULL && ulen == slen && memcmp(s, server, slen) == 0;
}
