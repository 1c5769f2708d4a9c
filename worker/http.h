/*
 * http.h: HTTP/1.1 request heads, read with http-parser under the header
 * deadline, with the limits of the route table enforced while the bytes
 * arrive.  The request's strings point into the connection buffer and stay
 * valid until the next request is read on that connection.
 *
 * http-parser does the framing; the Debian 2.9.4 build is lenient where a
 * proxy must not be, so every head is also checked against the grammar of
 * RFC 9112 here (ks_http_check_head) and against the framing rules the
 * parser does not enforce (finish_head in http.c).  What it accepts and
 * we refuse, found with t/unit/test_http.c:
 *
 *   bare LF line ends, obs-fold (also before the first field), a space
 *   between field name and colon, two spaces in the request line, tabs,
 *   '#' and bytes >= 0x80 in the target, HTTP/0.9 "GET /" lines, any
 *   HTTP/x.y version, "Transfer-Encoding: gzip, chunked" and
 *   "identity, chunked", several Transfer-Encoding fields, Transfer-
 *   Encoding in HTTP/1.0; in chunked bodies (worker/body.c) any bytes
 *   after the chunk data instead of CRLF, CR not followed by LF after the
 *   chunk size, control bytes, NUL and LF in chunk extensions, a space
 *   after the chunk size, obs-fold and spaces before the colon in
 *   trailers.
 */
#ifndef KS_HTTP_H
#define KS_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "worker/conn.h"

#define KS_HOST_MAX 256
#define KS_REQUEST_ID_MAX 64
/* A request may pass through the same gateway this many times (a script
 * calling another tenant of its own gateway is two); one more is 508. */
#define KS_MAX_PASSES 3

struct ks_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct ks_request {
    /* request line */
    const char *method;
    size_t method_len;
    bool head_method;           /* HEAD: the answer has no body */
    const char *target;         /* as sent */
    size_t target_len;
    const char *path;           /* target up to '?' (of the URL in absolute-form) */
    size_t path_len;
    const char *query;          /* after '?', NULL when there is none */
    size_t query_len;
    const char *origin;         /* origin-form target to forward: path[?query], or "*";
                                 * "?query" for an absolute-form URL without a path */
    size_t origin_len;
    unsigned short http_major, http_minor;
    bool absolute_form;
    /* headers in arrival order */
    struct ks_header *headers;
    size_t nheaders;
    char host[KS_HOST_MAX];     /* Host: lower-cased, port and trailing dot stripped; "" if none */
    const char *host_value;     /* Host as sent, surrounding whitespace trimmed (NULL if none) */
    size_t host_value_len;
    /* framing, from the parser */
    bool keep_alive;
    bool chunked;
    bool has_content_length;
    uint64_t content_length;
    bool expect_continue;
    bool upgrade;               /* Upgrade + Connection: upgrade */
    int max_forwards;           /* of an OPTIONS request, else -1 (RFC 9110 7.6.2) */
    size_t head_len;            /* bytes of the head in the connection buffer */
    /* bookkeeping */
    char id[KS_REQUEST_ID_MAX + 1]; /* request id (X-Request-ID) */
    size_t id_len;
    int64_t start_us;
    int status;                 /* status answered, for the log */
    const char *error;          /* why a head was refused (static text) */
    http_parser parser;         /* paused after the head; body parsing continues on it */
};

/* What reading a head ended with. */
enum ks_head_result {
    KS_HEAD_OK,                 /* r is filled */
    KS_HEAD_CLOSED,             /* the client closed or stayed idle: no answer owed */
    KS_HEAD_ERROR,              /* answer *status (reason in r->error) and close */
    KS_HEAD_CUT,                /* the client left in the middle of a head: log it (400) */
};

/* Read one request head.  idle_deadline_ms bounds the wait for the first
 * byte (keep-alive), header_timeout_ms the rest of the head from there.
 * headers must hold max_headers entries. */
enum ks_head_result ks_http_read_head(struct ks_conn *c, struct ks_request *r,
                                      struct ks_header *headers, int64_t idle_deadline_ms,
                                      int *status);

/* The same on a buffer, without I/O: parse one head from buf[0..len) as
 * if those were all the bytes the client has sent.  KS_HEAD_CLOSED means
 * the head is incomplete.  On KS_HEAD_OK the parser in r is positioned
 * at the body, which starts at buf + r->head_len (body.h decodes it). */
struct ks_t_settings;
enum ks_head_result ks_http_parse_head(const struct ks_t_settings *s, const char *buf, size_t len,
                                       struct ks_request *r, struct ks_header *headers,
                                       int *status);

/* Collecting header fields from http-parser's callbacks (requests here,
 * responses in proxy.c). */
struct ks_fields {
    struct ks_header *h;
    size_t n, max;
    enum { KS_FIELDS_NONE, KS_FIELDS_NAME, KS_FIELDS_VALUE } in;
};
/* on_header_field / on_header_value; the first returns -1 when max is
 * reached. */
int ks_fields_name(struct ks_fields *f, const char *at, size_t len);
void ks_fields_value(struct ks_fields *f, const char *at, size_t len);

/* First header with this name (case-insensitive), or NULL. */
const struct ks_header *ks_http_header(const struct ks_request *r, const char *name);
/* Does a comma-separated header value list contain token (case-insensitive)? */
bool ks_http_token_in(const char *value, size_t len, const char *token);
/* Case-insensitive comparison of a header name with a lower-case name. */
/* Inline, so that the strlen of a literal is folded at compile time:
 * the proxy asks this of every header several times per request. */
static inline bool ks_http_name_is(const char *name, size_t len, const char *lower)
{
    if (len != strlen(lower))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)lower[i])
            return false;
    }
    return true;
}

/* Hop-by-hop fields (RFC 9110 7.6.1) and those we frame ourselves.  By
 * length first: every header of every message is asked. */
static inline bool ks_http_hop_by_hop(const char *n, size_t len)
{
    switch (len) {
    case 2: return ks_http_name_is(n, len, "te");
    case 7: return ks_http_name_is(n, len, "trailer") || ks_http_name_is(n, len, "upgrade");
    case 10: return ks_http_name_is(n, len, "connection") || ks_http_name_is(n, len, "keep-alive");
    case 14: return ks_http_name_is(n, len, "content-length");
    case 16: return ks_http_name_is(n, len, "proxy-connection");
    case 17: return ks_http_name_is(n, len, "transfer-encoding");
    default: return false;
    }
}

/* Fields a script's or a route's edit may not set: the framing and the
 * connection are keystoned's, and so is Expect (answered by keystoned),
 * X-Request-ID (what ties the upstream's logs to ours) and Via (what loop
 * detection counts: a script that replaced or removed it would let a
 * request loop through the gateway without the 508). */
static inline bool ks_http_edit_protected(const char *n, size_t len)
{
    return ks_http_hop_by_hop(n, len) || ks_http_name_is(n, len, "expect") ||
           ks_http_name_is(n, len, "x-request-id") || ks_http_name_is(n, len, "via");
}

/* ---- the grammar checks (pure; exposed for the unit tests) ----------- */

/* RFC 9110 token characters and field-value bytes. */
bool ks_http_is_token(const char *s, size_t len);
/* A Transfer-Encoding value that is exactly "chunked" (any case, with
 * optional whitespace around): the only coding keystoned frames, in
 * requests and responses alike. */
bool ks_http_te_is_chunked(const char *v, size_t n);
bool ks_http_is_value(const char *s, size_t len);
/* A whole request head (request line, field lines, empty line) exactly
 * as RFC 9112 writes it; leading empty lines are allowed.  Returns NULL or
 * the reason it is refused. */
const char *ks_http_check_head(const char *buf, size_t len);
/* What the first request line in buf[0..len) asks for (leading empty
 * lines skipped), judged before http-parser's verdict: UNSUPPORTED for a
 * well-formed line of another HTTP version ("token SP target SP HTTP/x.y
 * CRLF" with x.y not 1.0 or 1.1, such as the HTTP/2 preface "PRI *
 * HTTP/2.0", or the HTTP/0.9 "token SP target CRLF"): 505.  PARTIAL while
 * no LF has come and the bytes can still become such a line; OTHER for
 * everything else, which the parser and ks_http_check_head() judge. */
enum ks_line_kind { KS_LINE_PARTIAL, KS_LINE_UNSUPPORTED, KS_LINE_OTHER };
enum ks_line_kind ks_http_request_line(const char *buf, size_t len);
/* A response head (status line, field lines, empty line). */
const char *ks_http_check_response_head(const char *buf, size_t len);
/* Field lines followed by the empty line (a trailer section). */
const char *ks_http_check_fields(const char *buf, size_t len);
/* A Host value: uri-host [":" port] (empty allowed). */
bool ks_http_valid_host(const char *v, size_t len);
/* A client X-Request-ID worth keeping: 1 to KS_REQUEST_ID_MAX characters
 * of [A-Za-z0-9._~:+/=-]. */
bool ks_http_sane_request_id(const char *v, size_t len);

#endif
