/*
 * Copyright (C) nginx-matrix-join authors.
 * Events: the first byte picks the room version, the rest is the event
 * (parsed strictly for v6+). Content hash, redaction, reference hash,
 * event ID, v12 room ID, required signers and signature checks; and the
 * invariants between them: redaction is idempotent, the reference hash of
 * an event and of its redacted copy are the same, an event the core
 * signs verifies with the same key.
 */

#include "fuzz_common.h"
#include "mx_event.h"
#include "mx_json.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                        have_ref;
    char                       id[MX_EVENT_ID_MAX], names[2][256];
    long                       len;
    uint8_t                    h1[MX_SHA256_LEN], h2[MX_SHA256_LEN];
    json_t                    *ev, *r1, *r2, *copy;
    mx_err_t                   err;
    const mx_room_version_t   *rv;

    if (size < 1) {
        return 0;
    }

    fuzz_init();
    rv = fuzz_room_version(data[0]);

    ev = mx_json_parse((const char *) data + 1, size - 1,
                       rv->strict_json ? MX_JSON_STRICT : 0, &err);
    if (ev == NULL) {
        return 0;
    }

    if (!json_is_object(ev)) {
        json_decref(ev);
        return 0;
    }

    (void) mx_event_content_hash(ev, h1, &err);
    (void) mx_event_check_content_hash(ev, &err);

    r1 = mx_event_redact(rv, ev);
    check(r1 != NULL);
    r2 = mx_event_redact(rv, r1);
    check(r2 != NULL);
    check(json_equal(r1, r2));

    have_ref = mx_event_reference_hash(rv, ev, h1, &err) == 0;
    if (have_ref) {
        check(mx_event_reference_hash(rv, r1, h2, &err) == 0);
        check(memcmp(h1, h2, sizeof(h1)) == 0);
    }

    json_decref(r2);
    json_decref(r1);

    len = mx_event_id(rv, ev, id, sizeof(id), &err);
    check(len == -1 || ((size_t) len < sizeof(id) && strlen(id) == (size_t) len));
    if (rv->event_id_format != MX_EVENT_ID_SERVER) {
        check((len > 0) == have_ref);
    }

    if (rv->room_id_from_create) {
        len = mx_event_room_id_from_create(rv, ev, id, sizeof(id), &err);
        check(len == -1 || strlen(id) == (size_t) len);
    }

    (void) mx_event_required_signers(rv, ev, names, &err);
    (void) mx_event_check_signatures(rv, ev, fuzz_lookup, NULL, &err);

    copy = json_deep_copy(ev);
    check(copy != NULL);

    if (mx_event_sign(rv, copy, "domain", &fuzz_key, &err) == 0) {
        check(mx_event_check_content_hash(copy, &err) == 0);
        check(mx_event_verify_signature(rv, copy, "domain", "ed25519:1",
                                        fuzz_key.pk, &err) == 0);
    }

    json_decref(copy);
    json_decref(ev);

    return 0;
}
