/*
 * verdict.c: reading a health record (see verdict.h).
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keystoned/util.h"
#include "shm/verdict.h"

const char *ks_health_state_name(unsigned state)
{
    switch (state) {
    case KS_HEALTH_UP: return "up";
    case KS_HEALTH_DOWN: return "down";
    default: return "unknown";
    }
}

const char *ks_breaker_name(enum ks_breaker b)
{
    static const char *const names[] = { "closed", "open", "half-open", "probing" };
    return (unsigned)b < KS_ARRAY_LEN(names) ? names[b] : "?";
}

enum ks_breaker ks_breaker_of(int64_t open_until, int64_t probe_stale_ms, int64_t now_ms)
{
    if (open_until == 0)
        return KS_BREAKER_CLOSED;
    if (open_until > 0)
        return now_ms < open_until ? KS_BREAKER_OPEN : KS_BREAKER_HALF_OPEN;
    return now_ms - -open_until > probe_stale_ms ? KS_BREAKER_HALF_OPEN : KS_BREAKER_PROBING;
}

void ks_health_reason_text(const struct ks_health *h, char *buf, size_t len)
{
    unsigned reason = atomic_load_explicit(&h->last_reason, memory_order_relaxed);
    if (reason == KS_HR_BAD_STATUS)
        snprintf(buf, len, "bad status %u", atomic_load_explicit(&h->last_status, memory_order_relaxed));
    else
        snprintf(buf, len, "%s", ks_health_reason_name((enum ks_health_reason)reason));
}

bool ks_health_usable(const struct ks_health *h, int64_t probe_stale_ms, int64_t now_ms)
{
    uint64_t word = atomic_load_explicit(&h->word, memory_order_relaxed);
    if (KS_HW_STATE(word) == KS_HEALTH_DOWN)
        return false;
    enum ks_breaker b = ks_breaker_of(atomic_load_explicit(&h->open_until_ms, memory_order_relaxed),
                                      probe_stale_ms, now_ms);
    return b == KS_BREAKER_CLOSED || b == KS_BREAKER_HALF_OPEN;
}

int64_t ks_probe_stale_ms(const struct ks_t_upstream *u)
{
    return u->connect_timeout_ms + u->response_timeout_ms;
}

bool ks_upstream_usable(const struct ks_shm *shm, const struct ks_t_upstream *u, int64_t now_ms)
{
    if (u->weight <= 0)
        return false;       /* drained from the round-robin */
    return ks_health_usable(ks_shm_health(shm, u->health_slot), ks_probe_stale_ms(u), now_ms);
}

uint32_t ks_tenant_usable(const struct ks_shm *shm, const struct ks_table *t,
                          const struct ks_t_tenant *tn, int64_t now)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < tn->nupstreams; k++)
        n += ks_upstream_usable(shm, &ks_t_upstreams(t)[tn->upstreams + k], now);
    return n;
}

void ks_jbuf_printf(struct ks_jbuf *b, const char *fmt, ...)
{
    if (b->trunc)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->pos, b->cap - b->pos, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->pos)
        b->trunc = true;
    else
        b->pos += (size_t)n;
}

void ks_jbuf_str(struct ks_jbuf *b, const char *s)
{
    ks_jbuf_printf(b, "\"");
    if (!b->trunc && ks_json_escape(b->p, b->cap, &b->pos, s, strlen(s)) < 0)
        b->trunc = true;
    ks_jbuf_printf(b, "\"");
}

static void jtime(struct ks_jbuf *b, int64_t wall_ms)
{
    char when[40];
    if (wall_ms <= 0) {
        ks_jbuf_printf(b, "null");
        return;
    }
    ks_format_rfc3339(wall_ms, when, sizeof(when));
    ks_jbuf_str(b, when);
}

void ks_upstream_health_json(struct ks_jbuf *b, const struct ks_shm *shm, const struct ks_table *t,
                             const struct ks_t_upstream *u, int64_t now)
{
    const struct ks_health *h = ks_shm_health(shm, u->health_slot);
    /* acquire: the probe fields behind this state are visible */
    uint64_t word = atomic_load_explicit(&h->word, memory_order_acquire);
    int64_t ou = atomic_load_explicit(&h->open_until_ms, memory_order_relaxed);
    enum ks_breaker br = ks_breaker_of(ou, ks_probe_stale_ms(u), now);
    bool checked = atomic_load_explicit(&h->checked, memory_order_relaxed) != 0;
    char reason[64];
    ks_health_reason_text(h, reason, sizeof(reason));
    ks_jbuf_printf(b, "{\"name\":");
    ks_jbuf_str(b, ks_t_str(t, u->name));
    ks_jbuf_printf(b, ",\"url\":");
    ks_jbuf_str(b, ks_t_str(t, u->url));
    ks_jbuf_printf(b, ",\"state\":\"%s\",\"usable\":%s,\"weight\":%d,\"since\":",
                   ks_health_state_name(KS_HW_STATE(word)),
                   ks_upstream_usable(shm, u, now) ? "true" : "false", u->weight);
    jtime(b, KS_HW_SINCE(word) * 1000);
    ks_jbuf_printf(b, ",\"consecutive\":%u,\"last_check\":", KS_HW_COUNT(word));
    jtime(b, checked ? atomic_load_explicit(&h->last_check_wall_ms, memory_order_relaxed) : 0);
    if (checked)
        ks_jbuf_printf(b, ",\"latency_ms\":%.3f",
                       atomic_load_explicit(&h->last_latency_us, memory_order_relaxed) / 1000.0);
    else
        ks_jbuf_printf(b, ",\"latency_ms\":null");
    ks_jbuf_printf(b, ",\"reason\":");
    ks_jbuf_str(b, reason);
    ks_jbuf_printf(
        b, ",\"last_status\":%u,\"checks_ok\":%llu,\"checks_failed\":%llu,\"breaker\":\"%s\"",
        atomic_load_explicit(&h->last_status, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&h->checks_ok, memory_order_relaxed),
        (unsigned long long)atomic_load_explicit(&h->checks_failed, memory_order_relaxed),
        ks_breaker_name(br));
    if (br == KS_BREAKER_OPEN)
        ks_jbuf_printf(b, ",\"breaker_open_ms\":%lld", (long long)(ou - now));
    ks_jbuf_printf(b, ",\"requests\":%llu,\"failures\":%llu,\"active\":%llu}",
                   (unsigned long long)atomic_load_explicit(&h->requests, memory_order_relaxed),
                   (unsigned long long)atomic_load_explicit(&h->failures, memory_order_relaxed),
                   (unsigned long long)atomic_load_explicit(&h->active, memory_order_relaxed));
}

void ks_tenant_counters_read(const struct ks_shm *shm, const struct ks_t_tenant *tn,
                             struct ks_tenant_counters *out)
{
    const struct ks_tenant_stats *ts = ks_shm_tenant_stats(shm, tn->stats_slot);
    out->requests = atomic_load_explicit(&ts->requests, memory_order_relaxed);
    out->responses_4xx = atomic_load_explicit(&ts->responses_4xx, memory_order_relaxed);
    out->responses_5xx = atomic_load_explicit(&ts->responses_5xx, memory_order_relaxed);
    out->lua_errors = atomic_load_explicit(&ts->lua_errors, memory_order_relaxed);
    out->lua_timeouts = atomic_load_explicit(&ts->lua_timeouts, memory_order_relaxed);
    out->lua_oom = atomic_load_explicit(&ts->lua_oom, memory_order_relaxed);
    out->route_changes = atomic_load_explicit(&ts->dynamic_changes, memory_order_relaxed);
}

void ks_tenant_health_json(struct ks_jbuf *b, const struct ks_shm *shm, const struct ks_table *t,
                           const struct ks_t_tenant *tn, int64_t now)
{
    uint32_t usable = ks_tenant_usable(shm, t, tn, now);
    struct ks_tenant_counters n;
    ks_tenant_counters_read(shm, tn, &n);
    ks_jbuf_printf(b, "{\"name\":");
    ks_jbuf_str(b, ks_t_str(t, tn->name));
    ks_jbuf_printf(b, ",\"base_path\":");
    ks_jbuf_str(b, ks_t_str(t, tn->base_path));
    ks_jbuf_printf(b, ",\"domains\":[");
    for (uint32_t d = 0; d < tn->ndomains; d++) {
        ks_jbuf_printf(b, "%s", d ? "," : "");
        ks_jbuf_str(b, ks_t_str(t, ks_t_strlist(t)[tn->domains + d]));
    }
    ks_jbuf_printf(
        b, "],\"status\":\"%s\",\"healthy\":%u,\"total\":%u,\"all_down\":\"%s\","
           "\"requests\":%llu,\"responses_4xx\":%llu,\"responses_5xx\":%llu,\"lua\":{\"script\":",
        tn->nupstreams > 0 && usable == 0 ? "down" : "healthy", usable, tn->nupstreams,
        tn->flags & KS_TF_ALL_DOWN_TRY ? "try_anyway" : "fail", (unsigned long long)n.requests,
        (unsigned long long)n.responses_4xx, (unsigned long long)n.responses_5xx);
    ks_jbuf_str(b, ks_t_str(t, tn->lua_script));
    ks_jbuf_printf(b, ",\"errors\":%llu,\"timeouts\":%llu,\"memory\":%llu,\"route_changes\":%llu},"
                      "\"upstreams\":[",
                   (unsigned long long)n.lua_errors, (unsigned long long)n.lua_timeouts,
                   (unsigned long long)n.lua_oom, (unsigned long long)n.route_changes);
    for (uint32_t k = 0; k < tn->nupstreams; k++) {
        ks_jbuf_printf(b, "%s", k ? "," : "");
        ks_upstream_health_json(b, shm, t, &ks_t_upstreams(t)[tn->upstreams + k], now);
    }
    ks_jbuf_printf(b, "]}");
}
