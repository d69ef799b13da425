/*
 * The mmbench harness (see bench.h): a throw-away mmsrv in a temp state
 * directory, mmhold clients against it, and mmctl calls against its admin
 * socket. Programs are found with mm__bin_path(); every child is started
 * through procs.c so that it dies with mmbench.
 */
#include "bench.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "admin_client.h"
#include "platform.h"

#define SOCKET_TIMEOUT_MS 10000
#define READY_TIMEOUT_MS  60000
#define CTL_TIMEOUT_MS    10000
#define POLL_INTERVAL_NS  1000000ull

uint64_t mm__bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

uint64_t mm__bench_json_u64(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (json_is_integer(v))
        return json_integer_value(v) < 0 ? 0 : (uint64_t)json_integer_value(v);
    if (json_is_real(v))
        return json_real_value(v) < 0 ? 0 : (uint64_t)json_real_value(v);
    return json_is_true(v) ? 1 : 0;
}

static int bin_path(const char *prog, char *out, size_t cap)
{
    int rc = mm__bin_path(prog, out, cap);

    if (rc < 0)
        fprintf(stderr, "mmbench: cannot find %s: %s\n", prog, mm_strerror(rc));
    return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    /* A leftover entry only wastes /tmp space; keep removing the rest. */
    if (remove(path) < 0)
        fprintf(stderr, "mmbench: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

void mm__bench_rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int daemon_paths(mm_bench_daemon_t *d)
{
    snprintf(d->dir, sizeof(d->dir), "/tmp/mmbench-XXXXXX");
    if (mkdtemp(d->dir) == NULL) {
        int rc = -errno;

        fprintf(stderr, "mmbench: cannot create a temp dir: %s\n", strerror(errno));
        return rc;
    }
    snprintf(d->sock, sizeof(d->sock), "%s/mm.sock", d->dir);
    snprintf(d->admin_sock, sizeof(d->admin_sock), "%s/admin.sock", d->dir);
    return 0;
}

/* Wait for a socket of the daemon, giving up early if the daemon exits. */
static int daemon_wait_socket(mm_bench_daemon_t *d, const char *path)
{
    uint64_t deadline = mm__bench_now_ns() + SOCKET_TIMEOUT_MS * 1000000ull;
    int rc, st;

    do {
        rc = mm__wait_socket(path, 100);
        if (rc != -ETIMEDOUT)
            break;
        if (waitpid(d->proc.pid, &st, WNOHANG) == d->proc.pid) {
            d->proc.pid = 0;
            fprintf(stderr, "mmbench: mmsrv exited before %s appeared\n", path);
            return -ECHILD;
        }
    } while (mm__bench_now_ns() < deadline);
    if (rc < 0)
        fprintf(stderr, "mmbench: mmsrv socket %s: %s\n", path, mm_strerror(rc));
    return rc;
}

/*
 * Wait for the client socket's file without connecting: a probe would show
 * in the daemon's log as a client that left before saying hello. The file
 * exists once bound; mmsrv listens on it before it opens the admin socket,
 * which has already accepted a connection when this is called.
 */
static int wait_socket_file(const char *path)
{
    uint64_t deadline = mm__bench_now_ns() + SOCKET_TIMEOUT_MS * 1000000ull;
    struct stat st;

    while (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        if (mm__bench_now_ns() >= deadline) {
            fprintf(stderr, "mmbench: mmsrv socket %s did not appear\n", path);
            return -ETIMEDOUT;
        }
        sleep_ns(POLL_INTERVAL_NS);
    }
    return 0;
}

int mm__bench_daemon_start(mm_bench_daemon_t *d, const char *capacity, const char *log_level)
{
    return mm__bench_daemon_start_with(d, capacity, log_level, NULL);
}

/* Spawn mmsrv on d->dir and wait for its sockets; with fresh, d->dir was
 * made for it and is removed on failure. */
static int daemon_spawn(mm_bench_daemon_t *d, const char *capacity, const char *log_level,
                        const char *const extra[], bool fresh);

int mm__bench_daemon_start_with(mm_bench_daemon_t *d, const char *capacity, const char *log_level,
                                const char *const extra[])
{
    return daemon_spawn(d, capacity, log_level, extra, true);
}

int mm__bench_daemon_restart(mm_bench_daemon_t *d, const char *capacity, const char *log_level,
                             const char *const extra[])
{
    if (d->proc.pid > 0)
        return -EBUSY;
    return daemon_spawn(d, capacity, log_level, extra, false);
}

int mm__bench_daemon_kill(mm_bench_daemon_t *d, int sig)
{
    int st = 0;
    if (d->proc.pid <= 0)
        return -ECHILD;
    mm__proc_signal(&d->proc, sig);
    int rc = mm__proc_wait(&d->proc, 10000, &st);
    d->proc.pid = 0;
    return rc;
}

static int daemon_spawn(mm_bench_daemon_t *d, const char *capacity, const char *log_level,
                        const char *const extra[], bool fresh)
{
    enum { MAX_EXTRA = 8 };
    char prog[4096];
    char *argv[9 + MAX_EXTRA] = {prog,   "--foreground", "--state-dir",
                                 d->dir, "--capacity",   (char *)capacity};
    int rc, argc = 6;

    if (log_level != NULL) {
        argv[argc++] = "--log-level";
        argv[argc++] = (char *)log_level;
    }
    for (int i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (i == MAX_EXTRA)
            return -E2BIG;
        argv[argc++] = (char *)extra[i];
    }
    argv[argc] = NULL;
    memset(&d->proc, 0, sizeof(d->proc));
    d->proc.out_fd = -1;
    rc = bin_path("mmsrv", prog, sizeof(prog));
    if (rc < 0)
        return rc;
    if (fresh) {
        rc = daemon_paths(d);
        if (rc < 0)
            return rc;
    }
    rc = mm__proc_spawn(&d->proc, argv, false);
    if (rc < 0) {
        fprintf(stderr, "mmbench: cannot start mmsrv: %s\n", mm_strerror(rc));
        goto fail;
    }
    rc = daemon_wait_socket(d, d->admin_sock);
    if (rc == 0)
        rc = wait_socket_file(d->sock);
    if (rc == 0)
        return 0;
    if (d->proc.pid > 0)
        mm__proc_wait(&d->proc, 0, NULL); /* Kills it: it is of no use. */
fail:
    if (fresh)
        mm__bench_rm_rf(d->dir);
    return rc;
}

int mm__bench_daemon_stop(mm_bench_daemon_t *d)
{
    int rc = 0, st = 0;

    if (d->proc.pid > 0) {
        mm__proc_signal(&d->proc, SIGTERM);
        rc = mm__proc_wait(&d->proc, 10000, &st);
        if (rc == -ETIMEDOUT)
            fprintf(stderr, "mmbench: mmsrv ignored SIGTERM for 10 s; killed\n");
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = -ECHILD;
    }
    mm__bench_rm_rf(d->dir);
    return rc;
}

int mm__bench_start_ready(mm_proc_t *p, const char *prog_name, const char *const args[])
{
    char prog[4096];
    char *argv[24] = {prog};
    size_t n = 1;
    int rc;

    rc = bin_path(prog_name, prog, sizeof(prog));
    if (rc < 0)
        return rc;
    for (; args != NULL && *args != NULL; args++) {
        if (n + 1 >= sizeof(argv) / sizeof(argv[0]))
            return -E2BIG;
        argv[n++] = (char *)*args;
    }
    argv[n] = NULL;
    rc = mm__proc_spawn(p, argv, true);
    if (rc < 0) {
        fprintf(stderr, "mmbench: cannot start %s: %s\n", prog_name, mm_strerror(rc));
        return rc;
    }
    rc = mm__proc_wait_line(p, "ready", READY_TIMEOUT_MS);
    if (rc < 0) {
        fprintf(stderr, "mmbench: %s did not get ready: %s\n", prog_name, mm_strerror(rc));
        mm__proc_wait(p, 0, NULL); /* Kills it if it is still running. */
    }
    return rc;
}

int mm__bench_hold_start(mm_proc_t *p, const mm_bench_daemon_t *d, const char *name,
                         const char *hold, const char *free_size)
{
    const char *args[] = {"--socket", d->sock,  "--name",  name, "--hold",
                          hold,       "--free", free_size, NULL};
    return mm__bench_start_ready(p, "mmhold", args);
}

int mm__bench_hold_stop(mm_proc_t *p, bool *intact)
{
    int st = 0, rc;

    *intact = false;
    rc = mm__proc_signal(p, SIGTERM);
    if (rc < 0 && rc != -ESRCH)
        return rc;
    rc = mm__proc_wait(p, READY_TIMEOUT_MS, &st);
    if (rc < 0)
        return rc;
    *intact = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (WIFSIGNALED(st))
        fprintf(stderr, "mmbench: client %d was killed by signal %d\n", (int)p->pid, WTERMSIG(st));
    return 0;
}

int mm__bench_ctl(const mm_bench_daemon_t *d, const char *const args[], char **out)
{
    char prog[4096];
    char *argv[16] = {prog, "--admin-socket", (char *)d->admin_sock};
    size_t n = 3;
    int rc, st = 0;

    rc = bin_path("mmctl", prog, sizeof(prog));
    if (rc < 0)
        return rc;
    for (; *args != NULL; args++) {
        if (n + 1 >= sizeof(argv) / sizeof(argv[0]))
            return -E2BIG;
        argv[n++] = (char *)*args;
    }
    if (n == 3)
        return -EINVAL;
    argv[n] = NULL;
    rc = mm__proc_run(argv, out, CTL_TIMEOUT_MS, &st);
    if (rc == 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
        fprintf(stderr, "mmbench: mmctl %s %s failed (%s %d)\n", argv[3], argv[4] ? argv[4] : "",
                WIFEXITED(st) ? "exit status" : "signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        if (out != NULL)
            free(*out);
        rc = -EIO;
    } else if (rc < 0) {
        fprintf(stderr, "mmbench: mmctl %s: %s\n", argv[3], mm_strerror(rc));
    }
    return rc;
}

int mm__bench_admin(const mm_bench_daemon_t *d, const char *request, json_t **reply)
{
    json_error_t err;
    char *out;
    int rc = mm__admin_request(d->admin_sock, request, &out);
    if (rc < 0) {
        fprintf(stderr, "mmbench: admin socket %s: %s\n", d->admin_sock, mm_strerror(rc));
        return rc;
    }
    *reply = json_loads(out, 0, &err);
    free(out);
    if (*reply == NULL || !json_is_object(*reply)) {
        fprintf(stderr, "mmbench: admin reply to %.*s is not a JSON object\n",
                (int)strcspn(request, "\n"), request);
        json_decref(*reply);
        return -EPROTO;
    }
    json_t *error = json_object_get(*reply, "error");
    if (error) {
        fprintf(stderr, "mmbench: %s\n", json_string_value(error));
        json_decref(*reply);
        return -EIO;
    }
    return 0;
}

int mm__bench_ctl_status(const mm_bench_daemon_t *d, json_t **status)
{
    return mm__bench_admin(d, "status\n", status);
}

int mm__bench_wait_resident(const mm_bench_daemon_t *d, uint64_t limit_bytes, int timeout_ms,
                            json_t **status)
{
    uint64_t deadline = mm__bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    json_t *st;
    int rc;

    for (;;) {
        rc = mm__bench_ctl_status(d, &st);
        if (rc < 0)
            return rc;
        if (mm__bench_json_u64(st, "resident_bytes") <= limit_bytes) {
            *status = st;
            return 0;
        }
        json_decref(st);
        if (mm__bench_now_ns() >= deadline)
            return -ETIMEDOUT;
        sleep_ns(POLL_INTERVAL_NS);
    }
}

double mm__bench_punch_floor_ms(uint64_t held_bytes, uint64_t cut_bytes)
{
    int fd = mm__memfd_create_sealed("mmbench-floor", held_bytes);
    double ms = -1;
    if (fd < 0)
        return ms;
    void *p = mmap(NULL, held_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
        if (mm__populate_write(p, held_bytes) == 0) {
            uint64_t t0 = mm__bench_now_ns();
            if (mm__punch(fd, 0, cut_bytes) == 0)
                ms = (double)(mm__bench_now_ns() - t0) / 1e6;
        }
        munmap(p, held_bytes);
    }
    close(fd);
    return ms;
}
