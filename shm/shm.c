/*
 * shm.c: the shared segment: layout, create, attach read-only, route table
 * publish/read, reload record, health and tenant-stats slot assignment.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "shm/shm.h"
#include "shm/table.h"

const char *ks_worker_state_name(enum ks_worker_state s)
{
    static const char *const names[KS_WS_STATE_COUNT] = {
        "free", "starting", "idle", "reading", "lua", "proxying", "writing", "keepalive", "closing",
    };
    return (unsigned)s < KS_WS_STATE_COUNT ? names[s] : "?";
}

const char *ks_health_reason_name(enum ks_health_reason r)
{
    static const char *const names[KS_HR_COUNT] = {
        "", "connect refused", "connect timeout", "read timeout", "reset", "bad status",
        "bad response", "connect error",
    };
    return (unsigned)r < KS_HR_COUNT ? names[r] : "?";
}

void ks_shm_score_release(struct ks_shm *shm, uint32_t slot)
{
    struct ks_score *sc = ks_shm_score(shm, slot);
    atomic_store(&sc->state, KS_WS_FREE);
    atomic_store(&sc->lua_since_ms, 0);
    atomic_store(&sc->pid, 0);
    uint32_t hs = atomic_exchange(&sc->active_health, 0);
    if (hs == 0 || hs > ks_shm_count(shm, KS_REGION_HEALTH))
        return;
    /* the record may have been released and reused by a reload since:
     * only the upstream the worker counted itself on gets the decrement */
    struct ks_health *h = ks_shm_health(shm, hs - 1);
    if (atomic_load(&h->id) != atomic_load(&sc->active_id))
        return;
    uint64_t n = atomic_load(&h->active);
    while (n > 0 && !atomic_compare_exchange_weak(&h->active, &n, n - 1))
        ;
}

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) & ~(a - 1);
}

/* Fill the region table for these limits; returns the total size. */
static size_t layout(const struct ks_shm_limits *lim, struct ks_shm_region *reg)
{
    struct {
        uint64_t count, elem;
    } want[KS_REGION_COUNT] = {
        [KS_REGION_SCOREBOARD] = { 2ull * lim->max_workers, sizeof(struct ks_score) },
        [KS_REGION_HEALTH] = { lim->max_upstreams, sizeof(struct ks_health) },
        [KS_REGION_TENANT_STATS] = { lim->max_tenants, sizeof(struct ks_tenant_stats) },
        [KS_REGION_RR_CURSORS] = { 2ull * lim->max_tenants, sizeof(struct ks_rr_cursor) },
        [KS_REGION_ROUTES0] = { lim->route_table_size, 1 },
        [KS_REGION_ROUTES1] = { lim->route_table_size, 1 },
    };
    size_t off = align_up(sizeof(struct ks_shm_header), 4096);
    for (int r = 0; r < KS_REGION_COUNT; r++) {
        off = align_up(off, want[r].elem == 1 ? 4096 : 64);
        reg[r].offset = off;
        reg[r].count = want[r].count;
        reg[r].elem_size = want[r].elem;
        off += want[r].count * want[r].elem;
    }
    return align_up(off, 4096);
}

size_t ks_shm_size(const struct ks_shm_limits *lim)
{
    struct ks_shm_region reg[KS_REGION_COUNT];
    return layout(lim, reg);
}

int ks_shm_create(struct ks_shm *shm, const char *path, const struct ks_shm_limits *lim,
                  const char *config_path, const char *control_socket, char *err, size_t errlen)
{
    struct ks_shm_region reg[KS_REGION_COUNT];
    size_t size = layout(lim, reg);

    /* Build the new segment under a temporary name and rename it into
     * place, so that a keystonectl mapping a stale file never sees a
     * half-initialised one. */
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    int fd = ks_open_new(tmp, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create state file %s: %s", tmp, strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0640) < 0 || ftruncate(fd, (off_t)size) < 0) {
        snprintf(err, errlen, "cannot size state file %s to %zu bytes: %s", tmp, size,
                 strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        snprintf(err, errlen, "cannot map state file %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    /* ftruncate gives zeroed pages: every slot starts free */
    struct ks_shm_header *h = base;
    h->layout_version = KS_SHM_LAYOUT_VERSION;
    h->header_size = sizeof(*h);
    h->total_size = size;
    h->master_pid = (int32_t)getpid();
    h->max_workers = lim->max_workers;
    h->start_wall_ms = ks_wall_ms();
    h->start_mono_ms = ks_now_ms();
    h->master_start_ticks = ks_proc_start_ticks(getpid());
    ks_strlcpy(h->version, PACKAGE_VERSION, sizeof(h->version));
    ks_strlcpy(h->config_path, config_path, sizeof(h->config_path));
    ks_strlcpy(h->control_socket, control_socket, sizeof(h->control_socket));
    ks_strlcpy(h->state_path, path, sizeof(h->state_path));
    memcpy(h->regions, reg, sizeof(reg));
    /* magic last: a reader that sees it sees a complete header */
    atomic_thread_fence(memory_order_release);
    h->magic = KS_SHM_MAGIC;

    if (rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        munmap(base, size);
        close(fd);
        unlink(tmp);
        return -1;
    }
    shm->base = base;
    shm->hdr = h;
    shm->size = size;
    shm->fd = fd;
    shm->readonly = false;
    memcpy(shm->regions, reg, sizeof(reg));
    shm->pristine = malloc(sizeof(*h));
    if (shm->pristine == NULL) {
        snprintf(err, errlen, "out of memory");
        ks_shm_close(shm);
        unlink(path);
        return -1;
    }
    memcpy(shm->pristine, h, KS_SHM_STATIC_SIZE);
    shm->generation = 0;
    shm->incarnation = 0;
    return 0;
}

static int check_header(const struct ks_shm_header *h, size_t size, char *err, size_t errlen)
{
    static const size_t elem[KS_REGION_COUNT] = {
        [KS_REGION_SCOREBOARD] = sizeof(struct ks_score),
        [KS_REGION_HEALTH] = sizeof(struct ks_health),
        [KS_REGION_TENANT_STATS] = sizeof(struct ks_tenant_stats),
        [KS_REGION_RR_CURSORS] = sizeof(struct ks_rr_cursor),
        [KS_REGION_ROUTES0] = 1,
        [KS_REGION_ROUTES1] = 1,
    };
    if (h->magic != KS_SHM_MAGIC) {
        snprintf(err, errlen, "not a keystoned state file (bad magic)");
        return -1;
    }
    if (h->layout_version != KS_SHM_LAYOUT_VERSION || h->header_size != sizeof(*h)) {
        snprintf(err, errlen, "state file layout version %u is not %u (keystonectl and keystoned differ)",
                 h->layout_version, KS_SHM_LAYOUT_VERSION);
        return -1;
    }
    if (h->total_size != size) {
        snprintf(err, errlen, "state file is %zu bytes, header says %llu (truncated or corrupt)",
                 size, (unsigned long long)h->total_size);
        return -1;
    }
    for (int r = 0; r < KS_REGION_COUNT; r++) {
        const struct ks_shm_region *g = &h->regions[r];
        if (g->elem_size != elem[r] || g->offset < sizeof(*h) || g->offset > size ||
            g->count > (size - g->offset) / g->elem_size) {
            snprintf(err, errlen, "state file region %d out of bounds (corrupt)", r);
            return -1;
        }
    }
    if (h->regions[KS_REGION_SCOREBOARD].count != 2ull * h->max_workers ||
        h->regions[KS_REGION_RR_CURSORS].count % 2 != 0) {
        snprintf(err, errlen, "state file region sizes inconsistent (corrupt)");
        return -1;
    }
    return 0;
}

int ks_shm_open_readonly(struct ks_shm *shm, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open state file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct ks_shm_header)) {
        snprintf(err, errlen, "state file %s is too small to be a keystoned state file", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *base = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        snprintf(err, errlen, "cannot map state file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (check_header(base, size, err, errlen) < 0) {
        munmap(base, size);
        close(fd);
        return -1;
    }
    shm->base = base;
    shm->hdr = base;
    shm->size = size;
    shm->fd = fd;
    shm->readonly = true;
    memcpy(shm->regions, shm->hdr->regions, sizeof(shm->regions));
    shm->pristine = NULL;
    return 0;
}

enum ks_master_liveness ks_shm_master_liveness(const struct ks_shm_header *h)
{
    pid_t pid = h->master_pid;
    /* EPERM: it lives, as another user.  A zombie is gone too: killed,
     * its files closed and its sockets unbound, only its parent has not
     * reaped it yet (a supervisor or a pid 1 that reaps late). */
    if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH) || ks_proc_exited(pid))
        return KS_MASTER_GONE;
    uint64_t ticks = h->master_start_ticks, now_ticks = ks_proc_start_ticks(pid);
    if (ticks != 0 && now_ticks != 0 && ticks != now_ticks)
        return KS_MASTER_REUSED;
    return KS_MASTER_ALIVE;
}

/*
 * Two masters on one state file (started with different pid files) would
 * each see the file as "replaced" and make it again every second
 * (statefile.h), and keystonectl would reach either.  The second one is
 * refused here, by the master pid and start time the header records.  A
 * flock(2) on the file would say the same, but the lock belongs to the
 * open file description, which every worker inherits: after a kill -9 of
 * the master its workers, finishing their last requests, would keep the
 * path locked and no new master could start at once.  The check and the
 * rename that follows later are not atomic; two masters started in the
 * same millisecond are still caught by the control socket, which only one
 * of them can bind.
 */
int ks_shm_check_path(const char *path, const char *key, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s %s: %s", key, path, strerror(errno));
        return -1;
    }
    struct ks_shm_header h;
    ssize_t n = -1;
    if (S_ISREG(st.st_mode)) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            n = pread(fd, &h, sizeof(h), 0);
            close(fd);
        }
    }
    if (n != (ssize_t)sizeof(h) || h.magic != KS_SHM_MAGIC) {
        snprintf(err, errlen, "%s %s exists and is not a keystoned state file: refusing to "
                 "replace it (remove it or choose another path)", key, path);
        return -1;
    }
    if (h.master_pid != (int32_t)getpid() && ks_shm_master_liveness(&h) == KS_MASTER_ALIVE) {
        snprintf(err, errlen, "%s %s is already in use by keystoned pid %d", key, path,
                 (int)h.master_pid);
        return -1;
    }
    return 0;    /* stale: its master is gone */
}

void ks_shm_close(struct ks_shm *shm)
{
    if (shm->base != NULL)
        munmap(shm->base, shm->size);
    if (shm->fd >= 0)
        close(shm->fd);
    free(shm->pristine);
    shm->pristine = NULL;
    shm->base = NULL;
    shm->hdr = NULL;
    shm->fd = -1;
}

/*
 * Route table publish: a sequence lock over two buffers.
 *
 * The master is the only writer.  It makes route_seq odd, copies the new
 * table into the inactive buffer, switches route_active, bumps the
 * generation and makes route_seq even again.  A reader notes route_seq
 * (retrying while it is odd), copies the active buffer, and accepts the copy
 * only if route_seq did not move meanwhile; so a reader that was still
 * copying the old inactive buffer when the master started overwriting it
 * throws that copy away.  Readers never keep pointers into the buffers.
 *
 * The copy itself races with the writer by design (that is what the retry
 * is for); the fences order the sequence loads around it.
 */
uint64_t ks_shm_routes_publish(struct ks_shm *shm, const void *table, size_t len)
{
    struct ks_shm_header *h = shm->hdr;
    if (len > ks_shm_count(shm, KS_REGION_ROUTES0))
        return 0;
    unsigned idx = 1u - atomic_load_explicit(&h->route_active, memory_order_relaxed);
    uint32_t seq = atomic_load_explicit(&h->route_seq, memory_order_relaxed);

    atomic_store_explicit(&h->route_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);

    memcpy(ks_shm_region(shm, idx ? KS_REGION_ROUTES1 : KS_REGION_ROUTES0), table, len);
    uint64_t per_buf = ks_shm_count(shm, KS_REGION_RR_CURSORS) / 2;
    for (uint64_t t = 0; t < per_buf; t++) {
        struct ks_rr_cursor *c = ks_shm_rr_cursor(shm, idx, (uint32_t)t);
        atomic_store_explicit(&c->next, 0, memory_order_relaxed);
        atomic_store_explicit(&c->spill, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&h->route_active, idx, memory_order_relaxed);
    /* from the master's own count, not the header's (statefile.h) */
    uint64_t gen = shm->generation + 1;
    atomic_store_explicit(&h->generation, gen, memory_order_relaxed);

    atomic_store_explicit(&h->route_seq, seq + 2, memory_order_release);
    shm->generation = gen;
    return gen;
}

ssize_t ks_shm_routes_copy(const struct ks_shm *shm, void *dst, size_t cap, uint64_t *gen,
                           unsigned *buf_index)
{
    struct ks_shm_header *h = shm->hdr;
    size_t region = ks_shm_count(shm, KS_REGION_ROUTES0);
    /* a publish takes microseconds; a sequence stuck odd for this long
     * means the master died mid-publish (or the file is garbage) */
    for (unsigned spins = 0; spins < 1000000; spins++) {
        uint32_t s1 = atomic_load_explicit(&h->route_seq, memory_order_acquire);
        if (s1 & 1u) {
            if (spins > 16)
                sched_yield();
            continue;
        }
        unsigned idx = atomic_load_explicit(&h->route_active, memory_order_relaxed) & 1u;
        uint64_t g = atomic_load_explicit(&h->generation, memory_order_relaxed);
        const char *src = ks_shm_region(shm, idx ? KS_REGION_ROUTES1 : KS_REGION_ROUTES0);
        uint32_t size;
        memcpy(&size, src + offsetof(struct ks_table, size), sizeof(size));
        bool fits = size <= region && size <= cap;
        if (fits)
            memcpy(dst, src, size);
        atomic_thread_fence(memory_order_acquire);
        uint32_t s2 = atomic_load_explicit(&h->route_seq, memory_order_relaxed);
        if (s1 != s2)
            continue;
        if (!fits)
            return -1;
        *gen = g;
        if (buf_index != NULL)
            *buf_index = idx;
        return (ssize_t)size;
    }
    return -1;
}

void ks_shm_set_reload(struct ks_shm *shm, enum ks_reload_result r, const char *msg)
{
    struct ks_shm_header *h = shm->hdr;
    uint32_t seq = atomic_load_explicit(&h->reload_seq, memory_order_relaxed);
    atomic_store_explicit(&h->reload_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    h->reload_result = (int32_t)r;
    h->reload_wall_ms = ks_wall_ms();
    if (r == KS_RELOAD_APPLIED)
        h->reload_count_ok++;
    else
        h->reload_count_failed++;
    ks_strlcpy(h->reload_message, msg ? msg : "", sizeof(h->reload_message));
    atomic_store_explicit(&h->reload_seq, seq + 2, memory_order_release);
}

void ks_shm_get_reload(const struct ks_shm *shm, enum ks_reload_result *r, int64_t *wall_ms,
                       char *msg, size_t msglen, uint64_t *ok, uint64_t *failed)
{
    struct ks_shm_header *h = shm->hdr;
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s1 = atomic_load_explicit(&h->reload_seq, memory_order_acquire);
        if (s1 & 1u) {
            sched_yield();
            continue;
        }
        *r = (enum ks_reload_result)h->reload_result;
        *wall_ms = h->reload_wall_ms;
        *ok = h->reload_count_ok;
        *failed = h->reload_count_failed;
        size_t n = msglen - 1 < sizeof(h->reload_message) ? msglen - 1 : sizeof(h->reload_message);
        memcpy(msg, h->reload_message, n);
        msg[n] = '\0';
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&h->reload_seq, memory_order_relaxed) == s1)
            return;
    }
    /* the master died or stalled half-way through a write: say so rather
     * than hand back whatever the outputs held */
    *r = KS_RELOAD_NONE;
    *wall_ms = 0;
    *ok = *failed = 0;
    ks_strlcpy(msg, "(reload record busy)", msglen);
}

/* Slot assignment (master only).  Records are keyed by a stable 64-bit key
 * (the first field of both record types); a reload keeps the record, and so
 * the health state and counters, of every key that is still configured. */
static _Atomic uint64_t *record_key(const struct ks_shm *shm, enum ks_region r, uint64_t i)
{
    return (_Atomic uint64_t *)((char *)ks_shm_region(shm, r) + i * shm->regions[r].elem_size);
}

static int slot_for_key(struct ks_shm *shm, enum ks_region r, uint64_t key)
{
    uint64_t n = ks_shm_count(shm, r);
    int64_t free_slot = -1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t k = atomic_load_explicit(record_key(shm, r, i), memory_order_relaxed);
        if (k == key)
            return (int)i;
        if (k == 0 && free_slot < 0)
            free_slot = (int64_t)i;
    }
    if (free_slot < 0)
        return -1;
    _Atomic uint64_t *kp = record_key(shm, r, (uint64_t)free_slot);
    memset((void *)kp, 0, shm->regions[r].elem_size);
    atomic_store_explicit(kp, key, memory_order_release);
    return (int)free_slot;
}

/* A worker still serving the previous table may add to a released record
 * for a moment; the record is zeroed again when it is reused. */
static void sweep_keys(struct ks_shm *shm, enum ks_region r, const uint64_t *keep, size_t nkeep)
{
    uint64_t n = ks_shm_count(shm, r);
    for (uint64_t i = 0; i < n; i++) {
        _Atomic uint64_t *kp = record_key(shm, r, i);
        uint64_t k = atomic_load_explicit(kp, memory_order_relaxed);
        bool kept = k == 0;
        for (size_t j = 0; j < nkeep && !kept; j++)
            kept = keep[j] == k;
        if (!kept)
            atomic_store_explicit(kp, 0, memory_order_release);
    }
}

int ks_shm_health_slot(struct ks_shm *shm, uint64_t id)
{
    return slot_for_key(shm, KS_REGION_HEALTH, id);
}

int ks_shm_tenant_slot(struct ks_shm *shm, uint64_t key)
{
    return slot_for_key(shm, KS_REGION_TENANT_STATS, key);
}

void ks_shm_health_sweep(struct ks_shm *shm, const uint64_t *keep, size_t n)
{
    sweep_keys(shm, KS_REGION_HEALTH, keep, n);
}

void ks_shm_tenant_sweep(struct ks_shm *shm, const uint64_t *keep, size_t n)
{
    sweep_keys(shm, KS_REGION_TENANT_STATS, keep, n);
}

_Static_assert(offsetof(struct ks_health, id) == 0, "record key must come first");
_Static_assert(offsetof(struct ks_tenant_stats, key) == 0, "record key must come first");
