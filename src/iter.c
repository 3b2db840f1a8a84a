/*
 * iter.c - the full scan: every live key of every shard, shard by shard,
 * walking each shard's record array by record number.
 *
 * Record numbers are stable (the hash table may be rehashed, the records
 * do not move), so the scan needs no snapshot: it holds a shard's lock only
 * to copy one key and its location, and reads values on disk after dropping
 * it, like a get. A record freed and reused during the scan is why a key
 * deleted and re-inserted meanwhile may be seen twice.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

struct armdb_iter {
    armdb *db;
    uint32_t shard;
    uint32_t rec;
    unsigned char key[ARMDB_KEY_MAX];
    unsigned char *val;
    size_t val_cap;
};

API int armdb_iter_open(armdb *db, const void *lo, size_t lolen, const void *hi, size_t hilen, unsigned flags,
                        armdb_iter **out)
{
    (void)lolen;
    (void)hilen;
    if (!db || !out)
        return err_set(ARMDB_INVAL, "store handle and out must not be NULL");
    if (lo || hi || flags)
        return err_set(ARMDB_INVAL, "range, prefix and reverse scans need an ordered store");
    armdb_iter *it = calloc(1, sizeof *it);
    if (!it)
        return err_set(-ENOMEM, "open an iterator on %s", db->dir);
    it->db = db;
    *out = it;
    return 0;
}

API int armdb_iter_next(armdb_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen)
{
    if (!it || !key || !klen || !val || !vlen)
        return err_set(ARMDB_INVAL, "iterator and out pointers must not be NULL");
    armdb *db = it->db;
    for (; it->shard < db->nshards; it->shard++, it->rec = 0) {
        struct shard *sh = &db->shards[it->shard];
        pthread_mutex_lock(&sh->mu);
        while (it->rec < sh->ix.nrecs) {
            const unsigned char *rec = index_rec(&sh->ix, it->rec++);
            if (rec_gsn(rec) == 0)
                continue;
            uint32_t vl = rec_u32(rec, REC_VLEN);
            if (vl > it->val_cap) {
                unsigned char *p = realloc(it->val, vl);
                if (!p) {
                    pthread_mutex_unlock(&sh->mu);
                    it->rec--;
                    return err_set(-ENOMEM, "iterate %s", db->dir);
                }
                it->val = p;
                it->val_cap = vl;
            }
            memcpy(it->key, rec + REC_KEY, db->key_len);
            /* A scan does not fill the block cache: it would push out the
             * pages that point reads keep coming back to. */
            int rc = shard_read_unlock(sh, rec, it->key, it->val, false);
            *key = it->key;
            *klen = db->key_len;
            *val = it->val;
            *vlen = vl;
            return rc;
        }
        pthread_mutex_unlock(&sh->mu);
    }
    return ARMDB_NOTFOUND;
}

API void armdb_iter_close(armdb_iter *it)
{
    if (!it)
        return;
    free(it->val);
    free(it);
}
