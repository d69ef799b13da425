/*
 * `mmbench gc`: language runtimes giving their garbage back (scenarios
 * gc-boehm and gc-jemalloc). Not a test: it measures.
 *
 * Each repetition starts a daemon with room to spare and one demo client
 * (mm-gc-demo: a Boehm GC heap with a live set and garbage laid out in whole
 * heap blocks; mm-je-demo: a jemalloc key-value cache with a live set and
 * churn, which leaves dirty pages). Once it is ready, the client's report
 * says how much garbage it holds (Boehm: bytes in whole free heap blocks,
 * what unmapping can return; jemalloc: dirty bytes). The capacity is then cut
 * to the client's residency less that garbage, so that the host must ask the
 * client (a revocation) for it. reclaim_ms runs from the capacity request,
 * sent straight to the admin socket, until a status poll (every 1 ms, also on
 * the admin socket) shows the client's st_blocks down by at least 80% of the
 * garbage: request to drop complete (the client's answer may come later: a
 * Boehm heap keeps collecting until three calls give nothing more).
 * reclaimed_bytes is the drop in st_blocks. collect_ms is what the runtime
 * reports its collection (or purge) of this heap cost, from its own measured
 * cost per MiB after answering. The floor is one fallocate(PUNCH_HOLE) of the
 * same garbage bytes, measured in the same repetition. The client then
 * verifies its live data (data_intact).
 *
 * Goal (issue text): reclaimed_bytes >= 80% of garbage_bytes within the
 * deadline, data_intact 1, reclaim_ms <= collect_ms + 1.25 x floor.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mm/mm.h>

#define GC_CAPACITY    "4G"
#define GC_TIMEOUT_MS  20000
#define GC_MAX_SAMPLES 16

typedef struct runtime {
    const char *scenario;
    const char *program;
    const char *live_flag, *garbage_flag;
    const char *live, *garbage;             /* full run */
    const char *quick_live, *quick_garbage; /* --quick */
} runtime_t;

static const runtime_t runtimes[] = {
    {"gc-boehm", "mm-gc-demo", "--live", "--garbage", "64M", "256M", "32M", "128M"},
    {"gc-jemalloc", "mm-je-demo", "--live", "--churn", "64M", "256M", "32M", "128M"},
};

typedef struct gc_sample {
    bool measured, intact;
    double garbage, reclaimed, reclaim_ms, collect_ms, floor_ms;
} gc_sample_t;

/* The demo's entry in status (a new reference), or NULL. */
static json_t *client_entry(const mm_bench_daemon_t *d)
{
    json_t *st = NULL;
    if (mm__bench_ctl_status(d, &st) < 0)
        return NULL;
    json_t *c = json_array_get(json_object_get(st, "clients"), 0);
    json_incref(c);
    json_decref(st);
    return c;
}

/* Cut capacity and wait until residency is at most goal_bytes. */
static int cut_and_wait(const mm_bench_daemon_t *d, uint64_t capacity, uint64_t goal_bytes,
                        gc_sample_t *s)
{
    char request[64];
    snprintf(request, sizeof request, "capacity %llu\n", (unsigned long long)capacity);
    uint64_t t0 = mm__bench_now_ns();
    json_t *reply = NULL, *st = NULL;
    int rc = mm__bench_admin(d, request, &reply);
    json_decref(reply);
    if (rc < 0)
        return rc;
    rc = mm__bench_wait_resident(d, goal_bytes, GC_TIMEOUT_MS, &st);
    if (rc < 0) {
        fprintf(stderr, "mmbench gc: residency did not fall to %llu MiB\n",
                (unsigned long long)(goal_bytes >> 20));
        return rc;
    }
    s->reclaim_ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    json_decref(st);
    return 0;
}

/* Measure one repetition of rt against d. */
static int measure(const mm_bench_daemon_t *d, const runtime_t *rt, gc_sample_t *s)
{
    json_t *before = client_entry(d);
    if (!before)
        return -EIO;
    uint64_t resident = mm__bench_json_u64(before, "resident_bytes");
    uint64_t garbage = mm__bench_json_u64(before, "garbage_bytes");
    uint64_t heap = mm__bench_json_u64(before, "heap_bytes");
    json_decref(before);
    if (garbage == 0 || garbage >= resident) {
        fprintf(stderr, "mmbench gc: %s reports %llu bytes of garbage of %llu resident\n",
                rt->program, (unsigned long long)garbage, (unsigned long long)resident);
        return -EIO;
    }
    s->garbage = (double)garbage;
    s->floor_ms = mm__bench_punch_floor_ms(resident, garbage & ~(uint64_t)(MM_FRAME_SIZE - 1));
    /* The host asks for all the garbage; the goal is 80% of it. */
    int rc = cut_and_wait(d, resident - garbage, resident - garbage / 5 * 4, s);
    if (rc < 0)
        return rc;
    /* The answer comes after the runtime's pages are gone: wait for it. */
    json_t *after = NULL;
    for (int i = 0; i < 1000; i++) {
        json_decref(after);
        after = client_entry(d);
        if (!after || json_number_value(json_object_get(after, "last_answer_ms")) > 0)
            break;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    if (!after)
        return -EIO;
    s->reclaimed = (double)(resident - mm__bench_json_u64(after, "resident_bytes"));
    s->collect_ms =
        (double)mm__bench_json_u64(after, "cost_ns_per_mib") * (double)(heap >> 20) / 1e6;
    json_decref(after);
    s->measured = true;
    return 0;
}

static int run_rep(const runtime_t *rt, bool quick, gc_sample_t *s)
{
    mm_bench_daemon_t d;
    mm_proc_t demo;
    int rc = mm__bench_daemon_start(&d, GC_CAPACITY, "warn");
    if (rc < 0)
        return rc;
    const char *args[] = {"--socket",
                          d.sock,
                          "--name",
                          rt->scenario,
                          rt->live_flag,
                          quick ? rt->quick_live : rt->live,
                          rt->garbage_flag,
                          quick ? rt->quick_garbage : rt->garbage,
                          NULL};
    rc = mm__bench_start_ready(&demo, rt->program, args);
    if (rc == 0) {
        rc = measure(&d, rt, s);
        int stop = mm__bench_hold_stop(&demo, &s->intact);
        if (rc == 0)
            rc = stop;
    }
    mm__bench_daemon_stop(&d);
    return rc;
}

static int report(mm_results_t *res, const runtime_t *rt, const gc_sample_t *s, int n)
{
    double g[GC_MAX_SAMPLES], r[GC_MAX_SAMPLES], ms[GC_MAX_SAMPLES], c[GC_MAX_SAMPLES],
        f[GC_MAX_SAMPLES];
    size_t m = 0;
    double intact = n > 0 ? 1 : 0;
    for (int i = 0; i < n; i++) {
        intact = intact && s[i].intact;
        if (!s[i].measured)
            continue;
        g[m] = s[i].garbage, r[m] = s[i].reclaimed, ms[m] = s[i].reclaim_ms;
        c[m] = s[i].collect_ms, f[m++] = s[i].floor_ms;
    }
    int rc = 0;
    if (m > 0) {
        const struct {
            const char *system, *metric, *unit;
            const double *v;
        } rows[] = {
            {"mm", "garbage_bytes", "bytes", g}, {"mm", "reclaimed_bytes", "bytes", r},
            {"mm", "reclaim_ms", "ms", ms},      {"mm", "collect_ms", "ms", c},
            {"floor", "reclaim_ms", "ms", f},
        };
        for (size_t i = 0; i < sizeof rows / sizeof rows[0] && rc == 0; i++)
            rc = mm__results_add_median(
                res, &(mm_result_row_t){rt->scenario, rows[i].system, rows[i].metric, rows[i].unit},
                rows[i].v, m, NULL, 0);
    }
    if (rc == 0 && n > 0)
        rc = mm__results_add(res, &(mm_result_row_t){rt->scenario, "mm", "data_intact", "bool"},
                             intact, &(mm_result_key_t){"reps", n}, 1);
    if (m > 0) {
        double gm = mm__results_median(g, m), rm = mm__results_median(r, m);
        double msm = mm__results_median(ms, m), cm = mm__results_median(c, m);
        double fm = mm__results_median(f, m);
        bool goal = rm >= 0.8 * gm && intact && msm <= cm + 1.25 * fm;
        printf("%s: reclaimed %.0f%% of the garbage in %.1f ms (collect %.1f ms + 1.25 x floor "
               "%.1f ms = %.1f ms): goal %s\n",
               rt->scenario, 100 * rm / gm, msm, cm, fm, cm + 1.25 * fm, goal ? "met" : "NOT met");
    }
    return rc;
}

int mm__bench_gc(const mm_bench_opts_t *opts, mm_results_t *res)
{
    int reps = opts->reps > 0 ? opts->reps : opts->quick ? 3 : 5;
    if (reps > GC_MAX_SAMPLES)
        reps = GC_MAX_SAMPLES;
    gc_sample_t s[2][GC_MAX_SAMPLES] = {0};
    int rc = 0;
    /* Interleaved: each repetition runs both runtimes. */
    for (int i = 0; i < reps; i++) {
        for (size_t k = 0; k < 2; k++) {
            int r = run_rep(&runtimes[k], opts->quick, &s[k][i]);
            fprintf(stderr, "mmbench gc: %s rep %d/%d: %s\n", runtimes[k].scenario, i + 1, reps,
                    r < 0            ? mm_strerror(r)
                    : s[k][i].intact ? "data intact"
                                     : "DATA DAMAGED");
            if (r < 0 && rc == 0)
                rc = r;
            if (r == 0 && !s[k][i].intact && rc == 0)
                rc = MM_BENCH_VERDICT_FAILED;
        }
    }
    for (size_t k = 0; k < 2; k++) {
        int r = report(res, &runtimes[k], s[k], reps);
        if (r < 0 && rc == 0)
            rc = r;
    }
    return rc;
}
