/*
 * test_route.c: tenant resolution and path normalisation (worker/route.c).
 */
#include <config.h>

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "shm/table.h"
#include "worker/route.h"

/* ---- normalisation ----------------------------------------------------- */

static const char *norm(const char *in)
{
    static char out[512];
    ssize_t n = ks_route_normalize(in, strlen(in), out);
    ck_assert_msg(n >= 0, "\"%s\" refused", in);
    ck_assert_uint_eq((size_t)n, strlen(out));
    return out;
}

static void norm_bad(const char *in)
{
    char out[512];
    ck_assert_msg(ks_route_normalize(in, strlen(in), out) == -1, "\"%s\" accepted", in);
}

START_TEST(test_normalize)
{
    ck_assert_str_eq(norm("/"), "/");
    ck_assert_str_eq(norm(""), "/");
    ck_assert_str_eq(norm("*"), "/");
    ck_assert_str_eq(norm("/api"), "/api");
    ck_assert_str_eq(norm("/api/"), "/api/");
    ck_assert_str_eq(norm("//api//x"), "/api/x");
    ck_assert_str_eq(norm("/api/./x"), "/api/x");
    ck_assert_str_eq(norm("/api/."), "/api/");
    ck_assert_str_eq(norm("/api/x/.."), "/api/");
    ck_assert_str_eq(norm("/api/../admin"), "/admin");
    ck_assert_str_eq(norm("/../../etc/passwd"), "/etc/passwd");
    ck_assert_str_eq(norm("/.."), "/");
    ck_assert_str_eq(norm("/a/b/../../.."), "/");
    ck_assert_str_eq(norm("/..a/b.."), "/..a/b..");
    ck_assert_str_eq(norm("/.../x"), "/.../x");
    /* unreserved escapes are decoded, so they match what the upstream reads */
    ck_assert_str_eq(norm("/%61pi"), "/api");
    ck_assert_str_eq(norm("/api/%2e%2e/admin"), "/admin");
    ck_assert_str_eq(norm("/api/%2E/x"), "/api/x");
    ck_assert_str_eq(norm("/%7euser"), "/~user");
    /* an escaped slash is a slash, as nginx and decoding upstreams read it */
    ck_assert_str_eq(norm("/a%2fb"), "/a/b");
    ck_assert_str_eq(norm("/secure%2Fadmin-only"), "/secure/admin-only");
    ck_assert_str_eq(norm("/admin/..%2Fapi"), "/api");
    ck_assert_str_eq(norm("/public/..%2F..%2Finternal"), "/internal");
    ck_assert_str_eq(norm("/a%2F%2F/b%2F"), "/a/b/");
    /* others stay encoded (upper-case hex) */
    ck_assert_str_eq(norm("/a%20b"), "/a%20b");
    ck_assert_str_eq(norm("/a%3Fb"), "/a%3Fb");
    norm_bad("/a%00b");
    norm_bad("/a%");
    norm_bad("/a%4");
    norm_bad("/a%zz");
    norm_bad("/a%4g");
}
END_TEST

START_TEST(test_prefix)
{
    ck_assert(ks_route_prefix_match("/api", 4, "/api", 4));
    ck_assert(ks_route_prefix_match("/api", 4, "/api/x", 6));
    ck_assert(ks_route_prefix_match("/api", 4, "/api/", 5));
    ck_assert(!ks_route_prefix_match("/api", 4, "/apiary", 7));
    ck_assert(!ks_route_prefix_match("/api", 4, "/ap", 3));
    ck_assert(!ks_route_prefix_match("/api", 4, "/API", 4));
    ck_assert(ks_route_prefix_match("/", 1, "/anything", 9));
    ck_assert(ks_route_prefix_match("/a/b", 4, "/a/b/c", 6));
    ck_assert(!ks_route_prefix_match("/a/b", 4, "/a/bc", 5));
}
END_TEST

/* ---- tenant choice ------------------------------------------------------- */

struct tdef {
    const char *name;
    const char *base;
    const char *domains[4];
};

static char table_buf[65536];

static const struct ks_table *build(const struct tdef *defs, size_t n)
{
    uint32_t nstr = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < 4 && defs[i].domains[d]; d++)
            nstr++;
    struct ks_table_builder b;
    ck_assert_int_eq(ks_table_begin(&b, table_buf, sizeof(table_buf), (uint32_t)n, 0, 0, nstr, 0), 0);
    uint32_t *sl = ks_table_strlist(&b);
    uint32_t used = 0;
    for (size_t i = 0; i < n; i++) {
        struct ks_t_tenant *t = ks_table_tenant(&b, (uint32_t)i);
        t->name = ks_table_str(&b, defs[i].name);
        t->base_path = ks_table_str(&b, defs[i].base);
        t->domains = used;
        for (size_t d = 0; d < 4 && defs[i].domains[d]; d++)
            sl[used++] = ks_table_str(&b, defs[i].domains[d]);
        t->ndomains = used - t->domains;
    }
    ck_assert_uint_gt(ks_table_finish(&b), 0);
    return (const struct ks_table *)table_buf;
}

/* Name of the tenant chosen for host and raw path ("-" for none), with the
 * base length checked against the chosen tenant's base path. */
static const char *pick(const struct ks_table *t, const char *host, const char *path)
{
    char normed[512];
    ssize_t n = ks_route_normalize(path, strlen(path), normed);
    ck_assert(n >= 0);
    size_t blen = 99;
    uint32_t i = ks_route_tenant(t, host, normed, (size_t)n, &blen);
    if (i == KS_NONE)
        return "-";
    const char *base = ks_t_str(t, ks_t_tenants(t)[i].base_path);
    ck_assert_uint_eq(blen, strcmp(base, "/") == 0 ? 0 : strlen(base));
    return ks_t_str(t, ks_t_tenants(t)[i].name);
}

START_TEST(test_host_only)
{
    const struct tdef defs[] = {
        { "exact", "/", { "api.example.com", NULL } },
        { "wild", "/", { "*.example.com", NULL } },
        { "deeper", "/", { "*.eu.example.com", NULL } },
        { "other", "/", { "other.test", "second.test", NULL } },
    };
    const struct ks_table *t = build(defs, KS_ARRAY_LEN(defs));
    ck_assert_str_eq(pick(t, "api.example.com", "/"), "exact");
    ck_assert_str_eq(pick(t, "www.example.com", "/x"), "wild");
    ck_assert_str_eq(pick(t, "a.b.example.com", "/x"), "wild");
    ck_assert_str_eq(pick(t, "x.eu.example.com", "/x"), "deeper");     /* longest wildcard */
    ck_assert_str_eq(pick(t, "example.com", "/"), "-");                /* *.x needs a label */
    ck_assert_str_eq(pick(t, "second.test", "/"), "other");
    ck_assert_str_eq(pick(t, "notexample.com", "/"), "-");
    ck_assert_str_eq(pick(t, "nobody", "/"), "-");
    ck_assert_str_eq(pick(t, "", "/"), "-");
}
END_TEST

START_TEST(test_paths)
{
    const struct tdef defs[] = {
        { "root", "/", { NULL } },
        { "api", "/api", { NULL } },
        { "v2", "/api/v2", { NULL } },
    };
    const struct ks_table *t = build(defs, KS_ARRAY_LEN(defs));
    ck_assert_str_eq(pick(t, "any", "/"), "root");
    ck_assert_str_eq(pick(t, "any", "/api"), "api");
    ck_assert_str_eq(pick(t, "any", "/api/x"), "api");
    ck_assert_str_eq(pick(t, "any", "/apiary"), "root");
    ck_assert_str_eq(pick(t, "any", "/api/v2/users"), "v2");
    ck_assert_str_eq(pick(t, "any", "/api/v2"), "v2");
    ck_assert_str_eq(pick(t, "any", "/api/v20"), "api");
    /* matching sees through dot segments and empty segments ... */
    ck_assert_str_eq(pick(t, "any", "/api/v2/../x"), "api");
    ck_assert_str_eq(pick(t, "any", "/api/../x"), "root");
    ck_assert_str_eq(pick(t, "any", "//api//v2/x"), "v2");
    ck_assert_str_eq(pick(t, "any", "/%61pi/v2"), "v2");
    ck_assert_str_eq(pick(t, "any", "/api/%2e%2e/x"), "root");
    /* ... and an encoded slash is a separator like any other */
    ck_assert_str_eq(pick(t, "any", "/api%2Fv2"), "v2");
    ck_assert_str_eq(pick(t, "any", "/x/..%2Fapi"), "api");
    ck_assert_str_eq(pick(t, "any", "/api/v2/..%2F..%2Fadmin"), "root");
}
END_TEST

START_TEST(test_hybrid)
{
    const struct tdef defs[] = {
        { "catchall", "/", { NULL } },
        { "pathonly", "/api", { NULL } },
        { "hostonly", "/", { "shop.test", NULL } },
        { "hybrid", "/api", { "shop.test", NULL } },
        { "wildhybrid", "/api/v9", { "*.test", NULL } },
        { "hostadmin", "/admin", { "only.test", NULL } },
    };
    const struct ks_table *t = build(defs, KS_ARRAY_LEN(defs));
    ck_assert_str_eq(pick(t, "shop.test", "/api/x"), "hybrid");     /* hybrid beats the rest */
    ck_assert_str_eq(pick(t, "shop.test", "/other"), "hostonly");   /* host-only beats path-only */
    ck_assert_str_eq(pick(t, "other.host", "/api/x"), "pathonly");
    ck_assert_str_eq(pick(t, "other.host", "/x"), "catchall");
    /* an exact host wins over a wildcard with a longer path */
    ck_assert_str_eq(pick(t, "shop.test", "/api/v9/x"), "hybrid");
    ck_assert_str_eq(pick(t, "a.test", "/api/v9/x"), "wildhybrid");
    /* a level whose paths do not match falls through to the next */
    ck_assert_str_eq(pick(t, "a.test", "/api/x"), "pathonly");
    ck_assert_str_eq(pick(t, "only.test", "/admin/x"), "hostadmin");
    ck_assert_str_eq(pick(t, "only.test", "/x"), "catchall");
}
END_TEST

START_TEST(test_no_catchall)
{
    const struct tdef defs[] = {
        { "api", "/api", { "a.test", NULL } },
    };
    const struct ks_table *t = build(defs, KS_ARRAY_LEN(defs));
    ck_assert_str_eq(pick(t, "a.test", "/api"), "api");
    ck_assert_str_eq(pick(t, "a.test", "/"), "-");
    ck_assert_str_eq(pick(t, "b.test", "/api"), "-");
}
END_TEST

static Suite *route_suite(void)
{
    Suite *s = suite_create("route");
    TCase *tc = tcase_create("route");
    tcase_add_test(tc, test_normalize);
    tcase_add_test(tc, test_prefix);
    tcase_add_test(tc, test_host_only);
    tcase_add_test(tc, test_paths);
    tcase_add_test(tc, test_hybrid);
    tcase_add_test(tc, test_no_catchall);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(route_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
