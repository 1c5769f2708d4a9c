/*
 * admin.h: the admin API, served by the worker from shared memory.  On
 * the admin listener every admin path answers (with or without the
 * admin_base_path prefix); on the public listener only the read-only ones
 * under admin_base_path (when it is not "").
 */
#ifndef KS_ADMIN_H
#define KS_ADMIN_H

#include <stdbool.h>

#include "worker/conn.h"
#include "worker/http.h"

/* The path of r relative to the admin root, or NULL when r is not for
 * the admin API on this connection's listener; *len receives its length. */
const char *ks_admin_path(const struct ks_conn *c, const struct ks_request *r, size_t *len);
/* Is r addressed to the admin API on this connection's listener? */
bool ks_admin_wants(const struct ks_conn *c, const struct ks_request *r);
/* Answer an admin request (ks_admin_wants() was true).  Returns 0, or -1
 * when the connection must be closed. */
int ks_admin_serve(struct ks_conn *c, struct ks_request *r, bool keep_alive);

/* Every answer of the admin API, the error envelopes too, describes the
 * daemon at that moment: none may be stored by a cache. */
#define KS_ADMIN_NO_STORE "Cache-Control: no-store\r\n"
/* ks_respond() / ks_respond_error() with KS_ADMIN_NO_STORE before the
 * extra headers (NULL for none). */
int ks_admin_respond(struct ks_conn *c, struct ks_request *r, int status, const char *extra,
                     const char *body, size_t len, bool keep_alive);
int ks_admin_error(struct ks_conn *c, struct ks_request *r, int status, const char *message,
                   const char *extra, bool keep_alive);

#endif
