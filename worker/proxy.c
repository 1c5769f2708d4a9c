/*
 * proxy.c: one request to an upstream and its answer back (see proxy.h).
 *
 *   pick an upstream (balance.h), take a pooled connection or connect
 *   within connect_timeout; send the re-serialised request head with the
 *   body (streamed from the client, or x->body); read the response head
 *   (response_timeout to the first byte); on_response; send the
 *   re-serialised head to the client and stream the body (idle_timeout
 *   between upstream reads); put the connection back into the pool when
 *   the upstream allows it and nothing is left over.
 *
 * Every attempt ends with ks_balance_end() and its outcome.  A connect
 * failure (or a reset before any byte was accepted) moves on to the next
 * upstream, up to the tenant's `retries`, as long as the request body is
 * still buffered; a pooled connection that turns out dead before any
 * response byte is replaced once by a fresh one when the request is
 * idempotent or nothing of it was accepted.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "worker/balance.h"
#include "worker/body.h"
#include "worker/proxy.h"
#include "worker/out.h"
#include "worker/respond.h"

#define SLICES 16                   /* data slices per write */
#define QUEUE_IOV 64                /* head + SLICES * 3 + last chunk */
#define MAX_RESP_HEADERS 512
#define MAX_TRIES 12                /* retries is at most 10 */

/* ---- per-process state ------------------------------------------------ */

static int grow(char **buf, size_t *cap, size_t want)
{
    if (*cap >= want)
        return 0;
    char *nb = realloc(*buf, want);
    if (nb == NULL)
        return -1;
    *buf = nb;
    *cap = want;
    return 0;
}

int ks_proxy_sync(struct ks_worker *w)
{
    if (w->proxy == NULL && (w->proxy = calloc(1, sizeof(*w->proxy))) == NULL)
        return -1;
    struct ks_proxy *P = w->proxy;
    const struct ks_t_settings *s = &w->table->settings;
    size_t resp_head = s->max_response_header_bytes;
    size_t req_head = s->max_request_line + s->max_header_bytes;
    size_t up = resp_head + 16384 > 65536 ? resp_head + 16384 : 65536;
    size_t acc = s->max_header_bytes + 4096;
    if (grow(&P->up_buf, &P->up_cap, up) < 0 || grow(&P->out_buf, &P->out_cap, req_head + 16384) < 0 ||
        grow(&P->head_buf, &P->head_cap, resp_head + 4096) < 0 ||
        grow(&P->trailers, &P->trailers_cap, acc) < 0 ||
        grow(&P->norm, &P->norm_cap, s->max_request_line + 2) < 0)
        return -1;
    if (acc > P->acc_cap) {
        char *a = realloc(P->acc, acc), *b = a ? realloc(P->racc, acc) : NULL;
        if (a != NULL)
            P->acc = a;
        if (b == NULL)
            return -1;
        P->racc = b;
        P->acc_cap = acc;
    }
    if (P->resp_headers == NULL) {
        P->resp_headers = calloc(MAX_RESP_HEADERS, sizeof(*P->resp_headers));
        if (P->resp_headers == NULL)
            return -1;
        P->max_resp_headers = MAX_RESP_HEADERS;
    }
    return ks_pool_sync(&P->pool, w->table);
}

/* A Content-Length body with at least this much still to come (after
 * up_buf went out; for an upload, after what came with the head) is
 * spliced (t/bench/RESULTS.md: scenario 3). */
#define SPLICE_MIN (64 * 1024)

/* The pipe large bodies are spliced through, made at its first use. */
static bool open_pipe(struct ks_proxy *P)
{
    if (!P->have_pipe && pipe2(P->pipe_fd, O_CLOEXEC | O_NONBLOCK) == 0)
        P->have_pipe = true;
    return P->have_pipe;
}

static void close_pipe(struct ks_proxy *P)
{
    if (P->have_pipe) {
        close(P->pipe_fd[0]);
        close(P->pipe_fd[1]);
        P->have_pipe = false;
    }
}

void ks_proxy_free(struct ks_worker *w)
{
    struct ks_proxy *P = w->proxy;
    if (P == NULL)
        return;
    ks_pool_free(&P->pool);
    close_pipe(P);
    free(P->up_buf);
    free(P->out_buf);
    free(P->head_buf);
    free(P->resp_headers);
    free(P->acc);
    free(P->racc);
    free(P->trailers);
    free(P->norm);
    free(P->body_buf);
    free(P);
    w->proxy = NULL;
}

void ks_proxy_idle(struct ks_worker *w)
{
    if (w->proxy != NULL)
        ks_pool_sweep(&w->proxy->pool, ks_now_ms());
}

uint32_t ks_proxy_shed(struct ks_worker *w)
{
    return w->proxy != NULL ? ks_pool_shed(&w->proxy->pool) : 0;
}

char *ks_proxy_body_buffer(struct ks_worker *w, size_t need)
{
    struct ks_proxy *P = w->proxy;
    if (need <= P->body_cap)
        return P->body_buf;
    size_t cap = P->body_cap ? P->body_cap : 65536;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *nb = realloc(P->body_buf, cap);
    if (nb == NULL)
        return NULL;
    P->body_buf = nb;
    P->body_cap = cap;
    return nb;
}

void ks_proxy_request_done(struct ks_worker *w)
{
    struct ks_proxy *P = w->proxy;
    if (P != NULL && P->body_cap > KS_BODY_KEEP) {
        free(P->body_buf);
        P->body_buf = NULL;
        P->body_cap = 0;
    }
}

/* ---- answering with an error ------------------------------------------ */

int ks_proxy_fail(struct ks_exchange *x, int status, const char *why, const char *extra_headers)
{
    if (x->in != NULL && !ks_body_drainable(x->in, KS_DRAIN_MAX))
        x->close = true;
    x->status = status;
    x->error = why;
    x->responded = true;
    ks_worker_set_state(x->w, KS_WS_WRITING);
    if (ks_respond_error(x->c, x->r, status, why, extra_headers, !x->close) < 0)
        x->close = true;
    return x->close ? -1 : 0;
}

/* ---- an output queue: one writev per batch ----------------------------- */

struct outq {
    struct iovec iov[QUEUE_IOV];
    int n;
    char sizes[QUEUE_IOV / 3 + 1][KS_CHUNK_LINE_MAX];  /* chunk-size lines */
    int nsizes;
};

static void q_reset(struct outq *q)
{
    q->n = 0;
    q->nsizes = 0;
}

static void q_add(struct outq *q, const void *p, size_t n)
{
    if (n > 0)
        q->iov[q->n++] = (struct iovec){ .iov_base = (void *)p, .iov_len = n };
}

/* data as one chunk of our own framing */
static void q_chunk(struct outq *q, const char *p, size_t n)
{
    if (n == 0)
        return;
    char *line = q->sizes[q->nsizes++];
    q_add(q, line, ks_chunk_size_line(line, n));
    q_add(q, p, n);
    q_add(q, "\r\n", 2);
}

static void q_slices(struct outq *q, const struct ks_slice *s, size_t n, bool chunked)
{
    for (size_t i = 0; i < n; i++) {
        if (chunked)
            q_chunk(q, s[i].p, s[i].n);
        else
            q_add(q, s[i].p, s[i].n);
    }
}

static void q_last_chunk(struct outq *q, const char *trailers, size_t tlen)
{
    q_add(q, "0\r\n", 3);
    q_add(q, trailers, tlen);
    q_add(q, "\r\n", 2);
}

/* ---- serialising heads ------------------------------------------------- */

static bool has_field(const struct ks_header *h, size_t nh, const char *name)
{
    for (size_t i = 0; i < nh; i++)
        if (ks_http_name_is(h[i].name, h[i].name_len, name))
            return true;
    return false;
}

/* Is the field named by one of the message's Connection headers? */
static bool named_by_connection(const struct ks_header *h, size_t nh, const char *name, size_t len)
{
    for (size_t i = 0; i < nh; i++) {
        if (!ks_http_name_is(h[i].name, h[i].name_len, "connection"))
            continue;
        const char *v = h[i].value, *end = v + h[i].value_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            const char *t = v;
            while (v < end && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            if (v > t && (size_t)(v - t) == len && strncasecmp(t, name, len) == 0)
                return true;
        }
    }
    return false;
}

/* The edit that decides the field name: the last one naming it. */
static const struct ks_header_edit *last_edit(const struct ks_header_edit *e, size_t n,
                                              const char *name, size_t len)
{
    for (size_t i = n; i-- > 0;)
        if (e[i].name_len == len && strncasecmp(e[i].name, name, len) == 0)
            return &e[i];
    return NULL;
}

/* Is edit i replaced by a later one (not just added to)? */
static bool superseded(const struct ks_header_edit *e, size_t n, size_t i)
{
    for (size_t j = i + 1; j < n; j++)
        if (!e[j].append && e[j].name_len == e[i].name_len &&
            strncasecmp(e[j].name, e[i].name, e[i].name_len) == 0)
            return true;
    return false;
}

/* The edits that survive: the last per name and the lines added to it,
 * with a valid value. */
static void put_edits(struct ks_out *o, const struct ks_header_edit *e, size_t n, const char *skip)
{
    for (size_t i = 0; i < n; i++) {
        if (e[i].value == NULL || superseded(e, n, i))
            continue;
        if (ks_http_edit_protected(e[i].name, e[i].name_len) ||
            (skip != NULL && ks_http_name_is(e[i].name, e[i].name_len, skip)))
            continue;
        if (!ks_http_is_token(e[i].name, e[i].name_len) || !ks_http_is_value(e[i].value, e[i].value_len))
            continue;   /* never let an edit inject a line */
        ks_out_field(o, e[i].name, e[i].name_len, e[i].value, e[i].value_len);
    }
}

/* Client fields replaced by ours on the way up. */
static bool replaced_field(const char *n, size_t len, bool forwarded)
{
    return ks_http_name_is(n, len, "host") || ks_http_name_is(n, len, "expect") ||
           ks_http_name_is(n, len, "x-forwarded-for") || ks_http_name_is(n, len, "x-forwarded-host") ||
           ks_http_name_is(n, len, "x-forwarded-proto") || ks_http_name_is(n, len, "x-request-id") ||
           (forwarded && ks_http_name_is(n, len, "forwarded"));
}

/* Does every quoted-string of v end (RFC 9110 5.6.4, backslash escapes)? */
static bool quotes_closed(const char *v, size_t n)
{
    bool in = false;
    for (size_t i = 0; i < n; i++) {
        if (in && v[i] == '\\')
            i++;
        else if (v[i] == '"')
            in = !in;
    }
    return !in;
}

/* The client's values of field name, joined, for ours to follow.  A
 * Forwarded value with a quoted-string left open is dropped: ours would
 * land inside it (RFC 7239 section 4). */
static void put_joined(struct ks_out *o, const struct ks_request *r, const char *name, bool *any)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct ks_header *h = &r->headers[i];
        if (!ks_http_name_is(h->name, h->name_len, name))
            continue;
        const char *v = h->value;
        size_t n = h->value_len;
        while (n > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            n--;
        }
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n == 0 || (name[0] == 'f' && !quotes_closed(v, n)))
            continue;
        if (*any)
            ks_out_put(o, ", ", 2);
        ks_out_put(o, v, n);
        *any = true;
    }
}

enum up_framing { UF_NONE, UF_LENGTH, UF_CHUNKED };

static size_t build_request_head(struct ks_exchange *x, const struct ks_t_upstream *up,
                                 const struct ks_t_tenant *tn, bool tunnel, enum up_framing fr,
                                 uint64_t length, struct ks_out *o)
{
    const struct ks_table *t = x->w->table;
    const struct ks_request *r = x->r;
    const struct ks_header_edit *e = x->edits;
    size_t ne = x->nedits;
    bool fwd = (tn->flags & KS_TF_FORWARDED) != 0;

    ks_out_put(o, r->method, r->method_len);
    ks_out_put(o, " ", 1);
    if (x->upstream_path != NULL) {
        ks_out_put(o, x->upstream_path, x->upstream_path_len);
    } else if ((tn->flags & KS_TF_STRIP_BASE_PATH) && x->base_len > 0 && x->match_path != NULL) {
        /* the normalised path without the base, always from a '/' */
        size_t rest = x->match_path_len - x->base_len;
        if (rest == 0)
            ks_out_put(o, "/", 1);
        else
            ks_out_put(o, x->match_path + x->base_len, rest);
        if (r->query != NULL) {
            ks_out_put(o, "?", 1);
            ks_out_put(o, r->query, r->query_len);
        }
    } else {
        if (r->origin[0] == '?')
            ks_out_put(o, "/", 1);
        ks_out_put(o, r->origin, r->origin_len);
    }
    ks_out_str(o, " HTTP/1.1\r\n");

    const struct ks_header_edit *he = last_edit(e, ne, "host", 4);
    if (he != NULL && he->value != NULL && ks_http_valid_host(he->value, he->value_len) &&
        he->value_len > 0)
        ks_out_field(o, "Host", 4, he->value, he->value_len);
    else if ((tn->flags & KS_TF_PRESERVE_HOST) && r->host_value != NULL && r->host_value_len > 0)
        ks_out_field(o, "Host", 4, r->host_value, r->host_value_len);
    else
        ks_out_field(o, "Host", 4, ks_t_str(t, up->hostport), strlen(ks_t_str(t, up->hostport)));

    /* most requests have no Connection header: then no field is named.
     * A client's field with "_" in its name is dropped, as nginx does:
     * CGI-style upstreams map "_" and "-" to the same variable, so
     * "X_Forwarded_For" could pass for the X-Forwarded-For we set. */
    bool conn = ks_http_header(r, "connection") != NULL;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct ks_header *h = &r->headers[i];
        if (ks_http_hop_by_hop(h->name, h->name_len) || replaced_field(h->name, h->name_len, fwd) ||
            (r->max_forwards > 0 && ks_http_name_is(h->name, h->name_len, "max-forwards")) ||
            memchr(h->name, '_', h->name_len) != NULL ||
            (conn && named_by_connection(r->headers, r->nheaders, h->name, h->name_len)) ||
            last_edit(e, ne, h->name, h->name_len) != NULL)
            continue;
        ks_out_field(o, h->name, h->name_len, h->value, h->value_len);
    }

    const char *ip = x->c->client_ip;
    if (last_edit(e, ne, "x-forwarded-for", 15) == NULL) {
        bool any = false;
        ks_out_str(o, "X-Forwarded-For: ");
        put_joined(o, r, "x-forwarded-for", &any);
        if (any)
            ks_out_put(o, ", ", 2);
        ks_out_str(o, ip);
        ks_out_put(o, "\r\n", 2);
    }
    if (last_edit(e, ne, "x-forwarded-host", 16) == NULL && r->host_value != NULL &&
        r->host_value_len > 0)
        ks_out_field(o, "X-Forwarded-Host", 16, r->host_value, r->host_value_len);
    if (last_edit(e, ne, "x-forwarded-proto", 17) == NULL)
        ks_out_str(o, "X-Forwarded-Proto: http\r\n");
    if (fwd && last_edit(e, ne, "forwarded", 9) == NULL) {
        bool any = false;
        ks_out_str(o, "Forwarded: ");
        put_joined(o, r, "forwarded", &any);
        if (any)
            ks_out_put(o, ", ", 2);
        /* RFC 7239: an IPv6 node is quoted and bracketed */
        bool v6 = strchr(ip, ':') != NULL;
        ks_out_str(o, v6 ? "for=\"[" : "for=");
        ks_out_str(o, ip);
        ks_out_str(o, v6 ? "]\"" : "");
        if (r->host_value != NULL && r->host_value_len > 0) {
            ks_out_str(o, ";host=\"");
            ks_out_put(o, r->host_value, r->host_value_len);
            ks_out_str(o, "\"");
        }
        ks_out_str(o, ";proto=http\r\n");
    }
    if (last_edit(e, ne, "x-request-id", 12) == NULL)
        ks_out_field(o, "X-Request-ID", 12, r->id, r->id_len);
    put_edits(o, e, ne, "host");
    ks_out_str(o, "Via: 1.1 ");
    ks_out_str(o, t->settings.via_name);
    ks_out_put(o, "\r\n", 2);

    char num[32];
    if (r->max_forwards > 0)    /* one hop fewer (RFC 9110 7.6.2) */
        ks_out_field(o, "Max-Forwards", 12, num, ks_fmt_dec(num, (uint64_t)r->max_forwards - 1));
    if (fr == UF_LENGTH) {
        ks_out_field(o, "Content-Length", 14, num, ks_fmt_dec(num, length));
    } else if (fr == UF_CHUNKED) {
        ks_out_str(o, "Transfer-Encoding: chunked\r\n");
    }
    if (tunnel) {
        const struct ks_header *uh = ks_http_header(r, "upgrade");
        ks_out_field(o, "Upgrade", 7, uh->value, uh->value_len);
        ks_out_str(o, "Connection: upgrade\r\n");
    } else if (up->keepalive <= 0) {
        ks_out_str(o, "Connection: close\r\n");
    }
    ks_out_put(o, "\r\n", 2);
    return o->overflow ? 0 : o->len;
}

/* ---- the upstream connection --------------------------------------------- */

static bool local_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* *local: no socket could be made at all (our own descriptors or memory
 * ran out, even after closing the idle pooled connections), which says
 * nothing about the upstream. */
static enum ks_io_result connect_upstream(struct ks_worker *w, const struct ks_t_upstream *up,
                                          int64_t deadline, int *out, bool *local)
{
    *local = false;
    int fd = socket(up->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && local_shortage(errno)) {
        if (ks_worker_short_of_fds(w, "upstream socket", errno) > 0)
            fd = socket(up->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        *local = fd < 0;
    }
    if (fd < 0)
        return KS_IO_ERROR;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&up->addr.ss, up->addr.len) < 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            close(fd);
            return KS_IO_ERROR;
        }
        enum ks_io_result r = ks_wait_fd(w, fd, POLLOUT, deadline, false);
        int err = 0;
        socklen_t len = sizeof(err);
        if (r == KS_IO_OK && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
            r = KS_IO_ERROR;
        if (r != KS_IO_OK) {
            close(fd);
            return r;
        }
    }
    /* non-blocking only for the connect's own deadline */
    ks_sock_blocking(w, fd, true, false);
    *out = fd;
    return KS_IO_OK;
}

#define MAX_INTERIM 32
#define POOL_QUIET_MS 2

/* A pooled connection the upstream has not closed and has sent nothing on. */
static bool pooled_alive(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static bool idempotent(const struct ks_request *r)
{
    /* (TRACE is idempotent too, but never gets this far: http.c refuses it) */
    static const char *const m[] = { "GET", "HEAD", "OPTIONS", "PUT", "DELETE" };
    for (size_t i = 0; i < KS_ARRAY_LEN(m); i++)
        if (strcmp(r->method, m[i]) == 0)
            return true;
    return false;
}

/* ---- the response head ---------------------------------------------------- */

struct resp {
    http_parser p;
    struct ks_fields f;
    const char *reason;
    size_t reason_len;
    bool head_done, skip_body, too_many;
    size_t head_len;            /* bytes of the head in up_buf */
    size_t len;                 /* bytes in up_buf */
    bool keep_alive;            /* the upstream allows reuse */
};

static int resp_status(http_parser *p, const char *at, size_t len)
{
    struct resp *rp = p->data;
    if (rp->reason == NULL)
        rp->reason = at;
    rp->reason_len = (size_t)(at + len - rp->reason);
    return 0;
}

static int resp_field(http_parser *p, const char *at, size_t len)
{
    struct resp *rp = p->data;
    if (ks_fields_name(&rp->f, at, len) == 0)
        return 0;
    rp->too_many = true;
    return -1;
}

static int resp_value(http_parser *p, const char *at, size_t len)
{
    struct resp *rp = p->data;
    ks_fields_value(&rp->f, at, len);
    return 0;
}

static int resp_headers_complete(http_parser *p)
{
    struct resp *rp = p->data;
    rp->head_done = true;
    rp->keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return rp->skip_body ? 1 : 0;   /* 1: the answer to a HEAD has no body */
}

static const http_parser_settings resp_settings = {
    .on_status = resp_status,
    .on_header_field = resp_field,
    .on_header_value = resp_value,
    .on_headers_complete = resp_headers_complete,
};

static void resp_start(struct resp *rp, struct ks_proxy *P, bool head_request)
{
    http_parser_init(&rp->p, HTTP_RESPONSE);
    rp->p.data = rp;
    rp->f = (struct ks_fields){ .h = P->resp_headers, .max = P->max_resp_headers };
    rp->reason = NULL;
    rp->reason_len = 0;
    rp->head_done = rp->too_many = false;
    rp->skip_body = head_request;
    rp->head_len = 0;
}

enum head_result { HR_OK, HR_EMPTY, HR_TIMEOUT, HR_BAD, HR_CLIENT_GONE };

/* Read and parse one response head into up_buf, whole by deadline (an
 * upstream trickling its head gets no more time per byte).  Bytes
 * already in up_buf[0..rp->len) are parsed first (what followed an
 * interim head).  While the upstream is silent, the client is looked at
 * (ks_read_watching). */
static enum head_result read_head(struct ks_worker *w, struct ks_proxy *P, struct resp *rp, int fd,
                                  int client_fd, int64_t deadline, const char **why)
{
    size_t limit = w->table->settings.max_response_header_bytes;
    size_t parsed = 0;
    bool any = rp->len > 0;
    for (;;) {
        if (parsed < rp->len) {
            parsed += http_parser_execute(&rp->p, &resp_settings, P->up_buf + parsed, rp->len - parsed);
            if (rp->head_done) {
                /* the pause leaves the head's final LF to the parser */
                http_parser_pause(&rp->p, 0);
                parsed += http_parser_execute(&rp->p, &resp_settings, P->up_buf + parsed, 1);
                enum http_errno e = HTTP_PARSER_ERRNO(&rp->p);
                if (e == HPE_PAUSED)
                    http_parser_pause(&rp->p, 0);
                else if (e != HPE_OK) {
                    *why = "invalid response head from the upstream";
                    return HR_BAD;
                }
                rp->head_len = parsed;
                if (parsed > limit) {
                    *why = "response head from the upstream too large";
                    return HR_BAD;
                }
                if ((*why = ks_http_check_response_head(P->up_buf, parsed)) != NULL)
                    return HR_BAD;
                return HR_OK;
            }
            if (HTTP_PARSER_ERRNO(&rp->p) != HPE_OK) {
                *why = rp->too_many ? "too many header fields in the upstream's response"
                                    : "invalid response head from the upstream";
                return HR_BAD;
            }
            if (parsed > limit || rp->len == P->up_cap) {
                *why = "response head from the upstream too large";
                return HR_BAD;
            }
        }
        size_t got;
        bool client_left;
        enum ks_io_result io = ks_read_watching(w, fd, client_fd, P->up_buf + rp->len, P->up_cap - rp->len,
                                                deadline, &got, &client_left);
        if (client_left) {
            *why = "client closed the connection before the upstream answered";
            return HR_CLIENT_GONE;
        }
        if (io == KS_IO_TIMEOUT) {
            *why = "upstream did not answer in time";
            return HR_TIMEOUT;
        }
        if (io != KS_IO_OK) {
            *why = "upstream closed the connection before a complete response head";
            return any ? HR_BAD : HR_EMPTY;
        }
        any = true;
        rp->len += got;
    }
}

/* ---- the response head to the client ---------------------------------------- */

/* What a failed write of the response says about the client: one that
 * stopped reading is not one that left. */
static const char *client_trouble(enum ks_io_result io)
{
    return io == KS_IO_TIMEOUT ? "client did not read the response within send_timeout" : "client gone";
}

static bool skip_response_field(const struct resp *rp, const struct ks_header *h, bool upgrade,
                                bool conn, const struct ks_response_head *rh)
{
    if (ks_http_name_is(h->name, h->name_len, "upgrade"))
        return !upgrade;
    return ks_http_hop_by_hop(h->name, h->name_len) || ks_http_name_is(h->name, h->name_len, "x-request-id") ||
           (conn && named_by_connection(rp->f.h, rp->f.n, h->name, h->name_len)) ||
           last_edit(rh->edits, rh->nedits, h->name, h->name_len) != NULL;
}

/* CF_EMPTY: "Content-Length: 0" for a status that may have a body where
 * the upstream's had none (a response hook made a 204 a 200). */
enum client_framing { CF_NONE, CF_EMPTY, CF_LENGTH, CF_CHUNKED, CF_CLOSE };

static size_t build_response_head(struct ks_exchange *x, const struct resp *rp,
                                  const struct ks_response_head *rh, enum client_framing cf,
                                  bool upgrade, struct ks_out *o)
{
    char line[24];
    if (rh->status == (int)rp->p.status_code && rp->reason_len > 0) {
        ks_out_status_line(o, rh->status, rp->reason, rp->reason_len);
    } else {
        const char *reason = ks_status_reason(rh->status);
        ks_out_status_line(o, rh->status, reason, strlen(reason));
    }
    bool conn = has_field(rp->f.h, rp->f.n, "connection"), date = false;
    for (size_t i = 0; i < rp->f.n; i++) {
        const struct ks_header *h = &rp->f.h[i];
        if (skip_response_field(rp, h, upgrade, conn, rh))
            continue;
        ks_out_field(o, h->name, h->name_len, h->value, h->value_len);
        date = date || ks_http_name_is(h->name, h->name_len, "date");
    }
    put_edits(o, rh->edits, rh->nedits, NULL);
    if (!date && last_edit(rh->edits, rh->nedits, "date", 4) == NULL) {
        /* RFC 9110 6.6.1: a recipient with a clock adds the one an
         * origin without a clock left out */
        size_t dl;
        const char *d = ks_date_header(x->w, &dl);
        ks_out_put(o, d, dl);
    }
    ks_out_field(o, "X-Request-ID", 12, x->r->id, x->r->id_len);
    bool head_req = x->r->head_method;
    if (cf == CF_LENGTH || ((head_req || rh->status == 304) && (rp->p.flags & F_CONTENTLENGTH))) {
        ks_out_field(o, "Content-Length", 14, line, ks_fmt_dec(line, rp->p.content_length));
    } else if (cf == CF_CHUNKED || (head_req && (rp->p.flags & F_CHUNKED) && x->r->http_minor >= 1)) {
        ks_out_str(o, "Transfer-Encoding: chunked\r\n");
    } else if (cf == CF_EMPTY) {
        ks_out_str(o, "Content-Length: 0\r\n");
    }
    if (upgrade)
        ks_out_str(o, "Connection: upgrade\r\n");
    else if (x->close)
        ks_out_str(o, "Connection: close\r\n");
    else if (x->r->http_minor == 0)
        ks_out_str(o, "Connection: keep-alive\r\n");
    ks_out_put(o, "\r\n", 2);
    return o->overflow ? 0 : o->len;
}

/* ---- one attempt ---------------------------------------------------------- */

enum attempt_result {
    AT_DONE,        /* answered (or the client is gone): x says how */
    AT_NEXT,        /* try the next upstream: nothing reached this one, or
                     * it sent nothing back to an idempotent request */
    AT_FAIL,        /* answer status/why (nothing was sent to the client) */
};

struct attempt {
    uint32_t u;
    const struct ks_t_upstream *up;
    int fd;
    bool pooled;
    bool sent_any;                  /* the upstream accepted request bytes */
    bool interim;                   /* the upstream answered an interim head */
    bool silent;                    /* it closed or reset with no byte of an answer */
    enum ks_upstream_outcome outcome;
    int status;
    const char *why;
    int64_t start_us;
};

static enum attempt_result fail_attempt(struct attempt *a, enum ks_upstream_outcome o, int status,
                                        const char *why, enum attempt_result res)
{
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
    a->outcome = o;
    a->status = status;
    a->why = why;
    return res;
}

static enum ks_io_result flush_up(struct ks_worker *w, struct attempt *a, struct outq *q)
{
    size_t written = 0;
    enum ks_io_result io =
        ks_write_all_iov(w, a->fd, q->iov, q->n, ks_now_ms() + a->up->idle_timeout_ms, &written);
    if (written > 0)
        a->sent_any = true;
    q_reset(q);
    return io;
}

enum send_result {
    SEND_OK,
    SEND_UPSTREAM,      /* writing to the upstream failed */
    SEND_CLIENT,        /* the client's body failed: x->in says how */
    SEND_TOO_BIG,       /* the head does not fit */
    SEND_GONE,          /* the body is no longer buffered: no retry */
};

/* The request head and its body. */
static enum send_result send_request(struct ks_exchange *x, struct attempt *a,
                                     const struct ks_t_tenant *tn, bool tunnel,
                                     const struct ks_body_mark *mark)
{
    struct ks_proxy *P = x->w->proxy;
    struct ks_body *in = x->in;
    /* every attempt sends the body from its start (a no-op the first time) */
    if (in != NULL && !ks_body_rewind(in, mark))
        return SEND_GONE;
    enum up_framing fr = UF_NONE;
    uint64_t length = 0;
    if (x->body_read) {
        if (x->body_len > 0 || x->r->has_content_length || x->r->chunked) {
            fr = UF_LENGTH;
            length = x->body_len;
        }
    } else if (x->r->chunked) {
        fr = UF_CHUNKED;
    } else if (x->r->has_content_length) {
        fr = UF_LENGTH;
        length = x->r->content_length;
    }
    struct ks_out o = { .buf = P->out_buf, .cap = P->out_cap };
    size_t hlen = build_request_head(x, a->up, tn, tunnel, fr, length, &o);
    if (hlen == 0)
        return SEND_TOO_BIG;
    struct outq q;
    q_reset(&q);
    q_add(&q, P->out_buf, hlen);
    if (x->body_read) {
        q_add(&q, x->body, x->body_len);
        return flush_up(x->w, a, &q) == KS_IO_OK ? SEND_OK : SEND_UPSTREAM;
    }
    if (in == NULL || !ks_body_pending(in))
        return flush_up(x->w, a, &q) == KS_IO_OK ? SEND_OK : SEND_UPSTREAM;
    /* the body bytes that came with the head go in the same write */
    struct ks_slice s[SLICES];
    size_t n;
    bool chunked = fr == UF_CHUNKED;
    if (ks_body_buffered(in, s, SLICES, &n) < 0)
        return SEND_CLIENT;
    for (;;) {
        q_slices(&q, s, n, chunked);
        if (!ks_body_pending(in) && chunked) {
            size_t tl = ks_decoder_trailers(&in->dec, P->trailers, P->trailers_cap);
            q_last_chunk(&q, P->trailers, tl);
        }
        if (q.n > 0 && flush_up(x->w, a, &q) != KS_IO_OK)
            return SEND_UPSTREAM;
        if (!ks_body_pending(in))
            return SEND_OK;
        ks_worker_set_state(x->w, KS_WS_READING);
        if (!chunked && ks_body_splice_ready(in, SPLICE_MIN) && open_pipe(P)) {
            /* an upload's rest as it comes, moved by the kernel */
            int rc = ks_body_splice_to(in, a->fd, P->pipe_fd, a->up->idle_timeout_ms, P->up_buf, P->up_cap);
            ks_worker_set_state(x->w, KS_WS_PROXYING);
            if (rc == 0)
                return SEND_OK;
            close_pipe(P);      /* it may hold what never got out */
            return rc == -1 ? SEND_CLIENT : SEND_UPSTREAM;
        }
        int rc = ks_body_next(in, s, SLICES, &n);
        ks_worker_set_state(x->w, KS_WS_PROXYING);
        if (rc == -2)
            return SEND_UPSTREAM;   /* it answered: read that */
        if (rc < 0)
            return SEND_CLIENT;
    }
}

static enum client_framing client_framing(const struct ks_exchange *x, enum ks_body_kind kind)
{
    if (kind == KS_BODY_NONE)
        return CF_NONE;
    if (kind == KS_BODY_LENGTH)
        return CF_LENGTH;
    /* chunked and close-delimited bodies are re-chunked for HTTP/1.1
     * clients (which keeps their connection); HTTP/1.0 gets EOF */
    return x->r->http_minor >= 1 ? CF_CHUNKED : CF_CLOSE;
}

/* What the response head says about its body. */
static int response_kind(const struct ks_exchange *x, const struct resp *rp, enum ks_body_kind *kind)
{
    int st = (int)rp->p.status_code;
    size_t nte = 0;
    bool chunked_only = true;
    for (size_t i = 0; i < rp->f.n; i++)
        if (ks_http_name_is(rp->f.h[i].name, rp->f.h[i].name_len, "transfer-encoding")) {
            nte++;
            chunked_only &= ks_http_te_is_chunked(rp->f.h[i].value, rp->f.h[i].value_len);
        }
    /* "gzip, chunked" too: passing the body on de-chunked would drop the
     * gzip coding without a trace */
    if (nte > 1 || (nte == 1 && (!chunked_only || !(rp->p.flags & F_CHUNKED))))
        return -1;      /* a coding we could not re-frame */
    if (x->r->head_method || st < 200 || st == 204 || st == 304)
        *kind = KS_BODY_NONE;
    else if (rp->p.flags & F_CHUNKED)
        *kind = KS_BODY_CHUNKED;
    else if (rp->p.flags & F_CONTENTLENGTH)
        *kind = rp->p.content_length > 0 ? KS_BODY_LENGTH : KS_BODY_NONE;
    else
        *kind = KS_BODY_EOF;
    return 0;
}

/* Interim (1xx) heads go to HTTP/1.1 clients as they came, re-serialised. */
static int relay_interim(struct ks_exchange *x, struct ks_proxy *P, struct resp *rp)
{
    if (x->r->http_minor == 0)
        return 0;
    struct ks_out o = { .buf = P->head_buf, .cap = P->head_cap };
    char line[48];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %u ", rp->p.status_code);
    ks_out_put(&o, line, (size_t)n);
    ks_out_put(&o, rp->reason, rp->reason_len);
    ks_out_put(&o, "\r\n", 2);
    for (size_t i = 0; i < rp->f.n; i++) {
        const struct ks_header *h = &rp->f.h[i];
        if (!ks_http_hop_by_hop(h->name, h->name_len) && !named_by_connection(rp->f.h, rp->f.n, h->name, h->name_len))
            ks_out_field(&o, h->name, h->name_len, h->value, h->value_len);
    }
    ks_out_put(&o, "\r\n", 2);
    if (o.overflow)
        return 0;
    int64_t dl = ks_now_ms() + x->w->table->settings.send_timeout_ms;
    return ks_conn_write(x->c, P->head_buf, o.len, dl) == KS_IO_OK ? 0 : -1;
}

/* 101: the client and the upstream talk their new protocol through us. */
static enum attempt_result tunnel(struct ks_exchange *x, struct attempt *a, struct resp *rp,
                                  const struct ks_response_head *rh)
{
    struct ks_worker *w = x->w;
    struct ks_proxy *P = w->proxy;
    struct ks_conn *c = x->c;
    x->close = true;
    struct ks_out o = { .buf = P->head_buf, .cap = P->head_cap };
    size_t hlen = build_response_head(x, rp, rh, CF_NONE, true, &o);
    if (hlen == 0)
        return fail_attempt(a, KS_UO_BAD_RESPONSE, 502, "response head too large", AT_FAIL);
    struct iovec iov[2] = {
        { .iov_base = P->head_buf, .iov_len = hlen },
        { .iov_base = P->up_buf + rp->head_len, .iov_len = rp->len - rp->head_len },
    };
    x->status = 101;
    x->responded = true;
    a->outcome = KS_UO_OK;
    int64_t dl = ks_now_ms() + w->table->settings.send_timeout_ms;
    if (ks_conn_writev(c, iov, 2, dl) != KS_IO_OK) {
        close(a->fd);
        a->fd = -1;
        return AT_DONE;
    }
    /* what the client sent after its request head already speaks the
     * new protocol (and is the client's, for the access log, as what
     * the relay moves later is) */
    x->tunnel_in = c->len - c->start;
    if (c->start < c->len) {
        size_t written;
        struct iovec ci = { .iov_base = c->buf + c->start, .iov_len = c->len - c->start };
        if (ks_write_all_iov(w, a->fd, &ci, 1, ks_now_ms() + a->up->idle_timeout_ms, &written) != KS_IO_OK) {
            close(a->fd);
            a->fd = -1;
            return AT_DONE;
        }
        c->start = c->len;
    }
    size_t cap = P->out_cap < P->up_cap ? P->out_cap : P->up_cap;
    uint64_t ab = 0, ba = 0;
    ks_worker_set_state(w, KS_WS_PROXYING);
    ks_tunnel(w, c->fd, a->fd, P->out_buf, P->up_buf, cap, a->up->idle_timeout_ms, &ab, &ba);
    c->bytes_in += ab;
    c->bytes_out += ba;
    x->tunnel_in += ab;
    atomic_fetch_add_explicit(&w->score->bytes_in, ab, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->score->bytes_out, ba, memory_order_relaxed);
    close(a->fd);
    a->fd = -1;
    return AT_DONE;
}

/* A response hook changed the upstream's 101 into another answer: the
 * upstream already speaks the new protocol on its connection, so that is
 * closed, and the client gets the hook's status and headers (none of the
 * 101's, which describe a switch that does not happen) without a body. */
static enum attempt_result refuse_upgrade(struct ks_exchange *x, struct attempt *a, struct resp *rp,
                                          const struct ks_response_head *rh)
{
    close(a->fd);
    a->fd = -1;
    a->outcome = KS_UO_OK;
    x->close = true;
    rp->f.n = 0;
    rp->p.content_length = 0;
    struct ks_out o = { .buf = x->w->proxy->head_buf, .cap = x->w->proxy->head_cap };
    bool empty = rh->status == 204 || rh->status == 304;
    size_t hlen = build_response_head(x, rp, rh, empty ? CF_NONE : CF_LENGTH, false, &o);
    if (hlen == 0)
        return fail_attempt(a, KS_UO_OK, 500, "response head too large", AT_FAIL);
    x->status = rh->status;
    x->responded = true;
    int64_t dl = ks_now_ms() + x->w->table->settings.send_timeout_ms;
    enum ks_io_result io = ks_conn_write(x->c, o.buf, hlen, dl);
    if (io != KS_IO_OK)
        x->error = client_trouble(io);
    return AT_DONE;
}

/* What a failed read of the response body says about the upstream. */
static enum ks_upstream_outcome upstream_body_trouble(enum ks_io_result io, const char **trouble)
{
    bool timeout = io == KS_IO_TIMEOUT;
    *trouble = timeout ? "upstream idle timeout while sending the body"
                       : "upstream closed the connection in the middle of the body";
    return timeout ? KS_UO_TIMEOUT : KS_UO_RESET;
}

/* The response body, from what followed the head in up_buf on. */
static enum attempt_result relay_body(struct ks_exchange *x, struct attempt *a, struct resp *rp,
                                      enum ks_body_kind kind, enum client_framing cf, size_t hlen)
{
    struct ks_worker *w = x->w;
    struct ks_proxy *P = w->proxy;
    struct ks_decoder d;
    ks_decoder_init(&d, &rp->p, kind, P->racc, P->acc_cap);
    d.max_trailers = P->max_resp_headers;
    struct ks_slice s[SLICES];
    struct outq q;
    q_reset(&q);
    q_add(&q, P->head_buf, hlen);
    size_t pos = rp->head_len;
    bool chunked = cf == CF_CHUNKED;
    const char *trouble = NULL;
    enum ks_upstream_outcome bad = KS_UO_OK;
    bool head_out = false, spliced = false;
    ks_worker_set_state(w, KS_WS_WRITING);
    for (;;) {
        while (pos < rp->len && !d.done && q.n + 3 * SLICES + 4 <= QUEUE_IOV) {
            size_t n;
            ssize_t k = ks_decoder_run(&d, P->up_buf + pos, rp->len - pos, s, SLICES, &n);
            if (k < 0) {
                trouble = d.error;
                bad = KS_UO_BAD_RESPONSE;
                break;
            }
            pos += (size_t)k;
            q_slices(&q, s, n, chunked);
        }
        if (trouble != NULL)
            break;
        if (d.done && chunked) {
            size_t tl = ks_decoder_trailers(&d, P->trailers, P->trailers_cap);
            q_last_chunk(&q, P->trailers, tl);
        }
        if (q.n > 0) {
            int64_t dl = ks_now_ms() + w->table->settings.send_timeout_ms;
            enum ks_io_result io = ks_conn_writev(x->c, q.iov, q.n, dl);
            q_reset(&q);
            if (io != KS_IO_OK) {
                trouble = client_trouble(io);
                break;
            }
            head_out = true;
        }
        if (d.done)
            break;
        if (pos < rp->len)
            continue;
        /* everything sent: the buffer is free again */
        pos = rp->len = 0;
        uint64_t left = ks_decoder_length_left(&d);
        if (left >= SPLICE_MIN && open_pipe(P)) {
            /* the rest of a Content-Length body is the client's as it
             * comes: moved by the kernel, never copied into the worker */
            bool in_failed;
            enum ks_io_result io = ks_conn_splice_from(x->c, a->fd, P->pipe_fd, left, a->up->idle_timeout_ms,
                                                       w->table->settings.send_timeout_ms,
                                                       P->up_buf, P->up_cap, &in_failed);
            if (io == KS_IO_OK) {
                ks_decoder_passed(&d, left);
                spliced = true;
                break;
            }
            close_pipe(P);      /* it may hold what never got out */
            if (in_failed)
                bad = upstream_body_trouble(io, &trouble);
            else
                trouble = client_trouble(io);
            break;
        }
        size_t got;
        bool client_left;
        ks_worker_set_state(w, KS_WS_PROXYING);
        /* watching the client: a stalled stream (a long poll, server-sent
         * events) must not hold the worker for a client that has left,
         * nor count against an upstream that did nothing wrong */
        enum ks_io_result io = ks_read_watching(w, a->fd, x->c->fd, P->up_buf, P->up_cap,
                                                ks_now_ms() + a->up->idle_timeout_ms, &got, &client_left);
        ks_worker_set_state(w, KS_WS_WRITING);
        if (client_left) {
            trouble = "client closed the connection while the body was relayed";
            break;
        }
        if (io == KS_IO_OK) {
            rp->len = got;
            continue;
        }
        if (io == KS_IO_EOF && ks_decoder_eof(&d) == 0)
            continue;   /* a close-delimited body ends here */
        bad = upstream_body_trouble(io, &trouble);
        break;
    }
    if (trouble != NULL && !head_out && bad != KS_UO_OK)
        return fail_attempt(a, bad, 502, trouble, AT_FAIL);    /* a bad chunk in the first read */
    if (trouble != NULL) {
        /* the head is out: all we can do is cut the connection short */
        x->close = true;
        x->error = trouble;
        close(a->fd);
        a->fd = -1;
        if (bad != KS_UO_OK)
            a->outcome = bad;
        return AT_DONE;
    }
    /* reusable: the upstream allows it, the body had its own end and
     * nothing more arrived behind it (in the last read, or, after a body
     * the kernel moved, in the socket: one recv per 64 KB or more) */
    if (rp->keep_alive && kind != KS_BODY_EOF && pos == rp->len && a->up->keepalive > 0 &&
        (!spliced || pooled_alive(a->fd)))
        ks_pool_put(&P->pool, a->u, a->fd, ks_now_ms());
    else
        close(a->fd);
    a->fd = -1;
    return AT_DONE;
}

/* The answer: interim heads, then the final head and its body. */
static enum attempt_result relay_response(struct ks_exchange *x, struct attempt *a, struct resp *rp,
                                          bool tunnelling, int64_t first_deadline)
{
    struct ks_worker *w = x->w;
    struct ks_proxy *P = w->proxy;
    const char *why = NULL;
    for (int interims = 0;; interims++) {
        enum head_result hr = read_head(w, P, rp, a->fd, x->c->fd, first_deadline, &why);
        if (hr == HR_CLIENT_GONE) {
            /* nginx's 499: logged, never sent; the upstream is not to blame */
            x->close = true;
            x->status = 499;
            x->error = why;
            return fail_attempt(a, KS_UO_LOCAL, 0, NULL, AT_DONE);
        }
        if (hr == HR_TIMEOUT)
            return fail_attempt(a, KS_UO_TIMEOUT, 504, why, AT_FAIL);
        if (hr == HR_EMPTY) {
            a->silent = interims == 0;
            return fail_attempt(a, KS_UO_RESET, 502, why, AT_FAIL);
        }
        if (hr == HR_BAD)
            return fail_attempt(a, KS_UO_BAD_RESPONSE, 502, why, AT_FAIL);
        int st = (int)rp->p.status_code;
        if (st == 101 || st >= 200)
            break;
        /* an interim head: pass it on, then parse what followed it.  The
         * final head is still due by the response deadline, whatever
         * interim heads come before it, and there are at most
         * MAX_INTERIM of them. */
        if (interims == MAX_INTERIM)
            return fail_attempt(a, KS_UO_BAD_RESPONSE, 502, "too many interim responses from the upstream",
                                AT_FAIL);
        a->interim = true;
        if (relay_interim(x, P, rp) < 0) {
            x->close = true;
            x->error = "client gone";
            return fail_attempt(a, KS_UO_OK, 0, NULL, AT_DONE);
        }
        size_t rest = rp->len - rp->head_len;
        memmove(P->up_buf, P->up_buf + rp->head_len, rest);
        resp_start(rp, P, x->r->head_method);
        rp->len = rest;
    }
    int st = (int)rp->p.status_code;
    x->upstream_status = st;
    a->outcome = st >= 500 ? KS_UO_5XX : KS_UO_OK;
    if (st == 101 && !tunnelling)
        return fail_attempt(a, KS_UO_BAD_RESPONSE, 502, "upstream switched protocols unasked", AT_FAIL);

    struct ks_response_head rh = {
        .status = st, .headers = rp->f.h, .nheaders = rp->f.n,
        .edits = P->resp_edits, .nedits = 0, .max_edits = KS_ARRAY_LEN(P->resp_edits),
    };
    if (x->on_response != NULL && x->on_response(x, &rh) < 0)
        return fail_attempt(a, a->outcome, 500, rh.why != NULL ? rh.why : "on_response failed", AT_FAIL);
    if (rh.nheaders < rp->f.n)
        rp->f.n = rh.nheaders;       /* on_response may only drop from the end */
    if (rh.status != st && (rh.status < 200 || rh.status > 599))
        return fail_attempt(a, a->outcome, 500, "on_response set an invalid status", AT_FAIL);
    if (st == 101 && rh.status == 101)
        return tunnel(x, a, rp, &rh);
    if (st == 101)
        return refuse_upgrade(x, a, rp, &rh);

    enum ks_body_kind kind;
    if (response_kind(x, rp, &kind) < 0)
        return fail_attempt(a, KS_UO_BAD_RESPONSE, 502, "unsupported transfer coding from the upstream",
                            AT_FAIL);
    bool body_allowed = rh.status != 204 && rh.status != 304 && rh.status != 205;
    if (!body_allowed && kind != KS_BODY_NONE && !(kind == KS_BODY_LENGTH && rp->p.content_length == 0)) {
        /* on_response made it a status without a body: the upstream's is
         * dropped, with the connection it is still on */
        kind = KS_BODY_NONE;
        rp->keep_alive = false;
    }
    enum client_framing cf = client_framing(x, kind);
    /* a 205 says it has no body; a status with one where the upstream's
     * (a 204 or 304) had none gets an empty one: either way
     * "Content-Length: 0", or the client would read until the close */
    if (cf == CF_NONE && !x->r->head_method && (rh.status == 205 || body_allowed))
        cf = CF_EMPTY;
    if (cf == CF_CLOSE || (x->in != NULL && ks_body_pending(x->in)))
        x->close = true;
    struct ks_out o = { .buf = P->head_buf, .cap = P->head_cap };
    size_t hlen = build_response_head(x, rp, &rh, cf, false, &o);
    if (hlen == 0)
        return fail_attempt(a, KS_UO_BAD_RESPONSE, 502, "response head from the upstream too large",
                            AT_FAIL);
    x->status = rh.status;
    x->responded = true;
    if (a->outcome == KS_UO_OK)
        ks_balance_answered(w, a->u);
    return relay_body(x, a, rp, kind, cf, hlen);
}

/* Bytes from the upstream while its request is written: a final answer,
 * or an interim head (which the upstream may send unasked, and which the
 * rest of the request must still follow)?  What has come is taken off
 * the socket into P->early, so that it no longer wakes the wait, and it
 * is parsed first with the answer.  Interim heads, whole or still coming
 * (split across segments), keep the watch on: a final answer after them
 * (a 100, then a 413 to an upload the upstream will not read) still ends
 * the write.  Anything else ends it at once: a final answer, or bytes
 * that cannot start one (bare LF line ends, not a status line), which
 * the answer's parser then refuses.  Only interim heads filling
 * P->early (4 KB) end the watch, with the rest left on the socket. */
static enum ks_answer answer_seen(struct ks_worker *w)
{
    struct ks_proxy *P = w->proxy;
    size_t room = sizeof(P->early) - P->early_len;
    if (room == 0)
        return KS_ANSWER_LEFT;
    ssize_t n = recv(w->answer_fd, P->early + P->early_len, room, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return KS_ANSWER_TAKEN;     /* nothing after all: watch on */
    if (n <= 0)
        return KS_ANSWER_FINAL;     /* closed or failed: the answer's read says so */
    P->early_len += (size_t)n;
    static const char version[] = "HTTP/1.";
    for (;;) {
        const char *h = P->early + P->early_done;
        size_t have = P->early_len - P->early_done;
        size_t v = have < 7 ? have : 7;
        if (memcmp(h, version, v) != 0)
            return KS_ANSWER_FINAL;
        if (have < 10)
            return KS_ANSWER_TAKEN; /* "HTTP/1.x 1" not all there yet */
        if (h[8] != ' ' || h[9] != '1')
            return KS_ANSWER_FINAL;
        const char *end = memmem(h, have, "\r\n\r\n", 4);
        for (const char *lf = memchr(h, '\n', have); lf != NULL && (end == NULL || lf < end);
             lf = memchr(lf + 1, '\n', have - (size_t)(lf + 1 - h)))
            if (lf == h || lf[-1] != '\r')
                return KS_ANSWER_FINAL; /* malformed: for the parser to refuse */
        if (end == NULL)
            return P->early_len == sizeof(P->early) ? KS_ANSWER_LEFT : KS_ANSWER_TAKEN;
        P->early_done += (size_t)(end + 4 - h);
    }
}

static enum attempt_result attempt(struct ks_exchange *x, struct attempt *a,
                                   const struct ks_t_tenant *tn, const struct ks_body_mark *mark,
                                   bool tunnelling)
{
    struct ks_worker *w = x->w;
    struct ks_proxy *P = w->proxy;
    bool fresh_only = false;
    for (;;) {
        a->fd = -1;
        a->pooled = false;
        a->sent_any = false;
        a->interim = false;
        a->silent = false;
        if (!fresh_only) {
            /* Bytes on an idle connection answer no request of ours (a
             * 408 of the upstream's idle timeout, say): the next response
             * read from it would be someone else's.  So a connection
             * idle for POOL_QUIET_MS or more is looked at first.  One
             * reused sooner is not: that recv would cost ~5% of a
             * proxied request's CPU, under load, when reuse is quick; the
             * excess after a response is caught when it is pooled (same
             * read, or after a spliced body), and what an upstream
             * writes later than that, unasked, within 2 ms, is a race no
             * look could close anyway.  A non-idempotent request, which
             * is not retried, always looks, to know the connection is
             * open. */
            int64_t idle_ms;
            while ((a->fd = ks_pool_take(&P->pool, a->u, ks_now_ms(), &idle_ms)) >= 0) {
                if ((idempotent(x->r) && idle_ms < POOL_QUIET_MS) || pooled_alive(a->fd))
                    break;
                close(a->fd);
            }
            a->pooled = a->fd >= 0;
        }
        if (a->fd < 0) {
            bool local;
            enum ks_io_result io =
                connect_upstream(w, a->up, ks_now_ms() + a->up->connect_timeout_ms, &a->fd, &local);
            if (io == KS_IO_TIMEOUT)
                return fail_attempt(a, KS_UO_CONNECT_FAILED, 504, "upstream connect timed out", AT_NEXT);
            if (local)
                return fail_attempt(a, KS_UO_LOCAL, 503, "out of file descriptors", AT_FAIL);
            if (io != KS_IO_OK)
                return fail_attempt(a, KS_UO_CONNECT_FAILED, 502, "cannot connect to the upstream",
                                    AT_NEXT);
        }
        /* an upstream that answers while the request is still being
         * written to it (a 403 to an upload it will not read) ends the
         * write: its answer is read at once, not after idle_timeout */
        w->answer_fd = a->fd;
        w->answer_seen = answer_seen;
        P->early_len = P->early_done = 0;
        enum send_result sr = send_request(x, a, tn, tunnelling, mark);
        w->answer_fd = -1;
        if (sr == SEND_TOO_BIG)
            return fail_attempt(a, KS_UO_OK, 431, "request head too large to forward", AT_FAIL);
        if (sr == SEND_CLIENT)
            return fail_attempt(a, KS_UO_OK, x->in->status, x->in->error, AT_FAIL);
        if (sr == SEND_GONE)
            return fail_attempt(a, KS_UO_OK, 502, "cannot send the request body again", AT_FAIL);
        bool replayable = x->in == NULL || ks_body_replayable(x->in, mark);
        if (sr == SEND_UPSTREAM && !a->sent_any) {
            if (a->pooled && replayable) {
                close(a->fd);
                fresh_only = true;
                continue;
            }
            return fail_attempt(a, KS_UO_RESET, 502, "upstream reset the connection",
                                replayable ? AT_NEXT : AT_FAIL);
        }
        /* after a failed write the upstream may still have answered (an
         * early 413, say): read what it says */
        struct resp rp;
        resp_start(&rp, P, x->r->head_method);
        memcpy(P->up_buf, P->early, P->early_len);
        rp.len = P->early_len;
        int64_t timeout = x->timeout_ms > 0 ? x->timeout_ms : a->up->response_timeout_ms;
        if (sr == SEND_UPSTREAM)
            x->close = true;
        ks_worker_set_state(w, KS_WS_PROXYING);
        enum attempt_result res = relay_response(x, a, &rp, tunnelling, ks_now_ms() + timeout);
        if (res == AT_FAIL && a->outcome == KS_UO_RESET && a->pooled && sr == SEND_OK && !a->interim &&
            (idempotent(x->r) || !a->sent_any) &&
            (x->in == NULL || ks_body_replayable(x->in, mark))) {
            /* a kept-alive connection the upstream had closed: once more,
             * on a fresh one */
            fresh_only = true;
            continue;
        }
        if (res == AT_FAIL && sr == SEND_UPSTREAM && a->outcome == KS_UO_RESET)
            a->why = "upstream reset the connection while the request was sent";
        if (res == AT_FAIL && a->silent && sr == SEND_OK && idempotent(x->r) &&
            (x->in == NULL || ks_body_replayable(x->in, mark)))
            return AT_NEXT;     /* it died on it, say: as nginx's proxy_next_upstream error */
        return res;
    }
}

static bool valid_target(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            return false;
    return true;
}

int ks_proxy_forward(struct ks_exchange *x)
{
    struct ks_worker *w = x->w;
    const struct ks_table *t = w->table;
    const struct ks_t_tenant *tn = &ks_t_tenants(t)[x->tenant];
    if (x->upstream_path != NULL && !valid_target(x->upstream_path, x->upstream_path_len))
        return ks_proxy_fail(x, 500, "invalid upstream path", NULL);
    if (x->r->max_forwards == 0) {
        /* an OPTIONS that may go no further: keystoned is its final
         * recipient (RFC 9110 7.6.2) */
        x->status = 200;
        x->responded = true;
        int rc = ks_respond(x->c, x->r, 200, NULL, NULL, "", 0, !x->close);
        return rc < 0 || x->close ? -1 : 0;
    }
    /* An Upgrade is tunnelled only for a request without a body, never for
     * HTTP/1.0, whose Upgrade a server must ignore (RFC 9110 7.8), and
     * never to h2c: HTTP/2 in the tunnel would carry requests for any
     * path past routing and middleware (RFC 9113 3.1 retired it; Envoy
     * refuses it too).  Not tunnelled, it is a plain request. */
    const struct ks_header *up = x->r->upgrade && x->r->http_minor >= 1 ? ks_http_header(x->r, "upgrade") : NULL;
    bool tunnelling = up != NULL && !ks_http_token_in(up->value, up->value_len, "h2c") &&
                      !(x->in != NULL && ks_body_pending(x->in)) &&
                      !(x->body_read && x->body_len > 0);
    struct ks_body_mark mark = { 0 };   /* read only when x->in is set, but gcc -flto cannot tell */
    if (x->in != NULL)
        ks_body_mark(x->in, &mark);
    ks_worker_set_state(w, KS_WS_PROXYING);

    uint32_t tried[MAX_TRIES];
    size_t ntried = 0;
    int tries = x->upstream != KS_NONE ? 1 : tn->retries + 1;
    int status = 503;
    const char *why = "no upstream available";
    int64_t t0 = ks_now_us();
    while ((int)ntried < tries && ntried < MAX_TRIES) {
        bool all_down = false;
        uint32_t u = x->upstream;
        if (u == KS_NONE) {
            u = ks_balance_pick(w, x->tenant, tried, ntried, &all_down);
        } else if (u >= t->nupstreams || !ks_balance_take(w, u)) {
            all_down = u < t->nupstreams;
            u = KS_NONE;
        }
        if (u == KS_NONE) {
            if (all_down && ntried == 0) {
                char extra[48];
                snprintf(extra, sizeof(extra), "Retry-After: %u\r\n",
                         ks_balance_retry_after(w, x->tenant, x->upstream));
                return ks_proxy_fail(x, 503, "no healthy upstream", extra);
            }
            break;
        }
        tried[ntried++] = u;
        struct attempt a = { .u = u, .up = &ks_t_upstreams(t)[u], .fd = -1, .start_us = ks_now_us() };
        x->upstream_name = ks_t_str(t, a.up->name);
        ks_balance_begin(w, u);
        enum attempt_result res = attempt(x, &a, tn, &mark, tunnelling);
        ks_balance_end(w, u, a.outcome);
        x->upstream_us = ks_now_us() - t0;
        if (res == AT_DONE)
            return x->close ? -1 : 0;
        status = a.status;
        why = a.why;
        if (res == AT_FAIL)
            break;
        ks_log_debug("upstream", "%s: %s, trying the next one", x->upstream_name, why);
    }
    return ks_proxy_fail(x, status, why, NULL);
}
