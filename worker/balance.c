/*
 * balance.c: upstream choice and passive health (see balance.h).
 */
#include <config.h>

#include "keystoned/util.h"
#include "worker/balance.h"

bool ks_balance_usable(const struct ks_shm *shm, const struct ks_t_upstream *u, int64_t now_ms)
{
    (void)now_ms;
    if (u->weight <= 0)
        return false;       /* draining */
    uint64_t word = atomic_load_explicit(&ks_shm_health(shm, u->health_slot)->word, memory_order_relaxed);
    return KS_HW_STATE(word) != KS_HEALTH_DOWN;
}

static bool was_tried(uint32_t u, const uint32_t *tried, size_t ntried)
{
    for (size_t i = 0; i < ntried; i++)
        if (tried[i] == u)
            return true;
    return false;
}

uint32_t ks_balance_pick(struct ks_worker *w, uint32_t tenant, const uint32_t *tried,
                         size_t ntried, bool *all_down)
{
    const struct ks_table *t = w->table;
    const struct ks_t_tenant *tn = &ks_t_tenants(t)[tenant];
    *all_down = false;
    if (tn->nschedule == 0)
        return KS_NONE;
    const uint16_t *sched = ks_t_schedule(t) + tn->schedule;
    _Atomic uint64_t *cursor = ks_shm_rr_cursor(w->shm, w->table_buf, tenant);
    uint64_t start = atomic_fetch_add_explicit(cursor, 1, memory_order_relaxed);
    int64_t now = ks_now_ms();
    bool any_usable = false;
    for (uint32_t i = 0; i < tn->nschedule; i++) {
        uint32_t u = tn->upstreams + sched[(start + i) % tn->nschedule];
        if (!ks_balance_usable(w->shm, &ks_t_upstreams(t)[u], now))
            continue;
        any_usable = true;
        if (!was_tried(u, tried, ntried))
            return u;
    }
    *all_down = !any_usable;
    return KS_NONE;
}

void ks_balance_begin(struct ks_worker *w, uint32_t upstream)
{
    struct ks_health *h = ks_shm_health(w->shm, ks_t_upstreams(w->table)[upstream].health_slot);
    atomic_fetch_add_explicit(&h->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->active, 1, memory_order_relaxed);
}

void ks_balance_end(struct ks_worker *w, uint32_t upstream, enum ks_upstream_outcome outcome)
{
    struct ks_health *h = ks_shm_health(w->shm, ks_t_upstreams(w->table)[upstream].health_slot);
    atomic_fetch_sub_explicit(&h->active, 1, memory_order_relaxed);
    if (outcome != KS_UO_OK) {
        atomic_fetch_add_explicit(&h->failures, 1, memory_order_relaxed);
        atomic_store_explicit(&h->last_fail_ms, ks_now_ms(), memory_order_relaxed);
    }
}
