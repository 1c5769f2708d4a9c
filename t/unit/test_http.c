/*
 * test_http.c: request heads (worker/http.c) and body framing
 * (worker/body.c): the grammar checks, what http-parser 2.9.4 lets
 * through and we refuse, the limits, and the chunked decoder.  Heads are
 * read by ks_http_read_head() from a real socketpair.
 */
#include <config.h>

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "shm/shm.h"
#include "shm/table.h"
#include "worker/body.h"
#include "worker/conn.h"
#include "worker/http.h"
#include "worker/worker.h"

/* ---- a worker with just enough around it ------------------------------- */

static char table_buf[8192];
static struct ks_score score;
static struct ks_worker worker;
static char conn_buf[65536];
static struct ks_header headers[16];
static int peer = -1;
static struct ks_conn conn;

static void setup(void)
{
    struct ks_table_builder b;
    ck_assert_int_eq(ks_table_begin(&b, table_buf, sizeof(table_buf), 0, 0, 0, 0, 0), 0);
    struct ks_t_settings *s = &b.t->settings;
    s->read_header_timeout_ms = 300;
    s->read_body_timeout_ms = 300;
    s->send_timeout_ms = 1000;
    s->idle_timeout_ms = 300;
    s->max_headers = 8;
    s->max_request_line = 256;
    s->max_header_bytes = 1024;
    s->max_body_bytes = 64;
    ck_assert_uint_gt(ks_table_finish(&b), 0);
    memset(&worker, 0, sizeof(worker));
    worker.table = (struct ks_table *)table_buf;
    worker.score = &score;
    worker.answer_fd = -1;      /* as ks_worker_main: no upstream answer to watch */
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    peer = sv[1];
    memset(&conn, 0, sizeof(conn));
    conn.fd = sv[0];
    conn.w = &worker;
    conn.buf = conn_buf;
    conn.cap = sizeof(conn_buf);
}

static void teardown(void)
{
    close(conn.fd);
    close(peer);
}

static struct ks_t_settings *settings(void)
{
    return &worker.table->settings;
}

static void send_str(const char *s, size_t n)
{
    ck_assert_int_eq(write(peer, s, n), (ssize_t)n);
}

/* Read one head from what was sent; returns the status (0 = accepted). */
static int head_n(struct ks_request *r, const char *bytes, size_t n)
{
    if (n > 0)
        send_str(bytes, n);
    int status = -1;
    enum ks_head_result hr = ks_http_read_head(&conn, r, headers, ks_now_ms() + 300, &status);
    if (hr == KS_HEAD_CLOSED || hr == KS_HEAD_CUT)
        return -1;
    ck_assert_int_eq(hr == KS_HEAD_OK, status == 0);
    return status;
}

static int head(struct ks_request *r, const char *bytes)
{
    return head_n(r, bytes, strlen(bytes));
}

/* A new connection for each head of its own: what an error leaves unread
 * in the buffer would otherwise be the next call's first bytes. */
static void fresh_conn(void)
{
    close(conn.fd);
    close(peer);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    peer = sv[1];
    conn.fd = sv[0];
    conn.start = conn.len = 0;
}

static int status_of(const char *bytes)
{
    struct ks_request r;
    fresh_conn();
    return head(&r, bytes);
}

/* ---- the grammar (pure) ---------------------------------------------- */

static void good(const char *h)
{
    const char *why = ks_http_check_head(h, strlen(h));
    ck_assert_msg(why == NULL, "refused (%s): %s", why, h);
}

static void bad(const char *h, size_t n)
{
    ck_assert_msg(ks_http_check_head(h, n) != NULL, "accepted: %s", h);
}
#define BAD(s) bad(s, sizeof(s) - 1)

START_TEST(test_grammar)
{
    good("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    good("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");     /* leading empty lines */
    good("GET /a?b=c&d HTTP/1.0\r\n\r\n");
    good("M-SEARCH * HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Tab:\tv\t\r\nX-Bin: caf\xc3\xa9\r\n\r\n");
    good("GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n");
    BAD("GET / HTTP/1.1\nHost: x\n\n");                        /* bare LF */
    BAD("GET / HTTP/1.1\r\nHost: x\n\r\n");
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n");       /* bare CR */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n");    /* obs-fold */
    BAD("GET / HTTP/1.1\r\n Host: x\r\n\r\n");                 /* fold before the first */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n");         /* space before colon */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX\t: a\r\n\r\n");
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n");       /* NUL */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX\0Y: a\r\n\r\n");
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01\r\n\r\n");      /* control bytes */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n");
    BAD("GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n");           /* empty name */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX@Y: a\r\n\r\n");
    BAD("GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n");
    BAD("GET  / HTTP/1.1\r\nHost: x\r\n\r\n");                 /* two spaces */
    BAD("GET / HTTP/1.1 \r\nHost: x\r\n\r\n");
    BAD("GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n");
    BAD("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n");              /* tab in the target */
    BAD("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n");
    BAD("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n");
    BAD("GET /\r\nHost: x\r\n\r\n");                           /* HTTP/0.9 */
    BAD("GET / HTTP/1.10\r\nHost: x\r\n\r\n");
    BAD("GET / http/1.1\r\nHost: x\r\n\r\n");
    BAD("GET / HTTP/1.1\r\nHost: x\r\n\r\nX");                 /* bytes after */
    BAD("\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
}
END_TEST

START_TEST(test_response_grammar)
{
    const char *ok1 = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    const char *ok2 = "HTTP/1.1 204\r\n\r\n";
    const char *ok3 = "HTTP/1.0 404 Not  Found here\r\nX: y\r\n\r\n";
    ck_assert_ptr_null(ks_http_check_response_head(ok1, strlen(ok1)));
    ck_assert_ptr_null(ks_http_check_response_head(ok2, strlen(ok2)));
    ck_assert_ptr_null(ks_http_check_response_head(ok3, strlen(ok3)));
    const char *b1 = "HTTP/1.1 200 OK\nX: y\n\n";
    const char *b2 = "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n";
    const char *b3 = "HTTP/1.1 20 OK\r\n\r\n";
    const char *b4 = "HTTP/1.1 200 O\x01K\r\n\r\n";
    ck_assert_ptr_nonnull(ks_http_check_response_head(b1, strlen(b1)));
    ck_assert_ptr_nonnull(ks_http_check_response_head(b2, strlen(b2)));
    ck_assert_ptr_nonnull(ks_http_check_response_head(b3, strlen(b3)));
    ck_assert_ptr_nonnull(ks_http_check_response_head(b4, strlen(b4)));
    /* three digits, but no status: 100 to 599 only */
    static const char *const range[] = { "000", "099", "600", "999" };
    for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++) {
        char head[64];
        snprintf(head, sizeof(head), "HTTP/1.1 %s X\r\n\r\n", range[i]);
        ck_assert_str_eq(ks_http_check_response_head(head, strlen(head)), "status code outside 100 to 599");
    }
    const char *edges[] = { "HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 599 X\r\n\r\n" };
    ck_assert_ptr_null(ks_http_check_response_head(edges[0], strlen(edges[0])));
    ck_assert_ptr_null(ks_http_check_response_head(edges[1], strlen(edges[1])));
}
END_TEST

START_TEST(test_small_checks)
{
    ck_assert(ks_http_valid_host("example.com", 11));
    ck_assert(ks_http_valid_host("example.com:8080", 16));
    ck_assert(ks_http_valid_host("[::1]:80", 8));
    ck_assert(ks_http_valid_host("", 0));
    ck_assert(!ks_http_valid_host("a b", 3));
    ck_assert(!ks_http_valid_host("a/b", 3));
    ck_assert(!ks_http_valid_host("a@b", 3));
    ck_assert(!ks_http_valid_host("a:8x", 4));
    ck_assert(!ks_http_valid_host("[::1", 4));
    ck_assert(!ks_http_valid_host("[zz]", 4));
    ck_assert(ks_http_sane_request_id("abc-123_x.y", 11));
    ck_assert(ks_http_sane_request_id("550e8400-e29b-41d4-a716-446655440000", 36));
    ck_assert(!ks_http_sane_request_id("", 0));
    ck_assert(!ks_http_sane_request_id("a b", 3));
    ck_assert(!ks_http_sane_request_id("a\"b", 3));
    char big[80];
    memset(big, 'a', sizeof(big));
    ck_assert(ks_http_sane_request_id(big, 64));
    ck_assert(!ks_http_sane_request_id(big, 65));
    ck_assert(ks_http_token_in("keep-alive, Upgrade", 19, "upgrade"));
    ck_assert(!ks_http_token_in("keep-alive, Upgraded", 20, "upgrade"));
}
END_TEST

static bool in_set(int c, const char *set)
{
    return c != 0 && strchr(set, c) != NULL;
}

/* Every byte between two letters, against the sets spelled out: a host
 * (RFC 3986 reg-name) and a client's X-Request-ID; NUL is in neither. */
START_TEST(test_host_and_id_bytes)
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (int c = 0; c < 256; c++) {
        const char v[3] = { 'a', (char)c, 'b' };
        bool host = in_set(c, alnum) || in_set(c, "-._~!$&'()*+,;=%");
        ck_assert_msg(ks_http_valid_host(v, 3) == host, "host byte 0x%02x", c);
        bool id = in_set(c, alnum) || in_set(c, "._~:+/=-");
        ck_assert_msg(ks_http_sane_request_id(v, 3) == id, "request id byte 0x%02x", c);
    }
}
END_TEST

/* ---- reading heads ------------------------------------------------------- */

START_TEST(test_read_ok)
{
    struct ks_request r;
    const char *h = "POST /a/b?x=1 HTTP/1.1\r\nHost: Example.COM.:8080 \r\nContent-Length: 3\r\n"
                    "Expect: 100-continue\r\n\r\nabcGET";
    ck_assert_int_eq(head(&r, h), 0);
    ck_assert_str_eq(r.method, "POST");
    ck_assert_int_eq((int)r.path_len, 4);
    ck_assert(memcmp(r.path, "/a/b", 4) == 0);
    ck_assert(memcmp(r.query, "x=1", r.query_len) == 0);
    ck_assert_str_eq(r.host, "example.com");
    ck_assert(memcmp(r.host_value, "Example.COM.:8080", r.host_value_len) == 0);
    ck_assert(r.has_content_length);
    ck_assert_uint_eq(r.content_length, 3);
    ck_assert(r.expect_continue);
    ck_assert(r.keep_alive);
    /* the head ends after its final LF: the body starts right there */
    ck_assert_uint_eq(r.head_len, strlen(h) - 6);
    ck_assert(memcmp(conn.buf + r.head_len, "abc", 3) == 0);
}
END_TEST

START_TEST(test_read_forms)
{
    struct ks_request r;
    ck_assert_int_eq(head(&r, "GET http://Example.com:81/p?q=1 HTTP/1.1\r\nHost: example.com:81\r\n\r\n"), 0);
    ck_assert(r.absolute_form);
    ck_assert(memcmp(r.origin, "/p?q=1", r.origin_len) == 0 && r.origin_len == 6);
    ck_assert(memcmp(r.path, "/p", r.path_len) == 0);
    ck_assert_int_eq(head(&r, "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"), 0);
    ck_assert(r.origin_len == 1 && r.origin[0] == '/');
    /* HTTP/1.0 without Host: the target names the host */
    ck_assert_int_eq(head(&r, "GET http://Example.com.:81/p HTTP/1.0\r\n\r\n"), 0);
    ck_assert_str_eq(r.host, "example.com");
    ck_assert(r.host_value_len == 15 && memcmp(r.host_value, "Example.com.:81", 15) == 0);
    ck_assert_int_eq(head(&r, "GET http://[::1]?q HTTP/1.0\r\n\r\n"), 0);  /* query, no path: "/" */
    ck_assert(r.path_len == 1 && r.path[0] == '/');
    ck_assert(r.origin_len == 2 && memcmp(r.origin, "?q", 2) == 0);
    ck_assert(r.query_len == 1 && r.query[0] == 'q');
    ck_assert_int_eq(head(&r, "GET http://[::1]:8080 HTTP/1.0\r\n\r\n"), 0);
    ck_assert_str_eq(r.host, "[::1]");
    ck_assert(r.origin_len == 1 && r.origin[0] == '/');
    /* an empty port is the scheme's (RFC 9110 section 4.2.3) */
    ck_assert_int_eq(head(&r, "GET http://example.com:/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n"), 0);
    ck_assert(r.path_len == 2 && memcmp(r.path, "/p", 2) == 0);
    ck_assert(r.origin_len == 4 && memcmp(r.origin, "/p?q", 4) == 0);
    ck_assert(r.query_len == 1 && r.query[0] == 'q');
    ck_assert_int_eq(head(&r, "GET http://example.com:?q HTTP/1.1\r\nHost: example.com:80\r\n\r\n"), 0);
    ck_assert(r.origin_len == 2 && memcmp(r.origin, "?q", 2) == 0);
    ck_assert_int_eq(head(&r, "GET http://[::1]: HTTP/1.0\r\n\r\n"), 0);
    ck_assert_str_eq(r.host, "[::1]");
    ck_assert(r.origin_len == 1 && r.origin[0] == '/');
    ck_assert_int_eq(head(&r, "GET http://example.com:/ HTTP/1.1\r\nHost: example.com:81\r\n\r\n"), 400);
    ck_assert_int_eq(head(&r, "GET http://:/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    ck_assert_int_eq(head(&r, "GET http://a/ HTTP/1.0\r\nHost: b\r\n\r\n"), 400);
    ck_assert_int_eq(head(&r, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    ck_assert_int_eq(head(&r, "GET / HTTP/1.0\r\n\r\n"), 0);           /* 1.0 may omit Host */
    ck_assert(!r.keep_alive);
    ck_assert_int_eq(head(&r, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    ck_assert(r.keep_alive);
    ck_assert_int_eq(head(&r, "GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n"), 0);
    ck_assert(!r.keep_alive);
    ck_assert_int_eq(head(&r, "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), 0);
    ck_assert_str_eq(r.host, "[::1]");
    ck_assert_int_eq(head(&r, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), 0);
    ck_assert(r.upgrade);
    ck_assert_int_eq(head(&r, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"), 0);
    ck_assert(!r.upgrade);                                              /* not in Connection */
    ck_assert_int_eq(head(&r, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n0\r\n\r\n"), 0);
    ck_assert(r.chunked);
}
END_TEST

START_TEST(test_pipelined)
{
    struct ks_request r;
    const char *two = "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(head(&r, two), 0);
    ck_assert(memcmp(r.path, "/1", 2) == 0);
    ck_assert_uint_eq(conn.start, strlen(two) / 2);
    ck_assert_int_eq(head_n(&r, NULL, 0), 0);
    ck_assert(memcmp(r.path, "/2", 2) == 0);
}
END_TEST

/* What the Debian build of http-parser 2.9.4 accepts and we refuse: every
 * one of these parses without error there (t/unit/test_http.c keeps the
 * list honest: see test_parser_leniency). */
static const char *const lenient[] = {
    "GET / HTTP/1.1\nHost: x\n\n",
    "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    "GET / HTTP/1.1\r\n Host: x\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n",
    "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "GET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET http://evil/ HTTP/1.1\r\nHost: good\r\n\r\n",
    "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
};

static const http_parser_settings no_callbacks;

START_TEST(test_parser_leniency)
{
    /* the premise: the library parses each of them without complaint */
    for (size_t i = 0; i < KS_ARRAY_LEN(lenient); i++) {
        http_parser p;
        http_parser_init(&p, HTTP_REQUEST);
        size_t n = strlen(lenient[i]);
        size_t k = http_parser_execute(&p, &no_callbacks, lenient[i], n);
        ck_assert_msg(k == n && HTTP_PARSER_ERRNO(&p) == HPE_OK, "http-parser refuses case %zu now", i);
    }
}
END_TEST

START_TEST(test_refused_400)
{
    int i = _i;
    ck_assert_msg(status_of(lenient[i]) == 400, "case %d: %s", i, lenient[i]);
}
END_TEST

START_TEST(test_refused_other)
{
    ck_assert_int_eq(status_of("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
    ck_assert_int_eq(status_of("GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n"), 417);
    /* a method http-parser does not know: not implemented (RFC 9110 9.1),
     * when it is one as nginx takes methods; other bytes are malformed */
    ck_assert_int_eq(status_of("FOO / HTTP/1.1\r\nHost: x\r\n\r\n"), 501);
    ck_assert_int_eq(status_of("X-Y_Z / HTTP/1.1\r\nHost: x\r\n\r\n"), 501);
    ck_assert_int_eq(status_of("get / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("GE(T / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("\r\nFOO / HTTP/1.1\r\nHost: x\r\n\r\n"), 501);
    ck_assert_int_eq(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"), 400);
    ck_assert_int_eq(status_of("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01\r\n\r\n"), 400);
}
END_TEST

/* Another HTTP version: 505 once its request line is in, whatever the
 * parser makes of the rest (one connection each: the rest of such a
 * request is not read). */
static const char *const other_versions[] = {
    "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "GET / HTTP/0.9\r\nHost: x\r\n\r\n",
    "GET / HTTP/3.0\r\n",
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",          /* the HTTP/2 connection preface */
    "\r\nPRI * HTTP/2.0\r\n",
    "GET /\r\n",                                    /* HTTP/0.9: no fields follow */
    "GET /index.html\r\nHost: x\r\n\r\n",
};

START_TEST(test_refused_505)
{
    ck_assert_msg(status_of(other_versions[_i]) == 505, "%s", other_versions[_i]);
}
END_TEST

START_TEST(test_request_line_kind)
{
#define KIND(s) ks_http_request_line(s, sizeof(s) - 1)
    ck_assert_int_eq(KIND("GET / HTTP/1.1\r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET / HTTP/1.0\r\nHost"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET / HTTP/2.0\r\n"), KS_LINE_UNSUPPORTED);
    ck_assert_int_eq(KIND("GET / HTTP/1.2\r\n"), KS_LINE_OTHER);     /* served as 1.1 */
    ck_assert_int_eq(KIND("GET /\r\n"), KS_LINE_UNSUPPORTED);
    ck_assert_int_eq(KIND("PRI"), KS_LINE_PARTIAL);
    ck_assert_int_eq(KIND("PRI * HTTP/2"), KS_LINE_PARTIAL);
    ck_assert_int_eq(KIND("PRI * HTTP/2.0\r"), KS_LINE_PARTIAL);
    ck_assert_int_eq(KIND("\r\n"), KS_LINE_PARTIAL);
    ck_assert_int_eq(KIND(""), KS_LINE_PARTIAL);
    ck_assert_int_eq(KIND("\x16\x03\x01"), KS_LINE_OTHER);      /* TLS on the plain port */
    ck_assert_int_eq(KIND("GET / HTTP/2.0\n"), KS_LINE_OTHER);   /* bare LF: a 400 */
    ck_assert_int_eq(KIND("GET  / HTTP/2.0\r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET / HTTP/2.0 \r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET / HTTP/1.10\r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET / http/2.0\r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET /#x\r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET \r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("GET\r\n"), KS_LINE_OTHER);
    ck_assert_int_eq(KIND("\nGET /\r\n"), KS_LINE_OTHER);
#undef KIND
}
END_TEST

START_TEST(test_preface_in_pieces)
{
    /* the parser gives up at "PRI"; the line is judged when it ends */
    struct ks_request r;
    int status = -1;
    send_str("PRI", 3);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        static const char rest[] = " * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        usleep(50 * 1000);
        _exit(write(peer, rest, sizeof(rest) - 1) == sizeof(rest) - 1 ? 0 : 1);
    }
    ck_assert_int_eq(ks_http_read_head(&conn, &r, headers, ks_now_ms() + 300, &status), KS_HEAD_ERROR);
    ck_assert_int_eq(status, 505);
    int ws;
    ck_assert_int_eq(waitpid(child, &ws, 0), child);
    ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
}
END_TEST

START_TEST(test_limit_before_parse_error)
{
    /* the limits are judged before a parse error further on: over
     * max_header_bytes (1024) is 431, whatever comes after */
    char big[2048];
    snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: x\r\nX-A: %01100d\r\nno colon\r\n\r\n", 0);
    ck_assert_int_eq(status_of(big), 431);
}
END_TEST

START_TEST(test_backslash)
{
    ck_assert_int_eq(status_of("GET /a/..\\b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
}
END_TEST

START_TEST(test_backslash_in_query)
{
    ck_assert_int_eq(status_of("GET /a?x=..\\b HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
}
END_TEST

START_TEST(test_limits)
{
    char big[2048];
    /* request line over max_request_line (256) */
    snprintf(big, sizeof(big), "GET /%0300d HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    ck_assert_int_eq(status_of(big), 414);
}
END_TEST

START_TEST(test_limit_header_bytes)
{
    char big[2048];
    snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: x\r\nX: %01100d\r\n\r\n", 0);
    ck_assert_int_eq(status_of(big), 431);
}
END_TEST

START_TEST(test_limit_header_count)
{
    ck_assert_int_eq(status_of("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n"
                               "E: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n"), 431);
}
END_TEST

START_TEST(test_head_timeout)
{
    /* part of a head, then silence: 408 after read_header_timeout */
    int64_t t0 = ks_now_ms();
    ck_assert_int_eq(status_of("GET / HTTP/1.1\r\nHo"), 408);
    ck_assert_int_ge(ks_now_ms() - t0, 250);
    /* nothing at all (on a new connection): closed without an answer */
    teardown();
    setup();
    struct ks_request r;
    ck_assert_int_eq(head_n(&r, NULL, 0), -1);
}
END_TEST

/* ---- body framing ---------------------------------------------------------- */

START_TEST(test_chunk_lines)
{
#define CL_OK(s) ck_assert_msg(ks_chunk_line_valid(s, sizeof(s) - 1), "refused: %s", s)
#define CL_BAD(s) ck_assert_msg(!ks_chunk_line_valid(s, sizeof(s) - 1), "accepted: %s", s)
    CL_OK("5\r\n");
    CL_OK("0\r\n");
    CL_OK("00a\r\n");
    CL_OK("FfFf\r\n");
    CL_OK("5;name\r\n");
    CL_OK("5;name=value\r\n");
    CL_OK("5 ; a = b ;c\r\n");
    CL_OK("5;a=\"quoted ; \\\" value\"\r\n");
    CL_BAD("5 \r\n");
    CL_BAD(" 5\r\n");
    CL_BAD("\r\n");
    CL_BAD("0x5\r\n");
    CL_BAD("-5\r\n");
    CL_BAD("5\n");
    CL_BAD("5\r\r");
    CL_BAD("5;\r\n");
    CL_BAD("5;a=\r\n");
    CL_BAD("5;a\x01\r\n");
    CL_BAD("5;a\0b\r\n");
    CL_BAD("5;a=\"open\r\n");
    CL_BAD("5;a b\r\n");
    CL_BAD("00000000000000005\r\n");
}
END_TEST

/* Decode a chunked body given after a minimal head; returns the decoded
 * data ("" on a framing error, with *ok false and the reason in
 * decode_error). */
static const char *decode_error;
static const char *decode_chunked(const char *body, bool *ok, size_t *consumed, char *trailers)
{
    static char data[4096];
    static char acc[1024];
    const char *head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = NULL;
    size_t hl = strlen(head);
    /* the head, paused nowhere: the parser stands at the body */
    static const http_parser_settings none;
    ck_assert_uint_eq(http_parser_execute(&p, &none, head, hl), hl);
    struct ks_decoder d;
    ks_decoder_init(&d, &p, KS_BODY_CHUNKED, acc, sizeof(acc));
    size_t len = strlen(body), pos = 0, o = 0;
    *ok = true;
    /* one byte at a time: framing split anywhere must not matter */
    while (pos < len && !d.done) {
        struct ks_slice s[4];
        size_t n;
        ssize_t k = ks_decoder_run(&d, body + pos, 1, s, 4, &n);
        if (k < 0) {
            *ok = false;
            decode_error = d.error;
            return "";
        }
        for (size_t i = 0; i < n; i++) {
            memcpy(data + o, s[i].p, s[i].n);
            o += s[i].n;
        }
        pos += (size_t)k;
        if (k == 0)
            break;
    }
    data[o] = '\0';
    *ok = d.done;
    *consumed = pos;
    if (trailers != NULL) {
        size_t tl = ks_decoder_trailers(&d, trailers, 512);
        trailers[tl] = '\0';
    }
    return data;
}

START_TEST(test_decoder)
{
    bool ok;
    size_t used;
    char tr[512];
    ck_assert_str_eq(decode_chunked("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nNEXT", &ok, &used, tr), "hello world");
    ck_assert(ok);
    ck_assert_uint_eq(used, strlen("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"));
    ck_assert_str_eq(tr, "");
    ck_assert_str_eq(decode_chunked("3\r\nabc\r\n0\r\nX-T:  v 1 \r\nContent-Length: 9\r\nHost: e\r\n\r\n", &ok, &used, tr), "abc");
    ck_assert(ok);
    ck_assert_str_eq(tr, "X-T: v 1\r\n");      /* re-serialised, framing fields dropped */

    static const char *const refused[] = {
        "5\r\nhelloXX0\r\n\r\n",             /* data not followed by CRLF */
        "5\r\nhello\n0\r\n\r\n",
        "5\r\rhello\r\n0\r\n\r\n",           /* CR not followed by LF */
        "5 \r\nhello\r\n0\r\n\r\n",          /* space after the size */
        "5;a\x01\r\nhello\r\n0\r\n\r\n",     /* control byte in an extension */
        "5;a\nb\r\nhello\r\n0\r\n\r\n",      /* LF inside an extension */
        "5;\"x\r\nhello\r\n0\r\n\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",   /* obs-fold in trailers */
        "5\r\nhello\r\n0\r\nX-T : v\r\n\r\n",        /* space before colon */
        "5\r\nhello\r\n0\r\nX-T: v\n\r\n",
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(refused); i++) {
        decode_chunked(refused[i], &ok, &used, NULL);
        ck_assert_msg(!ok, "accepted: case %zu", i);
    }

    /* a size too large for the parser is said to be one (http-parser
     * reports it as a bad Content-Length) */
    decode_chunked("ffffffffffffffff\r\nhello\r\n0\r\n\r\n", &ok, &used, NULL);
    ck_assert(!ok);
    ck_assert_str_eq(decode_error, "chunk size too large");
    decode_chunked("10000000000000000\r\nhello\r\n0\r\n\r\n", &ok, &used, NULL);
    ck_assert(!ok);
    ck_assert_str_eq(decode_error, "chunk size too large");
}
END_TEST

START_TEST(test_body_reader)
{
    struct ks_request r;
    const char *req = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
    ck_assert_int_eq(head(&r, req), 0);
    char acc[256];
    struct ks_body b;
    ks_body_init(&b, &conn, &r, acc, sizeof(acc));
    char out[64];
    size_t o = 0, n;
    struct ks_slice s[4];
    do {
        ck_assert_int_eq(ks_body_next(&b, s, 4, &n), 0);
        for (size_t i = 0; i < n; i++) {
            memcpy(out + o, s[i].p, s[i].n);
            o += s[i].n;
        }
    } while (n > 0);
    out[o] = '\0';
    ck_assert_str_eq(out, "wikipedia");
    ck_assert(!ks_body_pending(&b));
    /* the next request is left where it was */
    ck_assert(memcmp(conn.buf + conn.start, "GET /next", 9) == 0);
}
END_TEST

START_TEST(test_body_limit)
{
    struct ks_request r;
    /* max_body_bytes is 64: a chunked body over it is 413 */
    char req[512];
    snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "41\r\n%065d\r\n0\r\n\r\n", 0);
    ck_assert_int_eq(head(&r, req), 0);
    char acc[256];
    struct ks_body b;
    ks_body_init(&b, &conn, &r, acc, sizeof(acc));
    struct ks_slice s[4];
    size_t n;
    ck_assert_int_eq(ks_body_next(&b, s, 4, &n), -1);
    ck_assert_int_eq(b.status, 413);
}
END_TEST

START_TEST(test_body_timeout)
{
    struct ks_request r;
    ck_assert_int_eq(head(&r, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"), 0);
    char acc[256];
    struct ks_body b;
    ks_body_init(&b, &conn, &r, acc, sizeof(acc));
    struct ks_slice s[4];
    size_t n;
    ck_assert_int_eq(ks_body_next(&b, s, 4, &n), 0);
    ck_assert_uint_eq(n, 1);
    int64_t t0 = ks_now_ms();
    ck_assert_int_eq(ks_body_next(&b, s, 4, &n), -1);
    ck_assert_int_eq(b.status, 408);
    ck_assert_int_ge(ks_now_ms() - t0, 250);
}
END_TEST

START_TEST(test_body_min_rate)
{
    settings()->read_body_timeout_ms = 60000;
    settings()->min_body_rate = 1000;
    struct ks_request r;
    ck_assert_int_eq(head(&r, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n"), 0);
    char acc[256];
    struct ks_body b;
    ks_body_init(&b, &conn, &r, acc, sizeof(acc));
    struct ks_slice s[4];
    size_t n;
    /* 10 bytes then silence: at 1000 bytes/s after the first second the
     * client is due to send more by 1.01 s, long before the 60 s */
    send_str("0123456789", 10);
    ck_assert_int_eq(ks_body_next(&b, s, 4, &n), 0);
    ck_assert_int_eq(ks_body_next(&b, s, 4, &n), -1);
    ck_assert_int_eq(b.status, 408);
    /* the rate ended the wait, not read_body_timeout (no wall-clock bound
     * here: a loaded machine may schedule this process late) */
    ck_assert_str_eq(b.error, "request body slower than min_body_rate");
}
END_TEST

START_TEST(test_body_rewind)
{
    struct ks_request r;
    ck_assert_int_eq(head(&r, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"), 0);
    char acc[256];
    struct ks_body b;
    ks_body_init(&b, &conn, &r, acc, sizeof(acc));
    struct ks_body_mark m;
    ks_body_mark(&b, &m);
    struct ks_slice s[4];
    size_t n;
    for (int round = 0; round < 2; round++) {
        ck_assert(ks_body_rewind(&b, &m));
        ck_assert_int_eq(ks_body_buffered(&b, s, 4, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert(s[0].n == 5 && memcmp(s[0].p, "hello", 5) == 0);
        ck_assert(!ks_body_pending(&b));
    }
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *pure = tcase_create("grammar");
    tcase_add_test(pure, test_grammar);
    tcase_add_test(pure, test_response_grammar);
    tcase_add_test(pure, test_small_checks);
    tcase_add_test(pure, test_host_and_id_bytes);
    tcase_add_test(pure, test_parser_leniency);
    tcase_add_test(pure, test_request_line_kind);
    tcase_add_test(pure, test_chunk_lines);
    tcase_add_test(pure, test_decoder);
    suite_add_tcase(s, pure);
    TCase *io = tcase_create("read");
    tcase_add_checked_fixture(io, setup, teardown);
    tcase_add_test(io, test_read_ok);
    tcase_add_test(io, test_read_forms);
    tcase_add_test(io, test_pipelined);
    tcase_add_loop_test(io, test_refused_400, 0, (int)KS_ARRAY_LEN(lenient));
    tcase_add_test(io, test_refused_other);
    tcase_add_loop_test(io, test_refused_505, 0, (int)KS_ARRAY_LEN(other_versions));
    tcase_add_test(io, test_preface_in_pieces);
    tcase_add_test(io, test_limit_before_parse_error);
    tcase_add_test(io, test_backslash);
    tcase_add_test(io, test_backslash_in_query);
    tcase_add_test(io, test_limits);
    tcase_add_test(io, test_limit_header_bytes);
    tcase_add_test(io, test_limit_header_count);
    tcase_add_test(io, test_head_timeout);
    tcase_add_test(io, test_body_reader);
    tcase_add_test(io, test_body_limit);
    tcase_add_test(io, test_body_timeout);
    tcase_add_test(io, test_body_min_rate);
    tcase_add_test(io, test_body_rewind);
    suite_add_tcase(s, io);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
