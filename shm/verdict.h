/*
 * verdict.h: reading a health record (shm.h) the same way everywhere.
 *
 * An upstream can take a request when the master's active checks (not
 * DOWN) and the workers' passive breaker (not open) allow it; it takes a
 * share of its tenant's round-robin when its weight is above 0 as well
 * (weight 0 drains it from the round-robin, while a route that names it
 * still reaches it: the canary pattern).  The balancer, the admin API and keystonectl
 * all call these functions (and render the same JSON with them), so they
 * can never disagree about what "healthy" means.
 *
 * The passive breaker lives in one atomic word, ks_health.open_until_ms,
 * so that exactly one request can claim the half-open probe by CAS:
 *
 *     0        closed: requests flow, failures are counted in fail_window
 *     T > 0    open until T (CLOCK_MONOTONIC ms); from T on it is
 *              half-open and the next request may claim the probe
 *     -T < 0   half-open, the probe was claimed at T; nobody else may
 *              use the upstream until that request ends (or, should its
 *              worker die, until the claim is older than probe_stale_ms)
 */
#ifndef KS_VERDICT_H
#define KS_VERDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/shm.h"
#include "shm/table.h"

enum ks_breaker {
    KS_BREAKER_CLOSED,
    KS_BREAKER_OPEN,
    KS_BREAKER_HALF_OPEN,   /* the probe is free to claim */
    KS_BREAKER_PROBING,     /* the probe is claimed and in flight */
};

/* "unknown", "up", "down". */
const char *ks_health_state_name(unsigned state);
/* "closed", "open", "half-open", "probing". */
const char *ks_breaker_name(enum ks_breaker b);

/* The breaker as of now_ms, from a value of open_until_ms.  A claim older
 * than probe_stale_ms counts as free again (KS_BREAKER_HALF_OPEN). */
enum ks_breaker ks_breaker_of(int64_t open_until, int64_t probe_stale_ms, int64_t now_ms);

/* The reason of the last probe for people: "" when it succeeded,
 * "bad status 503", "connect refused", ... */
void ks_health_reason_text(const struct ks_health *h, char *buf, size_t len);

/* Could the upstream take a new request now (active state and breaker
 * together, whatever its weight)?  A free half-open probe counts. */
bool ks_health_usable(const struct ks_health *h, int64_t probe_stale_ms, int64_t now_ms);

/* A probe claim of an upstream of a route table goes stale after
 * connect_timeout + response_timeout. */
int64_t ks_probe_stale_ms(const struct ks_t_upstream *u);
/* Does the upstream take a share of its tenant's round-robin now: a
 * weight above 0 and ks_health_usable()?  This is "usable" in the admin
 * API, /metrics and keystonectl. */
bool ks_upstream_usable(const struct ks_shm *shm, const struct ks_t_upstream *u, int64_t now_ms);
/* How many of tenant tn's upstreams are usable now. */
uint32_t ks_tenant_usable(const struct ks_shm *shm, const struct ks_table *t,
                          const struct ks_t_tenant *tn, int64_t now_ms);

/* A tenant's counters (ks_tenant_stats), read in one place so that the
 * admin API, /metrics and keystonectl show the same numbers. */
struct ks_tenant_counters {
    uint64_t requests, responses_4xx, responses_5xx;
    uint64_t lua_errors, lua_timeouts, lua_oom;
    uint64_t route_changes;     /* runtime route changes applied */
};
void ks_tenant_counters_read(const struct ks_shm *shm, const struct ks_t_tenant *tn,
                             struct ks_tenant_counters *out);

/* ---- the JSON form (admin API and keystonectl -j) ------------------------ */

/* A caller-allocated buffer; once something did not fit, trunc is set and
 * nothing more is added: grow cap and render again. */
struct ks_jbuf {
    char *p;
    size_t cap, pos;
    bool trunc;
};
void ks_jbuf_printf(struct ks_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string (quoted, escaped). */
void ks_jbuf_str(struct ks_jbuf *b, const char *s);

/* {"name","url","state","usable","weight","since","consecutive",
 *  "last_check","latency_ms","reason","last_status","checks_ok",
 *  "checks_failed","breaker"[,"breaker_open_ms"],"requests","failures",
 *  "active"} */
void ks_upstream_health_json(struct ks_jbuf *b, const struct ks_shm *shm, const struct ks_table *t,
                             const struct ks_t_upstream *u, int64_t now_ms);
/* {"name","base_path","domains","status","healthy","total","all_down",
 *  "requests","responses_4xx","responses_5xx","lua":{"script","errors",
 *  "timeouts","memory","route_changes"},"upstreams":[...]}; status is
 * "down" when the tenant has upstreams and none is usable, else "healthy". */
void ks_tenant_health_json(struct ks_jbuf *b, const struct ks_shm *shm, const struct ks_table *t,
                           const struct ks_t_tenant *tn, int64_t now_ms);

#endif
