/*
 * fuzz_repl.c - libFuzzer target for the receive side of the replication
 * protocol.
 *
 * Input: byte 0 picks the mode (low 3 bits) and the store shape (bit 7: a
 * fixed value length of 4, else variable; keys of 8 bytes, 4 shards); the
 * rest is the peer's stream.
 *   0  leader, frames in the clear: a valid HELLO is put before the input
 *   1  leader, the input from its HELLO on
 *   2  follower, the input from its WELCOME on
 *   3  follower, frames in the clear: a valid WELCOME is put before it
 *   4  leader with a secret (the input cannot pass the proof)
 *   5  follower with a secret
 * Every frame received is decoded by its type, every BATCH walked. The
 * oracle: an accepted frame's payload lies in the frame, an accepted
 * batch hands out exactly its count of entries, each within the payload,
 * GSNs rising, deletes without values, keys and fixed values of the
 * store's lengths; a failed frame leaves the connection refusing more.
 */
#include "repl.h"

#include <stdlib.h>

#define KLEN 8u
#define SHARDS 4u

struct feed {
    const uint8_t *p;
    size_t left;
};

static ssize_t feed_read(void *ctx, void *buf, size_t len)
{
    struct feed *f = ctx;
    size_t n = len < f->left ? len : f->left;
    memcpy(buf, f->p, n);
    f->p += n;
    f->left -= n;
    return (ssize_t)n;
}

static ssize_t sink_write(void *ctx, const void *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    return (ssize_t)len;
}

/* HELLO, or WELCOME with a zero proof (size says which). */
static void greeting(unsigned char *g, size_t size, uint32_t vlen)
{
    memset(g, 0, size);
    memcpy(g, REPL_MAGIC, 8);
    put_le32(g + 8, REPL_VERSION);
    put_le32(g + 48, KLEN);
    put_le32(g + 52, vlen);
    put_le32(g + 56, SHARDS);
}

static void check_batch(struct repl_conn *c, const unsigned char *p, size_t len, uint32_t vlen)
{
    struct repl_batch_iter it;
    armdb_change ch;
    if (repl_batch_open(c, p, len, &it) != 0) {
        if (repl_batch_next(&it, &ch) != ARMDB_NOTFOUND)
            abort();
        return;
    }
    uint32_t n = 0;
    uint64_t last = 0;
    const unsigned char *end = p + len;
    while (repl_batch_next(&it, &ch) == 0) {
        const unsigned char *k = ch.key, *v = ch.val;
        if (ch.klen != KLEN || k < p || k + KLEN > end || ch.gsn <= last || ch.gsn > GSN_MASK)
            abort();
        if (ch.deleted ? (v || ch.vlen) : (!v || v < p || v + ch.vlen > end || (vlen && ch.vlen != vlen)))
            abort();
        last = ch.gsn;
        n++;
    }
    if (n != it.count || it.shard >= SHARDS)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char secret[REPL_SECRET_BYTES] = "fuzz secret, not for real use...";
    if (size < 1)
        return 0;
    unsigned mode = data[0] & 7;
    uint32_t vlen = (data[0] & 0x80) ? 4 : 0;
    if (mode > 5)
        return 0;
    bool leader = mode == 0 || mode == 1 || mode == 4;
    size_t pre = mode == 0 ? REPL_HELLO_BYTES : mode == 3 ? REPL_WELCOME_BYTES : 0;
    unsigned char *buf = malloc(pre + size - 1 + 1);
    if (!buf)
        return 0;
    if (pre)
        greeting(buf, pre, vlen);
    memcpy(buf + pre, data + 1, size - 1);
    struct feed f = {buf, pre + size - 1};
    struct repl_io io = {feed_read, sink_write, &f};
    struct repl_opts o;
    memset(&o, 0, sizeof o);
    o.role = leader ? REPL_LEADER : REPL_FOLLOWER;
    o.shape.key_len = KLEN;
    o.shape.value_len = vlen;
    o.shape.shards = SHARDS;
    o.secret = mode >= 4 ? secret : NULL;
    struct repl_conn *c;
    if (repl_conn_new(&io, &o, &c) != 0)
        abort();
    int rc = leader ? repl_accept(c) : repl_connect(c);
    if ((mode == 0 || mode == 3) && rc != 0)
        abort(); /* the greeting put before the input is valid */
    if (mode >= 4 && rc == 0)
        abort(); /* the input cannot know the secret */
    while (rc == 0) {
        enum repl_type type;
        const unsigned char *p;
        size_t len;
        rc = repl_frame_recv(c, &type, &p, &len);
        if (rc != 0) {
            if (repl_frame_recv(c, &type, &p, &len) != ARMDB_INVAL)
                abort();
            break;
        }
        if (len > REPL_BODY_MAX - 1 || (len && !p))
            abort();
        uint64_t gsns[ARMDB_SHARDS_MAX], a, b;
        uint32_t n, shard;
        int code;
        const char *msg;
        size_t mlen;
        switch (type) {
        case REPL_BATCH:
            if (leader)
                abort();
            check_batch(c, p, len, vlen);
            break;
        case REPL_SUBSCRIBE:
            if (!leader)
                abort();
            if (repl_subscribe_decode(c, p, len, gsns, &n) == 0 && n != SHARDS)
                abort();
            break;
        case REPL_ACK:
        case REPL_CAUGHT_UP:
        case REPL_RESYNC:
            if (!leader != (type != REPL_ACK))
                abort();
            if (repl_mark_decode(c, p, len, &shard, &a) == 0 && (shard >= SHARDS || a > GSN_MASK))
                abort();
            break;
        case REPL_HEARTBEAT:
            if (leader)
                abort();
            (void)repl_heartbeat_decode(p, len, &a, &b);
            break;
        case REPL_META:
            if (leader)
                abort();
            break;
        case REPL_ERROR:
            if (repl_error_decode(p, len, &code, &msg, &mlen) == 0 &&
                (code >= 0 || mlen > REPL_ERRMSG_MAX || memchr(msg, 0, mlen)))
                abort();
            break;
        default: abort();
        }
    }
    repl_conn_free(c);
    free(buf);
    return 0;
}
