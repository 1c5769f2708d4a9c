/*
 * health.c: the active health checker (see health.h).
 *
 * One target per configured upstream.  A probe walks
 *
 *   IDLE --due--> CONNECTING --connected--> [SENDING --> READING] --> IDLE
 *
 * on a non-blocking socket registered with the checker's epoll descriptor
 * (the TCP check stops at "connected").  Every step runs from
 * ks_health_run(), called by the master's loop; nothing here waits.  A
 * socket is always removed from the epoll set before it is closed: a
 * forked worker may still hold a copy for a moment, and epoll would keep
 * reporting a closed descriptor whose open file lives on.
 */
#include <config.h>

#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "master/health.h"
#include "worker/http.h"

#define MAX_INFLIGHT 256        /* probes at once; the rest wait their turn */
#define FIRST_PROBE_SPREAD_MS 500
#define LOCAL_ERROR_RETRY_MS 1000
#define EVENTS_PER_WAIT 64

enum phase { P_IDLE, P_CONNECTING, P_SENDING, P_READING };

/* What a target probes, rebuilt from the config at every configure. */
struct probe_conf {
    char *label;                /* "tenant/upstream", for the log */
    char *request;              /* the whole HTTP request; NULL = TCP check */
    size_t request_len;
    struct ks_addr addr;
    int64_t interval_ms, timeout_ms;
    int rise, fall, expect_lo, expect_hi;
};

struct target {
    uint64_t id;                /* stable upstream id = health record key */
    uint32_t slot;              /* its health record */
    struct probe_conf conf;
    /* the probe */
    enum phase phase;
    int fd;
    int64_t next_ms;            /* IDLE: when the next probe starts */
    int64_t start_ms, deadline_ms, start_us;
    size_t sent;
    char *head;                 /* P_READING: what arrived, head_max + 1 bytes */
    size_t head_max;            /* the largest head, as when the read began */
    size_t head_len, parsed, head_start;   /* head_start: of the head being parsed */
    http_parser parser;
    int status;                 /* final status once the head is parsed, else 0 */
    int sys_errno;              /* of a connect error, for the log */
    bool kept;                  /* during configure: still configured */
};

struct ks_health_checker {
    struct ks_shm *shm;
    int epfd;
    struct target **targets;    /* sorted by id; each target stays where it is allocated
                                 * (epoll events point at it) */
    size_t ntargets;
    size_t inflight;
    uint64_t rng;               /* xorshift64 state, for jitter */
    size_t max_head;            /* limits.max_response_header_bytes: the proxy's own */
    bool local_error_logged;
};

/* ---- the state machine ----------------------------------------------------- */

uint64_t ks_health_step(uint64_t word, bool ok, int rise, int fall, int64_t now_s, bool *changed)
{
    unsigned state = KS_HW_STATE(word);
    unsigned count = KS_HW_COUNT(word);
    int64_t since = KS_HW_SINCE(word);
    unsigned next = state;

    if (state == KS_HEALTH_UP) {
        count = ok ? 0 : count + 1;
        if (!ok && count >= (unsigned)fall)
            next = KS_HEALTH_DOWN;
    } else if (state == KS_HEALTH_DOWN) {
        count = ok ? count + 1 : 0;
        if (ok && count >= (unsigned)rise)
            next = KS_HEALTH_UP;
    } else {
        /* unknown already takes traffic: one success confirms it */
        count = ok ? 0 : count + 1;
        if (ok)
            next = KS_HEALTH_UP;
        else if (count >= (unsigned)fall)
            next = KS_HEALTH_DOWN;
    }
    *changed = next != state;
    if (*changed) {
        count = 0;
        since = now_s;
    }
    if (count > 0xff)
        count = 0xff;
    return KS_HW_MAKE(next, count, since);
}

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rnd(struct ks_health_checker *hc)
{
    uint64_t x = hc->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return hc->rng = x;
}

/* Uniform in [0, n) for n > 0. */
static int64_t rnd_below(struct ks_health_checker *hc, int64_t n)
{
    return n > 0 ? (int64_t)(rnd(hc) % (uint64_t)n) : 0;
}

/* Next probe: one interval after the start of this one, moved by up to a
 * tenth of the interval either way so that upstreams configured together
 * drift apart instead of being probed in lockstep. */
static int64_t next_probe(struct ks_health_checker *hc, const struct target *t, int64_t now)
{
    int64_t spread = t->conf.interval_ms / 10;
    int64_t at = t->start_ms + t->conf.interval_ms + rnd_below(hc, 2 * spread + 1) - spread;
    return at > now ? at : now;
}

static int cmp_target(const void *a, const void *b)
{
    uint64_t x = (*(struct target *const *)a)->id, y = (*(struct target *const *)b)->id;
    return x < y ? -1 : x > y;
}

static struct target *find(const struct ks_health_checker *hc, uint64_t id)
{
    size_t lo = 0, hi = hc->ntargets;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t m = hc->targets[mid]->id;
        if (m == id)
            return hc->targets[mid];
        if (m < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void conf_free(struct probe_conf *c)
{
    free(c->label);
    free(c->request);
    c->label = c->request = NULL;
}

static int conf_build(struct probe_conf *c, const struct ks_tenant_config *tc,
                      const struct ks_upstream_config *uc)
{
    const struct ks_health_config *h = &uc->health;
    *c = (struct probe_conf){
        .addr = uc->addr,
        .interval_ms = h->interval_ms,
        .timeout_ms = h->timeout_ms,
        .rise = h->rise,
        .fall = h->fall,
        .expect_lo = h->expect_lo,
        .expect_hi = h->expect_hi,
    };
    size_t llen = strlen(tc->name) + strlen(uc->name) + 2;
    c->label = malloc(llen);
    if (c->label == NULL)
        return -1;
    snprintf(c->label, llen, "%s/%s", tc->name, uc->name);
    if (h->path == NULL || h->path[0] == '\0')
        return 0;   /* TCP check */
    const char *host = h->host != NULL ? h->host : uc->url.hostport;
    static const char fmt[] = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: keystoned/%s health check\r\n"
                              "Accept: */*\r\nConnection: close\r\n\r\n";
    int n = snprintf(NULL, 0, fmt, h->path, host, PACKAGE_VERSION);
    c->request = malloc((size_t)n + 1);
    if (c->request == NULL) {
        conf_free(c);
        return -1;
    }
    snprintf(c->request, (size_t)n + 1, fmt, h->path, host, PACKAGE_VERSION);
    c->request_len = (size_t)n;
    return 0;
}

/* ---- one probe ------------------------------------------------------------------ */

static void close_probe(struct ks_health_checker *hc, struct target *t)
{
    if (t->fd >= 0) {
        epoll_ctl(hc->epfd, EPOLL_CTL_DEL, t->fd, NULL);
        close(t->fd);
        t->fd = -1;
    }
    free(t->head);
    t->head = NULL;
    if (t->phase != P_IDLE) {
        t->phase = P_IDLE;
        hc->inflight--;
    }
}

static void log_change(const struct target *t, unsigned state, unsigned checks,
                       const struct ks_health *h)
{
    const char *plural = checks == 1 ? "" : "s";
    if (state == KS_HEALTH_UP) {
        ks_log_info("health", "upstream %s is UP (%u check%s)", t->conf.label, checks, plural);
        return;
    }
    unsigned reason = atomic_load_explicit(&h->last_reason, memory_order_relaxed);
    char why[96];
    if (reason == KS_HR_BAD_STATUS)
        snprintf(why, sizeof(why), "bad status %d", t->status);
    else if (reason == KS_HR_CONNECT_ERROR && t->sys_errno != 0)
        snprintf(why, sizeof(why), "connect error (%s)", strerror(t->sys_errno));
    else
        snprintf(why, sizeof(why), "%s", ks_health_reason_name((enum ks_health_reason)reason));
    ks_log_warn("health", "upstream %s is DOWN: %s (%u check%s)", t->conf.label, why, checks, plural);
}

/* Write a probe's result into the health record.  Only the master writes
 * these fields: plain relaxed stores, then the state word with release so
 * that a reader who acquires a new state sees the probe behind it. */
static void record(struct ks_health_checker *hc, struct target *t, bool ok,
                   enum ks_health_reason reason)
{
    struct ks_health *h = ks_shm_health(hc->shm, t->slot);
    if (atomic_load_explicit(&h->id, memory_order_relaxed) != t->id)
        return;     /* released by a sweep: nobody reads it any more */
    int64_t latency = ks_now_us() - t->start_us;
    atomic_store_explicit(&h->last_reason, ok ? KS_HR_NONE : reason, memory_order_relaxed);
    atomic_store_explicit(&h->last_status, (uint32_t)t->status, memory_order_relaxed);
    atomic_store_explicit(&h->last_latency_us, latency > UINT32_MAX ? UINT32_MAX : (uint32_t)latency,
                          memory_order_relaxed);
    atomic_store_explicit(&h->last_check_wall_ms, ks_wall_ms(), memory_order_relaxed);
    atomic_store_explicit(&h->checked, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(ok ? &h->checks_ok : &h->checks_failed, 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->word, memory_order_relaxed);
    bool changed;
    uint64_t word = ks_health_step(old, ok, t->conf.rise, t->conf.fall, ks_wall_ms() / 1000, &changed);
    atomic_store_explicit(&h->word, word, memory_order_release);
    /* the probes that made the change: the count so far and this one, but
     * from unknown a single success decides */
    unsigned checks = KS_HW_STATE(old) == KS_HEALTH_UNKNOWN && ok ? 1 : KS_HW_COUNT(old) + 1;
    if (changed)
        log_change(t, KS_HW_STATE(word), checks, h);
}

static void finish(struct ks_health_checker *hc, struct target *t, bool ok,
                   enum ks_health_reason reason)
{
    int64_t now = ks_now_ms();
    record(hc, t, ok, reason);
    close_probe(hc, t);
    t->next_ms = next_probe(hc, t, now);
}

static enum ks_health_reason connect_reason(int err)
{
    switch (err) {
    case ECONNREFUSED: return KS_HR_CONNECT_REFUSED;
    case ETIMEDOUT: return KS_HR_CONNECT_TIMEOUT;
    case ECONNRESET: return KS_HR_RESET;
    default: return KS_HR_CONNECT_ERROR;
    }
}

/* Each head stops the parser at its final LF, to be checked on its own. */
static int on_headers_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = { .on_headers_complete = on_headers_complete };

static void watch(struct ks_health_checker *hc, struct target *t, uint32_t events, int op)
{
    struct epoll_event ev = { .events = events, .data.ptr = t };
    if (epoll_ctl(hc->epfd, op, t->fd, &ev) < 0) {
        ks_log_error("health", "epoll_ctl for %s: %s", t->conf.label, strerror(errno));
        t->sys_errno = errno;
        finish(hc, t, false, KS_HR_CONNECT_ERROR);
    }
}

/* The status is known: judge it. */
static void judge(struct ks_health_checker *hc, struct target *t)
{
    bool ok = t->status >= t->conf.expect_lo && t->status <= t->conf.expect_hi;
    finish(hc, t, ok, KS_HR_BAD_STATUS);
}

/* Parse what arrived.  Each head (interim ones too) is held to the grammar
 * the proxy holds responses to, so that a probe never calls up an upstream
 * whose answers every request would get a 502 for.  Returns 1 once the
 * final status is known, -1 for a bad response, 0 to read on. */
static int parse_heads(struct target *t)
{
    while (t->parsed < t->head_len) {
        http_parser *p = &t->parser;
        t->parsed += http_parser_execute(p, &parser_settings, t->head + t->parsed,
                                         t->head_len - t->parsed);
        if (HTTP_PARSER_ERRNO(p) != HPE_PAUSED)
            return HTTP_PARSER_ERRNO(p) == HPE_OK ? 0 : -1;
        /* at the head's final LF */
        http_parser_pause(p, 0);
        t->parsed += http_parser_execute(p, &parser_settings, t->head + t->parsed, 1);
        if (ks_http_check_response_head(t->head + t->head_start, t->parsed - t->head_start) != NULL)
            return -1;
        if (p->status_code >= 200 || p->status_code == 101) {
            t->status = p->status_code;
            return 1;
        }
        /* a 1xx is interim: the real head follows */
        t->head_start = t->parsed;
        http_parser_init(p, HTTP_RESPONSE);
        p->data = t;
    }
    return 0;
}

static void do_read(struct ks_health_checker *hc, struct target *t)
{
    for (;;) {
        if (t->head_len > t->head_max) {    /* one byte past the limit and no final head */
            finish(hc, t, false, KS_HR_BAD_RESPONSE);
            return;
        }
        ssize_t n = read(t->fd, t->head + t->head_len, t->head_max + 1 - t->head_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            finish(hc, t, false, KS_HR_RESET);
            return;
        }
        if (n == 0) {   /* closed before a complete head */
            finish(hc, t, false, KS_HR_RESET);
            return;
        }
        t->head_len += (size_t)n;
        int r = parse_heads(t);
        if (r > 0 && t->parsed > t->head_max)
            r = -1;
        if (r > 0) {
            judge(hc, t);
            return;
        }
        if (r < 0) {
            finish(hc, t, false, KS_HR_BAD_RESPONSE);
            return;
        }
    }
}

static void do_send(struct ks_health_checker *hc, struct target *t)
{
    while (t->sent < t->conf.request_len) {
        ssize_t n = send(t->fd, t->conf.request + t->sent, t->conf.request_len - t->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;     /* still watched for EPOLLOUT */
            finish(hc, t, false, KS_HR_RESET);
            return;
        }
        t->sent += (size_t)n;
    }
    t->head_max = hc->max_head;
    t->head = malloc(t->head_max + 1);
    if (t->head == NULL) {
        finish(hc, t, false, KS_HR_CONNECT_ERROR);
        return;
    }
    t->head_len = t->parsed = t->head_start = 0;
    t->phase = P_READING;
    http_parser_init(&t->parser, HTTP_RESPONSE);
    t->parser.data = t;
    watch(hc, t, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
    if (t->phase == P_READING)
        do_read(hc, t);     /* the answer may be there already */
}

static void connected(struct ks_health_checker *hc, struct target *t)
{
    if (t->conf.request == NULL) {
        finish(hc, t, true, KS_HR_NONE);    /* TCP check: that was all */
        return;
    }
    t->phase = P_SENDING;
    do_send(hc, t);
}

static void start_probe(struct ks_health_checker *hc, struct target *t, int64_t now)
{
    const struct ks_addr *a = &t->conf.addr;
    t->status = 0;
    t->sent = 0;
    t->sys_errno = 0;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        /* our own trouble (descriptors, memory), not the upstream's: try
         * again later without counting a result */
        if (!hc->local_error_logged)
            ks_log_error("health", "cannot open a probe socket for %s: %s", t->conf.label,
                         strerror(errno));
        hc->local_error_logged = true;
        t->next_ms = now + LOCAL_ERROR_RETRY_MS;
        return;
    }
    hc->local_error_logged = false;
    t->fd = fd;
    t->phase = P_CONNECTING;
    hc->inflight++;
    /* one clock reading, rounded up to the deadline's millisecond: a probe
     * that times out has always taken its whole timeout */
    t->start_us = ks_now_us();
    t->start_ms = (t->start_us + 999) / 1000;
    t->deadline_ms = t->start_ms + t->conf.timeout_ms;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
        connected(hc, t);
        return;
    }
    if (errno != EINPROGRESS) {
        t->sys_errno = errno;
        finish(hc, t, false, connect_reason(errno));
        return;
    }
    watch(hc, t, EPOLLOUT, EPOLL_CTL_ADD);
}

static void on_event(struct ks_health_checker *hc, struct target *t, uint32_t events)
{
    switch (t->phase) {
    case P_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err != 0) {
            t->sys_errno = err;
            finish(hc, t, false, connect_reason(err));
        } else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            connected(hc, t);
        }
        break;
    }
    case P_SENDING:
        do_send(hc, t);
        break;
    case P_READING:
        do_read(hc, t);
        break;
    case P_IDLE:
        break;      /* a stale event for a probe that just finished */
    }
}

/* ---- the checker ---------------------------------------------------------------- */

struct ks_health_checker *ks_health_new(struct ks_shm *shm, char *err, size_t errlen)
{
    struct ks_health_checker *hc = calloc(1, sizeof(*hc));
    if (hc == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    hc->shm = shm;
    hc->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (hc->epfd < 0) {
        snprintf(err, errlen, "epoll_create1 for health checks: %s", strerror(errno));
        free(hc);
        return NULL;
    }
    if (getrandom(&hc->rng, sizeof(hc->rng), GRND_NONBLOCK) != (ssize_t)sizeof(hc->rng))
        hc->rng = (uint64_t)ks_now_us() ^ ((uint64_t)getpid() << 32);
    if (hc->rng == 0)
        hc->rng = 0x9e3779b97f4a7c15ull;
    return hc;
}

int ks_health_configure(struct ks_health_checker *hc, const struct ks_config *cfg)
{
    /* a head the proxy takes is one a probe takes (http-parser's own limit
     * is per process: the master's is set here) */
    hc->max_head = cfg->limits.max_response_header_bytes;
    http_parser_set_max_header_size((uint32_t)(hc->max_head + 4096));
    size_t n = 0;
    for (size_t i = 0; i < cfg->ntenants; i++)
        n += cfg->tenants[i].nupstreams;
    /* Build everything first, so that running out of memory leaves the
     * current set untouched. */
    struct target **next = calloc(n ? n : 1, sizeof(*next));
    struct probe_conf *confs = calloc(n ? n : 1, sizeof(*confs));
    bool *fresh = calloc(n ? n : 1, sizeof(*fresh));
    uint64_t *ids = calloc(n ? n : 1, sizeof(*ids));
    size_t k = 0;
    bool oom = next == NULL || confs == NULL || fresh == NULL || ids == NULL;
    for (size_t i = 0; i < cfg->ntenants && !oom; i++) {
        const struct ks_tenant_config *tc = &cfg->tenants[i];
        for (size_t u = 0; u < tc->nupstreams && !oom; u++, k++) {
            const struct ks_upstream_config *uc = &tc->upstreams[u];
            ids[k] = uc->id;
            next[k] = find(hc, uc->id);
            if (next[k] == NULL) {
                next[k] = calloc(1, sizeof(**next));
                fresh[k] = next[k] != NULL;
            }
            oom = next[k] == NULL || conf_build(&confs[k], tc, uc) < 0;
        }
    }
    if (oom) {
        for (size_t j = 0; next != NULL && j <= k && j < n; j++) {
            if (fresh != NULL && fresh[j])
                free(next[j]);
            if (confs != NULL)
                conf_free(&confs[j]);
        }
        free(next);
        free(confs);
        free(fresh);
        free(ids);
        ks_log_error("health", "out of memory configuring health checks; the previous set is kept");
        return -1;
    }

    int64_t now = ks_now_ms();
    for (size_t j = 0; j < n; j++) {
        struct target *t = next[j];
        int slot = ks_shm_health_slot(hc->shm, ids[j]);
        if (fresh[j]) {
            t->id = ids[j];
            t->fd = -1;
            t->phase = P_IDLE;
            /* first probe soon, spread a little so a big config does not
             * open every socket in the same millisecond */
            int64_t spread = confs[j].interval_ms / 2;
            if (spread > FIRST_PROBE_SPREAD_MS)
                spread = FIRST_PROBE_SPREAD_MS;
            t->next_ms = now + rnd_below(hc, spread);
        } else {
            int64_t old_interval = t->conf.interval_ms;
            bool same_probe = t->conf.addr.len == confs[j].addr.len &&
                              memcmp(&t->conf.addr.ss, &confs[j].addr.ss, t->conf.addr.len) == 0 &&
                              (t->conf.request == NULL) == (confs[j].request == NULL) &&
                              (t->conf.request == NULL ||
                               strcmp(t->conf.request, confs[j].request) == 0);
            if (!same_probe && t->phase != P_IDLE) {
                close_probe(hc, t);     /* it asks the old question: ask the new one now */
                t->next_ms = now;
            }
            conf_free(&t->conf);
            if (confs[j].interval_ms < old_interval && t->phase == P_IDLE &&
                t->next_ms > now + confs[j].interval_ms)
                t->next_ms = now + rnd_below(hc, confs[j].interval_ms);
        }
        t->conf = confs[j];
        t->slot = slot < 0 ? 0 : (uint32_t)slot;
        if (slot < 0)   /* publish assigned every record just before: cannot happen */
            ks_log_error("health", "no health record for %s", t->conf.label);
    }
    /* drop the targets that are gone */
    for (size_t j = 0; j < n; j++)
        next[j]->kept = true;
    for (size_t i = 0; i < hc->ntargets; i++) {
        struct target *t = hc->targets[i];
        if (!t->kept) {
            close_probe(hc, t);
            conf_free(&t->conf);
            free(t);
        }
    }
    for (size_t j = 0; j < n; j++)
        next[j]->kept = false;
    free(hc->targets);
    free(confs);
    free(fresh);
    free(ids);
    qsort(next, n, sizeof(*next), cmp_target);
    hc->targets = next;
    hc->ntargets = n;
    return 0;
}

int ks_health_fd(const struct ks_health_checker *hc)
{
    return hc->epfd;
}

size_t ks_health_inflight(const struct ks_health_checker *hc)
{
    return hc->inflight;
}

int ks_health_timeout(const struct ks_health_checker *hc, int64_t now_ms)
{
    int64_t best = -1;
    bool room = hc->inflight < MAX_INFLIGHT;
    for (size_t i = 0; i < hc->ntargets; i++) {
        const struct target *t = hc->targets[i];
        int64_t at;
        if (t->phase != P_IDLE)
            at = t->deadline_ms;
        else if (room)
            at = t->next_ms;
        else
            continue;
        if (best < 0 || at < best)
            best = at;
    }
    if (best < 0)
        return -1;
    int64_t d = best - now_ms;
    return d < 0 ? 0 : d > INT32_MAX ? INT32_MAX : (int)d;
}

void ks_health_run(struct ks_health_checker *hc)
{
    struct epoll_event ev[EVENTS_PER_WAIT];
    int n;
    do {
        n = epoll_wait(hc->epfd, ev, EVENTS_PER_WAIT, 0);
        for (int i = 0; i < n; i++)
            on_event(hc, ev[i].data.ptr, ev[i].events);
    } while (n == EVENTS_PER_WAIT);

    int64_t now = ks_now_ms();
    for (size_t i = 0; i < hc->ntargets; i++) {
        struct target *t = hc->targets[i];
        if (t->phase != P_IDLE && now >= t->deadline_ms) {
            finish(hc, t, false, t->phase == P_CONNECTING ? KS_HR_CONNECT_TIMEOUT : KS_HR_READ_TIMEOUT);
            continue;   /* its next probe is at least one interval away */
        }
        if (t->phase == P_IDLE && now >= t->next_ms && hc->inflight < MAX_INFLIGHT)
            start_probe(hc, t, now);
    }
}

void ks_health_free(struct ks_health_checker *hc, bool forked)
{
    if (hc == NULL)
        return;
    for (size_t i = 0; i < hc->ntargets; i++) {
        struct target *t = hc->targets[i];
        if (t->fd >= 0 && forked)
            close(t->fd);   /* the master's epoll set is not ours to change */
        else if (t->fd >= 0)
            close_probe(hc, t);
        conf_free(&t->conf);
        free(t);
    }
    free(hc->targets);
    close(hc->epfd);
    free(hc);
}
