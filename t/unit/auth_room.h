/*
 * Copyright (C) nginx-matrix-join authors.
 * A room's current state for the mx_auth tests: events keyed by
 * (type, state_key), each with an "event_id" so that the ID lookup can
 * answer too. Include after <cmocka.h>.
 */

#ifndef AUTH_ROOM_H
#define AUTH_ROOM_H

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "mx_room_version.h"


#define ALICE   "@alice:hs1"        /* the creator, on our server hs1 */
#define BOB     "@bob:remote"       /* the joiner */
#define CAROL   "@carol:hs1"
#define DAVE    "@dave:hs1"


typedef struct {
    const mx_room_version_t  *rv;
    json_t                   *state;    /* "type|state_key" -> PDU */
    int                       serial;
} room_t;


static inline const mx_room_version_t *
version(const char *id)
{
    const mx_room_version_t  *rv;

    rv = mx_room_version(id, strlen(id));
    assert_non_null(rv);

    return rv;
}


/* Sets the current (type, state_key) event; returns it (borrowed). */
static inline json_t *
room_put(room_t *r, const char *type, const char *skey, const char *sender,
    json_t *content)
{
    char     key[600], id[32];
    json_t  *ev;

    snprintf(key, sizeof(key), "%s|%s", type, skey);
    snprintf(id, sizeof(id), "$ev%d", ++r->serial);

    ev = json_pack("{ss ss ss so ss}", "type", type, "state_key", skey,
                   "sender", sender, "content", content, "event_id", id);
    assert_non_null(ev);
    assert_int_equal(json_object_set_new(r->state, key, ev), 0);

    return ev;
}


static inline void
room_del(room_t *r, const char *type, const char *skey)
{
    char  key[600];

    snprintf(key, sizeof(key), "%s|%s", type, skey);
    json_object_del(r->state, key);
}


static inline const json_t *
room_get(void *data, const char *type, const char *skey)
{
    char     key[600];
    room_t  *r = data;

    snprintf(key, sizeof(key), "%s|%s", type, skey);

    return json_object_get(r->state, key);
}


static inline const char *
room_id(void *data, const char *type, const char *skey)
{
    return json_string_value(json_object_get(room_get(data, type, skey),
                                             "event_id"));
}


static inline void
room_member(room_t *r, const char *user, const char *membership)
{
    room_put(r, "m.room.member", user, user,
             json_pack("{ss}", "membership", membership));
}


static inline void
room_join_rule(room_t *r, const char *rule)
{
    room_put(r, "m.room.join_rules", "", ALICE,
             json_pack("{ss}", "join_rule", rule));
}


static inline void
room_power(room_t *r, json_t *content)
{
    room_put(r, "m.room.power_levels", "", ALICE, content);
}


/*
 * A room of version id created by ALICE (content.creator in v1-v10, as
 * the create event of those versions carries), ALICE joined, no power
 * levels and no join rules yet.
 */
static inline void
room_init(room_t *r, const char *id)
{
    json_t  *content;

    r->rv = version(id);
    r->state = json_object();
    r->serial = 0;

    content = json_pack("{ss}", "room_version", id);

    if (!r->rv->creator_is_sender) {
        json_object_set_new(content, "creator", json_string(ALICE));
    }

    room_put(r, "m.room.create", "", ALICE, content);
    room_member(r, ALICE, "join");
}


static inline json_t *
room_create_content(room_t *r)
{
    return json_object_get(room_get(r, "m.room.create", ""), "content");
}


static inline void
room_free(room_t *r)
{
    json_decref(r->state);
    r->state = NULL;
}


/* The deciding rule mentions want. */
#define assert_rule(res, want)                                                \
    do {                                                                      \
        if (strstr((res)->rule, (want)) == NULL) {                            \
            fail_msg("rule \"%s\" does not mention \"%s\"", (res)->rule,      \
                     (want));                                                 \
        }                                                                     \
    } while (0)

#endif /* AUTH_ROOM_H */
