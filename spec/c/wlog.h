/*
 * wlog.h - for the tests of the change feed and of checkpoints: a log of
 * every write with its GSN (through the write hook), random writes over a
 * small key space (puts, overwrites, deletes, batches), and a model map
 * that changes are applied to and that is compared with a store.
 */
#ifndef ARMDB_WLOG_H
#define ARMDB_WLOG_H

#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define KEYS 400u
#define VMAX 300u

struct rec {
    uint64_t gsn;
    uint64_t key;
    uint32_t vlen;
    int deleted;
    unsigned char val[VMAX];
};

static struct rec *logv;
static size_t nlog, log_cap;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static inline void on_write(void *ctx, const armdb_write *w)
{
    (void)ctx;
    pthread_mutex_lock(&log_mu);
    if (nlog == log_cap) {
        log_cap = log_cap ? log_cap * 2 : 4096;
        logv = realloc(logv, log_cap * sizeof *logv);
        CHECK(logv != NULL);
    }
    struct rec *r = &logv[nlog++];
    r->gsn = w->gsn;
    memcpy(&r->key, w->key, 8);
    r->deleted = w->deleted;
    r->vlen = (uint32_t)w->vlen;
    CHECK(w->vlen <= VMAX);
    if (w->vlen)
        memcpy(r->val, w->val, w->vlen);
    pthread_mutex_unlock(&log_mu);
}

static inline int by_gsn(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    return x->gsn < y->gsn ? -1 : x->gsn > y->gsn;
}

static inline uint32_t value_for(uint64_t key, uint64_t version, unsigned char *out)
{
    uint32_t len = (uint32_t)(t_mix(key, version) % VMAX);
    t_fill(t_mix(key, version + 1), out, len);
    return len;
}

/* One random write: a put (often an overwrite), a delete, or a batch of
 * three writes. */
static inline void random_write(armdb *db, uint64_t *seed, uint64_t *version)
{
    unsigned char v[3][VMAX];
    uint64_t r = t_rand(seed) % 100;
    uint64_t k = t_rand(seed) % KEYS;
    if (r < 70) {
        uint32_t n = value_for(k, ++*version, v[0]);
        CHECK_OK(armdb_put(db, &k, 8, v[0], n));
    } else if (r < 95) {
        int rc = armdb_delete(db, &k, 8);
        CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
    } else {
        armdb_op ops[3];
        uint64_t ks[3] = {k, (k + 1) % KEYS, (k + 2) % KEYS};
        /* A batch's delete of an absent key still writes a tombstone, but
         * fires no hook: the log would miss it, so only present keys. */
        size_t len;
        unsigned char buf[VMAX];
        bool present = armdb_get(db, &ks[2], 8, buf, sizeof buf, &len) == 0;
        for (int i = 0; i < 3; i++) {
            uint32_t n = value_for(ks[i], ++*version, v[i]);
            ops[i] = (armdb_op){.type = i == 2 && present ? ARMDB_OP_DELETE : ARMDB_OP_PUT, .key = &ks[i],
                                .klen = 8, .val = v[i], .vlen = n};
        }
        CHECK_OK(armdb_batch(db, ops, 3));
    }
}

/* ---- a model map the feed is applied to ---- */

struct model {
    bool has[KEYS];
    uint32_t len[KEYS];
    unsigned char val[KEYS][VMAX];
};

static inline void model_apply(struct model *m, const armdb_change *ch)
{
    uint64_t k;
    CHECK(ch->klen == 8);
    memcpy(&k, ch->key, 8);
    if (k >= KEYS)
        return; /* filler, outside the model */
    m->has[k] = !ch->deleted;
    m->len[k] = (uint32_t)ch->vlen;
    if (ch->vlen)
        memcpy(m->val[k], ch->val, ch->vlen);
}

static inline void model_equals_store(armdb *db, const struct model *m)
{
    unsigned char buf[VMAX];
    size_t len;
    for (uint64_t k = 0; k < KEYS; k++) {
        int rc = armdb_get(db, &k, 8, buf, sizeof buf, &len);
        if (!m->has[k]) {
            if (rc != ARMDB_NOTFOUND)
                fprintf(stderr, "key %" PRIu64 ": the store has it, the feed deleted it\n", k);
            CHECK_RC(rc, ARMDB_NOTFOUND);
            continue;
        }
        if (rc != 0)
            fprintf(stderr, "key %" PRIu64 ": the feed has it, the store does not\n", k);
        CHECK_OK(rc);
        CHECK(len == m->len[k] && memcmp(buf, m->val[k], len) == 0);
    }
}

/* Read the open feed c to its end, in strictly rising GSN order after
 * since, calling fn for each change; close it. The number of changes;
 * *end = the GSN it ran to. */
static inline uint64_t feed_drain(armdb_changes *c, uint64_t since, void (*fn)(void *, const armdb_change *),
                                  void *ctx, uint64_t *end)
{
    armdb_change ch;
    uint64_t n = 0, last = since;
    int rc;
    while ((rc = armdb_changes_next(c, &ch)) == 0) {
        CHECK(ch.gsn > last);
        last = ch.gsn;
        fn(ctx, &ch);
        n++;
    }
    CHECK_RC(rc, ARMDB_NOTFOUND);
    *end = armdb_changes_end(c);
    armdb_changes_close(c);
    return n;
}

static inline void model_apply_cb(void *m, const armdb_change *ch) { model_apply(m, ch); }

/* The model as of GSN upto: the log's writes up to it, in GSN order
 * (the log sorted first). */
static inline void model_at(struct model *m, uint64_t upto)
{
    pthread_mutex_lock(&log_mu);
    qsort(logv, nlog, sizeof *logv, by_gsn);
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < nlog && logv[i].gsn <= upto; i++) {
        armdb_change ch = {.key = &logv[i].key, .klen = 8, .val = logv[i].deleted ? NULL : logv[i].val,
                           .vlen = logv[i].vlen, .gsn = logv[i].gsn, .deleted = (uint32_t)logv[i].deleted};
        model_apply(m, &ch);
    }
    pthread_mutex_unlock(&log_mu);
}

#endif
