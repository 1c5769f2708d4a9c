/*
 * accesslog.h: one JSON object per request on server.access_log, written
 * with a single write(2) on an O_APPEND descriptor, so that the lines of
 * all workers interleave whole.  keystone.yaml(5) lists the fields.
 */
#ifndef KS_ACCESSLOG_H
#define KS_ACCESSLOG_H

#include <stdint.h>

#include "worker/exchange.h"

/* Open (or reopen, after SIGUSR1 or when the configured path changed) the
 * access log of the current table; "off" closes it, "stderr" uses fd 2.
 * force reopens a file even if its path did not change. */
void ks_accesslog_open(struct ks_worker *w, bool force);
void ks_accesslog_close(struct ks_worker *w);

/* The line of one request.  x may be NULL (a head that could not be
 * read); bytes_in/out are what the request took from and gave to the
 * client. */
void ks_accesslog_write(struct ks_worker *w, const struct ks_conn *c, const struct ks_request *r,
                        const struct ks_exchange *x, uint64_t bytes_in, uint64_t bytes_out);

#endif
