/*
 * `mmbench guests`: one guest per memory driver (mm, balloon, fpr,
 * virtio-mem) with the same workload asked to come down to the same size,
 * measured the same way (scenario guest-target), and the parts of a balloon
 * inflation timed in the same run (scenario balloon-calibration). Not a
 * test: it measures. docs/baselines.md sets the figures beside published ones.
 *
 * A repetition runs, for each driver in turn (interleaved over repetitions),
 * a fresh daemon with room to spare and one guest (guestrun.c) of RAM bytes
 * whose workload holds a hot anonymous working set and a temp= buffer it
 * frees on SIGUSR2. Once the guest has run 2.5 s (past free page
 * reporting's first pass), at t0 it frees the buffer (the same event for
 * every driver) and, once it says it did, the host asks for the lowered
 * size the driver's way
 * (mm: set target=; balloon: balloon; virtio-mem: virtio-mem; fpr: nothing,
 * it reports by itself). reclaim_ms runs from t0 to the daemon's status
 * showing the guest's resident bytes (kernel truth) at or under the size;
 * reached is 1 when that happened before the deadline; ms_per_gib divides
 * reclaim_ms by the resident bytes that went; swap_out_bytes is what the
 * guest swapped meanwhile. The host then asks for all of RAM again, the
 * guest stops and verifies every byte it holds (data_intact). The floor is
 * one fallocate(PUNCH_HOLE) of the same bytes, measured in the same
 * repetition.
 *
 * balloon-calibration, from the balloon guest's own counters and the
 * daemon's: alloc_ns_per_page (the guest allocating balloon pages one at a
 * time), msg_us_per_256 (sending 256 frame numbers and waiting for the host,
 * less the host's discards), discard_us_per_page (the host's
 * fallocate(PUNCH_HOLE) of one 4 KiB page); beside them, as system floor,
 * anon_madvise_us_per_page: what QEMU's discard costs per page when guest
 * RAM is private anonymous memory (madvise(MADV_DONTNEED)), as in the
 * published profile.
 */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "guestrun.h"

#define GUESTS_CAPACITY "4G"
#define GUESTS_DEADLINE 30000 /* ms: fpr alone waits 2 s before it reports */
#define SETTLE_MS       2500
#define MAX_REPS        16
#define GIB             (1024.0 * 1024 * 1024)

typedef struct sample {
    bool reached, intact, measured;
    double ms, taken, swap_out, floor_ms;
    /* balloon only */
    double alloc_ns, pages, msg_ns, requests, discard_ns, madvise_us;
} sample_t;

typedef struct sizes {
    uint64_t ram, keep;
    const char *workload;
} sizes_t;

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

/* What QEMU's balloon pays per page when guest RAM is private anonymous
 * memory rather than a shared memfd: madvise(MADV_DONTNEED) of one touched
 * 4 KiB page, in us (the 2017 profile's "madvise" share). < 0 on failure. */
static double anon_madvise_us_per_page(uint64_t bytes)
{
    uint8_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    /* 4 KiB pages, as the profile's guest RAM: a 4 KiB discard inside a
     * transparent huge page would split it first. */
    (void)madvise(p, bytes, MADV_NOHUGEPAGE); /* a hint: THP may be off anyway */
    memset(p, 1, bytes);
    uint64_t t0 = mm__bench_now_ns();
    for (uint64_t off = 0; off < bytes; off += 4096)
        (void)madvise(p + off, 4096, MADV_DONTNEED); /* cannot fail on our own mapping */
    double us = (double)(mm__bench_now_ns() - t0) / 1e3 / (double)(bytes / 4096);
    munmap(p, bytes);
    return us;
}

/* One guest of driver: free, lower, wait, raise, stop. */
static int run_one(const char *driver, const sizes_t *z, sample_t *s)
{
    mm_bench_daemon_t d;
    mm_guestrun_t g;
    mm_guestrun_cfg_t cfg = {.driver = driver,
                             .name = "guest",
                             .ram_bytes = z->ram,
                             .workload = z->workload,
                             .swap_bytes = z->ram};
    json_t *before = NULL, *after = NULL, *stats = NULL, *final = NULL;
    uint64_t resident = 0;
    int rc = mm__bench_daemon_start(&d, GUESTS_CAPACITY, NULL);

    if (rc < 0)
        return rc;
    rc = mm__guestrun_start(&g, &d, &cfg);
    if (rc < 0) {
        mm__bench_daemon_stop(&d);
        return rc;
    }
    /* Past free page reporting's first pass (2 s after the device came
     * up), so that no pending request shortens its delay. */
    struct timespec settle = {.tv_sec = SETTLE_MS / 1000, .tv_nsec = SETTLE_MS % 1000 * 1000000L};
    nanosleep(&settle, NULL);
    rc = mm__guestrun_client(&g, &d, &before);
    uint64_t t0 = mm__bench_now_ns();
    if (rc == 0)
        rc = mm__proc_signal(&g.proc, SIGUSR2); /* the workload frees its buffer */
    /* The statistics line comes after the free is done: then the host asks,
     * so that no driver is asked to take what is about to be freed. */
    if (rc == 0)
        rc = mm__guestrun_stats(&g, &stats);
    json_decref(stats);
    stats = NULL;
    if (rc == 0)
        rc = mm__guestrun_ask(&g, &d, z->keep);
    if (rc == 0) {
        int w = mm__guestrun_wait(&g, &d, z->keep, false, GUESTS_DEADLINE, &resident);
        s->reached = w == 0;
        s->ms = (double)(mm__bench_now_ns() - t0) / 1e6;
        rc = w == -ETIMEDOUT ? 0 : w;
    }
    /* The host's discard time first, then the guest's message time: every
     * discard counted is inside a round trip the guest has then counted too
     * (the balloon may still be inflating past the size asked). */
    if (rc == 0)
        rc = mm__guestrun_client(&g, &d, &after);
    if (rc == 0)
        rc = mm__guestrun_stats(&g, &stats);
    if (rc == 0) {
        double was = (double)mm__bench_json_u64(before, "resident_bytes");
        s->taken = was > (double)resident ? was - (double)resident : 0;
        s->swap_out = (double)mm__bench_json_u64(stats, "swap_out_bytes");
        s->alloc_ns = (double)mm__bench_json_u64(stats, "driver_alloc_ns");
        s->pages = (double)mm__bench_json_u64(stats, "driver_units");
        s->msg_ns = (double)mm__bench_json_u64(stats, "driver_msg_ns");
        s->requests = (double)mm__bench_json_u64(stats, "driver_requests");
        s->discard_ns = (double)mm__bench_json_u64(after, "driver_discard_ns");
        s->floor_ms = mm__bench_punch_floor_ms(z->ram, (uint64_t)s->taken);
        s->madvise_us = anon_madvise_us_per_page(s->taken > 0 ? (uint64_t)s->taken : MM_MIB);
        s->measured = true;
        /* All of RAM again, so that the guest verifies with room. */
        (void)mm__guestrun_ask(&g, &d, z->ram);
    }
    int stop = mm__guestrun_stop(&g, &s->intact, &final);
    if (rc == 0 && stop < 0)
        rc = stop;
    json_decref(before);
    json_decref(after);
    json_decref(stats);
    json_decref(final);
    mm__bench_daemon_stop(&d);
    return rc;
}

static void add(mm_results_t *res, const char *scenario, const char *system, const char *metric,
                const char *unit, const double *v, size_t n)
{
    mm_result_row_t row = {scenario, system, metric, unit};
    (void)mm__results_add_median(res, &row, v, n, NULL, 0);
}

/* The rows of one driver over its repetitions. */
static bool report(mm_results_t *res, const char *driver, const sample_t *s, size_t n)
{
    double reached[MAX_REPS], ms[MAX_REPS], gib[MAX_REPS], swap[MAX_REPS], intact[MAX_REPS];
    double floor_ms[MAX_REPS], floor_gib[MAX_REPS];
    bool good = true;
    for (size_t i = 0; i < n; i++) {
        reached[i] = s[i].reached;
        ms[i] = s[i].ms;
        gib[i] = ratio(s[i].ms, s[i].taken / GIB);
        swap[i] = s[i].swap_out;
        intact[i] = s[i].intact;
        floor_ms[i] = s[i].floor_ms;
        floor_gib[i] = ratio(s[i].floor_ms, s[i].taken / GIB);
        good = good && s[i].reached && s[i].intact;
    }
    add(res, "guest-target", driver, "reached", "bool", reached, n);
    add(res, "guest-target", driver, "reclaim_ms", "ms", ms, n);
    add(res, "guest-target", driver, "ms_per_gib", "ms/GiB", gib, n);
    add(res, "guest-target", driver, "swap_out_bytes", "bytes", swap, n);
    add(res, "guest-target", driver, "data_intact", "bool", intact, n);
    add(res, "guest-target", driver, "floor_ms", "ms", floor_ms, n);
    add(res, "guest-target", driver, "floor_ms_per_gib", "ms/GiB", floor_gib, n);
    if (strcmp(driver, "balloon") != 0)
        return good;
    double alloc[MAX_REPS], msg[MAX_REPS], discard[MAX_REPS];
    for (size_t i = 0; i < n; i++) {
        alloc[i] = ratio(s[i].alloc_ns, s[i].pages);
        /* The round trips less the host's discards inside them, per 256. */
        msg[i] = ratio((s[i].msg_ns - s[i].discard_ns) / 1e3, s[i].pages) * 256;
        discard[i] = ratio(s[i].discard_ns / 1e3, s[i].pages);
    }
    add(res, "balloon-calibration", "balloon", "alloc_ns_per_page", "ns", alloc, n);
    add(res, "balloon-calibration", "balloon", "msg_us_per_256", "us", msg, n);
    add(res, "balloon-calibration", "balloon", "discard_us_per_page", "us", discard, n);
    double madv[MAX_REPS];
    for (size_t i = 0; i < n; i++)
        madv[i] = s[i].madvise_us;
    add(res, "balloon-calibration", "floor", "anon_madvise_us_per_page", "us", madv, n);
    return good;
}

int mm__bench_guests(const mm_bench_opts_t *opts, mm_results_t *res)
{
    /* The same workload and the same lowered size for every driver: a hot
     * working set of a quarter of RAM, a buffer of half of it freed at t0,
     * and the host asking for half of RAM. */
    static const sizes_t quick = {192 * MM_MIB, 96 * MM_MIB, "anon=48M:hot=25,temp=96M"};
    static const sizes_t full = {1024 * MM_MIB, 512 * MM_MIB, "anon=256M:hot=25,temp=512M"};
    const sizes_t *z = opts->quick ? &quick : &full;
    size_t reps = (size_t)(opts->reps > 0 ? opts->reps : opts->quick ? 3 : 5);
    if (reps > MAX_REPS)
        reps = MAX_REPS;
    static sample_t samples[MM_GUESTRUN_N_DRIVERS][MAX_REPS];
    memset(samples, 0, sizeof samples);
    printf("guests: %llu MiB of RAM each, workload %s, asked down to %llu MiB; %zu reps\n",
           (unsigned long long)(z->ram / MM_MIB), z->workload,
           (unsigned long long)(z->keep / MM_MIB), reps);
    int err = 0;
    for (size_t r = 0; r < reps && err == 0; r++) {
        for (size_t k = 0; k < MM_GUESTRUN_N_DRIVERS && err == 0; k++) {
            const char *driver = mm__guestrun_drivers[k];
            sample_t *s = &samples[k][r];
            err = run_one(driver, z, s);
            if (err < 0)
                fprintf(stderr, "mmbench guests: %s guest failed: %s\n", driver, strerror(-err));
            else
                printf("  rep %zu %-10s reached %d in %8.1f ms, %6.1f MiB went, swapped %6.1f "
                       "MiB, intact %d\n",
                       r + 1, driver, s->reached, s->ms, s->taken / MM_MIB, s->swap_out / MM_MIB,
                       s->intact);
        }
    }
    if (err < 0)
        return err;
    bool good = true;
    for (size_t k = 0; k < MM_GUESTRUN_N_DRIVERS; k++)
        good = report(res, mm__guestrun_drivers[k], samples[k], reps) && good;
    return good ? 0 : MM_BENCH_VERDICT_FAILED;
}
