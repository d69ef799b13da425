/*
 * Integration tests of mmrun: programs that know nothing of mm
 * (tests/programs: one workload built against Boehm GC, jemalloc, or the C
 * library's malloc, with no libmm linked in) run under mmrun against a
 * throw-away daemon. They show the heap in the client's region, memory
 * coming back when the admin lowers the target, data intact at the end, a
 * forked child with its own copy of the heap, an exec'd program as a new
 * client, and the single warning without a daemon.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mm/mm.h>

#include "common.h"
#include "procs.h"

TestSuite(mmrun, .fini = stop_daemon, .timeout = 180);

#define MIB (1ull << 20)

static void path_of(const char *prog, char *out, size_t cap)
{
    cr_assert_eq(mm__bin_path(prog, out, cap), 0, "%s is built", prog);
}

/* Start `mmrun --socket S --name name --max 256M -- prog live garbage mode`
 * and wait for its "ready" (after "forked ok" in fork mode). */
static void start_prog(mm_proc_t *p, const char *name, const char *prog, const char *live,
                       const char *garbage, const char *mode)
{
    char mmrun[512], path[512];
    path_of("mmrun", mmrun, sizeof mmrun);
    path_of(prog, path, sizeof path);
    /* The requests go through the preload to the daemon (plain_... checks). */
    char *argv[] = {mmrun,        "--socket", daemon_.sock, "--name",     (char *)name,
                    "--max",      "256M",     "--min",      "8M",         "--weight",
                    "50",         "--",       path,         (char *)live, (char *)garbage,
                    (char *)mode, NULL};
    cr_assert_eq(mm__proc_spawn(p, argv, true), 0);
    if (strcmp(mode, "fork") == 0 || strcmp(mode, "threads") == 0)
        cr_assert_eq(mm__proc_wait_line(p, "forked ok", 60000), 0,
                     "the forked child found its copy of the heap intact and private");
    cr_assert_eq(mm__proc_wait_line(p, "ready", 60000), 0, "%s is ready", prog);
}

/* SIGTERM: the program verifies every live block and exits 0 if intact. */
static void finish(mm_proc_t *p)
{
    int st = 0;
    cr_assert_eq(mm__proc_signal(p, SIGTERM), 0);
    cr_assert_eq(mm__proc_wait(p, 60000, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "data intact (status %d)", st);
}

static uint32_t wait_client(const char *name)
{
    for (int i = 0; i < 200; i++) {
        uint32_t id = client_id_by_name(name);
        if (id)
            return id;
        sleep_ms(50);
    }
    cr_assert_fail("client %s registered", name);
    return 0;
}

/* Wait until client id holds at most bytes resident; returns what it holds. */
static uint64_t wait_resident_at_most(uint32_t id, uint64_t bytes, int timeout_ms)
{
    uint64_t r = client_field(id, "resident_bytes");
    for (int t = 0; r > bytes && t < timeout_ms; t += 100) {
        sleep_ms(100);
        r = client_field(id, "resident_bytes");
    }
    return r;
}

static void set_target(const char *name, const char *size)
{
    char arg[64];
    snprintf(arg, sizeof arg, "target=%s", size);
    const char *args[] = {"set", name, arg, NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, NULL), 0, "mmctl set %s %s", name, arg);
}

/* A runtime's heap is in the region; lowering the target brings its garbage
 * back; its live data stays intact. */
static void revocation_round(const char *prog, const char *mode)
{
#if defined(__SANITIZE_ADDRESS__)
    if (strcmp(prog, "mmrun_prog_je") == 0)
        cr_skip_test("AddressSanitizer's malloc replaces jemalloc's in the program, so its arena "
                     "serves nothing: the plain build checks this");
#endif
    start_daemon("1G");
    mm_proc_t p;
    start_prog(&p, "rt", prog, "16", "64", mode);
    uint32_t id = wait_client("rt");
    uint64_t before = client_field(id, "resident_bytes");
    cr_assert_geq(before, 80 * MIB, "the heap, garbage included, is in mm frames (%llu resident)",
                  (unsigned long long)before);
    set_target("rt", "24M");
    /* Live data is 16 MiB: what is left after the runtime gave its garbage
     * back is that plus the runtime's slack (free frames in chunks that
     * still hold live data), well below what it had. */
    uint64_t after = wait_resident_at_most(id, 48 * MIB, 60000);
    cr_assert_leq(after, 48 * MIB, "memory came back: %llu MiB -> %llu MiB resident",
                  (unsigned long long)(before / MIB), (unsigned long long)(after / MIB));
    cr_assert_gt(client_field(id, "revoked_bytes") + client_field(id, "reclaimed_bytes"), 0);
    finish(&p);
}

Test(mmrun, boehm_program_gives_its_garbage_back_with_data_intact)
{
    revocation_round("mmrun_prog_gc", "wait");
}

Test(mmrun, jemalloc_program_gives_its_garbage_back_with_data_intact)
{
    revocation_round("mmrun_prog_je", "wait");
}

Test(mmrun, boehm_program_forks_a_child_with_a_private_heap)
{
    revocation_round("mmrun_prog_gc", "fork");
}

Test(mmrun, jemalloc_program_forks_a_child_with_a_private_heap)
{
    revocation_round("mmrun_prog_je", "fork");
}

/* Threads allocate the heap (for jemalloc: every thread's allocations come
 * from the one adopted arena), then the program forks. */
Test(mmrun, boehm_program_with_threads)
{
    revocation_round("mmrun_prog_gc", "threads");
}

Test(mmrun, jemalloc_program_with_threads)
{
    revocation_round("mmrun_prog_je", "threads");
}

Test(mmrun, plain_program_registers_and_reports_its_usage)
{
    start_daemon("1G");
    mm_proc_t p;
    start_prog(&p, "plain", "mmrun_prog_plain", "16", "0", "wait");
    uint32_t id = wait_client("plain");
    /* Its heap is its own (glibc's malloc): what mm sees is the report. */
    uint64_t heap = 0;
    for (int i = 0; i < 60 && heap < 16 * MIB; i++) {
        heap = client_field(id, "heap_bytes");
        if (heap < 16 * MIB)
            sleep_ms(100);
    }
    cr_assert_geq(heap, 16 * MIB, "it reports its resident anonymous memory");
    cr_assert_eq(client_field(id, "max_bytes"), 256 * MIB, "--max is its region");
    cr_assert_eq(client_field(id, "region_bytes"), 256 * MIB);
    /* Requests, capped by the admin's policy: the daemon's defaults allow no
     * reservation of a client's own asking and weights up to 100. */
    cr_assert_eq(client_field(id, "min_bytes"), 0, "--min 8M is capped by max-client-reservation");
    cr_assert_eq(client_field(id, "weight"), 50, "--weight 50 is within max-client-weight");
    finish(&p);
}

Test(mmrun, a_program_it_execs_is_a_new_client)
{
    start_daemon("1G");
    mm_proc_t p;
    start_prog(&p, "parent", "mmrun_prog_plain", "1", "0", "exec");
    uint32_t parent = wait_client("parent");
    uint32_t child = wait_client("mmrun_prog_plain");
    cr_assert_neq(parent, child);
    finish(&p);
}

/* Run argv with stdout to /dev/null and stderr to err_path; returns the exit
 * status (the test fails if it does not end within 60 s). */
static int run_with_stderr(char *const argv[], const char *err_path)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int n = open("/dev/null", O_WRONLY);
        if (e < 0 || n < 0 || dup2(e, 2) < 0 || dup2(n, 1) < 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    for (int t = 0; t < 60000; t += 20) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    cr_assert_fail("%s did not end", argv[0]);
    return -1;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static size_t lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

Test(mmrun, without_a_daemon_the_program_runs_after_one_warning)
{
    char dir[] = "/tmp/mm-mmrun-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char sock[128], err[128], mmrun[512], prog[512];
    snprintf(sock, sizeof sock, "%s/none.sock", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    path_of("mmrun", mmrun, sizeof mmrun);
    path_of("mmrun_prog_gc", prog, sizeof prog);
    /* A GC program that execs a copy of itself: still one warning for both. */
    char *argv[] = {mmrun, "--socket", sock, "--", prog, "4", "4", "spawn", NULL};
    cr_assert_eq(run_with_stderr(argv, err), 0, "the program ran and its data was intact");
    const char *text = read_file(err);
    cr_assert_eq(lines(text), 1, "one line on stderr:\n%s", text);
    cr_assert_not_null(strstr(text, "no mm daemon at"), "%s", text);
    cr_assert_not_null(strstr(text, sock), "%s", text);
    unlink(err);
    rmdir(dir);
}

Test(mmrun, bad_arguments_exit_2_with_one_line)
{
    char dir[] = "/tmp/mm-mmrun-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char err[128], mmrun[512], prog[512];
    snprintf(err, sizeof err, "%s/stderr", dir);
    path_of("mmrun", mmrun, sizeof mmrun);
    path_of("mmrun_prog_plain", prog, sizeof prog);
    char *bad_size[] = {mmrun, "--max", "12x", "--", prog, "1", "0", "now", NULL};
    char *bad_weight[] = {mmrun, "--weight", "0", "--", prog, "1", "0", "now", NULL};
    char *no_prog[] = {mmrun, "--name", "x", NULL};
    char *unknown[] = {mmrun, "--frobnicate", "--", prog, NULL};
    char *const *cases[] = {bad_size, bad_weight, no_prog, unknown};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(run_with_stderr(cases[i], err), 2, "case %zu exits 2", i);
        cr_assert_eq(lines(read_file(err)), 1, "case %zu: one line", i);
    }
    char *missing[] = {mmrun, "--", "/nonexistent/program", NULL};
    cr_assert_eq(run_with_stderr(missing, err), 127);
    char *help[] = {mmrun, "--help", NULL};
    cr_assert_eq(run_with_stderr(help, err), 0);
    unlink(err);
    rmdir(dir);
}
