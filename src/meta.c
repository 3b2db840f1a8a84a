/*
 * meta.c - the ARMDB meta file: what a store is, fixed at creation.
 *
 * | offset | size | field                                       |
 * |--------|------|---------------------------------------------|
 * | 0      | 8    | magic "ARMDB\0\0\1"                         |
 * | 8      | 4    | format version (1)                          |
 * | 12     | 4    | key_len                                     |
 * | 16     | 4    | value_len (0 = variable)                    |
 * | 20     | 4    | shard count                                 |
 * | 24     | 4    | flags (bit 0 ordered, bit 1 encrypted)      |
 * | 28     | 4    | cipher id (0 = none)                        |
 * | 32     | 16   | random store salt                           |
 * | 48     | 32   | key check (zero in plain stores)            |
 * | 80     | 8    | XXH3-64 of bytes 0..79                      |
 *
 * The file is written once, atomically (io_write_file_atomic); a file that
 * fails any check is ARMDB_CORRUPT, never reinterpreted.
 */
#include "internal.h"

#include <xxhash.h>

static const unsigned char meta_magic[8] = {'A', 'R', 'M', 'D', 'B', 0, 0, 1};

_Static_assert(META_SIZE == 88, "meta file layout");

void meta_encode(const struct meta *m, unsigned char out[META_SIZE])
{
    memset(out, 0, META_SIZE);
    memcpy(out, meta_magic, 8);
    put_le32(out + 8, m->version);
    put_le32(out + 12, m->key_len);
    put_le32(out + 16, m->value_len);
    put_le32(out + 20, m->shards);
    put_le32(out + 24, m->flags);
    put_le32(out + 28, m->cipher);
    memcpy(out + 32, m->salt, 16);
    memcpy(out + 48, m->key_check, 32);
    put_le64(out + 80, XXH3_64bits(out, 80));
}

/* 0, ARMDB_CORRUPT (not a valid meta file) or ARMDB_MISMATCH (newer format). */
int meta_decode(struct meta *m, const unsigned char *buf, size_t len)
{
    if (len != META_SIZE || memcmp(buf, meta_magic, 8) != 0)
        return ARMDB_CORRUPT;
    if (get_le64(buf + 80) != XXH3_64bits(buf, 80))
        return ARMDB_CORRUPT;
    m->version = get_le32(buf + 8);
    m->key_len = get_le32(buf + 12);
    m->value_len = get_le32(buf + 16);
    m->shards = get_le32(buf + 20);
    m->flags = get_le32(buf + 24);
    m->cipher = get_le32(buf + 28);
    memcpy(m->salt, buf + 32, 16);
    memcpy(m->key_check, buf + 48, 32);
    if (m->version != 1)
        return ARMDB_MISMATCH;
    if (m->key_len < 1 || m->key_len > ARMDB_KEY_MAX || m->value_len > ARMDB_INLINE_MAX ||
        m->shards < 1 || m->shards > ARMDB_SHARDS_MAX)
        return ARMDB_CORRUPT;
    return 0;
}
