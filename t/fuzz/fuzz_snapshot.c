/*
 * Copyright (C) nginx-matrix-join authors.
 * Room snapshot documents (what matrix-join-ctl loads): mx_snapshot_parse
 * on arbitrary bytes; a parsed model is walked the way the loader walks
 * it (every chunk of every list, every event found by its ID) and freed.
 */

#include "fuzz_common.h"
#include "mx_snapshot.h"


static void
progress(void *data, size_t done, size_t total)
{
    check(done <= total);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                  l;
    size_t               c, i;
    mx_buf_t             out = MX_BUF_INIT;
    mx_snapshot_t       *snap;
    mx_snapshot_err_t    err;

    fuzz_init();

    snap = NULL;
    if (mx_snapshot_parse((const char *) data, size, progress, NULL, &snap,
                          &err) != 0)
    {
        check(memchr(err.where, '\0', sizeof(err.where)) != NULL);
        check(memchr(err.reason, '\0', sizeof(err.reason)) != NULL);
        return 0;
    }

    check(snap != NULL && snap->rv != NULL);

    for (l = 0; l < MX_SNAPSHOT_NLISTS; l++) {
        for (c = 0; c < snap->lists[l].nchunks; c++) {
            mx_buf_reset(&out);
            check(mx_snapshot_chunk(snap, (mx_snapshot_list_e) l, c, &out)
                  == 0);
            check(out.len == snap->lists[l].chunks[c].bytes);
        }

        for (i = 0; i < snap->lists[l].n; i++) {
            check(snap->lists[l].events[i] < snap->nevents);
        }
    }

    for (i = 0; i < snap->nevents; i++) {
        check(mx_snapshot_find(snap, snap->events[i].id) == (long) i);
    }

    check(mx_snapshot_find(snap, "$not-there") == -1);

    mx_buf_free(&out);
    mx_snapshot_free(snap);

    return 0;
}
