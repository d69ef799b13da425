/*
 * mmguest's workloads: what runs inside a guest model (guest.h) so that its
 * memory is used the way a guest's would be, every byte of it checksummed.
 *
 * A spec (mm_wl_spec_t, parsed from the --workload text) lists items:
 *   anon=SIZE[:hot=PCT]   anonymous guest-virtual memory, PCT of it hot;
 *   gc=SIZE[:live=PCT]    a Boehm GC heap served from the guest's memory;
 *   je=SIZE[:live=PCT]    a jemalloc arena served from the guest's memory;
 *   cache=SIZE            reads of the guest's disk through its page cache;
 *   free=SIZE             anonymous memory written once and freed at setup,
 *                         so that the guest holds SIZE of free, resident RAM
 *                         (a guest after a finished job: what a host wants
 *                         back first).
 *   temp=SIZE             anonymous memory filled at start, left idle, and
 *                         freed by mm__wl_free_temp() (a phase's buffers).
 *   phase=SIZE:period=MS[:offset=PCT]
 *                         demand that shifts in phases: over each period
 *                         (shifted by PCT of it) the item grows to SIZE of
 *                         anonymous memory in the first quarter, holds it
 *                         in the second, frees it all and idles for the
 *                         second half. Its work is timed in operations
 *                         (a 4 MiB step written, or one verified and partly
 *                         rewritten), counted in a latency histogram.
 * A running set (mm_wl_t) owns what its items hold: the anonymous ranges, the
 * GC roots, the jemalloc arena and its values, and the shrink hooks it gave
 * the guest. The disk holds a pattern mm__wl_disk_prepare() wrote: every
 * 8-byte word of block b is (b << 32) | a 32-bit hash of (b, word).
 *
 * Thread safety: a set is driven by one thread, the one that called
 * mm__wl_start() (the process's main thread: it initializes the GC). The
 * shrink hooks run on the guest's revocation thread and may run until the
 * guest is closed, also after mm__wl_stop() (they then give nothing).
 */
#ifndef MM_GUEST_WORKLOADS_H
#define MM_GUEST_WORKLOADS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "guest.h"

typedef enum mm_wl_kind {
    MM_WL_ANON = 0,
    MM_WL_GC,
    MM_WL_JE,
    MM_WL_CACHE,
    MM_WL_FREE,
    MM_WL_TEMP,
    MM_WL_PHASE,
} mm_wl_kind_t;

typedef struct mm_wl_item {
    mm_wl_kind_t kind;
    uint64_t bytes;     /* > 0 */
    unsigned pct;       /* anon: hot percent; gc, je: live percent; phase: offset
                         * percent; cache, free: 100 */
    uint32_t period_ms; /* phase only: > 0 */
} mm_wl_item_t;

#define MM_WL_MAX_ITEMS 16

/* Invariant: at most one MM_WL_GC and one MM_WL_JE item, 1 <= n. */
typedef struct mm_wl_spec {
    mm_wl_item_t items[MM_WL_MAX_ITEMS];
    size_t n;
} mm_wl_spec_t;

typedef struct mm_wl mm_wl_t;

/*
 * Parse a comma-separated spec (grammar above; sizes as mm_parse_size()).
 * 0, or -EINVAL with a one-line reason (no newline) in why.
 */
int mm__wl_parse(const char *text, mm_wl_spec_t *out, char *why, size_t why_len);

/* Whether the spec has an item of kind. */
bool mm__wl_has(const mm_wl_spec_t *spec, mm_wl_kind_t kind);
/* The largest cache= item in bytes (0: none). */
uint64_t mm__wl_cache_bytes(const mm_wl_spec_t *spec);
/* The memory the anon, gc, je and free items need together, in bytes (free
 * items only while the set is set up). */
uint64_t mm__wl_memory_bytes(const mm_wl_spec_t *spec);

/*
 * Make path a disk image of at least bytes (rounded up to 4 KiB): create it
 * with the pattern (plain pwrite, then fsync) if it does not exist, else
 * check that block 0 holds the pattern and that it is large enough.
 * 0; -EINVAL: it exists but is not mmguest's or too small (why says which);
 * another negative errno when it cannot be created or read (why says so, and
 * a file this call created is removed).
 */
int mm__wl_disk_prepare(const char *path, uint64_t bytes, char *why, size_t why_len);

/*
 * Set every item of spec up in guest g: allocate, fill, and for gc and je
 * drop the garbage; register the shrink hooks. free items come last, so that
 * no other item reuses the frames they leave free. Call it from the main thread,
 * once per process (the GC and the jemalloc arena are the process's), before
 * anything else uses libgc. On success *out owns the set until
 * mm__wl_stop(). On failure why says what failed, and what the set took is
 * given back except the GC heap, which libgc never returns (the guest's
 * close takes it).
 */
int mm__wl_start(mm_guest_t *g, const mm_wl_spec_t *spec, mm_wl_t **out, char *why, size_t why_len);

/*
 * One round: each item reads and verifies what it uses each round (anon: the
 * hot pages, of which it also rewrites a slice; gc and je: every live object,
 * of which one is replaced; cache: its whole range, read through the page
 * cache). Returns the words found wrong (and blocks that could not be read).
 */
uint64_t mm__wl_round(mm_wl_t *w);

/* Read and verify every byte the set holds (and a full read of each cache
 * item). Returns the errors found; *bytes gets the bytes verified. */
uint64_t mm__wl_verify(mm_wl_t *w, uint64_t *bytes);

/*
 * Run fn(arg) where a GC collection neither stops the calling thread nor
 * waits for it (GC_do_blocking when the set runs a GC): for calls into the
 * guest from the main thread, which may take the guest's lock that the fault
 * thread needs while a collection on another thread faults. fn must not
 * touch GC objects.
 */
void mm__wl_blocking(mm_wl_t *w, void (*fn)(void *arg), void *arg);

/* Free the temp= items (their memory goes back to the guest's allocator;
 * they are verified no more). Returns the bytes freed. */
uint64_t mm__wl_free_temp(mm_wl_t *w);

/* The phase items' operations as JSON fields, each starting with a comma:
 * "ops" (done so far), "op_p99_ms" and "op_hist" (cumulative latency
 * histogram: [[upper bound in microseconds, count], ...], non-empty buckets
 * only). Empty when the set has no phase item. Returns buf. */
const char *mm__wl_ops_json(const mm_wl_t *w, char *buf, size_t len);

/* Turn the shrink hooks off (they give 0 from now on), give back the
 * anonymous ranges and the jemalloc arena, detach the GC and free the set.
 * The guest must still be open; close it afterwards. w may be NULL. */
void mm__wl_stop(mm_wl_t *w);

#endif /* MM_GUEST_WORKLOADS_H */
