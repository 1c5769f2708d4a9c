/*
 * pool.h: a worker's idle keep-alive connections to its upstreams.
 *
 * One list per upstream of the current route table, indexed like the
 * table's upstreams, so a lookup is an array access.  Each list is a
 * stack of at most `keepalive` descriptors (the most recently used on top:
 * it is the warmest and the least likely to have been closed by the
 * upstream), each with the time it went idle.  When a reload publishes a
 * new table, ks_pool_sync() carries the connections of every upstream
 * that kept its id and address over to the new lists and closes the rest.
 * Process-private: no locking.
 */
#ifndef KS_POOL_H
#define KS_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "shm/table.h"

struct ks_pool_conn {
    int fd;
    int64_t idle_since_ms;
};

struct ks_pool_list {
    uint64_t id;                    /* the upstream's stable id */
    struct sockaddr_storage addr;   /* and where it connects */
    socklen_t addr_len;
    struct ks_pool_conn *conns;     /* into the pool's slots */
    uint32_t n, cap;
    int64_t max_idle_ms;            /* pool_idle_timeout */
};

struct ks_pool {
    struct ks_pool_list *lists;
    uint32_t nlists;
    struct ks_pool_conn *slots;
};

/* Rebuild the lists for table t, keeping the connections that still
 * apply.  Returns 0, or -1 when out of memory (the pool is then empty). */
int ks_pool_sync(struct ks_pool *p, const struct ks_table *t);
/* An idle connection to upstream u (table index), or -1; *idle_ms: how
 * long it was idle.  Connections idle for longer than the upstream's
 * pool_idle_timeout are closed. */
int ks_pool_take(struct ks_pool *p, uint32_t u, int64_t now_ms, int64_t *idle_ms);
/* Keep fd for reuse; false (fd closed) when the list is full or off. */
bool ks_pool_put(struct ks_pool *p, uint32_t u, int fd, int64_t now_ms);
/* Close every idle connection (out of descriptors: they are only a
 * cache); returns how many were closed. */
uint32_t ks_pool_shed(struct ks_pool *p);
/* Close every connection idle for too long (the worker's idle tick). */
void ks_pool_sweep(struct ks_pool *p, int64_t now_ms);
void ks_pool_free(struct ks_pool *p);

#endif
