/*
 * ctlclient.h: the client side of the master's control socket (see
 * master/control.h for the protocol), for keystonectl and for workers
 * that send runtime route changes.
 */
#ifndef KS_CTLCLIENT_H
#define KS_CTLCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Send one command line (without the newline) and read the whole reply
 * into reply (NUL-terminated) within timeout_ms.  0; -1 with err filled
 * when the socket cannot be reached (nothing was sent); -2 with err when
 * some or all of the command was written but no whole answer came in
 * time, or master (when not 0) was found stopped while we waited: the
 * master may still read and carry it out. */
int ks_ctl_call(const char *path, pid_t master, const char *command, char *reply, size_t cap,
                int64_t timeout_ms, char *err, size_t errlen);

#endif
