/*
 * sandbox.c: what a script can reach.  Base (without dofile and loadfile,
 * load forced to text, setmetatable without __gc, print to the error log),
 * string (without dump), table, math and utf8; json (lua-cjson), log and
 * keystone (time, clock, date, now, env).  Never io, os, package, debug,
 * require or coroutine.  At the end every API table becomes a read-only
 * view (ks_lua_seal_globals).
 */
#include <config.h>

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/api.h"

#define SEALED_KEY "ks.sealed"      /* registry: weak set of read-only views */
#define MOVE_MAX ((lua_Integer)1 << 16)     /* about 3 ms of table.move */
#define JSON_DEPTH_MAX 1000

/* ---- base library, trimmed ------------------------------------------------------ */

/* The wrappers below check or refuse arguments, then call the function
 * they replace (their upvalue) with all of them; its results are theirs. */
static int call_wrapped(lua_State *L, int nresults)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, nresults);
    return lua_gettop(L);
}

/* The same for a wrapped function without upvalues, run in the wrapper's
 * own frame (see l_guarded). */
static int call_in_frame(lua_State *L)
{
    return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

/* Whether calling the wrapped function again does what one call would
 * have done: no argument can run Lua code, as a callback (gsub's
 * replacement function) or through a metamethod (a table with a
 * metatable, a userdata).  Only for functions that do not change their
 * arguments (the buffered ones of guard_library's callers). */
static bool runs_no_lua(lua_State *L)
{
    for (int i = lua_gettop(L); i >= 1; i--) {
        int t = lua_type(L, i);
        if (t == LUA_TTABLE && lua_getmetatable(L, i)) {
            lua_pop(L, 1);
            return false;
        }
        if (t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TLIGHTUSERDATA || t == LUA_TTHREAD)
            return false;
    }
    return true;
}

/* call_in_frame, for a function that only reads its arguments, with
 * the second chance Lua gives its own allocations: a lauxlib buffer
 * (string.rep, string.format, table.concat, gsub ...) that the memory cap
 * refused gets a full collection and, if the block then fits, one more
 * try; refused again, the script is out of memory.  The first call is
 * protected, to catch the refusal, which costs the error messages their
 * names ("bad argument #1 to '?'"), so a call that failed otherwise is
 * simply made again, in the frame: it fails the same way, named.  It ran
 * no Lua code (runs_no_lua), so the repetition is not seen. */
static int call_retried(lua_State *L)
{
    if (!runs_no_lua(L))
        return call_in_frame(L);
    int n = lua_gettop(L);
    uint64_t refusals = ks_lua_of(L)->mem.refusals;
    luaL_checkstack(L, n + 1, "too many arguments");
    lua_pushvalue(L, lua_upvalueindex(1));
    for (int i = 1; i <= n; i++)
        lua_pushvalue(L, i);
    if (lua_pcall(L, n, LUA_MULTRET, 0) == LUA_OK)
        return lua_gettop(L) - n;
    lua_settop(L, n);
    ks_lua_collect_for_retry(L, refusals);
    ks_lua_check_limits(L);     /* still out of memory (or past the deadline): raised here */
    return call_in_frame(L);
}

/* load() and collectgarbage() do much work in C for the few instructions
 * around them (compiling megabytes of source, a full collection of a big
 * heap): the count hook alone would let a loop of them run on into the
 * watchdog, so they check the limits before and after, like the guarded
 * libraries below. */
static int l_load(lua_State *L)
{
    ks_lua_check_limits(L);
    int n = lua_gettop(L);
    const char *mode = luaL_optstring(L, 3, "t");
    if (strcmp(mode, "t") != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "load: mode \"%s\" is not allowed (only text chunks: mode \"t\")", mode);
        return 2;
    }
    lua_settop(L, 4);           /* stable indexes below, whatever was passed */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    if (n >= 4)
        lua_pushvalue(L, 4);    /* an explicit env, even nil */
    lua_call(L, n >= 4 ? 4 : 3, LUA_MULTRET);
    ks_lua_check_limits(L);
    return lua_gettop(L) - 4;
}

static int l_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed "
                                 "(finalizers would run outside the time limit)");
        lua_pop(L, 1);
    }
    return call_wrapped(L, 1);
}

/* A caught error leaves the request where the pcall was (struct ks_lua). */
struct caught_at {
    enum ks_lua_phase phase;
    size_t stage;
};

static struct caught_at catch_point(lua_State *L)
{
    const struct ks_lua *lx = ks_lua_of(L);
    return (struct caught_at){ lx->phase, lx->stage };
}

static void caught(lua_State *L, struct caught_at at)
{
    struct ks_lua *lx = ks_lua_of(L);
    lx->phase = at.phase;
    lx->stage = at.stage;
}

static int l_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    struct caught_at at = catch_point(L);
    int ok = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0) == LUA_OK;
    if (!ok)
        caught(L, at);
    luaL_checkstack(L, 1, "too many results from pcall");
    lua_pushboolean(L, ok);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* xpcall(f, handler, ...): Lua calls a message handler before unwinding,
 * and when the error came from the count hook it does so with hooks still
 * off (they are restored only by the pcall that catches the error), so a
 * handler that loops could never be stopped.  Here the handler runs after
 * unwinding, hooks on; without the debug library a script cannot tell the
 * difference. */
static int l_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_checkany(L, 1);
    /* A C function is only sure of LUA_MINSTACK free slots, and the copies
     * of f and its arguments below take n - 1: grow the stack first (the
     * true in front of the results takes one more, checked after). */
    luaL_checkstack(L, n, "too many arguments to xpcall");
    lua_pushvalue(L, 1);
    for (int i = 3; i <= n; i++)
        lua_pushvalue(L, i);
    struct caught_at at = catch_point(L);
    if (lua_pcall(L, n - 2, LUA_MULTRET, 0) == LUA_OK) {
        luaL_checkstack(L, 1, "too many results from xpcall");
        lua_pushboolean(L, 1);
        lua_insert(L, n + 1);
        return lua_gettop(L) - n;
    }
    caught(L, at);
    lua_pushvalue(L, 2);
    lua_insert(L, -2);
    lua_pcall(L, 1, 1, 0);      /* the handler's result, or its own error */
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

static bool is_sealed(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, SEALED_KEY);
    lua_pushvalue(L, idx);
    bool sealed = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return sealed;
}

static int l_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (is_sealed(L, 1))
        return luaL_error(L, "rawset: attempt to modify a read-only table");
    return call_wrapped(L, 1);
}

static int l_collectgarbage(lua_State *L)
{
    static const char *const allowed[] = { "collect", "count", "step", "isrunning", NULL };
    luaL_checkoption(L, 1, "collect", allowed);
    ks_lua_check_limits(L);     /* (see l_load) */
    int nresults = call_wrapped(L, LUA_MULTRET);
    ks_lua_check_limits(L);
    return nresults;
}

/* A script's text goes to the log as one line of printable text: line
 * breaks become spaces and other control bytes (a NUL, a terminal's ESC)
 * \xHH; a line holds at most about 2000 bytes (keystoned/log.c). */
static void write_log(lua_State *L, enum ks_log_level level, const char *text, size_t len)
{
    struct ks_lua *lx = ks_lua_of(L);
    if (lx->quiet || level > ks_log_get_level())
        return;
    char line[2048];
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < sizeof(line); i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n' || c == '\r')
            line[n++] = ' ';
        else if ((c < 0x20 && c != '\t') || c == 0x7f)
            n += (size_t)snprintf(line + n, sizeof(line) - n, "\\x%02x", c);
        else
            line[n++] = (char)c;
    }
    ks_log(level, "lua-log", "tenant %s: %.*s", lx->tenant, (int)n, line);
}

/* Log the arguments from first on, as print would show them,
 * tab-separated.  Joined in a buffer of the line's size: what does not
 * fit in a line is never copied (a Lua buffer would copy all of it, and
 * could run into the memory cap for a line that is then cut anyway). */
static int log_args(lua_State *L, enum ks_log_level level, int first)
{
    char text[2048];
    size_t n = 0;
    int top = lua_gettop(L);
    for (int i = first; i <= top && n < sizeof(text); i++) {
        if (i > first)
            text[n++] = '\t';
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (len > sizeof(text) - n)
            len = sizeof(text) - n;
        memcpy(text + n, s, len);
        n += len;
        lua_pop(L, 1);
    }
    write_log(L, level, text, n);
    return 0;
}

static int l_print(lua_State *L)
{
    return log_args(L, KS_LOG_INFO, 1);
}

static int l_log(lua_State *L)
{
    static const char *const levels[] = { "error", "warn", "info", "debug", NULL };
    int level = luaL_checkoption(L, 1, NULL, levels);
    return log_args(L, (enum ks_log_level)level, 2);
}

/* ---- string and table guards ------------------------------------------------------ */

/* string.rep("", 1e15) would loop in C for ever without allocating; the
 * limits are checked first because the count hook does not see time spent
 * in C, so a loop of such calls would otherwise run far past them. */
static int l_rep(lua_State *L)
{
    ks_lua_check_limits(L);
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (l == 0 && lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    return call_retried(L);
}

/* table.move over 2^60 nil slots would loop in C for ever too */
static int l_move(lua_State *L)
{
    ks_lua_check_limits(L);
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f && (lua_Unsigned)e - (lua_Unsigned)f >= (lua_Unsigned)MOVE_MAX)
        return luaL_error(L, "table.move: more than %d elements", (int)MOVE_MAX);
    return call_in_frame(L);
}

/* json.encode_max_depth and json.decode_max_depth: cjson recurses on the
 * C stack once per level, so a depth of a million lets a deep document
 * overflow it (a dead worker, not a Lua error).  Its default, 1000, is
 * also the most a script may set. */
static int l_json_depth(lua_State *L)
{
    if (!lua_isnoneornil(L, 1) && luaL_checkinteger(L, 1) > JSON_DEPTH_MAX)
        return luaL_error(L, "json: a nesting depth over %d is not allowed", JSON_DEPTH_MAX);
    return call_wrapped(L, LUA_MULTRET);
}

/* json.encode builds its text in a buffer of its own, malloc'd outside
 * the Lua memory cap, before handing it to Lua: a table holding the same
 * 1 MB string 500 times costs the script a few kB but would cost the
 * worker 500 MB.  So the value is measured first, bounding the text from
 * above, and refused when that is more than the script has left, even
 * after a full collection.  The walk stops as soon as the bound passes
 * what is left (every value adds at least a byte, so it visits at most
 * that many) and checks the time limit as it goes; a depth past the cap
 * is left for cjson to refuse. */
struct json_measure {
    size_t bound, room;
    unsigned visits;
};

static bool json_measure_string(struct json_measure *jm, lua_State *L, int idx)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)lua_tolstring(L, idx, &n);
    jm->bound += 2;
    for (size_t i = 0; i < n && jm->bound <= jm->room; i++)
        jm->bound += s[i] < 0x20 || s[i] == 0x7f ? 6 : s[i] == '"' || s[i] == '\\' || s[i] == '/' ? 2 : 1;
    return jm->bound <= jm->room;
}

static bool json_measure(struct json_measure *jm, lua_State *L, int idx, int depth)
{
    if ((++jm->visits & 4095) == 0)
        ks_lua_check_limits(L);
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        return json_measure_string(jm, L, idx);
    case LUA_TNUMBER:
        jm->bound += 32;
        break;
    case LUA_TTABLE:
        if (depth > JSON_DEPTH_MAX)
            return true;
        luaL_checkstack(L, 3, "json.encode: nesting too deep");
        jm->bound += 2;
        lua_pushnil(L);
        while (jm->bound <= jm->room && lua_next(L, idx) != 0) {
            jm->bound += 2;     /* a comma and a colon */
            lua_pushvalue(L, -2);       /* measuring a number key must not convert it */
            int key = lua_type(L, -1);
            bool fits = (key != LUA_TSTRING && key != LUA_TNUMBER) || json_measure_string(jm, L, -1);
            fits = fits && json_measure(jm, L, lua_absindex(L, -2), depth + 1);
            lua_pop(L, 2);
            if (!fits) {
                lua_pop(L, 1);
                return false;
            }
        }
        break;
    default:                    /* nil, booleans, json.null; cjson refuses the rest */
        jm->bound += 5;
    }
    return jm->bound <= jm->room;
}

static int l_json_decode(lua_State *L)
{
    ks_lua_check_limits(L);
    return call_wrapped(L, 1);
}

static int l_json_encode(lua_State *L)
{
    ks_lua_check_limits(L);
    luaL_checkany(L, 1);
    struct json_measure jm = { 0, ks_lua_memory_left(L), 0 };
    bool fits = json_measure(&jm, L, 1, 0);
    if (!fits) {
        /* what is left does not count the garbage yet to be collected */
        lua_gc(L, LUA_GCCOLLECT, 0);
        jm = (struct json_measure){ 0, ks_lua_memory_left(L), 0 };
        fits = json_measure(&jm, L, 1, 0);
    }
    if (!fits)
        return luaL_error(L, "json.encode: the text would take more than the %d kB of Lua memory left",
                          (int)(jm.room / 1024));
    return call_wrapped(L, 1);
}

/* Every call into string, table, utf8 and json checks the limits first:
 * the count hook sees VM instructions only, so a loop around a library
 * call that runs long in C (table.sort of a big table, string.upper of
 * megabytes) was checked once per thousand calls, seconds past the
 * timeout.  One single call that runs long is still the watchdog's.
 *
 * The guard runs the library function in its own frame, a plain C call
 * rather than lua_call: to the function and to its error messages it is
 * still the function the script called ("test.lua:3: bad argument #1 to
 * 'sub'"), not one called from C ("bad argument #1 to '?'").  That is
 * only right for functions without upvalues, which are all the
 * standard libraries have; cjson's keep their settings in one and are
 * wrapped by lua_call below. */
static int l_guarded(lua_State *L)
{
    ks_lua_check_limits(L);
    return call_in_frame(L);
}

/* The same, retried after a refused buffer (call_retried), for the
 * functions that build their result in a lauxlib buffer.  Only those:
 * the protected call costs a third more per call (200,000 string.sub
 * took 14 ms plain, 19 ms so), and the others (sub, find, byte ...)
 * allocate through Lua, which collects and retries by itself. */
static int l_guarded_retried(lua_State *L)
{
    ks_lua_check_limits(L);
    return call_retried(L);
}

/* Guard every C function without upvalues of the library table at the
 * top (the ones wrap_field wrapped check for themselves); buffered
 * (NULL-terminated) names those that build a buffer, retried. */
static void guard_library(lua_State *L, const char *const *buffered)
{
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        bool upvalues = lua_getupvalue(L, -1, 1) != NULL;
        if (upvalues)
            lua_pop(L, 1);
        if (lua_tocfunction(L, -1) != NULL && !upvalues && lua_type(L, -2) == LUA_TSTRING) {
            bool retried = false;
            for (size_t i = 0; buffered[i] != NULL; i++)
                retried |= strcmp(lua_tostring(L, -2), buffered[i]) == 0;
            lua_pushcclosure(L, retried ? l_guarded_retried : l_guarded, 1);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);      /* an existing field: allowed while traversing */
        } else {
            lua_pop(L, 1);
        }
    }
}

/* Replace t[name] (t at the top) by a C closure over the old value. */
static void wrap_field(lua_State *L, const char *name, lua_CFunction f)
{
    lua_getfield(L, -1, name);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, name);
}

static void drop_field(lua_State *L, const char *name)
{
    lua_pushnil(L);
    lua_setfield(L, -2, name);
}

/* ---- keystone ---------------------------------------------------------------------- */

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)ks_wall_ms() / 1000.0);
    return 1;
}

static int l_env(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    /* compared and looked up as a C string: "ALLOWED\0junk" is refused,
     * not taken for ALLOWED */
    const char *name = ks_lua_checkcstring(L, 1);
    for (size_t i = 0; i < lx->nallowed_env; i++)
        if (strcmp(lx->allowed_env[i], name) == 0) {
            const char *v = getenv(name);
            if (v == NULL)
                lua_pushnil(L);
            else
                lua_pushstring(L, v);
            return 1;
        }
    return luaL_error(L, "keystone.env: %s is not in lua.allowed_env", name);
}

static void open_keystone(lua_State *L)
{
    lua_newtable(L);
    /* os.time, os.clock and os.date, without the rest of os */
    lua_pushcfunction(L, luaopen_os);
    lua_call(L, 0, 1);
    static const char *const from_os[] = { "time", "clock", "date" };
    for (size_t i = 0; i < KS_ARRAY_LEN(from_os); i++) {
        lua_getfield(L, -1, from_os[i]);
        lua_setfield(L, -3, from_os[i]);
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_env);
    lua_setfield(L, -2, "env");
    lua_pushstring(L, PACKAGE_VERSION);
    lua_setfield(L, -2, "version");
    lua_setglobal(L, "keystone");
}

int ks_lua_open_sandbox(lua_State *L)
{
    luaL_requiref(L, "_G", luaopen_base, 1);
    drop_field(L, "dofile");
    drop_field(L, "loadfile");
    wrap_field(L, "load", l_load);
    wrap_field(L, "setmetatable", l_setmetatable);
    wrap_field(L, "rawset", l_rawset);
    wrap_field(L, "collectgarbage", l_collectgarbage);
    lua_pushcfunction(L, l_pcall);
    lua_setfield(L, -2, "pcall");
    lua_pushcfunction(L, l_xpcall);
    lua_setfield(L, -2, "xpcall");
    lua_pushcfunction(L, l_print);
    lua_setfield(L, -2, "print");
    lua_pushcfunction(L, l_log);
    lua_setfield(L, -2, "log");
    lua_pop(L, 1);

    /* lauxlib buffers (string.rep is wrapped, by l_rep, and retried) */
    static const char *const string_buffered[] = { "format", "gsub", "char", "reverse", "upper",
                                                   "lower", "pack", NULL };
    static const char *const table_buffered[] = { "concat", NULL };
    static const char *const utf8_buffered[] = { "char", NULL };
    luaL_requiref(L, "string", luaopen_string, 1);
    drop_field(L, "dump");
    wrap_field(L, "rep", l_rep);
    guard_library(L, string_buffered);
    lua_pop(L, 1);
    luaL_requiref(L, "table", luaopen_table, 1);
    wrap_field(L, "move", l_move);
    guard_library(L, table_buffered);
    lua_pop(L, 1);
    luaL_requiref(L, "math", luaopen_math, 1);
    lua_pop(L, 1);
    luaL_requiref(L, "utf8", luaopen_utf8, 1);
    guard_library(L, utf8_buffered);
    lua_pop(L, 1);
    luaL_requiref(L, "json", luaopen_cjson, 1);
    wrap_field(L, "encode", l_json_encode);
    wrap_field(L, "decode", l_json_decode);
    wrap_field(L, "encode_max_depth", l_json_depth);
    wrap_field(L, "decode_max_depth", l_json_depth);
    drop_field(L, "new");       /* a fresh instance would have no cap */
    lua_pop(L, 1);
    open_keystone(L);

    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SEALED_KEY);
    return 0;
}

/* ---- read-only views -------------------------------------------------------------- */

static int readonly_newindex(lua_State *L)
{
    return luaL_error(L, "attempt to modify the read-only table %s", lua_tostring(L, lua_upvalueindex(1)));
}

/* __pairs of a view: iterate the real table without handing it out. */
static int view_next(lua_State *L)
{
    lua_settop(L, 2);
    if (lua_next(L, lua_upvalueindex(1)) == 0) {
        lua_pushnil(L);
        return 1;
    }
    return 2;
}

static int view_pairs(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, view_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/* Push a read-only view of the table at idx. */
static void push_view(lua_State *L, int idx, const char *name)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);                    /* the view */
    lua_newtable(L);                    /* its metatable */
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, readonly_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, view_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, SEALED_KEY);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

void ks_lua_seal_globals(lua_State *L)
{
    static const char *const api[] = { "string", "table", "math", "utf8", "json", "keystone",
                                       "http", "router" };
    for (size_t i = 0; i < KS_ARRAY_LEN(api); i++) {
        if (lua_getglobal(L, api[i]) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        push_view(L, -1, api[i]);
        if (strcmp(api[i], "string") == 0) {
            /* ("x"):upper() goes through the string metatable: point it at
             * the view and protect it */
            lua_pushliteral(L, "");
            lua_getmetatable(L, -1);
            lua_pushvalue(L, -3);
            lua_setfield(L, -2, "__index");
            lua_pushliteral(L, "read-only");
            lua_setfield(L, -2, "__metatable");
            lua_pop(L, 2);
        }
        lua_setglobal(L, api[i]);
        lua_pop(L, 1);
    }
}

/* ---- helpers for the other openers ------------------------------------------------ */

void ks_lua_new_class(lua_State *L, const char *name, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

int ks_lua_singleton(lua_State *L, const char *name, const void **self)
{
    *self = lua_newuserdata(L, 1);
    luaL_setmetatable(L, name);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

const char *ks_lua_checkcstring(lua_State *L, int idx)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    if (strlen(s) != n)
        luaL_argerror(L, idx, "a NUL byte in the string");
    return s;
}

const char *ks_lua_tocstring(lua_State *L, int idx)
{
    size_t n;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
    return s != NULL && strlen(s) == n ? s : NULL;
}

int64_t ks_lua_duration(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number s = lua_tonumber(L, idx);
        return s >= 0 && s <= 86400.0 ? (int64_t)(s * 1000.0 + 0.5) : -1;
    }
    int64_t ms;
    const char *s = lua_tostring(L, idx);
    if (s == NULL || ks_parse_duration(s, &ms) < 0)
        return -1;
    return ms;
}
