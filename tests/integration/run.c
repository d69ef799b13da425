/*
 * Integration tests of `mmbench run` (bench/run.c, report.c): its smallest
 * real run (the grow scenario, one repetition: a daemon, a libmm client and
 * the floor, a few seconds) writes every file, with rows that agree between
 * results.json and results.csv, a report that says what ran, what did not
 * and why, and goal lines; and its command line refuses bad arguments with
 * exit status 2 and one line on stderr. Not a benchmark: no timing is
 * checked, only that the numbers are there and sane.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "procs.h"

static char dir_[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path); /* best effort: a leftover only wastes /tmp space */
    return 0;
}

static void cleanup(void)
{
    if (dir_[0])
        nftw(dir_, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(run, .fini = cleanup, .timeout = 120);

/* Run mmbench with args (NULL-terminated), stdout and stderr to files in
 * the test's directory; its exit status. */
static int mmbench(const char *const args[])
{
    char prog[4096], cmd[8192];
    size_t len;

    cr_assert_eq(mm__bin_path("mmbench", prog, sizeof prog), 0, "mmbench is built");
    len = (size_t)snprintf(cmd, sizeof cmd, "'%s'", prog);
    for (; *args; args++)
        len += (size_t)snprintf(cmd + len, sizeof cmd - len, " '%s'", *args);
    snprintf(cmd + len, sizeof cmd - len, " >'%s/stdout' 2>'%s/stderr'", dir_, dir_);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "mmbench exited");
    return WEXITSTATUS(st);
}

static char *slurp(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir_, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s exists", name);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void make_dir(void)
{
    snprintf(dir_, sizeof dir_, "/tmp/mm-run-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir_), "mkdtemp: %s", strerror(errno));
}

static bool have_gnuplot(void)
{
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

Test(run, a_grow_run_writes_every_file_with_matching_rows)
{
    make_dir();
    char out[128];
    snprintf(out, sizeof out, "%s/out", dir_);
    const char *args[] = {"run",  "--quick", "--reps", "1", "--scenario",
                          "grow", "--out",   out,      NULL};
    cr_assert_eq(mmbench(args), 0, "mmbench run succeeds: %s", slurp("stderr"));

    json_error_t jerr;
    char path[256];
    snprintf(path, sizeof path, "%s/results.json", out);
    json_t *res = json_load_file(path, 0, &jerr);
    cr_assert_not_null(res, "results.json parses: %s", jerr.text);
    json_t *meta = json_object_get(res, "meta"), *rows = json_object_get(res, "results");
    cr_expect(json_is_string(json_object_get(meta, "git_rev")), "meta has git_rev");
    cr_expect(json_is_array(json_object_get(meta, "args")), "meta has args");
    cr_assert(json_is_array(rows));
    size_t i, grow_rows = 0;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        cr_expect_str_eq(json_string_value(json_object_get(row, "scenario")), "grow");
        const char *metric = json_string_value(json_object_get(row, "metric"));
        double v = json_number_value(json_object_get(row, "value"));
        if (strcmp(metric, "ms_per_gib") == 0)
            cr_expect_gt(v, 0, "ms_per_gib is positive");
        grow_rows++;
    }
    cr_expect_eq(grow_rows, 3, "floor and mm ms_per_gib, mm's ratio to the floor");
    /* The baselines are not run for grow, and each says why. */
    json_t *notes = json_object_get(res, "not_run");
    cr_expect_eq(json_array_size(notes), 3, "balloon, fpr, virtio-mem: not run");
    json_array_foreach(notes, i, row)
        cr_expect_gt(strlen(json_string_value(json_object_get(row, "reason"))), 10);
    json_decref(res);

    char name[160];
    snprintf(name, sizeof name, "out/results.csv");
    char *csv = slurp(name);
    cr_expect_eq(strncmp(csv, "scenario,system,metric,value,unit,min,max,reps\n", 47), 0);
    cr_expect_not_null(strstr(csv, "grow,mm,ms_per_gib,"), "the CSV has mm's row");
    cr_expect_not_null(strstr(csv, "grow,floor,ms_per_gib,"), "the CSV has the floor's row");
    free(csv);

    char *m = slurp("out/meta.json");
    json_t *mj = json_loads(m, 0, &jerr);
    cr_assert_not_null(mj, "meta.json parses");
    cr_expect(json_is_true(json_object_get(mj, "quick")));
    cr_expect_eq(json_integer_value(json_object_get(mj, "reps")), 1);
    cr_expect_gt(json_array_size(json_object_get(mj, "caveats")), 0);
    json_decref(mj);
    free(m);

    char *rep = slurp("out/report.md");
    cr_expect_not_null(strstr(rep, "<!-- mmbench-run:begin -->"), "the README block starts");
    cr_expect_not_null(strstr(rep, "<!-- mmbench-run:end -->"), "and ends");
    cr_expect_not_null(strstr(rep, "| grow |"), "the ratio table has grow");
    cr_expect_not_null(strstr(rep, "grow: mm ≤ 1.2 × floor: **"), "the grow goal is judged");
    cr_expect_not_null(strstr(rep, "free: mm ≤ 1.25 × floor: **not measured**"),
                       "a goal of a scenario not run says so");
    cr_expect_not_null(strstr(rep, "grow on balloon: "), "what did not run is listed");
    free(rep);

    struct stat st;
    snprintf(path, sizeof path, "%s/grow.png", out);
    if (have_gnuplot())
        cr_expect_eq(stat(path, &st), 0, "gnuplot drew grow.png");
    else
        cr_log_warn("gnuplot is not installed: the plot was not checked");
}

static void expect_bad_arg(const char *const args[], const char *what)
{
    cr_expect_eq(mmbench(args), 2, "%s: exit status 2", what);
    char *err = slurp("stderr");
    size_t lines = 0;
    for (char *p = err; *p; p++)
        lines += *p == '\n';
    cr_expect_eq(lines, 1, "%s: one line on stderr, got '%s'", what, err);
    free(err);
}

Test(run, bad_arguments_exit_2_with_one_line)
{
    make_dir();
    expect_bad_arg((const char *const[]){"run", "--scenario", "nope", NULL}, "unknown scenario");
    expect_bad_arg((const char *const[]){"run", "--scenario", "free,", NULL}, "trailing comma");
    expect_bad_arg((const char *const[]){"run", "--out", "", NULL}, "empty --out");
    expect_bad_arg((const char *const[]){"cut", "--out", "x", NULL}, "--out on another command");
}
