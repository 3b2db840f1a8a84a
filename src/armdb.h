/*
 * armdb.h - the public interface of libarmdb, and its manual.
 *
 * DESIGN
 *
 * armdb is a sharded Bitcask key-value store. A store is one directory and
 * one key length: keys are byte strings of exactly `key_len` bytes (1..512),
 * fixed when the store is created. A store is split into `shards` (1..256,
 * fixed at creation) by a hash of the key; each shard is a subdirectory with
 * its own lock, write buffer, append-only data files and in-memory index.
 *
 * Every write appends an entry (header, key, value) to the active data file
 * of its shard; a delete appends a tombstone. Each entry carries a GSN, a
 * process-wide 64-bit sequence number: when a store is opened, the entry
 * with the highest GSN for a key wins, whatever file holds it. The index
 * (a flat open-addressed hash table per shard) maps each live key to the
 * location of its newest value, so a get costs one index probe and at most
 * one read of the pages that hold the entry. Stores created with a fixed
 * `value_len` keep values inline in the index as well: their gets never touch
 * the disk.
 *
 * Data files are written in 4096-byte pages through an aligned per-shard
 * write buffer, with O_DIRECT where the filesystem allows it. Full buffers
 * go to the device through io_uring while appends go on in a second buffer
 * (or with pwrite, where io_uring is unavailable or ARMDB_NO_URING is set).
 * Reads are served from memory, from a block cache of pages (cache_size),
 * or from the device; armdb_get_many reads a batch's misses with one
 * io_uring submission. A data file
 * that reaches `max_file_size` is rotated: synced, made immutable and given a
 * hint file (the keys and value locations it holds), so reopening reads the
 * small hints instead of the data. Each open by a writer starts a fresh
 * active file in every shard; the previous one becomes immutable.
 *
 * COMPACTION
 *
 * Each data file counts the bytes of the entries the index points at and
 * of its tombstones. A background thread compacts an immutable file once
 * its reclaimable share (everything but live entries and the tombstones
 * that may still hide an older value) reaches `compaction_threshold`
 * (default 0.3); armdb_compact() compacts every file with anything to
 * reclaim (sealing first an active file that holds garbage). Compacting a
 * file copies its live entries, unchanged and with their GSN, into
 * `NNNNNNNN.compact.tmp`, fdatasyncs it, writes its hint, renames it to
 * `NNNNNNNN.data`, points the index at the copies, and removes the old
 * file and its hint. (At open, the newest data file without a hint is the
 * one that may end in a torn write; an output always has its hint first.) A
 * tombstone is copied while any other file's smallest GSN is below its
 * own, so a deleted key never comes back. Readers that found a value in
 * the old file before it was removed still read it: the file is closed
 * when its last reader lets go, and block cache names carry file ids,
 * which are never reused. A crash at any point leaves the old file, or
 * both (holding the same entries), or the new one; a leftover .tmp file is
 * removed at the next open by a writer. The threshold, automatic
 * compaction and a byte rate for compaction I/O can be changed on an open
 * store (see RUNTIME TUNING).
 *
 * ATOMIC BATCHES (FORMAT)
 *
 * armdb_batch() writes several keys, in any shards, all or nothing. On
 * disk a batch of m >= 2 writes is m ordinary entries, one in each key's
 * shard, whose GSNs are consecutive and whose GSN field carries flags in
 * the bits the entry format reserves:
 *
 *   bit 63  tombstone (a delete), as for any entry
 *   bit 62  GSN_BATCH: a member of a batch
 *   bit 61  GSN_FIRST: its first member (with bit 62)
 *   bit 60  GSN_LAST:  its last member (with bit 62)
 *
 * Recovery applies a member only if every GSN from its batch's first
 * member to its last is found, in whatever shards; otherwise none of
 * them. Members are flagged in hint files too. The file DURABLE in the
 * store directory (written to a temp name, fsynced, renamed) says which
 * members need that check:
 *
 *   0   8  magic "ARMDBDUR"
 *   8   8  D: every entry with a GSN up to D is durable in every shard
 *   16  4  n, then 4 zero bytes
 *   24  16 n times: first and last GSN of a run of members never to apply
 *          (a batch found torn at open, or cut short by a failed write)
 *   ..  8  XXH3-64 of the bytes before
 *
 * A member at or below D and in no such run is an ordinary entry; only
 * those may be dropped by compaction (a member above D is copied even when
 * dead, since its batch's check needs it). D moves up when the store is
 * closed and before a compaction pass (after a barrier on every shard).
 * A damaged DURABLE file fails the open with ARMDB_CORRUPT.
 *
 * DURABILITY
 *
 * A durability barrier writes the partial last page of each dirty shard and
 * fdatasyncs it. Bytes a barrier made durable are never changed afterwards:
 * the next barrier rewrites that page with the same bytes followed by new
 * entries, so a torn write can only damage entries that were never
 * acknowledged as durable. Barriers happen:
 *
 *   ARMDB_SYNC_INTERVAL  (default) every `sync_interval_ms` (default 50) on
 *                        each dirty shard, from a background thread; a crash
 *                        loses at most the writes of the last interval and
 *                        of the barrier in progress (one thread syncs the
 *                        shards in turn), and what survives of each shard
 *                        is a prefix of its writes.
 *   ARMDB_SYNC_ALWAYS    before each put/delete/cas returns. Concurrent writers
 *                        of one shard share one barrier (group commit): its
 *                        tail write and fdatasync go to the device in one
 *                        io_uring submission (linked, so the fdatasync starts
 *                        when the write is done; counted in
 *                        armdb_stat.ring_syncs), and the writers keep
 *                        appending while the device syncs.
 *   ARMDB_SYNC_NONE      only when armdb_sync() is called, on rotation and on
 *                        close (and pages reach the OS when the buffer fills).
 *
 * The mode and the interval can be changed on an open store (see RUNTIME
 * TUNING). After armdb_sync() returns 0, every earlier write survives
 * kill -9 and power loss. On open, each shard's last data file is scanned
 * and cut at the first entry that fails its checksum (the torn tail of a
 * crash). An entry that fails its checksum in an immutable file is counted
 * in armdb_stat.corrupt_entries, never loaded and never fatal. If fdatasync
 * fails, the store turns read-only (writes return ARMDB_READONLY; reads go on
 * working), because the kernel may have dropped the pages it failed to write.
 *
 * ENCRYPTION
 *
 * A store created with `encryption_key` (32 bytes, the caller's master key)
 * is encrypted for good (the meta file says so): every 4096-byte page of
 * its data and hint files is sealed with an AEAD from libsodium,
 * XChaCha20-Poly1305 by default or AES-256-GCM with ARMDB_CIPHER_AES (where
 * the CPU has AES-NI; the cipher is recorded, and opening such a store on a
 * CPU without it fails with ARMDB_MISMATCH naming the cipher).
 *
 *   Keys     the page key comes from the master key and the store's random
 *            16-byte salt (a keyed BLAKE2b, then libsodium's KDF). The meta
 *            file holds a key check derived the same way: a wrong key fails
 *            the open with ARMDB_BADKEY before any data file is read. The
 *            master key is copied at open (the caller may wipe its buffer
 *            at once); derived keys live in locked, guarded memory and are
 *            wiped at close. No message or file ever holds key bytes.
 *   Pages    each page is sealed once (a barrier zero-pads the last page
 *            and the next entry starts a new one; the padding counts as
 *            garbage for compaction). Its associated data binds the kind of
 *            file, shard, file id and page number, so a page or file moved
 *            anywhere else fails to open: a get of a damaged or moved page
 *            returns ARMDB_CORRUPT, never another value; at open, the last
 *            file is cut at the first page that fails (a torn tail), and a
 *            file none of whose pages opens fails the open (ARMDB_CORRUPT).
 *   Nonces   a 64-bit counter per store, never reused: the meta file records
 *            a floor, and each writer reserves 2^32 nonces above it (the meta
 *            file rewritten) before it seals with them.
 *   Tags     beside each NNNNNNNN.data is NNNNNNNN.tags: a 32-byte header
 *            (magic "ARMTAGS\1", the salt of the key, XXH3-64) then 24
 *            bytes per page: its nonce and 16-byte tag. Encrypted hint files
 *            carry their pages' slots after the pages.
 *   Memory   the slots of every data file are kept in memory: 24 bytes per
 *            4096-byte page (0.6% of the data).
 *   Cost     values are decrypted when their pages come from the device;
 *            the block cache holds plain pages. Small durable writes cost a
 *            page each (and the tags file is fdatasynced beside the data).
 *
 * armdb_rekey() seals every page again with a new key, compacting each
 * file while the store stays in use; see there for what a crash leaves.
 *
 * CAVEATS
 *
 * - Every live key is in memory: about key_len + 32 bytes per key (plus
 *   value_len for fixed-length values). armdb_stat.index_bytes_per_key says
 *   what a store really uses.
 * - Key length, value length and shard count can never change after creation.
 * - One writer process per store: the LOCK file is flock()ed; or any
 *   number of them, all opening it with ARMDB_SHARED (see SHARED MODE).
 *   Read-only opens (ARMDB_RDONLY) take no lock and see the store as it
 *   was when they opened it.
 * - Writes made since the last barrier are lost on a crash (see DURABILITY).
 * - Compaction keeps up with writes only as fast as one background thread
 *   copies live data: a burst of overwrites can take disk space well past
 *   live / (1 - compaction_threshold) until it has caught up. Every data
 *   file holds an open descriptor: max_file_size sets how many there are.
 * - Ordered stores (ARMDB_ORDERED, chosen at creation) keep a B+tree of
 *   record numbers per shard besides: about 5 to 7 more bytes per key
 *   (included in index_bytes_per_key), a put of a new key or a delete
 *   walks it under the shard's lock, and the open sorts every shard's keys
 *   to build it. Scans are not a point-in-time view (see armdb_iter_open).
 * - An encrypted store needs its key to open at all, and the key cannot be
 *   recovered from the store: lose it and the data is gone.
 * - Values read from disk are copied out; values larger than 64 KiB make the
 *   reading thread keep a scratch buffer of that size until it exits.
 * - O_DIRECT bypasses the kernel's page cache: reads are served by armdb's
 *   own block cache (cache_size, 64 MiB by default, per store), which keeps
 *   whole 4096-byte pages and is scan-resistant (S3-FIFO: a page read once
 *   does not push out pages read again; full scans do not fill it).
 *
 * SHARED MODE
 *
 * Several processes (the workers of an nginx, say) may read and write one
 * store at once, each opening it with ARMDB_SHARED. Each keeps its own
 * index, file descriptors, block cache and threads; they share the data
 * files, which serve as one log, and a small region of shared memory
 * (/dev/shm/armdb.<device>.<inode> of the store directory: a few KiB per
 * shard) with the GSN counter and, per shard, a robust process-shared
 * mutex, the head of the log, how far a barrier made it durable and the
 * events that changed its files (rotations, compactions).
 *
 * - A write takes its shard's mutex, applies to its own index what other
 *   processes wrote since it last looked, appends its entry to the file
 *   with one pwrite (no write buffer: data files are opened without
 *   O_DIRECT and written without io_uring in this mode), publishes it and
 *   lets go. A get checks a counter of the shard and catches up the same
 *   way if it moved, so it sees every write another process had
 *   acknowledged before it began; armdb_cas and armdb_batch (all or
 *   nothing, across processes too) hold the mutex across their check and
 *   write. Each process's interval thread catches up every
 *   sync_interval_ms, so a call finds at most that much to apply.
 * - Durability is as without this mode: a barrier (the interval thread of
 *   any process, armdb_sync, sync mode always) fdatasyncs what every
 *   process appended so far.
 * - A process killed while it holds a mutex (kill -9 in the middle of a
 *   write) leaves it to the next process that takes the mutex, which
 *   repairs what was half done before anyone reads the shard: an append
 *   not published is zeroed (it was never acknowledged), a batch not
 *   committed is rolled back, a rotation or compaction step whose effect
 *   was made is published. armdb_stat.shared_repairs counts these.
 * - Rotation and compaction by one process are seen by all: compaction and
 *   hint writing run in one process at a time (an OFD lock on byte 1 of
 *   LOCK), and the others point their indexes at a compaction's output
 *   and drop the files it removed when they catch up.
 * - Opening: the first process (none other holds the store) recovers it as
 *   a single writer would and makes the region afresh (a region left by
 *   processes that all died is never trusted); later ones load the files as
 *   they stand, changing nothing. Opens and closes are serialised by an
 *   OFD lock on byte 0 of LOCK. The last process to close seals the active
 *   files and gives them hints, as a single writer's close does, and
 *   removes the region.
 * - A shared store and a single writer exclude each other (ARMDB_LOCKED
 *   either way); read-only opens work beside both.
 *
 * Costs and limits: every process holds the whole index of the store (the
 *   memory of CAVEATS, once per process) and loads it at open; each write
 *   is a system call; the region keeps the last 256 file events per shard:
 *   a process that cannot catch up event by event (stopped while the
 *   others rotated or compacted more than that, or a file it had yet to
 *   read was compacted away) loads that shard again from its files, with
 *   the shard's mutex held meanwhile (armdb_stat.shared_reloads; an
 *   unordered scan under way may then see a key twice or miss one); a
 *   batch's writes to one shard must fit one data file (ARMDB_TOOBIG
 *   otherwise). Not available in this mode (ARMDB_INVAL):
 *   encrypted stores (a page is sealed once, and appends of several
 *   processes share pages), ARMDB_RDONLY and ARMDB_REPLICA, change feeds (a
 *   read-only open in another process can read one), checkpoints and
 *   serving replication. Write hooks fire in the process that
 *   wrote. A handle must not be used across fork(): open in each process.
 *
 * LIMITS
 *
 *   key_len             1 .. 512 bytes (ARMDB_KEY_MAX)
 *   value_len (fixed)   1 .. 4096 bytes (ARMDB_INLINE_MAX), 0 = variable
 *   variable value      0 .. write_buffer_size - 8192 bytes
 *   shards              1 .. 256 (default: number of online CPUs)
 *   write_buffer_size   64 KiB .. 256 MiB per shard, multiple of 4096
 *                       (default 1 MiB)
 *   max_file_size       64 KiB .. 3 GiB (default 256 MiB)
 *   sync_interval_ms    1 .. 60000 (default 50)
 *   compaction_threshold  0 .. 1 (0 = the default 0.3)
 *   keys per shard      2^31
 *
 * ERRORS
 *
 * Every fallible call returns an int: 0 on success, -errno for an operating
 * system failure (-ENOENT, -EACCES, -ENOSPC, -EIO, ...), or one of the
 * ARMDB_* codes below (all below -4095, so they never collide with -errno).
 * armdb_strerror() turns either kind into static text. armdb_errmsg() gives
 * a longer message about the last failure in the calling thread, naming the
 * file, field or pid involved.
 *
 * THREADS
 *
 * Every call may be made from any thread on one handle at the same time,
 * except armdb_close(), which must not race with other calls on the handle.
 * An iterator is used by one thread at a time.
 */
#ifndef ARMDB_H
#define ARMDB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the C ABI: bumped whenever a struct, enum or signature here
 * changes. The Lua binding refuses to load a library of another version. */
#define ARMDB_ABI_VERSION 8
#define ARMDB_VERSION_STRING "0.1.0"

/* Result codes besides 0 and -errno. */
enum armdb_rc {
    ARMDB_OK = 0,
    ARMDB_NOTFOUND = -30001, /* no such key; end of an iteration */
    ARMDB_BUFSMALL = -30002, /* value larger than the buffer; *vlen = size */
    ARMDB_CORRUPT = -30003,  /* stored bytes fail their checksum */
    ARMDB_LOCKED = -30004,   /* another process holds the writer lock */
    ARMDB_BADKEY = -30005,   /* wrong encryption key */
    ARMDB_MISMATCH = -30006, /* options contradict the stored meta file */
    ARMDB_INVAL = -30007,    /* invalid argument or option */
    ARMDB_READONLY = -30008, /* read-only open, or turned read-only by EIO */
    ARMDB_EXISTS = -30009,   /* cas with expected == NULL: key is present */
    ARMDB_KEYLEN = -30010,   /* key length differs from the store's key_len */
    ARMDB_TOOBIG = -30011,   /* value longer than the store accepts */
    ARMDB_CONFLICT = -30012, /* cas: current value differs from expected */
    ARMDB_FULL = -30013,     /* a fixed limit is reached (keys, file ids) */
    ARMDB_COMPACTED = -30014, /* changes since that GSN are no longer all kept (see CHANGE FEED) */
};

/* armdb_options.sync_mode */
enum armdb_sync_mode {
    ARMDB_SYNC_INTERVAL = 0,
    ARMDB_SYNC_NONE = 1,
    ARMDB_SYNC_ALWAYS = 2,
};

/* armdb_options.flags */
enum armdb_flags {
    ARMDB_CREATE = 1u << 0,    /* create the store if it does not exist */
    ARMDB_RDONLY = 1u << 1,    /* no writes, no lock, view as of open */
    ARMDB_ORDERED = 1u << 2,   /* create an ordered store: range, prefix, reverse scans */
    ARMDB_NO_URING = 1u << 3,  /* never use io_uring (also: env ARMDB_NO_URING=1) */
    ARMDB_NO_DIRECT = 1u << 4, /* never use O_DIRECT */
    ARMDB_NO_AUTO_COMPACT = 1u << 5, /* compact only when armdb_compact() is called */
    ARMDB_CIPHER_AES = 1u << 6,  /* create an encrypted store with AES-256-GCM (see ENCRYPTION) */
    ARMDB_REPLICA = 1u << 7,     /* a replica: writes only through armdb_apply (others: ARMDB_READONLY) */
    ARMDB_SHARED = 1u << 8,      /* several processes read and write the store at once (see SHARED MODE) */
};

/* armdb_stat.io_backend */
enum armdb_io_backend {
    ARMDB_IO_PWRITE = 1,
    ARMDB_IO_URING = 2,
};

/* armdb_iter_open() flags */
enum armdb_iter_flags {
    ARMDB_ITER_REVERSE = 1u << 0,
    ARMDB_ITER_PREFIX = 1u << 1,
    ARMDB_ITER_SNAPSHOT = 1u << 2, /* a point-in-time view (see armdb_iter_open) */
};

enum armdb_limits {
    ARMDB_KEY_MAX = 512,
    ARMDB_INLINE_MAX = 4096,
    ARMDB_SHARDS_MAX = 256,
    ARMDB_PAGE_SIZE = 4096,
    ARMDB_BATCH_MAX = 1024,
    ARMDB_SEAL_OVERHEAD = 48, /* armdb_seal: magic, nonce, tag */
};

typedef struct armdb armdb;
typedef struct armdb_iter armdb_iter;

/*
 * Options for armdb_open(). Call armdb_options_init() (or zero the struct):
 * every zero field means its documented default. When an existing store is
 * opened, key_len, value_len and shards of 0 mean "as stored"; any other
 * value must equal the stored one or the open fails with ARMDB_MISMATCH.
 */
typedef struct armdb_options {
    uint32_t key_len;           /* required at creation: 1..512 */
    uint32_t value_len;         /* 0 = variable; 1..4096 = fixed, inline */
    uint32_t shards;            /* 0 = online CPUs (at creation) */
    uint32_t write_buffer_size; /* per shard; 0 = 1 MiB */
    uint32_t sync_mode;         /* enum armdb_sync_mode */
    uint32_t sync_interval_ms;  /* 0 = 50 */
    uint32_t flags;             /* enum armdb_flags */
    uint32_t reserved;          /* must be 0 */
    uint64_t max_file_size;     /* 0 = 256 MiB */
    uint64_t cache_size;        /* block cache bytes; 0 = 64 MiB, at least 64 KiB */
    double compaction_threshold; /* 0 = 0.3: compact a file once this share of it is reclaimable */
    const unsigned char *encryption_key; /* 32 bytes: create/open an encrypted store (NULL: plain) */
} armdb_options;

/* Counters of one open handle (since its open), and the store's state. */
typedef struct armdb_stat {
    uint64_t keys;             /* live keys */
    uint64_t puts;             /* successful puts (cas included) */
    uint64_t gets;             /* get calls, found or not */
    uint64_t deletes;          /* successful deletes */
    uint64_t bytes_written;    /* bytes written (or handed to io_uring) to data files */
    uint64_t flushes;          /* write buffer flushes (full buffer) */
    uint64_t syncs;            /* fdatasync calls on data files */
    uint64_t ring_syncs;       /* of those, sent with their write in one io_uring submission */
    uint64_t rotations;        /* data files made immutable */
    uint64_t files;            /* data files in the store */
    uint64_t live_bytes;       /* bytes of entries the index points at */
    uint64_t dead_bytes;       /* bytes of overwritten/deleted entries */
    uint64_t index_bytes;      /* memory held by the indexes */
    uint64_t index_bytes_per_key; /* index_bytes / keys (0 if no keys) */
    uint64_t corrupt_entries;  /* damaged entries skipped at open */
    uint64_t hints_loaded;     /* data files indexed from their hint at open */
    uint64_t files_scanned;    /* data files indexed by scanning at open */
    uint64_t torn_bytes;       /* bytes of torn writes cut at open (encrypted stores cut on a page:
                                  the start of a torn entry in an intact page stays, as padding) */
    uint64_t gsn;              /* highest GSN this store has seen */
    uint64_t cache_hits;       /* block cache: pages served from memory */
    uint64_t cache_misses;     /* pages read from the device */
    uint64_t cache_evictions;  /* pages dropped to make room */
    uint64_t cache_bytes;      /* memory holding cached pages */
    uint64_t compactions;      /* files compacted */
    uint64_t compact_bytes_read;    /* bytes of the files compacted */
    uint64_t compact_bytes_written; /* bytes of their live entries rewritten; write amplification is
                                       (bytes_written + compact_bytes_written) / bytes_written */
    uint64_t bytes_reclaimed;  /* disk bytes compaction gave back */
    uint32_t io_backend;       /* enum armdb_io_backend */
    uint32_t direct_io;        /* 1 if data files use O_DIRECT */
    uint32_t read_only;        /* 1 if opened read-only or turned so by EIO */
    uint32_t shards;
    uint32_t key_len;
    uint32_t value_len;
    uint32_t shared;           /* 1 if opened with ARMDB_SHARED */
    uint64_t shared_applied;   /* shared mode: entries of other processes this handle caught up with */
    uint64_t shared_repairs;   /* shared mode: shards repaired after a process died holding their lock
                                  (by any process, since the first of them opened the store) */
    uint64_t shared_reloads;   /* shared mode: shards this handle loaded again from their files, having
                                  fallen too far behind the others to catch up (see SHARED MODE) */
} armdb_stat;

/* Fill *opts with defaults (all zero). */
void armdb_options_init(armdb_options *opts);

/*
 * Open the store in directory `dir` (created, with its parents' existence
 * required, when opts->flags has ARMDB_CREATE and no store is there).
 * opts may be NULL only to open an existing store with stored settings.
 * On success *out is a handle to pass to armdb_close().
 *
 * Returns 0, or
 *   ARMDB_INVAL     dir/out NULL, an option out of range (errmsg names it),
 *                   ARMDB_CIPHER_AES without a key, or at creation on a CPU
 *                   without AES-256-GCM; ARMDB_SHARED with ARMDB_RDONLY,
 *                   ARMDB_REPLICA or an encryption key
 *   ARMDB_BADKEY    the store is encrypted and the key is not its key, or
 *                   no key was given
 *   ARMDB_MISMATCH  key_len, value_len or shards differ from the store's, or
 *                   ARMDB_ORDERED given for a store created without it (an
 *                   ordered store opens ordered with or without the flag),
 *                   a key given for a plain store, ARMDB_CIPHER_AES for a
 *                   store with another cipher, or a cipher this CPU lacks
 *   ARMDB_LOCKED    another process writes the store (errmsg: its pid), or
 *                   ARMDB_SHARED and a process writes it without
 *   ARMDB_MISMATCH  (ARMDB_SHARED) the shared region is another store's
 *   ARMDB_CORRUPT   the meta file fails its checksum or magic; in an
 *                   encrypted store, a data file none of whose pages opens
 *                   or whose .tags file is missing
 *   ARMDB_FULL      a shard holds more keys than the index can address
 *   -ENOENT         no store at dir and ARMDB_CREATE not given
 *   -ENOTDIR, -EACCES, -EROFS, -ENOSPC, -EIO, -ENOMEM, ...
 */
int armdb_open(const char *dir, const armdb_options *opts, armdb **out);

/*
 * Write what is buffered, hint the active files, release the lock and free
 * the handle (even when an error is returned). NULL is a no-op returning 0.
 * Returns 0 or the first -errno met while making the data durable.
 */
int armdb_close(armdb *db);

/*
 * Set key to val (vlen bytes; val may be NULL when vlen is 0).
 * Returns 0, or ARMDB_INVAL (NULL pointer), ARMDB_KEYLEN, ARMDB_TOOBIG
 * (vlen over the limit, or != value_len in a fixed-value store),
 * ARMDB_READONLY, ARMDB_FULL, or -errno from writing (-ENOSPC, -EIO).
 * On error nothing was written, with one exception: in ARMDB_SYNC_ALWAYS
 * mode a failed fdatasync is reported after the entry was appended, so the
 * new value is visible and may or may not survive a crash (the store is
 * read-only from then on).
 */
int armdb_put(armdb *db, const void *key, size_t klen, const void *val, size_t vlen);

/*
 * Copy the value of key into buf (cap bytes) and set *vlen to its length.
 * Returns 0, ARMDB_NOTFOUND, ARMDB_BUFSMALL (*vlen = length needed; buf
 * untouched), ARMDB_CORRUPT (the stored entry fails its checksum),
 * ARMDB_INVAL, ARMDB_KEYLEN, or -errno from reading. buf may be NULL when
 * cap is 0 (to learn the length).
 */
int armdb_get(armdb *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen);

/*
 * Look up n keys (1..ARMDB_BATCH_MAX) at once. keys holds n keys of klen
 * bytes back to back. For each key i, rcs[i] is its result: 0 with its
 * value at out + offs[i], vlens[i] bytes long (values are packed into out
 * in key order); ARMDB_NOTFOUND; ARMDB_BUFSMALL if the value did not fit in
 * what was left of out (vlens[i] = its length: retry those keys with more
 * room); ARMDB_CORRUPT or -errno if its entry could not be read. Values in
 * memory (inline, write buffer, block cache) are copied at once; the rest
 * are read from the device in one batch, so a batch of cold keys costs
 * about one device round trip rather than one per key.
 *
 * Returns 0 if every key was looked up (each rcs[i] then says how),
 * ARMDB_BUFSMALL if at least one value did not fit, or ARMDB_INVAL (NULL
 * pointer, n out of range), ARMDB_KEYLEN, -ENOMEM before any lookup.
 */
int armdb_get_many(armdb *db, const void *keys, size_t klen, size_t n, void *out, size_t cap, size_t *offs,
                   size_t *vlens, int *rcs);

/* Delete key. Returns 0, ARMDB_NOTFOUND (nothing written), or as put. */
int armdb_delete(armdb *db, const void *key, size_t klen);

/*
 * Compare and set, atomically: with expected == NULL, set key only if it is
 * absent (else ARMDB_EXISTS); otherwise only if its value equals
 * expected/elen (else ARMDB_CONFLICT, or ARMDB_NOTFOUND if absent).
 * Other returns as put and get.
 */
int armdb_cas(armdb *db, const void *key, size_t klen, const void *expected, size_t elen,
              const void *val, size_t vlen);

/* Durability barrier on every shard. Returns 0 or -errno; after a failed
 * fdatasync the store is read-only. On a read-only handle: 0. */
int armdb_sync(armdb *db);

/*
 * Compact now: seal the active files that hold garbage, then rewrite every
 * immutable file with reclaimable bytes (overwritten or deleted entries,
 * tombstones no older entry needs) into new files and remove the old ones.
 * The background thread does the same, by itself, for files whose
 * reclaimable share reaches compaction_threshold (unless
 * ARMDB_NO_AUTO_COMPACT). Other calls go on meanwhile: the shard lock is
 * held for one key lookup, one barrier or one step of 1024 index updates
 * at a time. Entries keep their GSN; a deleted key never comes back.
 * Returns 0, ARMDB_READONLY, or an I/O error (the old files then stay).
 */
int armdb_compact(armdb *db);

/* Number of live keys. */
uint64_t armdb_count(armdb *db);

/* Fill *out. Returns 0 or ARMDB_INVAL. */
int armdb_stats(armdb *db, armdb_stat *out);

/* armdb_op.type */
enum armdb_op_type {
    ARMDB_OP_PUT = 1,    /* set key to val (vlen bytes) */
    ARMDB_OP_DELETE = 2, /* delete key (absent: nothing happens) */
    ARMDB_OP_CHECK = 3,  /* guard: key's value is val (vlen bytes); val NULL: key is absent */
};

typedef struct armdb_op {
    unsigned type;
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
} armdb_op;

/*
 * Apply ops[0..n) atomically: after a crash at any point, every put and
 * delete of the batch is visible or none is, whatever shards they touch.
 * Checks are evaluated first, against the store as it is before the batch;
 * if one fails, nothing is written. A key may be written (put or deleted)
 * at most once per batch; it may also be checked. Concurrent readers see
 * the batch's writes shard by shard (a get never waits for a whole batch),
 * but no write of another thread comes between its members. With
 * ARMDB_SYNC_ALWAYS the call returns once every member is durable.
 *
 * Returns 0, or
 *   ARMDB_INVAL     n over ARMDB_BATCH_MAX, an unknown type, a NULL key, two
 *                   writes of one key (errmsg names the ops by index)
 *   ARMDB_KEYLEN, ARMDB_TOOBIG   as for armdb_put (errmsg names the op)
 *   ARMDB_EXISTS, ARMDB_NOTFOUND, ARMDB_CONFLICT   a check failed (errmsg:
 *                   which op, and why); nothing was written
 *   ARMDB_READONLY, -errno   as for armdb_put; nothing is applied, and
 *                   members already appended are recorded as never to apply
 */
int armdb_batch(armdb *db, const armdb_op *ops, size_t n);

/*
 * WRITE HOOKS
 *
 * A function called after each committed write to the store: every put,
 * cas that succeeded, delete that removed a key, and each put and delete
 * of a batch. It runs in the thread that wrote, after the shard's lock is
 * released (so it may read the store and even write to it: a write from a
 * hook fires the hook again), after the write is durable when sync_mode is
 * ARMDB_SYNC_ALWAYS, and before the call that wrote returns. Two threads'
 * hooks run at the same time and in no set order; a batch's hooks run in
 * the order of its ops, after the whole batch is applied. Pointers in
 * *w are valid during the call only.
 */
typedef struct armdb_write {
    const void *key;
    size_t klen;
    const void *val; /* the new value; NULL for a delete */
    size_t vlen;
    const void *old; /* the value before (only with ARMDB_HOOK_OLD); NULL if absent */
    size_t oldlen;
    uint64_t gsn;    /* of the entry written */
    int deleted;     /* 1 for a delete */
    int had_old;     /* 1 if the key was present before */
} armdb_write;

typedef void (*armdb_hook_fn)(void *ctx, const armdb_write *w);

/* armdb_set_hook() flags */
enum armdb_hook_flags {
    ARMDB_HOOK_OLD = 1u << 0, /* pass the old value (costs a read of it under the lock) */
};

/* Set (fn != NULL) or clear (fn == NULL) the store's write hook, replacing
 * any other. Call it while no other thread writes to the store. Returns 0
 * or ARMDB_INVAL. */
int armdb_set_hook(armdb *db, armdb_hook_fn fn, void *ctx, unsigned flags);

/* Static text for any return code (library or -errno); never NULL. */
const char *armdb_strerror(int rc);

/* A message about the last failure in this thread, naming what failed
 * (file, field, pid); "" if none. Valid until the thread's next call. */
const char *armdb_errmsg(void);
/* The code that message was written for (0 if none): a call that fails
 * with rc wrote armdb_errmsg() if this equals rc. */
int armdb_errcode(void);

/* ARMDB_ABI_VERSION of the loaded library. */
int armdb_abi_version(void);

/*
 * Iterate over the store.
 *
 * Unordered stores support only the full scan: lo = hi = NULL, flags = 0,
 * in no particular order; anything else is ARMDB_INVAL. A key deleted and
 * re-inserted during such a scan may be seen twice.
 *
 * Ordered stores return keys in bytewise order (memcmp), merged across
 * shards, ascending or, with ARMDB_ITER_REVERSE, descending:
 *   lo, hi      the range [lo, hi); either NULL for unbounded. A bound may
 *               be shorter than key_len: a key that starts with the bound
 *               sorts after it (so lo = "ab" starts at the first key
 *               beginning "ab", hi = "ab" stops before it). lo >= hi is an
 *               empty scan. Longer than key_len: ARMDB_INVAL.
 *   ARMDB_ITER_PREFIX  lo is a prefix (0 .. key_len bytes): the keys that
 *               begin with it; hi must be NULL.
 *
 * While writes go on: every key that is live for the whole scan is
 * returned exactly once, with the value current when it is returned; the
 * order is strict (no key twice, even if deleted and re-inserted); a key
 * deleted before its turn is not returned; a key inserted during the scan
 * may or may not be. Such a scan is not a point-in-time view: two keys
 * changed together by a writer may be seen one old and one new. Each step
 * holds one shard's lock for a lookup or for buffering up to 16 KiB of
 * keys, never for a whole scan, and values are read as gets read them.
 *
 * ARMDB_ITER_SNAPSHOT (ordered or not) makes it a point-in-time view: the
 * store as of the moment of the open call, with no write of any thread
 * half in it (a batch is in whole or not at all), whatever is written,
 * deleted or compacted while it is read. The open locks every shard at
 * once to copy the location of every key in range (key_len + 32 bytes
 * each, plus inline values), so writers wait for that copy, about 10 ms
 * per million keys; and it holds a reference to every data file until the
 * iterator is closed, so files compacted meanwhile give their disk space
 * back only then.
 *
 * Returns 0 or ARMDB_INVAL (errmsg names the argument), -ENOMEM.
 */
int armdb_iter_open(armdb *db, const void *lo, size_t lolen, const void *hi, size_t hilen,
                    unsigned flags, armdb_iter **out);

/* 0 and the next pair (pointers valid until the next call on it), or
 * ARMDB_NOTFOUND at the end, or ARMDB_CORRUPT / -errno for a value that
 * could not be read (the scan can go on with the next call). */
int armdb_iter_next(armdb_iter *it, const void **key, size_t *klen, const void **val,
                    size_t *vlen);

/* Free the iterator. NULL is a no-op. */
void armdb_iter_close(armdb_iter *it);

/*
 * CHANGE FEED
 *
 * Every entry written with a GSN above `since`, puts and deletes, in GSN
 * order across shards, read from the data files: what a replica, an
 * incremental backup or a consumer of events applies to follow the store.
 *
 * The open takes a cut of the store: every shard locked at once (writers
 * wait for it, about a microsecond per data file), the store's largest GSN
 * noted as the feed's end (armdb_changes_end), and every data file holding
 * an entry above `since` referenced until the feed is closed (files
 * compacted meanwhile give their disk space back only then). The feed is
 * then exactly the entries in (since, end] that the files hold, no write of
 * any thread half in it (a batch is in whole or not at all), whatever is
 * written, rotated or compacted while it is read. Files whose entries are
 * all at or below `since` are never read (their hints say so); the others
 * are read one at a time, when the merge reaches them, from their hint
 * where they have one. Memory: the entries in range of the files being
 * merged (16 + key_len bytes each) and a read-ahead window of 1 MiB for
 * each, plus, at the open, a copy of each shard's write buffer not yet in
 * its file.
 *
 * What the feed holds: every entry that compaction has not dropped.
 * Compaction drops overwritten values (their key's newer entry is in the
 * feed, so a consumer that applies the feed in order ends at the store's
 * state as of `end`, but may skip intermediate values) and tombstones that
 * no older entry of their key needs any more. A consumer that has applied
 * everything up to `since` may still hold such a key, so a feed from a
 * `since` below the largest tombstone GSN compaction ever dropped (the
 * horizon, kept in the DURABLE file) fails with ARMDB_COMPACTED: start
 * again from a full copy (since = 0, which is always complete: a tombstone
 * is dropped only with every older version of its key) or a backup.
 * Damaged entries are skipped, as at open.
 *
 * ARMDB_CHANGES_LIVE: only entries that are still their key's current
 * version when handed out (no tombstones): the live keys in the order they
 * were last written, least recently written first.
 */
typedef struct armdb_changes armdb_changes;

typedef struct armdb_change {
    const void *key;
    size_t klen;
    const void *val; /* NULL for a delete */
    size_t vlen;     /* 0 for a delete */
    uint64_t gsn;
    uint32_t deleted; /* 1 for a delete (a tombstone) */
    uint32_t reserved;
} armdb_change;

/* armdb_changes_open() flags */
enum armdb_changes_flags {
    ARMDB_CHANGES_LIVE = 1u << 0,
};

/* Open a feed of the entries with a GSN above since (0: everything).
 * Returns 0, ARMDB_COMPACTED (errmsg names the horizon), ARMDB_INVAL
 * (unknown flags, since past the largest GSN), -ENOMEM. */
int armdb_changes_open(armdb *db, uint64_t since, unsigned flags, armdb_changes **out);

/* 0 and the next change in *out (pointers valid until the next call on
 * the feed), ARMDB_NOTFOUND at the end, or ARMDB_CORRUPT / -errno for an
 * entry or a file that could not be read (the error names it; the next
 * call goes on past it). */
int armdb_changes_next(armdb_changes *c, armdb_change *out);

/* The GSN the feed runs to: once it is read to its end, a consumer has
 * every change up to it (resume with since = end). */
uint64_t armdb_changes_end(const armdb_changes *c);

/* Free the feed. NULL is a no-op. */
void armdb_changes_close(armdb_changes *c);

/* The same feed for one shard (0 .. shards - 1): its entries above since,
 * in GSN order, as of a cut of that shard alone (the others are not
 * locked). For streams kept per shard, such as replication's. The horizon
 * is the shard's: the store's as it stood at open, then moved only by
 * tombstones dropped in that shard (ARMDB_COMPACTED as above). While a
 * follower is connected, compaction keeps the tombstones not yet sent to
 * it (see REPLICATION). Returns as armdb_changes_open,
 * and ARMDB_INVAL for a shard out of range. */
int armdb_changes_open_shard(armdb *db, uint32_t shard, uint64_t since, unsigned flags, armdb_changes **out);

/* The largest GSN of the entries of one shard (0: none): where a replica
 * that applies a leader's shard in GSN order stands, durably once synced,
 * after a crash too (what survives is a prefix). Returns 0 or ARMDB_INVAL. */
int armdb_shard_last_gsn(armdb *db, uint32_t shard, uint64_t *gsn);

/* Wait until the store's largest GSN passes since (give armdb_last_gsn()
 * as of the last look; a shard's own position would wake at once for
 * writes to other shards), or timeout_ms pass. Writers pay for this only
 * while someone waits. Returns 0 (something was written), -ETIMEDOUT,
 * ARMDB_INVAL. */
int armdb_changes_wait(armdb *db, uint64_t since, uint32_t timeout_ms);

/* The largest GSN the store has handed out or seen (0 for an empty store). */
uint64_t armdb_last_gsn(armdb *db);

/*
 * Apply a change read from another store's feed: its entry is written
 * here with the same GSN, unless the key already has an entry of that GSN
 * or a newer one (then nothing is written and 0 is returned), so applying
 * a feed again, or from an earlier point, is harmless. A delete writes a
 * tombstone even for an absent key. The store's GSN counter moves past the
 * change's. What incremental backups and replicas use; the write hook is
 * not called. Changes of one store should be applied in their GSN order
 * (as the feed gives them): a crash in between leaves a prefix of them.
 *
 * Returns 0, or as armdb_put (ARMDB_KEYLEN, ARMDB_TOOBIG, ARMDB_READONLY,
 * -errno), or ARMDB_INVAL (a GSN of 0 or past 2^60 - 1, a delete with a
 * value).
 */
int armdb_apply(armdb *db, const armdb_change *c);

/*
 * CHECKPOINTS
 *
 * An online, consistent copy of the store in a new directory, while writes
 * go on: what backups are made of. The copy is a store directory like any
 * other (open it with the same options and key), holding the store as it
 * was at one GSN (armdb_checkpoint_gsn): every write up to it, none after,
 * a batch whole or not at all.
 *
 * armdb_checkpoint_open() takes the cut: a barrier on every shard, one at
 * a time, then with every shard locked at once a last barrier on each
 * (writers wait for these: about one fdatasync per shard with writes since
 * the first round), the GSN noted, and every data file referenced with the
 * length to copy (all of an immutable file; of an active file what was
 * written, up to its last page in an encrypted store). It creates dest
 * (which must not exist) with its shard directories, the meta file and the
 * DURABLE file. armdb_checkpoint_step() then copies the files, about
 * max_bytes at a time (at least one chunk of 1 MiB), so a caller that must
 * not block for long (an event loop) can spread the copy; files compacted
 * meanwhile are read from the descriptors the checkpoint holds, and give
 * their disk space back when it is closed. Every file is fdatasynced, and
 * the directories fsynced at the end.
 *
 * ARMDB_CHECKPOINT_LINK: hard-link the immutable files that have their
 * hint (they are never written again) instead of copying them, where dest
 * is on the same filesystem: instant and free, but a copy that shares the
 * disk (and its failures) with the store.
 *
 * The copy of an encrypted store is sealed with the same key and salt.
 * Open it in place of the store (a restore), not beside it: a copy and
 * the store it came from both written to would each take nonces from the
 * same floor, under one key. A copy meant to live on beside the store is
 * rotated to a new key (armdb_rekey) before anything is written to it.
 *
 * A checkpoint closed before its last step leaves dest incomplete: remove
 * it. Returns (open) 0, ARMDB_EXISTS (dest exists), ARMDB_READONLY (a
 * read-only handle: the barriers need the writer's), ARMDB_INVAL (a NULL
 * argument, unknown flags, a key rotation under way), -errno.
 */
typedef struct armdb_checkpoint armdb_checkpoint;

enum armdb_checkpoint_flags {
    ARMDB_CHECKPOINT_LINK = 1u << 0,
};

int armdb_checkpoint_open(armdb *db, const char *dest, unsigned flags, armdb_checkpoint **out);

/* Copy about max_bytes more: 1 if there is more to copy, 0 when the copy
 * is complete and durable, or ARMDB_CORRUPT (a source file shorter than at
 * the cut) / -errno (errmsg names the file). *done and *total (either may
 * be NULL): bytes copied so far and in all. */
int armdb_checkpoint_step(armdb_checkpoint *cp, uint64_t max_bytes, uint64_t *done, uint64_t *total);

/* The GSN the copy holds the store at. */
uint64_t armdb_checkpoint_gsn(const armdb_checkpoint *cp);

/* Release the checkpoint (its file references). NULL is a no-op. */
void armdb_checkpoint_close(armdb_checkpoint *cp);

/* All of it in one call: open, every step, close; *gsn (may be NULL) the
 * copy's GSN. On failure dest may be left incomplete. */
int armdb_checkpoint_run(armdb *db, const char *dest, unsigned flags, uint64_t *gsn);

/*
 * REPLICATION
 *
 * A leader serves its stores on a TCP address; a follower (a read replica)
 * connects, names the store it follows, and asks for every shard from the
 * last GSN it holds. The leader sends what its files hold after that (the
 * change feed, one stream per shard), then each write as it lands, in
 * batches of at most batch_entries entries and batch_bytes bytes, with a
 * heartbeat every heartbeat_ms while idle. The follower applies each entry
 * with armdb_apply (the leader's GSN and bytes), makes it durable
 * (armdb_sync at most every ack_interval_ms) and acknowledges it; the
 * leader knows each follower's position and lag from those.
 *
 * The leader sends only what is durable on it (running a barrier itself
 * when that holds entries back), so a crash of the leader never takes
 * back what a follower holds. A batch reaches a follower whole, but is
 * applied there entry by entry: a reader of the follower may see part of
 * it for a moment, and a follower that crashed in the middle completes
 * it when it reconnects.
 *
 * The follower's store is opened with ARMDB_REPLICA: readers use it the
 * whole time; writes other than the leader's fail with ARMDB_READONLY.
 * Its position is the store itself (armdb_shard_last_gsn of each shard,
 * durable after its barrier; a crash leaves a prefix, which the next
 * connection continues). It is also written, for `armdb status`, to the
 * file REPLICA in the store's directory at most once a second (text,
 * "name value" lines); the leader writes REPLICATION there the same way,
 * one line per follower.
 *
 * When the leader can no longer serve a follower's position (compaction
 * dropped a delete after it: ARMDB_COMPACTED), or the follower holds GSNs
 * past the leader's last (it followed another history, e.g. a leader
 * restored from an older copy), it tells the follower to start over. The follower then builds a full copy from GSN 0 in the
 * directory DIR.resync beside its own (DIR keeps serving reads, stale,
 * meanwhile), and when that copy has caught up its state becomes
 * ARMDB_REPL_SWAP: the owner of the store handle calls
 * armdb_repl_follower_swap() at a moment no other thread uses the handle,
 * which exchanges the two directories (renameat2 RENAME_EXCHANGE, one
 * atomic step), opens the copy in place of the old store, closes the old
 * one and removes it. A crash at any point leaves DIR whole, either the
 * old store or the copy; armdb_repl_follow() finishes or discards what a
 * swap or a resync left behind.
 *
 * Security. With a secret (at least 16 bytes, the same on both sides) a
 * follower proves it holds it before it gets any data, and every frame is
 * encrypted and authenticated with keys derived from it and both sides'
 * random nonces (libsodium secretstream). Without a secret the leader
 * listens on loopback addresses only and refuses peers from elsewhere.
 * A frame that is malformed, too large, out of order or fails to decrypt
 * ends that connection (the leader counts it in its stats, with the
 * message); nothing of it is applied.
 *
 * Addresses are "HOST:PORT": an IPv4 address, "[IPv6]", or a name
 * (resolved once at the call). Port 0 on the leader binds a free port
 * (armdb_repl_server_port).
 *
 * Threads: the leader has one thread accepting and one per follower; a
 * follower has one. Every call here is thread-safe; stats may be read at
 * any time from any thread.
 */
typedef struct armdb_repl_server armdb_repl_server;
typedef struct armdb_repl_follower armdb_repl_follower;

typedef struct armdb_repl_options {
    const void *secret;        /* shared secret, or NULL (leader: loopback only) */
    uint32_t secret_len;       /* 16..1024 bytes when secret is set */
    uint32_t batch_entries;    /* leader: entries per batch; 0 = 256 */
    uint32_t batch_bytes;      /* leader: entry bytes per batch; 0 = 64 KiB, at most 1 MiB */
    uint32_t heartbeat_ms;     /* leader: idle heartbeat; 0 = 1000 */
    uint32_t timeout_ms;       /* both: a peer silent this long is gone; 0 = 5000 (> 2 heartbeats) */
    uint32_t max_followers;    /* leader: connections at once; 0 = 64 */
    uint32_t retry_min_ms;     /* follower: first reconnect delay, doubling; 0 = 1000 */
    uint32_t retry_max_ms;     /* follower: largest reconnect delay; 0 = 30000 */
    uint32_t ack_interval_ms;  /* follower: sync and acknowledge at most this often; 0 = 50 */
    uint32_t reserved;         /* must be 0 */
} armdb_repl_options;

/* Zero every field (every default). */
void armdb_repl_options_init(armdb_repl_options *o);

/* ---- leader ---- */

/* Listen on addr (NULL: "127.0.0.1:0"). Stores are added with
 * armdb_repl_server_add; a follower naming no added store is refused.
 * ARMDB_INVAL for a bad address or option, or a non-loopback address
 * without a secret; -errno from socket/bind/listen (-EADDRINUSE). */
int armdb_repl_serve(const char *addr, const armdb_repl_options *opts, armdb_repl_server **out);
/* Serve db under name (1..63 bytes of [A-Za-z0-9_.-]). db must stay open
 * until the server is closed. ARMDB_EXISTS for a name already served. */
int armdb_repl_server_add(armdb_repl_server *srv, const char *name, armdb *db);
/* Bytes a follower may fetch with armdb_repl_fetch_meta (a Lua database's
 * CATALOG: which stores there are). Copied; replaces the previous ones.
 * At most 1 MiB. */
int armdb_repl_server_set_meta(armdb_repl_server *srv, const void *meta, size_t len);
/* The port listened on (host order). */
int armdb_repl_server_port(const armdb_repl_server *srv);

/* armdb_repl_peer.state, armdb_repl_follower_stat.state */
enum armdb_repl_state {
    ARMDB_REPL_CONNECTING = 1, /* follower: connecting, or waiting to retry */
    ARMDB_REPL_CATCHING_UP = 2, /* sending/receiving what the files held at subscribe */
    ARMDB_REPL_LIVE = 3,       /* every shard caught up; live entries follow */
    ARMDB_REPL_RESYNC = 4,     /* follower: building the full copy in DIR.resync */
    ARMDB_REPL_SWAP = 5,       /* follower: the copy caught up; armdb_repl_follower_swap() is due */
    ARMDB_REPL_STOPPED = 6,    /* follower: stopped on an error that retrying cannot mend */
};

/* One connected follower, as the leader sees it. */
typedef struct armdb_repl_peer {
    char addr[64];           /* the follower's address and port */
    char store[64];          /* the store it follows */
    uint32_t state;          /* CATCHING_UP or LIVE */
    uint32_t reserved;
    uint64_t sent_gsn;       /* every entry up to it sent, on every shard */
    uint64_t acked_gsn;      /* every entry up to it applied and durable on the follower */
    uint64_t lag_gsn;        /* leader's last GSN - acked_gsn */
    uint64_t lag_ms;         /* 0 when acked_gsn is the leader's last GSN, else how long since it was */
    uint64_t entries, bytes; /* sent on this connection */
    uint64_t connected_ms;   /* how long ago it connected */
} armdb_repl_peer;

typedef struct armdb_repl_server_stat {
    uint64_t accepted;   /* connections accepted, ever */
    uint64_t refused;    /* of those, refused at the handshake (secret, shape, store, address) */
    uint64_t failed;     /* of those, ended by an error after it (malformed frame, I/O, timeout;
                          * not a follower hanging up) */
    uint64_t resyncs;    /* followers told to start over */
    uint32_t followers;  /* connected now */
    int32_t last_error;  /* the last refusal or failure, 0 if none */
    char last_error_msg[256];
} armdb_repl_server_stat;

/* The server's counters, and up to cap followers in peers (*n: how many
 * were filled; peers may be NULL with cap 0). */
int armdb_repl_server_stats(armdb_repl_server *srv, armdb_repl_server_stat *st, armdb_repl_peer *peers,
                            uint32_t cap, uint32_t *n);
/* Stop listening, end every connection, join the threads. NULL is a no-op. */
void armdb_repl_server_close(armdb_repl_server *srv);

/* ---- follower ---- */

/* Follow the store name at addr into db, a store opened with
 * ARMDB_REPLICA and the options store_opts (kept, with the encryption key
 * copied: a resync opens its copy with them). Returns once the thread is
 * started; connecting, retrying and errors show in the stats.
 * ARMDB_INVAL (db not a replica, bad address or option), ARMDB_EXISTS (db
 * already followed), -errno. Before starting, a resync or swap that a
 * crash cut short is finished or discarded (see above); db must be the
 * store at store_dir, which is what armdb_repl_follower_swap renames. */
int armdb_repl_follow(armdb *db, const char *store_dir, const armdb_options *store_opts, const char *addr,
                      const char *name, const armdb_repl_options *opts, armdb_repl_follower **out);

typedef struct armdb_repl_follower_stat {
    uint32_t state;          /* enum armdb_repl_state */
    int32_t last_error;      /* the last connection's error, 0 if none */
    uint64_t applied_gsn;    /* every entry of the leader up to it is applied here */
    uint64_t durable_gsn;    /* ... and durable (acknowledged) */
    uint64_t leader_gsn;     /* the leader's last GSN, as last heard */
    uint64_t lag_gsn;        /* leader_gsn - applied_gsn */
    uint64_t entries, bytes; /* applied, since the follower started */
    uint64_t connects;       /* connections that passed the handshake */
    uint64_t resyncs;        /* full copies started */
    uint64_t last_contact_ms; /* since the last frame from the leader (UINT64_MAX: never) */
    char last_error_msg[256];
} armdb_repl_follower_stat;

int armdb_repl_follower_stats(armdb_repl_follower *f, armdb_repl_follower_stat *st);

/* In state ARMDB_REPL_SWAP: put the caught-up copy in place of old (the
 * db given to armdb_repl_follow, which no other thread may use during the
 * call and which is closed by it) and return the new handle in *out; the
 * follower goes on into it. ARMDB_INVAL if no swap is due or old is not
 * the followed handle. On an error old stays open and followed, and the
 * copy is kept for the next try. */
int armdb_repl_follower_swap(armdb_repl_follower *f, armdb *old, armdb **out);

/* Wait until the follower's applied_gsn reaches gsn (0 or -ETIMEDOUT). */
int armdb_repl_follower_wait(armdb_repl_follower *f, uint64_t gsn, uint32_t timeout_ms);

/* Stop the thread and close the connection (the store stays open, and
 * durable up to what was acknowledged). NULL is a no-op. */
void armdb_repl_follower_close(armdb_repl_follower *f);

/* Fetch the leader's meta bytes (armdb_repl_server_set_meta), with the
 * same handshake and secret as a follower: into buf (cap bytes), *len set
 * to their size (ARMDB_TOOBIG, with *len set, if cap is smaller;
 * ARMDB_NOTFOUND if the leader has none). */
int armdb_repl_fetch_meta(const char *addr, const armdb_repl_options *opts, void *buf, size_t cap,
                          size_t *len);

/*
 * KEY ROTATION
 *
 * Seal every page of the encrypted store again with new_key (32 bytes),
 * with a new salt. Runs in the calling thread and returns when done; other
 * threads go on using the store meanwhile. Each file is compacted into one
 * sealed with the new key (dead entries dropped on the way), in passes,
 * while writes go on with the old key; for the last pass writers wait at
 * their next write (readers do not) until the files written since are
 * done and the meta file names the new key. The work is that of
 * armdb_compact() over the whole store; the pause for writers is that of
 * compacting what was written during the pass before.
 *
 * Crash safety: the meta file says which key opens the store. Until it
 * names the new one (one atomic rename), the old key opens the store and
 * every file of the old key is kept on disk; after, the new key opens it
 * and all data is in files of the new key. An open removes the files of
 * the other key that a rekey cut short left behind. Nothing acknowledged
 * is lost either way.
 *
 * Returns 0, or
 *   ARMDB_INVAL     db or new_key NULL, a plain store, or an earlier
 *                   rekey on this handle failed (reopen the store first)
 *   ARMDB_READONLY  a read-only open, or turned read-only by EIO
 *   ARMDB_CORRUPT   a file holds entries that cannot be read: they are not
 *                   re-encrypted, and the store stays with the old key
 *   -errno          the store stays with the old key (reopen before trying
 *                   again)
 */
int armdb_rekey(armdb *db, const unsigned char *new_key);

/*
 * RUNTIME TUNING
 *
 * Settings of an open store that can change while it is in use, without a
 * reopen. armdb_tune() applies the fields named in t->set (bits of enum
 * armdb_tune_fields) and leaves the others as they are; every named field
 * is checked before any is applied, so a refused call changes nothing.
 * armdb_tuning_get() reads them all. Nothing is stored: a reopen starts
 * again from armdb_options (compact_bytes_per_sec from 0).
 *
 *   sync_mode             applies to writes that begin after the call.
 *                         Switching to ARMDB_SYNC_ALWAYS does not make
 *                         earlier writes durable (the next barrier, or
 *                         armdb_sync(), does); switching to
 *                         ARMDB_SYNC_INTERVAL starts the interval thread if
 *                         the store was opened without it; leaving it
 *                         parks the thread (no more interval barriers).
 *   sync_interval_ms      1..60000; the next interval barrier is due that
 *                         long after the call.
 *   compaction_threshold  0..1 (0 = the default 0.3); the background
 *                         thread looks at every file again.
 *   auto_compact          0: the background thread compacts nothing (a
 *                         pass under way stops at its next entry; the file
 *                         it was copying stays as it was); 1: it compacts
 *                         files past the threshold, looking at once.
 *                         armdb_compact() runs either way.
 *   compact_bytes_per_sec 0 = no limit. Otherwise compaction (background
 *                         or armdb_compact()) sleeps between chunks of
 *                         64 KiB so that the bytes it reads and writes for
 *                         each file stay under this many per second since
 *                         that file began: compacting n bytes takes at
 *                         least about n / rate seconds. No lock is held
 *                         while it sleeps, and a close cuts the sleep short
 *                         (within 100 ms). armdb_rekey() is never limited.
 *
 * Returns 0, or
 *   ARMDB_INVAL     db or t NULL, unknown bits in t->set, a named field out
 *                   of range (errmsg names it)
 *   ARMDB_READONLY  the store was opened read-only
 *   -EAGAIN, ...    the interval thread could not be started (the sync
 *                   mode stays as it was; nothing else is applied)
 * armdb_tuning_get: 0 (out->set has every bit) or ARMDB_INVAL (NULL).
 */
typedef struct armdb_tuning {
    uint32_t set;                   /* enum armdb_tune_fields: what armdb_tune() applies */
    uint32_t sync_mode;             /* enum armdb_sync_mode */
    uint32_t sync_interval_ms;      /* 1..60000 */
    uint32_t auto_compact;          /* 0 or 1 */
    double compaction_threshold;    /* 0..1, 0 = 0.3 */
    uint64_t compact_bytes_per_sec; /* 0 = no limit */
} armdb_tuning;

/* armdb_tuning.set */
enum armdb_tune_fields {
    ARMDB_TUNE_SYNC_MODE = 1u << 0,
    ARMDB_TUNE_SYNC_INTERVAL = 1u << 1,
    ARMDB_TUNE_COMPACTION_THRESHOLD = 1u << 2,
    ARMDB_TUNE_AUTO_COMPACT = 1u << 3,
    ARMDB_TUNE_COMPACT_RATE = 1u << 4,
};

int armdb_tune(armdb *db, const armdb_tuning *t);
int armdb_tuning_get(armdb *db, armdb_tuning *out);

/*
 * Seal n bytes at in (XChaCha20-Poly1305, a random nonce) with a key
 * derived from `key`, an encrypted store's master key, for files kept
 * beside a store (the Lua layer's batch intents): out receives
 * n + ARMDB_SEAL_OVERHEAD bytes. armdb_unseal opens n such bytes into
 * n - ARMDB_SEAL_OVERHEAD bytes at out, or fails with ARMDB_CORRUPT
 * (damaged, not a sealed blob, or another key). Both: ARMDB_INVAL for a
 * NULL argument.
 */
int armdb_seal(const unsigned char *key, const void *in, size_t n, void *out);
int armdb_unseal(const unsigned char *key, const void *in, size_t n, void *out);

/*
 * VERIFICATION
 *
 * armdb_verify() reads every data file of the store, live entries and dead
 * ones alike, and checks what a get or an open would: the checksum of
 * every entry, the AEAD tag of every sealed page (encrypted stores), the
 * hint of every immutable file (its checksum, and its pages' tags), and
 * each file's length against its hint. It runs in the calling thread and
 * returns when done; other threads go on using the store meanwhile (each
 * shard's lock is held only to list its files; each file is referenced
 * while it is read, so a compaction cannot take it away). The active file
 * is read up to what is in it (what has left the write buffer, or the last
 * barrier wrote): the rest is in memory only, and is checked once it is
 * written.
 * The work is one read of every data file (two in an encrypted store: the
 * page tags are checked in a pass of their own) and of every hint.
 *
 * fn (if not NULL) is called, in the calling thread and with no lock
 * held, for each damage found and, with what = ARMDB_VERIFY_FILE, after
 * each data file (for progress); it returns 0 to go on, anything else to
 * stop armdb_verify(), which then returns that value. *out is filled
 * either way (what was verified until then). Damage:
 *
 *   ARMDB_VERIFY_ENTRY  bytes that are not an intact entry: offset is
 *                       where the first damaged entry starts, length runs
 *                       to the next intact entry (or the end of the data).
 *                       Several damaged entries in a row are one report.
 *   ARMDB_VERIFY_PAGE   a sealed page that fails its tag: offset of the
 *                       page, length 4096. Entries wholly inside it are
 *                       not reported again.
 *   ARMDB_VERIFY_HINT   the file's hint, NNNNNNNN.hint, fails its check
 *                       (offset and length 0): the next open scans the
 *                       data file instead.
 *   ARMDB_VERIFY_SHORT  the data file ends before its hint says: offset is
 *                       its length, length the bytes missing.
 *   ARMDB_VERIFY_READ   the file could not be read (rc: -errno); the rest
 *                       of it is not verified.
 *
 * Offsets are byte offsets in the data file DIR/SSS/NNNNNNNN.data, where
 * SSS is the shard number in three hexadecimal digits and NNNNNNNN the
 * file id in eight decimal ones.
 *
 * Returns 0 (nothing damaged), ARMDB_CORRUPT (damage found: errmsg counts
 * it), the first -errno of a file that could not be read (the others are
 * verified all the same), fn's non-zero answer, ARMDB_INVAL (db or out
 * NULL) or -ENOMEM.
 */
enum armdb_verify_what {
    ARMDB_VERIFY_FILE = 0, /* not damage: a data file is done (length: its bytes verified) */
    ARMDB_VERIFY_ENTRY = 1,
    ARMDB_VERIFY_PAGE = 2,
    ARMDB_VERIFY_HINT = 3,
    ARMDB_VERIFY_SHORT = 4,
    ARMDB_VERIFY_READ = 5,
};

typedef struct armdb_verify_damage {
    uint32_t shard;  /* shard number */
    uint32_t file;   /* data file id */
    uint32_t what;   /* enum armdb_verify_what */
    int32_t rc;      /* ARMDB_CORRUPT; -errno for ARMDB_VERIFY_READ; 0 for ARMDB_VERIFY_FILE */
    uint64_t offset; /* in the data file */
    uint64_t length;
} armdb_verify_damage;

typedef struct armdb_verify_report {
    uint64_t files;           /* data files verified to their end */
    uint64_t entries;         /* intact entries (puts and tombstones, live or dead) */
    uint64_t bytes;           /* bytes of data files verified */
    uint64_t pages;           /* sealed pages checked (0 in a plain store) */
    uint64_t hints;           /* intact hint files */
    uint64_t damage;          /* damage reported, of every kind */
    uint64_t damaged_entries; /* ARMDB_VERIFY_ENTRY reports */
    uint64_t damaged_pages;   /* ARMDB_VERIFY_PAGE */
    uint64_t damaged_hints;   /* ARMDB_VERIFY_HINT */
    uint64_t short_files;     /* ARMDB_VERIFY_SHORT */
    uint64_t unread_files;    /* ARMDB_VERIFY_READ */
} armdb_verify_report;

typedef int (*armdb_verify_fn)(void *ctx, const armdb_verify_damage *d);

int armdb_verify(armdb *db, armdb_verify_fn fn, void *ctx, armdb_verify_report *out);

#ifdef __cplusplus
}
#endif

#endif /* ARMDB_H */
