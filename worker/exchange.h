/*
 * exchange.h: one request's journey through a worker, shared by routing,
 * Lua and the proxy.
 *
 *   worker.c   reads the head, answers admin paths, resolves the tenant
 *   lua/       (tenants with a script) runs middleware and handlers; a
 *              middleware's next() or an unmatched route calls the proxy
 *   proxy.c    ks_proxy_forward(): picks an upstream (balance.h), sends
 *              the request with the edits below, streams the response back,
 *              calling on_response with the upstream's head first
 *
 * Everything here lives for one request; strings point into the request,
 * the route table or the exchange's own arena-like buffers.
 */
#ifndef KS_EXCHANGE_H
#define KS_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/conn.h"
#include "worker/http.h"

struct ks_body;

/* A header change Lua or a route asks for: value NULL deletes. */
struct ks_header_edit {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    bool append;                /* one more line besides the edit before it
                                 * (a list of values), not instead of it */
};

/* The upstream's response head, as on_response may edit it. */
struct ks_response_head {
    int status;
    struct ks_header *headers;
    size_t nheaders;
    struct ks_header_edit *edits;   /* applied when the head is sent */
    size_t nedits, max_edits;
    const char *why;                /* set by a failing on_response: the 500's reason */
};

struct ks_exchange {
    struct ks_worker *w;
    struct ks_conn *c;
    struct ks_request *r;
    uint32_t tenant;                /* index into the table's tenants */

    /* what is sent upstream; set by routing and Lua before the proxy runs */
    const char *upstream_path;      /* path+query to send; NULL = computed from the request */
    size_t upstream_path_len;
    uint32_t upstream;              /* forced upstream (route `upstream =`) or KS_NONE */
    int64_t timeout_ms;             /* response timeout override, 0 = the upstream's */
    struct ks_header_edit *edits;   /* request header edits, in order */
    size_t nedits, max_edits;
    /* a body already read whole (Lua req:body()); the proxy sends it
     * instead of streaming from the client */
    const char *body;
    size_t body_len;
    bool body_read;

    /* called with the upstream's response head before it goes to the
     * client (router:on_response); returns 0, or -1 to answer 500.  It may
     * change the status (200..599; 204, 304 and 205 drop the upstream's body,
     * other values are answered 500), add edits (the proxy provides
     * max_edits slots) and shorten nheaders. */
    int (*on_response)(struct ks_exchange *x, struct ks_response_head *h);
    void *on_response_arg;

    /* outcome, for the access log and counters */
    int status;                     /* status sent to the client */
    bool responded;                 /* a response head was written */
    bool close;                     /* close the connection afterwards */
    const char *route;              /* matched route pattern, or NULL */
    const char *upstream_name;      /* upstream used, or NULL */
    int upstream_status;
    int64_t upstream_us;
    const char *error;              /* short reason for an error status */

    /* set by worker.c's routing for the proxy (proxy data path) */
    struct ks_body *in;             /* the client's request body (body.h) */
    const char *match_path;         /* normalised path the tenant was chosen by */
    size_t match_path_len;
    size_t base_len;                /* the tenant's base path in match_path (0 for "/") */
    uint64_t tunnel_in;             /* bytes the client sent through a 101 tunnel */
};

/* Forward x to an upstream and relay the answer (proxy.c).  Returns 0 when
 * the connection can continue, -1 when it must be closed. */
int ks_proxy_forward(struct ks_exchange *x);

#endif
