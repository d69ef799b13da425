/*
 * Integration tests of mmguest (guests/mmguest.c): one guest per test against
 * a throw-away daemon, each workload kind alone and all four at once, run for
 * a second, asked for its statistics (SIGUSR1: one JSON line) and stopped
 * (SIGTERM: a final JSON line, exit 0 only when every byte verified). Plus
 * its command line: --help, and bad arguments exit 2 with one line on
 * stderr. Each test has its own scratch directory on /tmp (ext4 here: the
 * swap store refuses tmpfs) for the swap file and disk image.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "common.h"
#include "procs.h"

#define MIB          (1ull << 20)
#define LINE_WAIT_MS 30000
#define RUN_MS       1000

static char tmpdir_[64];
static mm_proc_t guest_ = {.pid = 0, .out_fd = -1};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: a leftover only wastes /tmp space */
    return 0;
}

static void cleanup(void)
{
    if (guest_.pid > 0)
        mm__proc_wait(&guest_, 0, NULL); /* kills a guest a failed test left */
    stop_daemon();
    if (tmpdir_[0])
        nftw(tmpdir_, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(mmguest, .fini = cleanup, .timeout = 60);

static void skip_without_uffd(void)
{
    if (geteuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0)
        cr_skip_test("mmguest needs a full userfaultfd (root or access to /dev/userfaultfd)");
}

static const char *make_tmpdir(void)
{
    snprintf(tmpdir_, sizeof tmpdir_, "/tmp/mm-guest-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir_), "mkdtemp: %s", strerror(errno));
    return tmpdir_;
}

static const char *tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir_, name);
    return buf;
}

/* ---- A running guest ---------------------------------------------------- */

/* One line of the guest's stdout (malloc'd, without the newline), or NULL
 * at EOF or after timeout_ms. */
static char *read_line(mm_proc_t *p, int timeout_ms)
{
    uint64_t deadline = mm__bench_now_ns() + (uint64_t)timeout_ms * 1000000u;

    for (;;) {
        char *nl = memchr(p->buf, '\n', p->buf_len);

        if (nl != NULL) {
            size_t len = (size_t)(nl - p->buf);
            char *line = strndup(p->buf, len);

            p->buf_len -= len + 1;
            memmove(p->buf, nl + 1, p->buf_len);
            return line;
        }
        cr_assert_lt(p->buf_len, sizeof p->buf, "a line of mmguest fits in 4 KiB");
        uint64_t now = mm__bench_now_ns();
        if (now >= deadline)
            return NULL;
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return NULL;
        ssize_t n = read(p->out_fd, p->buf + p->buf_len, sizeof p->buf - p->buf_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        p->buf_len += (size_t)n;
    }
}

/* The next JSON line of the guest, parsed; fails the test without one. */
static json_t *read_json(mm_proc_t *p, const char *what)
{
    for (;;) {
        char *line = read_line(p, LINE_WAIT_MS);

        cr_assert_not_null(line, "%s: mmguest printed a JSON line", what);
        if (line[0] != '{') {
            free(line);
            continue;
        }
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        cr_assert_not_null(j, "%s: valid JSON (%s): '%s'", what, jerr.text, line);
        free(line);
        return j;
    }
}

/* Every field of mm_guest_stats_t, by name. */
static const char *const stat_fields[] = {
    "ram_bytes",           "target_bytes",     "resident_bytes", "used_bytes",     "anon_bytes",
    "cache_bytes",         "virtual_bytes",    "swapped_bytes",  "swap_out_bytes", "swap_in_bytes",
    "cache_dropped_bytes", "cache_lost_bytes", "shrunk_bytes",   "zero_fills",     "moves",
    "revocations",         "cache_hits",       "cache_misses",   "swap_errors",    "first_swap_ns",
    "last_cache_drop_ns",  "rounds",
};

static void expect_stat_fields(const json_t *j, const char *what)
{
    for (size_t i = 0; i < sizeof stat_fields / sizeof stat_fields[0]; i++)
        cr_expect(json_is_integer(json_object_get(j, stat_fields[i])), "%s has integer %s", what,
                  stat_fields[i]);
}

struct guest_cfg {
    const char *name;
    const char *ram;
    const char *spec;
    const char *cache; /* NULL: no disk */
    const char *swap_size;
};

/* Start mmguest with cfg (swap and disk in the test's directory) and wait
 * for its "ready"; a guest that dies first fails the test saying how. */
static void start_guest(const struct guest_cfg *cfg)
{
    static char prog[4096], swap[128], disk[128];
    char *argv[24];
    size_t n = 0;

    cr_assert_eq(mm__bin_path("mmguest", prog, sizeof prog), 0, "mmguest is built");
    argv[n++] = prog;
    argv[n++] = "--socket";
    argv[n++] = daemon_.sock;
    argv[n++] = "--name";
    argv[n++] = (char *)cfg->name;
    argv[n++] = "--ram";
    argv[n++] = (char *)cfg->ram;
    argv[n++] = "--driver";
    argv[n++] = "mm";
    argv[n++] = "--swap";
    argv[n++] = (char *)tmp_path(swap, sizeof swap, "swap");
    if (cfg->swap_size) {
        argv[n++] = "--swap-size";
        argv[n++] = (char *)cfg->swap_size;
    }
    if (cfg->cache) {
        argv[n++] = "--disk";
        argv[n++] = (char *)tmp_path(disk, sizeof disk, "disk.img");
        argv[n++] = "--cache";
        argv[n++] = (char *)cfg->cache;
    }
    argv[n++] = "--workload";
    argv[n++] = (char *)cfg->spec;
    argv[n] = NULL;
    cr_assert_eq(mm__proc_spawn(&guest_, argv, true), 0, "mmguest starts");
    int err = mm__proc_wait_line(&guest_, "ready", LINE_WAIT_MS);
    if (err < 0) {
        int st = 0;
        mm__proc_wait(&guest_, 2000, &st);
        cr_assert_fail("mmguest --workload %s did not get ready (%s): %s %d", cfg->spec,
                       mm_strerror(err), WIFSIGNALED(st) ? "killed by signal" : "exit status",
                       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    }
}

/* SIGUSR1: the statistics line, checked for every field. */
static json_t *guest_stats(void)
{
    cr_assert_eq(mm__proc_signal(&guest_, SIGUSR1), 0);
    json_t *j = read_json(&guest_, "SIGUSR1");
    expect_stat_fields(j, "the SIGUSR1 line");
    return j;
}

/* SIGTERM: the final line; the guest must say its data is intact and exit 0. */
static void stop_guest(void)
{
    cr_assert_eq(mm__proc_signal(&guest_, SIGTERM), 0);
    json_t *j = read_json(&guest_, "SIGTERM");
    expect_stat_fields(j, "the final line");
    cr_expect(json_is_integer(json_object_get(j, "data_intact")), "the final line has data_intact");
    cr_expect_eq(mm__bench_json_u64(j, "data_intact"), 1, "data intact (%llu errors)",
                 (unsigned long long)mm__bench_json_u64(j, "data_errors"));
    cr_expect_gt(mm__bench_json_u64(j, "rounds"), 0, "rounds ran");
    json_decref(j);
    int st = 0;
    cr_assert_eq(mm__proc_wait(&guest_, LINE_WAIT_MS, &st), 0, "mmguest exits after SIGTERM");
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mmguest exits 0 (status 0x%x)", st);
}

/* The daemon lists the guest by name as a client of kind guest. */
static void expect_guest_client(const char *name)
{
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "status answers");
    const char *kind = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(st, "clients"), i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            kind = json_string_value(json_object_get(c, "kind"));
    }
    cr_expect_not_null(kind, "the daemon lists %s", name);
    if (kind)
        cr_expect_str_eq(kind, "guest", "%s registered as a guest", name);
    json_decref(st);
}

/* Start, run a second, check the statistics line with check (may be NULL),
 * stop and check the final line. */
static void run_guest(const struct guest_cfg *cfg, void (*check)(json_t *))
{
    skip_without_uffd();
    make_tmpdir();
    start_daemon("512M");
    start_guest(cfg);
    expect_guest_client(cfg->name);
    sleep_ms(RUN_MS);
    json_t *j = guest_stats();
    cr_expect_gt(mm__bench_json_u64(j, "rounds"), 0, "rounds ran within a second");
    cr_expect_gt(mm__bench_json_u64(j, "ram_bytes"), 0);
    if (check)
        check(j);
    json_decref(j);
    stop_guest();
}

typedef struct result {
    int code;
    char err[4096];
} result_t;

#define SOCK "/nonexistent/mm.sock"

static result_t run_mmguest(const char *first, ...);
static void expect_bad_arg(result_t r, const char *what);

/* ---- Workloads -------------------------------------------------------------- */

static void check_anon(json_t *j)
{
    cr_expect_geq(mm__bench_json_u64(j, "virtual_bytes"), 32 * MIB, "32M of anonymous memory");
}

Test(mmguest, anon_workload_stays_intact)
{
    struct guest_cfg cfg = {.name = "g-anon", .ram = "64M", .spec = "anon=32M"};
    run_guest(&cfg, check_anon);
}

static void check_gc(json_t *j)
{
    cr_expect_geq(mm__bench_json_u64(j, "virtual_bytes"), 48 * MIB,
                  "libgc's 48M heap is guest memory");
}

Test(mmguest, gc_workload_stays_intact)
{
    struct guest_cfg cfg = {.name = "g-gc", .ram = "128M", .spec = "gc=48M:live=25"};
    run_guest(&cfg, check_gc);
}

static void check_je(json_t *j)
{
    cr_expect_geq(mm__bench_json_u64(j, "virtual_bytes"), 8 * MIB,
                  "the arena's 8M of live values are guest memory");
}

Test(mmguest, je_workload_stays_intact)
{
    struct guest_cfg cfg = {.name = "g-je", .ram = "96M", .spec = "je=32M:live=25"};
    run_guest(&cfg, check_je);
}

static void check_cache(json_t *j)
{
    uint64_t hits = mm__bench_json_u64(j, "cache_hits"),
             misses = mm__bench_json_u64(j, "cache_misses");
    cr_expect_gt(hits + misses, 0, "reads went through the page cache");
}

Test(mmguest, cache_workload_reads_through_the_page_cache)
{
    struct guest_cfg cfg = {.name = "g-cache", .ram = "64M", .spec = "cache=16M", .cache = "8M"};
    run_guest(&cfg, check_cache);
    char disk[128];
    struct stat st;
    cr_assert_eq(stat(tmp_path(disk, sizeof disk, "disk.img"), &st), 0, "the disk was created");
    cr_expect_geq((uint64_t)st.st_size, 16 * MIB, "as large as the cache= item");
    /* mmguest takes its own image again: it gets past the disk check and
     * fails only on the socket (exit 1, not 2). */
    result_t r = run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--disk", disk,
                             "--cache", "8M", "--workload", "cache=16M", NULL);
    cr_expect_eq(r.code, 1, "its own disk image is accepted: exit %d, '%s'", r.code, r.err);
    /* ...but not when a cache= item reads past its end. */
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--disk", disk,
                               "--cache", "8M", "--workload", "cache=32M", NULL),
                   "a disk image too small");
}

static void check_all(json_t *j)
{
    check_anon(j);
    check_cache(j);
}

Test(mmguest, all_four_workloads_at_once)
{
    struct guest_cfg cfg = {.name = "g-all",
                            .ram = "256M",
                            .spec = "anon=32M,gc=48M:live=25,je=32M:live=25,cache=16M",
                            .cache = "8M"};
    run_guest(&cfg, check_all);
}

static void check_swapped(json_t *j)
{
    cr_expect_gt(mm__bench_json_u64(j, "swap_out_bytes"), 0,
                 "48M of anonymous memory in 32M of RAM swaps");
}

Test(mmguest, anon_larger_than_ram_swaps_and_stays_intact)
{
    struct guest_cfg cfg = {
        .name = "g-swap", .ram = "32M", .spec = "anon=48M:hot=25", .swap_size = "64M"};
    run_guest(&cfg, check_swapped);
}

/* An in-guest Boehm heap that is mostly garbage, under a lowered target:
 * the guest answers with the garbage (its shrink hook), not with swap. */
Test(mmguest, an_in_guest_gc_gives_garbage_back_instead_of_being_swapped)
{
    skip_without_uffd();
    make_tmpdir();
    start_daemon("512M");
    struct guest_cfg cfg = {.name = "g-gc", .ram = "160M", .spec = "gc=96M:live=20"};
    start_guest(&cfg);
    sleep_ms(300);
    json_t *j = guest_stats();
    uint64_t before = mm__bench_json_u64(j, "resident_bytes");
    json_decref(j);
    cr_assert_geq(before, 90 * MIB, "the heap is resident (%llu)", (unsigned long long)before);
    const char *args[] = {"set", "g-gc", "target=56M", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, NULL), 0, "mmctl set target");
    uint64_t resident = before, shrunk = 0, swapped = 0;
    for (int t = 0; t < 100 && resident > 56 * MIB; t++) {
        sleep_ms(100);
        j = guest_stats();
        resident = mm__bench_json_u64(j, "resident_bytes");
        shrunk = mm__bench_json_u64(j, "shrunk_bytes");
        swapped = mm__bench_json_u64(j, "swap_out_bytes");
        json_decref(j);
    }
    cr_expect_leq(resident, 56 * MIB, "the guest reached its target (resident %llu)",
                  (unsigned long long)resident);
    /* 20% of 96 MiB is live: reaching 56 MiB without swap means the
     * garbage went back (through the shrink hook, or collections the
     * workload's own rounds ran meanwhile). */
    cr_expect_eq(swapped, 0, "nothing was swapped (%llu bytes)", (unsigned long long)swapped);
    cr_log_info("resident %llu MiB -> %llu MiB, %llu MiB through the shrink hook",
                (unsigned long long)before >> 20, (unsigned long long)resident >> 20,
                (unsigned long long)shrunk >> 20);
    stop_guest();
}

Test(mmguest, a_free_item_leaves_its_memory_resident_and_free)
{
    skip_without_uffd();
    make_tmpdir();
    start_daemon("512M");
    struct guest_cfg cfg = {.name = "g-free", .ram = "128M", .spec = "anon=16M,free=64M"};
    start_guest(&cfg);
    uint32_t id = client_id_by_name("g-free");
    cr_assert_neq(id, 0, "the daemon lists the guest");
    uint64_t resident = client_field(id, "resident_bytes"), free = client_field(id, "free_bytes");
    cr_expect_geq(resident, 80 * MIB, "the freed memory is still resident (%llu)",
                  (unsigned long long)resident);
    cr_expect_geq(free, 64 * MIB, "and free in the guest's allocator (%llu)",
                  (unsigned long long)free);
    json_t *j = guest_stats();
    cr_expect_eq(mm__bench_json_u64(j, "virtual_bytes"), 16 * MIB, "only anon= is in use");
    json_decref(j);
    stop_guest();
}

/* A phase item that has grown, freed and grown again within the run: its
 * operations are counted, each in the latency histogram, and every step it
 * held verified on stop. */
static void check_phase(json_t *j)
{
    uint64_t ops = mm__bench_json_u64(j, "ops"), in_hist = 0;
    json_t *hist = json_object_get(j, "op_hist"), *b;
    size_t i;

    cr_expect_geq(ops, 16, "two periods of a 16M phase: at least its 4 MiB steps written twice");
    cr_expect(json_is_number(json_object_get(j, "op_p99_ms")), "op_p99_ms is a number");
    cr_assert(json_is_array(hist), "op_hist is an array");
    json_array_foreach(hist, i, b)
    {
        cr_expect_eq(json_array_size(b), 2, "a bucket is [upper_us, count]");
        in_hist += (uint64_t)json_integer_value(json_array_get(b, 1));
    }
    cr_expect_eq(in_hist, ops, "every operation is in the histogram");
}

Test(mmguest, a_phase_item_grows_frees_and_counts_its_operations)
{
    struct guest_cfg cfg = {
        .name = "g-phase", .ram = "64M", .spec = "anon=4M,phase=16M:period=400:offset=50"};
    run_guest(&cfg, check_phase);
}

/* ---- The command line --------------------------------------------------------- */

/* Run mmguest with args (NULL-terminated), its stderr captured, stdout
 * thrown away. */
static result_t run_mmguest(const char *first, ...)
{
    char path[4096];
    char *argv[32];
    int n = 0, pe[2];
    result_t r = {0};

    cr_assert_eq(mm__bin_path("mmguest", path, sizeof path), 0, "mmguest is built");
    argv[n++] = path;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && n < 31; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    cr_assert_eq(pipe2(pe, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (null < 0 || dup2(null, STDOUT_FILENO) < 0 || dup2(pe[1], STDERR_FILENO) < 0)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pe[1]);
    size_t len = 0;
    ssize_t got;
    while (len < sizeof r.err - 1 &&
           ((got = read(pe[0], r.err + len, sizeof r.err - 1 - len)) > 0 ||
            (got < 0 && errno == EINTR)))
        len += got > 0 ? (size_t)got : 0;
    r.err[len] = '\0';
    close(pe[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void expect_bad_arg(result_t r, const char *what)
{
    cr_expect_eq(r.code, 2, "%s: exit status 2, not %d ('%s')", what, r.code, r.err);
    cr_expect_eq(count_lines(r.err), 1, "%s: one line on stderr, got '%s'", what, r.err);
    cr_expect_gt(strlen(r.err), 1, "%s: the line says something", what);
}

Test(mmguest, help_prints_usage_and_the_spec_grammar)
{
    char path[4096];
    char *argv[] = {path, "--help", NULL};
    char *out = NULL;
    int st = 0;
    cr_assert_eq(mm__bin_path("mmguest", path, sizeof path), 0, "mmguest is built");
    cr_assert_eq(mm__proc_run(argv, &out, 10000, &st), 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--help exits 0");
    cr_expect(strstr(out, "usage") != NULL, "usage: '%s'", out);
    cr_expect(strstr(out, "anon=SIZE") && strstr(out, "gc=SIZE") && strstr(out, "je=SIZE") &&
                  strstr(out, "cache=SIZE"),
              "the grammar of every item: '%s'", out);
    free(out);
}

Test(mmguest, bad_arguments_exit_2_with_one_line)
{
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "anon=12Q", NULL),
                   "a bad size in the spec");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "heap=8M", NULL),
                   "an unknown workload");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "anon=8M:live=5", NULL),
                   "anon with live=");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "gc=8M:live=101", NULL),
                   "live=101");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "gc=8M,gc=8M", NULL),
                   "two gc items");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "anon=8M,,anon=8M", NULL),
                   "an empty item");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "balloon-x",
                               "--workload", "anon=8M", NULL),
                   "an unknown driver");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--driver", "mm", "--workload", "anon=8M", NULL),
                   "no --ram");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", NULL),
                   "no --workload");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "cache=8M", NULL),
                   "cache= without --disk");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "16M", "--driver", "mm", "--workload",
                               "anon=64M", NULL),
                   "more memory than RAM and swap");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "phase=8M", NULL),
                   "phase without a period");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--workload",
                               "phase=8M:period=500:offset=120", NULL),
                   "phase offset over 100");
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--bogus",
                               "--workload", "anon=8M", NULL),
                   "an unknown option");
}

Test(mmguest, a_disk_image_not_made_by_mmguest_is_refused)
{
    char disk[128];
    make_tmpdir();
    int fd = open(tmp_path(disk, sizeof disk, "foreign.img"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 16 * MIB), 0);
    close(fd);
    expect_bad_arg(run_mmguest("--socket", SOCK, "--ram", "64M", "--driver", "mm", "--disk", disk,
                               "--cache", "8M", "--workload", "cache=8M", NULL),
                   "a foreign disk image");
}
