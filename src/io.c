/*
 * io.c - the system calls libarmdb makes on store files.
 *
 * Every call returns 0 (or a byte count) or -errno, never sets errno for
 * the caller, and retries EINTR and short transfers, so the rest of the
 * library never sees a partial write as success. Keeping all file I/O in
 * one place is also where a test build injects faults.
 */
#include "internal.h"

#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef ARMDB_FAULT_INJECTION

struct fault {
    atomic_uint_fast64_t calls;
    atomic_uint_fast64_t nth;
    atomic_int err;
    atomic_int sticky;
};
static struct fault faults[FAULT_NOPS];
static atomic_uint_fast64_t faults_fired;

API void armdb_fault_arm(int op, uint64_t nth, int err, int sticky)
{
    atomic_store(&faults[op].nth, 0);
    atomic_store(&faults[op].calls, 0);
    atomic_store(&faults[op].err, err);
    atomic_store(&faults[op].sticky, sticky);
    atomic_store(&faults[op].nth, nth);
}

API uint64_t armdb_fault_calls(int op) { return atomic_load(&faults[op].calls); }
API uint64_t armdb_fault_fired(void) { return atomic_load(&faults_fired); }

API void armdb_fault_reset(void)
{
    for (int i = 0; i < FAULT_NOPS; i++)
        armdb_fault_arm(i, 0, 0, 0);
    atomic_store(&faults_fired, 0);
}

/* -err if this call of op is to fail, else 0. */
static int fault_hit(int op)
{
    struct fault *f = &faults[op];
    uint64_t n = atomic_fetch_add(&f->calls, 1) + 1;
    uint64_t nth = atomic_load(&f->nth);
    if (nth && (n == nth || (atomic_load(&f->sticky) && n > nth))) {
        atomic_fetch_add(&faults_fired, 1);
        return -atomic_load(&f->err);
    }
    return 0;
}
int io_fault(int op) { return fault_hit(op); }

#define FAULT(op)                                                                                  \
    do {                                                                                           \
        int fault_rc_ = fault_hit(op);                                                             \
        if (fault_rc_)                                                                             \
            return fault_rc_;                                                                      \
    } while (0)
#else
int io_fault(int op)
{
    (void)op;
    return 0;
}
#define FAULT(op) ((void)0)
#endif

int io_open(int dirfd, const char *name, int flags, int mode)
{
    FAULT(FAULT_OPEN);
    int fd;
    do
        fd = openat(dirfd, name, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

int io_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
#ifdef ARMDB_FAULT_INJECTION
    int frc = fault_hit(FAULT_WRITE);
    if (frc == -ARMDB_FAULT_KILL) {
        if (len > 1 && pwrite(fd, buf, len / 2, (off_t)off) < 0)
            frc = 0; /* (dies all the same) */
        raise(SIGKILL);
    }
    if (frc)
        return frc;
#endif
    const unsigned char *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

ssize_t io_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    FAULT(FAULT_READ);
    unsigned char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int io_fdatasync(int fd)
{
    FAULT(FAULT_DATASYNC);
    return fdatasync(fd) < 0 ? -errno : 0;
}

int io_fsync(int fd)
{
    FAULT(FAULT_FSYNC);
    return fsync(fd) < 0 ? -errno : 0;
}

int io_renameat(int dirfd, const char *from, const char *to)
{
    FAULT(FAULT_RENAME);
    return renameat(dirfd, from, dirfd, to) < 0 ? -errno : 0;
}

int io_ftruncate(int fd, uint64_t len)
{
    FAULT(FAULT_WRITE);
    return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

/* Write name so that it is either absent, the old version or entirely the
 * new one after a crash: temp file, fsync, rename, fsync of the directory. */
int io_write_file_atomic(int dirfd, const char *name, const void *buf, size_t len)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = io_open(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    int rc = io_pwrite_full(fd, buf, len, 0);
    if (rc == 0)
        rc = io_fsync(fd);
    close(fd);
    if (rc == 0)
        rc = io_renameat(dirfd, tmp, name);
    if (rc == 0)
        rc = io_fsync(dirfd);
    else
        (void)unlinkat(dirfd, tmp, 0);
    return rc;
}

/* Read a whole (small) file into a malloc'd buffer. */
int io_read_file(int dirfd, const char *name, unsigned char **buf, size_t *len)
{
    int fd = io_open(dirfd, name, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    size_t n = (size_t)st.st_size;
    /* A hint of a full data file is megabytes: read into fresh malloc()ed
     * memory it faulted once per page, which was a fifth of an open. */
    unsigned char *p = n >= HUGE_PAGE ? huge_map(n) : malloc(n ? n : 1);
    if (!p) {
        close(fd);
        return -ENOMEM;
    }
    ssize_t got = io_pread_full(fd, p, n, 0);
    close(fd);
    if (got >= 0 && n >= HUGE_PAGE && (size_t)got != n)
        got = -EIO; /* it shrank as it was read: io_read_file_free could not tell how p was made */
    if (got < 0) {
        io_read_file_free(p, n);
        return (int)got;
    }
    *buf = p;
    *len = (size_t)got;
    return 0;
}

void io_read_file_free(unsigned char *buf, size_t len)
{
    if (len >= HUGE_PAGE)
        huge_unmap(buf, len);
    else
        free(buf);
}
