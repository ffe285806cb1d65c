/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync: the snapshot document made of the events received
 * from the homeserver (ctl_sync_pool.c) and of the edge joins kept
 * (docs/sync.md, steps 3 and 5). The document then goes through load's
 * own checks and loader (mx_snapshot_parse, mxj_load_snapshot).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_sync.h"
#include "mx_json.h"


static int mxj_sync_ev_cmp(const void *a, const void *b);


typedef struct {
    const mxj_sync_doc_t   *d;
    mxj_sync_ids_t         *missing;
    mxj_sync_map_t          joins;      /* ID -> kept join */
    mxj_sync_map_t          seen;       /* ID -> event: the auth chain */
    mxj_sync_map_t          keys;       /* state key -> slot + 1 */
    mxj_sync_ids_t          key_strs;   /* the keys' strings */
    mxj_sync_ev_t         **state;
    size_t                  nstate;
    size_t                  state_cap;
    mxj_sync_ev_t         **chain;
    size_t                  nchain;
    size_t                  chain_cap;
    mxj_sync_map_t          rank;       /* ID -> position + 1 in d->auth */
    mxj_sync_ids_t          stack;
    const char             *create_id;
} mxj_sync_build_t;


static int mxj_sync_build_state(mxj_sync_build_t *b, mx_err_t *err);
static int mxj_sync_build_put(mxj_sync_build_t *b, mxj_sync_ev_t *ev,
    mxj_sync_ev_t **replaced, mx_err_t *err);
static int mxj_sync_build_joins(mxj_sync_build_t *b, mx_err_t *err);
static int mxj_sync_build_chain(mxj_sync_build_t *b, mx_err_t *err);
static int mxj_sync_build_walk(mxj_sync_build_t *b, mxj_sync_ev_t *ev);
static int mxj_sync_build_write(mxj_sync_build_t *b, mx_buf_t *out,
    mx_err_t *err);
static int mxj_sync_build_missing(mxj_sync_build_t *b, const char *id);
static int mxj_sync_push_ev(mxj_sync_ev_t ***v, size_t *n, size_t *cap,
    mxj_sync_ev_t *ev);
static mxj_sync_ev_t *mxj_sync_build_find(mxj_sync_build_t *b,
    const char *id);
static int mxj_sync_rank_cmp(const void *a, const void *b);


typedef struct {
    mxj_sync_ev_t  *ev;
    size_t          rank;       /* position + 1 in d->auth, 0: absent */
} mxj_sync_ranked_t;


int
mxj_sync_build_doc(const mxj_sync_doc_t *d, mx_buf_t *out,
    mxj_sync_ids_t *missing, mx_err_t *err)
{
    int               rc;
    size_t            i;
    mxj_sync_build_t  b;

    memset(&b, 0, sizeof(mxj_sync_build_t));
    b.d = d;
    b.missing = missing;

    rc = -1;

    for (i = 0; i < d->njoins; i++) {
        if (mxj_sync_map_put(&b.joins, d->joins[i]->id, d->joins[i]) != 0) {
            mx_err_set(err, "out of memory");
            goto done;
        }
    }

    if (mxj_sync_build_state(&b, err) != 0
        || mxj_sync_build_joins(&b, err) != 0
        || mxj_sync_build_chain(&b, err) != 0)
    {
        goto done;
    }

    if (missing->n > 0) {
        rc = 1;
        goto done;
    }

    rc = mxj_sync_build_write(&b, out, err);

done:

    mxj_sync_map_free(&b.joins);
    mxj_sync_map_free(&b.seen);
    mxj_sync_map_free(&b.keys);
    mxj_sync_map_free(&b.rank);
    mxj_sync_ids_free(&b.key_strs);
    mxj_sync_ids_free(&b.stack);
    free(b.state);
    free(b.chain);

    return rc;
}


static mxj_sync_ev_t *
mxj_sync_build_find(mxj_sync_build_t *b, const char *id)
{
    mxj_sync_ev_t  *ev;

    ev = mxj_sync_map_get(&b->joins, id);

    if (ev != NULL) {
        return ev;
    }

    return mxj_sync_pool_get(b->d->pool, id);
}


/* The state before E, then E in place of its key's event. */

static int
mxj_sync_build_state(mxj_sync_build_t *b, mx_err_t *err)
{
    size_t          i;
    mxj_sync_ev_t  *ev, *replaced;

    for (i = 0; i < b->d->state->n; i++) {
        ev = mxj_sync_pool_get(b->d->pool, b->d->state->v[i]);

        if (ev == NULL) {
            if (mxj_sync_build_missing(b, b->d->state->v[i]) != 0) {
                mx_err_set(err, "out of memory");
                return -1;
            }

            continue;
        }

        if (ev->state_key == NULL) {
            mx_err_set(err, "state event %.100s has no state_key", ev->id);
            return -1;
        }

        replaced = NULL;

        if (mxj_sync_build_put(b, ev, &replaced, err) != 0) {
            return -1;
        }

        if (replaced != NULL) {
            mx_err_set(err, "events %.100s and %.100s have the same state "
                       "key", replaced->id, ev->id);
            return -1;
        }
    }

    ev = mxj_sync_pool_get(b->d->pool, b->d->extremity);

    if (ev == NULL) {
        if (mxj_sync_build_missing(b, b->d->extremity) != 0) {
            mx_err_set(err, "out of memory");
            return -1;
        }

        return 0;
    }

    ev->mark = 1;

    if (ev->state_key != NULL) {
        return mxj_sync_build_put(b, ev, &replaced, err);
    }

    return 0;
}


/* ev takes the slot of its state key (*replaced: who had it) or a new one. */

static int
mxj_sync_build_put(mxj_sync_build_t *b, mxj_sync_ev_t *ev,
    mxj_sync_ev_t **replaced, mx_err_t *err)
{
    char      *key;
    size_t     n, slot;
    uintptr_t  v;

    n = strlen(ev->type) + strlen(ev->state_key) + 24;

    key = malloc(n);
    if (key == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    /* the type's length first: no two (type, state_key) pairs collide */

    snprintf(key, n, "%zu:%s%s", strlen(ev->type), ev->type, ev->state_key);

    v = (uintptr_t) mxj_sync_map_get(&b->keys, key);
    *replaced = NULL;

    if (v != 0) {
        free(key);
        slot = v - 1;
        *replaced = b->state[slot];
        b->state[slot] = ev;
        return 0;
    }

    if (mxj_sync_push_ev(&b->state, &b->nstate, &b->state_cap, ev) != 0
        || mxj_sync_ids_push(&b->key_strs, key) != 0)
    {
        free(key);
        mx_err_set(err, "out of memory");
        return -1;
    }

    free(key);

    if (mxj_sync_map_put(&b->keys, b->key_strs.v[b->key_strs.n - 1],
                         (void *) (uintptr_t) b->nstate) != 0)
    {
        mx_err_set(err, "out of memory");
        return -1;
    }

    if (strcmp(ev->type, "m.room.create") == 0 && ev->state_key[0] == '\0')
    {
        b->create_id = ev->id;
    }

    return 0;
}


/*
 * Each user's latest kept join (by depth, then origin_server_ts, then ID)
 * takes the place of the user's member event; the event it replaces is
 * kept in the auth chain.
 */

static int
mxj_sync_build_joins(mxj_sync_build_t *b, mx_err_t *err)
{
    size_t           i;
    mxj_sync_ev_t  **sorted, *ev, *replaced;
    mxj_sync_map_t   latest;

    if (b->d->njoins == 0) {
        return 0;
    }

    sorted = malloc(b->d->njoins * sizeof(mxj_sync_ev_t *));
    if (sorted == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    memcpy(sorted, b->d->joins, b->d->njoins * sizeof(mxj_sync_ev_t *));
    qsort(sorted, b->d->njoins, sizeof(mxj_sync_ev_t *), mxj_sync_ev_cmp);

    memset(&latest, 0, sizeof(mxj_sync_map_t));

    for (i = 0; i < b->d->njoins; i++) {
        ev = sorted[i];

        if (ev->state_key == NULL || ev->membership == NULL) {
            mx_err_set(err, "edge join %.100s is not a member event",
                       ev->id);
            goto failed;
        }

        if (mxj_sync_map_put(&latest, ev->state_key, ev) != 0) {
            mx_err_set(err, "out of memory");
            goto failed;
        }
    }

    for (i = 0; i < b->d->njoins; i++) {
        ev = sorted[i];

        if (mxj_sync_map_get(&latest, ev->state_key) != ev) {
            continue;
        }

        if (mxj_sync_build_put(b, ev, &replaced, err) != 0) {
            goto failed;
        }

        if (replaced != NULL && mxj_sync_ids_push(&b->stack, replaced->id)
                                != 0)
        {
            mx_err_set(err, "out of memory");
            goto failed;
        }
    }

    mxj_sync_map_free(&latest);
    free(sorted);

    return 0;

failed:

    mxj_sync_map_free(&latest);
    free(sorted);

    return -1;
}


static int
mxj_sync_ev_cmp(const void *a, const void *b)
{
    const mxj_sync_ev_t  *x, *y;

    x = *(mxj_sync_ev_t *const *) a;
    y = *(mxj_sync_ev_t *const *) b;

    if (x->depth != y->depth) {
        return x->depth < y->depth ? -1 : 1;
    }

    if (x->ts != y->ts) {
        return x->ts < y->ts ? -1 : 1;
    }

    return strcmp(x->id, y->id);
}


/* The homeserver's order, then by depth and ID. */

static int
mxj_sync_rank_cmp(const void *a, const void *b)
{
    const mxj_sync_ranked_t  *x, *y;

    x = a;
    y = b;

    if (x->rank != y->rank) {
        if (x->rank == 0 || y->rank == 0) {
            return x->rank == 0 ? 1 : -1;
        }

        return x->rank < y->rank ? -1 : 1;
    }

    if (x->ev->depth != y->ev->depth) {
        return x->ev->depth < y->ev->depth ? -1 : 1;
    }

    return strcmp(x->ev->id, y->ev->id);
}


/*
 * The auth chain: every event reachable from the state over auth_events
 * (in v12 the create event is implied), and the member events the joins
 * replaced (already on the stack), each once.
 */

static int
mxj_sync_build_chain(mxj_sync_build_t *b, mx_err_t *err)
{
    char           *id;
    size_t          i;
    mxj_sync_ev_t  *ev;

    for (i = 0; i < b->nstate; i++) {
        if (mxj_sync_build_walk(b, b->state[i]) != 0) {
            mx_err_set(err, "out of memory");
            return -1;
        }
    }

    while (b->stack.n > 0) {
        id = b->stack.v[--b->stack.n];

        if (mxj_sync_map_get(&b->seen, id) != NULL) {
            free(id);
            continue;
        }

        ev = mxj_sync_build_find(b, id);

        if (ev == NULL) {
            i = (size_t) mxj_sync_build_missing(b, id);
            free(id);

            if (i != 0) {
                mx_err_set(err, "out of memory");
                return -1;
            }

            continue;
        }

        free(id);

        if (mxj_sync_map_put(&b->seen, ev->id, ev) != 0
            || mxj_sync_push_ev(&b->chain, &b->nchain, &b->chain_cap, ev)
               != 0
            || mxj_sync_build_walk(b, ev) != 0)
        {
            mx_err_set(err, "out of memory");
            return -1;
        }
    }

    return 0;
}


/* Pushes the auth events of ev (v12: and the create event). */

static int
mxj_sync_build_walk(mxj_sync_build_t *b, mxj_sync_ev_t *ev)
{
    size_t  k;

    for (k = 0; k < ev->nauth; k++) {
        if (mxj_sync_map_get(&b->seen, ev->auth[k]) == NULL
            && mxj_sync_ids_push(&b->stack, ev->auth[k]) != 0)
        {
            return -1;
        }
    }

    if (!b->d->rv->create_in_auth_events && b->create_id != NULL
        && strcmp(ev->id, b->create_id) != 0
        && mxj_sync_map_get(&b->seen, b->create_id) == NULL)
    {
        return mxj_sync_ids_push(&b->stack, b->create_id);
    }

    return 0;
}


/* A missing ID, listed once (the list stays short: a linear search). */

static int
mxj_sync_build_missing(mxj_sync_build_t *b, const char *id)
{
    size_t  i;

    for (i = 0; i < b->missing->n; i++) {
        if (strcmp(b->missing->v[i], id) == 0) {
            return 0;
        }
    }

    return mxj_sync_ids_push(b->missing, id);
}


static int
mxj_sync_push_ev(mxj_sync_ev_t ***v, size_t *n, size_t *cap,
    mxj_sync_ev_t *ev)
{
    size_t           ncap;
    mxj_sync_ev_t  **nv;

    if (*n == *cap) {
        ncap = *cap ? *cap * 2 : 256;

        nv = realloc(*v, ncap * sizeof(mxj_sync_ev_t *));
        if (nv == NULL) {
            return -1;
        }

        *v = nv;
        *cap = ncap;
    }

    (*v)[(*n)++] = ev;

    return 0;
}


static int
mxj_sync_build_write(mxj_sync_build_t *b, mx_buf_t *out, mx_err_t *err)
{
    int                 first;
    size_t              i, k, j;
    mxj_sync_ev_t      *ev;
    mxj_sync_ranked_t  *ranked;

    /* the auth chain in the homeserver's order, what it did not list after */

    for (i = 0; i < b->d->auth->n; i++) {
        if (mxj_sync_map_get(&b->rank, b->d->auth->v[i]) == NULL
            && mxj_sync_map_put(&b->rank, b->d->auth->v[i],
                                (void *) (uintptr_t) (i + 1)) != 0)
        {
            goto nomem;
        }
    }

    if (b->nchain > 0) {
        ranked = malloc(b->nchain * sizeof(mxj_sync_ranked_t));
        if (ranked == NULL) {
            goto nomem;
        }

        for (i = 0; i < b->nchain; i++) {
            ranked[i].ev = b->chain[i];
            ranked[i].rank = (uintptr_t) mxj_sync_map_get(&b->rank,
                                                          b->chain[i]->id);
        }

        qsort(ranked, b->nchain, sizeof(mxj_sync_ranked_t),
              mxj_sync_rank_cmp);

        for (i = 0; i < b->nchain; i++) {
            b->chain[i] = ranked[i].ev;
        }

        free(ranked);
    }

    if (mx_buf_append_str(out, "{\"room_version\":") != 0
        || mx_json_canonical_string(b->d->rv->id, strlen(b->d->rv->id), out)
           != 0
        || mx_buf_append_str(out, ",\"state\":[") != 0)
    {
        goto nomem;
    }

    for (i = 0; i < b->nstate; i++) {
        b->state[i]->mark = 1;

        if ((i && mx_buf_append_byte(out, ',') != 0)
            || mx_buf_append(out, b->state[i]->pdu, b->state[i]->pdu_len)
               != 0)
        {
            goto nomem;
        }
    }

    if (mx_buf_append_str(out, "],\"auth_chain\":[") != 0) {
        goto nomem;
    }

    for (i = 0; i < b->nchain; i++) {
        b->chain[i]->mark = 1;

        if ((i && mx_buf_append_byte(out, ',') != 0)
            || mx_buf_append(out, b->chain[i]->pdu, b->chain[i]->pdu_len)
               != 0)
        {
            goto nomem;
        }
    }

    if (mx_buf_append_str(out, "],\"forward_extremities\":[") != 0) {
        goto nomem;
    }

    /* E and the joins in the state, unless a join builds on them */

    first = 1;

    for (i = 0; i <= b->nstate; i++) {
        if (i == b->nstate) {
            ev = mxj_sync_pool_get(b->d->pool, b->d->extremity);

        } else {
            ev = b->state[i];

            if (mxj_sync_map_get(&b->joins, ev->id) != ev) {
                continue;
            }
        }

        for (k = 0; k < b->d->njoins; k++) {
            for (j = 0; j < b->d->joins[k]->nprev; j++) {
                if (strcmp(b->d->joins[k]->prev[j], ev->id) == 0) {
                    break;
                }
            }

            if (j < b->d->joins[k]->nprev) {
                break;
            }
        }

        if (k < b->d->njoins) {
            continue;
        }

        if ((!first && mx_buf_append_byte(out, ',') != 0)
            || mx_buf_append(out, ev->pdu, ev->pdu_len) != 0)
        {
            goto nomem;
        }

        first = 0;
    }

    if (mx_buf_append_str(out, "],\"aliases\":[") != 0) {
        goto nomem;
    }

    for (i = 0; i < b->d->naliases; i++) {
        if ((i && mx_buf_append_byte(out, ',') != 0)
            || mx_json_canonical_string(b->d->aliases[i],
                                        strlen(b->d->aliases[i]), out) != 0)
        {
            goto nomem;
        }
    }

    if (mx_buf_append_str(out, "]}") != 0) {
        goto nomem;
    }

    return 0;

nomem:

    mx_err_set(err, "out of memory");

    return -1;
}
