/*
 * test_proxy.c: the exchange contract of ks_proxy_forward() (what the Lua
 * engine relies on and no configuration can reach): header edits,
 * upstream_path, a forced upstream, timeout_ms, a body read whole with
 * ks_body_read_all(), and on_response.  A real shared segment, a
 * socketpair for the client and a forked upstream process that records
 * what it received.  Also ks_conn_splice_from(), the path of large
 * response bodies, over loopback TCP (which is what splice(2) serves).
 */
#include <config.h>

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "shm/shm.h"
#include "shm/table.h"
#include "worker/body.h"
#include "worker/conn.h"
#include "worker/exchange.h"
#include "worker/proxy.h"

static char dir[64];
static struct ks_shm shm;
static char table_buf[65536];
static struct ks_worker worker;
static struct ks_header headers[32];
static char conn_buf[65536];
static struct ks_conn conn;
static int client = -1;
static int lfd[2] = { -1, -1 };
static uint16_t lport[2];

static void listen_on(int i)
{
    lfd[i] = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(lfd[i], (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(lfd[i], 8), 0);
    socklen_t len = sizeof(a);
    getsockname(lfd[i], (struct sockaddr *)&a, &len);
    lport[i] = ntohs(a.sin_port);
}

static void setup(void)
{
    strcpy(dir, "/tmp/ks-test-proxy-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/state", dir);
    struct ks_shm_limits lim = { .max_workers = 2, .max_upstreams = 4, .max_tenants = 2,
                                 .route_table_size = 65536 };
    ck_assert_msg(ks_shm_create(&shm, path, &lim, "/k.yaml", "/k.sock", err, sizeof(err)) == 0, "%s", err);
    listen_on(0);
    listen_on(1);

    struct ks_table_builder b;
    ck_assert_int_eq(ks_table_begin(&b, table_buf, sizeof(table_buf), 1, 2, 0, 0, 2), 0);
    struct ks_t_settings *s = &b.t->settings;
    s->access_log = ks_table_str(&b, "off");
    s->read_header_timeout_ms = s->read_body_timeout_ms = s->send_timeout_ms = 2000;
    s->idle_timeout_ms = 2000;
    s->max_headers = 32;
    s->max_request_line = 1024;
    s->max_header_bytes = 4096;
    s->max_body_bytes = 1 << 20;
    s->max_response_header_bytes = 8192;
    strcpy(s->via_name, "keystoned-0badcafe");
    struct ks_t_tenant *tn = ks_table_tenant(&b, 0);
    tn->name = ks_table_str(&b, "t");
    tn->base_path = ks_table_str(&b, "/");
    tn->flags = KS_TF_PRESERVE_HOST;
    tn->upstreams = 0;
    tn->nupstreams = 2;
    tn->schedule = 0;
    tn->nschedule = 2;
    tn->stats_slot = (uint32_t)ks_shm_tenant_slot(&shm, 1);
    uint16_t *sched = ks_table_schedule(&b);
    sched[0] = 0;
    sched[1] = 1;
    for (uint32_t i = 0; i < 2; i++) {
        struct ks_t_upstream *u = ks_table_upstream(&b, i);
        char url[64], name[8];
        snprintf(url, sizeof(url), "127.0.0.1:%u", lport[i]);
        snprintf(name, sizeof(name), "u%u", i);
        ck_assert_int_eq(ks_parse_addr(url, &u->addr, err, sizeof(err)), 0);
        u->id = 100 + i;
        u->tenant = 0;
        u->name = ks_table_str(&b, name);
        u->hostport = ks_table_str(&b, url);
        u->url = u->hostport;
        u->health_slot = (uint32_t)ks_shm_health_slot(&shm, u->id);
        u->weight = 1;
        u->keepalive = 0;
        u->connect_timeout_ms = 1000;
        u->response_timeout_ms = 2000;
        u->idle_timeout_ms = 2000;
        u->pool_idle_ms = 1000;
    }
    ck_assert_uint_gt(ks_table_finish(&b), 0);

    memset(&worker, 0, sizeof(worker));
    worker.shm = &shm;
    worker.score = ks_shm_score(&shm, 0);
    worker.table = (struct ks_table *)table_buf;
    worker.access_log_fd = -1;
    worker.answer_fd = -1;
    ck_assert_int_eq(ks_proxy_sync(&worker), 0);

    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    client = sv[1];
    memset(&conn, 0, sizeof(conn));
    conn.fd = sv[0];
    conn.w = &worker;
    conn.buf = conn_buf;
    conn.cap = sizeof(conn_buf);
    strcpy(conn.client_ip, "192.0.2.9");
}

static void teardown(void)
{
    ks_proxy_free(&worker);
    ks_sock_free(&worker);
    close(conn.fd);
    close(client);
    close(lfd[0]);
    close(lfd[1]);
    ks_shm_close(&shm);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* ---- the upstream: a child that records one request and answers ------- */

struct upstream {
    pid_t pid;
    int record;             /* read end: what the child received */
};

static void child_serve(int l, int out, const char *response, int delay_ms)
{
    int fd = accept(l, NULL, NULL);
    if (fd < 0)
        _exit(1);
    char buf[16384];
    size_t len = 0;
    /* the head, then as many body bytes as it announces (Content-Length
     * only: the tests send nothing else upstream) */
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (end == NULL)
            continue;
        size_t head = (size_t)(end + 4 - buf);
        char *cl = memmem(buf, head, "Content-Length: ", 16);
        size_t want = cl ? (size_t)atol(cl + 16) : 0;
        if (len >= head + want)
            break;
    }
    if (write(out, buf, len) != (ssize_t)len)
        _exit(1);
    close(out);
    if (delay_ms > 0)
        usleep((useconds_t)delay_ms * 1000);
    if (write(fd, response, strlen(response)) < 0)
        _exit(1);
    shutdown(fd, SHUT_WR);
    char sink[256];
    while (read(fd, sink, sizeof(sink)) > 0)
        ;
    _exit(0);
}

static struct upstream upstream(int i, const char *response, int delay_ms)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* not check's handler, which signals the whole process group */
        signal(SIGTERM, SIG_DFL);
        close(p[0]);
        child_serve(lfd[i], p[1], response, delay_ms);
    }
    close(p[1]);
    return (struct upstream){ .pid = pid, .record = p[0] };
}

/* What the upstream received (after the exchange). */
static const char *received(struct upstream *u)
{
    static char buf[16384];
    size_t len = 0;
    ssize_t n;
    struct pollfd p = { .fd = u->record, .events = POLLIN };
    while (poll(&p, 1, 3000) > 0 && (n = read(u->record, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(u->record);
    kill(u->pid, SIGKILL);
    waitpid(u->pid, NULL, 0);
    return buf;
}

/* What the client received. */
/* What the client got, with the Date lines (which say when) taken out
 * and counted in answer_dates, so that the rest compares exactly. */
static int answer_dates;

static const char *answer(void)
{
    static char buf[16384];
    size_t len = 0;
    ssize_t n;
    while ((n = read(client, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    answer_dates = 0;
    char *d;
    while ((d = strstr(buf, "\r\nDate: ")) != NULL) {
        char *end = strstr(d + 2, "\r\n");
        ck_assert_ptr_nonnull(end);
        memmove(d, end, strlen(end) + 1);
        answer_dates++;
    }
    return buf;
}

static struct ks_request req;
static struct ks_body body;
static char acc[4096];

/* The exchange for a request the client sent. */
static struct ks_exchange exchange(const char *bytes)
{
    ck_assert_int_eq(write(client, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
    int status;
    ck_assert_int_eq(ks_http_read_head(&conn, &req, headers, ks_now_ms() + 1000, &status), KS_HEAD_OK);
    strcpy(req.id, "rid");
    req.id_len = 3;
    ks_body_init(&body, &conn, &req, acc, sizeof(acc));
    return (struct ks_exchange){ .w = &worker, .c = &conn, .r = &req, .tenant = 0,
                                 .upstream = KS_NONE, .in = &body, .close = true };
}

static const char ok_response[] = "HTTP/1.1 200 OK\r\nX-Up: 1\r\nContent-Length: 2\r\n\r\nok";

START_TEST(test_edits_and_path)
{
    struct upstream u = upstream(0, ok_response, 0);
    struct ks_exchange x = exchange("GET /orig?q=1 HTTP/1.1\r\nHost: front\r\nUser-Agent: t\r\n"
                                    "X-Keep: k\r\nX-Twice: old\r\n\r\n");
    struct ks_header_edit e[] = {
        { "X-Added", 7, "1", 1, false },
        { "user-agent", 10, NULL, 0, false },          /* delete */
        { "X-Twice", 7, "first", 5, false },
        { "x-twice", 7, "second", 6, false },          /* the last edit of a name wins */
        { "X-Gone", 6, "v", 1, false },
        { "X-Gone", 6, NULL, 0, false },               /* set, then deleted */
        { "X-Forwarded-Proto", 17, "https", 5, false }, /* ours can be overridden */
        { "X-Evil", 6, "a\r\nInjected: 1", 15, false }, /* never a second line */
        { "Content-Length", 14, "99", 2, false },      /* framing is ours */
        { "Host", 4, "rewritten.example", 17, false },
        { "X-List", 6, "one", 3, false },
        { "X-List", 6, "two", 3, true },               /* a list: both lines */
    };
    x.edits = e;
    x.nedits = KS_ARRAY_LEN(e);
    x.upstream = 0;                                    /* also: first upstream forced */
    x.upstream_path = "/new/path?x=2";
    x.upstream_path_len = 13;
    ck_assert_int_eq(ks_proxy_forward(&x), -1);        /* x.close was set */
    ck_assert_str_eq(received(&u),
                     "GET /new/path?x=2 HTTP/1.1\r\n"
                     "Host: rewritten.example\r\n"
                     "X-Keep: k\r\n"
                     "X-Forwarded-For: 192.0.2.9\r\n"
                     "X-Forwarded-Host: front\r\n"
                     "X-Request-ID: rid\r\n"
                     "X-Added: 1\r\n"
                     "x-twice: second\r\n"
                     "X-Forwarded-Proto: https\r\n"
                     "X-List: one\r\n"
                     "X-List: two\r\n"
                     "Via: 1.1 keystoned-0badcafe\r\n"
                     "Connection: close\r\n\r\n");
    const char *a = answer();
    ck_assert_msg(strcmp(a, "HTTP/1.1 200 OK\r\nX-Up: 1\r\nX-Request-ID: rid\r\nContent-Length: 2\r\n"
                            "Connection: close\r\n\r\nok") == 0, "%s", a);
    ck_assert_int_eq(answer_dates, 1);     /* the upstream sent none: ours */
    ck_assert_int_eq(x.status, 200);
    ck_assert_int_eq(x.upstream_status, 200);
    ck_assert_str_eq(x.upstream_name, "u0");
}
END_TEST

START_TEST(test_forced_upstream)
{
    struct upstream u = upstream(1, ok_response, 0);
    struct ks_exchange x = exchange("GET /f HTTP/1.1\r\nHost: h\r\n\r\n");
    x.upstream = 1;
    ks_proxy_forward(&x);
    ck_assert(strncmp(received(&u), "GET /f HTTP/1.1\r\n", 17) == 0);
    ck_assert_str_eq(x.upstream_name, "u1");
    ck_assert_int_eq(x.status, 200);
}
END_TEST

START_TEST(test_body_read_whole)
{
    struct upstream u = upstream(0, ok_response, 0);
    struct ks_exchange x = exchange("POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    "4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n");
    ck_assert_int_eq(ks_body_read_all(&x, 100), 0);
    ck_assert(x.body_read);
    ck_assert_uint_eq(x.body_len, 9);
    ck_assert(memcmp(x.body, "wikipedia", 9) == 0);
    ck_assert_int_eq(ks_body_read_all(&x, 100), 0);    /* again: the same body */
    ck_assert_uint_eq(x.body_len, 9);
    x.upstream = 0;
    ks_proxy_forward(&x);
    const char *got = received(&u);
    ck_assert_ptr_nonnull(strstr(got, "\r\nContent-Length: 9\r\n"));
    ck_assert_ptr_null(strstr(got, "Transfer-Encoding"));
    ck_assert_str_eq(strstr(got, "\r\n\r\n"), "\r\n\r\nwikipedia");
}
END_TEST

START_TEST(test_body_read_whole_limits)
{
    struct ks_exchange x = exchange("POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
    ck_assert_int_eq(ks_body_read_all(&x, 9), -1);
    ck_assert_int_eq(x.status, 413);
    ck_assert(!x.body_read);
}
END_TEST

START_TEST(test_body_read_whole_chunked_limit)
{
    struct ks_exchange y = exchange("POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");
    ck_assert_int_eq(ks_body_read_all(&y, 8), -1);
    ck_assert_int_eq(y.status, 413);
}
END_TEST

START_TEST(test_body_read_whole_none)
{
    struct ks_exchange z = exchange("GET /none HTTP/1.1\r\nHost: h\r\n\r\n");
    ck_assert_int_eq(ks_body_read_all(&z, 8), 0);
    ck_assert(z.body_read);
    ck_assert_uint_eq(z.body_len, 0);
}
END_TEST

START_TEST(test_body_read_whole_timeout)
{
    worker.table->settings.read_body_timeout_ms = 200;
    struct ks_exchange x = exchange("POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n012");
    ck_assert_int_eq(ks_body_read_all(&x, 100), -1);
    ck_assert_int_eq(x.status, 408);
}
END_TEST

static int hook_calls;

static int hook(struct ks_exchange *x, struct ks_response_head *h)
{
    (void)x;
    hook_calls++;
    ck_assert_int_eq(h->status, 200);
    ck_assert_uint_eq(h->nheaders, 2);
    ck_assert(h->max_edits >= 2);
    h->status = 201;
    h->edits[h->nedits++] = (struct ks_header_edit){ "X-Hook", 6, "yes", 3, false };
    h->edits[h->nedits++] = (struct ks_header_edit){ "X-Up", 4, NULL, 0, false };
    return 0;
}

static int failing_hook(struct ks_exchange *x, struct ks_response_head *h)
{
    (void)x;
    (void)h;
    return -1;
}

START_TEST(test_on_response)
{
    struct upstream u = upstream(0, ok_response, 0);
    struct ks_exchange x = exchange("GET /h HTTP/1.1\r\nHost: h\r\n\r\n");
    x.upstream = 0;
    x.on_response = hook;
    hook_calls = 0;
    ks_proxy_forward(&x);
    received(&u);
    ck_assert_int_eq(hook_calls, 1);
    const char *a = answer();
    ck_assert_msg(strcmp(a, "HTTP/1.1 201 Created\r\nX-Hook: yes\r\nX-Request-ID: rid\r\n"
                            "Content-Length: 2\r\nConnection: close\r\n\r\nok") == 0, "%s", a);
    ck_assert_int_eq(x.status, 201);
    ck_assert_int_eq(x.upstream_status, 200);
}
END_TEST

static int no_content_hook(struct ks_exchange *x, struct ks_response_head *h)
{
    (void)x;
    h->status = 204;
    return 0;
}

static int silly_hook(struct ks_exchange *x, struct ks_response_head *h)
{
    (void)x;
    h->status = 100;
    return 0;
}

START_TEST(test_on_response_no_body)
{
    struct upstream u = upstream(0, ok_response, 0);
    struct ks_exchange x = exchange("GET /h HTTP/1.1\r\nHost: h\r\n\r\n");
    x.upstream = 0;
    x.on_response = no_content_hook;
    ks_proxy_forward(&x);
    received(&u);
    const char *a = answer();
    ck_assert_msg(strcmp(a, "HTTP/1.1 204 No Content\r\nX-Up: 1\r\nX-Request-ID: rid\r\n"
                            "Connection: close\r\n\r\n") == 0, "%s", a);
}
END_TEST

START_TEST(test_on_response_bad_status)
{
    struct upstream u = upstream(0, ok_response, 0);
    struct ks_exchange x = exchange("GET /h HTTP/1.1\r\nHost: h\r\n\r\n");
    x.upstream = 0;
    x.on_response = silly_hook;
    ks_proxy_forward(&x);
    received(&u);
    ck_assert_int_eq(x.status, 500);
    ck_assert(strncmp(answer(), "HTTP/1.1 500 ", 13) == 0);
}
END_TEST

START_TEST(test_on_response_fails)
{
    struct upstream u = upstream(0, ok_response, 0);
    struct ks_exchange x = exchange("GET /h HTTP/1.1\r\nHost: h\r\n\r\n");
    x.upstream = 0;
    x.on_response = failing_hook;
    ks_proxy_forward(&x);
    received(&u);
    ck_assert_int_eq(x.status, 500);
    const char *a = answer();
    ck_assert_msg(strncmp(a, "HTTP/1.1 500 ", 13) == 0, "%s", a);
    ck_assert_ptr_nonnull(strstr(a, "\"request_id\":\"rid\""));
}
END_TEST

START_TEST(test_timeout_override)
{
    struct upstream u = upstream(0, ok_response, 1500);
    struct ks_exchange x = exchange("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    x.upstream = 0;
    x.timeout_ms = 150;
    int64_t t0 = ks_now_ms();
    ks_proxy_forward(&x);
    int64_t took = ks_now_ms() - t0;
    ck_assert_int_eq(x.status, 504);
    ck_assert_int_lt(took, 1200);
    ck_assert_int_ge(took, 140);
    received(&u);
}
END_TEST


/* ---- ks_conn_splice_from ------------------------------------------------- */

/* A connected loopback TCP pair from listener 0: *ours is registered as
 * the worker's blocking sockets are. */
static void tcp_pair(int *ours, int *peer)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(lport[0]) };
    *peer = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(*peer, (struct sockaddr *)&a, sizeof(a)), 0);
    *ours = accept(lfd[0], NULL, NULL);
    ck_assert_int_ge(*ours, 0);
    ck_assert_int_eq(ks_sock_blocking(&worker, *ours, false, false), 0);
}

static void pattern(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + i * 7 % 26);
}

/* Everything the upstream sends is in our receive queue before the call,
 * so that the call never waits and the deadlines only choose the path. */
static void queue_from(int peer, int ours, const char *data, size_t n)
{
    ck_assert_int_eq(write(peer, data, n), (ssize_t)n);
    int queued = 0;
    for (int i = 0; i < 2000 && queued < (int)n; i++) {
        ck_assert_int_eq(ioctl(ours, FIONREAD, &queued), 0);
        if (queued < (int)n)
            poll(NULL, 0, 1);
    }
    ck_assert_int_eq(queued, (int)n);
}

static void read_exactly(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ck_assert_int_eq(poll(&p, 1, 2000), 1);
        ssize_t k = read(fd, buf + got, n - got);
        ck_assert_int_gt(k, 0);
        got += (size_t)k;
    }
}

/* An upstream socket (in, its peer writes), a client socket (out, its
 * peer reads) and the pipe between them. */
struct rig {
    int in, in_peer, out, out_peer, pipe_fd[2];
    struct ks_conn c;
};

static void rig_open(struct rig *g)
{
    tcp_pair(&g->in, &g->in_peer);
    tcp_pair(&g->out, &g->out_peer);
    ck_assert_int_eq(pipe2(g->pipe_fd, O_CLOEXEC | O_NONBLOCK), 0);
    g->c = (struct ks_conn){ .fd = g->out, .w = &worker };
}

static void rig_close(struct rig *g)
{
    int *fds[] = { &g->in, &g->in_peer, &g->out, &g->out_peer, &g->pipe_fd[0], &g->pipe_fd[1] };
    for (size_t i = 0; i < KS_ARRAY_LEN(fds); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
}

/* The n bytes of data came out at the far end, and the pipe is empty. */
static void arrived_intact(struct rig *g, const char *data, size_t n)
{
    static char got[64 * 1024];
    ck_assert_uint_le(n, sizeof(got));
    memset(got, 0, n);
    read_exactly(g->out_peer, got, n);
    ck_assert(memcmp(got, data, n) == 0);
    int left = -1;
    ck_assert_int_eq(ioctl(g->pipe_fd[0], FIONREAD, &left), 0);
    ck_assert_int_eq(left, 0);
}

/* The two through tests: THROUGH_N bytes each way, once with long
 * timeouts and once with short ones; through_buf is the callee's
 * last-stretch buffer. */
static const int64_t through_timeouts[] = { 2000, 15 };
enum { THROUGH_N = 48 * 1024 };
static char through_data[THROUGH_N], through_buf[16384];

static void through_rig(struct rig *g)
{
    pattern(through_data, THROUGH_N);
    rig_open(g);
}

/* Through the pipe with splice() (long timeouts), then with timeouts so
 * short that every read polls first and every write goes through the
 * buffer instead (the last stretch before a deadline). */
START_TEST(test_splice_through)
{
    struct rig g;
    through_rig(&g);
    for (size_t i = 0; i < KS_ARRAY_LEN(through_timeouts); i++) {
        queue_from(g.in_peer, g.in, through_data, THROUGH_N);
        bool in_failed = true;
        uint64_t before = g.c.bytes_out;
        int64_t ms = through_timeouts[i];
        ck_assert_int_eq(ks_conn_splice_from(&g.c, g.in, g.pipe_fd, THROUGH_N, ms, ms, through_buf,
                                             sizeof(through_buf), &in_failed), KS_IO_OK);
        ck_assert(!in_failed);
        ck_assert_uint_eq(g.c.bytes_out - before, THROUGH_N);
        arrived_intact(&g, through_data, THROUGH_N);
    }
    rig_close(&g);
}
END_TEST

/* The other way (ks_conn_splice_to, uploads): from the client (here the
 * rig's in) to the upstream (out), in rounds, on both paths as above;
 * counted as the client's input. */
START_TEST(test_splice_to_through)
{
    struct rig g;
    through_rig(&g);
    g.c.fd = g.in;
    for (size_t i = 0; i < KS_ARRAY_LEN(through_timeouts); i++) {
        int64_t ms = through_timeouts[i];
        queue_from(g.in_peer, g.in, through_data, THROUGH_N);
        uint64_t before = g.c.bytes_in;
        size_t total = 0;
        while (total < THROUGH_N) {
            size_t n;
            bool client_failed = true;
            ck_assert_int_eq(ks_conn_splice_to(&g.c, g.out, g.pipe_fd, THROUGH_N - total, ks_now_ms() + ms,
                                               ms, through_buf, sizeof(through_buf), &n, &client_failed),
                             KS_IO_OK);
            ck_assert(!client_failed);
            ck_assert_uint_gt(n, 0);
            total += n;
        }
        ck_assert_uint_eq(total, THROUGH_N);
        ck_assert_uint_eq(g.c.bytes_in - before, THROUGH_N);
        arrived_intact(&g, through_data, THROUGH_N);
    }
    /* the client closes: EOF, blamed on the client, nothing taken */
    close(g.in_peer);
    g.in_peer = -1;
    size_t n = 1;
    bool client_failed = false;
    ck_assert_int_eq(ks_conn_splice_to(&g.c, g.out, g.pipe_fd, THROUGH_N, ks_now_ms() + 2000, 2000,
                                       through_buf, sizeof(through_buf), &n, &client_failed),
                     KS_IO_EOF);
    ck_assert(client_failed);
    ck_assert_uint_eq(n, 0);
    rig_close(&g);
}
END_TEST

/* The upstream closes early: EOF, blamed on it, what came is sent. */
START_TEST(test_splice_upstream_eof)
{
    char data[1000], got[1000], buf[4096];
    pattern(data, sizeof(data));
    struct rig g;
    rig_open(&g);
    queue_from(g.in_peer, g.in, data, sizeof(data));
    close(g.in_peer);
    g.in_peer = -1;
    bool in_failed = false;
    ck_assert_int_eq(ks_conn_splice_from(&g.c, g.in, g.pipe_fd, 5000, 2000, 2000, buf, sizeof(buf),
                                         &in_failed), KS_IO_EOF);
    ck_assert(in_failed);
    ck_assert_uint_eq(g.c.bytes_out, sizeof(data));
    read_exactly(g.out_peer, got, sizeof(got));
    ck_assert(memcmp(got, data, sizeof(data)) == 0);
    rig_close(&g);
}
END_TEST

/* The upstream goes quiet: a timeout at read_ms, not later. */
START_TEST(test_splice_upstream_idle)
{
    char buf[4096];
    struct rig g;
    rig_open(&g);
    bool in_failed = false;
    int64_t t0 = ks_now_ms();
    ck_assert_int_eq(ks_conn_splice_from(&g.c, g.in, g.pipe_fd, 5000, 300, 2000, buf, sizeof(buf),
                                         &in_failed), KS_IO_TIMEOUT);
    int64_t took = ks_now_ms() - t0;
    ck_assert(in_failed);
    ck_assert_int_ge(took, 290);
    ck_assert_int_lt(took, 1500);
    rig_close(&g);
}
END_TEST

/* The client is gone: an error blamed on it, not on the upstream. */
START_TEST(test_splice_client_gone)
{
    enum { N = 8192 };
    char data[N], buf[4096];
    pattern(data, N);
    struct rig g;
    rig_open(&g);
    struct linger l = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(g.out_peer, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(g.out_peer);          /* a reset */
    g.out_peer = -1;
    queue_from(g.in_peer, g.in, data, N);
    bool in_failed = true;
    ck_assert_int_eq(ks_conn_splice_from(&g.c, g.in, g.pipe_fd, N, 2000, 2000, buf, sizeof(buf), &in_failed),
                     KS_IO_ERROR);
    ck_assert(!in_failed);
    rig_close(&g);
}
END_TEST

static Suite *proxy_suite(void)
{
    Suite *s = suite_create("proxy");
    TCase *tc = tcase_create("exchange");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_edits_and_path);
    tcase_add_test(tc, test_forced_upstream);
    tcase_add_test(tc, test_body_read_whole);
    tcase_add_test(tc, test_body_read_whole_limits);
    tcase_add_test(tc, test_body_read_whole_chunked_limit);
    tcase_add_test(tc, test_body_read_whole_none);
    tcase_add_test(tc, test_body_read_whole_timeout);
    tcase_add_test(tc, test_on_response);
    tcase_add_test(tc, test_on_response_fails);
    tcase_add_test(tc, test_on_response_no_body);
    tcase_add_test(tc, test_on_response_bad_status);
    tcase_add_test(tc, test_timeout_override);
    suite_add_tcase(s, tc);
    tc = tcase_create("splice");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_splice_through);
    tcase_add_test(tc, test_splice_upstream_eof);
    tcase_add_test(tc, test_splice_upstream_idle);
    tcase_add_test(tc, test_splice_client_gone);
    tcase_add_test(tc, test_splice_to_through);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);   /* as in a worker: a write to a closed peer is EPIPE */
    SRunner *sr = srunner_create(proxy_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
