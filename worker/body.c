/*
 * body.c: body framing and the client's request body (see body.h).
 */
#include <config.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keystoned/util.h"
#include "worker/body.h"
#include "worker/proxy.h"
#include "worker/respond.h"

/* ---- the decoder ------------------------------------------------------- */

enum { EV_NONE, EV_CHUNK_HEADER, EV_CHUNK_END, EV_DONE };

/* Every callback that marks a framing boundary pauses the parser, so one
 * http_parser_execute() call covers at most one data slice and ends at
 * the boundary: what it consumed outside the slice is exactly the framing
 * of that step. */
static int dec_body(http_parser *p, const char *at, size_t n)
{
    struct ks_decoder *d = p->data;
    if (d->data.n > 0 && at != d->data.p + d->data.n)
        return -1;      /* cannot happen with the pauses below; refuse rather than lose data */
    if (d->data.n == 0)
        d->data.p = at;
    d->data.n += n;
    return 0;
}

static int dec_chunk_header(http_parser *p)
{
    struct ks_decoder *d = p->data;
    d->event = EV_CHUNK_HEADER;
    if (p->content_length == 0)
        d->in_trailers = true;
    http_parser_pause(p, 1);
    return 0;
}

static int dec_chunk_complete(http_parser *p)
{
    struct ks_decoder *d = p->data;
    if (d->in_trailers)
        return 0;       /* the last chunk: its end is the message's */
    d->event = EV_CHUNK_END;
    http_parser_pause(p, 1);
    return 0;
}

static int dec_message_complete(http_parser *p)
{
    struct ks_decoder *d = p->data;
    d->event = EV_DONE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings dec_settings = {
    .on_body = dec_body,
    .on_chunk_header = dec_chunk_header,
    .on_chunk_complete = dec_chunk_complete,
    .on_message_complete = dec_message_complete,
};

void ks_decoder_init(struct ks_decoder *d, http_parser *p, enum ks_body_kind kind, char *acc,
                     size_t acc_cap)
{
    memset(d, 0, sizeof(*d));
    d->p = p;
    d->kind = kind;
    d->acc = acc;
    d->acc_cap = acc_cap;
    d->done = kind == KS_BODY_NONE;
    d->length = kind == KS_BODY_LENGTH ? p->content_length : 0;
}

uint64_t ks_decoder_length_left(const struct ks_decoder *d)
{
    return d->kind == KS_BODY_LENGTH && !d->done ? d->length - d->decoded : 0;
}

void ks_decoder_passed(struct ks_decoder *d, uint64_t n)
{
    d->decoded += n;
    d->done = d->decoded >= d->length;
}

static int bws(const char *s, size_t i, size_t end)
{
    while (i < end && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return (int)i;
}

static bool tchar(char c)
{
    return ks_http_is_token(&c, 1);
}

bool ks_chunk_line_valid(const char *s, size_t n)
{
    if (n < 3 || s[n - 2] != '\r' || s[n - 1] != '\n')
        return false;
    size_t end = n - 2, i = 0;
    while (i < end && isxdigit((unsigned char)s[i]))
        i++;
    if (i == 0 || i > 16)
        return false;
    /* *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) */
    while (i < end) {
        i = (size_t)bws(s, i, end);
        if (i == end || s[i] != ';')
            return false;
        i = (size_t)bws(s, i + 1, end);
        size_t t = i;
        while (i < end && tchar(s[i]))
            i++;
        if (i == t)
            return false;
        size_t after_name = i;
        i = (size_t)bws(s, i, end);
        if (i == end || s[i] != '=') {
            i = after_name;
            continue;
        }
        i = (size_t)bws(s, i + 1, end);
        if (i < end && s[i] == '"') {
            for (i++; i < end && s[i] != '"'; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c == '\\') {
                    if (++i == end)
                        return false;
                    c = (unsigned char)s[i];
                }
                if (c != '\t' && (c < 0x20 || c == 0x7f))
                    return false;
            }
            if (i == end)
                return false;
            i++;
        } else {
            t = i;
            while (i < end && tchar(s[i]))
                i++;
            if (i == t)
                return false;
        }
    }
    return true;
}

static int acc_add(struct ks_decoder *d, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (n > d->acc_cap - d->acc_len) {
        d->error = d->in_trailers ? "trailer section too large" : "chunk size line too long";
        return -1;
    }
    memcpy(d->acc + d->acc_len, s, n);
    d->acc_len += n;
    return 0;
}

/* The framing gathered up to an event must be exactly what RFC 9112
 * says is there. */
static int check_event(struct ks_decoder *d)
{
    switch (d->event) {
    case EV_CHUNK_HEADER:
        if (!ks_chunk_line_valid(d->acc, d->acc_len)) {
            d->error = "malformed chunk size line";
            return -1;
        }
        d->acc_len = 0;
        break;
    case EV_CHUNK_END:
        if (d->acc_len != 2 || d->acc[0] != '\r' || d->acc[1] != '\n') {
            d->error = "chunk data not followed by CRLF";
            return -1;
        }
        d->acc_len = 0;
        break;
    case EV_DONE:
        if (d->kind == KS_BODY_CHUNKED) {
            const char *why = ks_http_check_fields(d->acc, d->acc_len);
            if (why != NULL) {
                d->error = why;
                return -1;
            }
            /* a field line per LF, but for the empty line that ends them */
            size_t nfields = 0;
            for (const char *q = d->acc; (q = memchr(q, '\n', (size_t)(d->acc + d->acc_len - q))) != NULL; q++)
                nfields++;
            if (d->max_trailers > 0 && nfields - 1 > d->max_trailers) {
                d->error = "too many trailer fields";
                return -1;
            }
        } else if (d->acc_len != 0) {
            d->error = "framing bytes in a body";
            return -1;
        }
        d->done = true;
        break;
    default:
        break;
    }
    return 0;
}

ssize_t ks_decoder_run(struct ks_decoder *d, const char *buf, size_t len, struct ks_slice *out,
                       size_t max, size_t *nout)
{
    size_t pos = 0;
    *nout = 0;
    while (pos < len && *nout < max && !d->done) {
        d->event = EV_NONE;
        d->data = (struct ks_slice){ NULL, 0 };
        d->p->data = d;
        size_t k = http_parser_execute(d->p, &dec_settings, buf + pos, len - pos);
        enum http_errno e = HTTP_PARSER_ERRNO(d->p);
        if (e == HPE_PAUSED) {
            http_parser_pause(d->p, 0);
        } else if (e != HPE_OK) {
            /* http-parser reports a chunk size that overflows as a bad
             * Content-Length, which would send the reader of the log to
             * look for one */
            d->error = e == HPE_INVALID_CONTENT_LENGTH && d->kind == KS_BODY_CHUNKED ? "chunk size too large"
                                                                                   : http_errno_description(e);
            return -1;
        }
        const char *s = buf + pos, *end = s + k;
        if (d->data.n > 0) {
            if (acc_add(d, s, (size_t)(d->data.p - s)) < 0)
                return -1;
            s = d->data.p + d->data.n;
            out[(*nout)++] = d->data;
            d->decoded += d->data.n;
        }
        if (acc_add(d, s, (size_t)(end - s)) < 0 || check_event(d) < 0)
            return -1;
        pos += k;
        if (k == 0 && d->event == EV_NONE)
            break;
    }
    return (ssize_t)pos;
}

int ks_decoder_eof(struct ks_decoder *d)
{
    if (d->done)
        return 0;
    if (d->kind != KS_BODY_EOF)
        return -1;
    d->event = EV_NONE;
    d->p->data = d;
    http_parser_execute(d->p, &dec_settings, NULL, 0);
    if (HTTP_PARSER_ERRNO(d->p) == HPE_PAUSED)
        http_parser_pause(d->p, 0);
    d->done = true;
    return 0;
}

/* Fields that must not come from a trailer section (RFC 9110 6.5.1):
 * framing, routing, connection control and the content's own metadata. */
static bool trailer_forbidden(const char *name, size_t n)
{
    static const char *const names[] = {
        "content-length", "transfer-encoding", "host", "connection", "keep-alive",
        "proxy-connection", "te", "trailer", "upgrade", "content-encoding", "content-type",
        "content-range", "authorization", "proxy-authorization", "set-cookie", "cookie",
        "expect", "range", "cache-control", "expires", "date", "location", "retry-after",
        "vary", "age", "www-authenticate", "proxy-authenticate", "x-request-id",
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(names); i++)
        if (ks_http_name_is(name, n, names[i]))
            return true;
    return false;
}

size_t ks_decoder_trailers(const struct ks_decoder *d, char *out, size_t cap)
{
    if (d->kind != KS_BODY_CHUNKED || !d->done)
        return 0;
    /* acc holds a section ks_http_check_fields() accepted */
    const char *p = d->acc, *end = d->acc + d->acc_len - 2;
    size_t o = 0;
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t nl = (size_t)(colon - p), vl = (size_t)(ve - v);
        if (!trailer_forbidden(p, nl)) {
            if (o + nl + vl + 4 > cap)
                return 0;
            memcpy(out + o, p, nl);
            o += nl;
            memcpy(out + o, ": ", 2);
            o += 2;
            memcpy(out + o, v, vl);
            o += vl;
            memcpy(out + o, "\r\n", 2);
            o += 2;
        }
        p = eol + 2;
    }
    return o;
}

/* ---- the client's body ---------------------------------------------- */

void ks_body_init(struct ks_body *b, struct ks_conn *c, struct ks_request *r, char *acc,
                  size_t acc_cap)
{
    const struct ks_t_settings *s = &c->w->table->settings;
    memset(b, 0, sizeof(*b));
    b->c = c;
    b->r = r;
    enum ks_body_kind kind = r->chunked ? KS_BODY_CHUNKED
                             : r->content_length > 0 ? KS_BODY_LENGTH : KS_BODY_NONE;
    ks_decoder_init(&b->dec, &r->parser, kind, acc, acc_cap);
    b->dec.max_trailers = (size_t)s->max_headers;
    b->max = s->max_body_bytes;
    b->min_rate = s->min_body_rate;
    b->base = r->head_len;
}

static int body_fail(struct ks_body *b, int status, const char *why)
{
    b->status = status;
    b->error = why;
    return -1;
}

static int64_t body_deadline(struct ks_body *b)
{
    int64_t now = ks_now_ms();
    if (b->start_ms == 0) {
        b->start_ms = now;
        b->deadline_ms = now + b->c->w->table->settings.read_body_timeout_ms;
    }
    int64_t dl = b->deadline_ms;
    if (b->min_rate > 0) {
        /* min_body_rate on average after the first second: the client has
         * until the time by which `wire` bytes were due to send more */
        int64_t due = b->start_ms + 1000 + (int64_t)(b->wire * 1000 / b->min_rate);
        if (due < dl)
            dl = due;
    }
    return dl;
}

/* Before the first wait for body bytes: the 100 (Continue) a client that
 * sent Expect: 100-continue waits for. */
static int send_continue(struct ks_body *b)
{
    if (!b->r->expect_continue || b->continue_sent || b->wire > 0)
        return 0;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    b->continue_sent = true;
    int64_t dl = ks_now_ms() + b->c->w->table->settings.send_timeout_ms;
    if (ks_conn_write(b->c, cont, sizeof(cont) - 1, dl) != KS_IO_OK)
        return body_fail(b, 400, "client gone");
    return 0;
}

/* A read of body bytes by deadline dl (body_deadline()) failed.  -2:
 * not the client's failure, the upstream answered meanwhile. */
static int read_failed(struct ks_body *b, enum ks_io_result io, int64_t dl)
{
    if (io == KS_IO_ANSWERED)
        return -2;
    if (io == KS_IO_TIMEOUT)
        return body_fail(b, 408, dl < b->deadline_ms ? "request body slower than min_body_rate"
                                                     : "request body not received in time");
    return body_fail(b, 400, "client closed the connection before the end of the body");
}

static int body_next(struct ks_body *b, struct ks_slice *out, size_t max, size_t *n, bool may_read)
{
    struct ks_conn *c = b->c;
    *n = 0;
    if (b->status != 0)
        return -1;
    for (;;) {
        if (b->dec.done)
            return 0;
        if (c->start < c->len) {
            size_t got;
            ssize_t k = ks_decoder_run(&b->dec, c->buf + c->start, c->len - c->start, out, max, &got);
            if (k < 0)
                return body_fail(b, 400, b->dec.error);
            c->start += (size_t)k;
            b->wire += (size_t)k;
            if (b->dec.decoded > b->max)
                return body_fail(b, 413, "request body too large");
            if (got > 0 || b->dec.done) {
                *n = got;
                return 0;
            }
            continue;
        }
        if (!may_read)
            return 0;
        /* everything buffered is decoded: the space behind the head is
         * reused only when it runs out, so that a small body stays
         * replayable (ks_body_rewind) */
        if (c->cap - c->len < 4096) {
            c->start = c->len = b->base;
            b->resets++;
        }
        if (send_continue(b) < 0)
            return -1;
        int64_t dl = body_deadline(b);
        enum ks_io_result io = ks_conn_fill(c, dl, false);
        if (io != KS_IO_OK)
            return read_failed(b, io, dl);
    }
}

int ks_body_next(struct ks_body *b, struct ks_slice *out, size_t max, size_t *n)
{
    return body_next(b, out, max, n, true);
}

int ks_body_buffered(struct ks_body *b, struct ks_slice *out, size_t max, size_t *n)
{
    return body_next(b, out, max, n, false);
}

bool ks_body_splice_ready(const struct ks_body *b, uint64_t min)
{
    uint64_t left = ks_decoder_length_left(&b->dec);
    return b->status == 0 && b->c->start == b->c->len && left >= min &&
           b->dec.decoded + left <= b->max;
}

int ks_body_splice_to(struct ks_body *b, int out, const int pipe_fd[2], int64_t write_ms, char *buf,
                      size_t cap)
{
    if (send_continue(b) < 0)
        return -1;
    /* what is spliced is never in the connection buffer: no replay past
     * this point (ks_body_replayable) */
    b->resets++;
    uint64_t left = ks_decoder_length_left(&b->dec);
    while (left > 0) {
        int64_t dl = body_deadline(b);
        size_t got;
        bool client_failed;
        size_t max = left < SIZE_MAX ? (size_t)left : SIZE_MAX;
        enum ks_io_result io = ks_conn_splice_to(b->c, out, pipe_fd, max, dl, write_ms, buf, cap, &got,
                                                 &client_failed);
        b->wire += got;
        ks_decoder_passed(&b->dec, got);
        left -= got;
        if (io != KS_IO_OK)
            return client_failed && io != KS_IO_ANSWERED ? read_failed(b, io, dl) : -2;
    }
    return 0;
}

void ks_body_mark(const struct ks_body *b, struct ks_body_mark *m)
{
    m->dec = b->dec;
    m->parser = *b->dec.p;
    m->start = b->c->start;
    m->wire = b->wire;
    m->resets = b->resets;
}

bool ks_body_replayable(const struct ks_body *b, const struct ks_body_mark *m)
{
    return b->resets == m->resets && b->status == 0;
}

bool ks_body_rewind(struct ks_body *b, const struct ks_body_mark *m)
{
    if (!ks_body_replayable(b, m))
        return false;
    b->dec = m->dec;
    *b->dec.p = m->parser;
    b->c->start = m->start;
    b->wire = m->wire;
    return true;
}

bool ks_body_drainable(const struct ks_body *b, uint64_t max_wire)
{
    if (!ks_body_pending(b))
        return b->status == 0;
    if (b->status != 0 || b->dec.kind != KS_BODY_LENGTH)
        return false;
    if (b->r->expect_continue && !b->continue_sent)
        return false;   /* the client may be waiting for a 100 it will not get */
    return b->r->content_length - b->dec.decoded <= max_wire;
}

int ks_body_drain(struct ks_body *b, uint64_t max_wire, int64_t max_ms)
{
    if (!ks_body_drainable(b, max_wire))
        return -1;
    body_deadline(b);
    int64_t limit = ks_now_ms() + max_ms;
    if (limit < b->deadline_ms)
        b->deadline_ms = limit;
    struct ks_slice s[8];
    size_t n;
    do {
        if (ks_body_next(b, s, KS_ARRAY_LEN(s), &n) < 0)
            return -1;
    } while (n > 0);
    return 0;
}

int ks_body_read_all(struct ks_exchange *x, size_t max)
{
    if (x->body_read)
        return 0;
    struct ks_body *b = x->in;
    if (b == NULL || b->dec.kind == KS_BODY_NONE) {
        x->body = "";
        x->body_len = 0;
        x->body_read = true;
        return 0;
    }
    if (b->dec.decoded > 0 || b->status != 0) {
        x->status = b->status ? b->status : 500;
        x->error = b->error ? b->error : "the request body was already streamed";
        return -1;
    }
    if (b->dec.kind == KS_BODY_LENGTH && b->r->content_length > max) {
        x->status = 413;
        x->error = "request body too large";
        return -1;
    }
    size_t want = b->dec.kind == KS_BODY_LENGTH ? (size_t)b->r->content_length : 65536;
    char *buf = ks_proxy_body_buffer(x->w, want < max ? want : max);
    if (buf == NULL) {
        x->status = 500;
        x->error = "out of memory for the request body";
        return -1;
    }
    size_t len = 0;
    struct ks_slice s[16];
    size_t n;
    for (;;) {
        if (ks_body_next(b, s, KS_ARRAY_LEN(s), &n) < 0) {
            x->status = b->status;
            x->error = b->error;
            return -1;
        }
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            if (s[i].n > max - len) {
                x->status = 413;
                x->error = "request body too large";
                return -1;
            }
            buf = ks_proxy_body_buffer(x->w, len + s[i].n);
            if (buf == NULL) {
                x->status = 500;
                x->error = "out of memory for the request body";
                return -1;
            }
            memcpy(buf + len, s[i].p, s[i].n);
            len += s[i].n;
        }
    }
    x->body = buf;
    x->body_len = len;
    x->body_read = true;
    return 0;
}
