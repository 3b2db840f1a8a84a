/*
 * corrupt_damage.c - random damage to a store's files never yields a wrong
 * value, a crash or a hang: an open either fails with a clear error naming
 * the damaged file, or every key reads back its right value or
 * ARMDB_CORRUPT, never another key's value and never an older version.
 *
 * Reference stores are built once per configuration (1 and 4 shards with
 * values of 0..2000 bytes, 2 shards with 8-byte inline values) in three
 * writer sessions with 64 KiB data files, so every shard has several sealed
 * data files with hints, older versions of overwritten keys and tombstones
 * of deleted keys spread across files. Each value is derived from its key
 * and version, so a foreign or stale value is recognised.
 *
 * Each round copies a reference store, damages ONE file (flips 1..8 bits,
 * zeroes 1..600 bytes, overwrites 1..600 bytes with random bytes, or
 * truncates it), then opens the copy twice, as a writer or read-only, in a
 * forked child under a 30 s alarm, so that a crash or a hang is reported
 * with its seed and round. What each file type allows:
 *
 *   meta  open fails with ARMDB_CORRUPT and a message naming ARMDB (its
 *         checksum covers every byte, so any change is caught).
 *   hint  the hint is ignored and its intact data file scanned: exactly one
 *         file scanned, nothing counted corrupt, every key exactly as the
 *         model. A writer open rewrites the hint, so the next open scans
 *         nothing.
 *   data  the intact hints are loaded and nothing is scanned. A key the
 *         model says is deleted is ARMDB_NOTFOUND (its tombstone is in a
 *         hint, whatever the data file holds); a live key reads its newest
 *         value or ARMDB_CORRUPT with a message naming the damaged file,
 *         never an older version. Fixed-length values come from the hints:
 *         they all read exactly. A truncated data file is held to the same
 *         rule on values (it may also fail the open, naming the file).
 *   torn  a child writes, calls armdb_sync(), writes more and dies without
 *         closing (exit or SIGKILL); only bytes past the synced end of a
 *         shard's last data file are damaged (flipped, zeroed, overwritten,
 *         cut or extended with garbage). Every key has its synced value or
 *         one of its later unsynced ones; nothing reads ARMDB_CORRUPT.
 *
 * Encrypted stores (ARMDB_TEST_ENCRYPT=1, or 2 for AES-256-GCM, run the
 * same rounds on stores opened with a key: every 4096-byte page of data and
 * hint files sealed, each page's nonce and tag in the .tags file beside its
 * data file, a 128-byte meta file). What the format legitimately changes:
 *
 *   data  a page that fails authentication fails whole: every value with a
 *         byte in it reads ARMDB_CORRUPT (naming the data file), so more
 *         keys may read ARMDB_CORRUPT than in a plain store; never a wrong
 *         or older value. (A sealed file without a usable hint whose every
 *         page fails makes the open fail with ARMDB_CORRUPT naming it.)
 *   tags  a fifth file type: one .tags file damaged (bits flipped, bytes
 *         zeroed or randomized, cut, or extended with garbage). Like damage
 *         to the pages of its data file: the intact hints are loaded and
 *         nothing is scanned or counted corrupt, every key reads its right
 *         value or ARMDB_CORRUPT with a message naming NNNNNNNN.data (the
 *         data file of the same id, not the .tags file); fixed-length values
 *         all read exactly, from the hints. A damaged tags header is no
 *         damage: the pages open with the store's key all the same.
 *   hint  a damaged sealed hint fails to open (an AEAD tag covers each
 *         page): ignored and its data file scanned, as in a plain store.
 *   torn  after the barrier the last data file is whole sealed pages (the
 *         last one zero-padded), so the synced end is its length, page
 *         aligned, and the slots of the synced pages are in the tags file.
 *         The damage is to bytes past the synced end of the data file, or
 *         (one round in three) to the slots of the unsynced pages in its
 *         tags file (the whole tags file when no page was synced); a page
 *         that fails authentication starts the torn tail, and the file is
 *         cut at its page boundary. Same expectations.
 *   meta  the same: ARMDB_CORRUPT naming ARMDB.
 *
 * Always: armdb_count() agrees with the gets; a full iteration yields each
 * readable key once with the value its get returned, as many ARMDB_CORRUPT
 * as there were corrupt gets, and nothing else; the second open gives the
 * first one's results key for key. A round whose damage changed no byte
 * (zeroes over zeroes) must read exactly like the reference. Before the
 * rounds, each reference store is checked clean, and a deliberately stale
 * model is shown to be caught, so the checks can fail.
 *
 * Replay: ARMDB_SEED=<seed> ARMDB_CORRUPT_ROUND=<round>, both printed on
 * failure; ARMDB_CORRUPT_KEEP=1 keeps each failed round's store as damaged,
 * before any open; ARMDB_CORRUPT_ROUNDS=<n> sets the number of rounds.
 */
#include "test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define KLEN 16
#define VMAX 2000
#define VBUF 4096
#define NEXTRA 40 /* keys the reference never writes; torn rounds may */
#define MAXKEYS (1500 + NEXTRA)
#define MAX_FILE 65536
#define MAXFILES 128
#define MAXSTATES 8
#define MAXOPS 256
#define MAXSHARDS 4
#define CHILD_TIMEOUT 30
#define MAX_REPORTED 20
#define DEFAULT_ROUNDS 600

enum ftype { F_DATA, F_HINT, F_META, F_TORN, F_TAGS, F_NTYPES }; /* F_TAGS: encrypted stores only */
static const char *const ftype_name[F_NTYPES] = {"data", "hint", "meta", "torn", "tags"};

enum dkind { D_FLIP, D_ZERO, D_RANDOM, D_TRUNCATE, D_EXTEND };

/* What a round must observe; see the header comment. */
enum expect { X_EXACT, X_VERIFIED, X_SCAN, X_META, X_TORN };

struct state {
    uint32_t ver; /* 0 = never written */
    uint8_t live;
};

/* The states a key may be found in: one, except after a crash. */
struct allowed {
    uint8_t n;
    struct state s[MAXSTATES];
};

struct config {
    const char *name;
    uint32_t shards, value_len, nkeys;
    unsigned nall; /* nkeys + NEXTRA */
    uint64_t salt;
    char *store;
    struct state model[MAXKEYS];
    char *data[MAXFILES], *hint[MAXFILES]; /* "000/00000001.data" */
    char *tags[MAXFILES];                  /* encrypted stores: "000/00000001.tags" */
    unsigned ndata, nhint, ntags;
};

struct round {
    uint64_t no;
    const struct config *c;
    enum ftype type;
    enum expect expect;
    bool changed, truncated, quiet;
    bool tags_header; /* a tags round changed the file's 32-byte header */
    bool rdonly[2];
    char *dir;
    char victim[64]; /* the damaged file, as error messages name it */
    char file[64];   /* the file damaged: the victim, or its .tags file */
    char desc[320];
};

/* Counters the checking children add to: shared with the parent. */
struct tally {
    uint64_t failures;
    uint64_t open_failed;
    uint64_t get_corrupt;
    uint64_t iter_corrupt;
    uint64_t files_scanned;
    uint64_t torn_bytes;
    uint64_t later_values; /* torn rounds: keys read with an unsynced value */
};

static uint64_t g_seed;
static bool g_enc; /* ARMDB_TEST_ENCRYPT: the stores are encrypted */
static struct tally *g_tally;
static struct allowed g_allow[MAXKEYS];
static uint32_t g_maxver;
static const struct round *g_round;
static int g_pass;

/* ---- keys, values, the model ---- */

static void make_key(unsigned i, unsigned char *k)
{
    memset(k, 0, KLEN);
    snprintf((char *)k, KLEN, "key-%08u", i);
}

static int parse_key(const void *kp, size_t klen, unsigned nall)
{
    const unsigned char *k = kp;
    unsigned v = 0;
    if (klen != KLEN || memcmp(k, "key-", 4) != 0)
        return -1;
    for (int j = 4; j < 12; j++) {
        if (k[j] < '0' || k[j] > '9')
            return -1;
        v = v * 10 + (unsigned)(k[j] - '0');
    }
    for (int j = 12; j < KLEN; j++)
        if (k[j])
            return -1;
    return v < nall ? (int)v : -1;
}

/* The value of version v of key i: 0..2000 bytes (0 only for the first
 * version of some keys, so every version of a key is told apart), or the
 * store's fixed length. */
static size_t make_val(const struct config *c, unsigned i, uint32_t v, unsigned char *buf)
{
    uint64_t s = c->salt ^ ((uint64_t)i << 24) ^ ((uint64_t)v * 0x9e3779b97f4a7c15ull);
    size_t n;
    t_rand(&s);
    if (c->value_len)
        n = c->value_len;
    else if (v == 1 && i % 29 == 0)
        n = 0;
    else
        n = 1 + t_rand(&s) % VMAX;
    for (size_t j = 0; j < n; j += 8) {
        uint64_t x = t_rand(&s);
        memcpy(buf + j, &x, n - j < 8 ? n - j : 8);
    }
    return n;
}

static bool val_is(const struct config *c, unsigned i, uint32_t v, const void *val, size_t vlen)
{
    unsigned char want[VBUF];
    size_t n = make_val(c, i, v, want);
    return n == vlen && (n == 0 || memcmp(want, val, n) == 0);
}

/* Name what a wrong value is, for the failure message. */
static void describe_value(const struct config *c, unsigned i, const void *val, size_t vlen, char *out,
                           size_t cap)
{
    for (uint32_t v = 1; v <= g_maxver; v++)
        if (val_is(c, i, v, val, vlen)) {
            snprintf(out, cap, "version %u of this key (%zu bytes)", v, vlen);
            return;
        }
    for (unsigned j = 0; j < c->nall; j++)
        for (uint32_t v = 1; v <= g_maxver; v++)
            if (j != i && val_is(c, j, v, val, vlen)) {
                snprintf(out, cap, "version %u of key %u (another key; %zu bytes)", v, j, vlen);
                return;
            }
    snprintf(out, cap, "%zu bytes that are no version of any key", vlen);
}

static void describe_allowed(const struct allowed *a, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = 0;
    for (unsigned s = 0; s < a->n && len < cap; s++) {
        int n;
        if (a->s[s].live)
            n = snprintf(out + len, cap - len, "%sversion %u", s ? " or " : "", a->s[s].ver);
        else
            n = snprintf(out + len, cap - len, "%sabsent (last version %u)", s ? " or " : "", a->s[s].ver);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

static void allow_model(const struct config *c)
{
    g_maxver = 0;
    for (unsigned i = 0; i < c->nall; i++) {
        g_allow[i].n = 1;
        g_allow[i].s[0] = c->model[i];
        if (c->model[i].ver > g_maxver)
            g_maxver = c->model[i].ver;
    }
}

/* ---- files ---- */

static void spill(const char *path, const unsigned char *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0);
    CHECK(write(fd, p, len) == (ssize_t)len);
    close(fd);
}

/* Highest data file id in shard directory `sdir` (0 if none). */
static uint32_t last_data_id(const char *sdir)
{
    DIR *d = opendir(sdir);
    struct dirent *e;
    uint32_t best = 0;
    CHECK(d);
    while ((e = readdir(d))) {
        long id = t_file_id(e->d_name, "data");
        if (id >= 0 && (uint32_t)id > best)
            best = (uint32_t)id;
    }
    closedir(d);
    return best;
}

/* End of the last entry of a data file written up to a barrier: entries,
 * then zero padding (format in src/entry.c). */
static size_t entries_end(const unsigned char *d, size_t len)
{
    size_t pos = 0, end = 0;
    while (pos + 16 <= len) {
        size_t left = 4096 - pos % 4096;
        bool zero = true;
        if (left < 16) {
            pos += left;
            continue;
        }
        for (int j = 0; j < 16; j++)
            zero &= d[pos + j] == 0;
        if (zero) {
            pos += left;
            continue;
        }
        uint32_t vlen = t_le32(d + pos + 4);
        pos += (16 + KLEN + (size_t)vlen + 7) & ~(size_t)7;
        end = pos;
    }
    return end;
}

/* ---- damage ---- */

/* Damage bytes [lo, len) of the file at path (or append to it), add what
 * was done to r->desc and record whether any byte changed. */
static void damage_file(struct round *r, const char *path, size_t lo, enum dkind kind, uint64_t *rng)
{
    size_t len;
    unsigned char *orig = t_read_file(path, &len);
    unsigned char *p = t_read_file_spare(path, &len, 600);
    size_t nlen = len;
    char what[160];
    if (lo >= len && kind != D_EXTEND)
        kind = D_EXTEND;
    switch (kind) {
    case D_FLIP: {
        unsigned n = 1 + (unsigned)(t_rand(rng) % 8);
        int w = snprintf(what, sizeof what, "flip %u bit(s) at", n);
        for (unsigned j = 0; j < n; j++) {
            size_t off = lo + t_rand(rng) % (len - lo);
            unsigned bit = (unsigned)(t_rand(rng) % 8);
            p[off] ^= (unsigned char)(1u << bit);
            if (w > 0 && (size_t)w < sizeof what)
                w += snprintf(what + w, sizeof what - (size_t)w, " %zu.%u", off, bit);
        }
        break;
    }
    case D_ZERO:
    case D_RANDOM: {
        size_t off = lo + t_rand(rng) % (len - lo);
        size_t n = 1 + t_rand(rng) % 600;
        if (n > len - off)
            n = len - off;
        for (size_t j = 0; j < n; j++)
            p[off + j] = kind == D_ZERO ? 0 : (unsigned char)t_rand(rng);
        snprintf(what, sizeof what, "%s %zu bytes at %zu", kind == D_ZERO ? "zero" : "randomize", n, off);
        break;
    }
    case D_TRUNCATE:
        /* Now and then to nothing, or to a page boundary. */
        switch (t_rand(rng) % 8) {
        case 0: nlen = lo; break;
        case 1: nlen = lo + (t_rand(rng) % (len - lo)) / 4096 * 4096; break;
        default: nlen = lo + t_rand(rng) % (len - lo); break;
        }
        snprintf(what, sizeof what, "truncate from %zu to %zu bytes", len, nlen);
        break;
    case D_EXTEND: {
        size_t n = 1 + t_rand(rng) % 600;
        for (size_t j = 0; j < n; j++)
            p[len + j] = (unsigned char)t_rand(rng);
        nlen = len + n;
        snprintf(what, sizeof what, "append %zu random bytes to %zu", n, len);
        break;
    }
    }
    r->changed = nlen != len || memcmp(orig, p, len) != 0;
    r->truncated = kind == D_TRUNCATE && nlen < len;
    spill(path, p, nlen);
    size_t dl = strlen(r->desc);
    snprintf(r->desc + dl, sizeof r->desc - dl, "%s %s: %s%s", ftype_name[r->type], r->file, what,
             r->changed ? "" : " (no byte changed)");
    free(orig);
    free(p);
}

/* ---- checking one round (in a child) ---- */

static void rfail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void rfail(const char *fmt, ...)
{
    const struct round *r = g_round;
    if (!r->quiet && g_tally->failures < MAX_REPORTED) {
        va_list ap;
        fprintf(stderr,
                "corrupt_damage: seed %" PRIu64 " round %" PRIu64 " [%s: %s] pass %d (%s open): ", g_seed,
                r->no, r->c->name, r->desc, g_pass + 1, r->rdonly[g_pass] ? "read-only" : "writer");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    _exit(1);
}

static armdb_options round_options(const struct round *r, bool rdonly)
{
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = KLEN;
    o.value_len = r->c->value_len;
    o.shards = r->c->shards;
    o.sync_mode = ARMDB_SYNC_NONE;
    o.max_file_size = MAX_FILE;
    /* Hints and files are counted: no compaction may change them. */
    o.flags = (rdonly ? ARMDB_RDONLY : 0) | ARMDB_NO_AUTO_COMPACT;
    return o;
}

static void check_stats(const struct round *r, armdb *db)
{
    const struct config *c = r->c;
    armdb_stat st;
    int rc = armdb_stats(db, &st);
    if (rc)
        rfail("armdb_stats returned %d", rc);
    g_tally->files_scanned += st.files_scanned;
    g_tally->torn_bytes += st.torn_bytes;
    uint64_t scanned = 0;
    switch (r->expect) {
    case X_VERIFIED:
        if (r->truncated)
            return;
        /* fall through */
    case X_EXACT: break;
    case X_SCAN:
        /* The writer of pass 1 rewrote the hint; a read-only open does not. */
        scanned = g_pass == 0 || r->rdonly[0] ? 1 : 0;
        break;
    case X_TORN:
        if (st.corrupt_entries)
            rfail("%" PRIu64 " corrupt entries counted: damage past the synced end is a torn tail",
                  st.corrupt_entries);
        return;
    case X_META: rfail("open succeeded after damage to the meta file");
    }
    /* A damaged tags header is reported (and harmless while the slots
     * hold): one corrupt count. */
    uint64_t corrupt = r->tags_header ? 1 : 0;
    if (st.files_scanned != scanned || st.hints_loaded != c->ndata - scanned || st.corrupt_entries != corrupt ||
        st.torn_bytes)
        rfail("stats: %" PRIu64 " files scanned, %" PRIu64 " hints loaded, %" PRIu64 " corrupt, %" PRIu64
              " torn bytes; expected %" PRIu64 " scanned, %" PRIu64 " hints, %" PRIu64 " corrupt, nothing torn",
              st.files_scanned, st.hints_loaded, st.corrupt_entries, st.torn_bytes, scanned,
              (uint64_t)c->ndata - scanned, corrupt);
}

/* Results per key: a version (> 0), 0 = NOTFOUND, -1 = CORRUPT. */
#define RES_CORRUPT (-1)
#define RES_NOOPEN (-2)

static bool corrupt_allowed(const struct round *r, const struct allowed *a)
{
    bool any_live = false;
    for (unsigned s = 0; s < a->n; s++)
        any_live |= a->s[s].live;
    /* Inline values come from the hints, unless the file lost entries. */
    return r->expect == X_VERIFIED && any_live && (!r->c->value_len || r->truncated);
}

static void check_gets(const struct round *r, armdb *db, int32_t *res)
{
    const struct config *c = r->c;
    unsigned char k[KLEN], buf[VBUF];
    char got[128], want[160];
    for (unsigned i = 0; i < c->nall; i++) {
        const struct allowed *a = &g_allow[i];
        size_t vlen = 0;
        make_key(i, k);
        int rc = armdb_get(db, k, KLEN, buf, sizeof buf, &vlen);
        if (rc == 0) {
            res[i] = 0;
            for (unsigned s = 0; s < a->n && !res[i]; s++)
                if (a->s[s].live && val_is(c, i, a->s[s].ver, buf, vlen)) {
                    res[i] = (int32_t)a->s[s].ver;
                    g_tally->later_values += s > 0;
                }
            if (!res[i]) {
                describe_value(c, i, buf, vlen, got, sizeof got);
                describe_allowed(a, want, sizeof want);
                rfail("key %u: get returned %s; allowed: %s", i, got, want);
            }
        } else if (rc == ARMDB_NOTFOUND) {
            bool ok = false;
            for (unsigned s = 0; s < a->n; s++)
                ok |= !a->s[s].live;
            if (!ok) {
                describe_allowed(a, want, sizeof want);
                rfail("key %u: get returned ARMDB_NOTFOUND; allowed: %s", i, want);
            }
            res[i] = 0;
        } else if (rc == ARMDB_CORRUPT && corrupt_allowed(r, a)) {
            if (!strstr(armdb_errmsg(), r->victim))
                rfail("key %u: ARMDB_CORRUPT with a message that does not name %s: \"%s\"", i, r->victim,
                      armdb_errmsg());
            res[i] = RES_CORRUPT;
            g_tally->get_corrupt++;
        } else {
            describe_allowed(a, want, sizeof want);
            rfail("key %u: get returned %d (%s; \"%s\"); allowed: %s", i, rc, armdb_strerror(rc),
                  armdb_errmsg(), want);
        }
    }
    uint64_t readable = 0;
    for (unsigned i = 0; i < c->nall; i++)
        readable += res[i] != 0;
    uint64_t count = armdb_count(db);
    if (count != readable)
        rfail("armdb_count is %" PRIu64 " but %" PRIu64 " keys read as present", count, readable);
}

static void check_iter(const struct round *r, armdb *db, const int32_t *res)
{
    const struct config *c = r->c;
    static unsigned char seen[MAXKEYS];
    uint64_t n = 0, corrupt = 0, want_corrupt = 0;
    armdb_iter *it;
    const void *k, *v;
    size_t klen, vlen;
    char got[128];
    int rc = armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it);
    if (rc)
        rfail("armdb_iter_open returned %d (%s)", rc, armdb_strerror(rc));
    memset(seen, 0, sizeof seen);
    while ((rc = armdb_iter_next(it, &k, &klen, &v, &vlen)) != ARMDB_NOTFOUND) {
        if (++n > c->nall + 1)
            rfail("the iteration does not end (%" PRIu64 " pairs)", n);
        if (rc == ARMDB_CORRUPT && r->expect == X_VERIFIED) {
            corrupt++;
            continue;
        }
        if (rc)
            rfail("armdb_iter_next returned %d (%s; \"%s\")", rc, armdb_strerror(rc), armdb_errmsg());
        int i = parse_key(k, klen, c->nall);
        if (i < 0)
            rfail("the iteration yields a key that was never written");
        if (seen[i]++)
            rfail("the iteration yields key %d twice", i);
        if (res[i] <= 0)
            rfail("the iteration yields key %d, which get found %s", i, res[i] ? "ARMDB_CORRUPT" : "absent");
        if (!val_is(c, (unsigned)i, (uint32_t)res[i], v, vlen)) {
            describe_value(c, (unsigned)i, v, vlen, got, sizeof got);
            rfail("the iteration yields key %d with %s; its get returned version %d", i, got, res[i]);
        }
    }
    armdb_iter_close(it);
    for (unsigned i = 0; i < c->nall; i++) {
        want_corrupt += res[i] == RES_CORRUPT;
        if (res[i] > 0 && !seen[i])
            rfail("the iteration misses key %u", i);
    }
    if (corrupt != want_corrupt)
        rfail("the iteration met %" PRIu64 " ARMDB_CORRUPT values, the gets %" PRIu64, corrupt, want_corrupt);
    g_tally->iter_corrupt += corrupt;
}

static void check_pass(const struct round *r, int32_t *res)
{
    armdb_options o = round_options(r, r->rdonly[g_pass]);
    armdb *db = NULL;
    t_key_options(&o);
    int rc = armdb_open(r->dir, &o, &db);
    const char *msg = armdb_errmsg();
    if (r->expect == X_META) {
        if (rc != ARMDB_CORRUPT || !strstr(msg, "ARMDB"))
            rfail("open returned %d (%s; \"%s\"), expected ARMDB_CORRUPT naming ARMDB", rc,
                  armdb_strerror(rc), msg);
        g_tally->open_failed++;
        for (unsigned i = 0; i < r->c->nall; i++)
            res[i] = RES_NOOPEN;
        return;
    }
    if (rc) {
        bool clean = rc == ARMDB_CORRUPT || (rc < 0 && rc > -4096);
        if (r->expect != X_VERIFIED || !clean || !strstr(msg, r->victim))
            rfail("open returned %d (%s; \"%s\")", rc, armdb_strerror(rc), msg);
        g_tally->open_failed++;
        for (unsigned i = 0; i < r->c->nall; i++)
            res[i] = RES_NOOPEN;
        return;
    }
    check_stats(r, db);
    check_gets(r, db, res);
    check_iter(r, db, res);
    rc = armdb_close(db);
    if (rc)
        rfail("armdb_close returned %d (%s; \"%s\")", rc, armdb_strerror(rc), armdb_errmsg());
}

static void check_round(const struct round *r)
{
    static int32_t res[2][MAXKEYS];
    g_round = r;
    for (g_pass = 0; g_pass < 2; g_pass++)
        check_pass(r, res[g_pass]);
    g_pass = 1;
    for (unsigned i = 0; i < r->c->nall; i++)
        if (res[0][i] != res[1][i])
            rfail(
                "key %u: the first open found %d, the second %d (version; 0 absent, -1 corrupt, -2 no open)",
                i, res[0][i], res[1][i]);
}

/* Check a round in a child under an alarm: 0 if it passed. */
static int run_check(const struct round *r)
{
    int status;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_TIMEOUT);
        check_round(r);
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1)
        return 1;
    if (g_tally->failures < MAX_REPORTED) {
        if (WIFSIGNALED(status))
            fprintf(stderr,
                    "corrupt_damage: seed %" PRIu64 " round %" PRIu64 " [%s: %s]: %s (signal %d, %s)\n",
                    g_seed, r->no, r->c->name, r->desc,
                    WTERMSIG(status) == SIGALRM ? "hang: no answer in 30 s" : "crash", WTERMSIG(status),
                    strsignal(WTERMSIG(status)));
        else
            fprintf(stderr,
                    "corrupt_damage: seed %" PRIu64 " round %" PRIu64 " [%s: %s]: child status 0x%x\n",
                    g_seed, r->no, r->c->name, r->desc, status);
    }
    return 2;
}

/* ---- reference stores ---- */

static void apply_op(const struct config *c, armdb *db, unsigned i, uint32_t ver, bool del)
{
    unsigned char k[KLEN], v[VBUF];
    make_key(i, k);
    if (del) {
        CHECK_OK(armdb_delete(db, k, KLEN));
    } else {
        size_t n = make_val(c, i, ver, v);
        CHECK_OK(armdb_put(db, k, KLEN, v, n));
    }
}

static void list_files(struct config *c)
{
    c->ndata = c->nhint = c->ntags = 0;
    for (unsigned s = 0; s < c->shards; s++) {
        char sname[12];
        snprintf(sname, sizeof sname, "%03x", s);
        char *sdir = t_path(c->store, sname);
        DIR *d = opendir(sdir);
        struct dirent *e;
        CHECK(d);
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            bool data = t_file_id(e->d_name, "data") >= 0, hint = t_file_id(e->d_name, "hint") >= 0;
            bool tags = g_enc && t_file_id(e->d_name, "tags") >= 0;
            CHECK(data || hint || tags);
            char **slot = data ? &c->data[c->ndata++] : hint ? &c->hint[c->nhint++] : &c->tags[c->ntags++];
            CHECK(c->ndata < MAXFILES && c->nhint < MAXFILES && c->ntags < MAXFILES);
            CHECK(asprintf(slot, "%s/%s", sname, e->d_name) >= 0);
        }
        closedir(d);
        free(sdir);
    }
}

/* Three writer sessions: every key put; then overwrites and deletes; then
 * more of both, re-puts of deleted keys included. */
static void build_reference(struct config *c, const char *base, unsigned no)
{
    uint64_t rng = g_seed ^ (0xa0761d6478bd642full * (no + 1));
    char name[16];
    snprintf(name, sizeof name, "ref%u", no);
    c->store = t_path(base, name);
    c->nall = c->nkeys + NEXTRA;
    CHECK(c->nall <= MAXKEYS && c->shards <= MAXSHARDS);
    c->salt = t_rand(&rng);
    memset(c->model, 0, sizeof c->model);
    for (int session = 0; session < 3; session++) {
        armdb *db = t_open_store(c->store, KLEN, c->value_len, c->shards, 0, MAX_FILE,
                                 (session == 0 ? ARMDB_CREATE : 0) | ARMDB_NO_AUTO_COMPACT);
        for (unsigned i = 0; i < c->nkeys; i++) {
            struct state *m = &c->model[i];
            unsigned roll = (unsigned)(t_rand(&rng) % 100);
            bool put = session == 0 || roll < (session == 1 ? 30u : 25u);
            bool del = !put && m->live && roll < (session == 1 ? 42u : 35u);
            if (put) {
                m->ver++;
                m->live = 1;
                apply_op(c, db, i, m->ver, false);
            } else if (del) {
                m->live = 0;
                apply_op(c, db, i, m->ver, true);
            }
        }
        CHECK_OK(armdb_close(db));
    }
    list_files(c);
    /* Several sealed files per shard, each with its hint. */
    CHECK(c->ndata >= 3 * c->shards && c->nhint == c->ndata);
    /* Encrypted: a tags file beside every data file, and no other. */
    CHECK(c->ntags == (g_enc ? c->ndata : 0));
    for (unsigned f = 0; f < c->ndata; f++) {
        char *hint = t_path(c->store, c->data[f]);
        struct stat st;
        memcpy(hint + strlen(hint) - 4, "hint", 4);
        CHECK(stat(hint, &st) == 0);
        if (g_enc) {
            memcpy(hint + strlen(hint) - 4, "tags", 4);
            CHECK(stat(hint, &st) == 0);
        }
        free(hint);
    }
}

/* ---- rounds ---- */

static char *g_base;
static bool g_keep;

static void keep_damaged(const struct round *r, bool failed)
{
    char name[48];
    snprintf(name, sizeof name, "damaged-%" PRIu64, r->no);
    char *p = t_path(g_base, name);
    if (failed) {
        fprintf(stderr, "corrupt_damage: round %" PRIu64 " store as damaged kept in %s\n", r->no, p);
    } else {
        t_rmtree(p);
    }
    free(p);
}

/* Torn write: a child opens the store, applies ops[0..nsync), syncs, sends
 * (last file id, synced end) of each shard, applies the rest and dies. */
static void torn_writer(const struct config *c, const char *dir, const unsigned *keys,
                        const struct state *ops, unsigned nsync, unsigned nops, bool sigkill, int fd)
{
    armdb *db;
    alarm(CHILD_TIMEOUT);
    db = t_open_store(dir, KLEN, 0, 0, 65536, MAX_FILE, ARMDB_NO_AUTO_COMPACT); /* the last file is the active one */
    for (unsigned j = 0; j < nops; j++) {
        if (j == nsync) {
            CHECK_OK(armdb_sync(db));
            for (unsigned s = 0; s < c->shards; s++) {
                char sname[12];
                snprintf(sname, sizeof sname, "%03x", s);
                char *sdir = t_path(dir, sname);
                uint64_t msg[2] = {last_data_id(sdir), 0};
                char *path = t_file_path(dir, s, (uint32_t)msg[0], "data");
                size_t len;
                unsigned char *d = t_read_file(path, &len);
                if (g_enc) {
                    /* Sealed pages, the last one zero-padded by the barrier:
                     * all of it is synced, and each page has its slot. */
                    size_t tlen;
                    char *tpath = t_file_path(dir, s, (uint32_t)msg[0], "tags");
                    free(t_read_file(tpath, &tlen));
                    free(tpath);
                    CHECK(len % 4096 == 0 && tlen >= 32 + len / 4096 * 24);
                    msg[1] = len;
                } else {
                    msg[1] = entries_end(d, len);
                    /* After a barrier the file is entries, then zeros. */
                    CHECK(msg[1] <= len);
                    for (size_t b = msg[1]; b < len; b++)
                        CHECK(d[b] == 0);
                }
                CHECK(write(fd, msg, sizeof msg) == (ssize_t)sizeof msg);
                free(d);
                free(path);
                free(sdir);
            }
        }
        apply_op(c, db, keys[j], ops[j].ver, !ops[j].live);
    }
    if (sigkill)
        raise(SIGKILL);
    _exit(0);
}

static void push_state(unsigned i, struct state s)
{
    struct allowed *a = &g_allow[i];
    a->s[a->n++] = s;
    if (s.ver > g_maxver)
        g_maxver = s.ver;
}

/* Returns false if the writer child failed (reported). */
static bool prepare_torn(struct round *r, uint64_t *rng)
{
    const struct config *c = r->c;
    static unsigned keys[MAXOPS];
    static struct state ops[MAXOPS];
    struct state m[MAXKEYS];
    unsigned nsync = 20 + (unsigned)(t_rand(rng) % 100);
    unsigned nops = nsync + 1 + (unsigned)(t_rand(rng) % 80);
    bool sigkill = t_rand(rng) % 2;
    memcpy(m, c->model, sizeof m);
    for (unsigned j = 0; j < nops; j++) {
        unsigned i;
        do
            i = (unsigned)(t_rand(rng) % c->nall);
        while (j >= nsync && g_allow[i].n == MAXSTATES);
        if (j == nsync)
            for (unsigned x = 0; x < c->nall; x++) {
                g_allow[x].n = 0;
                push_state(x, m[x]);
            }
        if (m[i].live && t_rand(rng) % 5 == 0) {
            m[i].live = 0;
        } else {
            m[i].ver++;
            m[i].live = 1;
        }
        keys[j] = i;
        ops[j] = m[i];
        if (j >= nsync)
            push_state(i, m[i]);
    }
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        torn_writer(c, r->dir, keys, ops, nsync, nops, sigkill, pfd[1]);
    }
    close(pfd[1]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    uint64_t synced[MAXSHARDS][2];
    ssize_t got = read(pfd[0], synced, sizeof synced);
    close(pfd[0]);
    bool died = sigkill ? WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL
                        : WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!died || got != (ssize_t)(c->shards * sizeof synced[0])) {
        fprintf(stderr,
                "corrupt_damage: seed %" PRIu64 " round %" PRIu64 " [%s]: the writer child failed "
                "(status 0x%x)\n",
                g_seed, r->no, c->name, status);
        return false;
    }
    unsigned s = (unsigned)(t_rand(rng) % c->shards);
    char sname[12];
    snprintf(sname, sizeof sname, "%03x", s);
    char *sdir = t_path(r->dir, sname);
    uint32_t id = last_data_id(sdir);
    /* A file rotated in after the sync holds no synced byte. */
    size_t lo = id == synced[s][0] ? (size_t)synced[s][1] : 0;
    snprintf(r->victim, sizeof r->victim, "%s/%08u.data", sname, id);
    snprintf(r->file, sizeof r->file, "%s", r->victim);
    snprintf(r->desc, sizeof r->desc, "%u ops, synced after %u, %s; synced end %zu of ", nops, nsync,
             sigkill ? "SIGKILL" : "_exit", lo);
    const char *ext = "data";
    static const enum dkind kinds[] = {D_FLIP, D_ZERO, D_RANDOM, D_TRUNCATE, D_EXTEND};
    enum dkind kind = kinds[t_rand(rng) % 5];
    if (g_enc && t_rand(rng) % 3 == 0) {
        /* The slots of the unsynced pages (all of the file if none was). */
        ext = "tags";
        lo = lo ? 32 + lo / 4096 * 24 : 0;
        snprintf(r->file, sizeof r->file, "%s/%08u.tags", sname, id);
        size_t dl = strlen(r->desc);
        snprintf(r->desc + dl, sizeof r->desc - dl, "data, slots from %zu of ", lo);
    }
    char *path = t_file_path(r->dir, s, id, ext);
    damage_file(r, path, lo, kind, rng);
    free(path);
    free(sdir);
    return true;
}

static void prepare_damage(struct round *r, uint64_t *rng)
{
    const struct config *c = r->c;
    unsigned roll = (unsigned)(t_rand(rng) % 100);
    enum dkind kind = roll < 35 ? D_FLIP : roll < 65 ? D_ZERO : roll < 85 ? D_RANDOM : D_TRUNCATE;
    const char *rel;
    if (r->type == F_DATA)
        rel = c->data[t_rand(rng) % c->ndata];
    else if (r->type == F_HINT)
        rel = c->hint[t_rand(rng) % c->nhint];
    else if (r->type == F_TAGS)
        rel = c->tags[t_rand(rng) % c->ntags];
    else
        rel = "ARMDB";
    snprintf(r->victim, sizeof r->victim, "%s", rel);
    snprintf(r->file, sizeof r->file, "%s", rel);
    if (r->type == F_TAGS) {
        /* Errors name the data file whose pages the slots seal. */
        size_t n = strlen(r->victim);
        CHECK(n > 5 && strcmp(r->victim + n - 5, ".tags") == 0);
        memcpy(r->victim + n - 4, "data", 4);
        if (t_rand(rng) % 8 == 0)
            kind = D_EXTEND; /* slots for pages the data file does not have */
    }
    char *path = t_path(r->dir, rel);
    damage_file(r, path, 0, kind, rng);
    if (r->type == F_TAGS) {
        /* Did the damage reach the header (not the case if the file is
         * gone to nothing: a tags file never written)? */
        char *ref = t_path(c->store, rel);
        size_t rlen, dlen;
        uint8_t *a = t_read_file(ref, &rlen), *b = t_read_file(path, &dlen);
        r->tags_header = dlen > 0 && (dlen < 32 || memcmp(a, b, 32) != 0);
        free(a);
        free(b);
        free(ref);
    }
    free(path);
    /* The data file of damaged slots is whole: every entry the hint names
     * is there to be read or fail authentication. */
    if (r->type == F_TAGS)
        r->truncated = false;
    if (!r->changed)
        r->expect = X_EXACT;
    else
        r->expect = r->type == F_DATA || r->type == F_TAGS ? X_VERIFIED : r->type == F_HINT ? X_SCAN : X_META;
}

int main(void)
{
    static struct config cfgs[] = {
        {.name = "1 shard, values 0..2000 bytes", .shards = 1, .nkeys = 400},
        {.name = "4 shards, values 0..2000 bytes", .shards = 4, .nkeys = 400},
        {.name = "2 shards, 8-byte inline values", .shards = 2, .value_len = 8, .nkeys = 1500},
    };
    const unsigned ncfg = sizeof cfgs / sizeof cfgs[0];
    g_seed = t_env_u64("ARMDB_SEED", 8675309);
    g_enc = t_env_u64("ARMDB_TEST_ENCRYPT", 0) != 0;
    uint64_t rounds = t_env_u64("ARMDB_CORRUPT_ROUNDS", DEFAULT_ROUNDS);
    uint64_t only = t_env_u64("ARMDB_CORRUPT_ROUND", UINT64_MAX);
    g_keep = t_env_u64("ARMDB_CORRUPT_KEEP", 0) != 0;
    g_tally = mmap(NULL, sizeof *g_tally, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(g_tally != MAP_FAILED);
    memset(g_tally, 0, sizeof *g_tally);
    g_base = t_tmpdir("corrupt-damage");

    /* Each reference store reads back clean, and a stale model is caught. */
    char *rdir = t_path(g_base, "round");
    for (unsigned n = 0; n < ncfg; n++) {
        struct config *c = &cfgs[n];
        build_reference(c, g_base, n);
        struct round r = {.no = UINT64_MAX, .c = c, .expect = X_EXACT, .rdonly = {true, false}};
        r.dir = rdir;
        t_rmtree(rdir);
        t_copy_tree(c->store, rdir);
        snprintf(r.desc, sizeof r.desc, "reference store, undamaged");
        allow_model(c);
        CHECK(run_check(&r) == 0);
        unsigned stale = 0;
        while (stale < c->nkeys && !(c->model[stale].live && c->model[stale].ver >= 2))
            stale++;
        CHECK(stale < c->nkeys);
        g_allow[stale].s[0].ver--;
        r.quiet = true;
        CHECK(run_check(&r) == 1);
    }

    uint64_t per_type[F_NTYPES] = {0}, unchanged = 0, failed = 0, ran = 0;
    for (uint64_t no = only == UINT64_MAX ? 0 : only; no < (only == UINT64_MAX ? rounds : only + 1); no++) {
        uint64_t rng = g_seed ^ (0x5851f42d4c957f2dull * (no + 1));
        t_rand(&rng);
        struct round r = {.no = no, .dir = rdir};
        r.c = &cfgs[t_rand(&rng) % ncfg];
        unsigned roll = (unsigned)(t_rand(&rng) % 100);
        r.type = roll < 15 ? F_TORN : roll < 55 ? F_DATA : roll < 88 ? F_HINT : F_META;
        r.rdonly[0] = t_rand(&rng) % 3 == 0;
        r.rdonly[1] = t_rand(&rng) % 4 == 0;
        if (g_enc && r.type == F_DATA && t_rand(&rng) % 5 < 2)
            r.type = F_TAGS; /* the slots of a data file's pages */
        allow_model(r.c);
        t_rmtree(rdir);
        t_copy_tree(r.c->store, rdir);
        ran++;
        per_type[r.type]++;
        if (r.type == F_TORN) {
            r.expect = X_TORN;
            if (!prepare_torn(&r, &rng)) {
                failed++;
                g_tally->failures++;
                continue;
            }
        } else {
            prepare_damage(&r, &rng);
        }
        unchanged += !r.changed;
        if (g_keep) {
            char name[48];
            snprintf(name, sizeof name, "damaged-%" PRIu64, no);
            char *p = t_path(g_base, name);
            t_copy_tree(rdir, p);
            free(p);
        }
        int rc = run_check(&r);
        if (rc) {
            fprintf(stderr,
                    "corrupt_damage: round %" PRIu64 " failed [%s: %s]; replay with ARMDB_SEED=%" PRIu64
                    " ARMDB_CORRUPT_ROUND=%" PRIu64 "\n",
                    no, r.c->name, r.desc, g_seed, no);
            failed++;
            g_tally->failures++;
        }
        if (g_keep)
            keep_damaged(&r, rc != 0);
    }
    char tags[48] = "";
    if (g_enc)
        snprintf(tags, sizeof tags, ", tags %" PRIu64, per_type[F_TAGS]);
    printf("corrupt_damage: %sseed %" PRIu64 ", %" PRIu64 " rounds (data %" PRIu64 "%s, hint %" PRIu64
           ", meta %" PRIu64 ", torn %" PRIu64 "; %" PRIu64 " left no byte changed): %" PRIu64
           " opens failed cleanly, %" PRIu64 " gets and %" PRIu64 " iteration steps ARMDB_CORRUPT, %" PRIu64
           " files scanned, %" PRIu64 " torn bytes cut, %" PRIu64 " unsynced values read; %" PRIu64
           " rounds failed\n",
           g_enc ? "encrypted stores, " : "", g_seed, ran, per_type[F_DATA], tags, per_type[F_HINT],
           per_type[F_META], per_type[F_TORN], unchanged,
           g_tally->open_failed, g_tally->get_corrupt, g_tally->iter_corrupt, g_tally->files_scanned,
           g_tally->torn_bytes, g_tally->later_values, failed);
    free(rdir);
    if (!failed || !g_keep)
        t_rmtree(g_base);
    else
        fprintf(stderr, "corrupt_damage: failed rounds' stores kept under %s\n", g_base);
    free(g_base);
    for (unsigned n = 0; n < ncfg; n++) {
        free(cfgs[n].store);
        for (unsigned f = 0; f < cfgs[n].ndata; f++)
            free(cfgs[n].data[f]);
        for (unsigned f = 0; f < cfgs[n].nhint; f++)
            free(cfgs[n].hint[f]);
        for (unsigned f = 0; f < cfgs[n].ntags; f++)
            free(cfgs[n].tags[f]);
    }
    munmap(g_tally, sizeof *g_tally);
    return failed ? 1 : 0;
}
