/*
 * Copyright (C) nginx-matrix-join authors.
 * Room snapshots: parse, check, and build the model the loader writes.
 *
 * The document is not handed to jansson whole: a room of 100,000 members
 * is ~100 MB of JSON and several times that as a jansson tree. A small
 * scanner walks the top level and the three arrays instead, and each PDU
 * is parsed, checked, encoded canonically and freed on its own. This also
 * lets the room version, wherever it stands in the document, decide how
 * strictly the PDUs are parsed (canonical JSON is enforced from v6).
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

#include <jansson.h>

#include "mx_base64.h"
#include "mx_json.h"
#include "mx_scan.h"
#include "mx_snapshot.h"
#include "mx_table.h"


#define MX_SNAP_MAX_AUTH_EVENTS  10     /* reference §7 */
#define MX_SNAP_MAX_PREV_EVENTS  20

#define MX_SNAP_IN_STATE  0
#define MX_SNAP_IN_AUTH   1
#define MX_SNAP_IN_EXTREM 2


/* The events by one of their keys (mx_table.h). */
typedef struct {
    mx_table_t     t;
    size_t         keyoff;      /* offsetof the key in the event */
} mx_snap_table_t;

/* what mx_snap_key() reads a key with */
typedef struct {
    const mx_snapshot_event_t  *events;
    size_t                      keyoff;
} mx_snap_keys_t;


/* What the checks at the end need per event and the model does not. */
typedef struct {
    size_t         ref_off;     /* auth_events IDs not yet seen when
                                   the event was, in ctx->refs */
    unsigned       ref_n;
    unsigned       list;        /* where it was first seen */
    size_t         pos;
    char           chash[MX_SNAPSHOT_SHA256_B64];  /* hashes.sha256 */
} mx_snap_aux_t;


typedef struct {
    const char    *start;
    const char    *p;
    const char    *end;
} mx_snap_scan_t;


typedef struct {
    mx_snapshot_t           *snap;
    mx_snapshot_err_t       *err;
    const mx_room_version_t *rv;

    mx_snap_aux_t           *aux;
    size_t                   cap;       /* of snap->events and aux */
    size_t                   caps[MX_SNAPSHOT_NLISTS];
    size_t                   extrem_cap;

    mx_snap_table_t          ids;
    mx_snap_table_t          keys;

    mx_buf_t                 refs;      /* NUL-terminated event IDs */
    size_t                   auth_refs_cap;  /* of snap->auth_refs */

    long                     create;    /* event index, -1 */
    long                     create_any;  /* also from the auth chain */

    /* every event's room: the first seen, and where it was seen */
    char                     room_id[MX_ID_MAX_LEN + 1];
    char                     room_where[384];

    /* the event being checked, for messages */
    char                     where[384];

    const char              *doc;
    size_t                   doc_len;
    mx_snapshot_progress_pt  progress;
    void                    *data;
} mx_snap_ctx_t;


static const char  *mx_snap_list_names[] = {
    "state", "auth_chain", "forward_extremities"
};


static int mx_snap_fail(mx_snap_ctx_t *ctx, const char *where,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int mx_snap_scan_fail(mx_snap_ctx_t *ctx, mx_snap_scan_t *s,
    const char *where, const char *what);
static void mx_snap_ws(mx_snap_scan_t *s);
static int mx_snap_value(mx_snap_ctx_t *ctx, mx_snap_scan_t *s,
    const char *where, const char **v, size_t *n);
static int mx_snap_document(mx_snap_ctx_t *ctx, const char *vals[3],
    size_t lens[3]);
static int mx_snap_room_version(mx_snap_ctx_t *ctx, const char *v,
    size_t n);
static int mx_snap_aliases(mx_snap_ctx_t *ctx, const char *v, size_t n);
static int mx_snap_array(mx_snap_ctx_t *ctx, unsigned list, const char *v,
    size_t n);
static int mx_snap_pdu(mx_snap_ctx_t *ctx, unsigned list, size_t pos,
    const char *p, size_t n);
static int mx_snap_check_fields(const mx_room_version_t *rv,
    const json_t *ev, mx_err_t *e);
static int mx_snap_check_refs(const mx_room_version_t *rv,
    const json_t *refs, const char *name, size_t max, mx_err_t *e);
static int mx_snap_check_room(mx_snap_ctx_t *ctx, const json_t *ev,
    int is_create);
static int mx_snap_add_event(mx_snap_ctx_t *ctx, unsigned list, size_t pos,
    json_t *ev, const char *id, int is_create);
static int mx_snap_add_state(mx_snap_ctx_t *ctx, size_t i, json_t *ev,
    int is_create);
static int mx_snap_add_extrem(mx_snap_ctx_t *ctx, json_t *ev,
    const char *id);
static int mx_snap_list_push(mx_snap_ctx_t *ctx, mx_snapshot_list_e l,
    size_t i);
static int mx_snap_auth_ref(mx_snap_ctx_t *ctx, size_t i);
static int mx_snap_finish(mx_snap_ctx_t *ctx);
static int mx_snap_partial(mx_snap_ctx_t *ctx);
static int mx_snap_hero_before(const mx_snapshot_event_t *a,
    const mx_snapshot_event_t *b);
static int mx_snap_chunk_list(mx_snapshot_list_t *list,
    const mx_snapshot_event_t *events);
static const char *mx_snap_key(const void *data, size_t i);
static long mx_snap_table_find(const mx_snap_table_t *t,
    const mx_snapshot_event_t *events, const char *key);
static int mx_snap_table_add(mx_snap_table_t *t,
    const mx_snapshot_event_t *events, size_t i);
static const char *mx_snap_str(const json_t *obj, const char *key,
    size_t *len);
static char *mx_snap_shrink(char *p, size_t len);


int
mx_snapshot_parse(const char *buf, size_t len,
    mx_snapshot_progress_pt progress, void *data, mx_snapshot_t **out,
    mx_snapshot_err_t *err)
{
    int             rc;
    size_t          i, lens[3];
    const char     *vals[3];
    mx_snap_ctx_t   ctx;
    mx_snapshot_t  *snap;

    *out = NULL;
    err->where[0] = '\0';
    err->reason[0] = '\0';

    snap = calloc(1, sizeof(mx_snapshot_t));
    if (snap == NULL) {
        snprintf(err->where, sizeof(err->where), "document");
        snprintf(err->reason, sizeof(err->reason), "out of memory");
        return -1;
    }

    memset(&ctx, 0, sizeof(ctx));

    ctx.snap = snap;
    ctx.err = err;
    ctx.create = -1;
    ctx.create_any = -1;
    ctx.doc = buf;
    ctx.doc_len = len;
    ctx.progress = progress;
    ctx.data = data;
    ctx.ids.keyoff = offsetof(mx_snapshot_event_t, id);
    ctx.keys.keyoff = offsetof(mx_snapshot_event_t, state_key);

    rc = -1;

    if (mx_snap_document(&ctx, vals, lens) != 0) {
        goto done;
    }

    /* extremities last: they may name events of state and auth chain */

    for (i = 0; i < 3; i++) {
        if (mx_snap_array(&ctx, (unsigned) i, vals[i], lens[i]) != 0) {
            goto done;
        }
    }

    if (mx_snap_finish(&ctx) != 0) {
        goto done;
    }

    rc = 0;

done:

    free(ctx.aux);
    mx_table_free(&ctx.keys.t);
    mx_buf_free(&ctx.refs);

    /* the ID index stays with the model, for mx_snapshot_find() */

    snap->index = ctx.ids.t.slot;
    snap->index_cap = ctx.ids.t.cap;

    if (rc != 0) {
        mx_snapshot_free(snap);
        return -1;
    }

    *out = snap;

    return 0;
}


void
mx_snapshot_free(mx_snapshot_t *snap)
{
    size_t  i;

    if (snap == NULL) {
        return;
    }

    for (i = 0; i < snap->nevents; i++) {
        free(snap->events[i].id);
        free(snap->events[i].pdu);
        free(snap->events[i].state_key);
        free(snap->events[i].user);
        free(snap->events[i].membership);
    }

    for (i = 0; i < MX_SNAPSHOT_NLISTS; i++) {
        free(snap->lists[i].events);
        free(snap->lists[i].chunks);
    }

    for (i = 0; i < snap->naliases; i++) {
        free(snap->aliases[i]);
    }

    free(snap->aliases);
    free(snap->events);
    free(snap->extrem);
    free(snap->auth_refs);
    free(snap->index);
    free(snap);
}


int
mx_snapshot_chunk(const mx_snapshot_t *snap, mx_snapshot_list_e l,
    size_t c, mx_buf_t *out)
{
    size_t                      i;
    const mx_snapshot_list_t   *list;
    const mx_snapshot_chunk_t  *ch;
    const mx_snapshot_event_t  *ev;

    list = &snap->lists[l];
    ch = &list->chunks[c];

    if (mx_buf_reserve(out, ch->bytes) != 0) {
        return -1;
    }

    for (i = 0; i < ch->count; i++) {
        ev = &snap->events[list->events[ch->first + i]];

        if ((i && mx_buf_append_byte(out, ',') != 0)
            || mx_buf_append(out, ev->pdu, ev->pdu_len) != 0)
        {
            return -1;
        }
    }

    return 0;
}


void
mx_snapshot_locate(const mx_snapshot_t *snap, mx_snapshot_list_e l,
    size_t i, size_t *c, size_t *off)
{
    size_t                      lo, hi, mid, k, o;
    const mx_snapshot_list_t   *list;

    list = &snap->lists[l];

    /* the last chunk that starts at or before entry i */

    lo = 0;
    hi = list->nchunks;

    while (hi - lo > 1) {
        mid = lo + (hi - lo) / 2;

        if (list->chunks[mid].first <= i) {
            lo = mid;

        } else {
            hi = mid;
        }
    }

    o = 0;

    for (k = list->chunks[lo].first; k < i; k++) {
        o += snap->events[list->events[k]].pdu_len + 1;     /* and ',' */
    }

    *c = lo;
    *off = o;
}


long
mx_snapshot_find(const mx_snapshot_t *snap, const char *id)
{
    mx_snap_table_t  t;

    t.t.slot = snap->index;
    t.t.cap = snap->index_cap;
    t.t.n = snap->nevents;
    t.keyoff = offsetof(mx_snapshot_event_t, id);

    return mx_snap_table_find(&t, snap->events, id);
}


static int
mx_snap_fail(mx_snap_ctx_t *ctx, const char *where, const char *fmt, ...)
{
    va_list  args;

    snprintf(ctx->err->where, sizeof(ctx->err->where), "%s",
             where ? where : ctx->where);

    va_start(args, fmt);
    vsnprintf(ctx->err->reason, sizeof(ctx->err->reason), fmt, args);
    va_end(args);

    return -1;
}


/* A syntax error of the document, with its line and column. */

static int
mx_snap_scan_fail(mx_snap_ctx_t *ctx, mx_snap_scan_t *s, const char *where,
    const char *what)
{
    size_t       line, col;
    const char  *p;

    line = 1;
    col = 1;

    for (p = ctx->doc; p < s->p && p < ctx->doc + ctx->doc_len; p++) {
        if (*p == '\n') {
            line++;
            col = 1;

        } else {
            col++;
        }
    }

    return mx_snap_fail(ctx, where, "invalid JSON at line %zu column %zu: %s",
                        line, col, what);
}


static void
mx_snap_ws(mx_snap_scan_t *s)
{
    s->p = s->start + mx_scan_ws(s->start, (size_t) (s->end - s->start),
                                 (size_t) (s->p - s->start));
}


/*
 * The extent of the value at s->p, which is left after it (mx_scan.h:
 * jansson checks the value itself).
 */
static int
mx_snap_value(mx_snap_ctx_t *ctx, mx_snap_scan_t *s, const char *where,
    const char **v, size_t *n)
{
    int          rc;
    size_t       pos;
    const char  *b, *why;

    b = s->p;
    pos = (size_t) (s->p - s->start);

    rc = mx_scan_value(s->start, (size_t) (s->end - s->start), &pos, &why);

    s->p = s->start + pos;

    if (rc != 0) {
        return mx_snap_scan_fail(ctx, s, where, why);
    }

    *v = b;
    *n = (size_t) (s->p - b);

    return 0;
}


/*
 * The top level: room_version and aliases are read here, the extents of
 * state, auth_chain and forward_extremities are returned in vals/lens.
 */
static int
mx_snap_document(mx_snap_ctx_t *ctx, const char *vals[3], size_t lens[3])
{
    int              have_version, have_aliases;
    size_t           i, kn, vn;
    json_t          *k, *junk;
    const char      *key, *kp, *vp, *rv_val;
    size_t           rv_len;
    mx_err_t         e;
    json_error_t     je;
    mx_snap_scan_t   s;

    s.start = ctx->doc;
    s.p = ctx->doc;
    s.end = ctx->doc + ctx->doc_len;

    for (i = 0; i < 3; i++) {
        vals[i] = NULL;
        lens[i] = 0;
    }

    have_version = 0;
    have_aliases = 0;
    rv_val = NULL;
    rv_len = 0;

    mx_snap_ws(&s);

    if (s.p >= s.end) {
        return mx_snap_fail(ctx, "document", "empty");
    }

    if (*s.p == '[') {
        return mx_snap_fail(ctx, "document", "not a JSON object");
    }

    if (*s.p != '{') {
        return mx_snap_scan_fail(ctx, &s, "document", "expected '{'");
    }

    s.p++;
    mx_snap_ws(&s);

    if (s.p < s.end && *s.p == '}') {
        s.p++;
        goto end;
    }

    for ( ;; ) {
        mx_snap_ws(&s);

        if (s.p >= s.end || *s.p != '"') {
            return mx_snap_scan_fail(ctx, &s, "document",
                                     "expected a string key");
        }

        if (mx_snap_value(ctx, &s, "document", &kp, &kn) != 0) {
            return -1;
        }

        k = json_loadb(kp, kn, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);

        if (!json_is_string(k)) {
            json_decref(k);
            s.p = kp;
            return mx_snap_scan_fail(ctx, &s, "document", "invalid key");
        }

        mx_snap_ws(&s);

        if (s.p >= s.end || *s.p != ':') {
            json_decref(k);
            return mx_snap_scan_fail(ctx, &s, "document", "expected ':'");
        }

        s.p++;
        mx_snap_ws(&s);

        if (mx_snap_value(ctx, &s, "document", &vp, &vn) != 0) {
            json_decref(k);
            return -1;
        }

        key = json_string_value(k);

        for (i = 0; i < 3; i++) {
            if (strcmp(key, mx_snap_list_names[i]) == 0) {
                break;
            }
        }

        if (i < 3) {
            if (vals[i] != NULL) {
                json_decref(k);
                return mx_snap_fail(ctx, "document", "duplicate key \"%s\"",
                                    mx_snap_list_names[i]);
            }

            vals[i] = vp;
            lens[i] = vn;

        } else if (strcmp(key, "room_version") == 0) {
            if (have_version++) {
                json_decref(k);
                return mx_snap_fail(ctx, "document",
                                    "duplicate key \"room_version\"");
            }

            rv_val = vp;
            rv_len = vn;

        } else if (strcmp(key, "aliases") == 0) {
            if (have_aliases++) {
                json_decref(k);
                return mx_snap_fail(ctx, "document",
                                    "duplicate key \"aliases\"");
            }

            if (mx_snap_aliases(ctx, vp, vn) != 0) {
                json_decref(k);
                return -1;
            }

        } else {
            /* unknown keys are allowed, but must be JSON */

            junk = mx_json_parse(vp, vn, 0, &e);

            if (junk == NULL) {
                /* key points into k: name it before k goes */
                mx_snap_fail(ctx, "document", "key \"%.64s\": %s", key,
                             e.text);
                json_decref(k);
                return -1;
            }

            json_decref(junk);
        }

        json_decref(k);

        mx_snap_ws(&s);

        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }

        if (s.p < s.end && *s.p == '}') {
            s.p++;
            break;
        }

        return mx_snap_scan_fail(ctx, &s, "document", "expected ',' or '}'");
    }

end:

    mx_snap_ws(&s);

    if (s.p != s.end) {
        return mx_snap_scan_fail(ctx, &s, "document",
                                 "data after the document");
    }

    if (!have_version) {
        return mx_snap_fail(ctx, "room_version", "missing");
    }

    if (mx_snap_room_version(ctx, rv_val, rv_len) != 0) {
        return -1;
    }

    for (i = 0; i < 3; i++) {
        if (vals[i] == NULL) {
            return mx_snap_fail(ctx, mx_snap_list_names[i], "missing");
        }
    }

    return 0;
}


static int
mx_snap_room_version(mx_snap_ctx_t *ctx, const char *v, size_t n)
{
    json_t    *j;
    mx_err_t   e;

    j = mx_json_parse(v, n, 0, &e);

    if (j == NULL) {
        return mx_snap_fail(ctx, "room_version", "%s", e.text);
    }

    if (!json_is_string(j)) {
        json_decref(j);
        return mx_snap_fail(ctx, "room_version", "not a string");
    }

    ctx->rv = mx_room_version(json_string_value(j), json_string_length(j));

    if (ctx->rv == NULL) {
        mx_snap_fail(ctx, "room_version", "unknown room version \"%.64s\"",
                     json_string_value(j));
        json_decref(j);
        return -1;
    }

    ctx->snap->rv = ctx->rv;
    json_decref(j);

    return 0;
}


static int
mx_snap_aliases(mx_snap_ctx_t *ctx, const char *v, size_t n)
{
    char          where[64];
    size_t        i, len, slen;
    json_t       *j, *a;
    mx_err_t      e;
    const char   *s, *server;
    mx_snapshot_t *snap;

    snap = ctx->snap;

    j = mx_json_parse(v, n, 0, &e);

    if (j == NULL) {
        return mx_snap_fail(ctx, "aliases", "%s", e.text);
    }

    if (!json_is_array(j)) {
        json_decref(j);
        return mx_snap_fail(ctx, "aliases", "not an array");
    }

    snap->aliases = calloc(json_array_size(j) + 1, sizeof(char *));
    if (snap->aliases == NULL) {
        json_decref(j);
        return mx_snap_fail(ctx, "aliases", "out of memory");
    }

    for (i = 0; i < json_array_size(j); i++) {
        a = json_array_get(j, i);
        snprintf(where, sizeof(where), "aliases[%zu]", i);

        if (!json_is_string(a)) {
            json_decref(j);
            return mx_snap_fail(ctx, where, "not a string");
        }

        s = json_string_value(a);
        len = json_string_length(a);
        server = mx_id_server(s, len, '#', &slen);

        if (len > MX_ID_MAX_LEN) {
            mx_snap_fail(ctx, where, "alias \"%.64s...\" is longer than %d "
                         "bytes", s, MX_ID_MAX_LEN);
            json_decref(j);
            return -1;
        }

        if (server == NULL || server - 1 == s + 1
            || memchr(s, '\0', len) != NULL
            || !mx_server_name_valid(server, slen))
        {
            mx_snap_fail(ctx, where, "invalid room alias \"%.128s\" (want "
                         "#localpart:server)", s);
            json_decref(j);
            return -1;
        }

        snap->aliases[i] = strdup(s);
        if (snap->aliases[i] == NULL) {
            json_decref(j);
            return mx_snap_fail(ctx, where, "out of memory");
        }

        snap->naliases++;
    }

    json_decref(j);

    return 0;
}


/* Walks one of the three PDU arrays. */

static int
mx_snap_array(mx_snap_ctx_t *ctx, unsigned list, const char *v, size_t n)
{
    char             where[64];
    size_t           pos, en;
    const char      *ep;
    mx_snap_scan_t   s;

    s.start = v;
    s.p = v;
    s.end = v + n;

    if (*s.p != '[') {
        return mx_snap_fail(ctx, mx_snap_list_names[list], "not an array");
    }

    s.p++;
    mx_snap_ws(&s);

    if (s.p < s.end && *s.p == ']') {
        return 0;
    }

    for (pos = 0; /* void */ ; pos++) {
        snprintf(where, sizeof(where), "%s[%zu]", mx_snap_list_names[list],
                 pos);

        mx_snap_ws(&s);

        if (mx_snap_value(ctx, &s, where, &ep, &en) != 0) {
            return -1;
        }

        if (mx_snap_pdu(ctx, list, pos, ep, en) != 0) {
            return -1;
        }

        if (ctx->progress && (pos & 1023) == 1023) {
            ctx->progress(ctx->data, (size_t) (s.p - ctx->doc), ctx->doc_len);
        }

        mx_snap_ws(&s);

        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }

        if (s.p < s.end && *s.p == ']') {
            return 0;
        }

        return mx_snap_scan_fail(ctx, &s, where, "expected ',' or ']'");
    }
}


/* One PDU of state (list 0), auth_chain (1) or forward_extremities (2). */

static int
mx_snap_pdu(mx_snap_ctx_t *ctx, unsigned list, size_t pos, const char *p,
    size_t n)
{
    int                       rc, is_create;
    char                      id[MX_EVENT_ID_MAX];
    json_t                   *ev;
    mx_err_t                  e;
    const char               *type, *skey;
    const mx_room_version_t  *rv;

    rv = ctx->rv;

    snprintf(ctx->where, sizeof(ctx->where), "%s[%zu]",
             mx_snap_list_names[list], pos);

    ev = mx_json_parse(p, n, rv->strict_json ? MX_JSON_STRICT : 0, &e);

    if (ev == NULL) {
        return mx_snap_fail(ctx, NULL, "%s", e.text);
    }

    rc = -1;

    if (!json_is_object(ev)) {
        mx_snap_fail(ctx, NULL, "not a JSON object");
        goto done;
    }

    if (mx_event_id(rv, ev, id, sizeof(id), &e) < 0) {
        mx_snap_fail(ctx, NULL, "%s", e.text);
        goto done;
    }

    snprintf(ctx->where, sizeof(ctx->where), "%s[%zu] (%s)",
             mx_snap_list_names[list], pos, id);

    if (mx_snap_check_fields(rv, ev, &e) != 0) {
        mx_snap_fail(ctx, NULL, "%s", e.text);
        goto done;
    }

    if (mx_event_check_content_hash(ev, &e) != 0) {
        mx_snap_fail(ctx, NULL, "%s", e.text);
        goto done;
    }

    type = json_string_value(json_object_get(ev, "type"));
    skey = json_string_value(json_object_get(ev, "state_key"));

    is_create = (strcmp(type, "m.room.create") == 0
                 && skey != NULL && skey[0] == '\0'
                 && json_string_length(json_object_get(ev, "state_key"))
                    == 0);

    if (mx_snap_check_room(ctx, ev, is_create) != 0) {
        goto done;
    }

    if (list == MX_SNAP_IN_EXTREM) {
        rc = mx_snap_add_extrem(ctx, ev, id);

    } else {
        rc = mx_snap_add_event(ctx, list, pos, ev, id, is_create);
    }

done:

    json_decref(ev);

    return rc;
}


/* The PDU fields and their types (reference §5, §7). */

static int
mx_snap_check_fields(const mx_room_version_t *rv, const json_t *ev,
    mx_err_t *e)
{
    size_t       len;
    json_t      *v;
    json_int_t   depth;
    const char  *s, *type;

    type = mx_snap_str(ev, "type", &len);

    if (type == NULL) {
        mx_err_set(e, "missing or non-string \"type\"");
        return -1;
    }

    if (len == 0 || len > MX_ID_MAX_LEN) {
        mx_err_set(e, "type is %s", len ? "longer than 255 bytes" : "empty");
        return -1;
    }

    v = json_object_get(ev, "state_key");

    if (v != NULL) {
        if (!json_is_string(v)) {
            mx_err_set(e, "state_key is not a string");
            return -1;
        }

        if (json_string_length(v) > MX_ID_MAX_LEN) {
            mx_err_set(e, "state_key is longer than 255 bytes");
            return -1;
        }
    }

    s = mx_snap_str(ev, "sender", &len);

    if (s == NULL) {
        mx_err_set(e, "missing or non-string \"sender\"");
        return -1;
    }

    if (len > MX_ID_MAX_LEN) {
        mx_err_set(e, "sender is longer than 255 bytes");
        return -1;
    }

    if (!mx_user_id_valid(s, len)) {
        mx_err_set(e, "invalid sender \"%.128s\"", s);
        return -1;
    }

    v = json_object_get(ev, "room_id");

    if (rv->room_id_from_create && strcmp(type, "m.room.create") == 0) {
        if (v != NULL) {
            mx_err_set(e, "a room version %s create event must not have a "
                       "room_id (the room ID is derived from its event ID)",
                       rv->id);
            return -1;
        }

    } else {
        if (!json_is_string(v)) {
            mx_err_set(e, "missing or non-string \"room_id\"");
            return -1;
        }

        len = json_string_length(v);
        s = json_string_value(v);

        if (len > MX_ID_MAX_LEN) {
            mx_err_set(e, "room_id is longer than 255 bytes");
            return -1;
        }

        if (!mx_room_id_valid(s, len, rv->room_id_from_create)) {
            mx_err_set(e, "invalid room_id \"%.128s\"", s);
            return -1;
        }
    }

    if (!json_is_object(json_object_get(ev, "content"))) {
        mx_err_set(e, "missing or non-object \"content\"");
        return -1;
    }

    v = json_object_get(ev, "depth");

    if (!json_is_integer(v)) {
        mx_err_set(e, "missing or non-integer \"depth\"");
        return -1;
    }

    depth = json_integer_value(v);

    if (depth < 0 || depth > rv->max_depth) {
        mx_err_set(e, "depth %" JSON_INTEGER_FORMAT " out of range",
                   depth);
        return -1;
    }

    if (!json_is_integer(json_object_get(ev, "origin_server_ts"))) {
        mx_err_set(e, "missing or non-integer \"origin_server_ts\"");
        return -1;
    }

    if (!json_is_object(json_object_get(ev, "hashes"))) {
        mx_err_set(e, "missing or non-object \"hashes\"");
        return -1;
    }

    if (!json_is_object(json_object_get(ev, "signatures"))) {
        mx_err_set(e, "missing or non-object \"signatures\"");
        return -1;
    }

    v = json_object_get(ev, "origin");

    if (v != NULL && !json_is_string(v)) {
        mx_err_set(e, "origin is not a string");
        return -1;
    }

    v = json_object_get(ev, "unsigned");

    if (v != NULL && !json_is_object(v)) {
        mx_err_set(e, "unsigned is not an object");
        return -1;
    }

    if (mx_snap_check_refs(rv, json_object_get(ev, "prev_events"),
                           "prev_events", MX_SNAP_MAX_PREV_EVENTS, e)
        != 0
        || mx_snap_check_refs(rv, json_object_get(ev, "auth_events"),
                              "auth_events", MX_SNAP_MAX_AUTH_EVENTS, e)
           != 0)
    {
        return -1;
    }

    if (strcmp(type, "m.room.member") == 0
        && !json_is_string(json_object_get(json_object_get(ev, "content"),
                                           "membership")))
    {
        mx_err_set(e, "m.room.member event without a string "
                   "content.membership");
        return -1;
    }

    return 0;
}


/* prev_events / auth_events: [id, {"sha256": b64}] pairs in v1/v2, IDs
 * in v3+. */

static int
mx_snap_check_refs(const mx_room_version_t *rv, const json_t *refs,
    const char *name, size_t max, mx_err_t *e)
{
    size_t   i;
    json_t  *r, *id;

    if (!json_is_array(refs)) {
        mx_err_set(e, "missing or non-array \"%s\"", name);
        return -1;
    }

    if (json_array_size(refs) > max) {
        mx_err_set(e, "%s has %zu entries (at most %zu)", name,
                   json_array_size(refs), max);
        return -1;
    }

    for (i = 0; i < json_array_size(refs); i++) {
        r = json_array_get(refs, i);

        if (rv->event_refs_with_hashes) {
            if (!json_is_array(r) || json_array_size(r) != 2
                || !json_is_string(json_object_get(json_array_get(r, 1),
                                                   "sha256")))
            {
                mx_err_set(e, "%s[%zu] is not an [event ID, "
                           "{\"sha256\": hash}] pair (room version %s)",
                           name, i, rv->id);
                return -1;
            }

            id = json_array_get(r, 0);

        } else {
            id = r;
        }

        if (!json_is_string(id) || json_string_value(id)[0] != '$'
            || memchr(json_string_value(id), '\0', json_string_length(id))
               != NULL)
        {
            mx_err_set(e, "%s[%zu] is not an event ID (room version %s)",
                       name, i, rv->id);
            return -1;
        }

        if (json_string_length(id) > MX_ID_MAX_LEN) {
            mx_err_set(e, "%s[%zu] is longer than 255 bytes", name, i);
            return -1;
        }
    }

    return 0;
}


/*
 * Every event belongs to one room: the room_id field, or for a v12 create
 * event the ID derived from it. The first event seen sets the room.
 */
static int
mx_snap_check_room(mx_snap_ctx_t *ctx, const json_t *ev, int is_create)
{
    long        n;
    char        buf[MX_ID_MAX_LEN + 1];
    mx_err_t    e;
    const char *room;

    if (ctx->rv->room_id_from_create && is_create) {
        n = mx_event_room_id_from_create(ctx->rv, ev, buf, sizeof(buf), &e);

        if (n < 0) {
            return mx_snap_fail(ctx, NULL, "%s", e.text);
        }

        room = buf;

    } else {
        room = json_string_value(json_object_get(ev, "room_id"));
    }

    if (ctx->room_id[0] == '\0') {
        snprintf(ctx->room_id, sizeof(ctx->room_id), "%s", room);
        snprintf(ctx->room_where, sizeof(ctx->room_where), "%s", ctx->where);
        return 0;
    }

    if (strcmp(ctx->room_id, room) == 0) {
        return 0;
    }

    if (is_create) {
        /* the create event is right by definition: blame the first one */
        return mx_snap_fail(ctx, ctx->room_where, "room ID \"%.100s\" "
                            "differs from the create event's \"%.100s\"",
                            ctx->room_id, room);
    }

    return mx_snap_fail(ctx, NULL, "room ID \"%.100s\" differs from "
                        "\"%.100s\" of the events before", room,
                        ctx->room_id);
}


/* An event of state or auth chain: stored once, listed where given. */

static int
mx_snap_add_event(mx_snap_ctx_t *ctx, unsigned list, size_t pos,
    json_t *ev, const char *id, int is_create)
{
    long                  found;
    size_t                i, ncap, k, before, len;
    char                 *pdu;
    json_t               *a, *r;
    mx_err_t              e;
    const char           *chash, *rid;
    mx_snap_aux_t        *aux;
    mx_snapshot_t        *snap;
    mx_snapshot_event_t  *events, *x;

    snap = ctx->snap;

    chash = json_string_value(json_object_get(json_object_get(ev, "hashes"),
                                              "sha256"));

    found = mx_snap_table_find(&ctx->ids, snap->events, id);

    if (found >= 0) {
        i = (size_t) found;
        x = &snap->events[i];

        if ((list == MX_SNAP_IN_STATE && x->in_state)
            || (list == MX_SNAP_IN_AUTH && x->in_auth))
        {
            return mx_snap_fail(ctx, NULL, "event listed twice in %s (also "
                                "%s[%zu])", mx_snap_list_names[list],
                                mx_snap_list_names[ctx->aux[i].list],
                                ctx->aux[i].pos);
        }

        if (strcmp(ctx->aux[i].chash, chash) != 0) {
            return mx_snap_fail(ctx, NULL, "differs from the event with the "
                                "same ID in %s[%zu]",
                                mx_snap_list_names[ctx->aux[i].list],
                                ctx->aux[i].pos);
        }

        goto listed;
    }

    if (strlen(chash) >= MX_SNAPSHOT_SHA256_B64) {
        return mx_snap_fail(ctx, NULL, "hashes.sha256 is too long");
    }

    pdu = mx_json_canonical_str(ev, &len, &e);
    if (pdu == NULL) {
        return mx_snap_fail(ctx, NULL, "%s", e.text);
    }

    pdu = mx_snap_shrink(pdu, len);

    if (snap->nevents == ctx->cap) {
        ncap = ctx->cap ? ctx->cap * 2 : 1024;

        events = realloc(snap->events, ncap * sizeof(mx_snapshot_event_t));
        if (events == NULL) {
            free(pdu);
            return mx_snap_fail(ctx, NULL, "out of memory");
        }

        snap->events = events;

        aux = realloc(ctx->aux, ncap * sizeof(mx_snap_aux_t));
        if (aux == NULL) {
            free(pdu);
            return mx_snap_fail(ctx, NULL, "out of memory");
        }

        ctx->aux = aux;
        ctx->cap = ncap;
    }

    i = snap->nevents;
    x = &snap->events[i];
    memset(x, 0, sizeof(mx_snapshot_event_t));

    x->pdu = pdu;
    x->pdu_len = len;
    x->depth = json_integer_value(json_object_get(ev, "depth"));
    x->id = strdup(id);

    if (x->id == NULL) {
        free(pdu);
        return mx_snap_fail(ctx, NULL, "out of memory");
    }

    snap->nevents++;

    if (mx_snap_table_add(&ctx->ids, snap->events, i) != 0) {
        return mx_snap_fail(ctx, NULL, "out of memory");
    }

    aux = &ctx->aux[i];
    aux->list = list;
    aux->pos = pos;
    memcpy(aux->chash, chash, strlen(chash) + 1);

    if (is_create) {
        ctx->create_any = (long) i;
    }

    /*
     * The auth_events, kept as event indices in snap->auth_refs: those
     * already seen are checked and resolved now, the others are kept by
     * ID for the end (most events refer back to create, power levels and
     * join rules, so few are kept) with SIZE_MAX in their slot.
     */

    aux->ref_off = ctx->refs.len;
    aux->ref_n = 0;
    a = json_object_get(ev, "auth_events");

    x = &snap->events[i];
    x->auth_off = snap->nauth_refs;
    x->auth_n = 0;

    for (k = 0; k < json_array_size(a); k++) {
        r = json_array_get(a, k);
        rid = json_string_value(ctx->rv->event_refs_with_hashes
                                ? json_array_get(r, 0) : r);

        found = mx_snap_table_find(&ctx->ids, snap->events, rid);

        if (mx_snap_auth_ref(ctx, found >= 0 ? (size_t) found : SIZE_MAX)
            != 0)
        {
            return mx_snap_fail(ctx, NULL, "out of memory");
        }

        snap->events[i].auth_n++;

        if (found >= 0) {
            if (!ctx->rv->create_in_auth_events
                && found == ctx->create_any)
            {
                return mx_snap_fail(ctx, NULL, "auth_events lists the "
                                    "create event (room version %s "
                                    "implies it)", ctx->rv->id);
            }

            continue;
        }

        before = ctx->refs.len;

        if (mx_buf_append(&ctx->refs, rid, strlen(rid) + 1) != 0) {
            ctx->refs.len = before;
            return mx_snap_fail(ctx, NULL, "out of memory");
        }

        aux->ref_n++;
    }

listed:

    x = &snap->events[i];

    if (list == MX_SNAP_IN_AUTH) {
        x->in_auth = 1;
        return mx_snap_list_push(ctx, MX_SNAPSHOT_AUTH, i);
    }

    return mx_snap_add_state(ctx, i, ev, is_create);
}


static int
mx_snap_add_state(mx_snap_ctx_t *ctx, size_t i, json_t *ev, int is_create)
{
    long                  found;
    size_t                len;
    json_t               *pair, *skey;
    mx_err_t              e;
    const char           *type, *m;
    mx_snapshot_event_t  *x;

    x = &ctx->snap->events[i];
    type = json_string_value(json_object_get(ev, "type"));
    skey = json_object_get(ev, "state_key");

    if (skey == NULL) {
        return mx_snap_fail(ctx, NULL, "state event without a state_key");
    }

    pair = json_pack("[OO]", json_object_get(ev, "type"), skey);
    if (pair == NULL) {
        return mx_snap_fail(ctx, NULL, "out of memory");
    }

    x->state_key = mx_json_canonical_str(pair, &len, &e);
    json_decref(pair);

    if (x->state_key == NULL) {
        return mx_snap_fail(ctx, NULL, "%s", e.text);
    }

    x->state_key = mx_snap_shrink(x->state_key, len);

    found = mx_snap_table_find(&ctx->keys, ctx->snap->events, x->state_key);

    if (found >= 0) {
        mx_snap_fail(ctx, NULL, "duplicate state %s: also given by %s[%zu] "
                     "(%.100s)", x->state_key,
                     mx_snap_list_names[ctx->aux[found].list],
                     ctx->aux[found].pos, ctx->snap->events[found].id);

        /* not in the key table: keep the model consistent for free() */
        free(x->state_key);
        x->state_key = NULL;
        return -1;
    }

    if (mx_snap_table_add(&ctx->keys, ctx->snap->events, i) != 0) {
        return mx_snap_fail(ctx, NULL, "out of memory");
    }

    x->in_state = 1;

    if (is_create) {
        ctx->create = (long) i;
    }

    if (strcmp(type, "m.room.member") == 0) {
        m = json_string_value(json_object_get(json_object_get(ev, "content"),
                                              "membership"));
        x->member = 1;
        x->membership = strdup(m);
        x->user = malloc(json_string_length(skey) + 1);

        if (x->membership == NULL || x->user == NULL) {
            return mx_snap_fail(ctx, NULL, "out of memory");
        }

        memcpy(x->user, json_string_value(skey),
               json_string_length(skey) + 1);

        if (strcmp(m, "join") == 0) {
            ctx->snap->members++;
        }

        return mx_snap_list_push(ctx, MX_SNAPSHOT_STATE_M, i);
    }

    return mx_snap_list_push(ctx, MX_SNAPSHOT_STATE_NM, i);
}


static int
mx_snap_add_extrem(mx_snap_ctx_t *ctx, json_t *ev, const char *id)
{
    size_t                 i, ncap;
    uint8_t                hash[MX_SHA256_LEN];
    mx_err_t               e;
    mx_snapshot_t         *snap;
    mx_snapshot_extrem_t  *x;

    snap = ctx->snap;

    for (i = 0; i < snap->nextrem; i++) {
        if (strcmp(snap->extrem[i].id, id) == 0) {
            return mx_snap_fail(ctx, NULL, "forward extremity listed twice");
        }
    }

    if (mx_event_reference_hash(ctx->rv, ev, hash, &e) != 0) {
        return mx_snap_fail(ctx, NULL, "%s", e.text);
    }

    if (snap->nextrem == ctx->extrem_cap) {
        ncap = ctx->extrem_cap ? ctx->extrem_cap * 2 : 4;

        x = realloc(snap->extrem, ncap * sizeof(mx_snapshot_extrem_t));
        if (x == NULL) {
            return mx_snap_fail(ctx, NULL, "out of memory");
        }

        snap->extrem = x;
        ctx->extrem_cap = ncap;
    }

    x = &snap->extrem[snap->nextrem++];

    memcpy(x->id, id, strlen(id) + 1);
    x->depth = json_integer_value(json_object_get(ev, "depth"));
    mx_b64_encode(x->sha256, hash, sizeof(hash), MX_B64_STD);

    return 0;
}


/* One slot of snap->auth_refs: an event index, SIZE_MAX until known. */

static int
mx_snap_auth_ref(mx_snap_ctx_t *ctx, size_t i)
{
    size_t          ncap, *refs;
    mx_snapshot_t  *snap;

    snap = ctx->snap;

    if (snap->nauth_refs == ctx->auth_refs_cap) {
        ncap = ctx->auth_refs_cap ? ctx->auth_refs_cap * 2 : 4096;

        refs = realloc(snap->auth_refs, ncap * sizeof(size_t));
        if (refs == NULL) {
            return -1;
        }

        snap->auth_refs = refs;
        ctx->auth_refs_cap = ncap;
    }

    snap->auth_refs[snap->nauth_refs++] = i;

    return 0;
}


static int
mx_snap_list_push(mx_snap_ctx_t *ctx, mx_snapshot_list_e l, size_t i)
{
    size_t               ncap, *ev;
    mx_snapshot_list_t  *list;

    list = &ctx->snap->lists[l];

    if (list->n == ctx->caps[l]) {
        ncap = ctx->caps[l] ? ctx->caps[l] * 2 : 256;

        ev = realloc(list->events, ncap * sizeof(size_t));
        if (ev == NULL) {
            return mx_snap_fail(ctx, NULL, "out of memory");
        }

        list->events = ev;
        ctx->caps[l] = ncap;
    }

    list->events[list->n++] = i;

    return 0;
}


/* The checks that need every event, the counts and the chunks. */

static int
mx_snap_finish(mx_snap_ctx_t *ctx)
{
    long                 found;
    char                 where[384];
    size_t               i, k, l, *slot;
    const char          *ref, *create_id;
    mx_snap_aux_t       *aux;
    mx_snapshot_t       *snap;
    mx_snapshot_event_t *x;

    snap = ctx->snap;

    if (ctx->create < 0) {
        return mx_snap_fail(ctx, "state", "no m.room.create event");
    }

    create_id = snap->events[ctx->create].id;

    if (snap->nextrem == 0) {
        return mx_snap_fail(ctx, "forward_extremities",
                            "no forward extremity");
    }

    for (i = 0; i < snap->nevents; i++) {
        x = &snap->events[i];
        aux = &ctx->aux[i];
        ref = ctx->refs.data + aux->ref_off;
        slot = snap->auth_refs + x->auth_off;

        /* the IDs kept fill the SIZE_MAX slots, in order */

        for (k = 0; k < aux->ref_n; k++, ref += strlen(ref) + 1, slot++) {
            while (*slot != SIZE_MAX) {
                slot++;
            }

            snprintf(where, sizeof(where), "%s[%zu] (%s)",
                     mx_snap_list_names[aux->list], aux->pos, x->id);

            if (!ctx->rv->create_in_auth_events
                && strcmp(ref, create_id) == 0)
            {
                return mx_snap_fail(ctx, where, "auth_events lists the "
                                    "create event (room version %s implies "
                                    "it)", ctx->rv->id);
            }

            found = mx_snap_table_find(&ctx->ids, snap->events, ref);

            if (found < 0) {
                return mx_snap_fail(ctx, where, "auth event %.100s is in "
                                    "neither state nor auth_chain", ref);
            }

            *slot = (size_t) found;
        }
    }

    snap->max_depth = 0;

    for (i = 0; i < snap->nextrem; i++) {
        if (snap->extrem[i].depth > snap->max_depth) {
            snap->max_depth = snap->extrem[i].depth;
        }
    }

    snprintf(snap->room_id, sizeof(snap->room_id), "%s", ctx->room_id);
    snprintf(snap->create_event_id, sizeof(snap->create_event_id), "%s",
             create_id);

    snap->member_events = snap->lists[MX_SNAPSHOT_STATE_M].n;
    snap->state_events = snap->lists[MX_SNAPSHOT_STATE_NM].n
                         + snap->member_events;
    snap->auth_chain = snap->lists[MX_SNAPSHOT_AUTH].n;
    snap->bytes = 0;

    if (mx_snap_partial(ctx) != 0) {
        return -1;
    }

    for (l = 0; l < MX_SNAPSHOT_NLISTS; l++) {
        if (mx_snap_chunk_list(&snap->lists[l], snap->events) != 0) {
            return mx_snap_fail(ctx, "document", "out of memory");
        }

        /* bytes: what a full send_join answer holds */

        if (l == MX_SNAPSHOT_AUTH_NM) {
            continue;
        }

        for (i = 0; i < snap->lists[l].nchunks; i++) {
            snap->bytes += snap->lists[l].chunks[i].bytes
                           - (snap->lists[l].chunks[i].count - 1);
        }
    }

    if (ctx->progress) {
        ctx->progress(ctx->data, ctx->doc_len, ctx->doc_len);
    }

    return 0;
}


/*
 * The partial state and its auth chain (mx_snapshot.h, docs/redis-schema.md
 * "Partial state"): the heroes when the room has neither name nor
 * canonical alias, the partial flags, then the closure over auth_events
 * walked with a stack, listed in event index order (the document's).
 */

static int
mx_snap_partial(mx_snap_ctx_t *ctx)
{
    int                   pass;
    size_t                i, k, n, sp, cap, j, *stack, *ns;
    mx_snapshot_t        *snap;
    mx_snapshot_list_t   *m;
    mx_snapshot_event_t  *x;

    static const char    *wanted[2][2] = {
        { "join", "invite" }, { "leave", "ban" }
    };

    snap = ctx->snap;
    m = &snap->lists[MX_SNAPSHOT_STATE_M];

    snap->named =
        mx_snap_table_find(&ctx->keys, snap->events,
                           "[\"m.room.name\",\"\"]") >= 0
        || mx_snap_table_find(&ctx->keys, snap->events,
                              "[\"m.room.canonical_alias\",\"\"]") >= 0;

    snap->nheroes = 0;

    /* the first MX_SNAPSHOT_HEROES by (depth, ID), by insertion */

    for (pass = 0; !snap->named && pass < 2 && snap->nheroes == 0; pass++) {
        for (i = 0; i < m->n; i++) {
            x = &snap->events[m->events[i]];

            if (strcmp(x->membership, wanted[pass][0]) != 0
                && strcmp(x->membership, wanted[pass][1]) != 0)
            {
                continue;
            }

            for (k = snap->nheroes;
                 k > 0 && mx_snap_hero_before(x,
                                              &snap->events[snap->heroes[k - 1]]);
                 k--)
            {
                /* void */
            }

            if (k == MX_SNAPSHOT_HEROES) {
                continue;
            }

            n = snap->nheroes < MX_SNAPSHOT_HEROES ? snap->nheroes
                                                   : MX_SNAPSHOT_HEROES - 1;
            memmove(&snap->heroes[k + 1], &snap->heroes[k],
                    (n - k) * sizeof(size_t));
            snap->heroes[k] = m->events[i];

            if (snap->nheroes < MX_SNAPSHOT_HEROES) {
                snap->nheroes++;
            }
        }
    }

    for (i = 0; i < snap->lists[MX_SNAPSHOT_STATE_NM].n; i++) {
        snap->events[snap->lists[MX_SNAPSHOT_STATE_NM].events[i]].partial = 1;
    }

    for (i = 0; i < snap->nheroes; i++) {
        snap->events[snap->heroes[i]].partial = 1;
    }

    /* the closure: every event reached from the partial state */

    cap = 256;
    sp = 0;
    stack = malloc(cap * sizeof(size_t));

    if (stack == NULL) {
        return mx_snap_fail(ctx, "document", "out of memory");
    }

    for (i = 0; i < snap->nevents; i++) {
        x = &snap->events[i];

        if (!x->partial) {
            continue;
        }

        j = i;

        for ( ;; ) {
            for (k = 0; k < snap->events[j].auth_n; k++) {
                n = snap->auth_refs[snap->events[j].auth_off + k];

                if (snap->events[n].partial || snap->events[n].in_auth_nm) {
                    continue;
                }

                snap->events[n].in_auth_nm = 1;

                if (sp == cap) {
                    ns = realloc(stack, 2 * cap * sizeof(size_t));
                    if (ns == NULL) {
                        free(stack);
                        return mx_snap_fail(ctx, "document",
                                            "out of memory");
                    }

                    stack = ns;
                    cap *= 2;
                }

                stack[sp++] = n;
            }

            if (sp == 0) {
                break;
            }

            j = stack[--sp];
        }
    }

    free(stack);

    for (i = 0; i < snap->nevents; i++) {
        if (snap->events[i].in_auth_nm
            && mx_snap_list_push(ctx, MX_SNAPSHOT_AUTH_NM, i) != 0)
        {
            return -1;
        }
    }

    return 0;
}


/* Heroes are ordered by their member event's depth, then event ID. */

static int
mx_snap_hero_before(const mx_snapshot_event_t *a,
    const mx_snapshot_event_t *b)
{
    if (a->depth != b->depth) {
        return a->depth < b->depth;
    }

    return strcmp(a->id, b->id) < 0;
}


/* Greedy: as many PDUs per chunk as fit MX_SNAPSHOT_CHUNK_MAX. */

static int
mx_snap_chunk_list(mx_snapshot_list_t *list,
    const mx_snapshot_event_t *events)
{
    size_t                i, len, cap;
    mx_snapshot_chunk_t  *c, *nc;

    cap = 0;
    c = NULL;

    for (i = 0; i < list->n; i++) {
        len = events[list->events[i]].pdu_len;

        if (c != NULL && c->bytes + 1 + len <= MX_SNAPSHOT_CHUNK_MAX) {
            c->bytes += 1 + len;
            c->count++;
            continue;
        }

        if (list->nchunks == cap) {
            cap = cap ? cap * 2 : 16;

            nc = realloc(list->chunks, cap * sizeof(mx_snapshot_chunk_t));
            if (nc == NULL) {
                return -1;
            }

            list->chunks = nc;
        }

        c = &list->chunks[list->nchunks++];
        c->first = i;
        c->count = 1;
        c->bytes = len;
    }

    return 0;
}


static const char *
mx_snap_key(const void *data, size_t i)
{
    const mx_snap_keys_t *k = data;

    return *(char *const *) ((const char *) &k->events[i] + k->keyoff);
}


static long
mx_snap_table_find(const mx_snap_table_t *t,
    const mx_snapshot_event_t *events, const char *key)
{
    mx_snap_keys_t  k;

    k.events = events;
    k.keyoff = t->keyoff;

    return mx_table_find(&t->t, key, mx_snap_key, &k);
}


/* Adds event i (its key not yet in t). */

static int
mx_snap_table_add(mx_snap_table_t *t, const mx_snapshot_event_t *events,
    size_t i)
{
    mx_snap_keys_t  k;

    k.events = events;
    k.keyoff = t->keyoff;

    return mx_table_add(&t->t, i, mx_snap_key, &k);
}


static const char *
mx_snap_str(const json_t *obj, const char *key, size_t *len)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v)) {
        return NULL;
    }

    *len = json_string_length(v);

    return json_string_value(v);
}


/*
 * A canonical string of len bytes cut to its size: the buffer it was built
 * in doubles as it grows, and 100,000 of them add up.
 */
static char *
mx_snap_shrink(char *p, size_t len)
{
    char  *q;

    q = realloc(p, len + 1);

    return q ? q : p;
}
