/*
 * common.h - what the C benchmark programs share: failing loudly, the
 * clock and the seeded randomness, temp directories and disk usage,
 * dropping cached pages before cold tests, and what the machine is.
 *
 * Included by one .c file each (bench/core.c, bench/engines.c,
 * bench/c_ops.c), after it defines BENCH_PROG (its name, for messages);
 * everything is static, and marked unused so a program may take only what
 * it needs. MDB_OK is defined where <lmdb.h> was included first.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include "armdb.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define BENCH_UNUSED __attribute__((unused))

BENCH_UNUSED static char g_tmp[PATH_MAX]; /* the run's temp directory, removed at exit */
static unsigned g_dev_major BENCH_UNUSED, g_dev_minor BENCH_UNUSED; /* its device */

BENCH_UNUSED static void die(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: %s:%d: ", BENCH_PROG, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

#define DIE(...) die(__FILE__, __LINE__, __VA_ARGS__)
#define ARMDB_OK(call)                                                                                       \
    do {                                                                                                     \
        int rc_ = (call);                                                                                    \
        if (rc_ != 0)                                                                                        \
            DIE("%s: %s (%s)", #call, armdb_strerror(rc_), armdb_errmsg());                                  \
    } while (0)
#ifdef MDB_VERSION_MAJOR
#define MDB_OK(call)                                                                                         \
    do {                                                                                                     \
        int rc_ = (call);                                                                                    \
        if (rc_ != 0)                                                                                        \
            DIE("%s: %s", #call, mdb_strerror(rc_));                                                         \
    } while (0)

#endif

/* ---- clock, randomness ---- */

BENCH_UNUSED static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

BENCH_UNUSED static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A random permutation of 0..n-1; the same seed gives every engine the same order. */
BENCH_UNUSED static uint32_t *shuffled(size_t n, uint64_t seed)
{
    uint32_t *o = malloc(n * sizeof *o);
    if (!o)
        DIE("out of memory");
    for (size_t i = 0; i < n; i++)
        o[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(splitmix64(&seed) % (i + 1));
        uint32_t t = o[i];
        o[i] = o[j];
        o[j] = t;
    }
    return o;
}

BENCH_UNUSED static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

BENCH_UNUSED static void rm_tree(const char *dir)
{
    if (access(dir, F_OK) == 0 && nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        DIE("cannot remove %s: %s", dir, strerror(errno));
}

BENCH_UNUSED static uint64_t g_du;
BENCH_UNUSED static int du_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path, (void)ftw;
    if (flag == FTW_F)
        g_du += (uint64_t)st->st_blocks * 512;
    return 0;
}

/* Bytes allocated on disk under dir (sparse files count what they use). */
BENCH_UNUSED static uint64_t disk_usage(const char *dir)
{
    g_du = 0;
    if (nftw(dir, du_one, 16, FTW_PHYS) != 0)
        DIE("cannot walk %s", dir);
    return g_du;
}

/* A fresh, empty directory for one store. */
BENCH_UNUSED static const char *store_dir(const char *name)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    rm_tree(path);
    if (mkdir(path, 0755) != 0)
        DIE("mkdir %s: %s", path, strerror(errno));
    return path;
}

enum drop_method { DROP_ALL, DROP_FADVISE };
BENCH_UNUSED static enum drop_method g_drop;

BENCH_UNUSED static int fadv_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (flag != FTW_F)
        return 0;
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    return 0;
}

BENCH_UNUSED static bool drop_all_caches(void)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0)
        return false;
    bool ok = write(fd, "3", 1) == 1;
    close(fd);
    return ok;
}

/* Evict the store's pages from the OS page cache before a cold test: the
 * whole page cache (and dentries, inodes) when we may, else each of the
 * store's files with POSIX_FADV_DONTNEED, which needs no privilege. */
BENCH_UNUSED static void drop_caches(const char *dir)
{
    if (g_drop == DROP_ALL && drop_all_caches())
        return;
    sync();
    nftw(dir, fadv_one, 16, FTW_PHYS);
}

BENCH_UNUSED static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct machine {
    char cpu[256], kernel[256], fs[64], fsdev[800];
    long cores, readahead_kb; /* of the temp dir's block device; -1 unknown */
    uint64_t mem;
    double load_before[3], load_after[3];
};

BENCH_UNUSED static struct machine g_m;

BENCH_UNUSED static void strip(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
}

BENCH_UNUSED static void machine_probe(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[1024];
    snprintf(g_m.cpu, sizeof g_m.cpu, "unknown");
    while (f && fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (c && strncmp(line, "model name", 10) == 0) {
            snprintf(g_m.cpu, sizeof g_m.cpu, "%s", c + 2);
            strip(g_m.cpu);
            break;
        }
    }
    if (f)
        fclose(f);
    g_m.cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct sysinfo si;
    if (sysinfo(&si) == 0)
        g_m.mem = (uint64_t)si.totalram * si.mem_unit;
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(g_m.kernel, sizeof g_m.kernel, "%s %s %s", u.sysname, u.release, u.machine);

    /* The filesystem of the temp dir: the longest mount point that holds it. */
    char real[PATH_MAX];
    snprintf(g_m.fs, sizeof g_m.fs, "unknown");
    if (!realpath(g_tmp, real))
        snprintf(real, sizeof real, "%s", g_tmp);
    f = fopen("/proc/self/mounts", "r");
    size_t best = 0;
    while (f && fgets(line, sizeof line, f)) {
        char dev[256], mnt[512], type[64];
        if (sscanf(line, "%255s %511s %63s", dev, mnt, type) != 3)
            continue;
        size_t ml = strlen(mnt);
        bool under = strncmp(real, mnt, ml) == 0 && (real[ml] == '/' || real[ml] == 0 || ml == 1);
        if (under && ml >= best) {
            best = ml;
            snprintf(g_m.fs, sizeof g_m.fs, "%s", type);
            snprintf(g_m.fsdev, sizeof g_m.fsdev, "%s on %s", dev, mnt);
        }
    }
    if (f)
        fclose(f);
    struct stat st;
    if (stat(g_tmp, &st) == 0) {
        g_dev_major = major(st.st_dev);
        g_dev_minor = minor(st.st_dev);
    }
    /* A partition has no queue of its own: its disk's is one level up. */
    g_m.readahead_kb = -1;
    static const char *const ra[2] = {"/sys/dev/block/%u:%u/queue/read_ahead_kb",
                                      "/sys/dev/block/%u:%u/../queue/read_ahead_kb"};
    for (int i = 0; i < 2 && g_m.readahead_kb < 0; i++) {
        char path[128];
        snprintf(path, sizeof path, ra[i], g_dev_major, g_dev_minor);
        f = fopen(path, "r");
        if (f && fscanf(f, "%ld", &g_m.readahead_kb) != 1)
            g_m.readahead_kb = -1;
        if (f)
            fclose(f);
    }
    if (getloadavg(g_m.load_before, 3) != 3)
        memset(g_m.load_before, 0, sizeof g_m.load_before);
}

/* The run's temp directory removed, at exit or on a signal. */
BENCH_UNUSED static void tmp_remove(void)
{
    if (g_tmp[0]) {
        nftw(g_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        g_tmp[0] = 0;
    }
}

/* Not async-signal-safe, but a benchmark interrupted by ^C should not leave
 * gigabytes behind in the temp dir; nothing else runs at that point. */
BENCH_UNUSED static void on_signal(int sig)
{
    tmp_remove();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The run's temp directory, $TMPDIR/TAG-XXXXXX (or under /tmp), removed at
 * exit and on ^C, SIGTERM and SIGHUP. */
BENCH_UNUSED static void tmp_create(const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(g_tmp))
        DIE("mkdtemp %s: %s", g_tmp, strerror(errno));
    atexit(tmp_remove);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
}

#endif
