/*
 * test_lua_sandbox.c: the Lua engine without a worker: what a script can
 * reach, read-only API tables, escapes tried, the time limit (which no
 * pcall loop, error object or handler can outlast), the memory cap, and
 * registration through the router object with file:line errors.
 */
#include <config.h>

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "lua/engine.h"

static char err[KS_LUA_MSG_MAX];

static struct ks_lua *load_with(const char *src, int64_t timeout_ms, uint64_t memory)
{
    static const char *const ups[] = { "app", "v2" };
    static const char *const env[] = { "KS_TEST_ALLOWED" };
    struct ks_lua_tenant_info ti = {
        .tenant = "demo",
        .script = "/scripts/test.lua",
        .source = src,
        .source_len = strlen(src),
        .timeout_ms = timeout_ms,
        .memory = memory,
        .max_routes = 20,
        .max_middlewares = 5,
        .upstreams = ups,
        .nupstreams = 2,
        .allowed_env = env,
        .nallowed_env = 1,
        .dynamic_routing = true,
        .quiet = true,
    };
    err[0] = '\0';
    return ks_lua_new(&ti, NULL, err, sizeof(err));
}

static struct ks_lua *load(const char *src)
{
    return load_with(src, 100, 4u << 20);
}

/* The script must load (its own checks raise errors). */
#define LOADS(src)                                                                    \
    do {                                                                              \
        struct ks_lua *lx_ = load(src);                                               \
        ck_assert_msg(lx_ != NULL, "script failed: %s", err);                         \
        ks_lua_free(lx_);                                                             \
    } while (0)

/* The script must fail to load with a message containing want. */
#define FAILS(src, want)                                                              \
    do {                                                                              \
        struct ks_lua *lx_ = load(src);                                               \
        ck_assert_msg(lx_ == NULL, "script loaded, expected: %s", want);              \
        ck_assert_msg(strstr(err, want) != NULL, "error \"%s\" lacks \"%s\"", err, want); \
    } while (0)

START_TEST(libraries)
{
    LOADS("assert(io == nil and os == nil and package == nil and require == nil)\n"
          "assert(debug == nil and dofile == nil and loadfile == nil and coroutine == nil)\n"
          "assert(string.dump == nil)\n"
          "assert(type(string.format) == 'function' and type(table.concat) == 'function')\n"
          "assert(math.floor(2.5) == 2 and utf8.char(72, 105) == 'Hi')\n"
          "assert(('abc'):upper() == 'ABC')\n"
          "assert(type(keystone.now()) == 'number' and keystone.now() > 1.6e9)\n"
          "assert(type(keystone.time()) == 'number' and type(keystone.clock()) == 'number')\n"
          "assert(keystone.date('!%Y', 0) == '1970')\n"
          "assert(keystone.execute == nil and keystone.getenv == nil)\n"
          "local t = json.decode(json.encode({a = 1, b = {'x', 'y'}, c = 'caf\\195\\169'}))\n"
          "assert(t.a == 1 and t.b[2] == 'y' and t.c == 'caf\\195\\169')\n"
          "assert(json.null ~= nil)\n"
          "log('info', 'loaded', 1) print('hello', nil)\n"
          "assert(collectgarbage('count') > 0)\n"
          "assert(not pcall(collectgarbage, 'stop'))\n"
          "assert(string.rep('', 1e15) == '' and string.rep('ab', 3, ',') == 'ab,ab,ab')\n"
          "assert(not pcall(table.move, {}, 1, 1 << 60, 2))\n"
          "assert(not pcall(table.move, {}, 1, 65537, 2) and pcall(table.move, {}, 1, 65536, 2))\n"
          "assert(table.move({1, 2, 3}, 1, 3, 2)[4] == 3)\n"
          "assert(table.unpack({1, 2}) == 1)\n");
}
END_TEST

START_TEST(env_allow_list)
{
    setenv("KS_TEST_ALLOWED", "yes", 1);
    setenv("KS_TEST_SECRET", "no", 1);
    LOADS("assert(keystone.env('KS_TEST_ALLOWED') == 'yes')\n"
          "local ok, e = pcall(keystone.env, 'KS_TEST_SECRET')\n"
          "assert(not ok and e:find('not in lua.allowed_env'))\n");
    unsetenv("KS_TEST_ALLOWED");
    LOADS("assert(keystone.env('KS_TEST_ALLOWED') == nil)\n");
}
END_TEST

START_TEST(bytecode_refused)
{
    LOADS("local f, e = load('\\27LuaS\\0', 'b')\n"
          "assert(f == nil and e:find('binary'), e)\n"
          "f, e = load('return 1', 'x', 'b')\n"
          "assert(f == nil and e:find('not allowed'))\n"
          "f, e = load('return 1', 'x', 'bt')\n"
          "assert(f == nil)\n"
          /* a mode without "t" does not load text either */
          "for _, m in ipairs({'x', '', '5'}) do f, e = load('return 1', 'x', m)\n"
          "  assert(f == nil and e:find('not allowed'), m) end\n"
          "assert(load('return 1 + 1')() == 2)\n"
          "assert(load('return x', 'c', 't', {x = 7})() == 7)\n"
          "assert(load('return io', 'c', 't', _G)() == nil)\n"
          /* a reader function, still text only */
          "local parts = {'\\27Lua', 'S'}\n"
          "local i = 0\n"
          "f = load(function() i = i + 1 return parts[i] end)\n"
          "assert(f == nil)\n");
    /* and the script itself may not be bytecode */
    FAILS("\x1bLuaS\x00\x19\x93\r\n", "binary");
}
END_TEST

START_TEST(readonly_api)
{
    LOADS("assert(not pcall(function() string.upper = nil end))\n"
          "assert(not pcall(function() router.add_route = print end))\n"
          "assert(not pcall(function() json.encode = nil end))\n"
          "assert(not pcall(function() keystone.env = function() return 'x' end end))\n"
          "assert(not pcall(rawset, string, 'upper', print))\n"
          "assert(not pcall(rawset, http, 'request', print))\n"
          "assert(not pcall(setmetatable, string, {}))\n"
          "assert(getmetatable(string) == 'read-only')\n"
          "assert(getmetatable('') == 'read-only')\n"
          "assert(not pcall(function() getmetatable('').__index = {} end))\n"
          "local n = 0 for k, v in pairs(string) do n = n + 1 end\n"
          "assert(n > 10)\n"
          /* _ENV tricks only hurt the script itself */
          "do local _ENV = {assert = assert, pcall = pcall} assert(io == nil) end\n"
          "local saved = _ENV\n"
          "do local _ENV = setmetatable({}, {__index = saved}) x = 1 assert(saved.x == nil) end\n"
          "assert(('x'):rep(3) == 'xxx')\n");
}
END_TEST

START_TEST(gc_metamethods_refused)
{
    FAILS("setmetatable({}, {__gc = function() while true do end end})",
          "/scripts/test.lua:1: setmetatable: __gc metamethods are not allowed");
    /* an __gc added later never makes an object finalizable (Lua 5.3) */
    LOADS("local mt = {} local t = setmetatable({}, mt) mt.__gc = function() error('ran') end\n"
          "t = nil collectgarbage()\n");
}
END_TEST

START_TEST(syntax_and_runtime_errors)
{
    FAILS("local x = \nfunction(", "/scripts/test.lua:2:");
    FAILS("local a = 1\nlocal b = nil + a\n", "/scripts/test.lua:2: attempt to perform arithmetic");
    /* error() adds no position to a table: the message handler does */
    FAILS("local x = 1\nerror({code = 1})", "/scripts/test.lua:2: (error object is a table value)");
    FAILS("local function f()\n  error(setmetatable({}, {__tostring = function() while true do end end}))\n"
          "end\nf()\n",
          "/scripts/test.lua:2: (error object is a table value)");
}
END_TEST

/* A limit that strikes at load says where. */
START_TEST(load_limits_name_the_line)
{
    struct ks_lua *lx = load_with("local x = 1\nwhile true do x = x + 1 end\n", 20, 4u << 20);
    ck_assert(lx == NULL);
    ck_assert_msg(strstr(err, "/scripts/test.lua:2: the script's top level ran longer than 20 ms"),
                  "%s", err);
}
END_TEST

/* cjson recurses on the C stack: its depth limits cannot be raised past
 * its default, so a deep document is a Lua error, not a dead worker. */
START_TEST(json_depth_capped)
{
    LOADS("assert(not pcall(json.decode_max_depth, 1000000))\n"
          "assert(not pcall(json.encode_max_depth, 1001))\n"
          "assert(json.decode_max_depth(500) == 500 and json.decode_max_depth() == 500)\n"
          "assert(json.encode_max_depth(1000) == 1000)\n"
          "local ok, e = pcall(json.decode, string.rep('[', 200000))\n"
          "assert(not ok and e:find('nested'), e)\n"
          "assert(json.decode('[[1]]')[1][1] == 1)\n"
          "assert(json.new == nil)\n");  /* its instances would have no cap */
}
END_TEST

/* Every way of catching the deadline's error must still end the call. */
START_TEST(timeout_cannot_be_caught)
{
    static const char *const loops[] = {
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "local function f() end while true do pcall(f) end",
        "while true do pcall(error, {}) end",
        "while true do pcall(error, setmetatable({}, {__tostring = function() while true do end end})) end",
        "while true do xpcall(function() while true do end end, function() while true do end end) end",
        "local s = 'x' while true do local ok = pcall(string.gsub, s, 'x', function() while true do end end) end",
        "repeat local ok, e = pcall(function() local t = {} for i = 1, 1e9 do t[i % 100] = i end end) until false",
        "while true do local ok = pcall(load('while true do end')) end",
        "local t = setmetatable({}, {__index = function(t, k) return t[k + 1] end}) while true do pcall(function() return t[1] end) end",
        "while true do pcall(table.move, {}, 1, 65536, 2) end",
    };
    for (size_t i = 0; i < sizeof(loops) / sizeof(loops[0]); i++) {
        struct ks_lua *lx = load_with(loops[i], 20, 4u << 20);
        ck_assert_msg(lx == NULL, "loop %zu returned", i);
        ck_assert_msg(strstr(err, "ran longer than 20 ms") != NULL, "loop %zu: %s", i, err);
    }
}
END_TEST

START_TEST(timeout_at_request_time)
{
    struct ks_lua *lx = load("function slow() while true do end end\n"
                             "function quick(x) return x * 2 end\n");
    ck_assert_msg(lx != NULL, "%s", err);
    char msg[KS_LUA_MSG_MAX];
    lua_getglobal(lx->L, "quick");
    lua_pushinteger(lx->L, 21);
    ck_assert_int_eq(ks_lua_call(lx, 1, 1, msg, sizeof(msg)), KS_LUA_OK);
    ck_assert_int_eq(lua_tointeger(lx->L, -1), 42);
    lua_pop(lx->L, 1);
    ck_assert(!lx->dead);
    lua_getglobal(lx->L, "slow");
    ck_assert_int_eq(ks_lua_call(lx, 0, 0, msg, sizeof(msg)), KS_LUA_ERR_TIMEOUT);
    ck_assert(lx->dead);
    ck_assert_ptr_nonnull(strstr(msg, "timeout"));
    /* the state stays unusable: even a quick call fails now */
    lua_getglobal(lx->L, "quick");
    lua_pushinteger(lx->L, 1);
    ck_assert_int_eq(ks_lua_call(lx, 1, 1, msg, sizeof(msg)), KS_LUA_ERR_TIMEOUT);
    ck_assert_int_eq(lua_gettop(lx->L), 0);
    ks_lua_free(lx);
}
END_TEST

/* The count hook does not see time spent in C: table.move checks the
 * limit itself, so a loop of long C calls stops within a call or two of
 * the deadline, not some hundred calls (a thousand instructions) later. */
START_TEST(timeout_in_c_calls)
{
    struct ks_lua *lx = load_with("n = 0\n"
                                  "function f() local move, t = table.move, {}\n"
                                  "  for i = 1, 1e9 do n = i move(t, 1, 65536, 2) end end\n",
                                  5, 4u << 20);
    ck_assert_msg(lx != NULL, "%s", err);
    char msg[KS_LUA_MSG_MAX];
    lua_getglobal(lx->L, "f");
    ck_assert_int_eq(ks_lua_call(lx, 0, 0, msg, sizeof(msg)), KS_LUA_ERR_TIMEOUT);
    ck_assert_msg(strstr(msg, "/scripts/test.lua:3: timeout"), "%s", msg);
    /* a call takes a tenth of a millisecond or more: some 50 at most fit
     * in 5 ms, while the hook comes only every ~125 calls */
    lua_getglobal(lx->L, "n");
    lua_Integer calls = lua_tointeger(lx->L, -1);
    ck_assert_msg(calls > 0 && calls < 100, "%lld table.move calls in a 5 ms limit", (long long)calls);
    ks_lua_free(lx);
}
END_TEST

/* Waiting for the master's verdict on a runtime route is not Lua time. */
static int slow_runtime(void *arg, const struct ks_route_spec *spec, bool del, char *id_out,
                        size_t idlen, char *errbuf, size_t errlen)
{
    (void)arg, (void)spec, (void)del, (void)errbuf, (void)errlen;
    struct timespec ts = { 0, 60 * 1000000L };
    nanosleep(&ts, NULL);
    snprintf(id_out, idlen, "d1");
    return 0;
}

START_TEST(runtime_route_wait_not_counted)
{
    struct ks_lua *lx = load_with("function f() local r = router:add_route('GET', '/new', {upstream = 'app'})\n"
                                  "  assert(r.ok and r.id == 'd1')\n"
                                  "  for i = 1, 10000 do end return 'done' end\n",   /* hooks run */
                                  20, 4u << 20);
    ck_assert_msg(lx != NULL, "%s", err);
    lx->runtime = slow_runtime;
    lx->phase = KS_LUA_HANDLER;
    char msg[KS_LUA_MSG_MAX];
    lua_getglobal(lx->L, "f");
    ck_assert_int_eq(ks_lua_call(lx, 0, 1, msg, sizeof(msg)), KS_LUA_OK);
    ck_assert_str_eq(lua_tostring(lx->L, -1), "done");
    ks_lua_free(lx);
}
END_TEST

START_TEST(memory_cap)
{
    static const char *const bombs[] = {
        "local t = {} for i = 1, 1e8 do t[i] = ('x'):rep(64) .. i end",
        "local s = string.rep('x', 1 << 30)",
        "local s = 'x' while true do s = s .. s end",
        /* catching the memory error does not buy more memory */
        "pcall(string.rep, 'x', 1 << 30) local t = {} for i = 1, 1e7 do t[i] = {} end",
        "while true do pcall(function() local t = {} for i = 1, 1e8 do t[i] = i end end) end",
    };
    for (size_t i = 0; i < sizeof(bombs) / sizeof(bombs[0]); i++) {
        struct ks_lua *lx = load_with(bombs[i], 1000, 1u << 20);
        ck_assert_msg(lx == NULL, "bomb %zu loaded", i);
        ck_assert_msg(strstr(err, "lua_limits.memory") != NULL || strstr(err, "not enough memory"),
                      "bomb %zu: %s", i, err);
    }
    /* lauxlib's buffers give up at the first refusal, with an ordinary
     * error that pcall catches: the cap latches all the same */
    struct ks_lua *oom = load_with("local ok, e = pcall(string.rep, 'x', 1 << 30)\n"
                                   "assert(not ok) survived = {ok, e}\n", 1000, 1u << 20);
    ck_assert_msg(oom == NULL, "the script went on after running out of memory");
    ck_assert_msg(strstr(err, "lua_limits.memory"), "%s", err);

    /* within the cap all is well, and the books balance */
    struct ks_lua *lx = load_with("big = string.rep('x', 200000)", 1000, 1u << 20);
    ck_assert_msg(lx != NULL, "%s", err);
    ck_assert_uint_gt(lx->mem.used, 200000);
    ck_assert_uint_le(lx->mem.peak, 1u << 20);
    char msg[KS_LUA_MSG_MAX];
    luaL_loadstring(lx->L, "big = nil collectgarbage()");
    ck_assert_int_eq(ks_lua_call(lx, 0, 0, msg, sizeof(msg)), KS_LUA_OK);
    ck_assert_uint_lt(lx->mem.used, 200000);
    ks_lua_free(lx);
}
END_TEST

START_TEST(router_registration)
{
    struct ks_lua *lx = load(
        "local r = router:add_route('GET', '/hello', {handler = function(req, res) end})\n"
        "assert(r.ok and r.id == 'r1', r.error)\n"
        "router:middleware('auth', function(req, res, next) next() end)\n"
        "router:handler('named', function(req, res) end)\n"
        "router:use(function(req, res, nxt) nxt() end)\n"
        "local api = router:create_group('/api', {middleware = {'auth'}})\n"
        "local v1 = api:create_group('/v1')\n"
        "assert(v1:add_route('get', '/users/{id}', {handler = 'named'}).ok)\n"
        "assert(api:add_route('POST', '/', {upstream = 'v2', timeout = '2s', strip_prefix = true,\n"
        "       headers = {['X-From'] = 'lua'}}).ok)\n"
        "assert(router:add_route('*', '/files/*', {upstream = 'app'}).ok)\n"
        "local tmp = router:add_route('GET', '/tmp')\n"
        "assert(router:delete_route(tmp.id).ok)\n"
        "router:on_response(function(req, res) end)\n"
        "local list = router:list_routes()\n"
        "assert(#list == 4 and list[2].pattern == '/api/v1/users/{id}' and list[2].method == 'GET')\n"
        "assert(list[3].upstream == 'v2' and list[2].handler == 'named' and list[1].source == 'static')\n"
        "local d = router:delete_route('nope')\n"
        "assert(d.ok == false and d.error == 'no route nope')\n");
    /* a refused registration at load fails the load, even when the script
     * looked at the result */
    ck_assert_msg(lx == NULL, "delete of a missing route must fail the load");
    ck_assert_msg(strstr(err, "/scripts/test.lua:18: no route nope") != NULL, "%s", err);

    lx = load(
        "router:middleware('auth', function(req, res, next) next() end)\n"
        "router:handler('named', function(req, res) end)\n"
        "router:use(function(req, res, nxt) nxt() end)\n"
        "local api = router:create_group('/api', {middleware = {'auth'}})\n"
        "local v1 = api:create_group('/v1')\n"
        "assert(v1:add_route('get', '/users/{id}', {handler = 'named'}).ok)\n"
        "assert(api:add_route('POST', '/', {upstream = 'v2', timeout = '2s', strip_prefix = true,\n"
        "       headers = {['X-From'] = 'lua'}}).ok)\n"
        "router:on_response(function(req, res) end)\n");
    ck_assert_msg(lx != NULL, "%s", err);
    const struct ks_router *r = &lx->router;
    ck_assert_uint_eq(r->nroutes, 2);
    ck_assert_uint_eq(r->nglobal, 1);
    ck_assert_uint_eq(lx->non_response, 1);
    const struct ks_route *u = r->routes[0];
    ck_assert_str_eq(u->pat.text, "/api/v1/users/{id}");
    ck_assert_str_eq(u->method, "GET");
    ck_assert_uint_eq(u->nchain, 1);            /* the group's auth */
    ck_assert_int_eq(u->chain[0], ks_router_name_ref(r, true, "auth"));
    ck_assert_int_eq(u->handler, ks_router_name_ref(r, false, "named"));
    const struct ks_route *p = r->routes[1];
    ck_assert_str_eq(p->pat.text, "/api");
    ck_assert_int_eq(p->handler, KS_ROUTE_PROXY);
    ck_assert_uint_eq(p->upstream, 1);
    ck_assert_int_eq(p->timeout_ms, 2000);
    ck_assert_str_eq(p->strip, "/api");
    ck_assert_uint_eq(p->nheaders, 1);
    ck_assert_str_eq(p->headers[0], "X-From");
    ck_assert_str_eq(p->where, "/scripts/test.lua:7");
    struct ks_match m;
    ck_assert_int_eq(ks_router_match(r, "GET", "/api/v1/users/7", 15, &m), KS_MATCH_FOUND);
    ks_lua_free(lx);
}
END_TEST

START_TEST(registration_errors_with_lines)
{
    struct ks_lua *lx = load("router:add_route('GET', '/ok', {upstream = 'app'})\n"
                             "router:add_route('GET', 'no-slash', {upstream = 'app'})\n"
                             "router:add_route('GET', '/x', {upstream = 'nope'})\n"
                             "router:add_route('GET', '/ok', {upstream = 'v2'})\n"
                             "local r = router:add_route('GET', '/y', {upstream = 'app', handler = 'h'})\n"
                             "assert(r.ok == false and r.error)\n");
    ck_assert(lx == NULL);
    ck_assert_ptr_nonnull(strstr(err, "/scripts/test.lua:2: pattern \"no-slash\" must start with /"));
    ck_assert_ptr_nonnull(strstr(err, "/scripts/test.lua:3: unknown upstream \"nope\""));
    ck_assert_ptr_nonnull(strstr(err, "/scripts/test.lua:4: GET /ok conflicts with route r1"));
    ck_assert_ptr_nonnull(strstr(err, "/scripts/test.lua:5: unknown handler \"h\""));
    FAILS("router:add_route('GET', '/a', {middleware = {'missing'}})",
          "/scripts/test.lua:1: unknown middleware \"missing\"");
    FAILS("router:use(1)", "/scripts/test.lua:1: bad argument #1 to 'use'");
    FAILS("string.sub()", "/scripts/test.lua:1: bad argument #1 to 'sub'");
    FAILS("local s = 'x'; s:rep()", "/scripts/test.lua:1: bad argument #1 to 'rep'");
    FAILS("table.concat({}, 1, 2, 3)", "/scripts/test.lua:1: invalid value (nil) at index 2 in table for 'concat'");
    FAILS("for i = 1, 21 do router:add_route('GET', '/r' .. i) end", "more than 20 routes");
    FAILS("for i = 1, 6 do router:use(function() end) end", "more than 5 middlewares");
    FAILS("router:handler('h', function() end) router:handler('h', function() end)",
          "handler \"h\" is already registered");
    FAILS("router:create_group('/g/*')", "cannot end in *");
}
END_TEST

START_TEST(request_api_outside_requests)
{
    /* the load phase has no request: req, res and the request-time calls
     * say so, and http.request never runs while loading */
    LOADS("router:add_route('GET', '/x', {handler = function(req, res)\n"
          "  _G.saved_req = req end})\n"
          "local ok, e = pcall(http.request, {url = 'http://127.0.0.1:9/'})\n"
          "assert(not ok and e:find('not available at script load'), e)\n");
    struct ks_lua *lx = load("function f(req) return req end\n");
    ck_assert(lx != NULL);
    ks_lua_free(lx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lua_sandbox");
    TCase *tc = tcase_create("sandbox");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, libraries);
    tcase_add_test(tc, env_allow_list);
    tcase_add_test(tc, bytecode_refused);
    tcase_add_test(tc, readonly_api);
    tcase_add_test(tc, gc_metamethods_refused);
    tcase_add_test(tc, syntax_and_runtime_errors);
    tcase_add_test(tc, timeout_cannot_be_caught);
    tcase_add_test(tc, timeout_at_request_time);
    tcase_add_test(tc, timeout_in_c_calls);
    tcase_add_test(tc, runtime_route_wait_not_counted);
    tcase_add_test(tc, load_limits_name_the_line);
    tcase_add_test(tc, json_depth_capped);
    tcase_add_test(tc, memory_cap);
    tcase_add_test(tc, router_registration);
    tcase_add_test(tc, registration_errors_with_lines);
    tcase_add_test(tc, request_api_outside_requests);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
