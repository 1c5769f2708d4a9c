/*
 * accesslog.c: the JSON access log (see accesslog.h).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "worker/accesslog.h"

/* The longest part of a path or an error that goes into a line. */
#define LOG_PATH_MAX 1024

/* The access log could not be opened or written (err): say so, once for
 * all workers per log epoch (see shm.h), with the words of the first. */
static void trouble(struct ks_worker *w, const char *what, int err)
{
    struct ks_shm_header *h = w->shm->hdr;
    uint32_t epoch = atomic_load_explicit(&h->log_epoch, memory_order_relaxed);
    if (w->access_log_epoch != epoch)
        return;     /* a descriptor of before the reopen: this worker reopens next */
    uint32_t seen = atomic_load_explicit(&h->access_log_reported, memory_order_relaxed);
    if (seen == epoch + 1 ||
        !atomic_compare_exchange_strong(&h->access_log_reported, &seen, epoch + 1))
        return;
    ks_log_error("access-log", "cannot %s the access log %s: %s; requests are served without "
                 "it until it works again (after USR1 for a file that must be reopened)",
                 what, w->access_log_path, strerror(err));
}

/* A line was written: if a trouble was reported, it is over. */
static void untroubled(struct ks_worker *w)
{
    struct ks_shm_header *h = w->shm->hdr;
    uint32_t seen = atomic_load_explicit(&h->access_log_reported, memory_order_relaxed);
    if (seen == 0 || !atomic_compare_exchange_strong(&h->access_log_reported, &seen, 0))
        return;
    ks_log_info("access-log", "the access log %s is written again (%llu lines lost since the start)",
                w->access_log_path,
                (unsigned long long)atomic_load_explicit(&h->access_log_lost, memory_order_relaxed));
}

void ks_accesslog_close(struct ks_worker *w)
{
    if (w->access_log_fd > 2)
        close(w->access_log_fd);
    w->access_log_fd = -1;
    w->access_log_path[0] = '\0';
}

void ks_accesslog_open(struct ks_worker *w, bool force)
{
    const char *path = ks_t_str(w->table, w->table->settings.access_log);
    if (!force && strcmp(path, w->access_log_path) == 0 && (w->access_log_fd >= 0 || strcmp(path, "off") == 0))
        return;
    ks_accesslog_close(w);
    ks_strlcpy(w->access_log_path, path, sizeof(w->access_log_path));
    w->access_log_epoch = atomic_load_explicit(&w->shm->hdr->log_epoch, memory_order_relaxed);
    if (strcmp(path, "off") == 0 || path[0] == '\0')
        return;
    if (strcmp(path, "stderr") == 0) {
        w->access_log_fd = 2;
        return;
    }
    w->access_log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (w->access_log_fd < 0)
        trouble(w, "open", errno);
}

static void str_field(char *b, size_t cap, size_t *pos, const char *name, const char *v, size_t n)
{
    ks_appendf(b, cap, pos, ",\"%s\":", name);
    if (v == NULL) {
        ks_appendf(b, cap, pos, "null");
        return;
    }
    ks_appendf(b, cap, pos, "\"");
    ks_json_escape(b, cap, pos, v, n > LOG_PATH_MAX ? LOG_PATH_MAX : n);
    ks_appendf(b, cap, pos, "\"");
}

void ks_accesslog_write(struct ks_worker *w, const struct ks_conn *c, const struct ks_request *r,
                        const struct ks_exchange *x, uint64_t bytes_in, uint64_t bytes_out)
{
    if (w->access_log_fd < 0) {
        if (strcmp(w->access_log_path, "off") != 0 && w->access_log_path[0] != '\0')
            atomic_fetch_add_explicit(&w->shm->hdr->access_log_lost, 1, memory_order_relaxed);
        return;
    }
    char line[16384];
    size_t pos = 0;
    int64_t now_us = ks_now_us();
    int64_t duration = r->start_us > 0 ? now_us - r->start_us : 0;
    char when[32];
    ks_format_rfc3339(ks_wall_ms() - duration / 1000, when, sizeof(when));
    int status = x != NULL && x->status != 0 ? x->status : r->status;
    const char *tenant = NULL;
    if (x != NULL && x->tenant != KS_NONE && x->tenant < w->table->ntenants)
        tenant = ks_t_str(w->table, ks_t_tenants(w->table)[x->tenant].name);

    ks_appendf(line, sizeof(line), &pos, "{\"time\":\"%s\",\"request_id\":\"%s\"", when, r->id);
    str_field(line, sizeof(line), &pos, "client", c->client_ip, strlen(c->client_ip));
    str_field(line, sizeof(line), &pos, "tenant", tenant, tenant ? strlen(tenant) : 0);
    str_field(line, sizeof(line), &pos, "method", r->method, r->method_len);
    str_field(line, sizeof(line), &pos, "path", r->path, r->path_len);
    ks_appendf(line, sizeof(line), &pos, ",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu", status,
               (unsigned long long)bytes_in, (unsigned long long)bytes_out);
    const char *up = x != NULL ? x->upstream_name : NULL;
    str_field(line, sizeof(line), &pos, "upstream", up, up ? strlen(up) : 0);
    if (x != NULL && x->upstream_status > 0)
        ks_appendf(line, sizeof(line), &pos, ",\"upstream_status\":%d", x->upstream_status);
    else
        ks_appendf(line, sizeof(line), &pos, ",\"upstream_status\":null");
    ks_appendf(line, sizeof(line), &pos, ",\"duration_us\":%lld", (long long)duration);
    if (x != NULL && up != NULL)
        ks_appendf(line, sizeof(line), &pos, ",\"upstream_duration_us\":%lld", (long long)x->upstream_us);
    else
        ks_appendf(line, sizeof(line), &pos, ",\"upstream_duration_us\":null");
    if (x != NULL && x->route != NULL)
        str_field(line, sizeof(line), &pos, "route", x->route, strlen(x->route));
    const char *err = x != NULL && x->error != NULL ? x->error : r->error;
    if (err != NULL)
        str_field(line, sizeof(line), &pos, "error", err, strlen(err));
    /* a line that would not fit was cut inside a field: close it anyway */
    if (pos > sizeof(line) - 4)
        pos = sizeof(line) - 4;
    memcpy(line + pos, "}\n", 2);
    pos += 2;
    ssize_t n;
    do
        n = write(w->access_log_fd, line, pos);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)pos) {
        untroubled(w);
        return;
    }
    /* a full disk, a file system gone read-only, ...: the line is lost,
     * the request is not */
    atomic_fetch_add_explicit(&w->shm->hdr->access_log_lost, 1, memory_order_relaxed);
    trouble(w, "write", n < 0 ? errno : ENOSPC);
}
