/*
 * admin_routes.c: runtime routes through the admin API (see
 * admin_routes.h).
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keystoned/util.h"
#include "lua/handle.h"
#include "lua/routespec.h"
#include "shm/routelist.h"
#include "shm/token.h"
#include "worker/admin.h"
#include "worker/admin_routes.h"
#include "worker/body.h"
#include "worker/proxy.h"
#include "worker/respond.h"

#define BODY_MAX 65536

enum endpoint { EP_NONE, EP_LIST, EP_TENANT, EP_ROUTE };

/* Which endpoint path p is; the tenant name and route id point into p. */
static enum endpoint parse(const char *p, size_t len, const char **name, size_t *nlen,
                           const char **id, size_t *idlen)
{
    if (len == 7 && memcmp(p, "/routes", 7) == 0)
        return EP_LIST;
    if (len < 9 || memcmp(p, "/tenants/", 9) != 0)
        return EP_NONE;
    const char *n = p + 9, *end = p + len;
    const char *slash = memchr(n, '/', (size_t)(end - n));
    if (slash == NULL || slash == n || (size_t)(end - slash) < 7 || memcmp(slash, "/routes", 7) != 0)
        return EP_NONE;
    *name = n;
    *nlen = (size_t)(slash - n);
    const char *rest = slash + 7;
    if (rest == end)
        return EP_TENANT;
    if (*rest != '/' || rest + 1 == end || memchr(rest + 1, '/', (size_t)(end - rest - 1)) != NULL)
        return EP_NONE;
    *id = rest + 1;
    *idlen = (size_t)(end - rest - 1);
    return EP_ROUTE;
}

bool ks_admin_routes_wants(const struct ks_conn *c, const struct ks_request *r)
{
    size_t len, nl, il;
    const char *p = ks_admin_path(c, r, &len), *n, *id;
    return p != NULL && parse(p, len, &n, &nl, &id, &il) != EP_NONE;
}

/* How many Authorization headers r has. */
static size_t authorization_count(const struct ks_request *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nheaders; i++)
        n += ks_http_name_is(r->headers[i].name, r->headers[i].name_len, "authorization");
    return n;
}

/* 0 when allowed, else the status to answer (400, 401, 403) and *why; *proved
 * tells whether the request showed the admin token.  The table has only
 * the token's keyed hash (shm/token.h): the presented token is hashed and
 * the hashes compared in constant time. */
static int authorize(const struct ks_exchange *x, bool write, bool *proved, const char **why)
{
    *proved = false;
    /* two credentials are one too many: which one counts would be a
     * guess, and a proxy in front may have added one */
    if (authorization_count(x->r) > 1) {
        *why = "more than one Authorization header";
        return 400;
    }
    const struct ks_t_settings *st = &x->w->table->settings;
    if (write && x->c->kind != KS_LISTEN_ADMIN) {
        *why = "route changes are only served on the admin listener";
        return 403;
    }
    if (!st->admin_token_set) {
        if (!write)
            return 0;
        *why = "route changes need server.admin_token to be set";
        return 403;
    }
    const struct ks_header *h = ks_http_header(x->r, "authorization");
    if (h == NULL || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0) {
        *why = "an Authorization: Bearer token is required";
        return 401;
    }
    const char *v = h->value + 7;
    size_t n = h->value_len - 7;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (!ks_token_matches(x->w->args->token_key, st->admin_token_mac, v, n)) {
        *why = "wrong admin token";
        return 401;
    }
    *proved = true;
    return 0;
}

static int answer(struct ks_exchange *x, int status, const char *body, size_t len, const char *extra)
{
    x->status = status;
    x->responded = true;
    int rc = ks_admin_respond(x->c, x->r, status, extra, body, len, !x->close);
    return rc < 0 ? -1 : 0;
}

static int answer_error(struct ks_exchange *x, int status, const char *why, const char *extra)
{
    x->error = why;
    x->status = status;
    x->responded = true;
    return ks_admin_error(x->c, x->r, status, why, extra, !x->close) < 0 ? -1 : 0;
}

/* An error whose reason sits in a local buffer: the envelope carries it,
 * the access log (read after this frame is gone) a fixed word. */
static int answer_local_error(struct ks_exchange *x, int status, const char *why, const char *extra)
{
    x->error = status == 429 ? "route change rate limited"
               : status >= 500 ? "route change failed" : "route change refused";
    x->status = status;
    x->responded = true;
    return ks_admin_error(x->c, x->r, status, why, extra, !x->close) < 0 ? -1 : 0;
}

/* The routes; header values only for a request that showed the token
 * (shm/routelist.h). */
static int list(struct ks_exchange *x, bool header_values)
{
    const struct ks_table *t = x->w->table;
    size_t cap = ks_routelist_size(t);
    char *buf = malloc(cap);
    size_t n = buf != NULL ? ks_routelist_json(t, x->w->generation, header_values, buf, cap) : 0;
    int rc = n > 0 ? answer(x, 200, buf, n, NULL)
                   : answer_error(x, 500, "out of memory", NULL);
    free(buf);
    return rc;
}

/* Send a change to the master and answer with its verdict. */
static int change(struct ks_exchange *x, const struct ks_route_spec *s, bool del)
{
    char id[KS_ROUTE_ID_MAX], err[512], body[1024], extra[48] = "";
    int status, retry_after;
    uint64_t gen = 0;
    if (ks_lua_send_route(x->w, s, del, id, sizeof(id), &gen, err, sizeof(err), &status,
                          &retry_after) < 0) {
        if (status == 429 && retry_after > 0)
            snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", retry_after);
        return answer_local_error(x, status, err, extra[0] ? extra : NULL);
    }
    size_t pos = 0;
    ks_appendf(body, sizeof(body), &pos, "{\"ok\":true,\"tenant\":\"");
    ks_json_escape(body, sizeof(body), &pos, s->tenant, strlen(s->tenant));
    ks_appendf(body, sizeof(body), &pos, "\",\"id\":\"");
    ks_json_escape(body, sizeof(body), &pos, id, strlen(id));
    ks_appendf(body, sizeof(body), &pos, "\",\"generation\":%llu}\n", (unsigned long long)gen);
    return answer(x, status, body, pos, NULL);
}

int ks_admin_routes_serve(struct ks_exchange *x)
{
    size_t len, nl = 0, il = 0;
    const char *p = ks_admin_path(x->c, x->r, &len), *name = NULL, *id = NULL;
    enum endpoint ep = parse(p, len, &name, &nl, &id, &il);
    if (ep == EP_NONE)  /* the caller asked ks_admin_routes_wants first */
        return answer_error(x, 404, "not found", NULL);
    const char *m = x->r->method;
    const char *allow = ep == EP_LIST ? "Allow: GET, HEAD\r\n"
                        : ep == EP_TENANT ? "Allow: POST\r\n" : "Allow: DELETE\r\n";
    bool ok_method = ep == EP_LIST ? (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
                     : ep == EP_TENANT ? strcmp(m, "POST") == 0 : strcmp(m, "DELETE") == 0;
    if (!ok_method)
        return answer_error(x, 405, "method not allowed", allow);
    const char *why = NULL;
    bool proved;
    int denied = authorize(x, ep != EP_LIST, &proved, &why);
    if (denied != 0)
        return answer_error(x, denied, why, denied == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
    if (ep == EP_LIST)
        return list(x, proved);

    struct ks_route_spec *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return answer_error(x, 500, "out of memory", NULL);
    int rc;
    char err[512];
    if (nl >= sizeof(s->tenant) || il >= sizeof(s->id)) {
        rc = answer_error(x, 404, "no such tenant or route", NULL);
    } else if (ep == EP_ROUTE) {
        memcpy(s->tenant, name, nl);
        memcpy(s->id, id, il);
        rc = change(x, s, true);
    } else if (ks_body_read_all(x, BODY_MAX) < 0) {
        x->close = true;
        rc = answer_error(x, x->status ? x->status : 400, x->error ? x->error : "bad request body", NULL);
    } else {
        memcpy(s->tenant, name, nl);
        if (ks_lua_route_spec_from_json(x->body, x->body_len, s, err, sizeof(err)) < 0)
            rc = answer_local_error(x, 400, err, NULL);
        else
            rc = change(x, s, false);
    }
    free(s);
    return rc;
}
