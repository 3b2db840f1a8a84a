/*
 * repl_proto.c - the replication wire protocol: handshake, frames and the
 * encoding of each frame type. No threads, no sockets: bytes go through
 * the connection's read and write callbacks (repl.h).
 *
 * Invariants. Nothing read from the peer is trusted: every length is
 * checked against the frame before a byte is touched, and a frame is
 * checked in whole before any of it is handed out. Buffers for the largest
 * frame are allocated when the connection is made, none afterwards. After
 * any failed receive or send the connection is dead (the stream is out of
 * step, or the peer cannot be trusted), so nothing is accepted after a
 * failed proof or a failed decryption.
 *
 * Security. With a shared secret (32 bytes) both sides prove they hold it
 * without revealing it: each proof is a keyed BLAKE2b over a label and the
 * transcript (HELLO and the first part of WELCOME, which carry both
 * sides' random nonces, so a proof is never valid twice and binds the
 * version, flags and shapes both sides saw). Two keys, one per direction,
 * come from the secret and the transcript the same way; every frame after
 * the handshake is one crypto_secretstream_xchacha20poly1305 message, so a
 * frame altered, dropped, replayed or moved fails to decrypt. Without a
 * secret on either side frames go in the clear; a secret on one side only
 * is an error (never a silent downgrade).
 *
 * All integers are little-endian.
 *
 * HELLO, follower -> leader (REPL_HELLO_BYTES):
 *   OFFSET  SIZE  DESCRIPTION
 *        0     8  magic "ARMREPL1"
 *        8     4  protocol version (1)
 *       12     4  flags: bit 0 = the follower has a secret; others 0
 *       16    32  nonce_f, random
 *       48     4  key_len of the follower's store
 *       52     4  value_len (0 = variable)
 *       56     4  shards
 *       60    64  the store followed: its name, NUL-padded (at most 63
 *                 bytes of [A-Za-z0-9_.-]); empty for a meta connection,
 *                 whose shape is all 0 (it fetches the leader's META and
 *                 ends)
 *
 * WELCOME, leader -> follower (REPL_WELCOME_BYTES): bytes 0..123 laid out
 * as HELLO, with the leader's flags, nonce_l, the named store's shape (all
 * 0 if it serves no store of that name) and the name echoed; then
 *      124    32  proof_l = BLAKE2b-256 keyed with the secret over
 *                 "armdb leader" || HELLO || WELCOME[0..124); zero without
 *                 a secret
 * The leader sends WELCOME even when the HELLO does not match (but for its
 * magic), so the follower can name the difference too.
 *
 * With a secret on both sides, then:
 *   follower -> leader: proof_f (32) = BLAKE2b-256 keyed with the secret
 *                 over "armdb follower" || HELLO || WELCOME[0..124), then
 *                 the header (24) of the follower's send stream
 *   leader -> follower: the header (24) of the leader's send stream, once
 *                 proof_f checked
 *   keys = BLAKE2b-512 keyed with the secret over "armdb keys" || HELLO ||
 *          WELCOME[0..124); bytes 0..31 key the follower's stream, 32..63
 *          the leader's.
 *
 * Frame (after the handshake):
 *   OFFSET  SIZE  DESCRIPTION
 *        0     4  len: bytes that follow, 1 .. REPL_FRAME_MAX (with a
 *                 secret at least REPL_ABYTES + 1; in the clear at most
 *                 REPL_BODY_MAX)
 *        4   len  body: [type u8][payload], or its secretstream message
 *                 (tag MESSAGE) with a secret
 *
 * Payloads by type:
 *   SUBSCRIBE  (1, F->L)  count u32 (= the store's shards), then count
 *                         GSNs u64: shard i resumes after gsns[i]
 *   BATCH      (2, L->F)  shard u32, count u32 (>= 1), then count entries:
 *                           OFFSET  SIZE     DESCRIPTION
 *                                0     8     gsn; bit 63 = delete; bits
 *                                            62..60 zero; rising in a batch
 *                                8     4     vlen (0 for a delete; the
 *                                            store's value_len if fixed)
 *                               12     klen  key (the store's key_len)
 *                          12+klen     vlen  value
 *                         filling the payload exactly
 *   CAUGHT_UP  (3, L->F)  shard u32, gsn u64
 *   ACK        (4, F->L)  shard u32, gsn u64: applied and durable
 *   HEARTBEAT  (5, L->F)  leader's last gsn u64, leader's clock in ms u64
 *   RESYNC     (6, L->F)  shard u32, gsn u64 to start over from (0: a full
 *                         copy)
 *   META       (8, L->F)  the leader's meta bytes (only on a meta connection)
 *   ERROR      (7, both)  code i32 (< 0, an ARMDB_* or -errno), then up to
 *                         REPL_ERRMSG_MAX bytes of text (no NUL)
 * GSNs on the wire are at most 2^60 - 1.
 */
#include "repl.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#define SS_STATE crypto_secretstream_xchacha20poly1305_state
#define TAG_MESSAGE crypto_secretstream_xchacha20poly1305_TAG_MESSAGE

_Static_assert(REPL_HEADER_BYTES == 24, "secretstream header size is part of the format");
_Static_assert(REPL_ABYTES == 17, "secretstream overhead is part of the format");
_Static_assert(REPL_WELCOME_BYTES == REPL_HELLO_BYTES + REPL_PROOF_BYTES, "WELCOME layout");

enum conn_state { ST_NEW, ST_READY, ST_DEAD };

/* The secret and both streams' states, in one sodium_malloc()ed block
 * (guard pages, locked, wiped when freed). */
struct repl_keys {
    unsigned char secret[REPL_SECRET_BYTES];
    SS_STATE tx, rx;
};

struct repl_conn {
    struct repl_io io;
    enum repl_role role;
    _Atomic int state; /* enum conn_state; the receiving thread may end it */
    bool encrypted;
    bool peer_known;
    struct repl_shape shape, peer_shape;
    char name[REPL_NAME_BYTES];
    repl_lookup_fn lookup;
    void *lookup_ctx;
    uint32_t peer_flags;
    uint32_t batch_entries, batch_bytes;
    struct repl_keys *keys; /* with a secret, else NULL */
    unsigned char *secret;  /* keys->secret, or NULL */
    SS_STATE *tx, *rx;      /* in keys */
    /* transcript: HELLO, and WELCOME up to its proof */
    unsigned char hello[REPL_HELLO_BYTES], welcome[REPL_HELLO_BYTES];
    /* send: the wire frame (length + body); the plaintext body is built
     * at sbuf + 4 in the clear, in splain with a secret */
    unsigned char *sbuf, *splain;
    /* receive: the wire body; decrypted into rplain with a secret */
    unsigned char *rbuf, *rplain;
    unsigned char *mem; /* the one mapping the buffers are cut from */
    size_t memlen;
    size_t swipe, rwipe; /* plaintext bytes splain and rplain ever held */
    /* the batch being built in the send body */
    bool in_batch;
    uint32_t bcount;
    size_t blen; /* bytes of entries */
    uint64_t blast;
};

static unsigned char *body_out(struct repl_conn *c) { return c->encrypted ? c->splain : c->sbuf + 4; }

static const char *role_name(enum repl_role r) { return r == REPL_LEADER ? "leader" : "follower"; }
static const char *peer_name(const struct repl_conn *c)
{
    return c->role == REPL_LEADER ? "follower" : "leader";
}

static const char *type_name(unsigned t)
{
    switch (t) {
    case REPL_SUBSCRIBE: return "SUBSCRIBE";
    case REPL_BATCH: return "BATCH";
    case REPL_CAUGHT_UP: return "CAUGHT_UP";
    case REPL_ACK: return "ACK";
    case REPL_HEARTBEAT: return "HEARTBEAT";
    case REPL_RESYNC: return "RESYNC";
    case REPL_ERROR: return "ERROR";
    case REPL_META: return "META";
    default: return "unknown";
    }
}

/* The connection is out of step: nothing more goes through it. */
static int fail(struct repl_conn *c, int rc)
{
    c->state = ST_DEAD;
    return rc;
}

static int need_ready(const struct repl_conn *c)
{
    if (c->state == ST_READY)
        return 0;
    return err_set(ARMDB_INVAL, "replication: the connection %s",
                   c->state == ST_NEW ? "has not shaken hands" : "failed earlier");
}

/* ---- connection ---- */

int repl_conn_new(const struct repl_io *io, const struct repl_opts *o, struct repl_conn **out)
{
    *out = NULL;
    if (!io || !io->read_fn || !io->write_fn || !o || (o->role != REPL_LEADER && o->role != REPL_FOLLOWER))
        return err_set(ARMDB_INVAL, "replication: no I/O callbacks or no role");
    const struct repl_shape *s = &o->shape;
    const char *name = o->name ? o->name : "";
    size_t nlen = strlen(name);
    if (nlen >= REPL_NAME_BYTES)
        return err_set(ARMDB_INVAL, "replication: store name of %zu bytes (at most %u)", nlen,
                       REPL_NAME_BYTES - 1);
    bool shapeless = (o->role == REPL_LEADER && o->lookup) || (o->role == REPL_FOLLOWER && nlen == 0);
    bool zero = s->key_len == 0 && s->value_len == 0 && s->shards == 0;
    if (!(shapeless && zero) && (s->key_len < 1 || s->key_len > ARMDB_KEY_MAX || s->value_len > ARMDB_INLINE_MAX || s->shards < 1 ||
        s->shards > ARMDB_SHARDS_MAX))
        return err_set(ARMDB_INVAL, "replication: bad store shape (key_len %u, value_len %u, shards %u)",
                       s->key_len, s->value_len, s->shards);
    uint32_t be = o->batch_entries ? o->batch_entries : REPL_BATCH_ENTRIES;
    uint32_t bb = o->batch_bytes ? o->batch_bytes : REPL_BATCH_BYTES;
    if (bb > REPL_BODY_MAX - 1 - REPL_BATCH_HDR)
        return err_set(ARMDB_INVAL, "replication: batch_bytes %u over the limit %u", bb,
                       REPL_BODY_MAX - 1 - REPL_BATCH_HDR);
    int rc = crypt_init();
    if (rc < 0)
        return rc;
    struct repl_conn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->io = *io;
    c->role = o->role;
    c->shape = *s;
    memcpy(c->name, name, nlen + 1);
    c->lookup = o->lookup;
    c->lookup_ctx = o->lookup_ctx;
    c->batch_entries = be;
    c->batch_bytes = bb;
    /* Mapped, not allocated: a page is touched only once a frame fills
     * it, so small frames keep a connection small. */
    size_t wire = 4 + (size_t)REPL_FRAME_MAX + REPL_FRAME_MAX;
    c->memlen = wire + (o->secret ? 2 * (size_t)REPL_BODY_MAX : 0);
    c->mem = mmap(NULL, c->memlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c->mem == MAP_FAILED)
        c->mem = NULL;
    if (!c->mem || (o->secret && !(c->keys = sodium_malloc(sizeof *c->keys)))) {
        repl_conn_free(c);
        return -ENOMEM;
    }
    c->sbuf = c->mem;
    c->rbuf = c->mem + 4 + REPL_FRAME_MAX;
    if (o->secret) {
        c->splain = c->mem + wire;
        c->rplain = c->splain + REPL_BODY_MAX;
        c->secret = c->keys->secret;
        c->tx = &c->keys->tx;
        c->rx = &c->keys->rx;
        memcpy(c->secret, o->secret, REPL_SECRET_BYTES);
    }
    *out = c;
    return 0;
}

void repl_conn_free(struct repl_conn *c)
{
    if (!c)
        return;
    sodium_free(c->keys); /* wipes */
    if (c->splain) {
        sodium_memzero(c->splain, c->swipe);
        sodium_memzero(c->rplain, c->rwipe);
    }
    if (c->mem)
        munmap(c->mem, c->memlen);
    free(c);
}

bool repl_conn_encrypted(const struct repl_conn *c) { return c->state == ST_READY && c->encrypted; }
uint32_t repl_conn_peer_flags(const struct repl_conn *c) { return c->peer_known ? c->peer_flags : 0; }
const char *repl_conn_name(const struct repl_conn *c) { return c->name; }
struct repl_shape repl_conn_peer_shape(const struct repl_conn *c)
{
    struct repl_shape z = {0, 0, 0};
    return c->peer_known ? c->peer_shape : z;
}

/* ---- bytes in and out ---- */

static int write_all(struct repl_conn *c, const unsigned char *p, size_t len)
{
    while (len) {
        ssize_t n = c->io.write_fn(c->io.ctx, p, len);
        if (n == -EINTR)
            continue;
        if (n <= 0 || (size_t)n > len) {
            int rc = n < 0 ? (int)n : -EIO;
            return err_set(rc, "replication: sending to the %s failed", peer_name(c));
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* what names the bytes for a message if the stream ends among them. */
static int read_all(struct repl_conn *c, unsigned char *p, size_t len, const char *what)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = c->io.read_fn(c->io.ctx, p + got, len - got);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return err_set((int)n, "replication: receiving %s from the %s failed", what, peer_name(c));
        if (n == 0)
            return err_set(-ECONNRESET, "replication: the %s closed the connection%s%s", peer_name(c),
                           got ? " in the middle of " : " before ", what);
        if ((size_t)n > len - got)
            return err_set(-EIO, "replication: the read callback returned more than asked");
        got += (size_t)n;
    }
    return 0;
}

/* ---- handshake ---- */

static void greeting_encode(const struct repl_conn *c, unsigned char *p)
{
    memcpy(p, REPL_MAGIC, 8);
    put_le32(p + 8, REPL_VERSION);
    put_le32(p + 12, c->secret ? REPL_FLAG_SECRET : 0);
    randombytes_buf(p + 16, REPL_NONCE_BYTES);
    put_le32(p + 48, c->shape.key_len);
    put_le32(p + 52, c->shape.value_len);
    put_le32(p + 56, c->shape.shards);
    memset(p + 60, 0, REPL_NAME_BYTES);
    memcpy(p + 60, c->name, strlen(c->name));
}

static int greeting_magic(const struct repl_conn *c, const unsigned char *p)
{
    if (memcmp(p, REPL_MAGIC, 8) != 0)
        return err_plain(ARMDB_CORRUPT, "replication: the %s is not an armdb replication peer (bad magic)",
                       peer_name(c));
    return 0;
}

/* false for the all-0 shape of a meta connection (or of no store). */
static bool shape_set(const struct repl_shape *s) { return s->key_len || s->value_len || s->shards; }

/* The name in a HELLO: NUL-padded, at most 63 bytes of [A-Za-z0-9_.-]. */
static int hello_name(const unsigned char *p, char *name)
{
    const unsigned char *n = p + 60;
    size_t len = 0;
    while (len < REPL_NAME_BYTES && n[len])
        len++;
    bool ok = len < REPL_NAME_BYTES;
    for (size_t i = 0; ok && i < len; i++)
        ok = (n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9') ||
             n[i] == '_' || n[i] == '.' || n[i] == '-';
    for (size_t i = len; ok && i < REPL_NAME_BYTES; i++)
        ok = n[i] == 0;
    if (!ok)
        return err_plain(ARMDB_CORRUPT, "replication: the follower's HELLO names no valid store");
    memcpy(name, n, len + 1);
    return 0;
}

/* The peer's greeting against this side: noted, then checked. */
static int greeting_check(struct repl_conn *c, const unsigned char *p)
{
    const char *peer = peer_name(c), *me = role_name(c->role);
    uint32_t version = get_le32(p + 8);
    c->peer_flags = get_le32(p + 12);
    c->peer_shape.key_len = get_le32(p + 48);
    c->peer_shape.value_len = get_le32(p + 52);
    c->peer_shape.shards = get_le32(p + 56);
    c->peer_known = true;
    if (version != REPL_VERSION)
        return err_set(ARMDB_MISMATCH, "replication: the %s speaks protocol version %u, the %s %u", peer,
                       version, me, REPL_VERSION);
    if (c->peer_flags & ~REPL_FLAG_SECRET)
        return err_set(ARMDB_MISMATCH, "replication: the %s asks for unknown features (flags 0x%x)", peer,
                       c->peer_flags);
    if (c->role == REPL_FOLLOWER && memcmp(p + 60, c->hello + 60, REPL_NAME_BYTES) != 0)
        return err_plain(ARMDB_CORRUPT, "replication: the leader's WELCOME names another store");
    bool peer_none = !shape_set(&c->peer_shape);
    if (c->role == REPL_FOLLOWER && peer_none && c->name[0])
        return err_plain(ARMDB_NOTFOUND, "replication: the leader serves no store named \"%s\"", c->name);
    if (c->role == REPL_LEADER && c->lookup && peer_none != !c->name[0])
        return err_set(ARMDB_MISMATCH, "replication: a follower of store \"%s\" with %s shape", c->name,
                       peer_none ? "no" : "a");
    /* Messages name the leader's value first, on either side. */
    const struct repl_shape *ps = &c->peer_shape, *ls = c->role == REPL_LEADER ? &c->shape : ps,
                            *fs = c->role == REPL_LEADER ? ps : &c->shape;
    if (ps->key_len != c->shape.key_len)
        return err_set(ARMDB_MISMATCH, "replication: key_len differs: leader %u, follower %u", ls->key_len,
                       fs->key_len);
    if (ps->value_len != c->shape.value_len)
        return err_set(ARMDB_MISMATCH, "replication: value_len differs: leader %u, follower %u",
                       ls->value_len, fs->value_len);
    if (ps->shards != c->shape.shards)
        return err_set(ARMDB_MISMATCH, "replication: shards differ: leader %u, follower %u", ls->shards,
                       fs->shards);
    bool peer_secret = c->peer_flags & REPL_FLAG_SECRET;
    if (peer_secret && !c->secret)
        return err_plain(ARMDB_BADKEY, "replication: the %s requires a shared secret and the %s has none", peer,
                       me);
    if (!peer_secret && c->secret)
        return err_plain(ARMDB_BADKEY, "replication: the %s has a shared secret and the %s has none", me, peer);
    return 0;
}

/* BLAKE2b keyed with the secret over label || HELLO || WELCOME[0..124). */
static void transcript_hash(const struct repl_conn *c, const char *label, unsigned char *out, size_t outlen)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, c->secret, REPL_SECRET_BYTES, outlen);
    crypto_generichash_update(&st, (const unsigned char *)label, strlen(label) + 1);
    crypto_generichash_update(&st, c->hello, REPL_HELLO_BYTES);
    crypto_generichash_update(&st, c->welcome, REPL_HELLO_BYTES);
    crypto_generichash_final(&st, out, outlen);
    sodium_memzero(&st, sizeof st);
}

/* The two streams' keys; this side's send stream started, its header in hdr. */
static void keys_start(struct repl_conn *c, unsigned char hdr[REPL_HEADER_BYTES], unsigned char keys[64])
{
    transcript_hash(c, "armdb keys", keys, 64);
    unsigned char *mine = c->role == REPL_FOLLOWER ? keys : keys + 32;
    crypto_secretstream_xchacha20poly1305_init_push(c->tx, hdr, mine);
}

static int keys_pull(struct repl_conn *c, const unsigned char hdr[REPL_HEADER_BYTES],
                     const unsigned char keys[64])
{
    const unsigned char *theirs = c->role == REPL_FOLLOWER ? keys + 32 : keys;
    if (crypto_secretstream_xchacha20poly1305_init_pull(c->rx, hdr, theirs) != 0)
        return err_plain(ARMDB_CORRUPT, "replication: the %s's stream header is invalid", peer_name(c));
    return 0;
}

int repl_connect(struct repl_conn *c)
{
    if (c->role != REPL_FOLLOWER || c->state != ST_NEW)
        return err_set(ARMDB_INVAL, "replication: repl_connect is the follower's, once");
    unsigned char w[REPL_WELCOME_BYTES], proof[REPL_PROOF_BYTES], keys[64];
    unsigned char out[REPL_PROOF_BYTES + REPL_HEADER_BYTES], hdr[REPL_HEADER_BYTES];
    greeting_encode(c, c->hello);
    int rc = write_all(c, c->hello, REPL_HELLO_BYTES);
    if (rc == 0)
        rc = read_all(c, w, REPL_WELCOME_BYTES, "its WELCOME");
    if (rc == 0)
        rc = greeting_magic(c, w);
    if (rc == 0)
        rc = greeting_check(c, w);
    if (rc < 0)
        return fail(c, rc);
    memcpy(c->welcome, w, REPL_HELLO_BYTES);
    if (!c->secret) {
        c->state = ST_READY;
        return 0;
    }
    /* Prove the secret before checking the leader's proof, so that a
     * leader with another secret fails on its side too. */
    transcript_hash(c, "armdb follower", out, REPL_PROOF_BYTES);
    keys_start(c, out + REPL_PROOF_BYTES, keys);
    rc = write_all(c, out, sizeof out);
    transcript_hash(c, "armdb leader", proof, REPL_PROOF_BYTES);
    if (rc == 0 && sodium_memcmp(proof, w + REPL_HELLO_BYTES, REPL_PROOF_BYTES) != 0)
        rc = err_plain(ARMDB_BADKEY, "replication: the leader's proof failed: the shared secrets differ");
    if (rc == 0)
        rc = read_all(c, hdr, sizeof hdr, "its stream header");
    if (rc == 0)
        rc = keys_pull(c, hdr, keys);
    sodium_memzero(keys, sizeof keys);
    if (rc < 0)
        return fail(c, rc);
    c->encrypted = true;
    c->state = ST_READY;
    return 0;
}

int repl_accept(struct repl_conn *c)
{
    if (c->role != REPL_LEADER || c->state != ST_NEW)
        return err_set(ARMDB_INVAL, "replication: repl_accept is the leader's, once");
    unsigned char w[REPL_WELCOME_BYTES], in[REPL_PROOF_BYTES + REPL_HEADER_BYTES], proof[REPL_PROOF_BYTES];
    unsigned char keys[64], hdr[REPL_HEADER_BYTES];
    int rc = read_all(c, c->hello, REPL_HELLO_BYTES, "its HELLO");
    if (rc == 0)
        rc = greeting_magic(c, c->hello);
    if (rc == 0)
        rc = hello_name(c->hello, c->name);
    if (rc < 0)
        return fail(c, rc);
    int found = 0;
    if (c->lookup) {
        memset(&c->shape, 0, sizeof c->shape);
        found = c->lookup(c->lookup_ctx, c->name, &c->shape);
        if (found < 0)
            memset(&c->shape, 0, sizeof c->shape);
    }
    greeting_encode(c, w);
    memcpy(c->welcome, w, REPL_HELLO_BYTES);
    memset(w + REPL_HELLO_BYTES, 0, REPL_PROOF_BYTES);
    if (c->secret)
        transcript_hash(c, "armdb leader", w + REPL_HELLO_BYTES, REPL_PROOF_BYTES);
    /* WELCOME goes out whatever the HELLO said: the follower names the
     * difference as well. */
    rc = write_all(c, w, sizeof w);
    if (rc == 0 && found < 0)
        rc = err_plain(found, "replication: a follower asked for store \"%s\", which is not served", c->name);
    if (rc == 0)
        rc = greeting_check(c, c->hello);
    if (rc < 0)
        return fail(c, rc);
    if (!c->secret) {
        c->state = ST_READY;
        return 0;
    }
    rc = read_all(c, in, sizeof in, "its proof");
    if (rc < 0)
        return fail(c, rc);
    transcript_hash(c, "armdb follower", proof, REPL_PROOF_BYTES);
    if (sodium_memcmp(proof, in, REPL_PROOF_BYTES) != 0)
        return fail(
            c, err_plain(ARMDB_BADKEY, "replication: the follower's proof failed: the shared secrets differ"));
    keys_start(c, hdr, keys);
    rc = keys_pull(c, in + REPL_PROOF_BYTES, keys);
    sodium_memzero(keys, sizeof keys);
    if (rc == 0)
        rc = write_all(c, hdr, sizeof hdr);
    if (rc < 0)
        return fail(c, rc);
    c->encrypted = true;
    c->state = ST_READY;
    return 0;
}

/* ---- frames ---- */

/* Send the body of blen bytes built in body_out(c). */
static int frame_flush(struct repl_conn *c, size_t blen)
{
    unsigned long long clen = blen;
    if (c->encrypted && blen > c->swipe)
        c->swipe = blen;
    if (c->encrypted)
        crypto_secretstream_xchacha20poly1305_push(c->tx, c->sbuf + 4, &clen, c->splain, blen, NULL, 0,
                                                   TAG_MESSAGE);
    put_le32(c->sbuf, (uint32_t)clen);
    int rc = write_all(c, c->sbuf, 4 + (size_t)clen);
    return rc < 0 ? fail(c, rc) : 0;
}

int repl_frame_send(struct repl_conn *c, enum repl_type type, const void *payload, size_t len)
{
    int rc = need_ready(c);
    if (rc < 0)
        return rc;
    if (c->in_batch)
        return err_set(ARMDB_INVAL, "replication: a batch is being built: send it first");
    if (type < REPL_SUBSCRIBE || type > REPL_META || len > REPL_BODY_MAX - 1 || (len && !payload))
        return err_set(ARMDB_INVAL, "replication: frame type %d of %zu bytes cannot be sent", (int)type, len);
    unsigned char *b = body_out(c);
    b[0] = (unsigned char)type;
    if (len)
        memmove(b + 1, payload, len);
    return frame_flush(c, 1 + len);
}

/* Is type one that this side receives, with a payload of a possible size? */
static int frame_check(const struct repl_conn *c, unsigned type, size_t len)
{
    bool leader = c->role == REPL_LEADER;
    bool ok;
    size_t min = 0, max = REPL_BODY_MAX;
    switch (type) {
    case REPL_SUBSCRIBE: ok = leader, min = 4; break;
    case REPL_ACK: ok = leader, min = max = 12; break;
    case REPL_BATCH: ok = !leader, min = REPL_BATCH_HDR; break;
    case REPL_CAUGHT_UP:
    case REPL_RESYNC: ok = !leader, min = max = 12; break;
    case REPL_HEARTBEAT: ok = !leader, min = max = 16; break;
    case REPL_META: ok = !leader; break;
    case REPL_ERROR: ok = true, min = 4, max = 4 + REPL_ERRMSG_MAX; break;
    default:
        return err_plain(ARMDB_CORRUPT, "replication: frame of unknown type %u from the %s", type,
                       peer_name(c));
    }
    if (!ok)
        return err_plain(ARMDB_CORRUPT, "replication: the %s sent a %s frame, which only the %s sends",
                       peer_name(c), type_name(type), role_name(c->role));
    if (len < min || len > max)
        return err_plain(ARMDB_CORRUPT, "replication: %s frame with a payload of %zu bytes", type_name(type),
                       len);
    return 0;
}

int repl_frame_recv(struct repl_conn *c, enum repl_type *type, const unsigned char **payload, size_t *len)
{
    *payload = NULL;
    *len = 0;
    int rc = need_ready(c);
    if (rc < 0)
        return rc;
    unsigned char lb[4];
    rc = read_all(c, lb, 4, "a frame");
    if (rc < 0)
        return fail(c, rc);
    uint32_t n = get_le32(lb);
    uint32_t lo = c->encrypted ? REPL_ABYTES + 1 : 1;
    uint32_t hi = c->encrypted ? REPL_FRAME_MAX : REPL_BODY_MAX;
    if (n < lo || n > hi)
        return fail(c,
                    err_plain(ARMDB_CORRUPT, "replication: frame length %u out of range [%u, %u]", n, lo, hi));
    rc = read_all(c, c->rbuf, n, "a frame");
    if (rc < 0)
        return fail(c, rc);
    const unsigned char *b = c->rbuf;
    size_t blen = n;
    if (c->encrypted) {
        unsigned long long mlen = 0;
        unsigned char tag = 0;
        if (crypto_secretstream_xchacha20poly1305_pull(c->rx, c->rplain, &mlen, &tag, c->rbuf, n, NULL, 0) !=
            0)
            return fail(c, err_plain(ARMDB_CORRUPT,
                                   "replication: a frame from the %s failed to decrypt "
                                   "(altered, replayed, reordered or dropped)",
                                   peer_name(c)));
        if (tag != TAG_MESSAGE || mlen < 1)
            return fail(c, err_plain(ARMDB_CORRUPT, "replication: a frame from the %s has tag %u", peer_name(c),
                                   (unsigned)tag));
        b = c->rplain;
        blen = (size_t)mlen;
        if (blen > c->rwipe)
            c->rwipe = blen;
    }
    rc = frame_check(c, b[0], blen - 1);
    if (rc < 0)
        return fail(c, rc);
    *type = (enum repl_type)b[0];
    *payload = b + 1;
    *len = blen - 1;
    return 0;
}

/* ---- fixed frames ---- */

static int gsn_wire_ok(uint64_t gsn) { return gsn <= GSN_MASK; }

int repl_send_subscribe(struct repl_conn *c, const uint64_t *gsns, uint32_t n)
{
    if (n != c->shape.shards)
        return err_set(ARMDB_INVAL, "replication: SUBSCRIBE of %u shards, the store has %u", n,
                       c->shape.shards);
    unsigned char p[4 + 8 * ARMDB_SHARDS_MAX];
    put_le32(p, n);
    for (uint32_t i = 0; i < n; i++) {
        if (!gsn_wire_ok(gsns[i]))
            return err_set(ARMDB_INVAL, "replication: GSN %llu of shard %u is past 2^60 - 1",
                           (unsigned long long)gsns[i], i);
        put_le64(p + 4 + 8 * (size_t)i, gsns[i]);
    }
    return repl_frame_send(c, REPL_SUBSCRIBE, p, 4 + 8 * (size_t)n);
}

int repl_subscribe_decode(const struct repl_conn *c, const unsigned char *p, size_t len, uint64_t *gsns,
                          uint32_t *n)
{
    *n = 0;
    if (len < 4)
        return err_plain(ARMDB_CORRUPT, "replication: SUBSCRIBE of %zu bytes", len);
    uint32_t cnt = get_le32(p);
    if (cnt != c->shape.shards)
        return err_plain(ARMDB_CORRUPT, "replication: SUBSCRIBE for %u shards, the store has %u", cnt,
                       c->shape.shards);
    if (len != 4 + 8 * (size_t)cnt)
        return err_plain(ARMDB_CORRUPT, "replication: SUBSCRIBE of %u shards in %zu bytes", cnt, len);
    for (uint32_t i = 0; i < cnt; i++) {
        uint64_t g = get_le64(p + 4 + 8 * (size_t)i);
        if (!gsn_wire_ok(g))
            return err_plain(ARMDB_CORRUPT, "replication: SUBSCRIBE: GSN of shard %u past 2^60 - 1", i);
        gsns[i] = g;
    }
    *n = cnt;
    return 0;
}

int repl_send_mark(struct repl_conn *c, enum repl_type type, uint32_t shard, uint64_t gsn)
{
    if ((type != REPL_CAUGHT_UP && type != REPL_ACK && type != REPL_RESYNC) || shard >= c->shape.shards ||
        !gsn_wire_ok(gsn))
        return err_set(ARMDB_INVAL, "replication: %s for shard %u, GSN %llu", type_name(type), shard,
                       (unsigned long long)gsn);
    unsigned char p[12];
    put_le32(p, shard);
    put_le64(p + 4, gsn);
    return repl_frame_send(c, type, p, sizeof p);
}

int repl_mark_decode(const struct repl_conn *c, const unsigned char *p, size_t len, uint32_t *shard,
                     uint64_t *gsn)
{
    if (len != 12)
        return err_plain(ARMDB_CORRUPT, "replication: shard and GSN in %zu bytes", len);
    uint32_t s = get_le32(p);
    uint64_t g = get_le64(p + 4);
    if (s >= c->shape.shards)
        return err_plain(ARMDB_CORRUPT, "replication: shard %u of %u", s, c->shape.shards);
    if (!gsn_wire_ok(g))
        return err_plain(ARMDB_CORRUPT, "replication: GSN past 2^60 - 1 for shard %u", s);
    *shard = s;
    *gsn = g;
    return 0;
}

int repl_send_heartbeat(struct repl_conn *c, uint64_t last_gsn, uint64_t time_ms)
{
    if (!gsn_wire_ok(last_gsn))
        return err_set(ARMDB_INVAL, "replication: HEARTBEAT GSN past 2^60 - 1");
    unsigned char p[16];
    put_le64(p, last_gsn);
    put_le64(p + 8, time_ms);
    return repl_frame_send(c, REPL_HEARTBEAT, p, sizeof p);
}

int repl_heartbeat_decode(const unsigned char *p, size_t len, uint64_t *last_gsn, uint64_t *time_ms)
{
    if (len != 16)
        return err_plain(ARMDB_CORRUPT, "replication: HEARTBEAT of %zu bytes", len);
    uint64_t g = get_le64(p);
    if (!gsn_wire_ok(g))
        return err_plain(ARMDB_CORRUPT, "replication: HEARTBEAT GSN past 2^60 - 1");
    *last_gsn = g;
    *time_ms = get_le64(p + 8);
    return 0;
}

int repl_send_error(struct repl_conn *c, int code, const char *msg)
{
    if (code >= 0)
        return err_set(ARMDB_INVAL, "replication: ERROR with code %d", code);
    size_t n = msg ? strnlen(msg, REPL_ERRMSG_MAX) : 0;
    unsigned char p[4 + REPL_ERRMSG_MAX];
    put_le32(p, (uint32_t)code);
    if (n)
        memcpy(p + 4, msg, n);
    return repl_frame_send(c, REPL_ERROR, p, 4 + n);
}

int repl_error_take(const struct repl_conn *c, const unsigned char *p, size_t len, const char *addr)
{
    int code;
    const char *msg;
    size_t mlen;
    int rc = repl_error_decode(p, len, &code, &msg, &mlen);
    if (rc < 0)
        return rc;
    return err_plain(code, "replication: the %s %s reports: %.*s", peer_name(c), addr, (int)mlen, msg);
}

int repl_error_decode(const unsigned char *p, size_t len, int *code, const char **msg, size_t *msglen)
{
    if (len < 4 || len > 4 + REPL_ERRMSG_MAX)
        return err_plain(ARMDB_CORRUPT, "replication: ERROR of %zu bytes", len);
    int32_t v = (int32_t)get_le32(p);
    if (v >= 0)
        return err_plain(ARMDB_CORRUPT, "replication: ERROR with code %d", (int)v);
    if (memchr(p + 4, 0, len - 4))
        return err_plain(ARMDB_CORRUPT, "replication: ERROR text holds a NUL byte");
    *code = v;
    *msg = (const char *)p + 4;
    *msglen = len - 4;
    return 0;
}

/* ---- BATCH ---- */

int repl_batch_begin(struct repl_conn *c, uint32_t shard)
{
    int rc = need_ready(c);
    if (rc < 0)
        return rc;
    if (shard >= c->shape.shards)
        return err_set(ARMDB_INVAL, "replication: batch for shard %u of %u", shard, c->shape.shards);
    unsigned char *b = body_out(c);
    b[0] = REPL_BATCH;
    put_le32(b + 1, shard);
    c->in_batch = true;
    c->bcount = 0;
    c->blen = 0;
    c->blast = 0;
    return 0;
}

int repl_batch_add(struct repl_conn *c, const armdb_change *ch)
{
    if (!c->in_batch)
        return err_set(ARMDB_INVAL, "replication: no batch begun");
    uint64_t g = ch->gsn;
    uint32_t klen = c->shape.key_len;
    if (ch->klen != klen || !ch->key)
        return err_set(ARMDB_INVAL, "replication: key of %zu bytes, the store's are %u", ch->klen, klen);
    if (g == 0 || g > GSN_MASK || (c->bcount && g <= c->blast))
        return err_set(ARMDB_INVAL, "replication: GSN %llu out of order or range", (unsigned long long)g);
    if (ch->deleted ? ch->vlen != 0
                    : (c->shape.value_len && ch->vlen != c->shape.value_len) || (ch->vlen && !ch->val))
        return err_set(ARMDB_INVAL, "replication: %s with a value of %zu bytes",
                       ch->deleted ? "delete" : "put", ch->vlen);
    if (ch->vlen > REPL_VALUE_MAX(klen))
        return err_set(ARMDB_TOOBIG, "replication: a value of %zu bytes is over the limit of %u", ch->vlen,
                       REPL_VALUE_MAX(klen));
    size_t es = REPL_ENTRY_HDR + klen + ch->vlen;
    if (c->bcount && (c->bcount >= c->batch_entries || c->blen + es > c->batch_bytes ||
                      1 + REPL_BATCH_HDR + c->blen + es > REPL_BODY_MAX))
        return ARMDB_FULL;
    unsigned char *e = body_out(c) + 1 + REPL_BATCH_HDR + c->blen;
    put_le64(e, g | (ch->deleted ? REPL_GSN_DELETE : 0));
    put_le32(e + 8, (uint32_t)ch->vlen);
    memcpy(e + REPL_ENTRY_HDR, ch->key, klen);
    if (ch->vlen)
        memcpy(e + REPL_ENTRY_HDR + klen, ch->val, ch->vlen);
    c->blen += es;
    c->bcount++;
    c->blast = g;
    return 0;
}

uint32_t repl_batch_count(const struct repl_conn *c) { return c->in_batch ? c->bcount : 0; }

int repl_batch_send(struct repl_conn *c)
{
    int rc = need_ready(c);
    if (rc < 0)
        return rc;
    if (!c->in_batch || !c->bcount)
        return err_set(ARMDB_INVAL, "replication: no batch, or an empty one, to send");
    put_le32(body_out(c) + 5, c->bcount);
    c->in_batch = false;
    return frame_flush(c, 1 + REPL_BATCH_HDR + c->blen);
}

int repl_batch_open(const struct repl_conn *c, const unsigned char *p, size_t len, struct repl_batch_iter *it)
{
    memset(it, 0, sizeof *it);
    if (len < REPL_BATCH_HDR)
        return err_plain(ARMDB_CORRUPT, "replication: BATCH of %zu bytes", len);
    uint32_t shard = get_le32(p), count = get_le32(p + 4);
    uint32_t klen = c->shape.key_len, fixed = c->shape.value_len;
    if (shard >= c->shape.shards)
        return err_plain(ARMDB_CORRUPT, "replication: BATCH for shard %u of %u", shard, c->shape.shards);
    if (count == 0)
        return err_plain(ARMDB_CORRUPT, "replication: BATCH of no entries");
    const unsigned char *q = p + REPL_BATCH_HDR, *end = p + len;
    uint64_t last = 0;
    for (uint32_t i = 0; i < count; i++) {
        size_t left = (size_t)(end - q);
        if (left < REPL_ENTRY_HDR + (size_t)klen)
            return err_plain(ARMDB_CORRUPT, "replication: BATCH entry %u of %u runs past the frame", i, count);
        uint64_t raw = get_le64(q), g = raw & ~REPL_GSN_DELETE;
        uint32_t vlen = get_le32(q + 8);
        bool del = raw & REPL_GSN_DELETE;
        if (g == 0 || g > GSN_MASK || g <= last)
            return err_plain(ARMDB_CORRUPT, "replication: BATCH entry %u: GSN %llu out of order or range", i,
                           (unsigned long long)g);
        if (del ? vlen != 0 : fixed && vlen != fixed)
            return err_plain(ARMDB_CORRUPT, "replication: BATCH entry %u: %s with a value of %u bytes", i,
                           del ? "delete" : "put", vlen);
        if (vlen > left - REPL_ENTRY_HDR - klen)
            return err_plain(ARMDB_CORRUPT,
                           "replication: BATCH entry %u: value of %u bytes runs past the frame", i, vlen);
        q += REPL_ENTRY_HDR + klen + vlen;
        last = g;
    }
    if (q != end)
        return err_plain(ARMDB_CORRUPT, "replication: BATCH of %u entries has %zu bytes left over", count,
                       (size_t)(end - q));
    it->p = p + REPL_BATCH_HDR;
    it->end = end;
    it->key_len = klen;
    it->shard = shard;
    it->count = count;
    it->left = count;
    return 0;
}

int repl_batch_next(struct repl_batch_iter *it, armdb_change *ch)
{
    if (!it->left)
        return ARMDB_NOTFOUND;
    /* repl_batch_open checked every bound; assertions catch misuse. */
    assert((size_t)(it->end - it->p) >= REPL_ENTRY_HDR + it->key_len);
    uint64_t raw = get_le64(it->p);
    uint32_t vlen = get_le32(it->p + 8);
    memset(ch, 0, sizeof *ch);
    ch->gsn = raw & ~REPL_GSN_DELETE;
    ch->deleted = (raw & REPL_GSN_DELETE) != 0;
    ch->key = it->p + REPL_ENTRY_HDR;
    ch->klen = it->key_len;
    ch->vlen = vlen;
    ch->val = ch->deleted ? NULL : it->p + REPL_ENTRY_HDR + it->key_len;
    it->p += REPL_ENTRY_HDR + it->key_len + vlen;
    assert(it->p <= it->end);
    it->left--;
    return 0;
}
