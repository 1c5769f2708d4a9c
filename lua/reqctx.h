/*
 * reqctx.h: one request's passage through a tenant's Lua state (internal
 * to lua/: handle.c runs it, request.c and response.c are its req and res
 * objects, http.c blocks inside it).
 *
 * The context lives on ks_lua_handle's stack; the state points at it
 * (lx->req) only while the request is handled, so a req or res kept by a
 * script past its request fails cleanly instead of reading freed memory.
 * Strings a script hands over (header edits, a new path) are copied into
 * the worker's request arena, which lives until the next request.
 */
#ifndef KS_LUA_REQCTX_H
#define KS_LUA_REQCTX_H

#include <stdbool.h>
#include <stddef.h>

#include "lua/engine.h"
#include "lua/router.h"
#include "lua/routespec.h"
#include "worker/exchange.h"

#define KS_LUA_MAX_EDITS 64
#define KS_LUA_MAX_RESP_HEADERS 64
#define KS_LUA_STREAM_AT 65536      /* buffered output beyond this is sent chunked */

#define KS_LUA_REQ_CLASS "ks.req"
#define KS_LUA_RES_CLASS "ks.res"

struct ks_lua_arena;

/* A growable C buffer the worker keeps between requests (http.request
 * reads responses into it). */
struct ks_lua_scratch {
    char *buf;
    size_t cap;
};

struct ks_lua_resp_header {
    const char *name, *value;       /* in the arena */
    size_t name_len, value_len;
};

/* The response a handler or middleware builds. */
struct ks_lua_resp {
    int status;                     /* 0: not set (200) */
    struct ks_lua_resp_header headers[KS_LUA_MAX_RESP_HEADERS];
    size_t nheaders;
    char *buf;                      /* the worker's output buffer */
    size_t len, cap;
    bool written;                   /* write() or json() was called */
    bool started;                   /* the head is on the wire */
    bool chunked;                   /* ... with chunked framing */
    bool until_close;               /* ... or ending at close (HTTP/1.0) */
};

struct ks_lua_req {
    struct ks_exchange *x;
    struct ks_lua *lx;
    struct ks_lua_arena *arena;
    struct ks_lua_scratch *scratch;
    const char *path;               /* the current path (set_path changes it) */
    size_t path_len;
    bool path_changed;
    bool routed;
    enum ks_match_kind mk;
    size_t entered;                 /* last chain stage entered */
    struct ks_match m;              /* set by ks_router_match (read only once routed) */
    /* request header edits in order: the script's (at most
     * KS_LUA_MAX_EDITS), then the route's `headers`, which always fit */
    struct ks_header_edit edits[KS_LUA_MAX_EDITS + KS_SPEC_HEADERS_MAX];
    size_t nedits;
    struct ks_lua_resp res;
    struct ks_response_head *head;  /* the upstream's, in a response hook */
    bool keep_input;                /* the worker allows keep-alive */
    bool keep_alive;                /* ... and nothing of the request is left unread */
    bool proxied;
    int proxy_rc;
    int abort_status;               /* > 0: end with this status (body trouble); -1: connection lost */
    const char *abort_why;          /* the error ks_lua_abort raised (static text) */
    bool failure_logged;
};

/* The request arena: blocks kept by the worker, reset for every request.
 * alloc gives n + 1 bytes, copy a NUL-terminated copy; both raise a Lua
 * error when the request has used too much. */
struct ks_lua_arena *ks_lua_arena_new(void);
void ks_lua_arena_reset(struct ks_lua_arena *a);
void ks_lua_arena_free(struct ks_lua_arena *a);
char *ks_lua_arena_alloc(lua_State *L, struct ks_lua_req *q, size_t n);
char *ks_lua_arena_copy(lua_State *L, struct ks_lua_req *q, const char *s, size_t n);
/* A copy for C code outside Lua (valid until the next request), or NULL. */
char *ks_lua_arena_strdup(struct ks_lua_arena *a, const char *s);

/* The request being handled; raises a Lua error outside one (or when the
 * first argument is not self, the req or res object of class cls). */
struct ks_lua_req *ks_lua_current(lua_State *L, const char *cls, const void *self);

/* Output (response.c).  start/finish write to the client with the send
 * deadline, outside the Lua clock; 0 or -1 when the client is gone. */
int ks_lua_res_finish(struct ks_lua_req *q);
/* Answer with an error envelope through res (405 from the router). */
void ks_lua_res_error(struct ks_lua_req *q, int status, const char *message, const char *hname,
                      const char *hvalue);
/* Whether q->res may still change. */
bool ks_lua_res_open(const struct ks_lua_req *q);

/* End the request from C inside a Lua call (abort_status set). */
int ks_lua_abort(lua_State *L, struct ks_lua_req *q, int status, const char *why);

#endif
