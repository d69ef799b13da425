/*
 * The guest model's state, shared by guest.c (page allocator, reclaim,
 * driver), gvm.c (guest-virtual memory) and pagecache.c (disk cache).
 */
#ifndef MM_GUEST_INTERNAL_H
#define MM_GUEST_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "guest.h"
#include "pager.h"
#include "swapstore.h"

/* A guest-virtual page's state. */
enum gv_state {
    GV_FREE = 0, /* not handed out: touching it is an error (SIGBUS) */
    GV_UNBACKED, /* handed out, no frames: a touch maps zeroed frames */
    GV_RESIDENT, /* on frames */
    GV_SWAPPED,  /* in the swap store: a touch brings it back */
};

typedef struct gv_page {
    uint32_t frame;     /* first of its 16 frames (GV_RESIDENT only) */
    uint8_t state;      /* enum gv_state */
    uint8_t referenced; /* the LRU's second chance */
    uint8_t busy;       /* being swapped, moved or brought back: wait */
    uint8_t reserved;
} gv_page_t;

typedef struct gv_space {
    uint8_t *base;  /* the guest-virtual area */
    uint32_t pages; /* its size in 64 KiB pages */
    gv_page_t *pt;  /* the page table: pages entries, guarded by g->lock */
    uint32_t alloc_hint;
    uint32_t clock_hand;
    pthread_cond_t idle; /* signalled when a busy page settles */
    uint8_t *fault_buf;  /* a page on its way back from swap: the fault
                            thread's alone (one per guest) */
} gv_space_t;

typedef struct cache_chunk {
    uint8_t *addr;                    /* 2 MiB of frames (NULL: slot unused) */
    uint32_t blocks[MM_CHUNK_FRAMES]; /* disk block in each slot (UINT32_MAX: empty) */
    uint32_t used;
    uint64_t stamp; /* last hit, for the LRU */
    bool discardable;
} cache_chunk_t;

typedef struct page_cache {
    int disk_fd;
    bool direct;     /* O_DIRECT: no host page cache behind the disk */
    uint64_t blocks; /* disk size in 4 KiB blocks */
    uint32_t *where; /* per block: chunk * 512 + slot, or UINT32_MAX */
    cache_chunk_t *chunks;
    uint32_t max_chunks;
    uint64_t clock;
    pthread_mutex_t lock; /* guards everything above but disk_fd */
} page_cache_t;

#define MAX_SHRINKERS 4

/*
 * A baseline driver (balloon.c, fpr.c, virtio_mem.c). Its thread (driver.c)
 * runs step() when the host rings (a new target: the device's config
 * interrupt), when the guest kicks it, or when the wait step() asked for
 * has passed. Drivers keep their state in the guest's drv below.
 */
typedef struct guest_driver_ops {
    int (*init)(mm_guest_t *g);  /* before the thread starts; -errno */
    void (*fini)(mm_guest_t *g); /* after it stopped */
    /* One pass; returns the ns to wait before the next (-1: until woken). */
    int64_t (*step)(mm_guest_t *g);
} guest_driver_ops_t;

extern const guest_driver_ops_t mm__balloon_ops, mm__fpr_ops, mm__vmem_ops;

typedef struct guest_driver {
    const guest_driver_ops_t *ops; /* NULL under the mm driver */
    pthread_t thread;
    _Atomic bool running; /* read by other threads (deflate on OOM) */
    pthread_mutex_t lock; /* guards the fields below and the drivers' lists */
    pthread_cond_t wake;
    bool kicked, stop;
    /* balloon: frame numbers in the balloon (a stack), as the driver's page
     * list; the target it last met (it acts again only when that changes,
     * as the device's config interrupt makes it). */
    uint32_t *pfns;
    uint64_t npfns, cap_pfns;
    uint64_t met_target;
    /* fpr: a free was seen (PAGE_REPORTING_REQUESTED) at requested_ns;
     * reported: one bit per chunk reported and not touched since. */
    bool requested;
    uint64_t requested_ns;
    uint64_t *reported;
    /* virtio-mem: one bit per chunk (block) unplugged. */
    uint64_t *unplugged;
    uint64_t unplugged_blocks;
    int64_t retry_ns; /* the retry timer's next wait */
} guest_driver_t;

struct mm_guest {
    mm_guest_opts_t opts;
    mm_client_t *client;
    uint8_t *base; /* the region (guest-physical RAM) */
    int region_fd;
    int uffd;
    mm_swap_t *swap; /* NULL without a swap device */
    mm_pager_t *pager;
    gv_space_t gv;
    page_cache_t cache;
    pthread_mutex_t lock;         /* guards gv and the counters below */
    pthread_mutex_t reclaim_lock; /* one reclaimer at a time */
    struct {
        mm_guest_shrink_fn fn;
        void *arg;
    } shrinkers[MAX_SHRINKERS];
    int shrinker_count;
    _Atomic bool ready; /* set once open finished: revocations wait for it */
    _Atomic uint64_t used_bytes, anon_bytes, cache_bytes;
    _Atomic uint64_t swap_out_bytes, swap_in_bytes, swapped_bytes;
    _Atomic uint64_t cache_dropped_bytes, cache_lost_bytes, shrunk_bytes;
    _Atomic uint64_t zero_fills, moves, revocations, cache_hits, cache_misses, swap_errors;
    _Atomic uint64_t virtual_bytes, first_swap_ns, last_cache_drop_ns;
    guest_driver_t drv;
    _Atomic uint64_t balloon_bytes, oom_deflates, reported_bytes, plugged_bytes, moved_frames;
    _Atomic uint64_t driver_requests, driver_units, driver_alloc_ns, driver_msg_ns;
};

/* driver.c: the baseline driver's thread and what the drivers share. init
 * and fini bracket the guest's life; start (once open) and stop (before
 * the guest's parts go) the thread. */
void mm__driver_init(mm_guest_t *g);
void mm__driver_fini(mm_guest_t *g);
int mm__driver_start(mm_guest_t *g);
void mm__driver_stop(mm_guest_t *g);
void mm__driver_kick(mm_guest_t *g);
/* The size the host asks the guest to keep (balloon) or have plugged
 * (virtio-mem): its target, or all its RAM while none is set. -errno when the
 * guest's client cannot be read. */
int64_t mm__driver_target(mm_guest_t *g);
/* One request to the host, timed into driver_msg_ns. 0 or -errno. */
int mm__driver_call(mm_guest_t *g, mm_msg_hdr_t *req, uint64_t *done);
/* balloon.c: deflate on OOM (256 pages); returns the bytes given back. */
uint64_t mm__balloon_oom(mm_guest_t *g);
/* fpr.c: a free happened (PAGE_REPORTING_REQUESTED). */
void mm__fpr_notify(mm_guest_t *g);

/* gvm.c */
int mm__gv_init(mm_guest_t *g, uint64_t virtual_bytes);
void mm__gv_fini(mm_guest_t *g);
/* Swap out least recently used pages until bytes are freed; returns bytes. */
uint64_t mm__gv_swap_out(mm_guest_t *g, uint64_t bytes);

/* pagecache.c */
int mm__cache_init(mm_guest_t *g);
void mm__cache_fini(mm_guest_t *g);
/* Drop least recently used cache chunks until bytes are freed (also
 * forgetting chunks the host took). Returns the bytes freed. */
uint64_t mm__cache_drop(mm_guest_t *g, uint64_t bytes);
/* Drop the cache chunk at addr, if there is one. Returns the bytes freed. */
uint64_t mm__cache_drop_at(mm_guest_t *g, const void *addr);

static inline void guest_count(_Atomic uint64_t *c, int64_t delta)
{
    atomic_fetch_add_explicit(c, (uint64_t)delta, memory_order_relaxed);
}

static inline uint64_t guest_read(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

#endif /* MM_GUEST_INTERNAL_H */
