/*
 * repl_follower.c - a read replica following a leader (armdb_repl_follow).
 *
 * One thread per follower: connect, shake hands, SUBSCRIBE from the
 * position of every shard, apply each BATCH entry with armdb_apply (the
 * leader's GSN and bytes), and every ack_interval_ms make what was applied
 * durable (armdb_sync) and acknowledge it. Readers use the store the whole
 * time. When the connection fails the thread retries with a doubling
 * delay between retry_min_ms and retry_max_ms.
 *
 * Positions. The leader sends each shard's entries in GSN order and marks
 * with a HEARTBEAT GSN G that everything up to G went out before it, on
 * every shard; CAUGHT_UP does the same for one shard. A shard's position
 * (complete[s]) is the largest GSN up to which the follower has applied
 * every entry of that shard. After a sync those are durable (durable[s]),
 * are acknowledged, and are written to the REPLICA file, so a follower
 * restarted after any crash asks from max(that record, the last GSN in
 * the shard's files): both are at most what it holds durably (the record
 * is written only after the sync it names; a crash keeps a prefix of each
 * shard's files, which were applied in GSN order).
 *
 * Resync. RESYNC from the leader (it can no longer serve the position)
 * starts a copy from GSN 0 in DIR.resync, followed like the store itself
 * while the store keeps serving reads. Once the copy is live it is made
 * durable, marked with the file RESYNCED, and the state becomes
 * ARMDB_REPL_SWAP; armdb_repl_follower_swap() exchanges the directories
 * and reopens. At start, a DIR.resync with RESYNCED is a finished copy (the
 * swap is due again); without, it is a copy cut short (or the old store
 * after an exchange) and is removed; a RESYNCED in DIR is removed (the
 * exchange happened).
 */
#include "repl_net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define RESYNC_WANTED 1 /* session(): the leader asked for a full copy */
#define MARKER "RESYNCED"

/* Where one store's positions stand. */
struct cursor {
    uint64_t complete[ARMDB_SHARDS_MAX], durable[ARMDB_SHARDS_MAX];
};

struct armdb_repl_follower {
    pthread_t tid;
    struct repl_cfg cfg;
    char *addr, *name, *dir, *resync_dir;
    armdb_options sopts;
    unsigned char key[32];
    struct sockaddr_storage ss;
    socklen_t sl;
    uint32_t nshards;
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    bool stop, swap_req, parked;
    int fd;          /* the connection's socket, or -1 */
    armdb *db;       /* the store followed (its owner's handle) */
    armdb *copy;     /* a resync's copy, or NULL */
    struct cursor cur, copy_cur;
    armdb_repl_follower_stat st;
    uint64_t contact_at; /* repl_now_ms of the last frame; 0 never */
    uint64_t status_at;
};

static bool going(armdb_repl_follower *f)
{
    pthread_mutex_lock(&f->mu);
    bool g = !f->stop && !f->swap_req;
    pthread_mutex_unlock(&f->mu);
    return g;
}

static void set_state(armdb_repl_follower *f, uint32_t state)
{
    pthread_mutex_lock(&f->mu);
    f->st.state = state;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void note_error(armdb_repl_follower *f, int rc)
{
    const char *text = repl_rc_text(rc);
    pthread_mutex_lock(&f->mu);
    f->st.last_error = rc;
    snprintf(f->st.last_error_msg, sizeof f->st.last_error_msg, "%s%s%s", armdb_errmsg(), text ? ": " : "",
             text ? text : "");
    pthread_mutex_unlock(&f->mu);
}

static uint64_t min_of(const uint64_t *v, uint32_t n)
{
    uint64_t m = UINT64_MAX;
    for (uint32_t i = 0; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return n ? m : 0;
}

/* ---- the REPLICA file ---- */

static void write_record(armdb_repl_follower *f, const char *dir, const struct cursor *c, bool force)
{
    uint64_t now = repl_now_ms();
    if (!force && now - f->status_at < 1000)
        return;
    f->status_at = now;
    size_t cap = 256 + 32u * f->nshards + 512, off = 0;
    char *buf = malloc(cap);
    if (!buf)
        return;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    pthread_mutex_lock(&f->mu);
    static const char *const names[] = {"", "connecting", "catching_up", "live", "resync", "swap", "stopped"};
    off += (size_t)snprintf(buf + off, cap - off,
                            "role follower\nstore %s\nleader %s\nstate %s\nleader_gsn %llu\napplied_gsn %llu\n"
                            "durable_gsn %llu\nupdated_ms %llu\nshards %u\n",
                            f->name, f->addr, f->st.state < 7 ? names[f->st.state] : "?",
                            (unsigned long long)f->st.leader_gsn, (unsigned long long)min_of(c->complete, f->nshards),
                            (unsigned long long)min_of(c->durable, f->nshards),
                            (unsigned long long)wall.tv_sec * 1000ull + (unsigned long long)wall.tv_nsec / 1000000ull,
                            f->nshards);
    pthread_mutex_unlock(&f->mu);
    for (uint32_t s = 0; s < f->nshards; s++)
        off += (size_t)snprintf(buf + off, cap - off, "shard %u %llu\n", s, (unsigned long long)c->durable[s]);
    (void)repl_status_write(dir, "REPLICA", buf, true); /* the cursor: see read_record */
    free(buf);
}

/* The durable positions recorded in dir/REPLICA, if it is whole and for
 * this store: else all 0 (the store's files alone say where it is). */
static void read_record(armdb_repl_follower *f, const char *dir, struct cursor *c)
{
    memset(c, 0, sizeof *c);
    char path[4096];
    if (snprintf(path, sizeof path, "%s/REPLICA", dir) >= (int)sizeof path)
        return;
    FILE *fp = fopen(path, "re");
    if (!fp)
        return;
    char line[512], store[REPL_NAME_BYTES + 1] = "";
    uint64_t got[ARMDB_SHARDS_MAX];
    uint32_t shards = 0, seen = 0;
    bool ok = true;
    while (ok && fgets(line, sizeof line, fp)) {
        unsigned s;
        unsigned long long g;
        if (sscanf(line, "store %64s", store) == 1)
            continue;
        if (sscanf(line, "shards %u", &shards) == 1)
            continue;
        if (sscanf(line, "shard %u %llu", &s, &g) == 2) {
            ok = s == seen && s < ARMDB_SHARDS_MAX && g <= GSN_MASK;
            if (ok)
                got[seen++] = g;
        }
    }
    fclose(fp);
    if (ok && shards == f->nshards && seen == shards && strcmp(store, f->name) == 0)
        memcpy(c->durable, got, shards * sizeof *got);
}

/* ---- one connection ---- */

/* Connect, and publish the socket so that close and swap can end it. */
static int dial(armdb_repl_follower *f, int *out)
{
    int fd;
    int rc = repl_dial(&f->ss, f->sl, f->cfg.timeout_ms, f->addr, &fd);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&f->mu);
    bool ok = !f->stop && !f->swap_req;
    if (ok)
        f->fd = fd;
    pthread_mutex_unlock(&f->mu);
    if (!ok) {
        close(fd);
        return 0;
    }
    *out = fd;
    return 0;
}

static void hang_up(armdb_repl_follower *f, int *fd)
{
    pthread_mutex_lock(&f->mu);
    f->fd = -1;
    pthread_mutex_unlock(&f->mu);
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Make what was applied durable and acknowledge every shard. */
static int flush(armdb_repl_follower *f, struct repl_conn *conn, armdb *db, struct cursor *c, bool applied,
                 const char *dir)
{
    int rc = applied ? armdb_sync(db) : 0;
    if (rc < 0)
        return rc;
    memcpy(c->durable, c->complete, f->nshards * sizeof *c->durable);
    for (uint32_t s = 0; s < f->nshards && rc == 0; s++)
        rc = repl_send_mark(conn, REPL_ACK, s, c->durable[s]);
    pthread_mutex_lock(&f->mu);
    f->st.durable_gsn = min_of(c->durable, f->nshards);
    pthread_mutex_unlock(&f->mu);
    write_record(f, dir, c, false);
    return rc;
}

static void advance(struct cursor *c, uint32_t s, uint64_t g)
{
    if (g > c->complete[s])
        c->complete[s] = g;
}

static void publish(armdb_repl_follower *f, const struct cursor *c, uint64_t entries, uint64_t bytes)
{
    pthread_mutex_lock(&f->mu);
    f->st.applied_gsn = min_of(c->complete, f->nshards);
    f->st.entries += entries;
    f->st.bytes += bytes;
    f->contact_at = repl_now_ms();
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* The copy is live: durable, marked, and due to be swapped in. */
static int copy_done(armdb_repl_follower *f, armdb *copy)
{
    int rc = armdb_sync(copy);
    if (rc < 0)
        return rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/" MARKER, f->resync_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(-errno, "replication: create %s", path);
    rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    int dfd = open(f->resync_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) < 0 && rc == 0)
            rc = -errno;
        close(dfd);
    }
    if (rc < 0)
        return err_set(rc, "replication: make %s durable", path);
    set_state(f, ARMDB_REPL_SWAP);
    return 0;
}

/* Follow into db (the store, or the copy) until the connection ends, the
 * follower stops or a swap is asked for: 0, RESYNC_WANTED, or the error. */
static int session(armdb_repl_follower *f, armdb *db, struct cursor *c, bool is_copy)
{
    const char *dir = is_copy ? f->resync_dir : f->dir;
    int fd = -1;
    int rc = dial(f, &fd);
    if (rc < 0 || fd < 0)
        return rc;
    struct repl_io io = {repl_fd_read, repl_fd_write, &fd};
    struct repl_opts o = {
        .role = REPL_FOLLOWER,
        .shape = {db->key_len, db->value_len, db->nshards},
        .name = f->name,
        .secret = f->cfg.has_secret ? f->cfg.secret : NULL,
    };
    struct repl_conn *conn = NULL;
    rc = repl_conn_new(&io, &o, &conn);
    if (rc == 0)
        rc = repl_connect(conn);
    if (rc < 0)
        goto out;
    pthread_mutex_lock(&f->mu);
    f->st.connects++;
    f->st.last_error = 0;
    f->st.last_error_msg[0] = 0;
    if (!is_copy)
        f->st.state = ARMDB_REPL_CATCHING_UP;
    pthread_mutex_unlock(&f->mu);
    uint64_t from[ARMDB_SHARDS_MAX];
    for (uint32_t s = 0; s < f->nshards && rc == 0; s++) {
        uint64_t sl = 0;
        rc = armdb_shard_last_gsn(db, s, &sl);
        from[s] = sl > c->durable[s] ? sl : c->durable[s];
        c->complete[s] = c->durable[s] = from[s];
    }
    if (rc == 0)
        rc = repl_send_subscribe(conn, from, f->nshards);
    publish(f, c, 0, 0);
    uint64_t last_flush = repl_now_ms();
    bool dirty = false, applied = false, caught[ARMDB_SHARDS_MAX] = {false};
    uint32_t ncaught = 0;
    while (rc == 0 && going(f)) {
        if (dirty) {
            uint64_t now = repl_now_ms(), due = last_flush + f->cfg.ack_interval_ms;
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (now >= due || poll(&pfd, 1, (int)(due - now)) == 0) {
                if ((rc = flush(f, conn, db, c, applied, dir)) < 0)
                    break;
                dirty = applied = false;
                last_flush = repl_now_ms();
                continue;
            }
        }
        enum repl_type type;
        const unsigned char *pl;
        size_t len;
        if ((rc = repl_frame_recv(conn, &type, &pl, &len)) < 0)
            break;
        uint64_t entries = 0, bytes = 0;
        switch (type) {
        case REPL_BATCH: {
            struct repl_batch_iter it;
            armdb_change ch;
            if ((rc = repl_batch_open(conn, pl, len, &it)) < 0)
                break;
            while (rc == 0 && repl_batch_next(&it, &ch) == 0) {
                if ((rc = armdb_apply(db, &ch)) < 0) {
                    rc = err_set(rc, "replication: applying GSN %llu to %s: %s", (unsigned long long)ch.gsn, dir,
                                 armdb_errmsg());
                    break;
                }
                advance(c, it.shard, ch.gsn);
                entries++;
                bytes += ch.klen + ch.vlen;
            }
            applied = dirty = true;
            break;
        }
        case REPL_CAUGHT_UP: {
            /* The shard's entries the leader's files held are all here:
             * with every shard so, the follower is live. */
            uint32_t s;
            uint64_t g;
            if ((rc = repl_mark_decode(conn, pl, len, &s, &g)) < 0)
                break;
            advance(c, s, g);
            dirty = true;
            if (caught[s])
                break;
            caught[s] = true;
            if (++ncaught < f->nshards)
                break;
            pthread_mutex_lock(&f->mu);
            if (!is_copy)
                f->st.state = ARMDB_REPL_LIVE;
            bool finish = is_copy && f->st.state == ARMDB_REPL_RESYNC;
            pthread_mutex_unlock(&f->mu);
            if (finish)
                rc = copy_done(f, db);
            else
                write_record(f, dir, c, true);
            break;
        }
        case REPL_HEARTBEAT: {
            /* every entry up to g has been sent, on every shard */
            uint64_t g, t;
            if ((rc = repl_heartbeat_decode(pl, len, &g, &t)) < 0)
                break;
            for (uint32_t s = 0; s < f->nshards; s++)
                advance(c, s, g);
            pthread_mutex_lock(&f->mu);
            if (g > f->st.leader_gsn)
                f->st.leader_gsn = g;
            pthread_mutex_unlock(&f->mu);
            dirty = true;
            break;
        }
        case REPL_RESYNC:
            rc = RESYNC_WANTED;
            break;
        case REPL_ERROR:
            rc = repl_error_take(conn, pl, len, f->addr);
            break;
        default:
            rc = err_plain(ARMDB_CORRUPT, "replication: the leader sent a %u frame mid-stream", (unsigned)type);
        }
        publish(f, c, entries, bytes);
    }
    if (rc == 0 && dirty)
        (void)flush(f, conn, db, c, applied, dir);
    else if (applied && armdb_sync(db) == 0)
        memcpy(c->durable, c->complete, f->nshards * sizeof *c->durable);
    write_record(f, dir, c, true);
out:
    repl_conn_free(conn);
    hang_up(f, &fd);
    return rc;
}

/* Start (again) a full copy in DIR.resync. */
static int copy_open(armdb_repl_follower *f)
{
    if (f->copy) {
        armdb_close(f->copy);
        f->copy = NULL;
    }
    int rc = repl_rm_tree(f->resync_dir);
    if (rc < 0)
        return err_set(rc, "replication: remove %s", f->resync_dir);
    armdb_options o = f->sopts;
    o.flags |= ARMDB_CREATE;
    armdb *copy;
    if ((rc = armdb_open(f->resync_dir, &o, &copy)) < 0)
        return rc;
    pthread_mutex_lock(&f->mu);
    f->copy = copy;
    memset(&f->copy_cur, 0, sizeof f->copy_cur);
    f->st.resyncs++;
    f->st.state = ARMDB_REPL_RESYNC;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

/* Wait out the retry delay (or until stopped). */
static void backoff(armdb_repl_follower *f, uint32_t ms)
{
    struct timespec ts;
    repl_deadline(&ts, ms);
    pthread_mutex_lock(&f->mu);
    while (!f->stop && !f->swap_req)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&f->mu);
}

static void *follower_main(void *arg)
{
    armdb_repl_follower *f = arg;
    uint32_t delay = 0;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        if (f->swap_req) {
            f->parked = true;
            pthread_cond_broadcast(&f->cv);
            while (f->swap_req && !f->stop)
                pthread_cond_wait(&f->cv, &f->mu);
            f->parked = false;
        }
        bool stop = f->stop;
        armdb *db = f->copy ? f->copy : f->db;
        bool is_copy = f->copy != NULL;
        if (!is_copy && f->st.state != ARMDB_REPL_STOPPED)
            f->st.state = ARMDB_REPL_CONNECTING;
        pthread_mutex_unlock(&f->mu);
        if (stop)
            break;
        int rc = session(f, db, is_copy ? &f->copy_cur : &f->cur, is_copy);
        if (rc == RESYNC_WANTED) {
            delay = 0;
            if ((rc = copy_open(f)) == 0)
                continue;
        }
        if (rc < 0)
            note_error(f, rc);
        if (!going(f))
            continue;
        bool local = rc == ARMDB_READONLY || rc == -EIO || rc == -ENOSPC;
        if (local) {
            /* the store cannot take writes: retrying after a while is
             * all there is to do, but say so */
            set_state(f, ARMDB_REPL_STOPPED);
        }
        if (rc == 0 && delay == 0)
            continue;
        delay = delay ? delay * 2 : f->cfg.retry_min_ms;
        if (delay > f->cfg.retry_max_ms)
            delay = f->cfg.retry_max_ms;
        if (rc == 0)
            delay = f->cfg.retry_min_ms;
        backoff(f, delay);
    }
    return NULL;
}

/* ---- the API ---- */

static void follower_free(armdb_repl_follower *f)
{
    if (f->copy)
        armdb_close(f->copy);
    repl_cfg_wipe(&f->cfg);
    sodium_memzero(f->key, sizeof f->key);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f->addr);
    free(f->name);
    free(f->dir);
    free(f->resync_dir);
    free(f);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* What a crash left of a resync or a swap (see the top). */
static int settle(armdb_repl_follower *f)
{
    char mark[4096];
    snprintf(mark, sizeof mark, "%s/" MARKER, f->dir);
    if (unlink(mark) < 0 && errno != ENOENT)
        return err_set(-errno, "replication: remove %s", mark);
    if (!exists(f->resync_dir))
        return 0;
    snprintf(mark, sizeof mark, "%s/" MARKER, f->resync_dir);
    if (!exists(mark)) {
        int rc = repl_rm_tree(f->resync_dir);
        return rc < 0 ? err_set(rc, "replication: remove %s", f->resync_dir) : 0;
    }
    int rc = armdb_open(f->resync_dir, &f->sopts, &f->copy);
    if (rc < 0)
        return rc;
    read_record(f, f->resync_dir, &f->copy_cur);
    f->st.state = ARMDB_REPL_SWAP;
    return 0;
}

API int armdb_repl_follow(armdb *db, const char *store_dir, const armdb_options *store_opts, const char *addr,
                          const char *name, const armdb_repl_options *opts, armdb_repl_follower **out)
{
    if (!out)
        return err_set(ARMDB_INVAL, "armdb_repl_follow: out is NULL");
    *out = NULL;
    if (!db || !store_dir || !store_opts || !addr)
        return err_set(ARMDB_INVAL, "armdb_repl_follow: %s is NULL",
                       !db ? "db" : !store_dir ? "store_dir" : !store_opts ? "store_opts" : "addr");
    if (!db->replica)
        return err_set(ARMDB_INVAL, "armdb_repl_follow: %s is not open with ARMDB_REPLICA", db->dir);
    if (!repl_name_ok(name))
        return err_set(ARMDB_INVAL, "armdb_repl_follow: \"%s\" is not a store name (1 to 63 of A-Z a-z 0-9 _ . -)",
                       name ? name : "(null)");
    if (atomic_load(&db->followed))
        return err_set(ARMDB_EXISTS, "armdb_repl_follow: %s is followed already", db->dir);
    if (db->crypt && !store_opts->encryption_key)
        return err_set(ARMDB_INVAL, "armdb_repl_follow: %s is encrypted: store_opts needs its key (a resync "
                       "creates a copy with it)", db->dir);
    armdb_repl_follower *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    pthread_mutex_init(&f->mu, NULL);
    repl_cond_init(&f->cv);
    f->fd = -1;
    f->db = db;
    f->nshards = db->nshards;
    int rc = repl_cfg_init(&f->cfg, opts, "armdb_repl_follow");
    if (rc == 0)
        rc = repl_addr_parse(addr, &f->ss, &f->sl, "armdb_repl_follow");
    size_t dl = strlen(store_dir);
    while (dl > 1 && store_dir[dl - 1] == '/')
        dl--;
    if (rc == 0 && (!(f->addr = strdup(addr)) || !(f->name = strdup(name)) || !(f->dir = strndup(store_dir, dl)) ||
                    asprintf(&f->resync_dir, "%s.resync", f->dir) < 0)) {
        f->resync_dir = NULL;
        rc = -ENOMEM;
    }
    if (rc == 0) {
        /* how the store and its copies are opened again: as replicas */
        f->sopts = *store_opts;
        f->sopts.flags = (f->sopts.flags | ARMDB_REPLICA) & ~(uint32_t)(ARMDB_CREATE | ARMDB_RDONLY);
        f->sopts.key_len = db->key_len;
        f->sopts.value_len = db->value_len;
        f->sopts.shards = db->nshards;
        if (db->meta.flags & META_ORDERED)
            f->sopts.flags |= ARMDB_ORDERED;
        if (store_opts->encryption_key) {
            memcpy(f->key, store_opts->encryption_key, sizeof f->key);
            f->sopts.encryption_key = f->key;
        }
        f->st.state = ARMDB_REPL_CONNECTING;
        f->st.last_contact_ms = UINT64_MAX;
        read_record(f, f->dir, &f->cur);
        rc = settle(f);
    }
    bool was = false;
    if (rc == 0 && !atomic_compare_exchange_strong(&db->followed, &was, true))
        rc = err_set(ARMDB_EXISTS, "armdb_repl_follow: %s is followed already", db->dir);
    else if (rc == 0 && pthread_create(&f->tid, NULL, follower_main, f) != 0) {
        atomic_store(&db->followed, false);
        rc = err_set(-EAGAIN, "armdb_repl_follow: cannot start its thread");
    }
    if (rc < 0) {
        follower_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

API int armdb_repl_follower_stats(armdb_repl_follower *f, armdb_repl_follower_stat *st)
{
    if (!f || !st)
        return err_set(ARMDB_INVAL, "armdb_repl_follower_stats: NULL argument");
    pthread_mutex_lock(&f->mu);
    *st = f->st;
    st->lag_gsn = st->leader_gsn > st->applied_gsn ? st->leader_gsn - st->applied_gsn : 0;
    st->last_contact_ms = f->contact_at ? repl_now_ms() - f->contact_at : UINT64_MAX;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

API int armdb_repl_follower_wait(armdb_repl_follower *f, uint64_t gsn, uint32_t timeout_ms)
{
    if (!f)
        return err_set(ARMDB_INVAL, "armdb_repl_follower_wait: follower is NULL");
    struct timespec ts;
    repl_deadline(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    while (f->st.applied_gsn < gsn && rc == 0)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) == ETIMEDOUT)
            rc = f->st.applied_gsn >= gsn ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Park the thread (it holds no store while parked); false if it stopped. */
static void park(armdb_repl_follower *f)
{
    pthread_mutex_lock(&f->mu);
    f->swap_req = true;
    if (f->fd >= 0)
        shutdown(f->fd, SHUT_RDWR);
    pthread_cond_broadcast(&f->cv);
    while (!f->parked)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static void unpark(armdb_repl_follower *f)
{
    pthread_mutex_lock(&f->mu);
    f->swap_req = false;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

API int armdb_repl_follower_swap(armdb_repl_follower *f, armdb *old, armdb **out)
{
    if (!f || !out)
        return err_set(ARMDB_INVAL, "armdb_repl_follower_swap: NULL argument");
    *out = NULL;
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    if (f->st.state != ARMDB_REPL_SWAP || !f->copy)
        rc = err_set(ARMDB_INVAL, "armdb_repl_follower_swap: no resynced copy is waiting");
    else if (old != f->db)
        rc = err_set(ARMDB_INVAL, "armdb_repl_follower_swap: old is not the store followed");
    pthread_mutex_unlock(&f->mu);
    if (rc < 0)
        return rc;
    park(f);
    const armdb_options *o = &f->sopts;
    armdb *copy = f->copy, *fresh = NULL;
    rc = armdb_sync(copy);
    if (rc == 0) {
        armdb_close(copy);
        f->copy = NULL;
        if (renameat2(AT_FDCWD, f->dir, AT_FDCWD, f->resync_dir, RENAME_EXCHANGE) < 0) {
            rc = err_set(-errno, "armdb_repl_follower_swap: exchange %s and %s", f->dir, f->resync_dir);
        } else if ((rc = armdb_open(f->dir, o, &fresh)) < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", armdb_errmsg());
            if (renameat2(AT_FDCWD, f->dir, AT_FDCWD, f->resync_dir, RENAME_EXCHANGE) < 0)
                f->st.state = ARMDB_REPL_STOPPED;
            err_restore(rc, msg);
        }
        if (rc < 0 && armdb_open(f->resync_dir, o, &f->copy) < 0)
            f->copy = NULL;
    }
    if (rc == 0) {
        char mark[4096];
        snprintf(mark, sizeof mark, "%s/" MARKER, f->dir);
        (void)unlink(mark);
        armdb_close(old);
        /* What cannot be removed now goes at the next start (a DIR.resync
         * without RESYNCED). */
        int left = repl_rm_tree(f->resync_dir);
        (void)left;
        atomic_store(&fresh->followed, true);
        pthread_mutex_lock(&f->mu);
        f->db = fresh;
        f->cur = f->copy_cur;
        f->st.state = ARMDB_REPL_CONNECTING;
        pthread_mutex_unlock(&f->mu);
        *out = fresh;
    } else if (!f->copy) {
        pthread_mutex_lock(&f->mu);
        f->st.state = ARMDB_REPL_CONNECTING; /* the copy is lost: a RESYNC starts it again */
        pthread_mutex_unlock(&f->mu);
    }
    unpark(f);
    return rc;
}

API void armdb_repl_follower_close(armdb_repl_follower *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    if (f->fd >= 0)
        shutdown(f->fd, SHUT_RDWR);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->tid, NULL);
    atomic_store(&f->db->followed, false);
    follower_free(f);
}

API int armdb_repl_fetch_meta(const char *addr, const armdb_repl_options *opts, void *buf, size_t cap,
                              size_t *len)
{
    if (!len || (cap && !buf))
        return err_set(ARMDB_INVAL, "armdb_repl_fetch_meta: NULL argument");
    *len = 0;
    struct repl_cfg cfg;
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = repl_cfg_init(&cfg, opts, "armdb_repl_fetch_meta");
    if (rc == 0)
        rc = repl_addr_parse(addr, &ss, &sl, "armdb_repl_fetch_meta");
    if (rc < 0)
        return rc;
    int fd;
    rc = repl_dial(&ss, sl, cfg.timeout_ms, addr, &fd);
    struct repl_io io = {repl_fd_read, repl_fd_write, &fd};
    struct repl_opts o = {.role = REPL_FOLLOWER, .name = "", .secret = cfg.has_secret ? cfg.secret : NULL};
    struct repl_conn *conn = NULL;
    if (rc == 0)
        rc = repl_conn_new(&io, &o, &conn);
    if (rc == 0)
        rc = repl_connect(conn);
    enum repl_type type;
    const unsigned char *pl;
    size_t plen;
    if (rc == 0)
        rc = repl_frame_recv(conn, &type, &pl, &plen);
    if (rc == 0 && type == REPL_ERROR) {
        rc = repl_error_take(conn, pl, plen, addr);
    } else if (rc == 0 && type != REPL_META) {
        rc = err_plain(ARMDB_CORRUPT, "armdb_repl_fetch_meta: the leader sent a %u frame", (unsigned)type);
    } else if (rc == 0) {
        *len = plen;
        if (plen > cap)
            rc = err_set(ARMDB_TOOBIG, "armdb_repl_fetch_meta: %zu bytes, the buffer has %zu", plen, cap);
        else if (plen)
            memcpy(buf, pl, plen);
    }
    repl_conn_free(conn);
    if (fd >= 0)
        close(fd);
    repl_cfg_wipe(&cfg);
    return rc;
}
