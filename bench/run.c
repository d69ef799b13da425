/*
 * `mmbench run`: every scenario against every system in the same run, next
 * to the machine's own floor, written as numbers, plots and a report
 * (report.c). Not a test: it measures.
 *
 * Scenarios (sizes: --quick, then the full run; run_guests.c says how a
 * guest repetition is measured):
 *   free     guests holding free memory (written once, then freed: resident
 *            on the guest's free list); the host asks each to keep 32 MiB.
 *   garbage  a guest whose memory is mostly an in-guest Boehm GC heap, 80%
 *            of it garbage; the host asks for most of it; slowdown window.
 *   live     a guest whose memory is all in use (a hot anonymous working
 *            set); the host asks for 32 MiB (quick) of it: it must be paged.
 *   grow     the host gives memory back and the client touches all of it:
 *            mm (a libmm client in this process) against the floor.
 *   churn    guests whose demand shifts in phases under a fixed capacity
 *            (run_churn.c); no floor.
 *   scale    clients one daemon holds and its idle CPU (rtt.c's scale part).
 * Systems: mm, balloon, fpr, virtio-mem (mmguest drivers, through
 * guestrun.c) and floor (one bulk punch of the same bytes; for grow, a
 * MADV_POPULATE_WRITE and the same touch). Repetitions are interleaved: each
 * repetition runs every system once, floor first. Every row is the median
 * over repetitions with min, max and reps (mm__results_add_median); the
 * ratios to the floor are medians of per-repetition ratios. A driver this
 * mmguest lacks, a scenario that cannot run here, or one not built yet is
 * written down as "not run" with its reason, never as a number.
 */
#include "run.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mm/mm.h>

#define MAX_REPS    16
#define DEFAULT_OUT "mmbench-run"
#define GIB         (1024.0 * 1024 * 1024)

const char *const run_systems[RUN_N_SYSTEMS] = {"mm", "balloon", "fpr", "virtio-mem", "floor"};

static const char *const scenario_names[] = {"free", "garbage", "live", "grow", "churn", "scale"};
#define N_SCENARIOS (sizeof(scenario_names) / sizeof(scenario_names[0]))

/* The host asks for about half of the garbage: what libgc can return from
 * this layout (whole free heap blocks; the rest is garbage interleaved with
 * live objects, which a non-moving collector cannot give back). */
#define GARBAGE_WHAT                                                                               \
    "a guest whose memory is mostly a Boehm GC heap, 80% of it garbage; the host asks for about "  \
    "half the garbage, what the collector can return as whole free heap blocks"

#define FREE_WHAT "guests holding free memory (a finished job's): the host needs it back"
#define LIVE_WHAT                                                                                  \
    "a guest whose memory is all in use, half of it hot: what the host takes must be paged"
/* Guest scenarios, quick and full. nominal_held is what one guest holds
 * resident before the request (measured here), for the floor's bytes. */
static const run_guest_scn_t guest_scn[2][3] = {
    {
        {"free", 2, 256 * MM_MIB, 0, 32 * MM_MIB, "anon=16M,free=192M", 0, 208 * MM_MIB, FREE_WHAT},
        {"garbage", 1, 256 * MM_MIB, 256 * MM_MIB, 128 * MM_MIB, "anon=16M,gc=160M:live=20", 2000,
         182 * MM_MIB, GARBAGE_WHAT},
        {"live", 1, 256 * MM_MIB, 256 * MM_MIB, 160 * MM_MIB, "anon=192M:hot=50", 2000,
         194 * MM_MIB, LIVE_WHAT},
    },
    {
        {"free", 4, 512 * MM_MIB, 0, 64 * MM_MIB, "anon=32M,free=416M", 0, 448 * MM_MIB, FREE_WHAT},
        {"garbage", 2, 512 * MM_MIB, 512 * MM_MIB, 256 * MM_MIB, "anon=32M,gc=320M:live=20", 4000,
         364 * MM_MIB, GARBAGE_WHAT},
        {"live", 2, 512 * MM_MIB, 512 * MM_MIB, 320 * MM_MIB, "anon=384M:hot=50", 4000,
         386 * MM_MIB, LIVE_WHAT},
    },
};

#define GROW_QUICK_BYTES (256 * MM_MIB)
#define GROW_FULL_BYTES  (1024 * MM_MIB)

/* ---- Progress ------------------------------------------------------------ */

void mm__run_progress(const run_ctx_t *ctx, const char *scenario, const char *system, int rep,
                      const char *what)
{
    double s = (double)(mm__bench_now_ns() - ctx->start_ns) / 1e9;

    if (ctx->tty)
        fprintf(stderr, "\r\033[K[%3.0f s] %s · %s · rep %d/%d%s%s", s, scenario, system, rep + 1,
                ctx->reps, what ? " · " : "", what ? what : "");
    else
        fprintf(stderr, "mmbench run: [%.0f s] %s %s rep %d/%d%s%s\n", s, scenario, system, rep + 1,
                ctx->reps, what ? ": " : "", what ? what : "");
}

/* A line that must stay on screen (a failure, a note). */
static void say(const run_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const run_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;

    if (ctx->tty)
        fprintf(stderr, "\r\033[K");
    fprintf(stderr, "mmbench run: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

/* ---- Rows ------------------------------------------------------------------ */

static int add_median(run_ctx_t *ctx, const char *scenario, const char *system, const char *metric,
                      const char *unit, const double *v, size_t n)
{
    if (n == 0)
        return 0;
    return mm__results_add_median(ctx->res, &(mm_result_row_t){scenario, system, metric, unit}, v,
                                  n, NULL, 0);
}

static int not_run(run_ctx_t *ctx, const char *scenario, const char *system, const char *reason)
{
    say(ctx, "%s on %s: not run: %s", scenario, system, reason);
    return mm__results_not_run(ctx->res, scenario, system, reason);
}

static bool is_floor(int sys)
{
    return sys == RUN_FLOOR;
}

/* Rows of one system of a guest scenario; floor_mspg[i] is the floor of
 * repetition i (<= 0: not measured). */
static int guest_rows(run_ctx_t *ctx, const run_guest_scn_t *scn, int sys,
                      const run_guest_sample_t *s, const double *floor_mspg)
{
    double mspg[MAX_REPS], taken[MAX_REPS], out[MAX_REPS], in[MAX_REPS], slow[MAX_REPS],
        ratio[MAX_REPS], frz[MAX_REPS], host[MAX_REPS];
    size_t n = 0, ns = 0, nr = 0, nh = 0;
    int ran = 0, measured = 0, reached = 0, intact = 1, rc;
    const char *name = run_systems[sys];

    for (int i = 0; i < ctx->reps; i++) {
        if (!s[i].ran)
            continue;
        ran++;
        intact = intact && s[i].intact;
        if (!s[i].measured)
            continue;
        measured++;
        reached += s[i].reached;
        if (s[i].taken_bytes <= 0)
            continue; /* nothing left: no time per GiB */
        mspg[n] = s[i].ms / (s[i].taken_bytes / GIB);
        taken[n] = s[i].taken_bytes;
        out[n] = s[i].swap_out_bytes;
        in[n] = s[i].swap_in_bytes;
        frz[n] = s[i].freezes;
        if (s[i].daemon_bytes > 0)
            host[nh++] = s[i].daemon_ms / (s[i].daemon_bytes / GIB);
        if (!isnan(s[i].slowdown))
            slow[ns++] = s[i].slowdown;
        if (floor_mspg[i] > 0)
            ratio[nr++] = mspg[n] / floor_mspg[i];
        n++;
    }
    if (ran == 0)
        return not_run(ctx, scn->name, name, "every repetition failed to start (see the log)");
    rc = add_median(ctx, scn->name, name, "ms_per_gib", "ms/GiB", mspg, n);
    if (rc == 0)
        rc = add_median(ctx, scn->name, name, "ms_per_gib_vs_floor", "ratio", ratio, nr);
    if (rc == 0)
        rc = add_median(ctx, scn->name, name, "reclaimed_bytes", "bytes", taken, n);
    if (rc == 0)
        rc = add_median(ctx, scn->name, name, "swap_out_bytes", "bytes", out, n);
    if (rc == 0 && strcmp(scn->name, "live") == 0)
        rc = add_median(ctx, scn->name, name, "swap_in_bytes", "bytes", in, n);
    if (rc == 0)
        rc = add_median(ctx, scn->name, name, "slowdown", "fraction", slow, ns);
    if (rc == 0 && sys == 0)
        rc = add_median(ctx, scn->name, name, "freezes", "count", frz, n);
    /* mm's own passes (steps 1-2) apart from the request, polls and guests. */
    if (rc == 0 && sys == 0 && nh > 0)
        rc = add_median(ctx, scn->name, name, "daemon_reclaim_ms_per_gib", "ms/GiB", host, nh);
    if (rc == 0 && measured > 0)
        rc = mm__results_add(ctx->res, &(mm_result_row_t){scn->name, name, "reached", "bool"},
                             reached == measured,
                             (mm_result_key_t[]){{"reached_reps", reached}, {"reps", measured}}, 2);
    if (rc == 0)
        rc = mm__results_add(ctx->res, &(mm_result_row_t){scn->name, name, "data_intact", "bool"},
                             intact, &(mm_result_key_t){"reps", ran}, 1);
    return rc;
}

/* ---- Guest scenarios ------------------------------------------------------- */

static const char *missing_reason(int sys)
{
    static char why[RUN_N_SYSTEMS][80];

    snprintf(why[sys], sizeof(why[sys]), "driver missing: mmguest has no --driver %s",
             run_systems[sys]);
    return why[sys];
}

static void driver_missing(run_ctx_t *ctx, int sys)
{
    ctx->missing[sys] = true;
    say(ctx, "mmguest has no --driver %s: that system is not run", run_systems[sys]);
}

static int run_guest_scenario(run_ctx_t *ctx, const run_guest_scn_t *scn)
{
    static run_guest_sample_t s[RUN_N_SYSTEMS][MAX_REPS];
    double floor_mspg[MAX_REPS], floor_ms[MAX_REPS];
    uint64_t take = (scn->nominal_held - scn->keep_bytes) * (uint64_t)scn->guests;
    uint64_t held = scn->nominal_held * (uint64_t)scn->guests;
    size_t nf = 0;
    int rc = 0;

    memset(s, 0, sizeof(s));
    for (int rep = 0; rep < ctx->reps; rep++) {
        for (int sys = 0; sys < RUN_N_SYSTEMS; sys++) {
            if (ctx->missing[sys])
                continue;
            mm__run_progress(ctx, scn->name, run_systems[sys], rep, NULL);
            if (is_floor(sys)) {
                double ms = mm__run_floor_punch_ms(held, take);

                floor_mspg[rep] = ms > 0 ? ms / ((double)take / GIB) : -1;
                if (ms > 0)
                    floor_ms[nf++] = floor_mspg[rep];
                continue;
            }
            int r = mm__run_guest_rep(ctx, scn, run_systems[sys], &s[sys][rep]);
            if (r == -ENOTSUP) {
                driver_missing(ctx, sys);
                continue;
            }
            if (r < 0)
                say(ctx, "%s on %s, rep %d: failed: %s", scn->name, run_systems[sys], rep + 1,
                    mm_strerror(r));
            else if (!s[sys][rep].intact)
                say(ctx, "%s on %s, rep %d: DATA DAMAGED", scn->name, run_systems[sys], rep + 1);
            else if (!s[sys][rep].reached)
                say(ctx, "%s on %s, rep %d: the guests did not get to %llu MiB in time", scn->name,
                    run_systems[sys], rep + 1, (unsigned long long)(scn->keep_bytes >> 20));
        }
    }
    for (int sys = 0; sys < RUN_N_SYSTEMS && rc == 0; sys++) {
        if (ctx->missing[sys])
            rc = not_run(ctx, scn->name, run_systems[sys], missing_reason(sys));
        else if (is_floor(sys))
            rc = nf > 0 ? add_median(ctx, scn->name, "floor", "ms_per_gib", "ms/GiB", floor_ms, nf)
                        : not_run(ctx, scn->name, "floor", "the punch failed (see the log)");
        else
            rc = guest_rows(ctx, scn, sys, s[sys], floor_mspg);
    }
    return rc;
}

/* ---- grow, churn, scale ---------------------------------------------------- */

static int run_grow(run_ctx_t *ctx)
{
    uint64_t bytes = ctx->opts->quick ? GROW_QUICK_BYTES : GROW_FULL_BYTES;
    double mm[MAX_REPS], fl[MAX_REPS], ratio[MAX_REPS];
    size_t nm = 0, nf = 0, nr = 0;
    int rc = 0;

    for (int rep = 0; rep < ctx->reps; rep++) {
        double f = -1, m = -1;

        mm__run_progress(ctx, "grow", "floor", rep, NULL);
        if (mm__run_grow_floor(bytes, &f) == 0)
            fl[nf++] = f / ((double)bytes / GIB);
        mm__run_progress(ctx, "grow", "mm", rep, NULL);
        if (mm__run_grow_mm(bytes, &m) == 0)
            mm[nm++] = m / ((double)bytes / GIB);
        if (f > 0 && m > 0)
            ratio[nr++] = m / f;
    }
    rc = add_median(ctx, "grow", "floor", "ms_per_gib", "ms/GiB", fl, nf);
    if (rc == 0)
        rc = add_median(ctx, "grow", "mm", "ms_per_gib", "ms/GiB", mm, nm);
    if (rc == 0)
        rc = add_median(ctx, "grow", "mm", "ms_per_gib_vs_floor", "ratio", ratio, nr);
    for (int sys = 1; sys < RUN_FLOOR && rc == 0; sys++)
        rc = not_run(ctx, "grow", run_systems[sys],
                     ctx->missing[sys] ? missing_reason(sys)
                                       : "not built: the guest model has no workload that "
                                         "allocates and touches memory on request (phase= "
                                         "grows on a clock), so a deflate or plug followed by "
                                         "the guest's first touch is not timed yet");
    if (rc == 0 && nm == 0)
        rc = not_run(ctx, "grow", "mm", "every repetition failed (see the log)");
    return rc;
}

/* Rows of one system of churn. */
static int churn_rows(run_ctx_t *ctx, int sys, const run_churn_sample_t *s, int reps)
{
    double work[MAX_REPS], p99[MAX_REPS], moved[MAX_REPS], missed[MAX_REPS], over[MAX_REPS],
        frz[MAX_REPS];
    size_t n = 0;
    int ran = 0, intact = 1, rc;
    const char *name = run_systems[sys];

    for (int i = 0; i < reps; i++) {
        if (!s[i].ran)
            continue;
        ran++;
        intact = intact && s[i].intact;
        if (!s[i].measured)
            continue;
        work[n] = s[i].work_done;
        p99[n] = s[i].op_p99_ms;
        moved[n] = s[i].bytes_moved;
        missed[n] = s[i].missed_deadlines;
        over[n] = s[i].over_capacity;
        frz[n] = s[i].freezes;
        n++;
    }
    if (ran == 0)
        return not_run(ctx, "churn", name, "every repetition failed to start (see the log)");
    rc = add_median(ctx, "churn", name, "work_done", "ops", work, n);
    if (rc == 0)
        rc = add_median(ctx, "churn", name, "op_p99_ms", "ms", p99, n);
    if (rc == 0)
        rc = add_median(ctx, "churn", name, "bytes_moved", "bytes", moved, n);
    if (rc == 0)
        rc = add_median(ctx, "churn", name, "over_capacity", "fraction", over, n);
    if (rc == 0 && sys == 0)
        rc = add_median(ctx, "churn", name, "missed_deadlines", "count", missed, n);
    if (rc == 0 && sys == 0)
        rc = add_median(ctx, "churn", name, "freezes", "count", frz, n);
    if (rc == 0)
        rc = mm__results_add(ctx->res, &(mm_result_row_t){"churn", name, "data_intact", "bool"},
                             intact, &(mm_result_key_t){"reps", ran}, 1);
    return rc;
}

/* --quick runs one repetition of churn (unless --reps says otherwise) to
 * keep the whole quick run within five minutes. */
int mm__run_churn_reps(const run_ctx_t *ctx)
{
    return ctx->opts->quick && ctx->opts->reps <= 0 ? 1 : ctx->reps;
}

/* churn has no floor: nothing in the kernel moves memory between guests by
 * itself. */
static int run_churn(run_ctx_t *ctx)
{
    static run_churn_sample_t s[RUN_FLOOR][MAX_REPS];
    run_ctx_t shown = *ctx; /* the progress line shows churn's own count */
    int reps = mm__run_churn_reps(ctx), rc = 0;

    shown.reps = reps;
    memset(s, 0, sizeof(s));
    for (int rep = 0; rep < reps; rep++) {
        for (int sys = 0; sys < RUN_FLOOR; sys++) {
            if (ctx->missing[sys])
                continue;
            mm__run_progress(&shown, "churn", run_systems[sys], rep, NULL);
            int r = mm__run_churn_rep(ctx, run_systems[sys], &s[sys][rep]);
            if (r == -ENOTSUP) {
                driver_missing(ctx, sys);
                continue;
            }
            if (r < 0)
                say(ctx, "churn on %s, rep %d: failed: %s", run_systems[sys], rep + 1,
                    mm_strerror(r));
            else if (!s[sys][rep].intact)
                say(ctx, "churn on %s, rep %d: DATA DAMAGED", run_systems[sys], rep + 1);
        }
    }
    for (int sys = 0; sys < RUN_FLOOR && rc == 0; sys++)
        rc = ctx->missing[sys] ? not_run(ctx, "churn", run_systems[sys], missing_reason(sys))
                               : churn_rows(ctx, sys, s[sys], reps);
    return rc;
}

static int run_scale(run_ctx_t *ctx)
{
    mm_bench_opts_t o = *ctx->opts;

    mm__run_progress(ctx, "scale", "mm", 0, "1000 clients, one repetition");
    o.reps = 1;
    int rc = mm__bench_scale(&o, ctx->res);
    if (rc < 0)
        say(ctx, "scale: failed: %s", mm_strerror(rc));
    return rc;
}

/* ---- The command ------------------------------------------------------------ */

/* Which scenarios to run: all, or those in list (comma-separated). */
static int parse_scenarios(const char *list, bool on[N_SCENARIOS])
{
    for (size_t i = 0; i < N_SCENARIOS; i++)
        on[i] = list == NULL;
    for (const char *p = list; p != NULL && *p != '\0';) {
        size_t len = strcspn(p, ",");
        bool found = false;

        for (size_t i = 0; i < N_SCENARIOS; i++) {
            if (strlen(scenario_names[i]) == len && strncmp(p, scenario_names[i], len) == 0) {
                on[i] = found = true;
            }
        }
        if (!found)
            return -EINVAL;
        p += len;
        if (*p == ',' && *++p == '\0')
            return -EINVAL;
    }
    return 0;
}

int mm__bench_run_check_scenarios(const char *list)
{
    bool on[N_SCENARIOS];

    return parse_scenarios(list, on);
}

/* The markdown that says what a scenario ran. */
static void describe(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void describe(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    va_list ap;

    if (*len >= cap)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n;
}

static void describe_guest(const run_guest_scn_t *g, char *buf, size_t cap, size_t *len)
{
    describe(buf, cap, len,
             "- `%s`: %s. %d guest%s of %llu MiB RAM, workload `%s`, %s; the host asks each "
             "to keep %llu MiB (about %llu MiB back in all).%s",
             g->name, g->what, g->guests, g->guests > 1 ? "s" : "",
             (unsigned long long)(g->ram_bytes >> 20), g->workload,
             g->swap_bytes ? "a swap device as large as its RAM" : "no swap device",
             (unsigned long long)(g->keep_bytes >> 20),
             (unsigned long long)(((g->nominal_held - g->keep_bytes) * (uint64_t)g->guests) >> 20),
             g->window_ms ? " Slowdown: workload rounds per second in a window after the request "
                            "against one just before it:"
                          : "");
    if (g->window_ms)
        describe(buf, cap, len, " %d ms each.\n", g->window_ms);
    else
        describe(buf, cap, len, "\n");
}

int mm__bench_run(const mm_bench_opts_t *opts, mm_results_t *res)
{
    run_ctx_t ctx = {.opts = opts, .res = res, .tty = isatty(STDERR_FILENO) == 1};
    const char *dir = opts->out_dir ? opts->out_dir : DEFAULT_OUT;
    int q = opts->quick ? 0 : 1, rc = 0;
    bool on[N_SCENARIOS];
    char text[8192];
    size_t len = 0;

    if (parse_scenarios(opts->scenarios, on) < 0) {
        fprintf(stderr, "mmbench run: unknown scenario in '%s'\n", opts->scenarios);
        return -EINVAL;
    }
    ctx.reps = opts->reps > 0 ? opts->reps : opts->quick ? 3 : 5;
    if (ctx.reps > MAX_REPS)
        ctx.reps = MAX_REPS;
    ctx.start_ns = mm__bench_now_ns();
    text[0] = '\0';
    for (size_t i = 0; i < N_SCENARIOS && rc == 0; i++) {
        if (!on[i])
            continue;
        if (i < 3) {
            rc = run_guest_scenario(&ctx, &guest_scn[q][i]);
            describe_guest(&guest_scn[q][i], text, sizeof(text), &len);
        } else if (strcmp(scenario_names[i], "grow") == 0) {
            rc = run_grow(&ctx);
            describe(
                text, sizeof(text), &len,
                "- `grow`: %llu MiB that the host had taken back (free chunks of a libmm "
                "client) are allocated again and every 4 KiB page is written once; the "
                "floor populates a fresh memfd mapping of the same size "
                "(MADV_POPULATE_WRITE) and writes the same bytes.\n",
                (unsigned long long)((opts->quick ? GROW_QUICK_BYTES : GROW_FULL_BYTES) >> 20));
        } else if (strcmp(scenario_names[i], "churn") == 0) {
            rc = run_churn(&ctx);
            mm__run_churn_describe(opts->quick, mm__run_churn_reps(&ctx), text + len,
                                   sizeof(text) - len);
            len += strlen(text + len);
        } else {
            rc = run_scale(&ctx);
            describe(text, sizeof(text), &len,
                     "- `scale`: 1000 clients (2 MiB regions, one populated chunk each) opened "
                     "from 4 processes on one daemon; its CPU time while they idle (`mmbench "
                     "rtt`'s scale part).\n");
        }
    }
    if (ctx.tty)
        fprintf(stderr, "\r\033[K");
    fprintf(stderr, "mmbench run: measured in %.0f s; writing %s\n",
            (double)(mm__bench_now_ns() - ctx.start_ns) / 1e9, dir);
    int wrc = mm__run_report(&ctx, dir, text);
    return rc < 0 ? rc : wrc;
}
