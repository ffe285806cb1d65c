/*
 * Copyright (C) nginx-matrix-join authors.
 * Synapse signing key files: "ed25519 <version> <seed b64>" per line.
 * Public keys come from the reference §8 (spec_vectors.h) and RFC 8032
 * §7.1 TEST 1, not from our code.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "mx_keyfile.h"
#include "spec_vectors.h"


/* RFC 8032 §7.1 TEST 1, seed 9d61b1...7f60 as padded std base64 */
#define RFC_SEED  "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="

static const uint8_t  rfc_pk[32] = {
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7,
    0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
    0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a
};


static int
parse(const char *text, mx_signing_key_t *keys, size_t cap, size_t *n,
    mx_err_t *err)
{
    memset(err, 0, sizeof(*err));

    return mx_keyfile_parse(text, strlen(text), keys, cap, n, err);
}


static void
test_single_line(void **state)
{
    size_t            n;
    mx_err_t          err;
    mx_signing_key_t  keys[4];

    assert_int_equal(parse("ed25519 a_1 " SPEC_SEED_B64 "\n", keys, 4, &n,
                           &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].key_id, "ed25519:a_1");
    assert_memory_equal(keys[0].pk, spec_pk, 32);

    /* no final newline, several spaces and tabs between fields */
    assert_int_equal(parse("ed25519 \t auto  " RFC_SEED, keys, 4, &n, &err),
                     0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].key_id, "ed25519:auto");
    assert_memory_equal(keys[0].pk, rfc_pk, 32);
}


static void
test_multi_line(void **state)
{
    size_t            n;
    mx_err_t          err;
    mx_signing_key_t  keys[4];

    assert_int_equal(parse("\n  \n"
                           "ed25519 first " SPEC_SEED_B64 "\r\n"
                           "\r\n"
                           "\t\n"
                           "  ed25519 Second_2 " RFC_SEED "  \r\n"
                           "\n", keys, 4, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(keys[0].key_id, "ed25519:first");
    assert_memory_equal(keys[0].pk, spec_pk, 32);
    assert_string_equal(keys[1].key_id, "ed25519:Second_2");
    assert_memory_equal(keys[1].pk, rfc_pk, 32);
}


static void
check_error(const char *text, size_t cap, const char *expect)
{
    size_t            n;
    mx_err_t          err;
    mx_signing_key_t  keys[4];

    n = 99;
    assert_int_equal(parse(text, keys, cap, &n, &err), -1);
    assert_int_equal(n, 99);

    if (strstr(err.text, expect) == NULL) {
        fail_msg("\"%s\" does not contain \"%s\"", err.text, expect);
    }
}


static void
test_malformed(void **state)
{
    check_error("", 4, "no signing key");
    check_error("\n \r\n\t\n", 4, "no signing key");

    check_error("ed448 a " SPEC_SEED_B64 "\n", 4, "line 1: unsupported key "
                "algorithm \"ed448\"");
    check_error("\nED25519 a " SPEC_SEED_B64 "\n", 4, "line 2: unsupported");

    check_error("ed25519 a-b " SPEC_SEED_B64 "\n", 4,
                "line 1: invalid key version \"a-b\"");
    check_error("ed25519 a " SPEC_SEED_B64 "\n"
                "ed25519 a:b " SPEC_SEED_B64 "\n", 4,
                "line 2: invalid key version");
    check_error("ed25519 \xc3\xa4 " SPEC_SEED_B64 "\n", 4,
                "line 1: invalid key version");

    check_error("ed25519 a YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA!\n", 4,
                "line 1: seed is not valid base64");
    check_error("\n\ned25519 a YJDBA9Xnr2sVqXD9-j7XVUnmFZcZrlw8Md7kMW+3XA1\n",
                4, "line 3: seed is not valid base64");

    /* 16 and 33 bytes */
    check_error("ed25519 a AAAAAAAAAAAAAAAAAAAAAA==\n", 4,
                "line 1: seed is 16 bytes, expected 32");
    check_error("ed25519 a AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", 4,
                "line 1: seed is 33 bytes, expected 32");
    check_error("ed25519 a AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", 4,
                "line 1: seed is too long");

    check_error("ed25519 a " SPEC_SEED_B64 " extra\n", 4,
                "line 1: too many fields");
    check_error("ed25519 a\n", 4, "line 1: too few fields");
    check_error("ed25519\n", 4, "line 1: too few fields");

    check_error("ed25519 a " SPEC_SEED_B64 "\n"
                "ed25519 b " RFC_SEED "\n", 1,
                "line 2: more than 1 signing keys");
    check_error("ed25519 a " SPEC_SEED_B64 "\n"
                "ed25519 a " RFC_SEED "\n", 4,
                "line 2: duplicate key \"ed25519:a\"");
}


static void
test_format(void **state)
{
    char              buf[128];
    size_t            n;
    mx_err_t          err;
    mx_signing_key_t  keys[1];

    assert_int_equal(parse("ed25519 a_1 " RFC_SEED "\n", keys, 1, &n, &err),
                     0);
    assert_int_equal(mx_keyfile_format(&keys[0], buf, sizeof(buf)), 56);
    assert_string_equal(buf,
        "ed25519 a_1 nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\n");

    /* the spec seed has non-zero trailing bits: they are not kept */
    assert_int_equal(parse("ed25519 a_1 " SPEC_SEED_B64 "\n", keys, 1, &n,
                           &err), 0);
    assert_int_equal(mx_keyfile_format(&keys[0], buf, sizeof(buf)), 56);
    assert_string_equal(buf,
        "ed25519 a_1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n");

    /* 56 characters and the NUL */
    assert_int_equal(mx_keyfile_format(&keys[0], buf, 57), 56);
    assert_int_equal(mx_keyfile_format(&keys[0], buf, 56), -1);
    assert_int_equal(mx_keyfile_format(&keys[0], buf, 0), -1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_multi_line),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_format),
    };

    return cmocka_run_group_tests_name("keyfile", tests, NULL, NULL);
}
