/*
 * router.h: the routes, patterns and middleware of one tenant, in plain C.
 *
 * The Lua API (lua/routes.c), the runtime routes the master publishes
 * and, later, the compatibility layer (chi_route, chi_middleware,
 * chi_group, YAML-declared routes) all register into this one registry.
 * Handlers and middleware are opaque integers here (the engine's Lua
 * registry references; the unit tests use plain numbers), so the router
 * knows nothing about Lua.
 *
 * Patterns: "/users/{id}" (a {name} is one whole non-empty segment),
 * "/files/\*" (a final "*" is the rest of the path, possibly empty), "/"
 * and plain literal paths.  When several routes match a path, the most
 * specific wins: segment by segment, a literal beats a {param}, which
 * beats "*"; between equal shapes, a route for the exact method beats one
 * for "*".  A GET route also answers HEAD.  A path that matches routes,
 * none of them for the method, is KS_MATCH_METHOD (405 with Allow).
 *
 * Middleware: global ones (router:use) run for every request of the
 * tenant, before routing; scoped ones (the compatibility layer's
 * chi_middleware(pattern)) join the chain of every route whose pattern
 * equals the scope, or starts with it when the scope ends in "/\*"; then a
 * route's own (its groups', outermost first, then its own).
 */
#ifndef KS_LUA_ROUTER_H
#define KS_LUA_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KS_ROUTE_MAX_SEGS 32
#define KS_ROUTE_MAX_PARAMS 16
/* captures of one match: the named parameters and the trailing "*" */
#define KS_ROUTE_MAX_CAPTURES (KS_ROUTE_MAX_PARAMS + 1)
#define KS_ROUTE_PATTERN_MAX 1024
#define KS_METHOD_MAX 24            /* including the NUL */
#define KS_ROUTE_ID_MAX 24          /* including the NUL */
#define KS_ROUTE_PROXY (-1)         /* handler of a route that proxies */
#define KS_ROUTE_NO_UPSTREAM UINT32_MAX
#define KS_ROUTER_ALLOW_MAX 256

enum ks_seg_kind { KS_SEG_WILDCARD = 0, KS_SEG_PARAM = 1, KS_SEG_LITERAL = 2 };

struct ks_seg {
    uint8_t kind;
    uint16_t off, len;              /* literal text or param name, in text */
};

struct ks_pattern {
    char *text;                     /* as registered (owned) */
    uint16_t nsegs;
    uint16_t nparams;
    struct ks_seg seg[KS_ROUTE_MAX_SEGS];
};

/* Compile text into p (p->text is a copy).  0, or -1 with a reason. */
int ks_pattern_compile(const char *text, struct ks_pattern *p, char *err, size_t errlen);
void ks_pattern_free(struct ks_pattern *p);
/* Same segments, ignoring parameter names: two such routes for one method
 * conflict. */
bool ks_pattern_same_shape(const struct ks_pattern *a, const struct ks_pattern *b);
/* > 0 when a is more specific than b, < 0 when less, 0 when equal. */
int ks_pattern_cmp(const struct ks_pattern *a, const struct ks_pattern *b);
/* Does the pattern end in "*" (which captures the rest of the path)? */
static inline bool ks_pattern_has_wildcard(const struct ks_pattern *p)
{
    return p->nsegs > 0 && p->seg[p->nsegs - 1].kind == KS_SEG_WILDCARD;
}

struct ks_param {
    const char *name;               /* into the pattern; "*" for the wildcard */
    size_t name_len;
    const char *value;              /* into the path, not percent-decoded */
    size_t value_len;
};

/* Does path (starting with "/") match?  Captures into params (may be NULL;
 * room for KS_ROUTE_MAX_CAPTURES) and *nparams. */
bool ks_pattern_match(const struct ks_pattern *p, const char *path, size_t len,
                      struct ks_param *params, size_t *nparams);

/* Is method a valid route method: "*" or an HTTP token of capitals? */
bool ks_route_method_ok(const char *method);

/* What a caller registers. */
struct ks_route_def {
    const char *id;                 /* NULL: the router assigns "r<N>" */
    const char *method;             /* "GET", ..., or "*" */
    const char *pattern;
    int handler;                    /* reference, or KS_ROUTE_PROXY */
    const char *handler_name;       /* named handler it uses, or NULL */
    uint32_t upstream;              /* tenant-local index, or KS_ROUTE_NO_UPSTREAM */
    const char *const *headers;     /* name, value, name, value ... */
    size_t nheaders;                /* pairs */
    int64_t timeout_ms;             /* 0 = the upstream's */
    const char *strip;              /* prefix removed before proxying, or NULL */
    const int *mw;                  /* middleware references, outermost first */
    size_t nmw;
    bool dynamic;                   /* a runtime route (published by the master) */
    bool keep_first;                /* a duplicate is ignored rather than refused */
    const char *where;              /* "file:line" of the registration, or NULL */
};

struct ks_route {
    char id[KS_ROUTE_ID_MAX];
    char method[KS_METHOD_MAX];
    struct ks_pattern pat;
    int handler;
    char *handler_name;
    uint32_t upstream;
    char **headers;                 /* 2 * nheaders strings */
    size_t nheaders;
    int64_t timeout_ms;
    char *strip;
    int *mw;                        /* own middleware (groups, then the route's) */
    size_t nmw;
    int *chain;                     /* scoped middleware + mw: what runs after the global ones */
    size_t nchain;
    bool dynamic;
    char *where;
};

struct ks_router_mw {
    int ref;
    char *scope;                    /* NULL: global */
    size_t scope_len;
    bool prefix;                    /* scope ended in "/\*": a prefix of route patterns */
};

struct ks_router_name {
    char *name;
    int ref;
};

struct ks_router {
    struct ks_route **routes;
    size_t nroutes, cap;
    size_t nstatic;                 /* routes that are not dynamic */
    struct ks_router_mw *mw;        /* in registration order */
    size_t nmw, mwcap;
    int *global;                    /* references of the global middleware, in order */
    size_t nglobal;
    struct ks_router_name *handlers, *middlewares;
    size_t nhandlers, nmiddlewares, hcap, mcap;
    uint32_t next_id;
    int max_routes;                 /* < 0: unlimited */
    int max_middlewares;            /* < 0: unlimited; counts global, scoped and named */
};

enum ks_match_kind {
    KS_MATCH_FOUND,                 /* m->route is set */
    KS_MATCH_NONE,                  /* no route for this path */
    KS_MATCH_METHOD,                /* routes for the path, not the method: m->allow */
};

struct ks_match {
    const struct ks_route *route;
    struct ks_param params[KS_ROUTE_MAX_CAPTURES];
    size_t nparams;
    char allow[KS_ROUTER_ALLOW_MAX]; /* "GET, HEAD, POST" */
};

void ks_router_init(struct ks_router *r, int max_routes, int max_middlewares);
void ks_router_free(struct ks_router *r);

/* Add a route.  Returns it, or NULL with a reason (bad method or pattern,
 * a conflicting route, too many routes, out of memory).  With keep_first
 * a conflicting duplicate returns the existing route instead. */
const struct ks_route *ks_router_add(struct ks_router *r, const struct ks_route_def *d, char *err,
                                     size_t errlen);
/* Remove a route by id; 0, or -1 when there is none. */
int ks_router_delete(struct ks_router *r, const char *id);
/* Remove every dynamic route (before the current ones are added again). */
void ks_router_clear_dynamic(struct ks_router *r);
const struct ks_route *ks_router_find(const struct ks_router *r, const char *id);
/* The route that would conflict with (method, pattern), or NULL. */
const struct ks_route *ks_router_conflict(const struct ks_router *r, const char *method,
                                          const struct ks_pattern *p);

/* Middleware: scope NULL (or "/\*") is global; else see the top. */
int ks_router_use(struct ks_router *r, int ref, const char *scope, char *err, size_t errlen);
/* Named handlers and middleware ("handler" / "middleware" in messages). */
int ks_router_name_add(struct ks_router *r, bool middleware, const char *name, int ref, char *err,
                       size_t errlen);
/* Reference of a named handler or middleware, or -1. */
int ks_router_name_ref(const struct ks_router *r, bool middleware, const char *name);

enum ks_match_kind ks_router_match(const struct ks_router *r, const char *method, const char *path,
                                   size_t len, struct ks_match *m);

#endif
