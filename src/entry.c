/*
 * entry.c - one record of a data file.
 *
 * | offset       | size     | field                                        |
 * |--------------|----------|----------------------------------------------|
 * | 0            | 4        | low 32 bits of XXH3-64 over bytes 4..value end |
 * | 4            | 4        | value_len (0 for tombstones)                 |
 * | 8            | 8        | gsn; bit 63 tombstone, bits 62..60 reserved  |
 * | 16           | key_len  | key                                          |
 * | 16+key_len   | value_len| value                                        |
 * | ...          | 0-7      | zero padding to an 8-byte boundary           |
 *
 * The checksum covers the length and the GSN, so a damaged header is caught
 * like a damaged value. Entries never start with fewer than 16 bytes left in
 * a 4096-byte page (wbuf.c zero-fills the rest of the page instead).
 */
#include "internal.h"

#include <xxhash.h>

uint32_t entry_checksum(const unsigned char *entry, uint32_t klen, uint32_t vlen)
{
    return (uint32_t)XXH3_64bits(entry + 4, 12 + (size_t)klen + vlen);
}

void entry_encode(unsigned char *dst, uint64_t gsn, const void *key, uint32_t klen, const void *val,
                  uint32_t vlen)
{
    put_le32(dst + 4, vlen);
    put_le64(dst + 8, gsn);
    memcpy(dst + ENTRY_HDR, key, klen);
    if (vlen)
        memcpy(dst + ENTRY_HDR + klen, val, vlen);
    size_t used = ENTRY_HDR + (size_t)klen + vlen;
    memset(dst + used, 0, entry_size(klen, vlen) - used);
    put_le32(dst, entry_checksum(dst, klen, vlen));
}

/* True if the entry at p is whole and intact: plausible header, fits in
 * the `avail` readable bytes, checksum matches. */
bool entry_valid(const unsigned char *p, uint32_t klen, uint32_t vmax, uint64_t avail)
{
    if (avail < ENTRY_HDR)
        return false;
    uint32_t vlen = get_le32(p + 4);
    uint64_t gsn = get_le64(p + 8);
    if (vlen > vmax || !gsn_flags_ok(gsn) || (gsn & GSN_MASK) == 0)
        return false;
    if ((gsn & GSN_TOMB) && vlen != 0)
        return false;
    if (entry_size(klen, vlen) > avail)
        return false;
    return get_le32(p) == entry_checksum(p, klen, vlen);
}
