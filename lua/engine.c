/*
 * engine.c: a tenant's Lua state: building it, the memory cap, the time
 * limit and protected calls (see engine.h).
 */
#include <config.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/api.h"
#include "lua/engine.h"

/* The hook runs every HOOK_COUNT instructions: a clock read per few
 * microseconds of Lua, well under the millisecond the timeout is set in. */
#define HOOK_COUNT 1000

const char *ks_lua_result_name(enum ks_lua_result r)
{
    switch (r) {
    case KS_LUA_OK: return "ok";
    case KS_LUA_ERR_RUNTIME: return "runtime";
    case KS_LUA_ERR_TIMEOUT: return "timeout";
    case KS_LUA_ERR_MEMORY: return "memory";
    }
    return "?";
}

/* ---- the counting allocator --------------------------------------------------- */

static void count_hook(lua_State *L, lua_Debug *ar);

/* Refuse every growth from now on and fail every instruction
 * (lua_sethook may be called from anywhere), so that a script that
 * catches the memory error cannot go on. */
static void latch_out_of_memory(struct ks_lua_mem *m)
{
    if (m->breached)
        return;
    m->breached = true;
    m->latched_size = m->refused_size;
    if (m->L != NULL)
        lua_sethook(m->L, count_hook, LUA_MASKCOUNT, 1);
}

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct ks_lua_mem *m = ud;
    if (ptr == NULL)
        osize = 0;              /* osize is then the type of the new object */
    if (nsize == 0) {
        free(ptr);
        m->used -= osize;
        return NULL;
    }
    if (nsize > osize) {
        /* Lua answers a refusal with a full collection (which only frees
         * or shrinks) and asks again for the same block; refused again,
         * it raises "not enough memory".  lauxlib's buffers do not ask
         * again: they raise "not enough memory for buffer allocation".
         * So the next growth after a refusal means the script is out of
         * memory unless it is that retry and it succeeds.  (The sandbox's
         * guards of string, table and utf8 catch a buffer's refusal and
         * ask ks_lua_collect_for_retry whether to undo the latch.) */
        bool retry = m->refusal_pending && m->refused_ptr == ptr && m->refused_size == nsize;
        if (m->refusal_pending && !retry)
            latch_out_of_memory(m);
        if (m->breached || m->used + (nsize - osize) > m->limit) {
            m->refusals++;
            if (retry)
                latch_out_of_memory(m);
            m->refusal_pending = true;
            m->refused_ptr = ptr;
            m->refused_size = nsize;
            return NULL;
        }
    }
    void *np = realloc(ptr, nsize);
    if (np == NULL)
        return NULL;
    m->used = m->used - osize + nsize;
    if (m->used > m->peak)
        m->peak = m->used;
    if (nsize > osize)
        m->refusal_pending = false;
    return np;
}

/* ---- time ---------------------------------------------------------------------- */

static void store_since(struct ks_lua *lx, int64_t v)
{
    if (lx->score != NULL)
        atomic_store_explicit(&lx->score->lua_since_ms, v, memory_order_relaxed);
}

/* "source:line: " of the Lua function at the stack level, or of the
 * nearest one above it (C functions have no line); "" if there is none.
 * lua_getinfo with "Sl" allocates nothing, so this works out of memory. */
static void lua_where(lua_State *L, int level, char *out, size_t cap)
{
    lua_Debug ar;
    out[0] = '\0';
    for (; lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(out, cap, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
}

/* Past the deadline, every later check fails too, and the hook then runs
 * on every instruction: an error caught by pcall (whatever its value) is
 * raised again by the very next instruction of the catching code, up to
 * the C boundary.  A __gc finalizer would run with hooks off, which is why
 * the sandbox refuses __gc metatables; the master's watchdog remains the
 * backstop for time spent inside C functions.  level: the stack level
 * of the code to blame (0 in the hook: the function running). */
static void check_limits(lua_State *L, int level)
{
    struct ks_lua *lx = ks_lua_of(L);
    char what[96];
    if (lx->mem.breached) {
        snprintf(what, sizeof(what), "not enough memory");
    } else {
        if (!lx->breached) {
            if (ks_now_ms() < lx->deadline_ms)
                return;
            lx->breached = true;
            lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
        }
        snprintf(what, sizeof(what), "timeout: the call ran longer than %d ms (lua_limits.timeout)",
                 (int)lx->timeout_ms);
    }
    char where[sizeof(lx->breach_where)];
    lua_where(L, level, where, sizeof(where));
    if (lx->breach_where[0] == '\0')
        snprintf(lx->breach_where, sizeof(lx->breach_where), "%s", where);
    lua_pushfstring(L, "%s%s", where, what);    /* (luaL_error would add level 1's position) */
    lua_error(L);
}

size_t ks_lua_memory_left(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    const struct ks_lua_mem *m = ud;
    return m->breached || m->used >= m->limit ? 0 : m->limit - m->used;
}

bool ks_lua_collect_for_retry(lua_State *L, uint64_t refusals)
{
    struct ks_lua *lx = ks_lua_of(L);
    struct ks_lua_mem *m = &lx->mem;
    if (m->refusals == refusals || (!m->breached && !m->refusal_pending))
        return false;           /* it failed for another reason, or after a refusal served */
    /* The first block refused in the call: once latched, every later
     * growth (the error message's) was refused too.  The buffer was freed
     * when the error was raised, so the retry needs all of it again. */
    size_t need = m->breached ? m->latched_size : m->refused_size;
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (need > m->limit || m->used > m->limit - need) {
        latch_out_of_memory(m); /* live data: out of memory for good */
        return false;
    }
    m->breached = false;
    m->refusal_pending = false;
    if (!lx->breached)          /* (a latched deadline keeps its hook) */
        lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
    return true;
}

void ks_lua_check_limits(lua_State *L)
{
    check_limits(L, 1);
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    check_limits(L, 0);
}

void ks_lua_pause(struct ks_lua *lx, struct ks_lua_pause *p)
{
    int64_t now = ks_now_ms();
    p->was_paused = lx->paused;
    p->left_ms = lx->deadline_ms - now;
    p->spent_ms = now - lx->since_ms;
    lx->paused = true;
    store_since(lx, 0);
}

void ks_lua_resume(struct ks_lua *lx, const struct ks_lua_pause *p)
{
    int64_t now = ks_now_ms();
    lx->paused = p->was_paused;
    if (lx->paused)
        return;
    lx->deadline_ms = now + p->left_ms;
    lx->since_ms = now - p->spent_ms;
    store_since(lx, lx->since_ms);
}

/* The message handler: message and traceback, without calling any
 * metamethod of the error object (it may be a table with a __tostring
 * that loops). */
static int message_handler(lua_State *L)
{
    const char *msg;
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER) {
        msg = lua_tostring(L, 1);
    } else {
        /* error() adds no position to a value that is not a string */
        char where[KS_LUA_WHERE_MAX];
        lua_where(L, 1, where, sizeof(where));
        msg = lua_pushfstring(L, "%s(error object is a %s value)", where, luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

enum ks_lua_result ks_lua_call(struct ks_lua *lx, int nargs, int nresults, char *msg,
                               size_t msglen)
{
    lua_State *L = lx->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);

    /* a call from C outside any Lua (a request, a response hook called
     * from the proxy while the request's call waits in I/O) gets its own
     * deadline; a call from inside Lua shares the caller's */
    bool fresh = lx->depth == 0 || lx->paused;
    int64_t saved_deadline = lx->deadline_ms, saved_since = lx->since_ms;
    bool saved_paused = lx->paused;
    if (fresh) {
        int64_t now = ks_now_ms();
        lx->deadline_ms = now + lx->timeout_ms;
        lx->since_ms = now;
        lx->paused = false;
        store_since(lx, now);
    }
    uint64_t refusals = lx->mem.refusals;
    lx->depth++;
    int status = lua_pcall(L, nargs, nresults, base);
    lx->depth--;
    if (fresh) {
        lx->deadline_ms = saved_deadline;
        lx->since_ms = saved_since;
        lx->paused = saved_paused;
        store_since(lx, lx->depth > 0 && !lx->paused ? lx->since_ms : 0);
    }

    /* Out of memory for good (latched) is memory; then a deadline that
     * passed is a timeout, even where the cap refused a block on the way
     * that a collection then found room for.  Otherwise a call that failed
     * after a refusal failed for want of memory, whatever the error says
     * (lauxlib's buffers turn a refusal into an ordinary error: "not
     * enough memory for buffer allocation"). */
    enum ks_lua_result r = KS_LUA_OK;
    if (status == LUA_ERRMEM || lx->mem.breached)
        r = KS_LUA_ERR_MEMORY;
    else if (lx->breached)
        r = KS_LUA_ERR_TIMEOUT;
    else if (status != LUA_OK && lx->mem.refusals != refusals)
        r = KS_LUA_ERR_MEMORY;
    else if (status != LUA_OK)
        r = KS_LUA_ERR_RUNTIME;
    if (status != LUA_OK) {
        if (msg != NULL) {
            const char *m = lua_tostring(L, -1);
            snprintf(msg, msglen, "%s", m != NULL ? m : "(no message)");
        }
        lua_settop(L, base - 1);
    } else {
        if (r != KS_LUA_OK && msg != NULL)
            snprintf(msg, msglen, "%s", r == KS_LUA_ERR_TIMEOUT ? "timeout" : "not enough memory");
        lua_remove(L, base);
    }
    if (r == KS_LUA_ERR_TIMEOUT || r == KS_LUA_ERR_MEMORY)
        lx->dead = true;
    if (r != KS_LUA_OK && status == LUA_OK) {
        /* the script caught the error and returned: its results are void */
        lua_settop(L, base - 1);
    }
    return r;
}

void ks_lua_check_phase(lua_State *L, unsigned phases, const char *what)
{
    struct ks_lua *lx = ks_lua_of(L);
    if ((lx->phase & phases) != 0)
        return;
    const char *where = lx->phase == KS_LUA_LOAD         ? "at script load"
                        : lx->phase == KS_LUA_MIDDLEWARE ? "in middleware"
                        : lx->phase == KS_LUA_HANDLER    ? "in a handler"
                        : lx->phase == KS_LUA_RESPONSE   ? "in a response hook"
                                                         : "outside a request";
    luaL_error(L, "%s is not available %s", what, where);
}

void ks_lua_load_error(lua_State *L, const char *msg)
{
    struct ks_lua *lx = ks_lua_of(L);
    luaL_where(L, 1);
    const char *where = lua_tostring(L, -1);
    size_t n = strlen(where) + strlen(msg) + 1;
    char *e = malloc(n);
    char **v = realloc(lx->load_errors, (lx->nload_errors + 1) * sizeof(char *));
    if (v != NULL)
        lx->load_errors = v;
    if (e != NULL && v != NULL) {
        snprintf(e, n, "%s%s", where, msg);
        lx->load_errors[lx->nload_errors++] = e;
    } else {
        free(e);
    }
    lua_pop(L, 1);
}

uint32_t ks_lua_upstream_index(const struct ks_lua *lx, const char *name)
{
    for (size_t i = 0; i < lx->nupstreams; i++)
        if (strcmp(lx->upstreams[i], name) == 0)
            return (uint32_t)i;
    return KS_ROUTE_NO_UPSTREAM;
}

/* ---- building ---------------------------------------------------------------- */

/* Everything that can raise while the state is built runs in here,
 * protected. */
static int open_all(lua_State *L)
{
    lua_pushcfunction(L, ks_lua_open_sandbox);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, ks_lua_open_router);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, ks_lua_open_request);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, ks_lua_open_response);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, ks_lua_open_http);
    lua_call(L, 0, 0);
    ks_lua_seal_globals(L);
    return 0;
}

static char **copy_strings(const char *const *v, size_t n, bool *oom)
{
    char **c = calloc(n ? n : 1, sizeof(char *));
    if (c == NULL) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if ((c[i] = strdup(v[i])) == NULL)
            *oom = true;
    return c;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

struct ks_lua *ks_lua_new(const struct ks_lua_tenant_info *ti, struct ks_score *score, char *err,
                          size_t errlen)
{
    struct ks_lua *lx = calloc(1, sizeof(*lx));
    if (lx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bool oom = false;
    ks_strlcpy(lx->tenant, ti->tenant, sizeof(lx->tenant));
    lx->script = strdup(ti->script != NULL ? ti->script : "");
    oom |= lx->script == NULL;
    lx->upstreams = copy_strings(ti->upstreams, ti->nupstreams, &oom);
    lx->nupstreams = ti->nupstreams;
    lx->allowed_env = copy_strings(ti->allowed_env, ti->nallowed_env, &oom);
    lx->nallowed_env = ti->nallowed_env;
    lx->timeout_ms = ti->timeout_ms > 0 ? ti->timeout_ms : 50;
    lx->dynamic_routing = ti->dynamic_routing;
    lx->quiet = ti->quiet;
    lx->score = score;
    lx->mem.limit = ti->memory;
    lx->ref_req = lx->ref_res = lx->ref_next = lx->ref_groupmt = LUA_NOREF;
    ks_router_init(&lx->router, ti->max_routes, ti->max_middlewares);
    if (!oom)
        lx->L = lua_newstate(counting_alloc, &lx->mem);
    if (lx->L == NULL) {
        snprintf(err, errlen, "out of memory creating the Lua state (lua_limits.memory is %llu bytes)",
                 (unsigned long long)lx->mem.limit);
        ks_lua_free(lx);
        return NULL;
    }
    lua_State *L = lx->L;
    lx->mem.L = L;
    *(struct ks_lua **)lua_getextraspace(L) = lx;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_COUNT);

    char msg[KS_LUA_MSG_MAX];
    lx->phase = KS_LUA_LOAD;
    lua_pushcfunction(L, open_all);
    enum ks_lua_result r = ks_lua_call(lx, 0, 0, msg, sizeof(msg));
    if (r != KS_LUA_OK) {
        snprintf(err, errlen, "cannot set up the Lua state: %s", msg);
        ks_lua_free(lx);
        return NULL;
    }
    const char *script = lx->script[0] != '\0' ? lx->script : "(no script)";
    if (ti->source != NULL && ti->source_len > 0) {
        /* "@path": messages say path:line; mode "t": bytecode is refused */
        lua_pushfstring(L, "@%s", script);
        const char *chunkname = lua_tostring(L, -1);
        int st = luaL_loadbufferx(L, ti->source, ti->source_len, chunkname, "t");
        lua_remove(L, -2);
        if (st != LUA_OK) {
            snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot load");
            ks_lua_free(lx);
            return NULL;
        }
        r = ks_lua_call(lx, 0, 0, msg, sizeof(msg));
        if (r != KS_LUA_OK) {
            /* "path:line: " where the limit struck, if known */
            char where[KS_LUA_WHERE_MAX + 2];
            if (lx->breach_where[0] != '\0')
                snprintf(where, sizeof(where), "%s", lx->breach_where);
            else
                snprintf(where, sizeof(where), "%s: ", script);
            if (r == KS_LUA_ERR_TIMEOUT)
                snprintf(err, errlen, "%sthe script's top level ran longer than %lld ms "
                         "(lua_limits.timeout)", where, (long long)lx->timeout_ms);
            else if (r == KS_LUA_ERR_MEMORY)
                snprintf(err, errlen, "%sthe script's top level needs more than %llu bytes "
                         "(lua_limits.memory)", where, (unsigned long long)lx->mem.limit);
            else {
                /* the first line: "path:line: message" (the traceback is
                 * for the logs of request-time errors) */
                char *nl = strchr(msg, '\n');
                if (nl != NULL)
                    *nl = '\0';
                snprintf(err, errlen, "%s", msg);
            }
            ks_lua_free(lx);
            return NULL;
        }
    }
    if (lx->nload_errors > 0) {
        size_t pos = 0;
        err[0] = '\0';
        for (size_t i = 0; i < lx->nload_errors; i++)
            if (ks_appendf(err, errlen, &pos, "%s%s", i ? "\n" : "", lx->load_errors[i]) < 0)
                break;
        ks_lua_free(lx);
        return NULL;
    }
    lx->phase = KS_LUA_IDLE;
    /* the load's garbage is not the first request's to collect */
    lua_gc(L, LUA_GCCOLLECT, 0);
    return lx;
}

void ks_lua_free(struct ks_lua *lx)
{
    if (lx == NULL)
        return;
    if (lx->L != NULL)
        lua_close(lx->L);
    ks_router_free(&lx->router);
    free(lx->on_response);
    for (size_t i = 0; i < lx->ngroups; i++) {
        free(lx->groups[i].prefix);
        free(lx->groups[i].mw);
    }
    free_strings(lx->load_errors, lx->nload_errors);
    free_strings(lx->upstreams, lx->nupstreams);
    free_strings(lx->allowed_env, lx->nallowed_env);
    free(lx->script);
    free(lx);
}

/* ---- a JSON-only state ------------------------------------------------------------ */

static int open_json(lua_State *L)
{
    luaL_requiref(L, "json", luaopen_cjson, 1);
    return 0;
}

lua_State *ks_lua_json_state(size_t memory)
{
    struct ks_lua_mem *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->limit = memory;
    lua_State *L = lua_newstate(counting_alloc, m);
    if (L == NULL) {
        free(m);
        return NULL;
    }
    *(struct ks_lua **)lua_getextraspace(L) = NULL;
    lua_pushcfunction(L, open_json);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        ks_lua_json_close(L);
        return NULL;
    }
    return L;
}

void ks_lua_json_close(lua_State *L)
{
    if (L == NULL)
        return;
    void *ud = NULL;
    lua_getallocf(L, &ud);
    lua_close(L);
    free(ud);
}
