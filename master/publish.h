/*
 * publish.h: turn a configuration into the route table workers read.
 */
#ifndef KS_PUBLISH_H
#define KS_PUBLISH_H

#include <stddef.h>
#include <stdint.h>

#include "master/config.h"
#include "shm/shm.h"

/* Longest smooth weighted round-robin schedule per tenant; larger weight
 * sums are scaled down to it (proportions kept to within 1/KS_SCHEDULE_MAX
 * of the sum, each upstream with a weight keeping at least one position).
 * A tenant with more upstreams with a weight has one position each. */
#define KS_SCHEDULE_MAX 1024

struct ks_dynroutes;

/* Build the table for cfg into buf (cap bytes).  Health records and tenant
 * stats slots are found or assigned in shm (so a reload keeps the health of
 * unchanged upstreams); with shm NULL none is taken, to see whether the
 * table fits (keystoned -t).  Returns the table size, or 0 with err
 * filled. */
size_t ks_publish_build(const struct ks_config *cfg, struct ks_shm *shm, void *buf, size_t cap,
                        char *err, size_t errlen);
/* The same with the runtime routes in dyn (master/dynroutes.h), and the
 * admin token hashed under token_key (shm/token.h; NULL: only whether one
 * is set, as ks_publish_build does). */
size_t ks_publish_build_dyn(const struct ks_config *cfg, const struct ks_dynroutes *dyn,
                            const unsigned char *token_key, struct ks_shm *shm, void *buf,
                            size_t cap, char *err, size_t errlen);

/* Release health records and tenant stats no longer named by cfg. */
void ks_publish_sweep(const struct ks_config *cfg, struct ks_shm *shm);

/* The smooth weighted round-robin order of weights w[0..n) (nginx's
 * algorithm: each step adds every weight to its running total, picks the
 * largest and subtracts the sum from it).  Weight 0 never appears, every
 * other weight at least once.  Writes at most max entries into out, or
 * one per non-zero weight when there are more (or only counts them when
 * out is NULL); returns the number of entries. */
size_t ks_wrr_schedule(const int *w, size_t n, uint16_t *out, size_t max);

#endif
