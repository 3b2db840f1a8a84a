/*
 * write_path.c - what the writer puts on disk is the format of DESIGN §3,
 * read back here by an independent parser, and the write-side counters,
 * GSNs and rotation behave as armdb.h documents.
 *
 * - format: every entry's checksum (XXH3), length, GSN, key, value and zero
 *   padding; GSNs strictly increase; a tombstone has bit 63 and length 0;
 *   files are whole 4096-byte pages.
 * - page rule: no entry starts with fewer than 16 bytes left in a page, the
 *   rest of such a page is zero, and nothing else is wasted.
 * - barrier rule: bytes a sync made durable stay byte-identical, and the
 *   next batch continues right where the synced data ended.
 * - O_DIRECT and the I/O backend as reported by armdb_stats.
 * - counters: puts, gets, deletes, bytes_written, syncs, keys, live and
 *   dead bytes, index bytes per key.
 * - GSN: increases with every write and, after a reopen, new writes are
 *   stamped past every GSN in the files (also one planted far ahead).
 * - fixed-length values round-trip and survive reopen.
 * - rotation at max_file_size: several files, hints, sizes, data intact.
 *
 * Replay: ARMDB_SEED=<seed printed on failure>.
 */
#include "test.h"

#include <fcntl.h>
#include <time.h>
#include <xxhash.h>

#define PAGE 4096u
#define HDR 16u
#define TOMB (1ull << 63)
#define RESERVED (7ull << 60)

static uint64_t g_seed;
static const char *g_part = "setup";
static int g_passed;

static void report(void)
{
    if (!g_passed)
        fprintf(stderr, "write_path: failed in '%s'; replay with ARMDB_SEED=%" PRIu64 "\n", g_part, g_seed);
}

/* ---- little-endian writes and layout helpers, independent of the engine ---- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t pad8(uint64_t v) { return (v + 7) & ~7ull; }

static uint64_t esize(uint32_t klen, uint32_t vlen) { return pad8(HDR + (uint64_t)klen + vlen); }

static uint64_t round_up_page(uint64_t v) { return (v + PAGE - 1) / PAGE * PAGE; }

/* Where an entry may start if the previous data ends at `end`. */
static uint64_t next_start(uint64_t end)
{
    uint64_t left = PAGE - end % PAGE;
    return left < HDR ? end + left : end;
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* ---- a data file, parsed ---- */

struct ent {
    uint64_t off;
    uint32_t vlen;
    uint64_t gsn; /* with the tombstone bit */
    const unsigned char *key, *val;
};

struct dimg {
    unsigned char *buf;
    size_t len;
    struct ent *e;
    size_t n, cap;
    uint64_t end; /* where the data ends */
};

/*
 * Parse a data file as DESIGN §3 defines it, asserting the format as it
 * goes: whole pages; each entry starts with at least 16 bytes left in its
 * page, right after the previous one (or, with fewer than 16 bytes left,
 * at the next page after zeros); checksum, reserved bits, tombstones,
 * zero padding; and nothing but zeros after the last entry.
 */
static void parse(const char *path, uint32_t klen, struct dimg *d)
{
    uint64_t pos = 0;
    memset(d, 0, sizeof(*d));
    d->buf = t_read_file(path, &d->len);
    if (d->len % PAGE)
        fprintf(stderr, "%s: length %zu is not whole pages\n", path, d->len);
    CHECK(d->len % PAGE == 0);
    for (;;) {
        const unsigned char *p;
        uint64_t left = PAGE - pos % PAGE, sz;
        uint32_t vlen;
        uint64_t gsn;
        if (left < HDR) {
            CHECK(pos + left <= d->len);
            CHECK(all_zero(d->buf + pos, (size_t)left));
            pos += left;
            continue;
        }
        if (pos + HDR > d->len)
            break;
        p = d->buf + pos;
        if (all_zero(p, HDR))
            break;
        vlen = t_le32(p + 4);
        gsn = t_le64(p + 8);
        sz = esize(klen, vlen);
        if (pos + sz > d->len)
            fprintf(stderr, "%s: entry at %" PRIu64 " (value_len %u) passes the end\n", path, pos, vlen);
        CHECK(pos + sz <= d->len);
        if ((uint32_t)XXH3_64bits(p + 4, 12 + (size_t)klen + vlen) != t_le32(p))
            fprintf(stderr, "%s: checksum of entry at %" PRIu64 "\n", path, pos);
        CHECK((uint32_t)XXH3_64bits(p + 4, 12 + (size_t)klen + vlen) == t_le32(p));
        CHECK((gsn & RESERVED) == 0);
        CHECK((gsn & ~TOMB) != 0);
        if (gsn & TOMB)
            CHECK(vlen == 0);
        CHECK(all_zero(p + HDR + klen + vlen, (size_t)(sz - HDR - klen - vlen)));
        if (d->n == d->cap) {
            d->cap = d->cap ? d->cap * 2 : 64;
            d->e = realloc(d->e, d->cap * sizeof(*d->e));
            CHECK(d->e != NULL);
        }
        d->e[d->n].off = pos;
        d->e[d->n].vlen = vlen;
        d->e[d->n].gsn = gsn;
        d->e[d->n].key = p + HDR;
        d->e[d->n].val = p + HDR + klen;
        /* Contiguous: the page rule is the only gap allowed. */
        if (d->n)
            CHECK(pos == next_start(d->e[d->n - 1].off + esize(klen, d->e[d->n - 1].vlen)));
        else
            CHECK(pos == 0);
        d->n++;
        pos += sz;
        d->end = pos;
    }
    /* After the last entry: zeros to the end of the file. */
    CHECK(d->end <= d->len);
    if (!all_zero(d->buf + d->end, d->len - (size_t)d->end))
        fprintf(stderr, "%s: non-zero bytes after the data end %" PRIu64 "\n", path, d->end);
    CHECK(all_zero(d->buf + d->end, d->len - (size_t)d->end));
}

static void dimg_free(struct dimg *d)
{
    free(d->buf);
    free(d->e);
    memset(d, 0, sizeof(*d));
}

static int path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Sorted ids of a shard's files with extension ext. */
static unsigned list_ids(const char *store, unsigned shard, const char *ext, unsigned *ids, unsigned cap)
{
    char name[16];
    char *dir;
    DIR *d;
    struct dirent *e;
    unsigned n = 0;
    snprintf(name, sizeof(name), "%03x", shard);
    dir = t_path(store, name);
    d = opendir(dir);
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        long id = t_file_id(e->d_name, ext);
        if (id < 0)
            continue;
        CHECK(id >= 1);
        CHECK(n < cap);
        ids[n++] = (unsigned)id;
    }
    closedir(d);
    free(dir);
    qsort(ids, n, sizeof(*ids), t_cmp_unsigned);
    return n;
}

static uint64_t data_bytes(const char *store, unsigned shards)
{
    unsigned ids[512];
    uint64_t sum = 0;
    for (unsigned s = 0; s < shards; s++) {
        unsigned n = list_ids(store, s, "data", ids, 512);
        for (unsigned i = 0; i < n; i++) {
            struct stat st;
            char *p = t_file_path(store, s, ids[i], "data");
            CHECK(stat(p, &st) == 0);
            sum += (uint64_t)st.st_size;
            free(p);
        }
    }
    return sum;
}

/* ---- keys, values, stores ---- */

static void key8(uint64_t n, unsigned char *k) { snprintf((char *)k, 9, "k%07" PRIu64, n % 10000000u); }

static armdb_stat stats(armdb *db)
{
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.keys == armdb_count(db));
    return st;
}

static void expect_value(armdb *db, const void *k, size_t kl, const void *want, size_t wl)
{
    static unsigned char buf[1 << 18];
    size_t vl = 0;
    CHECK(wl <= sizeof(buf));
    CHECK_OK(armdb_get(db, k, kl, buf, sizeof(buf), &vl));
    CHECK(vl == wl);
    CHECK(wl == 0 || memcmp(buf, want, wl) == 0);
}

/* ---- cases ---- */

struct want {
    unsigned char key[8];
    const char *val;
    uint32_t vlen;
    int tomb;
};

static void case_format(void)
{
    char *dir = t_tmpdir("write-path");
    char *store = t_path(dir, "db");
    char *data, *hint;
    static char v300[300];
    struct want w[8];
    struct dimg d, d2;
    unsigned ids[8];
    armdb_stat st;
    armdb *db;
    size_t nw = 0;

    g_part = "format";
    for (int i = 0; i < 300; i++)
        v300[i] = (char)(i * 7 + 1);
    db = t_open_store(store, 8, 0, 1, 0, 0, ARMDB_CREATE);

#define PUT(n, s, l)                                                                                         \
    do {                                                                                                     \
        key8(n, w[nw].key);                                                                                  \
        w[nw].val = (s);                                                                                     \
        w[nw].vlen = (l);                                                                                    \
        w[nw].tomb = 0;                                                                                      \
        CHECK_OK(armdb_put(db, w[nw].key, 8, (s), (l)));                                                     \
        nw++;                                                                                                \
    } while (0)
    PUT(1, "hello", 5);
    PUT(2, "", 0);
    PUT(3, "eight!!!", 8);
    PUT(4, v300, 300);
    PUT(1, "hello, again!", 13);
    key8(2, w[nw].key);
    w[nw].val = "";
    w[nw].vlen = 0;
    w[nw].tomb = 1;
    CHECK_OK(armdb_delete(db, w[nw].key, 8));
    nw++;
    PUT(5, "z", 1);
#undef PUT
    CHECK_OK(armdb_sync(db));

    /* One shard, first open: the only data file is 000/00000001.data. */
    CHECK(list_ids(store, 0, "data", ids, 8) == 1 && ids[0] == 1);
    data = t_file_path(store, 0, 1, "data");
    parse(data, 8, &d);
    CHECK(d.n == nw);
    for (size_t i = 0; i < nw; i++) {
        CHECK(memcmp(d.e[i].key, w[i].key, 8) == 0);
        CHECK(d.e[i].vlen == w[i].vlen);
        CHECK(w[i].vlen == 0 || memcmp(d.e[i].val, w[i].val, w[i].vlen) == 0);
        CHECK(!!(d.e[i].gsn & TOMB) == w[i].tomb);
        if (i)
            CHECK((d.e[i].gsn & ~TOMB) > (d.e[i - 1].gsn & ~TOMB));
    }
    /* Small entries, no page crossed: back to back from offset 0. */
    {
        uint64_t off = 0;
        for (size_t i = 0; i < nw; i++) {
            CHECK(d.e[i].off == off);
            off += esize(8, w[i].vlen);
        }
        CHECK(d.end == off);
        CHECK(d.len == PAGE);
    }
    st = stats(db);
    CHECK(st.gsn == (d.e[nw - 1].gsn & ~TOMB));
    CHECK(st.keys == 4);
    CHECK_OK(armdb_close(db));

    /* The clean close left the same bytes and added the hint. */
    parse(data, 8, &d2);
    CHECK(d2.n == nw && d2.end == d.end);
    CHECK(memcmp(d.buf, d2.buf, (size_t)d.end) == 0);
    hint = t_file_path(store, 0, 1, "hint");
    CHECK(path_exists(hint));
    free(hint);
    dimg_free(&d2);

    /* And the store reads it back. */
    db = t_open_store(store, 0, 0, 0, 0, 0, ARMDB_CREATE);
    CHECK(armdb_count(db) == 4);
    expect_value(db, w[4].key, 8, "hello, again!", 13);
    expect_value(db, w[2].key, 8, "eight!!!", 8);
    expect_value(db, w[3].key, 8, v300, 300);
    expect_value(db, w[6].key, 8, "z", 1);
    {
        unsigned char buf[8];
        size_t vl;
        CHECK_RC(armdb_get(db, w[1].key, 8, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
    }
    CHECK_OK(armdb_close(db));

    dimg_free(&d);
    free(data);
    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Entries that end 8 bytes, 16 bytes and 0 bytes before a page end. */
static void case_page_rule(uint64_t seed)
{
    /* value lengths and the offsets where their entries must start */
    static const uint32_t vl[] = {4064, 4056, 100, 3960, 10, 4024, 5};
    static const uint64_t off[] = {0, 4096, 8176, 8304, 12288, 12328, 16384};
    const size_t n = sizeof(vl) / sizeof(vl[0]);
    char *dir = t_tmpdir("write-path");
    char *store = t_path(dir, "db");
    char *data;
    static unsigned char vals[64][5000];
    uint32_t lens[64];
    uint64_t rng = seed;
    struct dimg d;
    armdb *db;
    size_t total;

    g_part = "page rule";
    db = t_open_store(store, 8, 0, 1, 0, 0, ARMDB_CREATE);
    for (size_t i = 0; i < n; i++) {
        unsigned char k[9];
        key8(i, k);
        lens[i] = vl[i];
        t_fill(seed + i, vals[i], vl[i]);
        CHECK_OK(armdb_put(db, k, 8, vals[i], vl[i]));
    }
    /* Then random sizes, so that many entries meet a page end. */
    total = n;
    while (total < 64) {
        unsigned char k[9];
        key8(total, k);
        lens[total] = (uint32_t)(t_rand(&rng) % 4500);
        t_fill(seed + total, vals[total], lens[total]);
        CHECK_OK(armdb_put(db, k, 8, vals[total], lens[total]));
        total++;
    }
    CHECK_OK(armdb_sync(db));
    data = t_file_path(store, 0, 1, "data");
    parse(data, 8, &d);
    CHECK(d.n == total);
    for (size_t i = 0; i < n; i++) {
        if (d.e[i].off != off[i])
            fprintf(stderr, "entry %zu at %" PRIu64 ", expected %" PRIu64 "\n", i, d.e[i].off, off[i]);
        CHECK(d.e[i].off == off[i]);
    }
    /* The 8 bytes before 4096 and before 16384 are zero fill. */
    CHECK(all_zero(d.buf + 4088, 8));
    CHECK(all_zero(d.buf + 16376, 8));
    /* The entry at 8176 spans into the next page. */
    CHECK(d.e[2].off + esize(8, vl[2]) > 8192);
    for (size_t i = 0; i < total; i++) {
        CHECK(PAGE - d.e[i].off % PAGE >= HDR);
        CHECK(d.e[i].vlen == lens[i]);
        CHECK(memcmp(d.e[i].val, vals[i], lens[i]) == 0);
    }
    dimg_free(&d);

    /* A reader skips the fill: everything reads back, before and after a
     * reopen. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < total; i++) {
            unsigned char k[9];
            key8(i, k);
            expect_value(db, k, 8, vals[i], lens[i]);
        }
        CHECK(armdb_count(db) == total);
        CHECK_OK(armdb_close(db));
        db = t_open_store(store, 0, 0, 0, 0, 0, ARMDB_CREATE);
    }
    CHECK_OK(armdb_close(db));
    free(data);
    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Sync after sync: the synced bytes never change and the next batch starts
 * where the synced data ended. */
static void case_barrier(uint64_t seed)
{
    char *dir = t_tmpdir("write-path");
    char *store = t_path(dir, "db");
    char *data;
    static unsigned char val[4000];
    unsigned char *prev = NULL;
    uint64_t prev_end = 0, rng = seed;
    size_t nent = 0;
    uint32_t *lens = NULL;
    armdb *db;
    int rounds = (int)t_env_u64("ARMDB_ROUNDS", 40);

    g_part = "barrier rule";
    /* A small buffer (64 KiB) makes some rounds write full pages early. */
    db = t_open_store(store, 8, 0, 1, 65536, 0, ARMDB_CREATE);
    data = t_file_path(store, 0, 1, "data");
    lens = malloc(sizeof(*lens) * (size_t)rounds * 64);
    CHECK(lens != NULL);
    for (int r = 0; r < rounds; r++) {
        int batch = 1 + (int)(t_rand(&rng) % (r % 5 == 4 ? 60 : 6));
        struct dimg d;
        size_t first = nent;
        for (int i = 0; i < batch; i++) {
            unsigned char k[9];
            uint32_t l = (uint32_t)(t_rand(&rng) % (r % 3 == 0 ? 4000 : 200));
            key8(nent, k);
            t_fill(seed ^ nent, val, l);
            CHECK_OK(armdb_put(db, k, 8, val, l));
            lens[nent++] = l;
        }
        CHECK_OK(armdb_sync(db));
        parse(data, 8, &d);
        CHECK(d.n == nent);
        /* What the last barrier made durable is still there, unchanged. */
        CHECK(d.end > prev_end);
        if (prev_end && memcmp(prev, d.buf, (size_t)prev_end) != 0) {
            size_t at = 0;
            while (prev[at] == d.buf[at])
                at++;
            fprintf(stderr, "round %d: synced byte %zu changed\n", r, at);
            CHECK(0);
        }
        /* No padding wasted: the batch continues the synced data. */
        CHECK(d.e[first].off == next_start(prev_end));
        for (size_t i = 0; i < nent; i++) {
            unsigned char k[9];
            key8(i, k);
            CHECK(memcmp(d.e[i].key, k, 8) == 0);
            CHECK(d.e[i].vlen == lens[i]);
        }
        for (size_t i = first; i < nent; i++) {
            t_fill(seed ^ i, val, lens[i]);
            CHECK(memcmp(d.e[i].val, val, lens[i]) == 0);
        }
        /* The barrier wrote the partial last page, padded: whole pages. */
        CHECK(d.len >= round_up_page(d.end));
        free(prev);
        prev = malloc((size_t)d.end);
        CHECK(prev != NULL);
        memcpy(prev, d.buf, (size_t)d.end);
        prev_end = d.end;
        dimg_free(&d);
    }
    CHECK_OK(armdb_close(db));
    /* Close is a barrier too, over the same bytes. */
    {
        struct dimg d;
        parse(data, 8, &d);
        CHECK(d.end == prev_end && memcmp(prev, d.buf, (size_t)prev_end) == 0);
        dimg_free(&d);
    }
    db = t_open_store(store, 0, 0, 0, 0, 0, ARMDB_CREATE);
    CHECK(armdb_count(db) == nent);
    for (size_t i = 0; i < nent; i++) {
        unsigned char k[9];
        key8(i, k);
        t_fill(seed ^ i, val, lens[i]);
        expect_value(db, k, 8, val, lens[i]);
    }
    CHECK_OK(armdb_close(db));
    free(prev);
    free(lens);
    free(data);
    free(store);
    t_rmtree(dir);
    free(dir);
}

static void case_direct_backend(void)
{
    char *dir = t_tmpdir("write-path");
    char *a = t_path(dir, "a"), *b = t_path(dir, "b"), *c = t_path(dir, "c");
    char *probe = t_path(dir, "probe");
    armdb_stat st;
    armdb *db;
    int fd, direct_ok;
    unsigned char k[9];

    g_part = "O_DIRECT and backend";
    fd = open(probe, O_RDWR | O_CREAT | O_DIRECT, 0644);
    direct_ok = fd >= 0;
    if (fd < 0)
        CHECK(errno == EINVAL);
    else
        close(fd);

    db = t_open_store(a, 8, 0, 2, 0, 0, ARMDB_NO_DIRECT | ARMDB_CREATE);
    st = stats(db);
    CHECK(st.direct_io == 0);
    CHECK(st.io_backend == ARMDB_IO_PWRITE || st.io_backend == ARMDB_IO_URING);
    key8(1, k);
    CHECK_OK(armdb_put(db, k, 8, "v", 1));
    CHECK_OK(armdb_close(db));

    db = t_open_store(b, 8, 0, 2, 0, 0, ARMDB_CREATE);
    st = stats(db);
    if (direct_ok)
        CHECK(st.direct_io == 1);
    else
        CHECK(st.direct_io == 0);
    CHECK(st.io_backend == ARMDB_IO_PWRITE || st.io_backend == ARMDB_IO_URING);
    CHECK_OK(armdb_put(db, k, 8, "v", 1));
    CHECK_OK(armdb_close(db));
    /* The flag holds per open, not per store. */
    db = t_open_store(b, 0, 0, 0, 0, 0, ARMDB_NO_DIRECT | ARMDB_CREATE);
    st = stats(db);
    CHECK(st.direct_io == 0);
    expect_value(db, k, 8, "v", 1);
    CHECK_OK(armdb_close(db));

    db = t_open_store(c, 8, 0, 2, 0, 0, ARMDB_NO_URING | ARMDB_CREATE);
    st = stats(db);
    CHECK(st.io_backend == ARMDB_IO_PWRITE);
    CHECK_OK(armdb_put(db, k, 8, "v", 1));
    expect_value(db, k, 8, "v", 1);
    CHECK_OK(armdb_close(db));

    free(a);
    free(b);
    free(c);
    free(probe);
    t_rmtree(dir);
    free(dir);
}

static void case_counters(uint64_t seed)
{
    char *dir = t_tmpdir("write-path");
    char *store = t_path(dir, "db");
    char *big = t_path(dir, "big");
    unsigned char k[9], v[100], buf[128];
    armdb_stat s0, s1, s2;
    size_t vl;
    armdb *db;
    uint64_t rng = seed;
    const uint64_t emax = esize(8, 100), emin = 16 + 8 + 100; /* 128, 124 */

    g_part = "counters";
    db = t_open_store(store, 8, 0, 2, 0, 0, ARMDB_CREATE);
    s0 = stats(db);
    CHECK(s0.puts == 0 && s0.gets == 0 && s0.deletes == 0);
    CHECK(s0.keys == 0 && s0.live_bytes == 0 && s0.dead_bytes == 0);
    CHECK(s0.bytes_written == 0 && s0.syncs == 0);
    CHECK(s0.index_bytes_per_key == 0);
    CHECK(s0.read_only == 0);

    for (int i = 0; i < 10; i++) {
        key8((uint64_t)i, k);
        t_fill(seed + (uint64_t)i, v, 100);
        CHECK_OK(armdb_put(db, k, 8, v, 100));
    }
    s1 = stats(db);
    CHECK(s1.puts == 10 && s1.keys == 10);
    CHECK(s1.live_bytes >= 10 * emin && s1.live_bytes <= 10 * emax);
    CHECK(s1.dead_bytes == 0);
    /* SYNC_NONE, 1.3 KB in a 1 MiB buffer: nothing written, nothing synced. */
    CHECK(s1.bytes_written == 0 && s1.syncs == 0);
    CHECK(s1.gsn > 0);

    /* Overwrites: live stays (same sizes), dead grows by the old entries. */
    for (int i = 0; i < 3; i++) {
        key8((uint64_t)i, k);
        t_fill(seed + 100 + (uint64_t)i, v, 100);
        CHECK_OK(armdb_put(db, k, 8, v, 100));
    }
    s2 = stats(db);
    CHECK(s2.puts == 13 && s2.keys == 10);
    CHECK(s2.live_bytes == s1.live_bytes);
    CHECK(s2.dead_bytes >= s1.dead_bytes + 3 * emin);

    /* Deletes: live shrinks, dead grows; a missing key counts nothing. */
    s1 = s2;
    for (int i = 3; i < 5; i++) {
        key8((uint64_t)i, k);
        CHECK_OK(armdb_delete(db, k, 8));
    }
    key8(999, k);
    CHECK_RC(armdb_delete(db, k, 8), ARMDB_NOTFOUND);
    s2 = stats(db);
    CHECK(s2.deletes == 2 && s2.keys == 8 && s2.puts == 13);
    CHECK(s2.live_bytes <= s1.live_bytes - 2 * emin && s2.live_bytes >= s1.live_bytes - 2 * emax);
    CHECK(s2.dead_bytes >= s1.dead_bytes + 2 * emin);

    /* Gets, found or not. */
    for (int i = 0; i < 6; i++) {
        key8((uint64_t)(i < 4 ? 5 + i : 500 + i), k);
        CHECK_RC(armdb_get(db, k, 8, buf, sizeof(buf), &vl), i < 4 ? 0 : ARMDB_NOTFOUND);
    }
    s2 = stats(db);
    CHECK(s2.gets == 6);

    /* cas: a success is a put, a failure nothing. */
    key8(9, k);
    t_fill(seed + 9, v, 100);
    CHECK_OK(armdb_cas(db, k, 8, v, 100, "new", 3));
    CHECK_RC(armdb_cas(db, k, 8, v, 100, "newer", 5), ARMDB_CONFLICT);
    CHECK_RC(armdb_cas(db, k, 8, NULL, 0, "newer", 5), ARMDB_EXISTS);
    key8(50, k);
    CHECK_OK(armdb_cas(db, k, 8, NULL, 0, "fifty", 5));
    s2 = stats(db);
    CHECK(s2.puts == 15 && s2.keys == 9 && s2.deletes == 2);

    /* A sync writes and syncs; the files hold what was written. */
    CHECK_OK(armdb_sync(db));
    s2 = stats(db);
    CHECK(s2.bytes_written > 0 && s2.syncs > 0);
    CHECK(s2.bytes_written >= data_bytes(store, 2));
    CHECK(s2.flushes == 0);
    {
        unsigned ids[16], nfiles = 0;
        for (unsigned s = 0; s < 2; s++)
            nfiles += list_ids(store, s, "data", ids, 16);
        CHECK(s2.files == nfiles);
    }
    CHECK(s2.index_bytes > 0);
    CHECK(s2.index_bytes_per_key == s2.index_bytes / s2.keys);
    /* A sync with nothing new writes nothing. */
    CHECK_OK(armdb_sync(db));
    s1 = stats(db);
    CHECK(s1.bytes_written == s2.bytes_written);
    CHECK_OK(armdb_close(db));

    /* Index memory per key, 100,000 keys of 16 bytes, variable values. */
    db = t_open_store(big, 16, 0, 4, 0, 0, ARMDB_CREATE);
    for (uint64_t i = 0; i < 100000; i++) {
        unsigned char key[16], val[64];
        uint32_t l = (uint32_t)(t_rand(&rng) % 65);
        memcpy(key, &i, 8);
        t_fill(i * 31 + 7, key + 8, 8);
        t_fill(i, val, l);
        CHECK_OK(armdb_put(db, key, 16, val, l));
    }
    s1 = stats(db);
    CHECK(s1.keys == 100000);
    CHECK(s1.puts == 100000);
    CHECK(s1.index_bytes_per_key > 0);
    if (s1.index_bytes_per_key > 16 + 32)
        fprintf(stderr, "index_bytes_per_key %" PRIu64 " over key_len + 32 = 48\n", s1.index_bytes_per_key);
    CHECK(s1.index_bytes_per_key <= 16 + 32);
    CHECK(s1.index_bytes_per_key == s1.index_bytes / s1.keys);
    /* A 1 MiB buffer per shard held 2+ MB of entries: full buffers flushed. */
    CHECK(s1.flushes > 0 && s1.bytes_written > 0);
    CHECK_OK(armdb_close(db));

    free(big);
    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Largest GSN (tombstone bit cleared) in every data file of the store. */
static uint64_t max_gsn_on_disk(const char *store, unsigned shards, uint32_t klen)
{
    unsigned ids[512];
    uint64_t max = 0;
    for (unsigned s = 0; s < shards; s++) {
        unsigned n = list_ids(store, s, "data", ids, 512);
        for (unsigned i = 0; i < n; i++) {
            char *p = t_file_path(store, s, ids[i], "data");
            struct dimg d;
            parse(p, klen, &d);
            for (size_t j = 0; j < d.n; j++)
                if ((d.e[j].gsn & ~TOMB) > max)
                    max = d.e[j].gsn & ~TOMB;
            dimg_free(&d);
            free(p);
        }
    }
    return max;
}

/* The GSN of key k in the newest data file of shard 0 (which must have it
 * as its last entry). */
static uint64_t last_gsn_of(const char *store, const unsigned char *k)
{
    unsigned ids[512];
    unsigned n = list_ids(store, 0, "data", ids, 512);
    char *p;
    struct dimg d;
    uint64_t g;
    CHECK(n >= 1);
    p = t_file_path(store, 0, ids[n - 1], "data");
    parse(p, 8, &d);
    CHECK(d.n >= 1);
    CHECK(memcmp(d.e[d.n - 1].key, k, 8) == 0);
    g = d.e[d.n - 1].gsn & ~TOMB;
    dimg_free(&d);
    free(p);
    return g;
}

static void case_gsn(uint64_t seed)
{
    char *dir = t_tmpdir("write-path");
    char *store = t_path(dir, "db");
    char *planted = t_path(dir, "planted");
    unsigned char k[9];
    uint64_t rng = seed, last, disk;
    armdb_stat st;
    armdb *db;

    g_part = "gsn";
    db = t_open_store(store, 8, 0, 2, 0, 0, ARMDB_CREATE);
    last = stats(db).gsn;
    for (int i = 0; i < 200; i++) {
        int op = (int)(t_rand(&rng) % 4);
        key8(t_rand(&rng) % 40, k);
        if (op == 0) {
            int rc = armdb_delete(db, k, 8);
            CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
            st = stats(db);
            if (rc == 0)
                CHECK(st.gsn > last);
            else
                CHECK(st.gsn == last);
        } else if (op == 1) {
            int rc = armdb_cas(db, k, 8, NULL, 0, "cas", 3);
            CHECK(rc == 0 || rc == ARMDB_EXISTS);
            st = stats(db);
            if (rc == 0)
                CHECK(st.gsn > last);
            else
                CHECK(st.gsn == last);
        } else {
            CHECK_OK(armdb_put(db, k, 8, "put", 3));
            st = stats(db);
            CHECK(st.gsn > last);
        }
        last = st.gsn;
    }
    CHECK_OK(armdb_sync(db));
    disk = max_gsn_on_disk(store, 2, 8);
    CHECK(disk == last);
    CHECK_OK(armdb_close(db));

    /* After a reopen, new writes are stamped past every GSN on disk. */
    CHECK(max_gsn_on_disk(store, 2, 8) == disk);
    db = t_open_store(store, 0, 0, 0, 0, 0, ARMDB_CREATE);
    st = stats(db);
    CHECK(st.gsn >= disk);
    key8(1000, k);
    CHECK_OK(armdb_put(db, k, 8, "after", 5));
    st = stats(db);
    CHECK(st.gsn > disk);
    CHECK_OK(armdb_sync(db));
    CHECK(max_gsn_on_disk(store, 2, 8) == st.gsn);
    CHECK_OK(armdb_close(db));

    /*
     * The process has seen those GSNs already, so the reopen above could
     * pass on the process's own counter. A GSN far ahead of anything this
     * process issued, planted in a file written here by the format, must
     * be found at open and passed by the next write.
     */
    {
        const uint64_t far = (1ull << 40) + 12345;
        unsigned char page[PAGE];
        char *p;
        int fd;
        unsigned ids[8];
        uint64_t g;

        db = t_open_store(planted, 8, 0, 1, 0, 0, ARMDB_CREATE);
        CHECK_OK(armdb_close(db));
        CHECK(list_ids(planted, 0, "data", ids, 8) == 0);
        memset(page, 0, sizeof(page));
        key8(77, k);
        put32(page + 4, 6);
        put64(page + 8, far);
        memcpy(page + 16, k, 8);
        memcpy(page + 24, "planted", 6);
        put32(page, (uint32_t)XXH3_64bits(page + 4, 12 + 8 + 6));
        p = t_file_path(planted, 0, 50, "data");
        fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
        CHECK(fd >= 0);
        CHECK(write(fd, page, sizeof(page)) == (ssize_t)sizeof(page));
        CHECK(fsync(fd) == 0);
        close(fd);
        free(p);

        db = t_open_store(planted, 0, 0, 0, 0, 0, ARMDB_CREATE);
        st = stats(db);
        CHECK(st.gsn >= far);
        CHECK(armdb_count(db) == 1);
        expect_value(db, k, 8, "planted", 6);
        key8(78, k);
        CHECK_OK(armdb_put(db, k, 8, "next", 4));
        st = stats(db);
        CHECK(st.gsn > far);
        CHECK_OK(armdb_sync(db));
        /* The new entry is in a new file past id 50, stamped past `far`. */
        CHECK(list_ids(planted, 0, "data", ids, 8) == 2);
        CHECK(ids[0] == 50 && ids[1] > 50);
        g = last_gsn_of(planted, k);
        CHECK(g > far);
        CHECK(g == st.gsn);
        CHECK_OK(armdb_close(db));
    }

    free(planted);
    free(store);
    t_rmtree(dir);
    free(dir);
}

static void case_fixed(uint64_t seed)
{
    enum { N = 2000 };
    char *dir = t_tmpdir("write-path");
    char *store = t_path(dir, "db");
    static unsigned char vals[N][8];
    static unsigned char live[N];
    uint64_t rng = seed;
    unsigned char k[9], buf[16];
    armdb_stat st;
    armdb *db;
    uint64_t n = 0;

    g_part = "fixed-length values";
    db = t_open_store(store, 8, 8, 3, 0, 0, ARMDB_CREATE);
    for (int i = 0; i < 3 * N; i++) {
        uint32_t idx = (uint32_t)(t_rand(&rng) % N);
        key8(idx, k);
        if (i % 7 == 6) {
            int rc = armdb_delete(db, k, 8);
            CHECK(rc == (live[idx] ? 0 : ARMDB_NOTFOUND));
            if (live[idx])
                n--;
            live[idx] = 0;
            continue;
        }
        t_fill(t_rand(&rng), vals[idx], 8);
        CHECK_OK(armdb_put(db, k, 8, vals[idx], 8));
        if (!live[idx])
            n++;
        live[idx] = 1;
    }
    for (int pass = 0; pass < 3; pass++) {
        st = stats(db);
        CHECK(st.value_len == 8);
        CHECK(armdb_count(db) == n);
        for (uint32_t i = 0; i < N; i++) {
            size_t vl = 0;
            key8(i, k);
            if (live[i]) {
                CHECK_OK(armdb_get(db, k, 8, buf, sizeof(buf), &vl));
                CHECK(vl == 8 && memcmp(buf, vals[i], 8) == 0);
            } else {
                CHECK_RC(armdb_get(db, k, 8, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
            }
        }
        CHECK_OK(armdb_close(db));
        if (pass == 0) {
            /* On disk every entry carries 8 value bytes, or is a tombstone. */
            unsigned ids[64];
            for (unsigned s = 0; s < 3; s++) {
                unsigned nf = list_ids(store, s, "data", ids, 64);
                for (unsigned f = 0; f < nf; f++) {
                    char *p = t_file_path(store, s, ids[f], "data");
                    struct dimg d;
                    parse(p, 8, &d);
                    for (size_t j = 0; j < d.n; j++)
                        CHECK(d.e[j].vlen == ((d.e[j].gsn & TOMB) ? 0 : 8));
                    dimg_free(&d);
                    free(p);
                }
            }
        }
        if (pass == 1) {
            armdb_options o;
            armdb_options_init(&o);
            o.flags = ARMDB_RDONLY;
            CHECK_OK(armdb_open(store, &o, &db));
        } else {
            db = t_open_store(store, 0, 0, 0, 0, 0, ARMDB_CREATE);
        }
    }
    CHECK_OK(armdb_close(db));
    free(store);
    t_rmtree(dir);
    free(dir);
}

/* All files of each shard hinted but the active one (poll: hints of rotated
 * files are written in the background). */
static int hints_complete(const char *store, unsigned shards, int open_active)
{
    unsigned data[512], hint[512];
    for (unsigned s = 0; s < shards; s++) {
        unsigned nd = list_ids(store, s, "data", data, 512);
        unsigned nh = list_ids(store, s, "hint", hint, 512);
        unsigned want = open_active ? nd - 1 : nd;
        CHECK(nd >= 1);
        if (nh < want)
            return 0;
        for (unsigned i = 0; i < want; i++)
            if (hint[i] != data[i])
                return 0;
    }
    return 1;
}

/* Every file but the active one is within max_file_size (whole pages)
 * unless it holds a single entry. */
static unsigned check_sizes(const char *store, unsigned shards, uint32_t klen, uint64_t max_file,
                            int open_active)
{
    unsigned ids[512], total = 0;
    for (unsigned s = 0; s < shards; s++) {
        unsigned n = list_ids(store, s, "data", ids, 512);
        CHECK(n >= 1);
        for (unsigned i = 0; i < n; i++) {
            char *p = t_file_path(store, s, ids[i], "data");
            struct dimg d;
            parse(p, klen, &d);
            if (!(open_active && i + 1 == n) && d.len > round_up_page(max_file)) {
                if (d.n != 1)
                    fprintf(stderr, "%s: %zu bytes, %zu entries, over max_file_size\n", p, d.len, d.n);
                CHECK(d.n == 1);
            }
            if (i + 1 < n)
                CHECK(d.n >= 1);
            dimg_free(&d);
            free(p);
        }
        total += n;
    }
    return total;
}

static void case_rotation(uint64_t seed)
{
    enum { N = 3000, SHARDS = 2 };
    const uint64_t max_file = 65536;
    char *dir = t_tmpdir("write-path");
    char *store = t_path(dir, "db");
    static unsigned char val[100000];
    static uint32_t lens[N + 1];
    uint64_t rng = seed;
    unsigned char k[9];
    armdb_stat st;
    armdb *db;
    unsigned files;
    int waited = 0;

    g_part = "rotation";
    db = t_open_store(store, 8, 0, SHARDS, 0, max_file, ARMDB_CREATE);
    for (uint32_t i = 0; i < N; i++) {
        key8(i, k);
        lens[i] = 100 + (uint32_t)(t_rand(&rng) % 1900);
        t_fill(seed * 3 + i, val, lens[i]);
        CHECK_OK(armdb_put(db, k, 8, val, lens[i]));
        if (i == N / 2) {
            /* One value larger than a whole file: a file of its own. */
            key8(N, k);
            lens[N] = sizeof(val);
            t_fill(seed * 3 + N, val, lens[N]);
            CHECK_OK(armdb_put(db, k, 8, val, lens[N]));
        }
    }
    CHECK_OK(armdb_sync(db));
    st = stats(db);
    CHECK(st.rotations > 0);
    CHECK(st.keys == N + 1);
    while (!hints_complete(store, SHARDS, 1)) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        CHECK(waited++ < 1000);
        nanosleep(&ts, NULL);
    }
    files = check_sizes(store, SHARDS, 8, max_file, 1);
    CHECK(files >= 2 * SHARDS + 4);
    CHECK(st.files == files);
    CHECK(st.rotations == files - SHARDS);
    for (uint32_t i = 0; i <= N; i++) {
        key8(i, k);
        t_fill(seed * 3 + i, val, lens[i]);
        expect_value(db, k, 8, val, lens[i]);
    }
    CHECK_OK(armdb_close(db));

    /* Closed: every file has its hint and keeps the size rule. */
    CHECK(hints_complete(store, SHARDS, 0));
    CHECK(check_sizes(store, SHARDS, 8, max_file, 0) == files);
    db = t_open_store(store, 0, 0, 0, 0, max_file, ARMDB_CREATE);
    st = stats(db);
    CHECK(st.keys == N + 1);
    CHECK(st.hints_loaded == files && st.files_scanned == 0);
    for (uint32_t i = 0; i <= N; i++) {
        key8(i, k);
        t_fill(seed * 3 + i, val, lens[i]);
        expect_value(db, k, 8, val, lens[i]);
    }
    CHECK_OK(armdb_close(db));
    free(store);
    t_rmtree(dir);
    free(dir);
}

int main(void)
{
    g_seed = t_env_u64("ARMDB_SEED", (uint64_t)time(NULL));
    atexit(report);
    case_format();
    case_page_rule(g_seed);
    case_barrier(g_seed);
    case_direct_backend();
    case_counters(g_seed);
    case_gsn(g_seed);
    case_fixed(g_seed);
    case_rotation(g_seed);
    g_passed = 1;
    return 0;
}
