/*
 * admin.c: the admin API (see admin.h).
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/util.h"
#include "shm/verdict.h"
#include "worker/admin.h"
#include "worker/metrics.h"
#include "worker/respond.h"

const char *ks_admin_path(const struct ks_conn *c, const struct ks_request *r, size_t *len)
{
    const struct ks_table *t = c->w->table;
    const char *base = ks_t_str(t, t->settings.admin_base_path);
    size_t blen = strlen(base);
    if (blen > 0 && r->path_len >= blen && memcmp(r->path, base, blen) == 0 &&
        (r->path_len == blen || r->path[blen] == '/')) {
        *len = r->path_len - blen;
        return r->path + blen;
    }
    if (c->kind == KS_LISTEN_ADMIN) {
        *len = r->path_len;
        return r->path;
    }
    return NULL;
}

bool ks_admin_wants(const struct ks_conn *c, const struct ks_request *r)
{
    size_t len = 0;
    return ks_admin_path(c, r, &len) != NULL;
}

static bool path_is(const char *p, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(p, want, len) == 0;
}

#define JSON "application/json"

/* Every endpoint of this file only reads. */
static bool read_only(const struct ks_request *r)
{
    return strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
}

/* KS_ADMIN_NO_STORE, then extra (short: an Allow or WWW-Authenticate line) */
static const char *no_store(char *buf, size_t len, const char *extra)
{
    snprintf(buf, len, "%s%s", KS_ADMIN_NO_STORE, extra != NULL ? extra : "");
    return buf;
}

int ks_admin_respond(struct ks_conn *c, struct ks_request *r, int status, const char *extra,
                     const char *body, size_t len, bool keep_alive)
{
    char h[256];
    return ks_respond(c, r, status, JSON, no_store(h, sizeof(h), extra), body, len, keep_alive);
}

int ks_admin_error(struct ks_conn *c, struct ks_request *r, int status, const char *message,
                   const char *extra, bool keep_alive)
{
    char h[256];
    return ks_respond_error(c, r, status, message, no_store(h, sizeof(h), extra), keep_alive);
}

static int method_not_allowed(struct ks_conn *c, struct ks_request *r, bool keep_alive)
{
    return ks_admin_error(c, r, 405, "method not allowed", "Allow: GET, HEAD\r\n", keep_alive);
}

/* ---- health endpoints: /health, /tenants, /tenants/{name}/health -------- */

/* Render a body with render(b, c, arg, now) into a buffer that doubles
 * until it fits, and answer it with status. */
typedef void render_fn(struct ks_jbuf *b, const struct ks_conn *c, uint32_t arg, int64_t now);

static int respond_rendered(struct ks_conn *c, struct ks_request *r, bool keep_alive, int status,
                            const char *content_type, render_fn *render, uint32_t arg, int64_t now)
{
    struct ks_jbuf b = { .cap = 16384 };
    for (;;) {
        char *np = realloc(b.p, b.cap);
        if (np == NULL) {
            free(b.p);
            return ks_admin_error(c, r, 500, "out of memory", NULL, keep_alive);
        }
        b.p = np;
        b.pos = 0;
        b.trunc = false;
        render(&b, c, arg, now);
        if (b.pos == 0 || b.p[b.pos - 1] != '\n')
            ks_jbuf_printf(&b, "\n");
        if (!b.trunc)
            break;
        b.cap *= 2;
    }
    int rc = ks_respond(c, r, status, content_type, KS_ADMIN_NO_STORE, b.p, b.pos,
                        keep_alive);
    free(b.p);
    return rc;
}

/* GET /tenants: every tenant with its upstreams. */
static void render_tenants(struct ks_jbuf *b, const struct ks_conn *c, uint32_t arg, int64_t now)
{
    const struct ks_table *t = c->w->table;
    (void)arg;
    ks_jbuf_printf(b, "{\"generation\":%llu,\"tenants\":[", (unsigned long long)c->w->generation);
    for (uint32_t i = 0; i < t->ntenants; i++) {
        ks_jbuf_printf(b, "%s", i ? "," : "");
        ks_tenant_health_json(b, c->w->shm, t, &ks_t_tenants(t)[i], now);
    }
    ks_jbuf_printf(b, "]}");
}

/* GET /tenants/{name}/health: that tenant alone. */
static void render_tenant(struct ks_jbuf *b, const struct ks_conn *c, uint32_t tenant, int64_t now)
{
    ks_tenant_health_json(b, c->w->shm, c->w->table, &ks_t_tenants(c->w->table)[tenant], now);
}

/* GET /health: "healthy" when every tenant with upstreams has one taking
 * traffic, else "degraded"; always 200, the gateway itself is up. */
static void render_health(struct ks_jbuf *b, const struct ks_conn *c, uint32_t arg, int64_t now)
{
    const struct ks_table *t = c->w->table;
    const struct ks_shm *shm = c->w->shm;
    bool degraded = false;
    (void)arg;
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        degraded |= tn->nupstreams > 0 && ks_tenant_usable(shm, t, tn, now) == 0;
    }
    ks_jbuf_printf(b, "{\"status\":\"%s\",\"version\":\"%s\",\"generation\":%llu,\"uptime_s\":%lld,"
       "\"tenants\":{", degraded ? "degraded" : "healthy", PACKAGE_VERSION,
       (unsigned long long)c->w->generation, (long long)((now - shm->hdr->start_mono_ms) / 1000));
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        ks_jbuf_printf(b, "%s", i ? "," : "");
        ks_jbuf_str(b, ks_t_str(t, tn->name));
        ks_jbuf_printf(b, ":{\"healthy\":%u,\"total\":%u}", ks_tenant_usable(shm, t, tn, now), tn->nupstreams);
    }
    ks_jbuf_printf(b, "}}");
}

/* p (len bytes) is "/tenants/NAME/health": the tenant's index, or KS_NONE
 * with *is_path false when p has another shape. */
static uint32_t tenant_health_path(const struct ks_table *t, const char *p, size_t len,
                                   bool *is_path)
{
    static const char pre[] = "/tenants/", post[] = "/health";
    size_t lpre = sizeof(pre) - 1, lpost = sizeof(post) - 1;
    *is_path = len > lpre + lpost && memcmp(p, pre, lpre) == 0 &&
               memcmp(p + len - lpost, post, lpost) == 0;
    if (!*is_path)
        return KS_NONE;
    const char *name = p + lpre;
    size_t nlen = len - lpre - lpost;
    if (memchr(name, '/', nlen) != NULL) {
        *is_path = false;
        return KS_NONE;
    }
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const char *tn = ks_t_str(t, ks_t_tenants(t)[i].name);
        if (strlen(tn) == nlen && memcmp(tn, name, nlen) == 0)
            return i;
    }
    return KS_NONE;
}


/* The health endpoints: /health, /tenants, /tenants/{name}/health.
 * *handled is false when p is none of them. */
static int serve_health_endpoints(struct ks_conn *c, struct ks_request *r, const char *p,
                                  size_t len, bool keep_alive, bool *handled)
{
    bool tenant_path;
    uint32_t tenant = tenant_health_path(c->w->table, p, len, &tenant_path);
    bool health = path_is(p, len, "/health");
    *handled = health || tenant_path || path_is(p, len, "/tenants");
    if (!*handled)
        return 0;
    if (!read_only(r))
        return method_not_allowed(c, r, keep_alive);
    int64_t now = ks_now_ms();
    if (health)
        return respond_rendered(c, r, keep_alive, 200, JSON, render_health, 0, now);
    if (!tenant_path)
        return respond_rendered(c, r, keep_alive, 200, JSON, render_tenants, 0, now);
    if (tenant == KS_NONE)
        return ks_admin_error(c, r, 404, "no such tenant", NULL, keep_alive);
    const struct ks_t_tenant *tn = &ks_t_tenants(c->w->table)[tenant];
    bool down = tn->nupstreams > 0 && ks_tenant_usable(c->w->shm, c->w->table, tn, now) == 0;
    return respond_rendered(c, r, keep_alive, down ? 503 : 200, JSON, render_tenant, tenant, now);
}

int ks_admin_serve(struct ks_conn *c, struct ks_request *r, bool keep_alive)
{
    size_t len = 0;
    const char *p = ks_admin_path(c, r, &len);
    bool handled;
    int rc = serve_health_endpoints(c, r, p, len, keep_alive, &handled);
    if (handled)
        return rc;
    if (path_is(p, len, "/metrics")) {
        if (!read_only(r))
            return method_not_allowed(c, r, keep_alive);
        return respond_rendered(c, r, keep_alive, 200, "text/plain; version=0.0.4; charset=utf-8",
                                ks_metrics_render, 0, ks_now_ms());
    }
    return ks_admin_error(c, r, 404, "no such admin endpoint", NULL, keep_alive);
}
