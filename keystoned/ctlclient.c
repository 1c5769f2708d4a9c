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

/* A stopped master answers nothing until it is continued, which may be
 * never: the wait looks at it once a second instead of sitting out the
 * whole timeout. */
#define STOPPED_CHECK_MS 1000

enum wait_result { WAIT_READY, WAIT_TIMEOUT, WAIT_STOPPED };

/* Wait for fd until the deadline, or until master (when not 0) is seen
 * stopped. */
static enum wait_result wait_for(int fd, short events, pid_t master, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - ks_now_ms();
        if (left <= 0)
            return WAIT_TIMEOUT;
        if (master > 0 && left > STOPPED_CHECK_MS)
            left = STOPPED_CHECK_MS;
        struct pollfd p = { .fd = fd, .events = events };
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return WAIT_READY;
        if (rc < 0 && errno != EINTR)
            return WAIT_TIMEOUT;
        if (rc == 0 && master > 0 && ks_proc_stopped(master))
            return WAIT_STOPPED;
    }
}

static void say_stopped(pid_t master, char *err, size_t errlen)
{
    snprintf(err, errlen, "keystoned's master (pid %d) is stopped (SIGSTOP or a debugger): it "
             "reads the command only when it is continued (kill -CONT %d)", (int)master,
             (int)master);
}

int ks_ctl_call(const char *path, pid_t master, const char *command, char *reply, size_t cap,
                int64_t timeout_ms, char *err, size_t errlen)
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
        enum wait_result wr = WAIT_READY;
        if (w < 0 && errno == EAGAIN && (wr = wait_for(fd, POLLOUT, master, deadline)) != WAIT_READY) {
            if (wr == WAIT_STOPPED)
                say_stopped(master, err, errlen);
            else
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
        enum wait_result wr = errno == EAGAIN ? wait_for(fd, POLLIN, master, deadline) : WAIT_TIMEOUT;
        if (wr != WAIT_READY) {
            if (wr == WAIT_STOPPED)
                say_stopped(master, err, errlen);
            else
                snprintf(err, errlen, "no answer from keystoned within %lld ms",
                         (long long)timeout_ms);
            close(fd);
            return -2;
        }
    }
    close(fd);
    reply[got] = '\0';
    return 0;
}
