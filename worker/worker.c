/*
 * worker.c: a worker's life: start-up, the accept loop, one connection at a
 * time, the generation check before every request, graceful exit.
 */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
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
#include "lua/handle.h"
#include "shm/statefile.h"
#include "worker/accesslog.h"
#include "worker/admin.h"
#include "worker/admin_routes.h"
#include "worker/body.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/proxy.h"
#include "worker/respond.h"
#include "worker/route.h"
#include "worker/worker.h"

/* Room in the connection buffer beyond the largest head: body bytes and
 * pipelined requests that arrive with it (a request body streams through
 * it, behind its head). */
#define CONN_BUF_SLACK 65536
/* How long a worker that cannot accept for want of descriptors waits
 * before it tries again (descriptors freed elsewhere are used that soon). */
#define ACCEPT_PAUSE_MS 50

/* The signal handlers' only way to the worker: set once at start-up. */
static struct ks_worker *signal_target;

/*
 * TERM means "finish": a graceful stop, a retirement (a spare too many,
 * a generation a reload replaced) or the master's death (PR_SET_PDEATHSIG).
 * The listeners are closed here and now, not when the request in flight
 * ends: a worker busy for a minute would otherwise keep the address
 * listening, with connections queued that nobody accepts, and a new
 * master could not bind it.  close() is async-signal-safe; the catch is
 * the descriptor numbers, which the request path may be given again by
 * its next socket() or open().  So stop is set first, and the main loop
 * reads w->listen_fd only while stop is clear: once this handler has run,
 * it never touches those numbers again (an accept4() it was about to
 * make fails with EBADF: nothing can take a number between its check and
 * the call).  SIGTERM is blocked until the listeners are set up, so this
 * never runs before they are registered with the epoll set.
 */
static void on_term(int sig)
{
    (void)sig;
    struct ks_worker *w = signal_target;
    int saved = errno;
    w->stop = 1;
    if (!w->listeners_closed) {
        w->listeners_closed = 1;
        for (int i = 0; i < w->nlisten; i++)
            close(w->listen_fd[i]);
    }
    errno = saved;
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
    /* what the master logs and ignores (master.c): a `pkill -USR2
     * keystoned` must not kill the workers either */
    static const int ignored[] = { KS_IGNORED_SIGNALS };
    for (size_t i = 0; i < KS_ARRAY_LEN(ignored); i++)
        sigaction(ignored[i], &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
}

void ks_worker_set_state(struct ks_worker *w, enum ks_worker_state s)
{
    /* the stamp is when the state began: the accept loop says "idle"
     * again every time round (once a second when nothing comes), which
     * must not make an idle worker look idle for under a second */
    if (atomic_load_explicit(&w->score->state, memory_order_relaxed) == (uint32_t)s &&
        atomic_load_explicit(&w->score->state_since_ms, memory_order_relaxed) > 0)
        return;
    atomic_store_explicit(&w->score->state, s, memory_order_relaxed);
    /* several changes per request: the cheap clock (keystonectl shows seconds) */
    atomic_store_explicit(&w->score->state_since_ms, ks_coarse_ms(), memory_order_relaxed);
}

uint32_t ks_worker_short_of_fds(struct ks_worker *w, const char *where, int err)
{
    uint32_t freed = ks_proxy_shed(w);
    int64_t now = ks_now_ms();
    if (now - w->fds_logged_ms >= 1000) {
        ks_log_error("descriptors", "worker %u: %s: %s; %u idle upstream connection%s closed",
                     w->args->slot, where, strerror(err), freed, freed == 1 ? "" : "s");
        w->fds_logged_ms = now;
    }
    return freed;
}

/* Nothing could be freed for a failed accept: wait a little (the master's
 * death or a stop still wake it) instead of spinning on a listener that
 * stays readable. */
static void accept_pause(struct ks_worker *w, int ms)
{
    struct pollfd p = { .fd = w->args->lifeline_fd, .events = POLLIN };
    if (!w->stop)
        poll(&p, 1, ms);
}

void ks_worker_seed_request_ids(struct ks_worker *w)
{
    if (getrandom(&w->id_seed, sizeof(w->id_seed), GRND_NONBLOCK) != sizeof(w->id_seed))
        w->id_seed = (uint64_t)ks_now_us() ^ ((uint64_t)getpid() << 40);
    ks_fmt_hex(w->id_prefix, w->id_seed ^ ((uint64_t)getpid() << 32), 16);
}

void ks_worker_request_id(struct ks_worker *w, struct ks_request *r)
{
    char *out = r->id;
    /* unique per worker by the sequence, across workers and restarts by
     * the random seed; no system call per request */
    uint64_t b = ++w->request_seq * 0x9e3779b97f4a7c15ull ^ w->id_seed;
    memcpy(out, w->id_prefix, 16);
    ks_fmt_hex(out + 16, b, 16);
    out[32] = '\0';
    r->id_len = 32;
}

/* Make the connection buffer and header array fit the current limits.
 * A table can arrive between reading a head and serving it, so a buffer
 * that must grow is new memory and the old one is only retired: the
 * request in flight keeps using it until adopt_buffers(). */
static int size_buffers(struct ks_worker *w)
{
    const struct ks_t_settings *s = &w->table->settings;
    size_t cap = s->max_request_line + s->max_header_bytes + CONN_BUF_SLACK;
    if (cap > w->conn_cap) {
        char *nb = malloc(cap);
        if (nb == NULL)
            return -1;
        free(w->retired_buf);   /* adopt_buffers() ran since it was retired */
        w->retired_buf = w->conn_buf;
        w->conn_buf = nb;
        w->conn_cap = cap;
    }
    size_t nh = (size_t)s->max_headers;
    if (nh > w->max_headers) {
        struct ks_header *h = malloc(nh * sizeof(*h));
        if (h == NULL)
            return -1;
        free(w->retired_headers);
        w->retired_headers = w->headers;
        w->headers = h;
        w->max_headers = nh;
    }
    return 0;
}

/* Between requests: move a connection's pending bytes (pipelined input)
 * from a retired buffer into the current one, and free what was retired.
 * c may be NULL (no connection). */
static void adopt_buffers(struct ks_worker *w, struct ks_conn *c)
{
    if (c != NULL && c->buf != w->conn_buf) {
        size_t n = c->len - c->start;   /* the new buffer is larger */
        memcpy(w->conn_buf, c->buf + c->start, n);
        c->buf = w->conn_buf;
        c->start = 0;
        c->len = n;
    }
    if (c != NULL)
        c->cap = w->conn_cap;
    free(w->retired_buf);
    free(w->retired_headers);
    w->retired_buf = NULL;
    w->retired_headers = NULL;
}

/* server.worker_scheduling.  SCHED_BATCH takes away a woken worker's
 * right to preempt the task running on its CPU: the worker waits (at most
 * a scheduler slice) until that task blocks or its slice ends.  A worker
 * sleeps twice per proxied request, so without it every answer from an
 * upstream and every next request from a client preempts wrk, the
 * backend or another worker halfway through their own work.  With it the
 * workers still switch twice per request, but the machine as a whole a
 * fifth to a third less often, and a proxied request costs less CPU
 * (t/bench/RESULTS.md).  Unprivileged processes may switch between
 * the two policies either way, so a reload can change it. */
static void apply_scheduling(struct ks_worker *w, bool batch)
{
    if (w->sched_batch == (int)batch)
        return;
    struct sched_param p = { .sched_priority = 0 };
    if (sched_setscheduler(0, batch ? SCHED_BATCH : SCHED_OTHER, &p) < 0) {
        ks_log_warn("scheduling", "worker %u: cannot set SCHED_%s: %s", w->args->slot,
                    batch ? "BATCH" : "OTHER", strerror(errno));
        return;
    }
    w->sched_batch = batch;
}

static void apply_table(struct ks_worker *w)
{
    const struct ks_t_settings *s = &w->table->settings;
    ks_log_set_level((enum ks_log_level)(s->log_level <= KS_LOG_DEBUG ? s->log_level : KS_LOG_INFO));
    apply_scheduling(w, s->worker_sched_batch != 0);
    atomic_store_explicit(&w->score->generation, w->generation, memory_order_relaxed);
}

/* The master moved to a new state file (shm/statefile.h): map it in
 * place of the old one, or try again in a second. */
static void follow_state_file(struct ks_worker *w)
{
    int64_t now = ks_now_ms();
    if (now < w->state_retry_ms)
        return;
    char err[512];
    int rc = ks_statefile_follow(w->shm, err, sizeof(err));
    if (rc < 0) {
        ks_log_error("state-file", "worker %u: %s", w->args->slot, err);
        w->state_retry_ms = now + 1000;
    } else if (rc > 0) {
        ks_log_info("state-file", "worker %u follows the new state file", w->args->slot);
    }
}

/* A table fit to use: its structure (the master's, or garbage written
 * into the state file) and the shared records it points at. */
static bool table_usable(const struct ks_worker *w, const struct ks_table *t, size_t len,
                         char *err, size_t errlen)
{
    if (ks_table_check(t, len, err, errlen) < 0)
        return false;
    for (uint32_t i = 0; i < t->nupstreams; i++)
        if (ks_t_upstreams(t)[i].health_slot >= ks_shm_count(w->shm, KS_REGION_HEALTH)) {
            snprintf(err, errlen, "route table: health record out of bounds");
            return false;
        }
    for (uint32_t i = 0; i < t->ntenants; i++)
        if (ks_t_tenants(t)[i].stats_slot >= ks_shm_count(w->shm, KS_REGION_TENANT_STATS)) {
            snprintf(err, errlen, "route table: tenant record out of bounds");
            return false;
        }
    return true;
}

int ks_worker_refresh(struct ks_worker *w)
{
    if (atomic_load_explicit(&w->shm->hdr->incarnation, memory_order_relaxed) != w->shm->incarnation)
        follow_state_file(w);
    uint64_t g = atomic_load_explicit(&w->shm->hdr->generation, memory_order_relaxed);
    if (g == w->generation && w->have_table)
        return 0;
    atomic_thread_fence(memory_order_acquire);
    uint64_t gen;
    unsigned buf;
    char why[256] = "";
    ssize_t n = ks_shm_routes_copy(w->shm, w->spare_table, w->table_cap, &gen, &buf);
    if (n < 0 || !table_usable(w, w->spare_table, (size_t)n, why, sizeof(why))) {
        /* the old table goes on serving; said once a second */
        int64_t now = ks_now_ms();
        if (now - w->table_logged_ms >= 1000) {
            ks_log_error("table", "cannot read route table of generation %llu%s%s",
                         (unsigned long long)g, why[0] ? ": " : "", why);
            w->table_logged_ms = now;
        }
        return -1;
    }
    /* a state file zeroed under us (see shm/statefile.h) lost this
     * worker's slot: take it again */
    if (atomic_load_explicit(&w->score->pid, memory_order_relaxed) != (int32_t)getpid()) {
        atomic_store(&w->score->process_gen, w->args->process_gen);
        atomic_store(&w->score->pid, (int32_t)getpid());
    }
    struct ks_table *old = w->table;
    w->table = w->spare_table;
    w->spare_table = old;
    w->have_table = true;
    w->generation = gen;
    w->table_buf = buf;
    /* the pool is indexed like the table's upstreams: it follows the
     * table even when the buffers cannot */
    int rc = size_buffers(w);
    if (ks_proxy_sync(w) < 0)
        rc = -1;
    ks_lua_engine_refresh(w);       /* tenant states follow the table too */
    if (rc < 0) {
        ks_log_error("table", "out of memory sizing buffers for generation %llu", (unsigned long long)gen);
        return -1;
    }
    ks_accesslog_open(w, false);
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

/* USR1 (the handler only sets the flag): reopen the error and access logs. */
static void reopen_logs(struct ks_worker *w)
{
    if (!w->reopen)
        return;
    w->reopen = 0;
    ks_log_reopen();
    ks_accesslog_open(w, true);
}

/* Keep the client's X-Request-ID when it is sane, else make one. */
static void request_id(struct ks_worker *w, struct ks_request *r)
{
    const struct ks_header *h = ks_http_header(r, "x-request-id");
    if (h != NULL) {
        const char *v = h->value;
        size_t n = h->value_len;
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        while (n > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            n--;
        }
        if (ks_http_sane_request_id(v, n)) {
            memcpy(r->id, v, n);
            r->id[n] = '\0';
            r->id_len = n;
            return;
        }
    }
    ks_worker_request_id(w, r);
}

/* Global and per-tenant counters of one answered request. */
static void count_response(struct ks_worker *w, const struct ks_exchange *x, int status)
{
    struct ks_shm_header *h = w->shm->hdr;
    if (status >= 500)
        atomic_fetch_add_explicit(&h->responses_5xx, 1, memory_order_relaxed);
    else if (status >= 400)
        atomic_fetch_add_explicit(&h->responses_4xx, 1, memory_order_relaxed);
    if (x == NULL || x->tenant == KS_NONE)
        return;
    const struct ks_t_tenant *tn = &ks_t_tenants(w->table)[x->tenant];
    struct ks_tenant_stats *ts = ks_shm_tenant_stats(w->shm, tn->stats_slot);
    atomic_fetch_add_explicit(&ts->requests, 1, memory_order_relaxed);
    if (status >= 500)
        atomic_fetch_add_explicit(&ts->responses_5xx, 1, memory_order_relaxed);
    else if (status >= 400)
        atomic_fetch_add_explicit(&ts->responses_4xx, 1, memory_order_relaxed);
}

/* The one place a request is handed to the proxy (through the tenant's
 * Lua script when it has one). */
static int dispatch(struct ks_exchange *x)
{
    int rc;
    rc = ks_lua_wants(x) ? ks_lua_handle(x) : ks_proxy_forward(x);
    return rc;
}

/* Which tenant serves the request (decided per request, never per
 * connection), then the limits known from the head, then dispatch. */
static int route_request(struct ks_exchange *x)
{
    struct ks_worker *w = x->w;
    const struct ks_request *r = x->r;
    const struct ks_t_settings *s = &w->table->settings;
    ssize_t n = ks_route_normalize(r->path, r->path_len, w->proxy->norm);
    if (n < 0)
        return ks_proxy_fail(x, 400, "malformed percent-encoding in the path", NULL);
    x->match_path = w->proxy->norm;
    x->match_path_len = (size_t)n;
    x->tenant = ks_route_tenant(w->table, r->host, x->match_path, x->match_path_len, &x->base_len);
    if (x->tenant == KS_NONE)
        return ks_proxy_fail(x, 404, "no tenant for this host and path", NULL);
    /* 413 from the Content-Length, before a byte of the body is read;
     * a body refused for its size is not read to keep the connection */
    if ((r->has_content_length && r->content_length > s->max_body_bytes) ||
        (r->chunked && s->max_body_bytes == 0)) {
        x->close = true;
        return ks_proxy_fail(x, 413, "request body too large", NULL);
    }
    return dispatch(x);
}

/* How often a worker waiting on an idle keep-alive connection looks
 * whether another connection needs it (below). */
#define WAITING_CHECK_MS 1000

/* Has a new connection been kept waiting while every worker is busy?  The
 * master's hint (one relaxed load) first; the listeners are polled only
 * when no worker is idle and none will be started, and at most once a
 * WAITING_CHECK_MS: a request on a kept-alive connection costs no syscall
 * for it.  A connection must be seen waiting at two looks in a row: one
 * seen once may be taken by a worker a moment later (64 connections
 * opened at once reach 64 workers one by one, and the hint is a tick
 * old), and closing a keep-alive connection for it would be for
 * nothing. */
static bool connection_waiting(struct ks_worker *w, int64_t now)
{
    if (now < w->waiting_check_ms)
        return false;
    w->waiting_check_ms = now + WAITING_CHECK_MS;
    /* (a stop closes the listeners: see on_term; one that comes between
     * this test and the poll makes the poll report them invalid, and the
     * connection is closed, as the stop wants anyway) */
    bool waiting = false;
    if (!w->stop && atomic_load_explicit(&w->shm->hdr->all_busy, memory_order_relaxed)) {
        struct pollfd p[KS_MAX_LISTENERS];
        for (int i = 0; i < w->nlisten; i++)
            p[i] = (struct pollfd){ .fd = w->listen_fd[i], .events = POLLIN };
        waiting = poll(p, (nfds_t)w->nlisten, 0) > 0;
    }
    bool again = waiting && w->waiting_seen;
    w->waiting_seen = waiting;
    return again;
}

/* The wait for the first byte of the next request on a kept-alive
 * connection.  With every worker busy, an idle keep-alive connection
 * would keep a waiting client out for up to idle_timeout (or for good,
 * under steady keep-alive traffic), so it gives its worker up once a
 * connection waits, as nginx closes idle keep-alive connections when it
 * runs short of them (a client reopens a closed idle connection).  The
 * wait wakes for each look.  Returns false when the connection is to be
 * closed. */
static bool keepalive_wait(struct ks_worker *w, struct ks_conn *c, int64_t now, int64_t deadline)
{
    for (;;) {
        if (connection_waiting(w, now)) {
            ks_log_debug("keepalive", "worker %u: every worker busy, an idle keep-alive connection "
                         "gives way to a waiting one", w->args->slot);
            return false;
        }
        int64_t until = w->waiting_check_ms < deadline ? w->waiting_check_ms : deadline;
        enum ks_io_result io = ks_conn_fill(c, until, true);
        if (io != KS_IO_TIMEOUT || until == deadline)
            return io == KS_IO_OK;
        now = ks_now_ms();
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

    c.buf = w->conn_buf;
    bool may_be_sending = false;     /* when we close: the client may not have finished */
    for (;;) {
        /* the previous request may have run on retired buffers: adopt
         * before a refresh could retire the current ones */
        adopt_buffers(w, &c);
        ks_worker_refresh(w);
        adopt_buffers(w, &c);
        reopen_logs(w);
        const struct ks_t_settings *s = &w->table->settings;
        if (c.requests > 0)
            ks_worker_set_state(w, KS_WS_KEEPALIVE);
        int64_t now = ks_now_ms();
        int64_t idle_deadline = now + (c.requests == 0 ? s->read_header_timeout_ms : s->idle_timeout_ms);
        /* the wait for the next request's first byte (the keep-alive idle
         * time; a stop ends it), then the generation check, so that the
         * request is read and served under the table current when it
         * began, with buffers sized for it */
        ks_conn_compact(&c);
        if (c.len == 0 && c.requests > 0 && !keepalive_wait(w, &c, now, idle_deadline))
            break;
        if (c.len == 0 && c.requests == 0 && ks_conn_fill(&c, idle_deadline, true) != KS_IO_OK)
            break;
        ks_worker_set_state(w, KS_WS_READING);
        ks_worker_refresh(w);
        adopt_buffers(w, &c);
        struct ks_request r;
        int status;
        uint64_t out0 = c.bytes_out;
        enum ks_head_result hr = ks_http_read_head(&c, &r, w->headers, idle_deadline, &status);
        if (hr == KS_HEAD_CLOSED)
            break;
        /* and once more: a reload while the head arrived (its buffers are
         * only retired, see size_buffers) */
        ks_worker_refresh(w);
        s = &w->table->settings;
        atomic_fetch_add_explicit(&w->shm->hdr->requests, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->score->requests, 1, memory_order_relaxed);
        w->requests++;
        c.requests++;
        if (hr == KS_HEAD_ERROR || hr == KS_HEAD_CUT) {
            /* a head we refuse is never forwarded, and nothing after it
             * on this connection can be trusted: answer and close (a
             * head the client cut short has nobody to answer: it is only
             * logged) */
            ks_worker_request_id(w, &r);
            count_response(w, NULL, status);
            if (hr == KS_HEAD_CUT) {
                r.status = status;
            } else {
                ks_worker_set_state(w, KS_WS_WRITING);
                ks_respond_error(&c, &r, status, r.error ? r.error : head_error_message(status), NULL, false);
                may_be_sending = true;
            }
            if (status == 508)  /* a configuration mistake, not a client's */
                ks_log_warn("loop", "%.*s %s%.*s (request %s) came back through this gateway %d times: "
                            "an upstream or a script's http.request leads back to it; answered 508",
                            (int)r.method_len, r.method, r.host, (int)(r.target_len > 200 ? 200 : r.target_len),
                            r.target, r.id, KS_MAX_PASSES);
            reopen_logs(w);
            ks_accesslog_write(w, &c, &r, NULL, c.len, c.bytes_out - out0);
            break;
        }
        request_id(w, &r);
        score_text(w->score->request, sizeof(w->score->request), r.method, r.method_len, r.target,
                   r.target_len);

        struct ks_body body;
        ks_body_init(&body, &c, &r, w->proxy->acc, w->proxy->acc_cap);
        struct ks_exchange x = {
            .w = w, .c = &c, .r = &r, .tenant = KS_NONE, .upstream = KS_NONE, .in = &body,
        };
        x.close = !(r.keep_alive && !w->stop && !recycle_due(w) &&
                    (s->max_keepalive_requests <= 0 || c.requests < (uint32_t)s->max_keepalive_requests));
        int rc;
        if (ks_admin_wants(&c, &r)) {
            if (!ks_body_drainable(&body, KS_DRAIN_MAX))
                x.close = true;
            ks_worker_set_state(w, KS_WS_WRITING);
            rc = ks_admin_routes_wants(&c, &r) ? ks_admin_routes_serve(&x)
                                               : ks_admin_serve(&c, &r, !x.close);
            x.status = r.status;
        } else {
            rc = route_request(&x);
        }
        /* what is left of a small body is read so that the next request
         * starts where it should; a large one closes the connection */
        if (rc == 0 && !x.close && ks_body_pending(&body) &&
            ks_body_drain(&body, KS_DRAIN_MAX, 1000) < 0)
            x.close = true;
        count_response(w, &x, x.status ? x.status : r.status);
        reopen_logs(w);     /* a USR1 that came while this request ran */
        ks_accesslog_write(w, &c, &r, &x, r.head_len + body.wire + x.tunnel_in, c.bytes_out - out0);
        ks_proxy_request_done(w);
        if (rc < 0 || x.close) {
            /* a client that asked to close has sent all it will; one
             * we close on may have sent, or be sending, more */
            may_be_sending = ks_body_pending(&body) ||
                             (r.keep_alive && ks_conn_input_waiting(&c));
            break;
        }
    }
    ks_conn_close(&c, may_be_sending);
    w->score->request[0] = '\0';
    w->score->client[0] = '\0';
}

static int worker_init(struct ks_worker *w, const struct ks_worker_args *a)
{
    w->args = a;
    w->shm = a->shm;
    w->score = ks_shm_score(a->shm, a->slot);
    w->access_log_fd = -1;
    w->sched_batch = -1;            /* inherited from the master: set by the first table */
    ks_statefile_guard(a->shm);
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
    atomic_store(&w->score->active_health, 0);
    atomic_store(&w->score->process_gen, a->process_gen);
    atomic_store(&w->score->started_ms, ks_now_ms());
    ks_worker_set_state(w, KS_WS_STARTING);
    atomic_store(&w->score->pid, (int32_t)getpid());

    ks_worker_seed_request_ids(w);
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
    struct ks_worker w = { .answer_fd = -1 };
    /* TERM waits until the listeners are set up (see on_term) */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, NULL);
    memcpy(w.listen_fd, a->listen_fd, sizeof(w.listen_fd));
    w.nlisten = a->nlisten;
    if (worker_init(&w, a) < 0) {
        ks_log_error("worker-init", "worker %u cannot start", a->slot);
        return KS_WORKER_EXIT_FATAL_INIT;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return KS_WORKER_EXIT_RESOURCE;
    enum { INHERIT_NO, INHERIT_UNKNOWN, INHERIT_YES } inherit[KS_MAX_LISTENERS];
    for (int i = 0; i < a->nlisten; i++) {
        /* the listeners are shared: every worker sets the same options */
        inherit[i] = ks_sock_listener(a->listen_fd[i]) == 0 ? INHERIT_UNKNOWN : INHERIT_NO;
        /* EPOLLEXCLUSIVE: a new connection wakes one idle worker, not all */
        struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, a->listen_fd[i], &ev);
    }
    struct epoll_event lev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
    epoll_ctl(ep, EPOLL_CTL_ADD, a->lifeline_fd, &lev);
    sigprocmask(SIG_UNBLOCK, &term, NULL);

    int code = KS_WORKER_EXIT_OK;
    while (!w.stop && !recycle_due(&w)) {
        reopen_logs(&w);
        /* idle workers follow reloads too (the wait below wakes every
         * second), so status shows the generation really served */
        ks_worker_refresh(&w);
        adopt_buffers(&w, NULL);
        ks_proxy_idle(&w);
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
            /* blocking: conn.c bounds each call by the socket's timeouts */
            int fd = accept4(w.listen_fd[li], (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
            if (fd < 0) {
                int e = errno;
                if ((e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) &&
                    ks_worker_short_of_fds(&w, "accept", e) == 0)
                    accept_pause(&w, ACCEPT_PAUSE_MS);
                continue;   /* EAGAIN: another worker took it; else try again */
            }
            /* the first connection of each listener shows whether the
             * options set on it came along (see ks_sock_listener) */
            if (inherit[li] == INHERIT_UNKNOWN)
                inherit[li] = ks_sock_inherits(fd) ? INHERIT_YES : INHERIT_NO;
            if (inherit[li] != INHERIT_YES) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            }
            ks_sock_blocking(&w, fd, false, inherit[li] == INHERIT_YES);
            serve(&w, fd, a->listen_kind[li], &peer);
        }
    }
    ks_worker_set_state(&w, KS_WS_CLOSING);
    close(ep);
    ks_proxy_free(&w);
    ks_lua_engine_free(&w);
    ks_accesslog_close(&w);
    adopt_buffers(&w, NULL);
    ks_sock_free(&w);
    free(w.conn_buf);
    free(w.headers);
    free(w.table);
    free(w.spare_table);
    return code;
}
