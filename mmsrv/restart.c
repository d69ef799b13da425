/*
 * Picking up where an earlier daemon left off (DESIGN.md section 9).
 *
 * At start-up every record in the state directory (state.c) becomes a client
 * in RECOVERING state: not in the registry, known only by its record and a
 * pidfd of its process (checked against the recorded start time, so that a
 * reused pid is not taken for it). A client whose process is gone is cleaned
 * up at once (record and swap files removed). One the earlier daemon had
 * frozen cannot reconnect by itself: its region is opened through
 * /proc/PID/fd (matched by device and inode), its pages are put back from
 * swap and it is thawed. The others have --grace seconds to reconnect
 * (MM_MSG_RECONNECT): the fds they bring are checked against the record —
 * device, inode, size and seals of both memfds, the peer's pid and uid, a
 * real userfaultfd — and any mismatch is refused. The host's bookkeeping
 * then comes from the record alone; the shared chunk words are repaired to
 * agree with it (a chunk recorded as granted whose word says RECLAIMED is an
 * interrupted reclaim or install of a free chunk: taken back again), and
 * residency is read from the kernel (st_blocks, SEEK_DATA on reclaimed
 * ranges). A client that does not come back within its grace period is
 * forgotten: its memory stays its own, unmanaged, and its swap files, if it
 * has pages in them, stay on disk (logged).
 *
 * Threads: the event-loop thread only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "platform.h"
#include "swapstore.h"
#include "wire.h"

static void free_recovering(mm_host_client_t *c)
{
    if (c->pidfd >= 0)
        close(c->pidfd);
    free(c->reclaimed);
    free(c->paging_chunks);
    free(c);
}

static void unlink_list(mm_server_t *s, mm_host_client_t *c)
{
    for (mm_host_client_t **p = &s->recovering; *p; p = &(*p)->next_recovering)
        if (*p == c) {
            *p = c->next_recovering;
            s->nrecovering--;
            return;
        }
}

/* The client is gone for good: its record and swap files go too. */
static void forget(mm_server_t *s, mm_host_client_t *c, const char *why)
{
    log_info("client %u (%s, pid %d): forgotten after the restart: %s", c->id, c->name, (int)c->pid,
             why);
    mm__state_forget(s, c->id);
    char path[4096], idx[4200];
    mm__paging_swap_path(s, c, path, sizeof path);
    snprintf(idx, sizeof idx, "%s.idx", path);
    /* Ignored: the files exist only if it was ever paged. */
    (void)unlink(path);
    (void)unlink(idx);
}

/* Open the memfd the process holds with this device and inode, through
 * /proc/PID/fd (the daemon is root); with open false, only say whether it
 * holds one (0). -ENOENT if it holds none. */
static int find_held_memfd(pid_t pid, uint64_t dev, uint64_t ino, bool open_it)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    int fd = -ENOENT;
    struct dirent *e;
    while (fd == -ENOENT && (e = readdir(d))) {
        char path[400];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &st) < 0 || (uint64_t)st.st_dev != dev ||
            (uint64_t)st.st_ino != ino)
            continue;
        fd = open_it ? open(path, O_RDWR | O_CLOEXEC) : 0;
        if (fd < 0)
            fd = -errno;
    }
    closedir(d);
    return fd;
}

/* A client the earlier daemon froze: put its pages back and thaw it, so
 * that it can reconnect. */
static void thaw_recovered(mm_server_t *s, mm_host_client_t *c)
{
    c->region_fd = find_held_memfd(c->pid, c->region_dev, c->region_ino, true);
    if (c->region_fd < 0) {
        log_error("client %u (%s, pid %d): frozen by the earlier daemon, and its region cannot be "
                  "opened (%s); left stopped",
                  c->id, c->name, (int)c->pid, strerror(-c->region_fd));
        c->region_fd = -1;
        return;
    }
    if (mm__memfd_check(c->region_fd, c->region_bytes) == 0)
        (void)mm__paging_resume(s, c, -1);
    mm__paging_release(s, c); /* closes the store; it is removed once empty below */
    c->swap_kept = false;
    close(c->region_fd);
    c->region_fd = -1;
    if (syscall(SYS_pidfd_send_signal, c->pidfd, SIGCONT, NULL, 0) < 0)
        log_error("client %u (%s): SIGCONT: %s", c->id, c->name, strerror(errno));
    c->frozen = false;
    log_warn("client %u (%s, pid %d): was frozen by the earlier daemon; pages put back, thawed",
             c->id, c->name, (int)c->pid);
}

static void add_recovering(mm_server_t *s, mm_host_client_t *c)
{
    if (c->id >= s->next_id)
        s->next_id = c->id + 1;
    c->pidfd = mm__pidfd_open(c->pid);
    const char *gone = c->pidfd < 0 || mm__process_start_time(c->pid) != c->start_time
                           ? "its process exited while no daemon ran"
                           : NULL;
    /* libmm holds its region's fd as long as the client is open: a process
     * that holds none closed the client while no daemon ran. */
    if (!gone && find_held_memfd(c->pid, c->region_dev, c->region_ino, false) == -ENOENT)
        gone = "it was closed while no daemon ran";
    if (gone) {
        forget(s, c, gone);
        if (c->pidfd < 0)
            c->pidfd = -1;
        free_recovering(c);
        return;
    }
    if (mm__watch(s, c->pidfd, &c->w_pid, MM_WATCH_CLIENT_PID, c) < 0) {
        log_error("client %u: cannot watch its process: %s", c->id, strerror(errno));
        free_recovering(c);
        return;
    }
    if (c->frozen)
        thaw_recovered(s, c);
    c->grace_deadline_ns = mm__now_ns() + (uint64_t)s->cfg.grace_s * 1000000000ull;
    c->next_recovering = s->recovering;
    s->recovering = c;
    s->nrecovering++;
    log_info("client %u (%s, pid %d): waiting for it to reconnect (%u s)", c->id, c->name,
             (int)c->pid, s->cfg.grace_s);
}

int mm__restart_recover(mm_server_t *s)
{
    int err = mm__state_open(s);
    if (err < 0)
        return err;
    int n = mm__state_load(s, add_recovering);
    if (n < 0)
        log_error("cannot read the state directory: %s", strerror(-n));
    else if (n > 0)
        log_info("restart: %d client records found, %u clients alive", n, s->nrecovering);
    return 0;
}

void mm__restart_client_died(mm_server_t *s, mm_host_client_t *c)
{
    mm__unwatch(s, &c->pidfd);
    unlink_list(s, c);
    forget(s, c, "its process exited before it reconnected");
    free_recovering(c);
}

void mm__restart_tick(mm_server_t *s)
{
    uint64_t now = mm__now_ns();
    for (mm_host_client_t *c = s->recovering, *next; c; c = next) {
        next = c->next_recovering;
        /* Once a second: a client closed while it waited to reconnect (its
         * process holds its region no more) is forgotten at once. */
        if (s->ticks % 10 == 0 &&
            find_held_memfd(c->pid, c->region_dev, c->region_ino, false) == -ENOENT) {
            mm__unwatch(s, &c->pidfd);
            unlink_list(s, c);
            forget(s, c, "it was closed before it reconnected");
            free_recovering(c);
            mm__policy_update(s);
            continue;
        }
        if (now < c->grace_deadline_ns)
            continue;
        char path[4096];
        struct stat st;
        mm__paging_swap_path(s, c, path, sizeof path);
        log_warn("client %u (%s, pid %d): did not reconnect within %u s; its memory is no longer "
                 "managed%s%s",
                 c->id, c->name, (int)c->pid, s->cfg.grace_s,
                 stat(path, &st) == 0 ? "; its paged pages stay in " : "",
                 stat(path, &st) == 0 ? path : "");
        mm__unwatch(s, &c->pidfd);
        unlink_list(s, c);
        mm__state_forget(s, c->id);
        free_recovering(c);
        mm__policy_update(s);
    }
}

/* fd is the memfd the record names: same inode, size and seals. */
static int check_memfd(int fd, uint64_t dev, uint64_t ino, uint64_t bytes)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_dev != dev || (uint64_t)st.st_ino != ino)
        return -EBADF;
    return mm__memfd_check(fd, bytes);
}

/* Bring the shared chunk words in line with the record: the record wins,
 * except that a chunk the record calls granted and its word RECLAIMED is
 * taken back (a reclaim or an install cut short; the chunk is free). */
static void reconcile_chunks(mm_host_client_t *c)
{
    uint32_t retaken = 0;
    for (uint32_t i = 0; i < c->chunk_count; i++) {
        if (host_reclaimed(c, i)) {
            (void)mm__frames_repair_reclaimed(&c->frames, i);
            continue;
        }
        if (!mm__frames_chunk_reclaimed(&c->frames, i))
            continue;
        host_set_reclaimed(c, i, true);
        c->granted_chunks--;
        (void)mm__punch(c->region_fd, (uint64_t)i * MM_CHUNK_SIZE, MM_CHUNK_SIZE);
        retaken++;
    }
    if (retaken)
        log_info("client %u (%s): %u chunks taken back that a reclaim or install left half done",
                 c->id, c->name, retaken);
    /* Residency from the kernel, and reclaimed chunks it touched meanwhile. */
    mm__reclaim_check_touched(c);
    mm__refresh_resident(c);
}

static int refuse(mm_host_client_t *c, uint32_t seq, int err, const char *what)
{
    log_warn("client %u (pid %d): reconnect refused: %s", c->id, (int)c->pid, what);
    mm__send_error(c, seq, err, "reconnect refused: %s", what);
    return err;
}

int mm__restart_reconnect(mm_server_t *s, mm_host_client_t *c, const mm_msg_reconnect_t *m,
                          int *fds, int nfds)
{
    mm_host_client_t *r = s->recovering;
    while (r && r->id != m->client_id)
        r = r->next_recovering;
    int err = 0;
    const char *what = NULL;
    if (!r) {
        err = -ENOENT, what = "no record of that client";
    } else if (c->pid != r->pid || c->uid != r->uid) {
        err = -EPERM, what = "the record names another process";
    } else if (m->region_bytes != r->region_bytes || m->shared_bytes != r->shared_bytes) {
        err = -EINVAL, what = "sizes differ from the record";
    } else if (check_memfd(fds[0], r->region_dev, r->region_ino, r->region_bytes) < 0) {
        err = -EBADF, what = "the region fd is not the recorded region";
    } else if (check_memfd(fds[1], r->shared_dev, r->shared_ino, r->shared_bytes) < 0) {
        err = -EBADF, what = "the shared-state fd is not the recorded one";
    } else if (nfds == 3 && !mm__paging_is_uffd(fds[2])) {
        err = -EBADF, what = "the paging fd is not a userfaultfd";
    } else if (nfds == 3 && r->region_addr && r->region_addr != m->region_addr) {
        err = -EINVAL, what = "the region moved";
    }
    if (err < 0) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return refuse(c, m->hdr.seq, err, what);
    }

    /* c keeps its connection (socket, pidfd, their watches); everything
     * else comes from the record. */
    unlink_list(s, r);
    mm__unwatch(s, &r->pidfd);
    mm_host_client_t conn = *c;
    *c = *r;
    free(r);
    c->node = conn.node;
    c->rcu = conn.rcu;
    c->state = MM_CLIENT_CONNECTING;
    c->sock = conn.sock;
    c->pidfd = conn.pidfd;
    c->w_sock = conn.w_sock;
    c->w_pid = conn.w_pid;
    c->next_recovering = NULL;
    c->region_fd = fds[0];
    c->shared_fd = fds[1];
    int uffd = nfds == 3 ? fds[2] : -1;

    c->shared = mmap(NULL, c->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->shared_fd, 0);
    if (c->shared == MAP_FAILED) {
        c->shared = NULL;
        err = -errno;
    }
    if (err == 0) {
        c->ctl = c->shared;
        err = mm__frames_view(&c->frames, c->shared, c->shared_bytes, c->region_bytes);
    }
    if (err < 0) {
        if (uffd >= 0)
            close(uffd);
        return refuse(c, m->hdr.seq, err, "its shared state cannot be read");
    }
    reconcile_chunks(c);
    if (uffd >= 0 && !c->region_addr)
        c->region_addr = m->region_addr;
    if (uffd >= 0 && !c->paging_chunks)
        c->paging_chunks = calloc((c->chunk_count + 63) / 64, sizeof *c->paging_chunks);
    if (uffd >= 0 && (!c->paging_chunks || mm__paging_resume(s, c, uffd) < 0)) {
        /* Without paging it is frozen instead, if it ever must be. */
        if (c->uffd == uffd)
            c->uffd = -1;
        close(uffd);
    } else if (uffd < 0 && c->swap_kept) {
        (void)mm__paging_resume(s, c, -1);
    }

    err = mm__doorbell_pair(&c->bell_to_client, &c->client_bells[0]);
    if (err == 0)
        err = mm__doorbell_pair(&c->bell_to_host, &c->client_bells[1]);
    if (err < 0)
        return refuse(c, m->hdr.seq, err, "no doorbells");
    mm_msg_reconnect_reply_t reply = {.status = 0, .client_id = c->id};
    mm__msg_init(&reply.hdr, MM_MSG_RECONNECT_REPLY, sizeof reply, m->hdr.seq);
    err = mm__send_msg(c->sock, &reply, sizeof reply, c->client_bells, 2);
    mm__close_client_bells(c);
    if (err == 0)
        err = mm__client_publish(s, c);
    if (err < 0)
        return err;
    log_info("client %u (%s, pid %d): reconnected, %u chunks granted, %llu MiB resident", c->id,
             c->name, (int)c->pid, c->granted_chunks,
             (unsigned long long)(c->resident_bytes >> 20));
    mm__policy_update(s);
    return 0;
}

void mm__restart_fini(mm_server_t *s)
{
    /* Records of clients still to reconnect stay for the next daemon. */
    while (s->recovering) {
        mm_host_client_t *c = s->recovering;
        s->recovering = c->next_recovering;
        mm__unwatch(s, &c->pidfd);
        free_recovering(c);
    }
    s->nrecovering = 0;
}
