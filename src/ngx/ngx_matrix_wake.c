/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Worker wake sockets: see the header.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <sys/un.h>

#include "ngx_matrix_wake.h"


#define NGX_MATRIX_WAKE_HANDLERS  4


static ngx_connection_t   *ngx_matrix_wake_conn;
static ngx_event_t         ngx_matrix_wake_local_ev;

/* the parts of this worker that wait for others, told to look again */
static ngx_matrix_wake_pt  ngx_matrix_wake_handlers[NGX_MATRIX_WAKE_HANDLERS];
static ngx_uint_t          ngx_matrix_wake_nhandlers;


void
ngx_matrix_wake_on(ngx_matrix_wake_pt handler)
{
    if (ngx_matrix_wake_nhandlers < NGX_MATRIX_WAKE_HANDLERS) {
        ngx_matrix_wake_handlers[ngx_matrix_wake_nhandlers++] = handler;
    }
}


static void
ngx_matrix_wake_local(ngx_event_t *ev)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_matrix_wake_nhandlers; i++) {
        ngx_matrix_wake_handlers[i]();
    }
}


static void
ngx_matrix_wake_name(struct sockaddr_un *sa, socklen_t *len, ngx_pid_t pid)
{
    u_char  *p;

    ngx_memzero(sa, sizeof(struct sockaddr_un));
    sa->sun_family = AF_UNIX;

    /* the abstract namespace: sun_path[0] is NUL */
    p = ngx_snprintf((u_char *) sa->sun_path + 1,
                     sizeof(sa->sun_path) - 1, "nginx-matrix-join/wake/%P",
                     pid);

    *len = (socklen_t) (p - (u_char *) sa);
}


void
ngx_matrix_wake_enlist(ngx_matrix_wake_list_t *list)
{
    ngx_uint_t  i;

    for (i = 0; i < list->n; i++) {
        if (list->pid[i] == ngx_pid) {
            return;
        }
    }

    if (list->n < NGX_MATRIX_WAKE_MAX) {
        list->pid[list->n++] = ngx_pid;
    }
}


void
ngx_matrix_wake(ngx_matrix_wake_list_t *list)
{
    ngx_uint_t          i;
    socklen_t           len;
    struct sockaddr_un  sa;

    for (i = 0; i < list->n; i++) {
        if (list->pid[i] == ngx_pid) {
            if (!ngx_matrix_wake_local_ev.posted) {
                ngx_post_event(&ngx_matrix_wake_local_ev, &ngx_posted_events);
            }

            continue;
        }

        if (ngx_matrix_wake_conn == NULL) {
            continue;
        }

        ngx_matrix_wake_name(&sa, &len, list->pid[i]);

        /* a worker gone, or without a socket: its waiters' timers */
        (void) sendto(ngx_matrix_wake_conn->fd, "w", 1, MSG_DONTWAIT,
                      (struct sockaddr *) &sa, len);
    }
}


static void
ngx_matrix_wake_handler(ngx_event_t *rev)
{
    u_char             buf[64];
    ngx_connection_t  *c;

    c = rev->data;

    while (recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
        /* void */
    }

    ngx_matrix_wake_local(rev);

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, rev->log, 0,
                      "matrix: the wake socket failed");
    }
}


void
ngx_matrix_wake_init_process(ngx_cycle_t *cycle)
{
    socklen_t           len;
    ngx_socket_t        s;
    ngx_connection_t   *c;
    struct sockaddr_un  sa;

    ngx_matrix_wake_local_ev.handler = ngx_matrix_wake_local;
    ngx_matrix_wake_local_ev.log = cycle->log;

    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_socket_errno,
                      "matrix: no wake socket: requests waiting for another "
                      "worker's read or key fetch wait for their timers");
        return;
    }

    ngx_matrix_wake_name(&sa, &len, ngx_pid);

    if (bind(s, (struct sockaddr *) &sa, len) == -1) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_socket_errno,
                      "matrix: binding the wake socket failed: requests "
                      "waiting for another worker's read or key fetch wait "
                      "for their timers");
        ngx_close_socket(s);
        return;
    }

    c = ngx_get_connection(s, cycle->log);
    if (c == NULL) {
        ngx_close_socket(s);
        return;
    }

    c->read->handler = ngx_matrix_wake_handler;
    c->read->log = cycle->log;
    c->write->log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_close_connection(c);
        return;
    }

    ngx_matrix_wake_conn = c;
}


void
ngx_matrix_wake_exit_process(void)
{
    if (ngx_matrix_wake_local_ev.posted) {
        ngx_delete_posted_event(&ngx_matrix_wake_local_ev);
    }

    if (ngx_matrix_wake_conn) {
        ngx_close_connection(ngx_matrix_wake_conn);
        ngx_matrix_wake_conn = NULL;
    }
}
