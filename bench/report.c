/*
 * The files `mmbench run` writes (see run.h), all from the result set's rows
 * and not-run notes, so that what the report says is what results.json
 * holds:
 *   results.json  the rows and notes with the meta block (INTERFACES.md);
 *   results.csv   one line per row: scenario, system, metric, value (the
 *                 median), unit, min, max, reps;
 *   meta.json     the meta block plus how the run was made and its caveats;
 *   SCENARIO.png  one bar chart per scenario (medians, min-max bars), drawn
 *                 by gnuplot from SCENARIO.dat and SCENARIO.gp, kept beside;
 *   report.md     what was run, the ratio table, the goals met or missed,
 *                 every median, what was not run and why, the plots and the
 *                 caveats. Its "README block" (between the mmbench-run
 *                 markers) is what scripts/update-results.sh pastes into the
 *                 README, with the plots under docs/results/.
 */
#include "run.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <mm/mm.h>

#define GOAL_FREE_VS_FLOOR    1.25
#define GOAL_FREE_VS_BALLOON  15.0
#define GOAL_GROW_VS_FLOOR    1.2
#define GOAL_GARBAGE_SLOWDOWN 0.05
#define HYPERALLOC_FACTOR     362.0

static const char *const plotted[] = {"free", "garbage", "live", "grow", "churn", "scale"};

/* ---- Rows ------------------------------------------------------------------ */

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static const json_t *find_row(const run_ctx_t *ctx, const char *scenario, const char *system,
                              const char *metric)
{
    size_t i;
    const json_t *row;

    json_array_foreach(mm__results_rows(ctx->res), i, row)
    {
        if (strcmp(str(row, "scenario"), scenario) == 0 &&
            strcmp(str(row, "system"), system) == 0 && strcmp(str(row, "metric"), metric) == 0)
            return row;
    }
    return NULL;
}

/* The median of a row, or NAN when there is no such row. */
static double value(const run_ctx_t *ctx, const char *scenario, const char *system,
                    const char *metric)
{
    const json_t *row = find_row(ctx, scenario, system, metric);
    return row ? json_number_value(json_object_get(row, "value")) : NAN;
}

static bool has_rows(const run_ctx_t *ctx, const char *scenario)
{
    size_t i;
    const json_t *row;

    json_array_foreach(mm__results_rows(ctx->res), i, row)
    {
        if (strcmp(str(row, "scenario"), scenario) == 0)
            return true;
    }
    return false;
}

/* A number for a table: bytes in MiB, fractions in percent, else 3
 * significant digits or so. */
static void fmt(char *buf, size_t cap, double v, const char *unit)
{
    if (isnan(v))
        snprintf(buf, cap, "–");
    else if (strcmp(unit, "bytes") == 0)
        snprintf(buf, cap, "%.1f MiB", v / (double)MM_MIB);
    else if (strcmp(unit, "fraction") == 0)
        snprintf(buf, cap, "%.1f%%", 100 * v);
    else if (fabs(v) >= 100 || v == floor(v))
        snprintf(buf, cap, "%.0f", v);
    else if (fabs(v) >= 10)
        snprintf(buf, cap, "%.1f", v);
    else
        snprintf(buf, cap, "%.3g", v);
}

/* ---- Files ----------------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
    char path[1024];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path))
        return -ENAMETOOLONG;
    memcpy(path, dir, len + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static FILE *open_in(const char *dir, const char *name, const char *mode)
{
    char path[1200];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (f == NULL)
        fprintf(stderr, "mmbench run: cannot write %s: %s\n", path, strerror(errno));
    return f;
}

static int close_file(FILE *f)
{
    return fclose(f) == 0 ? 0 : -errno;
}

static int write_csv(const run_ctx_t *ctx, const char *dir)
{
    FILE *f = open_in(dir, "results.csv", "w");
    size_t i;
    const json_t *row;

    if (f == NULL)
        return -errno;
    fprintf(f, "scenario,system,metric,value,unit,min,max,reps\n");
    json_array_foreach(mm__results_rows(ctx->res), i, row)
    {
        const json_t *min = json_object_get(row, "min"), *max = json_object_get(row, "max");
        const json_t *reps = json_object_get(row, "reps");

        fprintf(f, "%s,%s,%s,%.10g,%s,", str(row, "scenario"), str(row, "system"),
                str(row, "metric"), json_number_value(json_object_get(row, "value")),
                str(row, "unit"));
        if (min)
            fprintf(f, "%.10g", json_number_value(min));
        fprintf(f, ",");
        if (max)
            fprintf(f, "%.10g", json_number_value(max));
        fprintf(f, ",");
        if (reps)
            fprintf(f, "%lld", (long long)json_integer_value(reps));
        fprintf(f, "\n");
    }
    return close_file(f);
}

static const char *const caveats[] = {
    "Guest memory is 4 KiB shmem (memfd) pages; no huge pages were used.",
    "Times run from the first request on the admin socket to the status poll (every 1 ms) that "
    "showed the last guest at its size, so they include the request's round trip and up to 1 ms "
    "of polling; the floor is one fallocate(PUNCH_HOLE) and has neither.",
    "fpr has no request: its time runs from the moment the others are asked, and free page "
    "reporting waits 2 s before it reports.",
    "The floor's bytes are the scenario's nominal bytes (what the guests hold before the request "
    "less what they keep), not each system's measured bytes; ms per GiB normalizes both.",
    "slowdown compares workload rounds per second in a window after the request with an equally "
    "long window just before it in the same guests; a round is the workload's work plus a 50 ms "
    "pause, so a slower round shows less than its full cost.",
    "Baselines are models of the real drivers with their constants and algorithms "
    "(docs/baselines.md), not the drivers in a VM.",
};
#define N_CAVEATS (sizeof(caveats) / sizeof(caveats[0]))

static double loadavg(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double l = NAN;

    if (f != NULL) {
        if (fscanf(f, "%lf", &l) != 1)
            l = NAN;
        fclose(f);
    }
    return l;
}

static int write_meta(const run_ctx_t *ctx, const char *dir, json_t *meta)
{
    json_t *m = json_deep_copy(meta), *cav = json_array();
    FILE *f;
    int rc = -ENOMEM;

    if (m == NULL || cav == NULL)
        goto out;
    for (size_t i = 0; i < N_CAVEATS; i++)
        json_array_append_new(cav, json_string(caveats[i]));
    if (json_object_set_new(m, "quick", json_boolean(ctx->opts->quick)) < 0 ||
        json_object_set_new(m, "reps", json_integer(ctx->reps)) < 0 ||
        json_object_set_new(m, "interleaved", json_true()) < 0 ||
        json_object_set_new(m, "elapsed_s",
                            json_real((double)(mm__bench_now_ns() - ctx->start_ns) / 1e9)) < 0 ||
        json_object_set_new(m, "loadavg_1min_at_end", json_real(loadavg())) < 0 ||
        json_object_set(m, "caveats", cav) < 0)
        goto out;
    f = open_in(dir, "meta.json", "w");
    if (f == NULL) {
        rc = -EIO;
        goto out;
    }
    rc = json_dumpf(m, f, JSON_INDENT(2)) < 0 ? -EIO : 0;
    fputc('\n', f);
    if (close_file(f) < 0 && rc == 0)
        rc = -EIO;
out:
    json_decref(cav);
    json_decref(m);
    return rc;
}

/* ---- Plots ----------------------------------------------------------------- */

/* The metric a scenario's plot shows. */
static const char *plot_metric(const char *scenario, const char **unit, const char **title)
{
    if (strcmp(scenario, "scale") == 0) {
        *unit = "% of one CPU";
        *title = "scale: the daemon's idle CPU with 1000 clients";
        return "idle_cpu_pct";
    }
    if (strcmp(scenario, "churn") == 0) {
        *unit = "ms";
        *title = "p99 latency of the guests' operations";
        return "op_p99_ms";
    }
    *unit = "ms per GiB (log scale)";
    *title = strcmp(scenario, "grow") == 0 ? "grow: ms per GiB given back and touched"
                                           : "ms per GiB taken back";
    return "ms_per_gib";
}

/* Write SCENARIO.dat and SCENARIO.gp; false when there is nothing to plot. */
static bool write_plot_files(const run_ctx_t *ctx, const char *dir, const char *scenario,
                             const char *terminal)
{
    const char *unit, *title, *metric = plot_metric(scenario, &unit, &title);
    char name[64];
    int n = 0;

    for (int s = 0; s < RUN_N_SYSTEMS; s++)
        n += find_row(ctx, scenario, run_systems[s], metric) != NULL;
    if (n == 0)
        return false;
    n = 0;
    snprintf(name, sizeof(name), "%s.dat", scenario);
    FILE *f = open_in(dir, name, "w");
    if (f == NULL)
        return false;
    fprintf(f, "# system median min max label (%s)\n", metric);
    for (int s = 0; s < RUN_N_SYSTEMS; s++) {
        const json_t *row = find_row(ctx, scenario, run_systems[s], metric);
        if (row == NULL)
            continue;
        double v = json_number_value(json_object_get(row, "value"));
        const json_t *lo = json_object_get(row, "min"), *hi = json_object_get(row, "max");
        char label[64];
        fmt(label, sizeof(label), v, "");
        if (value(ctx, scenario, run_systems[s], "reached") == 0)
            snprintf(label + strlen(label), sizeof(label) - strlen(label), " (not reached)");
        double over = value(ctx, scenario, run_systems[s], "over_capacity");
        if (over > 0.01) /* churn: a system that did not keep to the capacity */
            snprintf(label + strlen(label), sizeof(label) - strlen(label),
                     " (%.0f%% over capacity)", 100 * over);
        fprintf(f, "%s %.6g %.6g %.6g \"%s\"\n", run_systems[s], v, lo ? json_number_value(lo) : v,
                hi ? json_number_value(hi) : v, label);
        n++;
    }
    fclose(f);
    if (n == 0)
        return false;
    snprintf(name, sizeof(name), "%s.gp", scenario);
    f = open_in(dir, name, "w");
    if (f == NULL)
        return false;
    fprintf(f,
            "set terminal %s size 720,420\n"
            "set output '%s/%s.png'\n"
            "set title \"%s: %s (median, bars: min to max)\"\n"
            "set ylabel \"%s\"\n"
            "set style fill solid 0.6 border -1\n"
            "set boxwidth 0.6\n"
            "set xrange [-0.6:%d.6]\n"
            "set grid ytics\n"
            "unset key\n",
            terminal, dir, scenario, scenario, title, unit, n - 1);
    if (strcmp(metric, "ms_per_gib") == 0)
        fprintf(f, "set logscale y\n");
    else
        fprintf(f, "set yrange [0:*]\n");
    fprintf(f,
            "plot '%s/%s.dat' using 0:2:xtic(1) with boxes lc rgb '#4a7ab5', \\\n"
            "     '' using 0:2:3:4 with yerrorbars lc rgb 'black' pt 0, \\\n"
            "     '' using 0:2:5 with labels offset 0,1\n",
            dir, scenario);
    fclose(f);
    return true;
}

/* Run gnuplot on DIR/SCENARIO.gp through the shell (it finds gnuplot on
 * PATH); 0 when it exited 0. */
static int gnuplot(const char *dir, const char *scenario)
{
    char script[1200];
    char *argv[] = {"/bin/sh", "-c", "exec gnuplot \"$0\" 2>/dev/null", script, NULL};
    int st = 0;

    snprintf(script, sizeof(script), "%s/%s.gp", dir, scenario);
    int rc = mm__proc_run(argv, NULL, 60000, &st);
    if (rc < 0)
        return rc;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

/* Draw every scenario's plot; drawn[i] says which made a PNG. pngcairo
 * looks better; plain png is the fallback where cairo is missing. */
static void draw_plots(const run_ctx_t *ctx, const char *dir, bool drawn[], char *why, size_t cap)
{
    why[0] = '\0';
    for (size_t i = 0; i < sizeof(plotted) / sizeof(plotted[0]); i++) {
        drawn[i] = false;
        if (!write_plot_files(ctx, dir, plotted[i], "pngcairo"))
            continue;
        if (gnuplot(dir, plotted[i]) == 0 ||
            (write_plot_files(ctx, dir, plotted[i], "png") && gnuplot(dir, plotted[i]) == 0))
            drawn[i] = true;
        else
            snprintf(why, cap,
                     "gnuplot failed or is not installed (scripts/install-deps.sh "
                     "installs gnuplot-nox)");
    }
}

/* ---- The report ------------------------------------------------------------ */

/* churn's own table: one column per system, one line per metric. */
static void churn_table(const run_ctx_t *ctx, FILE *f)
{
    static const char *const metrics[][3] = {
        {"work_done", "ops", "operations done"},
        {"op_p99_ms", "ms", "p99 operation latency (ms)"},
        {"bytes_moved", "bytes", "bytes moved"},
        {"over_capacity", "fraction", "time over capacity"},
        {"missed_deadlines", "count", "missed deadlines"},
    };
    char a[64];

    if (!has_rows(ctx, "churn"))
        return;

    int reps = mm__run_churn_reps(ctx);

    fprintf(f,
            "\nchurn (guests whose demand shifts, under a fixed capacity; %d repetition%s):\n\n"
            "| churn | mm | balloon | fpr | virtio-mem |\n| --- | ---: | ---: | ---: | ---: |\n",
            reps, reps > 1 ? "s" : "");
    for (size_t m = 0; m < sizeof(metrics) / sizeof(metrics[0]); m++) {
        fprintf(f, "| %s |", metrics[m][2]);
        for (int sys = 0; sys < RUN_FLOOR; sys++) {
            fmt(a, sizeof(a), value(ctx, "churn", run_systems[sys], metrics[m][0]), metrics[m][1]);
            fprintf(f, " %s |", a);
        }
        fprintf(f, "\n");
    }
}

/* The ratio table: per scenario and metric, each system's median, mm
 * against the floor, and how many times the baselines' value is mm's. */
static void ratio_table(const run_ctx_t *ctx, FILE *f)
{
    static const char *const scenarios[] = {"free", "garbage", "live", "grow"};
    char a[64];

    fprintf(f, "| scenario | mm ms/GiB | balloon | fpr | virtio-mem | floor | mm ÷ floor | "
               "balloon ÷ mm | fpr ÷ mm | virtio-mem ÷ mm |\n"
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
        const char *s = scenarios[i];
        double mm = value(ctx, s, "mm", "ms_per_gib");

        if (!has_rows(ctx, s))
            continue;
        fprintf(f, "| %s |", s);
        for (int sys = 0; sys < RUN_N_SYSTEMS; sys++) {
            fmt(a, sizeof(a), value(ctx, s, run_systems[sys], "ms_per_gib"), "");
            fprintf(f, " %s |", a);
        }
        fmt(a, sizeof(a), value(ctx, s, "mm", "ms_per_gib_vs_floor"), "");
        fprintf(f, " %s× |", a);
        for (int sys = 1; sys < RUN_FLOOR; sys++) {
            fmt(a, sizeof(a), value(ctx, s, run_systems[sys], "ms_per_gib") / mm, "");
            fprintf(f, " %s%s |", a, strcmp(a, "–") ? "×" : "");
        }
        fprintf(f, "\n");
    }
    churn_table(ctx, f);
    double clients = value(ctx, "scale", "mm", "clients");
    if (!isnan(clients))
        fprintf(f, "\nscale: one daemon held %.0f clients at %.2f%% of one CPU while they idled.\n",
                clients, value(ctx, "scale", "mm", "idle_cpu_pct"));
}

/* One goal line: met, missed (with the numbers) or not measured. */
static void goal(FILE *f, const char *what, double v, double limit, bool at_most, const char *fmt_v,
                 const char *missing)
{
    char num[64];

    if (isnan(v)) {
        fprintf(f, "- %s: **not measured** (%s)\n", what, missing);
        return;
    }
    bool met = at_most ? v <= limit : v >= limit;
    snprintf(num, sizeof(num), fmt_v, v);
    fprintf(f, "- %s: **%s** (%s)\n", what, met ? "met" : "missed", num);
}

static void goals(const run_ctx_t *ctx, FILE *f, bool hugepages)
{
    double free_floor = value(ctx, "free", "mm", "ms_per_gib_vs_floor");
    double free_balloon =
        value(ctx, "free", "balloon", "ms_per_gib") / value(ctx, "free", "mm", "ms_per_gib");
    double g_out = value(ctx, "garbage", "mm", "swap_out_bytes");
    double g_slow = value(ctx, "garbage", "mm", "slowdown");
    double b_out = value(ctx, "garbage", "balloon", "swap_out_bytes");
    double b_slow = value(ctx, "garbage", "balloon", "slowdown");
    char text[256];

    fprintf(f, "Goals (`--quick`, 4 KiB shmem backing):\n\n");
    goal(f, "free: mm ≤ 1.25 × floor", free_floor, GOAL_FREE_VS_FLOOR, true,
         "mm is %.2f× the floor", "the free scenario or its floor did not run");
    goal(f, "free: mm ≥ 15 × faster than balloon", free_balloon, GOAL_FREE_VS_BALLOON, false,
         "balloon takes %.1f× mm's time per GiB", "balloon was not run: see Not run");
    fprintf(f, "- free with huge pages (aim past HyperAlloc's %.0f×): **not measured** (%s)\n",
            HYPERALLOC_FACTOR,
            hugepages ? "mmbench run has no huge-page variant of the scenario yet"
                      : "no huge pages on this machine: shmem THP is off and the hugetlb pool is "
                        "empty; settings are not changed by benchmarks");
    if (isnan(g_out) || isnan(g_slow)) {
        fprintf(f, "- garbage: mm swaps nothing, slowdown ≤ 5%%: **not measured** (the garbage "
                   "scenario did not run on mm)\n");
    } else {
        bool met = g_out == 0 && g_slow <= GOAL_GARBAGE_SLOWDOWN;
        snprintf(text, sizeof(text), "mm swapped %.1f MiB, slowdown %.1f%%", g_out / MM_MIB,
                 100 * g_slow);
        fprintf(f, "- garbage: mm swaps nothing, slowdown ≤ 5%%: **%s** (%s",
                met ? "met" : "missed", text);
        if (!isnan(b_out))
            fprintf(f, "; balloon swapped %.1f MiB, slowdown %.1f%%", b_out / MM_MIB, 100 * b_slow);
        else
            fprintf(f, "; balloon not run");
        fprintf(f, ")\n");
    }
    goal(f, "grow: mm ≤ 1.2 × floor", value(ctx, "grow", "mm", "ms_per_gib_vs_floor"),
         GOAL_GROW_VS_FLOOR, true, "mm is %.2f× the floor", "the grow scenario did not run");
    fprintf(f, "\nA missed goal is reported as missed; baselines are never changed to meet one.\n"
               "Where mm's time is above the floor, the difference is the request on the admin "
               "socket, the daemon's reclaim pass and the status polls (see Caveats).\n\n");
}

/* Every row, per scenario. */
static void detail_tables(const run_ctx_t *ctx, FILE *f)
{
    const json_t *row;
    size_t i;
    char last[64] = "";

    fprintf(f, "## All medians\n");
    json_array_foreach(mm__results_rows(ctx->res), i, row)
    {
        const char *s = str(row, "scenario"), *unit = str(row, "unit");
        const json_t *lo = json_object_get(row, "min"), *hi = json_object_get(row, "max");
        const json_t *reps = json_object_get(row, "reps");
        char v[64], a[64], b[64];

        if (strcmp(s, last) != 0) {
            snprintf(last, sizeof(last), "%s", s);
            fprintf(f,
                    "\n### %s\n\n| system | metric | median | min | max | reps |\n"
                    "| --- | --- | ---: | ---: | ---: | ---: |\n",
                    s);
        }
        fmt(v, sizeof(v), json_number_value(json_object_get(row, "value")), unit);
        fmt(a, sizeof(a), lo ? json_number_value(lo) : NAN, unit);
        fmt(b, sizeof(b), hi ? json_number_value(hi) : NAN, unit);
        fprintf(f, "| %s | %s (%s) | %s | %s | %s | %lld |\n", str(row, "system"),
                str(row, "metric"), unit, v, a, b, reps ? (long long)json_integer_value(reps) : 1);
    }
    fprintf(f, "\n");
}

static void not_run_list(const run_ctx_t *ctx, FILE *f)
{
    const json_t *note;
    size_t i;

    fprintf(f, "## Not run\n\n");
    if (json_array_size(mm__results_notes(ctx->res)) == 0)
        fprintf(f, "Everything selected ran.\n");
    json_array_foreach(mm__results_notes(ctx->res), i, note)
    {
        fprintf(f, "- %s on %s: %s\n", str(note, "scenario"), str(note, "system"),
                str(note, "reason"));
    }
    fprintf(f, "\n");
}

static void machine_line(FILE *f, const json_t *meta)
{
    fprintf(f, "%s, %.1f GiB RAM, %s; git %s", json_string_value(json_object_get(meta, "cpu")),
            (double)json_integer_value(json_object_get(meta, "mem_total_bytes")) /
                (1024.0 * 1024 * 1024),
            json_string_value(json_object_get(meta, "uname")),
            json_string_value(json_object_get(meta, "git_rev")));
}

static void command_line(FILE *f, const json_t *meta)
{
    const json_t *arg;
    size_t i;

    json_array_foreach(json_object_get(meta, "args"), i, arg)
    {
        fprintf(f, "%s%s", i ? " " : "", i == 0 ? "mmbench" : json_string_value(arg));
    }
}

/* The block scripts/update-results.sh pastes into the README. */
static void readme_block(const run_ctx_t *ctx, FILE *f, const json_t *meta, const bool drawn[],
                         const char *date)
{
    fprintf(f, "<!-- mmbench-run:begin -->\n");
    fprintf(f, "Latest `mmbench run` (%s, %d interleaved repetitions, medians; %s):\n\n", date,
            ctx->reps, ctx->opts->quick ? "--quick" : "full run");
    fprintf(f, "Machine: ");
    machine_line(f, meta);
    fprintf(f, "; 1-minute load average at the end %.2f.\n\nReproduce: `", loadavg());
    command_line(f, meta);
    fprintf(f, "` (writes results.json, results.csv, meta.json, plots and report.md).\n\n");
    ratio_table(ctx, f);
    fprintf(f, "\nms/GiB: milliseconds per GiB taken back (grow: given back and touched); "
               "÷: how many times the first takes the second's time.\n\n");
    goals(ctx, f, json_is_true(json_object_get(meta, "hugepages")));
    for (size_t i = 0; i < sizeof(plotted) / sizeof(plotted[0]); i++)
        if (drawn[i])
            fprintf(f, "![%s](docs/results/%s.png)\n", plotted[i], plotted[i]);
    fprintf(f, "<!-- mmbench-run:end -->\n");
}

static int write_report(const run_ctx_t *ctx, const char *dir, const char *scenario_text,
                        const json_t *meta, const bool drawn[], const char *plot_why)
{
    FILE *f = open_in(dir, "report.md", "w");
    time_t now = time(NULL);
    struct tm tm;
    char date[64];

    if (f == NULL)
        return -errno;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", &tm);
    fprintf(f, "# mmbench run: mm against balloon drivers and the floor\n\n");
    fprintf(f, "Run on %s. Command: `", date);
    command_line(f, meta);
    fprintf(f, "`.\n\nMachine: ");
    machine_line(f, meta);
    fprintf(f, "; huge pages %s; 1-minute load average at the end %.2f.\n\n",
            json_is_true(json_object_get(meta, "hugepages")) ? "available" : "not available",
            loadavg());
    fprintf(f,
            "## What was run\n\n"
            "Systems: `mm` (the shared paging interface), `balloon`, `fpr` (free page "
            "reporting), `virtio-mem` (guest-OS models with those drivers) and `floor` "
            "(what the kernel needs for the same bytes: one bulk fallocate(PUNCH_HOLE); for "
            "growth, MADV_POPULATE_WRITE). Each of %d repetitions runs every system once, "
            "floor first (interleaved); every value is the median over them, with min and "
            "max. Each guest repetition has its own daemon (capacity 4 GiB) and guests; the "
            "guests verify all their data at the end (`data_intact`).\n\n%s\n",
            ctx->reps, scenario_text);
    fprintf(f, "## Results\n\n");
    readme_block(ctx, f, meta, drawn, date);
    fprintf(f, "\n");
    detail_tables(ctx, f);
    not_run_list(ctx, f);
    fprintf(f, "## Plots\n\n");
    for (size_t i = 0; i < sizeof(plotted) / sizeof(plotted[0]); i++)
        if (drawn[i])
            fprintf(f, "![%s](%s.png)\n\n", plotted[i], plotted[i]);
    if (plot_why[0])
        fprintf(f, "Some plots were not drawn: %s.\n\n", plot_why);
    fprintf(f, "## Caveats\n\n");
    for (size_t i = 0; i < N_CAVEATS; i++)
        fprintf(f, "- %s\n", caveats[i]);
    if (ctx->opts->quick)
        fprintf(f, "- A --quick run: smaller guests and fewer repetitions than the full run.\n");
    fprintf(f, "- The machine may have been shared with other work while this ran (the load "
               "average above says how busy it was); re-run on a quiet machine for figures to "
               "quote.\n");
    return close_file(f);
}

int mm__run_report(const run_ctx_t *ctx, const char *dir, const char *scenario_text)
{
    bool drawn[sizeof(plotted) / sizeof(plotted[0])];
    char path[1200], plot_why[160];
    json_t *meta;
    int rc = mkdir_p(dir);

    if (rc < 0) {
        fprintf(stderr, "mmbench run: cannot create %s: %s\n", dir, strerror(-rc));
        return rc;
    }
    meta = mm__results_meta(ctx->res);
    if (meta == NULL)
        return -ENOMEM;
    snprintf(path, sizeof(path), "%s/results.json", dir);
    rc = mm__results_write_json(ctx->res, path);
    if (rc < 0)
        fprintf(stderr, "mmbench run: cannot write %s: %s\n", path, strerror(-rc));
    if (rc == 0)
        rc = write_csv(ctx, dir);
    if (rc == 0)
        rc = write_meta(ctx, dir, meta);
    if (rc == 0) {
        draw_plots(ctx, dir, drawn, plot_why, sizeof(plot_why));
        rc = write_report(ctx, dir, scenario_text, meta, drawn, plot_why);
    }
    json_decref(meta);
    if (rc == 0)
        printf("mmbench run: wrote %s/report.md (with results.json, results.csv, meta.json and "
               "the plots)\n",
               dir);
    return rc;
}
