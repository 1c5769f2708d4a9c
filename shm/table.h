/*
 * table.h: the route table, the workers' whole view of the configuration.
 *
 * The master builds it from struct ks_config (master/publish.c) into the
 * inactive route buffer of the shared segment and publishes it; a worker
 * copies the active buffer into private memory when the generation changes
 * and reads it from there.  Everything is an offset from the start of the
 * table (uint32_t), never a pointer; strings are NUL-terminated in a pool,
 * offset 0 being the empty string.  keystonectl validates a copy with
 * ks_table_check() before reading it, so a corrupt state file is reported,
 * never followed.
 */
#ifndef KS_TABLE_H
#define KS_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keystoned/util.h"

#define KS_TABLE_MAGIC 0x4b5354424c320000ULL
#define KS_NONE UINT32_MAX

/* Server-wide settings a worker needs; they may change on every reload. */
/* "keystoned-" and 8 hex digits drawn at the master's start: what the
 * gateway adds to the Via of every request it sends (RFC 9110 7.6.3), so
 * that it can tell one coming back to it (worker/http.c). */
#define KS_VIA_NAME_MAX 20

struct ks_t_settings {
    uint32_t admin_base_path;       /* string; "" = off on the public listener */
    uint32_t admin_token_set;       /* 1: server.admin_token is set */
    unsigned char admin_token_mac[32]; /* its keyed hash (shm/token.h), never the token */
    uint32_t access_log;            /* string: "stderr", "off" or a path */
    uint32_t log_level;             /* 0 error .. 3 debug */
    int64_t read_header_timeout_ms;
    int64_t read_body_timeout_ms;
    uint64_t min_body_rate;
    int64_t send_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t lingering_time_ms;
    int64_t max_requests_per_worker;
    int32_t max_keepalive_requests;
    int32_t max_headers;
    uint64_t max_request_line;
    uint64_t max_header_bytes;
    uint64_t max_body_bytes;
    uint64_t max_response_header_bytes;
    /* Lua */
    int64_t lua_timeout_ms;
    uint64_t lua_memory;
    int64_t lua_hard_timeout_ms;
    uint32_t lua_expose_errors;
    uint32_t allowed_env;           /* index into strlist */
    uint32_t nallowed_env;
    int32_t max_changes_per_minute;
    uint32_t worker_sched_batch;    /* 1: workers run under SCHED_BATCH */
    char via_name[KS_VIA_NAME_MAX]; /* our Via pseudonym, fixed for the master's life */
};

enum {
    KS_TF_STRIP_BASE_PATH = 1u << 0,
    KS_TF_PRESERVE_HOST = 1u << 1,
    KS_TF_FORWARDED = 1u << 2,
    KS_TF_DYNAMIC_ROUTING = 1u << 3,
    KS_TF_ALL_DOWN_TRY = 1u << 4,
};

struct ks_t_tenant {
    uint64_t key;                   /* hash of the name (tenant stats key) */
    uint32_t name;                  /* string */
    uint32_t base_path;             /* string, "/" or "/a/b" */
    uint32_t domains, ndomains;     /* into strlist */
    uint32_t upstreams, nupstreams; /* into upstreams[] */
    uint32_t routes, nroutes;       /* into routes[] (dynamic routes) */
    uint32_t schedule, nschedule;   /* into schedule[]: smooth WRR order */
    uint32_t lua_script;            /* string: path, "" = none */
    uint32_t lua_source;            /* string: script text */
    uint32_t lua_source_len;
    uint32_t flags;                 /* KS_TF_* */
    int32_t retries;
    uint32_t stats_slot;            /* tenant stats record */
    int64_t lua_timeout_ms;
    uint64_t lua_memory;
    int32_t lua_max_routes;
    int32_t lua_max_middlewares;
};

struct ks_t_upstream {
    uint64_t id;                    /* stable id (health record key) */
    uint32_t tenant;                /* index into tenants[] */
    uint32_t name;                  /* string */
    uint32_t url;                   /* string, as configured */
    uint32_t hostport;              /* string, for Host when !preserve_host */
    uint32_t health_slot;           /* health record */
    int32_t weight;
    int32_t keepalive;
    int32_t max_fails;
    int64_t connect_timeout_ms;
    int64_t response_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t pool_idle_ms;
    int64_t fail_window_ms;
    int64_t fail_timeout_ms;
    int64_t health_interval_ms;     /* active checks, for Retry-After */
    int32_t rise;
    uint32_t share;                 /* its positions in the tenant's schedule:
                                     * the weight as reduced and scaled there */
    struct ks_addr addr;
};

/* A route in the table.  Runtime routes (KS_RF_DYNAMIC, added through Lua
 * or the admin API) are served from here; the routes a script registers
 * at load are served from each worker's Lua state and appear here only
 * for listing (keystonectl routes, the admin API), as the master's check
 * of the script found them. */
struct ks_t_route {
    uint32_t tenant;
    uint32_t id;                    /* string */
    uint32_t method;                /* string, "*" = any */
    uint32_t pattern;               /* string */
    uint32_t upstream;              /* index into upstreams[] or KS_NONE */
    uint32_t handler;               /* string: named Lua handler, "" = none */
    uint32_t headers, nheaders;     /* into strlist: name, value, name, value... (nheaders entries) */
    uint32_t flags;                 /* KS_RF_* */
    uint32_t strip;                 /* string: prefix removed before proxying, "" = none */
    int64_t timeout_ms;             /* 0 = upstream default */
};
enum {
    KS_RF_DYNAMIC = 1u << 0,
    KS_RF_STRIP_PREFIX = 1u << 1,   /* strip is set */
    KS_RF_LUA_FUNCTION = 1u << 2,   /* a script's route answered by a Lua function */
};

struct ks_table {
    uint64_t magic;
    uint32_t size;                  /* bytes used, including this header */
    uint32_t ntenants, nupstreams, nroutes, nstrlist, nschedule;
    uint32_t tenants_off, upstreams_off, routes_off, strlist_off, schedule_off;
    uint32_t strings_off, strings_len;
    struct ks_t_settings settings;
};

static inline const char *ks_t_str(const struct ks_table *t, uint32_t off)
{
    return (const char *)t + t->strings_off + off;
}
static inline const struct ks_t_tenant *ks_t_tenants(const struct ks_table *t)
{
    return (const struct ks_t_tenant *)((const char *)t + t->tenants_off);
}
static inline const struct ks_t_upstream *ks_t_upstreams(const struct ks_table *t)
{
    return (const struct ks_t_upstream *)((const char *)t + t->upstreams_off);
}
static inline const struct ks_t_route *ks_t_routes(const struct ks_table *t)
{
    return (const struct ks_t_route *)((const char *)t + t->routes_off);
}
/* strlist entries are string offsets */
static inline const uint32_t *ks_t_strlist(const struct ks_table *t)
{
    return (const uint32_t *)((const char *)t + t->strlist_off);
}
/* schedule entries are indexes into the tenant's own upstreams (0-based) */
static inline const uint16_t *ks_t_schedule(const struct ks_table *t)
{
    return (const uint16_t *)((const char *)t + t->schedule_off);
}

/* ---- building (master) ------------------------------------------------- */

struct ks_table_builder {
    char *buf;
    size_t cap;
    size_t strings_used;
    bool overflow;
    struct ks_table *t;     /* == buf; arrays first, then the string pool */
};

/* Reserve the arrays; counts must be known in advance. */
int ks_table_begin(struct ks_table_builder *b, void *buf, size_t cap, uint32_t ntenants,
                   uint32_t nupstreams, uint32_t nroutes, uint32_t nstrlist, uint32_t nschedule);
/* Append a string to the pool; returns its offset ("" and NULL -> 0). */
uint32_t ks_table_str(struct ks_table_builder *b, const char *s);
uint32_t ks_table_strn(struct ks_table_builder *b, const char *s, size_t n);
struct ks_t_tenant *ks_table_tenant(struct ks_table_builder *b, uint32_t i);
struct ks_t_upstream *ks_table_upstream(struct ks_table_builder *b, uint32_t i);
struct ks_t_route *ks_table_route(struct ks_table_builder *b, uint32_t i);
uint32_t *ks_table_strlist(struct ks_table_builder *b);
uint16_t *ks_table_schedule(struct ks_table_builder *b);
/* Close the table; returns its size or 0 when it did not fit. */
size_t ks_table_finish(struct ks_table_builder *b);

/* Validate a table copy of len bytes: every offset and count within
 * bounds, every string terminated.  0 ok, -1 with a reason. */
int ks_table_check(const void *buf, size_t len, char *err, size_t errlen);

#endif
