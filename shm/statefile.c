/*
 * statefile.c: keeping the state file true while keystoned runs (see
 * statefile.h).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keystoned/util.h"
#include "shm/statefile.h"

/* ---- truncation -------------------------------------------------------- */

/* The segment the SIGBUS handler may repair: set once per process before
 * anything else can fault on it, and only read by the handler. */
static struct ks_shm *guarded;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    const char *a = si->si_addr;
    struct ks_shm *shm = guarded;
    /* a page of the segment beyond the end of a truncated file: give the
     * file its size back (ftruncate is async-signal-safe) and return, so
     * the access is made again, on a zeroed page */
    if (shm != NULL && a >= (const char *)shm->base && a < (const char *)shm->base + shm->size &&
        ftruncate(shm->fd, (off_t)shm->size) == 0)
        return;
    /* anything else is a real bus error */
    signal(sig, SIG_DFL);
    raise(sig);
}

void ks_statefile_guard(struct ks_shm *shm)
{
    guarded = shm;
    struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_NODEFER };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* ---- overwritten in place -------------------------------------------- */

bool ks_statefile_repair(struct ks_shm *shm)
{
    struct ks_shm_header *h = shm->hdr;
    if (shm->pristine == NULL)
        return false;
    uint32_t seq = atomic_load_explicit(&h->route_seq, memory_order_relaxed);
    /* the master is the only writer of all this, and it is not in the
     * middle of a publish when it calls this */
    if (memcmp(h, shm->pristine, KS_SHM_STATIC_SIZE) == 0 &&
        atomic_load_explicit(&h->generation, memory_order_relaxed) == shm->generation &&
        (seq & 1u) == 0 && atomic_load_explicit(&h->route_active, memory_order_relaxed) <= 1 &&
        atomic_load_explicit(&h->incarnation, memory_order_relaxed) == shm->incarnation)
        return false;
    h->magic = 0;       /* readers see no header while it is rewritten */
    atomic_thread_fence(memory_order_release);
    memcpy((char *)h + sizeof(h->magic), (const char *)shm->pristine + sizeof(h->magic),
           KS_SHM_STATIC_SIZE - sizeof(h->magic));
    atomic_store_explicit(&h->route_seq, (seq + 1u) & ~1u, memory_order_relaxed);
    atomic_store_explicit(&h->route_active, 0, memory_order_relaxed);
    atomic_store_explicit(&h->incarnation, shm->incarnation, memory_order_relaxed);
    atomic_store_explicit(&h->generation, shm->generation, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    h->magic = KS_SHM_MAGIC;
    return true;
}

/* ---- deleted or replaced ---------------------------------------------- */

/* Map fd (the new state file, incarnation inc) over the old mapping, at
 * the same address, so that every pointer into the segment stays good. */
static int move_to(struct ks_shm *shm, int fd, uint32_t inc, const char *path, char *err,
                   size_t errlen)
{
    if (mmap(shm->base, shm->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
        MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    close(shm->fd);
    shm->fd = fd;
    shm->incarnation = inc;
    return 0;
}

int ks_statefile_lost(const struct ks_shm *shm)
{
    struct stat a, b;
    if (shm->pristine == NULL || fstat(shm->fd, &b) < 0)
        return 0;
    if (stat(shm->pristine->state_path, &a) < 0)
        return errno == ENOENT || errno == ENOTDIR;
    return a.st_dev != b.st_dev || a.st_ino != b.st_ino;
}

int ks_statefile_recreate(struct ks_shm *shm, gid_t gid, char *err, size_t errlen)
{
    const char *path = shm->pristine->state_path;
    char tmp[sizeof(shm->pristine->state_path) + 32];
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    int fd = ks_open_new(tmp, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    const char *why = NULL;
    void *copy = MAP_FAILED;
    if (fchmod(fd, 0640) < 0 || (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0))
        why = "cannot set its owner and mode";
    else if (ftruncate(fd, (off_t)shm->size) < 0)
        why = "cannot size it";
    else if ((copy = mmap(NULL, shm->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
        why = "cannot map it";
    if (why != NULL) {
        snprintf(err, errlen, "%s %s: %s", why, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    /* the workers go on writing the old one meanwhile: what they write
     * between this copy and their move is lost (counters, mostly) */
    memcpy(copy, shm->base, shm->size);
    uint32_t next = shm->incarnation + 1;
    atomic_store(&((struct ks_shm_header *)copy)->incarnation, next);
    munmap(copy, shm->size);
    if (rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    /* tell the workers (in the old segment), then move */
    atomic_store(&shm->hdr->incarnation, next);
    return move_to(shm, fd, next, path, err, errlen);
}

int ks_statefile_follow(struct ks_shm *shm, char *err, size_t errlen)
{
    uint32_t want = atomic_load_explicit(&shm->hdr->incarnation, memory_order_acquire);
    if (want == shm->incarnation || shm->pristine == NULL)
        return 0;
    const char *path = shm->pristine->state_path;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open the new state file %s: %s", path, strerror(errno));
        return -1;
    }
    /* it must be this master's, and newer than what this worker maps:
     * check a read-only mapping first, then map it in place */
    struct stat st;
    void *look = MAP_FAILED;
    bool ok = fstat(fd, &st) == 0 && (size_t)st.st_size == shm->size &&
              (look = mmap(NULL, shm->size, PROT_READ, MAP_SHARED, fd, 0)) != MAP_FAILED;
    if (ok) {
        const struct ks_shm_header *h = look;
        ok = memcmp(h, shm->pristine, KS_SHM_STATIC_SIZE) == 0 &&
             atomic_load(&h->incarnation) > shm->incarnation;
        want = atomic_load(&h->incarnation);
        munmap(look, shm->size);
    }
    if (!ok) {
        snprintf(err, errlen, "%s is not (or no longer) a state file of this worker's master; "
                 "trying again in a second", path);
        close(fd);
        return -1;
    }
    return move_to(shm, fd, want, path, err, errlen) < 0 ? -1 : 1;
}
