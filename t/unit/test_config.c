/*
 * test_config.c: master/config.c and master/yamltree.c.
 *
 * Each test writes its keystone.yaml into a fresh mkdtemp() directory and
 * checks the loaded struct, or the exact "file:line:col: key.path: message"
 * of every error.
 */
#include <config.h>

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "master/config.h"
#include "master/yamltree.h"

/* Test fixture state (check runs setup/teardown around each test). */
static char tmpdir[64];
static char cfgpath[128];
static struct ks_diag diag;
static struct ks_config *cfg;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void)
{
    strcpy(tmpdir, "/tmp/ks_test_config.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(cfgpath, sizeof(cfgpath), "%s/keystone.yaml", tmpdir);
    memset(&diag, 0, sizeof(diag));
    cfg = NULL;
}

static void teardown(void)
{
    ks_config_free(cfg);
    cfg = NULL;
    ks_diag_free(&diag);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *name, const char *content, size_t len)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(content, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static const char *all_errors(void)
{
    static char buf[16384];
    size_t pos = 0, i;

    buf[0] = '\0';
    for (i = 0; i < diag.n; i++)
        ks_appendf(buf, sizeof(buf), &pos, "  %s\n", diag.msgs[i]);
    return buf;
}

/* Load yaml as keystone.yaml; keeps the result in the fixture. */
static struct ks_config *load(const char *yaml)
{
    ks_config_free(cfg);
    ks_diag_free(&diag);
    write_file("keystone.yaml", yaml, strlen(yaml));
    cfg = ks_config_load(cfgpath, &diag);
    return cfg;
}

static struct ks_config *load_ok(const char *yaml)
{
    load(yaml);
    ck_assert_msg(cfg != NULL, "load failed:\n%s", all_errors());
    ck_assert_uint_eq(diag.n, 0);
    return cfg;
}

/* Is there an error "<cfgpath>:<rest>" exactly? */
static bool has_err(const char *rest)
{
    size_t n = strlen(cfgpath), i;

    for (i = 0; i < diag.n; i++)
        if (strncmp(diag.msgs[i], cfgpath, n) == 0 && diag.msgs[i][n] == ':' &&
            strcmp(diag.msgs[i] + n + 1, rest) == 0)
            return true;
    return false;
}

#define assert_err(rest) \
    ck_assert_msg(has_err(rest), "expected error\n  %s:%s\ngot:\n%s", cfgpath, rest, all_errors())

/* The load failed with exactly this one error. */
#define assert_only_err(rest)                                                     \
    do {                                                                          \
        ck_assert_msg(cfg == NULL, "load succeeded, expected %s", rest);          \
        assert_err(rest);                                                         \
        ck_assert_msg(diag.n == 1, "expected only\n  %s\ngot:\n%s", rest, all_errors()); \
    } while (0)

#define SERVER "server:\n  public_addr: 127.0.0.1:8080\n"

/* ---- valid configurations ------------------------------------------------ */

START_TEST(test_example_loads)
{
    const char *src = getenv("KS_SRCDIR");
    char path[512], want[600];
    const struct ks_tenant_config *t;
    const struct ks_upstream_config *u;

    if (src == NULL)
        src = getenv("srcdir");
    if (src == NULL)
        src = ".";
    snprintf(path, sizeof(path), "%s/etc/keystone.yaml", src);
    cfg = ks_config_load(path, &diag);
    ck_assert_msg(cfg != NULL, "%s does not load:\n%s", path, all_errors());
    ck_assert_uint_eq(diag.n, 0);
    ck_assert_str_eq(cfg->server.public_addr.text, "127.0.0.1:8080");
    ck_assert(cfg->server.has_admin_addr);
    ck_assert_str_eq(cfg->server.admin_addr.text, "127.0.0.1:9000");
    ck_assert_uint_eq(cfg->ntenants, 1);
    t = ks_config_tenant(cfg, "demo");
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t->base_path, "/");
    /* the quick start's script, relative to the file, read at load */
    snprintf(want, sizeof(want), "%s/scripts/hello.lua", cfg->dir);
    ck_assert_ptr_nonnull(t->lua_script);
    ck_assert_str_eq(t->lua_script, want);
    ck_assert_ptr_nonnull(t->lua_source);
    ck_assert_ptr_nonnull(strstr(t->lua_source, "Hello World"));
    ck_assert_uint_eq(t->nupstreams, 1);
    u = &t->upstreams[0];
    ck_assert_str_eq(u->url_text, "http://127.0.0.1:3001");
    ck_assert_str_eq(u->addr.text, "127.0.0.1:3001");
    /* run-time files sit next to the file */
    ck_assert(cfg->dir[0] == '/');
    snprintf(want, sizeof(want), "%s/keystoned.pid", cfg->dir);
    ck_assert_str_eq(cfg->server.pid_file, want);
    ck_assert_msg(strlen(cfg->dir) >= 4 && strcmp(cfg->dir + strlen(cfg->dir) - 4, "/etc") == 0,
                  "dir %s", cfg->dir);
}
END_TEST

START_TEST(test_defaults)
{
    const struct ks_server_config *s;
    const struct ks_health_config *h;
    char want[256];

    load_ok(SERVER "tenants:\n  - name: t\n    upstreams:\n      - name: u\n        url: http://127.0.0.1:3001\n");
    ck_assert_str_eq(cfg->path, cfgpath);
    ck_assert_str_eq(cfg->dir, tmpdir);
    ck_assert_int_eq(cfg->version, 1);

    s = &cfg->server;
    ck_assert_str_eq(s->public_addr.text, "127.0.0.1:8080");
    ck_assert(!s->has_admin_addr);
    ck_assert_str_eq(s->admin_base_path, "/admin");
    ck_assert_ptr_null(s->admin_token);
    ck_assert_int_eq(s->workers, 4);
    ck_assert_int_eq(s->min_spare, 2);
    ck_assert_int_eq(s->max_spare, 8);
    ck_assert_int_eq(s->max_workers, 64);
    ck_assert_int_eq(s->max_requests_per_worker, 10000);
    ck_assert_int_eq(s->max_keepalive_requests, 1000);
    ck_assert_int_eq(s->read_header_timeout_ms, 5000);
    ck_assert_int_eq(s->read_body_timeout_ms, 30000);
    ck_assert_uint_eq(s->min_body_rate, 1024);
    ck_assert_int_eq(s->send_timeout_ms, 30000);
    ck_assert_int_eq(s->idle_timeout_ms, 5000);
    ck_assert_int_eq(s->lingering_time_ms, 2000);
    ck_assert_int_eq(s->shutdown_timeout_ms, 30000);
    snprintf(want, sizeof(want), "%s/keystoned.pid", tmpdir);
    ck_assert_str_eq(s->pid_file, want);
    snprintf(want, sizeof(want), "%s/keystoned.state", tmpdir);
    ck_assert_str_eq(s->state_file, want);
    snprintf(want, sizeof(want), "%s/keystoned.sock", tmpdir);
    ck_assert_str_eq(s->control_socket, want);
    ck_assert_str_eq(s->error_log, "stderr");
    ck_assert_str_eq(s->access_log, "stderr");
    ck_assert_str_eq(s->log_level, "info");
    ck_assert_ptr_null(s->user);
    ck_assert_ptr_null(s->group);

    ck_assert_uint_eq(cfg->limits.max_request_line, 8192);
    ck_assert_uint_eq(cfg->limits.max_header_bytes, 16384);
    ck_assert_int_eq(cfg->limits.max_headers, 100);
    ck_assert_uint_eq(cfg->limits.max_body_bytes, 10485760);
    ck_assert_uint_eq(cfg->limits.max_response_header_bytes, 65536);
    ck_assert_int_eq(cfg->limits.max_tenants, 256);
    ck_assert_int_eq(cfg->limits.max_upstreams, 1024);
    ck_assert_int_eq(cfg->limits.max_routes, 4096);
    ck_assert_uint_eq(cfg->limits.route_table_size, 4194304);
    ck_assert_uint_eq(cfg->limits.max_config_size, 1048576);

    ck_assert_int_eq(cfg->lua.limits.timeout_ms, 50);
    ck_assert_uint_eq(cfg->lua.limits.memory, 10485760);
    ck_assert_int_eq(cfg->lua.limits.max_routes, 200);
    ck_assert_int_eq(cfg->lua.limits.max_middlewares, 20);
    ck_assert_int_eq(cfg->lua.hard_timeout_ms, 2000);
    ck_assert_int_eq(cfg->lua.reload_debounce_ms, 200);
    ck_assert(!cfg->lua.expose_errors);
    ck_assert_uint_eq(cfg->lua.nallowed_env, 0);
    ck_assert_int_eq(cfg->dynamic_routing.max_changes_per_minute, 60);

    ck_assert_uint_eq(cfg->ntenants, 1);
    {
        const struct ks_tenant_config *t = &cfg->tenants[0];
        const struct ks_upstream_config *u = &t->upstreams[0];

        ck_assert_str_eq(t->name, "t");
        ck_assert_uint_eq(t->ndomains, 0);
        ck_assert_str_eq(t->base_path, "/");
        ck_assert(!t->strip_base_path);
        ck_assert(t->preserve_host);
        ck_assert(!t->forwarded);
        ck_assert_ptr_null(t->lua_script);
        ck_assert_ptr_null(t->lua_source);
        ck_assert(!t->dynamic_routing_enabled);
        ck_assert_int_eq(t->all_down, KS_ALL_DOWN_FAIL);
        ck_assert_int_eq(t->retries, 1);
        ck_assert_int_eq(t->line, 4);
        ck_assert_int_eq(t->col, 5);
        /* Lua limits come from lua: when the tenant sets none */
        ck_assert_int_eq(t->lua_limits.timeout_ms, 50);
        ck_assert_uint_eq(t->lua_limits.memory, 10485760);
        ck_assert_int_eq(t->lua_limits.max_routes, 200);
        ck_assert_int_eq(t->lua_limits.max_middlewares, 20);

        ck_assert_str_eq(u->name, "u");
        ck_assert_str_eq(u->url.host, "127.0.0.1");
        ck_assert_int_eq(u->url.port, 3001);
        ck_assert_str_eq(u->url.hostport, "127.0.0.1:3001");
        ck_assert_str_eq(u->addr.text, "127.0.0.1:3001");
        ck_assert_int_eq(u->weight, 100);
        ck_assert_int_eq(u->keepalive, 8);
        ck_assert_int_eq(u->connect_timeout_ms, 2000);
        ck_assert_int_eq(u->response_timeout_ms, 30000);
        ck_assert_int_eq(u->idle_timeout_ms, 60000);
        ck_assert_int_eq(u->pool_idle_ms, 30000);
        ck_assert_int_eq(u->line, 6);
        ck_assert_int_eq(u->col, 9);
        {
            const char *parts[] = { "t", "u", "http://127.0.0.1:3001" };

            ck_assert_uint_eq(u->id, ks_hash_strings(parts, 3));
        }
        /* built-in health settings, complete after the load */
        h = &u->health;
        ck_assert_str_eq(h->path, "");
        ck_assert_int_eq(h->interval_ms, 10000);
        ck_assert_int_eq(h->timeout_ms, 2000);
        ck_assert_int_eq(h->rise, 2);
        ck_assert_int_eq(h->fall, 3);
        ck_assert_int_eq(h->expect_lo, 200);
        ck_assert_int_eq(h->expect_hi, 399);
        ck_assert_ptr_null(h->host);
        ck_assert_int_eq(h->max_fails, 5);
        ck_assert_int_eq(h->fail_window_ms, 10000);
        ck_assert_int_eq(h->fail_timeout_ms, 10000);
        ck_assert_int_eq(t->health_defaults.interval_ms, 10000);
        ck_assert_int_eq(cfg->health_defaults.fall, 3);
    }
}
END_TEST

START_TEST(test_every_key)
{
    char want[256];
    const struct ks_server_config *s;
    const struct ks_tenant_config *t;

    write_file("hello.lua", "print('hi')\n", 12);
    load_ok("version: 1\n"
            "server:\n"
            "  public_addr: \":8080\"\n"
            "  admin_addr: \"[::1]:9000\"\n"
            "  admin_base_path: \"\"\n"
            "  admin_token: s3cret\n"
            "  workers: 1\n"
            "  min_spare: 0\n"
            "  max_spare: 1\n"
            "  max_workers: 1\n"
            "  max_requests_per_worker: 0\n"
            "  max_keepalive_requests: 1\n"
            "  read_header_timeout: 250ms\n"
            "  read_body_timeout: 1m30s\n"
            "  min_body_rate: 0\n"
            "  send_timeout: 1.5s\n"
            "  idle_timeout: 1h\n"
            "  lingering_time: 0\n"
            "  shutdown_timeout: 0\n"
            "  pid_file: run/k.pid\n"
            "  state_file: /var/tmp/k.state\n"
            "  control_socket: ./k.sock\n"
            "  error_log: logs/error.log\n"
            "  access_log: \"off\"\n"
            "  log_level: debug\n"
            "  user: root\n"
            "  group: root\n"
            "limits:\n"
            "  max_request_line: 4KB\n"
            "  max_header_bytes: 32KB\n"
            "  max_headers: 50\n"
            "  max_body_bytes: 0\n"
            "  max_tenants: 2\n"
            "  max_upstreams: 3\n"
            "  max_routes: 10\n"
            "  route_table_size: 1MB\n"
            "  max_config_size: 64KB\n"
            "lua:\n"
            "  timeout: 100ms\n"
            "  memory: 1MB\n"
            "  max_routes: 5\n"
            "  max_middlewares: 6\n"
            "  hard_timeout: 1s\n"
            "  reload_debounce: 0\n"
            "  expose_errors: true\n"
            "  allowed_env: [HOME, API_KEY_2]\n"
            "dynamic_routing:\n"
            "  max_changes_per_minute: 0\n"
            "tenants:\n"
            "  - name: My-Tenant_1.x\n"
            "    domains: [Api.Example.COM, \"*.Example.org\"]\n"
            "    base_path: /api/v1/\n"
            "    strip_base_path: true\n"
            "    preserve_host: false\n"
            "    forwarded: true\n"
            "    lua_script: hello.lua\n"
            "    lua_limits: {timeout: 20ms, memory: 2MB, max_routes: 7, max_middlewares: 8}\n"
            "    dynamic_routing_enabled: true\n"
            "    all_down: try_anyway\n"
            "    retries: 0\n"
            "    upstreams:\n"
            "      - name: a\n"
            "        url: http://[::1]:3001/\n"
            "        weight: 0\n"
            "        keepalive: 0\n"
            "        connect_timeout: 100ms\n"
            "        response_timeout: 5s\n"
            "        idle_timeout: 6s\n"
            "        pool_idle_timeout: 7s\n");
    s = &cfg->server;
    ck_assert_str_eq(s->public_addr.text, "0.0.0.0:8080");
    ck_assert(s->has_admin_addr);
    ck_assert_str_eq(s->admin_addr.text, "[::1]:9000");
    ck_assert_str_eq(s->admin_base_path, "");
    ck_assert_str_eq(s->admin_token, "s3cret");
    ck_assert_int_eq(s->workers, 1);
    ck_assert_int_eq(s->min_spare, 0);
    ck_assert_int_eq(s->max_requests_per_worker, 0);
    ck_assert_int_eq(s->read_header_timeout_ms, 250);
    ck_assert_int_eq(s->read_body_timeout_ms, 90000);
    ck_assert_uint_eq(s->min_body_rate, 0);
    ck_assert_int_eq(s->send_timeout_ms, 1500);
    ck_assert_int_eq(s->lingering_time_ms, 0);
    ck_assert_int_eq(s->idle_timeout_ms, 3600000);
    ck_assert_int_eq(s->shutdown_timeout_ms, 0);
    snprintf(want, sizeof(want), "%s/run/k.pid", tmpdir);
    ck_assert_str_eq(s->pid_file, want);
    ck_assert_str_eq(s->state_file, "/var/tmp/k.state");
    snprintf(want, sizeof(want), "%s/k.sock", tmpdir);
    ck_assert_str_eq(s->control_socket, want);
    snprintf(want, sizeof(want), "%s/logs/error.log", tmpdir);
    ck_assert_str_eq(s->error_log, want);
    ck_assert_str_eq(s->access_log, "off");
    ck_assert_str_eq(s->log_level, "debug");
    ck_assert_str_eq(s->user, "root");
    ck_assert_str_eq(s->group, "root");

    ck_assert_uint_eq(cfg->limits.max_request_line, 4096);
    ck_assert_uint_eq(cfg->limits.max_body_bytes, 0);
    ck_assert_int_eq(cfg->limits.max_tenants, 2);
    ck_assert_uint_eq(cfg->limits.max_config_size, 65536);
    ck_assert_int_eq(cfg->lua.limits.timeout_ms, 100);
    ck_assert_uint_eq(cfg->lua.limits.memory, 1048576);
    ck_assert(cfg->lua.expose_errors);
    ck_assert_uint_eq(cfg->lua.nallowed_env, 2);
    ck_assert_str_eq(cfg->lua.allowed_env[1], "API_KEY_2");
    ck_assert_int_eq(cfg->dynamic_routing.max_changes_per_minute, 0);

    t = ks_config_tenant(cfg, "My-Tenant_1.x");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->ndomains, 2);
    ck_assert_str_eq(t->domains[0], "api.example.com");
    ck_assert_str_eq(t->domains[1], "*.example.org");
    ck_assert_str_eq(t->base_path, "/api/v1");
    ck_assert(t->strip_base_path);
    ck_assert(!t->preserve_host);
    ck_assert(t->forwarded);
    snprintf(want, sizeof(want), "%s/hello.lua", tmpdir);
    ck_assert_str_eq(t->lua_script, want);
    ck_assert_uint_eq(t->lua_source_len, 12);
    ck_assert_str_eq(t->lua_source, "print('hi')\n");
    ck_assert_int_eq(t->lua_limits.timeout_ms, 20);
    ck_assert_uint_eq(t->lua_limits.memory, 2097152);
    ck_assert_int_eq(t->lua_limits.max_routes, 7);
    ck_assert_int_eq(t->lua_limits.max_middlewares, 8);
    ck_assert(t->dynamic_routing_enabled);
    ck_assert_int_eq(t->all_down, KS_ALL_DOWN_TRY_ANYWAY);
    ck_assert_int_eq(t->retries, 0);
    ck_assert_ptr_null(ks_config_tenant(cfg, "nope"));
    ck_assert_ptr_null(ks_tenant_upstream(t, "nope"));
    {
        const struct ks_upstream_config *u = ks_tenant_upstream(t, "a");

        ck_assert_ptr_nonnull(u);
        ck_assert_str_eq(u->url.hostport, "[::1]:3001");
        ck_assert_str_eq(u->addr.text, "[::1]:3001");
        ck_assert_int_eq(u->weight, 0);
        ck_assert_int_eq(u->keepalive, 0);
        ck_assert_int_eq(u->connect_timeout_ms, 100);
        ck_assert_int_eq(u->response_timeout_ms, 5000);
        ck_assert_int_eq(u->idle_timeout_ms, 6000);
        ck_assert_int_eq(u->pool_idle_ms, 7000);
    }
}
END_TEST

START_TEST(test_health_inheritance)
{
    const struct ks_tenant_config *t1, *t2;
    const struct ks_health_config *h;

    load_ok(SERVER
            "health_defaults:\n"
            "  path: /health\n"
            "  interval: 20s\n"
            "  rise: 4\n"
            "  expect: 2xx\n"
            "  host: probe.local\n"
            "tenants:\n"
            "  - name: t1\n"
            "    health_defaults:\n"
            "      interval: 30s\n"
            "      timeout: 3s\n"
            "      fall: 5\n"
            "      max_fails: 0\n"
            "    upstreams:\n"
            "      - name: plain\n"
            "        url: http://127.0.0.1:1\n"
            "      - name: own\n"
            "        url: http://127.0.0.1:2\n"
            "        health_path: \"\"\n"
            "        health_interval: 1s\n"
            "        health_timeout: 500ms\n"
            "        rise: 1\n"
            "        fall: 1\n"
            "        health_expect: \"204\"\n"
            "        health_host: own.local\n"
            "        max_fails: 9\n"
            "        fail_window: 1m\n"
            "        fail_timeout: 2m\n"
            "  - name: t2\n"
            "    base_path: /two\n"
            "    upstreams:\n"
            "      - name: plain\n"
            "        url: http://127.0.0.1:3\n");
    t1 = ks_config_tenant(cfg, "t1");
    t2 = ks_config_tenant(cfg, "t2");

    /* upstream < tenant < global < built-in */
    h = &ks_tenant_upstream(t1, "plain")->health;
    ck_assert_str_eq(h->path, "/health");       /* global */
    ck_assert_int_eq(h->interval_ms, 30000);    /* tenant */
    ck_assert_int_eq(h->timeout_ms, 3000);      /* tenant */
    ck_assert_int_eq(h->rise, 4);               /* global */
    ck_assert_int_eq(h->fall, 5);               /* tenant */
    ck_assert_int_eq(h->expect_lo, 200);        /* global "2xx" */
    ck_assert_int_eq(h->expect_hi, 299);
    ck_assert_str_eq(h->host, "probe.local");   /* global */
    ck_assert_int_eq(h->max_fails, 0);          /* tenant */
    ck_assert_int_eq(h->fail_window_ms, 10000); /* built-in */
    ck_assert_int_eq(h->fail_timeout_ms, 10000);

    h = &ks_tenant_upstream(t1, "own")->health;
    ck_assert_str_eq(h->path, "");              /* own: TCP check */
    ck_assert_int_eq(h->interval_ms, 1000);
    ck_assert_int_eq(h->timeout_ms, 500);
    ck_assert_int_eq(h->rise, 1);
    ck_assert_int_eq(h->fall, 1);
    ck_assert_int_eq(h->expect_lo, 204);
    ck_assert_int_eq(h->expect_hi, 204);
    ck_assert_str_eq(h->host, "own.local");
    ck_assert_int_eq(h->max_fails, 9);
    ck_assert_int_eq(h->fail_window_ms, 60000);
    ck_assert_int_eq(h->fail_timeout_ms, 120000);

    h = &ks_tenant_upstream(t2, "plain")->health;
    ck_assert_str_eq(h->path, "/health");
    ck_assert_int_eq(h->interval_ms, 20000);    /* global */
    ck_assert_int_eq(h->timeout_ms, 2000);      /* built-in */
    ck_assert_int_eq(h->fall, 3);
    ck_assert_int_eq(h->max_fails, 5);

    /* "200-399" form */
    load_ok(SERVER "health_defaults:\n  expect: 200-204\n");
    ck_assert_int_eq(cfg->health_defaults.expect_lo, 200);
    ck_assert_int_eq(cfg->health_defaults.expect_hi, 204);
}
END_TEST

START_TEST(test_lua_inheritance)
{
    const struct ks_tenant_config *t;

    load_ok(SERVER
            "tenants:\n"
            "  - name: a\n"
            "    lua_limits:\n"
            "      memory: 1MB\n"
            "  - name: b\n"
            "    base_path: /b\n"
            "lua:\n"
            "  timeout: 70ms\n"
            "  max_routes: 9\n");
    /* lua: comes after tenants: in the file; inheritance still applies */
    t = ks_config_tenant(cfg, "a");
    ck_assert_int_eq(t->lua_limits.timeout_ms, 70);
    ck_assert_uint_eq(t->lua_limits.memory, 1048576);
    ck_assert_int_eq(t->lua_limits.max_routes, 9);
    ck_assert_int_eq(t->lua_limits.max_middlewares, 20);
    t = ks_config_tenant(cfg, "b");
    ck_assert_int_eq(t->lua_limits.timeout_ms, 70);
    ck_assert_uint_eq(t->lua_limits.memory, 10485760);
}
END_TEST

START_TEST(test_null_values)
{
    /* empty sections and lists are allowed; a scalar needs a value */
    load_ok(SERVER "lua:\nlimits:\nhealth_defaults: ~\ntenants:\n");
    ck_assert_uint_eq(cfg->ntenants, 0);
    load_ok(SERVER "tenants:\n  - name: t\n    domains:\n    upstreams: []\n");
    ck_assert_uint_eq(cfg->tenants[0].ndomains, 0);
    ck_assert_uint_eq(cfg->tenants[0].nupstreams, 0);

    load(SERVER "  workers:\n");
    assert_only_err("3:11: server.workers: expected an integer between 1 and 4096, got nothing");
    load(SERVER "  admin_token: ~\n");
    assert_only_err("3:16: server.admin_token: expected a string, got nothing");
    /* quoted "null" is a string */
    load_ok(SERVER "  admin_token: \"null\"\n");
    ck_assert_str_eq(cfg->server.admin_token, "null");
}
END_TEST

/* ---- errors: one kind at a time -------------------------------------------- */

START_TEST(test_unknown_keys)
{
    load(SERVER "  wokers: 3\n");
    assert_only_err("3:3: server.wokers: unknown key (did you mean \"workers\"?)");

    load(SERVER "  frobnicate: 3\n");
    assert_only_err("3:3: server.frobnicate: unknown key");

    /* a key one level too high */
    load(SERVER "workers: 3\n");
    assert_only_err("3:1: workers: unknown key (did you mean \"server.workers\"?)");

    load(SERVER
         "tenants:\n"
         "  - name: t\n"
         "    upstreams:\n"
         "      - name: u\n"
         "        url: http://127.0.0.1:1\n"
         "        helth_path: /h\n");
    assert_only_err("8:9: tenants[0].upstreams[0].helth_path: unknown key (did you mean \"health_path\"?)");

    /* COMPAT.md keys are not part of the native dialect (yet) */
    load(SERVER "tenants:\n  - name: t\n    services: []\n");
    assert_only_err("5:5: tenants[0].services: unknown key");
}
END_TEST

START_TEST(test_duplicate_keys)
{
    char yaml[4096];
    size_t pos = 0;
    int i;

    load(SERVER "  workers: 4\n  min_spare: 1\n  workers: 5\n");
    assert_only_err("5:3: server.workers: duplicate key (first at line 3)");
    /* the first one counts */
    load(SERVER "  workers: 4\n  workers: 5\n  workers: 6\n");
    ck_assert_uint_eq(diag.n, 2);
    assert_err("4:3: server.workers: duplicate key (first at line 3)");
    assert_err("5:3: server.workers: duplicate key (first at line 3)");

    load(SERVER "server:\n  workers: 5\n");
    assert_only_err("3:1: server: duplicate key (first at line 1)");

    /* a large mapping takes the sorted path in yamltree.c */
    ks_appendf(yaml, sizeof(yaml), &pos, SERVER "lua:\n  allowed_env:\n");
    for (i = 0; i < 30; i++)
        ks_appendf(yaml, sizeof(yaml), &pos, "  - V%d\n", i);
    ks_appendf(yaml, sizeof(yaml), &pos, "x:\n");
    for (i = 0; i < 30; i++)
        ks_appendf(yaml, sizeof(yaml), &pos, "  k%d: 1\n", i % 20);
    load(yaml);
    /* nothing below an unknown key is looked at: one error */
    assert_err("35:1: x: unknown key");
    ck_assert_uint_eq(diag.n, 1);
}
END_TEST

START_TEST(test_yamltree_duplicates)
{
    struct ks_yaml_error err;
    struct ks_ynode *root;
    char yaml[2048];
    size_t pos = 0, i;

    for (i = 0; i < 40; i++)
        ks_appendf(yaml, sizeof(yaml), &pos, "k%zu: %zu\n", i % 25, i);
    root = ks_yaml_parse(yaml, pos, &err);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(root->type, KS_YMAP);
    ck_assert_uint_eq(root->n, 40);
    for (i = 0; i < 40; i++) {
        ck_assert_int_eq(root->pairs[i].key->line, (int)i + 1);
        ck_assert_int_eq(root->pairs[i].dup_line, i < 25 ? 0 : (int)(i - 25) + 1);
    }
    ks_yaml_free(root);

    /* scalar details: line/col, style, embedded NUL */
    root = ks_yaml_parse("a:\n  - 'x'\n  - \"y\\0z\"\n  - ~\n", 28, &err);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(root->pairs[0].value->type, KS_YSEQ);
    ck_assert_int_eq(root->pairs[0].value->line, 2);
    ck_assert_int_eq(root->pairs[0].value->col, 3);
    ck_assert(!root->pairs[0].value->items[0]->plain);
    ck_assert_int_eq(root->pairs[0].value->items[0]->col, 5);
    ck_assert_uint_eq(root->pairs[0].value->items[1]->len, 3);
    ck_assert(ks_ynode_is_null(root->pairs[0].value->items[2]));
    ck_assert(!ks_ynode_is_null(root->pairs[0].value->items[0]));
    ks_yaml_free(root);

    /* an empty document is no root and no error */
    root = ks_yaml_parse("# nothing\n", 10, &err);
    ck_assert_ptr_null(root);
    ck_assert_str_eq(err.msg, "");
}
END_TEST

START_TEST(test_scalar_types)
{
    load(SERVER "  idle_timeout: 5\n");
    assert_only_err("3:17: server.idle_timeout: expected a duration like \"250ms\", \"5s\" or \"2m\", got \"5\"");
    load(SERVER "  idle_timeout: -5s\n");
    assert_only_err("3:17: server.idle_timeout: durations cannot be negative, got \"-5s\"");
    load(SERVER "  idle_timeout: 2h\n");
    assert_only_err("3:17: server.idle_timeout: expected a duration between 1ms and 1h, got \"2h\"");
    load(SERVER "  idle_timeout: 0\n");
    assert_only_err("3:17: server.idle_timeout: expected a duration between 1ms and 1h, got \"0\"");
    load(SERVER "  workers: four\n");
    assert_only_err("3:12: server.workers: expected an integer between 1 and 4096, got \"four\"");
    load(SERVER "  workers: 0\n");
    assert_only_err("3:12: server.workers: expected an integer between 1 and 4096, got \"0\"");
    load(SERVER "  workers: 99999999999999999999999\n");
    assert_only_err("3:12: server.workers: expected an integer between 1 and 4096, got \"99999999999999999999999\"");
    /* the ends of the int64 range, exactly */
    ck_assert_int_eq(load_ok(SERVER "  max_requests_per_worker: 9223372036854775807\n")->server.max_requests_per_worker,
                     INT64_MAX);
    load(SERVER "  max_requests_per_worker: 9223372036854775808\n");
    assert_only_err("3:28: server.max_requests_per_worker: expected an integer between 0 and 9223372036854775807, "
                    "got \"9223372036854775808\"");
    load(SERVER "  workers: 4.0\n");
    assert_only_err("3:12: server.workers: expected an integer between 1 and 4096, got \"4.0\"");
    load(SERVER "limits:\n  max_body_bytes: 10 MB\n");
    assert_only_err("4:19: limits.max_body_bytes: expected a size like \"512\", \"16KB\" or \"10MB\", got \"10 MB\"");
    load(SERVER "limits:\n  max_header_bytes: 512\n");
    assert_only_err("4:21: limits.max_header_bytes: expected a size between 1KB and 16MB, got \"512\"");
    load(SERVER "lua:\n  expose_errors: yes\n");
    assert_only_err("4:18: lua.expose_errors: expected true or false, got \"yes\"");
    load(SERVER "  log_level: verbose\n");
    assert_only_err("3:14: server.log_level: expected one of \"error\", \"warn\", \"info\", \"debug\", got \"verbose\"");
    load(SERVER "tenants:\n  - name: t\n    all_down: maybe\n");
    assert_only_err("5:15: tenants[0].all_down: expected one of \"fail\", \"try_anyway\", got \"maybe\"");
    load(SERVER "tenants:\n  - name: t\n    retries: 11\n");
    assert_only_err("5:14: tenants[0].retries: expected an integer between 0 and 10, got \"11\"");
    load(SERVER "health_defaults:\n  expect: 2x\n");
    assert_only_err("4:11: health_defaults.expect: expected a status like \"200\", a range like \"200-399\" or a class like \"2xx\", got \"2x\"");
    load(SERVER "health_defaults:\n  expect: 399-200\n");
    assert_only_err("4:11: health_defaults.expect: expected statuses between 100 and 599, low to high, got \"399-200\"");
    load(SERVER "  admin_token: \"a b\"\n");
    assert_only_err("3:16: server.admin_token: must not contain spaces or control characters");
    load(SERVER "  admin_token: \"a\\0b\"\n");
    assert_only_err("3:16: server.admin_token: expected a string, got a value with a NUL byte");
    load(SERVER "  pid_file: \"\"\n");
    assert_only_err("3:13: server.pid_file: expected a file name, got \"\"");
    load(SERVER "lua:\n  allowed_env: [HOME, 1X, HOME]\n");
    ck_assert_uint_eq(diag.n, 2);
    assert_err("4:23: lua.allowed_env[1]: expected an environment variable name, got \"1X\"");
    assert_err("4:27: lua.allowed_env[2]: \"HOME\" is listed twice (first at line 4)");
}
END_TEST

START_TEST(test_addresses)
{
    load("server:\n  public_addr: localhost:8080\n");
    assert_only_err("2:16: server.public_addr: expected an address like \"127.0.0.1:8080\", \":8080\" or \"[::1]:8080\", got \"localhost:8080\" (the host must be a numeric IP address, got \"localhost\")");
    load("server:\n  public_addr: 127.0.0.1\n");
    assert_only_err("2:16: server.public_addr: expected an address like \"127.0.0.1:8080\", \":8080\" or \"[::1]:8080\", got \"127.0.0.1\" (missing \":port\")");
    load("server:\n  public_addr: 8080\n");
    assert_only_err("2:16: server.public_addr: expected an address like \"127.0.0.1:8080\", \":8080\" or \"[::1]:8080\", got \"8080\" (missing \":port\")");

    load(SERVER "  admin_addr: 127.0.0.1:8080\n");
    assert_only_err("3:15: server.admin_addr: admin_addr 127.0.0.1:8080 clashes with public_addr 127.0.0.1:8080");
    load(SERVER "  admin_addr: \"*:8080\"\n");
    assert_only_err("3:15: server.admin_addr: admin_addr 0.0.0.0:8080 clashes with public_addr 127.0.0.1:8080");
    load_ok(SERVER "  admin_addr: 127.0.0.2:8080\n");
    load_ok(SERVER "  admin_addr: \"[::1]:8080\"\n");
}
END_TEST

START_TEST(test_wrong_types)
{
    load("server: 5\n");
    /* the section is refused, so its required key is not looked for */
    assert_only_err("1:9: server: expected a mapping, got \"5\"");
    load("server: [a]\n");
    assert_only_err("1:9: server: expected a mapping, got a list");
    load(SERVER "  workers: {n: 4}\n");
    assert_only_err("3:12: server.workers: expected an integer between 1 and 4096, got a mapping");
    load(SERVER "  admin_base_path: [a]\n");
    assert_only_err("3:20: server.admin_base_path: expected a string, got a list");
    load(SERVER "tenants:\n  name: t\n");
    assert_only_err("4:3: tenants: expected a list of mappings, got a mapping");
    load(SERVER "tenants:\n  - t1\n");
    assert_only_err("4:5: tenants[0]: expected a mapping, got \"t1\"");
    load(SERVER "tenants:\n  - name: t\n    domains: example.com\n");
    assert_only_err("5:14: tenants[0].domains: expected a list of strings, got \"example.com\"");
    load(SERVER "tenants:\n  - name: t\n    domains: [[a]]\n");
    assert_only_err("5:15: tenants[0].domains[0]: expected a string, got a list");
    load("- a\n");
    assert_only_err("1:1: expected a mapping at the top level, got a list");
    load("just text\n");
    assert_only_err("1:1: expected a mapping at the top level, got \"just text\"");
}
END_TEST

START_TEST(test_required)
{
    load("");
    assert_only_err("1:1: server.public_addr: required key is missing");
    load("server:\n  workers: 2\n");
    assert_only_err("1:1: server.public_addr: required key is missing");
    load("limits: {}\n");
    assert_only_err("1:1: server.public_addr: required key is missing");
    load(SERVER "tenants:\n  - base_path: /x\n    upstreams:\n      - weight: 1\n");
    ck_assert_uint_eq(diag.n, 3);
    assert_err("4:5: tenants[0].name: required key is missing");
    assert_err("6:9: tenants[0].upstreams[0].name: required key is missing");
    assert_err("6:9: tenants[0].upstreams[0].url: required key is missing");
}
END_TEST

START_TEST(test_urls)
{
#define UP SERVER "tenants:\n  - name: t\n    upstreams:\n      - name: u\n"
    load(UP "        url: ftp://x\n");
    assert_only_err("7:14: tenants[0].upstreams[0].url: expected an http:// URL with host and port, got \"ftp://x\"");
    load(UP "        url: 127.0.0.1:80\n");
    assert_only_err("7:14: tenants[0].upstreams[0].url: expected an http:// URL with host and port, got \"127.0.0.1:80\"");
    load(UP "        url: https://127.0.0.1:443\n");
    assert_only_err("7:14: tenants[0].upstreams[0].url: https upstreams are not supported yet, got \"https://127.0.0.1:443\" (use http://)");
    load(UP "        url: http://127.0.0.1:80/api\n");
    assert_only_err("7:14: tenants[0].upstreams[0].url: expected an http:// URL with host and port, got \"http://127.0.0.1:80/api\" (a path other than \"/\" is not supported)");
    load(UP "        url: http://127.0.0.1:99999\n");
    assert_only_err("7:14: tenants[0].upstreams[0].url: expected an http:// URL with host and port, got \"http://127.0.0.1:99999\" (the port must be a number from 1 to 65535)");
    load(UP "        url: http://backend.invalid:80\n");
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(diag.n, 1);
    ck_assert_msg(strstr(diag.msgs[0], ":7:14: tenants[0].upstreams[0].url: cannot resolve \"backend.invalid\": ") != NULL,
                  "%s", all_errors());
    /* port 80 by default, trailing slash allowed */
    load_ok(UP "        url: http://127.0.0.1/\n");
    ck_assert_int_eq(cfg->tenants[0].upstreams[0].url.port, 80);
    ck_assert_str_eq(cfg->tenants[0].upstreams[0].addr.text, "127.0.0.1:80");
#undef UP
}
END_TEST

START_TEST(test_tenant_fields)
{
    load(SERVER "tenants:\n  - name: \"bad name\"\n");
    assert_only_err("4:11: tenants[0].name: expected a name of 1 to 64 characters among A-Z a-z 0-9 . _ -, got \"bad name\"");
    load(SERVER "tenants:\n  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(diag.n, 1);
    load_ok(SERVER "tenants:\n  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");

    load(SERVER "tenants:\n  - name: t\n    domains: [ok.com, \"a..b\", \"x.com:80\", \"-x.com\", \"a.*.com\", \"*\", Ok.COM]\n");
    ck_assert_uint_eq(diag.n, 6);
    assert_err("5:23: tenants[0].domains[1]: expected a host name or a \"*.suffix\" wildcard, got \"a..b\"");
    assert_err("5:31: tenants[0].domains[2]: a domain has no port (the port of the Host header is ignored), got \"x.com:80\"");
    assert_err("5:43: tenants[0].domains[3]: expected a host name or a \"*.suffix\" wildcard, got \"-x.com\"");
    assert_err("5:53: tenants[0].domains[4]: expected a host name or a \"*.suffix\" wildcard, got \"a.*.com\"");
    assert_err("5:64: tenants[0].domains[5]: expected a host name or a \"*.suffix\" wildcard, got \"*\"");
    assert_err("5:69: tenants[0].domains[6]: \"ok.com\" is listed twice (first at line 5)");

    /* IPv6 literals are domains in brackets, as the Host header has them */
    load_ok(SERVER "tenants:\n  - name: t\n    domains: [\"[::1]\", \"[2001:DB8::1]\"]\n");
    ck_assert_str_eq(cfg->tenants[0].domains[1], "[2001:db8::1]");
    load(SERVER "tenants:\n  - name: t\n    domains: [\"::1\"]\n");
    assert_only_err("5:15: tenants[0].domains[0]: an IPv6 address is written in brackets, as in the Host header: [::1]");
    load(SERVER "tenants:\n  - name: t\n    domains: [\"[::g]\"]\n");
    assert_only_err("5:15: tenants[0].domains[0]: expected an IPv6 address in the brackets, got \"[::g]\"");

    /* a tenant whose domains were refused is not also called domain-less */
    load(SERVER "tenants:\n  - name: a\n    domains: [\"*\"]\n  - name: b\n    domains: [\"a..b\"]\n"
                "  - name: c\n");
    ck_assert_uint_eq(diag.n, 2);

    load(SERVER "tenants:\n  - name: t\n    base_path: api\n");
    assert_only_err("5:16: tenants[0].base_path: must start with \"/\", got \"api\"");
    load(SERVER "tenants:\n  - name: t\n    base_path: /a//b\n");
    assert_only_err("5:16: tenants[0].base_path: must not contain \"//\", got \"/a//b\"");
    load(SERVER "tenants:\n  - name: t\n    base_path: /a/./b\n");
    assert_only_err("5:16: tenants[0].base_path: must not contain \".\" or \"..\" segments, got \"/a/./b\"");
    load(SERVER "tenants:\n  - name: t\n    base_path: /a/..\n");
    assert_only_err("5:16: tenants[0].base_path: must not contain \".\" or \"..\" segments, got \"/a/..\"");
    load(SERVER "tenants:\n  - name: t\n    base_path: /a%20b\n");
    assert_only_err("5:16: tenants[0].base_path: must not contain spaces, control characters, %, ? or #, got \"/a%20b\"");
    load_ok(SERVER "tenants:\n  - name: t\n    base_path: /a/..b/.c/\n");
    ck_assert_str_eq(cfg->tenants[0].base_path, "/a/..b/.c");

    load(SERVER "  admin_base_path: /\n");
    assert_only_err("3:20: server.admin_base_path: must be \"\" (off) or a path like \"/admin\" without a trailing \"/\", got \"/\"");
    load(SERVER "  admin_base_path: /admin/\n");
    assert_only_err("3:20: server.admin_base_path: must be \"\" (off) or a path like \"/admin\" without a trailing \"/\", got \"/admin/\"");
    load(SERVER "  admin_base_path: admin\n");
    assert_only_err("3:20: server.admin_base_path: must start with \"/\", got \"admin\"");
    load_ok(SERVER "  admin_base_path: /_/admin\n");
}
END_TEST

START_TEST(test_server_cross_field)
{
    load(SERVER "  workers: 10\n  max_workers: 8\n");
    assert_only_err("3:12: server.workers: workers (10) cannot exceed max_workers (8)");
    /* only max_workers set: the defaults of workers and max_spare (4, 8)
     * give way to it, as Apache's do */
    load_ok(SERVER "  max_workers: 3\n");
    ck_assert_int_eq(cfg->server.workers, 3);
    ck_assert_int_eq(cfg->server.max_spare, 3);
    ck_assert_int_eq(cfg->server.min_spare, 2);
    load_ok(SERVER "  max_workers: 1\n");
    ck_assert_int_eq(cfg->server.workers, 1);
    ck_assert_int_eq(cfg->server.max_spare, 1);
    ck_assert_int_eq(cfg->server.min_spare, 1);
    /* and the default min_spare (2) to max_spare */
    load_ok(SERVER "  max_spare: 1\n");
    ck_assert_int_eq(cfg->server.min_spare, 1);
    /* two values the file sets that disagree: an error, at the later one */
    load(SERVER "  max_workers: 3\n  max_spare: 5\n");
    assert_only_err("4:14: server.max_spare: max_spare (5) cannot exceed max_workers (3)");
    load(SERVER "  min_spare: 9\n");
    assert_only_err("3:14: server.min_spare: min_spare (9) cannot exceed max_spare (8)");
    load_ok(SERVER "  workers: 64\n  min_spare: 8\n");
    /* a refused value is not compared with the others: its default would
     * be blamed */
    load(SERVER "  workers: -1\n  max_workers: 1\n");
    assert_only_err("3:12: server.workers: expected an integer between 1 and 4096, got \"-1\"");
    load(SERVER "  min_spare: 9\n  max_spare: many\n");
    assert_only_err("4:14: server.max_spare: expected an integer between 1 and 4096, got \"many\"");
    load(SERVER "lua:\n  timeout: 5s\n  hard_timeout: soon\n");
    assert_only_err("5:17: lua.hard_timeout: expected a duration like \"250ms\", \"5s\" or \"2m\", got \"soon\"");

    load(SERVER "lua:\n  timeout: 2s\n");
    assert_only_err("4:12: lua.timeout: hard_timeout (2s) must exceed timeout (2s)");
    load(SERVER "lua:\n  hard_timeout: 10ms\n");
    assert_only_err("4:17: lua.hard_timeout: hard_timeout (10ms) must exceed timeout (50ms)");
    load(SERVER "tenants:\n  - name: t\n    lua_limits:\n      timeout: 3s\n");
    assert_only_err("6:16: tenants[0].lua_limits.timeout: timeout (3s) must be below lua.hard_timeout (2s)");
}
END_TEST

START_TEST(test_health_timeouts)
{
    /* reported once, where it was written */
    load(SERVER
         "health_defaults:\n"
         "  timeout: 10s\n"
         "tenants:\n"
         "  - name: t\n"
         "    upstreams:\n"
         "      - name: u\n"
         "        url: http://127.0.0.1:1\n");
    assert_only_err("4:12: health_defaults.timeout: health timeout (10s) must be below the health interval (10s)");

    /* an interval with the default timeout: the default is capped at
     * half the interval, only a timeout someone wrote is checked */
    load(SERVER
         "tenants:\n"
         "  - name: t\n"
         "    health_defaults:\n"
         "      interval: 1s\n"
         "    upstreams:\n"
         "      - name: u\n"
         "        url: http://127.0.0.1:1\n"
         "      - name: v\n"
         "        url: http://127.0.0.1:2\n"
         "        health_timeout: 1s\n");
    assert_only_err("12:25: tenants[0].upstreams[1].health_timeout: health timeout (1s) must be below the health interval (1s)");
}
END_TEST

static const struct ks_health_config *health_of(const char *tenant, const char *upstream)
{
    return &ks_tenant_upstream(ks_config_tenant(cfg, tenant), upstream)->health;
}

START_TEST(test_health_default_timeout)
{
    /* the tester's two cases: only an interval of 1s, at an upstream and
     * in health_defaults */
    load_ok(SERVER
            "tenants:\n"
            "  - name: t\n"
            "    upstreams:\n"
            "      - name: u\n"
            "        url: http://127.0.0.1:1\n"
            "        health_interval: 1s\n"
            "      - name: slow\n"
            "        url: http://127.0.0.1:2\n"
            "        health_interval: 1m\n"
            "      - name: fast\n"
            "        url: http://127.0.0.1:3\n"
            "        health_interval: 100ms\n");
    ck_assert_int_eq(health_of("t", "u")->timeout_ms, 500);        /* min(2s, 1s / 2) */
    ck_assert_int_eq(health_of("t", "slow")->timeout_ms, 2000);    /* the default */
    ck_assert_int_eq(health_of("t", "fast")->timeout_ms, 50);
    load_ok(SERVER
            "health_defaults:\n"
            "  interval: 1s\n"
            "tenants:\n"
            "  - name: t\n"
            "    upstreams:\n"
            "      - name: u\n"
            "        url: http://127.0.0.1:1\n"
            "      - name: v\n"
            "        url: http://127.0.0.1:2\n"
            "        health_interval: 30s\n");
    ck_assert_int_eq(cfg->health_defaults.timeout_ms, 500);
    ck_assert_int_eq(health_of("t", "u")->timeout_ms, 500);
    /* the default again, not the 500ms derived above: nobody wrote it */
    ck_assert_int_eq(health_of("t", "v")->timeout_ms, 2000);

    /* a timeout written somewhere is kept, and checked, at every level
     * that inherits it and sets its own interval */
    load_ok(SERVER
            "health_defaults:\n"
            "  timeout: 3s\n"
            "tenants:\n"
            "  - name: t\n"
            "    health_defaults:\n"
            "      interval: 5s\n"
            "    upstreams:\n"
            "      - name: u\n"
            "        url: http://127.0.0.1:1\n");
    ck_assert_int_eq(health_of("t", "u")->timeout_ms, 3000);
    load(SERVER
         "health_defaults:\n"
         "  timeout: 3s\n"
         "tenants:\n"
         "  - name: t\n"
         "    upstreams:\n"
         "      - name: u\n"
         "        url: http://127.0.0.1:1\n"
         "        health_interval: 1s\n");
    assert_only_err("10:26: tenants[0].upstreams[0].health_interval: health timeout (3s) must be below the health interval (1s)");

    load(SERVER
         "tenants:\n"
         "  - name: t\n"
         "    upstreams:\n"
         "      - name: u\n"
         "        url: http://127.0.0.1:1\n"
         "        health_interval: 1s\n"
         "        health_timeout: 1s\n");
    assert_only_err("9:25: tenants[0].upstreams[0].health_timeout: health timeout (1s) must be below the health interval (1s)");
}
END_TEST

START_TEST(test_duplicate_names)
{
    load(SERVER
         "tenants:\n"
         "  - name: a\n"
         "    base_path: /a\n"
         "    upstreams:\n"
         "      - {name: u, url: \"http://127.0.0.1:1\"}\n"
         "      - {name: u, url: \"http://127.0.0.1:2\"}\n"
         "  - name: a\n"
         "    base_path: /b\n");
    ck_assert_uint_eq(diag.n, 2);
    assert_err("8:16: tenants[0].upstreams[1].name: duplicate upstream name \"u\" in tenant \"a\" (first at line 7)");
    assert_err("9:11: tenants[1].name: duplicate tenant name \"a\" (first at line 4)");
}
END_TEST

START_TEST(test_tenant_overlap)
{
    load(SERVER
         "tenants:\n"
         "  - name: a\n"
         "    domains: [x.com, y.com]\n"
         "  - name: b\n"
         "    domains: [z.com, Y.com]\n");
    assert_only_err("7:5: tenants[1].domains: tenants \"a\" (line 4) and \"b\" both serve domain \"y.com\" under base_path \"/\"");

    /* the trailing "/" does not make a different prefix */
    load(SERVER
         "tenants:\n"
         "  - name: a\n"
         "    base_path: /api\n"
         "  - name: b\n"
         "    base_path: /api/\n");
    assert_only_err("7:16: tenants[1].base_path: tenants \"a\" (line 4) and \"b\" both have no domains and base_path \"/api\"");

    load(SERVER "tenants:\n  - name: a\n  - name: b\n");
    assert_only_err("5:5: tenants[1]: tenants \"a\" (line 4) and \"b\" both have no domains and base_path \"/\"");

    /* different prefixes, or domains vs. no domains, are fine */
    load_ok(SERVER
            "tenants:\n"
            "  - name: a\n"
            "    domains: [x.com]\n"
            "  - name: b\n"
            "  - name: c\n"
            "    domains: [x.com]\n"
            "    base_path: /c\n"
            "  - name: d\n"
            "    domains: [\"*.x.com\"]\n");

    /* keystoned answers admin_base_path and what is under it itself */
    load(SERVER "tenants:\n  - name: a\n    base_path: /admin/app\n");
    assert_only_err("5:16: tenants[0].base_path: \"/admin/app\" is under server.admin_base_path \"/admin\", "
                    "whose paths keystoned answers itself");
    load(SERVER "tenants:\n  - name: a\n    base_path: /admin\n");
    assert_only_err("5:16: tenants[0].base_path: \"/admin\" is under server.admin_base_path \"/admin\", "
                    "whose paths keystoned answers itself");
    load_ok(SERVER "tenants:\n  - name: a\n    base_path: /administration\n");
    load_ok("server:\n  public_addr: 127.0.0.1:8080\n  admin_base_path: \"\"\n"
            "tenants:\n  - name: a\n    base_path: /admin\n");
}
END_TEST

START_TEST(test_capacities)
{
    load(SERVER
         "limits:\n"
         "  max_tenants: 2\n"
         "  max_upstreams: 2\n"
         "tenants:\n"
         "  - name: a\n"
         "    domains: [a]\n"
         "    upstreams:\n"
         "      - {name: u1, url: \"http://127.0.0.1:1\"}\n"
         "      - {name: u2, url: \"http://127.0.0.1:2\"}\n"
         "  - name: b\n"
         "    domains: [b]\n"
         "    upstreams:\n"
         "      - {name: u1, url: \"http://127.0.0.1:1\"}\n"
         "  - name: c\n"
         "    domains: [c]\n");
    ck_assert_uint_eq(diag.n, 2);
    assert_err("15:9: tenants[1].upstreams[0]: more than limits.max_upstreams (2) upstreams in all tenants");
    assert_err("16:5: tenants[2]: more than limits.max_tenants (2) tenants");
}
END_TEST

START_TEST(test_lua_script)
{
    char big[(1 << 20) + 2];

    load(SERVER "tenants:\n  - name: t\n    lua_script: scripts/missing.lua\n");
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(diag.n, 1);
    {
        char want[512];

        snprintf(want, sizeof(want), "5:17: tenants[0].lua_script: cannot open \"%s/scripts/missing.lua\": No such file or directory", tmpdir);
        assert_err(want);
    }
    memset(big, '-', sizeof(big));
    write_file("big.lua", big, sizeof(big));
    load(SERVER "tenants:\n  - name: t\n    lua_script: big.lua\n");
    ck_assert_ptr_null(cfg);
    ck_assert_msg(diag.n == 1 && strstr(diag.msgs[0], ":5:17: tenants[0].lua_script: ") != NULL &&
                  strstr(diag.msgs[0], "is too large") != NULL, "%s", all_errors());
    /* exactly 1MB is accepted */
    write_file("big.lua", big, 1 << 20);
    load_ok(SERVER "tenants:\n  - name: t\n    lua_script: big.lua\n");
    ck_assert_uint_eq(cfg->tenants[0].lua_source_len, 1 << 20);
    ck_assert_uint_eq(strlen(cfg->tenants[0].lua_source), 1 << 20);
}
END_TEST

START_TEST(test_users_and_version)
{
    load(SERVER "  user: no-such-user-ks\n  group: no-such-group-ks\n");
    ck_assert_uint_eq(diag.n, 2);
    assert_err("3:9: server.user: unknown user \"no-such-user-ks\"");
    assert_err("4:10: server.group: unknown group \"no-such-group-ks\"");
    load("version: 2\n" SERVER);
    assert_only_err("1:10: version: unsupported version \"2\" (this keystoned reads version 1)");
    load_ok("version: 1\n" SERVER);
}
END_TEST

START_TEST(test_all_errors_collected)
{
    load("server:\n"
         "  public_addr: nope\n"
         "  wokers: 1\n"
         "  idle_timeout: 5\n"
         "tenants:\n"
         "  - name: t\n"
         "    upstreams:\n"
         "      - name: u\n"
         "        url: ftp://x\n"
         "lua:\n"
         "  expose_errors: maybe\n");
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(diag.n, 5);
    /* in file order */
    ck_assert_msg(strstr(diag.msgs[0], ":2:16: server.public_addr: ") != NULL, "%s", all_errors());
    ck_assert_msg(strstr(diag.msgs[1], ":3:3: server.wokers: ") != NULL, "%s", all_errors());
    ck_assert_msg(strstr(diag.msgs[2], ":4:17: server.idle_timeout: ") != NULL, "%s", all_errors());
    ck_assert_msg(strstr(diag.msgs[3], ":9:14: tenants[0].upstreams[0].url: ") != NULL, "%s", all_errors());
    ck_assert_msg(strstr(diag.msgs[4], ":11:18: lua.expose_errors: ") != NULL, "%s", all_errors());
}
END_TEST

START_TEST(test_error_cap)
{
    static char yaml[8192];
    size_t pos = 0;
    int i;

    ks_appendf(yaml, sizeof(yaml), &pos, SERVER);
    for (i = 0; i < 150; i++)
        ks_appendf(yaml, sizeof(yaml), &pos, "  zz%d: 1\n", i);
    load(yaml);
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(diag.n, 101);
    assert_err("3:3: server.zz0: unknown key");
    assert_err("102:3: server.zz99: unknown key");
    ck_assert_msg(strstr(diag.msgs[100], "too many errors (150), only the first 100 are shown") != NULL,
                  "%s", diag.msgs[100]);
}
END_TEST

/* ---- what libyaml and the caps refuse ---------------------------------- */

START_TEST(test_yaml_errors)
{
    load(SERVER "  workers: &w 4\n  max_workers: *w\n");
    assert_only_err("3:12: server.workers: anchors and aliases are not supported");
    load("defaults: &d {a: 1}\n");
    assert_only_err("1:11: defaults: anchors and aliases are not supported");
    load(SERVER "---\n" SERVER);
    assert_only_err("3:1: multiple documents are not supported");
    load(SERVER "  ? [a, b]\n  : 1\n");
    assert_only_err("3:5: server: mapping keys must be scalars");
    load(SERVER "  workers: !!int 4\n");
    assert_only_err("3:12: server.workers: tags are not supported");
    load("server:\n  public_addr: [1\n");
    assert_only_err("3:1: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at line 2, column 16)");
    load("server:\n  public_addr: 1\n   workers: 3\n");
    assert_only_err("3:11: invalid YAML: mapping values are not allowed in this context");
    load("server:\n\tworkers: 3\n");
    assert_only_err("2:1: invalid YAML: found character that cannot start any token (while scanning for the next token at line 2, column 1); "
                    "a tab in the indentation: YAML indents with spaces only");
    load("a: \xff\n");
    assert_only_err("1:4: invalid YAML: invalid leading UTF-8 octet (byte 0xff)");
}
END_TEST

START_TEST(test_depth_bomb)
{
    size_t n = 1 << 20, i;
    char *yaml = malloc(2 * n + 16);
    struct ks_yaml_error err;
    char path[256];

    /* a megabyte of "[": stopped at depth 33, long before the end */
    memcpy(yaml, "server: ", 8);
    for (i = 0; i < n; i++)
        yaml[8 + i] = '[';
    for (i = 0; i < n; i++)
        yaml[8 + n + i] = ']';
    yaml[8 + 2 * n] = '\0';
    load(yaml);
    snprintf(path, sizeof(path), "1:40: server");
    for (i = 0; i < 31; i++)
        strcat(path, "[0]");
    strcat(path, ": nesting deeper than 32 levels");
    assert_only_err(path);

    /* block style too; exactly 32 levels is fine */
    {
        char blk[4096];
        size_t pos = 0;
        struct ks_ynode *root;

        for (i = 0; i < 32; i++)
            ks_appendf(blk, sizeof(blk), &pos, "%*sk:\n", (int)(2 * i), "");
        ks_appendf(blk, sizeof(blk), &pos, "%*sv\n", 64, "");
        root = ks_yaml_parse(blk, pos, &err);
        ck_assert_msg(root != NULL, "%s", err.msg);
        ks_yaml_free(root);
        pos = 0;
        for (i = 0; i < 33; i++)
            ks_appendf(blk, sizeof(blk), &pos, "%*sk:\n", (int)(2 * i), "");
        ks_appendf(blk, sizeof(blk), &pos, "%*sv\n", 66, "");
        ck_assert_ptr_null(ks_yaml_parse(blk, pos, &err));
        ck_assert_str_eq(err.msg, "nesting deeper than 32 levels");
        ck_assert_int_eq(err.line, 33);
        ck_assert_int_eq(err.col, 65);
    }
    free(yaml);
}
END_TEST

START_TEST(test_node_cap)
{
    size_t n = 150000, i, pos = 0;
    char *yaml = malloc(2 * n + 64);

    pos += (size_t)sprintf(yaml, SERVER "x: [");
    for (i = 0; i < n; i++)
        pos += (size_t)sprintf(yaml + pos, "1,");
    strcpy(yaml + pos, "1]\n");
    load(yaml);
    /* the root mapping, 5 nodes for server, "x" and its list come first:
     * node 100001 is item 99993, at column 5 + 2 * 99993 */
    assert_only_err("3:199991: x[99993]: more than 100000 nodes");
    free(yaml);
}
END_TEST

START_TEST(test_file_size)
{
    size_t n = 2 << 20;
    char *yaml = malloc(n + 1);
    char want[128];

    memset(yaml, '#', n);
    memcpy(yaml, SERVER, strlen(SERVER));
    yaml[n - 1] = '\n';
    yaml[n] = '\0';
    load(yaml);
    snprintf(want, sizeof(want), " the file is %zu bytes, more than limits.max_config_size (1MB)", n);
    assert_only_err(want);

    /* raising the limit in the file itself accepts it */
    memcpy(yaml, SERVER "limits:\n  max_config_size: 4MB\n",
           strlen(SERVER "limits:\n  max_config_size: 4MB\n"));
    load_ok(yaml);
    memcpy(yaml, SERVER "limits:\n  max_config_size: 1MB\n",
           strlen(SERVER "limits:\n  max_config_size: 1MB\n"));
    load(yaml);
    snprintf(want, sizeof(want), "4:20: limits.max_config_size: the file is %zu bytes, more than limits.max_config_size (1MB)", n);
    assert_only_err(want);
    free(yaml);

    /* beyond 16MB the file is not even read */
    {
        FILE *f = fopen(cfgpath, "w");

        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fseek(f, 17 << 20, SEEK_SET), 0);
        fputc('\n', f);
        fclose(f);
        ks_diag_free(&diag);
        cfg = ks_config_load(cfgpath, &diag);
        ck_assert_ptr_null(cfg);
        ck_assert_uint_eq(diag.n, 1);
        ck_assert_msg(strstr(diag.msgs[0], "is too large (17825793 bytes, the limit is 16777216)") != NULL,
                      "%s", diag.msgs[0]);
    }
}
END_TEST

START_TEST(test_missing_file)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/none.yaml", tmpdir);
    cfg = ks_config_load(path, &diag);
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(diag.n, 1);
    ck_assert_msg(strstr(diag.msgs[0], "none.yaml: cannot open \"") == diag.msgs[0] + strlen(tmpdir) + 1 &&
                  strstr(diag.msgs[0], "No such file or directory") != NULL, "%s", diag.msgs[0]);
}
END_TEST

START_TEST(test_ids_stable)
{
    uint64_t a, b, c;

    load_ok(SERVER "tenants:\n  - name: t\n    upstreams:\n      - {name: u, url: \"http://127.0.0.1:1\"}\n      - {name: v, url: \"http://127.0.0.1:1\"}\n");
    a = cfg->tenants[0].upstreams[0].id;
    b = cfg->tenants[0].upstreams[1].id;
    ck_assert_uint_ne(a, b);
    /* same tenant, name and URL after a reload with other changes: same id */
    load_ok(SERVER "  workers: 2\ntenants:\n  - name: t\n    upstreams:\n      - {name: u, url: \"http://127.0.0.1:1\", weight: 5}\n");
    c = cfg->tenants[0].upstreams[0].id;
    ck_assert_uint_eq(a, c);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *ok = tcase_create("valid");
    TCase *bad = tcase_create("errors");
    TCase *caps = tcase_create("caps");

    tcase_add_checked_fixture(ok, setup, teardown);
    tcase_add_test(ok, test_example_loads);
    tcase_add_test(ok, test_defaults);
    tcase_add_test(ok, test_every_key);
    tcase_add_test(ok, test_health_inheritance);
    tcase_add_test(ok, test_lua_inheritance);
    tcase_add_test(ok, test_null_values);
    tcase_add_test(ok, test_ids_stable);
    tcase_add_test(ok, test_yamltree_duplicates);
    suite_add_tcase(s, ok);

    tcase_add_checked_fixture(bad, setup, teardown);
    tcase_add_test(bad, test_unknown_keys);
    tcase_add_test(bad, test_duplicate_keys);
    tcase_add_test(bad, test_scalar_types);
    tcase_add_test(bad, test_addresses);
    tcase_add_test(bad, test_wrong_types);
    tcase_add_test(bad, test_required);
    tcase_add_test(bad, test_urls);
    tcase_add_test(bad, test_tenant_fields);
    tcase_add_test(bad, test_server_cross_field);
    tcase_add_test(bad, test_health_timeouts);
    tcase_add_test(bad, test_health_default_timeout);
    tcase_add_test(bad, test_duplicate_names);
    tcase_add_test(bad, test_tenant_overlap);
    tcase_add_test(bad, test_capacities);
    tcase_add_test(bad, test_lua_script);
    tcase_add_test(bad, test_users_and_version);
    tcase_add_test(bad, test_all_errors_collected);
    tcase_add_test(bad, test_error_cap);
    tcase_add_test(bad, test_missing_file);
    suite_add_tcase(s, bad);

    /* generous: these run under valgrind too */
    tcase_set_timeout(caps, 120);
    tcase_add_checked_fixture(caps, setup, teardown);
    tcase_add_test(caps, test_yaml_errors);
    tcase_add_test(caps, test_depth_bomb);
    tcase_add_test(caps, test_node_cap);
    tcase_add_test(caps, test_file_size);
    suite_add_tcase(s, caps);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
