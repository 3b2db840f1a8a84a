/*
 * hint.c - hint files: the index of one immutable data file, so that open
 * reads a few bytes per key instead of the whole data file.
 *
 * | offset | size     | field                                              |
 * |--------|----------|----------------------------------------------------|
 * | 0      | 8        | magic "ARMHINT\1"                                  |
 * | 8      | 4        | format version (1)                                 |
 * | 12     | 4        | key_len                                            |
 * | 16     | 8        | record count                                       |
 * | 24     | 8        | smallest GSN in the file (tombstone bit cleared)   |
 * | 32     | 8        | largest GSN in the file                            |
 * | 40     | 8        | data length: bytes of the data file it describes   |
 * | 48     | n*(16+k) | records: gsn u64 (tombstone bit kept), value       |
 * |        |          | offset u32, value length u32, key                  |
 * | end-8  | 8        | XXH3-64 of everything before it                    |
 *
 * In a store with a fixed value_len, each record is followed by the value
 * (value_len bytes; zeros for a tombstone), so inline values load without
 * reading the data file.
 *
 * Every entry of the data file has a record, tombstones and overwritten
 * values included, so that "highest GSN wins" works from hints alone.
 * A hint that fails any check is ignored and its data file scanned.
 *
 * In an encrypted store the file is the above zero-padded to whole pages,
 * each page sealed (kind PK_HINT, the data file's id), followed by the
 * pages' slots (SLOT bytes each): n * (4096 + SLOT) bytes in all.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>

static const unsigned char hint_magic[8] = {'A', 'R', 'M', 'H', 'I', 'N', 'T', 1};

int hint_add(struct hint_buf *hb, uint32_t klen, uint32_t ilen, uint64_t gsn, uint32_t voff, uint32_t vlen,
             const unsigned char *key, const unsigned char *value)
{
    size_t rec = 16 + (size_t)klen + ilen;
    if (hb->len + rec > hb->cap) {
        size_t cap = hb->cap ? hb->cap * 2 : 64 * rec + HINT_HDR;
        unsigned char *p = realloc(hb->p, cap);
        if (!p)
            return -ENOMEM;
        hb->p = p;
        hb->cap = cap;
    }
    if (hb->len == 0)
        hb->len = HINT_HDR;
    unsigned char *r = hb->p + hb->len;
    put_le64(r, gsn);
    put_le32(r + 8, voff);
    put_le32(r + 12, vlen);
    memcpy(r + 16, key, klen);
    if (ilen) {
        if (value && vlen == ilen)
            memcpy(r + 16 + klen, value, ilen);
        else
            memset(r + 16 + klen, 0, ilen);
    }
    hb->len += rec;
    uint64_t g = gsn & GSN_MASK;
    if (hb->count == 0 || g < hb->min_gsn)
        hb->min_gsn = g;
    if (g > hb->max_gsn)
        hb->max_gsn = g;
    hb->count++;
    return 0;
}

void hint_buf_free(struct hint_buf *hb)
{
    free(hb->p);
    memset(hb, 0, sizeof *hb);
}

int hint_write(int dirfd, uint32_t id, uint32_t klen, const struct hint_buf *hb, uint64_t data_len, armdb *db,
               const struct pagekey *pk)
{
    size_t len = (hb->len ? hb->len : HINT_HDR) + 8;
    size_t npages = pk ? round_up(len, PAGE) / PAGE : 0;
    size_t size = pk ? npages * (PAGE + SLOT) : len;
    unsigned char *p = calloc(1, size);
    if (!p)
        return -ENOMEM;
    if (hb->len > HINT_HDR)
        memcpy(p + HINT_HDR, hb->p + HINT_HDR, hb->len - HINT_HDR);
    memcpy(p, hint_magic, 8);
    put_le32(p + 8, 1);
    put_le32(p + 12, klen);
    put_le64(p + 16, hb->count);
    put_le64(p + 24, hb->min_gsn);
    put_le64(p + 32, hb->max_gsn);
    put_le64(p + 40, data_len);
    put_le64(p + len - 8, XXH3_64bits(p, len - 8));
    int rc = pk ? pk_seal(db, pk, 0, p, p, (uint32_t)npages, p + npages * PAGE) : 0;
    char name[32];
    dfile_name(name, sizeof name, id, "hint");
    if (rc == 0)
        rc = io_write_file_atomic(dirfd, name, p, size);
    free(p);
    return rc;
}

/* Open the sealed pages of an encrypted hint in place: the length of the
 * plain hint in them, or 0 if they do not open. */
static size_t hint_unseal(unsigned char *p, size_t len, uint32_t klen, uint32_t ilen, const struct pagekey *pk)
{
    if (len == 0 || len % (PAGE + SLOT) != 0 || len / (PAGE + SLOT) > UINT32_MAX)
        return 0;
    uint32_t n = (uint32_t)(len / (PAGE + SLOT));
    if (pk_open(pk, 0, p, n, p + (size_t)n * PAGE) != n)
        return 0;
    uint64_t count = get_le64(p + 16), rec = 16 + (uint64_t)klen + ilen;
    if (count > ((uint64_t)n * PAGE) / rec)
        return 0;
    uint64_t plain = HINT_HDR + count * rec + 8;
    return plain <= (uint64_t)n * PAGE && plain > (uint64_t)(n - 1) * PAGE ? (size_t)plain : 0;
}

int hint_unlink(int dirfd, uint32_t id)
{
    char name[32];
    dfile_name(name, sizeof name, id, "hint");
    return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
}

int hint_parse(const unsigned char *p, size_t len, uint32_t klen, uint32_t ilen, uint64_t *data_len, scan_fn fn,
               void *ctx)
{
    size_t rec = 16 + (size_t)klen + ilen;
    if (len < HINT_HDR + 8 || memcmp(p, hint_magic, 8) != 0 || get_le32(p + 8) != 1 ||
        get_le32(p + 12) != klen)
        return 2;
    uint64_t count = get_le64(p + 16);
    uint64_t dlen = get_le64(p + 40);
    if (count > (len - HINT_HDR - 8) / rec || HINT_HDR + count * rec + 8 != len)
        return 2;
    if (get_le64(p + len - 8) != XXH3_64bits(p, len - 8))
        return 2;
    /* Check every record before loading any, so a bad hint leaves no trace. */
    for (uint64_t i = 0; i < count; i++) {
        const unsigned char *r = p + HINT_HDR + i * rec;
        uint64_t gsn = get_le64(r);
        uint64_t voff = get_le32(r + 8), vlen = get_le32(r + 12);
        if (!gsn_flags_ok(gsn) || (gsn & GSN_MASK) == 0 || ((gsn & GSN_TOMB) && vlen) ||
            voff < ENTRY_HDR + klen || voff + vlen > dlen || (ilen && !(gsn & GSN_TOMB) && vlen != ilen))
            return 2;
    }
    for (uint64_t i = 0; i < count; i++) {
        const unsigned char *r = p + HINT_HDR + i * rec;
        int rc = fn(ctx, get_le64(r), get_le32(r + 8), get_le32(r + 12), r + 16, ilen ? r + 16 + klen : NULL);
        if (rc < 0)
            return rc;
    }
    *data_len = dlen;
    return 0;
}

int hint_load(int dirfd, uint32_t id, uint32_t klen, uint32_t ilen, uint64_t *data_len, const struct pagekey *pk,
              scan_fn fn, void *ctx)
{
    char name[32];
    dfile_name(name, sizeof name, id, "hint");
    unsigned char *p;
    size_t len;
    int rc = io_read_file(dirfd, name, &p, &len);
    if (rc < 0)
        return rc == -ENOENT ? 1 : 2;
    size_t plain = pk ? hint_unseal(p, len, klen, ilen, pk) : len;
    rc = plain ? hint_parse(p, plain, klen, ilen, data_len, fn, ctx) : 2;
    io_read_file_free(p, len);
    return rc;
}
