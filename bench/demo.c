/*
 * `mmbench demo`: the tour a newcomer runs first.
 *
 * It starts mmsrv with its embedded defaults and 2 GiB of capacity in a temp
 * state directory, starts three mmhold clients with different profiles,
 * shows `mmctl status`, lowers the capacity to 800 MiB and waits until the
 * host's resident bytes follow, then shows what was taken from each client,
 * how fast, and whether every client still finds its data intact. Rows
 * (scenario "demo", system "mm"): reclaim_ms, reclaimed_bytes, reached,
 * data_intact. Succeeds iff the target was reached and all data is intact.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_CAPACITY     "2G"
#define DEMO_TARGET       "800M"
#define DEMO_TARGET_BYTES (800 * MM_MIB)
#define DEMO_TIMEOUT_MS   10000
#define DEMO_CLIENTS      3

/* One client of the demo; before/after are its resident bytes as the
 * daemon reports them around the capacity cut. */
struct demo_client {
    const char *name;
    const char *hold;
    const char *free_size;
    const char *role;
    mm_proc_t proc;
    bool running;
    bool intact;
    uint64_t before;
    uint64_t after;
};

/* What the demo found; reached: resident bytes got under the target. */
struct demo_outcome {
    bool reached;
    double elapsed_ms;
    json_t *status_after;
};

static double mib(uint64_t bytes)
{
    return (double)bytes / (double)MM_MIB;
}

static int start_clients(const mm_bench_daemon_t *d, struct demo_client *c)
{
    printf("Starting three mmhold clients. Each fills memory with checksummed data,\n"
           "then frees part of it in whole 2 MiB chunks that the host may take back:\n");
    for (int i = 0; i < DEMO_CLIENTS; i++) {
        int rc = mm__bench_hold_start(&c[i].proc, d, c[i].name, c[i].hold, c[i].free_size);

        if (rc < 0)
            return rc;
        c[i].running = true;
        printf("  %-6s holds %5s, frees %5s  (%s)\n", c[i].name, c[i].hold, c[i].free_size,
               c[i].role);
    }
    printf("\n");
    return 0;
}

static int show_status(const mm_bench_daemon_t *d, const char *when)
{
    static const char *const args[] = {"status", NULL};
    char *text;
    int rc;

    printf("--- mmctl status (%s) ---\n", when);
    fflush(stdout);
    rc = mm__bench_ctl(d, args, &text);
    if (rc < 0)
        return rc;
    fputs(text, stdout);
    if (text[0] != '\0' && text[strlen(text) - 1] != '\n')
        fputc('\n', stdout);
    printf("\n");
    free(text);
    return 0;
}

/* The resident bytes the daemon reports for the client with this pid. */
static uint64_t client_resident(const json_t *status, const struct demo_client *c)
{
    json_t *clients = json_object_get(status, "clients");
    json_t *entry;
    size_t i;

    json_array_foreach(clients, i, entry)
    {
        const char *name = json_string_value(json_object_get(entry, "name"));

        if (mm__bench_json_u64(entry, "pid") == (uint64_t)c->proc.pid ||
            (name != NULL && strcmp(name, c->name) == 0))
            return mm__bench_json_u64(entry, "resident_bytes");
    }
    return 0;
}

/* Lower the capacity and wait for residency to follow; fills o and each
 * client's before/after. */
static int cut_capacity(const mm_bench_daemon_t *d, struct demo_client *c, struct demo_outcome *o)
{
    static const char *const args[] = {"capacity", DEMO_TARGET, NULL};
    json_t *before;
    uint64_t t0;
    int rc;

    rc = mm__bench_ctl_status(d, &before);
    if (rc < 0)
        return rc;
    for (int i = 0; i < DEMO_CLIENTS; i++)
        c[i].before = client_resident(before, &c[i]);
    printf("Host resident before: %.1f MiB. Lowering capacity to %s "
           "(mmctl capacity %s) ...\n",
           mib(mm__bench_json_u64(before, "resident_bytes")), DEMO_TARGET, DEMO_TARGET);
    json_decref(before);
    fflush(stdout);
    t0 = mm__bench_now_ns();
    rc = mm__bench_ctl(d, args, NULL); /* mmctl's confirmation goes to stdout. */
    if (rc < 0)
        return rc;
    rc = mm__bench_wait_resident(d, DEMO_TARGET_BYTES, DEMO_TIMEOUT_MS, &o->status_after);
    o->elapsed_ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    o->reached = rc == 0;
    if (rc == -ETIMEDOUT)
        rc = mm__bench_ctl_status(d, &o->status_after);
    if (rc < 0)
        return rc;
    for (int i = 0; i < DEMO_CLIENTS; i++)
        c[i].after = client_resident(o->status_after, &c[i]);
    return 0;
}

static void print_rate(double reclaimed_mib, double ms)
{
    if (reclaimed_mib <= 0 || ms <= 0) {
        printf("  nothing had to be taken back.\n\n");
        return;
    }
    printf("  reclaimed %.1f MiB in %.1f ms: %.0f MiB/s, %.1f ms per GiB\n"
           "  (the time includes starting mmctl and 1 ms status polling)\n\n",
           reclaimed_mib, ms, reclaimed_mib / (ms / 1000), ms / (reclaimed_mib / 1024));
}

static double print_reclaimed(const struct demo_client *c, const struct demo_outcome *o)
{
    double total = 0;

    if (o->reached)
        printf("Target reached: host resident %.1f MiB <= %s after %.1f ms.\n\n",
               mib(mm__bench_json_u64(o->status_after, "resident_bytes")), DEMO_TARGET,
               o->elapsed_ms);
    else
        printf("Target NOT reached within %d s: host resident still %.1f MiB.\n\n",
               DEMO_TIMEOUT_MS / 1000, mib(mm__bench_json_u64(o->status_after, "resident_bytes")));
    printf("  %-6s  %16s  %16s  %16s\n", "client", "resident before", "resident after",
           "reclaimed");
    for (int i = 0; i < DEMO_CLIENTS; i++) {
        double diff = mib(c[i].before) - mib(c[i].after);

        printf("  %-6s  %12.1f MiB  %12.1f MiB  %12.1f MiB\n", c[i].name, mib(c[i].before),
               mib(c[i].after), diff);
        total += diff;
    }
    printf("  %-6s  %16s  %16s  %12.1f MiB\n", "total", "", "", total);
    print_rate(total, o->elapsed_ms);
    return total;
}

/* SIGTERM every running client; each verifies its data on the way out. */
static bool stop_clients(struct demo_client *c, bool report)
{
    bool all = true;

    if (report)
        printf("Stopping the clients; each reads back and verifies every byte it holds:\n");
    for (int i = 0; i < DEMO_CLIENTS; i++) {
        if (!c[i].running)
            continue;
        fflush(stdout);
        if (mm__bench_hold_stop(&c[i].proc, &c[i].intact) < 0)
            c[i].intact = false;
        c[i].running = false;
        all = all && c[i].intact;
        if (report)
            printf("  %-6s data intact: %s\n", c[i].name, c[i].intact ? "yes" : "no");
    }
    if (report)
        printf("\n");
    return all;
}

static int add_rows(mm_results_t *res, const struct demo_outcome *o, double reclaimed_mib,
                    bool intact)
{
    int rc;

    rc = mm__results_add(res, &(mm_result_row_t){"demo", "mm", "reclaim_ms", "ms"}, o->elapsed_ms,
                         NULL, 0);
    if (rc == 0)
        rc = mm__results_add(res, &(mm_result_row_t){"demo", "mm", "reclaimed_bytes", "bytes"},
                             reclaimed_mib * (double)MM_MIB, NULL, 0);
    if (rc == 0)
        rc = mm__results_add(res, &(mm_result_row_t){"demo", "mm", "reached", "bool"}, o->reached,
                             NULL, 0);
    if (rc == 0)
        rc = mm__results_add(res, &(mm_result_row_t){"demo", "mm", "data_intact", "bool"}, intact,
                             NULL, 0);
    return rc;
}

/* The part between a started daemon and its stop. */
static int demo_run(const mm_bench_daemon_t *d, struct demo_client *c, mm_results_t *res)
{
    struct demo_outcome o = {0};
    double reclaimed;
    bool intact;
    int rc;

    rc = start_clients(d, c);
    if (rc == 0)
        rc = show_status(d, "before");
    if (rc == 0)
        rc = cut_capacity(d, c, &o);
    if (rc < 0) {
        stop_clients(c, false);
        return rc;
    }
    reclaimed = print_reclaimed(c, &o);
    json_decref(o.status_after);
    rc = show_status(d, "after");
    intact = stop_clients(c, true);
    if (rc == 0)
        rc = add_rows(res, &o, reclaimed, intact);
    if (rc == 0 && !(o.reached && intact))
        rc = MM_BENCH_VERDICT_FAILED;
    return rc;
}

int mm__bench_demo(const mm_bench_opts_t *opts, mm_results_t *res)
{
    struct demo_client c[DEMO_CLIENTS] = {
        {.name = "web", .hold = "400M", .free_size = "300M", .role = "a server after a burst"},
        {.name = "batch", .hold = "300M", .free_size = "100M", .role = "a job mid-run"},
        {.name = "cache", .hold = "600M", .free_size = "500M", .role = "a cache after eviction"},
    };
    mm_bench_daemon_t d;
    int rc;

    (void)opts; /* The demo runs once; --quick and --reps do not apply. */
    printf("mm demo: one host daemon, three clients, and a capacity cut.\n\n");
    rc = mm__bench_daemon_start(&d, DEMO_CAPACITY,
                                getenv("MM_DEMO_LOG") ? getenv("MM_DEMO_LOG") : "warn");
    if (rc < 0)
        return rc;
    printf("Started mmsrv with %s of capacity; state and sockets in %s.\n\n", DEMO_CAPACITY, d.dir);
    rc = demo_run(&d, c, res);
    printf("Stopping mmsrv.\n\n");
    fflush(stdout);
    if (mm__bench_daemon_stop(&d) < 0)
        fprintf(stderr, "mmbench demo: mmsrv did not exit cleanly\n");
    if (rc == 0)
        printf("Result: the host got back to %s and every client's data is intact.\n\n",
               DEMO_TARGET);
    else if (rc == MM_BENCH_VERDICT_FAILED)
        printf("Result: FAILED (target missed or data damaged; see above).\n\n");
    return rc;
}
