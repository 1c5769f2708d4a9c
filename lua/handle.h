/*
 * handle.h: the Lua engine inside a worker.
 *
 * A worker keeps one state per tenant that has a script or runtime routes
 * (lua/tenants.c), built at start and whenever the generation changes
 * (a state whose inputs did not change is kept, its runtime routes
 * refreshed); a state that timed out or ran out of memory is thrown away
 * after its request and built again for the next one.  worker.c calls
 *
 *     rc = ks_lua_wants(&x) ? ks_lua_handle(&x) : ks_proxy_forward(&x);
 *
 * and ks_lua_handle runs the tenant's middleware, routes and handlers,
 * calling ks_proxy_forward itself for proxy routes, for a middleware's
 * next() that reaches the proxy, and for requests no route matches.
 */
#ifndef KS_LUA_HANDLE_H
#define KS_LUA_HANDLE_H

#include <stdbool.h>
#include <stddef.h>

#include "lua/routespec.h"
#include "worker/exchange.h"
#include "worker/worker.h"

/* After the worker copied a new route table (worker start, generation
 * change): build, keep or drop tenant states.  Never called inside Lua. */
void ks_lua_engine_refresh(struct ks_worker *w);
void ks_lua_engine_free(struct ks_worker *w);

/* Does the exchange's tenant go through Lua? */
bool ks_lua_wants(const struct ks_exchange *x);

/* Serve x (see above).  Same contract as ks_proxy_forward: 0 when the
 * connection may serve another request, -1 when it must be closed. */
int ks_lua_handle(struct ks_exchange *x);

/* A runtime route change, sent to the master over its control socket.
 * 0 with id_out (the route's id) and *generation (the one publishing it,
 * if not NULL) filled, *http_status 201 or 200; or -1 with err and
 * *http_status (400 bad spec, 403 not allowed, 404 no such tenant or
 * route, 409 conflict, 429 rate limited, 503 master unreachable or no
 * answer, 507 table full) and, for 429, *retry_after (if not NULL) the
 * seconds until the tenant may change a route again (else 0). */
int ks_lua_send_route(struct ks_worker *w, const struct ks_route_spec *s, bool del, char *id_out,
                      size_t idlen, uint64_t *generation, char *err, size_t errlen,
                      int *http_status, int *retry_after);

/* A runtime route from a JSON object (the admin API's POST body), with
 * the same keys and checks as router:add_route's options plus "method"
 * and "pattern".  s->tenant must be set; 0, or -1 with a reason. */
int ks_lua_route_spec_from_json(const char *json, size_t len, struct ks_route_spec *s, char *err,
                                size_t errlen);

/* Internal to lua/: the state of a tenant (built again if it was
 * discarded), NULL when its script fails to load; and discarding one. */
struct ks_lua *ks_lua_engine_state(struct ks_worker *w, uint32_t tenant);
void ks_lua_engine_discard(struct ks_worker *w, uint32_t tenant);
struct ks_lua_arena *ks_lua_engine_arena(struct ks_worker *w);
struct ks_lua_scratch *ks_lua_engine_scratch(struct ks_worker *w);
/* The engine's response buffer, lent to one request at a time. */
void ks_lua_engine_outbuf(struct ks_worker *w, char ***buf, size_t **cap);

#endif
