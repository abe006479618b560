/*
 * replay.c — runs a libFuzzer target without libFuzzer: every file named on
 * the command line is read whole and handed once to the target's
 * LLVMFuzzerTestOneInput, then "ok" is printed for it.
 *
 * `make test-fuzz-replay` (part of `make test`) links it with each
 * tests/fuzz/fuzz_<target>.c and the ASan+UBSan build of the sources (gcc: the
 * targets only define LLVMFuzzerTestOneInput), and tests/fuzz/replay.sh
 * replays every reproducer saved in tests/fuzz/crashes/ through its target,
 * so a regression is caught without clang. A failed invariant traps and a
 * sanitizer report aborts: either way the process dies and the file is named.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The file's bytes in a buffer of exactly their size (so ASan sees any overread). */
static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *more = realloc(buf, cap *= 2);
            if (!more)
                free(buf);
            buf = more;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    uint8_t *exact = malloc(n ? n : 1);
    if (exact && n)
        memcpy(exact, buf, n);
    free(buf);
    *size = n;
    return exact;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        size_t size = 0;
        uint8_t *data = slurp(argv[i], &size);
        if (!data) {
            fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[i]);
            return 2;
        }
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        printf("ok %s (%zu bytes)\n", argv[i], size);
        fflush(stdout);
    }
    return 0;
}
