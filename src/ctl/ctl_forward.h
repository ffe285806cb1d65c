/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl forward: the decisions that need neither Redis nor
 * HTTP (docs/forwarder.md), kept apart so that unit tests can call them.
 */

#ifndef MXJ_CTL_FORWARD_H
#define MXJ_CTL_FORWARD_H

#include <stddef.h>


#define MXJ_FWD_GROUP          "forwarder"

#define MXJ_FWD_BACKOFF_MIN    500        /* ms, the first wait */
#define MXJ_FWD_BACKOFF_MAX    60000      /* ms, where doubling stops */
#define MXJ_FWD_RECENT_MS      30000      /* no dead letter this soon after a
                                             delivery of the room */
#define MXJ_FWD_RESPONSE_MAX   4096       /* bytes of a response kept */


typedef enum {
    MXJ_FWD_ACK = 0,        /* 2xx: acknowledge the entry */
    MXJ_FWD_RETRY,          /* wait, then send it again */
    MXJ_FWD_DEAD            /* make it a dead letter */
} mxj_fwd_action_e;


/*
 * What to do after one attempt that got status (0: no HTTP answer:
 * connection error or timeout). since_delivery_ms: how long ago an
 * earlier join of the same room was delivered, -1 when none was.
 * *counted is the number of 4xx answers so far (each 4xx increments it):
 * at max_attempts the entry is a dead letter, unless since_delivery_ms is
 * under MXJ_FWD_RECENT_MS.
 */
mxj_fwd_action_e mxj_fwd_judge(long status, long since_delivery_ms,
    long max_attempts, long *counted);

/*
 * The wait after the attempt-th failed attempt (1-based): 0.5 s doubling
 * to 60 s, times 0.8 + 0.4 r (r in [0, 1], a random number): +-20 %.
 */
long mxj_fwd_backoff_ms(unsigned long attempt, double r);

/*
 * One "Authorization: <line>" header per line of an outbox entry's
 * authorization field (lines joined by '\n'; empty lines skipped).
 * Returns the number of headers in *headers (malloc'ed, free with
 * mxj_fwd_auth_free), -1 when a line holds a control character (a header
 * it would inject), -2 when out of memory.
 */
long mxj_fwd_auth_headers(const char *auth, size_t len, char ***headers);
void mxj_fwd_auth_free(char **headers, long n);

/* The milliseconds part of a stream ID "<ms>-<seq>", or -1. */
long long mxj_fwd_stream_id_ms(const char *id, size_t len);

#endif /* MXJ_CTL_FORWARD_H */
