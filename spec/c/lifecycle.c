/*
 * lifecycle.c - a store is created, reopened and refused exactly as armdb.h
 * documents, and every argument check of the key calls holds.
 *
 * - create: ARMDB, LOCK and one lowercase hex directory per shard; a reopen
 *   with zeroed options (or NULL) takes the stored settings.
 * - each invalid creation option is ARMDB_INVAL and creates nothing.
 * - a reopen whose key_len, value_len or shards differ is ARMDB_MISMATCH
 *   naming the field, and leaves the store as it was.
 * - a damaged or cut meta file is ARMDB_CORRUPT naming "ARMDB", never reset.
 * - a second writer (another process, or the same one) is ARMDB_LOCKED and
 *   told the holder's pid; the lock goes with the writer.
 * - no write permission: -EACCES.
 * - NULL pointers, wrong key lengths and oversized values are refused and
 *   write nothing; get, delete and cas return what the manual says.
 * - ARMDB_RDONLY: no store is -ENOENT, writes are ARMDB_READONLY, it
 *   coexists with a writer, sees the store as of its open, takes no lock
 *   and changes no byte of the store.
 * - armdb_strerror gives distinct text per code; armdb_close(NULL) is 0.
 */
#include "test.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/wait.h>

#define KEY_LEN 8

/* ---- files ---- */

static int path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* Entries of a directory besides . and .., or -1 if it cannot be read. */
static int dir_count(const char *p)
{
    DIR *d = opendir(p);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int is_shard_name(const char *s)
{
    if (strlen(s) != 3)
        return 0;
    for (int i = 0; i < 3; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Number of shard directories; also checks they are exactly 000..n-1. */
static int shard_dirs(const char *store)
{
    DIR *d = opendir(store);
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        char *p;
        struct stat st;
        if (!is_shard_name(e->d_name))
            continue;
        p = t_path(store, e->d_name);
        CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
        free(p);
        n++;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        char name[16], *p;
        snprintf(name, sizeof(name), "%03x", (unsigned)i);
        p = t_path(store, name);
        CHECK(path_exists(p));
        free(p);
    }
    return n;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Sum of the sizes of every .data file in the store. */
static uint64_t data_bytes(const char *store)
{
    DIR *d = opendir(store);
    struct dirent *e;
    uint64_t sum = 0;
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        char *sub;
        DIR *sd;
        struct dirent *f;
        if (!is_shard_name(e->d_name))
            continue;
        sub = t_path(store, e->d_name);
        sd = opendir(sub);
        CHECK(sd != NULL);
        while ((f = readdir(sd))) {
            char *p;
            struct stat st;
            if (!ends_with(f->d_name, ".data"))
                continue;
            p = t_path(sub, f->d_name);
            CHECK(stat(p, &st) == 0);
            sum += (uint64_t)st.st_size;
            free(p);
        }
        closedir(sd);
        free(sub);
    }
    closedir(d);
    return sum;
}

static void write_all(const char *p, const void *buf, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, buf, len, 0) == (ssize_t)len);
    close(fd);
}

/* Every file under a directory, by relative path, with its bytes. */
struct snap {
    int n;
    char *name[256];
    unsigned char *data[256];
    size_t len[256];
};

static void snap_dir(struct snap *s, const char *root, const char *rel)
{
    char *dir = rel[0] ? t_path(root, rel) : strdup(root);
    DIR *d = opendir(dir);
    struct dirent *e;
    CHECK(d != NULL);
    while ((e = readdir(d))) {
        char *r, *p;
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        r = rel[0] ? t_path(rel, e->d_name) : strdup(e->d_name);
        p = t_path(root, r);
        CHECK(lstat(p, &st) == 0);
        if (S_ISDIR(st.st_mode)) {
            snap_dir(s, root, r);
            /* Directories are recorded too, with no bytes. */
            CHECK(s->n < 256);
            s->name[s->n] = r;
            s->data[s->n] = NULL;
            s->len[s->n] = 0;
            s->n++;
        } else {
            CHECK(s->n < 256);
            s->name[s->n] = r;
            s->data[s->n] = t_read_file(p, &s->len[s->n]);
            s->n++;
        }
        free(p);
    }
    closedir(d);
    free(dir);
}

static int snap_cmp_idx(const struct snap *s, int i, int j) { return strcmp(s->name[i], s->name[j]); }

static void snap_take(struct snap *s, const char *root)
{
    memset(s, 0, sizeof(*s));
    snap_dir(s, root, "");
    /* Sort by name (insertion sort: a few dozen entries). */
    for (int i = 1; i < s->n; i++) {
        for (int j = i; j > 0 && snap_cmp_idx(s, j - 1, j) > 0; j--) {
            char *tn = s->name[j];
            unsigned char *td = s->data[j];
            size_t tl = s->len[j];
            s->name[j] = s->name[j - 1];
            s->data[j] = s->data[j - 1];
            s->len[j] = s->len[j - 1];
            s->name[j - 1] = tn;
            s->data[j - 1] = td;
            s->len[j - 1] = tl;
        }
    }
}

/* Same names; same bytes except for files named `skip_bytes` (or NULL). */
static void snap_check_equal(const struct snap *a, const struct snap *b, const char *skip_bytes)
{
    if (a->n != b->n) {
        fprintf(stderr, "file lists differ: %d vs %d entries\n", a->n, b->n);
        for (int i = 0; i < a->n; i++)
            fprintf(stderr, "  before: %s\n", a->name[i]);
        for (int i = 0; i < b->n; i++)
            fprintf(stderr, "  after:  %s\n", b->name[i]);
    }
    CHECK(a->n == b->n);
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->name[i], b->name[i]))
            fprintf(stderr, "file lists differ: %s vs %s\n", a->name[i], b->name[i]);
        CHECK(strcmp(a->name[i], b->name[i]) == 0);
        CHECK((a->data[i] == NULL) == (b->data[i] == NULL));
        if (skip_bytes && !strcmp(a->name[i], skip_bytes))
            continue;
        if (a->len[i] != b->len[i] || (a->len[i] && memcmp(a->data[i], b->data[i], a->len[i])))
            fprintf(stderr, "file %s changed\n", a->name[i]);
        CHECK(a->len[i] == b->len[i]);
        CHECK(a->len[i] == 0 || memcmp(a->data[i], b->data[i], a->len[i]) == 0);
    }
}

static void snap_free(struct snap *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->name[i]);
        free(s->data[i]);
    }
    s->n = 0;
}

/* ---- keys, values, messages ---- */

static void make_key(uint64_t n, unsigned char *k)
{
    snprintf((char *)k, KEY_LEN + 1, "k%07" PRIu64, n % 10000000u);
}

/* A value of len bytes derived from n. */
static size_t make_value(uint64_t n, unsigned char *v, size_t len)
{
    uint64_t s = n * 1000003u + 17;
    for (size_t i = 0; i < len; i++)
        v[i] = (unsigned char)t_rand(&s);
    return len;
}

/* Does s contain the decimal number n, not as part of a longer number? */
static int has_number(const char *s, long n)
{
    char want[32];
    size_t wl;
    snprintf(want, sizeof(want), "%ld", n);
    wl = strlen(want);
    for (const char *p = s; (p = strstr(p, want)) != NULL; p++) {
        int before = p > s && p[-1] >= '0' && p[-1] <= '9';
        int after = p[wl] >= '0' && p[wl] <= '9';
        if (!before && !after)
            return 1;
    }
    return 0;
}

static void check_errmsg_has(const char *what)
{
    const char *m = armdb_errmsg();
    CHECK(m != NULL);
    if (!strstr(m, what))
        fprintf(stderr, "errmsg \"%s\" does not name \"%s\"\n", m, what);
    CHECK(strstr(m, what) != NULL);
}

static void expect_value(armdb *db, const unsigned char *k, const void *want, size_t wl)
{
    unsigned char buf[8192];
    size_t vl = 99999;
    CHECK_OK(armdb_get(db, k, KEY_LEN, buf, sizeof(buf), &vl));
    CHECK(vl == wl);
    CHECK(wl == 0 || memcmp(buf, want, wl) == 0);
}

static void expect_missing(armdb *db, const unsigned char *k)
{
    unsigned char buf[64];
    size_t vl = 0;
    CHECK_RC(armdb_get(db, k, KEY_LEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);
}

/* ---- cases ---- */

static void case_create_reopen(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *store = t_path(dir, "db");
    char *p;
    armdb_options o;
    armdb_stat st;
    armdb *db;
    unsigned char k[KEY_LEN + 1], v[64];
    size_t vl;

    /* No store and no ARMDB_CREATE: -ENOENT, nothing made. */
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    CHECK_RC(armdb_open(store, &o, &db), -ENOENT);
    CHECK(!path_exists(store));
    CHECK_RC(armdb_open(store, NULL, &db), -ENOENT);
    CHECK(!path_exists(store));
    /* An empty directory is no store either. */
    CHECK(mkdir(store, 0755) == 0);
    CHECK_RC(armdb_open(store, &o, &db), -ENOENT);
    CHECK(dir_count(store) == 0);
    CHECK(rmdir(store) == 0);

    /* Created: meta, lock, 12 shard directories 000..00b. */
    db = t_open_store(store, KEY_LEN, 24, 12, 0, 0, ARMDB_CREATE);
    p = t_path(store, "ARMDB");
    CHECK(path_exists(p));
    free(p);
    p = t_path(store, "LOCK");
    CHECK(path_exists(p));
    free(p);
    CHECK(shard_dirs(store) == 12);
    p = t_path(store, "00b");
    CHECK(path_exists(p));
    free(p);
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.key_len == KEY_LEN && st.value_len == 24 && st.shards == 12);
    make_key(1, k);
    memset(v, 'x', 24);
    CHECK_OK(armdb_put(db, k, KEY_LEN, v, 24));
    CHECK_OK(armdb_close(db));

    /* Reopen with zeroed options: the stored settings. */
    armdb_options_init(&o);
    CHECK_OK(armdb_open(store, &o, &db));
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.key_len == KEY_LEN && st.value_len == 24 && st.shards == 12);
    CHECK(armdb_count(db) == 1);
    vl = 0;
    CHECK_OK(armdb_get(db, k, KEY_LEN, v, sizeof(v), &vl));
    CHECK(vl == 24 && v[0] == 'x' && v[23] == 'x');
    CHECK_OK(armdb_close(db));
    /* And with NULL options. */
    CHECK_OK(armdb_open(store, NULL, &db));
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.key_len == KEY_LEN && st.value_len == 24 && st.shards == 12);
    CHECK(armdb_count(db) == 1);
    CHECK_OK(armdb_close(db));
    /* ARMDB_CREATE on an existing store opens it, with its data. */
    db = t_open_store(store, KEY_LEN, 24, 12, 0, 0, ARMDB_CREATE);
    CHECK(armdb_count(db) == 1);
    CHECK_OK(armdb_close(db));
    CHECK(shard_dirs(store) == 12);

    /* shards 0 at creation: one per online CPU (at most 256). */
    free(store);
    store = t_path(dir, "db-cpus");
    {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (cpus < 1)
            cpus = 1;
        if (cpus > ARMDB_SHARDS_MAX)
            cpus = ARMDB_SHARDS_MAX;
        db = t_open_store(store, KEY_LEN, 0, 0, 0, 0, ARMDB_CREATE);
        CHECK_OK(armdb_stats(db, &st));
        CHECK(st.shards == (uint32_t)cpus);
        CHECK(st.value_len == 0);
        CHECK_OK(armdb_close(db));
        CHECK(shard_dirs(store) == (int)cpus);
    }

    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Invalid creation options: ARMDB_INVAL, errmsg naming the field, nothing
 * created in a missing directory nor in an existing empty one. */
static void case_invalid_create(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *absent = t_path(dir, "absent");
    char *empty = t_path(dir, "empty");
    CHECK(mkdir(empty, 0755) == 0);

    for (int c = 0;; c++) {
        armdb_options o;
        const char *field = NULL;
        armdb *db = NULL;
        armdb_options_init(&o);
        o.key_len = KEY_LEN;
        o.shards = 2;
        o.flags = ARMDB_CREATE;
        switch (c) {
        case 0:
            o.key_len = 0;
            field = "key_len";
            break;
        case 1:
            o.key_len = 513;
            field = "key_len";
            break;
        case 2:
            o.value_len = 4097;
            field = "value_len";
            break;
        case 3:
            o.shards = 257;
            field = "shards";
            break;
        case 4:
            o.sync_mode = 3;
            field = "sync_mode";
            break;
        case 5:
            o.sync_mode = 0xffffffffu;
            field = "sync_mode";
            break;
        case 6:
            o.reserved = 1;
            field = "reserved";
            break;
        case 7:
            o.write_buffer_size = 65536 + 100;
            field = "write_buffer_size";
            break;
        case 8:
            o.write_buffer_size = (1u << 20) + 2048;
            field = "write_buffer_size";
            break;
        case 9:
            o.write_buffer_size = 4096;
            field = "write_buffer_size";
            break;
        case 10:
            o.write_buffer_size = 512u << 20;
            field = "write_buffer_size";
            break;
        case 11:
            o.max_file_size = 65535;
            field = "max_file_size";
            break;
        case 12:
            o.max_file_size = (3ull << 30) + 1;
            field = "max_file_size";
            break;
        case 13:
            o.max_file_size = UINT64_MAX;
            field = "max_file_size";
            break;
        case 14:
            o.sync_interval_ms = 60001;
            field = "sync_interval_ms";
            break;
        case 15:
            o.flags |= ARMDB_CIPHER_AES; /* a cipher without a key */
            field = "ARMDB_CIPHER_AES";
            break;
        default: goto done;
        }
        for (int where = 0; where < 2; where++) {
            const char *store = where ? empty : absent;
            int rc = armdb_open(store, &o, &db);
            if (rc != ARMDB_INVAL)
                fprintf(stderr, "invalid option case %d in %s dir\n", c, where ? "empty" : "missing");
            CHECK_RC(rc, ARMDB_INVAL);
            if (field)
                check_errmsg_has(field);
            if (where) {
                if (dir_count(empty) != 0)
                    fprintf(stderr, "invalid option case %d created files\n", c);
                CHECK(dir_count(empty) == 0);
            } else {
                if (path_exists(absent))
                    fprintf(stderr, "invalid option case %d created the directory\n", c);
                CHECK(!path_exists(absent));
            }
        }
    }
done:
    /* The control: the same base options do create a store. */
    {
        armdb_options o;
        armdb *db;
        armdb_options_init(&o);
        o.key_len = KEY_LEN;
        o.shards = 2;
        o.flags = ARMDB_CREATE;
        CHECK_OK(armdb_open(empty, &o, &db));
        CHECK_OK(armdb_close(db));
        CHECK(shard_dirs(empty) == 2);
    }
    free(absent);
    free(empty);
    t_rmtree(dir);
    free(dir);
}

static void case_mismatch(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *store = t_path(dir, "db");
    struct snap before, after;
    armdb_stat st;
    armdb *db;
    unsigned char k[KEY_LEN + 1], v[8];

    db = t_open_store(store, KEY_LEN, 8, 3, 0, 0, ARMDB_CREATE);
    for (int i = 0; i < 50; i++) {
        make_key((uint64_t)i, k);
        memset(v, 'a' + i % 26, 8);
        CHECK_OK(armdb_put(db, k, KEY_LEN, v, 8));
    }
    CHECK_OK(armdb_close(db));
    snap_take(&before, store);

    for (int c = 0; c < 6; c++) {
        armdb_options o;
        const char *field;
        armdb_options_init(&o);
        /* Odd cases also pass ARMDB_CREATE: it must not reset the store. */
        o.flags = c % 2 ? ARMDB_CREATE : 0;
        switch (c / 2) {
        case 0:
            o.key_len = KEY_LEN * 2;
            field = "key_len";
            break;
        case 1:
            o.value_len = 16;
            field = "value_len";
            break;
        default:
            o.shards = 4;
            field = "shards";
            break;
        }
        if (c % 2)
            o.key_len = o.key_len ? o.key_len : KEY_LEN;
        db = NULL;
        CHECK_RC(armdb_open(store, &o, &db), ARMDB_MISMATCH);
        check_errmsg_has(field);
        /* Read-only opens check the same. */
        o.flags = ARMDB_RDONLY;
        CHECK_RC(armdb_open(store, &o, &db), ARMDB_MISMATCH);
        check_errmsg_has(field);
    }
    /* Unchanged (LOCK may hold a fresh pid: its bytes are not compared). */
    snap_take(&after, store);
    snap_check_equal(&before, &after, "LOCK");
    snap_free(&before);
    snap_free(&after);

    /* Still opens with its settings and data, with matching options too. */
    db = t_open_store(store, KEY_LEN, 8, 3, 0, 0, 0);
    CHECK_OK(armdb_stats(db, &st));
    CHECK(st.key_len == KEY_LEN && st.value_len == 8 && st.shards == 3);
    CHECK(armdb_count(db) == 50);
    for (int i = 0; i < 50; i++) {
        unsigned char want[8];
        make_key((uint64_t)i, k);
        memset(want, 'a' + i % 26, 8);
        expect_value(db, k, want, 8);
    }
    CHECK_OK(armdb_close(db));

    free(store);
    t_rmtree(dir);
    free(dir);
}

static void expect_corrupt(const char *store)
{
    armdb_options o;
    armdb *db = NULL;
    armdb_options_init(&o);
    CHECK_RC(armdb_open(store, &o, &db), ARMDB_CORRUPT);
    check_errmsg_has("ARMDB");
    /* Never a silent reset, even when creation is allowed. */
    o.key_len = KEY_LEN;
    o.flags = ARMDB_CREATE;
    CHECK_RC(armdb_open(store, &o, &db), ARMDB_CORRUPT);
    check_errmsg_has("ARMDB");
    o.flags = ARMDB_RDONLY;
    o.key_len = 0;
    CHECK_RC(armdb_open(store, &o, &db), ARMDB_CORRUPT);
    check_errmsg_has("ARMDB");
}

static void case_corrupt_meta(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *store = t_path(dir, "db");
    char *meta = t_path(store, "ARMDB");
    unsigned char k[KEY_LEN + 1], *good, *bad;
    size_t len, l2;
    armdb *db;

    db = t_open_store(store, KEY_LEN, 0, 2, 0, 0, ARMDB_CREATE);
    make_key(7, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, "seven", 5));
    CHECK_OK(armdb_close(db));
    good = t_read_file(meta, &len);
    CHECK(len >= 16);
    bad = malloc(len);
    CHECK(bad != NULL);

    /* One flipped byte: in the magic, the key length, the shard count, the
     * middle, the checksum. */
    {
        size_t offs[] = {0, 12, 20, len / 2, len - 1};
        for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
            memcpy(bad, good, len);
            bad[offs[i]] ^= 0x01;
            write_all(meta, bad, len);
            expect_corrupt(store);
            /* The damaged file is left for the operator, not rewritten. */
            free(t_read_file(meta, &l2));
            CHECK(l2 == len);
        }
    }
    /* Cut short, and cut to nothing. */
    {
        size_t lens[] = {len / 2, len - 1, 0};
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            write_all(meta, good, lens[i]);
            expect_corrupt(store);
        }
    }
    /* Restored: the store and its data are back. */
    write_all(meta, good, len);
    db = t_open_store(store, 0, 0, 0, 0, 0, 0);
    CHECK(armdb_count(db) == 1);
    expect_value(db, k, "seven", 5);
    CHECK_OK(armdb_close(db));

    free(good);
    free(bad);
    free(meta);
    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Open store in a child process; its rc and errmsg come back through a pipe. */
static int child_open(const char *store, uint32_t flags, char *msg, size_t cap)
{
    int fds[2], status, rc = 1;
    pid_t pid;
    ssize_t n;
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        armdb_options o;
        armdb *db = NULL;
        char out[600];
        int r;
        close(fds[0]);
        armdb_options_init(&o);
        o.flags = flags;
        o.sync_mode = ARMDB_SYNC_NONE;
        r = armdb_open(store, &o, &db);
        if (r == 0)
            r = armdb_close(db) == 0 ? 0 : -9999;
        memcpy(out, &r, sizeof(r));
        snprintf(out + sizeof(r), sizeof(out) - sizeof(r), "%s", r ? armdb_errmsg() : "");
        if (write(fds[1], out, sizeof(out)) != (ssize_t)sizeof(out))
            _exit(2);
        _exit(0);
    }
    close(fds[1]);
    {
        char in[600];
        size_t got = 0;
        while (got < sizeof(in) && (n = read(fds[0], in + got, sizeof(in) - got)) > 0)
            got += (size_t)n;
        CHECK(got == sizeof(in));
        memcpy(&rc, in, sizeof(rc));
        in[sizeof(in) - 1] = 0;
        snprintf(msg, cap, "%s", in + sizeof(rc));
    }
    close(fds[0]);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return rc;
}

static void case_locked(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *store = t_path(dir, "db");
    char *lock = t_path(store, "LOCK");
    char msg[600];
    unsigned char k[KEY_LEN + 1], *lb;
    size_t len;
    armdb *db, *db2 = NULL;
    armdb_options o;

    db = t_open_store(store, KEY_LEN, 0, 2, 0, 0, ARMDB_CREATE);
    make_key(1, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, "one", 3));

    /* The lock file names the holder. */
    lb = t_read_file(lock, &len);
    lb[len] = 0;
    CHECK(strtol((char *)lb, NULL, 10) == (long)getpid());
    free(lb);

    /* Another process. */
    CHECK_RC(child_open(store, 0, msg, sizeof(msg)), ARMDB_LOCKED);
    if (!has_number(msg, (long)getpid()))
        fprintf(stderr, "errmsg \"%s\" lacks the holder pid %ld\n", msg, (long)getpid());
    CHECK(has_number(msg, (long)getpid()));
    /* Creation flags change nothing. */
    CHECK_RC(child_open(store, ARMDB_CREATE, msg, sizeof(msg)), ARMDB_LOCKED);

    /* A second writer handle in this process. */
    armdb_options_init(&o);
    CHECK_RC(armdb_open(store, &o, &db2), ARMDB_LOCKED);
    if (!has_number(armdb_errmsg(), (long)getpid()))
        fprintf(stderr, "errmsg \"%s\" lacks the holder pid %ld\n", armdb_errmsg(), (long)getpid());
    CHECK(has_number(armdb_errmsg(), (long)getpid()));

    /* The refused opens did not disturb the writer. */
    expect_value(db, k, "one", 3);
    CHECK_OK(armdb_put(db, k, KEY_LEN, "uno", 3));
    CHECK_OK(armdb_close(db));

    /* Lock released with the handle: another process may now write. */
    CHECK_RC(child_open(store, 0, msg, sizeof(msg)), 0);
    db = t_open_store(store, 0, 0, 0, 0, 0, 0);
    expect_value(db, k, "uno", 3);
    CHECK_OK(armdb_close(db));

    free(lock);
    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Run in a process without privileges: 0 if both expectations held, 1 if
 * not, 77 if the checks cannot run. */
static int eacces_checks(const char *ro, const char *ok)
{
    armdb_options o;
    armdb *db = NULL;
    char *store;
    int rc;

    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.shards = 2;
    o.flags = ARMDB_CREATE;
    /* Control: a writable directory works, so EACCES below is the mode. */
    store = t_path(ok, "db");
    rc = armdb_open(store, &o, &db);
    free(store);
    if (rc != 0) {
        fprintf(stderr, "eacces control failed: %s (%s)\n", armdb_strerror(rc), armdb_errmsg());
        return T_SKIP;
    }
    if (armdb_close(db) != 0)
        return 1;

    /* A new store in a read-only directory. */
    store = t_path(ro, "db");
    rc = armdb_open(store, &o, &db);
    if (rc != -EACCES) {
        fprintf(stderr, "create in a 0555 directory: %d (%s), expected -EACCES\n", rc, armdb_strerror(rc));
        return 1;
    }
    if (path_exists(store))
        return 1;
    free(store);
    /* The read-only directory itself as the store. */
    rc = armdb_open(ro, &o, &db);
    if (rc != -EACCES) {
        fprintf(stderr, "create in place in a 0555 directory: %d (%s), expected -EACCES\n", rc,
                armdb_strerror(rc));
        return 1;
    }
    if (dir_count(ro) != 0)
        return 1;
    return 0;
}

static void case_eacces(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *ro = t_path(dir, "ro");
    char *ok = t_path(dir, "ok");
    int status;
    pid_t pid;

    CHECK(mkdir(ro, 0555) == 0);
    CHECK(chmod(ro, 0555) == 0);
    CHECK(mkdir(ok, 0755) == 0);
    if (geteuid() != 0) {
        int r = eacces_checks(ro, ok);
        if (r == T_SKIP)
            fprintf(stderr, "lifecycle: EACCES case skipped\n");
        CHECK(r == 0 || r == T_SKIP);
        goto out;
    }
    /* Root bypasses permissions; run the case as an unprivileged user when
     * one can be had, else skip it. */
    CHECK(chmod(dir, 0755) == 0);
    if (chown(ok, 65534, 65534) != 0) {
        fprintf(stderr, "lifecycle: EACCES case skipped (running as root)\n");
        goto out;
    }
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            _exit(T_SKIP);
        _exit(eacces_checks(ro, ok));
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    if (WEXITSTATUS(status) == T_SKIP)
        fprintf(stderr, "lifecycle: EACCES case skipped (running as root, cannot drop privileges)\n");
    else
        CHECK(WEXITSTATUS(status) == 0);
out:
    chmod(ro, 0755);
    free(ro);
    free(ok);
    t_rmtree(dir);
    free(dir);
}

struct baseline {
    uint64_t count, data, puts, deletes;
};

static void baseline_take(armdb *db, const char *store, struct baseline *b)
{
    armdb_stat st;
    CHECK_OK(armdb_sync(db));
    CHECK_OK(armdb_stats(db, &st));
    b->count = armdb_count(db);
    b->data = data_bytes(store);
    b->puts = st.puts;
    b->deletes = st.deletes;
}

static void baseline_check(armdb *db, const char *store, const struct baseline *b)
{
    struct baseline now;
    baseline_take(db, store, &now);
    CHECK(now.count == b->count);
    CHECK(now.data == b->data);
    CHECK(now.puts == b->puts);
    CHECK(now.deletes == b->deletes);
}

static void case_arguments(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *store = t_path(dir, "db");
    char *fixed = t_path(dir, "fixed");
    char *absent = t_path(dir, "absent");
    /* write_buffer_size 64 KiB: values up to 65536 - 8192 bytes. */
    const size_t vmax = 65536 - 8192;
    unsigned char *big = malloc(vmax + 2);
    unsigned char k[KEY_LEN + 2], out[64];
    struct baseline b;
    armdb_options o;
    armdb *db, *dbn = NULL;
    size_t vl;

    CHECK(big != NULL);
    memset(big, 0x5a, vmax + 2);

    /* armdb_open: NULL dir, NULL out. */
    armdb_options_init(&o);
    o.key_len = KEY_LEN;
    o.flags = ARMDB_CREATE;
    CHECK_RC(armdb_open(NULL, &o, &dbn), ARMDB_INVAL);
    CHECK_RC(armdb_open(absent, &o, NULL), ARMDB_INVAL);
    CHECK(!path_exists(absent));

    db = t_open_store(store, KEY_LEN, 0, 2, 65536, 0, ARMDB_CREATE);
    memset(k, 0, sizeof(k));
    make_key(1, k);
    /* The largest value is accepted... */
    CHECK_OK(armdb_put(db, k, KEY_LEN, big, vmax));
    vl = 0;
    CHECK_RC(armdb_get(db, k, KEY_LEN, NULL, 0, &vl), ARMDB_BUFSMALL);
    CHECK(vl == vmax);
    make_key(2, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, "two", 3));
    baseline_take(db, store, &b);
    CHECK(b.count == 2);
    CHECK(b.data > 0);

    /* ...one byte more is not. */
    make_key(3, k);
    CHECK_RC(armdb_put(db, k, KEY_LEN, big, vmax + 1), ARMDB_TOOBIG);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, NULL, 0, big, vmax + 1), ARMDB_TOOBIG);
    make_key(2, k);
    CHECK_RC(armdb_put(db, k, KEY_LEN, big, vmax + 1), ARMDB_TOOBIG);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "two", 3, big, vmax + 1), ARMDB_TOOBIG);
    baseline_check(db, store, &b);
    expect_value(db, k, "two", 3);

    /* NULL handle, key, value, length pointer. */
    CHECK_RC(armdb_put(NULL, k, KEY_LEN, "x", 1), ARMDB_INVAL);
    CHECK_RC(armdb_get(NULL, k, KEY_LEN, out, sizeof(out), &vl), ARMDB_INVAL);
    CHECK_RC(armdb_delete(NULL, k, KEY_LEN), ARMDB_INVAL);
    CHECK_RC(armdb_cas(NULL, k, KEY_LEN, NULL, 0, "x", 1), ARMDB_INVAL);
    CHECK_RC(armdb_put(db, NULL, KEY_LEN, "x", 1), ARMDB_INVAL);
    CHECK_RC(armdb_get(db, NULL, KEY_LEN, out, sizeof(out), &vl), ARMDB_INVAL);
    CHECK_RC(armdb_delete(db, NULL, KEY_LEN), ARMDB_INVAL);
    CHECK_RC(armdb_cas(db, NULL, KEY_LEN, NULL, 0, "x", 1), ARMDB_INVAL);
    CHECK_RC(armdb_cas(db, NULL, KEY_LEN, "two", 3, "x", 1), ARMDB_INVAL);
    make_key(4, k);
    CHECK_RC(armdb_put(db, k, KEY_LEN, NULL, 5), ARMDB_INVAL);
    CHECK_RC(armdb_get(db, k, KEY_LEN, out, sizeof(out), NULL), ARMDB_INVAL);
    CHECK_RC(armdb_get(db, k, KEY_LEN, NULL, 5, &vl), ARMDB_INVAL);
    CHECK_RC(armdb_stats(db, NULL), ARMDB_INVAL);
    baseline_check(db, store, &b);
    expect_missing(db, k);

    /* Keys one byte short or long. */
    make_key(2, k);
    for (int d = -1; d <= 1; d += 2) {
        size_t kl = (size_t)(KEY_LEN + d);
        CHECK_RC(armdb_put(db, k, kl, "x", 1), ARMDB_KEYLEN);
        CHECK_RC(armdb_get(db, k, kl, out, sizeof(out), &vl), ARMDB_KEYLEN);
        CHECK_RC(armdb_delete(db, k, kl), ARMDB_KEYLEN);
        CHECK_RC(armdb_cas(db, k, kl, "two", 3, "x", 1), ARMDB_KEYLEN);
        CHECK_RC(armdb_cas(db, k, kl, NULL, 0, "x", 1), ARMDB_KEYLEN);
    }
    CHECK_RC(armdb_put(db, k, 0, "x", 1), ARMDB_KEYLEN);
    baseline_check(db, store, &b);
    expect_value(db, k, "two", 3);

    /* An empty value is a value; NULL is allowed for it. */
    make_key(5, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, NULL, 0));
    CHECK(armdb_count(db) == 3);
    CHECK_OK(armdb_close(db));

    /* A fixed value length accepts nothing else. */
    db = t_open_store(fixed, KEY_LEN, 8, 2, 0, 0, ARMDB_CREATE);
    make_key(1, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, "12345678", 8));
    baseline_take(db, fixed, &b);
    {
        size_t lens[] = {0, 1, 7, 9, 4096};
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            make_key(1, k);
            CHECK_RC(armdb_put(db, k, KEY_LEN, big, lens[i]), ARMDB_TOOBIG);
            CHECK_RC(armdb_cas(db, k, KEY_LEN, "12345678", 8, big, lens[i]), ARMDB_TOOBIG);
            make_key(2, k);
            CHECK_RC(armdb_put(db, k, KEY_LEN, big, lens[i]), ARMDB_TOOBIG);
            CHECK_RC(armdb_cas(db, k, KEY_LEN, NULL, 0, big, lens[i]), ARMDB_TOOBIG);
        }
    }
    baseline_check(db, fixed, &b);
    make_key(1, k);
    expect_value(db, k, "12345678", 8);
    make_key(2, k);
    expect_missing(db, k);
    CHECK_OK(armdb_close(db));

    free(big);
    free(absent);
    free(fixed);
    free(store);
    t_rmtree(dir);
    free(dir);
}

static void case_get_delete_cas(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *store = t_path(dir, "db");
    unsigned char k[KEY_LEN + 1], v[256], buf[256];
    size_t len, vl;
    armdb_stat st;
    armdb *db;

    db = t_open_store(store, KEY_LEN, 0, 3, 0, 0, ARMDB_CREATE);

    /* get: missing key. */
    make_key(1, k);
    vl = 12345;
    CHECK_RC(armdb_get(db, k, KEY_LEN, buf, sizeof(buf), &vl), ARMDB_NOTFOUND);

    /* get: a buffer one byte short is left untouched and told the size. */
    len = make_value(1, v, 200);
    CHECK_OK(armdb_put(db, k, KEY_LEN, v, len));
    memset(buf, 0xa5, sizeof(buf));
    vl = 0;
    CHECK_RC(armdb_get(db, k, KEY_LEN, buf, len - 1, &vl), ARMDB_BUFSMALL);
    CHECK(vl == len);
    for (size_t i = 0; i < sizeof(buf); i++)
        CHECK(buf[i] == 0xa5);
    vl = 0;
    CHECK_RC(armdb_get(db, k, KEY_LEN, NULL, 0, &vl), ARMDB_BUFSMALL);
    CHECK(vl == len);
    /* Exactly the size fits. */
    vl = 0;
    CHECK_OK(armdb_get(db, k, KEY_LEN, buf, len, &vl));
    CHECK(vl == len && memcmp(buf, v, len) == 0);
    CHECK(buf[len] == 0xa5);

    /* An empty value: cap 0 and NULL buf give 0 and length 0. */
    make_key(2, k);
    CHECK_OK(armdb_put(db, k, KEY_LEN, "", 0));
    vl = 777;
    CHECK_OK(armdb_get(db, k, KEY_LEN, NULL, 0, &vl));
    CHECK(vl == 0);

    /* The same after the data reached the disk and the store reopened. */
    CHECK_OK(armdb_close(db));
    db = t_open_store(store, 0, 0, 0, 0, 0, 0);
    make_key(1, k);
    memset(buf, 0xa5, sizeof(buf));
    vl = 0;
    CHECK_RC(armdb_get(db, k, KEY_LEN, buf, len - 1, &vl), ARMDB_BUFSMALL);
    CHECK(vl == len);
    for (size_t i = 0; i < sizeof(buf); i++)
        CHECK(buf[i] == 0xa5);
    expect_value(db, k, v, len);
    make_key(2, k);
    vl = 777;
    CHECK_OK(armdb_get(db, k, KEY_LEN, NULL, 0, &vl));
    CHECK(vl == 0);

    /* delete: missing key writes nothing. */
    CHECK_OK(armdb_sync(db));
    {
        uint64_t before = data_bytes(store);
        armdb_stat s0;
        CHECK_OK(armdb_stats(db, &s0));
        make_key(3, k);
        CHECK_RC(armdb_delete(db, k, KEY_LEN), ARMDB_NOTFOUND);
        CHECK_OK(armdb_sync(db));
        CHECK(data_bytes(store) == before);
        CHECK_OK(armdb_stats(db, &st));
        CHECK(st.deletes == s0.deletes && st.bytes_written == s0.bytes_written);
    }
    /* delete: present key goes, a second delete finds nothing. */
    make_key(2, k);
    CHECK_OK(armdb_delete(db, k, KEY_LEN));
    expect_missing(db, k);
    CHECK_RC(armdb_delete(db, k, KEY_LEN), ARMDB_NOTFOUND);
    CHECK(armdb_count(db) == 1);

    /* cas, expected NULL: only an absent key. */
    make_key(1, k);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, NULL, 0, "new", 3), ARMDB_EXISTS);
    expect_value(db, k, v, len);
    make_key(4, k);
    CHECK_OK(armdb_cas(db, k, KEY_LEN, NULL, 0, "four", 4));
    expect_value(db, k, "four", 4);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, NULL, 0, "vier", 4), ARMDB_EXISTS);
    expect_value(db, k, "four", 4);
    /* cas, expected given: absent key. */
    make_key(5, k);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "four", 4, "five", 4), ARMDB_NOTFOUND);
    expect_missing(db, k);
    /* A deleted key is absent for cas too. */
    make_key(2, k);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "", 0, "two", 3), ARMDB_NOTFOUND);
    expect_missing(db, k);
    /* Wrong expected: other bytes, a prefix, a longer value, empty. */
    make_key(4, k);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "fouR", 4, "x", 1), ARMDB_CONFLICT);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "fou", 3, "x", 1), ARMDB_CONFLICT);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "fourr", 5, "x", 1), ARMDB_CONFLICT);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "", 0, "x", 1), ARMDB_CONFLICT);
    expect_value(db, k, "four", 4);
    /* Right expected: the new value. */
    CHECK_OK(armdb_cas(db, k, KEY_LEN, "four", 4, "FOUR!", 5));
    expect_value(db, k, "FOUR!", 5);
    CHECK_RC(armdb_cas(db, k, KEY_LEN, "four", 4, "x", 1), ARMDB_CONFLICT);
    /* A value read from disk compares too (key 1 was written last session). */
    make_key(1, k);
    CHECK_OK(armdb_cas(db, k, KEY_LEN, v, len, "one", 3));
    expect_value(db, k, "one", 3);
    CHECK(armdb_count(db) == 2);
    CHECK_OK(armdb_close(db));

    /* All of it is what the next open finds. */
    db = t_open_store(store, 0, 0, 0, 0, 0, 0);
    CHECK(armdb_count(db) == 2);
    make_key(1, k);
    expect_value(db, k, "one", 3);
    make_key(4, k);
    expect_value(db, k, "FOUR!", 5);
    make_key(2, k);
    expect_missing(db, k);
    make_key(5, k);
    expect_missing(db, k);
    CHECK_OK(armdb_close(db));

    free(store);
    t_rmtree(dir);
    free(dir);
}

/* Remove the first .hint file found in any shard directory. */
static void remove_one_hint(const char *store)
{
    DIR *d = opendir(store);
    struct dirent *e;
    int done = 0;
    CHECK(d != NULL);
    while (!done && (e = readdir(d))) {
        char *sub;
        DIR *sd;
        struct dirent *f;
        if (!is_shard_name(e->d_name))
            continue;
        sub = t_path(store, e->d_name);
        sd = opendir(sub);
        CHECK(sd != NULL);
        while (!done && (f = readdir(sd))) {
            char *p;
            if (!ends_with(f->d_name, ".hint"))
                continue;
            p = t_path(sub, f->d_name);
            CHECK(unlink(p) == 0);
            free(p);
            done = 1;
        }
        closedir(sd);
        free(sub);
    }
    closedir(d);
    CHECK(done);
}

static void case_rdonly(void)
{
    char *dir = t_tmpdir("lifecycle");
    char *store = t_path(dir, "db");
    unsigned char ka[KEY_LEN + 1], kb[KEY_LEN + 1];
    struct snap before, after;
    armdb_options o;
    armdb_stat st;
    armdb *w, *w2, *ro, *ro2;

    /* No store, or an empty directory: -ENOENT, nothing created. */
    armdb_options_init(&o);
    o.flags = ARMDB_RDONLY;
    CHECK_RC(armdb_open(store, &o, &ro), -ENOENT);
    CHECK(!path_exists(store));
    CHECK(mkdir(store, 0755) == 0);
    CHECK_RC(armdb_open(store, &o, &ro), -ENOENT);
    CHECK(dir_count(store) == 0);
    CHECK(rmdir(store) == 0);

    /* A writer writes A and syncs; a read-only handle sees A. */
    w = t_open_store(store, KEY_LEN, 0, 2, 0, 0, ARMDB_CREATE);
    make_key(100, ka);
    make_key(200, kb);
    CHECK_OK(armdb_put(w, ka, KEY_LEN, "A-value", 7));
    CHECK_OK(armdb_sync(w));
    armdb_options_init(&o);
    o.flags = ARMDB_RDONLY;
    CHECK_OK(armdb_open(store, &o, &ro));
    CHECK_OK(armdb_stats(ro, &st));
    CHECK(st.read_only == 1);
    CHECK(st.key_len == KEY_LEN && st.shards == 2);
    CHECK(armdb_count(ro) == 1);
    expect_value(ro, ka, "A-value", 7);

    /* Writes through it are refused and change nothing. */
    CHECK_RC(armdb_put(ro, kb, KEY_LEN, "B", 1), ARMDB_READONLY);
    CHECK_RC(armdb_put(ro, ka, KEY_LEN, "B", 1), ARMDB_READONLY);
    CHECK_RC(armdb_delete(ro, ka, KEY_LEN), ARMDB_READONLY);
    CHECK_RC(armdb_cas(ro, ka, KEY_LEN, "A-value", 7, "B", 1), ARMDB_READONLY);
    CHECK_RC(armdb_cas(ro, kb, KEY_LEN, NULL, 0, "B", 1), ARMDB_READONLY);
    CHECK_OK(armdb_sync(ro));
    expect_value(ro, ka, "A-value", 7);
    expect_missing(ro, kb);
    expect_value(w, ka, "A-value", 7);
    expect_missing(w, kb);

    /* The writer goes on: B, and A overwritten. The read-only view stays. */
    CHECK_OK(armdb_put(w, kb, KEY_LEN, "B-value", 7));
    CHECK_OK(armdb_put(w, ka, KEY_LEN, "A-second", 8));
    CHECK_OK(armdb_sync(w));
    expect_missing(ro, kb);
    expect_value(ro, ka, "A-value", 7);
    CHECK(armdb_count(ro) == 1);
    expect_value(w, kb, "B-value", 7);
    expect_value(w, ka, "A-second", 8);

    /* A second read-only handle opened now sees the new state. */
    CHECK_OK(armdb_open(store, &o, &ro2));
    expect_value(ro2, kb, "B-value", 7);
    expect_value(ro2, ka, "A-second", 8);
    CHECK(armdb_count(ro2) == 2);

    /* Read-only handles hold no lock: once the writer closes, another
     * writer opens while they are still open. */
    CHECK_OK(armdb_close(w));
    w2 = t_open_store(store, 0, 0, 0, 0, 0, 0);
    CHECK_OK(armdb_put(w2, kb, KEY_LEN, "B-third", 7));
    CHECK_OK(armdb_close(w2));
    expect_value(ro, ka, "A-value", 7);
    expect_missing(ro, kb);
    expect_value(ro2, kb, "B-value", 7);
    CHECK_OK(armdb_close(ro));
    CHECK_OK(armdb_close(ro2));

    /* A read-only cycle on a cleanly closed store changes no byte and no
     * file name. */
    snap_take(&before, store);
    CHECK(before.n >= 4);
    CHECK_OK(armdb_open(store, &o, &ro));
    expect_value(ro, ka, "A-second", 8);
    expect_value(ro, kb, "B-third", 7);
    make_key(300, kb);
    expect_missing(ro, kb);
    CHECK_RC(armdb_put(ro, kb, KEY_LEN, "C", 1), ARMDB_READONLY);
    CHECK_OK(armdb_sync(ro));
    CHECK_OK(armdb_stats(ro, &st));
    CHECK(st.keys == 2);
    CHECK_OK(armdb_close(ro));
    snap_take(&after, store);
    snap_check_equal(&before, &after, NULL);
    snap_free(&after);
    snap_free(&before);

    /* The same when the open must scan a data file (its hint removed): a
     * read-only handle writes no hint. */
    remove_one_hint(store);
    snap_take(&before, store);
    CHECK_OK(armdb_open(store, &o, &ro));
    make_key(100, ka);
    make_key(200, kb);
    expect_value(ro, ka, "A-second", 8);
    expect_value(ro, kb, "B-third", 7);
    CHECK(armdb_count(ro) == 2);
    CHECK_OK(armdb_stats(ro, &st));
    CHECK(st.files_scanned >= 1);
    CHECK_OK(armdb_close(ro));
    snap_take(&after, store);
    snap_check_equal(&before, &after, NULL);
    snap_free(&after);

    /* And once more while a writer holds the lock. */
    w = t_open_store(store, 0, 0, 0, 0, 0, 0);
    CHECK_OK(armdb_open(store, &o, &ro));
    make_key(200, kb);
    expect_value(ro, kb, "B-third", 7);
    CHECK_OK(armdb_close(ro));
    CHECK_OK(armdb_close(w));

    snap_free(&before);
    free(store);
    t_rmtree(dir);
    free(dir);
}

static void case_strerror(void)
{
    int codes[] = {ARMDB_OK,       ARMDB_NOTFOUND, ARMDB_BUFSMALL, ARMDB_CORRUPT, ARMDB_LOCKED, ARMDB_BADKEY,
                   ARMDB_MISMATCH, ARMDB_INVAL,    ARMDB_READONLY, ARMDB_EXISTS,  ARMDB_KEYLEN, ARMDB_TOOBIG,
                   ARMDB_CONFLICT, ARMDB_FULL,     -ENOENT,        -EACCES};
    size_t n = sizeof(codes) / sizeof(codes[0]);
    for (size_t i = 0; i < n; i++) {
        const char *a = armdb_strerror(codes[i]);
        CHECK(a != NULL && a[0] != 0);
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(a, armdb_strerror(codes[j])))
                fprintf(stderr, "codes %d and %d share the text \"%s\"\n", codes[i], codes[j], a);
            CHECK(strcmp(a, armdb_strerror(codes[j])) != 0);
        }
    }
    /* Unknown codes still get text. */
    CHECK(armdb_strerror(-29999) != NULL);
    CHECK(armdb_strerror(12345) != NULL);
    CHECK(armdb_strerror(INT32_MIN) != NULL);
    CHECK(armdb_errmsg() != NULL);
    CHECK(armdb_close(NULL) == 0);
    CHECK(armdb_abi_version() == ARMDB_ABI_VERSION);
}

int main(void)
{
    case_strerror();
    case_create_reopen();
    case_invalid_create();
    case_mismatch();
    case_corrupt_meta();
    case_locked();
    case_eacces();
    case_arguments();
    case_get_delete_cas();
    case_rdonly();
    return 0;
}
