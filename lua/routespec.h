/*
 * routespec.h: a runtime route, as it travels from where it is asked for
 * (router:add_route at request time, the admin API) to the master, which
 * checks it, keeps it and publishes it in the route table.
 *
 * On the control socket it is one line, "route-add " or "route-del "
 * followed by key=value pairs joined by '&', where a value escapes '%',
 * '&', '=' and bytes outside 0x21..0x7e as %XX (patterns stay readable).
 * Keys: tenant, id, method, pattern, upstream, handler, strip, timeout
 * (milliseconds), h (a header "name:value", repeated) and deadline (the
 * CLOCK_MONOTONIC millisecond at which the requester stops waiting for
 * the verdict: the master refuses a change it reads too late, so that a
 * request answered "no answer" is not applied behind its back).
 */
#ifndef KS_LUA_ROUTESPEC_H
#define KS_LUA_ROUTESPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/router.h"

#define KS_SPEC_NAME_MAX 65
#define KS_SPEC_HEADERS_MAX 16
#define KS_SPEC_HEADER_BYTES 2048
#define KS_SPEC_LINE_MAX 4000       /* fits the control socket's command line */

struct ks_route_spec {
    char tenant[KS_SPEC_NAME_MAX];
    char id[KS_ROUTE_ID_MAX];           /* route-del: the route; route-add: "" */
    char method[KS_METHOD_MAX];
    char pattern[KS_ROUTE_PATTERN_MAX + 1];
    char upstream[KS_SPEC_NAME_MAX];    /* "" = the tenant's balancing */
    char handler[KS_SPEC_NAME_MAX];     /* a named Lua handler; "" = proxy */
    char strip[KS_ROUTE_PATTERN_MAX + 1]; /* prefix removed before proxying; "" = none */
    int64_t timeout_ms;                 /* 0 = the upstream's */
    int64_t deadline_ms;                /* decoded only: the requester's deadline, 0 = none */
    size_t nheaders;
    size_t headers_len;
    char headers[KS_SPEC_HEADER_BYTES]; /* name\0value\0 ... */
};

/* Add a header sent upstream; 0, or -1 with a reason (bad name or value,
 * too many). */
int ks_route_spec_add_header(struct ks_route_spec *s, const char *name, const char *value,
                             char *err, size_t errlen);
/* Point names[2i], names[2i+1] at header i's name and value (room for
 * 2 * KS_SPEC_HEADERS_MAX). */
void ks_route_spec_headers(const struct ks_route_spec *s, const char **out);

/* The literal part of a pattern before its first {param} or "*", without a
 * trailing "/": what strip_prefix = true removes ("/api/v1/\*" -> "/api/v1"). */
void ks_route_literal_prefix(const char *pattern, char *out, size_t cap);

/* "route-add ..." / "route-del ..." with the requester's deadline
 * (ks_now_ms() clock; 0 = none): 0, or -1 when it does not fit. */
int ks_route_spec_encode(const struct ks_route_spec *s, bool del, int64_t deadline_ms, char *out,
                         size_t cap);
/* Parse the key=value part (after the command word); 0, or -1 with a reason. */
int ks_route_spec_decode(const char *form, struct ks_route_spec *s, char *err, size_t errlen);

#endif
