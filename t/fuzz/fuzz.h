/*
 * fuzz.h: what the libFuzzer harnesses in t/fuzz/ share (t/fuzz/README.md).
 *
 * Each harness defines LLVMFuzzerTestOneInput(); `make fuzz` links it with
 * libFuzzer (clang -fsanitize=fuzzer,address,undefined), and `make check`
 * links the same file with replay.c, a main that runs it over the files of
 * its corpus, so that every crash once found stays fixed.  A harness
 * checks properties, not only "does not crash": a violated one calls
 * FUZZ_CHECK, which prints the reason and aborts.
 */
#ifndef KS_FUZZ_H
#define KS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* sandbox.c: leave the network for a namespace without one (exits with
 * 77 when that is impossible); the path of file in a directory of the
 * harness's own under /tmp, both removed at exit. */
void fuzz_isolate_network(void);
const char *fuzz_scratch_file(const char *harness, const char *file);

#define FUZZ_CHECK(cond, ...)                                                         \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#endif
