/*
 * body.h: message bodies.
 *
 * The decoder turns the bytes after a head into data slices with
 * http-parser (Content-Length, chunked, or up to EOF for responses), and
 * checks every framing byte the parser skips over: the parser pauses at
 * each chunk header, chunk end and message end, and the bytes it consumed
 * outside the data since the last pause must be exactly a chunk-size line
 * (RFC 9112 7.1: hex size, extensions of token[=token|quoted-string],
 * CRLF), exactly CRLF after the data, or a trailer section (field lines
 * then CRLF).  Nothing of the framing is ever forwarded: the proxy writes
 * its own chunk headers and re-serialises trailers.
 *
 * The request body reader streams a client's body through the decoder
 * with the body limits: max_body_bytes (413), read_body_timeout and
 * min_body_rate (408), and answers "Expect: 100-continue" the first time it
 * needs bytes the client has not sent.  Body bytes are read into the
 * connection buffer behind the head, which stays intact for the whole
 * request.
 */
#ifndef KS_BODY_H
#define KS_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "worker/exchange.h"
#include "worker/http.h"

struct ks_slice {
    const char *p;
    size_t n;
};

enum ks_body_kind { KS_BODY_NONE, KS_BODY_LENGTH, KS_BODY_CHUNKED, KS_BODY_EOF };

struct ks_decoder {
    http_parser *p;             /* paused after the head, final LF consumed */
    enum ks_body_kind kind;
    bool done;                  /* the message is complete */
    const char *error;          /* why the framing was refused */
    uint64_t decoded;           /* data bytes so far */
    uint64_t length;            /* a Content-Length body's length */
    /* framing bytes consumed since the last pause; at the end of a chunked
     * message the trailer section (fields and the final CRLF) */
    char *acc;
    size_t acc_len, acc_cap;
    bool in_trailers;
    size_t max_trailers;            /* trailer fields allowed; 0 = no count (the size still holds) */
    /* set by the callbacks during one http_parser_execute() */
    int event;
    struct ks_slice data;
};

/* Start decoding a body of this kind on p.  acc (acc_cap bytes) holds the
 * framing of one chunk line or the trailer section; longer is an error. */
void ks_decoder_init(struct ks_decoder *d, http_parser *p, enum ks_body_kind kind, char *acc,
                     size_t acc_cap);
/* Decode buf[0..len): at most max data slices go to out (*nout of them).
 * Stops at the end of the message (d->done), so bytes after it (the next
 * pipelined message) are not consumed.  Returns the bytes consumed or -1
 * with d->error. */
ssize_t ks_decoder_run(struct ks_decoder *d, const char *buf, size_t len, struct ks_slice *out,
                       size_t max, size_t *nout);
/* The peer closed: completes a body delimited by EOF; -1 for any other
 * body that is not complete. */
int ks_decoder_eof(struct ks_decoder *d);
/* The bytes of a Content-Length body still to come (0 for other kinds). */
uint64_t ks_decoder_length_left(const struct ks_decoder *d);
/* n of them went past the decoder (spliced straight through); once all
 * have, the body is complete.  d->p may not be used for it any more. */
void ks_decoder_passed(struct ks_decoder *d, uint64_t n);
/* When done with a chunked message: its trailer fields re-serialised as
 * "Name: value\r\n" lines into out (framing and routing fields dropped).
 * Returns the length, 0 when there are none or they do not fit. */
size_t ks_decoder_trailers(const struct ks_decoder *d, char *out, size_t cap);
/* A chunk-size line with its CRLF (exposed for the unit tests). */
bool ks_chunk_line_valid(const char *s, size_t n);

/* ---- the client's request body ----------------------------------------- */

struct ks_body {
    struct ks_conn *c;
    struct ks_request *r;
    struct ks_decoder dec;
    uint64_t max;               /* data bytes allowed (max_body_bytes) */
    uint64_t wire;              /* body bytes taken from the client */
    int64_t start_ms;           /* first wait for body bytes */
    int64_t deadline_ms;        /* start + read_body_timeout */
    uint64_t min_rate;          /* bytes/s after the first second, 0 = off */
    size_t base;                /* body bytes live in c->buf[base..] */
    unsigned resets;            /* times the buffer space was reused */
    bool continue_sent;
    int status;                 /* 400, 408 or 413 after an error */
    const char *error;
};

/* Set up the reader for r on c (right after the head). */
void ks_body_init(struct ks_body *b, struct ks_conn *c, struct ks_request *r, char *acc,
                  size_t acc_cap);
static inline bool ks_body_pending(const struct ks_body *b)
{
    return b->dec.kind != KS_BODY_NONE && !b->dec.done;
}
/* Next decoded data: up to max slices into out, reading from the client
 * (with the body deadlines) when nothing is buffered.  The slices stay
 * valid until the next call.  Returns 0 (*n == 0 means the body is
 * complete) or -1 with b->status and b->error; -2 when a wait for the
 * client ended because the upstream answered (w->answer_fd). */
int ks_body_next(struct ks_body *b, struct ks_slice *out, size_t max, size_t *n);
/* The same for what is already buffered, never reading: *n == 0 then
 * also means "nothing buffered" unless ks_body_pending() is false. */
int ks_body_buffered(struct ks_body *b, struct ks_slice *out, size_t max, size_t *n);

/* Could the rest of the body be spliced (ks_body_splice_to())?  A
 * Content-Length body with at least min bytes still to come and nothing
 * of it buffered. */
bool ks_body_splice_ready(const struct ks_body *b, uint64_t min);
/* Move it from the client to the socket out through the empty pipe
 * pipe_fd with splice(2), never copied into the worker: each read under
 * the body deadlines (read_body_timeout, min_body_rate), each write
 * within write_ms; buf (cap bytes, free) is for the last stretch before
 * a write deadline.  The body cannot be replayed afterwards.  Returns 0;
 * -1 when the client failed (b->status and b->error say how); -2 when
 * out did, or answered while the client was waited for.  On failure the pipe may hold data (close it). */
int ks_body_splice_to(struct ks_body *b, int out, const int pipe_fd[2], int64_t write_ms, char *buf,
                      size_t cap);

/* A point to go back to while the bytes after it are still buffered (a
 * retry on a fresh upstream connection). */
struct ks_body_mark {
    struct ks_decoder dec;
    http_parser parser;
    size_t start;
    uint64_t wire;
    unsigned resets;
};
void ks_body_mark(const struct ks_body *b, struct ks_body_mark *m);
/* Back to m; false when the buffered bytes were overwritten since. */
bool ks_body_rewind(struct ks_body *b, const struct ks_body_mark *m);
/* Would ks_body_rewind(b, m) succeed? */
bool ks_body_replayable(const struct ks_body *b, const struct ks_body_mark *m);

/* After an early answer: read and drop what is left of a small body
 * (at most max_wire bytes, within max_ms) so that the connection can
 * carry the next request.  Returns 0 when the body is gone, -1 when the
 * connection must be closed. */
int ks_body_drain(struct ks_body *b, uint64_t max_wire, int64_t max_ms);
/* Could ks_body_drain() succeed without waiting for a 100-continue the
 * client will never get? (a Content-Length body of at most max_wire
 * bytes, or none) */
bool ks_body_drainable(const struct ks_body *b, uint64_t max_wire);

/* The whole decoded request body in memory owned by the worker for this
 * request, at most max bytes (else 413); sets x->body, x->body_len and
 * x->body_read, so that ks_proxy_forward() sends it with a Content-Length
 * instead of streaming.  Returns 0, or -1 with x->status set (400, 408,
 * 413) and x->error.  Calling it again returns the same body. */
int ks_body_read_all(struct ks_exchange *x, size_t max);

#endif
