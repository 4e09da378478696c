/*
 * fuzz_util — small helpers shared by the libFuzzer targets in this
 * directory (tests/fuzz/fuzz_*.c). Not a target itself: CMake builds only
 * fuzz_*.c files, so this header never becomes an executable.
 *
 * FUZZ_CHECK is how a target states an invariant beyond "no crash": on
 * failure it prints the condition and the message to stderr and aborts,
 * which libFuzzer reports as a crash and saves as crash-<sha1>.
 */
#ifndef EDGECACHE_FUZZ_UTIL_H
#define EDGECACHE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...)                                                   \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            abort();                                                            \
        }                                                                       \
    } while (0)

/*
 * FUZZ_KNOWN(cond): true when cond holds and FUZZ_STRICT is not set in the
 * environment. A target uses it to step around a reported finding (one
 * with a reproducer in tests/fuzz/crashes/) so that the fuzzer keeps
 * looking for new ones; FUZZ_STRICT=1 turns every such exception off, so
 * that the reproducers fail again:
 *   FUZZ_STRICT=1 build-fuzz/tests/fuzz/<target> tests/fuzz/crashes/<target>-*
 */
static inline int fuzz_strict(void)
{
    static int strict = -1;
    if (strict < 0) {
        const char *v = getenv("FUZZ_STRICT");
        strict = v && v[0] && strcmp(v, "0") != 0;
    }
    return strict;
}

#define FUZZ_KNOWN(cond) (!fuzz_strict() && (cond))

/* The input as a NUL-terminated string (cut at its first NUL byte, if any).
 * malloc'd; aborts when out of memory (libFuzzer's -rss_limit_mb applies). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/*
 * Splits a NUL-terminated copy of the input into at most max fields on the
 * separator byte sep, in place: fields[i] points into buf. Returns the
 * number of fields found (>= 1); fields past it are set to NULL, so a
 * missing field reads as an absent header.
 */
static inline size_t fuzz_split(char *buf, char sep, char **fields, size_t max)
{
    size_t n = 0;
    char *p = buf;
    while (n < max) {
        fields[n++] = p;
        char *q = strchr(p, sep);
        if (!q)
            break;
        *q = '\0';
        p = q + 1;
    }
    for (size_t i = n; i < max; i++)
        fields[i] = NULL;
    return n;
}

static inline int fuzz_starts_with(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

#endif
