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
 * | 80     | 8    | plain stores: XXH3-64 of bytes 0..79 (the end)  |
 *
 * Encrypted stores go on:
 *
 * | 80     | 8    | nonce floor: nonces below it may have been used |
 * | 88     | 16   | salt of a rekey under way (zero: none)          |
 * | 104    | 16   | salt the last rekey replaced (zero: none)       |
 * | 120    | 8    | XXH3-64 of bytes 0..119                         |
 *
 * The file is replaced atomically (io_write_file_atomic): written at
 * creation, and in encrypted stores again when a writer reserves nonces
 * and at each step of a rekey. A file that fails any check is
 * ARMDB_CORRUPT, never reinterpreted.
 */
#include "internal.h"

#include <xxhash.h>

static const unsigned char meta_magic[8] = {'A', 'R', 'M', 'D', 'B', 0, 0, 1};

_Static_assert(META_PLAIN == 88 && META_SIZE == 128, "meta file layout");

size_t meta_encode(const struct meta *m, unsigned char out[META_SIZE])
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
    if (!(m->flags & META_ENCRYPTED)) {
        put_le64(out + 80, XXH3_64bits(out, 80));
        return META_PLAIN;
    }
    put_le64(out + 80, m->nonce_floor);
    memcpy(out + 88, m->next_salt, 16);
    memcpy(out + 104, m->prev_salt, 16);
    put_le64(out + 120, XXH3_64bits(out, 120));
    return META_SIZE;
}

/* 0, ARMDB_CORRUPT (not a valid meta file) or ARMDB_MISMATCH (newer format). */
int meta_decode(struct meta *m, const unsigned char *buf, size_t len)
{
    if ((len != META_PLAIN && len != META_SIZE) || memcmp(buf, meta_magic, 8) != 0)
        return ARMDB_CORRUPT;
    if (get_le64(buf + len - 8) != XXH3_64bits(buf, len - 8))
        return ARMDB_CORRUPT;
    memset(m, 0, sizeof *m);
    m->version = get_le32(buf + 8);
    m->key_len = get_le32(buf + 12);
    m->value_len = get_le32(buf + 16);
    m->shards = get_le32(buf + 20);
    m->flags = get_le32(buf + 24);
    m->cipher = get_le32(buf + 28);
    memcpy(m->salt, buf + 32, 16);
    memcpy(m->key_check, buf + 48, 32);
    if (len == META_SIZE) {
        m->nonce_floor = get_le64(buf + 80);
        memcpy(m->next_salt, buf + 88, 16);
        memcpy(m->prev_salt, buf + 104, 16);
    }
    if (m->version != 1)
        return ARMDB_MISMATCH;
    if (m->key_len < 1 || m->key_len > ARMDB_KEY_MAX || m->value_len > ARMDB_INLINE_MAX ||
        m->shards < 1 || m->shards > ARMDB_SHARDS_MAX)
        return ARMDB_CORRUPT;
    /* The length and the encrypted flag agree, and a cipher goes with it. */
    bool enc = m->flags & META_ENCRYPTED;
    if (enc != (len == META_SIZE) || enc != (m->cipher != 0))
        return ARMDB_CORRUPT;
    return 0;
}
