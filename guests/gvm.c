/*
 * Guest-virtual memory: the guest's software page table over its frames.
 *
 * Anonymous memory lives in one reserved virtual area. Each 64 KiB
 * guest-virtual page is either mapped onto 16 contiguous frames of the
 * region (MAP_SHARED|MAP_FIXED of the region memfd at the frames' offset) or
 * covered by an anonymous placeholder registered with the guest's
 * userfaultfd, so that touching it raises a missing fault that this file
 * answers: zeroed frames for a page released earlier, the page's copy from
 * swap for a page swapped out. Either way the page's address never changes,
 * so the pointers a workload holds stay valid while its frames are reused or
 * moved.
 *
 * Granularity: every mapped page may need a kernel mapping of its own
 * (adjacent pages on adjacent frames merge into one), and the kernel allows
 * 65,530 mappings per process. 64 KiB pages bound a guest-virtual area of
 * MM_GUEST_MAX_PAGES (2 GiB) to 32,768 mappings in the worst case, leaving
 * room for the rest of the process; 4 KiB pages would cap it at 256 MiB.
 * Releases of parts of a page punch the frames under them (a later touch
 * faults and reads zeros), so runtimes may still release in 4 KiB units.
 *
 * Recency (for choosing what to swap) is a CLOCK with one referenced bit per
 * page, set when the page is allocated, brought back by a fault, or reported
 * used by its workload (mm__guest_anon_touched). User space cannot read the
 * hardware accessed bits of its own page tables (idle page tracking is not
 * built into this kernel), so a page used only by reads the guest never
 * hears about ages as if idle.
 *
 * A page's frames change only with the page marked busy: a fault on a busy
 * page waits until it settles (gv.idle).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "platform.h"

#define GVP       MM_GUEST_PAGE_BYTES
#define KEYS_PER  MM_GUEST_PAGE_FRAMES  /* swap keys (4 KiB pages) per gv page */
#define RUN_PAGES (MM_CHUNK_SIZE / GVP) /* pages backed by one frame run */

static uintptr_t page_addr(const mm_guest_t *g, uint32_t i)
{
    return (uintptr_t)g->gv.base + (uintptr_t)i * GVP;
}

static uint64_t frame_off(uint32_t frame)
{
    return (uint64_t)frame * MM_FRAME_SIZE;
}

static uint32_t frame_of(const mm_guest_t *g, const void *direct)
{
    return (uint32_t)(((const uint8_t *)direct - g->base) / MM_FRAME_SIZE);
}

/* Map frames at addr; populate the page tables in one call (a fault costs
 * 14-24 us here) before registering, so that no missing fault is raised for
 * pages the kernel can fill itself. */
static int map_frames(mm_guest_t *g, uintptr_t addr, uint32_t frame, uint64_t len)
{
    void *r = mmap((void *)addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g->region_fd,
                   (off_t)frame_off(frame));
    if (r == MAP_FAILED)
        return -errno;
    /* A forked child must not get a second mapping of these frames (see
     * DESIGN: it would fill holes the host punched). */
    (void)madvise(r, len, MADV_DONTFORK);
    int err = mm__populate_write(r, len);
    if (!err)
        err = mm__pager_register(g->pager, addr, len, true);
    return err;
}

/* Cover addr with an anonymous placeholder whose touch faults to us. */
static int map_placeholder(mm_guest_t *g, uintptr_t addr, uint64_t len)
{
    void *r = mmap((void *)addr, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        return -errno;
    (void)madvise(r, len, MADV_DONTFORK);
    return mm__pager_register(g->pager, addr, len, false);
}

static void wait_idle(mm_guest_t *g, uint32_t i)
{
    while (g->gv.pt[i].busy)
        pthread_cond_wait(&g->gv.idle, &g->lock);
}

static void settle(mm_guest_t *g, uint32_t i, uint8_t state, uint32_t frame)
{
    g->gv.pt[i].state = state;
    g->gv.pt[i].frame = frame;
    g->gv.pt[i].busy = 0;
    if (state == GV_RESIDENT)
        __atomic_store_n(&g->gv.pt[i].referenced, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&g->gv.idle);
}

/* Bring page i back (from swap, or zeroed) onto new frames. Called with
 * the page busy and the lock not held. */
static int back_page(mm_guest_t *g, uint32_t i, bool from_swap, uint32_t *frame_out)
{
    void *direct;
    int err = mm__guest_frames_alloc(g, GVP, GVP, &direct);
    if (err < 0)
        return err;
    uint32_t frame = frame_of(g, direct);
    uint64_t off = frame_off(frame);
    if (from_swap) {
        uint8_t *buf = g->gv.fault_buf;
        err = mm__pager_read(g->pager, (uint64_t)i * KEYS_PER, KEYS_PER, buf);
        if (!err && pwrite(g->region_fd, buf, GVP, (off_t)off) != (ssize_t)GVP)
            err = -EIO;
    } else {
        /* Frames may hold an earlier user's data: hand out zeros. */
        err = mm__punch(g->region_fd, off, GVP);
    }
    if (!err)
        err = map_frames(g, page_addr(g, i), frame, GVP);
    if (err) {
        mm__guest_frames_free(g, direct, GVP);
        return err;
    }
    *frame_out = frame;
    return 0;
}

/* The route of the guest-virtual area's missing faults. */
static int gv_missing(void *arg, uintptr_t addr, bool write)
{
    (void)write;
    mm_guest_t *g = arg;
    uint32_t i = (uint32_t)((addr - (uintptr_t)g->gv.base) / GVP);
    pthread_mutex_lock(&g->lock);
    wait_idle(g, i);
    uint8_t state = g->gv.pt[i].state;
    if (state == GV_FREE) {
        pthread_mutex_unlock(&g->lock);
        return -EFAULT; /* not handed out: the toucher gets SIGBUS */
    }
    if (state == GV_RESIDENT) {
        /* A hole in the page's frames (part of it was released), or a fault
         * raised before the page came back: zeros never overwrite a page
         * that is there. */
        pthread_mutex_unlock(&g->lock);
        return mm__pager_zero(g->pager, addr, MM_FRAME_SIZE);
    }
    g->gv.pt[i].busy = 1;
    pthread_mutex_unlock(&g->lock);

    bool from_swap = state == GV_SWAPPED;
    uint32_t frame = UINT32_MAX;
    int err = back_page(g, i, from_swap, &frame);
    if (err == -EBADMSG)
        guest_count(&g->swap_errors, 1);
    if (!err && from_swap) {
        mm__pager_forget(g->pager, (uint64_t)i * KEYS_PER, KEYS_PER);
        guest_count(&g->swap_in_bytes, GVP);
        guest_count(&g->swapped_bytes, -(int64_t)GVP);
    } else if (!err) {
        guest_count(&g->zero_fills, 1);
    }
    if (!err)
        guest_count(&g->anon_bytes, GVP);
    pthread_mutex_lock(&g->lock);
    settle(g, i, err ? state : GV_RESIDENT, frame);
    pthread_mutex_unlock(&g->lock);
    if (!err)
        (void)mm__pager_wake(g->pager, page_addr(g, i), GVP);
    return err;
}

int mm__gv_init(mm_guest_t *g, uint64_t virtual_bytes)
{
    uint64_t pages = (virtual_bytes + GVP - 1) / GVP;
    if (pages == 0 || pages > MM_GUEST_MAX_PAGES)
        return -EINVAL;
    /* Reserve with room to align the area to a chunk, so that runtimes'
     * chunk-sized requests get chunk-aligned addresses. */
    uint64_t bytes = pages * GVP;
    uint8_t *raw = mmap(NULL, bytes + MM_CHUNK_SIZE, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return -errno;
    uintptr_t base = ((uintptr_t)raw + MM_CHUNK_SIZE - 1) & ~(uintptr_t)(MM_CHUNK_SIZE - 1);
    if (base > (uintptr_t)raw)
        munmap(raw, base - (uintptr_t)raw);
    uintptr_t end = (uintptr_t)raw + bytes + MM_CHUNK_SIZE;
    if (end > base + bytes)
        munmap((void *)(base + bytes), end - (base + bytes));
    g->gv.base = (uint8_t *)base;
    g->gv.pages = (uint32_t)pages;
    g->gv.pt = calloc(pages, sizeof *g->gv.pt);
    g->gv.fault_buf = aligned_alloc(MM_FRAME_SIZE, GVP);
    int err = g->gv.pt && g->gv.fault_buf ? 0 : -ENOMEM;
    if (!err)
        err = map_placeholder(g, base, bytes);
    if (!err)
        err = mm__pager_route(g->pager, base, bytes, gv_missing, g);
    if (err) {
        free(g->gv.pt);
        free(g->gv.fault_buf);
        munmap((void *)base, bytes);
        memset(&g->gv, 0, sizeof g->gv);
        return err;
    }
    pthread_cond_init(&g->gv.idle, NULL);
    return 0;
}

void mm__gv_fini(mm_guest_t *g)
{
    if (!g->gv.base)
        return;
    for (uint32_t i = 0; i < g->gv.pages; i++)
        if (g->gv.pt[i].state == GV_RESIDENT)
            mm__guest_frames_free(g, g->base + frame_off(g->gv.pt[i].frame), GVP);
    munmap(g->gv.base, (uint64_t)g->gv.pages * GVP);
    free(g->gv.pt);
    free(g->gv.fault_buf);
    pthread_cond_destroy(&g->gv.idle);
    memset(&g->gv, 0, sizeof g->gv);
}

/* First run of n free pages aligned to align pages, from the hint on. */
static int64_t find_free_run(mm_guest_t *g, uint32_t n, uint32_t align)
{
    uint32_t pages = g->gv.pages;
    for (uint32_t pass = 0; pass < 2; pass++) {
        uint32_t start = pass ? 0 : g->gv.alloc_hint;
        uint32_t i = (start + align - 1) / align * align;
        while (i + n <= pages) {
            uint32_t k = 0;
            while (k < n && g->gv.pt[i + k].state == GV_FREE && !g->gv.pt[i + k].busy)
                k++;
            if (k == n)
                return i;
            i = (i + k + 1 + align - 1) / align * align;
        }
    }
    return -1;
}

/* Give pages [first, first+n) that are marked busy back as free. */
static void unwind_pages(mm_guest_t *g, uint32_t first, uint32_t n)
{
    pthread_mutex_lock(&g->lock);
    for (uint32_t k = first; k < first + n; k++)
        settle(g, k, GV_FREE, UINT32_MAX);
    pthread_mutex_unlock(&g->lock);
}

static int release_range(mm_guest_t *g, void *addr, uint64_t bytes, uint8_t whole_state);

int mm__guest_anon_alloc_aligned(mm_guest_t *g, uint64_t bytes, uint64_t align, void **out)
{
    if (bytes == 0 || !out)
        return -EINVAL;
    uint32_t n = (uint32_t)((bytes + GVP - 1) / GVP);
    uint32_t align_pages = align > GVP ? (uint32_t)(align / GVP) : 1;
    if (bytes >= MM_CHUNK_SIZE && align_pages < RUN_PAGES)
        align_pages = RUN_PAGES;
    pthread_mutex_lock(&g->lock);
    int64_t first = find_free_run(g, n, align_pages);
    if (first >= 0) {
        for (uint32_t k = 0; k < n; k++) {
            g->gv.pt[first + k].state = GV_UNBACKED;
            g->gv.pt[first + k].busy = 1;
        }
        g->gv.alloc_hint = (uint32_t)first + n;
    }
    pthread_mutex_unlock(&g->lock);
    if (first < 0)
        return -ENOMEM;

    /* Back the pages with runs of up to a chunk of contiguous frames (one
     * mapping each), falling back to single pages when frames are short. */
    uint32_t done = 0;
    while (done < n) {
        uint32_t want = n - done < RUN_PAGES ? n - done : RUN_PAGES;
        void *direct = NULL;
        int err = -ENOMEM;
        while (want > 0) {
            err = mm__guest_frames_alloc(g, (uint64_t)want * GVP, GVP, &direct);
            if (err != -ENOMEM || want == 1)
                break;
            want = want / 2;
        }
        uint32_t frame = err ? 0 : frame_of(g, direct);
        if (!err)
            err = map_frames(g, page_addr(g, (uint32_t)first + done), frame, (uint64_t)want * GVP);
        if (err) {
            if (direct)
                mm__guest_frames_free(g, direct, (uint64_t)want * GVP);
            if (done)
                (void)release_range(g, (void *)page_addr(g, (uint32_t)first), (uint64_t)done * GVP,
                                    GV_FREE);
            (void)map_placeholder(g, page_addr(g, (uint32_t)first + done),
                                  (uint64_t)(n - done) * GVP);
            unwind_pages(g, (uint32_t)first + done, n - done);
            return err;
        }
        pthread_mutex_lock(&g->lock);
        for (uint32_t k = 0; k < want; k++)
            settle(g, (uint32_t)first + done + k, GV_RESIDENT, frame + k * KEYS_PER);
        pthread_mutex_unlock(&g->lock);
        guest_count(&g->anon_bytes, (int64_t)((uint64_t)want * GVP));
        done += want;
    }
    guest_count(&g->virtual_bytes, (int64_t)((uint64_t)n * GVP));
    *out = (void *)page_addr(g, (uint32_t)first);
    return 0;
}

int mm__guest_anon_alloc(mm_guest_t *g, uint64_t bytes, void **out)
{
    return mm__guest_anon_alloc_aligned(g, bytes, GVP, out);
}

/* Check that [addr, addr+bytes) is 4 KiB-aligned, inside the area and handed
 * out; return its first page and the page past its end. */
static int check_range(mm_guest_t *g, const void *addr, uint64_t bytes, uint32_t *first,
                       uint32_t *end)
{
    uintptr_t a = (uintptr_t)addr, base = (uintptr_t)g->gv.base;
    if (bytes == 0 || a % MM_FRAME_SIZE || bytes % MM_FRAME_SIZE || a < base ||
        a + bytes > base + (uint64_t)g->gv.pages * GVP)
        return -EINVAL;
    *first = (uint32_t)((a - base) / GVP);
    *end = (uint32_t)((a + bytes - base + GVP - 1) / GVP);
    for (uint32_t i = *first; i < *end; i++)
        if (g->gv.pt[i].state == GV_FREE)
            return -EINVAL;
    return 0;
}

/* Release part of page i: [from, to) bytes inside it. */
static int release_part(mm_guest_t *g, uint32_t i, uint64_t from, uint64_t to)
{
    gv_page_t *p = &g->gv.pt[i];
    if (p->state == GV_RESIDENT)
        return mm__punch(g->region_fd, frame_off(p->frame) + from, to - from);
    if (p->state == GV_SWAPPED) /* a forgotten key reads back as zeros */
        mm__pager_forget(g->pager, (uint64_t)i * KEYS_PER + from / MM_FRAME_SIZE,
                         (to - from) / MM_FRAME_SIZE);
    return 0;
}

/* Release whole page i: its frames go back to the allocator. Called with
 * the lock held and the page idle; drops and retakes the lock. */
static int release_whole(mm_guest_t *g, uint32_t i, uint8_t new_state)
{
    gv_page_t *p = &g->gv.pt[i];
    if (p->state == GV_SWAPPED) {
        mm__pager_forget(g->pager, (uint64_t)i * KEYS_PER, KEYS_PER);
        guest_count(&g->swapped_bytes, -(int64_t)GVP);
    }
    if (p->state != GV_RESIDENT) {
        p->state = new_state;
        return 0;
    }
    p->busy = 1;
    uint32_t frame = p->frame;
    pthread_mutex_unlock(&g->lock);
    int err = map_placeholder(g, page_addr(g, i), GVP);
    if (!err) {
        mm__guest_frames_free(g, g->base + frame_off(frame), GVP);
        guest_count(&g->anon_bytes, -(int64_t)GVP);
    }
    pthread_mutex_lock(&g->lock);
    settle(g, i, err ? GV_RESIDENT : new_state, err ? frame : UINT32_MAX);
    return err;
}

static int release_range(mm_guest_t *g, void *addr, uint64_t bytes, uint8_t whole_state)
{
    uint32_t first = 0, end = 0;
    pthread_mutex_lock(&g->lock);
    int err = check_range(g, addr, bytes, &first, &end);
    uintptr_t a = (uintptr_t)addr, b = a + bytes;
    for (uint32_t i = first; !err && i < end; i++) {
        wait_idle(g, i);
        uintptr_t ps = page_addr(g, i), pe = ps + GVP;
        uintptr_t from = a > ps ? a : ps, to = b < pe ? b : pe;
        if (from == ps && to == pe)
            err = release_whole(g, i, whole_state);
        else
            err = release_part(g, i, from - ps, to - ps);
    }
    pthread_mutex_unlock(&g->lock);
    return err;
}

int mm__guest_anon_release(mm_guest_t *g, void *addr, uint64_t bytes)
{
    return release_range(g, addr, bytes, GV_UNBACKED);
}

int mm__guest_anon_free(mm_guest_t *g, void *addr, uint64_t bytes)
{
    int err = release_range(g, addr, bytes, GV_FREE);
    if (!err)
        guest_count(&g->virtual_bytes, -(int64_t)((bytes / GVP) * GVP));
    return err;
}

void mm__guest_anon_touched(mm_guest_t *g, const void *addr, uint64_t bytes)
{
    uintptr_t a = (uintptr_t)addr, base = (uintptr_t)g->gv.base;
    uint64_t area = (uint64_t)g->gv.pages * GVP;
    if (a < base || a >= base + area || bytes == 0)
        return;
    uint64_t last = a + bytes - 1 < base + area ? a + bytes - 1 : base + area - 1;
    /* One byte per page, no lock: a lost update only ages a page early. */
    for (uint64_t i = (a - base) / GVP; i <= (last - base) / GVP; i++)
        __atomic_store_n(&g->gv.pt[i].referenced, 1, __ATOMIC_RELAXED);
}

int64_t mm__guest_anon_frame(mm_guest_t *g, const void *addr)
{
    uintptr_t a = (uintptr_t)addr, base = (uintptr_t)g->gv.base;
    if (a < base || a >= base + (uint64_t)g->gv.pages * GVP)
        return -EINVAL;
    uint32_t i = (uint32_t)((a - base) / GVP);
    pthread_mutex_lock(&g->lock);
    int64_t r = g->gv.pt[i].state == GV_RESIDENT ? (int64_t)frame_off(g->gv.pt[i].frame) : -ENOENT;
    pthread_mutex_unlock(&g->lock);
    return r;
}

int mm__guest_anon_move(mm_guest_t *g, void *addr)
{
    uintptr_t a = (uintptr_t)addr, base = (uintptr_t)g->gv.base;
    if (a < base || a >= base + (uint64_t)g->gv.pages * GVP)
        return -EINVAL;
    uint32_t i = (uint32_t)((a - base) / GVP);
    pthread_mutex_lock(&g->lock);
    wait_idle(g, i);
    gv_page_t *p = &g->gv.pt[i];
    if (p->state != GV_RESIDENT) {
        int r = p->state == GV_FREE ? -EINVAL : 0; /* no frames: nothing to move */
        pthread_mutex_unlock(&g->lock);
        return r;
    }
    p->busy = 1;
    uint32_t old = p->frame;
    pthread_mutex_unlock(&g->lock);

    void *direct;
    int err = mm__guest_frames_alloc(g, GVP, GVP, &direct);
    uint32_t frame = err ? old : frame_of(g, direct);
    uintptr_t pa = page_addr(g, i);
    if (!err)
        err = mm__pager_protect(g->pager, pa, GVP);
    if (!err) {
        /* Writers wait from here; readers still see the old frames, whose
         * content is final. Holes stay holes (zeros either way). */
        memcpy(direct, g->base + frame_off(old), GVP);
        err = map_frames(g, pa, frame, GVP);
        mm__pager_unprotect(g->pager, pa, GVP);
    }
    if (err && frame != old)
        mm__guest_frames_free(g, direct, GVP);
    else if (!err)
        mm__guest_frames_free(g, g->base + frame_off(old), GVP);
    if (!err)
        guest_count(&g->moves, 1);
    pthread_mutex_lock(&g->lock);
    settle(g, i, GV_RESIDENT, err ? old : frame);
    pthread_mutex_unlock(&g->lock);
    return err;
}

static int drop_to_placeholder(void *ctx, uintptr_t addr, uint64_t off, uint64_t len)
{
    (void)off;
    return map_placeholder(ctx, addr, len);
}

uint64_t mm__gv_swap_out(mm_guest_t *g, uint64_t bytes)
{
    if (!g->swap || !g->gv.base)
        return 0;
    uint64_t freed = 0;
    while (freed < bytes) {
        mm_pager_seg_t segs[MM_PAGER_MAX_SEGS];
        uint32_t victims[MM_PAGER_MAX_SEGS];
        size_t n = 0;
        uint64_t want = bytes - freed;
        pthread_mutex_lock(&g->lock);
        /* Two sweeps at most: the first clears referenced bits. */
        for (uint64_t step = 0;
             step < 2ull * g->gv.pages && n < MM_PAGER_MAX_SEGS && (uint64_t)n * GVP < want;
             step++) {
            uint32_t i = g->gv.clock_hand;
            g->gv.clock_hand = (i + 1) % g->gv.pages;
            gv_page_t *p = &g->gv.pt[i];
            if (p->state != GV_RESIDENT || p->busy)
                continue;
            if (__atomic_exchange_n(&p->referenced, 0, __ATOMIC_RELAXED))
                continue;
            p->busy = 1;
            victims[n] = i;
            segs[n++] =
                (mm_pager_seg_t){page_addr(g, i), frame_off(p->frame), GVP, (uint64_t)i * KEYS_PER};
        }
        pthread_mutex_unlock(&g->lock);
        if (n == 0)
            break;
        uint64_t paged = 0;
        /* Whole pages, holes included: one run per page, dropped in order. */
        (void)mm__pager_page_out_v(g->pager, g->region_fd, segs, n, true, drop_to_placeholder, g,
                                   &paged);
        size_t dropped = (size_t)(paged / GVP);
        for (size_t k = 0; k < dropped; k++)
            mm__guest_frames_free(g, g->base + segs[k].off, GVP);
        pthread_mutex_lock(&g->lock);
        for (size_t k = 0; k < n; k++) {
            gv_page_t *p = &g->gv.pt[victims[k]];
            settle(g, victims[k], k < dropped ? GV_SWAPPED : GV_RESIDENT,
                   k < dropped ? UINT32_MAX : p->frame);
        }
        pthread_mutex_unlock(&g->lock);
        if (dropped) {
            uint64_t expected = 0, now = mm__now_ns();
            atomic_compare_exchange_strong(&g->first_swap_ns, &expected, now);
        }
        guest_count(&g->swap_out_bytes, (int64_t)paged);
        guest_count(&g->swapped_bytes, (int64_t)paged);
        guest_count(&g->anon_bytes, -(int64_t)paged);
        freed += paged;
        if (dropped < n)
            break; /* the swap device is full or failing: stop here */
    }
    return freed;
}

static int source_alloc(void *arg, size_t bytes, size_t align, void **out)
{
    return mm__guest_anon_alloc_aligned(arg, bytes, align, out);
}

static int source_free(void *arg, void *addr, size_t bytes)
{
    return mm__guest_anon_free(arg, addr, bytes);
}

static int source_release(void *arg, void *addr, size_t bytes)
{
    return mm__guest_anon_release(arg, addr, bytes);
}

static int64_t source_resident(void *arg)
{
    const mm_guest_t *g = arg;
    return mm__resident_bytes(g->region_fd);
}

mm_frame_source_t mm__guest_anon_source(mm_guest_t *g)
{
    return (mm_frame_source_t){
        .alloc = source_alloc,
        .free = source_free,
        .release = source_release,
        .resident_bytes = source_resident,
        .arg = g,
    };
}
