/*
 * index.c - the keydir of one shard: key -> newest entry's location.
 *
 * Two parts, both free of pointers so the index can later live in a shared
 * mapping:
 *  - a record array (gsn, file, value offset, value length, key, inline
 *    value), named by record number; freed records form a list threaded
 *    through their file field and are reused first. It is an anonymous
 *    mapping grown with mremap, so only touched pages cost memory;
 *  - an open-addressed table of 8-byte slots {32 hash bits, record + 1},
 *    linear probing, at most 85% full, grown by a quarter by rehash (the
 *    slot's hash bits give the home slot, so a rehash never rereads keys),
 *    and deletion by backward shift so no tombstones build up.
 * Per key that is key_len + 20 bytes of record (rounded to 4) plus 8 / load
 * of table: at the default load factor, from 68% right after a growth to
 * 85%, at most key_len + 32 bytes. The price of the high load is longer
 * probe runs for missing keys (about 20 slots at 85%), which stay within a
 * few cache lines since a probe compares 8-byte slots before any key.
 *
 * A record with gsn 0 is free (GSNs start at 1).
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#define MIN_SLOTS 64u
#define LOAD_PCT 85u
#define MAX_RECS 0x7fffffffu
#define MAX_SLOTS 0xfffffff0u

/* A table of n slots, zeroed. A big one is a huge-page mapping: every probe
 * of a get lands on a random slot, and with 4 KiB pages nearly each one
 * missed the TLB as well as the cache. */
static uint64_t *slots_alloc(uint32_t n)
{
    size_t len = (size_t)n * sizeof(uint64_t);
    return len >= HUGE_PAGE ? huge_map(len) : calloc(n, sizeof(uint64_t));
}

static void slots_free(uint64_t *slots, uint32_t n)
{
    size_t len = (size_t)n * sizeof(uint64_t);
    if (len >= HUGE_PAGE)
        huge_unmap(slots, len);
    else
        free(slots);
}

int index_init(struct index *ix, uint32_t key_len, uint32_t inline_len)
{
    memset(ix, 0, sizeof *ix);
    ix->key_len = key_len;
    ix->inline_len = inline_len;
    ix->stride = (uint32_t)((REC_KEY + key_len + inline_len + 3) & ~3u);
    ix->slots = slots_alloc(MIN_SLOTS);
    if (!ix->slots)
        return -ENOMEM;
    ix->nslots = MIN_SLOTS;
    ix->recs_map = round_up((size_t)ix->stride * 256, PAGE);
    ix->recs =
        mmap(NULL, ix->recs_map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ix->recs == MAP_FAILED) {
        slots_free(ix->slots, ix->nslots);
        ix->slots = NULL;
        return -ENOMEM;
    }
    return 0;
}

void index_free(struct index *ix)
{
    if (ix->slots)
        slots_free(ix->slots, ix->nslots);
    if (ix->recs && ix->recs != MAP_FAILED)
        munmap(ix->recs, ix->recs_map);
    memset(ix, 0, sizeof *ix);
}

/* The shard was chosen by the high half of the hash; the low half, spread
 * evenly within a shard, picks the slot. */
static inline uint32_t slot_home(uint32_t tag, uint32_t nslots)
{
    return (uint32_t)(((uint64_t)tag * nslots) >> 32);
}
static inline uint32_t slot_next(uint32_t i, uint32_t nslots) { return i + 1 == nslots ? 0 : i + 1; }

int64_t index_find(const struct index *ix, const void *key, uint64_t hash)
{
    uint64_t want = hash << 32;
    for (uint32_t i = slot_home((uint32_t)hash, ix->nslots);; i = slot_next(i, ix->nslots)) {
        uint64_t s = ix->slots[i];
        if (s == 0)
            return -1;
        if ((s & 0xffffffff00000000ull) == want) {
            uint32_t rec = (uint32_t)s - 1;
            if (memcmp(index_rec(ix, rec) + REC_KEY, key, ix->key_len) == 0)
                return rec;
        }
    }
}

static void table_place(uint64_t *slots, uint32_t nslots, uint64_t s)
{
    uint32_t i = slot_home((uint32_t)(s >> 32), nslots);
    while (slots[i])
        i = slot_next(i, nslots);
    slots[i] = s;
}

static int table_resize(struct index *ix, uint32_t n)
{
    uint64_t *slots = slots_alloc(n);
    if (!slots)
        return -ENOMEM;
    for (uint32_t i = 0; i < ix->nslots; i++)
        if (ix->slots[i])
            table_place(slots, n, ix->slots[i]);
    slots_free(ix->slots, ix->nslots);
    ix->slots = slots;
    ix->nslots = n;
    return 0;
}

static int table_grow(struct index *ix)
{
    uint64_t n64 = (uint64_t)ix->nslots + ix->nslots / 4;
    if (n64 > MAX_SLOTS)
        return ARMDB_FULL;
    return table_resize(ix, (uint32_t)n64);
}

static int recs_grow(struct index *ix)
{
    size_t want = ix->recs_map * 2;
    void *p = mremap(ix->recs, ix->recs_map, want, MREMAP_MAYMOVE);
    if (p == MAP_FAILED)
        return -ENOMEM;
    ix->recs = p;
    ix->recs_map = want;
#ifdef MADV_HUGEPAGE
    /* Records are read at random by gets, as slots are. A hint only. */
    if (want >= HUGE_PAGE)
        (void)madvise(p, want, MADV_HUGEPAGE);
#endif
    return 0;
}

int index_reserve(struct index *ix, uint64_t n)
{
    if (n > MAX_RECS)
        return ARMDB_FULL;
    /* Map the records to come and fault their pages in with one call: page
     * by page, the faults cost more than loading the keys. (A kernel
     * without MADV_POPULATE_WRITE faults them as before.) */
    int rc;
    while ((size_t)n * ix->stride > ix->recs_map)
        if ((rc = recs_grow(ix)) < 0)
            return rc;
#ifdef MADV_POPULATE_WRITE
    size_t from = round_down((size_t)ix->nrecs * ix->stride, PAGE),
           to = round_up((size_t)n * ix->stride, PAGE);
    if (to > from)
        (void)madvise(ix->recs + from, to - from, MADV_POPULATE_WRITE);
#endif
    /* One rehash to the final size instead of dozens on the way there. */
    uint64_t want = n * 100 / LOAD_PCT + 1;
    if (want <= ix->nslots)
        return 0;
    if (want > MAX_SLOTS)
        return ARMDB_FULL;
    return table_resize(ix, (uint32_t)want);
}

/* Room for one more key: the table grown if it would pass its load. */
static int make_room(struct index *ix)
{
    if ((uint64_t)(ix->used + 1) * 100 > (uint64_t)ix->nslots * LOAD_PCT)
        return table_grow(ix);
    return 0;
}

/* A record for key, zeroed but for the key: a freed one, or a new one. */
static int64_t rec_new(struct index *ix, const void *key)
{
    uint32_t rec;
    int rc;
    if (ix->free_head) {
        rec = ix->free_head - 1;
        ix->free_head = rec_u32(index_rec(ix, rec), REC_FILE);
    } else {
        if (ix->nrecs >= MAX_RECS)
            return ARMDB_FULL;
        if ((size_t)(ix->nrecs + 1) * ix->stride > ix->recs_map && (rc = recs_grow(ix)) < 0)
            return rc;
        rec = ix->nrecs++;
    }
    unsigned char *r = index_rec(ix, rec);
    memset(r, 0, ix->stride);
    memcpy(r + REC_KEY, key, ix->key_len);
    return rec;
}

int64_t index_insert(struct index *ix, const void *key, uint64_t hash)
{
    int rc = make_room(ix);
    if (rc < 0)
        return rc;
    int64_t rec = rec_new(ix, key);
    if (rec < 0)
        return rec;
    table_place(ix->slots, ix->nslots, hash << 32 | (uint64_t)(rec + 1));
    ix->used++;
    return rec;
}

int64_t index_find_or_insert(struct index *ix, const void *key, uint64_t hash, bool *fresh)
{
    int rc = make_room(ix);
    if (rc < 0)
        return rc;
    uint64_t want = hash << 32;
    uint32_t i = slot_home((uint32_t)hash, ix->nslots);
    for (;; i = slot_next(i, ix->nslots)) {
        uint64_t s = ix->slots[i];
        if (s == 0)
            break;
        if ((s & 0xffffffff00000000ull) == want) {
            uint32_t rec = (uint32_t)s - 1;
            if (memcmp(index_rec(ix, rec) + REC_KEY, key, ix->key_len) == 0) {
                *fresh = false;
                return rec;
            }
        }
    }
    int64_t rec = rec_new(ix, key);
    if (rec < 0)
        return rec;
    ix->slots[i] =
        want | (uint64_t)(rec + 1); /* the first empty slot of the run: where table_place puts it */
    ix->used++;
    *fresh = true;
    return rec;
}

void index_remove(struct index *ix, uint32_t rec, uint64_t hash)
{
    uint32_t n = ix->nslots;
    uint32_t i = slot_home((uint32_t)hash, n);
    while ((uint32_t)ix->slots[i] != rec + 1) {
        assert(ix->slots[i] != 0);
        i = slot_next(i, n);
    }
    /* Backward shift: pull later members of the probe run into the hole
     * unless that would move them before their home slot. */
    uint32_t hole = i;
    for (uint32_t j = slot_next(i, n); ix->slots[j]; j = slot_next(j, n)) {
        uint32_t home = slot_home((uint32_t)(ix->slots[j] >> 32), n);
        uint32_t dist_home = j >= home ? j - home : j + n - home;
        uint32_t dist_hole = j >= hole ? j - hole : j + n - hole;
        if (dist_home >= dist_hole) {
            ix->slots[hole] = ix->slots[j];
            hole = j;
        }
    }
    ix->slots[hole] = 0;
    ix->used--;
    unsigned char *r = index_rec(ix, rec);
    memset(r, 0, ix->stride);
    memcpy(r + REC_FILE, &ix->free_head, 4);
    ix->free_head = rec + 1;
}

size_t index_bytes(const struct index *ix)
{
    return (size_t)ix->nslots * sizeof *ix->slots + round_up((size_t)ix->nrecs * ix->stride, PAGE);
}
