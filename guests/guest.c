/*
 * The guest kernel: registration with the daemon, the page allocator and its
 * watermark, reclaim (page cache first, then swap), and the mm driver's
 * answer to the host (see guest.h).
 *
 * Under the mm driver the watermark is the host's target, read from the
 * shared control block: the guest keeps the frames it holds under it by
 * itself, and frees punch their frames (the host wants free memory back,
 * and a freed frame that stays resident would count against the guest).
 * Wholly free chunks and discardable cache chunks the host takes without a
 * word; a revocation makes the guest drop cache, then ask its runtimes to
 * shrink, and swap only what is still over its target after that.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "platform.h"

/* Allocation attempts, each after a reclaim, before the guest gives up. */
#define ALLOC_TRIES 8

static const char *const driver_names[] = {
    [MM_GUEST_DRIVER_MM] = "mm",
    [MM_GUEST_DRIVER_BALLOON] = "balloon",
    [MM_GUEST_DRIVER_FPR] = "fpr",
    [MM_GUEST_DRIVER_VIRTIO_MEM] = "virtio-mem",
};

int mm__guest_driver_parse(const char *text, mm_guest_driver_t *out)
{
    for (size_t i = 0; text && i < sizeof driver_names / sizeof driver_names[0]; i++) {
        if (strcmp(text, driver_names[i]) == 0) {
            *out = (mm_guest_driver_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *mm__guest_driver_name(mm_guest_driver_t d)
{
    return (size_t)d < sizeof driver_names / sizeof driver_names[0] ? driver_names[d] : "?";
}

mm_client_t *mm__guest_client(mm_guest_t *g)
{
    return g->client;
}

/* The host's target; 0 before the daemon published one reads as all RAM. */
static uint64_t target_of(mm_guest_t *g)
{
    mm_client_stats_t st;
    if (mm_client_stats(g->client, &st) < 0 || st.target_bytes == 0)
        return g->opts.ram_bytes;
    return st.target_bytes < g->opts.ram_bytes ? st.target_bytes : g->opts.ram_bytes;
}

uint64_t mm__guest_reclaim(mm_guest_t *g, uint64_t bytes)
{
    pthread_mutex_lock(&g->reclaim_lock);
    uint64_t freed = mm__cache_drop(g, bytes);
    if (freed < bytes)
        freed += mm__gv_swap_out(g, bytes - freed);
    pthread_mutex_unlock(&g->reclaim_lock);
    return freed;
}

int mm__guest_frames_alloc(mm_guest_t *g, uint64_t bytes, uint64_t align, void **out)
{
    /* Growing is the host's call: it grants or refuses installs, and asks
     * for memory back with a revocation (on_revoke). The target itself is
     * no watermark here: while capacity is ample it follows the guest's
     * demand a tick behind, and reclaiming to it would only shrink the guest
     * for nothing. */
    for (int attempt = 0; attempt < ALLOC_TRIES; attempt++) {
        int err = mm_alloc(g->client, bytes, align, out);
        if (err == 0) {
            guest_count(&g->used_bytes, (int64_t)bytes);
            return 0;
        }
        if (err != -ENOMEM)
            return err;
        /* Nothing left to reclaim: the balloon deflates on OOM, once. */
        if (mm__guest_reclaim(g, bytes) == 0 && mm__balloon_oom(g) == 0)
            return err;
    }
    return -ENOMEM;
}

void mm__guest_frames_free(mm_guest_t *g, void *addr, uint64_t bytes)
{
    /* The frames were ours: both calls fail only on a bug of ours, which
     * the counters would then show. Under a baseline driver a freed frame
     * stays resident, as a VM's freed memory does on its host until a
     * driver gives it back. */
    if (g->opts.driver == MM_GUEST_DRIVER_MM)
        (void)mm_release(g->client, addr, bytes);
    (void)mm_free(g->client, addr, bytes);
    guest_count(&g->used_bytes, -(int64_t)bytes);
    mm__fpr_notify(g);
}

void mm__guest_frames_free_resident(mm_guest_t *g, void *addr, uint64_t bytes)
{
    (void)mm_free(g->client, addr, bytes); /* fails only on a bug of ours, as above */
    guest_count(&g->used_bytes, -(int64_t)bytes);
    mm__fpr_notify(g);
}

int mm__guest_add_shrinker(mm_guest_t *g, mm_guest_shrink_fn fn, void *arg)
{
    if (!fn)
        return -EINVAL;
    pthread_mutex_lock(&g->lock);
    int err = g->shrinker_count == MAX_SHRINKERS ? -ENOSPC : 0;
    if (!err) {
        g->shrinkers[g->shrinker_count].fn = fn;
        g->shrinkers[g->shrinker_count].arg = arg;
        g->shrinker_count++;
    }
    pthread_mutex_unlock(&g->lock);
    return err;
}

/* Resident bytes of the region above the host's target, by the kernel's
 * count (cache chunks the host took count as soon as it took them). */
static uint64_t over_target(mm_guest_t *g)
{
    int64_t resident = mm__resident_bytes(g->region_fd);
    uint64_t target = target_of(g);
    return resident > 0 && (uint64_t)resident > target ? (uint64_t)resident - target : 0;
}

/* Bring the guest down to its target the mm driver's way: cache first, then
 * the runtimes' garbage, and swap only for what is still over after that.
 * Each step looks at the kernel's count again, so what the host already
 * took by itself is never swapped for. Returns the bytes freed. */
static uint64_t shrink(mm_guest_t *g)
{
    uint64_t freed = 0, need = over_target(g);
    if (need) {
        pthread_mutex_lock(&g->reclaim_lock);
        freed += mm__cache_drop(g, need);
        pthread_mutex_unlock(&g->reclaim_lock);
    }
    pthread_mutex_lock(&g->lock);
    int n = g->shrinker_count;
    pthread_mutex_unlock(&g->lock);
    for (int i = 0; i < n && (need = over_target(g)) > 0; i++) {
        uint64_t gave = g->shrinkers[i].fn(g->shrinkers[i].arg, need);
        guest_count(&g->shrunk_bytes, (int64_t)gave);
        freed += gave;
    }
    if ((need = over_target(g)) > 0)
        freed += mm__guest_reclaim(g, need);
    return freed;
}

uint64_t mm__guest_shrink_to_target(mm_guest_t *g)
{
    return shrink(g);
}

static uint64_t on_revoke(mm_client_t *client, const mm_revoke_request_t *req, void *arg)
{
    (void)client, (void)req; /* the target says how far to go, not a stale count */
    mm_guest_t *g = arg;
    if (!atomic_load_explicit(&g->ready, memory_order_acquire))
        return 0;
    guest_count(&g->revocations, 1);
    int64_t before = mm__resident_bytes(g->region_fd);
    (void)shrink(g);
    int64_t after = mm__resident_bytes(g->region_fd);
    return before > after ? (uint64_t)(before - after) : 0;
}

static void guest_free(mm_guest_t *g)
{
    mm__driver_stop(g); /* before the parts its thread uses go */
    if (g->pager)
        mm__pager_destroy(g->pager); /* no faults handled from here on */
    mm__cache_fini(g);
    mm__gv_fini(g);
    if (g->swap)
        mm__swap_close(g->swap, true);
    if (g->client)
        mm_client_close(g->client);
    if (g->uffd >= 0)
        close(g->uffd);
    pthread_mutex_destroy(&g->reclaim_lock);
    pthread_mutex_destroy(&g->lock);
    mm__driver_fini(g);
    free(g);
}

int mm__guest_open(const mm_guest_opts_t *opts, mm_guest_t **out)
{
    if (!opts || !out || opts->ram_bytes == 0 || (unsigned)opts->driver >= MM_DRIVER_COUNT)
        return -EINVAL;
    mm_guest_t *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->opts = *opts;
    g->opts.ram_bytes = (opts->ram_bytes + MM_CHUNK_SIZE - 1) & ~(uint64_t)(MM_CHUNK_SIZE - 1);
    g->uffd = -1;
    g->cache.disk_fd = -1;
    pthread_mutex_init(&g->lock, NULL);
    pthread_mutex_init(&g->reclaim_lock, NULL);
    mm__driver_init(g);

    int err = g->uffd = mm__uffd_open();
    if (err >= 0) {
        char name[MM_NAME_MAX];
        if (!opts->name)
            snprintf(name, sizeof name, "guest-%d", (int)getpid());
        mm_client_opts_t co;
        mm_client_opts_init(&co);
        co.name = opts->name ? opts->name : name;
        co.max_bytes = g->opts.ram_bytes;
        co.kind = MM_KIND_GUEST;
        co.flags = MM_CLIENT_THREAD | MM_CLIENT_NO_POPULATE | MM_CLIENT_NO_HOST_PAGING;
        co.on_revoke = on_revoke;
        co.revoke_arg = g;
        co.driver = (uint32_t)opts->driver;
        err = mm_client_open(opts->socket, &co, &g->client);
    }
    if (err >= 0) {
        g->base = mm_client_base(g->client);
        g->region_fd = mm_client_region_fd(g->client);
    }
    uint64_t swap_bytes = opts->swap_bytes ? opts->swap_bytes : g->opts.ram_bytes;
    uint64_t virtual_bytes = opts->virtual_bytes;
    if (!virtual_bytes)
        virtual_bytes = g->opts.ram_bytes + (opts->swap_path ? swap_bytes : 0);
    if (virtual_bytes > (uint64_t)MM_GUEST_MAX_PAGES * MM_GUEST_PAGE_BYTES)
        virtual_bytes = (uint64_t)MM_GUEST_MAX_PAGES * MM_GUEST_PAGE_BYTES;
    if (err >= 0 && opts->swap_path)
        err = mm__swap_open(opts->swap_path, swap_bytes / MM_SWAP_PAGE_BYTES,
                            (virtual_bytes / MM_GUEST_PAGE_BYTES + 1) * MM_GUEST_PAGE_FRAMES,
                            &g->swap);
    if (err >= 0)
        err = mm__pager_create(g->uffd, g->swap, &g->pager);
    if (err >= 0)
        err = mm__gv_init(g, virtual_bytes);
    if (err >= 0)
        err = mm__cache_init(g);
    if (err >= 0)
        err = mm__pager_start(g->pager);
    if (err >= 0)
        err = mm__driver_start(g);
    if (err < 0) {
        guest_free(g);
        return err;
    }
    atomic_store_explicit(&g->ready, true, memory_order_release);
    *out = g;
    return 0;
}

void mm__guest_close(mm_guest_t *g)
{
    if (g)
        guest_free(g);
}

uint64_t mm__guest_disk_blocks(mm_guest_t *g)
{
    return g->cache.blocks;
}

void mm__guest_stats(mm_guest_t *g, mm_guest_stats_t *out)
{
    /* Forget cache chunks the host took since the last look (drops none). */
    (void)mm__cache_drop(g, 0);
    memset(out, 0, sizeof *out);
    out->ram_bytes = g->opts.ram_bytes;
    out->target_bytes = target_of(g);
    int64_t resident = mm__resident_bytes(g->region_fd);
    out->resident_bytes = resident > 0 ? (uint64_t)resident : 0;
    out->used_bytes = guest_read(&g->used_bytes);
    out->anon_bytes = guest_read(&g->anon_bytes);
    out->cache_bytes = guest_read(&g->cache_bytes);
    out->virtual_bytes = guest_read(&g->virtual_bytes);
    out->swapped_bytes = guest_read(&g->swapped_bytes);
    out->swap_out_bytes = guest_read(&g->swap_out_bytes);
    out->swap_in_bytes = guest_read(&g->swap_in_bytes);
    out->cache_dropped_bytes = guest_read(&g->cache_dropped_bytes);
    out->cache_lost_bytes = guest_read(&g->cache_lost_bytes);
    out->shrunk_bytes = guest_read(&g->shrunk_bytes);
    out->zero_fills = guest_read(&g->zero_fills);
    out->moves = guest_read(&g->moves);
    out->revocations = guest_read(&g->revocations);
    out->cache_hits = guest_read(&g->cache_hits);
    out->cache_misses = guest_read(&g->cache_misses);
    out->swap_errors = guest_read(&g->swap_errors);
    out->first_swap_ns = guest_read(&g->first_swap_ns);
    out->last_cache_drop_ns = guest_read(&g->last_cache_drop_ns);
    out->driver = g->opts.driver;
    out->balloon_bytes = guest_read(&g->balloon_bytes);
    out->oom_deflates = guest_read(&g->oom_deflates);
    out->reported_bytes = guest_read(&g->reported_bytes);
    out->plugged_bytes = guest_read(&g->plugged_bytes);
    out->moved_frames = guest_read(&g->moved_frames);
    out->driver_requests = guest_read(&g->driver_requests);
    out->driver_units = guest_read(&g->driver_units);
    out->driver_alloc_ns = guest_read(&g->driver_alloc_ns);
    out->driver_msg_ns = guest_read(&g->driver_msg_ns);
}

uint64_t mm__guest_free_unneeded(mm_guest_t *g)
{
    pthread_mutex_lock(&g->reclaim_lock);
    uint64_t freed = mm__cache_drop(g, UINT64_MAX);
    pthread_mutex_unlock(&g->reclaim_lock);
    pthread_mutex_lock(&g->lock);
    int n = g->shrinker_count;
    pthread_mutex_unlock(&g->lock);
    for (int i = 0; i < n; i++) {
        uint64_t gave = g->shrinkers[i].fn(g->shrinkers[i].arg, UINT64_MAX / 2);
        guest_count(&g->shrunk_bytes, (int64_t)gave);
        freed += gave;
    }
    return freed;
}
