/*
 * tunnel.c: the byte relay behind a 101 Switching Protocols (WebSocket and
 * other Upgrades).  See ks_tunnel() in proxy.h.
 *
 * Both sockets are used without blocking (MSG_DONTWAIT: they are blocking
 * sockets, see conn.h); one poll() watches what each direction
 * needs (read its source while its buffer is empty, write its sink while
 * it holds bytes), so a slow reader on one side only stalls its own
 * direction.  When a side closes, the other side's write half is shut
 * once its buffer is flushed, and the relay goes on in the other
 * direction until that one ends too: a close handshake of the new
 * protocol still gets through.  A side that resets (or has closed both
 * ways) can take nothing more: the direction toward it ends there, even
 * while nothing is being written to it.  Any activity renews the idle
 * deadline.
 */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "worker/proxy.h"

struct dir {
    int from, to;
    char *buf;
    size_t cap, len, off;
    bool eof;           /* from has closed */
    bool shut;          /* and to's write half is shut */
    uint64_t bytes;
};

static bool dir_done(const struct dir *d)
{
    return d->shut;
}

/* The socket d writes to has reset or closed both ways: what d holds or
 * will read has nowhere to go. */
static void dir_sink_gone(struct dir *d)
{
    d->len = d->off = 0;
    d->eof = d->shut = true;
}

/* Move what can move without waiting; -1 on an error, else whether
 * anything moved. */
static int dir_step(struct dir *d, short revents_from, short revents_to)
{
    int moved = 0;
    if (d->len == 0 && !d->eof && (revents_from & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = recv(d->from, d->buf, d->cap, MSG_DONTWAIT);
        if (n > 0) {
            d->len = (size_t)n;
            d->off = 0;
            moved = 1;
        } else if (n == 0) {
            d->eof = true;
            moved = 1;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
    }
    if (d->len > d->off && (revents_to & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t n = send(d->to, d->buf + d->off, d->len - d->off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            d->off += (size_t)n;
            d->bytes += (uint64_t)n;
            if (d->off == d->len)
                d->len = d->off = 0;
            moved = 1;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
    }
    if (d->eof && d->len == 0 && !d->shut) {
        shutdown(d->to, SHUT_WR);
        d->shut = true;
        moved = 1;
    }
    return moved;
}

void ks_tunnel(struct ks_worker *w, int a, int b, char *buf_ab, char *buf_ba, size_t cap,
               int64_t idle_ms, uint64_t *ab, uint64_t *ba)
{
    (void)w;
    struct dir d[2] = {
        { .from = a, .to = b, .buf = buf_ab, .cap = cap },
        { .from = b, .to = a, .buf = buf_ba, .cap = cap },
    };
    int64_t deadline = ks_now_ms() + idle_ms;
    /* the first pass tries both reads at once (read-first) */
    short ra = POLLIN, rb = POLLIN;
    short wa = 0, wb = 0;
    bool gone[2] = { false, false };    /* a, b: reported POLLHUP or POLLERR */
    while (!(dir_done(&d[0]) && dir_done(&d[1]))) {
        int m0 = dir_step(&d[0], ra, wb);
        int m1 = dir_step(&d[1], rb, wa);
        if (m0 < 0 || m1 < 0)
            break;
        if (m0 > 0 || m1 > 0) {
            deadline = ks_now_ms() + idle_ms;
            /* try again at once: more may be ready */
            ra = (d[0].len == 0 && !d[0].eof) ? POLLIN : 0;
            rb = (d[1].len == 0 && !d[1].eof) ? POLLIN : 0;
            wb = d[0].len > d[0].off ? POLLOUT : 0;
            wa = d[1].len > d[1].off ? POLLOUT : 0;
            continue;
        }
        struct pollfd p[2] = {
            { .fd = a, .events = (short)(((d[0].len == 0 && !d[0].eof) ? POLLIN : 0) |
                                         (d[1].len > d[1].off ? POLLOUT : 0)) },
            { .fd = b, .events = (short)(((d[1].len == 0 && !d[1].eof) ? POLLIN : 0) |
                                         (d[0].len > d[0].off ? POLLOUT : 0)) },
        };
        /* A socket nothing is wanted of is still watched, for poll's
         * POLLHUP and POLLERR (reported whatever the events): a side
         * that resets after it half-closed ends the direction toward it
         * now, not at the idle deadline.  Once seen, it sits the wait
         * out: a side that reset while its bytes still wait for the
         * other side, which is not reading, would wake every poll at
         * once and spin until that side reads or the idle deadline. */
        for (int i = 0; i < 2; i++)
            if (p[i].events == 0 && gone[i])
                p[i].fd = -1;
        int64_t left = deadline - ks_now_ms();
        if (left <= 0)
            break;      /* idle too long */
        int rc = poll(p, 2, left > 1000000 ? 1000000 : (int)left);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc <= 0) {
            ra = rb = wa = wb = 0;
            continue;
        }
        for (int i = 0; i < 2; i++)
            if (p[i].events == 0 && (p[i].revents & (POLLHUP | POLLERR))) {
                gone[i] = true;
                dir_sink_gone(&d[1 - i]);   /* d[1] writes to a, d[0] to b */
            }
        ra = (short)(p[0].revents & ~POLLOUT);
        wa = (short)(p[0].revents & ~POLLIN);
        rb = (short)(p[1].revents & ~POLLOUT);
        wb = (short)(p[1].revents & ~POLLIN);
    }
    *ab = d[0].bytes;
    *ba = d[1].bytes;
}
