/*
 * Copyright (C) nginx-matrix-join authors.
 * Restricted rooms, reference §6.4 and §1 (make_join): the allow list
 * with malformed entries dropped, the choice of a local authorising user,
 * and the outcomes a resident answers a make_join with.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_auth.h"
#include "auth_room.h"


#define SPACE   "!space:hs1"
#define OTHER   "!other:elsewhere"


/* Allowed rooms */

static json_t *
parse(const char *text)
{
    json_t        *v;
    json_error_t   e;

    v = json_loads(text, 0, &e);
    if (v == NULL) {
        fail_msg("bad test JSON: %s", e.text);
    }

    return v;
}


static void
test_allow_rooms(void **state)
{
    json_t      *c;
    const char  *rooms[8];

    c = parse("{\"join_rule\": \"restricted\", \"allow\": ["
              "  \"!str:x\","
              "  42,"
              "  null,"
              "  [\"!arr:x\"],"
              "  {\"type\": \"m.room_membership\", \"room_id\": \"!a:x\"},"
              "  {\"type\": \"m.something_else\", \"room_id\": \"!b:x\"},"
              "  {\"room_id\": \"!c:x\"},"
              "  {\"type\": 5, \"room_id\": \"!d:x\"},"
              "  {\"type\": \"m.room_membership\", \"room_id\": 7},"
              "  {\"type\": \"m.room_membership\"},"
              "  {\"type\": \"m.room_membership\", \"room_id\": \"!e:x\","
              "   \"via\": [\"x\"]}"
              "]}");

    assert_int_equal(mx_auth_allow_rooms(c, rooms, 8), 2);
    assert_string_equal(rooms[0], "!a:x");
    assert_string_equal(rooms[1], "!e:x");

    /* the count of all of them, only cap written */
    rooms[1] = NULL;
    assert_int_equal(mx_auth_allow_rooms(c, rooms, 1), 2);
    assert_string_equal(rooms[0], "!a:x");
    assert_null(rooms[1]);
    assert_int_equal(mx_auth_allow_rooms(c, NULL, 0), 2);

    json_decref(c);

    /* allow that is not a list, or missing */
    c = parse("{\"join_rule\": \"restricted\", \"allow\": "
              "{\"type\": \"m.room_membership\", \"room_id\": \"!a:x\"}}");
    assert_int_equal(mx_auth_allow_rooms(c, rooms, 8), 0);
    json_decref(c);

    c = parse("{\"join_rule\": \"restricted\"}");
    assert_int_equal(mx_auth_allow_rooms(c, rooms, 8), 0);
    json_decref(c);

    assert_int_equal(mx_auth_allow_rooms(NULL, rooms, 8), 0);
}


/* The authoriser */

static mx_auth_resident_t
resident(const char *const *local, size_t n)
{
    mx_auth_resident_t  me;

    memset(&me, 0, sizeof(me));
    me.server = "hs1";
    me.local_joined = local;
    me.nlocal = n;

    return me;
}


static void
check_pick(room_t *r, const mx_auth_resident_t *me, const char *want)
{
    mx_auth_result_t  res;
    mx_auth_e         rc;

    rc = mx_auth_pick_authoriser(r->rv, room_get, r, me, &res);

    if (want == NULL) {
        if (rc != MX_AUTH_UNABLE_TO_GRANT) {
            fail_msg("v%s: picked %s, want none", r->rv->id, res.authoriser);
        }

        assert_int_equal(res.status, 400);
        assert_string_equal(res.errcode, "M_UNABLE_TO_GRANT_JOIN");
        assert_string_equal(res.authoriser, "");
        return;
    }

    if (rc != MX_AUTH_AUTHORISED) {
        fail_msg("v%s: no authoriser (%s), want %s", r->rv->id, res.rule,
                 want);
    }

    assert_string_equal(res.authoriser, want);
    assert_int_equal(res.status, 200);
    assert_null(res.errcode);
}


static void
test_pick_from_power_levels(void **state)
{
    room_t              r;
    mx_auth_resident_t  me;

    me = resident(NULL, 0);

    room_init(&r, "10");
    room_power(&r, json_pack("{s{si si si si si} si}", "users",
                             ALICE, 100, CAROL, 50, DAVE, 100,
                             "@eve:remote", 200, "@frank:hs1", 150,
                             "invite", 0));
    room_member(&r, CAROL, "join");
    room_member(&r, DAVE, "leave");
    room_member(&r, "@eve:remote", "join");
    room_member(&r, "@frank:hs1", "ban");

    /* eve is remote, frank banned, dave gone: alice has the most */
    check_pick(&r, &me, ALICE);

    /* of equals, the smallest user ID */
    room_member(&r, DAVE, "join");
    check_pick(&r, &me, ALICE);
    room_member(&r, "@aaron:hs1", "join");
    room_power(&r, json_pack("{s{si si si}}", "users",
                             ALICE, 100, "@aaron:hs1", 100, CAROL, 50));
    check_pick(&r, &me, "@aaron:hs1");

    /* below the invite level */
    room_member(&r, ALICE, "leave");
    room_member(&r, "@aaron:hs1", "leave");
    room_power(&r, json_pack("{s{si si} si}", "users",
                             ALICE, 100, CAROL, 50, "invite", 75));
    check_pick(&r, &me, NULL);

    room_power(&r, json_pack("{s{si si} si}", "users",
                             ALICE, 100, CAROL, 50, "invite", 50));
    check_pick(&r, &me, CAROL);

    /* another server's name, or one that only starts the same */
    me.server = "hs";
    check_pick(&r, &me, NULL);
    me.server = "hs1:8448";
    check_pick(&r, &me, NULL);

    room_free(&r);
}


static void
test_pick_local_joined(void **state)
{
    room_t              r;
    mx_auth_resident_t  me;

    static const char  *local[] = { "@zed:hs1", "@yan:hs1", "@xi:hs1",
                                    "@bob:remote" };

    me = resident(local, 4);

    room_init(&r, "10");
    room_member(&r, ALICE, "leave");
    room_member(&r, "@zed:hs1", "join");
    room_member(&r, "@yan:hs1", "join");
    room_member(&r, BOB, "join");

    /* no local user in the power levels; unlisted users reach invite */
    room_power(&r, json_pack("{s{si} si si}", "users", BOB, 100,
                             "users_default", 0, "invite", 0));
    check_pick(&r, &me, "@yan:hs1");

    /* the caller's list is checked against state (xi is not joined) */
    room_member(&r, "@yan:hs1", "leave");
    check_pick(&r, &me, "@zed:hs1");

    /* invite above users_default: unlisted users cannot */
    room_power(&r, json_pack("{s{si} si si}", "users", BOB, 100,
                             "users_default", 0, "invite", 10));
    check_pick(&r, &me, NULL);

    room_power(&r, json_pack("{s{si} si si}", "users", BOB, 100,
                             "users_default", 10, "invite", 10));
    check_pick(&r, &me, "@zed:hs1");

    /* a listed level below invite wins over users_default */
    room_power(&r, json_pack("{s{si si} si si}", "users", BOB, 100,
                             "@zed:hs1", 0, "users_default", 10,
                             "invite", 10));
    check_pick(&r, &me, NULL);

    /* no list given */
    me = resident(NULL, 0);
    room_power(&r, json_pack("{s{si} si si}", "users", BOB, 100,
                             "users_default", 10, "invite", 10));
    check_pick(&r, &me, NULL);

    room_free(&r);
}


static void
test_pick_creators(void **state)
{
    room_t              r;
    mx_auth_resident_t  me;

    me = resident(NULL, 0);

    /* v12: the creator is never in users but has infinite power */
    room_init(&r, "12");
    room_power(&r, json_pack("{s{si si} si}", "users", CAROL, 100,
                             "@eve:remote", 100, "invite", 100));
    room_member(&r, CAROL, "join");
    check_pick(&r, &me, ALICE);

    /* an additional creator counts too */
    json_object_set_new(room_create_content(&r), "additional_creators",
                        json_pack("[s s]", "@bea:hs1", "@eve:remote"));
    room_member(&r, "@bea:hs1", "join");
    room_member(&r, "@eve:remote", "join");
    check_pick(&r, &me, ALICE);
    room_member(&r, ALICE, "leave");
    check_pick(&r, &me, "@bea:hs1");
    room_member(&r, "@bea:hs1", "leave");
    check_pick(&r, &me, CAROL);

    room_power(&r, json_pack("{s{si} si}", "users", CAROL, 100,
                             "invite", 101));
    check_pick(&r, &me, NULL);
    room_free(&r);

    /* v11: the same creator has what the power levels say (0) */
    room_init(&r, "11");
    room_power(&r, json_pack("{s{si} si}", "users", CAROL, 50,
                             "invite", 100));
    room_member(&r, CAROL, "join");
    check_pick(&r, &me, NULL);
    room_free(&r);

    /* v1, no power levels: the creator 100, everyone 0, invite 0 */
    room_init(&r, "1");
    room_member(&r, CAROL, "join");
    check_pick(&r, &me, ALICE);
    room_member(&r, ALICE, "leave");
    check_pick(&r, &me, NULL);

    {
        static const char  *local[] = { CAROL };

        me = resident(local, 1);
        check_pick(&r, &me, CAROL);
    }

    room_free(&r);
}


/* The make_join outcomes */

typedef struct {
    const char  *room;
    int          answer;
} fact_t;

static fact_t  facts[4];


/* What this resident knows of BOB in the allowed rooms: facts[]. */
static int
room_joined(void *data, const char *room, const char *user)
{
    size_t  i;

    assert_string_equal(user, BOB);

    for (i = 0; i < sizeof(facts) / sizeof(facts[0]); i++) {
        if (facts[i].room != NULL && strcmp(facts[i].room, room) == 0) {
            return facts[i].answer;
        }
    }

    return MX_AUTH_ROOM_UNKNOWN;
}


static void
set_facts(const char *room0, int answer0, const char *room1, int answer1)
{
    memset(facts, 0, sizeof(facts));
    facts[0].room = room0;
    facts[0].answer = answer0;
    facts[1].room = room1;
    facts[1].answer = answer1;
}


static void
restricted_room(room_t *r, const char *id, const char *rule)
{
    room_init(r, id);
    room_put(r, "m.room.join_rules", "", ALICE,
             json_pack("{ss s[{ss ss} {ss ss}]}", "join_rule", rule,
                       "allow",
                       "type", "m.room_membership", "room_id", OTHER,
                       "type", "m.room_membership", "room_id", SPACE));
    room_power(r, json_pack("{s{si} si}", "users", ALICE, 100,
                            "invite", 50));
}


static mx_auth_e
outcome(room_t *r, const mx_auth_resident_t *me, mx_auth_result_t *res)
{
    return mx_auth_restricted(r->rv, room_get, r, BOB, me, res);
}


static void
test_restricted_outcomes(void **state)
{
    room_t              r;
    mx_auth_result_t    res;
    mx_auth_resident_t  me;

    me = resident(NULL, 0);
    me.room_joined = room_joined;

    restricted_room(&r, "8", "restricted");

    /* joined to an allowed room: authorised, by a local user */
    set_facts(SPACE, 1, OTHER, 0);
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_AUTHORISED);
    assert_string_equal(res.authoriser, ALICE);
    assert_int_equal(res.status, 200);
    assert_rule(&res, "allowed room " SPACE);

    /* and that join passes the auth rules with that authoriser */
    assert_int_equal(mx_auth_join(r.rv, room_get, &r, BOB, BOB,
                                  res.authoriser, &res), MX_AUTH_ALLOW);

    /* known rooms, joined to none: 403 */
    set_facts(SPACE, 0, OTHER, 0);
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_FORBIDDEN);
    assert_int_equal(res.status, 403);
    assert_string_equal(res.errcode, "M_FORBIDDEN");
    assert_rule(&res, "not joined to any allowed room");
    assert_string_equal(res.authoriser, "");

    /* a room we are not in, no condition met: cannot tell */
    set_facts(SPACE, 0, NULL, 0);
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_UNABLE_TO_AUTHORISE);
    assert_int_equal(res.status, 400);
    assert_string_equal(res.errcode, "M_UNABLE_TO_AUTHORISE_JOIN");
    assert_rule(&res, "not in the allowed room " OTHER);

    /* the known room is enough when the user is there */
    set_facts(SPACE, 1, NULL, 0);
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_AUTHORISED);

    /* no callback: no room is known */
    me.room_joined = NULL;
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_UNABLE_TO_AUTHORISE);
    me.room_joined = room_joined;

    /* qualifies, but no local user may invite: try another server */
    set_facts(SPACE, 1, OTHER, 0);
    room_member(&r, ALICE, "leave");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_UNABLE_TO_GRANT);
    assert_int_equal(res.status, 400);
    assert_string_equal(res.errcode, "M_UNABLE_TO_GRANT_JOIN");
    assert_rule(&res, "invite level 50");
    room_member(&r, ALICE, "join");

    /* invited or joined: no condition */
    room_member(&r, BOB, "invite");
    set_facts(SPACE, 0, OTHER, 0);
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_ALLOW);
    assert_rule(&res, "already invited: no condition needed");
    assert_string_equal(res.authoriser, "");
    room_member(&r, BOB, "join");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_ALLOW);
    assert_rule(&res, "already joined");

    /* the auth rules still have the last word on a ban */
    room_member(&r, BOB, "ban");
    set_facts(SPACE, 1, OTHER, 0);
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_AUTHORISED);
    assert_int_equal(mx_auth_join(r.rv, room_get, &r, BOB, BOB,
                                  res.authoriser, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "banned");

    room_free(&r);
}


static void
test_restricted_no_conditions(void **state)
{
    room_t              r;
    mx_auth_result_t    res;
    mx_auth_resident_t  me;

    me = resident(NULL, 0);
    me.room_joined = room_joined;
    set_facts(SPACE, 1, OTHER, 1);

    /* only malformed conditions: invite-only in effect */
    room_init(&r, "10");
    room_put(&r, "m.room.join_rules", "", ALICE,
             json_pack("{ss s[{ss si} s]}", "join_rule", "restricted",
                       "allow", "type", "m.room_membership", "room_id", 3,
                       SPACE));
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "no valid allow condition");

    room_join_rule(&r, "restricted");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_FORBIDDEN);

    room_free(&r);
}


static void
test_restricted_rules_and_versions(void **state)
{
    room_t              r;
    mx_auth_result_t    res;
    mx_auth_resident_t  me;

    me = resident(NULL, 0);
    me.room_joined = room_joined;
    set_facts(SPACE, 1, OTHER, 1);

    /* not a restricted room: nothing to add */
    room_init(&r, "10");
    room_join_rule(&r, "public");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_ALLOW);
    assert_rule(&res, "no restricted condition applies");
    room_join_rule(&r, "invite");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_ALLOW);
    room_del(&r, "m.room.join_rules", "");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_ALLOW);
    room_free(&r);

    /* v7 knows no restricted rule: no authoriser (the join is refused) */
    restricted_room(&r, "7", "restricted");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_ALLOW);
    assert_string_equal(res.authoriser, "");
    room_free(&r);

    restricted_room(&r, "9", "knock_restricted");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_ALLOW);
    room_free(&r);

    restricted_room(&r, "10", "knock_restricted");
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_AUTHORISED);
    assert_string_equal(res.authoriser, ALICE);
    room_free(&r);

    /* v12 with the creator as the only possible authoriser */
    restricted_room(&r, "12", "restricted");
    room_power(&r, json_pack("{s{} si}", "users", "invite", 1000));
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_AUTHORISED);
    assert_string_equal(res.authoriser, ALICE);
    assert_int_equal(mx_auth_join(r.rv, room_get, &r, BOB, BOB,
                                  res.authoriser, &res), MX_AUTH_ALLOW);
    room_free(&r);

    /* the same in v11: the creator has 0 */
    restricted_room(&r, "11", "restricted");
    room_power(&r, json_pack("{s{} si}", "users", "invite", 1000));
    assert_int_equal(outcome(&r, &me, &res), MX_AUTH_UNABLE_TO_GRANT);
    room_free(&r);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_allow_rooms),
        cmocka_unit_test(test_pick_from_power_levels),
        cmocka_unit_test(test_pick_local_joined),
        cmocka_unit_test(test_pick_creators),
        cmocka_unit_test(test_restricted_outcomes),
        cmocka_unit_test(test_restricted_no_conditions),
        cmocka_unit_test(test_restricted_rules_and_versions),
    };

    return cmocka_run_group_tests_name("auth_restricted", tests, NULL, NULL);
}
