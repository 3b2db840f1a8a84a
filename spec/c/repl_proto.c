/*
 * repl_proto.c - the replication wire protocol over an in-memory pipe
 * pair: handshakes (with and without a secret, wrong secret, one-sided
 * secret, version and shape mismatches), a round trip of every frame type,
 * batches at their limits, malformed frames of every kind, and tampered,
 * replayed and reordered ciphertext.
 *
 * The handshake blocks on both sides, so the leader runs in a thread; the
 * pipes never block a writer, so frames are exchanged in one thread.
 */
#include "repl.h"
#include "test.h"

#include <pthread.h>

/* ---- an in-memory pipe: writes append, reads wait for bytes or EOF ---- */
struct pipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned char *buf;
    size_t off, len, cap;
    bool closed;
};

struct end {
    struct pipe *in, *out;
};

static void pipe_init(struct pipe *p)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
}

static void pipe_free(struct pipe *p)
{
    free(p->buf);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

static void pipe_close(struct pipe *p)
{
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void pipe_put(struct pipe *p, const void *b, size_t n)
{
    pthread_mutex_lock(&p->mu);
    if (p->len + n > p->cap) {
        p->cap = (p->len + n) * 2;
        p->buf = realloc(p->buf, p->cap);
        CHECK(p->buf != NULL);
    }
    memcpy(p->buf + p->len, b, n);
    p->len += n;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Bytes written and not yet read: taken out of the pipe into *out. */
static size_t pipe_take(struct pipe *p, unsigned char **out)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->len - p->off;
    *out = malloc(n + 1);
    CHECK(*out != NULL);
    memcpy(*out, p->buf + p->off, n);
    p->off = p->len;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static ssize_t end_read(void *ctx, void *buf, size_t len)
{
    struct pipe *p = ((struct end *)ctx)->in;
    pthread_mutex_lock(&p->mu);
    while (p->off == p->len && !p->closed)
        pthread_cond_wait(&p->cv, &p->mu);
    size_t n = p->len - p->off;
    if (n > len)
        n = len;
    /* short reads on purpose: the reader must loop */
    if (n > 7)
        n = n / 2 + 1;
    memcpy(buf, p->buf + p->off, n);
    p->off += n;
    pthread_mutex_unlock(&p->mu);
    return (ssize_t)n;
}

static ssize_t end_write(void *ctx, const void *buf, size_t len)
{
    pipe_put(((struct end *)ctx)->out, buf, len);
    return (ssize_t)len;
}

/* ---- a pair of connections ---- */
static const unsigned char secret_a[32] = "replication test secret, number1";
static const unsigned char secret_b[32] = "replication test secret, number2";

struct pair {
    struct pipe f2l, l2f;
    struct end fe, le;
    struct repl_io fio, lio;
    struct repl_conn *f, *l;
    int frc, lrc;
    char lmsg[512];
};

static struct repl_opts opts(enum repl_role role, uint32_t klen, uint32_t vlen, uint32_t shards,
                             const unsigned char *secret)
{
    struct repl_opts o;
    memset(&o, 0, sizeof o);
    o.role = role;
    o.shape.key_len = klen;
    o.shape.value_len = vlen;
    o.shape.shards = shards;
    o.secret = secret;
    return o;
}

static void pair_new(struct pair *p, const struct repl_opts *fo, const struct repl_opts *lo)
{
    memset(p, 0, sizeof *p);
    pipe_init(&p->f2l);
    pipe_init(&p->l2f);
    p->fe.in = &p->l2f;
    p->fe.out = &p->f2l;
    p->le.in = &p->f2l;
    p->le.out = &p->l2f;
    p->fio = (struct repl_io){end_read, end_write, &p->fe};
    p->lio = (struct repl_io){end_read, end_write, &p->le};
    CHECK_OK(repl_conn_new(&p->fio, fo, &p->f));
    CHECK_OK(repl_conn_new(&p->lio, lo, &p->l));
}

static void *leader_main(void *arg)
{
    struct pair *p = arg;
    p->lrc = repl_accept(p->l);
    snprintf(p->lmsg, sizeof p->lmsg, "%s", armdb_errmsg());
    /* as a server would: a failed handshake closes the connection */
    if (p->lrc)
        pipe_close(&p->l2f);
    return NULL;
}

/* Both sides' handshakes; the return codes in p->frc, p->lrc. */
static void pair_shake(struct pair *p)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, leader_main, p) == 0);
    p->frc = repl_connect(p->f);
    if (p->frc)
        pipe_close(&p->f2l);
    CHECK(pthread_join(t, NULL) == 0);
}

static void pair_free(struct pair *p)
{
    repl_conn_free(p->f);
    repl_conn_free(p->l);
    pipe_free(&p->f2l);
    pipe_free(&p->l2f);
}

static void ready_pair(struct pair *p, uint32_t klen, uint32_t vlen, uint32_t shards,
                       const unsigned char *secret)
{
    struct repl_opts fo = opts(REPL_FOLLOWER, klen, vlen, shards, secret);
    struct repl_opts lo = opts(REPL_LEADER, klen, vlen, shards, secret);
    pair_new(p, &fo, &lo);
    pair_shake(p);
    CHECK_OK(p->frc);
    CHECK_OK(p->lrc);
}

static bool has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* ---- handshakes ---- */

static void test_handshake_plain(void)
{
    struct pair p;
    ready_pair(&p, 16, 0, 4, NULL);
    CHECK(!repl_conn_encrypted(p.f) && !repl_conn_encrypted(p.l));
    CHECK(repl_conn_peer_flags(p.l) == 0);
    struct repl_shape s = repl_conn_peer_shape(p.l);
    CHECK(s.key_len == 16 && s.value_len == 0 && s.shards == 4);
    /* in the clear: the payload is on the wire as is */
    CHECK_OK(repl_send_heartbeat(p.l, 77, 1234));
    unsigned char *w;
    size_t n = pipe_take(&p.l2f, &w);
    CHECK(n == 4 + 1 + 16 && t_le32(w) == 17 && w[4] == REPL_HEARTBEAT && t_le64(w + 5) == 77);
    pipe_put(&p.l2f, w, n);
    free(w);
    enum repl_type ty;
    const unsigned char *pl;
    size_t len;
    uint64_t g, ms;
    CHECK_OK(repl_frame_recv(p.f, &ty, &pl, &len));
    CHECK(ty == REPL_HEARTBEAT);
    CHECK_OK(repl_heartbeat_decode(pl, len, &g, &ms));
    CHECK(g == 77 && ms == 1234);
    pair_free(&p);
}

static void test_handshake_secret(void)
{
    struct pair p;
    ready_pair(&p, 8, 0, 2, secret_a);
    CHECK(repl_conn_encrypted(p.f) && repl_conn_encrypted(p.l));
    CHECK(repl_conn_peer_flags(p.l) == REPL_FLAG_SECRET && repl_conn_peer_flags(p.f) == REPL_FLAG_SECRET);
    /* sealed: the payload is not on the wire */
    CHECK_OK(repl_send_heartbeat(p.l, 0x1122334455667788ull & GSN_MASK, 99));
    unsigned char *w;
    size_t n = pipe_take(&p.l2f, &w);
    CHECK(n == 4 + 1 + 16 + REPL_ABYTES && t_le32(w) == 17 + REPL_ABYTES);
    CHECK(t_le64(w + 5) != (0x1122334455667788ull & GSN_MASK) &&
          t_le64(w + 6) != (0x1122334455667788ull & GSN_MASK));
    pipe_put(&p.l2f, w, n);
    free(w);
    enum repl_type ty;
    const unsigned char *pl;
    size_t len;
    CHECK_OK(repl_frame_recv(p.f, &ty, &pl, &len));
    CHECK(ty == REPL_HEARTBEAT && len == 16 && t_le64(pl) == (0x1122334455667788ull & GSN_MASK));
    /* the other direction has its own key */
    uint64_t gs[2] = {5, 6};
    CHECK_OK(repl_send_subscribe(p.f, gs, 2));
    CHECK_OK(repl_frame_recv(p.l, &ty, &pl, &len));
    CHECK(ty == REPL_SUBSCRIBE && len == 20);
    pair_free(&p);
}

static void expect_frames_refused(struct pair *p)
{
    enum repl_type ty;
    const unsigned char *pl;
    size_t len;
    CHECK_RC(repl_frame_recv(p->f, &ty, &pl, &len), ARMDB_INVAL);
    CHECK(has(armdb_errmsg(), "failed earlier"));
    CHECK_RC(repl_frame_recv(p->l, &ty, &pl, &len), ARMDB_INVAL);
    CHECK_RC(repl_send_heartbeat(p->l, 1, 1), ARMDB_INVAL);
    CHECK_RC(repl_send_mark(p->f, REPL_ACK, 0, 1), ARMDB_INVAL);
    CHECK_RC(repl_batch_begin(p->l, 0), ARMDB_INVAL);
}

static void test_handshake_wrong_secret(void)
{
    struct pair p;
    struct repl_opts fo = opts(REPL_FOLLOWER, 8, 0, 2, secret_a);
    struct repl_opts lo = opts(REPL_LEADER, 8, 0, 2, secret_b);
    pair_new(&p, &fo, &lo);
    pair_shake(&p);
    CHECK_RC(p.frc, ARMDB_BADKEY);
    CHECK(has(armdb_errmsg(), "leader's proof failed"));
    CHECK(p.lrc == ARMDB_BADKEY && has(p.lmsg, "follower's proof failed"));
    /* the secret is in no message */
    CHECK(!has(armdb_errmsg(), "replication test secret") && !has(p.lmsg, "replication test secret"));
    expect_frames_refused(&p);
    pair_free(&p);
}

static void test_handshake_one_secret(void)
{
    for (int side = 0; side < 2; side++) {
        struct pair p;
        struct repl_opts fo = opts(REPL_FOLLOWER, 8, 0, 2, side ? secret_a : NULL);
        struct repl_opts lo = opts(REPL_LEADER, 8, 0, 2, side ? NULL : secret_a);
        pair_new(&p, &fo, &lo);
        pair_shake(&p);
        CHECK_RC(p.frc, ARMDB_BADKEY);
        CHECK(has(armdb_errmsg(), side ? "the leader has none" : "leader requires a shared secret"));
        CHECK(p.lrc == ARMDB_BADKEY);
        CHECK(has(p.lmsg, side ? "follower requires a shared secret" : "the follower has none"));
        /* what the peer asked for is known */
        CHECK(repl_conn_peer_flags(p.l) == (side ? REPL_FLAG_SECRET : 0u));
        CHECK(repl_conn_peer_flags(p.f) == (side ? 0u : REPL_FLAG_SECRET));
        expect_frames_refused(&p);
        pair_free(&p);
    }
}

static void test_handshake_shape_mismatch(void)
{
    static const struct {
        uint32_t k, v, s;
        const char *field;
    } cases[] = {{16, 0, 2, "key_len differs: leader 8, follower 16"},
                 {8, 8, 2, "value_len differs: leader 0, follower 8"},
                 {8, 0, 3, "shards differ: leader 2, follower 3"}};
    for (int secret = 0; secret < 2; secret++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            struct pair p;
            struct repl_opts fo =
                opts(REPL_FOLLOWER, cases[i].k, cases[i].v, cases[i].s, secret ? secret_a : NULL);
            struct repl_opts lo = opts(REPL_LEADER, 8, 0, 2, secret ? secret_a : NULL);
            pair_new(&p, &fo, &lo);
            pair_shake(&p);
            CHECK_RC(p.frc, ARMDB_MISMATCH);
            CHECK(has(armdb_errmsg(), cases[i].field));
            CHECK(p.lrc == ARMDB_MISMATCH);
            CHECK(has(p.lmsg, cases[i].field));
            struct repl_shape s = repl_conn_peer_shape(p.l);
            CHECK(s.key_len == cases[i].k && s.value_len == cases[i].v && s.shards == cases[i].s);
            expect_frames_refused(&p);
            pair_free(&p);
        }
}

/* A greeting as a peer of another version (or with a bad magic, or
 * unknown flags) would send it. */
static void fake_hello(unsigned char *h, uint32_t version, uint32_t flags)
{
    memset(h, 0, REPL_HELLO_BYTES);
    memcpy(h, REPL_MAGIC, 8);
    put_le32(h + 8, version);
    put_le32(h + 12, flags);
    put_le32(h + 48, 8);
    put_le32(h + 52, 0);
    put_le32(h + 56, 2);
}

static void test_handshake_version_mismatch(void)
{
    /* a leader meets a follower of version 2 */
    struct pipe in, out;
    pipe_init(&in);
    pipe_init(&out);
    struct end e = {&in, &out};
    struct repl_io io = {end_read, end_write, &e};
    struct repl_opts lo = opts(REPL_LEADER, 8, 0, 2, NULL);
    struct repl_conn *l;
    unsigned char h[REPL_HELLO_BYTES];
    fake_hello(h, 2, 0);
    pipe_put(&in, h, sizeof h);
    CHECK_OK(repl_conn_new(&io, &lo, &l));
    CHECK_RC(repl_accept(l), ARMDB_MISMATCH);
    CHECK(has(armdb_errmsg(), "protocol version 2, the leader 1"));
    /* its WELCOME went out all the same, so the follower can say why */
    unsigned char *w;
    size_t n = pipe_take(&out, &w);
    CHECK(n == REPL_WELCOME_BYTES && memcmp(w, REPL_MAGIC, 8) == 0 && t_le32(w + 8) == REPL_VERSION);
    free(w);
    repl_conn_free(l);

    /* a follower meets a leader of version 0, then one with unknown flags,
     * then one with a bad magic */
    for (int k = 0; k < 3; k++) {
        struct repl_opts fo = opts(REPL_FOLLOWER, 8, 0, 2, NULL);
        struct repl_conn *f;
        unsigned char wl[REPL_WELCOME_BYTES];
        fake_hello(wl, k == 0 ? 0 : 1, k == 1 ? 6 : 0);
        if (k == 2)
            wl[3] ^= 1;
        memset(wl + REPL_HELLO_BYTES, 0, REPL_PROOF_BYTES);
        pipe_put(&in, wl, sizeof wl);
        CHECK_OK(repl_conn_new(&io, &fo, &f));
        CHECK_RC(repl_connect(f), k == 2 ? ARMDB_CORRUPT : ARMDB_MISMATCH);
        CHECK(has(armdb_errmsg(), k == 0   ? "protocol version 0, the follower 1"
                                  : k == 1 ? "unknown features (flags 0x6)"
                                           : "bad magic"));
        size_t m = pipe_take(&out, &w);
        CHECK(m == REPL_HELLO_BYTES);
        free(w);
        repl_conn_free(f);
    }
    /* the stream ends in the middle of a greeting */
    struct repl_opts fo = opts(REPL_FOLLOWER, 8, 0, 2, NULL);
    struct repl_conn *f;
    pipe_put(&in, REPL_MAGIC, 8);
    pipe_close(&in);
    CHECK_OK(repl_conn_new(&io, &fo, &f));
    CHECK_RC(repl_connect(f), -ECONNRESET);
    CHECK(has(armdb_errmsg(), "in the middle of its WELCOME"));
    repl_conn_free(f);
    pipe_free(&in);
    pipe_free(&out);
}

/* ---- frames ---- */

static void recv_ok(struct repl_conn *c, enum repl_type want, const unsigned char **pl, size_t *len)
{
    enum repl_type ty;
    CHECK_OK(repl_frame_recv(c, &ty, pl, len));
    CHECK(ty == want);
}

static void test_round_trip(const unsigned char *secret)
{
    struct pair p;
    ready_pair(&p, 12, 0, 3, secret);
    const unsigned char *pl;
    size_t len;
    uint32_t shard;
    uint64_t g, ms;

    uint64_t subs[3] = {0, 42, GSN_MASK}, got[ARMDB_SHARDS_MAX];
    uint32_t n;
    CHECK_OK(repl_send_subscribe(p.f, subs, 3));
    recv_ok(p.l, REPL_SUBSCRIBE, &pl, &len);
    CHECK_OK(repl_subscribe_decode(p.l, pl, len, got, &n));
    CHECK(n == 3 && got[0] == 0 && got[1] == 42 && got[2] == GSN_MASK);

    CHECK_OK(repl_send_mark(p.f, REPL_ACK, 2, 900));
    recv_ok(p.l, REPL_ACK, &pl, &len);
    CHECK_OK(repl_mark_decode(p.l, pl, len, &shard, &g));
    CHECK(shard == 2 && g == 900);

    CHECK_OK(repl_send_mark(p.l, REPL_CAUGHT_UP, 1, 901));
    recv_ok(p.f, REPL_CAUGHT_UP, &pl, &len);
    CHECK_OK(repl_mark_decode(p.f, pl, len, &shard, &g));
    CHECK(shard == 1 && g == 901);

    CHECK_OK(repl_send_mark(p.l, REPL_RESYNC, 0, 0));
    recv_ok(p.f, REPL_RESYNC, &pl, &len);
    CHECK_OK(repl_mark_decode(p.f, pl, len, &shard, &g));
    CHECK(shard == 0 && g == 0);

    CHECK_OK(repl_send_heartbeat(p.l, 5, 1700000000000ull));
    recv_ok(p.f, REPL_HEARTBEAT, &pl, &len);
    CHECK_OK(repl_heartbeat_decode(pl, len, &g, &ms));
    CHECK(g == 5 && ms == 1700000000000ull);

    int code;
    const char *msg;
    size_t mlen;
    CHECK_OK(repl_send_error(p.l, ARMDB_COMPACTED, "changes since 7 are gone"));
    recv_ok(p.f, REPL_ERROR, &pl, &len);
    CHECK_OK(repl_error_decode(pl, len, &code, &msg, &mlen));
    CHECK(code == ARMDB_COMPACTED && mlen == 24 && memcmp(msg, "changes since 7 are gone", 24) == 0);
    CHECK_OK(repl_send_error(p.f, -EIO, NULL));
    recv_ok(p.l, REPL_ERROR, &pl, &len);
    CHECK_OK(repl_error_decode(pl, len, &code, &msg, &mlen));
    CHECK(code == -EIO && mlen == 0);
    /* a long message is cut at the limit */
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_OK(repl_send_error(p.l, ARMDB_INVAL, big));
    recv_ok(p.f, REPL_ERROR, &pl, &len);
    CHECK_OK(repl_error_decode(pl, len, &code, &msg, &mlen));
    CHECK(mlen == REPL_ERRMSG_MAX);

    /* a batch: puts of several sizes and a delete */
    unsigned char key[12], val[300];
    CHECK_OK(repl_batch_begin(p.l, 2));
    for (uint32_t i = 0; i < 5; i++) {
        armdb_change ch = {0};
        t_fill(i, key, sizeof key);
        t_fill(100 + i, val, sizeof val);
        ch.key = key;
        ch.klen = 12;
        ch.gsn = 10 + 3 * i;
        ch.deleted = i == 3;
        ch.val = ch.deleted ? NULL : val;
        ch.vlen = ch.deleted ? 0 : i * 70;
        CHECK_OK(repl_batch_add(p.l, &ch));
    }
    CHECK(repl_batch_count(p.l) == 5);
    CHECK_OK(repl_batch_send(p.l));
    recv_ok(p.f, REPL_BATCH, &pl, &len);
    struct repl_batch_iter it;
    armdb_change ch;
    CHECK_OK(repl_batch_open(p.f, pl, len, &it));
    CHECK(it.shard == 2 && it.count == 5);
    for (uint32_t i = 0; i < 5; i++) {
        CHECK_OK(repl_batch_next(&it, &ch));
        t_fill(i, key, sizeof key);
        t_fill(100 + i, val, sizeof val);
        CHECK(ch.gsn == 10 + 3 * i && ch.klen == 12 && memcmp(ch.key, key, 12) == 0);
        CHECK(ch.deleted == (i == 3));
        if (i == 3)
            CHECK(ch.val == NULL && ch.vlen == 0);
        else
            CHECK(ch.vlen == i * 70 && memcmp(ch.val, val, ch.vlen) == 0);
    }
    CHECK_RC(repl_batch_next(&it, &ch), ARMDB_NOTFOUND);
    pair_free(&p);
}

static void test_frame_misuse(void)
{
    struct pair p;
    ready_pair(&p, 8, 4, 2, NULL);
    unsigned char key[8] = "abcdefgh", v[5] = "wxyz";
    armdb_change ch = {.key = key, .klen = 8, .val = v, .vlen = 4, .gsn = 5};
    uint64_t subs[2] = {1, 2};
    CHECK_RC(repl_send_subscribe(p.f, subs, 1), ARMDB_INVAL);
    subs[1] = GSN_MASK + 1;
    CHECK_RC(repl_send_subscribe(p.f, subs, 2), ARMDB_INVAL);
    CHECK_RC(repl_send_mark(p.l, REPL_CAUGHT_UP, 2, 1), ARMDB_INVAL);
    CHECK_RC(repl_send_mark(p.l, REPL_HEARTBEAT, 0, 1), ARMDB_INVAL);
    CHECK_RC(repl_send_error(p.l, 0, "no"), ARMDB_INVAL);
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL); /* not begun */
    CHECK_RC(repl_batch_send(p.l), ARMDB_INVAL);
    CHECK_RC(repl_batch_begin(p.l, 2), ARMDB_INVAL);
    CHECK_OK(repl_batch_begin(p.l, 1));
    CHECK_RC(repl_batch_send(p.l), ARMDB_INVAL); /* empty */
    ch.klen = 7;
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL);
    ch.klen = 8;
    ch.vlen = 5; /* fixed-value store of 4 */
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL);
    ch.vlen = 4;
    ch.gsn = 0;
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL);
    ch.gsn = GSN_MASK + 1;
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL);
    ch.gsn = 5;
    ch.deleted = 1;
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL); /* a delete with a value */
    ch.deleted = 0;
    CHECK_OK(repl_batch_add(p.l, &ch));
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL); /* same GSN */
    ch.gsn = 4;
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_INVAL); /* lower GSN */
    /* no other frame while a batch is built */
    CHECK_RC(repl_send_heartbeat(p.l, 1, 1), ARMDB_INVAL);
    CHECK_OK(repl_batch_send(p.l));
    CHECK_OK(repl_send_heartbeat(p.l, 1, 1));
    /* none of these failures killed the connection */
    const unsigned char *pl;
    size_t len;
    recv_ok(p.f, REPL_BATCH, &pl, &len);
    recv_ok(p.f, REPL_HEARTBEAT, &pl, &len);
    /* the handshake runs once, on its own side */
    CHECK_RC(repl_connect(p.f), ARMDB_INVAL);
    CHECK_RC(repl_accept(p.f), ARMDB_INVAL);
    pair_free(&p);
    /* bad options */
    struct repl_io io = {end_read, end_write, NULL};
    struct repl_conn *c = NULL;
    struct repl_opts o = opts(REPL_LEADER, 0, 0, 1, NULL);
    CHECK_RC(repl_conn_new(&io, &o, &c), ARMDB_INVAL);
    o = opts(REPL_LEADER, 8, 0, 257, NULL);
    CHECK_RC(repl_conn_new(&io, &o, &c), ARMDB_INVAL);
    o = opts(REPL_LEADER, 8, 4097, 1, NULL);
    CHECK_RC(repl_conn_new(&io, &o, &c), ARMDB_INVAL);
    o = opts(0, 8, 0, 1, NULL);
    CHECK_RC(repl_conn_new(&io, &o, &c), ARMDB_INVAL);
    o = opts(REPL_LEADER, 8, 0, 1, NULL);
    o.batch_bytes = REPL_BODY_MAX;
    CHECK_RC(repl_conn_new(&io, &o, &c), ARMDB_INVAL);
    CHECK(c == NULL);
}

/* Fill a batch with entries of vlen bytes until it is full; the count. */
static uint32_t fill_batch(struct repl_conn *c, uint32_t klen, size_t vlen, uint64_t *gsn,
                           unsigned char *vbuf)
{
    unsigned char key[ARMDB_KEY_MAX];
    uint32_t n = 0;
    CHECK_OK(repl_batch_begin(c, 0));
    for (;;) {
        armdb_change ch = {.key = key, .klen = klen, .val = vbuf, .vlen = vlen, .gsn = ++*gsn};
        t_fill(*gsn, key, klen);
        int rc = repl_batch_add(c, &ch);
        if (rc == ARMDB_FULL) {
            --*gsn;
            return n;
        }
        CHECK_OK(rc);
        n++;
    }
}

static uint32_t recv_batch_count(struct repl_conn *c, size_t vlen)
{
    const unsigned char *pl;
    size_t len;
    struct repl_batch_iter it;
    armdb_change ch;
    recv_ok(c, REPL_BATCH, &pl, &len);
    CHECK_OK(repl_batch_open(c, pl, len, &it));
    uint32_t n = 0;
    while (repl_batch_next(&it, &ch) == 0) {
        CHECK(ch.vlen == vlen);
        n++;
    }
    CHECK(n == it.count);
    return n;
}

static void test_batch_limits(const unsigned char *secret)
{
    struct pair p;
    ready_pair(&p, 8, 0, 1, secret);
    unsigned char *v = malloc(REPL_VALUE_MAX(1) + 2);
    CHECK(v != NULL);
    memset(v, 0xab, REPL_VALUE_MAX(1) + 2);
    uint64_t gsn = 0;
    /* small entries: the entry count limit */
    CHECK(fill_batch(p.l, 8, 1, &gsn, v) == REPL_BATCH_ENTRIES);
    CHECK_OK(repl_batch_send(p.l));
    CHECK(recv_batch_count(p.f, 1) == REPL_BATCH_ENTRIES);
    /* 1000-byte values: the byte limit */
    uint32_t want = REPL_BATCH_BYTES / (REPL_ENTRY_HDR + 8 + 1000);
    CHECK(fill_batch(p.l, 8, 1000, &gsn, v) == want);
    CHECK_OK(repl_batch_send(p.l));
    CHECK(recv_batch_count(p.f, 1000) == want);
    /* a value over the byte limit goes alone */
    CHECK(fill_batch(p.l, 8, REPL_BATCH_BYTES, &gsn, v) == 1);
    CHECK_OK(repl_batch_send(p.l));
    CHECK(recv_batch_count(p.f, REPL_BATCH_BYTES) == 1);
    /* the largest value: a frame of exactly the largest size */
    CHECK(fill_batch(p.l, 8, REPL_VALUE_MAX(8), &gsn, v) == 1);
    CHECK_OK(repl_batch_send(p.l));
    CHECK(recv_batch_count(p.f, REPL_VALUE_MAX(8)) == 1);
    /* one byte more fits no batch */
    CHECK_OK(repl_batch_begin(p.l, 0));
    unsigned char key[8] = {0};
    armdb_change ch = {.key = key, .klen = 8, .val = v, .vlen = REPL_VALUE_MAX(8) + 1, .gsn = ++gsn};
    CHECK_RC(repl_batch_add(p.l, &ch), ARMDB_TOOBIG);
    CHECK(has(armdb_errmsg(), "over the limit"));
    ch.vlen = 3;
    CHECK_OK(repl_batch_add(p.l, &ch));
    CHECK_OK(repl_batch_send(p.l));
    CHECK(recv_batch_count(p.f, 3) == 1);
    pair_free(&p);

    /* configured limits */
    struct repl_opts fo = opts(REPL_FOLLOWER, 8, 0, 1, secret);
    struct repl_opts lo = opts(REPL_LEADER, 8, 0, 1, secret);
    lo.batch_entries = 3;
    lo.batch_bytes = 100;
    pair_new(&p, &fo, &lo);
    pair_shake(&p);
    CHECK_OK(p.frc);
    CHECK_OK(p.lrc);
    CHECK(fill_batch(p.l, 8, 1, &gsn, v) == 3);
    CHECK_OK(repl_batch_send(p.l));
    CHECK(recv_batch_count(p.f, 1) == 3);
    CHECK(fill_batch(p.l, 8, 30, &gsn, v) == 2); /* 50 bytes each */
    CHECK_OK(repl_batch_send(p.l));
    CHECK(recv_batch_count(p.f, 30) == 2);
    pair_free(&p);
    free(v);
}

/* ---- malformed input ---- */

/* A follower (8-byte keys, variable values, 2 shards) that receives one
 * plain frame of len (as stated) and body; the code of the receive, and
 * of repl_batch_open for a BATCH. */
static int recv_raw(uint32_t stated, const unsigned char *body, size_t blen, uint32_t value_len)
{
    struct pair p;
    ready_pair(&p, 8, value_len, 2, NULL);
    unsigned char lb[4];
    put_le32(lb, stated);
    pipe_put(&p.l2f, lb, 4);
    pipe_put(&p.l2f, body, blen);
    pipe_close(&p.l2f);
    enum repl_type ty;
    const unsigned char *pl;
    size_t len;
    int rc = repl_frame_recv(p.f, &ty, &pl, &len);
    if (rc == 0 && ty == REPL_BATCH) {
        struct repl_batch_iter it;
        rc = repl_batch_open(p.f, pl, len, &it);
        armdb_change ch;
        if (rc)
            CHECK_RC(repl_batch_next(&it, &ch), ARMDB_NOTFOUND); /* nothing handed out */
    } else if (rc == 0 && ty == REPL_ERROR) {
        int code;
        const char *m;
        size_t ml;
        rc = repl_error_decode(pl, len, &code, &m, &ml);
    } else if (rc == 0 && ty == REPL_HEARTBEAT) {
        uint64_t a, b;
        rc = repl_heartbeat_decode(pl, len, &a, &b);
    } else if (rc == 0) {
        uint32_t s;
        uint64_t g;
        rc = repl_mark_decode(p.f, pl, len, &s, &g);
    }
    pair_free(&p);
    return rc;
}

static size_t put_entry(unsigned char *p, uint64_t gsn, uint32_t vlen, const char *key8)
{
    put_le64(p, gsn);
    put_le32(p + 8, vlen);
    memcpy(p + 12, key8, 8);
    memset(p + 20, 'v', vlen);
    return 20 + vlen;
}

static void expect_corrupt(int rc, const char *what)
{
    if (rc != ARMDB_CORRUPT) {
        fprintf(stderr, "malformed input accepted or misnamed: %d (%s)\n", rc, armdb_errmsg());
        exit(1);
    }
    if (!has(armdb_errmsg(), what)) {
        fprintf(stderr, "expected \"%s\" in \"%s\"\n", what, armdb_errmsg());
        exit(1);
    }
}

static void test_malformed(void)
{
    unsigned char b[256];
    size_t n;
    memset(b, 0, sizeof b);
    /* lengths */
    expect_corrupt(recv_raw(0, b, 0, 0), "frame length 0 out of range");
    expect_corrupt(recv_raw(REPL_BODY_MAX + 1, b, 0, 0), "out of range");
    expect_corrupt(recv_raw(0xffffffffu, b, 0, 0), "out of range");
    CHECK_RC(recv_raw(10, (const unsigned char *)"\x05", 1, 0), -ECONNRESET); /* truncated body */
    CHECK(has(armdb_errmsg(), "in the middle of a frame"));
    CHECK_RC(recv_raw(1, b, 0, 0), -ECONNRESET);
    /* types */
    b[0] = 0;
    expect_corrupt(recv_raw(1, b, 1, 0), "unknown type 0");
    b[0] = 200;
    expect_corrupt(recv_raw(1, b, 1, 0), "unknown type 200");
    b[0] = REPL_SUBSCRIBE;
    memset(b + 1, 0, 20);
    put_le32(b + 1, 2);
    expect_corrupt(recv_raw(21, b, 21, 0), "only the follower sends");
    b[0] = REPL_ACK;
    expect_corrupt(recv_raw(13, b, 13, 0), "only the follower sends");
    /* fixed sizes */
    memset(b, 0, sizeof b);
    b[0] = REPL_CAUGHT_UP;
    expect_corrupt(recv_raw(12, b, 12, 0), "payload of 11 bytes");
    expect_corrupt(recv_raw(14, b, 14, 0), "payload of 13 bytes");
    b[0] = REPL_HEARTBEAT;
    expect_corrupt(recv_raw(1, b, 1, 0), "HEARTBEAT frame with a payload of 0");
    put_le64(b + 1, GSN_MASK + 1);
    expect_corrupt(recv_raw(17, b, 17, 0), "HEARTBEAT GSN past");
    b[0] = REPL_RESYNC;
    put_le32(b + 1, 2); /* shard 2 of 2 */
    put_le64(b + 5, 0);
    expect_corrupt(recv_raw(13, b, 13, 0), "shard 2 of 2");
    put_le32(b + 1, 1);
    put_le64(b + 5, 1ull << 63);
    expect_corrupt(recv_raw(13, b, 13, 0), "GSN past");
    b[0] = REPL_ERROR;
    put_le32(b + 1, 5);
    expect_corrupt(recv_raw(5, b, 5, 0), "ERROR with code 5");
    expect_corrupt(recv_raw(4, b, 4, 0), "ERROR frame with a payload of 3");
    put_le32(b + 1, (uint32_t)ARMDB_INVAL);
    memcpy(b + 5, "a\0b", 3);
    expect_corrupt(recv_raw(8, b, 8, 0), "NUL byte");
    {
        unsigned char big[1 + 4 + REPL_ERRMSG_MAX + 1];
        memset(big, 'e', sizeof big);
        big[0] = REPL_ERROR;
        put_le32(big + 1, (uint32_t)ARMDB_INVAL);
        expect_corrupt(recv_raw(sizeof big, big, sizeof big, 0), "ERROR frame with a payload");
    }
    /* batches */
    memset(b, 0, sizeof b);
    b[0] = REPL_BATCH;
    expect_corrupt(recv_raw(8, b, 8, 0), "BATCH frame with a payload of 7");
    put_le32(b + 1, 0);
    put_le32(b + 5, 0);
    expect_corrupt(recv_raw(9, b, 9, 0), "BATCH of no entries");
    put_le32(b + 1, 2);
    put_le32(b + 5, 1);
    n = 9 + put_entry(b + 9, 1, 3, "key00001");
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "BATCH for shard 2 of 2");
    put_le32(b + 1, 1);
    CHECK_OK(recv_raw((uint32_t)n, b, n, 0)); /* the valid one */
    put_le32(b + 5, 2);                       /* count says 2, one is there */
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "entry 1 of 2 runs past the frame");
    put_le32(b + 5, 1);
    expect_corrupt(recv_raw((uint32_t)n + 1, b, n + 1, 0), "1 bytes left over");
    put_le32(b + 9 + 8, 4); /* vlen 4, 3 bytes there */
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "value of 4 bytes runs past");
    put_le32(b + 9 + 8, 0xffffffffu);
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "runs past");
    put_le32(b + 9 + 8, 3);
    put_le64(b + 9, REPL_GSN_DELETE | 1); /* a delete with a value */
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "delete with a value of 3");
    put_le64(b + 9, 0);
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "GSN 0 out of order");
    put_le64(b + 9, GSN_BATCH | 5); /* reserved bits */
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "out of order or range");
    put_le64(b + 9, 5);
    expect_corrupt(recv_raw((uint32_t)n, b, n, 4), "put with a value of 3 bytes"); /* fixed 4 */
    /* GSNs must rise */
    put_le32(b + 5, 2);
    n = 9 + put_entry(b + 9, 7, 1, "key00001");
    n += put_entry(b + n, 7, 1, "key00002");
    expect_corrupt(recv_raw((uint32_t)n, b, n, 0), "entry 1: GSN 7 out of order");
    put_le64(b + 9 + 21, 8);
    CHECK_OK(recv_raw((uint32_t)n, b, n, 0));
    /* a short entry header at the end */
    expect_corrupt(recv_raw((uint32_t)n - 11, b, n - 11, 0), "entry 1 of 2 runs past the frame");

    /* SUBSCRIBE at the leader */
    struct pair p;
    ready_pair(&p, 8, 0, 2, NULL);
    uint64_t gs[ARMDB_SHARDS_MAX];
    uint32_t cnt;
    unsigned char s[32];
    put_le32(s, 3);
    expect_corrupt(repl_subscribe_decode(p.l, s, 28, gs, &cnt), "SUBSCRIBE for 3 shards, the store has 2");
    put_le32(s, 2);
    expect_corrupt(repl_subscribe_decode(p.l, s, 19, gs, &cnt), "SUBSCRIBE of 2 shards in 19 bytes");
    expect_corrupt(repl_subscribe_decode(p.l, s, 3, gs, &cnt), "SUBSCRIBE of 3 bytes");
    put_le64(s + 4, 1);
    put_le64(s + 12, GSN_MASK + 1);
    expect_corrupt(repl_subscribe_decode(p.l, s, 20, gs, &cnt), "GSN of shard 1 past");
    /* a follower-side frame sent to the leader */
    unsigned char hb[21] = {0};
    put_le32(hb, 17);
    hb[4] = REPL_HEARTBEAT;
    pipe_put(&p.f2l, hb, sizeof hb);
    enum repl_type ty;
    const unsigned char *pl;
    size_t len;
    expect_corrupt(repl_frame_recv(p.l, &ty, &pl, &len), "only the leader sends");
    CHECK_RC(repl_frame_recv(p.l, &ty, &pl, &len), ARMDB_INVAL); /* dead since */
    pair_free(&p);
}

/* ---- ciphertext ---- */

static void test_tamper(void)
{
    /* a flipped byte anywhere in a sealed frame is caught */
    for (size_t at = 4; at < 4 + 1 + 12 + REPL_ABYTES; at++) {
        struct pair p;
        ready_pair(&p, 8, 0, 2, secret_a);
        CHECK_OK(repl_send_mark(p.l, REPL_CAUGHT_UP, 1, 77));
        unsigned char *w;
        size_t n = pipe_take(&p.l2f, &w);
        CHECK(n == 4 + 1 + 12 + REPL_ABYTES);
        w[at] ^= 0x20;
        pipe_put(&p.l2f, w, n);
        free(w);
        enum repl_type ty;
        const unsigned char *pl;
        size_t len;
        expect_corrupt(repl_frame_recv(p.f, &ty, &pl, &len), "failed to decrypt");
        /* and nothing after it is accepted, even a good frame */
        CHECK_OK(repl_send_mark(p.l, REPL_CAUGHT_UP, 1, 78));
        CHECK_RC(repl_frame_recv(p.f, &ty, &pl, &len), ARMDB_INVAL);
        pair_free(&p);
    }
    /* a length below the overhead */
    struct pair p;
    ready_pair(&p, 8, 0, 2, secret_a);
    unsigned char lb[4 + REPL_ABYTES] = {0};
    put_le32(lb, REPL_ABYTES);
    pipe_put(&p.l2f, lb, sizeof lb);
    enum repl_type ty;
    const unsigned char *pl;
    size_t len;
    expect_corrupt(repl_frame_recv(p.f, &ty, &pl, &len), "frame length 17 out of range [18,");
    pair_free(&p);
    /* a frame in the clear where a sealed one is due */
    ready_pair(&p, 8, 0, 2, secret_a);
    unsigned char clear[4 + 1 + 12 + REPL_ABYTES] = {0};
    put_le32(clear, 1 + 12 + REPL_ABYTES);
    clear[4] = REPL_CAUGHT_UP;
    pipe_put(&p.l2f, clear, sizeof clear);
    expect_corrupt(repl_frame_recv(p.f, &ty, &pl, &len), "failed to decrypt");
    pair_free(&p);
}

static void test_replay_reorder(void)
{
    for (int mode = 0; mode < 3; mode++) {
        struct pair p;
        ready_pair(&p, 8, 0, 2, secret_a);
        unsigned char *a, *b;
        CHECK_OK(repl_send_mark(p.l, REPL_CAUGHT_UP, 0, 1));
        size_t na = pipe_take(&p.l2f, &a);
        CHECK_OK(repl_send_mark(p.l, REPL_CAUGHT_UP, 0, 2));
        size_t nb = pipe_take(&p.l2f, &b);
        enum repl_type ty;
        const unsigned char *pl;
        size_t len;
        uint32_t s;
        uint64_t g;
        if (mode == 0) { /* A, A: replayed */
            pipe_put(&p.l2f, a, na);
            pipe_put(&p.l2f, a, na);
        } else if (mode == 1) { /* B, A: reordered */
            pipe_put(&p.l2f, b, nb);
            pipe_put(&p.l2f, a, na);
        } else { /* A, B, A: replayed later */
            pipe_put(&p.l2f, a, na);
            pipe_put(&p.l2f, b, nb);
            pipe_put(&p.l2f, a, na);
        }
        if (mode != 1) {
            recv_ok(p.f, REPL_CAUGHT_UP, &pl, &len);
            CHECK_OK(repl_mark_decode(p.f, pl, len, &s, &g));
            CHECK(g == 1);
        }
        if (mode == 2) {
            recv_ok(p.f, REPL_CAUGHT_UP, &pl, &len);
            CHECK_OK(repl_mark_decode(p.f, pl, len, &s, &g));
            CHECK(g == 2);
        }
        expect_corrupt(repl_frame_recv(p.f, &ty, &pl, &len), "failed to decrypt");
        free(a);
        free(b);
        pair_free(&p);
    }
    /* a frame of one direction sent back the other way */
    struct pair p;
    ready_pair(&p, 8, 0, 2, secret_a);
    CHECK_OK(repl_send_mark(p.f, REPL_ACK, 0, 1));
    unsigned char *a;
    size_t na = pipe_take(&p.f2l, &a);
    pipe_put(&p.l2f, a, na);
    free(a);
    enum repl_type ty;
    const unsigned char *pl;
    size_t len;
    expect_corrupt(repl_frame_recv(p.f, &ty, &pl, &len), "failed to decrypt");
    pair_free(&p);
    /* the stream of another connection with the same secret */
    struct pair q;
    ready_pair(&p, 8, 0, 2, secret_a);
    ready_pair(&q, 8, 0, 2, secret_a);
    CHECK_OK(repl_send_mark(q.l, REPL_CAUGHT_UP, 0, 1));
    na = pipe_take(&q.l2f, &a);
    pipe_put(&p.l2f, a, na);
    free(a);
    expect_corrupt(repl_frame_recv(p.f, &ty, &pl, &len), "failed to decrypt");
    pair_free(&p);
    pair_free(&q);
}

/* Both directions at once, each in its own thread, as the leader's sender
 * and acknowledgement reader will use a connection: the streams share no
 * state. */
#define DUPLEX_BATCHES 300u
struct duplex {
    struct pair *p;
    uint64_t acked;
};

static void *duplex_send(void *arg)
{
    struct pair *p = arg;
    unsigned char key[8], val[64];
    uint64_t gsn = 0;
    for (uint32_t b = 0; b < DUPLEX_BATCHES; b++) {
        CHECK_OK(repl_batch_begin(p->l, b % 2));
        for (uint32_t i = 0; i < 1 + b % 7; i++) {
            gsn++;
            armdb_change ch = {.key = key, .klen = 8, .val = val, .vlen = (gsn * 13) % 64, .gsn = gsn};
            t_fill(gsn, key, 8);
            t_fill(~gsn, val, sizeof val);
            CHECK_OK(repl_batch_add(p->l, &ch));
        }
        CHECK_OK(repl_batch_send(p->l));
        CHECK_OK(repl_send_heartbeat(p->l, gsn, b));
    }
    return NULL;
}

static void *duplex_acks(void *arg)
{
    struct duplex *d = arg;
    const unsigned char *pl;
    size_t len;
    uint32_t shard;
    uint64_t g;
    for (uint32_t b = 0; b < DUPLEX_BATCHES; b++) {
        recv_ok(d->p->l, REPL_ACK, &pl, &len);
        CHECK_OK(repl_mark_decode(d->p->l, pl, len, &shard, &g));
        CHECK(shard == b % 2 && g > d->acked);
        d->acked = g;
    }
    return NULL;
}

static void test_duplex(void)
{
    struct pair p;
    ready_pair(&p, 8, 0, 2, secret_a);
    struct duplex d = {&p, 0};
    pthread_t ts, ta;
    CHECK(pthread_create(&ts, NULL, duplex_send, &p) == 0);
    CHECK(pthread_create(&ta, NULL, duplex_acks, &d) == 0);
    uint64_t last = 0;
    unsigned char key[8], val[64];
    for (uint32_t b = 0; b < DUPLEX_BATCHES; b++) {
        const unsigned char *pl;
        size_t len;
        struct repl_batch_iter it;
        armdb_change ch;
        recv_ok(p.f, REPL_BATCH, &pl, &len);
        CHECK_OK(repl_batch_open(p.f, pl, len, &it));
        CHECK(it.shard == b % 2 && it.count == 1 + b % 7);
        while (repl_batch_next(&it, &ch) == 0) {
            CHECK(ch.gsn == last + 1 && ch.vlen == (ch.gsn * 13) % 64);
            t_fill(ch.gsn, key, 8);
            t_fill(~ch.gsn, val, sizeof val);
            CHECK(memcmp(ch.key, key, 8) == 0 && memcmp(ch.val, val, ch.vlen) == 0);
            last = ch.gsn;
        }
        CHECK_OK(repl_send_mark(p.f, REPL_ACK, it.shard, last));
        uint64_t hg, ms;
        recv_ok(p.f, REPL_HEARTBEAT, &pl, &len);
        CHECK_OK(repl_heartbeat_decode(pl, len, &hg, &ms));
        CHECK(hg == last && ms == b);
    }
    CHECK(pthread_join(ts, NULL) == 0);
    CHECK(pthread_join(ta, NULL) == 0);
    CHECK(d.acked == last);
    pair_free(&p);
}

/* ---- stores named in HELLO, and the meta connection ---- */

static int lookup_two(void *ctx, const char *name, struct repl_shape *shape)
{
    (void)ctx;
    if (strcmp(name, "users") == 0) {
        *shape = (struct repl_shape){16, 0, 4};
        return 0;
    }
    if (strcmp(name, "tags") == 0) {
        *shape = (struct repl_shape){8, 8, 2};
        return 0;
    }
    return name[0] ? ARMDB_NOTFOUND : 0;
}

static void test_named_stores(void)
{
    for (int secret = 0; secret < 2; secret++) {
        const unsigned char *sec = secret ? secret_a : NULL;
        /* the leader serves the shape of the store named */
        struct repl_opts lo = opts(REPL_LEADER, 0, 0, 0, sec);
        lo.lookup = lookup_two;
        struct repl_opts fo = opts(REPL_FOLLOWER, 8, 8, 2, sec);
        fo.name = "tags";
        struct pair p;
        pair_new(&p, &fo, &lo);
        pair_shake(&p);
        CHECK_OK(p.frc);
        CHECK_OK(p.lrc);
        CHECK(strcmp(repl_conn_name(p.l), "tags") == 0);
        CHECK_OK(repl_send_mark(p.l, REPL_CAUGHT_UP, 1, 9));
        enum repl_type type;
        const unsigned char *pl;
        size_t len;
        uint32_t shard;
        uint64_t gsn;
        CHECK_OK(repl_frame_recv(p.f, &type, &pl, &len));
        CHECK(type == REPL_CAUGHT_UP);
        CHECK_OK(repl_mark_decode(p.f, pl, len, &shard, &gsn));
        CHECK(shard == 1 && gsn == 9);
        pair_free(&p);

        /* a store of another shape under that name */
        fo = opts(REPL_FOLLOWER, 16, 0, 2, sec);
        fo.name = "users";
        pair_new(&p, &fo, &lo);
        pair_shake(&p);
        CHECK_RC(p.frc, ARMDB_MISMATCH);
        CHECK(has(armdb_errmsg(), "shards differ: leader 4, follower 2"));
        CHECK_RC(p.lrc, ARMDB_MISMATCH);
        pair_free(&p);

        /* a name the leader does not serve: both sides say so */
        fo.name = "nope";
        pair_new(&p, &fo, &lo);
        pair_shake(&p);
        CHECK_RC(p.frc, ARMDB_NOTFOUND);
        CHECK(has(armdb_errmsg(), "serves no store named \"nope\""));
        CHECK_RC(p.lrc, ARMDB_NOTFOUND);
        CHECK(has(p.lmsg, "\"nope\", which is not served"));
        pair_free(&p);

        /* the meta connection: no name, no shape, then META */
        fo = opts(REPL_FOLLOWER, 0, 0, 0, sec);
        pair_new(&p, &fo, &lo);
        pair_shake(&p);
        CHECK_OK(p.frc);
        CHECK_OK(p.lrc);
        CHECK(repl_conn_name(p.l)[0] == 0);
        CHECK_OK(repl_frame_send(p.l, REPL_META, "{\"c\":1}", 7));
        CHECK_OK(repl_frame_recv(p.f, &type, &pl, &len));
        CHECK(type == REPL_META && len == 7 && memcmp(pl, "{\"c\":1}", 7) == 0);
        /* META goes one way only */
        CHECK_OK(repl_frame_send(p.f, REPL_META, "x", 1));
        CHECK_RC(repl_frame_recv(p.l, &type, &pl, &len), ARMDB_CORRUPT);
        pair_free(&p);

        /* a shaped follower without a name meets a leader with lookup */
        fo = opts(REPL_FOLLOWER, 8, 8, 2, sec);
        pair_new(&p, &fo, &lo);
        pair_shake(&p);
        CHECK_RC(p.lrc, ARMDB_MISMATCH);
        CHECK(p.frc < 0);
        pair_free(&p);
    }
    /* names are checked at both ends */
    struct repl_opts fo = opts(REPL_FOLLOWER, 8, 8, 2, NULL);
    fo.name = "0123456789012345678901234567890123456789012345678901234567890123";
    struct repl_conn *c;
    struct repl_io io = {end_read, end_write, NULL};
    CHECK_RC(repl_conn_new(&io, &fo, &c), ARMDB_INVAL);
    fo.name = NULL;
    fo.shape.shards = 0;
    CHECK_RC(repl_conn_new(&io, &fo, &c), ARMDB_INVAL); /* only a meta connection has no shape */
    struct pipe in, out;
    pipe_init(&in);
    pipe_init(&out);
    struct end e = {&in, &out};
    io.ctx = &e;
    struct repl_opts lo = opts(REPL_LEADER, 0, 0, 0, NULL);
    lo.lookup = lookup_two;
    unsigned char h[REPL_HELLO_BYTES];
    fake_hello(h, REPL_VERSION, 0);
    memcpy(h + 60, "ta/gs", 5);
    pipe_put(&in, h, sizeof h);
    CHECK_OK(repl_conn_new(&io, &lo, &c));
    CHECK_RC(repl_accept(c), ARMDB_CORRUPT);
    CHECK(has(armdb_errmsg(), "names no valid store"));
    repl_conn_free(c);
    pipe_free(&in);
    pipe_free(&out);
}

int main(void)
{
    test_handshake_plain();
    test_handshake_secret();
    test_handshake_wrong_secret();
    test_handshake_one_secret();
    test_handshake_shape_mismatch();
    test_handshake_version_mismatch();
    test_round_trip(NULL);
    test_round_trip(secret_a);
    test_frame_misuse();
    test_batch_limits(NULL);
    test_batch_limits(secret_a);
    test_malformed();
    test_tamper();
    test_replay_reorder();
    test_duplex();
    test_named_stores();
    return 0;
}
