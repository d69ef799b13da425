/*
 * Integration tests of the benchmarks' guest runner (bench/guestrun.c): a
 * guest with the mm driver and an in-guest GC heap is started against a
 * throw-away daemon, its statistics are read, a lower memory size is asked
 * for the driver's way and reached, and it stops with its data intact and
 * its scratch directory gone. Plus the inputs it refuses.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "guestrun.h"

#define MIB (1ull << 20)

static mm_guestrun_t guest_ = {.proc = {.pid = 0, .out_fd = -1}};

static void cleanup(void)
{
    if (guest_.proc.pid > 0) {
        bool intact;
        mm__guestrun_stop(&guest_, &intact, NULL); /* a guest a failed test left */
    }
    stop_daemon();
}

TestSuite(guestrun, .fini = cleanup, .timeout = 90);

static void skip_without_uffd(void)
{
    if (geteuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0)
        cr_skip_test("mmguest needs a full userfaultfd (root or access to /dev/userfaultfd)");
}

Test(guestrun, an_mm_guest_reaches_a_lowered_size_and_stops_intact)
{
    skip_without_uffd();
    start_daemon("512M");
    mm_guestrun_cfg_t cfg = {.driver = "mm",
                             .name = "gr-mm",
                             .ram_bytes = 128 * MIB,
                             .workload = "gc=80M:live=20",
                             .swap_bytes = 64 * MIB};
    cr_assert_eq(mm__guestrun_start(&guest_, &daemon_, &cfg), 0, "the guest gets ready");
    char dir[sizeof guest_.dir];
    memcpy(dir, guest_.dir, sizeof dir);

    json_t *stats = NULL;
    cr_assert_eq(mm__guestrun_stats(&guest_, &stats), 0, "the guest prints its statistics");
    uint64_t before = mm__bench_json_u64(stats, "resident_bytes");
    cr_expect_eq(mm__bench_json_u64(stats, "ram_bytes"), 128 * MIB);
    json_decref(stats);
    cr_assert_geq(before, 70 * MIB, "the heap is resident (%llu)", (unsigned long long)before);

    json_t *entry = NULL;
    cr_assert_eq(mm__guestrun_client(&guest_, &daemon_, &entry), 0, "the daemon lists it");
    cr_expect_str_eq(json_string_value(json_object_get(entry, "driver")), "mm");
    json_decref(entry);

    double ms = 0;
    uint64_t resident = 0;
    int rc = mm__guestrun_resize(&guest_, &daemon_, 48 * MIB, false, 30000, &ms, &resident);
    cr_expect_eq(rc, 0, "the guest reached 48 MiB (resident %llu MiB): %s",
                 (unsigned long long)resident >> 20, mm_strerror(rc));
    cr_expect_leq(resident, 48 * MIB);
    cr_expect_gt(ms, 0);

    bool intact = false;
    json_t *final = NULL;
    cr_assert_eq(mm__guestrun_stop(&guest_, &intact, &final), 0, "the guest exits");
    cr_expect(intact, "the guest verified all its data");
    cr_assert_not_null(final, "the guest printed its final line");
    cr_expect_eq(mm__bench_json_u64(final, "data_intact"), 1);
    json_decref(final);
    struct stat st;
    cr_expect_neq(stat(dir, &st), 0, "the scratch directory %s is gone", dir);
}

Test(guestrun, a_wait_that_cannot_be_met_times_out_with_the_count_seen)
{
    skip_without_uffd();
    start_daemon("512M");
    mm_guestrun_cfg_t cfg = {
        .driver = "mm", .name = "gr-idle", .ram_bytes = 64 * MIB, .workload = "anon=16M"};
    cr_assert_eq(mm__guestrun_start(&guest_, &daemon_, &cfg), 0, "the guest gets ready");
    uint64_t resident = 0;
    int rc = mm__guestrun_wait(&guest_, &daemon_, 64 * MIB, true, 50, &resident);
    cr_expect_eq(rc, -ETIMEDOUT, "a guest holding 16 MiB never holds 64 MiB");
    cr_expect_geq(resident, 16 * MIB, "the count seen is the guest's (%llu)",
                  (unsigned long long)resident);
    cr_expect_lt(resident, 64 * MIB);
    bool intact = false;
    cr_assert_eq(mm__guestrun_stop(&guest_, &intact, NULL), 0);
    cr_expect(intact);
}

Test(guestrun, unknown_drivers_and_missing_fields_are_refused)
{
    start_daemon("128M");
    mm_guestrun_t g;
    mm_guestrun_cfg_t cfg = {
        .driver = "xen", .name = "gr-bad", .ram_bytes = 64 * MIB, .workload = "anon=8M"};
    cr_expect_eq(mm__guestrun_start(&g, &daemon_, &cfg), -EINVAL, "an unknown driver");
    cfg.driver = "mm";
    cfg.workload = NULL;
    cr_expect_eq(mm__guestrun_start(&g, &daemon_, &cfg), -EINVAL, "no workload");
    cfg.workload = "anon=8M";
    cfg.ram_bytes = 0;
    cr_expect_eq(mm__guestrun_start(&g, &daemon_, &cfg), -EINVAL, "no RAM");
}
