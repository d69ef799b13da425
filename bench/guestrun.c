/*
 * Guests for benchmarks (see guestrun.h): mmguest started through procs.c so
 * that it dies with its parent, its SIGUSR1 statistics line read from its
 * stdout, requests on the daemon's admin socket (no mmctl process, so that
 * timings carry no process start) and status polls for its resident bytes.
 */
#include "guestrun.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <mm/mm.h>

#define READY_TIMEOUT_MS 60000
#define STATS_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS  120000
#define LINE_MAX_BYTES   4096

const char *const mm__guestrun_drivers[MM_GUESTRUN_N_DRIVERS] = {"mm", "balloon", "fpr",
                                                                 "virtio-mem"};

static bool known_driver(const char *driver)
{
    for (int i = 0; i < MM_GUESTRUN_N_DRIVERS; i++)
        if (driver != NULL && strcmp(driver, mm__guestrun_drivers[i]) == 0)
            return true;
    return false;
}

/* The argument vector for cfg; the strings live in g and in nums. */
static void build_argv(mm_guestrun_t *g, const mm_bench_daemon_t *d, const mm_guestrun_cfg_t *cfg,
                       char *prog, char nums[4][32], char paths[2][128], char *argv[24])
{
    int n = 0;

    argv[n++] = prog;
    argv[n++] = "--socket";
    argv[n++] = (char *)d->sock;
    argv[n++] = "--name";
    argv[n++] = g->name;
    argv[n++] = "--driver";
    argv[n++] = g->driver;
    argv[n++] = "--ram";
    snprintf(nums[0], 32, "%llu", (unsigned long long)cfg->ram_bytes);
    argv[n++] = nums[0];
    if (cfg->swap_bytes > 0) {
        snprintf(paths[0], 128, "%s/swap", g->dir);
        snprintf(nums[1], 32, "%llu", (unsigned long long)cfg->swap_bytes);
        argv[n++] = "--swap";
        argv[n++] = paths[0];
        argv[n++] = "--swap-size";
        argv[n++] = nums[1];
    }
    if (cfg->cache_bytes > 0) {
        snprintf(paths[1], 128, "%s/disk.img", g->dir);
        snprintf(nums[2], 32, "%llu", (unsigned long long)cfg->cache_bytes);
        argv[n++] = "--disk";
        argv[n++] = paths[1];
        argv[n++] = "--cache";
        argv[n++] = nums[2];
    }
    argv[n++] = "--workload";
    argv[n++] = (char *)cfg->workload;
    argv[n] = NULL;
}

/* After a failed wait for "ready": reap the guest (killed if it still
 * runs) and say why it failed. */
static int start_failed(mm_guestrun_t *g, int rc)
{
    int st = 0;

    mm__proc_wait(&g->proc, rc == -EPIPE ? 5000 : 0, &st);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
        fprintf(stderr, "mmbench: mmguest refused --driver %s (or another argument)\n", g->driver);
        rc = -ENOTSUP;
    } else {
        fprintf(stderr, "mmbench: guest %s (driver %s) did not get ready: %s\n", g->name, g->driver,
                mm_strerror(rc));
    }
    mm__bench_rm_rf(g->dir);
    return rc;
}

int mm__guestrun_start(mm_guestrun_t *g, const mm_bench_daemon_t *d, const mm_guestrun_cfg_t *cfg)
{
    char prog[4096], nums[4][32], paths[2][128];
    char *argv[24];
    int rc;

    if (g == NULL || d == NULL || cfg == NULL || !known_driver(cfg->driver) || cfg->name == NULL ||
        cfg->workload == NULL || cfg->ram_bytes == 0 || strlen(cfg->name) >= sizeof(g->name))
        return -EINVAL;
    memset(g, 0, sizeof(*g));
    g->proc.out_fd = -1;
    snprintf(g->name, sizeof(g->name), "%s", cfg->name);
    snprintf(g->driver, sizeof(g->driver), "%s", cfg->driver);
    rc = mm__bin_path("mmguest", prog, sizeof(prog));
    if (rc < 0) {
        fprintf(stderr, "mmbench: cannot find mmguest: %s\n", mm_strerror(rc));
        return rc;
    }
    snprintf(g->dir, sizeof(g->dir), "/tmp/mmguestrun-XXXXXX");
    if (mkdtemp(g->dir) == NULL) {
        rc = -errno;
        fprintf(stderr, "mmbench: cannot create a guest directory: %s\n", strerror(errno));
        return rc;
    }
    build_argv(g, d, cfg, prog, nums, paths, argv);
    rc = mm__proc_spawn(&g->proc, argv, true);
    if (rc < 0) {
        fprintf(stderr, "mmbench: cannot start mmguest: %s\n", mm_strerror(rc));
        mm__bench_rm_rf(g->dir);
        return rc;
    }
    rc = mm__proc_wait_line(&g->proc, "ready", READY_TIMEOUT_MS);
    return rc < 0 ? start_failed(g, rc) : 0;
}

/* The next line of the guest that is a JSON object, parsed. */
static int read_json(mm_guestrun_t *g, int timeout_ms, json_t **out)
{
    uint64_t deadline = mm__bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    char line[LINE_MAX_BYTES];

    for (;;) {
        uint64_t now = mm__bench_now_ns();
        int rc;

        if (now >= deadline)
            return -ETIMEDOUT;
        rc = mm__proc_read_line(&g->proc, line, sizeof(line),
                                (int)((deadline - now) / 1000000ull) + 1);
        if (rc < 0)
            return rc;
        if (line[0] != '{')
            continue;
        *out = json_loads(line, 0, NULL);
        if (*out == NULL || !json_is_object(*out)) {
            json_decref(*out);
            fprintf(stderr, "mmbench: guest %s printed a bad JSON line\n", g->name);
            return -EPROTO;
        }
        return 0;
    }
}

int mm__guestrun_stats(mm_guestrun_t *g, json_t **stats)
{
    int rc = mm__proc_signal(&g->proc, SIGUSR1);

    return rc < 0 ? rc : read_json(g, STATS_TIMEOUT_MS, stats);
}

/* The entry called name in a status object (borrowed), or NULL. */
static json_t *find_client(json_t *status, const char *name)
{
    size_t i;
    json_t *c;

    json_array_foreach(json_object_get(status, "clients"), i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));

        if (n != NULL && strcmp(n, name) == 0)
            return c;
    }
    return NULL;
}

int mm__guestrun_client(const mm_guestrun_t *g, const mm_bench_daemon_t *d, json_t **entry)
{
    json_t *status, *c;
    int rc = mm__bench_ctl_status(d, &status);

    if (rc < 0)
        return rc;
    c = find_client(status, g->name);
    if (c != NULL)
        *entry = json_incref(c);
    json_decref(status);
    return c != NULL ? 0 : -ENOENT;
}

int mm__guestrun_ask(const mm_guestrun_t *g, const mm_bench_daemon_t *d, uint64_t bytes)
{
    unsigned long long b = (unsigned long long)bytes;
    char request[160];
    json_t *reply;
    int rc;

    if (strcmp(g->driver, "fpr") == 0)
        return 0; /* free page reporting has no target to set */
    if (strcmp(g->driver, "mm") == 0)
        snprintf(request, sizeof(request), "set %s target=%llu\n", g->name, b);
    else
        snprintf(request, sizeof(request), "%s %s %llu\n", g->driver, g->name, b);
    rc = mm__bench_admin(d, request, &reply);
    if (rc == 0)
        json_decref(reply);
    return rc;
}

static void sleep_1ms(void)
{
    struct timespec ts = {0, 1000000};

    nanosleep(&ts, NULL); /* an early wake-up only polls sooner */
}

int mm__guestrun_wait(const mm_guestrun_t *g, const mm_bench_daemon_t *d, uint64_t bytes, bool grow,
                      int timeout_ms, uint64_t *resident)
{
    uint64_t deadline = mm__bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;

    for (;;) {
        json_t *c;
        int rc = mm__guestrun_client(g, d, &c);

        if (rc < 0)
            return rc;
        *resident = mm__bench_json_u64(c, "resident_bytes");
        json_decref(c);
        if (grow ? *resident >= bytes : *resident <= bytes)
            return 0;
        if (mm__bench_now_ns() >= deadline)
            return -ETIMEDOUT;
        sleep_1ms();
    }
}

int mm__guestrun_resize(const mm_guestrun_t *g, const mm_bench_daemon_t *d, uint64_t bytes,
                        bool grow, int timeout_ms, double *ms, uint64_t *resident)
{
    uint64_t t0 = mm__bench_now_ns();
    int rc = mm__guestrun_ask(g, d, bytes);

    if (rc < 0)
        return rc;
    rc = mm__guestrun_wait(g, d, bytes, grow, timeout_ms, resident);
    *ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    return rc;
}

int mm__guestrun_stop(mm_guestrun_t *g, bool *intact, json_t **final)
{
    json_t *last = NULL;
    int st = 0, rc;

    *intact = false;
    if (final != NULL)
        *final = NULL;
    rc = mm__proc_signal(&g->proc, SIGTERM);
    if (rc == 0 && read_json(g, STOP_TIMEOUT_MS, &last) < 0)
        last = NULL; /* no final line: the exit status still decides */
    rc = mm__proc_wait(&g->proc, STOP_TIMEOUT_MS, &st);
    if (rc == 0) {
        *intact = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (WIFSIGNALED(st))
            fprintf(stderr, "mmbench: guest %s was killed by signal %d\n", g->name, WTERMSIG(st));
    }
    if (final != NULL)
        *final = last;
    else
        json_decref(last);
    mm__bench_rm_rf(g->dir);
    return rc;
}
