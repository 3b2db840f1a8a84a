/*
 * iter.c - scans.
 *
 * Unordered stores: the full scan, shard by shard, walking each shard's
 * record array by record number. Record numbers are stable (the hash table
 * may be rehashed, the records do not move), so the scan holds a shard's
 * lock only to copy one key and its location, and reads values on disk
 * after dropping it, like a get. A record freed and reused during the scan
 * is why a key deleted and re-inserted meanwhile may be seen twice.
 *
 * Ordered stores: each shard's ordered index is read a few keys at a time
 * under the shard's lock (from just past the last key read, so a key is
 * never seen twice and the lock is never held for long), and the shards are
 * merged in key order through a heap. Each key is looked up again when its
 * turn comes, so the value is the one current then, and a key deleted since
 * it was buffered is skipped.
 *
 * Snapshots (ARMDB_ITER_SNAPSHOT): with every shard locked at once, the
 * location of every key in range is copied (and inline values), and every
 * data file is pinned by a reference; values are read from those files
 * later, whatever was written, compacted or removed since. No write comes
 * between the shards' copies, so the view is the store at one moment:
 * a batch is in it whole or not at all.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

#define FILL_FIRST 4u     /* keys a shard buffers first: a short scan stays cheap */
#define FILL_BYTES 16384u /* most key bytes a shard buffers at a time */

struct scur {
    uint32_t shard;
    uint32_t n, i;  /* keys buffered; the next one to hand out */
    uint32_t want;  /* keys the next fill asks for (doubling up to cap) */
    bool started, done;
    unsigned char *keys;
    uint32_t *recs; /* the record of each key when buffered... */
    uint64_t *gsns; /* ...and its GSN then: unchanged, no lookup needed */
};

/* A snapshot entry: shard u32, value length u32, value offset u32, 4
 * spare, GSN u64, file pointer, key, inline value. */
#define SNAP_KEY 32u

struct snapshot {
    unsigned char *buf;
    size_t len, cap;
    uint32_t stride;
    uint64_t n, next; /* entries; how many handed out */
    struct dfile **pins;
    uint32_t npins;
};

struct armdb_iter {
    armdb *db;
    uint32_t klen;
    struct snapshot *snap;
    /* unordered: the shard and record to look at next */
    uint32_t shard;
    uint32_t rec;
    /* ordered */
    bool ordered, reverse, prefix;
    const unsigned char *lo, *hi; /* into bounds; NULL: unbounded */
    uint32_t lolen, hilen;
    uint32_t cap; /* keys per shard buffer */
    struct scur *cur;
    uint32_t *heap, nheap;
    unsigned char *bounds;
    /* the pair handed out */
    unsigned char key[ARMDB_KEY_MAX];
    unsigned char *val;
    size_t val_cap;
    const unsigned char *inline_val; /* a snapshot's inline value, handed out instead of val */
};

/* ---- ordered scans ---- */

/* Is key within the scan's far bound (the one the scan moves towards)? */
static bool in_range(const armdb_iter *it, const unsigned char *key)
{
    if (it->prefix)
        return memcmp(key, it->lo, it->lolen) == 0;
    if (!it->reverse)
        return !it->hi || key_bound_cmp(key, it->klen, it->hi, it->hilen, false) < 0;
    return !it->lo || key_bound_cmp(key, it->klen, it->lo, it->lolen, false) >= 0;
}

/* The position of the scan's first key in t: lowest at or above lo, or
 * highest below hi (or within the prefix). */
static bool seek_start(const armdb_iter *it, const struct otree *t, const struct index *ix, struct opos *pos)
{
    if (!it->reverse)
        return it->lo ? otree_seek(t, ix, it->lo, it->lolen, it->prefix, false, pos) : otree_first(t, pos);
    const unsigned char *b = it->prefix ? it->lo : it->hi;
    uint32_t blen = it->prefix ? it->lolen : it->hilen;
    if (!b)
        return otree_last(t, pos);
    /* The key before the first one past the bound; the last if none is. */
    if (otree_seek(t, ix, b, blen, it->prefix, it->prefix, pos))
        return otree_prev(t, pos);
    return otree_last(t, pos);
}

/* Buffer the shard's next keys in scan order. */
static void fill(armdb_iter *it, struct scur *c)
{
    struct shard *sh = &it->db->shards[c->shard];
    uint32_t klen = it->klen;
    unsigned char last[ARMDB_KEY_MAX];
    if (c->started)
        memcpy(last, c->keys + (size_t)(c->n - 1) * klen, klen);
    pthread_mutex_lock(&sh->mu);
    /* (Shared mode: what other processes wrote; if that fails, the keys
     * as this process knows them.) */
    (void)shard_refresh(sh);
    const struct otree *t = &sh->ot;
    const struct index *ix = &sh->ix;
    struct opos pos;
    bool ok;
    if (!c->started)
        ok = seek_start(it, t, ix, &pos);
    else if (!it->reverse)
        ok = otree_seek(t, ix, last, klen, false, true, &pos);
    else
        ok = otree_seek(t, ix, last, klen, false, false, &pos) ? otree_prev(t, &pos) : otree_last(t, &pos);
    uint32_t n = 0;
    while (ok && n < c->want) {
        const unsigned char *key = index_rec(ix, otree_rec(t, &pos)) + REC_KEY;
        if (!in_range(it, key))
            break;
        uint32_t r = otree_rec(t, &pos);
        c->recs[n] = r;
        c->gsns[n] = rec_gsn(index_rec(ix, r));
        memcpy(c->keys + (size_t)n++ * klen, key, klen);
        ok = it->reverse ? otree_prev(t, &pos) : otree_next(t, &pos);
    }
    pthread_mutex_unlock(&sh->mu);
    c->done = n < c->want;
    c->started = true;
    c->n = n;
    c->i = 0;
    if (c->want < it->cap)
        c->want = c->want * 2 < it->cap ? c->want * 2 : it->cap;
}

static inline const unsigned char *cur_key(const armdb_iter *it, const struct scur *c)
{
    return c->keys + (size_t)c->i * it->klen;
}

/* Does cursor a come before cursor b in scan order? */
static bool before(const armdb_iter *it, uint32_t a, uint32_t b)
{
    int c = memcmp(cur_key(it, &it->cur[a]), cur_key(it, &it->cur[b]), it->klen);
    return it->reverse ? c > 0 : c < 0;
}

static void sift_down(armdb_iter *it, uint32_t i)
{
    uint32_t *h = it->heap;
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < it->nheap && before(it, h[l], h[m]))
            m = l;
        if (r < it->nheap && before(it, h[r], h[m]))
            m = r;
        if (m == i)
            return;
        uint32_t tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
}

static int open_ordered(armdb_iter *it)
{
    armdb *db = it->db;
    uint32_t cap = FILL_BYTES / it->klen;
    it->cap = cap < FILL_FIRST ? FILL_FIRST : cap;
    it->cur = calloc(db->nshards, sizeof *it->cur);
    it->heap = calloc(db->nshards, sizeof *it->heap);
    if (!it->cur || !it->heap)
        return -ENOMEM;
    for (uint32_t s = 0; s < db->nshards; s++) {
        struct scur *c = &it->cur[s];
        c->shard = s;
        c->want = FILL_FIRST;
        if (!(c->keys = malloc((size_t)it->cap * it->klen)) || !(c->recs = malloc((size_t)it->cap * 4)) ||
            !(c->gsns = malloc((size_t)it->cap * 8)))
            return -ENOMEM;
        fill(it, c);
        if (c->n)
            it->heap[it->nheap++] = s;
    }
    for (uint32_t i = it->nheap / 2; i-- > 0;)
        sift_down(it, i);
    return 0;
}

/* Room for a value of vl bytes in it->val. */
static int val_room(armdb_iter *it, uint32_t vl)
{
    if (vl <= it->val_cap)
        return 0;
    unsigned char *p = realloc(it->val, vl);
    if (!p)
        return -ENOMEM;
    it->val = p;
    it->val_cap = vl;
    return 0;
}

static int next_ordered(armdb_iter *it, size_t *vlen)
{
    armdb *db = it->db;
    while (it->nheap) {
        struct scur *c = &it->cur[it->heap[0]];
        memcpy(it->key, cur_key(it, c), it->klen);
        uint32_t hint_rec = c->recs[c->i];
        uint64_t hint_gsn = c->gsns[c->i];
        if (++c->i == c->n && !c->done)
            fill(it, c);
        if (c->i == c->n) /* this shard is done */
            it->heap[0] = it->heap[--it->nheap];
        sift_down(it, 0);

        struct shard *sh = &db->shards[c->shard];
        pthread_mutex_lock(&sh->mu);
        /* GSNs are never reused: the same GSN is the same entry of the
         * same key. Else the key was written or deleted since. */
        int64_t r = hint_rec < sh->ix.nrecs && rec_gsn(index_rec(&sh->ix, hint_rec)) == hint_gsn
                        ? (int64_t)hint_rec
                        : index_find(&sh->ix, it->key, key_hash(it->key, it->klen));
        if (r < 0) { /* deleted since it was buffered */
            pthread_mutex_unlock(&sh->mu);
            continue;
        }
        const unsigned char *rec = index_rec(&sh->ix, (uint32_t)r);
        uint32_t vl = rec_u32(rec, REC_VLEN);
        if (val_room(it, vl) < 0) {
            pthread_mutex_unlock(&sh->mu);
            return err_set(-ENOMEM, "iterate %s", db->dir);
        }
        *vlen = vl;
        return shard_read_unlock(sh, rec, it->key, it->val, false);
    }
    return ARMDB_NOTFOUND;
}

/* ---- snapshots ---- */

static int snap_add(armdb_iter *it, uint32_t shard, const unsigned char *rec, struct dfile *f)
{
    struct snapshot *sn = it->snap;
    if (sn->len + sn->stride > sn->cap) {
        size_t cap = sn->cap ? sn->cap * 2 : (size_t)sn->stride * 256;
        unsigned char *b = realloc(sn->buf, cap);
        if (!b)
            return -ENOMEM;
        sn->buf = b;
        sn->cap = cap;
    }
    unsigned char *e = sn->buf + sn->len;
    uint32_t voff = rec_u32(rec, REC_VOFF), vlen = rec_u32(rec, REC_VLEN);
    uint64_t gsn = rec_gsn(rec);
    memcpy(e, &shard, 4);
    memcpy(e + 4, &vlen, 4);
    memcpy(e + 8, &voff, 4);
    memcpy(e + 16, &gsn, 8);
    memcpy(e + 24, &f, sizeof f);
    memcpy(e + SNAP_KEY, rec + REC_KEY, it->klen + it->db->value_len);
    sn->len += sn->stride;
    sn->n++;
    return 0;
}

/* With every shard locked: pin the shard's files, copy its entries in
 * range (in key order for an ordered store). */
static int snap_shard(armdb_iter *it, uint32_t s)
{
    struct shard *sh = &it->db->shards[s];
    struct snapshot *sn = it->snap;
    struct dfile **p = realloc(sn->pins, (sn->npins + sh->nfiles) * sizeof *p);
    if (!p)
        return -ENOMEM;
    sn->pins = p;
    for (uint32_t i = 0; i < sh->nfiles; i++) {
        dfile_ref(sh->files[i]);
        sn->pins[sn->npins++] = sh->files[i];
    }
    const struct index *ix = &sh->ix;
    int rc = 0;
    if (!it->ordered) {
        for (uint32_t r = 0; r < ix->nrecs && rc == 0; r++) {
            const unsigned char *rec = index_rec(ix, r);
            if (rec_gsn(rec))
                rc = snap_add(it, s, rec, shard_file(sh, rec_u32(rec, REC_FILE)));
        }
        return rc;
    }
    /* Ascending from the low bound; a reverse scan walks the result back. */
    bool rev = it->reverse;
    it->reverse = false;
    struct opos pos;
    for (bool ok = seek_start(it, &sh->ot, ix, &pos); ok && rc == 0; ok = otree_next(&sh->ot, &pos)) {
        const unsigned char *rec = index_rec(ix, otree_rec(&sh->ot, &pos));
        if (!in_range(it, rec + REC_KEY))
            break;
        rc = snap_add(it, s, rec, shard_file(sh, rec_u32(rec, REC_FILE)));
    }
    it->reverse = rev;
    return rc;
}

static int snap_cmp(const void *a, const void *b, void *klen)
{
    return memcmp((const unsigned char *)a + SNAP_KEY, (const unsigned char *)b + SNAP_KEY, *(uint32_t *)klen);
}

static int open_snapshot(armdb_iter *it)
{
    armdb *db = it->db;
    if (!(it->snap = calloc(1, sizeof *it->snap)))
        return -ENOMEM;
    it->snap->stride = (uint32_t)round_up(SNAP_KEY + it->klen + db->value_len, 8);
    for (uint32_t s = 0; s < db->nshards; s++)
        pthread_mutex_lock(&db->shards[s].mu);
    /* Shared mode: every shard's shared mutex too, and caught up, for one
     * point in time across the processes. */
    int rc = 0;
    uint32_t held = 0;
    for (; held < db->nshards && rc == 0 && db->shared; held++)
        if ((rc = shard_write_begin(&db->shards[held])) < 0)
            break;
    for (uint32_t s = 0; s < db->nshards && rc == 0; s++)
        rc = snap_shard(it, s);
    for (uint32_t s = held; s-- > 0;)
        shared_unlock_shard(&db->shards[s]);
    for (uint32_t s = db->nshards; s-- > 0;)
        pthread_mutex_unlock(&db->shards[s].mu);
    if (rc == 0 && it->ordered)
        qsort_r(it->snap->buf, it->snap->n, it->snap->stride, snap_cmp, &it->klen);
    return rc;
}

static int next_snapshot(armdb_iter *it, size_t *vlen)
{
    struct snapshot *sn = it->snap;
    if (sn->next == sn->n)
        return ARMDB_NOTFOUND;
    uint64_t i = it->reverse ? sn->n - 1 - sn->next : sn->next;
    sn->next++;
    const unsigned char *e = sn->buf + i * sn->stride;
    uint32_t shard, vl, voff;
    uint64_t gsn;
    struct dfile *f;
    memcpy(&shard, e, 4);
    memcpy(&vl, e + 4, 4);
    memcpy(&voff, e + 8, 4);
    memcpy(&gsn, e + 16, 8);
    memcpy(&f, e + 24, sizeof f);
    memcpy(it->key, e + SNAP_KEY, it->klen);
    *vlen = vl;
    if (it->db->value_len) {
        it->inline_val = e + SNAP_KEY + it->klen;
        return 0;
    }
    if (val_room(it, vl) < 0)
        return err_set(-ENOMEM, "iterate %s", it->db->dir);
    if (!f) /* cannot happen: the index named a listed file */
        return err_set(ARMDB_CORRUPT, "%s: a snapshot entry without its file", it->db->dir);
    struct shard *sh = &it->db->shards[shard];
    pthread_mutex_lock(&sh->mu);
    return shard_read_at_unlock(sh, f, gsn, voff, vl, it->key, it->val);
}

static void close_snapshot(struct snapshot *sn)
{
    if (!sn)
        return;
    for (uint32_t i = 0; i < sn->npins; i++)
        dfile_unref(sn->pins[i]);
    free(sn->pins);
    free(sn->buf);
    free(sn);
}

/* ---- the unordered full scan ---- */

static int next_unordered(armdb_iter *it, size_t *vlen)
{
    armdb *db = it->db;
    for (; it->shard < db->nshards; it->shard++, it->rec = 0) {
        struct shard *sh = &db->shards[it->shard];
        pthread_mutex_lock(&sh->mu);
        (void)shard_refresh(sh); /* (shared mode, as in fill) */
        while (it->rec < sh->ix.nrecs) {
            const unsigned char *rec = index_rec(&sh->ix, it->rec++);
            if (rec_gsn(rec) == 0)
                continue;
            uint32_t vl = rec_u32(rec, REC_VLEN);
            if (val_room(it, vl) < 0) {
                pthread_mutex_unlock(&sh->mu);
                it->rec--;
                return err_set(-ENOMEM, "iterate %s", db->dir);
            }
            memcpy(it->key, rec + REC_KEY, it->klen);
            /* A scan does not fill the block cache: it would push out the
             * pages that point reads keep coming back to. */
            *vlen = vl;
            return shard_read_unlock(sh, rec, it->key, it->val, false);
        }
        pthread_mutex_unlock(&sh->mu);
    }
    return ARMDB_NOTFOUND;
}

/* ---- the API ---- */

API int armdb_iter_open(armdb *db, const void *lo, size_t lolen, const void *hi, size_t hilen, unsigned flags,
                        armdb_iter **out)
{
    if (!db || !out)
        return err_set(ARMDB_INVAL, "store handle and out must not be NULL");
    *out = NULL;
    bool ordered = db->meta.flags & META_ORDERED;
    const unsigned known = ARMDB_ITER_REVERSE | ARMDB_ITER_PREFIX | ARMDB_ITER_SNAPSHOT;
    if (flags & ~known)
        return err_set(ARMDB_INVAL, "flags: unknown bits 0x%x", flags & ~known);
    if ((lo || hi || (flags & ~(unsigned)ARMDB_ITER_SNAPSHOT)) && !ordered)
        return err_set(ARMDB_INVAL, "range, prefix and reverse scans need an ordered store (ARMDB_ORDERED); %s is not",
                       db->dir);
    if (lo && lolen > db->key_len)
        return err_set(ARMDB_INVAL, "lo: %zu bytes, longer than the key length %u", lolen, db->key_len);
    if (hi && hilen > db->key_len)
        return err_set(ARMDB_INVAL, "hi: %zu bytes, longer than the key length %u", hilen, db->key_len);
    if ((flags & ARMDB_ITER_PREFIX) && (!lo || hi))
        return err_set(ARMDB_INVAL, "ARMDB_ITER_PREFIX: the prefix goes in lo, and hi must be NULL");
    armdb_iter *it = calloc(1, sizeof *it);
    if (!it)
        return err_set(-ENOMEM, "open an iterator on %s", db->dir);
    it->db = db;
    it->klen = db->key_len;
    it->ordered = ordered;
    if (ordered || (flags & ARMDB_ITER_SNAPSHOT)) {
        it->reverse = flags & ARMDB_ITER_REVERSE;
        it->prefix = flags & ARMDB_ITER_PREFIX;
        it->bounds = malloc((lo ? lolen : 0) + (hi ? hilen : 0) + 1);
        if (!it->bounds) {
            armdb_iter_close(it);
            return err_set(-ENOMEM, "open an iterator on %s", db->dir);
        }
        if (lo) {
            memcpy(it->bounds, lo, lolen);
            it->lo = it->bounds;
            it->lolen = (uint32_t)lolen;
        }
        if (hi) {
            memcpy(it->bounds + it->lolen, hi, hilen);
            it->hi = it->bounds + it->lolen;
            it->hilen = (uint32_t)hilen;
        }
        if (((flags & ARMDB_ITER_SNAPSHOT) ? open_snapshot(it) : open_ordered(it)) < 0) {
            armdb_iter_close(it);
            return err_set(-ENOMEM, "open an iterator on %s", db->dir);
        }
    }
    *out = it;
    return 0;
}

API int armdb_iter_next(armdb_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen)
{
    if (!it || !key || !klen || !val || !vlen)
        return err_set(ARMDB_INVAL, "iterator and out pointers must not be NULL");
    it->inline_val = NULL;
    int rc = it->snap ? next_snapshot(it, vlen) : it->ordered ? next_ordered(it, vlen) : next_unordered(it, vlen);
    if (rc == ARMDB_NOTFOUND || rc == -ENOMEM)
        return rc;
    *key = it->key;
    *klen = it->klen;
    *val = it->inline_val ? it->inline_val : it->val;
    return rc;
}

API void armdb_iter_close(armdb_iter *it)
{
    if (!it)
        return;
    if (it->cur)
        for (uint32_t s = 0; s < it->db->nshards; s++)
            free(it->cur[s].keys), free(it->cur[s].recs), free(it->cur[s].gsns);
    close_snapshot(it->snap);
    free(it->cur);
    free(it->heap);
    free(it->bounds);
    free(it->val);
    free(it);
}
