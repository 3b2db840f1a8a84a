/*
 * dfile.c - data files: naming, opening with O_DIRECT where the filesystem
 * allows it, and reference counts.
 *
 * A file is referenced by its shard and by each reader that reads it
 * outside the shard lock; it is closed when the last reference goes, so a
 * reader never reads through a closed (or reused) descriptor.
 *
 * In an encrypted store each data file has a .tags file beside it:
 *
 * | offset    | size | field                                          |
 * |-----------|------|------------------------------------------------|
 * | 0         | 8    | magic "ARMTAGS\1"                              |
 * | 8         | 16   | salt of the key its pages are sealed with      |
 * | 24        | 8    | XXH3-64 of bytes 0..23                         |
 * | 32 + 24 n | 24   | page n's slot: nonce u64, AEAD tag (16 bytes)  |
 *
 * The slots are kept in memory too (24 bytes per 4096-byte page), so a
 * read needs no I/O besides the page's. The salt tells, after a crash in
 * a rekey, which key a file belongs to (see armdb_rekey).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

void dfile_name(char *buf, size_t cap, uint32_t id, const char *ext)
{
    snprintf(buf, cap, "%08u.%s", id, ext);
}

int dfile_open_fd(struct shard *sh, const char *name, int flags)
{
    /* db->direct was probed at open; EINVAL here still falls back rather
     * than fail, since a filesystem may refuse O_DIRECT per file. */
    int fd = -EINVAL;
    if (sh->db->direct)
        fd = io_open(sh->dirfd, name, flags | O_DIRECT, 0644);
    if (!sh->db->direct || fd == -EINVAL)
        fd = io_open(sh->dirfd, name, flags, 0644);
    return fd;
}

int dfile_open(struct shard *sh, uint32_t id, bool create, struct dfile **out)
{
    armdb *db = sh->db;
    char name[32];
    dfile_name(name, sizeof name, id, "data");
    int flags = db->rdonly ? O_RDONLY : O_RDWR;
    if (create)
        flags |= O_CREAT | O_EXCL;
    int fd = dfile_open_fd(sh, name, flags);
    if (fd < 0)
        return err_set(fd, "open %s/%s", sh->path, name);
    const char *what = "open";
    int rc = 0;
    struct dfile *f = dfile_new(id, fd);
    if (!f)
        rc = -ENOMEM;
    /* A file passes max_file_size by at most one entry, which fits a write
     * buffer (a first entry may be larger than max_file_size itself). */
    if (rc == 0 && create && db->crypt &&
        (rc = tags_create(sh, f, db->crypt, (round_up(db->max_file, PAGE) + db->wbuf_size) / PAGE + 2)) < 0)
        what = "create the tags of";
    /* The new names must be durable before anything written to the file is. */
    if (rc == 0 && create && (rc = io_fsync(sh->dirfd)) < 0)
        what = "fsync the directory of";
    if (rc < 0) {
        if (f)
            dfile_unref(f);
        else
            close(fd);
        if (create)
            (void)dfile_unlink_set(sh, id);
        return err_set(rc, "%s %s/%s", what, sh->path, name);
    }
    *out = f;
    return 0;
}

struct dfile *dfile_new(uint32_t id, int fd)
{
    struct dfile *f = calloc(1, sizeof *f);
    if (f) {
        f->id = id;
        f->fd = fd;
        f->tfd = -1;
        atomic_init(&f->refs, 1);
    }
    return f;
}

void dfile_ref(struct dfile *f) { atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed); }

void dfile_unref(struct dfile *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        close(f->fd);
        tags_release(f);
        free(f);
    }
}

int dfile_unlink_set(struct shard *sh, uint32_t id)
{
    static const char *const exts[] = {"hint", "data", "tags"};
    for (size_t i = 0; i < 3; i++) {
        char name[32];
        dfile_name(name, sizeof name, id, exts[i]);
        if (unlinkat(sh->dirfd, name, 0) < 0 && errno != ENOENT)
            return err_set(-errno, "remove %s/%s", sh->path, name);
    }
    return 0;
}

void tags_release(struct dfile *f)
{
    if (f->tfd >= 0)
        close(f->tfd);
    if (f->slots)
        munmap(f->slots, (size_t)f->map_pages * SLOT);
    f->tfd = -1;
    f->slots = NULL;
    f->map_pages = 0;
}

/* ---- tags (encrypted stores) ---- */

static const unsigned char tags_magic[8] = {'A', 'R', 'M', 'T', 'A', 'G', 'S', 1};

static int slots_map(struct dfile *f, uint64_t pages)
{
    if (!pages)
        pages = 1;
    void *p = mmap(NULL, (size_t)pages * SLOT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    (void)madvise(p, (size_t)pages * SLOT, MADV_NOHUGEPAGE);
    f->slots = p;
    f->map_pages = pages;
    return 0;
}

int tags_create(struct shard *sh, struct dfile *f, const struct crypt *cr, uint64_t max_pages)
{
    char name[32];
    dfile_name(name, sizeof name, f->id, "tags");
    int fd = io_open(sh->dirfd, name, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    unsigned char hdr[TAGS_HDR];
    memcpy(hdr, tags_magic, 8);
    memcpy(hdr + 8, crypt_salt(cr), 16);
    put_le64(hdr + 24, XXH3_64bits(hdr, 24));
    int rc = io_pwrite_full(fd, hdr, sizeof hdr, 0);
    if (rc == 0)
        rc = slots_map(f, max_pages);
    if (rc < 0) {
        close(fd);
        (void)unlinkat(sh->dirfd, name, 0);
        return rc;
    }
    f->tfd = fd;
    f->pk = (struct pagekey){.cr = cr, .kind = PK_DATA, .shard = sh->no, .file = f->id};
    return 0;
}

int tags_load(struct shard *sh, struct dfile *f, uint64_t file_len, unsigned char salt[16])
{
    armdb *db = sh->db;
    char name[32];
    dfile_name(name, sizeof name, f->id, "tags");
    uint64_t pages = round_up(file_len, PAGE) / PAGE;
    memcpy(salt, crypt_salt(db->crypt), 16);
    f->pk = (struct pagekey){.cr = db->crypt, .kind = PK_DATA, .shard = sh->no, .file = f->id};
    int rc = slots_map(f, pages);
    if (rc < 0)
        return err_set(rc, "load %s/%s", sh->path, name);
    int fd = io_open(sh->dirfd, name, O_RDONLY, 0); /* a loaded file's tags are never written */
    if (fd == -ENOENT && file_len == 0)
        return 0; /* created, never written */
    if (fd < 0)
        return err_set(fd == -ENOENT ? ARMDB_CORRUPT : fd, "open %s/%s", sh->path, name);
    f->tfd = fd;
    unsigned char hdr[TAGS_HDR];
    ssize_t n = io_pread_full(fd, hdr, sizeof hdr, 0);
    if (n < 0)
        return err_set((int)n, "read %s/%s", sh->path, name);
    /* A damaged header says nothing: the pages themselves tell whether
     * they open with this store's key. */
    bool hdr_ok = n == TAGS_HDR && memcmp(hdr, tags_magic, 8) == 0 && get_le64(hdr + 24) == XXH3_64bits(hdr, 24);
    if (hdr_ok)
        memcpy(salt, hdr + 8, 16);
    if (memcmp(salt, crypt_salt(db->crypt), 16) != 0)
        return 1;
    /* Slots the file lacks stay zero: those pages fail to open. */
    ssize_t m = io_pread_full(fd, f->slots, (size_t)pages * SLOT, TAGS_HDR);
    if (m < 0)
        return err_set((int)m, "read %s/%s", sh->path, name);
    return hdr_ok || (n == 0 && m == 0) ? 0 : 2;
}

int dfile_seal(struct shard *sh, struct dfile *f, uint64_t off, const unsigned char *src, unsigned char *dst,
               uint32_t len)
{
    uint64_t page = off / PAGE;
    uint32_t n = len / PAGE;
    assert(off % PAGE == 0 && len % PAGE == 0);
    if (page + n > f->map_pages)
        return err_set(-EFBIG, "%s/%08u.data: page %llu is past the %llu its tags have room for", sh->path, f->id,
                       (unsigned long long)(page + n), (unsigned long long)f->map_pages);
    unsigned char *slots = f->slots + (size_t)page * SLOT;
    int rc = pk_seal(sh->db, &f->pk, page, src, dst, n, slots);
    if (rc == 0)
        rc = io_pwrite_full(f->tfd, slots, (size_t)n * SLOT, TAGS_HDR + page * SLOT);
    return rc;
}

uint32_t dfile_unseal(const struct dfile *f, uint64_t page, unsigned char *buf, uint32_t n)
{
    uint32_t m = page >= f->map_pages ? 0 : f->map_pages - page < n ? (uint32_t)(f->map_pages - page) : n;
    uint32_t ok = m ? pk_open(&f->pk, page, buf, m, f->slots + (size_t)page * SLOT) : 0;
    if (ok == m && m < n)
        memset(buf + (size_t)m * PAGE, 0, PAGE);
    return ok;
}
