/*
 * Copyright (C) nginx-matrix-join authors.
 */

#define MX_LUA_DEFINE_TABLE

#include "mx_lua.h"
