/*
 * The balloon driver: Linux's virtio_balloon (drivers/virtio/virtio_balloon.c)
 * in the guest model, against QEMU's device in mmsrv (mmsrv/baselines.c).
 *
 * The host's target for the guest is the memory it keeps (QEMU's `balloon`
 * command); the balloon's own target is RAM minus that, in 4 KiB pages.
 * As update_balloon_size_func() does, each pass moves towards it by at most
 * VIRTIO_BALLOON_ARRAY_PFNS_MAX (256) pages:
 *
 * - fill: allocate pages one at a time from the guest's page allocator, with
 *   one reclaim pass when it is short (__GFP_NORETRY: the guest drops cache,
 *   then swaps, as Linux's direct reclaim would); when a page cannot be had
 *   ("Out of puff!") sleep 200 ms and go on with what was got; then send the
 *   frame numbers in one inflate request and wait for the host, which
 *   discards each page on its own;
 * - leak: take pages off the balloon, tell the host (deflate), then free
 *   them to the allocator one by one;
 * - deflate on OOM: when the guest's allocator fails, give back
 *   OOM_VBALLOON_PAGES (256) pages, and do not inflate again until the host
 *   changes the target (Linux's OOM notifier re-queues nothing).
 *
 * Balloon pages are the driver's: they never count as the guest's used
 * memory, and the guest's frees under a baseline never punch (a VM's freed
 * memory stays resident on its host until a driver gives it back).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform.h"
#include "wire.h"

#define ARRAY_PFNS_MAX     MM_BALLOON_PFNS_MAX /* 256 */
#define OOM_VBALLOON_PAGES 256
#define OUT_OF_PUFF_NS     200000000ll /* msleep(200) */

static int balloon_init(mm_guest_t *g)
{
    g->drv.cap_pfns = g->opts.ram_bytes / MM_FRAME_SIZE;
    g->drv.pfns = calloc(g->drv.cap_pfns, sizeof *g->drv.pfns);
    g->drv.met_target = g->opts.ram_bytes;
    return g->drv.pfns ? 0 : -ENOMEM;
}

/* Give the balloon's pages back to the allocator (the guest is closing:
 * the host forgets the region anyway). */
static void balloon_fini(mm_guest_t *g)
{
    for (uint64_t i = 0; i < g->drv.npfns; i++)
        (void)mm_free(g->client, g->base + (uint64_t)g->drv.pfns[i] * MM_FRAME_SIZE, MM_FRAME_SIZE);
    free(g->drv.pfns);
    g->drv.pfns = NULL;
    g->drv.npfns = 0;
}

/* One balloon page, __GFP_NORETRY: one reclaim pass when short. */
static int balloon_page_alloc(mm_guest_t *g, uint32_t *pfn)
{
    void *p;
    int err = mm_alloc(g->client, MM_FRAME_SIZE, MM_FRAME_SIZE, &p);
    if (err == -ENOMEM && mm__guest_reclaim(g, MM_FRAME_SIZE) > 0)
        err = mm_alloc(g->client, MM_FRAME_SIZE, MM_FRAME_SIZE, &p);
    if (err == 0)
        *pfn = (uint32_t)(((uint8_t *)p - g->base) / MM_FRAME_SIZE);
    return err;
}

/* fill_balloon(): returns the pages added; *puff when a page could not be
 * had. */
static uint64_t fill(mm_guest_t *g, uint64_t num, bool *puff)
{
    mm_msg_balloon_t m;
    uint32_t n = 0;
    if (num > ARRAY_PFNS_MAX)
        num = ARRAY_PFNS_MAX;
    uint64_t t0 = mm__now_ns();
    for (; n < num; n++) {
        if (balloon_page_alloc(g, &m.pfns[n]) < 0) {
            *puff = true;
            break;
        }
    }
    guest_count(&g->driver_alloc_ns, (int64_t)(mm__now_ns() - t0));
    if (n == 0)
        return 0;
    pthread_mutex_lock(&g->drv.lock);
    memcpy(g->drv.pfns + g->drv.npfns, m.pfns, n * sizeof *m.pfns);
    g->drv.npfns += n;
    pthread_mutex_unlock(&g->drv.lock);
    guest_count(&g->balloon_bytes, (int64_t)n * MM_FRAME_SIZE);
    guest_count(&g->driver_units, n);
    m.count = n;
    m.reserved = 0;
    mm__msg_init(&m.hdr, MM_MSG_BALLOON_INFLATE, mm__msg_balloon_length(n), 0);
    /* A refused request leaves the pages in the balloon, unpunched: the
     * guest cannot use them either way, and the count stays honest. */
    (void)mm__driver_call(g, &m.hdr, NULL);
    return n;
}

/* leak_balloon(): returns the pages given back. */
static uint64_t leak(mm_guest_t *g, uint64_t num)
{
    mm_msg_balloon_t m;
    if (num > ARRAY_PFNS_MAX)
        num = ARRAY_PFNS_MAX;
    pthread_mutex_lock(&g->drv.lock);
    uint32_t n = (uint32_t)(num < g->drv.npfns ? num : g->drv.npfns);
    g->drv.npfns -= n;
    memcpy(m.pfns, g->drv.pfns + g->drv.npfns, n * sizeof *m.pfns);
    pthread_mutex_unlock(&g->drv.lock);
    if (n == 0)
        return 0;
    guest_count(&g->balloon_bytes, -(int64_t)n * MM_FRAME_SIZE);
    m.count = n;
    m.reserved = 0;
    mm__msg_init(&m.hdr, MM_MSG_BALLOON_DEFLATE, mm__msg_balloon_length(n), 0);
    (void)mm__driver_call(g, &m.hdr, NULL); /* VIRTIO_BALLOON_F_MUST_TELL_HOST */
    for (uint32_t i = 0; i < n; i++)
        (void)mm_free(g->client, g->base + (uint64_t)m.pfns[i] * MM_FRAME_SIZE, MM_FRAME_SIZE);
    return n;
}

static int64_t balloon_step(mm_guest_t *g)
{
    int64_t target = mm__driver_target(g);
    if (target < 0)
        return -1;
    uint64_t keep = (uint64_t)target;
    pthread_mutex_lock(&g->drv.lock);
    uint64_t have = g->drv.npfns, met = g->drv.met_target;
    pthread_mutex_unlock(&g->drv.lock);
    if (keep == met)
        return -1; /* no config change since the target was met (or OOM) */
    uint64_t want = (g->opts.ram_bytes - keep) / MM_FRAME_SIZE;
    bool puff = false;
    if (want > have)
        have += fill(g, want - have, &puff);
    else if (want < have)
        have -= leak(g, have - want);
    if (have == want) {
        pthread_mutex_lock(&g->drv.lock);
        g->drv.met_target = keep;
        pthread_mutex_unlock(&g->drv.lock);
        return -1;
    }
    return puff ? OUT_OF_PUFF_NS : 0;
}

uint64_t mm__balloon_oom(mm_guest_t *g)
{
    if (g->opts.driver != MM_GUEST_DRIVER_BALLOON ||
        !atomic_load_explicit(&g->drv.running, memory_order_acquire))
        return 0;
    uint64_t n = leak(g, OOM_VBALLOON_PAGES);
    if (n)
        guest_count(&g->oom_deflates, 1);
    return n * MM_FRAME_SIZE;
}

const guest_driver_ops_t mm__balloon_ops = {balloon_init, balloon_fini, balloon_step};
