/*
 * internal.h - types and helpers shared by the parts of libarmdb.
 *
 * Nothing here is visible outside the library (the version script exports
 * only armdb_*). Each .c file owns one concept; this header carries the
 * structures several of them touch, so that their invariants are written
 * down in one place.
 */
#ifndef ARMDB_INTERNAL_H
#define ARMDB_INTERNAL_H

#include "armdb.h"
#include "fault.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define API __attribute__((visibility("default")))
#define MUST_CHECK __attribute__((warn_unused_result))

#define PAGE 4096u
#define ENTRY_HDR 16u
#define GSN_TOMB (1ull << 63)
/* Members of an atomic batch of two or more writes (armdb.h, FORMAT): every
 * member has GSN_BATCH, the first also GSN_FIRST, the last GSN_LAST; their
 * GSNs are consecutive. */
#define GSN_BATCH (1ull << 62)
#define GSN_FIRST (1ull << 61)
#define GSN_LAST (1ull << 60)
#define GSN_RESERVED (7ull << 60)
#define GSN_MASK ((1ull << 60) - 1)
/* The flag bits of gsn are a valid combination. */
static inline bool gsn_flags_ok(uint64_t gsn)
{
    uint64_t b = gsn & GSN_RESERVED;
    return b == 0 || ((b & GSN_BATCH) && (b & (GSN_FIRST | GSN_LAST)) != (GSN_FIRST | GSN_LAST));
}

#define DEFAULT_WBUF (1u << 20)
#define MIN_WBUF (64u << 10)
#define MAX_WBUF (256u << 20)
#define DEFAULT_MAX_FILE (256ull << 20)
#define MIN_MAX_FILE (64ull << 10)
#define MAX_MAX_FILE (3ull << 30)
#define DEFAULT_INTERVAL_MS 50u
#define DEFAULT_CACHE (64ull << 20)
#define MIN_CACHE (64ull << 10)
#define MAX_INTERVAL_MS 60000u
#define DEFAULT_COMPACT_THRESHOLD 0.3
/* Room a write buffer keeps besides the largest value: a partial page, the
 * zero gap at a page end, the header, the key and the padding. */
#define WBUF_SLACK 8192u

static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
static inline uint64_t round_down(uint64_t v, uint64_t a) { return v / a * a; }
static inline uint64_t pad8(uint64_t v) { return (v + 7) & ~7ull; }
/* *a = max(*a, v), atomically. */
static inline void atomic_max_u64(atomic_uint_fast64_t *a, uint64_t v)
{
    uint_fast64_t cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}
static inline uint64_t entry_size(uint32_t klen, uint32_t vlen) { return pad8(ENTRY_HDR + klen + (uint64_t)vlen); }

/* ---- little-endian helpers (util.c): the on-disk format goes through these ---- */
static inline void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static inline void put_le64(unsigned char *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- errors (util.c) ---- */
/* Record a message for armdb_errmsg() and return rc, so failures read
 * `return err_set(rc, "...", ...)`. */
int err_set(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* As err_set, without the code's words appended (where they would
 * mislead: ARMDB_BADKEY for a replication secret, say). */
int err_plain(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Set the message verbatim (to carry one from a worker thread). */
int err_restore(int rc, const char *msg);
void *aligned_alloc_zero(size_t size);
/* Anonymous memory for big buffers: mapped, not zeroed or faulted in up
 * front, 2 MiB aligned and offered huge pages, so filling it faults once
 * per 2 MiB rather than once per 4 KiB page. */
#define HUGE_PAGE (2u << 20)
void *huge_map(size_t len);
void huge_unmap(void *p, size_t len);
uint64_t key_hash(const void *key, size_t klen);
int online_cpus(void);

/* Thread-local aligned scratch for disk reads, grown on demand and kept
 * until the thread exits (so a get does not allocate in steady state). */
unsigned char *scratch_get(size_t size);

/* ---- io.c: every system call on store files goes through here ---- */
int io_open(int dirfd, const char *name, int flags, int mode) MUST_CHECK;
int io_pwrite_full(int fd, const void *buf, size_t len, uint64_t off) MUST_CHECK;
ssize_t io_pread_full(int fd, void *buf, size_t len, uint64_t off) MUST_CHECK;
int io_fdatasync(int fd) MUST_CHECK;
int io_fsync(int fd) MUST_CHECK;
int io_renameat(int dirfd, const char *from, const char *to) MUST_CHECK;
int io_ftruncate(int fd, uint64_t len) MUST_CHECK;
int io_write_file_atomic(int dirfd, const char *name, const void *buf, size_t len) MUST_CHECK;
/* A whole file into memory; free it with io_read_file_free(buf, len). */
int io_read_file(int dirfd, const char *name, unsigned char **buf, size_t *len) MUST_CHECK;
void io_read_file_free(unsigned char *buf, size_t len);
/* The injected error for this call of an operation of kind op (enum
 * fault_op), or 0; always 0 outside test builds. For I/O made elsewhere
 * than the wrappers above (io_uring). */
int io_fault(int op);

/* ---- uring.c: batched reads ---- */
struct io_read {
    int fd;
    void *buf; /* aligned */
    size_t len;
    uint64_t off;
    ssize_t res; /* bytes read (short only at the end of the file), or -errno */
    bool finished; /* false on the way in */
};
/* Told of each read once it is complete, while others may still be in
 * flight (so its pages can be opened and copied meanwhile). */
typedef void (*read_done_fn)(void *ctx, struct io_read *rq);
/* Do every read of rqs, through io_uring at once where the thread's ring
 * works (and use_uring), else one pread after another; done (if not NULL)
 * for each as it completes. */
void uring_read_batch(struct io_read *rqs, size_t n, bool use_uring, read_done_fn done, void *ctx);

/* ---- meta.c: the ARMDB file ---- */
#define META_PLAIN 88u  /* size in a plain store */
#define META_SIZE 128u  /* in an encrypted one (the largest) */
#define META_ORDERED 1u /* meta flags */
#define META_ENCRYPTED 2u
struct meta {
    uint32_t version;
    uint32_t key_len;
    uint32_t value_len;
    uint32_t shards;
    uint32_t flags;
    uint32_t cipher;
    unsigned char salt[16];
    unsigned char key_check[32];
    /* encrypted stores: */
    uint64_t nonce_floor;         /* nonces below it may have been used */
    unsigned char next_salt[16];  /* a rekey under way: its new salt (zero: none) */
    unsigned char prev_salt[16];  /* the salt the last rekey replaced (zero: none) */
};
/* The encoding's length (META_PLAIN or META_SIZE). */
size_t meta_encode(const struct meta *m, unsigned char out[META_SIZE]);
int meta_decode(struct meta *m, const unsigned char *buf, size_t len);

/* ---- crypt.c: keys, nonces and sealed pages (encrypted stores) ---- */
#define CIPHER_XCHACHA 1u
#define CIPHER_AES 2u
#define SLOT 24u     /* per sealed page: nonce u64, tag */
#define TAGS_HDR 32u /* .tags file: magic, salt of the key, checksum; then slots */
enum { PK_DATA = 1, PK_HINT = 2 };
struct crypt;
/* What a page's associated data binds it to. */
struct pagekey {
    const struct crypt *cr; /* NULL: a plain store */
    uint32_t kind, shard, file;
};
int crypt_init(void) MUST_CHECK;
bool crypt_cipher_available(uint32_t cipher);
const char *crypt_cipher_name(uint32_t cipher);
/* The keys of master under salt, and the key check the meta file holds.
 * ARMDB_MISMATCH if the CPU lacks the cipher. */
int crypt_new(struct crypt **out, uint32_t cipher, const unsigned char master[32], const unsigned char salt[16],
              unsigned char check[32]) MUST_CHECK;
void crypt_free(struct crypt *c);
/* Keys no longer used for sealing but maybe still for reading: kept on
 * a list until the handle closes (crypt_free_kept). */
void crypt_keep(struct crypt **list, struct crypt *c);
void crypt_free_kept(struct crypt **list);
const unsigned char *crypt_salt(const struct crypt *c);
void crypt_random(void *buf, size_t n);
void crypt_wipe(void *p, size_t n);
/* Constant-time comparison. */
bool crypt_equal(const void *a, const void *b, size_t n);
/* At a writer's open: take the nonces from the meta file's floor on and
 * reserve the first block (the meta file rewritten). */
int crypt_reserve(armdb *db) MUST_CHECK;
/* Seal n pages of src (page numbers from page) into dst (may be src),
 * each with a fresh nonce; their slots into slots. */
int pk_seal(armdb *db, const struct pagekey *pk, uint64_t page, const unsigned char *src, unsigned char *dst,
            uint32_t n, unsigned char *slots) MUST_CHECK;
/* Open n sealed pages in place: how many opened before the first that
 * did not (n: all; that one is zeroed). */
uint32_t pk_open(const struct pagekey *pk, uint64_t page, unsigned char *buf, uint32_t n, const unsigned char *slots);

/* ---- entry.c: entry header encode/decode and checksum ---- */
struct entry_hdr {
    uint32_t checksum;
    uint32_t vlen;
    uint64_t gsn; /* with the tombstone bit */
};
uint32_t entry_checksum(const unsigned char *entry, uint32_t klen, uint32_t vlen);
/* Write header + key + value + zero padding at dst (entry_size bytes). */
void entry_encode(unsigned char *dst, uint64_t gsn, const void *key, uint32_t klen, const void *val,
                  uint32_t vlen);
/* 0 if the entry at p (at least entry_size bytes readable) is intact. */
bool entry_valid(const unsigned char *p, uint32_t klen, uint32_t vmax, uint64_t avail);

/* ---- index.c: the per-shard keydir ---- */
/*
 * An entry record: gsn u64, file u32, value offset u32, value length u32,
 * key, inline value. Records live in one array and are named by number; the
 * hash table holds {tag, record number + 1} pairs. No pointers, so the whole
 * index can later move into a shared mapping.
 */
struct index {
    uint64_t *slots; /* low 32 hash bits << 32 | (record + 1); 0 = empty */
    uint32_t nslots;
    uint32_t used;   /* occupied slots */
    unsigned char *recs;
    size_t recs_map; /* bytes mapped for recs */
    uint32_t stride;
    uint32_t nrecs;  /* records handed out (high-water mark) */
    uint32_t free_head; /* record + 1 of the first free record, 0 = none */
    uint32_t key_len;
    uint32_t inline_len;
};
#define REC_GSN 0
#define REC_FILE 8
#define REC_VOFF 12
#define REC_VLEN 16
#define REC_KEY 20

int index_init(struct index *ix, uint32_t key_len, uint32_t inline_len) MUST_CHECK;
void index_free(struct index *ix);
/* Record number of key, or -1. */
int64_t index_find(const struct index *ix, const void *key, uint64_t hash);
/* Add a record for key (known absent); returns its number or -errno/ARMDB_FULL. */
int64_t index_insert(struct index *ix, const void *key, uint64_t hash) MUST_CHECK;
/* The record of key, added (zeroed but for the key; *fresh set) if absent:
 * one probe where index_find + index_insert take two. */
int64_t index_find_or_insert(struct index *ix, const void *key, uint64_t hash, bool *fresh) MUST_CHECK;
void index_remove(struct index *ix, uint32_t rec, uint64_t hash);
/* Make room for n keys in all, so loading them does not rehash. */
int index_reserve(struct index *ix, uint64_t n) MUST_CHECK;
size_t index_bytes(const struct index *ix);
static inline unsigned char *index_rec(const struct index *ix, uint32_t rec)
{
    return ix->recs + (size_t)rec * ix->stride;
}
static inline uint64_t rec_gsn(const unsigned char *r)
{
    uint64_t v;
    memcpy(&v, r + REC_GSN, 8);
    return v;
}
static inline uint32_t rec_u32(const unsigned char *r, size_t off)
{
    uint32_t v;
    memcpy(&v, r + off, 4);
    return v;
}
static inline void rec_set(unsigned char *r, uint64_t gsn, uint32_t file, uint32_t voff, uint32_t vlen)
{
    memcpy(r + REC_GSN, &gsn, 8);
    memcpy(r + REC_FILE, &file, 4);
    memcpy(r + REC_VOFF, &voff, 4);
    memcpy(r + REC_VLEN, &vlen, 4);
}

/* ---- otree.c: the ordered index of an ordered store's shard ---- */
struct npool {
    unsigned char *mem;
    size_t map;
    uint32_t size;      /* bytes per node */
    uint32_t n;         /* nodes handed out (high-water mark; node 0 is none) */
    uint32_t free_head; /* first freed node, 0 = none */
    uint32_t nfree, used;
};
struct otree {
    struct npool leaves, inners;
    uint32_t root;   /* a leaf if height is 1; 0 when empty */
    uint32_t height; /* 0 when empty */
    uint32_t key_len, inner_cap, keys_at;
    uint64_t count;
};
/* A position: a key slot of a leaf (leaf 0: none). */
struct opos {
    uint32_t leaf, i;
};
/* Order of key (klen bytes) against bound b of blen <= klen bytes:
 * bytewise, a key that extends the bound sorting after it; with prefix,
 * only the bound's blen bytes count. */
static inline int key_bound_cmp(const unsigned char *key, uint32_t klen, const void *b, uint32_t blen, bool prefix)
{
    int c = memcmp(key, b, blen);
    if (c == 0 && !prefix && blen < klen)
        c = 1;
    return c;
}
int otree_init(struct otree *t, uint32_t key_len) MUST_CHECK;
void otree_free(struct otree *t);
/* Add rec, whose key (in ix) is not in the tree yet. */
int otree_insert(struct otree *t, const struct index *ix, uint32_t rec) MUST_CHECK;
/* Remove rec, whose key is in the tree; before ix frees the record. */
void otree_remove(struct otree *t, const struct index *ix, uint32_t rec);
/* Replace the tree with one of every live record of ix, packed. */
int otree_build(struct otree *t, const struct index *ix) MUST_CHECK;
size_t otree_bytes(const struct otree *t);
/* The first key above bound b (strict) or at or above it; blen <= key_len,
 * a key that extends b sorting after it, or with prefix only b's bytes
 * compared. False if there is none. */
bool otree_seek(const struct otree *t, const struct index *ix, const void *b, uint32_t blen, bool prefix,
                bool strict, struct opos *pos);
bool otree_first(const struct otree *t, struct opos *pos);
bool otree_last(const struct otree *t, struct opos *pos);
bool otree_next(const struct otree *t, struct opos *pos);
bool otree_prev(const struct otree *t, struct opos *pos);
uint32_t otree_rec(const struct otree *t, const struct opos *pos);

/* ---- dfile.c: data files ---- */
struct dfile {
    uint32_t id;
    int fd;          /* O_DIRECT where available; reads go through the block cache */
    atomic_int refs; /* the shard's own reference + one per reader in flight */
    uint64_t size;   /* bytes of data (the file may be longer: padding) */
    uint64_t live;   /* bytes of entries the index points at */
    uint64_t tomb;   /* bytes of tombstones */
    uint64_t min_gsn, max_gsn; /* of its entries (0: none) */
    bool has_hint;
    /* under the shard's mu: */
    bool hinting;    /* the background thread is writing its hint */
    bool compacting; /* being compacted */
    bool keep;       /* compaction could not move all of it: not again */
    bool removed;    /* compacted away: no longer in the shard's list */
    /* encrypted stores: the key and place its pages are sealed for, the
     * .tags file, and the slots of its pages in memory (mapped for
     * map_pages pages; a page's slot is written before its location is
     * published, under the shard's lock) */
    struct pagekey pk;
    int tfd;
    unsigned char *slots;
    uint64_t map_pages;
};
struct shard;
int dfile_open(struct shard *sh, uint32_t id, bool create, struct dfile **out) MUST_CHECK;
/* Open name in sh's directory with flags, O_DIRECT where the store uses it:
 * the descriptor or -errno. */
int dfile_open_fd(struct shard *sh, const char *name, int flags);
void dfile_ref(struct dfile *f);
void dfile_unref(struct dfile *f);
void dfile_name(char *buf, size_t cap, uint32_t id, const char *ext);
/* A file object for an open descriptor (one reference), or NULL. */
struct dfile *dfile_new(uint32_t id, int fd);
/* Unlink data file id with its hint and (encrypted stores) tags, the hint
 * first: a hint never outlives its data file. */
int dfile_unlink_set(struct shard *sh, uint32_t id);
/* Close f's tags file and free its slots. */
void tags_release(struct dfile *f);
/* Encrypted stores: create f's .tags file for pages sealed with cr, with
 * room for max_pages slots in memory. */
int tags_create(struct shard *sh, struct dfile *f, const struct crypt *cr, uint64_t max_pages) MUST_CHECK;
/* Load f's .tags file for a data file of file_len bytes: 0, 1 if its
 * pages were sealed with another key (*salt: whose), or 2 if its header is
 * damaged (the slots are loaded: the pages tell whether they open). */
int tags_load(struct shard *sh, struct dfile *f, uint64_t file_len, unsigned char salt[16]) MUST_CHECK;
/* Seal the pages of f at [off, off + len) from src into dst, their slots
 * recorded and written to the .tags file. */
int dfile_seal(struct shard *sh, struct dfile *f, uint64_t off, const unsigned char *src, unsigned char *dst,
               uint32_t len) MUST_CHECK;
/* Open n pages of f from page in place: how many opened (n: all). */
uint32_t dfile_unseal(const struct dfile *f, uint64_t page, unsigned char *buf, uint32_t n);
/* The key f's hint pages are sealed with, in *pk; NULL in a plain store. */
static inline const struct pagekey *hint_pk(const struct dfile *f, struct pagekey *pk)
{
    if (!f->pk.cr)
        return NULL;
    *pk = f->pk;
    pk->kind = PK_HINT;
    return pk;
}
/* Record in f an entry of esize bytes with this GSN (tombstone bit kept). */
static inline void dfile_note(struct dfile *f, uint64_t gsn, uint64_t esize)
{
    uint64_t g = gsn & GSN_MASK;
    if (!f->min_gsn || g < f->min_gsn)
        f->min_gsn = g;
    if (g > f->max_gsn)
        f->max_gsn = g;
    if (gsn & GSN_TOMB)
        f->tomb += esize;
}

/* ---- cache.c: the block cache ---- */
struct cache;
int cache_init(struct cache **out, uint64_t bytes) MUST_CHECK;
void cache_free(struct cache *c);
uint64_t cache_name(uint32_t shard, uint32_t file, uint64_t page);
/* If the block is cached, copy its bytes [off, off + len) to dst. */
bool cache_get_part(struct cache *c, uint64_t name, void *dst, uint32_t off, uint32_t len);
void cache_put(struct cache *c, uint64_t name, const void *src);
void cache_stats(struct cache *c, armdb_stat *st);

/* ---- wbuf.c: the per-shard write buffer ---- */
/*
 * The buffer is a window on the active file: buf[0] is file offset `base`
 * (page aligned) and `len` bytes are used; the partial last page is
 * zero-padded when it is written. Everything
 * below `base` has been written to the file; `flushed` is how far the file
 * holds the buffer's bytes (the partial page may have been written by a
 * barrier and still be in the buffer, which stays authoritative).
 */
struct uring;
struct wbuf {
    unsigned char *buf;
    uint32_t cap;
    uint32_t len;
    uint64_t base;
    uint64_t flushed;
    /* Double buffering, with a ring: full pages go to the file through
     * io_uring while appends go on in the other buffer. */
    struct uring *ring; /* NULL: pages are written with pwrite */
    unsigned char *alt;    /* the other buffer */
    unsigned char *fl_buf; /* pages on their way (fl_buf[0] is file offset fl_off) */
    uint64_t fl_off;
    uint32_t fl_len;
    int fl_fd;
    int fl_state; /* FL_NONE, FL_FLIGHT, or FL_FAILED (still to be written) */
    /* Encrypted stores: pages are sealed into cbuf on their way out (the
     * buffer keeps the plain bytes reads are served from), and a barrier
     * pads the last page so that no page is ever sealed twice. */
    int (*seal)(void *ctx, uint64_t off, const unsigned char *src, unsigned char *dst, uint32_t len);
    unsigned char *cbuf;
    const unsigned char *fl_src; /* the bytes the write in flight writes */
    /* Told of full pages as they leave the buffer (final from then on). */
    void (*on_final)(void *ctx, uint64_t off, const unsigned char *pages, uint32_t len);
    void *on_final_ctx;
};
enum { FL_NONE, FL_FLIGHT, FL_FAILED };
int wbuf_init(struct wbuf *wb, uint32_t cap, struct uring *ring, bool sealed) MUST_CHECK;
void wbuf_free(struct wbuf *wb);
void wbuf_reset(struct wbuf *wb);
static inline uint64_t wbuf_tail(const struct wbuf *wb) { return wb->base + wb->len; }
/* The lowest file offset whose bytes are in memory and maybe not yet in
 * the file: reads at or past it are served by wbuf_read. */
static inline uint64_t wbuf_mem_base(const struct wbuf *wb) { return wb->fl_state ? wb->fl_off : wb->base; }
/* Write out the complete pages so that `need` more bytes fit. */
int wbuf_make_room(struct wbuf *wb, int fd, uint32_t need, uint64_t *written) MUST_CHECK;
/* Wait for the pages in flight (writing them again if that failed). */
int wbuf_settle(struct wbuf *wb, uint64_t *written) MUST_CHECK;
/* Write everything not yet in the file, the last page zero-padded. With
 * sring, the write and an fdatasync of fd go in one submission on it:
 * returns 1 if that fdatasync is in flight (uring_sync_wait), 0 if the
 * caller must fdatasync, or -errno. */
int wbuf_write_tail(struct wbuf *wb, int fd, struct uring *sring, uint64_t *written) MUST_CHECK;
/* Copy file bytes [off, off+len), all at or past wbuf_mem_base. */
void wbuf_read(const struct wbuf *wb, uint64_t off, void *dst, size_t len);

/* uring.c: a ring of one shard's (NULL if io_uring is unavailable). */
struct uring *uring_new(unsigned depth);
void uring_free(struct uring *u);
/* Queue and submit one write; 0 or -errno (then nothing is in flight). */
int uring_write(struct uring *u, int fd, const void *buf, size_t len, uint64_t off) MUST_CHECK;
/* Wait for the one write in flight: its result (bytes or -errno). */
ssize_t uring_write_wait(struct uring *u);
/* A barrier in one submission: write buf (len bytes, none if 0) at off and
 * fdatasync fd once the write is done. Returns when the write has: 0 (it
 * is in the file; wait for the fdatasync with uring_sync_wait), -errno
 * (nothing written, nothing in flight), or 1 if the ring could not do it
 * (nothing in flight: write and fdatasync the plain way). */
int uring_write_datasync(struct uring *u, int fd, const void *buf, size_t len, uint64_t off) MUST_CHECK;
/* Wait for the fdatasync uring_write_datasync started: 0 or -errno. */
int uring_sync_wait(struct uring *u) MUST_CHECK;

/* ---- hint.c ---- */
#define HINT_HDR 48u
struct hint_rec {
    uint64_t gsn;
    uint32_t voff;
    uint32_t vlen;
};
/* A growable list of hint records for one data file, built by a scan. */
struct hint_buf {
    unsigned char *p;
    size_t len, cap;
    uint64_t count, min_gsn, max_gsn;
};
/* ilen: the fixed value length of the store (its records carry the value),
 * or 0. */
int hint_add(struct hint_buf *hb, uint32_t klen, uint32_t ilen, uint64_t gsn, uint32_t voff, uint32_t vlen,
             const unsigned char *key, const unsigned char *value) MUST_CHECK;
void hint_buf_free(struct hint_buf *hb);
/* pk: how to seal its pages (encrypted stores; kind PK_HINT), else NULL. */
int hint_write(int dirfd, uint32_t id, uint32_t klen, const struct hint_buf *hb, uint64_t data_len, armdb *db,
               const struct pagekey *pk) MUST_CHECK;
int hint_unlink(int dirfd, uint32_t id);
/* One entry met by a scan or a hint: value is the value's bytes where the
 * caller has them (scans; hints of fixed-value stores), else NULL. */
typedef int (*scan_fn)(void *ctx, uint64_t gsn, uint32_t voff, uint32_t vlen, const unsigned char *key,
                       const unsigned char *value);
/* Load a hint file: fn for each record. 0, <0 from fn, or when the caller
 * must scan the data file instead: 1 if there is no hint, 2 if there is one
 * but it is damaged (its data file was sealed, since hints are written
 * only for sealed files). */
/* The same over a hint file's bytes (2 if they are not a valid hint). */
int hint_parse(const unsigned char *p, size_t len, uint32_t klen, uint32_t ilen, uint64_t *data_len, scan_fn fn,
               void *ctx);
int hint_load(int dirfd, uint32_t id, uint32_t klen, uint32_t ilen, uint64_t *data_len, const struct pagekey *pk,
              scan_fn fn, void *ctx);

/* ---- recover.c ---- */
struct scan_result {
    uint64_t end;      /* where the valid data ends */
    uint64_t corrupt;  /* damaged entries skipped */
    uint64_t torn;     /* bytes cut from a torn tail */
    uint64_t bad_pages; /* sealed pages that failed to open */
};
/* Scan a data file. last: cut at the first bad entry (torn tail); else skip
 * damaged entries. vmax: the largest value any entry may hold; past damage,
 * only entries with values up to resync_vmax are looked for. */
/* sealed: the file, if its pages are sealed (encrypted stores), else NULL:
 * a page that fails to open reads as zeros, and in the last file is where
 * the torn tail starts. */
int scan_file(int fd, const struct dfile *sealed, uint64_t file_len, uint32_t klen, uint32_t vmax,
              uint32_t resync_vmax, bool last,
              scan_fn fn, void *ctx, struct scan_result *res) MUST_CHECK;
/* The same for a file whose bytes from mem_off to file_len are mem's
 * (a copy of the write buffer's) rather than the file's. */
int scan_file_mem(int fd, const struct dfile *sealed, uint64_t file_len, const unsigned char *mem, uint64_t mem_off,
                  uint32_t klen, uint32_t vmax, uint32_t resync_vmax, bool last, scan_fn fn, void *ctx,
                  struct scan_result *res) MUST_CHECK;
/* The entries of an unsealed file in [start, end), start where one begins
 * (damage is skipped and counted). */
int scan_file_from(int fd, uint64_t start, uint64_t end, uint32_t klen, uint32_t vmax, scan_fn fn, void *ctx,
                   struct scan_result *res) MUST_CHECK;
int recover_shards(armdb *db) MUST_CHECK;
/* Shared mode, with mu and the shared mutex held: the shard's index and
 * files loaded afresh from the files as they stand, for a process that
 * can no longer catch up event by event (as it was, on failure). */
int shard_reload(struct shard *sh) MUST_CHECK;
int hint_build_for(struct shard *sh, struct dfile *f);

/* ---- shard.c ---- */
struct shard {
    pthread_mutex_t mu;
    pthread_cond_t sync_cv;
    armdb *db;
    uint32_t no;
    int dirfd;
    char *path; /* for messages */
    struct index ix;
    struct otree ot;  /* ordered stores only (ordered) */
    bool ordered;
    struct wbuf wb;
    struct uring *ring;      /* buffer writes; NULL: pwrite */
    struct uring *sync_ring; /* barriers: tail write + fdatasync; NULL: syscalls */
    struct dfile **files; /* sorted by id; the last is active when `active` */
    uint32_t nfiles, files_cap;
    struct dfile *active;  /* NULL when none is open (read-only, or after a failed rotation) */
    uint32_t next_id;
    uint64_t pos;      /* bytes appended to this shard since open, all files */
    uint64_t durable;  /* pos up to which a barrier completed */
    /* A GSN up to which a completed barrier covers every entry of the
     * shard (the GSN counter at its start; at open, after recovery):
     * what a replication leader may send. */
    uint64_t durable_gsn;
    /* The horizon of this shard's change feed: the store's at open (kept
     * in the DURABLE file), then the largest tombstone GSN compaction
     * dropped here. */
    atomic_uint_fast64_t dropped_gsn;
    /* Followers connected to this store have this shard up to it:
     * compaction keeps tombstones above it (UINT64_MAX: none connected). */
    atomic_uint_fast64_t repl_floor;
    bool syncing;      /* a barrier's fdatasync is in flight */
    uint64_t live_keys;
    /* shared mode (shared.c): the shard's state in the region, and how far
     * this process has caught up with it */
    struct shm_shard *ss; /* NULL: not shared */
    uint64_t seen_seq;    /* ss->seq when this process last caught up */
    uint64_t at;          /* AT_PACK(file, offset) of the log read so far */
    uint64_t ev_seen;     /* events of ss->ev applied */
    uint64_t last_write;  /* AT_PACK of the end of this process's last append */
    uint64_t applied;     /* entries of other processes applied */
    uint64_t reloads;     /* times the shard was loaded again (see shard_reload) */
    bool reloading;       /* ... which changes no file */
    /* counters, under mu */
    uint64_t puts, gets, deletes, bytes_written, flushes, syncs, ring_syncs, rotations;
    uint64_t corrupt, hints_loaded, files_scanned, torn;
    uint64_t compactions, compact_read, compact_written, reclaimed;
};

int shard_init(struct shard *sh, armdb *db, uint32_t no) MUST_CHECK;
void shard_free(struct shard *sh);
struct dfile *shard_file(struct shard *sh, uint32_t id);
/* List f (in id order). */
int shard_add_file(struct shard *sh, struct dfile *f) MUST_CHECK;
/* Unlist f (marked removed); the caller drops the shard's reference. */
void shard_remove_file(struct shard *sh, struct dfile *f);
/* With mu held: make the active file immutable (durable, hinted in the
 * background). */
int shard_seal(struct shard *sh) MUST_CHECK;
/* With mu held: 0 if the shard has a data file id left, else ARMDB_FULL. */
int shard_ids_left(struct shard *sh);
int shard_new_active(struct shard *sh) MUST_CHECK;
/* What a write hook needs from the write, filled under the shard's lock. */
struct hook_note {
    bool want_old;      /* copy the old value (ARMDB_HOOK_OLD) */
    bool had_old;       /* the key was present */
    unsigned char *old; /* malloc()ed copy, or NULL */
    size_t oldlen;
    uint64_t gsn;       /* of the entry written */
};
/* With mu held: note key's current value (record r, -1: absent) in hn. */
int shard_note_old(struct shard *sh, int64_t r, const void *key, struct hook_note *hn) MUST_CHECK;
int shard_put(struct shard *sh, const void *key, uint64_t h, const void *val, uint32_t vlen,
              const void *expected, size_t elen, int mode, struct hook_note *hn);
int shard_delete(struct shard *sh, const void *key, uint64_t h, struct hook_note *hn);
/* Write the entry of another store's change (its GSN kept) unless the key
 * already has that GSN or a newer one (then nothing is written). */
int shard_apply(struct shard *sh, const void *key, uint64_t h, const void *val, uint32_t vlen, uint64_t gsn,
                bool tomb);
/* With mu held (other shards' locks may be held too) and no barrier in
 * flight: everything appended so far made durable. */
int shard_barrier_cut(struct shard *sh);
/* With mu held, after a write: in sync mode always, wait until it is
 * durable. */
int shard_write_done(struct shard *sh);
/* Wait until no barrier of sh is in flight (takes and drops mu). */
void shard_sync_settle(struct shard *sh);
/* ARMDB_READONLY (with a message) if the store failed an fdatasync. */
int shard_failed(struct shard *sh);
/* With mu held: drop record rec of the key with hash h from the indexes. */
void shard_forget(struct shard *sh, uint32_t rec, uint64_t h);
/* With mu held, for a put of mode (enum put_mode) on the key of record r
 * (-1: absent): 0 if the guard holds, else ARMDB_EXISTS, ARMDB_NOTFOUND,
 * ARMDB_CONFLICT or a read error. */
int shard_check_locked(struct shard *sh, int64_t r, const void *key, const void *expected, size_t elen, int mode);
/* With mu held: the key's record, added to the indexes (*fresh, zeroed but
 * for the key) if absent, so that the put cannot fail once appended. */
int64_t shard_claim(struct shard *sh, const void *key, uint64_t h, bool *fresh) MUST_CHECK;
/* With mu held: point record r at the put appended to f at voff (counted
 * as a put of this handle's; shard_point: not counted, another's). */
void shard_point(struct shard *sh, uint32_t r, bool fresh, struct dfile *f, uint64_t gsn, uint32_t voff,
                 const void *val, uint32_t vlen);
void shard_settle(struct shard *sh, uint32_t r, bool fresh, struct dfile *f, uint64_t gsn, uint32_t voff,
                  const void *val, uint32_t vlen);
/* With mu held: the entry rec points at is dead now. */
void shard_account_dead(struct shard *sh, const unsigned char *rec);
int shard_append(struct shard *sh, const void *key, const void *val, uint32_t vlen, bool tomb, uint64_t gsn,
                 uint64_t *gsn_out, uint32_t *voff) MUST_CHECK;
/* With mu held, before a barrier: ARMDB_READONLY if the store failed an
 * fdatasync; 1 after waiting (mu dropped) for the barrier in flight (look
 * again); 0 if none is. */
int shard_barrier_turn(struct shard *sh);
/* With mu held and no barrier in flight: the fdatasync of f (queued on the
 * ring, or made now) waited for outside mu, as the barrier in flight. */
int shard_sync_outside(struct shard *sh, struct dfile *f, bool queued);
/* With mu held: wait until the shard is durable up to upto (a position of
 * sh->pos); drops mu while the fdatasync runs. */
int shard_wait_durable(struct shard *sh, uint64_t upto);
int shard_get(struct shard *sh, const void *key, uint64_t h, void *buf, size_t cap, size_t *vlen);
int shard_sync(struct shard *sh);
/* A GSN up to which every entry of the shard is durable: the largest a
 * barrier covered, or, when all it holds is durable, the largest GSN
 * handed out before the call (later writes get larger ones). With sync,
 * a barrier first if anything is not durable. */
int shard_durable_gsn(struct shard *sh, bool sync, uint64_t *gsn) MUST_CHECK;
int shard_close(struct shard *sh);
/* Read the entry of record r into dst (r's value, vlen bytes) with the
 * shard locked on entry; unlocks it. fill: pages read from the device go
 * into the block cache. */
int shard_read_unlock(struct shard *sh, const unsigned char *r, const void *key, void *dst, bool fill);
/* The same for the entry of gsn at voff of f (which the caller holds a
 * reference to), in a store without inline values. */
int shard_read_at_unlock(struct shard *sh, struct dfile *f, uint64_t gsn, uint32_t voff, uint32_t vlen,
                         const void *key, void *dst);
void shard_account_write(struct shard *sh, uint64_t written);

enum put_mode { PUT_ALWAYS, PUT_IF_ABSENT, PUT_IF_EQUAL };

/* ---- compact.c ---- */
/* Bytes of f that compaction would reclaim: all but its live entries and
 * the tombstones that may still hide older entries. With mu held. */
uint64_t dfile_reclaimable(const struct shard *sh, const struct dfile *f);
/* Rewrite f's live entries into a new file and remove f. 0, 1 if f is
 * busy (being hinted or compacted, or active), -ECANCELED if stop was
 * set, or an error. */
int shard_compact_file(struct shard *sh, struct dfile *f, const atomic_bool *stop);
/* Compact, shard by shard, every file at or past the threshold (force:
 * every file with reclaimable bytes, the active one sealed first). */
int db_compact_pass(armdb *db, bool force);

/* A value of a get_many that must come from the device. */
struct pending_read {
    struct shard *sh;
    struct dfile *f; /* referenced until shard_get_finish */
    const void *key;
    uint64_t gsn, eoff, esize;
    uint32_t vlen;
    uint64_t first_page;
    uint32_t npages;
    uint64_t cache_end; /* its pages wholly below it may go into the block cache */
};
/* get_many, per key: 0 (value copied to dst), ARMDB_NOTFOUND,
 * ARMDB_BUFSMALL (*vlen set), an error, or 1: *p says what to read. */
int shard_get_begin(struct shard *sh, const void *key, uint64_t h, void *dst, size_t cap, size_t *vlen,
                    struct pending_read *p);
/* get_many, once p's pages are in buf (res bytes, or -errno): verify,
 * copy the value to dst, fill the cache, drop the file reference. */
int shard_get_finish(struct pending_read *p, unsigned char *buf, ssize_t res, void *dst);

/* ---- db.c ---- */
struct shm_head;
struct armdb {
    char *dir;
    int dirfd;
    int lockfd;
    struct meta meta;
    /* encrypted stores: the keys (NULL: plain), the rekey's new ones while
     * it runs, and the nonces reserved: [nonce_next, nonce_end) */
    struct crypt *crypt, *crypt_next;
    struct crypt *crypt_kept; /* replaced keys, freed at close */
    pthread_mutex_t meta_mu; /* rewrites of the meta file */
    atomic_uint_fast64_t nonce_next, nonce_end;
    /* rekey (rekey.c), under compact_mu: files compacted away but kept on
     * disk until the commit; and the gate writers wait at */
    struct retired {
        struct shard *sh;
        uint32_t id;
    } *retired;
    uint32_t nretired, retired_cap;
    bool rekey_failed;
    atomic_bool gate;
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    /* armdb_changes_wait: waiters sleep on feed_cv until max_gsn moves */
    pthread_mutex_t feed_mu;
    pthread_cond_t feed_cv;
    atomic_int feed_waiters;
    uint32_t key_len, value_len, nshards;
    uint32_t wbuf_size, flags;
    /* armdb_tune() changes these on an open store: sync_mode is read by
     * writers without a lock; interval_ms and sync_gen are under bg_mu */
    _Atomic uint32_t sync_mode;
    uint32_t interval_ms;
    uint64_t sync_gen;
    uint64_t max_file;
    uint32_t vmax;     /* largest value accepted */
    bool rdonly;
    bool replica; /* ARMDB_REPLICA: writes only through armdb_apply */
    /* ARMDB_SHARED (shared.c): the region, and whether this process loads
     * the store as it stands (another one recovered it) */
    struct shm_head *shm;
    size_t shm_size;
    atomic_uint_fast64_t *shm_gsn; /* the store's GSN counter in it (NULL: not shared) */
    bool shared, attaching;
    int maintfd;             /* LOCK again: its OFD lock for background work */
    pthread_mutex_t maint_mu; /* ... held by one thread of the process at a time */
    atomic_bool followed; /* an armdb_repl_follower applies to it */
    bool direct;       /* data files opened with O_DIRECT */
    bool use_uring;    /* io_uring wanted (not ARMDB_NO_URING) */
    atomic_bool uring_writes; /* every shard writes through its ring */
    atomic_int failed; /* -errno of a failed fdatasync: the store is read-only */
    atomic_uint_fast64_t max_gsn;
    struct shard *shards;
    struct cache *cache;
    /* background: interval syncs and hint files of rotated files */
    pthread_t sync_tid, hint_tid;
    bool sync_running, hint_running;
    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cv;   /* hint jobs */
    pthread_cond_t sync_cv; /* interval ticks (CLOCK_MONOTONIC) */
    bool bg_stop;
    struct dfile **hint_jobs; /* rotated files waiting for their hint */
    struct shard **hint_shards;
    uint32_t njobs, jobs_cap;
    /* compaction: one pass at a time, by the background thread or
     * armdb_compact(); compact_stop ends one early (close) */
    _Atomic double compact_threshold;
    atomic_bool compact_auto; /* the background thread compacts (not ARMDB_NO_AUTO_COMPACT) */
    atomic_uint_fast64_t compact_rate; /* compaction I/O bytes per second; 0 = no limit */
    bool pass_background; /* under compact_mu: the pass is the background thread's */
    pthread_mutex_t compact_mu;
    atomic_bool compact_stop;
    atomic_bool compact_wanted; /* a file may have passed the threshold */
    /* the write hook (armdb_set_hook), set while no write is under way */
    armdb_hook_fn hook;
    void *hook_ctx;
    bool hook_old;
    /* batches (batch.c): D of the DURABLE file, the largest GSN of a batch
     * member, and the runs of members never to apply */
    atomic_uint_fast64_t durable_gsn, batch_max;
    /* the largest GSN of a tombstone compaction has removed: a change
     * feed from below it cannot be complete (in the DURABLE file) */
    atomic_uint_fast64_t dropped_gsn;
    pthread_mutex_t durable_mu;
    bool durable_frozen; /* an aborted run could not be recorded: D stays */
    struct gsn_run {
        uint64_t first, last;
    } *aborted;
    uint32_t naborted, aborted_cap;
};

/* Does this handle change files beyond appends (cut torn tails, remove
 * leftovers, write hints at open)? Not read-only ones, nor a shared
 * store's later openers: the first one did that. */
static inline bool db_tidies(const armdb *db) { return !db->rdonly && !db->attaching; }
/* db_tidies, and not while a shared shard is loaded again. */
static inline bool shard_tidies(const struct shard *sh) { return db_tidies(sh->db) && !sh->reloading; }
/* The store's GSNs: from the shared region in shared mode, else from the
 * process-wide counter. n consecutive ones; the first is returned. */
uint64_t db_gsn_next(armdb *db, uint32_t n);
/* The largest GSN handed out so far. */
uint64_t db_gsn_last(armdb *db);

/* With meta_mu held: db->meta to the ARMDB file, durably. */
int db_write_meta(armdb *db) MUST_CHECK;
uint64_t gsn_next(void);
/* n consecutive GSNs; the first is returned. */
uint64_t gsn_next_n(uint32_t n);
/* The largest GSN handed out so far. */
uint64_t gsn_last(void);
static inline uint32_t shard_index(const armdb *db, uint64_t h)
{
    return (uint32_t)(((h >> 32) * db->nshards) >> 32);
}

/* ARMDB_INVAL (with a message naming what) on a shared store's handle. */
int db_check_shared(armdb *db, const char *what);
/* ARMDB_READONLY (with a message) if db takes no writes but armdb_apply's. */
int db_check_replica(armdb *db);
/* Call the write hook, if any, for one committed write; frees hn->old. */
void db_fire_hook(armdb *db, const void *key, const void *val, size_t vlen, bool del, struct hook_note *hn);

/* ---- shared.c: one store, several processes (ARMDB_SHARED) ---- */
/* A place in a shard's log: file id << 32 | byte offset (files stay under
 * 4 GiB). Packed so that one atomic word says it, and so that places
 * compare in log order (ids of active files increase). */
#define AT_PACK(id, off) ((uint64_t)(id) << 32 | (uint64_t)(off))
#define AT_ID(a) ((uint32_t)((a) >> 32))
#define AT_OFF(a) ((uint32_t)(a))
#define SHM_EVENTS 256u
enum { EV_ROTATE = 1, EV_ADD = 2, EV_REMOVE = 3 };
/* What changed a shard's set of files. A slot holds event `seq`; it is
 * written before nevents passes it (the publication). */
struct shm_event {
    uint64_t seq;
    uint32_t kind; /* EV_* */
    uint32_t id;   /* the file rotated (ROTATE), added or removed */
    uint32_t next; /* ROTATE: the new active file */
    uint32_t spare;
    uint64_t size; /* ROTATE: the old file's final size */
};
struct shm_shard {
    pthread_mutex_t mu;        /* robust, process-shared: writers of the shard */
    atomic_uint_fast64_t seq;  /* moves whenever head or the events move */
    atomic_uint_fast64_t head; /* AT_PACK of the end of the published log */
    atomic_uint_fast64_t durable; /* ... of what a barrier made durable */
    uint64_t pending;          /* AT_PACK of the end of an append under way */
    uint64_t undo, undo_tag;   /* a batch under way: head before it, its tag */
    uint64_t nevents;          /* events published */
    uint64_t repairs;          /* dead owners repaired */
    uint32_t next_id;          /* the next data file id */
    uint32_t spare;
    struct shm_event ev[SHM_EVENTS];
};
/* Open the shared store's lock and region: *first if this process is the
 * one to recover the store (it calls shared_create after), else attached.
 * Openers are serialised until shared_open_done. */
int shared_open(armdb *db, bool *first) MUST_CHECK;
/* The first opener, after recovery: the region made from its shards. */
int shared_create(armdb *db) MUST_CHECK;
int shared_open_done(armdb *db) MUST_CHECK;
/* Close: every shard durable; the last process out seals the active files
 * and removes the region. */
int shared_close(armdb *db);
void shared_unmap(armdb *db);
/* With mu held: take the shard's shared mutex (repairing what a dead owner
 * left) and catch up with everything published. No-op unless shared. */
int shard_write_begin(struct shard *sh) MUST_CHECK;
/* Publish (seq moved) and let go of the shared mutex. */
void shard_write_end(struct shard *sh);
/* With mu held: catch up if anything was published since last time. */
int shard_refresh(struct shard *sh);
/* Shared mode, with mu and the shared mutex held: append one entry at the
 * head (rotating first if it would pass max_file_size). */
int shared_append(struct shard *sh, const void *key, const void *val, uint32_t vlen, uint64_t gsn, uint64_t *voff)
    MUST_CHECK;
/* Shared mode, with mu held: wait until the log is durable up to upto. */
int shared_wait_durable(struct shard *sh, uint64_t upto);
/* Shared mode, with mu and the shared mutex held: an event written to its
 * slot, then its effect made, then it published (a repair publishes it
 * if its effect is found made: a file there (ADD), gone (REMOVE)). */
void shared_event_prepare(struct shard *sh, uint32_t kind, uint32_t id);
void shared_event_publish(struct shard *sh);
/* Shared mode, with mu and the shared mutex held, caught up: the active
 * file synced and sealed, a new one made the head. */
int shared_seal(struct shard *sh) MUST_CHECK;
/* A later opener, once the meta file is read and the shards are made:
 * the region of the processes already there. */
int shared_attach(armdb *db) MUST_CHECK;
/* The shard's shared mutex alone (a dead owner's state repaired). */
int shared_lock_shard(struct shard *sh) MUST_CHECK;
void shared_unlock_shard(struct shard *sh);
/* The next data file id (shared mode: the region's), with mu held (and
 * the shared mutex, in shared mode). */
uint32_t shard_take_id(struct shard *sh);
/* Batches in shared mode (batch.c), with the touched shards' mu held: the
 * batch mutex and the shards' shared mutexes taken, caught up; */
int shared_batch_begin(armdb *db, const bool *touched) MUST_CHECK;
/* before the first append: room made (bytes[s]: at most what shard s
 * gets, in count[s] entries), and the heads a dead writer's batch is
 * rolled back to; */
int shared_batch_mark(armdb *db, const bool *touched, const uint64_t *bytes, const uint32_t *count, uint64_t tag)
    MUST_CHECK;
/* after the last append: committed, or (!ok) rolled back; */
void shared_batch_commit(armdb *db, const bool *touched, bool ok);
/* published, and the mutexes let go. */
void shared_batch_end(armdb *db, const bool *touched);
/* Background work that writes or removes files runs in one process at a
 * time: take (wait for) and drop that lock. No-op unless shared. */
int shared_maint_lock(armdb *db, const atomic_bool *stop);
void shared_maint_unlock(armdb *db);

/* ---- rekey.c ---- */
/* Wait while a rekey holds writers back. */
void gate_wait(armdb *db);
/* With sh->mu held, before a write: wait (mu dropped) while the gate is
 * closed. */
void shard_gate(struct shard *sh);
/* A compacted file kept on disk until the rekey commits; -ENOMEM if it
 * cannot be kept track of (then it stays on disk: an open removes it). */
int retire_add(armdb *db, struct shard *sh, uint32_t id);
void retire_flush(armdb *db, bool unlink);

/* ---- batch.c ---- */
/* Read the DURABLE file (absent: D = 0, no aborted runs). */
int durable_load(armdb *db) MUST_CHECK;
/* Is gsn in a run of members recorded as never to apply? */
bool batch_aborted(armdb *db, uint64_t gsn);
/* Record members [first, last] (runs[0..n)) as never to apply, durably
 * unless the store is read-only. */
int batch_abort(armdb *db, uint64_t first, uint64_t last);
int batch_note_aborted(armdb *db, const struct gsn_run *runs, uint32_t n);
/* If batch members may be above D: a barrier on every shard, then D moved
 * up to the GSNs it covers. */
int durable_checkpoint(armdb *db);
/* At close, every shard durable: D moved up to the store's largest GSN. */
int durable_close(armdb *db);
/* Before a file of sh holding a tombstone of GSN gsn is removed: the
 * horizon of the change feed moved up to it, the store's durably, and
 * the shard's. */
int durable_note_dropped(struct shard *sh, uint64_t gsn) MUST_CHECK;
void gsn_observe(armdb *db, uint64_t gsn);
int db_queue_hint(armdb *db, struct shard *sh, struct dfile *f);
/* A file may have passed the compaction threshold: wake the background
 * thread (cheap when it is already told). */
void db_want_compaction(armdb *db);

#endif
