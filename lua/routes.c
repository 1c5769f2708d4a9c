/*
 * routes.c: the router object scripts register with, and route groups.
 *
 * At script load, routes, middleware, handlers and hooks go into the
 * state's own registry (lua/router.h).  At request time add_route and
 * delete_route are runtime changes: they go, as a route spec, to the
 * state's owner (a worker sends them to the master), and only proxy routes
 * and routes naming a handler registered with router:handler can travel.
 */
#include <config.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/util.h"
#include "lua/api.h"
#include "lua/handle.h"
#include "lua/routespec.h"

#define GROUP_CLASS "ks.group"
#define MAX_ROUTE_MW 32

/* The group an add_route/create_group was called on (index), or -1 for
 * the router itself. */
static int self_group(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TUSERDATA)
        return *(int *)luaL_checkudata(L, 1, GROUP_CLASS);
    luaL_checktype(L, 1, LUA_TTABLE);
    return -1;
}

static void push_result(lua_State *L, bool ok, const char *id, const char *error)
{
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, ok);
    lua_setfield(L, -2, "ok");
    if (id != NULL) {
        lua_pushstring(L, id);
        lua_setfield(L, -2, "id");
    }
    if (error != NULL) {
        lua_pushstring(L, error);
        lua_setfield(L, -2, "error");
    }
}

/* A refused registration: at load it also fails the load. */
static int refuse(lua_State *L, const char *msg)
{
    struct ks_lua *lx = ks_lua_of(L);
    if (lx->phase == KS_LUA_LOAD)
        ks_lua_load_error(L, msg);
    push_result(L, false, NULL, msg);
    return 1;
}

static int join_pattern(const char *prefix, const char *pattern, char *out, size_t cap)
{
    int n;
    if (prefix == NULL || prefix[0] == '\0')
        n = snprintf(out, cap, "%s", pattern);
    else if (strcmp(pattern, "/") == 0)
        n = snprintf(out, cap, "%s", prefix);
    else
        n = snprintf(out, cap, "%s%s", prefix, pattern);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Middleware names (the array at idx) to references, appended to mw. */
static int resolve_middleware(lua_State *L, int idx, int *mw, size_t *n, size_t max, char *err,
                              size_t errlen)
{
    struct ks_lua *lx = ks_lua_of(L);
    if (lua_isnoneornil(L, idx))
        return 0;
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(err, errlen, "middleware must be a list of names");
        return -1;
    }
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, i);
        const char *name = ks_lua_tocstring(L, -1);
        int ref = name != NULL ? ks_router_name_ref(&lx->router, true, name) : -1;
        if (ref < 0) {
            snprintf(err, errlen, name ? "unknown middleware \"%.64s\" (register it with "
                                         "router:middleware before using it)"
                                       : "middleware names must be strings (without NUL bytes)",
                     name);
            lua_pop(L, 1);
            return -1;
        }
        lua_pop(L, 1);
        if (*n == max) {
            snprintf(err, errlen, "more than %zu middlewares on one route", max);
            return -1;
        }
        mw[(*n)++] = ref;
    }
    return 0;
}

/* The opts of a route (the table at idx, or none) into s; method and
 * pattern must be in s already.  *fn_idx receives the stack index of a
 * function handler (0 when there is none). */
/* Does add_route's opts table (at idx, a table or nil) have a key it does
 * not know?  A misspelt "upstrem" would otherwise give a route that
 * proxies to the tenant's round-robin without a word. */
static bool opts_unknown_key(lua_State *L, int idx, char *err, size_t errlen)
{
    static const char *const known[] = {
        "handler", "upstream", "timeout", "strip_prefix", "headers", "middleware", NULL,
    };
    if (!lua_istable(L, idx))
        return false;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        size_t i = 0;
        while (key != NULL && known[i] != NULL && strcmp(known[i], key) != 0)
            i++;
        if (key == NULL || known[i] == NULL) {
            snprintf(err, errlen, "unknown route option %s%.64s%s (a route has handler or upstream, "
                     "headers, timeout, strip_prefix, middleware)", key ? "\"" : "(a ",
                     key ? key : luaL_typename(L, -1), key ? "\"" : " key)");
            lua_pop(L, 1);
            return true;
        }
    }
    return false;
}

static int spec_from_opts(lua_State *L, int idx, struct ks_route_spec *s, int *fn_idx, char *err,
                          size_t errlen)
{
    struct ks_lua *lx = ks_lua_of(L);
    *fn_idx = 0;
    if (lua_isnoneornil(L, idx))
        return 0;
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(err, errlen, "route options must be a table");
        return -1;
    }
    idx = lua_absindex(L, idx);
    int t = lua_getfield(L, idx, "handler");
    if (t == LUA_TFUNCTION) {
        *fn_idx = lua_gettop(L);    /* left on the stack for the caller */
    } else {
        if (t == LUA_TSTRING) {
            const char *name = ks_lua_tocstring(L, -1);
            if (name == NULL || (lx != NULL && ks_router_name_ref(&lx->router, false, name) < 0)) {
                if (name == NULL)
                    snprintf(err, errlen, "a NUL byte in the handler's name");
                else
                    snprintf(err, errlen, "unknown handler \"%.64s\" (register it with router:handler)",
                             name);
                lua_pop(L, 1);
                return -1;
            }
            ks_strlcpy(s->handler, name, sizeof(s->handler));
        } else if (t != LUA_TNIL) {
            snprintf(err, errlen, "handler must be a function or the name of a handler");
            lua_pop(L, 1);
            return -1;
        }
        lua_pop(L, 1);
    }
    if (lua_getfield(L, idx, "upstream") != LUA_TNIL) {
        const char *name = ks_lua_tocstring(L, -1);
        if (name == NULL) {
            snprintf(err, errlen, "upstream must be the name of one of the tenant's upstreams");
            lua_pop(L, 1);
            return -1;
        }
        ks_strlcpy(s->upstream, name, sizeof(s->upstream));
    }
    lua_pop(L, 1);
    if ((*fn_idx != 0 || s->handler[0]) && s->upstream[0]) {
        snprintf(err, errlen, "a route has a handler or an upstream, not both");
        return -1;
    }
    if (lua_getfield(L, idx, "timeout") != LUA_TNIL) {
        s->timeout_ms = ks_lua_duration(L, -1);
        if (s->timeout_ms <= 0) {
            snprintf(err, errlen, "timeout must be a duration such as \"5s\" or a number of seconds");
            lua_pop(L, 1);
            return -1;
        }
    }
    lua_pop(L, 1);
    t = lua_getfield(L, idx, "strip_prefix");
    if (t == LUA_TBOOLEAN && lua_toboolean(L, -1))
        ks_route_literal_prefix(s->pattern, s->strip, sizeof(s->strip));
    else if (t == LUA_TSTRING) {
        const char *p = ks_lua_tocstring(L, -1);
        size_t n = p != NULL ? strlen(p) : 0;
        if (p == NULL || p[0] != '/' || n >= sizeof(s->strip) || strncmp(s->pattern, p, n) != 0) {
            snprintf(err, errlen, "strip_prefix \"%.64s\" is not a prefix of the pattern",
                     p != NULL ? p : "(with a NUL byte)");
            lua_pop(L, 1);
            return -1;
        }
        ks_strlcpy(s->strip, p, sizeof(s->strip));
        while (n > 1 && s->strip[n - 1] == '/')
            s->strip[--n] = '\0';
    } else if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
        snprintf(err, errlen, "strip_prefix must be true or a prefix string");
        lua_pop(L, 1);
        return -1;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "headers") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TTABLE) {
            snprintf(err, errlen, "headers must be a table of name = value");
            lua_pop(L, 1);
            return -1;
        }
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1)) {
                snprintf(err, errlen, "headers must be a table of name = value strings");
                lua_pop(L, 3);
                return -1;
            }
            lua_pushvalue(L, -1);   /* tostring a number in a copy, not the key */
            (void)lua_tostring(L, -1);
            const char *name = ks_lua_tocstring(L, -3), *value = ks_lua_tocstring(L, -1);
            int rc = -1;
            if (name == NULL || value == NULL)
                snprintf(err, errlen, "a NUL byte in a header of the route");
            else
                rc = ks_route_spec_add_header(s, name, value, err, errlen);
            lua_pop(L, 2);
            if (rc < 0) {
                lua_pop(L, 2);
                return -1;
            }
        }
    }
    lua_pop(L, 1);
    return 0;
}

/* Fill method and pattern of s (group prefix applied). */
static int spec_start(lua_State *L, int group, const char *method, const char *pattern,
                      struct ks_route_spec *s, char *err, size_t errlen)
{
    struct ks_lua *lx = ks_lua_of(L);
    memset(s, 0, sizeof(*s));
    ks_strlcpy(s->tenant, lx->tenant, sizeof(s->tenant));
    size_t ml = strlen(method);
    if (ml >= sizeof(s->method)) {
        snprintf(err, errlen, "bad method \"%.32s\"", method);
        return -1;
    }
    for (size_t i = 0; i <= ml; i++)
        s->method[i] = (char)toupper((unsigned char)method[i]);
    if (join_pattern(group >= 0 ? lx->groups[group].prefix : NULL, pattern, s->pattern,
                     sizeof(s->pattern)) < 0) {
        snprintf(err, errlen, "pattern too long");
        return -1;
    }
    return 0;
}

static int runtime_change(lua_State *L, struct ks_route_spec *s, bool del)
{
    struct ks_lua *lx = ks_lua_of(L);
    char err[512], id[KS_ROUTE_ID_MAX] = "";
    if (!lx->dynamic_routing) {
        snprintf(err, sizeof(err), "runtime route changes need dynamic_routing_enabled "
                 "for tenant %s", lx->tenant);
        return refuse(L, err);
    }
    if (lx->runtime == NULL)
        return refuse(L, "runtime route changes are not possible here");
    /* the wait for the master's verdict is not Lua time (keystone-lua(7)) */
    struct ks_lua_pause p;
    ks_lua_pause(lx, &p);
    int rc = lx->runtime(lx->runtime_arg, s, del, id, sizeof(id), err, sizeof(err));
    ks_lua_resume(lx, &p);
    if (rc < 0)
        return refuse(L, err);
    push_result(L, true, del ? s->id : id, NULL);
    return 1;
}

static int r_add_route(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    int group = self_group(L);
    const char *method = ks_lua_checkcstring(L, 2);
    const char *pattern = ks_lua_checkcstring(L, 3);
    if (!lua_isnoneornil(L, 4))
        luaL_checktype(L, 4, LUA_TTABLE);
    lua_settop(L, 4);
    char err[512];
    struct ks_route_spec s;
    int fn_idx;
    if (opts_unknown_key(L, 4, err, sizeof(err)) ||
        spec_start(L, group, method, pattern, &s, err, sizeof(err)) < 0 ||
        spec_from_opts(L, 4, &s, &fn_idx, err, sizeof(err)) < 0)
        return refuse(L, err);

    if (lx->phase != KS_LUA_LOAD) {
        if (fn_idx != 0)
            return refuse(L, "a runtime route cannot take a function: name a handler "
                             "registered with router:handler, or give an upstream");
        if (group >= 0 && lx->groups[group].nmw > 0)
            return refuse(L, "a runtime route cannot have middleware");
        bool has_mw = false;
        if (lua_istable(L, 4)) {
            lua_getfield(L, 4, "middleware");
            has_mw = !lua_isnil(L, -1);
            lua_pop(L, 1);
        }
        if (has_mw)
            return refuse(L, "a runtime route cannot have middleware");
        struct ks_pattern p;
        if (!ks_route_method_ok(s.method) || ks_pattern_compile(s.pattern, &p, err, sizeof(err)) < 0) {
            if (!ks_route_method_ok(s.method))
                snprintf(err, sizeof(err), "bad method \"%.32s\"", s.method);
            return refuse(L, err);
        }
        ks_pattern_free(&p);
        return runtime_change(L, &s, false);
    }

    int mw[MAX_ROUTE_MW];
    size_t nmw = 0;
    if (group >= 0)
        for (size_t i = 0; i < lx->groups[group].nmw && nmw < MAX_ROUTE_MW; i++)
            mw[nmw++] = lx->groups[group].mw[i];
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "middleware");
        int rc = resolve_middleware(L, lua_gettop(L), mw, &nmw, MAX_ROUTE_MW, err, sizeof(err));
        lua_pop(L, 1);
        if (rc < 0)
            return refuse(L, err);
    }
    uint32_t up = KS_ROUTE_NO_UPSTREAM;
    if (s.upstream[0] && (up = ks_lua_upstream_index(lx, s.upstream)) == KS_ROUTE_NO_UPSTREAM) {
        snprintf(err, sizeof(err), "unknown upstream \"%.64s\" (not among the tenant's upstreams)",
                 s.upstream);
        return refuse(L, err);
    }
    int handler = KS_ROUTE_PROXY;
    if (fn_idx != 0) {
        lua_pushvalue(L, fn_idx);
        handler = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (s.handler[0]) {
        handler = ks_router_name_ref(&lx->router, false, s.handler);
    }
    luaL_where(L, 1);
    char where[300];
    ks_strlcpy(where, lua_tostring(L, -1), sizeof(where));
    lua_pop(L, 1);
    size_t wl = strlen(where);
    if (wl >= 2 && where[wl - 2] == ':' && where[wl - 1] == ' ')
        where[wl - 2] = '\0';
    const char *hdrs[2 * KS_SPEC_HEADERS_MAX];
    ks_route_spec_headers(&s, hdrs);
    struct ks_route_def d = {
        .method = s.method,
        .pattern = s.pattern,
        .handler = handler,
        .handler_name = s.handler[0] ? s.handler : NULL,
        .upstream = up,
        .headers = hdrs,
        .nheaders = s.nheaders,
        .timeout_ms = s.timeout_ms,
        .strip = s.strip[0] ? s.strip : NULL,
        .mw = mw,
        .nmw = nmw,
        .where = where,
    };
    const struct ks_route *rt = ks_router_add(&lx->router, &d, err, sizeof(err));
    if (rt == NULL) {
        if (fn_idx != 0)
            luaL_unref(L, LUA_REGISTRYINDEX, handler);
        return refuse(L, err);
    }
    push_result(L, true, rt->id, NULL);
    return 1;
}

static int r_delete_route(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *id = ks_lua_checkcstring(L, 2);
    char err[256];
    const struct ks_route *rt = ks_router_find(&lx->router, id);
    if (rt == NULL) {
        snprintf(err, sizeof(err), "no route %.32s", id);
        return refuse(L, err);
    }
    if (lx->phase == KS_LUA_LOAD) {
        if (rt->handler > 0 && rt->handler_name == NULL)
            luaL_unref(L, LUA_REGISTRYINDEX, rt->handler);
        ks_router_delete(&lx->router, id);
        push_result(L, true, id, NULL);
        return 1;
    }
    if (!rt->dynamic) {
        snprintf(err, sizeof(err), "route %.32s was registered by the script: only runtime "
                 "routes can be deleted at run time", id);
        return refuse(L, err);
    }
    struct ks_route_spec s;
    memset(&s, 0, sizeof(s));
    ks_strlcpy(s.tenant, lx->tenant, sizeof(s.tenant));
    ks_strlcpy(s.id, id, sizeof(s.id));
    return runtime_change(L, &s, true);
}

static int r_list_routes(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    const struct ks_router *r = &lx->router;
    lua_createtable(L, (int)r->nroutes, 0);
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct ks_route *rt = r->routes[i];
        lua_createtable(L, 0, 6);
        lua_pushstring(L, rt->id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, rt->method);
        lua_setfield(L, -2, "method");
        lua_pushstring(L, rt->pat.text);
        lua_setfield(L, -2, "pattern");
        lua_pushstring(L, rt->dynamic ? "dynamic" : "static");
        lua_setfield(L, -2, "source");
        if (rt->upstream != KS_ROUTE_NO_UPSTREAM && rt->upstream < lx->nupstreams) {
            lua_pushstring(L, lx->upstreams[rt->upstream]);
            lua_setfield(L, -2, "upstream");
        }
        if (rt->handler_name != NULL) {
            lua_pushstring(L, rt->handler_name);
            lua_setfield(L, -2, "handler");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int r_create_group(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    int parent = self_group(L);
    ks_lua_check_phase(L, KS_LUA_LOAD, "router:create_group");
    const char *prefix = ks_lua_checkcstring(L, 2);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    if (lx->ngroups == KS_LUA_MAX_GROUPS)
        return luaL_error(L, "router:create_group: more than %d groups", KS_LUA_MAX_GROUPS);
    char full[KS_ROUTE_PATTERN_MAX + 1], err[256];
    if (join_pattern(parent >= 0 ? lx->groups[parent].prefix : NULL, prefix, full, sizeof(full)) < 0)
        return luaL_error(L, "router:create_group: prefix too long");
    size_t n = strlen(full);
    while (n > 1 && full[n - 1] == '/')
        full[--n] = '\0';
    struct ks_pattern p;
    if (ks_pattern_compile(full, &p, err, sizeof(err)) < 0)
        return luaL_error(L, "router:create_group: %s", err);
    bool wildcard = ks_pattern_has_wildcard(&p);
    ks_pattern_free(&p);
    if (wildcard)
        return luaL_error(L, "router:create_group: a prefix cannot end in *");
    int mw[MAX_ROUTE_MW];
    size_t nmw = 0;
    if (parent >= 0)
        for (size_t i = 0; i < lx->groups[parent].nmw; i++)
            mw[nmw++] = lx->groups[parent].mw[i];
    if (lua_type(L, 3) == LUA_TTABLE) {
        lua_getfield(L, 3, "middleware");
        int rc = resolve_middleware(L, lua_gettop(L), mw, &nmw, MAX_ROUTE_MW, err, sizeof(err));
        lua_pop(L, 1);
        if (rc < 0)
            return luaL_error(L, "router:create_group: %s", err);
    }
    struct ks_lua_group *g = &lx->groups[lx->ngroups];
    g->prefix = strdup(strcmp(full, "/") == 0 ? "" : full);
    g->mw = malloc((nmw ? nmw : 1) * sizeof(int));
    if (g->prefix == NULL || g->mw == NULL) {
        free(g->prefix);
        free(g->mw);
        g->prefix = NULL;
        g->mw = NULL;
        return luaL_error(L, "router:create_group: out of memory");
    }
    memcpy(g->mw, mw, nmw * sizeof(int));
    g->nmw = nmw;
    /* counted before lua_newuserdata, which may raise: the group's memory
     * is then still freed with the others */
    int index = (int)lx->ngroups++;
    int *ud = lua_newuserdata(L, sizeof(int));
    *ud = index;
    luaL_setmetatable(L, GROUP_CLASS);
    return 1;
}

/* router:use(fn), router:middleware(name, fn), router:handler(name, fn) */
static int register_function(lua_State *L, const char *what, bool named, bool middleware)
{
    struct ks_lua *lx = ks_lua_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    ks_lua_check_phase(L, KS_LUA_LOAD, what);
    const char *name = named ? ks_lua_checkcstring(L, 2) : NULL;
    int fn = named ? 3 : 2;
    luaL_checktype(L, fn, LUA_TFUNCTION);
    lua_pushvalue(L, fn);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    char err[256];
    int rc = named ? ks_router_name_add(&lx->router, middleware, name, ref, err, sizeof(err))
                   : ks_router_use(&lx->router, ref, NULL, err, sizeof(err));
    if (rc < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "%s: %s", what, err);
    }
    return 0;
}

static int r_use(lua_State *L)
{
    return register_function(L, "router:use", false, true);
}

static int r_middleware(lua_State *L)
{
    return register_function(L, "router:middleware", true, true);
}

static int r_handler(lua_State *L)
{
    return register_function(L, "router:handler", true, false);
}

static int r_on_response(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    ks_lua_check_phase(L, KS_LUA_LOAD, "router:on_response");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int max = lx->router.max_middlewares;
    if (max >= 0 && lx->non_response >= (size_t)max)
        return luaL_error(L, "router:on_response: more than %d hooks (lua_limits.max_middlewares)", max);
    int *v = realloc(lx->on_response, (lx->non_response + 1) * sizeof(int));
    if (v == NULL)
        return luaL_error(L, "router:on_response: out of memory");
    lx->on_response = v;
    lua_pushvalue(L, 2);
    lx->on_response[lx->non_response++] = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int ks_lua_open_router(lua_State *L)
{
    static const luaL_Reg router[] = {
        { "add_route", r_add_route },     { "delete_route", r_delete_route },
        { "list_routes", r_list_routes }, { "create_group", r_create_group },
        { "use", r_use },                 { "middleware", r_middleware },
        { "handler", r_handler },         { "on_response", r_on_response },
        { NULL, NULL },
    };
    static const luaL_Reg group[] = {
        { "add_route", r_add_route },
        { "create_group", r_create_group },
        { NULL, NULL },
    };
    ks_lua_new_class(L, GROUP_CLASS, group);
    luaL_newlib(L, router);
    lua_setglobal(L, "router");
    return 0;
}

/* ---- the admin API's JSON route --------------------------------------------------- */

/* The keys a route has in the admin API's JSON (as router:add_route's opts,
 * without middleware: runtime routes have none). */
static const char *const json_keys[] = {
    "method", "pattern", "upstream", "handler", "headers", "timeout", "strip_prefix", NULL,
};

/* One top-level key (the JSON string at [k, k + n), quotes included,
 * decoded with json.decode so that escapes name the same key): 0, or -1
 * with err for middleware, an unknown key or one seen before (in the
 * table at index seen). */
static int check_key(lua_State *L, int seen, const char *k, size_t n, char *err, size_t errlen)
{
    lua_getglobal(L, "json");
    lua_getfield(L, -1, "decode");
    lua_pushlstring(L, k, n);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
        snprintf(err, errlen, "the body is not JSON: a bad key");
        lua_pop(L, 2);
        return -1;
    }
    const char *key = ks_lua_tocstring(L, -1);
    int rc = -1;
    if (key == NULL) {
        snprintf(err, errlen, "a key with a NUL byte");
    } else if (strcmp(key, "middleware") == 0) {
        snprintf(err, errlen, "\"middleware\": a runtime route has no middleware (keystone-lua(7)); "
                 "a route that needs a check belongs in the tenant's script");
    } else {
        size_t i = 0;
        while (json_keys[i] != NULL && strcmp(json_keys[i], key) != 0)
            i++;
        lua_pushvalue(L, -1);
        bool dup = lua_rawget(L, seen) != LUA_TNIL;
        lua_pop(L, 1);
        if (json_keys[i] == NULL)
            snprintf(err, errlen, "unknown key \"%.64s\" (a route has method, pattern, upstream or "
                     "handler, headers, timeout, strip_prefix)", key);
        else if (dup)
            snprintf(err, errlen, "duplicate key \"%s\"", key);
        else
            rc = 0;
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
    }
    lua_pop(L, 2);
    return rc;
}

/* Check the top-level keys of the JSON object text json (already decoded
 * by json.decode, so well formed): the decoded table cannot tell a key
 * given twice (the last wins), so the text is walked, strings skipped,
 * and each key at depth 1 checked. */
static int check_keys(lua_State *L, const char *json, size_t len, char *err, size_t errlen)
{
    lua_newtable(L);
    int seen = lua_gettop(L), depth = 0, rc = 0;
    bool want_key = false;
    for (size_t i = 0; i < len && rc == 0; i++) {
        char c = json[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && json[j] != '"')
                j += json[j] == '\\' ? 2 : 1;
            if (j >= len)
                break;      /* cannot be: json.decode took it */
            if (depth == 1 && want_key)
                rc = check_key(L, seen, json + i, j - i + 1, err, errlen);
            want_key = false;
            i = j;
        } else if (c == '{' || c == '[') {
            want_key = ++depth == 1 && c == '{';
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            want_key = true;
        }
    }
    lua_pop(L, 1);
    return rc;
}

static int decode_route(lua_State *L)
{
    struct ks_route_spec *s = lua_touserdata(L, 1);
    char *err = lua_touserdata(L, 2);
    size_t errlen = (size_t)lua_tointeger(L, 3);
    size_t len;
    const char *json = lua_tolstring(L, 4, &len);
    lua_getglobal(L, "json");
    lua_getfield(L, -1, "decode");
    lua_pushlstring(L, json, len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "the body is not JSON: %s", lua_tostring(L, -1));
        lua_pushboolean(L, 0);
        return 1;
    }
    int t = lua_gettop(L);
    if (lua_type(L, t) != LUA_TTABLE) {
        snprintf(err, errlen, "the body must be a JSON object");
        lua_pushboolean(L, 0);
        return 1;
    }
    if (check_keys(L, json, len, err, errlen) < 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_getfield(L, t, "method");
    lua_getfield(L, t, "pattern");
    if (ks_lua_tocstring(L, -2) == NULL || ks_lua_tocstring(L, -1) == NULL) {
        snprintf(err, errlen, "a route needs \"method\" and \"pattern\" strings (without NUL bytes)");
        lua_pushboolean(L, 0);
        return 1;
    }
    size_t ml = lua_rawlen(L, -2);
    if (ml >= sizeof(s->method) || lua_rawlen(L, -1) >= sizeof(s->pattern)) {
        snprintf(err, errlen, "method or pattern too long");
        lua_pushboolean(L, 0);
        return 1;
    }
    const char *m = lua_tostring(L, -2);
    for (size_t i = 0; i <= ml; i++)
        s->method[i] = (char)toupper((unsigned char)m[i]);
    ks_strlcpy(s->pattern, lua_tostring(L, -1), sizeof(s->pattern));
    int fn_idx;
    lua_pushboolean(L, spec_from_opts(L, t, s, &fn_idx, err, errlen) == 0);
    return 1;
}

int ks_lua_route_spec_from_json(const char *json, size_t len, struct ks_route_spec *s, char *err,
                                size_t errlen)
{
    lua_State *L = ks_lua_json_state(4 * 1024 * 1024);
    if (L == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char tenant[KS_SPEC_NAME_MAX];
    ks_strlcpy(tenant, s->tenant, sizeof(tenant));
    memset(s, 0, sizeof(*s));
    ks_strlcpy(s->tenant, tenant, sizeof(s->tenant));
    err[0] = '\0';
    lua_pushcfunction(L, decode_route);
    lua_pushlightuserdata(L, s);
    lua_pushlightuserdata(L, err);
    lua_pushinteger(L, (lua_Integer)errlen);
    lua_pushlstring(L, json, len);
    int rc = -1;
    if (lua_pcall(L, 4, 1, 0) != LUA_OK)
        snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot decode");
    else if (lua_toboolean(L, -1))
        rc = 0;
    ks_lua_json_close(L);
    return rc;
}
