/*
 * admin.c: the admin API (see admin.h).
 */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "keystoned/util.h"
#include "worker/admin.h"
#include "worker/respond.h"

/* The admin path of r relative to the admin root, or NULL when r is not
 * for the admin API.  *len receives its length. */
static const char *admin_path(const struct ks_conn *c, const struct ks_request *r, size_t *len)
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
    return admin_path(c, r, &len) != NULL;
}

static bool path_is(const char *p, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(p, want, len) == 0;
}

/* An upstream counts as healthy unless the active checker says DOWN. */
static bool upstream_healthy(const struct ks_shm *shm, const struct ks_t_upstream *u)
{
    uint64_t word = atomic_load_explicit(&ks_shm_health(shm, u->health_slot)->word, memory_order_relaxed);
    return KS_HW_STATE(word) != KS_HEALTH_DOWN;
}

static int serve_health(struct ks_conn *c, struct ks_request *r, bool keep_alive)
{
    const struct ks_table *t = c->w->table;
    const struct ks_shm *shm = c->w->shm;
    char body[65536];
    size_t pos = 0;
    bool degraded = false;
    char tenants[60000];
    size_t tpos = 0;
    ks_appendf(tenants, sizeof(tenants), &tpos, "{");
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        uint32_t healthy = 0;
        for (uint32_t k = 0; k < tn->nupstreams; k++)
            healthy += upstream_healthy(shm, &ks_t_upstreams(t)[tn->upstreams + k]);
        if (tn->nupstreams > 0 && healthy == 0)
            degraded = true;
        const char *name = ks_t_str(t, tn->name);
        ks_appendf(tenants, sizeof(tenants), &tpos, "%s\"", i ? "," : "");
        ks_json_escape(tenants, sizeof(tenants), &tpos, name, strlen(name));
        ks_appendf(tenants, sizeof(tenants), &tpos, "\":{\"healthy\":%u,\"total\":%u}", healthy,
                   tn->nupstreams);
    }
    ks_appendf(tenants, sizeof(tenants), &tpos, "}");
    const struct ks_shm_header *h = shm->hdr;
    ks_appendf(body, sizeof(body), &pos,
               "{\"status\":\"%s\",\"version\":\"%s\",\"generation\":%llu,\"uptime_s\":%lld,"
               "\"tenants\":%s}\n",
               degraded ? "degraded" : "healthy", PACKAGE_VERSION,
               (unsigned long long)c->w->generation,
               (long long)((ks_now_ms() - h->start_mono_ms) / 1000), tenants);
    return ks_respond(c, r, 200, "application/json", "Cache-Control: no-store\r\n", body, pos,
                      keep_alive);
}

int ks_admin_serve(struct ks_conn *c, struct ks_request *r, bool keep_alive)
{
    size_t len = 0;
    const char *p = admin_path(c, r, &len);
    bool read_only = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
    if (path_is(p, len, "/health")) {
        if (!read_only)
            return ks_respond_error(c, r, 405, "method not allowed", "Allow: GET, HEAD\r\n",
                                    keep_alive);
        return serve_health(c, r, keep_alive);
    }
    return ks_respond_error(c, r, 404, "no such admin endpoint", NULL, keep_alive);
}
