/*
 * request.c: the req object.  One userdata per state, made at load;
 * every method reads the request being handled (lx->req), so a request
 * costs no Lua allocation beyond what a method returns.
 */
#include <config.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/api.h"
#include "lua/reqctx.h"
#include "worker/body.h"
#include "worker/conn.h"
#include "worker/http.h"

struct ks_lua_req *ks_lua_current(lua_State *L, const char *cls, const void *self)
{
    /* req and res are singletons, so their address is their class: one
     * comparison where luaL_checkudata's metatable lookup in the registry
     * cost 300 instructions, a third of a method call; it still makes
     * the error message of a wrong argument */
    if (lua_touserdata(L, 1) != self)
        luaL_checkudata(L, 1, cls);
    struct ks_lua *lx = ks_lua_of(L);
    if (lx->req == NULL)
        luaL_error(L, "%s is only valid while a request is handled",
                   strcmp(cls, KS_LUA_REQ_CLASS) == 0 ? "req" : "res");
    return lx->req;
}

static struct ks_lua_req *cur(lua_State *L)
{
    return ks_lua_current(L, KS_LUA_REQ_CLASS, ks_lua_of(L)->req_self);
}

/* A block to build a string in, as a userdata: allocated as Lua
 * allocates, so a refusal by the memory cap gets a full collection and
 * one more try, which a luaL_Buffer's block (over LUAL_BUFFERSIZE) does
 * not get.  push_built pushes the string built and drops the block. */
static char *scratch(lua_State *L, size_t n)
{
    return lua_newuserdata(L, n > 0 ? n : 1);
}

static void push_built(lua_State *L, const char *d, size_t n)
{
    lua_pushlstring(L, d, n);
    lua_remove(L, -2);
}

static void push_lower(lua_State *L, const char *s, size_t n)
{
    char small[128];
    char *d = n <= sizeof(small) ? small : scratch(L, n);
    for (size_t i = 0; i < n; i++)
        d[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    if (n <= sizeof(small))
        lua_pushlstring(L, small, n);
    else
        push_built(L, d, n);
}

static bool name_is(const char *a, size_t al, const char *b, size_t bl)
{
    return al == bl && strncasecmp(a, b, al) == 0;
}

/* The last edit of this header name, or NULL. */
static const struct ks_header_edit *edit_of(const struct ks_lua_req *q, const char *name, size_t n)
{
    for (size_t i = q->nedits; i-- > 0;)
        if (name_is(q->edits[i].name, q->edits[i].name_len, name, n))
            return &q->edits[i];
    return NULL;
}

static int l_method(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    lua_pushlstring(L, q->x->r->method, q->x->r->method_len);
    return 1;
}

static int l_path(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    lua_pushlstring(L, q->path, q->path_len);
    return 1;
}

static int l_host(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    lua_pushstring(L, q->x->r->host);
    return 1;
}

static int l_query_string(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    const struct ks_request *r = q->x->r;
    lua_pushlstring(L, r->query ? r->query : "", r->query ? r->query_len : 0);
    return 1;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Push the form-decoded s ('+' is a space, %XX a byte). */
static void push_decoded(lua_State *L, const char *s, size_t n)
{
    char *d = scratch(L, n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+')
            d[k++] = ' ';
        else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            d[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else
            d[k++] = s[i];
    }
    push_built(L, d, k);
}

/* req:query() -> {name = value} (first value, decoded); req:query(name) -> value or nil */
static int l_query(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    const struct ks_request *r = q->x->r;
    const char *s = r->query ? r->query : "";
    size_t n = r->query ? r->query_len : 0;
    bool one = !lua_isnoneornil(L, 2);
    size_t want_len = 0;
    const char *want = one ? luaL_checklstring(L, 2, &want_len) : NULL;
    if (!one)
        lua_newtable(L);
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && s[i] != '&')
            i++;
        size_t end = i++;
        if (end == start)
            continue;
        const char *eq = memchr(s + start, '=', end - start);
        size_t klen = eq ? (size_t)(eq - (s + start)) : end - start;
        const char *v = eq ? eq + 1 : s + end;
        size_t vlen = eq ? (size_t)(s + end - v) : 0;
        push_decoded(L, s + start, klen);
        if (one) {
            size_t kl;
            const char *k = lua_tolstring(L, -1, &kl);
            bool hit = kl == want_len && memcmp(k, want, kl) == 0;
            lua_pop(L, 1);
            if (hit) {
                push_decoded(L, v, vlen);
                return 1;
            }
            continue;
        }
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) != LUA_TNIL) {   /* keep the first value */
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 1);
        push_decoded(L, v, vlen);
        lua_rawset(L, -3);
    }
    if (one)
        lua_pushnil(L);
    return 1;
}

/* Repeated fields are joined by ", " (RFC 9110 5.3), Cookie by "; ", the
 * one a cookie list is made of (RFC 6265 5.4). */
static const char *joiner(const char *name, size_t n)
{
    return name_is(name, n, "cookie", 6) ? "; " : ", ";
}

/* req:headers() -> {lower-case name = value}, repeated headers joined */
static int l_headers(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    const struct ks_request *r = q->x->r;
    lua_createtable(L, 0, (int)r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct ks_header *h = &r->headers[i];
        if (edit_of(q, h->name, h->name_len) != NULL)
            continue;       /* set or deleted by middleware: below */
        push_lower(L, h->name, h->name_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            lua_pushstring(L, joiner(h->name, h->name_len));
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len);
        }
        lua_rawset(L, -3);
    }
    for (size_t i = 0; i < q->nedits; i++) {
        const struct ks_header_edit *e = &q->edits[i];
        push_lower(L, e->name, e->name_len);
        if (e->value != NULL)
            lua_pushlstring(L, e->value, e->value_len);
        else
            lua_pushnil(L);
        lua_rawset(L, -3);
    }
    return 1;
}

/* req:header(name) -> value or nil */
static int l_header(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    size_t n;
    const char *name = luaL_checklstring(L, 2, &n);
    const struct ks_header_edit *e = edit_of(q, name, n);
    if (e != NULL) {
        if (e->value != NULL)
            lua_pushlstring(L, e->value, e->value_len);
        else
            lua_pushnil(L);
        return 1;
    }
    const struct ks_request *r = q->x->r;
    const struct ks_header *first = NULL;
    size_t found = 0;
    for (size_t i = 0; i < r->nheaders; i++)
        if (name_is(r->headers[i].name, r->headers[i].name_len, name, n) && found++ == 0)
            first = &r->headers[i];
    if (found == 0) {
        lua_pushnil(L);
    } else if (found == 1) {
        lua_pushlstring(L, first->value, first->value_len);
    } else {
        const char *sep = joiner(name, n);
        size_t len = 0;
        for (size_t i = 0; i < r->nheaders; i++)
            if (name_is(r->headers[i].name, r->headers[i].name_len, name, n))
                len += r->headers[i].value_len + 2;
        char *d = scratch(L, len), *p = d;
        bool more = false;
        for (size_t i = 0; i < r->nheaders; i++) {
            const struct ks_header *h = &r->headers[i];
            if (!name_is(h->name, h->name_len, name, n))
                continue;
            if (more) {
                memcpy(p, sep, 2);
                p += 2;
            }
            more = true;
            memcpy(p, h->value, h->value_len);
            p += h->value_len;
        }
        push_built(L, d, (size_t)(p - d));
    }
    return 1;
}

/* The body becomes a Lua string: one the state has no room for is a 413
 * for the client, not a memory error that would discard the state. */
static int body_too_large(lua_State *L, struct ks_lua_req *q, uint64_t len)
{
    size_t left = ks_lua_memory_left(L);
    if (len + 64 >= left) {
        /* what is left does not count the garbage yet to be collected */
        lua_gc(L, LUA_GCCOLLECT, 0);
        left = ks_lua_memory_left(L);
    }
    if (len + 64 < left)
        return 0;
    ks_log_warn("lua-body", "tenant %s, request %s: a request body of %llu bytes does not fit in the "
                "%zu bytes of Lua memory left (lua_limits.memory): answered 413", q->lx->tenant,
                q->x->r->id, (unsigned long long)len, left);
    return ks_lua_abort(L, q, 413, "the request body is larger than the script may hold");
}

static int l_body(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE | KS_LUA_HANDLER, "req:body");
    struct ks_exchange *x = q->x;
    if (!x->body_read && x->r->has_content_length)
        body_too_large(L, q, x->r->content_length);
    if (!x->body_read) {
        struct ks_lua_pause p;
        ks_lua_pause(q->lx, &p);
        int rc = ks_body_read_all(x, x->w->table->settings.max_body_bytes);
        ks_lua_resume(q->lx, &p);
        if (rc < 0)
            return ks_lua_abort(L, q, x->status > 0 ? x->status : 400, "cannot read the request body");
        q->keep_alive = q->keep_input;
    }
    body_too_large(L, q, x->body ? x->body_len : 0);
    lua_pushlstring(L, x->body ? x->body : "", x->body ? x->body_len : 0);
    return 1;
}

static int l_params(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    lua_createtable(L, 0, (int)q->m.nparams);
    for (size_t i = 0; q->routed && q->mk == KS_MATCH_FOUND && i < q->m.nparams; i++) {
        lua_pushlstring(L, q->m.params[i].name, q->m.params[i].name_len);
        lua_pushlstring(L, q->m.params[i].value, q->m.params[i].value_len);
        lua_rawset(L, -3);
    }
    return 1;
}

static int l_param(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    size_t n;
    const char *name = luaL_checklstring(L, 2, &n);
    for (size_t i = 0; q->routed && q->mk == KS_MATCH_FOUND && i < q->m.nparams; i++)
        if (q->m.params[i].name_len == n && memcmp(q->m.params[i].name, name, n) == 0) {
            lua_pushlstring(L, q->m.params[i].value, q->m.params[i].value_len);
            return 1;
        }
    lua_pushnil(L);
    return 1;
}

static int l_client_ip(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    lua_pushstring(L, q->x->c->client_ip);
    return 1;
}

static int l_request_id(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    lua_pushstring(L, q->x->r->id);
    return 1;
}

static int l_tenant(lua_State *L)
{
    cur(L);
    lua_pushstring(L, ks_lua_of(L)->tenant);
    return 1;
}

/* The framing and connection fields (and Expect) of the request sent
 * upstream are keystoned's: an edit of them would be dropped, so it is an
 * error rather than a silent no-op. */
static void check_header_name(lua_State *L, const char *what, const char *s, size_t n)
{
    if (n > 256 || !ks_http_is_token(s, n))
        luaL_error(L, "%s: bad header name", what);
    if (ks_http_edit_protected(s, n))
        luaL_error(L, "%s: %s is set by keystoned", what, s);
}

static void add_edit(lua_State *L, struct ks_lua_req *q, const char *name, size_t nl,
                     const char *value, size_t vl)
{
    if (q->nedits == KS_LUA_MAX_EDITS)
        luaL_error(L, "too many header changes (at most %d)", KS_LUA_MAX_EDITS);
    struct ks_header_edit *e = &q->edits[q->nedits];
    e->name = ks_lua_arena_copy(L, q, name, nl);
    e->name_len = nl;
    e->value = value != NULL ? ks_lua_arena_copy(L, q, value, vl) : NULL;
    e->value_len = vl;
    e->append = false;
    q->nedits++;
}

static int l_set_header(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE, "req:set_header");
    size_t nl, vl;
    const char *name = luaL_checklstring(L, 2, &nl);
    const char *value = luaL_checklstring(L, 3, &vl);
    check_header_name(L, "req:set_header", name, nl);
    if (!ks_http_is_value(value, vl))
        return luaL_error(L, "req:set_header: control characters in the value");
    add_edit(L, q, name, nl, value, vl);
    return 0;
}

static int l_del_header(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE, "req:del_header");
    size_t nl;
    const char *name = luaL_checklstring(L, 2, &nl);
    check_header_name(L, "req:del_header", name, nl);
    add_edit(L, q, name, nl, NULL, 0);
    return 0;
}

static int l_set_path(lua_State *L)
{
    struct ks_lua_req *q = cur(L);
    ks_lua_check_phase(L, KS_LUA_MIDDLEWARE, "req:set_path");
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    if (n == 0 || p[0] != '/' || n > KS_ROUTE_PATTERN_MAX * 4)
        return luaL_error(L, "req:set_path: a path starts with /");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || p[i] == 0x7f || p[i] == '?' || p[i] == '#')
            return luaL_error(L, "req:set_path: spaces, control characters, ? and # are not "
                                 "allowed in a path");
    q->path = ks_lua_arena_copy(L, q, p, n);
    q->path_len = n;
    q->path_changed = true;
    return 0;
}

int ks_lua_open_request(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "method", l_method },         { "path", l_path },
        { "host", l_host },             { "query", l_query },
        { "query_string", l_query_string },
        { "headers", l_headers },       { "header", l_header },
        { "body", l_body },             { "params", l_params },
        { "param", l_param },           { "client_ip", l_client_ip },
        { "request_id", l_request_id }, { "tenant", l_tenant },
        { "set_header", l_set_header }, { "del_header", l_del_header },
        { "set_path", l_set_path },     { NULL, NULL },
    };
    ks_lua_new_class(L, KS_LUA_REQ_CLASS, methods);
    struct ks_lua *lx = ks_lua_of(L);
    lx->ref_req = ks_lua_singleton(L, KS_LUA_REQ_CLASS, &lx->req_self);
    return 0;
}
