/*
 * mm-gc: a Boehm GC (libgc) heap that lives in mm frames.
 *
 * libmm-gc.so defines mmap() and madvise(). Calls made by libgc.so itself
 * (found by the caller's return address) are served from the client's region:
 * libgc's heap mmap(MAP_PRIVATE|MAP_ANONYMOUS, PROT_READ|PROT_WRITE) becomes
 * mm_alloc(), and its "unmap", madvise(MADV_DONTNEED), becomes mm_release() —
 * an owner punch: the frames stay owned, because libgc reuses the range later
 * without another call. Every other call, from any other caller or before
 * mm_gc_open(), goes to the C library unchanged. For the definitions to win,
 * link libmm-gc before libgc (and before libc, which is always last).
 *
 * Instead of a client, the heap may come from a caller's frame source
 * (mm_gc_open_source(): a guest model's guest-virtual memory): the same hooks
 * then call the source's alloc and release, and the owner of the source
 * answers its own pressure with mm_gc_shrink() and reports usage itself from
 * mm_gc_stats(); the library opens no client, runs no answer thread and
 * reports nothing.
 *
 * When the host revokes memory, the library's handler (on libmm's answer
 * thread, registered with the GC while it runs) calls GC_gcollect_and_unmap()
 * until the host's request is covered or three calls in a row drop nothing
 * more, and acknowledges what residency (st_blocks) dropped by. What it can
 * give is the garbage in whole free heap blocks: libgc never moves objects,
 * so small garbage between live objects stays. After every collection the
 * library reports live, heap and garbage bytes and the measured cost of a
 * collection (ns per MiB of heap) with mm_report().
 *
 * When libgc's heap must grow, the mmap hook asks the host (mm_alloc installs
 * reclaimed chunks; the daemon answers at once) and only if the host says no
 * does libgc see out-of-memory (MAP_FAILED, ENOMEM), or with MM_GC_FALLBACK
 * ordinary memory. The hook never waits or retries while libgc holds its
 * allocation lock.
 *
 * Fork: the region is mapped MADV_DONTFORK, so a child of fork() has no GC
 * heap at all. The library detaches in the child (its mmap/madvise pass
 * through to the C library), but libgc's own state still points into the
 * missing heap: a forked child must not use the GC or touch GC objects; it may
 * only exec() or _exit(). Parent and child therefore never share one heap.
 * (mmrun's preload puts a private copy of the region at its address in the
 * child first, so that a child there may go on using the GC.)
 *
 * One GC client or frame source per process. Thread safety: mm_gc_stats() and
 * mm_gc_shrink() may be called from any thread registered with the GC
 * (GC_THREADS); mm_gc_open(), mm_gc_open_source() and mm_gc_close() are not
 * concurrent with anything.
 */
#ifndef MM_GC_H
#define MM_GC_H

#include <stdint.h>
#include <sys/types.h>

#include <mm/mm.h>

#if defined(MM_BUILDING_GC)
#define MM_GC_EXPORT __attribute__((visibility("default")))
#else
#define MM_GC_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum mm_gc_flags {
    /* In opts->flags: start no answer thread. Revocations are then answered
     * only when the caller runs mm_client_dispatch() on mm_client_fd(), from
     * a thread registered with the GC — or never (an uncooperative runtime,
     * for tests and benchmarks). Without it, MM_CLIENT_THREAD is implied. */
    MM_GC_NO_THREAD = 1u << 30,
    /* In opts->flags: when the client's frames cannot serve a heap section
     * (the region is full or the host grants nothing), take it from the C
     * library's mmap instead of failing libgc's allocation. For programs
     * that never expected mm (mmrun): such sections are ordinary memory the
     * host can neither see in the region nor take back. */
    MM_GC_FALLBACK = 1u << 29,
};

typedef struct mm_gc_stats {
    uint64_t live_bytes;      /* heap blocks holding objects: heap - garbage */
    uint64_t heap_bytes;      /* libgc's heap minus what it unmapped */
    uint64_t garbage_bytes;   /* bytes in whole free, mapped heap blocks:
                                 what unmapping can return */
    uint64_t unmapped_bytes;  /* released with madvise, still owned */
    uint64_t served_bytes;    /* frames the mmap hook took from the source */
    uint64_t released_bytes;  /* bytes punched by the madvise hook, in total */
    uint64_t last_collect_ns; /* duration of the last collection */
    uint64_t collections;     /* collections seen since mm_gc_open() */
    uint64_t revocations;     /* requests answered by the handler */
    uint64_t revoked_bytes;   /* residency the handler gave, in total */
} mm_gc_stats_t;

/*
 * Open a client of the daemon at socket_path (NULL: libmm's default) and
 * serve libgc's heap from its region. Call it before GC_INIT(): heap memory
 * libgc took earlier stays ordinary anonymous memory. opts may be NULL
 * (libmm's defaults); opts->on_revoke must be NULL (the library owns it).
 * MM_CLIENT_THREAD is added unless opts->flags has MM_GC_NO_THREAD.
 * On success *out (if out is not NULL) is the client, owned by the library
 * until mm_gc_close(): use it for mm_client_stats() or mm_client_id(), and
 * allocate nothing else from it. Returns 0, or a negative errno: -EBUSY (a
 * GC client or source is already attached), -EINVAL (opts->on_revoke set),
 * -ELIBACC (libgc.so not found in this process), or mm_client_open()'s
 * errors; on failure nothing is left open.
 */
MM_GC_EXPORT int mm_gc_open(const char *socket_path, const mm_client_opts_t *opts,
                            mm_client_t **out);

/*
 * Serve libgc's heap from a caller's frame source instead of a client. Call
 * it before GC_INIT(), like mm_gc_open(). *source is copied; what source->arg
 * points to stays the caller's and must outlive the attachment (until
 * mm_gc_close(), or process exit). The mmap hook calls source->alloc for
 * each heap section (2 MiB-aligned when 2 MiB or larger, else 4 KiB), with
 * libgc's allocation lock held: a refusal becomes libgc's out-of-memory, and
 * the source must never wait for the GC. The madvise hook calls
 * source->release, also with that lock held, for the whole 4 KiB pages of
 * each range libgc unmaps (libgc unmaps only heap the source served; a range
 * outside the bounds of what it served goes to the C library). The ranges
 * stay libgc's: it reuses them without another call. source->free is never
 * called (libgc never gives its heap back) and may be NULL. mm_gc_shrink() measures with
 * source->resident_bytes. No client, no answer thread, no mm_report(): the
 * owner answers its pressure by calling mm_gc_shrink() and reports usage from
 * mm_gc_stats(). mm_gc_client() is NULL in this mode. Returns 0, or a
 * negative errno: -EBUSY (a GC client or source is already attached),
 * -EINVAL (source, or its alloc, release or resident_bytes is NULL),
 * -ELIBACC (libgc.so not found in this process), -ENOMEM; on failure nothing
 * is attached and no callback has been called. A forked child detaches, as
 * with a client (see above). Not concurrent with any mm_gc_* call.
 */
MM_GC_EXPORT int mm_gc_open_source(const mm_frame_source_t *source);

/* Detach the hooks and close the client (a caller's source is only
 * forgotten: its memory stays the caller's). The GC heap goes with the
 * client's region or the source's memory: call it only when no GC object will
 * be touched and no collection will run again (usually never; process exit
 * is enough). */
MM_GC_EXPORT void mm_gc_close(void);

/*
 * The bodies of the library's mmap() and madvise(), for a library that
 * interposes on them itself and loads this one later with dlopen(RTLD_LOCAL)
 * (mmrun's preload: its own definitions are the ones ahead of the C
 * library). caller is the return address of the original call. Returns 1
 * when the call was libgc's and the library took it, with what mmap or
 * madvise returns in *result (errno set on failure); 0 when it is not the
 * library's (any other caller, any other kind of call, nothing attached, a
 * forked child, or a refusal under MM_GC_FALLBACK): the caller then passes
 * the call on to the next definition itself. Any thread.
 */
MM_GC_EXPORT int mm_gc_mmap_hook(const void *caller, void *addr, size_t len, int prot, int flags,
                                 int fd, off_t off, void **result);
MM_GC_EXPORT int mm_gc_madvise_hook(const void *caller, void *addr, size_t len, int advice,
                                    int *result);

/* The open GC client, or NULL (also with a caller's source, and in a forked
 * child). */
MM_GC_EXPORT mm_client_t *mm_gc_client(void);

/* libgc's statistics and the library's counters. Takes the GC lock: never
 * call it from a GC callback. 0, or -ENOTCONN when neither a client nor a
 * source is attached. */
MM_GC_EXPORT int mm_gc_stats(mm_gc_stats_t *out);

/* Collect and unmap until three calls in a row drop nothing more, then
 * report to the host (with a client only). Returns the bytes residency
 * dropped by (negative if it grew meanwhile): the client's st_blocks, or the
 * source's resident_bytes (0 when it fails to measure); or -ENOTCONN. The
 * calling thread must be registered with the GC. */
MM_GC_EXPORT int64_t mm_gc_shrink(void);

#ifdef __cplusplus
}
#endif

#endif /* MM_GC_H */
