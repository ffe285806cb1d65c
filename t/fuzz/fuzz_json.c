/*
 * Copyright (C) nginx-matrix-join authors.
 * Canonical JSON: parse (strict and not), then for a value without reals
 * encode, re-parse, re-encode: both encodings byte-identical, the value
 * unchanged, and strict parsing must accept canonical output whose
 * integers are in range.
 */

#include "fuzz_common.h"
#include "mx_json.h"


/* 1 when v holds a real anywhere; *big set when an integer is outside
 * +-(2^53-1). */
static int
scan(const json_t *v, int *big)
{
    size_t       i;
    const char  *k;
    json_t      *e;
    json_int_t   n;

    switch (json_typeof(v)) {

    case JSON_REAL:
        return 1;

    case JSON_INTEGER:
        n = json_integer_value(v);
        if (n > MX_JSON_INT_MAX || n < MX_JSON_INT_MIN) {
            *big = 1;
        }
        return 0;

    case JSON_ARRAY:
        json_array_foreach(v, i, e) {
            if (scan(e, big)) {
                return 1;
            }
        }
        return 0;

    case JSON_OBJECT:
        json_object_foreach((json_t *) v, k, e) {
            if (scan(e, big)) {
                return 1;
            }
        }
        return 0;

    default:
        return 0;
    }
}


static void
one(const uint8_t *data, size_t size, unsigned flags)
{
    int        big;
    char      *s1, *s2;
    size_t     l1, l2;
    json_t    *v, *v2, *v3;
    mx_err_t   err;

    v = mx_json_parse((const char *) data, size, flags, &err);
    if (v == NULL) {
        return;
    }

    big = 0;

    if (flags & MX_JSON_STRICT) {
        check(mx_json_check_strict(v, &err) == 0);
    }

    if (scan(v, &big)) {
        check(!(flags & MX_JSON_STRICT));
        s1 = mx_json_canonical_str(v, &l1, &err);
        check(s1 == NULL);  /* canonical JSON has no reals */
        json_decref(v);
        return;
    }

    s1 = mx_json_canonical_str(v, &l1, &err);
    check(s1 != NULL);
    check(strlen(s1) <= l1);

    v2 = mx_json_parse(s1, l1, 0, &err);
    check(v2 != NULL);
    check(json_equal(v, v2));

    s2 = mx_json_canonical_str(v2, &l2, &err);
    check(s2 != NULL);
    check(l1 == l2 && memcmp(s1, s2, l1) == 0);

    if (!big) {
        v3 = mx_json_parse(s1, l1, MX_JSON_STRICT, &err);
        check(v3 != NULL);
        json_decref(v3);
    }

    free(s2);
    json_decref(v2);
    free(s1);
    json_decref(v);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, 0);
    one(data, size, MX_JSON_STRICT);

    return 0;
}
