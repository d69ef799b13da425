/*
 * Stress of the paging engine, as a plain program so that it also runs under
 * ThreadSanitizer: writer threads keep writing their pages while the main
 * thread pages the whole region out again and again and the pager's thread
 * brings pages back. At the end every page must hold its writer's last
 * value. Fixed seed-free pattern; not a benchmark.
 *
 * usage: stress_pager [ROUNDS]   (exit 0: intact, 1: a write was lost,
 * 77: no full userfaultfd here, which ctest reports as skipped)
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pager.h"
#include "platform.h"

#define PAGE    4096ull
#define PAGES   256ull
#define WRITERS 3u

typedef struct writer {
    pthread_t thread;
    uint8_t *base;
    uint64_t first, pages;
    _Atomic bool stop;
    _Atomic uint64_t last;
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    for (uint64_t v = 1; !atomic_load(&w->stop); v++) {
        for (uint64_t p = w->first; p < w->first + w->pages; p++)
            atomic_store_explicit((_Atomic uint64_t *)(w->base + p * PAGE), v,
                                  memory_order_relaxed);
        atomic_store(&w->last, v);
    }
    return NULL;
}

typedef struct region {
    uint8_t *base;
    int memfd;
    mm_pager_t *pager;
} region_t;

static int fill_route(void *arg, uintptr_t addr, bool write)
{
    (void)write;
    region_t *r = arg;
    return mm__pager_fill(r->pager, addr, PAGE, (addr - (uintptr_t)r->base) / PAGE);
}

static int punch_drop(void *ctx, uintptr_t addr, uint64_t off, uint64_t len)
{
    (void)addr;
    return mm__punch(((region_t *)ctx)->memfd, off, len);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    int uffd = mm__uffd_open();
    if (uffd == -EPERM) {
        fprintf(stderr, "stress_pager: skipped: no full userfaultfd for this process\n");
        return 77;
    }
    char dir[] = "/tmp/mm-pager-stress-XXXXXX", path[64];
    if (uffd < 0 || !mkdtemp(dir)) {
        fprintf(stderr, "stress_pager: setup: %s\n", strerror(uffd < 0 ? -uffd : errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/swap", dir);
    region_t r = {.memfd = mm__memfd_create_sealed("stress", PAGES * PAGE)};
    r.base = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, r.memfd, 0);
    mm_swap_t *swap = NULL;
    if (r.memfd < 0 || r.base == MAP_FAILED || mm__swap_open(path, PAGES, PAGES, &swap) < 0 ||
        mm__pager_create(uffd, swap, &r.pager) < 0 ||
        mm__pager_register(r.pager, (uintptr_t)r.base, PAGES * PAGE, true) < 0 ||
        mm__pager_route(r.pager, (uintptr_t)r.base, PAGES * PAGE, fill_route, &r) < 0 ||
        mm__pager_start(r.pager) < 0) {
        fprintf(stderr, "stress_pager: setup failed\n");
        return 1;
    }
    memset(r.base, 0, PAGES * PAGE);
    writer_t w[WRITERS];
    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.base = r.base, .first = i * (PAGES / WRITERS), .pages = PAGES / WRITERS};
        pthread_create(&w[i].thread, NULL, writer_main, &w[i]);
    }
    uint64_t paged_total = 0;
    int err = 0;
    for (int i = 0; i < rounds && !err; i++) {
        uint64_t paged = 0;
        err = mm__pager_page_out(r.pager, (uintptr_t)r.base, r.memfd, 0, PAGES * PAGE, 0, false,
                                 punch_drop, &r, &paged);
        paged_total += paged;
    }
    for (unsigned i = 0; i < WRITERS; i++) {
        atomic_store(&w[i].stop, true);
        pthread_join(w[i].thread, NULL);
    }
    uint64_t lost = 0;
    for (unsigned i = 0; i < WRITERS; i++)
        for (uint64_t p = w[i].first; p < w[i].first + w[i].pages; p++)
            lost += atomic_load((_Atomic uint64_t *)(r.base + p * PAGE)) != atomic_load(&w[i].last);
    mm_pager_stats_t st;
    mm__pager_stats(r.pager, &st);
    printf("stress_pager: %d rounds, %lu pages out, %lu back, %lu writers waited, %lu lost\n",
           rounds, (unsigned long)st.pages_out, (unsigned long)st.pages_in,
           (unsigned long)st.wp_faults, (unsigned long)lost);
    mm__pager_destroy(r.pager);
    munmap(r.base, PAGES * PAGE);
    close(r.memfd);
    close(uffd);
    mm__swap_close(swap, true);
    rmdir(dir);
    if (err)
        fprintf(stderr, "stress_pager: page-out: %s\n", strerror(-err));
    return err || lost || paged_total == 0 ? 1 : 0;
}
