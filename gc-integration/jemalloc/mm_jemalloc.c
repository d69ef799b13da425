/*
 * jemalloc arenas backed by mm frames (see mm/jemalloc.h). One slot per
 * client holds the extent hooks jemalloc calls (first member, so a hooks
 * pointer is its slot), the client, the arena index and counters. Slots are
 * static: the hooks never allocate and never call malloc, and jemalloc keeps
 * the hooks pointer for the arena's lifetime.
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

typedef struct je_slot {
    extent_hooks_t hooks;          /* first: jemalloc hands this pointer back */
    _Atomic(mm_client_t *) client; /* NULL: slot free */
    uintptr_t base, size;          /* the client's region */
    _Atomic unsigned arena;        /* valid when has_arena */
    _Atomic bool has_arena;
    _Atomic uint64_t frame_bytes, metadata_bytes;
    _Atomic uint64_t alloc_calls, alloc_failures, dalloc_calls, destroy_calls;
    _Atomic uint64_t decommit_calls, purge_calls, split_calls, merge_calls, hook_errors;
    _Atomic uint64_t revocations, purged_bytes, last_purge_ns, cost_ns_per_mib;
    _Atomic uint64_t last_asked, last_given;
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

static bool in_region(const je_slot_t *s, const void *addr, size_t size)
{
    uintptr_t a = (uintptr_t)addr;
    return a >= s->base && a - s->base < s->size && size <= s->size - (a - s->base);
}

static bool is_mm_arena(unsigned ind)
{
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++)
        if (atomic_load(&slots[i].has_arena) && atomic_load(&slots[i].arena) == ind)
            return true;
    return false;
}

/* ---- Extent hooks (never malloc, never abort; false = success) --------- */

/* Arena metadata: private anonymous memory aligned to alignment. */
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
    add_relaxed(&s->metadata_bytes, size);
    return (void *)a;
}

/*
 * Take a run of frames. libmm's multi-chunk path calls malloc; if this
 * thread's arena is an mm arena, that malloc could come back into this arena
 * while jemalloc holds its grow lock, so such runs are taken with the thread
 * switched to arena 0 for the call.
 */
static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
                        bool *zero, bool *commit, unsigned arena_ind)
{
    (void)arena_ind;
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->alloc_calls, 1);
    mm_client_t *c = atomic_load_explicit(&s->client, memory_order_acquire);
    if (new_addr != NULL || c == NULL || atomic_load(&in_child) || size == 0 ||
        (alignment & (alignment - 1))) {
        add_relaxed(&s->alloc_failures, 1);
        return NULL; /* cannot place at a given address: jemalloc copes */
    }
    size = (size + FRAME - 1) & ~(FRAME - 1);
    size_t align = alignment < FRAME ? FRAME : alignment;
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
    /* libmm's allocation path takes no lock jemalloc holds and never
     * mallocs, so it is safe inside the hook. */
    if (mm_alloc(c, size, align, &p) < 0) {
        add_relaxed(&s->alloc_failures, 1);
        return NULL;
    }
    /* Frames from libmm are zero only if nobody wrote them since their last
     * punch; frames another user freed without punching are not: say so. */
    if (*zero)
        memset(p, 0, size);
    *commit = true;
    add_relaxed(&s->frame_bytes, size);
    return p;
}

/* Give a run back: punch it, then free the frames. false = done. */
static bool give_back(je_slot_t *s, void *addr, size_t size)
{
    mm_client_t *c = atomic_load_explicit(&s->client, memory_order_acquire);
    if (atomic_load(&in_child) || c == NULL)
        return true; /* no region here: jemalloc keeps the extent */
    if (!in_region(s, addr, size)) {
        if (munmap(addr, size) != 0) {
            add_relaxed(&s->hook_errors, 1);
            return true;
        }
        atomic_fetch_sub_explicit(&s->metadata_bytes, size, memory_order_relaxed);
        return false;
    }
    int err = mm_release(c, addr, size);
    if (err == 0)
        err = mm_free(c, addr, size);
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
    return give_back(s, addr, size);
}

static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
                         unsigned arena_ind)
{
    (void)committed, (void)arena_ind;
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->destroy_calls, 1);
    give_back(s, addr, size); /* a refusal leaves frames owned: counted as an error */
}

static bool hook_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                        unsigned arena_ind)
{
    (void)h, (void)addr, (void)size, (void)offset, (void)length, (void)arena_ind;
    /* The frames are owned and mapped: a touch faults in a zero page. */
    return atomic_load(&in_child);
}

/* Owner punch: the frames stay owned, their pages go. */
static bool punch(je_slot_t *s, void *addr, size_t offset, size_t length)
{
    mm_client_t *c = atomic_load_explicit(&s->client, memory_order_acquire);
    if (atomic_load(&in_child) || c == NULL)
        return true;
    char *p = (char *)addr + offset;
    if (!in_region(s, p, length))
        return madvise(p, length, MADV_DONTNEED) != 0; /* metadata: never expected */
    if (mm_release(c, p, length) < 0) {
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
    return punch(s, addr, offset, length);
}

static bool hook_purge(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                       unsigned arena_ind)
{
    (void)size, (void)arena_ind;
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->purge_calls, 1);
    return punch(s, addr, offset, length);
}

static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a, size_t size_b,
                       bool committed, unsigned arena_ind)
{
    (void)addr, (void)size, (void)size_a, (void)size_b, (void)committed, (void)arena_ind;
    add_relaxed(&((je_slot_t *)h)->split_calls, 1);
    return false; /* frames can be freed in any sub-range */
}

/* Merging is allowed when both sides are frames (mm_free takes any range of
 * allocated frames, across chunks) or both metadata; never a mix. */
static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b, size_t size_b,
                       bool committed, unsigned arena_ind)
{
    (void)committed, (void)arena_ind;
    je_slot_t *s = (je_slot_t *)h;
    add_relaxed(&s->merge_calls, 1);
    return in_region(s, addr_a, size_a) != in_region(s, addr_b, size_b);
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

/* Claim a free slot (slots_lock held); *s is zeroed but for its lock. */
static je_slot_t *slot_claim(void)
{
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++) {
        je_slot_t *s = &slots[i];
        if (atomic_load(&s->client) == NULL && !atomic_load(&s->has_arena)) {
            pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
            memset(s, 0, sizeof *s);
            s->purge_lock = lock;
            return s;
        }
    }
    return NULL;
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

/* Purge the slot's arena; returns the residency drop (>= 0) or -errno. */
static int64_t purge_slot(je_slot_t *s)
{
    mm_client_t *c = atomic_load(&s->client);
    if (!c)
        return 0;
    /* Under purge_lock, which mm_jemalloc_close() holds while it destroys the
     * arena: a revocation answered on libmm's thread never purges an arena
     * being destroyed. */
    pthread_mutex_lock(&s->purge_lock);
    if (!atomic_load(&s->has_arena)) {
        pthread_mutex_unlock(&s->purge_lock);
        return 0;
    }
    char key[64];
    snprintf(key, sizeof key, "arena.%u.purge", atomic_load(&s->arena));
    mm_client_stats_t before, after;
    int err = mm_client_stats(c, &before);
    uint64_t t0 = now_ns();
    if (err == 0)
        err = -mallctl(key, NULL, NULL, NULL, 0);
    uint64_t dt = now_ns() - t0;
    if (err == 0)
        err = mm_client_stats(c, &after);
    pthread_mutex_unlock(&s->purge_lock);
    if (err < 0)
        return err;
    uint64_t drop = before.resident_bytes > after.resident_bytes
                        ? before.resident_bytes - after.resident_bytes
                        : 0;
    atomic_store_explicit(&s->last_purge_ns, dt, memory_order_relaxed);
    if (drop >= (1u << 20))
        atomic_store_explicit(&s->cost_ns_per_mib, dt / (drop >> 20), memory_order_relaxed);
    add_relaxed(&s->purged_bytes, drop);
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
    pthread_mutex_lock(&slots_lock);
    je_slot_t *s = slot_claim();
    if (!s) {
        pthread_mutex_unlock(&slots_lock);
        return -EMFILE;
    }
    /* Hold the slot with a placeholder until the client exists. */
    atomic_store(&s->client, (mm_client_t *)s);
    pthread_mutex_unlock(&slots_lock);

    o.flags |= MM_CLIENT_THREAD;
    o.on_revoke = on_revoke;
    o.revoke_arg = s;
    mm_client_t *c = NULL;
    int err = mm_client_open(socket_path, &o, &c);
    if (err < 0) {
        atomic_store(&s->client, NULL);
        return err;
    }
    s->base = (uintptr_t)mm_client_base(c);
    s->size = mm_client_region_bytes(c);
    atomic_store_explicit(&s->client, c, memory_order_release);
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
        s->base = (uintptr_t)mm_client_base(client);
        s->size = mm_client_region_bytes(client);
        atomic_store_explicit(&s->client, client, memory_order_release);
    }
    if (atomic_load(&s->has_arena)) {
        *arena_index = atomic_load(&s->arena);
        goto out;
    }
    s->hooks = (extent_hooks_t){
        .alloc = hook_alloc,
        .dalloc = hook_dalloc,
        .destroy = hook_destroy,
        .commit = hook_commit,
        .decommit = hook_decommit,
        .purge_lazy = hook_purge,
        .purge_forced = hook_purge,
        .split = hook_split,
        .merge = hook_merge,
    };
    extent_hooks_t *hp = &s->hooks;
    unsigned ind = 0;
    size_t sz = sizeof ind;
    err = -mallctl("arenas.create", &ind, &sz, &hp, sizeof(extent_hooks_t *));
    if (err < 0)
        goto out;
    /* Keep each growth (and so the retained tail) small. */
    char key[64];
    size_t limit = CHUNK;
    snprintf(key, sizeof key, "arena.%u.retain_grow_limit", ind);
    (void)mallctl(key, NULL, NULL, &limit, sizeof limit); /* fails only without retain */
    atomic_store(&s->arena, ind);
    atomic_store(&s->has_arena, true);
    *arena_index = ind;
out:
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
        if (!atomic_load(&s->has_arena) || atomic_load(&s->client) == (mm_client_t *)s)
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

MM_JE_EXPORT void mm_jemalloc_close(mm_client_t *client)
{
    if (!client || atomic_load(&in_child))
        return;
    pthread_mutex_lock(&slots_lock);
    je_slot_t *s = slot_of(client);
    bool destroyed = true;
    if (s && atomic_load(&s->has_arena)) {
        unsigned ind = atomic_load(&s->arena), cur = 0, zero_arena = 0;
        size_t sz = sizeof cur;
        if (mallctl("thread.arena", &cur, &sz, NULL, 0) == 0 && cur == ind)
            (void)mallctl("thread.arena", NULL, NULL, &zero_arena, sizeof zero_arena);
        (void)mallctl("thread.tcache.flush", NULL, NULL, NULL, 0); /* no tcache: nothing held */
        char key[64];
        snprintf(key, sizeof key, "arena.%u.destroy", ind);
        pthread_mutex_lock(&s->purge_lock);
        destroyed = mallctl(key, NULL, NULL, NULL, 0) == 0;
        if (destroyed)
            atomic_store(&s->has_arena, false);
        pthread_mutex_unlock(&s->purge_lock);
    }
    if (s && destroyed)
        atomic_store_explicit(&s->client, NULL, memory_order_release);
    pthread_mutex_unlock(&slots_lock);
    if (destroyed)
        mm_client_close(client);
    /* Another thread still uses the arena: its memory must stay mapped, so the
     * client stays open (a leak, never a fault). */
}
