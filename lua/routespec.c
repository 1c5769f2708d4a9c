/*
 * routespec.c: runtime route specs and their control-socket form (see
 * routespec.h).
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keystoned/util.h"
#include "lua/routespec.h"
#include "worker/http.h"

int ks_route_spec_add_header(struct ks_route_spec *s, const char *name, const char *value,
                             char *err, size_t errlen)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (nl > 128 || !ks_http_is_token(name, nl)) {
        snprintf(err, errlen, "bad header name \"%.64s\"", name);
        return -1;
    }
    if (ks_http_edit_protected(name, nl)) {
        snprintf(err, errlen, "header %s is set by keystoned", name);
        return -1;
    }
    if (!ks_http_is_value(value, vl)) {
        snprintf(err, errlen, "header %s: control characters are not allowed in a value", name);
        return -1;
    }
    if (s->nheaders == KS_SPEC_HEADERS_MAX || s->headers_len + nl + vl + 2 > sizeof(s->headers)) {
        snprintf(err, errlen, "too many route headers (at most %d, %d bytes)", KS_SPEC_HEADERS_MAX,
                 KS_SPEC_HEADER_BYTES);
        return -1;
    }
    memcpy(s->headers + s->headers_len, name, nl + 1);
    s->headers_len += nl + 1;
    memcpy(s->headers + s->headers_len, value, vl + 1);
    s->headers_len += vl + 1;
    s->nheaders++;
    return 0;
}

void ks_route_spec_headers(const struct ks_route_spec *s, const char **out)
{
    const char *p = s->headers;
    for (size_t i = 0; i < 2 * s->nheaders; i++) {
        out[i] = p;
        p += strlen(p) + 1;
    }
}

void ks_route_literal_prefix(const char *pattern, char *out, size_t cap)
{
    size_t end = strcspn(pattern, "{*");
    if (pattern[end] != '\0') {
        /* back to the start of the segment holding the first {param} or "*" */
        while (end > 0 && pattern[end - 1] != '/')
            end--;
    }
    while (end > 0 && pattern[end - 1] == '/')
        end--;
    if (end >= cap)
        end = cap - 1;
    memcpy(out, pattern, end);
    out[end] = '\0';
}

/* ---- the control-socket form ----------------------------------------------------- */

static int put(char *out, size_t cap, size_t *pos, const char *key, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";
    if (ks_appendf(out, cap, pos, "%s%s=", *pos > 0 && out[*pos - 1] != ' ' ? "&" : "", key) < 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*pos + 4 >= cap)
            return -1;
        if (*p <= 0x20 || *p >= 0x7f || *p == '%' || *p == '&' || *p == '=') {
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[*p >> 4];
            out[(*pos)++] = hex[*p & 15];
        } else {
            out[(*pos)++] = (char)*p;
        }
    }
    out[*pos] = '\0';
    return 0;
}

int ks_route_spec_encode(const struct ks_route_spec *s, bool del, int64_t deadline_ms, char *out,
                         size_t cap)
{
    size_t pos = 0;
    char num[32], hdr[KS_SPEC_HEADER_BYTES];
    if (ks_appendf(out, cap, &pos, "%s ", del ? "route-del" : "route-add") < 0)
        return -1;
    int rc = put(out, cap, &pos, "tenant", s->tenant);
    if (deadline_ms > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)deadline_ms);
        rc |= put(out, cap, &pos, "deadline", num);
    }
    if (del)
        return rc | put(out, cap, &pos, "id", s->id);
    rc |= put(out, cap, &pos, "method", s->method);
    rc |= put(out, cap, &pos, "pattern", s->pattern);
    if (s->upstream[0])
        rc |= put(out, cap, &pos, "upstream", s->upstream);
    if (s->handler[0])
        rc |= put(out, cap, &pos, "handler", s->handler);
    if (s->strip[0])
        rc |= put(out, cap, &pos, "strip", s->strip);
    if (s->timeout_ms > 0) {
        snprintf(num, sizeof(num), "%lld", (long long)s->timeout_ms);
        rc |= put(out, cap, &pos, "timeout", num);
    }
    const char *h[2 * KS_SPEC_HEADERS_MAX];
    ks_route_spec_headers(s, h);
    for (size_t i = 0; i < s->nheaders; i++) {
        snprintf(hdr, sizeof(hdr), "%s:%s", h[2 * i], h[2 * i + 1]);
        rc |= put(out, cap, &pos, "h", hdr);
    }
    return rc < 0 ? -1 : 0;
}

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                        : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decode value [v, end) into out (cap bytes); -1 when bad or too long. */
static int decode_value(const char *v, const char *end, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = v; p < end; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            if (end - p < 3 || unhex(p[1]) < 0 || unhex(p[2]) < 0)
                return -1;
            c = unhex(p[1]) * 16 + unhex(p[2]);
            p += 2;
        }
        if (c == 0 || n + 1 >= cap)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

int ks_route_spec_decode(const char *form, struct ks_route_spec *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    const char *p = form;
    char hdr[KS_SPEC_HEADER_BYTES];
    while (*p) {
        const char *amp = strchr(p, '&');
        const char *end = amp != NULL ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq == NULL) {
            snprintf(err, errlen, "malformed route spec near \"%.32s\"", p);
            return -1;
        }
        size_t kl = (size_t)(eq - p);
        const char *v = eq + 1;
        int rc = 0;
#define KEY(k) (kl == strlen(k) && memcmp(p, k, kl) == 0)
        if (KEY("tenant"))
            rc = decode_value(v, end, s->tenant, sizeof(s->tenant));
        else if (KEY("id"))
            rc = decode_value(v, end, s->id, sizeof(s->id));
        else if (KEY("method"))
            rc = decode_value(v, end, s->method, sizeof(s->method));
        else if (KEY("pattern"))
            rc = decode_value(v, end, s->pattern, sizeof(s->pattern));
        else if (KEY("upstream"))
            rc = decode_value(v, end, s->upstream, sizeof(s->upstream));
        else if (KEY("handler"))
            rc = decode_value(v, end, s->handler, sizeof(s->handler));
        else if (KEY("strip"))
            rc = decode_value(v, end, s->strip, sizeof(s->strip));
        else if (KEY("timeout")) {
            char num[32];
            char *e;
            rc = decode_value(v, end, num, sizeof(num));
            long long t = rc == 0 ? strtoll(num, &e, 10) : -1;
            if (rc == 0 && (*e != '\0' || t < 0 || t > 86400000LL))
                rc = -1;
            s->timeout_ms = t;
        } else if (KEY("deadline")) {
            char num[32];
            char *e;
            rc = decode_value(v, end, num, sizeof(num));
            long long t = rc == 0 ? strtoll(num, &e, 10) : -1;
            if (rc == 0 && (*e != '\0' || t <= 0))
                rc = -1;
            s->deadline_ms = t;
        } else if (KEY("h")) {
            rc = decode_value(v, end, hdr, sizeof(hdr));
            char *colon = rc == 0 ? strchr(hdr, ':') : NULL;
            if (colon == NULL)
                rc = -1;
            else {
                *colon = '\0';
                if (ks_route_spec_add_header(s, hdr, colon + 1, err, errlen) < 0)
                    return -1;
            }
        } else {
            snprintf(err, errlen, "unknown route spec key \"%.*s\"", (int)(kl > 32 ? 32 : kl), p);
            return -1;
        }
#undef KEY
        if (rc < 0) {
            snprintf(err, errlen, "bad value for \"%.*s\" in route spec", (int)(kl > 32 ? 32 : kl), p);
            return -1;
        }
        p = amp != NULL ? amp + 1 : end;
    }
    return 0;
}
