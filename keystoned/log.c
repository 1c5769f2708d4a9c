/*
 * log.c: the error log (see log.h for the line format).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"

/* The log is process-wide by nature (every module logs); this is the one
 * piece of global state outside struct ks_master / struct ks_worker. */
static struct {
    int fd;
    enum ks_log_level level;
    char path[4096];        /* "" = stderr */
} ks_log_state = { 2, KS_LOG_INFO, "" };

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static int open_append(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int ks_log_open(const char *path)
{
    if (path == NULL || strcmp(path, "stderr") == 0) {
        if (ks_log_state.fd > 2)
            close(ks_log_state.fd);
        ks_log_state.fd = 2;
        ks_log_state.path[0] = '\0';
        return 0;
    }
    int fd = open_append(path);
    if (fd < 0)
        return -1;
    if (ks_log_state.fd > 2)
        close(ks_log_state.fd);
    ks_log_state.fd = fd;
    ks_strlcpy(ks_log_state.path, path, sizeof(ks_log_state.path));
    return 0;
}

int ks_log_reopen(void)
{
    if (ks_log_state.path[0] == '\0')
        return 0;
    int fd = open_append(ks_log_state.path);
    if (fd < 0)
        return -1;
    /* dup2 keeps the descriptor number stable for anything that cached it */
    if (ks_log_state.fd > 2) {
        dup2(fd, ks_log_state.fd);
        close(fd);
    } else {
        ks_log_state.fd = fd;
    }
    return 0;
}

void ks_log_set_level(enum ks_log_level level)
{
    ks_log_state.level = level;
}

enum ks_log_level ks_log_get_level(void)
{
    return ks_log_state.level;
}

int ks_log_fd(void)
{
    return ks_log_state.fd;
}

void ks_log(enum ks_log_level level, const char *msgid, const char *fmt, ...)
{
    if (level > ks_log_state.level)
        return;
    int saved_errno = errno;
    char line[2048];
    char ts[32];
    ks_format_rfc3339(ks_wall_ms(), ts, sizeof(ts));
    int n = snprintf(line, sizeof(line), "%s [%s] %d %s: ", ts, level_names[level], (int)getpid(),
                     msgid);
    if (n < 0)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* one line per event: fold embedded newlines */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    /* A single write on an O_APPEND descriptor: lines never interleave.
     * A failing log must not take the process down, so the result is
     * deliberately ignored. */
    ssize_t w = write(ks_log_state.fd, line, len);
    (void)w;
    errno = saved_errno;
}

void ks_log_unlink(const char *what, const char *path)
{
    if (unlink(path) == 0 || errno == ENOENT)
        return;
    int e = errno;
    /* the usual cause: privileges dropped to server.user, which cannot
     * write the (root's) directory the file is in */
    ks_log_warn("cleanup", "cannot remove the %s %s: %s%s", what, path, strerror(e),
                e == EACCES || e == EPERM ? " (its directory must be writable by the user "
                                            "keystoned runs as)" : "");
}
