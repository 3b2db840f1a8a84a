/*
 * ordered_index.c - the ordered index of ordered stores, against the
 * alternative the original system used: a skiplist.
 *
 * Both index the same records (the keys live in an armdb index's record
 * array, as in a shard) and are measured on the same work: inserting N
 * random 16-byte keys, scanning them all in order, N/10 seeks each
 * followed by 100 steps, and deleting every other key. The B+tree is the
 * library's own (src/otree.c); the skiplist is written here as a fair
 * version of the usual design: nodes named by number in one growable
 * array, a random level per node (p = 1/4, at most 24 levels), each node
 * holding its record number and its forward links. Memory is what each
 * structure holds for its nodes (not the records both share).
 *
 *   bench-ordered-index [N]      (default 1000000) -> JSON on stdout
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define KEY_LEN 16
#define SL_MAX 24

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- the skiplist ---- */

struct sl {
    const struct index *ix;
    uint32_t *mem; /* node: rec, level, then level links (node numbers) */
    size_t len, cap;
    uint32_t head; /* offset of the head node in mem */
    uint32_t level;
    size_t bytes;
};

static const unsigned char *sl_key(const struct sl *s, uint32_t node)
{
    return index_rec(s->ix, s->mem[node]) + REC_KEY;
}

static uint32_t sl_new(struct sl *s, uint32_t rec, uint32_t level)
{
    size_t need = 2 + level;
    if (s->len + need > s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 20;
        s->mem = realloc(s->mem, s->cap * 4);
        if (!s->mem)
            abort();
    }
    uint32_t at = (uint32_t)s->len;
    s->mem[at] = rec;
    s->mem[at + 1] = level;
    memset(s->mem + at + 2, 0, level * 4);
    s->len += need;
    s->bytes += need * 4;
    return at;
}

static void sl_init(struct sl *s, const struct index *ix)
{
    memset(s, 0, sizeof *s);
    s->ix = ix;
    s->head = sl_new(s, 0, SL_MAX);
    s->level = 1;
}

/* The last node before key at each level (update[0..SL_MAX)). */
static void sl_find(struct sl *s, const unsigned char *key, uint32_t *update)
{
    uint32_t x = s->head;
    for (int l = (int)s->level - 1; l >= 0; l--) {
        uint32_t nx;
        while ((nx = s->mem[x + 2 + l]) && memcmp(sl_key(s, nx), key, KEY_LEN) < 0)
            x = nx;
        update[l] = x;
    }
}

static void sl_insert(struct sl *s, uint32_t rec)
{
    uint32_t update[SL_MAX];
    const unsigned char *key = index_rec(s->ix, rec) + REC_KEY;
    sl_find(s, key, update);
    uint32_t level = 1;
    while (level < SL_MAX && (rnd() & 3) == 0)
        level++;
    for (uint32_t l = s->level; l < level; l++)
        update[l] = s->head;
    if (level > s->level)
        s->level = level;
    uint32_t n = sl_new(s, rec, level);
    for (uint32_t l = 0; l < level; l++) {
        s->mem[n + 2 + l] = s->mem[update[l] + 2 + l];
        s->mem[update[l] + 2 + l] = n;
    }
}

static void sl_remove(struct sl *s, uint32_t rec)
{
    uint32_t update[SL_MAX];
    const unsigned char *key = index_rec(s->ix, rec) + REC_KEY;
    sl_find(s, key, update);
    uint32_t n = s->mem[update[0] + 2];
    if (!n || s->mem[n] != rec)
        abort();
    for (uint32_t l = 0; l < s->mem[n + 1]; l++)
        if (s->mem[update[l] + 2 + l] == n)
            s->mem[update[l] + 2 + l] = s->mem[n + 2 + l];
    s->bytes -= (2 + s->mem[n + 1]) * 4; /* a real one would free the node */
}

/* ---- the runs ---- */

struct result {
    double insert, scan, seek, remove; /* ops (keys) per second */
    double bytes_per_key;
};

static uint64_t g_sink;

static void run_otree(const struct index *ix, const uint32_t *recs, uint32_t n, const uint32_t *seeks,
                      uint32_t nseek, struct result *r)
{
    struct otree t;
    if (otree_init(&t, KEY_LEN))
        abort();
    double t0 = now();
    for (uint32_t i = 0; i < n; i++)
        if (otree_insert(&t, ix, recs[i]))
            abort();
    r->insert = n / (now() - t0);
    r->bytes_per_key = (double)otree_bytes(&t) / n;
    struct opos pos;
    t0 = now();
    for (bool ok = otree_first(&t, &pos); ok; ok = otree_next(&t, &pos))
        g_sink += index_rec(ix, otree_rec(&t, &pos))[REC_KEY];
    r->scan = n / (now() - t0);
    t0 = now();
    for (uint32_t i = 0; i < nseek; i++) {
        const unsigned char *key = index_rec(ix, seeks[i]) + REC_KEY;
        bool ok = otree_seek(&t, ix, key, KEY_LEN, false, false, &pos);
        for (int s = 0; ok && s < 100; s++, ok = otree_next(&t, &pos))
            g_sink += index_rec(ix, otree_rec(&t, &pos))[REC_KEY];
    }
    r->seek = nseek / (now() - t0);
    t0 = now();
    for (uint32_t i = 0; i < n; i += 2)
        otree_remove(&t, ix, recs[i]);
    r->remove = (n / 2) / (now() - t0);
    otree_free(&t);
}

static void run_skiplist(const struct index *ix, const uint32_t *recs, uint32_t n, const uint32_t *seeks,
                         uint32_t nseek, struct result *r)
{
    struct sl s;
    sl_init(&s, ix);
    double t0 = now();
    for (uint32_t i = 0; i < n; i++)
        sl_insert(&s, recs[i]);
    r->insert = n / (now() - t0);
    r->bytes_per_key = (double)s.bytes / n;
    t0 = now();
    for (uint32_t x = s.mem[s.head + 2]; x; x = s.mem[x + 2])
        g_sink += sl_key(&s, x)[0];
    r->scan = n / (now() - t0);
    t0 = now();
    for (uint32_t i = 0; i < nseek; i++) {
        uint32_t update[SL_MAX];
        sl_find(&s, index_rec(ix, seeks[i]) + REC_KEY, update);
        uint32_t x = s.mem[update[0] + 2];
        for (int k = 0; x && k < 100; k++, x = s.mem[x + 2])
            g_sink += sl_key(&s, x)[0];
    }
    r->seek = nseek / (now() - t0);
    t0 = now();
    for (uint32_t i = 0; i < n; i += 2)
        sl_remove(&s, recs[i]);
    r->remove = (n / 2) / (now() - t0);
    free(s.mem);
}

int main(int argc, char **argv)
{
    uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1000000;
    struct index ix;
    if (index_init(&ix, KEY_LEN, 0) || index_reserve(&ix, n))
        abort();
    uint32_t *recs = malloc(n * 4ull), nseek = n / 10, *seeks = malloc(nseek * 4ull);
    for (uint32_t i = 0; i < n; i++) {
        unsigned char key[KEY_LEN];
        uint64_t a = rnd(), b = rnd();
        memcpy(key, &a, 8);
        memcpy(key + 8, &b, 8);
        int64_t r = index_insert(&ix, key, key_hash(key, KEY_LEN));
        if (r < 0)
            abort();
        rec_set(index_rec(&ix, (uint32_t)r), 1, 1, 0, 0);
        recs[i] = (uint32_t)r;
    }
    for (uint32_t i = 0; i < nseek; i++)
        seeks[i] = recs[rnd() % n];
    struct result bt[3], sl[3];
    for (int rep = 0; rep < 3; rep++) { /* alternate, so drift hits both */
        run_otree(&ix, recs, n, seeks, nseek, &bt[rep]);
        run_skiplist(&ix, recs, n, seeks, nseek, &sl[rep]);
    }
    printf("{\"keys\": %u, \"key_len\": %d, \"seeks\": %u, \"steps_per_seek\": 100, \"reps\": 3,\n", n, KEY_LEN,
           nseek);
    const char *names[2] = {"btree", "skiplist"};
    struct result *rs[2] = {bt, sl};
    for (int e = 0; e < 2; e++) {
        printf(" \"%s\": {", names[e]);
        const char *f[5] = {"insert_per_s", "scan_keys_per_s", "seeks_per_s", "remove_per_s", "bytes_per_key"};
        for (int k = 0; k < 5; k++) {
            double v[3];
            for (int rep = 0; rep < 3; rep++) {
                const struct result *x = &rs[e][rep];
                v[rep] = k == 0 ? x->insert : k == 1 ? x->scan : k == 2 ? x->seek : k == 3 ? x->remove
                                                                                          : x->bytes_per_key;
            }
            /* median of 3 */
            double lo = v[0] < v[1] ? v[0] : v[1], hi = v[0] < v[1] ? v[1] : v[0];
            double med = v[2] < lo ? lo : v[2] > hi ? hi : v[2];
            printf("%s\"%s\": %.1f", k ? ", " : "", f[k], med);
        }
        printf("}%s\n", e ? "" : ",");
    }
    printf("}\n");
    fprintf(stderr, "(sink %" PRIu64 ")\n", g_sink);
    index_free(&ix);
    free(recs);
    free(seeks);
    return 0;
}
