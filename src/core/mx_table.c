/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mx_table.h"


#define MX_TABLE_FIRST  64          /* slots of a first table */


size_t
mx_table_hash(const char *s)
{
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;

    while (*s) {
        h ^= (unsigned char) *s++;
        h *= 0x100000001b3ULL;
    }

    return (size_t) h;
}


long
mx_table_find(const mx_table_t *t, const char *name, mx_table_key_pt key,
    const void *data)
{
    size_t  h, s;

    if (t->cap == 0) {
        return -1;
    }

    for (h = mx_table_hash(name) & (t->cap - 1);
         (s = t->slot[h]) != 0;
         h = (h + 1) & (t->cap - 1))
    {
        if (strcmp(key(data, s - 1), name) == 0) {
            return (long) (s - 1);
        }
    }

    return -1;
}


int
mx_table_add(mx_table_t *t, size_t i, mx_table_key_pt key, const void *data)
{
    size_t   h, j, ncap, *slot;

    if ((t->n + 1) * 2 > t->cap) {
        ncap = t->cap ? t->cap * 2 : MX_TABLE_FIRST;

        slot = calloc(ncap, sizeof(size_t));
        if (slot == NULL) {
            return -1;
        }

        for (j = 0; j < t->cap; j++) {
            if (t->slot[j] == 0) {
                continue;
            }

            for (h = mx_table_hash(key(data, t->slot[j] - 1)) & (ncap - 1);
                 slot[h] != 0;
                 h = (h + 1) & (ncap - 1))
            {
                /* void */
            }

            slot[h] = t->slot[j];
        }

        free(t->slot);
        t->slot = slot;
        t->cap = ncap;
    }

    for (h = mx_table_hash(key(data, i)) & (t->cap - 1);
         t->slot[h] != 0;
         h = (h + 1) & (t->cap - 1))
    {
        /* void */
    }

    t->slot[h] = i + 1;
    t->n++;

    return 0;
}


void
mx_table_free(mx_table_t *t)
{
    free(t->slot);
    memset(t, 0, sizeof(mx_table_t));
}
