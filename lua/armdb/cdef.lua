-- armdb.cdef: the one mirror of src/armdb.h for the FFI.
--
-- Nothing else: no helpers, no other library's declarations. When armdb.h
-- changes, this file changes with it and ABI_VERSION follows
-- ARMDB_ABI_VERSION; spec/01-abi_spec.lua compiles a program against the
-- real header and checks every size, offset and enum value here.
local ffi = require("ffi")

local M = { ABI_VERSION = 8 }

ffi.cdef([[
enum armdb_rc {
    ARMDB_OK = 0,
    ARMDB_NOTFOUND = -30001,
    ARMDB_BUFSMALL = -30002,
    ARMDB_CORRUPT = -30003,
    ARMDB_LOCKED = -30004,
    ARMDB_BADKEY = -30005,
    ARMDB_MISMATCH = -30006,
    ARMDB_INVAL = -30007,
    ARMDB_READONLY = -30008,
    ARMDB_EXISTS = -30009,
    ARMDB_KEYLEN = -30010,
    ARMDB_TOOBIG = -30011,
    ARMDB_CONFLICT = -30012,
    ARMDB_FULL = -30013,
    ARMDB_COMPACTED = -30014,
};

enum armdb_sync_mode {
    ARMDB_SYNC_INTERVAL = 0,
    ARMDB_SYNC_NONE = 1,
    ARMDB_SYNC_ALWAYS = 2,
};

enum armdb_flags {
    ARMDB_CREATE = 1,
    ARMDB_RDONLY = 2,
    ARMDB_ORDERED = 4,
    ARMDB_NO_URING = 8,
    ARMDB_NO_DIRECT = 16,
    ARMDB_NO_AUTO_COMPACT = 32,
    ARMDB_CIPHER_AES = 64,
    ARMDB_REPLICA = 128,
    ARMDB_SHARED = 256,
};

enum armdb_io_backend {
    ARMDB_IO_PWRITE = 1,
    ARMDB_IO_URING = 2,
};

enum armdb_iter_flags {
    ARMDB_ITER_REVERSE = 1,
    ARMDB_ITER_PREFIX = 2,
    ARMDB_ITER_SNAPSHOT = 4,
};

enum armdb_limits {
    ARMDB_KEY_MAX = 512,
    ARMDB_INLINE_MAX = 4096,
    ARMDB_SHARDS_MAX = 256,
    ARMDB_PAGE_SIZE = 4096,
    ARMDB_BATCH_MAX = 1024,
    ARMDB_SEAL_OVERHEAD = 48,
};

enum armdb_op_type {
    ARMDB_OP_PUT = 1,
    ARMDB_OP_DELETE = 2,
    ARMDB_OP_CHECK = 3,
};

enum armdb_hook_flags {
    ARMDB_HOOK_OLD = 1,
};

enum armdb_tune_fields {
    ARMDB_TUNE_SYNC_MODE = 1,
    ARMDB_TUNE_SYNC_INTERVAL = 2,
    ARMDB_TUNE_COMPACTION_THRESHOLD = 4,
    ARMDB_TUNE_AUTO_COMPACT = 8,
    ARMDB_TUNE_COMPACT_RATE = 16,
};

typedef struct armdb_tuning {
    uint32_t set;
    uint32_t sync_mode;
    uint32_t sync_interval_ms;
    uint32_t auto_compact;
    double compaction_threshold;
    uint64_t compact_bytes_per_sec;
} armdb_tuning;

typedef struct armdb armdb;
typedef struct armdb_iter armdb_iter;

typedef struct armdb_op {
    unsigned type;
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
} armdb_op;

typedef struct armdb_write {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
    const void *old;
    size_t oldlen;
    uint64_t gsn;
    int deleted;
    int had_old;
} armdb_write;

typedef void (*armdb_hook_fn)(void *ctx, const armdb_write *w);

typedef struct armdb_options {
    uint32_t key_len;
    uint32_t value_len;
    uint32_t shards;
    uint32_t write_buffer_size;
    uint32_t sync_mode;
    uint32_t sync_interval_ms;
    uint32_t flags;
    uint32_t reserved;
    uint64_t max_file_size;
    uint64_t cache_size;
    double compaction_threshold;
    const unsigned char *encryption_key;
} armdb_options;

typedef struct armdb_stat {
    uint64_t keys;
    uint64_t puts;
    uint64_t gets;
    uint64_t deletes;
    uint64_t bytes_written;
    uint64_t flushes;
    uint64_t syncs;
    uint64_t ring_syncs;
    uint64_t rotations;
    uint64_t files;
    uint64_t live_bytes;
    uint64_t dead_bytes;
    uint64_t index_bytes;
    uint64_t index_bytes_per_key;
    uint64_t corrupt_entries;
    uint64_t hints_loaded;
    uint64_t files_scanned;
    uint64_t torn_bytes;
    uint64_t gsn;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t cache_evictions;
    uint64_t cache_bytes;
    uint64_t compactions;
    uint64_t compact_bytes_read;
    uint64_t compact_bytes_written;
    uint64_t bytes_reclaimed;
    uint32_t io_backend;
    uint32_t direct_io;
    uint32_t read_only;
    uint32_t shards;
    uint32_t key_len;
    uint32_t value_len;
    uint32_t shared;
    uint64_t shared_applied;
    uint64_t shared_repairs;
    uint64_t shared_reloads;
} armdb_stat;

void armdb_options_init(armdb_options *opts);
int armdb_open(const char *dir, const armdb_options *opts, armdb **out);
int armdb_close(armdb *db);
int armdb_put(armdb *db, const void *key, size_t klen, const void *val, size_t vlen);
int armdb_get(armdb *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen);
int armdb_get_many(armdb *db, const void *keys, size_t klen, size_t n, void *out, size_t cap,
                   size_t *offs, size_t *vlens, int *rcs);
int armdb_delete(armdb *db, const void *key, size_t klen);
int armdb_cas(armdb *db, const void *key, size_t klen, const void *expected, size_t elen,
              const void *val, size_t vlen);
int armdb_sync(armdb *db);
int armdb_compact(armdb *db);
uint64_t armdb_count(armdb *db);
int armdb_stats(armdb *db, armdb_stat *out);
const char *armdb_strerror(int rc);
const char *armdb_errmsg(void);
int armdb_errcode(void);
int armdb_abi_version(void);
int armdb_iter_open(armdb *db, const void *lo, size_t lolen, const void *hi, size_t hilen,
                    unsigned flags, armdb_iter **out);
int armdb_iter_next(armdb_iter *it, const void **key, size_t *klen, const void **val,
                    size_t *vlen);
void armdb_iter_close(armdb_iter *it);

typedef struct armdb_changes armdb_changes;
typedef struct armdb_change {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
    uint64_t gsn;
    uint32_t deleted;
    uint32_t reserved;
} armdb_change;
enum armdb_changes_flags {
    ARMDB_CHANGES_LIVE = 1,
};
int armdb_changes_open(armdb *db, uint64_t since, unsigned flags, armdb_changes **out);
int armdb_changes_next(armdb_changes *c, armdb_change *out);
uint64_t armdb_changes_end(const armdb_changes *c);
void armdb_changes_close(armdb_changes *c);
int armdb_changes_open_shard(armdb *db, uint32_t shard, uint64_t since, unsigned flags, armdb_changes **out);
int armdb_changes_wait(armdb *db, uint64_t since, uint32_t timeout_ms);
int armdb_shard_last_gsn(armdb *db, uint32_t shard, uint64_t *gsn);
uint64_t armdb_last_gsn(armdb *db);
int armdb_apply(armdb *db, const armdb_change *c);

typedef struct armdb_checkpoint armdb_checkpoint;
enum armdb_checkpoint_flags {
    ARMDB_CHECKPOINT_LINK = 1,
};
int armdb_checkpoint_open(armdb *db, const char *dest, unsigned flags, armdb_checkpoint **out);
int armdb_checkpoint_step(armdb_checkpoint *cp, uint64_t max_bytes, uint64_t *done, uint64_t *total);
uint64_t armdb_checkpoint_gsn(const armdb_checkpoint *cp);
void armdb_checkpoint_close(armdb_checkpoint *cp);
int armdb_checkpoint_run(armdb *db, const char *dest, unsigned flags, uint64_t *gsn);
int armdb_batch(armdb *db, const armdb_op *ops, size_t n);
int armdb_set_hook(armdb *db, armdb_hook_fn fn, void *ctx, unsigned flags);
int armdb_rekey(armdb *db, const unsigned char *new_key);
int armdb_tune(armdb *db, const armdb_tuning *t);
int armdb_tuning_get(armdb *db, armdb_tuning *out);
int armdb_seal(const unsigned char *key, const void *in, size_t n, void *out);
int armdb_unseal(const unsigned char *key, const void *in, size_t n, void *out);

enum armdb_verify_what {
    ARMDB_VERIFY_FILE = 0,
    ARMDB_VERIFY_ENTRY = 1,
    ARMDB_VERIFY_PAGE = 2,
    ARMDB_VERIFY_HINT = 3,
    ARMDB_VERIFY_SHORT = 4,
    ARMDB_VERIFY_READ = 5,
};

typedef struct armdb_verify_damage {
    uint32_t shard;
    uint32_t file;
    uint32_t what;
    int32_t rc;
    uint64_t offset;
    uint64_t length;
} armdb_verify_damage;

typedef struct armdb_verify_report {
    uint64_t files;
    uint64_t entries;
    uint64_t bytes;
    uint64_t pages;
    uint64_t hints;
    uint64_t damage;
    uint64_t damaged_entries;
    uint64_t damaged_pages;
    uint64_t damaged_hints;
    uint64_t short_files;
    uint64_t unread_files;
} armdb_verify_report;

typedef int (*armdb_verify_fn)(void *ctx, const armdb_verify_damage *d);

int armdb_verify(armdb *db, armdb_verify_fn fn, void *ctx, armdb_verify_report *out);

typedef struct armdb_repl_server armdb_repl_server;
typedef struct armdb_repl_follower armdb_repl_follower;

typedef struct armdb_repl_options {
    const void *secret;
    uint32_t secret_len;
    uint32_t batch_entries;
    uint32_t batch_bytes;
    uint32_t heartbeat_ms;
    uint32_t timeout_ms;
    uint32_t max_followers;
    uint32_t retry_min_ms;
    uint32_t retry_max_ms;
    uint32_t ack_interval_ms;
    uint32_t reserved;
} armdb_repl_options;

void armdb_repl_options_init(armdb_repl_options *o);
int armdb_repl_serve(const char *addr, const armdb_repl_options *opts, armdb_repl_server **out);
int armdb_repl_server_add(armdb_repl_server *srv, const char *name, armdb *db);
int armdb_repl_server_set_meta(armdb_repl_server *srv, const void *meta, size_t len);
int armdb_repl_server_port(const armdb_repl_server *srv);

enum armdb_repl_state {
    ARMDB_REPL_CONNECTING = 1,
    ARMDB_REPL_CATCHING_UP = 2,
    ARMDB_REPL_LIVE = 3,
    ARMDB_REPL_RESYNC = 4,
    ARMDB_REPL_SWAP = 5,
    ARMDB_REPL_STOPPED = 6,
};

typedef struct armdb_repl_peer {
    char addr[64];
    char store[64];
    uint32_t state;
    uint32_t reserved;
    uint64_t sent_gsn;
    uint64_t acked_gsn;
    uint64_t lag_gsn;
    uint64_t lag_ms;
    uint64_t entries, bytes;
    uint64_t connected_ms;
} armdb_repl_peer;

typedef struct armdb_repl_server_stat {
    uint64_t accepted;
    uint64_t refused;
    uint64_t failed;
    uint64_t resyncs;
    uint32_t followers;
    int32_t last_error;
    char last_error_msg[256];
} armdb_repl_server_stat;

int armdb_repl_server_stats(armdb_repl_server *srv, armdb_repl_server_stat *st, armdb_repl_peer *peers,
                            uint32_t cap, uint32_t *n);
void armdb_repl_server_close(armdb_repl_server *srv);

int armdb_repl_follow(armdb *db, const char *store_dir, const armdb_options *store_opts, const char *addr,
                      const char *name, const armdb_repl_options *opts, armdb_repl_follower **out);

typedef struct armdb_repl_follower_stat {
    uint32_t state;
    int32_t last_error;
    uint64_t applied_gsn;
    uint64_t durable_gsn;
    uint64_t leader_gsn;
    uint64_t lag_gsn;
    uint64_t entries, bytes;
    uint64_t connects;
    uint64_t resyncs;
    uint64_t last_contact_ms;
    char last_error_msg[256];
} armdb_repl_follower_stat;

int armdb_repl_follower_stats(armdb_repl_follower *f, armdb_repl_follower_stat *st);
int armdb_repl_follower_swap(armdb_repl_follower *f, armdb *old, armdb **out);
int armdb_repl_follower_wait(armdb_repl_follower *f, uint64_t gsn, uint32_t timeout_ms);
void armdb_repl_follower_close(armdb_repl_follower *f);
int armdb_repl_fetch_meta(const char *addr, const armdb_repl_options *opts, void *buf, size_t cap,
                          size_t *len);
]])

return M
