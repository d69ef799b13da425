/*
 * Unit tests for the platform module (libmm/src/platform.c): sealed memfds
 * and what a peer holding one can and cannot do, punching and residency,
 * eventfd doorbells, fd passing over SOCK_SEQPACKET and peer identity by
 * pidfd. Every test works on its own memfds, socketpairs and temp directory,
 * small (4 MiB) so that populating and punching stay fast.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mm/protocol.h>

#include "platform.h"

#define MIB(x)        ((uint64_t)(x) << 20)
#define REGION        MIB(4)
#define ALL_SEALS_SET (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)

/* Open fds of this process, for leak checks. The directory's own fd is
 * counted in every call alike. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static int sealed_region(void)
{
    int fd = mm__memfd_create_sealed("mm-test", REGION);
    cr_assert_geq(fd, 0, "mm__memfd_create_sealed: %s", strerror(-fd));
    return fd;
}

static void *map_shared(int fd, size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
    return p;
}

static void seqpacket_pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    cr_assert_eq(fstat(a, &sa), 0);
    cr_assert_eq(fstat(b, &sb), 0);
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ---- Sealed memfds ------------------------------------------------------ */

Test(platform, memfd_sealed_when_created)
{
    int fd = sealed_region();
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    cr_assert_eq((uint64_t)st.st_size, REGION);
    int seals = fcntl(fd, F_GET_SEALS);
    cr_assert_eq(seals, ALL_SEALS_SET, "seals %#x", seals);
    cr_assert_eq(MM_SEALS, ALL_SEALS_SET);
    int flags = fcntl(fd, F_GETFD);
    cr_assert(flags & FD_CLOEXEC);
    cr_assert_eq(mm__resident_bytes(fd), 0);
    close(fd);
}

/* Seals belong to the file, so any holder of the fd (a peer that got it over
 * the socket) meets the same refusals as the creator. */
Test(platform, memfd_peer_cannot_add_seal_when_sealed)
{
    int fd = sealed_region();
    cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
    cr_assert_eq(errno, EPERM);
    cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
    cr_assert_eq(errno, EPERM);
    cr_assert_eq(fcntl(fd, F_GET_SEALS), ALL_SEALS_SET);
    /* The host can still punch: no write seal made it in. */
    cr_assert_eq(mm__punch(fd, 0, REGION), 0);
    close(fd);
}

Test(platform, memfd_peer_cannot_resize_when_sealed)
{
    int fd = sealed_region();
    cr_assert_eq(ftruncate(fd, (off_t)(REGION * 2)), -1);
    cr_assert_eq(errno, EPERM);
    cr_assert_eq(ftruncate(fd, (off_t)(REGION / 2)), -1);
    cr_assert_eq(errno, EPERM);
    cr_assert_eq(ftruncate(fd, 0), -1);
    cr_assert_eq(errno, EPERM);
    /* Growing through fallocate is refused as well. */
    cr_assert_eq(fallocate(fd, 0, (off_t)REGION, (off_t)MIB(2)), -1);
    cr_assert_eq(errno, EPERM);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    cr_assert_eq((uint64_t)st.st_size, REGION);
    close(fd);
}

Test(platform, memfd_peer_writes_and_owner_punches_when_sealed)
{
    int fd = sealed_region();
    unsigned char *p = map_shared(fd, REGION);
    memset(p, 0xa5, REGION);
    unsigned char c = 0;
    cr_assert_eq(pread(fd, &c, 1, (off_t)(REGION - 1)), 1);
    cr_assert_eq(c, 0xa5);
    cr_assert_eq(pwrite(fd, "z", 1, 0), 1);
    cr_assert_eq(p[0], 'z');

    cr_assert_eq(mm__punch(fd, 0, MIB(2)), 0);
    cr_assert_eq(p[0], 0, "a punched page reads as zero");
    cr_assert_eq(p[MIB(2) - 1], 0);
    cr_assert_eq(p[MIB(2)], 0xa5, "the rest is kept");
    munmap(p, REGION);
    close(fd);
}

Test(platform, memfd_check_accepts_when_sealed_and_sized)
{
    int fd = sealed_region();
    cr_assert_eq(mm__memfd_check(fd, REGION), 0);
    close(fd);
}

Test(platform, memfd_check_einval_when_size_differs)
{
    int fd = sealed_region();
    cr_assert_eq(mm__memfd_check(fd, REGION - MM_FRAME_SIZE), -EINVAL);
    cr_assert_eq(mm__memfd_check(fd, REGION + MM_FRAME_SIZE), -EINVAL);
    cr_assert_eq(mm__memfd_check(fd, 0), -EINVAL);
    close(fd);
}

Test(platform, memfd_check_eperm_when_unsealed_or_partly_sealed)
{
    int fd = memfd_create("mm-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)REGION), 0);
    cr_assert_eq(mm__memfd_check(fd, REGION), -EPERM);
    /* GROW|SHRINK without SEAL still lets a peer add FUTURE_WRITE. */
    cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK), 0);
    cr_assert_eq(mm__memfd_check(fd, REGION), -EPERM);
    close(fd);

    /* A memfd made without MFD_ALLOW_SEALING carries only F_SEAL_SEAL. */
    fd = memfd_create("mm-test", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)REGION), 0);
    cr_assert_eq(mm__memfd_check(fd, REGION), -EPERM);
    close(fd);
}

Test(platform, memfd_check_fails_when_not_a_memfd)
{
    int pfd[2];
    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    cr_assert_lt(mm__memfd_check(pfd[0], 0), 0);
    cr_assert_lt(mm__memfd_check(pfd[1], REGION), 0);
    close(pfd[0]);
    close(pfd[1]);

    char dir[] = "/tmp/mm-test-platform-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/file", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)REGION), 0);
    int err = mm__memfd_check(fd, REGION);
    close(fd);
    unlink(path);
    rmdir(dir);
    cr_assert_lt(err, 0, "a regular file passed as a memfd");

    cr_assert_eq(mm__memfd_check(-1, REGION), -EBADF);
}

/* ---- Punching and residency --------------------------------------------- */

Test(platform, punch_drops_resident_bytes_when_populated)
{
    int fd = sealed_region();
    void *p = map_shared(fd, REGION);
    cr_assert_eq(mm__resident_bytes(fd), 0);
    cr_assert_eq(mm__populate_write(p, REGION), 0);
    cr_assert_eq(mm__resident_bytes(fd), (int64_t)REGION);

    cr_assert_eq(mm__punch(fd, MIB(1), MIB(2)), 0);
    cr_assert_eq(mm__resident_bytes(fd), (int64_t)MIB(2));
    cr_assert_eq(mm__punch(fd, 0, REGION), 0);
    cr_assert_eq(mm__resident_bytes(fd), 0);
    cr_assert_eq(mm__punch(fd, 0, 0), 0, "an empty punch is a no-op");
    munmap(p, REGION);
    close(fd);
}

Test(platform, populate_write_zero_length_is_noop)
{
    cr_assert_eq(mm__populate_write(NULL, 0), 0);
}

Test(platform, punch_fails_when_fd_is_not_a_file)
{
    int pfd[2];
    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    cr_assert_lt(mm__punch(pfd[1], 0, MM_FRAME_SIZE), 0);
    close(pfd[0]);
    close(pfd[1]);
    cr_assert_eq(mm__punch(-1, 0, MM_FRAME_SIZE), -EBADF);
    cr_assert_eq(mm__resident_bytes(-1), -EBADF);
}

Test(platform, range_has_data_true_when_touched_false_when_punched)
{
    int fd = sealed_region();
    cr_assert_eq(mm__range_has_data(fd, 0, REGION), 0, "nothing touched yet");
    unsigned char *p = map_shared(fd, REGION);
    p[MIB(3)] = 1;
    cr_assert_eq(mm__range_has_data(fd, 0, REGION), 1);
    cr_assert_eq(mm__range_has_data(fd, MIB(3), MM_FRAME_SIZE), 1);
    cr_assert_eq(mm__range_has_data(fd, MIB(3) + MM_FRAME_SIZE - 1, 1), 1);
    cr_assert_eq(mm__range_has_data(fd, 0, MIB(3)), 0, "data only past the range");
    cr_assert_eq(mm__range_has_data(fd, MIB(3) + MM_FRAME_SIZE, MM_FRAME_SIZE), 0);

    cr_assert_eq(mm__punch(fd, MIB(2), MIB(2)), 0);
    cr_assert_eq(mm__range_has_data(fd, 0, REGION), 0);
    cr_assert_eq(mm__range_has_data(fd, MIB(3), MM_FRAME_SIZE), 0);
    munmap(p, REGION);
    close(fd);
}

Test(platform, range_has_data_false_when_file_is_empty)
{
    int fd = memfd_create("mm-test-empty", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(mm__range_has_data(fd, 0, MM_FRAME_SIZE), 0);
    cr_assert_eq(mm__range_has_data(fd, MIB(1), MIB(1)), 0);
    close(fd);
}

/* ---- Doorbells ---------------------------------------------------------- */

static bool readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n = poll(&pfd, 1, timeout_ms);
    cr_assert_geq(n, 0);
    return n == 1 && (pfd.revents & POLLIN);
}

Test(platform, doorbell_readable_when_rung_and_quiet_when_drained)
{
    int fd = mm__doorbell_create();
    cr_assert_geq(fd, 0);
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
    cr_assert_not(readable(fd, 0));
    cr_assert_eq(mm__doorbell_ring(fd), 0);
    cr_assert(readable(fd, 0));
    cr_assert_eq(mm__doorbell_drain(fd), 0);
    cr_assert_not(readable(fd, 0));
    close(fd);
}

Test(platform, doorbell_drain_returns_zero_when_empty)
{
    int fd = mm__doorbell_create();
    cr_assert_geq(fd, 0);
    cr_assert_eq(mm__doorbell_drain(fd), 0);
    cr_assert_eq(mm__doorbell_drain(fd), 0);
    close(fd);
}

Test(platform, doorbell_counts_rings_when_rung_many_times)
{
    int fd = mm__doorbell_create();
    cr_assert_geq(fd, 0);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(mm__doorbell_ring(fd), 0);
    uint64_t count = 0;
    cr_assert_eq(read(fd, &count, sizeof count), (ssize_t)sizeof count);
    cr_assert_eq(count, 1000);

    for (int i = 0; i < 1000; i++)
        cr_assert_eq(mm__doorbell_ring(fd), 0);
    cr_assert_eq(mm__doorbell_drain(fd), 0, "one drain takes every ring");
    cr_assert_not(readable(fd, 0));
    close(fd);
}

Test(platform, doorbell_ring_succeeds_when_counter_full)
{
    int fd = mm__doorbell_create();
    cr_assert_geq(fd, 0);
    uint64_t most = UINT64_MAX - 1; /* the largest value an eventfd holds */
    cr_assert_eq(write(fd, &most, sizeof most), (ssize_t)sizeof most);
    cr_assert_eq(mm__doorbell_ring(fd), 0, "a full counter is still rung");
    cr_assert(readable(fd, 0));
    cr_assert_eq(mm__doorbell_drain(fd), 0);
    cr_assert_not(readable(fd, 0));
    close(fd);
}

Test(platform, doorbell_fails_when_fd_is_bad)
{
    cr_assert_eq(mm__doorbell_ring(-1), -EBADF);
    cr_assert_eq(mm__doorbell_drain(-1), -EBADF);
}

/* ---- Messages with fds -------------------------------------------------- */

Test(platform, recv_msg_gets_both_fds_when_sent_two, .timeout = 10)
{
    int sv[2];
    seqpacket_pair(sv);
    int mfd = sealed_region();
    cr_assert_eq(pwrite(mfd, "region", 6, 0), 6);
    int db = mm__doorbell_create();
    cr_assert_geq(db, 0);

    const char out[] = "hello with two fds";
    int fds_out[2] = {mfd, db};
    cr_assert_eq(mm__send_msg(sv[0], out, sizeof out, fds_out, 2), 0);

    char in[64];
    int fds_in[4] = {-1, -1, -1, -1};
    int nfds = -1;
    ssize_t n = mm__recv_msg(sv[1], in, sizeof in, fds_in, 4, &nfds);
    cr_assert_eq(n, (ssize_t)sizeof out);
    cr_assert_str_eq(in, out);
    cr_assert_eq(nfds, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_geq(fds_in[i], 0);
        cr_assert_neq(fds_in[i], fds_out[i], "a new fd, not the sender's number");
        cr_assert(same_file(fds_in[i], fds_out[i]), "fd %d arrived in order", i);
        cr_assert(fcntl(fds_in[i], F_GETFD) & FD_CLOEXEC, "received close-on-exec");
    }
    /* Both are usable: read the region, ring the doorbell through them. */
    char buf[6];
    cr_assert_eq(pread(fds_in[0], buf, sizeof buf, 0), 6);
    cr_assert_eq(memcmp(buf, "region", 6), 0);
    cr_assert_eq(mm__memfd_check(fds_in[0], REGION), 0);
    cr_assert_eq(mm__doorbell_ring(fds_in[1]), 0);
    cr_assert(readable(db, 0));

    close(fds_in[0]);
    close(fds_in[1]);
    close(db);
    close(mfd);
    close(sv[0]);
    close(sv[1]);
}

Test(platform, recv_msg_without_fds_when_none_sent, .timeout = 10)
{
    int sv[2];
    seqpacket_pair(sv);
    uint32_t out = 0x12345678, in = 0;
    cr_assert_eq(mm__send_msg(sv[0], &out, sizeof out, NULL, 0), 0);
    int fds[2], nfds = -1;
    cr_assert_eq(mm__recv_msg(sv[1], &in, sizeof in, fds, 2, &nfds), (ssize_t)sizeof in);
    cr_assert_eq(nfds, 0);
    cr_assert_eq(in, out);
    close(sv[0]);
    close(sv[1]);
}

Test(platform, recv_msg_emsgsize_when_message_bigger_than_buffer, .timeout = 10)
{
    int sv[2];
    seqpacket_pair(sv);
    int mfd = sealed_region();
    int db = mm__doorbell_create();
    cr_assert_geq(db, 0);
    int before = count_fds();

    char out[256];
    memset(out, 'm', sizeof out);
    int fds_out[2] = {mfd, db};
    cr_assert_eq(mm__send_msg(sv[0], out, sizeof out, fds_out, 2), 0);

    char in[64];
    int fds_in[4] = {-1, -1, -1, -1};
    int nfds = -1;
    cr_assert_eq(mm__recv_msg(sv[1], in, sizeof in, fds_in, 4, &nfds), -EMSGSIZE);
    cr_assert_eq(nfds, 0);
    cr_assert_eq(count_fds(), before, "the fds of a truncated message are closed");

    /* The truncated message is gone; the next one arrives whole. */
    cr_assert_eq(mm__send_msg(sv[0], "ok", 3, NULL, 0), 0);
    cr_assert_eq(mm__recv_msg(sv[1], in, sizeof in, fds_in, 4, &nfds), 3);
    cr_assert_str_eq(in, "ok");

    close(db);
    close(mfd);
    close(sv[0]);
    close(sv[1]);
}

Test(platform, recv_msg_emsgsize_when_more_fds_than_max, .timeout = 10)
{
    int sv[2];
    seqpacket_pair(sv);
    int db[4];
    for (int i = 0; i < 4; i++) {
        db[i] = mm__doorbell_create();
        cr_assert_geq(db[i], 0);
    }
    int before = count_fds();

    cr_assert_eq(mm__send_msg(sv[0], "four", 5, db, 4), 0);
    char in[16];
    int fds_in[2] = {-1, -1};
    int nfds = -1;
    cr_assert_eq(mm__recv_msg(sv[1], in, sizeof in, fds_in, 2, &nfds), -EMSGSIZE);
    cr_assert_eq(nfds, 0);
    cr_assert_eq(count_fds(), before, "kept and dropped fds are all closed");

    /* max_fds 0: any fd is too many. */
    cr_assert_eq(mm__send_msg(sv[0], "one", 4, db, 1), 0);
    cr_assert_eq(mm__recv_msg(sv[1], in, sizeof in, NULL, 0, &nfds), -EMSGSIZE);
    cr_assert_eq(nfds, 0);
    cr_assert_eq(count_fds(), before);

    for (int i = 0; i < 4; i++)
        close(db[i]);
    close(sv[0]);
    close(sv[1]);
}

Test(platform, send_msg_einval_when_too_many_fds)
{
    int sv[2];
    seqpacket_pair(sv);
    int fds[9] = {0};
    cr_assert_eq(mm__send_msg(sv[0], "x", 1, fds, 9), -EINVAL);
    cr_assert_eq(mm__send_msg(sv[0], "x", 1, fds, -1), -EINVAL);
    close(sv[0]);
    close(sv[1]);
}

Test(platform, recv_msg_returns_zero_when_peer_closed, .timeout = 10)
{
    int sv[2];
    seqpacket_pair(sv);
    close(sv[0]);
    char in[16];
    int fds[2], nfds = -1;
    cr_assert_eq(mm__recv_msg(sv[1], in, sizeof in, fds, 2, &nfds), 0);
    cr_assert_eq(nfds, 0);
    close(sv[1]);
}

Test(platform, send_msg_epipe_when_peer_closed, .timeout = 10)
{
    int sv[2];
    seqpacket_pair(sv);
    close(sv[1]);
    /* MSG_NOSIGNAL: an error, not SIGPIPE. */
    cr_assert_eq(mm__send_msg(sv[0], "x", 1, NULL, 0), -EPIPE);
    close(sv[0]);
}

/* ---- Identity and pidfds ------------------------------------------------ */

/* The pid a pidfd refers to, from its fdinfo "Pid:" line; -1 if absent. */
static pid_t pidfd_pid(int pidfd)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f);
    pid_t pid = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %d", &pid) == 1)
            break;
    fclose(f);
    return pid;
}

Test(platform, peer_identity_gives_our_credentials_when_socketpair, .timeout = 10)
{
    int sv[2];
    seqpacket_pair(sv);
    pid_t pid = 0;
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    int pidfd = -1;
    cr_assert_eq(mm__peer_identity(sv[1], &pid, &uid, &gid, &pidfd), 0);
    cr_assert_eq(pid, getpid());
    cr_assert_eq(uid, getuid());
    cr_assert_eq(gid, getgid());
    cr_assert_geq(pidfd, 0);
    cr_assert_eq(pidfd_pid(pidfd), getpid());
    cr_assert_not(readable(pidfd, 0), "we are alive");
    close(pidfd);
    close(sv[0]);
    close(sv[1]);
}

Test(platform, peer_identity_fails_when_not_a_socket)
{
    int fd = memfd_create("mm-test", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    pid_t pid;
    uid_t uid;
    gid_t gid;
    int pidfd = -1;
    cr_assert_eq(mm__peer_identity(fd, &pid, &uid, &gid, &pidfd), -ENOTSOCK);
    cr_assert_eq(pidfd, -1);
    close(fd);
}

Test(platform, pidfd_readable_when_child_exits, .timeout = 10)
{
    int gate[2];
    cr_assert_eq(pipe2(gate, O_CLOEXEC), 0);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        char c;
        close(gate[1]);
        /* Wait until the parent holds the pidfd and closes its end. */
        while (read(gate[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(gate[0]);
    int pidfd = mm__pidfd_open(child);
    cr_assert_geq(pidfd, 0, "mm__pidfd_open: %s", strerror(-pidfd));
    cr_assert(fcntl(pidfd, F_GETFD) & FD_CLOEXEC);
    cr_assert_eq(pidfd_pid(pidfd), child);
    cr_assert_not(readable(pidfd, 0), "child still running");

    close(gate[1]);
    cr_assert(readable(pidfd, 5000), "child exited");
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(pidfd);
}

Test(platform, pidfd_open_fails_when_pid_invalid)
{
    cr_assert_eq(mm__pidfd_open(-1), -EINVAL);
    cr_assert_eq(mm__pidfd_open(0), -EINVAL);
}

/* ---- Small helpers ------------------------------------------------------ */

Test(platform, now_ns_never_goes_back)
{
    uint64_t a = mm__now_ns();
    uint64_t b = mm__now_ns();
    cr_assert_gt(a, 0);
    cr_assert_geq(b, a);
}

Test(platform, set_nonblock_sets_flag_when_fd_valid)
{
    int pfd[2];
    cr_assert_eq(pipe2(pfd, O_CLOEXEC), 0);
    cr_assert_not(fcntl(pfd[0], F_GETFL) & O_NONBLOCK);
    cr_assert_eq(mm__set_nonblock(pfd[0]), 0);
    cr_assert(fcntl(pfd[0], F_GETFL) & O_NONBLOCK);
    close(pfd[0]);
    close(pfd[1]);
    cr_assert_eq(mm__set_nonblock(-1), -EBADF);
}
