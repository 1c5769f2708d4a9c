/*
 * worker.h: a worker process.  Forked by the master, it inherits the
 * listeners and serves one connection at a time with blocking-style I/O
 * that always has a deadline.
 */
#ifndef KS_WORKER_H
#define KS_WORKER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "shm/shm.h"
#include "shm/table.h"

struct ks_request;

struct ks_header;
struct ks_lua_engine;
struct ks_sock_timeo;

#define KS_MAX_LISTENERS 4

enum ks_listener_kind { KS_LISTEN_PUBLIC, KS_LISTEN_ADMIN };

/* What came from w->answer_fd while a request was written (answer_seen). */
enum ks_answer {
    KS_ANSWER_FINAL,    /* a final answer: the wait ends */
    KS_ANSWER_TAKEN,    /* an interim head, taken off the socket: watching goes on */
    KS_ANSWER_LEFT,     /* left there for the answer's read: no more watching */
};

/* What the master hands a freshly forked worker. */
struct ks_worker_args {
    struct ks_shm *shm;             /* mapped read-write, inherited */
    int listen_fd[KS_MAX_LISTENERS];
    enum ks_listener_kind listen_kind[KS_MAX_LISTENERS];
    int nlisten;
    int lifeline_fd;                /* read end; EOF = the master is gone */
    int control_fd;                 /* this worker's end of its socketpair to the master */
    pid_t master_pid;
    uint32_t slot;                  /* scoreboard slot */
    uint64_t process_gen;           /* generation of the listener set */
    const unsigned char *token_key; /* the admin token hash's key (shm/token.h), the master's copy */
};

/* Exit codes of a worker (the master reads them). */
enum {
    KS_WORKER_EXIT_OK = 0,          /* recycled, retired or drained */
    KS_WORKER_EXIT_RESOURCE = 1,    /* out of memory, descriptors, ... */
    KS_WORKER_EXIT_FATAL_INIT = 2,  /* cannot start: do not respawn this generation */
};

/* Run the worker; returns its exit code. */
int ks_worker_main(const struct ks_worker_args *args);

/*
 * Per-process state of a worker: one instance, in ks_worker_main's frame.
 * Signal handlers only set the sig_atomic_t flags.
 */
struct ks_worker {
    const struct ks_worker_args *args;
    struct ks_shm *shm;
    struct ks_score *score;
    /* private copy of the active route table and the generation it is of */
    struct ks_table *table;
    struct ks_table *spare_table;   /* the next copy goes here, then they swap */
    size_t table_cap;
    bool have_table;
    uint64_t generation;
    int sched_batch;                /* the policy set: 1 batch, 0 normal, -1 not yet */
    unsigned table_buf;             /* route buffer it was copied from (rr cursors) */
    /* per-process buffers reused by every connection (sized from limits) */
    char *conn_buf;
    /* buffers replaced by larger ones while a request still used them
     * (its strings point into them): freed between requests */
    char *retired_buf;
    struct ks_header *retired_headers;
    size_t conn_cap;
    struct ks_header *headers;
    size_t max_headers;
    /* life */
    volatile sig_atomic_t stop;     /* TERM: finish the current request, exit */
    /* the inherited listeners; closed by the TERM handler (worker.c), after
     * which their numbers are never used again */
    int listen_fd[KS_MAX_LISTENERS];
    int nlisten;
    volatile sig_atomic_t listeners_closed;
    volatile sig_atomic_t reopen;   /* USR1: reopen logs */
    uint64_t requests;              /* served by this process */
    uint64_t request_seq;           /* for request ids */
    uint64_t id_seed;
    char id_prefix[16];             /* seed and pid in hex, the first half of every id */
    int access_log_fd;              /* -1 = off */
    uint32_t access_log_str;        /* table string it was opened for */
    uint32_t access_log_epoch;      /* shm log_epoch when it was opened */
    char access_log_path[4096];
    struct ks_proxy *proxy;         /* the proxy data path's buffers and pool (proxy.h) */
    struct ks_lua_engine *lua;      /* tenant Lua states (lua/handle.h) */
    int64_t fds_logged_ms;          /* last "descriptors" line (one a second) */
    int64_t state_retry_ms;         /* following a new state file failed: not before */
    int64_t table_logged_ms;        /* last "table" error line (one a second) */
    int64_t waiting_check_ms;       /* next look for a waiting connection (worker.c) */
    bool waiting_seen;              /* and the last look saw one */
    /* While a request is written to an upstream (proxy.c): its socket,
     * whose readability ends a wait to write there, or to read the
     * client's body meanwhile, when answer_seen says what came is a
     * final answer (the upstream answered early, without reading the
     * rest).  -1: none. */
    int answer_fd;
    enum ks_answer (*answer_seen)(struct ks_worker *w);
    /* per descriptor: the kernel timeouts conn.c set on blocking sockets */
    struct ks_sock_timeo *sock_timeo;
    size_t nsock_timeo;
    /* cached "Date:" line, rebuilt once a second */
    time_t date_sec;
    char date_line[64];
    size_t date_len;
};

/* The generation check before every request: one relaxed load; a changed
 * generation copies the new table.  Returns 0, or -1 when the table could
 * not be read (the old one stays). */
int ks_worker_refresh(struct ks_worker *w);
/* Set the scoreboard state (and its timestamp). */
void ks_worker_set_state(struct ks_worker *w, enum ks_worker_state s);
/* Out of descriptors (EMFILE/ENFILE on accept or on an upstream socket,
 * err says which): close the idle upstream connections, which are only a
 * cache, and say so at most once a second.  Returns how many descriptors
 * were freed (0: nothing to give, the caller must wait). */
uint32_t ks_worker_short_of_fds(struct ks_worker *w, const char *where, int err);
/* The worker's request id seed and prefix (once, at start); then
 * r->id and r->id_len: the next request id, 32 hex chars + NUL. */
void ks_worker_seed_request_ids(struct ks_worker *w);
void ks_worker_request_id(struct ks_worker *w, struct ks_request *r);

#endif
