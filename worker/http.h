/*
 * http.h: HTTP/1.1 request heads, read with http-parser under the header
 * deadline, with the limits of the route table enforced while the bytes
 * arrive.  The request's strings point into the connection buffer and stay
 * valid until the next request is read on that connection.
 */
#ifndef KS_HTTP_H
#define KS_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/conn.h"

#define KS_HOST_MAX 256

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
    const char *target;         /* as sent */
    size_t target_len;
    const char *path;           /* target up to '?' */
    size_t path_len;
    const char *query;          /* after '?', NULL when there is none */
    size_t query_len;
    unsigned short http_major, http_minor;
    /* headers in arrival order */
    struct ks_header *headers;
    size_t nheaders;
    char host[KS_HOST_MAX];     /* Host: lower-cased, port stripped; "" if none */
    /* framing, from the parser */
    bool keep_alive;
    bool chunked;
    bool has_content_length;
    uint64_t content_length;
    bool expect_continue;
    bool upgrade;
    size_t head_len;            /* bytes of the head in the connection buffer */
    /* bookkeeping */
    char id[33];                /* request id (X-Request-ID) */
    int64_t start_us;
    int status;                 /* status answered, for the log */
    http_parser parser;         /* paused after the head; body parsing continues on it */
};

/* What reading a head ended with. */
enum ks_head_result {
    KS_HEAD_OK,                 /* r is filled */
    KS_HEAD_CLOSED,             /* the client closed or stayed idle: no answer owed */
    KS_HEAD_ERROR,              /* answer *status and close */
};

/* Read one request head.  idle_deadline_ms bounds the wait for the first
 * byte (keep-alive), header_timeout_ms the rest of the head from there.
 * headers must hold max_headers entries. */
enum ks_head_result ks_http_read_head(struct ks_conn *c, struct ks_request *r,
                                      struct ks_header *headers, int64_t idle_deadline_ms,
                                      int *status);

/* First header with this name (case-insensitive), or NULL. */
const struct ks_header *ks_http_header(const struct ks_request *r, const char *name);
/* Does a comma-separated header value list contain token (case-insensitive)? */
bool ks_http_token_in(const char *value, size_t len, const char *token);

#endif
