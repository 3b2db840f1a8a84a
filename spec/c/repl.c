/*
 * repl.c - replication on loopback. A follower converges to its leader
 * while a writer (puts, overwrites, deletes, batches), file rotation and
 * compaction go on, and is live (hears the leader's GSN) while a writer
 * keeps the leader busy; it converges still after kill -9 of the follower,
 * kill -9 of the leader, and connections cut after a random number of
 * bytes by a proxy. A follower the leader can no longer serve (compaction
 * dropped deletes after its position) builds a full copy and swaps it in,
 * and a follower killed while it does so ends whole all the same.
 * Refusals: a wrong secret, a secret on one side only, an unknown store, a
 * store of another shape, a non-loopback address without a secret; writes
 * to a replica; the leader's meta bytes; garbage from a raw TCP client.
 *
 * Every convergence is checked by comparing the two stores key by key in
 * both directions (nothing lost, nothing extra, equal values) and each
 * shard's last GSN, never by timing: waits have long timeouts that only
 * turn a hang into a failure.
 *
 * The processes killed with SIGKILL are this program run again: fork,
 * then at once exec of /proc/self/exe with a role in argv, so a child
 * inherits nothing of the parent's threads.
 *
 * Replay: ARMDB_SEED=<seed printed at start>; ARMDB_TEST_SCALE=<percent>
 * scales the rounds and the writes; ARMDB_REPL_ONLY=<case> runs one case
 * (garbage, resync, kill_resync, proxy, kill_follower, kill_leader,
 * refusals, converge, live).
 */
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#define NKEYS 2000u     /* the writer's key space */
#define FILLER 1000000u /* keys from here on are filler (resync test) */
#define VMAX 400u
#define SHARDS 4u
#define WAIT_MS 60000u /* a wait that times out is a failure, not a retry */
/* The leaders compact only when a case says so (armdb_compact), but in
 * test_converge: there compaction runs, automatic and called, while
 * entries stream, and the follower must stay live through it; the other
 * cases prove their own fault without it. */
#define LEADER_FLAGS (ARMDB_CREATE | ARMDB_NO_AUTO_COMPACT)

static uint64_t g_scale; /* ARMDB_TEST_SCALE, percent */
static uint64_t g_seed;

/* ---- stores ---- */

static void store_options(armdb_options *o, uint32_t flags)
{
    armdb_options_init(o);
    o->key_len = 8;
    o->shards = SHARDS;
    o->write_buffer_size = 65536;
    o->max_file_size = 65536;
    o->compaction_threshold = 0.2;
    o->sync_mode = ARMDB_SYNC_NONE;
    o->flags = flags;
    t_key_options(o);
}

static armdb *store_open(const char *dir, uint32_t flags)
{
    armdb_options o;
    armdb *db = NULL;
    store_options(&o, flags);
    CHECK_OK(armdb_open(dir, &o, &db));
    return db;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the writer: random puts, overwrites, deletes and batches ---- */

static uint32_t value_of(uint64_t key, uint64_t version, unsigned char *out)
{
    uint32_t len = (uint32_t)(t_mix(key, version) % VMAX);
    t_fill(t_mix(key, version + 1), out, len);
    return len;
}

static void write_one(armdb *db, uint64_t *seed, uint64_t *version)
{
    unsigned char v[4][VMAX];
    uint64_t r = t_rand(seed) % 100, k = t_rand(seed) % NKEYS;
    if (r < 65) {
        uint32_t n = value_of(k, ++*version, v[0]);
        CHECK_OK(armdb_put(db, &k, 8, v[0], n));
    } else if (r < 90) {
        int rc = armdb_delete(db, &k, 8);
        CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
    } else {
        /* 2..4 distinct keys (mostly in several shards), some deleted */
        armdb_op ops[4];
        uint64_t ks[4];
        size_t n = 2 + (size_t)(t_rand(seed) % 3);
        for (size_t i = 0; i < n; i++) {
            ks[i] = (k + i * 7) % NKEYS;
            bool del = t_rand(seed) % 3 == 0;
            uint32_t len = del ? 0 : value_of(ks[i], ++*version, v[i]);
            ops[i] = (armdb_op){.type = del ? ARMDB_OP_DELETE : ARMDB_OP_PUT,
                                .key = &ks[i],
                                .klen = 8,
                                .val = del ? NULL : v[i],
                                .vlen = len};
        }
        CHECK_OK(armdb_batch(db, ops, n));
    }
}

struct writer {
    armdb *db;
    uint64_t seed;
    long limit;    /* ops, or < 0: until stop */
    unsigned pace; /* a 1 ms pause every pace ops (0: none) */
    atomic_int stop;
    atomic_long done;
    pthread_t thread;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    uint64_t version = w->seed << 20;
    long i = 0;
    while (!atomic_load(&w->stop) && (w->limit < 0 || i < w->limit)) {
        write_one(w->db, &w->seed, &version);
        atomic_store(&w->done, ++i);
        if (w->pace && i % w->pace == 0)
            sleep_ms(1);
    }
    return NULL;
}

static void writer_start(struct writer *w, armdb *db, uint64_t seed, long limit, unsigned pace)
{
    memset(w, 0, sizeof *w);
    w->db = db;
    w->seed = seed;
    w->limit = limit;
    w->pace = pace;
    CHECK(pthread_create(&w->thread, NULL, writer_main, w) == 0);
}

static long writer_stop(struct writer *w)
{
    atomic_store(&w->stop, 1);
    CHECK(pthread_join(w->thread, NULL) == 0);
    return atomic_load(&w->done);
}

/* ---- comparing two stores ---- */

/* Every key of a is in b with the same value; the number of keys of a. */
static uint64_t contained_in(armdb *a, armdb *b, const char *an, const char *bn)
{
    armdb_iter *it;
    const void *k, *v;
    size_t kl, vl, len;
    unsigned char buf[VMAX];
    uint64_t n = 0;
    int rc;
    CHECK_OK(armdb_iter_open(a, NULL, 0, NULL, 0, 0, &it));
    while ((rc = armdb_iter_next(it, &k, &kl, &v, &vl)) == 0) {
        uint64_t key;
        CHECK(kl == 8);
        memcpy(&key, k, 8);
        int g = armdb_get(b, k, 8, buf, sizeof buf, &len);
        if (g != 0 || len != vl || memcmp(buf, v, vl) != 0) {
            fprintf(stderr, "key %" PRIu64 ": %zu bytes in the %s; in the %s: %s, %zu bytes%s\n", key, vl, an,
                    bn, armdb_strerror(g), g == 0 ? len : 0, g == 0 ? " (other bytes)" : "");
            exit(1);
        }
        n++;
    }
    CHECK_RC(rc, ARMDB_NOTFOUND);
    armdb_iter_close(it);
    return n;
}

/* The follower holds exactly the leader's keys and values, and each shard
 * ends at the leader's GSN. */
static void compare_stores(armdb *leader, armdb *follower)
{
    uint64_t a = contained_in(leader, follower, "leader", "follower");
    uint64_t b = contained_in(follower, leader, "follower", "leader");
    CHECK(a > 0);
    CHECK(a == b && a == armdb_count(leader) && b == armdb_count(follower));
    for (uint32_t s = 0; s < SHARDS; s++) {
        uint64_t gl, gf;
        CHECK_OK(armdb_shard_last_gsn(leader, s, &gl));
        CHECK_OK(armdb_shard_last_gsn(follower, s, &gf));
        if (gl != gf)
            fprintf(stderr, "shard %u: last GSN %" PRIu64 " on the leader, %" PRIu64 " on the follower\n", s,
                    gl, gf);
        CHECK(gl == gf);
    }
}

/* ---- leaders and followers ---- */

static void repl_options(armdb_repl_options *o, const char *secret)
{
    armdb_repl_options_init(o);
    o->secret = secret;
    o->secret_len = secret ? (uint32_t)strlen(secret) : 0;
    o->heartbeat_ms = 100;
    o->timeout_ms = 3000;
    o->retry_min_ms = 20;
    o->retry_max_ms = 200;
    o->ack_interval_ms = 20;
}

static armdb_repl_server *serve(armdb *db, const char *secret, int *port)
{
    armdb_repl_options o;
    armdb_repl_server *srv = NULL;
    repl_options(&o, secret);
    CHECK_OK(armdb_repl_serve("127.0.0.1:0", &o, &srv));
    CHECK_OK(armdb_repl_server_add(srv, "s", db));
    *port = armdb_repl_server_port(srv);
    CHECK(*port > 0 && *port < 65536);
    return srv;
}

static armdb_repl_follower *follow_as(armdb *db, const char *dir, const armdb_options *so, int port,
                                      const char *name, const char *secret)
{
    armdb_repl_options o;
    armdb_repl_follower *f = NULL;
    char addr[32];
    repl_options(&o, secret);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    CHECK_OK(armdb_repl_follow(db, dir, so, addr, name, &o, &f));
    CHECK(f != NULL);
    return f;
}

static armdb_repl_follower *follow(armdb *db, const char *dir, int port, const char *secret)
{
    armdb_options so;
    store_options(&so, ARMDB_REPLICA | ARMDB_CREATE);
    return follow_as(db, dir, &so, port, "s", secret);
}

static armdb_repl_follower_stat fstats(armdb_repl_follower *f)
{
    armdb_repl_follower_stat st;
    memset(&st, 0xa5, sizeof st);
    CHECK_OK(armdb_repl_follower_stats(f, &st));
    return st;
}

static armdb_repl_server_stat sstats(armdb_repl_server *srv, armdb_repl_peer *peers, uint32_t cap,
                                     uint32_t *n)
{
    armdb_repl_server_stat st;
    uint32_t got = 0;
    memset(&st, 0xa5, sizeof st);
    CHECK_OK(armdb_repl_server_stats(srv, &st, peers, cap, &got));
    CHECK(got <= cap);
    if (n)
        *n = got;
    return st;
}

static void print_fstats(const char *what, armdb_repl_follower *f)
{
    armdb_repl_follower_stat st = fstats(f);
    fprintf(stderr,
            "%s: follower state %u, applied %" PRIu64 ", leader %" PRIu64 ", connects %" PRIu64
            ", resyncs %" PRIu64 ", last error %d: %s\n",
            what, st.state, st.applied_gsn, st.leader_gsn, st.connects, st.resyncs, st.last_error,
            st.last_error_msg);
}

/* The follower has applied everything up to gsn. */
static void caught_up(armdb_repl_follower *f, uint64_t gsn, const char *what)
{
    int rc = armdb_repl_follower_wait(f, gsn, WAIT_MS);
    if (rc != 0) {
        fprintf(stderr, "%s: waiting for GSN %" PRIu64 ": %s\n", what, gsn, armdb_strerror(rc));
        print_fstats(what, f);
    }
    CHECK_OK(rc);
    armdb_repl_follower_stat st = fstats(f);
    CHECK(st.applied_gsn >= gsn);
}

/* The follower streams live. It turns LIVE at the leader's next
 * heartbeat once every shard is caught up, which may come just after the
 * wait for a GSN returned: polled (CONNECTING and CATCHING_UP only), and
 * a resync, a swap due or a stop fails at once. */
static void check_live(armdb_repl_follower *f, const char *what)
{
    uint64_t t0 = now_ms();
    armdb_repl_follower_stat st;
    while ((st = fstats(f)).state != ARMDB_REPL_LIVE) {
        bool waiting = st.state == ARMDB_REPL_CATCHING_UP || st.state == ARMDB_REPL_CONNECTING;
        bool late = now_ms() - t0 > WAIT_MS;
        if (!waiting || late)
            print_fstats(what, f);
        CHECK(waiting && !late);
        sleep_ms(2);
    }
}

/* Until the follower's last_error is set (a refusal), or fail. */
static armdb_repl_follower_stat refused(armdb_repl_follower *f)
{
    uint64_t t0 = now_ms();
    armdb_repl_follower_stat st;
    while ((st = fstats(f)).last_error == 0) {
        if (now_ms() - t0 > WAIT_MS) {
            print_fstats("refusal", f);
            CHECK(!"the follower was never refused");
        }
        sleep_ms(5);
    }
    CHECK(st.last_error < 0 && st.last_error_msg[0] != '\0');
    CHECK(st.state != ARMDB_REPL_LIVE && st.state != ARMDB_REPL_CATCHING_UP);
    CHECK(st.applied_gsn == 0 && st.entries == 0);
    return st;
}

/* The leader sees one follower of "s", LIVE, that acknowledged its last
 * GSN, with no lag. Acknowledgements trail the applies by up to
 * ack_interval_ms: poll until it comes, or fail. */
static void leader_sees_caught_up(armdb_repl_server *srv, armdb *leader)
{
    uint64_t last = armdb_last_gsn(leader), t0 = now_ms();
    armdb_repl_peer p[4];
    uint32_t n;
    for (;;) {
        armdb_repl_server_stat st = sstats(srv, p, 4, &n);
        CHECK(st.followers == n);
        if (n == 1 && p[0].acked_gsn == last && p[0].state == ARMDB_REPL_LIVE)
            break;
        if (now_ms() - t0 > WAIT_MS) {
            fprintf(stderr, "leader: %u followers; acked %" PRIu64 ", sent %" PRIu64 ", last %" PRIu64 "\n",
                    n, n ? p[0].acked_gsn : 0, n ? p[0].sent_gsn : 0, last);
            CHECK(!"the leader never saw the follower acknowledge its last GSN");
        }
        sleep_ms(5);
    }
    CHECK(strcmp(p[0].store, "s") == 0);
    CHECK(strncmp(p[0].addr, "127.0.0.1", 9) == 0);
    CHECK(p[0].state == ARMDB_REPL_LIVE);
    CHECK(p[0].lag_gsn == 0 && p[0].lag_ms == 0);
    CHECK(p[0].sent_gsn == last);
    CHECK(p[0].entries > 0 && p[0].bytes > p[0].entries * 8);
}

static long scaled(long n)
{
    long v = n * (long)g_scale / 100;
    return v > 0 ? v : 1;
}

/* ---- children: this program run again with a role ---- */

static char *g_self; /* argv[0] as run, for messages */

/* fork and exec /proc/self/exe with args (NULL-terminated after argv[0]).
 * in/out: the child's stdin and stdout become these pipe ends (-1: keep). */
static pid_t spawn(char *const *args, int in, int out)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* only async-signal-safe calls until the exec */
        if (in >= 0)
            dup2(in, 0);
        if (out >= 0)
            dup2(out, 1);
        execv("/proc/self/exe", args);
        _exit(127);
    }
    return pid;
}

static void kill_child(pid_t pid)
{
    int status;
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
        fprintf(stderr, "child %d ended before it was killed: status 0x%x\n", (int)pid, status);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void wait_child_ok(pid_t pid)
{
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "child %d: status 0x%x\n", (int)pid, status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void *kill_self_later(void *arg)
{
    sleep_ms((uint64_t)(uintptr_t)arg);
    raise(SIGKILL);
    return NULL;
}

/* Child "follow DIR PORT GSN [SEED]": open the replica at DIR and follow
 * the leader, swapping in a resync's copy whenever one is due; with GSN 0
 * until killed, else until GSN is applied (and the follower is live), then
 * close and exit 0. With SEED, it kills itself at the first swap due: by
 * SEED % 3, before the swap, during it (a thread, 0 to 4 ms into it), or
 * as soon as it returned. */
static int child_follow(int argc, char **argv)
{
    const char *dir = argv[2];
    int port = atoi(argv[3]);
    uint64_t gsn = strtoull(argv[4], NULL, 10);
    long self_kill = argc > 5 ? atol(argv[5]) : -1;
    armdb *db = store_open(dir, ARMDB_REPLICA | ARMDB_CREATE);
    armdb_repl_follower *f = follow(db, dir, port, NULL);
    uint64_t t0 = now_ms();
    for (;;) {
        armdb_repl_follower_stat st = fstats(f);
        if (st.state == ARMDB_REPL_SWAP) {
            armdb *fresh = NULL;
            pthread_t t;
            if (self_kill % 3 == 0)
                raise(SIGKILL);
            if (self_kill % 3 == 1)
                CHECK(pthread_create(&t, NULL, kill_self_later, (void *)(uintptr_t)(self_kill / 3 % 5)) == 0);
            CHECK_OK(armdb_repl_follower_swap(f, db, &fresh));
            CHECK(fresh != NULL);
            if (self_kill >= 0)
                raise(SIGKILL);
            db = fresh;
            continue;
        }
        if (gsn && st.applied_gsn >= gsn && st.state == ARMDB_REPL_LIVE)
            break;
        bool late = (gsn || self_kill >= 0) && now_ms() - t0 > WAIT_MS;
        if (late)
            print_fstats("follower child", f);
        CHECK(!late);
        sleep_ms(2);
    }
    armdb_repl_follower_close(f);
    CHECK_OK(armdb_close(db));
    return 0;
}

/* Child "lead DIR PORT SEED OPS": open the store at DIR, serve it on PORT
 * and write; with OPS 0 until killed, else OPS writes, then print the last
 * GSN on stdout and wait for a line on stdin before closing. */
static int child_lead(char **argv)
{
    const char *dir = argv[2];
    int port = atoi(argv[3]);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    long ops = atol(argv[5]);
    armdb_options o;
    armdb *db = NULL;
    /* Sync mode none: what the follower is sent must be durable all the
     * same (the leader runs the barriers), or the kill takes back writes
     * the follower holds and the stores differ at the end. */
    store_options(&o, LEADER_FLAGS);
    CHECK_OK(armdb_open(dir, &o, &db));
    armdb_repl_options ro;
    armdb_repl_server *srv = NULL;
    char addr[32];
    repl_options(&ro, NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    /* The port of the leader killed before is free at once: the server
     * binds with SO_REUSEADDR (connections in TIME_WAIT do not hold it). */
    CHECK_OK(armdb_repl_serve(addr, &ro, &srv));
    CHECK(armdb_repl_server_port(srv) == port);
    CHECK_OK(armdb_repl_server_add(srv, "s", db));
    struct writer w;
    writer_start(&w, db, seed, ops ? ops : -1, 20);
    CHECK(pthread_join(w.thread, NULL) == 0); /* with OPS 0, killed first */
    printf("%" PRIu64 "\n", armdb_last_gsn(db));
    fflush(stdout);
    char line[16];
    CHECK(fgets(line, sizeof line, stdin) != NULL);
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(db));
    return 0;
}

/* A free port on loopback for a leader that must come back on the same
 * one. Taken below the ephemeral range where there is room: a follower
 * retrying a port of that range while no one listens could be given it
 * as its own source port (a connection to itself), and hold it. */
static int free_port(void)
{
    unsigned lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%u %u", &lo, &hi) != 2)
            lo = 32768;
        fclose(f);
    }
    uint64_t rs = g_seed ^ (uint64_t)getpid();
    for (int i = 0; i < 200; i++) {
        unsigned port = lo > 11024 ? 10000 + (unsigned)(t_rand(&rs) % (lo - 11024)) : 0;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        CHECK(fd >= 0);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
            getsockname(fd, (struct sockaddr *)&a, &al) == 0) {
            close(fd);
            return ntohs(a.sin_port);
        }
        close(fd);
    }
    CHECK(!"no free port on loopback");
    return -1;
}

/* The child is still running (it did not fail on its own). */
static void child_alive(pid_t pid)
{
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
        fprintf(stderr, "child %d ended early: status 0x%x\n", (int)pid, status);
    CHECK(r == 0);
}

/* ---- a) convergence under load ---- */

static void test_converge(void)
{
    char *dir = t_tmpdir("repl-converge");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    armdb *leader = store_open(ls, ARMDB_CREATE);
    int port;
    armdb_repl_server *srv = serve(leader, NULL, &port);
    uint64_t seed = g_seed, version = 1;
    /* Some data before the follower starts: it catches up from files. */
    for (long i = 0; i < scaled(5000); i++)
        write_one(leader, &seed, &version);
    armdb *fdb = store_open(fs, ARMDB_REPLICA | ARMDB_CREATE);
    armdb_repl_follower *f = follow(fdb, fs, port, NULL);
    struct writer w;
    writer_start(&w, leader, g_seed + 1, scaled(40000), 0);
    /* Compaction while entries stream; the replica reads, refuses writes. */
    for (int i = 0; i < 5; i++) {
        sleep_ms(20);
        CHECK_OK(armdb_compact(leader));
        uint64_t k = (uint64_t)i;
        unsigned char buf[VMAX];
        size_t len;
        int rc = armdb_get(fdb, &k, 8, buf, sizeof buf, &len);
        CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
        CHECK_RC(armdb_put(fdb, &k, 8, "x", 1), ARMDB_READONLY);
        CHECK_RC(armdb_delete(fdb, &k, 8), ARMDB_READONLY);
    }
    long n = writer_stop(&w);
    uint64_t last = armdb_last_gsn(leader);
    caught_up(f, last, "converge");
    armdb_repl_follower_stat st = fstats(f);
    armdb_repl_server_stat ss = sstats(srv, NULL, 0, NULL);
    if (ss.resyncs)
        fprintf(stderr, "converge: the leader sent %" PRIu64 " resyncs; last error: %s\n", ss.resyncs,
                ss.last_error_msg);
    check_live(f, "converge");
    CHECK(st.last_error == 0 || st.connects > 1);
    CHECK(st.entries > 0 && st.bytes > 0 && st.resyncs == 0);
    leader_sees_caught_up(srv, leader);
    /* The follower hears the leader's last GSN (with a batch or a
     * heartbeat) and has it durable. */
    uint64_t t0 = now_ms();
    while ((st = fstats(f)).leader_gsn != last || st.durable_gsn < last) {
        bool late = now_ms() - t0 > WAIT_MS;
        if (late)
            print_fstats("converge", f);
        CHECK(!late);
        sleep_ms(5);
    }
    CHECK(st.lag_gsn == 0 && st.applied_gsn == last);
    CHECK(st.last_contact_ms < WAIT_MS);
    armdb_stat ls_st;
    CHECK_OK(armdb_stats(leader, &ls_st));
    CHECK(ls_st.rotations > 0 && ls_st.compactions > 0);
    compare_stores(leader, fdb);
    /* No swap is due. */
    armdb *other = NULL;
    CHECK_RC(armdb_repl_follower_swap(f, fdb, &other), ARMDB_INVAL);
    CHECK(other == NULL);
    printf("converge: %ld writes, %" PRIu64 " entries applied, last GSN %" PRIu64 ", %" PRIu64 " keys\n", n,
           st.entries, last, armdb_count(leader));
    /* Stopped, reopened and followed again, it resumes from its position:
     * no resync, and the writes made meanwhile arrive. */
    armdb_repl_follower_close(f);
    CHECK_OK(armdb_close(fdb));
    for (long i = 0; i < scaled(3000); i++)
        write_one(leader, &seed, &version);
    fdb = store_open(fs, ARMDB_REPLICA);
    f = follow(fdb, fs, port, NULL);
    caught_up(f, armdb_last_gsn(leader), "resume");
    check_live(f, "resume");
    st = fstats(f);
    CHECK(st.resyncs == 0);
    compare_stores(leader, fdb);
    armdb_repl_follower_close(f);
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(fdb));
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- live while the leader is written to ---- */

/* A follower started while a writer keeps its leader busy (a few thousand
 * writes a second, nothing compacted) turns LIVE and hears the leader's
 * GSN while the writer goes on, not only once it stops. */
static void test_live_under_load(void)
{
    char *dir = t_tmpdir("repl-live");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    armdb *leader = store_open(ls, LEADER_FLAGS);
    int port;
    armdb_repl_server *srv = serve(leader, NULL, &port);
    uint64_t seed = g_seed + 17, version = 1;
    for (long i = 0; i < 2000; i++)
        write_one(leader, &seed, &version);
    struct writer w;
    writer_start(&w, leader, g_seed + 18, -1, 5);
    long done0;
    uint64_t t0 = now_ms();
    while ((done0 = atomic_load(&w.done)) < 100) {
        CHECK(now_ms() - t0 < WAIT_MS);
        sleep_ms(1);
    }
    uint64_t g0 = armdb_last_gsn(leader);
    armdb *fdb = store_open(fs, ARMDB_REPLICA | ARMDB_CREATE);
    armdb_repl_follower *f = follow(fdb, fs, port, NULL);
    armdb_repl_follower_stat st;
    t0 = now_ms();
    while (!((st = fstats(f)).state == ARMDB_REPL_LIVE && st.leader_gsn >= g0 && st.applied_gsn >= g0)) {
        bool late = now_ms() - t0 > 20000;
        if (late) {
            print_fstats("live", f);
            fprintf(stderr, "live: %ld writes since GSN %" PRIu64 ", the leader is at %" PRIu64 "\n",
                    atomic_load(&w.done) - done0, g0, armdb_last_gsn(leader));
        }
        CHECK(!late);
        sleep_ms(5);
    }
    /* the writer is still writing: LIVE came before it stopped */
    long during = atomic_load(&w.done);
    t0 = now_ms();
    while (atomic_load(&w.done) == during) {
        CHECK(now_ms() - t0 < WAIT_MS);
        sleep_ms(1);
    }
    long n = writer_stop(&w);
    caught_up(f, armdb_last_gsn(leader), "live, after");
    compare_stores(leader, fdb);
    printf("live: LIVE at GSN %" PRIu64 " while writing, %ld writes\n", st.leader_gsn, n);
    armdb_repl_follower_close(f);
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(fdb));
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- b) kill -9 of the follower ---- */

static void test_kill_follower(void)
{
    char *dir = t_tmpdir("repl-killf");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    armdb *leader = store_open(ls, LEADER_FLAGS);
    int port;
    armdb_repl_server *srv = serve(leader, NULL, &port);
    uint64_t seed = g_seed + 2, version = 1;
    for (long i = 0; i < scaled(3000); i++)
        write_one(leader, &seed, &version);
    struct writer w;
    writer_start(&w, leader, g_seed + 3, -1, 10);
    char sport[16];
    snprintf(sport, sizeof sport, "%d", port);
    char *args[] = {g_self, "follow", fs, sport, "0", NULL};
    int rounds = (int)scaled(8) + 2;
    uint64_t rs = g_seed + 4;
    for (int r = 0; r < rounds; r++) {
        uint64_t accepted = sstats(srv, NULL, 0, NULL).accepted;
        pid_t pid = spawn(args, -1, -1);
        if (r % 3 != 2) {
            /* connected, then killed at a random moment of its stream */
            uint64_t t0 = now_ms();
            while (sstats(srv, NULL, 0, NULL).accepted == accepted) {
                CHECK(now_ms() - t0 < WAIT_MS);
                child_alive(pid);
                sleep_ms(2);
            }
            sleep_ms(t_rand(&rs) % 250);
        } else {
            sleep_ms(t_rand(&rs) % 30); /* maybe while it opens its store */
        }
        kill_child(pid);
    }
    long n = writer_stop(&w);
    uint64_t last = armdb_last_gsn(leader);
    char sgsn[24];
    snprintf(sgsn, sizeof sgsn, "%" PRIu64, last);
    char *fin[] = {g_self, "follow", fs, sport, sgsn, NULL};
    wait_child_ok(spawn(fin, -1, -1));
    armdb_repl_server_stat st = sstats(srv, NULL, 0, NULL);
    CHECK(st.accepted >= (uint64_t)(rounds - rounds / 3) + 1);
    armdb *fdb = store_open(fs, ARMDB_REPLICA);
    compare_stores(leader, fdb);
    printf("kill follower: %d kills, %ld writes during them, %" PRIu64 " connections\n", rounds, n,
           st.accepted);
    CHECK_OK(armdb_close(fdb));
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- c) kill -9 of the leader ---- */

static void test_kill_leader(void)
{
    char *dir = t_tmpdir("repl-killl");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    int port = free_port();
    char sport[16];
    snprintf(sport, sizeof sport, "%d", port);
    armdb *fdb = store_open(fs, ARMDB_REPLICA | ARMDB_CREATE);
    armdb_repl_follower *f = follow(fdb, fs, port, NULL);
    int rounds = (int)scaled(8) + 2;
    uint64_t rs = g_seed + 5;
    for (int r = 0; r < rounds; r++) {
        char sseed[24];
        snprintf(sseed, sizeof sseed, "%" PRIu64, g_seed + 100 + (uint64_t)r);
        char *args[] = {g_self, "lead", ls, sport, sseed, "0", NULL};
        uint64_t connects = fstats(f).connects;
        pid_t pid = spawn(args, -1, -1);
        /* the follower reconnected by itself, then the leader dies at a
         * random moment of the stream */
        uint64_t t0 = now_ms();
        while (fstats(f).connects == connects) {
            bool late = now_ms() - t0 > WAIT_MS;
            if (late)
                print_fstats("kill leader", f);
            CHECK(!late);
            child_alive(pid);
            sleep_ms(2);
        }
        sleep_ms(t_rand(&rs) % 250);
        kill_child(pid);
    }
    /* The last run writes, then stays up until the follower has it all. */
    int in[2], out[2];
    CHECK(pipe(in) == 0 && pipe(out) == 0);
    char sseed[24];
    snprintf(sseed, sizeof sseed, "%" PRIu64, g_seed + 99);
    char *args[] = {g_self, "lead", ls, sport, sseed, "3000", NULL};
    pid_t pid = spawn(args, in[0], out[1]);
    close(in[0]);
    close(out[1]);
    FILE *from = fdopen(out[0], "r");
    uint64_t last = 0;
    CHECK(from && fscanf(from, "%" SCNu64, &last) == 1 && last > 0);
    caught_up(f, last, "kill leader");
    armdb_repl_follower_stat st = fstats(f);
    check_live(f, "kill leader");
    CHECK(st.connects >= (uint64_t)rounds + 1);
    CHECK(write(in[1], "q\n", 2) == 2);
    close(in[1]);
    wait_child_ok(pid);
    fclose(from);
    armdb_repl_follower_close(f);
    armdb *leader = store_open(ls, ARMDB_RDONLY);
    CHECK(armdb_last_gsn(leader) == last);
    compare_stores(leader, fdb);
    printf("kill leader: %d kills, %" PRIu64 " connections, last GSN %" PRIu64 "\n", rounds, st.connects,
           last);
    CHECK_OK(armdb_close(leader));
    CHECK_OK(armdb_close(fdb));
    t_rmtree(dir);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- d) connections cut at random bytes ---- */

/* Relays follower <-> leader; each connection is cut (both sides closed)
 * once `budget` bytes, both ways together, have passed, while cuts are
 * left; after that it relays until either side closes. */
struct proxy {
    int lfd, port, leader_port;
    uint64_t seed;
    atomic_int stop;
    atomic_int cuts_left;
    atomic_int conns;
    pthread_t thread;
};

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(fd >= 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void relay(struct proxy *p, int a, int b, uint64_t budget)
{
    unsigned char buf[16384];
    struct pollfd pf[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    while (!atomic_load(&p->stop)) {
        int rc = poll(pf, 2, 100);
        if (rc < 0 && errno == EINTR)
            continue;
        CHECK(rc >= 0);
        for (int i = 0; i < 2; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(pf[i].fd, buf, sizeof buf);
            if (n <= 0)
                return;
            size_t give = (uint64_t)n < budget ? (size_t)n : (size_t)budget;
            if (give && send(pf[1 - i].fd, buf, give, MSG_NOSIGNAL) != (ssize_t)give)
                return;
            budget -= give;
            if (budget == 0)
                return; /* the cut */
        }
    }
}

static void *proxy_main(void *arg)
{
    struct proxy *p = arg;
    struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
    while (!atomic_load(&p->stop)) {
        if (poll(&pf, 1, 100) <= 0)
            continue;
        int a = accept(p->lfd, NULL, NULL);
        if (a < 0)
            continue;
        int b = connect_loopback(p->leader_port);
        atomic_fetch_add(&p->conns, 1);
        if (b >= 0) {
            bool cut = atomic_load(&p->cuts_left) > 0;
            /* from inside the handshake to well into the stream */
            uint64_t budget = cut ? 1 + t_rand(&p->seed) % 200000 : UINT64_MAX;
            relay(p, a, b, budget);
            if (cut)
                atomic_fetch_sub(&p->cuts_left, 1);
            close(b);
        }
        close(a);
    }
    return NULL;
}

static void test_proxy_cuts(void)
{
    char *dir = t_tmpdir("repl-cut");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    armdb *leader = store_open(ls, LEADER_FLAGS);
    int port;
    armdb_repl_server *srv = serve(leader, NULL, &port);
    uint64_t seed = g_seed + 6, version = 1;
    for (long i = 0; i < scaled(5000); i++)
        write_one(leader, &seed, &version);
    struct proxy p = {.leader_port = port, .seed = g_seed + 7};
    int cuts = (int)scaled(10) + 2;
    atomic_store(&p.cuts_left, cuts);
    p.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK(p.lfd >= 0 && bind(p.lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(p.lfd, 8) == 0);
    CHECK(getsockname(p.lfd, (struct sockaddr *)&a, &al) == 0);
    p.port = ntohs(a.sin_port);
    CHECK(pthread_create(&p.thread, NULL, proxy_main, &p) == 0);
    struct writer w;
    writer_start(&w, leader, g_seed + 8, -1, 10);
    armdb *fdb = store_open(fs, ARMDB_REPLICA | ARMDB_CREATE);
    armdb_repl_follower *f = follow(fdb, fs, p.port, NULL);
    uint64_t t0 = now_ms();
    while (atomic_load(&p.cuts_left) > 0) {
        bool late = now_ms() - t0 > WAIT_MS;
        if (late)
            print_fstats("proxy", f);
        CHECK(!late);
        sleep_ms(5);
    }
    long n = writer_stop(&w);
    caught_up(f, armdb_last_gsn(leader), "proxy");
    armdb_repl_follower_stat st = fstats(f);
    check_live(f, "proxy");
    CHECK(st.connects >= (uint64_t)cuts + 1);
    compare_stores(leader, fdb);
    printf("proxy: %d cuts, %d connections, %ld writes, %" PRIu64 " entries applied\n", cuts,
           atomic_load(&p.conns), n, st.entries);
    armdb_repl_follower_close(f);
    atomic_store(&p.stop, 1);
    CHECK(pthread_join(p.thread, NULL) == 0);
    close(p.lfd);
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(fdb));
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- e) resync ---- */

static uint64_t max_shard_gsn(armdb *db)
{
    uint64_t top = 0;
    for (uint32_t s = 0; s < SHARDS; s++) {
        uint64_t g;
        CHECK_OK(armdb_shard_last_gsn(db, s, &g));
        top = g > top ? g : top;
    }
    return top;
}

/* The leader deletes every key of the writer's space and compacts until
 * its feed from pos is gone (ARMDB_COMPACTED): old values go, then the
 * tombstones (kept while a file with older entries remains in their
 * shard), helped by fresh keys put and deleted in each pass. The passes. */
static int compact_past(armdb *leader, uint64_t pos)
{
    armdb_changes *c = NULL;
    int rc = 0, passes = 0;
    uint64_t filler = FILLER;
    for (; passes < 40; passes++) {
        for (uint64_t k = 0; k < NKEYS; k++) {
            rc = armdb_delete(leader, &k, 8);
            CHECK(rc == 0 || rc == ARMDB_NOTFOUND);
        }
        unsigned char v[64];
        memset(v, 'f', sizeof v);
        uint64_t first = filler;
        for (int i = 0; i < 3000; i++, filler++)
            CHECK_OK(armdb_put(leader, &filler, 8, v, sizeof v));
        for (uint64_t k = first; k < filler; k++)
            CHECK_OK(armdb_delete(leader, &k, 8));
        CHECK_OK(armdb_sync(leader));
        CHECK_OK(armdb_compact(leader));
        CHECK_OK(armdb_compact(leader));
        rc = armdb_changes_open(leader, pos, 0, &c);
        if (rc == ARMDB_COMPACTED)
            break;
        CHECK_OK(rc);
        armdb_changes_close(c);
    }
    CHECK_RC(rc, ARMDB_COMPACTED);
    CHECK(c == NULL);
    return passes + 1;
}

static void test_resync(void)
{
    char *dir = t_tmpdir("repl-resync");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    char *resync_dir = t_path(dir, "follower.resync");
    armdb *leader = store_open(ls, LEADER_FLAGS);
    int port;
    armdb_repl_server *srv = serve(leader, NULL, &port);
    uint64_t seed = g_seed + 9, version = 1;
    for (long i = 0; i < scaled(8000); i++)
        write_one(leader, &seed, &version);
    /* a key every store has from here on, with a value the leader drops */
    uint64_t kk = NKEYS - 1;
    CHECK_OK(armdb_put(leader, &kk, 8, "the old value", 13));
    armdb *fdb = store_open(fs, ARMDB_REPLICA | ARMDB_CREATE);
    armdb_repl_follower *f = follow(fdb, fs, port, NULL);
    caught_up(f, armdb_last_gsn(leader), "resync, before");
    compare_stores(leader, fdb);
    armdb_repl_follower_close(f);
    uint64_t pos = max_shard_gsn(fdb);
    CHECK(pos > 0);
    int passes = compact_past(leader, pos);
    /* What the leader holds now: new keys, some of which it deletes again. */
    for (long i = 0; i < scaled(3000); i++) {
        write_one(leader, &seed, &version);
        if (i % 100 == 0) /* the key of the old value stays deleted */
            (void)armdb_delete(leader, &kk, 8);
    }
    (void)armdb_delete(leader, &kk, 8);
    CHECK(armdb_get(leader, &kk, 8, NULL, 0, &(size_t){0}) == ARMDB_NOTFOUND);
    /* Restarted: the leader tells it to start over; the old handle serves
     * its old state until the swap. */
    f = follow(fdb, fs, port, NULL);
    uint64_t t0 = now_ms();
    armdb_repl_follower_stat st;
    bool saw_resync = false;
    while ((st = fstats(f)).state != ARMDB_REPL_SWAP) {
        bool late = now_ms() - t0 > WAIT_MS;
        if (late) {
            print_fstats("resync", f);
            armdb_repl_server_stat ss = sstats(srv, NULL, 0, NULL);
            fprintf(stderr, "resync: leader: %" PRIu64 " failed, %" PRIu64 " refused; last: %s\n", ss.failed,
                    ss.refused, ss.last_error_msg);
        }
        CHECK(!late);
        CHECK(st.state != ARMDB_REPL_STOPPED && st.state != ARMDB_REPL_LIVE);
        saw_resync |= st.state == ARMDB_REPL_RESYNC;
        unsigned char buf[32];
        size_t len;
        CHECK_OK(armdb_get(fdb, &kk, 8, buf, sizeof buf, &len));
        CHECK(len == 13 && memcmp(buf, "the old value", 13) == 0);
        sleep_ms(1);
    }
    CHECK(st.resyncs >= 1);
    CHECK(sstats(srv, NULL, 0, NULL).resyncs >= 1);
    armdb *fresh = NULL;
    CHECK_OK(armdb_repl_follower_swap(f, fdb, &fresh));
    CHECK(fresh != NULL);
    fdb = fresh;
    CHECK(armdb_count(fdb) > 0); /* the copy caught up with data, not only with marks */
    struct stat sb;
    CHECK(stat(resync_dir, &sb) < 0 && errno == ENOENT);
    caught_up(f, armdb_last_gsn(leader), "resync, after");
    CHECK_RC(armdb_get(fdb, &kk, 8, NULL, 0, &(size_t){0}), ARMDB_NOTFOUND);
    compare_stores(leader, fdb);
    /* It goes on into the new store; which is a replica still. */
    for (long i = 0; i < scaled(2000); i++)
        write_one(leader, &seed, &version);
    caught_up(f, armdb_last_gsn(leader), "resync, after the swap");
    st = fstats(f);
    check_live(f, "resync, after the swap");
    compare_stores(leader, fdb);
    CHECK_RC(armdb_put(fdb, &kk, 8, "x", 1), ARMDB_READONLY);
    printf("resync: %d passes of deletes and compaction; %s seen, then swapped\n", passes,
           saw_resync ? "RESYNC" : "only SWAP");
    armdb_repl_follower_close(f);
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(fdb));
    /* The swapped-in store opens where it was, as a replica. */
    fdb = store_open(fs, ARMDB_REPLICA);
    compare_stores(leader, fdb);
    CHECK_OK(armdb_close(fdb));
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(resync_dir);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- kill -9 of a follower while it resyncs and swaps ---- */

#define BIG (2 * FILLER) /* keys that make a full copy take a while */

/* Put (or, del, delete) the BIG keys: n values of 300 bytes. */
static void big_keys(armdb *leader, uint64_t n, bool del)
{
    unsigned char v[300];
    for (uint64_t k = BIG; k < BIG + n; k++) {
        if (del) {
            CHECK_OK(armdb_delete(leader, &k, 8));
            continue;
        }
        t_fill(k, v, sizeof v);
        CHECK_OK(armdb_put(leader, &k, 8, v, sizeof v));
    }
}

static void test_kill_resync(void)
{
    char *dir = t_tmpdir("repl-killr");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    char *resync_dir = t_path(dir, "follower.resync");
    armdb *leader = store_open(ls, LEADER_FLAGS);
    int port;
    armdb_repl_server *srv = serve(leader, NULL, &port);
    uint64_t seed = g_seed + 14, version = 1, nbig = (uint64_t)scaled(20000);
    for (long i = 0; i < scaled(5000); i++)
        write_one(leader, &seed, &version);
    char sport[16], sgsn[24], sseed[24];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(sgsn, sizeof sgsn, "%" PRIu64, armdb_last_gsn(leader));
    char *first[] = {g_self, "follow", fs, sport, sgsn, NULL};
    wait_child_ok(spawn(first, -1, -1));
    char *args[] = {g_self, "follow", fs, sport, "0", NULL};
    char *self_kill[] = {g_self, "follow", fs, sport, "0", sseed, NULL};
    int cycles = 3, rounds = (int)scaled(4) + 1, kills = 0, copying = 0, passes = 0;
    uint64_t rs = g_seed + 16;
    long n = 0;
    for (int cy = 0; cy < cycles; cy++) {
        /* The leader can no longer serve the follower's position (the
         * BIG keys, older than the tombstones, would keep them: they go
         * too, and come back after). */
        armdb *fdb = store_open(fs, ARMDB_RDONLY);
        uint64_t pos = max_shard_gsn(fdb);
        CHECK_OK(armdb_close(fdb));
        if (cy)
            big_keys(leader, nbig, true);
        passes += compact_past(leader, pos);
        big_keys(leader, nbig, false);
        /* A run that kills itself at the swap: before it, during it, or
         * right after it (see child_follow); a resync is due for sure.
         * (No writes meanwhile: a copy is done at the leader's heartbeat,
         * which case "live" shows a steady writer can hold off.) */
        snprintf(sseed, sizeof sseed, "%" PRIu64, t_rand(&rs) % 1000 * 3 + (uint64_t)cy);
        pid_t pid = spawn(self_kill, -1, -1);
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            fprintf(stderr, "the child meant to die at the swap: status 0x%x\n", status);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        kills++;
        /* then runs killed at random, with a writer: opening, finishing
         * what that one left, following */
        struct writer w;
        writer_start(&w, leader, g_seed + 15 + (uint64_t)cy, -1, 10);
        for (int r = 0; r < rounds; r++, kills++) {
            pid = spawn(args, -1, -1);
            sleep_ms(t_rand(&rs) % 500);
            child_alive(pid);
            kill_child(pid);
            struct stat sb;
            copying += stat(resync_dir, &sb) == 0;
        }
        n += writer_stop(&w);
    }
    snprintf(sgsn, sizeof sgsn, "%" PRIu64, armdb_last_gsn(leader));
    char *fin[] = {g_self, "follow", fs, sport, sgsn, NULL};
    wait_child_ok(spawn(fin, -1, -1));
    struct stat sb;
    CHECK(stat(resync_dir, &sb) < 0 && errno == ENOENT);
    armdb_repl_server_stat st = sstats(srv, NULL, 0, NULL);
    CHECK(st.resyncs >= (uint64_t)cycles);
    armdb *fdb = store_open(fs, ARMDB_REPLICA);
    compare_stores(leader, fdb);
    printf("kill resync: %d cycles (%d passes of compaction), %d kills (%d with a resync dir), %ld writes, "
           "%" PRIu64 " resyncs sent\n",
           cycles, passes, kills, copying, n, st.resyncs);
    CHECK_OK(armdb_close(fdb));
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(resync_dir);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- f) refusals ---- */

#define SECRET "a shared secret of 32 bytes, ok!"
#define OTHER "another secret, also long enough"

/* The server's stats once it has counted a refusal after before: the
 * follower may see its refusal before the leader's thread counts its own. */
static armdb_repl_server_stat refused_after(armdb_repl_server *srv, uint64_t before)
{
    uint64_t t0 = now_ms();
    armdb_repl_server_stat ss;
    while ((ss = sstats(srv, NULL, 0, NULL)).refused <= before) {
        CHECK(now_ms() - t0 < WAIT_MS);
        sleep_ms(1);
    }
    return ss;
}

static void test_refusals(void)
{
    char *dir = t_tmpdir("repl-refuse");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower"), *gs = t_path(dir, "shape");
    armdb *leader = store_open(ls, LEADER_FLAGS);
    uint64_t seed = g_seed + 10, version = 1;
    for (int i = 0; i < 500; i++)
        write_one(leader, &seed, &version);
    armdb *fdb = store_open(fs, ARMDB_REPLICA | ARMDB_CREATE);
    int sport, pport;
    armdb_repl_server *sec = serve(leader, SECRET, &sport);
    armdb_repl_server *plain = serve(leader, NULL, &pport);
    armdb_repl_follower *f;
    armdb_repl_follower_stat st;
    uint64_t before;

    /* a wrong secret */
    before = sstats(sec, NULL, 0, NULL).refused;
    f = follow(fdb, fs, sport, OTHER);
    st = refused(f);
    CHECK(strstr(st.last_error_msg, "secret") != NULL);
    armdb_repl_follower_close(f);
    armdb_repl_server_stat ss = refused_after(sec, before);
    CHECK(ss.refused > before && ss.last_error < 0 && ss.last_error_msg[0] != '\0');
    CHECK(armdb_last_gsn(fdb) == 0 && armdb_count(fdb) == 0);

    /* a secret on the leader only, then on the follower only */
    before = ss.refused;
    f = follow(fdb, fs, sport, NULL);
    st = refused(f);
    CHECK(strstr(st.last_error_msg, "secret") != NULL);
    armdb_repl_follower_close(f);
    CHECK(refused_after(sec, before).refused > before);
    before = sstats(plain, NULL, 0, NULL).refused;
    f = follow(fdb, fs, pport, SECRET);
    st = refused(f);
    CHECK(strstr(st.last_error_msg, "secret") != NULL);
    armdb_repl_follower_close(f);
    CHECK(refused_after(plain, before).refused > before);

    /* a store the leader does not serve */
    armdb_options so;
    store_options(&so, ARMDB_REPLICA);
    before = sstats(plain, NULL, 0, NULL).refused;
    f = follow_as(fdb, fs, &so, pport, "nosuch", NULL);
    st = refused(f);
    CHECK(strstr(st.last_error_msg, "nosuch") != NULL);
    armdb_repl_follower_close(f);
    CHECK(refused_after(plain, before).refused > before);

    /* a store of another shape (more shards) */
    armdb_options go;
    store_options(&go, ARMDB_REPLICA | ARMDB_CREATE);
    go.shards = SHARDS + 1;
    armdb *gdb = NULL;
    CHECK_OK(armdb_open(gs, &go, &gdb));
    before = sstats(plain, NULL, 0, NULL).refused;
    f = follow_as(gdb, gs, &go, pport, "s", NULL);
    st = refused(f);
    CHECK_RC(st.last_error, ARMDB_MISMATCH);
    armdb_repl_follower_close(f);
    CHECK(refused_after(plain, before).refused > before);
    CHECK(armdb_last_gsn(gdb) == 0);
    CHECK_OK(armdb_close(gdb));

    /* with the right secret it follows, and the replica refuses writes */
    f = follow(fdb, fs, sport, SECRET);
    caught_up(f, armdb_last_gsn(leader), "secret");
    compare_stores(leader, fdb);
    uint64_t k = 1;
    CHECK_RC(armdb_put(fdb, &k, 8, "x", 1), ARMDB_READONLY);
    CHECK_RC(armdb_delete(fdb, &k, 8), ARMDB_READONLY);
    /* a store is followed by one follower at a time */
    armdb_repl_follower *f2 = NULL;
    armdb_repl_options fo;
    char faddr[32];
    repl_options(&fo, SECRET);
    snprintf(faddr, sizeof faddr, "127.0.0.1:%d", sport);
    CHECK_RC(armdb_repl_follow(fdb, fs, &so, faddr, "s", &fo, &f2), ARMDB_EXISTS);
    CHECK(f2 == NULL);
    armdb_repl_follower_close(f);

    /* misuse */
    armdb_repl_options ro;
    armdb_repl_server *srv = NULL;
    repl_options(&ro, NULL);
    CHECK_RC(armdb_repl_serve("0.0.0.0:0", &ro, &srv), ARMDB_INVAL);
    CHECK(srv == NULL);
    repl_options(&ro, "too short");
    CHECK_RC(armdb_repl_serve("127.0.0.1:0", &ro, &srv), ARMDB_INVAL);
    repl_options(&ro, NULL);
    CHECK_RC(armdb_repl_serve("127.0.0.1", &ro, &srv), ARMDB_INVAL);
    CHECK_RC(armdb_repl_server_add(plain, "s", leader), ARMDB_EXISTS);
    CHECK_RC(armdb_repl_server_add(plain, "bad/name", leader), ARMDB_INVAL);
    armdb_repl_follower *nf = NULL;
    CHECK_RC(armdb_repl_follow(leader, ls, &so, "127.0.0.1:1", "s", &ro, &nf), ARMDB_INVAL); /* no replica */
    CHECK(nf == NULL);

    /* meta bytes: fetched with the handshake and secret of a follower */
    unsigned char meta[3000], got[4000];
    size_t len = 0;
    char addr[32];
    t_fill(g_seed, meta, sizeof meta);
    repl_options(&ro, SECRET);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sport);
    CHECK_RC(armdb_repl_fetch_meta(addr, &ro, got, sizeof got, &len), ARMDB_NOTFOUND);
    CHECK_OK(armdb_repl_server_set_meta(sec, meta, sizeof meta));
    CHECK_OK(armdb_repl_fetch_meta(addr, &ro, got, sizeof got, &len));
    CHECK(len == sizeof meta && memcmp(got, meta, len) == 0);
    len = 0;
    CHECK_RC(armdb_repl_fetch_meta(addr, &ro, got, 100, &len), ARMDB_TOOBIG);
    CHECK(len == sizeof meta);
    CHECK_OK(armdb_repl_server_set_meta(sec, "v2", 2));
    CHECK_OK(armdb_repl_fetch_meta(addr, &ro, got, sizeof got, &len));
    CHECK(len == 2 && memcmp(got, "v2", 2) == 0);
    repl_options(&ro, OTHER);
    CHECK(armdb_repl_fetch_meta(addr, &ro, got, sizeof got, &len) < 0);
    repl_options(&ro, NULL);
    CHECK(armdb_repl_fetch_meta(addr, &ro, got, sizeof got, &len) < 0);

    armdb_repl_server_close(sec);
    armdb_repl_server_close(plain);
    CHECK_OK(armdb_close(fdb));
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(gs);
    free(ls);
    free(fs);
    free(dir);
}

/* ---- g) garbage from a raw client ---- */

/* Send bytes (then, with half_close, end the sending side), and read
 * until the leader ends the connection: true if it did (EOF or reset)
 * before the timeout. What the leader sent first is
 * kept in reply (up to cap bytes), its length in *rlen. */
static bool ended_by_leader(int port, const void *bytes, size_t len, bool half_close, unsigned char *reply,
                            size_t cap, size_t *rlen)
{
    int fd = connect_loopback(port);
    CHECK(fd >= 0);
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    (void)send(fd, bytes, len, MSG_NOSIGNAL); /* the leader may close before it has all */
    if (half_close)
        shutdown(fd, SHUT_WR);
    size_t got = 0;
    bool ended = false;
    for (;;) {
        unsigned char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            size_t take = got < cap ? cap - got : 0;
            take = take < (size_t)n ? take : (size_t)n;
            memcpy(reply + got, buf, take);
            got += take;
            continue;
        }
        ended = n == 0 || errno == ECONNRESET || errno == EPIPE;
        break;
    }
    close(fd);
    if (rlen)
        *rlen = got;
    return ended;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* A HELLO as the protocol lays it out (repl_proto.c), in the clear. */
static size_t hello(unsigned char *p, const char *name)
{
    memset(p, 0, 124);
    memcpy(p, "ARMREPL1", 8);
    put_le32(p + 8, 1);
    put_le32(p + 12, 0);
    t_fill(g_seed + 11, p + 16, 32);
    put_le32(p + 48, 8);
    put_le32(p + 52, 0);
    put_le32(p + 56, SHARDS);
    memcpy(p + 60, name, strlen(name));
    return 124;
}

static void test_garbage(void)
{
    char *dir = t_tmpdir("repl-garbage");
    char *ls = t_path(dir, "leader"), *fs = t_path(dir, "follower");
    armdb *leader = store_open(ls, LEADER_FLAGS);
    int port;
    armdb_repl_server *srv = serve(leader, NULL, &port);
    uint64_t seed = g_seed + 12, version = 1;
    for (int i = 0; i < 2000; i++)
        write_one(leader, &seed, &version);
    armdb *fdb = store_open(fs, ARMDB_REPLICA | ARMDB_CREATE);
    armdb_repl_follower *f = follow(fdb, fs, port, NULL);
    caught_up(f, armdb_last_gsn(leader), "garbage, before");
    armdb_repl_server_stat s0 = sstats(srv, NULL, 0, NULL);
    uint64_t connects = fstats(f).connects;
    CHECK(s0.followers == 1);

    /* random bytes */
    unsigned char junk[8192], reply[512];
    size_t rlen;
    for (int r = 0; r < 4; r++) {
        t_fill(g_seed + 13 + (uint64_t)r, junk, sizeof junk);
        CHECK(ended_by_leader(port, junk, r == 0 ? 200 : sizeof junk, false, reply, sizeof reply, &rlen));
    }
    /* a HELLO, then a frame longer than any may be */
    unsigned char msg[124 + 8];
    size_t n = hello(msg, "s");
    put_le32(msg + n, 0xfffffff0u);
    memcpy(msg + n + 4, "\x02xyz", 4);
    CHECK(ended_by_leader(port, msg, n + 8, false, reply, sizeof reply, &rlen));
    CHECK(rlen == 156 && memcmp(reply, "ARMREPL1", 8) == 0); /* its WELCOME, then the end */
    CHECK(t_le32(reply + 48) == 8 && t_le32(reply + 56) == SHARDS);
    /* a HELLO, then a frame of an unknown type */
    n = hello(msg, "s");
    put_le32(msg + n, 1);
    msg[n + 4] = 0x63;
    CHECK(ended_by_leader(port, msg, n + 5, false, reply, sizeof reply, &rlen));
    armdb_repl_server_stat s1 = sstats(srv, NULL, 0, NULL);
    CHECK(s1.accepted >= s0.accepted + 6);
    CHECK(s1.failed + s1.refused >= s0.failed + s0.refused + 6);
    CHECK(s1.last_error < 0 && s1.last_error_msg[0] != '\0');
    /* a HELLO cut short (the client closes) */
    CHECK(ended_by_leader(port, msg, 70, true, reply, sizeof reply, &rlen));
    CHECK(rlen == 0);
    /* The follower was not disturbed, and the leader serves it still. */
    for (int i = 0; i < 1000; i++)
        write_one(leader, &seed, &version);
    caught_up(f, armdb_last_gsn(leader), "garbage, after");
    check_live(f, "garbage");
    CHECK(fstats(f).connects == connects);
    CHECK(sstats(srv, NULL, 0, NULL).followers == 1);
    compare_stores(leader, fdb);
    printf("garbage: %" PRIu64 " failed, %" PRIu64 " refused; last: %s\n", s1.failed - s0.failed,
           s1.refused - s0.refused, s1.last_error_msg);
    armdb_repl_follower_close(f);
    armdb_repl_server_close(srv);
    CHECK_OK(armdb_close(fdb));
    CHECK_OK(armdb_close(leader));
    t_rmtree(dir);
    free(ls);
    free(fs);
    free(dir);
}

int main(int argc, char **argv)
{
    g_self = argv[0];
    g_scale = t_env_u64("ARMDB_TEST_SCALE", 100);
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "follow") == 0)
        return child_follow(argc, argv);
    if (argc == 6 && strcmp(argv[1], "lead") == 0)
        return child_lead(argv);
    g_seed = t_env_u64("ARMDB_SEED", (uint64_t)time(NULL));
    printf("repl: ARMDB_SEED=%" PRIu64 "\n", g_seed);
    fflush(stdout); /* before any fork */
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {{"garbage", test_garbage},
                 {"resync", test_resync},
                 {"kill_resync", test_kill_resync},
                 {"proxy", test_proxy_cuts},
                 {"kill_follower", test_kill_follower},
                 {"kill_leader", test_kill_leader},
                 {"refusals", test_refusals},
                 {"converge", test_converge},
                 {"live", test_live_under_load}};
    const char *only = getenv("ARMDB_REPL_ONLY"); /* one case, by name */
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!only || !*only || strcmp(only, tests[i].name) == 0)
            tests[i].fn();
    printf("repl: ok\n");
    return 0;
}
