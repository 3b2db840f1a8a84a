/*
 * otree.c - the ordered index of one shard of an ordered store: a B+tree
 * of record numbers, beside the hash table.
 *
 * Leaves hold record numbers only (4 bytes a key); the key itself stays in
 * the record, where the hash table finds it too. Inner nodes hold copies of
 * their separator keys: a separator must stay valid after its record is
 * freed and reused for another key. Nodes live in two pools named by
 * number, like the records, so the tree holds no pointers either.
 *
 * Invariants: every key of child i of an inner node is below separator i
 * and at or above separator i - 1; no leaf but the root is empty; leaves
 * are linked both ways in key order. Deletes never touch separators (a
 * separator of a deleted key still bounds its children correctly); an
 * emptied leaf is unlinked, and a tree whose leaves fall below a quarter
 * full is rebuilt packed, so memory follows the keys down.
 *
 * Memory per key: 512-byte leaves of 124 records, 7/8 full after a build
 * (4.7 bytes a key) and between half and full under random inserts (about
 * 6 bytes a key); inner nodes add about 1/100 of that for 16-byte keys.
 *
 * Every call is made with the shard's lock held.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#define LEAF_BYTES 512u
#define LEAF_HDR 16u
#define LEAF_CAP ((LEAF_BYTES - LEAF_HDR) / 4u)
#define INNER_BYTES 4096u
#define INNER_MIN_CAP 7u
#define BUILD_FILL(cap) ((cap) - (cap) / 8u)

struct leaf {
    uint32_t n, prev, next, pad;
    uint32_t rec[LEAF_CAP];
};

/* ---- node pools: fixed-size nodes named by number (0 = none) ---- */

static int pool_init(struct npool *p, uint32_t size)
{
    memset(p, 0, sizeof *p);
    p->size = size;
    p->map = round_up((size_t)size * 16, PAGE);
    p->mem = mmap(NULL, p->map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p->mem == MAP_FAILED) {
        p->mem = NULL;
        return -ENOMEM;
    }
    p->n = 1; /* node 0 is "none" */
    return 0;
}

static void pool_free_all(struct npool *p)
{
    if (p->mem)
        munmap(p->mem, p->map);
    memset(p, 0, sizeof *p);
}

static inline unsigned char *pool_at(const struct npool *p, uint32_t id)
{
    return p->mem + (size_t)id * p->size;
}

/* Room for k more nodes without growing, so an insert cannot fail halfway. */
static int pool_reserve(struct npool *p, uint32_t k)
{
    while ((uint64_t)p->n + k > p->map / p->size + (uint64_t)p->nfree) {
        if (p->map > (size_t)UINT32_MAX * p->size / 2)
            return ARMDB_FULL;
        void *m = mremap(p->mem, p->map, p->map * 2, MREMAP_MAYMOVE);
        if (m == MAP_FAILED)
            return -ENOMEM;
        p->mem = m;
        p->map *= 2;
    }
    return 0;
}

/* A node, zeroed; pool_reserve() made room. */
static uint32_t pool_take(struct npool *p)
{
    uint32_t id;
    if (p->free_head) {
        id = p->free_head;
        memcpy(&p->free_head, pool_at(p, id), 4);
        p->nfree--;
    } else {
        id = p->n++;
    }
    memset(pool_at(p, id), 0, p->size);
    p->used++;
    return id;
}

static void pool_give(struct npool *p, uint32_t id)
{
    memcpy(pool_at(p, id), &p->free_head, 4);
    p->free_head = id;
    p->nfree++;
    p->used--;
}

/* ---- nodes ---- */

static inline struct leaf *leaf_at(const struct otree *t, uint32_t id)
{
    return (struct leaf *)(void *)pool_at(&t->leaves, id);
}

/* Inner node: u32 n (separators), u32 pad, u32 child[cap + 1], keys. */
static inline uint32_t *inner_n(const struct otree *t, uint32_t id)
{
    return (uint32_t *)(void *)pool_at(&t->inners, id);
}
static inline uint32_t *inner_child(const struct otree *t, uint32_t id)
{
    return inner_n(t, id) + 2;
}
static inline unsigned char *inner_key(const struct otree *t, uint32_t id, uint32_t i)
{
    return pool_at(&t->inners, id) + t->keys_at + (size_t)i * t->key_len;
}

static inline const unsigned char *rkey(const struct index *ix, uint32_t rec)
{
    return index_rec(ix, rec) + REC_KEY;
}

int otree_init(struct otree *t, uint32_t key_len)
{
    memset(t, 0, sizeof *t);
    t->key_len = key_len;
    uint32_t cap = (INNER_BYTES - 12) / (key_len + 4);
    if (cap < INNER_MIN_CAP)
        cap = INNER_MIN_CAP;
    t->inner_cap = cap;
    t->keys_at = 8 + 4 * (cap + 1);
    int rc = pool_init(&t->leaves, LEAF_BYTES);
    if (rc == 0)
        rc = pool_init(&t->inners, (uint32_t)round_up(t->keys_at + (size_t)cap * key_len, 64));
    if (rc < 0)
        otree_free(t);
    return rc;
}

void otree_free(struct otree *t)
{
    pool_free_all(&t->leaves);
    pool_free_all(&t->inners);
    t->root = t->height = 0;
    t->count = 0;
}

size_t otree_bytes(const struct otree *t)
{
    return (size_t)t->leaves.used * t->leaves.size + (size_t)t->inners.used * t->inners.size;
}

/* ---- comparing keys with bounds ---- */

struct seek {
    const void *b;
    uint32_t blen;
    bool prefix, strict;
};

/* The search predicate: false, then true, along the keys. */
static inline bool past(const struct otree *t, const unsigned char *key, const struct seek *s)
{
    int c = key_bound_cmp(key, t->key_len, s->b, s->blen, s->prefix);
    return s->strict ? c > 0 : c >= 0;
}

/* The first child (or leaf slot) whose key is past s: the count of keys
 * before it that are not. */
static uint32_t inner_find(const struct otree *t, uint32_t id, const struct seek *s)
{
    uint32_t lo = 0, hi = *inner_n(t, id);
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (past(t, inner_key(t, id, mid), s))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static uint32_t leaf_find(const struct otree *t, const struct index *ix, const struct leaf *l,
                          const struct seek *s)
{
    uint32_t lo = 0, hi = l->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (past(t, rkey(ix, l->rec[mid]), s))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

#define MAX_HEIGHT 32

struct path {
    uint32_t node[MAX_HEIGHT]; /* node[0] is the root */
    uint32_t at[MAX_HEIGHT];   /* child taken (inner) or slot (leaf) */
};

/* Walk from the root to the leaf where s becomes true; the leaf is
 * p->node[height - 1], the slot p->at[height - 1]. */
static void descend(const struct otree *t, const struct index *ix, const struct seek *s, struct path *p)
{
    uint32_t id = t->root;
    for (uint32_t d = 0; d + 1 < t->height; d++) {
        uint32_t i = inner_find(t, id, s);
        p->node[d] = id;
        p->at[d] = i;
        id = inner_child(t, id)[i];
    }
    p->node[t->height - 1] = id;
    p->at[t->height - 1] = leaf_find(t, ix, leaf_at(t, id), s);
}

/* ---- positions ---- */

static bool pos_fix(const struct otree *t, struct opos *pos)
{
    /* Past the end of a leaf: the next leaf's first key (never empty). */
    if (pos->leaf && pos->i >= leaf_at(t, pos->leaf)->n) {
        pos->leaf = leaf_at(t, pos->leaf)->next;
        pos->i = 0;
    }
    return pos->leaf != 0;
}

bool otree_seek(const struct otree *t, const struct index *ix, const void *b, uint32_t blen, bool prefix,
                bool strict, struct opos *pos)
{
    pos->leaf = pos->i = 0;
    if (!t->height)
        return false;
    struct seek s = {b, blen, prefix, strict};
    struct path p;
    descend(t, ix, &s, &p);
    pos->leaf = p.node[t->height - 1];
    pos->i = p.at[t->height - 1];
    return pos_fix(t, pos);
}

/* The first key (last: the last one). */
static bool edge(const struct otree *t, struct opos *pos, bool last)
{
    pos->leaf = pos->i = 0;
    if (!t->height)
        return false;
    uint32_t id = t->root;
    for (uint32_t d = 0; d + 1 < t->height; d++)
        id = inner_child(t, id)[last ? *inner_n(t, id) : 0];
    struct leaf *l = leaf_at(t, id);
    if (!l->n)
        return false;
    pos->leaf = id;
    pos->i = last ? l->n - 1 : 0;
    return true;
}

bool otree_first(const struct otree *t, struct opos *pos) { return edge(t, pos, false); }
bool otree_last(const struct otree *t, struct opos *pos) { return edge(t, pos, true); }

bool otree_next(const struct otree *t, struct opos *pos)
{
    pos->i++;
    return pos_fix(t, pos);
}

bool otree_prev(const struct otree *t, struct opos *pos)
{
    if (pos->i > 0) {
        pos->i--;
        return true;
    }
    pos->leaf = leaf_at(t, pos->leaf)->prev;
    if (!pos->leaf)
        return false;
    pos->i = leaf_at(t, pos->leaf)->n - 1;
    return true;
}

uint32_t otree_rec(const struct otree *t, const struct opos *pos)
{
    return leaf_at(t, pos->leaf)->rec[pos->i];
}

/* ---- insert ---- */

/* Put separator key and right child at position i of inner node id (which
 * has room). */
static void inner_put(struct otree *t, uint32_t id, uint32_t i, const unsigned char *key, uint32_t right)
{
    uint32_t *n = inner_n(t, id), *c = inner_child(t, id);
    memmove(inner_key(t, id, i + 1), inner_key(t, id, i), (size_t)(*n - i) * t->key_len);
    memcpy(inner_key(t, id, i), key, t->key_len);
    memmove(c + i + 2, c + i + 1, (size_t)(*n - i) * 4);
    c[i + 1] = right;
    (*n)++;
}

int otree_insert(struct otree *t, const struct index *ix, uint32_t rec)
{
    int rc;
    if ((rc = pool_reserve(&t->leaves, 2)) < 0 || (rc = pool_reserve(&t->inners, t->height + 1)) < 0)
        return rc;
    if (t->height >= MAX_HEIGHT - 1)
        return ARMDB_FULL;
    const unsigned char *key = rkey(ix, rec);
    if (!t->height) {
        t->root = pool_take(&t->leaves);
        t->height = 1;
    }
    struct seek s = {key, t->key_len, false, true};
    struct path p;
    descend(t, ix, &s, &p);
    uint32_t d = t->height - 1, id = p.node[d], i = p.at[d];
    struct leaf *l = leaf_at(t, id);
    t->count++;
    if (l->n < LEAF_CAP) {
        memmove(l->rec + i + 1, l->rec + i, (size_t)(l->n - i) * 4);
        l->rec[i] = rec;
        l->n++;
        return 0;
    }
    /* Split the leaf: the upper half moves to a new right neighbour. */
    uint32_t rid = pool_take(&t->leaves);
    struct leaf *r = leaf_at(t, rid);
    l = leaf_at(t, id);
    uint32_t m = LEAF_CAP / 2;
    r->n = l->n - m;
    memcpy(r->rec, l->rec + m, (size_t)r->n * 4);
    l->n = m;
    r->next = l->next;
    r->prev = id;
    if (l->next)
        leaf_at(t, l->next)->prev = rid;
    l->next = rid;
    struct leaf *into = i <= m ? l : r;
    uint32_t at = i <= m ? i : i - m;
    memmove(into->rec + at + 1, into->rec + at, (size_t)(into->n - at) * 4);
    into->rec[at] = rec;
    into->n++;
    /* The separator goes up, splitting full inner nodes on the way. */
    unsigned char up[ARMDB_KEY_MAX];
    memcpy(up, rkey(ix, r->rec[0]), t->key_len);
    uint32_t right = rid;
    while (d-- > 0) {
        id = p.node[d];
        i = p.at[d];
        uint32_t n = *inner_n(t, id);
        if (n < t->inner_cap) {
            inner_put(t, id, i, up, right);
            return 0;
        }
        /* Separators [0, h) stay, h goes up, (h, n) move right. */
        uint32_t h = n / 2, nid = pool_take(&t->inners);
        uint32_t rn = n - h - 1;
        memcpy(inner_key(t, nid, 0), inner_key(t, id, h + 1), (size_t)rn * t->key_len);
        memcpy(inner_child(t, nid), inner_child(t, id) + h + 1, (size_t)(rn + 1) * 4);
        *inner_n(t, nid) = rn;
        unsigned char mid[ARMDB_KEY_MAX];
        memcpy(mid, inner_key(t, id, h), t->key_len);
        *inner_n(t, id) = h;
        if (i <= h)
            inner_put(t, id, i, up, right);
        else
            inner_put(t, nid, i - h - 1, up, right);
        memcpy(up, mid, t->key_len);
        right = nid;
    }
    /* The root split: a new root above it. */
    uint32_t root = pool_take(&t->inners);
    inner_child(t, root)[0] = t->root;
    inner_put(t, root, 0, up, right);
    t->root = root;
    t->height++;
    return 0;
}

/* ---- build: a packed tree from sorted records ---- */

struct level {
    uint32_t *node;  /* node ids */
    uint32_t *first; /* record of each node's smallest key */
    uint32_t n;
};

/* Build t (empty, initialised) from recs[0..n), sorted and distinct. */
static int build_sorted(struct otree *t, const struct index *ix, const uint32_t *recs, uint32_t n)
{
    if (!n)
        return 0;
    uint32_t fill = BUILD_FILL(LEAF_CAP);
    uint32_t nl = (n + fill - 1) / fill;
    int rc = pool_reserve(&t->leaves, nl);
    struct level lv = {malloc((size_t)nl * 4), malloc((size_t)nl * 4), nl};
    if (rc == 0 && (!lv.node || !lv.first))
        rc = -ENOMEM;
    if (rc < 0)
        goto out;
    /* Spread the keys evenly: no leaf much smaller than the others. */
    uint32_t done = 0, prev = 0;
    for (uint32_t j = 0; j < nl; j++) {
        uint32_t take = (uint32_t)(((uint64_t)n * (j + 1)) / nl) - done;
        uint32_t id = pool_take(&t->leaves);
        struct leaf *l = leaf_at(t, id);
        memcpy(l->rec, recs + done, (size_t)take * 4);
        l->n = take;
        l->prev = prev;
        if (prev)
            leaf_at(t, prev)->next = id;
        prev = id;
        lv.node[j] = id;
        lv.first[j] = recs[done];
        done += take;
    }
    t->height = 1;
    uint32_t ifill = BUILD_FILL(t->inner_cap) + 1; /* children per inner node */
    while (lv.n > 1) {
        uint32_t ni = (lv.n + ifill - 1) / ifill;
        if ((rc = pool_reserve(&t->inners, ni)) < 0)
            goto out;
        uint32_t from = 0;
        for (uint32_t j = 0; j < ni; j++) {
            uint32_t to = (uint32_t)(((uint64_t)lv.n * (j + 1)) / ni);
            uint32_t id = pool_take(&t->inners);
            uint32_t *c = inner_child(t, id);
            for (uint32_t k = from; k < to; k++) {
                c[k - from] = lv.node[k];
                if (k > from)
                    memcpy(inner_key(t, id, k - from - 1), rkey(ix, lv.first[k]), t->key_len);
            }
            *inner_n(t, id) = to - from - 1;
            lv.node[j] = id;
            lv.first[j] = lv.first[from];
            from = to;
        }
        lv.n = ni;
        t->height++;
    }
    t->root = lv.node[0];
    t->count = n;
out:
    free(lv.node);
    free(lv.first);
    return rc;
}

/* Replace t with a packed tree of recs[0..n) (sorted); t is left as it was
 * if that fails. */
static int replace_with(struct otree *t, const struct index *ix, const uint32_t *recs, uint32_t n)
{
    struct otree nt;
    int rc = otree_init(&nt, t->key_len);
    if (rc == 0 && (rc = build_sorted(&nt, ix, recs, n)) < 0)
        otree_free(&nt);
    if (rc == 0) {
        otree_free(t);
        *t = nt;
    }
    return rc;
}

static int key_order(const void *a, const void *b, void *arg)
{
    const struct index *ix = arg;
    return memcmp(rkey(ix, *(const uint32_t *)a), rkey(ix, *(const uint32_t *)b), ix->key_len);
}

int otree_build(struct otree *t, const struct index *ix)
{
    uint32_t *recs = malloc(((size_t)ix->used + 1) * 4);
    if (!recs)
        return -ENOMEM;
    uint32_t n = 0;
    for (uint32_t r = 0; r < ix->nrecs; r++)
        if (rec_gsn(index_rec(ix, r)))
            recs[n++] = r;
    qsort_r(recs, n, 4, key_order, (void *)ix);
    int rc = replace_with(t, ix, recs, n);
    free(recs);
    return rc;
}

/* Rebuild packed from the leaves, when deletes left them sparse. Best
 * effort: without memory, the sparse tree stays (it is still correct). */
static void repack(struct otree *t, const struct index *ix)
{
    uint32_t *recs = malloc(((size_t)t->count + 1) * 4);
    if (!recs)
        return;
    uint32_t n = 0;
    struct opos pos;
    for (bool ok = otree_first(t, &pos); ok; ok = otree_next(t, &pos))
        recs[n++] = otree_rec(t, &pos);
    (void)replace_with(t, ix, recs, n);
    free(recs);
}

/* ---- remove ---- */

void otree_remove(struct otree *t, const struct index *ix, uint32_t rec)
{
    assert(t->height);
    /* Strictly past the key: a separator equal to it leads right, where
     * the key is; the slot found is the one after it. */
    struct seek s = {rkey(ix, rec), t->key_len, false, true};
    struct path p;
    descend(t, ix, &s, &p);
    uint32_t d = t->height - 1, id = p.node[d], i = p.at[d] - 1;
    struct leaf *l = leaf_at(t, id);
    assert(p.at[d] > 0 && l->rec[i] == rec);
    memmove(l->rec + i, l->rec + i + 1, (size_t)(l->n - i - 1) * 4);
    l->n--;
    t->count--;
    if (l->n == 0) {
        /* Unlink the empty leaf, and each inner node it leaves childless. */
        if (l->prev)
            leaf_at(t, l->prev)->next = l->next;
        if (l->next)
            leaf_at(t, l->next)->prev = l->prev;
        if (d == 0) {
            pool_give(&t->leaves, id);
            t->root = t->height = 0;
            return;
        }
        pool_give(&t->leaves, id);
        while (d-- > 0) {
            id = p.node[d];
            i = p.at[d];
            uint32_t *n = inner_n(t, id), *c = inner_child(t, id);
            if (*n == 0) { /* its only child is gone */
                pool_give(&t->inners, id);
                continue;
            }
            uint32_t k = i > 0 ? i - 1 : 0; /* the separator that goes with child i */
            memmove(inner_key(t, id, k), inner_key(t, id, k + 1), (size_t)(*n - k - 1) * t->key_len);
            memmove(c + i, c + i + 1, (size_t)(*n - i) * 4);
            (*n)--;
            break;
        }
        /* A root with one child gives way to it. */
        while (t->height > 1 && *inner_n(t, t->root) == 0) {
            uint32_t only = inner_child(t, t->root)[0];
            pool_give(&t->inners, t->root);
            t->root = only;
            t->height--;
        }
    }
    if (t->leaves.used > 16 && t->count * 4 < (uint64_t)t->leaves.used * LEAF_CAP)
        repack(t, ix);
}
