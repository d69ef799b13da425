/*
 * The paging engine over a memfd mapped in this process: page-out through
 * write protection, the swap store and a punch; faults brought back by a
 * route; concurrent writers; a full store; a damaged page.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pager.h"
#include "platform.h"

#define PAGE 4096u

typedef struct fixture {
    char dir[64];
    char swap_path[96];
    char index_path[112];
    int memfd;
    uint8_t *base;
    uint64_t bytes;
    int uffd;
    mm_swap_t *swap;
    mm_pager_t *pager;
} fixture_t;

static fixture_t fx;

/* The route: a missing page comes back from the key of its frame. */
static int fill_route(void *arg, uintptr_t addr, bool write)
{
    (void)write;
    fixture_t *f = arg;
    uint64_t key = (addr - (uintptr_t)f->base) / PAGE;
    return mm__pager_fill(f->pager, addr, PAGE, key);
}

static int punch_drop(void *ctx, uintptr_t addr, uint64_t off, uint64_t len)
{
    (void)addr;
    fixture_t *f = ctx;
    return mm__punch(f->memfd, off, len);
}

/* A region of pages pages with a swap store of slots pages; skips when this
 * process may not open a full userfaultfd. */
static void setup_region(uint64_t pages, uint64_t slots)
{
    fx.uffd = mm__uffd_open();
    if (fx.uffd == -EPERM)
        cr_skip_test("full userfaultfd needs root or access to /dev/userfaultfd");
    cr_assert_geq(fx.uffd, 0, "uffd: %s", strerror(-fx.uffd));
    strcpy(fx.dir, "/tmp/mm-pager-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    snprintf(fx.swap_path, sizeof fx.swap_path, "%s/swap", fx.dir);
    snprintf(fx.index_path, sizeof fx.index_path, "%s.idx", fx.swap_path);
    fx.bytes = pages * PAGE;
    fx.memfd = mm__memfd_create_sealed("pager-test", fx.bytes);
    cr_assert_geq(fx.memfd, 0);
    fx.base = mmap(NULL, fx.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fx.memfd, 0);
    cr_assert_neq(fx.base, MAP_FAILED);
    cr_assert_eq(mm__swap_open(fx.swap_path, slots, pages, &fx.swap), 0);
    cr_assert_eq(mm__pager_create(fx.uffd, fx.swap, &fx.pager), 0);
    cr_assert_eq(mm__pager_register(fx.pager, (uintptr_t)fx.base, fx.bytes, true), 0);
    cr_assert_eq(mm__pager_route(fx.pager, (uintptr_t)fx.base, fx.bytes, fill_route, &fx), 0);
    cr_assert_eq(mm__pager_start(fx.pager), 0);
}

static void teardown_region(void)
{
    if (!fx.pager)
        return;
    mm__pager_destroy(fx.pager);
    munmap(fx.base, fx.bytes);
    close(fx.memfd);
    close(fx.uffd);
    mm__swap_close(fx.swap, true);
    rmdir(fx.dir);
    memset(&fx, 0, sizeof fx);
}

static uint64_t pattern(uint64_t page, uint64_t word, uint64_t seed)
{
    return (page * 0x9e3779b97f4a7c15ull) ^ (word * 0xbf58476d1ce4e5b9ull) ^ seed;
}

static void fill_pages(uint64_t first, uint64_t n, uint64_t seed)
{
    for (uint64_t p = first; p < first + n; p++) {
        uint64_t *w = (uint64_t *)(fx.base + p * PAGE);
        for (uint64_t i = 0; i < PAGE / 8; i++)
            w[i] = pattern(p, i, seed);
    }
}

static uint64_t bad_pages(uint64_t first, uint64_t n, uint64_t seed)
{
    uint64_t bad = 0;
    for (uint64_t p = first; p < first + n; p++) {
        const uint64_t *w = (const uint64_t *)(fx.base + p * PAGE);
        for (uint64_t i = 0; i < PAGE / 8; i++)
            if (w[i] != pattern(p, i, seed)) {
                bad++;
                break;
            }
    }
    return bad;
}

TestSuite(pager, .init = NULL, .fini = teardown_region, .timeout = 60);

Test(pager, page_out_then_touch_brings_every_page_back)
{
    setup_region(256, 512);
    fill_pages(0, 256, 1);
    cr_assert_eq(mm__resident_bytes(fx.memfd), 256 * PAGE);
    uint64_t paged = 0;
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                    punch_drop, &fx, &paged),
                 0);
    cr_assert_eq(paged, fx.bytes);
    cr_assert_eq(mm__resident_bytes(fx.memfd), 0, "paged-out pages must not stay resident");
    mm_swap_stats_t ss;
    mm__swap_stats(fx.swap, &ss);
    cr_assert_eq(ss.used, 256);
    cr_assert_eq(bad_pages(0, 256, 1), 0);
    mm_pager_stats_t ps;
    mm__pager_stats(fx.pager, &ps);
    cr_assert_eq(ps.pages_in, 256);
    cr_assert_eq(ps.pages_out, 256);
    mm__swap_stats(fx.swap, &ss);
    cr_assert_eq(ss.used, 0, "a page put back is forgotten by the store");
}

Test(pager, holes_are_not_stored)
{
    setup_region(64, 64);
    fill_pages(0, 16, 2);
    fill_pages(32, 16, 2);
    uint64_t paged = 0;
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                    punch_drop, &fx, &paged),
                 0);
    cr_assert_eq(paged, 32 * PAGE);
    mm_pager_stats_t ps;
    mm__pager_stats(fx.pager, &ps);
    cr_assert_eq(ps.holes_skipped, 32);
    cr_assert_eq(bad_pages(0, 16, 2), 0);
    cr_assert_eq(bad_pages(32, 16, 2), 0);
    /* A page that was never written reads zeros, as before the page-out. */
    for (uint64_t i = 0; i < PAGE; i++)
        cr_assert_eq(fx.base[20 * PAGE + i], 0);
}

Test(pager, a_kernel_access_faults_like_a_user_one)
{
    setup_region(16, 16);
    fill_pages(0, 16, 3);
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                    punch_drop, &fx, NULL),
                 0);
    /* write() reads the paged-out page inside the kernel: with a full
     * userfaultfd that waits for the fill instead of failing with EFAULT. */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    cr_assert_eq(write(fds[1], fx.base + 5 * PAGE, PAGE), (ssize_t)PAGE);
    uint8_t back[PAGE];
    cr_assert_eq(read(fds[0], back, PAGE), (ssize_t)PAGE);
    close(fds[0]);
    close(fds[1]);
    uint64_t first_word;
    memcpy(&first_word, back, sizeof first_word);
    cr_assert_eq(first_word, pattern(5, 0, 3));
}

typedef struct writer {
    pthread_t thread;
    uint64_t first_page, pages;
    _Atomic bool stop;
    uint64_t last; /* the last value written to every word of its pages */
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    uint64_t v = 0;
    while (!atomic_load(&w->stop)) {
        v++;
        for (uint64_t p = w->first_page; p < w->first_page + w->pages; p++) {
            volatile uint64_t *words = (volatile uint64_t *)(fx.base + p * PAGE);
            for (uint64_t i = 0; i < PAGE / 8; i += 64)
                words[i] = v;
        }
        w->last = v;
    }
    return NULL;
}

Test(pager, writers_during_page_out_lose_nothing)
{
    enum { PAGES = 128, WRITERS = 2, ROUNDS = 40 };
    setup_region(PAGES, PAGES);
    memset(fx.base, 0, fx.bytes);
    writer_t w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.first_page = (uint64_t)i * (PAGES / WRITERS), .pages = PAGES / WRITERS};
        cr_assert_eq(pthread_create(&w[i].thread, NULL, writer_main, &w[i]), 0);
    }
    uint64_t paged_total = 0;
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t paged = 0;
        int err = mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                     punch_drop, &fx, &paged);
        cr_assert_eq(err, 0, "page-out %d: %s", r, strerror(-err));
        paged_total += paged;
        usleep(2000);
    }
    for (int i = 0; i < WRITERS; i++) {
        atomic_store(&w[i].stop, true);
        pthread_join(w[i].thread, NULL);
    }
    cr_assert_gt(paged_total, 0);
    for (int i = 0; i < WRITERS; i++)
        for (uint64_t p = w[i].first_page; p < w[i].first_page + w[i].pages; p++) {
            const uint64_t *words = (const uint64_t *)(fx.base + p * PAGE);
            for (uint64_t k = 0; k < PAGE / 8; k += 64)
                cr_assert_eq(words[k], w[i].last, "page %lu word %lu: %lu, last written %lu",
                             (unsigned long)p, (unsigned long)k, (unsigned long)words[k],
                             (unsigned long)w[i].last);
        }
    mm_pager_stats_t ps;
    mm__pager_stats(fx.pager, &ps);
    cr_log_info("page-outs %lu pages, faults back %lu, writers that waited %lu",
                (unsigned long)ps.pages_out, (unsigned long)ps.pages_in,
                (unsigned long)ps.wp_faults);
}

Test(pager, a_full_swap_store_is_an_error_and_loses_nothing)
{
    setup_region(64, 16);
    fill_pages(0, 64, 4);
    uint64_t paged = 1;
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                    punch_drop, &fx, &paged),
                 -ENOSPC);
    cr_assert_eq(paged, 0);
    cr_assert_eq(mm__resident_bytes(fx.memfd), 64 * PAGE, "nothing may be dropped");
    mm_swap_stats_t ss;
    mm__swap_stats(fx.swap, &ss);
    cr_assert_eq(ss.used, 0, "a failed page-out leaves nothing stored");
    cr_assert_eq(bad_pages(0, 64, 4), 0);
    /* A page-out that fits still works afterwards. */
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, 16 * PAGE, 0, false,
                                    punch_drop, &fx, &paged),
                 0);
    cr_assert_eq(paged, 16 * PAGE);
    cr_assert_eq(bad_pages(0, 64, 4), 0);
}

static int failing_drop(void *ctx, uintptr_t addr, uint64_t off, uint64_t len)
{
    (void)ctx, (void)addr, (void)off, (void)len;
    return -EIO;
}

Test(pager, a_failed_drop_keeps_the_pages_and_forgets_the_copies)
{
    setup_region(32, 32);
    fill_pages(0, 32, 5);
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                    failing_drop, &fx, NULL),
                 -EIO);
    mm_swap_stats_t ss;
    mm__swap_stats(fx.swap, &ss);
    cr_assert_eq(ss.used, 0);
    cr_assert_eq(bad_pages(0, 32, 5), 0);
    fill_pages(0, 32, 6); /* still writable: the protection was lifted */
    cr_assert_eq(bad_pages(0, 32, 6), 0);
}

Test(pager, a_damaged_page_is_detected_on_fill)
{
    setup_region(8, 8);
    fill_pages(0, 8, 7);
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                    punch_drop, &fx, NULL),
                 0);
    int fd;
    uint64_t off;
    cr_assert_eq(mm__swap_locate(fx.swap, 3, &fd, &off), 0);
    uint8_t junk = 0x5a;
    cr_assert_eq(pwrite(fd, &junk, 1, (off_t)(off + 100)), 1);
    uint8_t buf[PAGE];
    cr_assert_eq(mm__pager_read(fx.pager, 3, 1, buf), -EBADMSG);
    cr_assert_eq(mm__pager_read(fx.pager, 2, 1, buf), 0, "other pages still read");
}

#define SIGBUS_EXIT 42

/* Our own handler: sanitizers catch SIGBUS themselves and would abort. The
 * test ends here, so it removes its files itself (all async-signal-safe). */
static void on_sigbus(int sig)
{
    (void)sig;
    unlink(fx.swap_path);
    unlink(fx.index_path);
    rmdir(fx.dir);
    _exit(SIGBUS_EXIT);
}

/* Touching a page whose copy is damaged raises SIGBUS, never wrong data. */
Test(pager, touching_a_damaged_page_raises_sigbus, .exit_code = SIGBUS_EXIT)
{
    struct sigaction sa = {.sa_handler = on_sigbus};
    sigaction(SIGBUS, &sa, NULL);
    setup_region(8, 8);
    fill_pages(0, 8, 8);
    cr_assert_eq(mm__pager_page_out(fx.pager, (uintptr_t)fx.base, fx.memfd, 0, fx.bytes, 0, false,
                                    punch_drop, &fx, NULL),
                 0);
    int fd;
    uint64_t off;
    cr_assert_eq(mm__swap_locate(fx.swap, 6, &fd, &off), 0);
    uint8_t junk = 0xa5;
    cr_assert_eq(pwrite(fd, &junk, 1, (off_t)(off + 7)), 1);
    cr_assert_eq(bad_pages(0, 6, 8), 0);
    volatile uint8_t v = fx.base[6 * PAGE];
    (void)v;
    cr_assert_fail("the damaged page was read without SIGBUS");
}

Test(pager, routes_must_not_overlap)
{
    setup_region(16, 16);
    cr_assert_eq(mm__pager_route(fx.pager, (uintptr_t)fx.base + PAGE, PAGE, fill_route, &fx),
                 -EEXIST);
    cr_assert_eq(mm__pager_route(fx.pager, (uintptr_t)fx.base + 1, PAGE, fill_route, &fx), -EINVAL);
}
