/*
 * routelist.c: a route table's routes as JSON (see routelist.h).
 */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "keystoned/util.h"
#include "shm/routelist.h"

size_t ks_routelist_size(const struct ks_table *t)
{
    /* every string at most 6x escaped, plus the fixed text of an entry */
    size_t n = 64;
    for (uint32_t i = 0; i < t->nroutes; i++) {
        const struct ks_t_route *r = &ks_t_routes(t)[i];
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[r->tenant < t->ntenants ? r->tenant : 0];
        n += 256 + 6 * (strlen(ks_t_str(t, tn->name)) + strlen(ks_t_str(t, r->id)) +
                        strlen(ks_t_str(t, r->method)) + strlen(ks_t_str(t, r->pattern)) +
                        strlen(ks_t_str(t, r->handler)) + strlen(ks_t_str(t, r->strip)) + 64);
        for (uint32_t h = 0; h < r->nheaders; h++)
            n += 8 + 6 * strlen(ks_t_str(t, ks_t_strlist(t)[r->headers + h]));
    }
    return n;
}

static int str(char *buf, size_t cap, size_t *pos, const char *s)
{
    int rc = ks_appendf(buf, cap, pos, "\"");
    rc |= ks_json_escape(buf, cap, pos, s, strlen(s));
    return rc | ks_appendf(buf, cap, pos, "\"");
}

static int str_or_null(char *buf, size_t cap, size_t *pos, const char *s)
{
    return s[0] ? str(buf, cap, pos, s) : ks_appendf(buf, cap, pos, "null");
}

void ks_routelist_target(const struct ks_table *t, const struct ks_t_route *r, char *out, size_t len)
{
    const char *handler = ks_t_str(t, r->handler);
    if (r->flags & KS_RF_LUA_FUNCTION)
        snprintf(out, len, "lua function");
    else if (handler[0])
        snprintf(out, len, "handler %s", handler);
    else if (r->upstream != KS_NONE && r->upstream < t->nupstreams)
        snprintf(out, len, "upstream %s", ks_t_str(t, ks_t_upstreams(t)[r->upstream].name));
    else
        snprintf(out, len, "balanced upstreams");
}

size_t ks_routelist_json(const struct ks_table *t, uint64_t generation, bool header_values,
                         char *buf, size_t cap)
{
    size_t pos = 0;
    int rc = ks_appendf(buf, cap, &pos, "{\"generation\":%llu,\"routes\":[", (unsigned long long)generation);
    for (uint32_t i = 0; i < t->nroutes; i++) {
        const struct ks_t_route *r = &ks_t_routes(t)[i];
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[r->tenant < t->ntenants ? r->tenant : 0];
        rc |= ks_appendf(buf, cap, &pos, "%s{\"tenant\":", i ? "," : "");
        rc |= str(buf, cap, &pos, ks_t_str(t, tn->name));
        rc |= ks_appendf(buf, cap, &pos, ",\"id\":");
        rc |= str(buf, cap, &pos, ks_t_str(t, r->id));
        rc |= ks_appendf(buf, cap, &pos, ",\"source\":\"%s\",\"method\":",
                         (r->flags & KS_RF_DYNAMIC) ? "dynamic" : "static");
        rc |= str(buf, cap, &pos, ks_t_str(t, r->method));
        rc |= ks_appendf(buf, cap, &pos, ",\"pattern\":");
        rc |= str(buf, cap, &pos, ks_t_str(t, r->pattern));
        rc |= ks_appendf(buf, cap, &pos, ",\"function\":%s,\"handler\":",
                         (r->flags & KS_RF_LUA_FUNCTION) ? "true" : "false");
        rc |= str_or_null(buf, cap, &pos, ks_t_str(t, r->handler));
        rc |= ks_appendf(buf, cap, &pos, ",\"upstream\":");
        if (r->upstream != KS_NONE && r->upstream < t->nupstreams)
            rc |= str(buf, cap, &pos, ks_t_str(t, ks_t_upstreams(t)[r->upstream].name));
        else
            rc |= ks_appendf(buf, cap, &pos, "null");
        rc |= ks_appendf(buf, cap, &pos, ",\"timeout_ms\":%lld,\"strip_prefix\":",
                         (long long)r->timeout_ms);
        rc |= str_or_null(buf, cap, &pos, ks_t_str(t, r->strip));
        rc |= ks_appendf(buf, cap, &pos, ",\"headers\":{");
        for (uint32_t h = 0; h + 1 < r->nheaders; h += 2) {
            rc |= ks_appendf(buf, cap, &pos, "%s", h ? "," : "");
            rc |= str(buf, cap, &pos, ks_t_str(t, ks_t_strlist(t)[r->headers + h]));
            rc |= ks_appendf(buf, cap, &pos, ":");
            rc |= str(buf, cap, &pos, header_values ? ks_t_str(t, ks_t_strlist(t)[r->headers + h + 1])
                                                    : "***");
        }
        rc |= ks_appendf(buf, cap, &pos, "}}");
    }
    rc |= ks_appendf(buf, cap, &pos, "]}\n");
    return rc < 0 ? 0 : pos;
}
