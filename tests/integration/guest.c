/*
 * The guest kernel under the mm driver, in this process, against a
 * throw-away daemon: targets lowered and raised, cache dropped before swap,
 * swapped data intact, frames moved under a running workload, releases.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "guest.h"

#define MIB  ((uint64_t)1 << 20)
#define PAGE 4096u

static mm_guest_t *guest;
static char swap_path[160], disk_path[160];

static void teardown(void)
{
    if (guest)
        mm__guest_close(guest);
    guest = NULL;
    stop_daemon();
}

TestSuite(guest, .fini = teardown, .timeout = 120);

static void skip_without_uffd(void)
{
    if (geteuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0)
        cr_skip_test("the guest model needs a full userfaultfd (root or /dev/userfaultfd)");
}

static void open_guest(uint64_t ram, uint64_t swap, uint64_t cache, uint64_t disk)
{
    skip_without_uffd();
    start_daemon("1G");
    snprintf(swap_path, sizeof swap_path, "%s/swap", daemon_.dir);
    mm_guest_opts_t o = {
        .socket = daemon_.sock, .name = "g", .ram_bytes = ram, .driver = MM_GUEST_DRIVER_MM};
    if (swap) {
        o.swap_path = swap_path;
        o.swap_bytes = swap;
    }
    if (disk) {
        snprintf(disk_path, sizeof disk_path, "%s/disk", daemon_.dir);
        write_pattern_disk(disk_path, disk);
        o.disk_path = disk_path;
        o.cache_bytes = cache;
    }
    int err = mm__guest_open(&o, &guest);
    cr_assert_eq(err, 0, "guest open: %s", mm_strerror(err));
}

static mm_guest_stats_t stats(void)
{
    mm_guest_stats_t s;
    mm__guest_stats(guest, &s);
    if (getenv("MM_TEST_VERBOSE"))
        fprintf(stderr,
                "target %lu resident %lu used %lu anon %lu cache %lu swapped %lu out %lu in %lu "
                "dropped %lu lost %lu\n",
                (unsigned long)s.target_bytes >> 20, (unsigned long)s.resident_bytes >> 20,
                (unsigned long)s.used_bytes >> 20, (unsigned long)s.anon_bytes >> 20,
                (unsigned long)s.cache_bytes >> 20, (unsigned long)s.swapped_bytes >> 20,
                (unsigned long)s.swap_out_bytes >> 20, (unsigned long)s.swap_in_bytes >> 20,
                (unsigned long)s.cache_dropped_bytes >> 20,
                (unsigned long)s.cache_lost_bytes >> 20);
    return s;
}

static void set_target(const char *size)
{
    char arg[64];
    snprintf(arg, sizeof arg, "target=%s", size);
    const char *args[] = {"set", "g", arg, NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, NULL), 0, "mmctl set g %s", arg);
}

/* Wait until the region's resident bytes are at most bytes. */
static bool wait_resident_at_most(uint64_t bytes, int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 20) {
        if (stats().resident_bytes <= bytes)
            return true;
        sleep_ms(20);
    }
    return false;
}

Test(guest, reaches_a_lowered_target_and_a_raised_one)
{
    open_guest(64 * MIB, 64 * MIB, 0, 0);
    uint8_t *p;
    cr_assert_eq(mm__guest_anon_alloc(guest, 48 * MIB, (void **)&p), 0);
    pattern_fill(p, 48 * MIB, 1);
    cr_assert_geq(stats().resident_bytes, 48 * MIB);

    set_target("16M");
    cr_assert(wait_resident_at_most(16 * MIB, 10000), "resident %lu over a 16 MiB target",
              (unsigned long)stats().resident_bytes);
    mm_guest_stats_t s = stats();
    cr_assert_geq(s.swap_out_bytes, 30 * MIB, "the live working set had to be swapped");
    cr_assert_geq(s.revocations, 1);

    set_target("64M");
    sleep_ms(200);
    cr_assert_eq(pattern_bad_pages(p, 48 * MIB, 1), 0, "swapped data comes back intact");
    s = stats();
    cr_assert_geq(s.resident_bytes, 46 * MIB, "the raised target lets the working set back in");
    cr_assert_geq(s.swap_in_bytes, 30 * MIB);
    cr_assert_eq(s.swapped_bytes, 0);
    cr_assert_eq(s.swap_errors, 0);
}

Test(guest, drops_cache_before_it_swaps)
{
    open_guest(64 * MIB, 64 * MIB, 16 * MIB, 32 * MIB);
    set_target("64M"); /* the host takes nothing by itself: the guest reclaims */
    uint8_t block[PAGE];
    for (uint64_t b = 0; b < 16 * MIB / PAGE; b++)
        cr_assert_eq(mm__guest_disk_read(guest, b, block), 0);
    uint8_t *p;
    cr_assert_eq(mm__guest_anon_alloc(guest, 24 * MIB, (void **)&p), 0);
    pattern_fill(p, 24 * MIB, 2);
    mm_guest_stats_t s = stats();
    cr_assert_geq(s.cache_bytes, 14 * MIB);

    /* Needs 12 MiB: all of it from the cache, nothing swapped. */
    uint64_t freed = mm__guest_reclaim(guest, 12 * MIB);
    s = stats();
    cr_assert_geq(freed, 12 * MIB);
    cr_assert_eq(s.swap_out_bytes, 0, "cache must go before anything is swapped");
    cr_assert_geq(s.cache_dropped_bytes, 12 * MIB);

    /* Needs more than the cache holds: the rest of the cache, then swap. */
    freed = mm__guest_reclaim(guest, 12 * MIB);
    s = stats();
    cr_assert_geq(freed, 12 * MIB);
    cr_assert_eq(s.cache_bytes, 0);
    cr_assert_gt(s.swap_out_bytes, 0);
    cr_assert_leq(s.last_cache_drop_ns, s.first_swap_ns, "the cache was dropped first");
    cr_assert_eq(pattern_bad_pages(p, 24 * MIB, 2), 0);
    /* Reads after the drop come from the disk again, and are right. */
    cr_assert_eq(mm__guest_disk_read(guest, 300, block), 0);
    uint64_t first;
    memcpy(&first, block + (300 % (MIB / PAGE)) * 0, sizeof first);
    cr_assert_eq(first, pattern_word(300 % (MIB / PAGE), 0, 77 + 300 / (MIB / PAGE)));
}

Test(guest, a_lowered_target_takes_the_cache_not_the_working_set)
{
    open_guest(64 * MIB, 64 * MIB, 16 * MIB, 32 * MIB);
    set_target("64M"); /* nothing is taken while the guest sets up */
    uint8_t block[PAGE];
    for (uint64_t b = 0; b < 16 * MIB / PAGE; b++)
        cr_assert_eq(mm__guest_disk_read(guest, b, block), 0);
    uint8_t *p;
    cr_assert_eq(mm__guest_anon_alloc(guest, 24 * MIB, (void **)&p), 0);
    pattern_fill(p, 24 * MIB, 3);
    uint64_t before = stats().resident_bytes;
    set_target("28M");
    cr_assert(wait_resident_at_most(28 * MIB, 10000), "resident %lu over a 28 MiB target",
              (unsigned long)stats().resident_bytes);
    mm_guest_stats_t s = stats();
    cr_assert_eq(s.swap_out_bytes, 0, "%lu bytes swapped while cache was there",
                 (unsigned long)s.swap_out_bytes);
    cr_assert_geq(s.cache_lost_bytes + s.cache_dropped_bytes, before - 28 * MIB - 2 * MIB);
    cr_assert_eq(pattern_bad_pages(p, 24 * MIB, 3), 0);
}

typedef struct writer {
    uint64_t *words; /* one per guest-virtual page */
    uint64_t pages;
    _Atomic bool stop;
    _Atomic uint64_t rounds;
    _Atomic uint64_t errors;
} writer_t;

/* Writes round numbers into the first word of every page, checking that
 * each page still holds the previous round's number. */
static void *writer_main(void *arg)
{
    writer_t *w = arg;
    for (uint64_t r = 1; !atomic_load(&w->stop); r++) {
        for (uint64_t i = 0; i < w->pages; i++) {
            volatile uint64_t *slot = &w->words[i * (MM_GUEST_PAGE_BYTES / 8)];
            if (*slot != r - 1)
                atomic_fetch_add(&w->errors, 1);
            *slot = r;
        }
        atomic_store(&w->rounds, r);
    }
    return NULL;
}

Test(guest, the_page_table_survives_frames_moved_under_a_running_workload)
{
    open_guest(64 * MIB, 0, 0, 0);
    uint8_t *p;
    const uint64_t bytes = 8 * MIB, pages = bytes / MM_GUEST_PAGE_BYTES;
    cr_assert_eq(mm__guest_anon_alloc(guest, bytes, (void **)&p), 0);
    memset(p, 0, bytes);
    writer_t w = {.words = (uint64_t *)p, .pages = pages};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, writer_main, &w), 0);
    uint64_t moved = 0;
    for (int round = 0; round < 5; round++)
        for (uint64_t i = 0; i < pages; i++) {
            uint8_t *page = p + i * MM_GUEST_PAGE_BYTES;
            int64_t before = mm__guest_anon_frame(guest, page);
            cr_assert_eq(mm__guest_anon_move(guest, page), 0);
            int64_t after = mm__guest_anon_frame(guest, page);
            cr_assert_geq(after, 0);
            moved += after != before;
        }
    atomic_store(&w.stop, true);
    pthread_join(t, NULL);
    cr_assert_eq(moved, 5 * pages, "every move lands on other frames");
    cr_assert_eq(atomic_load(&w.errors), 0, "a write was lost or torn by a move");
    uint64_t last = atomic_load(&w.rounds);
    for (uint64_t i = 0; i < pages; i++)
        cr_assert_eq(w.words[i * (MM_GUEST_PAGE_BYTES / 8)], last);
    cr_assert_eq(stats().moves, 5 * pages);
}

Test(guest, released_memory_reads_zeros_and_its_frames_go_back)
{
    open_guest(64 * MIB, 0, 0, 0);
    uint8_t *p;
    cr_assert_eq(mm__guest_anon_alloc(guest, 4 * MIB, (void **)&p), 0);
    memset(p, 0xab, 4 * MIB);
    uint64_t used = stats().used_bytes;
    /* Whole pages go back to the allocator; a part of a page is punched. */
    cr_assert_eq(mm__guest_anon_release(guest, p, 2 * MIB), 0);
    cr_assert_eq(mm__guest_anon_release(guest, p + 3 * MIB, 8 * PAGE), 0);
    cr_assert_eq(stats().used_bytes, used - 2 * MIB);
    for (uint64_t i = 0; i < 2 * MIB; i += PAGE)
        cr_assert_eq(p[i], 0);
    for (uint64_t i = 0; i < 8 * PAGE; i++)
        cr_assert_eq(p[3 * MIB + i], 0);
    cr_assert_eq(p[3 * MIB + 8 * PAGE], 0xab);
    cr_assert_eq(p[2 * MIB], 0xab);
    cr_assert_geq(stats().zero_fills, 32, "touching released pages mapped zeroed frames");
    cr_assert_eq(mm__guest_anon_free(guest, p, 4 * MIB), 0);
    cr_assert_eq(mm__guest_anon_release(guest, p, 4 * MIB), -EINVAL, "freed memory is gone");
}

Test(guest, a_full_swap_device_leaves_the_data_in_memory)
{
    open_guest(64 * MIB, 4 * MIB, 0, 0);
    uint8_t *p;
    cr_assert_eq(mm__guest_anon_alloc(guest, 16 * MIB, (void **)&p), 0);
    pattern_fill(p, 16 * MIB, 4);
    uint64_t freed = mm__guest_reclaim(guest, 12 * MIB);
    cr_assert_leq(freed, 4 * MIB, "no more than the swap device holds can go");
    cr_assert_eq(pattern_bad_pages(p, 16 * MIB, 4), 0);
}
