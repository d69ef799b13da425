/*
 * Host paging: reclaim step 4. A client that let a revocation lapse and
 * still holds more than its target has chunks of its region paged out by
 * the daemon, through the paging engine (libmm/src/pager.h) and the
 * userfaultfd the client offered (MM_MSG_PAGING), and faulted back when it
 * touches them (on the pager's own thread, one per paged client). Only what
 * was stored durably is punched: nothing is lost.
 *
 * A client that offered no usable userfaultfd gets step 5 through the same
 * engine: it is frozen (SIGSTOP) for its page-outs, which then need no write
 * protection, and its pages are written back before it is thawed.
 *
 * The daemon registers a chunk with the client's userfaultfd only when it
 * first pages it (registering the whole region at once would send every
 * first touch of a fresh page through the daemon). A chunk is paged with
 * write protection on, so no write of the client races the copy. Which
 * chunks: the host cannot see the client's accessed bits, so a cursor walks
 * the region and takes the next resident chunks in turn (a CLOCK without
 * reference bits), skipping discardable ones (step 2 takes those without a
 * copy).
 *
 * The swap file lives in --swap-dir (default: the state directory), one per
 * client, created at its first page-out with room for its whole region, and
 * removed with the client. Faults are answered 64 KiB at a time.
 *
 * Threads: the event-loop thread, like the rest of the host record, except
 * host_fill (the pager's thread: it reads only what never changes while the
 * pager lives) and mm__paging_forget_chunks (a reclaim worker, while the
 * loop waits).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "pager.h"
#include "platform.h"
#include "swapstore.h"

/* At most this much is paged out per client per tick (100 ms): the event
 * loop serves everyone else in between. */
#define PAGE_OUT_PER_TICK ((uint64_t)32 << 20)
/* A fault brings back this much around the faulting page. */
#define FILL_BYTES ((uint64_t)64 << 10)

static bool chunk_registered(const mm_host_client_t *c, uint32_t chunk)
{
    return c->paging_chunks && (c->paging_chunks[chunk / 64] >> (chunk % 64) & 1);
}

/* Is fd a userfaultfd? Its /proc link names the anonymous inode. */
bool mm__paging_is_uffd(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return false;
    target[n] = '\0';
    return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

/*
 * Does the client map its region at addr? Every byte of [addr, addr+len)
 * must be covered by mappings of the region's inode at the matching offset,
 * read from /proc/PID/maps: the daemon never takes the client's word for
 * where to register.
 */
static bool region_mapped_at(const mm_host_client_t *c, uint64_t addr, uint64_t len)
{
    struct stat st;
    char path[64], line[512];
    if (fstat(c->region_fd, &st) < 0)
        return false;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)c->pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    uint64_t covered = addr;
    while (covered < addr + len && fgets(line, sizeof line, f)) {
        unsigned long long lo, hi, off, ino;
        unsigned maj, min;
        if (sscanf(line, "%llx-%llx %*s %llx %x:%x %llu", &lo, &hi, &off, &maj, &min, &ino) != 6)
            continue;
        if (ino != st.st_ino || lo > covered || hi <= covered ||
            off + (covered - lo) != covered - addr)
            continue;
        covered = hi;
    }
    fclose(f);
    return covered >= addr + len;
}

int mm__paging_offer(mm_server_t *s, mm_host_client_t *c, int uffd, uint64_t region_addr)
{
    (void)s;
    if (c->uffd >= 0)
        return -EALREADY;
    if (!mm__paging_is_uffd(uffd))
        return -EBADF;
    if (region_addr + c->region_bytes < region_addr)
        return -EINVAL;
    c->paging_chunks = calloc((c->chunk_count + 63) / 64, sizeof *c->paging_chunks);
    if (!c->paging_chunks)
        return -ENOMEM;
    c->uffd = uffd;
    c->region_addr = region_addr;
    c->state_dirty = true;
    log_debug("client %u: offered host paging at %#llx", c->id, (unsigned long long)region_addr);
    return 0;
}

/* The route of a client's missing faults: its copy from swap, or zeros. */
static int host_fill(void *arg, uintptr_t addr, bool write)
{
    (void)write;
    mm_host_client_t *c = arg;
    uint64_t off = (addr - c->region_addr) & ~(FILL_BYTES - 1);
    uint64_t len = off + FILL_BYTES <= c->region_bytes ? FILL_BYTES : c->region_bytes - off;
    return mm__pager_fill(c->pager, c->region_addr + off, len, off / MM_FRAME_SIZE);
}

void mm__paging_swap_path(mm_server_t *s, const mm_host_client_t *c, char *out, size_t cap)
{
    const char *dir = s->cfg.swap_dir ? s->cfg.swap_dir : s->cfg.state_dir;
    snprintf(out, cap, "%s/swap-%u", dir, c->id);
}

/* The client's swap store, made at its first forced step. */
static int ensure_swap(mm_server_t *s, mm_host_client_t *c)
{
    if (c->swap)
        return 0;
    char path[4096];
    const char *dir = s->cfg.swap_dir ? s->cfg.swap_dir : s->cfg.state_dir;
    mm__paging_swap_path(s, c, path, sizeof path);
    uint64_t frames = c->region_bytes / MM_FRAME_SIZE;
    int err = mm__swap_open(path, frames, frames, &c->swap);
    if (err == -EXDEV)
        log_error("host paging needs a swap directory on disk: %s is tmpfs (set --swap-dir)", dir);
    return err;
}

/* First forced step: the swap store and the pager (without a userfaultfd
 * for a client that is frozen instead). */
static int paging_start(mm_server_t *s, mm_host_client_t *c)
{
    int err = ensure_swap(s, c);
    if (err < 0)
        return err;
    err = mm__pager_create(c->uffd, c->swap, &c->pager);
    if (!err && c->uffd >= 0)
        err = mm__pager_route(c->pager, c->region_addr, c->region_bytes, host_fill, c);
    /* Faults are read on a thread of their own: the fd is shared with the
     * client, which could make reads of it block (clearing O_NONBLOCK on
     * its open file, or reading the faults itself); only that thread would
     * then wait, never the event loop. */
    if (!err && c->uffd >= 0)
        err = mm__pager_start(c->pager);
    if (err) {
        mm__pager_destroy(c->pager);
        c->pager = NULL;
        mm__swap_close(c->swap, true);
        c->swap = NULL;
    }
    return err;
}

static int punch_drop(void *ctx, uintptr_t addr, uint64_t off, uint64_t len)
{
    (void)addr;
    const mm_host_client_t *c = ctx;
    return mm__punch(c->region_fd, off, len);
}

/* Pick up to n chunks to page from the cursor on: granted, resident, not
 * discardable. Registers them. Returns how many. */
static size_t pick_chunks(mm_host_client_t *c, mm_pager_seg_t *segs, size_t n)
{
    size_t k = 0;
    for (uint32_t step = 0; step < c->chunk_count && k < n; step++) {
        uint32_t i = c->paging_cursor;
        c->paging_cursor = (i + 1) % c->chunk_count;
        uint64_t off = (uint64_t)i * MM_CHUNK_SIZE;
        if (host_reclaimed(c, i) || mm__frames_chunk_discardable(&c->frames, i) ||
            mm__range_has_data(c->region_fd, off, MM_CHUNK_SIZE) <= 0)
            continue;
        if (c->uffd >= 0 && !chunk_registered(c, i)) {
            int err = mm__pager_register(c->pager, c->region_addr + off, MM_CHUNK_SIZE, true);
            if (err < 0) {
                log_warn("client %u: registering chunk %u for paging: %s", c->id, i,
                         strerror(-err));
                continue;
            }
            c->paging_chunks[i / 64] |= 1ull << (i % 64);
        }
        segs[k++] = (mm_pager_seg_t){c->region_addr + off, off, MM_CHUNK_SIZE, off / MM_FRAME_SIZE};
    }
    return k;
}

/* Has every thread of the client stopped? /proc/PID/task/TID/stat's state. */
static bool all_threads_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return false;
    bool stopped = true;
    struct dirent *e;
    while (stopped && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char stat_path[400], buf[512];
        snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, e->d_name);
        FILE *f = fopen(stat_path, "re");
        if (!f)
            continue; /* the thread exited */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *paren = strrchr(buf, ')');
        stopped = paren && (paren[2] == 'T' || paren[2] == 't');
    }
    closedir(d);
    return stopped;
}

/* Stop the client with SIGSTOP through its pidfd. Its pages are copied
 * only once every thread is seen stopped (a later tick, if need be), so
 * nothing of it runs while they are. */
static int freeze(mm_host_client_t *c)
{
    if (syscall(SYS_pidfd_send_signal, c->pidfd, SIGSTOP, NULL, 0) < 0)
        return -errno;
    c->frozen = true;
    c->freeze_confirmed = false;
    c->freezes++;
    c->state_dirty = true;
    log_warn("client %u (%s, pid %d): frozen (SIGSTOP) to page it out", c->id, c->name,
             (int)c->pid);
    return 0;
}

/*
 * Put every stored page back into the region where it is still a hole (a
 * page the client wrote since — after someone continued it — is newer and
 * stays), then forget the copies. Runs on the loop thread, which is also
 * the only one answering the client's faults, so no fill races it.
 */
static uint64_t restore_all(mm_host_client_t *c)
{
    if (!c->swap)
        return 0;
    uint8_t *page = aligned_alloc(MM_FRAME_SIZE, MM_FRAME_SIZE);
    uint64_t restored = 0, frames = c->region_bytes / MM_FRAME_SIZE;
    for (uint64_t key = 0; page && key < frames; key++) {
        if (!mm__swap_has(c->swap, key))
            continue;
        int err = mm__swap_get(c->swap, key, page);
        if (err == 0 && mm__range_has_data(c->region_fd, key * MM_FRAME_SIZE, MM_FRAME_SIZE) == 0)
            err = pwrite(c->region_fd, page, MM_FRAME_SIZE, (off_t)(key * MM_FRAME_SIZE)) ==
                          MM_FRAME_SIZE
                      ? 0
                      : -EIO;
        if (err < 0) {
            log_error("client %u (%s): page %llu could not be put back: %s", c->id, c->name,
                      (unsigned long long)key, strerror(-err));
            continue; /* kept in the store: nothing is dropped */
        }
        restored += MM_FRAME_SIZE;
        (void)mm__swap_drop(c->swap, key);
    }
    free(page);
    return restored;
}

static void thaw(mm_host_client_t *c, const char *why)
{
    uint64_t restored = restore_all(c);
    if (syscall(SYS_pidfd_send_signal, c->pidfd, SIGCONT, NULL, 0) < 0 && errno != ESRCH)
        log_error("client %u (%s): SIGCONT: %s", c->id, c->name, strerror(errno));
    c->frozen = false;
    c->state_dirty = true;
    log_warn("client %u (%s): thawed (%s), %llu KiB put back", c->id, c->name, why,
             (unsigned long long)restored >> 10);
}

void mm__paging_tick(mm_server_t *s, mm_host_client_t *c)
{
    (void)s;
    if (!c->frozen || c->state != MM_CLIENT_REGISTERED)
        return;
    if (c->freeze_confirmed && !all_threads_stopped(c->pid)) {
        /* The limit of SIGSTOP: any SIGCONT of the same user resumes it, and
         * until its pages are back it reads zeros where they were. */
        c->early_thaws++;
        log_error("client %u (%s, pid %d): continued by someone else while frozen; putting its "
                  "pages back now",
                  c->id, c->name, (int)c->pid);
        thaw(c, "continued behind the daemon's back");
        return;
    }
    if (c->target_bytes >= c->resident_bytes + mm__paging_paged_bytes(c))
        thaw(c, "memory granted again");
}

/* The client's userfaultfd cannot be used: it is frozen instead. */
static void refuse_uffd(mm_host_client_t *c, const char *why)
{
    log_warn("client %u (%s): no host paging (%s); it will be frozen instead", c->id, c->name, why);
    close(c->uffd);
    c->uffd = -1;
}

uint64_t mm__paging_force(mm_server_t *s, mm_host_client_t *c, uint64_t bytes)
{
    if (c->state != MM_CLIENT_REGISTERED)
        return 0;
    if (!c->pager) {
        /* /proc/PID/maps is not read atomically: a client mapping or
         * unmapping elsewhere meanwhile can hide a line, so look again
         * before concluding. */
        bool mapped = c->uffd < 0;
        for (int look = 0; look < 3 && !mapped; look++)
            mapped = region_mapped_at(c, c->region_addr, c->region_bytes);
        if (!mapped)
            refuse_uffd(c, "its region is not mapped where it said");
        int err = paging_start(s, c);
        if (err < 0 && c->uffd >= 0) {
            refuse_uffd(c, strerror(-err));
            err = paging_start(s, c);
        }
        if (err < 0) {
            log_warn("client %u (%s): no forced step possible: %s", c->id, c->name, strerror(-err));
            return 0;
        }
    }
    if (c->uffd < 0) {
        /* Step 5: nothing of it may run while its pages are copied. */
        if (!c->frozen && freeze(c) < 0)
            return 0;
        if (!c->freeze_confirmed) {
            if (!all_threads_stopped(c->pid))
                return 0; /* still stopping: the next tick looks again */
            c->freeze_confirmed = true;
        }
    }
    if (bytes > PAGE_OUT_PER_TICK)
        bytes = PAGE_OUT_PER_TICK;
    mm_pager_seg_t segs[MM_PAGER_MAX_SEGS];
    size_t want = (size_t)((bytes + MM_CHUNK_SIZE - 1) / MM_CHUNK_SIZE);
    size_t n = pick_chunks(c, segs, want < MM_PAGER_MAX_SEGS ? want : MM_PAGER_MAX_SEGS);
    if (n == 0)
        return 0;
    /* A restarted daemon must know this client has pages in swap (and
     * which chunks are registered, or frozen) before any is punched. */
    if (mm__state_save(s, c) < 0)
        return 0;
    uint64_t paged = 0, t0 = mm__now_ns();
    int err = mm__pager_page_out_v(c->pager, c->region_fd, segs, n, false, punch_drop, c, &paged);
    if (paged > 0)
        mm__ladder_observe(&s->ladder, c->uffd >= 0 ? MM_STEP_PAGING : MM_STEP_FREEZE,
                           mm__now_ns() - t0, paged);
    if (err < 0)
        log_warn("client %u (%s): paging stopped after %llu bytes: %s", c->id, c->name,
                 (unsigned long long)paged, strerror(-err));
    c->paged_out_total += paged;
    mm__refresh_resident(c);
    log_info("client %u (%s): paged out %llu KiB (%llu KiB in swap)", c->id, c->name,
             (unsigned long long)paged >> 10, (unsigned long long)mm__paging_paged_bytes(c) >> 10);
    return paged;
}

void mm__paging_forget_chunks(mm_host_client_t *c, uint32_t first, uint32_t n)
{
    if (!c->pager)
        return;
    /* The chunks' content is gone (the host took them back): their copies
     * must never come back into frames installed later, and a later install
     * should populate without a fault through the daemon per page. */
    mm__pager_forget(c->pager, (uint64_t)first * MM_CHUNK_FRAMES, (uint64_t)n * MM_CHUNK_FRAMES);
    for (uint32_t i = first; i < first + n; i++) {
        if (!chunk_registered(c, i))
            continue;
        /* A failure leaves the chunk registered: slower, still correct. */
        if (mm__pager_unregister(c->pager, c->region_addr + (uint64_t)i * MM_CHUNK_SIZE,
                                 MM_CHUNK_SIZE) == 0) {
            c->paging_chunks[i / 64] &= ~(1ull << (i % 64));
            c->state_dirty = true;
        }
    }
}

void mm__paging_shutdown(mm_server_t *s, mm_host_client_t *c)
{
    if (c->frozen)
        thaw(c, "the daemon stops");
    else if (restore_all(c) > 0)
        log_info("client %u (%s): paged pages put back before the daemon stops", c->id, c->name);
    /* Unregistering wakes any thread still waiting on a fault. */
    for (uint32_t i = 0; c->pager && i < c->chunk_count; i++)
        if (chunk_registered(c, i))
            (void)mm__pager_unregister(c->pager, c->region_addr + (uint64_t)i * MM_CHUNK_SIZE,
                                       MM_CHUNK_SIZE);
    mm__paging_release(s, c);
}

void mm__paging_release(mm_server_t *s, mm_host_client_t *c)
{
    if (c->frozen) /* removed while frozen (its socket failed): let it run */
        (void)syscall(SYS_pidfd_send_signal, c->pidfd, SIGCONT, NULL, 0);
    c->frozen = false;
    (void)s;
    if (c->pager) {
        mm__pager_destroy(c->pager);
        c->pager = NULL;
    }
    if (c->swap) {
        mm__swap_close(c->swap, true);
        c->swap = NULL;
    }
    if (c->uffd >= 0)
        close(c->uffd);
    c->uffd = -1;
    free(c->paging_chunks);
    c->paging_chunks = NULL;
}

uint64_t mm__paging_paged_bytes(const mm_host_client_t *c)
{
    if (!c->swap)
        return 0;
    mm_swap_stats_t st;
    mm__swap_stats(c->swap, &st);
    return st.used * MM_FRAME_SIZE;
}

/*
 * After a restart: the swap store an earlier daemon left is reopened (its
 * durable index says which pages it holds). A copy of a page that is also
 * in the region is from a page-out or a fill the crash cut short: the
 * region's page is the live one, and the copy is dropped. With a
 * userfaultfd, faults are answered again and every thread the earlier
 * daemon left waiting (on a fault it read, or a write-protected page) is
 * woken to fault anew; without one (a client that was frozen), every page
 * is put back at once.
 */
int mm__paging_resume(mm_server_t *s, mm_host_client_t *c, int uffd)
{
    uint64_t frames = c->region_bytes / MM_FRAME_SIZE;
    if (c->swap_kept && !c->swap) {
        char path[4096];
        mm__paging_swap_path(s, c, path, sizeof path);
        int err = mm__swap_reopen(path, frames, frames, &c->swap);
        if (err < 0) {
            log_error("client %u (%s): its swap store %s cannot be reopened: %s; pages it held are "
                      "lost to it",
                      c->id, c->name, path, strerror(-err));
            c->swap = NULL;
        }
    }
    c->swap_kept = false;
    for (uint64_t key = 0; c->swap && key < frames; key++)
        if (mm__swap_has(c->swap, key) &&
            mm__range_has_data(c->region_fd, key * MM_FRAME_SIZE, MM_FRAME_SIZE) > 0)
            (void)mm__swap_drop(c->swap, key);
    if (uffd < 0) {
        uint64_t restored = restore_all(c);
        if (restored)
            log_info("client %u (%s): %llu KiB put back after the restart", c->id, c->name,
                     (unsigned long long)restored >> 10);
        c->state_dirty = true;
        return 0;
    }
    c->uffd = uffd;
    bool registered = false;
    for (uint32_t i = 0; i < c->chunk_count && !registered; i++)
        registered = chunk_registered(c, i);
    if (!registered && !c->swap)
        return 0; /* it never was paged: a pager starts at its first page-out */
    int err = paging_start(s, c);
    if (err < 0) {
        log_error("client %u (%s): cannot answer its faults after the restart: %s", c->id, c->name,
                  strerror(-err));
        return err;
    }
    /* Registering again with the same userfaultfd is harmless, and makes
     * the kernel agree with the record whatever the crash interrupted. */
    for (uint32_t i = 0; i < c->chunk_count; i++) {
        if (!chunk_registered(c, i))
            continue;
        uintptr_t at = c->region_addr + (uint64_t)i * MM_CHUNK_SIZE;
        if (mm__pager_register(c->pager, at, MM_CHUNK_SIZE, true) < 0)
            log_warn("client %u (%s): chunk %u cannot be registered again", c->id, c->name, i);
        mm__pager_unprotect(c->pager, at, MM_CHUNK_SIZE);
    }
    /* Ignored on failure: a range with nobody waiting has nothing to wake. */
    (void)mm__pager_wake(c->pager, c->region_addr, c->region_bytes);
    c->state_dirty = true;
    return 0;
}
