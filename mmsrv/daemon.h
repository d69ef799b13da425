/*
 * mmsrv's shared types: the server (event loop, sockets, capacity) and the
 * host-side record of each client. The host's bookkeeping — which chunks it
 * took back, what it granted, targets, revocation sequence numbers — lives
 * here and never in shared memory, which the client may scribble over.
 *
 * Threads: the event-loop thread owns every field below. Reclaim workers
 * touch one client each while the loop thread waits for them (reclaim.c).
 * The registry is a liburcu lock-free hash table, read under rcu_read_lock.
 */
#ifndef MM_DAEMON_H
#define MM_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <urcu.h>
#include <urcu/rculfhash.h>

#include <mm/protocol.h>

#include "frames.h"
#include "ladder.h"
#include "pools.h"

/* What an epoll event belongs to. */
enum mm_watch_kind {
    MM_WATCH_LISTEN,
    MM_WATCH_ADMIN_LISTEN,
    MM_WATCH_ADMIN_CONN,
    MM_WATCH_CLIENT_SOCK,
    MM_WATCH_CLIENT_PID,
    MM_WATCH_CLIENT_BELL,
    MM_WATCH_TIMER,
    MM_WATCH_SIGNAL,
};

typedef struct mm_watch {
    enum mm_watch_kind kind;
    void *owner;
} mm_watch_t;

/* GONE: removed from the registry, memory freed after an RCU grace period;
 * events already fetched for it are ignored. RECOVERING: known from the
 * state directory after a restart, waiting for its process to reconnect
 * (restart.c); not in the registry, no fds but its pidfd. */
enum mm_client_state {
    MM_CLIENT_CONNECTING,
    MM_CLIENT_REGISTERED,
    MM_CLIENT_GONE,
    MM_CLIENT_RECOVERING
};

typedef struct mm_host_client {
    struct cds_lfht_node node; /* in server.registry, keyed by id */
    struct rcu_head rcu;
    uint32_t id;
    enum mm_client_state state;
    char name[MM_NAME_MAX];
    uint32_t kind;
    pid_t pid;
    uid_t uid;
    gid_t gid;
    int sock;  /* -1 once the socket closed (the client may still live) */
    int pidfd; /* death is decided here, not by the socket */
    int region_fd;
    int shared_fd;
    int bell_to_client;
    int bell_to_host;
    int client_bells[2]; /* the client's ends, until the hello reply sent them */
    mm_watch_t w_sock, w_pid, w_bell;

    uint64_t region_bytes;
    uint32_t chunk_count;
    int pool;         /* NUMA pool the region is bound to (pools.h) */
    int numa_node;    /* that pool's kernel node number */
    bool node_strict; /* bound because the client asked for that node */
    void *shared;     /* host's mapping of the shared state */
    uint64_t shared_bytes;
    mm_control_t *ctl;
    mm_frames_t frames;

    /* Host bookkeeping. granted_chunks == chunk_count - popcount(reclaimed). */
    uint64_t *reclaimed; /* one bit per chunk: 1 = taken back by the host */
    uint32_t granted_chunks;
    uint64_t min_bytes, max_bytes; /* reservation and limit in force */
    uint32_t weight;
    bool pinned; /* the admin fixed the target at pinned_bytes */
    uint64_t pinned_bytes;
    uint64_t idle_bytes; /* free frames plus reported garbage, refreshed per tick */
    uint64_t target_bytes;
    uint64_t unmet_bytes;    /* asked for in the last install, not granted */
    uint64_t resident_bytes; /* st_blocks, refreshed every tick */

    /* Revocation in flight (one at a time). */
    uint64_t revoke_seq;
    uint64_t revoke_bytes;
    uint64_t revoke_posted_ns;
    uint64_t revoke_deadline_ns;
    uint64_t revoke_resident_at_post; /* st_blocks when it was asked */
    uint64_t last_answer_ns;          /* how long the last answered request took */
    uint64_t progress_ns;             /* last seen giving memory back (or asked) */
    bool revoke_pending;
    bool revoke_missed; /* the last request lapsed unanswered */
    bool revoke_empty;  /* it last answered "nothing", and holds the same since */

    /* Host paging (reclaim step 4, paging.c): the client's userfaultfd and
     * where its region is mapped; the pager and swap store exist from the
     * first page-out on. paging_chunks: one bit per chunk registered with
     * the userfaultfd. */
    int uffd; /* -1: none offered, or refused */
    uint64_t region_addr;
    struct mm_pager *pager;
    struct mm_swap *swap;
    uint64_t *paging_chunks;
    uint32_t paging_cursor;
    uint64_t paged_out_total; /* bytes paged out by the host, ever */
    bool frozen;              /* stopped by the host (no userfaultfd): step 5 */
    bool freeze_confirmed;    /* every thread was seen stopped */
    uint64_t freezes, early_thaws;

    /* Baseline memory drivers (baselines.c). driver_target_bytes: what the
     * admin asked the guest to keep (balloon) or to have plugged
     * (virtio-mem), the region size until then; it is the client's target.
     * ballooned: one bit per frame the balloon holds; unplugged: one bit per
     * chunk (virtio-mem block) unplugged. */
    uint32_t driver; /* enum mm_driver */
    uint64_t driver_target_bytes;
    uint64_t *ballooned;
    uint64_t *unplugged;
    uint64_t balloon_frames, unplugged_chunks;
    uint64_t baseline_messages;        /* requests handled, ever */
    uint64_t baseline_discarded_bytes; /* punched for the driver, ever */
    uint64_t baseline_discard_ns;      /* time in those punches */
    uint64_t baseline_discards;        /* punch calls */
    /* Restart (state.c, restart.c): what the record in the state directory
     * identifies the client by, and whether it must be written again. */
    uint64_t start_time; /* the process's start time, /proc/PID/stat field 22 */
    uint64_t region_dev, region_ino, shared_dev, shared_ino;
    bool state_dirty;           /* host bookkeeping changed since the last save */
    bool swap_kept;             /* a swap store of an earlier daemon is to be reopened */
    uint64_t grace_deadline_ns; /* RECOVERING: reconnect before this */
    struct mm_host_client *next_recovering;

    /* Counters shown by mmctl. */
    uint64_t reclaimed_bytes_total; /* taken back by the host, ever */
    uint64_t discarded_bytes_total; /* of which discardable chunks */
    uint64_t touched_reclaimed;     /* reclaimed chunks found touched */
    uint64_t missed_deadlines;
    uint64_t revoked_bytes_total; /* given back in answer to revocations */
} mm_host_client_t;

typedef struct mm_server_config {
    const char *state_dir;
    const char *swap_dir; /* host paging's swap files (NULL: state_dir) */
    const char *socket_path;
    const char *admin_socket_path;
    uint64_t capacity_bytes;
    bool has_admin_group;
    gid_t admin_gid;
    double idle_tax;               /* policy.h; default MM_POLICY_IDLE_TAX */
    uint64_t max_client_min_bytes; /* cap on a client's own reservation request */
    uint32_t max_client_weight;    /* cap on a client's own weight request */
    int log_level;                 /* enum mm_log_level, or -1: unchanged */
    const char *config_path;       /* reloaded on SIGHUP, or NULL */
    uint32_t grace_s;              /* a client of an earlier daemon has this long to reconnect */
    unsigned cli_keys;             /* reloadable keys the command line set (config.h) */
} mm_server_config_t;

typedef struct mm_server {
    mm_server_config_t cfg;
    int epfd;
    int listen_fd;
    int admin_fd;
    int timer_fd;
    int signal_fd;
    int lock_fd;
    mm_watch_t w_listen, w_admin, w_timer, w_signal;
    struct cds_lfht *registry;
    uint32_t next_id;
    uint32_t nclients; /* registered */
    uint64_t capacity_bytes;
    mm_numa_t numa;
    double psi_some_avg10; /* host memory pressure, read once a second */
    uint64_t ticks;
    bool stopping;
    struct mm_reclaim_pool *pool;
    mm_ladder_t ladder;           /* what each reclaim step did (status, metrics) */
    mm_host_client_t *recovering; /* list of RECOVERING clients (loop thread) */
    uint32_t nrecovering;
} mm_server_t;

/* paging.c: host paging, reclaim step 4. */
int mm__paging_offer(mm_server_t *s, mm_host_client_t *c, int uffd, uint64_t region_addr);
uint64_t mm__paging_force(mm_server_t *s, mm_host_client_t *c, uint64_t bytes);
void mm__paging_forget_chunks(mm_host_client_t *c, uint32_t first, uint32_t n);
void mm__paging_release(mm_server_t *s, mm_host_client_t *c);
/* Orderly stop: put every paged page back and thaw, so that the client runs
 * on without the daemon. */
void mm__paging_shutdown(mm_server_t *s, mm_host_client_t *c);
/* Each tick: thaw frozen clients the policy has room for again, and notice
 * one continued behind the daemon's back. */
void mm__paging_tick(mm_server_t *s, mm_host_client_t *c);
uint64_t mm__paging_paged_bytes(const mm_host_client_t *c);

/* Chunk bits of the host's reclaimed set. */
static inline bool host_reclaimed(const mm_host_client_t *c, uint32_t chunk)
{
    return (c->reclaimed[chunk / 64] >> (chunk % 64)) & 1;
}
static inline void host_set_reclaimed(mm_host_client_t *c, uint32_t chunk, bool on)
{
    if (on)
        c->reclaimed[chunk / 64] |= 1ull << (chunk % 64);
    else
        c->reclaimed[chunk / 64] &= ~(1ull << (chunk % 64));
}

/* server.c */
int mm__server_init(mm_server_t *s, const mm_server_config_t *cfg);
int mm__server_run(mm_server_t *s, int ready_fd);
void mm__server_fini(mm_server_t *s);

/* registry.c: the client table and each client's life. */
int mm__registry_init(mm_server_t *s);
void mm__registry_fini(mm_server_t *s);
int mm__client_accept(mm_server_t *s, int sock);
void mm__client_on_message(mm_server_t *s, mm_host_client_t *c);
void mm__client_remove(mm_server_t *s, mm_host_client_t *c, const char *why);
void mm__client_on_bell(mm_server_t *s, mm_host_client_t *c);
/* A client whose region, shared state and client doorbell ends are in
 * place goes live: its doorbell watched, registered, its record saved. */
int mm__client_publish(mm_server_t *s, mm_host_client_t *c);
/* Epoll watches of a client's fds (loop thread); unwatch also closes *fd
 * and sets it to -1. */
int mm__watch(mm_server_t *s, int fd, mm_watch_t *w, enum mm_watch_kind kind, mm_host_client_t *c);
void mm__unwatch(mm_server_t *s, int *fd);
/* An MM_MSG_ERROR to c, best effort. */
void mm__send_error(mm_host_client_t *c, uint32_t seq, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void mm__close_client_bells(mm_host_client_t *c);
/* Lookup by id (all digits) or name; inside rcu_read_lock, from any thread
 * registered with RCU. The client stays valid until rcu_read_unlock. */
mm_host_client_t *mm__client_find(mm_server_t *s, const char *id_or_name);
/* Publish c in the registry / take it out and free it after a grace period
 * (loop thread only). */
void mm__registry_add(mm_server_t *s, mm_host_client_t *c);
void mm__registry_del(mm_server_t *s, mm_host_client_t *c);

/* Iterate registered clients (loop thread, or inside rcu_read_lock). */
#define for_each_client(s, iter, c) cds_lfht_for_each_entry((s)->registry, &(iter), (c), node)

/* reclaim.c: taking memory back, and installing it. */
int mm__reclaim_pool_start(mm_server_t *s);
void mm__reclaim_pool_stop(mm_server_t *s);
/* Recompute targets from demand (granted + unmet) and publish them. */
void mm__policy_update(mm_server_t *s);
/* Steps 1 and 2 on one client, at once, on the calling thread: its free and
 * discardable chunks, up to bytes. Returns the bytes taken. */
uint64_t mm__reclaim_own(mm_server_t *s, mm_host_client_t *c, uint64_t bytes);
/* Walk the reclaim ladder: clients above target give their free chunks,
 * then anyone's free chunks while capacity is exceeded, then revocations to
 * whoever is still above target. Returns bytes taken back. */
uint64_t mm__reclaim(mm_server_t *s);
/* Take bytes from c: its free chunks first, then a revocation (reason
 * ADMIN) for the rest. *taken gets what was taken at once, *asked what the
 * revocation asks for. */
void mm__reclaim_from(mm_server_t *s, mm_host_client_t *c, uint64_t bytes, uint64_t *taken,
                      uint64_t *asked);
/* Grant up to n of the requested chunks to c. Returns chunks granted (into
 * out), or a negative errno if none could be. */
int mm__install(mm_server_t *s, mm_host_client_t *c, uint32_t slot, const uint32_t *chunks,
                uint32_t n, uint32_t *out);
void mm__reclaim_tick(mm_server_t *s);
uint64_t mm__total_granted(mm_server_t *s);
uint64_t mm__total_resident(mm_server_t *s);
/* Granted and resident bytes of the clients bound to one NUMA pool. */
uint64_t mm__pool_granted(mm_server_t *s, int pool);
uint64_t mm__pool_resident(mm_server_t *s, int pool);
void mm__refresh_resident(mm_host_client_t *c);
/* Recompute c->idle_bytes from its chunk words and its report. */
void mm__refresh_idle(mm_host_client_t *c);
/* What the client holds in its granted chunks, from its (untrusted,
 * validated) chunk words. */
typedef struct mm_client_usage {
    uint64_t owned_bytes;       /* frames allocated */
    uint64_t free_bytes;        /* frames free */
    uint64_t discardable_bytes; /* chunks marked discardable */
} mm_client_usage_t;
void mm__client_usage(const mm_host_client_t *c, mm_client_usage_t *u);

/* baselines.c: the host side of the guest model's baseline drivers. */
static inline bool mm__is_baseline(const mm_host_client_t *c)
{
    return c->driver != MM_DRIVER_MM;
}
const char *mm__driver_name(uint32_t driver);
/* After the hello: the driver's bookkeeping. -ENOMEM. */
int mm__baseline_init(mm_host_client_t *c, uint32_t driver);
void mm__baseline_fini(mm_host_client_t *c);
/* Handle a checked balloon, free-page-report or virtio-mem request and
 * reply. Returns < 0 only when the reply could not be sent. */
int mm__baseline_message(mm_server_t *s, mm_host_client_t *c, const void *buf, int type);
/* The admin's "balloon CLIENT SIZE" and "virtio-mem CLIENT SIZE": set the
 * driver's target. 0, or a negative errno with why (a line) filled. */
int mm__baseline_set_target(mm_server_t *s, mm_host_client_t *c, uint32_t driver, uint64_t bytes,
                            char *why, size_t why_len);
/* state.c: the host's bookkeeping of each client in STATE_DIR/clients, one
 * record per client, replaced atomically (write, rename): what a restarted
 * daemon trusts, never shared memory. */
int mm__state_open(mm_server_t *s);
/* Write c's record now. 0, or a negative errno (logged). */
int mm__state_save(mm_server_t *s, mm_host_client_t *c);
/* Remove c's record (the client is gone for good). */
void mm__state_forget(mm_server_t *s, uint32_t id);
/* Read every record into a new client in RECOVERING state; each is passed
 * to add (a damaged or foreign record is refused with a log line and
 * left in place, renamed to ID.bad). Returns the number read. */
int mm__state_load(mm_server_t *s, void (*add)(mm_server_t *s, mm_host_client_t *c));
/* Start time of pid from /proc/PID/stat (field 22), 0 if unreadable. */
uint64_t mm__process_start_time(pid_t pid);

/* restart.c: picking up where an earlier daemon left off. */
/* At start-up: every client of the state directory waits for its process
 * to reconnect; dead ones are cleaned up at once. */
int mm__restart_recover(mm_server_t *s);
/* A MM_MSG_RECONNECT on connection c (state CONNECTING), with its fds
 * (ownership passes here). < 0: c is to be dropped (an error was sent). */
int mm__restart_reconnect(mm_server_t *s, mm_host_client_t *c, const mm_msg_reconnect_t *m,
                          int *fds, int nfds);
/* Each tick: RECOVERING clients past their grace period are dropped. */
void mm__restart_tick(mm_server_t *s);
/* A RECOVERING client's process exited. */
void mm__restart_client_died(mm_server_t *s, mm_host_client_t *c);
/* Stop: clients still to reconnect are let go; their records stay for the
 * next daemon. */
void mm__restart_fini(mm_server_t *s);

/* paging.c, for a restart: is fd a userfaultfd; take back a client's
 * paging after a restart (its swap store reopened, faults answered again,
 * writers an earlier daemon left waiting woken). */
bool mm__paging_is_uffd(int fd);
int mm__paging_resume(mm_server_t *s, mm_host_client_t *c, int uffd);
/* The path of c's swap store. */
void mm__paging_swap_path(mm_server_t *s, const mm_host_client_t *c, char *out, size_t cap);
/* reclaim.c: re-punch reclaimed chunks the client touched (SEEK_DATA). */
void mm__reclaim_check_touched(mm_host_client_t *c);

/* admin.c */
int mm__admin_accept(mm_server_t *s);
void mm__admin_on_event(mm_server_t *s, mm_watch_t *w, uint32_t events);

#endif /* MM_DAEMON_H */
