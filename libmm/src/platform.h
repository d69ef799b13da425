/*
 * Platform: the Linux specifics mm is built on, behind one small contract.
 *
 * - memfds: created close-on-exec, sized and sealed GROW|SHRINK|SEAL, so that
 *   no peer can resize them or add a seal (F_SEAL_FUTURE_WRITE would make the
 *   host's punches fail while the client keeps writing);
 * - punching (fallocate PUNCH_HOLE|KEEP_SIZE) and residency from st_blocks
 *   and SEEK_DATA;
 * - populating a mapping with MADV_POPULATE_WRITE (one call, no page faults);
 * - eventfd doorbells, pidfds, and SOCK_SEQPACKET messages with fds.
 *
 * Every function returns 0 (or a non-negative result) on success and a
 * negative errno on failure, and is thread-safe.
 */
#ifndef MM_PLATFORM_H
#define MM_PLATFORM_H

#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The seals mm puts on every memfd it hands out. */
#define MM_SEALS (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)

/* Create a memfd of bytes, sealed with MM_SEALS. Returns the fd. */
int mm__memfd_create_sealed(const char *name, uint64_t bytes);

/* Check that fd is a memfd of exactly bytes carrying MM_SEALS. */
int mm__memfd_check(int fd, uint64_t bytes);

/* Punch [offset, offset+len) out of fd (pages freed, size kept). */
int mm__punch(int fd, uint64_t offset, uint64_t len);

/* Bytes of fd really backed by pages, from st_blocks. */
int64_t mm__resident_bytes(int fd);

/* True if any page of [offset, offset+len) of fd is present (SEEK_DATA). */
int mm__range_has_data(int fd, uint64_t offset, uint64_t len);

/* Make [addr, addr+len) resident and writable in one call. */
int mm__populate_write(void *addr, size_t len);

/* Doorbells: an eventfd within one process (create), or a socketpair
 * between two (pair: one end to keep, one to give; each side has its own
 * open file, so neither can make the other block). ring and drain work on
 * both kinds and never block. */
int mm__doorbell_create(void);
int mm__doorbell_pair(int *keep, int *give);
int mm__doorbell_ring(int fd);
int mm__doorbell_drain(int fd);

/* A pidfd for pid (close-on-exec). */
int mm__pidfd_open(pid_t pid);

/* The peer of a Unix socket: credentials, and a pidfd for it
 * (SO_PEERPIDFD where the kernel has it, else pidfd_open of the pid). */
int mm__peer_identity(int sock, pid_t *pid, uid_t *uid, gid_t *gid, int *pidfd);

/* Send one message with up to 8 fds (nfds may be 0). */
int mm__send_msg(int sock, const void *buf, size_t len, const int *fds, int nfds);

/*
 * Receive one message into buf (cap bytes) and up to max_fds fds. Returns the
 * message length (0 at end of stream) and sets *nfds. A truncated message or
 * more fds than asked for is -EMSGSIZE, and every fd received is closed.
 */
ssize_t mm__recv_msg(int sock, void *buf, size_t cap, int *fds, int max_fds, int *nfds);

/* Monotonic clock in nanoseconds. */
uint64_t mm__now_ns(void);

/* Raise RLIMIT_NOFILE's soft limit to the hard limit. */
int mm__raise_nofile(void);

/* Make fd non-blocking. */
int mm__set_nonblock(int fd);

#endif /* MM_PLATFORM_H */
