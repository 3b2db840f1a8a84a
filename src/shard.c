/*
 * shard.c - one shard: its lock, files, write buffer and index, and the
 * put/get/delete/sync paths through them.
 *
 * Everything in struct shard is guarded by `mu`. Appends take a GSN while
 * holding it, so within a shard file order is GSN order. A get copies a
 * value held in memory (inline, or still in the write buffer) under the
 * lock; a value on disk is read after the lock is dropped, through a
 * referenced file, and verified (checksum, length, GSN and key) before it
 * is returned. Barriers write under the lock but fdatasync outside it, so
 * writers keep appending while the device syncs, and every writer waiting
 * for durability is served by the one fdatasync in flight (group commit).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Pages that leave the write buffer full go into the block cache too:
 * what was just written is what is read next, more often than not. */
static void cache_written(void *ctx, uint64_t off, const unsigned char *pages, uint32_t len)
{
    struct shard *sh = ctx;
    for (uint32_t i = 0; i < len; i += PAGE)
        cache_put(sh->db->cache, cache_name(sh->no, sh->active->id, (off + i) / PAGE), pages + i);
}

/* Encrypted stores: pages on their way to the active file are sealed. */
static int seal_written(void *ctx, uint64_t off, const unsigned char *src, unsigned char *dst, uint32_t len)
{
    struct shard *sh = ctx;
    return dfile_seal(sh, sh->active, off, src, dst, len);
}

int shard_init(struct shard *sh, armdb *db, uint32_t no)
{
    memset(sh, 0, sizeof *sh);
    sh->db = db;
    sh->no = no;
    sh->dirfd = -1;
    atomic_store(&sh->repl_floor, UINT64_MAX);
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->sync_cv, NULL);
    char name[12];
    snprintf(name, sizeof name, "%03x", no);
    if (asprintf(&sh->path, "%s/%s", db->dir, name) < 0) {
        sh->path = NULL;
        return err_set(-ENOMEM, "open shard %s", name);
    }
    int fd = io_open(db->dirfd, name, O_RDONLY | O_DIRECTORY, 0);
    if (fd == -ENOENT && !db->rdonly) {
        /* Created with the store; recreate one lost before any file went in. */
        if (mkdirat(db->dirfd, name, 0755) < 0 && errno != EEXIST)
            return err_set(-errno, "create shard directory %s", sh->path);
        fd = io_open(db->dirfd, name, O_RDONLY | O_DIRECTORY, 0);
    }
    if (fd < 0)
        return err_set(fd, "open shard directory %s", sh->path);
    sh->dirfd = fd;
    int rc = index_init(&sh->ix, db->key_len, db->value_len);
    sh->ordered = db->meta.flags & META_ORDERED;
    if (rc == 0 && sh->ordered)
        rc = otree_init(&sh->ot, db->key_len);
    if (rc == 0 && !db->rdonly && db->use_uring && !db->shared &&
        (!(sh->ring = uring_new(4)) || !(sh->sync_ring = uring_new(4))))
        atomic_store(&db->uring_writes, false); /* this shard uses pwrite (for some of its writes) */
    if (rc == 0 && !db->rdonly)
        rc = wbuf_init(&sh->wb, db->wbuf_size, sh->ring, db->crypt != NULL);
    if (db->crypt)
        sh->wb.seal = seal_written;
    sh->wb.on_final = cache_written;
    sh->wb.on_final_ctx = sh;
    return rc < 0 ? err_set(rc, "allocate shard %s", sh->path) : 0;
}

void shard_free(struct shard *sh)
{
    for (uint32_t i = 0; i < sh->nfiles; i++)
        dfile_unref(sh->files[i]);
    free(sh->files);
    index_free(&sh->ix);
    otree_free(&sh->ot);
    wbuf_free(&sh->wb);
    uring_free(sh->ring);
    uring_free(sh->sync_ring);
    if (sh->dirfd >= 0)
        close(sh->dirfd);
    free(sh->path);
    pthread_cond_destroy(&sh->sync_cv);
    pthread_mutex_destroy(&sh->mu);
}

/* Where id is or would go in the sorted list. */
static uint32_t file_pos(const struct shard *sh, uint32_t id)
{
    uint32_t lo = 0, hi = sh->nfiles;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (sh->files[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct dfile *shard_file(struct shard *sh, uint32_t id)
{
    uint32_t i = file_pos(sh, id);
    return i < sh->nfiles && sh->files[i]->id == id ? sh->files[i] : NULL;
}

int shard_add_file(struct shard *sh, struct dfile *f)
{
    if (sh->nfiles == sh->files_cap) {
        uint32_t cap = sh->files_cap ? sh->files_cap * 2 : 16;
        struct dfile **p = realloc(sh->files, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        sh->files = p;
        sh->files_cap = cap;
    }
    /* Appends come in id order; a compaction's output may land before
     * an active file opened after its id was taken. */
    uint32_t i = file_pos(sh, f->id);
    assert(i == sh->nfiles || sh->files[i]->id != f->id);
    memmove(sh->files + i + 1, sh->files + i, (sh->nfiles - i) * sizeof *sh->files);
    sh->files[i] = f;
    sh->nfiles++;
    return 0;
}

void shard_remove_file(struct shard *sh, struct dfile *f)
{
    uint32_t i = file_pos(sh, f->id);
    assert(i < sh->nfiles && sh->files[i] == f);
    memmove(sh->files + i, sh->files + i + 1, (sh->nfiles - i - 1) * sizeof *sh->files);
    sh->nfiles--;
    f->removed = true;
}

/* With mu held: remove the active file, to which nothing was written. */
static int shard_drop_active(struct shard *sh)
{
    struct dfile *f = sh->active;
    uint32_t id = f->id;
    sh->active = NULL;
    shard_remove_file(sh, f);
    dfile_unref(f);
    return dfile_unlink_set(sh, id);
}

int shard_ids_left(struct shard *sh)
{
    return (sh->ss ? sh->ss->next_id : sh->next_id) > 99999999u ? err_set(ARMDB_FULL, "shard %s has used every data file id", sh->path) : 0;
}

int shard_new_active(struct shard *sh)
{
    struct dfile *f;
    int rc = shard_ids_left(sh);
    if (rc < 0 || (rc = dfile_open(sh, sh->next_id, true, &f)) < 0)
        return rc;
    if ((rc = shard_add_file(sh, f)) < 0) {
        char name[32];
        dfile_name(name, sizeof name, f->id, "data");
        dfile_unref(f);
        (void)unlinkat(sh->dirfd, name, 0);
        return err_set(rc, "open %s/%s", sh->path, name);
    }
    sh->next_id++;
    sh->active = f;
    wbuf_reset(&sh->wb);
    return 0;
}

void shard_account_write(struct shard *sh, uint64_t written) { sh->bytes_written += written; }

int shard_failed(struct shard *sh)
{
    int failed = atomic_load(&sh->db->failed);
    if (failed)
        return err_set(ARMDB_READONLY, "store %s is read-only after a failed fdatasync (%s)", sh->db->dir,
                       armdb_strerror(failed));
    return 0;
}

/* The kernel may have dropped the pages it failed to write: nothing written
 * since the last good barrier can be trusted, so the store stops taking
 * writes (reads go on). */
static int sync_failed(struct shard *sh, struct dfile *f, int rc)
{
    int expected = 0;
    atomic_compare_exchange_strong(&sh->db->failed, &expected, rc);
    return err_set(rc, "fdatasync %s/%08u.data", sh->path, f->id);
}

/* The first half of a barrier: everything buffered into the file, the
 * last page zero-padded, and the fdatasync started with it where the
 * shard has a ring for barriers. *queued: it was. The ring is used by one
 * barrier at a time: one that comes (under mu, for a rotation) while
 * another waits for its fdatasync makes its own system calls. */
static int barrier_start(struct shard *sh, struct dfile *f, bool *queued)
{
    uint64_t written = 0;
    int rc = wbuf_write_tail(&sh->wb, f->fd, sh->syncing ? NULL : sh->sync_ring, &written);
    shard_account_write(sh, written);
    *queued = rc == 1;
    return rc < 0 ? err_set(rc, "write %s/%08u.data", sh->path, f->id) : 0;
}

/* The second half: the fdatasync done (queued) or done now; in an
 * encrypted store the tags file's too, while the ring syncs the data. */
static int barrier_finish(struct shard *sh, struct dfile *f, bool queued)
{
    int trc = f->tfd >= 0 ? io_fdatasync(f->tfd) : 0;
    int rc = queued ? uring_sync_wait(sh->sync_ring) : io_fdatasync(f->fd);
    return rc < 0 ? rc : trc;
}

/* Make everything appended so far durable: write the tail, wait for the
 * fdatasync outside the lock, and let waiters share that one fdatasync
 * (group commit: one write + fdatasync submission for all of them).
 * Called and returns with mu held. */
int shard_barrier_turn(struct shard *sh)
{
    int rc = shard_failed(sh);
    if (rc)
        return rc;
    if (!sh->syncing)
        return 0;
    pthread_cond_wait(&sh->sync_cv, &sh->mu);
    return 1;
}

int shard_sync_outside(struct shard *sh, struct dfile *f, bool queued)
{
    sh->syncing = true;
    dfile_ref(f);
    pthread_mutex_unlock(&sh->mu);
    int rc = barrier_finish(sh, f, queued);
    pthread_mutex_lock(&sh->mu);
    dfile_unref(f);
    sh->syncing = false;
    sh->syncs++;
    sh->ring_syncs += queued;
    pthread_cond_broadcast(&sh->sync_cv);
    return rc < 0 ? sync_failed(sh, f, rc) : 0;
}

int shard_wait_durable(struct shard *sh, uint64_t upto)
{
    while (sh->durable < upto) {
        int rc = shard_barrier_turn(sh);
        if (rc < 0)
            return rc;
        if (rc)
            continue;
        struct dfile *f = sh->active;
        assert(f); /* with no active file everything was sealed durable */
        /* Every entry of this shard with a GSN up to gsn_last() is
         * appended by now (a write takes its GSN and appends under mu). */
        uint64_t target = sh->pos, tgsn = db_gsn_last(sh->db);
        bool queued;
        if ((rc = barrier_start(sh, f, &queued)) < 0 || (rc = shard_sync_outside(sh, f, queued)) < 0)
            return rc;
        if (target > sh->durable)
            sh->durable = target;
        if (tgsn > sh->durable_gsn)
            sh->durable_gsn = tgsn;
    }
    return 0;
}

/* A barrier that keeps mu held throughout, for rotation and close: no
 * append may slip in between the barrier and what follows it. */
static int shard_barrier_locked(struct shard *sh)
{
    int rc = shard_failed(sh);
    if (rc || sh->durable >= sh->pos)
        return rc;
    struct dfile *f = sh->active;
    bool queued;
    if ((rc = barrier_start(sh, f, &queued)) < 0)
        return rc;
    rc = barrier_finish(sh, f, queued);
    sh->syncs++;
    sh->ring_syncs += queued;
    if (rc < 0)
        return sync_failed(sh, f, rc);
    sh->durable = sh->pos;
    sh->durable_gsn = db_gsn_last(sh->db);
    return 0;
}

int shard_sync(struct shard *sh)
{
    pthread_mutex_lock(&sh->mu);
    int rc = 0;
    if (sh->ss) {
        /* Every process's writes so far (and this process caught up, so
         * that it has the head's file open). */
        if ((rc = shard_refresh(sh)) == 0)
            rc = shared_wait_durable(sh, atomic_load(&sh->ss->head));
    } else if (!sh->db->rdonly) {
        rc = shard_wait_durable(sh, sh->pos);
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int shard_durable_gsn(struct shard *sh, bool sync, uint64_t *gsn)
{
    int rc = 0;
    /* Read before the lock: a write that takes a GSN after this read
     * takes a larger one; one that took it before holds the lock until
     * its entry is appended (a batch: in all its shards). */
    uint64_t top = db_gsn_last(sh->db);
    pthread_mutex_lock(&sh->mu);
    if (sh->ss) {
        /* Shared mode keeps no GSN per barrier: durable up to top only
         * once the head is. */
        uint64_t head = atomic_load(&sh->ss->head);
        rc = sync ? shared_wait_durable(sh, head) : 0;
        *gsn = atomic_load(&sh->ss->durable) >= head ? top : 0;
        pthread_mutex_unlock(&sh->mu);
        return rc;
    }
    if (sync && !sh->db->rdonly)
        rc = shard_wait_durable(sh, sh->pos);
    *gsn = sh->durable >= sh->pos ? top : sh->durable_gsn;
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

/* An immutable file's garbage (tombstones aside) passed the threshold:
 * time for the background thread to look. */
static void want_compaction(struct shard *sh, const struct dfile *f)
{
    uint64_t used = f->live + f->tomb;
    if (!f->compacting && f->size > used &&
        (double)(f->size - used) >= sh->db->compact_threshold * (double)f->size)
        db_want_compaction(sh->db);
}

int shard_seal(struct shard *sh)
{
    struct dfile *f = sh->active;
    int rc = shard_barrier_locked(sh);
    if (rc < 0)
        return rc;
    f->size = wbuf_tail(&sh->wb);
    sh->active = NULL;
    sh->rotations++;
    want_compaction(sh, f);
    return db_queue_hint(sh->db, sh, f);
}

/* Append one entry to the active file, rotating first if it would pass
 * max_file_size. gsn: its GSN with flags, or 0 for the next one (returned
 * in *gsn_out with GSN_TOMB if tomb). On error nothing was appended. */
int shard_append(struct shard *sh, const void *key, const void *val, uint32_t vlen, bool tomb, uint64_t gsn,
                 uint64_t *gsn_out, uint32_t *voff)
{
    armdb *db = sh->db;
    uint32_t klen = db->key_len;
    uint64_t esize = entry_size(klen, vlen);
    int rc;
    if (sh->ss) {
        if (!gsn) {
            gsn = db_gsn_next(db, 1);
            gsn_observe(db, gsn);
        }
        if (tomb)
            gsn |= GSN_TOMB;
        uint64_t off;
        if ((rc = shared_append(sh, key, val, vlen, gsn, &off)) < 0)
            return rc;
        *gsn_out = gsn;
        *voff = (uint32_t)off;
        return 0;
    }
    if (!sh->active && (rc = shard_new_active(sh)) < 0)
        return rc;
    uint64_t tail = wbuf_tail(&sh->wb);
    uint32_t gap = PAGE - tail % PAGE < ENTRY_HDR ? (uint32_t)(PAGE - tail % PAGE) : 0;
    if (tail > 0 && tail + gap + esize > db->max_file) {
        if ((rc = shard_seal(sh)) < 0 || (rc = shard_new_active(sh)) < 0)
            return rc;
        gap = 0;
    }
    struct wbuf *wb = &sh->wb;
    uint64_t written = 0;
    rc = wbuf_make_room(wb, sh->active->fd, gap + (uint32_t)esize, &written);
    if (written) {
        shard_account_write(sh, written);
        sh->flushes++;
    }
    if (rc < 0)
        return err_set(rc, "write %s/%08u.data", sh->path, sh->active->id);
    memset(wb->buf + wb->len, 0, gap);
    wb->len += gap;
    uint64_t off = wbuf_tail(wb);
    if (!gsn) {
        gsn = db_gsn_next(db, 1);
        gsn_observe(db, gsn);
    }
    if (tomb)
        gsn |= GSN_TOMB;
    entry_encode(wb->buf + wb->len, gsn, key, klen, val, vlen);
    dfile_note(sh->active, gsn, esize);
    wb->len += (uint32_t)esize;
    sh->pos += gap + esize;
    sh->active->size = wbuf_tail(wb);
    *gsn_out = gsn;
    *voff = (uint32_t)(off + ENTRY_HDR + klen);
    return 0;
}

/* ---- reading entries ---- */

struct loc {
    struct dfile *f;
    uint64_t gsn;
    uint64_t eoff, esize;
    uint32_t vlen;
    uint64_t cache_end; /* pages of f wholly below it may be cached */
};

/* With mu held: where f's pages stop being final. In shared mode other
 * processes append to the active file's last page, so only the pages
 * below the head as this process knows it are (bytes below a published
 * head never change); every page of any other file is. */
static uint64_t cache_end_of(const struct shard *sh, const struct dfile *f)
{
    return sh->ss && f == sh->active ? round_down(AT_OFF(sh->at), PAGE) : UINT64_MAX;
}

static int rec_loc(struct shard *sh, const unsigned char *rec, struct loc *l)
{
    uint32_t klen = sh->db->key_len;
    l->gsn = rec_gsn(rec);
    l->vlen = rec_u32(rec, REC_VLEN);
    l->eoff = rec_u32(rec, REC_VOFF) - ENTRY_HDR - klen;
    l->esize = entry_size(klen, l->vlen);
    l->f = shard_file(sh, rec_u32(rec, REC_FILE));
    if (!l->f)
        return err_set(ARMDB_CORRUPT, "%s: index names data file %u, which is gone", sh->path,
                       rec_u32(rec, REC_FILE));
    l->cache_end = cache_end_of(sh, l->f);
    return 0;
}

/* Check the entry at p is the one the index expects. */
static int entry_check(struct shard *sh, const unsigned char *p, const struct loc *l, const void *key)
{
    uint32_t klen = sh->db->key_len;
    if (!entry_valid(p, klen, l->vlen, l->esize) || get_le32(p + 4) != l->vlen || get_le64(p + 8) != l->gsn ||
        memcmp(p + ENTRY_HDR, key, klen) != 0)
        return err_set(ARMDB_CORRUPT, "entry at %s/%08u.data offset %llu", sh->path, l->f->id,
                       (unsigned long long)l->eoff);
    return 0;
}

/* Copy from the block cache the bytes [from, to) of pages [first, first + n)
 * of f that it holds into sc (sc[0] is page `first`); [*lo, *hi) is the
 * range of pages it did not have (*lo == n: it had them all). */
static void cache_copy(struct shard *sh, struct dfile *f, uint64_t first, uint32_t n, unsigned char *sc, uint64_t from,
                       uint64_t to, uint32_t *lo, uint32_t *hi)
{
    *lo = n;
    *hi = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t ps = (first + i) * PAGE, a = from > ps ? from : ps, b = to < ps + PAGE ? to : ps + PAGE;
        if (cache_get_part(sh->db->cache, cache_name(sh->no, f->id, first + i), sc + (a - first * PAGE),
                           (uint32_t)(a - ps), (uint32_t)(b - a)))
            continue;
        if (*lo == n)
            *lo = i;
        *hi = i + 1;
    }
}

/* Encrypted stores: open n pages of f read from the device, in place. */
static int unseal_pages(struct shard *sh, struct dfile *f, uint64_t page, unsigned char *buf, uint32_t n)
{
    uint32_t ok = dfile_unseal(f, page, buf, n);
    if (ok == n)
        return 0;
    return err_set(ARMDB_CORRUPT, "page %llu of %s/%08u.data fails authentication (damaged, or not this store's)",
                   (unsigned long long)(page + ok), sh->path, f->id);
}

/* Fill sc with the bytes [from, to) of pages [first, first + n) of f: from
 * the block cache where it has them (unless bypass), the rest with one read
 * of the device (whole pages, so they can be cached). Pages [*lo, *hi) came
 * from the device; *got is how many bytes of them the file had (the rest
 * are zeroed). */
static int read_pages(struct shard *sh, struct dfile *f, uint64_t first, uint32_t n, unsigned char *sc, bool bypass,
                      uint64_t from, uint64_t to, uint32_t *lo, uint32_t *hi, size_t *got)
{
    *got = 0;
    if (bypass) {
        *lo = 0;
        *hi = n;
    } else {
        cache_copy(sh, f, first, n, sc, from, to, lo, hi);
    }
    if (*lo == n)
        return 0;
    size_t want = (size_t)(*hi - *lo) * PAGE;
    ssize_t rd = io_pread_full(f->fd, sc + (size_t)*lo * PAGE, want, (first + *lo) * PAGE);
    if (rd < 0)
        return err_set((int)rd, "read %s/%08u.data", sh->path, f->id);
    if ((size_t)rd < want)
        memset(sc + (size_t)*lo * PAGE + rd, 0, want - (size_t)rd);
    *got = (size_t)rd;
    return f->pk.cr ? unseal_pages(sh, f, first + *lo, sc + (size_t)*lo * PAGE, *hi - *lo) : 0;
}

/* Read the entry at l into the thread's scratch and verify it. With
 * with_buffer, the bytes from the shard's write buffer base on come from
 * the buffer (the entry straddles it; mu is held). Pages read from the
 * device go into the block cache once the entry has verified (unless !fill:
 * a full scan reads neighbouring entries one after another, and letting it
 * fill the cache would make its pages look hot); if an entry
 * read partly from the cache fails, it is read again from the device, so
 * a damaged block never hides an intact file. */
static int read_entry(struct shard *sh, const struct loc *l, const void *key, const unsigned char **val,
                      bool with_buffer, bool fill)
{
    uint64_t a = round_down(l->eoff, PAGE);
    uint64_t end = l->eoff + l->esize;
    uint64_t disk_end = with_buffer ? wbuf_mem_base(&sh->wb) : end;
    uint32_t ndisk = (uint32_t)((round_up(disk_end, PAGE) - a) / PAGE);
    unsigned char *sc = scratch_get((size_t)(round_up(end, PAGE) - a));
    if (!sc)
        return err_set(-ENOMEM, "read %s/%08u.data", sh->path, l->f->id);
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        uint32_t lo, hi;
        size_t got;
        rc = read_pages(sh, l->f, a / PAGE, ndisk, sc, attempt > 0, l->eoff, disk_end, &lo, &hi, &got);
        if (rc < 0)
            return rc;
        uint64_t need = a + (uint64_t)hi * PAGE < disk_end ? a + (uint64_t)hi * PAGE : disk_end;
        if (hi > lo && a + (uint64_t)lo * PAGE + got < need)
            return err_set(ARMDB_CORRUPT, "%s/%08u.data ends before the entry at offset %llu", sh->path,
                           l->f->id, (unsigned long long)l->eoff);
        if (with_buffer)
            wbuf_read(&sh->wb, disk_end, sc + (disk_end - a), (size_t)(end - disk_end));
        const unsigned char *p = sc + (l->eoff - a);
        rc = entry_check(sh, p, l, key);
        if (rc == 0) {
            for (uint32_t i = lo; i < hi && fill && a + (uint64_t)(i + 1) * PAGE <= l->cache_end; i++)
                cache_put(sh->db->cache, cache_name(sh->no, l->f->id, a / PAGE + i), sc + (size_t)i * PAGE);
            *val = p + ENTRY_HDR + sh->db->key_len;
            return 0;
        }
        if (lo == 0 && hi == ndisk)
            break; /* all of it came from the device: the damage is real */
    }
    return rc;
}

/* Does the entry at l reach into bytes the write buffer has and the file
 * may not? Never in shared mode, whose appends go straight to the file. */
static bool in_buffer(const struct shard *sh, const struct loc *l)
{
    return !sh->ss && l->f == sh->active && l->eoff + l->esize > wbuf_mem_base(&sh->wb);
}

/* With mu held: point *val at the value of rec if memory has it (inline or
 * write buffer); 1 if it must be read from disk. */
static int value_in_memory(struct shard *sh, const unsigned char *rec, const struct loc *l,
                           const unsigned char **val)
{
    uint32_t klen = sh->db->key_len;
    if (sh->ix.inline_len) {
        *val = rec + REC_KEY + klen;
        return 0;
    }
    if (sh->ss)
        return 1; /* shared mode buffers nothing */
    if (l->f == sh->active && l->eoff >= sh->wb.base) {
        *val = sh->wb.buf + (l->eoff - sh->wb.base) + ENTRY_HDR + klen;
        return 0;
    }
    if (l->f == sh->active && l->eoff >= wbuf_mem_base(&sh->wb)) {
        /* In (or across) the pages on their way to the file. */
        unsigned char *sc = scratch_get((size_t)l->esize);
        if (!sc)
            return err_set(-ENOMEM, "read %s/%08u.data", sh->path, l->f->id);
        wbuf_read(&sh->wb, l->eoff, sc, (size_t)l->esize);
        *val = sc + ENTRY_HDR + klen;
        return 0;
    }
    return 1;
}

/* With mu held: the value of rec, wherever it is, valid while mu is held. */
static int value_locked(struct shard *sh, const unsigned char *rec, const void *key, const unsigned char **val)
{
    struct loc l;
    int rc = rec_loc(sh, rec, &l);
    if (rc < 0)
        return rc;
    rc = value_in_memory(sh, rec, &l, val);
    if (rc <= 0)
        return rc;
    return read_entry(sh, &l, key, val, in_buffer(sh, &l), true);
}

static int read_loc_unlock(struct shard *sh, const unsigned char *rec, struct loc l, int rc, const void *key,
                           void *dst, bool fill);

int shard_read_unlock(struct shard *sh, const unsigned char *rec, const void *key, void *dst, bool fill)
{
    struct loc l;
    int rc = rec_loc(sh, rec, &l);
    return read_loc_unlock(sh, rec, l, rc, key, dst, fill);
}

int shard_read_at_unlock(struct shard *sh, struct dfile *f, uint64_t gsn, uint32_t voff, uint32_t vlen,
                         const void *key, void *dst)
{
    uint32_t klen = sh->db->key_len;
    struct loc l = {.f = f, .gsn = gsn, .vlen = vlen, .eoff = voff - ENTRY_HDR - klen, .esize = entry_size(klen, vlen),
                    .cache_end = cache_end_of(sh, f)};
    return read_loc_unlock(sh, NULL, l, 0, key, dst, false);
}

/* The rest of shard_read_unlock, from the location (rc: rec_loc's). rec
 * is only read for an inline value. */
static int read_loc_unlock(struct shard *sh, const unsigned char *rec, struct loc l, int rc, const void *key,
                           void *dst, bool fill)
{
    const unsigned char *val;
    if (rc == 0)
        rc = value_in_memory(sh, rec, &l, &val);
    if (rc == 1 && in_buffer(sh, &l))
        rc = read_entry(sh, &l, key, &val, true, fill); /* straddles the buffer: rare */
    if (rc <= 0) {
        if (rc == 0 && l.vlen)
            memcpy(dst, val, l.vlen);
        pthread_mutex_unlock(&sh->mu);
        return rc;
    }
    /* On disk only: read without blocking the shard. */
    dfile_ref(l.f);
    pthread_mutex_unlock(&sh->mu);
    rc = read_entry(sh, &l, key, &val, false, fill);
    if (rc == 0 && l.vlen)
        memcpy(dst, val, l.vlen);
    dfile_unref(l.f);
    return rc;
}

/* ---- get_many: memory and cache first, the device in one batch ---- */

/* Lock the shard and find key's record, counting the get; NULL, with the
 * shard unlocked again, if there is none. */
static const unsigned char *get_locked(struct shard *sh, const void *key, uint64_t h, int *rc)
{
    pthread_mutex_lock(&sh->mu);
    sh->gets++;
    if ((*rc = shard_refresh(sh)) < 0) {
        pthread_mutex_unlock(&sh->mu);
        return NULL;
    }
    int64_t r = index_find(&sh->ix, key, h);
    if (r < 0) {
        pthread_mutex_unlock(&sh->mu);
        return NULL;
    }
    return index_rec(&sh->ix, (uint32_t)r);
}

int shard_get_begin(struct shard *sh, const void *key, uint64_t h, void *dst, size_t cap, size_t *vlen,
                    struct pending_read *p)
{
    int rc;
    const unsigned char *rec = get_locked(sh, key, h, &rc);
    if (!rec)
        return rc < 0 ? rc : ARMDB_NOTFOUND;
    struct loc l;
    const unsigned char *val;
    rc = rec_loc(sh, rec, &l);
    *vlen = l.vlen;
    if (rc == 0 && l.vlen > cap)
        rc = ARMDB_BUFSMALL;
    if (rc == 0)
        rc = value_in_memory(sh, rec, &l, &val);
    if (rc == 1 && in_buffer(sh, &l))
        rc = read_entry(sh, &l, key, &val, true, true); /* straddles the buffer: rare */
    if (rc == 1) {
        /* All pages cached? Then no device read is needed. */
        uint64_t a = round_down(l.eoff, PAGE);
        uint32_t n = (uint32_t)((round_up(l.eoff + l.esize, PAGE) - a) / PAGE), lo, hi;
        unsigned char *sc = scratch_get((size_t)n * PAGE);
        if (!sc) {
            pthread_mutex_unlock(&sh->mu);
            return err_set(-ENOMEM, "read %s/%08u.data", sh->path, l.f->id);
        }
        cache_copy(sh, l.f, a / PAGE, n, sc, l.eoff, l.eoff + l.esize, &lo, &hi);
        if (lo == n && entry_check(sh, sc + (l.eoff - a), &l, key) == 0) {
            val = sc + (l.eoff - a) + ENTRY_HDR + sh->db->key_len;
            rc = 0;
        } else {
            dfile_ref(l.f);
            *p = (struct pending_read){.sh = sh, .f = l.f, .key = key, .gsn = l.gsn, .eoff = l.eoff,
                                       .esize = l.esize, .vlen = l.vlen, .first_page = a / PAGE, .npages = n,
                                       .cache_end = l.cache_end};
        }
    }
    if (rc == 0 && l.vlen)
        memcpy(dst, val, l.vlen);
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int shard_get_finish(struct pending_read *p, unsigned char *buf, ssize_t res, void *dst)
{
    struct shard *sh = p->sh;
    struct loc l = {.f = p->f, .gsn = p->gsn, .eoff = p->eoff, .esize = p->esize, .vlen = p->vlen};
    uint64_t a = p->first_page * PAGE;
    int rc;
    if (res < 0)
        rc = err_set((int)res, "read %s/%08u.data", sh->path, p->f->id);
    else if (a + (uint64_t)res < p->eoff + p->esize)
        rc = err_set(ARMDB_CORRUPT, "%s/%08u.data ends before the entry at offset %llu", sh->path, p->f->id,
                     (unsigned long long)p->eoff);
    else
        rc = p->f->pk.cr ? unseal_pages(sh, p->f, p->first_page, buf, p->npages) : 0;
    if (rc == 0)
        rc = entry_check(sh, buf + (p->eoff - a), &l, p->key);
    if (rc == 0) {
        if (p->vlen)
            memcpy(dst, buf + (p->eoff - a) + ENTRY_HDR + sh->db->key_len, p->vlen);
        for (uint32_t i = 0; i < p->npages && (p->first_page + i + 1) * PAGE <= p->cache_end; i++)
            cache_put(sh->db->cache, cache_name(sh->no, p->f->id, p->first_page + i), buf + (size_t)i * PAGE);
    }
    dfile_unref(p->f);
    return rc;
}

/* ---- the public operations, per shard ---- */

void shard_forget(struct shard *sh, uint32_t rec, uint64_t h)
{
    if (sh->ordered)
        otree_remove(&sh->ot, &sh->ix, rec);
    index_remove(&sh->ix, rec, h);
}

void shard_account_dead(struct shard *sh, const unsigned char *rec)
{
    struct dfile *f = shard_file(sh, rec_u32(rec, REC_FILE));
    if (!f)
        return;
    f->live -= entry_size(sh->db->key_len, rec_u32(rec, REC_VLEN));
    if (f != sh->active)
        want_compaction(sh, f);
}

int shard_note_old(struct shard *sh, int64_t r, const void *key, struct hook_note *hn)
{
    hn->had_old = r >= 0;
    if (r < 0 || !hn->want_old)
        return 0;
    const unsigned char *rec = index_rec(&sh->ix, (uint32_t)r), *cur;
    size_t n = rec_u32(rec, REC_VLEN);
    int rc = value_locked(sh, rec, key, &cur);
    if (rc < 0)
        return rc;
    if (!(hn->old = malloc(n ? n : 1)))
        return err_set(-ENOMEM, "copy the old value for the write hook");
    memcpy(hn->old, cur, n);
    hn->oldlen = n;
    return 0;
}

int shard_check_locked(struct shard *sh, int64_t r, const void *key, const void *expected, size_t elen, int mode)
{
    if (mode == PUT_IF_ABSENT && r >= 0)
        return err_set(ARMDB_EXISTS, "cas in %s", sh->path);
    if (mode != PUT_IF_EQUAL)
        return 0;
    if (r < 0)
        return err_set(ARMDB_NOTFOUND, "cas in %s", sh->path);
    const unsigned char *rec = index_rec(&sh->ix, (uint32_t)r), *cur;
    if (rec_u32(rec, REC_VLEN) != elen)
        return err_set(ARMDB_CONFLICT, "cas in %s", sh->path);
    int rc = value_locked(sh, rec, key, &cur);
    if (rc < 0)
        return rc;
    if (elen && memcmp(cur, expected, elen) != 0)
        return err_set(ARMDB_CONFLICT, "cas in %s", sh->path);
    return 0;
}

int64_t shard_claim(struct shard *sh, const void *key, uint64_t h, bool *fresh)
{
    struct index *ix = &sh->ix;
    int64_t r = index_find(ix, key, h);
    *fresh = r < 0;
    if (r >= 0)
        return r;
    if ((r = index_insert(ix, key, h)) < 0)
        return err_set((int)r, "index of %s", sh->path);
    int rc;
    if (sh->ordered && (rc = otree_insert(&sh->ot, ix, (uint32_t)r)) < 0) {
        index_remove(ix, (uint32_t)r, h);
        return err_set(rc, "ordered index of %s", sh->path);
    }
    return r;
}

void shard_settle(struct shard *sh, uint32_t r, bool fresh, struct dfile *f, uint64_t gsn, uint32_t voff,
                  const void *val, uint32_t vlen)
{
    shard_point(sh, r, fresh, f, gsn, voff, val, vlen);
    sh->puts++;
}

void shard_point(struct shard *sh, uint32_t r, bool fresh, struct dfile *f, uint64_t gsn, uint32_t voff,
                 const void *val, uint32_t vlen)
{
    struct index *ix = &sh->ix;
    unsigned char *rec = index_rec(ix, r);
    if (!fresh)
        shard_account_dead(sh, rec);
    else
        sh->live_keys++;
    rec_set(rec, gsn, f->id, voff, vlen);
    if (ix->inline_len)
        memcpy(rec + REC_KEY + ix->key_len, val, vlen);
    f->live += entry_size(ix->key_len, vlen);
}

int shard_put(struct shard *sh, const void *key, uint64_t h, const void *val, uint32_t vlen,
              const void *expected, size_t elen, int mode, struct hook_note *hn)
{
    int rc;
    pthread_mutex_lock(&sh->mu);
    shard_gate(sh);
    if ((rc = shard_failed(sh)) || (rc = shard_write_begin(sh)) < 0)
        goto out;
    int64_t r = index_find(&sh->ix, key, h);
    if ((rc = shard_check_locked(sh, r, key, expected, elen, mode)) < 0)
        goto out_end;
    if (hn && (rc = shard_note_old(sh, r, key, hn)) < 0)
        goto out_end;
    /* Take the index record first: once the entry is appended the put
     * must not fail. */
    bool fresh;
    if ((r = shard_claim(sh, key, h, &fresh)) < 0) {
        rc = (int)r;
        goto out_end;
    }
    uint64_t gsn;
    uint32_t voff;
    if ((rc = shard_append(sh, key, val, vlen, false, 0, &gsn, &voff)) < 0) {
        if (fresh)
            shard_forget(sh, (uint32_t)r, h);
        goto out_end;
    }
    shard_settle(sh, (uint32_t)r, fresh, sh->active, gsn, voff, val, vlen);
    if (hn)
        hn->gsn = gsn;
    shard_write_end(sh);
    rc = shard_write_done(sh);
    goto out;
out_end:
    shard_write_end(sh);
out:
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int shard_delete(struct shard *sh, const void *key, uint64_t h, struct hook_note *hn)
{
    int rc;
    pthread_mutex_lock(&sh->mu);
    shard_gate(sh);
    if ((rc = shard_failed(sh)) || (rc = shard_write_begin(sh)) < 0)
        goto out;
    int64_t r = index_find(&sh->ix, key, h);
    if (r < 0) {
        rc = err_set(ARMDB_NOTFOUND, "delete in %s", sh->path);
        goto out_end;
    }
    if (hn && (rc = shard_note_old(sh, r, key, hn)) < 0)
        goto out_end;
    uint64_t gsn;
    uint32_t voff;
    if ((rc = shard_append(sh, key, NULL, 0, true, 0, &gsn, &voff)) < 0)
        goto out_end;
    shard_account_dead(sh, index_rec(&sh->ix, (uint32_t)r));
    shard_forget(sh, (uint32_t)r, h);
    sh->live_keys--;
    sh->deletes++;
    if (hn)
        hn->gsn = gsn;
    shard_write_end(sh);
    rc = shard_write_done(sh);
    goto out;
out_end:
    shard_write_end(sh);
out:
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int shard_apply(struct shard *sh, const void *key, uint64_t h, const void *val, uint32_t vlen, uint64_t gsn,
                bool tomb)
{
    int rc;
    pthread_mutex_lock(&sh->mu);
    shard_gate(sh);
    if ((rc = shard_failed(sh)) || (rc = shard_write_begin(sh)) < 0)
        goto out;
    int64_t r = index_find(&sh->ix, key, h);
    if (r >= 0 && (rec_gsn(index_rec(&sh->ix, (uint32_t)r)) & GSN_MASK) >= gsn)
        goto out_end; /* has it, or something newer */
    gsn_observe(sh->db, gsn);
    uint32_t voff;
    uint64_t written;
    if (tomb) {
        if ((rc = shard_append(sh, key, NULL, 0, true, gsn, &written, &voff)) < 0)
            goto out_end;
        if (r >= 0) {
            shard_account_dead(sh, index_rec(&sh->ix, (uint32_t)r));
            shard_forget(sh, (uint32_t)r, h);
            sh->live_keys--;
            sh->deletes++;
        }
    } else {
        bool fresh;
        if ((r = shard_claim(sh, key, h, &fresh)) < 0) {
            rc = (int)r;
            goto out_end;
        }
        if ((rc = shard_append(sh, key, val, vlen, false, gsn, &written, &voff)) < 0) {
            if (fresh)
                shard_forget(sh, (uint32_t)r, h);
            goto out_end;
        }
        shard_settle(sh, (uint32_t)r, fresh, sh->active, gsn, voff, val, vlen);
    }
    shard_write_end(sh);
    rc = shard_write_done(sh);
    goto out;
out_end:
    shard_write_end(sh);
out:
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int shard_barrier_cut(struct shard *sh)
{
    assert(!sh->syncing);
    return sh->db->rdonly ? 0 : shard_barrier_locked(sh);
}

int shard_write_done(struct shard *sh)
{
    if (sh->db->sync_mode != ARMDB_SYNC_ALWAYS)
        return 0;
    return sh->ss ? shared_wait_durable(sh, sh->last_write) : shard_wait_durable(sh, sh->pos);
}

void shard_sync_settle(struct shard *sh)
{
    pthread_mutex_lock(&sh->mu);
    while (sh->syncing)
        pthread_cond_wait(&sh->sync_cv, &sh->mu);
    pthread_mutex_unlock(&sh->mu);
}

int shard_get(struct shard *sh, const void *key, uint64_t h, void *buf, size_t cap, size_t *vlen)
{
    int rc;
    const unsigned char *rec = get_locked(sh, key, h, &rc);
    if (!rec)
        return rc < 0 ? rc : ARMDB_NOTFOUND;
    uint32_t vl = rec_u32(rec, REC_VLEN);
    *vlen = vl;
    if (vl > cap) {
        pthread_mutex_unlock(&sh->mu);
        return ARMDB_BUFSMALL;
    }
    return shard_read_unlock(sh, rec, key, buf, true);
}

/* At close: make the active file durable and give it a hint (or remove it
 * if nothing was written to it). */
int shard_close(struct shard *sh)
{
    pthread_mutex_lock(&sh->mu);
    int rc = 0;
    struct dfile *f = sh->active;
    if (f && !atomic_load(&sh->db->failed)) {
        rc = shard_barrier_locked(sh);
        if (rc == 0 && wbuf_tail(&sh->wb) == 0) {
            (void)shard_drop_active(sh);
        } else if (rc == 0) {
            f->size = wbuf_tail(&sh->wb);
            sh->active = NULL;
            /* Without a hint the next open scans this file: slower, not wrong. */
            if (hint_build_for(sh, f) == 0)
                f->has_hint = true;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}
