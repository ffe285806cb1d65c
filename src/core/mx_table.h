/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * A hash table of string keys over the caller's own entries: it holds
 * entry indices only (open addressing, linear probing, FNV-1a), and asks
 * key(data, i) for entry i's key. The snapshot indexes its events by ID
 * and by state key with it (mx_snapshot.c), matrix-join-ctl sync its
 * string -> pointer maps. A zeroed mx_table_t is an empty table.
 */

#ifndef MX_TABLE_H
#define MX_TABLE_H

#include <stddef.h>


typedef const char *(*mx_table_key_pt)(const void *data, size_t i);

typedef struct {
    size_t         *slot;       /* entry index + 1; 0 is an empty slot */
    size_t          cap;        /* a power of two, or 0 */
    size_t          n;
} mx_table_t;


/* FNV-1a, 64 bits. */
size_t mx_table_hash(const char *s);

/* The index of the entry whose key is name, or -1. */
long mx_table_find(const mx_table_t *t, const char *name, mx_table_key_pt key,
    const void *data);

/*
 * Adds entry i, whose key is not in t yet, growing t at half load. 0, or
 * -1 when out of memory (t unchanged).
 */
int mx_table_add(mx_table_t *t, size_t i, mx_table_key_pt key,
    const void *data);

void mx_table_free(mx_table_t *t);

#endif /* MX_TABLE_H */
