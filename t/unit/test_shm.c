/*
 * test_shm.c: the shared segment, route table publish/read (including a
 * writer racing readers in another process), slot assignment, table
 * building and validation, and the smooth weighted round-robin schedule.
 */
#include <config.h>

#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "master/publish.h"
#include "shm/shm.h"
#include "shm/statefile.h"
#include "shm/table.h"

static char dir[64];
static char path[128];

static void setup(void)
{
    strcpy(dir, "/tmp/ks-test-shm-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state", dir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

static const struct ks_shm_limits small = {
    .max_workers = 4, .max_upstreams = 8, .max_tenants = 4, .route_table_size = 65536,
};

static void create(struct ks_shm *shm)
{
    char err[256];
    int rc = ks_shm_create(shm, path, &small, "/etc/k.yaml", "/run/k.sock", err, sizeof(err));
    ck_assert_msg(rc == 0, "%s", err);
}

/* A table whose every payload byte says which publish it came from, so a
 * torn copy is detectable. */
static size_t make_table(char *buf, size_t cap, uint32_t tag, uint32_t nstr)
{
    struct ks_table_builder b;
    ck_assert_int_eq(ks_table_begin(&b, buf, cap, 1, 0, 0, nstr, 0), 0);
    struct ks_t_tenant *t = ks_table_tenant(&b, 0);
    char name[64];
    snprintf(name, sizeof(name), "tenant-%u", tag);
    t->name = ks_table_str(&b, name);
    t->base_path = ks_table_str(&b, "/");
    uint32_t *sl = ks_table_strlist(&b);
    char fill[200];
    memset(fill, 'a' + (int)(tag % 26), sizeof(fill) - 1);
    fill[sizeof(fill) - 1] = '\0';
    for (uint32_t i = 0; i < nstr; i++)
        sl[i] = ks_table_str(&b, fill);
    b.t->settings.max_headers = (int32_t)tag;
    return ks_table_finish(&b);
}

static int table_consistent(const struct ks_table *t, size_t len)
{
    char err[128];
    if (ks_table_check(t, len, err, sizeof(err)) < 0)
        return 0;
    uint32_t tag = (uint32_t)t->settings.max_headers;
    char name[64];
    snprintf(name, sizeof(name), "tenant-%u", tag);
    if (strcmp(ks_t_str(t, ks_t_tenants(t)[0].name), name) != 0)
        return 0;
    for (uint32_t i = 0; i < t->nstrlist; i++) {
        const char *s = ks_t_str(t, ks_t_strlist(t)[i]);
        for (const char *p = s; *p; p++)
            if (*p != 'a' + (int)(tag % 26))
                return 0;
    }
    return 1;
}

START_TEST(create_and_attach)
{
    struct ks_shm w, r;
    char err[256];
    create(&w);
    ck_assert_int_eq(ks_shm_open_readonly(&r, path, err, sizeof(err)), 0);
    ck_assert_int_eq(r.hdr->master_pid, getpid());
    ck_assert_uint_eq(ks_shm_count(&r, KS_REGION_SCOREBOARD), 8);
    ck_assert_uint_eq(ks_shm_count(&r, KS_REGION_HEALTH), 8);
    ck_assert_str_eq(r.hdr->config_path, "/etc/k.yaml");
    ck_assert_str_eq(r.hdr->control_socket, "/run/k.sock");
    ck_assert_uint_eq(r.size, ks_shm_size(&small));
    /* every slot starts free */
    for (uint32_t i = 0; i < 8; i++)
        ck_assert_int_eq(atomic_load(&ks_shm_score(&r, i)->pid), 0);
    ks_shm_close(&r);
    ks_shm_close(&w);
}
END_TEST

START_TEST(garbage_is_refused)
{
    struct ks_shm r;
    char err[256];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char junk[8192];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 7 + 3);
    ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    ck_assert_int_eq(ks_shm_open_readonly(&r, path, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "bad magic"));

    /* a real segment, truncated */
    struct ks_shm w;
    create(&w);
    ck_assert_int_eq(truncate(path, (off_t)(w.size / 2)), 0);
    ck_assert_int_eq(ks_shm_open_readonly(&r, path, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));
    ks_shm_close(&w);

    /* too small to hold a header */
    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_eq(write(fd, "x", 1), 1);
    close(fd);
    ck_assert_int_eq(ks_shm_open_readonly(&r, path, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "too small"));
}
END_TEST

/* What ks_shm_create may replace: nothing, or a state file whose master
 * is gone; never someone's file, nor a live master's state file. */
START_TEST(check_path)
{
    char err[512];
    ck_assert_int_eq(ks_shm_check_path(path, "server.state_file", err, sizeof(err)), 0);

    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_eq(write(fd, "user data\n", 10), 10);
    close(fd);
    ck_assert_int_eq(ks_shm_check_path(path, "server.state_file", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "server.state_file"));
    ck_assert_ptr_nonnull(strstr(err, "is not a keystoned state file"));
    unlink(path);

    /* our own: the recorded master is this process, about to make it again */
    struct ks_shm w;
    create(&w);
    ck_assert_int_eq(ks_shm_check_path(path, "k", err, sizeof(err)), 0);
    /* a live master's (here the parent, with its own start time) */
    w.hdr->master_pid = (int32_t)getppid();
    w.hdr->master_start_ticks = ks_proc_start_ticks(getppid());
    msync(w.base, 4096, MS_SYNC);
    ck_assert_int_eq(ks_shm_check_path(path, "server.state_file", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "is already in use by keystoned pid"));
    /* a pid since given to another process: stale */
    w.hdr->master_start_ticks += 1;
    ck_assert_int_eq(ks_shm_check_path(path, "k", err, sizeof(err)), 0);
    /* a master that is gone: stale */
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0);
    w.hdr->master_pid = (int32_t)child;
    ck_assert_int_eq(ks_shm_check_path(path, "k", err, sizeof(err)), 0);
    ks_shm_close(&w);
    unlink(path);

    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(ks_shm_check_path(path, "server.state_file", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "is not a keystoned state file"));
    rmdir(path);
}
END_TEST

START_TEST(publish_and_copy)
{
    struct ks_shm shm;
    create(&shm);
    static char buf[65536], copy[65536];
    size_t len = make_table(buf, sizeof(buf), 7, 10);
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_eq(ks_shm_routes_publish(&shm, buf, len), 1);
    uint64_t gen;
    unsigned b;
    ck_assert_int_eq(ks_shm_routes_copy(&shm, copy, sizeof(copy), &gen, &b), (ssize_t)len);
    ck_assert_uint_eq(gen, 1);
    ck_assert_uint_eq(b, 1);
    ck_assert(table_consistent((struct ks_table *)copy, len));
    len = make_table(buf, sizeof(buf), 8, 3);
    ck_assert_uint_eq(ks_shm_routes_publish(&shm, buf, len), 2);
    ck_assert_int_eq(ks_shm_routes_copy(&shm, copy, sizeof(copy), &gen, &b), (ssize_t)len);
    ck_assert_uint_eq(gen, 2);
    ck_assert_uint_eq(b, 0);
    ck_assert_int_eq(((struct ks_table *)copy)->settings.max_headers, 8);
    /* a destination too small is refused, not overrun */
    ck_assert_int_eq(ks_shm_routes_copy(&shm, copy, 16, &gen, &b), -1);
    /* a table larger than the buffer is not published */
    ck_assert_uint_eq(ks_shm_routes_publish(&shm, buf, 65537), 0);
    ks_shm_close(&shm);
}
END_TEST

/* The state file overwritten in place, truncated, deleted: repaired or
 * made again (shm/statefile.h), the mapping kept at its address. */
START_TEST(state_file_repair_and_recreate)
{
    struct ks_shm shm;
    create(&shm);
    ks_statefile_guard(&shm);
    static char buf[65536];
    size_t len = make_table(buf, sizeof(buf), 7, 10);
    ck_assert_uint_eq(ks_shm_routes_publish(&shm, buf, len), 1);
    ck_assert(!ks_statefile_repair(&shm));          /* nothing to do */
    ck_assert_int_eq(ks_statefile_lost(&shm), 0);

    /* garbage over the header */
    int fd = open(path, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    char junk[3000];
    memset(junk, 0xa5, sizeof(junk));
    ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
    ck_assert(ks_statefile_repair(&shm));
    ck_assert_uint_eq(shm.hdr->magic, KS_SHM_MAGIC);
    ck_assert_uint_eq(atomic_load(&shm.hdr->generation), 1);
    ck_assert_str_eq(shm.hdr->control_socket, "/run/k.sock");
    ck_assert(!ks_statefile_repair(&shm));
    ck_assert_uint_eq(ks_shm_routes_publish(&shm, buf, len), 2);   /* counts on */

    /* truncated: the next touch of the segment faults, the guard gives
     * the file its size back, the page reads as zeros */
    ck_assert_int_eq(ftruncate(fd, 100), 0);
    close(fd);
    ck_assert_uint_eq(atomic_load(&ks_shm_score(&shm, 3)->pid), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((size_t)st.st_size, shm.size);
    ck_assert(ks_statefile_repair(&shm));
    ck_assert_uint_eq(atomic_load(&shm.hdr->generation), 2);

    /* deleted: made again, with what the segment held */
    atomic_store(&ks_shm_score(&shm, 1)->pid, 4242);
    void *base = shm.base;
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(ks_statefile_lost(&shm), 1);
    char err[256];
    ck_assert_msg(ks_statefile_recreate(&shm, (gid_t)-1, err, sizeof(err)) == 0, "%s", err);
    ck_assert_ptr_eq(shm.base, base);
    ck_assert_int_eq(ks_statefile_lost(&shm), 0);
    ck_assert_uint_eq(shm.incarnation, 1);
    struct ks_shm ro;
    ck_assert_int_eq(ks_shm_open_readonly(&ro, path, err, sizeof(err)), 0);
    ck_assert_int_eq(atomic_load(&ks_shm_score(&ro, 1)->pid), 4242);
    ck_assert_uint_eq(atomic_load(&ro.hdr->incarnation), 1);
    atomic_store(&ks_shm_score(&shm, 1)->pid, 4343);    /* the same memory now */
    ck_assert_int_eq(atomic_load(&ks_shm_score(&ro, 1)->pid), 4343);
    ks_shm_close(&ro);
    ks_shm_close(&shm);
    signal(SIGBUS, SIG_DFL);
}
END_TEST

/* The state file is made under a temporary name next to it, in a
 * directory server.user may write to: a symbolic link planted at that
 * name (or a file left there) must never be written through, or root
 * would overwrite whatever it points at. */
START_TEST(tmp_name_not_followed)
{
    char victim[600], tmp[600];
    static const char precious[] = "precious\n";
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    int fd = open(victim, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, precious, sizeof(precious) - 1), (ssize_t)sizeof(precious) - 1);
    close(fd);

    ck_assert_int_eq(symlink(victim, tmp), 0);
    struct ks_shm shm;
    create(&shm);
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(stat(victim, &st), 0);
    ck_assert_uint_eq((size_t)st.st_size, sizeof(precious) - 1);

    /* and when the file is made again while running */
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(symlink(victim, tmp), 0);
    char err[256];
    ck_assert_msg(ks_statefile_recreate(&shm, (gid_t)-1, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(stat(victim, &st), 0);
    ck_assert_uint_eq((size_t)st.st_size, sizeof(precious) - 1);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    ks_shm_close(&shm);
    unlink(victim);
}
END_TEST

/* The master publishes as fast as it can in one process while another
 * process copies tables: every accepted copy must be a whole table of one
 * publish, and generations must only grow. */
START_TEST(writer_races_reader)
{
    struct ks_shm shm;
    create(&shm);
    static char buf[65536];
    size_t len = make_table(buf, sizeof(buf), 0, 50);
    ks_shm_routes_publish(&shm, buf, len);
    /* The writer keeps publishing until the reader has copied often enough
     * while it ran, so that the race really happens even when a loaded
     * machine schedules the two processes unevenly. */
    struct race {
        _Atomic uint64_t copies;    /* reader */
        _Atomic uint64_t published; /* writer */
    } *race = mmap(NULL, sizeof(*race), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(race != MAP_FAILED);
    atomic_store(&race->copies, 0);
    atomic_store(&race->published, 0);
    pid_t writer = fork();
    ck_assert_int_ge(writer, 0);
    if (writer == 0) {
        for (uint32_t tag = 1; tag <= 20000 || atomic_load(&race->copies) < 1000; tag++) {
            size_t n = make_table(buf, sizeof(buf), tag, 1 + tag % 200);
            ks_shm_routes_publish(&shm, buf, n);
            atomic_store(&race->published, tag);
        }
        _exit(0);
    }
    static char copy[65536];
    uint64_t last = 0, torn = 0;
    int status;
    while (waitpid(writer, &status, WNOHANG) == 0) {
        uint64_t gen;
        unsigned b;
        ssize_t n = ks_shm_routes_copy(&shm, copy, sizeof(copy), &gen, &b);
        ck_assert_int_gt(n, 0);
        ck_assert_uint_ge(gen, last);
        last = gen;
        atomic_fetch_add(&race->copies, 1);
        if (!table_consistent((struct ks_table *)copy, (size_t)n))
            torn++;
    }
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_uint_eq(torn, 0);
    ck_assert_uint_ge(atomic_load(&race->copies), 1000);
    ck_assert_uint_eq(atomic_load(&shm.hdr->generation), 1 + atomic_load(&race->published));
    munmap(race, sizeof(*race));
    ks_shm_close(&shm);
}
END_TEST

START_TEST(slots_survive_and_sweep)
{
    struct ks_shm shm;
    create(&shm);
    int a = ks_shm_health_slot(&shm, 111);
    int b = ks_shm_health_slot(&shm, 222);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ne(a, b);
    atomic_store(&ks_shm_health(&shm, (uint32_t)b)->word, KS_HW_MAKE(KS_HEALTH_DOWN, 3, 12345));
    /* the same key finds the same record, with its state */
    ck_assert_int_eq(ks_shm_health_slot(&shm, 222), b);
    ck_assert_uint_eq(KS_HW_STATE(atomic_load(&ks_shm_health(&shm, (uint32_t)b)->word)), KS_HEALTH_DOWN);
    ck_assert_uint_eq(KS_HW_COUNT(atomic_load(&ks_shm_health(&shm, (uint32_t)b)->word)), 3);
    ck_assert_int_eq(KS_HW_SINCE(atomic_load(&ks_shm_health(&shm, (uint32_t)b)->word)), 12345);
    uint64_t keep[] = { 222 };
    ks_shm_health_sweep(&shm, keep, 1);
    ck_assert_uint_eq(atomic_load(&ks_shm_health(&shm, (uint32_t)a)->id), 0);
    ck_assert_int_eq(ks_shm_health_slot(&shm, 222), b);
    /* a released record is reused, zeroed */
    atomic_store(&ks_shm_health(&shm, (uint32_t)a)->requests, 99);
    int c = ks_shm_health_slot(&shm, 333);
    ck_assert_int_eq(c, a);
    ck_assert_uint_eq(atomic_load(&ks_shm_health(&shm, (uint32_t)c)->requests), 0);
    /* full */
    for (uint64_t k = 1000; k < 1006; k++)
        ck_assert_int_ge(ks_shm_health_slot(&shm, k), 0);
    ck_assert_int_eq(ks_shm_health_slot(&shm, 2000), -1);
    ck_assert_int_ge(ks_shm_tenant_slot(&shm, 5), 0);
    ks_shm_close(&shm);
}
END_TEST

START_TEST(reload_record)
{
    struct ks_shm shm;
    create(&shm);
    enum ks_reload_result r;
    int64_t when;
    char msg[KS_RELOAD_MSG_LEN];
    uint64_t ok, failed;
    ks_shm_get_reload(&shm, &r, &when, msg, sizeof(msg), &ok, &failed);
    ck_assert_int_eq(r, KS_RELOAD_NONE);
    ks_shm_set_reload(&shm, KS_RELOAD_INVALID, "FAILED: x.yaml:3:1: bad");
    ks_shm_set_reload(&shm, KS_RELOAD_APPLIED, "applied: generation 2");
    ks_shm_set_reload(&shm, KS_RELOAD_RESTART, "FAILED: restart required");
    ks_shm_get_reload(&shm, &r, &when, msg, 16, &ok, &failed);
    ck_assert_int_eq(r, KS_RELOAD_RESTART);
    ck_assert_str_eq(msg, "FAILED: restart");
    ck_assert_uint_eq(ok, 1);
    ck_assert_uint_eq(failed, 2);
    ck_assert_int_gt(when, 0);
    /* a write that never finishes (reload_seq left odd): a bounded wait,
     * then defined outputs, not the caller's stale ones */
    atomic_store(&shm.hdr->reload_seq, atomic_load(&shm.hdr->reload_seq) | 1u);
    r = KS_RELOAD_APPLIED;
    when = ok = failed = 77;
    ks_shm_get_reload(&shm, &r, &when, msg, sizeof(msg), &ok, &failed);
    ck_assert_int_eq(r, KS_RELOAD_NONE);
    ck_assert_int_eq(when, 0);
    ck_assert_uint_eq(ok, 0);
    ck_assert_uint_eq(failed, 0);
    ck_assert_str_eq(msg, "(reload record busy)");
    ks_shm_close(&shm);
}
END_TEST

START_TEST(table_check_catches_corruption)
{
    static char buf[4096];
    char err[128];
    size_t len = make_table(buf, sizeof(buf), 3, 2);
    ck_assert_int_eq(ks_table_check(buf, len, err, sizeof(err)), 0);
    struct ks_table *t = (struct ks_table *)buf;
    /* a string offset past the pool */
    uint32_t saved = ks_t_strlist(t)[1];
    ((uint32_t *)(buf + t->strlist_off))[1] = t->strings_len + 5;
    ck_assert_int_eq(ks_table_check(buf, len, err, sizeof(err)), -1);
    ((uint32_t *)(buf + t->strlist_off))[1] = saved;
    /* a count larger than the table */
    t->ntenants = 100000;
    ck_assert_int_eq(ks_table_check(buf, len, err, sizeof(err)), -1);
    t->ntenants = 1;
    /* a copy shorter than the table claims */
    ck_assert_int_eq(ks_table_check(buf, len - 1, err, sizeof(err)), -1);
    /* overflow while building is reported */
    struct ks_table_builder b;
    size_t room = sizeof(struct ks_table) + sizeof(struct ks_t_tenant) + 100;
    ck_assert_int_eq(ks_table_begin(&b, buf, room, 1, 0, 0, 0, 0), 0);
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ks_table_str(&b, big);
    ck_assert_uint_eq(ks_table_finish(&b), 0);
}
END_TEST

START_TEST(wrr_schedule)
{
    uint16_t out[KS_SCHEDULE_MAX];
    int w31[] = { 300, 100 };
    size_t n = ks_wrr_schedule(w31, 2, out, KS_SCHEDULE_MAX);
    ck_assert_uint_eq(n, 4);   /* reduced by the gcd */
    /* smooth: the heavy one is never three in a row twice over */
    int count[2] = { 0, 0 };
    for (size_t i = 0; i < n; i++)
        count[out[i]]++;
    ck_assert_int_eq(count[0], 3);
    ck_assert_int_eq(count[1], 1);
    ck_assert_uint_eq(ks_wrr_schedule(w31, 2, NULL, KS_SCHEDULE_MAX), 4);

    /* nginx's classic example: 5,1,1 -> a a b a c a a */
    int w511[] = { 5, 1, 1 };
    n = ks_wrr_schedule(w511, 3, out, KS_SCHEDULE_MAX);
    ck_assert_uint_eq(n, 7);
    const uint16_t want[] = { 0, 0, 1, 0, 2, 0, 0 };
    for (size_t i = 0; i < n; i++)
        ck_assert_uint_eq(out[i], want[i]);

    /* weight 0 (drain) never appears */
    int w0[] = { 0, 7 };
    n = ks_wrr_schedule(w0, 2, out, KS_SCHEDULE_MAX);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(out[0], 1);
    int none[] = { 0, 0 };
    ck_assert_uint_eq(ks_wrr_schedule(none, 2, out, KS_SCHEDULE_MAX), 0);

    /* co-prime large weights are scaled into the bound, proportions kept */
    int big[] = { 997, 499, 1 };
    n = ks_wrr_schedule(big, 3, out, KS_SCHEDULE_MAX);
    ck_assert_uint_le(n, KS_SCHEDULE_MAX);
    int c[3] = { 0, 0, 0 };
    for (size_t i = 0; i < n; i++)
        c[out[i]]++;
    ck_assert_int_ge(c[2], 1);
    ck_assert(abs(c[0] - 2 * c[1]) <= 3);
}
END_TEST

/* More weighted upstreams than KS_SCHEDULE_MAX: every one of them is in
 * the schedule, and the minimum of one position is never taken from an
 * upstream that has only that one. */
START_TEST(wrr_schedule_many)
{
    enum { N = 1030 };
    static int w[N];
    static uint16_t out[N + KS_SCHEDULE_MAX];
    int c[N];
    for (int i = 0; i < N; i++)
        w[i] = 1;
    size_t n = ks_wrr_schedule(w, N, out, KS_SCHEDULE_MAX);
    ck_assert_uint_eq(n, N);
    ck_assert_uint_eq(ks_wrr_schedule(w, N, NULL, KS_SCHEDULE_MAX), N);
    memset(c, 0, sizeof(c));
    for (size_t i = 0; i < n; i++)
        c[out[i]]++;
    for (int i = 0; i < N; i++)
        ck_assert_msg(c[i] == 1, "upstream %d appears %d times", i, c[i]);

    /* a few heavy ones among many light ones, the sum far over the bound:
     * every light one keeps its position, the heavy ones share the rest
     * by weight */
    for (int i = 0; i < N; i++)
        w[i] = i < 1000 ? 1 : i % 2 ? 1000 : 500;
    w[17] = 0;
    n = ks_wrr_schedule(w, N, out, KS_SCHEDULE_MAX);
    ck_assert_uint_eq(ks_wrr_schedule(w, N, NULL, KS_SCHEDULE_MAX), n);
    ck_assert_uint_eq(n, N - 1);
    memset(c, 0, sizeof(c));
    for (size_t i = 0; i < n; i++)
        c[out[i]]++;
    ck_assert_int_eq(c[17], 0);
    for (int i = 0; i < N; i++)
        ck_assert_msg(i == 17 || c[i] >= 1, "upstream %d (weight %d) is missing", i, w[i]);

    /* under the bound in count but not in weight: 1000 light ones and
     * two heavy ones get every light one once, the heavy ones 2:1 of
     * what is left */
    int v[1002];
    for (int i = 0; i < 1000; i++)
        v[i] = 1;
    v[1000] = 1000;
    v[1001] = 500;
    n = ks_wrr_schedule(v, 1002, out, KS_SCHEDULE_MAX);
    ck_assert_uint_eq(n, KS_SCHEDULE_MAX);
    memset(c, 0, sizeof(c));
    for (size_t i = 0; i < n; i++)
        c[out[i]]++;
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(c[i], 1);
    ck_assert_int_eq(c[1000], 16);
    ck_assert_int_eq(c[1001], 8);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shm");
    TCase *tc = tcase_create("shm");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, create_and_attach);
    tcase_add_test(tc, garbage_is_refused);
    tcase_add_test(tc, check_path);
    tcase_add_test(tc, publish_and_copy);
    tcase_add_test(tc, writer_races_reader);
    tcase_add_test(tc, slots_survive_and_sweep);
    tcase_add_test(tc, reload_record);
    tcase_add_test(tc, table_check_catches_corruption);
    tcase_add_test(tc, wrr_schedule);
    tcase_add_test(tc, wrr_schedule_many);
    tcase_add_test(tc, state_file_repair_and_recreate);
    tcase_add_test(tc, tmp_name_not_followed);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
