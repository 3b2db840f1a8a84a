/*
 * verify.c - armdb_verify reports exactly the damage done to a store's
 * files, at the shard, file and offset where it was done, and nothing on
 * an intact store, even while other threads write and compact it.
 *
 *   clean     a store of several files with overwritten (dead) entries:
 *             no report, every entry counted (the entries a parser of the
 *             format finds in the files), every file and hint counted.
 *   plain     a byte flipped in a dead entry, one in a live entry, one in
 *             a hint, and a data file cut short: four reports, exactly
 *             those, with the entry lengths the format gives.
 *   active    a byte flipped in the part of a writer's active file that
 *             has left the write buffer: reported in that file; after a
 *             barrier every entry of the file is checked.
 *   sealed    an encrypted store of page-sized entries, one byte flipped
 *             in one page: exactly one page report, one entry fewer.
 *   live      verify, over and over, while a thread overwrites keys in a
 *             store that rotates and compacts: never a report.
 *   misuse    NULL arguments; a callback's non-zero answer stops it.
 *
 * Replay: ARMDB_SEED=<seed>.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define KLEN 16
#define MAXDMG 64

struct found {
    unsigned n;
    armdb_verify_damage d[MAXDMG];
    unsigned files_done;
};

static int collect(void *ctx, const armdb_verify_damage *d)
{
    struct found *f = ctx;
    if (d->what == ARMDB_VERIFY_FILE) {
        f->files_done++;
        return 0;
    }
    CHECK(f->n < MAXDMG);
    f->d[f->n++] = *d;
    return 0;
}

static int stop_at_first(void *ctx, const armdb_verify_damage *d)
{
    (void)ctx;
    return d->what == ARMDB_VERIFY_FILE ? 0 : 7;
}

static int cmp_damage(const void *a, const void *b)
{
    const armdb_verify_damage *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return (int)x->what - (int)y->what;
}

static void make_key(unsigned i, unsigned char *k)
{
    memset(k, 0, KLEN);
    snprintf((char *)k, KLEN, "k%014u", i);
}

/* ---- the format, read independently of the engine ---- */

struct ent {
    uint64_t off, size;
    uint32_t vlen;
    unsigned key;
    uint32_t ver;
};

/* The entries of the first len bytes of a plain data file, in order. */
static unsigned parse_entries(const uint8_t *p, size_t len, struct ent *out, unsigned max)
{
    unsigned n = 0;
    uint64_t pos = 0;
    while (pos < len) {
        uint64_t left = 4096 - pos % 4096;
        if (left < 16 || pos + 16 > len) {
            pos += left;
            continue;
        }
        static const uint8_t zero[16];
        if (!memcmp(p + pos, zero, 16)) {
            pos += left;
            continue;
        }
        uint32_t vlen = t_le32(p + pos + 4);
        uint64_t size = (16 + KLEN + (uint64_t)vlen + 7) & ~7ull;
        if (pos + size > len)
            break; /* runs past what was read */
        CHECK(n < max);
        struct ent *e = &out[n++];
        e->off = pos;
        e->size = size;
        e->vlen = vlen;
        e->key = (unsigned)strtoul((const char *)p + pos + 17, NULL, 10);
        e->ver = vlen >= 4 ? t_le32(p + pos + 16 + KLEN) : 0;
        pos += size;
    }
    return n;
}

static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t b;
    CHECK(pread(fd, &b, 1, (off_t)off) == 1);
    b ^= 0x40;
    CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
    CHECK(fsync(fd) == 0);
    close(fd);
}

static armdb *open_ro(const char *store, const unsigned char *key)
{
    armdb_options o;
    armdb_options_init(&o);
    o.flags = ARMDB_RDONLY;
    o.encryption_key = key;
    armdb *db = NULL;
    CHECK_OK(armdb_open(store, &o, &db));
    return db;
}

/* Data file ids of shard 0, sorted; their count. */
static unsigned data_ids(const char *store, unsigned *ids, unsigned max)
{
    char *dir = t_path(store, "000");
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *e;
    unsigned n = 0;
    while ((e = readdir(d))) {
        long id = t_file_id(e->d_name, "data");
        if (id > 0) {
            CHECK(n < max);
            ids[n++] = (unsigned)id;
        }
    }
    closedir(d);
    free(dir);
    qsort(ids, n, sizeof *ids, t_cmp_unsigned);
    return n;
}

/* A value of key i, version v: the version first, then vlen - 4 bytes. */
static size_t make_val(unsigned i, uint32_t v, unsigned char *out)
{
    size_t n = 40 + (size_t)(t_mix(i, v) % 600);
    t_fill(t_mix(i, v + 77), out, n);
    memcpy(out, &v, 4);
    return n;
}

#define NKEYS 600
#define MAXENT 4096

static void test_plain(const char *dir)
{
    char *store = t_path(dir, "plain");
    unsigned char k[KLEN], v[1024];
    armdb *db = t_open_store(store, KLEN, 0, 1, 0, 65536, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT);
    uint32_t ver[NKEYS] = {0};
    for (unsigned round = 0; round < 3; round++)
        for (unsigned i = 0; i < NKEYS; i++) {
            if (round > 0 && i % 3)
                continue;
            make_key(i, k);
            size_t n = make_val(i, ++ver[i], v);
            CHECK_OK(armdb_put(db, k, KLEN, v, n));
        }
    CHECK_OK(armdb_close(db));

    unsigned ids[64];
    unsigned nids = data_ids(store, ids, 64);
    CHECK(nids >= 4);
    static struct ent ents[64][MAXENT / 16];
    unsigned nent[64];
    uint64_t total = 0, ends[64];
    for (unsigned f = 0; f < nids; f++) {
        char name[32];
        snprintf(name, sizeof name, "000/%08u.data", ids[f]);
        char *path = t_path(store, name);
        size_t len;
        uint8_t *bytes = t_read_file(path, &len);
        nent[f] = parse_entries(bytes, len, ents[f], MAXENT / 16);
        total += nent[f];
        ends[f] = nent[f] ? ents[f][nent[f] - 1].off + ents[f][nent[f] - 1].size : 0;
        free(bytes);
        free(path);
    }

    /* clean */
    db = open_ro(store, NULL);
    armdb_verify_report r;
    struct found fd = {0};
    CHECK_OK(armdb_verify(db, collect, &fd, &r));
    CHECK(fd.n == 0);
    CHECK(r.entries == total);
    CHECK(r.files == nids);
    CHECK(fd.files_done == nids);
    CHECK(r.hints == nids);
    CHECK(r.damage == 0 && r.pages == 0);
    CHECK(r.bytes >= ends[0]);
    CHECK_OK(armdb_close(db));

    /* A dead entry: the first version of a key written again, in file 1,
     * not its last entry. A live one: the last version of a key, in the
     * last file, not its last entry. */
    const struct ent *dead = NULL, *live = NULL;
    for (unsigned j = 0; j + 1 < nent[0] && !dead; j++)
        if (ents[0][j].ver == 1 && ver[ents[0][j].key] > 1)
            dead = &ents[0][j];
    unsigned lf = nids - 1;
    for (unsigned j = 0; j + 1 < nent[lf] && !live; j++)
        if (ents[lf][j].ver == ver[ents[lf][j].key])
            live = &ents[lf][j];
    CHECK(dead && live);
    char name[32];
    snprintf(name, sizeof name, "000/%08u.data", ids[0]);
    char *p0 = t_path(store, name);
    flip_byte(p0, dead->off + 16 + KLEN + dead->vlen / 2);
    snprintf(name, sizeof name, "000/%08u.data", ids[lf]);
    char *pl = t_path(store, name);
    flip_byte(pl, live->off + 16 + KLEN + live->vlen - 1);
    /* the hint of file 2, and file 3 cut 100 bytes short of its data */
    snprintf(name, sizeof name, "000/%08u.hint", ids[1]);
    char *ph = t_path(store, name);
    size_t hlen;
    free(t_read_file(ph, &hlen));
    flip_byte(ph, hlen / 2);
    snprintf(name, sizeof name, "000/%08u.data", ids[2]);
    char *pc = t_path(store, name);
    CHECK(truncate(pc, (off_t)(ends[2] - 100)) == 0);

    db = open_ro(store, NULL);
    memset(&fd, 0, sizeof fd);
    CHECK_RC(armdb_verify(db, collect, &fd, &r), ARMDB_CORRUPT);
    const char *msg = armdb_errmsg();
    qsort(fd.d, fd.n, sizeof fd.d[0], cmp_damage);
    for (unsigned i = 0; fd.n != 4 && i < fd.n; i++)
        fprintf(stderr, "verify: plain: shard %u file %u what %u offset %llu length %llu\n", fd.d[i].shard,
                fd.d[i].file, fd.d[i].what, (unsigned long long)fd.d[i].offset,
                (unsigned long long)fd.d[i].length);
    CHECK(fd.n == 4);
    CHECK(strstr(msg, ": 4 damaged (entries 2, pages 0, hints 1, cut files 1)") != NULL);
    CHECK(r.damage == 4 && r.damaged_entries == 2 && r.damaged_hints == 1 && r.short_files == 1);
    CHECK(fd.d[0].file == ids[0] && fd.d[0].what == ARMDB_VERIFY_ENTRY && fd.d[0].offset == dead->off);
    CHECK(fd.d[0].length == dead->size && fd.d[0].rc == ARMDB_CORRUPT);
    CHECK(fd.d[1].file == ids[1] && fd.d[1].what == ARMDB_VERIFY_HINT && fd.d[1].offset == 0);
    CHECK(fd.d[2].file == ids[2] && fd.d[2].what == ARMDB_VERIFY_SHORT && fd.d[2].offset == ends[2] - 100);
    CHECK(fd.d[2].length >= 100);
    CHECK(fd.d[3].file == ids[lf] && fd.d[3].what == ARMDB_VERIFY_ENTRY && fd.d[3].offset == live->off);
    CHECK(fd.d[3].length == live->size);
    for (unsigned i = 0; i < 4; i++)
        CHECK(fd.d[i].shard == 0);
    /* Every entry but the two damaged and those cut off is counted. */
    unsigned cut = 0;
    for (unsigned j = 0; j < nent[2]; j++)
        cut += ents[2][j].off + ents[2][j].size > ends[2] - 100;
    CHECK(cut >= 1);
    CHECK(r.entries == total - 2 - cut);
    /* a non-zero answer stops it, with that value */
    CHECK_RC(armdb_verify(db, stop_at_first, NULL, &r), 7);
    CHECK(r.damage == 1);
    CHECK_OK(armdb_close(db));
    free(p0);
    free(pl);
    free(ph);
    free(pc);
    free(store);
}

static void test_active(const char *dir)
{
    char *store = t_path(dir, "active");
    unsigned char k[KLEN], v[1024];
    armdb *db = t_open_store(store, KLEN, 0, 1, 65536, 4u << 20, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT);
    for (unsigned i = 0; i < 600; i++) {
        make_key(i, k);
        size_t n = make_val(i, 1, v);
        CHECK_OK(armdb_put(db, k, KLEN, v, n));
    }
    unsigned ids[8];
    CHECK(data_ids(store, ids, 8) == 1);
    char name[32];
    snprintf(name, sizeof name, "000/%08u.data", ids[0]);
    char *path = t_path(store, name);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK(st.st_size >= 65536); /* full buffers went to the file */
    armdb_verify_report r;
    struct found fd = {0};
    CHECK_OK(armdb_verify(db, collect, &fd, &r));
    CHECK(fd.n == 0 && r.files == 1 && r.entries > 0 && r.entries < 600);
    CHECK(r.bytes % 4096 == 0 && r.bytes <= (uint64_t)st.st_size);
    uint64_t before = r.entries;
    size_t len;
    uint8_t *bytes = t_read_file(path, &len);
    static struct ent ents[MAXENT];
    unsigned n = parse_entries(bytes, 8192, ents, MAXENT);
    free(bytes);
    CHECK(n >= 3);
    flip_byte(path, ents[1].off + 16 + KLEN + 5);
    memset(&fd, 0, sizeof fd);
    CHECK_RC(armdb_verify(db, collect, &fd, &r), ARMDB_CORRUPT);
    CHECK(fd.n == 1);
    CHECK(fd.d[0].file == ids[0] && fd.d[0].what == ARMDB_VERIFY_ENTRY && fd.d[0].offset == ents[1].off);
    CHECK(fd.d[0].length == ents[1].size);
    CHECK(r.entries == before - 1);
    /* A barrier writes the partial last page: all of it is checked now. */
    CHECK_OK(armdb_sync(db));
    memset(&fd, 0, sizeof fd);
    CHECK_RC(armdb_verify(db, collect, &fd, &r), ARMDB_CORRUPT);
    CHECK(fd.n == 1 && fd.d[0].offset == ents[1].off);
    CHECK(r.entries == 600 - 1);
    CHECK_OK(armdb_close(db));
    free(path);
    free(store);
}

static const unsigned char key_a[32] = "0123456789abcdef0123456789abcdef";

static void test_sealed(const char *dir)
{
    char *store = t_path(dir, "sealed");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.shards = 1;
    o.max_file_size = 65536;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.flags = ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT;
    o.encryption_key = key_a;
    armdb *db = NULL;
    CHECK_OK(armdb_open(store, &o, &db));
    /* Entries of exactly one page each: 16 + 16 + 4064 bytes. */
    unsigned char k[KLEN], v[4064];
    for (unsigned i = 0; i < 40; i++) {
        make_key(i, k);
        t_fill(t_mix(i, 9), v, sizeof v);
        CHECK_OK(armdb_put(db, k, KLEN, v, sizeof v));
    }
    CHECK_OK(armdb_close(db));
    db = open_ro(store, key_a);
    armdb_verify_report r;
    struct found fd = {0};
    CHECK_OK(armdb_verify(db, collect, &fd, &r));
    CHECK(fd.n == 0 && r.entries == 40 && r.pages >= 40 && r.damage == 0);
    unsigned nfiles = (unsigned)r.files;
    CHECK(nfiles >= 2);
    CHECK_OK(armdb_close(db));

    unsigned ids[16];
    CHECK(data_ids(store, ids, 16) == nfiles);
    char name[32];
    snprintf(name, sizeof name, "000/%08u.data", ids[1]);
    char *path = t_path(store, name);
    flip_byte(path, 2 * 4096 + 1234);
    db = open_ro(store, key_a);
    memset(&fd, 0, sizeof fd);
    CHECK_RC(armdb_verify(db, collect, &fd, &r), ARMDB_CORRUPT);
    for (unsigned i = 0; fd.n != 1 && i < fd.n; i++)
        fprintf(stderr, "verify: sealed: shard %u file %u what %u offset %llu length %llu\n", fd.d[i].shard,
                fd.d[i].file, fd.d[i].what, (unsigned long long)fd.d[i].offset,
                (unsigned long long)fd.d[i].length);
    CHECK(fd.n == 1);
    CHECK(fd.d[0].shard == 0 && fd.d[0].file == ids[1] && fd.d[0].what == ARMDB_VERIFY_PAGE);
    CHECK(fd.d[0].offset == 2 * 4096 && fd.d[0].length == 4096);
    CHECK(r.damaged_pages == 1 && r.damage == 1 && r.entries == 39);
    CHECK_OK(armdb_close(db));
    free(path);
    free(store);
}

struct live {
    armdb *db;
    atomic_bool stop;
    uint64_t seed;
};

static void *overwriter(void *arg)
{
    struct live *l = arg;
    unsigned char k[KLEN], v[1024];
    uint64_t s = l->seed;
    uint32_t ver = 1;
    while (!atomic_load(&l->stop)) {
        unsigned i = (unsigned)(t_rand(&s) % 500);
        make_key(i, k);
        size_t n = make_val(i, ++ver, v);
        CHECK_OK(armdb_put(l->db, k, KLEN, v, n));
        if (ver % 997 == 0)
            CHECK_OK(armdb_compact(l->db));
    }
    return NULL;
}

static void test_live(const char *dir, uint64_t seed)
{
    char *store = t_path(dir, "live");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.shards = 2;
    o.max_file_size = 65536;
    o.write_buffer_size = 65536;
    o.sync_mode = ARMDB_SYNC_INTERVAL;
    o.sync_interval_ms = 2;
    o.flags = ARMDB_CREATE;
    t_key_options(&o);
    struct live l = {.seed = seed};
    CHECK_OK(armdb_open(store, &o, &l.db));
    pthread_t th;
    CHECK(pthread_create(&th, NULL, overwriter, &l) == 0);
    uint64_t entries = 0;
    for (int round = 0; round < 40; round++) {
        armdb_verify_report r;
        struct found fd = {0};
        int rc = armdb_verify(l.db, collect, &fd, &r);
        for (unsigned i = 0; i < fd.n; i++)
            fprintf(stderr, "verify: live round %d: shard %u file %u what %u offset %llu length %llu\n",
                    round, fd.d[i].shard, fd.d[i].file, fd.d[i].what, (unsigned long long)fd.d[i].offset,
                    (unsigned long long)fd.d[i].length);
        CHECK_RC(rc, 0);
        CHECK(fd.n == 0 && r.damage == 0);
        entries += r.entries;
        usleep(2000);
    }
    atomic_store(&l.stop, true);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(entries > 0);
    CHECK_OK(armdb_close(l.db));
    free(store);
}

static void test_misuse(const char *dir)
{
    char *store = t_path(dir, "misuse");
    armdb *db = t_open_store(store, KLEN, 0, 1, 0, 0, ARMDB_CREATE);
    armdb_verify_report r;
    CHECK_RC(armdb_verify(NULL, NULL, NULL, &r), ARMDB_INVAL);
    CHECK_RC(armdb_verify(db, NULL, NULL, NULL), ARMDB_INVAL);
    CHECK_OK(armdb_verify(db, NULL, NULL, &r));
    CHECK(r.files == 1 && r.entries == 0 && r.damage == 0);
    CHECK_OK(armdb_close(db));
    free(store);
}

int main(void)
{
    uint64_t seed = t_env_u64("ARMDB_SEED", 20261124);
    char *dir = t_tmpdir("verify");
    test_misuse(dir);
    if (!getenv("ARMDB_TEST_ENCRYPT")) {
        test_plain(dir);
        test_active(dir);
    }
    test_sealed(dir);
    test_live(dir, seed);
    t_rmtree(dir);
    free(dir);
    printf("verify: ok (seed %llu)\n", (unsigned long long)seed);
    return 0;
}
