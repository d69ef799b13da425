/*
 * libmm: the client side of mm's shared paging interface.
 *
 * A client registers with mmsrv, maps the region the daemon created for it,
 * and allocates frames through allocator state it shares with the daemon, so
 * that allocation and free need no message. The daemon takes wholly free
 * chunks back by itself; when it needs more, it asks the client through a
 * revocation callback. Ownership and residency are kept apart: mm_release()
 * drops a range's pages but keeps it owned (the caller may touch it again and
 * gets zeroed pages), mm_free() gives the frames back to the allocator.
 *
 * Errors are negative errno values; mm_strerror() names them. Unless a call
 * says otherwise it is thread-safe for one client from any thread.
 */
#ifndef MM_MM_H
#define MM_MM_H

#include <stddef.h>
#include <stdint.h>

#include <mm/protocol.h>

#if defined(MM_BUILDING_LIBMM)
#define MM_EXPORT __attribute__((visibility("default")))
#else
#define MM_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mm_client mm_client_t;

/* A revocation: the host asks for bytes back before deadline_ns. */
typedef struct mm_revoke_request {
    uint64_t seq;
    uint64_t bytes;
    uint64_t deadline_ns; /* CLOCK_MONOTONIC */
    uint32_t reason;      /* enum mm_revoke_reason */
} mm_revoke_request_t;

/*
 * Revocation handler. Runs on the library's background thread, or inside
 * mm_client_dispatch() in event-loop mode. It may call mm_free() and
 * mm_release() on this client (but not mm_client_close()) and returns the
 * bytes it gave back, which libmm acknowledges to the host. Return 0 to say
 * there is nothing more to give.
 */
typedef uint64_t (*mm_revoke_fn)(mm_client_t *client, const mm_revoke_request_t *req, void *arg);

enum mm_client_flags {
    /* Run a background thread that answers the host. Without it the caller
     * polls mm_client_fd() and calls mm_client_dispatch(). */
    MM_CLIENT_THREAD = 1u << 0,
    /* Do not populate installed chunks: the caller makes resident only the
     * frames it uses (a guest model that maps frames elsewhere and populates
     * those mappings), so free frames of an installed chunk stay holes. */
    MM_CLIENT_NO_POPULATE = 1u << 1,
    /* Do not give the host a userfaultfd for paging: a client that misses
     * a revocation deadline is then frozen rather than paged (a guest model
     * whose own userfaultfd serves its swap). */
    MM_CLIENT_NO_HOST_PAGING = 1u << 2,
};

typedef struct mm_client_opts {
    const char *name;       /* shown by mmctl; NULL: "pid-<pid>" */
    uint64_t max_bytes;     /* region size; rounded up to a chunk */
    uint64_t min_bytes;     /* reservation asked for */
    uint32_t weight;        /* share asked for (default 100) */
    uint32_t kind;          /* enum mm_client_kind */
    int numa_node;          /* -1: any */
    unsigned flags;         /* enum mm_client_flags */
    mm_revoke_fn on_revoke; /* NULL: answer every request with 0 */
    void *revoke_arg;
    uint32_t driver; /* enum mm_driver: a guest's memory driver (0: mm) */
} mm_client_opts_t;

/* Usage a runtime reports to the host (all optional, 0 when unknown). */
typedef struct mm_usage {
    uint64_t live_bytes;
    uint64_t heap_bytes;
    uint64_t garbage_bytes;
    uint64_t cost_ns_per_mib;
} mm_usage_t;

/* What the client's allocator holds, read from the shared metadata. */
typedef struct mm_client_stats {
    uint64_t region_bytes;
    uint64_t granted_bytes;     /* chunks not taken back by the host */
    uint64_t owned_bytes;       /* frames allocated */
    uint64_t free_bytes;        /* free frames in granted chunks */
    uint64_t discardable_bytes; /* chunks marked discardable, still held */
    uint64_t resident_bytes;    /* pages really present (kernel truth) */
    uint64_t target_bytes;      /* what the host wants this client to hold */
    uint32_t pressure;          /* enum mm_pressure */
} mm_client_stats_t;

/* Fill opts with defaults. Never fails. */
MM_EXPORT void mm_client_opts_init(mm_client_opts_t *opts);

/*
 * Connect to the daemon at socket_path (NULL: $MM_SOCKET, else the default
 * path) and register. On success *out owns the connection, the region mapping
 * and the fds until mm_client_close(). On failure nothing is left open and
 * *out is untouched. -ECONNREFUSED/-ENOENT: no daemon; -EPROTONOSUPPORT: the
 * daemon speaks another protocol version; -EINVAL: bad options.
 */
MM_EXPORT int mm_client_open(const char *socket_path, const mm_client_opts_t *opts,
                             mm_client_t **out);

/* Say goodbye, unmap and free everything. Not concurrent with other calls. */
MM_EXPORT void mm_client_close(mm_client_t *client);

/* The region mapping: base and size. */
MM_EXPORT void *mm_client_base(const mm_client_t *client);
MM_EXPORT uint64_t mm_client_region_bytes(const mm_client_t *client);
/* The region's memfd, owned by the client (never close it): for pread,
 * pwrite and mappings of frames at other addresses (a guest model's
 * guest-virtual memory). Map it MADV_DONTFORK, as libmm does. */
MM_EXPORT int mm_client_region_fd(const mm_client_t *client);
MM_EXPORT uint32_t mm_client_id(const mm_client_t *client);

/*
 * Allocate bytes (a multiple of 4 KiB) of contiguous frames aligned to align
 * (a power of two, at least 4 KiB; 0 means 4 KiB). Runs up to a chunk come
 * from one chunk; larger runs take whole adjacent chunks. When no granted
 * chunk has room, asks the host to install reclaimed chunks and populates
 * them. -ENOMEM: the host granted nothing (over target or capacity);
 * -EINVAL: bad size or alignment.
 */
MM_EXPORT int mm_alloc(mm_client_t *client, size_t bytes, size_t align, void **out);

/* Give frames back to the allocator. The range must be one earlier
 * allocation or part of one; -EINVAL if any frame in it is not allocated,
 * -ESTALE if the host discarded its (discardable) chunk. */
MM_EXPORT int mm_free(mm_client_t *client, void *addr, size_t bytes);

/* Drop the pages of an owned range (they stay owned; a later touch gets zero
 * pages). addr and bytes are 4 KiB multiples inside the region. */
MM_EXPORT int mm_release(mm_client_t *client, void *addr, size_t bytes);

/*
 * Discardable memory: clean content (a cache) the host may take without
 * asking, before it asks anyone for used memory. Marks or unmarks whole
 * chunks: addr and bytes are chunk-aligned and every frame of those chunks is
 * allocated by the caller. -ESTALE if the host already took one of them (its
 * content is gone; chunks before it in the range were changed).
 */
MM_EXPORT int mm_discardable(mm_client_t *client, void *addr, size_t bytes, int on);

/*
 * Pin the discardable chunk holding addr while reading it. 0: its content is
 * there and stays until mm_discardable_unpin(); -ESTALE: the host took it —
 * the content is gone and the frames are no longer the caller's (forget
 * them; do not free them); -EBUSY: too many readers at once (63 per chunk).
 */
MM_EXPORT int mm_discardable_pin(mm_client_t *client, const void *addr);
MM_EXPORT void mm_discardable_unpin(mm_client_t *client, const void *addr);

/*
 * Daemon restarts. If mmsrv dies, the client keeps running on the memory it
 * has; libmm's keeper thread (one per process) reconnects it when a daemon
 * starts again on the same socket, within that daemon's grace period.
 * mm_client_connected(): 1 connected; 0 waiting for a daemon; a negative
 * errno when a daemon refused to take it back (it then runs unmanaged).
 * mm_client_reconnects(): how many times it reconnected. Any thread.
 */
MM_EXPORT int mm_client_connected(mm_client_t *client);
MM_EXPORT uint64_t mm_client_reconnects(mm_client_t *client);

/* Publish runtime usage to the host. */
MM_EXPORT int mm_report(mm_client_t *client, const mm_usage_t *usage);

/* Allocator state, target and pressure as the client sees them now. */
MM_EXPORT int mm_client_stats(mm_client_t *client, mm_client_stats_t *stats);

/* Event-loop mode: an fd that becomes readable when the host rings, and the
 * call that handles what it rang for (runs the revocation handler). */
MM_EXPORT int mm_client_fd(const mm_client_t *client);
MM_EXPORT int mm_client_dispatch(mm_client_t *client);

/*
 * A source of frames other than a client's own region, for the runtime
 * adapters (libmm-gc, libmm-jemalloc): a guest model serves an in-guest
 * runtime's heap from its guest-virtual memory this way. Each call has the
 * contract of the libmm call it is named after (mm_alloc, mm_free,
 * mm_release); resident_bytes returns the bytes the source's memory holds
 * resident now (an adapter measures what a shrink gave with it). The calls
 * may be made from any thread, also with the runtime's own locks held, so a
 * source must never wait for the runtime. arg is passed to each call.
 */
typedef struct mm_frame_source {
    int (*alloc)(void *arg, size_t bytes, size_t align, void **out);
    int (*free)(void *arg, void *addr, size_t bytes);
    int (*release)(void *arg, void *addr, size_t bytes);
    int64_t (*resident_bytes)(void *arg);
    void *arg;
} mm_frame_source_t;

/* The client's own frames as a source: mm_alloc, mm_free, mm_release, and
 * the region's resident bytes. Valid while the client is open. */
MM_EXPORT mm_frame_source_t mm_client_frame_source(mm_client_t *client);

/* Parse a size like "4096", "512K", "200M", "4G" into *out. -EINVAL on junk
 * or overflow. */
MM_EXPORT int mm_parse_size(const char *text, uint64_t *out);

/* A short description of a negative errno value. */
MM_EXPORT const char *mm_strerror(int err);

/* Default socket paths: $MM_SOCKET / $MM_ADMIN_SOCKET, else under the
 * default state directory (/run/mm as root, else $XDG_RUNTIME_DIR/mm or
 * /tmp/mm-<uid>). The returned strings are static. */
MM_EXPORT const char *mm_default_state_dir(void);
MM_EXPORT const char *mm_default_socket(void);
MM_EXPORT const char *mm_default_admin_socket(void);

#ifdef __cplusplus
}
#endif

#endif /* MM_MM_H */
