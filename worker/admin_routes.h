/*
 * admin_routes.h: the admin API's runtime routes.
 *
 *   GET    {admin}/routes                      every tenant's routes (JSON)
 *   POST   {admin}/tenants/{name}/routes       add a runtime route (JSON body)
 *   DELETE {admin}/tenants/{name}/routes/{id}  delete one
 *
 * All three need "Authorization: Bearer <server.admin_token>" when a token
 * is set; the two that change something need one set, and are served on
 * the admin listener only.  Changes go to the master (lua/handle.h's
 * ks_lua_send_route), which checks and publishes them.
 */
#ifndef KS_ADMIN_ROUTES_H
#define KS_ADMIN_ROUTES_H

#include <stdbool.h>

#include "worker/exchange.h"

/* Is x's request for one of these endpoints? */
bool ks_admin_routes_wants(const struct ks_conn *c, const struct ks_request *r);
/* Answer it; 0, or -1 when the connection must be closed. */
int ks_admin_routes_serve(struct ks_exchange *x);

#endif
