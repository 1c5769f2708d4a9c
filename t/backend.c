#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
/*
 * backend.c: a small programmable HTTP/1.1 upstream for the end-to-end
 * tests (the .t files in t/).  It is a test tool, not the product: it
 * parses HTTP by hand, simply, but it handles keep-alive, pipelining,
 * Content-Length and chunked bodies, and it never crashes on garbage
 * (every buffer is bounded; a parse failure is answered 400 and the
 * connection closed).
 *
 *   t/backend [-l 127.0.0.1:PORT] [-n NAME] [-H status] [-r FILE] [-v]
 *
 * Once listening it prints "listening ADDR:PORT\n" on stdout and flushes
 * (-l defaults to 127.0.0.1:0, a free port).  -n names the instance (in
 * every answer, for load-balancing tests), -H sets the initial health
 * status, -r appends every request line received to FILE, -v logs one
 * line per request to stderr.  One thread per connection; SIGTERM or
 * SIGINT exit with status 0.
 *
 * Behaviour is chosen by the request path and query string:
 *
 *   any path      200 + JSON description of the request (see req_json())
 *   ?status=N     answer N (no body for 204 and 304; a 1xx is sent as an
 *                 interim response, followed by the normal final 200)
 *   ?delay=MS     wait before the response head
 *   ?body_delay=MS  send the head, wait, then send the body
 *   ?size=N       N bytes of the pattern "abcd...xyz0123456789\n" as body
 *   ?chunked=1    send the body chunked (?chunk=N bytes a chunk, 4096)
 *   ?trailer=1    with chunked: add the trailer "X-Trailer: yes"
 *   ?close_delim=1  no Content-Length: the body ends when we close
 *   ?close_mid=1  send the head and half of the body, then close
 *   ?reset=1      read the request, then close with RST (SO_LINGER 0)
 *   ?reset_if=NAME  the same, but only in the instance named NAME (-n)
 *   ?hang=1       send the head, then hang until the peer goes away
 *   ?hang_head=1  send nothing and hang until the peer goes away
 *   ?malformed=1  send garbage instead of a status line, then close
 *   ?bigheader=N  add a response header "X-Big" with N bytes of value
 *   ?close=1      answer with "Connection: close" and close
 *   ?header=N:V   add a response header (repeatable, URL-encoded)
 *   ?no_continue=1  do not answer "Expect: 100-continue"
 *   ?early=MS     answer 403 "early" before reading the body, then read
 *                 nothing for MS ms and close
 *   ?early_continue=N  with ?early=: first an unasked 100 (Continue), then
 *                 read N bytes of what follows the head, then the 403
 *   ?early_split=MS  with ?early_continue=: the 100 in three writes (at
 *                 its bytes 5 and 12), MS ms apart
 *   ?early_lf=1   with ?early_continue=: the 100 ends its lines in bare LF
 *   ?raw=BYTES    answer with exactly these (URL-decoded) bytes, then keep
 *                 the connection (or close it with ?close=1)
 *   ?flood=1      with ?raw=: after the bytes, send the pattern for as long
 *                 as the peer takes it (until it has taken nothing for
 *                 200 ms), then close with RST: an upstream that leaves
 *                 while its output is still on the way
 *   ?later=BYTES  after answering, wait ?later_ms=N (100) and send these
 *                 bytes unasked on the idle connection
 *   ?repeat=BYTES send these bytes every ?every=N ms (100) until the peer
 *                 goes away, and never a final answer (after the bytes of
 *                 ?raw=, when given: a head that never ends)
 *   .../health    200 "ok" (or the status set by -H or POST /__health)
 *   /__health     GET: current health status; POST/PUT body "503": set it
 *   /__stats      {"connections":N,"requests":N,"open":N}
 *   .../ws        with "Upgrade: websocket": RFC 6455 handshake, then echo
 *
 * The JSON answer: {"name", "method", "target" (raw), "version", "headers"
 * ([[name, value], ...] as received), "body" (de-chunked; "body_b64"
 * instead when it is not UTF-8), "body_len", "chunked", "trailers" (when
 * chunked), "conn_id", "conn_requests"}.  HEAD gets the head only;
 * HTTP/1.0 is closed after the answer unless it asked for keep-alive;
 * "Expect: 100-continue" is answered before the body is read.
 *
 * Query values are URL-decoded ('+' is a space, so write %2B for a plus);
 * a flag is on when given without a value or with any value but "0".
 * /__stats and /__health are control endpoints: they are not counted in
 * "requests" and not written to the request log (-r), so a test can ask
 * for them without disturbing what it checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define PATTERN         "abcdefghijklmnopqrstuvwxyz0123456789\n"
#define PATTERN_LEN     (sizeof(PATTERN) - 1)
#define MAX_HEAD        (1024 * 1024)       /* request line + headers */
#define MAX_HEADERS     1000
#define MAX_CHUNK_LINE  4096
#define BODY_KEEP       (64 * 1024 * 1024)  /* bytes of body kept for JSON */
#define WS_MAX_PAYLOAD  (16 * 1024 * 1024)
#define IO_CHUNK        65536
#define WS_GUID         "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* Process-wide settings (set once in main before any thread starts) and
 * counters (atomics, shared by the connection threads). */
static const char *g_name = "backend";
static int g_verbose;
static int g_reqlog = -1;
static atomic_int g_health = 200;
static atomic_ulong g_conn_seq;
static atomic_ulong g_requests;
static atomic_long g_open;

/* ---- small helpers --------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void die_oom(void)
{
    static const char msg[] = "backend: out of memory\n";
    ssize_t n = write(2, msg, sizeof(msg) - 1);
    (void)n;
    abort();
}

static void buf_reserve(struct buf *b, size_t extra)
{
    size_t need, ncap;
    char *np;

    if (extra > SIZE_MAX / 2 - b->len)
        die_oom();
    need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2;
    np = realloc(b->p, ncap);
    if (np == NULL)
        die_oom();
    b->p = np;
    b->cap = ncap;
}

static void buf_add(struct buf *b, const void *data, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static void msleep(long ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len, i;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < n) {
        k = utf8_seq(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* A JSON string; bytes that are not valid UTF-8 become \u00XX (Latin-1),
 * so the output is always valid JSON. */
static void json_str(struct buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k;

    buf_add(b, "\"", 1);
    while (i < n) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = { '\\', (char)c };
            buf_add(b, e, 2);
            i++;
        } else if (c == '\n') {
            buf_add(b, "\\n", 2);
            i++;
        } else if (c == '\r') {
            buf_add(b, "\\r", 2);
            i++;
        } else if (c == '\t') {
            buf_add(b, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            buf_printf(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            buf_add(b, p + i, 1);
            i++;
        } else if ((k = utf8_seq(p + i, n - i)) != 0) {
            buf_add(b, p + i, k);
            i += k;
        } else {
            buf_printf(b, "\\u%04x", c);
            i++;
        }
    }
    buf_add(b, "\"", 1);
}

static void base64(struct buf *b, const unsigned char *s, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    char o[4];

    for (i = 0; i + 2 < n; i += 3) {
        o[0] = tab[s[i] >> 2];
        o[1] = tab[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        o[2] = tab[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
        o[3] = tab[s[i + 2] & 63];
        buf_add(b, o, 4);
    }
    if (n - i == 1) {
        o[0] = tab[s[i] >> 2];
        o[1] = tab[(s[i] & 3) << 4];
        o[2] = o[3] = '=';
        buf_add(b, o, 4);
    } else if (n - i == 2) {
        o[0] = tab[s[i] >> 2];
        o[1] = tab[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        o[2] = tab[(s[i + 1] & 15) << 2];
        o[3] = '=';
        buf_add(b, o, 4);
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* URL-decode s[0..n) into a new NUL-terminated string. */
static char *url_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    size_t i, j = 0;

    if (o == NULL)
        die_oom();
    for (i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n &&
            hexval((unsigned char)s[i + 1]) >= 0 &&
            hexval((unsigned char)s[i + 2]) >= 0) {
            o[j++] = (char)(hexval((unsigned char)s[i + 1]) * 16 +
                            hexval((unsigned char)s[i + 2]));
            i += 2;
        } else if (s[i] == '+') {
            o[j++] = ' ';
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = '\0';
    return o;
}

/* A non-negative decimal integer, or -1. */
static long long parse_num(const char *s)
{
    long long v = 0;

    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (LLONG_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* Does the comma-separated header value contain token tok? */
static int has_token(const char *v, const char *tok)
{
    size_t tl = strlen(tok);

    while (*v) {
        const char *e;
        size_t n;
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        e = v;
        while (*e && *e != ',')
            e++;
        n = (size_t)(e - v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n == tl && strncasecmp(v, tok, tl) == 0)
            return 1;
        v = e;
    }
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}

/* ---- connection I/O -------------------------------------------------- */

struct conn {
    int fd;
    unsigned long id;
    unsigned long nreq;
    char *in;
    size_t cap, start, end;     /* unread bytes are in[start..end) */
};

/* Read more bytes into the input buffer.  Returns >0, 0 on EOF, -1. */
static ssize_t conn_fill(struct conn *c)
{
    ssize_t n;

    if (c->start == c->end)
        c->start = c->end = 0;
    if (c->end == c->cap) {
        if (c->start > 0) {
            memmove(c->in, c->in + c->start, c->end - c->start);
            c->end -= c->start;
            c->start = 0;
        } else {
            size_t ncap = c->cap * 2;
            char *np = realloc(c->in, ncap);
            if (np == NULL)
                die_oom();
            c->in = np;
            c->cap = ncap;
        }
    }
    do
        n = recv(c->fd, c->in + c->end, c->cap - c->end, 0);
    while (n == -1 && errno == EINTR);
    if (n > 0)
        c->end += (size_t)n;
    return n;
}

/* Make at least n unread bytes available.  0 ok, -1 EOF or error. */
static int conn_need(struct conn *c, size_t n)
{
    while (c->end - c->start < n)
        if (conn_fill(c) <= 0)
            return -1;
    return 0;
}

static int send_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    ssize_t w;

    while (n > 0) {
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Take one line (up to '\n') out of the buffer into out, without the line
 * end.  0 ok, -1 EOF/error, -2 line longer than limit. */
static int conn_line(struct conn *c, struct buf *out, size_t limit)
{
    size_t scanned = 0;

    for (;;) {
        char *nl = memchr(c->in + c->start + scanned, '\n',
                          c->end - c->start - scanned);
        if (nl != NULL) {
            size_t n = (size_t)(nl - (c->in + c->start));
            out->len = 0;
            buf_add(out, c->in + c->start, n);
            if (out->len > 0 && out->p[out->len - 1] == '\r')
                out->p[--out->len] = '\0';
            c->start += n + 1;
            return 0;
        }
        scanned = c->end - c->start;
        if (scanned > limit)
            return -2;
        if (conn_fill(c) <= 0)
            return -1;
    }
}

/* Graceful close: send FIN, drain what the peer still sends (so unread
 * pipelined bytes do not turn our close into a RST), then close. */
static void conn_close(struct conn *c)
{
    char scratch[4096];
    struct pollfd pfd;
    int rounds = 0;

    if (c->fd < 0)
        return;
    shutdown(c->fd, SHUT_WR);
    pfd.fd = c->fd;
    pfd.events = POLLIN;
    while (rounds++ < 1000 && poll(&pfd, 1, 1000) == 1) {
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
        if (n <= 0)
            break;
    }
    close(c->fd);
    c->fd = -1;
}

static void conn_reset(struct conn *c)
{
    struct linger lg = { 1, 0 };

    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(c->fd);
    c->fd = -1;
}

/* Send the pattern while the peer takes it, then reset (?flood). */
static void conn_flood(struct conn *c)
{
    char chunk[IO_CHUNK];
    struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
    size_t i;

    for (i = 0; i < sizeof(chunk); i++)
        chunk[i] = PATTERN[i % PATTERN_LEN];
    while (poll(&pfd, 1, 200) == 1 && (pfd.revents & POLLOUT) &&
           send(c->fd, chunk, sizeof(chunk), MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
        ;
    conn_reset(c);
}

/* Wait until the peer goes away, discarding whatever it sends. */
static void conn_hang(struct conn *c)
{
    char scratch[4096];
    struct pollfd pfd;

    pfd.fd = c->fd;
    pfd.events = POLLIN;
    for (;;) {
        int r = poll(&pfd, 1, -1);
        if (r == -1 && errno == EINTR)
            continue;
        if (r != 1)
            break;
        if (recv(c->fd, scratch, sizeof(scratch), 0) <= 0)
            break;
    }
    close(c->fd);
    c->fd = -1;
}

/* ---- requests -------------------------------------------------------- */

struct hdr {
    char *name, *value;
};

struct req {
    struct buf head;            /* copy of the head; the fields point in */
    struct buf line;            /* the request line as received */
    char *method, *target, *version;
    struct hdr *h;
    size_t nh;
    int http10;
    int keepalive;
    int chunked;
    int expect_continue;
    long long clen;             /* -1: none */
    struct buf body;            /* at most BODY_KEEP bytes */
    unsigned long long body_len;
    struct buf trailers;        /* JSON array of [name,value] */
};

struct query {
    int status;                 /* 0: default */
    long delay, body_delay;
    long long size;             /* -1: JSON body */
    int chunked, trailer, close_delim, close_mid, reset, hang, hang_head;
    int malformed, close, no_continue, flood;
    long long chunk;
    long long bigheader;
    struct buf headers;         /* extra "Name: Value\r\n" lines */
    struct buf raw, later, repeat;
    long later_ms, every;
    long early;                 /* answer before the body, then stall */
    long long early_continue;   /* -1, or: a 100 first, then read this much */
    long early_split;           /* its 100 in three writes, this many ms apart */
    int early_lf;               /* its 100 with bare LF line ends */
};

static void req_free(struct req *r)
{
    buf_free(&r->head);
    buf_free(&r->line);
    free(r->h);
    buf_free(&r->body);
    buf_free(&r->trailers);
}

static const char *req_header(const struct req *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->nh; i++)
        if (strcasecmp(r->h[i].name, name) == 0)
            return r->h[i].value;
    return NULL;
}

static void reqlog(const char *line)
{
    struct buf b = { 0 };
    ssize_t n;

    if (g_reqlog < 0)
        return;
    buf_str(&b, line);
    buf_add(&b, "\n", 1);
    n = write(g_reqlog, b.p, b.len);
    (void)n;
    buf_free(&b);
}

static void send_error(struct conn *c, int status)
{
    struct buf b = { 0 };

    buf_printf(&b, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nX-Backend: %s\r\n"
               "Connection: close\r\n\r\n", status, reason(status), g_name);
    send_all(c->fd, b.p, b.len);
    buf_free(&b);
}

/*
 * Read one request head into r.  Returns 1 on success, 0 when the peer
 * closed between requests, or an HTTP status (400, 431, 505) to answer
 * before closing, or -1 on a broken connection.
 */
static int read_head(struct conn *c, struct req *r)
{
    size_t scanned = 0, headlen = 0, i;
    char *p, *e, *sp1, *sp2;
    int has_nul;

    /* RFC 9112 2.2: ignore empty lines before the request line. */
    for (;;) {
        while (c->start < c->end &&
               (c->in[c->start] == '\r' || c->in[c->start] == '\n'))
            c->start++;
        if (c->start < c->end)
            break;
        if (conn_fill(c) <= 0)
            return 0;
    }
    for (;;) {
        char *s = c->in + c->start;
        size_t avail = c->end - c->start;
        for (i = scanned; i < avail; i++) {
            if (s[i] != '\n')
                continue;
            if (i + 1 < avail && s[i + 1] == '\n') {
                headlen = i + 2;
                break;
            }
            if (i + 2 < avail && s[i + 1] == '\r' && s[i + 2] == '\n') {
                headlen = i + 3;
                break;
            }
        }
        if (headlen && headlen <= MAX_HEAD)
            break;
        scanned = avail > 2 ? avail - 2 : 0;
        if (headlen || avail > MAX_HEAD) {
            /* Keep the first line (for the request log), then give up. */
            e = memchr(s, '\n', avail);
            buf_add(&r->line, s, e ? (size_t)(e - s) : 8192);
            if (r->line.len && r->line.p[r->line.len - 1] == '\r')
                r->line.p[--r->line.len] = '\0';
            return 431;
        }
        if (conn_fill(c) <= 0)
            return -1;
    }
    buf_add(&r->head, c->in + c->start, headlen);
    c->start += headlen;

    /* Split into NUL-terminated lines (stripping CR).  A NUL byte in the
     * head is refused (after the line is known, for the request log). */
    p = r->head.p;
    has_nul = memchr(p, '\0', headlen) != NULL;
    e = memchr(p, '\n', headlen);
    *e = '\0';
    if (e > p && e[-1] == '\r')
        e[-1] = '\0';
    buf_str(&r->line, p);
    if (has_nul)
        return 400;

    sp1 = strchr(p, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == p || sp2 == sp1 + 1 ||
        strchr(sp2 + 1, ' ') != NULL)
        return 400;
    *sp1 = *sp2 = '\0';
    r->method = p;
    r->target = sp1 + 1;
    r->version = sp2 + 1;
    if (strncmp(r->version, "HTTP/", 5) != 0 ||
        !isdigit((unsigned char)r->version[5]) || r->version[6] != '.' ||
        !isdigit((unsigned char)r->version[7]) || r->version[8] != '\0')
        return 400;
    if (r->version[5] != '1')
        return 505;
    r->http10 = r->version[7] == '0';
    for (i = 0; r->method[i]; i++)
        if ((unsigned char)r->method[i] <= ' ' || r->method[i] == 0x7f)
            return 400;

    r->h = calloc(MAX_HEADERS, sizeof(*r->h));
    if (r->h == NULL)
        die_oom();
    for (p = e + 1; *p; p = e + 1) {
        char *colon, *v, *ve;
        e = strchr(p, '\n');
        if (e == NULL)
            break;
        *e = '\0';
        if (e > p && e[-1] == '\r')
            e[-1] = '\0';
        if (*p == '\0')
            break;              /* the blank line ending the head */
        if (*p == ' ' || *p == '\t')
            return 400;         /* obsolete line folding */
        colon = strchr(p, ':');
        if (colon == NULL || colon == p)
            return 400;
        if (r->nh == MAX_HEADERS)
            return 431;
        *colon = '\0';
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        r->h[r->nh].name = p;
        r->h[r->nh].value = v;
        r->nh++;
    }
    return 1;
}

/* Decide framing, keep-alive and Expect from the headers.  0 or a status. */
static int req_framing(struct req *r)
{
    size_t i;
    int conn_close = 0, conn_keep = 0, te = 0;

    r->clen = -1;
    for (i = 0; i < r->nh; i++) {
        const char *n = r->h[i].name, *v = r->h[i].value;
        if (strcasecmp(n, "Content-Length") == 0) {
            long long l = parse_num(v);
            if (l < 0 || (r->clen >= 0 && r->clen != l))
                return 400;
            r->clen = l;
        } else if (strcasecmp(n, "Transfer-Encoding") == 0) {
            const char *last = strrchr(v, ',');
            last = last ? last + 1 : v;
            while (*last == ' ' || *last == '\t')
                last++;
            te = 1;
            r->chunked = strncasecmp(last, "chunked", 7) == 0 &&
                         (last[7] == '\0' || last[7] == ' ' || last[7] == '\t');
        } else if (strcasecmp(n, "Connection") == 0) {
            conn_close |= has_token(v, "close");
            conn_keep |= has_token(v, "keep-alive");
        } else if (strcasecmp(n, "Expect") == 0) {
            r->expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    if (te && !r->chunked)
        return 400;
    if (r->http10)
        r->keepalive = conn_keep && !conn_close;
    else
        r->keepalive = !conn_close;
    if (te && r->clen >= 0)
        r->keepalive = 0;       /* ambiguous framing: never reuse */
    return 0;
}

static void body_add(struct req *r, const char *p, size_t n)
{
    size_t room = BODY_KEEP - r->body.len;

    if (r->body.len < BODY_KEEP)
        buf_add(&r->body, p, n < room ? n : room);
    r->body_len += n;
}

/* Read n body bytes.  0 ok, -1 EOF/error. */
static int read_bytes(struct conn *c, struct req *r, unsigned long long n)
{
    while (n > 0) {
        size_t avail = c->end - c->start, take;
        if (avail == 0) {
            if (conn_fill(c) <= 0)
                return -1;
            continue;
        }
        take = avail < n ? avail : (size_t)n;
        body_add(r, c->in + c->start, take);
        c->start += take;
        n -= take;
    }
    return 0;
}

/* Read and de-chunk a chunked body.  0 ok, -1 EOF/error, or 400. */
static int read_chunked(struct conn *c, struct req *r)
{
    struct buf line = { 0 };
    int rc = 0, ntr = 0;
    size_t trailer_bytes = 0;

    buf_str(&r->trailers, "[");
    for (;;) {
        unsigned long long size = 0;
        const char *p;
        int digits = 0;

        rc = conn_line(c, &line, MAX_CHUNK_LINE);
        if (rc != 0)
            goto out;
        for (p = line.p; hexval((unsigned char)*p) >= 0; p++, digits++) {
            if (size > (ULLONG_MAX >> 8)) {
                rc = 400;
                goto out;
            }
            size = size * 16 + (unsigned)hexval((unsigned char)*p);
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (digits == 0 || (*p != '\0' && *p != ';')) {
            rc = 400;
            goto out;
        }
        if (size == 0)
            break;
        if (read_bytes(c, r, size) != 0) {
            rc = -1;
            goto out;
        }
        rc = conn_line(c, &line, 2);
        if (rc != 0 || line.len != 0) {
            rc = rc == -1 ? -1 : 400;
            goto out;
        }
    }
    /* Trailer section, up to the blank line. */
    for (;;) {
        char *colon, *v;
        rc = conn_line(c, &line, MAX_HEAD);
        if (rc != 0)
            goto out;
        if (line.len == 0)
            break;
        trailer_bytes += line.len;
        colon = strchr(line.p, ':');
        if (colon == NULL || colon == line.p || trailer_bytes > MAX_HEAD) {
            rc = 400;
            goto out;
        }
        *colon = '\0';
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
            ;
        buf_str(&r->trailers, ntr++ ? ",[" : "[");
        json_str(&r->trailers, line.p, strlen(line.p));
        buf_str(&r->trailers, ",");
        json_str(&r->trailers, v, strlen(v));
        buf_str(&r->trailers, "]");
    }
out:
    if (rc == -2)
        rc = 400;
    buf_free(&line);
    return rc;
}

/* ---- query ------------------------------------------------------------ */

static const char *target_path(const char *target, size_t *len)
{
    const char *p = target, *q;

    if (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0) {
        p = strstr(p, "://") + 3;
        p += strcspn(p, "/?#");
    }
    q = p + strcspn(p, "?#");
    *len = (size_t)(q - p);
    return p;
}

static int path_ends(const char *p, size_t n, const char *suffix)
{
    size_t sl = strlen(suffix);

    return n >= sl && memcmp(p + n - sl, suffix, sl) == 0;
}

static void parse_query(const char *target, struct query *q)
{
    const char *p = strchr(target, '?'), *end;

    q->size = -1;
    q->chunk = 4096;
    q->later_ms = q->every = 100;
    q->early_continue = -1;
    if (p == NULL)
        return;
    p++;
    end = p + strcspn(p, "#");
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        char *k = url_decode(p, (size_t)((eq ? eq : pe) - p));
        char *v = eq ? url_decode(eq + 1, (size_t)(pe - eq - 1)) : url_decode("", 0);
        long long n = parse_num(v);
        /* A flag is on when given without a value or with one that is not
         * "0" (so "?close", "?close=1" and "?close=yes" all work). */
        int on = eq == NULL || (*v != '\0' && strcmp(v, "0") != 0);

        if (strcmp(k, "status") == 0 && n >= 100 && n <= 999)
            q->status = (int)n;
        else if (strcmp(k, "delay") == 0 && n >= 0 && n < 86400000)
            q->delay = (long)n;
        else if (strcmp(k, "body_delay") == 0 && n >= 0 && n < 86400000)
            q->body_delay = (long)n;
        else if (strcmp(k, "size") == 0 && n >= 0)
            q->size = n;
        else if (strcmp(k, "chunk") == 0 && n > 0)
            q->chunk = n;
        else if (strcmp(k, "chunked") == 0)
            q->chunked = on;
        else if (strcmp(k, "trailer") == 0)
            q->trailer = on;
        else if (strcmp(k, "close_delim") == 0)
            q->close_delim = on;
        else if (strcmp(k, "close_mid") == 0)
            q->close_mid = on;
        else if (strcmp(k, "reset") == 0)
            q->reset = on;
        else if (strcmp(k, "reset_if") == 0)
            q->reset = strcmp(v, g_name) == 0;
        else if (strcmp(k, "hang") == 0)
            q->hang = on;
        else if (strcmp(k, "hang_head") == 0)
            q->hang_head = on;
        else if (strcmp(k, "malformed") == 0)
            q->malformed = on;
        else if (strcmp(k, "close") == 0)
            q->close = on;
        else if (strcmp(k, "flood") == 0)
            q->flood = on;
        else if (strcmp(k, "no_continue") == 0)
            q->no_continue = on;
        else if (strcmp(k, "bigheader") == 0 && n >= 0 && n <= 64 * 1024 * 1024)
            q->bigheader = n;
        else if (strcmp(k, "raw") == 0)
            buf_str(&q->raw, v);
        else if (strcmp(k, "later") == 0)
            buf_str(&q->later, v);
        else if (strcmp(k, "repeat") == 0)
            buf_str(&q->repeat, v);
        else if (strcmp(k, "early") == 0 && n > 0 && n < 86400000)
            q->early = (long)n;
        else if (strcmp(k, "early_continue") == 0 && n >= 0)
            q->early_continue = n;
        else if (strcmp(k, "early_split") == 0 && n > 0)
            q->early_split = (long)n;
        else if (strcmp(k, "early_lf") == 0)
            q->early_lf = on;
        else if (strcmp(k, "later_ms") == 0 && n >= 0 && n < 86400000)
            q->later_ms = (long)n;
        else if (strcmp(k, "every") == 0 && n > 0 && n < 86400000)
            q->every = (long)n;
        else if (strcmp(k, "header") == 0) {
            char *colon = strchr(v, ':');
            if (colon != NULL && colon != v && strpbrk(v, "\r\n") == NULL) {
                char *hv = colon + 1;
                while (*hv == ' ')
                    hv++;
                buf_add(&q->headers, v, (size_t)(colon - v));
                buf_str(&q->headers, ": ");
                buf_str(&q->headers, hv);
                buf_str(&q->headers, "\r\n");
            }
        }
        free(k);
        free(v);
        p = amp ? amp + 1 : end;
    }
}

/* ---- responses -------------------------------------------------------- */

static void req_json(struct buf *b, struct conn *c, struct req *r)
{
    size_t i;

    buf_str(b, "{\"name\":");
    json_str(b, g_name, strlen(g_name));
    buf_str(b, ",\"method\":");
    json_str(b, r->method, strlen(r->method));
    buf_str(b, ",\"target\":");
    json_str(b, r->target, strlen(r->target));
    buf_str(b, ",\"version\":");
    json_str(b, r->version, strlen(r->version));
    buf_str(b, ",\"headers\":[");
    for (i = 0; i < r->nh; i++) {
        buf_str(b, i ? ",[" : "[");
        json_str(b, r->h[i].name, strlen(r->h[i].name));
        buf_str(b, ",");
        json_str(b, r->h[i].value, strlen(r->h[i].value));
        buf_str(b, "]");
    }
    buf_str(b, "]");
    if (utf8_valid(r->body.p ? r->body.p : "", r->body.len)) {
        buf_str(b, ",\"body\":");
        json_str(b, r->body.p ? r->body.p : "", r->body.len);
    } else {
        buf_str(b, ",\"body_b64\":\"");
        base64(b, (const unsigned char *)r->body.p, r->body.len);
        buf_str(b, "\"");
    }
    buf_printf(b, ",\"body_len\":%llu", r->body_len);
    if (r->body_len > r->body.len)
        buf_str(b, ",\"body_truncated\":true");
    buf_printf(b, ",\"chunked\":%s", r->chunked ? "true" : "false");
    if (r->chunked)
        buf_printf(b, ",\"trailers\":%s]", r->trailers.p);
    buf_printf(b, ",\"conn_id\":%lu,\"conn_requests\":%lu}\n", c->id, c->nreq);
}

/* Output buffer for the body, flushed in IO_CHUNK pieces. */
struct out {
    struct conn *c;
    struct buf b;
    int err;
};

static void out_add(struct out *o, const void *p, size_t n)
{
    if (o->err)
        return;             /* the peer is gone: stop producing */
    buf_add(&o->b, p, n);
    if (o->b.len >= IO_CHUNK && !o->err) {
        o->err = send_all(o->c->fd, o->b.p, o->b.len);
        o->b.len = 0;
    }
}

static void out_flush(struct out *o)
{
    if (o->b.len && !o->err)
        o->err = send_all(o->c->fd, o->b.p, o->b.len);
    o->b.len = 0;
}

/* Body bytes [off, off+n): from mem, or the pattern when mem is NULL. */
static void out_body(struct out *o, const char *mem, unsigned long long off,
                     unsigned long long n)
{
    char tmp[4096];

    if (mem != NULL) {
        out_add(o, mem + off, (size_t)n);
        return;
    }
    while (n > 0 && !o->err) {
        size_t k = n < sizeof(tmp) ? (size_t)n : sizeof(tmp), i;
        for (i = 0; i < k; i++)
            tmp[i] = PATTERN[(off + i) % PATTERN_LEN];
        out_add(o, tmp, k);
        off += k;
        n -= k;
    }
}

enum { KEEP, CLOSE, CLOSED };

/*
 * Send one response.  body/blen: the body (NULL with a length: the pattern).
 * Returns KEEP, CLOSE (close gracefully) or CLOSED (already done).
 */
static int respond(struct conn *c, struct req *r, struct query *q,
                   int status, const char *ctype, const char *body,
                   unsigned long long blen)
{
    struct out o = { c, { 0 }, 0 };
    int head_only = strcmp(r->method, "HEAD") == 0;
    int no_body = status == 204 || status == 304;
    int will_close = q->close || q->close_delim || !r->keepalive;
    unsigned long long limit = q->close_mid ? blen / 2 : blen, sent = 0;

    if (q->malformed) {
        static const char junk[] = "GARBAGE\x01\x02 this is not HTTP\r\n\r\n";
        send_all(c->fd, junk, sizeof(junk) - 1);
        return CLOSE;
    }
    if (q->repeat.len) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        char scratch[4096];
        if (q->raw.len && send_all(c->fd, q->raw.p, q->raw.len) != 0)
            return CLOSE;
        while (send_all(c->fd, q->repeat.p, q->repeat.len) == 0) {
            int pr = poll(&pfd, 1, (int)q->every);
            if (pr == 1 && recv(c->fd, scratch, sizeof(scratch), 0) <= 0)
                break;
        }
        return CLOSE;
    }
    if (q->raw.len) {
        if (send_all(c->fd, q->raw.p, q->raw.len) != 0)
            return CLOSE;
        if (q->flood) {
            conn_flood(c);
            return CLOSED;
        }
        if (q->later.len) {
            msleep(q->later_ms);
            send_all(c->fd, q->later.p, q->later.len);
        }
        return q->close ? CLOSE : KEEP;
    }
    if (status < 200) {
        buf_printf(&o.b, "HTTP/1.1 %d %s\r\n\r\n", status, reason(status));
        status = 200;
    }
    buf_printf(&o.b, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (!no_body) {
        buf_printf(&o.b, "Content-Type: %s\r\n", ctype);
        if (q->close_delim)
            ;
        else if (q->chunked)
            buf_str(&o.b, "Transfer-Encoding: chunked\r\n");
        else
            buf_printf(&o.b, "Content-Length: %llu\r\n", blen);
    }
    buf_printf(&o.b, "X-Backend: %s\r\n", g_name);
    if (q->headers.len)
        buf_add(&o.b, q->headers.p, q->headers.len);
    if (q->bigheader > 0) {
        buf_str(&o.b, "X-Big: ");
        buf_reserve(&o.b, (size_t)q->bigheader);
        memset(o.b.p + o.b.len, 'x', (size_t)q->bigheader);
        o.b.len += (size_t)q->bigheader;
        buf_str(&o.b, "\r\n");
    }
    if (will_close && !q->close_mid && !q->hang)
        buf_str(&o.b, "Connection: close\r\n");
    else if (r->http10 && r->keepalive)
        buf_str(&o.b, "Connection: keep-alive\r\n");
    buf_str(&o.b, "\r\n");

    if (q->hang || q->body_delay || head_only || no_body)
        out_flush(&o);
    if (q->hang) {
        buf_free(&o.b);
        conn_hang(c);
        return CLOSED;
    }
    if (head_only || no_body)
        goto done;
    msleep(q->body_delay);

    if (q->chunked && !q->close_delim) {
        unsigned long long chunk = (unsigned long long)q->chunk;
        while (sent < blen && sent < limit && !o.err) {
            unsigned long long k = blen - sent < chunk ? blen - sent : chunk;
            unsigned long long part = limit - sent < k ? limit - sent : k;
            char sz[32];
            int n = snprintf(sz, sizeof(sz), "%llx\r\n", k);
            out_add(&o, sz, (size_t)n);
            out_body(&o, body, sent, part);
            sent += part;
            if (part == k)
                out_add(&o, "\r\n", 2);
        }
        if (!q->close_mid) {
            out_add(&o, "0\r\n", 3);
            if (q->trailer)
                out_add(&o, "X-Trailer: yes\r\n", 16);
            out_add(&o, "\r\n", 2);
        }
    } else {
        out_body(&o, body, 0, limit);
    }
done:
    out_flush(&o);
    buf_free(&o.b);
    if (o.err)
        return CLOSE;
    if (q->close_mid)
        return CLOSE;
    if (q->later.len && !will_close) {
        msleep(q->later_ms);
        send_all(c->fd, q->later.p, q->later.len);
    }
    return will_close ? CLOSE : KEEP;
}

/* ---- WebSocket -------------------------------------------------------- */

static int ws_send(struct conn *c, int fin_op, const char *p, size_t n)
{
    unsigned char h[10];
    size_t hl;
    struct buf b = { 0 };
    int rc;

    h[0] = (unsigned char)fin_op;
    if (n < 126) {
        h[1] = (unsigned char)n;
        hl = 2;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        int i;
        h[1] = 127;
        for (i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((unsigned long long)n >> (56 - 8 * i));
        hl = 10;
    }
    buf_add(&b, h, hl);
    buf_add(&b, p, n);
    rc = send_all(c->fd, b.p, b.len);
    buf_free(&b);
    return rc;
}

static void ws_session(struct conn *c, const char *key)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct buf b = { 0 }, acc = { 0 };

    buf_str(&acc, key);
    buf_str(&acc, WS_GUID);
    if (!EVP_Digest(acc.p, acc.len, md, &mdlen, EVP_sha1(), NULL)) {
        buf_free(&acc);
        send_error(c, 500);
        return;
    }
    buf_printf(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    base64(&b, md, mdlen);
    buf_printf(&b, "\r\nX-Backend: %s\r\n\r\n", g_name);
    buf_free(&acc);
    if (send_all(c->fd, b.p, b.len) != 0) {
        buf_free(&b);
        return;
    }
    buf_free(&b);

    for (;;) {
        const unsigned char *h;
        unsigned long long len;
        size_t hl = 2, i;
        int fin_op, op, masked;
        unsigned char mask[4] = { 0 };
        char *payload;

        if (conn_need(c, 2) != 0)
            return;
        h = (const unsigned char *)c->in + c->start;
        fin_op = h[0] & 0x8f;
        op = h[0] & 0x0f;
        masked = h[1] & 0x80;
        len = h[1] & 0x7f;
        if (len == 126)
            hl += 2;
        else if (len == 127)
            hl += 8;
        if (masked)
            hl += 4;
        if (conn_need(c, hl) != 0)
            return;
        h = (const unsigned char *)c->in + c->start;
        if (len == 126) {
            len = ((unsigned)h[2] << 8) | h[3];
        } else if (len == 127) {
            len = 0;
            for (i = 0; i < 8; i++)
                len = (len << 8) | h[2 + i];
        }
        if (masked)
            memcpy(mask, h + hl - 4, 4);
        if (len > WS_MAX_PAYLOAD) {
            ws_send(c, 0x88, "\x03\xf1", 2);    /* 1009 too big */
            return;
        }
        if (conn_need(c, hl + (size_t)len) != 0)
            return;
        payload = c->in + c->start + hl;
        for (i = 0; i < len && masked; i++)
            payload[i] ^= (char)mask[i & 3];
        c->start += hl + (size_t)len;

        switch (op) {
        case 0x0: case 0x1: case 0x2:
            if (ws_send(c, fin_op, payload, (size_t)len) != 0)
                return;
            break;
        case 0x8:
            ws_send(c, 0x88, payload, (size_t)len);
            return;
        case 0x9:
            if (ws_send(c, 0x8a, payload, (size_t)len) != 0)
                return;
            break;
        case 0xa:
            break;
        default:
            ws_send(c, 0x88, "\x03\xea", 2);    /* 1002 protocol error */
            return;
        }
    }
}

/* ---- one request ------------------------------------------------------ */

/* Serve one request.  Returns KEEP, CLOSE or CLOSED. */
static int serve(struct conn *c)
{
    struct req r = { 0 };
    struct query q = { 0 };
    struct buf body = { 0 };
    const char *path, *upgrade;
    size_t plen;
    int rc, status, control;
    int ret = CLOSE;

    rc = read_head(c, &r);
    if (rc == 0 || rc == -1) {
        req_free(&r);
        return CLOSE;
    }
    c->nreq++;
    if (rc != 1) {
        if (r.line.p != NULL)
            reqlog(r.line.p);
        send_error(c, rc);
        goto out;
    }
    path = target_path(r.target, &plen);
    control = (plen == 8 && memcmp(path, "/__stats", 8) == 0) ||
              (plen == 9 && memcmp(path, "/__health", 9) == 0);
    if (!control) {
        reqlog(r.line.p);
        atomic_fetch_add(&g_requests, 1);
    }
    if (g_verbose)
        fprintf(stderr, "%s conn %lu req %lu: %s %s\n", g_name, c->id, c->nreq,
                r.method, r.target);
    if ((rc = req_framing(&r)) != 0) {
        send_error(c, rc);
        goto out;
    }
    parse_query(r.target, &q);

    if (q.early > 0) {
        /* an upstream refusing an upload at once, that then neither
         * reads its body nor closes */
        static const char no[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n"
                                 "Connection: close\r\n\r\nearly";
        const char *cont = q.early_lf ? "HTTP/1.1 100 Continue\n\n" : "HTTP/1.1 100 Continue\r\n\r\n";
        if (q.early_continue >= 0) {
            /* unasked, and the 403 only once part of the body is in */
            long long want = q.early_continue;
            size_t cut[] = { 5, 12, strlen(cont) }, from = 0;  /* where each write ends */
            for (size_t i = q.early_split > 0 ? 0 : 2; i < 3; i++) {
                if (from > 0)
                    msleep(q.early_split);
                if (send_all(c->fd, cont + from, cut[i] - from) != 0)
                    goto out;
                from = cut[i];
            }
            while ((long long)(c->end - c->start) < want)
                if (conn_fill(c) <= 0)
                    goto out;
        }
        send_all(c->fd, no, sizeof(no) - 1);
        msleep(q.early);
        goto out;
    }
    if (r.expect_continue && !r.http10 && !q.no_continue &&
        (r.chunked || r.clen > 0)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (send_all(c->fd, cont, sizeof(cont) - 1) != 0)
            goto out;
    }
    if (r.chunked) {
        rc = read_chunked(c, &r);
        if (rc != 0) {
            if (rc > 0)
                send_error(c, rc);
            goto out;
        }
    } else if (r.clen > 0) {
        if (read_bytes(c, &r, (unsigned long long)r.clen) != 0)
            goto out;
    }

    if (plen == 8 && memcmp(path, "/__stats", 8) == 0) {
        buf_printf(&body, "{\"connections\":%lu,\"requests\":%lu,\"open\":%ld}\n",
                   atomic_load(&g_conn_seq), atomic_load(&g_requests),
                   atomic_load(&g_open));
        ret = respond(c, &r, &q, 200, "application/json", body.p, body.len);
        goto out;
    }
    if (plen == 9 && memcmp(path, "/__health", 9) == 0) {
        if (r.body.len > 0) {
            char tmp[16] = "";
            size_t n = r.body.len < 15 ? r.body.len : 15, s = 0;
            long long v;
            memcpy(tmp, r.body.p, n);
            while (n > 0 && isspace((unsigned char)tmp[n - 1]))
                tmp[--n] = '\0';
            while (isspace((unsigned char)tmp[s]))
                s++;
            v = parse_num(tmp + s);
            if (v < 100 || v > 999) {
                send_error(c, 400);
                goto out;
            }
            atomic_store(&g_health, (int)v);
        }
        buf_printf(&body, "{\"health\":%d}\n", atomic_load(&g_health));
        ret = respond(c, &r, &q, 200, "application/json", body.p, body.len);
        goto out;
    }

    if (q.reset) {
        conn_reset(c);
        ret = CLOSED;
        goto out;
    }
    if (q.hang_head) {
        conn_hang(c);
        ret = CLOSED;
        goto out;
    }
    msleep(q.delay);

    upgrade = req_header(&r, "Upgrade");
    if (path_ends(path, plen, "/ws") && upgrade != NULL &&
        has_token(upgrade, "websocket")) {
        const char *key = req_header(&r, "Sec-WebSocket-Key");
        if (key == NULL || *key == '\0')
            send_error(c, 400);
        else
            ws_session(c, key);
        goto out;
    }
    if (path_ends(path, plen, "/health")) {
        status = q.status ? q.status : atomic_load(&g_health);
        buf_str(&body, status >= 200 && status < 300 ? "ok" : "unhealthy");
        ret = respond(c, &r, &q, status, "text/plain", body.p, body.len);
        goto out;
    }
    status = q.status ? q.status : 200;
    if (q.size >= 0) {
        ret = respond(c, &r, &q, status, "text/plain", NULL,
                      (unsigned long long)q.size);
    } else {
        req_json(&body, c, &r);
        ret = respond(c, &r, &q, status, "application/json", body.p, body.len);
    }
out:
    buf_free(&body);
    buf_free(&q.headers);
    buf_free(&q.raw);
    buf_free(&q.later);
    buf_free(&q.repeat);
    req_free(&r);
    return ret;
}

static void *conn_thread(void *arg)
{
    struct conn *c = arg;
    int rc;

    do
        rc = serve(c);
    while (rc == KEEP);
    if (rc == CLOSE)
        conn_close(c);
    atomic_fetch_sub(&g_open, 1);
    free(c->in);
    free(c);
    return NULL;
}

/* ---- main ------------------------------------------------------------- */

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: backend [-v] [-H status] [-l address:port] "
            "[-n name] [-r request_log]\n");
    exit(2);
}

static int listen_on(const char *spec, char *shown, size_t shownlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char host[256] = "127.0.0.1";
    const char *portstr = spec, *colon;
    long long port;
    int fd, one = 1;

    memset(&ss, 0, sizeof(ss));
    errno = 0;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (rb == NULL || rb[1] != ':' || (size_t)(rb - spec - 1) >= sizeof(host))
            return -1;
        memcpy(host, spec + 1, (size_t)(rb - spec - 1));
        host[rb - spec - 1] = '\0';
        portstr = rb + 2;
    } else if ((colon = strrchr(spec, ':')) != NULL) {
        if ((size_t)(colon - spec) >= sizeof(host))
            return -1;
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        portstr = colon + 1;
    }
    port = parse_num(portstr);
    if (port < 0 || port > 65535)
        return -1;
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return -1;
        sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return -1;
        sl = sizeof(*s4);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 1024) == -1 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) {
        close(fd);
        return -1;
    }
    if (ss.ss_family == AF_INET6)
        snprintf(shown, shownlen, "[%s]:%u", host,
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    else
        snprintf(shown, shownlen, "%s:%u", host,
                 ntohs(((struct sockaddr_in *)&ss)->sin_port));
    return fd;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0", *logpath = NULL;
    char shown[300];
    sigset_t set;
    pthread_attr_t attr;
    struct pollfd pfd[2];
    int lfd, sfd, ch;
    long long h;

    while ((ch = getopt(argc, argv, "H:hl:n:r:v")) != -1) {
        switch (ch) {
        case 'H':
            h = parse_num(optarg);
            if (h < 100 || h > 999)
                usage();
            atomic_store(&g_health, (int)h);
            break;
        case 'l':
            addr = optarg;
            break;
        case 'n':
            g_name = optarg;
            break;
        case 'r':
            logpath = optarg;
            break;
        case 'v':
            g_verbose = 1;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || strpbrk(g_name, "\r\n") != NULL)
        usage();
    if (logpath != NULL) {
        g_reqlog = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (g_reqlog == -1) {
            fprintf(stderr, "backend: %s: %s\n", logpath, strerror(errno));
            return 1;
        }
    }
    lfd = listen_on(addr, shown, sizeof(shown));
    if (lfd == -1) {
        fprintf(stderr, "backend: cannot listen on %s: %s\n", addr,
                errno ? strerror(errno) : "bad address");
        return 1;
    }

    /* Signals are taken synchronously by the main loop through a signalfd;
     * the mask is inherited by every connection thread. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd == -1) {
        perror("backend: signalfd");
        return 1;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);

    printf("listening %s\n", shown);
    fflush(stdout);

    pfd[0].fd = lfd;
    pfd[0].events = POLLIN;
    pfd[1].fd = sfd;
    pfd[1].events = POLLIN;
    for (;;) {
        struct conn *c;
        pthread_t tid;
        int fd, one = 1;

        if (poll(pfd, 2, -1) == -1) {
            if (errno == EINTR)
                continue;
            perror("backend: poll");
            break;
        }
        if (pfd[1].revents)
            break;
        if (!(pfd[0].revents & POLLIN))
            continue;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                msleep(10);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = calloc(1, sizeof(*c));
        if (c == NULL || (c->in = malloc(16384)) == NULL)
            die_oom();
        c->fd = fd;
        c->cap = 16384;
        c->id = atomic_fetch_add(&g_conn_seq, 1) + 1;
        atomic_fetch_add(&g_open, 1);
        if (pthread_create(&tid, &attr, conn_thread, c) != 0) {
            atomic_fetch_sub(&g_open, 1);
            close(fd);
            free(c->in);
            free(c);
        }
    }
    /* Connection threads may be blocked anywhere (hang=1) or still be
     * writing the request log: end the process at once, without exit
     * handlers or closes under their feet; the kernel closes the rest. */
    _exit(0);
}
