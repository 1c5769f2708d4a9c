/*
 * tenants.c: a worker's Lua states, one per tenant that has a script or
 * runtime routes (see handle.h).
 *
 * A state is rebuilt only when what it is built from changed (script
 * text, limits, upstream names, allowed_env, dynamic_routing_enabled): a
 * reload that touches another tenant, or a runtime route change, keeps it
 * with its globals and only refreshes its runtime routes from the table.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/ctlclient.h"
#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/engine.h"
#include "lua/handle.h"
#include "lua/reqctx.h"

#define CONTROL_TIMEOUT_MS 2000
#define MAX_UPSTREAM_NAMES 1024

struct slot {
    char name[KS_LUA_NAME_MAX];
    uint64_t inputs;
    struct ks_lua *lx;
    bool wanted;
    bool failed;
};

struct ks_lua_engine {
    struct slot *slots;             /* by tenant index in the worker's table */
    size_t nslots;
    struct ks_lua_scratch scratch;
    char *out;
    size_t out_cap;
    struct ks_lua_arena *arena;
};

static bool has_dynamic_routes(const struct ks_table *t, const struct ks_t_tenant *tn)
{
    for (uint32_t k = 0; k < tn->nroutes; k++)
        if (ks_t_routes(t)[tn->routes + k].flags & KS_RF_DYNAMIC)
            return true;
    return false;
}

/* Fill ti from the table; names points to room for the upstream names. */
static void tenant_info(const struct ks_table *t, uint32_t i, struct ks_lua_tenant_info *ti,
                        const char **names, const char **env)
{
    const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
    const struct ks_t_settings *s = &t->settings;
    size_t nup = tn->nupstreams < MAX_UPSTREAM_NAMES ? tn->nupstreams : MAX_UPSTREAM_NAMES;
    for (size_t k = 0; k < nup; k++)
        names[k] = ks_t_str(t, ks_t_upstreams(t)[tn->upstreams + k].name);
    size_t nenv = s->nallowed_env < MAX_UPSTREAM_NAMES ? s->nallowed_env : MAX_UPSTREAM_NAMES;
    for (size_t k = 0; k < nenv; k++)
        env[k] = ks_t_str(t, ks_t_strlist(t)[s->allowed_env + k]);
    *ti = (struct ks_lua_tenant_info){
        .tenant = ks_t_str(t, tn->name),
        .script = ks_t_str(t, tn->lua_script),
        .source = ks_t_str(t, tn->lua_source),
        .source_len = tn->lua_source_len,
        .timeout_ms = tn->lua_timeout_ms,
        .memory = tn->lua_memory,
        .max_routes = tn->lua_max_routes,
        .max_middlewares = tn->lua_max_middlewares,
        .upstreams = names,
        .nupstreams = nup,
        .allowed_env = env,
        .nallowed_env = nenv,
        .dynamic_routing = (tn->flags & KS_TF_DYNAMIC_ROUTING) != 0,
    };
}

static uint64_t inputs_hash(const struct ks_lua_tenant_info *ti)
{
    char nums[160];
    snprintf(nums, sizeof(nums), "%lld/%llu/%d/%d/%d/%zu", (long long)ti->timeout_ms,
             (unsigned long long)ti->memory, ti->max_routes, ti->max_middlewares,
             ti->dynamic_routing, ti->source_len);
    const char *parts[4 + 2 * MAX_UPSTREAM_NAMES];
    size_t n = 0;
    parts[n++] = ti->tenant;
    parts[n++] = ti->script;
    parts[n++] = ti->source;
    parts[n++] = nums;
    for (size_t k = 0; k < ti->nupstreams; k++)
        parts[n++] = ti->upstreams[k];
    for (size_t k = 0; k < ti->nallowed_env && n < KS_ARRAY_LEN(parts); k++)
        parts[n++] = ti->allowed_env[k];
    return ks_hash_strings(parts, n);
}

/* Replace the state's runtime routes by the table's. */
static void apply_dynamic(struct ks_lua *lx, const struct ks_table *t, uint32_t ti)
{
    const struct ks_t_tenant *tn = &ks_t_tenants(t)[ti];
    ks_router_clear_dynamic(&lx->router);
    for (uint32_t k = 0; k < tn->nroutes; k++) {
        const struct ks_t_route *r = &ks_t_routes(t)[tn->routes + k];
        if (!(r->flags & KS_RF_DYNAMIC))
            continue;
        const char *handler = ks_t_str(t, r->handler);
        int ref = KS_ROUTE_PROXY;
        if (handler[0] != '\0' && (ref = ks_router_name_ref(&lx->router, false, handler)) < 0) {
            ks_log_warn("lua-route", "tenant %s: runtime route %s names handler \"%s\", which the "
                        "script does not register: ignored", lx->tenant, ks_t_str(t, r->id), handler);
            continue;
        }
        const char *hdrs[2 * 64];
        size_t nh = r->nheaders / 2 < 64 ? r->nheaders / 2 : 64;
        for (size_t h = 0; h < 2 * nh; h++)
            hdrs[h] = ks_t_str(t, ks_t_strlist(t)[r->headers + h]);
        struct ks_route_def d = {
            .id = ks_t_str(t, r->id),
            .method = ks_t_str(t, r->method),
            .pattern = ks_t_str(t, r->pattern),
            .handler = ref,
            .handler_name = handler[0] ? handler : NULL,
            .upstream = r->upstream == KS_NONE ? KS_ROUTE_NO_UPSTREAM : r->upstream - tn->upstreams,
            .headers = hdrs,
            .nheaders = nh,
            .timeout_ms = r->timeout_ms,
            .strip = (r->flags & KS_RF_STRIP_PREFIX) ? ks_t_str(t, r->strip) : NULL,
            .dynamic = true,
        };
        char err[256];
        if (ks_router_add(&lx->router, &d, err, sizeof(err)) == NULL)
            ks_log_warn("lua-route", "tenant %s: runtime route %s ignored: %s", lx->tenant, d.id, err);
    }
}

static int send_route(void *arg, const struct ks_route_spec *s, bool del, char *id_out,
                      size_t idlen, char *err, size_t errlen)
{
    int status;
    return ks_lua_send_route(arg, s, del, id_out, idlen, NULL, err, errlen, &status, NULL);
}

static struct ks_lua *build(struct ks_worker *w, uint32_t i, struct slot *sl)
{
    const struct ks_table *t = w->table;
    const char *names[MAX_UPSTREAM_NAMES], *env[MAX_UPSTREAM_NAMES];
    struct ks_lua_tenant_info ti;
    tenant_info(t, i, &ti, names, env);
    char err[KS_LUA_MSG_MAX];
    int64_t t0 = ks_now_us();
    struct ks_lua *lx = ks_lua_new(&ti, w->score, err, sizeof(err));
    if (lx == NULL) {
        for (char *p = err; (p = strchr(p, '\n')) != NULL;)
            *p = ';';       /* one log line */
        if (!sl->failed)
            ks_log_error("lua-load", "tenant %s: cannot load %s: %s", ti.tenant,
                         ti.script[0] ? ti.script : "(runtime routes)", err);
        sl->failed = true;
        atomic_fetch_add_explicit(&ks_shm_tenant_stats(w->shm, ks_t_tenants(t)[i].stats_slot)->lua_errors,
                                  1, memory_order_relaxed);
        return NULL;
    }
    sl->failed = false;
    lx->runtime = send_route;
    lx->runtime_arg = w;
    lx->inputs = sl->inputs;
    apply_dynamic(lx, t, i);
    ks_log_debug("lua-load", "worker %u: tenant %s: Lua state built in %lld us, %zu bytes",
                 w->args->slot, ti.tenant, (long long)(ks_now_us() - t0), lx->mem.used);
    return lx;
}

void ks_lua_engine_refresh(struct ks_worker *w)
{
    if (w->lua == NULL) {
        w->lua = calloc(1, sizeof(*w->lua));
        if (w->lua == NULL)
            return;
        w->lua->arena = ks_lua_arena_new();
    }
    struct ks_lua_engine *e = w->lua;
    const struct ks_table *t = w->table;
    struct slot *fresh = calloc(t->ntenants ? t->ntenants : 1, sizeof(*fresh));
    if (fresh == NULL) {
        ks_log_error("lua-load", "worker %u: out of memory for Lua states", w->args->slot);
        return;
    }
    const char *names[MAX_UPSTREAM_NAMES], *env[MAX_UPSTREAM_NAMES];
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        struct slot *sl = &fresh[i];
        ks_strlcpy(sl->name, ks_t_str(t, tn->name), sizeof(sl->name));
        sl->wanted = tn->lua_source_len > 0 || has_dynamic_routes(t, tn);
        if (!sl->wanted)
            continue;
        struct ks_lua_tenant_info ti;
        tenant_info(t, i, &ti, names, env);
        sl->inputs = inputs_hash(&ti);
        for (size_t k = 0; k < e->nslots; k++) {
            struct slot *old = &e->slots[k];
            if (old->lx != NULL && old->inputs == sl->inputs && strcmp(old->name, sl->name) == 0 &&
                !old->lx->dead) {
                sl->lx = old->lx;
                old->lx = NULL;
                break;
            }
        }
        if (sl->lx != NULL)
            apply_dynamic(sl->lx, t, i);
        else
            sl->lx = build(w, i, sl);
    }
    for (size_t k = 0; k < e->nslots; k++)
        ks_lua_free(e->slots[k].lx);
    free(e->slots);
    e->slots = fresh;
    e->nslots = t->ntenants;
}

void ks_lua_engine_free(struct ks_worker *w)
{
    struct ks_lua_engine *e = w->lua;
    if (e == NULL)
        return;
    for (size_t k = 0; k < e->nslots; k++)
        ks_lua_free(e->slots[k].lx);
    free(e->slots);
    free(e->scratch.buf);
    free(e->out);
    ks_lua_arena_free(e->arena);
    free(e);
    w->lua = NULL;
}

bool ks_lua_wants(const struct ks_exchange *x)
{
    const struct ks_lua_engine *e = x->w->lua;
    return e != NULL && x->tenant < e->nslots && e->slots[x->tenant].wanted;
}

struct ks_lua *ks_lua_engine_state(struct ks_worker *w, uint32_t tenant)
{
    struct ks_lua_engine *e = w->lua;
    if (e == NULL || tenant >= e->nslots || !e->slots[tenant].wanted)
        return NULL;
    struct slot *sl = &e->slots[tenant];
    if (sl->lx == NULL && !sl->failed) {
        sl->lx = build(w, tenant, sl);
        if (sl->lx != NULL)
            ks_log_info("lua-rebuild", "worker %u: tenant %s: Lua state rebuilt", w->args->slot,
                        sl->name);
    }
    return sl->lx;
}

void ks_lua_engine_discard(struct ks_worker *w, uint32_t tenant)
{
    struct ks_lua_engine *e = w->lua;
    if (e == NULL || tenant >= e->nslots)
        return;
    ks_lua_free(e->slots[tenant].lx);
    e->slots[tenant].lx = NULL;
    e->slots[tenant].failed = false;
}

struct ks_lua_arena *ks_lua_engine_arena(struct ks_worker *w)
{
    return w->lua->arena;
}

struct ks_lua_scratch *ks_lua_engine_scratch(struct ks_worker *w)
{
    return &w->lua->scratch;
}

void ks_lua_engine_outbuf(struct ks_worker *w, char ***buf, size_t **cap)
{
    *buf = &w->lua->out;
    *cap = &w->lua->out_cap;
}

/* ---- runtime route changes: to the master ---------------------------------------- */

int ks_lua_send_route(struct ks_worker *w, const struct ks_route_spec *s, bool del, char *id_out,
                      size_t idlen, uint64_t *generation, char *err, size_t errlen,
                      int *http_status, int *retry_after)
{
    if (retry_after != NULL)
        *retry_after = 0;
    char line[KS_SPEC_LINE_MAX + 64], reply[1024], why[256];
    *http_status = 400;
    /* The deadline travels with the change: a master that reads it after
     * the deadline (it was stopped or busy) refuses it instead of applying
     * a change whose requester was told there was no answer (so the wait
     * does not end early when the master is seen stopped).  Near the
     * deadline it may still take one whose verdict arrives too late, so
     * that answer says the outcome is unknown. */
    if (ks_route_spec_encode(s, del, ks_now_ms() + CONTROL_TIMEOUT_MS, line, sizeof(line)) < 0) {
        snprintf(err, errlen, "the route is too large to send");
        return -1;
    }
    int rc = ks_ctl_call(w->shm->hdr->control_socket, 0, line, reply, sizeof(reply),
                         CONTROL_TIMEOUT_MS, why, sizeof(why));
    if (rc < 0) {
        *http_status = 503;
        if (rc == -2)
            snprintf(err, errlen, "%s; the change may still be applied: check GET "
                     "<admin_base_path>/routes (router:list_routes() in Lua)", why);
        else
            snprintf(err, errlen, "%s; the change was not applied", why);
        return -1;
    }
    /* "0 <status> <id> <generation>" or "1 <status> [retry-after=N] <message>" */
    char *nl = strchr(reply, '\n');
    if (nl != NULL)
        *nl = '\0';
    int code = -1, status = 0, n = 0;
    if (sscanf(reply, "%d %d %n", &code, &status, &n) < 2 || n == 0) {
        snprintf(err, errlen, "unexpected answer from the master: %.200s", reply);
        *http_status = 503;
        return -1;
    }
    *http_status = status;
    if (code != 0) {
        int secs = 0, m = 0;
        if (sscanf(reply + n, "retry-after=%d %n", &secs, &m) == 1 && m > 0) {
            if (retry_after != NULL && secs > 0)
                *retry_after = secs;
            n += m;
        }
        snprintf(err, errlen, "%s", reply + n);
        return -1;
    }
    char id[KS_ROUTE_ID_MAX] = "";
    unsigned long long gen = 0;
    sscanf(reply + n, "%23s %llu", id, &gen);
    ks_strlcpy(id_out, id, idlen);
    if (generation != NULL)
        *generation = gen;
    return 0;
}
