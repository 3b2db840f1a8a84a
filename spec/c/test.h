/*
 * test.h - helpers shared by the C test programs under spec/c/.
 *
 * A test is one program: exit 0 pass, 1 fail, 77 skip. CHECK aborts the
 * program with file:line, the failed expression and the error text, in the
 * manner of LMDB's and liburing's tests.
 */
#ifndef ARMDB_TEST_H
#define ARMDB_TEST_H

#include "armdb.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define T_SKIP 77

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Assert that an armdb call returns `want`, printing both codes' text. */
#define CHECK_RC(call, want)                                                                       \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        int want_ = (want);                                                                        \
        if (rc_ != want_) {                                                                        \
            fprintf(stderr, "%s:%d: %s returned %d (%s; %s), expected %d (%s)\n", __FILE__,      \
                    __LINE__, #call, rc_, armdb_strerror(rc_), armdb_errmsg(), want_,            \
                    armdb_strerror(want_));                                                        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_OK(call) CHECK_RC(call, 0)

/* Deterministic PRNG (splitmix64), so every failure can be replayed by seed. */
static inline uint64_t t_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A fresh temporary directory under $TMPDIR (or /tmp); the caller frees it
 * with t_rmtree(). The store itself goes in a subdirectory of it so that
 * tests can also check "missing directory" paths. */
static inline char *t_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *p;
    if (!base || !*base)
        base = "/tmp";
    if (asprintf(&p, "%s/armdb-%s-XXXXXX", base, tag) < 0)
        exit(1);
    if (!mkdtemp(p)) {
        fprintf(stderr, "mkdtemp %s: %s\n", p, strerror(errno));
        exit(1);
    }
    return p;
}

static inline void t_rmtree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    if (!d) {
        unlink(path);
        return;
    }
    while ((e = readdir(d))) {
        char *sub;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (asprintf(&sub, "%s/%s", path, e->d_name) < 0)
            exit(1);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            t_rmtree(sub);
        else
            unlink(sub);
        free(sub);
    }
    closedir(d);
    rmdir(path);
}

/* Path join into a static-per-call malloc'd string. */
static inline char *t_path(const char *a, const char *b)
{
    char *p;
    if (asprintf(&p, "%s/%s", a, b) < 0)
        exit(1);
    return p;
}

/* Integer from the environment, for seeds and round counts. */
static inline uint64_t t_env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : dflt;
}

#endif
