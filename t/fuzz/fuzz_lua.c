/*
 * fuzz_lua.c: the Lua request and response API (lua/request.c,
 * lua/response.c, lua/handle.c) under a request the fuzzer writes.
 *
 * A worker with just enough around it (a shared segment, one tenant, no
 * upstreams, the script below) serves one request per input on a
 * socketpair, exactly as worker.c does: head, tenant, ks_lua_handle().
 * The script hands everything of the request (header names and values,
 * query arguments, the body, the path) to the req and res methods as
 * arguments, so the fuzzer drives their arguments through the request.
 * Properties: every response head written to the client is well-formed
 * HTTP (no header injection through res:header, res:redirect or a status),
 * and the worker's state survives for the next input.  The harness has no
 * network of its own (sandbox.c).
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/handle.h"
#include "shm/shm.h"
#include "shm/table.h"
#include "t/fuzz/fuzz.h"
#include "worker/body.h"
#include "worker/http.h"
#include "worker/proxy.h"
#include "worker/route.h"

static const char script[] =
    "local function try(f, ...) return pcall(f, ...) end\n"
    "router:use(function(req, res, next)\n"
    "    local m = req:header('x-mw')\n"
    "    if m == 'stop' then res:status(401) res:write('stopped') return end\n"
    "    if m == 'error' then error('middleware failed') end\n"
    "    if m then try(req.set_header, req, 'X-From-Mw', m) end\n"
    "    next()\n"
    "end)\n"
    "local function exercise(req, res)\n"
    "    local q = req:query() or {}\n"
    "    try(req.method, req) try(req.path, req) try(req.host, req)\n"
    "    try(req.query_string, req) try(req.client_ip, req)\n"
    "    try(req.request_id, req) try(req.tenant, req)\n"
    "    for k, v in pairs(req:headers()) do try(res.header, res, k, v) end\n"
    "    try(req.header, req, q.h or 'host')\n"
    "    try(req.set_header, req, q.sn or 'X-Set', q.sv or 'v')\n"
    "    try(req.del_header, req, q.dn or 'X-Del')\n"
    "    if q.path then try(req.set_path, req, q.path) end\n"
    "    try(req.param, req, q.p or 'a') try(req.params, req)\n"
    "    if q.status then try(res.status, res, tonumber(q.status) or q.status) end\n"
    "    if q.hn then try(res.header, res, q.hn, q.hv or '') end\n"
    "    try(res.get_status, res) try(res.get_header, res, q.hn or 'content-type')\n"
    "    local ok, body = try(req.body, req)\n"
    "    if not ok then body = '' end\n"
    "    if q.json then\n"
    "        local okj, t = pcall(json.decode, body)\n"
    "        try(res.json, res, okj and t or { body = body })\n"
    "    elseif q.redirect then\n"
    "        try(res.redirect, res, q.redirect, tonumber(q.code))\n"
    "    else\n"
    "        try(res.write, res, req:method(), ' ', req:path(), ' ', body)\n"
    "    end\n"
    "end\n"
    "router:add_route('*', '/l/{a}/{b}', { handler = exercise })\n"
    "router:add_route('*', '/l/*', { handler = exercise })\n"
    "router:add_route('GET', '/raw/{x}', { handler = function(req, res)\n"
    "    res:status(tonumber(req:param('x')) or 200)\n"
    "    res:header(req:header('x-n') or 'X-N', req:header('x-v') or 'v')\n"
    "    res:write(req:query_string() or '')\n"
    "end })\n";

#define MAX_HEADERS 32

static struct ks_shm shm;
static char table_buf[65536];
static struct ks_worker_args args;
static struct ks_worker worker;
static struct ks_header headers[MAX_HEADERS];
static char conn_buf[65536];
static char got[1 << 20];

static void cleanup(void)
{
    ks_lua_engine_free(&worker);
    ks_proxy_free(&worker);
    ks_shm_close(&shm);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_isolate_network();
    ks_log_open("/dev/null");
    const char *path = fuzz_scratch_file("lua", "state");
    char err[256];
    struct ks_shm_limits lim = { .max_workers = 1, .max_upstreams = 1, .max_tenants = 1,
                                 .route_table_size = sizeof(table_buf) };
    if (ks_shm_create(&shm, path, &lim, "/k.yaml", "/k.sock", err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_lua: %s\n", err);
        abort();
    }
    struct ks_table_builder b;
    if (ks_table_begin(&b, table_buf, sizeof(table_buf), 1, 0, 0, 0, 0) != 0)
        abort();
    struct ks_t_settings *s = &b.t->settings;
    s->access_log = ks_table_str(&b, "off");
    s->read_header_timeout_ms = s->read_body_timeout_ms = 100;
    s->send_timeout_ms = s->idle_timeout_ms = 100;
    s->max_headers = MAX_HEADERS;
    s->max_request_line = 4096;
    s->max_header_bytes = 8192;
    s->max_body_bytes = 16384;
    s->max_response_header_bytes = 8192;
    s->lua_timeout_ms = 200;
    s->lua_memory = 16u << 20;
    s->lua_hard_timeout_ms = 5000;
    s->lua_expose_errors = 1;
    struct ks_t_tenant *tn = ks_table_tenant(&b, 0);
    tn->name = ks_table_str(&b, "fuzz");
    tn->base_path = ks_table_str(&b, "/");
    tn->lua_script = ks_table_str(&b, "/fuzz.lua");
    tn->lua_source = ks_table_str(&b, script);
    tn->lua_source_len = (uint32_t)strlen(script);
    tn->lua_timeout_ms = 200;
    tn->lua_memory = 16u << 20;
    tn->lua_max_routes = 100;
    tn->lua_max_middlewares = 10;
    tn->stats_slot = (uint32_t)ks_shm_tenant_slot(&shm, 1);
    if (ks_table_finish(&b) == 0)
        abort();
    args.shm = &shm;
    worker.args = &args;
    worker.shm = &shm;
    worker.score = ks_shm_score(&shm, 0);
    worker.table = (struct ks_table *)table_buf;
    worker.access_log_fd = -1;
    worker.answer_fd = -1;
    ks_worker_seed_request_ids(&worker);
    if (ks_proxy_sync(&worker) != 0)
        abort();
    ks_lua_engine_refresh(&worker);
    if (ks_lua_engine_state(&worker, 0) == NULL)
        abort();        /* the script must load */
    atexit(cleanup);
    return 0;
}

/* Every response head in what the client got must be well-formed. */
static void check_responses(const char *p, size_t n)
{
    while (n > 0) {
        const char *end = NULL;
        for (size_t i = 0; i + 3 < n; i++)
            if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
                end = p + i + 4;
                break;
            }
        if (end == NULL)
            return;     /* the rest is a body */
        size_t hl = (size_t)(end - p);
        const char *why = ks_http_check_response_head(p, hl);
        FUZZ_CHECK(why == NULL, "%s in the response head: %.*s", why, (int)hl, p);
        int status = atoi(p + 9);
        FUZZ_CHECK(status >= 100 && status <= 599, "status %d", status);
        if (status >= 200)
            return;     /* the final head; its body follows */
        p = end;
        n -= hl;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (worker.table == NULL)
        LLVMFuzzerInitialize(NULL, NULL);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    shutdown(sv[1], SHUT_WR);       /* the client has sent everything */
    struct ks_conn c = { .fd = sv[0], .w = &worker, .buf = conn_buf, .cap = sizeof(conn_buf) };
    strcpy(c.client_ip, "192.0.2.1");
    c.len = size < sizeof(conn_buf) ? size : sizeof(conn_buf);
    memcpy(conn_buf, data, c.len);

    struct ks_request r;
    int status;
    if (ks_http_read_head(&c, &r, headers, ks_now_ms() + 100, &status) == KS_HEAD_OK) {
        ks_worker_request_id(&worker, &r);
        struct ks_body body;
        ks_body_init(&body, &c, &r, worker.proxy->acc, worker.proxy->acc_cap);
        struct ks_exchange x = { .w = &worker, .c = &c, .r = &r, .tenant = KS_NONE,
                                 .upstream = KS_NONE, .in = &body, .close = !r.keep_alive };
        ssize_t n = ks_route_normalize(r.path, r.path_len, worker.proxy->norm);
        if (n >= 0) {
            x.match_path = worker.proxy->norm;
            x.match_path_len = (size_t)n;
            x.tenant = ks_route_tenant(worker.table, r.host, x.match_path, x.match_path_len,
                                       &x.base_len);
            FUZZ_CHECK(x.tenant == 0, "the only tenant serves every path");
            FUZZ_CHECK(ks_lua_wants(&x), "the tenant goes through Lua");
            ks_lua_handle(&x);
        }
        ks_proxy_request_done(&worker);
    }
    size_t n = 0;
    for (;;) {
        ssize_t k = read(sv[1], got + n, sizeof(got) - n);
        if (k <= 0 || (n += (size_t)k) == sizeof(got))
            break;
    }
    if (getenv("FUZZ_LUA_SHOW") != NULL)    /* to see what a corpus file does */
        fprintf(stderr, "---- %zu bytes\n%.*s\n", n, (int)(n < 2000 ? n : 2000), got);
    check_responses(got, n);
    close(sv[0]);
    close(sv[1]);
    FUZZ_CHECK(ks_lua_engine_state(&worker, 0) != NULL, "the tenant's state cannot be rebuilt");
    return 0;
}
