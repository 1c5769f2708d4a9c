/*
 * test_balance.c: worker/balance.c and shm/verdict.c.
 *
 * A real shared segment and a real route table (built by publish.c from a
 * real keystone.yaml and copied the way a worker copies it): the weighted
 * cursor shared by several processes, skipping down, drained and tried
 * upstreams without upsetting the proportions of the others, the passive
 * breaker (window, open, exactly one half-open probe under a race of
 * processes, close or reopen), all_down with and without try_anyway, the
 * Retry-After estimate, and a route naming a weight-0 upstream; in a
 * table of its own, a tenant with more upstreams than the schedule has
 * positions.  The health records are written here the way the master
 * writes them.
 */
#include <config.h>

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "master/config.h"
#include "master/publish.h"
#include "shm/shm.h"
#include "shm/verdict.h"
#include "worker/balance.h"

static char dir[64], path[128], cfgpath[128];
static struct ks_shm shm;
static struct ks_config *cfg;
static char master_table[1 << 19];
static char worker_table[1 << 19];
static struct ks_worker w;

static const char yaml[] =
    "server:\n  public_addr: 127.0.0.1:1\n"
    "tenants:\n"
    "  - name: wrr\n    base_path: /wrr\n    upstreams:\n"
    "      - { name: a, url: \"http://127.0.0.1:10\", weight: 3 }\n"
    "      - { name: b, url: \"http://127.0.0.1:11\", weight: 1 }\n"
    "  - name: three\n    base_path: /three\n    upstreams:\n"
    "      - { name: x, url: \"http://127.0.0.1:20\" }\n"
    "      - { name: y, url: \"http://127.0.0.1:21\" }\n"
    "      - { name: z, url: \"http://127.0.0.1:22\" }\n"
    "  - name: drain\n    base_path: /drain\n    upstreams:\n"
    "      - { name: d1, url: \"http://127.0.0.1:30\", weight: 0 }\n"
    "      - { name: d2, url: \"http://127.0.0.1:31\", weight: 0 }\n"
    "  - name: half\n    base_path: /half\n    upstreams:\n"
    "      - { name: h, url: \"http://127.0.0.1:35\", weight: 5 }\n"
    "      - { name: d, url: \"http://127.0.0.1:36\", weight: 0 }\n"
    "  - name: brk\n    base_path: /brk\n"
    "    health_defaults: { max_fails: 3, fail_window: 10s, fail_timeout: 1s }\n"
    "    upstreams:\n"
    "      - { name: s, url: \"http://127.0.0.1:40\" }\n"
    "      - { name: t, url: \"http://127.0.0.1:41\" }\n"
    "      - { name: win, url: \"http://127.0.0.1:42\", weight: 0, fail_window: 100ms }\n"
    "      - { name: off, url: \"http://127.0.0.1:43\", weight: 0, max_fails: 0 }\n"
    "  - name: solo\n    base_path: /solo\n"
    "    health_defaults: { max_fails: 1, fail_timeout: 5s }\n"
    "    upstreams:\n"
    "      - { name: only, url: \"http://127.0.0.1:50\" }\n"
    "  - name: anyway\n    base_path: /anyway\n    all_down: try_anyway\n    upstreams:\n"
    "      - { name: p, url: \"http://127.0.0.1:60\" }\n"
    "      - { name: q, url: \"http://127.0.0.1:61\" }\n"
    "      - { name: r, url: \"http://127.0.0.1:62\" }\n"
    "  - name: empty\n    base_path: /empty\n"
    /* a heavy upstream beside light ones: when it is down, its share must
     * go to the others in proportion, not to its neighbours */
    "  - name: heavy\n    base_path: /heavy\n    upstreams:\n"
    "      - { name: big, url: \"http://127.0.0.1:70\", weight: 10 }\n"
    "      - { name: b, url: \"http://127.0.0.1:71\", weight: 1 }\n"
    "      - { name: c, url: \"http://127.0.0.1:72\", weight: 1 }\n"
    "      - { name: d, url: \"http://127.0.0.1:73\", weight: 1 }\n"
    "  - name: heavier\n    base_path: /heavier\n    upstreams:\n"
    "      - { name: big, url: \"http://127.0.0.1:80\", weight: 1000 }\n"
    "      - { name: b, url: \"http://127.0.0.1:81\", weight: 1 }\n"
    "      - { name: c, url: \"http://127.0.0.1:82\", weight: 1 }\n"
    "      - { name: d, url: \"http://127.0.0.1:83\", weight: 1 }\n"
    "  - name: mixed\n    base_path: /mixed\n    upstreams:\n"
    "      - { name: big, url: \"http://127.0.0.1:90\", weight: 100 }\n"
    "      - { name: e, url: \"http://127.0.0.1:91\", weight: 1 }\n"
    "      - { name: f, url: \"http://127.0.0.1:92\", weight: 1 }\n"
    "      - { name: g, url: \"http://127.0.0.1:93\", weight: 2 }\n";

static void setup_with(const char *text, int max_upstreams)
{
    strcpy(dir, "/tmp/ks-test-balance-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state", dir);
    snprintf(cfgpath, sizeof(cfgpath), "%s/keystone.yaml", dir);
    FILE *f = fopen(cfgpath, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    struct ks_diag diag = { 0 };
    cfg = ks_config_load(cfgpath, &diag);
    ck_assert_msg(cfg != NULL, "config: %s", diag.n ? diag.msgs[0] : "?");
    struct ks_shm_limits lim = { .max_workers = 2, .max_upstreams = max_upstreams,
                                 .max_tenants = 16, .route_table_size = sizeof(master_table) };
    char err[256];
    ck_assert_msg(ks_shm_create(&shm, path, &lim, cfgpath, "/nonexistent", err, sizeof(err)) == 0,
                  "%s", err);
    size_t len = ks_publish_build(cfg, &shm, master_table, sizeof(master_table), err, sizeof(err));
    ck_assert_msg(len > 0, "%s", err);
    ck_assert_uint_gt(ks_shm_routes_publish(&shm, master_table, len), 0);
    memset(&w, 0, sizeof(w));
    w.shm = &shm;
    w.score = ks_shm_score(&shm, 0);
    w.table = (struct ks_table *)worker_table;
    uint64_t gen;
    ck_assert_int_gt(ks_shm_routes_copy(&shm, worker_table, sizeof(worker_table), &gen, &w.table_buf), 0);
    w.generation = gen;
    ks_log_set_level(KS_LOG_ERROR);
}

static void setup(void)
{
    setup_with(yaml, 64);
}

/* One tenant with more upstreams than KS_SCHEDULE_MAX positions. */
#define MANY 1030
static char many_yaml[MANY * 80 + 256];

static void setup_many(void)
{
    size_t n = (size_t)snprintf(many_yaml, sizeof(many_yaml),
                                "server:\n  public_addr: 127.0.0.1:1\n"
                                "limits:\n  max_upstreams: 2000\n"
                                "tenants:\n  - name: many\n    upstreams:\n");
    for (int i = 0; i < MANY; i++)
        n += (size_t)snprintf(many_yaml + n, sizeof(many_yaml) - n,
                              "      - { name: u%d, url: \"http://127.0.0.1:%d\", weight: 1 }\n", i,
                              10000 + i);
    ck_assert_uint_lt(n, sizeof(many_yaml));
    setup_with(many_yaml, 2000);
}

static void teardown(void)
{
    ks_config_free(cfg);
    ks_shm_close(&shm);
    unlink(path);
    unlink(cfgpath);
    rmdir(dir);
}

static uint32_t tenant(const char *name)
{
    for (uint32_t i = 0; i < w.table->ntenants; i++)
        if (strcmp(ks_t_str(w.table, ks_t_tenants(w.table)[i].name), name) == 0)
            return i;
    ck_abort_msg("no tenant %s", name);
    return KS_NONE;
}

static uint32_t up(const char *tname, const char *uname)
{
    const struct ks_t_tenant *tn = &ks_t_tenants(w.table)[tenant(tname)];
    for (uint32_t k = 0; k < tn->nupstreams; k++)
        if (strcmp(ks_t_str(w.table, ks_t_upstreams(w.table)[tn->upstreams + k].name), uname) == 0)
            return tn->upstreams + k;
    ck_abort_msg("no upstream %s/%s", tname, uname);
    return KS_NONE;
}

static struct ks_health *rec(uint32_t u)
{
    return ks_shm_health(&shm, ks_t_upstreams(w.table)[u].health_slot);
}

/* As the master does after fall failed probes. */
static void set_down(uint32_t u, enum ks_health_reason why, int64_t wall_ms)
{
    atomic_store(&rec(u)->last_reason, why);
    atomic_store(&rec(u)->last_check_wall_ms, wall_ms);
    atomic_store(&rec(u)->word, KS_HW_MAKE(KS_HEALTH_DOWN, 0, wall_ms / 1000));
}

static const char *name_of(uint32_t u)
{
    return u == KS_NONE ? "(none)" : ks_t_str(w.table, ks_t_upstreams(w.table)[u].name);
}

/* Pick and complete one request with this outcome. */
static uint32_t request(uint32_t t, enum ks_upstream_outcome o, bool *all_down)
{
    uint32_t u = ks_balance_pick(&w, t, NULL, 0, all_down);
    if (u != KS_NONE) {
        ks_balance_begin(&w, u);
        ks_balance_end(&w, u, o);
    }
    return u;
}

START_TEST(weights_three_to_one)
{
    uint32_t t = tenant("wrr"), a = up("wrr", "a"), b = up("wrr", "b");
    int na = 0, nb = 0;
    bool all_down;
    for (int i = 0; i < 400; i++) {
        uint32_t u = request(t, KS_UO_OK, &all_down);
        ck_assert(!all_down);
        na += u == a;
        nb += u == b;
        /* smooth: b exactly once in every aligned window of four */
        if (i % 4 == 3) {
            ck_assert_int_eq(nb, (i + 1) / 4);
        }
    }
    ck_assert_int_eq(na, 300);
    ck_assert_int_eq(nb, 100);
    ck_assert_uint_eq(atomic_load(&rec(a)->requests), 300);
    ck_assert_uint_eq(atomic_load(&rec(a)->active), 0);
}
END_TEST

/* A down upstream's share is spread over the others in proportion, not
 * handed to its neighbour in the schedule. */
START_TEST(down_keeps_proportions)
{
    uint32_t t = tenant("three"), x = up("three", "x"), y = up("three", "y"), z = up("three", "z");
    set_down(y, KS_HR_CONNECT_REFUSED, ks_wall_ms());
    int n[3] = { 0, 0, 0 };
    bool all_down;
    for (int i = 0; i < 300; i++) {
        uint32_t u = request(t, KS_UO_OK, &all_down);
        ck_assert_msg(u != y, "a down upstream was picked");
        n[0] += u == x;
        n[2] += u == z;
    }
    ck_assert_int_eq(n[0], 150);
    ck_assert_int_eq(n[2], 150);
    ck_assert(!ks_balance_usable(&shm, &ks_t_upstreams(w.table)[y], ks_now_ms()));
    ck_assert_uint_eq(ks_tenant_usable(&shm, w.table, &ks_t_tenants(w.table)[t], ks_now_ms()), 2);
}
END_TEST

/* n requests to tenant tname; counts[i] gets those of upstream names[i]. */
static void count_picks(const char *tname, const char *const *names, int *counts, size_t nnames,
                        int n, const uint32_t *tried, size_t ntried)
{
    uint32_t t = tenant(tname);
    bool all_down;
    for (size_t i = 0; i < nnames; i++)
        counts[i] = 0;
    for (int i = 0; i < n; i++) {
        uint32_t u = ks_balance_pick(&w, t, tried, ntried, &all_down);
        ck_assert_msg(u != KS_NONE && !all_down, "request %d of %s found no upstream", i, tname);
        size_t k = 0;
        while (k < nnames && u != up(tname, names[k]))
            k++;
        ck_assert_msg(k < nnames, "request %d of %s went to %s", i, tname, name_of(u));
        counts[k]++;
        ks_balance_begin(&w, u);
        ks_balance_end(&w, u, KS_UO_OK);
    }
}

#define ck_assert_near(got, want, slack)                                                           \
    ck_assert_msg(abs((got) - (want)) <= (slack), "%s: %d, expected %d (+-%d)", #got, (got),       \
                  (want), (slack))

/* Positions of tname's schedule drawn so far. */
static uint64_t draws(const char *tname)
{
    return atomic_load(&ks_shm_rr_cursor(&shm, w.table_buf, tenant(tname))->next);
}

/* The share of a down upstream goes to the others in proportion to their
 * weights, however heavy it was (the tester's 10:1:1:1, 1000:1:1:1 and
 * 100:1:1 with the heavy one down), and every request draws the shared
 * cursor exactly once, whatever the state of the upstreams. */
START_TEST(heavy_down_shares_in_proportion)
{
    const char *bcd[] = { "b", "c", "d" };
    int n[4];
    set_down(up("heavy", "big"), KS_HR_CONNECT_REFUSED, ks_wall_ms());
    count_picks("heavy", bcd, n, 3, 300, NULL, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_near(n[i], 100, 1);
    ck_assert_uint_eq(draws("heavy"), 300);
    count_picks("heavy", bcd, n, 3, 3000, NULL, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_near(n[i], 1000, 1);

    set_down(up("heavier", "big"), KS_HR_CONNECT_REFUSED, ks_wall_ms());
    count_picks("heavier", bcd, n, 3, 300, NULL, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_near(n[i], 100, 1);
    ck_assert_uint_eq(draws("heavier"), 300);

    /* 100:1:1:2 with 100 down: 1:1:2; then with e down as well: 1:2 */
    const char *efg[] = { "e", "f", "g" };
    set_down(up("mixed", "big"), KS_HR_CONNECT_REFUSED, ks_wall_ms());
    count_picks("mixed", efg, n, 3, 400, NULL, 0);
    ck_assert_near(n[0], 100, 1);
    ck_assert_near(n[1], 100, 1);
    ck_assert_near(n[2], 200, 1);
    set_down(up("mixed", "e"), KS_HR_CONNECT_REFUSED, ks_wall_ms());
    count_picks("mixed", efg, n, 3, 300, NULL, 0);
    ck_assert_int_eq(n[0], 0);
    ck_assert_near(n[1], 100, 1);
    ck_assert_near(n[2], 200, 1);
}
END_TEST

/* The same for an open breaker and for a retry's tried upstreams: what
 * the first draw cannot use is shared in proportion too. */
START_TEST(tried_and_open_share_in_proportion)
{
    const char *all[] = { "big", "e", "f", "g" };
    int n[4];
    uint32_t tried[1] = { up("mixed", "big") };
    count_picks("mixed", all, n, 4, 400, tried, 1);
    ck_assert_int_eq(n[0], 0);
    ck_assert_near(n[1], 100, 1);
    ck_assert_near(n[2], 100, 1);
    ck_assert_near(n[3], 200, 1);
    atomic_store(&rec(up("heavy", "big"))->open_until_ms, ks_now_ms() + 60000);
    const char *bcd[] = { "b", "c", "d" };
    count_picks("heavy", bcd, n, 3, 600, NULL, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_near(n[i], 200, 1);
}
END_TEST

START_TEST(drained_and_empty)
{
    bool all_down;
    uint32_t half = tenant("half"), h = up("half", "h");
    for (int i = 0; i < 50; i++)
        ck_assert_uint_eq(ks_balance_pick(&w, half, NULL, 0, &all_down), h);  /* d has weight 0 */
    ck_assert(!ks_balance_usable(&shm, &ks_t_upstreams(w.table)[up("half", "d")], ks_now_ms()));
    /* every upstream drained: all down, 503 */
    ck_assert_uint_eq(ks_balance_pick(&w, tenant("drain"), NULL, 0, &all_down), KS_NONE);
    ck_assert(all_down);
    ck_assert_uint_eq(ks_balance_retry_after(&w, tenant("drain"), KS_NONE), 30);
    /* no upstreams at all: nothing to pick, but not "all down" */
    ck_assert_uint_eq(ks_balance_pick(&w, tenant("empty"), NULL, 0, &all_down), KS_NONE);
    ck_assert(!all_down);
}
END_TEST

START_TEST(tried_are_skipped)
{
    uint32_t t = tenant("three"), x = up("three", "x"), y = up("three", "y"), z = up("three", "z");
    bool all_down;
    uint32_t tried[3] = { x };
    for (int i = 0; i < 30; i++) {
        uint32_t u = ks_balance_pick(&w, t, tried, 1, &all_down);
        ck_assert(u == y || u == z);
    }
    tried[1] = y;
    tried[2] = z;
    ck_assert_uint_eq(ks_balance_pick(&w, t, tried, 3, &all_down), KS_NONE);
    ck_assert(!all_down);       /* none left to try: the last failure's answer, not 503 */
    set_down(y, KS_HR_RESET, ks_wall_ms());
    tried[1] = z;
    ck_assert_uint_eq(ks_balance_pick(&w, t, tried, 2, &all_down), KS_NONE);
    ck_assert(!all_down);
}
END_TEST

START_TEST(all_down_fails)
{
    uint32_t t = tenant("three");
    const char *names[] = { "x", "y", "z" };
    for (int i = 0; i < 3; i++)
        set_down(up("three", names[i]), KS_HR_CONNECT_REFUSED, ks_wall_ms());
    bool all_down;
    ck_assert_uint_eq(ks_balance_pick(&w, t, NULL, 0, &all_down), KS_NONE);
    ck_assert(all_down);
    /* rise (2) probes at health_interval (10s) */
    ck_assert_uint_eq(ks_balance_retry_after(&w, t, KS_NONE), 20);
    /* one good probe seen already: one more to go */
    atomic_store(&rec(up("three", "y"))->word, KS_HW_MAKE(KS_HEALTH_DOWN, 1, 1));
    ck_assert_uint_eq(ks_balance_retry_after(&w, t, KS_NONE), 10);
    ck_assert_uint_eq(ks_tenant_usable(&shm, w.table, &ks_t_tenants(w.table)[t], ks_now_ms()), 0);
}
END_TEST

START_TEST(all_down_try_anyway)
{
    uint32_t t = tenant("anyway"), p = up("anyway", "p"), q = up("anyway", "q"), r = up("anyway", "r");
    int64_t wall = ks_wall_ms(), mono = ks_now_ms();
    set_down(p, KS_HR_CONNECT_REFUSED, wall - 3000);   /* probe failed 3 s ago */
    set_down(q, KS_HR_CONNECT_REFUSED, wall - 5000);
    set_down(r, KS_HR_CONNECT_REFUSED, wall - 4000);
    atomic_store(&rec(q)->last_fail_ms, mono - 1000);  /* but a request failed on q 1 s ago */
    bool all_down;
    uint32_t tried[3];
    tried[0] = ks_balance_pick(&w, t, NULL, 0, &all_down);
    ck_assert(!all_down);
    ck_assert_msg(tried[0] == r, "least recently failed first, got %s", name_of(tried[0]));
    tried[1] = ks_balance_pick(&w, t, tried, 1, &all_down);
    ck_assert_msg(tried[1] == p, "then the next, got %s", name_of(tried[1]));
    tried[2] = ks_balance_pick(&w, t, tried, 2, &all_down);
    ck_assert_msg(tried[2] == q, "then the last, got %s", name_of(tried[2]));
    ck_assert_uint_eq(ks_balance_pick(&w, t, tried, 3, &all_down), KS_NONE);
    ck_assert(!all_down);
}
END_TEST

static bool wait_usable(uint32_t u, int64_t ms)
{
    int64_t deadline = ks_now_ms() + ms;
    while (ks_now_ms() < deadline) {
        if (ks_balance_usable(&shm, &ks_t_upstreams(w.table)[u], ks_now_ms()))
            return true;
        usleep(5000);
    }
    return false;
}

static enum ks_breaker breaker(uint32_t u)
{
    return ks_breaker_of(atomic_load(&rec(u)->open_until_ms), ks_probe_stale_ms(&ks_t_upstreams(w.table)[u]),
                         ks_now_ms());
}

START_TEST(breaker_opens_and_half_opens)
{
    uint32_t t = tenant("brk"), s = up("brk", "s"), tt = up("brk", "t");
    /* two failures (and successes between) keep it closed */
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_5XX);
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_OK);
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_CONNECT_FAILED);
    ck_assert_int_eq(breaker(s), KS_BREAKER_CLOSED);
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_RESET);
    ck_assert_int_eq(breaker(s), KS_BREAKER_OPEN);     /* max_fails 3 within fail_window */
    ck_assert_uint_eq(atomic_load(&rec(s)->failures), 3);
    ck_assert(!ks_balance_usable(&shm, &ks_t_upstreams(w.table)[s], ks_now_ms()));

    bool all_down;
    for (int i = 0; i < 20; i++)
        ck_assert_uint_eq(ks_balance_pick(&w, t, NULL, 0, &all_down), tt);
    /* an answer of a request sent before it opened does not close it */
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_OK);
    ck_assert_int_eq(breaker(s), KS_BREAKER_OPEN);

    /* after fail_timeout: half-open, exactly one request probes.  (1s:
     * the checks above must run while it is open even when a loaded
     * machine schedules this process late.) */
    ck_assert(wait_usable(s, 5000));
    ck_assert_int_eq(breaker(s), KS_BREAKER_HALF_OPEN);
    int probes = 0;
    for (int i = 0; i < 20; i++) {
        uint32_t u = ks_balance_pick(&w, t, NULL, 0, &all_down);
        probes += u == s;
        if (u == s)
            ks_balance_begin(&w, s);
    }
    ck_assert_int_eq(probes, 1);
    ck_assert_int_eq(breaker(s), KS_BREAKER_PROBING);
    /* the probe fails: open again */
    ks_balance_end(&w, s, KS_UO_TIMEOUT);
    ck_assert_int_eq(breaker(s), KS_BREAKER_OPEN);

    /* next half-open probe succeeds: closed, traffic by weight again */
    ck_assert(wait_usable(s, 5000));
    uint32_t u;
    while ((u = ks_balance_pick(&w, t, NULL, 0, &all_down)) != s)
        ck_assert_uint_eq(u, tt);
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_OK);
    ck_assert_int_eq(breaker(s), KS_BREAKER_CLOSED);
    int ns = 0;
    for (int i = 0; i < 100; i++)
        ns += ks_balance_pick(&w, t, NULL, 0, &all_down) == s;
    ck_assert_int_eq(ns, 50);
    /* the window restarted: two more failures do not open it */
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_5XX);
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_5XX);
    ck_assert_int_eq(breaker(s), KS_BREAKER_CLOSED);
}
END_TEST

START_TEST(breaker_window_and_off)
{
    uint32_t win = up("brk", "win"), off = up("brk", "off");
    /* failures further apart than fail_window (100ms) never add up */
    for (int round = 0; round < 3; round++) {
        int64_t start = ks_now_ms();
        for (int i = 0; i < 2; i++) {
            ks_balance_begin(&w, win);
            ks_balance_end(&w, win, KS_UO_5XX);
        }
        ck_assert_int_eq(breaker(win), KS_BREAKER_CLOSED);
        while (ks_now_ms() - start <= 110)
            usleep(5000);
    }
    for (int i = 0; i < 3; i++) {
        ks_balance_begin(&w, win);
        ks_balance_end(&w, win, KS_UO_5XX);
    }
    ck_assert_int_eq(breaker(win), KS_BREAKER_OPEN);
    /* max_fails 0: never */
    for (int i = 0; i < 100; i++) {
        ks_balance_begin(&w, off);
        ks_balance_end(&w, off, KS_UO_CONNECT_FAILED);
    }
    ck_assert_int_eq(breaker(off), KS_BREAKER_CLOSED);
    ck_assert_uint_eq(atomic_load(&rec(off)->failures), 100);
}
END_TEST

START_TEST(retry_after_of_open_breaker)
{
    uint32_t t = tenant("solo"), only = up("solo", "only");
    bool all_down;
    ck_assert_uint_eq(request(t, KS_UO_5XX, &all_down), only);
    ck_assert_int_eq(breaker(only), KS_BREAKER_OPEN);
    ck_assert_uint_eq(ks_balance_pick(&w, t, NULL, 0, &all_down), KS_NONE);
    ck_assert(all_down);
    ck_assert_uint_eq(ks_balance_retry_after(&w, t, KS_NONE), 5);    /* fail_timeout left */
    /* down by the checks as well: the longer of the two */
    set_down(only, KS_HR_READ_TIMEOUT, ks_wall_ms());
    ck_assert_uint_eq(ks_balance_retry_after(&w, t, KS_NONE), 20);
}
END_TEST

/* Run fn in n child processes at once (released together) and collect
 * what each writes to its pipe. */
static void in_children(int n, void (*fn)(int out), char *results, size_t each)
{
    int go[2], back[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(back), 0);
    pid_t pids[16];
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            close(go[1]);
            close(back[0]);
            char c;
            if (read(go[0], &c, 1) != 0)     /* blocks until the parent closes */
                _exit(3);
            fn(back[1]);
            _exit(0);
        }
    }
    close(go[0]);
    close(back[1]);
    close(go[1]);       /* EOF releases every child at once */
    size_t got = 0, want = (size_t)n * each;
    while (got < want) {
        ssize_t r = read(back[0], results + got, want - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(back[0]);
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    ck_assert_uint_eq(got, want);
}

static void thousand_picks(int out)
{
    uint32_t t = tenant("wrr"), a = up("wrr", "a");
    uint32_t counts[2] = { 0, 0 };
    bool all_down;
    for (int i = 0; i < 1000; i++) {
        uint32_t u = request(t, KS_UO_OK, &all_down);
        counts[u == a ? 0 : 1]++;
    }
    ck_assert_int_eq(write(out, counts, sizeof(counts)), (ssize_t)sizeof(counts));
}

/* One cursor for every process: together they follow the weights exactly,
 * whatever each one got. */
START_TEST(shared_cursor_across_processes)
{
    uint32_t counts[8][2];
    in_children(8, thousand_picks, (char *)counts, sizeof(counts[0]));
    uint32_t a = 0, b = 0;
    for (int i = 0; i < 8; i++) {
        a += counts[i][0];
        b += counts[i][1];
    }
    ck_assert_uint_eq(a, 6000);
    ck_assert_uint_eq(b, 2000);
    ck_assert_uint_eq(atomic_load(&rec(up("wrr", "a"))->requests), 6000);
}
END_TEST

static void heavy_picks(int out)
{
    uint32_t t = tenant("heavy");
    uint32_t counts[4] = { 0, 0, 0, 0 };
    const char *names[] = { "big", "b", "c", "d" };
    bool all_down;
    for (int i = 0; i < 300; i++) {
        uint32_t u = request(t, KS_UO_OK, &all_down);
        for (int k = 0; k < 4; k++)
            counts[k] += u == up("heavy", names[k]);
    }
    ck_assert_int_eq(write(out, counts, sizeof(counts)), (ssize_t)sizeof(counts));
}

/* Several processes together: the same proportions over the requests of
 * all of them. */
START_TEST(heavy_down_across_processes)
{
    set_down(up("heavy", "big"), KS_HR_CONNECT_REFUSED, ks_wall_ms());
    uint32_t counts[8][4];
    in_children(8, heavy_picks, (char *)counts, sizeof(counts[0]));
    int sum[4] = { 0, 0, 0, 0 };
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 4; k++)
            sum[k] += (int)counts[i][k];
    ck_assert_int_eq(sum[0], 0);
    for (int k = 1; k < 4; k++)
        ck_assert_near(sum[k], 800, 2);
}
END_TEST

static void one_pick(int out)
{
    bool all_down;
    uint32_t u = ks_balance_pick(&w, tenant("solo"), NULL, 0, &all_down);
    uint32_t res[2] = { u, all_down };
    ck_assert_int_eq(write(out, res, sizeof(res)), (ssize_t)sizeof(res));
}

START_TEST(half_open_claimed_once)
{
    uint32_t only = up("solo", "only");
    for (int round = 0; round < 5; round++) {
        /* open, and already past fail_timeout: half-open */
        atomic_store(&rec(only)->open_until_ms, ks_now_ms() - 1);
        uint32_t res[12][2];
        in_children(12, one_pick, (char *)res, sizeof(res[0]));
        int winners = 0, down = 0;
        for (int i = 0; i < 12; i++) {
            winners += res[i][0] == only;
            down += res[i][0] == KS_NONE && res[i][1];
        }
        ck_assert_int_eq(winners, 1);
        ck_assert_int_eq(down, 11);
        ck_assert_int_eq(breaker(only), KS_BREAKER_PROBING);
    }
}
END_TEST

/* An upstream a route forces: ks_balance_take claims the probe as pick does. */
START_TEST(take_claims_the_probe)
{
    uint32_t only = up("solo", "only");
    ck_assert(ks_balance_take(&w, only));        /* closed: any number */
    ck_assert(ks_balance_take(&w, only));
    atomic_store(&rec(only)->open_until_ms, ks_now_ms() + 60000);
    ck_assert(!ks_balance_take(&w, only));       /* open */
    atomic_store(&rec(only)->open_until_ms, ks_now_ms() - 1);
    ck_assert(ks_balance_take(&w, only));        /* half-open: the one probe */
    ck_assert(!ks_balance_take(&w, only));
    bool all_down;
    ck_assert_uint_eq(ks_balance_pick(&w, tenant("solo"), NULL, 0, &all_down), KS_NONE);
    ck_assert(all_down);
    ks_balance_begin(&w, only);
    ks_balance_end(&w, only, KS_UO_OK);
    ck_assert_int_eq(breaker(only), KS_BREAKER_CLOSED);
    set_down(only, KS_HR_RESET, ks_wall_ms());
    ck_assert(!ks_balance_take(&w, only));       /* the checks say down */
}
END_TEST

/* A route may name an upstream of weight 0 (the canary): it takes the
 * route's requests while healthy, the round-robin still never picks it,
 * and when it is down the Retry-After is its own, not the tenant's. */
START_TEST(take_ignores_weight)
{
    uint32_t half = tenant("half"), h = up("half", "h"), d = up("half", "d");
    ck_assert(ks_balance_take(&w, d));
    ck_assert(ks_balance_take(&w, d));
    ck_assert(ks_balance_take(&w, up("drain", "d1")));
    bool all_down;
    for (int i = 0; i < 20; i++)
        ck_assert_uint_eq(ks_balance_pick(&w, half, NULL, 0, &all_down), h);
    ck_assert_uint_eq(ks_balance_pick(&w, tenant("drain"), NULL, 0, &all_down), KS_NONE);
    ck_assert(all_down);
    ck_assert_uint_eq(ks_balance_retry_after(&w, tenant("drain"), KS_NONE), 30);
    /* health says whether it can take a request, usable whether it has
     * a share of the round-robin */
    ck_assert(ks_health_usable(rec(d), ks_probe_stale_ms(&ks_t_upstreams(w.table)[d]), ks_now_ms()));
    ck_assert(!ks_balance_usable(&shm, &ks_t_upstreams(w.table)[d], ks_now_ms()));

    set_down(d, KS_HR_CONNECT_REFUSED, ks_wall_ms());
    ck_assert(!ks_balance_take(&w, d));                 /* all_down: fail */
    ck_assert_uint_eq(ks_balance_retry_after(&w, half, d), 20);    /* rise 2 x 10s */
    ck_assert_uint_eq(ks_balance_retry_after(&w, half, KS_NONE), 1);  /* h is up */
    atomic_store(&rec(h)->open_until_ms, ks_now_ms() + 60000);
    ck_assert(!ks_balance_take(&w, h));
    ck_assert_uint_eq(ks_balance_retry_after(&w, half, h), 60);

    /* all_down: try_anyway sends a route's request to its upstream anyway */
    uint32_t p = up("anyway", "p");
    set_down(p, KS_HR_CONNECT_REFUSED, ks_wall_ms());
    ck_assert(ks_balance_take(&w, p));
}
END_TEST

/* Our own trouble (no descriptor for a socket) is neither a failure of
 * the upstream nor the success that closes a half-open breaker. */
START_TEST(local_trouble_is_neutral)
{
    uint32_t s = up("brk", "s");
    for (int i = 0; i < 10; i++) {
        ks_balance_begin(&w, s);
        ks_balance_end(&w, s, KS_UO_LOCAL);
    }
    ck_assert_int_eq(breaker(s), KS_BREAKER_CLOSED);
    ck_assert_uint_eq(atomic_load(&rec(s)->failures), 0);
    ck_assert_uint_eq(atomic_load(&rec(s)->requests), 10);
    ck_assert_uint_eq(atomic_load(&rec(s)->active), 0);
    atomic_store(&rec(s)->open_until_ms, ks_now_ms() - 1);     /* half-open */
    ck_assert(ks_balance_take(&w, s));                          /* the probe */
    ks_balance_begin(&w, s);
    ks_balance_end(&w, s, KS_UO_LOCAL);
    ck_assert_int_ne(breaker(s), KS_BREAKER_CLOSED);            /* nothing learnt */
}
END_TEST

/* A worker that dies with a request in flight: the master's release of
 * its slot takes the request out of the upstream's active count, once,
 * and never from an upstream the worker did not count itself on. */
START_TEST(dead_worker_gives_back_active)
{
    uint32_t a = up("wrr", "a"), b = up("wrr", "b");
    ks_balance_begin(&w, a);
    ks_balance_end(&w, a, KS_UO_OK);
    ks_balance_begin(&w, a);
    ck_assert_uint_eq(atomic_load(&rec(a)->active), 1);
    atomic_store(&w.score->pid, 1234);
    ks_shm_score_release(&shm, 0);                  /* killed in flight */
    ck_assert_uint_eq(atomic_load(&rec(a)->active), 0);
    ck_assert_int_eq(atomic_load(&w.score->pid), 0);
    ck_assert_uint_eq(atomic_load(&w.score->state), KS_WS_FREE);
    ks_shm_score_release(&shm, 0);                  /* nothing twice */
    ck_assert_uint_eq(atomic_load(&rec(a)->active), 0);

    /* finished its request before it died: nothing to give back */
    ks_balance_begin(&w, b);
    ks_balance_end(&w, b, KS_UO_OK);
    atomic_fetch_add(&rec(b)->active, 1);           /* another worker's */
    ks_shm_score_release(&shm, 0);
    ck_assert_uint_eq(atomic_load(&rec(b)->active), 1);

    /* the record was released and taken by another upstream since */
    ks_balance_begin(&w, a);
    atomic_store(&rec(a)->id, 42);
    ks_shm_score_release(&shm, 0);
    ck_assert_uint_eq(atomic_load(&rec(a)->active), 1);
}
END_TEST

/* A probe whose worker died is given to another request once stale. */
START_TEST(stale_probe_is_reclaimed)
{
    uint32_t only = up("solo", "only");
    const struct ks_t_upstream *u = &ks_t_upstreams(w.table)[only];
    int64_t stale = ks_probe_stale_ms(u);
    ck_assert_int_eq(stale, 2000 + 30000);  /* connect_timeout + response_timeout */
    atomic_store(&rec(only)->open_until_ms, -(ks_now_ms() - stale - 10));
    ck_assert_int_eq(breaker(only), KS_BREAKER_HALF_OPEN);
    bool all_down;
    ck_assert_uint_eq(ks_balance_pick(&w, tenant("solo"), NULL, 0, &all_down), only);
    ck_assert_int_eq(breaker(only), KS_BREAKER_PROBING);
}
END_TEST

/* 1030 upstreams of weight 1 in one tenant: each one in the schedule,
 * each one its two requests of 2060 (the overshoot of the scaling used to
 * take the only position of the first six). */
START_TEST(many_upstreams_all_served)
{
    uint32_t t = tenant("many");
    const struct ks_t_tenant *tn = &ks_t_tenants(w.table)[t];
    ck_assert_uint_eq(tn->nupstreams, MANY);
    ck_assert_uint_eq(tn->nschedule, MANY);
    static int n[MANY];
    bool all_down;
    for (int i = 0; i < 2 * MANY; i++) {
        uint32_t u = request(t, KS_UO_OK, &all_down);
        ck_assert(u != KS_NONE);
        n[u - tn->upstreams]++;
    }
    for (int i = 0; i < MANY; i++)
        ck_assert_msg(n[i] == 2, "u%d served %d requests", i, n[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("balance");
    TCase *tc = tcase_create("balance");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, weights_three_to_one);
    tcase_add_test(tc, down_keeps_proportions);
    tcase_add_test(tc, heavy_down_shares_in_proportion);
    tcase_add_test(tc, tried_and_open_share_in_proportion);
    tcase_add_test(tc, heavy_down_across_processes);
    tcase_add_test(tc, drained_and_empty);
    tcase_add_test(tc, tried_are_skipped);
    tcase_add_test(tc, all_down_fails);
    tcase_add_test(tc, all_down_try_anyway);
    tcase_add_test(tc, breaker_opens_and_half_opens);
    tcase_add_test(tc, breaker_window_and_off);
    tcase_add_test(tc, retry_after_of_open_breaker);
    tcase_add_test(tc, shared_cursor_across_processes);
    tcase_add_test(tc, half_open_claimed_once);
    tcase_add_test(tc, stale_probe_is_reclaimed);
    tcase_add_test(tc, take_claims_the_probe);
    tcase_add_test(tc, take_ignores_weight);
    tcase_add_test(tc, dead_worker_gives_back_active);
    tcase_add_test(tc, local_trouble_is_neutral);
    suite_add_tcase(s, tc);
    TCase *many = tcase_create("many");
    tcase_add_checked_fixture(many, setup_many, teardown);
    tcase_set_timeout(many, 60);
    tcase_add_test(many, many_upstreams_all_served);
    suite_add_tcase(s, many);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
