/*
 * router.c: patterns, route registry, matching and middleware chains (see
 * router.h).  Matching is a linear scan over the tenant's routes with no
 * allocation: a tenant has at most lua_limits.max_routes of them and a
 * segment compare rejects most at the first segment.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/util.h"
#include "lua/router.h"

/* ---- patterns ------------------------------------------------------------ */

/* Characters of a literal path segment (RFC 3986 pchar, '%' included). */
static bool seg_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-._~!$&'()+,;=:@%", c) != NULL;
}

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

int ks_pattern_compile(const char *text, struct ks_pattern *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    size_t len = strlen(text);
    if (len == 0 || text[0] != '/') {
        snprintf(err, errlen, "pattern \"%.64s\" must start with /", text);
        return -1;
    }
    if (len > KS_ROUTE_PATTERN_MAX) {
        snprintf(err, errlen, "pattern longer than %d bytes", KS_ROUTE_PATTERN_MAX);
        return -1;
    }
    size_t pos = 1;
    while (len > 1 && pos <= len) {
        size_t end = pos;
        while (end < len && text[end] != '/')
            end++;
        if (p->nsegs == KS_ROUTE_MAX_SEGS) {
            snprintf(err, errlen, "pattern \"%.64s\" has more than %d segments", text,
                     KS_ROUTE_MAX_SEGS);
            return -1;
        }
        struct ks_seg *s = &p->seg[p->nsegs];
        size_t n = end - pos;
        if (n == 1 && text[pos] == '*') {
            if (end != len) {
                snprintf(err, errlen, "pattern \"%.64s\": * must be the last segment", text);
                return -1;
            }
            s->kind = KS_SEG_WILDCARD;
        } else if (n >= 2 && text[pos] == '{' && text[end - 1] == '}') {
            s->kind = KS_SEG_PARAM;
            s->off = (uint16_t)(pos + 1);
            s->len = (uint16_t)(n - 2);
            bool ok = s->len > 0;
            for (size_t i = 0; ok && i < s->len; i++)
                ok = name_char(text[s->off + i], i == 0);
            if (!ok) {
                snprintf(err, errlen, "pattern \"%.64s\": bad parameter name \"%.*s\"", text,
                         (int)n, text + pos);
                return -1;
            }
            for (uint16_t k = 0; k < p->nsegs; k++)
                if (p->seg[k].kind == KS_SEG_PARAM && p->seg[k].len == s->len &&
                    memcmp(text + p->seg[k].off, text + s->off, s->len) == 0) {
                    snprintf(err, errlen, "pattern \"%.64s\": parameter {%.*s} appears twice", text,
                             (int)s->len, text + s->off);
                    return -1;
                }
            if (p->nparams == KS_ROUTE_MAX_PARAMS) {
                snprintf(err, errlen, "pattern \"%.64s\" has more than %d parameters", text,
                         KS_ROUTE_MAX_PARAMS);
                return -1;
            }
            p->nparams++;
        } else {
            /* an empty segment is only allowed last ("/a/" differs from "/a") */
            if (n == 0 && end != len) {
                snprintf(err, errlen, "pattern \"%.64s\" has an empty segment (//)", text);
                return -1;
            }
            for (size_t i = pos; i < end; i++)
                if (!seg_char(text[i])) {
                    snprintf(err, errlen, "pattern \"%.64s\": character '%c' not allowed "
                             "(parameters are whole segments: /{name}/)", text,
                             text[i] >= 0x20 && text[i] < 0x7f ? text[i] : '?');
                    return -1;
                }
            s->kind = KS_SEG_LITERAL;
            s->off = (uint16_t)pos;
            s->len = (uint16_t)n;
        }
        p->nsegs++;
        pos = end + 1;
    }
    p->text = strdup(text);
    if (p->text == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

void ks_pattern_free(struct ks_pattern *p)
{
    free(p->text);
    p->text = NULL;
}

bool ks_pattern_same_shape(const struct ks_pattern *a, const struct ks_pattern *b)
{
    if (a->nsegs != b->nsegs)
        return false;
    for (uint16_t i = 0; i < a->nsegs; i++) {
        const struct ks_seg *x = &a->seg[i], *y = &b->seg[i];
        if (x->kind != y->kind)
            return false;
        if (x->kind == KS_SEG_LITERAL &&
            (x->len != y->len || memcmp(a->text + x->off, b->text + y->off, x->len) != 0))
            return false;
    }
    return true;
}

int ks_pattern_cmp(const struct ks_pattern *a, const struct ks_pattern *b)
{
    for (uint16_t i = 0; i < a->nsegs && i < b->nsegs; i++)
        if (a->seg[i].kind != b->seg[i].kind)
            return (int)a->seg[i].kind - (int)b->seg[i].kind;
    /* Both matched one path and agree on their common segments: the
     * longer one only goes on with a "*" matching nothing ("/\*" and "/"
     * both match "/"), which is less specific. */
    if (a->nsegs > b->nsegs)
        return a->seg[b->nsegs].kind == KS_SEG_WILDCARD ? -1 : 1;
    if (b->nsegs > a->nsegs)
        return b->seg[a->nsegs].kind == KS_SEG_WILDCARD ? 1 : -1;
    return 0;
}

bool ks_pattern_match(const struct ks_pattern *p, const char *path, size_t len,
                      struct ks_param *params, size_t *nparams)
{
    size_t np = 0;
    if (len == 0 || path[0] != '/')
        return false;
    if (p->nsegs == 0)
        return len == 1;
    size_t pos = 1;         /* start of the current path segment; len + 1 = no more */
    for (uint16_t i = 0; i < p->nsegs; i++) {
        const struct ks_seg *s = &p->seg[i];
        if (s->kind == KS_SEG_WILDCARD) {
            if (pos > len)
                return false;
            if (params != NULL) {
                params[np] = (struct ks_param){ "*", 1, path + pos, len - pos };
            }
            np++;
            if (nparams != NULL)
                *nparams = np;
            return true;
        }
        if (pos > len)
            return false;
        const char *slash = memchr(path + pos, '/', len - pos);
        size_t end = slash != NULL ? (size_t)(slash - path) : len;
        size_t n = end - pos;
        if (s->kind == KS_SEG_LITERAL) {
            if (n != s->len || memcmp(path + pos, p->text + s->off, n) != 0)
                return false;
        } else {
            if (n == 0)
                return false;
            if (params != NULL)
                params[np] = (struct ks_param){ p->text + s->off, s->len, path + pos, n };
            np++;
        }
        pos = end + 1;
    }
    if (pos != len + 1)
        return false;
    if (nparams != NULL)
        *nparams = np;
    return true;
}

bool ks_route_method_ok(const char *m)
{
    if (strcmp(m, "*") == 0)
        return true;
    size_t n = strlen(m);
    if (n == 0 || n >= KS_METHOD_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((m[i] >= 'A' && m[i] <= 'Z') || m[i] == '-' || m[i] == '_'))
            return false;
    return true;
}

/* ---- the registry ---------------------------------------------------------- */

void ks_router_init(struct ks_router *r, int max_routes, int max_middlewares)
{
    memset(r, 0, sizeof(*r));
    r->max_routes = max_routes;
    r->max_middlewares = max_middlewares;
}

static void route_free(struct ks_route *rt)
{
    if (rt == NULL)
        return;
    ks_pattern_free(&rt->pat);
    free(rt->handler_name);
    for (size_t i = 0; i < 2 * rt->nheaders; i++)
        free(rt->headers[i]);
    free(rt->headers);
    free(rt->strip);
    free(rt->mw);
    free(rt->chain);
    free(rt->where);
    free(rt);
}

void ks_router_free(struct ks_router *r)
{
    for (size_t i = 0; i < r->nroutes; i++)
        route_free(r->routes[i]);
    free(r->routes);
    for (size_t i = 0; i < r->nmw; i++)
        free(r->mw[i].scope);
    free(r->mw);
    free(r->global);
    for (size_t i = 0; i < r->nhandlers; i++)
        free(r->handlers[i].name);
    for (size_t i = 0; i < r->nmiddlewares; i++)
        free(r->middlewares[i].name);
    free(r->handlers);
    free(r->middlewares);
    memset(r, 0, sizeof(*r));
}

static bool methods_clash(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

const struct ks_route *ks_router_conflict(const struct ks_router *r, const char *method,
                                          const struct ks_pattern *p)
{
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct ks_route *rt = r->routes[i];
        if (methods_clash(rt->method, method) && ks_pattern_same_shape(&rt->pat, p))
            return rt;
    }
    return NULL;
}

const struct ks_route *ks_router_find(const struct ks_router *r, const char *id)
{
    for (size_t i = 0; i < r->nroutes; i++)
        if (strcmp(r->routes[i]->id, id) == 0)
            return r->routes[i];
    return NULL;
}

static bool scope_applies(const struct ks_router_mw *m, const struct ks_route *rt)
{
    const char *t = rt->pat.text;
    if (m->prefix)
        return strncmp(t, m->scope, m->scope_len) == 0;
    return strcmp(t, m->scope) == 0;
}

/* chain = the scoped middleware that applies, then the route's own. */
static int build_chain(const struct ks_router *r, struct ks_route *rt)
{
    size_t n = rt->nmw;
    for (size_t i = 0; i < r->nmw; i++)
        n += r->mw[i].scope != NULL && scope_applies(&r->mw[i], rt);
    int *c = malloc((n ? n : 1) * sizeof(int));
    if (c == NULL)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < r->nmw; i++)
        if (r->mw[i].scope != NULL && scope_applies(&r->mw[i], rt))
            c[k++] = r->mw[i].ref;
    for (size_t i = 0; i < rt->nmw; i++)
        c[k++] = rt->mw[i];
    free(rt->chain);
    rt->chain = c;
    rt->nchain = n;
    return 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

const struct ks_route *ks_router_add(struct ks_router *r, const struct ks_route_def *d, char *err,
                                     size_t errlen)
{
    if (d->method == NULL || !ks_route_method_ok(d->method)) {
        snprintf(err, errlen, "bad method \"%.32s\" (capital letters, or * for any)",
                 d->method ? d->method : "");
        return NULL;
    }
    if (d->pattern == NULL) {
        snprintf(err, errlen, "a route needs a pattern");
        return NULL;
    }
    if (d->id != NULL && (strlen(d->id) == 0 || strlen(d->id) >= KS_ROUTE_ID_MAX)) {
        snprintf(err, errlen, "bad route id \"%.32s\"", d->id);
        return NULL;
    }
    if (d->id != NULL && ks_router_find(r, d->id) != NULL) {
        snprintf(err, errlen, "route id %s is taken", d->id);
        return NULL;
    }
    struct ks_route *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (ks_pattern_compile(d->pattern, &rt->pat, err, errlen) < 0) {
        free(rt);
        return NULL;
    }
    const struct ks_route *other = ks_router_conflict(r, d->method, &rt->pat);
    if (other != NULL) {
        route_free(rt);
        if (d->keep_first)
            return other;
        snprintf(err, errlen, "%s %s conflicts with route %s (%s %s%s%s)", d->method, d->pattern,
                 other->id, other->method, other->pat.text, other->where ? " at " : "",
                 other->where ? other->where : "");
        return NULL;
    }
    if (r->max_routes >= 0 && r->nroutes >= (size_t)r->max_routes) {
        route_free(rt);
        snprintf(err, errlen, "more than %d routes (lua_limits.max_routes)", r->max_routes);
        return NULL;
    }
    bool oom = false;
    ks_strlcpy(rt->method, d->method, sizeof(rt->method));
    rt->handler = d->handler;
    rt->handler_name = dup_or_null(d->handler_name, &oom);
    rt->upstream = d->upstream;
    rt->timeout_ms = d->timeout_ms;
    rt->strip = dup_or_null(d->strip, &oom);
    rt->dynamic = d->dynamic;
    rt->where = dup_or_null(d->where, &oom);
    if (d->nheaders > 0) {
        rt->headers = calloc(2 * d->nheaders, sizeof(char *));
        oom |= rt->headers == NULL;
        for (size_t i = 0; rt->headers != NULL && i < 2 * d->nheaders; i++)
            rt->headers[i] = dup_or_null(d->headers[i], &oom);
        rt->nheaders = rt->headers != NULL ? d->nheaders : 0;
    }
    if (d->nmw > 0) {
        rt->mw = malloc(d->nmw * sizeof(int));
        oom |= rt->mw == NULL;
        if (rt->mw != NULL) {
            memcpy(rt->mw, d->mw, d->nmw * sizeof(int));
            rt->nmw = d->nmw;
        }
    }
    if (!oom && r->nroutes == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 16;
        struct ks_route **nr = realloc(r->routes, nc * sizeof(*nr));
        if (nr == NULL)
            oom = true;
        else {
            r->routes = nr;
            r->cap = nc;
        }
    }
    if (oom || build_chain(r, rt) < 0) {
        route_free(rt);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (d->id != NULL)
        ks_strlcpy(rt->id, d->id, sizeof(rt->id));
    else {
        /* ids stay unique after deletions: the counter only grows */
        do
            snprintf(rt->id, sizeof(rt->id), "r%u", ++r->next_id);
        while (ks_router_find(r, rt->id) != NULL);
    }
    r->routes[r->nroutes++] = rt;
    if (!rt->dynamic)
        r->nstatic++;
    return rt;
}

static void remove_at(struct ks_router *r, size_t i)
{
    if (!r->routes[i]->dynamic)
        r->nstatic--;
    route_free(r->routes[i]);
    memmove(&r->routes[i], &r->routes[i + 1], (r->nroutes - i - 1) * sizeof(r->routes[0]));
    r->nroutes--;
}

int ks_router_delete(struct ks_router *r, const char *id)
{
    for (size_t i = 0; i < r->nroutes; i++)
        if (strcmp(r->routes[i]->id, id) == 0) {
            remove_at(r, i);
            return 0;
        }
    return -1;
}

void ks_router_clear_dynamic(struct ks_router *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->nroutes; i++) {
        if (r->routes[i]->dynamic)
            route_free(r->routes[i]);
        else
            r->routes[k++] = r->routes[i];
    }
    r->nroutes = k;
}

static size_t middleware_count(const struct ks_router *r)
{
    return r->nmw + r->nmiddlewares;
}

static bool middleware_full(const struct ks_router *r, char *err, size_t errlen)
{
    if (r->max_middlewares >= 0 && middleware_count(r) >= (size_t)r->max_middlewares) {
        snprintf(err, errlen, "more than %d middlewares (lua_limits.max_middlewares)",
                 r->max_middlewares);
        return true;
    }
    return false;
}

int ks_router_use(struct ks_router *r, int ref, const char *scope, char *err, size_t errlen)
{
    if (middleware_full(r, err, errlen))
        return -1;
    struct ks_router_mw m = { .ref = ref };
    if (scope != NULL && strcmp(scope, "/*") != 0) {
        size_t n = strlen(scope);
        if (n == 0 || scope[0] != '/') {
            snprintf(err, errlen, "middleware scope \"%.64s\" must start with /", scope);
            return -1;
        }
        m.prefix = n >= 2 && strcmp(scope + n - 2, "/*") == 0;
        m.scope = m.prefix ? strndup(scope, n - 1) : strdup(scope);  /* keep the "/" */
        if (m.scope == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        m.scope_len = strlen(m.scope);
    }
    if (r->nmw == r->mwcap) {
        size_t nc = r->mwcap ? 2 * r->mwcap : 8;
        struct ks_router_mw *nm = realloc(r->mw, nc * sizeof(*nm));
        int *ng = realloc(r->global, nc * sizeof(int));
        if (ng != NULL)
            r->global = ng;
        if (nm == NULL || ng == NULL) {
            if (nm != NULL)
                r->mw = nm;
            free(m.scope);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        r->mw = nm;
        r->mwcap = nc;
    }
    r->mw[r->nmw++] = m;
    if (m.scope == NULL) {
        r->global[r->nglobal++] = ref;
        return 0;
    }
    for (size_t i = 0; i < r->nroutes; i++)
        if (scope_applies(&m, r->routes[i]) && build_chain(r, r->routes[i]) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    return 0;
}

int ks_router_name_add(struct ks_router *r, bool middleware, const char *name, int ref, char *err,
                       size_t errlen)
{
    const char *what = middleware ? "middleware" : "handler";
    if (name == NULL || name[0] == '\0' || strlen(name) > 64) {
        snprintf(err, errlen, "a %s name is 1 to 64 characters", what);
        return -1;
    }
    if (ks_router_name_ref(r, middleware, name) >= 0) {
        snprintf(err, errlen, "%s \"%s\" is already registered", what, name);
        return -1;
    }
    if (middleware && middleware_full(r, err, errlen))
        return -1;
    struct ks_router_name **v = middleware ? &r->middlewares : &r->handlers;
    size_t *n = middleware ? &r->nmiddlewares : &r->nhandlers;
    size_t *cap = middleware ? &r->mcap : &r->hcap;
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 8;
        struct ks_router_name *nv = realloc(*v, nc * sizeof(**v));
        if (nv == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        *v = nv;
        *cap = nc;
    }
    char *copy = strdup(name);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    (*v)[(*n)++] = (struct ks_router_name){ copy, ref };
    return 0;
}

int ks_router_name_ref(const struct ks_router *r, bool middleware, const char *name)
{
    const struct ks_router_name *v = middleware ? r->middlewares : r->handlers;
    size_t n = middleware ? r->nmiddlewares : r->nhandlers;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return v[i].ref;
    return -1;
}

/* ---- matching ---------------------------------------------------------------- */

static bool method_accepts(const char *route_method, const char *method)
{
    if (route_method[0] == '*')
        return true;
    if (strcmp(route_method, method) == 0)
        return true;
    return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

static void allow_add(char *allow, const char *m)
{
    size_t n = strlen(m), len = strlen(allow);
    /* already listed? */
    for (const char *p = allow; (p = strstr(p, m)) != NULL; p += n)
        if ((p == allow || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return;
    if (len + n + 3 >= KS_ROUTER_ALLOW_MAX)
        return;
    if (len > 0) {
        memcpy(allow + len, ", ", 2);
        len += 2;
    }
    memcpy(allow + len, m, n + 1);
}

enum ks_match_kind ks_router_match(const struct ks_router *r, const char *method, const char *path,
                                   size_t len, struct ks_match *m)
{
    const struct ks_route *best = NULL;
    bool any = false;
    m->route = NULL;
    m->nparams = 0;
    m->allow[0] = '\0';
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct ks_route *rt = r->routes[i];
        if (!ks_pattern_match(&rt->pat, path, len, NULL, NULL))
            continue;
        any = true;
        if (!method_accepts(rt->method, method))
            continue;
        if (best == NULL)
            best = rt;
        else {
            int c = ks_pattern_cmp(&rt->pat, &best->pat);
            /* equal shapes: the exact method beats "*" (HEAD served by GET
             * loses to an explicit HEAD route) */
            if (c > 0 || (c == 0 && best->method[0] == '*' && rt->method[0] != '*') ||
                (c == 0 && strcmp(rt->method, method) == 0 && strcmp(best->method, method) != 0))
                best = rt;
        }
    }
    if (best != NULL) {
        m->route = best;
        /* again for the captures, when it has any */
        const struct ks_pattern *p = &best->pat;
        if (p->nparams > 0 || ks_pattern_has_wildcard(p))
            ks_pattern_match(p, path, len, m->params, &m->nparams);
        return KS_MATCH_FOUND;
    }
    if (!any)
        return KS_MATCH_NONE;
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct ks_route *rt = r->routes[i];
        if (!ks_pattern_match(&rt->pat, path, len, NULL, NULL))
            continue;
        allow_add(m->allow, rt->method);
        if (strcmp(rt->method, "GET") == 0)
            allow_add(m->allow, "HEAD");
    }
    return KS_MATCH_METHOD;
}
