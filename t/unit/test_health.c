/*
 * test_health.c: master/health.c.
 *
 * The rise/fall state machine as a pure function, then the checker itself
 * against real loopback sockets: small fake upstreams served from this
 * process's own poll loop (answering, resetting, closing, staying silent),
 * with the health records in a real shared segment and the upstreams from
 * a real keystone.yaml.
 */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "master/config.h"
#include "master/health.h"
#include "master/publish.h"
#include "shm/shm.h"

/* ---- the state machine ----------------------------------------------------- */

#define UP KS_HEALTH_UP
#define DOWN KS_HEALTH_DOWN
#define UNKNOWN KS_HEALTH_UNKNOWN

/* Feed results ("+" ok, "-" failed) and return the final word. */
static uint64_t feed(uint64_t w, const char *results, int rise, int fall, int64_t t0,
                     int *changes)
{
    *changes = 0;
    for (const char *p = results; *p; p++) {
        bool changed;
        w = ks_health_step(w, *p == '+', rise, fall, t0 + (p - results), &changed);
        *changes += changed;
    }
    return w;
}

START_TEST(step_unknown)
{
    bool changed;
    uint64_t w = ks_health_step(0, true, 2, 3, 1000, &changed);
    ck_assert(changed);
    ck_assert_uint_eq(KS_HW_STATE(w), UP);     /* unknown takes traffic: one success confirms */
    ck_assert_uint_eq(KS_HW_COUNT(w), 0);
    ck_assert_int_eq(KS_HW_SINCE(w), 1000);

    w = ks_health_step(0, false, 2, 3, 1000, &changed);
    ck_assert(!changed);
    ck_assert_uint_eq(KS_HW_STATE(w), UNKNOWN);
    ck_assert_uint_eq(KS_HW_COUNT(w), 1);
    ck_assert_int_eq(KS_HW_SINCE(w), 0);

    int changes;
    w = feed(0, "--", 2, 3, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), UNKNOWN);
    w = feed(w, "-", 2, 3, 2000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);   /* fall failures from unknown */
    ck_assert_int_eq(changes, 1);
    ck_assert_int_eq(KS_HW_SINCE(w), 2000);

    /* failures then a success from unknown: up */
    w = feed(0, "--+", 2, 3, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), UP);
    ck_assert_uint_eq(KS_HW_COUNT(w), 0);
}
END_TEST

START_TEST(step_fall)
{
    int changes;
    uint64_t up = KS_HW_MAKE(UP, 0, 500);
    uint64_t w = feed(up, "--", 2, 3, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), UP);
    ck_assert_uint_eq(KS_HW_COUNT(w), 2);
    ck_assert_int_eq(KS_HW_SINCE(w), 500);     /* unchanged while the state holds */
    ck_assert_int_eq(changes, 0);
    w = feed(w, "-", 2, 3, 1002, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);
    ck_assert_uint_eq(KS_HW_COUNT(w), 0);
    ck_assert_int_eq(KS_HW_SINCE(w), 1002);
    ck_assert_int_eq(changes, 1);

    /* a success resets the count: failures must be in a row */
    w = feed(up, "--+--+--+", 2, 3, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), UP);
    ck_assert_uint_eq(KS_HW_COUNT(w), 0);
    ck_assert_int_eq(changes, 0);
    w = feed(up, "--+---", 2, 3, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);
    ck_assert_int_eq(changes, 1);
    ck_assert_int_eq(KS_HW_SINCE(w), 1005);

    /* fall 1: the first failure */
    w = feed(up, "-", 2, 1, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);
}
END_TEST

START_TEST(step_rise)
{
    int changes;
    uint64_t down = KS_HW_MAKE(DOWN, 0, 700);
    uint64_t w = feed(down, "+", 2, 3, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);
    ck_assert_uint_eq(KS_HW_COUNT(w), 1);
    w = feed(w, "+", 2, 3, 1001, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), UP);
    ck_assert_uint_eq(KS_HW_COUNT(w), 0);
    ck_assert_int_eq(KS_HW_SINCE(w), 1001);

    /* a failure resets the count */
    w = feed(down, "+-+-+-", 2, 3, 1000, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);
    ck_assert_uint_eq(KS_HW_COUNT(w), 0);
    ck_assert_int_eq(KS_HW_SINCE(w), 700);
    ck_assert_int_eq(changes, 0);

    /* flapping with rise 3 / fall 2: exactly the expected changes */
    w = feed(down, "+++--+++--", 3, 2, 0, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);
    ck_assert_int_eq(changes, 4);
}
END_TEST

START_TEST(step_limits)
{
    int changes;
    /* rise and fall of 100 (the maximum) count in the 8-bit field */
    char many[101];
    memset(many, '-', 99);
    many[99] = '\0';
    uint64_t w = feed(KS_HW_MAKE(UP, 0, 1), many, 100, 100, 10, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), UP);
    ck_assert_uint_eq(KS_HW_COUNT(w), 99);
    w = feed(w, "-", 100, 100, 10, &changes);
    ck_assert_uint_eq(KS_HW_STATE(w), DOWN);
    /* a large wall-clock time survives the packing */
    int64_t t = 4102444800;     /* 2100-01-01 */
    bool changed;
    w = ks_health_step(KS_HW_MAKE(DOWN, 0, 1), true, 1, 1, t, &changed);
    ck_assert_int_eq(KS_HW_SINCE(w), t);
    ck_assert_uint_eq(KS_HW_STATE(w), UP);
}
END_TEST

/* ---- fake upstreams ------------------------------------------------------------- */

enum behaviour {
    ANSWER,     /* read the request head, write `answer`, close */
    RESET,      /* read the request head, close with RST */
    CLOSE,      /* read the request head, close without answering */
    SILENT,     /* never accept: the kernel completes the handshake, nothing more */
};

struct fake {
    int fd;
    uint16_t port;
    enum behaviour b;
    const char *answer;
    int requests;               /* heads received */
    char last_head[1024];
};

#define MAX_FAKES 64
#define MAX_CONNS 128

struct fconn {
    int fd;
    struct fake *f;
    char buf[4096];
    size_t len;
};

static char dir[64], path[128], cfgpath[128];
static struct ks_shm shm;
static struct ks_config *cfg;
static struct ks_health_checker *hc;
static struct fake fakes[MAX_FAKES];
static int nfakes;
static struct fconn conns[MAX_CONNS];
static int nconns;
static char table[1 << 16];

static void setup(void)
{
    strcpy(dir, "/tmp/ks-test-health-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state", dir);
    snprintf(cfgpath, sizeof(cfgpath), "%s/keystone.yaml", dir);
    struct ks_shm_limits lim = { .max_workers = 2, .max_upstreams = 64, .max_tenants = 4,
                                 .route_table_size = sizeof(table) };
    char err[256];
    ck_assert_msg(ks_shm_create(&shm, path, &lim, cfgpath, "/nonexistent", err, sizeof(err)) == 0,
                  "%s", err);
    hc = ks_health_new(&shm, err, sizeof(err));
    ck_assert_msg(hc != NULL, "%s", err);
    nfakes = nconns = 0;
    cfg = NULL;
    ks_log_set_level(KS_LOG_WARN);
}

static void teardown(void)
{
    ks_health_free(hc, false);
    ks_config_free(cfg);
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);
    for (int i = 0; i < nfakes; i++)
        if (fakes[i].fd >= 0)
            close(fakes[i].fd);
    ks_shm_close(&shm);
    unlink(path);
    unlink(cfgpath);
    rmdir(dir);
}

static struct fake *fake(enum behaviour b, const char *answer)
{
    ck_assert_int_lt(nfakes, MAX_FAKES);
    struct fake *f = &fakes[nfakes++];
    *f = (struct fake){ .b = b, .answer = answer };
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(f->fd, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(f->fd, 64), 0);
    socklen_t len = sizeof(a);
    getsockname(f->fd, (struct sockaddr *)&a, &len);
    f->port = ntohs(a.sin_port);
    return f;
}

/* A port nobody listens on (bound once, then closed). */
static uint16_t dead_port(void)
{
    struct fake *f = fake(SILENT, NULL);
    close(f->fd);
    f->fd = -1;
    return f->port;
}

static void serve_conn(int i)
{
    struct fconn *c = &conns[i];
    ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    bool done = n <= 0;
    if (n > 0) {
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        if (strstr(c->buf, "\r\n\r\n") != NULL) {
            struct fake *f = c->f;
            f->requests++;
            ks_strlcpy(f->last_head, c->buf, sizeof(f->last_head));
            if (f->b == ANSWER) {
                ssize_t w = write(c->fd, f->answer, strlen(f->answer));
                (void)w;
            } else if (f->b == RESET) {
                struct linger lg = { .l_onoff = 1, .l_linger = 0 };
                setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            }
            done = true;
        }
    }
    if (done) {
        close(c->fd);
        conns[i] = conns[--nconns];
    }
}

/* Run the checker and the fakes for up to ms, or until until() is true. */
static void drive(int64_t ms, bool (*until)(void))
{
    int64_t deadline = ks_now_ms() + ms;
    while (ks_now_ms() < deadline && !(until != NULL && until())) {
        struct pollfd pfd[1 + MAX_FAKES + MAX_CONNS];
        int n = 0, fake_of[MAX_FAKES];
        pfd[n++] = (struct pollfd){ .fd = ks_health_fd(hc), .events = POLLIN };
        for (int i = 0; i < nfakes; i++)
            if (fakes[i].fd >= 0 && fakes[i].b != SILENT) {
                fake_of[n - 1] = i;
                pfd[n++] = (struct pollfd){ .fd = fakes[i].fd, .events = POLLIN };
            }
        int nl = n;
        for (int i = 0; i < nconns; i++)
            pfd[n++] = (struct pollfd){ .fd = conns[i].fd, .events = POLLIN };
        int t = ks_health_timeout(hc, ks_now_ms());
        if (t < 0 || t > 20)
            t = 20;
        poll(pfd, (nfds_t)n, t);
        for (int i = n - 1; i >= nl; i--)
            if (pfd[i].revents)
                serve_conn(i - nl);
        for (int i = 1; i < nl; i++) {
            if (!pfd[i].revents)
                continue;
            int fd = accept4(fakes[fake_of[i - 1]].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0 && nconns < MAX_CONNS)
                conns[nconns++] = (struct fconn){ .fd = fd, .f = &fakes[fake_of[i - 1]] };
            else if (fd >= 0)
                close(fd);
        }
        ks_health_run(hc);
    }
}

/* Load yaml (upstreams written by the caller), assign records as a
 * publish does, and hand it to the checker. */
static void configure(const char *upstreams_yaml, const char *defaults)
{
    FILE *f = fopen(cfgpath, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "server:\n  public_addr: 127.0.0.1:1\nhealth_defaults:\n%s\ntenants:\n"
               "  - name: api\n    upstreams:\n%s", defaults, upstreams_yaml);
    fclose(f);
    struct ks_diag diag = { 0 };
    struct ks_config *next = ks_config_load(cfgpath, &diag);
    ck_assert_msg(next != NULL, "config: %s", diag.n ? diag.msgs[0] : "?");
    ks_diag_free(&diag);
    char err[256];
    ck_assert_msg(ks_publish_build(next, &shm, table, sizeof(table), err, sizeof(err)) > 0, "%s", err);
    ks_publish_sweep(next, &shm);
    ck_assert_int_eq(ks_health_configure(hc, next), 0);
    ks_config_free(cfg);
    cfg = next;
}

static struct ks_health *rec(const char *name)
{
    const struct ks_upstream_config *u = ks_tenant_upstream(ks_config_tenant(cfg, "api"), name);
    ck_assert_ptr_nonnull(u);
    int slot = ks_shm_health_slot(&shm, u->id);
    ck_assert_int_ge(slot, 0);
    return ks_shm_health(&shm, (uint32_t)slot);
}

static unsigned state_of(const char *name)
{
    return KS_HW_STATE(atomic_load(&rec(name)->word));
}

static const char *const all_names[] = { "ok", "teapot", "garbage", "reset", "closed", "refused",
                                         "silent", "tcp", "interim", NULL };
static bool all_checked(void)
{
    for (int i = 0; all_names[i] != NULL; i++)
        if (atomic_load(&rec(all_names[i])->checked) == 0)
            return false;
    return true;
}

#define LINE(name, port, extra)                                                              \
    snprintf(y + strlen(y), sizeof(y) - strlen(y),                                           \
             "      - { name: %s, url: \"http://127.0.0.1:%u\"%s }\n", name, (unsigned)(port), extra)

START_TEST(probe_reasons)
{
    struct fake *ok = fake(ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    struct fake *teapot = fake(ANSWER, "HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n");
    struct fake *garbage = fake(ANSWER, "GARBAGE\x01 not http\r\n\r\n");
    struct fake *reset = fake(RESET, NULL);
    struct fake *closed = fake(CLOSE, NULL);
    uint16_t refused = dead_port();
    struct fake *silent = fake(SILENT, NULL);
    struct fake *interim = fake(ANSWER, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    char y[4096] = "";
    LINE("ok", ok->port, ", health_path: /healthz");
    LINE("teapot", teapot->port, ", health_path: /h");
    LINE("garbage", garbage->port, ", health_path: /h");
    LINE("reset", reset->port, ", health_path: /h");
    LINE("closed", closed->port, ", health_path: /h");
    LINE("refused", refused, ", health_path: /h");
    LINE("silent", silent->port, ", health_path: /h");
    LINE("tcp", silent->port, "");     /* a TCP check only needs the handshake */
    LINE("interim", interim->port, ", health_path: /h, health_expect: \"2xx\"");
    configure(y, "  interval: 2s\n  timeout: 300ms\n  host: probe.example\n");
    drive(5000, all_checked);
    ck_assert_msg(all_checked(), "every upstream checked once");

    ck_assert_uint_eq(state_of("ok"), UP);
    ck_assert_uint_eq(atomic_load(&rec("ok")->last_reason), KS_HR_NONE);
    ck_assert_uint_eq(atomic_load(&rec("ok")->last_status), 200);
    ck_assert_uint_eq(atomic_load(&rec("ok")->checks_ok), 1);
    ck_assert_int_gt(atomic_load(&rec("ok")->last_check_wall_ms), 0);
    /* the request: path, Host (health_host), Connection: close */
    ck_assert_msg(strncmp(ok->last_head, "GET /healthz HTTP/1.1\r\n", 23) == 0, "%s", ok->last_head);
    ck_assert_ptr_nonnull(strstr(ok->last_head, "\r\nHost: probe.example\r\n"));
    ck_assert_ptr_nonnull(strstr(ok->last_head, "\r\nConnection: close\r\n"));

    ck_assert_uint_eq(atomic_load(&rec("teapot")->last_reason), KS_HR_BAD_STATUS);
    ck_assert_uint_eq(atomic_load(&rec("teapot")->last_status), 418);
    ck_assert_uint_eq(atomic_load(&rec("teapot")->checks_failed), 1);
    ck_assert_uint_eq(state_of("teapot"), UNKNOWN);  /* 1 of fall 3 */
    ck_assert_uint_eq(KS_HW_COUNT(atomic_load(&rec("teapot")->word)), 1);
    ck_assert_uint_eq(atomic_load(&rec("garbage")->last_reason), KS_HR_BAD_RESPONSE);
    ck_assert_uint_eq(atomic_load(&rec("reset")->last_reason), KS_HR_RESET);
    ck_assert_uint_eq(atomic_load(&rec("closed")->last_reason), KS_HR_RESET);
    ck_assert_uint_eq(atomic_load(&rec("refused")->last_reason), KS_HR_CONNECT_REFUSED);
    ck_assert_uint_eq(atomic_load(&rec("silent")->last_reason), KS_HR_READ_TIMEOUT);
    ck_assert_uint_ge(atomic_load(&rec("silent")->last_latency_us), 300000);
    ck_assert_uint_eq(atomic_load(&rec("tcp")->last_reason), KS_HR_NONE);
    ck_assert_uint_eq(state_of("tcp"), UP);
    ck_assert_uint_eq(atomic_load(&rec("interim")->last_status), 204);
    ck_assert_uint_eq(state_of("interim"), UP);
    ck_assert_uint_eq(ks_health_inflight(hc), 0);
}
END_TEST

static struct fake *flip;
static bool flip_down(void)
{
    return state_of("flip") == DOWN;
}
static bool flip_up(void)
{
    return state_of("flip") == UP;
}

START_TEST(rise_and_fall)
{
    flip = fake(ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    char y[512] = "";
    LINE("flip", flip->port, ", health_path: /h, rise: 2, fall: 3");
    configure(y, "  interval: 100ms\n  timeout: 50ms\n");
    drive(3000, flip_up);
    ck_assert_uint_eq(state_of("flip"), UP);
    uint64_t ok0 = atomic_load(&rec("flip")->checks_ok);

    flip->answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    drive(5000, flip_down);
    ck_assert_uint_eq(state_of("flip"), DOWN);
    /* exactly fall failed probes took it down, and it is seen at once */
    ck_assert_uint_eq(atomic_load(&rec("flip")->checks_failed), 3);
    ck_assert_uint_eq(atomic_load(&rec("flip")->last_status), 503);
    ck_assert_uint_eq(atomic_load(&rec("flip")->checks_ok), ok0);
    int64_t since = KS_HW_SINCE(atomic_load(&rec("flip")->word));
    ck_assert_int_gt(since, 0);

    flip->answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    drive(5000, flip_up);
    ck_assert_uint_eq(state_of("flip"), UP);
    ck_assert_uint_eq(atomic_load(&rec("flip")->checks_ok), ok0 + 2);   /* rise */
    ck_assert_uint_eq(atomic_load(&rec("flip")->last_reason), KS_HR_NONE);
}
END_TEST

/* the first probes of the hangers start within 500 ms; 8 of the fast one
 * take at least 800 ms */
static bool fast_checked_often(void)
{
    return atomic_load(&rec("fast")->checks_ok) >= 6;
}
static bool hangers_done(void)
{
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof(name), "hang%d", i);
        if (atomic_load(&rec(name)->checked) == 0)
            return false;
    }
    return true;
}

/* Many probes in flight at once; the silent ones time out without holding
 * up anything else. */
START_TEST(hanging_probes_do_not_block)
{
    struct fake *silent = fake(SILENT, NULL);
    struct fake *fast = fake(ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    char y[8192] = "";
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof(name), "hang%d", i);
        LINE(name, silent->port, ", health_path: /h, health_interval: 10s, health_timeout: 5s");
    }
    /* the fast probe's timeout leaves room for a loaded machine: what is
     * tested is that it keeps completing while the 40 others hang */
    LINE("fast", fast->port, ", health_path: /h, health_interval: 300ms, health_timeout: 250ms");
    configure(y, "  interval: 10s\n");
    drive(4500, fast_checked_often);
    ck_assert(fast_checked_often());
    /* the silent probes were all started and are all still waiting */
    ck_assert_uint_eq(ks_health_inflight(hc) >= 40, 1);
    ck_assert_uint_eq(atomic_load(&rec("hang0")->checked), 0);
    drive(9000, hangers_done);
    ck_assert(hangers_done());
    ck_assert_uint_eq(atomic_load(&rec("hang7")->last_reason), KS_HR_READ_TIMEOUT);
}
END_TEST

static bool a_checked_gone_waiting(void)
{
    return atomic_load(&rec("a")->checked) != 0 && ks_health_inflight(hc) == 1;
}

static bool b_checked(void)
{
    return atomic_load(&rec("b")->checked) != 0;
}

/* A reload keeps the state of unchanged upstreams, probes new ones and
 * drops removed ones (closing their probes in flight). */
START_TEST(reconfigure_keeps_state)
{
    struct fake *up = fake(ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    struct fake *silent = fake(SILENT, NULL);
    char y[1024] = "";
    LINE("a", up->port, ", health_path: /h");
    LINE("gone", silent->port, ", health_path: /h, health_timeout: 5s");
    configure(y, "  interval: 10s\n");
    drive(3000, a_checked_gone_waiting);
    ck_assert_uint_eq(state_of("a"), UP);
    ck_assert_uint_eq(atomic_load(&rec("a")->checks_ok), 1);
    ck_assert_uint_eq(ks_health_inflight(hc), 1);      /* "gone" waits for its timeout */
    uint64_t word = atomic_load(&rec("a")->word);
    int requests = up->requests;

    y[0] = '\0';
    LINE("a", up->port, ", health_path: /h");
    LINE("b", up->port, ", health_path: /h");
    configure(y, "  interval: 10s\n");
    ck_assert_uint_eq(ks_health_inflight(hc), 0);      /* the probe of "gone" was closed */
    drive(3000, b_checked);
    ck_assert(b_checked());
    ck_assert_uint_eq(state_of("b"), UP);
    /* "a" kept its state word and was not probed again: its interval is 10s */
    ck_assert_uint_eq(atomic_load(&rec("a")->word), word);
    ck_assert_uint_eq(atomic_load(&rec("a")->checks_ok), 1);
    ck_assert_int_eq(up->requests, requests + 1);       /* only b's probe */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("health");
    TCase *tc = tcase_create("state machine");
    tcase_add_test(tc, step_unknown);
    tcase_add_test(tc, step_fall);
    tcase_add_test(tc, step_rise);
    tcase_add_test(tc, step_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("checker");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, probe_reasons);
    tcase_add_test(tc, rise_and_fall);
    tcase_add_test(tc, hanging_probes_do_not_block);
    tcase_add_test(tc, reconfigure_keeps_state);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
