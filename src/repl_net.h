/*
 * repl_net.h - what the replication leader and follower share (internal):
 * options, addresses, sockets as the protocol's I/O, status files.
 */
#ifndef ARMDB_REPL_NET_H
#define ARMDB_REPL_NET_H

#include "repl.h"

#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#define REPL_SECRET_MIN 16u
#define REPL_SECRET_LONGEST 1024u
#define REPL_META_MAX (1u << 20)

/* armdb_repl_options with the defaults filled in and the secret turned
 * into the protocol's key. */
struct repl_cfg {
    unsigned char secret[REPL_SECRET_BYTES];
    bool has_secret;
    uint32_t batch_entries, batch_bytes, heartbeat_ms, timeout_ms, max_followers;
    uint32_t retry_min_ms, retry_max_ms, ack_interval_ms;
};

int repl_cfg_init(struct repl_cfg *cfg, const armdb_repl_options *o, const char *who) MUST_CHECK;
void repl_cfg_wipe(struct repl_cfg *cfg);
/* "HOST:PORT", "[V6]:PORT". */
int repl_addr_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *len, const char *who) MUST_CHECK;
bool repl_addr_loopback(const struct sockaddr *sa);
void repl_addr_name(const struct sockaddr *sa, char *out, size_t cap);
/* A TCP connection to ss (addr names it in messages), set up as below:
 * the socket in *fd, or -errno with a message. */
int repl_dial(const struct sockaddr_storage *ss, socklen_t sl, uint32_t timeout_ms, const char *addr,
              int *fd) MUST_CHECK;
/* Send and receive timeouts (a silent peer ends the connection), no Nagle. */
int repl_sock_setup(int fd, uint32_t timeout_ms) MUST_CHECK;
/* struct repl_io callbacks over a socket; ctx points at the fd. */
ssize_t repl_fd_read(void *ctx, void *buf, size_t len);
ssize_t repl_fd_write(void *ctx, const void *buf, size_t len);
uint64_t repl_now_ms(void);
/* CLOCK_MONOTONIC condition variables and deadlines. */
void repl_cond_init(pthread_cond_t *cv);
void repl_deadline(struct timespec *ts, uint32_t ms);
/* Words for a socket error the protocol's message leaves vague, or NULL. */
const char *repl_rc_text(int rc);
/* Replace dir/file with text (through file.tmp and a rename; durable:
 * fsynced before the rename). */
int repl_status_write(const char *dir, const char *file, const char *text, bool durable);
/* Remove a directory and everything in it; 0 if it is not there. */
int repl_rm_tree(const char *path) MUST_CHECK;
/* 1..63 bytes of [A-Za-z0-9_.-]. */
bool repl_name_ok(const char *name);

#endif
