/*
 * luacheck.c: the load-time script check (see luacheck.h).
 *
 * Child -> master, one line per fact, fields separated by tabs, with
 * backslash, tab and newline escaped:
 *
 *   T <tenant>                       starting that tenant's script
 *   R <tenant> <id> <method> <pattern> <handler> <upstream> <f|->
 *   H <tenant> <name>                a named handler
 *   E <tenant> <message>             the script failed
 *   D                                all done
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "lua/engine.h"
#include "master/luacheck.h"

#define OUTPUT_MAX (64u << 20)
#define MARGIN_MS 1000

/* ---- the child ------------------------------------------------------------------ */

struct out {
    int fd;
    char buf[65536];
    size_t len;
};

static void flush_out(struct out *o)
{
    ks_write_all(o->fd, o->buf, o->len);
    o->len = 0;
}

static void put_char(struct out *o, char c)
{
    if (o->len == sizeof(o->buf))
        flush_out(o);
    o->buf[o->len++] = c;
}

static void put_field(struct out *o, const char *s)
{
    put_char(o, '\t');
    for (; *s; s++) {
        if (*s == '\\' || *s == '\t' || *s == '\n') {
            put_char(o, '\\');
            put_char(o, *s == '\t' ? 't' : *s == '\n' ? 'n' : '\\');
        } else {
            put_char(o, *s);
        }
    }
}

static void put_line(struct out *o, char kind, size_t tenant, const char *const *fields, size_t n)
{
    char num[24];
    put_char(o, kind);
    snprintf(num, sizeof(num), "%zu", tenant);
    put_field(o, num);
    for (size_t i = 0; i < n; i++)
        put_field(o, fields[i] != NULL ? fields[i] : "");
    put_char(o, '\n');
}

static void check_tenant(const struct ks_config *cfg, size_t i, struct out *o)
{
    const struct ks_tenant_config *t = &cfg->tenants[i];
    const char *ups[t->nupstreams ? t->nupstreams : 1];
    for (size_t k = 0; k < t->nupstreams; k++)
        ups[k] = t->upstreams[k].name;
    struct ks_lua_tenant_info ti = {
        .tenant = t->name,
        .script = t->lua_script,
        .source = t->lua_source,
        .source_len = t->lua_source_len,
        .timeout_ms = t->lua_limits.timeout_ms,
        .memory = t->lua_limits.memory,
        .max_routes = t->lua_limits.max_routes,
        .max_middlewares = t->lua_limits.max_middlewares,
        .upstreams = ups,
        .nupstreams = t->nupstreams,
        .allowed_env = (const char *const *)cfg->lua.allowed_env,
        .nallowed_env = cfg->lua.nallowed_env,
        .dynamic_routing = t->dynamic_routing_enabled,
        .quiet = true,
    };
    put_line(o, 'T', i, NULL, 0);
    flush_out(o);       /* so the master knows whom to blame if this hangs */
    char err[KS_LUA_MSG_MAX];
    struct ks_lua *lx = ks_lua_new(&ti, NULL, err, sizeof(err));
    if (lx == NULL) {
        const char *f[] = { err };
        put_line(o, 'E', i, f, 1);
        return;
    }
    const struct ks_router *r = &lx->router;
    for (size_t k = 0; k < r->nroutes; k++) {
        const struct ks_route *rt = r->routes[k];
        const char *up = rt->upstream < t->nupstreams ? t->upstreams[rt->upstream].name : "";
        bool fn = rt->handler != KS_ROUTE_PROXY && rt->handler_name == NULL;
        const char *f[] = { rt->id, rt->method, rt->pat.text, rt->handler_name, up, fn ? "f" : "-" };
        put_line(o, 'R', i, f, 6);
    }
    for (size_t k = 0; k < r->nhandlers; k++) {
        const char *f[] = { r->handlers[k].name };
        put_line(o, 'H', i, f, 1);
    }
    ks_lua_free(lx);
}

static void run_child(const struct ks_config *cfg, int fd)
{
    struct out o = { .fd = fd };
    for (size_t i = 0; i < cfg->ntenants; i++)
        if (cfg->tenants[i].lua_source != NULL)
            check_tenant(cfg, i, &o);
    put_char(&o, 'D');
    put_char(&o, '\n');
    flush_out(&o);
}

/* ---- the master's side ------------------------------------------------------------ */

/* Split an escaped line into fields (in place); returns how many. */
static size_t split(char *line, char **f, size_t max)
{
    size_t n = 0;
    char *w = line;
    f[n++] = w;
    for (char *p = line; *p; p++) {
        if (*p == '\t') {
            *w++ = '\0';
            if (n < max)
                f[n++] = w;
        } else if (*p == '\\' && p[1]) {
            p++;
            *w++ = *p == 't' ? '\t' : *p == 'n' ? '\n' : *p;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return n;
}

static char *copy_str(const char *s, bool *oom)
{
    char *d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

static int add_route(struct ks_lua_catalog_tenant *ct, char **f, bool *oom)
{
    struct ks_lua_catalog_route *v = realloc(ct->routes, (ct->nroutes + 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    ct->routes = v;
    struct ks_lua_catalog_route *rt = &v[ct->nroutes];
    *rt = (struct ks_lua_catalog_route){
        .id = copy_str(f[2], oom), .method = copy_str(f[3], oom), .pattern = copy_str(f[4], oom),
        .handler = copy_str(f[5], oom), .upstream = copy_str(f[6], oom), .function = f[7][0] == 'f',
    };
    char err[256];
    /* the child compiled it already: this cannot fail but for memory */
    if (ks_pattern_compile(f[4], &rt->pat, err, sizeof(err)) < 0)
        *oom = true;
    ct->nroutes++;
    return 0;
}

static int add_handler(struct ks_lua_catalog_tenant *ct, const char *name, bool *oom)
{
    char **v = realloc(ct->handlers, (ct->nhandlers + 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    ct->handlers = v;
    v[ct->nhandlers++] = copy_str(name, oom);
    return 0;
}

/* Read everything the child writes until EOF or the deadline; NULL on
 * timeout (*timed_out) or out of memory. */
static char *read_all(int fd, int64_t deadline, size_t *len, bool *timed_out)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    *timed_out = false;
    while (buf != NULL) {
        if (n + 1 >= cap) {
            char *nb = cap < OUTPUT_MAX ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            break;
        }
        int64_t left = deadline - ks_now_ms();
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            *timed_out = true;
            break;
        }
    }
    if (buf != NULL)
        buf[n] = '\0';
    *len = n;
    return buf;
}

/* Interpret the child's output into cat and diag; returns the index of the
 * tenant being checked when the output stops short, or -1 when complete. */
static long parse_output(struct ks_config *cfg, char *buf, struct ks_lua_catalog *cat,
                         struct ks_diag *diag, bool *failed, bool *oom)
{
    long current = -1;
    bool done = false;
    for (char *line = buf; *line;) {
        char *nl = strchr(line, '\n');
        if (nl == NULL)
            break;
        *nl = '\0';
        char *f[10];
        size_t n = split(line, f, 10);
        size_t ti = n >= 2 ? strtoul(f[1], NULL, 10) : 0;
        if (f[0][0] == 'D') {
            done = true;
        } else if (n >= 2 && ti < cfg->ntenants) {
            const struct ks_tenant_config *t = &cfg->tenants[ti];
            switch (f[0][0]) {
            case 'T':
                current = (long)ti;
                cat->tenants[ti].scripted = true;
                break;
            case 'E':
                /* one message per refused registration */
                for (char *m = n >= 3 ? f[2] : "script failed", *e; m != NULL; m = e) {
                    e = strchr(m, '\n');
                    if (e != NULL)
                        *e++ = '\0';
                    ks_diag_add(diag, "%s (tenant %s)", m, t->name);
                }
                *failed = true;
                current = -1;
                break;
            case 'R':
                if (n >= 8 && add_route(&cat->tenants[ti], f, oom) < 0)
                    *oom = true;
                break;
            case 'H':
                if (n >= 3 && add_handler(&cat->tenants[ti], f[2], oom) < 0)
                    *oom = true;
                break;
            }
        }
        line = nl + 1;
    }
    return done ? -1 : current >= 0 ? current : (long)cfg->ntenants;
}

int ks_luacheck_config(struct ks_config *cfg, struct ks_diag *diag)
{
    struct ks_lua_catalog *cat = calloc(1, sizeof(*cat));
    if (cat == NULL || (cat->tenants = calloc(cfg->ntenants + 1, sizeof(*cat->tenants))) == NULL) {
        free(cat);
        ks_diag_add(diag, "out of memory checking the Lua scripts");
        return -1;
    }
    cat->ntenants = cfg->ntenants;
    int64_t budget = cfg->lua.hard_timeout_ms + MARGIN_MS;
    bool any = false;
    for (size_t i = 0; i < cfg->ntenants; i++)
        if (cfg->tenants[i].lua_source != NULL) {
            budget += cfg->tenants[i].lua_limits.timeout_ms;
            any = true;
        }
    if (!any) {
        cfg->lua_catalog = cat;
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        ks_diag_add(diag, "cannot check the Lua scripts: pipe: %s", strerror(errno));
        ks_lua_catalog_free(cat);
        return -1;
    }
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        ks_diag_add(diag, "cannot check the Lua scripts: fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        ks_lua_catalog_free(cat);
        return -1;
    }
    if (pid == 0) {
        /* nothing of the master's: above all not the workers' lifeline,
         * which must reach EOF when the master dies; and die with it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != master)
            _exit(1);           /* it died before the line above */
        int out = fds[1] == 3 ? 3 : dup2(fds[1], 3);
        if (out != 3)
            _exit(1);
        close_range(4, ~0u, 0);
        run_child(cfg, out);
        _exit(0);
    }
    close(fds[1]);
    ks_set_nonblock(fds[0], true);
    size_t len = 0;
    bool timed_out;
    char *out = read_all(fds[0], ks_now_ms() + budget, &len, &timed_out);
    close(fds[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    bool failed = false, oom = out == NULL;
    long stuck = out != NULL ? parse_output(cfg, out, cat, diag, &failed, &oom) : -1;
    free(out);
    if (oom) {
        ks_diag_add(diag, "out of memory checking the Lua scripts");
        failed = true;
    } else if (stuck >= 0) {
        const struct ks_tenant_config *t = stuck < (long)cfg->ntenants ? &cfg->tenants[stuck] : NULL;
        if (timed_out)
            ks_diag_add(diag, "%s: the script check did not finish within %lld ms (stuck in a C "
                        "function, such as a pathological string pattern?) (tenant %s)",
                        t ? t->lua_script : "Lua scripts", (long long)budget, t ? t->name : "?");
        else
            ks_diag_add(diag, "%s: the script check died (%s %d) (tenant %s)",
                        t ? t->lua_script : "Lua scripts",
                        WIFSIGNALED(status) ? "signal" : "exit status",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                        t ? t->name : "?");
        failed = true;
    }
    if (!failed) {
        /* limits.max_routes is counted when a runtime route is added, and
         * here for what the scripts register */
        size_t total = 0;
        for (size_t i = 0; i < cat->ntenants; i++)
            total += cat->tenants[i].nroutes;
        if (total > (size_t)cfg->limits.max_routes) {
            ks_diag_add(diag, "%s: limits.max_routes: the tenants' scripts register %zu routes, "
                        "more than %d", cfg->path, total, cfg->limits.max_routes);
            failed = true;
        }
    }
    if (failed) {
        ks_lua_catalog_free(cat);
        return -1;
    }
    cfg->lua_catalog = cat;
    return 0;
}

void ks_lua_catalog_free(struct ks_lua_catalog *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->ntenants; i++) {
        struct ks_lua_catalog_tenant *t = &c->tenants[i];
        for (size_t k = 0; k < t->nroutes; k++) {
            free(t->routes[k].id);
            free(t->routes[k].method);
            free(t->routes[k].pattern);
            free(t->routes[k].handler);
            free(t->routes[k].upstream);
            ks_pattern_free(&t->routes[k].pat);
        }
        free(t->routes);
        for (size_t k = 0; k < t->nhandlers; k++)
            free(t->handlers[k]);
        free(t->handlers);
    }
    free(c->tenants);
    free(c);
}

bool ks_lua_catalog_has_handler(const struct ks_lua_catalog *c, size_t tenant, const char *name)
{
    if (c == NULL || tenant >= c->ntenants)
        return false;
    for (size_t k = 0; k < c->tenants[tenant].nhandlers; k++)
        if (strcmp(c->tenants[tenant].handlers[k], name) == 0)
            return true;
    return false;
}
