/*
 * repl.h - the replication wire protocol (internal).
 *
 * A follower (read replica) connects to a leader, they shake hands, and
 * then exchange frames: the follower subscribes from a GSN per shard, the
 * leader streams batches of entries read from its change feed, the
 * follower acknowledges what it applied durably. This layer owns the bytes
 * on the wire only: no threads, no sockets. A connection reads and writes
 * through two callbacks, so a socket, a pipe, a test's memory or a
 * fuzzer's input all do. The format is documented at the top of
 * repl_proto.c.
 *
 * Every function returns 0, -errno (from the callbacks) or an ARMDB_* code
 * with armdb_errmsg() naming the problem:
 *   ARMDB_MISMATCH  protocol version, flags or store shape differ
 *   ARMDB_BADKEY    the peer's proof failed (wrong secret), or a secret
 *                   on one side only
 *   ARMDB_CORRUPT   bytes that are not the protocol: bad magic, a frame
 *                   length out of range, an unknown or misdirected type,
 *                   a payload whose lengths disagree, a failed decryption
 *                   (tampered, replayed, reordered or truncated frame)
 *   -ECONNRESET     the peer closed the stream
 *   ARMDB_INVAL     misuse: a call out of order, a connection that failed
 * Once the handshake, a receive or a send has failed on the stream (not
 * on a bad argument, which changes nothing) the connection is dead: the
 * stream is out of step, or the peer is not to be trusted, and every
 * later call fails (ARMDB_INVAL). Close it.
 *
 * After the handshake one thread may send while another receives: the
 * two directions share nothing but the connection's dead flag (atomic).
 */
#ifndef ARMDB_REPL_H
#define ARMDB_REPL_H

#include "internal.h"

#include <sodium.h>

#define REPL_MAGIC "ARMREPL1"
#define REPL_VERSION 1u
#define REPL_FLAG_SECRET 1u /* the sender has a shared secret */
#define REPL_SECRET_BYTES 32u
#define REPL_NONCE_BYTES 32u
#define REPL_PROOF_BYTES 32u
#define REPL_NAME_BYTES 64u    /* a store's name, NUL-padded (at most 63 bytes) */
#define REPL_HELLO_BYTES 124u  /* HELLO, and the first part of WELCOME */
#define REPL_WELCOME_BYTES 156u /* + proof_l */
#define REPL_HEADER_BYTES crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define REPL_ABYTES crypto_secretstream_xchacha20poly1305_ABYTES

/* Limits. A frame's length field counts its body: [type][payload] in the
 * clear, or their secretstream ciphertext (REPL_ABYTES more). The largest
 * body is REPL_FRAME_MAX on the wire, so the largest plaintext body is
 * REPL_BODY_MAX in either mode (the limit is the same with or without a
 * secret). A value longer than REPL_VALUE_MAX(key_len) cannot be
 * replicated: the builder refuses it (ARMDB_TOOBIG). */
#define REPL_FRAME_MAX ((1u << 20) + 4096u)
#define REPL_BODY_MAX (REPL_FRAME_MAX - REPL_ABYTES)
#define REPL_BATCH_HDR 8u  /* shard, count */
#define REPL_ENTRY_HDR 12u /* gsn, vlen */
#define REPL_VALUE_MAX(klen) (REPL_BODY_MAX - 1u - REPL_BATCH_HDR - REPL_ENTRY_HDR - (klen))
#define REPL_BATCH_ENTRIES 256u      /* default entries per batch */
#define REPL_BATCH_BYTES (64u << 10) /* default entry bytes per batch */
#define REPL_ERRMSG_MAX 400u         /* ERROR's text */
#define REPL_GSN_DELETE (1ull << 63) /* on the wire: the entry is a delete */

enum repl_type {
    REPL_SUBSCRIBE = 1, /* follower -> leader: starting GSN of every shard */
    REPL_BATCH = 2,     /* leader -> follower: entries of one shard */
    REPL_CAUGHT_UP = 3, /* leader -> follower: shard, gsn: the stream reached the leader's end */
    REPL_ACK = 4,       /* follower -> leader: shard, gsn applied and durable */
    REPL_HEARTBEAT = 5, /* leader -> follower: leader's last gsn, time in ms */
    REPL_RESYNC = 6,    /* leader -> follower: shard, gsn to start over from */
    REPL_ERROR = 7,     /* either way: code, text; the sender closes after it */
    REPL_META = 8,      /* leader -> follower, on a meta connection: the leader's meta bytes */
};

enum repl_role { REPL_FOLLOWER = 1, REPL_LEADER = 2 };

struct repl_io {
    /* Bytes read (> 0), 0 at the end of the stream, or -errno. Both
     * callbacks block (-EINTR is retried); any other error, a timeout
     * (-EAGAIN) too, ends the connection, since a frame may be cut. */
    ssize_t (*read_fn)(void *ctx, void *buf, size_t len);
    /* Bytes written (> 0), or -errno. */
    ssize_t (*write_fn)(void *ctx, const void *buf, size_t len);
    void *ctx;
};

struct repl_shape {
    uint32_t key_len, value_len, shards;
};

/* The leader's lookup of the store a follower names: 0 and its shape, or
 * ARMDB_NOTFOUND. The name "" asks for a meta connection (shape all 0). */
typedef int (*repl_lookup_fn)(void *ctx, const char *name, struct repl_shape *shape);

struct repl_opts {
    enum repl_role role;
    struct repl_shape shape;     /* this side's store (leader with lookup: set by it) */
    const char *name;            /* follower: the store it follows (NULL or "": a meta connection,
                                  * whose shape is all 0) */
    repl_lookup_fn lookup;       /* leader: the store named in HELLO (NULL: shape as given) */
    void *lookup_ctx;
    const unsigned char *secret; /* REPL_SECRET_BYTES, or NULL: frames in the clear */
    uint32_t batch_entries;      /* 0 = REPL_BATCH_ENTRIES */
    uint32_t batch_bytes;        /* 0 = REPL_BATCH_BYTES; at most REPL_BODY_MAX - 9 */
};

struct repl_conn;

/* A connection over io (which must outlive it); buffers for the largest
 * frame in each direction are mapped here (about 2 MiB, 4 MiB with a
 * secret; pages are touched as frames fill them), nothing is allocated
 * later. The secret is copied (locked,
 * wiped at free). ARMDB_INVAL for a bad shape or option, -ENOMEM. */
int repl_conn_new(const struct repl_io *io, const struct repl_opts *opts, struct repl_conn **out) MUST_CHECK;
/* Wipes the keys. NULL is a no-op. */
void repl_conn_free(struct repl_conn *c);

/* The handshake, run once, blocking in the callbacks: the follower calls
 * repl_connect, the leader repl_accept. 0 when both sides agree; then the
 * frames are encrypted if both have the secret, in the clear if neither
 * has one (whether a connection in the clear is acceptable, e.g. only on
 * loopback, is the caller's call: see repl_conn_encrypted). */
int repl_connect(struct repl_conn *c) MUST_CHECK;
int repl_accept(struct repl_conn *c) MUST_CHECK;
/* After the handshake: frames are sealed with the shared secret. */
bool repl_conn_encrypted(const struct repl_conn *c);
/* What the peer announced in its greeting (valid once it was received,
 * even if the handshake then failed): its flags and its store's shape. */
uint32_t repl_conn_peer_flags(const struct repl_conn *c);
/* The store name in the follower's HELLO (the leader's side; "" for a
 * meta connection). */
const char *repl_conn_name(const struct repl_conn *c);
struct repl_shape repl_conn_peer_shape(const struct repl_conn *c);

/* Send one frame: type and payload (len <= REPL_BODY_MAX - 1). */
int repl_frame_send(struct repl_conn *c, enum repl_type type, const void *payload, size_t len) MUST_CHECK;
/* Receive one frame. The payload is valid until the next receive. A
 * type not meant for this side, or whose payload has the wrong size, is
 * ARMDB_CORRUPT (BATCH and SUBSCRIBE payloads are checked in whole by
 * their decoders below). */
int repl_frame_recv(struct repl_conn *c, enum repl_type *type, const unsigned char **payload,
                    size_t *len) MUST_CHECK;

/* ---- frames with fixed fields ---- */
int repl_send_subscribe(struct repl_conn *c, const uint64_t *gsns, uint32_t n) MUST_CHECK;
/* gsns has room for the store's shard count; *n is set to it. */
int repl_subscribe_decode(const struct repl_conn *c, const unsigned char *p, size_t len, uint64_t *gsns,
                          uint32_t *n) MUST_CHECK;
/* CAUGHT_UP, ACK, RESYNC: a shard and a GSN. */
int repl_send_mark(struct repl_conn *c, enum repl_type type, uint32_t shard, uint64_t gsn) MUST_CHECK;
int repl_mark_decode(const struct repl_conn *c, const unsigned char *p, size_t len, uint32_t *shard,
                     uint64_t *gsn) MUST_CHECK;
int repl_send_heartbeat(struct repl_conn *c, uint64_t last_gsn, uint64_t time_ms) MUST_CHECK;
int repl_heartbeat_decode(const unsigned char *p, size_t len, uint64_t *last_gsn,
                          uint64_t *time_ms) MUST_CHECK;
/* code < 0; msg is cut at REPL_ERRMSG_MAX bytes. */
int repl_send_error(struct repl_conn *c, int code, const char *msg) MUST_CHECK;
/* *msg points into p (not NUL-terminated, *msglen bytes). */
int repl_error_decode(const unsigned char *p, size_t len, int *code, const char **msg,
                      size_t *msglen) MUST_CHECK;
/* A received ERROR as this thread's error: its code, with the message
 * "replication: the PEER ADDR reports: TEXT" (ARMDB_CORRUPT if the
 * payload is malformed). */
int repl_error_take(const struct repl_conn *c, const unsigned char *p, size_t len, const char *addr) MUST_CHECK;

/* ---- BATCH ---- */
/* Start a batch of shard's entries in the connection's send buffer. */
int repl_batch_begin(struct repl_conn *c, uint32_t shard) MUST_CHECK;
/* Add one change (as armdb_changes_next gives it): 0; ARMDB_FULL if the
 * batch has no room left for it (send, begin anew, add it again);
 * ARMDB_TOOBIG if no batch could hold it; ARMDB_INVAL for a key of the
 * wrong length, a value of the wrong length in a fixed-value store, a GSN
 * of 0, past 2^60 - 1 or not above the previous one in the batch, a delete
 * with a value. Copies key and value; no allocation. */
int repl_batch_add(struct repl_conn *c, const armdb_change *ch) MUST_CHECK;
uint32_t repl_batch_count(const struct repl_conn *c);
/* Send the batch (ARMDB_INVAL if it is empty) and end it. */
int repl_batch_send(struct repl_conn *c) MUST_CHECK;

/* A received BATCH payload. */
struct repl_batch_iter {
    const unsigned char *p, *end;
    uint32_t key_len, shard, count, left;
};
/* Check the whole payload before any entry is handed out (so a follower
 * never applies half of a malformed batch): the shard in range, count
 * entries filling the payload exactly, each within its bounds, GSNs
 * rising, deletes without values, values of the store's fixed length. */
int repl_batch_open(const struct repl_conn *c, const unsigned char *p, size_t len,
                    struct repl_batch_iter *it) MUST_CHECK;
/* 0 and the next entry (pointers into the payload; ch->val NULL for a
 * delete), or ARMDB_NOTFOUND at the end. */
int repl_batch_next(struct repl_batch_iter *it, armdb_change *ch);

#endif
