/*
 * replay.c: a main for the fuzz harnesses without libFuzzer (t/fuzz.t).
 *
 *   t/fuzz/replay_NAME FILE|DIR...
 *
 * Runs LLVMFuzzerTestOneInput() once on each file (the files of each
 * directory, not recursively) and prints "replay: N inputs"; a failed
 * property aborts, as it does under libFuzzer.
 */
#include <config.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "t/fuzz/fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            fclose(f);
            return -1;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        buf = realloc(buf, cap);
    }
    fclose(f);
    /* an exact copy, so that ASan sees a read past the input */
    unsigned char *in = malloc(n ? n : 1);
    if (in != NULL) {
        memcpy(in, buf, n);
        LLVMFuzzerTestOneInput(in, n);
        free(in);
    }
    free(buf);
    return in != NULL ? 0 : -1;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    unsigned long runs = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 2;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (run_file(argv[i]) != 0)
                return 2;
            runs++;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, alphasort);
        if (n < 0) {
            perror(argv[i]);
            return 2;
        }
        for (int k = 0; k < n; k++) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], names[k]->d_name);
            free(names[k]);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (run_file(path) != 0)
                return 2;
            runs++;
        }
        free(names);
    }
    printf("replay: %lu inputs\n", runs);
    return 0;
}
