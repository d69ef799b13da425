/*
 * `mmbench run` internals: the scenarios (run_guests.c measures them, one
 * system at a time), the driver that interleaves their repetitions and
 * gathers medians (run.c), and the files it writes (report.c).
 *
 * A run_ctx_t lives for one `mmbench run`; it says which baseline drivers
 * this mmguest lacks (found on their first start) and drives the progress
 * display. Not thread-safe: one thread runs everything.
 */
#ifndef MM_BENCH_RUN_H
#define MM_BENCH_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "bench.h"
#include "guestrun.h"

#define RUN_N_SYSTEMS 5 /* mm, balloon, fpr, virtio-mem, floor */
#define RUN_FLOOR     4 /* index of floor in run_systems */

extern const char *const run_systems[RUN_N_SYSTEMS];

typedef struct run_ctx {
    const mm_bench_opts_t *opts;
    mm_results_t *res;
    int reps;
    bool tty;                    /* stderr is a terminal: one updating line */
    uint64_t start_ns;           /* when the run began */
    bool missing[RUN_N_SYSTEMS]; /* a driver mmguest refused */
} run_ctx_t;

/* A guest scenario's layout: guests guests, each with ram_bytes of RAM
 * running workload, asked to keep keep_bytes. */
typedef struct run_guest_scn {
    const char *name;
    int guests;
    uint64_t ram_bytes, swap_bytes, keep_bytes;
    const char *workload;
    int window_ms;         /* slowdown window; 0: not measured */
    uint64_t nominal_held; /* per guest, for the floor: resident before */
    const char *what;      /* one line on what it models */
} run_guest_scn_t;

/* One repetition of a guest scenario on one system. ran: guests started
 * (so intact means something); measured: the numbers mean something. */
typedef struct run_guest_sample {
    bool ran, measured, reached, intact;
    double ms, taken_bytes, swap_out_bytes, swap_in_bytes, slowdown;
    double freezes;         /* times the daemon froze a guest (mm's last resort) */
    double resident_at_end; /* summed, when reached (or at the deadline) */
    /* mm: the daemon's own share, from its ladder (steps 1 and 2, free and
     * discardable chunks): time in those passes and the bytes they took. */
    double daemon_ms, daemon_bytes;
} run_guest_sample_t;

/* Measure one repetition of scn on system (a guest driver); -ENOTSUP when
 * mmguest lacks the driver. */
int mm__run_guest_rep(run_ctx_t *ctx, const run_guest_scn_t *scn, const char *system,
                      run_guest_sample_t *s);

/* churn: one repetition on system (a guest driver); -ENOTSUP when mmguest
 * lacks the driver. run_churn.c says what is measured. */
typedef struct run_churn_sample {
    bool ran, measured, intact;
    double work_done, op_p99_ms, bytes_moved, missed_deadlines, over_capacity, freezes;
} run_churn_sample_t;

int mm__run_churn_rep(run_ctx_t *ctx, const char *system, run_churn_sample_t *s);
/* The churn layout as markdown (one list item), run reps times. */
void mm__run_churn_describe(bool quick, int reps, char *buf, size_t cap);
/* churn's repetitions: one with --quick unless --reps says otherwise. */
int mm__run_churn_reps(const run_ctx_t *ctx);

/* Stop n guests (each verifies its data) and then the daemon; true when
 * every guest stopped cleanly with its data intact. */
bool mm__run_stop_guests(mm_guestrun_t *g, int n, mm_bench_daemon_t *d);

/* Sleep until CLOCK_MONOTONIC (mm__bench_now_ns) reaches t_ns. */
void mm__run_sleep_until(uint64_t t_ns);

/* A guest the daemon froze (mm's last resort for a client that missed a
 * revocation's deadline) stays stopped while its target is below what it
 * holds: give it its RAM (ram_bytes) back and wait for the thaw, so that it
 * can be counted and can verify its data. *freezes gets the freezes seen. */
int mm__run_thaw_frozen(mm_guestrun_t *g, int n, const mm_bench_daemon_t *d, uint64_t ram_bytes,
                        double *freezes);

/* The floor for a guest scenario: ms for one fallocate(PUNCH_HOLE) of
 * taken_bytes out of a populated memfd of held_bytes. < 0 on failure. */
double mm__run_floor_punch_ms(uint64_t held_bytes, uint64_t taken_bytes);

/* grow: ms to get bytes back and touch every page of it, for mm (a libmm
 * client in this process whose free chunks the host took, allocating them
 * again: install and populate) and for the floor (MADV_POPULATE_WRITE of a
 * fresh memfd mapping, then the same touch). < 0: a negative errno. */
int mm__run_grow_mm(uint64_t bytes, double *ms);
int mm__run_grow_floor(uint64_t bytes, double *ms);

/* Show progress: scenario, system, repetition, elapsed (one updating line on
 * a terminal, a plain line otherwise). */
void mm__run_progress(const run_ctx_t *ctx, const char *scenario, const char *system, int rep,
                      const char *what);

/* Write DIR/results.json, results.csv, meta.json, one PNG per scenario (with
 * gnuplot) and report.md from res's rows and notes. scenario_text describes
 * the scenarios that ran (markdown). 0, or a negative errno (reported). */
int mm__run_report(const run_ctx_t *ctx, const char *dir, const char *scenario_text);

#endif /* MM_BENCH_RUN_H */
