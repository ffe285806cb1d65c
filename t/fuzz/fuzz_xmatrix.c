/*
 * Copyright (C) nginx-matrix-join authors.
 * X-Matrix Authorization header values: mx_xmatrix_parse on arbitrary
 * bytes; a parsed header's fields are valid NUL-terminated strings, and
 * the signed bytes for a fixed request are built (and the signature
 * checked against the spec key) as a verifying server would.
 */

#include "fuzz_common.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_xmatrix.h"


#define METHOD  "PUT"
#define URI     "/_matrix/federation/v2/send_join/%21r%3Adomain/%24e"
#define OURS    "destination.hs.example.com"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int            rc;
    json_t        *content;
    mx_buf_t       out = MX_BUF_INIT;
    mx_err_t       err;
    mx_xmatrix_t   h;

    fuzz_init();

    rc = mx_xmatrix_parse((const char *) data, size, &h, &err);
    check(rc == MX_XMATRIX_OK || rc == MX_XMATRIX_MALFORMED
          || rc == MX_XMATRIX_OTHER_SCHEME);

    if (rc != MX_XMATRIX_OK) {
        return 0;
    }

    check(memchr(h.origin, '\0', sizeof(h.origin)) != NULL);
    check(memchr(h.destination, '\0', sizeof(h.destination)) != NULL);
    check(memchr(h.key_id, '\0', sizeof(h.key_id)) != NULL);
    check(mx_server_name_valid(h.origin, strlen(h.origin)));
    check(mx_key_id_valid(h.key_id, strlen(h.key_id)));
    check(h.has_destination || h.destination[0] == '\0');

    check(mx_xmatrix_signed_bytes(&h, METHOD, sizeof(METHOD) - 1, URI,
                                  sizeof(URI) - 1, OURS, NULL, &out, &err)
          == 0);
    check(out.len > 0);
    mx_buf_free(&out);

    content = json_pack("{ss}", "membership", "join");
    check(content != NULL);
    check(mx_xmatrix_signed_bytes(&h, METHOD, sizeof(METHOD) - 1, URI,
                                  sizeof(URI) - 1, OURS, content, &out, &err)
          == 0);
    mx_buf_free(&out);

    (void) mx_xmatrix_verify(&h, METHOD, sizeof(METHOD) - 1, URI,
                             sizeof(URI) - 1, OURS, content, fuzz_key.pk,
                             &err);
    json_decref(content);

    return 0;
}
