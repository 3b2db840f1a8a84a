/*
 * shared.c - one store written by several processes at once (ARMDB_SHARED),
 * such as the workers of an nginx.
 *
 * Every process keeps its own index, file descriptors, block cache and
 * threads; what they share is the log itself (the data files) and a small
 * region of shared memory (/dev/shm/armdb.<device>.<inode> of the store
 * directory) holding what they must agree on:
 *
 *  - the GSN counter;
 *  - per shard: a robust, process-shared mutex; the head of the log (the
 *    active file and the bytes published in it); how far a barrier made
 *    it durable; the next file id; a change counter (seq); and a ring of
 *    events that changed the set of files (a rotation, a compaction's
 *    output added, a file removed).
 *
 * A writer takes its shard's mutex, catches up (reads what other processes
 * appended since it last looked, applying it to its index by the rules of
 * recovery: the highest GSN wins), appends its entry at the head with one
 * pwrite, publishes the new head and moves seq before it lets go. A reader
 * compares seq with what it saw last and catches up only when it moved, so
 * a get sees every write acknowledged, in any process, before it began.
 * Catching up reads the head under the mutex, so the entries of a batch,
 * published in several shards under all their mutexes, are seen together.
 *
 * Bytes below a published head are never written again (no write buffer
 * holds a partial page: appends go straight to the file, which therefore
 * is opened without O_DIRECT), so they can be read at leisure, and pages
 * the head has passed can be cached.
 *
 * A process that cannot catch up event by event (the ring moved on while
 * it was stopped, or a file it had yet to read was compacted away) loads
 * the shard again from its files (shard_reload), like a later opener.
 *
 * A process killed while it holds a mutex leaves at most one thing half
 * done, and the next locker (EOWNERDEAD) finishes or undoes it before
 * anyone reads the shard: bytes past the head are zeroed (an append not
 * published, never acknowledged); an event whose effect was made (a file
 * renamed into place or removed, a new active file switched to) is
 * published; a batch not committed is rolled back to the head before it.
 *
 * Opening: LOCK's flock is shared by the processes of a shared store (a
 * single writer holds it exclusively, so the two modes exclude each
 * other). Openers, and a closer deciding whether it is the last, are
 * serialised by an OFD lock on LOCK's byte 0. An opener that finds the
 * flock free is the first: it recovers the store as a single writer does
 * and makes the region afresh (one left by processes now dead is never
 * trusted). Later openers load the files as they stand, changing nothing,
 * and catch up. The last to close seals the active files like a single
 * writer's close and removes the region.
 *
 * Background work that writes hints or removes files (hints of rotated
 * files, compaction) runs in one process at a time, under an OFD lock on
 * LOCK's byte 1, so that no process removes a file another is hinting.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHM_MAGIC "ARMDBSHM"
#define SHM_VERSION 1u
#define LOCK_OPEN 0  /* byte of LOCK: openers and the last closer */
#define LOCK_MAINT 1 /* byte of LOCK: hints and compaction */

enum { BATCH_NONE, BATCH_WRITING, BATCH_COMMITTED };

struct shm_head {
    unsigned char magic[8];
    uint32_t version, nshards;
    unsigned char salt[16]; /* the store's (meta file): a region of another store is refused */
    uint64_t size;
    atomic_uint_fast64_t gsn; /* the next GSN */
    /* Batches across shards (batch.c) take batch_mu first: one at a time,
     * so that a dead writer's batch is one record. */
    pthread_mutex_t batch_mu;
    uint64_t batch_tag;
    uint32_t batch_state;
    uint32_t spare;
    struct shm_shard shards[];
};

static void shm_name(armdb *db, char *buf, size_t cap)
{
    struct stat st;
    if (fstat(db->dirfd, &st) < 0)
        memset(&st, 0, sizeof st);
    snprintf(buf, cap, "/armdb.%llx.%llx", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
}

static int ofd_lock(int fd, int byte, short type, bool wait)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

static int robust_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -rc;
}

static size_t region_size(uint32_t nshards)
{
    return round_up(sizeof(struct shm_head) + (size_t)nshards * sizeof(struct shm_shard), PAGE);
}

/* Map the region (fd open), checking it is this store's. */
static int region_map(armdb *db, int fd, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return err_set(-errno, "map the shared region of %s", db->dir);
    db->shm = p;
    db->shm_size = size;
    return 0;
}

int shared_open(armdb *db, bool *first)
{
    int fd = io_open(db->dirfd, "LOCK", O_RDWR | O_CREAT, 0644);
    if (fd < 0)
        return err_set(fd, "open %s/LOCK", db->dir);
    db->lockfd = fd;
    if ((db->maintfd = io_open(db->dirfd, "LOCK", O_RDWR, 0)) < 0)
        return err_set(db->maintfd, "open %s/LOCK", db->dir);
    int rc = ofd_lock(fd, LOCK_OPEN, F_WRLCK, true);
    if (rc < 0)
        return err_set(rc, "lock %s/LOCK", db->dir);
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        *first = true;
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
        if ((rc = io_ftruncate(fd, 0)) == 0)
            rc = io_pwrite_full(fd, buf, (size_t)n, 0);
        return rc < 0 ? err_set(rc, "write %s/LOCK", db->dir) : 0;
    }
    if (errno != EWOULDBLOCK)
        return err_set(-errno, "lock %s/LOCK", db->dir);
    *first = false;
    if (flock(fd, LOCK_SH | LOCK_NB) < 0) {
        char buf[32] = {0};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        return err_set(ARMDB_LOCKED, "store %s is locked by pid %ld, which is not in shared mode", db->dir,
                       pid);
    }
    return 0;
}

int shared_attach(armdb *db)
{
    char name[64];
    shm_name(db, name, sizeof name);
    int fd = shm_open(name, O_RDWR, 0600);
    if (fd < 0)
        return err_set(-errno, "open the shared region %s of %s (is every process of it in shared mode?)",
                       name, db->dir);
    struct stat st;
    size_t want = region_size(db->meta.shards);
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    if (rc == 0 && (size_t)st.st_size != want)
        rc = err_set(ARMDB_MISMATCH, "shared region %s of %s has %lld bytes, not %zu", name, db->dir,
                     (long long)st.st_size, want);
    if (rc == 0)
        rc = region_map(db, fd, want);
    close(fd);
    if (rc < 0)
        return rc;
    const struct shm_head *h = db->shm;
    if (memcmp(h->magic, SHM_MAGIC, 8) != 0 || h->version != SHM_VERSION || h->nshards != db->meta.shards ||
        memcmp(h->salt, db->meta.salt, 16) != 0)
        return err_set(ARMDB_MISMATCH, "shared region %s is not one of store %s", name, db->dir);
    for (uint32_t i = 0; i < db->nshards; i++)
        db->shards[i].ss = &db->shm->shards[i];
    db->shm_gsn = &db->shm->gsn;
    return 0;
}

int shared_create(armdb *db)
{
    char name[64];
    shm_name(db, name, sizeof name);
    (void)shm_unlink(name); /* left by processes that are all gone */
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return err_set(-errno, "create the shared region %s of %s", name, db->dir);
    size_t size = region_size(db->nshards);
    int rc = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
    if (rc == 0)
        rc = region_map(db, fd, size);
    close(fd);
    if (rc < 0) {
        (void)shm_unlink(name);
        return err_set(rc, "size the shared region %s of %s", name, db->dir);
    }
    struct shm_head *h = db->shm;
    h->version = SHM_VERSION;
    h->nshards = db->nshards;
    memcpy(h->salt, db->meta.salt, 16);
    h->size = size;
    atomic_init(&h->gsn, gsn_last() + 1);
    if ((rc = robust_init(&h->batch_mu)) < 0)
        return err_set(rc, "create the shared region of %s", db->dir);
    for (uint32_t i = 0; i < db->nshards; i++) {
        struct shard *sh = &db->shards[i];
        struct shm_shard *ss = &h->shards[i];
        if ((rc = robust_init(&ss->mu)) < 0)
            return err_set(rc, "create the shared region of %s", db->dir);
        /* Recovery gave every shard a fresh, empty active file. */
        uint64_t head = AT_PACK(sh->active->id, 0);
        atomic_init(&ss->head, head);
        atomic_init(&ss->durable, head);
        atomic_init(&ss->seq, 1);
        ss->next_id = sh->next_id;
        sh->at = sh->last_write = head;
        sh->seen_seq = 1;
        sh->ss = ss;
    }
    db->shm_gsn = &h->gsn;
    /* The magic last: a region is whole once it has it. */
    memcpy(h->magic, SHM_MAGIC, 8);
    return 0;
}

int shared_open_done(armdb *db)
{
    /* The first opener shares the flock from now on. */
    int rc = !db->attaching && flock(db->lockfd, LOCK_SH | LOCK_NB) < 0 ? -errno : 0;
    (void)ofd_lock(db->lockfd, LOCK_OPEN, F_UNLCK, false);
    return rc < 0 ? err_set(rc, "share the lock of %s", db->dir) : 0;
}

void shared_unmap(armdb *db)
{
    db->shm_gsn = NULL;
    if (db->shm)
        munmap(db->shm, db->shm_size);
    db->shm = NULL;
}

/* ---- the log: catching up with other processes ---- */

struct log_ctx {
    struct shard *sh;
    struct dfile *f;
    uint64_t max_gsn;
};

/* One entry another process appended: into the index as recovery would
 * (the highest GSN wins), but a delete takes the key out at once. */
static int apply_log(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                     const unsigned char *value)
{
    struct log_ctx *c = vctx;
    struct shard *sh = c->sh;
    struct index *ix = &sh->ix;
    uint32_t klen = ix->key_len;
    uint64_t esize = entry_size(klen, vlen);
    dfile_note(c->f, gsn, esize);
    sh->applied++;
    if ((gsn & GSN_MASK) > c->max_gsn)
        c->max_gsn = gsn & GSN_MASK;
    if (ix->inline_len && !(gsn & GSN_TOMB) && vlen != ix->inline_len)
        return 0;
    if ((gsn & GSN_BATCH) && batch_aborted(sh->db, gsn))
        return 0;
    uint64_t h = key_hash(key, klen);
    int64_t r = index_find(ix, key, h);
    if (r >= 0 && (rec_gsn(index_rec(ix, (uint32_t)r)) & GSN_MASK) >= (gsn & GSN_MASK))
        return 0;
    if (gsn & GSN_TOMB) {
        if (r >= 0) {
            shard_account_dead(sh, index_rec(ix, (uint32_t)r));
            shard_forget(sh, (uint32_t)r, h);
            sh->live_keys--;
        }
        return 0;
    }
    bool fresh;
    if ((r = shard_claim(sh, key, h, &fresh)) < 0)
        return (int)r;
    shard_point(sh, (uint32_t)r, fresh, c->f, gsn, voff, value, vlen);
    return 0;
}

/* Apply the entries of f at [from, to). */
static int read_log(struct shard *sh, struct dfile *f, uint64_t from, uint64_t to)
{
    armdb *db = sh->db;
    struct log_ctx c = {.sh = sh, .f = f};
    struct scan_result res;
    int rc = scan_file_from(f->fd, from, to, db->key_len, db->vmax, apply_log, &c, &res);
    if (c.max_gsn)
        gsn_observe(db, c.max_gsn);
    if (rc < 0)
        return err_set(rc, "read %s/%08u.data from offset %llu", sh->path, f->id, (unsigned long long)from);
    sh->corrupt += res.corrupt;
    if (to > f->size)
        f->size = to;
    return 0;
}

/* The event published as number n, or NULL if its slot was reused. */
static const struct shm_event *event_at(const struct shm_shard *ss, uint64_t n)
{
    const struct shm_event *e = &ss->ev[n % SHM_EVENTS];
    return e->seq == n ? e : NULL;
}

/* catch_up_once: this process cannot follow the events from where it is
 * (it fell more than SHM_EVENTS behind, or a file it was to read next is
 * gone): the shard is loaded again from the files as they stand. */
#define BEHIND 1

/* A compaction's output, published by another process: records naming an
 * entry it holds a copy of (the same GSN) are pointed at the copy. */
struct adopt_ctx {
    struct shard *sh;
    struct dfile *f;
};

static int adopt_entry(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                       const unsigned char *value)
{
    (void)value;
    struct adopt_ctx *c = vctx;
    struct shard *sh = c->sh;
    struct index *ix = &sh->ix;
    uint64_t esize = entry_size(ix->key_len, vlen);
    dfile_note(c->f, gsn, esize);
    if (gsn & GSN_TOMB)
        return 0;
    int64_t r = index_find(ix, key, key_hash(key, ix->key_len));
    if (r < 0)
        return 0;
    unsigned char *rec = index_rec(ix, (uint32_t)r);
    if (rec_gsn(rec) != gsn || rec_u32(rec, REC_FILE) == c->f->id)
        return 0;
    struct dfile *old = shard_file(sh, rec_u32(rec, REC_FILE));
    if (old)
        old->live -= esize;
    rec_set(rec, gsn, c->f->id, voff, vlen);
    c->f->live += esize;
    return 0;
}

static int adopt_file(struct shard *sh, uint32_t id)
{
    armdb *db = sh->db;
    if (shard_file(sh, id))
        return 0;
    struct dfile *f;
    int rc = dfile_open(sh, id, false, &f);
    if (rc == -ENOENT)
        return BEHIND; /* compacted away in turn already */
    if (rc < 0)
        return rc;
    if ((rc = shard_add_file(sh, f)) < 0) {
        dfile_unref(f);
        return err_set(rc, "open %s/%08u.data", sh->path, id);
    }
    struct adopt_ctx c = {.sh = sh, .f = f};
    uint64_t data_len = 0;
    rc = hint_load(sh->dirfd, id, db->key_len, db->value_len, &data_len, NULL, adopt_entry, &c);
    if (rc == 0) {
        f->size = data_len;
        f->has_hint = true;
        return 0;
    }
    if (rc < 0)
        return err_set(rc, "load the hint of %s/%08u.data", sh->path, id);
    /* Outputs are published with their hint; a damaged one is scanned. */
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return err_set(-errno, "stat %s/%08u.data", sh->path, id);
    struct scan_result res;
    rc = scan_file_from(f->fd, 0, (uint64_t)st.st_size, db->key_len, db->vmax, adopt_entry, &c, &res);
    if (rc < 0)
        return err_set(rc, "scan %s/%08u.data", sh->path, id);
    f->size = res.end;
    sh->corrupt += res.corrupt;
    return 0;
}

static void forget_file(struct shard *sh, uint32_t id)
{
    struct dfile *f = shard_file(sh, id);
    if (!f || f == sh->active)
        return;
    shard_remove_file(sh, f);
    dfile_unref(f);
}

/* With mu and the shared mutex held: everything published applied. The
 * log first, then the events: an output's copies replace records of the
 * same GSN whichever came first, and a file is removed only once every
 * live entry of it has a copy that came before it in the events. BEHIND
 * if that cannot be done from where this process is. */
static int catch_up_once(struct shard *sh)
{
    struct shm_shard *ss = sh->ss;
    uint64_t head = atomic_load(&ss->head), nev = ss->nevents;
    int rc = 0;
    while (sh->at != head && rc == 0) {
        uint32_t id = AT_ID(sh->at);
        uint64_t end = AT_OFF(head);
        uint32_t next = 0;
        if (id != AT_ID(head)) {
            /* Our file was rotated: its rotation says where it ended. */
            const struct shm_event *e = NULL;
            for (uint64_t n = nev; n-- > 0 && nev - n <= SHM_EVENTS;) {
                const struct shm_event *x = event_at(ss, n);
                if (x && x->kind == EV_ROTATE && x->id == id) {
                    e = x;
                    break;
                }
            }
            if (!e)
                return BEHIND;
            end = e->size;
            next = e->next;
        }
        struct dfile *f = shard_file(sh, id);
        if (!f)
            return err_set(ARMDB_CORRUPT, "%s/%08u.data, the shard's log, is gone", sh->path, id);
        if (end > AT_OFF(sh->at) && (rc = read_log(sh, f, AT_OFF(sh->at), end)) < 0)
            return rc;
        if (!next) {
            sh->at = head;
            break;
        }
        f->size = end;
        struct dfile *nf = shard_file(sh, next);
        if (!nf) {
            if ((rc = dfile_open(sh, next, false, &nf)) == -ENOENT)
                return BEHIND; /* rotated, then compacted away meanwhile */
            if (rc < 0)
                return rc;
            if ((rc = shard_add_file(sh, nf)) < 0) {
                dfile_unref(nf);
                return err_set(rc, "open %s/%08u.data", sh->path, next);
            }
        }
        sh->active = nf;
        sh->at = AT_PACK(next, 0);
    }
    if (nev - sh->ev_seen > SHM_EVENTS)
        return BEHIND;
    for (; sh->ev_seen < nev && rc == 0; sh->ev_seen++) {
        const struct shm_event *e = event_at(ss, sh->ev_seen);
        if (!e)
            return BEHIND;
        if (e->kind == EV_ADD)
            rc = adopt_file(sh, e->id);
        else if (e->kind == EV_REMOVE)
            forget_file(sh, e->id);
    }
    if (rc == 0)
        sh->seen_seq = atomic_load(&ss->seq);
    return rc;
}

static int catch_up(struct shard *sh)
{
    int rc = catch_up_once(sh);
    if (rc != BEHIND)
        return rc;
    /* Rare (a process stopped, or a file rotated and compacted before
     * this one looked): it holds the shard's mutex while it loads. */
    sh->reloads++;
    return shard_reload(sh);
}

/* ---- the shard's mutex, and what a dead owner left ---- */

/* Zero the bytes of file id from off to end: an append nobody published. */
static void zero_tail(struct shard *sh, uint32_t id, uint64_t off, uint64_t end)
{
    char name[32];
    dfile_name(name, sizeof name, id, "data");
    int fd = io_open(sh->dirfd, name, O_RDWR, 0);
    if (fd < 0)
        return;
    static const unsigned char zero[PAGE];
    for (uint64_t o = off; o < end;) {
        size_t n = end - o < PAGE ? (size_t)(end - o) : PAGE;
        if (io_pwrite_full(fd, zero, n, o) < 0)
            break;
        o += n;
    }
    close(fd);
}

/* Make the shard whole after its mutex's owner died holding it. */
static void repair(struct shard *sh)
{
    struct shm_shard *ss = sh->ss;
    struct shm_head *h = sh->db->shm;
    uint64_t head = atomic_load(&ss->head);
    /* A batch that had not committed: back to the head before it. */
    if (ss->undo_tag && !(h->batch_tag == ss->undo_tag && h->batch_state == BATCH_COMMITTED)) {
        if (AT_ID(ss->undo) == AT_ID(head) && AT_OFF(head) > AT_OFF(ss->undo))
            ss->pending = head > ss->pending ? head : ss->pending;
        head = ss->undo;
        atomic_store(&ss->head, head);
    }
    ss->undo_tag = 0;
    /* An append under way: what it wrote past the head goes. */
    if (AT_ID(ss->pending) == AT_ID(head) && AT_OFF(ss->pending) > AT_OFF(head))
        zero_tail(sh, AT_ID(head), AT_OFF(head), AT_OFF(ss->pending));
    ss->pending = 0;
    /* An event whose effect was made, not yet published. */
    uint64_t n = ss->nevents;
    struct shm_event *e = &ss->ev[n % SHM_EVENTS];
    if (e->seq == n) {
        char name[32];
        dfile_name(name, sizeof name, e->id, "data");
        bool made = false;
        if (e->kind == EV_ROTATE)
            made = AT_ID(head) == e->next;
        else if (e->kind == EV_ADD)
            made = faccessat(sh->dirfd, name, F_OK, 0) == 0;
        else if (e->kind == EV_REMOVE)
            made = dfile_unlink_set(sh, e->id) == 0 && io_fsync(sh->dirfd) == 0;
        if (made)
            ss->nevents = n + 1;
        else
            e->seq = UINT64_MAX;
    }
    ss->repairs++;
    atomic_fetch_add(&ss->seq, 1);
}

int shared_lock_shard(struct shard *sh)
{
    int rc = pthread_mutex_lock(&sh->ss->mu);
    if (rc == EOWNERDEAD) {
        repair(sh);
        rc = pthread_mutex_consistent(&sh->ss->mu);
    }
    if (rc)
        return err_set(-rc, "lock shard %s of a shared store", sh->path);
    return 0;
}

void shared_unlock_shard(struct shard *sh) { pthread_mutex_unlock(&sh->ss->mu); }

int shard_write_begin(struct shard *sh)
{
    if (!sh->ss)
        return 0;
    int rc = shared_lock_shard(sh);
    if (rc < 0)
        return rc;
    if ((rc = catch_up(sh)) < 0)
        pthread_mutex_unlock(&sh->ss->mu);
    return rc;
}

void shard_write_end(struct shard *sh)
{
    if (!sh->ss)
        return;
    sh->seen_seq = atomic_fetch_add(&sh->ss->seq, 1) + 1;
    pthread_mutex_unlock(&sh->ss->mu);
}

int shard_refresh(struct shard *sh)
{
    if (!sh->ss || atomic_load_explicit(&sh->ss->seq, memory_order_acquire) == sh->seen_seq)
        return 0;
    int rc = shared_lock_shard(sh);
    if (rc < 0)
        return rc;
    rc = catch_up(sh);
    pthread_mutex_unlock(&sh->ss->mu);
    return rc;
}

/* ---- writing ---- */

uint32_t shard_take_id(struct shard *sh) { return sh->ss ? sh->ss->next_id++ : sh->next_id++; }

/* Events are written to their slot first and published after: a repair
 * publishes one whose effect was made. The fences keep the compiler from
 * moving the stores across each other (a killed process's stores stay in
 * the order they were made). */
static struct shm_event *event_slot(struct shm_shard *ss)
{
    struct shm_event *e = &ss->ev[ss->nevents % SHM_EVENTS];
    e->seq = UINT64_MAX;
    atomic_thread_fence(memory_order_release);
    return e;
}

static void event_seal(struct shm_shard *ss, struct shm_event *e)
{
    atomic_thread_fence(memory_order_release);
    e->seq = ss->nevents;
    atomic_thread_fence(memory_order_release);
}

static void event_publish(struct shard *sh)
{
    atomic_thread_fence(memory_order_release);
    sh->ss->nevents++;
    sh->ev_seen = sh->ss->nevents;
}

void shared_event_prepare(struct shard *sh, uint32_t kind, uint32_t id)
{
    struct shm_event *e = event_slot(sh->ss);
    e->kind = kind;
    e->id = id;
    e->next = 0;
    e->size = 0;
    event_seal(sh->ss, e);
}

void shared_event_publish(struct shard *sh) { event_publish(sh); }

int shared_seal(struct shard *sh)
{
    struct shm_shard *ss = sh->ss;
    struct dfile *f = sh->active;
    uint64_t end = AT_OFF(sh->at);
    int rc = io_fdatasync(f->fd);
    if (rc < 0) {
        int expected = 0;
        atomic_compare_exchange_strong(&sh->db->failed, &expected, rc);
        return err_set(rc, "fdatasync %s/%08u.data", sh->path, f->id);
    }
    atomic_max_u64(&ss->durable, sh->at);
    sh->syncs++;
    if ((rc = shard_ids_left(sh)) < 0)
        return rc;
    uint32_t id = shard_take_id(sh);
    struct dfile *nf;
    if ((rc = dfile_open(sh, id, true, &nf)) < 0)
        return rc;
    if ((rc = shard_add_file(sh, nf)) < 0) {
        dfile_unref(nf);
        (void)dfile_unlink_set(sh, id);
        return err_set(rc, "open %s/%08u.data", sh->path, id);
    }
    /* The slot, the head, the publication: a repair finishes a rotation
     * that got as far as the head. */
    struct shm_event *e = event_slot(ss);
    e->kind = EV_ROTATE;
    e->id = f->id;
    e->next = id;
    e->size = end;
    event_seal(ss, e);
    atomic_store(&ss->head, AT_PACK(id, 0));
    event_publish(sh);
    sh->at = AT_PACK(id, 0);
    f->size = end;
    sh->active = nf;
    sh->rotations++;
    return db_queue_hint(sh->db, sh, f);
}

int shared_append(struct shard *sh, const void *key, const void *val, uint32_t vlen, uint64_t gsn,
                  uint64_t *voff)
{
    armdb *db = sh->db;
    struct shm_shard *ss = sh->ss;
    uint32_t klen = db->key_len;
    uint64_t esize = entry_size(klen, vlen);
    uint64_t tail = AT_OFF(sh->at);
    uint32_t gap = PAGE - tail % PAGE < ENTRY_HDR ? (uint32_t)(PAGE - tail % PAGE) : 0;
    int rc;
    if (tail > 0 && tail + gap + esize > db->max_file) {
        /* (A batch made room before its first append: shared_batch_mark.) */
        assert(!ss->undo_tag);
        if ((rc = shared_seal(sh)) < 0)
            return rc;
        tail = 0;
        gap = 0;
    }
    /* The write buffer stages the entry (it holds the largest one). */
    unsigned char *p = sh->wb.buf;
    memset(p, 0, gap);
    bool tomb = gsn & GSN_TOMB;
    entry_encode(p + gap, gsn, key, klen, tomb ? NULL : val, vlen);
    struct dfile *f = sh->active;
    ss->pending = AT_PACK(f->id, tail + gap + esize);
    atomic_thread_fence(memory_order_release);
    if ((rc = io_pwrite_full(f->fd, p, gap + esize, tail)) < 0) {
        ss->pending = 0;
        return err_set(rc, "write %s/%08u.data", sh->path, f->id);
    }
    dfile_note(f, gsn, esize);
    sh->at = AT_PACK(f->id, tail + gap + esize);
    atomic_store(&ss->head, sh->at);
    ss->pending = 0;
    sh->last_write = sh->at;
    sh->pos += gap + esize;
    sh->bytes_written += gap + esize;
    f->size = tail + gap + esize;
    *voff = tail + gap + ENTRY_HDR + klen;
    return 0;
}

int shared_wait_durable(struct shard *sh, uint64_t upto)
{
    struct shm_shard *ss = sh->ss;
    while (atomic_load(&ss->durable) < upto) {
        int rc = shard_barrier_turn(sh);
        if (rc < 0)
            return rc;
        if (rc)
            continue;
        struct dfile *f = shard_file(sh, AT_ID(upto));
        if (!f)
            return 0; /* rotated (synced) and compacted away since */
        /* Everything below the head was written before it was published. */
        uint64_t head = atomic_load(&ss->head);
        if ((rc = shard_sync_outside(sh, f, false)) < 0)
            return rc;
        atomic_max_u64(&ss->durable, AT_ID(head) == AT_ID(upto) ? head : upto);
    }
    return 0;
}

/* ---- batches across shards ---- */

static void batch_sweep(armdb *db)
{
    /* The dead writer's shards are repaired (by their own lockers, or
     * here) before its record is reused. */
    for (uint32_t i = 0; i < db->nshards; i++) {
        struct shard *sh = &db->shards[i];
        if (sh->ss->undo_tag && shared_lock_shard(sh) == 0)
            shared_unlock_shard(sh);
    }
}

int shared_batch_begin(armdb *db, const bool *touched)
{
    struct shm_head *h = db->shm;
    int rc = pthread_mutex_lock(&h->batch_mu);
    if (rc == EOWNERDEAD) {
        batch_sweep(db);
        rc = pthread_mutex_consistent(&h->batch_mu);
    }
    if (rc)
        return err_set(-rc, "lock the batches of shared store %s", db->dir);
    h->batch_state = BATCH_NONE;
    for (uint32_t s = 0; s < db->nshards; s++) {
        if (touched[s] && (rc = shard_write_begin(&db->shards[s])) < 0) {
            while (s-- > 0)
                if (touched[s])
                    shared_unlock_shard(&db->shards[s]);
            pthread_mutex_unlock(&h->batch_mu);
            return rc;
        }
    }
    return 0;
}

int shared_batch_mark(armdb *db, const bool *touched, const uint64_t *bytes, const uint32_t *count,
                      uint64_t tag)
{
    struct shm_head *h = db->shm;
    /* A shard whose part would not fit the active file rotates first: a
     * rotation is an event, which a rollback could not take back. */
    for (uint32_t s = 0; s < db->nshards; s++) {
        struct shard *sh = &db->shards[s];
        if (!touched[s] || !bytes[s] || AT_OFF(sh->at) + bytes[s] <= db->max_file)
            continue;
        if (bytes[s] > db->max_file && count[s] > 1)
            return err_set(ARMDB_TOOBIG,
                           "a batch's writes to shard %s of a shared store take %llu bytes, over "
                           "max_file_size (%llu): they must fit one data file",
                           sh->path, (unsigned long long)bytes[s], (unsigned long long)db->max_file);
        int rc = AT_OFF(sh->at) ? shared_seal(sh) : 0;
        if (rc < 0)
            return rc;
    }
    h->batch_tag = tag;
    h->batch_state = BATCH_WRITING;
    atomic_thread_fence(memory_order_release);
    for (uint32_t s = 0; s < db->nshards; s++) {
        if (!touched[s])
            continue;
        struct shm_shard *ss = db->shards[s].ss;
        ss->undo = atomic_load(&ss->head);
        atomic_thread_fence(memory_order_release);
        ss->undo_tag = tag;
    }
    atomic_thread_fence(memory_order_release);
    return 0;
}

void shared_batch_commit(armdb *db, const bool *touched, bool ok)
{
    struct shm_head *h = db->shm;
    if (ok) {
        atomic_thread_fence(memory_order_release);
        h->batch_state = BATCH_COMMITTED;
    }
    atomic_thread_fence(memory_order_release);
    for (uint32_t s = 0; s < db->nshards; s++) {
        struct shard *sh = &db->shards[s];
        if (!touched[s] || !sh->ss->undo_tag)
            continue;
        if (!ok && sh->at != sh->ss->undo) {
            /* Appended, not to stay: back to the head before the batch. */
            uint64_t end = sh->at;
            atomic_store(&sh->ss->head, sh->ss->undo);
            sh->at = sh->ss->undo;
            zero_tail(sh, AT_ID(end), AT_OFF(sh->at), AT_OFF(end));
        }
        atomic_thread_fence(memory_order_release);
        sh->ss->undo_tag = 0;
    }
    atomic_thread_fence(memory_order_release);
    h->batch_state = BATCH_NONE;
}

void shared_batch_end(armdb *db, const bool *touched)
{
    for (uint32_t s = db->nshards; s-- > 0;)
        if (touched[s])
            shard_write_end(&db->shards[s]);
    pthread_mutex_unlock(&db->shm->batch_mu);
}

/* ---- background work, one process at a time ---- */

int shared_maint_lock(armdb *db, const atomic_bool *stop)
{
    if (!db->shared)
        return 0;
    pthread_mutex_lock(&db->maint_mu);
    for (;;) {
        int rc = ofd_lock(db->maintfd, LOCK_MAINT, F_WRLCK, false);
        if (rc == 0)
            return 0;
        if (rc != -EAGAIN && rc != -EACCES) {
            pthread_mutex_unlock(&db->maint_mu);
            return err_set(rc, "lock %s/LOCK", db->dir);
        }
        if (stop && atomic_load(stop)) {
            pthread_mutex_unlock(&db->maint_mu);
            return -ECANCELED;
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

void shared_maint_unlock(armdb *db)
{
    if (!db->shared)
        return;
    (void)ofd_lock(db->maintfd, LOCK_MAINT, F_UNLCK, false);
    pthread_mutex_unlock(&db->maint_mu);
}

/* ---- close ---- */

/* The last process out: each active file synced and given its hint (or
 * removed if empty), as a single writer's close does. */
static int seal_all(armdb *db)
{
    int rc = shared_maint_lock(db, NULL);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < db->nshards && rc == 0; i++) {
        struct shard *sh = &db->shards[i];
        pthread_mutex_lock(&sh->mu);
        if ((rc = shard_write_begin(sh)) == 0) {
            struct dfile *f = sh->active;
            sh->active = NULL;
            if (AT_OFF(sh->at) == 0) {
                shard_remove_file(sh, f);
                dfile_unref(f);
                (void)dfile_unlink_set(sh, AT_ID(sh->at));
            } else if ((rc = io_fdatasync(f->fd)) < 0) {
                rc = err_set(rc, "fdatasync %s/%08u.data", sh->path, f->id);
            } else {
                f->size = AT_OFF(sh->at);
                /* Without a hint the next open scans this file: slower, not wrong. */
                if (hint_build_for(sh, f) == 0)
                    f->has_hint = true;
            }
            shard_write_end(sh);
        }
        pthread_mutex_unlock(&sh->mu);
    }
    shared_maint_unlock(db);
    return rc;
}

int shared_close(armdb *db)
{
    /* This process's writes made durable (the others' are theirs). */
    int rc = 0;
    for (uint32_t i = 0; i < db->nshards; i++) {
        struct shard *sh = &db->shards[i];
        pthread_mutex_lock(&sh->mu);
        int r = shared_wait_durable(sh, sh->last_write);
        pthread_mutex_unlock(&sh->mu);
        if (r < 0 && rc == 0)
            rc = r;
    }
    int lrc = ofd_lock(db->lockfd, LOCK_OPEN, F_WRLCK, true);
    /* The last one out (no other holds the flock) tidies up. If another is
     * there, the attempt may lose this process its shared flock
     * (conversion is not atomic): no matter, it is leaving. */
    bool last = lrc == 0 && flock(db->lockfd, LOCK_EX | LOCK_NB) == 0;
    if (last && rc == 0 && !atomic_load(&db->failed))
        rc = seal_all(db);
    if (last && rc == 0)
        rc = durable_close(db);
    for (uint32_t i = 0; i < db->nshards; i++) {
        db->shards[i].ss = NULL;
        db->shards[i].active = NULL; /* the others' now */
    }
    if (last) {
        char name[64];
        shm_name(db, name, sizeof name);
        (void)shm_unlink(name);
    }
    /* Let go of the flock before the next opener may look at it: it would
     * take an exclusive one for a single writer's. */
    (void)flock(db->lockfd, LOCK_UN);
    if (lrc == 0)
        (void)ofd_lock(db->lockfd, LOCK_OPEN, F_UNLCK, false);
    return rc;
}
