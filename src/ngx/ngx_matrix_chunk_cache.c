/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The worker's chunk lists by room and generation: see the header.
 * Everything here is one worker's, on its one thread.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_matrix_chunk_cache.h"


#define NGX_MATRIX_CHUNKS_FILLS  32


/* a read of chunks from Redis in progress */
typedef struct {
    u_char                       key[NGX_MAX_ERROR_STR];
    size_t                       key_len;
    ngx_msec_t                   started;
    ngx_uint_t                   used;
} ngx_matrix_chunks_fill_t;


static ngx_matrix_chunks_fill_t  ngx_matrix_chunks_fills[NGX_MATRIX_CHUNKS_FILLS];

static ngx_queue_t  ngx_matrix_chunks_lru;     /* most recent at the head */
static ngx_uint_t   ngx_matrix_chunks_init;
static size_t       ngx_matrix_chunks_total;
static ngx_uint_t   ngx_matrix_chunks_count;


static void
ngx_matrix_chunks_lazy_init(void)
{
    if (!ngx_matrix_chunks_init) {
        ngx_queue_init(&ngx_matrix_chunks_lru);
        ngx_matrix_chunks_init = 1;
    }
}


static size_t
ngx_matrix_chunks_key(u_char *buf, ngx_str_t *room, const char *generation,
    ngx_uint_t partial)
{
    u_char  *p;

    p = buf;

    if (p) {
        p = ngx_cpymem(p, room->data, room->len);
        *p++ = '\n';
        p = ngx_cpymem(p, generation, ngx_strlen(generation));
        *p++ = '\n';
        *p++ = partial ? 'p' : 'f';
    }

    return room->len + 1 + ngx_strlen(generation) + 2;
}


static void
ngx_matrix_chunks_free(ngx_matrix_chunks_t *ch)
{
    ngx_uint_t  i, k;

    for (i = 0; i < ch->nlists; i++) {
        for (k = 0; k < ch->lists[i].n; k++) {
            free(ch->lists[i].data[k]);
        }

        ngx_free(ch->lists[i].data);
        ngx_free(ch->lists[i].len);
    }

    ngx_free(ch->key);
    ngx_free(ch);
}


/* Out of the cache; freed now, or when the last answer lets it go. */

static void
ngx_matrix_chunks_unlink(ngx_matrix_chunks_t *ch)
{
    if (!ch->cached) {
        return;
    }

    ngx_queue_remove(&ch->lru);
    ch->cached = 0;
    ngx_matrix_chunks_total -= ch->bytes;
    ngx_matrix_chunks_count--;

    if (ch->refs == 0) {
        ngx_matrix_chunks_free(ch);
    }
}


ngx_matrix_chunks_t *
ngx_matrix_chunks_get(ngx_str_t *room, const char *generation,
    ngx_uint_t partial)
{
    u_char                buf[NGX_MAX_ERROR_STR];
    size_t                len;
    ngx_queue_t          *q;
    ngx_matrix_chunks_t  *ch;

    ngx_matrix_chunks_lazy_init();

    len = ngx_matrix_chunks_key(NULL, room, generation, partial);
    if (len > sizeof(buf)) {
        return NULL;
    }

    (void) ngx_matrix_chunks_key(buf, room, generation, partial);

    for (q = ngx_queue_head(&ngx_matrix_chunks_lru);
         q != ngx_queue_sentinel(&ngx_matrix_chunks_lru);
         q = ngx_queue_next(q))
    {
        ch = ngx_queue_data(q, ngx_matrix_chunks_t, lru);

        if (ch->key_len == len && ngx_memcmp(ch->key, buf, len) == 0) {
            ngx_queue_remove(q);
            ngx_queue_insert_head(&ngx_matrix_chunks_lru, q);
            ch->refs++;
            return ch;
        }
    }

    return NULL;
}


ngx_matrix_chunks_t *
ngx_matrix_chunks_from_replies(ngx_str_t *room, const char *generation,
    ngx_uint_t partial, redisReply **lists, ngx_uint_t nlists,
    size_t max_bytes, ngx_log_t *log)
{
    size_t                 k;
    ngx_uint_t             i;
    redisReply            *e;
    ngx_queue_t           *q, *prev;
    ngx_matrix_chunks_t   *ch, *old;
    ngx_matrix_chunk_list_t  *l;

    ngx_matrix_chunks_lazy_init();

    if (nlists > NGX_MATRIX_CHUNKS_MAX_LISTS) {
        return NULL;
    }

    ch = ngx_calloc(sizeof(ngx_matrix_chunks_t), log);
    if (ch == NULL) {
        return NULL;
    }

    ch->key_len = ngx_matrix_chunks_key(NULL, room, generation, partial);
    ch->key = ngx_alloc(ch->key_len, log);
    if (ch->key == NULL) {
        ngx_free(ch);
        return NULL;
    }

    (void) ngx_matrix_chunks_key((u_char *) ch->key, room, generation,
                                 partial);
    ch->room_len = room->len;
    ch->refs = 1;

    for (i = 0; i < nlists; i++) {
        l = &ch->lists[i];
        ch->nlists = i + 1;

        if (lists[i]->type != REDIS_REPLY_ARRAY || lists[i]->elements == 0) {
            continue;
        }

        l->data = ngx_alloc(lists[i]->elements * sizeof(u_char *), log);
        l->len = ngx_alloc(lists[i]->elements * sizeof(size_t), log);
        if (l->data == NULL || l->len == NULL) {
            ngx_matrix_chunks_free(ch);
            return NULL;
        }

        for (k = 0; k < lists[i]->elements; k++) {
            e = lists[i]->element[k];

            /* every element keeps its index: mchunk positions name it */

            if (e->type != REDIS_REPLY_STRING) {
                l->data[l->n] = NULL;
                l->len[l->n++] = 0;
                continue;
            }

            l->data[l->n] = (u_char *) e->str;
            l->len[l->n] = e->len;
            l->n++;
            ch->bytes += e->len;
            e->str = NULL;
        }
    }

    if (ch->bytes > max_bytes) {
        return ch;      /* this answer's alone */
    }

    /* the room's other generations will not be asked for again */

    for (q = ngx_queue_last(&ngx_matrix_chunks_lru);
         q != ngx_queue_sentinel(&ngx_matrix_chunks_lru);
         q = prev)
    {
        prev = ngx_queue_prev(q);
        old = ngx_queue_data(q, ngx_matrix_chunks_t, lru);

        if (old->room_len == room->len
            && ngx_memcmp(old->key, room->data, room->len) == 0
            && old->key[room->len] == '\n'
            && ngx_strncmp(old->key + room->len + 1, generation,
                           ngx_strlen(generation)) != 0)
        {
            ngx_matrix_chunks_unlink(old);
        }
    }

    /* an entry of the same key (a concurrent first answer) is replaced */

    old = ngx_matrix_chunks_get(room, generation, partial);
    if (old) {
        old->refs--;
        ngx_matrix_chunks_unlink(old);
    }

    /* the least recently used go until it fits */

    while (ngx_matrix_chunks_total + ch->bytes > max_bytes
           && !ngx_queue_empty(&ngx_matrix_chunks_lru))
    {
        q = ngx_queue_last(&ngx_matrix_chunks_lru);
        ngx_matrix_chunks_unlink(ngx_queue_data(q, ngx_matrix_chunks_t, lru));
    }

    ngx_queue_insert_head(&ngx_matrix_chunks_lru, &ch->lru);
    ch->cached = 1;
    ngx_matrix_chunks_total += ch->bytes;
    ngx_matrix_chunks_count++;

    return ch;
}


void
ngx_matrix_chunks_release(ngx_matrix_chunks_t *ch)
{
    if (ch == NULL) {
        return;
    }

    ch->refs--;

    if (ch->refs == 0 && !ch->cached) {
        ngx_matrix_chunks_free(ch);
    }
}


size_t
ngx_matrix_chunks_bytes(void)
{
    return ngx_matrix_chunks_total;
}


ngx_uint_t
ngx_matrix_chunks_entries(void)
{
    return ngx_matrix_chunks_count;
}


void
ngx_matrix_chunks_free_all(void)
{
    ngx_queue_t  *q;

    if (!ngx_matrix_chunks_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_matrix_chunks_lru)) {
        q = ngx_queue_head(&ngx_matrix_chunks_lru);
        ngx_matrix_chunks_unlink(ngx_queue_data(q, ngx_matrix_chunks_t, lru));
    }
}


static ngx_matrix_chunks_fill_t *
ngx_matrix_chunks_fill_find(u_char *key, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_MATRIX_CHUNKS_FILLS; i++) {
        if (ngx_matrix_chunks_fills[i].used
            && ngx_matrix_chunks_fills[i].key_len == len
            && ngx_memcmp(ngx_matrix_chunks_fills[i].key, key, len) == 0)
        {
            return &ngx_matrix_chunks_fills[i];
        }
    }

    return NULL;
}


ngx_uint_t
ngx_matrix_chunks_fill_start(ngx_str_t *room, const char *generation,
    ngx_uint_t partial, ngx_msec_t max_wait)
{
    u_char                     key[NGX_MAX_ERROR_STR];
    size_t                     len;
    ngx_uint_t                 i;
    ngx_matrix_chunks_fill_t  *f;

    len = ngx_matrix_chunks_key(NULL, room, generation, partial);
    if (len > sizeof(key)) {
        return 1;
    }

    (void) ngx_matrix_chunks_key(key, room, generation, partial);

    f = ngx_matrix_chunks_fill_find(key, len);

    if (f) {
        if (ngx_current_msec - f->started < max_wait) {
            return 0;
        }

        /* that reader is late: this one reads too, and owns the slot */
        f->started = ngx_current_msec;
        return 1;
    }

    for (i = 0; i < NGX_MATRIX_CHUNKS_FILLS; i++) {
        f = &ngx_matrix_chunks_fills[i];

        if (!f->used) {
            ngx_memcpy(f->key, key, len);
            f->key_len = len;
            f->started = ngx_current_msec;
            f->used = 1;
            return 1;
        }
    }

    return 1;       /* no slot: read without telling others */
}


void
ngx_matrix_chunks_fill_end(ngx_str_t *room, const char *generation,
    ngx_uint_t partial)
{
    u_char                     key[NGX_MAX_ERROR_STR];
    size_t                     len;
    ngx_matrix_chunks_fill_t  *f;

    len = ngx_matrix_chunks_key(NULL, room, generation, partial);
    if (len > sizeof(key)) {
        return;
    }

    (void) ngx_matrix_chunks_key(key, room, generation, partial);

    f = ngx_matrix_chunks_fill_find(key, len);
    if (f) {
        f->used = 0;
    }
}
