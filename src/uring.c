/*
 * uring.c - batched reads through io_uring.
 *
 * Shards write through a ring of their own (double buffering, see wbuf.c),
 * used under the shard lock only.
 *
 * A batch of reads (a get_many that missed the cache) is submitted at once
 * and reaped together, so N cold reads cost about one device round trip
 * instead of N. Each thread has its own ring, made on first use and freed
 * when the thread exits: rings are not safe to share, and any thread may
 * call get_many. Where io_uring is unavailable (an old kernel, a seccomp
 * filter: ENOSYS, EPERM) the thread falls back to pread for good; the store
 * option ARMDB_NO_URING asks for that directly.
 *
 * liburing's helpers are static inline, so nothing of io_uring leaks into
 * the public API.
 */
#include "internal.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

#define RING_DEPTH 256u

struct ring {
    struct io_uring ring;
    int state; /* 0 not tried, 1 usable, -1 unavailable */
};

static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;

static void ring_destroy(void *v)
{
    struct ring *r = v;
    if (r->state == 1)
        io_uring_queue_exit(&r->ring);
    free(r);
}

static void ring_key_init(void) { (void)pthread_key_create(&ring_key, ring_destroy); }

static struct io_uring *thread_ring(void)
{
    pthread_once(&ring_once, ring_key_init);
    struct ring *r = pthread_getspecific(ring_key);
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r || pthread_setspecific(ring_key, r) != 0) {
            free(r);
            return NULL;
        }
    }
    if (r->state == 0)
        r->state = io_uring_queue_init(RING_DEPTH, &r->ring, 0) == 0 ? 1 : -1;
    return r->state == 1 ? &r->ring : NULL;
}

static void ring_disable(void)
{
    struct ring *r = pthread_getspecific(ring_key);
    if (r && r->state == 1) {
        io_uring_queue_exit(&r->ring);
        r->state = -1;
    }
}

/* io_uring may return a short read where pread would go on: finish it
 * the simple way; then hand the read to done. */
static void read_finish(struct io_read *rq, read_done_fn done, void *ctx)
{
    if (rq->res >= 0 && (size_t)rq->res < rq->len) {
        ssize_t more = io_pread_full(rq->fd, (unsigned char *)rq->buf + rq->res, rq->len - (size_t)rq->res,
                                     rq->off + (uint64_t)rq->res);
        rq->res = more < 0 ? more : rq->res + more;
    }
    rq->finished = true;
    if (done)
        done(ctx, rq);
}

/* Submit what is queued and reap `queued` completions, each handed to
 * done as it comes. <0 only if nothing could be submitted. */
static int uring_wait_wave(struct io_uring *ring, size_t queued, read_done_fn done, void *ctx)
{
    size_t submitted = 0;
    while (submitted < queued) {
        int rc = io_uring_submit(ring);
        if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)
            continue;
        if (rc < 0 && submitted == 0)
            return rc;
        if (rc <= 0)
            break;
        submitted += (size_t)rc;
    }
    for (size_t got = 0; got < submitted;) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(ring, &cqe);
        if (rc == -EINTR)
            continue;
        assert(rc == 0); /* waiting on a live ring with work in flight */
        struct io_read *rq = io_uring_cqe_get_data(cqe);
        rq->res = cqe->res;
        io_uring_cqe_seen(ring, cqe);
        got++;
        read_finish(rq, done, ctx);
    }
    return 0;
}

static void read_sync(struct io_read *rq)
{
    rq->res = io_pread_full(rq->fd, rq->buf, rq->len, rq->off);
}

void uring_read_batch(struct io_read *rqs, size_t n, bool use_uring, read_done_fn done, void *ctx)
{
    struct io_uring *ring = use_uring ? thread_ring() : NULL;
    if (!ring) {
        for (size_t i = 0; i < n; i++) {
            int f = io_fault(FAULT_READ);
            rqs[i].res = f ? f : 0;
            if (!f)
                read_sync(&rqs[i]);
            read_finish(&rqs[i], done, ctx);
        }
        return;
    }
    for (size_t at = 0; at < n;) {
        size_t wave = n - at < RING_DEPTH ? n - at : RING_DEPTH;
        size_t queued = 0;
        for (size_t i = at; i < at + wave; i++) {
            int f = io_fault(FAULT_READ);
            if (f) {
                rqs[i].res = f;
                read_finish(&rqs[i], done, ctx);
                continue;
            }
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            assert(sqe); /* the ring is empty between waves */
            io_uring_prep_read(sqe, rqs[i].fd, rqs[i].buf, (unsigned)rqs[i].len, rqs[i].off);
            io_uring_sqe_set_data(sqe, &rqs[i]);
            rqs[i].res = 0;
            queued++;
        }
        if (queued && uring_wait_wave(ring, queued, done, ctx) < 0) {
            /* The ring failed before taking this wave: nothing of it is in
             * the kernel's hands, so pread does it, and this thread stops
             * using io_uring. */
            ring_disable();
            for (size_t i = at; i < at + wave; i++)
                if (!rqs[i].finished) {
                    read_sync(&rqs[i]);
                    read_finish(&rqs[i], done, ctx);
                }
        }
        at += wave;
    }
    /* Reads a partial submission left out: read the simple way. */
    for (size_t i = 0; i < n; i++)
        if (!rqs[i].finished)
            read_finish(&rqs[i], done, ctx);
}

/* ---- one shard's rings: buffer writes, and barriers ---- */

/* What a ring's user_data says a completion is. */
enum { OP_WRITE = 1, OP_SYNC = 2 };

struct uring {
    struct io_uring ring;
    /* A submission failed for good: what it queued is still in the ring,
     * so nothing is submitted on it again (writes fall back to pwrite). */
    bool broken;
    bool sync_flight; /* a barrier's fdatasync is in flight */
    int sync_res;     /* ... or its injected result, when it was not sent */
};

struct uring *uring_new(unsigned depth)
{
    struct uring *u = calloc(1, sizeof *u);
    if (u && io_uring_queue_init(depth, &u->ring, 0) != 0) {
        free(u);
        u = NULL;
    }
    return u;
}

void uring_free(struct uring *u)
{
    if (u) {
        io_uring_queue_exit(&u->ring);
        free(u);
    }
}

/* Submit everything queued: 0, or -errno (the ring is then broken). */
static int uring_submit_all(struct uring *u, unsigned queued)
{
    unsigned done = 0;
    while (done < queued) {
        int rc = io_uring_submit(&u->ring);
        if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)
            continue;
        if (rc <= 0) {
            u->broken = true;
            return rc < 0 ? rc : -EIO;
        }
        done += (unsigned)rc;
    }
    return 0;
}

/* Wait for the next completion: its result, and which operation it is. */
static int uring_reap(struct uring *u, uint64_t *op)
{
    struct io_uring_cqe *cqe;
    int rc;
    do
        rc = io_uring_wait_cqe(&u->ring, &cqe);
    while (rc == -EINTR);
    assert(rc == 0); /* called only with an operation in flight */
    int res = cqe->res;
    *op = io_uring_cqe_get_data64(cqe);
    io_uring_cqe_seen(&u->ring, cqe);
    return res;
}

int uring_write(struct uring *u, int fd, const void *buf, size_t len, uint64_t off)
{
    int f = io_fault(FAULT_WRITE);
    if (f)
        return f;
    if (u->broken)
        return -EIO;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    assert(sqe); /* one write in flight at a time */
    io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
    io_uring_sqe_set_data64(sqe, OP_WRITE);
    return uring_submit_all(u, 1);
}

ssize_t uring_write_wait(struct uring *u)
{
    uint64_t op;
    int res = uring_reap(u, &op);
    assert(op == OP_WRITE);
    return res;
}

int uring_write_datasync(struct uring *u, int fd, const void *buf, size_t len, uint64_t off)
{
    assert(!u->sync_flight && !u->sync_res);
    int f = len ? io_fault(FAULT_WRITE) : 0;
    if (f)
        return f;
    if (u->broken)
        return 1;
    struct io_uring_sqe *w = NULL;
    unsigned queued = 0;
    if (len) {
        w = io_uring_get_sqe(&u->ring);
        io_uring_prep_write(w, fd, buf, (unsigned)len, off);
        io_uring_sqe_set_data64(w, OP_WRITE);
        queued++;
    }
    /* An injected fdatasync failure is handed out by uring_sync_wait, as
     * the real one would be. */
    int fs = io_fault(FAULT_DATASYNC);
    if (fs) {
        u->sync_res = fs;
    } else {
        if (w)
            w->flags |= IOSQE_IO_LINK; /* the fdatasync starts once the write is done */
        struct io_uring_sqe *s = io_uring_get_sqe(&u->ring);
        io_uring_prep_fsync(s, fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(s, OP_SYNC);
        queued++;
    }
    if (uring_submit_all(u, queued) < 0) {
        u->sync_res = 0;
        return 1;
    }
    u->sync_flight = !fs;
    if (!len)
        return 0;
    uint64_t op;
    int res = uring_reap(u, &op);
    assert(op == OP_WRITE); /* linked: the fdatasync completes after it */
    if (res == (int)len)
        return 0;
    /* A failed or short write cancels the fdatasync linked to it. */
    if (u->sync_flight) {
        (void)uring_reap(u, &op);
        u->sync_flight = false;
    }
    u->sync_res = 0;
    return 1;
}

int uring_sync_wait(struct uring *u)
{
    int res = u->sync_res;
    u->sync_res = 0;
    if (u->sync_flight) {
        uint64_t op;
        res = uring_reap(u, &op);
        assert(op == OP_SYNC);
        u->sync_flight = false;
    }
    return res;
}
