/*
 * conn.c: deadline-bound I/O (see conn.h).
 *
 * Why blocking sockets: on a non-blocking socket every wait costs three
 * system calls (read -> EAGAIN, poll, read again), and a proxied request
 * waits twice (for the upstream's answer, then for the client's next
 * request), so the read-first pattern spent 8 calls on what blocking
 * calls do in 4.  The price is keeping every call bounded by the
 * deadline, with the socket's own timeouts:
 *
 * - A call may block only when the timeout set on the socket (remembered
 *   per descriptor in w->sock_timeo, so the steady state costs no
 *   setsockopt) is at most target(left).  SO_RCVTIMEO/SO_SNDTIMEO run on
 *   the kernel's timer wheel, which may fire late (one jiffy, up to 1/8
 *   of long timeouts), so target() keeps that much of the time left in
 *   reserve.  When the remembered timeout is above the target (or
 *   unknown, 0: the kernel's default is to wait forever) or below half of
 *   it, it is set to 3/4 of the target; the band between keeps it from
 *   being set again at every call as the time left shrinks.
 * - The timeouts are also capped at SLICE_MS.  A timeout that fires is
 *   EAGAIN, and the wait goes on in poll().
 * - In the last stretch before a deadline (target below MIN_BLOCK_MS)
 *   the call is made non-blocking (MSG_DONTWAIT) and poll(), whose timer
 *   is precise, waits for the rest: a deadline is never overshot.
 * - EAGAIN, also from a call that could block, always falls back to
 *   poll() for the time left (in slices when a stop may end the wait, so
 *   that a stop flagged just before the call is seen).  So a stale entry
 *   (a descriptor number reused by a non-blocking socket that was never
 *   registered) only means the read-first pattern for that socket, never
 *   a spin.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "worker/conn.h"

#define SLICE_MS 1000           /* the longest a blocking call sleeps */
#define MIN_BLOCK_MS 10         /* below this, MSG_DONTWAIT + poll() */

struct ks_sock_timeo {
    bool blocking;              /* registered by ks_sock_blocking() */
    int32_t rcv_ms, snd_ms;     /* what is set on the socket, 0 = unknown */
};

#define LISTENER_TIMEO_MS (SLICE_MS * 3 / 4)  /* what may_block() would set */

static struct timeval timeval_of(int64_t ms)
{
    return (struct timeval){ .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
}

int ks_sock_listener(int listen_fd)
{
    int one = 1;
    struct timeval tv = timeval_of(LISTENER_TIMEO_MS);
    if (setsockopt(listen_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        setsockopt(listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(listen_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        return -1;
    return 0;
}

/* The kernel keeps timeouts in jiffies, rounded up: a value is "ours"
 * when it is LISTENER_TIMEO_MS or a few ms above (target() leaves room
 * for that rounding). */
static bool timeo_is(int fd, int opt)
{
    struct timeval tv;
    socklen_t len = sizeof(tv);
    if (getsockopt(fd, SOL_SOCKET, opt, &tv, &len) < 0)
        return false;
    int64_t ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    return ms >= LISTENER_TIMEO_MS && ms <= LISTENER_TIMEO_MS + 10;
}

bool ks_sock_inherits(int fd)
{
    int nodelay = 0;
    socklen_t len = sizeof(nodelay);
    return getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) == 0 && nodelay &&
           timeo_is(fd, SO_RCVTIMEO) && timeo_is(fd, SO_SNDTIMEO);
}

int ks_sock_blocking(struct ks_worker *w, int fd, bool nonblocking_now, bool inherited)
{
    if (fd < 0)
        return -1;
    if ((size_t)fd >= w->nsock_timeo) {
        size_t n = w->nsock_timeo ? w->nsock_timeo : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct ks_sock_timeo *t = realloc(w->sock_timeo, n * sizeof(*t));
        if (t == NULL) {
            if (!nonblocking_now)
                fcntl(fd, F_SETFL, O_NONBLOCK);
            return -1;
        }
        memset(t + w->nsock_timeo, 0, (n - w->nsock_timeo) * sizeof(*t));
        w->sock_timeo = t;
        w->nsock_timeo = n;
    }
    if (nonblocking_now && fcntl(fd, F_SETFL, 0) < 0) {
        w->sock_timeo[fd].blocking = false;
        return -1;
    }
    /* inherited timeouts are LISTENER_TIMEO_MS rounded up to a jiffy:
     * remembered a jiffy (4 ms at HZ=250) above, never below */
    int32_t t = inherited ? LISTENER_TIMEO_MS + 4 : 0;
    w->sock_timeo[fd] = (struct ks_sock_timeo){ .blocking = true, .rcv_ms = t, .snd_ms = t };
    return 0;
}

void ks_sock_free(struct ks_worker *w)
{
    free(w->sock_timeo);
    w->sock_timeo = NULL;
    w->nsock_timeo = 0;
}

/* The longest timeout a call may block with, left ms before its deadline. */
static int64_t target(int64_t left)
{
    int64_t t = left - left / 8 - 2 * 4;    /* 4: a jiffy at HZ=250, the coarsest usual */
    return t < SLICE_MS ? t : SLICE_MS;
}

/* May a call on fd block now (opt: SO_RCVTIMEO or SO_SNDTIMEO)?  Sets
 * the socket's timeout first when needed. */
static bool may_block(struct ks_worker *w, int fd, int opt, int64_t deadline_ms)
{
    if (fd < 0 || (size_t)fd >= w->nsock_timeo || !w->sock_timeo[fd].blocking)
        return false;
    int64_t t = target(deadline_ms - ks_now_ms());
    if (t < MIN_BLOCK_MS)
        return false;
    int32_t *cur = opt == SO_RCVTIMEO ? &w->sock_timeo[fd].rcv_ms : &w->sock_timeo[fd].snd_ms;
    if (*cur > 0 && *cur <= t && *cur >= t / 2)
        return true;
    int64_t set = t * 3 / 4;
    struct timeval tv = timeval_of(set);
    if (setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv)) < 0) {
        *cur = 0;
        return false;
    }
    *cur = (int32_t)set;
    return true;
}

/* Is fd to be watched for an answer from w->answer_fd while it is waited
 * for?  A write to the upstream itself, and a read of the client's body
 * for it: either way the upstream may answer before it has the rest. */
static bool watching_answer(const struct ks_worker *w, int fd, short events)
{
    return w->answer_fd >= 0 && (fd == w->answer_fd ? (events & POLLOUT) != 0 : (events & POLLIN) != 0);
}

enum ks_io_result ks_wait_fd(struct ks_worker *w, int fd, short events, int64_t deadline_ms,
                             bool interruptible)
{
    for (;;) {
        if (interruptible && w->stop)
            return KS_IO_STOPPED;
        int64_t left = deadline_ms - ks_now_ms();
        if (left <= 0)
            return KS_IO_TIMEOUT;
        bool watch = watching_answer(w, fd, events);
        bool same = fd == w->answer_fd;
        struct pollfd p[2] = {
            { .fd = fd, .events = (short)(events | (watch && same ? POLLIN : 0)) },
            { .fd = w->answer_fd, .events = POLLIN },
        };
        int64_t cap = interruptible ? SLICE_MS : 1000000;
        int rc = poll(p, watch && !same ? 2 : 1, (int)(left > cap ? cap : left));
        /* what the upstream's socket has; while the client is waited
         * for, only when the client has nothing (its bytes come first) */
        short up = 0;
        if (watch)
            up = same ? p[0].revents : p[0].revents == 0 ? p[1].revents : 0;
        if (rc > 0 && up != 0 && (up & (POLLIN | POLLOUT | POLLERR | POLLHUP)) == POLLIN) {
            enum ks_answer seen = w->answer_seen(w);
            if (seen == KS_ANSWER_FINAL)
                return KS_IO_ANSWERED;
            if (seen == KS_ANSWER_LEFT)
                w->answer_fd = -1;  /* it is read with the answer */
            continue;
        }
        if (rc > 0 && up != 0 && !same) {
            w->answer_fd = -1;  /* an error there: the next write to it reports it */
            continue;
        }
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
        /* once a stop is asked for, only what is already there is read */
        /* a blocking recv() would not see the upstream answer meanwhile */
        bool block = !(interruptible && w->stop) && !watching_answer(w, fd, POLLIN) &&
                     may_block(w, fd, SO_RCVTIMEO, deadline_ms);
        ssize_t n = recv(fd, buf, len, block ? 0 : MSG_DONTWAIT);
        if (n > 0) {
            *got = (size_t)n;
            return KS_IO_OK;
        }
        if (n == 0)
            return KS_IO_EOF;
        if (errno == EINTR)
            continue;           /* a signal: look at stop again */
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
    /* The first try never blocks: what a request writes usually fits in
     * the socket buffer, and then it costs no clock read for the
     * deadline.  Only what did not fit is written with a timeout. */
    bool first = true;
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        bool block = !first && may_block(w, fd, SO_SNDTIMEO, deadline_ms);
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | (block ? 0 : MSG_DONTWAIT));
        bool was_first = first;
        first = false;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return KS_IO_ERROR;
            if (was_first)
                continue;       /* full: now with a timeout */
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

/* ---- splice(2): a body from socket to socket through a pipe ------------------ */

/* Is fd one of ours in blocking mode (ks_sock_blocking())? */
static bool registered_blocking(const struct ks_worker *w, int fd)
{
    return fd >= 0 && (size_t)fd < w->nsock_timeo && w->sock_timeo[fd].blocking;
}

/* Fill the empty pipe from the socket in: at least one byte, at most max.
 * Reading a TCP socket into a pipe blocks as recv() does (the socket's
 * O_NONBLOCK and SO_RCVTIMEO decide, the pipe's O_NONBLOCK only spares us
 * waiting for room in it), so this is read_loop() with splice. */
static enum ks_io_result splice_in(struct ks_worker *w, int in, int pipe_w, size_t max,
                                   int64_t deadline_ms, size_t *got)
{
    for (;;) {
        /* too close to the deadline for the socket's timeout, or the
         * upstream's answer to be watched for meanwhile: poll() first; a
         * readable socket is then spliced without sleeping */
        if (registered_blocking(w, in) &&
            (watching_answer(w, in, POLLIN) || !may_block(w, in, SO_RCVTIMEO, deadline_ms))) {
            enum ks_io_result r = ks_wait_fd(w, in, POLLIN, deadline_ms, false);
            if (r != KS_IO_OK)
                return r;
        }
        ssize_t n = splice(in, NULL, pipe_w, NULL, max, SPLICE_F_MOVE);
        if (n > 0) {
            *got = (size_t)n;
            return KS_IO_OK;
        }
        if (n == 0)
            return KS_IO_EOF;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return KS_IO_ERROR;
        enum ks_io_result r = ks_wait_fd(w, in, POLLIN, deadline_ms, false);
        if (r != KS_IO_OK)
            return r;
    }
}

/* Empty the pipe (m bytes in it) into the socket out. */
static enum ks_io_result splice_out(struct ks_worker *w, int out, int pipe_r, size_t m,
                                    int64_t deadline_ms, char *buf, size_t cap, size_t *sent)
{
    *sent = 0;
    while (m > 0) {
        if (registered_blocking(w, out) && !may_block(w, out, SO_SNDTIMEO, deadline_ms)) {
            /* A blocking splice could sleep for the socket's whole timeout,
             * past the deadline: what is left goes through buf and
             * ks_write_all_iov(), whose last stretch does not block. */
            ssize_t k = read(pipe_r, buf, m < cap ? m : cap);
            if (k <= 0)
                return KS_IO_ERROR;
            struct iovec iov = { .iov_base = buf, .iov_len = (size_t)k };
            size_t written;
            enum ks_io_result r = ks_write_all_iov(w, out, &iov, 1, deadline_ms, &written);
            *sent += written;
            if (r != KS_IO_OK)
                return r;
            m -= (size_t)k;
            continue;
        }
        ssize_t n = splice(pipe_r, NULL, out, NULL, m, SPLICE_F_MOVE);
        if (n > 0) {
            *sent += (size_t)n;
            m -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return KS_IO_ERROR;
        /* SO_SNDTIMEO passed with nothing sent (the pipe is not empty: m
         * counts what is in it) */
        enum ks_io_result r = ks_wait_fd(w, out, POLLOUT, deadline_ms, false);
        if (r != KS_IO_OK)
            return r;
    }
    return KS_IO_OK;
}

bool ks_peer_left(int fd)
{
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

enum ks_io_result ks_read_watching(struct ks_worker *w, int fd, int client_fd, void *buf, size_t len,
                                   int64_t deadline_ms, size_t *got, bool *client_left)
{
    *client_left = false;
    for (;;) {
        int64_t now = ks_now_ms();
        int64_t until = deadline_ms - now > KS_CLIENT_CHECK_MS ? now + KS_CLIENT_CHECK_MS : deadline_ms;
        enum ks_io_result io = ks_read_some(w, fd, buf, len, until, got);
        if (io != KS_IO_TIMEOUT || until >= deadline_ms)
            return io;
        if (client_fd >= 0 && ks_peer_left(client_fd)) {
            *client_left = true;
            return io;
        }
    }
}

/* splice_in() by read_ms, looking at the client every KS_CLIENT_CHECK_MS
 * meanwhile: KS_IO_EOF with *client_left when it has gone. */
static enum ks_io_result splice_in_watching(struct ks_conn *c, int in, int pipe_w, size_t max,
                                            int64_t read_ms, size_t *got, bool *client_left)
{
    int64_t deadline = ks_now_ms() + read_ms;
    *client_left = false;
    for (;;) {
        int64_t now = ks_now_ms();
        int64_t until = deadline - now > KS_CLIENT_CHECK_MS ? now + KS_CLIENT_CHECK_MS : deadline;
        enum ks_io_result r = splice_in(c->w, in, pipe_w, max, until, got);
        if (r != KS_IO_TIMEOUT || until >= deadline)
            return r;
        if (ks_peer_left(c->fd)) {
            *client_left = true;
            return KS_IO_EOF;
        }
    }
}

enum ks_io_result ks_conn_splice_from(struct ks_conn *c, int in, const int pipe_fd[2], uint64_t n,
                                      int64_t read_ms, int64_t write_ms, char *buf, size_t cap,
                                      bool *in_failed)
{
    struct ks_worker *w = c->w;
    enum ks_io_result r = KS_IO_OK;
    *in_failed = false;
    while (n > 0) {
        size_t got, sent;
        bool client_left;
        ks_worker_set_state(w, KS_WS_PROXYING);
        r = splice_in_watching(c, in, pipe_fd[1], n < SIZE_MAX ? (size_t)n : SIZE_MAX, read_ms, &got,
                               &client_left);
        if (r != KS_IO_OK) {
            *in_failed = !client_left;
            break;
        }
        ks_worker_set_state(w, KS_WS_WRITING);
        r = splice_out(w, c->fd, pipe_fd[0], got, ks_now_ms() + write_ms, buf, cap, &sent);
        c->bytes_out += sent;
        atomic_fetch_add_explicit(&w->score->bytes_out, sent, memory_order_relaxed);
        if (r != KS_IO_OK)
            break;
        n -= got;
    }
    return r;
}

enum ks_io_result ks_conn_splice_to(struct ks_conn *c, int out, const int pipe_fd[2], size_t max,
                                    int64_t read_deadline_ms, int64_t write_ms, char *buf, size_t cap,
                                    size_t *got, bool *in_failed)
{
    struct ks_worker *w = c->w;
    *got = 0;
    *in_failed = true;
    enum ks_io_result r = splice_in(w, c->fd, pipe_fd[1], max, read_deadline_ms, got);
    if (r != KS_IO_OK)
        return r;
    c->bytes_in += *got;
    atomic_fetch_add_explicit(&w->score->bytes_in, *got, memory_order_relaxed);
    *in_failed = false;
    size_t sent;
    return splice_out(w, out, pipe_fd[0], *got, ks_now_ms() + write_ms, buf, cap, &sent);
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

void ks_conn_close(struct ks_conn *c, bool may_be_sending)
{
    int64_t linger_ms = c->w->table->settings.lingering_time_ms;
    if (linger_ms > 0 && may_be_sending && shutdown(c->fd, SHUT_WR) == 0) {
        int64_t deadline = ks_now_ms() + linger_ms;
        size_t got;
        while (ks_read_some(c->w, c->fd, c->buf, c->cap, deadline, &got) == KS_IO_OK)
            ;
    }
    close(c->fd);
    c->fd = -1;
}

bool ks_conn_input_waiting(const struct ks_conn *c)
{
    char b;
    return c->start < c->len || recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void ks_conn_compact(struct ks_conn *c)
{
    if (c->start == 0)
        return;
    memmove(c->buf, c->buf + c->start, c->len - c->start);
    c->len -= c->start;
    c->start = 0;
}
