/*
 * fuzz_meta.c - libFuzzer target for the meta-file parser.
 *
 * The oracle: whatever is accepted has in-range fields and encodes back to
 * exactly the input bytes (no field is ignored or reinterpreted).
 */
#include "internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meta m;
    if (meta_decode(&m, data, size) != 0)
        return 0;
    if (m.key_len < 1 || m.key_len > ARMDB_KEY_MAX || m.value_len > ARMDB_INLINE_MAX || m.shards < 1 ||
        m.shards > ARMDB_SHARDS_MAX)
        abort();
    unsigned char out[META_SIZE];
    size_t n = meta_encode(&m, out);
    if (size != n || memcmp(out, data, n) != 0)
        abort();
    return 0;
}
