/*
 * rotate_hint.c - data files rotate at max_file_size, every immutable file
 * gets a hint, a clean reopen reads only hints, and a missing or damaged
 * hint costs a scan but never changes what the store holds.
 *
 * 1. 4 shards, 64 KiB files, puts, overwrites and deletes enough for several
 *    rotations per shard: rotated files carry hints while the store is open,
 *    every file has one after close, and the reopen scans nothing
 *    (files_scanned == 0, hints_loaded == data files) with every key right.
 * 2. Hints removed (all of one shard, one of another): same keys and values,
 *    those files scanned; after a clean close the hints exist again and the
 *    next reopen scans nothing.
 * 3. Damaged hints (a flipped byte, cut to half, cut to nothing): ignored,
 *    the files scanned, same data, rebuilt at close.
 * 4. Highest GSN wins: one key overwritten across many rotations keeps its
 *    last value over reopens, with or without hints; deleted after more
 *    rotations it stays deleted; and so it goes when the files are renamed
 *    into reverse order, so that file order contradicts GSN order.
 *
 * Replay: ARMDB_SEED=<seed printed on failure>.
 */
#include "test.h"

#include <fcntl.h>

#define KEY_LEN 16
#define NKEYS 1200
#define SHARDS 4
#define MAX_FILE 65536u
#define VMAX 1200
#define MAXFILES 256

struct model {
    uint8_t present[NKEYS];
    uint64_t ver[NKEYS];
    uint64_t live;
    uint64_t next_ver;
};

struct shard_files {
    unsigned ndata, nhint;
    unsigned data[MAXFILES], hint[MAXFILES]; /* file ids, ascending */
};

static uint64_t g_seed;
static const char *g_part = "setup";
static int g_passed;

static void report(void)
{
    if (!g_passed)
        fprintf(stderr, "rotate_hint: failed in '%s'; replay with ARMDB_SEED=%" PRIu64 "\n", g_part,
                g_seed);
}

static void make_key(uint32_t idx, uint8_t *k)
{
    memcpy(k, &idx, 4);
    t_fill(t_mix(idx, 0x6b6579), k + 4, KEY_LEN - 4);
}

/* Version ver of key idx: 200..VMAX bytes, all derived from (idx, ver). */
static size_t make_value(uint32_t idx, uint64_t ver, uint8_t *out)
{
    uint64_t s = t_mix(idx, ver);
    size_t len = 200 + (size_t)(t_rand(&s) % (VMAX - 200 + 1));
    t_fill(s, out, len);
    return len;
}

static armdb *open_store(const char *store, uint32_t shards)
{
    /* Files and hints are counted: no compaction may change them. */
    return t_open_store(store, KEY_LEN, 0, shards, 0, MAX_FILE, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT);
}

static void put_ver(armdb *db, struct model *m, uint32_t idx, uint64_t ver)
{
    uint8_t k[KEY_LEN], v[VMAX];
    size_t vl = make_value(idx, ver, v);
    make_key(idx, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, v, vl));
    if (!m->present[idx])
        m->live++;
    m->present[idx] = 1;
    m->ver[idx] = ver;
}

static void put_new(armdb *db, struct model *m, uint32_t idx)
{
    put_ver(db, m, idx, m->next_ver++);
}

static void del_key(armdb *db, struct model *m, uint32_t idx)
{
    uint8_t k[KEY_LEN];
    make_key(idx, k);
    if (m->present[idx]) {
        CHECK_OK(armdb_delete(db, k, KEY_LEN));
        m->present[idx] = 0;
        m->live--;
    } else {
        CHECK_RC(armdb_delete(db, k, KEY_LEN), ARMDB_NOTFOUND);
    }
}

/* Every key by get, the count, and a full scan. */
static void verify(armdb *db, const struct model *m)
{
    static uint8_t seen[NKEYS];
    uint8_t k[KEY_LEN], want[VMAX], buf[VMAX];
    armdb_iter *it;
    uint64_t n = 0;
    int rc;

    for (uint32_t i = 0; i < NKEYS; i++) {
        size_t vl = 99999;
        make_key(i, k);
        if (m->present[i]) {
            size_t wl = make_value(i, m->ver[i], want);
            CHECK_OK(armdb_get(db, k, KEY_LEN, buf, sizeof(buf), &vl));
            CHECK(vl == wl);
            CHECK(memcmp(buf, want, vl) == 0);
        } else {
            CHECK_RC(armdb_get(db, k, KEY_LEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
        }
    }
    CHECK(armdb_count(db) == m->live);

    memset(seen, 0, sizeof(seen));
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    for (;;) {
        const void *kp, *vp;
        size_t kl, vl, wl;
        uint32_t idx;
        rc = armdb_iter_next(it, &kp, &kl, &vp, &vl);
        if (rc == ARMDB_NOTFOUND)
            break;
        CHECK_OK(rc);
        CHECK(kl == KEY_LEN);
        memcpy(&idx, kp, 4);
        CHECK(idx < NKEYS);
        make_key(idx, k);
        CHECK(memcmp(kp, k, KEY_LEN) == 0);
        CHECK(!seen[idx]);
        seen[idx] = 1;
        CHECK(m->present[idx]);
        wl = make_value(idx, m->ver[idx], want);
        CHECK(vl == wl && memcmp(vp, want, vl) == 0);
        n++;
    }
    armdb_iter_close(it);
    CHECK(n == m->live);
}

/* The files of one shard; anything but .data and .hint files fails, except
 * (with allow_tmp, while a writer has the store open) temporary files. */
static void list_shard_tmp(const char *store, unsigned shard, struct shard_files *f, int allow_tmp)
{
    char name[8];
    char *dir;
    DIR *d;
    struct dirent *e;
    snprintf(name, sizeof(name), "%03x", shard);
    dir = t_path(store, name);
    memset(f, 0, sizeof(*f));
    d = opendir(dir);
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        long id;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if ((id = t_file_id(e->d_name, "data")) >= 1) {
            CHECK(f->ndata < MAXFILES);
            f->data[f->ndata++] = (unsigned)id;
        } else if ((id = t_file_id(e->d_name, "hint")) >= 1) {
            CHECK(f->nhint < MAXFILES);
            f->hint[f->nhint++] = (unsigned)id;
        } else if (allow_tmp && strlen(e->d_name) > 4 &&
                   !strcmp(e->d_name + strlen(e->d_name) - 4, ".tmp")) {
            continue;
        } else {
            fprintf(stderr, "unexpected file %s/%s\n", dir, e->d_name);
            CHECK(0);
        }
    }
    closedir(d);
    qsort(f->data, f->ndata, sizeof(unsigned), t_cmp_unsigned);
    qsort(f->hint, f->nhint, sizeof(unsigned), t_cmp_unsigned);
    free(dir);
}

static void list_shard(const char *store, unsigned shard, struct shard_files *f)
{
    list_shard_tmp(store, shard, f, 0);
}

/*
 * Check that every data file but the last (when `open_active`) has a hint,
 * that no hint lacks its data file, and that data files respect the size
 * limit. Returns the number of data files of the shard. While the store is
 * open, hints of rotated files may be written in the background: wait for
 * them (10 s at most).
 */
static unsigned check_hinted(const char *store, unsigned shard, int open_active)
{
    struct shard_files f;
    unsigned want;
    for (int tries = 0;; tries++) {
        list_shard_tmp(store, shard, &f, open_active);
        CHECK(f.ndata >= 1);
        want = open_active ? f.ndata - 1 : f.ndata;
        CHECK(f.nhint <= want);
        if (f.nhint == want || !open_active || tries == 1000)
            break;
        usleep(10000);
    }
    CHECK(f.nhint == want);
    for (unsigned i = 0; i < want; i++)
        CHECK(f.hint[i] == f.data[i]);
    for (unsigned i = 0; i < f.ndata; i++) {
        struct stat st;
        char *p = t_file_path(store, shard, f.data[i], "data");
        CHECK(stat(p, &st) == 0);
        /* Rotation happens on reaching the limit: one entry may cross it. */
        CHECK((uint64_t)st.st_size <= MAX_FILE + 2 * 4096);
        free(p);
    }
    return f.ndata;
}

static unsigned total_data(const char *store, unsigned shards)
{
    unsigned n = 0;
    for (unsigned s = 0; s < shards; s++) {
        struct shard_files f;
        list_shard(store, s, &f);
        n += f.ndata;
    }
    return n;
}

static armdb *reopen_expect(const char *store, unsigned shards, const struct model *m,
                            uint64_t want_scanned)
{
    armdb_stat st;
    unsigned ndata = total_data(store, shards);
    armdb *db = open_store(store, shards);
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.files_scanned == want_scanned);
    CHECK(st.hints_loaded == ndata - want_scanned);
    CHECK(st.corrupt_entries == 0);
    CHECK(st.torn_bytes == 0);
    /* A writer open adds one empty active file per shard. */
    CHECK(st.files == ndata + shards);
    CHECK(st.keys == m->live);
    verify(db, m);
    return db;
}

static void close_all_hinted(armdb *db, const char *store, unsigned shards)
{
    CHECK_OK(armdb_close(db));
    for (unsigned s = 0; s < shards; s++)
        check_hinted(store, s, 0);
}

static void case_rotation(uint64_t seed)
{
    static struct model m;
    char *dir = t_tmpdir("rotate");
    char *store = t_path(dir, "db");
    uint64_t rng = seed;
    armdb_stat st;
    armdb *db;
    unsigned files = 0;

    memset(&m, 0, sizeof(m));
    m.next_ver = 1;
    g_part = "rotation under puts, overwrites and deletes";
    db = open_store(store, SHARDS);
    for (int i = 0; i < 4000; i++) {
        uint32_t idx = (uint32_t)(t_rand(&rng) % NKEYS);
        if (t_rand(&rng) % 100 < 18)
            del_key(db, &m, idx);
        else
            put_new(db, &m, idx);
    }
    CHECK_OK(armdb_stats(db, &st));
    for (unsigned s = 0; s < SHARDS; s++) {
        unsigned n = check_hinted(store, s, 1);
        CHECK(n >= 4); /* several rotations in every shard */
        files += n;
    }
    CHECK(st.rotations == files - SHARDS);
    CHECK(st.files == files);
    verify(db, &m);
    close_all_hinted(db, store, SHARDS);

    g_part = "clean reopen reads hints only";
    db = reopen_expect(store, SHARDS, &m, 0);
    /* Some more writes in this session, then close. */
    for (int i = 0; i < 300; i++) {
        uint32_t idx = (uint32_t)(t_rand(&rng) % NKEYS);
        if (i % 5 == 0)
            del_key(db, &m, idx);
        else
            put_new(db, &m, idx);
    }
    close_all_hinted(db, store, SHARDS);
    db = reopen_expect(store, SHARDS, &m, 0);
    CHECK_OK(armdb_close(db));

    g_part = "hints removed";
    {
        struct shard_files f0, f1;
        char *p;
        list_shard(store, 0, &f0);
        list_shard(store, 1, &f1);
        for (unsigned i = 0; i < f0.nhint; i++) {
            p = t_file_path(store, 0, f0.hint[i], "hint");
            CHECK(unlink(p) == 0);
            free(p);
        }
        p = t_file_path(store, 1, f1.hint[f1.nhint / 2], "hint");
        CHECK(unlink(p) == 0);
        free(p);
        db = reopen_expect(store, SHARDS, &m, f0.ndata + 1);
        close_all_hinted(db, store, SHARDS);
        g_part = "hints rebuilt";
        db = reopen_expect(store, SHARDS, &m, 0);
        CHECK_OK(armdb_close(db));
    }

    g_part = "damaged hints";
    {
        struct shard_files f2, f3;
        struct stat sb;
        char *p;
        int fd;
        uint8_t b;
        list_shard(store, 2, &f2);
        list_shard(store, 3, &f3);
        CHECK(f3.nhint >= 2);
        /* A flipped byte in the middle of a hint. */
        p = t_file_path(store, 2, f2.hint[f2.nhint / 2], "hint");
        CHECK(stat(p, &sb) == 0 && sb.st_size > 64);
        fd = open(p, O_RDWR);
        CHECK(fd >= 0);
        CHECK(pread(fd, &b, 1, sb.st_size / 2) == 1);
        b ^= 0x04;
        CHECK(pwrite(fd, &b, 1, sb.st_size / 2) == 1);
        close(fd);
        free(p);
        /* A hint cut in half, and one cut to nothing. */
        p = t_file_path(store, 3, f3.hint[0], "hint");
        CHECK(stat(p, &sb) == 0);
        CHECK(truncate(p, sb.st_size / 2) == 0);
        free(p);
        p = t_file_path(store, 3, f3.hint[f3.nhint - 1], "hint");
        CHECK(truncate(p, 0) == 0);
        free(p);
        db = reopen_expect(store, SHARDS, &m, 3);
        close_all_hinted(db, store, SHARDS);
        g_part = "damaged hints rebuilt";
        db = reopen_expect(store, SHARDS, &m, 0);
        CHECK_OK(armdb_close(db));
    }

    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Filler writes to a fixed set of keys until the shard rotates once. */
static void fill_until_rotation(armdb *db, struct model *m, uint32_t first, uint32_t nfill)
{
    armdb_stat st;
    uint64_t before;
    CHECK_OK(armdb_stats(db, &st));
    before = st.rotations;
    for (uint32_t i = 0;; i++) {
        CHECK(i < 10 * nfill);
        put_new(db, m, first + i % nfill);
        CHECK_OK(armdb_stats(db, &st));
        if (st.rotations > before)
            break;
    }
}

static void case_gsn_wins(void)
{
    static struct model m;
    char *dir = t_tmpdir("gsn-wins");
    char *store = t_path(dir, "db");
    const uint32_t hot = 0, gone = 1;
    unsigned n;
    armdb *db;

    memset(&m, 0, sizeof(m));
    m.next_ver = 1;
    g_part = "highest GSN wins: overwrites across rotations";
    db = open_store(store, 1);
    put_new(db, &m, gone);
    for (int r = 0; r < 30; r++) {
        put_new(db, &m, hot);
        fill_until_rotation(db, &m, 100, 200);
    }
    /* The last version of hot is in a file of its own, with older ones in
     * 30 earlier files. */
    put_new(db, &m, hot);
    n = check_hinted(store, 0, 1);
    CHECK(n >= 31);
    verify(db, &m);
    CHECK_OK(armdb_close(db));
    db = reopen_expect(store, 1, &m, 0);

    g_part = "highest GSN wins: delete after rotations";
    fill_until_rotation(db, &m, 100, 200);
    del_key(db, &m, gone);
    del_key(db, &m, hot);
    fill_until_rotation(db, &m, 100, 200);
    put_new(db, &m, 2);
    verify(db, &m);
    close_all_hinted(db, store, 1);
    db = reopen_expect(store, 1, &m, 0);
    CHECK_OK(armdb_close(db));

    /* Whatever the file order: give the files their ids in reverse, so the
     * newest entries sit in the lowest-numbered files. */
    g_part = "highest GSN wins: files in reverse order";
    {
        struct shard_files f;
        list_shard(store, 0, &f);
        CHECK(f.ndata == f.nhint && f.ndata >= 30);
        for (unsigned i = 0; i < f.ndata / 2; i++) {
            static const char *const exts[] = {"data", "hint"};
            for (int e = 0; e < 2; e++) {
                char *a = t_file_path(store, 0, f.data[i], exts[e]);
                char *b = t_file_path(store, 0, f.data[f.ndata - 1 - i], exts[e]);
                char *t = t_path(store, "000/swap.tmp");
                CHECK(rename(a, t) == 0);
                CHECK(rename(b, a) == 0);
                CHECK(rename(t, b) == 0);
                free(a);
                free(b);
                free(t);
            }
        }
        db = reopen_expect(store, 1, &m, 0);
        CHECK_OK(armdb_close(db));
    }

    g_part = "highest GSN wins: no hints at all";
    {
        struct shard_files f;
        list_shard(store, 0, &f);
        for (unsigned i = 0; i < f.nhint; i++) {
            char *p = t_file_path(store, 0, f.hint[i], "hint");
            CHECK(unlink(p) == 0);
            free(p);
        }
        db = reopen_expect(store, 1, &m, f.ndata);
        CHECK_OK(armdb_close(db));
    }

    free(store);
    t_rmtree(dir);
    free(dir);
}

int main(void)
{
    g_seed = t_env_u64("ARMDB_SEED", 7177);
    atexit(report);
    case_rotation(g_seed);
    case_gsn_wins();
    g_passed = 1;
    return 0;
}
