/*
 * read_corrupt.c - a get verifies what it reads: a value, key or header
 * damaged on disk after it was written is ARMDB_CORRUPT, never another
 * key's value and never a wrong value; damage found by a scan at open is
 * counted and skipped, and everything else still reads back.
 */
#include "test.h"

#include <fcntl.h>
#include <xxhash.h>

#define KLEN 16
#define NKEYS 200

static void make_key(unsigned i, unsigned char *k)
{
    memset(k, 0, KLEN);
    snprintf((char *)k, KLEN, "key-%08u", i);
}

static size_t make_val(unsigned i, unsigned char *v)
{
    size_t n = 20 + (i * 37) % 300;
    for (size_t j = 0; j < n; j++)
        v[j] = (unsigned char)(i * 7 + j);
    return n;
}

static armdb *open_store(const char *dir, unsigned flags)
{
    return t_open_store(dir, KLEN, 0, 1, 0, 0, flags);
}

/* Offset of the entry holding key i in a data file, found by walking the
 * format (entries never start with < 16 bytes left in a page). */
static long find_entry(const unsigned char *d, size_t len, unsigned i)
{
    unsigned char k[KLEN];
    make_key(i, k);
    size_t pos = 0;
    while (pos + 16 <= len) {
        if (4096 - pos % 4096 < 16) {
            pos += 4096 - pos % 4096;
            continue;
        }
        uint32_t vlen = t_le32(d + pos + 4);
        int zero = 1;
        for (int j = 0; j < 16; j++)
            zero &= d[pos + j] == 0;
        if (zero) {
            pos = (pos / 4096 + 1) * 4096;
            continue;
        }
        if (memcmp(d + pos + 16, k, KLEN) == 0)
            return (long)pos;
        pos += (16 + KLEN + vlen + 7) & ~7u;
    }
    return -1;
}

static void poke(const char *path, long off, unsigned char xor_mask)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    unsigned char b;
    CHECK(pread(fd, &b, 1, off) == 1);
    b ^= xor_mask;
    CHECK(pwrite(fd, &b, 1, off) == 1);
    close(fd);
}

static void fill(const char *dir)
{
    armdb *db = open_store(dir, ARMDB_CREATE);
    unsigned char k[KLEN], v[400];
    for (unsigned i = 0; i < NKEYS; i++) {
        make_key(i, k);
        size_t n = make_val(i, v);
        CHECK_OK(armdb_put(db, k, KLEN, v, n));
    }
    CHECK_OK(armdb_close(db));
}

/* Every key but `bad` reads back right; `bad` reads as `want`. */
static void check_all(armdb *db, unsigned bad, int want)
{
    unsigned char k[KLEN], v[400], buf[400];
    for (unsigned i = 0; i < NKEYS; i++) {
        make_key(i, k);
        size_t n = make_val(i, v), got = 0;
        int rc = armdb_get(db, k, KLEN, buf, sizeof buf, &got);
        if (i == bad) {
            CHECK_RC(rc, want);
            continue;
        }
        CHECK_OK(rc);
        CHECK(got == n && memcmp(buf, v, n) == 0);
    }
}

/* Damage one byte of key `victim`'s entry at `delta` from its start, in a
 * store whose file has a hint: the get of that key is ARMDB_CORRUPT. */
static void damage_with_hint(long delta, const char *what)
{
    char *dir = t_tmpdir("corrupt");
    char *store = t_path(dir, "s");
    fill(store);
    char *data = t_path(store, "000/00000001.data");
    size_t len;
    unsigned char *d = t_read_file(data, &len);
    unsigned victim = 77;
    long off = find_entry(d, len, victim);
    CHECK(off >= 0);
    free(d);
    poke(data, off + delta, 0x10);

    armdb *db = open_store(store, 0);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.hints_loaded == 1 && st.files_scanned == 0);
    check_all(db, victim, ARMDB_CORRUPT);
    /* The message names the file that holds the damage. */
    unsigned char k[KLEN], buf[400];
    size_t got;
    make_key(victim, k);
    CHECK_RC(armdb_get(db, k, KLEN, buf, sizeof buf, &got), ARMDB_CORRUPT);
    if (!strstr(armdb_errmsg(), "00000001.data")) {
        fprintf(stderr, "%s: message lacks the file name: %s\n", what, armdb_errmsg());
        exit(1);
    }
    /* An iteration reports it too and goes on past it. */
    armdb_iter *it;
    const void *ik, *iv;
    size_t ikl, ivl;
    unsigned ok = 0, corrupt = 0;
    int rc;
    CHECK_OK(armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it));
    while ((rc = armdb_iter_next(it, &ik, &ikl, &iv, &ivl)) != ARMDB_NOTFOUND) {
        if (rc == ARMDB_CORRUPT)
            corrupt++;
        else {
            CHECK_OK(rc);
            ok++;
        }
    }
    armdb_iter_close(it);
    CHECK(ok == NKEYS - 1 && corrupt == 1);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(data);
    free(dir);
}

/* With a damaged hint, a scan at open skips the damaged entry and counts
 * it: the file was sealed, so damage in it is not a torn tail to cut. */
static void damage_without_hint(void)
{
    char *dir = t_tmpdir("corrupt");
    char *store = t_path(dir, "s");
    fill(store);
    char *data = t_path(store, "000/00000001.data");
    char *hint = t_path(store, "000/00000001.hint");
    poke(hint, 60, 0x40);
    size_t len;
    unsigned char *d = t_read_file(data, &len);
    unsigned victim = 123;
    long off = find_entry(d, len, victim);
    CHECK(off >= 0);
    free(d);
    poke(data, off + 16 + KLEN + 3, 0x01);

    /* A writer open rebuilds the hint (damage excluded); so check both. */
    armdb *db = open_store(store, ARMDB_RDONLY);
    armdb_stat st;
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.files_scanned == 1 && st.corrupt_entries == 1);
    check_all(db, victim, ARMDB_NOTFOUND);
    CHECK(armdb_count(db) == NKEYS - 1);
    CHECK_OK(armdb_close(db));

    db = open_store(store, 0);
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.corrupt_entries == 1);
    check_all(db, victim, ARMDB_NOTFOUND);
    CHECK_OK(armdb_close(db));
    db = open_store(store, 0);
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.files_scanned == 0);
    check_all(db, victim, ARMDB_NOTFOUND);
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(store);
    free(data);
    free(hint);
    free(dir);
}

/* Fixed-length values are served from the index: zeroing every data file
 * under an open store changes nothing a get returns. The same done to a
 * variable-value store is caught as ARMDB_CORRUPT (so the check can fail). */
static void inline_values_skip_disk(uint32_t value_len)
{
    char *dir = t_tmpdir("inline");
    char *store = t_path(dir, "s");
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.value_len = value_len;
    o.shards = 1;
    o.flags = ARMDB_CREATE;
    armdb *db;
    unsigned char k[KLEN], v[8], buf[16];
    t_key_options(&o);
    CHECK_OK(armdb_open(store, &o, &db));
    for (unsigned i = 0; i < NKEYS; i++) {
        make_key(i, k);
        memcpy(v, &i, 4);
        memcpy(v + 4, &i, 4);
        CHECK_OK(armdb_put(db, k, KLEN, v, 8));
    }
    CHECK_OK(armdb_close(db));
    o.flags = 0;
    t_key_options(&o);
    CHECK_OK(armdb_open(store, &o, &db));
    char *data = t_path(store, "000/00000001.data");
    FILE *f = fopen(data, "r+b");
    CHECK(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    for (long i = 0; i < len; i++)
        fputc(0, f);
    fclose(f);
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t got;
        make_key(i, k);
        int rc = armdb_get(db, k, KLEN, buf, sizeof buf, &got);
        if (value_len) {
            CHECK_OK(rc);
            CHECK(got == 8 && memcmp(buf, &i, 4) == 0 && memcmp(buf + 4, &i, 4) == 0);
        } else {
            CHECK_RC(rc, ARMDB_CORRUPT);
        }
    }
    CHECK_OK(armdb_close(db));
    t_rmtree(dir);
    free(data);
    free(store);
    free(dir);
}

/* A data file lost while its hint remains: open refuses, naming it. */
static void data_file_lost(void)
{
    char *dir = t_tmpdir("lost");
    char *store = t_path(dir, "s");
    fill(store);
    armdb *db = open_store(store, 0); /* file 1 sealed, file 2 active */
    unsigned char k[KLEN], v[400];
    make_key(0, k);
    size_t n = make_val(1, v);
    CHECK_OK(armdb_put(db, k, KLEN, v, n));
    CHECK_OK(armdb_close(db));
    char *data = t_path(store, "000/00000002.data");
    CHECK(unlink(data) == 0);
    armdb_options o;
    armdb_options_init(&o);
    t_key_options(&o);
    CHECK_RC(armdb_open(store, &o, &db), ARMDB_CORRUPT);
    CHECK(strstr(armdb_errmsg(), "00000002.data") != NULL);
    o.flags = ARMDB_RDONLY;
    t_key_options(&o);
    CHECK_RC(armdb_open(store, &o, &db), ARMDB_CORRUPT);
    t_rmtree(dir);
    free(data);
    free(store);
    free(dir);
}

int main(void)
{
    data_file_lost();
    inline_values_skip_disk(8);
    inline_values_skip_disk(0);
    damage_with_hint(16 + KLEN + 5, "value byte");
    damage_with_hint(16 + 3, "key byte");
    damage_with_hint(5, "value_len byte");
    damage_with_hint(9, "gsn byte");
    damage_with_hint(1, "checksum byte");
    damage_without_hint();
    return 0;
}
