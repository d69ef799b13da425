/*
 * `mmbench run`'s churn scenario (see run.h): guests whose demand shifts in
 * phases, out of step with each other, under a fixed capacity smaller than
 * the sum of their peaks, so that memory must move from the guest that just
 * finished a phase to the one starting its own.
 *
 * One repetition on one system: a fresh daemon with --capacity set to the
 * layout's capacity; the guests (mmguest, through guestrun.c) with workload
 * anon=8M (a small hot set) and phase=PEAK:period=P:offset=i*100/n; after a
 * settling period, a window of whole periods. Every TICK_MS of the window the
 * benchmark reads the daemon's status once (each guest's resident bytes:
 * kernel truth) and, for balloon and virtio-mem, acts as a management stack
 * would (controller() below). mm has no controller: its daemon arbitrates
 * the capacity by itself. fpr has none either: free page reporting has no
 * target; the guests report their freed memory after its delay.
 *
 * Per repetition, summed over the guests, over the window:
 *   work_done          phase operations completed (4 MiB steps written or
 *                      verified; the guest paces its rounds 50 ms apart, so
 *                      this drops only when operations stall);
 *   op_p99_ms          the 99th percentile of those operations' latencies
 *                      (from the guests' histograms at the window's ends);
 *   bytes_moved        what left the guests and came back: every drop in a
 *                      guest's resident bytes between two ticks (frees
 *                      punched, reclaim, balloon and virtio-mem discards, free
 *                      page reports), the guests' own swap traffic and the
 *                      host's paging of them;
 *   missed_deadlines   revocations the guests did not answer in time (mm:
 *                      the daemon's count; the baselines get no revocations,
 *                      so the row is mm's only);
 *   over_capacity      the share of ticks at which the guests' resident bytes
 *                      together exceeded the capacity: for mm the daemon
 *                      enforces it, for the baselines only their driver can;
 *   data_intact        every guest verified all its data on stop.
 */
#include "run.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mm/mm.h>

#define TICK_MS 150
/* Room over a guest's demand that the controller leaves it for the next
 * tick: a phase grows PEAK per quarter period, 19 MiB per tick in --quick. */
#define HEADROOM (32 * MM_MIB)
/* The controller leaves a size alone when it would change by less. */
#define HYSTERESIS  (4 * MM_MIB)
#define MAX_GUESTS  8
#define MAX_BUCKETS 128

typedef struct churn_layout {
    int guests;
    uint64_t ram_bytes, peak_bytes, capacity_bytes;
    int period_ms, periods;
} churn_layout_t;

/* Peaks: 3 × (8 + 96) MiB = 312 MiB (quick) against 224 MiB; the phases,
 * a third of a period apart, need at most about 184 MiB at once. Full run:
 * 4 × (8 + 256) MiB = 1056 MiB against 640 MiB (at most about 530 at
 * once). */
static const churn_layout_t layouts[2] = {
    {3, 128 * MM_MIB, 96 * MM_MIB, 224 * MM_MIB, 3000, 2},
    {4, 384 * MM_MIB, 256 * MM_MIB, 640 * MM_MIB, 8000, 3},
};

/* What one guest has done so far. */
struct guest_counts {
    double ops, swap, paged, missed;
    uint64_t used;
    size_t n_buckets;
    double upper[MAX_BUCKETS], count[MAX_BUCKETS];
};

/* Add sign × op_hist (from a guest's stats) to c's buckets. */
static void add_hist(struct guest_counts *c, const json_t *hist, double sign)
{
    size_t i, k;
    json_t *b;

    json_array_foreach(hist, i, b)
    {
        double upper = (double)json_integer_value(json_array_get(b, 0));

        for (k = 0; k < c->n_buckets && c->upper[k] != upper; k++)
            ;
        if (k == c->n_buckets) {
            if (k == MAX_BUCKETS)
                continue;
            c->upper[c->n_buckets++] = upper;
            c->count[k] = 0;
        }
        c->count[k] += sign * (double)json_integer_value(json_array_get(b, 1));
    }
}

static int cmp_upper(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The 99th percentile in ms of the histogram in c (0 when empty). */
static double p99_ms(const struct guest_counts *c)
{
    double pairs[MAX_BUCKETS][2], total = 0, seen = 0;

    for (size_t k = 0; k < c->n_buckets; k++) {
        pairs[k][0] = c->upper[k];
        pairs[k][1] = c->count[k];
        total += c->count[k];
    }
    qsort(pairs, c->n_buckets, sizeof(pairs[0]), cmp_upper);
    for (size_t k = 0; k < c->n_buckets && total > 0; k++) {
        seen += pairs[k][1];
        if (seen >= 0.99 * total)
            return pairs[k][0] / 1000;
    }
    return 0;
}

/* Read every guest's statistics and daemon entry; with hist, add their
 * histograms to it with sign. */
static int read_guests(mm_guestrun_t *g, int n, const mm_bench_daemon_t *d, struct guest_counts *c,
                       struct guest_counts *hist, double sign)
{
    for (int i = 0; i < n; i++) {
        json_t *st = NULL, *e = NULL;
        int rc = mm__guestrun_stats(&g[i], &st);

        if (rc == 0 && d != NULL)
            rc = mm__guestrun_client(&g[i], d, &e);
        if (rc == 0) {
            c[i].ops = (double)mm__bench_json_u64(st, "ops");
            c[i].used = mm__bench_json_u64(st, "used_bytes");
            c[i].swap = (double)(mm__bench_json_u64(st, "swap_out_bytes") +
                                 mm__bench_json_u64(st, "swap_in_bytes"));
            c[i].paged = (double)mm__bench_json_u64(e, "paged_out_bytes");
            c[i].missed = (double)mm__bench_json_u64(e, "missed_deadlines");
            if (hist != NULL)
                add_hist(hist, json_object_get(st, "op_hist"), sign);
        }
        json_decref(st);
        json_decref(e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Each guest's resident bytes from one status (0 for one not listed). */
static int read_resident(mm_guestrun_t *g, int n, const mm_bench_daemon_t *d, uint64_t *resident)
{
    json_t *status = NULL, *c;
    size_t k;
    int rc = mm__bench_ctl_status(d, &status);

    if (rc < 0)
        return rc;
    for (int i = 0; i < n; i++) {
        resident[i] = 0;
        json_array_foreach(json_object_get(status, "clients"), k, c)
        {
            const char *name = json_string_value(json_object_get(c, "name"));

            if (name != NULL && strcmp(name, g[i].name) == 0)
                resident[i] = mm__bench_json_u64(c, "resident_bytes");
        }
    }
    json_decref(status);
    return 0;
}

/*
 * The management stack for balloon and virtio-mem, once per tick: each
 * guest's demand is the memory its own statistics say it uses (what a real
 * stack reads from the balloon's stats queue) plus HEADROOM for the next
 * tick. When the demands fit the capacity, each guest gets its demand and an
 * equal share of what is left (up to its RAM): nobody is squeezed for
 * nothing. When they do not fit, the capacity is shared in proportion to the
 * demands. Sizes that moved less than HYSTERESIS are not sent again (a real
 * stack also avoids inflating and deflating for noise); virtio-mem sizes
 * are whole 2 MiB blocks.
 */
static int controller(mm_guestrun_t *g, int n, const mm_bench_daemon_t *d, const churn_layout_t *l,
                      uint64_t *sent)
{
    struct guest_counts c[MAX_GUESTS];
    uint64_t want[MAX_GUESTS], sum = 0;
    int rc = read_guests(g, n, NULL, c, NULL, 0);

    for (int i = 0; i < n && rc == 0; i++) {
        want[i] = c[i].used + HEADROOM < l->ram_bytes ? c[i].used + HEADROOM : l->ram_bytes;
        sum += want[i];
    }
    for (int i = 0; i < n && rc == 0; i++) {
        uint64_t size = sum <= l->capacity_bytes
                            ? want[i] + (l->capacity_bytes - sum) / (uint64_t)n
                            : (uint64_t)((double)want[i] * (double)l->capacity_bytes / (double)sum);

        if (size > l->ram_bytes)
            size = l->ram_bytes;
        size = (size + MM_CHUNK_SIZE - 1) / MM_CHUNK_SIZE * MM_CHUNK_SIZE;
        if (sent[i] != 0 && (size > sent[i] ? size - sent[i] : sent[i] - size) < HYSTERESIS)
            continue;
        rc = mm__guestrun_ask(&g[i], d, size);
        sent[i] = size;
    }
    return rc;
}

static bool has_controller(const char *system)
{
    return strcmp(system, "balloon") == 0 || strcmp(system, "virtio-mem") == 0;
}

/* The tick after the one due at t; a late tick is not made up for, so that
 * a slow guest does not stretch the window. */
static uint64_t next_tick(uint64_t t)
{
    uint64_t now = mm__bench_now_ns();

    t += TICK_MS * 1000000ull;
    return t > now ? t : now;
}

/* The window: tick, control, count. */
static int window(mm_guestrun_t *g, const mm_bench_daemon_t *d, const churn_layout_t *l,
                  const char *system, run_churn_sample_t *s)
{
    struct guest_counts before[MAX_GUESTS], after[MAX_GUESTS], hist = {0};
    uint64_t prev[MAX_GUESTS], now[MAX_GUESTS], sent[MAX_GUESTS] = {0};
    uint64_t t0, end, ticks = 0, over = 0;
    double dropped = 0;
    int n = l->guests, rc;

    /* Let the phases settle (and the controller act) for a quarter period. */
    end = mm__bench_now_ns() + (uint64_t)l->period_ms * 250000ull;
    for (uint64_t t = mm__bench_now_ns(); t < end; t = next_tick(t)) {
        mm__run_sleep_until(t);
        rc = has_controller(system) ? controller(g, n, d, l, sent) : 0;
        if (rc < 0)
            return rc;
    }
    rc = read_guests(g, n, d, before, &hist, -1);
    if (rc == 0)
        rc = read_resident(g, n, d, prev);
    t0 = mm__bench_now_ns();
    end = t0 + (uint64_t)l->period_ms * (uint64_t)l->periods * 1000000ull;
    for (uint64_t t = next_tick(t0); rc == 0 && t < end; t = next_tick(t)) {
        uint64_t sum = 0;

        mm__run_sleep_until(t);
        if (has_controller(system))
            rc = controller(g, n, d, l, sent);
        if (rc == 0)
            rc = read_resident(g, n, d, now);
        for (int i = 0; i < n && rc == 0; i++) {
            dropped += now[i] < prev[i] ? (double)(prev[i] - now[i]) : 0;
            sum += now[i];
            prev[i] = now[i];
        }
        ticks++;
        over += sum > l->capacity_bytes;
    }
    if (rc == 0)
        rc = read_guests(g, n, d, after, &hist, 1);
    if (rc < 0)
        return rc;
    s->bytes_moved = dropped;
    for (int i = 0; i < n; i++) {
        s->work_done += after[i].ops - before[i].ops;
        s->bytes_moved += after[i].swap - before[i].swap + after[i].paged - before[i].paged;
        s->missed_deadlines += after[i].missed - before[i].missed;
    }
    s->op_p99_ms = p99_ms(&hist);
    s->over_capacity = ticks ? (double)over / (double)ticks : 0;
    s->measured = true;
    return 0;
}

int mm__run_churn_rep(run_ctx_t *ctx, const char *system, run_churn_sample_t *s)
{
    const churn_layout_t *l = &layouts[ctx->opts->quick ? 0 : 1];
    mm_guestrun_t g[MAX_GUESTS];
    mm_bench_daemon_t d;
    char capacity[32];
    int started = 0, rc;

    *s = (run_churn_sample_t){0};
    snprintf(capacity, sizeof(capacity), "%llu", (unsigned long long)l->capacity_bytes);
    rc = mm__bench_daemon_start(&d, capacity, "warn");
    if (rc < 0)
        return rc;
    for (; started < l->guests && rc == 0; started++) {
        char name[32], workload[96];

        snprintf(name, sizeof(name), "churn-%s-%d", system, started + 1);
        snprintf(workload, sizeof(workload), "anon=8M,phase=%lluM:period=%d:offset=%d",
                 (unsigned long long)(l->peak_bytes >> 20), l->period_ms,
                 started * 100 / l->guests);
        mm_guestrun_cfg_t cfg = {.driver = system,
                                 .name = name,
                                 .ram_bytes = l->ram_bytes,
                                 .workload = workload,
                                 .swap_bytes = l->ram_bytes};
        rc = mm__guestrun_start(&g[started], &d, &cfg);
        if (rc < 0)
            break;
    }
    if (rc == 0) {
        s->ran = true;
        rc = window(g, &d, l, system, s);
        if (rc == 0)
            rc = mm__run_thaw_frozen(g, started, &d, l->ram_bytes, &s->freezes);
    }
    s->intact = mm__run_stop_guests(g, started, &d) && s->ran;
    return rc;
}

void mm__run_churn_describe(bool quick, int reps, char *buf, size_t cap)
{
    const churn_layout_t *l = &layouts[quick ? 0 : 1];

    snprintf(
        buf, cap,
        "- `churn`: %d guests of %llu MiB RAM (swap as large), workload `anon=8M,phase=%lluM:"
        "period=%d:offset=...` a 1/%d period apart (each grows to its peak over a quarter "
        "period, holds it for another, frees it and idles), under a fixed capacity of %llu "
        "MiB (their peaks: %llu MiB). After a quarter period to settle, a window of %d periods; "
        "every %d ms the daemon's status is read and, for balloon and virtio-mem, a "
        "controller sets each guest's size to its used memory + %llu MiB, sharing the "
        "capacity in proportion when that does not fit (docs/run.md). mm: the daemon "
        "alone; fpr: the guests' own reports. %d repetition%s; no floor.\n",
        l->guests, (unsigned long long)(l->ram_bytes >> 20),
        (unsigned long long)(l->peak_bytes >> 20), l->period_ms, l->guests,
        (unsigned long long)(l->capacity_bytes >> 20),
        (unsigned long long)((l->peak_bytes + 8 * MM_MIB) * (uint64_t)l->guests >> 20), l->periods,
        TICK_MS, (unsigned long long)(HEADROOM >> 20), reps, reps > 1 ? "s" : "");
}
