/*
 * conn.h: one client connection and deadline-bound I/O.
 *
 * Deadlines are absolute CLOCK_MONOTONIC milliseconds (ks_now_ms()) and
 * no call waits past one.  Two kinds of sockets go through here:
 *
 * - Blocking sockets handed to ks_sock_blocking() (the client's and the
 *   upstreams'): a call that has to wait sleeps in the read or write
 *   itself, bounded by SO_RCVTIMEO / SO_SNDTIMEO, which conn.c keeps
 *   below the time left.  A small keep-alive request costs one read and
 *   one write on each side, with no poll.
 * - Non-blocking sockets (everything else): the read-first pattern, try
 *   the call and poll() for the time left only on EAGAIN.
 */
#ifndef KS_CONN_H
#define KS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "worker/worker.h"

/* Why an I/O call failed (besides errno). */
enum ks_io_result {
    KS_IO_OK = 0,
    KS_IO_EOF,          /* the peer closed */
    KS_IO_TIMEOUT,      /* the deadline passed */
    KS_IO_ERROR,        /* reset or other error; errno set */
    KS_IO_STOPPED,      /* an interruptible wait was interrupted by a stop */
    KS_IO_ANSWERED,     /* a wait to write to w->answer_fd (or to read the
                         * body for it) ended: it answered */
};

struct ks_conn {
    int fd;
    struct ks_worker *w;
    enum ks_listener_kind kind;
    char client_ip[46];         /* INET6_ADDRSTRLEN */
    uint16_t client_port;
    /* input: buf[start..len) is unconsumed (pipelined data, body bytes) */
    char *buf;
    size_t cap, start, len;
    uint32_t requests;          /* requests served on this connection */
    uint64_t bytes_in, bytes_out;
};

/* fd (a connected socket) is blocking and its calls go through here from
 * now on; nonblocking_now: it is still O_NONBLOCK (a socket made so for
 * its connect) and is switched.  Its kernel timeouts are taken as unset
 * and are set before the first call that could wait, unless inherited:
 * it was accepted from a listener that ks_sock_listener() prepared and
 * ks_sock_inherits() vouched for.  Returns 0, or -1 when it could not be
 * registered (out of memory): it is then made non-blocking, which the
 * read-first pattern serves just as well. */
int ks_sock_blocking(struct ks_worker *w, int fd, bool nonblocking_now, bool inherited);
/* Linux copies a listening socket's SO_RCVTIMEO, SO_SNDTIMEO and
 * TCP_NODELAY into the sockets it accepts: set on the listener once, they
 * save three setsockopt calls per connection.  ks_sock_listener() sets
 * them (0 or -1); ks_sock_inherits() checks on an accepted socket that
 * they came along (worker.c asks once per listener before relying on it). */
int ks_sock_listener(int listen_fd);
bool ks_sock_inherits(int fd);
/* Free what ks_sock_blocking() allocated (at the worker's exit). */
void ks_sock_free(struct ks_worker *w);

/* Wait until fd is ready for events or the deadline passes.  With
 * interruptible, a stop request (SIGTERM) ends the wait early. */
enum ks_io_result ks_wait_fd(struct ks_worker *w, int fd, short events, int64_t deadline_ms,
                             bool interruptible);

/* Read what is available (at least one byte) into buf. */
enum ks_io_result ks_read_some(struct ks_worker *w, int fd, void *buf, size_t len,
                               int64_t deadline_ms, size_t *got);
/* Write everything in iov (modified in place). */
enum ks_io_result ks_write_all_iov(struct ks_worker *w, int fd, struct iovec *iov, int iovcnt,
                                   int64_t deadline_ms, size_t *written);

/* How often a worker waiting on an upstream looks at its client. */
#define KS_CLIENT_CHECK_MS 1000

/* Has the peer closed its connection (or its sending half: the two look
 * the same, and nginx takes both for an abort) or reset it?  Bytes it
 * pipelined are left where they are. */
bool ks_peer_left(int fd);

/* ks_read_some() by deadline_ms from an upstream, looking at client_fd
 * every KS_CLIENT_CHECK_MS meanwhile: a worker is not held for a client
 * that has left.  When it has, KS_IO_TIMEOUT with *client_left.  (A
 * client_fd of -1: no client to look at.) */
enum ks_io_result ks_read_watching(struct ks_worker *w, int fd, int client_fd, void *buf, size_t len,
                                   int64_t deadline_ms, size_t *got, bool *client_left);

/* Client side conveniences (count bytes in the scoreboard and conn). */
enum ks_io_result ks_conn_fill(struct ks_conn *c, int64_t deadline_ms, bool interruptible);
enum ks_io_result ks_conn_writev(struct ks_conn *c, struct iovec *iov, int iovcnt,
                                 int64_t deadline_ms);
enum ks_io_result ks_conn_write(struct ks_conn *c, const void *buf, size_t len,
                                int64_t deadline_ms);
/* Send the client n bytes read from the socket in, through the pipe
 * pipe_fd ([0] the read end, [1] the write end, both O_NONBLOCK; empty)
 * with splice(2), so that they are never copied into the worker.  Each
 * read from in has read_ms to bring something, each write write_ms to
 * get it out, as ks_read_some() and ks_conn_writev() calls in a loop
 * would; buf (cap bytes, free) is for the last stretch before a write
 * deadline.  While in is silent the client is looked at every
 * KS_CLIENT_CHECK_MS (ks_peer_left(): KS_IO_EOF, the client failed).
 * The worker shows as proxying while it reads, writing while it writes.
 * Counts what was sent.  On failure *in_failed tells whether in or the
 * client failed; the pipe may then hold data (close it). */
enum ks_io_result ks_conn_splice_from(struct ks_conn *c, int in, const int pipe_fd[2], uint64_t n,
                                      int64_t read_ms, int64_t write_ms, char *buf, size_t cap,
                                      bool *in_failed);
/* The other way, one round: up to max bytes from the client (nothing of
 * it buffered in c) through the empty pipe to the socket out, the read
 * by read_deadline_ms, the write within write_ms.  *got says how many
 * were taken from the client (and counts them); on failure *in_failed
 * tells whether the client or out failed, and the pipe may hold data. */
enum ks_io_result ks_conn_splice_to(struct ks_conn *c, int out, const int pipe_fd[2], size_t max,
                                    int64_t read_deadline_ms, int64_t write_ms, char *buf, size_t cap,
                                    size_t *got, bool *in_failed);
/* Drop consumed input, moving unconsumed bytes to the front. */
void ks_conn_compact(struct ks_conn *c);

/* Close the client connection.  A close() with unread input makes the
 * kernel answer the client's next bytes with a reset, which can destroy
 * the answer just written before the client has read it (the 413 to an
 * upload; RFC 9112 section 9.6).  So when the client may still be
 * sending, the write side is shut and what arrives read and dropped until
 * the client closes, or for at most server.lingering_time. */
void ks_conn_close(struct ks_conn *c, bool may_be_sending);
/* Unconsumed input, buffered or waiting in the socket. */
bool ks_conn_input_waiting(const struct ks_conn *c);

#endif
