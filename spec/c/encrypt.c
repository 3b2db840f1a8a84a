/*
 * encrypt.c - encrypted stores: the files reveal nothing of what was
 * written, any change to them is caught, and every path works on them.
 *
 *   keys      a wrong key fails with ARMDB_BADKEY having read no data file;
 *             no key for an encrypted store, a key for a plain one, and
 *             the AES cipher on a CPU without it are clear errors; the key
 *             is copied at open; no message carries key bytes.
 *   markers   marker strings written as keys and values through puts,
 *             batches, hints and compaction outputs are found in no file
 *             of the store (and are found in a plain store, so the search
 *             can fail).
 *   tamper    a flipped byte (data, tags), two pages swapped, two files
 *             swapped (in a shard, across shards), a hint moved to another
 *             file: every get is its right value or ARMDB_CORRUPT, never a
 *             wrong one, and the damage is reported.
 *   torn      a writer killed with unsynced pages, and garbage pages after
 *             them: the synced data opens, the tail is cut.
 *   paths     get_many, iterators (ordered, prefix, reverse), the block
 *             cache and compaction on encrypted stores.
 *   nonces    every nonce in every tags file and hint, across reopens,
 *             rotations and compactions, is distinct and under the meta
 *             file's floor.
 *
 * Replay: ARMDB_SEED=<seed> (printed on failure); ARMDB_TEST_SCALE=<percent>
 * scales the rekey's fault points and kill rounds.
 */
#include "test.h"
#include "fault.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#define KLEN 16
static uint64_t g_seed;
static uint64_t g_scale; /* ARMDB_TEST_SCALE: percent of the rekey fault points and kill rounds */
static const char *g_case = "setup";

static const unsigned char key_a[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char key_b[32] = "fedcba9876543210fedcba9876543210";

static void on_exit_report(void)
{
    if (g_case)
        fprintf(stderr, "encrypt: failed in '%s'; replay with ARMDB_SEED=%llu\n", g_case, (unsigned long long)g_seed);
}

static armdb *open_enc(const char *store, const unsigned char *key, uint32_t shards, uint32_t flags, uint64_t max_file)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.shards = shards;
    o.flags = flags;
    o.max_file_size = max_file;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.encryption_key = key;
    armdb *db = NULL;
    CHECK_OK(armdb_open(store, &o, &db));
    return db;
}

static int try_open(const char *store, const unsigned char *key, uint32_t flags, armdb **db)
{
    armdb_options o;
    armdb_options_init(&o);
    o.flags = flags;
    o.encryption_key = key;
    *db = NULL;
    return armdb_open(store, &o, db);
}

static void make_key(uint32_t i, unsigned char *k)
{
    memset(k, 0, KLEN);
    memcpy(k, "K~", 2);
    memcpy(k + 4, &i, 4);
}

/* Value of key i, version v: derived from both, n bytes. */
static size_t make_val(uint32_t i, uint32_t v, unsigned char *out, size_t max)
{
    size_t n = 8 + (size_t)(t_mix(i, v) % (max - 8));
    t_fill(t_mix(i, v + 1000), out, n);
    memcpy(out, &i, 4);
    memcpy(out + 4, &v, 4);
    return n;
}

/* Every file under dir, recursively: fn(path) for each. */
static void each_file(const char *dir, void (*fn)(const char *path, void *ctx), void *ctx)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = t_path(dir, e->d_name);
        struct stat st;
        CHECK(lstat(p, &st) == 0);
        if (S_ISDIR(st.st_mode))
            each_file(p, fn, ctx);
        else
            fn(p, ctx);
        free(p);
    }
    closedir(d);
}

/* ---- keys ---- */

static void test_keys(const char *dir)
{
    g_case = "keys";
    char *store = t_path(dir, "keys"), *plain = t_path(dir, "keys-plain");
    unsigned char key[32];
    memcpy(key, key_a, 32);
    armdb *db = open_enc(store, key, 2, ARMDB_CREATE, 0);
    /* The key is copied: the caller may wipe its buffer at once. */
    memset(key, 0, sizeof key);
    unsigned char k[KLEN], v[600], got[600];
    for (uint32_t i = 0; i < 2000; i++) {
        make_key(i, k);
        size_t n = make_val(i, 1, v, sizeof v);
        CHECK_OK(armdb_put(db, k, KLEN, v, n));
    }
    CHECK_OK(armdb_close(db));

    /* A wrong key: ARMDB_BADKEY, and no data file was read or opened. */
    armdb_fault_reset();
    CHECK_RC(try_open(store, key_b, 0, &db), ARMDB_BADKEY);
    CHECK(strstr(armdb_errmsg(), "encryption_key") != NULL);
    uint64_t bad_reads = armdb_fault_calls(FAULT_READ), bad_opens = armdb_fault_calls(FAULT_OPEN);
    CHECK_RC(try_open(store, key_b, ARMDB_RDONLY, &db), ARMDB_BADKEY);
    armdb_fault_reset();
    CHECK_OK(try_open(store, key_a, 0, &db));
    uint64_t good_reads = armdb_fault_calls(FAULT_READ), good_opens = armdb_fault_calls(FAULT_OPEN);
    /* Opening the store's files (2 shards: data, tags, hint each) reads
     * and opens far more than the meta file alone. */
    CHECK(bad_opens + 6 <= good_opens);
    CHECK(bad_reads + 4 <= good_reads);
    for (uint32_t i = 0; i < 2000; i++) {
        make_key(i, k);
        size_t n = make_val(i, 1, v, sizeof v), vl;
        CHECK_OK(armdb_get(db, k, KLEN, got, sizeof got, &vl));
        CHECK(vl == n && memcmp(got, v, n) == 0);
    }
    CHECK_OK(armdb_close(db));

    /* No key for an encrypted store; a key for a plain one. */
    CHECK_RC(try_open(store, NULL, 0, &db), ARMDB_BADKEY);
    CHECK(strstr(armdb_errmsg(), "encrypted") != NULL);
    armdb_close(open_enc(plain, NULL, 1, ARMDB_CREATE, 0));
    CHECK_RC(try_open(plain, key_a, 0, &db), ARMDB_MISMATCH);
    CHECK(strstr(armdb_errmsg(), "not encrypted") != NULL);
    /* Messages never carry key bytes. */
    CHECK(strstr(armdb_errmsg(), "0123456789abcdef") == NULL);
    CHECK_RC(try_open(store, key_b, 0, &db), ARMDB_BADKEY);
    CHECK(strstr(armdb_errmsg(), "fedcba9876543210") == NULL && strstr(armdb_errmsg(), "66656463") == NULL);

    /* AES-256-GCM: chosen at creation, recorded, refused where the CPU
     * lacks it (the test library can play such a CPU). */
    char *aes = t_path(dir, "keys-aes");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.shards = 1;
    o.flags = ARMDB_CREATE | ARMDB_CIPHER_AES;
    o.encryption_key = key_a;
    int rc = armdb_open(aes, &o, &db);
    if (rc == ARMDB_INVAL) {
        printf("  (this CPU has no AES-256-GCM: only the refusal is checked)\n");
        CHECK(strstr(armdb_errmsg(), "AES") != NULL);
    } else {
        CHECK_OK(rc);
        make_key(1, k);
        CHECK_OK(armdb_put(db, k, KLEN, "aes value", 9));
        CHECK_OK(armdb_close(db));
        CHECK_OK(try_open(aes, key_a, 0, &db)); /* the cipher comes from the meta file */
        size_t vl;
        CHECK_OK(armdb_get(db, k, KLEN, got, sizeof got, &vl));
        CHECK(vl == 9 && memcmp(got, "aes value", 9) == 0);
        CHECK_OK(armdb_close(db));
        CHECK_RC(try_open(aes, key_b, 0, &db), ARMDB_BADKEY);
        setenv("ARMDB_TEST_NO_AES", "1", 1);
        CHECK_RC(try_open(aes, key_a, 0, &db), ARMDB_MISMATCH);
        CHECK(strstr(armdb_errmsg(), "AES-256-GCM") != NULL && strstr(armdb_errmsg(), "CPU") != NULL);
        unsetenv("ARMDB_TEST_NO_AES");
    }
    /* Asking for AES of a store created with the default cipher. */
    o.flags = ARMDB_CIPHER_AES;
    o.shards = 0;
    CHECK_RC(armdb_open(store, &o, &db), ARMDB_MISMATCH);
    CHECK(strstr(armdb_errmsg(), "XChaCha20-Poly1305") != NULL);
    free(aes);
    free(store);
    free(plain);
}

/* ---- markers ---- */

static const char marker_k[] = "MRKKEY";        /* in every key */
static const char marker_v[] = "MARKER-VALUE-Q7"; /* in every value */

struct search {
    uint64_t files, found;
    const unsigned char *extra; /* also looked for (the key), or NULL */
};

static void search_file(const char *path, void *vctx)
{
    struct search *s = vctx;
    size_t len;
    uint8_t *buf = t_read_file(path, &len);
    s->files++;
    if (memmem(buf, len, marker_k, strlen(marker_k)) || memmem(buf, len, marker_v, strlen(marker_v)) ||
        (s->extra && memmem(buf, len, s->extra, 16))) {
        if (!strstr(path, "plain"))
            fprintf(stderr, "  marker found in %s\n", path);
        s->found++;
    }
    free(buf);
}

/* Write markers through every path: puts (buffered, flushed, synced),
 * a fixed-value store, batches, rotation and hints, compaction output. */
static void write_markers(const char *store, const unsigned char *key, uint32_t value_len)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.value_len = value_len;
    o.shards = 3;
    o.flags = ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT;
    o.max_file_size = 64 << 10;
    o.encryption_key = key;
    armdb *db;
    CHECK_OK(armdb_open(store, &o, &db));
    unsigned char k[KLEN], v[300];
    size_t vn = value_len ? value_len : sizeof v;
    for (size_t j = 0; j + strlen(marker_v) <= vn; j += strlen(marker_v))
        memcpy(v + j, marker_v, strlen(marker_v));
    for (uint32_t round = 0; round < 3; round++) {
        for (uint32_t i = 0; i < 800; i++) {
            memset(k, 0, KLEN);
            memcpy(k, marker_k, strlen(marker_k));
            memcpy(k + 8, &i, 4);
            CHECK_OK(armdb_put(db, k, KLEN, v, vn));
            if (i % 200 == 0)
                CHECK_OK(armdb_sync(db));
        }
        /* Batches: members in several shards. */
        for (uint32_t b = 0; b < 40; b++) {
            unsigned char bk[8][KLEN];
            armdb_op ops[8];
            for (int j = 0; j < 8; j++) {
                memset(bk[j], 0, KLEN);
                memcpy(bk[j], marker_k, strlen(marker_k));
                uint32_t id = 100000 + b * 8 + (uint32_t)j;
                memcpy(bk[j] + 8, &id, 4);
                ops[j] = (armdb_op){.type = ARMDB_OP_PUT, .key = bk[j], .klen = KLEN, .val = v, .vlen = vn};
            }
            CHECK_OK(armdb_batch(db, ops, 8));
        }
        /* Overwrites and deletes, so compaction has work to do. */
        for (uint32_t i = 0; i < 800; i += 3) {
            memset(k, 0, KLEN);
            memcpy(k, marker_k, strlen(marker_k));
            memcpy(k + 8, &i, 4);
            CHECK_OK(armdb_delete(db, k, KLEN));
        }
        CHECK_OK(armdb_compact(db));
        CHECK_OK(armdb_close(db));
        o.flags &= ~(uint32_t)ARMDB_CREATE;
        CHECK_OK(armdb_open(store, &o, &db));
    }
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.compactions == 0); /* (this handle's; the earlier ones compacted) */
    CHECK(st.hints_loaded > 0);
    CHECK_OK(armdb_close(db));
}

static void test_markers(const char *dir)
{
    g_case = "markers";
    uint64_t found_plain = 0;
    for (int fixed = 0; fixed < 2; fixed++) {
        char *store = t_path(dir, fixed ? "mark-fixed" : "mark");
        char *plain = t_path(dir, fixed ? "mark-fixed-plain" : "mark-plain");
        write_markers(store, key_a, fixed ? 64 : 0);
        write_markers(plain, NULL, fixed ? 64 : 0);
        struct search s = {.extra = key_a};
        each_file(store, search_file, &s);
        CHECK(s.files > 10);
        CHECK(s.found == 0);
        struct search p = {0};
        each_file(plain, search_file, &p);
        CHECK(p.found > 0); /* the search can fail */
        found_plain += p.found;
        free(store);
        free(plain);
    }
    printf("  markers: none in the encrypted stores, %llu plain files hold them\n", (unsigned long long)found_plain);
}

/* ---- tamper ---- */

#define TN 3000
/* A reference store: 2 shards, files of 256 KiB, every key once (so every
 * page of every data file but the last holds live entries). */
static void build_ref(const char *store)
{
    armdb *db = open_enc(store, key_a, 2, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT, 256 << 10);
    unsigned char k[KLEN], v[400];
    for (uint32_t i = 0; i < TN; i++) {
        make_key(i, k);
        size_t n = make_val(i, 7, v, sizeof v);
        CHECK_OK(armdb_put(db, k, KLEN, v, n));
    }
    CHECK_OK(armdb_close(db));
}

struct outcome {
    int open_rc;
    uint64_t ok, corrupt, corrupt_stat;
};

/* Open the (damaged) store and read every key: each is its value or
 * ARMDB_CORRUPT; anything else fails the test. */
static struct outcome read_all(const char *store, uint32_t flags)
{
    struct outcome r = {0};
    armdb *db;
    r.open_rc = try_open(store, key_a, flags | ARMDB_NO_AUTO_COMPACT, &db);
    if (r.open_rc != 0) {
        CHECK(r.open_rc == ARMDB_CORRUPT);
        return r;
    }
    unsigned char k[KLEN], v[400], got[400];
    for (uint32_t i = 0; i < TN; i++) {
        make_key(i, k);
        size_t n = make_val(i, 7, v, sizeof v), vl = 0;
        int rc = armdb_get(db, k, KLEN, got, sizeof got, &vl);
        if (rc == ARMDB_CORRUPT) {
            r.corrupt++;
            continue;
        }
        if (rc != 0)
            fprintf(stderr, "  key %u: %s (%s)\n", i, armdb_strerror(rc), armdb_errmsg());
        CHECK_OK(rc);
        CHECK(vl == n && memcmp(got, v, n) == 0);
        r.ok++;
    }
    /* The iterator agrees: no value it yields is wrong. */
    armdb_iter *it;
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    const void *ik, *iv;
    size_t ikl, ivl;
    int rc;
    uint64_t seen = 0, icorrupt = 0;
    while ((rc = armdb_iter_next(it, &ik, &ikl, &iv, &ivl)) != ARMDB_NOTFOUND) {
        if (rc == ARMDB_CORRUPT) {
            icorrupt++;
            continue;
        }
        CHECK_OK(rc);
        uint32_t i;
        memcpy(&i, (const unsigned char *)ik + 4, 4);
        size_t n = make_val(i, 7, v, sizeof v);
        CHECK(ivl == n && memcmp(iv, v, n) == 0);
        seen++;
    }
    armdb_iter_close(it);
    CHECK(seen == r.ok && icorrupt == r.corrupt);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    r.corrupt_stat = st.corrupt_entries;
    CHECK_OK(armdb_close(db));
    return r;
}

static void swap_bytes(const char *a, uint64_t aoff, const char *b, uint64_t boff, size_t n)
{
    unsigned char *x = malloc(n), *y = malloc(n);
    int fa = open(a, O_RDWR), fb = open(b, O_RDWR);
    CHECK(x && y && fa >= 0 && fb >= 0);
    CHECK(pread(fa, x, n, (off_t)aoff) == (ssize_t)n && pread(fb, y, n, (off_t)boff) == (ssize_t)n);
    CHECK(pwrite(fa, y, n, (off_t)aoff) == (ssize_t)n && pwrite(fb, x, n, (off_t)boff) == (ssize_t)n);
    close(fa);
    close(fb);
    free(x);
    free(y);
}

static void flip(const char *path, uint64_t off, unsigned char mask)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    CHECK(fd >= 0 && pread(fd, &c, 1, (off_t)off) == 1);
    c ^= mask;
    CHECK(pwrite(fd, &c, 1, (off_t)off) == 1);
    close(fd);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    CHECK(stat(path, &st) == 0);
    return (uint64_t)st.st_size;
}

static void rename_file(const char *a, const char *b)
{
    CHECK(rename(a, b) == 0);
}

/* Swap the names of two files (a -> b, b -> a). */
static void swap_names(const char *a, const char *b)
{
    char *t = t_path(a, "..swap");
    t[strlen(t) - 7] = '~';
    rename_file(a, t);
    rename_file(b, a);
    rename_file(t, b);
    free(t);
}

static void test_tamper(const char *dir)
{
    char *ref = t_path(dir, "tamper-ref"), *work = t_path(dir, "tamper");
    build_ref(ref);
    char *d1 = t_file_path(ref, 0, 1, "data");
    uint64_t pages = file_size(d1) / 4096;
    CHECK(pages >= 8);
    free(d1);
    uint64_t rng = g_seed;
    /* Each case: copy, damage, open as a writer and read-only (a writer
     * may rewrite hints: both orders are exercised by the copy). */
    for (int c = 0; c < 10; c++) {
        for (int mode = 0; mode < 2; mode++) {
            t_rmtree(work);
            t_copy_tree(ref, work);
            char *data1 = t_file_path(work, 0, 1, "data"), *data2 = t_file_path(work, 0, 2, "data");
            char *tags1 = t_file_path(work, 0, 1, "tags"), *tags2 = t_file_path(work, 0, 2, "tags");
            char *hint1 = t_file_path(work, 0, 1, "hint"), *hint2 = t_file_path(work, 0, 2, "hint");
            char *odata1 = t_file_path(work, 1, 1, "data"), *otags1 = t_file_path(work, 1, 1, "tags");
            char *ohint1 = t_file_path(work, 1, 1, "hint");
            uint64_t p = t_rand(&rng) % (pages - 1), q = (p + 1 + t_rand(&rng) % (pages - 2)) % (pages - 1);
            bool want_corrupt = true, open_may_fail = false;
            switch (c) {
            case 0:
                g_case = "tamper: one bit of a data page";
                flip(data1, p * 4096 + t_rand(&rng) % 4096, (unsigned char)(1u << (t_rand(&rng) % 8)));
                break;
            case 1:
                g_case = "tamper: one byte of a tag";
                flip(tags1, 32 + p * 24 + 8 + t_rand(&rng) % 16, 0x5a);
                break;
            case 2:
                g_case = "tamper: one byte of a nonce";
                flip(tags1, 32 + p * 24 + t_rand(&rng) % 8, 0x01);
                break;
            case 3:
                g_case = "tamper: two pages swapped, tags too";
                swap_bytes(data1, p * 4096, data1, q * 4096, 4096);
                swap_bytes(tags1, 32 + p * 24, tags1, 32 + q * 24, 24);
                break;
            case 4:
                g_case = "tamper: two data files swapped with their tags and hints";
                swap_names(data1, data2);
                swap_names(tags1, tags2);
                swap_names(hint1, hint2);
                open_may_fail = true;
                break;
            case 5:
                g_case = "tamper: a file swapped across shards with its tags and hint";
                swap_names(data1, odata1);
                swap_names(tags1, otags1);
                swap_names(hint1, ohint1);
                open_may_fail = true;
                break;
            case 6:
                g_case = "tamper: a hint moved to another file";
                /* The hint fails to open: the data file is scanned. */
                t_copy_file(hint2, hint1);
                want_corrupt = false;
                break;
            case 7:
                g_case = "tamper: a page of a hint";
                flip(hint1, t_rand(&rng) % file_size(hint1), 0x10);
                want_corrupt = false;
                break;
            case 9:
                g_case = "tamper: one byte of a tags file's header";
                /* The slots hold, so every value reads; the damage is
                 * reported all the same. */
                flip(tags1, t_rand(&rng) % 32, 0x20);
                want_corrupt = false;
                break;
            case 8:
                g_case = "tamper: the meta file";
                {
                    char *meta = t_path(work, "ARMDB");
                    flip(meta, t_rand(&rng) % file_size(meta), 0x04);
                    free(meta);
                }
                open_may_fail = true;
                break;
            }
            struct outcome r = read_all(work, mode ? ARMDB_RDONLY : 0);
            if (c == 8)
                CHECK(r.open_rc == ARMDB_CORRUPT);
            else if (!open_may_fail)
                CHECK_OK(r.open_rc);
            if (c == 9)
                CHECK(r.corrupt_stat > 0);
            if (r.open_rc == 0) {
                CHECK(r.ok + r.corrupt == TN);
                if (want_corrupt)
                    CHECK(r.corrupt > 0);
                else
                    CHECK(r.corrupt == 0 && r.ok == TN);
            }
            if (mode == 1)
                printf("  %-62s %s, %4llu read, %4llu corrupt\n", g_case,
                       r.open_rc ? "open refused" : "opened", (unsigned long long)r.ok,
                       (unsigned long long)r.corrupt);
            free(data1);
            free(data2);
            free(tags1);
            free(tags2);
            free(hint1);
            free(hint2);
            free(odata1);
            free(otags1);
            free(ohint1);
        }
    }
    /* Many single flips anywhere in data and tags files: never a wrong
     * value (read_all checks each), and a flip in a page of live entries
     * is always seen. */
    g_case = "tamper: random flips";
    for (int round = 0; round < 24; round++) {
        t_rmtree(work);
        t_copy_tree(ref, work);
        char *data = t_file_path(work, round % 2, 1 + (uint32_t)(t_rand(&rng) % 2), "data");
        if (file_size(data) < 2 * 4096) {
            free(data);
            data = t_file_path(work, round % 2, 1, "data");
        }
        /* (The last page may hold only padding: not it.) */
        flip(data, t_rand(&rng) % (file_size(data) - 4096), (unsigned char)(1u << (t_rand(&rng) % 8)));
        struct outcome r = read_all(work, round % 4 < 2 ? 0 : ARMDB_RDONLY);
        CHECK_OK(r.open_rc);
        CHECK(r.corrupt > 0 && r.ok + r.corrupt == TN);
        free(data);
    }
    t_rmtree(work);
    free(ref);
    free(work);
}

/* ---- torn ---- */

static void test_torn(const char *dir)
{
    g_case = "torn";
    char *store = t_path(dir, "torn");
    unsigned char k[KLEN], v[400], got[400];
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        armdb *db = open_enc(store, key_a, 1, ARMDB_CREATE, 0);
        for (uint32_t i = 0; i < 1000; i++) {
            make_key(i, k);
            size_t n = make_val(i, 1, v, sizeof v);
            if (armdb_put(db, k, KLEN, v, n))
                _exit(2);
        }
        if (armdb_sync(db))
            _exit(3);
        /* Unsynced: some of these reach the file as whole buffer pages. */
        for (uint32_t i = 1000; i < 6000; i++) {
            make_key(i, k);
            size_t n = make_val(i, 1, v, sizeof v);
            if (armdb_put(db, k, KLEN, v, n))
                _exit(4);
        }
        _exit(0); /* no close: a crash */
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* A torn write past all of it: garbage pages, and a partial one. */
    char *data = t_file_path(store, 0, 1, "data");
    int fd = open(data, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    unsigned char junk[4096 * 2 + 1000];
    t_fill(g_seed, junk, sizeof junk);
    CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    uint64_t before = file_size(data);
    armdb *db = open_enc(store, key_a, 1, 0, 0);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.torn_bytes >= sizeof junk && st.corrupt_entries == 0);
    /* Cut on a page: what a torn entry left in the last intact page stays. */
    CHECK(file_size(data) % 4096 == 0 && file_size(data) <= before - sizeof junk &&
          file_size(data) + st.torn_bytes >= before);
    uint32_t later = 0;
    for (uint32_t i = 0; i < 6000; i++) {
        make_key(i, k);
        size_t n = make_val(i, 1, v, sizeof v), vl;
        int rc = armdb_get(db, k, KLEN, got, sizeof got, &vl);
        if (i < 1000)
            CHECK_OK(rc);
        if (rc == ARMDB_NOTFOUND)
            continue;
        CHECK_OK(rc);
        CHECK(vl == n && memcmp(got, v, n) == 0);
        later += i >= 1000;
    }
    /* Writes go on after the cut, and all of it opens again. */
    make_key(999999, k);
    CHECK_OK(armdb_put(db, k, KLEN, "after", 5));
    CHECK_OK(armdb_close(db));
    db = open_enc(store, key_a, 1, 0, 0);
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.torn_bytes == 0 && st.corrupt_entries == 0 && st.keys == 1000 + later + 1);
    CHECK_OK(armdb_close(db));
    printf("  torn: synced keys kept, %u unsynced survived, the garbage cut\n", later);
    free(data);
    free(store);
}

/* ---- paths ---- */

static void test_paths(const char *dir)
{
    g_case = "paths";
    char *store = t_path(dir, "paths");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.shards = 4;
    o.flags = ARMDB_CREATE | ARMDB_ORDERED | ARMDB_NO_AUTO_COMPACT;
    o.max_file_size = 128 << 10;
    o.cache_size = 256 << 10;
    o.encryption_key = key_b;
    armdb *db;
    CHECK_OK(armdb_open(store, &o, &db));
    enum { N = 4000 };
    unsigned char k[KLEN], v[400], got[400];
    for (uint32_t ver = 1; ver <= 2; ver++)
        for (uint32_t i = 0; i < N; i += ver) {
            make_key(i, k);
            k[2] = (unsigned char)(i % 4); /* prefixes */
            size_t n = make_val(i, ver, v, sizeof v);
            CHECK_OK(armdb_put(db, k, KLEN, v, n));
        }
    for (uint32_t i = 0; i < N; i += 5) {
        make_key(i, k);
        k[2] = (unsigned char)(i % 4);
        CHECK_OK(armdb_delete(db, k, KLEN));
    }
    CHECK_OK(armdb_compact(db));
    CHECK_OK(armdb_close(db));
    o.flags &= ~(uint32_t)ARMDB_CREATE;
    CHECK_OK(armdb_open(store, &o, &db));
    /* Gets twice: from the device, then from the block cache. */
    armdb_stat st0, st1;
    for (int pass = 0; pass < 2; pass++) {
        CHECK_OK(armdb_stats(db, &st0));
        for (uint32_t i = 0; i < 300; i++) {
            make_key(i, k);
            k[2] = (unsigned char)(i % 4);
            size_t vl;
            int rc = armdb_get(db, k, KLEN, got, sizeof got, &vl);
            if (i % 5 == 0) {
                CHECK_RC(rc, ARMDB_NOTFOUND);
                continue;
            }
            CHECK_OK(rc);
            size_t n = make_val(i, i % 2 ? 1 : 2, v, sizeof v);
            CHECK(vl == n && memcmp(got, v, n) == 0);
        }
        CHECK_OK(armdb_stats(db, &st1));
        if (pass == 0)
            CHECK(st1.cache_misses > st0.cache_misses);
        else
            CHECK(st1.cache_hits > st0.cache_hits && st1.cache_misses == st0.cache_misses);
    }
    /* get_many over keys in every state. */
    enum { M = 500 };
    unsigned char *keys = malloc(M * KLEN), *out = malloc(M * 400);
    size_t offs[M], vlens[M];
    int rcs[M];
    CHECK(keys && out);
    for (uint32_t j = 0; j < M; j++) {
        uint32_t i = (j * 7919u) % N;
        make_key(i, keys + j * KLEN);
        keys[j * KLEN + 2] = (unsigned char)(i % 4);
    }
    CHECK_OK(armdb_get_many(db, keys, KLEN, M, out, M * 400, offs, vlens, rcs));
    for (uint32_t j = 0; j < M; j++) {
        uint32_t i = (j * 7919u) % N;
        if (i % 5 == 0) {
            CHECK_RC(rcs[j], ARMDB_NOTFOUND);
            continue;
        }
        CHECK_OK(rcs[j]);
        size_t n = make_val(i, i % 2 ? 1 : 2, v, sizeof v);
        CHECK(vlens[j] == n && memcmp(out + offs[j], v, n) == 0);
    }
    free(keys);
    free(out);
    /* Ordered scans: a prefix, in both directions. */
    for (int rev = 0; rev < 2; rev++) {
        unsigned char pre[3] = {'K', '~', 2};
        armdb_iter *it;
        CHECK_OK(armdb_iter_open(db, pre, 3, NULL, 0, ARMDB_ITER_PREFIX | (rev ? ARMDB_ITER_REVERSE : 0), &it));
        const void *ik, *iv;
        size_t ikl, ivl;
        uint32_t count = 0;
        unsigned char last[KLEN];
        int rc;
        while ((rc = armdb_iter_next(it, &ik, &ikl, &iv, &ivl)) == 0) {
            uint32_t i;
            memcpy(&i, (const unsigned char *)ik + 4, 4);
            CHECK(i % 4 == 2 && i % 5 != 0);
            size_t n = make_val(i, i % 2 ? 1 : 2, v, sizeof v);
            CHECK(ivl == n && memcmp(iv, v, n) == 0);
            if (count)
                CHECK(rev ? memcmp(ik, last, KLEN) < 0 : memcmp(ik, last, KLEN) > 0);
            memcpy(last, ik, KLEN);
            count++;
        }
        CHECK_RC(rc, ARMDB_NOTFOUND);
        CHECK(count == N / 4 - N / 20);
        armdb_iter_close(it);
    }
    CHECK_OK(armdb_close(db));

    /* Values larger than max_file_size: each fills a file of its own. */
    o.max_file_size = 64 << 10;
    o.flags = ARMDB_CREATE;
    char *big = t_path(dir, "paths-big");
    CHECK_OK(armdb_open(big, &o, &db));
    enum { BIG = 300 << 10 };
    unsigned char *bv = malloc(BIG), *bg = malloc(BIG);
    CHECK(bv && bg);
    for (uint32_t i = 0; i < 6; i++) {
        make_key(i, k);
        t_fill(t_mix(i, 99), bv, BIG);
        CHECK_OK(armdb_put(db, k, KLEN, bv, BIG - i));
    }
    CHECK_OK(armdb_close(db));
    CHECK_OK(armdb_open(big, &o, &db));
    for (uint32_t i = 0; i < 6; i++) {
        make_key(i, k);
        t_fill(t_mix(i, 99), bv, BIG);
        size_t vl;
        CHECK_OK(armdb_get(db, k, KLEN, bg, BIG, &vl));
        CHECK(vl == BIG - i && memcmp(bg, bv, vl) == 0);
    }
    CHECK_OK(armdb_close(db));
    free(bv);
    free(bg);
    free(big);
    free(store);
}

/* ---- nonces ---- */

struct nonces {
    uint64_t *v;
    size_t n, cap;
};

static void add_nonce(struct nonces *ns, uint64_t x)
{
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? ns->cap * 2 : 4096;
        ns->v = realloc(ns->v, ns->cap * sizeof *ns->v);
        CHECK(ns->v != NULL);
    }
    ns->v[ns->n++] = x;
}

static void collect_nonces(const char *path, void *vctx)
{
    struct nonces *ns = vctx;
    size_t len;
    uint8_t *buf = t_read_file(path, &len);
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".tags")) {
        CHECK(len >= 32 && (len - 32) % 24 == 0);
        for (size_t off = 32; off < len; off += 24)
            add_nonce(ns, t_le64(buf + off));
    } else if (n > 5 && !strcmp(path + n - 5, ".hint")) {
        CHECK(len % (4096 + 24) == 0);
        size_t pages = len / (4096 + 24);
        for (size_t i = 0; i < pages; i++)
            add_nonce(ns, t_le64(buf + pages * 4096 + i * 24));
    }
    free(buf);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_nonces(const char *dir)
{
    g_case = "nonces";
    char *store = t_path(dir, "nonces");
    unsigned char k[KLEN], v[400];
    uint64_t floor_prev = 0;
    for (uint32_t session = 0; session < 5; session++) {
        armdb *db = open_enc(store, key_a, 2, ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT, 64 << 10);
        for (uint32_t i = 0; i < 1500; i++) {
            make_key(i % 700, k);
            size_t n = make_val(i, session, v, sizeof v);
            CHECK_OK(armdb_put(db, k, KLEN, v, n));
            if (i % 97 == 0)
                CHECK_OK(armdb_sync(db)); /* barriers pad pages */
        }
        if (session % 2)
            CHECK_OK(armdb_compact(db));
        if (session == 3) {
            /* A crash: unsynced pages, no close. */
            fflush(NULL);
            pid_t pid = fork();
            if (pid == 0) {
                for (uint32_t i = 0; i < 3000; i++) {
                    make_key(i, k);
                    (void)armdb_put(db, k, KLEN, v, 300);
                }
                _exit(0);
            }
            int status;
            CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
        }
        CHECK_OK(armdb_close(db));
        char *meta = t_path(store, "ARMDB");
        size_t len;
        uint8_t *m = t_read_file(meta, &len);
        CHECK(len == 128);
        uint64_t floor = t_le64(m + 80);
        CHECK(floor > floor_prev); /* every writer reserves anew */
        floor_prev = floor;
        free(m);
        free(meta);
    }
    struct nonces ns = {0};
    each_file(store, collect_nonces, &ns);
    CHECK(ns.n > 100);
    qsort(ns.v, ns.n, sizeof *ns.v, cmp_u64);
    for (size_t i = 1; i < ns.n; i++)
        CHECK(ns.v[i] != ns.v[i - 1]);
    CHECK(ns.v[ns.n - 1] < floor_prev);
    printf("  nonces: %zu pages, all distinct, all under the floor\n", ns.n);
    free(ns.v);
    free(store);
}

/* ---- rekey ---- */

#define RN 3000
struct live {
    armdb *db;
    atomic_int stop;
    uint32_t ver[RN]; /* version each key has (written by the writer) */
    atomic_uint_fast64_t writes, reads;
};

static void *rekey_writer(void *arg)
{
    struct live *l = arg;
    unsigned char k[KLEN], v[400];
    uint64_t rng = g_seed ^ 77;
    while (!atomic_load(&l->stop)) {
        uint32_t i = (uint32_t)(t_rand(&rng) % RN);
        make_key(i, k);
        size_t n = make_val(i, l->ver[i] + 1, v, sizeof v);
        CHECK_OK(armdb_put(l->db, k, KLEN, v, n));
        l->ver[i]++;
        if ((atomic_fetch_add(&l->writes, 1) + 1) % 16 == 0)
            usleep(50); /* a steady load, not a flood of files */
    }
    return NULL;
}

static void *rekey_reader(void *arg)
{
    struct live *l = arg;
    unsigned char k[KLEN], got[400];
    uint64_t rng = g_seed ^ 78;
    while (!atomic_load(&l->stop)) {
        uint32_t i = (uint32_t)(t_rand(&rng) % RN);
        make_key(i, k);
        size_t vl;
        int rc = armdb_get(l->db, k, KLEN, got, sizeof got, &vl);
        if (rc == ARMDB_NOTFOUND)
            continue;
        CHECK_OK(rc);
        uint32_t id, ver;
        memcpy(&id, got, 4);
        memcpy(&ver, got + 4, 4);
        unsigned char want[400];
        CHECK(id == i && vl == make_val(i, ver, want, sizeof want) && memcmp(got, want, vl) == 0);
        atomic_fetch_add(&l->reads, 1);
    }
    return NULL;
}

/* Every key holds exactly the version ver[] says (0: absent). */
static void check_versions(armdb *db, const uint32_t *ver)
{
    unsigned char k[KLEN], v[400], got[400];
    for (uint32_t i = 0; i < RN; i++) {
        make_key(i, k);
        size_t vl;
        int rc = armdb_get(db, k, KLEN, got, sizeof got, &vl);
        if (!ver[i]) {
            CHECK_RC(rc, ARMDB_NOTFOUND);
            continue;
        }
        CHECK_OK(rc);
        size_t n = make_val(i, ver[i], v, sizeof v);
        CHECK(vl == n && memcmp(got, v, n) == 0);
    }
}

struct salts {
    unsigned char meta[16];
    uint64_t files, other;
};

static void tags_salt(const char *path, void *vctx)
{
    struct salts *s = vctx;
    size_t n = strlen(path);
    if (n < 5 || strcmp(path + n - 5, ".tags") != 0)
        return;
    size_t len;
    uint8_t *buf = t_read_file(path, &len);
    CHECK(len >= 32);
    s->files++;
    s->other += memcmp(buf + 8, s->meta, 16) != 0;
    free(buf);
}

/* Every .tags file names the salt the meta file names. */
static uint64_t files_of_other_keys(const char *store)
{
    struct salts s = {{0}, 0, 0};
    char *meta = t_path(store, "ARMDB");
    size_t len;
    uint8_t *m = t_read_file(meta, &len);
    CHECK(len == 128);
    memcpy(s.meta, m + 32, 16);
    free(m);
    free(meta);
    each_file(store, tags_salt, &s);
    CHECK(s.files > 0);
    return s.other;
}

/* Rekey a copy of store from cur to other with the nth call of kind op
 * failing: the copy then opens with exactly one key, whole. 1 if that is
 * the new key. */
static int fault_round(const char *store, const char *work, const unsigned char *cur, const unsigned char *other,
                       int op, uint64_t nth, const uint32_t *ver0)
{
    static uint32_t ver[RN];
    memcpy(ver, ver0, sizeof ver);
    t_rmtree(work);
    t_copy_tree(store, work);
    armdb *db = open_enc(work, cur, 3, ARMDB_NO_AUTO_COMPACT, 128 << 10);
    armdb_fault_arm(op, nth, EIO, 0);
    int rc = armdb_rekey(db, other);
    armdb_fault_reset();
    /* The handle still reads everything, whatever happened, and writes
     * unless it turned read-only: nothing it takes may be lost. */
    check_versions(db, ver);
    unsigned char k[KLEN], v[400];
    for (uint32_t i = 0; i < RN; i += 7) {
        make_key(i, k);
        size_t n = make_val(i, ver[i] + 1, v, sizeof v);
        int wrc = armdb_put(db, k, KLEN, v, n);
        if (wrc == ARMDB_READONLY)
            break;
        CHECK_OK(wrc);
        ver[i]++;
    }
    (void)armdb_close(db);
    /* Probed read-only first: exactly one key opens it. */
    armdb *a, *b;
    int ra = try_open(work, cur, ARMDB_RDONLY, &a);
    int rb = try_open(work, other, ARMDB_RDONLY, &b);
    if ((ra == 0) == (rb == 0) || (ra != ARMDB_BADKEY && rb != ARMDB_BADKEY))
        fprintf(stderr, "  nth %llu, rekey %d: old key %d, new key %d (%s)\n", (unsigned long long)nth, rc, ra, rb,
                armdb_errmsg());
    CHECK((ra == 0) != (rb == 0));
    CHECK(ra == ARMDB_BADKEY || rb == ARMDB_BADKEY);
    if (rc == 0)
        CHECK(rb == 0);
    armdb *ok = ra == 0 ? a : b;
    check_versions(ok, ver);
    CHECK_OK(armdb_close(ok));
    /* A writer's open removes what the cut-short rekey left. */
    CHECK_OK(try_open(work, ra == 0 ? cur : other, 0, &ok));
    check_versions(ok, ver);
    CHECK_OK(armdb_close(ok));
    CHECK(files_of_other_keys(work) == 0);
    return rb == 0;
}

static void test_rekey(const char *dir)
{
    g_case = "rekey: live";
    char *store = t_path(dir, "rekey");
    static struct live l;
    memset(&l, 0, sizeof l);
    l.db = open_enc(store, key_a, 3, ARMDB_CREATE, 128 << 10);
    for (int i = 0; i < 20000; i++) {
        unsigned char k[KLEN], v[400];
        uint32_t id = (uint32_t)(i % RN);
        make_key(id, k);
        size_t n = make_val(id, ++l.ver[id], v, sizeof v);
        CHECK_OK(armdb_put(l.db, k, KLEN, v, n));
    }
    pthread_t wt, rt;
    CHECK(pthread_create(&wt, NULL, rekey_writer, &l) == 0);
    CHECK(pthread_create(&rt, NULL, rekey_reader, &l) == 0);
    /* The writer is under way before the rekey, and goes on after it (how
     * many of its writes fall during the rekey is the scheduler's call:
     * on a busy machine a short rekey may see none, so that is only
     * printed below). Waits are bounded by time, never a fixed sleep. */
    for (int i = 0; i < 10000 && atomic_load(&l.writes) == 0; i++)
        usleep(1000);
    uint64_t w0 = atomic_load(&l.writes);
    CHECK(w0 > 0);
    CHECK_OK(armdb_rekey(l.db, key_b));
    uint64_t w1 = atomic_load(&l.writes);
    for (int i = 0; i < 10000 && atomic_load(&l.writes) <= w1; i++)
        usleep(1000);
    atomic_store(&l.stop, 1);
    pthread_join(wt, NULL);
    pthread_join(rt, NULL);
    CHECK(atomic_load(&l.writes) > w1 && w1 >= w0);
    check_versions(l.db, l.ver);
    CHECK_OK(armdb_close(l.db));
    armdb *db;
    CHECK_RC(try_open(store, key_a, 0, &db), ARMDB_BADKEY);
    CHECK(files_of_other_keys(store) == 0);
    CHECK_OK(try_open(store, key_b, 0, &db));
    check_versions(db, l.ver);
    /* And back, on the reopened store. */
    CHECK_OK(armdb_rekey(db, key_a));
    check_versions(db, l.ver);
    CHECK_OK(armdb_close(db));
    CHECK_OK(try_open(store, key_a, ARMDB_RDONLY, &db));
    check_versions(db, l.ver);
    CHECK_OK(armdb_close(db));
    CHECK(files_of_other_keys(store) == 0);
    printf("  rekey: %llu writes during the rekey, %llu reads beside\n", (unsigned long long)(w1 - w0),
           (unsigned long long)atomic_load(&l.reads));

    if (getenv("ARMDB_ENCRYPT_LIVE_ONLY")) {
        free(store);
        return;
    }

    /* Failures at each rename, fsync and fdatasync of a rekey: the store
     * then opens with exactly one of the keys, with everything in it. */
    g_case = "rekey: faults";
    static const int ops[] = {FAULT_RENAME, FAULT_FSYNC, FAULT_DATASYNC, FAULT_WRITE};
    static const char *const names[] = {"rename", "fsync", "fdatasync", "write"};
    char *work = t_path(dir, "rekey-fault");
    const unsigned char *cur = key_a, *other = key_b;
    for (int o = 0; o < 4; o++) {
        /* How many calls of the kind a clean rekey makes. */
        t_rmtree(work);
        t_copy_tree(store, work);
        db = open_enc(work, cur, 3, ARMDB_NO_AUTO_COMPACT, 128 << 10);
        armdb_fault_arm(ops[o], 0, 0, 0);
        CHECK_OK(armdb_rekey(db, other));
        uint64_t calls = armdb_fault_calls(ops[o]);
        CHECK_OK(armdb_close(db));
        uint64_t points = 24 * g_scale / 100 < 6 ? 6 : 24 * g_scale / 100;
        uint64_t step = calls > points ? calls / points : 1, new_key = 0, rounds = 0;
        /* Every step-th point, and the last four (the commit and after). */
        for (uint64_t nth = 1; nth + 4 <= calls; nth += step, rounds++)
            new_key += (uint64_t)fault_round(store, work, cur, other, ops[o], nth, l.ver);
        for (uint64_t nth = calls > 4 ? calls - 3 : 1; nth <= calls; nth++, rounds++)
            new_key += (uint64_t)fault_round(store, work, cur, other, ops[o], nth, l.ver);
        uint64_t old_key = rounds - new_key;
        printf("  rekey: a failed %-9s at each of %3llu points: %llu open with the old key, %llu with the new\n",
               names[o], (unsigned long long)calls, (unsigned long long)old_key, (unsigned long long)new_key);
    }
    t_rmtree(work);
    free(work);
    free(store);
}

/* ---- rekey under kill -9 ---- */

struct shared {
    uint32_t acked[RN]; /* versions made durable (armdb_sync returned) */
    uint32_t ver[RN];   /* versions written */
    atomic_int phase;   /* 1: rekey started, 2: rekey returned 0 */
    int64_t rekey_us;
};

static struct shared *g_sh;

static void *kill_writer(void *arg)
{
    armdb *db = arg;
    unsigned char k[KLEN], v[400];
    uint64_t rng = g_seed ^ (uint64_t)getpid();
    for (;;) {
        uint32_t ids[32];
        for (int j = 0; j < 32; j++) {
            uint32_t i = (uint32_t)(t_rand(&rng) % RN);
            make_key(i, k);
            size_t n = make_val(i, g_sh->ver[i] + 1, v, sizeof v);
            if (armdb_put(db, k, KLEN, v, n) != 0)
                _exit(3);
            g_sh->ver[i]++;
            ids[j] = i;
        }
        if (armdb_sync(db) != 0)
            _exit(4);
        for (int j = 0; j < 32; j++)
            if (g_sh->acked[ids[j]] < g_sh->ver[ids[j]])
                g_sh->acked[ids[j]] = g_sh->ver[ids[j]];
        usleep(200);
    }
    return NULL;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void test_rekey_kill(const char *dir)
{
    g_case = "rekey: kill -9";
    char *store = t_path(dir, "rekey-kill");
    g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(g_sh != MAP_FAILED);
    memset(g_sh, 0, sizeof *g_sh);
    /* A store of every key once. */
    armdb *db = open_enc(store, key_a, 3, ARMDB_CREATE, 128 << 10);
    unsigned char k[KLEN], v[400], got[400];
    for (uint32_t i = 0; i < RN; i++) {
        make_key(i, k);
        size_t n = make_val(i, 1, v, sizeof v);
        CHECK_OK(armdb_put(db, k, KLEN, v, n));
        g_sh->ver[i] = g_sh->acked[i] = 1;
    }
    CHECK_OK(armdb_close(db));
    const unsigned char *keys[2] = {key_a, key_b};
    int cur = 0;
    uint64_t rng = g_seed ^ 99, commits = 0, rounds = 16 * g_scale / 100 < 4 ? 4 : 16 * g_scale / 100, after = 0;
    int64_t span = 0;
    for (uint64_t round = 0; round <= rounds; round++) {
        atomic_store(&g_sh->phase, 0);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            armdb *cdb = open_enc(store, keys[cur], 3, 0, 128 << 10);
            pthread_t t;
            if (pthread_create(&t, NULL, kill_writer, cdb))
                _exit(2);
            usleep(3000);
            int64_t t0 = now_us();
            atomic_store(&g_sh->phase, 1);
            if (armdb_rekey(cdb, keys[!cur]) != 0)
                _exit(5);
            g_sh->rekey_us = now_us() - t0;
            atomic_store(&g_sh->phase, 2);
            if (round == 0)
                _exit(0); /* (no close: the writer is still going) */
            for (;;)
                pause();
        }
        if (round > 0) {
            /* Killed somewhere in the rekey (or just after it). */
            while (atomic_load(&g_sh->phase) == 0)
                usleep(100);
            if (round % 4 == 0) {
                /* Once it returned: the new key must open it. */
                while (atomic_load(&g_sh->phase) != 2)
                    usleep(100);
                usleep((useconds_t)(t_rand(&rng) % 2000));
            } else {
                usleep((useconds_t)(t_rand(&rng) % (uint64_t)(span + 1)));
            }
            kill(pid, SIGKILL);
            after += atomic_load(&g_sh->phase) == 2;
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (round == 0) {
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
            span = g_sh->rekey_us;
        }
        /* Exactly one key opens it, and every acknowledged write is there
         * (or a later one of the same key). */
        armdb *a, *b;
        int ra = try_open(store, keys[cur], 0, &a), rb = ra == 0 ? ARMDB_BADKEY : try_open(store, keys[!cur], 0, &b);
        CHECK((ra == 0) != (rb == 0));
        if (round % 4 == 0)
            CHECK(rb == 0);
        if (ra != 0)
            CHECK(ra == ARMDB_BADKEY);
        else
            CHECK(try_open(store, keys[!cur], ARMDB_RDONLY, &b) == ARMDB_BADKEY);
        armdb *ok = ra == 0 ? a : b;
        commits += rb == 0;
        for (uint32_t i = 0; i < RN; i++) {
            make_key(i, k);
            size_t vl;
            CHECK_OK(armdb_get(ok, k, KLEN, got, sizeof got, &vl));
            uint32_t id, ver;
            memcpy(&id, got, 4);
            memcpy(&ver, got + 4, 4);
            CHECK(id == i && ver >= g_sh->acked[i] && ver <= g_sh->ver[i]);
            CHECK(vl == make_val(i, ver, v, sizeof v) && memcmp(got, v, vl) == 0);
            g_sh->ver[i] = g_sh->acked[i] = ver; /* what the store holds now */
        }
        CHECK_OK(armdb_close(ok));
        CHECK(files_of_other_keys(store) == 0);
        if (rb == 0)
            cur = !cur;
    }
    printf("  rekey: killed %llu times in a rekey of about %lld ms: %llu opened with the new key (%llu killed after "
           "it returned), the rest with the old\n", (unsigned long long)rounds, (long long)(span / 1000),
           (unsigned long long)commits - 1, (unsigned long long)after);
    munmap(g_sh, sizeof *g_sh);
    free(store);
}

int main(void)
{
    g_seed = t_env_u64("ARMDB_SEED", 20261124);
    g_scale = t_env_u64("ARMDB_TEST_SCALE", 100);
    atexit(on_exit_report);
    char *dir = t_tmpdir("encrypt");
    if (getenv("ARMDB_ENCRYPT_LIVE_ONLY")) {
        /* Only the rekey beside a writer and a reader (the threads run). */
        test_rekey(dir);
        t_rmtree(dir);
        free(dir);
        g_case = NULL;
        printf("encrypt: live rekey ok\n");
        return 0;
    }
    test_keys(dir);
    test_markers(dir);
    test_tamper(dir);
    test_torn(dir);
    test_paths(dir);
    test_nonces(dir);
    test_rekey(dir);
    test_rekey_kill(dir);
    t_rmtree(dir);
    free(dir);
    g_case = NULL;
    printf("encrypt: ok\n");
    return 0;
}
