/*
 * batch.c - atomic batches across shards, and the DURABLE file that lets
 * their members become ordinary entries.
 *
 * A batch of m >= 2 writes takes m consecutive GSNs and appends each write
 * to its own shard as an ordinary entry whose GSN carries GSN_BATCH (the
 * first also GSN_FIRST, the last GSN_LAST), with every shard it touches
 * locked, in shard order. No other write can come between, and nothing is
 * applied to the index until every member is appended. Recovery applies a
 * member only if its whole run of GSNs, first to last, is on disk: after a
 * crash at any point, all of a batch or none of it.
 *
 * That check cannot last forever: compaction drops members that later
 * writes made dead, and a run with a hole would look torn. So the DURABLE
 * file records a GSN D below which every entry of every shard is known
 * durable (written after a barrier on every shard), and the batches found
 * torn (aborted): a member at or below D and not in an aborted run is
 * ordinary, and only members at or below D may be dropped by compaction.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>

#define DURABLE_MAGIC "ARMDBDU2"
#define DURABLE_MAGIC_V1 "ARMDBDUR"
#define DURABLE_HDR 32u
#define DURABLE_HDR_V1 24u

/* ---- the DURABLE file ----
 *
 *   0   8  magic "ARMDBDU2"
 *   8   8  D: every entry with a GSN up to D is durable in every shard
 *   16  4  n: aborted runs that follow
 *   20  4  0
 *   24  8  the change feed's horizon: the largest GSN of a tombstone that
 *          compaction removed (a feed from below it would miss a delete)
 *   32  16 n times: first GSN, last GSN of a run of members never to apply
 *   ..  8  XXH3-64 of all the bytes before
 *
 * The first version ("ARMDBDUR") had no horizon and its runs at 24; it is
 * still read (horizon 0), and replaced by this one at the next write.
 */

bool batch_aborted(armdb *db, uint64_t gsn)
{
    uint64_t g = gsn & GSN_MASK;
    bool found = false;
    pthread_mutex_lock(&db->durable_mu); /* a failing batch may add a run meanwhile */
    for (uint32_t i = 0; i < db->naborted && !found; i++)
        found = g >= db->aborted[i].first && g <= db->aborted[i].last;
    pthread_mutex_unlock(&db->durable_mu);
    return found;
}

/* The DURABLE file's bytes, checked: *hdr its header size, *n its runs
 * (-ENOENT if there is none). */
static int durable_read(armdb *db, unsigned char **buf, size_t *len, size_t *hdr, uint32_t *n)
{
    int rc = io_read_file(db->dirfd, "DURABLE", buf, len);
    if (rc == -ENOENT)
        return rc;
    if (rc < 0)
        return err_set(rc, "read %s/DURABLE", db->dir);
    bool v1 = *len >= 8 && memcmp(*buf, DURABLE_MAGIC_V1, 8) == 0;
    *hdr = v1 ? DURABLE_HDR_V1 : DURABLE_HDR;
    *n = *len >= *hdr ? get_le32(*buf + 16) : 0;
    if (*len < *hdr + 8 || (!v1 && memcmp(*buf, DURABLE_MAGIC, 8) != 0) || *len != *hdr + 16ull * *n + 8 ||
        get_le64(*buf + *len - 8) != XXH3_64bits(*buf, *len - 8)) {
        io_read_file_free(*buf, *len);
        /* Refuse rather than guess: taking D as 0 could turn compacted
         * batches into torn ones, and anything larger could apply a torn
         * batch. */
        return err_set(ARMDB_CORRUPT, "%s/DURABLE is damaged", db->dir);
    }
    return 0;
}

int durable_load(armdb *db)
{
    unsigned char *buf;
    size_t len, hdr;
    uint32_t n;
    int rc = durable_read(db, &buf, &len, &hdr, &n);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    bool v1 = hdr == DURABLE_HDR_V1;
    db->durable_gsn = get_le64(buf + 8);
    db->dropped_gsn = v1 ? 0 : get_le64(buf + 24);
    if (n && !(db->aborted = calloc(n, sizeof *db->aborted))) {
        io_read_file_free(buf, len);
        return err_set(-ENOMEM, "read %s/DURABLE", db->dir);
    }
    for (uint32_t i = 0; i < n; i++) {
        db->aborted[i].first = get_le64(buf + hdr + 16 * i);
        db->aborted[i].last = get_le64(buf + hdr + 16 * i + 8);
    }
    db->naborted = db->aborted_cap = n;
    io_read_file_free(buf, len);
    /* New entries must come after D (which may be another store's GSN) and
     * after every aborted run: a GSN at or below D would pass as ordinary,
     * one in a run as never to apply. */
    gsn_observe(db, db->durable_gsn);
    for (uint32_t i = 0; i < n; i++)
        gsn_observe(db, db->aborted[i].last);
    /* and after a tombstone compaction dropped: the store's last GSN
     * never goes back, even when the entry that held it is gone (a
     * replica's position may stand on it) */
    gsn_observe(db, atomic_load(&db->dropped_gsn));
    return 0;
}

/* Write the DURABLE file with D = upto and the aborted runs (under
 * durable_mu). In shared mode another process may have written it since
 * (one at a time: compaction's lock, or the last close): D and the
 * horizon never go back. (The aborted runs are the first opener's, which
 * every process loaded: shared batches roll back instead.) */
static int durable_write(armdb *db, uint64_t upto)
{
    if (db->shared) {
        unsigned char *cur;
        size_t clen, hdr;
        uint32_t n;
        int rc = durable_read(db, &cur, &clen, &hdr, &n);
        if (rc < 0 && rc != -ENOENT)
            return rc;
        if (rc == 0) {
            if (get_le64(cur + 8) > upto)
                upto = get_le64(cur + 8);
            if (hdr == DURABLE_HDR)
                atomic_max_u64(&db->dropped_gsn, get_le64(cur + 24));
            io_read_file_free(cur, clen);
        }
    }
    size_t len = DURABLE_HDR + 16ull * db->naborted + 8;
    unsigned char *buf = calloc(1, len);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, DURABLE_MAGIC, 8);
    put_le64(buf + 8, upto);
    put_le32(buf + 16, db->naborted);
    put_le64(buf + 24, atomic_load(&db->dropped_gsn));
    for (uint32_t i = 0; i < db->naborted; i++) {
        put_le64(buf + DURABLE_HDR + 16 * i, db->aborted[i].first);
        put_le64(buf + DURABLE_HDR + 16 * i + 8, db->aborted[i].last);
    }
    put_le64(buf + len - 8, XXH3_64bits(buf, len - 8));
    int rc = io_write_file_atomic(db->dirfd, "DURABLE", buf, len);
    free(buf);
    if (rc < 0)
        return err_set(rc, "write %s/DURABLE", db->dir);
    atomic_store(&db->durable_gsn, upto);
    return 0;
}

int batch_note_aborted(armdb *db, const struct gsn_run *runs, uint32_t n)
{
    pthread_mutex_lock(&db->durable_mu);
    int rc = 0;
    if (db->naborted + n > db->aborted_cap) {
        uint32_t cap = db->aborted_cap ? db->aborted_cap : 8;
        while (cap < db->naborted + n)
            cap *= 2;
        void *p = realloc(db->aborted, cap * sizeof *db->aborted);
        if (!p)
            rc = -ENOMEM;
        else
            db->aborted = p, db->aborted_cap = cap;
    }
    if (rc == 0) {
        memcpy(db->aborted + db->naborted, runs, n * sizeof *runs);
        db->naborted += n;
        if (!db->rdonly)
            rc = durable_write(db, atomic_load(&db->durable_gsn));
    }
    if (rc < 0)
        db->durable_frozen = true; /* D must never pass the runs now */
    pthread_mutex_unlock(&db->durable_mu);
    return rc;
}

int batch_abort(armdb *db, uint64_t first, uint64_t last)
{
    struct gsn_run r = {first, last};
    return batch_note_aborted(db, &r, 1);
}

int durable_checkpoint(armdb *db)
{
    if (db->rdonly || atomic_load(&db->batch_max) <= atomic_load(&db->durable_gsn))
        return 0;
    pthread_mutex_lock(&db->durable_mu);
    int rc = 0;
    if (db->durable_frozen)
        goto out;
    /* Every GSN below the counter was taken by a write that appends its
     * entry before it lets go of its shard (a batch: of all its shards);
     * a barrier on each shard therefore covers all of them. */
    uint64_t upto = gsn_last();
    for (uint32_t i = 0; i < db->nshards && rc == 0; i++)
        rc = shard_sync(&db->shards[i]);
    if (rc == 0 && upto > atomic_load(&db->durable_gsn))
        rc = durable_write(db, upto);
out:
    pthread_mutex_unlock(&db->durable_mu);
    return rc;
}

int durable_note_dropped(struct shard *sh, uint64_t gsn)
{
    armdb *db = sh->db;
    int rc = 0;
    if (gsn > atomic_load(&db->dropped_gsn)) {
        pthread_mutex_lock(&db->durable_mu);
        uint64_t was = atomic_load(&db->dropped_gsn);
        if (gsn > was) {
            atomic_store(&db->dropped_gsn, gsn);
            /* D is rewritten as it stands; a frozen D stays frozen. */
            rc = durable_write(db, atomic_load(&db->durable_gsn));
            if (rc < 0)
                atomic_store(&db->dropped_gsn, was);
        }
        pthread_mutex_unlock(&db->durable_mu);
    }
    /* The shard's horizon may be below the store's (another shard's drop
     * moved that one). */
    if (rc == 0)
        atomic_max_u64(&sh->dropped_gsn, gsn);
    return rc;
}

int durable_close(armdb *db)
{
    if (db->rdonly || atomic_load(&db->batch_max) <= atomic_load(&db->durable_gsn))
        return 0;
    pthread_mutex_lock(&db->durable_mu);
    int rc = db->durable_frozen ? 0 : durable_write(db, atomic_load(&db->max_gsn));
    pthread_mutex_unlock(&db->durable_mu);
    return rc;
}

/* ---- armdb_batch ---- */

struct bop {
    const armdb_op *op;
    uint32_t i;     /* index in ops */
    uint32_t shard;
    uint64_t h;
    int64_t rec;    /* puts: the key's record */
    bool fresh;     /* ... added for this batch */
    uint64_t gsn;   /* writes: with flags */
    uint32_t file, voff;
    struct hook_note hn;
};

static int check_op(armdb *db, const armdb_op *op, size_t i)
{
    if (op->type != ARMDB_OP_PUT && op->type != ARMDB_OP_DELETE && op->type != ARMDB_OP_CHECK)
        return err_set(ARMDB_INVAL, "ops[%zu]: type %u is not ARMDB_OP_PUT, _DELETE or _CHECK", i, op->type);
    if (!op->key)
        return err_set(ARMDB_INVAL, "ops[%zu]: key is NULL", i);
    if (op->klen != db->key_len)
        return err_set(ARMDB_KEYLEN, "ops[%zu]: key of %zu bytes, store %s has key_len %u", i, op->klen, db->dir,
                       db->key_len);
    if (op->type == ARMDB_OP_DELETE || (op->type == ARMDB_OP_CHECK && !op->val))
        return 0;
    if (!op->val && op->vlen)
        return err_set(ARMDB_INVAL, "ops[%zu]: value is NULL", i);
    if (op->type == ARMDB_OP_PUT && db->value_len && op->vlen != db->value_len)
        return err_set(ARMDB_TOOBIG, "ops[%zu]: value of %zu bytes, store %s has value_len %u", i, op->vlen,
                       db->dir, db->value_len);
    if (op->type == ARMDB_OP_PUT && op->vlen > db->vmax)
        return err_set(ARMDB_TOOBIG, "ops[%zu]: value of %zu bytes is over the maximum of %u", i, op->vlen,
                       db->vmax);
    return 0;
}

static const armdb *g_sort_db; /* only for the comparator below, under sort_mu */
static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER;

static int by_key(const void *a, const void *b)
{
    const struct bop *x = *(const struct bop *const *)a, *y = *(const struct bop *const *)b;
    int c = memcmp(x->op->key, y->op->key, g_sort_db->key_len);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* Two writes to one key in a batch: refused (which should win is not
 * obvious to a reader of the code that built the batch). */
static int check_unique(armdb *db, struct bop *w, uint32_t nw)
{
    if (nw < 2)
        return 0;
    struct bop **v = malloc(nw * sizeof *v);
    if (!v)
        return err_set(-ENOMEM, "batch on %s", db->dir);
    for (uint32_t i = 0; i < nw; i++)
        v[i] = &w[i];
    pthread_mutex_lock(&sort_mu);
    g_sort_db = db;
    qsort(v, nw, sizeof *v, by_key);
    pthread_mutex_unlock(&sort_mu);
    int rc = 0;
    for (uint32_t i = 1; i < nw && rc == 0; i++)
        if (memcmp(v[i - 1]->op->key, v[i]->op->key, db->key_len) == 0)
            rc = err_set(ARMDB_INVAL, "ops[%u] and ops[%u] both write the same key", v[i - 1]->i, v[i]->i);
    free(v);
    return rc;
}

API int armdb_batch(armdb *db, const armdb_op *ops, size_t n)
{
    if (!db || (!ops && n))
        return err_set(ARMDB_INVAL, "store handle and ops must not be NULL");
    if (n > ARMDB_BATCH_MAX)
        return err_set(ARMDB_INVAL, "a batch of %zu operations is over the maximum of %u", n, ARMDB_BATCH_MAX);
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "store %s was opened read-only", db->dir);
    int rc = db_check_replica(db);
    if (rc < 0)
        return rc;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((rc = check_op(db, &ops[i], i)) < 0)
            return rc;
    struct bop *b = calloc(n, sizeof *b), *w = calloc(n, sizeof *w);
    if (!b || !w) {
        free(b), free(w);
        return err_set(-ENOMEM, "batch on %s", db->dir);
    }
    uint32_t nw = 0;
    bool touched[ARMDB_SHARDS_MAX] = {false};
    for (uint32_t i = 0; i < n; i++) {
        b[i].op = &ops[i];
        b[i].i = i;
        b[i].h = key_hash(ops[i].key, db->key_len);
        b[i].shard = shard_index(db, b[i].h);
        b[i].rec = -1;
        touched[b[i].shard] = true;
        if (ops[i].type != ARMDB_OP_CHECK)
            w[nw++] = b[i];
    }
    if ((rc = check_unique(db, w, nw)) < 0)
        goto out_free;
    nw = 0; /* w is rebuilt below, in op order, with records */

    /* Every shard the batch touches, locked in shard order; past the
     * gate of a rekey, which is waited at with no shard locked. */
    uint32_t locked = 0;
    bool shared_held = false;
relock:
    for (uint32_t s = 0; s < db->nshards; s++) {
        if (!touched[s])
            continue;
        pthread_mutex_lock(&db->shards[s].mu);
        locked = s + 1;
    }
    if (atomic_load(&db->gate)) {
        for (uint32_t s = 0; s < locked; s++)
            if (touched[s])
                pthread_mutex_unlock(&db->shards[s].mu);
        locked = 0;
        gate_wait(db);
        goto relock;
    }
    for (uint32_t s = 0; s < locked; s++)
        if (touched[s] && (rc = shard_failed(&db->shards[s])))
            goto out_unlock;
    /* Shared mode: the shards' shared mutexes too, caught up. */
    if (db->shared) {
        if ((rc = shared_batch_begin(db, touched)) < 0)
            goto out_unlock;
        shared_held = true;
    }
    /* The guards, against the store as it was before the batch. */
    for (uint32_t i = 0; i < n; i++) {
        const armdb_op *op = b[i].op;
        if (op->type != ARMDB_OP_CHECK)
            continue;
        struct shard *sh = &db->shards[b[i].shard];
        int64_t r = index_find(&sh->ix, op->key, b[i].h);
        rc = shard_check_locked(sh, r, op->key, op->val, op->vlen, op->val ? PUT_IF_EQUAL : PUT_IF_ABSENT);
        if (rc < 0) {
            err_set(rc, "ops[%u]: the check failed: %s", i,
                    rc == ARMDB_EXISTS     ? "the key is present"
                    : rc == ARMDB_NOTFOUND ? "the key is absent"
                    : rc == ARMDB_CONFLICT ? "the value differs"
                                           : armdb_strerror(rc));
            goto out_unlock;
        }
    }
    /* Records for the puts first: once entries are appended nothing may
     * fail. (And the old values, for the hook.) */
    for (uint32_t i = 0; i < n; i++) {
        if (b[i].op->type == ARMDB_OP_CHECK)
            continue;
        if (db->hook) {
            struct shard *sh = &db->shards[b[i].shard];
            b[i].hn.want_old = db->hook_old;
            if ((rc = shard_note_old(sh, index_find(&sh->ix, b[i].op->key, b[i].h), b[i].op->key, &b[i].hn)) < 0)
                goto out_release;
        }
        if (b[i].op->type == ARMDB_OP_PUT &&
            (b[i].rec = shard_claim(&db->shards[b[i].shard], b[i].op->key, b[i].h, &b[i].fresh)) < 0) {
            rc = (int)b[i].rec;
            goto out_release;
        }
        w[nw++] = b[i];
    }
    /* The entries, with consecutive GSNs. */
    uint64_t base = db_gsn_next(db, nw);
    if (db->shared) {
        uint64_t bytes[ARMDB_SHARDS_MAX] = {0};
        uint32_t count[ARMDB_SHARDS_MAX] = {0};
        for (uint32_t k = 0; k < nw; k++) {
            bool tomb = w[k].op->type == ARMDB_OP_DELETE;
            bytes[w[k].shard] += ENTRY_HDR + entry_size(db->key_len, tomb ? 0 : (uint32_t)w[k].op->vlen);
            count[w[k].shard]++;
        }
        if ((rc = shared_batch_mark(db, touched, bytes, count, base)) < 0)
            goto out_release;
    }
    for (uint32_t k = 0; k < nw; k++) {
        struct bop *x = &w[k];
        struct shard *sh = &db->shards[x->shard];
        uint64_t g = base + k;
        if (nw > 1)
            g |= GSN_BATCH | (k == 0 ? GSN_FIRST : 0) | (k == nw - 1 ? GSN_LAST : 0);
        bool tomb = x->op->type == ARMDB_OP_DELETE;
        rc = shard_append(sh, x->op->key, tomb ? NULL : x->op->val, tomb ? 0 : (uint32_t)x->op->vlen, tomb, g,
                          &x->gsn, &x->voff);
        if (rc < 0) {
            /* The members appended so far are garbage; make sure they stay
             * that way whatever D becomes (shared mode: they go). */
            if (db->shared)
                shared_batch_commit(db, touched, false);
            else if (k > 0 && nw > 1)
                (void)batch_abort(db, base, base + nw - 1);
            goto out_release;
        }
        x->file = sh->active->id;
    }
    if (db->shared)
        shared_batch_commit(db, touched, true);
    gsn_observe(db, base + nw - 1);
    if (nw > 1)
        atomic_max_u64(&db->batch_max, base + nw - 1);
    /* Applied in op order. */
    for (uint32_t k = 0; k < nw; k++) {
        struct bop *x = &w[k];
        struct shard *sh = &db->shards[x->shard];
        if (x->op->type == ARMDB_OP_PUT) {
            shard_settle(sh, (uint32_t)x->rec, x->fresh, shard_file(sh, x->file), x->gsn, x->voff, x->op->val,
                         (uint32_t)x->op->vlen);
            continue;
        }
        int64_t r = index_find(&sh->ix, x->op->key, x->h);
        if (r >= 0) {
            shard_account_dead(sh, index_rec(&sh->ix, (uint32_t)r));
            shard_forget(sh, (uint32_t)r, x->h);
            sh->live_keys--;
        }
        sh->deletes++;
    }
    if (shared_held) {
        shared_batch_end(db, touched);
        shared_held = false;
    }
    if (db->sync_mode == ARMDB_SYNC_ALWAYS) {
        uint64_t upto[ARMDB_SHARDS_MAX];
        for (uint32_t s = 0; s < locked; s++)
            if (touched[s])
                upto[s] = db->shared ? db->shards[s].last_write : db->shards[s].pos;
        for (uint32_t s = locked; s-- > 0;)
            if (touched[s])
                pthread_mutex_unlock(&db->shards[s].mu);
        for (uint32_t s = 0; s < db->nshards && rc == 0; s++) {
            if (!touched[s])
                continue;
            pthread_mutex_lock(&db->shards[s].mu);
            rc = db->shared ? shared_wait_durable(&db->shards[s], upto[s]) : shard_wait_durable(&db->shards[s], upto[s]);
            pthread_mutex_unlock(&db->shards[s].mu);
        }
        locked = 0;
    }
    for (uint32_t s = locked; s-- > 0;)
        if (touched[s])
            pthread_mutex_unlock(&db->shards[s].mu);
    locked = 0;
    /* The hooks, outside every lock, in op order. */
    for (uint32_t k = 0; rc == 0 && db->hook && k < nw; k++) {
        struct bop *x = &w[k];
        bool del = x->op->type == ARMDB_OP_DELETE;
        x->hn.gsn = x->gsn;
        if (!del || x->hn.had_old)
            db_fire_hook(db, x->op->key, x->op->val, x->op->vlen, del, &x->hn);
    }
    goto out_unlock;

out_release:
    /* Records added for puts that will not happen. */
    for (uint32_t i = 0; i < n; i++)
        if (b[i].fresh && b[i].rec >= 0)
            shard_forget(&db->shards[b[i].shard], (uint32_t)b[i].rec, b[i].h);
out_unlock:
    if (shared_held)
        shared_batch_end(db, touched);
    for (uint32_t s = locked; s-- > 0;)
        if (touched[s])
            pthread_mutex_unlock(&db->shards[s].mu);
out_free:
    for (uint32_t i = 0; i < n; i++)
        free(b[i].hn.old);
    free(b);
    free(w);
    return rc;
}
