/*
 * db.c - the store handle: options, the directory and its lock, the meta
 * file, the background threads, and the public entry points that route a
 * key to its shard.
 *
 * The GSN counter is process-wide (several stores in one process share one
 * sequence), and after an open it is past every GSN that store holds.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_uint_fast64_t gsn_counter = 1;

uint64_t gsn_next(void) { return atomic_fetch_add(&gsn_counter, 1); }
uint64_t gsn_next_n(uint32_t n) { return atomic_fetch_add(&gsn_counter, n); }
uint64_t gsn_last(void) { return atomic_load(&gsn_counter) - 1; }

uint64_t db_gsn_next(armdb *db, uint32_t n)
{
    atomic_uint_fast64_t *c = db->shm_gsn;
    return c ? atomic_fetch_add(c, n) : gsn_next_n(n);
}

uint64_t db_gsn_last(armdb *db)
{
    atomic_uint_fast64_t *c = db->shm_gsn;
    return c ? atomic_load(c) - 1 : gsn_last();
}

void gsn_observe(armdb *db, uint64_t gsn)
{
    uint_fast64_t cur = atomic_load(&gsn_counter);
    while (cur <= gsn && !atomic_compare_exchange_weak(&gsn_counter, &cur, gsn + 1))
        ;
    atomic_uint_fast64_t *c = db->shm_gsn;
    if (c)
        atomic_max_u64(c, gsn + 1);
    atomic_max_u64(&db->max_gsn, gsn);
    /* After max_gsn moved (both sequentially consistent): a waiter that
     * saw the old value is counted by now, and is woken. */
    if (atomic_load(&db->feed_waiters)) {
        pthread_mutex_lock(&db->feed_mu);
        pthread_cond_broadcast(&db->feed_cv);
        pthread_mutex_unlock(&db->feed_mu);
    }
}

API void armdb_options_init(armdb_options *opts)
{
    if (opts)
        memset(opts, 0, sizeof *opts);
}

static int check_options(const armdb_options *o)
{
    const uint32_t known =
        ARMDB_CREATE | ARMDB_RDONLY | ARMDB_ORDERED | ARMDB_NO_URING | ARMDB_NO_DIRECT | ARMDB_NO_AUTO_COMPACT |
        ARMDB_CIPHER_AES | ARMDB_REPLICA | ARMDB_SHARED;
    if (o->flags & ~known)
        return err_set(ARMDB_INVAL, "flags: unknown bits 0x%x", o->flags & ~known);
    if ((o->flags & ARMDB_SHARED) && (o->flags & (ARMDB_RDONLY | ARMDB_REPLICA)))
        return err_set(ARMDB_INVAL, "flags: ARMDB_SHARED is for writers; not with ARMDB_RDONLY or ARMDB_REPLICA");
    if ((o->flags & ARMDB_SHARED) && o->encryption_key)
        return err_set(ARMDB_INVAL, "flags: ARMDB_SHARED does not support encrypted stores (their pages are sealed "
                       "whole, which appends of several processes cannot share)");
    if ((o->flags & ARMDB_CIPHER_AES) && !o->encryption_key)
        return err_set(ARMDB_INVAL, "flags: ARMDB_CIPHER_AES without an encryption_key");
    if (o->reserved)
        return err_set(ARMDB_INVAL, "reserved: must be 0");
    if (o->key_len > ARMDB_KEY_MAX)
        return err_set(ARMDB_INVAL, "key_len: %u is over the maximum of %u", o->key_len, ARMDB_KEY_MAX);
    if (o->value_len > ARMDB_INLINE_MAX)
        return err_set(ARMDB_INVAL, "value_len: %u is over the maximum of %u for fixed values", o->value_len,
                       ARMDB_INLINE_MAX);
    if (o->shards > ARMDB_SHARDS_MAX)
        return err_set(ARMDB_INVAL, "shards: %u is over the maximum of %u", o->shards, ARMDB_SHARDS_MAX);
    if (o->write_buffer_size &&
        (o->write_buffer_size < MIN_WBUF || o->write_buffer_size > MAX_WBUF || o->write_buffer_size % PAGE))
        return err_set(ARMDB_INVAL, "write_buffer_size: %u is not a multiple of 4096 from %u to %u",
                       o->write_buffer_size, MIN_WBUF, MAX_WBUF);
    if (o->sync_mode > ARMDB_SYNC_ALWAYS)
        return err_set(ARMDB_INVAL, "sync_mode: %u is not a sync mode", o->sync_mode);
    if (o->sync_interval_ms > MAX_INTERVAL_MS)
        return err_set(ARMDB_INVAL, "sync_interval_ms: %u is over the maximum of %u", o->sync_interval_ms,
                       MAX_INTERVAL_MS);
    if (o->max_file_size && (o->max_file_size < MIN_MAX_FILE || o->max_file_size > MAX_MAX_FILE))
        return err_set(ARMDB_INVAL, "max_file_size: %llu is not from %llu to %llu",
                       (unsigned long long)o->max_file_size, (unsigned long long)MIN_MAX_FILE,
                       (unsigned long long)MAX_MAX_FILE);
    if (o->cache_size && o->cache_size < MIN_CACHE)
        return err_set(ARMDB_INVAL, "cache_size: %llu is under the minimum of %llu", (unsigned long long)o->cache_size,
                       (unsigned long long)MIN_CACHE);
    if (!(o->compaction_threshold >= 0 && o->compaction_threshold <= 1))
        return err_set(ARMDB_INVAL, "compaction_threshold: %g is not from 0 to 1", o->compaction_threshold);
    return 0;
}

/* Take the writer lock: flock on LOCK, which then holds our pid. */
static int take_lock(armdb *db)
{
    int fd = io_open(db->dirfd, "LOCK", O_RDWR | O_CREAT, 0644);
    if (fd < 0)
        return err_set(fd, "open %s/LOCK", db->dir);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char buf[32] = {0};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        close(fd);
        if (e == EWOULDBLOCK) {
            long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
            return err_set(ARMDB_LOCKED, "store %s is locked by pid %ld", db->dir, pid);
        }
        return err_set(-e, "lock %s/LOCK", db->dir);
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    int rc = io_ftruncate(fd, 0);
    if (rc == 0)
        rc = io_pwrite_full(fd, buf, (size_t)n, 0);
    if (rc < 0) {
        close(fd);
        return err_set(rc, "write %s/LOCK", db->dir);
    }
    db->lockfd = fd;
    return 0;
}

static int create_store(armdb *db, const armdb_options *o)
{
    struct meta m = {.version = 1, .key_len = o->key_len, .value_len = o->value_len};
    if (o->flags & ARMDB_ORDERED)
        m.flags |= META_ORDERED;
    m.shards = o->shards ? o->shards : (uint32_t)online_cpus();
    if (getrandom(m.salt, sizeof m.salt, 0) != (ssize_t)sizeof m.salt)
        return err_set(-EIO, "getrandom for the store salt");
    if (o->encryption_key) {
        m.flags |= META_ENCRYPTED;
        m.cipher = o->flags & ARMDB_CIPHER_AES ? CIPHER_AES : CIPHER_XCHACHA;
        int rc = crypt_new(&db->crypt, m.cipher, o->encryption_key, m.salt, m.key_check);
        if (rc == ARMDB_MISMATCH)
            return err_set(ARMDB_INVAL, "flags: ARMDB_CIPHER_AES, but this CPU has no AES-256-GCM instructions");
        if (rc < 0)
            return err_set(rc, "derive the keys of %s", db->dir);
    }
    /* Shard directories first: a store whose meta file exists is whole. */
    for (uint32_t i = 0; i < m.shards; i++) {
        char name[12];
        snprintf(name, sizeof name, "%03x", i);
        if (mkdirat(db->dirfd, name, 0755) < 0 && errno != EEXIST)
            return err_set(-errno, "create %s/%s", db->dir, name);
    }
    db->meta = m;
    return db_write_meta(db);
}

int db_write_meta(armdb *db)
{
    unsigned char buf[META_SIZE];
    size_t n = meta_encode(&db->meta, buf);
    int rc = io_write_file_atomic(db->dirfd, "ARMDB", buf, n);
    return rc < 0 ? err_set(rc, "write %s/ARMDB", db->dir) : 0;
}

/* An encrypted store's key: the options' one, proven by the key check
 * before anything else of the store is read. */
static int open_keys(armdb *db, const armdb_options *o)
{
    const struct meta *m = &db->meta;
    bool enc = m->flags & META_ENCRYPTED;
    if (!enc && o->encryption_key)
        return err_set(ARMDB_MISMATCH, "encryption_key: store %s is not encrypted", db->dir);
    if (!enc)
        return 0;
    if (!o->encryption_key)
        return err_set(ARMDB_BADKEY, "encryption_key: store %s is encrypted, and no key was given", db->dir);
    if ((o->flags & ARMDB_CIPHER_AES) && m->cipher != CIPHER_AES)
        return err_set(ARMDB_MISMATCH, "flags: store %s uses %s, options ask for ARMDB_CIPHER_AES", db->dir,
                       crypt_cipher_name(m->cipher));
    if (db->crypt)
        return 0; /* created by this open */
    unsigned char check[32];
    int rc = crypt_new(&db->crypt, m->cipher, o->encryption_key, m->salt, check);
    if (rc == ARMDB_MISMATCH)
        return err_set(rc, "cipher: store %s uses %s, which this CPU does not support", db->dir,
                       crypt_cipher_name(m->cipher));
    if (rc < 0)
        return err_set(rc, "derive the keys of %s", db->dir);
    bool ok = crypt_equal(check, m->key_check, 32);
    crypt_wipe(check, sizeof check);
    if (!ok)
        return err_set(ARMDB_BADKEY, "encryption_key: not the key of store %s", db->dir);
    return 0;
}

static int read_meta(armdb *db)
{
    unsigned char *buf;
    size_t len;
    int rc = io_read_file(db->dirfd, "ARMDB", &buf, &len);
    if (rc < 0)
        return err_set(rc, "read %s/ARMDB", db->dir);
    rc = meta_decode(&db->meta, buf, len);
    io_read_file_free(buf, len);
    if (rc == ARMDB_MISMATCH)
        return err_set(rc, "version: %s/ARMDB has format version %u, this library reads 1", db->dir,
                       db->meta.version);
    if (rc < 0)
        return err_set(rc, "meta file %s/ARMDB is damaged", db->dir);
    return 0;
}

static int match_meta(armdb *db, const armdb_options *o)
{
    const struct meta *m = &db->meta;
    if (o->key_len && o->key_len != m->key_len)
        return err_set(ARMDB_MISMATCH, "key_len: store %s has %u, options say %u", db->dir, m->key_len, o->key_len);
    if (o->value_len && o->value_len != m->value_len)
        return err_set(ARMDB_MISMATCH, "value_len: store %s has %u, options say %u", db->dir, m->value_len,
                       o->value_len);
    if (o->shards && o->shards != m->shards)
        return err_set(ARMDB_MISMATCH, "shards: store %s has %u, options say %u", db->dir, m->shards, o->shards);
    if (m->flags & ~(META_ORDERED | META_ENCRYPTED) ||
        ((m->flags & META_ENCRYPTED) && m->cipher != CIPHER_XCHACHA && m->cipher != CIPHER_AES))
        return err_set(ARMDB_MISMATCH, "flags: store %s uses features (0x%x, cipher %u) this version lacks", db->dir,
                       m->flags, m->cipher);
    if ((o->flags & ARMDB_ORDERED) && !(m->flags & META_ORDERED))
        return err_set(ARMDB_MISMATCH, "flags: store %s is not ordered, options ask for ARMDB_ORDERED", db->dir);
    return 0;
}

/* Open dir, creating it if asked. Nothing is created unless the options
 * could create a store. */
static int open_dir(armdb *db, const armdb_options *o)
{
    bool create = (o->flags & ARMDB_CREATE) && !db->rdonly;
    int fd = io_open(AT_FDCWD, db->dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd == -ENOENT && create) {
        if (!o->key_len)
            return err_set(ARMDB_INVAL, "key_len: required to create a store at %s", db->dir);
        if (mkdir(db->dir, 0755) < 0 && errno != EEXIST)
            return err_set(-errno, "create directory %s", db->dir);
        fd = io_open(AT_FDCWD, db->dir, O_RDONLY | O_DIRECTORY, 0);
    }
    if (fd == -ENOENT)
        return err_set(fd, "no store at %s%s", db->dir, create ? "" : " (ARMDB_CREATE not given)");
    if (fd < 0)
        return err_set(fd, "open directory %s", db->dir);
    db->dirfd = fd;
    if (faccessat(fd, "ARMDB", F_OK, 0) < 0) {
        if (errno != ENOENT)
            return err_set(-errno, "access %s/ARMDB", db->dir);
        if (!create)
            return err_set(-ENOENT, "no store at %s%s", db->dir, db->rdonly ? "" : " (ARMDB_CREATE not given)");
        if (!o->key_len)
            return err_set(ARMDB_INVAL, "key_len: required to create a store at %s", db->dir);
    }
    return 0;
}

/* ---- background work: interval barriers, and hints of rotated files ---- */

/* The interval barriers. armdb_tune() may change the mode or the
 * interval at any time: it bumps sync_gen, and the thread starts its wait
 * over (or parks, outside ARMDB_SYNC_INTERVAL, until the mode comes back). */
static void *sync_thread(void *arg)
{
    armdb *db = arg;
    pthread_mutex_lock(&db->bg_mu);
    while (!db->bg_stop) {
        if (atomic_load(&db->sync_mode) != ARMDB_SYNC_INTERVAL) {
            pthread_cond_wait(&db->sync_cv, &db->bg_mu);
            continue;
        }
        uint64_t gen = db->sync_gen;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)db->interval_ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        while (!db->bg_stop && db->sync_gen == gen && pthread_cond_timedwait(&db->sync_cv, &db->bg_mu, &ts) == 0)
            ;
        if (db->bg_stop)
            break;
        if (db->sync_gen != gen)
            continue;
        pthread_mutex_unlock(&db->bg_mu);
        /* A failure here turns the store read-only; writers see it. */
        for (uint32_t i = 0; i < db->nshards; i++)
            (void)shard_sync(&db->shards[i]);
        pthread_mutex_lock(&db->bg_mu);
    }
    pthread_mutex_unlock(&db->bg_mu);
    return NULL;
}

/* Write the hint of a rotated file: not for one compaction has taken (or
 * removed), since a hint must never outlive its data file. Without a hint
 * the next open scans the file: slower, not wrong. */
static void hint_job(struct shard *sh, struct dfile *f)
{
    armdb *db = sh->db;
    /* Shared mode: no other process compacts meanwhile, and the file must
     * still be there (another may have compacted it away before). */
    if (shared_maint_lock(db, &db->compact_stop) < 0) {
        dfile_unref(f);
        return;
    }
    pthread_mutex_lock(&sh->mu);
    bool go = !f->removed && !f->compacting && !f->has_hint;
    if (go && db->shared) {
        char name[32];
        dfile_name(name, sizeof name, f->id, "data");
        go = shard_refresh(sh) == 0 && !f->removed && faccessat(sh->dirfd, name, F_OK, 0) == 0;
    }
    f->hinting = go;
    pthread_mutex_unlock(&sh->mu);
    if (go) {
        bool ok = hint_build_for(sh, f) == 0;
        pthread_mutex_lock(&sh->mu);
        f->hinting = false;
        f->has_hint |= ok;
        pthread_mutex_unlock(&sh->mu);
    }
    shared_maint_unlock(db);
    dfile_unref(f);
}

/* The background thread: hints of rotated files, and compaction when a
 * file passed the threshold (a put or delete says so), taking turns so
 * that neither waits for the other to run dry. */
static void *bg_thread(void *arg)
{
    armdb *db = arg;
    pthread_mutex_lock(&db->bg_mu);
    for (;;) {
        bool did = false;
        if (db->njobs) {
            struct dfile *f = db->hint_jobs[0];
            struct shard *sh = db->hint_shards[0];
            db->njobs--;
            memmove(db->hint_jobs, db->hint_jobs + 1, db->njobs * sizeof *db->hint_jobs);
            memmove(db->hint_shards, db->hint_shards + 1, db->njobs * sizeof *db->hint_shards);
            pthread_mutex_unlock(&db->bg_mu);
            hint_job(sh, f);
            pthread_mutex_lock(&db->bg_mu);
            did = true;
        }
        if (db->compact_auto && atomic_exchange(&db->compact_wanted, false)) {
            pthread_mutex_unlock(&db->bg_mu);
            (void)db_compact_pass(db, false);
            pthread_mutex_lock(&db->bg_mu);
            did = true;
        }
        if (did)
            continue;
        if (db->bg_stop)
            break;
        pthread_cond_wait(&db->bg_cv, &db->bg_mu);
    }
    pthread_mutex_unlock(&db->bg_mu);
    return NULL;
}

void db_want_compaction(armdb *db)
{
    if (!db->compact_auto || atomic_load_explicit(&db->compact_wanted, memory_order_relaxed))
        return;
    pthread_mutex_lock(&db->bg_mu);
    atomic_store(&db->compact_wanted, true);
    pthread_cond_signal(&db->bg_cv);
    pthread_mutex_unlock(&db->bg_mu);
}

int db_queue_hint(armdb *db, struct shard *sh, struct dfile *f)
{
    pthread_mutex_lock(&db->bg_mu);
    if (db->njobs == db->jobs_cap) {
        uint32_t cap = db->jobs_cap ? db->jobs_cap * 2 : 16;
        struct dfile **j = realloc(db->hint_jobs, cap * sizeof *j);
        if (j)
            db->hint_jobs = j;
        struct shard **s = realloc(db->hint_shards, cap * sizeof *s);
        if (s)
            db->hint_shards = s;
        if (!j || !s) {
            pthread_mutex_unlock(&db->bg_mu);
            return 0; /* the file stays without a hint: the next open scans it */
        }
        db->jobs_cap = cap;
    }
    dfile_ref(f);
    db->hint_jobs[db->njobs] = f;
    db->hint_shards[db->njobs] = sh;
    db->njobs++;
    pthread_cond_signal(&db->bg_cv);
    pthread_mutex_unlock(&db->bg_mu);
    return 0;
}

/* The interval thread, if it is not running yet. */
static int start_sync_thread(armdb *db)
{
    if (db->sync_running)
        return 0;
    int rc = pthread_create(&db->sync_tid, NULL, sync_thread, db);
    if (rc)
        return err_set(-rc, "start the sync thread of %s", db->dir);
    db->sync_running = true;
    return 0;
}

static int start_threads(armdb *db)
{
    int rc = pthread_create(&db->hint_tid, NULL, bg_thread, db);
    if (rc)
        return err_set(-rc, "start the hint thread of %s", db->dir);
    db->hint_running = true;
    if (db->sync_mode == ARMDB_SYNC_INTERVAL)
        return start_sync_thread(db);
    return 0;
}

static void stop_thread(armdb *db, pthread_t tid, bool *running)
{
    if (!*running)
        return;
    pthread_mutex_lock(&db->bg_mu);
    db->bg_stop = true;
    pthread_cond_broadcast(&db->bg_cv);
    pthread_cond_broadcast(&db->sync_cv);
    pthread_mutex_unlock(&db->bg_mu);
    pthread_join(tid, NULL);
    *running = false;
}

static void db_free(armdb *db)
{
    stop_thread(db, db->sync_tid, &db->sync_running);
    stop_thread(db, db->hint_tid, &db->hint_running);
    for (uint32_t i = 0; i < db->njobs; i++)
        dfile_unref(db->hint_jobs[i]);
    free(db->hint_jobs);
    free(db->hint_shards);
    if (db->shards) {
        for (uint32_t i = 0; i < db->nshards; i++)
            shard_free(&db->shards[i]);
        free(db->shards);
    }
    cache_free(db->cache);
    retire_flush(db, false); /* (a rekey that failed: the files stay) */
    free(db->retired);
    crypt_free(db->crypt); /* wipes the keys */
    crypt_free(db->crypt_next);
    crypt_free_kept(&db->crypt_kept);
    shared_unmap(db);
    if (db->maintfd >= 0)
        close(db->maintfd);
    pthread_mutex_destroy(&db->maint_mu);
    if (db->lockfd >= 0)
        close(db->lockfd);
    if (db->dirfd >= 0)
        close(db->dirfd);
    pthread_mutex_destroy(&db->bg_mu);
    pthread_cond_destroy(&db->bg_cv);
    pthread_cond_destroy(&db->sync_cv);
    pthread_mutex_destroy(&db->compact_mu);
    pthread_mutex_destroy(&db->durable_mu);
    pthread_mutex_destroy(&db->meta_mu);
    pthread_mutex_destroy(&db->gate_mu);
    pthread_cond_destroy(&db->gate_cv);
    pthread_mutex_destroy(&db->feed_mu);
    pthread_cond_destroy(&db->feed_cv);
    free(db->aborted);
    free(db->dir);
    free(db);
}

API int armdb_open(const char *dir, const armdb_options *opts, armdb **out)
{
    armdb_options zero;
    if (!dir || !*dir || !out)
        return err_set(ARMDB_INVAL, "armdb_open: dir and out must not be NULL");
    *out = NULL;
    if (!opts) {
        armdb_options_init(&zero);
        opts = &zero;
    }
    int rc = check_options(opts);
    if (rc < 0 || (opts->encryption_key && (rc = crypt_init()) < 0))
        return rc;
    armdb *db = calloc(1, sizeof *db);
    if (!db || !(db->dir = strdup(dir))) {
        free(db);
        return err_set(-ENOMEM, "open %s", dir);
    }
    db->dirfd = db->lockfd = db->maintfd = -1;
    pthread_mutex_init(&db->maint_mu, NULL);
    pthread_mutex_init(&db->bg_mu, NULL);
    pthread_mutex_init(&db->compact_mu, NULL);
    pthread_mutex_init(&db->durable_mu, NULL);
    pthread_mutex_init(&db->meta_mu, NULL);
    pthread_mutex_init(&db->gate_mu, NULL);
    pthread_cond_init(&db->gate_cv, NULL);
    pthread_mutex_init(&db->feed_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->bg_cv, &ca);
    pthread_cond_init(&db->sync_cv, &ca);
    pthread_cond_init(&db->feed_cv, &ca);
    pthread_condattr_destroy(&ca);
    db->rdonly = opts->flags & ARMDB_RDONLY;
    db->replica = opts->flags & ARMDB_REPLICA;
    db->shared = opts->flags & ARMDB_SHARED;
    bool first = true;
    if ((rc = open_dir(db, opts)) < 0)
        goto fail;
    if (db->shared)
        rc = shared_open(db, &first);
    else if (!db->rdonly)
        rc = take_lock(db);
    if (rc < 0)
        goto fail;
    db->attaching = !first;
    if (faccessat(db->dirfd, "ARMDB", F_OK, 0) == 0)
        rc = read_meta(db);
    else
        rc = create_store(db, opts);
    if (rc < 0 || (rc = match_meta(db, opts)) < 0 || (rc = open_keys(db, opts)) < 0)
        goto fail;
    /* Nonces for what this writer will seal, before it seals anything. */
    if (db->crypt && !db->rdonly && (rc = crypt_reserve(db)) < 0)
        goto fail;

    db->key_len = db->meta.key_len;
    db->value_len = db->meta.value_len;
    db->nshards = db->meta.shards;
    db->wbuf_size = opts->write_buffer_size ? opts->write_buffer_size : DEFAULT_WBUF;
    db->sync_mode = opts->sync_mode;
    db->interval_ms = opts->sync_interval_ms ? opts->sync_interval_ms : DEFAULT_INTERVAL_MS;
    db->max_file = opts->max_file_size ? opts->max_file_size : DEFAULT_MAX_FILE;
    db->flags = opts->flags;
    db->compact_threshold = opts->compaction_threshold > 0 ? opts->compaction_threshold : DEFAULT_COMPACT_THRESHOLD;
    db->compact_auto = !(opts->flags & ARMDB_NO_AUTO_COMPACT) && !(opts->flags & ARMDB_RDONLY);
    atomic_init(&db->compact_wanted, true); /* files past the threshold at open */
    const char *no_uring = getenv("ARMDB_NO_URING");
    db->use_uring = !(opts->flags & ARMDB_NO_URING) && !(no_uring && *no_uring && strcmp(no_uring, "0") != 0);
    /* Shared mode appends each entry with a pwrite at the head of the
     * log, which neither O_DIRECT nor the write ring would take. */
    atomic_init(&db->uring_writes, db->use_uring && !db->rdonly && !db->shared);
    db->vmax = db->value_len ? db->value_len : db->wbuf_size - WBUF_SLACK;
    if (!(opts->flags & ARMDB_NO_DIRECT) && !db->shared) {
        int probe = io_open(db->dirfd, "ARMDB", O_RDONLY | O_DIRECT, 0);
        db->direct = probe >= 0;
        if (probe >= 0)
            close(probe);
    }

    rc = cache_init(&db->cache, opts->cache_size ? opts->cache_size : DEFAULT_CACHE);
    if (rc < 0) {
        rc = err_set(rc, "allocate the block cache of %s", dir);
        goto fail;
    }
    db->shards = calloc(db->nshards, sizeof *db->shards);
    if (!db->shards) {
        rc = err_set(-ENOMEM, "open %s", dir);
        goto fail;
    }
    for (uint32_t i = 0; i < db->nshards; i++) {
        if ((rc = shard_init(&db->shards[i], db, i)) < 0) {
            db->nshards = i + 1;
            goto fail;
        }
    }
    if (db->attaching && (rc = shared_attach(db)) < 0)
        goto fail;
    if ((rc = durable_load(db)) < 0 || (rc = recover_shards(db)) < 0)
        goto fail;
    if (db->shared && first && (rc = shared_create(db)) < 0)
        goto fail;
    if (db->shared && (rc = shared_open_done(db)) < 0)
        goto fail;
    /* What the files hold at open counts as durable (read back from
     * them); each shard's horizon starts at the store's. */
    for (uint32_t i = 0; i < db->nshards; i++) {
        db->shards[i].durable_gsn = gsn_last();
        atomic_store(&db->shards[i].dropped_gsn, atomic_load(&db->dropped_gsn));
    }
    if (!db->rdonly && (rc = start_threads(db)) < 0)
        goto fail;
    *out = db;
    return 0;
fail:
    db_free(db);
    return rc;
}

API int armdb_close(armdb *db)
{
    if (!db)
        return 0;
    int rc = 0;
    /* End a compaction under way at its next entry, and wait for it. */
    atomic_store(&db->compact_stop, true);
    pthread_mutex_lock(&db->compact_mu);
    pthread_mutex_unlock(&db->compact_mu);
    stop_thread(db, db->sync_tid, &db->sync_running);
    if (db->shared) {
        /* (The hint thread first: it may hold the lock the last one out
         * needs for sealing.) */
        stop_thread(db, db->hint_tid, &db->hint_running);
        rc = shared_close(db);
    } else if (!db->rdonly) {
        for (uint32_t i = 0; i < db->nshards; i++) {
            int r = shard_close(&db->shards[i]);
            if (r < 0 && rc == 0)
                rc = r;
        }
    }
    int failed = atomic_load(&db->failed);
    if (rc == 0 && failed)
        rc = failed;
    if (rc == 0 && !db->shared)
        rc = durable_close(db);
    db_free(db);
    return rc;
}

/* ---- the key operations ---- */

static int check_key(armdb *db, const void *key, size_t klen)
{
    if (!db || !key)
        return err_set(ARMDB_INVAL, "store handle and key must not be NULL");
    if (klen != db->key_len)
        return err_set(ARMDB_KEYLEN, "key of %zu bytes, store %s has key_len %u", klen, db->dir, db->key_len);
    return 0;
}

static int check_write(armdb *db, const void *val, size_t vlen)
{
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "store %s was opened read-only", db->dir);
    if (!val && vlen)
        return err_set(ARMDB_INVAL, "value must not be NULL");
    if (db->value_len && vlen != db->value_len)
        return err_set(ARMDB_TOOBIG, "value of %zu bytes, store %s has value_len %u", vlen, db->dir,
                       db->value_len);
    if (vlen > db->vmax)
        return err_set(ARMDB_TOOBIG, "value of %zu bytes is over the maximum of %u (write_buffer_size - 8192)",
                       vlen, db->vmax);
    return 0;
}

int db_check_shared(armdb *db, const char *what)
{
    if (db->shared)
        return err_set(ARMDB_INVAL, "%s: not available on a handle of shared store %s (ARMDB_SHARED); a read-only "
                       "open of it can", what, db->dir);
    return 0;
}

int db_check_replica(armdb *db)
{
    if (db->replica)
        return err_set(ARMDB_READONLY, "store %s is a replica: it is written only by its leader's changes "
                       "(armdb_apply)", db->dir);
    return 0;
}

static inline struct shard *shard_of(armdb *db, uint64_t h)
{
    return &db->shards[shard_index(db, h)];
}

API int armdb_put(armdb *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    int rc = check_key(db, key, klen);
    if (rc == 0)
        rc = check_write(db, val, vlen);
    if (rc == 0)
        rc = db_check_replica(db);
    if (rc < 0)
        return rc;
    uint64_t h = key_hash(key, klen);
    if (!db->hook)
        return shard_put(shard_of(db, h), key, h, val, (uint32_t)vlen, NULL, 0, PUT_ALWAYS, NULL);
    struct hook_note hn = {.want_old = db->hook_old};
    rc = shard_put(shard_of(db, h), key, h, val, (uint32_t)vlen, NULL, 0, PUT_ALWAYS, &hn);
    if (rc == 0)
        db_fire_hook(db, key, val, vlen, false, &hn);
    free(hn.old);
    return rc;
}

API int armdb_cas(armdb *db, const void *key, size_t klen, const void *expected, size_t elen, const void *val,
                  size_t vlen)
{
    int rc = check_key(db, key, klen);
    if (rc == 0)
        rc = check_write(db, val, vlen);
    if (rc == 0)
        rc = db_check_replica(db);
    if (rc < 0)
        return rc;
    uint64_t h = key_hash(key, klen);
    int mode = expected ? PUT_IF_EQUAL : PUT_IF_ABSENT;
    if (!db->hook)
        return shard_put(shard_of(db, h), key, h, val, (uint32_t)vlen, expected, elen, mode, NULL);
    struct hook_note hn = {.want_old = db->hook_old};
    rc = shard_put(shard_of(db, h), key, h, val, (uint32_t)vlen, expected, elen, mode, &hn);
    if (rc == 0)
        db_fire_hook(db, key, val, vlen, false, &hn);
    free(hn.old);
    return rc;
}

API int armdb_apply(armdb *db, const armdb_change *c)
{
    if (!c)
        return err_set(ARMDB_INVAL, "armdb_apply: change is NULL");
    int rc = check_key(db, c->key, c->klen);
    if (rc == 0 && !c->deleted)
        rc = check_write(db, c->val, c->vlen);
    if (rc < 0)
        return rc;
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "store %s was opened read-only", db->dir);
    if (c->gsn == 0 || c->gsn > GSN_MASK || (c->deleted && c->vlen) || c->deleted > 1)
        return err_set(ARMDB_INVAL, "armdb_apply: a change needs a GSN of 1..2^60-1 (got %llu), and a delete no "
                       "value", (unsigned long long)c->gsn);
    uint64_t h = key_hash(c->key, c->klen);
    return shard_apply(shard_of(db, h), c->key, h, c->val, (uint32_t)c->vlen, c->gsn, c->deleted != 0);
}

API int armdb_delete(armdb *db, const void *key, size_t klen)
{
    int rc = check_key(db, key, klen);
    if (rc < 0)
        return rc;
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "store %s was opened read-only", db->dir);
    if ((rc = db_check_replica(db)) < 0)
        return rc;
    uint64_t h = key_hash(key, klen);
    if (!db->hook)
        return shard_delete(shard_of(db, h), key, h, NULL);
    struct hook_note hn = {.want_old = db->hook_old};
    rc = shard_delete(shard_of(db, h), key, h, &hn);
    if (rc == 0)
        db_fire_hook(db, key, NULL, 0, true, &hn);
    free(hn.old);
    return rc;
}

void db_fire_hook(armdb *db, const void *key, const void *val, size_t vlen, bool del, struct hook_note *hn)
{
    armdb_write w = {
        .key = key,
        .klen = db->key_len,
        .val = del ? NULL : val,
        .vlen = del ? 0 : vlen,
        .old = hn->old,
        .oldlen = hn->oldlen,
        .gsn = hn->gsn & GSN_MASK,
        .deleted = del,
        .had_old = hn->had_old,
    };
    if (w.val == NULL && !del)
        w.val = "";
    db->hook(db->hook_ctx, &w);
}

API int armdb_set_hook(armdb *db, armdb_hook_fn fn, void *ctx, unsigned flags)
{
    if (!db)
        return err_set(ARMDB_INVAL, "store handle must not be NULL");
    if (flags & ~(unsigned)ARMDB_HOOK_OLD)
        return err_set(ARMDB_INVAL, "flags: unknown bits 0x%x", flags & ~(unsigned)ARMDB_HOOK_OLD);
    db->hook = fn;
    db->hook_ctx = ctx;
    db->hook_old = fn && (flags & ARMDB_HOOK_OLD);
    return 0;
}

API int armdb_get(armdb *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    int rc = check_key(db, key, klen);
    if (rc < 0)
        return rc;
    if (!vlen || (!buf && cap))
        return err_set(ARMDB_INVAL, "vlen must not be NULL, nor buf when cap > 0");
    uint64_t h = key_hash(key, klen);
    return shard_get(shard_of(db, h), key, h, buf, cap, vlen);
}

/* The device reads of a get_many, finished one by one as they complete
 * (pages opened and values copied while other reads are in flight). */
struct many_reads {
    struct io_read *rq;
    struct pending_read *pend;
    const size_t *pidx, *offs;
    int *rcs;
    void *out;
};

static void get_many_done(void *ctx, struct io_read *r)
{
    struct many_reads *m = ctx;
    size_t j = (size_t)(r - m->rq), i = m->pidx[j];
    m->rcs[i] = shard_get_finish(&m->pend[j], r->buf, r->res, (unsigned char *)m->out + m->offs[i]);
}

API int armdb_get_many(armdb *db, const void *keys, size_t klen, size_t n, void *out, size_t cap, size_t *offs,
                       size_t *vlens, int *rcs)
{
    if (!db || !keys || !offs || !vlens || !rcs || (!out && cap))
        return err_set(ARMDB_INVAL, "armdb_get_many: NULL pointer");
    if (n < 1 || n > ARMDB_BATCH_MAX)
        return err_set(ARMDB_INVAL, "armdb_get_many: %zu keys, the batch is 1 to %d", n, ARMDB_BATCH_MAX);
    if (klen != db->key_len)
        return err_set(ARMDB_KEYLEN, "key of %zu bytes, store %s has key_len %u", klen, db->dir, db->key_len);
    struct pending_read *pend = malloc(n * sizeof *pend);
    size_t *pidx = malloc(n * sizeof *pidx);
    if (!pend || !pidx) {
        free(pend);
        free(pidx);
        return err_set(-ENOMEM, "armdb_get_many on %s", db->dir);
    }
    /* Values in memory or the cache are copied now; the others wait for
     * one batch of device reads. Room in out is kept in key order. */
    size_t used = 0, npend = 0, pages = 0;
    bool small = false;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *key = (const unsigned char *)keys + i * klen;
        uint64_t h = key_hash(key, klen);
        unsigned char *dst = out ? (unsigned char *)out + used : NULL;
        size_t vl = 0;
        int rc = shard_get_begin(shard_of(db, h), key, h, dst, cap - used, &vl, &pend[npend]);
        offs[i] = used;
        vlens[i] = vl;
        rcs[i] = rc;
        if (rc == 0 || rc == 1)
            used += vl;
        if (rc == 1) {
            pidx[npend] = i;
            pages += pend[npend].npages;
            npend++;
        }
        small |= rc == ARMDB_BUFSMALL;
    }
    if (npend) {
        struct io_read *rq = calloc(npend, sizeof *rq);
        unsigned char *buf = aligned_alloc_zero(pages * PAGE);
        if (!rq || !buf) {
            for (size_t j = 0; j < npend; j++) {
                rcs[pidx[j]] = err_set(-ENOMEM, "armdb_get_many on %s", db->dir);
                dfile_unref(pend[j].f);
            }
        } else {
            unsigned char *at = buf;
            for (size_t j = 0; j < npend; j++) {
                rq[j] = (struct io_read){.fd = pend[j].f->fd, .buf = at, .len = (size_t)pend[j].npages * PAGE,
                                         .off = pend[j].first_page * PAGE};
                at += rq[j].len;
            }
            struct many_reads m = {.rq = rq, .pend = pend, .pidx = pidx, .rcs = rcs, .offs = offs, .out = out};
            uring_read_batch(rq, npend, db->use_uring, get_many_done, &m);
        }
        free(rq);
        free(buf);
    }
    free(pend);
    free(pidx);
    return small ? ARMDB_BUFSMALL : 0;
}

API int armdb_compact(armdb *db)
{
    if (!db)
        return err_set(ARMDB_INVAL, "store handle must not be NULL");
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "store %s was opened read-only", db->dir);
    int failed = atomic_load(&db->failed);
    if (failed)
        return err_set(ARMDB_READONLY, "store %s is read-only after a failed fdatasync (%s)", db->dir,
                       armdb_strerror(failed));
    return db_compact_pass(db, true);
}

API int armdb_sync(armdb *db)
{
    if (!db)
        return err_set(ARMDB_INVAL, "store handle must not be NULL");
    int rc = 0;
    for (uint32_t i = 0; i < db->nshards; i++) {
        int r = shard_sync(&db->shards[i]);
        if (r < 0 && rc == 0)
            rc = r;
    }
    return rc;
}

API uint64_t armdb_count(armdb *db)
{
    uint64_t n = 0;
    if (!db)
        return 0;
    for (uint32_t i = 0; i < db->nshards; i++) {
        struct shard *sh = &db->shards[i];
        pthread_mutex_lock(&sh->mu);
        (void)shard_refresh(sh); /* (if that fails, the count as this process knows it) */
        n += sh->live_keys;
        pthread_mutex_unlock(&sh->mu);
    }
    return n;
}

API int armdb_stats(armdb *db, armdb_stat *out)
{
    if (!db || !out)
        return err_set(ARMDB_INVAL, "store handle and out must not be NULL");
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < db->nshards; i++) {
        struct shard *sh = &db->shards[i];
        pthread_mutex_lock(&sh->mu);
        (void)shard_refresh(sh); /* (as in armdb_count) */
        out->keys += sh->live_keys;
        out->puts += sh->puts;
        out->gets += sh->gets;
        out->deletes += sh->deletes;
        out->bytes_written += sh->bytes_written;
        out->flushes += sh->flushes;
        out->syncs += sh->syncs;
        out->ring_syncs += sh->ring_syncs;
        out->rotations += sh->rotations;
        out->files += sh->nfiles;
        for (uint32_t j = 0; j < sh->nfiles; j++) {
            out->live_bytes += sh->files[j]->live;
            out->dead_bytes += sh->files[j]->size - sh->files[j]->live;
        }
        out->index_bytes += index_bytes(&sh->ix) + (sh->ordered ? otree_bytes(&sh->ot) : 0);
        out->corrupt_entries += sh->corrupt;
        out->hints_loaded += sh->hints_loaded;
        out->files_scanned += sh->files_scanned;
        out->torn_bytes += sh->torn;
        out->compactions += sh->compactions;
        out->compact_bytes_read += sh->compact_read;
        out->compact_bytes_written += sh->compact_written;
        out->bytes_reclaimed += sh->reclaimed;
        out->shared_applied += sh->applied;
        out->shared_reloads += sh->reloads;
        if (sh->ss)
            out->shared_repairs += sh->ss->repairs;
        pthread_mutex_unlock(&sh->mu);
    }
    out->index_bytes_per_key = out->keys ? out->index_bytes / out->keys : 0;
    cache_stats(db->cache, out);
    out->gsn = atomic_load(&db->max_gsn);
    out->io_backend = atomic_load(&db->uring_writes) ? ARMDB_IO_URING : ARMDB_IO_PWRITE;
    out->direct_io = db->direct;
    out->read_only = db->rdonly || atomic_load(&db->failed) != 0;
    out->shards = db->nshards;
    out->key_len = db->key_len;
    out->value_len = db->value_len;
    out->shared = db->shared;
    return 0;
}

/* ---- runtime tuning ---- */

#define TUNE_KNOWN                                                                                                    \
    (ARMDB_TUNE_SYNC_MODE | ARMDB_TUNE_SYNC_INTERVAL | ARMDB_TUNE_COMPACTION_THRESHOLD | ARMDB_TUNE_AUTO_COMPACT | \
     ARMDB_TUNE_COMPACT_RATE)

/* Every field named in t->set is checked before any is applied, so a
 * refused call changes nothing. */
API int armdb_tune(armdb *db, const armdb_tuning *t)
{
    if (!db || !t)
        return err_set(ARMDB_INVAL, "armdb_tune: store handle and tuning must not be NULL");
    uint32_t set = t->set;
    if (set & ~(uint32_t)TUNE_KNOWN)
        return err_set(ARMDB_INVAL, "set: unknown bits 0x%x", set & ~(uint32_t)TUNE_KNOWN);
    if (db->rdonly)
        return err_set(ARMDB_READONLY, "store %s was opened read-only: nothing to tune", db->dir);
    if ((set & ARMDB_TUNE_SYNC_MODE) && t->sync_mode > ARMDB_SYNC_ALWAYS)
        return err_set(ARMDB_INVAL, "sync_mode: %u is not a sync mode", t->sync_mode);
    if ((set & ARMDB_TUNE_SYNC_INTERVAL) && (t->sync_interval_ms < 1 || t->sync_interval_ms > MAX_INTERVAL_MS))
        return err_set(ARMDB_INVAL, "sync_interval_ms: %u is not from 1 to %u", t->sync_interval_ms,
                       MAX_INTERVAL_MS);
    if ((set & ARMDB_TUNE_COMPACTION_THRESHOLD) && !(t->compaction_threshold >= 0 && t->compaction_threshold <= 1))
        return err_set(ARMDB_INVAL, "compaction_threshold: %g is not from 0 to 1", t->compaction_threshold);
    if ((set & ARMDB_TUNE_AUTO_COMPACT) && t->auto_compact > 1)
        return err_set(ARMDB_INVAL, "auto_compact: %u is not 0 or 1", t->auto_compact);

    pthread_mutex_lock(&db->bg_mu);
    if ((set & ARMDB_TUNE_SYNC_MODE) && t->sync_mode == ARMDB_SYNC_INTERVAL) {
        int rc = start_sync_thread(db);
        if (rc < 0) {
            pthread_mutex_unlock(&db->bg_mu);
            return rc;
        }
    }
    if (set & ARMDB_TUNE_SYNC_INTERVAL)
        db->interval_ms = t->sync_interval_ms;
    if (set & ARMDB_TUNE_SYNC_MODE)
        atomic_store(&db->sync_mode, t->sync_mode);
    if (set & (ARMDB_TUNE_SYNC_MODE | ARMDB_TUNE_SYNC_INTERVAL)) {
        db->sync_gen++;
        pthread_cond_broadcast(&db->sync_cv);
    }
    pthread_mutex_unlock(&db->bg_mu);

    if (set & ARMDB_TUNE_COMPACT_RATE)
        atomic_store(&db->compact_rate, t->compact_bytes_per_sec);
    if (set & ARMDB_TUNE_COMPACTION_THRESHOLD)
        atomic_store(&db->compact_threshold,
                     t->compaction_threshold > 0 ? t->compaction_threshold : DEFAULT_COMPACT_THRESHOLD);
    if (set & ARMDB_TUNE_AUTO_COMPACT)
        atomic_store(&db->compact_auto, t->auto_compact != 0);
    if (set & (ARMDB_TUNE_COMPACTION_THRESHOLD | ARMDB_TUNE_AUTO_COMPACT)) {
        /* Files may be past the new threshold, or have waited while
         * compaction was off: let the background thread look at all. */
        atomic_store(&db->compact_wanted, false);
        db_want_compaction(db);
    }
    return 0;
}

API int armdb_tuning_get(armdb *db, armdb_tuning *out)
{
    if (!db || !out)
        return err_set(ARMDB_INVAL, "armdb_tuning_get: store handle and out must not be NULL");
    memset(out, 0, sizeof *out);
    out->set = TUNE_KNOWN;
    out->sync_mode = atomic_load(&db->sync_mode);
    pthread_mutex_lock(&db->bg_mu);
    out->sync_interval_ms = db->interval_ms;
    pthread_mutex_unlock(&db->bg_mu);
    out->compaction_threshold = atomic_load(&db->compact_threshold);
    out->auto_compact = atomic_load(&db->compact_auto);
    out->compact_bytes_per_sec = atomic_load(&db->compact_rate);
    return 0;
}
