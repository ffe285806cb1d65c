/*
 * Copyright (C) nginx-matrix-join authors.
 * Identifier grammar (spec appendix, reference §7): server names, user
 * IDs, room IDs.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_id.h"


#define VALID(s)    assert_true(mx_server_name_valid(s, strlen(s)))
#define INVALID(s)  assert_false(mx_server_name_valid(s, strlen(s)))


static void
test_server_name_valid(void **state)
{
    /* the spec appendix's own examples of valid server names */
    VALID("matrix.org");
    VALID("matrix.org:8888");
    VALID("1.2.3.4");
    VALID("1.2.3.4:1234");
    VALID("[1234:5678::abcd]");
    VALID("[1234:5678::abcd]:5678");

    VALID("localhost");
    VALID("localhost:8448");
    VALID("hs1");
    VALID("a");
    VALID("a:1");
    VALID("a:99999");
    VALID("MiXeD-Case.Example.COM");
    VALID("[::1]");
    VALID("[::ffff:1.2.3.4]:80");
    VALID("[ABCD:EF::1]");
}


static void
test_server_name_invalid(void **state)
{
    /* sytest "Non-numeric ports in server names are rejected" */
    INVALID("localhost:http");

    INVALID("");
    INVALID(":8448");
    INVALID("localhost:");
    INVALID("localhost:123456");        /* port is 1*5DIGIT */
    INVALID("localhost:-1");
    INVALID("localhost:80:80");
    INVALID("localhost:8 ");
    INVALID("local host");
    INVALID("local_host");
    INVALID("localhost/");
    INVALID("example.com@evil");
    INVALID("ex\xc3\xa4mple.com");      /* no IDN in the grammar */

    /* IPv6 literals */
    INVALID("[]");
    INVALID("[:]");                     /* IPv6address = 2*45IPv6char */
    INVALID("[::1");
    INVALID("::1");                     /* unbracketed */
    INVALID("[::g]");
    INVALID("[::1]x");
    INVALID("[::1]:");
    INVALID("[::1]:http");
    INVALID("[::1]:123456");
    INVALID("[[::1]]");
    INVALID("[1:2:3:4:5:6:7:8:1:2:3:4:5:6:7:8:1:2:3:4:5:6:78]"); /* 46 */
    VALID("[1:2:3:4:5:6:7:8:1:2:3:4:5:6:7:8:1:2:3:4:5:6:7]");    /* 45 */

    /* the length is given, not found with strlen */
    assert_false(mx_server_name_valid("a\0b", 3));
    assert_true(mx_server_name_valid("ab:80x", 5));
    assert_false(mx_server_name_valid(NULL, 0));
}


static void
test_server_name_length(void **state)
{
    char  name[300];

    /* dns-name = 1*255dns-char */
    memset(name, 'a', sizeof(name));
    assert_true(mx_server_name_valid(name, 255));
    assert_false(mx_server_name_valid(name, 256));

    memcpy(name + 255, ":8448", 5);
    assert_true(mx_server_name_valid(name, 260));

    memcpy(name + 256, ":8448", 5);
    assert_false(mx_server_name_valid(name, 261));
}


static void
test_id_server(void **state)
{
    size_t       slen;
    const char  *s;

    s = mx_id_server("@alice:example.org:8448", 23, '@', &slen);
    assert_non_null(s);
    assert_int_equal(slen, 16);
    assert_memory_equal(s, "example.org:8448", 16);

    s = mx_id_server("$abc:x", 6, '$', &slen);
    assert_non_null(s);
    assert_int_equal(slen, 1);
    assert_memory_equal(s, "x", 1);

    s = mx_id_server("!room:", 6, '!', &slen);
    assert_non_null(s);
    assert_int_equal(slen, 0);

    assert_null(mx_id_server("@alice:example.org", 18, '!', &slen));
    assert_null(mx_id_server("@alice", 6, '@', &slen));
    assert_null(mx_id_server("", 0, '@', &slen));

    /* the ':' must lie within len */
    assert_null(mx_id_server("@alice:x", 6, '@', &slen));
}


/* "<sigil>aaa...a:hs1", len bytes in all */
static void
long_id(char *id, char sigil, size_t len)
{
    memset(id, 'a', len);
    id[0] = sigil;
    memcpy(id + len - 4, ":hs1", 4);
}


static void
test_user_id(void **state)
{
    char  id[300];

    assert_true(mx_user_id_valid("@alice:example.org", 18));
    assert_true(mx_user_id_valid("@a:hs1:8448", 11));
    assert_true(mx_user_id_valid("@a:[::1]:8448", 13));

    /* historical user IDs: any code point but ':' and NUL */
    assert_true(mx_user_id_valid("@Alice Smith!:example.org", 25));
    assert_true(mx_user_id_valid("@\xc3\xa4:example.org", 14));

    assert_false(mx_user_id_valid("@:example.org", 13));
    assert_false(mx_user_id_valid("alice:example.org", 17));
    assert_false(mx_user_id_valid("!alice:example.org", 18));
    assert_false(mx_user_id_valid("@alice", 6));
    assert_false(mx_user_id_valid("@alice:", 7));
    assert_false(mx_user_id_valid("@alice:localhost:http", 21));
    assert_false(mx_user_id_valid("@al\0ce:example.org", 18));
    assert_false(mx_user_id_valid("", 0));

    /* 255 bytes including '@' and the domain */
    long_id(id, '@', 254);
    assert_true(mx_user_id_valid(id, 254));
    long_id(id, '@', 255);
    assert_true(mx_user_id_valid(id, 255));
    long_id(id, '@', 256);
    assert_false(mx_user_id_valid(id, 256));
}


static void
test_room_id(void **state)
{
    char  id[300];

    assert_true(mx_room_id_valid("!abc:example.org", 16, 0));
    assert_true(mx_room_id_valid("!abc:example.org", 16, 1));
    assert_true(mx_room_id_valid("!x:domain", 9, 0));

    /* v12 form from the reference §5.5 */
    assert_true(mx_room_id_valid(
        "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", 44, 1));
    assert_false(mx_room_id_valid(
        "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", 44, 0));

    /* standard alphabet, wrong lengths */
    assert_false(mx_room_id_valid(
        "!Nhcu5BS+UMnFX7hBVfVSoXiD7OgH6iRT/xyIuqDnpYQ", 44, 1));
    assert_false(mx_room_id_valid(
        "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpY", 43, 1));
    assert_false(mx_room_id_valid(
        "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQQ", 45, 1));
    assert_false(mx_room_id_valid(
        "$Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", 44, 1));

    assert_false(mx_room_id_valid("!:example.org", 13, 0));
    assert_false(mx_room_id_valid("!abc", 4, 0));
    assert_false(mx_room_id_valid("!abc:", 5, 0));
    assert_false(mx_room_id_valid("!abc:localhost:http", 19, 0));
    assert_false(mx_room_id_valid("@abc:example.org", 16, 0));
    assert_false(mx_room_id_valid("", 0, 1));

    long_id(id, '!', 255);
    assert_true(mx_room_id_valid(id, 255, 0));
    long_id(id, '!', 256);
    assert_false(mx_room_id_valid(id, 256, 0));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_server_name_valid),
        cmocka_unit_test(test_server_name_invalid),
        cmocka_unit_test(test_server_name_length),
        cmocka_unit_test(test_id_server),
        cmocka_unit_test(test_user_id),
        cmocka_unit_test(test_room_id),
    };

    return cmocka_run_group_tests_name("id", tests, NULL, NULL);
}
