/*
 * master.c: the master process.  One event loop over the signalfd, the
 * control socket and a 1 s tick; it never touches client traffic and never
 * blocks.  It binds the listeners once, forks workers that inherit them,
 * keeps the pool between min_spare and max_spare idle workers (Apache
 * prefork style), respawns crashed workers with a per-slot backoff,
 * reloads the configuration on SIGHUP and stops gracefully on SIGTERM.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keystoned/log.h"
#include "keystoned/util.h"
#include "master/control.h"
#include "master/health.h"
#include "master/dynroutes.h"
#include "master/luacheck.h"
#include "master/master.h"
#include "master/publish.h"
#include "master/watch.h"
#include "shm/shm.h"
#include "shm/statefile.h"
#include "shm/token.h"
#include "worker/worker.h"

#define TICK_MS 1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define BACKOFF_RESET_MS 30000  /* a worker that lived this long (or served) resets its slot's backoff */
#define SPAWN_RATE_MAX 32

/* Master-private view of a scoreboard slot (the scoreboard itself is
 * written by the worker; the master keeps its own truth here). */
struct ks_slot {
    pid_t pid;                  /* 0 = no process */
    uint64_t process_gen;       /* listener generation it serves */
    int64_t started_ms;
    int64_t backoff_ms;         /* delay before the next respawn after a crash */
    int64_t respawn_at_ms;      /* > 0: slot reserved, respawn at this time */
    bool retiring;              /* told to finish and exit */
    bool in_slot;               /* its pid has been seen in its scoreboard slot */
    int64_t retire_deadline_ms; /* retiring: killed if still there then */
};

struct ks_listener {
    int fd;
    enum ks_listener_kind kind;
    struct ks_addr addr;
};

struct ks_master {
    struct ks_config *cfg;
    bool foreground;
    bool debug;                 /* -d: debug level whatever server.log_level says */
    struct ks_shm shm;
    struct ks_listener listeners[KS_MAX_LISTENERS];
    int nlisteners;
    uint64_t process_gen;       /* generation at which the listeners were bound */
    int lifeline[2];            /* workers hold [0]; EOF tells them the master is gone */
    int sigfd;
    struct ks_control *control;
    struct ks_health_checker *health;   /* active checks (master/health.c) */
    struct ks_slot *slots;
    uint32_t nslots;
    int spawn_rate;             /* doubles while spares are missing */
    bool max_workers_logged;
    uint64_t fatal_gen;         /* generation whose workers failed to start (exit 2) */
    bool stopping, quitting;
    int64_t stop_deadline_ms;
    int64_t next_tick_ms;
    char *table_buf;
    size_t table_cap;
    struct ks_watch *watch;     /* inotify on the Lua scripts */
    struct ks_dynroutes *dyn;   /* runtime routes (survive reloads) */
    /* the key of the admin token's hash in the route table (shm/token.h):
     * drawn before any fork, inherited by the workers, written nowhere */
    unsigned char token_key[KS_TOKEN_KEY_LEN];
    int pidfile_fd;             /* locked pid file (keystoned.c owns it) */
    gid_t state_gid;            /* group of the state file, (gid_t)-1 for none */
    bool state_file_failing;    /* it is lost and could not be recreated (said once) */
    int ready_fd;               /* start-up verdict for a daemonizing parent */
};

/* ---- listeners ---------------------------------------------------------- */

static int bind_listener(const struct ks_addr *a, int backlog, char *err, size_t errlen)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket for %s: %s", a->text, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, backlog) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* A listener on a: a duplicate of the one of have[] already bound there
 * (a reload that keeps that address while another one changes: binding
 * it again would fail with EADDRINUSE, and the connections queued on it
 * must stay in its one kernel queue), else a new socket. */
static int open_listener(const struct ks_addr *a, int backlog, const struct ks_listener *have,
                         int nhave, char *err, size_t errlen)
{
    for (int i = 0; i < nhave; i++)
        if (have[i].fd >= 0 && strcmp(have[i].addr.text, a->text) == 0) {
            int fd = fcntl(have[i].fd, F_DUPFD_CLOEXEC, 0);
            if (fd < 0)
                snprintf(err, errlen, "cannot keep the listener on %s: %s", a->text, strerror(errno));
            return fd;
        }
    return bind_listener(a, backlog, err, errlen);
}

/* Open the listeners cfg asks for into out[], reusing those of have[]
 * whose address stays; all or nothing. */
static int bind_all(const struct ks_config *cfg, const struct ks_listener *have, int nhave,
                    struct ks_listener *out, int *n, char *err, size_t errlen)
{
    *n = 0;
    out[0] = (struct ks_listener){ .kind = KS_LISTEN_PUBLIC, .addr = cfg->server.public_addr };
    out[0].fd = open_listener(&out[0].addr, cfg->server.backlog, have, nhave, err, errlen);
    if (out[0].fd < 0)
        return -1;
    *n = 1;
    if (cfg->server.has_admin_addr) {
        out[1] = (struct ks_listener){ .kind = KS_LISTEN_ADMIN, .addr = cfg->server.admin_addr };
        out[1].fd = open_listener(&out[1].addr, cfg->server.backlog, have, nhave, err, errlen);
        if (out[1].fd < 0) {
            close(out[0].fd);
            *n = 0;
            return -1;
        }
        *n = 2;
    }
    return 0;
}

/* listen() again on a listening socket sets its queue length: a reload
 * applies server.backlog to the listeners it keeps, with no new socket. */
static void set_backlog(const struct ks_master *m)
{
    for (int i = 0; i < m->nlisteners; i++)
        if (listen(m->listeners[i].fd, m->cfg->server.backlog) < 0)
            ks_log_warn("reload", "cannot set the backlog of %s to %d: %s",
                        m->listeners[i].addr.text, m->cfg->server.backlog, strerror(errno));
}

static bool same_listeners(const struct ks_config *a, const struct ks_config *b)
{
    if (strcmp(a->server.public_addr.text, b->server.public_addr.text) != 0)
        return false;
    if (a->server.has_admin_addr != b->server.has_admin_addr)
        return false;
    return !a->server.has_admin_addr ||
           strcmp(a->server.admin_addr.text, b->server.admin_addr.text) == 0;
}

/* ---- configuration -------------------------------------------------------- */

struct ks_config *ks_master_load_config(const char *path, unsigned flags, struct ks_diag *diag)
{
    struct ks_config *cfg = ks_config_load_flags(path, flags, diag);
    if (cfg != NULL && ks_luacheck_config(cfg, diag) < 0) {
        ks_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* -d wins over the configuration, but only -d: a level of debug that
 * came from server.log_level goes with the next reload that lowers it. */
static void apply_log_level(const struct ks_master *m, const struct ks_config *cfg)
{
    static const char *const levels[] = { "error", "warn", "info", "debug" };
    if (m->debug) {
        ks_log_set_level(KS_LOG_DEBUG);
        return;
    }
    for (int i = 0; i < 4; i++)
        if (strcmp(cfg->server.log_level, levels[i]) == 0)
            ks_log_set_level((enum ks_log_level)i);
}

/* Build the route table for cfg and publish it; 0 or -1 with err. */
static int publish(struct ks_master *m, const struct ks_config *cfg, char *err, size_t errlen)
{
    /* a reload may make the table smaller than the buffers made at start */
    size_t cap = cfg->limits.route_table_size < m->table_cap ? cfg->limits.route_table_size : m->table_cap;
    size_t len = ks_publish_build_dyn(cfg, m->dyn, m->token_key, &m->shm, m->table_buf, cap, err, errlen);
    if (len == 0)
        return -1;
    /* the workers take their level from the table (worker.c apply_table) */
    if (m->debug)
        ((struct ks_table *)(void *)m->table_buf)->settings.log_level = KS_LOG_DEBUG;
    uint64_t gen = ks_shm_routes_publish(&m->shm, m->table_buf, len);
    ks_publish_sweep(cfg, &m->shm);
    ks_log_info("publish", "route table published: generation %llu, %zu bytes, %zu tenants",
                (unsigned long long)gen, len, cfg->ntenants);
    return 0;
}

/* ---- workers ------------------------------------------------------------- */

static uint64_t generation(const struct ks_master *m)
{
    return atomic_load_explicit(&m->shm.hdr->generation, memory_order_relaxed);
}

/* Close what only the master may hold, in a freshly forked worker. */
static void close_master_fds(struct ks_master *m)
{
    /* a worker must not keep the pid file lock after the master died */
    if (m->pidfile_fd >= 0)
        close(m->pidfile_fd);
    if (m->ready_fd >= 0)
        close(m->ready_fd);
    close(m->sigfd);
    close(m->lifeline[1]);
    ks_watch_free(m->watch);
    m->watch = NULL;
    ks_control_close(m->control, 0);
    m->control = NULL;
    ks_health_free(m->health, true);
    m->health = NULL;
}

static void spawn(struct ks_master *m, uint32_t slot)
{
    struct ks_slot *s = &m->slots[slot];
    pid_t master = getpid();    /* not the header's: it may be garbage (statefile.h) */
    pid_t pid = fork();
    if (pid < 0) {
        ks_log_error("fork", "cannot fork worker %u: %s", slot, strerror(errno));
        s->respawn_at_ms = ks_now_ms() + BACKOFF_MIN_MS;
        return;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        close_master_fds(m);
        struct ks_worker_args a = {
            .shm = &m->shm,
            .lifeline_fd = m->lifeline[0],
            .control_fd = -1,
            .master_pid = master,
            .slot = slot,
            .process_gen = m->process_gen,
            .token_key = m->token_key,
        };
        for (int i = 0; i < m->nlisteners; i++) {
            a.listen_fd[i] = m->listeners[i].fd;
            a.listen_kind[i] = m->listeners[i].kind;
        }
        a.nlisten = m->nlisteners;
        _exit(ks_worker_main(&a));
    }
    s->pid = pid;
    s->process_gen = m->process_gen;
    s->started_ms = ks_now_ms();
    s->respawn_at_ms = 0;
    s->retiring = false;
    s->in_slot = false;
    ks_log_info("worker-start", "worker %u started: pid %d, gen %llu", slot, (int)pid,
                (unsigned long long)generation(m));
}

static int free_slot(const struct ks_master *m)
{
    for (uint32_t i = 0; i < m->nslots; i++)
        if (m->slots[i].pid == 0 && m->slots[i].respawn_at_ms == 0)
            return (int)i;
    return -1;
}

/* Workers of the current listener generation that are not on their way out. */
static void count_workers(struct ks_master *m, int *alive, int *idle)
{
    *alive = *idle = 0;
    for (uint32_t i = 0; i < m->nslots; i++) {
        struct ks_slot *s = &m->slots[i];
        if (s->respawn_at_ms > 0) {
            (*alive)++;     /* will be back */
            continue;
        }
        if (s->pid == 0 || s->retiring || s->process_gen != m->process_gen)
            continue;
        (*alive)++;
        uint32_t st = atomic_load_explicit(&ks_shm_score(&m->shm, i)->state, memory_order_relaxed);
        int32_t spid = atomic_load_explicit(&ks_shm_score(&m->shm, i)->pid, memory_order_relaxed);
        if (spid == s->pid)
            s->in_slot = true;
        /* Not in its slot: a new worker, about to be idle; or one whose
         * slot a truncated or replaced state file lost (shm/statefile.h),
         * busy or not until it takes the slot again.  Counting that one
         * idle would retire busy workers and start no spare. */
        if (spid != s->pid ? !s->in_slot : st == KS_WS_STARTING || st == KS_WS_IDLE)
            (*idle)++;
    }
}

static int total_processes(const struct ks_master *m)
{
    int n = 0;
    for (uint32_t i = 0; i < m->nslots; i++)
        n += m->slots[i].pid != 0 || m->slots[i].respawn_at_ms > 0;
    return n;
}

static void retire(struct ks_master *m, uint32_t slot)
{
    struct ks_slot *s = &m->slots[slot];
    if (s->pid == 0 || s->retiring)
        return;
    s->retiring = true;
    s->retire_deadline_ms = ks_now_ms() + m->cfg->server.shutdown_timeout_ms;
    kill(s->pid, SIGTERM);
}

/* Apache prefork's policy: keep idle workers between min_spare and
 * max_spare; fork at a rate doubling each tick (1, 2, 4 ... 32) while
 * short, retire one idle worker per tick while over. */
static void maintain_spares(struct ks_master *m)
{
    if (m->stopping || m->fatal_gen == generation(m))
        return;
    const struct ks_server_config *sv = &m->cfg->server;
    int alive, idle;
    count_workers(m, &alive, &idle);
    /* the hint for the workers (worker.c: keep-alive connections give
     * their worker up to a waiting connection): none idle, none coming */
    bool all_busy = idle == 0 && (sv->min_spare == 0 || alive >= sv->max_workers);
    atomic_store_explicit(&m->shm.hdr->all_busy, all_busy ? 1 : 0, memory_order_relaxed);
    int want = 0;
    if (alive < sv->workers && idle < sv->min_spare)
        want = sv->workers - alive;
    else if (idle < sv->min_spare)
        want = sv->min_spare - idle;
    if (want > 0) {
        int room = sv->max_workers - alive;
        if (want > m->spawn_rate)
            want = m->spawn_rate;
        if (want > room)
            want = room;
        if (room <= 0 && !m->max_workers_logged) {
            ks_log_warn("max-workers", "max_workers (%d) reached: no spare worker can be started",
                        sv->max_workers);
            m->max_workers_logged = true;
        }
        for (int i = 0; i < want; i++) {
            int slot = free_slot(m);
            if (slot < 0)
                break;
            spawn(m, (uint32_t)slot);
        }
        if (m->spawn_rate < SPAWN_RATE_MAX)
            m->spawn_rate *= 2;
        return;
    }
    m->spawn_rate = 1;
    if (alive < sv->max_workers)
        m->max_workers_logged = false;
    if (idle > sv->max_spare) {
        for (uint32_t i = 0; i < m->nslots; i++) {
            struct ks_slot *s = &m->slots[i];
            uint32_t st = atomic_load(&ks_shm_score(&m->shm, i)->state);
            if (s->pid != 0 && !s->retiring && s->process_gen == m->process_gen &&
                st == KS_WS_IDLE) {
                ks_log_info("worker-retire", "retiring idle worker %u (pid %d): %d idle > max_spare %d",
                            i, (int)s->pid, idle, sv->max_spare);
                retire(m, i);
                break;
            }
        }
    }
}

static void respawn_due(struct ks_master *m, int64_t now)
{
    for (uint32_t i = 0; i < m->nslots; i++)
        if (m->slots[i].respawn_at_ms > 0 && now >= m->slots[i].respawn_at_ms && !m->stopping)
            spawn(m, i);
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status 0x%x", status);
}

static void reap(struct ks_master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        uint32_t slot = UINT32_MAX;
        for (uint32_t i = 0; i < m->nslots; i++)
            if (m->slots[i].pid == pid)
                slot = i;
        char how[96];
        describe_status(status, how, sizeof(how));
        if (slot == UINT32_MAX) {
            ks_log_debug("reap", "reaped unknown child %d: %s", (int)pid, how);
            continue;
        }
        struct ks_slot *s = &m->slots[slot];
        struct ks_score *sc = ks_shm_score(&m->shm, slot);
        uint64_t wgen = atomic_load(&sc->generation);
        /* its own count only if it got as far as taking its slot */
        bool served = atomic_load(&sc->pid) == pid && atomic_load(&sc->requests) > 0;
        ks_log_info("worker-exit", "worker %u exited: pid %d, gen %llu, status %s", slot, (int)pid,
                    (unsigned long long)wgen, how);
        /* the master marks the slot dead: the worker cannot any more */
        ks_shm_score_release(&m->shm, slot);

        int64_t now = ks_now_ms();
        bool crashed = WIFSIGNALED(status) ||
                       (WIFEXITED(status) && WEXITSTATUS(status) == KS_WORKER_EXIT_RESOURCE);
        bool fatal = WIFEXITED(status) && WEXITSTATUS(status) == KS_WORKER_EXIT_FATAL_INIT;
        bool replace = crashed && !s->retiring && !m->stopping &&
                       s->process_gen == m->process_gen;
        /* exit 0 without being told to finish: recycled after
         * max_requests_per_worker; replaced at once (the spare policy
         * alone would not, with idle workers left or min_spare 0) */
        bool recycled = WIFEXITED(status) && WEXITSTATUS(status) == KS_WORKER_EXIT_OK &&
                        !s->retiring && !m->stopping && s->process_gen == m->process_gen;
        s->pid = 0;
        if (fatal && !m->stopping) {
            m->fatal_gen = generation(m);
            ks_log_error("worker-fatal", "worker %u could not start; not starting more workers for "
                         "generation %llu (fix the problem and reload)",
                         slot, (unsigned long long)m->fatal_gen);
        }
        if (replace) {
            /* the delay is for crash loops: a worker that lived long, or
             * that served a request before it was killed (by an operator,
             * the OOM killer, the Lua watchdog, a poisonous request), was
             * not in one, and the pool must not empty under repeated kills */
            if (now - s->started_ms >= BACKOFF_RESET_MS || s->backoff_ms == 0 || served)
                s->backoff_ms = BACKOFF_MIN_MS;
            else if ((s->backoff_ms *= 2) > BACKOFF_MAX_MS)
                s->backoff_ms = BACKOFF_MAX_MS;
            s->respawn_at_ms = now + s->backoff_ms;
            ks_log_info("worker-respawn", "worker %u will be respawned in %lld ms", slot,
                        (long long)s->backoff_ms);
        } else if (recycled) {
            s->respawn_at_ms = now;     /* respawn_due() forks it in this turn */
            s->backoff_ms = 0;
        } else {
            s->respawn_at_ms = 0;
            s->backoff_ms = 0;
        }
        s->retiring = false;
    }
}

/* The Lua watchdog: a worker whose scoreboard says it has been inside one
 * Lua call for longer than lua.hard_timeout is stuck where the instruction
 * hook cannot reach it (a C-level loop such as a pathological pattern). */
static void lua_watchdog(struct ks_master *m, int64_t now)
{
    int64_t limit = m->cfg->lua.hard_timeout_ms;
    for (uint32_t i = 0; i < m->nslots; i++) {
        struct ks_score *sc = ks_shm_score(&m->shm, i);
        int64_t since = atomic_load_explicit(&sc->lua_since_ms, memory_order_relaxed);
        if (m->slots[i].pid != 0 && since > 0 && now - since > limit) {
            ks_log_error("lua-watchdog", "worker %u (pid %d) has been in Lua for %lld ms "
                         "(hard_timeout %lld ms): killed", i, (int)m->slots[i].pid,
                         (long long)(now - since), (long long)limit);
            kill(m->slots[i].pid, SIGKILL);
        }
    }
}

/* ---- reload ---------------------------------------------------------------- */

static bool str_differs(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") != 0;
}

/* Why cfg cannot be applied without a restart, or NULL. */
static const char *needs_restart(const struct ks_master *m, const struct ks_config *cfg,
                                 char *why, size_t len)
{
    const struct ks_config *old = m->cfg;
    const struct ks_shm_header *h = m->shm.hdr;
    static const struct {
        const char *key;
        size_t off;
    } fixed[] = {
        { "server.state_file", offsetof(struct ks_config, server.state_file) },
        { "server.pid_file", offsetof(struct ks_config, server.pid_file) },
        { "server.control_socket", offsetof(struct ks_config, server.control_socket) },
        { "server.error_log", offsetof(struct ks_config, server.error_log) },
        { "server.user", offsetof(struct ks_config, server.user) },
        { "server.group", offsetof(struct ks_config, server.group) },
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(fixed); i++) {
        const char *a = *(char *const *)((const char *)old + fixed[i].off);
        const char *b = *(char *const *)((const char *)cfg + fixed[i].off);
        if (str_differs(a, b)) {
            snprintf(why, len, "%s changed", fixed[i].key);
            return why;
        }
    }
    if ((uint64_t)cfg->server.max_workers > h->max_workers)
        snprintf(why, len, "server.max_workers grew beyond %u", h->max_workers);
    else if ((uint64_t)cfg->limits.max_upstreams > ks_shm_count(&m->shm, KS_REGION_HEALTH))
        snprintf(why, len, "limits.max_upstreams grew beyond %llu",
                 (unsigned long long)ks_shm_count(&m->shm, KS_REGION_HEALTH));
    else if ((uint64_t)cfg->limits.max_tenants > ks_shm_count(&m->shm, KS_REGION_TENANT_STATS))
        snprintf(why, len, "limits.max_tenants grew beyond %llu",
                 (unsigned long long)ks_shm_count(&m->shm, KS_REGION_TENANT_STATS));
    else if (cfg->limits.route_table_size > ks_shm_count(&m->shm, KS_REGION_ROUTES0))
        snprintf(why, len, "limits.route_table_size grew beyond %llu bytes",
                 (unsigned long long)ks_shm_count(&m->shm, KS_REGION_ROUTES0));
    else
        return NULL;
    return why;
}

/*
 * Start workers for a new listener set, then retire the old ones: new
 * connections go to the new workers while the old finish theirs.
 *
 * A listener the reload drops is shut down, not only closed: the old
 * workers share the socket, and until each of them has closed its copy
 * (at its SIGTERM, worker.c) the address would stay bound and listening,
 * taking connections nobody will accept, and a reload moving a listener
 * back there at once would fail with EADDRINUSE.  shutdown() acts on the
 * socket itself, in every process: the address stops listening now
 * (connect is refused, what was queued is reset) and can be bound again
 * (SO_REUSEADDR: a socket that no longer listens does not hold it).
 */
static void replace_listeners(struct ks_master *m, struct ks_listener *fresh, int n)
{
    for (int i = 0; i < m->nlisteners; i++) {
        bool kept = false;
        for (int k = 0; k < n && !kept; k++)
            kept = strcmp(fresh[k].addr.text, m->listeners[i].addr.text) == 0;
        if (!kept)
            shutdown(m->listeners[i].fd, SHUT_RDWR);
        close(m->listeners[i].fd);      /* kept: fresh[] has its duplicate */
    }
    memcpy(m->listeners, fresh, sizeof(*fresh) * (size_t)n);
    m->nlisteners = n;
    m->process_gen = generation(m);
    for (int i = 0; i < m->cfg->server.workers; i++) {
        int slot = free_slot(m);
        if (slot < 0)
            break;
        spawn(m, (uint32_t)slot);
    }
    for (uint32_t i = 0; i < m->nslots; i++)
        if (m->slots[i].pid != 0 && m->slots[i].process_gen != m->process_gen)
            retire(m, i);
        else if (m->slots[i].respawn_at_ms > 0 && m->slots[i].process_gen != m->process_gen)
            m->slots[i].respawn_at_ms = 0;
}

static void join_diag(const struct ks_diag *d, char *out, size_t len)
{
    size_t pos = 0;
    out[0] = '\0';
    for (size_t i = 0; i < d->n; i++)
        if (ks_appendf(out, len, &pos, "%s%s", i ? "; " : "", d->msgs[i]) < 0)
            break;
}

/* Reload the configuration file.  reply (if not NULL) receives the
 * control-socket answer: first line "<code> <message>", then the errors. */
static enum ks_reload_result reload(struct ks_master *m, char *reply, size_t replylen)
{
    struct ks_diag diag = { 0 };
    char msg[KS_RELOAD_MSG_LEN];
    size_t pos = 0;
    ks_log_info("reload", "reloading %s", m->cfg->path);
    struct ks_config *cfg = ks_master_load_config(m->cfg->path, 0, &diag);
    if (cfg == NULL) {
        for (size_t i = 0; i < diag.n; i++)
            ks_log_error("config", "%s", diag.msgs[i]);
        char joined[KS_RELOAD_MSG_LEN];
        join_diag(&diag, joined, sizeof(joined));
        size_t mpos = 0;   /* ks_appendf: a summary cut at the record's size is fine */
        ks_appendf(msg, sizeof(msg), &mpos, "FAILED: %zu error%s: %s", diag.n, diag.n == 1 ? "" : "s", joined);
        ks_shm_set_reload(&m->shm, KS_RELOAD_INVALID, msg);
        ks_log_error("reload", "reload FAILED, keeping generation %llu: configuration has %zu error%s",
                     (unsigned long long)generation(m), diag.n, diag.n == 1 ? "" : "s");
        if (reply != NULL) {
            ks_appendf(reply, replylen, &pos, "4 configuration invalid (%zu error%s), old configuration kept\n",
                       diag.n, diag.n == 1 ? "" : "s");
            for (size_t i = 0; i < diag.n; i++)
                if (ks_appendf(reply, replylen, &pos, "%s\n", diag.msgs[i]) < 0)
                    break;
        }
        ks_diag_free(&diag);
        return KS_RELOAD_INVALID;
    }
    char why[512], err[512];
    if (needs_restart(m, cfg, why, sizeof(why)) != NULL) {
        snprintf(msg, sizeof(msg), "FAILED: restart required: %s", why);
        ks_shm_set_reload(&m->shm, KS_RELOAD_RESTART, msg);
        ks_log_error("reload", "reload FAILED, keeping generation %llu: restart required: %s",
                     (unsigned long long)generation(m), why);
        if (reply != NULL)
            ks_appendf(reply, replylen, &pos, "3 restart required: %s; old configuration kept\n", why);
        ks_config_free(cfg);
        return KS_RELOAD_RESTART;
    }
    struct ks_listener fresh[KS_MAX_LISTENERS];
    int nfresh = 0;
    bool new_listeners = !same_listeners(m->cfg, cfg);
    if (new_listeners && bind_all(cfg, m->listeners, m->nlisteners, fresh, &nfresh, err,
                                  sizeof(err)) < 0) {
        snprintf(msg, sizeof(msg), "FAILED: %s", err);
        ks_shm_set_reload(&m->shm, KS_RELOAD_INVALID, msg);
        ks_log_error("reload", "reload FAILED, keeping generation %llu: %s",
                     (unsigned long long)generation(m), err);
        if (reply != NULL)
            ks_appendf(reply, replylen, &pos, "4 %s; old configuration kept\n", err);
        ks_config_free(cfg);
        return KS_RELOAD_INVALID;
    }
    /* workers reopen the access log when the path changes: a new epoch,
     * before they can see the new table */
    atomic_fetch_add(&m->shm.hdr->log_epoch, 1);
    if (publish(m, cfg, err, sizeof(err)) < 0) {
        snprintf(msg, sizeof(msg), "FAILED: restart required: %s", err);
        ks_shm_set_reload(&m->shm, KS_RELOAD_RESTART, msg);
        ks_log_error("reload", "reload FAILED: %s", err);
        if (reply != NULL)
            ks_appendf(reply, replylen, &pos, "3 restart required: %s; old configuration kept\n", err);
        for (int i = 0; i < nfresh; i++)
            close(fresh[i].fd);
        ks_config_free(cfg);
        return KS_RELOAD_RESTART;
    }
    ks_health_configure(m->health, cfg);    /* keeps unchanged upstreams' state */
    ks_config_free(m->cfg);
    m->cfg = cfg;
    ks_dynroutes_prune(m->dyn, cfg);
    ks_watch_set(m->watch, cfg);
    apply_log_level(m, cfg);
    m->fatal_gen = 0;
    if (new_listeners)
        replace_listeners(m, fresh, nfresh);
    set_backlog(m);
    snprintf(msg, sizeof(msg), "applied: generation %llu", (unsigned long long)generation(m));
    ks_shm_set_reload(&m->shm, KS_RELOAD_APPLIED, msg);
    ks_log_info("reload", "reload applied: generation %llu%s", (unsigned long long)generation(m),
                new_listeners ? " (new listeners: workers replaced)" : "");
    if (reply != NULL)
        ks_appendf(reply, replylen, &pos, "0 reload applied: generation %llu\n",
                   (unsigned long long)generation(m));
    return KS_RELOAD_APPLIED;
}

/* A watched script changed and stayed quiet for lua.reload_debounce: the
 * same reload as SIGHUP. */
static void script_changed(struct ks_master *m, int64_t now)
{
    const char *what;
    if (m->stopping || !ks_watch_due(m->watch, now, &what))
        return;
    char path[PATH_MAX];
    ks_strlcpy(path, what, sizeof(path));   /* the reload replaces the watch list */
    ks_log_info("lua-watch", "%s changed: reloading", path);
    reload(m, NULL, 0);
}

/* ---- the state file -------------------------------------------------------------- */

/* Once a second, like the state file: a control socket removed (or
 * replaced) is made again, or keystonectl could never reach this master. */
static void watch_control_socket(struct ks_master *m)
{
    char err[512];
    int rc = m->control != NULL ? ks_control_watch(m->control, err, sizeof(err)) : 0;
    if (rc > 0)
        ks_log_warn("control", "the control socket %s was removed or replaced: made again",
                    m->cfg->server.control_socket);
    else if (rc < 0)
        ks_log_error("control", "the control socket %s was removed or replaced and cannot be made "
                     "again: %s; keystonectl cannot reach this daemon until it can",
                     m->cfg->server.control_socket, err);
}

/* Once a second: the state file overwritten in place is repaired, one
 * removed or replaced is made again (shm/statefile.h). */
static void watch_state_file(struct ks_master *m)
{
    const char *path = m->cfg->server.state_file;
    char err[512];
    if (ks_statefile_repair(&m->shm)) {
        ks_log_warn("state-file", "the state file %s was overwritten: its header is restored and "
                    "the route table published again", path);
        if (publish(m, m->cfg, err, sizeof(err)) < 0)
            ks_log_error("state-file", "cannot publish the route table again: %s", err);
    }
    if (!ks_statefile_lost(&m->shm)) {
        m->state_file_failing = false;
        return;
    }
    if (ks_statefile_recreate(&m->shm, m->state_gid, err, sizeof(err)) == 0) {
        ks_log_warn("state-file", "the state file %s was removed or replaced: made again (the "
                    "workers follow)", path);
        m->state_file_failing = false;
    } else if (!m->state_file_failing) {
        ks_log_error("state-file", "the state file %s was removed or replaced and cannot be made "
                     "again: %s; keystonectl cannot see this daemon until it can", path, err);
        m->state_file_failing = true;
    }
}

/* ---- stop ---------------------------------------------------------------------- */

static void begin_stop(struct ks_master *m, bool immediate)
{
    if (immediate)
        m->quitting = true;
    if (!m->stopping) {
        m->stopping = true;
        m->stop_deadline_ms = ks_now_ms() + m->cfg->server.shutdown_timeout_ms;
        atomic_store(&m->shm.hdr->stopping, 1);
        /* no new connections reach the master's copies of the listeners */
        for (int i = 0; i < m->nlisteners; i++)
            close(m->listeners[i].fd);
        m->nlisteners = 0;
        int n = total_processes(m);
        if (immediate)
            ks_log_info("stop", "immediate stop: %d worker%s killed (SIGKILL), requests in flight "
                        "are cut", n, n == 1 ? "" : "s");
        else
            ks_log_info("stop", "graceful stop: %d worker%s to finish (shutdown_timeout %lld ms)",
                        n, n == 1 ? "" : "s", (long long)m->cfg->server.shutdown_timeout_ms);
    } else if (immediate) {
        ks_log_info("stop", "immediate stop during a graceful one: the %d worker%s left killed "
                    "(SIGKILL)", total_processes(m), total_processes(m) == 1 ? "" : "s");
    }
    for (uint32_t i = 0; i < m->nslots; i++) {
        m->slots[i].respawn_at_ms = 0;
        if (m->slots[i].pid != 0) {
            if (immediate)
                kill(m->slots[i].pid, SIGKILL);
            else
                retire(m, i);
        }
    }
}

/* A worker told to finish (an old listener generation, a spare too
 * many) gets shutdown_timeout for its last request, like a stop: a
 * request that never ends (a tunnel, a stream) must not keep old
 * generations piling up reload after reload. */
static void retire_deadlines(struct ks_master *m, int64_t now)
{
    for (uint32_t i = 0; i < m->nslots; i++) {
        struct ks_slot *s = &m->slots[i];
        if (s->pid == 0 || !s->retiring || now < s->retire_deadline_ms)
            continue;
        ks_log_warn("worker-retire", "worker %u (pid %d) still busy %lld ms after it was told to "
                    "finish (shutdown_timeout): killed", i, (int)s->pid,
                    (long long)m->cfg->server.shutdown_timeout_ms);
        kill(s->pid, SIGKILL);
        s->retire_deadline_ms = now + TICK_MS;
    }
}

static void stop_deadline(struct ks_master *m, int64_t now)
{
    if (!m->stopping || now < m->stop_deadline_ms)
        return;
    for (uint32_t i = 0; i < m->nslots; i++)
        if (m->slots[i].pid != 0) {
            ks_log_warn("stop", "worker %u (pid %d) still busy after shutdown_timeout: killed", i,
                        (int)m->slots[i].pid);
            kill(m->slots[i].pid, SIGKILL);
        }
    m->stop_deadline_ms = now + TICK_MS;
}

/* ---- signals and control -------------------------------------------------------- */

static void signal_workers(struct ks_master *m, int sig)
{
    for (uint32_t i = 0; i < m->nslots; i++)
        if (m->slots[i].pid != 0)
            kill(m->slots[i].pid, sig);
}

static void handle_signals(struct ks_master *m)
{
    struct signalfd_siginfo si;
    while (read(m->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGHUP:
            if (!m->stopping)
                reload(m, NULL, 0);
            else    /* keystonectl reload is told so too (control_command) */
                ks_log_warn("reload", "SIGHUP ignored: keystoned is stopping (from pid %d)",
                            (int)si.ssi_pid);
            break;
        case SIGTERM:
        case SIGINT:
            begin_stop(m, false);
            break;
        case SIGQUIT:
            begin_stop(m, true);
            break;
        case SIGUSR1:
            atomic_fetch_add(&m->shm.hdr->log_epoch, 1);    /* before the workers reopen */
            if (ks_log_reopen() < 0)
                ks_log_error("reopen", "cannot reopen the error log: %s", strerror(errno));
            else
                ks_log_info("reopen", "log files reopened");
            signal_workers(m, SIGUSR1);
            break;
        case SIGCHLD:
            reap(m);
            break;
        default:    /* KS_IGNORED_SIGNALS: blocked, so they come here */
            ks_log_warn("signal", "SIG%s ignored: keystoned does not support it (from pid %d; "
                        "HUP reloads, TERM stops, USR1 reopens the logs)",
                        sigabbrev_np((int)si.ssi_signo) ? sigabbrev_np((int)si.ssi_signo) : "?",
                        (int)si.ssi_pid);
            break;
        }
    }
}

/* A runtime route change (a worker's, for Lua or the admin API): check
 * it, publish it.  Reply "0 <http status> <id> <generation>" or
 * "1 <http status> [retry-after=<seconds>] <reason>". */
static void route_command(struct ks_master *m, const char *cmd, char *reply, size_t len)
{
    char id[64], tenant[128], err[512];
    int status, retry_after;
    size_t pos = 0;
    if (m->stopping) {
        ks_appendf(reply, len, &pos, "1 503 keystoned is stopping\n");
        return;
    }
    if (ks_dynroutes_apply(m->dyn, m->cfg, cmd, ks_now_ms(), id, sizeof(id), tenant, sizeof(tenant),
                           &status, &retry_after, err, sizeof(err)) == 0) {
        if (retry_after > 0)
            ks_appendf(reply, len, &pos, "1 %d retry-after=%d %s\n", status, retry_after, err);
        else
            ks_appendf(reply, len, &pos, "1 %d %s\n", status, err);
        return;
    }
    if (publish(m, m->cfg, err, sizeof(err)) < 0) {
        ks_dynroutes_undo(m->dyn, err);
        ks_appendf(reply, len, &pos, "1 507 %s\n", err);
        return;
    }
    ks_dynroutes_published(m->dyn);
    const char *parts[] = { tenant };
    int slot = ks_shm_tenant_slot(&m->shm, ks_hash_strings(parts, 1));
    if (slot >= 0)
        atomic_fetch_add(&ks_shm_tenant_stats(&m->shm, (uint32_t)slot)->dynamic_changes, 1);
    ks_appendf(reply, len, &pos, "0 %d %s %llu\n", status, id, (unsigned long long)generation(m));
}

static void control_command(void *arg, const char *cmd, char *reply, size_t len)
{
    struct ks_master *m = arg;
    size_t pos = 0;
    if (strcmp(cmd, "reload") == 0) {
        if (m->stopping)
            ks_appendf(reply, len, &pos, "1 keystoned is stopping\n");
        else
            reload(m, reply, len);
    } else if (strcmp(cmd, "stop") == 0) {
        ks_appendf(reply, len, &pos, "0 stopping (pid %d)\n", (int)getpid());
        begin_stop(m, false);
    } else if (ks_dynroutes_is_command(cmd)) {
        route_command(m, cmd, reply, len);
    } else if (strcmp(cmd, "ping") == 0) {
        ks_appendf(reply, len, &pos, "0 pong: generation %llu\n", (unsigned long long)generation(m));
    } else {
        ks_appendf(reply, len, &pos, "1 unknown command \"%.64s\" (reload, stop, ping)\n", cmd);
    }
}

/* ---- start-up ------------------------------------------------------------------ */

struct ks_master *ks_master_new(struct ks_config *cfg, bool foreground, bool debug, char *err,
                                size_t errlen)
{
    struct ks_master *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->cfg = cfg;
    m->foreground = foreground;
    m->debug = debug;
    m->sigfd = -1;
    m->lifeline[0] = m->lifeline[1] = -1;
    m->shm.fd = -1;
    m->spawn_rate = 1;
    m->pidfile_fd = m->ready_fd = -1;
    m->dyn = ks_dynroutes_new();
    if (m->dyn == NULL) {
        snprintf(err, errlen, "out of memory");
        free(m);
        return NULL;
    }
    if (ks_token_key_new(m->token_key, err, errlen) < 0) {
        ks_dynroutes_free(m->dyn);
        free(m);
        return NULL;
    }
    /* before anything is bound or made: what is at the paths of the
     * state file and control socket must be free for this master (an
     * operator's file is never replaced, another master's never taken) */
    if (ks_shm_check_path(cfg->server.state_file, "server.state_file", err, errlen) < 0 ||
        ks_control_check_path(cfg->server.control_socket, err, errlen) < 0 ||
        bind_all(cfg, NULL, 0, m->listeners, &m->nlisteners, err, errlen) < 0) {
        m->cfg = NULL;
        ks_dynroutes_free(m->dyn);
        free(m);
        return NULL;
    }
    return m;
}

/* The group that owns the state file and control socket (server.group, or
 * server.user's group); (gid_t)-1 when neither is set. */
static int run_group(struct ks_master *m, gid_t *gid_out, char *err, size_t errlen)
{
    const struct ks_server_config *sv = &m->cfg->server;
    *gid_out = (gid_t)-1;
    if (sv->user == NULL && sv->group == NULL)
        return 0;
    struct passwd *pw = sv->user ? getpwnam(sv->user) : NULL;
    struct group *gr = sv->group ? getgrnam(sv->group) : NULL;
    if ((sv->user && pw == NULL) || (sv->group && gr == NULL)) {
        snprintf(err, errlen, "unknown %s \"%s\"", pw == NULL && sv->user ? "user" : "group",
                 pw == NULL && sv->user ? sv->user : sv->group);
        return -1;
    }
    *gid_out = gr ? gr->gr_gid : pw->pw_gid;
    return 0;
}

static int become_user(struct ks_master *m, gid_t gid, char *err, size_t errlen)
{
    const char *user = m->cfg->server.user;
    if (user == NULL)
        return 0;
    struct passwd *pw = getpwnam(user);
    if (pw == NULL || setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(pw->pw_uid) < 0) {
        snprintf(err, errlen, "cannot switch to user %s: %s", user, strerror(errno));
        return -1;
    }
    /* setuid clears the dumpable flag; PR_SET_PDEATHSIG survives it */
    ks_log_info("privileges", "running as user %s (uid %d, gid %d)", user, (int)pw->pw_uid, (int)gid);
    return 0;
}

static int start(struct ks_master *m, char *err, size_t errlen)
{
    const struct ks_config *cfg = m->cfg;
    apply_log_level(m, cfg);

    sigset_t set;
    sigemptyset(&set);
    int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGCHLD, KS_IGNORED_SIGNALS };
    for (size_t i = 0; i < KS_ARRAY_LEN(sigs); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    m->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sigfd < 0 || pipe2(m->lifeline, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "signalfd/pipe: %s", strerror(errno));
        return -1;
    }
    /* the workers' end must not be inherited by anything but workers: it is
     * O_CLOEXEC and nothing execs */

    struct ks_shm_limits lim = {
        .max_workers = (uint32_t)cfg->server.max_workers,
        .max_upstreams = (uint32_t)cfg->limits.max_upstreams,
        .max_tenants = (uint32_t)cfg->limits.max_tenants,
        .route_table_size = cfg->limits.route_table_size,
    };
    if (ks_shm_create(&m->shm, cfg->server.state_file, &lim, cfg->path, cfg->server.control_socket,
                      err, errlen) < 0)
        return -1;
    m->nslots = 2 * lim.max_workers;
    m->slots = calloc(m->nslots, sizeof(*m->slots));
    m->table_cap = cfg->limits.route_table_size;
    m->table_buf = malloc(m->table_cap);
    if (m->slots == NULL || m->table_buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ks_statefile_guard(&m->shm);
    gid_t gid;
    if (run_group(m, &gid, err, errlen) < 0)
        return -1;
    m->state_gid = gid;
    if (gid != (gid_t)-1 && fchown(m->shm.fd, 0, gid) < 0) {
        snprintf(err, errlen, "cannot chown state file: %s", strerror(errno));
        return -1;
    }
    m->control = ks_control_open(cfg->server.control_socket, gid, control_command, m, err, errlen);
    if (m->control == NULL)
        return -1;
    if (become_user(m, gid, err, errlen) < 0)
        return -1;
    if (publish(m, cfg, err, errlen) < 0)
        return -1;
    if ((m->health = ks_health_new(&m->shm, err, errlen)) == NULL)
        return -1;
    if (ks_health_configure(m->health, cfg) < 0) {
        snprintf(err, errlen, "out of memory configuring health checks");
        return -1;
    }
    m->watch = ks_watch_new();
    ks_watch_set(m->watch, cfg);
    m->process_gen = generation(m);
    for (int i = 0; i < cfg->server.workers; i++) {
        int slot = free_slot(m);
        if (slot >= 0)
            spawn(m, (uint32_t)slot);
    }
    ks_log_info("start", "keystoned %s started: pid %d, %d worker%s, listening on %s%s%s", PACKAGE_VERSION,
                (int)getpid(), cfg->server.workers, cfg->server.workers == 1 ? "" : "s",
                cfg->server.public_addr.text, cfg->server.has_admin_addr ? ", admin on " : "",
                cfg->server.has_admin_addr ? cfg->server.admin_addr.text : "");
    return 0;
}

static int poll_timeout(const struct ks_master *m, int64_t now)
{
    int64_t t = m->next_tick_ms - now;
    for (uint32_t i = 0; i < m->nslots; i++)
        if (m->slots[i].respawn_at_ms > 0 && m->slots[i].respawn_at_ms - now < t)
            t = m->slots[i].respawn_at_ms - now;
        else if (m->slots[i].pid != 0 && m->slots[i].retiring &&
                 m->slots[i].retire_deadline_ms - now < t)
            t = m->slots[i].retire_deadline_ms - now;
    if (m->stopping && m->stop_deadline_ms - now < t)
        t = m->stop_deadline_ms - now;
    if (m->control != NULL) {
        int c = ks_control_timeout(m->control);
        if (c >= 0 && c < t)
            t = c;
    }
    int h = m->health != NULL ? ks_health_timeout(m->health, now) : -1;
    if (h >= 0 && h < t)
        t = h;
    int64_t wt = ks_watch_timeout(m->watch, now);
    if (wt >= 0 && wt < t)
        t = wt;
    return t < 0 ? 0 : (int)t;
}

int ks_master_run(struct ks_master *m, int ready_fd, int pidfile_fd)
{
    char err[1024];
    m->ready_fd = ready_fd;
    m->pidfile_fd = pidfile_fd;
    int rc = start(m, err, sizeof(err));
    if (rc < 0) {
        ks_log_error("start", "%s", err);
        signal_workers(m, SIGKILL);
    }
    if (m->ready_fd >= 0) {
        dprintf(m->ready_fd, "%s\n", rc < 0 ? err : "ok");
        close(m->ready_fd);
        m->ready_fd = -1;
    }
    if (rc < 0)
        return 1;
    m->next_tick_ms = ks_now_ms() + TICK_MS;
    for (;;) {
        if (m->stopping && total_processes(m) == 0)
            break;
        struct pollfd pfd[64];
        size_t n = 0;
        pfd[n++] = (struct pollfd){ .fd = m->sigfd, .events = POLLIN };
        pfd[n++] = (struct pollfd){ .fd = ks_health_fd(m->health), .events = POLLIN };
        size_t watch_at = n;
        pfd[n++] = (struct pollfd){ .fd = ks_watch_fd(m->watch), .events = POLLIN };
        size_t control_first = n;
        if (m->control != NULL)
            n += ks_control_pollfds(m->control, pfd + n, KS_ARRAY_LEN(pfd) - n);
        int ready = poll(pfd, n, poll_timeout(m, ks_now_ms()));
        if (ready < 0 && errno != EINTR) {
            ks_log_error("poll", "poll: %s", strerror(errno));
            continue;
        }
        if (pfd[0].revents)
            handle_signals(m);
        if (m->control != NULL)
            ks_control_process(m->control, pfd + control_first, n - control_first);
        ks_health_run(m->health);   /* ready probes, deadlines, due probes */
        int64_t now = ks_now_ms();
        if (pfd[watch_at].revents)
            ks_watch_process(m->watch, now, m->cfg->lua.reload_debounce_ms);
        script_changed(m, now);
        respawn_due(m, now);
        stop_deadline(m, now);
        retire_deadlines(m, now);
        if (now >= m->next_tick_ms) {
            m->next_tick_ms = now + TICK_MS;
            watch_state_file(m);    /* first: the rest of the tick reads it */
            watch_control_socket(m);
            lua_watchdog(m, now);
            maintain_spares(m);
        }
    }
    ks_log_info("stop", "keystoned stopped");
    return 0;
}

void ks_master_free(struct ks_master *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->nlisteners; i++)
        close(m->listeners[i].fd);
    ks_control_close(m->control, 1);
    ks_health_free(m->health, false);
    ks_watch_free(m->watch);
    if (m->shm.base != NULL) {
        if (!ks_statefile_lost(&m->shm))    /* never someone else's file */
            ks_log_unlink("state file", m->cfg->server.state_file);
        ks_shm_close(&m->shm);
    }
    if (m->sigfd >= 0)
        close(m->sigfd);
    if (m->lifeline[0] >= 0) {
        close(m->lifeline[0]);
        close(m->lifeline[1]);
    }
    free(m->slots);
    free(m->table_buf);
    ks_dynroutes_free(m->dyn);
    ks_config_free(m->cfg);
    free(m);
}
