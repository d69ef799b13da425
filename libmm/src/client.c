/*
 * The libmm client: registration with mmsrv, the region and shared-state
 * mappings, frame allocation on the shared allocator (installing reclaimed
 * chunks when the granted ones are full), release versus free, usage reports
 * and the revocation handler, run by a background thread or by the caller's
 * own event loop.
 *
 * Locks: sock_lock serialises request/reply round trips on the socket;
 * dispatch_lock lets one thread at a time answer the host. Allocation and
 * free take no lock.
 *
 * Daemon restarts: one keeper thread per process (started with the first
 * client) watches every client's socket for a hangup. When the daemon dies
 * the client runs on what it has (mappings, allocator state, its own
 * userfaultfd) and the keeper tries every RETRY_MS to reconnect to a daemon
 * on the same socket path, re-sending the region, shared-state and
 * userfaultfd fds (MM_MSG_RECONNECT). The new socket and doorbells are put
 * in place with dup3() over the old fd numbers, so that mm_client_fd() and
 * a caller's poll set stay valid. A daemon that refuses (its record of the
 * client is gone, or the grace period passed) ends the attempts: the client
 * keeps running, unmanaged. Lock order: keeper.lock, then sock_lock.
 */
#include <mm/mm.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "client_internal.h"
#include "frames.h"
#include "pager.h"
#include "platform.h"
#include "wire.h"

struct mm_client {
    int sock;
    int fds[MM_FD_COUNT]; /* region, shared, doorbell to client, to host */
    int stop_fd;          /* eventfd that stops the background thread */
    int uffd;             /* for host paging; kept open as long as the client */
    uint8_t *base;        /* region mapping */
    uint64_t region_bytes;
    void *shared;
    uint64_t shared_bytes;
    mm_control_t *ctl;
    mm_frames_t frames;
    uint32_t id;
    uint64_t instance; /* tells this client's thread state from a reused address */
    uint32_t seq;      /* guarded by sock_lock */
    pthread_mutex_t sock_lock;
    pthread_mutex_t dispatch_lock;
    uint64_t answered_seq; /* guarded by dispatch_lock */
    mm_revoke_fn on_revoke;
    void *revoke_arg;
    void (*on_bell)(void *arg); /* set before the host rings (client_internal.h) */
    void *bell_arg;
    bool has_thread;
    bool populate; /* populate installed chunks (not MM_CLIENT_NO_POPULATE) */
    pthread_t thread;
    _Atomic uint32_t next_slot;
    /* Restart handling (keeper, below); guarded by keeper.lock. */
    char *socket_path;
    struct mm_client *keeper_next;
    _Atomic bool connected; /* false from a hangup to a reconnect */
    _Atomic bool stopping;  /* the background thread is to exit */
    int reconnect_status;   /* 0, or why the last daemon refused us */
    _Atomic uint64_t reconnects;
};

/* Each thread's reservation, for the one client it used last. */
static _Thread_local struct {
    uint64_t instance;
    mm_frames_thread_t t;
} tls;
static _Atomic uint64_t next_instance = 1;

static mm_frames_thread_t *thread_state(mm_client_t *c)
{
    if (tls.instance != c->instance) {
        tls.instance = c->instance;
        tls.t.slot = atomic_fetch_add(&c->next_slot, 1) % MM_RESERVER_SLOTS + 1;
        tls.t.chunk = UINT32_MAX;
    }
    return &tls.t;
}

MM_EXPORT void mm_client_opts_init(mm_client_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_bytes = 1ull << 30;
    opts->weight = 100;
    opts->kind = MM_KIND_RUNTIME;
    opts->numa_node = -1;
}

static int connect_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int err = -errno;
        close(s);
        return err;
    }
    return s;
}

/* One request and its reply; reply must hold MM_MSG_MAX_BYTES. An error
 * message from the host becomes its status. Caller holds sock_lock or owns
 * the client exclusively. */
static int round_trip(mm_client_t *c, mm_msg_hdr_t *req, void *reply, uint16_t want, int *fds,
                      int *nfds)
{
    req->seq = ++c->seq;
    int err = mm__send_msg(c->sock, req, req->length, NULL, 0);
    if (err < 0)
        return err == -EPIPE ? -ENOTCONN : err;
    int nfd = 0;
    ssize_t n = mm__recv_msg(c->sock, reply, MM_MSG_MAX_BYTES, fds, fds ? MM_FD_COUNT : 0, &nfd);
    if (nfds)
        *nfds = nfd;
    if (n <= 0)
        return n == 0 ? -ENOTCONN : (int)n;
    int type = mm__msg_check(reply, (size_t)n);
    if (type == MM_MSG_ERROR)
        err = ((mm_msg_error_t *)reply)->status;
    else if (type < 0)
        err = type;
    else if (type != want || ((mm_msg_hdr_t *)reply)->seq != req->seq)
        err = -EPROTO;
    if (err < 0)
        for (int i = 0; i < nfd; i++)
            close(fds[i]);
    return err;
}

static int hello(mm_client_t *c, const mm_client_opts_t *o)
{
    mm_msg_hello_t m = {0};
    mm__msg_init(&m.hdr, MM_MSG_HELLO, sizeof m, 0);
    if (o->name)
        snprintf(m.name, sizeof m.name, "%s", o->name);
    else
        snprintf(m.name, sizeof m.name, "pid-%d", (int)getpid());
    m.max_bytes = (o->max_bytes + MM_CHUNK_SIZE - 1) & ~(uint64_t)(MM_CHUNK_SIZE - 1);
    m.min_bytes = o->min_bytes;
    m.weight = o->weight;
    m.kind = o->kind;
    m.numa_node = o->numa_node;
    m.flags = o->driver << MM_HELLO_DRIVER_SHIFT;
    if (o->driver >= MM_DRIVER_COUNT || mm__msg_check(&m, sizeof m) != MM_MSG_HELLO)
        return -EINVAL;

    union {
        mm_msg_hello_reply_t r;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    int nfds = 0;
    int err = round_trip(c, &m.hdr, &u, MM_MSG_HELLO_REPLY, c->fds, &nfds);
    if (err < 0)
        return err;
    const mm_msg_hello_reply_t *r = &u.r;
    if (r->status < 0 || nfds != MM_FD_COUNT || r->region_bytes != m.max_bytes ||
        r->region_bytes != (uint64_t)r->chunk_count * MM_CHUNK_SIZE ||
        r->shared_bytes != mm_shared_bytes(r->chunk_count)) {
        for (int i = 0; i < nfds; i++)
            close(c->fds[i]);
        return r->status < 0 ? r->status : -EPROTO;
    }
    c->id = r->client_id;
    c->region_bytes = r->region_bytes;
    c->shared_bytes = r->shared_bytes;
    return 0;
}

/* Map fd's bytes at a chunk-aligned address, so that alignments up to a
 * chunk hold for addresses and not just for offsets in the region. */
static void *map_aligned(int fd, uint64_t bytes)
{
    uint8_t *span = mmap(NULL, bytes + MM_CHUNK_SIZE, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (span == MAP_FAILED)
        return MAP_FAILED;
    uint8_t *base =
        (uint8_t *)(((uintptr_t)span + MM_CHUNK_SIZE - 1) & ~(uintptr_t)(MM_CHUNK_SIZE - 1));
    void *got =
        mmap(base, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd, 0);
    int err = errno;
    /* Give back the unused ends of the span (or all of it on failure). */
    if (got == MAP_FAILED) {
        munmap(span, bytes + MM_CHUNK_SIZE);
        errno = err;
        return MAP_FAILED;
    }
    if (base > span)
        munmap(span, (size_t)(base - span));
    size_t tail = (size_t)(span + bytes + MM_CHUNK_SIZE - (base + bytes));
    if (tail)
        munmap(base + bytes, tail);
    return base;
}

/* Map shared state and region, both checked and kept out of forked children
 * (a child's second mapping could fill holes the host punched). */
static int map_client(mm_client_t *c)
{
    int err = mm__memfd_check(c->fds[MM_FD_REGION], c->region_bytes);
    if (err == 0)
        err = mm__memfd_check(c->fds[MM_FD_SHARED], c->shared_bytes);
    if (err < 0)
        return -EPROTO;
    c->shared =
        mmap(NULL, c->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->fds[MM_FD_SHARED], 0);
    if (c->shared == MAP_FAILED)
        return c->shared = NULL, -errno;
    c->ctl = c->shared;
    err = mm__frames_view(&c->frames, c->shared, c->shared_bytes, c->region_bytes);
    if (err < 0)
        return err;
    void *base = map_aligned(c->fds[MM_FD_REGION], c->region_bytes);
    if (base == MAP_FAILED)
        return -errno;
    c->base = base;
    if (madvise(c->base, c->region_bytes, MADV_DONTFORK) < 0 ||
        madvise(c->shared, c->shared_bytes, MADV_DONTFORK) < 0)
        return -errno;
    return 0;
}

static void *answer_thread(void *arg)
{
    mm_client_t *c = arg;
    struct pollfd p[2] = {{.fd = c->fds[MM_FD_DOORBELL_TO_CLIENT], .events = POLLIN},
                          {.fd = c->stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0)
            continue; /* EINTR: poll again */
        if (p[1].revents) {
            /* A stop, or a kick after a reconnect replaced the doorbell
             * (this poll may still have watched the old one). */
            (void)mm__doorbell_drain(c->stop_fd);
            if (atomic_load(&c->stopping))
                return NULL;
            continue;
        }
        if (p[0].revents)
            mm_client_dispatch(c);
    }
}

/* ---- Keeper: noticing a daemon's death and reconnecting ----------------- */

#define RETRY_MS          200
#define RECONNECT_WAIT_MS 5000

static struct {
    pthread_mutex_t lock; /* guards everything here and clients' keeper fields */
    bool started;
    int epfd;  /* every connected client's socket, for EPOLLHUP */
    int timer; /* ticks while a client waits to reconnect */
    mm_client_t *clients;
    unsigned waiting; /* clients not connected that still try */
    pthread_t thread;
} keeper = {.lock = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .timer = -1};

/* The open client with this instance number, or NULL (closed meanwhile:
 * events name clients by instance, never by an address a later client
 * may get). */
static mm_client_t *keeper_find(uint64_t instance)
{
    for (mm_client_t *k = keeper.clients; k; k = k->keeper_next)
        if (k->instance == instance)
            return k;
    return NULL;
}

static void keeper_arm(bool on)
{
    struct itimerspec its = {0};
    if (on)
        its.it_interval.tv_nsec = its.it_value.tv_nsec = RETRY_MS * 1000000L;
    (void)timerfd_settime(keeper.timer, 0, &its, NULL); /* cannot fail on a valid fd */
}

/* Install fd over the number old holds (close-on-exec kept), and close fd. */
static int replace_fd(int fd, int old)
{
    int err = dup3(fd, old, O_CLOEXEC) < 0 ? -errno : 0;
    close(fd);
    return err;
}

/* One attempt: 0 reconnected; -EAGAIN no daemon yet (try again); else the
 * daemon refused (the attempts end). keeper.lock held. */
static int try_reconnect(mm_client_t *c)
{
    int s = connect_socket(c->socket_path);
    if (s < 0)
        return -EAGAIN;
    struct timeval tv = {RECONNECT_WAIT_MS / 1000, 0};
    (void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* best effort */
    mm_msg_reconnect_t m = {
        .client_id = c->id,
        .flags = c->uffd >= 0 ? MM_RECONNECT_UFFD : 0,
        .region_addr = (uintptr_t)c->base,
        .region_bytes = c->region_bytes,
        .shared_bytes = c->shared_bytes,
    };
    mm__msg_init(&m.hdr, MM_MSG_RECONNECT, sizeof m, 1);
    int fds[3] = {c->fds[MM_FD_REGION], c->fds[MM_FD_SHARED], c->uffd};
    union {
        mm_msg_reconnect_reply_t r;
        mm_msg_error_t e;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    int got[2], nfds = 0;
    int err = mm__send_msg(s, &m, sizeof m, fds, c->uffd >= 0 ? 3 : 2);
    ssize_t n = err < 0 ? err : mm__recv_msg(s, u.buf, sizeof u.buf, got, 2, &nfds);
    int type = n > 0 ? mm__msg_check(u.buf, (size_t)n) : -EAGAIN;
    if (type == MM_MSG_RECONNECT_REPLY && nfds == 2) {
        err = replace_fd(got[0], c->fds[MM_FD_DOORBELL_TO_CLIENT]);
        int err2 = replace_fd(got[1], c->fds[MM_FD_DOORBELL_TO_HOST]);
        pthread_mutex_lock(&c->sock_lock);
        int err3 = replace_fd(s, c->sock);
        pthread_mutex_unlock(&c->sock_lock);
        if (err == 0)
            err = err2 ? err2 : err3;
        if (err == 0 && c->has_thread)
            (void)mm__doorbell_ring(c->stop_fd); /* poll the new doorbell */
        return err;
    }
    for (int i = 0; i < nfds; i++)
        close(got[i]);
    close(s);
    /* Refused for good only when the daemon said so. */
    return type == MM_MSG_ERROR ? (u.e.status < 0 ? u.e.status : -EPROTO) : -EAGAIN;
}

static void keeper_watch(mm_client_t *c)
{
    /* No events asked: a hangup and an error are always reported. */
    struct epoll_event ev = {.events = 0, .data.u64 = c->instance};
    (void)epoll_ctl(keeper.epfd, EPOLL_CTL_ADD, c->sock, &ev); /* fails only without memory */
}

/* Retry every waiting client; keeper.lock held. */
static void keeper_retry(void)
{
    for (mm_client_t *c = keeper.clients; c; c = c->keeper_next) {
        if (atomic_load(&c->connected) || c->reconnect_status)
            continue;
        int err = try_reconnect(c);
        if (err == -EAGAIN)
            continue;
        keeper.waiting--;
        if (err < 0) {
            c->reconnect_status = err;
            continue;
        }
        atomic_store(&c->connected, true);
        atomic_fetch_add(&c->reconnects, 1);
        keeper_watch(c);
    }
    if (keeper.waiting == 0)
        keeper_arm(false);
}

static void *keeper_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct epoll_event ev[16];
        int n = epoll_wait(keeper.epfd, ev, 16, -1);
        pthread_mutex_lock(&keeper.lock);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0) { /* the timer */
                uint64_t ticks;
                if (read(keeper.timer, &ticks, sizeof ticks) > 0)
                    keeper_retry();
                continue;
            }
            /* Closed meanwhile, or already seen: nothing to do. */
            mm_client_t *c = keeper_find(ev[i].data.u64);
            if (!c || !atomic_load(&c->connected))
                continue;
            (void)epoll_ctl(keeper.epfd, EPOLL_CTL_DEL, c->sock, NULL);
            atomic_store(&c->connected, false);
            keeper.waiting++;
            keeper_arm(true);
        }
        pthread_mutex_unlock(&keeper.lock);
    }
    return NULL;
}

/* A forked child has no keeper thread, and the parent's clients are not
 * its own (their mappings are MADV_DONTFORK): it starts afresh. */
static void keeper_forget_in_child(void)
{
    if (keeper.epfd >= 0)
        close(keeper.epfd);
    if (keeper.timer >= 0)
        close(keeper.timer);
    keeper.epfd = keeper.timer = -1;
    keeper.clients = NULL;
    keeper.waiting = 0;
    keeper.started = false;
    pthread_mutex_init(&keeper.lock, NULL);
}

/* Start the keeper (once per process). keeper.lock held. */
static int keeper_start(void)
{
    static bool atfork;
    if (!atfork && pthread_atfork(NULL, NULL, keeper_forget_in_child) == 0)
        atfork = true;
    if (keeper.started)
        return 0;
    keeper.epfd = epoll_create1(EPOLL_CLOEXEC);
    keeper.timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0}; /* instances start at 1 */
    int err = keeper.epfd < 0 || keeper.timer < 0 ? -errno : 0;
    if (err == 0 && epoll_ctl(keeper.epfd, EPOLL_CTL_ADD, keeper.timer, &ev) < 0)
        err = -errno;
    if (err == 0) {
        /* Block every signal in the keeper: they are the caller's. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        err = -pthread_create(&keeper.thread, NULL, keeper_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (err == 0) {
        pthread_detach(keeper.thread); /* lives as long as the process */
        keeper.started = true;
        return 0;
    }
    if (keeper.epfd >= 0)
        close(keeper.epfd);
    if (keeper.timer >= 0)
        close(keeper.timer);
    keeper.epfd = keeper.timer = -1;
    return err;
}

static int keeper_add(mm_client_t *c)
{
    pthread_mutex_lock(&keeper.lock);
    int err = keeper_start();
    if (err == 0) {
        c->keeper_next = keeper.clients;
        keeper.clients = c;
        atomic_store(&c->connected, true);
        keeper_watch(c);
    }
    pthread_mutex_unlock(&keeper.lock);
    return err;
}

static void keeper_remove(mm_client_t *c)
{
    pthread_mutex_lock(&keeper.lock);
    for (mm_client_t **p = &keeper.clients; *p; p = &(*p)->keeper_next)
        if (*p == c) {
            *p = c->keeper_next;
            if (atomic_load(&c->connected))
                (void)epoll_ctl(keeper.epfd, EPOLL_CTL_DEL, c->sock, NULL);
            else if (!c->reconnect_status)
                keeper.waiting--;
            break;
        }
    pthread_mutex_unlock(&keeper.lock);
}

static void release_client(mm_client_t *c)
{
    if (c->base)
        munmap(c->base, c->region_bytes);
    if (c->shared)
        munmap(c->shared, c->shared_bytes);
    for (int i = 0; i < MM_FD_COUNT; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    if (c->stop_fd >= 0)
        close(c->stop_fd);
    if (c->uffd >= 0)
        close(c->uffd);
    if (c->sock >= 0)
        close(c->sock);
    free(c->socket_path);
    pthread_mutex_destroy(&c->sock_lock);
    pthread_mutex_destroy(&c->dispatch_lock);
    free(c);
}

/*
 * Give the host a userfaultfd over this process, so that it can page the
 * region out and back instead of freezing the process when it misses a
 * revocation deadline. The host registers ranges only when it pages them.
 * Without the privilege for a full userfaultfd there is nothing to offer.
 */
static void offer_paging(mm_client_t *c)
{
    int uffd = mm__uffd_open();
    if (uffd < 0)
        return;
    mm_msg_paging_t m = {.region_addr = (uintptr_t)c->base};
    mm__msg_init(&m.hdr, MM_MSG_PAGING, sizeof m, 0);
    if (mm__send_msg(c->sock, &m, sizeof m, &uffd, 1) < 0) {
        close(uffd);
        return;
    }
    c->uffd = uffd;
}

MM_EXPORT int mm_client_open(const char *socket_path, const mm_client_opts_t *opts,
                             mm_client_t **out)
{
    mm_client_opts_t defaults;
    if (!opts) {
        mm_client_opts_init(&defaults);
        opts = &defaults;
    }
    if (!out || opts->max_bytes == 0 || opts->max_bytes > MM_REGION_MAX_BYTES)
        return -EINVAL;
    mm_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->sock = c->stop_fd = c->uffd = -1;
    for (int i = 0; i < MM_FD_COUNT; i++)
        c->fds[i] = -1;
    pthread_mutex_init(&c->sock_lock, NULL);
    pthread_mutex_init(&c->dispatch_lock, NULL);
    c->instance = atomic_fetch_add(&next_instance, 1);
    c->on_revoke = opts->on_revoke;
    c->revoke_arg = opts->revoke_arg;
    c->populate = !(opts->flags & MM_CLIENT_NO_POPULATE);

    c->socket_path = strdup(socket_path ? socket_path : mm_default_socket());
    int err = c->socket_path ? connect_socket(c->socket_path) : -ENOMEM;
    if (err >= 0) {
        c->sock = err;
        err = hello(c, opts);
    }
    if (err >= 0)
        err = map_client(c);
    if (err >= 0 && !(opts->flags & MM_CLIENT_NO_HOST_PAGING))
        offer_paging(c);
    if (err >= 0 && (opts->flags & MM_CLIENT_THREAD)) {
        c->stop_fd = mm__doorbell_create();
        err = c->stop_fd < 0 ? c->stop_fd : -pthread_create(&c->thread, NULL, answer_thread, c);
        c->has_thread = err == 0;
    }
    if (err >= 0)
        err = keeper_add(c);
    if (err < 0) {
        if (c->has_thread) {
            atomic_store(&c->stopping, true);
            mm__doorbell_ring(c->stop_fd);
            pthread_join(c->thread, NULL);
        }
        release_client(c);
        return err;
    }
    *out = c;
    return 0;
}

MM_EXPORT void mm_client_close(mm_client_t *c)
{
    if (!c)
        return;
    keeper_remove(c);
    if (c->has_thread) {
        atomic_store(&c->stopping, true);
        mm__doorbell_ring(c->stop_fd);
        pthread_join(c->thread, NULL);
    }
    if (tls.instance == c->instance)
        mm__frames_unreserve(&c->frames, &tls.t);
    mm_msg_bye_t bye;
    mm__msg_init(&bye.hdr, MM_MSG_BYE, sizeof bye, 0);
    /* The daemon frees the client on bye or when this process exits; a
     * failed send changes nothing for us. */
    (void)mm__send_msg(c->sock, &bye, sizeof bye, NULL, 0);
    release_client(c);
}

MM_EXPORT void *mm_client_base(const mm_client_t *c)
{
    return c->base;
}
static int source_alloc(void *arg, size_t bytes, size_t align, void **out)
{
    return mm_alloc(arg, bytes, align, out);
}

static int source_free(void *arg, void *addr, size_t bytes)
{
    return mm_free(arg, addr, bytes);
}

static int source_release(void *arg, void *addr, size_t bytes)
{
    return mm_release(arg, addr, bytes);
}

static int64_t source_resident(void *arg)
{
    mm_client_stats_t st;
    int err = mm_client_stats(arg, &st);
    return err < 0 ? err : (int64_t)st.resident_bytes;
}

MM_EXPORT mm_frame_source_t mm_client_frame_source(mm_client_t *client)
{
    return (mm_frame_source_t){
        .alloc = source_alloc,
        .free = source_free,
        .release = source_release,
        .resident_bytes = source_resident,
        .arg = client,
    };
}

MM_EXPORT int mm_client_region_fd(const mm_client_t *c)
{
    return c->fds[MM_FD_REGION];
}

MM_EXPORT uint64_t mm_client_region_bytes(const mm_client_t *c)
{
    return c->region_bytes;
}
MM_EXPORT uint32_t mm_client_id(const mm_client_t *c)
{
    return c->id;
}
MM_EXPORT int mm_client_fd(const mm_client_t *c)
{
    return c->fds[MM_FD_DOORBELL_TO_CLIENT];
}

/* Make granted chunks resident in one populate call per adjacent run. */
static int populate_chunks(mm_client_t *c, const uint32_t *chunks, uint32_t n)
{
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i + 1;
        while (j < n && chunks[j] == chunks[j - 1] + 1)
            j++;
        int err = mm__populate_write(c->base + (uint64_t)chunks[i] * MM_CHUNK_SIZE,
                                     (size_t)(j - i) * MM_CHUNK_SIZE);
        if (err < 0)
            return err;
        i = j;
    }
    return 0;
}

/* True if every granted chunk was asked for, in the order asked. */
static bool reply_matches(const mm_msg_install_reply_t *r, const uint32_t *asked, uint32_t n)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->count; i++) {
        while (k < n && asked[k] != r->chunks[i])
            k++;
        if (k++ == n)
            return false;
    }
    return true;
}

/* Ask the host to install chunks (reclaimed ones) reserved for slot, then
 * populate what it granted. Returns the number granted, or a negative errno
 * when it granted none. */
static int install_chunks(mm_client_t *c, uint32_t slot, const uint32_t *chunks, uint32_t n)
{
    union {
        mm_msg_install_reply_t r;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    mm_msg_install_t m;
    int granted = 0, err = 0;
    for (uint32_t done = 0; done < n && err == 0;) {
        uint32_t batch = n - done < MM_INSTALL_MAX ? n - done : MM_INSTALL_MAX;
        mm__msg_init(&m.hdr, MM_MSG_INSTALL, mm__msg_install_length(batch), 0);
        m.slot = slot;
        m.count = batch;
        memcpy(m.chunks, chunks + done, batch * sizeof(uint32_t));
        pthread_mutex_lock(&c->sock_lock);
        err = round_trip(c, &m.hdr, &u, MM_MSG_INSTALL_REPLY, NULL, NULL);
        pthread_mutex_unlock(&c->sock_lock);
        if (err == 0 && !reply_matches(&u.r, m.chunks, batch))
            err = -EPROTO;
        if (err == 0 && u.r.count > 0 && c->populate)
            err = populate_chunks(c, u.r.chunks, u.r.count);
        if (err == 0) {
            granted += (int)u.r.count;
            if (u.r.count < batch)
                err = u.r.status < 0 ? u.r.status : -ENOMEM;
        }
        done += batch;
    }
    return granted > 0 ? granted : (err < 0 ? err : -ENOMEM);
}

/* Find one reclaimed chunk and install it for this thread. Returns 0 also
 * when another thread installed that chunk first: the caller tries again. */
static int install_one(mm_client_t *c, mm_frames_thread_t *t)
{
    for (uint32_t i = 0; i < c->frames.chunk_count; i++) {
        if (!mm__frames_chunk_reclaimed(&c->frames, i))
            continue;
        int n = install_chunks(c, t->slot, &i, 1);
        if (n > 0)
            t->chunk = i;
        if (n < 0 && !mm__frames_chunk_reclaimed(&c->frames, i))
            return 0;
        return n < 0 ? n : 0;
    }
    return -ENOMEM; /* the whole region is granted and full */
}

static int alloc_in_chunk(mm_client_t *c, uint32_t nframes, uint32_t align_frames, void **out)
{
    mm_frames_thread_t *t = thread_state(c);
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t frame;
        int err = mm__frames_alloc(&c->frames, t, nframes, align_frames, &frame);
        if (err == 0) {
            *out = c->base + frame * MM_FRAME_SIZE;
            return 0;
        }
        if (err != -ENOSPC)
            return err;
        err = install_one(c, t);
        if (err == -ENOMEM &&
            mm__frames_borrow(&c->frames, t, nframes, align_frames, &frame) == 0) {
            *out = c->base + frame * MM_FRAME_SIZE;
            return 0;
        }
        if (err < 0)
            return err;
    }
    return -ENOMEM; /* granted chunks keep being taken back under us */
}

/* Install the reclaimed chunks of [first, first + span), a message per
 * MM_INSTALL_MAX of them. No malloc: allocator hooks (jemalloc's) call this. */
static int install_run(mm_client_t *c, uint32_t slot, uint32_t first, uint32_t span)
{
    uint32_t want[MM_INSTALL_MAX], n = 0;
    for (uint32_t i = first; i <= first + span; i++) {
        bool last = i == first + span;
        if (!last && mm__frames_chunk_reclaimed(&c->frames, i))
            want[n++] = i;
        if (n == 0 || (n < MM_INSTALL_MAX && !last))
            continue;
        int got = install_chunks(c, slot, want, n);
        if (got < (int)n)
            return got < 0 ? got : -ENOMEM;
        n = 0;
    }
    return 0;
}

/* Runs of whole chunks: find adjacent chunks that are free or installable,
 * install the reclaimed ones, then claim the run all at once. */
static int alloc_chunks(mm_client_t *c, uint64_t nframes, uint64_t align, void **out)
{
    uint32_t slot = thread_state(c)->slot;
    uint32_t nchunks = (uint32_t)(nframes / MM_CHUNK_FRAMES);
    uint32_t tail = (uint32_t)(nframes % MM_CHUNK_FRAMES);
    uint32_t span = nchunks + (tail ? 1 : 0);
    int err = -ENOMEM;
    uint32_t hint = 0;
    for (int attempt = 0; attempt < 8 && hint < c->frames.chunk_count; attempt++) {
        uint32_t first;
        err = mm__frames_find_run(&c->frames, span, hint, &first);
        if (err < 0)
            break;
        uintptr_t at = (uintptr_t)c->base + (uintptr_t)first * MM_CHUNK_SIZE;
        if (at % align) { /* the base is chunk-aligned: step to the next aligned chunk */
            hint = first + (uint32_t)((align - at % align) / MM_CHUNK_SIZE);
            attempt--; /* moving to an aligned start is not a failed attempt */
            continue;
        }
        err = install_run(c, slot, first, span);
        if (err < 0)
            break;
        err = mm__frames_alloc_chunks(&c->frames, first, nchunks, tail, slot);
        if (err == 0) {
            *out = c->base + (uint64_t)first * MM_CHUNK_SIZE;
            break;
        }
    }
    return err == -ENOSPC || err == -EBUSY ? -ENOMEM : err;
}

MM_EXPORT int mm_alloc(mm_client_t *c, size_t bytes, size_t align, void **out)
{
    if (align == 0)
        align = MM_FRAME_SIZE;
    if (!c || !out || bytes == 0 || bytes % MM_FRAME_SIZE || bytes > c->region_bytes ||
        align < MM_FRAME_SIZE || (align & (align - 1)))
        return -EINVAL;
    uint64_t nframes = bytes / MM_FRAME_SIZE;
    if (nframes <= MM_CHUNK_FRAMES && align <= MM_CHUNK_SIZE)
        return alloc_in_chunk(c, (uint32_t)nframes, (uint32_t)(align / MM_FRAME_SIZE), out);
    return alloc_chunks(c, nframes, align, out);
}

/* Frame index of addr if [addr, addr+bytes) is frame-aligned inside the
 * region, else -EINVAL. */
static int64_t region_frame(const mm_client_t *c, const void *addr, size_t bytes)
{
    uintptr_t a = (uintptr_t)addr, b = (uintptr_t)c->base;
    if (!addr || bytes == 0 || a < b || (a - b) % MM_FRAME_SIZE || bytes % MM_FRAME_SIZE ||
        a - b > c->region_bytes || bytes > c->region_bytes - (a - b))
        return -EINVAL;
    return (int64_t)((a - b) / MM_FRAME_SIZE);
}

MM_EXPORT int mm_free(mm_client_t *c, void *addr, size_t bytes)
{
    int64_t frame = region_frame(c, addr, bytes);
    if (frame < 0)
        return (int)frame;
    int err = mm__frames_free(&c->frames, (uint64_t)frame, bytes / MM_FRAME_SIZE);
    if (err == -EIO && mm__frames_chunk_reclaimed(&c->frames, (uint32_t)(frame / MM_CHUNK_FRAMES)))
        return -ESTALE; /* a discardable chunk the host took: nothing to free */
    return err;
}

MM_EXPORT int mm_discardable(mm_client_t *c, void *addr, size_t bytes, int on)
{
    int64_t frame = region_frame(c, addr, bytes);
    if (frame < 0 || frame % MM_CHUNK_FRAMES || bytes % MM_CHUNK_SIZE)
        return -EINVAL;
    for (uint64_t i = 0; i < bytes / MM_CHUNK_SIZE; i++) {
        int err = mm__frames_set_discardable(
            &c->frames, (uint32_t)((uint64_t)frame / MM_CHUNK_FRAMES + i), on != 0);
        if (err < 0)
            return err;
    }
    return 0;
}

/* The chunk holding any address inside the region, or -EINVAL. */
static int64_t region_chunk(const mm_client_t *c, const void *addr)
{
    uintptr_t a = (uintptr_t)addr, b = (uintptr_t)c->base;
    if (a < b || a - b >= c->region_bytes)
        return -EINVAL;
    return (int64_t)((a - b) / MM_CHUNK_SIZE);
}

MM_EXPORT int mm_discardable_pin(mm_client_t *c, const void *addr)
{
    int64_t chunk = region_chunk(c, addr);
    return chunk < 0 ? (int)chunk : mm__frames_pin(&c->frames, (uint32_t)chunk);
}

MM_EXPORT void mm_discardable_unpin(mm_client_t *c, const void *addr)
{
    int64_t chunk = region_chunk(c, addr);
    if (chunk >= 0)
        mm__frames_unpin(&c->frames, (uint32_t)chunk);
}

MM_EXPORT int mm_release(mm_client_t *c, void *addr, size_t bytes)
{
    int64_t frame = region_frame(c, addr, bytes);
    if (frame < 0)
        return (int)frame;
    return mm__punch(c->fds[MM_FD_REGION], (uint64_t)frame * MM_FRAME_SIZE, bytes);
}

MM_EXPORT int mm_client_stats(mm_client_t *c, mm_client_stats_t *s)
{
    memset(s, 0, sizeof *s);
    s->region_bytes = c->region_bytes;
    for (uint32_t i = 0; i < c->frames.chunk_count; i++) {
        if (mm__frames_chunk_reclaimed(&c->frames, i))
            continue;
        uint32_t free_frames = mm__frames_chunk_free(&c->frames, i);
        s->granted_bytes += MM_CHUNK_SIZE;
        if (mm__frames_chunk_discardable(&c->frames, i))
            s->discardable_bytes += MM_CHUNK_SIZE;
        s->free_bytes += (uint64_t)free_frames * MM_FRAME_SIZE;
    }
    s->owned_bytes = s->granted_bytes - s->free_bytes;
    int64_t resident = mm__resident_bytes(c->fds[MM_FD_REGION]);
    if (resident < 0)
        return (int)resident;
    s->resident_bytes = (uint64_t)resident;
    s->target_bytes = atomic_load_explicit(&c->ctl->target_bytes, memory_order_acquire);
    s->pressure = atomic_load_explicit(&c->ctl->pressure, memory_order_acquire);
    return 0;
}

MM_EXPORT int mm_report(mm_client_t *c, const mm_usage_t *u)
{
    mm_client_stats_t s;
    int err = mm_client_stats(c, &s);
    if (err < 0)
        return err;
    mm_control_t *ctl = c->ctl;
    atomic_store_explicit(&ctl->owned_bytes, s.owned_bytes, memory_order_relaxed);
    atomic_store_explicit(&ctl->free_bytes, s.free_bytes, memory_order_relaxed);
    atomic_store_explicit(&ctl->discardable_bytes, s.discardable_bytes, memory_order_relaxed);
    atomic_store_explicit(&ctl->resident_bytes, s.resident_bytes, memory_order_relaxed);
    if (u) {
        atomic_store_explicit(&ctl->live_bytes, u->live_bytes, memory_order_relaxed);
        atomic_store_explicit(&ctl->heap_bytes, u->heap_bytes, memory_order_relaxed);
        atomic_store_explicit(&ctl->garbage_bytes, u->garbage_bytes, memory_order_relaxed);
        atomic_store_explicit(&ctl->cost_ns_per_mib, u->cost_ns_per_mib, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&ctl->report_seq, 1, memory_order_release);
    err = mm__doorbell_ring(c->fds[MM_FD_DOORBELL_TO_HOST]);
    /* Without a daemon the report waits in shared memory for the next one. */
    return atomic_load(&c->connected) ? err : 0;
}

MM_EXPORT int mm_client_dispatch(mm_client_t *c)
{
    int err = mm__doorbell_drain(c->fds[MM_FD_DOORBELL_TO_CLIENT]);
    if (err < 0 && atomic_load(&c->connected))
        return err;
    pthread_mutex_lock(&c->dispatch_lock);
    mm_control_t *ctl = c->ctl;
    uint64_t seq = atomic_load_explicit(&ctl->revoke_seq, memory_order_acquire);
    if (seq != c->answered_seq) {
        mm_revoke_request_t req = {
            .seq = seq,
            .bytes = atomic_load_explicit(&ctl->revoke_bytes, memory_order_relaxed),
            .deadline_ns = atomic_load_explicit(&ctl->revoke_deadline_ns, memory_order_relaxed),
            .reason = (uint32_t)atomic_load_explicit(&ctl->revoke_reason, memory_order_relaxed),
        };
        uint64_t given = c->on_revoke ? c->on_revoke(c, &req, c->revoke_arg) : 0;
        c->answered_seq = seq;
        atomic_store_explicit(&ctl->ack_bytes, given, memory_order_relaxed);
        atomic_store_explicit(&ctl->ack_seq, seq, memory_order_release);
        err = mm__doorbell_ring(c->fds[MM_FD_DOORBELL_TO_HOST]);
        if (!atomic_load(&c->connected))
            err = 0; /* the answer waits in shared memory */
    }
    if (c->on_bell)
        c->on_bell(c->bell_arg);
    pthread_mutex_unlock(&c->dispatch_lock);
    return err;
}

void mm__client_on_bell(mm_client_t *c, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&c->dispatch_lock);
    c->on_bell = fn;
    c->bell_arg = arg;
    pthread_mutex_unlock(&c->dispatch_lock);
}

int mm__client_install(mm_client_t *c, uint32_t chunk)
{
    int n = install_chunks(c, 0, &chunk, 1);
    return n > 0 ? 0 : n;
}

mm_frames_t *mm__client_frames(mm_client_t *c)
{
    return &c->frames;
}

int mm__client_call(mm_client_t *c, mm_msg_hdr_t *req, void *reply, uint16_t want)
{
    pthread_mutex_lock(&c->sock_lock);
    int err = round_trip(c, req, reply, want, NULL, NULL);
    pthread_mutex_unlock(&c->sock_lock);
    return err;
}

MM_EXPORT int mm_client_connected(mm_client_t *c)
{
    if (atomic_load(&c->connected))
        return 1;
    pthread_mutex_lock(&keeper.lock);
    int status = c->reconnect_status;
    pthread_mutex_unlock(&keeper.lock);
    return status < 0 ? status : 0;
}

MM_EXPORT uint64_t mm_client_reconnects(mm_client_t *c)
{
    return atomic_load(&c->reconnects);
}
