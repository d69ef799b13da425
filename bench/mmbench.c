/*
 * mmbench: the benchmark driver, one subcommand per measurement.
 *
 *   mmbench SUBCOMMAND [--quick] [--json FILE] [--reps N]
 *   mmbench run [--quick] [--scenario NAME,...] [--out DIR]
 *
 * This file parses the command line, runs the subcommand (cut.c, demo.c,
 * alloc.c, rtt.c, gc.c, guests.c, run.c),
 * prints its rows as a table and writes them with the run's meta block to
 * --json FILE (results.c). Exit status: 0 when the subcommand succeeded, 1
 * when it failed, 2 on a bad argument.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

struct subcommand {
    const char *name;
    const char *summary;
    int (*run)(const mm_bench_opts_t *opts, mm_results_t *res);
};

static const struct subcommand subcommands[] = {
    {"cut", "time for the host to get memory back when its capacity is cut", mm__bench_cut},
    {"demo", "a guided tour: three clients, a capacity cut, data verified", mm__bench_demo},
    {"alloc", "frame allocator: alloc+free cost by threads, metadata bits per frame",
     mm__bench_alloc},
    {"rtt", "control-plane round trip against a bare echo; clients one daemon holds",
     mm__bench_rtt},
    {"gc", "Boehm GC and jemalloc heaps giving their garbage back on revocation", mm__bench_gc},
    {"guests", "one guest per memory driver down to the same size; balloon's parts timed",
     mm__bench_guests},
    {"run", "every scenario on every system (mm, baselines, floor): report and plots",
     mm__bench_run},
    {"soak", "hundreds of clients, daemon kills and restarts; data and accounting checked",
     mm__bench_soak},
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: mmbench SUBCOMMAND [--quick] [--json FILE] [--reps N]\n"
               "       mmbench run [--quick] [--scenario NAME,...] [--out DIR]\n"
               "\n"
               "Subcommands:\n");
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(f, "  %-6s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(f, "\n"
               "Options:\n"
               "  --quick       fewer repetitions (for a quick look, not for reporting)\n"
               "  --json FILE   also write the results with the run's meta data to FILE\n"
               "  --reps N      repetitions per measurement (default 5, --quick 3)\n"
               "  --threads L   thread counts to measure, e.g. 1,2 (alloc)\n"
               "  --scenario L  run: scenarios to run, e.g. free,grow (default: all of\n"
               "                free, garbage, live, grow, churn, scale)\n"
               "  --out DIR     run: where results.json, results.csv, meta.json, the\n"
               "                plots and report.md go (default: mmbench-run)\n"
               "  --minutes N   how long the soak runs (default 10, --quick 1)\n"
               "  --help        show this help\n"
               "\n"
               "Programs (mmsrv, mmhold, mmctl) are taken from $MM_BIN_DIR, else from\n"
               "the directory mmbench is in.\n");
}

struct cli {
    const struct subcommand *sub;
    mm_bench_opts_t opts;
    const char *json_path;
};

static int bad_arg(const char *what, const char *value)
{
    fprintf(stderr, "mmbench: %s '%s' (see --help)\n", what, value);
    return -EINVAL;
}

static int parse_reps(const char *text, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 1 || v > 1000)
        return bad_arg("--reps wants 1 to 1000, not", text);
    *out = (int)v;
    return 0;
}

/* --threads: a comma-separated list of counts from 1 to 1024. */
static int check_threads(const char *text)
{
    const char *p = text;
    do {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1024 || (*end != ',' && *end != '\0'))
            return bad_arg("--threads wants counts like 1,2,4 (1 to 1024), not", text);
        p = *end == ',' ? end + 1 : end;
    } while (*p != '\0');
    return p[-1] == ',' ? bad_arg("--threads wants counts like 1,2,4, not", text) : 0;
}

static const struct subcommand *find_subcommand(const char *name)
{
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        if (strcmp(subcommands[i].name, name) == 0)
            return &subcommands[i];
    return NULL;
}

/* Options after the subcommand; argv[0] is the subcommand. Returns 0 to
 * run, 1 after --help, -EINVAL on a bad argument (reported). */
static int parse_opts(int argc, char **argv, struct cli *cli)
{
    static const struct option longopts[] = {
        {"quick", no_argument, NULL, 'q'},
        {"json", required_argument, NULL, 'j'},
        {"reps", required_argument, NULL, 'r'},
        {"threads", required_argument, NULL, 't'},
        {"scenario", required_argument, NULL, 's'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {"minutes", required_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    int c, rc = 0;

    opterr = 0;
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (c) {
        case 'q':
            cli->opts.quick = true;
            break;
        case 'j':
            cli->json_path = optarg;
            break;
        case 't':
            rc = check_threads(optarg);
            cli->opts.threads = optarg; /* parsed by the subcommands that use it */
            break;
        case 'r':
            rc = parse_reps(optarg, &cli->opts.reps);
            break;
        case 's':
            if (mm__bench_run_check_scenarios(optarg) < 0)
                return bad_arg("--scenario wants names from free,garbage,live,grow,churn,scale, "
                               "not",
                               optarg);
            cli->opts.scenarios = optarg;
            break;
        case 'o':
            if (optarg[0] == '\0')
                return bad_arg("--out wants a directory, not", optarg);
            cli->opts.out_dir = optarg;
            break;
        case 'm': {
            char *end;
            double m = strtod(optarg, &end);
            if (end == optarg || *end || !(m > 0 && m <= 10080))
                rc = bad_arg("--minutes wants a number of minutes (up to 10080), not", optarg);
            cli->opts.minutes = m;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            return bad_arg("missing value for", argv[optind - 1]);
        default:
            return bad_arg("unknown option", argv[optind - 1]);
        }
    }
    if (rc == 0 && optind < argc)
        return bad_arg("unexpected argument", argv[optind]);
    if (rc == 0 && strcmp(argv[0], "run") != 0 &&
        (cli->opts.scenarios != NULL || cli->opts.out_dir != NULL))
        return bad_arg("--scenario and --out are options of run only, not of", argv[0]);
    return rc;
}

static int parse_args(int argc, char **argv, struct cli *cli)
{
    if (argc < 2) {
        fprintf(stderr, "mmbench: missing subcommand (see --help)\n");
        return -EINVAL;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 1;
    }
    cli->sub = find_subcommand(argv[1]);
    if (cli->sub == NULL)
        return bad_arg("unknown subcommand", argv[1]);
    return parse_opts(argc - 1, argv + 1, cli);
}

/* Print the table and write the JSON file; the subcommand's own result
 * decides the exit status unless writing fails. */
static int report(const struct cli *cli, const mm_results_t *res, int rc)
{
    printf("\n");
    mm__results_print_table(res, stdout);
    if (cli->json_path != NULL) {
        int wrc = mm__results_write_json(res, cli->json_path);

        if (wrc < 0) {
            fprintf(stderr, "mmbench: cannot write %s: %s\n", cli->json_path, strerror(-wrc));
            return 1;
        }
        printf("\nwrote %s\n", cli->json_path);
    }
    return rc != 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct cli cli = {0};
    mm_results_t *res;
    int rc;

    rc = parse_args(argc, argv, &cli);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    rc = mm__results_new(argc, argv, &res);
    if (rc < 0) {
        fprintf(stderr, "mmbench: %s\n", strerror(-rc));
        return 1;
    }
    rc = cli.sub->run(&cli.opts, res);
    if (rc < 0)
        fprintf(stderr, "mmbench %s: failed: %s\n", cli.sub->name, strerror(-rc));
    rc = report(&cli, res, rc);
    mm__results_free(res);
    return rc;
}
