/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl load, the Redis half that sync shares:
 * mxj_load_snapshot() as docs/redis-schema.md says. The schema key, the
 * room's load lock, the staging keys (ctl_load_stage.c), one script that
 * switches them in, UNLINK of the previous generation, the rooms set and
 * the aliases, unlock.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl_load_run.h"


/*
 * The per-room keys, in the order the switch script takes them. The edge
 * keys are written by the module's send_join, never staged here: a load
 * moves them aside with the rest, so they start empty for the new
 * generation (the joins they record stay in the outbox).
 */
const char  *mxj_load_names[MXJ_LOAD_NKEYS] = {
    MX_KEY_META, MX_KEY_STATE, MX_KEY_MEMBER, MX_KEY_PDU, MX_KEY_STATE_NM,
    MX_KEY_STATE_M, MX_KEY_AUTH, MX_KEY_EXTREM, MX_KEY_SERVERS,
    MX_KEY_SERVER_USER, MX_KEY_MCHUNK, MX_KEY_AUTH_NM, MX_KEY_PARTIAL,
    MX_KEY_MEVENT, MX_KEY_EDGE, MX_KEY_EDGE_PDU, MX_KEY_EDGE_M, MX_KEY_EDGE_ORIG,
    MX_KEY_EDGE_OLD
};


static int mxj_load_keys(mxj_load_t *ld);
static void mxj_load_free_keys(mxj_load_t *ld);
static int mxj_load_lock(mxj_load_t *ld);
static void mxj_load_unlock(mxj_load_t *ld);
static void mxj_load_cleanup(mxj_load_t *ld);
static int mxj_load_switch(mxj_load_t *ld);
static int mxj_load_finish(mxj_load_t *ld);


int
mxj_load_snapshot(mxj_redis_t *r, const mx_snapshot_t *snap,
    mxj_load_opts_t *opts)
{
    int          rc;
    mxj_load_t   ld;

    memset(&ld, 0, sizeof(mxj_load_t));
    ld.r = r;
    ld.snap = snap;
    ld.opts = opts;
    ld.progress = opts->progress;

    rc = -1;

    if (mxj_load_keys(&ld) != 0) {
        goto done;
    }

    if (mxj_redis_schema(r, 1) != 0) {
        goto done;
    }

    if (mxj_load_lock(&ld) != 0) {
        goto done;
    }

    if (mxj_load_stage(&ld) != 0 || mxj_load_switch(&ld) != 0) {
        mxj_load_cleanup(&ld);
        goto done;
    }

    if (mxj_load_finish(&ld) != 0) {
        goto done;
    }

    rc = 0;

done:

    if (ld.locked) {
        mxj_load_unlock(&ld);
    }

    mxj_load_free_keys(&ld);

    return rc;
}


static int
mxj_load_keys(mxj_load_t *ld)
{
    int     i;
    char    name[32];

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        ld->cur[i] = mxj_room_key(ld->r, ld->snap->room_id,
                                  mxj_load_names[i]);

        snprintf(name, sizeof(name), MX_KEY_GEN_LOAD "%s", mxj_load_names[i]);
        ld->load[i] = mxj_room_key(ld->r, ld->snap->room_id, name);

        snprintf(name, sizeof(name), MX_KEY_GEN_OLD "%s", mxj_load_names[i]);
        ld->old[i] = mxj_room_key(ld->r, ld->snap->room_id, name);

        if (ld->cur[i] == NULL || ld->load[i] == NULL || ld->old[i] == NULL)
        {
            return -1;
        }
    }

    ld->lock = mxj_room_key(ld->r, ld->snap->room_id, MX_KEY_LOADLOCK);

    return ld->lock ? 0 : -1;
}


static void
mxj_load_free_keys(mxj_load_t *ld)
{
    int  i;

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        free(ld->cur[i]);
        free(ld->load[i]);
        free(ld->old[i]);
    }

    free(ld->lock);
}


static int
mxj_load_lock(mxj_load_t *ld)
{
    unsigned char  raw[16];
    redisReply    *reply;

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(ld->token, sizeof(ld->token), raw, sizeof(raw));

    reply = mxj_redis_cmdf(ld->r, "SET %s %s NX PX " MXJ_LOAD_LOCK_MS,
                           ld->lock, ld->token);
    if (reply == NULL) {
        return -1;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        fprintf(stderr, "matrix-join-ctl: room %s is being loaded by another "
                "matrix-join-ctl (lock %s held; it expires within 10 "
                "minutes)\n", ld->snap->room_id, ld->lock);
        freeReplyObject(reply);
        return -1;
    }

    freeReplyObject(reply);
    ld->locked = 1;

    return 0;
}


static void
mxj_load_unlock(mxj_load_t *ld)
{
    redisReply  *reply;

    if (ld->r->c == NULL || ld->r->c->err) {
        return;
    }

    reply = mxj_redis_script(ld->r, MX_LUA_LOCK_RELEASE, 1, 2,
                             (const char *[]) { ld->lock, ld->token }, NULL);
    if (reply != NULL) {
        freeReplyObject(reply);
    }

    ld->locked = 0;
}


/* A failed load: the staging keys go; the current generation stays. */

static void
mxj_load_cleanup(mxj_load_t *ld)
{
    int           i;
    const char   *argv[1 + MXJ_LOAD_NKEYS];
    redisReply   *reply;

    if (ld->r->c == NULL || ld->r->c->err) {
        return;
    }

    argv[0] = "UNLINK";

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        argv[1 + i] = ld->load[i];
    }

    reply = mxj_redis_cmd(ld->r, 1 + MXJ_LOAD_NKEYS, argv, NULL);
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


/* Step 4: one script, every key in KEYS. */

static int
mxj_load_switch(mxj_load_t *ld)
{
    int           i, n, nkeys;
    char          pos[16];
    const char   *argv[3 * MXJ_LOAD_NKEYS + 2 + 4];
    redisReply   *reply;

    /* src/lua/load_switch.lua */

    n = 0;
    nkeys = 3 * MXJ_LOAD_NKEYS + 1 + (ld->opts->edge_to ? 1 : 0);
    snprintf(pos, sizeof(pos), "%d", MXJ_K_EDGE_PDU + 1);

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        argv[n++] = ld->cur[i];
    }

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        argv[n++] = ld->load[i];
    }

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        argv[n++] = ld->old[i];
    }

    argv[n++] = ld->lock;

    if (ld->opts->edge_to) {
        argv[n++] = ld->opts->edge_to;
    }

    argv[n++] = ld->token;

    if (ld->opts->edge_to) {
        argv[n++] = pos;
        argv[n++] = ld->opts->edge_prefix;
        argv[n++] = ld->opts->edge_suffix;
    }

    reply = mxj_redis_script(ld->r, MX_LUA_LOAD_SWITCH, nkeys, n, argv, NULL);
    if (reply == NULL) {
        return -1;
    }

    freeReplyObject(reply);

    return 0;
}


/* Step 5: the previous generation goes, the room and aliases are named. */

static int
mxj_load_finish(mxj_load_t *ld)
{
    int           i;
    char         *key;
    size_t        a;
    const char   *argv[1 + MXJ_LOAD_NKEYS];
    redisReply   *reply;

    argv[0] = "UNLINK";

    for (i = 0; i < MXJ_LOAD_NKEYS; i++) {
        argv[1 + i] = ld->old[i];
    }

    reply = mxj_redis_cmd(ld->r, 1 + MXJ_LOAD_NKEYS, argv, NULL);
    if (reply == NULL) {
        return -1;
    }

    freeReplyObject(reply);

    key = mxj_global_key(ld->r, MX_KEY_ROOMS, NULL);
    if (key == NULL) {
        return -1;
    }

    reply = mxj_redis_cmdf(ld->r, "SADD %s %s", key, ld->snap->room_id);
    free(key);

    if (reply == NULL) {
        return -1;
    }

    freeReplyObject(reply);

    for (a = 0; a < ld->snap->naliases; a++) {
        key = mxj_global_key(ld->r, MX_KEY_ALIAS, ld->snap->aliases[a]);
        if (key == NULL) {
            return -1;
        }

        reply = mxj_redis_cmdf(ld->r, "SET %s %s", key, ld->snap->room_id);
        free(key);

        if (reply == NULL) {
            return -1;
        }

        freeReplyObject(reply);
    }

    return 0;
}
