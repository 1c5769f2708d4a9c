/*
 * control.h: the control socket keystonectl talks to.
 *
 * Protocol: the client sends one command line ("reload", "stop",
 * "ping"); the master answers with lines, the first being
 * "<code> <message>" where code is what keystonectl exits with (0 done,
 * 3 restart required, 4 config invalid, 1 other failure), and closes.
 * Every socket is non-blocking: a slow or silent client never stalls the
 * master (it is dropped after a deadline).
 */
#ifndef KS_CONTROL_H
#define KS_CONTROL_H

#include <poll.h>
#include <stddef.h>
#include <sys/types.h>

struct ks_control;

/* Runs one command and writes the whole reply (NUL-terminated) into reply. */
typedef void (*ks_control_fn)(void *arg, const char *command, char *reply, size_t replylen);

/* Before creating it: 0 when path is free (nothing there, or a socket
 * left by a master that died, which is removed); -1 with err when it is a
 * file that is not a socket, or a socket a live process answers on. */
int ks_control_check_path(const char *path, char *err, size_t errlen);
/* Create the socket at path (mode 0660, group gid unless (gid_t)-1),
 * after ks_control_check_path().  NULL with err filled on failure. */
struct ks_control *ks_control_open(const char *path, gid_t gid, ks_control_fn fn, void *arg,
                                   char *err, size_t errlen);
/* Descriptors to poll; returns how many were written (at most max). */
size_t ks_control_pollfds(struct ks_control *c, struct pollfd *pfd, size_t max);
/* Handle the poll results for the descriptors ks_control_pollfds() gave. */
void ks_control_process(struct ks_control *c, const struct pollfd *pfd, size_t n);
/* Milliseconds until the earliest client deadline, or -1. */
int ks_control_timeout(const struct ks_control *c);
/* Master, once a second: when the socket file was removed or replaced,
 * listen on a new one at the path.  0 nothing to do (or a failure already
 * reported), 1 made again, -1 with err when it cannot be (said once until
 * it works again). */
int ks_control_watch(struct ks_control *c, char *err, size_t errlen);
/* Close and free everything; unlink the socket file when asked (the
 * master at exit, not a forked worker). */
void ks_control_close(struct ks_control *c, int unlink_path);

#endif
