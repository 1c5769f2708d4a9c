/*
 * conn.h: one client connection and deadline-bound I/O.
 *
 * Every socket is non-blocking.  The read-first pattern: try read/write at
 * once and only on EAGAIN poll() for the time left until an absolute
 * deadline, so the common case costs one system call and no wait is
 * unbounded.  Deadlines are CLOCK_MONOTONIC milliseconds (ks_now_ms()).
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

/* Client side conveniences (count bytes in the scoreboard and conn). */
enum ks_io_result ks_conn_fill(struct ks_conn *c, int64_t deadline_ms, bool interruptible);
enum ks_io_result ks_conn_writev(struct ks_conn *c, struct iovec *iov, int iovcnt,
                                 int64_t deadline_ms);
enum ks_io_result ks_conn_write(struct ks_conn *c, const void *buf, size_t len,
                                int64_t deadline_ms);
/* Drop consumed input, moving unconsumed bytes to the front. */
void ks_conn_compact(struct ks_conn *c);

#endif
