/*
 * statefile.h: keeping the state file true while keystoned runs.
 *
 * The state file is the shared segment itself (shm.h): the master and the
 * workers map it, keystonectl maps it read-only by its path.  Operators,
 * tmpfiles cleaners and scripts can still get at the path:
 *
 *   deleted, or replaced by another file (rm, mv, a garbage copy): the
 *     segment lives on, mapped, but keystonectl no longer finds it.  The
 *     master notices within a second (the path no longer names the file
 *     it maps) and moves to a new file at the path: a copy of the
 *     segment, renamed into place, mapped over the old one at the same
 *     address; the incarnation it bumps in the old segment tells each
 *     worker to open the new file and map it over its own view too (at
 *     its next request, or within a second when idle).  Counter updates
 *     made in the old segment during that second are lost.
 *
 *   overwritten in place (bytes written into it): the master and the
 *     workers take the layout from private copies (struct ks_shm), never
 *     from the header again, and a worker checks every route table it
 *     copies; the master compares the header with the copy it made at
 *     create once a second, restores it and publishes the route table
 *     again.  Counters and health records hit by the garbage stay wrong
 *     until they are next written.
 *
 *   truncated (`> file`): pages of the mapping past the new end would
 *     raise SIGBUS in every process touching them.  A SIGBUS handler
 *     (master and workers) gives the file its size back and lets the
 *     access go on, on zeroed pages; then the repair above.
 */
#ifndef KS_STATEFILE_H
#define KS_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "shm/shm.h"

/* This process maps shm read-write: catch SIGBUS on it (see above).  One
 * segment per process. */
void ks_statefile_guard(struct ks_shm *shm);

/* Master, once a second.  Restores the static header (and the
 * generation) if they were overwritten; true when it did, and the caller
 * must publish the route table again. */
bool ks_statefile_repair(struct ks_shm *shm);

/* Master, once a second: 0 when the path still names the mapped file, 1
 * when it is gone or another file. */
int ks_statefile_lost(const struct ks_shm *shm);

/* Master: move to a new file at the state path (owned by gid when it is
 * not -1, mode 0640).  0, or -1 with err (the old mapping stays). */
int ks_statefile_recreate(struct ks_shm *shm, gid_t gid, char *err, size_t errlen);

/* Worker, before each request: if the master moved to a new file, map it
 * in place of the old one.  1 when it moved, 0 when nothing to do, -1
 * when the new file could not be mapped (err; tried again later). */
int ks_statefile_follow(struct ks_shm *shm, char *err, size_t errlen);

#endif
