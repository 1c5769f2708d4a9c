/*
 * api.h: how the files of lua/ build a state's API together (internal to
 * lua/).  Each opener is a lua_CFunction run protected by ks_lua_new.
 *
 *   sandbox.c    base/string/table/math/utf8 trimmed, json, log, keystone
 *   routes.c     the router object and route groups
 *   request.c    the req object        response.c   the res object
 *   http.c       http.request
 */
#ifndef KS_LUA_API_H
#define KS_LUA_API_H

#include <lauxlib.h>
#include <lua.h>
#include <lua-cjson.h>

#include "lua/engine.h"

int ks_lua_open_sandbox(lua_State *L);
int ks_lua_open_router(lua_State *L);
int ks_lua_open_request(lua_State *L);
int ks_lua_open_response(lua_State *L);
int ks_lua_open_http(lua_State *L);

/* Replace every API table among the globals (and the string metatable's
 * __index) by a read-only view; run last. */
void ks_lua_seal_globals(lua_State *L);

/* A method table for a userdata type: methods (NULL-terminated), the
 * metatable stored in the registry under name, __index = methods and a
 * protected __metatable. */
void ks_lua_new_class(lua_State *L, const char *name, const luaL_Reg *methods);

/* The reference of a new userdata of class name, kept in the registry for
 * the state's life (req and res are made once, not per request); *self
 * receives its address (a full userdata never moves). */
int ks_lua_singleton(lua_State *L, const char *name, const void **self);

/* A duration argument: "250ms", "5s" or a number of seconds; -1 when
 * invalid. */
int64_t ks_lua_duration(lua_State *L, int idx);

/* Strings that C code keeps as C strings (patterns, names, prefixes): a
 * NUL byte inside would silently cut them short, so it is refused.
 * ks_lua_checkcstring raises an argument error; ks_lua_tocstring returns
 * NULL for a value that is not a string or holds a NUL. */
const char *ks_lua_checkcstring(lua_State *L, int idx);
const char *ks_lua_tocstring(lua_State *L, int idx);

#endif
