/*
 * log.h: the error log.  Text, one line per event:
 *
 *   2026-11-22T10:00:00.123Z [info] 4242 worker-start: worker 3 started: pid 4242, gen 7
 *
 * level, pid and a short stable message id, then the message.  Each line is
 * one write(2) on an O_APPEND descriptor, so lines from master and workers
 * never interleave.  The descriptor is opened by the master and inherited;
 * SIGUSR1 makes every process reopen it.
 */
#ifndef KS_LOG_H
#define KS_LOG_H

#include <stdbool.h>

enum ks_log_level { KS_LOG_ERROR, KS_LOG_WARN, KS_LOG_INFO, KS_LOG_DEBUG };

/* path: "stderr" or a file.  Returns 0 or -1 (errno set). */
int ks_log_open(const char *path);
/* Reopen the file given to ks_log_open (logrotate); stderr is kept. */
int ks_log_reopen(void);
void ks_log_set_level(enum ks_log_level level);
enum ks_log_level ks_log_get_level(void);
/* Current descriptor (so a forked process can keep it across exec-free
 * daemonizing). */
int ks_log_fd(void);

void ks_log(enum ks_log_level level, const char *msgid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Remove a file keystoned made (the `what` of the message: "pid file",
 * "state file", "control socket"); a failure other than "not there" is
 * logged as a warning naming the file and why. */
void ks_log_unlink(const char *what, const char *path);

#define ks_log_error(id, ...) ks_log(KS_LOG_ERROR, id, __VA_ARGS__)
#define ks_log_warn(id, ...) ks_log(KS_LOG_WARN, id, __VA_ARGS__)
#define ks_log_info(id, ...) ks_log(KS_LOG_INFO, id, __VA_ARGS__)
#define ks_log_debug(id, ...)                                                 \
    do {                                                                      \
        if (ks_log_get_level() >= KS_LOG_DEBUG)                               \
            ks_log(KS_LOG_DEBUG, id, __VA_ARGS__);                            \
    } while (0)

#endif
