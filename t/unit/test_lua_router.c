/*
 * test_lua_router.c: patterns, matching precedence, 405 with Allow,
 * conflicts, limits, named handlers and middleware chains of lua/router.c.
 */
#include <config.h>

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/router.h"

static char err[256];

static const struct ks_route *add(struct ks_router *r, const char *method, const char *pattern,
                                  int handler)
{
    struct ks_route_def d = { .method = method, .pattern = pattern, .handler = handler,
                              .upstream = KS_ROUTE_NO_UPSTREAM };
    return ks_router_add(r, &d, err, sizeof(err));
}

static enum ks_match_kind match(const struct ks_router *r, const char *method, const char *path,
                                struct ks_match *m)
{
    return ks_router_match(r, method, path, strlen(path), m);
}

/* handler of the route that answers, or -100 for 404, -405 for 405 */
static int who(const struct ks_router *r, const char *method, const char *path)
{
    struct ks_match m;
    switch (match(r, method, path, &m)) {
    case KS_MATCH_FOUND: return m.route->handler;
    case KS_MATCH_NONE: return -100;
    default: return -405;
    }
}

START_TEST(compile_errors)
{
    struct ks_pattern p;
    static const char *const bad[] = {
        "", "users", "/a//b", "/a/*/b", "/{}", "/{1x}", "/{a-b}", "/a/{id}/{id}",
        "/a b", "/a?b", "/a#b", "/x{id}", "/{id}y", "/*x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ck_assert_msg(ks_pattern_compile(bad[i], &p, err, sizeof(err)) < 0, "accepted \"%s\"", bad[i]);
        ck_assert_msg(err[0] != '\0', "no reason for \"%s\"", bad[i]);
    }
    static const char *const good[] = {
        "/", "/a", "/a/", "/users/{id}", "/files/*", "/*", "/a/{b_1}/c/{D}", "/v1.2/x-y~z/%20",
        "/a:b@c", "/{id}/*",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_msg(ks_pattern_compile(good[i], &p, err, sizeof(err)) == 0, "%s: %s", good[i], err);
        ck_assert_str_eq(p.text, good[i]);
        ks_pattern_free(&p);
    }
    ck_assert_int_eq(ks_pattern_compile("/x/{a}/{b}", &p, err, sizeof(err)), 0);
    ck_assert_int_eq(p.nsegs, 3);
    ck_assert_int_eq(p.nparams, 2);
    ks_pattern_free(&p);
}
END_TEST

START_TEST(pattern_matching)
{
    struct ks_pattern p;
    struct ks_param prm[KS_ROUTE_MAX_CAPTURES];
    size_t n = 0;

    ck_assert_int_eq(ks_pattern_compile("/users/{id}/posts/{post}", &p, err, sizeof(err)), 0);
    const char *path = "/users/42/posts/hello%20world";
    ck_assert(ks_pattern_match(&p, path, strlen(path), prm, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq((int)prm[0].name_len, 2);
    ck_assert(memcmp(prm[0].name, "id", 2) == 0);
    ck_assert(prm[0].value_len == 2 && memcmp(prm[0].value, "42", 2) == 0);
    ck_assert(prm[1].value_len == 13 && memcmp(prm[1].value, "hello%20world", 13) == 0);
    ck_assert(!ks_pattern_match(&p, "/users//posts/x", 15, NULL, NULL));     /* empty param */
    ck_assert(!ks_pattern_match(&p, "/users/1/posts", 14, NULL, NULL));
    ck_assert(!ks_pattern_match(&p, "/users/1/posts/2/", 17, NULL, NULL));
    ck_assert(!ks_pattern_match(&p, "/users/1/post/2", 15, NULL, NULL));
    ks_pattern_free(&p);

    ck_assert_int_eq(ks_pattern_compile("/files/*", &p, err, sizeof(err)), 0);
    ck_assert(ks_pattern_match(&p, "/files/a/b/c.txt", 16, prm, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert(prm[0].name_len == 1 && prm[0].name[0] == '*');
    ck_assert(prm[0].value_len == 9 && memcmp(prm[0].value, "a/b/c.txt", 9) == 0);
    ck_assert(ks_pattern_match(&p, "/files/", 7, prm, &n));
    ck_assert_uint_eq(prm[0].value_len, 0);
    ck_assert(!ks_pattern_match(&p, "/files", 6, NULL, NULL));
    ck_assert(!ks_pattern_match(&p, "/filesx/a", 9, NULL, NULL));
    ks_pattern_free(&p);

    ck_assert_int_eq(ks_pattern_compile("/", &p, err, sizeof(err)), 0);
    ck_assert(ks_pattern_match(&p, "/", 1, NULL, NULL));
    ck_assert(!ks_pattern_match(&p, "/a", 2, NULL, NULL));
    ck_assert(!ks_pattern_match(&p, "", 0, NULL, NULL));
    ks_pattern_free(&p);

    /* a trailing slash is significant */
    ck_assert_int_eq(ks_pattern_compile("/a/", &p, err, sizeof(err)), 0);
    ck_assert(ks_pattern_match(&p, "/a/", 3, NULL, NULL));
    ck_assert(!ks_pattern_match(&p, "/a", 2, NULL, NULL));
    ks_pattern_free(&p);
    ck_assert_int_eq(ks_pattern_compile("/a", &p, err, sizeof(err)), 0);
    ck_assert(!ks_pattern_match(&p, "/a/", 3, NULL, NULL));
    ks_pattern_free(&p);
}
END_TEST

/* The most a pattern may capture: 16 parameters and a trailing "*". */
START_TEST(sixteen_params_and_wildcard)
{
    struct ks_router r;
    struct ks_match m;
    char pat[256] = "", path[256] = "";
    for (int i = 0; i < KS_ROUTE_MAX_PARAMS; i++) {
        snprintf(pat + strlen(pat), sizeof(pat) - strlen(pat), "/{p%d}", i);
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "/v%d", i);
    }
    strcat(pat, "/*");
    strcat(path, "/rest/of/it");
    ks_router_init(&r, -1, -1);
    memset(&m, 0x5a, sizeof(m));
    ck_assert_ptr_nonnull(add(&r, "GET", pat, 1));
    ck_assert_int_eq(match(&r, "GET", path, &m), KS_MATCH_FOUND);
    ck_assert_uint_eq(m.nparams, KS_ROUTE_MAX_PARAMS + 1);
    ck_assert(m.params[15].value_len == 3 && memcmp(m.params[15].value, "v15", 3) == 0);
    ck_assert(m.params[16].name_len == 1 && m.params[16].name[0] == '*');
    ck_assert(m.params[16].value_len == 10 && memcmp(m.params[16].value, "rest/of/it", 10) == 0);
    ks_router_free(&r);
}
END_TEST

START_TEST(precedence)
{
    struct ks_router r;
    ks_router_init(&r, -1, -1);
    /* registered from least to most specific: order must not matter */
    ck_assert_ptr_nonnull(add(&r, "GET", "/*", 1));
    ck_assert_ptr_nonnull(add(&r, "GET", "/users/*", 2));
    ck_assert_ptr_nonnull(add(&r, "GET", "/users/{id}", 3));
    ck_assert_ptr_nonnull(add(&r, "GET", "/users/me", 4));
    ck_assert_ptr_nonnull(add(&r, "*", "/users/{id}/x", 5));
    ck_assert_ptr_nonnull(add(&r, "POST", "/users/{id}/x", 6));
    ck_assert_ptr_nonnull(add(&r, "GET", "/", 7));
    ck_assert_ptr_nonnull(add(&r, "GET", "/{a}/{b}/c", 8));
    ck_assert_ptr_nonnull(add(&r, "GET", "/{a}/b/{c}", 9));

    ck_assert_int_eq(who(&r, "GET", "/users/me"), 4);
    ck_assert_int_eq(who(&r, "GET", "/users/42"), 3);
    ck_assert_int_eq(who(&r, "GET", "/users/42/more"), 2);
    ck_assert_int_eq(who(&r, "GET", "/users/"), 2);
    ck_assert_int_eq(who(&r, "GET", "/other"), 1);
    ck_assert_int_eq(who(&r, "GET", "/"), 7);      /* "/" beats "/\*" */
    ck_assert_int_eq(who(&r, "POST", "/users/1/x"), 6);
    ck_assert_int_eq(who(&r, "DELETE", "/users/1/x"), 5);
    ck_assert_int_eq(who(&r, "GET", "/users/1/x"), 5);
    /* the literal in the second segment wins over the one in the third */
    ck_assert_int_eq(who(&r, "GET", "/q/b/c"), 9);
    ck_assert_int_eq(who(&r, "GET", "/q/z/c"), 8);
    /* HEAD is answered by GET routes */
    ck_assert_int_eq(who(&r, "HEAD", "/users/me"), 4);
    /* a more specific route for another method does not hide a match */
    ck_assert_ptr_nonnull(add(&r, "PUT", "/users/you", 10));
    ck_assert_int_eq(who(&r, "GET", "/users/you"), 3);
    ck_assert_int_eq(who(&r, "PUT", "/users/you"), 10);
    ks_router_free(&r);
}
END_TEST

START_TEST(method_not_allowed)
{
    struct ks_router r;
    struct ks_match m;
    ks_router_init(&r, -1, -1);
    ck_assert_ptr_nonnull(add(&r, "GET", "/items/{id}", 1));
    ck_assert_ptr_nonnull(add(&r, "DELETE", "/items/{id}", 2));
    ck_assert_ptr_nonnull(add(&r, "POST", "/items/special", 3));
    ck_assert_ptr_nonnull(add(&r, "GET", "/items/special", 4));
    ck_assert_int_eq(match(&r, "PUT", "/items/7", &m), KS_MATCH_METHOD);
    ck_assert_str_eq(m.allow, "GET, HEAD, DELETE");
    ck_assert_int_eq(match(&r, "PUT", "/items/special", &m), KS_MATCH_METHOD);
    ck_assert_str_eq(m.allow, "GET, HEAD, DELETE, POST");
    ck_assert_int_eq(match(&r, "PUT", "/nothing", &m), KS_MATCH_NONE);
    ck_assert_int_eq(match(&r, "DELETE", "/items/special", &m), KS_MATCH_FOUND);
    ck_assert_int_eq(m.route->handler, 2);
    ck_assert_uint_eq(m.nparams, 1);
    ck_assert(m.params[0].value_len == 7 && memcmp(m.params[0].value, "special", 7) == 0);
    ks_router_free(&r);
}
END_TEST

START_TEST(conflicts_and_limits)
{
    struct ks_router r;
    ks_router_init(&r, 3, -1);
    const struct ks_route *a = add(&r, "GET", "/u/{id}", 1);
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(a->id, "r1");
    ck_assert_ptr_null(add(&r, "GET", "/u/{name}", 2));   /* same shape */
    ck_assert_ptr_nonnull(strstr(err, "conflicts with route r1"));
    ck_assert_ptr_nonnull(add(&r, "POST", "/u/{name}", 2));
    ck_assert_ptr_nonnull(add(&r, "*", "/u/{name}", 3));
    ck_assert_ptr_null(add(&r, "PUT", "/v", 4));
    ck_assert_ptr_nonnull(strstr(err, "more than 3 routes"));
    ck_assert_ptr_null(add(&r, "get", "/w", 4));
    ck_assert_ptr_nonnull(strstr(err, "bad method"));

    /* keep_first: the compatibility layer's duplicate rule */
    struct ks_route_def d = { .method = "GET", .pattern = "/u/{x}", .handler = 9,
                              .upstream = KS_ROUTE_NO_UPSTREAM, .keep_first = true };
    const struct ks_route *k = ks_router_add(&r, &d, err, sizeof(err));
    ck_assert_ptr_eq(k, a);
    ck_assert_int_eq(k->handler, 1);

    /* delete, and ids are never reused */
    ck_assert_int_eq(ks_router_delete(&r, "r1"), 0);
    ck_assert_int_eq(ks_router_delete(&r, "r1"), -1);
    ck_assert_ptr_null(ks_router_find(&r, "r1"));
    const struct ks_route *b = add(&r, "GET", "/u/{id}", 5);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b->id, "r4");
    ks_router_free(&r);
}
END_TEST

START_TEST(dynamic_routes)
{
    struct ks_router r;
    ks_router_init(&r, -1, -1);
    ck_assert_ptr_nonnull(add(&r, "GET", "/static", 1));
    struct ks_route_def d = { .id = "d1", .method = "GET", .pattern = "/dyn/*",
                              .handler = KS_ROUTE_PROXY, .upstream = 2, .dynamic = true,
                              .timeout_ms = 5000, .strip = "/dyn" };
    const char *hdrs[] = { "X-A", "1", "X-B", "2" };
    d.headers = hdrs;
    d.nheaders = 2;
    const struct ks_route *rt = ks_router_add(&r, &d, err, sizeof(err));
    ck_assert_msg(rt != NULL, "%s", err);
    ck_assert_str_eq(rt->id, "d1");
    ck_assert_str_eq(rt->headers[2], "X-B");
    ck_assert_str_eq(rt->strip, "/dyn");
    ck_assert_ptr_null(ks_router_add(&r, &d, err, sizeof(err)));  /* id taken */
    ck_assert_uint_eq(r.nroutes, 2);
    ck_assert_uint_eq(r.nstatic, 1);
    ck_assert_int_eq(who(&r, "GET", "/dyn/a"), KS_ROUTE_PROXY);
    ks_router_clear_dynamic(&r);
    ck_assert_uint_eq(r.nroutes, 1);
    ck_assert_int_eq(who(&r, "GET", "/dyn/a"), -100);
    ck_assert_int_eq(who(&r, "GET", "/static"), 1);
    ks_router_free(&r);
}
END_TEST

START_TEST(middleware_chains)
{
    struct ks_router r;
    ks_router_init(&r, -1, 5);
    ck_assert_int_eq(ks_router_use(&r, 100, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_router_use(&r, 101, "/*", err, sizeof(err)), 0);     /* global too */
    int own[] = { 300, 301 };
    struct ks_route_def d = { .method = "GET", .pattern = "/api/users", .handler = 1,
                              .upstream = KS_ROUTE_NO_UPSTREAM, .mw = own, .nmw = 2 };
    const struct ks_route *u = ks_router_add(&r, &d, err, sizeof(err));
    ck_assert_ptr_nonnull(u);
    const struct ks_route *o = add(&r, "GET", "/other", 2);
    /* scoped middleware registered after the routes still applies */
    ck_assert_int_eq(ks_router_use(&r, 200, "/api/*", err, sizeof(err)), 0);
    ck_assert_int_eq(ks_router_use(&r, 201, "/other", err, sizeof(err)), 0);
    ck_assert_uint_eq(r.nglobal, 2);
    ck_assert_int_eq(r.global[0], 100);
    ck_assert_int_eq(r.global[1], 101);
    ck_assert_uint_eq(u->nchain, 3);
    ck_assert_int_eq(u->chain[0], 200);
    ck_assert_int_eq(u->chain[1], 300);
    ck_assert_int_eq(u->chain[2], 301);
    ck_assert_uint_eq(o->nchain, 1);
    ck_assert_int_eq(o->chain[0], 201);
    /* a route added later gets the scoped middleware as well */
    const struct ks_route *l = add(&r, "POST", "/api/later", 3);
    ck_assert_uint_eq(l->nchain, 1);
    ck_assert_int_eq(l->chain[0], 200);
    /* the limit counts every middleware, named ones included */
    ck_assert_int_eq(ks_router_name_add(&r, true, "auth", 400, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_router_use(&r, 102, NULL, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "more than 5 middlewares"));
    ck_assert_int_eq(ks_router_use(&r, 102, "nope", err, sizeof(err)), -1);
    ks_router_free(&r);
}
END_TEST

START_TEST(named)
{
    struct ks_router r;
    ks_router_init(&r, -1, -1);
    ck_assert_int_eq(ks_router_name_add(&r, false, "hello", 7, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_router_name_add(&r, true, "hello", 8, err, sizeof(err)), 0);
    ck_assert_int_eq(ks_router_name_add(&r, false, "hello", 9, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "already registered"));
    ck_assert_int_eq(ks_router_name_add(&r, false, "", 9, err, sizeof(err)), -1);
    ck_assert_int_eq(ks_router_name_ref(&r, false, "hello"), 7);
    ck_assert_int_eq(ks_router_name_ref(&r, true, "hello"), 8);
    ck_assert_int_eq(ks_router_name_ref(&r, false, "bye"), -1);
    ks_router_free(&r);
}
END_TEST

START_TEST(many_routes)
{
    /* ids, deletion in the middle and matching over a few hundred routes */
    struct ks_router r;
    char pat[64];
    ks_router_init(&r, -1, -1);
    for (int i = 0; i < 300; i++) {
        snprintf(pat, sizeof(pat), "/r%d/{x}", i);
        ck_assert_ptr_nonnull(add(&r, i % 2 ? "POST" : "GET", pat, i));
    }
    ck_assert_int_eq(ks_router_delete(&r, "r151"), 0);    /* handler 150 */
    ck_assert_int_eq(who(&r, "GET", "/r150/a"), -100);
    ck_assert_int_eq(who(&r, "GET", "/r152/a"), 152);
    ck_assert_int_eq(who(&r, "GET", "/r153/a"), -405);
    ck_assert_int_eq(who(&r, "POST", "/r299/a"), 299);
    ks_router_free(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lua_router");
    TCase *tc = tcase_create("router");
    tcase_add_test(tc, compile_errors);
    tcase_add_test(tc, pattern_matching);
    tcase_add_test(tc, sixteen_params_and_wildcard);
    tcase_add_test(tc, precedence);
    tcase_add_test(tc, method_not_allowed);
    tcase_add_test(tc, conflicts_and_limits);
    tcase_add_test(tc, dynamic_routes);
    tcase_add_test(tc, middleware_chains);
    tcase_add_test(tc, named);
    tcase_add_test(tc, many_routes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
