/*
 * cache.c - the block cache: 4096-byte pages of data files, kept in
 * memory because O_DIRECT reads bypass the kernel's page cache.
 *
 * A block is named by (shard, file id, page number). File ids are never
 * reused within a shard and only pages that will never change again are
 * inserted (sealed files, and pages of the active file below its write
 * buffer), so a name always means the same bytes: no invalidation is
 * needed when files rotate, and a block can never be served for another
 * file's offset.
 *
 * The cache is split into partitions by a hash of the name, each with its
 * own lock and chained hash table, so concurrent readers of different
 * blocks rarely meet. Eviction is S3-FIFO (Yang et al., SOSP 2023) without
 * its ghost queue: a new block enters a small FIFO (a tenth of the
 * partition); leaving it, a block that was read again moves to the main
 * FIFO, one that was not is dropped. The main FIFO gives blocks with hits a
 * second (up to a third) pass. A scan's blocks are read once, so they flow
 * through the small FIFO without disturbing the hot blocks in the main one.
 * Copies in and out are whole 4096-byte blocks under the partition lock.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#define NO_SLOT UINT32_MAX

struct cache_slot {
    uint64_t name; /* real names are never 0: file ids start at 1 */
    uint32_t next; /* chain in the bucket */
    uint8_t freq;  /* hits since it entered its queue, at most 3 */
};

/* A FIFO of slot numbers: a ring as long as the partition. */
struct fifo {
    uint32_t *ring;
    uint32_t head, count;
};

struct cache_part {
    pthread_mutex_t mu;
    struct cache_slot *slots;
    uint32_t *buckets;
    unsigned char *blocks;
    uint32_t nslots, nbuckets;
    uint32_t used;
    struct fifo small, main;
    uint32_t small_target;
    uint64_t hits, misses, evictions;
};

static void fifo_push(struct fifo *q, uint32_t n, uint32_t s)
{
    q->ring[(q->head + q->count) % n] = s;
    q->count++;
}

static uint32_t fifo_pop(struct fifo *q, uint32_t n)
{
    uint32_t s = q->ring[q->head];
    q->head = (q->head + 1) % n;
    q->count--;
    return s;
}

struct cache {
    struct cache_part *parts;
    uint32_t nparts;
};

static inline uint64_t name_hash(uint64_t name)
{
    name ^= name >> 33;
    name *= 0xff51afd7ed558ccdull;
    name ^= name >> 33;
    return name;
}

uint64_t cache_name(uint32_t shard, uint32_t file, uint64_t page)
{
    return (uint64_t)shard << 49 | (uint64_t)file << 22 | (page & ((1u << 22) - 1));
}

int cache_init(struct cache **out, uint64_t bytes)
{
    uint64_t nblocks = bytes / PAGE;
    uint32_t nparts = 16;
    while (nparts > 1 && nblocks / nparts < 64)
        nparts /= 2;
    struct cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->parts = calloc(nparts, sizeof *c->parts);
    if (!c->parts) {
        free(c);
        return -ENOMEM;
    }
    c->nparts = nparts;
    for (uint32_t i = 0; i < nparts; i++) {
        struct cache_part *p = &c->parts[i];
        pthread_mutex_init(&p->mu, NULL);
        p->nslots = (uint32_t)(nblocks / nparts);
        if (p->nslots < 1)
            p->nslots = 1;
        p->nbuckets = p->nslots;
        p->slots = calloc(p->nslots, sizeof *p->slots);
        p->buckets = malloc(p->nbuckets * sizeof *p->buckets);
        p->small.ring = malloc(p->nslots * sizeof(uint32_t));
        p->main.ring = malloc(p->nslots * sizeof(uint32_t));
        p->small_target = p->nslots / 10 ? p->nslots / 10 : 1;
        /* Address space only: memory is taken as blocks fill, and hits
         * miss the TLB less on huge pages. */
        p->blocks = huge_map((size_t)p->nslots * PAGE);
        if (!p->slots || !p->buckets || !p->blocks || !p->small.ring || !p->main.ring) {
            c->nparts = i + 1;
            cache_free(c);
            return -ENOMEM;
        }
        for (uint32_t b = 0; b < p->nbuckets; b++)
            p->buckets[b] = NO_SLOT;
    }
    *out = c;
    return 0;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->nparts; i++) {
        struct cache_part *p = &c->parts[i];
        free(p->slots);
        free(p->buckets);
        free(p->small.ring);
        free(p->main.ring);
        if (p->blocks)
            huge_unmap(p->blocks, (size_t)p->nslots * PAGE);
        pthread_mutex_destroy(&p->mu);
    }
    free(c->parts);
    free(c);
}

static struct cache_part *part_of(struct cache *c, uint64_t h) { return &c->parts[h % c->nparts]; }

static uint32_t find(struct cache_part *p, uint64_t name, uint64_t h)
{
    uint32_t s = p->buckets[(h >> 8) % p->nbuckets];
    while (s != NO_SLOT && p->slots[s].name != name)
        s = p->slots[s].next;
    return s;
}

bool cache_get_part(struct cache *c, uint64_t name, void *dst, uint32_t off, uint32_t len)
{
    uint64_t h = name_hash(name);
    struct cache_part *p = part_of(c, h);
    pthread_mutex_lock(&p->mu);
    uint32_t s = find(p, name, h);
    if (s != NO_SLOT) {
        if (p->slots[s].freq < 3)
            p->slots[s].freq++;
        memcpy(dst, p->blocks + (size_t)s * PAGE + off, len);
        p->hits++;
    } else {
        p->misses++;
    }
    pthread_mutex_unlock(&p->mu);
    return s != NO_SLOT;
}

static void unlink_slot(struct cache_part *p, uint32_t s)
{
    uint32_t *link = &p->buckets[(name_hash(p->slots[s].name) >> 8) % p->nbuckets];
    while (*link != s)
        link = &p->slots[*link].next;
    *link = p->slots[s].next;
}

/* Free a slot of a full partition (S3-FIFO). */
static uint32_t evict(struct cache_part *p)
{
    for (;;) {
        uint32_t s;
        if (p->small.count > p->small_target || p->main.count == 0) {
            s = fifo_pop(&p->small, p->nslots);
            if (p->slots[s].freq > 0) {
                p->slots[s].freq = 0;
                fifo_push(&p->main, p->nslots, s);
                continue;
            }
        } else {
            s = fifo_pop(&p->main, p->nslots);
            if (p->slots[s].freq > 0) {
                p->slots[s].freq--;
                fifo_push(&p->main, p->nslots, s);
                continue;
            }
        }
        unlink_slot(p, s);
        p->evictions++;
        return s;
    }
}

void cache_put(struct cache *c, uint64_t name, const void *src)
{
    uint64_t h = name_hash(name);
    struct cache_part *p = part_of(c, h);
    pthread_mutex_lock(&p->mu);
    if (find(p, name, h) != NO_SLOT) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    uint32_t s;
    if (p->used < p->nslots)
        s = p->used++;
    else
        s = evict(p);
    uint32_t b = (h >> 8) % p->nbuckets;
    p->slots[s].name = name;
    p->slots[s].freq = 0;
    p->slots[s].next = p->buckets[b];
    p->buckets[b] = s;
    fifo_push(&p->small, p->nslots, s);
    memcpy(p->blocks + (size_t)s * PAGE, src, PAGE);
    pthread_mutex_unlock(&p->mu);
}

void cache_stats(struct cache *c, armdb_stat *st)
{
    for (uint32_t i = 0; i < c->nparts; i++) {
        struct cache_part *p = &c->parts[i];
        pthread_mutex_lock(&p->mu);
        st->cache_hits += p->hits;
        st->cache_misses += p->misses;
        st->cache_evictions += p->evictions;
        st->cache_bytes += (uint64_t)p->used * PAGE;
        pthread_mutex_unlock(&p->mu);
    }
}
