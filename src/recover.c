/*
 * recover.c - rebuilding each shard's index at open, and scanning data files.
 *
 * Files are applied in id order, from their hint when it is valid, else by
 * a scan; whatever the order, the entry with the highest GSN for a key wins,
 * and tombstones stay in the index until the shard is done so they can beat
 * older puts in later-applied files. The last file of a shard (the newest
 * without a hint: compaction outputs, which may be newer, always have
 * one) may end in a torn write: its scan stops at the first entry that
 * fails its checksum (or at an all-zero header, which in a plain store
 * only the padding after the last barrier has), and a writer cuts the file
 * there so the garbage can never be read as entries later. In an immutable file, a damaged entry is
 * skipped: the scan resynchronises on the next 8-byte boundary where an
 * intact entry starts, and the damage is counted.
 *
 * A last file that has a hint, even a damaged one, was sealed by a clean
 * close, so it is scanned like an immutable file.
 *
 * A writer gives every file it scanned a hint, and shards recover in
 * parallel threads.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCAN_CHUNK (1u << 20)

struct window {
    int fd;
    const struct dfile *sealed; /* pages to open (encrypted stores), or NULL */
    uint64_t bad;      /* offset of the lowest page that failed to open (UINT64_MAX: none) */
    uint64_t nbad;     /* pages that failed to open, each counted once */
    uint64_t bad_seen; /* pages below this offset are counted */
    uint64_t file_len;
    size_t chunk; /* bytes to read at least, so reloads stay rare */
    unsigned char *buf;
    size_t cap;
    uint64_t off; /* file offset of buf[0] */
    size_t len;   /* valid bytes in buf */
    /* the bytes from mem_off on are not read from the file but from mem
     * (plain; mem_off on a page in sealed files); NULL: none */
    const unsigned char *mem;
    uint64_t mem_off;
};

/* Open the sealed pages just read; those that fail (a partial last page
 * too) read as zeros and are noted. */
static void window_unseal(struct window *w)
{
    uint32_t np = (uint32_t)(round_up(w->len, PAGE) / PAGE);
    if (w->len % PAGE)
        memset(w->buf + w->len, 0, PAGE - w->len % PAGE);
    for (uint32_t i = 0; i < np; i++) {
        i += dfile_unseal(w->sealed, w->off / PAGE + i, w->buf + (size_t)i * PAGE, np - i);
        if (i == np)
            break;
        uint64_t o = w->off + (uint64_t)i * PAGE;
        if (o < w->bad)
            w->bad = o;
        if (o >= w->bad_seen) {
            w->nbad++;
            w->bad_seen = o + PAGE;
        }
    }
}

/* Make [a, b) readable at w->buf + (a - w->off). 1 if the file ends first. */
static int window_need(struct window *w, uint64_t a, uint64_t b)
{
    if (a >= w->off && b <= w->off + w->len)
        return 0;
    if (b > w->file_len)
        return 1;
    uint64_t off = round_down(a, PAGE);
    size_t size = (size_t)round_up(b - off, PAGE);
    size_t rest = (size_t)round_up(w->file_len - off, PAGE);
    if (size < w->chunk)
        size = w->chunk < rest ? w->chunk : rest;
    if (size > w->cap) {
        unsigned char *p = aligned_alloc_zero(size);
        if (!p)
            return -ENOMEM;
        free(w->buf);
        w->buf = p;
        w->cap = size;
    }
    size_t disk = size;
    if (w->mem && off + size > w->mem_off)
        disk = off < w->mem_off ? (size_t)(w->mem_off - off) : 0;
    ssize_t n = disk ? io_pread_full(w->fd, w->buf, disk, off) : 0;
    if (n < 0)
        return (int)n;
    w->off = off;
    w->len = (size_t)n;
    if (w->sealed && n)
        window_unseal(w);
    if (disk < size && (size_t)n == disk) {
        uint64_t from = off + disk, to = off + size < w->file_len ? off + size : w->file_len;
        memcpy(w->buf + disk, w->mem + (from - w->mem_off), (size_t)(to - from));
        n = (ssize_t)(to - off);
        w->len = (size_t)n;
    }
    return b <= off + (uint64_t)n ? 0 : 1;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Does anything but zeros follow `from`? (Is a cut a torn write, or just the
 * padding of the last barrier?) */
static int nonzero_after(struct window *w, uint64_t from, bool *found)
{
    *found = false;
    for (uint64_t a = from; a < w->file_len;) {
        uint64_t b = round_down(a, PAGE) + PAGE;
        if (b > w->file_len)
            b = w->file_len;
        int rc = window_need(w, a, b);
        if (rc < 0)
            return rc;
        if (rc > 0)
            return 0;
        if (!all_zero(w->buf + (a - w->off), (size_t)(b - a))) {
            *found = true;
            return 0;
        }
        a = b;
    }
    return 0;
}

int scan_file(int fd, const struct dfile *sealed, uint64_t file_len, uint32_t klen, uint32_t vmax,
              uint32_t resync_vmax, bool last, scan_fn fn, void *ctx, struct scan_result *res)
{
    return scan_file_mem(fd, sealed, file_len, NULL, 0, klen, vmax, resync_vmax, last, fn, ctx, res);
}

static int scan_range(int fd, const struct dfile *sealed, uint64_t start, uint64_t file_len,
                      const unsigned char *mem, uint64_t mem_off, uint32_t klen, uint32_t vmax, uint32_t resync_vmax,
                      bool last, scan_fn fn, void *ctx, struct scan_result *res);

int scan_file_mem(int fd, const struct dfile *sealed, uint64_t file_len, const unsigned char *mem, uint64_t mem_off,
                  uint32_t klen, uint32_t vmax, uint32_t resync_vmax, bool last, scan_fn fn, void *ctx,
                  struct scan_result *res)
{
    return scan_range(fd, sealed, 0, file_len, mem, mem_off, klen, vmax, resync_vmax, last, fn, ctx, res);
}

int scan_file_from(int fd, uint64_t start, uint64_t end, uint32_t klen, uint32_t vmax, scan_fn fn, void *ctx,
                   struct scan_result *res)
{
    return scan_range(fd, NULL, start, end, NULL, 0, klen, vmax, vmax, false, fn, ctx, res);
}

/* Scan [start, file_len); start is where an entry (or a page's end gap)
 * begins. */
static int scan_range(int fd, const struct dfile *sealed, uint64_t start, uint64_t file_len,
                      const unsigned char *mem, uint64_t mem_off, uint32_t klen, uint32_t vmax, uint32_t resync_vmax,
                      bool last, scan_fn fn, void *ctx, struct scan_result *res)
{
    /* Past damage every 8-byte offset is a candidate, and a candidate whose
     * header claims a huge value would make the scan read that much: while
     * resynchronising only values up to resync_vmax are believed, and the
     * window is twice that, so the cost stays linear in the file size. */
    if (resync_vmax > vmax)
        resync_vmax = vmax;
    struct window w = {.fd = fd, .sealed = sealed, .bad = UINT64_MAX, .file_len = file_len, .chunk = SCAN_CHUNK,
                       .mem = mem, .mem_off = mem ? mem_off : UINT64_MAX};
    assert(!mem || !sealed || mem_off % PAGE == 0);
    if (w.chunk < 2 * ((size_t)resync_vmax + PAGE))
        w.chunk = 2 * ((size_t)resync_vmax + PAGE);
    uint64_t pos = start, torn_at = UINT64_MAX;
    bool in_damage = false;
    int rc = 0;
    memset(res, 0, sizeof *res);
    res->end = start;
    while (pos < file_len) {
        uint64_t left = PAGE - pos % PAGE;
        if (left < ENTRY_HDR) {
            pos += left;
            continue;
        }
        rc = window_need(&w, pos, pos + ENTRY_HDR);
        if (rc < 0)
            goto out;
        if (sealed && last && pos >= w.bad) {
            torn_at = pos; /* a page that does not open: the torn tail */
            break;
        }
        const unsigned char *p = rc ? NULL : w.buf + (pos - w.off);
        bool valid = false, zero = false;
        if (p) {
            zero = all_zero(p, ENTRY_HDR);
            uint32_t vlen = get_le32(p + 4);
            uint64_t end = pos + entry_size(klen, vlen);
            if (sealed && !zero && !in_damage && end > file_len && pos < w.bad) {
                /* Sealed files end on a page: an entry in an intact page
                 * that runs past the end is the start of a torn write,
                 * left when its file was cut at the page after it. */
                torn_at = pos;
                break;
            }
            if (!zero && vlen <= (in_damage ? resync_vmax : vmax) && end <= file_len) {
                rc = window_need(&w, pos, end);
                if (rc < 0)
                    goto out;
                p = w.buf + (pos - w.off);
                valid = rc == 0 && entry_valid(p, klen, vmax, end - pos);
            }
        }
        rc = 0;
        if (valid) {
            uint32_t vlen = get_le32(p + 4);
            uint64_t gsn = get_le64(p + 8);
            rc = fn(ctx, gsn, (uint32_t)(pos + ENTRY_HDR + klen), vlen, p + ENTRY_HDR, p + ENTRY_HDR + klen);
            if (rc < 0)
                goto out;
            pos += entry_size(klen, vlen);
            res->end = pos;
            in_damage = false;
            continue;
        }
        if (sealed && zero && !in_damage) {
            /* The padding of a barrier: every page is sealed whole. */
            pos = round_down(pos, PAGE) + PAGE;
            continue;
        }
        if (sealed && last) {
            torn_at = pos; /* an entry that runs into the torn tail */
            break;
        }
        if (last) {
            /* End of the data: padding after the last barrier, or a torn
             * write that was never acknowledged. */
            bool torn = !zero;
            if (zero && (rc = nonzero_after(&w, pos, &torn)) < 0)
                goto out;
            res->torn = torn ? file_len - pos : 0;
            break;
        }
        if (zero && !in_damage) {
            pos = round_down(pos, PAGE) + PAGE;
            continue;
        }
        if (!in_damage)
            res->corrupt++;
        in_damage = true;
        pos += 8;
    }
    if (sealed && rc == 0) {
        /* Pages are whole: the data ends with the page of its last entry,
         * and anything after that in the last file is torn. */
        res->end = round_up(res->end, PAGE);
        if (last)
            res->torn = torn_at < file_len ? file_len - torn_at : 0;
        else
            res->corrupt += w.nbad;
        res->bad_pages = w.nbad;
    }
out:
    free(w.buf);
    return rc;
}

/* ---- applying entries to a shard's index ---- */

/* Batch members whose batch must be seen whole before they apply (above
 * D, in no aborted run), kept per shard until every shard is read:
 * records of gsn u64, file u32, value offset u32, value length u32, 4
 * spare bytes, key, inline value. */
struct pend {
    unsigned char *buf;
    size_t len, cap;
    uint32_t stride, n;
};
#define PEND_KEY 24u

static int pend_add(struct pend *p, uint64_t gsn, uint32_t file, uint32_t voff, uint32_t vlen,
                    const unsigned char *key, uint32_t klen, const unsigned char *value, uint32_t ilen)
{
    if (p->len + p->stride > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : (size_t)p->stride * 64;
        unsigned char *b = realloc(p->buf, cap);
        if (!b)
            return -ENOMEM;
        p->buf = b;
        p->cap = cap;
    }
    unsigned char *r = p->buf + p->len;
    memset(r, 0, p->stride);
    memcpy(r, &gsn, 8);
    memcpy(r + 8, &file, 4);
    memcpy(r + 12, &voff, 4);
    memcpy(r + 16, &vlen, 4);
    memcpy(r + PEND_KEY, key, klen);
    if (ilen && value && vlen == ilen)
        memcpy(r + PEND_KEY + klen, value, ilen);
    p->len += p->stride;
    p->n++;
    return 0;
}

struct apply_ctx {
    struct shard *sh;
    struct dfile *f;
    struct hint_buf *hb; /* records for the hint a scan produces, or NULL */
    struct pend *pend;   /* where batch members wait */
    uint64_t max_gsn;    /* observed once per file: shards recover in parallel */
};

/* Make the entry the key's newest if its GSN is the highest seen. */
static int apply_index(struct shard *sh, struct dfile *f, uint64_t gsn, uint32_t voff, uint32_t vlen,
                       const unsigned char *key, const unsigned char *value)
{
    struct index *ix = &sh->ix;
    uint32_t klen = ix->key_len;
    uint64_t h = key_hash(key, klen);
    bool fresh;
    int64_t r = index_find_or_insert(ix, key, h, &fresh);
    if (r < 0)
        return (int)r;
    unsigned char *rec = index_rec(ix, (uint32_t)r);
    if (!fresh) {
        uint64_t old = rec_gsn(rec);
        /* Equal GSNs are copies of one entry (a compaction's): files
         * come in id order, so the copy in the newer file is taken. */
        if ((old & GSN_MASK) > (gsn & GSN_MASK))
            return 0;
        if (!(old & GSN_TOMB)) {
            struct dfile *of = shard_file(sh, rec_u32(rec, REC_FILE));
            if (of)
                of->live -= entry_size(klen, rec_u32(rec, REC_VLEN));
        }
    }
    rec_set(rec, gsn, f->id, voff, vlen);
    if (!(gsn & GSN_TOMB)) {
        f->live += entry_size(klen, vlen);
        if (ix->inline_len && value)
            memcpy(rec + REC_KEY + klen, value, ix->inline_len);
    }
    return 0;
}

static int apply_entry(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                       const unsigned char *value)
{
    struct apply_ctx *c = vctx;
    struct shard *sh = c->sh;
    struct index *ix = &sh->ix;
    uint32_t klen = ix->key_len;
    int rc;
    if (c->hb && (rc = hint_add(c->hb, klen, ix->inline_len, gsn, voff, vlen, key, value)) < 0)
        return rc;
    dfile_note(c->f, gsn, entry_size(klen, vlen));
    /* In a fixed-value store an entry of another length cannot be ours. */
    if (ix->inline_len && !(gsn & GSN_TOMB) && vlen != ix->inline_len)
        return 0;
    if ((gsn & GSN_MASK) > c->max_gsn)
        c->max_gsn = gsn & GSN_MASK;
    if (gsn & GSN_BATCH) {
        armdb *db = sh->db;
        if (batch_aborted(db, gsn))
            return 0;
        /* (Without pend: a shared store's files as another process left
         * them, whose batches are whole; see attach_list.) */
        if ((gsn & GSN_MASK) > atomic_load(&db->durable_gsn) && c->pend)
            return pend_add(c->pend, gsn, c->f->id, voff, vlen, key, klen, value, ix->inline_len);
    }
    return apply_index(sh, c->f, gsn, voff, vlen, key, value);
}

/* "NNNNNNNN.<ext>" with a non-zero id. */
static bool parse_file_name(const char *name, const char *ext, uint32_t *id)
{
    if (strlen(name) != 13 || name[8] != '.' || strcmp(name + 9, ext) != 0)
        return false;
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(name[i] - '0');
    }
    *id = v;
    return v != 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Ids of the shard's data files, sorted. Leftover temp files of an
 * interrupted hint write are removed by writers. */
static int list_files(struct shard *sh, uint32_t **ids, uint32_t *n)
{
    int fd = dup(sh->dirfd);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    /* The duplicate shares the directory's offset with sh->dirfd: an
     * earlier listing left it at the end. */
    rewinddir(d);
    uint32_t *v = NULL, cnt = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    uint32_t orphan = 0;
    while ((e = readdir(d))) {
        uint32_t id;
        if (parse_file_name(e->d_name, "hint", &id)) {
            char data[32], tmp[40];
            dfile_name(data, sizeof data, id, "data");
            dfile_name(tmp, sizeof tmp, id, "compact.tmp");
            if (faccessat(sh->dirfd, data, F_OK, 0) < 0 && errno == ENOENT) {
                /* A compaction writes its output's hint before it renames
                 * the output into place: with the .tmp still there, the
                 * compaction was cut short and its old files stand. */
                if (faccessat(sh->dirfd, tmp, F_OK, 0) == 0) {
                    if (shard_tidies(sh))
                        (void)unlinkat(sh->dirfd, e->d_name, 0);
                } else {
                    orphan = id;
                }
            }
        }
        if (parse_file_name(e->d_name, "tags", &id) && shard_tidies(sh)) {
            /* The tags of a data file never made (or removed after them). */
            char data[32];
            dfile_name(data, sizeof data, id, "data");
            if (faccessat(sh->dirfd, data, F_OK, 0) < 0 && errno == ENOENT)
                (void)unlinkat(sh->dirfd, e->d_name, 0);
        }
        if (!parse_file_name(e->d_name, "data", &id))
            continue;
        if (cnt == cap) {
            uint32_t *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
        }
        v[cnt++] = id;
    }
    if (shard_tidies(sh)) {
        rewinddir(d);
        while ((e = readdir(d)))
            if (strstr(e->d_name, ".tmp"))
                (void)unlinkat(sh->dirfd, e->d_name, 0);
    }
    closedir(d);
    /* A hint never outlives its data file (removal goes hint first), so
     * one without it means the data file was lost: refuse, rather than
     * let older values of its keys come back. */
    if (rc == 0 && orphan)
        rc = err_set(ARMDB_CORRUPT, "%s/%08u.data is missing, its hint is there", sh->path, orphan);
    if (rc < 0) {
        free(v);
        return rc;
    }
    if (cnt)
        qsort(v, cnt, sizeof *v, cmp_u32);
    *ids = v;
    *n = cnt;
    return 0;
}

/* Data file id is sealed with the key of salt, not the store's: what a
 * rekey cut short left behind (its new files, if the meta file still
 * names the old key; the old ones, if it names the new). Removed by a
 * writer, skipped by a reader; any other key is damage. */
static int other_key(struct shard *sh, uint32_t id, const unsigned char salt[16])
{
    const struct meta *m = &sh->db->meta;
    static const unsigned char zero[16];
    bool rekey = (memcmp(salt, m->next_salt, 16) == 0 || memcmp(salt, m->prev_salt, 16) == 0) &&
                 memcmp(salt, zero, 16) != 0;
    if (!rekey)
        return err_set(ARMDB_CORRUPT, "%s/%08u.tags names a key that is not the store's", sh->path, id);
    return sh->db->rdonly ? 0 : dfile_unlink_set(sh, id);
}

/* Load data file f (opened, one reference, which is the shard's once it
 * is listed). last: the file that may end in a torn write. limit: the
 * bytes of it to read (a shared store's head), or UINT64_MAX. */
static int recover_file(struct shard *sh, struct pend *pend, struct dfile *f, bool last, uint64_t limit)
{
    armdb *db = sh->db;
    uint32_t id = f->id;
    char name[32];
    int rc;
    dfile_name(name, sizeof name, id, "data");
    struct stat st;
    if (fstat(f->fd, &st) < 0) {
        rc = -errno;
        dfile_unref(f);
        return err_set(rc, "stat %s/%s", sh->path, name);
    }
    uint64_t file_len = (uint64_t)st.st_size < limit ? (uint64_t)st.st_size : limit;
    if (db->crypt) {
        unsigned char salt[16];
        rc = tags_load(sh, f, file_len, salt);
        if (rc == 2) {
            /* Reported (harmless while the slots hold), but not in the
             * file a torn write may have reached before its first sync,
             * nor for a file with no page to seal. */
            sh->corrupt += !last && file_len > 0;
            rc = 0;
        }
        if (rc != 0) {
            dfile_unref(f);
            return rc < 0 ? rc : other_key(sh, id, salt);
        }
    }
    char hint[32];
    dfile_name(hint, sizeof hint, id, "hint");
    struct stat hst;
    int hint_rc = fstatat(sh->dirfd, hint, &hst, 0) == 0 ? 0 : -errno;
    if (file_len == 0 && shard_tidies(sh) && hint_rc == -ENOENT) {
        /* Created but never written: nothing to keep. (An empty file with
         * a hint was sealed with data and then cut: its hint is loaded so
         * that its keys report the damage.) */
        dfile_unref(f);
        (void)dfile_unlink_set(sh, id);
        return 0;
    }
    if ((rc = shard_add_file(sh, f)) < 0) {
        dfile_unref(f);
        return err_set(rc, "open %s/%s", sh->path, name);
    }
    struct apply_ctx c = {.sh = sh, .f = f, .pend = pend};
    uint64_t data_len = 0;
    /* Size the index for the hint's records up front (a hint of a file of
     * new keys adds that many). */
    if (hint_rc == 0 && hst.st_size > HINT_HDR + 8) {
        uint64_t n = ((uint64_t)hst.st_size - HINT_HDR - 8) / (16 + db->key_len + db->value_len);
        if ((rc = index_reserve(&sh->ix, sh->ix.used + n)) < 0)
            return err_set(rc, "index of %s", sh->path);
    }
    struct pagekey hpk;
    rc = hint_load(sh->dirfd, id, db->key_len, db->value_len, &data_len, hint_pk(f, &hpk), apply_entry, &c);
    gsn_observe(db, c.max_gsn);
    if (rc < 0)
        return err_set(rc, "load hint of %s/%s", sh->path, name);
    if (rc == 0) {
        /* A data file shorter than its hint says was cut after it was
         * sealed. The hint still holds: gets of the entries past the end
         * report ARMDB_CORRUPT rather than let older values come back. */
        if (data_len > file_len)
            sh->corrupt++;
        f->size = data_len;
        f->has_hint = true;
        sh->hints_loaded++;
        return 0;
    }
    /* The last file may end in a torn write, unless a (damaged) hint shows
     * it was sealed: then damage in it is damage, not a tail to cut. */
    bool torn_tail = last && rc == 1;
    struct hint_buf hb = {0};
    c.hb = shard_tidies(sh) ? &hb : NULL;
    struct scan_result res;
    rc = scan_file(f->fd, f->pk.cr ? f : NULL, file_len, db->key_len, MAX_WBUF - WBUF_SLACK, db->vmax, torn_tail,
                   apply_entry, &c, &res);
    gsn_observe(db, c.max_gsn);
    if (rc < 0) {
        hint_buf_free(&hb);
        return err_set(rc, "scan %s/%s", sh->path, name);
    }
    /* A sealed file none of whose pages open is not this file: moved from
     * another place, store or key. */
    if (f->pk.cr && !torn_tail && file_len && res.bad_pages == round_up(file_len, PAGE) / PAGE) {
        hint_buf_free(&hb);
        return err_set(ARMDB_CORRUPT, "%s/%s: no page opens with this store's key (moved from another file or "
                       "store, or damaged)", sh->path, name);
    }
    f->size = res.end;
    sh->files_scanned++;
    sh->corrupt += res.corrupt;
    sh->torn += res.torn;
    if (shard_tidies(sh)) {
        if (res.torn && ((rc = io_ftruncate(f->fd, res.end)) < 0 || (rc = io_fdatasync(f->fd)) < 0)) {
            hint_buf_free(&hb);
            return err_set(rc, "cut the torn tail of %s/%s", sh->path, name);
        }
        /* What a crashed writer left in the page cache is durable from
         * now on, so D may pass the batch members it holds. */
        if (torn_tail && !res.torn && res.end && (rc = io_fdatasync(f->fd)) < 0) {
            hint_buf_free(&hb);
            return err_set(rc, "fdatasync %s/%s", sh->path, name);
        }
        /* A missing hint only costs a scan at the next open: not fatal. */
        if (hint_write(sh->dirfd, id, db->key_len, &hb, f->size, db, hint_pk(f, &hpk)) == 0)
            f->has_hint = true;
    }
    hint_buf_free(&hb);
    return 0;
}

/* Phase one: the shard's files into its index (batch members aside). */
static int recover_files(struct shard *sh, struct pend *pend)
{
    uint32_t *ids = NULL, n = 0;
    int rc = list_files(sh, &ids, &n);
    if (rc == ARMDB_CORRUPT)
        return rc;
    if (rc < 0)
        return err_set(rc, "list %s", sh->path);
    /* The file that may end in a torn write is the one that was being
     * appended to: the newest without a hint. (A compaction's output can
     * be newer, but it has its hint before it has its name.) */
    uint32_t last = 0;
    for (uint32_t i = n; i-- > 0 && !last;) {
        char hint[32], data[32];
        dfile_name(hint, sizeof hint, ids[i], "hint");
        dfile_name(data, sizeof data, ids[i], "data");
        struct stat st;
        /* (An empty one is a file made and never written: a writer of a
         * shared store that died as it rotated. The one before it was the
         * one appended to.) */
        if (faccessat(sh->dirfd, hint, F_OK, 0) < 0 && fstatat(sh->dirfd, data, &st, 0) == 0 && st.st_size > 0)
            last = ids[i];
    }
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        struct dfile *f;
        if ((rc = dfile_open(sh, ids[i], false, &f)) == 0)
            rc = recover_file(sh, pend, f, ids[i] == last, UINT64_MAX);
    }
    sh->next_id = n ? ids[n - 1] + 1 : 1;
    free(ids);
    return rc;
}

/* A shared store's later opener, or a process that fell behind the others
 * (shard_reload): the files as they stand, changing nothing. With the
 * shard's shared mutex held the files are listed and opened (so none can
 * go before it is read) and the head taken; attach_load reads them, and
 * catching up starts from that head. The head's file is read up to the
 * head; no file ends in a torn write (bytes past a head are not read),
 * and every batch is whole (the first opener settled the rest; batches
 * are published whole). */
struct attach {
    uint32_t *ids, n;
    struct dfile **fs;
    uint64_t head;
};

static int attach_list(struct shard *sh, struct attach *a)
{
    int rc = list_files(sh, &a->ids, &a->n);
    if (rc < 0 && rc != ARMDB_CORRUPT)
        rc = err_set(rc, "list %s", sh->path);
    if (rc == 0 && a->n && !(a->fs = calloc(a->n, sizeof *a->fs)))
        rc = err_set(-ENOMEM, "open %s", sh->path);
    for (uint32_t i = 0; i < a->n && rc == 0; i++)
        rc = dfile_open(sh, a->ids[i], false, &a->fs[i]);
    a->head = atomic_load(&sh->ss->head);
    sh->at = sh->last_write = a->head;
    sh->ev_seen = sh->ss->nevents;
    sh->seen_seq = atomic_load(&sh->ss->seq);
    return rc;
}

static int attach_load(struct shard *sh, struct attach *a, int rc)
{
    for (uint32_t i = 0; i < a->n && a->fs && a->fs[i]; i++) {
        if (rc == 0)
            rc = recover_file(sh, NULL, a->fs[i], false,
                              a->ids[i] == AT_ID(a->head) ? AT_OFF(a->head) : UINT64_MAX);
        else
            dfile_unref(a->fs[i]);
    }
    if (rc == 0 && !(sh->active = shard_file(sh, AT_ID(a->head))))
        rc = err_set(ARMDB_CORRUPT, "%s/%08u.data, the shard's active file, is missing", sh->path,
                     AT_ID(a->head));
    free(a->fs);
    free(a->ids);
    return rc;
}

static int attach_files(struct shard *sh)
{
    struct attach a = {0};
    int rc = shared_lock_shard(sh);
    if (rc < 0)
        return rc;
    rc = attach_list(sh, &a);
    shared_unlock_shard(sh);
    return attach_load(sh, &a, rc);
}

static int reload(struct shard *sh);

/* The index as recovery leaves it: tombstones dropped (they have done their
 * work), keys counted, the ordered index built. */
static int index_settle(struct shard *sh)
{
    struct index *ix = &sh->ix;
    for (uint32_t r = 0; r < ix->nrecs; r++) {
        unsigned char *rec = index_rec(ix, r);
        uint64_t g = rec_gsn(rec);
        if (g && (g & GSN_TOMB))
            index_remove(ix, r, key_hash(rec + REC_KEY, ix->key_len));
    }
    sh->live_keys = ix->used;
    if (sh->ordered) {
        int rc = otree_build(&sh->ot, ix);
        if (rc < 0)
            return err_set(rc, "build the ordered index of %s", sh->path);
    }
    return 0;
}

int shard_reload(struct shard *sh)
{
    sh->reloading = true; /* the files are the other processes' too: change nothing */
    int rc = reload(sh);
    sh->reloading = false;
    return rc;
}

static int reload(struct shard *sh)
{
    struct index old_ix = sh->ix;
    struct otree old_ot = sh->ot;
    struct dfile **old_files = sh->files, *old_active = sh->active;
    uint32_t old_n = sh->nfiles, old_cap = sh->files_cap;
    uint64_t old_keys = sh->live_keys;
    sh->files = NULL;
    sh->nfiles = sh->files_cap = 0;
    sh->active = NULL;
    int rc = index_init(&sh->ix, sh->db->key_len, sh->db->value_len);
    if (rc == 0 && sh->ordered)
        rc = otree_init(&sh->ot, sh->db->key_len);
    if (rc < 0) {
        rc = err_set(rc, "reload %s", sh->path);
    } else {
        struct attach a = {0};
        rc = attach_load(sh, &a, attach_list(sh, &a));
    }
    if (rc == 0)
        rc = index_settle(sh);
    struct dfile **drop = rc == 0 ? old_files : sh->files;
    uint32_t ndrop = rc == 0 ? old_n : sh->nfiles;
    for (uint32_t i = 0; i < ndrop; i++)
        dfile_unref(drop[i]);
    free(drop);
    if (rc == 0) {
        index_free(&old_ix);
        if (sh->ordered)
            otree_free(&old_ot);
        return 0;
    }
    /* As it was: the caller reports the failure. */
    index_free(&sh->ix);
    if (sh->ordered)
        otree_free(&sh->ot);
    sh->ix = old_ix;
    sh->ot = old_ot;
    sh->files = old_files;
    sh->nfiles = old_n;
    sh->files_cap = old_cap;
    sh->active = old_active;
    sh->live_keys = old_keys;
    return rc;
}

/* Phase three, once batches are settled: tombstones dropped, the ordered
 * index built, a fresh active file. */
static int recover_finish(struct shard *sh)
{
    int rc = index_settle(sh);
    if (rc == 0 && shard_tidies(sh))
        rc = shard_new_active(sh);
    return rc;
}

/* ---- phase two: batches seen whole, or not at all ---- */

struct pref {
    uint64_t gsn; /* with flags */
    uint32_t shard, at;
};

static int by_gsn(const void *a, const void *b)
{
    uint64_t x = ((const struct pref *)a)->gsn & GSN_MASK, y = ((const struct pref *)b)->gsn & GSN_MASK;
    return (x > y) - (x < y);
}

static int apply_pending(armdb *db, struct pend *pend, const struct pref *r)
{
    struct shard *sh = &db->shards[r->shard];
    const unsigned char *p = pend[r->shard].buf + (size_t)r->at * pend[r->shard].stride;
    uint32_t file, voff, vlen;
    memcpy(&file, p + 8, 4);
    memcpy(&voff, p + 12, 4);
    memcpy(&vlen, p + 16, 4);
    struct dfile *f = shard_file(sh, file);
    if (!f)
        return 0; /* cannot happen: its file was listed */
    return apply_index(sh, f, r->gsn, voff, vlen, p + PEND_KEY, p + PEND_KEY + db->key_len);
}

/* Apply the members of every batch whose GSNs are all there, first to
 * last; record the others as never to apply. (Equal GSNs are copies of one
 * entry: an interrupted compaction leaves both.) */
static int settle_batches(armdb *db, struct pend *pend)
{
    uint64_t total = 0;
    for (uint32_t s = 0; s < db->nshards; s++)
        total += pend[s].n;
    if (!total)
        return 0;
    struct pref *v = malloc(total * sizeof *v);
    if (!v)
        return err_set(-ENOMEM, "recover the batches of %s", db->dir);
    uint64_t n = 0;
    for (uint32_t s = 0; s < db->nshards; s++)
        for (uint32_t i = 0; i < pend[s].n; i++) {
            uint64_t g;
            memcpy(&g, pend[s].buf + (size_t)i * pend[s].stride, 8);
            v[n++] = (struct pref){g, s, i};
        }
    qsort(v, n, sizeof *v, by_gsn);
    struct gsn_run *torn = NULL;
    uint32_t ntorn = 0;
    int rc = 0;
    uint64_t i = 0;
    while (i < n && rc == 0) {
        /* A run: consecutive GSNs from a first member (or from an orphan)
         * to a last member, no first member inside. */
        uint64_t start = i, end = i; /* [start, end] distinct GSNs, with their copies */
        bool whole = false;
        for (;;) {
            uint64_t g = v[end].gsn & GSN_MASK, next = end;
            while (next < n && (v[next].gsn & GSN_MASK) == g)
                next++;
            if (v[end].gsn & GSN_LAST) {
                whole = (v[start].gsn & GSN_FIRST) != 0;
                end = next;
                break;
            }
            if (next < n && (v[next].gsn & GSN_MASK) == g + 1 && !(v[next].gsn & GSN_FIRST)) {
                end = next;
                continue;
            }
            end = next;
            break;
        }
        if (whole) {
            for (uint64_t k = start; k < end && rc == 0; k++)
                rc = apply_pending(db, pend, &v[k]);
        } else {
            struct gsn_run *t = realloc(torn, (ntorn + 1) * sizeof *t);
            if (!t) {
                rc = -ENOMEM;
                break;
            }
            torn = t;
            torn[ntorn++] = (struct gsn_run){v[start].gsn & GSN_MASK, v[end - 1].gsn & GSN_MASK};
        }
        i = end;
    }
    uint64_t top = v[n - 1].gsn & GSN_MASK;
    free(v);
    if (rc == 0 && ntorn)
        rc = batch_note_aborted(db, torn, ntorn);
    free(torn);
    if (rc < 0)
        return err_set(rc, "recover the batches of %s", db->dir);
    uint64_t cur = atomic_load(&db->batch_max);
    if (top > cur)
        atomic_store(&db->batch_max, top);
    return 0;
}

struct recover_job {
    armdb *db;
    struct pend *pend;
    int phase; /* 1: files, 3: finish */
    atomic_uint next;
    pthread_mutex_t mu;
    int rc;
    char msg[512];
};

static void *recover_worker(void *arg)
{
    struct recover_job *j = arg;
    for (;;) {
        unsigned i = atomic_fetch_add(&j->next, 1);
        if (i >= j->db->nshards)
            break;
        struct shard *sh = &j->db->shards[i];
        int rc = j->phase == 3 ? recover_finish(sh) : j->db->attaching ? attach_files(sh) : recover_files(sh, &j->pend[i]);
        if (rc < 0) {
            pthread_mutex_lock(&j->mu);
            if (j->rc == 0) {
                j->rc = rc;
                snprintf(j->msg, sizeof j->msg, "%s", armdb_errmsg());
            }
            pthread_mutex_unlock(&j->mu);
        }
    }
    return NULL;
}

/* Run one phase on every shard, on up to one thread per CPU. */
static int run_phase(struct recover_job *j, int phase)
{
    armdb *db = j->db;
    j->phase = phase;
    atomic_store(&j->next, 0);
    unsigned nthreads = (unsigned)online_cpus();
    if (nthreads > db->nshards)
        nthreads = db->nshards;
    pthread_t th[ARMDB_SHARDS_MAX];
    unsigned started = 0;
    for (unsigned i = 1; i < nthreads; i++) {
        if (pthread_create(&th[started], NULL, recover_worker, j) != 0)
            break;
        started++;
    }
    recover_worker(j);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return j->rc < 0 ? err_restore(j->rc, j->msg) : 0;
}

int recover_shards(armdb *db)
{
    struct recover_job j = {.db = db};
    atomic_init(&j.next, 0);
    pthread_mutex_init(&j.mu, NULL);
    int rc = 0;
    j.pend = calloc(db->nshards, sizeof *j.pend);
    if (!j.pend)
        rc = err_set(-ENOMEM, "open %s", db->dir);
    for (uint32_t s = 0; rc == 0 && s < db->nshards; s++)
        j.pend[s].stride = (uint32_t)round_up(PEND_KEY + db->key_len + db->value_len, 8);
    if (rc == 0)
        rc = run_phase(&j, 1);
    if (rc == 0)
        rc = settle_batches(db, j.pend);
    if (j.pend)
        for (uint32_t s = 0; s < db->nshards; s++)
            free(j.pend[s].buf);
    free(j.pend);
    if (rc == 0)
        rc = run_phase(&j, 3);
    pthread_mutex_destroy(&j.mu);
    return rc;
}

struct hint_ctx {
    struct hint_buf hb;
    uint32_t klen, ilen;
};

static int add_hint_only(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                         const unsigned char *value)
{
    struct hint_ctx *c = vctx;
    return hint_add(&c->hb, c->klen, c->ilen, gsn, voff, vlen, key, value);
}

/* Scan a sealed file and write its hint (after rotation, and at close). */
int hint_build_for(struct shard *sh, struct dfile *f)
{
    armdb *db = sh->db;
    struct hint_ctx c = {.klen = db->key_len, .ilen = db->value_len};
    struct scan_result res;
    int rc = scan_file(f->fd, f->pk.cr ? f : NULL, f->size, db->key_len, MAX_WBUF - WBUF_SLACK, db->vmax, false,
                       add_hint_only, &c, &res);
    struct pagekey hpk;
    if (rc == 0)
        rc = hint_write(sh->dirfd, f->id, db->key_len, &c.hb, f->size, db, hint_pk(f, &hpk));
    hint_buf_free(&c.hb);
    return rc;
}
