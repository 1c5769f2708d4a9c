/*
 * publish.c: struct ks_config -> route table (shm/table.h).
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/log.h"
#include "master/dynroutes.h"
#include "master/publish.h"
#include "shm/table.h"
#include "shm/token.h"

static int gcd(int a, int b)
{
    while (b != 0) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* A weight and where it came from, for sorting. */
struct wslot {
    long weight;
    long rem;       /* remainder of its quota (apportion) */
    size_t i;
};

static int by_weight(const void *a, const void *b)
{
    const struct wslot *x = a, *y = b;
    if (x->weight != y->weight)
        return x->weight < y->weight ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int by_remainder_desc(const void *a, const void *b)
{
    const struct wslot *x = a, *y = b;
    if (x->rem != y->rem)
        return x->rem > y->rem ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/*
 * Scale the weights (summing to sum) to exactly cap positions, every
 * non-zero weight keeping at least one: cap is at least the number of
 * them.  Largest remainders (Hamilton's method), after the weights too
 * light for a whole position at this scale are given their one: taking
 * them out first (lightest first) keeps their minimum from being paid by
 * anyone but the heavier ones, which get the rest by weight.  The old
 * way (each quota rounded down, at least 1, then one taken from the
 * heaviest while over) took positions from weights already at 1 when the
 * upstreams outnumbered the positions, leaving some out of the schedule.
 */
static int apportion(int *weight, size_t n, long sum, long cap)
{
    struct wslot *v = calloc(n ? n : 1, sizeof(*v));
    if (v == NULL)
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (weight[i] > 0)
            v[m++] = (struct wslot){ .weight = weight[i], .i = i };
    qsort(v, m, sizeof(*v), by_weight);
    size_t k = 0;
    for (; k < m && v[k].weight * cap < sum; k++) {     /* quota below 1 */
        weight[v[k].i] = 1;
        cap--;
        sum -= v[k].weight;
    }
    long given = 0;
    for (size_t r = k; r < m; r++) {
        long q = v[r].weight * cap / sum;
        v[r].rem = v[r].weight * cap % sum;
        weight[v[r].i] = (int)q;
        given += q;
    }
    qsort(v + k, m - k, sizeof(*v), by_remainder_desc);
    for (size_t r = k; r < m && given < cap; r++, given++)
        weight[v[r].i]++;
    free(v);
    return 0;
}

size_t ks_wrr_schedule(const int *w, size_t n, uint16_t *out, size_t max)
{
    int *weight = calloc(n ? n : 1, sizeof(int));
    long *current = calloc(n ? n : 1, sizeof(long));
    if (weight == NULL || current == NULL) {
        free(weight);
        free(current);
        return 0;
    }
    int g = 0;
    long sum = 0;
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        weight[i] = w[i] > 0 ? w[i] : 0;
        if (weight[i] > 0) {
            g = gcd(g, weight[i]);
            nonzero++;
        }
    }
    for (size_t i = 0; i < n && g > 0; i++) {
        weight[i] /= g;
        sum += weight[i];
    }
    /* every upstream with a weight has a position, even when they
     * outnumber max (then each has one, the only proportion that fits) */
    long cap = (long)(nonzero > max ? nonzero : max);
    if (sum > cap) {
        if (apportion(weight, n, sum, cap) < 0) {
            free(weight);
            free(current);
            return 0;
        }
        sum = cap;
    }
    size_t len = 0;
    if (out == NULL) {          /* only the length was asked for */
        len = (size_t)sum;
    } else if (sum == (long)nonzero) {
        /* every weight is 1: the smooth order is the table order (each
         * step's running totals tie and the first wins), found without
         * the n steps of n that follow, which many upstreams make slow */
        for (size_t i = 0; i < n; i++)
            if (weight[i] > 0)
                out[len++] = (uint16_t)i;
    } else {
        for (long step = 0; step < sum; step++) {
            size_t best = 0;
            long best_cur = 0;
            int found = 0;
            for (size_t i = 0; i < n; i++) {
                if (weight[i] == 0)
                    continue;
                current[i] += weight[i];
                if (!found || current[i] > best_cur) {
                    best = i;
                    best_cur = current[i];
                    found = 1;
                }
            }
            current[best] -= sum;
            out[len++] = (uint16_t)best;
        }
    }
    free(weight);
    free(current);
    return len;
}

static uint32_t level_of(const char *name)
{
    static const char *const levels[] = { "error", "warn", "info", "debug" };
    for (uint32_t i = 0; i < 4; i++)
        if (name != NULL && strcmp(name, levels[i]) == 0)
            return i;
    return 2;
}

size_t ks_publish_build(const struct ks_config *cfg, struct ks_shm *shm, void *buf, size_t cap,
                        char *err, size_t errlen)
{
    return ks_publish_build_dyn(cfg, NULL, NULL, shm, buf, cap, err, errlen);
}

size_t ks_publish_build_dyn(const struct ks_config *cfg, const struct ks_dynroutes *dyn,
                            const unsigned char *token_key, struct ks_shm *shm, void *buf,
                            size_t cap, char *err, size_t errlen)
{
    uint32_t nup = 0, nstr = (uint32_t)cfg->lua.nallowed_env, nsched = 0;
    for (size_t i = 0; i < cfg->ntenants; i++) {
        const struct ks_tenant_config *t = &cfg->tenants[i];
        nup += (uint32_t)t->nupstreams;
        nstr += (uint32_t)t->ndomains;
        int weights[t->nupstreams ? t->nupstreams : 1];
        for (size_t u = 0; u < t->nupstreams; u++)
            weights[u] = t->upstreams[u].weight;
        nsched += (uint32_t)ks_wrr_schedule(weights, t->nupstreams, NULL, KS_SCHEDULE_MAX);
    }
    uint32_t nroutes, nroute_str;
    ks_routes_count(dyn, cfg, &nroutes, &nroute_str);
    nstr += nroute_str;
    struct ks_table_builder b;
    if (ks_table_begin(&b, buf, cap, (uint32_t)cfg->ntenants, nup, nroutes, nstr, nsched) < 0)
        goto overflow;

    struct ks_t_settings *s = &b.t->settings;
    const struct ks_server_config *sv = &cfg->server;
    s->admin_base_path = ks_table_str(&b, sv->admin_base_path);
    /* the table is in the state file: the token's keyed hash, never the
     * token (shm/token.h) */
    s->admin_token_set = sv->admin_token != NULL && sv->admin_token[0] != '\0';
    if (s->admin_token_set && token_key != NULL)
        ks_token_mac(token_key, sv->admin_token, strlen(sv->admin_token), s->admin_token_mac);
    s->access_log = ks_table_str(&b, sv->access_log);
    s->log_level = level_of(sv->log_level);
    s->read_header_timeout_ms = sv->read_header_timeout_ms;
    s->read_body_timeout_ms = sv->read_body_timeout_ms;
    s->min_body_rate = sv->min_body_rate;
    s->send_timeout_ms = sv->send_timeout_ms;
    s->idle_timeout_ms = sv->idle_timeout_ms;
    s->lingering_time_ms = sv->lingering_time_ms;
    s->max_requests_per_worker = sv->max_requests_per_worker;
    s->max_keepalive_requests = sv->max_keepalive_requests;
    s->max_headers = cfg->limits.max_headers;
    s->max_request_line = cfg->limits.max_request_line;
    s->max_header_bytes = cfg->limits.max_header_bytes;
    s->max_body_bytes = cfg->limits.max_body_bytes;
    s->max_response_header_bytes = cfg->limits.max_response_header_bytes;
    s->lua_timeout_ms = cfg->lua.limits.timeout_ms;
    s->lua_memory = cfg->lua.limits.memory;
    s->lua_hard_timeout_ms = cfg->lua.hard_timeout_ms;
    s->lua_expose_errors = cfg->lua.expose_errors;
    s->max_changes_per_minute = cfg->dynamic_routing.max_changes_per_minute;
    s->worker_sched_batch = sv->worker_scheduling == KS_SCHED_BATCH;
    unsigned char via_mac[KS_TOKEN_MAC_LEN] = { 0 };
    if (token_key != NULL)      /* derived from the key, which it does not reveal */
        ks_token_mac(token_key, "via", 3, via_mac);
    snprintf(s->via_name, sizeof(s->via_name), "keystoned-%02x%02x%02x%02x", via_mac[0], via_mac[1],
             via_mac[2], via_mac[3]);

    uint32_t *strlist = ks_table_strlist(&b);
    uint16_t *schedule = ks_table_schedule(&b);
    uint32_t nstr_used = 0, nup_used = 0, nsched_used = 0, nroutes_used = 0;

    s->allowed_env = nstr_used;
    s->nallowed_env = (uint32_t)cfg->lua.nallowed_env;
    for (size_t i = 0; i < cfg->lua.nallowed_env; i++)
        strlist[nstr_used++] = ks_table_str(&b, cfg->lua.allowed_env[i]);

    for (size_t i = 0; i < cfg->ntenants; i++) {
        const struct ks_tenant_config *tc = &cfg->tenants[i];
        struct ks_t_tenant *t = ks_table_tenant(&b, (uint32_t)i);
        const char *key_parts[] = { tc->name };
        t->key = ks_hash_strings(key_parts, 1);
        int slot = shm != NULL ? ks_shm_tenant_slot(shm, t->key) : 0;
        if (slot < 0) {
            snprintf(err, errlen, "no free tenant stats record (limits.max_tenants is %d)",
                     cfg->limits.max_tenants);
            return 0;
        }
        t->stats_slot = (uint32_t)slot;
        t->name = ks_table_str(&b, tc->name);
        t->base_path = ks_table_str(&b, tc->base_path);
        t->domains = nstr_used;
        t->ndomains = (uint32_t)tc->ndomains;
        for (size_t d = 0; d < tc->ndomains; d++)
            strlist[nstr_used++] = ks_table_str(&b, tc->domains[d]);
        t->flags = (tc->strip_base_path ? KS_TF_STRIP_BASE_PATH : 0) |
                   (tc->preserve_host ? KS_TF_PRESERVE_HOST : 0) |
                   (tc->forwarded ? KS_TF_FORWARDED : 0) |
                   (tc->dynamic_routing_enabled ? KS_TF_DYNAMIC_ROUTING : 0) |
                   (tc->all_down == KS_ALL_DOWN_TRY_ANYWAY ? KS_TF_ALL_DOWN_TRY : 0);
        t->retries = tc->retries;
        t->lua_script = ks_table_str(&b, tc->lua_script);
        t->lua_source = ks_table_strn(&b, tc->lua_source, tc->lua_source_len);
        t->lua_source_len = (uint32_t)tc->lua_source_len;
        t->lua_timeout_ms = tc->lua_limits.timeout_ms;
        t->lua_memory = tc->lua_limits.memory;
        t->lua_max_routes = tc->lua_limits.max_routes;
        t->lua_max_middlewares = tc->lua_limits.max_middlewares;

        ks_routes_publish(dyn, cfg, i, &b, t, nup_used, &nroutes_used, &nstr_used);
        t->upstreams = nup_used;
        t->nupstreams = (uint32_t)tc->nupstreams;
        int weights[tc->nupstreams ? tc->nupstreams : 1];
        for (size_t u = 0; u < tc->nupstreams; u++) {
            const struct ks_upstream_config *uc = &tc->upstreams[u];
            struct ks_t_upstream *tu = ks_table_upstream(&b, nup_used++);
            tu->id = uc->id;
            int hslot = shm != NULL ? ks_shm_health_slot(shm, uc->id) : 0;
            if (hslot < 0) {
                snprintf(err, errlen, "no free health record (limits.max_upstreams is %d)",
                         cfg->limits.max_upstreams);
                return 0;
            }
            tu->health_slot = (uint32_t)hslot;
            tu->tenant = (uint32_t)i;
            tu->name = ks_table_str(&b, uc->name);
            tu->url = ks_table_str(&b, uc->url_text);
            tu->hostport = ks_table_str(&b, uc->url.hostport);
            tu->weight = uc->weight;
            tu->keepalive = uc->keepalive;
            tu->max_fails = uc->health.max_fails;
            tu->connect_timeout_ms = uc->connect_timeout_ms;
            tu->response_timeout_ms = uc->response_timeout_ms;
            tu->idle_timeout_ms = uc->idle_timeout_ms;
            tu->pool_idle_ms = uc->pool_idle_ms;
            tu->fail_window_ms = uc->health.fail_window_ms;
            tu->fail_timeout_ms = uc->health.fail_timeout_ms;
            tu->health_interval_ms = uc->health.interval_ms;
            tu->rise = uc->health.rise;
            tu->addr = uc->addr;
            weights[u] = uc->weight;
        }
        t->schedule = nsched_used;
        t->nschedule = (uint32_t)ks_wrr_schedule(weights, tc->nupstreams, schedule + nsched_used,
                                                 KS_SCHEDULE_MAX);
        for (uint32_t p = 0; p < t->nschedule; p++)
            ks_table_upstream(&b, t->upstreams + schedule[nsched_used + p])->share++;
        nsched_used += t->nschedule;
    }
    b.t->nschedule = nsched_used;
    size_t size = ks_table_finish(&b);
    if (size == 0)
        goto overflow;
    return size;

overflow:
    snprintf(err, errlen,
             "the route table needs more than limits.route_table_size (%zu bytes); raise it and restart",
             cap);
    return 0;
}

void ks_publish_sweep(const struct ks_config *cfg, struct ks_shm *shm)
{
    size_t nup = 0;
    for (size_t i = 0; i < cfg->ntenants; i++)
        nup += cfg->tenants[i].nupstreams;
    uint64_t *ids = calloc(nup + 1, sizeof(uint64_t));
    uint64_t *keys = calloc(cfg->ntenants + 1, sizeof(uint64_t));
    if (ids == NULL || keys == NULL) {
        free(ids);
        free(keys);
        return;             /* keeping stale records is harmless */
    }
    size_t k = 0;
    for (size_t i = 0; i < cfg->ntenants; i++) {
        const char *parts[] = { cfg->tenants[i].name };
        keys[i] = ks_hash_strings(parts, 1);
        for (size_t u = 0; u < cfg->tenants[i].nupstreams; u++)
            ids[k++] = cfg->tenants[i].upstreams[u].id;
    }
    ks_shm_health_sweep(shm, ids, k);
    ks_shm_tenant_sweep(shm, keys, cfg->ntenants);
    free(ids);
    free(keys);
}
