/*
 * fuzz_config.c: the configuration loader (master/config.c, over libyaml
 * and master/yamltree.c).
 *
 * The input is a keystone.yaml, written to a file in a directory of the
 * harness (the loader reads files; scripts it names are read relative to
 * it).  Whatever the input, the loader returns a config or collects at
 * least one message, every message names the file, and a config it
 * returns has what keystone.yaml(5) promises of every loaded one.  Host
 * names are looked up in a network namespace without network
 * (sandbox.c).
 */
#include <config.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "master/config.h"
#include "t/fuzz/fuzz.h"

static const char *path;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_isolate_network();
    path = fuzz_scratch_file("config", "keystone.yaml");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (path == NULL)
        LLVMFuzzerInitialize(NULL, NULL);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    close(fd);

    struct ks_diag diag = { 0 };
    struct ks_config *cfg = ks_config_load(path, &diag);
    if (cfg == NULL) {
        FUZZ_CHECK(diag.n > 0, "refused without a message");
    } else {
        FUZZ_CHECK(diag.n == 0, "loaded, but with %zu messages (%s)", diag.n, diag.msgs[0]);
        FUZZ_CHECK(cfg->ntenants == 0 || cfg->tenants != NULL, "tenants");
        for (size_t i = 0; i < cfg->ntenants; i++) {
            const struct ks_tenant_config *t = &cfg->tenants[i];
            FUZZ_CHECK(t->name != NULL && t->name[0] != '\0', "tenant %zu has no name", i);
            FUZZ_CHECK(t->base_path != NULL && t->base_path[0] == '/', "base_path of %s", t->name);
            size_t bl = strlen(t->base_path);
            FUZZ_CHECK(bl == 1 || t->base_path[bl - 1] != '/', "base_path %s ends in /", t->base_path);
            FUZZ_CHECK(ks_config_tenant(cfg, t->name) != NULL, "tenant %s not found by name", t->name);
            for (size_t u = 0; u < t->nupstreams; u++)
                FUZZ_CHECK(t->upstreams[u].name != NULL &&
                               ks_tenant_upstream(t, t->upstreams[u].name) != NULL,
                           "upstream %zu of %s", u, t->name);
            FUZZ_CHECK(t->lua_limits.timeout_ms > 0, "lua timeout of %s not complete", t->name);
        }
        FUZZ_CHECK(cfg->server.workers >= 1, "workers %d", cfg->server.workers);
        FUZZ_CHECK(cfg->limits.max_request_line >= 256, "max_request_line");
        ks_config_free(cfg);
    }
    for (size_t i = 0; i < diag.n; i++)
        FUZZ_CHECK(strncmp(diag.msgs[i], path, strlen(path)) == 0 || strstr(diag.msgs[i], "keystone.yaml"),
                   "a message that does not name the file: %s", diag.msgs[i]);
    ks_diag_free(&diag);

    char state[512], err[256];
    ks_config_state_file(path, state, sizeof(state), err, sizeof(err));
    return 0;
}
