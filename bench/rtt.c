/*
 * `mmbench rtt`: the daemon's control-plane round trip against the kernel's
 * floor, and how many clients one daemon holds at what idle cost.
 *
 * Scenario "rtt". System "mm": one daemon (capacity 4 GiB) and a raw
 * protocol client (socket + HELLO for a 1 GiB region, 512 chunks; the four
 * fds of the reply are kept and closed at the end). A sample is one
 * MM_MSG_INSTALL of one chunk (k = 0, 1, 2, ... of the region: every chunk of
 * a new region starts reclaimed, so each is a real grant), timed from
 * sendmsg until the MM_MSG_INSTALL_REPLY granting it (count 1) is received.
 * The client's populate is not included (nothing is mapped). When a region's
 * chunks run out, a fresh raw client is opened and the old one says goodbye,
 * outside the timed window, so granted memory never approaches capacity and
 * no install has to reclaim. System "echo": a forked child echoing messages
 * of the same size (one-chunk install, 28 bytes) on a SOCK_SEQPACKET
 * socketpair; the parent sends and waits for each echo with the same
 * sendmsg/recvmsg calls as the mm client. Both are measured with pinned
 * CPUs, in two placements per repetition (extra key "cpus"): 2 = the client
 * (mmbench) on one CPU, the daemon's threads or the echo child on another;
 * 1 = all on the client's CPU (see struct rtt_cpus for why). Within each,
 * after a short untimed warm-up, batches of RTT_BATCH mm samples and
 * RTT_BATCH echo samples alternate until each has its samples (2000,
 * --quick 500). Rows, per placement: rtt_us (median over repetitions of
 * each repetition's median) for both systems, with the extra keys "p99_ns"
 * (median over repetitions of each repetition's 99th percentile, in ns:
 * extra keys are integers) and "samples" (per repetition); rtt_vs_echo
 * (system "mm", the median of the per-repetition ratios of the medians).
 * Goal: rtt_vs_echo <= 1.5 in every placement. A CPU busy with other work
 * inflates both systems alike in the two-CPU placement.
 *
 * Scenario "scale". One daemon (capacity 4 GiB) and N = 1000 clients opened
 * with mm_client_open (2 MiB regions, no MM_CLIENT_THREAD) from
 * SCALE_PROCESSES = 4 forked processes (250 connections each, not 1000
 * separate processes), each raising RLIMIT_NOFILE to its hard limit first (a
 * client holds 5 fds in its process, the daemon about 6 per client). Each
 * client allocates and touches one frame, so it holds one granted, populated
 * chunk. With all of them held, the daemon's CPU time is read over 5 s (2 s
 * with --quick) from the sum of its threads' /proc/PID/task/TID/schedstat
 * (run time in ns; /proc/PID/stat utime+stime, in 10 ms ticks, when
 * schedstat is missing), then `mmctl --json status` must show every client.
 * Rows: clients (N the daemon held, confirmed by status; extra keys
 * "processes", "asked", "open_ms"), idle_cpu_pct (percent of one CPU; extra
 * key "window_ms"). Goal: clients >= 1000.
 *
 * The goals are reported ("goal met" / "goal NOT met"), not enforced: the
 * subcommand returns 0 when the measurements ran, else a negative errno.
 * Every forked child gets PR_SET_PDEATHSIG(SIGKILL) and is reaped on every
 * path.
 */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "platform.h"
#include "wire.h"

#define RTT_CAPACITY      "4G"
#define RTT_REGION_BYTES  (1ull << 30) /* 512 chunks per raw client */
#define RTT_SAMPLES       2000
#define RTT_SAMPLES_QUICK 500
#define RTT_BATCH         100
#define RTT_WARMUP        50
#define RTT_GOAL_RATIO    1.5

#define SCALE_CAPACITY     "4G"
#define SCALE_CLIENTS      1000
#define SCALE_PROCESSES    4
#define SCALE_REGION_BYTES MM_CHUNK_SIZE
#define SCALE_WINDOW_MS    5000
#define SCALE_WINDOW_QUICK 2000
#define SCALE_SETTLE_MS    300
#define SCALE_OPEN_TIMEOUT 120000 /* ms for all processes to report */
#define SCALE_EXIT_TIMEOUT 30000
#define SCALE_GOAL_CLIENTS 1000

/* ---- Small helpers ------------------------------------------------------ */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of n samples, sorting them in place. */
static double quantile_sorted(double *v, size_t n, double q)
{
    size_t i;

    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    i = (size_t)(q * (double)n);
    return v[i < n ? i : n - 1];
}

/*
 * Fork a child that dies with the parent. Returns the pid in the parent, 0
 * in the child (which has already checked that its parent is still there),
 * or a negative errno.
 */
static pid_t fork_bound(void)
{
    pid_t parent = getpid();
    pid_t pid;

    fflush(NULL); /* Buffered output must not be written twice. */
    pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
    }
    return pid;
}

/* Reap a forked child, killing it after timeout_ms. 0 if it exited 0. */
static int reap(pid_t pid, int timeout_ms)
{
    mm_proc_t p = {.pid = pid, .out_fd = -1};
    int st = 0;
    int rc = mm__proc_wait(&p, timeout_ms, &st);

    if (rc < 0)
        return rc;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

/* ---- Raw protocol client ---------------------------------------------- */

struct raw_client {
    int sock;
    int fds[MM_FD_COUNT];
    uint32_t chunk_count;
    uint32_t next_chunk; /* next chunk to install */
    uint32_t seq;
};

static void raw_close(struct raw_client *rc)
{
    if (rc->sock >= 0) {
        mm_msg_bye_t bye;

        mm__msg_init(&bye.hdr, MM_MSG_BYE, sizeof(bye), ++rc->seq);
        (void)mm__send_msg(rc->sock, &bye, sizeof(bye), NULL, 0);
        close(rc->sock);
    }
    for (int i = 0; i < MM_FD_COUNT; i++)
        if (rc->fds[i] >= 0)
            close(rc->fds[i]);
    rc->sock = -1;
    for (int i = 0; i < MM_FD_COUNT; i++)
        rc->fds[i] = -1;
}

static int raw_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    int fd;

    if (len >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, len + 1);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int err = -errno;

        close(fd);
        return err;
    }
    return fd;
}

/* Connect and say hello for a region of region_bytes. */
static int raw_open(struct raw_client *rc, const char *path, uint64_t region_bytes)
{
    union {
        mm_msg_hello_reply_t r;
        mm_msg_error_t e;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    mm_msg_hello_t m = {0};
    int nfds = 0, type, err;
    ssize_t n;

    rc->sock = -1;
    for (int i = 0; i < MM_FD_COUNT; i++)
        rc->fds[i] = -1;
    rc->seq = 0;
    rc->next_chunk = 0;
    err = raw_connect(path);
    if (err < 0)
        return err;
    rc->sock = err;
    mm__msg_init(&m.hdr, MM_MSG_HELLO, sizeof(m), ++rc->seq);
    snprintf(m.name, sizeof(m.name), "mmbench-rtt");
    m.max_bytes = region_bytes;
    m.weight = 100;
    m.kind = MM_KIND_RUNTIME;
    m.numa_node = -1;
    err = mm__send_msg(rc->sock, &m, sizeof(m), NULL, 0);
    if (err < 0)
        goto fail;
    n = mm__recv_msg(rc->sock, u.buf, sizeof(u.buf), rc->fds, MM_FD_COUNT, &nfds);
    if (n <= 0) {
        err = n == 0 ? -ECONNRESET : (int)n;
        goto fail;
    }
    type = mm__msg_check(u.buf, (size_t)n);
    if (type == MM_MSG_ERROR)
        err = u.e.status < 0 ? u.e.status : -EPROTO;
    else if (type != MM_MSG_HELLO_REPLY || u.r.hdr.seq != m.hdr.seq)
        err = type < 0 ? type : -EPROTO;
    else if (u.r.status < 0)
        err = u.r.status;
    else if (nfds != MM_FD_COUNT || u.r.region_bytes != region_bytes)
        err = -EPROTO;
    if (err < 0)
        goto fail;
    rc->chunk_count = u.r.chunk_count;
    return 0;
fail:
    raw_close(rc);
    return err;
}

/* One timed install of the next chunk: *ns from send to the grant. */
static int raw_install(struct raw_client *rc, uint64_t *ns)
{
    union {
        mm_msg_install_reply_t r;
        mm_msg_error_t e;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    mm_msg_install_t m;
    uint32_t len = mm__msg_install_length(1), chunk = rc->next_chunk;
    uint64_t t0, t1;
    int nfds, type, err;
    ssize_t n;

    mm__msg_init(&m.hdr, MM_MSG_INSTALL, len, ++rc->seq);
    m.slot = 0;
    m.count = 1;
    m.chunks[0] = chunk;
    t0 = mm__now_ns();
    err = mm__send_msg(rc->sock, &m, len, NULL, 0);
    if (err < 0)
        return err;
    n = mm__recv_msg(rc->sock, u.buf, sizeof(u.buf), NULL, 0, &nfds);
    t1 = mm__now_ns();
    if (n <= 0)
        return n == 0 ? -ECONNRESET : (int)n;
    type = mm__msg_check(u.buf, (size_t)n);
    if (type == MM_MSG_ERROR)
        return u.e.status < 0 ? u.e.status : -EPROTO;
    if (type != MM_MSG_INSTALL_REPLY || u.r.hdr.seq != m.hdr.seq)
        return type < 0 ? type : -EPROTO;
    if (u.r.count != 1 || u.r.chunks[0] != chunk)
        return u.r.status < 0 ? u.r.status : -ENOMEM;
    rc->next_chunk++;
    *ns = t1 - t0;
    return 0;
}

/* The mm side of the rtt scenario: a daemon and its current raw client. */
struct rtt_mm {
    mm_bench_daemon_t d;
    struct raw_client rc;
    bool started;
};

/* One sample; a fresh region (outside the timing) when this one is used up. */
static int rtt_mm_sample(struct rtt_mm *mm, double *us)
{
    uint64_t ns;
    int err;

    if (mm->rc.next_chunk >= mm->rc.chunk_count) {
        struct raw_client fresh;

        err = raw_open(&fresh, mm->d.sock, RTT_REGION_BYTES);
        if (err < 0) {
            fprintf(stderr, "mmbench rtt: opening a raw client: %s\n", mm_strerror(err));
            return err;
        }
        raw_close(&mm->rc);
        mm->rc = fresh;
    }
    err = raw_install(&mm->rc, &ns);
    if (err < 0) {
        fprintf(stderr, "mmbench rtt: install of chunk %u: %s\n", mm->rc.next_chunk,
                mm_strerror(err));
        return err;
    }
    *us = (double)ns / 1e3;
    return 0;
}

/* ---- Echo floor --------------------------------------------------------- */

struct rtt_echo {
    int sock; /* parent's end */
    pid_t pid;
};

static void echo_child(int fd)
{
    union {
        mm_msg_hdr_t hdr;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;

    for (;;) {
        ssize_t n = recv(fd, u.buf, sizeof(u.buf), 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(n == 0 ? 0 : 1);
        if (send(fd, u.buf, (size_t)n, MSG_NOSIGNAL) != n)
            _exit(1);
    }
}

static int echo_start(struct rtt_echo *e)
{
    int sv[2];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    pid = fork_bound();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return (int)pid;
    }
    if (pid == 0) {
        close(sv[0]);
        echo_child(sv[1]);
    }
    close(sv[1]);
    e->sock = sv[0];
    e->pid = pid;
    return 0;
}

/* Close the parent's end (the child sees end of stream) and reap it. */
static void echo_stop(struct rtt_echo *e)
{
    if (e->sock >= 0)
        close(e->sock);
    e->sock = -1;
    if (e->pid > 0 && reap(e->pid, 5000) < 0)
        fprintf(stderr, "mmbench rtt: echo child did not exit cleanly\n");
    e->pid = 0;
}

/* One echo of a message as long as a one-chunk install request. */
static int echo_sample(struct rtt_echo *e, double *us)
{
    union {
        mm_msg_install_t m;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u, back;
    uint32_t len = mm__msg_install_length(1);
    uint64_t t0, t1;
    int nfds, err;
    ssize_t n;

    mm__msg_init(&u.m.hdr, MM_MSG_INSTALL, len, 1);
    u.m.slot = 0;
    u.m.count = 1;
    u.m.chunks[0] = 0;
    t0 = mm__now_ns();
    err = mm__send_msg(e->sock, u.buf, len, NULL, 0);
    if (err == 0) {
        n = mm__recv_msg(e->sock, back.buf, sizeof(back.buf), NULL, 0, &nfds);
        if (n != (ssize_t)len)
            err = n < 0 ? (int)n : -EPROTO;
    }
    t1 = mm__now_ns();
    if (err < 0) {
        fprintf(stderr, "mmbench rtt: echo: %s\n", mm_strerror(err));
        return err;
    }
    *us = (double)(t1 - t0) / 1e3;
    return 0;
}

/* ---- Scenario rtt --------------------------------------------------------- */

/*
 * Where the processes run. Unpinned, the scheduler puts the echo child on the
 * client's CPU in some repetitions and on the other CPU in others, and a
 * round trip costs about 15 us on one CPU and 25 us across two here: the
 * ratio then measures placement luck. So both sides are pinned, and each
 * repetition measures both placements: "cpus" 2 (client on one CPU, daemon
 * or echo child on another) and "cpus" 1 (all on the client's CPU).
 */
#define RTT_PLACEMENTS 2

struct rtt_cpus {
    cpu_set_t orig; /* mmbench's own affinity, restored at the end */
    int client_cpu;
    int server_cpu[RTT_PLACEMENTS]; /* -1: placement not available */
};

static int pin_task(pid_t tid, int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(tid, sizeof(set), &set) < 0 ? -errno : 0;
}

/* Pin every thread of process pid to cpu. */
static int pin_process(pid_t pid, int cpu)
{
    char path[64];
    struct dirent *de;
    int rc = 0;
    DIR *dir;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    dir = opendir(path);
    if (dir == NULL)
        return -errno;
    while (rc == 0 && (de = readdir(dir)) != NULL)
        if (de->d_name[0] != '.')
            rc = pin_task((pid_t)atoi(de->d_name), cpu);
    closedir(dir);
    return rc;
}

static int rtt_cpus_init(struct rtt_cpus *c)
{
    int found = 0, first = -1, second = -1;

    if (sched_getaffinity(0, sizeof(c->orig), &c->orig) < 0)
        return -errno;
    for (int i = 0; i < CPU_SETSIZE && found < 2; i++) {
        if (!CPU_ISSET(i, &c->orig))
            continue;
        if (found++ == 0)
            first = i;
        else
            second = i;
    }
    c->client_cpu = first;
    c->server_cpu[0] = second; /* -1 on a one-CPU machine */
    c->server_cpu[1] = first;
    return first >= 0 ? 0 : -ENODEV;
}

static int rtt_place(const struct rtt_cpus *c, int placement, pid_t daemon, pid_t echo)
{
    int rc = pin_task(0, c->client_cpu);

    if (rc == 0)
        rc = pin_process(daemon, c->server_cpu[placement]);
    if (rc == 0)
        rc = pin_task(echo, c->server_cpu[placement]);
    if (rc < 0)
        fprintf(stderr, "mmbench rtt: cannot pin to CPUs: %s\n", mm_strerror(rc));
    return rc;
}

static int placement_cpus(int placement)
{
    return placement == 0 ? 2 : 1;
}

struct rtt_rep {
    bool measured;
    double mm_med, mm_p99, echo_med, echo_p99;
};

/* One placement of one repetition: a short untimed warm-up, then batches of
 * mm and echo samples, alternating. */
static int rtt_run(struct rtt_mm *mm, struct rtt_echo *e, size_t samples, double *mm_us,
                   double *echo_us, struct rtt_rep *out)
{
    size_t nm = 0, ne = 0;
    double us;
    int err = 0;

    for (int i = 0; err == 0 && i < RTT_WARMUP; i++) {
        err = rtt_mm_sample(mm, &us);
        if (err == 0)
            err = echo_sample(e, &us);
    }
    while (err == 0 && (nm < samples || ne < samples)) {
        for (size_t i = 0; err == 0 && i < RTT_BATCH && nm < samples; i++)
            err = rtt_mm_sample(mm, &mm_us[nm++]);
        for (size_t i = 0; err == 0 && i < RTT_BATCH && ne < samples; i++)
            err = echo_sample(e, &echo_us[ne++]);
    }
    if (err < 0)
        return err;
    out->mm_med = mm__results_median(mm_us, samples);
    out->echo_med = mm__results_median(echo_us, samples);
    out->mm_p99 = quantile_sorted(mm_us, samples, 0.99);
    out->echo_p99 = quantile_sorted(echo_us, samples, 0.99);
    out->measured = true;
    return 0;
}

/* Rows of one placement over its measured repetitions; *ratio_out gets the
 * median ratio (0 when nothing was measured). */
static int rtt_report(mm_results_t *res, const struct rtt_rep *r, int reps, int placement,
                      size_t samples, double *ratio_out)
{
    size_t nr = (size_t)reps;
    double *v = calloc(nr * 5, sizeof(*v));
    double *mm_med = v, *mm_p99 = v + nr, *echo_med = v + 2 * nr, *echo_p99 = v + 3 * nr,
           *ratio = v + 4 * nr;
    mm_result_key_t keys[3] = {
        {"cpus", placement_cpus(placement)}, {"samples", (int64_t)samples}, {"p99_ns", 0}};
    size_t n = 0;
    int rc = 0;

    *ratio_out = 0;
    if (v == NULL)
        return -ENOMEM;
    for (int i = 0; i < reps; i++) {
        const struct rtt_rep *x = &r[(size_t)i * RTT_PLACEMENTS + (size_t)placement];

        if (!x->measured)
            continue;
        mm_med[n] = x->mm_med;
        mm_p99[n] = x->mm_p99;
        echo_med[n] = x->echo_med;
        echo_p99[n] = x->echo_p99;
        ratio[n++] = x->echo_med > 0 ? x->mm_med / x->echo_med : 0;
    }
    if (n > 0) {
        keys[2].value = (int64_t)(mm__results_median(mm_p99, n) * 1e3 + 0.5);
        rc = mm__results_add_median(res, &(mm_result_row_t){"rtt", "mm", "rtt_us", "us"}, mm_med, n,
                                    keys, 3);
        keys[2].value = (int64_t)(mm__results_median(echo_p99, n) * 1e3 + 0.5);
        if (rc == 0)
            rc = mm__results_add_median(res, &(mm_result_row_t){"rtt", "echo", "rtt_us", "us"},
                                        echo_med, n, keys, 3);
        if (rc == 0)
            rc = mm__results_add_median(
                res, &(mm_result_row_t){"rtt", "mm", "rtt_vs_echo", "ratio"}, ratio, n, keys, 1);
        *ratio_out = mm__results_median(ratio, n);
        printf("rtt (%s): mm %.1f us vs echo %.1f us = %.2fx: goal <= %.1fx %s\n",
               placement == 0 ? "client and server on two CPUs" : "all on one CPU",
               mm__results_median(mm_med, n), mm__results_median(echo_med, n), *ratio_out,
               RTT_GOAL_RATIO, *ratio_out <= RTT_GOAL_RATIO ? "met" : "NOT met");
    }
    free(v);
    return rc;
}

static int rtt_measure(struct rtt_mm *mm, struct rtt_echo *e, const struct rtt_cpus *cpus, int reps,
                       size_t samples, struct rtt_rep *r)
{
    double *mm_us = calloc(samples, sizeof(double)), *echo_us = calloc(samples, sizeof(double));
    int err = mm_us && echo_us ? 0 : -ENOMEM;

    for (int i = 0; err == 0 && i < reps; i++) {
        for (int p = 0; err == 0 && p < RTT_PLACEMENTS; p++) {
            struct rtt_rep *x = &r[(size_t)i * RTT_PLACEMENTS + (size_t)p];

            if (cpus->server_cpu[p] < 0)
                continue;
            err = rtt_place(cpus, p, mm->d.proc.pid, e->pid);
            if (err == 0)
                err = rtt_run(mm, e, samples, mm_us, echo_us, x);
            if (err == 0)
                fprintf(stderr,
                        "mmbench rtt: rep %d/%d, CPUs %d/%d: mm %.1f us (p99 %.1f), echo %.1f "
                        "us (p99 %.1f), %.2fx\n",
                        i + 1, reps, cpus->client_cpu, cpus->server_cpu[p], x->mm_med, x->mm_p99,
                        x->echo_med, x->echo_p99, x->mm_med / x->echo_med);
        }
    }
    free(mm_us);
    free(echo_us);
    return err;
}

static int bench_rtt(const mm_bench_opts_t *opts, mm_results_t *res)
{
    int reps = opts->reps > 0 ? opts->reps : opts->quick ? 3 : 5;
    size_t samples = opts->quick ? RTT_SAMPLES_QUICK : RTT_SAMPLES;
    struct rtt_mm mm = {.rc = {.sock = -1, .fds = {-1, -1, -1, -1}}};
    struct rtt_echo e = {.sock = -1};
    struct rtt_rep *r = calloc((size_t)reps * RTT_PLACEMENTS, sizeof(*r));
    struct rtt_cpus cpus;
    bool met = true, any = false;
    int err;

    if (r == NULL)
        return -ENOMEM;
    err = rtt_cpus_init(&cpus);
    if (err < 0) {
        fprintf(stderr, "mmbench rtt: cannot read the CPU affinity: %s\n", mm_strerror(err));
        free(r);
        return err;
    }
    fprintf(stderr, "mmbench rtt: setup: daemon (capacity %s), echo child\n", RTT_CAPACITY);
    err = mm__bench_daemon_start(&mm.d, RTT_CAPACITY, "warn");
    if (err < 0)
        goto out;
    mm.started = true;
    err = echo_start(&e);
    if (err < 0)
        fprintf(stderr, "mmbench rtt: cannot start the echo child: %s\n", mm_strerror(err));
    else
        err = rtt_measure(&mm, &e, &cpus, reps, samples, r);
out:
    fprintf(stderr, "mmbench rtt: teardown\n");
    echo_stop(&e);
    raw_close(&mm.rc);
    if (mm.started && mm__bench_daemon_stop(&mm.d) < 0)
        fprintf(stderr, "mmbench rtt: mmsrv did not exit cleanly\n");
    if (sched_setaffinity(0, sizeof(cpus.orig), &cpus.orig) < 0)
        fprintf(stderr, "mmbench rtt: cannot restore the CPU affinity: %s\n", strerror(errno));
    for (int p = 0; p < RTT_PLACEMENTS; p++) {
        double ratio;
        int rc;

        if (cpus.server_cpu[p] < 0)
            continue;
        rc = rtt_report(res, r, reps, p, samples, &ratio);
        any = any || ratio > 0;
        met = met && ratio > 0 && ratio <= RTT_GOAL_RATIO;
        if (err == 0)
            err = rc;
    }
    if (cpus.server_cpu[0] < 0)
        printf("rtt: one CPU only: the two-CPU placement was not measured\n");
    if (any)
        printf("rtt: goal mm <= %.1fx echo in every placement: %s\n", RTT_GOAL_RATIO,
               met ? "met" : "NOT met");
    free(r);
    return err;
}

/* ---- Scenario scale ------------------------------------------------------ */

/* What a client process reports once it has opened its clients. */
struct scale_report {
    int32_t opened;
    int32_t err; /* why it stopped short, or 0 */
};

struct scale_proc {
    pid_t pid;
    int report_fd;  /* read end: the child's scale_report */
    int release_fd; /* write end: closed to let the child release */
};

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* In a client process: open n clients, each with one frame, report, hold
 * them until the release pipe closes, then close them all. */
static void scale_child(const char *sock, int first, int n, int report_fd, int release_fd)
{
    mm_client_t **c = calloc((size_t)n, sizeof(mm_client_t *));
    struct scale_report rep = {0, 0};
    char name[MM_NAME_MAX], byte;

    if (c == NULL)
        rep.err = -ENOMEM;
    if (rep.err == 0)
        rep.err = mm__raise_nofile();
    for (int i = 0; rep.err == 0 && i < n; i++) {
        mm_client_opts_t o;
        void *p;
        int err;

        mm_client_opts_init(&o);
        snprintf(name, sizeof(name), "scale-%d", first + i);
        o.name = name;
        o.max_bytes = SCALE_REGION_BYTES;
        err = mm_client_open(sock, &o, &c[i]);
        if (err < 0) {
            rep.err = err;
            break;
        }
        rep.opened++;
        err = mm_alloc(c[i], MM_FRAME_SIZE, 0, &p);
        if (err < 0) {
            rep.err = err;
            break;
        }
        *(volatile char *)p = 1;
    }
    if (write_all(report_fd, &rep, sizeof(rep)) < 0)
        _exit(1);
    while (read(release_fd, &byte, 1) < 0 && errno == EINTR)
        ;
    for (int i = 0; i < rep.opened; i++)
        mm_client_close(c[i]);
    _exit(0);
}

/* Start one client process for clients [first, first + n). */
static int scale_spawn(const char *sock, int first, int n, struct scale_proc *p)
{
    int rep[2], rel[2];
    pid_t pid;

    if (pipe2(rep, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(rel, O_CLOEXEC) < 0) {
        int err = -errno;

        close(rep[0]);
        close(rep[1]);
        return err;
    }
    pid = fork_bound();
    if (pid == 0) {
        close(rep[0]);
        close(rel[1]);
        scale_child(sock, first, n, rep[1], rel[0]);
    }
    close(rep[1]);
    close(rel[0]);
    if (pid < 0) {
        close(rep[0]);
        close(rel[1]);
        return (int)pid;
    }
    *p = (struct scale_proc){pid, rep[0], rel[1]};
    return 0;
}

/* Wait for a process's report; a process that dies reports nothing. */
static int scale_wait_report(struct scale_proc *p, uint64_t deadline_ns, struct scale_report *r)
{
    size_t got = 0;

    while (got < sizeof(*r)) {
        uint64_t now = mm__now_ns();
        struct pollfd pfd = {.fd = p->report_fd, .events = POLLIN};
        int ms = now >= deadline_ns ? 0 : (int)((deadline_ns - now) / 1000000u);
        ssize_t n;

        if (ms == 0)
            return -ETIMEDOUT;
        if (poll(&pfd, 1, ms) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        n = read(p->report_fd, (char *)r + got, sizeof(*r) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            continue;
        if (n <= 0)
            return n == 0 ? -ECHILD : -errno;
        got += (size_t)n;
    }
    return 0;
}

/* Release every process's clients and reap it. */
static void scale_release(struct scale_proc *p, int n)
{
    for (int i = 0; i < n; i++) {
        close(p[i].release_fd);
        close(p[i].report_fd);
    }
    for (int i = 0; i < n; i++)
        if (reap(p[i].pid, SCALE_EXIT_TIMEOUT) < 0)
            fprintf(stderr, "mmbench scale: client process %d did not exit cleanly\n", i + 1);
}

/* The daemon's CPU time so far in ns: the sum of its threads' schedstat run
 * times, else utime+stime from stat. -1 if neither can be read. */
static int64_t daemon_cpu_ns(pid_t pid, bool *precise)
{
    char path[64];
    int64_t sum = 0;
    bool any = false;
    DIR *dir;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    dir = opendir(path);
    if (dir != NULL) {
        struct dirent *de;

        while ((de = readdir(dir)) != NULL) {
            char p[300];
            unsigned long long run;
            FILE *f;

            if (de->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
            f = fopen(p, "r");
            if (f == NULL)
                continue;
            if (fscanf(f, "%llu", &run) == 1) {
                sum += (int64_t)run;
                any = true;
            }
            fclose(f);
        }
        closedir(dir);
    }
    *precise = any;
    if (any)
        return sum;

    /* Fields 14 and 15 of stat, after the parenthesised command name. */
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    char buf[1024], *p;
    unsigned long long ut, st;
    long hz = sysconf(_SC_CLK_TCK);

    if (f == NULL)
        return -1;
    p = fgets(buf, sizeof(buf), f);
    fclose(f);
    if (p == NULL || (p = strrchr(buf, ')')) == NULL || hz <= 0)
        return -1;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (int64_t)((ut + st) * (1000000000ull / (unsigned long long)hz));
}

/* Clients the daemon says it holds: client_count, else the clients array. */
static int held_clients(const mm_bench_daemon_t *d, uint64_t *held)
{
    json_t *status, *count;
    int rc = mm__bench_ctl_status(d, &status);

    if (rc < 0)
        return rc;
    count = json_object_get(status, "client_count");
    *held = json_is_integer(count) ? mm__bench_json_u64(status, "client_count")
                                   : json_array_size(json_object_get(status, "clients"));
    json_decref(status);
    return 0;
}

/* Measured with every client held. */
static int scale_measure(const mm_bench_daemon_t *d, int window_ms, double *cpu_pct, uint64_t *held)
{
    bool precise0, precise1;
    int64_t c0, c1;
    uint64_t t0, t1;
    int rc;

    sleep_ms(SCALE_SETTLE_MS);
    t0 = mm__now_ns();
    c0 = daemon_cpu_ns(d->proc.pid, &precise0);
    sleep_ms(window_ms);
    c1 = daemon_cpu_ns(d->proc.pid, &precise1);
    t1 = mm__now_ns();
    if (c0 < 0 || c1 < 0 || precise0 != precise1) {
        fprintf(stderr, "mmbench scale: cannot read the daemon's CPU time\n");
        return -EIO;
    }
    *cpu_pct = 100.0 * (double)(c1 - c0) / (double)(t1 - t0);
    fprintf(stderr, "mmbench scale: daemon CPU %.3f%% over %.1f s (%s)\n", *cpu_pct,
            (double)(t1 - t0) / 1e9, precise0 ? "schedstat" : "stat ticks");
    rc = held_clients(d, held);
    if (rc < 0)
        fprintf(stderr, "mmbench scale: mmctl status failed: %s\n", mm_strerror(rc));
    return rc;
}

/* Open the clients from SCALE_PROCESSES processes; *opened gets the total. */
static int scale_open(const mm_bench_daemon_t *d, struct scale_proc *procs, int *nprocs,
                      int *opened)
{
    uint64_t deadline = mm__now_ns() + SCALE_OPEN_TIMEOUT * 1000000ull;
    int err = 0;

    *nprocs = 0;
    *opened = 0;
    for (int i = 0; i < SCALE_PROCESSES; i++) {
        int first = SCALE_CLIENTS * i / SCALE_PROCESSES;
        int n = SCALE_CLIENTS * (i + 1) / SCALE_PROCESSES - first;

        err = scale_spawn(d->sock, first, n, &procs[i]);
        if (err < 0) {
            fprintf(stderr, "mmbench scale: cannot start client process: %s\n", mm_strerror(err));
            return err;
        }
        (*nprocs)++;
    }
    for (int i = 0; i < *nprocs; i++) {
        struct scale_report r;
        int rc = scale_wait_report(&procs[i], deadline, &r);

        if (rc < 0) {
            fprintf(stderr, "mmbench scale: client process %d: %s\n", i + 1, mm_strerror(rc));
            err = err ? err : rc;
            continue;
        }
        *opened += r.opened;
        if (r.err < 0)
            fprintf(stderr, "mmbench scale: client process %d stopped at %d clients: %s\n", i + 1,
                    r.opened, mm_strerror(r.err));
    }
    return err;
}

int mm__bench_scale(const mm_bench_opts_t *opts, mm_results_t *res)
{
    int window_ms = opts->quick ? SCALE_WINDOW_QUICK : SCALE_WINDOW_MS;
    struct scale_proc procs[SCALE_PROCESSES] = {{0}};
    int nprocs = 0, opened = 0, err;
    double cpu_pct = 0;
    uint64_t held = 0, t0, open_ms;
    mm_bench_daemon_t d;

    fprintf(stderr, "mmbench scale: setup: daemon (capacity %s)\n", SCALE_CAPACITY);
    err = mm__bench_daemon_start(&d, SCALE_CAPACITY, "warn");
    if (err < 0)
        return err;
    fprintf(stderr, "mmbench scale: opening %d clients from %d processes\n", SCALE_CLIENTS,
            SCALE_PROCESSES);
    t0 = mm__now_ns();
    err = scale_open(&d, procs, &nprocs, &opened);
    open_ms = (mm__now_ns() - t0) / 1000000u;
    fprintf(stderr, "mmbench scale: %d clients open in %" PRIu64 " ms; idle window %d ms\n", opened,
            open_ms, window_ms);
    if (err == 0)
        err = scale_measure(&d, window_ms, &cpu_pct, &held);
    fprintf(stderr, "mmbench scale: teardown: releasing the clients\n");
    scale_release(procs, nprocs);
    if (mm__bench_daemon_stop(&d) < 0)
        fprintf(stderr, "mmbench scale: mmsrv did not exit cleanly\n");
    if (err < 0)
        return err;
    if (held != (uint64_t)opened)
        fprintf(stderr, "mmbench scale: the daemon lists %" PRIu64 " clients, %d were opened\n",
                held, opened);
    mm_result_key_t ck[] = {
        {"processes", SCALE_PROCESSES}, {"asked", SCALE_CLIENTS}, {"open_ms", (int64_t)open_ms}};
    /* A client counts only when both sides agree it is there. */
    double clients = (double)(held < (uint64_t)opened ? held : (uint64_t)opened);

    err =
        mm__results_add(res, &(mm_result_row_t){"scale", "mm", "clients", "count"}, clients, ck, 3);
    if (err == 0)
        err = mm__results_add(res, &(mm_result_row_t){"scale", "mm", "idle_cpu_pct", "%"}, cpu_pct,
                              &(mm_result_key_t){"window_ms", window_ms}, 1);
    printf("scale: %.0f clients held by one daemon: goal >= %d %s; idle CPU %.2f%% of one CPU\n",
           clients, SCALE_GOAL_CLIENTS, clients >= SCALE_GOAL_CLIENTS ? "met" : "NOT met", cpu_pct);
    return err;
}

int mm__bench_rtt(const mm_bench_opts_t *opts, mm_results_t *res)
{
    int rc = bench_rtt(opts, res);
    int rc_scale = mm__bench_scale(opts, res);

    return rc < 0 ? rc : rc_scale;
}
