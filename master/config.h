/*
 * config.h: struct ks_config, the one in-memory form of keystone.yaml
 * (keystone.yaml(5) documents every key).
 *
 * Only the master (and keystonectl configtest) reads YAML; workers get
 * what they need from the route table in shared memory.  A config is one
 * arena: ks_config_free() releases every string and array in it at once,
 * so a config built for a reload that is refused costs one call.
 *
 * Config records only: runtime state (health, cursors, pools) lives
 * elsewhere (shm/, worker/), as relayd separates upstream_config from
 * upstream_state.
 */
#ifndef KS_CONFIG_H
#define KS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keystoned/util.h"

/* Collected messages ("file:line:col: key.path: what was expected"). */
struct ks_diag {
    char **msgs;
    size_t n, cap;
};
void ks_diag_add(struct ks_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ks_diag_free(struct ks_diag *d);

/* Active checks and the passive breaker of one upstream.  At the global
 * and tenant level (health_defaults) a field may be unset (-1 / NULL) and
 * is inherited; after loading, every upstream's copy is complete. */
struct ks_health_config {
    char *path;                 /* "" = TCP connect check */
    int64_t interval_ms;
    int64_t timeout_ms;         /* below interval_ms */
    bool timeout_set;           /* timeout_ms was written (at this level or
                                 * one it inherits from); false: the
                                 * default, min(2s, interval_ms / 2) */
    int rise, fall;
    int expect_lo, expect_hi;   /* accepted status range */
    char *host;                 /* Host header of probes; NULL = the upstream's */
    int max_fails;              /* passive: 0 = breaker off */
    int64_t fail_window_ms;
    int64_t fail_timeout_ms;
};

struct ks_upstream_config {
    char *name;
    struct ks_url url;
    char *url_text;             /* as written */
    struct ks_addr addr;        /* url resolved at load time */
    uint64_t id;                /* stable: hash of tenant, name and url */
    int weight;                 /* 0 = drain */
    int keepalive;              /* idle pooled connections per worker */
    int64_t connect_timeout_ms;
    int64_t response_timeout_ms;    /* to the first response byte */
    int64_t idle_timeout_ms;        /* between bytes while streaming */
    int64_t pool_idle_ms;           /* pooled connection lifetime when idle */
    struct ks_health_config health;
    int line, col;              /* where it is written */
};

struct ks_lua_limits {
    int64_t timeout_ms;         /* per call */
    uint64_t memory;            /* bytes per tenant state */
    int max_routes;
    int max_middlewares;
};

enum ks_all_down { KS_ALL_DOWN_FAIL = 0, KS_ALL_DOWN_TRY_ANYWAY = 1 };
/* server.worker_scheduling: the workers' Linux scheduling policy */
enum ks_worker_scheduling { KS_SCHED_NORMAL = 0, KS_SCHED_BATCH = 1 };

struct ks_tenant_config {
    char *name;
    char **domains;             /* lower-case; "*.suffix" wildcards */
    size_t ndomains;
    char *base_path;            /* "/" or "/x/y" without trailing "/" */
    bool strip_base_path;
    bool preserve_host;
    bool forwarded;             /* add a Forwarded header */
    char *lua_script;           /* absolute path, or NULL */
    char *lua_source;           /* its text, read at load time */
    size_t lua_source_len;
    struct ks_lua_limits lua_limits;    /* complete after loading */
    bool dynamic_routing_enabled;
    struct ks_health_config health_defaults;
    int all_down;               /* enum ks_all_down */
    int retries;
    struct ks_upstream_config *upstreams;
    size_t nupstreams;
    int line, col;
};

struct ks_server_config {
    struct ks_addr public_addr;
    struct ks_addr admin_addr;
    bool has_admin_addr;
    char *admin_base_path;      /* "" = no admin endpoints on the public listener */
    char *admin_token;          /* NULL = write endpoints refused */
    int workers, min_spare, max_spare, max_workers;
    int64_t max_requests_per_worker;    /* 0 = never recycle */
    int max_keepalive_requests;
    int backlog;                /* listen(2) queue of each listener */
    int worker_scheduling;      /* enum ks_worker_scheduling */
    int64_t read_header_timeout_ms;
    int64_t read_body_timeout_ms;
    uint64_t min_body_rate;     /* bytes/s a body must keep up; 0 = off */
    int64_t send_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t lingering_time_ms;      /* 0 = close at once */
    int64_t shutdown_timeout_ms;
    char *pid_file;
    char *state_file;
    char *control_socket;
    char *error_log;            /* path or "stderr" */
    char *access_log;           /* path, "stderr" or "off" */
    char *log_level;            /* "error", "warn", "info", "debug" */
    char *user;                 /* NULL = keep the current user */
    char *group;
};

struct ks_limits_config {
    uint64_t max_request_line;
    uint64_t max_header_bytes;
    int max_headers;
    uint64_t max_body_bytes;
    uint64_t max_response_header_bytes;    /* an upstream's response head */
    /* capacities: they size the shared segment (restart to change) */
    int max_tenants;
    int max_upstreams;
    int max_routes;
    uint64_t route_table_size;
    uint64_t max_config_size;
};

struct ks_lua_config {
    struct ks_lua_limits limits;    /* defaults for every tenant */
    int64_t hard_timeout_ms;        /* master watchdog */
    int64_t reload_debounce_ms;
    bool expose_errors;
    char **allowed_env;
    size_t nallowed_env;
};

struct ks_dynamic_config {
    int max_changes_per_minute;
};

struct ks_arena;
struct ks_lua_catalog;

struct ks_config {
    struct ks_arena *arena;     /* owns everything below */
    char *path;                 /* as given */
    char *dir;                  /* its directory, absolute */
    int version;
    struct ks_server_config server;
    struct ks_limits_config limits;
    struct ks_lua_config lua;
    struct ks_health_config health_defaults;
    struct ks_dynamic_config dynamic_routing;
    struct ks_tenant_config *tenants;
    size_t ntenants;
    /* what the load-time script check found (master/luacheck.h); set by
     * ks_master_load_config, NULL after a plain ks_config_load */
    struct ks_lua_catalog *lua_catalog;
};

/* Read, validate and return a config, or NULL with every problem added to
 * diag (in file order). */
struct ks_config *ks_config_load(const char *path, struct ks_diag *diag);
/* The same, with KS_CONFIG_START: also what only a start needs, that the
 * directories of the pid file, state file, control socket and error log
 * exist (keystoned -t, a start, keystonectl configtest; a reload keeps
 * the files it has and cannot change them).  KS_CONFIG_FOREGROUND with
 * it: a start with -f, which logs to stderr and never opens the error
 * log. */
#define KS_CONFIG_START 1u
#define KS_CONFIG_FOREGROUND 2u
struct ks_config *ks_config_load_flags(const char *path, unsigned flags, struct ks_diag *diag);
void ks_config_free(struct ks_config *cfg);

const struct ks_tenant_config *ks_config_tenant(const struct ks_config *cfg, const char *name);
const struct ks_upstream_config *ks_tenant_upstream(const struct ks_tenant_config *t,
                                                    const char *name);

/* server.state_file of a config file (absolute), read even when the rest
 * of the file is invalid: keystonectl needs it to find a running daemon. */
int ks_config_state_file(const char *path, char *out, size_t len, char *err, size_t errlen);

#endif
