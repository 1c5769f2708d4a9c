/*
 * worker.c: a worker's life: start-up, the accept loop, one connection at a
 * time, the generation check before every request, graceful exit.
 */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "worker/admin.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/respond.h"
#include "worker/worker.h"

/* Room in the connection buffer beyond the largest head: body bytes and
 * pipelined requests that arrive with it. */
#define CONN_BUF_SLACK 16384

/* The signal handlers' only way to the worker: set once at start-up. */
static struct ks_worker *signal_target;

static void on_term(int sig)
{
    (void)sig;
    signal_target->stop = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    signal_target->reopen = 1;
}

static void install_signals(struct ks_worker *w)
{
    signal_target = w;
    /* no SA_RESTART: a worker blocked in epoll_wait or poll wakes with
     * EINTR and looks at its flags */
    struct sigaction sa = { .sa_flags = 0 };
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);   /* reloads reach workers through shm */
    sigaction(SIGINT, &sa, NULL);   /* the master orchestrates a Ctrl-C stop */
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
}

void ks_worker_set_state(struct ks_worker *w, enum ks_worker_state s)
{
    atomic_store_explicit(&w->score->state, s, memory_order_relaxed);
    atomic_store_explicit(&w->score->state_since_ms, ks_now_ms(), memory_order_relaxed);
}

void ks_worker_request_id(struct ks_worker *w, char out[33])
{
    /* unique per worker by the sequence, across workers and restarts by
     * the random seed; no system call per request */
    uint64_t a = w->id_seed ^ ((uint64_t)getpid() << 32);
    uint64_t b = ++w->request_seq * 0x9e3779b97f4a7c15ull ^ w->id_seed;
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

/* Make the connection buffer and header array fit the current limits. */
static int size_buffers(struct ks_worker *w)
{
    const struct ks_t_settings *s = &w->table->settings;
    size_t cap = s->max_request_line + s->max_header_bytes + CONN_BUF_SLACK;
    if (cap > w->conn_cap) {
        char *nb = realloc(w->conn_buf, cap);
        if (nb == NULL)
            return -1;
        w->conn_buf = nb;
        w->conn_cap = cap;
    }
    size_t nh = (size_t)s->max_headers;
    if (nh > w->max_headers) {
        struct ks_header *h = realloc(w->headers, nh * sizeof(*h));
        if (h == NULL)
            return -1;
        w->headers = h;
        w->max_headers = nh;
    }
    return 0;
}

static void apply_table(struct ks_worker *w)
{
    const struct ks_t_settings *s = &w->table->settings;
    ks_log_set_level((enum ks_log_level)(s->log_level <= KS_LOG_DEBUG ? s->log_level : KS_LOG_INFO));
    atomic_store_explicit(&w->score->generation, w->generation, memory_order_relaxed);
}

int ks_worker_refresh(struct ks_worker *w)
{
    uint64_t g = atomic_load_explicit(&w->shm->hdr->generation, memory_order_relaxed);
    if (g == w->generation && w->have_table)
        return 0;
    atomic_thread_fence(memory_order_acquire);
    uint64_t gen;
    unsigned buf;
    ssize_t n = ks_shm_routes_copy(w->shm, w->spare_table, w->table_cap, &gen, &buf);
    if (n < 0) {
        ks_log_error("table", "cannot read route table of generation %llu", (unsigned long long)g);
        return -1;
    }
    struct ks_table *old = w->table;
    w->table = w->spare_table;
    w->spare_table = old;
    w->have_table = true;
    w->generation = gen;
    w->table_buf = buf;
    if (size_buffers(w) < 0) {
        ks_log_error("table", "out of memory sizing buffers for generation %llu", (unsigned long long)gen);
        return -1;
    }
    apply_table(w);
    ks_log_debug("table", "worker %u now serves generation %llu", w->args->slot,
                 (unsigned long long)gen);
    return 0;
}

static void format_client(const struct sockaddr_storage *ss, char *ip, size_t iplen, uint16_t *port)
{
    ip[0] = '\0';
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, (socklen_t)iplen);
        *port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, (socklen_t)iplen);
        *port = ntohs(sin6->sin6_port);
    }
}

static void score_text(char *dst, size_t cap, const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < cap - 1 ? alen : cap - 1;
    memcpy(dst, a, n);
    if (b != NULL && n + 1 < cap - 1) {
        dst[n++] = ' ';
        size_t m = blen < cap - 1 - n ? blen : cap - 1 - n;
        memcpy(dst + n, b, m);
        n += m;
    }
    dst[n] = '\0';
}

static bool recycle_due(const struct ks_worker *w)
{
    int64_t max = w->table->settings.max_requests_per_worker;
    return max > 0 && w->requests >= (uint64_t)max;
}

static const char *head_error_message(int status)
{
    switch (status) {
    case 408: return "request head not received in time";
    case 414: return "request line too long";
    case 431: return "request header fields too large";
    default: return "malformed request";
    }
}

/* Serve one client connection until it closes or must be closed. */
static void serve(struct ks_worker *w, int fd, enum ks_listener_kind kind,
                  const struct sockaddr_storage *peer)
{
    struct ks_conn c = { .fd = fd, .w = w, .kind = kind };
    format_client(peer, c.client_ip, sizeof(c.client_ip), &c.client_port);
    char client[KS_SCORE_CLIENT_LEN];
    snprintf(client, sizeof(client), "%s:%u", c.client_ip, c.client_port);
    memcpy(w->score->client, client, sizeof(client));
    atomic_fetch_add_explicit(&w->score->connections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shm->hdr->connections, 1, memory_order_relaxed);
    ks_worker_set_state(w, KS_WS_READING);

    for (;;) {
        ks_worker_refresh(w);
        c.buf = w->conn_buf;
        c.cap = w->conn_cap;
        const struct ks_t_settings *s = &w->table->settings;
        if (c.requests > 0)
            ks_worker_set_state(w, KS_WS_KEEPALIVE);
        int64_t idle_deadline = ks_now_ms() + (c.requests == 0 ? s->read_header_timeout_ms
                                                               : s->idle_timeout_ms);
        struct ks_request r;
        int status;
        enum ks_head_result hr = ks_http_read_head(&c, &r, w->headers, idle_deadline, &status);
        if (hr == KS_HEAD_CLOSED)
            break;
        ks_worker_set_state(w, KS_WS_READING);
        /* the configuration may have changed while this connection idled */
        ks_worker_refresh(w);
        s = &w->table->settings;
        ks_worker_request_id(w, r.id);
        atomic_fetch_add_explicit(&w->shm->hdr->requests, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->score->requests, 1, memory_order_relaxed);
        w->requests++;
        c.requests++;
        if (hr == KS_HEAD_ERROR) {
            atomic_fetch_add_explicit(&w->shm->hdr->responses_4xx, 1, memory_order_relaxed);
            ks_respond_error(&c, &r, status, head_error_message(status), NULL, false);
            break;
        }
        score_text(w->score->request, sizeof(w->score->request), r.method, r.method_len, r.target,
                   r.target_len);

        bool has_body = r.chunked || r.content_length > 0;
        bool keep = r.keep_alive && !w->stop && !recycle_due(w) && !has_body &&
                    (s->max_keepalive_requests <= 0 || c.requests < (uint32_t)s->max_keepalive_requests);
        ks_worker_set_state(w, KS_WS_WRITING);
        int rc;
        if (ks_admin_wants(&c, &r))
            rc = ks_admin_serve(&c, &r, keep);
        else
            rc = ks_respond_error(&c, &r, 404, "no tenant for this host and path", NULL, keep);
        if (r.status >= 500)
            atomic_fetch_add_explicit(&w->shm->hdr->responses_5xx, 1, memory_order_relaxed);
        else if (r.status >= 400)
            atomic_fetch_add_explicit(&w->shm->hdr->responses_4xx, 1, memory_order_relaxed);
        if (rc < 0 || !keep)
            break;
    }
    close(fd);
    w->score->request[0] = '\0';
    w->score->client[0] = '\0';
}

static int worker_init(struct ks_worker *w, const struct ks_worker_args *a)
{
    w->args = a;
    w->shm = a->shm;
    w->score = ks_shm_score(a->shm, a->slot);
    w->access_log_fd = -1;
    install_signals(w);
    /* die with the master: the kernel sends TERM when it exits, and a
     * master that died before this line is caught by getppid() */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != a->master_pid)
        return -1;

    memset(w->score->client, 0, sizeof(w->score->client));
    memset(w->score->request, 0, sizeof(w->score->request));
    atomic_store(&w->score->requests, 0);
    atomic_store(&w->score->connections, 0);
    atomic_store(&w->score->bytes_in, 0);
    atomic_store(&w->score->bytes_out, 0);
    atomic_store(&w->score->lua_since_ms, 0);
    atomic_store(&w->score->process_gen, a->process_gen);
    atomic_store(&w->score->started_ms, ks_now_ms());
    ks_worker_set_state(w, KS_WS_STARTING);
    atomic_store(&w->score->pid, (int32_t)getpid());

    if (getrandom(&w->id_seed, sizeof(w->id_seed), GRND_NONBLOCK) != sizeof(w->id_seed))
        w->id_seed = (uint64_t)ks_now_us() ^ ((uint64_t)getpid() << 40);
    /* two private table buffers: a new table is copied into the spare one
     * and swapped in only when the copy succeeded */
    w->table_cap = ks_shm_count(a->shm, KS_REGION_ROUTES0);
    w->table = malloc(w->table_cap);
    w->spare_table = malloc(w->table_cap);
    if (w->table == NULL || w->spare_table == NULL)
        return -1;
    return ks_worker_refresh(w);
}

int ks_worker_main(const struct ks_worker_args *a)
{
    struct ks_worker w = { 0 };
    if (worker_init(&w, a) < 0) {
        ks_log_error("worker-init", "worker %u cannot start", a->slot);
        return KS_WORKER_EXIT_FATAL_INIT;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return KS_WORKER_EXIT_RESOURCE;
    for (int i = 0; i < a->nlisten; i++) {
        /* EPOLLEXCLUSIVE: a new connection wakes one idle worker, not all */
        struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, a->listen_fd[i], &ev);
    }
    struct epoll_event lev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
    epoll_ctl(ep, EPOLL_CTL_ADD, a->lifeline_fd, &lev);

    int code = KS_WORKER_EXIT_OK;
    int64_t emfile_logged_ms = 0;
    while (!w.stop && !recycle_due(&w)) {
        if (w.reopen) {
            w.reopen = 0;
            ks_log_reopen();
        }
        /* idle workers follow reloads too (the wait below wakes every
         * second), so status shows the generation really served */
        ks_worker_refresh(&w);
        ks_worker_set_state(&w, KS_WS_IDLE);
        struct epoll_event ev[KS_MAX_LISTENERS + 1];
        int n = epoll_wait(ep, ev, KS_ARRAY_LEN(ev), 1000);
        if (n < 0 && errno != EINTR) {
            code = KS_WORKER_EXIT_RESOURCE;
            break;
        }
        for (int i = 0; i < n && !w.stop; i++) {
            if (ev[i].data.u32 == UINT32_MAX) {
                ks_log_warn("lifeline", "worker %u: the master is gone, exiting", a->slot);
                w.stop = 1;
                break;
            }
            int li = (int)ev[i].data.u32;
            struct sockaddr_storage peer;
            socklen_t plen = sizeof(peer);
            int fd = accept4(a->listen_fd[li], (struct sockaddr *)&peer, &plen,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    /* once per second, not per attempt */
                    int64_t now = ks_now_ms();
                    if (now - emfile_logged_ms >= 1000) {
                        ks_log_error("accept", "worker %u: accept: %s", a->slot, strerror(errno));
                        emfile_logged_ms = now;
                    }
                }
                continue;   /* EAGAIN: another worker took it */
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            serve(&w, fd, a->listen_kind[li], &peer);
        }
    }
    ks_worker_set_state(&w, KS_WS_CLOSING);
    close(ep);
    free(w.conn_buf);
    free(w.headers);
    free(w.table);
    free(w.spare_table);
    return code;
}
