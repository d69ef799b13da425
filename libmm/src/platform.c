/*
 * Platform: the Linux calls behind platform.h's contract (memfds and seals,
 * punching and residency, populating, doorbells, pidfds, fd passing).
 */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; glibc 2.36 does not name it yet */
#endif

int mm__memfd_create_sealed(const char *name, uint64_t bytes)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)bytes) < 0 || fcntl(fd, F_ADD_SEALS, MM_SEALS) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int mm__memfd_check(int fd, uint64_t bytes)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != bytes)
        return -EINVAL;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return -errno;
    return (seals & MM_SEALS) == MM_SEALS ? 0 : -EPERM;
}

int mm__punch(int fd, uint64_t offset, uint64_t len)
{
    if (len == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) < 0)
        return -errno;
    return 0;
}

int64_t mm__resident_bytes(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_blocks * 512;
}

int mm__range_has_data(int fd, uint64_t offset, uint64_t len)
{
    off_t at = lseek(fd, (off_t)offset, SEEK_DATA);
    if (at < 0)
        return errno == ENXIO ? 0 : -errno; /* ENXIO: no data past offset */
    return (uint64_t)at < offset + len;
}

int mm__populate_write(void *addr, size_t len)
{
    if (len == 0)
        return 0;
    if (madvise(addr, len, MADV_POPULATE_WRITE) < 0)
        return -errno;
    return 0;
}

int mm__doorbell_create(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int mm__doorbell_pair(int *keep, int *give)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    *keep = sv[0];
    *give = sv[1];
    return 0;
}

int mm__doorbell_ring(int fd)
{
    /* A socketpair end: MSG_DONTWAIT holds whatever the peer did to its
     * own end's flags. A full queue is still rung. */
    char one = 1;
    if (send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
        return 0;
    if (errno == EAGAIN || errno == ENOBUFS)
        return 0;
    if (errno != ENOTSOCK)
        return -errno;
    uint64_t add = 1; /* an eventfd */
    if (write(fd, &add, sizeof add) == (ssize_t)sizeof add)
        return 0;
    return errno == EAGAIN ? 0 : -errno;
}

/* Rings read per drain: a peer ringing non-stop is read again at the next
 * wakeup rather than holding this one. */
#define DRAIN_MAX 64

int mm__doorbell_drain(int fd)
{
    char buf[16];
    for (int i = 0; i < DRAIN_MAX; i++) {
        if (recv(fd, buf, sizeof buf, MSG_DONTWAIT) >= 0)
            continue;
        if (errno == EAGAIN)
            return 0;
        if (errno != ENOTSOCK)
            return -errno;
        uint64_t count; /* an eventfd */
        if (read(fd, &count, sizeof count) == (ssize_t)sizeof count)
            return 0;
        return errno == EAGAIN ? 0 : -errno;
    }
    return 0;
}

int mm__pidfd_open(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -errno;
    /* pidfd_open sets close-on-exec itself. */
    return fd;
}

int mm__peer_identity(int sock, pid_t *pid, uid_t *uid, gid_t *gid, int *pidfd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return -errno;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    int fd = -1;
    len = sizeof fd;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0) {
        *pidfd = fd;
        return 0;
    }
    /* Older kernels: the pid may have been reused since connect, which is
     * why SO_PEERPIDFD is preferred. */
    fd = mm__pidfd_open(cred.pid);
    if (fd < 0)
        return fd;
    *pidfd = fd;
    return 0;
}

int mm__send_msg(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(8 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds < 0 || nfds > 8)
        return -EINVAL;
    if (nfds > 0) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = ctl.buf;
        msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EMSGSIZE;
}

/* Collect the fds of every SCM_RIGHTS block; keep up to max_fds, close the
 * rest. Returns -EMSGSIZE if any had to be closed. */
static int take_fds(struct msghdr *msg, int *fds, int max_fds, int *nfds)
{
    int kept = 0, dropped = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (kept < max_fds) {
                fds[kept++] = fd;
            } else {
                close(fd);
                dropped++;
            }
        }
    }
    *nfds = kept;
    return dropped ? -EMSGSIZE : 0;
}

ssize_t mm__recv_msg(int sock, void *buf, size_t cap, int *fds, int max_fds, int *nfds)
{
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    union {
        char buf[CMSG_SPACE(16 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t n;
    *nfds = 0;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    int err = take_fds(&msg, fds, max_fds, nfds);
    if (err == 0 && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        err = -EMSGSIZE;
    if (err < 0) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return err;
    }
    return n;
}

uint64_t mm__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int mm__raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    rl.rlim_cur = rl.rlim_max;
    return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

int mm__set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}
