/*
 * compact.c - reclaiming the space of overwritten and deleted entries.
 *
 * Every file counts the bytes of the entries the index points at (`live`)
 * and of its tombstones (`tomb`); the rest of its size is garbage. A file
 * whose reclaimable share reaches compaction_threshold is rewritten: its
 * live entries, byte for byte with their original GSN, go into a new file
 * with a fresh id, and the old file is removed. One file at a time, per
 * shard:
 *
 *  1. Under the shard lock: the file is claimed, the output's id taken.
 *  2. Without the lock: the old file is scanned. For each entry the lock is
 *     taken just long enough to look the key up; a live entry (the index
 *     points at exactly this file, offset and GSN) is appended to
 *     `NNNNNNNN.compact.tmp`, and a tombstone is kept while any other file
 *     might hold an older version of its key (a file whose smallest GSN is
 *     below the tombstone's), so a deleted key never comes back.
 *  3. A barrier makes every write so far durable: an entry found dead in
 *     step 2 may be dead only because of a newer write not yet synced,
 *     and it must not go before that write is safe.
 *     The output is written and fdatasynced, its hint written, and then
 *     it is renamed to `NNNNNNNN.data` and the directory fsynced: an
 *     output never exists without its hint, so recovery's newest file
 *     without a hint is still the one that was being appended to, the only
 *     one that may end in a torn write. A file whose hint the background
 *     thread is writing is left for later, and a hint job for a file being
 *     compacted or gone is skipped: no hint outlives its data file.
 *  4. Under the lock, in steps of MOVE_STEP records: each record that still
 *     names the old entry (same GSN, file and offset) is pointed at the
 *     copy; a record overwritten or deleted meanwhile is left alone.
 *  5. If nothing live is left in the old file, it leaves the shard's file
 *     list and is unlinked, hint first. Readers that took its location
 *     before hold a reference, so their descriptor stays valid; the kernel
 *     frees the blocks when the last one closes it. Block cache names carry
 *     the file id, which is never reused, so no stale block is ever served.
 *
 * A crash at any step leaves either the old file alone (the .tmp output,
 * and its hint if it got one, are removed at the next open), or both
 * files with identical entries (the same GSNs, so either copy wins), or
 * the output alone. An entry of the old file that cannot be read (damage)
 * stays live there, and the old file is then kept rather than lose it.
 *
 * The lock is never held for compaction I/O, so foreground calls wait at
 * most one index lookup or one step of record moves.
 *
 * Tuning (armdb_tune): with a byte rate set, the scan sleeps between
 * chunks so that a file's bytes read and written stay under the rate since
 * it began; a background pass ends at its next entry once automatic
 * compaction is switched off (the file under way is left as it was).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MOVE_STEP 1024u
#define OUT_CHUNK (1u << 20)
#define BUSY_TRIES 5000 /* 1 ms apart: a hint takes far less */
#define PASS_FILES 8    /* per shard and background pass */
#define PACE_CHUNK (64u << 10)
#define PACE_SLICE_NS 100000000 /* 100 ms */

struct move {
    uint64_t gsn;
    uint32_t rec, old_voff, new_voff, vlen;
};

struct compact_ctx {
    struct shard *sh;
    struct dfile *f; /* the file being compacted */
    uint32_t oid;    /* the output's id */
    int fd;          /* the output, under its .tmp name */
    unsigned char *buf;
    size_t cap, len;   /* bytes in buf; buf[0] is file offset base */
    uint64_t base;
    struct dfile acc; /* what the output holds: GSN range, tombstones */
    struct hint_buf hb;
    struct move *moves;
    size_t nmoves, moves_cap;
    const atomic_bool *stop;
    bool pinned; /* a dead batch member was copied (above D) */
    uint64_t dropped; /* the largest GSN of a tombstone left out */
    int64_t t0;       /* CLOCK_MONOTONIC ns when the file began (the byte rate) */
    uint64_t paced;   /* bytes read and written when the rate was last looked at */
};

/* Any file but f (a tombstone's own) that may hold an entry older than
 * GSN g: one whose smallest GSN is below it. With mu held. */
static bool older_elsewhere(const struct shard *sh, const struct dfile *f, uint64_t g)
{
    for (uint32_t i = 0; i < sh->nfiles; i++) {
        const struct dfile *x = sh->files[i];
        if (x != f && x->min_gsn && x->min_gsn < g)
            return true;
    }
    return false;
}

uint64_t dfile_reclaimable(const struct shard *sh, const struct dfile *f)
{
    uint64_t dead = f->size > f->live ? f->size - f->live : 0;
    if (f->tomb && older_elsewhere(sh, f, f->max_gsn))
        dead = dead > f->tomb ? dead - f->tomb : 0;
    return dead;
}

/* Write buf's whole pages, keeping the partial last one. */
static int out_flush(struct compact_ctx *c, bool all)
{
    size_t n = all ? round_up(c->len, PAGE) : round_down(c->len, PAGE);
    if (!n)
        return 0;
    if (n > c->len)
        memset(c->buf + c->len, 0, n - c->len);
    /* (Sealed in place: these bytes are not looked at again.) */
    int rc = c->acc.pk.cr ? dfile_seal(c->sh, &c->acc, c->base, c->buf, c->buf, (uint32_t)n) : 0;
    if (rc == 0)
        rc = io_pwrite_full(c->fd, c->buf, n, c->base);
    if (rc < 0)
        return rc;
    if (all) {
        c->base += c->len;
        c->len = 0;
        return 0;
    }
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->base += n;
    return 0;
}

/* Append one entry to the output, by the writer's page rule (never start
 * an entry with under ENTRY_HDR bytes left in a page). *voff: where its
 * value lands. */
static int out_append(struct compact_ctx *c, uint64_t gsn, const unsigned char *key, const unsigned char *val,
                      uint32_t vlen, uint32_t *voff)
{
    uint32_t klen = c->sh->db->key_len;
    uint64_t esize = entry_size(klen, vlen);
    uint64_t tail = c->base + c->len;
    size_t gap = PAGE - tail % PAGE < ENTRY_HDR ? (size_t)(PAGE - tail % PAGE) : 0;
    if (tail + gap + esize > UINT32_MAX)
        return err_set(ARMDB_FULL, "compaction output %s/%08u.data would pass 4 GiB", c->sh->path, c->oid);
    if (c->len + gap + esize > c->cap) {
        int rc = out_flush(c, false);
        if (rc < 0)
            return rc;
        size_t need = round_up(c->len + gap + esize, PAGE);
        if (need > c->cap) {
            unsigned char *p = aligned_alloc_zero(need);
            if (!p)
                return -ENOMEM;
            memcpy(p, c->buf, c->len);
            free(c->buf);
            c->buf = p;
            c->cap = need;
        }
    }
    memset(c->buf + c->len, 0, gap);
    c->len += gap;
    uint64_t off = c->base + c->len;
    entry_encode(c->buf + c->len, gsn, key, klen, val, vlen);
    c->len += esize;
    *voff = (uint32_t)(off + ENTRY_HDR + klen);
    dfile_note(&c->acc, gsn, esize);
    return 0;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The byte rate of armdb_tune(): once PACE_CHUNK more bytes have been
 * read (the scan's position in the old file) and written (the output so
 * far), sleep until those bytes fit in the time since the file began.
 * Sleeps in slices of PACE_SLICE_NS, so that a close (stop) or compaction
 * switched off waits at most one. A rekey's compactions are not paced:
 * writers may be waiting for them at the gate. */
static int pace(struct compact_ctx *c, uint64_t read_pos)
{
    armdb *db = c->sh->db;
    uint64_t done = read_pos + c->base + c->len;
    if (done - c->paced < PACE_CHUNK)
        return 0;
    c->paced = done;
    uint64_t rate = atomic_load_explicit(&db->compact_rate, memory_order_relaxed);
    if (!rate || db->crypt_next)
        return 0;
    int64_t due = c->t0 + (int64_t)((double)done * 1e9 / (double)rate);
    for (int64_t now = mono_ns(); now < due; now = mono_ns()) {
        if (atomic_load_explicit(c->stop, memory_order_relaxed) ||
            (db->pass_background && !atomic_load(&db->compact_auto)))
            return -ECANCELED;
        int64_t ns = due - now < PACE_SLICE_NS ? due - now : PACE_SLICE_NS;
        struct timespec ts = {ns / 1000000000, ns % 1000000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int compact_entry(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                         const unsigned char *value)
{
    struct compact_ctx *c = vctx;
    struct shard *sh = c->sh;
    struct index *ix = &sh->ix;
    uint32_t klen = ix->key_len;
    if (atomic_load_explicit(c->stop, memory_order_relaxed))
        return -ECANCELED;
    /* Compaction switched off (armdb_tune): a background pass ends here. */
    if (sh->db->pass_background && !atomic_load_explicit(&sh->db->compact_auto, memory_order_relaxed))
        return -ECANCELED;
    int prc = pace(c, (uint64_t)voff + vlen);
    if (prc < 0)
        return prc;
    bool tomb = (gsn & GSN_TOMB) != 0, keep, live = false;
    uint64_t h = key_hash(key, klen);
    int64_t r;
    /* A batch member above D: its batch's check at open needs it, dead or
     * not. One in an aborted run is garbage whatever it is. */
    bool member = gsn & GSN_BATCH, aborted = member && batch_aborted(sh->db, gsn);
    bool pinned = member && !aborted && (gsn & GSN_MASK) > atomic_load(&sh->db->durable_gsn);
    pthread_mutex_lock(&sh->mu);
    /* Shared mode: liveness as of every process's writes. */
    int rrc = shard_refresh(sh);
    if (rrc < 0) {
        pthread_mutex_unlock(&sh->mu);
        return rrc;
    }
    r = index_find(ix, key, h);
    if (tomb) {
        /* (The output counts too: it may hold an older batch member of
         * the key, copied while dead because it is above D.) */
        keep = r < 0 && (older_elsewhere(sh, c->f, gsn & GSN_MASK) ||
                         (c->acc.min_gsn && c->acc.min_gsn < (gsn & GSN_MASK)) ||
                         (gsn & GSN_MASK) > atomic_load(&sh->repl_floor)); /* not yet sent to a follower */
    } else {
        const unsigned char *rec = r >= 0 ? index_rec(ix, (uint32_t)r) : NULL;
        live = rec && rec_gsn(rec) == gsn && rec_u32(rec, REC_FILE) == c->f->id && rec_u32(rec, REC_VOFF) == voff;
        keep = live;
    }
    pthread_mutex_unlock(&sh->mu);
    keep = (keep && !aborted) || pinned;
    /* The horizon counts deletes of keys that are absent: a consumer of
     * the feed may hold an older value of such a key, which only the
     * tombstone would take away. A tombstone under a newer put is not
     * needed by anyone: the put (or what comes after it) is in the feed. */
    if (!keep && tomb && !aborted && r < 0 && (gsn & GSN_MASK) > c->dropped)
        c->dropped = gsn & GSN_MASK;
    if (!keep)
        return 0;
    uint32_t nvoff = 0;
    int rc = out_append(c, gsn, key, value, vlen, &nvoff);
    if (rc < 0)
        return rc;
    if ((rc = hint_add(&c->hb, klen, ix->inline_len, gsn, nvoff, vlen, key, value)) < 0)
        return rc;
    if (!live) {
        c->pinned |= pinned && !tomb;
        return 0;
    }
    if (c->nmoves == c->moves_cap) {
        size_t cap = c->moves_cap ? c->moves_cap * 2 : 1024;
        struct move *m = realloc(c->moves, cap * sizeof *m);
        if (!m)
            return -ENOMEM;
        c->moves = m;
        c->moves_cap = cap;
    }
    c->moves[c->nmoves++] = (struct move){.gsn = gsn, .rec = (uint32_t)r, .old_voff = voff, .new_voff = nvoff,
                                          .vlen = vlen};
    return 0;
}

/* Step 1: claim f and take the output's id. */
static int compact_begin(struct shard *sh, struct dfile *f, uint32_t *oid)
{
    pthread_mutex_lock(&sh->mu);
    int rc = shard_write_begin(sh);
    if (rc < 0) {
        pthread_mutex_unlock(&sh->mu);
        return rc;
    }
    if (f == sh->active || f->compacting || f->hinting || f->removed)
        rc = 1;
    else
        rc = shard_ids_left(sh);
    if (rc == 0) {
        f->compacting = true;
        dfile_ref(f);
        *oid = shard_take_id(sh);
    }
    shard_write_end(sh);
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

/* Step 3: the output made durable, its hint written, and then it given
 * its own name (*hinted, *renamed: how far it got, whatever failed then).
 * The hint comes first so that an output is never a file without a hint:
 * recovery takes the newest of those for the one that may end in a torn
 * write. A failed fdatasync turns the store read-only, as it does for any
 * data file: the device is not to be trusted with more writes. */
static int compact_publish(struct compact_ctx *c, const char *tmp, const char *name, bool *hinted, bool *renamed)
{
    struct shard *sh = c->sh;
    uint64_t size = c->base + c->len;
    int rc = out_flush(c, true);
    if (rc < 0)
        return err_set(rc, "write %s/%s", sh->path, tmp);
    if ((rc = io_fdatasync(c->fd)) < 0 || (c->acc.tfd >= 0 && (rc = io_fdatasync(c->acc.tfd)) < 0)) {
        int expected = 0;
        atomic_compare_exchange_strong(&sh->db->failed, &expected, rc);
        return err_set(rc, "fdatasync %s/%s", sh->path, tmp);
    }
    *hinted = true; /* from here on, a failure removes the hint too: it may be there */
    struct pagekey hpk;
    if ((rc = hint_write(sh->dirfd, c->oid, sh->db->key_len, &c->hb, size, sh->db, hint_pk(&c->acc, &hpk))) < 0)
        return err_set(rc, "write the hint of %s/%s", sh->path, name);
    /* Shared mode: named and announced in one step under the shard's
     * shared mutex, so that an opener listing the files sees it exactly
     * when the others are told of it. */
    if (sh->ss) {
        pthread_mutex_lock(&sh->mu);
        if ((rc = shard_write_begin(sh)) < 0) {
            pthread_mutex_unlock(&sh->mu);
            return rc;
        }
        shared_event_prepare(sh, EV_ADD, c->oid);
    }
    if ((rc = io_renameat(sh->dirfd, tmp, name)) < 0)
        rc = err_set(rc, "rename %s/%s to %s", sh->path, tmp, name);
    else if ((*renamed = true) && (rc = io_fsync(sh->dirfd)) < 0)
        rc = err_set(rc, "fsync the directory %s", sh->path);
    if (sh->ss) {
        if (*renamed)
            shared_event_publish(sh);
        shard_write_end(sh);
        pthread_mutex_unlock(&sh->mu);
    }
    return rc;
}

/* Steps 4 and 5. o: the published output, already listed (compactions
 * run one at a time, so nothing else looks at it yet), or NULL if nothing
 * was kept. */
static void compact_switch(struct compact_ctx *c, struct dfile *o)
{
    struct shard *sh = c->sh;
    struct dfile *f = c->f;
    uint32_t klen = sh->db->key_len;
    pthread_mutex_lock(&sh->mu);
    for (size_t i = 0; i < c->nmoves; i++) {
        if (i && i % MOVE_STEP == 0) {
            pthread_mutex_unlock(&sh->mu);
            pthread_mutex_lock(&sh->mu);
        }
        const struct move *m = &c->moves[i];
        unsigned char *rec = index_rec(&sh->ix, m->rec);
        if (rec_gsn(rec) != m->gsn || rec_u32(rec, REC_FILE) != f->id || rec_u32(rec, REC_VOFF) != m->old_voff)
            continue;
        rec_set(rec, m->gsn, o->id, m->new_voff, m->vlen);
        uint64_t es = entry_size(klen, m->vlen);
        f->live -= es;
        o->live += es;
    }
    bool drop = f->live == 0;
    sh->compactions++;
    sh->compact_read += f->size;
    sh->compact_written += o ? o->size : 0;
    pthread_mutex_unlock(&sh->mu);
    /* Files removed before must be gone for good before this one goes:
     * compacting it may have dropped tombstones because they were. The
     * output's publication fsynced the directory after them; without an
     * output that is done here. If it cannot be made sure, the file stays
     * listed (and on disk), so no later compaction counts on its absence
     * either. */
    if (drop && !o && io_fsync(sh->dirfd) < 0)
        drop = false;
    /* With a tombstone gone, a change feed from below its GSN would miss
     * the delete: the store's horizon must say so before the file goes. */
    if (drop && c->dropped && durable_note_dropped(sh, c->dropped) < 0)
        drop = false;
    pthread_mutex_lock(&sh->mu);
    f->compacting = false;
    if (drop && sh->ss) {
        /* Shared mode: announced and removed in one step (a repair ends
         * the removal of an announcement it finds unpublished). */
        if (shard_write_begin(sh) < 0) {
            drop = false;
        } else {
            shared_event_prepare(sh, EV_REMOVE, f->id);
            if (dfile_unlink_set(sh, f->id) < 0 || io_fsync(sh->dirfd) < 0)
                drop = false;
            else
                shared_event_publish(sh);
            shard_write_end(sh);
        }
    }
    if (drop) {
        uint64_t osize = o ? o->size : 0;
        shard_remove_file(sh, f);
        sh->reclaimed += f->size > osize ? f->size - osize : 0;
    } else {
        f->keep = true; /* entries it holds could not be moved: not again */
    }
    pthread_mutex_unlock(&sh->mu);
    if (drop && !sh->ss) {
        /* A rekey keeps the file until it commits; if it cannot, the file
         * just stays on disk (an open removes it once the rekey is in). */
        if (!sh->db->crypt_next)
            (void)dfile_unlink_set(sh, f->id);
        else
            (void)retire_add(sh->db, sh, f->id);
    }
    if (drop)
        dfile_unref(f); /* the shard's reference */
}

/* The output's tags file, if it has one, for an output that is not kept. */
static void unlink_tags(struct compact_ctx *c)
{
    if (c->acc.slots) {
        char tags[32];
        dfile_name(tags, sizeof tags, c->oid, "tags");
        (void)unlinkat(c->sh->dirfd, tags, 0);
    }
}

int shard_compact_file(struct shard *sh, struct dfile *f, const atomic_bool *stop)
{
    armdb *db = sh->db;
    struct compact_ctx c = {.sh = sh, .f = f, .fd = -1, .stop = stop, .acc = {.tfd = -1}};
    struct dfile *o = NULL;
    bool hinted = false, renamed = false;
    int rc = compact_begin(sh, f, &c.oid);
    if (rc != 0)
        return rc;
    char tmp[40], name[32];
    dfile_name(tmp, sizeof tmp, c.oid, "compact.tmp");
    dfile_name(name, sizeof name, c.oid, "data");
    int fd = dfile_open_fd(sh, tmp, O_RDWR | O_CREAT | O_TRUNC);
    if (fd < 0) {
        rc = err_set(fd, "create %s/%s", sh->path, tmp);
        goto fail;
    }
    c.fd = fd;
    c.acc.id = c.oid;
    /* Its entries are some of f's, by the same page rule: at most one gap
     * of under ENTRY_HDR bytes per page more. */
    const struct crypt *ocr = db->crypt_next ? db->crypt_next : db->crypt; /* a rekey's new key */
    if (ocr && (rc = tags_create(sh, &c.acc, ocr, f->size / (PAGE - ENTRY_HDR) + 2)) < 0) {
        rc = err_set(rc, "create the tags of %s/%s", sh->path, name);
        goto fail;
    }
    c.cap = OUT_CHUNK;
    if (!(c.buf = aligned_alloc_zero(c.cap))) {
        rc = err_set(-ENOMEM, "compact %s/%08u.data", sh->path, f->id);
        goto fail;
    }
    struct scan_result res;
    c.t0 = mono_ns();
    rc = scan_file(f->fd, f->pk.cr ? f : NULL, f->size, db->key_len, MAX_WBUF - WBUF_SLACK, db->vmax, false,
                   compact_entry, &c, &res);
    if (rc < 0) {
        if (rc != -ECANCELED)
            rc = err_set(rc, "compact %s/%08u.data", sh->path, f->id);
        goto fail;
    }
    /* An entry counted dead here may be dead only because of a write not
     * yet durable: if that write were lost in a crash, this entry would
     * be the key's value again. Make everything appended so far durable
     * before anything of the old file can go: in this shard, and in every
     * shard if batch members may be above D (the newer write may be one,
     * whose batch a crash could tear in another shard, undoing it). */
    if (atomic_load(&sh->db->batch_max) > atomic_load(&sh->db->durable_gsn)) {
        for (uint32_t i = 0; i < sh->db->nshards && rc == 0; i++)
            rc = shard_sync(&sh->db->shards[i]);
        if (rc < 0)
            goto fail;
    }
    if ((rc = shard_sync(sh)) < 0)
        goto fail;
    if (c.base + c.len > 0) {
        if ((rc = compact_publish(&c, tmp, name, &hinted, &renamed)) < 0)
            goto fail;
        if (!(o = dfile_new(c.oid, c.fd))) {
            rc = err_set(-ENOMEM, "compact %s/%08u.data", sh->path, f->id);
            goto fail;
        }
        c.fd = -1; /* o's now */
        o->pk = c.acc.pk;
        o->tfd = c.acc.tfd;
        o->slots = c.acc.slots;
        o->map_pages = c.acc.map_pages;
        c.acc.tfd = -1;
        c.acc.slots = NULL;
        o->size = c.base;
        o->has_hint = true;
        o->min_gsn = c.acc.min_gsn;
        o->max_gsn = c.acc.max_gsn;
        o->tomb = c.acc.tomb;
        /* Garbage it could not drop yet: not again in this run (the next
         * open or pass, with D moved up, can). */
        o->keep = c.pinned;
        pthread_mutex_lock(&sh->mu);
        rc = shard_add_file(sh, o);
        pthread_mutex_unlock(&sh->mu);
        if (rc < 0) {
            dfile_unref(o);
            rc = err_set(rc, "compact %s/%08u.data", sh->path, f->id);
            goto fail;
        }
    } else {
        close(c.fd);
        c.fd = -1;
        (void)unlinkat(sh->dirfd, tmp, 0);
        unlink_tags(&c);
    }
    compact_switch(&c, o);
    goto done;
fail:
    /* An output left on disk but not listed could later bring back a key
     * whose tombstone was dropped because no listed file was older: it
     * goes, whatever stage it reached. */
    if (c.fd >= 0)
        close(c.fd);
    if (hinted)
        (void)hint_unlink(sh->dirfd, c.oid);
    (void)unlinkat(sh->dirfd, renamed ? name : tmp, 0);
    unlink_tags(&c);
    pthread_mutex_lock(&sh->mu);
    f->compacting = false;
    pthread_mutex_unlock(&sh->mu);
done:
    tags_release(&c.acc);
    free(c.buf);
    free(c.moves);
    hint_buf_free(&c.hb);
    dfile_unref(f); /* compact_begin's reference */
    return rc;
}

/* The immutable file of sh with the largest reclaimable share of at least
 * `threshold` (any, if force and it has reclaimable bytes) and an id below
 * `below` (not an output of this pass), referenced, or NULL. */
static struct dfile *pick(struct shard *sh, double threshold, bool force, uint32_t below)
{
    struct dfile *best = NULL;
    double best_ratio = 0;
    pthread_mutex_lock(&sh->mu);
    if (shard_refresh(sh) < 0) {
        pthread_mutex_unlock(&sh->mu);
        return NULL;
    }
    for (uint32_t i = 0; i < sh->nfiles; i++) {
        struct dfile *f = sh->files[i];
        /* A forced pass waits for a hint being written; the background
         * thread writes them itself, between passes. */
        if (f == sh->active || f->compacting || (f->hinting && !force) || f->keep || !f->size || f->id >= below)
            continue;
        uint64_t r = dfile_reclaimable(sh, f);
        double ratio = (double)r / (double)f->size;
        if (r && (force || ratio >= threshold) && ratio > best_ratio) {
            best = f;
            best_ratio = ratio;
        }
    }
    if (best)
        dfile_ref(best);
    pthread_mutex_unlock(&sh->mu);
    return best;
}

int db_compact_pass(armdb *db, bool force)
{
    int rc = 0;
    pthread_mutex_lock(&db->compact_mu);
    if (db->rekey_failed) {
        pthread_mutex_unlock(&db->compact_mu);
        return err_set(ARMDB_READONLY, "store %s compacts nothing after a failed rekey: reopen it", db->dir);
    }
    /* Shared mode: one process compacts at a time. */
    if ((rc = shared_maint_lock(db, &db->compact_stop)) < 0) {
        pthread_mutex_unlock(&db->compact_mu);
        return rc == -ECANCELED ? 0 : rc;
    }
    db->pass_background = !force;
    /* Batch members below D can go like any entry: move D up first. (If
     * that fails, they are kept: nothing is lost but space.) */
    (void)durable_checkpoint(db);
    for (uint32_t i = 0; i < db->nshards && rc == 0; i++) {
        struct shard *sh = &db->shards[i];
        if (force) {
            /* The active file's garbage too: seal it if it has any. */
            pthread_mutex_lock(&sh->mu);
            if (sh->ss) {
                if ((rc = shard_write_begin(sh)) == 0) {
                    if (AT_OFF(sh->at) > 0 && sh->active->size > sh->active->live)
                        rc = shared_seal(sh);
                    shard_write_end(sh);
                }
            } else if (sh->active && wbuf_tail(&sh->wb) > 0 && sh->active->size > sh->active->live) {
                rc = shard_seal(sh);
            }
            pthread_mutex_unlock(&sh->mu);
            if (rc < 0)
                break;
        }
        struct dfile *f;
        uint32_t done = 0, busy = 0;
        pthread_mutex_lock(&sh->mu);
        uint32_t below = sh->ss ? sh->ss->next_id : sh->next_id;
        pthread_mutex_unlock(&sh->mu);
        while (rc == 0 && !atomic_load(&db->compact_stop) && !atomic_load(&db->failed) &&
               (force || atomic_load(&db->compact_auto)) && (f = pick(sh, db->compact_threshold, force, below))) {
            rc = shard_compact_file(sh, f, &db->compact_stop);
            dfile_unref(f);
            if (rc == 1 && force && ++busy < BUSY_TRIES) {
                /* Its hint is being written: a forced pass waits for it. */
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
                rc = 0;
                continue;
            }
            if (rc == 1 || rc == -ECANCELED)
                rc = 0;
            if (!force && ++done == PASS_FILES) {
                /* Let rotated files get their hints; then go on. */
                atomic_store(&db->compact_wanted, true);
                break;
            }
        }
    }
    db->pass_background = false;
    shared_maint_unlock(db);
    pthread_mutex_unlock(&db->compact_mu);
    return rc;
}
