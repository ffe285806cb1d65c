/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync, a pass's step 2: the forward extremities, from
 * make_join for a joined local user, and the edge joins judged against
 * them; a pass that finds nothing new ends here.
 */

#include <stdio.h>
#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"
#include "mx_json.h"


static int mxj_sync_in_ids(const mxj_sync_ids_t *l, const char *s,
    size_t n);
static int mxj_sync_try_make_join(mxj_sync_pass_t *p, const char *user,
    int *next);


/*
 * make_join for a joined local user: the template's prev_events are the
 * room's forward extremities (a soft-failed event is never one). The
 * candidates: the snapshot's joined user of NAME, the --user options,
 * then @matrix-join-sync:NAME; a 403 or 404 tries the next.
 */

int
mxj_sync_make_join(mxj_sync_pass_t *p)
{
    int              next;
    char             tried[MXJ_SYNC_WHY_LEN];
    size_t           i, n;
    mx_buf_t         sync_user = MX_BUF_INIT;
    mxj_sync_ids_t   cands;

    memset(&cands, 0, sizeof(mxj_sync_ids_t));

    if (p->server_user[0] != '\0'
        && mxj_sync_ids_push(&cands, p->server_user) != 0)
    {
        return mxj_sync_fail(p, "out of memory");
    }

    for (i = 0; i < p->s->users.n; i++) {
        if (mxj_sync_ids_push(&cands, p->s->users.v[i]) != 0) {
            mxj_sync_ids_free(&cands);
            return mxj_sync_fail(p, "out of memory");
        }
    }

    if (mx_buf_append_str(&sync_user, "@" MXJ_SYNC_LOCALPART ":") != 0
        || mx_buf_append_str(&sync_user, p->s->name) != 0
        || mxj_sync_ids_push(&cands, sync_user.data) != 0)
    {
        mx_buf_free(&sync_user);
        mxj_sync_ids_free(&cands);
        return mxj_sync_fail(p, "out of memory");
    }

    mx_buf_free(&sync_user);

    tried[0] = '\0';
    n = 0;

    for (i = 0; i < cands.n && n < MXJ_SYNC_USERS_TRIED; i++) {
        if (i > 0 && mxj_sync_in_ids(&cands, cands.v[i], i)) {
            continue;
        }

        n++;
        next = 0;

        if (mxj_sync_try_make_join(p, cands.v[i], &next) == 0) {
            mxj_sync_ids_free(&cands);
            return 0;
        }

        if (!next) {
            mxj_sync_ids_free(&cands);
            return -1;
        }

        snprintf(tried + strlen(tried), sizeof(tried) - strlen(tried),
                 "%s%s", tried[0] ? "; " : "", p->why);
    }

    mxj_sync_ids_free(&cands);

    return mxj_sync_fail(p, "no local user could make_join: %s", tried);
}


static int
mxj_sync_in_ids(const mxj_sync_ids_t *l, const char *s, size_t n)
{
    size_t  i;

    for (i = 0; i < n && i < l->n; i++) {
        if (strcmp(l->v[i], s) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
mxj_sync_try_make_join(mxj_sync_pass_t *p, const char *user, int *next)
{
    long                      status;
    char                      what[300];
    size_t                    i, n;
    json_t                   *doc, *ev, *prev, *r, *d;
    mx_buf_t                  uri = MX_BUF_INIT;
    const char               *ver;
    const mx_room_version_t  *versions;

    versions = mx_room_versions(&n);

    if (mxj_sync_uri(&uri, MXJ_SYNC_FED "make_join/", p->id, "/", user)
        != 0)
    {
        goto nomem;
    }

    for (i = 0; i < n; i++) {
        if (mx_buf_append_str(&uri, i ? "&ver=" : "?ver=") != 0
            || mx_buf_append_str(&uri, versions[i].id) != 0)
        {
            goto nomem;
        }
    }

    status = mxj_sync_http_request(&p->s->http, "GET", uri.data, NULL, 1);
    mx_buf_free(&uri);

    if (status != 200) {
        snprintf(what, sizeof(what), "make_join for %.255s", user);
        mxj_sync_http_why(&p->s->http, what, p->why, p->len);
        *next = (status == 403 || status == 404);

        /* the homeserver's room version is none the edge offers: the
           room cannot be cached, and every pass would say so again */

        if (status == 400
            && strstr(p->why, "M_INCOMPATIBLE_ROOM_VERSION") != NULL)
        {
            p->room->unsupported = 1;
        }

        return -1;
    }

    doc = json_loadb(p->s->http.c.body.data, p->s->http.c.body.len, 0,
                     NULL);
    ver = json_string_value(json_object_get(doc, "room_version"));
    ev = json_object_get(doc, "event");
    prev = json_object_get(ev, "prev_events");
    d = json_object_get(ev, "depth");

    if (ver == NULL || !json_is_array(prev) || json_array_size(prev) == 0
        || !json_is_integer(d))
    {
        json_decref(doc);
        return mxj_sync_fail(p, "make_join for %s: no room_version, "
                             "prev_events or depth in the answer", user);
    }

    p->rv = mx_room_version(ver, strlen(ver));

    if (p->rv == NULL) {
        json_decref(doc);
        p->room->unsupported = 1;
        return mxj_sync_fail(p, "make_join for %s: unknown room version "
                             "\"%.32s\"", user, ver);
    }

    p->template_depth = json_integer_value(d);

    for (i = 0; i < json_array_size(prev); i++) {
        r = json_array_get(prev, i);

        if (p->rv->event_refs_with_hashes) {
            r = json_is_array(r) ? json_array_get(r, 0) : NULL;
        }

        if (!json_is_string(r) || json_string_length(r) == 0
            || json_string_length(r) >= MX_EVENT_ID_MAX
            || memchr(json_string_value(r), '\0', json_string_length(r)))
        {
            json_decref(doc);
            return mxj_sync_fail(p, "make_join for %s: prev_events[%zu] is "
                                 "not an event ID", user, i);
        }

        if (!mxj_sync_in_ids(&p->x, json_string_value(r), p->x.n)
            && mxj_sync_ids_push(&p->x, json_string_value(r)) != 0)
        {
            json_decref(doc);
            return mxj_sync_fail(p, "out of memory");
        }
    }

    json_decref(doc);

    return 0;

nomem:

    mx_buf_free(&uri);

    return mxj_sync_fail(p, "out of memory");
}


/* The joins of P{R}:unconfirmed, parsed now that the version is known. */

int
mxj_sync_joins(mxj_sync_pass_t *p)
{
    char              id[MX_EVENT_ID_MAX];
    size_t            i;
    json_t           *rec, *pdu, *passes;
    mx_err_t          err;
    redisReply       *list;
    mxj_sync_map_t    delivered, queued;
    mxj_sync_join_t  *j;

    list = p->read->element[2];

    memset(&delivered, 0, sizeof(mxj_sync_map_t));
    memset(&queued, 0, sizeof(mxj_sync_map_t));

    if (p->njoins > 0
        && (mxj_sync_index(&delivered, p->delivered, 2) != 0
            || mxj_sync_index(&queued, p->outbox, 1) != 0))
    {
        mxj_sync_map_free(&delivered);
        mxj_sync_map_free(&queued);
        return mxj_sync_fail(p, "out of memory");
    }

    for (i = 0; i < p->njoins; i++) {
        j = &p->joins[i];
        j->id = strdup(list->element[2 * i]->str);

        if (j->id == NULL) {
            mxj_sync_map_free(&delivered);
            mxj_sync_map_free(&queued);
            return mxj_sync_fail(p, "out of memory");
        }

        j->delivered = (mxj_sync_map_get(&delivered, j->id) != NULL);
        j->queued = (mxj_sync_map_get(&queued, j->id) != NULL);

        rec = mx_json_parse(list->element[2 * i + 1]->str,
                            list->element[2 * i + 1]->len, 0, &err);
        pdu = json_object_get(rec, "pdu");
        passes = json_object_get(rec, "passes");

        if (!json_is_object(pdu) || !json_is_integer(passes)
            || mx_event_id(p->rv, pdu, id, sizeof(id), &err) < 0
            || strcmp(id, j->id) != 0)
        {
            mxj_sync_log("room=%s: the record of edge join %s in %s is not "
                         "{\"pdu\": <its PDU>, \"passes\": N}: removed",
                         p->id, j->id, p->k_unconfirmed);
            json_decref(rec);
            j->fate = MXJ_SYNC_JOIN_CONFIRMED;
            j->why = "malformed";
            continue;
        }

        j->old_passes = json_integer_value(passes);
        j->json = json_incref(pdu);
        json_decref(rec);

        j->pdu = mx_json_canonical_str(j->json, NULL, &err);
        j->ev = mxj_sync_ev_new(p->rv, j->json, j->id, &err);

        if (j->pdu == NULL || j->ev == NULL) {
            mxj_sync_map_free(&delivered);
            mxj_sync_map_free(&queued);
            return mxj_sync_fail(p, "edge join %s: %s", j->id, err.text);
        }
    }

    mxj_sync_map_free(&delivered);
    mxj_sync_map_free(&queued);

    return 0;
}


/* Each join's fate, against what the homeserver is known to hold. */

void
mxj_sync_judge(mxj_sync_pass_t *p, mxj_sync_map_t *known)
{
    size_t            i;
    mxj_sync_join_t  *j;

    p->kept = 0;
    p->confirmed = 0;
    p->dropped = 0;

    for (i = 0; i < p->njoins; i++) {
        j = &p->joins[i];

        if (j->ev == NULL) {
            continue;           /* a malformed record: removed */
        }

        j->passes = j->old_passes;
        j->fate = mxj_sync_judge_join(mxj_sync_map_get(known, j->id)
                                      != NULL,
                                      j->delivered, j->queued, &j->passes,
                                      p->s->confirm_passes, &j->why);

        switch (j->fate) {

        case MXJ_SYNC_JOIN_CONFIRMED:
            p->confirmed++;
            break;

        case MXJ_SYNC_JOIN_KEEP:
            p->kept++;
            break;

        default:
            p->dropped++;
            break;
        }
    }
}


/*
 * The extremities are those the last pass loaded from (meta), the snapshot
 * is ours and not stale, and no join is to be dropped: nothing to fetch.
 * The joins' passes are counted, loaded_at renewed (the snapshot was
 * checked against the homeserver now). 0 when so, 1 when the pass must
 * fetch, -1 on an error.
 */

int
mxj_sync_unchanged(mxj_sync_pass_t *p)
{
    int              rc;
    size_t           i;
    mx_buf_t         ext = MX_BUF_INIT;
    const char      *gen, *from, *was;
    redisReply      *reply;
    mxj_sync_map_t   known;

    gen = mxj_sync_meta(p, MX_META_GENERATION);
    from = mxj_sync_meta(p, MX_META_SYNCED_FROM);
    was = mxj_sync_meta(p, MX_META_SYNCED_EXTREMITIES);

    if (gen == NULL || from == NULL || was == NULL
        || strcmp(from, p->s->homeserver) != 0
        || mxj_sync_meta(p, MX_META_STALE) != NULL)
    {
        return 1;
    }

    if (mxj_sync_extremities_json(p, &ext) != 0) {
        mx_buf_free(&ext);
        return mxj_sync_fail(p, "out of memory");
    }

    rc = strcmp(ext.data, was);
    mx_buf_free(&ext);

    if (rc != 0) {
        return 1;
    }

    memset(&known, 0, sizeof(mxj_sync_map_t));

    for (i = 0; i < p->x.n; i++) {
        if (mxj_sync_map_put(&known, p->x.v[i], p->x.v[i]) != 0) {
            mxj_sync_map_free(&known);
            return mxj_sync_fail(p, "out of memory");
        }
    }

    mxj_sync_judge(p, &known);
    mxj_sync_map_free(&known);

    if (p->dropped > 0) {
        return 1;
    }

    reply = mxj_redis_script(&p->s->r, MX_LUA_SYNC_FRESH, 1, 2,
                             (const char *[]) { p->k_meta, gen }, NULL);
    if (reply == NULL) {
        return mxj_sync_fail(p, "renewing loaded_at failed");
    }

    rc = (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1);
    freeReplyObject(reply);

    if (!rc) {
        return 1;               /* loaded by someone else meanwhile */
    }

    if (mxj_sync_bookkeep(p) != 0) {
        mxj_sync_log("room=%s: the edge joins' records were not updated "
                     "(the next pass judges them again)", p->id);
    }

    mxj_sync_log("room=%s unchanged on %s: %zu forward extremities as at "
                 "the last pass, nothing fetched; edge joins kept %zu; "
                 "%llu requests, %.2f s", p->id, p->s->homeserver, p->x.n,
                 p->kept,
                 (unsigned long long) (p->s->http.c.requests - p->requests0),
                 (double) (mxj_run_mono_ms() - p->t0) / 1000);

    return 0;
}
