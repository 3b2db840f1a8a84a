/*
 * feed.c - the change feed: every entry (put or tombstone) with a GSN above
 * a given one, in GSN order across shards, read from the data files.
 *
 * The open takes a cut: with every shard locked at once it notes the
 * store's largest GSN (the feed's end), references every data file that
 * holds an entry above `since`, and copies the bytes of each active file
 * that are still in memory. No write is half in the cut (a write appends
 * its entry before it lets go of its shard; a batch holds all of its
 * shards), so the feed is exactly the entries in (since, end], whatever is
 * written, rotated or compacted while it is read.
 *
 * Each file is one run. Its entries in range are loaded only when the
 * merge reaches the file's smallest GSN (from its hint when it has a valid
 * one, else by a scan), so a feed over a long history holds the entries of
 * the files that overlap where it is, not of all of them, and files whose
 * largest GSN is at or below `since` are never read. Within a file entries
 * are in GSN order when one writer appended them, and compaction copies
 * them in file order; a run is sorted anyway if it is not. A heap merges
 * the runs. An entry met twice (a compaction cut short by a crash leaves
 * its source and its output with the same entries) is handed out once.
 * Entries are read through a window of 1 MiB per run (pages opened in a
 * sealed file; the active file's tail from the copy taken at the cut),
 * not one read per entry, and not through the block cache: a feed is a
 * sequential read that should neither wait on small reads nor evict what
 * gets need.
 *
 * What compaction drops: overwritten values (the newer one is in the feed,
 * so a consumer still ends at the right state) and tombstones that no
 * older entry of their key needs any more. A consumer that has applied the
 * store up to `since` may still hold such a key, so a feed from below the
 * largest dropped tombstone (the horizon, kept in the DURABLE file) is
 * refused with ARMDB_COMPACTED; from 0 it is always complete, since a
 * tombstone is dropped only with every older version of its key.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#define FENT_HDR 16u /* gsn u64 (flags kept), value offset u32, value length u32; then the key */
#define WIN (1u << 20) /* bytes a run reads ahead */

struct frun {
    struct shard *sh;
    struct dfile *f;         /* referenced until the run is done */
    uint64_t lim;            /* bytes of f in the cut */
    uint64_t lo;             /* f's smallest GSN, and whether it had a hint, at the cut */
    bool hinted;
    unsigned char *mem;      /* active files: their bytes from mem_off to lim, copied at the open */
    uint64_t mem_off;
    bool loaded;
    unsigned char *ents;     /* loaded: the entries in range, FENT_HDR + key each, in GSN order */
    uint32_t n, i, cap;
    /* a window of f read ahead (pages opened in sealed files): entries
     * come out in file order, so one read serves many */
    unsigned char *win;
    size_t win_cap, win_len;
    uint64_t win_off;
};

struct armdb_changes {
    armdb *db;
    uint64_t since, end;
    unsigned flags;
    uint32_t stride;
    struct frun *runs;
    uint32_t nruns;
    uint32_t *heap, nheap;
    uint64_t last;            /* the GSN taken last: nothing at or below it again */
    unsigned char *entry;     /* the entry handed out */
    size_t entry_cap;
};

static uint64_t run_key(const armdb_changes *c, const struct frun *r)
{
    if (!r->loaded)
        return r->lo;
    return get_le64(r->ents + (size_t)r->i * c->stride) & GSN_MASK;
}

/* Does run a come before run b? At equal GSNs an unloaded run first, so
 * that a copy of the same entry in it is met while it is still adjacent. */
static bool run_before(const armdb_changes *c, uint32_t a, uint32_t b)
{
    uint64_t ka = run_key(c, &c->runs[a]), kb = run_key(c, &c->runs[b]);
    if (ka != kb)
        return ka < kb;
    return !c->runs[a].loaded && c->runs[b].loaded;
}

static void heap_down(armdb_changes *c, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->nheap && run_before(c, c->heap[l], c->heap[m]))
            m = l;
        if (r < c->nheap && run_before(c, c->heap[r], c->heap[m]))
            m = r;
        if (m == i)
            return;
        uint32_t t = c->heap[i];
        c->heap[i] = c->heap[m];
        c->heap[m] = t;
        i = m;
    }
}

static void heap_pop(armdb_changes *c)
{
    c->heap[0] = c->heap[--c->nheap];
    heap_down(c, 0);
}

static void run_free(struct frun *r)
{
    free(r->ents);
    free(r->mem);
    free(r->win);
    r->ents = r->mem = r->win = NULL;
    if (r->f)
        dfile_unref(r->f);
    r->f = NULL;
}

/* ---- loading a run ---- */

struct load_ctx {
    armdb_changes *c;
    struct frun *r;
};

static int load_entry(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                      const unsigned char *value)
{
    (void)value;
    struct load_ctx *lc = vctx;
    armdb_changes *c = lc->c;
    struct frun *r = lc->r;
    uint64_t g = gsn & GSN_MASK;
    if (g <= c->since || g > c->end)
        return 0;
    /* Members of a batch that never applied are not changes. */
    if ((gsn & GSN_BATCH) && batch_aborted(c->db, gsn))
        return 0;
    if (r->n == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 256;
        unsigned char *p = realloc(r->ents, (size_t)cap * c->stride);
        if (!p)
            return -ENOMEM;
        r->ents = p;
        r->cap = cap;
    }
    unsigned char *e = r->ents + (size_t)r->n++ * c->stride;
    put_le64(e, gsn);
    put_le32(e + 8, voff);
    put_le32(e + 12, vlen);
    memcpy(e + FENT_HDR, key, c->db->key_len);
    return 0;
}

static int by_gsn(const void *a, const void *b)
{
    uint64_t x = get_le64(a) & GSN_MASK, y = get_le64(b) & GSN_MASK;
    return x < y ? -1 : x > y;
}

static int run_load(armdb_changes *c, struct frun *r)
{
    armdb *db = c->db;
    struct shard *sh = r->sh;
    struct dfile *f = r->f;
    struct load_ctx lc = {.c = c, .r = r};
    int rc = 1;
    if (r->hinted && !r->mem) {
        struct pagekey hpk;
        uint64_t data_len;
        rc = hint_load(sh->dirfd, f->id, db->key_len, db->value_len, &data_len, hint_pk(f, &hpk), load_entry, &lc);
        if (rc > 0)
            r->n = 0; /* no valid hint after all: scan */
    }
    if (rc > 0) {
        struct scan_result res;
        rc = scan_file_mem(f->fd, f->pk.cr ? f : NULL, r->lim, r->mem, r->mem_off, db->key_len, db->vmax,
                           MAX_WBUF - WBUF_SLACK, false, load_entry, &lc, &res);
    }
    if (rc < 0)
        return err_set(rc, "read the changes in %s/%08u.data", sh->path, f->id);
    for (uint32_t i = 1; i < r->n; i++) {
        if (by_gsn(r->ents + (size_t)(i - 1) * c->stride, r->ents + (size_t)i * c->stride) > 0) {
            qsort(r->ents, r->n, c->stride, by_gsn);
            break;
        }
    }
    r->loaded = true;
    r->i = 0;
    return 0;
}

/* ---- the open: a cut of every shard ---- */

static int add_run(armdb_changes *c, struct shard *sh, struct dfile *f)
{
    struct frun *r = &c->runs[c->nruns];
    *r = (struct frun){.sh = sh, .f = f, .lim = f->size, .lo = f->min_gsn, .hinted = f->has_hint};
    if (f == sh->active && sh->wb.buf && !sh->ss) {
        uint64_t base = wbuf_mem_base(&sh->wb);
        if (base < f->size) {
            if (!(r->mem = malloc((size_t)(f->size - base))))
                return -ENOMEM;
            wbuf_read(&sh->wb, base, r->mem, (size_t)(f->size - base));
            r->mem_off = base;
        }
    }
    dfile_ref(f);
    c->heap[c->nheap++] = c->nruns++;
    return 0;
}

/* The cut of shards [s0, s1): all of them locked at once. */
static int take_cut(armdb_changes *c, uint32_t s0, uint32_t s1)
{
    armdb *db = c->db;
    int rc = 0;
    for (uint32_t s = s0; s < s1; s++)
        pthread_mutex_lock(&db->shards[s].mu);
    /* Each shard's horizon: a feed of one shard is not refused for a
     * tombstone another shard dropped. */
    uint64_t horizon = 0;
    uint32_t files = 0;
    for (uint32_t s = s0; s < s1; s++) {
        uint64_t h = atomic_load(&db->shards[s].dropped_gsn);
        horizon = h > horizon ? h : horizon;
        files += db->shards[s].nfiles;
    }
    if (c->since && c->since < horizon) {
        rc = err_set(ARMDB_COMPACTED, "%s: the changes since GSN %llu are not all kept: compaction removed a "
                     "delete of GSN %llu", db->dir, (unsigned long long)c->since, (unsigned long long)horizon);
        goto out;
    }
    c->end = atomic_load(&db->max_gsn);
    if (files && (!(c->runs = calloc(files, sizeof *c->runs)) || !(c->heap = calloc(files, sizeof *c->heap)))) {
        rc = err_set(-ENOMEM, "read the changes of %s", db->dir);
        goto out;
    }
    for (uint32_t s = s0; s < s1 && rc == 0; s++) {
        struct shard *sh = &db->shards[s];
        for (uint32_t i = 0; i < sh->nfiles && rc == 0; i++) {
            struct dfile *f = sh->files[i];
            if (f->min_gsn && f->max_gsn > c->since && f->min_gsn <= c->end && f->size)
                rc = add_run(c, sh, f);
        }
    }
    if (rc < 0)
        rc = err_set(rc, "read the changes of %s", db->dir);
out:
    for (uint32_t s = s1; s-- > s0;)
        pthread_mutex_unlock(&db->shards[s].mu);
    return rc;
}

static int changes_open(armdb *db, uint32_t s0, uint32_t s1, uint64_t since, unsigned flags, armdb_changes **out)
{
    *out = NULL;
    int rc = db_check_shared(db, "change feeds");
    if (rc < 0)
        return rc;
    if (flags & ~(unsigned)ARMDB_CHANGES_LIVE)
        return err_set(ARMDB_INVAL, "armdb_changes_open: unknown flags 0x%x", flags & ~(unsigned)ARMDB_CHANGES_LIVE);
    if (since > GSN_MASK)
        return err_set(ARMDB_INVAL, "armdb_changes_open: since %llu is past the largest GSN",
                       (unsigned long long)since);
    armdb_changes *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(-ENOMEM, "read the changes of %s", db->dir);
    c->db = db;
    c->since = since;
    c->flags = flags;
    c->stride = (uint32_t)round_up(FENT_HDR + db->key_len, 8);
    rc = take_cut(c, s0, s1);
    if (rc < 0) {
        armdb_changes_close(c);
        return rc;
    }
    for (uint32_t i = c->nheap / 2; i-- > 0;)
        heap_down(c, i);
    *out = c;
    return 0;
}

API int armdb_changes_open(armdb *db, uint64_t since, unsigned flags, armdb_changes **out)
{
    if (!db || !out)
        return err_set(ARMDB_INVAL, "armdb_changes_open: %s is NULL", db ? "out" : "db");
    return changes_open(db, 0, db->nshards, since, flags, out);
}

API int armdb_changes_open_shard(armdb *db, uint32_t shard, uint64_t since, unsigned flags, armdb_changes **out)
{
    if (!db || !out)
        return err_set(ARMDB_INVAL, "armdb_changes_open_shard: %s is NULL", db ? "out" : "db");
    if (shard >= db->nshards)
        return err_set(ARMDB_INVAL, "armdb_changes_open_shard: shard %u of a store of %u", shard, db->nshards);
    return changes_open(db, shard, shard + 1, since, flags, out);
}

API uint64_t armdb_changes_end(const armdb_changes *c)
{
    return c ? c->end : 0;
}

/* ---- reading ---- */

/* Is the entry still its key's current version? */
static bool still_live(struct shard *sh, const unsigned char *key, uint64_t gsn)
{
    uint64_t h = key_hash(key, sh->db->key_len);
    pthread_mutex_lock(&sh->mu);
    int64_t r = index_find(&sh->ix, key, h);
    bool live = r >= 0 && (rec_gsn(index_rec(&sh->ix, (uint32_t)r)) & GSN_MASK) == (gsn & GSN_MASK);
    pthread_mutex_unlock(&sh->mu);
    return live;
}

/* Fill r's window from off on with at least need bytes: read from the
 * file (pages opened in a sealed one) up to mem_off, the rest from the
 * copy of the write buffer. */
static int window_fill(struct frun *r, uint64_t off, uint64_t need)
{
    size_t size = (size_t)round_up(need, PAGE);
    if (size < WIN)
        size = WIN;
    if (size > r->win_cap) {
        unsigned char *p = aligned_alloc_zero(size);
        if (!p)
            return -ENOMEM;
        free(r->win);
        r->win = p;
        r->win_cap = size;
    }
    uint64_t disk_end = r->mem ? r->mem_off : r->lim;
    size_t disk = off >= disk_end ? 0 : (size_t)(disk_end - off < size ? round_up(disk_end - off, PAGE) : size);
    ssize_t n = disk ? io_pread_full(r->f->fd, r->win, disk, off) : 0;
    if (n < 0)
        return (int)n;
    if (r->f->pk.cr && n) {
        uint32_t np = (uint32_t)(round_up((uint64_t)n, PAGE) / PAGE);
        if (n % PAGE)
            memset(r->win + n, 0, PAGE - (size_t)n % PAGE);
        uint32_t ok = dfile_unseal(r->f, off / PAGE, r->win, np);
        if (ok < np)
            n = (ssize_t)ok * PAGE; /* the entries of the pages before are good */
    }
    r->win_off = off;
    r->win_len = (size_t)n;
    if (r->mem && (size_t)n == disk && off + size > r->mem_off) {
        uint64_t from = off > r->mem_off ? off : r->mem_off;
        uint64_t to = off + size < r->lim ? off + size : r->lim;
        if (to > from) {
            memcpy(r->win + (from - off), r->mem + (from - r->mem_off), (size_t)(to - from));
            r->win_len = (size_t)(to - off);
        }
    }
    return 0;
}

/* Point *p at the entry of GSN gsn whose value is at voff in r's file,
 * verified. */
static int run_entry(armdb_changes *c, struct frun *r, uint64_t gsn, uint32_t voff, uint32_t vlen,
                     const unsigned char **p)
{
    uint32_t klen = c->db->key_len;
    uint64_t eoff = voff - ENTRY_HDR - klen, esize = entry_size(klen, vlen), end = eoff + esize;
    int rc = 0;
    if (end <= r->lim && (eoff < r->win_off || end > r->win_off + r->win_len || !r->win))
        rc = window_fill(r, round_down(eoff, PAGE), end - round_down(eoff, PAGE));
    if (rc < 0)
        return err_set(rc, "read %s/%08u.data", r->sh->path, r->f->id);
    const unsigned char *e = r->win ? r->win + (eoff - r->win_off) : NULL;
    if (end > r->lim || eoff < r->win_off || end > r->win_off + r->win_len || !entry_valid(e, klen, vlen, esize) ||
        get_le32(e + 4) != vlen || get_le64(e + 8) != gsn)
        return err_set(ARMDB_CORRUPT, "entry at %s/%08u.data offset %llu", r->sh->path, r->f->id,
                       (unsigned long long)eoff);
    *p = e;
    return 0;
}

/* Take the next entry of the run on top of the heap. */
static void run_advance(armdb_changes *c, struct frun *r)
{
    if (++r->i == r->n) {
        run_free(r);
        heap_pop(c);
    } else {
        heap_down(c, 0);
    }
}

API int armdb_changes_next(armdb_changes *c, armdb_change *out)
{
    if (!c || !out)
        return err_set(ARMDB_INVAL, "armdb_changes_next: %s is NULL", c ? "out" : "feed");
    armdb *db = c->db;
    uint32_t klen = db->key_len;
    while (c->nheap) {
        struct frun *r = &c->runs[c->heap[0]];
        if (!r->loaded) {
            int rc = run_load(c, r);
            if (rc < 0) {
                /* Handed out once; the feed goes on with the other files. */
                run_free(r);
                heap_pop(c);
                return rc;
            }
            if (r->n == 0) {
                run_free(r);
                heap_pop(c);
            } else {
                heap_down(c, 0);
            }
            continue;
        }
        const unsigned char *e = r->ents + (size_t)r->i * c->stride;
        uint64_t gsn = get_le64(e), g = gsn & GSN_MASK;
        uint32_t voff = get_le32(e + 8), vlen = get_le32(e + 12);
        if (g <= c->last || ((c->flags & ARMDB_CHANGES_LIVE) &&
                             ((gsn & GSN_TOMB) || !still_live(r->sh, e + FENT_HDR, gsn)))) {
            c->last = g > c->last ? g : c->last;
            run_advance(c, r);
            continue;
        }
        c->last = g;
        size_t esize = (size_t)entry_size(klen, vlen);
        if (esize > c->entry_cap) {
            unsigned char *p = realloc(c->entry, esize);
            if (!p)
                return err_set(-ENOMEM, "read the changes of %s", db->dir);
            c->entry = p;
            c->entry_cap = esize;
        }
        const unsigned char *p = NULL;
        int rc = run_entry(c, r, gsn, voff, vlen, &p);
        if (rc == 0)
            memcpy(c->entry, p, esize);
        run_advance(c, r);
        if (rc < 0)
            return rc;
        bool tomb = (gsn & GSN_TOMB) != 0;
        *out = (armdb_change){.key = c->entry + ENTRY_HDR, .klen = klen,
                              .val = tomb ? NULL : c->entry + ENTRY_HDR + klen, .vlen = vlen, .gsn = g,
                              .deleted = tomb};
        return 0;
    }
    return ARMDB_NOTFOUND;
}

API void armdb_changes_close(armdb_changes *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->nruns; i++)
        run_free(&c->runs[i]);
    free(c->runs);
    free(c->heap);
    free(c->entry);
    free(c);
}

API int armdb_changes_wait(armdb *db, uint64_t since, uint32_t timeout_ms)
{
    if (!db)
        return err_set(ARMDB_INVAL, "armdb_changes_wait: db is NULL");
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&db->feed_mu);
    atomic_fetch_add(&db->feed_waiters, 1);
    while (atomic_load(&db->max_gsn) <= since && rc == 0)
        if (pthread_cond_timedwait(&db->feed_cv, &db->feed_mu, &ts) == ETIMEDOUT)
            rc = atomic_load(&db->max_gsn) > since ? 0 : -ETIMEDOUT;
    atomic_fetch_sub(&db->feed_waiters, 1);
    pthread_mutex_unlock(&db->feed_mu);
    return rc;
}

API int armdb_shard_last_gsn(armdb *db, uint32_t shard, uint64_t *gsn)
{
    if (!db || !gsn || shard >= db->nshards)
        return err_set(ARMDB_INVAL, "armdb_shard_last_gsn: %s", !db || !gsn ? "NULL argument" : "no such shard");
    struct shard *sh = &db->shards[shard];
    uint64_t g = 0;
    pthread_mutex_lock(&sh->mu);
    for (uint32_t i = 0; i < sh->nfiles; i++)
        if (sh->files[i]->max_gsn > g)
            g = sh->files[i]->max_gsn;
    pthread_mutex_unlock(&sh->mu);
    *gsn = g;
    return 0;
}

API uint64_t armdb_last_gsn(armdb *db)
{
    return db ? atomic_load(&db->max_gsn) : 0;
}
