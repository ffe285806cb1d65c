/*
 * Copyright (C) nginx-matrix-join authors.
 * The room version table against the reference: §5.5 (event ID format),
 * §5.6/5.7 (redaction), §4.6 (key validity), §5.1 (strict JSON), §6.2
 * (auth rule changes), §7 (depth), §11 (feature matrix).
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_room_version.h"


/* Written out by hand from the reference, one line per version. */
typedef struct {
    const char  *id;
    int          event_id_format;
    int          redaction;
    int64_t      max_depth;
    /* refs_hashes, aliases, key_validity, strict, knock, restricted,
     * knock_restricted, int_pl, creator_sender, create_in_auth,
     * room_id_from_create, additional_creators, creators_inf */
    int          f[13];
} expect_t;

#define D63  9223372036854775807LL
#define D53  9007199254740991LL
#define SRV  MX_EVENT_ID_SERVER
#define STD  MX_EVENT_ID_HASH_STD
#define URL  MX_EVENT_ID_HASH_URL

static const expect_t  expect[] = {
    { "1",  SRV, MX_REDACT_V1,  D63, {1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0} },
    { "2",  SRV, MX_REDACT_V1,  D63, {1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0} },
    { "3",  STD, MX_REDACT_V1,  D63, {0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0} },
    { "4",  URL, MX_REDACT_V1,  D63, {0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0} },
    { "5",  URL, MX_REDACT_V1,  D63, {0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0} },
    { "6",  URL, MX_REDACT_V6,  D53, {0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0} },
    { "7",  URL, MX_REDACT_V6,  D53, {0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0} },
    { "8",  URL, MX_REDACT_V8,  D53, {0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0} },
    { "9",  URL, MX_REDACT_V9,  D53, {0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0} },
    { "10", URL, MX_REDACT_V9,  D53, {0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0} },
    { "11", URL, MX_REDACT_V11, D53, {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0} },
    { "12", URL, MX_REDACT_V11, D53, {0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1} },
};

#define NEXPECT  (sizeof(expect) / sizeof(expect[0]))


static void
check_row(const mx_room_version_t *rv, const expect_t *e)
{
    assert_non_null(rv);
    assert_string_equal(rv->id, e->id);
    assert_int_equal(rv->event_id_format, e->event_id_format);
    assert_int_equal(rv->redaction, e->redaction);
    assert_true(rv->max_depth == e->max_depth);

    assert_int_equal(rv->event_refs_with_hashes, e->f[0]);
    assert_int_equal(rv->aliases_auth_rule, e->f[1]);
    assert_int_equal(rv->enforce_key_validity, e->f[2]);
    assert_int_equal(rv->strict_json, e->f[3]);
    assert_int_equal(rv->knock, e->f[4]);
    assert_int_equal(rv->restricted, e->f[5]);
    assert_int_equal(rv->knock_restricted, e->f[6]);
    assert_int_equal(rv->integer_power_levels, e->f[7]);
    assert_int_equal(rv->creator_is_sender, e->f[8]);
    assert_int_equal(rv->create_in_auth_events, e->f[9]);
    assert_int_equal(rv->room_id_from_create, e->f[10]);
    assert_int_equal(rv->additional_creators, e->f[11]);
    assert_int_equal(rv->creators_infinite_power, e->f[12]);
}


static void
test_every_row_by_lookup(void **state)
{
    size_t  i;

    for (i = 0; i < NEXPECT; i++) {
        check_row(mx_room_version(expect[i].id, strlen(expect[i].id)),
                  &expect[i]);
    }
}


static void
test_table_order_and_count(void **state)
{
    size_t                    i, n;
    const mx_room_version_t  *rv;

    rv = mx_room_versions(&n);
    assert_int_equal(n, 12);

    for (i = 0; i < n; i++) {
        check_row(&rv[i], &expect[i]);
        assert_ptr_equal(&rv[i], mx_room_version(rv[i].id, strlen(rv[i].id)));
    }
}


static void
test_unknown_versions(void **state)
{
    assert_null(mx_room_version("13", 2));
    assert_null(mx_room_version("0", 1));
    assert_null(mx_room_version("", 0));
    assert_null(mx_room_version("1.0", 3));
    assert_null(mx_room_version("01", 2));
    assert_null(mx_room_version("1 ", 2));
    assert_null(mx_room_version("org.matrix.msc2176", 18));
    assert_null(mx_room_version(NULL, 0));

    /* the length decides, not the NUL: "12" cut to one byte is "1" */
    assert_string_equal(mx_room_version("12", 1)->id, "1");
    assert_null(mx_room_version("1\0", 2));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_every_row_by_lookup),
        cmocka_unit_test(test_table_order_and_count),
        cmocka_unit_test(test_unknown_versions),
    };

    return cmocka_run_group_tests_name("room_version", tests, NULL, NULL);
}
