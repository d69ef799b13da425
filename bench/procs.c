/*
 * Child programs for benchmarks and tests (see procs.h): fork+execv with a
 * death signal tied to the parent, line reading from a captured stdout with a
 * deadline, reaping with a kill after a timeout, locating mm's programs and
 * waiting for a daemon's Unix socket. An mm_proc_t owns its pid until reaped
 * and its out_fd until reaped or closed. Errors are negative errno values.
 */
#include "procs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline (never negative); -1 for no deadline. */
static int ms_left(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - now_ms();
    if (left < 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/*
 * Runs in the child between fork and exec: only async-signal-safe calls.
 * The parent is single-threaded by contract, but stays safe regardless.
 */
static void child_exec(char *const argv[], int out_wr, pid_t parent)
{
    sigset_t none;

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        _exit(127);
    /* The parent may have died before prctl took effect. */
    if (getppid() != parent)
        _exit(127);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (out_wr >= 0 && dup2(out_wr, STDOUT_FILENO) < 0)
        _exit(127);
    execv(argv[0], argv);
    _exit(127);
}

int mm__proc_spawn(mm_proc_t *p, char *const argv[], bool capture_stdout)
{
    int fds[2] = {-1, -1};
    pid_t parent = getpid();
    pid_t pid;

    if (p == NULL || argv == NULL || argv[0] == NULL)
        return -EINVAL;
    if (capture_stdout && pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    fflush(NULL); /* Buffered output must not be written twice. */
    pid = fork();
    if (pid < 0) {
        int err = -errno;

        if (capture_stdout) {
            close(fds[0]);
            close(fds[1]);
        }
        return err;
    }
    if (pid == 0)
        child_exec(argv, fds[1], parent);
    if (capture_stdout)
        close(fds[1]);
    p->pid = pid;
    p->out_fd = fds[0];
    p->buf_len = 0;
    return 0;
}

/* Consume one complete line from p->buf; returns 1 if it equals line, 0 if
 * it does not, -EAGAIN if no complete line is buffered. */
static int take_line(mm_proc_t *p, const char *line)
{
    char *nl = memchr(p->buf, '\n', p->buf_len);
    size_t len;
    int match;

    if (nl == NULL) {
        /* A line longer than the buffer cannot be the one awaited: drop it. */
        if (p->buf_len == sizeof(p->buf))
            p->buf_len = 0;
        return -EAGAIN;
    }
    len = (size_t)(nl - p->buf);
    match = strlen(line) == len && memcmp(p->buf, line, len) == 0;
    p->buf_len -= len + 1;
    memmove(p->buf, nl + 1, p->buf_len);
    return match;
}

/* Wait for readable out_fd and append what is there to p->buf. */
static int fill_buf(mm_proc_t *p, int64_t deadline)
{
    struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
    ssize_t n;
    int rc;

    rc = poll(&pfd, 1, ms_left(deadline));
    if (rc < 0)
        return errno == EINTR ? 0 : -errno;
    if (rc == 0)
        return -ETIMEDOUT;
    n = read(p->out_fd, p->buf + p->buf_len, sizeof(p->buf) - p->buf_len);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    if (n == 0)
        return -EPIPE;
    p->buf_len += (size_t)n;
    return 0;
}

int mm__proc_wait_line(mm_proc_t *p, const char *line, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    int rc;

    if (p == NULL || line == NULL || p->out_fd < 0)
        return -EINVAL;
    for (;;) {
        while ((rc = take_line(p, line)) >= 0)
            if (rc == 1)
                return 0;
        rc = fill_buf(p, deadline);
        if (rc < 0)
            return rc;
    }
}

int mm__proc_read_line(mm_proc_t *p, char *out, size_t cap, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);

    if (p == NULL || out == NULL || cap == 0 || p->out_fd < 0)
        return -EINVAL;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->buf_len);

        if (nl != NULL) {
            size_t len = (size_t)(nl - p->buf);
            size_t keep = len < cap - 1 ? len : cap - 1;

            memcpy(out, p->buf, keep);
            out[keep] = '\0';
            p->buf_len -= len + 1;
            memmove(p->buf, nl + 1, p->buf_len);
            return 0;
        }
        if (p->buf_len == sizeof(p->buf))
            p->buf_len = 0; /* longer than any line awaited: dropped */
        int rc = fill_buf(p, deadline);
        if (rc < 0)
            return rc;
    }
}

int mm__proc_signal(const mm_proc_t *p, int sig)
{
    if (p == NULL || p->pid <= 0)
        return -ESRCH;
    if (kill(p->pid, sig) < 0)
        return -errno;
    return 0;
}

static void proc_reaped(mm_proc_t *p)
{
    p->pid = 0;
    if (p->out_fd >= 0)
        close(p->out_fd);
    p->out_fd = -1;
    p->buf_len = 0;
}

/* One non-blocking reap: 1 if reaped, 0 if still running, <0 on error. */
static int try_reap(mm_proc_t *p, int *status)
{
    pid_t r = waitpid(p->pid, status, WNOHANG);

    if (r < 0)
        return errno == EINTR ? 0 : -errno;
    return r == p->pid;
}

int mm__proc_wait(mm_proc_t *p, int timeout_ms, int *status)
{
    int64_t deadline = deadline_after(timeout_ms);
    int st = 0;
    int rc;

    if (p == NULL || p->pid <= 0)
        return -ECHILD;
    while ((rc = try_reap(p, &st)) == 0) {
        if (deadline >= 0 && ms_left(deadline) == 0)
            break;
        sleep_ms(1);
    }
    if (rc == 0) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
            ;
        rc = -ETIMEDOUT;
    } else if (rc == 1) {
        rc = 0;
    }
    if (status != NULL)
        *status = st;
    proc_reaped(p);
    return rc;
}

/* Make room for at least one more byte and the terminating NUL. */
static int grow(char **buf, size_t len, size_t *cap)
{
    char *bigger;

    if (len + 1 < *cap)
        return 0;
    bigger = realloc(*buf, *cap * 2);
    if (bigger == NULL)
        return -ENOMEM;
    *buf = bigger;
    *cap *= 2;
    return 0;
}

/* Wait for fd and read what is there: bytes read, 0 at EOF, <0 on error. */
static ssize_t read_some(int fd, char *dst, size_t room, int64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ssize_t n;
    int rc;

    do {
        rc = poll(&pfd, 1, ms_left(deadline));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return -errno;
    if (rc == 0)
        return -ETIMEDOUT;
    do {
        n = read(fd, dst, room);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/* Read all of fd into a malloc'd NUL-terminated *out until EOF or the
 * deadline. On failure nothing is left allocated. */
static int slurp(int fd, char **out, int64_t deadline)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    ssize_t n;

    if (buf == NULL)
        return -ENOMEM;
    do {
        if (grow(&buf, len, &cap) < 0) {
            free(buf);
            return -ENOMEM;
        }
        n = read_some(fd, buf + len, cap - 1 - len, deadline);
        if (n < 0) {
            free(buf);
            return (int)n;
        }
        len += (size_t)n;
    } while (n > 0);
    buf[len] = '\0';
    *out = buf;
    return 0;
}

/* With out == NULL the child's stdout is inherited instead of captured. */
int mm__proc_run(char *const argv[], char **out, int timeout_ms, int *status)
{
    int64_t deadline = deadline_after(timeout_ms);
    char *text = NULL;
    mm_proc_t p = {.out_fd = -1};
    int rc, wrc;

    rc = mm__proc_spawn(&p, argv, out != NULL);
    if (rc < 0)
        return rc;
    if (out != NULL)
        rc = slurp(p.out_fd, &text, deadline);
    /* On a read error the child is still reaped, killed at once. */
    wrc = mm__proc_wait(&p, rc < 0 ? 0 : ms_left(deadline), status);
    if (rc == 0)
        rc = wrc;
    if (rc < 0) {
        free(text);
        return rc;
    }
    if (out != NULL)
        *out = text;
    return 0;
}

int mm__bin_path(const char *prog, char *out, size_t cap)
{
    const char *dir = getenv("MM_BIN_DIR");
    char self[PATH_MAX];
    int n;

    if (prog == NULL || out == NULL || cap == 0)
        return -EINVAL;
    if (dir == NULL || dir[0] == '\0') {
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        char *slash;

        if (len < 0)
            return -errno;
        self[len] = '\0';
        slash = strrchr(self, '/');
        if (slash == NULL)
            return -ENOENT;
        *slash = '\0';
        dir = self;
    }
    n = snprintf(out, cap, "%s/%s", dir, prog);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    if (access(out, X_OK) < 0)
        return -errno;
    return 0;
}

/* One connect attempt: 0 if accepted, else a negative errno. */
static int try_connect(const struct sockaddr_un *addr, int type)
{
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int mm__wait_socket(const char *path, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int type = SOCK_STREAM;
    int rc;

    if (path == NULL)
        return -EINVAL;
    if (strlen(path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    memcpy(addr.sun_path, path, strlen(path) + 1); /* length checked above */
    for (;;) {
        rc = try_connect(&addr, type);
        if (rc == -EPROTOTYPE && type == SOCK_STREAM) {
            type = SOCK_SEQPACKET; /* A packet socket: retry at once. */
            continue;
        }
        if (rc != -ENOENT && rc != -ECONNREFUSED && rc != -EAGAIN)
            return rc;
        if (deadline >= 0 && ms_left(deadline) == 0)
            return -ETIMEDOUT;
        sleep_ms(10);
    }
}
