/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync's data: string maps (mx_table.h), lists of IDs,
 * the events received from the homeserver as a pass keeps them, and the
 * pool of events by ID that outlives a pass (docs/sync.md, step 3).
 */

#include <stdlib.h>
#include <string.h>

#include "ctl_sync.h"
#include "mx_json.h"
#include "mx_table.h"


static const char *mxj_sync_map_key(const void *data, size_t i);
static char *mxj_sync_strdup(const json_t *v);
static int mxj_sync_refs(const mx_room_version_t *rv, const json_t *refs,
    char ***out, size_t *n, const char *what, mx_err_t *err);


/* --- the string table (mx_table.h) ------------------------------------ */

static const char *
mxj_sync_map_key(const void *data, size_t i)
{
    const mxj_sync_map_t *m = data;

    return m->keys[i];
}


void *
mxj_sync_map_get(const mxj_sync_map_t *m, const char *key)
{
    long  i;

    i = mx_table_find(&m->index, key, mxj_sync_map_key, m);

    return (i < 0) ? NULL : m->vals[i];
}


int
mxj_sync_map_put(mxj_sync_map_t *m, const char *key, void *val)
{
    long          i;
    size_t        ncap;
    void        **vals;
    const char  **keys;

    i = mx_table_find(&m->index, key, mxj_sync_map_key, m);

    if (i >= 0) {
        m->keys[i] = key;
        m->vals[i] = val;
        return 0;
    }

    if (m->n == m->cap) {
        ncap = m->cap ? m->cap * 2 : 32;

        keys = realloc(m->keys, ncap * sizeof(char *));
        if (keys == NULL) {
            return -1;
        }

        m->keys = keys;

        vals = realloc(m->vals, ncap * sizeof(void *));
        if (vals == NULL) {
            return -1;
        }

        m->vals = vals;
        m->cap = ncap;
    }

    m->keys[m->n] = key;
    m->vals[m->n] = val;

    if (mx_table_add(&m->index, m->n, mxj_sync_map_key, m) != 0) {
        return -1;
    }

    m->n++;

    return 0;
}


void
mxj_sync_map_free(mxj_sync_map_t *m)
{
    free(m->keys);
    free(m->vals);
    mx_table_free(&m->index);
    memset(m, 0, sizeof(mxj_sync_map_t));
}


/* --- lists of IDs ------------------------------------------------------ */

int
mxj_sync_ids_push(mxj_sync_ids_t *l, const char *s)
{
    char   **v;
    size_t   ncap;

    if (l->n == l->cap) {
        ncap = l->cap ? l->cap * 2 : 16;

        v = realloc(l->v, ncap * sizeof(char *));
        if (v == NULL) {
            return -1;
        }

        l->v = v;
        l->cap = ncap;
    }

    l->v[l->n] = strdup(s);

    if (l->v[l->n] == NULL) {
        return -1;
    }

    l->n++;

    return 0;
}


void
mxj_sync_ids_free(mxj_sync_ids_t *l)
{
    size_t  i;

    for (i = 0; i < l->n; i++) {
        free(l->v[i]);
    }

    free(l->v);
    memset(l, 0, sizeof(mxj_sync_ids_t));
}


static int
mxj_sync_str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


int
mxj_sync_ids_same(const mxj_sync_ids_t *a, const mxj_sync_ids_t *b)
{
    int      same;
    size_t   i;
    char   **x, **y;

    if (a->n != b->n) {
        return 0;
    }

    if (a->n == 0) {
        return 1;
    }

    x = malloc(a->n * sizeof(char *));
    y = malloc(b->n * sizeof(char *));

    if (x == NULL || y == NULL) {
        free(x);
        free(y);
        return 0;
    }

    memcpy(x, a->v, a->n * sizeof(char *));
    memcpy(y, b->v, b->n * sizeof(char *));
    qsort(x, a->n, sizeof(char *), mxj_sync_str_cmp);
    qsort(y, b->n, sizeof(char *), mxj_sync_str_cmp);

    same = 1;

    for (i = 0; i < a->n; i++) {
        if (strcmp(x[i], y[i]) != 0) {
            same = 0;
            break;
        }
    }

    free(x);
    free(y);

    return same;
}


/* --- events ------------------------------------------------------------ */

mxj_sync_ev_t *
mxj_sync_ev_new(const mx_room_version_t *rv, const json_t *ev,
    const char *id, mx_err_t *err)
{
    json_t         *sk;
    const char     *m;
    mxj_sync_ev_t  *x;

    x = calloc(1, sizeof(mxj_sync_ev_t));
    if (x == NULL) {
        mx_err_set(err, "out of memory");
        return NULL;
    }

    if (!json_is_string(json_object_get(ev, "type"))
        || !json_is_string(json_object_get(ev, "sender"))
        || !json_is_integer(json_object_get(ev, "depth"))
        || !json_is_integer(json_object_get(ev, "origin_server_ts")))
    {
        mx_err_set(err, "type, sender, depth or origin_server_ts missing or "
                   "of the wrong type");
        goto failed;
    }

    x->id = strdup(id);
    x->type = mxj_sync_strdup(json_object_get(ev, "type"));
    x->sender = mxj_sync_strdup(json_object_get(ev, "sender"));
    x->depth = json_integer_value(json_object_get(ev, "depth"));
    x->ts = json_integer_value(json_object_get(ev, "origin_server_ts"));

    if (x->id == NULL || x->type == NULL || x->sender == NULL) {
        mx_err_set(err, "out of memory");
        goto failed;
    }

    sk = json_object_get(ev, "state_key");

    if (sk != NULL) {
        if (!json_is_string(sk)) {
            mx_err_set(err, "state_key is not a string");
            goto failed;
        }

        x->state_key = mxj_sync_strdup(sk);

        if (x->state_key == NULL) {
            mx_err_set(err, "out of memory");
            goto failed;
        }
    }

    if (x->state_key != NULL && strcmp(x->type, "m.room.member") == 0) {
        m = json_string_value(json_object_get(json_object_get(ev, "content"),
                                              "membership"));
        if (m == NULL) {
            mx_err_set(err, "a member event without content.membership");
            goto failed;
        }

        x->membership = strdup(m);

        if (x->membership == NULL) {
            mx_err_set(err, "out of memory");
            goto failed;
        }
    }

    if (mxj_sync_refs(rv, json_object_get(ev, "auth_events"), &x->auth,
                      &x->nauth, "auth_events", err) != 0
        || mxj_sync_refs(rv, json_object_get(ev, "prev_events"), &x->prev,
                         &x->nprev, "prev_events", err) != 0)
    {
        goto failed;
    }

    x->pdu = mx_json_canonical_str(ev, &x->pdu_len, err);

    if (x->pdu == NULL) {
        goto failed;
    }

    return x;

failed:

    mxj_sync_ev_free(x);

    return NULL;
}


/* A string value, NUL-terminated (one holding a NUL is refused). */

static char *
mxj_sync_strdup(const json_t *v)
{
    char    *s;
    size_t   n;

    n = json_string_length(v);

    if (memchr(json_string_value(v), '\0', n) != NULL) {
        return NULL;
    }

    s = malloc(n + 1);
    if (s == NULL) {
        return NULL;
    }

    memcpy(s, json_string_value(v), n + 1);

    return s;
}


/* prev_events / auth_events as IDs: [id, {"sha256": ...}] pairs in v1/v2. */

static int
mxj_sync_refs(const mx_room_version_t *rv, const json_t *refs, char ***out,
    size_t *n, const char *what, mx_err_t *err)
{
    size_t       i;
    const json_t *r;

    if (!json_is_array(refs)) {
        mx_err_set(err, "%s is not a list", what);
        return -1;
    }

    *n = 0;

    if (json_array_size(refs) == 0) {
        return 0;
    }

    *out = calloc(json_array_size(refs), sizeof(char *));
    if (*out == NULL) {
        mx_err_set(err, "out of memory");
        return -1;
    }

    for (i = 0; i < json_array_size(refs); i++) {
        r = json_array_get(refs, i);

        if (rv->event_refs_with_hashes) {
            r = json_is_array(r) ? json_array_get(r, 0) : NULL;
        }

        if (!json_is_string(r)) {
            mx_err_set(err, "%s[%zu] is not an event reference", what, i);
            return -1;
        }

        (*out)[i] = mxj_sync_strdup(r);

        if ((*out)[i] == NULL) {
            mx_err_set(err, "%s[%zu]: out of memory", what, i);
            return -1;
        }

        (*n)++;
    }

    return 0;
}


void
mxj_sync_ev_free(mxj_sync_ev_t *ev)
{
    size_t  i;

    if (ev == NULL) {
        return;
    }

    for (i = 0; i < ev->nauth; i++) {
        free(ev->auth[i]);
    }

    for (i = 0; i < ev->nprev; i++) {
        free(ev->prev[i]);
    }

    free(ev->auth);
    free(ev->prev);
    free(ev->id);
    free(ev->pdu);
    free(ev->type);
    free(ev->state_key);
    free(ev->sender);
    free(ev->membership);
    free(ev);
}


/* --- the pool ---------------------------------------------------------- */

int
mxj_sync_pool_add(mxj_sync_pool_t *pool, mxj_sync_ev_t *ev)
{
    if (mxj_sync_map_get(&pool->map, ev->id) != NULL) {
        mxj_sync_ev_free(ev);
        return 0;
    }

    if (mxj_sync_map_put(&pool->map, ev->id, ev) != 0) {
        mxj_sync_ev_free(ev);
        return -1;
    }

    return 0;
}


mxj_sync_ev_t *
mxj_sync_pool_get(const mxj_sync_pool_t *pool, const char *id)
{
    return mxj_sync_map_get(&pool->map, id);
}


void
mxj_sync_pool_sweep(mxj_sync_pool_t *pool)
{
    size_t           i;
    mxj_sync_map_t   kept;
    mxj_sync_ev_t   *ev;

    memset(&kept, 0, sizeof(mxj_sync_map_t));

    for (i = 0; i < pool->map.n; i++) {
        ev = pool->map.vals[i];

        if (ev->mark && mxj_sync_map_put(&kept, ev->id, ev) == 0) {
            ev->mark = 0;
            continue;
        }

        mxj_sync_ev_free(ev);
    }

    mxj_sync_map_free(&pool->map);
    pool->map = kept;
}


void
mxj_sync_pool_free(mxj_sync_pool_t *pool)
{
    size_t  i;

    for (i = 0; i < pool->map.n; i++) {
        mxj_sync_ev_free(pool->map.vals[i]);
    }

    mxj_sync_map_free(&pool->map);
}
