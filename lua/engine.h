/*
 * engine.h: one tenant's Lua state (DESIGN.md, "Lua").
 *
 * A worker holds one state per tenant that has a script (lua/tenants.c);
 * the master builds a scratch one per script to check it at every load
 * (master/luacheck.c).  A state is a sandbox (lua/sandbox.c) with a
 * counting allocator that refuses to grow past lua_limits.memory and an
 * instruction-count hook that fails every call running past its deadline.
 * Both limits latch: once a call has timed out or run out of memory, every
 * further instruction (timeout) or allocation (memory) of that state
 * fails, so no pcall loop, odd error object or handler can resume the
 * script; the owner discards the state at the end of the call and builds
 * a fresh one for the next request.
 *
 * This header knows nothing of workers or masters (both include it);
 * worker-side glue is in lua/handle.h.
 */
#ifndef KS_LUA_ENGINE_H
#define KS_LUA_ENGINE_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/router.h"
#include "shm/shm.h"

#define KS_LUA_NAME_MAX 65          /* tenant, upstream and handler names, with NUL */
#define KS_LUA_MSG_MAX 2048         /* an error message with its traceback */
#define KS_LUA_WHERE_MAX 96         /* "source:line: " (Lua shortens sources to 60) */
#define KS_LUA_MAX_GROUPS 256

/* What a state is built from (a worker fills it from the route table, the
 * master from the configuration). */
struct ks_lua_tenant_info {
    const char *tenant;
    const char *script;             /* path, for messages; "" = no script (runtime routes only) */
    const char *source;
    size_t source_len;
    int64_t timeout_ms;
    uint64_t memory;
    int max_routes, max_middlewares;
    const char *const *upstreams;   /* names, in the tenant's order */
    size_t nupstreams;
    const char *const *allowed_env;
    size_t nallowed_env;
    bool dynamic_routing;
    bool quiet;                     /* the master's check: log() writes nothing */
};

/* Where Lua is running, for the calls that only make sense in some. */
enum ks_lua_phase {
    KS_LUA_IDLE = 0,
    KS_LUA_LOAD = 1 << 0,           /* the script's top level */
    KS_LUA_MIDDLEWARE = 1 << 1,
    KS_LUA_HANDLER = 1 << 2,
    KS_LUA_RESPONSE = 1 << 3,       /* router:on_response hooks */
};
#define KS_LUA_REQUEST_PHASES (KS_LUA_MIDDLEWARE | KS_LUA_HANDLER | KS_LUA_RESPONSE)

/* How a call ended. */
enum ks_lua_result {
    KS_LUA_OK = 0,
    KS_LUA_ERR_RUNTIME,             /* an error raised by the script (or a bad argument) */
    KS_LUA_ERR_TIMEOUT,             /* ran past lua_limits.timeout */
    KS_LUA_ERR_MEMORY,              /* hit lua_limits.memory */
};
const char *ks_lua_result_name(enum ks_lua_result r);

/* A runtime route change (router:add_route / delete_route at request
 * time) goes to whoever owns the state; see lua/routespec.h. */
struct ks_route_spec;
typedef int (*ks_lua_runtime_fn)(void *arg, const struct ks_route_spec *spec, bool del,
                                 char *id_out, size_t idlen, char *err, size_t errlen);

/* The counting allocator's books (the allocator is the only writer, but
 * for ks_lua_collect_for_retry).  The cap latches: once a refusal stands
 * (Lua's retry after an emergency collection failed too, or the caller
 * gave up: lauxlib's buffers do), every growth is refused until the state
 * is closed, unless the sandbox's guard of the library call that gave up
 * finds room for the block after a collection. */
struct ks_lua_mem {
    lua_State *L;                   /* to latch the hook too (NULL: no hook) */
    size_t used, limit, peak;
    uint64_t refusals;              /* growths refused by the cap, ever */
    bool breached;
    bool refusal_pending;           /* the last growth asked for was refused: */
    const void *refused_ptr;        /* this block, */
    size_t refused_size;            /* to this size */
    size_t latched_size;            /* the size refused when the cap latched */
};

/* A route group (router:create_group): a prefix and middleware. */
struct ks_lua_group {
    char *prefix;                   /* without a trailing "/"; "" for none */
    int *mw;
    size_t nmw;
};

struct ks_lua {
    lua_State *L;
    char tenant[KS_LUA_NAME_MAX];
    char *script;
    int64_t timeout_ms;
    bool dynamic_routing;
    bool quiet;
    char **upstreams;               /* names, for upstream = "name" */
    size_t nupstreams;
    char **allowed_env;
    size_t nallowed_env;

    struct ks_lua_mem mem;

    /* time: the deadline of the current call; the hook latches */
    int64_t deadline_ms;
    int64_t since_ms;               /* start of the current call, minus pauses */
    int depth;                      /* nested entries (next(), hooks) */
    bool paused;                    /* inside blocking I/O called from Lua */
    bool breached;
    char breach_where[KS_LUA_WHERE_MAX];  /* "path:line: " where a limit first struck */
    struct ks_score *score;         /* lua_since_ms for the watchdog; NULL in the master */

    /* what the script registered */
    struct ks_router router;
    int *on_response;               /* references, in order */
    size_t non_response;
    struct ks_lua_group groups[KS_LUA_MAX_GROUPS];
    size_t ngroups;
    char **load_errors;             /* registrations refused while loading */
    size_t nload_errors;

    /* the request being handled (lua/handle.c), NULL between requests;
     * stage is the chain position of the running middleware.  pcall and
     * xpcall put phase and stage back when they catch an error, so that
     * a middleware catching pcall(next) runs as itself again. */
    enum ks_lua_phase phase;
    size_t stage;
    void *req;
    ks_lua_runtime_fn runtime;
    void *runtime_arg;
    int ref_req, ref_res, ref_next, ref_groupmt;
    const void *req_self, *res_self;  /* the req and res userdata */

    /* owner's bookkeeping */
    bool dead;                      /* timed out or ran out of memory: discard */
    uint64_t inputs;                /* hash of what it was built from (lua/tenants.c) */
};

/* Build a state and run the script's top level.  NULL with err filled
 * ("script:line: message", one per line) when the script
 * does not compile, fails, times out, runs out of memory or has
 * registrations refused.  score may be NULL. */
struct ks_lua *ks_lua_new(const struct ks_lua_tenant_info *ti, struct ks_score *score, char *err,
                          size_t errlen);
void ks_lua_free(struct ks_lua *lx);

/* The state behind L (stored in its extra space). */
static inline struct ks_lua *ks_lua_of(lua_State *L)
{
    return *(struct ks_lua **)lua_getextraspace(L);
}

/* Call the function below nargs arguments on the stack, protected, under
 * the state's deadline (a fresh one when nothing is running, or when the
 * current call is paused in I/O), with lua_since_ms kept for the watchdog.
 * On error msg receives the message and traceback, and the state is marked
 * dead for a timeout or out-of-memory.  Leaves nresults on the stack on
 * success, nothing on error. */
enum ks_lua_result ks_lua_call(struct ks_lua *lx, int nargs, int nresults, char *msg,
                               size_t msglen);

/* Blocking I/O from inside a Lua call (next() reaching the proxy,
 * http.request, reading the body, streaming output) does not count against
 * the timeout, and the watchdog does not see it as time in Lua. */
struct ks_lua_pause {
    int64_t left_ms, spent_ms;
    bool was_paused;
};
/* What the instruction-count hook does: raise the timeout or memory error
 * once the call is past its deadline or out of memory.  Also called by
 * the wrappers of C functions that can run long without a Lua
 * instruction in between. */
void ks_lua_check_limits(lua_State *L);
/* Bytes the state may still allocate under its memory cap. */
size_t ks_lua_memory_left(lua_State *L);
/* A call of a library function that failed after the cap refused it a
 * block (refusals: lx->mem.refusals before the call): true if, after a
 * full collection, that block fits, in which case the refusal and its
 * latch are undone and the caller may call once more.  Lua does that for
 * its own allocations; lauxlib's buffers do not ask again. */
bool ks_lua_collect_for_retry(lua_State *L, uint64_t refusals);

void ks_lua_pause(struct ks_lua *lx, struct ks_lua_pause *p);
void ks_lua_resume(struct ks_lua *lx, const struct ks_lua_pause *p);

/* Raise a Lua error unless the state is in one of the phases (a mask);
 * what names the call in the message. */
void ks_lua_check_phase(lua_State *L, unsigned phases, const char *what);

/* A registration refused while loading: remembered with the script line so
 * that the load fails with every reason, while the call itself returns
 * {ok = false, error = msg} as at run time. */
void ks_lua_load_error(lua_State *L, const char *msg);

/* Tenant-local index of an upstream name, or KS_ROUTE_NO_UPSTREAM. */
uint32_t ks_lua_upstream_index(const struct ks_lua *lx, const char *name);

/* A small scratch state with only the json library (and a memory cap)
 * for C code that must decode JSON (the admin API); NULL on failure.
 * Close it with ks_lua_json_close. */
lua_State *ks_lua_json_state(size_t memory);
void ks_lua_json_close(lua_State *L);

#endif
