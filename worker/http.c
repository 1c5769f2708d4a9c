/*
 * http.c: http-parser glue for request heads (see http.h).
 */
#include <config.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keystoned/util.h"
#include "worker/http.h"

/* Parsing state of one head: the limits and where the parser is. */
struct head_ctx {
    struct ks_request *r;
    size_t max_headers;
    size_t max_request_line;
    enum { IN_LINE, IN_FIELD, IN_VALUE } at;
    int status;                 /* set by a callback that stops the parser */
    bool head_done;
};

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct head_ctx *h = p->data;
    struct ks_request *r = h->r;
    /* the buffer is contiguous while a head is parsed, so pieces join */
    if (r->target == NULL)
        r->target = at;
    r->target_len = (size_t)(at + len - r->target);
    if (r->target_len > h->max_request_line) {
        h->status = 414;
        return -1;
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct head_ctx *h = p->data;
    struct ks_request *r = h->r;
    if (h->at != IN_FIELD) {
        if (r->nheaders == h->max_headers) {
            h->status = 431;
            return -1;
        }
        r->headers[r->nheaders++] = (struct ks_header){ .name = at };
        h->at = IN_FIELD;
    }
    struct ks_header *hd = &r->headers[r->nheaders - 1];
    hd->name_len = (size_t)(at + len - hd->name);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct head_ctx *h = p->data;
    struct ks_header *hd = &h->r->headers[h->r->nheaders - 1];
    if (h->at != IN_VALUE) {
        hd->value = at;
        h->at = IN_VALUE;
    }
    hd->value_len = (size_t)(at + len - hd->value);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct head_ctx *h = p->data;
    h->head_done = true;
    /* stop here: the body is read (or not) by whoever handles the request */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings head_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

bool ks_http_token_in(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, token, tl) == 0)
            return true;
    }
    return false;
}

const struct ks_header *ks_http_header(const struct ks_request *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++)
        if (r->headers[i].name_len == n && strncasecmp(r->headers[i].name, name, n) == 0)
            return &r->headers[i];
    return NULL;
}

/* Host: lower-case, without the port; an IPv6 literal keeps its brackets. */
static void normalise_host(struct ks_request *r)
{
    const struct ks_header *h = ks_http_header(r, "host");
    r->host[0] = '\0';
    if (h == NULL)
        return;
    const char *v = h->value;
    size_t len = h->value_len;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    size_t end = len;
    if (len > 0 && v[0] == '[') {
        const char *close = memchr(v, ']', len);
        end = close ? (size_t)(close - v) + 1 : len;
    } else {
        const char *colon = memchr(v, ':', len);
        if (colon != NULL)
            end = (size_t)(colon - v);
    }
    if (end >= sizeof(r->host))
        end = sizeof(r->host) - 1;
    for (size_t i = 0; i < end; i++)
        r->host[i] = (char)tolower((unsigned char)v[i]);
    r->host[end] = '\0';
}

static void finish_head(struct ks_request *r)
{
    http_parser *p = &r->parser;
    r->method = http_method_str((enum http_method)p->method);
    r->method_len = strlen(r->method);
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p) != 0;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    r->has_content_length = (p->flags & F_CONTENTLENGTH) != 0;
    r->content_length = r->has_content_length ? p->content_length : 0;
    r->upgrade = p->upgrade != 0;
    r->path = r->target;
    r->path_len = r->target_len;
    const char *q = memchr(r->target, '?', r->target_len);
    if (q != NULL) {
        r->path_len = (size_t)(q - r->target);
        r->query = q + 1;
        r->query_len = r->target_len - r->path_len - 1;
    }
    const struct ks_header *e = ks_http_header(r, "expect");
    r->expect_continue = e != NULL && e->value_len == 12 && strncasecmp(e->value, "100-continue", 12) == 0;
    normalise_host(r);
}

enum ks_head_result ks_http_read_head(struct ks_conn *c, struct ks_request *r,
                                      struct ks_header *headers, int64_t idle_deadline_ms,
                                      int *status)
{
    const struct ks_t_settings *s = &c->w->table->settings;
    ks_conn_compact(c);
    memset(r, 0, offsetof(struct ks_request, parser));
    r->headers = headers;
    struct head_ctx h = {
        .r = r,
        .max_headers = (size_t)s->max_headers,
        .max_request_line = s->max_request_line,
        .at = IN_LINE,
    };
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = &h;
    *status = 0;

    /* the wait for the first byte is the keep-alive idle time, and a stop
     * request may end it; the rest of the head has read_header_timeout */
    if (c->len == 0) {
        enum ks_io_result io = ks_conn_fill(c, idle_deadline_ms, true);
        if (io != KS_IO_OK)
            return KS_HEAD_CLOSED;
    }
    r->start_us = ks_now_us();
    int64_t deadline = ks_now_ms() + s->read_header_timeout_ms;
    size_t parsed = 0;
    for (;;) {
        size_t n = http_parser_execute(&r->parser, &head_settings, c->buf + parsed, c->len - parsed);
        parsed += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
        /* the limits: a request line longer than max_request_line, or
         * header lines longer than max_header_bytes in all */
        const char *eol = memchr(c->buf, '\n', parsed);
        if (eol == NULL && parsed > s->max_request_line) {
            *status = 414;
            return KS_HEAD_ERROR;
        }
        if (eol != NULL && parsed - (size_t)(eol + 1 - c->buf) > s->max_header_bytes + 2) {
            *status = 431;
            return KS_HEAD_ERROR;
        }
        if (h.head_done) {
            /* pausing in on_headers_complete stops after the head's final LF */
            http_parser_pause(&r->parser, 0);
            r->head_len = parsed;
            c->start = parsed;
            finish_head(r);
            r->parser.data = NULL;
            return KS_HEAD_OK;
        }
        if (e != HPE_OK) {
            *status = h.status ? h.status : 400;
            return KS_HEAD_ERROR;
        }
        if (c->len == c->cap) {
            *status = 431;
            return KS_HEAD_ERROR;
        }
        enum ks_io_result io = ks_conn_fill(c, deadline, false);
        if (io == KS_IO_TIMEOUT) {
            *status = 408;
            return KS_HEAD_ERROR;
        }
        if (io != KS_IO_OK)
            return KS_HEAD_CLOSED;
    }
}
