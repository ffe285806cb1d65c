/*
 * Copyright (C) nginx-matrix-join authors.
 * Synapse signing key files: mx_keyfile_parse on arbitrary bytes; every
 * parsed key formats back to a line that parses to the same key.
 */

#include "fuzz_common.h"
#include "mx_keyfile.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char               line[512];
    long               len;
    size_t             i, n, n2;
    mx_err_t           err;
    mx_signing_key_t   keys[MX_KEYFILE_MAX_KEYS], again;

    fuzz_init();

    n = 0;
    if (mx_keyfile_parse((const char *) data, size, keys, MX_KEYFILE_MAX_KEYS,
                         &n, &err) != 0)
    {
        check(memchr(err.text, '\0', sizeof(err.text)) != NULL);
        return 0;
    }

    check(n >= 1 && n <= MX_KEYFILE_MAX_KEYS);

    for (i = 0; i < n; i++) {
        check(mx_key_id_valid(keys[i].key_id, strlen(keys[i].key_id)));

        len = mx_keyfile_format(&keys[i], line, sizeof(line));
        check(len > 0 && (size_t) len < sizeof(line));

        n2 = 0;
        check(mx_keyfile_parse(line, (size_t) len, &again, 1, &n2, &err)
              == 0);
        check(n2 == 1);
        check(strcmp(again.key_id, keys[i].key_id) == 0);
        check(memcmp(again.pk, keys[i].pk, sizeof(again.pk)) == 0);
        check(memcmp(again.sk, keys[i].sk, sizeof(again.sk)) == 0);

        mx_signing_key_wipe(&again);
        mx_signing_key_wipe(&keys[i]);
    }

    return 0;
}
