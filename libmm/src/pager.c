/*
 * The paging engine (see pager.h): a userfaultfd, the routes that own its
 * missing faults, the write-protected ranges that page-outs hold, and the
 * page-out and fill steps over a swap store.
 *
 * Locks: lock guards the routes and the protected ranges, and is held across
 * the write-protect ioctls that change which pages are protected, so that a
 * stale write fault (read after its page-out ended) can never unprotect a
 * page that a new page-out has just protected. No lock is held while a route
 * function runs or while pages are copied.
 */
#include "pager.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "platform.h"

#define PAGE_BYTES    ((uint64_t)MM_SWAP_PAGE_BYTES)
#define MAX_ROUTES    64
#define MAX_PROTECTED 128
#define COPY_PAGES    64 /* pages staged per copy: a 256 KiB buffer */
#define MSGS_PER_READ 16

/* Newer than Debian 12's kernel headers; the running kernel has them. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
    struct uffdio_range range;
    __u64 mode;
    __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct uffdio_poison)
#endif

#define NEEDED_FEATURES                                                                            \
    (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_THREAD_ID)

typedef struct route {
    uintptr_t start, end;
    mm_pager_missing_fn fn;
    void *arg;
} route_t;

typedef struct span {
    uintptr_t start, end; /* end == 0: unused */
} span_t;

struct mm_pager {
    int uffd;
    mm_swap_t *swap;
    int stop_fd;
    bool has_thread;
    pthread_t thread;
    pthread_mutex_t lock;
    /* Held by a page-out from its copy to its drop, and by a fill from its
     * copy back to forgetting the keys: otherwise a page-out could store a
     * page just filled, under a key the fill then forgets, and drop it. */
    pthread_mutex_t io_lock;
    route_t routes[MAX_ROUTES]; /* guarded by lock */
    int route_count;
    span_t protected[MAX_PROTECTED]; /* guarded by lock */
    _Atomic uint64_t missing_faults, wp_faults, failed_faults;
    _Atomic uint64_t pages_out, pages_in, zero_fills, holes_skipped;
};

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* A userfaultfd without UFFD_USER_MODE_ONLY: by capability, else through
 * /dev/userfaultfd, which gives full faults to whoever may open it. */
static int raw_uffd(void)
{
    int flags = O_CLOEXEC | O_NONBLOCK;
    int fd = (int)syscall(SYS_userfaultfd, flags);
    if (fd >= 0 || errno != EPERM)
        return fd < 0 ? -errno : fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0)
        return -EPERM;
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    int err = fd < 0 ? -errno : 0;
    close(dev);
    return fd < 0 ? (err == -EACCES ? -EPERM : err) : fd;
}

int mm__uffd_open(void)
{
    /* UFFDIO_API may be called once per fd: learn the features on a
     * throwaway one, then ask for what is needed on the real one. */
    int fd = raw_uffd();
    if (fd < 0)
        return fd;
    struct uffdio_api probe = {.api = UFFD_API, .features = 0};
    int err = ioctl(fd, UFFDIO_API, &probe) < 0 ? -errno : 0;
    close(fd);
    if (err)
        return err;
    if ((probe.features & NEEDED_FEATURES) != NEEDED_FEATURES)
        return -ENOTSUP;
    fd = raw_uffd();
    if (fd < 0)
        return fd;
    struct uffdio_api api = {.api = UFFD_API,
                             .features = NEEDED_FEATURES | (probe.features & UFFD_FEATURE_POISON)};
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        err = errno == EINVAL ? -ENOTSUP : -errno;
        close(fd);
        return err;
    }
    return fd;
}

int mm__pager_create(int uffd, mm_swap_t *swap, mm_pager_t **out)
{
    if (!out)
        return -EINVAL;
    mm_pager_t *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->stop_fd < 0) {
        int err = -errno;
        free(p);
        return err;
    }
    p->uffd = uffd;
    p->swap = swap;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->io_lock, NULL);
    *out = p;
    return 0;
}

void mm__pager_destroy(mm_pager_t *p)
{
    if (!p)
        return;
    if (p->has_thread) {
        uint64_t one = 1;
        /* The thread polls stop_fd; an eventfd write of 1 cannot fail here. */
        (void)!write(p->stop_fd, &one, sizeof one);
        /* A peer sharing the fd can make the thread's read block (clearing
         * O_NONBLOCK on the open file it shares): read is a cancellation
         * point, and the thread holds no lock while in it. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (pthread_timedjoin_np(p->thread, NULL, &until) != 0) {
            pthread_cancel(p->thread);
            pthread_join(p->thread, NULL);
        }
    }
    close(p->stop_fd);
    pthread_mutex_destroy(&p->io_lock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

int mm__pager_fd(const mm_pager_t *p)
{
    return p->uffd;
}

static void *pager_thread(void *arg)
{
    mm_pager_t *p = arg;
    /* Cancellable only inside the read of the fd (see mm__pager_destroy). */
    (void)pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    struct pollfd fds[2] = {{.fd = p->uffd, .events = POLLIN},
                            {.fd = p->stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents)
            break;
        if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL))
            break;
        mm__pager_dispatch(p);
    }
    return NULL;
}

int mm__pager_start(mm_pager_t *p)
{
    if (p->uffd < 0)
        return -EBADF;
    if (p->has_thread)
        return -EALREADY;
    int err = pthread_create(&p->thread, NULL, pager_thread, p);
    if (err)
        return -err;
    p->has_thread = true;
    return 0;
}

int mm__pager_route(mm_pager_t *p, uintptr_t start, uint64_t len, mm_pager_missing_fn fn, void *arg)
{
    if (!fn || len == 0 || start % PAGE_BYTES || len % PAGE_BYTES)
        return -EINVAL;
    int err = 0;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->route_count; i++)
        if (start < p->routes[i].end && p->routes[i].start < start + len)
            err = -EEXIST;
    if (!err && p->route_count == MAX_ROUTES)
        err = -ENOSPC;
    if (!err)
        p->routes[p->route_count++] = (route_t){start, start + len, fn, arg};
    pthread_mutex_unlock(&p->lock);
    return err;
}

int mm__pager_register(mm_pager_t *p, uintptr_t start, uint64_t len, bool wp)
{
    struct uffdio_register reg = {
        .range = {.start = start, .len = len},
        .mode = UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0),
    };
    return ioctl(p->uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int mm__pager_unregister(mm_pager_t *p, uintptr_t start, uint64_t len)
{
    struct uffdio_range r = {.start = start, .len = len};
    return ioctl(p->uffd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

static int write_protect(mm_pager_t *p, uintptr_t addr, uint64_t len, bool on)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = addr, .len = len},
        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    return ioctl(p->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

int mm__pager_wake(mm_pager_t *p, uintptr_t addr, uint64_t len)
{
    struct uffdio_range r = {.start = addr, .len = len};
    return ioctl(p->uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

int mm__pager_poison(mm_pager_t *p, uintptr_t addr, uint64_t len)
{
    struct uffdio_poison po = {.range = {.start = addr, .len = len}};
    return ioctl(p->uffd, UFFDIO_POISON, &po) < 0 ? -errno : 0;
}

/* Index of the protected span holding addr, or -1. Called with lock held. */
static int protected_index(const mm_pager_t *p, uintptr_t addr)
{
    for (int i = 0; i < MAX_PROTECTED; i++)
        if (p->protected[i].end && addr >= p->protected[i].start && addr < p->protected[i].end)
            return i;
    return -1;
}

int mm__pager_protect(mm_pager_t *p, uintptr_t addr, uint64_t len)
{
    if (p->uffd < 0)
        return 0; /* the owner is stopped for the batch: nothing can race it */
    int err = -EBUSY;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < MAX_PROTECTED; i++) {
        if (p->protected[i].end)
            continue;
        err = write_protect(p, addr, len, true);
        if (!err)
            p->protected[i] = (span_t){addr, addr + len};
        break;
    }
    pthread_mutex_unlock(&p->lock);
    return err;
}

void mm__pager_unprotect(mm_pager_t *p, uintptr_t addr, uint64_t len)
{
    if (p->uffd < 0)
        return;
    pthread_mutex_lock(&p->lock);
    /* After a remap the range is no longer registered for write-protect and
     * this fails; the wake below is what the waiting writers need then. */
    (void)write_protect(p, addr, len, false);
    for (int i = 0; i < MAX_PROTECTED; i++)
        if (p->protected[i].start == addr && p->protected[i].end == addr + len) {
            p->protected[i].end = 0;
            break;
        }
    pthread_mutex_unlock(&p->lock);
    (void)mm__pager_wake(p, addr, len);
}

/* A writer hit a protected page. If a page-out holds it, the page-out's
 * unprotect wakes the writer; otherwise the protection is stale: lift it. */
static void on_wp_fault(mm_pager_t *p, uintptr_t page)
{
    count(&p->wp_faults, 1);
    pthread_mutex_lock(&p->lock);
    if (protected_index(p, page) < 0 && write_protect(p, page, PAGE_BYTES, false) < 0)
        (void)mm__pager_wake(p, page, PAGE_BYTES);
    pthread_mutex_unlock(&p->lock);
}

static void on_missing_fault(mm_pager_t *p, uintptr_t page, bool write)
{
    route_t r = {0};
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->route_count; i++)
        if (page >= p->routes[i].start && page < p->routes[i].end)
            r = p->routes[i];
    pthread_mutex_unlock(&p->lock);
    count(&p->missing_faults, 1);
    int err = r.fn ? r.fn(r.arg, page, write) : -ENOENT;
    if (err < 0) {
        count(&p->failed_faults, 1);
        /* Nobody can bring this page back truthfully: the toucher gets
         * SIGBUS instead of spinning on the fault or reading wrong data. */
        if (mm__pager_poison(p, page, PAGE_BYTES) < 0)
            (void)mm__pager_wake(p, page, PAGE_BYTES);
    }
}

int mm__pager_dispatch(mm_pager_t *p)
{
    struct uffd_msg msgs[MSGS_PER_READ];
    int handled = 0;
    for (;;) {
        int was;
        (void)pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &was);
        ssize_t n = read(p->uffd, msgs, sizeof msgs);
        (void)pthread_setcancelstate(was, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? handled : -errno;
        }
        size_t count_msgs = (size_t)n / sizeof msgs[0];
        for (size_t i = 0; i < count_msgs; i++) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                continue;
            uintptr_t page =
                (uintptr_t)msgs[i].arg.pagefault.address & ~(uintptr_t)(PAGE_BYTES - 1);
            uint64_t flags = msgs[i].arg.pagefault.flags;
            if (flags & UFFD_PAGEFAULT_FLAG_WP)
                on_wp_fault(p, page);
            else
                on_missing_fault(p, page, flags & UFFD_PAGEFAULT_FLAG_WRITE);
            handled++;
        }
        if ((size_t)n < sizeof msgs)
            return handled;
    }
}

/* Next run of resident pages of fd in [*pos, end): SEEK_DATA/SEEK_HOLE. */
static bool next_data_run(int fd, uint64_t *pos, uint64_t end, uint64_t *run_end)
{
    if (*pos >= end)
        return false;
    off_t data = lseek(fd, (off_t)*pos, SEEK_DATA);
    if (data < 0 || (uint64_t)data >= end)
        return false;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    uint64_t h = hole < 0 ? end : (uint64_t)hole;
    *pos = (uint64_t)data & ~(PAGE_BYTES - 1);
    *run_end = h < end ? (h + PAGE_BYTES - 1) & ~(PAGE_BYTES - 1) : end;
    if (*run_end > end)
        *run_end = end;
    return true;
}

/* Store pages [off, off+len) of fd under first_key + (page - base)/4K. */
static int store_run(mm_pager_t *p, int fd, uint64_t off, uint64_t len, uint64_t key, uint8_t *buf)
{
    for (uint64_t done = 0; done < len;) {
        uint64_t piece =
            len - done < COPY_PAGES * PAGE_BYTES ? len - done : COPY_PAGES * PAGE_BYTES;
        ssize_t n = pread(fd, buf, piece, (off_t)(off + done));
        if (n < 0)
            return -errno;
        if ((uint64_t)n < piece) /* past the end of the memfd: a caller's mistake */
            return -EINVAL;
        for (uint64_t i = 0; i < piece; i += PAGE_BYTES) {
            int err = mm__swap_put(p->swap, key + (done + i) / PAGE_BYTES, buf + i);
            if (err < 0)
                return err;
        }
        done += piece;
    }
    return 0;
}

typedef struct run {
    size_t seg;
    uint64_t start, end; /* byte offsets from the segment's start */
} run_t;

/* The runs to store: whole segments, or their resident parts. Returns the
 * count, or -ENOMEM. */
static ssize_t find_runs(int fd, const mm_pager_seg_t *segs, size_t nsegs, bool whole, run_t **out)
{
    size_t cap = 16, n = 0;
    run_t *runs = malloc(cap * sizeof *runs);
    for (size_t i = 0; runs && i < nsegs; i++) {
        uint64_t pos = segs[i].off, end = segs[i].off + segs[i].len, run_end = end;
        while (runs && (whole ? pos < end : next_data_run(fd, &pos, end, &run_end))) {
            if (n == cap) {
                run_t *bigger = realloc(runs, 2 * cap * sizeof *runs);
                if (!bigger) {
                    free(runs);
                    runs = NULL;
                    break;
                }
                runs = bigger, cap *= 2;
            }
            runs[n++] = (run_t){i, pos - segs[i].off, run_end - segs[i].off};
            pos = run_end;
        }
    }
    *out = runs;
    return runs ? (ssize_t)n : -ENOMEM;
}

int mm__pager_page_out_v(mm_pager_t *p, int fd, const mm_pager_seg_t *segs, size_t nsegs,
                         bool whole, mm_pager_drop_fn drop, void *ctx, uint64_t *paged_bytes)
{
    if (paged_bytes)
        *paged_bytes = 0;
    if (!drop || nsegs == 0 || nsegs > MM_PAGER_MAX_SEGS)
        return -EINVAL;
    uint64_t total = 0;
    for (size_t i = 0; i < nsegs; i++) {
        if (segs[i].len == 0 || segs[i].addr % PAGE_BYTES || segs[i].off % PAGE_BYTES ||
            segs[i].len % PAGE_BYTES)
            return -EINVAL;
        total += segs[i].len;
    }
    uint8_t *buf = aligned_alloc(PAGE_BYTES, COPY_PAGES * PAGE_BYTES);
    if (!buf)
        return -ENOMEM;
    int err = 0;
    size_t protected_segs = 0;
    pthread_mutex_lock(&p->io_lock);
    for (; protected_segs < nsegs && !err; protected_segs++)
        err = mm__pager_protect(p, segs[protected_segs].addr, segs[protected_segs].len);
    if (err) {
        protected_segs--; /* the one that failed holds no protection */
        goto out;
    }

    /* Copy: with the segments protected, what pread sees is final. */
    run_t *runs = NULL;
    ssize_t nruns = find_runs(fd, segs, nsegs, whole, &runs);
    if (nruns < 0) {
        err = (int)nruns;
        goto out;
    }
    size_t stored = 0;
    for (; stored < (size_t)nruns && !err; stored++) {
        const run_t *r = &runs[stored];
        const mm_pager_seg_t *sg = &segs[r->seg];
        err = store_run(p, fd, sg->off + r->start, r->end - r->start,
                        sg->first_key + r->start / PAGE_BYTES, buf);
    }
    if (!err)
        err = mm__swap_sync(p->swap);

    /* Drop only after the index is durable; a failed drop keeps what is
     * left in memory and forgets its copies. */
    size_t dropped = 0;
    uint64_t dropped_bytes = 0;
    while (!err && dropped < (size_t)nruns) {
        const run_t *r = &runs[dropped];
        const mm_pager_seg_t *sg = &segs[r->seg];
        err = drop(ctx, sg->addr + r->start, sg->off + r->start, r->end - r->start);
        if (!err) {
            dropped_bytes += r->end - r->start;
            dropped++;
        }
    }
    for (size_t i = dropped; err && i < stored; i++)
        mm__pager_forget(p, segs[runs[i].seg].first_key + runs[i].start / PAGE_BYTES,
                         (runs[i].end - runs[i].start) / PAGE_BYTES);
    free(runs);
    count(&p->pages_out, dropped_bytes / PAGE_BYTES);
    if (!whole && !err)
        count(&p->holes_skipped, (total - dropped_bytes) / PAGE_BYTES);
    if (paged_bytes)
        *paged_bytes = dropped_bytes;
out:
    pthread_mutex_unlock(&p->io_lock);
    for (size_t i = 0; i < protected_segs; i++)
        mm__pager_unprotect(p, segs[i].addr, segs[i].len);
    free(buf);
    return err;
}

int mm__pager_page_out(mm_pager_t *p, uintptr_t addr, int fd, uint64_t off, uint64_t len,
                       uint64_t first_key, bool whole, mm_pager_drop_fn drop, void *ctx,
                       uint64_t *paged_bytes)
{
    mm_pager_seg_t seg = {.addr = addr, .off = off, .len = len, .first_key = first_key};
    return mm__pager_page_out_v(p, fd, &seg, 1, whole, drop, ctx, paged_bytes);
}

/* mm__pager_read(), also counting in *stored the pages that were stored. */
static int read_pages(mm_pager_t *p, uint64_t first_key, uint64_t n, void *buf, uint64_t *stored)
{
    uint8_t *out = buf;
    *stored = 0;
    for (uint64_t i = 0; i < n; i++) {
        int err = mm__swap_get(p->swap, first_key + i, out + i * PAGE_BYTES);
        if (err == -ENOENT)
            memset(out + i * PAGE_BYTES, 0, PAGE_BYTES);
        else if (err < 0)
            return err;
        else
            ++*stored;
    }
    return 0;
}

int mm__pager_read(mm_pager_t *p, uint64_t first_key, uint64_t n, void *buf)
{
    uint64_t stored;
    return read_pages(p, first_key, n, buf, &stored);
}

void mm__pager_forget(mm_pager_t *p, uint64_t first_key, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        (void)mm__swap_drop(p->swap, first_key + i); /* -ENOENT: was never stored */
}

/* True if any page of [addr, addr+len) is protected. Called with lock held. */
static bool overlaps_protected(const mm_pager_t *p, uintptr_t addr, uint64_t len)
{
    for (int i = 0; i < MAX_PROTECTED; i++)
        if (p->protected[i].end && addr < p->protected[i].end && p->protected[i].start < addr + len)
            return true;
    return false;
}

/*
 * UFFDIO_COPY of len bytes from src to dst, stepping over pages that are
 * already there (EEXIST). Does not wake: the caller wakes the whole run. A
 * page put back inside a range a page-out protects stays write-protected:
 * that page-out may copy it next, and a write must not slip in between.
 * The check and the copy hold the lock, as a protect does.
 */
static int copy_in(mm_pager_t *p, uintptr_t dst, const uint8_t *src, uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        struct uffdio_copy c = {
            .dst = dst + done,
            .src = (uintptr_t)(src + done),
            .len = len - done,
            .mode = UFFDIO_COPY_MODE_DONTWAKE,
        };
        pthread_mutex_lock(&p->lock);
        if (overlaps_protected(p, c.dst, c.len))
            c.mode |= UFFDIO_COPY_MODE_WP;
        int r = ioctl(p->uffd, UFFDIO_COPY, &c);
        pthread_mutex_unlock(&p->lock);
        if (c.copy > 0)
            done += (uint64_t)c.copy;
        if (r == 0)
            continue;
        if (errno == EEXIST)
            done += PAGE_BYTES; /* skip the page that is there */
        else if (errno != EAGAIN)
            return -errno;
    }
    return 0;
}

int mm__pager_fill(mm_pager_t *p, uintptr_t addr, uint64_t len, uint64_t first_key)
{
    if (len == 0 || addr % PAGE_BYTES || len % PAGE_BYTES)
        return -EINVAL;
    uint8_t *buf = aligned_alloc(PAGE_BYTES, COPY_PAGES * PAGE_BYTES);
    if (!buf)
        return -ENOMEM;
    int err = 0;
    uint64_t done = 0;
    while (!err && done < len) {
        uint64_t piece =
            len - done < COPY_PAGES * PAGE_BYTES ? len - done : COPY_PAGES * PAGE_BYTES;
        uint64_t key = first_key + done / PAGE_BYTES;
        pthread_mutex_lock(&p->io_lock);
        uint64_t had = 0;
        err = read_pages(p, key, piece / PAGE_BYTES, buf, &had);
        if (!err)
            err = copy_in(p, addr + done, buf, piece);
        if (!err) {
            count(&p->pages_in, had);
            count(&p->zero_fills, piece / PAGE_BYTES - had);
            mm__pager_forget(p, key, piece / PAGE_BYTES);
            done += piece;
        }
        pthread_mutex_unlock(&p->io_lock);
    }
    free(buf);
    (void)mm__pager_wake(p, addr, len);
    return err;
}

int mm__pager_zero(mm_pager_t *p, uintptr_t addr, uint64_t len)
{
    /* A copy of zeros rather than UFFDIO_ZEROPAGE, which cannot leave the
     * page write-protected (see copy_in). */
    static _Alignas(4096) const uint8_t zeros[COPY_PAGES * PAGE_BYTES];
    int err = 0;
    for (uint64_t done = 0; !err && done < len;) {
        uint64_t piece = len - done < sizeof zeros ? len - done : sizeof zeros;
        err = copy_in(p, addr + done, zeros, piece);
        done += piece;
    }
    if (!err)
        count(&p->zero_fills, len / PAGE_BYTES);
    (void)mm__pager_wake(p, addr, len);
    return err;
}

void mm__pager_stats(mm_pager_t *p, mm_pager_stats_t *out)
{
    out->missing_faults = atomic_load_explicit(&p->missing_faults, memory_order_relaxed);
    out->wp_faults = atomic_load_explicit(&p->wp_faults, memory_order_relaxed);
    out->failed_faults = atomic_load_explicit(&p->failed_faults, memory_order_relaxed);
    out->pages_out = atomic_load_explicit(&p->pages_out, memory_order_relaxed);
    out->pages_in = atomic_load_explicit(&p->pages_in, memory_order_relaxed);
    out->zero_fills = atomic_load_explicit(&p->zero_fills, memory_order_relaxed);
    out->holes_skipped = atomic_load_explicit(&p->holes_skipped, memory_order_relaxed);
}
