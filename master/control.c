/*
 * control.c: the control socket (see control.h).
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "master/control.h"

#define CONTROL_MAX_CLIENTS 16
#define CONTROL_CMD_MAX 4096
#define CONTROL_REPLY_MAX 65536
#define CONTROL_DEADLINE_MS 5000

struct control_client {
    int fd;                     /* -1 = unused */
    int64_t deadline_ms;
    size_t in_len;
    char in[CONTROL_CMD_MAX];
    char *out;                  /* reply being written, NULL while reading */
    size_t out_len, out_off;
};

struct ks_control {
    int listen_fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    gid_t gid;
    dev_t dev;                  /* of the socket file made at path */
    ino_t ino;
    bool failing;               /* lost and not made again (said once) */
    ks_control_fn fn;
    void *arg;
    struct control_client clients[CONTROL_MAX_CLIENTS];
};

/*
 * Whatever is at the path is someone's until it proves to be a socket
 * left by a master that died: a regular file there is a user's data, a
 * socket that answers connect() is a running keystoned's (a second
 * instance started with another pid file must not take its socket over).
 * A socket nobody listens on refuses the connect with ECONNREFUSED: stale.
 */
int ks_control_check_path(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "server.control_socket path too long: %s", path);
        return -1;
    }
    ks_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "server.control_socket %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "server.control_socket %s exists and is not a socket: refusing to "
                 "replace it (remove it or choose another path)", path);
        return -1;
    }
    /* non-blocking: a live master with a full backlog says EAGAIN */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return -1;
    }
    int rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    close(fd);
    if (rc == 0 || e != ECONNREFUSED) {
        snprintf(err, errlen, "server.control_socket %s is in use (%s): is another keystoned "
                 "running with it?", path, rc == 0 ? "a process answers on it" : strerror(e));
        return -1;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove the stale control socket %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* A listening socket bound at c->path, 0660 and group c->gid; its inode
 * is noted so that the master can tell the file is still its own. */
static int listen_at(struct ks_control *c, char *err, size_t errlen)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    ks_strlcpy(sun.sun_path, c->path, sizeof(sun.sun_path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return -1;
    }
    mode_t old = umask(0117);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc < 0 || listen(fd, 16) < 0) {
        snprintf(err, errlen, "cannot listen on control socket %s: %s", c->path, strerror(errno));
        close(fd);
        return -1;
    }
    /* the owner stays who made it (root, or server.user once privileges
     * are dropped): only the group is set.  The mode is the umask's
     * above.  lchown, lstat: a link put at the path since the bind (the
     * directory may be server.user's) must not give its target our
     * group, nor 0660. */
    struct stat st;
    if ((c->gid != (gid_t)-1 && lchown(c->path, (uid_t)-1, c->gid) < 0) || lstat(c->path, &st) < 0) {
        snprintf(err, errlen, "cannot chown control socket %s: %s", c->path, strerror(errno));
        close(fd);
        unlink(c->path);
        return -1;
    }
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    return fd;
}

struct ks_control *ks_control_open(const char *path, gid_t gid, ks_control_fn fn, void *arg,
                                   char *err, size_t errlen)
{
    if (ks_control_check_path(path, err, errlen) < 0)
        return NULL;
    struct ks_control *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ks_strlcpy(c->path, path, sizeof(c->path));
    c->gid = gid;
    c->fn = fn;
    c->arg = arg;
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
        c->clients[i].fd = -1;
    if ((c->listen_fd = listen_at(c, err, errlen)) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

/* The path no longer names the socket this master listens on. */
static bool lost(const struct ks_control *c)
{
    struct stat st;
    if (lstat(c->path, &st) < 0)
        return errno == ENOENT || errno == ENOTDIR;
    return st.st_dev != c->dev || st.st_ino != c->ino;
}

int ks_control_watch(struct ks_control *c, char *err, size_t errlen)
{
    if (!lost(c)) {
        c->failing = false;
        return 0;
    }
    /* nobody can connect to the old socket any more: a new one in its
     * place (clients connected to the old one finish there); never over
     * what someone put at the path meanwhile */
    int fd = -1;
    if (ks_control_check_path(c->path, err, errlen) == 0)
        fd = listen_at(c, err, errlen);
    if (fd < 0) {
        if (c->failing)
            return 0;
        c->failing = true;
        return -1;
    }
    close(c->listen_fd);
    c->listen_fd = fd;
    c->failing = false;
    return 1;
}

static void drop_client(struct control_client *cl)
{
    close(cl->fd);
    free(cl->out);
    cl->fd = -1;
    cl->out = NULL;
    cl->in_len = 0;
}

size_t ks_control_pollfds(struct ks_control *c, struct pollfd *pfd, size_t max)
{
    size_t n = 0;
    if (max == 0)
        return 0;
    pfd[n++] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
    for (int i = 0; i < CONTROL_MAX_CLIENTS && n < max; i++) {
        struct control_client *cl = &c->clients[i];
        if (cl->fd >= 0)
            pfd[n++] = (struct pollfd){ .fd = cl->fd, .events = cl->out ? POLLOUT : POLLIN };
    }
    return n;
}

int ks_control_timeout(const struct ks_control *c)
{
    int64_t now = ks_now_ms(), best = -1;
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        const struct control_client *cl = &c->clients[i];
        if (cl->fd < 0)
            continue;
        int64_t left = cl->deadline_ms > now ? cl->deadline_ms - now : 0;
        if (best < 0 || left < best)
            best = left;
    }
    return (int)best;
}

static void accept_clients(struct ks_control *c)
{
    for (;;) {
        int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct control_client *slot = NULL;
        for (int i = 0; i < CONTROL_MAX_CLIENTS && slot == NULL; i++)
            if (c->clients[i].fd < 0)
                slot = &c->clients[i];
        if (slot == NULL) {
            static const char busy[] = "1 control socket busy, try again\n";
            ssize_t w = write(fd, busy, sizeof(busy) - 1);
            (void)w;
            close(fd);
            continue;
        }
        slot->fd = fd;
        slot->in_len = 0;
        slot->deadline_ms = ks_now_ms() + CONTROL_DEADLINE_MS;
    }
}

static void run_command(struct ks_control *c, struct control_client *cl)
{
    char *nl = memchr(cl->in, '\n', cl->in_len);
    *nl = '\0';
    if (nl > cl->in && nl[-1] == '\r')
        nl[-1] = '\0';
    cl->out = malloc(CONTROL_REPLY_MAX);
    if (cl->out == NULL) {
        drop_client(cl);
        return;
    }
    cl->out[0] = '\0';
    c->fn(c->arg, cl->in, cl->out, CONTROL_REPLY_MAX);
    cl->out_len = strlen(cl->out);
    cl->out_off = 0;
    cl->deadline_ms = ks_now_ms() + CONTROL_DEADLINE_MS;
}

static void client_io(struct ks_control *c, struct control_client *cl, short revents)
{
    if (cl->out == NULL) {
        ssize_t r = read(cl->fd, cl->in + cl->in_len, sizeof(cl->in) - 1 - cl->in_len);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            drop_client(cl);
            return;
        }
        if (r > 0)
            cl->in_len += (size_t)r;
        if (memchr(cl->in, '\n', cl->in_len) != NULL)
            run_command(c, cl);
        else if (cl->in_len >= sizeof(cl->in) - 1)
            drop_client(cl);
        return;
    }
    if (revents & (POLLOUT | POLLERR | POLLHUP)) {
        ssize_t w = write(cl->fd, cl->out + cl->out_off, cl->out_len - cl->out_off);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            drop_client(cl);
            return;
        }
        if (w > 0)
            cl->out_off += (size_t)w;
        if (cl->out_off == cl->out_len)
            drop_client(cl);
    }
}

void ks_control_process(struct ks_control *c, const struct pollfd *pfd, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (pfd[i].revents == 0)
            continue;
        if (pfd[i].fd == c->listen_fd) {
            accept_clients(c);
            continue;
        }
        for (int k = 0; k < CONTROL_MAX_CLIENTS; k++)
            if (c->clients[k].fd == pfd[i].fd) {
                client_io(c, &c->clients[k], pfd[i].revents);
                break;
            }
    }
    int64_t now = ks_now_ms();
    for (int k = 0; k < CONTROL_MAX_CLIENTS; k++)
        if (c->clients[k].fd >= 0 && now >= c->clients[k].deadline_ms)
            drop_client(&c->clients[k]);
}

void ks_control_close(struct ks_control *c, int unlink_path)
{
    if (c == NULL)
        return;
    for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
        if (c->clients[i].fd >= 0)
            drop_client(&c->clients[i]);
    close(c->listen_fd);
    if (unlink_path && !lost(c))    /* never what someone else put there */
        ks_log_unlink("control socket", c->path);
    free(c);
}
