/*
 * health.h: the master's active health checker.
 *
 * Every configured upstream is probed on its own schedule (health_interval
 * with jitter, the first probe right after start or after the reload that
 * added it): a TCP connect, or with health_path an HTTP GET whose status
 * must fall in health_expect.  Probes are non-blocking sockets on one
 * epoll descriptor that the master polls beside its other descriptors, so
 * any number can be in flight and none ever blocks the master; each one
 * fails with a reason when it outlives health_timeout.
 *
 * Results go to the upstream's health record in shared memory (the master
 * is its only writer for the active fields): counters and the last probe's
 * reason, status and latency first, then the state word (release), so a
 * reader that sees a new state also sees the probe that caused it.  rise
 * successes in a row bring a DOWN upstream UP, fall failures in a row take
 * it DOWN; each change is logged once:
 *
 *   upstream api/app-1 is DOWN: connect refused (3 checks)
 *   upstream api/app-1 is UP (2 checks)
 *
 * A new upstream starts UNKNOWN, which takes traffic: its first successful
 * probe makes it UP, fall failed ones DOWN.
 */
#ifndef KS_HEALTH_H
#define KS_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "master/config.h"
#include "shm/shm.h"

struct ks_health_checker;

/* A checker writing into shm's health records; NULL with err on failure. */
struct ks_health_checker *ks_health_new(struct ks_shm *shm, char *err, size_t errlen);

/* Check the upstreams of cfg from now on; call after every successful
 * publish (the health records must be assigned).  Upstreams whose id was
 * already checked keep their state, schedule and probe in flight, with
 * cfg's settings from their next probe on; new ones are probed soon;
 * removed ones are dropped.  Nothing in cfg is kept.  0, or -1 when out of
 * memory (the previous set stays). */
int ks_health_configure(struct ks_health_checker *hc, const struct ks_config *cfg);

/* The descriptor to poll for POLLIN (readable when a probe can advance). */
int ks_health_fd(const struct ks_health_checker *hc);
/* Milliseconds from now_ms until the checker has something to do (a
 * probe to start or a deadline), or -1 when nothing is scheduled. */
int ks_health_timeout(const struct ks_health_checker *hc, int64_t now_ms);
/* Advance the probes that are ready, fail the ones past their deadline and
 * start the ones that are due.  Never blocks. */
void ks_health_run(struct ks_health_checker *hc);

/* Stop and free.  In a freshly forked worker pass forked = true: the
 * sockets are closed without touching shared memory or the log. */
void ks_health_free(struct ks_health_checker *hc, bool forked);

/* Probes currently in flight (tests, status). */
size_t ks_health_inflight(const struct ks_health_checker *hc);

/*
 * The rise/fall state machine on one state word (KS_HW_*), a pure
 * function: the word after one probe result ok at wall-clock second
 * now_s.  *changed says whether the state changed (the change time is
 * then now_s).
 *
 *   UNKNOWN  ok -> UP;  fall failures in a row -> DOWN
 *   UP       fall failures in a row -> DOWN; a success resets the count
 *   DOWN     rise successes in a row -> UP; a failure resets the count
 */
uint64_t ks_health_step(uint64_t word, bool ok, int rise, int fall, int64_t now_s, bool *changed);

#endif
