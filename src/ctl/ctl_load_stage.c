/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl load, step 3: a snapshot's model written under the
 * staging keys P{R}:load:X, pipelined (ctl_load_pipe.c): the meta hash,
 * the chunks and indexes of the model, the heroes, the servers.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl_load_run.h"
#include "mx_json.h"


static int mxj_load_meta(mxj_load_t *ld, mxj_pipe_t *p);
static int mxj_load_unreferenced(mxj_load_t *ld, mxj_pipe_t *p);
static int mxj_load_heroes(mxj_load_t *ld, mxj_pipe_t *p);
static int mxj_load_mchunk(mxj_load_t *ld, mxj_pipe_t *p);
static int mxj_load_partial(mxj_load_t *ld, mxj_pipe_t *p);
static int mxj_load_servers(mxj_load_t *ld, mxj_pipe_t *p);


/* Steps 3: the staging keys, pipelined. */

int
mxj_load_stage(mxj_load_t *ld)
{
    int                    i;
    char                  *ext, *v;
    size_t                 c, e;
    mx_buf_t               chunk = MX_BUF_INIT;
    mxj_pipe_t             p;
    redisReply            *reply;
    const mx_snapshot_t   *s;
    mx_snapshot_list_e     l;
    mx_snapshot_event_t   *ev;
    mx_snapshot_extrem_t  *x;
    const char            *argv[1 + MXJ_LOAD_NKEYS];
    static const int       list_key[MX_SNAPSHOT_NLISTS] = {
        MXJ_K_STATE_NM, MXJ_K_STATE_M, MXJ_K_AUTH, MXJ_K_AUTH_NM
    };

    s = ld->snap;
    ext = NULL;

    argv[0] = "UNLINK";

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        argv[1 + i] = ld->load[i];
    }

    reply = mxj_redis_cmd(ld->r, 1 + MXJ_LOAD_NKEYS, argv, NULL);
    if (reply == NULL) {
        return -1;
    }

    freeReplyObject(reply);

    memset(&p, 0, sizeof(mxj_pipe_t));
    p.r = ld->r;
    p.progress = ld->progress;
    p.total_bytes = 2 * s->bytes;

    p.argv = malloc(MXJ_PIPE_ARGS * sizeof(char *));
    p.lens = malloc(MXJ_PIPE_ARGS * sizeof(size_t));

    if (p.argv == NULL || p.lens == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        goto failed;
    }

    if (mxj_load_meta(ld, &p) != 0
        || mxj_load_heroes(ld, &p) != 0
        || mxj_load_unreferenced(ld, &p) != 0
        || mxj_load_mchunk(ld, &p) != 0
        || mxj_load_partial(ld, &p) != 0)
    {
        goto failed;
    }

    /* the state index, the memberships and the PDUs by ID */

    if (mxj_pipe_start(&p, "HSET", ld->load[MXJ_K_STATE]) != 0) {
        goto failed;
    }

    for (e = 0; e < s->nevents; e++) {
        ev = &s->events[e];

        if (ev->state_key == NULL) {
            continue;
        }

        if (mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_STATE], ev->state_key,
                         strlen(ev->state_key)) != 0
            || mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_STATE], ev->id,
                            strlen(ev->id)) != 0)
        {
            goto failed;
        }
    }

    if (mxj_pipe_end(&p) != 0
        || mxj_pipe_start(&p, "HSET", ld->load[MXJ_K_MEMBER]) != 0)
    {
        goto failed;
    }

    for (e = 0; e < s->nevents; e++) {
        ev = &s->events[e];

        if (!ev->member) {
            continue;
        }

        if (mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_MEMBER], ev->user,
                         strlen(ev->user)) != 0
            || mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_MEMBER],
                            ev->membership, strlen(ev->membership)) != 0)
        {
            goto failed;
        }
    }

    if (mxj_pipe_end(&p) != 0
        || mxj_load_servers(ld, &p) != 0
        || mxj_pipe_start(&p, "HSET", ld->load[MXJ_K_PDU]) != 0)
    {
        goto failed;
    }

    /*
     * A member event of state is read whole only in v1/v2, whose
     * templates need its reference hash; otherwise its ID (state) and
     * membership (member) are enough, and its bytes stay in the chunks
     * alone: the pdu hash would double the memory of a big room.
     */

    for (e = 0; e < s->nevents; e++) {
        ev = &s->events[e];

        if (ev->member && !ev->in_auth && !s->rv->event_refs_with_hashes) {
            continue;
        }

        if (mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_PDU], ev->id,
                         strlen(ev->id)) != 0
            || mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_PDU], ev->pdu,
                            ev->pdu_len) != 0)
        {
            goto failed;
        }

        p.done_bytes += ev->pdu_len;
    }

    if (mxj_pipe_end(&p) != 0) {
        goto failed;
    }

    /* the chunks: one RPUSH each, the chunk is copied by hiredis */

    for (l = 0; l < MX_SNAPSHOT_NLISTS; l++) {
        for (c = 0; c < s->lists[l].nchunks; c++) {
            mx_buf_reset(&chunk);

            if (mx_snapshot_chunk(s, l, c, &chunk) != 0) {
                fprintf(stderr, "matrix-join-ctl: out of memory\n");
                goto failed;
            }

            if (mxj_pipe_start(&p, "RPUSH", ld->load[list_key[l]]) != 0
                || mxj_pipe_arg(&p, "RPUSH", ld->load[list_key[l]],
                                chunk.data, chunk.len) != 0
                || mxj_pipe_end(&p) != 0)
            {
                goto failed;
            }

            p.done_bytes += chunk.len;
        }
    }

    /* the forward extremities: {"depth":N,"sha256":"<b64>"} */

    ext = malloc(s->nextrem * MXJ_LOAD_EXTREM_LEN);
    if (ext == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        goto failed;
    }

    if (mxj_pipe_start(&p, "HSET", ld->load[MXJ_K_EXTREM]) != 0) {
        goto failed;
    }

    for (e = 0; e < s->nextrem; e++) {
        x = &s->extrem[e];
        v = ext + e * MXJ_LOAD_EXTREM_LEN;

        snprintf(v, MXJ_LOAD_EXTREM_LEN, "{\"depth\":%lld,\"sha256\":\"%s\"}",
                 (long long) x->depth, x->sha256);

        if (mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_EXTREM], x->id,
                         strlen(x->id)) != 0
            || mxj_pipe_arg(&p, "HSET", ld->load[MXJ_K_EXTREM], v,
                            strlen(v)) != 0)
        {
            goto failed;
        }
    }

    if (mxj_pipe_end(&p) != 0 || mxj_pipe_drain(&p) != 0) {
        goto failed;
    }

    if (p.progress) {
        fprintf(stderr, "\r\033[K");
    }

    mx_buf_free(&chunk);
    free(ext);
    free(p.argv);
    free(p.lens);

    return 0;

failed:

    if (p.progress) {
        fprintf(stderr, "\n");
    }

    mx_buf_free(&chunk);
    free(ext);
    free(p.argv);
    free(p.lens);

    return -1;
}


/*
 * The meta hash; loaded_at is set by the switch. generation names this
 * load: 16 random bytes as 32 lowercase hex digits, new on every load.
 */

static int
mxj_load_meta(mxj_load_t *ld, mxj_pipe_t *p)
{
    char                  num[7][32], generation[33];
    size_t                k;
    unsigned char         raw[16];
    const char           *meta[24];
    const mx_snapshot_t  *s;

    s = ld->snap;

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(generation, sizeof(generation), raw, sizeof(raw));

    snprintf(num[0], sizeof(num[0]), "%zu", s->state_events);
    snprintf(num[1], sizeof(num[1]), "%zu", s->members);
    snprintf(num[2], sizeof(num[2]), "%zu", s->member_events);
    snprintf(num[3], sizeof(num[3]), "%zu", s->auth_chain);
    snprintf(num[4], sizeof(num[4]), "%zu", s->nextrem);
    snprintf(num[5], sizeof(num[5]), "%lld", (long long) s->max_depth);
    snprintf(num[6], sizeof(num[6]), "%llu", (unsigned long long) s->bytes);

    meta[0] = MX_META_SCHEMA;               meta[1] = MX_SCHEMA_VERSION;
    meta[2] = MX_META_ROOM_VERSION;         meta[3] = s->rv->id;
    meta[4] = MX_META_CREATE_EVENT_ID;      meta[5] = s->create_event_id;
    meta[6] = MX_META_STATE_EVENTS;         meta[7] = num[0];
    meta[8] = MX_META_MEMBERS;              meta[9] = num[1];
    meta[10] = MX_META_MEMBER_EVENTS;       meta[11] = num[2];
    meta[12] = MX_META_AUTH_CHAIN;          meta[13] = num[3];
    meta[14] = MX_META_EXTREMITIES;         meta[15] = num[4];
    meta[16] = MX_META_MAX_DEPTH;           meta[17] = num[5];
    meta[18] = MX_META_BYTES;               meta[19] = num[6];
    meta[20] = MX_META_ROOM_ID;             meta[21] = s->room_id;
    meta[22] = MX_META_GENERATION;          meta[23] = generation;

    if (mxj_pipe_start(p, "HSET", ld->load[MXJ_K_META]) != 0) {
        return -1;
    }

    for (k = 0; k < sizeof(meta) / sizeof(meta[0]); k++) {
        if (mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], meta[k],
                         strlen(meta[k]))
            != 0)
        {
            return -1;
        }
    }

    /* the caller's own fields (sync: synced_from, unconfirmed) */

    for (k = 0; k + 1 < ld->opts->nmeta; k += 2) {
        if (mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], ld->opts->meta[k],
                         strlen(ld->opts->meta[k])) != 0
            || mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META],
                            ld->opts->meta[k + 1],
                            strlen(ld->opts->meta[k + 1])) != 0)
        {
            return -1;
        }
    }

    memcpy(ld->opts->generation, generation, sizeof(generation));

    /* sent now: num[] lives on this stack frame */

    return mxj_pipe_end(p);
}


/*
 * meta.nm_unreferenced: the IDs of the non-member state events that are
 * not in the auth chain, as a canonical JSON array. A send_join answer
 * adds those of them the join names in its auth_events to its auth chain.
 */

static int
mxj_load_unreferenced(mxj_load_t *ld, mxj_pipe_t *p)
{
    int                    rc;
    size_t                 e, n;
    mx_buf_t               list = MX_BUF_INIT;
    const mx_snapshot_t   *s;
    mx_snapshot_event_t   *ev;

    s = ld->snap;
    rc = mx_buf_append_byte(&list, '[');
    n = 0;

    for (e = 0; rc == 0 && e < s->nevents; e++) {
        ev = &s->events[e];

        if (!ev->in_state || ev->member || ev->in_auth) {
            continue;
        }

        if ((n++ && mx_buf_append_byte(&list, ',') != 0)
            || mx_json_canonical_string(ev->id, strlen(ev->id), &list) != 0)
        {
            rc = -1;
        }
    }

    if (rc != 0 || mx_buf_append_byte(&list, ']') != 0) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        mx_buf_free(&list);
        return -1;
    }

    rc = -1;

    if (mxj_pipe_start(p, "HSET", ld->load[MXJ_K_META]) == 0
        && mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], "nm_unreferenced",
                        15) == 0
        && mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], list.data, list.len)
           == 0
        && mxj_pipe_end(p) == 0)
    {
        rc = 0;
    }

    mx_buf_free(&list);

    return rc;
}


/*
 * meta.heroes, only for a room with neither name nor canonical alias:
 * the user IDs of mx_snapshot_t.heroes as a canonical JSON array.
 */

static int
mxj_load_heroes(mxj_load_t *ld, mxj_pipe_t *p)
{
    int                   rc;
    size_t                i;
    mx_buf_t              list = MX_BUF_INIT;
    const char           *user;
    const mx_snapshot_t  *s;

    s = ld->snap;

    if (s->named) {
        return 0;
    }

    rc = mx_buf_append_byte(&list, '[');

    for (i = 0; rc == 0 && i < s->nheroes; i++) {
        user = s->events[s->heroes[i]].user;

        if ((i && mx_buf_append_byte(&list, ',') != 0)
            || mx_json_canonical_string(user, strlen(user), &list) != 0)
        {
            rc = -1;
        }
    }

    if (rc != 0 || mx_buf_append_byte(&list, ']') != 0) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        mx_buf_free(&list);
        return -1;
    }

    /* sent (copied by hiredis) before the list is freed */

    rc = -1;

    if (mxj_pipe_start(p, "HSET", ld->load[MXJ_K_META]) == 0
        && mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], MX_META_HEROES,
                        sizeof(MX_META_HEROES) - 1) == 0
        && mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], list.data, list.len)
           == 0
        && mxj_pipe_end(p) == 0)
    {
        rc = 0;
    }

    mx_buf_free(&list);

    return rc;
}


/*
 * mchunk: where each member event of state lies in the state_m chunks,
 * user ID -> "<chunk>:<offset>:<length>:<in auth chain 0/1>", so that
 * send_join can cut one member's event out of its chunk; and mevent, its
 * event ID -> the user ID, so that /event finds it there by its ID.
 */

static int
mxj_load_mchunk(mxj_load_t *ld, mxj_pipe_t *p)
{
    int                         rc;
    char                       *vals, *v;
    size_t                      i, c, off;
    const mx_snapshot_t        *s;
    const mx_snapshot_list_t   *m;
    const mx_snapshot_event_t  *ev;

    s = ld->snap;
    m = &s->lists[MX_SNAPSHOT_STATE_M];

    if (m->n == 0) {
        return 0;
    }

    /* every value lives until the last HSET is sent */

    vals = malloc(m->n * MXJ_LOAD_MCHUNK_LEN);
    if (vals == NULL) {
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    rc = -1;

    if (mxj_pipe_start(p, "HSET", ld->load[MXJ_K_MCHUNK]) != 0) {
        goto done;
    }

    for (i = 0; i < m->n; i++) {
        ev = mx_snapshot_list_event(s, MX_SNAPSHOT_STATE_M, i);
        v = vals + i * MXJ_LOAD_MCHUNK_LEN;

        mx_snapshot_locate(s, MX_SNAPSHOT_STATE_M, i, &c, &off);
        snprintf(v, MXJ_LOAD_MCHUNK_LEN, "%zu:%zu:%zu:%d", c, off,
                 ev->pdu_len, ev->in_auth ? 1 : 0);

        if (mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_MCHUNK], ev->user,
                         strlen(ev->user)) != 0
            || mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_MCHUNK], v, strlen(v))
               != 0)
        {
            goto done;
        }
    }

    if (mxj_pipe_end(p) != 0
        || mxj_pipe_start(p, "HSET", ld->load[MXJ_K_MEVENT]) != 0)
    {
        goto done;
    }

    for (i = 0; i < m->n; i++) {
        ev = mx_snapshot_list_event(s, MX_SNAPSHOT_STATE_M, i);

        if (mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_MEVENT], ev->id,
                         strlen(ev->id)) != 0
            || mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_MEVENT], ev->user,
                            strlen(ev->user)) != 0)
        {
            goto done;
        }
    }

    rc = mxj_pipe_end(p);

done:

    free(vals);

    return rc;
}


/*
 * partial: event ID -> "s" for the non-member state, "h" for the heroes'
 * member events, "a" for their auth chain (the auth_nm list). Heroes are
 * told apart because an answer sends five of the six, and the joining
 * user's own membership instead of a hero's: a hero event not sent must
 * be walked into when the answer's auth chain is made.
 */

static int
mxj_load_partial(mxj_load_t *ld, mxj_pipe_t *p)
{
    size_t                e;
    const mx_snapshot_t  *s;
    mx_snapshot_event_t  *ev;

    s = ld->snap;

    if (mxj_pipe_start(p, "HSET", ld->load[MXJ_K_PARTIAL]) != 0) {
        return -1;
    }

    for (e = 0; e < s->nevents; e++) {
        ev = &s->events[e];

        if (!ev->partial && !ev->in_auth_nm) {
            continue;
        }

        if (mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_PARTIAL], ev->id,
                         strlen(ev->id)) != 0
            || mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_PARTIAL],
                            !ev->partial ? "a" : ev->member ? "h" : "s",
                            1) != 0)
        {
            return -1;
        }
    }

    return mxj_pipe_end(p);
}


/*
 * The servers with joined members, by count: the directory's candidates, as
 * a sorted set (counts negated, so ZRANGE lists the most members first, then
 * by name) and, for the directory's answer, the first MXJ_LOAD_CANDIDATES of
 * them as a JSON array in meta.servers.
 */

#define MXJ_LOAD_CANDIDATES  100

typedef struct {
    const char  *name;
    size_t       len;
    size_t       count;
    const char  *user;          /* a joined user of the server */
} mxj_server_t;


static int
mxj_server_name_cmp(const void *a, const void *b)
{
    int                  c;
    const mxj_server_t  *x = a, *y = b;

    c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);

    if (c != 0) {
        return c;
    }

    return (x->len > y->len) - (x->len < y->len);
}


static int
mxj_server_rank_cmp(const void *a, const void *b)
{
    const mxj_server_t  *x = a, *y = b;

    if (x->count != y->count) {
        return (x->count < y->count) - (x->count > y->count);
    }

    return mxj_server_name_cmp(a, b);
}


static int
mxj_load_servers(mxj_load_t *ld, mxj_pipe_t *p)
{
    int                   rc;
    char                (*scores)[24];
    size_t                e, n, i, run, nservers;
    mx_buf_t              list = MX_BUF_INIT;
    const mx_snapshot_t  *s;
    mxj_server_t         *sv;
    mx_snapshot_event_t  *ev;

    s = ld->snap;

    sv = malloc((s->members ? s->members : 1) * sizeof(mxj_server_t));
    scores = malloc((s->members ? s->members : 1) * sizeof(scores[0]));

    if (sv == NULL || scores == NULL) {
        free(sv);
        free(scores);
        fprintf(stderr, "matrix-join-ctl: out of memory\n");
        return -1;
    }

    n = 0;

    for (e = 0; e < s->nevents && n < s->members; e++) {
        ev = &s->events[e];

        if (!ev->member || strcmp(ev->membership, "join") != 0) {
            continue;
        }

        sv[n].name = mx_id_server(ev->user, strlen(ev->user), '@',
                                  &sv[n].len);
        sv[n].user = ev->user;

        if (sv[n].name != NULL) {
            n++;
        }
    }

    /* one entry per server, with its count */

    qsort(sv, n, sizeof(mxj_server_t), mxj_server_name_cmp);

    nservers = 0;

    for (i = 0; i < n; i += run) {
        for (run = 1; i + run < n
                      && mxj_server_name_cmp(&sv[i], &sv[i + run]) == 0;
             run++)
        {
            /* void */
        }

        sv[nservers] = sv[i];
        sv[nservers].count = run;
        nservers++;
    }

    qsort(sv, nservers, sizeof(mxj_server_t), mxj_server_rank_cmp);

    rc = -1;

    if (mx_buf_append_byte(&list, '[') != 0) {
        goto done;
    }

    for (i = 0; i < nservers && i < MXJ_LOAD_CANDIDATES; i++) {
        if ((i && mx_buf_append_byte(&list, ',') != 0)
            || mx_json_canonical_string(sv[i].name, sv[i].len, &list) != 0)
        {
            goto done;
        }
    }

    if (mx_buf_append_byte(&list, ']') != 0) {
        goto done;
    }

    if (mxj_pipe_start(p, "HSET", ld->load[MXJ_K_META]) != 0
        || mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], MX_META_SERVERS,
                        sizeof(MX_META_SERVERS) - 1) != 0
        || mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_META], list.data, list.len)
           != 0
        || mxj_pipe_end(p) != 0)
    {
        goto done;
    }

    if (nservers && mxj_pipe_start(p, "ZADD", ld->load[MXJ_K_SERVERS]) != 0) {
        goto done;
    }

    for (i = 0; i < nservers; i++) {
        snprintf(scores[i], sizeof(scores[0]), "-%zu", sv[i].count);

        if (mxj_pipe_arg(p, "ZADD", ld->load[MXJ_K_SERVERS], scores[i],
                         strlen(scores[i])) != 0
            || mxj_pipe_arg(p, "ZADD", ld->load[MXJ_K_SERVERS], sv[i].name,
                            sv[i].len) != 0)
        {
            goto done;
        }
    }

    if (nservers && mxj_pipe_end(p) != 0) {
        goto done;
    }

    /* one joined user a server: the authoriser of last resort */

    if (nservers
        && mxj_pipe_start(p, "HSET", ld->load[MXJ_K_SERVER_USER]) != 0)
    {
        goto done;
    }

    for (i = 0; i < nservers; i++) {
        if (mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_SERVER_USER], sv[i].name,
                         sv[i].len) != 0
            || mxj_pipe_arg(p, "HSET", ld->load[MXJ_K_SERVER_USER],
                            sv[i].user, strlen(sv[i].user)) != 0)
        {
            goto done;
        }
    }

    /* sent (copied by hiredis) before the scores are freed */
    rc = nservers ? mxj_pipe_end(p) : 0;

done:

    mx_buf_free(&list);
    free(sv);
    free(scores);

    return rc;
}
