/*
 * route.c: tenant resolution and path normalisation (see route.h).
 */
#include <config.h>

#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "worker/route.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 unreserved: the only escapes an upstream must read as the
 * character itself, so the only ones decoded for matching. */
static int unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* An escaped slash at p (3 bytes left or more)? */
static bool escaped_slash(const char *p, size_t left)
{
    return left >= 3 && p[0] == '%' && p[1] == '2' && (p[2] == 'F' || p[2] == 'f');
}

/* The length of the separator at path[i]: a '/' (1), a "%2F" (3), or 0. */
static size_t separator(const char *path, size_t len, size_t i)
{
    if (path[i] == '/')
        return 1;
    return escaped_slash(path + i, len - i) ? 3 : 0;
}

ssize_t ks_route_normalize(const char *path, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len == 0 || path[0] != '/') {
        out[0] = '/';
        out[1] = '\0';
        return 1;
    }
    /* out[0..o) always holds complete "/segment" pieces; a segment is
     * written first and then kept, dropped (empty, ".") or used to pop
     * its predecessor ("..").  An escaped slash separates segments too,
     * as nginx (and every upstream that decodes the path) reads it: a
     * route or base path cannot be dodged with "/secure%2Fadmin". */
    size_t o = 0, i = 0;
    int trailing = 0;
    while (i < len) {
        size_t sep;
        while (i < len && (sep = separator(path, len, i)) > 0)
            i += sep;
        size_t seg = o;
        out[o++] = '/';
        while (i < len && separator(path, len, i) == 0) {
            char ch = path[i];
            if (ch != '%') {
                out[o++] = ch;
                i++;
                continue;
            }
            int hi = i + 2 < len ? hexval(path[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(path[i + 2]) : -1;
            if (lo < 0)
                return -1;
            int v = hi * 16 + lo;
            if (v == 0)
                return -1;
            if (unreserved(v)) {
                out[o++] = (char)v;
            } else {
                out[o++] = '%';
                out[o++] = hex[v >> 4];
                out[o++] = hex[v & 15];
            }
            i += 3;
        }
        size_t n = o - seg - 1;
        const char *s = out + seg + 1;
        trailing = 0;
        if (n == 0 || (n == 1 && s[0] == '.')) {
            o = seg;
            trailing = 1;
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            o = seg;
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
            trailing = 1;
        }
    }
    if (o == 0 || trailing)
        out[o++] = '/';
    out[o] = '\0';
    return (ssize_t)o;
}

int ks_route_prefix_match(const char *base, size_t blen, const char *path, size_t len)
{
    if (blen <= 1)
        return 1;       /* "/" serves every path */
    return len >= blen && memcmp(path, base, blen) == 0 && (len == blen || path[blen] == '/');
}

/* How well a tenant's domains match the host: INT_MAX for an exact name,
 * 1 + the suffix length for a wildcard, 0 for a tenant without domains
 * (any host), -1 for no match. */
static int host_level(const struct ks_table *t, const struct ks_t_tenant *tn, const char *host,
                      size_t hlen)
{
    if (tn->ndomains == 0)
        return 0;
    const uint32_t *list = ks_t_strlist(t) + tn->domains;
    int best = -1;
    for (uint32_t d = 0; d < tn->ndomains; d++) {
        const char *dom = ks_t_str(t, list[d]);
        if (dom[0] == '*' && dom[1] == '.') {
            const char *suffix = dom + 1;   /* ".example.com" */
            size_t slen = strlen(suffix);
            if (hlen > slen && memcmp(host + hlen - slen, suffix, slen) == 0 && (int)slen + 1 > best)
                best = (int)slen + 1;
        } else if (strcmp(dom, host) == 0) {
            return INT_MAX;
        }
    }
    return best;
}

uint32_t ks_route_tenant(const struct ks_table *t, const char *host, const char *path, size_t len,
                         size_t *base_len)
{
    size_t hlen = strlen(host);
    uint32_t best = KS_NONE;
    int best_level = -1;
    size_t best_blen = 0;
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        int level = host_level(t, tn, host, hlen);
        if (level < 0 || level < best_level)
            continue;
        const char *base = ks_t_str(t, tn->base_path);
        size_t blen = strlen(base);
        if (blen == 1)
            blen = 0;
        if (!ks_route_prefix_match(base, blen, path, len))
            continue;
        if (level > best_level || blen > best_blen || best == KS_NONE) {
            best = i;
            best_level = level;
            best_blen = blen;
        }
    }
    *base_len = best_blen;
    return best;
}
