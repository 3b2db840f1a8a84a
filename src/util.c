/*
 * util.c - error messages, hashing, aligned memory and per-thread scratch.
 *
 * Error messages are per thread: armdb_open() has no handle to hang them
 * on, and two threads failing at once must not see each other's text.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

static _Thread_local char err_msg[512];
static _Thread_local int err_rc;

int err_set(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    err_rc = rc;
    if (n >= 0 && (size_t)n < sizeof err_msg - 2)
        snprintf(err_msg + n, sizeof err_msg - (size_t)n, ": %s", armdb_strerror(rc));
    return rc;
}

int err_plain(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    err_rc = rc;
    return rc;
}

int err_restore(int rc, const char *msg)
{
    snprintf(err_msg, sizeof err_msg, "%s", msg);
    err_rc = rc;
    return rc;
}

API const char *armdb_errmsg(void) { return err_msg; }
API int armdb_errcode(void) { return err_rc; }

API const char *armdb_strerror(int rc)
{
    switch (rc) {
    case ARMDB_OK: return "success";
    case ARMDB_NOTFOUND: return "key not found";
    case ARMDB_BUFSMALL: return "buffer too small for the value";
    case ARMDB_CORRUPT: return "stored data is damaged";
    case ARMDB_LOCKED: return "store is locked by another writer process";
    case ARMDB_BADKEY: return "wrong encryption key";
    case ARMDB_MISMATCH: return "options contradict the stored settings";
    case ARMDB_INVAL: return "invalid argument";
    case ARMDB_READONLY: return "store is read-only";
    case ARMDB_EXISTS: return "key already exists";
    case ARMDB_KEYLEN: return "key length differs from the store's key_len";
    case ARMDB_TOOBIG: return "value length not accepted by the store";
    case ARMDB_CONFLICT: return "current value differs from the expected one";
    case ARMDB_FULL: return "a fixed limit of the store is reached";
    case ARMDB_COMPACTED: return "changes since that GSN were compacted away; start from a full copy";
    default: break;
    }
    if (rc < 0 && rc > -4096)
        return strerrordesc_np(-rc) ? strerrordesc_np(-rc) : "unknown system error";
    return "unknown error code";
}

API int armdb_abi_version(void) { return ARMDB_ABI_VERSION; }

void *aligned_alloc_zero(size_t size)
{
    void *p = NULL;
    size = round_up(size ? size : PAGE, PAGE);
    if (posix_memalign(&p, PAGE, size) != 0)
        return NULL;
    memset(p, 0, size);
    return p;
}

void *huge_map(size_t len)
{
    size_t span = len + HUGE_PAGE;
    unsigned char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    unsigned char *p = (unsigned char *)round_up((uintptr_t)m, HUGE_PAGE);
    if (p > m)
        munmap(m, (size_t)(p - m));
    munmap(p + len, (size_t)(m + span - (p + len)));
#ifdef MADV_HUGEPAGE
    (void)madvise(p, len, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
#endif
    return p;
}

void huge_unmap(void *p, size_t len)
{
    if (p)
        munmap(p, len);
}

uint64_t key_hash(const void *key, size_t klen) { return XXH3_64bits(key, klen); }

int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > ARMDB_SHARDS_MAX ? ARMDB_SHARDS_MAX : (int)n;
}

struct scratch {
    unsigned char *p;
    size_t cap;
};
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_destroy(void *v)
{
    struct scratch *s = v;
    free(s->p);
    free(s);
}
static void scratch_key_init(void) { (void)pthread_key_create(&scratch_key, scratch_destroy); }

unsigned char *scratch_get(size_t size)
{
    pthread_once(&scratch_once, scratch_key_init);
    struct scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < size) {
        size_t cap = round_up(size < (64u << 10) ? (64u << 10) : size, PAGE);
        unsigned char *p = aligned_alloc_zero(cap);
        if (!p)
            return NULL;
        free(s->p);
        s->p = p;
        s->cap = cap;
    }
    return s->p;
}
