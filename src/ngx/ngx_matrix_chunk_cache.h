/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * A worker's copy of rooms' chunk lists (docs/redis-schema.md), by room and
 * snapshot generation. A generation's chunks never change, so once a
 * send_join has read them from Redis the next answers for that generation
 * are the same memory again, sent as it is: Redis runs only the accept
 * script. Entries are reference-counted by the answers that point into
 * them; the least recently used go when matrix_send_join_cache is full.
 */

#ifndef NGX_MATRIX_CHUNK_CACHE_H
#define NGX_MATRIX_CHUNK_CACHE_H

#include <ngx_config.h>
#include <ngx_core.h>

#include <hiredis/hiredis.h>


/* a full answer reads state_nm, state_m, auth; a partial one state_nm,
 * auth_nm */
#define NGX_MATRIX_CHUNKS_MAX_LISTS  3


typedef struct {
    ngx_uint_t                   n;
    u_char                     **data;      /* malloc'ed by hiredis, ours */
    size_t                      *len;
} ngx_matrix_chunk_list_t;


typedef struct {
    ngx_queue_t                  lru;
    char                        *key;       /* room \n generation \n mode */
    size_t                       key_len;
    size_t                       room_len;  /* the room's part of key */
    ngx_matrix_chunk_list_t      lists[NGX_MATRIX_CHUNKS_MAX_LISTS];
    ngx_uint_t                   nlists;
    size_t                       bytes;
    ngx_uint_t                   refs;
    unsigned                     cached:1;
} ngx_matrix_chunks_t;


/*
 * The cached chunks of (room, generation, partial), with a reference the
 * caller gives back with ngx_matrix_chunks_release(); NULL when not cached.
 */
ngx_matrix_chunks_t *ngx_matrix_chunks_get(ngx_str_t *room,
    const char *generation, ngx_uint_t partial);

/*
 * New chunks from LRANGE replies (their strings are taken over: hiredis
 * frees a string reply's str only when it is not NULL), with one
 * reference; cached when they fit in max_bytes, replacing other
 * generations of the room. NULL on allocation failure.
 */
ngx_matrix_chunks_t *ngx_matrix_chunks_from_replies(ngx_str_t *room,
    const char *generation, ngx_uint_t partial, redisReply **lists,
    ngx_uint_t nlists, size_t max_bytes, ngx_log_t *log);

void ngx_matrix_chunks_release(ngx_matrix_chunks_t *ch);

/*
 * One reader of a generation's chunks at a time: the first answer after a
 * load reads them from Redis while the others wait for the copy instead of
 * asking Redis for the same megabytes. fill_start() returns 1 when the
 * caller is now the reader, 0 when another reader started less than
 * max_wait ms ago; fill_end() is called by the reader when its reply came
 * (or its request ended).
 */
ngx_uint_t ngx_matrix_chunks_fill_start(ngx_str_t *room,
    const char *generation, ngx_uint_t partial, ngx_msec_t max_wait);
void ngx_matrix_chunks_fill_end(ngx_str_t *room, const char *generation,
    ngx_uint_t partial);

/* Bytes and entries held by this worker, for matrix_status. */
size_t ngx_matrix_chunks_bytes(void);
ngx_uint_t ngx_matrix_chunks_entries(void);

/* At worker exit: frees what no answer holds. */
void ngx_matrix_chunks_free_all(void);

#endif /* NGX_MATRIX_CHUNK_CACHE_H */
