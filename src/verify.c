/*
 * verify.c - armdb_verify: every byte of every data file checked, live
 * entries or dead, and each damage reported with its shard, file and
 * offset.
 *
 * Per shard, the list of data files is taken under the shard's lock and
 * each file referenced (dfile_ref), so a compaction running meanwhile can
 * unlist and unlink a file but not close it under the reader; the lock is
 * then let go, and the files are read one after another without it. The
 * active file is read up to what is in the file, noted under the lock:
 * below wbuf_mem_base, and (no write in flight) up to what the last
 * barrier wrote of the partial page, which later barriers rewrite only
 * with the same bytes followed by new ones. What is above it is still in
 * the write buffer and has not reached the disk to be damaged; an entry
 * that runs past it is not damage.
 *
 * Per file: its hint (its checksum, and the AEAD tag of each of its pages
 * in an encrypted store), its length against what the hint says, the tag
 * of each sealed page (a pass of its own, so that a damaged page is found
 * even where the scan would not notice it: a page of zeros inside a value
 * of zeros), then the entries, through scan_file, which calls back for
 * each intact entry and skips damaged ones. Where two intact entries are
 * not adjacent, the bytes between them are looked at the way a reader
 * walks them: the zero gap at a page end and the zero padding of a barrier
 * are the format's; anything else is damage, reported once for the whole
 * run of bytes up to the next intact entry (a run may hold several damaged
 * entries: past the first, their boundaries cannot be trusted). Entries
 * lost inside a sealed page that fails to open are covered by that page's
 * report, as are the remains of an entry that began in such a page.
 *
 * Memory: one chunk buffer (1 MiB) for the page pass, one page for the
 * walks between entries, and scan_file's window.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#define VERIFY_CHUNK (1u << 20)

struct vfile {
    struct dfile *f;
    uint64_t limit; /* bytes to verify */
    bool active;
};

struct verify {
    armdb *db;
    struct shard *sh;
    armdb_verify_fn fn;
    void *ctx;
    armdb_verify_report *rep;
    int stop;  /* fn's non-zero answer */
    int io_rc; /* the first read error */
    /* the file being verified */
    struct dfile *f;
    uint64_t limit;
    bool active;         /* an entry may run past limit: its rest is in memory */
    bool cut;            /* the file ends before its hint says (reported) */
    uint64_t expect;     /* where the entry after the last intact one would start */
    unsigned char *page; /* one page, for the walks between entries */
    uint64_t page_no;    /* the page in it (UINT64_MAX: none) */
    bool page_ok;        /* it opened (always, in a plain store) */
};

static int report(struct verify *v, unsigned what, uint64_t off, uint64_t len, int rc)
{
    armdb_verify_report *r = v->rep;
    armdb_verify_damage d = {
        .shard = v->sh->no, .file = v->f->id, .what = what, .rc = rc, .offset = off, .length = len};
    switch (what) {
    case ARMDB_VERIFY_ENTRY: r->damaged_entries++; break;
    case ARMDB_VERIFY_PAGE: r->damaged_pages++; break;
    case ARMDB_VERIFY_HINT: r->damaged_hints++; break;
    case ARMDB_VERIFY_SHORT: r->short_files++; break;
    case ARMDB_VERIFY_READ:
        r->unread_files++;
        if (v->io_rc == 0)
            v->io_rc = rc;
        break;
    default: break;
    }
    if (what != ARMDB_VERIFY_FILE)
        r->damage++;
    if (!v->fn)
        return 0;
    int s = v->fn(v->ctx, &d);
    if (s != 0 && v->stop == 0)
        v->stop = s;
    return s;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Page pno of the file into v->page, opened if sealed (a page that does
 * not open reads as zeros, as the scan reads it). */
static int read_page(struct verify *v, uint64_t pno)
{
    if (v->page_no == pno)
        return 0;
    ssize_t n = io_pread_full(v->f->fd, v->page, PAGE, pno * PAGE);
    if (n < 0)
        return (int)n;
    memset(v->page + n, 0, PAGE - (size_t)n);
    v->page_no = pno;
    v->page_ok = true;
    if (v->f->pk.cr)
        v->page_ok = dfile_unseal(v->f, pno, v->page, 1) == 1;
    return 0;
}

/* The bytes [from, to) lie between two intact entries (or after the last
 * one, at_end): report them if they are not the format's own zeros. */
static int walk_gap(struct verify *v, uint64_t from, uint64_t to, bool at_end)
{
    uint32_t klen = v->db->key_len;
    bool after_bad = false;
    for (uint64_t p = from; p < to;) {
        uint64_t left = PAGE - p % PAGE;
        uint64_t next = p + left;
        if (left < ENTRY_HDR) {
            p = next;
            continue;
        }
        int rc = read_page(v, p / PAGE);
        if (rc < 0)
            return rc;
        if (!v->page_ok) {
            after_bad = true; /* reported by the page pass */
            p = next;
            continue;
        }
        const unsigned char *h = v->page + p % PAGE;
        if (all_zero(h, ENTRY_HDR)) {
            uint64_t end = next < to ? next : to;
            if (all_zero(h, (size_t)(end - p))) {
                /* padding: nothing of the format follows in this page */
                after_bad = false;
                p = next;
                continue;
            }
            /* zeros where an entry began: the entries after them in the
             * page are lost to a reader */
        } else {
            if (after_bad && p % PAGE == 0)
                return 0; /* the rest of an entry begun in a damaged page */
            uint32_t vlen = get_le32(h + 4);
            bool runs_past = vlen <= MAX_WBUF - WBUF_SLACK && p + entry_size(klen, vlen) > to;
            if (at_end && runs_past && (v->active || v->cut))
                return 0; /* still in memory, or in the part reported cut */
        }
        return report(v, ARMDB_VERIFY_ENTRY, p, to - p, ARMDB_CORRUPT);
    }
    return 0;
}

static int on_entry(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                    const unsigned char *value)
{
    (void)gsn;
    (void)key;
    (void)value;
    struct verify *v = vctx;
    uint64_t start = (uint64_t)voff - ENTRY_HDR - v->db->key_len;
    if (start > v->expect) {
        int rc = walk_gap(v, v->expect, start, false);
        if (rc < 0)
            return rc;
        if (v->stop)
            return -ECANCELED;
    }
    v->expect = start + entry_size(v->db->key_len, vlen);
    v->rep->entries++;
    return 0;
}

/* The tag of every sealed page in [0, limit). */
static int check_pages(struct verify *v, unsigned char *buf)
{
    struct dfile *f = v->f;
    uint64_t npages = round_up(v->limit, PAGE) / PAGE;
    for (uint64_t first = 0; first < npages;) {
        uint32_t np = npages - first < VERIFY_CHUNK / PAGE ? (uint32_t)(npages - first) : VERIFY_CHUNK / PAGE;
        ssize_t n = io_pread_full(f->fd, buf, (size_t)np * PAGE, first * PAGE);
        if (n < 0)
            return (int)n;
        if ((size_t)n < (size_t)np * PAGE)
            memset(buf + n, 0, (size_t)np * PAGE - (size_t)n);
        for (uint32_t i = 0; i < np; i++) {
            i += dfile_unseal(f, first + i, buf + (size_t)i * PAGE, np - i);
            if (i == np)
                break;
            if (report(v, ARMDB_VERIFY_PAGE, (first + i) * PAGE, PAGE, ARMDB_CORRUPT) != 0)
                return 0;
        }
        v->rep->pages += np;
        first += np;
    }
    return 0;
}

static int no_record(void *ctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                     const unsigned char *value)
{
    (void)ctx, (void)gsn, (void)voff, (void)vlen, (void)key, (void)value;
    return 0;
}

static int verify_file(struct verify *v, const struct vfile *vf, unsigned char *buf)
{
    armdb *db = v->db;
    struct shard *sh = v->sh;
    struct dfile *f = vf->f;
    v->f = f;
    v->limit = vf->limit;
    v->active = vf->active;
    v->cut = false;
    v->expect = 0;
    v->page_no = UINT64_MAX;
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return report(v, ARMDB_VERIFY_READ, 0, v->limit, -errno);
    if (!vf->active) {
        struct pagekey hpk;
        uint64_t data_len = 0;
        int rc = hint_load(sh->dirfd, f->id, db->key_len, db->value_len, &data_len, hint_pk(f, &hpk),
                           no_record, NULL);
        if (rc < 0)
            return rc;
        if (rc == 0)
            v->rep->hints++;
        if (rc == 2 && report(v, ARMDB_VERIFY_HINT, 0, 0, ARMDB_CORRUPT) != 0)
            return 0;
    }
    if (!vf->active && (uint64_t)st.st_size < v->limit) {
        v->cut = true;
        if (report(v, ARMDB_VERIFY_SHORT, (uint64_t)st.st_size, v->limit - (uint64_t)st.st_size,
                   ARMDB_CORRUPT))
            return 0;
        v->limit = (uint64_t)st.st_size;
    }
    int rc = 0;
    if (f->pk.cr)
        rc = check_pages(v, buf);
    if (rc == 0 && !v->stop) {
        struct scan_result res;
        rc = scan_file(f->fd, f->pk.cr ? f : NULL, v->limit, db->key_len, MAX_WBUF - WBUF_SLACK, db->vmax,
                       false, on_entry, v, &res);
    }
    if (rc == -ECANCELED && v->stop)
        return 0;
    if (rc == 0 && !v->stop)
        rc = walk_gap(v, v->expect, v->limit, true);
    if (rc < 0)
        return report(v, ARMDB_VERIFY_READ, 0, v->limit, rc);
    if (v->stop)
        return 0;
    v->rep->files++;
    v->rep->bytes += v->limit;
    return report(v, ARMDB_VERIFY_FILE, 0, v->limit, 0);
}

/* The shard's files, referenced, with how much of each to read. */
static int pin_files(struct shard *sh, struct vfile **out, uint32_t *n)
{
    pthread_mutex_lock(&sh->mu);
    uint32_t cnt = sh->nfiles;
    struct vfile *v = cnt ? calloc(cnt, sizeof *v) : NULL;
    if (cnt && !v) {
        pthread_mutex_unlock(&sh->mu);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < cnt; i++) {
        struct dfile *f = sh->files[i];
        v[i].f = f;
        v[i].limit = f->size;
        if (f == sh->active && sh->wb.buf) {
            /* In the file: what left the buffer, and (nothing in flight)
             * what a barrier wrote of the partial page, which the next
             * barrier only rewrites with the same bytes. */
            const struct wbuf *wb = &sh->wb;
            uint64_t end = wbuf_mem_base(wb);
            if (wb->fl_state == FL_NONE && wb->flushed > end)
                end = wb->flushed;
            v[i].active = true;
            if (end < v[i].limit)
                v[i].limit = end;
        }
        dfile_ref(f);
    }
    pthread_mutex_unlock(&sh->mu);
    *out = v;
    *n = cnt;
    return 0;
}

API int armdb_verify(armdb *db, armdb_verify_fn fn, void *ctx, armdb_verify_report *out)
{
    if (!db || !out)
        return err_set(ARMDB_INVAL, "armdb_verify: %s is NULL", db ? "out" : "db");
    memset(out, 0, sizeof *out);
    struct verify v = {.db = db, .fn = fn, .ctx = ctx, .rep = out};
    unsigned char *buf = db->crypt ? aligned_alloc_zero(VERIFY_CHUNK) : NULL;
    v.page = aligned_alloc_zero(PAGE);
    int rc = 0;
    if (!v.page || (db->crypt && !buf))
        rc = -ENOMEM;
    for (uint32_t s = 0; s < db->nshards && rc == 0 && !v.stop; s++) {
        struct vfile *files = NULL;
        uint32_t n = 0;
        v.sh = &db->shards[s];
        rc = pin_files(v.sh, &files, &n);
        for (uint32_t i = 0; i < n; i++) {
            if (rc == 0 && !v.stop)
                rc = verify_file(&v, &files[i], buf);
            dfile_unref(files[i].f);
        }
        free(files);
    }
    free(buf);
    free(v.page);
    if (v.stop)
        return v.stop;
    if (rc < 0)
        return err_set(rc, "verify %s", db->dir);
    if (v.io_rc)
        return err_set(v.io_rc, "verify %s: %llu data files could not be read", db->dir,
                       (unsigned long long)out->unread_files);
    if (out->damage)
        return err_set(ARMDB_CORRUPT,
                       "verify %s: %llu damaged (entries %llu, pages %llu, hints %llu, cut files "
                       "%llu)",
                       db->dir, (unsigned long long)out->damage, (unsigned long long)out->damaged_entries,
                       (unsigned long long)out->damaged_pages, (unsigned long long)out->damaged_hints,
                       (unsigned long long)out->short_files);
    return 0;
}
