/*
 * proxy.h: forwarding one request to an upstream and relaying the answer
 * (ks_proxy_forward() is declared in exchange.h), and the per-process
 * state it needs.
 *
 * A worker serves one exchange at a time, so every buffer is per process,
 * sized from the limits when a table arrives, and reused by every request:
 * nothing is allocated per request (ks_body_read_all() grows body_buf
 * only when a larger body than ever before arrives).
 */
#ifndef KS_PROXY_H
#define KS_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/exchange.h"
#include "worker/pool.h"
#include "worker/worker.h"

struct ks_proxy {
    struct ks_pool pool;
    char *up_buf;               /* from the upstream: response head, then body */
    size_t up_cap;
    char *out_buf;              /* the request head sent upstream */
    size_t out_cap;
    char *head_buf;             /* the response head sent to the client */
    size_t head_cap;
    struct ks_header *resp_headers;
    size_t max_resp_headers;
    char *acc;                  /* framing of the request body (body.h) */
    char *racc;                 /* framing of the response body */
    size_t acc_cap;
    char *trailers;             /* re-serialised trailers */
    size_t trailers_cap;
    char *norm;                 /* the normalised request path */
    size_t norm_cap;
    char *body_buf;             /* ks_body_read_all() */
    size_t body_cap;
    struct ks_header_edit resp_edits[64];   /* on_response's edits */
    /* what the upstream sent while the request was written, taken off
     * its socket (proxy.c answer_seen) and parsed first with the answer:
     * early_done bytes of whole interim heads, then the rest */
    char early[4096];
    size_t early_len, early_done;
    int pipe_fd[2];             /* for splice(2), when have_pipe */
    bool have_pipe;
};

/* Set up / resize for the current table (after every table change: the
 * limits size the buffers, the upstreams the pool).  0 or -1. */
int ks_proxy_sync(struct ks_worker *w);
void ks_proxy_free(struct ks_worker *w);
/* Close pooled connections that idled too long (the worker's idle tick). */
void ks_proxy_idle(struct ks_worker *w);
/* Close every idle pooled upstream connection; returns how many. */
uint32_t ks_proxy_shed(struct ks_worker *w);
/* body_buf with room for at least need bytes, or NULL. */
char *ks_proxy_body_buffer(struct ks_worker *w, size_t need);
/* After a request: a body buffer grown past KS_BODY_KEEP is given back,
 * so one large body read whole does not stay in the worker. */
void ks_proxy_request_done(struct ks_worker *w);
#define KS_BODY_KEEP (1024 * 1024)

/* Answer x with the JSON error envelope (and extra header lines or NULL),
 * closing the connection when a request body is left that cannot be
 * drained.  Records status and reason in x.  Returns 0 when the
 * connection can go on, -1 when it must be closed. */
int ks_proxy_fail(struct ks_exchange *x, int status, const char *why, const char *extra_headers);

/* Relay bytes both ways between the client (fd a) and the upstream (fd
 * b) until both sides closed, one failed, or nothing moved for idle_ms.
 * buf_ab and buf_ba (cap bytes each) are the two directions' buffers;
 * *ab and *ba count the bytes relayed (tunnel.c). */
void ks_tunnel(struct ks_worker *w, int a, int b, char *buf_ab, char *buf_ba, size_t cap,
               int64_t idle_ms, uint64_t *ab, uint64_t *ba);

/* Bytes of a left-over body read to keep a client connection (413 etc.). */
#define KS_DRAIN_MAX (64 * 1024)

#endif
