/*
 * routelist.h: the routes of a route table as JSON, for keystonectl routes
 * and the admin API's GET routes (one format for both).
 *
 *   {"generation":7,"routes":[{"tenant":"demo","id":"r1","source":"static",
 *    "method":"GET","pattern":"/hello","function":true,"handler":null,
 *    "upstream":null,"timeout_ms":0,"strip_prefix":null,"headers":{}}]}
 */
#ifndef KS_ROUTELIST_H
#define KS_ROUTELIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/table.h"

/* An upper bound of the JSON's length. */
size_t ks_routelist_size(const struct ks_table *t);
/* Write the JSON (and a newline) into buf; its length, or 0 when it does
 * not fit.  Without header_values every route header's value is "***"
 * (its name kept): route headers are how a runtime route sends an
 * upstream its credentials, so only a reader who showed the admin token,
 * or who can read the state file anyway (keystonectl), sees them. */
size_t ks_routelist_json(const struct ks_table *t, uint64_t generation, bool header_values,
                         char *buf, size_t cap);
/* What serves a route, in words: "lua function", "handler NAME",
 * "upstream NAME" or "balanced upstreams". */
void ks_routelist_target(const struct ks_table *t, const struct ks_t_route *r, char *out, size_t len);

#endif
