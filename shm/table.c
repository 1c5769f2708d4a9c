/*
 * table.c: building (master) and validating (keystonectl) a route table.
 */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "shm/table.h"

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

int ks_table_begin(struct ks_table_builder *b, void *buf, size_t cap, uint32_t ntenants,
                   uint32_t nupstreams, uint32_t nroutes, uint32_t nstrlist, uint32_t nschedule)
{
    memset(b, 0, sizeof(*b));
    b->buf = buf;
    b->cap = cap;
    b->t = buf;
    size_t off = align8(sizeof(struct ks_table));
    size_t tenants = off;
    off = align8(off + (size_t)ntenants * sizeof(struct ks_t_tenant));
    size_t upstreams = off;
    off = align8(off + (size_t)nupstreams * sizeof(struct ks_t_upstream));
    size_t routes = off;
    off = align8(off + (size_t)nroutes * sizeof(struct ks_t_route));
    size_t strlist = off;
    off = align8(off + (size_t)nstrlist * sizeof(uint32_t));
    size_t schedule = off;
    off = align8(off + (size_t)nschedule * sizeof(uint16_t));
    /* the pool starts with the empty string at offset 0 */
    if (off + 1 > cap || off + 1 > UINT32_MAX) {
        b->overflow = true;
        return -1;
    }
    memset(buf, 0, off + 1);
    struct ks_table *t = b->t;
    t->magic = KS_TABLE_MAGIC;
    t->ntenants = ntenants;
    t->nupstreams = nupstreams;
    t->nroutes = nroutes;
    t->nstrlist = nstrlist;
    t->nschedule = nschedule;
    t->tenants_off = (uint32_t)tenants;
    t->upstreams_off = (uint32_t)upstreams;
    t->routes_off = (uint32_t)routes;
    t->strlist_off = (uint32_t)strlist;
    t->schedule_off = (uint32_t)schedule;
    t->strings_off = (uint32_t)off;
    b->strings_used = 1;
    return 0;
}

uint32_t ks_table_strn(struct ks_table_builder *b, const char *s, size_t n)
{
    if (s == NULL || n == 0 || b->overflow)
        return 0;
    size_t at = b->t->strings_off + b->strings_used;
    if (at + n + 1 > b->cap || at + n + 1 > UINT32_MAX) {
        b->overflow = true;
        return 0;
    }
    memcpy(b->buf + at, s, n);
    b->buf[at + n] = '\0';
    uint32_t off = (uint32_t)b->strings_used;
    b->strings_used += n + 1;
    return off;
}

uint32_t ks_table_str(struct ks_table_builder *b, const char *s)
{
    return s == NULL ? 0 : ks_table_strn(b, s, strlen(s));
}

struct ks_t_tenant *ks_table_tenant(struct ks_table_builder *b, uint32_t i)
{
    return (struct ks_t_tenant *)(b->buf + b->t->tenants_off) + i;
}

struct ks_t_upstream *ks_table_upstream(struct ks_table_builder *b, uint32_t i)
{
    return (struct ks_t_upstream *)(b->buf + b->t->upstreams_off) + i;
}

struct ks_t_route *ks_table_route(struct ks_table_builder *b, uint32_t i)
{
    return (struct ks_t_route *)(b->buf + b->t->routes_off) + i;
}

uint32_t *ks_table_strlist(struct ks_table_builder *b)
{
    return (uint32_t *)(b->buf + b->t->strlist_off);
}

uint16_t *ks_table_schedule(struct ks_table_builder *b)
{
    return (uint16_t *)(b->buf + b->t->schedule_off);
}

size_t ks_table_finish(struct ks_table_builder *b)
{
    if (b->overflow)
        return 0;
    b->t->strings_len = (uint32_t)b->strings_used;
    b->t->size = (uint32_t)(b->t->strings_off + b->strings_used);
    return b->t->size;
}

/* ---- validation -------------------------------------------------------- */

struct check {
    const struct ks_table *t;
    char *err;
    size_t errlen;
    int bad;
};

static void str_ok(struct check *c, uint32_t off, const char *what)
{
    if (c->bad)
        return;
    const struct ks_table *t = c->t;
    if (off >= t->strings_len || memchr(ks_t_str(t, off), '\0', t->strings_len - off) == NULL) {
        snprintf(c->err, c->errlen, "route table: %s string out of bounds", what);
        c->bad = 1;
    }
}

static void range_ok(struct check *c, uint32_t first, uint32_t n, uint32_t total, const char *what)
{
    if (c->bad)
        return;
    if (first > total || n > total - first) {
        snprintf(c->err, c->errlen, "route table: %s range out of bounds", what);
        c->bad = 1;
    }
}

static int array_ok(size_t off, size_t n, size_t elem, size_t limit)
{
    return off <= limit && n <= (limit - off) / elem;
}

int ks_table_check(const void *buf, size_t len, char *err, size_t errlen)
{
    const struct ks_table *t = buf;
    if (len < sizeof(*t) || t->magic != KS_TABLE_MAGIC || t->size > len || t->size < sizeof(*t)) {
        snprintf(err, errlen, "route table: bad header");
        return -1;
    }
    size_t lim = t->size;
    if (!array_ok(t->tenants_off, t->ntenants, sizeof(struct ks_t_tenant), lim) ||
        !array_ok(t->upstreams_off, t->nupstreams, sizeof(struct ks_t_upstream), lim) ||
        !array_ok(t->routes_off, t->nroutes, sizeof(struct ks_t_route), lim) ||
        !array_ok(t->strlist_off, t->nstrlist, sizeof(uint32_t), lim) ||
        !array_ok(t->schedule_off, t->nschedule, sizeof(uint16_t), lim) ||
        t->strings_off > lim || t->strings_len > lim - t->strings_off || t->strings_len == 0 ||
        (t->tenants_off | t->upstreams_off | t->routes_off | t->strlist_off) % 8 != 0) {
        snprintf(err, errlen, "route table: array out of bounds");
        return -1;
    }
    struct check c = { t, err, errlen, 0 };
    const uint32_t *sl = ks_t_strlist(t);
    for (uint32_t i = 0; i < t->nstrlist; i++)
        str_ok(&c, sl[i], "list");
    const struct ks_t_settings *s = &t->settings;
    str_ok(&c, s->admin_base_path, "admin_base_path");
    str_ok(&c, s->access_log, "access_log");
    range_ok(&c, s->allowed_env, s->nallowed_env, t->nstrlist, "allowed_env");
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        str_ok(&c, tn->name, "tenant name");
        str_ok(&c, tn->base_path, "base_path");
        str_ok(&c, tn->lua_script, "lua_script");
        str_ok(&c, tn->lua_source, "lua_source");
        range_ok(&c, tn->domains, tn->ndomains, t->nstrlist, "domains");
        range_ok(&c, tn->upstreams, tn->nupstreams, t->nupstreams, "upstreams");
        range_ok(&c, tn->routes, tn->nroutes, t->nroutes, "routes");
        range_ok(&c, tn->schedule, tn->nschedule, t->nschedule, "schedule");
        if (!c.bad && tn->lua_source_len > t->strings_len - tn->lua_source)
            range_ok(&c, 1, 1, 0, "lua_source length");
    }
    for (uint32_t i = 0; i < t->nupstreams; i++) {
        const struct ks_t_upstream *u = &ks_t_upstreams(t)[i];
        str_ok(&c, u->name, "upstream name");
        str_ok(&c, u->url, "upstream url");
        str_ok(&c, u->hostport, "upstream host");
        range_ok(&c, u->tenant, 1, t->ntenants, "upstream tenant");
    }
    for (uint32_t i = 0; i < t->nroutes; i++) {
        const struct ks_t_route *r = &ks_t_routes(t)[i];
        str_ok(&c, r->id, "route id");
        str_ok(&c, r->method, "route method");
        str_ok(&c, r->pattern, "route pattern");
        str_ok(&c, r->handler, "route handler");
        str_ok(&c, r->strip, "route strip");
        range_ok(&c, r->tenant, 1, t->ntenants, "route tenant");
        range_ok(&c, r->headers, r->nheaders, t->nstrlist, "route headers");
        if (r->upstream != KS_NONE)
            range_ok(&c, r->upstream, 1, t->nupstreams, "route upstream");
    }
    return c.bad ? -1 : 0;
}
