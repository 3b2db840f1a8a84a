/*
 * dfile.c - data files: naming, opening with O_DIRECT where the filesystem
 * allows it, and reference counts.
 *
 * A file is referenced by its shard and by each reader that reads it
 * outside the shard lock; it is closed when the last reference goes, so a
 * reader never reads through a closed (or reused) descriptor.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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
    /* The new name must be durable before anything written to the file is. */
    if (rc == 0 && create && (rc = io_fsync(sh->dirfd)) < 0)
        what = "fsync the directory of";
    if (rc < 0) {
        free(f);
        close(fd);
        if (create)
            (void)unlinkat(sh->dirfd, name, 0);
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
        atomic_init(&f->refs, 1);
    }
    return f;
}

void dfile_ref(struct dfile *f) { atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed); }

void dfile_unref(struct dfile *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        close(f->fd);
        free(f);
    }
}
