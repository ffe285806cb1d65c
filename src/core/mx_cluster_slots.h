/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * One range of a CLUSTER SLOTS reply, for the module and matrix-join-ctl
 * (both hiredis users; the rest of src/core does not use hiredis, so this
 * is a header alone, not in libmxcore):
 *
 *     [start, end, [host, port, id, ...], [replica...], ...]
 */

#ifndef MX_CLUSTER_SLOTS_H
#define MX_CLUSTER_SLOTS_H

#include <hiredis/hiredis.h>

#include "mx_cluster.h"


/*
 * 1 with the range's slots and its master's endpoint, 0 for a range that
 * is malformed (to be skipped). *host is NULL when Redis named none (""
 * or "?" in Redis 7: the node asked), else hostlen bytes, not NUL'ed.
 */
static inline int
mx_cluster_slots_range(const redisReply *range, long long *first,
    long long *last, const char **host, size_t *hostlen, int *port)
{
    const redisReply  *m;

    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
        || range->element[0]->type != REDIS_REPLY_INTEGER
        || range->element[1]->type != REDIS_REPLY_INTEGER
        || range->element[2]->type != REDIS_REPLY_ARRAY
        || range->element[2]->elements < 2
        || range->element[2]->element[0]->type != REDIS_REPLY_STRING
        || range->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
    {
        return 0;
    }

    *first = range->element[0]->integer;
    *last = range->element[1]->integer;
    m = range->element[2];

    if (*first < 0 || *last >= MX_CLUSTER_SLOTS || *first > *last
        || m->element[1]->integer < 0 || m->element[1]->integer > 65535)
    {
        return 0;
    }

    if (m->element[0]->len == 0
        || (m->element[0]->len == 1 && m->element[0]->str[0] == '?'))
    {
        *host = NULL;
        *hostlen = 0;

    } else {
        *host = m->element[0]->str;
        *hostlen = m->element[0]->len;
    }

    *port = (int) m->element[1]->integer;

    return 1;
}

#endif /* MX_CLUSTER_SLOTS_H */
