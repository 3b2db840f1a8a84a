/*
 * checkpoint.c - an online, consistent copy of a store: what backups are
 * made of.
 *
 * The open takes the cut: a barrier on every shard (first one by one, so
 * that little is left), then, with every shard locked at once, a last
 * barrier on each (writers wait for these few), the store's largest GSN
 * noted, and every data file referenced with the length to copy: all of
 * an immutable file, and of an active file the bytes written so far (in
 * an encrypted store up to the end of its last page, which the barrier
 * padded and sealed). No write is half in the cut (a batch holds all of
 * its shards while it appends), so the copy opens as the store was at
 * that GSN: a batch is in it whole or not at all. The meta file and the
 * DURABLE file are copied after the cut: a later DURABLE covers no entry
 * the copy lacks (every entry up to the cut is in it) and names every
 * batch that failed before it.
 *
 * Steps then copy the files, a bounded number of bytes at a time, from the
 * descriptors the references keep open: a file compacted away meanwhile
 * is still read whole. With ARMDB_CHECKPOINT_LINK an immutable file that
 * has its hint (final, never written again) is hard-linked instead where
 * the filesystem allows. Every file is synced, then the directories; the
 * copy is a store directory like any other (no LOCK file).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define CP_CHUNK (1u << 20)

struct cp_file {
    struct shard *sh;
    struct dfile *f; /* referenced */
    uint64_t len;    /* data bytes to copy (UINT64_MAX: the whole file) */
    uint64_t tags;   /* tags bytes (encrypted stores; UINT64_MAX: the whole file) */
    bool active;     /* the active file at the cut */
    bool hinted;     /* it had its hint at the cut (read under the shard's lock: the
                        background thread sets it) */
};

enum { ST_DATA, ST_TAGS, ST_HINT, ST_NEXT };

struct armdb_checkpoint {
    armdb *db;
    unsigned flags;
    char *dest;
    int destfd;
    int *sfd;            /* the copy's shard directories */
    uint64_t gsn;
    struct cp_file *files;
    uint32_t n, cur;
    int stage;
    int out;             /* the file being written (-1: none) */
    uint64_t off;        /* bytes of the current stage copied */
    uint64_t total, done;
    unsigned char *buf;  /* CP_CHUNK, page-aligned (the sources may be O_DIRECT) */
    bool finished;
};

static uint64_t file_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* ---- the cut ---- */

static int take_cut(armdb_checkpoint *cp)
{
    armdb *db = cp->db;
    int rc = 0;
    uint32_t files = 0;
    for (uint32_t s = 0; s < db->nshards && rc == 0; s++)
        rc = shard_sync(&db->shards[s]);
    if (rc < 0)
        return rc;
    /* Every shard locked, none with a barrier in flight: waiting for one
     * (its thread needs the lock back) with other shards held could wait
     * on a batch that holds it and waits for them. */
    for (uint32_t busy = UINT32_MAX;;) {
        if (busy != UINT32_MAX)
            shard_sync_settle(&db->shards[busy]);
        busy = UINT32_MAX;
        for (uint32_t s = 0; s < db->nshards; s++)
            pthread_mutex_lock(&db->shards[s].mu);
        for (uint32_t s = 0; s < db->nshards && busy == UINT32_MAX; s++)
            if (db->shards[s].syncing)
                busy = s;
        if (busy == UINT32_MAX)
            break;
        for (uint32_t s = db->nshards; s-- > 0;)
            pthread_mutex_unlock(&db->shards[s].mu);
    }
    for (uint32_t s = 0; s < db->nshards && rc == 0; s++) {
        rc = shard_barrier_cut(&db->shards[s]);
        files += db->shards[s].nfiles;
    }
    if (rc == 0 && files && !(cp->files = calloc(files, sizeof *cp->files)))
        rc = -ENOMEM;
    for (uint32_t s = 0; s < db->nshards && rc == 0; s++) {
        struct shard *sh = &db->shards[s];
        for (uint32_t i = 0; i < sh->nfiles; i++) {
            struct dfile *f = sh->files[i];
            struct cp_file *c = &cp->files[cp->n++];
            *c = (struct cp_file){.sh = sh, .f = f, .len = UINT64_MAX, .tags = f->pk.cr ? UINT64_MAX : 0,
                                  .hinted = f->has_hint};
            if (f == sh->active) {
                c->active = true;
                c->len = f->pk.cr ? round_up(f->size, PAGE) : f->size;
                c->tags = f->pk.cr ? TAGS_HDR + SLOT * (c->len / PAGE) : 0;
            }
            dfile_ref(f);
        }
    }
    cp->gsn = atomic_load(&db->max_gsn);
    for (uint32_t s = db->nshards; s-- > 0;)
        pthread_mutex_unlock(&db->shards[s].mu);
    return rc;
}

/* Copy the small files of the store directory: ARMDB, and DURABLE if
 * there is one. */
static int copy_small(armdb_checkpoint *cp, const char *name, bool optional)
{
    unsigned char *buf;
    size_t len;
    int rc = io_read_file(cp->db->dirfd, name, &buf, &len);
    if (rc == -ENOENT && optional)
        return 0;
    if (rc < 0)
        return err_set(rc, "read %s/%s", cp->db->dir, name);
    rc = io_write_file_atomic(cp->destfd, name, buf, len);
    io_read_file_free(buf, len);
    return rc < 0 ? err_set(rc, "write %s/%s", cp->dest, name) : 0;
}

API int armdb_checkpoint_open(armdb *db, const char *dest, unsigned flags, armdb_checkpoint **out)
{
    if (!db || !dest || !out)
        return err_set(ARMDB_INVAL, "armdb_checkpoint_open: %s is NULL", !db ? "db" : !dest ? "dest" : "out");
    *out = NULL;
    if (flags & ~(unsigned)ARMDB_CHECKPOINT_LINK)
        return err_set(ARMDB_INVAL, "armdb_checkpoint_open: unknown flags 0x%x",
                       flags & ~(unsigned)ARMDB_CHECKPOINT_LINK);
    int src = db_check_shared(db, "checkpoints");
    if (src < 0)
        return src;
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "a checkpoint of %s needs the writer's handle (it puts a barrier on every "
                       "shard), not a read-only one", db->dir);
    if (db->crypt_next)
        return err_set(ARMDB_INVAL, "a checkpoint of %s cannot be taken while its key is being rotated", db->dir);
    if (mkdir(dest, 0755) < 0) {
        int e = errno;
        return err_set(e == EEXIST ? ARMDB_EXISTS : -e, "create the checkpoint directory %s", dest);
    }
    armdb_checkpoint *cp = calloc(1, sizeof *cp);
    int rc = -ENOMEM;
    if (!cp)
        return err_set(rc, "checkpoint of %s into %s", db->dir, dest);
    cp->db = db;
    cp->flags = flags;
    cp->out = cp->destfd = -1;
    if (!(cp->dest = strdup(dest)) || !(cp->sfd = malloc(db->nshards * sizeof *cp->sfd)) ||
        !(cp->buf = aligned_alloc_zero(CP_CHUNK)))
        goto fail;
    for (uint32_t s = 0; s < db->nshards; s++)
        cp->sfd[s] = -1;
    if ((cp->destfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = -errno;
        goto fail;
    }
    for (uint32_t s = 0; s < db->nshards; s++) {
        char name[16];
        snprintf(name, sizeof name, "%03x", s);
        if (mkdirat(cp->destfd, name, 0755) < 0 ||
            (cp->sfd[s] = openat(cp->destfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
            rc = -errno;
            goto fail;
        }
    }
    if ((rc = take_cut(cp)) < 0)
        goto fail;
    pthread_mutex_lock(&db->meta_mu);
    rc = copy_small(cp, "ARMDB", false);
    pthread_mutex_unlock(&db->meta_mu);
    if (rc == 0) {
        pthread_mutex_lock(&db->durable_mu);
        rc = copy_small(cp, "DURABLE", true);
        pthread_mutex_unlock(&db->durable_mu);
    }
    if (rc < 0)
        goto fail;
    for (uint32_t i = 0; i < cp->n; i++) {
        struct cp_file *c = &cp->files[i];
        if (c->len == UINT64_MAX)
            c->len = file_size(c->f->fd);
        if (c->tags == UINT64_MAX)
            c->tags = file_size(c->f->tfd);
        cp->total += c->len + c->tags;
    }
    *out = cp;
    return 0;
fail:
    rc = err_set(rc, "checkpoint of %s into %s", db->dir, dest);
    armdb_checkpoint_close(cp);
    return rc;
}

API uint64_t armdb_checkpoint_gsn(const armdb_checkpoint *cp)
{
    return cp ? cp->gsn : 0;
}

/* ---- copying ---- */

/* Copy up to CP_CHUNK more of [0, len) from fd into the current output,
 * opened as name (in the shard's copy) on the first call. 1 when all of
 * it is copied. */
static int copy_some(armdb_checkpoint *cp, struct cp_file *c, int fd, const char *name, uint64_t len)
{
    int dfd = cp->sfd[c->sh->no];
    if (cp->out < 0 && (cp->out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0)
        return err_set(-errno, "create %s/%03x/%s", cp->dest, c->sh->no, name);
    if (cp->off < len) {
        size_t n = len - cp->off < CP_CHUNK ? (size_t)(len - cp->off) : CP_CHUNK;
        ssize_t rd = io_pread_full(fd, cp->buf, (size_t)round_up(n, PAGE), cp->off);
        if (rd < 0)
            return err_set((int)rd, "read %s/%s", c->sh->path, name);
        if ((size_t)rd < n)
            return err_set(ARMDB_CORRUPT, "%s/%s is shorter than at the checkpoint's cut", c->sh->path, name);
        int rc = io_pwrite_full(cp->out, cp->buf, n, cp->off);
        if (rc < 0)
            return err_set(rc, "write %s/%03x/%s", cp->dest, c->sh->no, name);
        cp->off += n;
        cp->done += n;
        if (cp->off < len)
            return 0;
    }
    int rc = io_fdatasync(cp->out);
    close(cp->out);
    cp->out = -1;
    cp->off = 0;
    return rc < 0 ? err_set(rc, "sync %s/%03x/%s", cp->dest, c->sh->no, name) : 1;
}

/* Hard-link the source's name into the copy: 1 if done, 0 if it must be
 * copied instead (another filesystem, or the name is gone). */
static int try_link(armdb_checkpoint *cp, struct cp_file *c, const char *name)
{
    if (linkat(c->sh->dirfd, name, cp->sfd[c->sh->no], name, 0) == 0)
        return 1;
    int e = errno;
    if (e == EXDEV || e == ENOENT || e == EPERM || e == EMLINK)
        return 0;
    return err_set(-e, "link %s/%s into %s", c->sh->path, name, cp->dest);
}

/* The hint, if the file has one: small, copied in one go (a hint gone
 * meanwhile is not needed: the copy's open scans the file instead). */
static int copy_hint(armdb_checkpoint *cp, struct cp_file *c)
{
    char name[32];
    dfile_name(name, sizeof name, c->f->id, "hint");
    if (c->active)
        return 0;
    if (cp->flags & ARMDB_CHECKPOINT_LINK) {
        int rc = try_link(cp, c, name);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    unsigned char *buf;
    size_t len;
    int rc = io_read_file(c->sh->dirfd, name, &buf, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return err_set(rc, "read %s/%s", c->sh->path, name);
    rc = io_write_file_atomic(cp->sfd[c->sh->no], name, buf, len);
    io_read_file_free(buf, len);
    return rc < 0 ? err_set(rc, "write %s/%03x/%s", cp->dest, c->sh->no, name) : 0;
}

static int step_file(armdb_checkpoint *cp, struct cp_file *c)
{
    char name[32];
    int rc;
    switch (cp->stage) {
    case ST_DATA:
        dfile_name(name, sizeof name, c->f->id, "data");
        if (cp->off == 0 && cp->out < 0 && !c->active && c->hinted && (cp->flags & ARMDB_CHECKPOINT_LINK)) {
            char tags[32];
            dfile_name(tags, sizeof tags, c->f->id, "tags");
            if ((rc = try_link(cp, c, name)) < 0)
                return rc;
            if (rc == 1 && c->tags && (rc = try_link(cp, c, tags)) < 0)
                return rc;
            if (rc == 1) {
                cp->done += c->len + c->tags;
                cp->stage = ST_HINT;
                return 0;
            }
            (void)unlinkat(cp->sfd[c->sh->no], name, 0); /* its tags could not follow: copy both */
        }
        if ((rc = copy_some(cp, c, c->f->fd, name, c->len)) <= 0)
            return rc;
        cp->stage = c->tags ? ST_TAGS : ST_HINT;
        return 0;
    case ST_TAGS:
        dfile_name(name, sizeof name, c->f->id, "tags");
        if ((rc = copy_some(cp, c, c->f->tfd, name, c->tags)) <= 0)
            return rc;
        cp->stage = ST_HINT;
        return 0;
    case ST_HINT:
        if ((rc = copy_hint(cp, c)) < 0)
            return rc;
        cp->stage = ST_NEXT;
        return 0;
    }
    return 0;
}

API int armdb_checkpoint_step(armdb_checkpoint *cp, uint64_t max_bytes, uint64_t *done, uint64_t *total)
{
    if (!cp)
        return err_set(ARMDB_INVAL, "armdb_checkpoint_step: checkpoint is NULL");
    uint64_t start = cp->done;
    int rc = 0;
    while (!cp->finished && rc == 0) {
        if (cp->cur == cp->n) {
            for (uint32_t s = 0; s < cp->db->nshards && rc == 0; s++)
                if ((rc = io_fsync(cp->sfd[s])) < 0)
                    rc = err_set(rc, "sync the directory %s/%03x", cp->dest, s);
            if (rc == 0 && (rc = io_fsync(cp->destfd)) < 0)
                rc = err_set(rc, "sync the directory %s", cp->dest);
            cp->finished = rc == 0;
            break;
        }
        if (cp->done - start >= max_bytes && cp->done > start)
            break;
        struct cp_file *c = &cp->files[cp->cur];
        if ((rc = step_file(cp, c)) < 0)
            break;
        if (cp->stage == ST_NEXT) {
            dfile_unref(c->f);
            c->f = NULL;
            cp->cur++;
            cp->stage = ST_DATA;
        }
    }
    if (done)
        *done = cp->done;
    if (total)
        *total = cp->total;
    if (rc < 0)
        return rc;
    return cp->finished ? 0 : 1;
}

API void armdb_checkpoint_close(armdb_checkpoint *cp)
{
    if (!cp)
        return;
    for (uint32_t i = 0; i < cp->n; i++)
        if (cp->files[i].f)
            dfile_unref(cp->files[i].f);
    if (cp->out >= 0)
        close(cp->out);
    if (cp->sfd)
        for (uint32_t s = 0; s < cp->db->nshards; s++)
            if (cp->sfd[s] >= 0)
                close(cp->sfd[s]);
    if (cp->destfd >= 0)
        close(cp->destfd);
    free(cp->sfd);
    free(cp->files);
    free(cp->buf);
    free(cp->dest);
    free(cp);
}

API int armdb_checkpoint_run(armdb *db, const char *dest, unsigned flags, uint64_t *gsn)
{
    armdb_checkpoint *cp;
    int rc = armdb_checkpoint_open(db, dest, flags, &cp);
    if (rc < 0)
        return rc;
    while ((rc = armdb_checkpoint_step(cp, UINT64_MAX, NULL, NULL)) == 1)
        ;
    if (rc == 0 && gsn)
        *gsn = cp->gsn;
    armdb_checkpoint_close(cp);
    return rc;
}
