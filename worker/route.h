/*
 * route.h: which tenant serves a request (pure functions over the route
 * table, no I/O, so that they can be tested alone).
 *
 * Matching works on a normalised copy of the path; the request itself is
 * never rewritten here.  Normalising decodes only the percent-escapes of
 * unreserved characters, collapses "//" and resolves "." and ".."
 * segments; "%2F" stays encoded, since an upstream reads it as a byte of a
 * segment and not as a separator, so no escape can move a request across
 * a base path.  "%00" and malformed escapes are refused.
 */
#ifndef KS_ROUTE_H
#define KS_ROUTE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/table.h"

/* Normalise path[0..len) into out, which needs len + 2 bytes.  A path that
 * does not start with '/' (the "*" of OPTIONS) is matched as "/".  Returns
 * the normalised length, or -1 for "%00" or a malformed escape. */
ssize_t ks_route_normalize(const char *path, size_t len, char *out);

/* Is base (a configured base_path: "/" or "/a/b") a path-segment prefix
 * of path?  "/api" matches "/api" and "/api/x", not "/apiary". */
int ks_route_prefix_match(const char *base, size_t blen, const char *path, size_t len);

/* The tenant for host (lower-case, without port) and the normalised path:
 * among the tenants whose domains match the host best (an exact name,
 * then the longest "*.suffix", then the tenants without domains), the one
 * whose base_path is the longest segment prefix of the path; a level
 * without a path match falls through to the next.  Returns its index or
 * KS_NONE; *base_len receives the length of its base path (0 for "/"). */
uint32_t ks_route_tenant(const struct ks_table *t, const char *host, const char *path, size_t len,
                         size_t *base_len);

#endif
