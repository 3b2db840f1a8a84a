/*
 * wbuf.c - the aligned write buffer of a shard's active file.
 *
 * Invariants (see struct wbuf): buf[0] is file offset `base`, a multiple of
 * PAGE; everything below `base` is in the file. Bytes past `len` hold
 * whatever was there: the tail page is zero-padded when it is written, and
 * appends zero their own gaps and padding, so nothing is zeroed twice.
 * Only whole pages leave the buffer between barriers; a barrier writes the
 * partial last page zero-padded and keeps it, so the next barrier rewrites
 * that page with the same bytes followed by new ones. Writes are aligned in
 * offset, length and memory, as O_DIRECT demands.
 *
 * With a ring, a full buffer's pages are submitted and the buffers swap:
 * appends go on in the other one while the pages are on their way. At most
 * one write is in flight; it is settled (waited for) before the next one,
 * before a barrier and before the buffer is reused. If it failed, its bytes
 * stay in memory (reads are served from them) and are written again, with
 * pwrite, at the next settle: an error reaches the caller of that call, and
 * nothing acknowledged is dropped.
 *
 * In an encrypted store (wb->seal set) pages are sealed into cbuf as they
 * are written, and a barrier zero-pads the last page and counts it full,
 * so the next entry starts a new page: every page is sealed exactly once.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

int wbuf_init(struct wbuf *wb, uint32_t cap, struct uring *ring, bool sealed)
{
    memset(wb, 0, sizeof *wb);
    wb->buf = aligned_alloc_zero(cap);
    if (ring)
        wb->alt = aligned_alloc_zero(cap);
    if (sealed)
        wb->cbuf = aligned_alloc_zero(cap);
    if (!wb->buf || (ring && !wb->alt) || (sealed && !wb->cbuf)) {
        free(wb->buf);
        free(wb->alt);
        free(wb->cbuf);
        return -ENOMEM;
    }
    wb->ring = ring;
    wb->cap = cap;
    return 0;
}

void wbuf_free(struct wbuf *wb)
{
    /* The kernel may still be reading the buffer in flight. */
    if (wb->fl_state == FL_FLIGHT)
        (void)uring_write_wait(wb->ring);
    free(wb->buf);
    free(wb->alt);
    free(wb->cbuf);
    wb->buf = wb->alt = wb->cbuf = NULL;
}

void wbuf_reset(struct wbuf *wb)
{
    assert(wb->fl_state == FL_NONE);
    wb->len = 0;
    wb->base = 0;
    wb->flushed = 0;
}

/* The bytes to write for buf[from .. to): sealed into cbuf in an
 * encrypted store, else buf's own; NULL if sealing failed (*rc). */
static const unsigned char *wbuf_out(struct wbuf *wb, uint32_t from, uint32_t to, int *rc)
{
    *rc = 0;
    if (!wb->seal)
        return wb->buf + from;
    *rc = wb->seal(wb->on_final_ctx, wb->base + from, wb->buf + from, wb->cbuf, to - from);
    return *rc < 0 ? NULL : wb->cbuf;
}

/* Write buf[from .. to) (page aligned) at base + from. */
static int wbuf_write(struct wbuf *wb, int fd, uint32_t from, uint32_t to, uint64_t *written)
{
    int rc;
    const unsigned char *out = wbuf_out(wb, from, to, &rc);
    if (rc < 0)
        return rc;
    rc = io_pwrite_full(fd, out, to - from, wb->base + from);
    if (rc == 0)
        *written += to - from;
    return rc;
}

int wbuf_settle(struct wbuf *wb, uint64_t *written)
{
    if (wb->fl_state == FL_FLIGHT) {
        ssize_t res = uring_write_wait(wb->ring);
        wb->fl_state = res == (ssize_t)wb->fl_len ? FL_NONE : FL_FAILED;
    }
    if (wb->fl_state == FL_FAILED) {
        int rc = io_pwrite_full(wb->fl_fd, wb->fl_src, wb->fl_len, wb->fl_off);
        if (rc < 0)
            return rc;
        *written += wb->fl_len;
        wb->fl_state = FL_NONE;
    }
    return 0;
}

int wbuf_make_room(struct wbuf *wb, int fd, uint32_t need, uint64_t *written)
{
    if (wb->len + (uint64_t)need <= wb->cap)
        return 0;
    int rc = wbuf_settle(wb, written);
    if (rc < 0)
        return rc;
    uint32_t full = (uint32_t)round_down(wb->len, PAGE);
    if (full && wb->on_final)
        wb->on_final(wb->on_final_ctx, wb->base, wb->buf, full);
    /* Pages a barrier already wrote need not be written again. */
    uint32_t from = wb->flushed > wb->base ? (uint32_t)round_down(wb->flushed - wb->base, PAGE) : 0;
    uint32_t rest = wb->len - full;
    if (from < full && wb->ring) {
        const unsigned char *out = wbuf_out(wb, from, full, &rc);
        if (rc < 0)
            return rc;
        wb->fl_buf = wb->buf + from;
        wb->fl_src = out;
        wb->fl_off = wb->base + from;
        wb->fl_len = full - from;
        wb->fl_fd = fd;
        /* A failed submission is written again at the next settle. */
        wb->fl_state = uring_write(wb->ring, fd, out, wb->fl_len, wb->fl_off) == 0 ? FL_FLIGHT : FL_FAILED;
        if (wb->fl_state == FL_FLIGHT)
            *written += wb->fl_len; /* counted when handed to the kernel */
        memcpy(wb->alt, wb->buf + full, rest);
        unsigned char *t = wb->buf;
        wb->buf = wb->alt;
        wb->alt = t;
        wb->base += full;
        wb->len = rest;
        if (wb->flushed < wb->base)
            wb->flushed = wb->base;
        return wb->len + (uint64_t)need <= wb->cap ? 0 : -ENOBUFS;
    }
    if (from < full && (rc = wbuf_write(wb, fd, from, full, written)) < 0)
        return rc;
    memmove(wb->buf, wb->buf + full, rest);
    wb->base += full;
    wb->len = rest;
    if (wb->flushed < wb->base)
        wb->flushed = wb->base;
    return wb->len + (uint64_t)need <= wb->cap ? 0 : -ENOBUFS;
}

int wbuf_write_tail(struct wbuf *wb, int fd, struct uring *sring, uint64_t *written)
{
    int rc = wbuf_settle(wb, written);
    if (rc < 0)
        return rc;
    uint32_t from = 0, to = 0;
    const unsigned char *out = wb->buf; /* the bytes of buf[from .. to) to write */
    if (wb->flushed < wbuf_tail(wb)) {
        from = (uint32_t)round_down(wb->flushed - wb->base, PAGE);
        to = (uint32_t)round_up(wb->len, PAGE);
        memset(wb->buf + wb->len, 0, to - wb->len);
        if (!(out = wbuf_out(wb, from, to, &rc)))
            return rc;
        if (wb->seal)
            wb->len = to; /* the padded page is full: sealed now, never again */
    }
    uint64_t tail = wbuf_tail(wb);
    if (sring) {
        rc = uring_write_datasync(sring, fd, out, to - from, wb->base + from);
        if (rc == 0) {
            *written += to - from;
            wb->flushed = tail;
            return 1;
        }
        if (rc < 0)
            return rc;
    }
    if (from == to)
        return 0;
    rc = io_pwrite_full(fd, out, to - from, wb->base + from);
    if (rc == 0) {
        *written += to - from;
        wb->flushed = tail;
    }
    return rc;
}

void wbuf_read(const struct wbuf *wb, uint64_t off, void *dst, size_t len)
{
    assert(off >= wbuf_mem_base(wb) && off + len <= wbuf_tail(wb));
    unsigned char *d = dst;
    if (off < wb->base) {
        /* The bytes in flight end where the current buffer starts. */
        size_t n = wb->base - off < len ? (size_t)(wb->base - off) : len;
        memcpy(d, wb->fl_buf + (off - wb->fl_off), n);
        d += n;
        off += n;
        len -= n;
    }
    if (len)
        memcpy(d, wb->buf + (off - wb->base), len);
}
