/*
 * master.h: the master process: listeners, shared segment, worker pool,
 * signals, reload.  keystoned.c parses the command line and hands over.
 */
#ifndef KS_MASTER_H
#define KS_MASTER_H

#include <stdbool.h>

#include "master/config.h"

struct ks_master;

/* Bind the listeners of cfg (before daemonizing, so that an address in use
 * is reported on the terminal).  Takes ownership of cfg.  debug (-d): the
 * master and the workers log at level debug whatever server.log_level
 * says, on every reload.  NULL on error with err filled. */
struct ks_master *ks_master_new(struct ks_config *cfg, bool foreground, bool debug, char *err,
                                size_t errlen);

/* Create the shared segment and control socket, drop privileges, fork the
 * workers and run the event loop until stopped.  ready_fd (or -1) receives
 * one line "ok\n" or an error once start-up is complete, so a daemonizing
 * parent can report failure; pidfile_fd (or -1) is the locked pid file,
 * which workers must not inherit.  Returns the process exit code. */
int ks_master_run(struct ks_master *m, int ready_fd, int pidfile_fd);

void ks_master_free(struct ks_master *m);

/* Load a config file and check everything -t checks (YAML, values, Lua
 * scripts; flags as ks_config_load_flags).  NULL with diag filled on any
 * error. */
struct ks_config *ks_master_load_config(const char *path, unsigned flags, struct ks_diag *diag);

#endif
