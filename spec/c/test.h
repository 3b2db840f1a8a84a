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
#include <fcntl.h>
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

/* ---- bytes ---- */

/* Little-endian reads of the on-disk format, independent of the engine. */
static inline uint32_t t_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t t_le64(const uint8_t *p)
{
    return (uint64_t)t_le32(p) | (uint64_t)t_le32(p + 4) << 32;
}

/* A seed derived from two numbers, e.g. (key index, version). */
static inline uint64_t t_mix(uint64_t a, uint64_t b)
{
    uint64_t s = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);
    return t_rand(&s);
}

/* len bytes that depend on the seed s only. */
static inline void t_fill(uint64_t s, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w = t_rand(&s);
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(out + i, &w, n);
    }
}

/* ---- files ---- */

/* The whole file at path, in a malloc'd buffer with `spare` bytes after it
 * to grow into (and one more, so an empty file is still an allocation). */
static inline uint8_t *t_read_file_spare(const char *path, size_t *len, size_t spare)
{
    struct stat st;
    uint8_t *buf;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
    CHECK(fd >= 0);
    CHECK(fstat(fd, &st) == 0);
    buf = malloc((size_t)st.st_size + spare + 1);
    CHECK(buf != NULL);
    CHECK(pread(fd, buf, (size_t)st.st_size, 0) == st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static inline uint8_t *t_read_file(const char *path, size_t *len) { return t_read_file_spare(path, len, 0); }

static inline void t_copy_file(const char *from, const char *to)
{
    uint8_t buf[1 << 16];
    int in = open(from, O_RDONLY);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ssize_t n;
    CHECK(in >= 0 && out >= 0);
    while ((n = read(in, buf, sizeof buf)) > 0)
        CHECK(write(out, buf, (size_t)n) == n);
    CHECK(n == 0);
    close(in);
    close(out);
}

/* Copy a store: directories and regular files, nothing else is expected. */
static inline void t_copy_tree(const char *from, const char *to)
{
    DIR *d = opendir(from);
    struct dirent *e;
    CHECK(d != NULL);
    CHECK(mkdir(to, 0755) == 0);
    while ((e = readdir(d))) {
        char *a, *b;
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        a = t_path(from, e->d_name);
        b = t_path(to, e->d_name);
        CHECK(lstat(a, &st) == 0);
        if (S_ISDIR(st.st_mode)) {
            t_copy_tree(a, b);
        } else {
            CHECK(S_ISREG(st.st_mode));
            t_copy_file(a, b);
        }
        free(a);
        free(b);
    }
    closedir(d);
}

/* NNNNNNNN.ext -> id, or -1 if the name is anything else. */
static inline long t_file_id(const char *name, const char *ext)
{
    size_t n = strlen(name);
    long id = 0;
    if (n != 9 + strlen(ext) || name[8] != '.' || strcmp(name + 9, ext) != 0)
        return -1;
    for (int i = 0; i < 8; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        id = id * 10 + (name[i] - '0');
    }
    return id;
}

/* store/SSS/NNNNNNNN.ext, malloc'd. */
static inline char *t_file_path(const char *store, unsigned shard, unsigned id, const char *ext)
{
    char *p;
    CHECK(asprintf(&p, "%s/%03x/%08u.%s", store, shard, id, ext) >= 0);
    return p;
}

/* qsort comparator for unsigned ids. */
static inline int t_cmp_unsigned(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* ---- stores ---- */

/* The harnesses run on encrypted stores too: with ARMDB_TEST_ENCRYPT=1 in
 * the environment (=2: AES-256-GCM) the options carry a key. */
static const unsigned char t_test_key[32] = "armdb test key, not for real use";
static inline void t_key_options(armdb_options *o)
{
    uint64_t e = t_env_u64("ARMDB_TEST_ENCRYPT", 0);
    if (!e)
        return;
    o->encryption_key = t_test_key;
    if (e == 2 && (o->flags & ARMDB_CREATE))
        o->flags |= ARMDB_CIPHER_AES;
}

/* Open with sync mode none and the given shape; a zero takes the default
 * (or, for an existing store, the stored setting). */
static inline armdb *t_open_store(const char *store, uint32_t key_len, uint32_t value_len, uint32_t shards,
                                  uint32_t wbuf, uint64_t max_file, uint32_t flags)
{
    armdb_options o;
    armdb *db = NULL;
    armdb_options_init(&o);
    o.key_len = key_len;
    o.value_len = value_len;
    o.shards = shards;
    o.write_buffer_size = wbuf;
    o.max_file_size = max_file;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.flags = flags;
    t_key_options(&o);
    CHECK_OK(armdb_open(store, &o, &db));
    CHECK(db != NULL);
    return db;
}

#endif
