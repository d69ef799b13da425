/*
 * Integration tests of the programs' command lines (mmsrv, mmctl, mmhold,
 * mmbench): --help, bad arguments (exit 2 and one line on stderr), start-up
 * failures of the daemon, mmctl's output and errors, and refusal of
 * unprivileged admin peers. Programs are found next to this binary
 * (mm__bin_path) and run with their stdout and stderr captured.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "bench.h"
#include "common.h"

#define RUN_TIMEOUT_MS 20000

static char tmpdir_[64]; /* a test's own scratch directory, or "" */

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
    mm__bench_daemon_stop(&daemon_);
    if (tmpdir_[0])
        nftw(tmpdir_, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(programs, .init = NULL, .fini = cleanup, .timeout = 120);

static const char *make_tmpdir(void)
{
    snprintf(tmpdir_, sizeof tmpdir_, "/tmp/mm-programs-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir_), "mkdtemp: %s", strerror(errno));
    return tmpdir_;
}

/* What a finished program left: exit code (128 + signal if killed), and its
 * stdout and stderr as strings. */
typedef struct result {
    int code;
    char *out, *err;
} result_t;

static void result_free(result_t *r)
{
    free(r->out);
    free(r->err);
}

typedef struct buf {
    char *s;
    size_t len, cap;
} buf_t;

/* Read what fd has into b; returns false at EOF or error. */
static bool drain(int fd, buf_t *b)
{
    if (b->len + 1024 + 1 > b->cap) {
        b->cap = b->cap * 2 + 2048;
        b->s = realloc(b->s, b->cap);
        cr_assert_not_null(b->s);
    }
    ssize_t n = read(fd, b->s + b->len, b->cap - b->len - 1);
    if (n < 0 && errno == EINTR)
        return true;
    if (n <= 0)
        return false;
    b->len += (size_t)n;
    return true;
}

/* Run argv (argv[0] is a path) with stdout and stderr captured; a program
 * still running after RUN_TIMEOUT_MS is killed and the test fails. */
static result_t run_argv(char *const argv[])
{
    int po[2], pe[2];
    cr_assert_eq(pipe2(po, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(pe, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(po[1], STDOUT_FILENO) < 0 || dup2(pe[1], STDERR_FILENO) < 0)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    buf_t bo = {0}, be = {0};
    struct pollfd p[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    uint64_t deadline = mm__bench_now_ns() + RUN_TIMEOUT_MS * 1000000ull;
    bool timed_out = false;
    while (p[0].fd >= 0 || p[1].fd >= 0) {
        uint64_t now = mm__bench_now_ns();
        if (now >= deadline) {
            timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        if (poll(p, 2, (int)((deadline - now) / 1000000 + 1)) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (p[i].fd >= 0 && p[i].revents && !drain(p[i].fd, i == 0 ? &bo : &be)) {
                close(p[i].fd);
                p[i].fd = -1;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    result_t r = {.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
                  .out = bo.s ? bo.s : calloc(1, 1),
                  .err = be.s ? be.s : calloc(1, 1)};
    if (bo.s)
        bo.s[bo.len] = '\0';
    if (be.s)
        be.s[be.len] = '\0';
    cr_assert(!timed_out, "%s did not finish within %d ms", argv[0], RUN_TIMEOUT_MS);
    return r;
}

/* Run one of mm's programs with the NULL-terminated arguments after prog. */
static result_t run(const char *prog, ...)
{
    char path[4096];
    char *argv[32];
    int n = 0;
    cr_assert_eq(mm__bin_path(prog, path, sizeof path), 0, "%s is built", prog);
    argv[n++] = path;
    va_list ap;
    va_start(ap, prog);
    for (char *a; n < 31 && (a = va_arg(ap, char *)) != NULL;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return run_argv(argv);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A bad argument: exit 2 and exactly one non-empty line on stderr. */
static void expect_bad_arg(result_t r, const char *what)
{
    cr_expect_eq(r.code, 2, "%s: exit status 2, not %d", what, r.code);
    cr_expect_eq(count_lines(r.err), 1, "%s: one line on stderr, got '%s'", what, r.err);
    cr_expect_gt(strlen(r.err), 1, "%s: the line says something", what);
    result_free(&r);
}

static void expect_help(const char *prog)
{
    result_t r = run(prog, "--help", NULL);
    cr_expect_eq(r.code, 0, "%s --help exits 0, not %d", prog, r.code);
    cr_expect(strstr(r.out, "usage") != NULL, "%s --help prints usage: '%s'", prog, r.out);
    result_free(&r);
}

/* ---- --help and bad arguments ----------------------------------------- */

Test(programs, help_exits_0_and_prints_usage)
{
    expect_help("mmsrv");
    expect_help("mmctl");
    expect_help("mmhold");
    expect_help("mmbench");
}

Test(programs, mmsrv_bad_arguments_exit_2_with_one_line)
{
    expect_bad_arg(run("mmsrv", "--capacity", "12Q", "--check-config", NULL), "--capacity 12Q");
    expect_bad_arg(run("mmsrv", "--capacity", "1M", "--check-config", NULL), "--capacity 1M");
    expect_bad_arg(run("mmsrv", "--bogus", NULL), "mmsrv --bogus");
    expect_bad_arg(run("mmsrv", "--log-level", "loud", "--check-config", NULL), "--log-level");
    expect_bad_arg(run("mmsrv", "--check-config", "extra", NULL), "mmsrv extra");
    expect_bad_arg(run("mmsrv", "--capacity", NULL), "--capacity without a value");
}

Test(programs, mmctl_bad_arguments_exit_2_with_one_line)
{
    /* The admin socket does not exist: a usage error must be found first. */
    expect_bad_arg(
        run("mmctl", "--admin-socket", "/nonexistent/admin.sock", "capacity", "nonsense", NULL),
        "mmctl capacity nonsense");
    expect_bad_arg(run("mmctl", "--admin-socket", "/nonexistent/admin.sock", "capacity", NULL),
                   "mmctl capacity");
    expect_bad_arg(run("mmctl", "--bogus", "status", NULL), "mmctl --bogus");
    expect_bad_arg(run("mmctl", "--admin-socket", "/nonexistent/admin.sock", "frobnicate", NULL),
                   "mmctl frobnicate");
    expect_bad_arg(run("mmctl", NULL), "mmctl without a command");
}

Test(programs, mmhold_bad_arguments_exit_2_with_one_line)
{
    expect_bad_arg(
        run("mmhold", "--socket", "/nonexistent/mm.sock", "--hold", "1X", "--free", "0", NULL),
        "--hold 1X");
    expect_bad_arg(
        run("mmhold", "--socket", "/nonexistent/mm.sock", "--hold", "10M", "--free", "20M", NULL),
        "--free larger than --hold");
    expect_bad_arg(run("mmhold", "--socket", "/nonexistent/mm.sock", "--bogus", NULL),
                   "mmhold --bogus");
    expect_bad_arg(run("mmhold", "--hold", "10M", "--free", "0", NULL), "mmhold without --socket");
}

Test(programs, mmbench_bad_arguments_exit_2_with_one_line)
{
    expect_bad_arg(run("mmbench", "nosuchcmd", NULL), "mmbench nosuchcmd");
    expect_bad_arg(run("mmbench", NULL), "mmbench without a subcommand");
    expect_bad_arg(run("mmbench", "cut", "--reps", "0", NULL), "mmbench cut --reps 0");
    expect_bad_arg(run("mmbench", "cut", "--bogus", NULL), "mmbench cut --bogus");
}

/* ---- mmsrv start-up ------------------------------------------------------- */

Test(programs, mmsrv_check_config_exits_0)
{
    const char *dir = make_tmpdir();
    result_t r = run("mmsrv", "--check-config", "--state-dir", dir, "--capacity", "64M", NULL);
    cr_expect_eq(r.code, 0, "exit %d, stderr '%s'", r.code, r.err);
    cr_expect(strstr(r.out, "64") != NULL, "it says the capacity: '%s'", r.out);
    result_free(&r);
}

/* Write text to dir/name and return the path (static buffer). */
static const char *write_file(const char *dir, const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "we");
    cr_assert_not_null(f, "create %s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

Test(programs, mmsrv_reads_a_config_file_and_the_command_line_wins)
{
    const char *dir = make_tmpdir();
    char conf[256];
    snprintf(conf, sizeof conf, "%s",
             write_file(dir, "mmsrv.conf",
                        "# mm settings\ncapacity = 96M  # the host's share\n\n"
                        "idle-tax=0.5\nmax-client-weight = 300\n"));
    result_t r = run("mmsrv", "--config", conf, "--check-config", "--state-dir", dir, NULL);
    cr_expect_eq(r.code, 0, "exit %d, stderr '%s'", r.code, r.err);
    cr_expect(strstr(r.out, "capacity 96 MiB") != NULL, "the file's capacity: '%s'", r.out);
    result_free(&r);
    r = run("mmsrv", "--config", conf, "--check-config", "--state-dir", dir, "--capacity", "64M",
            NULL);
    cr_expect(strstr(r.out, "capacity 64 MiB") != NULL, "the command line wins: '%s'", r.out);
    result_free(&r);
}

Test(programs, a_bad_config_line_is_refused_naming_file_and_line)
{
    const char *dir = make_tmpdir();
    char conf[256];
    snprintf(conf, sizeof conf, "%s",
             write_file(dir, "bad.conf", "capacity = 96M\nidle-tax = lots\n"));
    result_t r = run("mmsrv", "--config", conf, "--check-config", NULL);
    cr_expect(strstr(r.err, "bad.conf:2:") != NULL, "file and line named: '%s'", r.err);
    expect_bad_arg(r, "a bad value");
    write_file(dir, "bad.conf", "wobble = 3\n");
    expect_bad_arg(run("mmsrv", "--config", conf, "--check-config", NULL), "an unknown key");
    expect_bad_arg(run("mmsrv", "--config", "/nonexistent/mmsrv.conf", "--check-config", NULL),
                   "a missing file");
}

Test(programs, sighup_reloads_the_capacity_from_the_config_file)
{
    const char *dir = make_tmpdir();
    char conf[256];
    snprintf(conf, sizeof conf, "%s", write_file(dir, "mmsrv.conf", "capacity = 512M\n"));
    const char *extra[] = {"--config", conf, NULL};
    /* The harness passes --capacity too; the file's word is only for SIGHUP
     * then, so start without it through the file alone. */
    cr_assert_eq(mm__bench_daemon_start_with(&daemon_, "512M", "warn", extra), 0);
    write_file(dir, "mmsrv.conf", "capacity = 256M\n");
    /* The command line set capacity, so the reload leaves it alone... */
    cr_assert_eq(mm__proc_signal(&daemon_.proc, SIGHUP), 0);
    sleep_ms(300);
    cr_assert_eq(status_field("capacity_bytes"), 512u << 20, "the command line wins");
    /* ...but applies what it did not set. */
    write_file(dir, "mmsrv.conf", "capacity = 256M\nmax-client-weight = 50\n");
    cr_assert_eq(mm__proc_signal(&daemon_.proc, SIGHUP), 0);
    sleep_ms(300);
    mm_client_t *c = open_client("heavy", 8 << 20, 0); /* asks for weight 100 */
    cr_assert_eq(client_field(mm_client_id(c), "weight"), 50, "capped by the reloaded file");
    mm_client_close(c);
}

Test(programs, a_second_mmsrv_on_the_same_state_dir_fails_and_the_first_keeps_serving)
{
    start_daemon("64M");
    result_t r = run("mmsrv", "--foreground", "--state-dir", daemon_.dir, "--capacity", "64M",
                     "--log-level", "warn", NULL);
    cr_expect_neq(r.code, 0, "the second daemon fails");
    cr_expect(strstr(r.err, daemon_.dir) != NULL, "it names the directory: '%s'", r.err);
    result_free(&r);
    /* The same in the background: the parent reports the child's failure. */
    r = run("mmsrv", "--state-dir", daemon_.dir, "--capacity", "64M", NULL);
    cr_expect_neq(r.code, 0, "the second daemon fails in the background too");
    result_free(&r);

    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "the first still answers mmctl");
    cr_expect_eq(mm__bench_json_u64(st, "capacity_bytes"), 64u << 20);
    json_decref(st);
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.max_bytes = 4 << 20;
    mm_client_t *c = NULL;
    cr_assert_eq(mm_client_open(daemon_.sock, &o, &c), 0, "and serves clients");
    void *p;
    cr_expect_eq(mm_alloc(c, 4096, 0, &p), 0);
    mm_client_close(c);
}

Test(programs, mmsrv_with_an_unusable_state_dir_fails_naming_the_path)
{
    const char *dir = make_tmpdir();
    char file[128], state[160];
    snprintf(file, sizeof file, "%s/plain-file", dir);
    snprintf(state, sizeof state, "%s/state", file);
    int fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    result_t r = run("mmsrv", "--foreground", "--state-dir", state, "--capacity", "64M", NULL);
    cr_expect_neq(r.code, 0, "it fails");
    cr_expect(strstr(r.err, state) != NULL, "the message names %s: '%s'", state, r.err);
    result_free(&r);
}

/* ---- mmctl ---------------------------------------------------------------- */

Test(programs, mmctl_without_a_daemon_exits_1_naming_the_path)
{
    const char *dir = make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/admin.sock", dir);
    result_t r = run("mmctl", "--admin-socket", path, "status", NULL);
    cr_expect_eq(r.code, 1, "no socket file: exit 1, not %d", r.code);
    cr_expect(strstr(r.err, path) != NULL, "the message names the path: '%s'", r.err);
    result_free(&r);

    /* A socket file nobody listens on. */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(s, 0);
    cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    close(s);
    r = run("mmctl", "--admin-socket", path, "--json", "status", NULL);
    cr_expect_eq(r.code, 1, "stale socket: exit 1, not %d", r.code);
    cr_expect(strstr(r.err, path) != NULL, "the message names the path: '%s'", r.err);
    result_free(&r);
}

Test(programs, mmctl_status_lists_a_running_mmhold)
{
    start_daemon("64M");
    mm_proc_t hold;
    cr_assert_eq(mm__bench_hold_start(&hold, &daemon_, "holder-42", "4M", "0"), 0);
    result_t r = run("mmctl", "--admin-socket", daemon_.admin_sock, "status", NULL);
    cr_expect_eq(r.code, 0, "stderr: '%s'", r.err);
    cr_expect(strstr(r.out, "holder-42") != NULL, "the holder is listed: '%s'", r.out);
    result_free(&r);
    r = run("mmctl", "--admin-socket", daemon_.admin_sock, "clients", NULL);
    cr_expect_eq(r.code, 0);
    cr_expect(strstr(r.out, "holder-42") != NULL, "clients lists it: '%s'", r.out);
    result_free(&r);
    bool intact = false;
    cr_expect_eq(mm__bench_hold_stop(&hold, &intact), 0);
    cr_expect(intact, "mmhold verified its data");
}

static void expect_integer(json_t *o, const char *key, const char *where)
{
    cr_expect(json_is_integer(json_object_get(o, key)), "%s has integer %s", where, key);
}

Test(programs, mmctl_json_status_has_the_documented_fields)
{
    start_daemon("64M");
    mm_proc_t hold;
    cr_assert_eq(mm__bench_hold_start(&hold, &daemon_, "jsonhold", "4M", "0"), 0);
    result_t r = run("mmctl", "--admin-socket", daemon_.admin_sock, "--json", "status", NULL);
    cr_assert_eq(r.code, 0, "stderr: '%s'", r.err);
    json_error_t jerr;
    json_t *st = json_loads(r.out, 0, &jerr);
    cr_assert_not_null(st, "valid JSON: %s in '%s'", jerr.text, r.out);
    result_free(&r);
    const char *top[] = {"capacity_bytes", "granted_bytes", "resident_bytes"};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        expect_integer(st, top[i], "status");
    cr_expect_eq(mm__bench_json_u64(st, "capacity_bytes"), 64u << 20);
    cr_expect_eq(mm__bench_json_u64(st, "granted_bytes"), 4u << 20);
    cr_expect_eq(mm__bench_json_u64(st, "resident_bytes"), 4u << 20);
    json_t *clients = json_object_get(st, "clients");
    cr_assert(json_is_array(clients));
    cr_assert_eq(json_array_size(clients), 1);
    json_t *c = json_array_get(clients, 0);
    const char *ints[] = {
        "id",           "pid",         "min_bytes",      "max_bytes",  "weight",
        "target_bytes", "owned_bytes", "resident_bytes", "free_bytes", "missed_deadlines"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        expect_integer(c, ints[i], "client");
    const char *strs[] = {"name", "kind", "driver"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        cr_expect(json_is_string(json_object_get(c, strs[i])), "client has string %s", strs[i]);
    cr_expect_str_eq(json_string_value(json_object_get(c, "name")), "jsonhold");
    cr_expect_str_eq(json_string_value(json_object_get(c, "kind")), "runtime");
    cr_expect_str_eq(json_string_value(json_object_get(c, "driver")), "mm");
    cr_expect_eq(mm__bench_json_u64(c, "pid"), (uint64_t)hold.pid);
    cr_expect_eq(mm__bench_json_u64(c, "max_bytes"), 4u << 20);
    cr_expect_eq(mm__bench_json_u64(c, "weight"), 100);
    cr_expect_eq(mm__bench_json_u64(c, "owned_bytes"), 4u << 20);
    cr_expect_eq(mm__bench_json_u64(c, "resident_bytes"), 4u << 20);
    cr_expect_eq(mm__bench_json_u64(c, "free_bytes"), 0);
    cr_expect_eq(mm__bench_json_u64(c, "missed_deadlines"), 0);
    json_decref(st);
    bool intact = false;
    cr_expect_eq(mm__bench_hold_stop(&hold, &intact), 0);
    cr_expect(intact);
}

Test(programs, mmctl_capacity_below_2m_is_refused)
{
    start_daemon("64M");
    const char *sizes[] = {"1M", "4096", "0"};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        result_t r = run("mmctl", "--admin-socket", daemon_.admin_sock, "capacity", sizes[i], NULL);
        cr_expect_eq(r.code, 1, "capacity %s: exit 1, not %d", sizes[i], r.code);
        cr_expect_eq(count_lines(r.err), 1, "capacity %s: one line: '%s'", sizes[i], r.err);
        cr_expect(strstr(r.err, "capacity") != NULL, "capacity %s: says why: '%s'", sizes[i],
                  r.err);
        result_free(&r);
    }
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0);
    cr_expect_eq(mm__bench_json_u64(st, "capacity_bytes"), 64u << 20, "capacity unchanged");
    json_decref(st);
    result_t r = run("mmctl", "--admin-socket", daemon_.admin_sock, "capacity", "2M", NULL);
    cr_expect_eq(r.code, 0, "2M is allowed: '%s'", r.err);
    result_free(&r);
}

/* ---- Admin refusal -------------------------------------------------------- */

enum {
    REFUSED_EACCES = 10,
    REFUSED_BY_DAEMON = 11,
    NOT_REFUSED = 12,
    CANNOT_DROP_PRIVILEGES = 13,
    CONNECT_FAILED = 14, /* for another reason than EACCES */
    NO_CLEAR_REPLY = 15,
};

/* In a child: become nobody, ask the admin socket for status; the exit code
 * says what happened. */
static void child_ask_as_nobody(const char *path)
{
    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
        _exit(CANNOT_DROP_PRIVILEGES);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        _exit(CONNECT_FAILED);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0)
        _exit(errno == EACCES ? REFUSED_EACCES : CONNECT_FAILED);
    /* A refused peer may get its reply and the close before it writes: the
     * write may fail (EPIPE), and the reply is still there to read. */
    signal(SIGPIPE, SIG_IGN);
    const char req[] = "status\n";
    if (write(s, req, sizeof req - 1) < 0 && errno != EPIPE)
        _exit(NO_CLEAR_REPLY);
    char reply[4096];
    size_t len = 0;
    ssize_t n;
    struct pollfd p = {.fd = s, .events = POLLIN};
    while (len < sizeof reply - 1 && poll(&p, 1, 10000) == 1 &&
           (n = read(s, reply + len, sizeof reply - 1 - len)) > 0)
        len += (size_t)n;
    reply[len] = '\0';
    if (strstr(reply, "\"error\"") && strstr(reply, "permission denied"))
        _exit(REFUSED_BY_DAEMON);
    _exit(strstr(reply, "capacity_bytes") ? NOT_REFUSED : NO_CLEAR_REPLY);
}

static int ask_as_nobody(const char *path)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        child_ask_as_nobody(path);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "the child exited (status 0x%x)", st);
    return WEXITSTATUS(st);
}

Test(programs, the_admin_socket_refuses_an_unprivileged_user)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to switch to uid 65534 (nobody)");
    start_daemon("64M");
    /* mkdtemp made the state dir 0700; let nobody reach the socket file. */
    cr_assert_eq(chmod(daemon_.dir, 0755), 0);
    int how = ask_as_nobody(daemon_.admin_sock);
    cr_expect(how == REFUSED_EACCES || how == REFUSED_BY_DAEMON,
              "nobody is refused (child said %d)", how);

    /* With the socket file open to all, the daemon's own check refuses. */
    cr_assert_eq(chmod(daemon_.admin_sock, 0666), 0);
    how = ask_as_nobody(daemon_.admin_sock);
    cr_expect_eq(how, REFUSED_BY_DAEMON, "the daemon refuses nobody itself (child said %d)", how);

    json_t *st = NULL;
    cr_expect_eq(mm__bench_ctl_status(&daemon_, &st), 0, "root is still served");
    json_decref(st);
}

/* ---- mmhold ------------------------------------------------------------- */

Test(programs, mmhold_without_a_daemon_exits_1_saying_cannot_connect)
{
    const char *dir = make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/mm.sock", dir);
    result_t r = run("mmhold", "--socket", path, "--hold", "4M", "--free", "0", NULL);
    cr_expect_eq(r.code, 1, "exit 1, not %d", r.code);
    cr_expect(strstr(r.err, "cannot connect") != NULL, "it says so: '%s'", r.err);
    cr_expect(strstr(r.out, "ready") == NULL, "never ready");
    result_free(&r);
}
