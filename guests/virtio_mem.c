/*
 * virtio-mem: Linux's drivers/virtio/virtio_mem.c (sub-block mode) in the
 * guest model, against QEMU's virtio-mem device in mmsrv (baselines.c).
 *
 * The whole RAM is the device's memory, in 2 MiB blocks (the device block
 * size, which equals x86's pageblock: one frame-allocator chunk), all
 * plugged at start. The host's target is the requested size. While more is
 * plugged than requested, the driver unplugs one block at a time, highest
 * first: it isolates the block (takes its free frames off the allocator, as
 * alloc_contig_range() isolates the range), migrates the used frames out
 * through the guest-virtual layer (a real copy under write protection, as
 * page migration copies), drops clean page-cache pages in it (as
 * alloc_contig_range() reclaims clean file pages instead of migrating them),
 * and when it owns every frame sends an unplug request; the host discards
 * the block. A block it cannot free is left plugged and the next one tried;
 * when none can be had the driver retries after VIRTIO_MEM_RETRY_TIMER_MIN_MS
 * (50 s), doubling up to 300 s. Plug works the other way: request, then the
 * block's frames go back to the allocator. Migration takes its new frames
 * like any allocation (reclaiming when the guest is short, as Linux's
 * migration target allocation may); a block whose frames cannot all be
 * had is given up, as alloc_contig_range() gives up.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "internal.h"
#include "platform.h"
#include "wire.h"

#define RETRY_MIN_NS   50000000000ll  /* VIRTIO_MEM_RETRY_TIMER_MIN_MS */
#define RETRY_MAX_NS   300000000000ll /* VIRTIO_MEM_RETRY_TIMER_MAX_MS */
#define ISOLATE_PASSES 4              /* migrate, then look again */

static bool unplugged(const mm_guest_t *g, uint32_t chunk)
{
    return (g->drv.unplugged[chunk / 64] >> (chunk % 64)) & 1;
}

static void set_unplugged(mm_guest_t *g, uint32_t chunk, bool on)
{
    if (on)
        g->drv.unplugged[chunk / 64] |= 1ull << (chunk % 64);
    else
        g->drv.unplugged[chunk / 64] &= ~(1ull << (chunk % 64));
    g->drv.unplugged_blocks += on ? 1 : (uint64_t)-1;
    guest_count(&g->plugged_bytes, on ? -(int64_t)MM_CHUNK_SIZE : (int64_t)MM_CHUNK_SIZE);
}

static int vmem_init(mm_guest_t *g)
{
    uint32_t chunks = (uint32_t)(g->opts.ram_bytes / MM_CHUNK_SIZE);
    g->drv.unplugged = calloc((chunks + 63) / 64, sizeof *g->drv.unplugged);
    atomic_store(&g->plugged_bytes, g->opts.ram_bytes);
    g->drv.retry_ns = RETRY_MIN_NS;
    return g->drv.unplugged ? 0 : -ENOMEM;
}

static void vmem_fini(mm_guest_t *g)
{
    free(g->drv.unplugged);
    g->drv.unplugged = NULL;
}

/* Migrate the guest-virtual pages on chunk's frames elsewhere and drop the
 * page-cache chunk there, if any. */
static void migrate_out(mm_guest_t *g, uint32_t chunk)
{
    uint32_t first = chunk * MM_CHUNK_FRAMES, moved = 0;
    for (uint32_t i = 0; i < g->gv.pages; i++) {
        pthread_mutex_lock(&g->lock);
        gv_page_t p = g->gv.pt[i];
        pthread_mutex_unlock(&g->lock);
        if (p.state != GV_RESIDENT || p.frame < first || p.frame >= first + MM_CHUNK_FRAMES)
            continue;
        if (mm__guest_anon_move(g, g->gv.base + (uint64_t)i * MM_GUEST_PAGE_BYTES) == 0)
            moved++;
    }
    guest_count(&g->moved_frames, (int64_t)moved * MM_GUEST_PAGE_FRAMES);
    (void)mm__cache_drop_at(g, g->base + (uint64_t)chunk * MM_CHUNK_SIZE);
}

/* Take every frame of chunk for the driver. 0, or -EBUSY with nothing kept. */
static int isolate(mm_guest_t *g, uint32_t chunk)
{
    mm_frames_t *f = mm__client_frames(g->client);
    if (mm__frames_chunk_reclaimed(f, chunk)) {
        /* Never used: have it granted, then it is wholly free. */
        int err = mm__client_install(g->client, chunk);
        if (err == 0)
            err = mm__frames_alloc_chunks(f, chunk, 1, 0, 0);
        return err < 0 ? -EBUSY : 0;
    }
    uint64_t ours[MM_CHUNK_BITMAP_WORDS] = {0};
    uint32_t have = 0;
    for (int pass = 0; pass < ISOLATE_PASSES && have < MM_CHUNK_FRAMES; pass++) {
        if (pass > 0)
            migrate_out(g, chunk);
        for (uint32_t k = 0; k < MM_CHUNK_FRAMES; k++) {
            if ((ours[k / 64] >> (k % 64)) & 1)
                continue;
            if (mm__frames_claim(f, (uint64_t)chunk * MM_CHUNK_FRAMES + k) == 0) {
                ours[k / 64] |= 1ull << (k % 64);
                have++;
            }
        }
    }
    if (have == MM_CHUNK_FRAMES) {
        mm__frames_clear_reserver(f, chunk);
        return 0;
    }
    for (uint32_t k = 0; k < MM_CHUNK_FRAMES; k++)
        if ((ours[k / 64] >> (k % 64)) & 1)
            (void)mm_free(g->client,
                          g->base + ((uint64_t)chunk * MM_CHUNK_FRAMES + k) * MM_FRAME_SIZE,
                          MM_FRAME_SIZE);
    return -EBUSY;
}

static int request(mm_guest_t *g, uint16_t type, uint32_t chunk)
{
    mm_msg_vmem_t m = {.addr = (uint64_t)chunk * MM_CHUNK_SIZE, .nb_blocks = 1};
    mm__msg_init(&m.hdr, type, sizeof m, 0);
    int err = mm__driver_call(g, &m.hdr, NULL);
    if (err == 0)
        guest_count(&g->driver_units, 1);
    return err;
}

/* Unplug the highest block that can be freed. */
static int unplug_one(mm_guest_t *g)
{
    uint32_t chunks = (uint32_t)(g->opts.ram_bytes / MM_CHUNK_SIZE);
    for (uint32_t i = chunks; i-- > 0;) {
        if (unplugged(g, i) || isolate(g, i) < 0)
            continue;
        int err = request(g, MM_MSG_VMEM_UNPLUG, i);
        if (err == 0) {
            set_unplugged(g, i, true);
            return 0;
        }
        (void)mm_free(g->client, g->base + (uint64_t)i * MM_CHUNK_SIZE, MM_CHUNK_SIZE);
        return err;
    }
    return -EBUSY;
}

/* Plug the lowest unplugged block; its frames go back to the allocator. */
static int plug_one(mm_guest_t *g)
{
    uint32_t chunks = (uint32_t)(g->opts.ram_bytes / MM_CHUNK_SIZE);
    for (uint32_t i = 0; i < chunks; i++) {
        if (!unplugged(g, i))
            continue;
        int err = request(g, MM_MSG_VMEM_PLUG, i);
        if (err == 0) {
            /* Online first, then count it plugged: whoever sees the count
             * finds the memory usable. */
            (void)mm_free(g->client, g->base + (uint64_t)i * MM_CHUNK_SIZE, MM_CHUNK_SIZE);
            set_unplugged(g, i, false);
        }
        return err;
    }
    return -ENOSPC;
}

static int64_t vmem_step(mm_guest_t *g)
{
    int64_t target = mm__driver_target(g);
    if (target < 0)
        return -1;
    uint64_t requested = (uint64_t)target & ~(uint64_t)(MM_CHUNK_SIZE - 1);
    uint64_t plugged = g->opts.ram_bytes - g->drv.unplugged_blocks * MM_CHUNK_SIZE;
    int err = 0;
    if (plugged > requested)
        err = unplug_one(g);
    else if (plugged < requested)
        err = plug_one(g);
    else
        return -1;
    if (err == 0) {
        g->drv.retry_ns = RETRY_MIN_NS;
        return 0;
    }
    int64_t wait = g->drv.retry_ns;
    g->drv.retry_ns = wait * 2 < RETRY_MAX_NS ? wait * 2 : RETRY_MAX_NS;
    return wait;
}

const guest_driver_ops_t mm__vmem_ops = {vmem_init, vmem_fini, vmem_step};
