/*
 * keystonectl.c: the control tool.  `status` maps the state file
 * read-only; `reload` and `stop` talk to the master's control socket;
 * `configtest` loads the configuration itself.
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keystoned/ctlclient.h"
#include "keystoned/util.h"
#include "master/config.h"
#include "master/master.h"
#include "shm/routelist.h"
#include "shm/shm.h"
#include "shm/table.h"
#include "shm/verdict.h"

#define DEFAULT_CONFIG KS_SYSCONFDIR "/keystone/keystone.yaml"
#define EXIT_NOT_RUNNING 1
#define EXIT_CONFIG_INVALID 4
#define CONTROL_TIMEOUT_MS 60000

#define USAGE "usage: keystonectl [-h] [-c config | -s state_file] command [-j]\n"

static _Noreturn void usage(void)
{
    fputs(USAGE "commands: status [-j], health [-j], routes [-j], reload, stop, configtest\n", stderr);
    exit(2);
}

/* -h: the options and commands in a line each (keystonectl(8) has more) */
static _Noreturn void help(void)
{
    printf(USAGE
           "  -c config      find the daemon by this configuration's server.state_file\n"
           "                 (default %s)\n"
           "  -s state_file  find the daemon by this state file\n"
           "  -j             print JSON (status, health, routes)\n"
           "  -h             print this help and exit\n"
           "commands:\n"
           "  status         master, reload, counters, workers, tenants and upstreams\n"
           "  health         each tenant's upstreams: state, checks, breaker\n"
           "  routes         each tenant's routes, static and dynamic\n"
           "  reload         reload the configuration (as kill -HUP) and say how it went\n"
           "  stop           ask the daemon for a graceful stop (as kill -TERM)\n"
           "  configtest     check the configuration file, or with -s the daemon's\n",
           DEFAULT_CONFIG);
    exit(0);
}

struct ctl {
    const char *config_path;
    const char *state_path;
    bool json;
    int bad_config_exit;    /* when -c names a file that cannot be read or parsed */
    struct ks_shm shm;
    struct ks_table *table;
};

/* ---- finding and mapping the daemon -------------------------------------- */

static const char *state_file_of(struct ctl *c, char *buf, size_t len)
{
    if (c->state_path != NULL)
        return c->state_path;
    char err[1024];
    if (ks_config_state_file(c->config_path, buf, len, err, sizeof(err)) < 0) {
        fprintf(stderr, "keystonectl: %s\n", err);
        exit(c->bad_config_exit);
    }
    return buf;
}

/* Map the state file and make sure a master is behind it. */
static void attach(struct ctl *c)
{
    char buf[PATH_MAX], err[512];
    const char *path = state_file_of(c, buf, sizeof(buf));
    if (ks_shm_open_readonly(&c->shm, path, err, sizeof(err)) < 0) {
        if (errno == ENOENT)
            fprintf(stderr, "keystonectl: keystoned is not running (no state file %s)\n", path);
        else if (errno == EACCES)
            /* it may well run: this user may not look */
            fprintf(stderr, "keystonectl: cannot read the state file %s: %s (status and health need "
                            "read access to it and its directories: root or server.group)\n",
                    path, strerror(errno));
        else
            fprintf(stderr, "keystonectl: keystoned is not running or its state file is unusable: %s\n", err);
        exit(EXIT_NOT_RUNNING);
    }
    pid_t pid = c->shm.hdr->master_pid;
    switch (ks_shm_master_liveness(c->shm.hdr)) {
    case KS_MASTER_GONE:
        fprintf(stderr, "keystonectl: keystoned is not running (stale state file %s: master pid %d is gone)\n",
                path, (int)pid);
        exit(EXIT_NOT_RUNNING);
    case KS_MASTER_REUSED:
        /* a master killed long ago may have left its pid to another process */
        fprintf(stderr, "keystonectl: keystoned is not running (stale state file %s: "
                        "master pid %d now belongs to another process)\n", path, (int)pid);
        exit(EXIT_NOT_RUNNING);
    case KS_MASTER_ALIVE:
        break;
    }
}

static void load_table(struct ctl *c)
{
    size_t cap = ks_shm_count(&c->shm, KS_REGION_ROUTES0);
    c->table = malloc(cap ? cap : 1);
    uint64_t gen;
    char err[256];
    ssize_t n = c->table ? ks_shm_routes_copy(&c->shm, c->table, cap, &gen, NULL) : -1;
    if (n < 0 || ks_table_check(c->table, (size_t)n, err, sizeof(err)) < 0) {
        fprintf(stderr, "keystonectl: the route table in the state file is unreadable%s%s\n",
                n < 0 ? "" : ": ", n < 0 ? "" : err);
        exit(EXIT_NOT_RUNNING);
    }
}

/* ---- output helpers ------------------------------------------------------------ */

static void json_str(FILE *f, const char *s)
{
    char buf[4096];
    size_t pos = 0;
    ks_json_escape(buf, sizeof(buf), &pos, s, strlen(s));
    fprintf(f, "\"%s\"", buf);
}

/* Copy an advisory scoreboard string (a worker may be writing it). */
static void safe_copy(char *dst, const char *src, size_t n)
{
    memcpy(dst, src, n);
    dst[n - 1] = '\0';
    for (char *p = dst; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

static void format_duration(int64_t s, char *buf, size_t len)
{
    if (s >= 86400)
        snprintf(buf, len, "%lldd %lldh %lldm", (long long)(s / 86400), (long long)(s % 86400 / 3600),
                 (long long)(s % 3600 / 60));
    else if (s >= 3600)
        snprintf(buf, len, "%lldh %lldm %llds", (long long)(s / 3600), (long long)(s % 3600 / 60),
                 (long long)(s % 60));
    else if (s >= 60)
        snprintf(buf, len, "%lldm %llds", (long long)(s / 60), (long long)(s % 60));
    else
        snprintf(buf, len, "%llds", (long long)s);
}

/* The same without spaces, for a column: "3m12s". */
static void format_duration_compact(int64_t s, char *buf, size_t len)
{
    char spaced[48];
    format_duration(s, spaced, sizeof(spaced));
    size_t k = 0;
    for (const char *p = spaced; *p != '\0' && k + 1 < len; p++)
        if (*p != ' ')
            buf[k++] = *p;
    buf[k] = '\0';
}

static const char *reload_name(enum ks_reload_result r)
{
    switch (r) {
    case KS_RELOAD_APPLIED: return "applied";
    case KS_RELOAD_INVALID: return "failed";
    case KS_RELOAD_RESTART: return "restart required";
    default: return "none";
    }
}

/* ---- status ---------------------------------------------------------------- */

struct worker_row {
    uint32_t slot;
    int32_t pid;
    uint64_t gen, requests;
    uint32_t state;
    int64_t state_for_ms;           /* time in that state */
    char client[KS_SCORE_CLIENT_LEN];
    char request[KS_SCORE_REQUEST_LEN];
};

static size_t read_workers(const struct ctl *c, struct worker_row *rows, size_t max, int *busy,
                           int *idle)
{
    size_t n = 0;
    *busy = *idle = 0;
    int64_t now = ks_now_ms();
    uint64_t slots = ks_shm_count(&c->shm, KS_REGION_SCOREBOARD);
    for (uint64_t i = 0; i < slots && n < max; i++) {
        const struct ks_score *sc = ks_shm_score(&c->shm, (uint32_t)i);
        int32_t pid = atomic_load(&sc->pid);
        if (pid <= 0)
            continue;
        struct worker_row *r = &rows[n++];
        r->slot = (uint32_t)i;
        r->pid = pid;
        r->gen = atomic_load(&sc->generation);
        r->requests = atomic_load(&sc->requests);
        r->state = atomic_load(&sc->state);
        /* a state changed since now was read gives a stamp after it */
        int64_t since = atomic_load(&sc->state_since_ms);
        r->state_for_ms = since > 0 && now > since ? now - since : 0;
        safe_copy(r->client, sc->client, sizeof(r->client));
        safe_copy(r->request, sc->request, sizeof(r->request));
        if (r->state == KS_WS_IDLE || r->state == KS_WS_STARTING)
            (*idle)++;
        else
            (*busy)++;
    }
    return n;
}

/* One line per upstream: name, url, state and since when, the last
 * probe's latency, then what explains the state (the last probe's failure,
 * the breaker, draining). */
static void print_upstreams_text(const struct ctl *c, const struct ks_t_tenant *tn)
{
    const struct ks_table *t = c->table;
    int64_t now = ks_now_ms();
    for (uint32_t k = 0; k < tn->nupstreams; k++) {
        const struct ks_t_upstream *u = &ks_t_upstreams(t)[tn->upstreams + k];
        const struct ks_health *h = ks_shm_health(&c->shm, u->health_slot);
        uint64_t w = atomic_load_explicit(&h->word, memory_order_acquire);
        bool checked = atomic_load(&h->checked) != 0;
        char since[64] = "-", ago[48], latency[32] = "-", notes[192] = "", why[64];
        size_t pos = 0;
        if (KS_HW_SINCE(w) > 0) {
            format_duration(ks_wall_ms() / 1000 - KS_HW_SINCE(w), ago, sizeof(ago));
            snprintf(since, sizeof(since), "since %s ago", ago);
        }
        if (checked)
            snprintf(latency, sizeof(latency), "%.1f ms", atomic_load(&h->last_latency_us) / 1000.0);
        ks_health_reason_text(h, why, sizeof(why));
        if (!checked)
            ks_appendf(notes, sizeof(notes), &pos, "not checked yet");
        else if (why[0] != '\0')
            ks_appendf(notes, sizeof(notes), &pos, "%s", why);
        if (KS_HW_STATE(w) != KS_HEALTH_DOWN && KS_HW_COUNT(w) > 0)
            ks_appendf(notes, sizeof(notes), &pos, " (%u failed in a row)", KS_HW_COUNT(w));
        else if (KS_HW_STATE(w) == KS_HEALTH_DOWN && KS_HW_COUNT(w) > 0)
            ks_appendf(notes, sizeof(notes), &pos, "%s%u good in a row", pos ? ", " : "", KS_HW_COUNT(w));
        int64_t ou = atomic_load(&h->open_until_ms);
        enum ks_breaker br = ks_breaker_of(ou, ks_probe_stale_ms(u), now);
        if (br == KS_BREAKER_OPEN) {
            format_duration((ou - now + 999) / 1000, ago, sizeof(ago));
            ks_appendf(notes, sizeof(notes), &pos, "%sbreaker open for %s", pos ? ", " : "", ago);
        } else if (br != KS_BREAKER_CLOSED) {
            ks_appendf(notes, sizeof(notes), &pos, "%sbreaker %s", pos ? ", " : "", ks_breaker_name(br));
        }
        if (u->weight == 0)
            ks_appendf(notes, sizeof(notes), &pos, "%sweight 0 (draining)", pos ? ", " : "");
        printf("    %-16s %-28s %-8s %-18s %9s%s%s\n", ks_t_str(t, u->name), ks_t_str(t, u->url),
               ks_health_state_name(KS_HW_STATE(w)), since, latency, notes[0] ? "  " : "", notes);
    }
}

/* Print what render() writes, in a buffer grown until it fits. */
typedef void render_fn(struct ks_jbuf *b, const struct ctl *c, const struct ks_t_tenant *tn);

static void print_rendered(render_fn *render, const struct ctl *c, const struct ks_t_tenant *tn)
{
    struct ks_jbuf b = { .cap = 16384 };
    for (;;) {
        char *np = realloc(b.p, b.cap);
        if (np == NULL) {
            fprintf(stderr, "keystonectl: out of memory\n");
            exit(EXIT_NOT_RUNNING);
        }
        b = (struct ks_jbuf){ .p = np, .cap = b.cap };
        render(&b, c, tn);
        if (!b.trunc)
            break;
        b.cap *= 2;
    }
    fwrite(b.p, 1, b.pos, stdout);
    free(b.p);
}

/* One tenant of status -j, as the admin API's /tenants shows it. */
static void render_tenant(struct ks_jbuf *b, const struct ctl *c, const struct ks_t_tenant *tn)
{
    ks_tenant_health_json(b, &c->shm, c->table, tn, ks_now_ms());
}

/* health -j: every tenant as the admin API's /tenants shows it. */
static void render_health(struct ks_jbuf *b, const struct ctl *c, const struct ks_t_tenant *unused)
{
    const struct ks_table *t = c->table;
    int64_t now = ks_now_ms();
    (void)unused;
    ks_jbuf_printf(b, "{\"generation\":%llu,\"tenants\":[",
                   (unsigned long long)atomic_load(&c->shm.hdr->generation));
    for (uint32_t i = 0; i < t->ntenants; i++) {
        ks_jbuf_printf(b, "%s", i ? "," : "");
        ks_tenant_health_json(b, &c->shm, t, &ks_t_tenants(t)[i], now);
    }
    ks_jbuf_printf(b, "]}\n");
}

/* keystonectl health: the tenants and their upstreams, nothing else. */
static int cmd_health(struct ctl *c)
{
    attach(c);
    load_table(c);
    const struct ks_table *t = c->table;
    int64_t now = ks_now_ms();
    if (c->json) {
        print_rendered(render_health, c, NULL);
        return 0;
    }
    for (uint32_t i = 0; i < t->ntenants; i++) {
        const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
        if (tn->nupstreams == 0) {
            printf("%s: no upstreams\n", ks_t_str(t, tn->name));
            continue;
        }
        uint32_t usable = ks_tenant_usable(&c->shm, t, tn, now);
        const char *down = tn->flags & KS_TF_ALL_DOWN_TRY ? " (DOWN: requests try the least recently failed)"
                                                           : " (DOWN: requests get 503)";
        printf("%s: %u/%u upstreams healthy%s\n", ks_t_str(t, tn->name), usable, tn->nupstreams,
               usable == 0 ? down : "");
        print_upstreams_text(c, tn);
    }
    return 0;
}

static int cmd_status(struct ctl *c)
{
    attach(c);
    load_table(c);
    const struct ks_shm_header *h = c->shm.hdr;
    const struct ks_table *t = c->table;
    enum ks_reload_result rr;
    int64_t rwall;
    char rmsg[KS_RELOAD_MSG_LEN];
    uint64_t rok, rfail;
    ks_shm_get_reload(&c->shm, &rr, &rwall, rmsg, sizeof(rmsg), &rok, &rfail);
    int64_t uptime = (ks_now_ms() - h->start_mono_ms) / 1000;
    uint64_t gen = atomic_load(&h->generation);
    struct worker_row *rows = calloc(ks_shm_count(&c->shm, KS_REGION_SCOREBOARD) + 1, sizeof(*rows));
    int busy = 0, idle = 0;
    size_t nrows = rows ? read_workers(c, rows, ks_shm_count(&c->shm, KS_REGION_SCOREBOARD), &busy, &idle) : 0;
    char when[40] = "-";
    if (rwall > 0)
        ks_format_rfc3339(rwall, when, sizeof(when));

    if (c->json) {
        printf("{\"version\":");
        json_str(stdout, h->version);
        printf(",\"master_pid\":%d,\"uptime_s\":%lld,\"generation\":%llu,\"stopping\":%s,",
               h->master_pid, (long long)uptime, (unsigned long long)gen,
               atomic_load(&h->stopping) ? "true" : "false");
        printf("\"config\":");
        json_str(stdout, h->config_path);
        printf(",\"reload\":{\"result\":\"%s\",\"time\":", reload_name(rr));
        json_str(stdout, rwall > 0 ? when : "");
        printf(",\"message\":");
        json_str(stdout, rmsg);
        printf(",\"ok\":%llu,\"failed\":%llu},", (unsigned long long)rok, (unsigned long long)rfail);
        printf("\"requests\":%llu,\"connections\":%llu,",
               (unsigned long long)atomic_load(&h->requests), (unsigned long long)atomic_load(&h->connections));
        printf("\"access_log\":{\"failing\":%s,\"lost\":%llu},",
               atomic_load(&h->access_log_reported) ? "true" : "false",
               (unsigned long long)atomic_load(&h->access_log_lost));
        printf("\"workers\":{\"busy\":%d,\"idle\":%d,\"total\":%zu,\"list\":[", busy, idle, nrows);
        for (size_t i = 0; i < nrows; i++) {
            printf("%s{\"slot\":%u,\"pid\":%d,\"generation\":%llu,\"state\":\"%s\","
                   "\"state_for_ms\":%lld,\"requests\":%llu,\"client\":",
                   i ? "," : "", rows[i].slot, rows[i].pid, (unsigned long long)rows[i].gen,
                   ks_worker_state_name((enum ks_worker_state)rows[i].state),
                   (long long)rows[i].state_for_ms, (unsigned long long)rows[i].requests);
            json_str(stdout, rows[i].client);
            printf(",\"request\":");
            json_str(stdout, rows[i].request);
            printf("}");
        }
        printf("]},");
        printf("\"tenants\":[");
        for (uint32_t i = 0; i < t->ntenants; i++) {
            printf("%s", i ? "," : "");
            print_rendered(render_tenant, c, &ks_t_tenants(t)[i]);
        }
        printf("]}\n");
    } else {
        char up[64];
        format_duration(uptime, up, sizeof(up));
        printf("keystoned %s, master pid %d, up %s%s\n", h->version, h->master_pid, up,
               atomic_load(&h->stopping) ? " (stopping)" : "");
        printf("config %s\n", h->config_path);
        /* a failed reload says why on the same line, as -j does in
         * reload.message, without the record's "FAILED: " and, for a
         * restart, the "restart required: " reload_name() already says */
        const char *why = "";
        if (rr == KS_RELOAD_INVALID || rr == KS_RELOAD_RESTART) {
            why = rmsg;
            if (strncmp(why, "FAILED: ", 8) == 0)
                why += 8;
            if (rr == KS_RELOAD_RESTART && strncmp(why, "restart required: ", 18) == 0)
                why += 18;
        }
        printf("generation %llu, last reload: %s%s%s%s%s\n", (unsigned long long)gen, reload_name(rr),
               rr != KS_RELOAD_NONE ? " at " : "", rr != KS_RELOAD_NONE ? when : "",
               why[0] ? ": " : "", why);
        printf("requests %llu, connections %llu\n", (unsigned long long)atomic_load(&h->requests),
               (unsigned long long)atomic_load(&h->connections));
        if (atomic_load(&h->access_log_lost) > 0)
            printf("access log: %llu lines lost%s\n", (unsigned long long)atomic_load(&h->access_log_lost),
                   atomic_load(&h->access_log_reported) ? ", failing now" : "");
        printf("workers: %d busy, %d idle, %zu total\n", busy, idle, nrows);
        printf("  %-5s %-8s %-6s %-10s %-8s %-9s %-22s %s\n", "SLOT", "PID", "GEN", "STATE", "FOR",
               "REQUESTS", "CLIENT", "REQUEST");
        for (size_t i = 0; i < nrows; i++) {
            char state_for[48];
            format_duration_compact(rows[i].state_for_ms / 1000, state_for, sizeof(state_for));
            printf("  %-5u %-8d %-6llu %-10s %-8s %-9llu %-22s %s\n", rows[i].slot, rows[i].pid,
                   (unsigned long long)rows[i].gen,
                   ks_worker_state_name((enum ks_worker_state)rows[i].state), state_for,
                   (unsigned long long)rows[i].requests, rows[i].client[0] ? rows[i].client : "-",
                   rows[i].request[0] ? rows[i].request : "-");
        }
        printf("tenants: %u\n", t->ntenants);
        for (uint32_t i = 0; i < t->ntenants; i++) {
            const struct ks_t_tenant *tn = &ks_t_tenants(t)[i];
            struct ks_tenant_counters n;
            ks_tenant_counters_read(&c->shm, tn, &n);
            uint32_t healthy = ks_tenant_usable(&c->shm, t, tn, ks_now_ms());
            printf("  %-16s base %-12s %u/%u upstreams healthy, %llu requests, %llu 4xx, %llu 5xx\n",
                   ks_t_str(t, tn->name), ks_t_str(t, tn->base_path), healthy, tn->nupstreams,
                   (unsigned long long)n.requests, (unsigned long long)n.responses_4xx,
                   (unsigned long long)n.responses_5xx);
            if (tn->lua_script != 0)
                printf("    lua %s: %llu errors, %llu timeouts, %llu out of memory, %llu route changes\n",
                       ks_t_str(t, tn->lua_script), (unsigned long long)n.lua_errors,
                       (unsigned long long)n.lua_timeouts, (unsigned long long)n.lua_oom,
                       (unsigned long long)n.route_changes);
            print_upstreams_text(c, tn);
        }
    }
    free(rows);
    return 0;
}

/* ---- routes ------------------------------------------------------------------------ */

/* The routes of every tenant: the scripts' (as the master's check found
 * them) and the runtime ones. */
static int cmd_routes(struct ctl *c)
{
    attach(c);
    load_table(c);
    const struct ks_table *t = c->table;
    uint64_t gen = atomic_load(&c->shm.hdr->generation);
    if (c->json) {
        size_t cap = ks_routelist_size(t);
        char *buf = malloc(cap);
        size_t n = buf != NULL ? ks_routelist_json(t, gen, true, buf, cap) : 0;
        if (n == 0) {
            fprintf(stderr, "keystonectl: out of memory\n");
            free(buf);
            return 1;
        }
        fwrite(buf, 1, n, stdout);
        free(buf);
        return 0;
    }
    printf("%-16s %-8s %-8s %-8s %-32s %s\n", "TENANT", "ID", "SOURCE", "METHOD", "PATTERN", "TARGET");
    for (uint32_t i = 0; i < t->nroutes; i++) {
        const struct ks_t_route *r = &ks_t_routes(t)[i];
        char target[160];
        ks_routelist_target(t, r, target, sizeof(target));
        printf("%-16s %-8s %-8s %-8s %-32s %s\n", ks_t_str(t, ks_t_tenants(t)[r->tenant].name),
               ks_t_str(t, r->id), (r->flags & KS_RF_DYNAMIC) ? "dynamic" : "static",
               ks_t_str(t, r->method), ks_t_str(t, r->pattern), target);
    }
    printf("%u route%s, generation %llu\n", t->nroutes, t->nroutes == 1 ? "" : "s",
           (unsigned long long)gen);
    return 0;
}

/* ---- control socket commands ------------------------------------------------------ */

static int cmd_control(struct ctl *c, const char *command)
{
    attach(c);
    /* the reply: "<code> <message>\n" then detail lines, then EOF */
    char reply[65536], err[512];
    if (ks_ctl_call(c->shm.hdr->control_socket, c->shm.hdr->master_pid, command, reply,
                    sizeof(reply), CONTROL_TIMEOUT_MS, err, sizeof(err)) < 0) {
        fprintf(stderr, "keystonectl: %s\n", err);
        return EXIT_NOT_RUNNING;
    }
    char *end;
    long code = strtol(reply, &end, 10);
    if (end == reply || *end != ' ') {
        fprintf(stderr, "keystonectl: unexpected answer from keystoned: %.200s\n", reply);
        return EXIT_NOT_RUNNING;
    }
    fputs(end + 1, code == 0 ? stdout : stderr);
    return (int)code;
}

/* ---- configtest -------------------------------------------------------------------- */

static int cmd_configtest(struct ctl *c)
{
    const char *path = c->config_path;
    char from_state[1024];
    if (c->state_path != NULL) {
        attach(c);
        ks_strlcpy(from_state, c->shm.hdr->config_path, sizeof(from_state));
        path = from_state;
    }
    struct ks_diag diag = { 0 };
    struct ks_config *cfg = ks_master_load_config(path, KS_CONFIG_START, &diag);
    if (cfg == NULL) {
        for (size_t i = 0; i < diag.n; i++)
            fprintf(stderr, "%s\n", diag.msgs[i]);
        fprintf(stderr, "keystonectl: configuration %s has %zu error%s\n", path, diag.n,
                diag.n == 1 ? "" : "s");
        ks_diag_free(&diag);
        return EXIT_CONFIG_INVALID;
    }
    ks_config_free(cfg);
    printf("configuration OK\n");
    return 0;
}

/* The state file is mapped: if it shrinks under us (truncated while we
 * read it), the pages past its end raise SIGBUS.  Say so instead of
 * dumping core. */
static void on_sigbus(int sig)
{
    static const char msg[] = "keystonectl: the state file shrank while it was read "
                              "(truncated or being replaced): try again\n";
    (void)sig;
    ssize_t n = write(2, msg, sizeof(msg) - 1);
    (void)n;
    _exit(EXIT_NOT_RUNNING);
}

int main(int argc, char **argv)
{
    signal(SIGBUS, on_sigbus);
    struct ctl c = { .config_path = DEFAULT_CONFIG, .bad_config_exit = EXIT_NOT_RUNNING,
                     .shm = { .fd = -1 } };
    int ch;
    while ((ch = getopt(argc, argv, "+c:s:jh")) != -1) {
        switch (ch) {
        case 'c':
            c.config_path = optarg;
            break;
        case 's':
            c.state_path = optarg;
            break;
        case 'j':
            c.json = true;
            break;
        case 'h':
            help();
        default:
            usage();
        }
    }
    if (optind >= argc)
        usage();
    const char *cmd = argv[optind++];
    while (optind < argc) {
        if (strcmp(argv[optind], "-j") == 0)
            c.json = true;
        else
            usage();
        optind++;
    }
    /* reload: the configuration is refused, as the daemon would refuse it;
     * the others: the daemon cannot be found */
    if (strcmp(cmd, "reload") == 0)
        c.bad_config_exit = EXIT_CONFIG_INVALID;
    int rc;
    if (strcmp(cmd, "status") == 0)
        rc = cmd_status(&c);
    else if (strcmp(cmd, "health") == 0)
        rc = cmd_health(&c);
    else if (strcmp(cmd, "routes") == 0)
        rc = cmd_routes(&c);
    else if (strcmp(cmd, "reload") == 0)
        rc = cmd_control(&c, "reload");
    else if (strcmp(cmd, "stop") == 0)
        rc = cmd_control(&c, "stop");
    else if (strcmp(cmd, "configtest") == 0)
        rc = cmd_configtest(&c);
    else
        usage();
    free(c.table);
    if (c.shm.base != NULL)
        ks_shm_close(&c.shm);
    return rc;
}
