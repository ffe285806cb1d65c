/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * The Redis Lua scripts of src/lua/, embedded at build time by
 * src/lua/embed: the module and matrix-join-ctl run the same bytes, by the
 * same SHA-1 (EVALSHA, then EVAL after NOSCRIPT).
 */

#ifndef MX_LUA_H
#define MX_LUA_H

#include <stddef.h>


typedef struct {
    const char     *name;       /* the file's name without .lua */
    const char     *sha1;       /* 40 lowercase hex digits */
    size_t          len;
    const char     *source;
} mx_lua_script_t;


#include "mx_lua_scripts.h"     /* generated: mx_lua_e, MX_LUA_<NAME> */


extern const mx_lua_script_t  mx_lua_scripts[MX_LUA_COUNT];

#endif /* MX_LUA_H */
