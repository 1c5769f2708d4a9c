/*
 * ctlclient.c: one command over the control socket (see ctlclient.h).
 */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "keystoned/ctlclient.h"
#include "keystoned/util.h"

/* Wait for fd; 0 when ready, -1 at the deadline or on error. */
static int wait_for(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - ks_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = { .fd = fd, .events = events };
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

int ks_ctl_call(const char *path, const char *command, char *reply, size_t cap, int64_t timeout_ms,
                char *err, size_t errlen)
{
    int64_t deadline = ks_now_ms() + timeout_ms;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        return -1;
    }
    ks_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 && errno != EAGAIN &&
                   errno != EINPROGRESS)) {
        snprintf(err, errlen, "cannot reach keystoned on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t len = strlen(command), off = 0;
    while (off <= len) {
        /* the command, then its newline */
        const char *p = off < len ? command + off : "\n";
        size_t n = off < len ? len - off : 1;
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "cannot send to %s: %s", path, strerror(errno));
            close(fd);
            return off > 0 ? -2 : -1;
        }
        if (w < 0 && errno == EAGAIN && wait_for(fd, POLLOUT, deadline) < 0) {
            snprintf(err, errlen, "keystoned did not take the command within %lld ms",
                     (long long)timeout_ms);
            close(fd);
            return off > 0 ? -2 : -1;
        }
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, reply + got, cap - 1 - got);
        if (r > 0) {
            got += (size_t)r;
            if (got == cap - 1)
                break;
            continue;
        }
        if (r == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN || wait_for(fd, POLLIN, deadline) < 0) {
            snprintf(err, errlen, "no answer from keystoned within %lld ms", (long long)timeout_ms);
            close(fd);
            return -2;
        }
    }
    close(fd);
    reply[got] = '\0';
    return 0;
}
