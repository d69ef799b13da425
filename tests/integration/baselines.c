/*
 * The baseline memory drivers (guests/balloon.c, fpr.c, virtio_mem.c) in
 * this process, against a throw-away daemon (mmsrv/baselines.c): each
 * reaches a lowered size and a raised one; balloon inflation under pressure
 * drops cache, then swaps, and swapped data comes back; deflate on OOM;
 * free page reporting reports only whole 2 MiB blocks, 2 s after frees;
 * virtio-mem moves used frames out of the blocks it unplugs and keeps their
 * contents; the host gives baseline guests none of mm's own mechanisms and
 * refuses what lies outside a guest's region; and the programs (mmguest
 * with each baseline driver, mmctl balloon / virtio-mem, the daemon's status)
 * through bench/guestrun.c.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client_internal.h"
#include "common.h"
#include "guest.h"
#include "guestrun.h"
#include "platform.h"
#include "wire.h"

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

TestSuite(baselines, .fini = teardown, .timeout = 120);

/* A guest "g" of driver on a fresh daemon; swap, cache and disk optional. */
static void open_guest(mm_guest_driver_t driver, uint64_t ram, uint64_t swap, uint64_t cache,
                       uint64_t disk)
{
    if (geteuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0)
        cr_skip_test("the guest model needs a full userfaultfd (root or /dev/userfaultfd)");
    start_daemon("1G");
    mm_guest_opts_t o = {.socket = daemon_.sock, .name = "g", .ram_bytes = ram, .driver = driver};
    if (swap) {
        snprintf(swap_path, sizeof swap_path, "%s/swap", daemon_.dir);
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
    return s;
}

/* mmctl VERB g SIZE (balloon, virtio-mem): 0, or -EIO when refused. */
static int ask(const char *verb, const char *size)
{
    const char *args[] = {verb, "g", size, NULL};
    return mm__bench_ctl(&daemon_, args, NULL);
}

static bool wait_resident_at_most(uint64_t bytes, int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 20) {
        if (stats().resident_bytes <= bytes)
            return true;
        sleep_ms(20);
    }
    return false;
}

/* Wait until field(stats()) satisfies cond. */
#define WAIT_FOR(cond, timeout_ms)                                                                 \
    ({                                                                                             \
        bool ok_ = false;                                                                          \
        for (int t_ = 0; t_ < (timeout_ms) && !(ok_ = (cond)); t_ += 20)                           \
            sleep_ms(20);                                                                          \
        ok_;                                                                                       \
    })

/* ---- balloon ---------------------------------------------------------------- */

Test(baselines, balloon_reaches_a_lowered_size_and_a_raised_one)
{
    open_guest(MM_GUEST_DRIVER_BALLOON, 64 * MIB, 0, 0, 0);
    uint8_t *p, *q;
    cr_assert_eq(mm__guest_anon_alloc(guest, 24 * MIB, (void **)&p), 0);
    pattern_fill(p, 24 * MIB, 1);
    cr_assert_eq(mm__guest_anon_alloc(guest, 24 * MIB, (void **)&q), 0);
    pattern_fill(q, 24 * MIB, 2);
    cr_assert_eq(mm__guest_anon_free(guest, q, 24 * MIB), 0);
    /* Freed memory stays resident in a VM: only the driver gives it back. */
    cr_assert_geq(stats().resident_bytes, 48 * MIB);

    cr_assert_eq(ask("balloon", "32M"), 0);
    cr_assert(wait_resident_at_most(32 * MIB, 20000), "resident %lu over 32 MiB",
              (unsigned long)stats().resident_bytes);
    cr_assert(WAIT_FOR(stats().balloon_bytes == 32 * MIB, 10000), "balloon %lu",
              (unsigned long)stats().balloon_bytes);
    uint32_t id = client_id_by_name("g");
    cr_assert_eq(client_field(id, "balloon_bytes"), 32 * MIB, "the host's count agrees");
    cr_assert_eq(client_field(id, "reclaimed_bytes"), 0, "the host took nothing by itself");
    cr_assert_eq(pattern_bad_pages(p, 24 * MIB, 1), 0);

    cr_assert_eq(ask("balloon", "64M"), 0);
    cr_assert(WAIT_FOR(stats().balloon_bytes == 0, 10000), "the balloon deflates");
    cr_assert(WAIT_FOR(client_field(id, "balloon_bytes") == 0, 5000));
    cr_assert_eq(mm__guest_anon_alloc(guest, 32 * MIB, (void **)&q), 0, "its pages are usable");
    pattern_fill(q, 32 * MIB, 3);
    cr_assert_eq(pattern_bad_pages(q, 32 * MIB, 3), 0);
    cr_assert_eq(pattern_bad_pages(p, 24 * MIB, 1), 0);
}

Test(baselines, balloon_inflation_drops_cache_then_swaps_and_swapped_data_comes_back)
{
    open_guest(MM_GUEST_DRIVER_BALLOON, 64 * MIB, 64 * MIB, 16 * MIB, 16 * MIB);
    uint8_t block[PAGE];
    for (uint64_t b = 0; b < 16 * MIB / PAGE; b++)
        cr_assert_eq(mm__guest_disk_read(guest, b, block), 0);
    uint8_t *p;
    cr_assert_eq(mm__guest_anon_alloc(guest, 32 * MIB, (void **)&p), 0);
    pattern_fill(p, 32 * MIB, 4);
    mm_guest_stats_t s = stats();
    cr_assert_geq(s.cache_bytes, 14 * MIB);
    uint32_t id = client_id_by_name("g");
    cr_assert_eq(client_field(id, "discardable_bytes"), 0,
                 "a baseline guest's cache is not an mm discardable");

    /* Keep 24 MiB: the balloon takes the free memory, then the cache, then
     * has the guest swap its working set. */
    cr_assert_eq(ask("balloon", "24M"), 0);
    cr_assert(WAIT_FOR(stats().balloon_bytes == 40 * MIB, 30000), "balloon %lu",
              (unsigned long)stats().balloon_bytes);
    cr_assert(wait_resident_at_most(24 * MIB, 10000));
    s = stats();
    cr_assert_eq(s.cache_bytes, 0);
    cr_assert_geq(s.cache_dropped_bytes, 14 * MIB);
    cr_assert_gt(s.swap_out_bytes, 0);
    cr_assert_leq(s.last_cache_drop_ns, s.first_swap_ns, "the cache went first");
    cr_assert_eq(s.revocations, 0, "a baseline guest is never asked");

    cr_assert_eq(ask("balloon", "64M"), 0);
    cr_assert(WAIT_FOR(stats().balloon_bytes == 0, 10000));
    cr_assert_eq(pattern_bad_pages(p, 32 * MIB, 4), 0, "swapped data comes back intact");
    s = stats();
    cr_assert_gt(s.swap_in_bytes, 0);
    cr_assert_eq(s.swap_errors, 0);
}

Test(baselines, balloon_deflates_on_oom)
{
    open_guest(MM_GUEST_DRIVER_BALLOON, 32 * MIB, 0, 0, 0);
    cr_assert_eq(ask("balloon", "4M"), 0); /* the balloon holds 28 MiB */
    cr_assert(WAIT_FOR(stats().balloon_bytes == 28 * MIB, 20000), "balloon %lu",
              (unsigned long)stats().balloon_bytes);
    /* 8 MiB, 64 KiB at a time: more than is left, with no cache and no
     * swap, so the allocator runs out and the balloon gives pages back. */
    uint8_t *pages[128];
    for (int i = 0; i < 128; i++) {
        int err = mm__guest_anon_alloc(guest, 64 << 10, (void **)&pages[i]);
        cr_assert_eq(err, 0, "allocation %d: %s", i, mm_strerror(err));
        pattern_fill(pages[i], 64 << 10, 10 + (uint64_t)i);
    }
    mm_guest_stats_t s = stats();
    cr_assert_geq(s.oom_deflates, 1);
    cr_assert_leq(s.balloon_bytes, 24 * MIB);
    /* 256 pages per OOM event, and no inflating again until the host asks. */
    cr_assert_eq(s.balloon_bytes % MIB, 0);
    sleep_ms(300);
    cr_assert_eq(stats().balloon_bytes, s.balloon_bytes);
    for (int i = 0; i < 128; i++)
        cr_assert_eq(pattern_bad_pages(pages[i], 64 << 10, 10 + (uint64_t)i), 0);
}

/* ---- free page reporting ---------------------------------------------------- */

Test(baselines, fpr_reports_only_whole_2mib_blocks_and_waits_2s)
{
    open_guest(MM_GUEST_DRIVER_FPR, 64 * MIB, 0, 0, 0);
    sleep_ms(2500); /* past the first pass, 2 s after the device came up */
    uint8_t *a, *b;
    cr_assert_eq(mm__guest_anon_alloc(guest, 16 * MIB, (void **)&a), 0);
    pattern_fill(a, 16 * MIB, 5);
    /* A block left with 64 KiB in use. */
    cr_assert_eq(mm__guest_anon_alloc_aligned(guest, 2 * MIB, 2 * MIB, (void **)&b), 0);
    pattern_fill(b, 2 * MIB, 6);
    int64_t b_off = mm__guest_anon_frame(guest, b);
    cr_assert_geq(b_off, 0);
    uint64_t block_off = (uint64_t)b_off & ~(uint64_t)(MM_CHUNK_SIZE - 1);
    uint64_t resident = stats().resident_bytes;

    uint64_t t0 = mm__now_ns();
    cr_assert_eq(mm__guest_anon_free(guest, a, 16 * MIB), 0);
    cr_assert_eq(mm__guest_anon_free(guest, b + (64 << 10), 2 * MIB - (64 << 10)), 0);
    sleep_ms(1000);
    cr_assert_eq(stats().reported_bytes, 0, "nothing is reported before 2 s");
    cr_assert(WAIT_FOR(stats().reported_bytes >= 16 * MIB, 10000));
    cr_assert_geq(mm__now_ns() - t0, 2000000000ull, "the report waited PAGE_REPORTING_DELAY");
    cr_assert(wait_resident_at_most(resident - 16 * MIB, 5000));
    int fd = mm_client_region_fd(mm__guest_client(guest));
    cr_assert_eq(mm__range_has_data(fd, block_off + (64 << 10), MM_CHUNK_SIZE - (64 << 10)), 1,
                 "its free frames stay resident");
    cr_assert_eq(pattern_bad_pages(b, 64 << 10, 6), 0);

    /* Raised again: the reported blocks are the guest's to use. */
    cr_assert_eq(mm__guest_anon_alloc(guest, 16 * MIB, (void **)&a), 0);
    pattern_fill(a, 16 * MIB, 7);
    cr_assert_geq(stats().resident_bytes, resident - 2 * MIB);
    cr_assert_eq(pattern_bad_pages(a, 16 * MIB, 7), 0);
}

/* ---- virtio-mem ------------------------------------------------------------- */

Test(baselines, virtio_mem_moves_used_frames_and_keeps_their_contents)
{
    open_guest(MM_GUEST_DRIVER_VIRTIO_MEM, 32 * MIB, 0, 0, 0);
    uint8_t *lo, *hi;
    cr_assert_eq(mm__guest_anon_alloc(guest, 12 * MIB, (void **)&lo), 0);
    cr_assert_eq(mm__guest_anon_alloc(guest, 12 * MIB, (void **)&hi), 0);
    pattern_fill(hi, 12 * MIB, 8);
    cr_assert_eq(mm__guest_anon_free(guest, lo, 12 * MIB), 0);
    bool above = false;
    for (uint64_t off = 0; off < 12 * MIB; off += 64 << 10)
        above = above || mm__guest_anon_frame(guest, hi + off) >= (int64_t)(16 * MIB);
    cr_assert(above, "part of the working set lies in the blocks to unplug");

    cr_assert_eq(ask("virtio-mem", "16M"), 0);
    cr_assert(WAIT_FOR(stats().plugged_bytes == 16 * MIB, 20000), "plugged %lu",
              (unsigned long)stats().plugged_bytes);
    cr_assert(wait_resident_at_most(16 * MIB, 5000));
    mm_guest_stats_t s = stats();
    cr_assert_gt(s.moved_frames, 0);
    cr_assert_eq(s.swap_out_bytes, 0);
    for (uint64_t off = 0; off < 12 * MIB; off += 64 << 10)
        cr_assert_lt(mm__guest_anon_frame(guest, hi + off), (int64_t)(16 * MIB));
    cr_assert_eq(pattern_bad_pages(hi, 12 * MIB, 8), 0, "moved frames keep their contents");
    cr_assert_eq(client_field(client_id_by_name("g"), "plugged_bytes"), 16 * MIB);

    cr_assert_eq(ask("virtio-mem", "32M"), 0);
    cr_assert(WAIT_FOR(stats().plugged_bytes == 32 * MIB, 10000));
    /* 16 MiB more (in two ranges: the guest-virtual space is RAM-sized). */
    uint8_t *more[2];
    for (int i = 0; i < 2; i++) {
        int err = mm__guest_anon_alloc(guest, 8 * MIB, (void **)&more[i]);
        cr_assert_eq(err, 0, "plugged memory is usable: %s", mm_strerror(err));
        pattern_fill(more[i], 8 * MIB, 20 + (uint64_t)i);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pattern_bad_pages(more[i], 8 * MIB, 20 + (uint64_t)i), 0);
    cr_assert_eq(pattern_bad_pages(hi, 12 * MIB, 8), 0);
}

Test(baselines, virtio_mem_refuses_a_size_not_in_whole_blocks)
{
    open_guest(MM_GUEST_DRIVER_VIRTIO_MEM, 16 * MIB, 0, 0, 0);
    cr_assert_eq(ask("virtio-mem", "15M"), -EIO);
    cr_assert_eq(ask("balloon", "8M"), -EIO, "balloon is another driver's command");
    cr_assert_eq(ask("virtio-mem", "32M"), -EIO, "more than the guest's RAM");
}

/* ---- The host's side ---------------------------------------------------------- */

Test(baselines, the_host_takes_nothing_from_a_baseline_guest_by_itself)
{
    open_guest(MM_GUEST_DRIVER_BALLOON, 32 * MIB, 0, 0, 0);
    uint8_t *p;
    cr_assert_eq(mm__guest_anon_alloc(guest, 16 * MIB, (void **)&p), 0);
    pattern_fill(p, 16 * MIB, 11);
    cr_assert_eq(mm__guest_anon_free(guest, p, 16 * MIB), 0); /* whole free chunks */
    uint64_t resident = stats().resident_bytes;
    set_capacity("8M");
    sleep_ms(500);
    uint32_t id = client_id_by_name("g");
    cr_assert_eq(client_field(id, "reclaimed_bytes"), 0, "no free chunk taken (step 1)");
    cr_assert_eq(stats().revocations, 0, "no revocation (step 3)");
    cr_assert_eq(client_field(id, "paged_out_bytes"), 0);
    cr_assert_eq(stats().resident_bytes, resident);
    const char *args[] = {"reclaim", "g", "4M", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, NULL), -EIO, "mmctl reclaim is refused");
}

Test(baselines, the_host_refuses_requests_outside_the_region)
{
    open_guest(MM_GUEST_DRIVER_BALLOON, 16 * MIB, 0, 0, 0);
    mm_client_t *c = mm__guest_client(guest);
    union {
        mm_msg_baseline_reply_t r;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    mm_msg_balloon_t m = {.count = 2, .pfns = {1, 16 * MIB / PAGE}};
    mm__msg_init(&m.hdr, MM_MSG_BALLOON_INFLATE, mm__msg_balloon_length(2), 0);
    cr_assert_eq(mm__client_call(c, &m.hdr, &u, MM_MSG_BASELINE_REPLY), -EINVAL,
                 "a frame past the region");
    mm_msg_fpr_t f = {.count = 1, .addrs = {0}};
    mm__msg_init(&f.hdr, MM_MSG_FPR_REPORT, mm__msg_fpr_length(1), 0);
    cr_assert_eq(mm__client_call(c, &f.hdr, &u, MM_MSG_BASELINE_REPLY), -EPROTO,
                 "a report from a balloon guest");
    /* Nothing was discarded, and the daemon still serves the guest. */
    uint32_t id = client_id_by_name("g");
    cr_assert_eq(client_field(id, "driver_discarded_bytes"), 0);
    m.count = 1;
    m.pfns[0] = 1;
    m.hdr.length = mm__msg_balloon_length(1);
    cr_assert_eq(mm__client_call(c, &m.hdr, &u, MM_MSG_BASELINE_REPLY), 0);
    cr_assert_eq(u.r.done, 1);
    m.hdr.type = MM_MSG_BALLOON_DEFLATE;
    cr_assert_eq(mm__client_call(c, &m.hdr, &u, MM_MSG_BASELINE_REPLY), 0);
}

/* ---- The programs: mmguest, mmctl and the daemon's status ------------------- */

Test(baselines, mmguest_runs_each_baseline_and_reports_its_fields)
{
    if (geteuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0)
        cr_skip_test("the guest model needs a full userfaultfd (root or /dev/userfaultfd)");
    static const struct {
        const char *driver, *field;
    } cases[] = {
        {"balloon", "balloon_bytes"}, {"virtio-mem", "plugged_bytes"}, {"fpr", "reported_bytes"}};
    start_daemon("1G");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "p-%s", cases[i].driver);
        mm_guestrun_cfg_t cfg = {.driver = cases[i].driver,
                                 .name = name,
                                 .ram_bytes = 64 * MIB,
                                 .workload = "anon=16M:hot=25,temp=24M"};
        mm_guestrun_t g;
        cr_assert_eq(mm__guestrun_start(&g, &daemon_, &cfg), 0, "%s guest starts", name);
        cr_assert_eq(mm__proc_signal(&g.proc, SIGUSR2), 0); /* frees temp= */
        uint64_t resident = 0;
        double ms = 0;
        int rc = mm__guestrun_resize(&g, &daemon_, 32 * MIB, false, 20000, &ms, &resident);
        cr_expect_eq(rc, 0, "%s guest down to 32 MiB (resident %lu)", name,
                     (unsigned long)resident);
        json_t *st = NULL, *entry = NULL;
        cr_assert_eq(mm__guestrun_stats(&g, &st), 0);
        cr_expect_str_eq(json_string_value(json_object_get(st, "driver")), cases[i].driver);
        cr_expect_not_null(json_object_get(st, cases[i].field), "%s", cases[i].field);
        cr_expect_gt(mm__bench_json_u64(st, "driver_requests"), 0);
        cr_assert_eq(mm__guestrun_client(&g, &daemon_, &entry), 0);
        cr_expect_str_eq(json_string_value(json_object_get(entry, "driver")), cases[i].driver,
                         "mmctl status shows the real driver");
        json_decref(st);
        json_decref(entry);
        bool intact = false;
        cr_expect_eq(mm__guestrun_stop(&g, &intact, NULL), 0);
        cr_expect(intact, "%s guest verified its data", name);
    }
}
