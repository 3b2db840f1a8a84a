/*
 * recover_torn.c - a torn tail is cut exactly where the first damaged entry
 * starts, and nothing after the cut ever comes back.
 *
 * A child process writes a known sequence of entries to a 1-shard store
 * (puts of varied lengths, overwrites, deletes; one entry ends 8 bytes before
 * a page end so the next starts on the next page, one spans into the last
 * page), calls armdb_sync() and exits without closing: a crash that leaves
 * 000/00000001.data with no hint. The parent checks that file against the
 * format (offsets, header fields, checksums, zero padding), then for every
 * byte offset X of the last page and chosen offsets of the page before:
 *
 *   1. truncates a copy of the file to X,
 *   2. zero-fills a copy from X to its end (length kept),
 *
 * opens the copy and checks that the store holds exactly the effect of the
 * entries that are still complete (for a truncation: with their padding),
 * and that torn_bytes is counted when bytes of a cut entry were present.
 * 3. After such a recovery, new writes, close and reopen (also with every
 *    hint removed, so the cut file is read again) show the recovered prefix
 *    plus the new writes, never the cut entries.
 * 4. A flipped byte in the last entry, or in an entry in the middle, cuts
 *    the file at that entry.
 * 5. An empty newer data file (made by a rotation that wrote nothing) does
 *    not keep the torn tail of the file before it from being cut.
 *
 * Replay: ARMDB_SEED=<seed printed on failure>. ARMDB_TEST_JOBS sets how
 * many processes share the cut points (default 2).
 */
#include "test.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <xxhash.h>

#define KLEN 8
#define PG 4096u
#define MAXOPS 128
#define NKEYS 64
#define VBUF 8192

struct op {
    unsigned key;  /* index into the key universe */
    int del;       /* a tombstone */
    uint32_t vlen; /* 0 for a tombstone */
    uint64_t start, vend, end; /* entry start, end of value, end with padding */
};

struct layout {
    struct op ops[MAXOPS];
    size_t nops;
    unsigned nkeys;
    uint64_t seed;
    uint64_t size; /* data file length after the sync */
};

static uint64_t g_seed;
static const char *g_part = "setup";
static uint64_t g_x = UINT64_MAX;
static int g_passed;

static void report(void)
{
    if (!g_passed && g_x != UINT64_MAX)
        fprintf(stderr, "recover_torn: failed in '%s' at offset %" PRIu64 "; replay with ARMDB_SEED=%" PRIu64 "\n",
                g_part, g_x, g_seed);
    else if (!g_passed)
        fprintf(stderr, "recover_torn: failed in '%s'; replay with ARMDB_SEED=%" PRIu64 "\n", g_part,
                g_seed);
}

static void make_key(unsigned idx, uint8_t *k)
{
    uint64_t s = (uint64_t)idx * 7919 + 17;
    for (int i = 0; i < KLEN; i++) {
        uint8_t b = (uint8_t)t_rand(&s);
        k[i] = b ? b : 0x4b;
    }
    k[0] = (uint8_t)(idx + 1);
}

/* Value bytes of op i, all non-zero, so zero-filling any of them is seen. */
static void make_value(const struct layout *L, size_t i, uint8_t *v)
{
    uint64_t s = L->seed ^ (i * 0x9e3779b97f4a7c15ull);
    for (uint32_t j = 0; j < L->ops[i].vlen; j++) {
        uint8_t b = (uint8_t)t_rand(&s);
        v[j] = b ? b : 0xa5;
    }
}

/* Where the writer puts the next entry: never with < 16 bytes left in a page. */
static uint64_t place(uint64_t off)
{
    if (PG - off % PG < 16)
        off = (off / PG + 1) * PG;
    return off;
}

static void add_op(struct layout *L, uint64_t *off, unsigned key, int del, uint32_t vlen)
{
    struct op *o = &L->ops[L->nops++];
    CHECK(L->nops <= MAXOPS);
    o->key = key;
    o->del = del;
    o->vlen = del ? 0 : vlen;
    o->start = place(*off);
    o->vend = o->start + 16 + KLEN + o->vlen;
    o->end = (o->vend + 7) & ~7ull;
    *off = o->end;
}

/* Live keys after ops[0..n). */
static void replay(const struct layout *L, size_t n, int *holder /* [NKEYS], op index or -1 */)
{
    for (unsigned k = 0; k < NKEYS; k++)
        holder[k] = -1;
    for (size_t i = 0; i < n; i++)
        holder[L->ops[i].key] = L->ops[i].del ? -1 : (int)i;
}

/* A random live key: 0 if there is none. */
static int pick_live(const struct layout *L, uint64_t *rng, unsigned *key)
{
    int holder[NKEYS];
    unsigned live[NKEYS], n = 0;
    replay(L, L->nops, holder);
    for (unsigned k = 0; k < L->nkeys; k++)
        if (holder[k] >= 0)
            live[n++] = k;
    if (n)
        *key = live[t_rand(rng) % n];
    return n > 0;
}

static void random_op(struct layout *L, uint64_t *off, uint64_t *rng, uint32_t vmax)
{
    unsigned dice = (unsigned)(t_rand(rng) % 6), key;
    uint32_t vlen = (uint32_t)(t_rand(rng) % 2 ? t_rand(rng) % 65 : 65 + t_rand(rng) % (vmax - 64));
    if (dice < 2 && pick_live(L, rng, &key))
        add_op(L, off, key, dice == 0, vlen); /* delete or overwrite */
    else
        add_op(L, off, L->nkeys++, 0, vlen);
}

/* Three pages: page 0 ends with an entry 8 bytes short of the page end, an
 * entry spans from page 1 into page 2, and page 2 holds a delete, an
 * overwrite and ends with a put. */
static void build_layout(struct layout *L, uint64_t seed)
{
    uint64_t rng = seed, off = 0;
    unsigned key;
    memset(L, 0, sizeof(*L));
    L->seed = seed;
    while (PG - off > 1400)
        random_op(L, &off, &rng, 1100);
    add_op(L, &off, L->nkeys++, 0, (uint32_t)(PG - off - 8 - 16 - KLEN));
    CHECK(L->ops[L->nops - 1].end == PG - 8);
    CHECK(place(off) == PG);
    while (2 * PG - off > 1400)
        random_op(L, &off, &rng, 1100);
    add_op(L, &off, L->nkeys++, 0, (uint32_t)(2 * PG - off + 300));
    CHECK(L->ops[L->nops - 1].start < 2 * PG && L->ops[L->nops - 1].end > 2 * PG);
    CHECK(pick_live(L, &rng, &key));
    add_op(L, &off, key, 1, 0);
    CHECK(pick_live(L, &rng, &key));
    add_op(L, &off, key, 0, 40 + (uint32_t)(t_rand(&rng) % 200));
    while (off < 2 * PG + 2400)
        random_op(L, &off, &rng, 500);
    add_op(L, &off, L->nkeys++, 0, 100 + (uint32_t)(t_rand(&rng) % 200));
    CHECK(off < 3 * PG);
    CHECK(L->nkeys <= NKEYS);
}

/* The crash: write every op, sync, exit without close. */
static void child_write(const struct layout *L, const char *store)
{
    static uint8_t v[VBUF];
    armdb *db = t_open_store(store, KLEN, 0, 1, 0, 0, ARMDB_CREATE);
    for (size_t i = 0; i < L->nops; i++) {
        uint8_t k[KLEN];
        make_key(L->ops[i].key, k);
        if (L->ops[i].del) {
            CHECK_OK(armdb_delete(db, k, KLEN));
        } else {
            make_value(L, i, v);
            CHECK_OK(armdb_put(db, k, KLEN, v, L->ops[i].vlen));
        }
    }
    CHECK_OK(armdb_sync(db));
    _exit(0);
}

static void crash_write(const struct layout *L, const char *store)
{
    int status;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        child_write(L, store);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The crashed file must be exactly the layout, in the documented format. */
static void check_format(struct layout *L, const char *data)
{
    static uint8_t v[VBUF];
    size_t len;
    uint64_t pos = 0, last_gsn = 0;
    uint8_t *buf = t_read_file(data, &len);
    for (size_t i = 0; i < L->nops; i++) {
        const struct op *o = &L->ops[i];
        const uint8_t *e = buf + o->start;
        uint8_t k[KLEN];
        uint64_t gsn;
        for (; pos < o->start; pos++)
            CHECK(buf[pos] == 0);
        CHECK(o->end <= len);
        CHECK(t_le32(e + 4) == o->vlen);
        gsn = t_le64(e + 8);
        CHECK(((gsn >> 63) & 1) == (uint64_t)o->del);
        CHECK(((gsn >> 60) & 7) == 0);
        CHECK((gsn & ~(1ull << 63)) > last_gsn);
        last_gsn = gsn & ~(1ull << 63);
        make_key(o->key, k);
        CHECK(memcmp(e + 16, k, KLEN) == 0);
        make_value(L, i, v);
        CHECK(o->vlen == 0 || memcmp(e + 16 + KLEN, v, o->vlen) == 0);
        CHECK(t_le32(e) == (uint32_t)XXH3_64bits(e + 4, 12 + KLEN + o->vlen));
        pos = o->vend;
    }
    for (; pos < len; pos++)
        CHECK(buf[pos] == 0);
    /* The barrier wrote the partial last page zero-padded. */
    CHECK(len == (L->ops[L->nops - 1].vend + PG - 1) / PG * PG);
    L->size = len;
    free(buf);
}

static void zero_from(const char *path, uint64_t x)
{
    static const uint8_t zero[PG];
    struct stat st;
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK(fstat(fd, &st) == 0);
    for (uint64_t p = x; p < (uint64_t)st.st_size;) {
        uint64_t n = (uint64_t)st.st_size - p < PG ? (uint64_t)st.st_size - p : PG;
        CHECK(pwrite(fd, zero, (size_t)n, (off_t)p) == (ssize_t)n);
        p += n;
    }
    close(fd);
}

static void flip_byte(const char *path, uint64_t off)
{
    uint8_t b;
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pread(fd, &b, 1, (off_t)off) == 1);
    b ^= 0x20;
    CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
    close(fd);
}

static void remove_hints(const char *shard)
{
    DIR *d = opendir(shard);
    struct dirent *e;
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 5 && !strcmp(e->d_name + n - 5, ".hint")) {
            char *p = t_path(shard, e->d_name);
            CHECK(unlink(p) == 0);
            free(p);
        }
    }
    closedir(d);
}

static armdb *open_existing(const char *store)
{
    /* The smallest write buffer: thousands of opens follow. */
    return t_open_store(store, KLEN, 0, 1, 65536, 0, 0);
}

/*
 * Number of ops that survive damage from x on. An entry is its header, key,
 * value and zero padding (DESIGN 3): a truncated file keeps the entries whose
 * padded end is at or before x; zero-filling from x keeps those whose value
 * ends at or before x, as their padding was zero already.
 */
static size_t kept_at(const struct layout *L, uint64_t x, int zero_fill)
{
    size_t n = 0;
    while (n < L->nops && (zero_fill ? L->ops[n].vend : L->ops[n].end) <= x)
        n++;
    return n;
}

/*
 * The store must hold the effect of ops[0..kept) and nothing else; with
 * `after`, the writes made after the recovery on top: after_holder[k] is the
 * index in after->ops of key k's value, -1 if it was deleted, -2 if it was
 * not touched.
 */
static void check_state(armdb *db, const struct layout *L, size_t kept, const struct layout *after,
                        const int *after_holder)
{
    static uint8_t want[VBUF], buf[VBUF];
    int holder[NKEYS];
    uint64_t live = 0;
    replay(L, kept, holder);
    for (unsigned k = 0; k < NKEYS; k++) {
        uint8_t key[KLEN];
        size_t vl = 99999;
        const struct layout *src = L;
        int h = holder[k];
        if (after && after_holder[k] != -2) {
            src = after;
            h = after_holder[k];
        }
        make_key(k, key);
        if (h < 0) {
            CHECK_RC(armdb_get(db, key, KLEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
            continue;
        }
        live++;
        make_value(src, (size_t)h, want);
        CHECK_OK(armdb_get(db, key, KLEN, buf, sizeof(buf), &vl));
        CHECK(vl == src->ops[h].vlen);
        CHECK(vl == 0 || memcmp(buf, want, vl) == 0);
    }
    CHECK(armdb_count(db) == live);
}

/* Open a damaged copy and check it against the prefix that must survive. */
/* cut_end: end of the bytes of the original file still present after the
 * damage (bytes of a cut entry among them mean torn bytes); file_len: length
 * of the damaged file. */
static void check_recovery(const struct layout *L, const char *copy, uint64_t cut_end,
                           uint64_t file_len, size_t kept, const uint8_t *orig)
{
    armdb_stat st;
    armdb *db = open_existing(copy);
    uint64_t kept_end = kept ? L->ops[kept - 1].end : 0;
    int torn = 0;
    for (uint64_t p = kept_end; p < cut_end; p++)
        torn |= orig[p] != 0;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.files_scanned == 1);
    CHECK(st.hints_loaded == 0);
    if (torn)
        CHECK(st.torn_bytes > 0);
    CHECK(st.torn_bytes <= file_len - kept_end);
    if (kept)
        CHECK(st.gsn >= (t_le64(orig + L->ops[kept - 1].start + 8) & ~(1ull << 63)));
    check_state(db, L, kept, NULL, NULL);
    CHECK_OK(armdb_close(db));
}

/* Offsets to cut at: all of the last page (and its end: no cut), and the
 * interesting ones of the page before. */
static size_t cut_points(const struct layout *L, uint64_t *xs)
{
    size_t n = 0;
    uint64_t last = L->size - PG, prev = last - PG;
    for (size_t i = 0; i < L->nops; i++) {
        const struct op *o = &L->ops[i];
        uint64_t c[] = {o->start, o->start + 1, o->start + 4, o->start + 15, o->start + 16,
                        o->vend - 1, o->vend, o->end};
        for (size_t j = 0; j < sizeof(c) / sizeof(c[0]); j++)
            if (c[j] >= prev && c[j] < last)
                xs[n++] = c[j];
    }
    xs[n++] = prev + 1;
    for (uint64_t x = last; x <= L->size; x++)
        xs[n++] = x;
    return n;
}

/* Remove every file of a shard directory. */
static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        char *p;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        p = t_path(dir, e->d_name);
        CHECK(unlink(p) == 0);
        free(p);
    }
    closedir(d);
}

/* The crashed file, damaged from x on: cut there, or zero-filled. */
static void write_damaged(const char *path, const uint8_t *orig, uint64_t size, uint64_t x,
                          int zero_fill, uint8_t *scratch)
{
    uint64_t len = zero_fill ? size : x;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    memcpy(scratch, orig, (size_t)x);
    memset(scratch + x, 0, (size_t)(len - x));
    CHECK(write(fd, scratch, (size_t)len) == (ssize_t)len);
    close(fd);
}

/* 5. A newer data file that is empty (a writer of a shared store that died
 * as it rotated, having made the next file and written nothing to it) does
 * not hide the torn tail of the file before it: that one is still the one
 * whose tail is cut, not scanned as damage. */
static void part_empty_newer(const struct layout *L, const char *store, uint64_t x, size_t kept)
{
    char *dir = t_tmpdir("torn-empty");
    char *copy = t_path(dir, "db");
    char *data = t_path(copy, "000/00000001.data");
    char *empty = t_path(copy, "000/00000002.data");
    t_copy_tree(store, copy);
    CHECK(truncate(data, (off_t)x) == 0);
    int fd = open(empty, O_WRONLY | O_CREAT | O_EXCL, 0644);
    CHECK(fd >= 0);
    close(fd);
    armdb *db = open_existing(copy);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.torn_bytes > 0 && st.corrupt_entries == 0);
    check_state(db, L, kept, NULL, NULL);
    CHECK_OK(armdb_close(db));
    CHECK(access(empty, F_OK) != 0); /* made and never written: removed */
    free(empty);
    free(data);
    free(copy);
    t_rmtree(dir);
    free(dir);
}

/* Worker `no` of `nw` takes every nw-th cut point, for both kinds of damage. */
static void cut_worker(const struct layout *L, const char *store, const uint8_t *orig,
                       const uint64_t *xs, size_t n, unsigned no, unsigned nw)
{
    char *dir = t_tmpdir("torn-cut");
    char *copy = t_path(dir, "db");
    char *shard = t_path(copy, "000");
    char *data = t_path(copy, "000/00000001.data");
    uint8_t *scratch = malloc((size_t)L->size);
    CHECK(scratch != NULL);
    t_copy_tree(store, copy);
    for (int zero_fill = 0; zero_fill < 2; zero_fill++) {
        g_part = zero_fill ? "zero-fill from X" : "truncate to X";
        for (size_t i = no; i < n; i += nw) {
            uint64_t x = xs[i];
            g_x = x;
            clear_dir(shard);
            write_damaged(data, orig, L->size, x, zero_fill, scratch);
            check_recovery(L, copy, x, zero_fill ? L->size : x, kept_at(L, x, zero_fill), orig);
        }
    }
    g_x = UINT64_MAX;
    free(scratch);
    free(data);
    free(shard);
    free(copy);
    t_rmtree(dir);
    free(dir);
}

/* Parts 1 and 2, every cut point, shared among worker processes (each open
 * costs a few fsyncs; the machine's cores overlap them). */
static void part_cut(const struct layout *L, const char *store)
{
    static uint64_t xs[2 * PG];
    char *odata = t_path(store, "000/00000001.data");
    unsigned nw = (unsigned)t_env_u64("ARMDB_TEST_JOBS", 2);
    size_t len;
    uint8_t *orig = t_read_file(odata, &len);
    size_t n = cut_points(L, xs);
    pid_t pids[16];
    CHECK(len == L->size);
    if (nw < 1)
        nw = 1;
    if (nw > 16)
        nw = 16;
    for (unsigned w = 0; w < nw; w++) {
        pids[w] = fork();
        CHECK(pids[w] >= 0);
        if (pids[w] == 0) {
            cut_worker(L, store, orig, xs, n, w, nw);
            _exit(0);
        }
    }
    for (unsigned w = 0; w < nw; w++) {
        int status;
        CHECK(waitpid(pids[w], &status, 0) == pids[w]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    free(orig);
    free(odata);
}

/*
 * Recover a damaged copy (damage applied by the caller through `damage`),
 * then write more, close, reopen, and reopen again with no hints at all:
 * the recovered prefix plus the new writes, never the cut entries.
 */
enum damage { CUT_TRUNCATE, CUT_ZERO, FLIP };

static void part_rewrite(const struct layout *L, const char *store, enum damage how, uint64_t x,
                         size_t kept, uint64_t seed)
{
    static uint8_t v[VBUF];
    char *dir = t_tmpdir("torn-after");
    char *copy = t_path(dir, "db");
    char *shard = t_path(copy, "000");
    char *data = t_path(copy, "000/00000001.data");
    char *odata = t_path(store, "000/00000001.data");
    struct layout after;
    int after_holder[NKEYS];
    size_t len;
    uint64_t rng = seed;
    uint8_t *orig = t_read_file(odata, &len);
    armdb *db;

    g_x = x;
    t_copy_tree(store, copy);
    if (how == CUT_TRUNCATE)
        CHECK(truncate(data, (off_t)x) == 0);
    else if (how == CUT_ZERO)
        zero_from(data, x);
    else
        flip_byte(data, x);
    /* A flip at x damages the entry holding x: bytes of it are "torn". */
    check_recovery(L, copy, how == FLIP ? L->ops[kept].vend : x,
                   how == CUT_TRUNCATE ? x : L->size, kept, orig);

    /* New writes: rewrite half of the cut keys, a few recovered ones, some
     * new ones; delete one recovered key. */
    memset(&after, 0, sizeof(after));
    after.seed = seed ^ 0xa5a5;
    for (unsigned k = 0; k < NKEYS; k++)
        after_holder[k] = -2;
    db = open_existing(copy);
    for (size_t i = kept; i < L->nops; i += 2) {
        unsigned k = L->ops[i].key;
        struct op *o = &after.ops[after.nops];
        uint8_t key[KLEN];
        o->key = k;
        o->vlen = (uint32_t)(t_rand(&rng) % 900);
        make_value(&after, after.nops, v);
        make_key(k, key);
        CHECK_OK(armdb_put(db, key, KLEN, v, o->vlen));
        after_holder[k] = (int)after.nops++;
    }
    {
        int holder[NKEYS];
        unsigned done = 0;
        replay(L, kept, holder);
        for (unsigned k = 0; k < NKEYS && done < 4; k++) {
            uint8_t key[KLEN];
            if (holder[k] < 0 || after_holder[k] != -2)
                continue;
            make_key(k, key);
            if (done == 0) {
                CHECK_OK(armdb_delete(db, key, KLEN));
                after_holder[k] = -1;
            } else {
                struct op *o = &after.ops[after.nops];
                o->key = k;
                o->vlen = (uint32_t)(t_rand(&rng) % 900);
                make_value(&after, after.nops, v);
                CHECK_OK(armdb_put(db, key, KLEN, v, o->vlen));
                after_holder[k] = (int)after.nops++;
            }
            done++;
        }
    }
    check_state(db, L, kept, &after, after_holder);
    CHECK_OK(armdb_close(db));

    db = open_existing(copy);
    check_state(db, L, kept, &after, after_holder);
    CHECK_OK(armdb_close(db));

    remove_hints(shard);
    db = open_existing(copy);
    check_state(db, L, kept, &after, after_holder);
    CHECK_OK(armdb_close(db));

    g_x = UINT64_MAX;
    free(orig);
    free(odata);
    free(data);
    free(shard);
    free(copy);
    t_rmtree(dir);
    free(dir);
}

int main(void)
{
    static struct layout L;
    char *dir, *store, *shard, *data;
    DIR *d;
    struct dirent *e;
    int nfiles = 0;

    g_seed = t_env_u64("ARMDB_SEED", 424242);
    atexit(report);
    build_layout(&L, g_seed);

    dir = t_tmpdir("torn");
    store = t_path(dir, "db");
    shard = t_path(store, "000");
    data = t_path(store, "000/00000001.data");
    crash_write(&L, store);

    /* The crash left one data file and no hint. */
    d = opendir(shard);
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        CHECK(!strcmp(e->d_name, "00000001.data"));
        nfiles++;
    }
    closedir(d);
    CHECK(nfiles == 1);
    check_format(&L, data);
    CHECK(L.size == 3 * PG);

    g_part = "cut points (see the worker's message above)";
    part_cut(&L, store);

    /* Recovery, new writes, reopen, after several kinds of damage. */
    {
        const struct op *span = NULL, *lastp = &L.ops[L.nops - 1];
        size_t mid = 0;
        for (size_t i = 0; i < L.nops; i++) {
            if (L.ops[i].start < 2 * PG && L.ops[i].vend > 2 * PG)
                span = &L.ops[i];
            if (!mid && L.ops[i].start >= PG + 1000 && L.ops[i].vlen > 0)
                mid = i;
        }
        CHECK(span != NULL && mid > 0);
        g_part = "truncate inside the spanning entry, then write";
        part_rewrite(&L, store, CUT_TRUNCATE, 2 * PG + 5, (size_t)(span - L.ops), g_seed + 1);
        g_part = "truncate inside the last entry, then write";
        part_rewrite(&L, store, CUT_TRUNCATE, lastp->start + 20, L.nops - 1, g_seed + 2);
        g_part = "zero-fill from inside an entry of the last page, then write";
        part_rewrite(&L, store, CUT_ZERO, L.ops[L.nops - 3].start + 9, L.nops - 3, g_seed + 3);
        g_part = "flip a byte in the value of the last entry, then write";
        CHECK(!lastp->del && lastp->vlen > 0);
        part_rewrite(&L, store, FLIP, lastp->start + 16 + KLEN + lastp->vlen / 2, L.nops - 1,
                     g_seed + 4);
        g_part = "flip a byte in the key of an entry in the middle, then write";
        part_rewrite(&L, store, FLIP, L.ops[mid].start + 16 + 3, mid, g_seed + 5);
        g_part = "flip a byte in the value length of an entry in the middle, then write";
        part_rewrite(&L, store, FLIP, L.ops[mid + 1].start + 5, mid + 1, g_seed + 6);
        g_part = "truncate inside the last entry, with an empty newer file";
        part_empty_newer(&L, store, lastp->start + 20, L.nops - 1);
    }

    free(data);
    free(shard);
    free(store);
    t_rmtree(dir);
    free(dir);
    g_passed = 1;
    return 0;
}
