/*
 * Copyright (C) nginx-matrix-join authors.
 * send_join bodies: the first byte picks the room version, the rest is
 * the body. mx_pdu_parse_join, then for a parsed PDU the join shape is
 * checked twice, against a fixed path and against the path the PDU
 * itself names (so the fuzzer gets past the room and event ID checks),
 * then the signers and the signatures (every "ed25519:1" is the spec key).
 */

#include "fuzz_common.h"
#include "mx_pdu.h"


#define ORIGIN  "remote.example"
#define SERVER  "edge.example"


static void
check_result(mx_pdu_e rc, const mx_pdu_result_t *res)
{
    check(rc == res->code);
    check(memchr(res->reason, '\0', sizeof(res->reason)) != NULL);

    if (rc == MX_PDU_OK) {
        check(res->status == 200 && res->errcode == NULL);
    } else {
        check(res->status >= 400 && res->errcode != NULL);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                        n;
    char                       id[MX_EVENT_ID_MAX], room[512], origin[512];
    char                       names[2][256];
    json_t                    *pdu;
    mx_pdu_e                   rc;
    const char                *s, *colon;
    mx_pdu_result_t            res;
    const mx_room_version_t   *rv;

    if (size < 1) {
        return 0;
    }

    fuzz_init();
    rv = fuzz_room_version(data[0]);

    pdu = (json_t *) 1;
    rc = mx_pdu_parse_join(rv, (const char *) data + 1, size - 1, &pdu, &res);
    check_result(rc, &res);

    if (rc != MX_PDU_OK) {
        check(pdu == NULL);
        return 0;
    }

    check(pdu != NULL);

    rc = mx_pdu_check_join_shape(rv, pdu, "!room:" SERVER, "$e", ORIGIN,
                                 SERVER, id, &res);
    check_result(rc, &res);
    check(memchr(id, '\0', sizeof(id)) != NULL);

    /* the path and origin this PDU would have been sent with */
    s = json_string_value(json_object_get(pdu, "room_id"));
    snprintf(room, sizeof(room), "%s", s ? s : "");
    s = json_string_value(json_object_get(pdu, "sender"));
    colon = s ? strchr(s, ':') : NULL;
    snprintf(origin, sizeof(origin), "%s", colon ? colon + 1 : ORIGIN);

    rc = mx_pdu_check_join_shape(rv, pdu, room, id, origin, SERVER, id,
                                 &res);
    check_result(rc, &res);

    if (rc == MX_PDU_OK) {
        n = mx_pdu_join_signers(rv, pdu, names, &res);
        check(n == -1 || n == 1 || n == 2);

        rc = mx_pdu_check_join_signatures(rv, pdu, fuzz_lookup, NULL, &res);
        check_result(rc, &res);
    }

    json_decref(pdu);

    return 0;
}
