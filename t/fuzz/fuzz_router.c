/*
 * fuzz_router.c: route patterns and matching (lua/router.c).
 *
 * The input is lines: every line but the last is "METHOD PATTERN", a
 * route to register (its handler is its line number); the last is
 * "METHOD PATH", the request to match.  Properties: a compiled pattern
 * has its own shape and compares equal to itself, comparison is
 * antisymmetric, and the match is the documented one: the route found
 * matches the path and accepts the method, no other such route is more
 * specific, its parameters are pieces of the path (one whole segment each,
 * the wildcard the rest); "no route" means no pattern matches, and "not
 * this method" that one does but none accepts it, with an Allow list.
 */
#include <config.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lua/router.h"
#include "t/fuzz/fuzz.h"

#define MAX_LINES 16

static bool accepts(const char *route_method, const char *method)
{
    return strcmp(route_method, "*") == 0 || strcmp(route_method, method) == 0 ||
           (strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *line[MAX_LINES];
    size_t nl = 0;
    for (char *p = text; nl < MAX_LINES;) {
        line[nl++] = p;
        char *e = strchr(p, '\n');
        if (e == NULL)
            break;
        *e = '\0';
        p = e + 1;
    }

    struct ks_router r;
    ks_router_init(&r, 64, 8);
    struct ks_pattern pats[MAX_LINES];
    bool compiled[MAX_LINES] = { false };
    char err[256];
    for (size_t i = 0; i + 1 < nl; i++) {
        char *sp = strchr(line[i], ' ');
        if (sp == NULL)
            continue;
        *sp = '\0';
        const char *method = line[i], *pattern = sp + 1;
        if (ks_pattern_compile(pattern, &pats[i], err, sizeof(err)) == 0) {
            compiled[i] = true;
            FUZZ_CHECK(strcmp(pats[i].text, pattern) == 0, "text kept");
            FUZZ_CHECK(ks_pattern_same_shape(&pats[i], &pats[i]) && ks_pattern_cmp(&pats[i], &pats[i]) == 0,
                       "%s is not its own shape", pattern);
            for (size_t j = 0; j < i; j++)
                if (compiled[j])
                    FUZZ_CHECK(sign(ks_pattern_cmp(&pats[i], &pats[j])) == -sign(ks_pattern_cmp(&pats[j], &pats[i])),
                               "%s and %s compare both ways", pattern, pats[j].text);
        }
        struct ks_route_def d = { .method = method, .pattern = pattern, .handler = (int)i,
                                  .upstream = KS_ROUTE_NO_UPSTREAM, .keep_first = (i & 1) != 0 };
        const struct ks_route *rt = ks_router_add(&r, &d, err, sizeof(err));
        if (rt != NULL)
            FUZZ_CHECK(ks_router_find(&r, rt->id) == rt, "route %s not found by id", rt->id);
    }

    if (nl >= 2) {
        char *sp = strchr(line[nl - 1], ' ');
        const char *method = line[nl - 1], *path = "/";
        if (sp != NULL) {
            *sp = '\0';
            path = sp + 1;
        }
        size_t plen = strlen(path);
        struct ks_match m;
        enum ks_match_kind k = ks_router_match(&r, method, path, plen, &m);
        bool any = false, any_method = false;
        for (size_t i = 0; i < r.nroutes; i++) {
            const struct ks_route *rt = r.routes[i];
            if (!ks_pattern_match(&rt->pat, path, plen, NULL, NULL))
                continue;
            any = true;
            if (!accepts(rt->method, method))
                continue;
            any_method = true;
            if (k == KS_MATCH_FOUND)
                FUZZ_CHECK(ks_pattern_cmp(&rt->pat, &m.route->pat) <= 0,
                           "%s %s is more specific than the match %s %s for %s", rt->method,
                           rt->pat.text, m.route->method, m.route->pat.text, path);
        }
        FUZZ_CHECK((k == KS_MATCH_FOUND) == any_method, "found %d, a route accepts %d", k, any_method);
        FUZZ_CHECK((k == KS_MATCH_NONE) == !any, "none %d, a pattern matches %d", k, any);
        if (k == KS_MATCH_METHOD)
            FUZZ_CHECK(m.allow[0] != '\0', "405 without Allow");
        if (k == KS_MATCH_FOUND) {
            FUZZ_CHECK(accepts(m.route->method, method), "the match does not accept %s", method);
            FUZZ_CHECK(m.nparams <= KS_ROUTE_MAX_CAPTURES, "%zu params", m.nparams);
            for (size_t i = 0; i < m.nparams; i++) {
                const struct ks_param *pa = &m.params[i];
                FUZZ_CHECK(pa->value >= path && pa->value + pa->value_len <= path + plen,
                           "a parameter outside the path");
                bool wildcard = pa->name_len == 1 && pa->name[0] == '*';
                FUZZ_CHECK(wildcard || (pa->value_len > 0 && memchr(pa->value, '/', pa->value_len) == NULL),
                           "parameter %.*s is not one whole segment", (int)pa->name_len, pa->name);
            }
        }
        /* deleting the first route leaves a router that still matches */
        if (r.nroutes > 0) {
            char id[KS_ROUTE_ID_MAX];
            strcpy(id, r.routes[0]->id);
            FUZZ_CHECK(ks_router_delete(&r, id) == 0 && ks_router_find(&r, id) == NULL, "delete %s", id);
            ks_router_match(&r, method, path, plen, &m);
        }
    }
    for (size_t i = 0; i < nl; i++)
        if (compiled[i])
            ks_pattern_free(&pats[i]);
    ks_router_free(&r);
    free(text);
    return 0;
}
