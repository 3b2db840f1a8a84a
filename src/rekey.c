/*
 * rekey.c - key rotation: every page of a live store sealed again with a
 * new key, through compaction, with a crash at any point leaving a store
 * that opens with exactly one of the two keys and loses nothing.
 *
 *  1. The new salt goes into the meta file as `next_salt` (durably). The
 *     store still opens with the old key only; files sealed with the new
 *     one are leftovers an open removes (their .tags header names the
 *     salt).
 *  2. Passes over every shard: the active file is sealed, and every file
 *     sealed with the old key is compacted into a new file sealed with the
 *     new key. The old file leaves the shard's list but stays on disk
 *     ("retired"): until the commit, the old key's files must hold all the
 *     data. Writes go on meanwhile, into active files with the old key.
 *  3. The gate: writers wait at their next write (readers go on). The
 *     active files are sealed and what was written since the last pass is
 *     compacted in turn, so no data is left under the old key.
 *  4. The commit: the meta file names the new salt and key check, and the
 *     old salt as `prev_salt` (one atomic rename). From here on the store
 *     opens with the new key only, and an open removes files sealed with
 *     the old one. New active files are sealed with the new key; the gate
 *     opens; the retired files are unlinked.
 *
 * A rekey that fails before its commit leaves the handle working (files
 * of both keys are readable in memory) and the store on disk as in 1-2;
 * the handle then compacts nothing and refuses another rekey until the
 * store is reopened (compaction could drop a tombstone whose older value
 * sits in a retired file, which the next open brings back). A failure
 * writing the commit itself turns the handle read-only, since which meta
 * file the disk holds is unknown: either opens the store whole.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

/* ---- the gate ---- */

void gate_wait(armdb *db)
{
    pthread_mutex_lock(&db->gate_mu);
    while (atomic_load(&db->gate))
        pthread_cond_wait(&db->gate_cv, &db->gate_mu);
    pthread_mutex_unlock(&db->gate_mu);
}

void shard_gate(struct shard *sh)
{
    while (atomic_load_explicit(&sh->db->gate, memory_order_acquire)) {
        pthread_mutex_unlock(&sh->mu);
        gate_wait(sh->db);
        pthread_mutex_lock(&sh->mu);
    }
}

/* Close the gate: once it returns, every write that got past it is in. */
static void gate_close(armdb *db)
{
    atomic_store(&db->gate, true);
    for (uint32_t i = 0; i < db->nshards; i++) {
        pthread_mutex_lock(&db->shards[i].mu);
        pthread_mutex_unlock(&db->shards[i].mu);
    }
}

static void gate_open(armdb *db)
{
    pthread_mutex_lock(&db->gate_mu);
    atomic_store(&db->gate, false);
    pthread_cond_broadcast(&db->gate_cv);
    pthread_mutex_unlock(&db->gate_mu);
}

/* ---- retired files ---- */

int retire_add(armdb *db, struct shard *sh, uint32_t id)
{
    assert(db->crypt_next);
    if (db->nretired == db->retired_cap) {
        uint32_t cap = db->retired_cap ? db->retired_cap * 2 : 64;
        struct retired *r = realloc(db->retired, cap * sizeof *r);
        if (!r)
            return -ENOMEM;
        db->retired = r;
        db->retired_cap = cap;
    }
    db->retired[db->nretired++] = (struct retired){.sh = sh, .id = id};
    return 0;
}

/* Drop the retired files: unlinked (after a commit) or only let go. */
void retire_flush(armdb *db, bool unlink)
{
    if (unlink)
        for (uint32_t i = 0; i < db->nretired; i++)
            (void)dfile_unlink_set(db->retired[i].sh, db->retired[i].id);
    db->nretired = 0;
}

/* ---- passes ---- */

/* Seal every shard's active file, so that all its data is in files a
 * pass can compact. */
static int seal_actives(armdb *db)
{
    int rc = 0;
    for (uint32_t i = 0; i < db->nshards && rc == 0; i++) {
        struct shard *sh = &db->shards[i];
        pthread_mutex_lock(&sh->mu);
        if (sh->active && wbuf_tail(&sh->wb) > 0)
            rc = shard_seal(sh);
        pthread_mutex_unlock(&sh->mu);
    }
    return rc;
}

/* A file of sh still sealed with cr, not the active one, with an id below
 * `below` (one of the pass's, not written during it), referenced. */
static struct dfile *next_old(struct shard *sh, const struct crypt *cr, uint32_t below)
{
    struct dfile *f = NULL;
    pthread_mutex_lock(&sh->mu);
    for (uint32_t i = 0; i < sh->nfiles && !f && sh->files[i]->id < below; i++)
        if (sh->files[i] != sh->active && sh->files[i]->pk.cr == cr)
            f = sh->files[i];
    if (f)
        dfile_ref(f);
    pthread_mutex_unlock(&sh->mu);
    return f;
}

/* Compact every file sealed with old into files sealed with the new key. */
static int rekey_pass(armdb *db, const struct crypt *old)
{
    static const atomic_bool never;
    int rc = seal_actives(db);
    for (uint32_t i = 0; i < db->nshards && rc == 0; i++) {
        struct shard *sh = &db->shards[i];
        struct dfile *f;
        uint32_t busy = 0;
        pthread_mutex_lock(&sh->mu);
        uint32_t below = sh->next_id;
        pthread_mutex_unlock(&sh->mu);
        while (rc == 0 && (f = next_old(sh, old, below))) {
            rc = shard_compact_file(sh, f, &never);
            bool moved = f->removed;
            uint32_t id = f->id;
            dfile_unref(f);
            if (rc == 1 && ++busy < 5000) {
                /* Its hint is being written: wait for it. */
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
                rc = 0;
                continue;
            }
            if (rc == 0 && !moved)
                rc = err_set(ARMDB_CORRUPT,
                             "rekey %s: %s/%08u.data holds entries that cannot be read: not re-encrypted", db->dir,
                             sh->path, id);
            if (rc == 1)
                rc = err_set(-EBUSY, "rekey %s: %s/%08u.data stays busy", db->dir, sh->path, id);
        }
    }
    return rc;
}

API int armdb_rekey(armdb *db, const unsigned char *new_key)
{
    if (!db || !new_key)
        return err_set(ARMDB_INVAL, "armdb_rekey: store handle and new_key must not be NULL");
    if (!db->crypt)
        return err_set(ARMDB_INVAL, "armdb_rekey: store %s is not encrypted", db->dir);
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "store %s was opened read-only", db->dir);
    int rc = shard_failed(&db->shards[0]);
    if (rc)
        return rc;
    pthread_mutex_lock(&db->compact_mu);
    if (db->rekey_failed) {
        pthread_mutex_unlock(&db->compact_mu);
        return err_set(ARMDB_INVAL, "armdb_rekey: an earlier rekey of %s failed; reopen the store first", db->dir);
    }
    struct crypt *old = db->crypt, *next = NULL;
    struct meta m = db->meta;
    crypt_random(m.next_salt, sizeof m.next_salt);
    unsigned char check[32];
    rc = crypt_new(&next, m.cipher, new_key, m.next_salt, check);
    if (rc < 0) {
        pthread_mutex_unlock(&db->compact_mu);
        return err_set(rc, "armdb_rekey: derive the new keys of %s", db->dir);
    }
    /* 1: the new salt recorded, before anything is sealed with it. */
    pthread_mutex_lock(&db->meta_mu);
    memcpy(db->meta.next_salt, m.next_salt, 16);
    rc = db_write_meta(db);
    pthread_mutex_unlock(&db->meta_mu);
    if (rc < 0) {
        crypt_free(next);
        pthread_mutex_unlock(&db->compact_mu);
        return rc;
    }
    db->crypt_next = next; /* compaction outputs are sealed with it */
    /* 2: passes while writes go on; the second takes what came during the
     * first, so the gate is closed on little. */
    for (int pass = 0; pass < 2 && rc == 0; pass++)
        rc = rekey_pass(db, old);
    /* 3: the rest, with writers held at the gate. */
    if (rc == 0) {
        gate_close(db);
        rc = rekey_pass(db, old);
    }
    /* 4: the commit. */
    if (rc == 0) {
        pthread_mutex_lock(&db->meta_mu);
        struct meta was = db->meta;
        memcpy(db->meta.prev_salt, db->meta.salt, 16);
        memcpy(db->meta.salt, m.next_salt, 16);
        memcpy(db->meta.key_check, check, 32);
        memset(db->meta.next_salt, 0, 16);
        rc = db_write_meta(db);
        if (rc < 0) {
            /* Which meta file the disk holds is unknown: no more writes
             * (either one opens the store with all of its data). */
            db->meta = was;
            int expected = 0;
            atomic_compare_exchange_strong(&db->failed, &expected, rc);
        }
        pthread_mutex_unlock(&db->meta_mu);
    }
    crypt_wipe(check, sizeof check);
    if (rc == 0) {
        /* Readers may still hold pages of old's files: it lives until close. */
        db->crypt = next;
        db->crypt_next = NULL;
        crypt_keep(&db->crypt_kept, old);
    } else {
        db->rekey_failed = true;
        db->crypt_next = NULL;
        crypt_keep(&db->crypt_kept, next);
    }
    if (atomic_load(&db->gate))
        gate_open(db);
    retire_flush(db, rc == 0);
    pthread_mutex_unlock(&db->compact_mu);
    return rc;
}
