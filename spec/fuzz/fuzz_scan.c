/*
 * fuzz_scan.c - libFuzzer target for the data-file scanner (recovery's
 * reader of untrusted bytes).
 *
 * Input: byte 0 picks the key length and the mode (torn-tail or sealed),
 * the rest is the data file. The oracle: every entry the scanner hands out
 * lies inside the file and verifies against the input's own bytes, and the
 * reported end and torn counts stay within the file. Any crash, hang or
 * sanitizer report is a bug.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct oracle {
    const unsigned char *data;
    size_t len;
    uint32_t klen;
};

static int check_entry(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                       const unsigned char *value)
{
    struct oracle *o = vctx;
    if (voff < ENTRY_HDR + o->klen || (uint64_t)voff + vlen > o->len)
        abort();
    const unsigned char *e = o->data + voff - ENTRY_HDR - o->klen;
    if (get_le64(e + 8) != gsn || get_le32(e + 4) != vlen || get_le32(e) != entry_checksum(e, o->klen, vlen))
        abort();
    if (memcmp(key, e + ENTRY_HDR, o->klen) != 0 || (vlen && memcmp(value, e + ENTRY_HDR + o->klen, vlen) != 0))
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const uint32_t klens[] = {8, 16, 1, 32};
    struct oracle o = {.data = data + 1, .len = size - 1, .klen = klens[data[0] & 3]};
    bool last = data[0] & 4;
    int fd = memfd_create("scan", 0);
    if (fd < 0)
        abort();
    if (o.len && write(fd, o.data, o.len) != (ssize_t)o.len)
        abort();
    struct scan_result res;
    int rc = scan_file(fd, NULL, o.len, o.klen, 1u << 20, 1u << 16, last, check_entry, &o, &res);
    if (rc == 0 && (res.end > o.len || res.torn > o.len))
        abort();
    close(fd);
    return 0;
}
