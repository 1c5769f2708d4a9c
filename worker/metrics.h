/*
 * metrics.h: GET {admin_base_path}/metrics, the counters of the shared
 * segment in the Prometheus text exposition format (version 0.0.4), for
 * scrapers.  Read-only, like /health and /tenants.
 */
#ifndef KS_METRICS_H
#define KS_METRICS_H

#include <stdint.h>

#include "shm/verdict.h"
#include "worker/conn.h"

/* Render the exposition into b (admin.c answers it). */
void ks_metrics_render(struct ks_jbuf *b, const struct ks_conn *c, uint32_t arg, int64_t now);

#endif
