/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl sync, a pass's step 1: the room. Its ID (an alias
 * resolved by the directory query), NAME's keys, and the room's records
 * in Redis read as one generation (docs/sync.md "One pass, per room").
 */

#include <stdlib.h>
#include <string.h>

#include "ctl_load.h"
#include "ctl_sync_pass.h"



int
mxj_sync_resolve_room(mxj_sync_t *s, mxj_sync_room_t *room, char *why,
    size_t len)
{
    mxj_sync_pass_t  p;

    memset(&p, 0, sizeof(mxj_sync_pass_t));
    p.s = s;
    p.room = room;
    p.why = why;
    p.len = len;
    why[0] = '\0';

    return mxj_sync_resolve(&p);
}


int
mxj_sync_resolve(mxj_sync_pass_t *p)
{
    char             *id;
    json_t           *doc;
    const char       *rid;
    mxj_sync_room_t  *room;

    room = p->room;

    if (room->alias == NULL) {
        p->id = room->id;
        return 0;
    }

    if (mxj_sync_fed_get(p, MXJ_SYNC_FED "query/directory?room_alias=",
                         room->alias, NULL, NULL,
                         "the directory query of the alias")
        != 0)
    {
        return -1;
    }

    doc = json_loadb(p->s->http.c.body.data, p->s->http.c.body.len, 0,
                     NULL);
    rid = json_string_value(json_object_get(doc, "room_id"));

    if (rid == NULL || !mx_room_id_valid(rid, strlen(rid), 1)) {
        json_decref(doc);
        return mxj_sync_fail(p, "the directory query of %s answered no "
                             "valid room_id", room->alias);
    }

    if (room->id == NULL || strcmp(room->id, rid) != 0) {
        if (room->id != NULL) {
            mxj_sync_log("alias %s now names room %s (was %s)", room->alias,
                         rid, room->id);
        }

        /* another room: what was cached of the old one goes */

        id = strdup(rid);

        if (id == NULL) {
            json_decref(doc);
            return mxj_sync_fail(p, "out of memory");
        }

        pthread_mutex_lock(&p->s->run.mutex);
        free(room->id);
        room->id = id;
        pthread_mutex_unlock(&p->s->run.mutex);

        mxj_sync_pool_free(&room->pool);
        room->generation[0] = '\0';
    }

    json_decref(doc);
    p->id = room->id;

    return 0;
}


int
mxj_sync_keys(mxj_sync_pass_t *p)
{
    mxj_redis_t  *r;

    r = &p->s->r;

    p->k_meta = mxj_room_key(r, p->id, MX_KEY_META);
    p->k_server_user = mxj_room_key(r, p->id, MX_KEY_SERVER_USER);
    p->k_edge_pdu = mxj_room_key(r, p->id, MX_KEY_EDGE_PDU);
    p->k_unconfirmed = mxj_room_key(r, p->id, MX_KEY_UNCONFIRMED);
    p->k_delivered = mxj_room_key(r, p->id, MX_KEY_DELIVERED);
    p->k_outbox = mxj_room_key(r, p->id, MX_KEY_OUTBOX);

    if (p->k_meta == NULL || p->k_server_user == NULL
        || p->k_edge_pdu == NULL || p->k_unconfirmed == NULL
        || p->k_delivered == NULL || p->k_outbox == NULL)
    {
        return mxj_sync_fail(p, "out of memory");
    }

    return 0;
}


int
mxj_sync_read(mxj_sync_pass_t *p)
{
    redisReply  *reply;

    if (p->s->r.c == NULL || p->s->r.c->err) {
        mxj_redis_close(&p->s->r);

        if (mxj_redis_connect(&p->s->r) != 0) {
            return mxj_sync_fail(p, "Redis at %s is unavailable",
                                 p->s->r.address);
        }
    }

    /* src/lua/sync_read.lua: every record of the pass, as one generation */

    reply = mxj_redis_script(&p->s->r, MX_LUA_SYNC_READ, 6, 7,
                             (const char *[]) { p->k_meta, p->k_server_user,
                                                p->k_edge_pdu,
                                                p->k_unconfirmed,
                                                p->k_delivered, p->k_outbox,
                                                p->s->name },
                             NULL);
    if (reply == NULL) {
        return mxj_sync_fail(p, "reading the room's records from Redis "
                             "failed");
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[2]->type != REDIS_REPLY_ARRAY
        || reply->element[3]->type != REDIS_REPLY_ARRAY
        || reply->element[4]->type != REDIS_REPLY_ARRAY)
    {
        freeReplyObject(reply);
        return mxj_sync_fail(p, "unexpected reply reading the room's "
                             "records from Redis");
    }

    p->read = reply;
    p->meta = reply->element[0];
    p->server_user = reply->element[1]->str;
    p->delivered = reply->element[3];
    p->outbox = reply->element[4];

    /* the joins: parsed once the room version is known */

    p->njoins = reply->element[2]->elements / 2;

    if (p->njoins > 0) {
        p->joins = calloc(p->njoins, sizeof(mxj_sync_join_t));

        if (p->joins == NULL) {
            p->njoins = 0;
            return mxj_sync_fail(p, "out of memory");
        }
    }

    return 0;
}
