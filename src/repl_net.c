/*
 * repl_net.c - what the leader (repl_leader.c) and the follower
 * (repl_follower.c) share: their options, addresses, sockets as the
 * protocol's I/O callbacks, the status files, removing a store directory.
 */
#include "repl_net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

API void armdb_repl_options_init(armdb_repl_options *o)
{
    if (o)
        memset(o, 0, sizeof *o);
}

static uint32_t or_default(uint32_t v, uint32_t def) { return v ? v : def; }

int repl_cfg_init(struct repl_cfg *cfg, const armdb_repl_options *o, const char *who)
{
    armdb_repl_options z;
    memset(cfg, 0, sizeof *cfg);
    if (!o) {
        armdb_repl_options_init(&z);
        o = &z;
    }
    if (o->reserved)
        return err_set(ARMDB_INVAL, "%s: options.reserved must be 0", who);
    if (o->secret && (o->secret_len < REPL_SECRET_MIN || o->secret_len > REPL_SECRET_LONGEST))
        return err_set(ARMDB_INVAL, "%s: a secret of %u bytes (it must have %u to %u)", who, o->secret_len,
                       REPL_SECRET_MIN, REPL_SECRET_LONGEST);
    if (!o->secret && o->secret_len)
        return err_set(ARMDB_INVAL, "%s: secret_len without a secret", who);
    cfg->batch_entries = or_default(o->batch_entries, REPL_BATCH_ENTRIES);
    cfg->batch_bytes = or_default(o->batch_bytes, REPL_BATCH_BYTES);
    cfg->heartbeat_ms = or_default(o->heartbeat_ms, 1000);
    cfg->timeout_ms = or_default(o->timeout_ms, 5000);
    cfg->max_followers = or_default(o->max_followers, 64);
    cfg->retry_min_ms = or_default(o->retry_min_ms, 1000);
    cfg->retry_max_ms = or_default(o->retry_max_ms, 30000);
    cfg->ack_interval_ms = or_default(o->ack_interval_ms, 50);
    if (cfg->batch_entries > 1u << 20)
        return err_set(ARMDB_INVAL, "%s: batch_entries %u (at most %u)", who, cfg->batch_entries, 1u << 20);
    if (cfg->batch_bytes > REPL_BODY_MAX - 1 - REPL_BATCH_HDR)
        return err_set(ARMDB_INVAL, "%s: batch_bytes %u (at most %u)", who, cfg->batch_bytes,
                       REPL_BODY_MAX - 1 - REPL_BATCH_HDR);
    if (cfg->timeout_ms <= cfg->heartbeat_ms)
        return err_set(ARMDB_INVAL, "%s: timeout_ms %u must exceed heartbeat_ms %u", who, cfg->timeout_ms,
                       cfg->heartbeat_ms);
    if (cfg->retry_max_ms < cfg->retry_min_ms)
        return err_set(ARMDB_INVAL, "%s: retry_max_ms %u is below retry_min_ms %u", who, cfg->retry_max_ms,
                       cfg->retry_min_ms);
    if (o->secret) {
        int rc = crypt_init();
        if (rc < 0)
            return rc;
        /* Any passphrase of the allowed length becomes the protocol's
         * 32-byte key; the label keeps it apart from other uses. */
        static const char label[] = "armdb replication secret";
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, REPL_SECRET_BYTES);
        crypto_generichash_update(&st, (const unsigned char *)label, sizeof label);
        crypto_generichash_update(&st, o->secret, o->secret_len);
        crypto_generichash_final(&st, cfg->secret, REPL_SECRET_BYTES);
        sodium_memzero(&st, sizeof st);
        cfg->has_secret = true;
    }
    return 0;
}

void repl_cfg_wipe(struct repl_cfg *cfg) { sodium_memzero(cfg->secret, sizeof cfg->secret); }

int repl_addr_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, const char *who)
{
    if (!addr || !*addr)
        return err_set(ARMDB_INVAL, "%s: no address", who);
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1])
        return err_set(ARMDB_INVAL, "%s: address \"%s\" is not HOST:PORT", who, addr);
    size_t hlen = (size_t)(colon - addr);
    const char *h = addr;
    if (addr[0] == '[') {
        if (colon[-1] != ']')
            return err_set(ARMDB_INVAL, "%s: address \"%s\" is not [IPv6]:PORT", who, addr);
        h = addr + 1;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof host)
        return err_set(ARMDB_INVAL, "%s: address \"%s\" has no host", who, addr);
    memcpy(host, h, hlen);
    host[hlen] = 0;
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end || errno || port > 65535)
        return err_set(ARMDB_INVAL, "%s: address \"%s\" has a bad port", who, addr);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, NULL, &hints, &res);
    if (g != 0 || !res)
        return err_set(ARMDB_INVAL, "%s: cannot resolve \"%s\": %s", who, host, gai_strerror(g));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        return err_set(ARMDB_INVAL, "%s: \"%s\" is not an IP address", who, host);
    return 0;
}

bool repl_addr_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

void repl_addr_name(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(out, cap, "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(out, cap, "[%s]:%u", ip, port);
    } else {
        snprintf(out, cap, "?");
    }
}

int repl_sock_setup(int fd, uint32_t timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (long)(timeout_ms % 1000) * 1000};
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        return -errno;
    return 0;
}

int repl_dial(const struct sockaddr_storage *ss, socklen_t sl, uint32_t timeout_ms, const char *addr, int *fd)
{
    *fd = -1;
    int s = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return err_set(-errno, "replication: socket");
    int rc = repl_sock_setup(s, timeout_ms);
    if (rc == 0 && connect(s, (const struct sockaddr *)ss, sl) < 0)
        rc = -errno;
    if (rc < 0) {
        close(s);
        return err_set(rc, "replication: cannot connect to %s", addr);
    }
    *fd = s;
    return 0;
}

ssize_t repl_fd_read(void *ctx, void *buf, size_t len)
{
    ssize_t n = recv(*(int *)ctx, buf, len, 0);
    return n < 0 ? -(errno == EWOULDBLOCK ? EAGAIN : errno) : n;
}

ssize_t repl_fd_write(void *ctx, const void *buf, size_t len)
{
    ssize_t n = send(*(int *)ctx, buf, len, MSG_NOSIGNAL);
    return n < 0 ? -(errno == EWOULDBLOCK ? EAGAIN : errno) : n;
}

uint64_t repl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void repl_deadline(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void repl_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

const char *repl_rc_text(int rc)
{
    return rc == -EAGAIN ? "timed out" : rc == -ECONNRESET ? "connection closed" : NULL;
}

int repl_status_write(const char *dir, const char *file, const char *text, bool durable)
{
    char tmp[4096], dst[4096];
    if (snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, file) >= (int)sizeof tmp ||
        snprintf(dst, sizeof dst, "%s/%s", dir, file) >= (int)sizeof dst)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int rc = n < 0 ? -errno : -EIO;
            close(fd);
            unlink(tmp);
            return rc;
        }
        off += (size_t)n;
    }
    /* The rename keeps a reader from seeing half of it; durable: its
     * bytes are on disk before the name points at them, so after a crash
     * the name holds this record or the one before, whole. */
    if (durable && fsync(fd) < 0) {
        int rc = -errno;
        close(fd);
        unlink(tmp);
        return rc;
    }
    close(fd);
    return rename(tmp, dst) < 0 ? -errno : 0;
}

static int rm_at(int at, const char *name, int depth)
{
    if (depth > 8)
        return -ELOOP;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOTDIR || errno == ELOOP ? (unlinkat(at, name, 0) < 0 ? -errno : 0) : -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) && rc == 0) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        rc = rm_at(dirfd(d), e->d_name, depth + 1);
    }
    closedir(d);
    if (rc == 0 && unlinkat(at, name, AT_REMOVEDIR) < 0)
        rc = -errno;
    return rc;
}

int repl_rm_tree(const char *path)
{
    int rc = rm_at(AT_FDCWD, path, 0);
    return rc == -ENOENT ? 0 : rc;
}

bool repl_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n >= REPL_NAME_BYTES)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '.' || ch == '-'))
            return false;
    }
    return true;
}
