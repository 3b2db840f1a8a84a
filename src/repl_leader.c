/*
 * repl_leader.c - serving stores to followers (armdb_repl_serve).
 *
 * One thread accepts; each follower gets a sending thread and a receiving
 * one. The sender shakes hands, reads the follower's SUBSCRIBE (a GSN per
 * shard), then goes round the shards: a shard whose files hold entries
 * past what was sent gets a feed of that shard (armdb_changes_open_shard)
 * and a few batches from it per round, so one busy shard does not starve
 * the others. When every shard's feed is drained the sender sends a
 * HEARTBEAT carrying a GSN G: every entry up to G, on every shard, went
 * out before it (a shard with no entry past what was sent holds nothing
 * up to the store's GSN read before its check, since a write appends its
 * entry before it lets go of its shard). Then it sleeps on
 * armdb_changes_wait until a write, or until a heartbeat is due. The
 * receiver takes the follower's ACKs (per shard: applied and durable up
 * to a GSN), which make its position and lag.
 *
 * When a feed cannot serve a follower's position (ARMDB_COMPACTED), or the
 * follower holds GSNs past the store's last (it followed another history,
 * e.g. a leader restored from an older copy), the follower is sent RESYNC
 * and starts over from a full copy. A follower that followed another
 * store whose GSNs happen to be lower than this one's is not told apart:
 * point a follower only at the store it was made from.
 */
#include "repl_net.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define ROUND_BATCHES 8u  /* batches a shard sends before the next shard's turn */
#define WAIT_SLICE_MS 200u /* a sender checks for close at least this often */
#define TIMES 64u          /* (GSN, time) samples a follower's lag is read from */

struct served {
    char name[REPL_NAME_BYTES];
    armdb *db;
};

struct peer {
    armdb_repl_server *srv;
    struct peer *next;
    int fd;
    pthread_t tid, rtid;
    struct repl_conn *conn;
    armdb *db;
    uint32_t nshards;
    char addr[64], store[REPL_NAME_BYTES];
    _Atomic uint32_t state;
    atomic_uint_fast64_t *sent, *acked; /* per shard */
    _Atomic uint64_t entries, bytes;
    uint64_t connected_at;
    /* When the store's GSN moved, sampled by the sender at most every
     * 10 ms: the lag in time is how long ago the store first passed what
     * the follower acknowledged. Under srv->mu. */
    struct {
        uint64_t gsn, ms;
    } times[TIMES];
    uint32_t ntimes, tnext;
    atomic_bool done, reader_dead;
    atomic_bool holding; /* its positions hold back compaction's tombstones (floor_update) */
};

struct armdb_repl_server {
    int lfd, port;
    struct repl_cfg cfg;
    char addr[80];
    pthread_t tid;
    atomic_bool stop;
    pthread_mutex_t mu; /* stores, meta, peers, stats */
    struct served *stores;
    uint32_t nstores;
    unsigned char *meta;
    size_t meta_len;
    struct peer *peers;
    armdb_repl_server_stat st;
};

static void server_error(armdb_repl_server *srv, int rc, const char *what, bool refused)
{
    const char *text = repl_rc_text(rc);
    pthread_mutex_lock(&srv->mu);
    if (refused)
        srv->st.refused++;
    else
        srv->st.failed++;
    srv->st.last_error = rc;
    snprintf(srv->st.last_error_msg, sizeof srv->st.last_error_msg, "%s: %s%s%s", what, armdb_errmsg(),
             text ? ": " : "", text ? text : "");
    pthread_mutex_unlock(&srv->mu);
}

/* ---- one follower ---- */

static int lookup(void *ctx, const char *name, struct repl_shape *shape)
{
    struct peer *p = ctx;
    armdb_repl_server *srv = p->srv;
    int rc = ARMDB_NOTFOUND;
    pthread_mutex_lock(&srv->mu);
    if (!name[0]) {
        rc = 0; /* a meta connection */
    } else {
        for (uint32_t i = 0; i < srv->nstores; i++) {
            if (strcmp(srv->stores[i].name, name) == 0) {
                armdb *db = srv->stores[i].db;
                p->db = db;
                p->nshards = db->nshards;
                *shape = (struct repl_shape){db->key_len, db->value_len, db->nshards};
                rc = 0;
                break;
            }
        }
    }
    pthread_mutex_unlock(&srv->mu);
    return rc;
}

static void *reader_main(void *arg)
{
    struct peer *p = arg;
    for (;;) {
        enum repl_type type;
        const unsigned char *pl;
        size_t len;
        int rc = repl_frame_recv(p->conn, &type, &pl, &len);
        if (rc == 0 && type == REPL_ACK) {
            uint32_t s;
            uint64_t g;
            rc = repl_mark_decode(p->conn, pl, len, &s, &g);
            if (rc == 0) {
                atomic_max_u64(&p->acked[s], g);
            }
            continue;
        }
        if (rc == 0 && type == REPL_ERROR) {
            rc = repl_error_take(p->conn, pl, len, p->addr);
        } else if (rc == 0) {
            rc = err_plain(ARMDB_CORRUPT, "replication: the follower sent frame type %u", (unsigned)type);
        }
        /* A follower that hangs up (closed, or gone) is not an error. */
        if (!atomic_load(&p->srv->stop) && !atomic_load(&p->done) && rc != -ECONNRESET)
            server_error(p->srv, rc, p->addr, false);
        break;
    }
    atomic_store(&p->reader_dead, true);
    shutdown(p->fd, SHUT_RDWR); /* the sender's next send fails */
    return NULL;
}

static bool peer_going(struct peer *p)
{
    return !atomic_load(&p->srv->stop) && !atomic_load(&p->reader_dead);
}

/* Send what the feed of shard s has up to GSN cap, at most ROUND_BATCHES
 * batches; *drained when it has nothing more, *capped if it stopped at an
 * entry past cap. */
static int send_some(struct peer *p, armdb_changes *f, uint32_t s, uint64_t cap, bool *drained, bool *capped)
{
    *drained = *capped = false;
    for (uint32_t b = 0; b < ROUND_BATCHES && !*drained; b++) {
        /* A batch is begun at its first entry: an empty one cannot be
         * sent, and while one is begun no other frame can be. */
        bool begun = false;
        uint64_t nbytes = 0, last = 0;
        armdb_change ch;
        int rc;
        for (;;) {
            rc = armdb_changes_next(f, &ch);
            if (rc == ARMDB_NOTFOUND || (rc == 0 && ch.gsn > cap)) {
                *capped = rc == 0;
                *drained = true;
                break;
            }
            if (rc < 0)
                return rc;
            if (!begun && (rc = repl_batch_begin(p->conn, s)) < 0)
                return rc;
            begun = true;
            rc = repl_batch_add(p->conn, &ch);
            if (rc == ARMDB_FULL) {
                if ((rc = repl_batch_send(p->conn)) < 0 || (rc = repl_batch_begin(p->conn, s)) < 0 ||
                    (rc = repl_batch_add(p->conn, &ch)) < 0)
                    return rc;
            } else if (rc < 0) {
                return rc;
            }
            nbytes += ch.klen + ch.vlen;
            last = ch.gsn;
            atomic_fetch_add(&p->entries, 1);
            if (repl_batch_count(p->conn) >= p->srv->cfg.batch_entries)
                break;
        }
        if (begun && (rc = repl_batch_send(p->conn)) < 0)
            return rc;
        atomic_fetch_add(&p->bytes, nbytes);
        if (last)
            atomic_store(&p->sent[s], last);
    }
    return 0;
}

/* A GSN up to which every entry of the store is durable, every shard's
 * entries and so every batch whole; with sync, after a barrier on every
 * shard that needs one. */
static int durable_bound(armdb *db, bool sync, uint64_t *out)
{
    uint64_t lo = UINT64_MAX;
    for (uint32_t s = 0; s < db->nshards; s++) {
        uint64_t g;
        int rc = shard_durable_gsn(&db->shards[s], sync, &g);
        if (rc < 0)
            return err_set(rc, "replication: make %s durable before sending: %s", db->dir, armdb_errmsg());
        lo = g < lo ? g : lo;
    }
    *out = lo;
    return 0;
}

static int resync(struct peer *p, uint32_t s, const char *why)
{
    char copy[REPL_ERRMSG_MAX];
    snprintf(copy, sizeof copy, "%s", why); /* why may be armdb_errmsg() */
    why = copy;
    pthread_mutex_lock(&p->srv->mu);
    p->srv->st.resyncs++;
    pthread_mutex_unlock(&p->srv->mu);
    int rc = repl_send_mark(p->conn, REPL_RESYNC, s, 0);
    if (rc == 0)
        rc = repl_send_error(p->conn, ARMDB_COMPACTED, why);
    (void)rc;
    return ARMDB_COMPACTED;
}

/* The tombstone floor of each of db's shards: the least position of the
 * followers streaming it, above which compaction keeps tombstones (a
 * follower that has not been sent a delete still needs it; dropped, the
 * shard's feed could no longer serve that follower). */
static void floor_update(armdb_repl_server *srv, armdb *db)
{
    pthread_mutex_lock(&srv->mu);
    for (uint32_t s = 0; s < db->nshards; s++) {
        uint64_t lo = UINT64_MAX;
        for (struct peer *q = srv->peers; q; q = q->next) {
            if (q->db == db && atomic_load(&q->holding)) {
                uint64_t v = atomic_load(&q->sent[s]);
                lo = v < lo ? v : lo;
            }
        }
        atomic_store(&db->shards[s].repl_floor, lo);
    }
    pthread_mutex_unlock(&srv->mu);
}

/* Every entry of every shard up to the returned GSN has been sent. */
static uint64_t sent_mark(struct peer *p)
{
    uint64_t mark = UINT64_MAX;
    for (uint32_t s = 0; s < p->nshards; s++) {
        uint64_t v = atomic_load(&p->sent[s]);
        mark = v < mark ? v : mark;
    }
    return mark;
}

static int stream(struct peer *p, const uint64_t *from)
{
    armdb *db = p->db;
    uint32_t n = p->nshards;
    armdb_changes **feeds = calloc(n, sizeof *feeds);
    uint64_t *pos = malloc(n * sizeof *pos), *cap = calloc(n, sizeof *cap);
    bool *caught = calloc(n, sizeof *caught);
    int rc = feeds && pos && cap && caught ? 0 : -ENOMEM;
    uint64_t last_mark = 0, last_beat = 0;
    bool live = false;
    for (uint32_t s = 0; s < n && rc == 0; s++) {
        pos[s] = from[s];
        atomic_store(&p->sent[s], from[s]);
        atomic_store(&p->acked[s], from[s]);
        /* Marks stop at the store's last GSN when it was durable, and
         * that never goes back (not at a restart, not when compaction
         * drops the entry that held it): a position past it is another
         * history's. Later writes here would take GSNs the follower
         * holds already. */
        if (from[s] > armdb_last_gsn(db)) {
            char why[200];
            snprintf(why, sizeof why, "the follower has shard %u up to GSN %llu, past this store's last %llu: "
                     "it followed another history", s, (unsigned long long)from[s],
                     (unsigned long long)armdb_last_gsn(db));
            rc = resync(p, s, why);
        }
    }
    if (rc == 0) {
        atomic_store(&p->holding, true);
        floor_update(p->srv, db);
    }
    uint32_t ncaught = 0;
    uint64_t sampled = 0, sampled_at = 0;
    while (rc == 0 && peer_going(p)) {
        uint64_t L = armdb_last_gsn(db), safe = 0;
        bool busy = false, safe_known = false, safe_synced = false;
        uint64_t t = repl_now_ms();
        if (L != sampled && t - sampled_at >= 10) {
            pthread_mutex_lock(&p->srv->mu);
            p->times[p->tnext].gsn = L;
            p->times[p->tnext].ms = t;
            p->tnext = (p->tnext + 1) % TIMES;
            p->ntimes += p->ntimes < TIMES;
            pthread_mutex_unlock(&p->srv->mu);
            sampled = L;
            sampled_at = t;
        }
        for (uint32_t s = 0; s < n && rc == 0; s++) {
            if (!feeds[s]) {
                uint64_t sl = 0;
                if ((rc = armdb_shard_last_gsn(db, s, &sl)) < 0)
                    break;
                if (sl <= pos[s]) {
                    /* nothing of this shard in (pos, L]; the mark goes no
                     * further than what is durable */
                    if (!safe_known && (rc = durable_bound(db, false, &safe)) < 0)
                        break;
                    safe_known = true;
                    uint64_t to = L < safe ? L : safe;
                    pos[s] = pos[s] > to ? pos[s] : to;
                    atomic_store(&p->sent[s], pos[s]);
                    if (!caught[s]) {
                        caught[s] = true;
                        ncaught++;
                        rc = repl_send_mark(p->conn, REPL_CAUGHT_UP, s, pos[s]);
                    }
                    continue;
                }
                rc = armdb_changes_open_shard(db, s, pos[s], 0, &feeds[s]);
                if (rc == ARMDB_COMPACTED) {
                    rc = resync(p, s, armdb_errmsg());
                    break;
                }
                if (rc < 0)
                    break;
                /* Only what is durable goes out (see the top): the bound
                 * as it stands, else after a barrier on every shard, which
                 * covers the whole cut. A feed stopped short of its cut
                 * could not always be opened again from where it stopped
                 * (the shard's horizon may be past it). */
                uint64_t end = armdb_changes_end(feeds[s]);
                if (!safe_known && (rc = durable_bound(db, false, &safe)) < 0)
                    break;
                safe_known = true;
                if (safe < end && !safe_synced) {
                    if ((rc = durable_bound(db, true, &safe)) < 0)
                        break;
                    safe_synced = true;
                }
                cap[s] = safe;
            }
            bool drained, capped;
            busy = true;
            if ((rc = send_some(p, feeds[s], s, cap[s], &drained, &capped)) < 0)
                break;
            if (drained) {
                uint64_t end = capped ? cap[s] : armdb_changes_end(feeds[s]);
                armdb_changes_close(feeds[s]);
                feeds[s] = NULL;
                pos[s] = end > pos[s] ? end : pos[s];
                atomic_store(&p->sent[s], pos[s]);
                /* What the files held at the cut is sent: caught up
                 * (under a steady load a shard seldom has nothing new) */
                if (!caught[s] && (rc = repl_send_mark(p->conn, REPL_CAUGHT_UP, s, pos[s])) == 0) {
                    caught[s] = true;
                    ncaught++;
                }
            }
        }
        if (rc < 0)
            continue;
        floor_update(p->srv, db);
        if (!live && ncaught == n) {
            live = true;
            atomic_store(&p->state, ARMDB_REPL_LIVE);
        }
        /* A heartbeat when one is due, also under a load that never lets
         * every shard drain at once; when idle (every shard sent up to L,
         * or the durable bound) also as soon as the mark moved. */
        uint64_t now = repl_now_ms(), mark = sent_mark(p);
        if (now - last_beat >= p->srv->cfg.heartbeat_ms || (!busy && mark != last_mark)) {
            if ((rc = repl_send_heartbeat(p->conn, mark, now)) < 0)
                break;
            last_mark = mark;
            last_beat = now;
        }
        if (busy)
            continue;
        uint64_t due = last_beat + p->srv->cfg.heartbeat_ms;
        uint32_t wait = due > now ? (uint32_t)(due - now) : 0;
        if (wait > WAIT_SLICE_MS)
            wait = WAIT_SLICE_MS;
        if (wait)
            (void)armdb_changes_wait(db, L, wait);
    }
    for (uint32_t s = 0; feeds && s < n; s++)
        armdb_changes_close(feeds[s]);
    free(feeds);
    free(pos);
    free(cap);
    free(caught);
    return rc;
}

static void send_meta(struct peer *p)
{
    armdb_repl_server *srv = p->srv;
    unsigned char *copy = NULL;
    size_t len = 0;
    pthread_mutex_lock(&srv->mu);
    if (srv->meta && (copy = malloc(srv->meta_len ? srv->meta_len : 1))) {
        memcpy(copy, srv->meta, srv->meta_len);
        len = srv->meta_len;
    }
    bool had = srv->meta != NULL;
    pthread_mutex_unlock(&srv->mu);
    int rc = copy ? repl_frame_send(p->conn, REPL_META, copy, len)
                  : repl_send_error(p->conn, had ? -ENOMEM : ARMDB_NOTFOUND,
                                    had ? "out of memory" : "the leader has no meta");
    (void)rc;
    free(copy);
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    armdb_repl_server *srv = p->srv;
    struct repl_io io = {repl_fd_read, repl_fd_write, &p->fd};
    struct repl_opts o = {
        .role = REPL_LEADER,
        .lookup = lookup,
        .lookup_ctx = p,
        .secret = srv->cfg.has_secret ? srv->cfg.secret : NULL,
        .batch_entries = srv->cfg.batch_entries,
        .batch_bytes = srv->cfg.batch_bytes,
    };
    int rc = repl_sock_setup(p->fd, srv->cfg.timeout_ms);
    if (rc < 0)
        rc = err_set(rc, "replication: socket options");
    if (rc == 0)
        rc = repl_conn_new(&io, &o, &p->conn);
    if (rc == 0)
        rc = repl_accept(p->conn);
    if (rc < 0) {
        server_error(srv, rc, p->addr, true);
        goto out;
    }
    pthread_mutex_lock(&srv->mu); /* stats read it */
    snprintf(p->store, sizeof p->store, "%s", repl_conn_name(p->conn));
    pthread_mutex_unlock(&srv->mu);
    if (!p->store[0]) {
        send_meta(p);
        goto out;
    }
    enum repl_type type;
    const unsigned char *pl;
    size_t len;
    uint64_t from[ARMDB_SHARDS_MAX];
    uint32_t n = 0;
    if ((rc = repl_frame_recv(p->conn, &type, &pl, &len)) == 0) {
        if (type == REPL_SUBSCRIBE)
            rc = repl_subscribe_decode(p->conn, pl, len, from, &n);
        else
            rc = err_plain(ARMDB_CORRUPT, "replication: the follower sent type %u before SUBSCRIBE",
                         (unsigned)type);
    }
    if (rc < 0) {
        server_error(srv, rc, p->addr, false);
        goto out;
    }
    atomic_store(&p->state, ARMDB_REPL_CATCHING_UP);
    if (pthread_create(&p->rtid, NULL, reader_main, p) != 0) {
        server_error(srv, err_set(-EAGAIN, "replication: no thread for the follower"), p->addr, false);
        goto out;
    }
    rc = stream(p, from);
    atomic_store(&p->holding, false);
    floor_update(srv, p->db);
    if (rc < 0 && rc != ARMDB_COMPACTED && rc != -ECONNRESET && rc != -EPIPE && !atomic_load(&srv->stop) &&
        !atomic_load(&p->reader_dead))
        server_error(srv, rc, p->addr, false);
    atomic_store(&p->done, true);
    shutdown(p->fd, SHUT_RDWR);
    pthread_join(p->rtid, NULL);
out:
    atomic_store(&p->done, true);
    return NULL;
}

static void peer_free(struct peer *p)
{
    repl_conn_free(p->conn);
    close(p->fd);
    free((void *)p->sent);
    free((void *)p->acked);
    free(p);
}

/* ---- the server ---- */

static void accept_one(armdb_repl_server *srv)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(srv->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    char name[64];
    repl_addr_name((struct sockaddr *)&ss, name, sizeof name);
    pthread_mutex_lock(&srv->mu);
    srv->st.accepted++;
    uint32_t live = 0;
    for (struct peer *q = srv->peers; q; q = q->next)
        live += !atomic_load(&q->done);
    pthread_mutex_unlock(&srv->mu);
    int rc = 0;
    if (!srv->cfg.has_secret && !repl_addr_loopback((struct sockaddr *)&ss))
        rc = err_plain(ARMDB_BADKEY, "replication: refused: without a secret only loopback peers are served");
    else if (live >= srv->cfg.max_followers)
        rc = err_plain(ARMDB_FULL, "replication: refused: %u followers already (max_followers)", live);
    struct peer *p = rc == 0 ? calloc(1, sizeof *p) : NULL;
    if (rc == 0 && p) {
        p->sent = calloc(ARMDB_SHARDS_MAX, sizeof *p->sent);
        p->acked = calloc(ARMDB_SHARDS_MAX, sizeof *p->acked);
        if (!p->sent || !p->acked) {
            free((void *)p->sent);
            free((void *)p->acked);
            free(p);
            p = NULL;
        }
    }
    if (rc == 0 && !p)
        rc = err_set(-ENOMEM, "replication: no memory for a follower");
    if (rc < 0) {
        server_error(srv, rc, name, true);
        close(fd);
        return;
    }
    p->srv = srv;
    p->fd = fd;
    memcpy(p->addr, name, sizeof p->addr);
    p->connected_at = repl_now_ms();
    if (pthread_create(&p->tid, NULL, peer_main, p) != 0) {
        server_error(srv, err_set(-EAGAIN, "replication: no thread for the follower"), name, true);
        peer_free(p);
        return;
    }
    pthread_mutex_lock(&srv->mu);
    p->next = srv->peers;
    srv->peers = p;
    pthread_mutex_unlock(&srv->mu);
}

/* Join and free the followers whose thread has ended. */
static void reap(armdb_repl_server *srv, bool all)
{
    pthread_mutex_lock(&srv->mu);
    struct peer **pp = &srv->peers, *gone = NULL;
    while (*pp) {
        struct peer *p = *pp;
        if (all || atomic_load(&p->done)) {
            *pp = p->next;
            p->next = gone;
            gone = p;
        } else {
            pp = &p->next;
        }
    }
    pthread_mutex_unlock(&srv->mu);
    while (gone) {
        struct peer *p = gone;
        gone = p->next;
        shutdown(p->fd, SHUT_RDWR);
        pthread_join(p->tid, NULL);
        peer_free(p);
    }
}

static const char *state_name(uint32_t s)
{
    return s == ARMDB_REPL_LIVE ? "live" : s == ARMDB_REPL_CATCHING_UP ? "catching_up" : "connecting";
}

static void peer_stat(struct peer *p, uint64_t now, armdb_repl_peer *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->addr, p->addr, sizeof out->addr);
    memcpy(out->store, p->store, sizeof out->store);
    out->state = atomic_load(&p->state);
    uint64_t sent = UINT64_MAX, acked = UINT64_MAX;
    for (uint32_t i = 0; i < p->nshards; i++) {
        uint64_t a = atomic_load(&p->sent[i]), b = atomic_load(&p->acked[i]);
        sent = a < sent ? a : sent;
        acked = b < acked ? b : acked;
    }
    out->sent_gsn = p->nshards ? sent : 0;
    out->acked_gsn = p->nshards ? acked : 0;
    uint64_t top = p->db ? armdb_last_gsn(p->db) : 0;
    out->lag_gsn = top > out->acked_gsn ? top - out->acked_gsn : 0;
    /* the oldest sample past what was acknowledged, else the oldest kept */
    uint64_t at = now;
    for (uint32_t i = 0; out->lag_gsn && i < p->ntimes; i++) {
        uint32_t k = (p->tnext + TIMES - p->ntimes + i) % TIMES;
        if (p->times[k].gsn > out->acked_gsn || i + 1 == p->ntimes) {
            at = p->times[k].ms;
            break;
        }
    }
    out->lag_ms = out->lag_gsn && now > at ? now - at : 0;
    out->entries = atomic_load(&p->entries);
    out->bytes = atomic_load(&p->bytes);
    out->connected_ms = now - p->connected_at;
}

/* The REPLICATION file of each store served: a record for `armdb status`. */
static void write_status(armdb_repl_server *srv)
{
    char *buf = malloc(1u << 16);
    if (!buf)
        return;
    uint64_t now = repl_now_ms();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    pthread_mutex_lock(&srv->mu);
    for (uint32_t i = 0; i < srv->nstores; i++) {
        armdb *db = srv->stores[i].db;
        size_t off = 0, cap = 1u << 16;
        off += (size_t)snprintf(buf + off, cap - off,
                                "role leader\nstore %s\naddress %s\nlast_gsn %llu\nupdated_ms %llu\n",
                                srv->stores[i].name, srv->addr, (unsigned long long)armdb_last_gsn(db),
                                (unsigned long long)wall.tv_sec * 1000ull +
                                    (unsigned long long)wall.tv_nsec / 1000000ull);
        for (struct peer *p = srv->peers; p && off < cap - 512; p = p->next) {
            if (p->db != db || atomic_load(&p->done))
                continue;
            armdb_repl_peer ps;
            peer_stat(p, now, &ps);
            off += (size_t)snprintf(buf + off, cap - off,
                                    "follower %s state=%s sent_gsn=%llu acked_gsn=%llu lag_gsn=%llu lag_ms=%llu\n",
                                    ps.addr, state_name(ps.state), (unsigned long long)ps.sent_gsn,
                                    (unsigned long long)ps.acked_gsn, (unsigned long long)ps.lag_gsn,
                                    (unsigned long long)ps.lag_ms);
        }
        if (!db->rdonly)
            (void)repl_status_write(db->dir, "REPLICATION", buf, false);
    }
    pthread_mutex_unlock(&srv->mu);
    free(buf);
}

static void *accept_main(void *arg)
{
    armdb_repl_server *srv = arg;
    uint64_t last_status = 0;
    while (!atomic_load(&srv->stop)) {
        struct pollfd pfd = {.fd = srv->lfd, .events = POLLIN};
        int n = poll(&pfd, 1, WAIT_SLICE_MS);
        if (atomic_load(&srv->stop))
            break;
        if (n > 0 && (pfd.revents & POLLIN))
            accept_one(srv);
        reap(srv, false);
        uint64_t now = repl_now_ms();
        if (now - last_status >= 1000) {
            write_status(srv);
            last_status = now;
        }
    }
    return NULL;
}

API int armdb_repl_serve(const char *addr, const armdb_repl_options *opts, armdb_repl_server **out)
{
    if (!out)
        return err_set(ARMDB_INVAL, "armdb_repl_serve: out is NULL");
    *out = NULL;
    armdb_repl_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->lfd = -1;
    pthread_mutex_init(&srv->mu, NULL);
    int rc = repl_cfg_init(&srv->cfg, opts, "armdb_repl_serve");
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    if (rc == 0)
        rc = repl_addr_parse(addr ? addr : "127.0.0.1:0", &ss, &sl, "armdb_repl_serve");
    if (rc == 0 && !srv->cfg.has_secret && !repl_addr_loopback((struct sockaddr *)&ss))
        rc = err_set(ARMDB_INVAL,
                     "armdb_repl_serve: %s is not a loopback address: serving replication beyond this "
                     "machine needs a secret",
                     addr);
    if (rc == 0) {
        int one = 1;
        srv->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (srv->lfd < 0 || setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(srv->lfd, (struct sockaddr *)&ss, sl) < 0 || listen(srv->lfd, 64) < 0)
            rc = err_set(-errno, "armdb_repl_serve: cannot listen on %s", addr ? addr : "127.0.0.1:0");
    }
    if (rc == 0) {
        struct sockaddr_storage b;
        socklen_t bl = sizeof b;
        if (getsockname(srv->lfd, (struct sockaddr *)&b, &bl) < 0)
            rc = -errno;
        else {
            srv->port = ntohs(b.ss_family == AF_INET ? ((struct sockaddr_in *)&b)->sin_port
                                                      : ((struct sockaddr_in6 *)&b)->sin6_port);
            repl_addr_name((struct sockaddr *)&b, srv->addr, sizeof srv->addr);
        }
    }
    if (rc == 0 && pthread_create(&srv->tid, NULL, accept_main, srv) != 0)
        rc = err_set(-EAGAIN, "armdb_repl_serve: cannot start its thread");
    if (rc < 0) {
        if (srv->lfd >= 0)
            close(srv->lfd);
        repl_cfg_wipe(&srv->cfg);
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

API int armdb_repl_server_add(armdb_repl_server *srv, const char *name, armdb *db)
{
    if (!srv || !db)
        return err_set(ARMDB_INVAL, "armdb_repl_server_add: %s is NULL", srv ? "db" : "server");
    if (!repl_name_ok(name))
        return err_set(ARMDB_INVAL, "armdb_repl_server_add: \"%s\" is not a store name (1 to 63 of A-Z a-z 0-9 _ . -)",
                       name ? name : "(null)");
    if (db->replica)
        return err_set(ARMDB_INVAL, "armdb_repl_server_add: %s is a replica; followers follow its leader", db->dir);
    int rc = db_check_shared(db, "serving replication");
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&srv->mu);
    for (uint32_t i = 0; i < srv->nstores && rc == 0; i++)
        if (strcmp(srv->stores[i].name, name) == 0)
            rc = err_set(ARMDB_EXISTS, "armdb_repl_server_add: a store named \"%s\" is served already", name);
    if (rc == 0) {
        struct served *s = realloc(srv->stores, (srv->nstores + 1) * sizeof *s);
        if (!s) {
            rc = -ENOMEM;
        } else {
            srv->stores = s;
            memset(&s[srv->nstores], 0, sizeof *s);
            memcpy(s[srv->nstores].name, name, strlen(name));
            s[srv->nstores].db = db;
            srv->nstores++;
        }
    }
    pthread_mutex_unlock(&srv->mu);
    return rc;
}

API int armdb_repl_server_set_meta(armdb_repl_server *srv, const void *meta, size_t len)
{
    if (!srv || (!meta && len))
        return err_set(ARMDB_INVAL, "armdb_repl_server_set_meta: %s is NULL", srv ? "meta" : "server");
    if (len > REPL_META_MAX)
        return err_set(ARMDB_TOOBIG, "armdb_repl_server_set_meta: %zu bytes (at most %u)", len, REPL_META_MAX);
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    if (len)
        memcpy(copy, meta, len);
    pthread_mutex_lock(&srv->mu);
    free(srv->meta);
    srv->meta = copy;
    srv->meta_len = len;
    pthread_mutex_unlock(&srv->mu);
    return 0;
}

API int armdb_repl_server_port(const armdb_repl_server *srv) { return srv ? srv->port : 0; }

API int armdb_repl_server_stats(armdb_repl_server *srv, armdb_repl_server_stat *st, armdb_repl_peer *peers,
                                uint32_t cap, uint32_t *n)
{
    if (!srv || (cap && !peers))
        return err_set(ARMDB_INVAL, "armdb_repl_server_stats: %s is NULL", srv ? "peers" : "server");
    uint64_t now = repl_now_ms();
    uint32_t k = 0, live = 0;
    pthread_mutex_lock(&srv->mu);
    for (struct peer *p = srv->peers; p; p = p->next) {
        if (atomic_load(&p->done) || atomic_load(&p->state) < ARMDB_REPL_CATCHING_UP)
            continue;
        live++;
        if (k < cap)
            peer_stat(p, now, &peers[k++]);
    }
    if (st) {
        *st = srv->st;
        st->followers = live;
    }
    pthread_mutex_unlock(&srv->mu);
    if (n)
        *n = k;
    return 0;
}

API void armdb_repl_server_close(armdb_repl_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stop, true);
    shutdown(srv->lfd, SHUT_RDWR);
    pthread_join(srv->tid, NULL);
    reap(srv, true);
    close(srv->lfd);
    repl_cfg_wipe(&srv->cfg);
    pthread_mutex_destroy(&srv->mu);
    free(srv->stores);
    free(srv->meta);
    free(srv);
}
