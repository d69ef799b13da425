/*
 * Integration tests of `mmctl metrics` and `mmctl top`: the exposition text
 * is read back by a real parser (prometheus_client's, through python3) and
 * compared with the daemon's own status; top's snapshots are checked as
 * plain text, since a test's stdout is a pipe and not a terminal.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mm/mm.h>

#include "common.h"
#include "procs.h"

TestSuite(metrics, .fini = stop_daemon, .timeout = 120);

/* A name that needs escaping in a label value: a double quote and a
 * backslash (newlines are not printable, so the daemon refuses them). */
#define ODD_NAME "q\"uo\\te"

/* Reads the file argv[1] with prometheus_client's parser and prints what it
 * found as JSON: {family: {"type": t, "samples": [[name, labels, value]]}}. */
static const char parse_py[] =
    "import json, sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "out = {}\n"
    "for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n"
    "    out[f.name] = {'type': f.type, 'samples': [[s.name, s.labels, s.value]\n"
    "                                                for s in f.samples]}\n"
    "print(json.dumps(out))\n";

static int run_py(char *const argv[], char **out)
{
    int st = 0;
    int rc = mm__proc_run(argv, out, 30000, &st);
    if (rc == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        free(*out);
        *out = NULL;
        rc = -EIO;
    }
    return rc;
}

/* A python3 that imports prometheus_client: the system one first (where
 * Debian's python3-prometheus-client goes), else the one on PATH. */
static const char *const *find_python(void)
{
    static const char *const system_py[] = {"/usr/bin/python3", NULL};
    static const char *const path_py[] = {"/usr/bin/env", "python3", NULL};
    static const char *const *const candidates[] = {system_py, path_py};
    for (size_t i = 0; i < 2; i++) {
        char *argv[8] = {0}, *out = NULL;
        size_t n = 0;
        for (const char *const *a = candidates[i]; *a; a++)
            argv[n++] = (char *)*a;
        argv[n++] = "-c";
        argv[n++] = "import prometheus_client.parser";
        if (access(argv[0], X_OK) == 0 && run_py(argv, &out) == 0) {
            free(out);
            return candidates[i];
        }
    }
    return NULL;
}

/* Parse text with the real exposition parser; skips the test when there is
 * no python3 with prometheus_client. The caller owns the result. */
static json_t *parse_exposition(const char *text)
{
    const char *const *py = find_python();
    if (!py)
        cr_skip_test("python3 with prometheus_client is not importable "
                     "(apt-get install python3-prometheus-client)");
    char prom[160], script[160];
    snprintf(prom, sizeof prom, "%s/metrics.prom", daemon_.dir);
    snprintf(script, sizeof script, "%s/parse.py", daemon_.dir);
    FILE *f = fopen(prom, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    f = fopen(script, "w");
    cr_assert_not_null(f);
    fputs(parse_py, f);
    cr_assert_eq(fclose(f), 0);

    char *argv[8] = {0}, *out = NULL;
    size_t n = 0;
    for (; py[n]; n++)
        argv[n] = (char *)py[n];
    argv[n++] = script;
    argv[n++] = prom;
    cr_assert_eq(run_py(argv, &out), 0, "the exposition parser accepts:\n%s", text);
    json_t *parsed = json_loads(out, 0, NULL);
    free(out);
    cr_assert_not_null(parsed, "the parser's report is JSON");
    return parsed;
}

static const char *family_type(json_t *parsed, const char *family)
{
    return json_string_value(json_object_get(json_object_get(parsed, family), "type"));
}

static size_t sample_count(json_t *parsed, const char *family)
{
    return json_array_size(json_object_get(json_object_get(parsed, family), "samples"));
}

/* The value of the sample called name in family whose labels are exactly
 * label1=value1 (and label2=value2 unless NULL); NAN if there is none. */
/* Whether labels has key with value. */
static bool has_label(json_t *labels, const char *key, const char *value)
{
    const char *v = json_string_value(json_object_get(labels, key));
    return v && strcmp(v, value) == 0;
}

static double sample(json_t *parsed, const char *family, const char *name, const char *label1,
                     const char *value1, const char *label2, const char *value2)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(json_object_get(parsed, family), "samples"), i, s)
    {
        json_t *labels = json_array_get(s, 1);
        if (strcmp(json_string_value(json_array_get(s, 0)), name) != 0 ||
            json_object_size(labels) != (size_t)(label1 != NULL) + (label2 != NULL))
            continue;
        if ((label1 && !has_label(labels, label1, value1)) ||
            (label2 && !has_label(labels, label2, value2)))
            continue;
        return json_number_value(json_array_get(s, 2));
    }
    return NAN;
}

static double client_sample(json_t *parsed, const char *family, const char *name, json_t *client)
{
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)mm__bench_json_u64(client, "id"));
    return sample(parsed, family, name, "client",
                  json_string_value(json_object_get(client, "name")), "id", id);
}

Test(metrics, the_exposition_parses_and_matches_status)
{
    start_daemon("512M");
    mm_client_t *a = open_client("alpha", 32 << 20, 0);
    mm_client_t *b = open_client(ODD_NAME, 32 << 20, 0);
    void *pa[4], *pb[2];
    alloc_chunks(a, 4, pa);
    alloc_chunks(b, 2, pb);

    char *text = NULL;
    const char *args[] = {"metrics", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, &text), 0, "mmctl metrics");
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0);
    cr_assert_not_null(strstr(text, "# HELP mm_client_resident_bytes "));
    cr_assert_not_null(strstr(text, "client=\"q\\\"uo\\\\te\""), "the name is escaped:\n%s", text);
    json_t *parsed = parse_exposition(text);
    free(text);

    cr_assert_str_eq(family_type(parsed, "mm_capacity_bytes"), "gauge");
    cr_assert_str_eq(family_type(parsed, "mm_client_frozen"), "gauge");
    /* The parser names a counter's family without its _total suffix. */
    cr_assert_str_eq(family_type(parsed, "mm_client_missed_deadlines"), "counter");
    cr_assert_str_eq(family_type(parsed, "mm_client_paged_out_bytes"), "counter");
    cr_assert_str_eq(family_type(parsed, "mm_client_early_thaws"), "counter");

    const char *totals[][2] = {{"mm_capacity_bytes", "capacity_bytes"},
                               {"mm_granted_bytes", "granted_bytes"},
                               {"mm_resident_bytes", "resident_bytes"}};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(sample(parsed, totals[i][0], totals[i][0], NULL, NULL, NULL, NULL),
                     (double)mm__bench_json_u64(st, totals[i][1]), "%s", totals[i][0]);

    size_t i;
    json_t *node;
    json_array_foreach(json_object_get(st, "nodes"), i, node)
    {
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)mm__bench_json_u64(node, "node"));
        cr_assert_eq(sample(parsed, "mm_node_capacity_bytes", "mm_node_capacity_bytes", "node", id,
                            NULL, NULL),
                     (double)mm__bench_json_u64(node, "capacity_bytes"), "node %s", id);
        cr_assert_eq(sample(parsed, "mm_node_resident_bytes", "mm_node_resident_bytes", "node", id,
                            NULL, NULL),
                     (double)mm__bench_json_u64(node, "resident_bytes"), "node %s", id);
    }
    cr_assert_eq(sample_count(parsed, "mm_node_capacity_bytes"),
                 json_array_size(json_object_get(st, "nodes")));

    /* family, sample name, status field */
    static const char *const per_client[][3] = {
        {"mm_client_target_bytes", "mm_client_target_bytes", "target_bytes"},
        {"mm_client_granted_bytes", "mm_client_granted_bytes", "granted_bytes"},
        {"mm_client_owned_bytes", "mm_client_owned_bytes", "owned_bytes"},
        {"mm_client_resident_bytes", "mm_client_resident_bytes", "resident_bytes"},
        {"mm_client_free_bytes", "mm_client_free_bytes", "free_bytes"},
        {"mm_client_discardable_bytes", "mm_client_discardable_bytes", "discardable_bytes"},
        {"mm_client_paged_bytes", "mm_client_paged_bytes", "paged_bytes"},
        {"mm_client_paged_out_bytes", "mm_client_paged_out_bytes_total", "paged_out_bytes"},
        {"mm_client_missed_deadlines", "mm_client_missed_deadlines_total", "missed_deadlines"},
        {"mm_client_reclaimed_bytes", "mm_client_reclaimed_bytes_total", "reclaimed_bytes"},
        {"mm_client_revoked_bytes", "mm_client_revoked_bytes_total", "revoked_bytes"},
        {"mm_client_touched_reclaimed_chunks", "mm_client_touched_reclaimed_chunks_total",
         "touched_reclaimed"},
        {"mm_client_frozen", "mm_client_frozen", "frozen"},
        {"mm_client_early_thaws", "mm_client_early_thaws_total", "early_thaws"},
    };
    json_t *clients = json_object_get(st, "clients");
    cr_assert_eq(json_array_size(clients), 2);
    json_t *c;
    json_array_foreach(clients, i, c)
    {
        for (size_t m = 0; m < sizeof per_client / sizeof per_client[0]; m++) {
            cr_assert_eq(sample_count(parsed, per_client[m][0]), 2, "%s", per_client[m][0]);
            cr_assert_eq(client_sample(parsed, per_client[m][0], per_client[m][1], c),
                         (double)mm__bench_json_u64(c, per_client[m][2]), "%s of %s",
                         per_client[m][1], json_string_value(json_object_get(c, "name")));
        }
    }
    json_t *alpha = json_array_get(clients, 0);
    if (strcmp(json_string_value(json_object_get(alpha, "name")), "alpha") != 0)
        alpha = json_array_get(clients, 1);
    cr_assert_eq(client_sample(parsed, "mm_client_granted_bytes", "mm_client_granted_bytes", alpha),
                 (double)(4 * CHUNK), "alpha holds its four chunks");
    cr_assert_gt(
        client_sample(parsed, "mm_client_resident_bytes", "mm_client_resident_bytes", alpha), 0.0,
        "and they are resident");

    json_decref(parsed);
    json_decref(st);
    mm_client_close(a);
    mm_client_close(b);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

Test(metrics, top_prints_plain_snapshots_sorted_by_resident)
{
    start_daemon("512M");
    mm_client_t *a = open_client("small", 32 << 20, 0);
    mm_client_t *b = open_client("large", 32 << 20, 0);
    void *pa[1], *pb[4];
    alloc_chunks(a, 1, pa);
    alloc_chunks(b, 4, pb);

    char *out = NULL;
    const char *args[] = {"top", "--iterations", "2", "--interval", "100", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, &out), 0, "mmctl top");
    cr_assert_eq(count(out, "mm top "), 2, "two snapshots:\n%s", out);
    cr_assert_eq(count(out, "\n\n"), 2, "each ends with a blank line:\n%s", out);
    cr_assert_null(strchr(out, '\033'), "no escapes when stdout is not a terminal");
    cr_assert_eq(count(out, "small "), 2);
    cr_assert_eq(count(out, "large "), 2);
    cr_assert_eq(count(out, "RESIDENT"), 2);
    cr_assert_lt(strstr(out, "large "), strstr(out, "small "), "largest resident first:\n%s", out);
    free(out);
    mm_client_close(a);
    mm_client_close(b);
}

Test(metrics, bad_arguments_are_refused)
{
    start_daemon("512M");
    const char *zero[] = {"top", "--iterations", "0", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, zero, NULL), -EIO);
    const char *junk[] = {"top", "--interval", "1x", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, junk, NULL), -EIO);
    const char *not_top[] = {"status", "--iterations", "2", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, not_top, NULL), -EIO);
    const char *extra[] = {"metrics", "more", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, extra, NULL), -EIO);
}

/* Revocation handler for the ladder test: gives back the chunks in arg. */
static void *ladder_chunks[4];
static uint64_t give_chunks(mm_client_t *c, const mm_revoke_request_t *req, void *arg)
{
    (void)req, (void)arg;
    uint64_t given = 0;
    for (size_t i = 1; i < 4; i++)
        if (ladder_chunks[i] && mm_free(c, ladder_chunks[i], CHUNK) == 0) {
            ladder_chunks[i] = NULL;
            given += CHUNK;
        }
    return given;
}

/* The step's entry in status's "ladder", or NULL. */
static json_t *ladder_step(json_t *st, const char *step)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(st, "ladder"), i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "step")), step) == 0)
            return o;
    }
    return NULL;
}

Test(metrics, ladder_steps_have_latency_histograms)
{
    start_daemon("512M");
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = "giver";
    o.max_bytes = 32 << 20;
    o.flags = MM_CLIENT_THREAD;
    o.on_revoke = give_chunks;
    mm_client_t *a = NULL;
    cr_assert_eq(mm_client_open(daemon_.sock, &o, &a), 0);
    alloc_chunks(a, 4, ladder_chunks);

    /* Step 1 has nothing to take (every chunk is used), so the admin's
     * reclaim becomes a revocation (step 3), whose answer frees three
     * chunks that step 1 then takes. */
    const char *reclaim[] = {"reclaim", "giver", "6M", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, reclaim, NULL), 0);
    json_t *st = NULL;
    for (int tries = 0; tries < 100; tries++) {
        cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0);
        json_t *rev = ladder_step(st, "revocation");
        if (rev && mm__bench_json_u64(rev, "count") > 0)
            break;
        json_decref(st);
        st = NULL;
        sleep_ms(50);
    }
    cr_assert_not_null(st, "the revocation was answered");
    cr_assert_eq(json_array_size(json_object_get(st, "ladder")), 5, "five steps");
    json_t *freed = ladder_step(st, "free");
    cr_assert_geq(mm__bench_json_u64(freed, "count"), 1, "step 1 ran");
    cr_assert_geq(mm__bench_json_u64(freed, "bytes"), 3 * CHUNK, "and took the freed chunks");
    cr_assert_eq(mm__bench_json_u64(ladder_step(st, "revocation"), "bytes"), 3 * CHUNK);
    cr_assert_eq(mm__bench_json_u64(ladder_step(st, "host_paging"), "count"), 0);
    cr_assert_eq(mm__bench_json_u64(ladder_step(st, "freeze"), "count"), 0);

    char *text = NULL;
    const char *args[] = {"metrics", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, &text), 0, "mmctl metrics");
    json_t *parsed = parse_exposition(text);
    free(text);
    const char *fam = "mm_ladder_step_duration_seconds";
    cr_assert_str_eq(family_type(parsed, fam), "histogram");
    cr_assert_str_eq(family_type(parsed, "mm_ladder_reclaimed_bytes"), "counter");
    static const char *const steps[] = {"free", "discardable", "revocation", "host_paging",
                                        "freeze"};
    for (size_t s = 0; s < 5; s++) {
        /* Samples may change between the two replies: compare within one. */
        double count = sample(parsed, fam, "mm_ladder_step_duration_seconds_count", "step",
                              steps[s], NULL, NULL);
        cr_assert(!isnan(count), "%s has a count", steps[s]);
        double inf = sample(parsed, fam, "mm_ladder_step_duration_seconds_bucket", "step", steps[s],
                            "le", "+Inf");
        cr_assert_eq(inf, count, "%s: the +Inf bucket holds every observation", steps[s]);
        double sum = sample(parsed, fam, "mm_ladder_step_duration_seconds_sum", "step", steps[s],
                            NULL, NULL);
        cr_assert(sum >= 0.0, "%s has a sum", steps[s]);
        /* Buckets are cumulative: never decreasing in le. */
        double prev = 0.0;
        const char *bounds[] = {"0.0001", "0.001", "0.01", "0.1", "1", "10"};
        for (size_t b = 0; b < 6; b++) {
            double v = sample(parsed, fam, "mm_ladder_step_duration_seconds_bucket", "step",
                              steps[s], "le", bounds[b]);
            cr_assert(!isnan(v), "%s has bucket le=%s", steps[s], bounds[b]);
            cr_assert_geq(v, prev, "%s: buckets are cumulative", steps[s]);
            prev = v;
        }
        cr_assert_leq(prev, count);
        cr_assert(!isnan(sample(parsed, "mm_ladder_reclaimed_bytes",
                                "mm_ladder_reclaimed_bytes_total", "step", steps[s], NULL, NULL)),
                  "%s has a bytes counter", steps[s]);
    }
    cr_assert_geq(sample(parsed, fam, "mm_ladder_step_duration_seconds_count", "step", "revocation",
                         NULL, NULL),
                  1.0);
    cr_assert_geq(sample(parsed, "mm_ladder_reclaimed_bytes", "mm_ladder_reclaimed_bytes_total",
                         "step", "free", NULL, NULL),
                  (double)(3 * CHUNK));
    json_decref(parsed);
    json_decref(st);
    mm_client_close(a);
}
