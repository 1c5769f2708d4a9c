/*
 * respond.h: responses the worker writes itself (admin answers, errors).
 */
#ifndef KS_RESPOND_H
#define KS_RESPOND_H

#include <stdbool.h>
#include <stddef.h>

#include "worker/conn.h"
#include "worker/http.h"

const char *ks_status_reason(int status);
/* "Date: ...\r\n" for the current second (cached per second), its length in *len. */
const char *ks_date_header(struct ks_worker *w, size_t *len);

/* Write a whole response with a small body.  extra_headers (or NULL) are
 * complete "Name: value\r\n" lines.  keep_alive says whether the
 * connection stays open (it sets Connection:).  Returns 0 or -1. */
int ks_respond(struct ks_conn *c, struct ks_request *r, int status, const char *content_type,
               const char *extra_headers, const char *body, size_t body_len, bool keep_alive);

/* The JSON error envelope:
 *   {"error":{"code":404,"message":"...","request_id":"..."}} */
int ks_respond_error(struct ks_conn *c, struct ks_request *r, int status, const char *message,
                     const char *extra_headers, bool keep_alive);

#endif
