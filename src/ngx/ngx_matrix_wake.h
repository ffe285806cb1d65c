/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Waking the requests of other workers: each worker has a wake socket, an
 * abstract unix datagram socket named after its pid
 * (@nginx-matrix-join/wake/PID, nothing on disk), on its event loop. A
 * worker that ends something others wait for (a read of a room's chunks,
 * a key fetch) sends one datagram to each worker listed as waiting in the
 * shared memory zone; the woken worker lets each of its waiting parts look
 * again (the send_join cache, the key fetches). A lost datagram costs a
 * waiter its timer, never a wrong answer: everyone looks again in shared
 * memory before going on.
 */

#ifndef NGX_MATRIX_WAKE_H
#define NGX_MATRIX_WAKE_H

#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_MATRIX_WAKE_MAX  64      /* workers a shared slot can list */


/* pids of workers to wake, kept in a shared memory slot */
typedef struct {
    ngx_pid_t                    pid[NGX_MATRIX_WAKE_MAX];
    ngx_uint_t                   n;
} ngx_matrix_wake_list_t;


typedef void (*ngx_matrix_wake_pt)(void);


/* At worker start (a warning without it: waiters then use their timers). */
void ngx_matrix_wake_init_process(ngx_cycle_t *cycle);

/* handler runs, from an event, whenever this worker is woken */
void ngx_matrix_wake_on(ngx_matrix_wake_pt handler);
void ngx_matrix_wake_exit_process(void);

/* This worker into list (under the zone's lock), once. */
void ngx_matrix_wake_enlist(ngx_matrix_wake_list_t *list);

/*
 * Wakes the workers of a list copied out of shared memory (outside the
 * lock): this worker's own waiters from a posted event, the others'
 * through their sockets.
 */
void ngx_matrix_wake(ngx_matrix_wake_list_t *list);

#endif /* NGX_MATRIX_WAKE_H */
