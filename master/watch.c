/*
 * watch.c: inotify on the tenant scripts' directories (see watch.h).
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "master/watch.h"

#define EVENTS (IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE)

struct watched {
    int wd;
    char *dir;
    char *name;                     /* the script's file name in dir */
    char *path;                     /* the whole path, for the log */
};

struct ks_watch {
    int fd;
    struct watched *v;
    size_t n;
    int64_t due_ms;                 /* 0: no reload pending */
    const char *changed;
};

struct ks_watch *ks_watch_new(void)
{
    struct ks_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        ks_log_warn("lua-watch", "inotify unavailable (%s): script changes need a reload",
                    strerror(errno));
        free(w);
        return NULL;
    }
    return w;
}

/* Forget the watched scripts; with remove, also take the watches off the
 * inotify instance.  A forked worker shares the instance with the master,
 * so it only closes its descriptor. */
static void clear(struct ks_watch *w, bool remove)
{
    for (size_t i = 0; i < w->n; i++) {
        /* a directory may be shared by several scripts: remove once */
        bool first = true;
        for (size_t k = 0; k < i; k++)
            first &= w->v[k].wd != w->v[i].wd;
        if (remove && first && w->v[i].wd >= 0)
            inotify_rm_watch(w->fd, w->v[i].wd);
        free(w->v[i].dir);
        free(w->v[i].name);
        free(w->v[i].path);
    }
    free(w->v);
    w->v = NULL;
    w->n = 0;
    w->changed = NULL;
}

void ks_watch_free(struct ks_watch *w)
{
    if (w == NULL)
        return;
    clear(w, false);
    close(w->fd);
    free(w);
}

void ks_watch_set(struct ks_watch *w, const struct ks_config *cfg)
{
    if (w == NULL)
        return;
    clear(w, true);
    w->v = calloc(cfg->ntenants + 1, sizeof(*w->v));
    if (w->v == NULL)
        return;
    for (size_t i = 0; i < cfg->ntenants; i++) {
        const char *path = cfg->tenants[i].lua_script;
        if (path == NULL)
            continue;
        const char *slash = strrchr(path, '/');
        struct watched *e = &w->v[w->n];
        e->dir = slash == NULL ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        e->name = strdup(slash == NULL ? path : slash + 1);
        e->path = strdup(path);
        if (e->dir == NULL || e->name == NULL || e->path == NULL) {
            free(e->dir);
            free(e->name);
            free(e->path);
            continue;
        }
        /* inotify gives the same wd for a directory watched twice */
        e->wd = inotify_add_watch(w->fd, e->dir, EVENTS);
        if (e->wd < 0)
            ks_log_warn("lua-watch", "cannot watch %s: %s", e->dir, strerror(errno));
        w->n++;
    }
}

int ks_watch_fd(const struct ks_watch *w)
{
    return w != NULL ? w->fd : -1;
}

void ks_watch_process(struct ks_watch *w, int64_t now_ms, int64_t debounce_ms)
{
    if (w == NULL)
        return;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            return;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->len == 0)
                continue;
            for (size_t i = 0; i < w->n; i++)
                if (w->v[i].wd == ev->wd && strcmp(w->v[i].name, ev->name) == 0) {
                    /* every event restarts the quiet time: an editor's
                     * several writes make one reload */
                    w->due_ms = now_ms + debounce_ms;
                    if (w->due_ms == 0)
                        w->due_ms = 1;
                    w->changed = w->v[i].path;
                }
        }
    }
}

int64_t ks_watch_timeout(const struct ks_watch *w, int64_t now_ms)
{
    if (w == NULL || w->due_ms == 0)
        return -1;
    return w->due_ms > now_ms ? w->due_ms - now_ms : 0;
}

bool ks_watch_due(struct ks_watch *w, int64_t now_ms, const char **what)
{
    if (w == NULL || w->due_ms == 0 || now_ms < w->due_ms)
        return false;
    w->due_ms = 0;
    *what = w->changed != NULL ? w->changed : "a script";
    return true;
}
