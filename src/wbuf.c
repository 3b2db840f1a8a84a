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
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

int wbuf_init(struct wbuf *wb, uint32_t cap)
{
    memset(wb, 0, sizeof *wb);
    wb->buf = aligned_alloc_zero(cap);
    if (!wb->buf)
        return -ENOMEM;
    wb->cap = cap;
    return 0;
}

void wbuf_free(struct wbuf *wb)
{
    free(wb->buf);
    wb->buf = NULL;
}

void wbuf_reset(struct wbuf *wb)
{
    wb->len = 0;
    wb->base = 0;
    wb->flushed = 0;
}

/* Write buf[from .. to) (page aligned) at base + from. */
static int wbuf_write(struct wbuf *wb, int fd, uint32_t from, uint32_t to, uint64_t *written)
{
    int rc = io_pwrite_full(fd, wb->buf + from, to - from, wb->base + from);
    if (rc == 0)
        *written += to - from;
    return rc;
}

int wbuf_make_room(struct wbuf *wb, int fd, uint32_t need, uint64_t *written)
{
    if (wb->len + (uint64_t)need <= wb->cap)
        return 0;
    uint32_t full = (uint32_t)round_down(wb->len, PAGE);
    /* Pages a barrier already wrote need not be written again. */
    uint32_t from = wb->flushed > wb->base ? (uint32_t)round_down(wb->flushed - wb->base, PAGE) : 0;
    if (from < full) {
        int rc = wbuf_write(wb, fd, from, full, written);
        if (rc < 0)
            return rc;
    }
    uint32_t rest = wb->len - full;
    memmove(wb->buf, wb->buf + full, rest);
    wb->base += full;
    wb->len = rest;
    if (wb->flushed < wb->base)
        wb->flushed = wb->base;
    return wb->len + (uint64_t)need <= wb->cap ? 0 : -ENOBUFS;
}

int wbuf_write_tail(struct wbuf *wb, int fd, uint64_t *written)
{
    uint64_t tail = wbuf_tail(wb);
    if (wb->flushed >= tail)
        return 0;
    uint32_t from = (uint32_t)round_down(wb->flushed - wb->base, PAGE);
    uint32_t to = (uint32_t)round_up(wb->len, PAGE);
    memset(wb->buf + wb->len, 0, to - wb->len);
    int rc = wbuf_write(wb, fd, from, to, written);
    if (rc == 0)
        wb->flushed = tail;
    return rc;
}

void wbuf_read(const struct wbuf *wb, uint64_t off, void *dst, size_t len)
{
    assert(off >= wb->base && off + len <= wbuf_tail(wb));
    memcpy(dst, wb->buf + (off - wb->base), len);
}
