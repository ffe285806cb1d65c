/*
 * Copyright (C) nginx-matrix-join authors.
 * Auth events, reference §6.1: what a join, knock or leave selects per
 * version (no create event in v12, the authoriser's membership from v8),
 * reading a PDU's auth_events (v1/v2 pairs), and checking a received
 * event's auth_events against current state.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_auth.h"
#include "auth_room.h"


/* keys[0..n) is exactly want, a NULL-ended list of "type|state_key". */
static void
check_keys(const mx_auth_key_t *keys, size_t n, const char **want)
{
    char    have[600];
    size_t  i;

    for (i = 0; want[i] != NULL; i++) {
        if (i >= n) {
            fail_msg("missing key %s", want[i]);
        }

        snprintf(have, sizeof(have), "%s|%s", keys[i].type,
                 keys[i].state_key);
        assert_string_equal(have, want[i]);
    }

    assert_int_equal(n, i);
}


static void
test_select_join(void **state)
{
    size_t         n;
    mx_auth_key_t  keys[MX_AUTH_KEYS_MAX];

    static const char  *v1[] = {
        "m.room.create|", "m.room.power_levels|", "m.room.member|" BOB,
        "m.room.join_rules|", NULL
    };
    static const char  *v8_auth[] = {
        "m.room.create|", "m.room.power_levels|", "m.room.member|" BOB,
        "m.room.join_rules|", "m.room.member|" ALICE, NULL
    };
    static const char  *v12[] = {
        "m.room.power_levels|", "m.room.member|" BOB, "m.room.join_rules|",
        NULL
    };
    static const char  *v12_auth[] = {
        "m.room.power_levels|", "m.room.member|" BOB, "m.room.join_rules|",
        "m.room.member|" ALICE, NULL
    };

    n = mx_auth_select(version("1"), MX_MEMBERSHIP_JOIN, BOB, NULL, keys);
    check_keys(keys, n, v1);

    /* before v8 there is no authoriser to select */
    n = mx_auth_select(version("7"), MX_MEMBERSHIP_JOIN, BOB, ALICE, keys);
    check_keys(keys, n, v1);

    n = mx_auth_select(version("8"), MX_MEMBERSHIP_JOIN, BOB, NULL, keys);
    check_keys(keys, n, v1);

    n = mx_auth_select(version("8"), MX_MEMBERSHIP_JOIN, BOB, ALICE, keys);
    check_keys(keys, n, v8_auth);

    n = mx_auth_select(version("11"), MX_MEMBERSHIP_JOIN, BOB, ALICE, keys);
    check_keys(keys, n, v8_auth);

    /* v12: the room ID implies the create event */
    n = mx_auth_select(version("12"), MX_MEMBERSHIP_JOIN, BOB, NULL, keys);
    check_keys(keys, n, v12);

    n = mx_auth_select(version("12"), MX_MEMBERSHIP_JOIN, BOB, ALICE, keys);
    check_keys(keys, n, v12_auth);

    /* the same pair is not listed twice */
    n = mx_auth_select(version("10"), MX_MEMBERSHIP_JOIN, BOB, BOB, keys);
    check_keys(keys, n, v1);
}


static void
test_select_knock_leave(void **state)
{
    size_t         n;
    mx_auth_key_t  keys[MX_AUTH_KEYS_MAX];

    static const char  *knock[] = {
        "m.room.create|", "m.room.power_levels|", "m.room.member|" BOB,
        "m.room.join_rules|", NULL
    };
    static const char  *leave[] = {
        "m.room.create|", "m.room.power_levels|", "m.room.member|" BOB, NULL
    };
    static const char  *leave12[] = {
        "m.room.power_levels|", "m.room.member|" BOB, NULL
    };

    n = mx_auth_select(version("7"), MX_MEMBERSHIP_KNOCK, BOB, NULL, keys);
    check_keys(keys, n, knock);

    n = mx_auth_select(version("10"), MX_MEMBERSHIP_LEAVE, BOB, ALICE, keys);
    check_keys(keys, n, leave);

    n = mx_auth_select(version("12"), MX_MEMBERSHIP_LEAVE, BOB, NULL, keys);
    check_keys(keys, n, leave12);
}


static void
test_event_refs(void **state)
{
    size_t             n;
    json_t            *refs;
    const char        *ids[MX_AUTH_EVENTS_MAX];
    mx_auth_result_t   res;

    /* v1/v2: [event_id, {"sha256": ...}] pairs */
    refs = json_pack("[[s{ss}] [s{ss}]]", "$a:hs1", "sha256", "aGFzaA",
                     "$b:hs1", "sha256", "aGFzaA");
    assert_int_equal(mx_auth_event_refs(version("1"), refs, ids, &n, &res),
                     MX_AUTH_ALLOW);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "$a:hs1");
    assert_string_equal(ids[1], "$b:hs1");

    /* the same in v3+ is malformed */
    assert_int_equal(mx_auth_event_refs(version("3"), refs, ids, &n, &res),
                     MX_AUTH_BAD_JSON);
    assert_int_equal(res.status, 400);
    assert_string_equal(res.errcode, "M_BAD_JSON");
    json_decref(refs);

    refs = json_pack("[ss]", "$abc", "$def");
    assert_int_equal(mx_auth_event_refs(version("10"), refs, ids, &n, &res),
                     MX_AUTH_ALLOW);
    assert_int_equal(n, 2);
    assert_string_equal(ids[1], "$def");

    /* plain strings in v1 are malformed */
    assert_int_equal(mx_auth_event_refs(version("2"), refs, ids, &n, &res),
                     MX_AUTH_BAD_JSON);
    assert_rule(&res, "auth_events[0]");
    json_decref(refs);

    refs = json_pack("[s[s{}]]", "$a:hs1", "$b:hs1");
    assert_int_equal(mx_auth_event_refs(version("1"), refs, ids, &n, &res),
                     MX_AUTH_BAD_JSON);
    assert_rule(&res, "auth_events[0]");
    json_decref(refs);

    refs = json_pack("[[s]]", "$a:hs1");
    assert_int_equal(mx_auth_event_refs(version("1"), refs, ids, &n, &res),
                     MX_AUTH_BAD_JSON);
    json_decref(refs);

    refs = json_pack("[s i]", "$abc", 5);
    assert_int_equal(mx_auth_event_refs(version("10"), refs, ids, &n, &res),
                     MX_AUTH_BAD_JSON);
    assert_rule(&res, "auth_events[1]");
    json_decref(refs);

    refs = json_pack("{}");
    assert_int_equal(mx_auth_event_refs(version("10"), refs, ids, &n, &res),
                     MX_AUTH_BAD_JSON);
    assert_rule(&res, "not a list");
    json_decref(refs);

    assert_int_equal(mx_auth_event_refs(version("10"), NULL, ids, &n, &res),
                     MX_AUTH_BAD_JSON);

    /* at most 10 */
    refs = json_pack("[ssssssssss]", "$1", "$2", "$3", "$4", "$5", "$6",
                     "$7", "$8", "$9", "$10");
    assert_int_equal(mx_auth_event_refs(version("10"), refs, ids, &n, &res),
                     MX_AUTH_ALLOW);
    assert_int_equal(n, 10);
    json_array_append_new(refs, json_string("$11"));
    assert_int_equal(mx_auth_event_refs(version("10"), refs, ids, &n, &res),
                     MX_AUTH_BAD_JSON);
    assert_rule(&res, "more than 10");
    json_decref(refs);

    refs = json_array();
    assert_int_equal(mx_auth_event_refs(version("10"), refs, ids, &n, &res),
                     MX_AUTH_ALLOW);
    assert_int_equal(n, 0);
    json_decref(refs);
}


/* A public room with power levels and history visibility, BOB invited. */
static void
full_room(room_t *r, const char *id)
{
    room_init(r, id);
    room_power(r, json_pack("{s{si}}", "users", ALICE, 100));
    room_join_rule(r, "public");
    room_put(r, "m.room.history_visibility", "", ALICE,
             json_pack("{ss}", "history_visibility", "shared"));
    room_member(r, BOB, "invite");
}


static mx_auth_e
check(room_t *r, const char *authoriser, const char **ids, size_t n,
    mx_auth_result_t *res)
{
    return mx_auth_check_auth_events(r->rv, MX_MEMBERSHIP_JOIN, BOB,
                                     authoriser, ids, n, room_id, r, res);
}


#define ID(r, type, skey)  room_id((r), (type), (skey))


static void
test_check_exact(void **state)
{
    room_t            r;
    const char       *ids[MX_AUTH_EVENTS_MAX];
    mx_auth_result_t  res;

    full_room(&r, "10");

    ids[0] = ID(&r, "m.room.create", "");
    ids[1] = ID(&r, "m.room.power_levels", "");
    ids[2] = ID(&r, "m.room.member", BOB);
    ids[3] = ID(&r, "m.room.join_rules", "");
    assert_int_equal(check(&r, NULL, ids, 4, &res), MX_AUTH_ALLOW);
    assert_int_equal(res.status, 200);

    /* in any order */
    ids[0] = ID(&r, "m.room.join_rules", "");
    ids[1] = ID(&r, "m.room.member", BOB);
    ids[2] = ID(&r, "m.room.power_levels", "");
    ids[3] = ID(&r, "m.room.create", "");
    assert_int_equal(check(&r, NULL, ids, 4, &res), MX_AUTH_ALLOW);

    /* "if any": the pairs the room does not have are not needed */
    room_del(&r, "m.room.member", BOB);
    room_del(&r, "m.room.power_levels", "");
    ids[0] = ID(&r, "m.room.create", "");
    ids[1] = ID(&r, "m.room.join_rules", "");
    assert_int_equal(check(&r, NULL, ids, 2, &res), MX_AUTH_ALLOW);

    room_free(&r);
}


static void
test_check_missing(void **state)
{
    room_t            r;
    const char       *ids[MX_AUTH_EVENTS_MAX];
    mx_auth_result_t  res;

    full_room(&r, "10");

    ids[0] = ID(&r, "m.room.create", "");
    ids[1] = ID(&r, "m.room.member", BOB);
    ids[2] = ID(&r, "m.room.join_rules", "");
    assert_int_equal(check(&r, NULL, ids, 3, &res), MX_AUTH_FORBIDDEN);
    assert_int_equal(res.status, 403);
    assert_string_equal(res.errcode, "M_FORBIDDEN");
    assert_rule(&res, "auth_events lack the current m.room.power_levels");

    ids[1] = ID(&r, "m.room.power_levels", "");
    assert_int_equal(check(&r, NULL, ids, 2, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "m.room.member of " BOB);

    /* v1-v11: the create event is required */
    ids[0] = ID(&r, "m.room.power_levels", "");
    ids[1] = ID(&r, "m.room.member", BOB);
    ids[2] = ID(&r, "m.room.join_rules", "");
    assert_int_equal(check(&r, NULL, ids, 3, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "lack the current m.room.create");

    assert_int_equal(check(&r, NULL, ids, 0, &res), MX_AUTH_FORBIDDEN);

    room_free(&r);

    /* a state without a create event is no room at all */
    full_room(&r, "10");
    ids[0] = ID(&r, "m.room.power_levels", "");
    ids[1] = ID(&r, "m.room.member", BOB);
    ids[2] = ID(&r, "m.room.join_rules", "");
    room_del(&r, "m.room.create", "");
    assert_int_equal(check(&r, NULL, ids, 3, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "no create event");
    room_free(&r);
}


static void
test_check_extra_duplicate_wrong(void **state)
{
    room_t            r;
    const char       *ids[MX_AUTH_EVENTS_MAX];
    char              old_pl[32];
    mx_auth_result_t  res;

    full_room(&r, "10");

    ids[0] = ID(&r, "m.room.create", "");
    ids[1] = ID(&r, "m.room.power_levels", "");
    ids[2] = ID(&r, "m.room.member", BOB);
    ids[3] = ID(&r, "m.room.join_rules", "");

    /* extra: an event the selection does not pick */
    ids[4] = ID(&r, "m.room.history_visibility", "");
    assert_int_equal(check(&r, NULL, ids, 5, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "auth event $ev");
    assert_rule(&res, "is not a current state event the join selects");

    /* extra: a membership nobody asked for (no authoriser here) */
    ids[4] = ID(&r, "m.room.member", ALICE);
    assert_int_equal(check(&r, NULL, ids, 5, &res), MX_AUTH_FORBIDDEN);

    /* duplicate */
    ids[4] = ids[1];
    assert_int_equal(check(&r, NULL, ids, 5, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "is listed twice");

    /* the wrong event for a pair: the power levels before the current */
    snprintf(old_pl, sizeof(old_pl), "%s", ids[1]);
    room_power(&r, json_pack("{s{si} si}", "users", ALICE, 100,
                             "invite", 50));
    ids[1] = old_pl;
    assert_int_equal(check(&r, NULL, ids, 4, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, old_pl);

    /* both the old and the current one: still rejected */
    ids[4] = ID(&r, "m.room.power_levels", "");
    assert_int_equal(check(&r, NULL, ids, 5, &res), MX_AUTH_FORBIDDEN);

    /* an event from nowhere */
    ids[1] = "$unknown";
    assert_int_equal(check(&r, NULL, ids, 5, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "$unknown");

    room_free(&r);
}


static void
test_check_v12(void **state)
{
    room_t            r;
    const char       *ids[MX_AUTH_EVENTS_MAX];
    mx_auth_result_t  res;

    full_room(&r, "12");

    ids[0] = ID(&r, "m.room.power_levels", "");
    ids[1] = ID(&r, "m.room.member", BOB);
    ids[2] = ID(&r, "m.room.join_rules", "");
    assert_int_equal(check(&r, NULL, ids, 3, &res), MX_AUTH_ALLOW);

    /* listing the create event: 400 M_BAD_JSON as Synapse answers */
    ids[3] = ID(&r, "m.room.create", "");
    assert_int_equal(check(&r, NULL, ids, 4, &res), MX_AUTH_BAD_JSON);
    assert_int_equal(res.status, 400);
    assert_string_equal(res.errcode, "M_BAD_JSON");
    assert_rule(&res, "room version 12 does not list the create event");

    room_free(&r);

    /* and in v11 it is the other way round */
    full_room(&r, "11");
    ids[0] = ID(&r, "m.room.power_levels", "");
    ids[1] = ID(&r, "m.room.member", BOB);
    ids[2] = ID(&r, "m.room.join_rules", "");
    assert_int_equal(check(&r, NULL, ids, 3, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "m.room.create");
    room_free(&r);
}


static void
test_check_authoriser(void **state)
{
    room_t            r;
    const char       *ids[MX_AUTH_EVENTS_MAX];
    mx_auth_result_t  res;

    full_room(&r, "8");
    room_member(&r, BOB, "leave");

    ids[0] = ID(&r, "m.room.create", "");
    ids[1] = ID(&r, "m.room.power_levels", "");
    ids[2] = ID(&r, "m.room.member", BOB);
    ids[3] = ID(&r, "m.room.join_rules", "");
    ids[4] = ID(&r, "m.room.member", ALICE);

    assert_int_equal(check(&r, ALICE, ids, 5, &res), MX_AUTH_ALLOW);

    assert_int_equal(check(&r, ALICE, ids, 4, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "lack the current m.room.member of " ALICE);

    /* the authoriser's membership without an authoriser: extra */
    assert_int_equal(check(&r, NULL, ids, 5, &res), MX_AUTH_FORBIDDEN);

    /* before v8 it is never selected */
    room_free(&r);
    full_room(&r, "7");
    ids[0] = ID(&r, "m.room.create", "");
    ids[1] = ID(&r, "m.room.power_levels", "");
    ids[2] = ID(&r, "m.room.member", BOB);
    ids[3] = ID(&r, "m.room.join_rules", "");
    ids[4] = ID(&r, "m.room.member", ALICE);
    assert_int_equal(check(&r, ALICE, ids, 4, &res), MX_AUTH_ALLOW);
    assert_int_equal(check(&r, ALICE, ids, 5, &res), MX_AUTH_FORBIDDEN);
    room_free(&r);

    /* v12: the authoriser's membership, no create event */
    full_room(&r, "12");
    ids[0] = ID(&r, "m.room.power_levels", "");
    ids[1] = ID(&r, "m.room.member", BOB);
    ids[2] = ID(&r, "m.room.join_rules", "");
    ids[3] = ID(&r, "m.room.member", ALICE);
    assert_int_equal(check(&r, ALICE, ids, 4, &res), MX_AUTH_ALLOW);
    room_free(&r);
}


static void
test_check_too_many(void **state)
{
    size_t            i;
    room_t            r;
    const char       *ids[MX_AUTH_EVENTS_MAX + 1];
    mx_auth_result_t  res;

    full_room(&r, "10");

    for (i = 0; i < MX_AUTH_EVENTS_MAX + 1; i++) {
        ids[i] = ID(&r, "m.room.create", "");
    }

    assert_int_equal(check(&r, NULL, ids, MX_AUTH_EVENTS_MAX + 1, &res),
                     MX_AUTH_BAD_JSON);
    assert_rule(&res, "more than 10");

    room_free(&r);
}


static void
test_check_knock_leave(void **state)
{
    room_t            r;
    const char       *ids[MX_AUTH_EVENTS_MAX];
    mx_auth_result_t  res;

    full_room(&r, "10");

    ids[0] = ID(&r, "m.room.create", "");
    ids[1] = ID(&r, "m.room.power_levels", "");
    ids[2] = ID(&r, "m.room.member", BOB);
    ids[3] = ID(&r, "m.room.join_rules", "");

    assert_int_equal(mx_auth_check_auth_events(r.rv, MX_MEMBERSHIP_KNOCK,
                                               BOB, NULL, ids, 4, room_id,
                                               &r, &res), MX_AUTH_ALLOW);

    /* a leave does not select the join rules */
    assert_int_equal(mx_auth_check_auth_events(r.rv, MX_MEMBERSHIP_LEAVE,
                                               BOB, NULL, ids, 4, room_id,
                                               &r, &res), MX_AUTH_FORBIDDEN);
    assert_rule(&res, "the leave selects");
    assert_int_equal(mx_auth_check_auth_events(r.rv, MX_MEMBERSHIP_LEAVE,
                                               BOB, NULL, ids, 3, room_id,
                                               &r, &res), MX_AUTH_ALLOW);

    room_free(&r);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_select_join),
        cmocka_unit_test(test_select_knock_leave),
        cmocka_unit_test(test_event_refs),
        cmocka_unit_test(test_check_exact),
        cmocka_unit_test(test_check_missing),
        cmocka_unit_test(test_check_extra_duplicate_wrong),
        cmocka_unit_test(test_check_v12),
        cmocka_unit_test(test_check_authoriser),
        cmocka_unit_test(test_check_too_many),
        cmocka_unit_test(test_check_knock_leave),
    };

    return cmocka_run_group_tests_name("auth_events", tests, NULL, NULL);
}
