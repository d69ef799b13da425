/*
 * libmm-jemalloc: a jemalloc (5.3) arena whose extents are runs of mm frames.
 *
 * The arena is created with custom extent hooks: alloc takes a run of frames
 * from the client's region (2 MiB-aligned when the run is at least 2 MiB),
 * dalloc and destroy punch the run and give it back to the frame allocator,
 * decommit and purge are owner punches (the frames stay owned). A revocation
 * from the host runs arena.<i>.purge and acknowledges what the client's
 * residency (st_blocks) dropped by. The library links jemalloc, whose symbols
 * are unprefixed: malloc is jemalloc's in the whole process.
 *
 * An arena may instead take its frames from a caller's frame source
 * (mm_jemalloc_arena_source(): a guest model's guest-virtual memory). The
 * same hooks then call the source's alloc, release and free where they would
 * call mm_alloc, mm_release and mm_free; there is no client and no
 * revocation: the source's owner answers its pressure with
 * mm_jemalloc_purge() and reports usage itself from mm_jemalloc_stats().
 *
 * Facts found with jemalloc 5.3.0 (Debian), which this library relies on:
 *  - opt.retain is on (a global, read-only option). With custom hooks,
 *    jemalloc still calls dalloc for every extent it purges, so purged
 *    extents really come back as free frames. It grows the arena through the
 *    alloc hook and keeps the unused tail of each growth as "retained"
 *    extents, which it reuses but never gives back before the arena is
 *    destroyed (they stay owned and resident; a purge cannot reach them).
 *    The library sets arena.<i>.retain_grow_limit to 2 MiB, so a growth is
 *    the request rounded up to jemalloc's next page size class (at least
 *    2 MiB): the tail is under 2 MiB for small requests and up to a quarter
 *    of a large one (measured: 4.3 MiB retained after eight 3 MiB values,
 *    8.3 MiB after a 20 MiB one, back to 1.8 MiB once reused).
 *  - The arena's own metadata (arena_t, extent descriptors) is allocated
 *    through the alloc hook (2 MiB-aligned, zeroed, committed blocks). The
 *    library serves those from private anonymous memory, never from frames,
 *    so that a forked child (which has no region mapping) can still run
 *    jemalloc's fork handlers.
 *
 * Fork: the region is mapped MADV_DONTFORK, so a child after fork() has no mm
 * heap. In the child the hooks refuse everything (alloc returns NULL, dalloc,
 * decommit and purge decline), the forking thread's tcache is flushed and its
 * arena is set back to arena 0, so the child's malloc works from ordinary
 * memory. The child must not touch, free or realloc anything allocated from an
 * mm arena before the fork, and must not mallocx() with MALLOCX_ARENA of an mm
 * arena; the mm_jemalloc_* calls answer -ECHILD there. Parent and child never
 * write one heap. An adopted arena (mm_jemalloc_adopt()) differs: its hooks
 * hand everything in the child to the arena's earlier hooks, so a caller that
 * puts a private copy of the region at its address in the child (mmrun's
 * preload does) lets the child go on using its heap.
 *
 * Thread safety: every call may be made from any thread. mm_jemalloc_close()
 * must not run concurrently with other calls for the same client, nor
 * mm_jemalloc_arena_destroy() with other calls for the same arena.
 */
#ifndef MM_JEMALLOC_H
#define MM_JEMALLOC_H

#include <stdint.h>

#include <mm/mm.h>

#define MM_JE_EXPORT __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

/* At most this many clients and source arenas (and so mm arenas) per
 * process, together. */
#define MM_JEMALLOC_MAX_CLIENTS 8

/*
 * Open a client on socket_path (NULL: the default socket) whose revocation
 * handler purges its mm arena. opts may be NULL (defaults); opts->on_revoke
 * must be NULL (-EINVAL otherwise: the library owns it); MM_CLIENT_THREAD is
 * always added, so revocations are answered by libmm's background thread.
 * Errors as mm_client_open(), plus -EMFILE when MM_JEMALLOC_MAX_CLIENTS
 * clients and source arenas exist. On success *out is owned by the caller
 * until mm_jemalloc_close().
 */
MM_JE_EXPORT int mm_jemalloc_open(const char *socket_path, const mm_client_opts_t *opts,
                                  mm_client_t **out);

/*
 * The mm arena of client: created on the first call (arenas.create with the
 * extent hooks), returned again on later calls. Allocate from it with
 * mallocx(size, MALLOCX_ARENA(index) | MALLOCX_TCACHE_NONE), or make it a
 * thread's default with mm_jemalloc_set_default(). A client from
 * mm_client_open() may be given too, but then nobody answers revocations by
 * purging the arena. Creating the arena takes one 2 MiB frame run at most
 * for its first extent; -ENOMEM if the host grants nothing, -EMFILE if
 * MM_JEMALLOC_MAX_CLIENTS arenas exist, -ECHILD in a forked child.
 */
MM_JE_EXPORT int mm_jemalloc_arena(mm_client_t *client, unsigned *arena_index);

/*
 * Adopt an automatic arena (index below opt.narenas, e.g. 0) of a program
 * that never asked for mm: its extent hooks become the library's, so that its
 * new extents are runs of client's frames and a revocation purges it. client
 * comes from mm_jemalloc_open() and has no arena yet. The arena keeps the
 * extents it made before (and every one the frames cannot serve: the host
 * granted nothing, a placement at a given address, a forked child): the
 * library hands those to the hooks the arena had, so that the program's
 * malloc never fails for want of frames. Arena metadata stays in private
 * memory. An adopted arena is never destroyed: mm_jemalloc_close() leaves
 * the client open (the arena keeps using it until exit). Returns 0, or
 * -EINVAL (no such client or not an automatic arena), -EBUSY (the client has
 * an arena), -ECHILD (in a forked child), -ENOTSUP (the arena has no alloc
 * hook to fall back on), or mallctl's error; on failure nothing changed.
 */
MM_JE_EXPORT int mm_jemalloc_adopt(mm_client_t *client, unsigned arena_index);

/*
 * Create an mm arena whose extents come from a caller's frame source rather
 * than a client. *source is copied; what source->arg points to stays the
 * caller's and must outlive the arena (until mm_jemalloc_arena_destroy()).
 * The extent hooks call source->alloc for each run (4 KiB multiples, 2 MiB
 * aligned when 2 MiB or larger), source->release then source->free to give
 * a run back, and source->release alone to purge or decommit one (the run
 * stays allocated). jemalloc splits and merges runs: free and release must
 * take any 4 KiB-aligned range of frames the source allocated, also one
 * spanning adjacent allocations, as mm_free and mm_release do. The calls
 * come from any thread with jemalloc's locks held: the source must never
 * malloc from this arena nor wait for it. Arena metadata stays in private
 * anonymous memory. mm_jemalloc_purge() purges this arena too and measures
 * its drop with source->resident_bytes; mm_jemalloc_stats() includes it; no
 * usage is reported to a host (the owner reads mm_jemalloc_stats()).
 * Allocate with mallocx(size, MALLOCX_ARENA(*arena_index) |
 * MALLOCX_TCACHE_NONE) or mm_jemalloc_set_default(). Returns 0 with
 * *arena_index set, or a negative errno: -EINVAL (source, arena_index or one
 * of the four callbacks is NULL), -EMFILE (MM_JEMALLOC_MAX_CLIENTS clients
 * and source arenas exist), -ECHILD (in a forked child), or arenas.create's
 * error; on failure nothing is left and the source was not called.
 */
MM_JE_EXPORT int mm_jemalloc_arena_source(const mm_frame_source_t *source, unsigned *arena_index);

/*
 * Destroy a source arena (arena.<i>.destroy: every allocation in it is gone
 * and its frames go back through source->release and source->free; any
 * thread still using it as default must have switched away first, the
 * calling thread is switched to arena 0) and free its slot. Does nothing for
 * an index that is not a source arena (a client's arena goes with
 * mm_jemalloc_close()), in a forked child, or when jemalloc refuses (the
 * arena and its frames then stay).
 */
MM_JE_EXPORT void mm_jemalloc_arena_destroy(unsigned arena_index);

/*
 * Make arena_index the calling thread's arena (mallctl thread.arena) and
 * flush its tcache (whose bins are shared by all arenas), so that its
 * malloc/calloc/realloc allocate from it. jemalloc 5.3 cannot make a manual arena the
 * default of other threads or of threads created later (new threads are
 * spread over the automatic arenas only): process_wide != 0 answers -ENOTSUP
 * and changes nothing; call this at the start of each thread instead.
 * -EINVAL: arena_index is not an mm arena.
 */
MM_JE_EXPORT int mm_jemalloc_set_default(unsigned arena_index, int process_wide);

/*
 * arena.<i>.purge of every mm arena, synchronously: dirty extents are
 * deallocated (frames punched and freed). Returns what the residency of the
 * arenas' sources dropped by, summed (a client's: mm_client_stats
 * resident_bytes, from st_blocks; a caller's source: its resident_bytes), or
 * a negative errno (also a failed resident_bytes). Reports usage to the host
 * afterwards for the arenas of clients.
 */
MM_JE_EXPORT int64_t mm_jemalloc_purge(void);

typedef struct mm_jemalloc_stats {
    /* jemalloc's view, summed over the mm arenas (clients' and sources')
     * after an "epoch" refresh. */
    uint64_t active_bytes;   /* stats.arenas.<i>.pactive * page */
    uint64_t dirty_bytes;    /* pdirty * page: freed, not yet purged */
    uint64_t muzzy_bytes;    /* pmuzzy * page */
    uint64_t mapped_bytes;   /* stats.arenas.<i>.mapped */
    uint64_t retained_bytes; /* stats.arenas.<i>.retained */
    /* The hooks' view: frame_bytes == taken - given back, metadata aside. */
    uint64_t frame_bytes;    /* bytes of frames held by the arenas now */
    uint64_t metadata_bytes; /* arena metadata in private anonymous memory */
    uint64_t alloc_calls, alloc_failures, dalloc_calls, destroy_calls;
    uint64_t decommit_calls, purge_calls, split_calls, merge_calls;
    uint64_t hook_errors;      /* a punch or free that libmm refused */
    uint64_t revocations;      /* revocation requests answered */
    uint64_t purged_bytes;     /* residency dropped by purges and revocations */
    uint64_t last_purge_ns;    /* duration of the latest purge */
    uint64_t last_asked_bytes; /* the latest revocation: bytes asked */
    uint64_t last_given_bytes; /* and bytes acknowledged (may be less) */
    uint64_t fallback_allocs;  /* adopted arenas: extents the earlier hooks made */
} mm_jemalloc_stats_t;

/* Fill *out (zeroed first). -ECHILD in a forked child. */
MM_JE_EXPORT int mm_jemalloc_stats(mm_jemalloc_stats_t *out);

/*
 * Publish client's arena usage to the host with mm_report(): live_bytes =
 * active, heap_bytes = active + dirty + muzzy, garbage_bytes = dirty + muzzy,
 * cost_ns_per_mib from the latest measured purge. Called by the library after
 * every purge; call it after phases that change the heap a lot.
 */
MM_JE_EXPORT int mm_jemalloc_report(mm_client_t *client);

/*
 * Destroy client's arena (arena.<i>.destroy: every allocation in it is gone;
 * any thread still using it as default must have switched away first, the
 * calling thread is switched to arena 0) and close the client. Safe with a
 * client that never had an arena.
 */
MM_JE_EXPORT void mm_jemalloc_close(mm_client_t *client);

#ifdef __cplusplus
}
#endif

#endif /* MM_JEMALLOC_H */
