/*
 * Copyright (C) nginx-matrix-join authors.
 * Writes the seeds of fuzz_pdu and fuzz_snapshot that need the core to
 * make (signed joins, content hashes, event IDs): the join of
 * t/unit/test_pdu.c signed with the spec key for each room version, and
 * the small room of t/unit/test_snapshot.c for v1, v10 and v12.
 *   mkseeds DIR   writes DIR/fuzz_pdu/ and DIR/fuzz_snapshot/
 * Built and run by hand; the output is committed:
 *   clang -g -Isrc/core -It/fuzz -o build/fuzz/mkseeds t/fuzz/mkseeds.c \
 *       src/core/*.c -ljansson -lsodium && build/fuzz/mkseeds t/fuzz/corpus
 */

#include "fuzz_common.h"
#include "mx_base64.h"
#include "mx_event.h"
#include "mx_id.h"
#include "mx_json.h"


#define REF_V3   "$CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"
#define REF_V4   "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
#define REF_HASH "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"


static void
write_file(const char *dir, const char *name, int first, const char *s)
{
    char   path[1024];
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    check(f != NULL);
    if (first >= 0) {          /* the room version byte */
        fputc(first, f);
    }
    fputs(s, f);
    check(fclose(f) == 0);
}


static const mx_room_version_t *
rv_of(const char *v, uint8_t *byte)
{
    size_t                    n, i;
    const mx_room_version_t  *rows;

    rows = mx_room_versions(&n);
    for (i = 0; i < n; i++) {
        if (strcmp(rows[i].id, v) == 0) {
            *byte = (uint8_t) i;
            return &rows[i];
        }
    }

    abort();
}


static json_t *
pdu_ref(const mx_room_version_t *rv, int i)
{
    char  id[64];

    if (rv->event_refs_with_hashes) {
        snprintf(id, sizeof(id), "$ev%d:edge.example", i);
        return json_pack("[s,{s:s}]", id, "sha256", REF_HASH);
    }

    snprintf(id, sizeof(id), "%s",
             rv->event_id_format == MX_EVENT_ID_HASH_STD ? REF_V3 : REF_V4);
    id[1] = 'A' + i % 26;

    return json_string(id);
}


static void
pdu_seed(const char *dir, const char *v)
{
    int                        i;
    char                       name[64], *s;
    uint8_t                    b;
    json_t                    *ev, *prev, *auth;
    mx_err_t                   err;
    const mx_room_version_t   *rv;

    rv = rv_of(v, &b);
    prev = json_array();
    auth = json_array();
    json_array_append_new(prev, pdu_ref(rv, 0));
    for (i = 0; i < 3; i++) {
        json_array_append_new(auth, pdu_ref(rv, i + 1));
    }

    ev = json_pack("{s:s, s:s, s:s, s:s, s:{s:s}, s:I, s:I, s:s, s:o, s:o}",
                   "type", "m.room.member",
                   "room_id", rv->room_id_from_create
                              ? "!_k1ioeTbFXPfHPo6nPxwPAneNWRpzFAjssCI3Cprj2U"
                              : "!room:edge.example",
                   "sender", "@bob:remote.example",
                   "state_key", "@bob:remote.example",
                   "content", "membership", "join",
                   "depth", (json_int_t) 12,
                   "origin_server_ts", (json_int_t) 1700000000000LL,
                   "origin", "remote.example",
                   "prev_events", prev, "auth_events", auth);
    check(ev != NULL);

    if (rv->event_id_format == MX_EVENT_ID_SERVER) {
        json_object_set_new(ev, "event_id",
                            json_string("$join1:remote.example"));
    }

    if (rv->restricted) {
        json_object_set_new(json_object_get(ev, "content"),
                            "join_authorised_via_users_server",
                            json_string("@admin:edge.example"));
    }

    check(mx_event_sign(rv, ev, "remote.example", &fuzz_key, &err) == 0);

    s = mx_json_canonical_str(ev, NULL, &err);
    check(s != NULL);
    snprintf(name, sizeof(name), "join_v%s", v);
    write_file(dir, name, b, s);
    free(s);
    json_decref(ev);
}


/* the room of t/unit/test_snapshot.c */

typedef struct {
    const mx_room_version_t  *rv;
    char                      room_id[MX_ID_MAX_LEN + 1];
    int                       serial;
} room_t;


static json_t *
snap_ref(room_t *r, json_t *ev)
{
    char      id[MX_EVENT_ID_MAX], b64[64];
    uint8_t   hash[MX_SHA256_LEN];
    mx_err_t  err;

    check(mx_event_id(r->rv, ev, id, sizeof(id), &err) > 0);

    if (!r->rv->event_refs_with_hashes) {
        return json_string(id);
    }

    check(mx_event_reference_hash(r->rv, ev, hash, &err) == 0);
    mx_b64_encode(b64, hash, sizeof(hash), MX_B64_STD);

    return json_pack("[s{ss}]", id, "sha256", b64);
}


static json_t *
snap_event(room_t *r, const char *type, const char *skey, const char *sender,
    json_t *content, int depth, json_t *create, json_t **auth, json_t *prev)
{
    char      id[64];
    json_t   *ev, *a, *p;
    mx_err_t  err;

    a = json_array();
    if (create && r->rv->create_in_auth_events) {
        json_array_append_new(a, snap_ref(r, create));
    }
    for ( /* void */ ; auth && *auth; auth++) {
        json_array_append_new(a, snap_ref(r, *auth));
    }

    p = json_array();
    if (prev) {
        json_array_append_new(p, snap_ref(r, prev));
    }

    ev = json_pack("{ss ss so si sI so so s{} s{s{ss}}}",
                   "type", type, "sender", sender, "content", content,
                   "depth", depth, "origin_server_ts",
                   (json_int_t) 1700000000000 + depth,
                   "auth_events", a, "prev_events", p, "hashes",
                   "signatures", "example.org", "ed25519:1", "c2ln");
    check(ev != NULL);

    if (skey) {
        json_object_set_new(ev, "state_key", json_string(skey));
    }
    if (r->room_id[0]) {
        json_object_set_new(ev, "room_id", json_string(r->room_id));
    }
    if (r->rv->event_id_format == MX_EVENT_ID_SERVER) {
        snprintf(id, sizeof(id), "$ev%d:example.org", r->serial++);
        json_object_set_new(ev, "event_id", json_string(id));
    }

    check(mx_event_set_content_hash(ev, &err) == 0);

    return ev;
}


static void
snapshot_seed(const char *dir, const char *v)
{
    char       name[64], id[MX_EVENT_ID_MAX], *s;
    uint8_t    b;
    json_t    *c, *al, *pl, *jr, *bob, *msg, *content, *doc, *auth[4];
    room_t     r;
    mx_err_t   err;

    memset(&r, 0, sizeof(r));
    r.rv = rv_of(v, &b);
    if (!r.rv->room_id_from_create) {
        strcpy(r.room_id, "!room:example.org");
    }

    content = json_pack("{ss}", "room_version", v);
    if (!r.rv->creator_is_sender) {
        json_object_set_new(content, "creator",
                            json_string("@alice:example.org"));
    }
    c = snap_event(&r, "m.room.create", "", "@alice:example.org", content, 1,
                   NULL, NULL, NULL);

    if (r.rv->room_id_from_create) {
        check(mx_event_id(r.rv, c, id, sizeof(id), &err) > 0);
        snprintf(r.room_id, sizeof(r.room_id), "!%s", id + 1);
    }

    auth[0] = NULL;
    al = snap_event(&r, "m.room.member", "@alice:example.org",
                    "@alice:example.org",
                    json_pack("{ss}", "membership", "join"), 2, c, auth, c);
    auth[0] = al;
    auth[1] = NULL;
    pl = snap_event(&r, "m.room.power_levels", "", "@alice:example.org",
                    r.rv->creators_infinite_power
                    ? json_pack("{s{}}", "users")
                    : json_pack("{s{si}}", "users", "@alice:example.org",
                                100),
                    3, c, auth, al);
    auth[1] = pl;
    auth[2] = NULL;
    jr = snap_event(&r, "m.room.join_rules", "", "@alice:example.org",
                    json_pack("{ss}", "join_rule", "public"), 4, c, auth, pl);
    auth[0] = pl;
    auth[1] = jr;
    auth[2] = NULL;
    bob = snap_event(&r, "m.room.member", "@bob:b.example.org",
                     "@bob:b.example.org",
                     json_pack("{ss ss}", "membership", "join",
                               "displayname", "Bob"), 5, c, auth, jr);
    auth[1] = bob;
    msg = snap_event(&r, "m.room.message", NULL, "@bob:b.example.org",
                     json_pack("{ss ss}", "msgtype", "m.text",
                               "body", "hello"), 6, c, auth, bob);

    doc = json_pack("{ss s[OOOOO] s[OOOO] s[O] s[s]}",
                    "room_version", v,
                    "state", c, pl, jr, al, bob,
                    "auth_chain", c, al, pl, jr,
                    "forward_extremities", msg,
                    "aliases", "#room:example.org");
    check(doc != NULL);

    s = json_dumps(doc, JSON_COMPACT);
    check(s != NULL);
    snprintf(name, sizeof(name), "room_v%s", v);
    write_file(dir, name, -1, s);
    free(s);

    json_decref(doc);
    json_decref(c);
    json_decref(al);
    json_decref(pl);
    json_decref(jr);
    json_decref(bob);
    json_decref(msg);
}


int
main(int argc, char **argv)
{
    char         dir[1024];
    size_t       i;
    const char  *pdu_versions[] = { "1", "3", "4", "6", "8", "10", "11",
                                    "12" };
    const char  *snap_versions[] = { "1", "10", "12" };

    if (argc != 2) {
        fprintf(stderr, "usage: mkseeds DIR\n");
        return 2;
    }

    fuzz_init();

    snprintf(dir, sizeof(dir), "%s/fuzz_pdu", argv[1]);
    for (i = 0; i < sizeof(pdu_versions) / sizeof(pdu_versions[0]); i++) {
        pdu_seed(dir, pdu_versions[i]);
    }

    snprintf(dir, sizeof(dir), "%s/fuzz_snapshot", argv[1]);
    for (i = 0; i < sizeof(snap_versions) / sizeof(snap_versions[0]); i++) {
        snapshot_seed(dir, snap_versions[i]);
    }

    return 0;
}
