/*
 * mm-gc: libgc's heap in mm frames (see <mm/gc.h> for the contract).
 *
 * This file owns three things: the mmap/madvise definitions that interpose
 * on libgc.so's PLT calls (serving its heap from a frame source), the
 * revocation handler that collects and unmaps, and the collection-event
 * callback that reports usage to the host.
 *
 * One code path serves both ways of attaching: mm_gc_open() builds a frame
 * source over its client (alloc = mm_alloc, release = mm_release,
 * resident_bytes = the client's st_blocks residency), mm_gc_open_source()
 * copies the caller's. The hooks and the shrink loop only ever call the
 * source.
 *
 * State: g_source is the attached source (NULL: every hook passes through)
 * and g_client the client behind it when mm_gc_open() attached (NULL for a
 * caller's source: nobody reports to a host then). g_gc_lo..g_gc_hi is the
 * address range of libgc.so's loaded segments, set before g_source is
 * published with release order and never changed after. g_span_lo..g_span_hi
 * holds every range the source served: the client's region, or for a
 * caller's source the bounds of what the mmap hook served so far (widened by
 * the hook, under libgc's allocation lock). The hooks never call malloc,
 * never call libgc, never wait for anything but the source (for a client,
 * mm_alloc()'s install round trip, which the daemon answers at once).
 */
#define GC_THREADS
#include <gc/gc.h>

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <mm/gc.h>

#define FRAME_BYTES ((size_t)MM_FRAME_SIZE)
#define CHUNK_BYTES ((size_t)MM_CHUNK_SIZE)
/* Idle calls that end a shrink, and a bound on calls per shrink. */
#define SHRINK_IDLE_CALLS 3
#define SHRINK_MAX_CALLS  32
/* Allocation that does not count as a change of the heap (see on_revoke). */
#define QUIET_ALLOC_BYTES ((uint64_t)64 << 10)

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*madvise_fn)(void *, size_t, int);

static _Atomic(const mm_frame_source_t *) g_source; /* &g_source_copy or NULL */
static mm_frame_source_t g_source_copy;             /* written only while detached */
static _Atomic(mm_client_t *) g_client;             /* mm_gc_open()'s client, else NULL */
static _Atomic bool g_fallback;                     /* MM_GC_FALLBACK: refusals pass through */
static uintptr_t g_gc_lo, g_gc_hi;                  /* libgc.so's segments: [lo, hi) */
static _Atomic uintptr_t g_span_lo, g_span_hi;      /* served ranges lie in [lo, hi) */
static mmap_fn real_mmap;
static madvise_fn real_madvise;
static GC_on_collection_event_proc g_prev_event;

/* Counters (relaxed: statistics only). */
static _Atomic uint64_t g_served_bytes;
static _Atomic uint64_t g_released_bytes;
static _Atomic uint64_t g_collections;
static _Atomic uint64_t g_last_collect_ns;
static _Atomic uint64_t g_revocations;
static _Atomic uint64_t g_revoked_bytes;
static _Atomic bool g_allowed_threads;
/* After a revocation that gave nothing: the collection count and libgc's
 * total allocation then. Touched by the revocation handler only. */
static uint64_t g_fruitless_collections = UINT64_MAX, g_fruitless_total_bytes;
/* Start of the collection in progress; written under the GC lock only. */
static uint64_t g_collect_start_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* dlsym may allocate only on failure; resolve once at load, before any hook
 * can see libgc as its caller. */
__attribute__((constructor)) static void resolve_real(void)
{
    real_mmap = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
    real_madvise = (madvise_fn)dlsym(RTLD_NEXT, "madvise");
}

static void *pass_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (real_mmap)
        return real_mmap(addr, len, prot, flags, fd, off);
    long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    return r == -1 ? MAP_FAILED : (void *)r;
}

static int pass_madvise(void *addr, size_t len, int advice)
{
    if (real_madvise)
        return real_madvise(addr, len, advice);
    return (int)syscall(SYS_madvise, addr, len, advice);
}

static bool from_libgc(uintptr_t ret)
{
    return ret >= g_gc_lo && ret < g_gc_hi;
}

/* ---- Hooks --------------------------------------------------------------- */

/* Take [lo, hi) into the span of served ranges. Callers hold libgc's
 * allocation lock; the loops only make the span safe without it. */
static void span_widen(uintptr_t lo, uintptr_t hi)
{
    uintptr_t cur = atomic_load_explicit(&g_span_lo, memory_order_relaxed);
    while (lo < cur && !atomic_compare_exchange_weak_explicit(
                           &g_span_lo, &cur, lo, memory_order_relaxed, memory_order_relaxed))
        ;
    cur = atomic_load_explicit(&g_span_hi, memory_order_relaxed);
    while (hi > cur && !atomic_compare_exchange_weak_explicit(
                           &g_span_hi, &cur, hi, memory_order_relaxed, memory_order_relaxed))
        ;
}

/* libgc's heap request, served from the source. Heap sections of 2 MiB or
 * more get chunk alignment, so that whole chunks back them. */
static void *serve_mmap(const mm_frame_source_t *src, size_t len)
{
    size_t bytes = (len + FRAME_BYTES - 1) & ~(FRAME_BYTES - 1);
    size_t align = bytes >= CHUNK_BYTES ? CHUNK_BYTES : FRAME_BYTES;
    void *p = NULL;
    /* No retry and no wait: a refusal is the source's answer (for a client,
     * the host's), and libgc holds its lock here (a shrink needs that lock). */
    int err = src->alloc(src->arg, bytes, align, &p);
    if (err < 0 || p == NULL) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    span_widen((uintptr_t)p, (uintptr_t)p + bytes);
    atomic_fetch_add_explicit(&g_served_bytes, bytes, memory_order_relaxed);
    return p;
}

MM_GC_EXPORT int mm_gc_mmap_hook(const void *caller, void *addr, size_t len, int prot, int flags,
                                 int fd, off_t off, void **result)
{
    (void)addr;
    uintptr_t ret = (uintptr_t)caller;
    const mm_frame_source_t *src = atomic_load_explicit(&g_source, memory_order_acquire);
    if (src && from_libgc(ret) && fd == -1 && off == 0 && len > 0 &&
        prot == (PROT_READ | PROT_WRITE) &&
        (flags & ~MAP_NORESERVE) == (MAP_PRIVATE | MAP_ANONYMOUS)) {
        void *p = serve_mmap(src, len);
        if (p != MAP_FAILED || !atomic_load_explicit(&g_fallback, memory_order_relaxed)) {
            *result = p;
            return 1;
        }
        /* Outside the span, so the madvise hook passes its releases on. */
    }
    return 0;
}

MM_GC_EXPORT int mm_gc_madvise_hook(const void *caller, void *addr, size_t len, int advice,
                                    int *result)
{
    uintptr_t ret = (uintptr_t)caller;
    const mm_frame_source_t *src = atomic_load_explicit(&g_source, memory_order_acquire);
    uintptr_t a = (uintptr_t)addr;
    uintptr_t span_lo = atomic_load_explicit(&g_span_lo, memory_order_relaxed);
    uintptr_t span_hi = atomic_load_explicit(&g_span_hi, memory_order_relaxed);
    if (src && from_libgc(ret) && advice == MADV_DONTNEED && a >= span_lo && a < span_hi &&
        len <= span_hi - a) {
        /* Owner punch of the whole frames inside the range: libgc reuses it
         * later without a call, so the frames stay owned. */
        uintptr_t lo = (a + FRAME_BYTES - 1) & ~(uintptr_t)(FRAME_BYTES - 1);
        uintptr_t hi = (a + len) & ~(uintptr_t)(FRAME_BYTES - 1);
        if (hi > lo) {
            int err = src->release(src->arg, (void *)lo, hi - lo);
            if (err < 0) {
                errno = -err;
                *result = -1;
                return 1;
            }
            atomic_fetch_add_explicit(&g_released_bytes, hi - lo, memory_order_relaxed);
        }
        *result = 0;
        return 1;
    }
    return 0;
}

/* The definitions that interpose on libgc.so's PLT calls when this library
 * is linked (or preloaded) ahead of the C library. */
__attribute__((visibility("default"))) void *mmap(void *addr, size_t len, int prot, int flags,
                                                  int fd, off_t off)
{
    void *p;
    if (mm_gc_mmap_hook(__builtin_return_address(0), addr, len, prot, flags, fd, off, &p))
        return p;
    return pass_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) int madvise(void *addr, size_t len, int advice)
{
    int rc;
    if (mm_gc_madvise_hook(__builtin_return_address(0), addr, len, advice, &rc))
        return rc;
    return pass_madvise(addr, len, advice);
}

/* Usage from libgc's counters; gs must be filled under the GC lock. */
static void usage_from(const struct GC_prof_stats_s *gs, mm_usage_t *u)
{
    uint64_t heap = gs->heapsize_full - gs->unmapped_bytes;
    uint64_t free_mapped = gs->free_bytes_full - gs->unmapped_bytes;
    uint64_t last = atomic_load_explicit(&g_last_collect_ns, memory_order_relaxed);
    u->heap_bytes = heap;
    u->garbage_bytes = free_mapped;
    u->live_bytes = heap - free_mapped;
    u->cost_ns_per_mib = heap ? last * (1u << 20) / (heap > (1u << 20) ? heap : (1u << 20)) : 0;
}

/* Runs inside libgc with its allocation lock held: only the unsynchronized
 * statistics call, no GC call that locks. mm_report() takes no GC lock. */
static void GC_CALLBACK on_collection_event(GC_EventType ev)
{
    if (ev == GC_EVENT_START) {
        g_collect_start_ns = now_ns();
    } else if (ev == GC_EVENT_END) {
        atomic_store_explicit(&g_last_collect_ns, now_ns() - g_collect_start_ns,
                              memory_order_relaxed);
        atomic_fetch_add_explicit(&g_collections, 1, memory_order_relaxed);
        mm_client_t *c = atomic_load_explicit(&g_client, memory_order_acquire);
        if (c) {
            struct GC_prof_stats_s gs;
            mm_usage_t u;
            GC_get_prof_stats_unsafe(&gs, sizeof gs);
            usage_from(&gs, &u);
            /* A failed report only leaves the host with older figures. */
            (void)mm_report(c, &u);
        }
    }
    if (g_prev_event)
        g_prev_event(ev);
}

/* Report from outside a collection (takes the GC lock). */
static void report_now(mm_client_t *c)
{
    struct GC_prof_stats_s gs;
    mm_usage_t u;
    GC_get_prof_stats(&gs, sizeof gs);
    usage_from(&gs, &u);
    (void)mm_report(c, &u); /* best effort, as above */
}

/*
 * Collect and unmap until want bytes of residency are gone (0: no limit),
 * three calls in a row drop nothing, or the next call would pass deadline_ns
 * (0: none). libgc unmaps only blocks free for more than one collection, so
 * fresh garbage takes two or three calls. Residency is the source's
 * resident_bytes; a reading that fails counts as no drop. Reports to the
 * host when a client is attached. Returns the drop (0 if the source could
 * not measure).
 */
static int64_t shrink(const mm_frame_source_t *src, uint64_t want, uint64_t deadline_ns)
{
    int64_t start = src->resident_bytes(src->arg), low = start;
    int idle = 0;
    for (int i = 0; i < SHRINK_MAX_CALLS && idle < SHRINK_IDLE_CALLS; i++) {
        uint64_t t0 = now_ns();
        GC_gcollect_and_unmap();
        uint64_t t1 = now_ns();
        int64_t r = src->resident_bytes(src->arg);
        if (r >= 0 && r < low) {
            low = r;
            idle = 0;
        } else {
            idle++;
        }
        if (want && low >= 0 && (uint64_t)(start - low) >= want)
            break;
        if (deadline_ns && t1 + (t1 - t0) > deadline_ns)
            break;
    }
    mm_client_t *c = atomic_load_explicit(&g_client, memory_order_acquire);
    if (c)
        report_now(c);
    int64_t end = src->resident_bytes(src->arg);
    return start < 0 || end < 0 ? 0 : start - end;
}

/* Revocation handler, on libmm's answer thread. The thread joins the GC
 * only for the duration of the call (a registered thread is stopped at
 * every collection). */
static uint64_t on_revoke(mm_client_t *c, const mm_revoke_request_t *req, void *arg)
{
    (void)c, (void)arg;
    const mm_frame_source_t *src = atomic_load_explicit(&g_source, memory_order_acquire);
    if (!src || !GC_is_init_called())
        return 0; /* not attached yet, or no heap yet: nothing to give */
    bool joined = false;
    if (!GC_thread_is_registered()) {
        /* GC_allow_register_threads() starts the markers and turns on
         * locking; it is idempotent and needs no registered caller here. */
        if (!atomic_exchange(&g_allowed_threads, true))
            GC_allow_register_threads();
        struct GC_stack_base sb;
        if (GC_get_stack_base(&sb) != GC_SUCCESS)
            return 0;
        joined = GC_register_my_thread(&sb) == GC_SUCCESS;
        if (!joined)
            return 0;
    }
    int64_t dropped = 0;
    /* The host asks again at every tick while the client is above target.
     * If the last answer found nothing and since then no collection ran and
     * next to nothing was allocated (joining the GC allocates a thread
     * record), the heap has no more to give, short of references dropped
     * without allocating, which the next change finds: answer 0 at once
     * rather than run three more collections. */
    uint64_t total = GC_get_total_bytes();
    if (atomic_load_explicit(&g_collections, memory_order_relaxed) != g_fruitless_collections ||
        total - g_fruitless_total_bytes > QUIET_ALLOC_BYTES) {
        dropped = shrink(src, req->bytes, req->deadline_ns);
        g_fruitless_collections =
            dropped <= 0 ? atomic_load_explicit(&g_collections, memory_order_relaxed) : UINT64_MAX;
        g_fruitless_total_bytes = GC_get_total_bytes();
    }
    if (joined)
        GC_unregister_my_thread();
    uint64_t given = dropped > 0 ? (uint64_t)dropped : 0;
    atomic_fetch_add_explicit(&g_revocations, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_revoked_bytes, given, memory_order_relaxed);
    return given;
}

/* A child of fork() has no region mapping (and must not write the parent's
 * source): let its hooks pass through. */
static void detach_in_child(void)
{
    atomic_store_explicit(&g_source, NULL, memory_order_release);
    atomic_store_explicit(&g_client, NULL, memory_order_release);
}

struct find_gc {
    uintptr_t probe;
    uintptr_t lo, hi;
};

static int find_gc_segments(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct find_gc *f = arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    bool hit = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
        if (s < lo)
            lo = s;
        if (e > hi)
            hi = e;
        if (f->probe >= s && f->probe < e)
            hit = true;
    }
    if (!hit)
        return 0;
    f->lo = lo;
    f->hi = hi;
    return 1;
}

/* libgc.so's segments, or -ELIBACC if it is not loaded. */
static int find_libgc(struct find_gc *f)
{
    *f = (struct find_gc){.probe = (uintptr_t)(void *)GC_gcollect_and_unmap};
    return dl_iterate_phdr(find_gc_segments, f) ? 0 : -ELIBACC;
}

/*
 * Attach src (copied) and, for mm_gc_open(), its client c, whose region is
 * the span; a caller's source starts with an empty span. Not concurrent with
 * anything; on failure nothing is attached.
 */
static int attach(const mm_frame_source_t *src, mm_client_t *c, const struct find_gc *f)
{
    static bool once;
    if (!once) {
        /* pthread_atfork fails only without memory; then a child would keep
         * the hooks attached to memory it does not have, so say no. */
        if (pthread_atfork(NULL, NULL, detach_in_child) != 0)
            return -ENOMEM;
        once = true;
        g_prev_event = GC_get_on_collection_event();
        GC_set_on_collection_event(on_collection_event);
    }
    g_gc_lo = f->lo;
    g_gc_hi = f->hi;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    if (c) {
        lo = (uintptr_t)mm_client_base(c);
        hi = lo + mm_client_region_bytes(c);
    }
    atomic_store_explicit(&g_span_lo, lo, memory_order_relaxed);
    atomic_store_explicit(&g_span_hi, hi, memory_order_relaxed);
    g_source_copy = *src;
    atomic_store_explicit(&g_client, c, memory_order_release);
    atomic_store_explicit(&g_source, &g_source_copy, memory_order_release);
    return 0;
}

MM_GC_EXPORT int mm_gc_open(const char *socket_path, const mm_client_opts_t *opts,
                            mm_client_t **out)
{
    if (atomic_load_explicit(&g_source, memory_order_acquire))
        return -EBUSY;
    mm_client_opts_t o;
    if (opts)
        o = *opts;
    else
        mm_client_opts_init(&o);
    if (o.on_revoke)
        return -EINVAL;

    struct find_gc f;
    int err = find_libgc(&f);
    if (err < 0)
        return err;

    bool fallback = o.flags & MM_GC_FALLBACK;
    o.flags &= ~(unsigned)MM_GC_FALLBACK;
    if (o.flags & MM_GC_NO_THREAD)
        o.flags &= ~(unsigned)MM_GC_NO_THREAD;
    else
        o.flags |= MM_CLIENT_THREAD;
    o.on_revoke = on_revoke;
    o.revoke_arg = NULL;
    mm_client_t *c = NULL;
    err = mm_client_open(socket_path, &o, &c);
    if (err < 0)
        return err;

    const mm_frame_source_t own = mm_client_frame_source(c);
    atomic_store(&g_fallback, fallback);
    err = attach(&own, c, &f);
    if (err < 0) {
        mm_client_close(c);
        return err;
    }
    if (out)
        *out = c;
    return 0;
}

MM_GC_EXPORT int mm_gc_open_source(const mm_frame_source_t *source)
{
    if (atomic_load_explicit(&g_source, memory_order_acquire))
        return -EBUSY;
    if (!source || !source->alloc || !source->release || !source->resident_bytes)
        return -EINVAL;
    struct find_gc f;
    int err = find_libgc(&f);
    if (err < 0)
        return err;
    return attach(source, NULL, &f);
}

MM_GC_EXPORT void mm_gc_close(void)
{
    atomic_store_explicit(&g_source, NULL, memory_order_release);
    mm_client_t *c = atomic_exchange(&g_client, NULL);
    if (c)
        mm_client_close(c);
}

MM_GC_EXPORT mm_client_t *mm_gc_client(void)
{
    return atomic_load_explicit(&g_client, memory_order_acquire);
}

MM_GC_EXPORT int mm_gc_stats(mm_gc_stats_t *out)
{
    if (!atomic_load_explicit(&g_source, memory_order_acquire))
        return -ENOTCONN;
    memset(out, 0, sizeof *out);
    if (GC_is_init_called()) {
        struct GC_prof_stats_s gs;
        mm_usage_t u;
        GC_get_prof_stats(&gs, sizeof gs);
        usage_from(&gs, &u);
        out->live_bytes = u.live_bytes;
        out->heap_bytes = u.heap_bytes;
        out->garbage_bytes = u.garbage_bytes;
        out->unmapped_bytes = gs.unmapped_bytes;
    }
    out->served_bytes = atomic_load_explicit(&g_served_bytes, memory_order_relaxed);
    out->released_bytes = atomic_load_explicit(&g_released_bytes, memory_order_relaxed);
    out->last_collect_ns = atomic_load_explicit(&g_last_collect_ns, memory_order_relaxed);
    out->collections = atomic_load_explicit(&g_collections, memory_order_relaxed);
    out->revocations = atomic_load_explicit(&g_revocations, memory_order_relaxed);
    out->revoked_bytes = atomic_load_explicit(&g_revoked_bytes, memory_order_relaxed);
    return 0;
}

MM_GC_EXPORT int64_t mm_gc_shrink(void)
{
    const mm_frame_source_t *src = atomic_load_explicit(&g_source, memory_order_acquire);
    if (!src)
        return -ENOTCONN;
    if (!GC_is_init_called())
        return 0;
    return shrink(src, 0, 0);
}
