/*
 * watch.h: the tenant scripts watched with inotify, so that saving a
 * script reloads the configuration as SIGHUP does (same all-or-nothing
 * validation), after lua.reload_debounce of quiet.
 *
 * The directories holding the scripts are watched rather than the files,
 * so that editors which save by writing a new file and renaming it over
 * the old one are seen too.
 */
#ifndef KS_WATCH_H
#define KS_WATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "master/config.h"

struct ks_watch;

/* NULL when inotify is not available (logged; reloads then need HUP). */
struct ks_watch *ks_watch_new(void);
/* Close and forget (also right after fork: the watches stay the master's). */
void ks_watch_free(struct ks_watch *w);
/* Watch the scripts of cfg (replacing what was watched). */
void ks_watch_set(struct ks_watch *w, const struct ks_config *cfg);
/* The descriptor to poll for reading, or -1. */
int ks_watch_fd(const struct ks_watch *w);
/* Read the pending events; a change to a script (re)starts the debounce. */
void ks_watch_process(struct ks_watch *w, int64_t now_ms, int64_t debounce_ms);
/* Milliseconds until a debounced reload is due, or -1 when none is. */
int64_t ks_watch_timeout(const struct ks_watch *w, int64_t now_ms);
/* True once when the debounce has passed: reload now.  *what receives the
 * script that changed last. */
bool ks_watch_due(struct ks_watch *w, int64_t now_ms, const char **what);

#endif
