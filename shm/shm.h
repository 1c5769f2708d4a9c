/*
 * shm.h: the shared segment, the contract between the master, the workers
 * and keystonectl.
 *
 * One file-backed mapping at server.state_file, created by the master at
 * start and sized from the capacity limits; it never grows.  Everything in
 * it is addressed by offsets from the start, never by pointers, so every
 * process (and keystonectl, mapping it read-only) agrees on it.
 *
 *   [ header | scoreboard | health | tenant stats | rr cursors | routes 0 | routes 1 ]
 *
 * Who writes what (one writer per field, unless the field is an atomic
 * counter that is only ever added to):
 *
 *   header            master (generation, reload result, route_seq/active)
 *   scoreboard[i]     worker owning slot i; the master only resets a slot
 *                     after reaping its worker (pid -> 0)
 *   health[i]         active-check fields: master.  passive fields (fails,
 *                     breaker) and request counters: any worker, atomically
 *   tenant_stats[i]   key: master; counters: workers (atomic add)
 *   rr_cursors        workers (atomic fetch-add); master zeroes a buffer's
 *                     cursors before publishing into it
 *   routes[0..1]      master, under the route_seq sequence counter
 */
#ifndef KS_SHM_H
#define KS_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KS_SHM_MAGIC 0x3130455441545353ULL /* "SSTATE01" little-endian */
#define KS_SHM_LAYOUT_VERSION 3

enum ks_region {
    KS_REGION_SCOREBOARD,
    KS_REGION_HEALTH,
    KS_REGION_TENANT_STATS,
    KS_REGION_RR_CURSORS,
    KS_REGION_ROUTES0,
    KS_REGION_ROUTES1,
    KS_REGION_COUNT
};

struct ks_shm_region {
    uint64_t offset;        /* from the start of the segment */
    uint64_t count;         /* elements */
    uint64_t elem_size;     /* bytes per element */
};

enum ks_reload_result {
    KS_RELOAD_NONE = 0,     /* no reload yet */
    KS_RELOAD_APPLIED = 1,
    KS_RELOAD_INVALID = 2,  /* config errors; old config kept */
    KS_RELOAD_RESTART = 3,  /* needs a restart; old config kept */
};

#define KS_RELOAD_MSG_LEN 1024

struct ks_shm_header {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t total_size;
    int32_t master_pid;
    uint32_t max_workers;       /* scoreboard has 2 x this many slots */
    int64_t start_wall_ms;      /* wall clock, for uptime display */
    int64_t start_mono_ms;      /* CLOCK_MONOTONIC at start */
    uint64_t master_start_ticks; /* ks_proc_start_ticks(master_pid), 0 = unknown */
    char version[16];           /* PACKAGE_VERSION */
    char config_path[1024];     /* absolute, so keystonectl -s finds the rest */
    char control_socket[256];
    char state_path[1024];      /* where the master keeps this file (workers follow it) */
    struct ks_shm_region regions[KS_REGION_COUNT];
    /* everything above is written once at create: the master keeps a copy
     * and restores it if the file is overwritten in place (statefile.h) */

    /* Bumped (release) after every publish; workers compare it (relaxed,
     * then acquire on change) before each request. */
    _Atomic uint64_t generation;
    /* Route table publish: odd while the master switches buffers. */
    _Atomic uint32_t route_seq;
    _Atomic uint32_t route_active;      /* 0 or 1 */

    /* Last reload, written by the master under reload_seq (odd while
     * writing) so keystonectl never prints a torn message. */
    _Atomic uint32_t reload_seq;
    int32_t reload_result;              /* enum ks_reload_result */
    int64_t reload_wall_ms;
    uint64_t reload_count_ok, reload_count_failed;
    char reload_message[KS_RELOAD_MSG_LEN];

    /* master state (master writes) */
    _Atomic uint32_t stopping;          /* 1 once TERM/INT/QUIT arrived */
    _Atomic uint32_t all_busy;          /* 1 while no worker is idle and none
                                         * will be started (each tick) */

    /* global counters (workers add) */
    _Atomic uint64_t connections;       /* accepted */
    _Atomic uint64_t requests;
    _Atomic uint64_t responses_4xx;
    _Atomic uint64_t responses_5xx;

    /* Log files.  log_epoch (master) counts the moments every worker
     * reopens its logs: USR1 and applied reloads.  A worker that cannot
     * open or write the access log with a descriptor of the current
     * epoch says so unless access_log_reported (workers, CAS) already
     * holds epoch + 1; any successful line sets it back to 0 and says
     * that too.  So the error log tells each trouble once, not once per
     * worker or per request, and again after a reopen that did not fix
     * it.  access_log_lost counts the lines that could not be written. */
    _Atomic uint32_t log_epoch;
    _Atomic uint32_t access_log_reported;
    _Atomic uint64_t access_log_lost;

    /* Bumped (master) in the old segment when the master moved to a new
     * state file (statefile.h): the workers still mapping the old one
     * open the new one and map it in its place. */
    _Atomic uint32_t incarnation;
};

/* The part of the header written once at create. */
#define KS_SHM_STATIC_SIZE offsetof(struct ks_shm_header, generation)

/* ---- scoreboard ------------------------------------------------------ */

enum ks_worker_state {
    KS_WS_FREE = 0,         /* slot unused */
    KS_WS_STARTING,         /* forked, initialising */
    KS_WS_IDLE,             /* waiting in accept */
    KS_WS_READING,          /* reading a request head or body */
    KS_WS_LUA,              /* running a Lua call */
    KS_WS_PROXYING,         /* waiting for / streaming from an upstream */
    KS_WS_WRITING,          /* writing a response */
    KS_WS_KEEPALIVE,        /* idle keep-alive connection */
    KS_WS_CLOSING,          /* draining before exit */
    KS_WS_STATE_COUNT
};
const char *ks_worker_state_name(enum ks_worker_state s);

#define KS_SCORE_REQUEST_LEN 96
#define KS_SCORE_CLIENT_LEN 64

/* One slot per live worker, written only by that worker.  The strings are
 * advisory (a reader may see them half-updated) and always NUL-terminated
 * by the reader. */
struct ks_score {
    _Atomic int32_t pid;            /* 0 = slot free */
    _Atomic uint32_t state;         /* enum ks_worker_state */
    _Atomic uint64_t generation;    /* config generation this worker serves */
    _Atomic uint64_t process_gen;   /* generation at which it was forked */
    _Atomic int64_t started_ms;     /* monotonic */
    _Atomic int64_t state_since_ms; /* monotonic (coarse), when state last changed */
    _Atomic int64_t lua_since_ms;   /* monotonic start of the Lua call, 0 = none */
    _Atomic uint64_t requests;
    _Atomic uint64_t connections;
    _Atomic uint64_t bytes_in;
    _Atomic uint64_t bytes_out;
    char client[KS_SCORE_CLIENT_LEN];
    char request[KS_SCORE_REQUEST_LEN];
    /* The upstream this worker has a request in flight on (counted in its
     * health record's `active`): health slot + 1 (0 = none) and the
     * record's id.  The master takes the request back out of `active`
     * when it reaps a worker that died with one in flight. */
    _Atomic uint32_t active_health;
    _Atomic uint64_t active_id;
} __attribute__((aligned(64)));

/* ---- health (per upstream, keyed by stable id) -------------------------- */

enum ks_health_state { KS_HEALTH_UNKNOWN = 0, KS_HEALTH_UP = 1, KS_HEALTH_DOWN = 2 };

/* Failure reasons of an active probe: a fixed set, explained in the
 * DIAGNOSTICS section of keystonectl.8. */
enum ks_health_reason {
    KS_HR_NONE = 0,
    KS_HR_CONNECT_REFUSED,
    KS_HR_CONNECT_TIMEOUT,
    KS_HR_READ_TIMEOUT,
    KS_HR_RESET,
    KS_HR_BAD_STATUS,       /* with last_status */
    KS_HR_BAD_RESPONSE,
    KS_HR_CONNECT_ERROR,    /* other connect errors (unreachable, ...) */
    KS_HR_COUNT
};
const char *ks_health_reason_name(enum ks_health_reason r);

/* The active-check verdict in one 64-bit word so that state, counter and
 * time of last change are always read together:
 *   bits  0..1   state (enum ks_health_state)
 *   bits  2..9   consecutive results in the other direction (rise/fall)
 *   bits 10..63  wall-clock seconds of the last state change */
#define KS_HW_STATE(w) ((unsigned)((w) & 3u))
#define KS_HW_COUNT(w) ((unsigned)(((w) >> 2) & 0xffu))
#define KS_HW_SINCE(w) ((int64_t)((w) >> 10))
#define KS_HW_MAKE(state, count, since)                                       \
    ((uint64_t)(state) | ((uint64_t)((count) & 0xffu) << 2) | ((uint64_t)(since) << 10))

struct ks_health {
    _Atomic uint64_t id;            /* stable upstream id; 0 = record free (master) */
    _Atomic uint64_t word;          /* KS_HW_* (master) */
    _Atomic uint32_t last_reason;   /* enum ks_health_reason (master) */
    _Atomic uint32_t last_status;   /* HTTP status of the last probe (master) */
    _Atomic uint32_t last_latency_us;
    _Atomic uint32_t checked;       /* 1 once a probe finished (master) */
    _Atomic int64_t last_check_wall_ms;
    _Atomic uint64_t checks_ok;
    _Atomic uint64_t checks_failed;
    /* passive breaker (workers): failures counted in a window; when
     * max_fails is reached the circuit opens until open_until_ms, then one
     * request may probe it (half-open, claimed by CAS on open_until_ms:
     * see shm/verdict.h for the encoding). */
    _Atomic uint64_t fail_window;   /* window start (monotonic ms) << 24 | count */
    _Atomic int64_t open_until_ms;  /* 0 closed; > 0 open until (monotonic); < 0 probing */
    _Atomic int64_t probe_taken_ms; /* monotonic; when the last probe was claimed */
    _Atomic int64_t last_fail_ms;   /* monotonic, for all_down: try_anyway */
    /* traffic counters (workers) */
    _Atomic uint64_t requests;
    _Atomic uint64_t failures;
    _Atomic uint64_t active;        /* requests in flight (add/sub) */
} __attribute__((aligned(64)));

/* ---- tenant stats (keyed by tenant-name hash) ------------------------- */

struct ks_tenant_stats {
    _Atomic uint64_t key;           /* hash of the tenant name (master) */
    _Atomic uint64_t requests;
    _Atomic uint64_t responses_4xx;
    _Atomic uint64_t responses_5xx;
    _Atomic uint64_t lua_errors;    /* runtime errors */
    _Atomic uint64_t lua_timeouts;
    _Atomic uint64_t lua_oom;
    _Atomic uint64_t dynamic_changes;
} __attribute__((aligned(64)));

/* ---- the segment ------------------------------------------------------ */

struct ks_shm_limits {
    uint32_t max_workers;       /* scoreboard gets 2x */
    uint32_t max_upstreams;
    uint32_t max_tenants;
    uint64_t route_table_size;  /* bytes per buffer */
};

struct ks_shm {
    struct ks_shm_header *hdr;
    void *base;
    size_t size;
    int fd;
    bool readonly;
    /* Private copies of what the header says about the layout, taken at
     * create or after validation: a header overwritten in place cannot
     * send a reader out of the mapping. */
    struct ks_shm_region regions[KS_REGION_COUNT];
    /* master: the static part of the header as created, and the last
     * generation it published (statefile.h repairs from them) */
    struct ks_shm_header *pristine;
    uint64_t generation;
    uint32_t incarnation;           /* of the file this process maps */
};

/* Size needed for these limits. */
size_t ks_shm_size(const struct ks_shm_limits *lim);
/* Master: create (replace) the state file with mode 0640 and map it. */
int ks_shm_create(struct ks_shm *shm, const char *path, const struct ks_shm_limits *lim,
                  const char *config_path, const char *control_socket, char *err, size_t errlen);
/* keystonectl: map an existing segment read-only, validating the header
 * (magic, version, sizes, region bounds) so garbage is reported, never
 * crashes the reader. */
int ks_shm_open_readonly(struct ks_shm *shm, const char *path, char *err, size_t errlen);
void ks_shm_close(struct ks_shm *shm);

/* Whether the master a state file header names still runs: its pid, and
 * the start time recorded beside it (a pid alone may have been reused). */
enum ks_master_liveness {
    KS_MASTER_ALIVE,
    KS_MASTER_GONE,         /* no process has that pid */
    KS_MASTER_REUSED,       /* the pid now belongs to another process */
};
enum ks_master_liveness ks_shm_master_liveness(const struct ks_shm_header *h);
/* Master, before it creates anything: may a new state file be put at
 * path (the value of the configuration key `key`)?  0 when nothing is
 * there or a state file whose master is gone is; -1 with err for anything
 * else, which ks_shm_create would replace: a file that is not a keystoned
 * state file, or the state file of a live master. */
int ks_shm_check_path(const char *path, const char *key, char *err, size_t errlen);

static inline void *ks_shm_region(const struct ks_shm *shm, enum ks_region r)
{
    return (char *)shm->base + shm->regions[r].offset;
}
static inline uint64_t ks_shm_count(const struct ks_shm *shm, enum ks_region r)
{
    return shm->regions[r].count;
}
static inline struct ks_score *ks_shm_score(const struct ks_shm *shm, uint32_t slot)
{
    return (struct ks_score *)ks_shm_region(shm, KS_REGION_SCOREBOARD) + slot;
}
/* Master, after reaping the worker of a slot: mark the slot free and take
 * the request that worker had in flight on an upstream (if any) back out
 * of that upstream's `active` count. */
void ks_shm_score_release(struct ks_shm *shm, uint32_t slot);

static inline struct ks_health *ks_shm_health(const struct ks_shm *shm, uint32_t slot)
{
    return (struct ks_health *)ks_shm_region(shm, KS_REGION_HEALTH) + slot;
}
static inline struct ks_tenant_stats *ks_shm_tenant_stats(const struct ks_shm *shm, uint32_t slot)
{
    return (struct ks_tenant_stats *)ks_shm_region(shm, KS_REGION_TENANT_STATS) + slot;
}
/* Round-robin cursors of tenant t in route buffer b (worker/balance.c):
 * next numbers the positions of its schedule, spill the requests whose
 * position named an upstream that could not take them.  Each pair has
 * its own cache line: every proxied request of every worker bumps next. */
struct ks_rr_cursor {
    _Atomic uint64_t next;
    _Atomic uint64_t spill;
} __attribute__((aligned(64)));
static inline struct ks_rr_cursor *ks_shm_rr_cursor(const struct ks_shm *shm, unsigned b,
                                                    uint32_t t)
{
    uint64_t per_buf = ks_shm_count(shm, KS_REGION_RR_CURSORS) / 2;
    return &((struct ks_rr_cursor *)ks_shm_region(shm, KS_REGION_RR_CURSORS))[b * per_buf + t];
}

/* ---- route table publish / read (see shm/table.h for the format) ------ */

/* Master: copy a finished table (len bytes, at most route_table_size) into
 * the inactive buffer, zero that buffer's round-robin cursors, make it the
 * active one and bump the generation.  Returns the new generation, or 0
 * when the table does not fit. */
uint64_t ks_shm_routes_publish(struct ks_shm *shm, const void *table, size_t len);
/* Worker/keystonectl: copy the active table (at most cap bytes) into dst.
 * Retries while the master is switching; *gen receives the generation the
 * copy belongs to and *buf_index the buffer it came from.  Returns the
 * number of bytes copied, or -1 if the table does not fit in cap or the
 * sequence never settles (a master that died mid-publish). */
ssize_t ks_shm_routes_copy(const struct ks_shm *shm, void *dst, size_t cap, uint64_t *gen,
                           unsigned *buf_index);

/* Master: record the result of a reload. */
void ks_shm_set_reload(struct ks_shm *shm, enum ks_reload_result r, const char *msg);
/* Reader: consistent copy of the last reload result. */
void ks_shm_get_reload(const struct ks_shm *shm, enum ks_reload_result *r, int64_t *wall_ms,
                       char *msg, size_t msglen, uint64_t *ok, uint64_t *failed);

/* Master: find or assign the health record / tenant stats slot of a key.
 * Keys that are no longer used are released by ks_shm_*_sweep() after a
 * successful publish.  Return the slot or -1 when full. */
int ks_shm_health_slot(struct ks_shm *shm, uint64_t id);
int ks_shm_tenant_slot(struct ks_shm *shm, uint64_t key);
/* Release every record whose key is not in keep[0..n). */
void ks_shm_health_sweep(struct ks_shm *shm, const uint64_t *keep, size_t n);
void ks_shm_tenant_sweep(struct ks_shm *shm, const uint64_t *keep, size_t n);

#endif
