/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync, a pass's step 4: every event received checked
 * with the core, the keys of the servers that signed them asked first
 * from the homeserver's notary.
 */

#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"
#include "mx_json.h"
#include "mx_scan.h"


static int mxj_sync_each_pdu(mxj_sync_pass_t *p, mxj_sync_body_t *b,
    int (*fn)(mxj_sync_pass_t *p, const char *text, size_t len,
        mxj_sync_body_t *b, mxj_sync_ids_t *into));
static int mxj_sync_signers(mxj_sync_pass_t *p, const char *text,
    size_t len, mxj_sync_body_t *b, mxj_sync_ids_t *into);
static int mxj_sync_check_pdu(mxj_sync_pass_t *p, const char *text,
    size_t len, mxj_sync_body_t *b, mxj_sync_ids_t *into);
static int mxj_sync_keys_again(mxj_sync_pass_t *p, const json_t *ev);
static const char *mxj_sync_body_what(const mxj_sync_body_t *b);


/*
 * Every event received: the keys of the servers that signed them first,
 * from the homeserver's notary, all at once; then each event checked and
 * kept by ID.
 */

int
mxj_sync_check(mxj_sync_pass_t *p)
{
    size_t  i;
    char    why[MXJ_SYNC_WHY_LEN];

    for (i = 0; i < p->nbodies; i++) {
        if (!p->bodies[i].checked
            && mxj_sync_each_pdu(p, &p->bodies[i], mxj_sync_signers) != 0)
        {
            return -1;
        }
    }

    if (p->signers.n > 0
        && mxj_sync_keyring_fetch(&p->s->keyring, &p->s->http, &p->signers,
                                  why, sizeof(why)) != 0)
    {
        return mxj_sync_fail(p, "server keys: %s", why);
    }

    for (i = 0; i < p->nbodies; i++) {
        if (p->bodies[i].checked) {
            continue;
        }

        if (mxj_sync_each_pdu(p, &p->bodies[i], mxj_sync_check_pdu) != 0) {
            return -1;
        }

        /* checked and kept as events: the text is not needed any more */

        p->bodies[i].checked = 1;
        mx_buf_free(&p->bodies[i].text);
    }

    return 0;
}


/*
 * Calls fn for each PDU of an answer: /state's pdus (the state, into
 * hs_state when the pass is full) and auth_chain (hs_auth); /event's one.
 */

static int
mxj_sync_each_pdu(mxj_sync_pass_t *p, mxj_sync_body_t *b,
    int (*fn)(mxj_sync_pass_t *p, const char *text, size_t len,
        mxj_sync_body_t *b, mxj_sync_ids_t *into))
{
    int              rc, k, n;
    size_t           pos, list_len, el_len;
    const char      *list, *el;
    mxj_sync_ids_t  *into;

    static const char  *names[] = { "pdus", "auth_chain" };
    static const char  *events[] = { "events" };
    const char        **lists;

    n = (b->kind == MXJ_SYNC_BODY_STATE) ? 2 : 1;
    lists = (b->kind == MXJ_SYNC_BODY_MISSING) ? events : names;

    for (k = 0; k < n; k++) {
        if (mx_scan_member(b->text.data, b->text.len, lists[k], &list,
                                 &list_len) != 0)
        {
            return mxj_sync_fail(p, "%s%s: no %s list in the answer",
                                 mxj_sync_body_what(b),
                                 b->expect ? b->expect : "", lists[k]);
        }

        into = (b->kind != MXJ_SYNC_BODY_STATE) ? NULL
               : (k == 0) ? &p->hs_state : &p->hs_auth;
        pos = 0;

        for ( ;; ) {
            rc = mx_scan_next(list, list_len, &pos, &el, &el_len);

            if (rc == 0) {
                break;
            }

            if (rc < 0) {
                return mxj_sync_fail(p, "%s%s: the %s list is not JSON",
                                     mxj_sync_body_what(b),
                                     b->expect ? b->expect : "", lists[k]);
            }

            if (fn(p, el, el_len, b, into) != 0) {
                return -1;
            }

            if (b->kind == MXJ_SYNC_BODY_EVENT) {
                return 0;       /* one event asked, the first one */
            }
        }

        if (b->kind == MXJ_SYNC_BODY_EVENT) {
            return mxj_sync_fail(p, "/event/%s: no event in the answer",
                                 b->expect);
        }
    }

    return 0;
}


/* The servers that must have signed one event (stage one of the checks). */

static int
mxj_sync_signers(mxj_sync_pass_t *p, const char *text, size_t len,
    mxj_sync_body_t *b, mxj_sync_ids_t *into)
{
    int        i, n;
    char       names[2][256];
    json_t    *ev;
    mx_err_t   err;

    ev = mx_json_parse(text, len, p->rv->strict_json ? MX_JSON_STRICT : 0,
                       &err);

    if (ev == NULL) {
        return mxj_sync_fail(p, "an event of %s%s: %s",
                             mxj_sync_body_what(b),
                             b->expect ? b->expect : "", err.text);
    }

    n = json_is_object(ev) ? mx_event_required_signers(p->rv, ev, names,
                                                       &err)
                           : -1;
    json_decref(ev);

    if (n < 0) {
        return 0;               /* the check proper says what is wrong */
    }

    for (i = 0; i < n; i++) {
        if (mxj_sync_map_get(&p->signers_seen, names[i]) != NULL) {
            continue;
        }

        if (mxj_sync_ids_push(&p->signers, names[i]) != 0
            || mxj_sync_map_put(&p->signers_seen,
                                p->signers.v[p->signers.n - 1],
                                p->signers.v[p->signers.n - 1]) != 0)
        {
            return mxj_sync_fail(p, "out of memory");
        }
    }

    return 0;
}


/*
 * One event received: its ID (the one asked for, for /event), its room,
 * its content hash, the signatures of its sender's server (and in v1/v2
 * of its event ID's server) with the notary's keys.
 */

static int
mxj_sync_check_pdu(mxj_sync_pass_t *p, const char *text, size_t len,
    mxj_sync_body_t *b, mxj_sync_ids_t *into)
{
    int             rc, n, i;
    char            id[MX_EVENT_ID_MAX], rid[MX_ID_MAX_LEN + 1];
    char            names[2][256];
    json_t         *ev;
    mx_err_t        err;
    const char     *room, *type, *sk, *why;
    mxj_sync_ev_t  *x;

    ev = mx_json_parse(text, len, p->rv->strict_json ? MX_JSON_STRICT : 0,
                       &err);

    if (ev == NULL) {
        return mxj_sync_fail(p, "an event of %s%s: %s",
                             mxj_sync_body_what(b),
                             b->expect ? b->expect : "", err.text);
    }

    rc = -1;

    if (!json_is_object(ev)) {
        mxj_sync_fail(p, "an event of %s%s is not an object",
                      mxj_sync_body_what(b),
                      b->expect ? b->expect : "");
        goto done;
    }

    if (mx_event_id(p->rv, ev, id, sizeof(id), &err) < 0) {
        mxj_sync_fail(p, "an event of %s%s: %s",
                      mxj_sync_body_what(b),
                      b->expect ? b->expect : "", err.text);
        goto done;
    }

    if (b->expect != NULL && strcmp(id, b->expect) != 0) {
        mxj_sync_fail(p, "/event/%s answered event %s", b->expect, id);
        goto done;
    }

    /* the room: room_id, or in v12 the create event's own hash */

    type = json_string_value(json_object_get(ev, "type"));
    sk = json_string_value(json_object_get(ev, "state_key"));

    if (p->rv->room_id_from_create && type != NULL && sk != NULL
        && strcmp(type, "m.room.create") == 0 && sk[0] == '\0')
    {
        room = (mx_event_room_id_from_create(p->rv, ev, rid, sizeof(rid),
                                             &err) < 0) ? NULL : rid;

    } else {
        room = json_string_value(json_object_get(ev, "room_id"));
    }

    if (room == NULL || strcmp(room, p->id) != 0) {
        mxj_sync_fail(p, "event %s is of room %.100s, not %s", id,
                      room ? room : "(none)", p->id);
        goto done;
    }

    if (mx_event_check_content_hash(ev, &err) != 0) {
        mxj_sync_fail(p, "event %s: %s", id, err.text);
        goto done;
    }

    rc = mx_event_check_signatures(p->rv, ev, mxj_sync_keyring_lookup,
                                   &p->s->keyring, &err);

    if (rc != 0 && mxj_sync_keys_again(p, ev)) {
        rc = mx_event_check_signatures(p->rv, ev, mxj_sync_keyring_lookup,
                                       &p->s->keyring, &err);
    }

    if (rc != 0) {
        rc = -1;
        why = NULL;
        n = mx_event_required_signers(p->rv, ev, names, NULL);

        for (i = 0; why == NULL && i < n; i++) {
            why = mxj_sync_keyring_why(&p->s->keyring, names[i]);
        }

        mxj_sync_fail(p, "event %s: signature: %s%s%s%s", id, err.text,
                      why ? " (" : "", why ? why : "", why ? ")" : "");
        goto done;
    }

    if (into != NULL && mxj_sync_ids_push(into, id) != 0) {
        mxj_sync_fail(p, "out of memory");
        goto done;
    }

    if (mxj_sync_pool_get(&p->room->pool, id) == NULL) {
        x = mxj_sync_ev_new(p->rv, ev, id, &err);

        if (x == NULL) {
            mxj_sync_fail(p, "event %s: %s", id, err.text);
            goto done;
        }

        if (mxj_sync_pool_add(&p->room->pool, x) != 0) {
            mxj_sync_fail(p, "out of memory");
            goto done;
        }
    }

    rc = 0;

done:

    json_decref(ev);

    return rc;
}


/*
 * A signature that did not verify, with keys asked a minute ago or more:
 * the server may have a new key since. Its signers' keys asked again,
 * once; 1 when they were.
 */

static int
mxj_sync_keys_again(mxj_sync_pass_t *p, const json_t *ev)
{
    int              i, n, again;
    char             names[2][256], why[MXJ_SYNC_WHY_LEN];
    mxj_sync_ids_t   want;

    n = mx_event_required_signers(p->rv, ev, names, NULL);
    again = 0;

    memset(&want, 0, sizeof(mxj_sync_ids_t));

    for (i = 0; i < n; i++) {
        if (mxj_sync_keyring_expire(&p->s->keyring, names[i],
                                    MXJ_SYNC_KEYS_AGAIN_MS)
            && mxj_sync_ids_push(&want, names[i]) == 0)
        {
            again = 1;
        }
    }

    if (again && mxj_sync_keyring_fetch(&p->s->keyring, &p->s->http, &want,
                                        why, sizeof(why)) != 0)
    {
        mxj_sync_log("room=%s: server keys asked again: %s", p->id, why);
        again = 0;
    }

    mxj_sync_ids_free(&want);

    return again;
}


static const char *
mxj_sync_body_what(const mxj_sync_body_t *b)
{
    switch (b->kind) {

    case MXJ_SYNC_BODY_STATE:
        return "/state";

    case MXJ_SYNC_BODY_MISSING:
        return "/get_missing_events";

    default:
        return "/event/";
    }
}
