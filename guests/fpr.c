/*
 * Free page reporting: Linux's mm/page_reporting.c with virtio-balloon's
 * reporting queue, in the guest model; the host side is mmsrv/baselines.c.
 *
 * There is no host target. A free in the guest requests reporting
 * (page_reporting_notify_free); PAGE_REPORTING_DELAY (2 s) later the
 * reporter walks the free blocks of at least pageblock order (2 MiB: a
 * wholly free chunk of the frame allocator), skips those already reported
 * and not used since, isolates up to PAGE_REPORTING_CAPACITY (32) of them
 * (takes them off the allocator), reports them in one request, and once the
 * host discarded them puts them back. As page_reporting_cycle() does, one
 * pass makes at most DIV_ROUND_UP(free blocks, 32 * 16) + 1 reports and
 * leaves the rest to the next pass, 2 s later; a free during a pass asks for
 * another one, 2 s after it.
 *
 * A chunk reserved by an allocating thread is not reported (Linux does not
 * report pages on per-cpu lists either). "Reported and not used since" is
 * read from the region itself: a reported block that was allocated and
 * written has data again, one that was not has none.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "internal.h"
#include "platform.h"
#include "wire.h"

#define PAGE_REPORTING_DELAY_NS 2000000000ll      /* 2 * HZ */
#define PAGE_REPORTING_CAPACITY MM_FPR_BLOCKS_MAX /* 32 */

static int fpr_init(mm_guest_t *g)
{
    uint32_t chunks = (uint32_t)(g->opts.ram_bytes / MM_CHUNK_SIZE);
    g->drv.reported = calloc((chunks + 63) / 64, sizeof *g->drv.reported);
    /* Linux starts reporting 2 s after the device registers. */
    g->drv.requested = true;
    g->drv.requested_ns = mm__now_ns();
    return g->drv.reported ? 0 : -ENOMEM;
}

static void fpr_fini(mm_guest_t *g)
{
    free(g->drv.reported);
    g->drv.reported = NULL;
}

void mm__fpr_notify(mm_guest_t *g)
{
    if (g->opts.driver != MM_GUEST_DRIVER_FPR)
        return;
    pthread_mutex_lock(&g->drv.lock);
    if (!g->drv.requested) {
        g->drv.requested = true;
        g->drv.requested_ns = mm__now_ns();
        pthread_cond_signal(&g->drv.wake);
    }
    pthread_mutex_unlock(&g->drv.lock);
}

static bool reported(const mm_guest_t *g, uint32_t chunk)
{
    return (g->drv.reported[chunk / 64] >> (chunk % 64)) & 1;
}

static void set_reported(mm_guest_t *g, uint32_t chunk, bool on)
{
    if (on)
        g->drv.reported[chunk / 64] |= 1ull << (chunk % 64);
    else
        g->drv.reported[chunk / 64] &= ~(1ull << (chunk % 64));
}

/* Report the isolated chunks, then give them back to the allocator. */
static void report(mm_guest_t *g, const uint32_t *chunks, uint32_t n)
{
    mm_msg_fpr_t m = {.count = n};
    for (uint32_t i = 0; i < n; i++)
        m.addrs[i] = (uint64_t)chunks[i] * MM_CHUNK_SIZE;
    mm__msg_init(&m.hdr, MM_MSG_FPR_REPORT, mm__msg_fpr_length(n), 0);
    int err = mm__driver_call(g, &m.hdr, NULL);
    for (uint32_t i = 0; i < n; i++) {
        (void)mm_free(g->client, g->base + (uint64_t)chunks[i] * MM_CHUNK_SIZE, MM_CHUNK_SIZE);
        set_reported(g, chunks[i], err == 0);
    }
    if (err == 0) {
        guest_count(&g->reported_bytes, (int64_t)n * MM_CHUNK_SIZE);
        guest_count(&g->driver_units, n);
    }
}

/* One pass over the free blocks; true when the budget ran out first. */
static bool report_pass(mm_guest_t *g)
{
    mm_frames_t *f = mm__client_frames(g->client);
    uint32_t nfree = 0;
    for (uint32_t i = 0; i < f->chunk_count; i++)
        nfree +=
            !mm__frames_chunk_reclaimed(f, i) && mm__frames_chunk_free(f, i) == MM_CHUNK_FRAMES;
    long budget =
        (long)((nfree + PAGE_REPORTING_CAPACITY * 16 - 1) / (PAGE_REPORTING_CAPACITY * 16));
    uint32_t batch[PAGE_REPORTING_CAPACITY], n = 0;
    for (uint32_t i = 0; i < f->chunk_count; i++) {
        if (mm__frames_chunk_reclaimed(f, i) || mm__frames_chunk_free(f, i) != MM_CHUNK_FRAMES)
            continue;
        uint64_t off = (uint64_t)i * MM_CHUNK_SIZE;
        if (reported(g, i) && mm__range_has_data(g->region_fd, off, MM_CHUNK_SIZE) == 0)
            continue; /* PageReported: still discarded */
        if (budget < 0)
            return true;
        /* __isolate_free_page: the chunk leaves the allocator while the host
         * works on it (only a wholly free, unreserved one can). */
        if (mm__frames_alloc_chunks(f, i, 1, 0, 0) < 0)
            continue;
        batch[n++] = i;
        if (n == PAGE_REPORTING_CAPACITY) {
            report(g, batch, n);
            n = 0;
            budget--;
        }
    }
    if (n)
        report(g, batch, n);
    return false;
}

static int64_t fpr_step(mm_guest_t *g)
{
    pthread_mutex_lock(&g->drv.lock);
    bool requested = g->drv.requested;
    int64_t wait = (int64_t)(g->drv.requested_ns + PAGE_REPORTING_DELAY_NS - mm__now_ns());
    if (requested && wait <= 0)
        g->drv.requested = false; /* PAGE_REPORTING_ACTIVE */
    pthread_mutex_unlock(&g->drv.lock);
    if (!requested)
        return -1;
    if (wait > 0)
        return wait;
    bool more = report_pass(g);
    pthread_mutex_lock(&g->drv.lock);
    bool again = more || g->drv.requested;
    if (again) {
        g->drv.requested = true; /* again, PAGE_REPORTING_DELAY after this pass */
        g->drv.requested_ns = mm__now_ns();
    }
    pthread_mutex_unlock(&g->drv.lock);
    return again ? PAGE_REPORTING_DELAY_NS : -1;
}

const guest_driver_ops_t mm__fpr_ops = {fpr_init, fpr_fini, fpr_step};
