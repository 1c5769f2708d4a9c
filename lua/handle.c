/*
 * handle.c: one request through a tenant's Lua state (see handle.h).
 *
 * The whole request is one protected call.  Inside it the chain runs as
 * nested plain calls: the global middleware in order, then routing (after
 * them, so a global middleware's set_path changes which route matches),
 * then the route's middleware, then the terminal: a Lua handler, the
 * proxy, or 405.  next() is a C function that runs the rest of the chain
 * from the stage after the running middleware's and returns.  Errors
 * unwind to the one protected call; the only Lua called from outside it
 * is a response hook, which the proxy calls from its own C frames and
 * which therefore runs protected on its own (an error must never unwind
 * through the proxy).
 */
#include <config.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/api.h"
#include "lua/handle.h"
#include "lua/reqctx.h"
#include "worker/body.h"
#include "worker/proxy.h"

/* Largest http.request buffer kept between requests. */
#define SCRATCH_KEEP (1u << 20)

static const char *phase_name(enum ks_lua_phase p)
{
    switch (p) {
    case KS_LUA_LOAD: return "script load";
    case KS_LUA_MIDDLEWARE: return "middleware";
    case KS_LUA_HANDLER: return "handler";
    case KS_LUA_RESPONSE: return "response hook";
    default: return "request";
    }
}

/* The error-log line and the tenant's counter of a failed call. */
static void log_failure(struct ks_lua_req *q, enum ks_lua_result r, enum ks_lua_phase phase,
                        const char *msg)
{
    if (q->failure_logged)
        return;
    q->failure_logged = true;
    struct ks_worker *w = q->x->w;
    const struct ks_t_tenant *tn = &ks_t_tenants(w->table)[q->x->tenant];
    struct ks_tenant_stats *ts = ks_shm_tenant_stats(w->shm, tn->stats_slot);
    _Atomic uint64_t *counter = r == KS_LUA_ERR_TIMEOUT  ? &ts->lua_timeouts
                                : r == KS_LUA_ERR_MEMORY ? &ts->lua_oom
                                                         : &ts->lua_errors;
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
    /* one line per event: the traceback's lines joined */
    char flat[KS_LUA_MSG_MAX];
    size_t k = 0;
    for (const char *p = msg; *p && k + 4 < sizeof(flat); p++) {
        if (*p == '\n') {
            memcpy(flat + k, " | ", 3);
            k += 3;
            while (p[1] == '\t')
                p++;
        } else {
            flat[k++] = *p;
        }
    }
    flat[k] = '\0';
    ks_log_error("lua-error", "tenant %s, script %s: %s error in %s (request %s): %s",
                 q->lx->tenant, q->lx->script[0] ? q->lx->script : "(runtime routes)",
                 ks_lua_result_name(r), phase_name(phase), q->x->r->id, flat);
}

/* ---- the chain ---------------------------------------------------------------------- */

static void run_stage(lua_State *L, struct ks_lua_req *q, size_t pos);

static void push_args(lua_State *L, const struct ks_lua *lx)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_req);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lx->ref_res);
}

static int l_next(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    struct ks_lua_req *q = lx->req;
    if (q == NULL || lx->phase != KS_LUA_MIDDLEWARE)
        return luaL_error(L, "next() is only valid in the middleware it was given to");
    size_t pos = lx->stage;
    if (q->entered != pos)
        return luaL_error(L, "next() may be called once per middleware");
    if (q->res.written || q->res.started)
        return luaL_error(L, "next(): this middleware already wrote a response (return instead)");
    run_stage(L, q, pos + 1);
    lx->stage = pos;
    lx->phase = KS_LUA_MIDDLEWARE;
    return 0;
}

static void call_middleware(lua_State *L, struct ks_lua_req *q, int ref, size_t pos)
{
    struct ks_lua *lx = q->lx;
    lx->phase = KS_LUA_MIDDLEWARE;
    lx->stage = pos;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    push_args(L, lx);
    lua_pushcfunction(L, l_next);
    lua_call(L, 3, 0);
}

static void route(struct ks_lua_req *q)
{
    const struct ks_request *r = q->x->r;
    q->mk = ks_router_match(&q->lx->router, r->method, q->path, q->path_len, &q->m);
    q->routed = true;
    if (q->mk == KS_MATCH_FOUND)
        q->x->route = q->m.route->pat.text;
}

/* Strip prefix from [p, p+n) when it is there, ending at a segment
 * boundary. */
static void strip_prefix(const char **p, size_t *n, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (pl > 0 && pl <= *n && memcmp(*p, prefix, pl) == 0 && (pl == *n || (*p)[pl] == '/')) {
        *p += pl;
        *n -= pl;
    }
}

/* x->upstream_path when the path changed or the route strips a prefix;
 * otherwise the proxy computes it from the request as usual. */
static void set_upstream_path(lua_State *L, struct ks_lua_req *q, const struct ks_route *rt)
{
    struct ks_exchange *x = q->x;
    bool strip = rt != NULL && rt->strip != NULL;
    if (!q->path_changed && !strip)
        return;
    const struct ks_table *t = x->w->table;
    const struct ks_t_tenant *tn = &ks_t_tenants(t)[x->tenant];
    const char *p = q->path;
    size_t n = q->path_len;
    if (strip)
        strip_prefix(&p, &n, rt->strip);
    else if (tn->flags & KS_TF_STRIP_BASE_PATH)
        strip_prefix(&p, &n, ks_t_str(t, tn->base_path));
    const struct ks_request *r = x->r;
    size_t qlen = r->query != NULL ? r->query_len + 1 : 0;
    size_t total = (n == 0 ? 1 : 0) + n + qlen;
    char *buf = ks_lua_arena_alloc(L, q, total);
    size_t k = 0;
    if (n == 0)
        buf[k++] = '/';
    memcpy(buf + k, p, n);
    k += n;
    if (qlen > 0) {
        buf[k++] = '?';
        memcpy(buf + k, r->query, r->query_len);
        k += r->query_len;
    }
    buf[k] = '\0';
    x->upstream_path = buf;
    x->upstream_path_len = k;
}

static int on_response(struct ks_exchange *x, struct ks_response_head *h);

static void proxy(lua_State *L, struct ks_lua_req *q, const struct ks_route *rt)
{
    struct ks_exchange *x = q->x;
    struct ks_lua *lx = q->lx;
    const struct ks_t_tenant *tn = &ks_t_tenants(x->w->table)[x->tenant];
    if (rt != NULL) {
        if (rt->upstream != KS_ROUTE_NO_UPSTREAM && rt->upstream < tn->nupstreams)
            x->upstream = tn->upstreams + rt->upstream;
        if (rt->timeout_ms > 0)
            x->timeout_ms = rt->timeout_ms;
        for (size_t i = 0; i < rt->nheaders && q->nedits < KS_ARRAY_LEN(q->edits); i++)
            q->edits[q->nedits++] = (struct ks_header_edit){
                rt->headers[2 * i], strlen(rt->headers[2 * i]),
                rt->headers[2 * i + 1], strlen(rt->headers[2 * i + 1]), false,
            };
    }
    set_upstream_path(L, q, rt);
    if (q->nedits > 0) {
        x->edits = q->edits;
        x->nedits = q->nedits;
        x->max_edits = KS_ARRAY_LEN(q->edits);
    }
    if (lx->non_response > 0 || q->res.nheaders > 0) {
        x->on_response = on_response;
        x->on_response_arg = q;
    }
    struct ks_lua_pause p;
    ks_lua_pause(lx, &p);
    q->proxy_rc = ks_proxy_forward(x);
    ks_lua_resume(lx, &p);
    q->proxied = true;
}

static void terminal(lua_State *L, struct ks_lua_req *q)
{
    struct ks_lua *lx = q->lx;
    switch (q->mk) {
    case KS_MATCH_FOUND:
        if (q->m.route->handler != KS_ROUTE_PROXY) {
            lx->phase = KS_LUA_HANDLER;
            lua_rawgeti(L, LUA_REGISTRYINDEX, q->m.route->handler);
            push_args(L, lx);
            lua_call(L, 2, 0);
            return;
        }
        proxy(L, q, q->m.route);
        return;
    case KS_MATCH_NONE:
        proxy(L, q, NULL);
        return;
    case KS_MATCH_METHOD:
        ks_lua_res_error(q, 405, "method not allowed", "Allow", q->m.allow);
        return;
    }
}

static void run_stage(lua_State *L, struct ks_lua_req *q, size_t pos)
{
    const struct ks_router *r = &q->lx->router;
    q->entered = pos;
    if (pos < r->nglobal) {
        call_middleware(L, q, r->global[pos], pos);
        return;
    }
    if (!q->routed)
        route(q);
    size_t k = pos - r->nglobal;
    if (q->mk == KS_MATCH_FOUND && k < q->m.route->nchain) {
        call_middleware(L, q, q->m.route->chain[k], pos);
        return;
    }
    terminal(L, q);
}

static int entry(lua_State *L)
{
    struct ks_lua *lx = ks_lua_of(L);
    run_stage(L, lx->req, 0);
    return 0;
}

static const char *failure_text(enum ks_lua_result r)
{
    return r == KS_LUA_ERR_TIMEOUT  ? "Lua script timed out"
           : r == KS_LUA_ERR_MEMORY ? "Lua script ran out of memory"
                                    : "Lua script error";
}

/* The reason a 500 for a failed call gives (with lua.expose_errors, the
 * first line of the message too), in the request's arena: the access
 * log reads it after this frame. */
static const char *failure_reason(struct ks_lua_req *q, enum ks_lua_result r, const char *msg)
{
    char text[512];
    if (q->x->w->table->settings.lua_expose_errors) {
        size_t n = strcspn(msg, "\n");
        snprintf(text, sizeof(text), "%s: %.*s", failure_text(r), (int)n, msg);
    } else {
        snprintf(text, sizeof(text), "%s", failure_text(r));
    }
    const char *why = ks_lua_arena_strdup(q->arena, text);
    return why != NULL ? why : failure_text(r);
}

/* The proxy's callback with the upstream's head: the headers middleware
 * set with res:header before next(), then the script's response hooks,
 * each a protected call of its own. */
static int on_response(struct ks_exchange *x, struct ks_response_head *h)
{
    struct ks_lua_req *q = x->on_response_arg;
    struct ks_lua *lx = q->lx;
    for (size_t i = 0; i < q->res.nheaders && h->nedits < h->max_edits; i++) {
        const struct ks_lua_resp_header *rh = &q->res.headers[i];
        bool again = false;     /* a list's later values add lines */
        for (size_t j = 0; j < i && !again; j++)
            again = q->res.headers[j].name_len == rh->name_len &&
                    strncasecmp(q->res.headers[j].name, rh->name, rh->name_len) == 0;
        h->edits[h->nedits++] = (struct ks_header_edit){ rh->name, rh->name_len, rh->value, rh->value_len, again };
    }
    if (lx->non_response == 0 || lx->dead)
        return lx->dead ? -1 : 0;
    enum ks_lua_phase saved = lx->phase;
    struct ks_response_head *saved_head = q->head;
    q->head = h;
    int rc = 0;
    char msg[KS_LUA_MSG_MAX];
    for (size_t i = 0; i < lx->non_response && rc == 0; i++) {
        lx->phase = KS_LUA_RESPONSE;
        lua_rawgeti(lx->L, LUA_REGISTRYINDEX, lx->on_response[i]);
        push_args(lx->L, lx);
        enum ks_lua_result r = ks_lua_call(lx, 2, 0, msg, sizeof(msg));
        if (r != KS_LUA_OK) {
            log_failure(q, r, KS_LUA_RESPONSE, msg);
            h->why = failure_reason(q, r, msg);
            rc = -1;
        }
    }
    q->head = saved_head;
    lx->phase = saved;
    return rc;
}

/* ---- the entry point ------------------------------------------------------------------ */

/* Everything of q but the route match (which ks_router_match sets, and
 * which is read only once routed) and its two arrays, the request header
 * edits and the response headers (4 KB that their counts guard), is
 * zeroed: clearing the whole struct was a page of memory written for
 * every request. */
static void req_clear(struct ks_lua_req *q)
{
    char *b = (char *)q;
    size_t match = offsetof(struct ks_lua_req, m);
    size_t nedits = offsetof(struct ks_lua_req, nedits);
    size_t headers = offsetof(struct ks_lua_req, res) + offsetof(struct ks_lua_resp, headers);
    size_t nheaders = offsetof(struct ks_lua_req, res) + offsetof(struct ks_lua_resp, nheaders);
    memset(b, 0, match);
    memset(b + nedits, 0, headers - nedits);
    memset(b + nheaders, 0, sizeof(*q) - nheaders);
}

int ks_lua_handle(struct ks_exchange *x)
{
    struct ks_worker *w = x->w;
    struct ks_lua *lx = ks_lua_engine_state(w, x->tenant);
    const struct ks_request *r = x->r;
    if (lx == NULL)
        return ks_proxy_fail(x, 500, "the tenant's Lua script could not be loaded", NULL);
    struct ks_lua_req q;
    req_clear(&q);
    q.x = x;
    q.lx = lx;
    /* a Lua answer keeps the connection when what is left of the body can
     * be read past afterwards (serve() drains it) */
    q.keep_input = !x->close;
    q.keep_alive = q.keep_input &&
                   (x->in == NULL || !ks_body_pending(x->in) || ks_body_drainable(x->in, KS_DRAIN_MAX));
    q.arena = ks_lua_engine_arena(w);
    ks_lua_arena_reset(q.arena);
    q.scratch = ks_lua_engine_scratch(w);
    q.path = x->match_path != NULL ? x->match_path : r->path;
    q.path_len = x->match_path != NULL ? x->match_path_len : r->path_len;
    char **outbuf;
    size_t *outcap;
    ks_lua_engine_outbuf(w, &outbuf, &outcap);
    q.res.buf = *outbuf;
    q.res.cap = *outcap;

    ks_worker_set_state(w, KS_WS_LUA);
    lx->req = &q;
    lua_pushcfunction(lx->L, entry);
    char msg[KS_LUA_MSG_MAX];
    enum ks_lua_result res = ks_lua_call(lx, 0, 0, msg, sizeof(msg));
    enum ks_lua_phase phase = lx->phase;
    lx->req = NULL;
    lx->phase = KS_LUA_IDLE;
    *outbuf = q.res.buf;
    *outcap = q.res.cap;
    ks_worker_set_state(w, KS_WS_WRITING);

    int rc;
    if (q.abort_status < 0) {
        /* the client is gone; a script that caught that and then failed
         * otherwise (ran out of time looping over failed writes) is
         * still logged and counted */
        if (res != KS_LUA_OK && (res != KS_LUA_ERR_RUNTIME || strstr(msg, q.abort_why) == NULL))
            log_failure(&q, res, phase, msg);
        if (x->error == NULL)
            x->error = "client gone";
        if (x->status == 0)
            x->status = 499;            /* nothing was sent: nginx's 499, as the proxy logs it */
        rc = -1;
    } else if (q.abort_status > 0) {
        /* the body could not be read (413, 400, 408) */
        rc = q.proxied || q.res.started ? -1
                                        : ks_proxy_fail(x, q.abort_status,
                                                        x->error ? x->error : "bad request body", NULL);
    } else if (res != KS_LUA_OK) {
        log_failure(&q, res, phase, msg);
        if (q.proxied) {
            rc = q.proxy_rc;            /* the response is out; nothing to add */
        } else if (q.res.started) {
            rc = -1;                    /* a truncated stream: closing tells the client */
        } else {
            rc = ks_proxy_fail(x, 500, failure_reason(&q, res, msg), NULL);
        }
    } else if (q.proxied) {
        rc = q.proxy_rc;
    } else {
        rc = ks_lua_res_finish(&q);
        if (!q.keep_alive)
            x->close = true;
    }
    /* a response http.request read is not kept for ever */
    if (q.scratch->cap > SCRATCH_KEEP) {
        free(q.scratch->buf);
        q.scratch->buf = NULL;
        q.scratch->cap = 0;
    }
    if (lx->dead) {
        /* the access log names the route after the state (and its
         * router) is gone */
        if (x->route != NULL)
            x->route = ks_lua_arena_strdup(q.arena, x->route);
        ks_log_warn("lua-discard", "tenant %s: Lua state discarded after a %s; it is rebuilt "
                    "for the next request", lx->tenant, res == KS_LUA_ERR_MEMORY ? "memory error"
                                                                                  : "timeout");
        ks_lua_engine_discard(w, x->tenant);
    }
    return rc;
}
