/*
 * reqctx.c: the request arena, and ending a request from inside Lua (see
 * reqctx.h).
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "lua/api.h"
#include "lua/reqctx.h"

#define ARENA_BLOCK 16384
#define ARENA_MAX (4u << 20)

/* ---- the request arena ------------------------------------------------------------ */

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    char data[];
};

struct ks_lua_arena {
    struct arena_block *head;       /* current block; older ones behind it */
    size_t total;
};

struct ks_lua_arena *ks_lua_arena_new(void)
{
    return calloc(1, sizeof(struct ks_lua_arena));
}

/* Keep one block for the next request; free the rest. */
void ks_lua_arena_reset(struct ks_lua_arena *a)
{
    if (a->head == NULL)
        return;
    struct arena_block *b = a->head->next;
    while (b != NULL) {
        struct arena_block *n = b->next;
        free(b);
        b = n;
    }
    if (a->head->cap > ARENA_BLOCK) {
        free(a->head);
        a->head = NULL;
        a->total = 0;
        return;
    }
    a->head->next = NULL;
    a->head->used = 0;
    a->total = a->head->cap;
}

void ks_lua_arena_free(struct ks_lua_arena *a)
{
    if (a == NULL)
        return;
    ks_lua_arena_reset(a);
    free(a->head);
    free(a);
}

/* n + 1 bytes of the request arena. */
/* Like ks_lua_arena_alloc, for C outside Lua: NULL instead of an error. */
static char *arena_take(struct ks_lua_arena *a, size_t n)
{
    if (a->head == NULL || a->head->used + n + 1 > a->head->cap) {
        size_t cap = n + 1 > ARENA_BLOCK ? n + 1 : ARENA_BLOCK;
        struct arena_block *b = a->total + cap <= ARENA_MAX ? malloc(sizeof(*b) + cap) : NULL;
        if (b == NULL)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    char *d = a->head->data + a->head->used;
    a->head->used += n + 1;
    return d;
}

char *ks_lua_arena_alloc(lua_State *L, struct ks_lua_req *q, size_t n)
{
    char *d = arena_take(q->arena, n);
    if (d == NULL)
        luaL_error(L, "too much header and path data for one request");
    return d;
}

char *ks_lua_arena_strdup(struct ks_lua_arena *a, const char *s)
{
    size_t n = strlen(s);
    char *d = arena_take(a, n);
    if (d != NULL)
        memcpy(d, s, n + 1);
    return d;
}

char *ks_lua_arena_copy(lua_State *L, struct ks_lua_req *q, const char *s, size_t n)
{
    char *d = ks_lua_arena_alloc(L, q, n);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- errors ------------------------------------------------------------------------ */

int ks_lua_abort(lua_State *L, struct ks_lua_req *q, int status, const char *why)
{
    q->abort_status = status;
    q->abort_why = why;
    return luaL_error(L, "%s", why);
}
