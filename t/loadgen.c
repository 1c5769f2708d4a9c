#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
/*
 * loadgen.c: a bounded HTTP/1.1 load client for the fault and soak tests
 * (t/fault-*.t, t/soak/run).  A test tool, not the product: one process,
 * one epoll loop, non-blocking sockets on loopback, responses parsed with
 * http-parser.  It never waits without a deadline and always ends: after
 * -d seconds, after -n requests, or on SIGTERM/SIGINT, and then prints one
 * JSON report on stdout.
 *
 *   t/loadgen -p PORT [-a ADDR] [-c CONNS] [-d SECONDS] [-n REQUESTS]
 *             [-t TIMEOUT_MS] [-q RATE] [-m keepalive|churn|connect]
 *             [-l EVENTLOG] [-r SPEC]...
 *
 * SPEC is "[N*]METHOD PATH [HOST]" (default "GET / localhost"); N is the
 * number of connections that send this request (the connections of -c not
 * given to a spec are spread over the specs in turn).  Every connection
 * sends one request at a time:
 *
 *   keepalive  (default) requests follow each other on the connection; a
 *              response with "Connection: close" (or an idle close by the
 *              server before the next request was sent) just means a new
 *              connection, not an error
 *   churn      one request per connection, "Connection: close", then the
 *              client closes (every other connection with an RST)
 *   connect    connect, then close at once without sending anything
 *
 * A request that went out on a kept-alive connection which the server
 * closed before any byte of the answer came back is sent once more on a
 * new connection, as HTTP/1.1 clients do (counted in "retries"); only
 * when that fails too does it count as failed.
 *
 * -q spreads RATE requests (or connects) per second evenly over the
 * connections; without it they go as fast as the server answers.  After a
 * failure a connection waits 10 ms before it connects again.
 *
 * Outcomes: a complete response counts under its status; a request that
 * got no complete response counts under one error: "connect" (connect
 * failed: refused, reset during the handshake), "local" (EADDRNOTAVAIL,
 * EMFILE: our own trouble), "reset" (ECONNRESET/EPIPE with the request
 * outstanding), "closed_before_response" (EOF before any byte of the
 * response), "closed_mid_response" (EOF inside it), "timeout" (no complete
 * response within -t ms, default 10000), "malformed" (not HTTP).
 *
 * The report: {"started_ms" (wall clock, ms since the epoch: the zero of
 * the event log), "duration_ms", "requests" (sent), "responses", "retries", "statuses":
 * {"200": n, ...}, "errors": {...}, "connections" (opened), "latency_us":
 * {"p50","p90","p99","max"}, "specs": [{"spec", "statuses", "errors",
 * "latency_us", "responses"}, ...]}.  With -l every finished request is
 * also one line of EVENTLOG: "START_MS END_MS SPEC CONN OUTCOME", times in
 * milliseconds since the start, OUTCOME a status or an error name.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SPECS 16
#define RETRY_MS 10
#define READ_CHUNK 65536

enum outcome {
    O_CONNECT,
    O_LOCAL,
    O_RESET,
    O_CLOSED_BEFORE,
    O_CLOSED_MID,
    O_TIMEOUT,
    O_MALFORMED,
    O_COUNT
};
static const char *const outcome_names[O_COUNT] = {
    "connect", "local", "reset", "closed_before_response", "closed_mid_response", "timeout",
    "malformed",
};

enum mode { M_KEEPALIVE, M_CHURN, M_CONNECT };

struct lat {
    uint32_t *v;
    size_t n, cap;
};

struct spec {
    char text[512];
    char *request;          /* the bytes sent */
    size_t request_len;
    int conns;              /* connections given by N* (0: share of -c) */
    uint64_t statuses[600];
    uint64_t errors[O_COUNT];
    uint64_t responses;
    uint64_t connects;      /* -m connect: connections made */
    uint64_t retries;       /* requests sent again (see retryable()) */
    struct lat lat;
};

enum cstate { C_IDLE, C_CONNECTING, C_SENDING, C_READING, C_WAITING };

struct conn {
    int fd;
    int id;
    struct spec *spec;
    enum cstate state;
    size_t sent;
    int64_t req_start_us;   /* 0: no request outstanding */
    int64_t deadline_us;    /* of the outstanding request */
    int64_t wake_us;        /* C_WAITING: when to go on */
    int64_t next_send_us;   /* pacing: its next slot */
    bool got_bytes;         /* of the current response */
    bool complete;
    bool keep_alive;
    bool rst;               /* churn: close with an RST */
    bool done;              /* the run is over for it */
    bool reused;            /* the fd already carried a complete response */
    bool retry;             /* the outstanding request is a retry */
    http_parser parser;
    int status;
};

/* The whole run (one instance in main). */
struct run {
    struct sockaddr_in addr;
    enum mode mode;
    int nconns;
    int64_t timeout_us;
    int64_t end_us;         /* 0 = no duration limit */
    uint64_t max_requests;  /* 0 = no limit */
    double rate;            /* per second, 0 = unpaced */
    struct spec specs[MAX_SPECS];
    int nspecs;
    struct conn *conns;
    int ep;
    int64_t t0_us;
    int64_t t0_wall_ms;     /* the same moment on the wall clock */
    uint64_t requests, connections, abandoned;
    FILE *events;
    int live;               /* connections not yet finished */
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: loadgen -p PORT [-a ADDR] [-c CONNS] [-d SECONDS] [-n REQUESTS] "
                    "[-t TIMEOUT_MS] [-q RATE] [-m keepalive|churn|connect] [-l EVENTLOG] "
                    "[-r '[N*]METHOD PATH [HOST]']...\n");
    exit(2);
}

static void lat_add(struct lat *l, int64_t us)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint32_t *nv = realloc(l->v, cap * sizeof(*nv));
        if (nv == NULL)
            die("out of memory");
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)(us < 0 ? 0 : us);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void parse_spec(struct run *R, const char *arg, enum mode mode)
{
    if (R->nspecs == MAX_SPECS)
        die("too many -r");
    struct spec *s = &R->specs[R->nspecs++];
    char method[32] = "GET", path[4096] = "/", host[256] = "localhost";
    const char *p = arg;
    char *end;
    long n = strtol(p, &end, 10);
    if (end != p && *end == '*') {
        if (n <= 0)
            die("bad connection count in -r");
        s->conns = (int)n;
        p = end + 1;
    }
    int got = sscanf(p, "%31s %4095s %255s", method, path, host);
    if (got < 2)
        die("-r wants 'METHOD PATH [HOST]'");
    /* the label in the report; a long path is cut short there */
    if (snprintf(s->text, sizeof(s->text), "%s %s %s", method, path, host) >= (int)sizeof(s->text))
        memcpy(s->text + sizeof(s->text) - 4, "...", 4);
    size_t cap = strlen(method) + strlen(path) + strlen(host) + 128;
    s->request = malloc(cap);
    if (s->request == NULL)
        die("out of memory");
    int len = snprintf(s->request, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n", method, path, host,
                       mode == M_CHURN ? "Connection: close\r\n" : "",
                       strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0
                           ? "Content-Length: 0\r\n" : "");
    s->request_len = (size_t)len;
}

/* ---- outcomes ------------------------------------------------------------ */

static void record(struct run *R, struct conn *c, int status, int err)
{
    int64_t t = now_us();
    struct spec *s = c->spec;
    if (status > 0) {
        s->statuses[status < 600 ? status : 599]++;
        s->responses++;
        lat_add(&s->lat, t - c->req_start_us);
    } else {
        s->errors[err]++;
    }
    if (R->events != NULL) {
        int64_t start = c->req_start_us ? c->req_start_us : t;
        fprintf(R->events, "%lld %lld %d %d ", (long long)((start - R->t0_us) / 1000),
                (long long)((t - R->t0_us) / 1000), (int)(s - R->specs), c->id);
        if (status > 0)
            fprintf(R->events, "%d\n", status);
        else
            fprintf(R->events, "%s\n", outcome_names[err]);
    }
    c->req_start_us = 0;
    c->retry = false;
}

/* ---- connections ------------------------------------------------------- */

static void close_conn(struct run *R, struct conn *c, bool rst)
{
    if (c->fd < 0)
        return;
    if (rst) {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    epoll_ctl(R->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->reused = false;
}

static bool over(const struct run *R)
{
    return g_stop || (R->end_us > 0 && now_us() >= R->end_us);
}

static bool may_start(const struct run *R)
{
    return !over(R) && (R->max_requests == 0 || R->requests < R->max_requests);
}

/* The connection has nothing more to do. */
static void retire(struct run *R, struct conn *c)
{
    if (c->done)
        return;
    close_conn(R, c, false);
    c->state = C_IDLE;
    c->done = true;
    R->live--;
}

static void wait_then(struct conn *c, int64_t at)
{
    c->state = C_WAITING;
    c->wake_us = at;
}

static void start_connect(struct run *R, struct conn *c);

/* A kept-alive connection the server closed just as the next request went
 * out (nothing of an answer came back) is the race every HTTP/1.1 client
 * meets when a server ends an idle connection; clients send the request
 * again on a new connection (RFC 9112, 9.3.1), and so does this one,
 * once.  It is counted in "retries", not as a failure. */
static bool retryable(const struct run *R, const struct conn *c, int err)
{
    return R->mode == M_KEEPALIVE && c->reused && !c->retry && !c->got_bytes &&
           (err == O_CLOSED_BEFORE || err == O_RESET) && !over(R);
}

/* A failure of the outstanding request (or of a connect). */
static void fail(struct run *R, struct conn *c, int err)
{
    if (retryable(R, c, err)) {
        close_conn(R, c, false);
        c->retry = true;
        c->spec->retries++;
        start_connect(R, c);
        return;
    }
    record(R, c, 0, err);
    close_conn(R, c, false);
    wait_then(c, now_us() + RETRY_MS * 1000);
}

static void want(struct run *R, struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    epoll_ctl(R->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void send_request(struct run *R, struct conn *c)
{
    if (!c->retry) {
        R->requests++;
        c->req_start_us = now_us();
    }
    c->deadline_us = now_us() + R->timeout_us;
    c->sent = 0;
    c->got_bytes = c->complete = false;
    c->status = 0;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->state = C_SENDING;
    want(R, c, EPOLLOUT);
}

static void start_connect(struct run *R, struct conn *c)
{
    if (!c->retry)
        c->req_start_us = now_us();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(R, c, O_LOCAL);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    R->connections++;
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    epoll_ctl(R->ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (connect(c->fd, (struct sockaddr *)&R->addr, sizeof(R->addr)) < 0 && errno != EINPROGRESS) {
        int e = errno;
        fail(R, c, e == EADDRNOTAVAIL || e == EMFILE || e == ENFILE ? O_LOCAL : O_CONNECT);
        return;
    }
    c->state = C_CONNECTING;
    /* the connect deadline is the request timeout */
    c->deadline_us = now_us() + R->timeout_us;
}

/* The connection is free for its next request: pace, connect, send. */
static void ready(struct run *R, struct conn *c)
{
    if (!may_start(R)) {
        retire(R, c);
        return;
    }
    if (R->rate > 0) {
        int64_t gap = (int64_t)(1e6 * R->nconns / R->rate), now = now_us();
        if (c->next_send_us == 0)
            c->next_send_us = R->t0_us + (int64_t)((double)gap * c->id / R->nconns);
        if (now < c->next_send_us) {
            wait_then(c, c->next_send_us);
            return;
        }
        /* a slow answer does not earn a burst of catching up */
        c->next_send_us = c->next_send_us + gap < now ? now : c->next_send_us + gap;
    }
    if (c->fd < 0)
        start_connect(R, c);
    else
        send_request(R, c);
}

static int on_status(http_parser *p, const char *at, size_t len)
{
    (void)at;
    (void)len;
    struct conn *c = p->data;
    c->status = (int)p->status_code;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    /* an interim response (1xx but 101) is not the answer */
    if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101)
        return 0;
    c->status = (int)p->status_code;
    c->complete = true;
    c->keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_status = on_status,
    .on_message_complete = on_message_complete,
};

static void finish_response(struct run *R, struct conn *c)
{
    record(R, c, c->status, 0);
    if (R->mode == M_CHURN || !c->keep_alive) {
        close_conn(R, c, R->mode == M_CHURN && c->rst);
        c->rst = !c->rst;
    } else {
        c->reused = true;
    }
    c->state = C_IDLE;
    ready(R, c);
}

static void on_connected(struct run *R, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        fail(R, c, err == EADDRNOTAVAIL ? O_LOCAL : O_CONNECT);
        return;
    }
    if (R->mode == M_CONNECT) {
        /* nothing is sent: the connect is the whole exchange */
        R->requests++;
        c->spec->connects++;
        c->req_start_us = 0;
        close_conn(R, c, c->rst);
        c->rst = !c->rst;
        c->state = C_IDLE;
        ready(R, c);
        return;
    }
    send_request(R, c);
}

static void on_writable(struct run *R, struct conn *c)
{
    struct spec *s = c->spec;
    while (c->sent < s->request_len) {
        ssize_t n = send(c->fd, s->request + c->sent, s->request_len - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            fail(R, c, O_RESET);
            return;
        }
        c->sent += (size_t)n;
    }
    c->state = C_READING;
    want(R, c, EPOLLIN | EPOLLRDHUP);
}

static void on_readable(struct run *R, struct conn *c)
{
    char buf[READ_CHUNK];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            fail(R, c, O_RESET);
            return;
        }
        if (n == 0) {
            /* EOF: it may end a close-delimited body */
            if (c->got_bytes)
                http_parser_execute(&c->parser, &settings, NULL, 0);
            if (c->complete) {
                c->keep_alive = false;
                finish_response(R, c);
                return;
            }
            fail(R, c, c->got_bytes ? O_CLOSED_MID : O_CLOSED_BEFORE);
            return;
        }
        c->got_bytes = true;
        size_t used = http_parser_execute(&c->parser, &settings, buf, (size_t)n);
        if (c->complete) {
            /* nothing is pipelined: bytes after the answer are junk */
            if (used < (size_t)n && c->keep_alive) {
                fail(R, c, O_MALFORMED);
                return;
            }
            finish_response(R, c);
            return;
        }
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
            fail(R, c, O_MALFORMED);
            return;
        }
    }
}

static void on_event(struct run *R, struct conn *c, uint32_t ev)
{
    switch (c->state) {
    case C_CONNECTING:
        on_connected(R, c);
        break;
    case C_SENDING:
        if (ev & (EPOLLERR | EPOLLHUP)) {
            fail(R, c, O_RESET);
            break;
        }
        on_writable(R, c);
        break;
    case C_READING:
        on_readable(R, c);
        break;
    default:
        break;
    }
}

/* Deadlines and wake-ups; returns the epoll timeout in ms. */
static int timers(struct run *R)
{
    int64_t now = now_us(), next = now + 100000;
    for (int i = 0; i < R->nconns; i++) {
        struct conn *c = &R->conns[i];
        if (c->done)
            continue;
        if (c->state == C_WAITING) {
            if (now >= c->wake_us) {
                c->state = C_IDLE;
                ready(R, c);
            } else if (c->wake_us < next) {
                next = c->wake_us;
            }
        } else if (c->state != C_IDLE) {
            if (now >= c->deadline_us)
                fail(R, c, c->state == C_CONNECTING ? O_CONNECT : O_TIMEOUT);
            else if (c->deadline_us < next)
                next = c->deadline_us;
        }
    }
    if (R->end_us > 0 && R->end_us < next)
        next = R->end_us;
    int64_t ms = (next - now_us() + 999) / 1000;
    return ms < 0 ? 0 : ms > 100 ? 100 : (int)ms;
}

/* ---- report ---------------------------------------------------------------- */

static uint32_t pct(const struct lat *l, double p)
{
    if (l->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(l->n - 1) + 0.5);
    return l->v[i];
}

static void print_counts(const uint64_t *st, const uint64_t *err)
{
    printf("\"statuses\":{");
    bool first = true;
    for (int i = 0; i < 600; i++)
        if (st[i]) {
            printf("%s\"%d\":%llu", first ? "" : ",", i, (unsigned long long)st[i]);
            first = false;
        }
    printf("},\"errors\":{");
    for (int i = 0; i < O_COUNT; i++)
        printf("%s\"%s\":%llu", i ? "," : "", outcome_names[i], (unsigned long long)err[i]);
    printf("}");
}

static void print_lat(struct lat *l)
{
    if (l->n > 0)       /* no samples: l->v is NULL, which qsort may not get */
        qsort(l->v, l->n, sizeof(*l->v), cmp_u32);
    printf("\"latency_us\":{\"p50\":%u,\"p90\":%u,\"p99\":%u,\"max\":%u}", pct(l, 0.5), pct(l, 0.9),
           pct(l, 0.99), l->n ? l->v[l->n - 1] : 0);
}

static void json_text(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void report(struct run *R)
{
    uint64_t st[600] = { 0 }, err[O_COUNT] = { 0 }, responses = 0;
    struct lat all = { 0 };
    for (int s = 0; s < R->nspecs; s++) {
        struct spec *sp = &R->specs[s];
        for (int i = 0; i < 600; i++)
            st[i] += sp->statuses[i];
        for (int i = 0; i < O_COUNT; i++)
            err[i] += sp->errors[i];
        responses += sp->responses;
        for (size_t i = 0; i < sp->lat.n; i++)
            lat_add(&all, sp->lat.v[i]);
    }
    uint64_t connects = 0, retries = 0;
    for (int s = 0; s < R->nspecs; s++) {
        connects += R->specs[s].connects;
        retries += R->specs[s].retries;
    }
    printf("{\"started_ms\":%lld,\"duration_ms\":%lld,\"requests\":%llu,\"responses\":%llu,\"connections\":%llu,"
           "\"connects\":%llu,\"retries\":%llu,\"abandoned\":%llu,",
           (long long)R->t0_wall_ms, (long long)((now_us() - R->t0_us) / 1000),
           (unsigned long long)R->requests,
           (unsigned long long)responses, (unsigned long long)R->connections,
           (unsigned long long)connects, (unsigned long long)retries,
           (unsigned long long)R->abandoned);
    print_counts(st, err);
    printf(",");
    print_lat(&all);
    printf(",\"specs\":[");
    for (int s = 0; s < R->nspecs; s++) {
        struct spec *sp = &R->specs[s];
        printf("%s{\"spec\":", s ? "," : "");
        json_text(sp->text);
        printf(",\"responses\":%llu,\"retries\":%llu,", (unsigned long long)sp->responses,
               (unsigned long long)sp->retries);
        print_counts(sp->statuses, sp->errors);
        printf(",");
        print_lat(&sp->lat);
        printf("}");
    }
    printf("]}\n");
    free(all.v);
}

int main(int argc, char **argv)
{
    struct run R = { .nconns = 1, .timeout_us = 10000000 };
    const char *addr = "127.0.0.1", *events = NULL;
    int port = 0, ch;
    double duration = 0;
    char *specs[MAX_SPECS];
    int nspec_args = 0;
    while ((ch = getopt(argc, argv, "a:p:c:d:n:t:q:m:l:r:")) != -1) {
        switch (ch) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': R.nconns = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'n': R.max_requests = strtoull(optarg, NULL, 10); break;
        case 't': R.timeout_us = (int64_t)atoll(optarg) * 1000; break;
        case 'q': R.rate = atof(optarg); break;
        case 'l': events = optarg; break;
        case 'm':
            if (strcmp(optarg, "keepalive") == 0)
                R.mode = M_KEEPALIVE;
            else if (strcmp(optarg, "churn") == 0)
                R.mode = M_CHURN;
            else if (strcmp(optarg, "connect") == 0)
                R.mode = M_CONNECT;
            else
                usage();
            break;
        case 'r':
            if (nspec_args == MAX_SPECS)
                die("too many -r");
            specs[nspec_args++] = optarg;
            break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || R.nconns <= 0 || R.timeout_us <= 0 ||
        (duration <= 0 && R.max_requests == 0))
        usage();
    for (int i = 0; i < nspec_args; i++)
        parse_spec(&R, specs[i], R.mode);
    if (R.nspecs == 0)
        parse_spec(&R, "GET / localhost", R.mode);
    R.addr.sin_family = AF_INET;
    R.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &R.addr.sin_addr) != 1)
        die("-a wants an IPv4 address");
    if (events != NULL && (R.events = fopen(events, "w")) == NULL)
        die("cannot open the event log");

    /* connections: the ones the specs asked for, the rest of -c in turn
     * to the specs that did not say */
    int given = 0, open_specs = 0;
    for (int s = 0; s < R.nspecs; s++) {
        given += R.specs[s].conns;
        open_specs += R.specs[s].conns == 0;
    }
    if (open_specs == 0)
        R.nconns = given;
    else if (R.nconns < given + open_specs)
        R.nconns = given + open_specs;     /* at least one each */
    R.conns = calloc((size_t)R.nconns, sizeof(*R.conns));
    if (R.conns == NULL)
        die("out of memory");
    int k = 0;
    for (int s = 0; s < R.nspecs; s++)
        for (int i = 0; i < R.specs[s].conns; i++)
            R.conns[k++].spec = &R.specs[s];
    for (int s = 0; k < R.nconns; s = (s + 1) % R.nspecs)
        if (R.specs[s].conns == 0)
            R.conns[k++].spec = &R.specs[s];

    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    R.ep = epoll_create1(EPOLL_CLOEXEC);
    if (R.ep < 0)
        die("epoll_create1 failed");
    R.t0_us = now_us();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    R.t0_wall_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
    if (duration > 0)
        R.end_us = R.t0_us + (int64_t)(duration * 1e6);
    R.live = R.nconns;
    for (int i = 0; i < R.nconns; i++) {
        struct conn *c = &R.conns[i];
        c->fd = -1;
        c->id = i;
        c->state = C_IDLE;
        ready(&R, c);
    }
    struct epoll_event evs[256];
    while (R.live > 0) {
        int n = epoll_wait(R.ep, evs, 256, timers(&R));
        if (n < 0 && errno != EINTR)
            die("epoll_wait failed");
        for (int i = 0; i < n; i++)
            on_event(&R, evs[i].data.ptr, evs[i].events);
        if (!over(&R))
            continue;
        /* the run is over: idle and waiting connections stop now, an
         * outstanding request gets until its deadline (a signal
         * abandons it) */
        for (int i = 0; i < R.nconns; i++) {
            struct conn *c = &R.conns[i];
            if (c->done)
                continue;
            bool outstanding = c->state == C_SENDING || c->state == C_READING ||
                               (c->state == C_CONNECTING && R.mode != M_CONNECT);
            if (outstanding && !g_stop)
                continue;
            if (outstanding)
                R.abandoned++;
            retire(&R, c);
        }
    }
    if (R.events != NULL)
        fclose(R.events);
    report(&R);
    for (int s = 0; s < R.nspecs; s++) {
        free(R.specs[s].request);
        free(R.specs[s].lat.v);
    }
    free(R.conns);
    close(R.ep);
    return 0;
}
