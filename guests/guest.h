/*
 * The guest-OS model: one process per guest whose mm region is its
 * guest-physical RAM. Its parts:
 *
 * - the page allocator: the shared frame allocator (mm_alloc/mm_free on the
 *   guest's client), behind a watermark — the host's target under the mm
 *   driver — that it keeps by reclaiming when short: page cache first, then
 *   swapping the least recently used anonymous pages (guest.c);
 * - guest-virtual memory (gvm.c): a software page table that maps
 *   anonymous memory onto frames in 64 KiB pages, so that a page can be
 *   swapped out and its frame reused, or its frame moved, without the
 *   addresses its user holds changing;
 * - a page cache over a disk-image file (pagecache.c): clean pages, the
 *   cheapest memory to give back;
 * - a swap device: the paging engine (libmm/src/pager.h) over a swap file.
 *
 * The mm driver connects the guest to the shared paging interface: the host
 * takes free chunks and discardable cache chunks by itself, and a
 * revocation makes the guest drop cache and pass pressure to its in-guest
 * runtimes (their shrink hooks) before it would ever swap.
 *
 * Thread safety: every call may be made from any thread of the guest.
 * Locks: lock guards the guest's bookkeeping (page table, cache index,
 * counters); it is never held while a runtime's shrink hook runs, and the
 * fault thread never calls into a runtime (a runtime thread may fault while
 * holding its own lock).
 */
#ifndef MM_GUEST_H
#define MM_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mm/mm.h>

/* A guest-virtual page: 16 frames. See gvm.c for why. */
#define MM_GUEST_PAGE_BYTES  ((uint64_t)64 << 10)
#define MM_GUEST_PAGE_FRAMES (MM_GUEST_PAGE_BYTES / MM_FRAME_SIZE)
/* The most guest-virtual pages a guest maps: each may need a kernel mapping
 * of its own and the kernel allows 65,530 per process. */
#define MM_GUEST_MAX_PAGES 32768u

/* The memory driver a guest runs (the values of enum mm_driver, which the
 * hello carries). The baselines are described in docs/baselines.md. */
typedef enum mm_guest_driver {
    MM_GUEST_DRIVER_MM = MM_DRIVER_MM,
    MM_GUEST_DRIVER_BALLOON = MM_DRIVER_BALLOON,
    MM_GUEST_DRIVER_FPR = MM_DRIVER_FPR,
    MM_GUEST_DRIVER_VIRTIO_MEM = MM_DRIVER_VIRTIO_MEM,
} mm_guest_driver_t;

typedef struct mm_guest mm_guest_t;

typedef struct mm_guest_opts {
    const char *socket; /* the daemon (NULL: libmm's default) */
    const char *name;   /* client name (NULL: "guest-<pid>") */
    uint64_t ram_bytes; /* guest-physical RAM: the region */
    mm_guest_driver_t driver;
    const char *swap_path;  /* NULL: no swap device */
    uint64_t swap_bytes;    /* swap device size (0: as large as RAM) */
    const char *disk_path;  /* NULL: no disk, no page cache */
    uint64_t cache_bytes;   /* most the page cache may hold */
    uint64_t virtual_bytes; /* guest-virtual space (0: RAM + swap) */
} mm_guest_opts_t;

/* A runtime's answer to pressure (an in-guest GC collecting, an allocator
 * purging): returns the bytes it gave back. Runs on the guest's revocation
 * thread, never on its fault thread, without the guest lock. */
typedef uint64_t (*mm_guest_shrink_fn)(void *arg, uint64_t bytes);

typedef struct mm_guest_stats {
    uint64_t ram_bytes;
    uint64_t target_bytes;        /* the host's target for this guest */
    uint64_t resident_bytes;      /* the region's resident bytes (kernel truth) */
    uint64_t used_bytes;          /* frames the guest holds: anon + cache */
    uint64_t anon_bytes;          /* frames backing guest-virtual pages */
    uint64_t cache_bytes;         /* frames holding page-cache pages */
    uint64_t virtual_bytes;       /* guest-virtual memory handed out */
    uint64_t swapped_bytes;       /* guest-virtual pages in swap now */
    uint64_t swap_out_bytes;      /* written to swap, in total */
    uint64_t swap_in_bytes;       /* read back from swap, in total */
    uint64_t cache_dropped_bytes; /* cache the guest dropped, in total */
    uint64_t cache_lost_bytes;    /* cache the host discarded, in total */
    uint64_t shrunk_bytes;        /* runtimes gave back under pressure */
    uint64_t zero_fills;          /* guest-virtual pages touched after release */
    uint64_t moves;               /* guest-virtual pages moved to other frames */
    uint64_t revocations;         /* host requests answered */
    uint64_t cache_hits, cache_misses;
    uint64_t swap_errors;        /* swap-ins that failed their checksum */
    uint64_t first_swap_ns;      /* when the guest first swapped (0: never) */
    uint64_t last_cache_drop_ns; /* when it last dropped cache (0: never) */
    /* Baseline drivers (0 under the others). */
    mm_guest_driver_t driver;
    uint64_t balloon_bytes;   /* balloon: pages in the balloon now */
    uint64_t oom_deflates;    /* balloon: deflations on OOM */
    uint64_t reported_bytes;  /* fpr: reported in total */
    uint64_t plugged_bytes;   /* virtio-mem: plugged now */
    uint64_t moved_frames;    /* virtio-mem: used frames moved out of blocks */
    uint64_t driver_requests; /* messages sent to the host */
    uint64_t driver_units;    /* pages (balloon) or blocks given to the host */
    uint64_t driver_alloc_ns; /* balloon: time allocating balloon pages */
    uint64_t driver_msg_ns;   /* time in requests to the host (its work included) */
} mm_guest_stats_t;

/* Parse a driver name ("mm", "balloon", "fpr", "virtio-mem"). -EINVAL
 * otherwise. */
int mm__guest_driver_parse(const char *text, mm_guest_driver_t *out);
const char *mm__guest_driver_name(mm_guest_driver_t d);

/*
 * Start a guest: register with the daemon (kind guest, region ram_bytes),
 * open the swap device and disk, set up guest-virtual memory and the fault
 * thread. -EPERM: no full userfaultfd for this process; errors of
 * mm_client_open() and of the swap store. On failure nothing is left.
 */
int mm__guest_open(const mm_guest_opts_t *opts, mm_guest_t **out);
void mm__guest_close(mm_guest_t *g);

mm_client_t *mm__guest_client(mm_guest_t *g);
void mm__guest_stats(mm_guest_t *g, mm_guest_stats_t *out);

/* Register a runtime's shrink hook (at most 4). */
int mm__guest_add_shrinker(mm_guest_t *g, mm_guest_shrink_fn fn, void *arg);

/*
 * The page allocator: frames for the guest's own uses, 4 KiB multiples.
 * When the watermark (the host's target) would be passed, or the host grants
 * nothing, reclaims first (cache, then swap) and tries again. -ENOMEM when
 * nothing more can be reclaimed.
 */
int mm__guest_frames_alloc(mm_guest_t *g, uint64_t bytes, uint64_t align, void **out);
void mm__guest_frames_free(mm_guest_t *g, void *addr, uint64_t bytes);
/* Free frames without releasing their pages: they stay resident on the free
 * list, as a guest kernel's freed pages do, until someone takes them. */
void mm__guest_frames_free_resident(mm_guest_t *g, void *addr, uint64_t bytes);

/*
 * Reclaim at least bytes of frames: drop page cache first, then swap the
 * least recently used guest-virtual pages out. Returns the bytes freed.
 */
uint64_t mm__guest_reclaim(mm_guest_t *g, uint64_t bytes);

/* Bring the guest's resident bytes down to its target, the way its driver
 * does it (mm: cache, runtimes' shrink hooks, then swap). Returns bytes
 * freed. Called on revocations. */
uint64_t mm__guest_shrink_to_target(mm_guest_t *g);

/*
 * Anonymous (guest-virtual) memory, in 64 KiB pages. alloc backs the pages
 * at once; release frees their frames but keeps the addresses (a later touch
 * reads zeros, like MADV_DONTNEED on anonymous memory); free gives the
 * addresses back. move puts the page holding addr on other frames (a real
 * copy; its user's addresses do not change).
 */
int mm__guest_anon_alloc(mm_guest_t *g, uint64_t bytes, void **out);
/* The same, at an address aligned to align (a power of two; runs of 2 MiB
 * or more are chunk-aligned anyway). */
int mm__guest_anon_alloc_aligned(mm_guest_t *g, uint64_t bytes, uint64_t align, void **out);
int mm__guest_anon_release(mm_guest_t *g, void *addr, uint64_t bytes);
int mm__guest_anon_free(mm_guest_t *g, void *addr, uint64_t bytes);
int mm__guest_anon_move(mm_guest_t *g, void *addr);
/* Tell the guest that addr..addr+bytes was used (the workload's hint for
 * the LRU; faults and allocations count on their own). */
void mm__guest_anon_touched(mm_guest_t *g, const void *addr, uint64_t bytes);
/* A frame source over anonymous memory, for the runtime adapters. */
mm_frame_source_t mm__guest_anon_source(mm_guest_t *g);
/* The frame (region offset) behind the guest-virtual page holding addr, or
 * -ENOENT when it is not resident. */
int64_t mm__guest_anon_frame(mm_guest_t *g, const void *addr);

/* The guest frees what it can do without (its runtimes' garbage, its page
 * cache), as a workload that finished a phase does: how memory becomes free
 * for free page reporting. Returns the bytes freed. */
uint64_t mm__guest_free_unneeded(mm_guest_t *g);

/* Read 4 KiB block of the disk through the page cache. -ENXIO: no disk or
 * the block lies past its end. */
int mm__guest_disk_read(mm_guest_t *g, uint64_t block, void *buf);
uint64_t mm__guest_disk_blocks(mm_guest_t *g);

#endif /* MM_GUEST_H */
