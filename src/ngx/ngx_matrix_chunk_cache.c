/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Rooms' chunk lists in a shared memory zone: see the header.
 *
 * The zone holds a red-black tree of published entries by key (room \n
 * generation \n mode), a queue of them by use (most recent at the head),
 * a queue of entries that are not findable but still have memory: being
 * filled, or unlinked while answers still send from them, and a small
 * table of the fills under way. Everything is changed under the slab
 * pool's mutex; the megabytes are copied into an entry outside it, before
 * the entry is published.
 *
 * An entry's references are kept per process (holders: pid and count), so
 * that those of a process that died can be told apart and dropped: a
 * holder whose pid is gone (kill(pid, 0): ESRCH) holds nothing.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_matrix_chunk_cache.h"
#include "ngx_matrix_wake.h"


#define NGX_MATRIX_CHUNKS_FILLS    32
#define NGX_MATRIX_CHUNKS_HOLDERS  64
#define NGX_MATRIX_CHUNKS_KEY_MAX  512

#define NGX_MATRIX_CHUNKS_NIL      ((size_t) -1)

/* entry states */
#define NGX_MATRIX_CHUNKS_PENDING  0    /* in sh->unlinked, being filled */
#define NGX_MATRIX_CHUNKS_LINKED   1    /* in the tree and sh->lru */
#define NGX_MATRIX_CHUNKS_UNLINKED 2    /* in sh->unlinked, still held */


typedef struct {
    ngx_pid_t                    pid;
    ngx_uint_t                   refs;
} ngx_matrix_chunks_holder_t;


struct ngx_matrix_chunks_entry_s {
    ngx_str_node_t               sn;        /* sn.str: the key, below */
    ngx_queue_t                  queue;
    ngx_uint_t                   state;
    size_t                       room_len;  /* the room's part of the key */
    size_t                       bytes;     /* of the chunks */
    ngx_uint_t                   nlists;
    ngx_uint_t                   n[NGX_MATRIX_CHUNKS_MAX_LISTS];
    size_t                      *len[NGX_MATRIX_CHUNKS_MAX_LISTS];
    u_char                      *data[NGX_MATRIX_CHUNKS_MAX_LISTS];
    ngx_matrix_chunks_holder_t   holders[NGX_MATRIX_CHUNKS_HOLDERS];
    /* the key, then each list's lengths, then each list's bytes */
};


typedef struct {
    u_char                       key[NGX_MATRIX_CHUNKS_KEY_MAX];
    size_t                       key_len;
    ngx_pid_t                    pid;       /* 0: a free slot */
    ngx_msec_t                   started;
    ngx_matrix_wake_list_t       waiters;   /* workers to wake at the end */
} ngx_matrix_chunks_fill_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;
    ngx_queue_t                  unlinked;
    size_t                       bytes;
    ngx_uint_t                   entries;
    size_t                       unlinked_bytes;
    ngx_uint_t                   nunlinked;
    ngx_matrix_chunks_fill_t     fills[NGX_MATRIX_CHUNKS_FILLS];
} ngx_matrix_chunks_sh_t;


typedef struct {
    ngx_matrix_chunks_sh_t      *sh;
    ngx_slab_pool_t             *shpool;
} ngx_matrix_chunks_zone_t;


static ngx_str_t  ngx_matrix_chunks_zone_name =
    ngx_string("matrix_send_join_cache");

/* this worker's requests waiting for a read */
static ngx_queue_t        ngx_matrix_chunks_waiting;
static ngx_uint_t         ngx_matrix_chunks_waiting_init;

extern ngx_module_t  ngx_http_matrix_join_module;


static ngx_int_t
ngx_matrix_chunks_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_matrix_chunks_zone_t  *octx = data;

    ngx_matrix_chunks_sh_t    *sh;
    ngx_matrix_chunks_zone_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        /* a reload: the previous cycle's entries go on serving */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_matrix_chunks_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->lru);
    ngx_queue_init(&sh->unlinked);

    ctx->sh = sh;
    ctx->shpool->data = sh;

    /* a full zone is the normal case here: it evicts, it does not log */
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


ngx_shm_zone_t *
ngx_matrix_chunks_zone_add(ngx_conf_t *cf, size_t size)
{
    ngx_shm_zone_t            *zone;
    ngx_matrix_chunks_zone_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_matrix_chunks_zone_t));
    if (ctx == NULL) {
        return NULL;
    }

    zone = ngx_shared_memory_add(cf, &ngx_matrix_chunks_zone_name, size,
                                 &ngx_http_matrix_join_module);
    if (zone == NULL) {
        return NULL;
    }

    zone->init = ngx_matrix_chunks_init_zone;
    zone->data = ctx;

    return zone;
}


static size_t
ngx_matrix_chunks_key(u_char *buf, ngx_str_t *room, const char *generation,
    ngx_uint_t partial)
{
    size_t   glen;
    u_char  *p;

    glen = ngx_strlen(generation);

    if (buf) {
        p = ngx_cpymem(buf, room->data, room->len);
        *p++ = '\n';
        p = ngx_cpymem(p, generation, glen);
        *p++ = '\n';
        *p = partial ? 'p' : 'f';
    }

    return room->len + 1 + glen + 2;
}


static ngx_uint_t
ngx_matrix_chunks_alive(ngx_pid_t pid)
{
    return pid == ngx_pid || kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


/* Whether a living process holds e; the dead ones' slots are freed. */

static ngx_uint_t
ngx_matrix_chunks_held(ngx_matrix_chunks_entry_t *e)
{
    ngx_uint_t  i, held;

    held = 0;

    for (i = 0; i < NGX_MATRIX_CHUNKS_HOLDERS; i++) {
        if (e->holders[i].pid == 0) {
            continue;
        }

        if (ngx_matrix_chunks_alive(e->holders[i].pid)) {
            held = 1;

        } else {
            e->holders[i].pid = 0;
            e->holders[i].refs = 0;
        }
    }

    return held;
}


static ngx_int_t
ngx_matrix_chunks_ref(ngx_matrix_chunks_entry_t *e)
{
    ngx_uint_t                   i;
    ngx_matrix_chunks_holder_t  *free;

    free = NULL;

    for (i = 0; i < NGX_MATRIX_CHUNKS_HOLDERS; i++) {
        if (e->holders[i].pid == ngx_pid) {
            e->holders[i].refs++;
            return NGX_OK;
        }

        if (e->holders[i].pid == 0 && free == NULL) {
            free = &e->holders[i];
        }
    }

    if (free == NULL) {
        (void) ngx_matrix_chunks_held(e);

        for (i = 0; i < NGX_MATRIX_CHUNKS_HOLDERS; i++) {
            if (e->holders[i].pid == 0) {
                free = &e->holders[i];
                break;
            }
        }

        if (free == NULL) {
            return NGX_DECLINED;
        }
    }

    free->pid = ngx_pid;
    free->refs = 1;

    return NGX_OK;
}


static void
ngx_matrix_chunks_free_locked(ngx_matrix_chunks_zone_t *ctx,
    ngx_matrix_chunks_entry_t *e)
{
    if (e->state != NGX_MATRIX_CHUNKS_LINKED) {
        ngx_queue_remove(&e->queue);

        if (e->state == NGX_MATRIX_CHUNKS_UNLINKED) {
            ctx->sh->unlinked_bytes -= e->bytes;
            ctx->sh->nunlinked--;
        }
    }

    ngx_slab_free_locked(ctx->shpool, e);
}


/* Out of the tree: freed now, or once no living process sends from it. */

static void
ngx_matrix_chunks_unlink_locked(ngx_matrix_chunks_zone_t *ctx,
    ngx_matrix_chunks_entry_t *e)
{
    ngx_matrix_chunks_sh_t  *sh = ctx->sh;

    ngx_rbtree_delete(&sh->rbtree, &e->sn.node);
    ngx_queue_remove(&e->queue);
    sh->bytes -= e->bytes;
    sh->entries--;

    if (!ngx_matrix_chunks_held(e)) {
        e->state = NGX_MATRIX_CHUNKS_PENDING;   /* in no queue: freed now */
        ngx_slab_free_locked(ctx->shpool, e);
        return;
    }

    e->state = NGX_MATRIX_CHUNKS_UNLINKED;
    ngx_queue_insert_head(&sh->unlinked, &e->queue);
    sh->unlinked_bytes += e->bytes;
    sh->nunlinked++;
}


static void
ngx_matrix_chunks_unref_locked(ngx_matrix_chunks_zone_t *ctx,
    ngx_matrix_chunks_entry_t *e)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_MATRIX_CHUNKS_HOLDERS; i++) {
        if (e->holders[i].pid == ngx_pid) {
            if (--e->holders[i].refs == 0) {
                e->holders[i].pid = 0;
            }

            break;
        }
    }

    if (e->state == NGX_MATRIX_CHUNKS_UNLINKED
        && !ngx_matrix_chunks_held(e))
    {
        ngx_matrix_chunks_free_locked(ctx, e);
    }
}


/* Frees unlinked or half-filled entries nobody alive holds. */

static ngx_uint_t
ngx_matrix_chunks_reclaim_locked(ngx_matrix_chunks_zone_t *ctx)
{
    ngx_uint_t                  freed;
    ngx_queue_t                *q, *next;
    ngx_matrix_chunks_entry_t  *e;

    freed = 0;

    for (q = ngx_queue_head(&ctx->sh->unlinked);
         q != ngx_queue_sentinel(&ctx->sh->unlinked);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_matrix_chunks_entry_t, queue);

        if (!ngx_matrix_chunks_held(e)) {
            ngx_matrix_chunks_free_locked(ctx, e);
            freed = 1;
        }
    }

    return freed;
}


static void *
ngx_matrix_chunks_alloc_locked(ngx_matrix_chunks_zone_t *ctx, size_t size)
{
    void         *p;
    ngx_queue_t  *q;

    for ( ;; ) {
        p = ngx_slab_alloc_locked(ctx->shpool, size);
        if (p) {
            return p;
        }

        if (ngx_matrix_chunks_reclaim_locked(ctx)) {
            continue;
        }

        if (ngx_queue_empty(&ctx->sh->lru)) {
            return NULL;
        }

        q = ngx_queue_last(&ctx->sh->lru);
        ngx_matrix_chunks_unlink_locked(ctx, ngx_queue_data(q,
                                        ngx_matrix_chunks_entry_t, queue));
    }
}


static ngx_matrix_chunks_entry_t *
ngx_matrix_chunks_lookup_locked(ngx_matrix_chunks_zone_t *ctx, u_char *key,
    size_t len)
{
    ngx_str_t  k;

    k.data = key;
    k.len = len;

    return (ngx_matrix_chunks_entry_t *) ngx_str_rbtree_lookup(
                      &ctx->sh->rbtree, &k, ngx_crc32_short(key, len));
}


/* One answer's view of a published entry it holds a reference to. */

static ngx_matrix_chunks_t *
ngx_matrix_chunks_view(ngx_shm_zone_t *zone, ngx_matrix_chunks_entry_t *e,
    ngx_log_t *log)
{
    u_char               *p, **data;
    size_t               *len, l;
    ngx_uint_t            i, k, total;
    ngx_matrix_chunks_t  *ch;

    total = 0;

    for (i = 0; i < e->nlists; i++) {
        total += e->n[i];
    }

    ch = ngx_alloc(sizeof(ngx_matrix_chunks_t)
                   + total * (sizeof(u_char *) + sizeof(size_t)), log);
    if (ch == NULL) {
        return NULL;
    }

    ngx_memzero(ch, sizeof(ngx_matrix_chunks_t));
    ch->zone = zone;
    ch->entry = e;
    ch->nlists = e->nlists;
    ch->bytes = e->bytes;

    data = (u_char **) (ch + 1);
    len = (size_t *) (data + total);

    for (i = 0; i < e->nlists; i++) {
        ch->lists[i].n = e->n[i];
        ch->lists[i].data = data;
        ch->lists[i].len = len;
        p = e->data[i];

        for (k = 0; k < e->n[i]; k++) {
            l = e->len[i][k];

            if (l == NGX_MATRIX_CHUNKS_NIL) {
                data[k] = NULL;
                len[k] = 0;
                continue;
            }

            data[k] = p;
            len[k] = l;
            p += l;
        }

        data += e->n[i];
        len += e->n[i];
    }

    return ch;
}


static ngx_matrix_chunks_t *
ngx_matrix_chunks_view_or_unref(ngx_shm_zone_t *zone,
    ngx_matrix_chunks_entry_t *e, ngx_log_t *log)
{
    ngx_matrix_chunks_t       *ch;
    ngx_matrix_chunks_zone_t  *ctx;

    ch = ngx_matrix_chunks_view(zone, e, log);

    if (ch == NULL) {
        ctx = zone->data;
        ngx_shmtx_lock(&ctx->shpool->mutex);
        ngx_matrix_chunks_unref_locked(ctx, e);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
    }

    return ch;
}


ngx_matrix_chunks_t *
ngx_matrix_chunks_get(ngx_shm_zone_t *zone, ngx_str_t *room,
    const char *generation, ngx_uint_t partial, ngx_log_t *log)
{
    u_char                     key[NGX_MATRIX_CHUNKS_KEY_MAX];
    size_t                     len;
    ngx_matrix_chunks_entry_t *e;
    ngx_matrix_chunks_zone_t  *ctx;

    if (zone == NULL) {
        return NULL;
    }

    len = ngx_matrix_chunks_key(NULL, room, generation, partial);
    if (len > sizeof(key)) {
        return NULL;
    }

    (void) ngx_matrix_chunks_key(key, room, generation, partial);

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    e = ngx_matrix_chunks_lookup_locked(ctx, key, len);

    if (e == NULL || ngx_matrix_chunks_ref(e) != NGX_OK) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&ctx->sh->lru, &e->queue);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return ngx_matrix_chunks_view_or_unref(zone, e, log);
}


/* The replies' strings taken over, for this answer alone. */

static ngx_matrix_chunks_t *
ngx_matrix_chunks_private(redisReply **lists, ngx_uint_t nlists,
    ngx_log_t *log)
{
    u_char               **data;
    size_t                *len;
    ngx_uint_t             i, k, total;
    redisReply            *e;
    ngx_matrix_chunks_t   *ch;

    total = 0;

    for (i = 0; i < nlists; i++) {
        if (lists[i]->type == REDIS_REPLY_ARRAY) {
            total += lists[i]->elements;
        }
    }

    ch = ngx_alloc(sizeof(ngx_matrix_chunks_t)
                   + total * (sizeof(u_char *) + sizeof(size_t)), log);
    if (ch == NULL) {
        return NULL;
    }

    ngx_memzero(ch, sizeof(ngx_matrix_chunks_t));
    ch->nlists = nlists;

    data = (u_char **) (ch + 1);
    len = (size_t *) (data + total);

    for (i = 0; i < nlists; i++) {
        ch->lists[i].data = data;
        ch->lists[i].len = len;

        if (lists[i]->type != REDIS_REPLY_ARRAY) {
            continue;
        }

        ch->lists[i].n = lists[i]->elements;

        for (k = 0; k < lists[i]->elements; k++) {
            e = lists[i]->element[k];

            /* every element keeps its index: mchunk positions name it */

            if (e->type != REDIS_REPLY_STRING) {
                data[k] = NULL;
                len[k] = 0;
                continue;
            }

            data[k] = (u_char *) e->str;
            len[k] = e->len;
            ch->bytes += e->len;
            e->str = NULL;
        }

        data += lists[i]->elements;
        len += lists[i]->elements;
    }

    return ch;
}


/* The room's entries of other generations than key's, and key's own. */

static void
ngx_matrix_chunks_replace_locked(ngx_matrix_chunks_zone_t *ctx, u_char *key,
    size_t len, size_t room_len)
{
    ngx_queue_t                *q, *prev;
    ngx_matrix_chunks_entry_t  *old;

    for (q = ngx_queue_last(&ctx->sh->lru);
         q != ngx_queue_sentinel(&ctx->sh->lru);
         q = prev)
    {
        prev = ngx_queue_prev(q);
        old = ngx_queue_data(q, ngx_matrix_chunks_entry_t, queue);

        if (old->room_len != room_len
            || ngx_memcmp(old->sn.str.data, key, room_len + 1) != 0)
        {
            continue;
        }

        /* the other mode of the same generation stays */

        if (old->sn.str.len == len
            && ngx_memcmp(old->sn.str.data + room_len, key + room_len,
                          len - room_len - 1) == 0
            && old->sn.str.data[len - 1] != key[len - 1])
        {
            continue;
        }

        ngx_matrix_chunks_unlink_locked(ctx, old);
    }
}


ngx_matrix_chunks_t *
ngx_matrix_chunks_from_replies(ngx_shm_zone_t *zone, ngx_str_t *room,
    const char *generation, ngx_uint_t partial, redisReply **lists,
    ngx_uint_t nlists, ngx_log_t *log)
{
    u_char                     key[NGX_MATRIX_CHUNKS_KEY_MAX], *p;
    size_t                     len, size, bytes, count;
    ngx_uint_t                 i, k;
    redisReply                *r;
    ngx_matrix_chunks_entry_t *e, *other;
    ngx_matrix_chunks_zone_t  *ctx;

    if (nlists > NGX_MATRIX_CHUNKS_MAX_LISTS) {
        return NULL;
    }

    len = ngx_matrix_chunks_key(NULL, room, generation, partial);

    if (zone == NULL || len > sizeof(key)) {
        return ngx_matrix_chunks_private(lists, nlists, log);
    }

    (void) ngx_matrix_chunks_key(key, room, generation, partial);

    bytes = 0;
    count = 0;

    for (i = 0; i < nlists; i++) {
        if (lists[i]->type != REDIS_REPLY_ARRAY) {
            continue;
        }

        count += lists[i]->elements;

        for (k = 0; k < lists[i]->elements; k++) {
            r = lists[i]->element[k];
            if (r->type == REDIS_REPLY_STRING) {
                bytes += r->len;
            }
        }
    }

    size = sizeof(ngx_matrix_chunks_entry_t) + ngx_align(len, sizeof(size_t))
           + count * sizeof(size_t) + bytes;

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    e = ngx_matrix_chunks_lookup_locked(ctx, key, len);

    if (e && ngx_matrix_chunks_ref(e) == NGX_OK) {
        /* another worker's read came first */
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return ngx_matrix_chunks_view_or_unref(zone, e, log);
    }

    /* the room's other generations will not be asked for again */

    ngx_matrix_chunks_replace_locked(ctx, key, len, room->len);

    e = NULL;

    if (size <= (size_t) (ctx->shpool->end - ctx->shpool->start)) {
        e = ngx_matrix_chunks_alloc_locked(ctx, size);
    }

    if (e == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "matrix: the chunks of \"%V\" (%uz bytes) do not fit "
                      "in matrix_send_join_cache: read for this answer "
                      "alone", room, bytes);

        return ngx_matrix_chunks_private(lists, nlists, log);
    }

    /* pending: in no tree, held by this process, freed if it dies */

    ngx_memzero(e, sizeof(ngx_matrix_chunks_entry_t));
    e->state = NGX_MATRIX_CHUNKS_PENDING;
    e->holders[0].pid = ngx_pid;
    e->holders[0].refs = 1;
    ngx_queue_insert_head(&ctx->sh->unlinked, &e->queue);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    /* the megabytes, outside the lock */

    p = (u_char *) (e + 1);
    e->sn.str.data = p;
    e->sn.str.len = len;
    e->sn.node.key = ngx_crc32_short(key, len);
    e->room_len = room->len;
    e->bytes = bytes;
    e->nlists = nlists;
    p = ngx_cpymem(p, key, len);
    p = ngx_align_ptr(p, sizeof(size_t));

    for (i = 0; i < nlists; i++) {
        e->len[i] = (size_t *) p;
        e->n[i] = (lists[i]->type == REDIS_REPLY_ARRAY)
                  ? lists[i]->elements : 0;
        p += e->n[i] * sizeof(size_t);
    }

    for (i = 0; i < nlists; i++) {
        e->data[i] = p;

        for (k = 0; k < e->n[i]; k++) {
            r = lists[i]->element[k];

            if (r->type != REDIS_REPLY_STRING) {
                e->len[i][k] = NGX_MATRIX_CHUNKS_NIL;
                continue;
            }

            e->len[i][k] = r->len;
            p = ngx_cpymem(p, r->str, r->len);
        }
    }

    /* published, complete, in place of the room's other generations */

    ngx_shmtx_lock(&ctx->shpool->mutex);

    other = ngx_matrix_chunks_lookup_locked(ctx, key, len);

    if (other && ngx_matrix_chunks_ref(other) == NGX_OK) {
        ngx_matrix_chunks_free_locked(ctx, e);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return ngx_matrix_chunks_view_or_unref(zone, other, log);
    }

    if (other) {
        ngx_matrix_chunks_unlink_locked(ctx, other);
    }

    ngx_matrix_chunks_replace_locked(ctx, key, len, room->len);

    ngx_queue_remove(&e->queue);
    e->state = NGX_MATRIX_CHUNKS_LINKED;
    ngx_rbtree_insert(&ctx->sh->rbtree, &e->sn.node);
    ngx_queue_insert_head(&ctx->sh->lru, &e->queue);
    ctx->sh->bytes += bytes;
    ctx->sh->entries++;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return ngx_matrix_chunks_view_or_unref(zone, e, log);
}


void
ngx_matrix_chunks_release(ngx_matrix_chunks_t *ch)
{
    ngx_uint_t                 i, k;
    ngx_matrix_chunks_zone_t  *ctx;

    if (ch == NULL) {
        return;
    }

    if (ch->entry) {
        ctx = ch->zone->data;
        ngx_shmtx_lock(&ctx->shpool->mutex);
        ngx_matrix_chunks_unref_locked(ctx, ch->entry);
        ngx_shmtx_unlock(&ctx->shpool->mutex);

    } else {
        for (i = 0; i < ch->nlists; i++) {
            for (k = 0; k < ch->lists[i].n; k++) {
                free(ch->lists[i].data[k]);     /* hiredis's malloc */
            }
        }
    }

    ngx_free(ch);
}


static ngx_matrix_chunks_fill_t *
ngx_matrix_chunks_fill_find(ngx_matrix_chunks_zone_t *ctx, u_char *key,
    size_t len)
{
    ngx_uint_t                 i;
    ngx_matrix_chunks_fill_t  *f;

    for (i = 0; i < NGX_MATRIX_CHUNKS_FILLS; i++) {
        f = &ctx->sh->fills[i];

        if (f->pid && f->key_len == len && ngx_memcmp(f->key, key, len) == 0)
        {
            return f;
        }
    }

    return NULL;
}


ngx_uint_t
ngx_matrix_chunks_fill_start(ngx_shm_zone_t *zone, ngx_str_t *room,
    const char *generation, ngx_uint_t partial, ngx_msec_t max_wait,
    ngx_matrix_chunks_waiter_t *w, ngx_event_t *ev)
{
    u_char                     key[NGX_MATRIX_CHUNKS_KEY_MAX];
    size_t                     len;
    ngx_uint_t                 i;
    ngx_matrix_chunks_fill_t  *f;
    ngx_matrix_chunks_zone_t  *ctx;

    if (zone == NULL) {
        return 1;
    }

    len = ngx_matrix_chunks_key(NULL, room, generation, partial);
    if (len > sizeof(key)) {
        return 1;
    }

    (void) ngx_matrix_chunks_key(key, room, generation, partial);

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    f = ngx_matrix_chunks_fill_find(ctx, key, len);

    if (f) {
        if ((ngx_msec_int_t) (ngx_current_msec - f->started)
                < (ngx_msec_int_t) max_wait
            && ngx_matrix_chunks_alive(f->pid))
        {
            /* woken by its end: this worker once in the reader's list */

            ngx_matrix_wake_enlist(&f->waiters);

            ngx_shmtx_unlock(&ctx->shpool->mutex);

            if (!w->queued) {
                w->ev = ev;
                w->queued = 1;
                ngx_queue_insert_tail(&ngx_matrix_chunks_waiting, &w->queue);
            }

            return 0;
        }

        /* that reader is late, or died: this one reads, and owns the slot */

    } else {
        for (i = 0; i < NGX_MATRIX_CHUNKS_FILLS; i++) {
            if (ctx->sh->fills[i].pid == 0
                || !ngx_matrix_chunks_alive(ctx->sh->fills[i].pid))
            {
                f = &ctx->sh->fills[i];
                ngx_memcpy(f->key, key, len);
                f->key_len = len;
                f->waiters.n = 0;
                break;
            }
        }
    }

    if (f) {
        f->pid = ngx_pid;
        f->started = ngx_current_msec;
    }

    /* no slot: read without telling others */

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return 1;
}


void
ngx_matrix_chunks_wait_done(ngx_matrix_chunks_waiter_t *w)
{
    if (w->queued) {
        ngx_queue_remove(&w->queue);
        w->queued = 0;
    }
}


/* Every request of this worker waiting for a read looks again. */

static void
ngx_matrix_chunks_wake_local(void)
{
    ngx_queue_t                 *q;
    ngx_matrix_chunks_waiter_t  *w;

    if (!ngx_matrix_chunks_waiting_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_matrix_chunks_waiting)) {
        q = ngx_queue_head(&ngx_matrix_chunks_waiting);
        ngx_queue_remove(q);
        w = ngx_queue_data(q, ngx_matrix_chunks_waiter_t, queue);
        w->queued = 0;
        ngx_post_event(w->ev, &ngx_posted_events);
    }
}


void
ngx_matrix_chunks_init_process(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_matrix_chunks_waiting);
    ngx_matrix_chunks_waiting_init = 1;
    ngx_matrix_wake_on(ngx_matrix_chunks_wake_local);
}


void
ngx_matrix_chunks_fill_end(ngx_shm_zone_t *zone, ngx_str_t *room,
    const char *generation, ngx_uint_t partial)
{
    u_char                     key[NGX_MATRIX_CHUNKS_KEY_MAX];
    size_t                     len;
    ngx_matrix_wake_list_t     waiters;
    ngx_matrix_chunks_fill_t  *f;
    ngx_matrix_chunks_zone_t  *ctx;

    if (zone == NULL) {
        return;
    }

    len = ngx_matrix_chunks_key(NULL, room, generation, partial);
    if (len > sizeof(key)) {
        return;
    }

    (void) ngx_matrix_chunks_key(key, room, generation, partial);

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    waiters.n = 0;
    f = ngx_matrix_chunks_fill_find(ctx, key, len);

    if (f && f->pid == ngx_pid) {
        f->pid = 0;
        waiters = f->waiters;
        f->waiters.n = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_matrix_wake(&waiters);
}


void
ngx_matrix_chunks_stats(ngx_shm_zone_t *zone, ngx_matrix_chunks_stats_t *st)
{
    ngx_matrix_chunks_zone_t  *ctx;

    ngx_memzero(st, sizeof(ngx_matrix_chunks_stats_t));

    if (zone == NULL) {
        return;
    }

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    st->size = zone->shm.size;
    st->bytes = ctx->sh->bytes;
    st->entries = ctx->sh->entries;
    st->unlinked_bytes = ctx->sh->unlinked_bytes;
    st->unlinked = ctx->sh->nunlinked;
    st->free_pages = ctx->shpool->pfree;

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* This process's references to the entries of queue go. */

static void
ngx_matrix_chunks_drop_holder(ngx_queue_t *queue)
{
    ngx_uint_t                  i;
    ngx_queue_t                *q;
    ngx_matrix_chunks_entry_t  *e;

    for (q = ngx_queue_head(queue);
         q != ngx_queue_sentinel(queue);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_matrix_chunks_entry_t, queue);

        for (i = 0; i < NGX_MATRIX_CHUNKS_HOLDERS; i++) {
            if (e->holders[i].pid == ngx_pid) {
                e->holders[i].pid = 0;
                e->holders[i].refs = 0;
            }
        }
    }
}


void
ngx_matrix_chunks_exit_process(ngx_shm_zone_t *zone)
{
    ngx_uint_t                 i;
    ngx_matrix_chunks_zone_t  *ctx;

    if (zone == NULL || zone->data == NULL) {
        return;
    }

    ctx = zone->data;

    if (ctx->sh == NULL) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ngx_matrix_chunks_drop_holder(&ctx->sh->lru);
    ngx_matrix_chunks_drop_holder(&ctx->sh->unlinked);

    (void) ngx_matrix_chunks_reclaim_locked(ctx);

    for (i = 0; i < NGX_MATRIX_CHUNKS_FILLS; i++) {
        if (ctx->sh->fills[i].pid == ngx_pid) {
            ctx->sh->fills[i].pid = 0;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}
