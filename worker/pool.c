/*
 * pool.c: the per-worker upstream keep-alive pool (see pool.h).
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/pool.h"

static void close_list(struct ks_pool_list *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        close(l->conns[i].fd);
    l->n = 0;
}

static bool same_upstream(const struct ks_pool_list *l, const struct ks_t_upstream *u)
{
    return l->id == u->id && l->addr_len == u->addr.len &&
           memcmp(&l->addr, &u->addr.ss, u->addr.len) == 0;
}

int ks_pool_sync(struct ks_pool *p, const struct ks_table *t)
{
    const struct ks_t_upstream *ups = ks_t_upstreams(t);
    size_t nslots = 0;
    for (uint32_t i = 0; i < t->nupstreams; i++)
        nslots += ups[i].keepalive > 0 ? (size_t)ups[i].keepalive : 0;
    struct ks_pool_list *lists = calloc(t->nupstreams ? t->nupstreams : 1, sizeof(*lists));
    struct ks_pool_conn *slots = calloc(nslots ? nslots : 1, sizeof(*slots));
    if (lists == NULL || slots == NULL) {
        free(lists);
        free(slots);
        ks_pool_free(p);
        return -1;
    }
    size_t at = 0;
    for (uint32_t i = 0; i < t->nupstreams; i++) {
        struct ks_pool_list *l = &lists[i];
        l->id = ups[i].id;
        memcpy(&l->addr, &ups[i].addr.ss, ups[i].addr.len);
        l->addr_len = ups[i].addr.len;
        l->cap = ups[i].keepalive > 0 ? (uint32_t)ups[i].keepalive : 0;
        l->max_idle_ms = ups[i].pool_idle_ms;
        l->conns = slots + at;
        at += l->cap;
        /* usually the upstream kept its index; else look for it */
        struct ks_pool_list *old = NULL;
        if (i < p->nlists && same_upstream(&p->lists[i], &ups[i]))
            old = &p->lists[i];
        for (uint32_t k = 0; old == NULL && k < p->nlists; k++)
            if (same_upstream(&p->lists[k], &ups[i]))
                old = &p->lists[k];
        if (old == NULL)
            continue;
        /* keep the most recent ones (the top of the stack) */
        uint32_t keep = old->n < l->cap ? old->n : l->cap;
        memcpy(l->conns, old->conns + (old->n - keep), keep * sizeof(*l->conns));
        l->n = keep;
        old->n -= keep;
        close_list(old);
    }
    for (uint32_t k = 0; k < p->nlists; k++)
        close_list(&p->lists[k]);
    free(p->lists);
    free(p->slots);
    p->lists = lists;
    p->slots = slots;
    p->nlists = t->nupstreams;
    return 0;
}

int ks_pool_take(struct ks_pool *p, uint32_t u, int64_t now_ms, int64_t *idle_ms)
{
    if (u >= p->nlists)
        return -1;
    struct ks_pool_list *l = &p->lists[u];
    if (l->n == 0)
        return -1;
    struct ks_pool_conn c = l->conns[--l->n];
    if (now_ms - c.idle_since_ms > l->max_idle_ms) {
        /* the newest is too old, so are all below it */
        close(c.fd);
        close_list(l);
        return -1;
    }
    *idle_ms = now_ms - c.idle_since_ms;
    return c.fd;
}

bool ks_pool_put(struct ks_pool *p, uint32_t u, int fd, int64_t now_ms)
{
    if (u >= p->nlists || p->lists[u].n >= p->lists[u].cap) {
        close(fd);
        return false;
    }
    struct ks_pool_list *l = &p->lists[u];
    l->conns[l->n++] = (struct ks_pool_conn){ .fd = fd, .idle_since_ms = now_ms };
    return true;
}

uint32_t ks_pool_shed(struct ks_pool *p)
{
    uint32_t n = 0;
    for (uint32_t u = 0; u < p->nlists; u++) {
        n += p->lists[u].n;
        close_list(&p->lists[u]);
    }
    return n;
}

void ks_pool_sweep(struct ks_pool *p, int64_t now_ms)
{
    for (uint32_t u = 0; u < p->nlists; u++) {
        struct ks_pool_list *l = &p->lists[u];
        /* the oldest are at the bottom */
        uint32_t expired = 0;
        while (expired < l->n && now_ms - l->conns[expired].idle_since_ms > l->max_idle_ms)
            close(l->conns[expired++].fd);
        if (expired > 0) {
            memmove(l->conns, l->conns + expired, (l->n - expired) * sizeof(*l->conns));
            l->n -= expired;
        }
    }
}

void ks_pool_free(struct ks_pool *p)
{
    for (uint32_t k = 0; k < p->nlists; k++)
        close_list(&p->lists[k]);
    free(p->lists);
    free(p->slots);
    p->lists = NULL;
    p->slots = NULL;
    p->nlists = 0;
}
