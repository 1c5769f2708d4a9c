/*
 * balance.h: choosing an upstream, and telling shared memory how it went.
 *
 * Workers spread a tenant's requests with one smooth weighted round-robin
 * schedule (built by the master into the route table) and one cursor in
 * shared memory, so N workers together honour the weights; a request whose
 * turn falls on an upstream that cannot take it is shared out among the
 * others in proportion to their weights (balance.c says how).  An upstream
 * takes traffic only when both the master's active checks and the passive
 * breaker (failures counted by the workers) allow it.
 */
#ifndef KS_BALANCE_H
#define KS_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/worker.h"

enum ks_upstream_outcome {
    KS_UO_OK,               /* a response that is not 5xx */
    KS_UO_CONNECT_FAILED,   /* refused, unreachable, connect timeout */
    KS_UO_RESET,            /* reset or closed before a complete response */
    KS_UO_TIMEOUT,          /* response_timeout or idle timeout */
    KS_UO_BAD_RESPONSE,     /* not HTTP, oversized head, ... */
    KS_UO_5XX,              /* the upstream answered 5xx */
    KS_UO_LOCAL,            /* our own trouble (no descriptor for a socket):
                             * neither a success nor a failure of the upstream */
};

/* Pick an upstream of tenant (index into the table's tenants) for a new
 * attempt, skipping the upstreams in tried[] (indexes into the table's
 * upstreams).  Returns an upstream index or KS_NONE; then *all_down says
 * whether the tenant has upstreams that are all unusable (503 with
 * Retry-After) rather than none left to try.  An upstream whose breaker
 * is half-open is returned to one caller only (its probe request), so a
 * picked upstream must be followed by ks_balance_begin() and
 * ks_balance_end().  With all_down: try_anyway an all-down tenant gives
 * the untried upstream that failed least recently instead. */
uint32_t ks_balance_pick(struct ks_worker *w, uint32_t tenant, const uint32_t *tried,
                         size_t ntried, bool *all_down);
/* An upstream chosen without ks_balance_pick() (a route's `upstream`):
 * may it take this request?  Its weight does not matter (weight 0 keeps an
 * upstream out of the round-robin only).  Like pick, it claims a half-open
 * breaker's single probe, so the same begin/end must follow a true
 * answer; when it cannot take requests, the answer is the tenant's
 * all_down: true for try_anyway, false (503) for fail. */
bool ks_balance_take(struct ks_worker *w, uint32_t upstream);
/* A request starts on / finishes with an upstream (index into upstreams). */
void ks_balance_begin(struct ks_worker *w, uint32_t upstream);
/* Every outcome but KS_UO_OK counts toward the passive breaker:
 * max_fails within fail_window open it for fail_timeout. */
void ks_balance_end(struct ks_worker *w, uint32_t upstream, enum ks_upstream_outcome outcome);
/* The upstream sent a good response head (not 5xx): a half-open breaker
 * closes now, not when a long body (a download, an event stream) ends. */
void ks_balance_answered(struct ks_worker *w, uint32_t upstream);
/* Seconds a client should wait before retrying when ks_balance_pick()
 * said all_down, or ks_balance_take() refused (the Retry-After of the
 * 503): the soonest any upstream with a weight of the tenant (upstream
 * KS_NONE), or that upstream of a route, may take traffic again (an open
 * breaker's time left, or rise good probes at health_interval for an
 * upstream the checks took down), 1 to 3600. */
uint32_t ks_balance_retry_after(struct ks_worker *w, uint32_t tenant, uint32_t upstream);
/* Does this upstream take a share of the round-robin now? */
bool ks_balance_usable(const struct ks_shm *shm, const struct ks_t_upstream *u, int64_t now_ms);

#endif
