/*
 * The server: state directory and its lock, the client and admin sockets,
 * and the one epoll event loop that drives everything else (client messages,
 * deaths, doorbells, admin requests, the periodic tick and signals).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "platform.h"

#define TICK_MS 100

static int watch_add(mm_server_t *s, int fd, uint32_t events, mm_watch_t *w)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* One daemon per state directory: an exclusive lock on mmsrv.lock. */
static int lock_state_dir(mm_server_t *s)
{
    if (mkdir(s->cfg.state_dir, 0755) < 0 && errno != EEXIST) {
        log_error("cannot create state directory %s: %s", s->cfg.state_dir, strerror(errno));
        return -errno;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/mmsrv.lock", s->cfg.state_dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -errno;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        log_error("another mmsrv is using state directory %s", s->cfg.state_dir);
        return -EBUSY;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(s->lock_fd, 0) < 0 || write(s->lock_fd, pid, (size_t)n) != n)
        log_warn("cannot record pid in %s: %s", path, strerror(errno));
    return 0;
}

/* Listen on path; a stale socket file (nobody listening) is replaced. */
static int listen_at(const char *path, int type, mode_t mode, gid_t gid, bool set_gid)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        log_error("socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(path); /* the state-dir lock says no other daemon owns it */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 512) < 0) {
        int err = -errno;
        log_error("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return err;
    }
    if (chmod(path, mode) < 0 || (set_gid && chown(path, (uid_t)-1, gid) < 0)) {
        int err = -errno;
        log_error("cannot set permissions of %s: %s", path, strerror(errno));
        close(fd);
        return err;
    }
    return fd;
}

static int open_fds(mm_server_t *s)
{
    /* Any local user may be a client; the admin socket is root's and the
     * admin group's (checked again per connection from SO_PEERCRED). */
    s->listen_fd = listen_at(s->cfg.socket_path, SOCK_SEQPACKET, 0666, 0, false);
    if (s->listen_fd < 0)
        return s->listen_fd;
    s->admin_fd = listen_at(s->cfg.admin_socket_path, SOCK_STREAM, 0660, s->cfg.admin_gid,
                            s->cfg.has_admin_group);
    if (s->admin_fd < 0)
        return s->admin_fd;
    s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->timer_fd < 0)
        return -errno;
    struct itimerspec its = {.it_interval = {0, TICK_MS * 1000000L},
                             .it_value = {0, TICK_MS * 1000000L}};
    if (timerfd_settime(s->timer_fd, 0, &its, NULL) < 0)
        return -errno;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -errno;
    s->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal_fd < 0)
        return -errno;
    s->w_listen = (mm_watch_t){MM_WATCH_LISTEN, NULL};
    s->w_admin = (mm_watch_t){MM_WATCH_ADMIN_LISTEN, NULL};
    s->w_timer = (mm_watch_t){MM_WATCH_TIMER, NULL};
    s->w_signal = (mm_watch_t){MM_WATCH_SIGNAL, NULL};
    int err = watch_add(s, s->listen_fd, EPOLLIN, &s->w_listen);
    if (err == 0)
        err = watch_add(s, s->admin_fd, EPOLLIN, &s->w_admin);
    if (err == 0)
        err = watch_add(s, s->timer_fd, EPOLLIN, &s->w_timer);
    if (err == 0)
        err = watch_add(s, s->signal_fd, EPOLLIN, &s->w_signal);
    return err;
}

int mm__server_init(mm_server_t *s, const mm_server_config_t *cfg)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->epfd = s->listen_fd = s->admin_fd = s->timer_fd = s->signal_fd = s->lock_fd = -1;
    s->capacity_bytes = cfg->capacity_bytes;
    s->next_id = 1;
    /* Each client costs the daemon six fds. */
    if (mm__raise_nofile() < 0)
        log_warn("cannot raise the open-files limit: %s", strerror(errno));
    mm__numa_init(&s->numa);
    int err = lock_state_dir(s);
    if (err == 0)
        err = mm__registry_init(s);
    if (err == 0) {
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        err = s->epfd < 0 ? -errno : 0;
    }
    /* Clients of an earlier daemon are known before anyone can connect. */
    if (err == 0)
        err = mm__restart_recover(s);
    if (err == 0)
        err = open_fds(s);
    if (err == 0)
        err = mm__reclaim_pool_start(s);
    return err;
}

static void accept_clients(mm_server_t *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        if (mm__client_accept(s, fd) < 0)
            close(fd);
    }
}

/* SIGHUP: the config file's policy settings, except those the command line
 * set (config.h). A bad file changes nothing. */
static void reload(mm_server_t *s)
{
    if (!s->cfg.config_path) {
        log_info("SIGHUP: no config file to reload");
        return;
    }
    mm_server_config_t next = s->cfg;
    next.log_level = -1;
    char err[512];
    if (mm__config_load(s->cfg.config_path, &next, MM_CFG_RELOADABLE, s->cfg.cli_keys, err,
                        sizeof err) < 0) {
        log_error("SIGHUP: %s; settings unchanged", err);
        return;
    }
    if (next.capacity_bytes != s->cfg.capacity_bytes)
        s->capacity_bytes = next.capacity_bytes; /* the file's new word wins over mmctl's */
    if (next.log_level >= 0)
        mm__log_set((enum mm_log_level)next.log_level);
    s->cfg = next;
    log_info("SIGHUP: reloaded %s: capacity %llu MiB, idle tax %.2f", s->cfg.config_path,
             (unsigned long long)(s->capacity_bytes >> 20), s->cfg.idle_tax);
    mm__reclaim(s);
}

static void on_signal(mm_server_t *s)
{
    struct signalfd_siginfo si;
    while (read(s->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            reload(s);
            continue;
        }
        log_info("signal %u: stopping", si.ssi_signo);
        s->stopping = true;
    }
}

static void on_event(mm_server_t *s, mm_watch_t *w, uint32_t events)
{
    uint64_t expirations;
    switch (w->kind) {
    case MM_WATCH_LISTEN:
        accept_clients(s);
        break;
    case MM_WATCH_ADMIN_LISTEN:
        mm__admin_accept(s);
        break;
    case MM_WATCH_ADMIN_CONN:
        mm__admin_on_event(s, w, events);
        break;
    case MM_WATCH_CLIENT_SOCK:
        mm__client_on_message(s, w->owner);
        break;
    case MM_WATCH_CLIENT_PID:
        mm__client_remove(s, w->owner, "process exited");
        break;
    case MM_WATCH_CLIENT_BELL:
        mm__client_on_bell(s, w->owner);
        break;
    case MM_WATCH_TIMER:
        if (read(s->timer_fd, &expirations, sizeof expirations) > 0)
            mm__reclaim_tick(s);
        break;
    case MM_WATCH_SIGNAL:
        on_signal(s);
        break;
    }
}

int mm__server_run(mm_server_t *s, int ready_fd)
{
    log_info("ready: socket %s, admin socket %s, capacity %llu MiB", s->cfg.socket_path,
             s->cfg.admin_socket_path, (unsigned long long)(s->capacity_bytes >> 20));
    if (ready_fd >= 0) {
        /* Tell the parent that started us in the background. */
        if (write(ready_fd, "", 1) < 0)
            log_warn("cannot signal readiness: %s", strerror(errno));
        close(ready_fd);
    }
    struct epoll_event events[64];
    while (!s->stopping) {
        int n = epoll_wait(s->epfd, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("epoll_wait: %s", strerror(errno));
            return -errno;
        }
        /* Handlers may remove clients whose later events are in this batch:
         * removal is deferred with call_rcu, and a removed client's watches
         * are taken out of epoll before its memory is freed. */
        rcu_read_lock();
        for (int i = 0; i < n; i++)
            on_event(s, events[i].data.ptr, events[i].events);
        rcu_read_unlock();
    }
    return 0;
}

void mm__server_fini(mm_server_t *s)
{
    mm__reclaim_pool_stop(s);
    mm__restart_fini(s);
    mm__registry_fini(s);
    int fds[] = {s->listen_fd, s->admin_fd, s->timer_fd, s->signal_fd, s->epfd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (s->listen_fd >= 0)
        unlink(s->cfg.socket_path);
    if (s->admin_fd >= 0)
        unlink(s->cfg.admin_socket_path);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
}
