/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Rooms' chunk lists (docs/redis-schema.md) by room and snapshot
 * generation, once per machine: a shared memory zone that every worker
 * reads (matrix_send_join_cache). A generation's chunks never change, so
 * once one send_join has read them from Redis the next answers of any
 * worker for that generation are the same memory, sent as it is: Redis
 * runs only the accept script.
 *
 * An entry is published (findable) only once it is complete; a new
 * generation of a room takes the place of the old one, so an answer sees
 * one generation or another, never a mix. Entries are counted by the
 * answers that point into them, per process: the least recently used go
 * when the zone is full, and an entry still being sent from is only
 * unlinked, its memory freed with the last reference. References of a
 * process that died (kill -9 half-way through an answer) are dropped when
 * that memory is wanted, so a crash never wedges the zone; the zone's lock
 * is the slab pool's, which nginx's master releases when its holder dies.
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
    u_char                     **data;      /* NULL for a nil element */
    size_t                      *len;
} ngx_matrix_chunk_list_t;


typedef struct ngx_matrix_chunks_entry_s  ngx_matrix_chunks_entry_t;


/* one answer's view of a generation's chunks */

typedef struct {
    ngx_matrix_chunk_list_t      lists[NGX_MATRIX_CHUNKS_MAX_LISTS];
    ngx_uint_t                   nlists;
    size_t                       bytes;
    ngx_shm_zone_t              *zone;
    ngx_matrix_chunks_entry_t   *entry;     /* NULL: this answer's alone */
} ngx_matrix_chunks_t;


typedef struct {
    size_t                       size;      /* the zone's bytes */
    size_t                       bytes;     /* chunk bytes findable */
    ngx_uint_t                   entries;
    size_t                       unlinked_bytes;    /* still sent from */
    ngx_uint_t                   unlinked;
    ngx_uint_t                   free_pages;
} ngx_matrix_chunks_stats_t;


/*
 * The zone of matrix_send_join_cache, size bytes (0: none, every answer
 * reads its chunks from Redis). Called once the main configuration is
 * complete.
 */
ngx_shm_zone_t *ngx_matrix_chunks_zone_add(ngx_conf_t *cf, size_t size);

/*
 * The cached chunks of (room, generation, partial), with a reference the
 * caller gives back with ngx_matrix_chunks_release(); NULL when not cached
 * (or no zone).
 */
ngx_matrix_chunks_t *ngx_matrix_chunks_get(ngx_shm_zone_t *zone,
    ngx_str_t *room, const char *generation, ngx_uint_t partial,
    ngx_log_t *log);

/*
 * Chunks from LRANGE replies, with one reference: copied into the zone
 * when they fit (replacing the room's other generations, and the least
 * recently used entries as needed), else this answer's alone (the reply
 * strings are then taken over: hiredis frees a string reply's str only
 * when it is not NULL). A generation another worker published meanwhile
 * is used as it is. NULL on allocation failure.
 */
ngx_matrix_chunks_t *ngx_matrix_chunks_from_replies(ngx_shm_zone_t *zone,
    ngx_str_t *room, const char *generation, ngx_uint_t partial,
    redisReply **lists, ngx_uint_t nlists, ngx_log_t *log);

void ngx_matrix_chunks_release(ngx_matrix_chunks_t *ch);

/* a request waiting for another one's read */

typedef struct {
    ngx_queue_t                  queue;
    ngx_event_t                 *ev;
    unsigned                     queued:1;
} ngx_matrix_chunks_waiter_t;


/*
 * One reader of a generation's chunks at a time, across the workers: the
 * first answer after a load reads them from Redis while the others wait
 * for its copy instead of asking Redis for the same megabytes.
 * fill_start() returns 1 when the caller is now the reader, 0 when
 * another reader, alive, started less than max_wait ms ago: ev is then
 * posted when that reader ends (its worker wakes this one,
 * ngx_matrix_wake.h), and the caller sets a timer of max_wait on ev in
 * case it never does (the reader died). fill_end() is called by the
 * reader once its copy is published (or its request ended without one).
 */
ngx_uint_t ngx_matrix_chunks_fill_start(ngx_shm_zone_t *zone,
    ngx_str_t *room, const char *generation, ngx_uint_t partial,
    ngx_msec_t max_wait, ngx_matrix_chunks_waiter_t *w, ngx_event_t *ev);

/* w no longer waits (its request ends, or ev ran) */
void ngx_matrix_chunks_wait_done(ngx_matrix_chunks_waiter_t *w);
void ngx_matrix_chunks_fill_end(ngx_shm_zone_t *zone, ngx_str_t *room,
    const char *generation, ngx_uint_t partial);

/* The zone's use, for matrix_status and matrix_metrics. */
void ngx_matrix_chunks_stats(ngx_shm_zone_t *zone,
    ngx_matrix_chunks_stats_t *st);

/* At worker start: this worker's queue of waiting requests. */
void ngx_matrix_chunks_init_process(ngx_cycle_t *cycle);

/* At worker exit: the references this process still holds go. */
void ngx_matrix_chunks_exit_process(ngx_shm_zone_t *zone);

#endif /* NGX_MATRIX_CHUNK_CACHE_H */
