/*
 * jemalloc arenas backed by mm frames (see mm/jemalloc.h). One slot per
 * client or caller's frame source holds the extent hooks jemalloc calls
 * (first member, so a hooks pointer is its slot), the frame source the hooks
 * call, the client if there is one, the arena index and counters. A client's
 * slot holds a source built over the client (alloc = mm_alloc, free =
 * mm_free, release = mm_release, resident_bytes = the client's st_blocks
 * residency), so the hooks and the purge have one code path. Slots are
 * static: the hooks never allocate and never call malloc, and jemalloc keeps
 * the hooks pointer for the arena's lifetime.
 *
 * An adopted arena (mm_jemalloc_adopt(): an automatic arena of a program
 * that never asked for mm) also holds extents its earlier hooks made; the
 * slot keeps those hooks as `fallback` and hands them every extent outside
 * the client's region, and every allocation the frames cannot serve.
 */
#include <mm/jemalloc.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <jemalloc/jemalloc.h>

#define FRAME ((size_t)MM_FRAME_SIZE)
#define CHUNK ((size_t)MM_CHUNK_SIZE)

/* Arena metadata blocks a slot can hold. jemalloc's base blocks grow through
 * the page size classes (2 MiB for the first ~30, then a quarter larger per
 * step), so this is far more than any arena's metadata needs. */
#define META_BLOCKS 256

typedef struct je_slot {
    extent_hooks_t hooks; /* first: jemalloc hands this pointer back */
    /* The frames: &source once it is set (release order), NULL before and
     * after (the hooks refuse then). source is a client's own (arg is the
     * client) or a copy of the caller's. */
    _Atomic(const mm_frame_source_t *) src;
    mm_frame_source_t source;
    _Atomic(mm_client_t *) client; /* the client; NULL for a caller's source */
    /* Adopted arenas only: the hooks the arena had, and the client's region
     * [lo, hi), outside which an extent is the fallback's. */
    extent_hooks_t *fallback;
    uintptr_t lo, hi;
    _Atomic unsigned arena; /* valid when has_arena */
    _Atomic bool has_arena;
    bool claimed; /* false: slot free (read and written under slots_lock) */
    /* Metadata blocks in private memory: [lo, lo + bytes), bytes 0 for none
     * or unmapped; entries [0, meta_n) were claimed, append only. */
    _Atomic unsigned meta_n;
    struct {
        _Atomic uintptr_t lo, bytes;
    } meta[META_BLOCKS];
    _Atomic uint64_t frame_bytes, metadata_bytes;
    _Atomic uint64_t alloc_calls, alloc_failures, dalloc_calls, destroy_calls;
    _Atomic uint64_t decommit_calls, purge_calls, split_calls, merge_calls, hook_errors;
    _Atomic uint64_t revocations, purged_bytes, last_purge_ns, cost_ns_per_mib;
    _Atomic uint64_t last_asked, last_given, fallback_allocs;
    pthread_mutex_t purge_lock; /* one purge of this arena at a time */
} je_slot_t;

static je_slot_t slots[MM_JEMALLOC_MAX_CLIENTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER; /* slot claim and arena creation */
static _Atomic bool in_child;                                  /* set in a forked child */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static inline uint64_t load_relaxed(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static inline void add_relaxed(_Atomic uint64_t *p, uint64_t v)
{
    atomic_fetch_add_explicit(p, v, memory_order_relaxed);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool is_mm_arena(unsigned ind)
{
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++)
        if (atomic_load(&slots[i].has_arena) && atomic_load(&slots[i].arena) == ind)
            return true;
    return false;
}

/* An extent of an adopted arena that is not frames: the fallback hooks made
 * it (before adoption, or when the frames could not serve). */
static bool foreign(const je_slot_t *s, const void *addr)
{
    uintptr_t a = (uintptr_t)addr;
    return s->fallback && (a < s->lo || a >= s->hi);
}

/* ---- Extent hooks (never malloc, never abort; false = success) --------- */

/* Arena metadata: private anonymous memory aligned to alignment, recorded
 * in the slot's table (a full table refuses). */
static void *metadata_map(je_slot_t *s, size_t size, size_t alignment)
{
    size_t span = size + alignment;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uintptr_t a = ((uintptr_t)p + alignment - 1) & ~(uintptr_t)(alignment - 1);
    size_t lead = a - (uintptr_t)p, trail = span - lead - size;
    if (lead)
        munmap(p, lead); /* cannot fail on a range we just mapped */
    if (trail)
        munmap((char *)a + size, trail);
    unsigned i = atomic_fetch_add_explicit(&s->meta_n, 1, memory_order_relaxed);
    if (i >= META_BLOCKS) {
        munmap((void *)a, size); /* as above */
        return NULL;
    }
    atomic_store_explicit(&s->meta[i].lo, a, memory_order_relaxed);
    atomic_store_explicit(&s->meta[i].bytes, size, memory_order_release);
    add_relaxed(&s->metadata_bytes, size);
    return (void *)a;
}

/* The index of the metadata block holding addr, or -1: addr is frames. */
static int metadata_find(je_slot_t *s, const void *addr)
{
    unsigned n = atomic_load_explicit(&s->meta_n, memory_order_relaxed);
    uintptr_t a = (uintptr_t)addr;
    for (unsigned i = 0; i < n && i < META_BLOCKS; i++) {
        uintptr_t bytes = atomic_load_explicit(&s->meta[i].bytes, memory_order_acquire);
        uintptr_t lo = atomic_load_explicit(&s->meta[i].lo, memory_order_relaxed);
        if (bytes && a >= lo && a - lo < bytes)
            return (int)i;
    }
    return -1;
}

/*
 * Take a run of frames from the slot's source. libmm's allocation path takes
 * no lock jemalloc holds and never mallocs; a caller's source promises the
 * same (it never waits for the runtime, mm.h), so the call is safe inside the
 * hook, with jemalloc's grow lock held.
 */
static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
                        bool *zero, bool *commit, unsigned arena_ind)
{
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->alloc_calls, 1);
    const mm_frame_source_t *src = atomic_load_explicit(&s->src, memory_order_acquire);
    if (!s->fallback && (new_addr != NULL || src == NULL || atomic_load(&in_child) || size == 0 ||
                         (alignment & (alignment - 1)))) {
        add_relaxed(&s->alloc_failures, 1);
        return NULL; /* cannot place at a given address: jemalloc copes */
    }
    size = (size + FRAME - 1) & ~(FRAME - 1);
    size_t align = alignment < FRAME ? FRAME : alignment;
    if (s->fallback && (new_addr != NULL || atomic_load(&in_child)))
        goto fallback; /* a forked child has no frames; placement is not ours */
    if (align >= CHUNK && *zero && *commit) {
        /* A base block (arena metadata): jemalloc asks for these 2 MiB
         * aligned, zeroed and committed; extents come PAGE-aligned. */
        void *p = metadata_map(s, size, align);
        if (!p)
            add_relaxed(&s->alloc_failures, 1);
        return p; /* fresh anonymous memory is zero */
    }
    if (size >= CHUNK && align < CHUNK)
        align = CHUNK;
    void *p = NULL;
    if (src == NULL || src->alloc(src->arg, size, align, &p) < 0 || p == NULL) {
        add_relaxed(&s->alloc_failures, 1);
        if (s->fallback)
            goto fallback;
        return NULL;
    }
    /* Frames from libmm are zero only if nobody wrote them since their last
     * punch; frames another user freed without punching are not: say so. */
    if (*zero)
        memset(p, 0, size);
    *commit = true;
    add_relaxed(&s->frame_bytes, size);
    return p;
fallback:
    /* An adopted arena's program never expects malloc to fail for want of
     * frames: its memory then comes from where it came before adoption. */
    add_relaxed(&s->fallback_allocs, 1);
    return s->fallback->alloc(s->fallback, new_addr, size, alignment, zero, commit, arena_ind);
}

/* Give a run back: punch it, then free the frames (metadata: unmap it).
 * false = done. */
static bool give_back(je_slot_t *s, void *addr, size_t size)
{
    const mm_frame_source_t *src = atomic_load_explicit(&s->src, memory_order_acquire);
    if (atomic_load(&in_child) || src == NULL)
        return true; /* no frames here: jemalloc keeps the extent */
    int meta = metadata_find(s, addr);
    if (meta >= 0) {
        if (munmap(addr, size) != 0) {
            add_relaxed(&s->hook_errors, 1);
            return true;
        }
        /* jemalloc gives base blocks back whole, at arena destruction. */
        if (atomic_load_explicit(&s->meta[meta].lo, memory_order_relaxed) == (uintptr_t)addr &&
            atomic_load_explicit(&s->meta[meta].bytes, memory_order_relaxed) == size)
            atomic_store_explicit(&s->meta[meta].bytes, 0, memory_order_release);
        atomic_fetch_sub_explicit(&s->metadata_bytes, size, memory_order_relaxed);
        return false;
    }
    int err = src->release(src->arg, addr, size);
    if (err == 0)
        err = src->free(src->arg, addr, size);
    if (err < 0) {
        add_relaxed(&s->hook_errors, 1);
        return true;
    }
    atomic_fetch_sub_explicit(&s->frame_bytes, size, memory_order_relaxed);
    return false;
}

static bool hook_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed,
                        unsigned arena_ind)
{
    (void)committed, (void)arena_ind;
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->dalloc_calls, 1);
    if (foreign(s, addr))
        return !s->fallback->dalloc ||
               s->fallback->dalloc(s->fallback, addr, size, committed, arena_ind);
    return give_back(s, addr, size);
}

static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
                         unsigned arena_ind)
{
    (void)committed, (void)arena_ind;
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->destroy_calls, 1);
    if (foreign(s, addr)) {
        if (s->fallback->destroy)
            s->fallback->destroy(s->fallback, addr, size, committed, arena_ind);
        return;
    }
    give_back(s, addr, size); /* a refusal leaves frames owned: counted as an error */
}

static bool hook_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                        unsigned arena_ind)
{
    je_slot_t *s = (je_slot_t *)h;
    if (foreign(s, addr))
        return !s->fallback->commit ||
               s->fallback->commit(s->fallback, addr, size, offset, length, arena_ind);
    /* The frames are owned and mapped: a touch faults in a zero page. In a
     * forked child an adopted arena's frames are its private copy. */
    return atomic_load(&in_child) && !s->fallback;
}

/* Owner punch: the frames stay owned, their pages go. */
static bool punch(je_slot_t *s, void *addr, size_t offset, size_t length)
{
    const mm_frame_source_t *src = atomic_load_explicit(&s->src, memory_order_acquire);
    if (atomic_load(&in_child) || src == NULL)
        return true;
    char *p = (char *)addr + offset;
    if (metadata_find(s, p) >= 0)
        return madvise(p, length, MADV_DONTNEED) != 0; /* metadata: never expected */
    if (src->release(src->arg, p, length) < 0) {
        add_relaxed(&s->hook_errors, 1);
        return true;
    }
    return false;
}

static bool hook_decommit(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                          unsigned arena_ind)
{
    (void)size, (void)arena_ind;
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->decommit_calls, 1);
    if (foreign(s, addr))
        return !s->fallback->decommit ||
               s->fallback->decommit(s->fallback, addr, size, offset, length, arena_ind);
    return punch(s, addr, offset, length);
}

static bool hook_purge(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                       unsigned arena_ind)
{
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->purge_calls, 1);
    if (foreign(s, addr))
        return !s->fallback->purge_forced ||
               s->fallback->purge_forced(s->fallback, addr, size, offset, length, arena_ind);
    return punch(s, addr, offset, length);
}

static bool hook_purge_lazy(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                            size_t length, unsigned arena_ind)
{
    je_slot_t *s = (je_slot_t *)h;
    if (foreign(s, addr)) {
        add_relaxed(&s->purge_calls, 1);
        return !s->fallback->purge_lazy ||
               s->fallback->purge_lazy(s->fallback, addr, size, offset, length, arena_ind);
    }
    return hook_purge(h, addr, size, offset, length, arena_ind);
}

static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a, size_t size_b,
                       bool committed, unsigned arena_ind)
{
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->split_calls, 1);
    if (foreign(s, addr))
        return !s->fallback->split ||
               s->fallback->split(s->fallback, addr, size, size_a, size_b, committed, arena_ind);
    return false; /* frames can be freed in any sub-range */
}

/* Merging is allowed when both sides are frames (the source frees any range
 * of frames it allocated, across allocations and chunks, as mm_free does);
 * never with metadata, whose blocks are recorded one by one (jemalloc does
 * not merge base blocks anyway). */
static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b, size_t size_b,
                       bool committed, unsigned arena_ind)
{
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->merge_calls, 1);
    bool fa = foreign(s, addr_a), fb = foreign(s, addr_b);
    if (fa != fb)
        return true; /* frames and ordinary memory never make one extent */
    if (fa)
        return !s->fallback->merge || s->fallback->merge(s->fallback, addr_a, size_a, addr_b,
                                                         size_b, committed, arena_ind);
    return metadata_find(s, addr_a) >= 0 || metadata_find(s, addr_b) >= 0;
}

/* ---- Fork --------------------------------------------------------------- */

/* Runs after jemalloc's own child handler (registered at its init, before
 * ours): its locks are usable. No region here: refuse, flush this thread's
 * tcache (it may hold mm objects) and fall back to arena 0. */
static void atfork_child(void)
{
    atomic_store(&in_child, true);
    bool any = false;
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++)
        any |= atomic_load(&slots[i].has_arena);
    if (!any)
        return;
    (void)mallctl("thread.tcache.flush", NULL, NULL, NULL, 0); /* fails only without tcache */
    unsigned cur = 0, zero_arena = 0;
    size_t sz = sizeof cur;
    if (mallctl("thread.arena", &cur, &sz, NULL, 0) == 0 && is_mm_arena(cur))
        (void)mallctl("thread.arena", NULL, NULL, &zero_arena, sizeof zero_arena);
}

static void register_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, atfork_child); /* ENOMEM only: nothing to undo */
}

/* ---- Slots, purge, reports ---------------------------------------------- */

static je_slot_t *slot_of(const mm_client_t *c)
{
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++)
        if (c && atomic_load(&slots[i].client) == c)
            return &slots[i];
    return NULL;
}

/* Claim a free slot (slots_lock held); *s is zeroed but for its lock and
 * claimed. NULL when all MM_JEMALLOC_MAX_CLIENTS are taken. */
static je_slot_t *slot_claim(void)
{
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++) {
        je_slot_t *s = &slots[i];
        if (!s->claimed) {
            pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
            memset(s, 0, sizeof *s);
            s->purge_lock = lock;
            s->claimed = true;
            return s;
        }
    }
    return NULL;
}

/* Give the slot's frames to the hooks: a copy of *src, or (src NULL) the
 * client's own source. The slot is claimed and has no arena yet. */
static void slot_attach(je_slot_t *s, const mm_frame_source_t *src, mm_client_t *c)
{
    s->source = src ? *src : mm_client_frame_source(c);
    atomic_store_explicit(&s->client, c, memory_order_release);
    atomic_store_explicit(&s->src, &s->source, memory_order_release);
}

/* Free the slot (slots_lock held; its arena, if any, is destroyed). */
static void slot_release(je_slot_t *s)
{
    atomic_store_explicit(&s->src, NULL, memory_order_release);
    atomic_store_explicit(&s->client, NULL, memory_order_release);
    s->claimed = false;
}

static void hooks_init(je_slot_t *s)
{
    s->hooks = (extent_hooks_t){
        .alloc = hook_alloc,
        .dalloc = hook_dalloc,
        .destroy = hook_destroy,
        .commit = hook_commit,
        .decommit = hook_decommit,
        .purge_lazy = hook_purge_lazy,
        .purge_forced = hook_purge,
        .split = hook_split,
        .merge = hook_merge,
    };
}

/* Keep each growth (and so the retained tail) small. */
static void limit_growth(unsigned ind)
{
    char key[64];
    size_t limit = CHUNK;
    snprintf(key, sizeof key, "arena.%u.retain_grow_limit", ind);
    (void)mallctl(key, NULL, NULL, &limit, sizeof limit); /* fails only without retain */
}

/* Create the slot's arena with the extent hooks (slots_lock held). */
static int arena_create(je_slot_t *s, unsigned *arena_index)
{
    hooks_init(s);
    extent_hooks_t *hp = &s->hooks;
    unsigned ind = 0;
    size_t sz = sizeof ind;
    int err = -mallctl("arenas.create", &ind, &sz, &hp, sizeof(extent_hooks_t *));
    if (err < 0)
        return err;
    limit_growth(ind);
    atomic_store(&s->arena, ind);
    atomic_store(&s->has_arena, true);
    *arena_index = ind;
    return 0;
}

/*
 * Destroy the slot's arena, if it has one (slots_lock held). Returns false if
 * jemalloc refused (another thread still uses the arena: its memory must
 * stay, a leak but never a fault).
 */
static bool arena_destroy(je_slot_t *s)
{
    if (!atomic_load(&s->has_arena))
        return true;
    unsigned ind = atomic_load(&s->arena), cur = 0, zero_arena = 0;
    size_t sz = sizeof cur;
    if (mallctl("thread.arena", &cur, &sz, NULL, 0) == 0 && cur == ind)
        (void)mallctl("thread.arena", NULL, NULL, &zero_arena, sizeof zero_arena);
    (void)mallctl("thread.tcache.flush", NULL, NULL, NULL, 0); /* no tcache: nothing held */
    char key[64];
    snprintf(key, sizeof key, "arena.%u.destroy", ind);
    /* Under purge_lock: a purge (or a revocation answered on libmm's thread)
     * never runs on an arena being destroyed. */
    pthread_mutex_lock(&s->purge_lock);
    bool destroyed = mallctl(key, NULL, NULL, NULL, 0) == 0;
    if (destroyed)
        atomic_store(&s->has_arena, false);
    pthread_mutex_unlock(&s->purge_lock);
    return destroyed;
}

static int arena_ctl_u64(unsigned ind, const char *name, uint64_t *out)
{
    char key[96];
    snprintf(key, sizeof key, "stats.arenas.%u.%s", ind, name);
    size_t v = 0, sz = sizeof v;
    int err = mallctl(key, &v, &sz, NULL, 0);
    *out = v;
    return -err;
}

typedef struct arena_view {
    uint64_t active, dirty, muzzy, mapped, retained;
} arena_view_t;

static int arena_view(unsigned ind, arena_view_t *v)
{
    uint64_t epoch = 1;
    size_t sz = sizeof epoch;
    int err = mallctl("epoch", &epoch, &sz, &epoch, sz);
    if (err)
        return -err;
    size_t page = 4096;
    sz = sizeof page;
    (void)mallctl("arenas.page", &page, &sz, NULL, 0); /* 4 KiB if unknown */
    uint64_t pa = 0, pd = 0, pm = 0;
    int e = arena_ctl_u64(ind, "pactive", &pa);
    e = e ? e : arena_ctl_u64(ind, "pdirty", &pd);
    e = e ? e : arena_ctl_u64(ind, "pmuzzy", &pm);
    e = e ? e : arena_ctl_u64(ind, "mapped", &v->mapped);
    e = e ? e : arena_ctl_u64(ind, "retained", &v->retained);
    v->active = pa * page;
    v->dirty = pd * page;
    v->muzzy = pm * page;
    return e;
}

static int report_slot(je_slot_t *s)
{
    mm_client_t *c = atomic_load(&s->client);
    if (!c)
        return -EINVAL;
    mm_usage_t u = {.cost_ns_per_mib = load_relaxed(&s->cost_ns_per_mib)};
    arena_view_t v = {0};
    if (atomic_load(&s->has_arena)) {
        int err = arena_view(atomic_load(&s->arena), &v);
        if (err < 0)
            return err;
    }
    u.live_bytes = v.active;
    u.garbage_bytes = v.dirty + v.muzzy;
    u.heap_bytes = v.active + u.garbage_bytes;
    return mm_report(c, &u);
}

/* Purge the slot's arena; returns the drop of the source's residency (>= 0)
 * or -errno. Reports to the host when the slot has a client. */
static int64_t purge_slot(je_slot_t *s)
{
    /* Under purge_lock, which arena_destroy() holds while it destroys the
     * arena: a revocation answered on libmm's thread never purges an arena
     * being destroyed. */
    pthread_mutex_lock(&s->purge_lock);
    const mm_frame_source_t *src = atomic_load_explicit(&s->src, memory_order_acquire);
    if (!src || !atomic_load(&s->has_arena)) {
        pthread_mutex_unlock(&s->purge_lock);
        return 0;
    }
    char key[64];
    snprintf(key, sizeof key, "arena.%u.purge", atomic_load(&s->arena));
    int64_t before = src->resident_bytes(src->arg), after = 0;
    int err = before < 0 ? (int)before : 0;
    uint64_t t0 = now_ns();
    if (err == 0)
        err = -mallctl(key, NULL, NULL, NULL, 0);
    uint64_t dt = now_ns() - t0;
    if (err == 0) {
        after = src->resident_bytes(src->arg);
        err = after < 0 ? (int)after : 0;
    }
    pthread_mutex_unlock(&s->purge_lock);
    if (err < 0)
        return err;
    uint64_t drop = before > after ? (uint64_t)(before - after) : 0;
    atomic_store_explicit(&s->last_purge_ns, dt, memory_order_relaxed);
    if (drop >= (1u << 20))
        atomic_store_explicit(&s->cost_ns_per_mib, dt / (drop >> 20), memory_order_relaxed);
    add_relaxed(&s->purged_bytes, drop);
    if (atomic_load(&s->client))
        (void)report_slot(s); /* a report the host missed is only stale usage */
    return (int64_t)drop;
}

static uint64_t on_revoke(mm_client_t *c, const mm_revoke_request_t *req, void *arg)
{
    (void)c;
    je_slot_t *s = arg;
    int64_t drop = purge_slot(s);
    uint64_t given = drop > 0 ? (uint64_t)drop : 0; /* less than asked: all this arena had */
    atomic_store_explicit(&s->last_asked, req->bytes, memory_order_relaxed);
    atomic_store_explicit(&s->last_given, given, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->revocations, 1, memory_order_release);
    return given;
}

/* ---- Public API ---------------------------------------------------------- */

MM_JE_EXPORT int mm_jemalloc_open(const char *socket_path, const mm_client_opts_t *opts,
                                  mm_client_t **out)
{
    if (!out || (opts && opts->on_revoke))
        return -EINVAL;
    if (atomic_load(&in_child))
        return -ECHILD;
    mm_client_opts_t o;
    if (opts)
        o = *opts;
    else
        mm_client_opts_init(&o);
    /* The claimed slot has no source until the client exists: a revocation
     * that comes first purges nothing. */
    pthread_mutex_lock(&slots_lock);
    je_slot_t *s = slot_claim();
    pthread_mutex_unlock(&slots_lock);
    if (!s)
        return -EMFILE;

    o.flags |= MM_CLIENT_THREAD;
    o.on_revoke = on_revoke;
    o.revoke_arg = s;
    mm_client_t *c = NULL;
    int err = mm_client_open(socket_path, &o, &c);
    if (err < 0) {
        pthread_mutex_lock(&slots_lock);
        slot_release(s);
        pthread_mutex_unlock(&slots_lock);
        return err;
    }
    slot_attach(s, NULL, c);
    *out = c;
    return 0;
}

MM_JE_EXPORT int mm_jemalloc_arena(mm_client_t *client, unsigned *arena_index)
{
    if (!client || !arena_index)
        return -EINVAL;
    if (atomic_load(&in_child))
        return -ECHILD;
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&slots_lock);
    int err = 0;
    je_slot_t *s = slot_of(client);
    if (!s) { /* a client opened with mm_client_open(): no revocation handler */
        s = slot_claim();
        if (!s) {
            err = -EMFILE;
            goto out;
        }
        slot_attach(s, NULL, client);
    }
    if (atomic_load(&s->has_arena)) {
        *arena_index = atomic_load(&s->arena);
        goto out;
    }
    err = arena_create(s, arena_index);
out:
    pthread_mutex_unlock(&slots_lock);
    return err;
}

MM_JE_EXPORT int mm_jemalloc_adopt(mm_client_t *client, unsigned arena_index)
{
    if (!client)
        return -EINVAL;
    if (atomic_load(&in_child))
        return -ECHILD;
    pthread_once(&atfork_once, register_atfork);
    unsigned narenas = 0;
    size_t sz = sizeof narenas;
    int err = -mallctl("opt.narenas", &narenas, &sz, NULL, 0);
    if (err < 0)
        return err;
    if (arena_index >= narenas)
        return -EINVAL; /* a manual arena: mm_jemalloc_arena() makes those */
    pthread_mutex_lock(&slots_lock);
    je_slot_t *s = slot_of(client);
    if (!s || atomic_load(&s->has_arena)) {
        err = s ? -EBUSY : -EINVAL;
        goto out;
    }
    char key[64];
    snprintf(key, sizeof key, "arena.%u.extent_hooks", arena_index);
    extent_hooks_t *old = NULL;
    sz = sizeof old;
    err = -mallctl(key, &old, &sz, NULL, 0);
    if (err < 0)
        goto out;
    if (!old || !old->alloc) {
        err = -ENOTSUP; /* nothing to hand foreign extents to */
        goto out;
    }
    s->fallback = old;
    s->lo = (uintptr_t)mm_client_base(client);
    s->hi = s->lo + mm_client_region_bytes(client);
    hooks_init(s);
    extent_hooks_t *hp = &s->hooks;
    err = -mallctl(key, NULL, NULL, &hp, sizeof hp);
    if (err < 0) {
        s->fallback = NULL;
        goto out;
    }
    limit_growth(arena_index);
    atomic_store(&s->arena, arena_index);
    atomic_store(&s->has_arena, true);
out:
    pthread_mutex_unlock(&slots_lock);
    return err;
}

MM_JE_EXPORT int mm_jemalloc_arena_source(const mm_frame_source_t *source, unsigned *arena_index)
{
    if (!source || !arena_index || !source->alloc || !source->free || !source->release ||
        !source->resident_bytes)
        return -EINVAL;
    if (atomic_load(&in_child))
        return -ECHILD;
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&slots_lock);
    int err = -EMFILE;
    je_slot_t *s = slot_claim();
    if (s) {
        slot_attach(s, source, NULL);
        err = arena_create(s, arena_index);
        if (err < 0)
            slot_release(s); /* arena_new took only metadata, and gave it back */
    }
    pthread_mutex_unlock(&slots_lock);
    return err;
}

MM_JE_EXPORT int mm_jemalloc_set_default(unsigned arena_index, int process_wide)
{
    if (atomic_load(&in_child))
        return -ECHILD;
    if (!is_mm_arena(arena_index))
        return -EINVAL;
    if (process_wide)
        return -ENOTSUP;
    int err = mallctl("thread.arena", NULL, NULL, &arena_index, sizeof arena_index);
    if (err)
        return -err;
    /* The tcache's bins are not per arena: flush what it cached from the old
     * arena so that malloc really comes from the new one. */
    (void)mallctl("thread.tcache.flush", NULL, NULL, NULL, 0); /* fails only without tcache */
    return 0;
}

MM_JE_EXPORT int64_t mm_jemalloc_purge(void)
{
    if (atomic_load(&in_child))
        return -ECHILD;
    int64_t total = 0;
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++) {
        je_slot_t *s = &slots[i];
        if (!atomic_load(&s->has_arena))
            continue;
        int64_t drop = purge_slot(s);
        if (drop < 0)
            return drop;
        total += drop;
    }
    return total;
}

MM_JE_EXPORT int mm_jemalloc_stats(mm_jemalloc_stats_t *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if (atomic_load(&in_child))
        return -ECHILD;
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++) {
        je_slot_t *s = &slots[i];
        if (!atomic_load(&s->has_arena))
            continue;
        arena_view_t v = {0};
        int err = arena_view(atomic_load(&s->arena), &v);
        if (err < 0)
            return err;
        out->active_bytes += v.active;
        out->dirty_bytes += v.dirty;
        out->muzzy_bytes += v.muzzy;
        out->mapped_bytes += v.mapped;
        out->retained_bytes += v.retained;
        out->frame_bytes += load_relaxed(&s->frame_bytes);
        out->metadata_bytes += load_relaxed(&s->metadata_bytes);
        out->alloc_calls += load_relaxed(&s->alloc_calls);
        out->alloc_failures += load_relaxed(&s->alloc_failures);
        out->dalloc_calls += load_relaxed(&s->dalloc_calls);
        out->destroy_calls += load_relaxed(&s->destroy_calls);
        out->decommit_calls += load_relaxed(&s->decommit_calls);
        out->purge_calls += load_relaxed(&s->purge_calls);
        out->split_calls += load_relaxed(&s->split_calls);
        out->merge_calls += load_relaxed(&s->merge_calls);
        out->hook_errors += load_relaxed(&s->hook_errors);
        out->revocations += load_relaxed(&s->revocations);
        out->purged_bytes += load_relaxed(&s->purged_bytes);
        uint64_t last = load_relaxed(&s->last_purge_ns);
        if (last > out->last_purge_ns)
            out->last_purge_ns = last;
        out->last_asked_bytes += load_relaxed(&s->last_asked);
        out->last_given_bytes += load_relaxed(&s->last_given);
        out->fallback_allocs += load_relaxed(&s->fallback_allocs);
    }
    return 0;
}

MM_JE_EXPORT int mm_jemalloc_report(mm_client_t *client)
{
    if (atomic_load(&in_child))
        return -ECHILD;
    je_slot_t *s = slot_of(client);
    return s ? report_slot(s) : -EINVAL;
}

MM_JE_EXPORT void mm_jemalloc_arena_destroy(unsigned arena_index)
{
    if (atomic_load(&in_child))
        return;
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++) {
        je_slot_t *s = &slots[i];
        if (s->claimed && atomic_load(&s->client) == NULL && atomic_load(&s->has_arena) &&
            atomic_load(&s->arena) == arena_index) {
            /* A refusal keeps the slot: its frames stay the arena's. */
            if (arena_destroy(s))
                slot_release(s);
            break;
        }
    }
    pthread_mutex_unlock(&slots_lock);
}

MM_JE_EXPORT void mm_jemalloc_close(mm_client_t *client)
{
    if (!client || atomic_load(&in_child))
        return;
    pthread_mutex_lock(&slots_lock);
    je_slot_t *s = slot_of(client);
    bool destroyed = !s || arena_destroy(s);
    if (s && destroyed)
        slot_release(s);
    pthread_mutex_unlock(&slots_lock);
    if (destroyed)
        mm_client_close(client);
    /* Another thread still uses the arena: its memory must stay mapped, so the
     * client stays open (a leak, never a fault). */
}
