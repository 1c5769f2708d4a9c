/*
 * dynroutes.c: runtime routes in the master (see dynroutes.h).
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/router.h"
#include "lua/routespec.h"
#include "master/dynroutes.h"
#include "master/luacheck.h"

/* how long before the requester's deadline a change is still taken */
#define DEADLINE_MARGIN_MS 250

struct dynroute {
    char *tenant, *id, *method, *pattern, *upstream, *handler, *strip;
    char *headers;                  /* name\0value\0 ... */
    size_t nheaders, headers_len;
    int64_t timeout_ms;
    struct ks_pattern pat;
};

struct bucket {
    char tenant[KS_SPEC_NAME_MAX];
    double tokens;
    int64_t at_ms;
};

struct ks_dynroutes {
    struct dynroute *v;
    size_t n, cap;
    uint64_t next_id;
    struct bucket *buckets;
    size_t nbuckets;
    /* the last change, for undo: an added route's index, or a removed one */
    enum { UNDO_NONE, UNDO_ADD, UNDO_DEL } undo;
    struct dynroute removed;
    size_t removed_at;
    struct bucket *charged;
};

struct ks_dynroutes *ks_dynroutes_new(void)
{
    return calloc(1, sizeof(struct ks_dynroutes));
}

static void route_free(struct dynroute *r)
{
    free(r->tenant);
    free(r->id);
    free(r->method);
    free(r->pattern);
    free(r->upstream);
    free(r->handler);
    free(r->strip);
    free(r->headers);
    ks_pattern_free(&r->pat);
    memset(r, 0, sizeof(*r));
}

void ks_dynroutes_free(struct ks_dynroutes *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++)
        route_free(&d->v[i]);
    if (d->undo == UNDO_DEL)
        route_free(&d->removed);
    free(d->v);
    free(d->buckets);
    free(d);
}

bool ks_dynroutes_is_command(const char *cmd)
{
    return strncmp(cmd, "route-add ", 10) == 0 || strncmp(cmd, "route-del ", 10) == 0;
}

static long tenant_index(const struct ks_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ntenants; i++)
        if (strcmp(cfg->tenants[i].name, name) == 0)
            return (long)i;
    return -1;
}

static long upstream_index(const struct ks_tenant_config *t, const char *name)
{
    for (size_t i = 0; i < t->nupstreams; i++)
        if (strcmp(t->upstreams[i].name, name) == 0)
            return (long)i;
    return -1;
}

static const struct ks_lua_catalog_tenant *catalog_of(const struct ks_config *cfg, size_t ti)
{
    const struct ks_lua_catalog *c = cfg->lua_catalog;
    return c != NULL && ti < c->ntenants ? &c->tenants[ti] : NULL;
}

static size_t dynamic_count(const struct ks_dynroutes *d, const char *tenant, size_t skip)
{
    size_t n = 0;
    for (size_t i = 0; d != NULL && i < d->n; i++)
        n += i != skip && strcmp(d->v[i].tenant, tenant) == 0;
    return n;
}

/* Can route r (at index self of d, or d->n for a new one) be served with
 * cfg?  With limits, would it also fit lua_limits.max_routes (a new route
 * must; one that is there stays when a reload lowers the limit)?  0, or -1
 * with *status and err. */
static int validate(const struct ks_dynroutes *d, const struct ks_config *cfg,
                    const struct dynroute *r, size_t self, bool limits, int *status, char *err,
                    size_t errlen)
{
    long ti = tenant_index(cfg, r->tenant);
    if (ti < 0) {
        *status = 404;
        snprintf(err, errlen, "no tenant %s", r->tenant);
        return -1;
    }
    const struct ks_tenant_config *t = &cfg->tenants[ti];
    if (!t->dynamic_routing_enabled) {
        *status = 403;
        snprintf(err, errlen, "tenant %s does not allow runtime routes (dynamic_routing_enabled)",
                 t->name);
        return -1;
    }
    *status = 400;
    if (!ks_route_method_ok(r->method)) {
        snprintf(err, errlen, "bad method \"%.32s\"", r->method);
        return -1;
    }
    if (r->upstream[0] && r->handler[0]) {
        snprintf(err, errlen, "a route has a handler or an upstream, not both");
        return -1;
    }
    if (r->upstream[0] && upstream_index(t, r->upstream) < 0) {
        snprintf(err, errlen, "unknown upstream \"%s\" (tenant %s)", r->upstream, t->name);
        return -1;
    }
    if (r->handler[0] && !ks_lua_catalog_has_handler(cfg->lua_catalog, (size_t)ti, r->handler)) {
        snprintf(err, errlen, "unknown handler \"%s\": tenant %s's script registers no such "
                 "handler with router:handler", r->handler, t->name);
        return -1;
    }
    if (r->strip[0] && strncmp(r->pattern, r->strip, strlen(r->strip)) != 0) {
        snprintf(err, errlen, "strip_prefix \"%s\" is not a prefix of the pattern", r->strip);
        return -1;
    }
    *status = 409;
    const struct ks_lua_catalog_tenant *ct = catalog_of(cfg, (size_t)ti);
    size_t nstatic = ct != NULL ? ct->nroutes : 0;
    for (size_t k = 0; k < nstatic; k++)
        if (strcmp(ct->routes[k].method, r->method) == 0 &&
            ks_pattern_same_shape(&ct->routes[k].pat, &r->pat)) {
            snprintf(err, errlen, "%s %s conflicts with the script's route %s (%s %s)", r->method,
                     r->pattern, ct->routes[k].id, ct->routes[k].method, ct->routes[k].pattern);
            return -1;
        }
    for (size_t k = 0; d != NULL && k < d->n; k++) {
        const struct dynroute *o = &d->v[k];
        if (k != self && strcmp(o->tenant, r->tenant) == 0 && strcmp(o->method, r->method) == 0 &&
            ks_pattern_same_shape(&o->pat, &r->pat)) {
            snprintf(err, errlen, "%s %s conflicts with runtime route %s (%s %s)", r->method,
                     r->pattern, o->id, o->method, o->pattern);
            return -1;
        }
    }
    size_t mine = nstatic + dynamic_count(d, r->tenant, self) + 1;
    if (limits && mine > (size_t)t->lua_limits.max_routes) {
        snprintf(err, errlen, "tenant %s would have more than %d routes (lua_limits.max_routes)",
                 t->name, t->lua_limits.max_routes);
        return -1;
    }
    return 0;
}

/* The token bucket of a tenant: max_changes_per_minute tokens, refilled
 * continuously. */
static struct bucket *bucket_of(struct ks_dynroutes *d, const char *tenant, int per_minute,
                                int64_t now)
{
    for (size_t i = 0; i < d->nbuckets; i++)
        if (strcmp(d->buckets[i].tenant, tenant) == 0) {
            struct bucket *b = &d->buckets[i];
            b->tokens += (double)(now - b->at_ms) * per_minute / 60000.0;
            if (b->tokens > per_minute)
                b->tokens = per_minute;
            b->at_ms = now;
            return b;
        }
    struct bucket *nb = realloc(d->buckets, (d->nbuckets + 1) * sizeof(*nb));
    if (nb == NULL)
        return NULL;
    d->buckets = nb;
    struct bucket *b = &nb[d->nbuckets++];
    ks_strlcpy(b->tenant, tenant, sizeof(b->tenant));
    b->tokens = per_minute;
    b->at_ms = now;
    return b;
}

static char *dup_or(const char *s, bool *oom)
{
    char *c = strdup(s);
    if (c == NULL)
        *oom = true;
    return c;
}

static int from_spec(struct dynroute *r, const struct ks_route_spec *s, char *err, size_t errlen)
{
    bool oom = false;
    memset(r, 0, sizeof(*r));
    r->tenant = dup_or(s->tenant, &oom);
    r->id = dup_or(s->id, &oom);
    r->method = dup_or(s->method, &oom);
    r->pattern = dup_or(s->pattern, &oom);
    r->upstream = dup_or(s->upstream, &oom);
    r->handler = dup_or(s->handler, &oom);
    r->strip = dup_or(s->strip, &oom);
    r->headers = malloc(s->headers_len + 1);
    if (r->headers != NULL)
        memcpy(r->headers, s->headers, s->headers_len);
    else
        oom = true;
    r->nheaders = s->nheaders;
    r->headers_len = s->headers_len;
    r->timeout_ms = s->timeout_ms;
    if (oom) {
        route_free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ks_pattern_compile(r->pattern, &r->pat, err, errlen) < 0) {
        route_free(r);
        return -1;
    }
    return 0;
}

int ks_dynroutes_apply(struct ks_dynroutes *d, const struct ks_config *cfg, const char *cmd,
                       int64_t now_ms, char *id_out, size_t idlen, char *tenant_out, size_t tlen,
                       int *status, int *retry_after, char *err, size_t errlen)
{
    *retry_after = 0;
    bool del = strncmp(cmd, "route-del ", 10) == 0;
    struct ks_route_spec *s = malloc(sizeof(*s));
    if (s == NULL) {
        *status = 503;
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    int rc = 0;
    *status = 400;
    if (ks_route_spec_decode(cmd + 10, s, err, errlen) < 0)
        goto out;
    /* The requester stops waiting at its deadline and answers "no answer,
     * the change may still be applied".  Read later (this master was
     * stopped or busy), the change is dropped, not applied behind its
     * back; DEADLINE_MARGIN_MS leaves time for the publish and the reply
     * to reach it. */
    if (s->deadline_ms > 0 && now_ms + DEADLINE_MARGIN_MS > s->deadline_ms) {
        *status = 503;
        snprintf(err, errlen, "read at or too near the requester's deadline: change not applied");
        ks_log_warn("lua-route", "tenant %s: runtime route %s not applied: read %lld ms after "
                    "its requester's deadline (margin %d ms)", s->tenant, del ? "delete" : "add",
                    (long long)(now_ms - s->deadline_ms), DEADLINE_MARGIN_MS);
        goto out;
    }
    long ti = tenant_index(cfg, s->tenant);
    if (ti < 0) {
        *status = 404;
        snprintf(err, errlen, "no tenant %s", s->tenant);
        goto out;
    }
    const struct ks_tenant_config *t = &cfg->tenants[ti];
    if (!t->dynamic_routing_enabled) {
        *status = 403;
        snprintf(err, errlen, "tenant %s does not allow runtime routes (dynamic_routing_enabled)",
                 t->name);
        goto out;
    }
    int per_minute = cfg->dynamic_routing.max_changes_per_minute;
    if (per_minute == 0) {
        *status = 403;
        snprintf(err, errlen, "runtime route changes are off (dynamic_routing.max_changes_per_minute is 0)");
        goto out;
    }
    struct bucket *b = bucket_of(d, t->name, per_minute, now_ms);
    if (b == NULL || b->tokens < 1.0) {
        *status = 429;
        /* the bucket refills per_minute tokens a minute: the next whole
         * one is this far away (at least a second, as Retry-After counts) */
        double ms = b != NULL ? (1.0 - b->tokens) * 60000.0 / per_minute : 60000.0;
        *retry_after = (int)((ms + 999.0) / 1000.0);
        if (*retry_after < 1)
            *retry_after = 1;
        snprintf(err, errlen, "tenant %s made more than %d route changes in the last minute "
                 "(dynamic_routing.max_changes_per_minute)", t->name, per_minute);
        goto out;
    }

    if (del) {
        size_t k = 0;
        while (k < d->n && !(strcmp(d->v[k].tenant, t->name) == 0 && strcmp(d->v[k].id, s->id) == 0))
            k++;
        if (k == d->n) {
            const struct ks_lua_catalog_tenant *ct = catalog_of(cfg, (size_t)ti);
            bool scripted = false;
            for (size_t i = 0; ct != NULL && i < ct->nroutes; i++)
                scripted |= strcmp(ct->routes[i].id, s->id) == 0;
            *status = scripted ? 409 : 404;
            snprintf(err, errlen, scripted ? "route %s is the script's: only runtime routes can be "
                                             "deleted at run time" : "tenant %s has no runtime route %s",
                     scripted ? s->id : t->name, s->id);
            goto out;
        }
        if (d->undo == UNDO_DEL)
            route_free(&d->removed);
        d->removed = d->v[k];
        d->removed_at = k;
        memmove(&d->v[k], &d->v[k + 1], (d->n - k - 1) * sizeof(d->v[0]));
        d->n--;
        d->undo = UNDO_DEL;
        ks_strlcpy(id_out, s->id, idlen);
        *status = 200;
    } else {
        snprintf(s->id, sizeof(s->id), "d%llu", (unsigned long long)d->next_id + 1);
        struct dynroute r;
        if (from_spec(&r, s, err, errlen) < 0)
            goto out;
        if (validate(d, cfg, &r, d->n, true, status, err, errlen) < 0) {
            route_free(&r);
            goto out;
        }
        uint32_t total = 0, nstr = 0;
        ks_routes_count(d, cfg, &total, &nstr);
        if (total + 1 > (uint32_t)cfg->limits.max_routes) {
            *status = 409;
            snprintf(err, errlen, "more than %d routes in all (limits.max_routes)", cfg->limits.max_routes);
            route_free(&r);
            goto out;
        }
        if (d->n == d->cap) {
            size_t nc = d->cap ? 2 * d->cap : 16;
            struct dynroute *nv = realloc(d->v, nc * sizeof(*nv));
            if (nv == NULL) {
                *status = 503;
                snprintf(err, errlen, "out of memory");
                route_free(&r);
                goto out;
            }
            d->v = nv;
            d->cap = nc;
        }
        d->next_id++;
        if (d->undo == UNDO_DEL)
            route_free(&d->removed);
        d->v[d->n++] = r;
        d->undo = UNDO_ADD;
        ks_strlcpy(id_out, r.id, idlen);
        *status = 201;
    }
    b->tokens -= 1.0;
    d->charged = b;
    ks_strlcpy(tenant_out, t->name, tlen);
    rc = 1;
out:
    free(s);
    return rc;
}

/* The last change, in words, for the log: "d7 added: GET /x", "d7 deleted". */
static void describe_last(const struct ks_dynroutes *d, char *out, size_t len)
{
    if (d->undo == UNDO_ADD && d->n > 0) {
        const struct dynroute *r = &d->v[d->n - 1];
        snprintf(out, len, "tenant %s: runtime route %s added: %s %s", r->tenant, r->id, r->method,
                 r->pattern);
    } else if (d->undo == UNDO_DEL) {
        snprintf(out, len, "tenant %s: runtime route %s deleted", d->removed.tenant, d->removed.id);
    } else {
        out[0] = '\0';
    }
}

/* The change is logged here, once published, and not in apply: a change
 * whose publish fails is undone, and the log must not say it was made. */
void ks_dynroutes_published(const struct ks_dynroutes *d)
{
    char what[1024];
    describe_last(d, what, sizeof(what));
    if (what[0])
        ks_log_info("lua-route", "%s", what);
}

void ks_dynroutes_undo(struct ks_dynroutes *d, const char *why)
{
    char what[1024];
    describe_last(d, what, sizeof(what));
    if (what[0])
        ks_log_warn("lua-route", "%s: undone, not published: %s", what, why);
    if (d->undo == UNDO_ADD && d->n > 0) {
        route_free(&d->v[--d->n]);
    } else if (d->undo == UNDO_DEL) {
        /* room is there: the array only shrank */
        memmove(&d->v[d->removed_at + 1], &d->v[d->removed_at],
                (d->n - d->removed_at) * sizeof(d->v[0]));
        d->v[d->removed_at] = d->removed;
        memset(&d->removed, 0, sizeof(d->removed));
        d->n++;
    }
    if (d->charged != NULL && d->undo != UNDO_NONE)
        d->charged->tokens += 1.0;
    d->undo = UNDO_NONE;
    d->charged = NULL;
}

void ks_dynroutes_prune(struct ks_dynroutes *d, const struct ks_config *cfg)
{
    /* decide for every route against the whole list first, then compact
     * (a freed entry must not be compared with) */
    bool *drop = calloc(d->n + 1, sizeof(bool));
    if (drop == NULL)
        return;             /* keep them all; the next publish filters */
    for (size_t i = 0; i < d->n; i++) {
        char err[512];
        int status;
        if (validate(d, cfg, &d->v[i], i, false, &status, err, sizeof(err)) == 0)
            continue;
        ks_log_warn("lua-route", "runtime route %s of tenant %s dropped by the reload: %s",
                    d->v[i].id, d->v[i].tenant, err);
        drop[i] = true;
    }
    size_t k = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (drop[i])
            route_free(&d->v[i]);
        else
            d->v[k++] = d->v[i];
    }
    d->n = k;
    free(drop);
    if (d->undo == UNDO_DEL)
        route_free(&d->removed);
    d->undo = UNDO_NONE;
    d->charged = NULL;
}

/* ---- into the route table ------------------------------------------------------- */

/* Would the route at index i be published with cfg?  (A reload publishes
 * before it prunes.) */
static bool publishable(const struct ks_dynroutes *d, const struct ks_config *cfg, size_t i)
{
    char err[512];
    int status;
    return validate(d, cfg, &d->v[i], i, false, &status, err, sizeof(err)) == 0;
}

void ks_routes_count(const struct ks_dynroutes *d, const struct ks_config *cfg, uint32_t *nroutes,
                     uint32_t *nstrlist)
{
    *nroutes = 0;
    *nstrlist = 0;
    const struct ks_lua_catalog *c = cfg->lua_catalog;
    for (size_t i = 0; c != NULL && i < c->ntenants && i < cfg->ntenants; i++)
        *nroutes += (uint32_t)c->tenants[i].nroutes;
    for (size_t i = 0; d != NULL && i < d->n; i++)
        if (publishable(d, cfg, i)) {
            (*nroutes)++;
            *nstrlist += 2 * (uint32_t)d->v[i].nheaders;
        }
}

void ks_routes_publish(const struct ks_dynroutes *d, const struct ks_config *cfg, size_t ti,
                       struct ks_table_builder *b, struct ks_t_tenant *t, uint32_t upstream_base,
                       uint32_t *next_route, uint32_t *next_str)
{
    const struct ks_tenant_config *tc = &cfg->tenants[ti];
    t->routes = *next_route;
    t->nroutes = 0;
    const struct ks_lua_catalog_tenant *ct = catalog_of(cfg, ti);
    for (size_t k = 0; ct != NULL && k < ct->nroutes; k++) {
        const struct ks_lua_catalog_route *cr = &ct->routes[k];
        struct ks_t_route *r = ks_table_route(b, (*next_route)++);
        long up = cr->upstream[0] ? upstream_index(tc, cr->upstream) : -1;
        *r = (struct ks_t_route){
            .tenant = (uint32_t)ti,
            .id = ks_table_str(b, cr->id),
            .method = ks_table_str(b, cr->method),
            .pattern = ks_table_str(b, cr->pattern),
            .upstream = up >= 0 ? upstream_base + (uint32_t)up : KS_NONE,
            .handler = ks_table_str(b, cr->handler),
            .headers = *next_str,
            .flags = cr->function ? KS_RF_LUA_FUNCTION : 0,
        };
        t->nroutes++;
    }
    uint32_t *strlist = ks_table_strlist(b);
    for (size_t i = 0; d != NULL && i < d->n; i++) {
        const struct dynroute *dr = &d->v[i];
        if (strcmp(dr->tenant, tc->name) != 0 || !publishable(d, cfg, i))
            continue;
        struct ks_t_route *r = ks_table_route(b, (*next_route)++);
        long up = dr->upstream[0] ? upstream_index(tc, dr->upstream) : -1;
        *r = (struct ks_t_route){
            .tenant = (uint32_t)ti,
            .id = ks_table_str(b, dr->id),
            .method = ks_table_str(b, dr->method),
            .pattern = ks_table_str(b, dr->pattern),
            .upstream = up >= 0 ? upstream_base + (uint32_t)up : KS_NONE,
            .handler = ks_table_str(b, dr->handler),
            .headers = *next_str,
            .nheaders = 2 * (uint32_t)dr->nheaders,
            .flags = KS_RF_DYNAMIC | (dr->strip[0] ? KS_RF_STRIP_PREFIX : 0),
            .strip = ks_table_str(b, dr->strip),
            .timeout_ms = dr->timeout_ms,
        };
        const char *p = dr->headers;
        for (size_t h = 0; h < 2 * dr->nheaders; h++) {
            strlist[(*next_str)++] = ks_table_str(b, p);
            p += strlen(p) + 1;
        }
        t->nroutes++;
    }
}
