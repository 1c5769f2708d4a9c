/*
 * balance.c: upstream choice and passive health (see balance.h).
 *
 * The master builds each tenant's smooth weighted round-robin schedule
 * (publish.c) and zeroes its cursors when it publishes a table; every
 * worker draws the next position with one atomic fetch-add.  Positions
 * are handed out exactly once across all workers, so the requests of N
 * workers together follow the schedule.  With every upstream up that one
 * draw is the whole choice: no lock, no scan.
 *
 * A position whose upstream cannot take the request (down, open breaker,
 * its half-open probe taken) must not go to the next usable position of
 * the schedule: that neighbour would get the down one's share on top of
 * its own (10:1:1:1 with the 10 down gave the light ones 2:1:1).  Drawing
 * again until a usable position comes up would keep the proportions but
 * costs draws in proportion to the down weight (a thousand for
 * 1000:1:1:1).  So such a request spills, and so does every retry (it
 * draws no position: that would take the next request's): a second
 * shared counter of the tenant (ks_rr_cursor.spill) numbers the spilled
 * attempts, and the k-th goes to the usable upstreams in proportion to
 * their shares of the schedule:
 *
 *     W = the shares of the usable, untried upstreams (one pass over the
 *         tenant's upstreams, not over its schedule)
 *     x = (k mod W) * P mod W, P coprime with W and near W / phi
 *     the upstream whose slice of [0, W), in table order, holds x
 *
 * k * P mod W visits every slice exactly once in any W spilled requests,
 * and the golden stride spreads the visits (1:1 alternates rather than
 * giving a run to each).  Every usable upstream then gets its own
 * positions of the schedule plus the same fraction of the others', so the
 * usable ones keep their proportions whatever the state of the rest, and
 * a degraded request costs two atomic operations and a pass over the
 * tenant's upstreams.  Weight 0 has no share: the round-robin never picks
 * it (a route can still name it, ks_balance_take()).
 *
 * The passive breaker state is one atomic word per upstream (see
 * shm/verdict.h); every transition is a CAS, so of several workers seeing
 * the same failure or the same expiry exactly one acts on it and logs it.
 */
#include <config.h>

#include <stdio.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "shm/verdict.h"
#include "worker/balance.h"

#define RETRY_AFTER_MAX_S 3600
#define RETRY_AFTER_DRAINED_S 30    /* every upstream has weight 0 */
#define WINDOW_COUNT_BITS 24        /* fail_window: start ms << 24 | count */
#define WINDOW_COUNT_MASK ((1ull << WINDOW_COUNT_BITS) - 1)

static struct ks_health *record_of(const struct ks_worker *w, uint32_t upstream)
{
    return ks_shm_health(w->shm, ks_t_upstreams(w->table)[upstream].health_slot);
}

bool ks_balance_usable(const struct ks_shm *shm, const struct ks_t_upstream *u, int64_t now_ms)
{
    return ks_upstream_usable(shm, u, now_ms);
}

static bool was_tried(uint32_t u, const uint32_t *tried, size_t ntried)
{
    for (size_t i = 0; i < ntried; i++)
        if (tried[i] == u)
            return true;
    return false;
}

static const char *label(const struct ks_worker *w, uint32_t upstream, char *buf, size_t len)
{
    const struct ks_table *t = w->table;
    const struct ks_t_upstream *u = &ks_t_upstreams(t)[upstream];
    snprintf(buf, len, "%s/%s", ks_t_str(t, ks_t_tenants(t)[u->tenant].name), ks_t_str(t, u->name));
    return buf;
}

/* Take upstream u for a new request if it can have one: a closed breaker
 * lets it through, a half-open one only to the request that wins the
 * claim (CAS to "probing since now").  The weight is not looked at: the
 * round-robin only comes here with upstreams that have one, and a route
 * may name an upstream of weight 0. */
static bool take_at(struct ks_worker *w, uint32_t upstream, int64_t now)
{
    const struct ks_t_upstream *u = &ks_t_upstreams(w->table)[upstream];
    struct ks_health *h = record_of(w, upstream);
    if (!ks_health_usable(h, ks_probe_stale_ms(u), now))
        return false;
    int64_t ou = atomic_load_explicit(&h->open_until_ms, memory_order_relaxed);
    if (ou == 0)
        return true;
    /* half-open (or a stale claim): one request probes.  The claim is
     * made on the value judged here, not on the one the check above saw:
     * a request that claimed it in between leaves a fresh claim, which is
     * not ours to take over */
    if (ks_breaker_of(ou, ks_probe_stale_ms(u), now) != KS_BREAKER_HALF_OPEN)
        return false;
    if (!atomic_compare_exchange_strong_explicit(&h->open_until_ms, &ou, -now, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return false;
    atomic_store_explicit(&h->probe_taken_ms, now, memory_order_relaxed);
    char lb[160];
    ks_log_info("breaker", "upstream %s is half-open: one request probes it",
                label(w, upstream, lb, sizeof(lb)));
    return true;
}

/* When did u last fail, actively or passively, on the monotonic clock
 * (0 = never)?  The master stamps probes with the wall clock. */
static int64_t last_failure(const struct ks_health *h, int64_t mono_minus_wall)
{
    int64_t passive = atomic_load_explicit(&h->last_fail_ms, memory_order_relaxed);
    int64_t active = 0;
    if (atomic_load_explicit(&h->last_reason, memory_order_relaxed) != KS_HR_NONE)
        active = atomic_load_explicit(&h->last_check_wall_ms, memory_order_relaxed) + mono_minus_wall;
    return passive > active ? passive : active;
}

/* all_down: try_anyway.  The untried upstream with weight that failed
 * longest ago (never is best); ties go in schedule order from start. */
static uint32_t least_recently_failed(struct ks_worker *w, const struct ks_t_tenant *tn,
                                      uint64_t start, const uint32_t *tried, size_t ntried)
{
    const uint16_t *sched = ks_t_schedule(w->table) + tn->schedule;
    int64_t offset = ks_now_ms() - ks_wall_ms();
    uint32_t best = KS_NONE;
    int64_t best_fail = 0;
    for (uint32_t i = 0; i < tn->nschedule; i++) {
        uint32_t u = tn->upstreams + sched[(start + i) % tn->nschedule];
        if (was_tried(u, tried, ntried))
            continue;
        int64_t f = last_failure(record_of(w, u), offset);
        if (best == KS_NONE || f < best_fail) {
            best = u;
            best_fail = f;
        }
    }
    return best;
}

/* A stride coprime with w near w / phi (the golden ratio), for the spill. */
static uint32_t golden_stride(uint32_t w)
{
    uint32_t p = (uint32_t)(((uint64_t)w * 618034 + 500000) / 1000000);
    for (;;) {
        uint32_t a = p, b = w;
        while (b != 0) {
            uint32_t r = a % b;
            a = b;
            b = r;
        }
        if (a == 1)
            return p;
        p++;
    }
}

/* Of tenant tn's upstreams with a share, the usable ones that are in
 * neither tried[] nor lost[] (claimed by another request just now): their
 * total share into *total; true when any is usable at all. */
static bool spill_total(const struct ks_worker *w, const struct ks_t_tenant *tn,
                        const uint32_t *tried, size_t ntried, const uint32_t *lost, size_t nlost,
                        int64_t now, uint32_t *total)
{
    bool any = false;
    *total = 0;
    for (uint32_t k = 0; k < tn->nupstreams; k++) {
        uint32_t u = tn->upstreams + k;
        const struct ks_t_upstream *up = &ks_t_upstreams(w->table)[u];
        if (up->share == 0 || !ks_balance_usable(w->shm, up, now))
            continue;
        any = true;
        if (!was_tried(u, tried, ntried) && !was_tried(u, lost, nlost))
            *total += up->share;
    }
    return any;
}

#define SPILL_TRIES 4   /* takes lost to other requests before giving up */

/* The request spilled (see the top of the file).  Returns the upstream
 * taken, or KS_NONE with *any_usable saying whether one was usable. */
static uint32_t spill(struct ks_worker *w, const struct ks_t_tenant *tn, struct ks_rr_cursor *c,
                      const uint32_t *tried, size_t ntried, int64_t now, bool *any_usable)
{
    uint32_t lost[SPILL_TRIES];
    size_t nlost = 0;
    uint64_t k = 0;
    bool drawn = false;
    *any_usable = false;
    for (int i = 0; i < SPILL_TRIES; i++) {
        uint32_t total;
        if (spill_total(w, tn, tried, ntried, lost, nlost, now, &total))
            *any_usable = true;
        if (total == 0)
            return KS_NONE;
        if (!drawn) {
            k = atomic_fetch_add_explicit(&c->spill, 1, memory_order_relaxed);
            drawn = true;
        }
        uint32_t x = (uint32_t)((k % total) * golden_stride(total) % total);
        /* the health records may have changed since the pass above: a
         * slice past the end is simply another try */
        for (uint32_t j = 0; j < tn->nupstreams; j++) {
            uint32_t u = tn->upstreams + j;
            const struct ks_t_upstream *up = &ks_t_upstreams(w->table)[u];
            if (up->share == 0 || was_tried(u, tried, ntried) || was_tried(u, lost, nlost) ||
                !ks_balance_usable(w->shm, up, now))
                continue;
            if (x >= up->share) {
                x -= up->share;
                continue;
            }
            if (take_at(w, u, now))
                return u;
            lost[nlost++] = u;      /* another request claimed its probe */
            break;
        }
    }
    return KS_NONE;
}

uint32_t ks_balance_pick(struct ks_worker *w, uint32_t tenant, const uint32_t *tried,
                         size_t ntried, bool *all_down)
{
    const struct ks_table *t = w->table;
    const struct ks_t_tenant *tn = &ks_t_tenants(t)[tenant];
    *all_down = false;
    if (tn->nupstreams == 0)
        return KS_NONE;
    if (tn->nschedule == 0) {       /* every upstream drained */
        *all_down = true;
        return KS_NONE;
    }
    const uint16_t *sched = ks_t_schedule(t) + tn->schedule;
    struct ks_rr_cursor *c = ks_shm_rr_cursor(w->shm, w->table_buf, tenant);
    int64_t now = ks_now_ms();
    /* The common case: one draw, and its upstream takes the request.  A
     * retry spills: had it drawn, an upstream failing every attempt would
     * get every first attempt (1:1 with one dead gave it all of them). */
    uint64_t pos = 0;
    if (ntried == 0) {
        pos = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        uint32_t first = tn->upstreams + sched[pos % tn->nschedule];
        if (take_at(w, first, now))
            return first;
    }
    bool any_usable;
    uint32_t u = spill(w, tn, c, tried, ntried, now, &any_usable);
    if (u != KS_NONE || any_usable)
        return u;           /* KS_NONE: the usable ones were all tried */
    if (tn->flags & KS_TF_ALL_DOWN_TRY)
        return least_recently_failed(w, tn, pos, tried, ntried);
    *all_down = true;
    return KS_NONE;
}

bool ks_balance_take(struct ks_worker *w, uint32_t upstream)
{
    if (take_at(w, upstream, ks_now_ms()))
        return true;
    /* the route's only upstream is down: the tenant's all_down decides */
    uint32_t tenant = ks_t_upstreams(w->table)[upstream].tenant;
    return (ks_t_tenants(w->table)[tenant].flags & KS_TF_ALL_DOWN_TRY) != 0;
}

void ks_balance_begin(struct ks_worker *w, uint32_t upstream)
{
    struct ks_health *h = record_of(w, upstream);
    atomic_fetch_add_explicit(&h->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->active, 1, memory_order_relaxed);
    /* after the add (and cleared before the sub in ks_balance_end): a
     * worker killed in between leaks one, it never makes the master take
     * out what was not put in */
    const struct ks_t_upstream *u = &ks_t_upstreams(w->table)[upstream];
    atomic_store_explicit(&w->score->active_id, u->id, memory_order_relaxed);
    atomic_store_explicit(&w->score->active_health, u->health_slot + 1, memory_order_relaxed);
}

static const char *outcome_name(enum ks_upstream_outcome o)
{
    switch (o) {
    case KS_UO_OK: return "ok";
    case KS_UO_CONNECT_FAILED: return "connect failed";
    case KS_UO_RESET: return "reset";
    case KS_UO_TIMEOUT: return "timeout";
    case KS_UO_BAD_RESPONSE: return "bad response";
    case KS_UO_5XX: return "5xx response";
    case KS_UO_LOCAL: return "local trouble";
    }
    return "?";
}

/* Count a failure in the window; true when it reaches max_fails. */
static bool count_failure(struct ks_health *h, const struct ks_t_upstream *u, int64_t now)
{
    uint64_t v = atomic_load_explicit(&h->fail_window, memory_order_relaxed);
    uint64_t next;
    do {
        int64_t start = (int64_t)(v >> WINDOW_COUNT_BITS);
        uint64_t count = v & WINDOW_COUNT_MASK;
        if (v == 0 || now - start >= u->fail_window_ms)
            next = ((uint64_t)now << WINDOW_COUNT_BITS) | 1;    /* a new window */
        else
            next = v + (count < WINDOW_COUNT_MASK);
    } while (!atomic_compare_exchange_weak_explicit(&h->fail_window, &v, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    return (int64_t)(next & WINDOW_COUNT_MASK) >= u->max_fails;
}

/* Close a half-open (or open past its time) breaker: the probe answered. */
static void close_half_open(struct ks_worker *w, uint32_t upstream, struct ks_health *h, int64_t now)
{
    int64_t ou = atomic_load_explicit(&h->open_until_ms, memory_order_relaxed);
    bool half_open = ou < 0 || (ou > 0 && now >= ou);
    char lb[160];
    if (half_open && atomic_compare_exchange_strong_explicit(&h->open_until_ms, &ou, 0, memory_order_acq_rel,
                                                             memory_order_relaxed)) {
        atomic_store_explicit(&h->fail_window, 0, memory_order_relaxed);
        ks_log_info("breaker", "upstream %s: circuit closed, the probe request succeeded",
                    label(w, upstream, lb, sizeof(lb)));
    }
}

void ks_balance_answered(struct ks_worker *w, uint32_t upstream)
{
    if (ks_t_upstreams(w->table)[upstream].max_fails > 0)
        close_half_open(w, upstream, record_of(w, upstream), ks_now_ms());
}

void ks_balance_end(struct ks_worker *w, uint32_t upstream, enum ks_upstream_outcome outcome)
{
    const struct ks_t_upstream *u = &ks_t_upstreams(w->table)[upstream];
    struct ks_health *h = record_of(w, upstream);
    int64_t now = ks_now_ms();
    char lb[160];
    atomic_store_explicit(&w->score->active_health, 0, memory_order_relaxed);
    atomic_fetch_sub_explicit(&h->active, 1, memory_order_relaxed);
    if (outcome == KS_UO_LOCAL)
        return;     /* nothing learnt: a half-open probe claim goes stale */
    if (outcome != KS_UO_OK) {
        atomic_fetch_add_explicit(&h->failures, 1, memory_order_relaxed);
        atomic_store_explicit(&h->last_fail_ms, now, memory_order_relaxed);
    }
    if (u->max_fails <= 0)
        return;     /* breaker off */
    int64_t ou = atomic_load_explicit(&h->open_until_ms, memory_order_relaxed);
    bool half_open = ou < 0 || (ou > 0 && now >= ou);
    if (outcome == KS_UO_OK) {
        /* The probe (or any request finishing while half-open) answered:
         * close.  Successes never close an open breaker early. */
        close_half_open(w, upstream, h, now);
        return;
    }
    if (half_open) {
        if (atomic_compare_exchange_strong_explicit(&h->open_until_ms, &ou, now + u->fail_timeout_ms,
                                                    memory_order_acq_rel, memory_order_relaxed))
            ks_log_warn("breaker", "upstream %s: circuit open again for %lld ms, the probe "
                        "request failed (%s)", label(w, upstream, lb, sizeof(lb)),
                        (long long)u->fail_timeout_ms, outcome_name(outcome));
        return;
    }
    if (ou > 0)
        return;     /* open: late answers of requests sent before it opened */
    if (!count_failure(h, u, now))
        return;
    int64_t closed = 0;
    if (atomic_compare_exchange_strong_explicit(&h->open_until_ms, &closed, now + u->fail_timeout_ms,
                                                memory_order_acq_rel, memory_order_relaxed)) {
        atomic_store_explicit(&h->fail_window, 0, memory_order_relaxed);
        ks_log_warn("breaker", "upstream %s: circuit open for %lld ms after %d failures within "
                    "%lld ms (last: %s)", label(w, upstream, lb, sizeof(lb)),
                    (long long)u->fail_timeout_ms, u->max_fails, (long long)u->fail_window_ms,
                    outcome_name(outcome));
    }
}

/* How long until u may take traffic again, in ms (0 = now). */
static int64_t comeback_ms(const struct ks_worker *w, uint32_t upstream, int64_t now)
{
    const struct ks_t_upstream *u = &ks_t_upstreams(w->table)[upstream];
    const struct ks_health *h = record_of(w, upstream);
    int64_t wait = 0;
    int64_t ou = atomic_load_explicit(&h->open_until_ms, memory_order_relaxed);
    enum ks_breaker b = ks_breaker_of(ou, ks_probe_stale_ms(u), now);
    if (b == KS_BREAKER_OPEN)
        wait = ou - now;
    else if (b == KS_BREAKER_PROBING)
        wait = 1000;    /* the probe will tell soon */
    uint64_t word = atomic_load_explicit(&h->word, memory_order_relaxed);
    if (KS_HW_STATE(word) == KS_HEALTH_DOWN) {
        /* rise good probes, the next one within an interval */
        int64_t left = (int64_t)u->rise - (int64_t)KS_HW_COUNT(word);
        int64_t active = (left > 0 ? left : 1) * u->health_interval_ms;
        if (active > wait)
            wait = active;
    }
    return wait;
}

uint32_t ks_balance_retry_after(struct ks_worker *w, uint32_t tenant, uint32_t upstream)
{
    const struct ks_t_tenant *tn = &ks_t_tenants(w->table)[tenant];
    int64_t now = ks_now_ms();
    int64_t best = -1;
    if (upstream != KS_NONE)    /* a route's own, whatever its weight */
        best = comeback_ms(w, upstream, now);
    for (uint32_t k = 0; upstream == KS_NONE && k < tn->nupstreams; k++) {
        uint32_t u = tn->upstreams + k;
        if (ks_t_upstreams(w->table)[u].weight <= 0)
            continue;       /* never in the round-robin */
        int64_t c = comeback_ms(w, u, now);
        if (best < 0 || c < best)
            best = c;
    }
    if (best < 0)
        return RETRY_AFTER_DRAINED_S;
    int64_t s = (best + 999) / 1000;
    return s < 1 ? 1 : s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : (uint32_t)s;
}
