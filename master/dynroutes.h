/*
 * dynroutes.h: runtime routes, kept by the master.
 *
 * Workers (router:add_route at request time, the admin API) send changes
 * over the control socket as route specs (lua/routespec.h).  The master
 * checks each one against the configuration and the scripts' own routes
 * (the load-time catalog, master/luacheck.h): the tenant exists and has
 * dynamic_routing_enabled, the method and pattern are valid, the upstream
 * or the named handler exists, no route of the tenant has the same method
 * and shape, lua_limits.max_routes and limits.max_routes hold, and the
 * tenant has not made more than dynamic_routing.max_changes_per_minute
 * changes (a token bucket).  An accepted change is published with the
 * rest of the route table, bumping the generation, so every worker serves
 * it from its next request.
 *
 * Runtime routes live in the master's memory: they survive reloads whose
 * configuration still has their tenant, upstream and handler (others are
 * dropped, logged), not restarts.
 */
#ifndef KS_DYNROUTES_H
#define KS_DYNROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "master/config.h"
#include "shm/table.h"

struct ks_dynroutes;

struct ks_dynroutes *ks_dynroutes_new(void);
void ks_dynroutes_free(struct ks_dynroutes *d);

/* Is cmd a runtime route command ("route-add ...", "route-del ...")? */
bool ks_dynroutes_is_command(const char *cmd);
/* Check and apply cmd.  1: applied, publish it (id_out names the route,
 * tenant_out its tenant, *status is 201 or 200); 0: refused, *status and
 * err say why (400, 403, 404, 409, 429, 503), and for 429 *retry_after
 * the seconds until the tenant's bucket has a token again (else 0). */
int ks_dynroutes_apply(struct ks_dynroutes *d, const struct ks_config *cfg, const char *cmd,
                       int64_t now_ms, char *id_out, size_t idlen, char *tenant_out, size_t tlen,
                       int *status, int *retry_after, char *err, size_t errlen);
/* The last applied change was published: log it. */
void ks_dynroutes_published(const struct ks_dynroutes *d);
/* Undo the last applied change (its publish failed, for why), and log
 * that it was undone. */
void ks_dynroutes_undo(struct ks_dynroutes *d, const char *why);
/* After a reload: drop (and log) the routes cfg no longer allows. */
void ks_dynroutes_prune(struct ks_dynroutes *d, const struct ks_config *cfg);

/* ---- the route table (master/publish.c) -------------------------------------- */

/* Routes and strlist entries the table needs for cfg's scripts' routes
 * (listing only) and the runtime routes cfg allows.  d may be NULL. */
void ks_routes_count(const struct ks_dynroutes *d, const struct ks_config *cfg, uint32_t *nroutes,
                     uint32_t *nstrlist);
/* Write tenant ti's routes at routes[*next_route...] and their headers at
 * strlist[*next_str...]; sets t->routes and t->nroutes.  upstream_base is
 * the index of the tenant's first upstream in the table. */
void ks_routes_publish(const struct ks_dynroutes *d, const struct ks_config *cfg, size_t ti,
                       struct ks_table_builder *b, struct ks_t_tenant *t, uint32_t upstream_base,
                       uint32_t *next_route, uint32_t *next_str);

#endif
