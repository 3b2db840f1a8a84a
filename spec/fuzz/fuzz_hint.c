/*
 * fuzz_hint.c - libFuzzer target for the hint-file parser.
 *
 * Input: byte 0 picks the key length and whether values are inline, the
 * rest is the hint file. The oracle: a hint is accepted only with records
 * that make sense for a data file of the length it states, and a rejected
 * hint has handed out no record.
 */
#include "internal.h"

#include <stdlib.h>

struct oracle {
    uint32_t klen, ilen;
    uint64_t file_len;
    uint64_t records;
};

static int check_rec(void *vctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                     const unsigned char *value)
{
    struct oracle *o = vctx;
    (void)key;
    if ((gsn & GSN_RESERVED) || !(gsn & GSN_MASK) || voff < ENTRY_HDR + o->klen ||
        (uint64_t)voff + vlen > o->file_len || ((gsn & GSN_TOMB) && vlen) || (o->ilen && !value) ||
        (!o->ilen && value))
        abort();
    o->records++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const uint32_t klens[] = {8, 16, 1, 32};
    struct oracle o = {.klen = klens[data[0] & 3], .ilen = (data[0] & 4) ? 8 : 0};
    uint64_t data_len = 0;
    /* The stated data length bounds every record: read it as the parser
     * will, so the callback can check against it. */
    if (size > 1 + 48)
        o.file_len = get_le64(data + 1 + 40);
    int rc = hint_parse(data + 1, size - 1, o.klen, o.ilen, &data_len, check_rec, &o);
    if (rc != 0 && o.records)
        abort();
    if (rc == 0 && data_len != o.file_len)
        abort();
    return 0;
}
