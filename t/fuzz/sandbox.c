/*
 * sandbox.c: what a fuzz harness keeps to itself: no network, and a
 * scratch directory of its own.
 *
 * The config loader resolves upstream host names (getaddrinfo), and a
 * fuzzer writes any name it likes; no query may leave the machine.  The
 * process moves into a network namespace of its own, which has no
 * interface up (not even loopback), so every lookup fails at once, here.
 * Root may do that directly; anyone else through a user namespace.  When
 * neither works the harness refuses to run rather than send queries.
 */
#include <config.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t/fuzz/fuzz.h"

void fuzz_isolate_network(void)
{
    static int done;
    if (done)
        return;
    if (unshare(CLONE_NEWNET) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
        fprintf(stderr, "fuzz: cannot enter a network namespace of its own (%s); refusing to "
                        "run a harness that may resolve names\n", strerror(errno));
        exit(77);
    }
    done = 1;
}

static char scratch_dir[64], scratch_path[192];

static void scratch_remove(void)
{
    unlink(scratch_path);
    rmdir(scratch_dir);
}

const char *fuzz_scratch_file(const char *harness, const char *file)
{
    if (scratch_dir[0] != '\0')
        return scratch_path;
    snprintf(scratch_dir, sizeof(scratch_dir), "/tmp/ks-fuzz-%s-XXXXXX", harness);
    if (mkdtemp(scratch_dir) == NULL) {
        perror("fuzz: mkdtemp");
        abort();
    }
    snprintf(scratch_path, sizeof(scratch_path), "%s/%s", scratch_dir, file);
    atexit(scratch_remove);
    return scratch_path;
}
