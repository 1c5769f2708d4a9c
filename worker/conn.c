/*
 * conn.c: deadline-bound I/O (see conn.h).
 */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "worker/conn.h"

enum ks_io_result ks_wait_fd(struct ks_worker *w, int fd, short events, int64_t deadline_ms,
                             bool interruptible)
{
    for (;;) {
        if (interruptible && w->stop)
            return KS_IO_STOPPED;
        int64_t left = deadline_ms - ks_now_ms();
        if (left <= 0)
            return KS_IO_TIMEOUT;
        struct pollfd p = { .fd = fd, .events = events };
        int rc = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (rc > 0)
            return KS_IO_OK;    /* ready, or an error the next call will report */
        if (rc < 0 && errno != EINTR)
            return KS_IO_ERROR;
        /* EINTR (a signal: re-check stop) or timeout (re-check the clock) */
    }
}

static enum ks_io_result read_loop(struct ks_worker *w, int fd, void *buf, size_t len,
                                   int64_t deadline_ms, bool interruptible, size_t *got)
{
    *got = 0;
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n > 0) {
            *got = (size_t)n;
            return KS_IO_OK;
        }
        if (n == 0)
            return KS_IO_EOF;
        if (errno == EINTR)
            continue;           /* ks_wait_fd re-checks stop */
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return KS_IO_ERROR;
        enum ks_io_result r = ks_wait_fd(w, fd, POLLIN, deadline_ms, interruptible);
        if (r != KS_IO_OK)
            return r;
    }
}

enum ks_io_result ks_read_some(struct ks_worker *w, int fd, void *buf, size_t len,
                               int64_t deadline_ms, size_t *got)
{
    return read_loop(w, fd, buf, len, deadline_ms, false, got);
}

enum ks_io_result ks_write_all_iov(struct ks_worker *w, int fd, struct iovec *iov, int iovcnt,
                                   int64_t deadline_ms, size_t *written)
{
    *written = 0;
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        ssize_t n = writev(fd, iov, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return KS_IO_ERROR;
            enum ks_io_result r = ks_wait_fd(w, fd, POLLOUT, deadline_ms, false);
            if (r != KS_IO_OK)
                return r;
            continue;
        }
        *written += (size_t)n;
        size_t left = (size_t)n;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return KS_IO_OK;
}

enum ks_io_result ks_conn_fill(struct ks_conn *c, int64_t deadline_ms, bool interruptible)
{
    if (c->len == c->cap)
        return KS_IO_ERROR;     /* the caller's limit checks come first */
    size_t got;
    enum ks_io_result r = read_loop(c->w, c->fd, c->buf + c->len, c->cap - c->len, deadline_ms,
                                    interruptible, &got);
    if (r == KS_IO_OK) {
        c->len += got;
        c->bytes_in += got;
        atomic_fetch_add_explicit(&c->w->score->bytes_in, got, memory_order_relaxed);
    }
    return r;
}

enum ks_io_result ks_conn_writev(struct ks_conn *c, struct iovec *iov, int iovcnt,
                                 int64_t deadline_ms)
{
    size_t written;
    enum ks_io_result r = ks_write_all_iov(c->w, c->fd, iov, iovcnt, deadline_ms, &written);
    c->bytes_out += written;
    atomic_fetch_add_explicit(&c->w->score->bytes_out, written, memory_order_relaxed);
    return r;
}

enum ks_io_result ks_conn_write(struct ks_conn *c, const void *buf, size_t len, int64_t deadline_ms)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return ks_conn_writev(c, &iov, 1, deadline_ms);
}

void ks_conn_compact(struct ks_conn *c)
{
    if (c->start == 0)
        return;
    memmove(c->buf, c->buf + c->start, c->len - c->start);
    c->len -= c->start;
    c->start = 0;
}
