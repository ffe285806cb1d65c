/*
 * Copyright (C) nginx-matrix-join authors.
 * The membership auth rules of reference §6.2 and the power levels of
 * §6.3, written from the reference, for each version column where a rule
 * changes: v1, v6, v7, v8, v9, v10, v11, v12.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_auth.h"
#include "auth_room.h"


static const char  *all_versions[] = {
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"
};

#define NVERSIONS  (sizeof(all_versions) / sizeof(all_versions[0]))


/* sender == state_key == user */
static void
check_join(room_t *r, const char *user, const char *authoriser,
    mx_auth_e code, const char *rule)
{
    mx_auth_result_t  res;

    memset(&res, 0xa5, sizeof(res));

    if (mx_auth_join(r->rv, room_get, r, user, user, authoriser, &res)
        != code)
    {
        fail_msg("v%s join of %s: got %d (%s), want %d", r->rv->id, user,
                 res.code, res.rule, code);
    }

    assert_int_equal(res.code, code);
    assert_rule(&res, rule);

    switch (code) {

    case MX_AUTH_ALLOW:
        assert_int_equal(res.status, 200);
        assert_null(res.errcode);
        break;

    case MX_AUTH_FORBIDDEN:
        assert_int_equal(res.status, 403);
        assert_string_equal(res.errcode, "M_FORBIDDEN");
        break;

    case MX_AUTH_BAD_JSON:
        assert_int_equal(res.status, 400);
        assert_string_equal(res.errcode, "M_BAD_JSON");
        break;

    default:
        fail_msg("unexpected code %d", code);
    }
}


/*
 * The join rules without an authoriser's power: a room of each version
 * from v_from to v_to with only ALICE joined, the join rules content
 * (NULL: no join rules event) and BOB's membership (NULL: none); BOB
 * joins, authorised via authoriser. One cmocka test per row.
 */

typedef struct {
    const char  *name;
    int          v_from;
    int          v_to;
    const char  *join_rules;    /* the content, JSON */
    const char  *bob;
    const char  *authoriser;
    mx_auth_e    code;
    const char  *rule;
} join_case_t;


#define JR(rule)  "{\"join_rule\": \"" rule "\"}"


static const join_case_t  join_cases[] = {

    { "public", 1, 12, JR("public"), NULL, NULL, MX_AUTH_ALLOW,
      "join rule is public" },
    /* the authoriser field changes nothing in a public room */
    { "public, an authoriser", 1, 12, JR("public"), NULL, CAROL,
      MX_AUTH_ALLOW, "public" },
    { "public, left", 1, 12, JR("public"), "leave", NULL, MX_AUTH_ALLOW,
      "public" },
    { "public, banned", 1, 12, JR("public"), "ban", NULL, MX_AUTH_FORBIDDEN,
      "user is banned" },

    { "invite, not invited", 1, 12, JR("invite"), NULL, NULL,
      MX_AUTH_FORBIDDEN, "join rule is invite and the user is not invited" },
    { "invite, left", 1, 12, JR("invite"), "leave", NULL, MX_AUTH_FORBIDDEN,
      "not invited" },
    { "invite, invited", 1, 12, JR("invite"), "invite", NULL, MX_AUTH_ALLOW,
      "invited" },
    /* a join after a join is fine */
    { "invite, already joined", 1, 12, JR("invite"), "join", NULL,
      MX_AUTH_ALLOW, "already joined" },
    { "invite, knocked", 1, 12, JR("invite"), "knock", NULL,
      MX_AUTH_FORBIDDEN, "not invited" },

    /* no m.room.join_rules event: treated as invite */
    { "no join rules", 1, 12, NULL, NULL, NULL, MX_AUTH_FORBIDDEN,
      "not invited" },
    { "no join rules, invited", 1, 12, NULL, "invite", NULL, MX_AUTH_ALLOW,
      "invited" },
    /* a join rules event without join_rule is invite too */
    { "join rules without join_rule", 10, 10, "{}", NULL, NULL,
      MX_AUTH_FORBIDDEN, "not invited" },

    /* v6 has no knock: the rule admits no one, invited or not */
    { "v6 knock", 6, 6, JR("knock"), NULL, NULL, MX_AUTH_FORBIDDEN,
      "join rule knock is not supported in room version 6" },
    { "v6 knock, invited", 6, 6, JR("knock"), "invite", NULL,
      MX_AUTH_FORBIDDEN, "not supported" },
    /* v7+: a join needs an invite, as under invite */
    { "v7 knock", 7, 7, JR("knock"), NULL, NULL, MX_AUTH_FORBIDDEN,
      "join rule is knock and the user is not invited" },
    { "v7 knock, knocked", 7, 7, JR("knock"), "knock", NULL,
      MX_AUTH_FORBIDDEN, "not invited" },
    { "v7 knock, invited", 7, 7, JR("knock"), "invite", NULL, MX_AUTH_ALLOW,
      "invited" },
    { "v7 knock, already joined", 7, 7, JR("knock"), "join", NULL,
      MX_AUTH_ALLOW, "already joined" },
    { "v12 knock", 12, 12, JR("knock"), NULL, NULL, MX_AUTH_FORBIDDEN,
      "not invited" },

    { "private", 1, 12, JR("private"), NULL, NULL, MX_AUTH_FORBIDDEN,
      "join rule is private, which admits no join" },
    /* rule 9 rejects whatever the membership */
    { "private, invited", 1, 12, JR("private"), "invite", NULL,
      MX_AUTH_FORBIDDEN, "private" },
    { "private, joined", 1, 12, JR("private"), "join", NULL,
      MX_AUTH_FORBIDDEN, "private" },
    { "an unknown rule", 1, 12, JR("open_sesame"), "join", ALICE,
      MX_AUTH_FORBIDDEN, "join rule is open_sesame" },
    { "a rule that is not a string", 1, 12, "{\"join_rule\": 1}", "join",
      NULL, MX_AUTH_FORBIDDEN, "not a string" },
};


static void
test_join_case(void **state)
{
    const join_case_t *c = *state;

    int            v;
    char           id[4];
    json_t        *content;
    room_t         r;
    json_error_t   e;

    for (v = c->v_from; v <= c->v_to; v++) {
        snprintf(id, sizeof(id), "%d", v);
        room_init(&r, id);

        if (c->join_rules != NULL) {
            content = json_loads(c->join_rules, 0, &e);
            if (content == NULL) {
                fail_msg("bad test JSON %s: %s", c->join_rules, e.text);
            }

            room_put(&r, "m.room.join_rules", "", ALICE, content);
        }

        if (c->bob != NULL) {
            room_member(&r, BOB, c->bob);
        }

        check_join(&r, BOB, c->authoriser, c->code, c->rule);

        room_free(&r);
    }
}


/* A v8+ restricted room where ALICE (100) and CAROL (0) are joined. */
static void
restricted_room(room_t *r, const char *id, const char *rule, int invite)
{
    room_init(r, id);
    room_put(r, "m.room.join_rules", "", ALICE,
             json_pack("{ss s[{ss ss}]}", "join_rule", rule, "allow",
                       "type", "m.room_membership",
                       "room_id", "!space:hs1"));
    room_power(r, json_pack("{s{si} si}", "users", ALICE, 100,
                            "invite", invite));
    room_member(r, CAROL, "join");
}


/*
 * Restricted rooms: restricted_room() of version v, join rule rule and
 * invite level invite, DAVE's and BOB's memberships (NULL: none); BOB
 * joins, authorised via authoriser. One cmocka test per row.
 */

typedef struct {
    const char  *name;
    const char  *v;
    const char  *join_rule;
    int          invite;
    const char  *dave;
    const char  *bob;
    const char  *authoriser;
    mx_auth_e    code;
    const char  *rule;
} restricted_case_t;


static const restricted_case_t  restricted_cases[] = {

    { "restricted: authorised", "8", "restricted", 0, NULL, NULL, ALICE,
      MX_AUTH_ALLOW, ALICE " authorised the join" },
    { "restricted: no authoriser", "8", "restricted", 0, NULL, NULL, NULL,
      MX_AUTH_FORBIDDEN, "join rule is restricted and the join has no "
      "join_authorised_via_users_server" },
    /* the authoriser must be currently joined */
    { "restricted: authoriser not a member", "8", "restricted", 0, NULL,
      NULL, DAVE, MX_AUTH_FORBIDDEN,
      "authorising user " DAVE " is not joined" },
    { "restricted: authoriser invited", "8", "restricted", 0, "invite", NULL,
      DAVE, MX_AUTH_FORBIDDEN, "is not joined" },
    { "restricted: authoriser left", "8", "restricted", 0, "leave", NULL,
      DAVE, MX_AUTH_FORBIDDEN, "is not joined" },
    /* at the invite level (0) */
    { "restricted: authoriser at the invite level", "8", "restricted", 0,
      "leave", NULL, CAROL, MX_AUTH_ALLOW, "authorised" },
    /* an invited or joined user needs no authoriser */
    { "restricted: invited", "8", "restricted", 0, "leave", "invite", NULL,
      MX_AUTH_ALLOW,
      "join rule is restricted and the user is already invited" },
    { "restricted: already joined", "8", "restricted", 0, "leave", "join",
      NULL, MX_AUTH_ALLOW, "already joined" },
    { "restricted: banned", "8", "restricted", 0, "leave", "ban", ALICE,
      MX_AUTH_FORBIDDEN, "user is banned" },
    /* below the invite level */
    { "v8 restricted: authoriser below the invite level", "8", "restricted",
      50, NULL, NULL, CAROL, MX_AUTH_FORBIDDEN,
      "authorising user " CAROL " has power 0, below the invite level 50" },
    { "v8 restricted: authoriser above the invite level", "8", "restricted",
      50, NULL, NULL, ALICE, MX_AUTH_ALLOW, "authorised" },
    { "v9 restricted: authoriser above the invite level", "9", "restricted",
      50, NULL, NULL, ALICE, MX_AUTH_ALLOW, "authorised" },
    { "v9 restricted: authoriser below the invite level", "9", "restricted",
      50, NULL, NULL, CAROL, MX_AUTH_FORBIDDEN, "below the invite level" },
    /* v7 has no restricted rooms: the rule admits no one */
    { "v7 restricted", "7", "restricted", 0, NULL, NULL, ALICE,
      MX_AUTH_FORBIDDEN,
      "join rule restricted is not supported in room version 7" },
    { "v7 restricted, invited", "7", "restricted", 0, NULL, "invite", NULL,
      MX_AUTH_FORBIDDEN, "not supported" },
    { "v1 restricted", "1", "restricted", 0, NULL, NULL, ALICE,
      MX_AUTH_FORBIDDEN, "not supported" },

    { "v9 knock_restricted", "9", "knock_restricted", 0, NULL, NULL, ALICE,
      MX_AUTH_FORBIDDEN,
      "join rule knock_restricted is not supported in room version 9" },
    { "v9 knock_restricted, invited", "9", "knock_restricted", 0, NULL,
      "invite", NULL, MX_AUTH_FORBIDDEN, "not supported" },
    { "v10 knock_restricted: authorised", "10", "knock_restricted", 50, NULL,
      NULL, ALICE, MX_AUTH_ALLOW, "authorised" },
    { "v10 knock_restricted: no authoriser", "10", "knock_restricted", 50,
      NULL, NULL, NULL, MX_AUTH_FORBIDDEN,
      "no join_authorised_via_users_server" },
    { "v10 knock_restricted: below the invite level", "10",
      "knock_restricted", 50, NULL, NULL, CAROL, MX_AUTH_FORBIDDEN,
      "below the invite level" },
    { "v10 knock_restricted: invited", "10", "knock_restricted", 50, NULL,
      "invite", NULL, MX_AUTH_ALLOW, "already invited" },
    { "v11 knock_restricted: at the invite level", "11", "knock_restricted",
      0, NULL, NULL, CAROL, MX_AUTH_ALLOW, "authorised" },
};


static void
test_restricted_case(void **state)
{
    const restricted_case_t *c = *state;

    room_t  r;

    restricted_room(&r, c->v, c->join_rule, c->invite);

    if (c->dave != NULL) {
        room_member(&r, DAVE, c->dave);
    }

    if (c->bob != NULL) {
        room_member(&r, BOB, c->bob);
    }

    check_join(&r, BOB, c->authoriser, c->code, c->rule);

    room_free(&r);
}


static void
test_sender_not_state_key(void **state)
{
    room_t            r;
    mx_auth_result_t  res;

    room_init(&r, "10");
    room_join_rule(&r, "public");

    assert_int_equal(mx_auth_join(r.rv, room_get, &r, ALICE, BOB, NULL,
                                  &res), MX_AUTH_BAD_JSON);
    assert_int_equal(res.status, 400);
    assert_string_equal(res.errcode, "M_BAD_JSON");
    assert_rule(&res, "sender " ALICE " is not the state_key " BOB);

    room_free(&r);
}


static void
test_federate(void **state)
{
    size_t            i;
    room_t            r;
    mx_auth_result_t  res;

    for (i = 0; i < NVERSIONS; i++) {
        room_init(&r, all_versions[i]);
        room_join_rule(&r, "public");
        json_object_set_new(room_create_content(&r), "m.federate",
                            json_false());

        check_join(&r, BOB, NULL, MX_AUTH_FORBIDDEN,
                   "m.federate is false and " BOB " is not on the "
                   "creator's server hs1");

        /* a user of the creator's server may join */
        check_join(&r, CAROL, NULL, MX_AUTH_ALLOW, "public");

        /* the target's domain counts too (Synapse) */
        assert_int_equal(mx_auth_join(r.rv, room_get, &r, CAROL, BOB, NULL,
                                      &res), MX_AUTH_FORBIDDEN);
        assert_rule(&res, "m.federate");

        json_object_set_new(room_create_content(&r), "m.federate",
                            json_true());
        check_join(&r, BOB, NULL, MX_AUTH_ALLOW, "public");

        room_free(&r);
    }

    /* the server name must match exactly, port and all */
    room_init(&r, "10");
    room_join_rule(&r, "public");
    json_object_set_new(room_create_content(&r), "m.federate", json_false());
    check_join(&r, "@bob:hs1:8448", NULL, MX_AUTH_FORBIDDEN, "m.federate");
    check_join(&r, "@bob:HS1", NULL, MX_AUTH_FORBIDDEN, "m.federate");

    /* not a boolean: Synapse federates only on a literal true */
    json_object_set_new(room_create_content(&r), "m.federate",
                        json_string("true"));
    check_join(&r, BOB, NULL, MX_AUTH_FORBIDDEN, "m.federate is not true");
    room_free(&r);
}


static void
test_no_create(void **state)
{
    room_t  r;

    room_init(&r, "10");
    room_join_rule(&r, "public");
    room_del(&r, "m.room.create", "");

    check_join(&r, BOB, NULL, MX_AUTH_FORBIDDEN, "no create event");

    room_free(&r);
}


/* Power levels (§6.3) */

static void
test_power_no_event(void **state)
{
    room_t  r;

    /* v1-v10: the creator is content.creator, whoever sent the event */
    room_init(&r, "1");
    assert_true(mx_auth_user_power(r.rv, room_get, &r, ALICE) == 100);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, BOB) == 0);
    assert_true(mx_auth_invite_level(r.rv, room_get, &r) == 0);
    assert_true(mx_auth_is_creator(r.rv, room_get, &r, ALICE));
    room_free(&r);

    room_init(&r, "10");
    json_object_set_new(room_create_content(&r), "creator",
                        json_string(CAROL));
    assert_true(mx_auth_user_power(r.rv, room_get, &r, CAROL) == 100);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, ALICE) == 0);
    assert_false(mx_auth_is_creator(r.rv, room_get, &r, ALICE));
    room_free(&r);

    /* v11: the create event's sender; content.creator means nothing */
    room_init(&r, "11");
    json_object_set_new(room_create_content(&r), "creator",
                        json_string(CAROL));
    assert_true(mx_auth_user_power(r.rv, room_get, &r, ALICE) == 100);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, CAROL) == 0);
    assert_true(mx_auth_is_creator(r.rv, room_get, &r, ALICE));
    assert_false(mx_auth_is_creator(r.rv, room_get, &r, CAROL));
    room_free(&r);

    /* v12: creators have infinite power */
    room_init(&r, "12");
    assert_true(mx_auth_user_power(r.rv, room_get, &r, ALICE)
                == MX_POWER_INFINITE);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, BOB) == 0);
    room_free(&r);
}


/*
 * Power levels by the content of m.room.power_levels: a user's level
 * (user NULL: the invite level) in a room of version v where ALICE
 * created the room and sent the event. One cmocka test per row.
 */

typedef struct {
    const char  *name;
    const char  *v;
    const char  *content;       /* JSON */
    const char  *user;
    long long    power;
} power_case_t;


#define V9_STRINGS                                                            \
    "{\"users\": {\"@a:x\": \"50\", \"@b:x\": \" +7 \", \"@c:x\": \"-3\","  \
    " \"@d:x\": \"1_000\", \"@e:x\": \"abc\", \"@f:x\": \"5.0\","            \
    " \"@g:x\": \"\"}, \"users_default\": \"20\", \"invite\": \"25\"}"
#define V9_BAD_STRINGS                                                        \
    "{\"users\": {\"@a:x\": \"1__0\", \"@b:x\": \"_1\", \"@c:x\": \"1_\","   \
    " \"@d:x\": \"+ 5\"}, \"users_default\": \"x\"}"
#define LEVELS                                                                \
    "{\"users\": {\"" ALICE "\": 100, \"" CAROL "\": -5},"                    \
    " \"users_default\": 10, \"invite\": 50}"
#define V10_STRINGS                                                           \
    "{\"users\": {\"@a:x\": \"50\", \"@b:x\": 40}, \"users_default\": \"20\"," \
    " \"invite\": \"25\"}"
#define V10_OTHERS                                                            \
    "{\"users\": {\"@a:x\": true, \"@b:x\": 50.0}, \"users_default\": 5}"
#define V1_REALS                                                              \
    "{\"users\": {\"@a:x\": 50.7, \"@b:x\": -2.5, \"@c:x\": true},"          \
    " \"users_default\": 9}"


static const power_case_t  power_cases[] = {

    /* an empty event: users_default 0, invite 0, creator not special */
    { "empty: the creator", "10", "{}", ALICE, 0 },
    { "empty: invite", "10", "{}", NULL, 0 },
    { "levels: a user", "10", LEVELS, ALICE, 100 },
    { "levels: a negative user", "10", LEVELS, CAROL, -5 },
    { "levels: users_default", "10", LEVELS, BOB, 10 },
    { "levels: invite", "10", LEVELS, NULL, 50 },
    /* null is absent (Synapse: .get() returns None) */
    { "a null user level is absent", "10",
      "{\"users\": {\"" BOB "\": null}, \"users_default\": 7}", BOB, 7 },
    { "users not an object", "10",
      "{\"users\": [\"" BOB "\"], \"users_default\": 3}", BOB, 3 },

    /* v9: strings count as Python's int() reads them */
    { "v9 string: digits", "9", V9_STRINGS, "@a:x", 50 },
    { "v9 string: spaces and plus", "9", V9_STRINGS, "@b:x", 7 },
    { "v9 string: minus", "9", V9_STRINGS, "@c:x", -3 },
    { "v9 string: underscore", "9", V9_STRINGS, "@d:x", 1000 },
    { "v9 string: letters take the default", "9", V9_STRINGS, "@e:x", 20 },
    { "v9 string: a real takes the default", "9", V9_STRINGS, "@f:x", 20 },
    { "v9 string: empty takes the default", "9", V9_STRINGS, "@g:x", 20 },
    { "v9 string: users_default", "9", V9_STRINGS, "@z:x", 20 },
    { "v9 string: invite", "9", V9_STRINGS, NULL, 25 },
    { "v9 string: two underscores", "9", V9_BAD_STRINGS, "@a:x", 0 },
    { "v9 string: a leading underscore", "9", V9_BAD_STRINGS, "@b:x", 0 },
    { "v9 string: a trailing underscore", "9", V9_BAD_STRINGS, "@c:x", 0 },
    { "v9 string: a space after the sign", "9", V9_BAD_STRINGS, "@d:x", 0 },

    /* v10: integers only, anything else takes the default */
    { "v10 string: the default", "10", V10_STRINGS, "@a:x", 0 },
    { "v10 integer", "10", V10_STRINGS, "@b:x", 40 },
    { "v10 string invite: the default", "10", V10_STRINGS, NULL, 0 },
    { "v10 boolean: the default", "10", V10_OTHERS, "@a:x", 5 },
    { "v10 real: the default", "10", V10_OTHERS, "@b:x", 5 },

    /* v1 events may carry reals and booleans: int() truncates, True is 1 */
    { "v1 real truncated", "1", V1_REALS, "@a:x", 50 },
    { "v1 negative real truncated", "1", V1_REALS, "@b:x", -2 },
    { "v1 true is 1", "1", V1_REALS, "@c:x", 1 },
};


static void
test_power_case(void **state)
{
    const power_case_t *c = *state;

    long long      got;
    json_t        *content;
    room_t         r;
    json_error_t   e;

    room_init(&r, c->v);

    content = json_loads(c->content, 0, &e);
    if (content == NULL) {
        fail_msg("bad test JSON %s: %s", c->content, e.text);
    }

    room_power(&r, content);

    got = c->user ? mx_auth_user_power(r.rv, room_get, &r, c->user)
                  : mx_auth_invite_level(r.rv, room_get, &r);

    if (got != c->power) {
        fail_msg("v%s %s: power %lld, want %lld", c->v,
                 c->user ? c->user : "invite", got, c->power);
    }

    room_free(&r);
}


/* v9: huge strings keep their order */
static void
test_power_huge_strings(void **state)
{
    room_t  r;

    room_init(&r, "9");
    room_power(&r, json_pack("{s{ss ss}}", "users",
                             "@a:x", "99999999999999999999999",
                             "@b:x", "-99999999999999999999999"));
    assert_true(mx_auth_user_power(r.rv, room_get, &r, "@a:x")
                > 9007199254740991LL);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, "@a:x")
                < MX_POWER_INFINITE);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, "@b:x")
                < -9007199254740991LL);
    room_free(&r);
}


/* The string levels decide a restricted join in v9 and not in v10. */
static void
test_power_strings_join(void **state)
{
    room_t  r;

    restricted_room(&r, "9", "restricted", 0);
    room_power(&r, json_pack("{s{ss} ss}", "users", CAROL, "60",
                             "invite", "50"));
    check_join(&r, BOB, CAROL, MX_AUTH_ALLOW, "authorised");
    room_free(&r);

    restricted_room(&r, "10", "restricted", 0);
    room_power(&r, json_pack("{s{ss} si}", "users", CAROL, "60",
                             "invite", 50));
    check_join(&r, BOB, CAROL, MX_AUTH_FORBIDDEN,
               "has power 0, below the invite level 50");
    room_free(&r);
}


static void
test_power_v12_creators(void **state)
{
    room_t  r;

    room_init(&r, "12");
    json_object_set_new(room_create_content(&r), "additional_creators",
                        json_pack("[s i]", CAROL, 5));
    room_power(&r, json_pack("{s{si} si sI}", "users", DAVE, 100,
                             "users_default", 0,
                             "invite", (json_int_t) 9007199254740991LL));

    assert_true(mx_auth_user_power(r.rv, room_get, &r, ALICE)
                == MX_POWER_INFINITE);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, CAROL)
                == MX_POWER_INFINITE);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, DAVE) == 100);
    assert_true(mx_auth_is_creator(r.rv, room_get, &r, CAROL));
    assert_false(mx_auth_is_creator(r.rv, room_get, &r, DAVE));

    /* a creator outranks any number, even when listed (it may not be) */
    room_power(&r, json_pack("{s{si si} sI}", "users", CAROL, 0, DAVE, 100,
                             "invite", (json_int_t) 9007199254740991LL));
    assert_true(mx_auth_user_power(r.rv, room_get, &r, CAROL)
                == MX_POWER_INFINITE);

    room_put(&r, "m.room.join_rules", "", ALICE,
             json_pack("{ss s[{ss ss}]}", "join_rule", "restricted", "allow",
                       "type", "m.room_membership", "room_id", "!s:hs1"));
    room_member(&r, CAROL, "join");
    room_member(&r, DAVE, "join");

    check_join(&r, BOB, CAROL, MX_AUTH_ALLOW, "authorised");
    check_join(&r, BOB, ALICE, MX_AUTH_ALLOW, "authorised");
    check_join(&r, BOB, DAVE, MX_AUTH_FORBIDDEN,
               "has power 100, below the invite level 9007199254740991");
    room_free(&r);

    /* v11: additional_creators is nothing special */
    room_init(&r, "11");
    json_object_set_new(room_create_content(&r), "additional_creators",
                        json_pack("[s]", CAROL));
    room_power(&r, json_pack("{s{si} si}", "users", ALICE, 100,
                             "invite", 50));
    assert_true(mx_auth_user_power(r.rv, room_get, &r, CAROL) == 0);
    assert_true(mx_auth_user_power(r.rv, room_get, &r, ALICE) == 100);
    assert_false(mx_auth_is_creator(r.rv, room_get, &r, CAROL));
    room_free(&r);
}


/* Knock (v7+, knock_restricted v10+) */

static void
check_knock(room_t *r, const char *sender, const char *skey, mx_auth_e code,
    const char *rule)
{
    mx_auth_result_t  res;

    if (mx_auth_knock(r->rv, room_get, r, sender, skey, &res) != code) {
        fail_msg("v%s knock: got %d (%s), want %d", r->rv->id, res.code,
                 res.rule, code);
    }

    assert_rule(&res, rule);
    assert_int_equal(res.status, code == MX_AUTH_ALLOW ? 200
                                 : code == MX_AUTH_BAD_JSON ? 400 : 403);
}


/*
 * Knocks: a room of version v, the join rules content (NULL: no event),
 * BOB's membership (NULL: none), m.federate false or not; sender knocks
 * for BOB. One cmocka test per row.
 */

typedef struct {
    const char  *name;
    const char  *v;
    const char  *join_rules;    /* the content, JSON */
    const char  *bob;
    const char  *sender;
    int          no_federate;
    mx_auth_e    code;
    const char  *rule;
} knock_case_t;


static const knock_case_t  knock_cases[] = {

    { "v6 knock", "6", JR("knock"), NULL, BOB, 0, MX_AUTH_FORBIDDEN,
      "knocking is not supported in room version 6" },
    { "v7 knock", "7", JR("knock"), NULL, BOB, 0, MX_AUTH_ALLOW,
      "join rule is knock and the user may knock" },
    { "v7 knock, left", "7", JR("knock"), "leave", BOB, 0, MX_AUTH_ALLOW,
      "may knock" },
    { "v7 knock, knocked", "7", JR("knock"), "knock", BOB, 0, MX_AUTH_ALLOW,
      "may knock" },
    { "v7 knock for another", "7", JR("knock"), "knock", ALICE, 0,
      MX_AUTH_BAD_JSON, "a user can only knock for themselves" },
    { "v7 knock, banned", "7", JR("knock"), "ban", BOB, 0, MX_AUTH_FORBIDDEN,
      "user is banned" },
    { "v7 knock, invited", "7", JR("knock"), "invite", BOB, 0,
      MX_AUTH_FORBIDDEN, "already invited" },
    { "v7 knock, joined", "7", JR("knock"), "join", BOB, 0,
      MX_AUTH_FORBIDDEN, "already joined" },
    { "v7 invite", "7", JR("invite"), "leave", BOB, 0, MX_AUTH_FORBIDDEN,
      "join rule is invite, which admits no knock" },
    { "v7 public", "7", JR("public"), "leave", BOB, 0, MX_AUTH_FORBIDDEN,
      "admits no knock" },
    { "v7 no join rules", "7", NULL, "leave", BOB, 0, MX_AUTH_FORBIDDEN,
      "admits no knock" },
    { "v7 knock, m.federate false", "7", JR("knock"), "leave", BOB, 1,
      MX_AUTH_FORBIDDEN, "m.federate is false" },
    { "v9 knock_restricted", "9", JR("knock_restricted"), NULL, BOB, 0,
      MX_AUTH_FORBIDDEN,
      "join rule is knock_restricted, which admits no knock" },
    { "v10 knock_restricted", "10", JR("knock_restricted"), NULL, BOB, 0,
      MX_AUTH_ALLOW, "may knock" },
    { "v10 restricted", "10", JR("restricted"), NULL, BOB, 0,
      MX_AUTH_FORBIDDEN, "admits no knock" },
};


static void
test_knock_case(void **state)
{
    const knock_case_t *c = *state;

    json_t        *content;
    room_t         r;
    json_error_t   e;

    room_init(&r, c->v);

    if (c->join_rules != NULL) {
        content = json_loads(c->join_rules, 0, &e);
        if (content == NULL) {
            fail_msg("bad test JSON %s: %s", c->join_rules, e.text);
        }

        room_put(&r, "m.room.join_rules", "", ALICE, content);
    }

    if (c->bob != NULL) {
        room_member(&r, BOB, c->bob);
    }

    if (c->no_federate) {
        json_object_set_new(room_create_content(&r), "m.federate",
                            json_false());
    }

    check_knock(&r, c->sender, BOB, c->code, c->rule);

    room_free(&r);
}


/* Leave by oneself */

static void
check_leave(room_t *r, const char *sender, const char *skey, mx_auth_e code,
    const char *rule)
{
    mx_auth_result_t  res;

    if (mx_auth_leave(r->rv, room_get, r, sender, skey, &res) != code) {
        fail_msg("v%s leave: got %d (%s), want %d", r->rv->id, res.code,
                 res.rule, code);
    }

    assert_rule(&res, rule);
}


/*
 * Leaves in a public room of each version from v_from to v_to: BOB's
 * membership (NULL: none), sender leaves for BOB. One test per row.
 */

typedef struct {
    const char  *name;
    int          v_from;
    int          v_to;
    const char  *bob;
    const char  *sender;
    mx_auth_e    code;
    const char  *rule;
} leave_case_t;


static const leave_case_t  leave_cases[] = {

    { "leave, not a member", 1, 12, NULL, BOB, MX_AUTH_FORBIDDEN,
      "user's membership is none" },
    { "leave, joined", 1, 12, "join", BOB, MX_AUTH_ALLOW,
      "from membership join" },
    { "leave, invited", 1, 12, "invite", BOB, MX_AUTH_ALLOW,
      "from membership invite" },
    { "leave, left", 1, 12, "leave", BOB, MX_AUTH_FORBIDDEN,
      "membership is leave" },
    { "leave, banned", 1, 12, "ban", BOB, MX_AUTH_FORBIDDEN,
      "membership is ban" },
    /* from knock only where knocking exists: v7 and later */
    { "leave, knocked, no knocking", 1, 6, "knock", BOB, MX_AUTH_FORBIDDEN,
      "knock" },
    { "leave, knocked", 7, 12, "knock", BOB, MX_AUTH_ALLOW, "knock" },
    /* a kick is not a leave by oneself */
    { "leave for another", 1, 12, "knock", ALICE, MX_AUTH_BAD_JSON,
      "only a leave by oneself" },
};


static void
test_leave_case(void **state)
{
    const leave_case_t *c = *state;

    int     v;
    char    id[4];
    room_t  r;

    for (v = c->v_from; v <= c->v_to; v++) {
        snprintf(id, sizeof(id), "%d", v);
        room_init(&r, id);
        room_join_rule(&r, "public");

        if (c->bob != NULL) {
            room_member(&r, BOB, c->bob);
        }

        check_leave(&r, c->sender, BOB, c->code, c->rule);

        room_free(&r);
    }
}


static void
test_leave_no_federate(void **state)
{
    room_t  r;

    room_init(&r, "10");
    room_member(&r, BOB, "join");
    json_object_set_new(room_create_content(&r), "m.federate", json_false());
    check_leave(&r, BOB, BOB, MX_AUTH_FORBIDDEN, "m.federate is false");
    room_free(&r);
}


/* The whole-PDU entry point */

static mx_auth_e
member_event(room_t *r, json_t *ev, mx_auth_result_t *res)
{
    mx_auth_e  rc;

    rc = mx_auth_member_event(r->rv, room_get, r, ev, res);
    json_decref(ev);

    return rc;
}


static void
test_member_event(void **state)
{
    room_t            r;
    mx_auth_result_t  res;

    restricted_room(&r, "10", "knock_restricted", 0);

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss ss}}", "type", "m.room.member", "sender", BOB,
        "state_key", BOB, "content", "membership", "join",
        "join_authorised_via_users_server", ALICE), &res), MX_AUTH_ALLOW);
    assert_rule(&res, "authorised");

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss}}", "type", "m.room.member", "sender", BOB,
        "state_key", BOB, "content", "membership", "join"), &res),
        MX_AUTH_FORBIDDEN);
    assert_rule(&res, "no join_authorised_via_users_server");

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss}}", "type", "m.room.member", "sender", BOB,
        "state_key", BOB, "content", "membership", "knock"), &res),
        MX_AUTH_ALLOW);
    assert_rule(&res, "may knock");

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss}}", "type", "m.room.member", "sender", CAROL,
        "state_key", CAROL, "content", "membership", "leave"), &res),
        MX_AUTH_ALLOW);

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss}}", "type", "m.room.member", "sender", ALICE,
        "state_key", BOB, "content", "membership", "invite"), &res),
        MX_AUTH_FORBIDDEN);
    assert_rule(&res, "membership invite is not handled");

    /* shape: 400 M_BAD_JSON */
    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss}}", "type", "m.room.message", "sender", BOB,
        "state_key", BOB, "content", "membership", "join"), &res),
        MX_AUTH_BAD_JSON);
    assert_rule(&res, "event type is not m.room.member");

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss s{ss}}", "type", "m.room.member", "sender", BOB,
        "content", "membership", "join"), &res), MX_AUTH_BAD_JSON);

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{}}", "type", "m.room.member", "sender", BOB,
        "state_key", BOB, "content"), &res), MX_AUTH_BAD_JSON);
    assert_rule(&res, "content.membership");

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{si}}", "type", "m.room.member", "sender", BOB,
        "state_key", BOB, "content", "membership", 1), &res),
        MX_AUTH_BAD_JSON);

    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss si}}", "type", "m.room.member", "sender", BOB,
        "state_key", BOB, "content", "membership", "join",
        "join_authorised_via_users_server", 7), &res), MX_AUTH_BAD_JSON);
    assert_rule(&res, "join_authorised_via_users_server is not a user ID");

    room_free(&r);

    /* before v8 the field means nothing */
    room_init(&r, "7");
    room_join_rule(&r, "public");
    assert_int_equal(member_event(&r, json_pack(
        "{ss ss ss s{ss si}}", "type", "m.room.member", "sender", BOB,
        "state_key", BOB, "content", "membership", "join",
        "join_authorised_via_users_server", 7), &res), MX_AUTH_ALLOW);
    room_free(&r);
}


/* res may be NULL everywhere */
static void
test_null_result(void **state)
{
    room_t  r;

    room_init(&r, "10");
    room_join_rule(&r, "invite");
    json_object_set_new(room_create_content(&r), "m.federate", json_false());

    assert_int_equal(mx_auth_join(r.rv, room_get, &r, BOB, BOB, NULL, NULL),
                     MX_AUTH_FORBIDDEN);
    assert_int_equal(mx_auth_join(r.rv, room_get, &r, CAROL, CAROL, NULL,
                                  NULL), MX_AUTH_FORBIDDEN);
    assert_int_equal(mx_auth_knock(r.rv, room_get, &r, BOB, BOB, NULL),
                     MX_AUTH_FORBIDDEN);
    assert_int_equal(mx_auth_leave(r.rv, room_get, &r, ALICE, ALICE, NULL),
                     MX_AUTH_ALLOW);

    room_free(&r);
}


/* Appends n rows of a table as tests named after them. */
static void
add_rows(struct CMUnitTest *all, size_t *n, const void *rows, size_t size,
    size_t count, CMUnitTestFunction f)
{
    size_t  i;

    for (i = 0; i < count; i++) {
        all[*n].name = *(const char *const *) ((const char *) rows
                                                + i * size);
        all[*n].test_func = f;
        all[*n].initial_state = (void *) ((const char *) rows + i * size);
        (*n)++;
    }
}


#define ROWS(t)  (t), sizeof((t)[0]), sizeof(t) / sizeof((t)[0])


int
main(void)
{
    int                 rc;
    size_t              n;
    struct CMUnitTest  *all;

    static const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_sender_not_state_key),
        cmocka_unit_test(test_federate),
        cmocka_unit_test(test_no_create),
        cmocka_unit_test(test_power_no_event),
        cmocka_unit_test(test_power_huge_strings),
        cmocka_unit_test(test_power_strings_join),
        cmocka_unit_test(test_power_v12_creators),
        cmocka_unit_test(test_leave_no_federate),
        cmocka_unit_test(test_member_event),
        cmocka_unit_test(test_null_result),
    };

    all = calloc(sizeof(tests) / sizeof(tests[0])
                 + sizeof(join_cases) / sizeof(join_cases[0])
                 + sizeof(restricted_cases) / sizeof(restricted_cases[0])
                 + sizeof(power_cases) / sizeof(power_cases[0])
                 + sizeof(knock_cases) / sizeof(knock_cases[0])
                 + sizeof(leave_cases) / sizeof(leave_cases[0]),
                 sizeof(struct CMUnitTest));
    if (all == NULL) {
        return 1;
    }

    n = sizeof(tests) / sizeof(tests[0]);
    memcpy(all, tests, sizeof(tests));

    add_rows(all, &n, ROWS(join_cases), test_join_case);
    add_rows(all, &n, ROWS(restricted_cases), test_restricted_case);
    add_rows(all, &n, ROWS(power_cases), test_power_case);
    add_rows(all, &n, ROWS(knock_cases), test_knock_case);
    add_rows(all, &n, ROWS(leave_cases), test_leave_case);

    rc = _cmocka_run_group_tests("auth", all, n, NULL, NULL);

    free(all);

    return rc;
}
