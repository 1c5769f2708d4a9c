/*
 * luacheck.h: every tenant script compiled and run once in a scratch Lua
 * state at each load (keystoned -t, start, every reload), so that a syntax
 * error or a refused registration (bad pattern, unknown upstream,
 * conflicting route) fails the load with file:line instead of the first
 * request.
 *
 * The scripts run in a child process: a script stuck inside a C function
 * (a pathological pattern), or anything that would crash, costs the child,
 * never the master, which kills it after lua.hard_timeout plus the
 * scripts' own timeouts.  What the child found comes back as a catalog:
 * the routes and named handlers each script registers, which the master
 * uses to check runtime routes (conflicts, handler names, max_routes) and
 * to list static routes in the route table.
 */
#ifndef KS_LUACHECK_H
#define KS_LUACHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/router.h"
#include "master/config.h"

struct ks_lua_catalog_route {
    char *id, *method, *pattern;
    char *handler;                  /* named handler, or "" */
    char *upstream;                 /* upstream name, or "" */
    bool function;                  /* answered by a Lua function */
    struct ks_pattern pat;          /* compiled, for conflict checks */
};

struct ks_lua_catalog_tenant {
    bool scripted;                  /* the tenant has a script */
    struct ks_lua_catalog_route *routes;
    size_t nroutes;
    char **handlers;                /* router:handler names */
    size_t nhandlers;
};

/* One entry per tenant of the config, in its order. */
struct ks_lua_catalog {
    struct ks_lua_catalog_tenant *tenants;
    size_t ntenants;
};

/* Check every script of cfg; on success cfg->lua_catalog is set (it is
 * freed with the config).  0, or -1 with the errors added to diag. */
int ks_luacheck_config(struct ks_config *cfg, struct ks_diag *diag);
void ks_lua_catalog_free(struct ks_lua_catalog *c);

/* Is name a handler the tenant's script registers? */
bool ks_lua_catalog_has_handler(const struct ks_lua_catalog *c, size_t tenant, const char *name);

#endif
