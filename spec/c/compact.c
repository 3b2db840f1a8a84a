/*
 * compact.c - compaction reclaims the space of overwritten and deleted
 * entries without losing a live one or bringing back a deleted one.
 *
 * 1. Model: random puts, overwrites and deletes over several shards and
 *    64 KiB files, armdb_compact() now and then, reopens now and then
 *    (clean, and with every hint removed): the store always equals the
 *    model, keys, values, count and full scan; compaction ran, reclaimed
 *    bytes, and left no file whose garbage it could have taken. Both for
 *    variable values and for fixed-length (inline) ones.
 * 2. No resurrection: keys written, deleted in a later file, and the file
 *    holding their old values compacted away; then the tombstones' file is
 *    compacted too, and after a reopen (with and without hints) the keys
 *    are still absent.
 * 3. Disk bound: 2000 keys of 1 KiB overwritten 40 times over with the
 *    background thread alone compacting (threshold 0.3): once it has
 *    caught up, the data files hold at most live / (1 - 0.3) + two files
 *    per shard (the active one and the one sealed last). During the burst
 *    the disk holds what was written faster than compaction (of 64 KiB
 *    files, each costing a few fsyncs) could follow: the largest sample is
 *    printed, not bounded.
 * 4. Damage: a byte flipped in a sealed data file. Compactions skip the
 *    damaged entry and keep that file (its entry cannot be moved), every
 *    other key stays right, the damaged one reads ARMDB_CORRUPT, before
 *    and after reopens.
 * 5. Cut short: a crash between the output's hint and its rename leaves the
 *    hint and the .tmp: read-only opens see the old files, a writer's open
 *    removes both; a hint without its data file and without a .tmp still
 *    fails the open (ARMDB_CORRUPT).
 * 6. Under load: a writer (about 100 puts per ms) and a reader thread run
 *    while the main thread compacts 1 MiB files: every get returns the key's newest value, and the slowest
 *    put and get while compaction runs are printed (the "worst pause").
 *
 * Replay: ARMDB_SEED=<seed printed on failure>.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#define KEY_LEN 16
#define NKEYS 1500
#define SHARDS 3
#define MAX_FILE 65536u
#define VMAX 900
#define FIXED 48

static uint64_t g_seed;
static const char *g_part = "setup";

static void report(void)
{
    if (g_part)
        fprintf(stderr, "compact: failed in part \"%s\" (ARMDB_SEED=0x%" PRIx64 ")\n", g_part, g_seed);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void make_key(uint32_t i, unsigned char *k)
{
    memset(k, 0, KEY_LEN);
    memcpy(k, "cmp", 3);
    memcpy(k + 4, &i, 4);
}

/* Value version ver of key i: the key and version, then bytes and a
 * length (12 .. VMAX) drawn from both. */
static size_t make_val(uint32_t i, uint64_t ver, size_t fixed, unsigned char *v)
{
    uint64_t s = (uint64_t)i << 32 ^ ver;
    size_t n = fixed ? fixed : 12 + (size_t)(t_rand(&s) % (VMAX - 12));
    for (size_t j = 12; j < n; j++)
        v[j] = (unsigned char)(t_rand(&s) >> 56);
    memcpy(v, &i, 4);
    memcpy(v + 4, &ver, 8);
    return n;
}

/* Bytes of the files under dir whose names contain `part`; with
 * remove, they are unlinked too. */
static uint64_t walk(const char *dir, const char *part, bool remove)
{
    uint64_t sum = 0;
    DIR *d = opendir(dir);
    CHECK(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *p = t_path(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            sum += walk(p, part, remove);
        } else if (strstr(e->d_name, part)) {
            sum += (uint64_t)st.st_size;
            if (remove)
                CHECK(unlink(p) == 0);
        }
        free(p);
    }
    closedir(d);
    return sum;
}

static uint64_t data_bytes(const char *dir) { return walk(dir, ".data", false); }
static void remove_hints(const char *dir) { walk(dir, ".hint", true); }

struct model {
    uint64_t ver[NKEYS]; /* 0: absent */
    uint64_t next;
    uint64_t dels; /* deletes made, ever */
    size_t fixed;
};

static void open_store(const char *path, size_t fixed, uint32_t flags, double threshold, uint64_t max_file,
                       armdb **db)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.value_len = (uint32_t)fixed;
    o.shards = SHARDS;
    o.max_file_size = max_file;
    o.write_buffer_size = 65536;
    o.compaction_threshold = threshold;
    o.flags = ARMDB_CREATE | flags;
    t_key_options(&o);
    CHECK_OK(armdb_open(path, &o, db));
}

static void check_model(armdb *db, const struct model *m)
{
    static unsigned char got[VMAX + FIXED], want[VMAX + FIXED];
    unsigned char k[KEY_LEN];
    uint64_t live = 0;
    for (uint32_t i = 0; i < NKEYS; i++) {
        size_t vl = 0;
        make_key(i, k);
        int rc = armdb_get(db, k, KEY_LEN, got, sizeof got, &vl);
        if (!m->ver[i]) {
            if (rc != ARMDB_NOTFOUND)
                fprintf(stderr, "key %u: deleted, get returned %d (%s)\n", i, rc, armdb_strerror(rc));
            CHECK_RC(rc, ARMDB_NOTFOUND);
            continue;
        }
        live++;
        CHECK_OK(rc);
        size_t wl = make_val(i, m->ver[i], m->fixed, want);
        if (vl != wl || memcmp(got, want, vl) != 0)
            fprintf(stderr, "key %u: wrong value (version %" PRIu64 " expected)\n", i, m->ver[i]);
        CHECK(vl == wl && memcmp(got, want, vl) == 0);
    }
    CHECK(armdb_count(db) == live);
    armdb_iter *it;
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    const void *kp, *vp;
    size_t kl, vl;
    uint64_t seen = 0;
    int rc;
    while ((rc = armdb_iter_next(it, &kp, &kl, &vp, &vl)) == 0) {
        uint32_t i;
        memcpy(&i, (const unsigned char *)kp + 4, 4);
        CHECK(i < NKEYS && m->ver[i]);
        seen++;
    }
    CHECK_RC(rc, ARMDB_NOTFOUND);
    armdb_iter_close(it);
    CHECK(seen == live);
}

static void random_ops(armdb *db, struct model *m, uint64_t *rng, int n)
{
    static unsigned char v[VMAX + FIXED];
    unsigned char k[KEY_LEN];
    for (int j = 0; j < n; j++) {
        /* A hot third of the keys takes most writes, so files die unevenly. */
        uint32_t i = (uint32_t)(t_rand(rng) % (t_rand(rng) % 4 ? NKEYS / 3 : NKEYS));
        make_key(i, k);
        if (t_rand(rng) % 100 < 20) {
            CHECK_RC(armdb_delete(db, k, KEY_LEN), m->ver[i] ? 0 : ARMDB_NOTFOUND);
            m->dels += m->ver[i] != 0;
            m->ver[i] = 0;
        } else {
            uint64_t ver = ++m->next;
            size_t vl = make_val(i, ver, m->fixed, v);
            CHECK_OK(armdb_put(db, k, KEY_LEN, v, vl));
            m->ver[i] = ver;
        }
    }
}

static void part_model(const char *base, size_t fixed, uint64_t *rng)
{
    char *path = t_path(base, fixed ? "model-inline" : "model");
    static struct model m;
    memset(&m, 0, sizeof m);
    m.fixed = fixed;
    armdb *db;
    open_store(path, fixed, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    uint64_t compactions = 0, reclaimed = 0;
    for (int round = 0; round < 24; round++) {
        random_ops(db, &m, rng, 1500);
        if (round % 2 == 0) {
            CHECK_OK(armdb_compact(db));
            armdb_stat s;
            CHECK_OK(armdb_stats(db, &s));
            CHECK(s.compact_bytes_written <= s.compact_bytes_read);
            /* Forced, nothing is left to take: what is not live is a
             * page's padding at most per file, or tombstones (32 bytes
             * each here) that may still hide an older value. */
            if (s.dead_bytes > s.files * 4096 + m.dels * 32)
                fprintf(stderr, "round %d: dead %" PRIu64 " live %" PRIu64 " files %" PRIu64 " dels %" PRIu64 "\n", round,
                        s.dead_bytes, s.live_bytes, s.files, m.dels);
            CHECK(s.dead_bytes <= s.files * 4096 + m.dels * 32);
        }
        check_model(db, &m);
        if (round % 6 == 5) {
            armdb_stat s;
            CHECK_OK(armdb_stats(db, &s));
            compactions += s.compactions;
            reclaimed += s.bytes_reclaimed;
            CHECK_OK(armdb_close(db));
            if (round % 12 == 11)
                remove_hints(path);
            open_store(path, fixed, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
            CHECK_OK(armdb_stats(db, &s));
            CHECK(s.corrupt_entries == 0);
            check_model(db, &m);
        }
    }
    armdb_stat s;
    CHECK_OK(armdb_stats(db, &s));
    compactions += s.compactions;
    reclaimed += s.bytes_reclaimed;
    CHECK_OK(armdb_close(db));
    CHECK(compactions > 0 && reclaimed > 0);
    printf("model%s: %" PRIu64 " compactions, %" PRIu64 " bytes reclaimed\n", fixed ? " (inline values)" : "",
           compactions, reclaimed);
    free(path);
}

static void part_no_resurrection(const char *base)
{
    char *path = t_path(base, "tomb");
    static unsigned char v[VMAX];
    unsigned char k[KEY_LEN];
    static struct model m;
    memset(&m, 0, sizeof m);
    armdb *db;
    open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    /* Old values of every key, in the first files. */
    for (uint32_t i = 0; i < NKEYS; i++) {
        make_key(i, k);
        size_t vl = make_val(i, ++m.next, 0, v);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, vl));
        m.ver[i] = m.next;
    }
    CHECK_OK(armdb_sync(db));
    /* Fill more files with other keys' rewrites, then delete half. */
    for (uint32_t i = 0; i < NKEYS; i += 2) {
        make_key(i, k);
        size_t vl = make_val(i, ++m.next, 0, v);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, vl));
        m.ver[i] = m.next;
    }
    for (uint32_t i = 1; i < NKEYS; i += 2) {
        make_key(i, k);
        CHECK_OK(armdb_delete(db, k, KEY_LEN));
        m.ver[i] = 0;
    }
    for (int pass = 0; pass < 3; pass++) {
        CHECK_OK(armdb_compact(db));
        check_model(db, &m);
    }
    armdb_stat s;
    CHECK_OK(armdb_stats(db, &s));
    CHECK(s.compactions > 0);
    CHECK_OK(armdb_close(db));
    for (int hints = 1; hints >= 0; hints--) {
        if (!hints)
            remove_hints(path);
        open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
        check_model(db, &m);
        CHECK_OK(armdb_compact(db));
        check_model(db, &m);
        CHECK_OK(armdb_close(db));
    }
    open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    check_model(db, &m);
    CHECK_OK(armdb_close(db));
    free(path);
}

static void part_disk_bound(const char *base)
{
    char *path = t_path(base, "bound");
    enum { N = 2000, VL = 1024, ROUNDS = 40 };
    static unsigned char v[VL];
    unsigned char k[KEY_LEN];
    armdb *db;
    open_store(path, 0, 0, 0.3, MAX_FILE, &db);
    uint64_t live = (uint64_t)N * ((16 + KEY_LEN + VL + 7) / 8 * 8);
    uint64_t bound = (uint64_t)((double)live / 0.7) + 2ull * SHARDS * MAX_FILE, worst = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (uint32_t i = 0; i < N; i++) {
            make_key(i, k);
            memset(v, r + (int)i, VL);
            CHECK_OK(armdb_put(db, k, KEY_LEN, v, VL));
        }
        uint64_t now = data_bytes(path);
        if (now > worst)
            worst = now;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    CHECK_OK(armdb_sync(db));
    /* Wait for the background thread to catch up: until the bound holds,
     * or its compactions have stopped for 3 s (a sanitizer build runs
     * one compaction in far more than the 300 ms between samples). */
    uint64_t last = UINT64_MAX, disk = 0;
    for (int i = 0, still = 0; i < 400 && still < 10; i++) {
        struct timespec ts = {0, 300 * 1000000};
        nanosleep(&ts, NULL);
        armdb_stat s;
        CHECK_OK(armdb_stats(db, &s));
        disk = data_bytes(path);
        if (disk <= bound)
            break;
        still = s.compactions == last ? still + 1 : 0;
        last = s.compactions;
    }
    armdb_stat s;
    CHECK_OK(armdb_stats(db, &s));
    printf("disk bound: live %" PRIu64 " bytes, bound %" PRIu64 ", settled at %" PRIu64 ", worst sample %" PRIu64
           " (%" PRIu64 " compactions, write amplification %.2f)\n",
           live, bound, disk, worst, s.compactions,
           (double)(s.bytes_written + s.compact_bytes_written) / (double)s.bytes_written);
    CHECK(s.compactions > 0);
    CHECK(disk <= bound);
    for (uint32_t i = 0; i < N; i++) {
        size_t vl;
        make_key(i, k);
        CHECK_OK(armdb_get(db, k, KEY_LEN, v, sizeof v, &vl));
        CHECK(vl == VL && v[0] == (unsigned char)(ROUNDS - 1 + (int)i) && v[VL - 1] == v[0]);
    }
    CHECK_OK(armdb_close(db));
    free(path);
}

/* A byte flipped in a sealed file: compaction skips the damaged entry,
 * keeps the file (its entry cannot be moved) and changes nothing else. */
static void part_damage(const char *base, uint64_t *rng)
{
    char *path = t_path(base, "damage");
    static struct model m;
    static unsigned char v[VMAX], got[VMAX];
    unsigned char k[KEY_LEN];
    memset(&m, 0, sizeof m);
    armdb *db;
    open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    random_ops(db, &m, rng, 4000);
    CHECK_OK(armdb_close(db));
    char *file = t_path(path, "000/00000001.data");
    int fd = open(file, O_RDWR);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size > 8192);
    off_t at = (off_t)(t_rand(rng) % (uint64_t)(st.st_size - 4096)) + 2048;
    unsigned char b;
    CHECK(pread(fd, &b, 1, at) == 1);
    b ^= 0x5a;
    CHECK(pwrite(fd, &b, 1, at) == 1);
    close(fd);
    open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    for (int pass = 0; pass < 2; pass++) {
        CHECK_OK(armdb_compact(db));
        unsigned bad = 0;
        for (uint32_t i = 0; i < NKEYS; i++) {
            size_t vl;
            make_key(i, k);
            int rc = armdb_get(db, k, KEY_LEN, got, sizeof got, &vl);
            if (rc == ARMDB_CORRUPT) {
                bad++;
                continue;
            }
            if (!m.ver[i]) {
                CHECK_RC(rc, ARMDB_NOTFOUND);
                continue;
            }
            CHECK_OK(rc);
            size_t wl = make_val(i, m.ver[i], 0, v);
            CHECK(vl == wl && memcmp(got, v, vl) == 0);
        }
        /* One flipped byte damages one entry: one key at most; in an
         * encrypted store it fails a whole sealed page: the entries that
         * start in it (at least 16 + KEY_LEN bytes each), and the one
         * running into it. */
        unsigned most = t_env_u64("ARMDB_TEST_ENCRYPT", 0) ? 4096 / (16 + KEY_LEN) + 1 : 1;
        CHECK(bad <= most);
        if (bad)
            CHECK(access(file, F_OK) == 0); /* kept: its entry could not move */
        CHECK_OK(armdb_close(db));
        open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    }
    CHECK_OK(armdb_close(db));
    free(file);
    free(path);
}

/* A compaction cut short after its output's hint was written: the hint
 * and the .tmp output are there, the output's data file is not. Read-only
 * opens ignore the hint; a writer's open removes both. */
static void part_cut_short(const char *base)
{
    char *path = t_path(base, "cut");
    static struct model m;
    memset(&m, 0, sizeof m);
    uint64_t rng = 5;
    armdb *db;
    open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    random_ops(db, &m, &rng, 2000);
    CHECK_OK(armdb_close(db));
    char *hint = t_path(path, "000/00000001.hint");
    char *orphan = t_path(path, "000/00009999.hint");
    char *tmp = t_path(path, "000/00009999.compact.tmp");
    /* Any valid hint will do as the output's: a copy of another. */
    FILE *in = fopen(hint, "rb"), *out = fopen(orphan, "wb");
    CHECK(in && out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        CHECK(fwrite(buf, 1, n, out) == n);
    fclose(in);
    CHECK(fclose(out) == 0);
    int fd = open(tmp, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && write(fd, buf, 100) == 100);
    close(fd);
    armdb_options o;
    armdb_options_init(&o);
    o.flags = ARMDB_RDONLY;
    t_key_options(&o);
    CHECK_OK(armdb_open(path, &o, &db));
    check_model(db, &m);
    CHECK_OK(armdb_close(db));
    CHECK(access(orphan, F_OK) == 0 && access(tmp, F_OK) == 0);
    open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, MAX_FILE, &db);
    check_model(db, &m);
    CHECK_OK(armdb_close(db));
    CHECK(access(orphan, F_OK) != 0 && access(tmp, F_OK) != 0);
    /* Without the .tmp, a hint without its data file is damage. */
    in = fopen(hint, "rb"), out = fopen(orphan, "wb");
    CHECK(in && out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        CHECK(fwrite(buf, 1, n, out) == n);
    fclose(in);
    CHECK(fclose(out) == 0);
    o.flags = 0;
    t_key_options(&o);
    CHECK_RC(armdb_open(path, &o, &db), ARMDB_CORRUPT);
    free(hint);
    free(orphan);
    free(tmp);
    free(path);
}

/* ---- under load ---- */

enum { LOAD_KEYS = 800 };
static atomic_uint_fast64_t g_ver[LOAD_KEYS]; /* newest acknowledged version */
static atomic_bool g_stop, g_compacting;
static int64_t g_worst_put, g_worst_get;

static void *writer(void *arg)
{
    armdb *db = arg;
    static unsigned char v[VMAX];
    unsigned char k[KEY_LEN];
    uint64_t rng = g_seed ^ 1, ver = 1;
    while (!atomic_load(&g_stop)) {
        uint32_t i = (uint32_t)(t_rand(&rng) % LOAD_KEYS);
        make_key(i, k);
        size_t vl = make_val(i, ++ver, 0, v);
        int64_t t = now_ns();
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, vl));
        t = now_ns() - t;
        if (atomic_load(&g_compacting) && t > g_worst_put)
            g_worst_put = t;
        atomic_store(&g_ver[i], ver);
        if (ver % 100 == 0) { /* a busy server, not a flood: files stay few */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static void *reader(void *arg)
{
    armdb *db = arg;
    static unsigned char v[VMAX], want[VMAX];
    unsigned char k[KEY_LEN];
    uint64_t rng = g_seed ^ 2;
    while (!atomic_load(&g_stop)) {
        uint32_t i = (uint32_t)(t_rand(&rng) % LOAD_KEYS);
        uint64_t before = atomic_load(&g_ver[i]);
        size_t vl;
        make_key(i, k);
        int64_t t = now_ns();
        CHECK_OK(armdb_get(db, k, KEY_LEN, v, sizeof v, &vl));
        t = now_ns() - t;
        if (atomic_load(&g_compacting) && t > g_worst_get)
            g_worst_get = t;
        /* The value is one the writer wrote, no older than what was
         * acknowledged before the get began. */
        uint32_t ki;
        uint64_t ver;
        memcpy(&ki, v, 4);
        memcpy(&ver, v + 4, 8);
        CHECK(ki == i && ver >= before);
        CHECK(make_val(i, ver, 0, want) == vl && memcmp(want, v, vl) == 0);
    }
    return NULL;
}

static void part_load(const char *base)
{
    char *path = t_path(base, "load");
    static unsigned char v[VMAX];
    unsigned char k[KEY_LEN];
    armdb *db;
    open_store(path, 0, ARMDB_NO_AUTO_COMPACT, 0, 1 << 20, &db);
    for (uint32_t i = 0; i < LOAD_KEYS; i++) {
        make_key(i, k);
        size_t vl = make_val(i, 1, 0, v);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, vl));
        atomic_store(&g_ver[i], 1);
    }
    pthread_t w, r;
    CHECK(pthread_create(&w, NULL, writer, db) == 0);
    CHECK(pthread_create(&r, NULL, reader, db) == 0);
    int64_t longest = 0;
    for (int i = 0; i < 10; i++) {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
        atomic_store(&g_compacting, true);
        int64_t t = now_ns();
        CHECK_OK(armdb_compact(db));
        t = now_ns() - t;
        atomic_store(&g_compacting, false);
        if (t > longest)
            longest = t;
    }
    atomic_store(&g_stop, true);
    pthread_join(w, NULL);
    pthread_join(r, NULL);
    armdb_stat s;
    CHECK_OK(armdb_stats(db, &s));
    CHECK(s.compactions > 0);
    printf("under load: %" PRIu64 " compactions (longest pass %.1f ms); slowest put while compacting %.2f ms, "
           "slowest get %.2f ms\n",
           s.compactions, (double)longest / 1e6, (double)g_worst_put / 1e6, (double)g_worst_get / 1e6);
    CHECK_OK(armdb_close(db));
    free(path);
}

int main(void)
{
    g_seed = t_env_u64("ARMDB_SEED", (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32);
    atexit(report);
    char *base = t_tmpdir("compact");
    uint64_t rng = g_seed;
    g_part = "model, variable values";
    part_model(base, 0, &rng);
    g_part = "model, inline values";
    part_model(base, FIXED, &rng);
    g_part = "no resurrection";
    part_no_resurrection(base);
    g_part = "damage";
    part_damage(base, &rng);
    g_part = "cut short";
    part_cut_short(base);
    g_part = "disk bound";
    part_disk_bound(base);
    g_part = "under load";
    part_load(base);
    g_part = NULL;
    t_rmtree(base);
    free(base);
    return 0;
}
