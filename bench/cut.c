/*
 * `mmbench cut`: how fast the host gets memory back when its capacity is cut.
 *
 * Each repetition starts a fresh daemon with 512 MiB of capacity and two
 * mmhold clients that each fill 200 MiB and free 150 MiB of it, then lowers
 * the capacity to 128 MiB and measures the time until the daemon's summed
 * resident bytes (kernel truth) are at or under 128 MiB. The clients then
 * verify their data. Rows (scenario "cut", system "mm"): cut_ms and
 * resident_after_bytes as medians over repetitions, data_intact as the
 * minimum.
 *
 * cut_ms is an upper bound on the daemon's own reaction: it includes
 * starting the mmctl process that lowers the capacity, and status polls
 * every 1 ms on the admin socket. The
 * daemon's own time for the reclaim pass, as its reply states, is
 * daemon_reclaim_ms. The floor, measured in the same repetition, is what the
 * kernel itself needs for the same bytes: one fallocate(PUNCH_HOLE) of 272
 * MiB out of a populated 400 MiB memfd (system "floor", metric cut_ms), and
 * cut_vs_floor is the median of the per-repetition ratios.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUT_CAPACITY     "512M"
#define CUT_TARGET       "128M"
#define CUT_TARGET_BYTES (128 * MM_MIB)
#define CUT_TIMEOUT_MS   10000
#define CUT_HOLDS        2
#define FLOOR_HELD_BYTES (400 * MM_MIB) /* what the two clients hold */
#define FLOOR_CUT_BYTES  (272 * MM_MIB) /* what the host must take back */

/* One repetition's outcome. ran: the clients were started, so intact
 * means something; measured: the target was reached, so cut_ms and
 * resident_after_bytes mean something. */
struct cut_sample {
    bool ran;
    bool measured;
    bool intact;
    double cut_ms;
    double daemon_reclaim_ms;
    double resident_after_bytes;
    double floor_ms; /* < 0: not measured */
};

static int start_holds(const mm_bench_daemon_t *d, mm_proc_t holds[CUT_HOLDS])
{
    for (int i = 0; i < CUT_HOLDS; i++) {
        char name[16];
        int rc;

        snprintf(name, sizeof(name), "hold%d", i + 1);
        rc = mm__bench_hold_start(&holds[i], d, name, "200M", "150M");
        if (rc < 0) {
            while (i-- > 0)
                mm__proc_wait(&holds[i], 0, NULL); /* Kills the ones started. */
            return rc;
        }
    }
    return 0;
}

/* Lower the capacity and wait for residency to follow. */
static int cut_measure(const mm_bench_daemon_t *d, struct cut_sample *s)
{
    static const char *const args[] = {"--json", "capacity", CUT_TARGET, NULL};
    uint64_t t0 = mm__bench_now_ns();
    json_t *status, *reply;
    char *confirmation;
    int rc;

    rc = mm__bench_ctl(d, args, &confirmation);
    if (rc < 0)
        return rc;
    reply = json_loads(confirmation, 0, NULL);
    s->daemon_reclaim_ms = json_number_value(json_object_get(reply, "reclaim_ms"));
    json_decref(reply);
    free(confirmation);
    rc = mm__bench_wait_resident(d, CUT_TARGET_BYTES, CUT_TIMEOUT_MS, &status);
    if (rc < 0) {
        fprintf(stderr, "mmbench cut: resident bytes not under %s: %s\n", CUT_TARGET,
                rc == -ETIMEDOUT ? "timed out after 10 s" : "status failed");
        return rc;
    }
    s->cut_ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    s->resident_after_bytes = (double)mm__bench_json_u64(status, "resident_bytes");
    s->measured = true;
    json_decref(status);
    return 0;
}

static int stop_holds(mm_proc_t holds[CUT_HOLDS], bool *intact)
{
    int rc = 0;

    *intact = true;
    for (int i = 0; i < CUT_HOLDS; i++) {
        bool ok;
        int r = mm__bench_hold_stop(&holds[i], &ok);

        if (r < 0 && rc == 0)
            rc = r;
        *intact = *intact && r == 0 && ok;
    }
    return rc;
}

static int cut_rep(struct cut_sample *s)
{
    mm_proc_t holds[CUT_HOLDS];
    mm_bench_daemon_t d;
    int rc, rc_stop;

    *s = (struct cut_sample){0};
    rc = mm__bench_daemon_start(&d, CUT_CAPACITY, "warn");
    if (rc < 0)
        return rc;
    rc = start_holds(&d, holds);
    if (rc < 0) {
        mm__bench_daemon_stop(&d);
        return rc;
    }
    s->ran = true;
    rc = cut_measure(&d, s);
    s->floor_ms = mm__bench_punch_floor_ms(FLOOR_HELD_BYTES, FLOOR_CUT_BYTES);
    rc_stop = stop_holds(holds, &s->intact);
    if (rc == 0)
        rc = rc_stop;
    /* A daemon that exits badly after the measurement does not void it. */
    if (mm__bench_daemon_stop(&d) < 0)
        fprintf(stderr, "mmbench cut: mmsrv did not exit cleanly\n");
    return rc;
}

/* Median row of the first n samples, unless there are none. */
static int add_median(mm_results_t *res, const char *system, const char *metric, const char *unit,
                      const double *v, size_t n)
{
    if (n == 0)
        return 0;
    return mm__results_add_median(res, &(mm_result_row_t){"cut", system, metric, unit}, v, n, NULL,
                                  0);
}

static int cut_report(mm_results_t *res, const struct cut_sample *s, int reps)
{
    double *v = calloc((size_t)reps * 5, sizeof(*v));
    double *ms = v, *after = v + reps, *daemon = v + 2 * reps, *floor = v + 3 * reps,
           *ratio = v + 4 * reps;
    double intact = 1;
    size_t n = 0, nf = 0, ran = 0;
    int rc = 0;

    if (v == NULL)
        return -ENOMEM;
    for (int i = 0; i < reps; i++) {
        ran += s[i].ran;
        if (s[i].ran && !s[i].intact)
            intact = 0;
        if (!s[i].measured)
            continue;
        ms[n] = s[i].cut_ms;
        daemon[n] = s[i].daemon_reclaim_ms;
        after[n++] = s[i].resident_after_bytes;
        if (s[i].floor_ms > 0) {
            floor[nf] = s[i].floor_ms;
            ratio[nf++] = s[i].cut_ms / s[i].floor_ms;
        }
    }
    rc = add_median(res, "mm", "cut_ms", "ms", ms, n);
    if (rc == 0)
        rc = add_median(res, "mm", "daemon_reclaim_ms", "ms", daemon, n);
    if (rc == 0)
        rc = add_median(res, "mm", "resident_after_bytes", "bytes", after, n);
    if (rc == 0)
        rc = add_median(res, "floor", "cut_ms", "ms", floor, nf);
    if (rc == 0)
        rc = add_median(res, "mm", "cut_vs_floor", "ratio", ratio, nf);
    /* Data that was never written cannot be intact or damaged: no row. */
    if (rc == 0 && ran > 0)
        rc = mm__results_add(res, &(mm_result_row_t){"cut", "mm", "data_intact", "bool"}, intact,
                             &(mm_result_key_t){"reps", (int64_t)ran}, 1);
    free(v);
    return rc;
}

static void cut_log(const struct cut_sample *s, int i, int reps, int rc)
{
    fprintf(stderr, "mmbench cut: rep %d/%d: ", i + 1, reps);
    if (s->measured)
        fprintf(stderr,
                "%.1f ms (daemon %.1f ms, floor %.1f ms), resident after %.1f MiB, data %s\n",
                s->cut_ms, s->daemon_reclaim_ms, s->floor_ms,
                s->resident_after_bytes / (double)MM_MIB, s->intact ? "intact" : "DAMAGED");
    else
        fprintf(stderr, "failed: %s\n", strerror(-rc));
}

int mm__bench_cut(const mm_bench_opts_t *opts, mm_results_t *res)
{
    int reps = opts->reps > 0 ? opts->reps : opts->quick ? 3 : 5;
    struct cut_sample *s = calloc((size_t)reps, sizeof(*s));
    int rc = 0, rep_rc, done;

    if (s == NULL)
        return -ENOMEM;
    for (done = 0; done < reps; done++) {
        rep_rc = cut_rep(&s[done]);
        cut_log(&s[done], done, reps, rep_rc);
        if (rc >= 0 && (rep_rc < 0 || !s[done].intact))
            rc = rep_rc < 0 ? rep_rc : MM_BENCH_VERDICT_FAILED;
        /* A rep that could not even start its clients will not be the
         * last to fail: stop instead of repeating the failure. */
        if (!s[done].ran) {
            done++;
            break;
        }
    }
    rep_rc = cut_report(res, s, done);
    free(s);
    return rc != 0 ? rc : rep_rc;
}
