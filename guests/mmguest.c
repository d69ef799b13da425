/*
 * mmguest: one guest-OS model (guest.h) per process, running workloads
 * (workloads.h) inside it until told to stop.
 *
 * It parses its arguments, prepares the disk image (creating it with its
 * block pattern when missing), opens the guest (a client of kind guest),
 * sets every workload up, prints "ready" and runs rounds, 50 ms apart,
 * until SIGTERM or SIGINT. SIGUSR1 prints one JSON line of the guest's
 * statistics; SIGUSR2 makes the guest free what it can do without (its
 * temp= items, its runtimes' garbage and its page cache). On stop it verifies every byte the
 * workloads hold, prints a final JSON line with "data_intact" and exits 0 only if all is intact.
 *
 * Signals: handlers only write a byte to a pipe, which the main thread reads
 * between rounds. They are blocked in the threads libmm starts; libgc
 * unblocks SIGTERM in threads it suspends, so a handler may still run on
 * any thread, where writing the pipe is all it does.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mm/mm.h>

#include "guest.h"
#include "workloads.h"

#define ROUND_PAUSE_MS 50

struct guest_args {
    mm_guest_opts_t opts;
    mm_wl_spec_t spec;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mmguest --socket PATH --ram SIZE --driver NAME [--name NAME]\n"
            "               [--disk FILE --cache SIZE] [--swap FILE] [--swap-size SIZE]\n"
            "               --workload SPEC\n"
            "\n"
            "Run one guest-OS model against mmsrv: its guest-physical RAM is an mm region\n"
            "(a client of kind guest), with guest-virtual memory, a page cache over a disk\n"
            "image and a swap device. Set the workloads up, print \"ready\", then run rounds\n"
            "until SIGTERM or SIGINT; then verify every byte the workloads hold, print a\n"
            "final JSON line with \"data_intact\" and exit 0 only if all is intact.\n"
            "SIGUSR1 prints one JSON line of the guest's statistics and \"rounds\" (and the\n"
            "driver's own: balloon_bytes, oom_deflates, reported_bytes, plugged_bytes...;\n"
            "with phase= items, the operations: ops, op_p99_ms, op_hist).\n"
            "SIGUSR2 makes the guest free what it can do without, as a workload ending a\n"
            "phase: its temp= items, its runtimes' garbage (a full collection, a purge)\n"
            "and its page cache.\n"
            "\n"
            "  --socket PATH      the daemon's client socket\n"
            "  --ram SIZE         guest-physical RAM (e.g. 256M)\n"
            "  --driver NAME      the memory driver: mm (the host sets a target; mmctl set),\n"
            "                     balloon (virtio-balloon; mmctl balloon), fpr (free page\n"
            "                     reporting; no host command), virtio-mem (mmctl\n"
            "                     virtio-mem); see docs/baselines.md\n"
            "  --name NAME        name shown by mmctl (default: guest-<pid>)\n"
            "  --disk FILE        disk image read through the page cache; created with\n"
            "                     mmguest's block pattern if missing (size: the largest\n"
            "                     cache= item, at least --cache)\n"
            "  --cache SIZE       the most the page cache may hold (needs --disk)\n"
            "  --swap FILE        swap device file (not on tmpfs)\n"
            "  --swap-size SIZE   swap device size (default: --ram)\n"
            "  --workload SPEC    what runs in the guest (below)\n"
            "  --help             show this help\n"
            "\n"
            "SPEC is a comma-separated list of items (at most %d; one gc and one je):\n"
            "  anon=SIZE[:hot=PCT]   anonymous memory filled with a checksummed pattern;\n"
            "                        each round verifies and touches the first PCT%% of\n"
            "                        its pages (default 100) and rewrites 1/16 of those\n"
            "  gc=SIZE[:live=PCT]    a Boehm GC heap in guest memory: SIZE of objects of\n"
            "                        4-64 KiB, PCT%% kept live (default 25), the rest\n"
            "                        garbage; rounds verify the live objects and replace one\n"
            "  je=SIZE[:live=PCT]    a jemalloc arena in guest memory: SIZE of values of\n"
            "                        16-256 KiB, PCT%% kept (default 25), the rest freed;\n"
            "                        rounds verify the kept values and replace one\n"
            "  cache=SIZE            each round reads the first SIZE of the disk through\n"
            "                        the page cache and verifies every block (needs --disk)\n"
            "  free=SIZE             SIZE of memory written once and freed at setup: the\n"
            "                        guest then holds it as free, resident RAM\n"
            "  temp=SIZE             anonymous memory filled at start and left idle; freed\n"
            "                        on SIGUSR2 (verified until then)\n"
            "  phase=SIZE:period=MS[:offset=PCT]\n"
            "                        demand in phases: each period (shifted by PCT%% of\n"
            "                        it) grows to SIZE of checksummed memory in 4 MiB\n"
            "                        steps over its first quarter, holds it in the second\n"
            "                        (each round verifies one step), then frees it all\n"
            "                        and idles; every step written or verified is a timed\n"
            "                        operation: SIGUSR1 adds ops, op_p99_ms and op_hist\n"
            "                        (cumulative [[upper bound us, count], ...])\n"
            "Sizes are written like 4096, 512K, 200M, 4G. Example:\n"
            "  --workload anon=64M:hot=25,gc=48M:live=25,cache=32M\n",
            MM_WL_MAX_ITEMS);
}

static int bad_arg(const char *what, const char *value)
{
    fprintf(stderr, "mmguest: %s '%s' (see --help)\n", what, value);
    return -EINVAL;
}

static int bad(const char *why)
{
    fprintf(stderr, "mmguest: %s (see --help)\n", why);
    return -EINVAL;
}

static int size_arg(const char *opt, const char *text, uint64_t *out)
{
    char what[64];

    if (mm_parse_size(text, out) < 0 || *out == 0 || *out > MM_REGION_MAX_BYTES) {
        snprintf(what, sizeof what, "bad size for %s", opt);
        return bad_arg(what, text);
    }
    return 0;
}

/* The combinations parse_args cannot see one option at a time. */
static int check_args(struct guest_args *a, bool have_driver, bool have_workload,
                      bool have_swap_size)
{
    mm_guest_opts_t *o = &a->opts;
    char why[160];

    if (o->socket == NULL)
        return bad("--socket is required");
    if (o->ram_bytes == 0)
        return bad("--ram is required");
    if (o->ram_bytes < MM_CHUNK_SIZE)
        return bad("--ram must be at least 2M");
    if (!have_driver)
        return bad("--driver is required");
    if (!have_workload)
        return bad("--workload is required");
    if ((o->disk_path == NULL) != (o->cache_bytes == 0))
        return bad("--disk and --cache go together");
    if (mm__wl_has(&a->spec, MM_WL_CACHE) && o->disk_path == NULL)
        return bad("a cache= workload needs --disk and --cache");
    if (have_swap_size && o->swap_path == NULL)
        return bad("--swap-size needs --swap");
    if (o->swap_path != NULL && !have_swap_size)
        o->swap_bytes = o->ram_bytes;
    uint64_t room = o->ram_bytes + (o->swap_path ? o->swap_bytes : 0);
    uint64_t need = mm__wl_memory_bytes(&a->spec);
    if (need > room) {
        snprintf(why, sizeof why,
                 "the workload holds %" PRIu64
                 " bytes, more than --ram and --swap-size give (%" PRIu64 ")",
                 need, room);
        return bad(why);
    }
    return 0;
}

/* 0: run; 1: --help was shown; -EINVAL: a bad argument (reported). */
static int parse_args(int argc, char **argv, struct guest_args *a)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"ram", required_argument, NULL, 'r'},
        {"driver", required_argument, NULL, 'd'},
        {"name", required_argument, NULL, 'n'},
        {"disk", required_argument, NULL, 'D'},
        {"cache", required_argument, NULL, 'c'},
        {"swap", required_argument, NULL, 'w'},
        {"swap-size", required_argument, NULL, 'S'},
        {"workload", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    mm_guest_opts_t *o = &a->opts;
    bool have_driver = false, have_workload = false, have_swap_size = false;
    char why[160];
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        int rc = 0;

        switch (c) {
        case 's':
            o->socket = optarg;
            break;
        case 'r':
            rc = size_arg("--ram", optarg, &o->ram_bytes);
            break;
        case 'd':
            if (mm__guest_driver_parse(optarg, &o->driver) < 0)
                return bad_arg("unknown --driver (known: mm, balloon, fpr, virtio-mem)", optarg);
            have_driver = true;
            break;
        case 'n':
            o->name = optarg;
            break;
        case 'D':
            o->disk_path = optarg;
            break;
        case 'c':
            rc = size_arg("--cache", optarg, &o->cache_bytes);
            break;
        case 'w':
            o->swap_path = optarg;
            break;
        case 'S':
            rc = size_arg("--swap-size", optarg, &o->swap_bytes);
            have_swap_size = true;
            break;
        case 'W':
            if (mm__wl_parse(optarg, &a->spec, why, sizeof why) < 0)
                return bad(why);
            have_workload = true;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            return bad_arg("missing value for", argv[optind - 1]);
        default:
            return bad_arg("unknown option", argv[optind - 1]);
        }
        if (rc < 0)
            return rc;
    }
    if (optind < argc)
        return bad_arg("unexpected argument", argv[optind]);
    return check_args(a, have_driver, have_workload, have_swap_size);
}

/* ---- Signals ---------------------------------------------------------------- */

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    char byte = sig == SIGUSR1 ? 'u' : sig == SIGUSR2 ? 'f' : 't';
    ssize_t n = write(sig_pipe[1], &byte, 1); /* async-signal-safe */

    (void)n; /* a full pipe already holds a request */
    errno = saved;
}

/* Install the handlers and block the signals in this thread, so that the
 * threads the guest starts inherit the block; unblock_signals() then lets
 * them reach the main thread. */
static int setup_signals(sigset_t *set)
{
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    const int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};

    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        perror("mmguest: pipe");
        return -errno;
    }
    sigemptyset(&sa.sa_mask);
    sigemptyset(set);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaddset(set, sigs[i]);
        if (sigaction(sigs[i], &sa, NULL) < 0) {
            perror("mmguest: sigaction");
            return -errno;
        }
    }
    return -pthread_sigmask(SIG_BLOCK, set, NULL);
}

/* Wait up to timeout_ms for signals; sets *stop, *stats and *free_now for
 * what came. */
static void wait_signals(int timeout_ms, bool *stop, bool *stats, bool *free_now)
{
    struct pollfd p = {.fd = sig_pipe[0], .events = POLLIN};
    char bytes[16];
    ssize_t n;

    if (poll(&p, 1, timeout_ms) <= 0)
        return; /* timeout, or EINTR: look again after the next round */
    while ((n = read(sig_pipe[0], bytes, sizeof bytes)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (bytes[i] == 't')
                *stop = true;
            else if (bytes[i] == 'f')
                *free_now = true;
            else
                *stats = true;
        }
    }
}

/* ---- Statistics ------------------------------------------------------------ */

struct stats_call {
    mm_guest_t *g;
    mm_guest_stats_t st;
};

static void read_stats(void *arg)
{
    struct stats_call *c = arg;

    mm__guest_stats(c->g, &c->st);
}

/* The driver's own fields, formatted (starting with a comma). Not
 * reentrant: one static buffer. */
static const char *driver_fields(const mm_guest_stats_t *s)
{
    static char buf[512];
    int n = snprintf(buf, sizeof buf, ",\"driver\":\"%s\"", mm__guest_driver_name(s->driver));
    if (s->driver == MM_GUEST_DRIVER_BALLOON)
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      ",\"balloon_bytes\":%" PRIu64 ",\"oom_deflates\":%" PRIu64
                      ",\"driver_alloc_ns\":%" PRIu64,
                      s->balloon_bytes, s->oom_deflates, s->driver_alloc_ns);
    else if (s->driver == MM_GUEST_DRIVER_FPR)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"reported_bytes\":%" PRIu64,
                      s->reported_bytes);
    else if (s->driver == MM_GUEST_DRIVER_VIRTIO_MEM)
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      ",\"plugged_bytes\":%" PRIu64 ",\"moved_frames\":%" PRIu64, s->plugged_bytes,
                      s->moved_frames);
    if (s->driver != MM_GUEST_DRIVER_MM)
        snprintf(buf + n, sizeof buf - (size_t)n,
                 ",\"driver_requests\":%" PRIu64 ",\"driver_units\":%" PRIu64
                 ",\"driver_msg_ns\":%" PRIu64,
                 s->driver_requests, s->driver_units, s->driver_msg_ns);
    return buf;
}

/* One JSON line: every field of mm_guest_stats_t, then rounds, the phase
 * items' operations, then extra (already formatted, starting with a comma)
 * if not NULL. */
static void print_stats(mm_guest_t *g, mm_wl_t *w, uint64_t rounds, const char *extra)
{
    struct stats_call c = {.g = g};
    const mm_guest_stats_t *s = &c.st;
    char ops[4096];

    mm__wl_blocking(w, read_stats, &c);
    printf("{\"ram_bytes\":%" PRIu64 ",\"target_bytes\":%" PRIu64 ",\"resident_bytes\":%" PRIu64
           ",\"used_bytes\":%" PRIu64 ",\"anon_bytes\":%" PRIu64 ",\"cache_bytes\":%" PRIu64
           ",\"virtual_bytes\":%" PRIu64 ",\"swapped_bytes\":%" PRIu64
           ",\"swap_out_bytes\":%" PRIu64 ",\"swap_in_bytes\":%" PRIu64
           ",\"cache_dropped_bytes\":%" PRIu64 ",\"cache_lost_bytes\":%" PRIu64
           ",\"shrunk_bytes\":%" PRIu64 ",\"zero_fills\":%" PRIu64 ",\"moves\":%" PRIu64
           ",\"revocations\":%" PRIu64 ",\"cache_hits\":%" PRIu64 ",\"cache_misses\":%" PRIu64
           ",\"swap_errors\":%" PRIu64 ",\"first_swap_ns\":%" PRIu64
           ",\"last_cache_drop_ns\":%" PRIu64 ",\"rounds\":%" PRIu64 "%s%s%s}\n",
           s->ram_bytes, s->target_bytes, s->resident_bytes, s->used_bytes, s->anon_bytes,
           s->cache_bytes, s->virtual_bytes, s->swapped_bytes, s->swap_out_bytes, s->swap_in_bytes,
           s->cache_dropped_bytes, s->cache_lost_bytes, s->shrunk_bytes, s->zero_fills, s->moves,
           s->revocations, s->cache_hits, s->cache_misses, s->swap_errors, s->first_swap_ns,
           s->last_cache_drop_ns, rounds, driver_fields(s), mm__wl_ops_json(w, ops, sizeof ops),
           extra ? extra : "");
    fflush(stdout);
}

/* ---- Running --------------------------------------------------------------- */

static int open_guest(const struct guest_args *a, mm_guest_t **g)
{
    int err = mm__guest_open(&a->opts, g);

    if (err == -EPERM)
        fprintf(stderr, "mmguest: the guest needs a full userfaultfd: run as root or with read "
                        "and write access to /dev/userfaultfd\n");
    else if (err < 0)
        fprintf(stderr, "mmguest: cannot start the guest on %s: %s\n", a->opts.socket,
                mm_strerror(err));
    return err;
}

static int run(const struct guest_args *a)
{
    mm_guest_t *g = NULL;
    mm_wl_t *w = NULL;
    uint64_t rounds = 0, round_errors = 0, errors, bytes;
    bool stop = false, stats = false, free_now = false;
    sigset_t set;
    char why[256], extra[160];
    int err;

    if (setup_signals(&set) < 0)
        return 1;
    if (open_guest(a, &g) < 0)
        return 1;
    err = pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    if (err == 0)
        err = mm__wl_start(g, &a->spec, &w, why, sizeof why);
    if (err != 0) {
        fprintf(stderr, "mmguest: %s\n", err > 0 ? strerror(err) : why);
        mm__guest_close(g);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    while (!stop) {
        round_errors += mm__wl_round(w);
        rounds++;
        wait_signals(ROUND_PAUSE_MS, &stop, &stats, &free_now);
        if (free_now) {
            uint64_t freed = mm__wl_free_temp(w) + mm__guest_free_unneeded(g);
            fprintf(stderr, "mmguest: freed %" PRIu64 " bytes it could do without\n", freed);
            free_now = false;
        }
        if (stats) {
            print_stats(g, w, rounds, NULL);
            stats = false;
        }
    }
    errors = mm__wl_verify(w, &bytes);
    fprintf(stderr,
            "mmguest: verified %" PRIu64 " bytes, %" PRIu64 " errors now, %" PRIu64 " in %" PRIu64
            " rounds\n",
            bytes, errors, round_errors, rounds);
    errors += round_errors;
    snprintf(extra, sizeof extra,
             ",\"verified_bytes\":%" PRIu64 ",\"data_errors\":%" PRIu64 ",\"data_intact\":%d",
             bytes, errors, errors == 0);
    print_stats(g, w, rounds, extra);
    mm__wl_stop(w);
    mm__guest_close(g);
    return errors == 0 ? 0 : 1;
}

static int prepare_disk(const struct guest_args *a)
{
    uint64_t bytes = mm__wl_cache_bytes(&a->spec);
    char why[256];
    int err;

    if (a->opts.disk_path == NULL)
        return 0;
    if (bytes < a->opts.cache_bytes)
        bytes = a->opts.cache_bytes;
    err = mm__wl_disk_prepare(a->opts.disk_path, bytes, why, sizeof why);
    if (err < 0)
        fprintf(stderr, "mmguest: %s\n", why);
    return err;
}

int main(int argc, char **argv)
{
    struct guest_args a = {.opts.driver = MM_GUEST_DRIVER_MM};
    int rc = parse_args(argc, argv, &a);

    if (rc < 0)
        return 2;
    if (rc > 0)
        return 0;
    rc = prepare_disk(&a);
    if (rc == -EINVAL)
        return 2;
    if (rc < 0)
        return 1;
    return run(&a);
}
