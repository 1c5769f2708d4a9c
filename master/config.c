/*
 * config.c: keystone.yaml -> struct ks_config (see config.h and
 * keystone.yaml(5)).
 *
 * Three passes over one file:
 *
 *   1. yamltree.c turns libyaml's events into a node tree, with caps on
 *      size, depth and node count enforced while streaming;
 *   2. walk_map() walks the tree against one table of typed keys per
 *      section (struct ks_key) and fills the structs, recording where each
 *      field was set so that later checks can point at the right line;
 *   3. validate() resolves inheritance (health, Lua limits) and checks
 *      what involves more than one key.
 *
 * Every problem is collected; the config is refused if there is any.  The
 * tables are the schema: a key alias is one more row with the same offset,
 * and a key whose value does not fit a generic type gets a KT_CUSTOM
 * handler.  The compatibility dialect (COMPAT.md) is meant to be added that
 * way, as rows in these tables, without touching the walker.
 */
/* <config.h>, not "config.h": the quoted form would find master/config.h
 * first, since it searches this file's directory before -I. */
#include <config.h>

#include <ctype.h>
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>

#include "keystoned/util.h"
#include "master/config.h"
#include "master/luacheck.h"
#include "master/yamltree.h"

/* A file this large is refused before it is parsed, whatever
 * limits.max_config_size says (that key is only known after parsing). */
#define KS_CONFIG_SIZE_CEILING (16u << 20)
#define KS_CONFIG_MAX_ERRORS 100
#define KS_LUA_SCRIPT_MAX (1u << 20)
#define KS_MAX_KEYS 64

#define MS_S 1000LL
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)
#define MS_D (24 * MS_H)
/* a probe's deadline when none is written: this, or half the interval
 * when that is shorter (health_resolve) */
#define HEALTH_TIMEOUT_DEFAULT_MS (2 * MS_S)
#define KB (1LL << 10)
#define MB (1LL << 20)
#define GB (1LL << 30)

/* ---- diagnostics ------------------------------------------------------- */

void ks_diag_add(struct ks_diag *d, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    msg = malloc((size_t)n + 1);
    if (msg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 8;
        char **nm = realloc(d->msgs, ncap * sizeof(*nm));

        if (nm == NULL) {
            free(msg);
            return;
        }
        d->msgs = nm;
        d->cap = ncap;
    }
    d->msgs[d->n++] = msg;
}

void ks_diag_free(struct ks_diag *d)
{
    size_t i;

    for (i = 0; i < d->n; i++)
        free(d->msgs[i]);
    free(d->msgs);
    d->msgs = NULL;
    d->n = d->cap = 0;
}

/* ---- arena --------------------------------------------------------------- */

/* Everything of one config comes from one arena, so that a config built
 * for a reload that fails validation is thrown away in one call, and the
 * structs never need per-field ownership rules. */
struct ks_chunk {
    struct ks_chunk *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

struct ks_arena {
    struct ks_chunk *head;
};

#define ARENA_CHUNK 16384

static struct ks_arena *arena_new(void)
{
    return calloc(1, sizeof(struct ks_arena));
}

static void arena_free(struct ks_arena *a)
{
    struct ks_chunk *c, *next;

    if (a == NULL)
        return;
    for (c = a->head; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

/* Zeroed memory, aligned for anything; NULL only when out of memory. */
static void *arena_alloc(struct ks_arena *a, size_t n)
{
    size_t al = alignof(max_align_t);
    struct ks_chunk *c = a->head;
    void *p;

    n = (n + al - 1) & ~(al - 1);
    if (n == 0)
        n = al;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;

        c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->used = 0;
        c->cap = cap;
        /* A big block gets its own chunk behind the current one, so the
         * space left in the current chunk stays usable. */
        if (cap != ARENA_CHUNK && a->head != NULL) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static char *arena_strndup(struct ks_arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static char *arena_strdup(struct ks_arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

/* ---- the loader ------------------------------------------------------------ */

/* Where a field was set: lets cross-field checks point at the key that
 * matters.  Keyed by the field's address. */
struct loc {
    const void *addr;
    int line, col;
    const char *path;
    bool failed;                /* the key was there, its value refused */
};

/* Errors are kept until the end of the load and then handed out in file
 * order: the walk and the cross-field checks find them in another. */
struct kerr {
    int line, col;
    size_t seq;
    char *msg;
};

struct ks_load {
    struct ks_config *cfg;
    struct ks_arena *arena;     /* the config's */
    struct ks_arena *scratch;   /* this load's, freed at its end */
    struct ks_diag *diag;
    const char *file;
    size_t nerrs;
    struct kerr *errs;
    bool oom;
    struct loc *locs;           /* open addressing, cap a power of two */
    size_t nlocs, loccap;
    unsigned flags;             /* KS_CONFIG_START, KS_CONFIG_FOREGROUND */
};

struct kpath {
    char s[256];
    size_t len;
};

static size_t kp_key(struct kpath *p, const char *name)
{
    size_t old = p->len, pos = p->len;

    ks_appendf(p->s, sizeof(p->s), &pos, "%s%s", old > 0 ? "." : "", name);
    p->len = pos;
    return old;
}

static size_t kp_idx(struct kpath *p, size_t i)
{
    size_t old = p->len, pos = p->len;

    ks_appendf(p->s, sizeof(p->s), &pos, "[%zu]", i);
    p->len = pos;
    return old;
}

static void kp_pop(struct kpath *p, size_t old)
{
    p->len = old;
    p->s[old] = '\0';
}

static void verr(struct ks_load *ld, int line, int col, const char *path,
                 const char *fmt, va_list ap)
{
    char msg[1024], full[1400];
    struct kerr *e;

    if (ld->nerrs >= KS_CONFIG_MAX_ERRORS) {
        ld->nerrs++;
        return;
    }
    if (ld->errs == NULL &&
        (ld->errs = calloc(KS_CONFIG_MAX_ERRORS, sizeof(*ld->errs))) == NULL) {
        ld->nerrs++;
        ks_diag_add(ld->diag, "%s: out of memory", ld->file);
        return;
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (line > 0 && path != NULL && path[0] != '\0')
        snprintf(full, sizeof(full), "%s:%d:%d: %s: %s", ld->file, line, col, path, msg);
    else if (line > 0)
        snprintf(full, sizeof(full), "%s:%d:%d: %s", ld->file, line, col, msg);
    else if (path != NULL && path[0] != '\0')
        snprintf(full, sizeof(full), "%s: %s: %s", ld->file, path, msg);
    else
        snprintf(full, sizeof(full), "%s: %s", ld->file, msg);
    e = &ld->errs[ld->nerrs];
    e->line = line;
    e->col = col;
    e->seq = ld->nerrs;
    e->msg = strdup(full);
    ld->nerrs++;
}

static int kerr_cmp(const void *a, const void *b)
{
    const struct kerr *x = a, *y = b;

    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Hand the collected errors to the caller, in file order (errors about
 * the file as a whole, line 0, first). */
static void flush_errors(struct ks_load *ld)
{
    size_t n = ld->nerrs < KS_CONFIG_MAX_ERRORS ? ld->nerrs : KS_CONFIG_MAX_ERRORS, i;

    if (ld->errs == NULL)
        return;
    qsort(ld->errs, n, sizeof(*ld->errs), kerr_cmp);
    for (i = 0; i < n; i++) {
        if (ld->errs[i].msg != NULL)
            ks_diag_add(ld->diag, "%s", ld->errs[i].msg);
        else
            ks_diag_add(ld->diag, "%s: out of memory", ld->file);
        free(ld->errs[i].msg);
    }
    if (ld->nerrs > KS_CONFIG_MAX_ERRORS)
        ks_diag_add(ld->diag, "%s: too many errors (%zu), only the first %d are shown",
                    ld->file, ld->nerrs, KS_CONFIG_MAX_ERRORS);
    free(ld->errs);
    ld->errs = NULL;
}

static void err_at(struct ks_load *ld, int line, int col, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void err_at(struct ks_load *ld, int line, int col, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(ld, line, col, path, fmt, ap);
    va_end(ap);
}

static void err_node(struct ks_load *ld, const struct ks_ynode *n, const struct kpath *p,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void err_node(struct ks_load *ld, const struct ks_ynode *n, const struct kpath *p,
                     const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(ld, n ? n->line : 0, n ? n->col : 0, p->s, fmt, ap);
    va_end(ap);
}

static void oom(struct ks_load *ld)
{
    if (!ld->oom)
        err_at(ld, 0, 0, NULL, "out of memory");
    ld->oom = true;
}

static size_t loc_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;

    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static void loc_put(struct ks_load *ld, const void *addr, int line, int col, const char *path,
                    bool failed)
{
    size_t i;

    if (ld->nlocs * 2 >= ld->loccap) {
        size_t ncap = ld->loccap ? ld->loccap * 2 : 256, j;
        struct loc *nl = calloc(ncap, sizeof(*nl));

        if (nl == NULL) {
            oom(ld);
            return;
        }
        for (j = 0; j < ld->loccap; j++) {
            if (ld->locs[j].addr == NULL)
                continue;
            for (i = loc_hash(ld->locs[j].addr) & (ncap - 1); nl[i].addr != NULL;
                 i = (i + 1) & (ncap - 1))
                ;
            nl[i] = ld->locs[j];
        }
        free(ld->locs);
        ld->locs = nl;
        ld->loccap = ncap;
    }
    for (i = loc_hash(addr) & (ld->loccap - 1); ld->locs[i].addr != NULL;
         i = (i + 1) & (ld->loccap - 1))
        if (ld->locs[i].addr == addr)
            break;
    if (ld->locs[i].addr == NULL)
        ld->nlocs++;
    ld->locs[i].addr = addr;
    ld->locs[i].line = line;
    ld->locs[i].col = col;
    ld->locs[i].failed = failed;
    ld->locs[i].path = arena_strdup(ld->scratch, path);
    if (ld->locs[i].path == NULL)
        ld->locs[i].path = "";
}

static const struct loc *loc_get(const struct ks_load *ld, const void *addr)
{
    size_t i;

    if (ld->loccap == 0)
        return NULL;
    for (i = loc_hash(addr) & (ld->loccap - 1); ld->locs[i].addr != NULL;
         i = (i + 1) & (ld->loccap - 1))
        if (ld->locs[i].addr == addr)
            return &ld->locs[i];
    return NULL;
}

/* Whether the file gave field a or b (b may be NULL) a value that was
 * refused: a cross-field check then skips them, or it would blame the
 * default left in the refused one's place. */
static bool refused(const struct ks_load *ld, const void *a, const void *b)
{
    const struct loc *la = loc_get(ld, a), *lb = b != NULL ? loc_get(ld, b) : NULL;

    return (la != NULL && la->failed) || (lb != NULL && lb->failed);
}

/* Cross-field error: at the first of the candidate fields that was set in
 * the file, else at the fallback place. */
struct where {
    int line, col;
    const char *path;
};

static struct where where_of(const struct ks_load *ld, const void *a, const void *b,
                             int line, int col, const char *path)
{
    const struct loc *l = NULL;
    struct where w = { line, col, path };

    if (a != NULL)
        l = loc_get(ld, a);
    if (l == NULL && b != NULL)
        l = loc_get(ld, b);
    if (l != NULL) {
        w.line = l->line;
        w.col = l->col;
        w.path = l->path;
    }
    return w;
}

static void err_w(struct ks_load *ld, struct where w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err_w(struct ks_load *ld, struct where w, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr(ld, w.line, w.col, w.path, fmt, ap);
    va_end(ap);
}

/* A value as it appears in a message: quoted, escaped, shortened. */
static const char *quote(char *buf, size_t cap, const char *s, size_t n)
{
    size_t pos = 0, i;

    ks_appendf(buf, cap, &pos, "\"");
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (pos + 8 >= cap || i >= 60) {
            ks_appendf(buf, cap, &pos, "...");
            break;
        }
        if (c == '"' || c == '\\')
            ks_appendf(buf, cap, &pos, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            ks_appendf(buf, cap, &pos, "\\x%02x", c);
        else
            ks_appendf(buf, cap, &pos, "%c", c);
    }
    ks_appendf(buf, cap, &pos, "\"");
    return buf;
}

/* What a node is, for "expected X, got Y". */
static const char *describe(char *buf, size_t cap, const struct ks_ynode *n)
{
    if (n == NULL || ks_ynode_is_null(n) || n->type != KS_YSCALAR)
        return ks_ynode_kind(n);
    return quote(buf, cap, n->str, n->len);
}

static const char *fmt_duration(char *buf, size_t cap, int64_t ms)
{
    if (ms != 0 && ms % MS_H == 0)
        snprintf(buf, cap, "%lldh", (long long)(ms / MS_H));
    else if (ms != 0 && ms % MS_M == 0)
        snprintf(buf, cap, "%lldm", (long long)(ms / MS_M));
    else if (ms != 0 && ms % MS_S == 0)
        snprintf(buf, cap, "%llds", (long long)(ms / MS_S));
    else
        snprintf(buf, cap, "%lldms", (long long)ms);
    return buf;
}

static const char *fmt_size(char *buf, size_t cap, uint64_t n)
{
    if (n != 0 && n % GB == 0)
        snprintf(buf, cap, "%lluGB", (unsigned long long)(n / GB));
    else if (n != 0 && n % MB == 0)
        snprintf(buf, cap, "%lluMB", (unsigned long long)(n / MB));
    else if (n != 0 && n % KB == 0)
        snprintf(buf, cap, "%lluKB", (unsigned long long)(n / KB));
    else
        snprintf(buf, cap, "%llu", (unsigned long long)n);
    return buf;
}

/* ---- the schema: typed keys -------------------------------------------- */

enum ks_ktype {
    KT_STRING,      /* char *; check() may refuse it */
    KT_BOOL,        /* bool */
    KT_INT,         /* int, min..max */
    KT_INT64,       /* int64_t, min..max */
    KT_DURATION,    /* int64_t milliseconds, min..max */
    KT_SIZE,        /* uint64_t bytes, min..max */
    KT_ADDR,        /* struct ks_addr */
    KT_URL,         /* struct ks_url at off, char * text at off2 */
    KT_PATH,        /* char *, absolute (relative to the config file); words kept as is */
    KT_ENUM,        /* int index into words, or char * with KF_ENUM_STR */
    KT_STRLIST,     /* char ** at off, size_t count at off2 */
    KT_SECTION,     /* embedded struct described by sub */
    KT_LIST,        /* array of sub->size elements at off, size_t count at off2 */
    KT_CUSTOM,      /* fn() does it all */
};

enum {
    KF_REQUIRED = 1u << 0,
    KF_LOWER = 1u << 1,     /* strings, string lists: lower-cased first */
    KF_UNIQUE = 1u << 2,    /* string lists: no repeated entry */
    KF_ENUM_STR = 1u << 3,  /* enum stored as its (arena) name */
    /* Takes effect only at start (listeners, the shared segment, files,
     * privileges); keystone.yaml(5) says so.  The walker does not use it:
     * the master compares old and new values on reload. */
    KF_RESTART = 1u << 4,
};

struct ks_key;
struct ks_section;

/* Returns 0 when the value was taken (its place is then recorded). */
typedef int (*ks_key_fn)(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                         void *obj, struct kpath *path);
/* NULL when s is acceptable, else what is wrong with it. */
typedef const char *(*ks_check_fn)(const char *s, char *buf, size_t cap);

struct ks_key {
    const char *name;
    enum ks_ktype type;
    size_t off;
    size_t off2;
    int64_t min, max;
    const char *const *words;
    const struct ks_section *sub;
    ks_key_fn fn;
    ks_check_fn check;
    unsigned flags;
};

struct ks_section {
    const struct ks_key *keys;
    size_t nkeys;
    size_t size;                /* KT_LIST element size */
    void (*init)(struct ks_load *ld, void *obj, const struct ks_ynode *at);
    /* after the walk of one object; (line, col) is where it is */
    void (*check)(struct ks_load *ld, void *obj, int line, int col, struct kpath *path);
};

#define F(S, f) offsetof(S, f)
#define K_STR(n, S, f, chk, fl) \
    { .name = n, .type = KT_STRING, .off = F(S, f), .check = chk, .flags = fl }
#define K_BOOL(n, S, f) { .name = n, .type = KT_BOOL, .off = F(S, f) }
#define K_INT(n, S, f, lo, hi, fl) \
    { .name = n, .type = KT_INT, .off = F(S, f), .min = lo, .max = hi, .flags = fl }
#define K_INT64(n, S, f, lo, hi) \
    { .name = n, .type = KT_INT64, .off = F(S, f), .min = lo, .max = hi }
#define K_DUR(n, S, f, lo, hi) \
    { .name = n, .type = KT_DURATION, .off = F(S, f), .min = lo, .max = hi }
#define K_SIZE(n, S, f, lo, hi, fl) \
    { .name = n, .type = KT_SIZE, .off = F(S, f), .min = lo, .max = hi, .flags = fl }
#define K_ADDR(n, S, f, fl) { .name = n, .type = KT_ADDR, .off = F(S, f), .flags = fl }
#define K_PATH(n, S, f, w, fl) \
    { .name = n, .type = KT_PATH, .off = F(S, f), .words = w, .flags = fl }
#define K_ENUM(n, S, f, w, fl) \
    { .name = n, .type = KT_ENUM, .off = F(S, f), .words = w, .flags = fl }
#define K_STRLIST(n, S, f, cnt, chk, fl) \
    { .name = n, .type = KT_STRLIST, .off = F(S, f), .off2 = F(S, cnt), .check = chk, .flags = fl }
#define K_SECTION(n, S, f, s) { .name = n, .type = KT_SECTION, .off = F(S, f), .sub = &s }
#define K_LIST(n, S, f, cnt, s) \
    { .name = n, .type = KT_LIST, .off = F(S, f), .off2 = F(S, cnt), .sub = &s }
#define K_CUSTOM(n, S, f, f2, h, fl) \
    { .name = n, .type = KT_CUSTOM, .off = F(S, f), .off2 = F(S, f2), .fn = h, .flags = fl }
#define SECTION(keys, S, ini, chk) \
    { keys, KS_ARRAY_LEN(keys), sizeof(S), ini, chk }
#define CHECK_KEYS(keys) \
    _Static_assert(KS_ARRAY_LEN(keys) <= KS_MAX_KEYS, #keys " has too many keys")

/* ---- value checks (strings) --------------------------------------------- */

static bool has_ctl_or_space(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return true;
    return false;
}

static const char *check_name(const char *s, char *buf, size_t cap)
{
    size_t n = strlen(s), i;
    char q[128];

    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            break;
    if (n == 0 || n > 64 || i < n) {
        snprintf(buf, cap, "expected a name of 1 to 64 characters among A-Z a-z 0-9 . _ -, got %s",
                 quote(q, sizeof(q), s, n));
        return buf;
    }
    return NULL;
}

/* Shared by base_path and admin_base_path: a clean absolute URL path, so
 * that prefix matching in the workers cannot be fooled by "..", "//" or
 * percent-encoding. */
static const char *check_url_path(const char *s, char *buf, size_t cap)
{
    const char *seg;
    char q[128];

    if (s[0] != '/') {
        snprintf(buf, cap, "must start with \"/\", got %s", quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    if (has_ctl_or_space(s) || strpbrk(s, "%?#") != NULL) {
        snprintf(buf, cap, "must not contain spaces, control characters, %%, ? or #, got %s",
                 quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    if (strstr(s, "//") != NULL) {
        snprintf(buf, cap, "must not contain \"//\", got %s", quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    for (seg = s; seg != NULL; seg = strchr(seg + 1, '/')) {
        if (strcmp(seg, "/.") == 0 || strncmp(seg, "/./", 3) == 0 ||
            strcmp(seg, "/..") == 0 || strncmp(seg, "/../", 4) == 0) {
            snprintf(buf, cap, "must not contain \".\" or \"..\" segments, got %s",
                     quote(q, sizeof(q), s, strlen(s)));
            return buf;
        }
    }
    return NULL;
}

static const char *check_admin_base_path(const char *s, char *buf, size_t cap)
{
    char q[128];

    if (s[0] == '\0')
        return NULL;
    if (check_url_path(s, buf, cap) != NULL)
        return buf;
    if (strcmp(s, "/") == 0 || s[strlen(s) - 1] == '/') {
        snprintf(buf, cap, "must be \"\" (off) or a path like \"/admin\" without a trailing \"/\", got %s",
                 quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    return NULL;
}

static bool valid_hostname(const char *s)
{
    size_t n = strlen(s), label = 0, i;

    if (n == 0 || n > 253)
        return false;
    for (i = 0; i <= n; i++) {
        char c = s[i];

        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
        if (label == 0 && c == '-')
            return false;
        label++;
    }
    return true;
}

static const char *check_domain(const char *s, char *buf, size_t cap)
{
    char q[128];

    quote(q, sizeof(q), s, strlen(s));
    /* an IPv6 literal, bracketed as in a Host header: "[::1]" */
    size_t n = strlen(s);
    struct in6_addr a6;
    char inner[INET6_ADDRSTRLEN + 1];
    if (n > 2 && s[0] == '[' && s[n - 1] == ']') {
        if (n - 2 < sizeof(inner)) {
            memcpy(inner, s + 1, n - 2);
            inner[n - 2] = '\0';
            if (inet_pton(AF_INET6, inner, &a6) == 1)
                return NULL;
        }
        snprintf(buf, cap, "expected an IPv6 address in the brackets, got %s", q);
        return buf;
    }
    if (inet_pton(AF_INET6, s, &a6) == 1) {
        snprintf(buf, cap, "an IPv6 address is written in brackets, as in the Host header: [%s]", s);
        return buf;
    }
    if (strchr(s, ':') != NULL) {
        snprintf(buf, cap, "a domain has no port (the port of the Host header is ignored), got %s", q);
        return buf;
    }
    if (!valid_hostname(strncmp(s, "*.", 2) == 0 ? s + 2 : s)) {
        snprintf(buf, cap, "expected a host name or a \"*.suffix\" wildcard, got %s", q);
        return buf;
    }
    return NULL;
}

static const char *check_token(const char *s, char *buf, size_t cap)
{
    if (s[0] == '\0')
        return "must not be empty (leave the key out for no token)";
    if (has_ctl_or_space(s)) {
        snprintf(buf, cap, "must not contain spaces or control characters");
        return buf;
    }
    return NULL;
}

static const char *check_user(const char *s, char *buf, size_t cap)
{
    char q[128];

    if (getpwnam(s) == NULL) {
        snprintf(buf, cap, "unknown user %s", quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    return NULL;
}

static const char *check_group(const char *s, char *buf, size_t cap)
{
    char q[128];

    if (getgrnam(s) == NULL) {
        snprintf(buf, cap, "unknown group %s", quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    return NULL;
}

static const char *check_health_path(const char *s, char *buf, size_t cap)
{
    char q[128];

    if (s[0] != '\0' && (s[0] != '/' || has_ctl_or_space(s))) {
        snprintf(buf, cap, "expected \"\" (TCP check) or a path starting with \"/\", got %s",
                 quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    return NULL;
}

static const char *check_health_host(const char *s, char *buf, size_t cap)
{
    char q[128];

    if (s[0] == '\0' || has_ctl_or_space(s) || strpbrk(s, "/?#@") != NULL) {
        snprintf(buf, cap, "expected a host name for the Host header, got %s",
                 quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    return NULL;
}

static const char *check_env_name(const char *s, char *buf, size_t cap)
{
    size_t i;
    char q[128];

    for (i = 0; s[i] != '\0'; i++)
        if (!(isalpha((unsigned char)s[i]) || s[i] == '_' || (i > 0 && isdigit((unsigned char)s[i]))))
            break;
    if (i == 0 || s[i] != '\0') {
        snprintf(buf, cap, "expected an environment variable name, got %s",
                 quote(q, sizeof(q), s, strlen(s)));
        return buf;
    }
    return NULL;
}

/* Duplicate detection by sorting: (a, b) pairs tagged with where they
 * came from. */
struct dupent {
    const char *a, *b;
    size_t i, j;
};

static int dupent_cmp(const void *x, const void *y)
{
    const struct dupent *p = x, *q = y;
    int c = strcmp(p->a, q->a);

    if (c == 0)
        c = strcmp(p->b, q->b);
    if (c == 0)
        c = p->i < q->i ? -1 : p->i > q->i;
    if (c == 0)
        c = p->j < q->j ? -1 : p->j > q->j;
    return c;
}

/* ---- the walker -------------------------------------------------------- */

static void walk_map(struct ks_load *ld, const struct ks_section *sec, const struct ks_ynode *map,
                     void *obj, struct kpath *path, int line, int col);

/* The string of a scalar, or NULL after saying what was expected. */
static const char *want_scalar(struct ks_load *ld, const struct ks_ynode *v, struct kpath *p,
                               const char *expected)
{
    char d[128];

    if (v == NULL || v->type != KS_YSCALAR || ks_ynode_is_null(v)) {
        err_node(ld, v, p, "expected %s, got %s", expected, describe(d, sizeof(d), v));
        return NULL;
    }
    if (strlen(v->str) != v->len) {
        err_node(ld, v, p, "expected %s, got a value with a NUL byte", expected);
        return NULL;
    }
    return v->str;
}

static int parse_int64(const char *s, int64_t *out)
{
    const char *p = s;
    bool neg = false;
    uint64_t v = 0;

    if (*p == '-') {
        neg = true;
        p++;
    }
    if (*p < '0' || *p > '9')
        return -1;
    /* up to INT64_MAX exactly (and its negative), no further */
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (*p != '\0')
        return -1;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static int set_int(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                   void *field, struct kpath *p)
{
    char expected[96], d[128];
    const char *s;
    int64_t n;

    snprintf(expected, sizeof(expected), "an integer between %lld and %lld",
             (long long)k->min, (long long)k->max);
    if ((s = want_scalar(ld, v, p, expected)) == NULL)
        return -1;
    if (parse_int64(s, &n) < 0 || n < k->min || n > k->max) {
        err_node(ld, v, p, "expected %s, got %s", expected, describe(d, sizeof(d), v));
        return -1;
    }
    if (k->type == KT_INT)
        *(int *)field = (int)n;
    else
        *(int64_t *)field = n;
    return 0;
}

static int set_duration(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                        void *field, struct kpath *p)
{
    static const char expected[] = "a duration like \"250ms\", \"5s\" or \"2m\"";
    char d[128], lo[32], hi[32];
    const char *s;
    int64_t ms;

    if ((s = want_scalar(ld, v, p, expected)) == NULL)
        return -1;
    if (s[0] == '-') {
        err_node(ld, v, p, "durations cannot be negative, got %s", describe(d, sizeof(d), v));
        return -1;
    }
    if (ks_parse_duration(s, &ms) < 0) {
        err_node(ld, v, p, "expected %s, got %s", expected, describe(d, sizeof(d), v));
        return -1;
    }
    if (ms < k->min || ms > k->max) {
        err_node(ld, v, p, "expected a duration between %s and %s, got %s",
                 fmt_duration(lo, sizeof(lo), k->min), fmt_duration(hi, sizeof(hi), k->max),
                 describe(d, sizeof(d), v));
        return -1;
    }
    *(int64_t *)field = ms;
    return 0;
}

static int set_size(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                    void *field, struct kpath *p)
{
    static const char expected[] = "a size like \"512\", \"16KB\" or \"10MB\"";
    char d[128], lo[32], hi[32];
    const char *s;
    uint64_t n;

    if ((s = want_scalar(ld, v, p, expected)) == NULL)
        return -1;
    if (ks_parse_size(s, &n) < 0) {
        err_node(ld, v, p, "expected %s, got %s", expected, describe(d, sizeof(d), v));
        return -1;
    }
    if (n < (uint64_t)k->min || n > (uint64_t)k->max) {
        err_node(ld, v, p, "expected a size between %s and %s, got %s",
                 fmt_size(lo, sizeof(lo), (uint64_t)k->min), fmt_size(hi, sizeof(hi), (uint64_t)k->max),
                 describe(d, sizeof(d), v));
        return -1;
    }
    *(uint64_t *)field = n;
    return 0;
}

static int set_bool(struct ks_load *ld, const struct ks_ynode *v, void *field, struct kpath *p)
{
    char d[128];
    const char *s;

    if ((s = want_scalar(ld, v, p, "true or false")) == NULL)
        return -1;
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        *(bool *)field = true;
    } else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        *(bool *)field = false;
    } else {
        err_node(ld, v, p, "expected true or false, got %s", describe(d, sizeof(d), v));
        return -1;
    }
    return 0;
}

static int set_string(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                      void *field, struct kpath *p)
{
    char buf[512];
    const char *s, *why;
    char *copy;
    size_t i;

    if ((s = want_scalar(ld, v, p, "a string")) == NULL)
        return -1;
    copy = arena_strdup(ld->arena, s);
    if (copy == NULL) {
        oom(ld);
        return -1;
    }
    if (k->flags & KF_LOWER)
        for (i = 0; copy[i] != '\0'; i++)
            copy[i] = (char)tolower((unsigned char)copy[i]);
    if (k->check != NULL && (why = k->check(copy, buf, sizeof(buf))) != NULL) {
        err_node(ld, v, p, "%s", why);
        return -1;
    }
    *(char **)field = copy;
    return 0;
}

static int set_addr(struct ks_load *ld, const struct ks_ynode *v, void *field, struct kpath *p)
{
    static const char expected[] = "an address like \"127.0.0.1:8080\", \":8080\" or \"[::1]:8080\"";
    char d[128], why[160];
    const char *s;

    if ((s = want_scalar(ld, v, p, expected)) == NULL)
        return -1;
    if (ks_parse_addr(s, field, why, sizeof(why)) < 0) {
        err_node(ld, v, p, "expected %s, got %s (%s)", expected, describe(d, sizeof(d), v), why);
        return -1;
    }
    return 0;
}

static int set_url(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                   void *obj, struct kpath *p)
{
    static const char expected[] = "an http:// URL with host and port";
    struct ks_url *u = (struct ks_url *)((char *)obj + k->off);
    char d[128], why[160];
    const char *s;

    if ((s = want_scalar(ld, v, p, expected)) == NULL)
        return -1;
    if (ks_parse_url(s, u, why, sizeof(why)) < 0) {
        if (strncmp(why, "unsupported scheme", 18) == 0 || strncmp(why, "missing \"http", 13) == 0)
            err_node(ld, v, p, "expected %s, got %s", expected, describe(d, sizeof(d), v));
        else
            err_node(ld, v, p, "expected %s, got %s (%s)", expected, describe(d, sizeof(d), v), why);
        return -1;
    }
    if (strcmp(u->scheme, "http") != 0) {
        err_node(ld, v, p, "https upstreams are not supported yet, got %s (use http://)",
                 describe(d, sizeof(d), v));
        memset(u, 0, sizeof(*u));
        return -1;
    }
    if ((*(char **)((char *)obj + k->off2) = arena_strdup(ld->arena, s)) == NULL) {
        oom(ld);
        return -1;
    }
    return 0;
}

static bool in_words(const char *const *w, const char *s)
{
    for (; w != NULL && *w != NULL; w++)
        if (strcmp(*w, s) == 0)
            return true;
    return false;
}

static int set_path(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                    void *field, struct kpath *p)
{
    char *joined;
    const char *s;

    if ((s = want_scalar(ld, v, p, "a file name")) == NULL)
        return -1;
    if (s[0] == '\0') {
        err_node(ld, v, p, "expected a file name, got \"\"");
        return -1;
    }
    if (in_words(k->words, s)) {
        *(char **)field = arena_strdup(ld->arena, s);
        return 0;
    }
    joined = ks_path_join(ld->cfg->dir, s);
    if (joined == NULL) {
        oom(ld);
        return -1;
    }
    *(char **)field = arena_strdup(ld->arena, joined);
    free(joined);
    return 0;
}

static int set_enum(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                    void *field, struct kpath *p)
{
    char expected[256], d[128];
    size_t pos = 0, i;
    const char *s;

    ks_appendf(expected, sizeof(expected), &pos, "one of");
    for (i = 0; k->words[i] != NULL; i++)
        ks_appendf(expected, sizeof(expected), &pos, "%s \"%s\"", i > 0 ? "," : "", k->words[i]);
    if ((s = want_scalar(ld, v, p, expected)) == NULL)
        return -1;
    for (i = 0; k->words[i] != NULL; i++)
        if (strcmp(k->words[i], s) == 0)
            break;
    if (k->words[i] == NULL) {
        err_node(ld, v, p, "expected %s, got %s", expected, describe(d, sizeof(d), v));
        return -1;
    }
    if (k->flags & KF_ENUM_STR)
        *(char **)field = arena_strdup(ld->arena, k->words[i]);
    else
        *(int *)field = (int)i;
    return 0;
}

static int set_strlist(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                       void *obj, struct kpath *p)
{
    char **list;
    size_t *from;       /* the item each accepted entry came from */
    size_t i, j, n = 0;
    bool refused = false;
    char d[128];

    if (ks_ynode_is_null(v)) {
        *(char ***)((char *)obj + k->off) = NULL;
        *(size_t *)((char *)obj + k->off2) = 0;
        return 0;
    }
    if (v->type != KS_YSEQ) {
        err_node(ld, v, p, "expected a list of strings, got %s", describe(d, sizeof(d), v));
        return -1;
    }
    list = arena_alloc(ld->arena, (v->n + 1) * sizeof(*list));
    from = arena_alloc(ld->scratch, (v->n + 1) * sizeof(*from));
    if (list == NULL || from == NULL) {
        oom(ld);
        return -1;
    }
    for (i = 0; i < v->n; i++) {
        size_t old = kp_idx(p, i);
        struct ks_key item = *k;
        char *s = NULL;

        item.type = KT_STRING;
        if (set_string(ld, &item, v->items[i], &s, p) == 0) {
            from[n] = i;
            list[n++] = s;
        } else {
            refused = true;
        }
        kp_pop(p, old);
    }
    if ((k->flags & KF_UNIQUE) && n > 1) {
        struct dupent *dv = arena_alloc(ld->scratch, n * sizeof(*dv));
        size_t m = 0;

        if (dv == NULL) {
            oom(ld);
            return -1;
        }
        /* Sorted, so that a long list costs n log n, not n^2. */
        for (i = 0; i < n; i++)
            dv[i] = (struct dupent){ list[i], "", i, 0 };
        qsort(dv, n, sizeof(*dv), dupent_cmp);
        for (i = 0; i < n; i = j) {
            for (j = i + 1; j < n && strcmp(dv[i].a, dv[j].a) == 0; j++) {
                size_t old = kp_idx(p, from[dv[j].i]);

                err_node(ld, v->items[from[dv[j].i]], p, "%s is listed twice (first at line %d)",
                         quote(d, sizeof(d), dv[j].a, strlen(dv[j].a)),
                         v->items[from[dv[i].i]]->line);
                kp_pop(p, old);
                list[dv[j].i] = NULL;
            }
        }
        for (i = 0; i < n; i++)
            if (list[i] != NULL)
                list[m++] = list[i];
        n = m;
    }
    *(char ***)((char *)obj + k->off) = list;
    *(size_t *)((char *)obj + k->off2) = n;
    return refused ? -1 : 0;   /* the accepted items are kept all the same */
}

static int set_list(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                    void *obj, struct kpath *p)
{
    const struct ks_section *sub = k->sub;
    char *elems;
    size_t i, n = 0;
    char d[128];

    if (ks_ynode_is_null(v)) {
        *(void **)((char *)obj + k->off) = NULL;
        *(size_t *)((char *)obj + k->off2) = 0;
        return 0;
    }
    if (v->type != KS_YSEQ) {
        err_node(ld, v, p, "expected a list of mappings, got %s", describe(d, sizeof(d), v));
        return -1;
    }
    elems = arena_alloc(ld->arena, (v->n ? v->n : 1) * sub->size);
    if (elems == NULL) {
        oom(ld);
        return -1;
    }
    for (i = 0; i < v->n; i++) {
        const struct ks_ynode *it = v->items[i];
        size_t old = kp_idx(p, i);

        if (it->type != KS_YMAP) {
            err_node(ld, it, p, "expected a mapping, got %s", describe(d, sizeof(d), it));
        } else {
            /* The key path keeps the index in the file (tenants[3] is
             * the fourth one written) even if one before was refused. */
            void *e = elems + n * sub->size;

            if (sub->init != NULL)
                sub->init(ld, e, it);
            walk_map(ld, sub, it, e, p, it->line, it->col);
            n++;
        }
        kp_pop(p, old);
    }
    *(void **)((char *)obj + k->off) = elems;
    *(size_t *)((char *)obj + k->off2) = n;
    return 0;
}

static int set_value(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *key,
                     const struct ks_ynode *v, void *obj, struct kpath *p)
{
    void *field = (char *)obj + k->off;
    char d[128];
    int rc = -1;

    switch (k->type) {
    case KT_STRING:
        rc = set_string(ld, k, v, field, p);
        break;
    case KT_BOOL:
        rc = set_bool(ld, v, field, p);
        break;
    case KT_INT:
    case KT_INT64:
        rc = set_int(ld, k, v, field, p);
        break;
    case KT_DURATION:
        rc = set_duration(ld, k, v, field, p);
        break;
    case KT_SIZE:
        rc = set_size(ld, k, v, field, p);
        break;
    case KT_ADDR:
        rc = set_addr(ld, v, field, p);
        break;
    case KT_URL:
        rc = set_url(ld, k, v, obj, p);
        break;
    case KT_PATH:
        rc = set_path(ld, k, v, field, p);
        break;
    case KT_ENUM:
        rc = set_enum(ld, k, v, field, p);
        break;
    case KT_STRLIST:
        rc = set_strlist(ld, k, v, obj, p);
        break;
    case KT_SECTION:
        if (!ks_ynode_is_null(v) && v->type != KS_YMAP) {
            err_node(ld, v, p, "expected a mapping, got %s", describe(d, sizeof(d), v));
            break;
        }
        walk_map(ld, k->sub, ks_ynode_is_null(v) ? NULL : v, field, p, key->line, key->col);
        rc = 0;
        break;
    case KT_LIST:
        rc = set_list(ld, k, v, obj, p);
        break;
    case KT_CUSTOM:
        rc = k->fn(ld, k, v, obj, p);
        break;
    }
    /* An embedded section shares its address with its first field: only
     * the fields are recorded, refused ones too (so that the cross-field
     * checks do not take a refused value for a missing one). */
    if (k->type != KT_SECTION) {
        /* A scalar is pointed at by its value, a collection by its key. */
        const struct ks_ynode *at = v != NULL && v->type == KS_YSCALAR ? v : key;

        loc_put(ld, field, at->line, at->col, p->s, rc != 0);
    }
    return rc;
}

static const struct ks_key *find_key(const struct ks_section *sec, const struct ks_ynode *name)
{
    size_t i;

    if (strlen(name->str) != name->len)
        return NULL;
    for (i = 0; i < sec->nkeys; i++)
        if (strcmp(sec->keys[i].name, name->str) == 0)
            return &sec->keys[i];
    return NULL;
}

static void unknown_key(struct ks_load *ld, const struct ks_section *sec,
                        const struct ks_ynode *key, struct kpath *p)
{
    const char *best = NULL, *parent = NULL;
    int bestd = 3;
    size_t i, j;

    for (i = 0; i < sec->nkeys; i++) {
        int dist = ks_edit_distance(key->str, sec->keys[i].name, 2);

        if (dist < bestd) {
            bestd = dist;
            best = sec->keys[i].name;
        }
    }
    /* A key written one level too high ("workers" at the top) is a common
     * slip: name the section it belongs to. */
    for (i = 0; best == NULL && i < sec->nkeys; i++) {
        const struct ks_key *k = &sec->keys[i];

        if (k->type != KT_SECTION)
            continue;
        for (j = 0; j < k->sub->nkeys; j++)
            if (strcmp(k->sub->keys[j].name, key->str) == 0) {
                parent = k->name;
                best = k->sub->keys[j].name;
                break;
            }
    }
    if (best != NULL)
        err_node(ld, key, p, "unknown key (did you mean \"%s%s%s\"?)", parent ? parent : "",
                 parent ? "." : "", best);
    else
        err_node(ld, key, p, "unknown key");
}

static void walk_map(struct ks_load *ld, const struct ks_section *sec, const struct ks_ynode *map,
                     void *obj, struct kpath *path, int line, int col)
{
    int seen[KS_MAX_KEYS] = { 0 };
    size_t i, j;

    for (i = 0; map != NULL && i < map->n; i++) {
        const struct ks_ypair *pr = &map->pairs[i];
        const struct ks_key *k;
        size_t old = kp_key(path, pr->key->str);

        if (pr->dup_line > 0) {
            err_node(ld, pr->key, path, "duplicate key (first at line %d)", pr->dup_line);
        } else if ((k = find_key(sec, pr->key)) == NULL) {
            unknown_key(ld, sec, pr->key, path);
        } else {
            size_t ki = (size_t)(k - sec->keys);

            /* Two spellings of one setting (an alias) in one mapping. */
            for (j = 0; j < sec->nkeys; j++)
                if (j != ki && seen[j] && sec->keys[j].off == k->off)
                    break;
            if (j < sec->nkeys) {
                err_node(ld, pr->key, path, "sets the same thing as \"%s\" (line %d)",
                         sec->keys[j].name, seen[j]);
            } else {
                seen[ki] = pr->key->line;
                set_value(ld, k, pr->key, pr->value, obj, path);
            }
        }
        kp_pop(path, old);
    }
    for (i = 0; i < sec->nkeys; i++) {
        const struct ks_key *k = &sec->keys[i];
        bool set = false;
        size_t old;

        for (j = 0; j < sec->nkeys; j++)
            if (seen[j] && sec->keys[j].off == k->off)
                set = true;
        if (set)
            continue;
        old = kp_key(path, k->name);
        if (k->flags & KF_REQUIRED)
            err_at(ld, line, col, path->s, "required key is missing");
        else if (k->type == KT_SECTION)
            /* Absent sections are walked too: their required keys and
             * their checks still apply. */
            walk_map(ld, k->sub, NULL, (char *)obj + k->off, path, line, col);
        kp_pop(path, old);
    }
    if (sec->check != NULL)
        sec->check(ld, obj, line, col, path);
}

/* ---- custom keys ----------------------------------------------------------- */

static int key_version(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                       void *obj, struct kpath *p)
{
    char d[128];
    const char *s;

    if ((s = want_scalar(ld, v, p, "1")) == NULL)
        return -1;
    if (strcmp(s, "1") != 0) {
        err_node(ld, v, p, "unsupported version %s (this keystoned reads version 1)",
                 describe(d, sizeof(d), v));
        return -1;
    }
    *(int *)((char *)obj + k->off) = 1;
    return 0;
}

/* "200-399", "200" or "2xx": the status range a health probe accepts. */
static int key_expect(struct ks_load *ld, const struct ks_key *k, const struct ks_ynode *v,
                      void *obj, struct kpath *p)
{
    static const char expected[] = "a status like \"200\", a range like \"200-399\" or a class like \"2xx\"";
    int *lo = (int *)((char *)obj + k->off), *hi = (int *)((char *)obj + k->off2);
    char d[128];
    const char *s;
    int a, b, n = 0;

    if ((s = want_scalar(ld, v, p, expected)) == NULL)
        return -1;
    if (strlen(s) == 3 && s[0] >= '1' && s[0] <= '5' && strcmp(s + 1, "xx") == 0) {
        a = (s[0] - '0') * 100;
        b = a + 99;
    } else if (sscanf(s, "%3d-%3d%n", &a, &b, &n) == 2 && (size_t)n == strlen(s) &&
               isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[n - 1]) &&
               strchr(s, ' ') == NULL && strchr(s, '+') == NULL) {
        /* a range */
    } else if (strlen(s) == 3 && isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) &&
               isdigit((unsigned char)s[2])) {
        a = b = atoi(s);
    } else {
        err_node(ld, v, p, "expected %s, got %s", expected, describe(d, sizeof(d), v));
        return -1;
    }
    if (a < 100 || b > 599 || a > b) {
        err_node(ld, v, p, "expected statuses between 100 and 599, low to high, got %s",
                 describe(d, sizeof(d), v));
        return -1;
    }
    *lo = a;
    *hi = b;
    return 0;
}

/* ---- sections: defaults and checks ------------------------------------ */

static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const words_stderr[] = { "stderr", NULL };
static const char *const words_stderr_off[] = { "stderr", "off", NULL };
static const char *const all_down_words[] = { "fail", "try_anyway", NULL };
static const char *const scheduling_words[] = { "normal", "batch", NULL };   /* enum order */

static void health_init_unset(struct ks_health_config *h)
{
    h->path = NULL;
    h->interval_ms = -1;
    h->timeout_ms = -1;
    h->rise = -1;
    h->fall = -1;
    h->expect_lo = h->expect_hi = -1;
    h->host = NULL;
    h->max_fails = -1;
    h->fail_window_ms = -1;
    h->fail_timeout_ms = -1;
}

/* A path as the kernel will find it, to tell whether two name one file:
 * the whole of it through realpath(3) when it exists, else its directory
 * (".", "..", symbolic links) and then its name. */
static void canonical_path(const char *path, char *out, size_t len)
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/');

    if (realpath(path, real) != NULL) {
        snprintf(out, len, "%s", real);
        return;
    }
    if (slash != NULL && (size_t)(slash - path) < sizeof(dir)) {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
        if (realpath(slash == path ? "/" : dir, real) != NULL) {
            int n = snprintf(out, len, "%s/%s", strcmp(real, "/") == 0 ? "" : real, slash + 1);

            if (n >= 0 && (size_t)n < len)
                return;
        }
    }
    snprintf(out, len, "%s", path);
}

/* For a start (KS_CONFIG_START): the directory of a file keystoned must
 * create or open before it serves. */
static void dir_check(struct ks_load *ld, const char *file, struct where w)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(file, '/');
    struct stat st;

    if (slash == NULL || slash == file || (size_t)(slash - file) >= sizeof(dir))
        return;
    memcpy(dir, file, (size_t)(slash - file));
    dir[slash - file] = '\0';
    if (stat(dir, &st) < 0)
        err_w(ld, w, "the directory %s %s", dir,
              errno == ENOENT ? "does not exist" : strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        err_w(ld, w, "%s is not a directory", dir);
}

/*
 * The run-time files must each have a path of their own, and none may be
 * the configuration file: the access log appended to the state file would
 * write into the mapped segment, the pid file would truncate whatever it
 * names.  Only the two logs may share a file (both are stderr by default).
 * For a start, the directories of all but the access log (the workers
 * serve without it) must exist.
 */
static void server_files_check(struct ks_load *ld, struct ks_server_config *s, int line, int col,
                               const char *path)
{
    struct {
        const char *key, *file;
        const void *field;
        bool log;
        char canon[PATH_MAX];
    } f[] = {   /* access_log last: the only one a start does without */
        { "pid_file", s->pid_file, &s->pid_file, false, "" },
        { "state_file", s->state_file, &s->state_file, false, "" },
        { "control_socket", s->control_socket, &s->control_socket, false, "" },
        { "error_log", s->error_log, &s->error_log, true, "" },
        { "access_log", s->access_log, &s->access_log, true, "" },
    };
    char config[PATH_MAX], key[300];
    size_t i, j;

    canonical_path(ld->cfg->path, config, sizeof(config));
    for (i = 0; i < KS_ARRAY_LEN(f); i++) {
        if (f[i].file == NULL || f[i].file[0] != '/')
            continue;   /* "stderr", "off" */
        canonical_path(f[i].file, f[i].canon, sizeof(f[i].canon));
        snprintf(key, sizeof(key), "%s.%s", path, f[i].key);
        if ((ld->flags & KS_CONFIG_START) && i + 1 < KS_ARRAY_LEN(f) &&
            !(f[i].field == &s->error_log && (ld->flags & KS_CONFIG_FOREGROUND)))
            dir_check(ld, f[i].file, where_of(ld, f[i].field, NULL, line, col, key));
        if (strcmp(f[i].canon, config) == 0) {
            err_w(ld, where_of(ld, f[i].field, NULL, line, col, key),
                  "%s is the configuration file itself", f[i].file);
            continue;
        }
        for (j = 0; j < i; j++) {
            if (f[j].canon[0] == '\0' || strcmp(f[i].canon, f[j].canon) != 0 || (f[i].log && f[j].log))
                continue;
            /* said at the one further down the file, naming the other */
            const struct loc *li = loc_get(ld, f[i].field), *lj = loc_get(ld, f[j].field);
            size_t at = lj != NULL && (li == NULL || lj->line > li->line) ? j : i, other = at == i ? j : i;
            const struct loc *lo = at == i ? lj : li;
            char where[32] = "its default";

            if (lo != NULL)
                snprintf(where, sizeof(where), "line %d", lo->line);
            snprintf(key, sizeof(key), "%s.%s", path, f[at].key);
            err_w(ld, where_of(ld, f[at].field, NULL, line, col, key),
                  "%s is also %s.%s (%s); each needs a file of its own", f[at].file, path,
                  f[other].key, where);
            break;
        }
    }
}

static void server_check(struct ks_load *ld, void *obj, int line, int col, struct kpath *path)
{
    struct ks_server_config *s = obj;
    char p1[300], p2[300];

    snprintf(p1, sizeof(p1), "%s.max_workers", path->s);
    snprintf(p2, sizeof(p2), "%s.max_spare", path->s);
    s->has_admin_addr = s->admin_addr.len > 0;
    /* min_spare <= max_spare <= max_workers, and workers <= max_workers.
     * A default gives way to the values the file sets (max_workers: 2
     * alone lowers the default workers and max_spare to 2), as Apache's
     * do; two values the file sets that disagree are an error, unless one
     * of them was refused already (its default would be blamed). */
    if (loc_get(ld, &s->workers) == NULL && s->workers > s->max_workers)
        s->workers = s->max_workers;
    if (loc_get(ld, &s->max_spare) == NULL && s->max_spare > s->max_workers)
        s->max_spare = s->max_workers;
    if (loc_get(ld, &s->min_spare) == NULL && s->min_spare > s->max_spare)
        s->min_spare = s->max_spare;
    if (s->workers > s->max_workers && !refused(ld, &s->workers, &s->max_workers))
        err_w(ld, where_of(ld, &s->workers, &s->max_workers, line, col, p1),
              "workers (%d) cannot exceed max_workers (%d)", s->workers, s->max_workers);
    if (s->max_spare > s->max_workers && !refused(ld, &s->max_spare, &s->max_workers))
        err_w(ld, where_of(ld, &s->max_spare, &s->max_workers, line, col, p1),
              "max_spare (%d) cannot exceed max_workers (%d)", s->max_spare, s->max_workers);
    if (s->min_spare > s->max_spare && !refused(ld, &s->min_spare, &s->max_spare))
        err_w(ld, where_of(ld, &s->min_spare, &s->max_spare, line, col, p2),
              "min_spare (%d) cannot exceed max_spare (%d)", s->min_spare, s->max_spare);
    if (s->has_admin_addr && s->public_addr.len > 0 &&
        s->admin_addr.ss.ss_family == s->public_addr.ss.ss_family) {
        bool same = false;

        /* Equal ports clash when the addresses are equal or one of them
         * is the wildcard: bind() would fail at start anyway. */
        if (s->admin_addr.ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const void *)&s->admin_addr.ss;
            const struct sockaddr_in *b = (const void *)&s->public_addr.ss;

            same = a->sin_port == b->sin_port &&
                   (a->sin_addr.s_addr == b->sin_addr.s_addr || a->sin_addr.s_addr == INADDR_ANY ||
                    b->sin_addr.s_addr == INADDR_ANY);
        } else {
            const struct sockaddr_in6 *a = (const void *)&s->admin_addr.ss;
            const struct sockaddr_in6 *b = (const void *)&s->public_addr.ss;

            same = a->sin6_port == b->sin6_port &&
                   (memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0 ||
                    IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&b->sin6_addr));
        }
        if (same)
            err_w(ld, where_of(ld, &s->admin_addr, NULL, line, col, path->s),
                  "admin_addr %s clashes with public_addr %s", s->admin_addr.text,
                  s->public_addr.text);
    }
    server_files_check(ld, s, line, col, path->s);
    if (s->control_socket != NULL &&
        strlen(s->control_socket) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        snprintf(p1, sizeof(p1), "%s.control_socket", path->s);
        err_w(ld, where_of(ld, &s->control_socket, NULL, line, col, p1),
              "%s is %zu bytes long, more than a Unix socket path may be (%zu)", s->control_socket,
              strlen(s->control_socket), sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
    }
}

static void lua_check(struct ks_load *ld, void *obj, int line, int col, struct kpath *path)
{
    struct ks_lua_config *l = obj;
    char a[32], b[32], p[300];

    snprintf(p, sizeof(p), "%s.hard_timeout", path->s);
    if (l->hard_timeout_ms <= l->limits.timeout_ms &&
        !refused(ld, &l->hard_timeout_ms, &l->limits.timeout_ms))
        err_w(ld, where_of(ld, &l->hard_timeout_ms, &l->limits.timeout_ms, line, col, p),
              "hard_timeout (%s) must exceed timeout (%s)",
              fmt_duration(a, sizeof(a), l->hard_timeout_ms),
              fmt_duration(b, sizeof(b), l->limits.timeout_ms));
}

static void tenant_init(struct ks_load *ld, void *obj, const struct ks_ynode *at)
{
    struct ks_tenant_config *t = obj;

    t->base_path = arena_strdup(ld->arena, "/");
    t->preserve_host = true;
    t->lua_limits.timeout_ms = -1;
    t->lua_limits.memory = 0;
    t->lua_limits.max_routes = -1;
    t->lua_limits.max_middlewares = -1;
    health_init_unset(&t->health_defaults);
    t->all_down = KS_ALL_DOWN_FAIL;
    t->retries = 1;
    t->line = at->line;
    t->col = at->col;
}

static void tenant_check(struct ks_load *ld, void *obj, int line, int col, struct kpath *path)
{
    struct ks_tenant_config *t = obj;
    size_t n;

    (void)line;
    (void)col;
    (void)path;
    /* "/api/" and "/api" are one prefix: keep the form the router expects. */
    n = t->base_path != NULL ? strlen(t->base_path) : 0;
    if (n > 1 && t->base_path[n - 1] == '/')
        t->base_path[n - 1] = '\0';
    if (t->lua_script != NULL) {
        char why[512];

        t->lua_source = ks_read_file(t->lua_script, KS_LUA_SCRIPT_MAX, &t->lua_source_len,
                                     why, sizeof(why));
        if (t->lua_source == NULL) {
            err_w(ld, where_of(ld, &t->lua_script, NULL, t->line, t->col, path->s), "%s", why);
        } else {
            /* The script text belongs to the config like everything else. */
            char *copy = arena_strndup(ld->arena, t->lua_source, t->lua_source_len);

            free(t->lua_source);
            t->lua_source = copy;
            if (copy == NULL)
                oom(ld);
        }
    }
}

static void upstream_init(struct ks_load *ld, void *obj, const struct ks_ynode *at)
{
    struct ks_upstream_config *u = obj;

    (void)ld;
    u->weight = 100;
    u->keepalive = 8;
    u->connect_timeout_ms = 2 * MS_S;
    u->response_timeout_ms = 30 * MS_S;
    u->idle_timeout_ms = 60 * MS_S;
    u->pool_idle_ms = 30 * MS_S;
    health_init_unset(&u->health);
    u->line = at->line;
    u->col = at->col;
}

static void upstream_check(struct ks_load *ld, void *obj, int line, int col, struct kpath *path)
{
    struct ks_upstream_config *u = obj;
    char why[320];

    (void)line;
    (void)col;
    if (u->url_text == NULL)
        return;
    /* Resolved once here, so that a name that does not resolve fails the
     * load (or the reload) instead of every request later. */
    if (ks_resolve_url(&u->url, &u->addr, why, sizeof(why)) < 0)
        err_w(ld, where_of(ld, &u->url, NULL, u->line, u->col, path->s), "%s", why);
}

/* ---- the tables ------------------------------------------------------------ */

#define HC struct ks_health_config
static const struct ks_key health_keys[] = {
    K_STR("path", HC, path, check_health_path, 0),
    K_DUR("interval", HC, interval_ms, 100, MS_D),
    K_DUR("timeout", HC, timeout_ms, 1, MS_H),
    K_INT("rise", HC, rise, 1, 100, 0),
    K_INT("fall", HC, fall, 1, 100, 0),
    K_CUSTOM("expect", HC, expect_lo, expect_hi, key_expect, 0),
    K_STR("host", HC, host, check_health_host, 0),
    K_INT("max_fails", HC, max_fails, 0, 10000, 0),
    K_DUR("fail_window", HC, fail_window_ms, 1, MS_D),
    K_DUR("fail_timeout", HC, fail_timeout_ms, 1, MS_D),
};
CHECK_KEYS(health_keys);
static const struct ks_section health_section = SECTION(health_keys, HC, NULL, NULL);
#undef HC

#define UC struct ks_upstream_config
static const struct ks_key upstream_keys[] = {
    K_STR("name", UC, name, check_name, KF_REQUIRED),
    { .name = "url", .type = KT_URL, .off = F(UC, url), .off2 = F(UC, url_text),
      .flags = KF_REQUIRED },
    K_INT("weight", UC, weight, 0, 1000, 0),
    K_INT("keepalive", UC, keepalive, 0, 1024, 0),
    K_DUR("connect_timeout", UC, connect_timeout_ms, 1, MS_H),
    K_DUR("response_timeout", UC, response_timeout_ms, 1, MS_D),
    K_DUR("idle_timeout", UC, idle_timeout_ms, 1, MS_D),
    K_DUR("pool_idle_timeout", UC, pool_idle_ms, 1, MS_D),
    /* health settings of this upstream: health_defaults' keys, prefixed
     * where the bare name would be ambiguous in an upstream */
    K_STR("health_path", UC, health.path, check_health_path, 0),
    K_DUR("health_interval", UC, health.interval_ms, 100, MS_D),
    K_DUR("health_timeout", UC, health.timeout_ms, 1, MS_H),
    K_INT("rise", UC, health.rise, 1, 100, 0),
    K_INT("fall", UC, health.fall, 1, 100, 0),
    K_CUSTOM("health_expect", UC, health.expect_lo, health.expect_hi, key_expect, 0),
    K_STR("health_host", UC, health.host, check_health_host, 0),
    K_INT("max_fails", UC, health.max_fails, 0, 10000, 0),
    K_DUR("fail_window", UC, health.fail_window_ms, 1, MS_D),
    K_DUR("fail_timeout", UC, health.fail_timeout_ms, 1, MS_D),
};
CHECK_KEYS(upstream_keys);
static const struct ks_section upstream_section =
    SECTION(upstream_keys, UC, upstream_init, upstream_check);
#undef UC

#define LL struct ks_lua_limits
static const struct ks_key lua_limits_keys[] = {
    K_DUR("timeout", LL, timeout_ms, 1, 60 * MS_S),
    K_SIZE("memory", LL, memory, 64 * KB, 4 * GB, 0),
    K_INT("max_routes", LL, max_routes, 0, 100000, 0),
    K_INT("max_middlewares", LL, max_middlewares, 0, 1000, 0),
};
CHECK_KEYS(lua_limits_keys);
static const struct ks_section lua_limits_section = SECTION(lua_limits_keys, LL, NULL, NULL);
#undef LL

#define TC struct ks_tenant_config
static const struct ks_key tenant_keys[] = {
    K_STR("name", TC, name, check_name, KF_REQUIRED),
    K_STRLIST("domains", TC, domains, ndomains, check_domain, KF_LOWER | KF_UNIQUE),
    K_STR("base_path", TC, base_path, check_url_path, 0),
    K_BOOL("strip_base_path", TC, strip_base_path),
    K_BOOL("preserve_host", TC, preserve_host),
    K_BOOL("forwarded", TC, forwarded),
    K_PATH("lua_script", TC, lua_script, NULL, 0),
    K_SECTION("lua_limits", TC, lua_limits, lua_limits_section),
    K_BOOL("dynamic_routing_enabled", TC, dynamic_routing_enabled),
    K_SECTION("health_defaults", TC, health_defaults, health_section),
    K_ENUM("all_down", TC, all_down, all_down_words, 0),
    K_INT("retries", TC, retries, 0, 10, 0),
    K_LIST("upstreams", TC, upstreams, nupstreams, upstream_section),
};
CHECK_KEYS(tenant_keys);
static const struct ks_section tenant_section =
    SECTION(tenant_keys, TC, tenant_init, tenant_check);
#undef TC

#define SC struct ks_server_config
static const struct ks_key server_keys[] = {
    K_ADDR("public_addr", SC, public_addr, KF_REQUIRED | KF_RESTART),
    K_ADDR("admin_addr", SC, admin_addr, KF_RESTART),
    K_STR("admin_base_path", SC, admin_base_path, check_admin_base_path, 0),
    K_STR("admin_token", SC, admin_token, check_token, 0),
    K_INT("workers", SC, workers, 1, 4096, 0),
    K_INT("min_spare", SC, min_spare, 0, 4096, 0),
    K_INT("max_spare", SC, max_spare, 1, 4096, 0),
    K_INT("max_workers", SC, max_workers, 1, 4096, KF_RESTART),
    K_INT64("max_requests_per_worker", SC, max_requests_per_worker, 0, INT64_MAX),
    K_INT("max_keepalive_requests", SC, max_keepalive_requests, 1, 1000000, 0),
    K_INT("backlog", SC, backlog, 1, 65535, 0),
    K_ENUM("worker_scheduling", SC, worker_scheduling, scheduling_words, 0),
    K_DUR("read_header_timeout", SC, read_header_timeout_ms, 1, MS_H),
    K_DUR("read_body_timeout", SC, read_body_timeout_ms, 1, MS_D),
    K_SIZE("min_body_rate", SC, min_body_rate, 0, GB, 0),
    K_DUR("send_timeout", SC, send_timeout_ms, 1, MS_D),
    K_DUR("idle_timeout", SC, idle_timeout_ms, 1, MS_H),
    K_DUR("lingering_time", SC, lingering_time_ms, 0, MS_M),
    K_DUR("shutdown_timeout", SC, shutdown_timeout_ms, 0, MS_D),
    K_PATH("pid_file", SC, pid_file, NULL, KF_RESTART),
    K_PATH("state_file", SC, state_file, NULL, KF_RESTART),
    K_PATH("control_socket", SC, control_socket, NULL, KF_RESTART),
    K_PATH("error_log", SC, error_log, words_stderr, KF_RESTART),
    K_PATH("access_log", SC, access_log, words_stderr_off, 0),
    K_ENUM("log_level", SC, log_level, log_levels, KF_ENUM_STR),
    K_STR("user", SC, user, check_user, KF_RESTART),
    K_STR("group", SC, group, check_group, KF_RESTART),
};
CHECK_KEYS(server_keys);
static const struct ks_section server_section = SECTION(server_keys, SC, NULL, server_check);
#undef SC

#define LC struct ks_limits_config
static const struct ks_key limits_keys[] = {
    K_SIZE("max_request_line", LC, max_request_line, 256, MB, 0),
    K_SIZE("max_header_bytes", LC, max_header_bytes, KB, 16 * MB, 0),
    K_INT("max_headers", LC, max_headers, 1, 10000, 0),
    K_SIZE("max_body_bytes", LC, max_body_bytes, 0, INT64_MAX, 0),
    K_SIZE("max_response_header_bytes", LC, max_response_header_bytes, KB, 16 * MB, 0),
    /* capacities: they size the shared segment */
    K_INT("max_tenants", LC, max_tenants, 1, 65535, KF_RESTART),
    K_INT("max_upstreams", LC, max_upstreams, 1, 65535, KF_RESTART),
    K_INT("max_routes", LC, max_routes, 0, 1000000, 0),
    K_SIZE("route_table_size", LC, route_table_size, 64 * KB, GB, KF_RESTART),
    K_SIZE("max_config_size", LC, max_config_size, KB, KS_CONFIG_SIZE_CEILING, 0),
};
CHECK_KEYS(limits_keys);
static const struct ks_section limits_section = SECTION(limits_keys, LC, NULL, NULL);
#undef LC

#define LU struct ks_lua_config
static const struct ks_key lua_keys[] = {
    K_DUR("timeout", LU, limits.timeout_ms, 1, 60 * MS_S),
    K_SIZE("memory", LU, limits.memory, 64 * KB, 4 * GB, 0),
    K_INT("max_routes", LU, limits.max_routes, 0, 100000, 0),
    K_INT("max_middlewares", LU, limits.max_middlewares, 0, 1000, 0),
    K_DUR("hard_timeout", LU, hard_timeout_ms, 1, MS_H),
    K_DUR("reload_debounce", LU, reload_debounce_ms, 0, MS_M),
    K_BOOL("expose_errors", LU, expose_errors),
    K_STRLIST("allowed_env", LU, allowed_env, nallowed_env, check_env_name, KF_UNIQUE),
};
CHECK_KEYS(lua_keys);
static const struct ks_section lua_section = SECTION(lua_keys, LU, NULL, lua_check);
#undef LU

#define DC struct ks_dynamic_config
static const struct ks_key dynamic_keys[] = {
    K_INT("max_changes_per_minute", DC, max_changes_per_minute, 0, 100000, 0),
};
CHECK_KEYS(dynamic_keys);
static const struct ks_section dynamic_section = SECTION(dynamic_keys, DC, NULL, NULL);
#undef DC

#define CC struct ks_config
static const struct ks_key root_keys[] = {
    K_CUSTOM("version", CC, version, version, key_version, 0),
    K_SECTION("server", CC, server, server_section),
    K_SECTION("limits", CC, limits, limits_section),
    K_SECTION("lua", CC, lua, lua_section),
    K_SECTION("health_defaults", CC, health_defaults, health_section),
    K_SECTION("dynamic_routing", CC, dynamic_routing, dynamic_section),
    K_LIST("tenants", CC, tenants, ntenants, tenant_section),
};
CHECK_KEYS(root_keys);
static const struct ks_section root_section = SECTION(root_keys, CC, NULL, NULL);
#undef CC

/* Built-in defaults; everything not set in the file keeps these. */
static int config_init(struct ks_load *ld, struct ks_config *c)
{
    struct ks_server_config *s = &c->server;
    struct ks_arena *a = ld->arena;
    char *p;

    c->version = 1;
    s->admin_base_path = arena_strdup(a, "/admin");
    s->workers = 4;
    s->min_spare = 2;
    s->max_spare = 8;
    s->max_workers = 64;
    s->max_requests_per_worker = 10000;
    s->max_keepalive_requests = 1000;
    s->backlog = 511;
    s->worker_scheduling = KS_SCHED_BATCH;
    s->read_header_timeout_ms = 5 * MS_S;
    s->read_body_timeout_ms = 30 * MS_S;
    s->min_body_rate = 1024;
    s->send_timeout_ms = 30 * MS_S;
    s->idle_timeout_ms = 5 * MS_S;
    s->lingering_time_ms = 2 * MS_S;
    s->shutdown_timeout_ms = 30 * MS_S;
    if ((p = ks_path_join(c->dir, "keystoned.pid")) != NULL)
        s->pid_file = arena_strdup(a, p);
    free(p);
    if ((p = ks_path_join(c->dir, "keystoned.state")) != NULL)
        s->state_file = arena_strdup(a, p);
    free(p);
    if ((p = ks_path_join(c->dir, "keystoned.sock")) != NULL)
        s->control_socket = arena_strdup(a, p);
    free(p);
    s->error_log = arena_strdup(a, "stderr");
    s->access_log = arena_strdup(a, "stderr");
    s->log_level = arena_strdup(a, "info");

    c->limits.max_request_line = 8 * KB;
    c->limits.max_header_bytes = 16 * KB;
    c->limits.max_headers = 100;
    c->limits.max_body_bytes = 10 * MB;
    c->limits.max_response_header_bytes = 64 * KB;
    c->limits.max_tenants = 256;
    c->limits.max_upstreams = 1024;
    c->limits.max_routes = 4096;
    c->limits.route_table_size = 4 * MB;
    c->limits.max_config_size = MB;

    c->lua.limits.timeout_ms = 50;
    c->lua.limits.memory = 10 * MB;
    c->lua.limits.max_routes = 200;
    c->lua.limits.max_middlewares = 20;
    c->lua.hard_timeout_ms = 2 * MS_S;
    c->lua.reload_debounce_ms = 200;
    c->lua.expose_errors = false;

    health_init_unset(&c->health_defaults);
    c->dynamic_routing.max_changes_per_minute = 60;

    if (s->admin_base_path == NULL || s->pid_file == NULL || s->state_file == NULL ||
        s->control_socket == NULL || s->error_log == NULL || s->access_log == NULL ||
        s->log_level == NULL)
        return -1;
    return 0;
}

/* ---- validation across keys -------------------------------------------- */

/* Fill what h leaves unset from parent (but the timeout, see
 * health_resolve()); parent is complete. */
static void health_inherit(struct ks_health_config *h, const struct ks_health_config *parent)
{
    if (h->path == NULL)
        h->path = parent->path;
    if (h->interval_ms < 0)
        h->interval_ms = parent->interval_ms;
    if (h->rise < 0)
        h->rise = parent->rise;
    if (h->fall < 0)
        h->fall = parent->fall;
    if (h->expect_lo < 0) {
        h->expect_lo = parent->expect_lo;
        h->expect_hi = parent->expect_hi;
    }
    if (h->host == NULL)
        h->host = parent->host;
    if (h->max_fails < 0)
        h->max_fails = parent->max_fails;
    if (h->fail_window_ms < 0)
        h->fail_window_ms = parent->fail_window_ms;
    if (h->fail_timeout_ms < 0)
        h->fail_timeout_ms = parent->fail_timeout_ms;
}

/* Resolve one level and check timeout < interval.
 *
 * A timeout nobody wrote is the default, capped below the interval:
 * min(2s, interval / 2), worked out again at every level from that
 * level's interval (a short global interval does not shorten the timeout
 * of a tenant that sets a long one).  Setting only `interval: 1s` is
 * then fine.  A timeout someone wrote, here or at a level this one
 * inherits from, is kept as written and checked against the interval,
 * but only where this level set one of the two: an inherited mistake is
 * reported once, where it was written. */
static void health_resolve(struct ks_load *ld, struct ks_health_config *h,
                           const struct ks_health_config *parent, int line, int col,
                           const char *path)
{
    bool own = h->interval_ms >= 0 || h->timeout_ms >= 0;
    const void *ti = h->timeout_ms >= 0 ? (const void *)&h->timeout_ms : NULL;
    const void *iv = h->interval_ms >= 0 ? (const void *)&h->interval_ms : NULL;
    char a[32], b[32];

    health_inherit(h, parent);
    if (h->timeout_ms >= 0) {
        h->timeout_set = true;
    } else if (parent->timeout_set) {
        h->timeout_ms = parent->timeout_ms;
        h->timeout_set = true;
    } else {
        h->timeout_ms = h->interval_ms / 2 < HEALTH_TIMEOUT_DEFAULT_MS ? h->interval_ms / 2
                                                                        : HEALTH_TIMEOUT_DEFAULT_MS;
        h->timeout_set = false;
    }
    if (own && h->timeout_set && h->timeout_ms >= h->interval_ms && !refused(ld, ti, iv))
        err_w(ld, where_of(ld, ti, iv, line, col, path),
              "health timeout (%s) must be below the health interval (%s)",
              fmt_duration(a, sizeof(a), h->timeout_ms), fmt_duration(b, sizeof(b), h->interval_ms));
}

static void check_tenant_names(struct ks_load *ld)
{
    struct ks_config *c = ld->cfg;
    struct dupent *v;
    size_t i, j, n = 0;

    if (c->ntenants < 2)
        return;
    if ((v = calloc(c->ntenants, sizeof(*v))) == NULL) {
        oom(ld);
        return;
    }
    for (i = 0; i < c->ntenants; i++)
        if (c->tenants[i].name != NULL)
            v[n++] = (struct dupent){ c->tenants[i].name, "", i, 0 };
    qsort(v, n, sizeof(*v), dupent_cmp);
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && strcmp(v[i].a, v[j].a) == 0; j++) {
            const struct ks_tenant_config *t = &c->tenants[v[j].i];

            err_w(ld, where_of(ld, &t->name, NULL, t->line, t->col, "tenants"),
                  "duplicate tenant name \"%s\" (first at line %d)", t->name,
                  c->tenants[v[i].i].line);
        }
    }
    free(v);
}

static void check_upstream_names(struct ks_load *ld, const struct ks_tenant_config *t)
{
    struct dupent *v;
    size_t i, j, n = 0;

    if (t->nupstreams < 2)
        return;
    if ((v = calloc(t->nupstreams, sizeof(*v))) == NULL) {
        oom(ld);
        return;
    }
    for (i = 0; i < t->nupstreams; i++)
        if (t->upstreams[i].name != NULL)
            v[n++] = (struct dupent){ t->upstreams[i].name, "", i, 0 };
    qsort(v, n, sizeof(*v), dupent_cmp);
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && strcmp(v[i].a, v[j].a) == 0; j++) {
            const struct ks_upstream_config *u = &t->upstreams[v[j].i];

            err_w(ld, where_of(ld, &u->name, NULL, u->line, u->col, "upstreams"),
                  "duplicate upstream name \"%s\" in tenant \"%s\" (first at line %d)", u->name,
                  t->name ? t->name : "", t->upstreams[v[i].i].line);
        }
    }
    free(v);
}

/* Two tenants that answer the same (host, base_path) would make routing
 * depend on the order of the file: refuse it.  A tenant without domains
 * answers every host; it clashes only with another one without domains
 * (a tenant with domains is more specific and wins). */
static void check_tenant_overlap(struct ks_load *ld)
{
    struct ks_config *c = ld->cfg;
    struct dupent *v;
    size_t i, j, n = 0, total = 0;

    for (i = 0; i < c->ntenants; i++)
        total += c->tenants[i].ndomains ? c->tenants[i].ndomains : 1;
    if (c->ntenants < 2)
        return;
    if ((v = calloc(total, sizeof(*v))) == NULL) {
        oom(ld);
        return;
    }
    for (i = 0; i < c->ntenants; i++) {
        const struct ks_tenant_config *t = &c->tenants[i];
        const struct loc *dl = loc_get(ld, &t->domains);

        if (dl != NULL && dl->failed)
            continue;   /* its domains are reported already; it is not domain-less */
        if (t->ndomains == 0)
            v[n++] = (struct dupent){ "", t->base_path, i, 0 };
        for (j = 0; j < t->ndomains; j++)
            v[n++] = (struct dupent){ t->domains[j], t->base_path, i, j };
    }
    qsort(v, n, sizeof(*v), dupent_cmp);
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && strcmp(v[i].a, v[j].a) == 0 && strcmp(v[i].b, v[j].b) == 0; j++) {
            const struct ks_tenant_config *first = &c->tenants[v[i].i];
            const struct ks_tenant_config *t = &c->tenants[v[j].i];
            char path[64];

            snprintf(path, sizeof(path), "tenants[%zu]", v[j].i);
            if (v[j].a[0] == '\0')
                err_w(ld, where_of(ld, &t->base_path, NULL, t->line, t->col, path),
                      "tenants \"%s\" (line %d) and \"%s\" both have no domains and base_path \"%s\"",
                      first->name ? first->name : "", first->line, t->name ? t->name : "",
                      t->base_path);
            else
                err_w(ld, where_of(ld, &t->domains, NULL, t->line, t->col, path),
                      "tenants \"%s\" (line %d) and \"%s\" both serve domain \"%s\" under base_path \"%s\"",
                      first->name ? first->name : "", first->line, t->name ? t->name : "",
                      v[j].a, t->base_path);
        }
    }
    free(v);
}

/* The public listener answers admin_base_path and everything under it
 * itself: a tenant whose base path is there would never get a request. */
static void check_admin_overlap(struct ks_load *ld)
{
    const struct ks_config *c = ld->cfg;
    const char *admin = c->server.admin_base_path;
    size_t an = strlen(admin);
    if (an == 0)
        return;
    for (size_t i = 0; i < c->ntenants; i++) {
        const struct ks_tenant_config *t = &c->tenants[i];
        size_t bn = strlen(t->base_path);
        if (bn < an || memcmp(t->base_path, admin, an) != 0 || (bn > an && t->base_path[an] != '/'))
            continue;
        char path[64];
        snprintf(path, sizeof(path), "tenants[%zu].base_path", i);
        err_w(ld, where_of(ld, &t->base_path, NULL, t->line, t->col, path),
              "\"%s\" is under server.admin_base_path \"%s\", whose paths keystoned answers itself",
              t->base_path, admin);
    }
}

static void validate(struct ks_load *ld, size_t file_size)
{
    static const struct ks_health_config builtin = {
        .path = "", .interval_ms = 10 * MS_S, .timeout_ms = HEALTH_TIMEOUT_DEFAULT_MS,
        .rise = 2, .fall = 3,
        .expect_lo = 200, .expect_hi = 399, .host = NULL, .max_fails = 5,
        .fail_window_ms = 10 * MS_S, .fail_timeout_ms = 10 * MS_S,
    };
    struct ks_config *c = ld->cfg;
    struct ks_health_config base = builtin;
    size_t i, j, nup = 0;
    char a[32], b[32];

    /* The built-in path must be arena memory like every other string. */
    base.path = arena_strdup(ld->arena, "");
    if (base.path == NULL) {
        oom(ld);
        return;
    }
    health_resolve(ld, &c->health_defaults, &base, 1, 1, "health_defaults");

    for (i = 0; i < c->ntenants; i++) {
        struct ks_tenant_config *t = &c->tenants[i];
        struct ks_lua_limits *ll = &t->lua_limits;
        char path[64];
        const char *names[3];

        snprintf(path, sizeof(path), "tenants[%zu].health_defaults", i);
        health_resolve(ld, &t->health_defaults, &c->health_defaults, t->line, t->col, path);
        for (j = 0; j < t->nupstreams; j++) {
            struct ks_upstream_config *u = &t->upstreams[j];

            snprintf(path, sizeof(path), "tenants[%zu].upstreams[%zu]", i, j);
            health_resolve(ld, &u->health, &t->health_defaults, u->line, u->col, path);
            names[0] = t->name ? t->name : "";
            names[1] = u->name ? u->name : "";
            names[2] = u->url_text ? u->url_text : "";
            u->id = ks_hash_strings(names, 3);
            if (++nup == (size_t)c->limits.max_upstreams + 1)
                err_w(ld, (struct where){ u->line, u->col, path },
                      "more than limits.max_upstreams (%d) upstreams in all tenants",
                      c->limits.max_upstreams);
        }
        check_upstream_names(ld, t);

        if (ll->timeout_ms < 0)
            ll->timeout_ms = c->lua.limits.timeout_ms;
        if (ll->memory == 0)
            ll->memory = c->lua.limits.memory;
        if (ll->max_routes < 0)
            ll->max_routes = c->lua.limits.max_routes;
        if (ll->max_middlewares < 0)
            ll->max_middlewares = c->lua.limits.max_middlewares;
        snprintf(path, sizeof(path), "tenants[%zu].lua_limits.timeout", i);
        if (loc_get(ld, &ll->timeout_ms) != NULL && ll->timeout_ms >= c->lua.hard_timeout_ms &&
            !refused(ld, &ll->timeout_ms, &c->lua.hard_timeout_ms))
            err_w(ld, where_of(ld, &ll->timeout_ms, NULL, t->line, t->col, path),
                  "timeout (%s) must be below lua.hard_timeout (%s)",
                  fmt_duration(a, sizeof(a), ll->timeout_ms),
                  fmt_duration(b, sizeof(b), c->lua.hard_timeout_ms));

        if (i == (size_t)c->limits.max_tenants) {
            snprintf(path, sizeof(path), "tenants[%zu]", i);
            err_w(ld, (struct where){ t->line, t->col, path },
                  "more than limits.max_tenants (%d) tenants", c->limits.max_tenants);
        }
    }
    check_tenant_names(ld);
    check_tenant_overlap(ld);
    check_admin_overlap(ld);

    if (file_size > c->limits.max_config_size)
        err_w(ld, where_of(ld, &c->limits.max_config_size, NULL, 0, 0, NULL),
              "the file is %zu bytes, more than limits.max_config_size (%s)", file_size,
              fmt_size(a, sizeof(a), c->limits.max_config_size));
}

/* ---- entry points ------------------------------------------------------------ */

static char *config_dir(struct ks_arena *a, const char *path)
{
    char *copy = strdup(path), *real, *out = NULL;

    if (copy == NULL)
        return NULL;
    real = realpath(dirname(copy), NULL);
    if (real != NULL) {
        out = arena_strdup(a, real);
        free(real);
    }
    free(copy);
    return out;
}

struct ks_config *ks_config_load(const char *path, struct ks_diag *diag)
{
    return ks_config_load_flags(path, 0, diag);
}

struct ks_config *ks_config_load_flags(const char *path, unsigned flags, struct ks_diag *diag)
{
    struct ks_load ld;
    struct ks_config *c;
    struct ks_yaml_error yerr;
    struct ks_ynode *root;
    struct kpath kp = { "", 0 };
    size_t size = 0;

    memset(&ld, 0, sizeof(ld));
    ld.diag = diag;
    ld.file = path;
    ld.flags = flags;
    ld.arena = arena_new();
    ld.scratch = arena_new();
    if (ld.arena == NULL || ld.scratch == NULL ||
        (c = arena_alloc(ld.arena, sizeof(*c))) == NULL) {
        arena_free(ld.arena);
        arena_free(ld.scratch);
        ks_diag_add(diag, "%s: out of memory", path);
        return NULL;
    }
    c->arena = ld.arena;
    ld.cfg = c;

    root = ks_yaml_load_file(path, KS_CONFIG_SIZE_CEILING, &size, &yerr);
    if (root == NULL && yerr.msg[0] != '\0') {
        err_at(&ld, yerr.line, yerr.col, yerr.path, "%s", yerr.msg);
        goto fail;
    }
    c->path = arena_strdup(ld.arena, path);
    c->dir = config_dir(ld.arena, path);
    if (c->path == NULL || c->dir == NULL) {
        err_at(&ld, 0, 0, NULL, "cannot find the directory of the file");
        goto fail;
    }
    if (config_init(&ld, c) < 0) {
        oom(&ld);
        goto fail;
    }
    if (root != NULL && root->type != KS_YMAP && !ks_ynode_is_null(root)) {
        char d[128];

        err_at(&ld, root->line, root->col, NULL, "expected a mapping at the top level, got %s",
               describe(d, sizeof(d), root));
        goto fail;
    }
    walk_map(&ld, &root_section, ks_ynode_is_null(root) ? NULL : root, c, &kp, 1, 1);
    ks_yaml_free(root);
    root = NULL;
    validate(&ld, size);
    if (ld.nerrs > 0)
        goto fail;
    free(ld.errs);
    free(ld.locs);
    arena_free(ld.scratch);
    return c;

fail:
    flush_errors(&ld);
    ks_yaml_free(root);
    free(ld.locs);
    arena_free(ld.scratch);
    arena_free(ld.arena);
    return NULL;
}

void ks_config_free(struct ks_config *cfg)
{
    if (cfg != NULL) {
        ks_lua_catalog_free(cfg->lua_catalog);
        arena_free(cfg->arena);
    }
}

const struct ks_tenant_config *ks_config_tenant(const struct ks_config *cfg, const char *name)
{
    size_t i;

    for (i = 0; i < cfg->ntenants; i++)
        if (cfg->tenants[i].name != NULL && strcmp(cfg->tenants[i].name, name) == 0)
            return &cfg->tenants[i];
    return NULL;
}

const struct ks_upstream_config *ks_tenant_upstream(const struct ks_tenant_config *t, const char *name)
{
    size_t i;

    for (i = 0; i < t->nupstreams; i++)
        if (t->upstreams[i].name != NULL && strcmp(t->upstreams[i].name, name) == 0)
            return &t->upstreams[i];
    return NULL;
}

/* Only server.state_file, whatever else is wrong with the file. */
int ks_config_state_file(const char *path, char *out, size_t len, char *err, size_t errlen)
{
    struct ks_yaml_error yerr;
    size_t size;
    char *copy = strdup(path), *dir = copy ? realpath(dirname(copy), NULL) : NULL;
    free(copy);
    if (dir == NULL) {
        snprintf(err, errlen, "configuration %s: cannot read it: %s", path, strerror(errno));
        return -1;
    }
    const char *value = "keystoned.state";
    struct ks_ynode *root = ks_yaml_load_file(path, KS_CONFIG_SIZE_CEILING, &size, &yerr);
    /* a file that cannot be read or parsed names no state file: the
     * default would send the caller looking in the wrong place */
    if (root == NULL && yerr.msg[0] != '\0') {
        if (yerr.line > 0)
            snprintf(err, errlen, "configuration %s:%d:%d: %s", path, yerr.line, yerr.col, yerr.msg);
        else
            snprintf(err, errlen, "configuration %s: %s", path, yerr.msg);
        free(dir);
        return -1;
    }
    for (size_t i = 0; root != NULL && root->type == KS_YMAP && i < root->n; i++) {
        const struct ks_ypair *sv = &root->pairs[i];
        if (strcmp(sv->key->str, "server") != 0 || sv->value->type != KS_YMAP)
            continue;
        for (size_t k = 0; k < sv->value->n; k++) {
            const struct ks_ypair *p = &sv->value->pairs[k];
            if (strcmp(p->key->str, "state_file") == 0 && p->value->type == KS_YSCALAR &&
                p->value->len > 0)
                value = p->value->str;
        }
    }
    char *joined = ks_path_join(dir, value);
    int rc = 0;
    if (joined == NULL || strlen(joined) >= len) {
        snprintf(err, errlen, "state file path too long");
        rc = -1;
    } else {
        memcpy(out, joined, strlen(joined) + 1);
    }
    free(joined);
    free(dir);
    ks_yaml_free(root);
    return rc;
}
