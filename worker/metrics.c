/*
 * metrics.c: the Prometheus view of the shared segment (see metrics.h).
 *
 * Every number comes from the same readers as /tenants and keystonectl
 * (shm/verdict.h), so the three never disagree.  The format wants all
 * samples of one metric together under its HELP and TYPE lines, hence one
 * pass over the tenants (or upstreams) per metric.  Tenant and upstream
 * names need no escaping in label values: the configuration allows only
 * A-Z a-z 0-9 . _ - in them.
 */
#include <config.h>

#include <string.h>

#include "keystoned/util.h"
#include "shm/verdict.h"
#include "worker/metrics.h"

static void family(struct ks_jbuf *b, const char *name, const char *type, const char *help)
{
    ks_jbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void global_metrics(struct ks_jbuf *b, const struct ks_worker *w, int64_t now)
{
    const struct ks_shm *shm = w->shm;
    const struct ks_shm_header *h = shm->hdr;
    family(b, "keystoned_info", "gauge", "Version of keystoned (always 1).");
    ks_jbuf_printf(b, "keystoned_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
    family(b, "keystoned_generation", "gauge", "Generation of the configuration this worker serves.");
    ks_jbuf_printf(b, "keystoned_generation %llu\n", (unsigned long long)w->generation);
    family(b, "keystoned_uptime_seconds", "gauge", "Seconds since the master started.");
    ks_jbuf_printf(b, "keystoned_uptime_seconds %lld\n", (long long)((now - h->start_mono_ms) / 1000));
    family(b, "keystoned_connections_total", "counter", "Client connections accepted.");
    ks_jbuf_printf(b, "keystoned_connections_total %llu\n",
                   (unsigned long long)atomic_load_explicit(&h->connections, memory_order_relaxed));
    family(b, "keystoned_requests_total", "counter", "Requests received.");
    ks_jbuf_printf(b, "keystoned_requests_total %llu\n",
                   (unsigned long long)atomic_load_explicit(&h->requests, memory_order_relaxed));
    family(b, "keystoned_responses_total", "counter", "Error responses, by status class.");
    ks_jbuf_printf(b, "keystoned_responses_total{class=\"4xx\"} %llu\n",
                   (unsigned long long)atomic_load_explicit(&h->responses_4xx, memory_order_relaxed));
    ks_jbuf_printf(b, "keystoned_responses_total{class=\"5xx\"} %llu\n",
                   (unsigned long long)atomic_load_explicit(&h->responses_5xx, memory_order_relaxed));

    enum ks_reload_result rr;
    int64_t when;
    uint64_t ok, failed;
    char msg[8];
    ks_shm_get_reload(shm, &rr, &when, msg, sizeof(msg), &ok, &failed);
    family(b, "keystoned_reloads_total", "counter", "Reloads, by result.");
    ks_jbuf_printf(b, "keystoned_reloads_total{result=\"applied\"} %llu\n", (unsigned long long)ok);
    ks_jbuf_printf(b, "keystoned_reloads_total{result=\"failed\"} %llu\n", (unsigned long long)failed);

    /* the scoreboard: live slots by state */
    unsigned count[KS_WS_STATE_COUNT] = { 0 };
    uint64_t slots = ks_shm_count(shm, KS_REGION_SCOREBOARD);
    for (uint32_t i = 0; i < slots; i++) {
        const struct ks_score *sc = ks_shm_score(shm, i);
        uint32_t st = atomic_load_explicit(&sc->state, memory_order_relaxed);
        if (atomic_load_explicit(&sc->pid, memory_order_relaxed) != 0 && st < KS_WS_STATE_COUNT)
            count[st]++;
    }
    family(b, "keystoned_workers", "gauge", "Worker processes, by state.");
    for (unsigned st = KS_WS_STARTING; st < KS_WS_STATE_COUNT; st++)
        ks_jbuf_printf(b, "keystoned_workers{state=\"%s\"} %u\n",
                       ks_worker_state_name((enum ks_worker_state)st), count[st]);
}

/* One sample per tenant of a counter picked by offset from struct
 * ks_tenant_counters, with an extra label when given. */
static void tenant_counter(struct ks_jbuf *b, const struct ks_worker *w, const char *name,
                           const char *extra, size_t off)
{
    const struct ks_table *t = w->table;
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        struct ks_tenant_counters n;
        ks_tenant_counters_read(w->shm, tn, &n);
        uint64_t v;
        memcpy(&v, (const char *)&n + off, sizeof(v));
        ks_jbuf_printf(b, "%s{tenant=\"%s\"%s%s} %llu\n", name, ks_t_str(t, tn->name),
                       extra ? "," : "", extra ? extra : "", (unsigned long long)v);
    }
}

static void tenant_metrics(struct ks_jbuf *b, const struct ks_worker *w, int64_t now)
{
    const struct ks_table *t = w->table;
#define TC(f) offsetof(struct ks_tenant_counters, f)
    family(b, "keystoned_tenant_requests_total", "counter", "Requests routed to the tenant.");
    tenant_counter(b, w, "keystoned_tenant_requests_total", NULL, TC(requests));
    family(b, "keystoned_tenant_responses_total", "counter", "Error responses of the tenant, by status class.");
    tenant_counter(b, w, "keystoned_tenant_responses_total", "class=\"4xx\"", TC(responses_4xx));
    tenant_counter(b, w, "keystoned_tenant_responses_total", "class=\"5xx\"", TC(responses_5xx));
    family(b, "keystoned_tenant_lua_errors_total", "counter",
           "Failed Lua calls of the tenant, by kind (runtime error, timeout, out of memory).");
    tenant_counter(b, w, "keystoned_tenant_lua_errors_total", "kind=\"runtime\"", TC(lua_errors));
    tenant_counter(b, w, "keystoned_tenant_lua_errors_total", "kind=\"timeout\"", TC(lua_timeouts));
    tenant_counter(b, w, "keystoned_tenant_lua_errors_total", "kind=\"memory\"", TC(lua_oom));
    family(b, "keystoned_tenant_route_changes_total", "counter", "Runtime route changes applied.");
    tenant_counter(b, w, "keystoned_tenant_route_changes_total", NULL, TC(route_changes));
#undef TC
    family(b, "keystoned_tenant_upstreams_usable", "gauge", "Upstreams of the tenant taking traffic now.");
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        ks_jbuf_printf(b, "keystoned_tenant_upstreams_usable{tenant=\"%s\"} %u\n",
                       ks_t_str(t, tn->name), ks_tenant_usable(w->shm, t, tn, now));
    }
}

/* What an upstream sample shows: a 64-bit counter of its health record
 * (by offset), or one of the values that need more than a load. */
enum up_kind { UP_COUNTER, UP_USABLE, UP_STATE, UP_WEIGHT, UP_CHECKS, UP_LATENCY };

static void upstream_samples(struct ks_jbuf *b, const struct ks_worker *w, const char *name,
                             enum up_kind kind, size_t off, int64_t now)
{
    const struct ks_table *t = w->table;
    for (uint32_t i = 0; i < t->nupstreams; i++) {
        const struct ks_t_upstream *u = &ks_t_upstreams(t)[i];
        const struct ks_health *h = ks_shm_health(w->shm, u->health_slot);
        char labels[256];
        size_t pos = 0;
        ks_appendf(labels, sizeof(labels), &pos, "tenant=\"%s\",upstream=\"%s\"",
                   ks_t_str(t, ks_t_tenants(t)[u->tenant].name), ks_t_str(t, u->name));
        switch (kind) {
        case UP_COUNTER: {
            const _Atomic uint64_t *v = (const _Atomic uint64_t *)((const char *)h + off);
            ks_jbuf_printf(b, "%s{%s} %llu\n", name, labels,
                           (unsigned long long)atomic_load_explicit(v, memory_order_relaxed));
            break;
        }
        case UP_USABLE:
            ks_jbuf_printf(b, "%s{%s} %d\n", name, labels, ks_upstream_usable(w->shm, u, now));
            break;
        case UP_STATE: {
            unsigned st = KS_HW_STATE(atomic_load_explicit(&h->word, memory_order_relaxed));
            for (unsigned s = KS_HEALTH_UNKNOWN; s <= KS_HEALTH_DOWN; s++)
                ks_jbuf_printf(b, "%s{%s,state=\"%s\"} %d\n", name, labels, ks_health_state_name(s),
                               s == st);
            break;
        }
        case UP_WEIGHT:
            ks_jbuf_printf(b, "%s{%s} %d\n", name, labels, u->weight);
            break;
        case UP_CHECKS:
            ks_jbuf_printf(b, "%s{%s,result=\"ok\"} %llu\n", name, labels,
                           (unsigned long long)atomic_load_explicit(&h->checks_ok, memory_order_relaxed));
            ks_jbuf_printf(b, "%s{%s,result=\"failed\"} %llu\n", name, labels,
                           (unsigned long long)atomic_load_explicit(&h->checks_failed, memory_order_relaxed));
            break;
        case UP_LATENCY:
            ks_jbuf_printf(b, "%s{%s} %.6f\n", name, labels,
                           atomic_load_explicit(&h->last_latency_us, memory_order_relaxed) / 1e6);
            break;
        }
    }
}

static void upstream_metrics(struct ks_jbuf *b, const struct ks_worker *w, int64_t now)
{
#define HC(f) offsetof(struct ks_health, f)
    static const struct {
        const char *name, *type, *help;
        enum up_kind kind;
        size_t off;
    } m[] = {
        { "keystoned_upstream_usable", "gauge",
          "1 when the upstream takes traffic now (weight, checks and breaker allow it).", UP_USABLE, 0 },
        { "keystoned_upstream_state", "gauge", "State by the active health checks.", UP_STATE, 0 },
        { "keystoned_upstream_weight", "gauge", "Configured weight (0 drains).", UP_WEIGHT, 0 },
        { "keystoned_upstream_requests_total", "counter", "Requests sent to the upstream.", UP_COUNTER,
          HC(requests) },
        { "keystoned_upstream_failures_total", "counter",
          "Requests that failed on the upstream (connect, reset, timeout, bad response, 5xx).",
          UP_COUNTER, HC(failures) },
        { "keystoned_upstream_active", "gauge", "Requests in flight on the upstream.", UP_COUNTER,
          HC(active) },
        { "keystoned_upstream_checks_total", "counter", "Active health probes, by result.", UP_CHECKS, 0 },
        { "keystoned_upstream_check_latency_seconds", "gauge", "Duration of the last probe.",
          UP_LATENCY, 0 },
    };
#undef HC
    for (size_t i = 0; i < KS_ARRAY_LEN(m); i++) {
        family(b, m[i].name, m[i].type, m[i].help);
        upstream_samples(b, w, m[i].name, m[i].kind, m[i].off, now);
    }
}

void ks_metrics_render(struct ks_jbuf *b, const struct ks_conn *c, uint32_t arg, int64_t now)
{
    (void)arg;
    global_metrics(b, c->w, now);
    tenant_metrics(b, c->w, now);
    upstream_metrics(b, c->w, now);
}
