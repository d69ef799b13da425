/*
 * Hostile and broken clients against a real mmsrv: a flood of requests,
 * messages of the wrong size, lies in usage reports and revocation answers,
 * a client that never reads its socket or its doorbell, fds passed where none
 * belong, reaching past one's own region, the admin socket as an
 * unprivileged user, and a client that ignores revocations while it keeps
 * touching memory. In every case the daemon must answer with an error or drop
 * that client, keep serving the others within a generous bound, and never
 * crash or block. Cases already in daemon.c and admin.c are not repeated.
 *
 * Each test starts its own daemon in a temp state directory and stops it
 * with SIGTERM at the end, expecting a clean exit (status 0). Children forked
 * here die with the test (PR_SET_PDEATHSIG) and are reaped on every path the
 * test controls. Round-trip figures are logged with cr_log_info so they can
 * be reported; they are bounds, not benchmarks (mmbench rtt measures those).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "bench.h"
#include "common.h"
#include "platform.h"
#include "wire.h"

/* How long the daemon may take to answer anything while it is attacked.
 * Generous: these are liveness checks on a loaded 2-CPU machine, and a
 * daemon that blocks never answers at all. */
#define ANSWER_BOUND_MS 2000
/* Round trip of a well-behaved client during a flood: p99 bound. */
#define RTT_P99_BOUND_MS 200.0
/* How long a bad client's connection may stay open after its bad message. */
#define DROP_BOUND_MS 3000

TestSuite(hostile, .fini = stop_daemon, .timeout = 60);

/* ---- Small helpers -------------------------------------------------------- */

static double ms_since(uint64_t t0_ns)
{
    return (double)(mm__now_ns() - t0_ns) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of n samples, sorting them in place. */
static double quantile(double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)n);
    return v[i < n ? i : n - 1];
}

static pid_t daemon_pid(void)
{
    return daemon_.proc.pid;
}

/* True while the daemon process exists and has not exited. */
static bool daemon_alive(void)
{
    int st;
    return daemon_pid() > 0 && waitpid(daemon_pid(), &st, WNOHANG) == 0;
}

/* A Unix socket address for path (the daemon's paths are short). */
static struct sockaddr_un unix_addr(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path)
        len = sizeof sa.sun_path - 1; /* connect then fails: ENOENT */
    memcpy(sa.sun_path, path, len);
    return sa;
}

/* Fork a child that dies with this test. Returns its pid, 0 in the child. */
static pid_t fork_child(void)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent))
        _exit(127);
    return pid;
}

/* Reap a child, killing it after timeout_ms; its waitpid status. */
static int reap_child(pid_t pid, int timeout_ms)
{
    mm_proc_t p = {.pid = pid, .out_fd = -1};
    int st = 0;
    (void)mm__proc_wait(&p, timeout_ms, &st); /* -ETIMEDOUT: killed; st says so */
    return st;
}

/* Shared memory for a child's counters (MAP_SHARED survives fork). */
static void *shared_page(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
    return p;
}

/* CPU time (user + system) the daemon has used, in ms. */
static double daemon_cpu_ms(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)daemon_pid());
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces): state is
     * field 3, utime 14, stime 15. */
    const char *p = strrchr(buf, ')');
    cr_assert_not_null(p);
    unsigned long long utime = 0, stime = 0;
    cr_assert_eq(
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime), 2);
    return (double)(utime + stime) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* Open fds of the daemon, from /proc/PID/fd. */
static int daemon_fd_count(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)daemon_pid());
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s: %s", path, strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Log what the daemon's fds are (for a failed leak check). */
static void log_daemon_fds(void)
{
    char path[64], link[96], target[256];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)daemon_pid());
    DIR *d = opendir(path);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof link, "%s/%.16s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = '\0';
        cr_log_info("daemon fd %s -> %s", e->d_name, target);
    }
    closedir(d);
}

/*
 * One admin request with a bound, without mmctl: 0 and the whole reply in
 * *out (the caller frees it), -ETIMEDOUT if the daemon did not answer and
 * close within timeout_ms, or another negative errno.
 */
static int admin_ask(const char *path, const char *req, int timeout_ms, char **out)
{
    struct sockaddr_un sa = unix_addr(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    /* A refusing daemon may answer and close before it reads: read anyway. */
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET) {
        int err = -errno;
        close(fd);
        return err;
    }
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    uint64_t deadline = mm__now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int err = 0;
    for (;;) {
        uint64_t now = mm__now_ns();
        if (now >= deadline) {
            err = -ETIMEDOUT;
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            continue; /* the deadline check ends it */
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            cr_assert_not_null(bigger);
            buf = bigger;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno == ECONNRESET ? 0 : -errno; /* a close with data unread */
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (err < 0) {
        free(buf);
        return err;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

/* Status must answer within ANSWER_BOUND_MS; returns the time it took. The
 * reply must be the status object (capacity_bytes in it). */
static double status_answers(const char *when)
{
    uint64_t t0 = mm__now_ns();
    char *reply = NULL;
    int err = admin_ask(daemon_.admin_sock, "status\n", ANSWER_BOUND_MS, &reply);
    double ms = ms_since(t0);
    cr_assert_eq(err, 0, "status answers within %d ms %s: %s", ANSWER_BOUND_MS, when,
                 mm_strerror(err));
    cr_assert(strstr(reply, "\"capacity_bytes\"") != NULL, "status reply %s: %.200s", when, reply);
    free(reply);
    return ms;
}

/* The daemon's entry for client id in status (a new reference), or NULL. */
static json_t *client_entry(uint32_t id)
{
    json_t *st = NULL, *found = NULL, *c;
    size_t i;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "status answers");
    json_array_foreach(json_object_get(st, "clients"), i, c)
    {
        if (mm__bench_json_u64(c, "id") == id)
            found = json_incref(c);
    }
    json_decref(st);
    return found;
}

/* End of a test: the daemon is still there, answers, and exits 0 on
 * SIGTERM (the suite's .fini then finds nothing left to stop). */
static void daemon_survived(void)
{
    cr_assert(daemon_alive(), "mmsrv is still running");
    status_answers("at the end");
    cr_assert_eq(mm__bench_daemon_stop(&daemon_), 0, "mmsrv exits 0 on SIGTERM");
}

/* A daemon that stopped answering would keep .fini waiting 10 s for
 * SIGTERM: kill it at once and fail. */
static void fail_hung(const char *what)
{
    if (daemon_pid() > 0)
        (void)mm__proc_signal(&daemon_.proc, SIGKILL);
    cr_assert_fail("mmsrv stopped answering %s", what);
}

/* ---- Raw protocol clients --------------------------------------------------
 *
 * libmm refuses to misbehave, so the hostile clients speak the wire format
 * of <mm/protocol.h> themselves on a SOCK_SEQPACKET socket.
 */

typedef struct raw_client {
    int sock;
    int fds[MM_FD_COUNT]; /* region, shared, doorbell to client, to host */
    uint32_t id;
    uint64_t region_bytes;
    uint64_t shared_bytes;
} raw_client_t;

static int raw_connect(void)
{
    struct sockaddr_un sa = unix_addr(daemon_.sock);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    cr_assert_geq(s, 0, "socket: %s", strerror(errno));
    cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof sa), 0, "connect: %s", strerror(errno));
    return s;
}

static void hello_init(mm_msg_hello_t *m, const char *name, uint64_t max_bytes)
{
    memset(m, 0, sizeof *m);
    mm__msg_init(&m->hdr, MM_MSG_HELLO, sizeof *m, 1);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->max_bytes = max_bytes;
    m->weight = 100;
    m->numa_node = -1;
}

static int send_hello(int s, const char *name, uint64_t max_bytes)
{
    mm_msg_hello_t m;
    hello_init(&m, name, max_bytes);
    return mm__send_msg(s, &m, sizeof m, NULL, 0);
}

/* An install of n chunks first, first + 1, ... (mod chunk_count unless 0). */
static uint32_t install_init(mm_msg_install_t *m, uint32_t first, uint32_t n, uint32_t chunk_count,
                             uint32_t seq)
{
    uint32_t len = mm__msg_install_length(n);
    mm__msg_init(&m->hdr, MM_MSG_INSTALL, len, seq);
    m->slot = 1;
    m->count = n;
    for (uint32_t i = 0; i < n; i++)
        m->chunks[i] = chunk_count ? (first + i) % chunk_count : first + i;
    return len;
}

/* Wait up to timeout_ms for one message; its length (0: the daemon closed),
 * -ETIMEDOUT, or another negative errno. Fds that come with it are kept in
 * fds (up to max_fds) or closed. */
static ssize_t recv_within(int s, void *buf, int *fds, int max_fds, int *nfds, int timeout_ms)
{
    struct pollfd p = {.fd = s, .events = POLLIN};
    *nfds = 0;
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return -ETIMEDOUT;
    ssize_t n = mm__recv_msg(s, buf, MM_MSG_MAX_BYTES, fds, max_fds, nfds);
    return n == -ECONNRESET ? 0 : n;
}

/* Register: HELLO, and the reply with its four fds. */
static void raw_open(raw_client_t *rc, const char *name, uint64_t max_bytes)
{
    rc->sock = raw_connect();
    cr_assert_eq(send_hello(rc->sock, name, max_bytes), 0);
    union {
        mm_msg_hello_reply_t r;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    int nfds = 0;
    ssize_t n = recv_within(rc->sock, &u, rc->fds, MM_FD_COUNT, &nfds, ANSWER_BOUND_MS);
    cr_assert_gt(n, 0, "hello reply for %s: %s", name, mm_strerror((int)n));
    cr_assert_eq(mm__msg_check(&u, (size_t)n), MM_MSG_HELLO_REPLY);
    cr_assert_eq(u.r.status, 0);
    cr_assert_eq(nfds, MM_FD_COUNT, "a hello reply carries exactly the client's four fds");
    rc->id = u.r.client_id;
    rc->region_bytes = u.r.region_bytes;
    rc->shared_bytes = u.r.shared_bytes;
}

static void raw_close(raw_client_t *rc)
{
    for (int i = 0; i < MM_FD_COUNT; i++)
        if (rc->fds[i] >= 0)
            close(rc->fds[i]);
    if (rc->sock >= 0)
        close(rc->sock);
    memset(rc, 0xff, sizeof *rc);
}

/* Say goodbye (the daemon frees the client at once) and close. */
static void raw_bye(raw_client_t *rc)
{
    mm_msg_bye_t b;
    mm__msg_init(&b.hdr, MM_MSG_BYE, sizeof b, 9);
    (void)mm__send_msg(rc->sock, &b, sizeof b, NULL, 0); /* it may be gone already */
    raw_close(rc);
}

/*
 * Install chunks [first, first + n) and wait for the reply. Returns its
 * type; *status and *granted get the reply's status and count (an ERROR's
 * status, 0 granted). The reply must carry no fd.
 */
static int raw_install(raw_client_t *rc, uint32_t first, uint32_t n, int32_t *status,
                       uint32_t *granted)
{
    mm_msg_install_t m;
    uint32_t len = install_init(&m, first, n, 0, 7);
    cr_assert_eq(mm__send_msg(rc->sock, &m, len, NULL, 0), 0);
    union {
        mm_msg_install_reply_t r;
        mm_msg_error_t e;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    int fds[MM_FD_COUNT], nfds = 0;
    ssize_t got = recv_within(rc->sock, &u, fds, MM_FD_COUNT, &nfds, ANSWER_BOUND_MS);
    cr_assert_gt(got, 0, "install reply: %s", mm_strerror((int)got));
    cr_assert_eq(nfds, 0, "an install reply carries no fd");
    int type = mm__msg_check(&u, (size_t)got);
    cr_assert(type == MM_MSG_INSTALL_REPLY || type == MM_MSG_ERROR, "reply type %d", type);
    *status = type == MM_MSG_ERROR ? u.e.status : u.r.status;
    *granted = type == MM_MSG_ERROR ? 0 : u.r.count;
    return type;
}

/*
 * After a bad message: read whatever the daemon still sends until it closes
 * the connection. Returns true if it closed within timeout_ms; *status gets
 * the status of the last ERROR it sent (0 if none). Fds are closed.
 */
static bool dropped_within(int s, int timeout_ms, int32_t *status)
{
    uint64_t deadline = mm__now_ns() + (uint64_t)timeout_ms * 1000000ull;
    *status = 0;
    for (;;) {
        uint64_t now = mm__now_ns();
        if (now >= deadline)
            return false;
        union {
            mm_msg_error_t e;
            uint8_t buf[MM_MSG_MAX_BYTES];
        } u;
        int fds[MM_FD_COUNT], nfds = 0;
        ssize_t n =
            recv_within(s, &u, fds, MM_FD_COUNT, &nfds, (int)((deadline - now) / 1000000ull) + 1);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (n == 0 || n == -EPIPE)
            return true;
        if (n == -ETIMEDOUT)
            return false;
        if (n > 0 && mm__msg_check(&u, (size_t)n) == MM_MSG_ERROR)
            *status = u.e.status;
    }
}

/* Send len bytes with n fds in one SCM_RIGHTS block (up to 253, the
 * kernel's SCM_MAX_FD; mm__send_msg stops at 8). */
static int send_with_fds(int s, const void *buf, size_t len, const int *fds, int n)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    size_t ctl_len = CMSG_SPACE((size_t)n * sizeof(int));
    union {
        char buf[CMSG_SPACE(253 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n < 1 || n > 253)
        return -EINVAL;
    memset(&ctl, 0, sizeof ctl);
    msg.msg_control = ctl.buf;
    msg.msg_controllen = ctl_len;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)n * sizeof(int));
    return sendmsg(s, &msg, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* ---- 1. A flood of requests ------------------------------------------------ */

/* Counters of the flooding child, in shared memory. */
typedef struct flood {
    _Atomic int stop;
    _Atomic uint64_t sent;        /* install messages sent */
    _Atomic uint64_t connections; /* connections opened (each with a hello) */
    _Atomic uint64_t dropped;     /* connections the daemon closed under it */
} flood_t;

#define FLOOD_REGION_BYTES (1ull << 30) /* 512 chunks */

/*
 * The flooder: connect, say a valid HELLO, then send INSTALL requests as
 * fast as the socket takes them and never read a reply. When the daemon
 * drops it, connect again. Runs until told to stop.
 */
static void flood_main(flood_t *f)
{
    const uint32_t chunks = (uint32_t)(FLOOD_REGION_BYTES / MM_CHUNK_SIZE);
    uint32_t k = 0;
    while (!atomic_load(&f->stop)) {
        struct sockaddr_un sa = unix_addr(daemon_.sock);
        int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0)
            _exit(2);
        /* A send the daemon does not take for a second is a stall: the
         * loop checks stop and goes on. */
        struct timeval tv = {.tv_sec = 1};
        (void)setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (send_hello(s, "flood", FLOOD_REGION_BYTES) < 0)
            _exit(3);
        atomic_fetch_add(&f->connections, 1);
        while (!atomic_load(&f->stop)) {
            mm_msg_install_t m;
            /* Alternate full 128-chunk messages and single chunks. */
            uint32_t n = k % 2 ? MM_INSTALL_MAX : 1;
            uint32_t len = install_init(&m, k * 61, n, chunks, k);
            ssize_t r = send(s, &m, len, MSG_NOSIGNAL);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r < 0) {
                atomic_fetch_add(&f->dropped, 1);
                break;
            }
            atomic_fetch_add(&f->sent, 1);
            k++;
        }
        close(s);
    }
    _exit(0);
}

#define RTT_MAX_SAMPLES  20000
#define RTT_BASELINE     300
#define RTT_WINDOW_MS    1500
#define RTT_REGION_BYTES ((uint64_t)512 << 20) /* 256 chunks per client */

/* The well-behaved client: libmm, chunks installed but not populated, so
 * that each mm_alloc of a chunk is one install round trip and nothing else. */
typedef struct rtt_client {
    mm_client_t *c;
    unsigned allocs;
    unsigned generation;
} rtt_client_t;

/* One round trip: allocate the next chunk (an INSTALL and its reply). A
 * full region is replaced by a fresh client outside the timed window. */
static double rtt_sample(rtt_client_t *r)
{
    if (!r->c || r->allocs == RTT_REGION_BYTES / CHUNK) {
        if (r->c)
            mm_client_close(r->c);
        char name[32];
        snprintf(name, sizeof name, "good-%u", r->generation++);
        r->c = open_client(name, RTT_REGION_BYTES, MM_CLIENT_NO_POPULATE);
        r->allocs = 0;
    }
    void *p;
    uint64_t t0 = mm__now_ns();
    int err = mm_alloc(r->c, CHUNK, CHUNK, &p);
    double ms = ms_since(t0);
    cr_assert_eq(err, 0, "the well-behaved client is served: %s", mm_strerror(err));
    r->allocs++;
    return ms;
}

Test(hostile, a_flooding_client_does_not_starve_a_well_behaved_one, .timeout = 60)
{
    start_daemon("4G");
    static double samples[RTT_MAX_SAMPLES];
    rtt_client_t good = {0};

    /* Without an attack, for comparison. */
    for (size_t i = 0; i < RTT_BASELINE; i++)
        samples[i] = rtt_sample(&good);
    double base_med = quantile(samples, RTT_BASELINE, 0.5);
    double base_p99 = quantile(samples, RTT_BASELINE, 0.99);

    flood_t *f = shared_page(sizeof *f);
    pid_t pid = fork_child();
    if (pid == 0)
        flood_main(f);
    uint64_t t0 = mm__now_ns();
    while (atomic_load(&f->sent) < 1000 && ms_since(t0) < 10000)
        sleep_ms(1);
    cr_assert_geq(atomic_load(&f->sent), 1000, "the flood is on (%llu sent)",
                  (unsigned long long)atomic_load(&f->sent));

    /* During the attack: as many round trips as fit the window, and status. */
    uint64_t sent0 = atomic_load(&f->sent);
    size_t n = 0;
    double status_ms = 0;
    t0 = mm__now_ns();
    while (n < RTT_MAX_SAMPLES && ms_since(t0) < RTT_WINDOW_MS) {
        samples[n++] = rtt_sample(&good);
        if (n % 200 == 0) {
            double ms = status_answers("during the flood");
            status_ms = ms > status_ms ? ms : status_ms;
        }
    }
    double window_ms = ms_since(t0);
    uint64_t sent_in_window = atomic_load(&f->sent) - sent0;
    atomic_store(&f->stop, 1);
    int st = reap_child(pid, 5000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the flooder ran to the end (status 0x%x)",
              st);

    double med = quantile(samples, n, 0.5), p99 = quantile(samples, n, 0.99);
    double worst = samples[n - 1];
    cr_log_info("flood: %llu installs sent (%llu in the %.0f ms window), %llu connections, "
                "%llu dropped by the daemon",
                (unsigned long long)atomic_load(&f->sent), (unsigned long long)sent_in_window,
                window_ms, (unsigned long long)atomic_load(&f->connections),
                (unsigned long long)atomic_load(&f->dropped));
    cr_log_info("well-behaved install round trip: no attack median %.3f ms p99 %.3f ms (%d); "
                "under the flood median %.3f ms p99 %.3f ms max %.3f ms (%zu samples); "
                "slowest status %.1f ms",
                base_med, base_p99, RTT_BASELINE, med, p99, worst, n, status_ms);
    cr_assert_geq(n, 50, "the well-behaved client got round trips in (%zu)", n);
    cr_assert_lt(p99, RTT_P99_BOUND_MS, "p99 round trip under the flood %.3f ms", p99);
    cr_assert_lt(med, RTT_P99_BOUND_MS / 4, "median round trip under the flood %.3f ms", med);
    cr_assert_geq(atomic_load(&f->sent), 2000, "thousands of requests were sent");
    mm_client_close(good.c);
    daemon_survived();
    munmap(f, sizeof *f);
}

/* ---- 2. Messages of the wrong size ------------------------------------------ */

typedef struct size_case {
    const char *what;
    bool registered;  /* sent after a valid hello */
    size_t len;       /* bytes sent */
    uint32_t hdr_len; /* the header's length field; 0: len */
    uint16_t type;
    uint32_t count;  /* an install's count */
    int32_t expect;  /* the ERROR status, or 0 for a plain close */
    bool kept_alive; /* a registered client whose socket just closes */
} size_case_t;

Test(hostile, messages_of_the_wrong_size_drop_only_that_client, .timeout = 60)
{
    start_daemon("64M");
    mm_client_t *good = open_client("good", 8 << 20, 0);
    void *p[2];
    alloc_chunks(good, 1, p);
    const size_t install_full = mm__msg_install_length(MM_INSTALL_MAX);
    const size_case_t cases[] = {
        {"zero-length, before hello", false, 0, 0, MM_MSG_HELLO, 0, 0, false},
        {"one byte over the largest message", false, MM_MSG_MAX_BYTES + 1, 0, MM_MSG_INSTALL,
         MM_INSTALL_MAX, -EMSGSIZE, false},
        {"64 KiB hello", false, 64 << 10, 0, MM_MSG_HELLO, 0, -EMSGSIZE, false},
        {"hello cut at 40 bytes", false, 40, sizeof(mm_msg_hello_t), MM_MSG_HELLO, 0, -EBADMSG,
         false},
        {"hello with a trailing byte", false, sizeof(mm_msg_hello_t) + 1, sizeof(mm_msg_hello_t),
         MM_MSG_HELLO, 0, -EBADMSG, false},
        {"header alone, claiming a hello", false, sizeof(mm_msg_hdr_t), sizeof(mm_msg_hello_t),
         MM_MSG_HELLO, 0, -EBADMSG, false},
        {"install over the largest message", true, MM_MSG_MAX_BYTES + 4, 0, MM_MSG_INSTALL,
         MM_INSTALL_MAX, -EMSGSIZE, false},
        {"64 KiB install", true, 64 << 10, 0, MM_MSG_INSTALL, MM_INSTALL_MAX, -EMSGSIZE, false},
        {"install of 128 cut after 10 chunks", true, mm__msg_install_length(10),
         (uint32_t)install_full, MM_MSG_INSTALL, MM_INSTALL_MAX, -EBADMSG, false},
        {"install of 128 chunks, 10 sent, length says 10", true, mm__msg_install_length(10), 0,
         MM_MSG_INSTALL, MM_INSTALL_MAX, -EPROTO, false},
        {"install header alone", true, sizeof(mm_msg_hdr_t), 0, MM_MSG_INSTALL, 0, -EPROTO, false},
        {"zero-length, after hello", true, 0, 0, MM_MSG_INSTALL, 0, 0, true},
    };
    static uint8_t msg[64 << 10] __attribute__((aligned(8)));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const size_case_t *k = &cases[i];
        raw_client_t rc = {.sock = -1, .fds = {-1, -1, -1, -1}};
        if (k->registered) {
            raw_open(&rc, "sizer", 8 * CHUNK);
            int32_t status;
            uint32_t granted;
            cr_assert_eq(raw_install(&rc, 0, 2, &status, &granted), MM_MSG_INSTALL_REPLY);
            cr_assert_eq(granted, 2, "%s: the hostile client holds two chunks first", k->what);
        } else {
            rc.sock = raw_connect();
        }
        memset(msg, 0, sizeof msg);
        if (k->len >= sizeof(mm_msg_hdr_t)) {
            mm_msg_hdr_t *h = (mm_msg_hdr_t *)msg;
            mm__msg_init(h, k->type, k->hdr_len ? k->hdr_len : (uint32_t)k->len, 3);
            if (k->type == MM_MSG_HELLO && k->len >= sizeof(mm_msg_hello_t)) {
                hello_init((mm_msg_hello_t *)msg, "sizer", 8 * CHUNK);
                h->length = k->hdr_len ? k->hdr_len : (uint32_t)k->len;
            }
            if (k->type == MM_MSG_INSTALL && k->len >= offsetof(mm_msg_install_t, chunks)) {
                mm_msg_install_t *m = (mm_msg_install_t *)msg;
                m->slot = 1;
                m->count = k->count;
            }
        }
        cr_assert_eq(mm__send_msg(rc.sock, msg, k->len, NULL, 0), 0, "%s: sent", k->what);
        int32_t status = 0;
        cr_assert(dropped_within(rc.sock, DROP_BOUND_MS, &status),
                  "%s: the daemon closed the connection", k->what);
        cr_assert_eq(status, k->expect, "%s: error %d (%s), expected %d", k->what, status,
                     mm_strerror(status), k->expect);
        if (k->registered) {
            json_t *e = client_entry(rc.id);
            if (k->kept_alive) {
                /* A zero-length message reads as a close: the client lives
                 * on, disconnected, until its process exits. */
                cr_assert_not_null(e, "%s: kept while its process lives", k->what);
                cr_assert_eq(mm__bench_json_u64(e, "connected"), 0, "%s: disconnected", k->what);
            } else {
                cr_assert_null(e, "%s: the client was dropped and its grant returned", k->what);
            }
            json_decref(e);
        }
        raw_close(&rc);
        void *q;
        cr_assert_eq(mm_alloc(good, FRAME, 0, &q), 0, "%s: the good client is still served",
                     k->what);
    }
    /* The good client's chunks plus the one disconnected client's two. */
    mm_client_stats_t gs;
    cr_assert_eq(mm_client_stats(good, &gs), 0);
    cr_assert_eq(status_field("granted_bytes"), gs.granted_bytes + 2 * CHUNK);
    cr_assert_eq(status_field("client_count"), 2);
    mm_client_close(good);
    daemon_survived();
}

/* ---- 3. Lies in usage reports ---------------------------------------------- */

static _Atomic unsigned lies_told;

/* Claims to have given back everything, and gives nothing. */
static uint64_t lie_about_giving(mm_client_t *c, const mm_revoke_request_t *req, void *arg)
{
    (void)c;
    (void)req;
    (void)arg;
    atomic_fetch_add(&lies_told, 1);
    return UINT64_MAX;
}

/* The kernel's count of a region's resident bytes. */
static uint64_t kernel_resident(int region_fd)
{
    struct stat st;
    cr_assert_eq(fstat(region_fd, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/* Status must follow the kernel and stay sane: each client's resident bytes
 * are st_blocks of its region, the totals are the sums, every target is at
 * most the capacity and the client's limit, and the targets fit capacity. */
static void accounting_follows_the_kernel(const uint32_t *ids, const int *region_fds, size_t n,
                                          const char *when)
{
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "status answers %s", when);
    uint64_t capacity = mm__bench_json_u64(st, "capacity_bytes");
    uint64_t sum_resident = 0, sum_granted = 0, sum_target = 0, kernel_sum = 0;
    size_t i, listed = 0;
    json_t *c;
    json_array_foreach(json_object_get(st, "clients"), i, c)
    {
        uint32_t id = (uint32_t)mm__bench_json_u64(c, "id");
        uint64_t resident = mm__bench_json_u64(c, "resident_bytes");
        uint64_t granted = mm__bench_json_u64(c, "granted_bytes");
        uint64_t target = mm__bench_json_u64(c, "target_bytes");
        uint64_t idle = mm__bench_json_u64(c, "idle_bytes");
        uint64_t max = mm__bench_json_u64(c, "max_bytes");
        for (size_t j = 0; j < n; j++) {
            if (ids[j] != id)
                continue;
            listed++;
            uint64_t k = kernel_resident(region_fds[j]);
            kernel_sum += k;
            cr_assert_eq(resident, k, "%s: client %u resident %llu, st_blocks say %llu", when, id,
                         (unsigned long long)resident, (unsigned long long)k);
        }
        cr_assert_leq(target, capacity, "%s: client %u target %llu within capacity", when, id,
                      (unsigned long long)target);
        cr_assert_leq(target, max, "%s: client %u target within its limit", when, id);
        cr_assert_leq(granted, mm__bench_json_u64(c, "region_bytes"), "%s: granted", when);
        cr_assert_leq(idle, granted, "%s: client %u idle %llu within what it holds (%llu)", when,
                      id, (unsigned long long)idle, (unsigned long long)granted);
        sum_resident += resident;
        sum_granted += granted;
        sum_target += target;
    }
    cr_assert_eq(listed, n, "%s: every client is listed", when);
    cr_assert_eq(mm__bench_json_u64(st, "resident_bytes"), sum_resident, "%s: total resident",
                 when);
    cr_assert_eq(sum_resident, kernel_sum, "%s: total resident is the kernel's", when);
    cr_assert_eq(mm__bench_json_u64(st, "granted_bytes"), sum_granted, "%s: total granted", when);
    cr_assert_leq(sum_target, capacity, "%s: targets %llu fit capacity %llu", when,
                  (unsigned long long)sum_target, (unsigned long long)capacity);
    json_decref(st);
}

Test(hostile, lies_in_usage_reports_do_not_bend_the_accounting, .timeout = 60)
{
    start_daemon("64M");
    mm_client_t *good = open_client("good", 32 << 20, 0);
    void *g[8];
    alloc_chunks(good, 4, g);

    /* A libmm client that lies in what it reports and in its answers. */
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = "liar";
    o.max_bytes = 32 << 20;
    o.flags = MM_CLIENT_THREAD;
    o.on_revoke = lie_about_giving;
    mm_client_t *liar = NULL;
    cr_assert_eq(mm_client_open(daemon_.sock, &o, &liar), 0);
    void *l[8];
    alloc_chunks(liar, 8, l);
    cr_assert_eq(mm_free(liar, l[7], CHUNK), 0);
    cr_assert_eq(mm_discardable(liar, l[6], CHUNK, 1), 0);
    cr_assert_eq(mm_report(liar, &(mm_usage_t){.live_bytes = UINT64_MAX,
                                               .heap_bytes = 4096,
                                               .garbage_bytes = UINT64_MAX,
                                               .cost_ns_per_mib = UINT64_MAX}),
                 0);

    /* A raw client that writes UINT64_MAX over its whole client section. */
    raw_client_t raw;
    raw_open(&raw, "raw-liar", 16 << 20);
    int32_t status;
    uint32_t granted;
    cr_assert_eq(raw_install(&raw, 0, 4, &status, &granted), MM_MSG_INSTALL_REPLY);
    cr_assert_eq(granted, 4);
    mm_control_t *ctl =
        mmap(NULL, raw.shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, raw.fds[MM_FD_SHARED], 0);
    cr_assert_neq(ctl, MAP_FAILED);
    _Atomic uint64_t *fields[] = {&ctl->owned_bytes,       &ctl->resident_bytes,  &ctl->free_bytes,
                                  &ctl->discardable_bytes, &ctl->live_bytes,      &ctl->heap_bytes,
                                  &ctl->garbage_bytes,     &ctl->cost_ns_per_mib, &ctl->ack_bytes,
                                  &ctl->report_seq};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        atomic_store(fields[i], UINT64_MAX);
    for (int i = 0; i < 100; i++)
        (void)mm__doorbell_ring(raw.fds[MM_FD_DOORBELL_TO_HOST]);

    const uint32_t ids[] = {mm_client_id(good), mm_client_id(liar), raw.id};
    const int regions[] = {mm_client_region_fd(good), mm_client_region_fd(liar),
                           raw.fds[MM_FD_REGION]};
    /* Idle bytes are refreshed once a second per client: wait for the
     * liar's, then check. Its garbage claim can only make its own owned
     * memory idle, so idle = free + owned = granted. */
    uint64_t idle = 0;
    for (int i = 0; i < 60 && idle == 0; i++, sleep_ms(50))
        idle = client_field(ids[1], "idle_bytes");
    sleep_ms(1100); /* one more refresh of every client */
    accounting_follows_the_kernel(ids, regions, 3, "after the lies");
    cr_assert_eq(client_field(ids[1], "granted_bytes"), 8 * CHUNK);
    cr_assert_eq(client_field(ids[2], "granted_bytes"), 4 * CHUNK);
    cr_assert_eq(client_field(ids[2], "resident_bytes"), 0, "the raw liar touched nothing");
    idle = client_field(ids[1], "idle_bytes");
    cr_expect_eq(idle, 8 * CHUNK,
                 "garbage of UINT64_MAX makes all the liar holds idle, capped at what it owns: "
                 "idle %llu, expected %llu (an overflow when garbage + discardable wraps)",
                 (unsigned long long)idle, (unsigned long long)(8 * CHUNK));

    /* Squeeze: the liar is asked, says it gave UINT64_MAX, gives nothing. */
    set_capacity("16M");
    unsigned lies0 = atomic_load(&lies_told);
    double cpu0 = daemon_cpu_ms();
    uint64_t t0 = mm__now_ns();
    for (int i = 0; i < 10; i++, sleep_ms(100))
        status_answers("while the liar answers");
    double window_ms = ms_since(t0);
    double cpu_pct = 100.0 * (daemon_cpu_ms() - cpu0) / window_ms;
    unsigned lies = atomic_load(&lies_told) - lies0;
    uint64_t revoked = client_field(ids[1], "revoked_bytes");
    cr_log_info("lying answers: %u in %.0f ms, the daemon used %.1f%% of a CPU, counts %llu bytes "
                "revoked from a client that gave nothing",
                lies, window_ms, cpu_pct, (unsigned long long)revoked);
    accounting_follows_the_kernel(ids, regions, 3, "after the squeeze");
    for (int i = 0; i < 6; i++)
        cr_assert_eq(((unsigned char *)l[i])[CHUNK - 1], i + 1, "the liar's used chunk %d", i);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(((unsigned char *)g[i])[4096], i + 1, "the good client's chunk %d", i);
    /* The lies cost only the liar: the good client keeps its 8M (its demand
     * is under its fair share of 16M) and is not asked for anything. */
    cr_assert_geq(client_field(ids[0], "target_bytes"), 4 * CHUNK, "the good client's target");
    cr_assert_eq(client_field(ids[0], "revoked_bytes"), 0, "the good client was not asked");
    cr_assert_eq(client_field(ids[0], "granted_bytes"), 4 * CHUNK);
    cr_assert_leq(revoked, 32u << 20,
                  "the daemon counts no more revoked than the liar ever held (%llu)",
                  (unsigned long long)revoked);
    cr_assert_leq(lies, 30, "a lying answer does not make the daemon ask again at once (%u asks)",
                  lies);

    munmap(ctl, raw.shared_bytes);
    raw_bye(&raw);
    mm_client_close(liar);
    mm_client_close(good);
    daemon_survived();
}

/* ---- 4. A client that never reads ------------------------------------------ */

/* Bring an eventfd's counter to its maximum (a write of 1 more cannot go
 * in): drain what was rung, then add the most a counter holds. */
static void fill_doorbell(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0)
        cr_assert_eq(errno, EAGAIN, "drain: %s", strerror(errno));
    v = 0xfffffffffffffffeull;
    cr_assert_eq(write(fd, &v, sizeof v), (ssize_t)sizeof v, "fill: %s", strerror(errno));
}

Test(hostile, a_client_that_never_reads_cannot_block_the_daemon, .timeout = 60)
{
    start_daemon("256M");
    mm_client_t *good = open_client("good", 32 << 20, 0);
    void *g[8];
    alloc_chunks(good, 2, g);

    /* Replies it never reads: HELLO, then installs until the daemon stops
     * taking them or drops it. Nothing is ever read, not even the hello
     * reply and its fds. */
    int s = raw_connect();
    cr_assert_eq(send_hello(s, "deaf-socket", 64 << 20), 0);
    uint64_t sent = 0, t0 = mm__now_ns();
    bool dropped = false;
    double worst_status = 0;
    while (sent < 20000 && ms_since(t0) < 3000) {
        mm_msg_install_t m;
        uint32_t len = install_init(&m, (uint32_t)sent, 1, 32, (uint32_t)sent);
        ssize_t r = send(s, &m, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            dropped = true;
            break;
        }
        if (r < 0) {
            cr_assert(errno == EAGAIN || errno == EINTR, "send: %s", strerror(errno));
            sleep_ms(1);
        } else {
            sent++;
        }
        if ((sent + 1) % 500 == 0 || r < 0) {
            double ms = status_answers("while a client never reads its replies");
            worst_status = ms > worst_status ? ms : worst_status;
        }
    }
    cr_log_info("never-reading client: %llu installs sent, %s by the daemon; slowest status "
                "%.1f ms",
                (unsigned long long)sent, dropped ? "dropped" : "not dropped", worst_status);
    close(s);

    /* A doorbell it never reads, its counter full: capacity changes lower
     * its target and ring it again and again. */
    raw_client_t deaf;
    raw_open(&deaf, "deaf-bell", 32 << 20);
    int32_t status;
    uint32_t granted;
    cr_assert_eq(raw_install(&deaf, 0, 8, &status, &granted), MM_MSG_INSTALL_REPLY);
    cr_assert_eq(granted, 8);
    fill_doorbell(deaf.fds[MM_FD_DOORBELL_TO_CLIENT]);
    const char *caps[] = {"24M", "200M", "12M", "256M", "8M", "256M"};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        char req[64], *reply = NULL;
        snprintf(req, sizeof req, "capacity %s\n", caps[i]);
        int err = admin_ask(daemon_.admin_sock, req, ANSWER_BOUND_MS, &reply);
        if (err == -ETIMEDOUT)
            fail_hung("after ringing a full doorbell");
        cr_assert_eq(err, 0, "capacity %s answered: %s", caps[i], mm_strerror(err));
        cr_assert(strstr(reply, "\"capacity_bytes\"") != NULL, "capacity %s: %s", caps[i], reply);
        free(reply);
        status_answers("after ringing a full doorbell");
    }
    /* Admin connections that ask and never read their answer. */
    int admins[16];
    for (int i = 0; i < 16; i++) {
        struct sockaddr_un sa = unix_addr(daemon_.admin_sock);
        admins[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(admins[i], (struct sockaddr *)&sa, sizeof sa), 0);
        const char *req = i % 2 ? "status\n" : "stat"; /* half never end their line */
        cr_assert_geq(send(admins[i], req, strlen(req), MSG_NOSIGNAL), 0);
    }
    status_answers("with admin peers that never read");
    void *q;
    cr_assert_eq(mm_alloc(good, CHUNK, CHUNK, &q), 0, "the good client is still served");
    for (int i = 0; i < 16; i++)
        close(admins[i]);
    raw_bye(&deaf);
    mm_client_close(good);
    daemon_survived();
}

/*
 * The doorbells are eventfds the daemon made non-blocking, and the client
 * holds the same open file description: it can clear O_NONBLOCK for both
 * sides. A daemon that relies on the flag would then block on a full
 * doorbell (write) or on one the client drained first (read).
 */
static void open_evil_bell(raw_client_t *evil, mm_client_t **good)
{
    start_daemon("256M");
    *good = open_client("good", 32 << 20, 0);
    void *g[2];
    alloc_chunks(*good, 2, g);
    raw_open(evil, "blocking-bell", 32 << 20);
    int32_t status;
    uint32_t granted;
    cr_assert_eq(raw_install(evil, 0, 8, &status, &granted), MM_MSG_INSTALL_REPLY);
    cr_assert_eq(granted, 8);
}

static void make_blocking(int fd)
{
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0);
}

Test(hostile, a_client_cannot_make_the_daemon_block_ringing_its_doorbell, .timeout = 60)
{
    raw_client_t evil;
    mm_client_t *good;
    open_evil_bell(&evil, &good);
    /* Fill the counter, make the description blocking, then have the
     * daemon ring it: a lower capacity lowers the client's target. */
    int bell = evil.fds[MM_FD_DOORBELL_TO_CLIENT];
    fill_doorbell(bell);
    make_blocking(bell);
    char *reply = NULL;
    int err = admin_ask(daemon_.admin_sock, "capacity 8M\n", ANSWER_BOUND_MS, &reply);
    if (err == -ETIMEDOUT)
        fail_hung("after ringing a full doorbell the client made blocking");
    cr_assert_eq(err, 0, "capacity answered: %s", mm_strerror(err));
    free(reply);
    status_answers("after ringing a blocking full doorbell");
    void *q;
    cr_assert_eq(mm_alloc(good, FRAME, 0, &q), 0, "the good client is still served");
    raw_bye(&evil);
    mm_client_close(good);
    daemon_survived();
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* Is the daemon's event-loop thread (its main thread) in read(2) on the
 * same fd twice, 2 ms apart? From /proc/PID/syscall (the number, then the
 * arguments in hex); false where that cannot be read. */
static bool daemon_stuck_in_read(pid_t pid)
{
    char path[64];
    long fd[2] = {-1, -2};
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(path, "re");
        long nr = -1;
        if (!f)
            return false;
        if (fscanf(f, "%ld 0x%lx", &nr, &fd[i]) != 2)
            nr = -1;
        fclose(f);
        if (nr != SYS_read)
            return false;
        if (i == 0)
            sleep_ms(2);
    }
    return fd[0] == fd[1];
}

/*
 * In a child sharing the host's doorbell (made blocking): ring it and read
 * it back before the daemon does, until the daemon, woken for the ring, is
 * seen blocked reading an empty counter, or ms have passed. A read the
 * daemon won is cut short by an alarm (EINTR) instead of blocking.
 */
static void drain_under_the_daemon(int host_bell, pid_t daemon, int ms)
{
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    uint64_t end = mm__now_ns() + (uint64_t)ms * 1000000ull;
    while (mm__now_ns() < end) {
        uint64_t v = 1;
        if (write(host_bell, &v, sizeof v) < 0)
            _exit(1);
        struct itimerval it = {.it_value = {.tv_usec = 2000}};
        setitimer(ITIMER_REAL, &it, NULL);
        bool won = read(host_bell, &v, sizeof v) == (ssize_t)sizeof v;
        struct itimerval off = {0};
        setitimer(ITIMER_REAL, &off, NULL);
        if (!won && errno == EAGAIN && fcntl(host_bell, F_SETFL, 0) < 0)
            _exit(2); /* the daemon put O_NONBLOCK back: take it off again */
        if (!won && errno != EINTR && errno != EAGAIN)
            _exit(3);
        if (won && daemon_stuck_in_read(daemon))
            _exit(0); /* and it stays so: nobody rings any more */
    }
    _exit(0);
}

Test(hostile, a_client_cannot_make_the_daemon_block_reading_its_doorbell, .timeout = 60)
{
    raw_client_t evil;
    mm_client_t *good;
    open_evil_bell(&evil, &good);
    int host_bell = evil.fds[MM_FD_DOORBELL_TO_HOST];
    make_blocking(host_bell);
    for (int round = 0; round < 3; round++) {
        pid_t pid = fork_child();
        if (pid == 0)
            drain_under_the_daemon(host_bell, daemon_pid(), 500);
        int st = reap_child(pid, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the draining child ran (0x%x)", st);
        char *reply = NULL;
        uint64_t t0 = mm__now_ns();
        int err = admin_ask(daemon_.admin_sock, "status\n", ANSWER_BOUND_MS, &reply);
        if (err == -ETIMEDOUT)
            fail_hung("after a client drained the host's doorbell under it");
        cr_assert_eq(err, 0, "status: %s", mm_strerror(err));
        free(reply);
        cr_log_info("round %d: status %.1f ms after the client drained its doorbell", round,
                    ms_since(t0));
    }
    void *q;
    cr_assert_eq(mm_alloc(good, FRAME, 0, &q), 0, "the good client is still served");
    raw_bye(&evil);
    mm_client_close(good);
    daemon_survived();
}

/* ---- 5. Fds passed where none belong --------------------------------------- */

/* What happened to one case, written by the child that ran it. */
typedef struct fd_result {
    _Atomic int done;
    _Atomic int closed; /* the daemon closed the connection */
    _Atomic int status; /* the last ERROR's status, 0 if none */
} fd_result_t;

typedef struct fd_case {
    const char *what;
    bool registered;
    uint16_t type; /* 0: a zero-length message */
    int nfds;
    bool must_drop;
} fd_case_t;

static const fd_case_t fd_cases[] = {
    {"hello with one fd", false, MM_MSG_HELLO, 1, true},
    {"hello with 8 fds of 8 kinds", false, MM_MSG_HELLO, 8, true},
    {"hello with 253 fds", false, MM_MSG_HELLO, 253, true},
    {"zero-length message with one fd, before hello", false, 0, 1, true},
    {"oversized message with 8 fds", false, MM_MSG_ERROR, 8, true},
    {"install with one fd", true, MM_MSG_INSTALL, 1, true},
    {"install with 16 fds", true, MM_MSG_INSTALL, 16, true},
    {"install with 253 fds", true, MM_MSG_INSTALL, 253, true},
    {"bye with one fd", true, MM_MSG_BYE, 1, true},
    {"zero-length message with one fd, after hello", true, 0, 1, true},
    {"zero-length message with 8 fds, after hello", true, 0, 8, true},
};
#define FD_CASES (sizeof fd_cases / sizeof fd_cases[0])

/* An assortment of fds of many kinds, repeated (dup) to n. */
static int make_fds(int *fds, int n, int self_sock)
{
    int kinds[16], k = 0, p[2], sp[2];
    if (pipe2(p, O_CLOEXEC) == 0) {
        kinds[k++] = p[0];
        kinds[k++] = p[1];
    }
    kinds[k++] = eventfd(0, EFD_CLOEXEC);
    kinds[k++] = (int)syscall(SYS_memfd_create, "hostile", 0u);
    kinds[k++] = open("/dev/null", O_RDWR | O_CLOEXEC);
    kinds[k++] = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0) {
        kinds[k++] = sp[0];
        kinds[k++] = sp[1];
    }
    kinds[k++] = epoll_create1(EPOLL_CLOEXEC);
    kinds[k++] = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    sigset_t none;
    sigemptyset(&none);
    kinds[k++] = signalfd(-1, &none, SFD_CLOEXEC);
    kinds[k++] = (int)syscall(SYS_pidfd_open, getpid(), 0);
    kinds[k++] = open("/tmp", O_PATH | O_CLOEXEC);
    kinds[k++] = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    kinds[k++] = dup(self_sock); /* the connection itself */
    int m = 0;
    for (int i = 0; i < k; i++)
        if (kinds[i] >= 0)
            kinds[m++] = kinds[i];
    for (int i = 0; i < n; i++)
        fds[i] = i < m ? kinds[i] : dup(kinds[i % m]);
    for (int i = n; i < m; i++)
        close(kinds[i]); /* kinds this case does not send */
    return m;
}

/* One case, in the child: connect (and register), send, see what happens. */
static void run_fd_case(const fd_case_t *k, fd_result_t *r)
{
    struct sockaddr_un sa = unix_addr(daemon_.sock);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0)
        _exit(2);
    uint8_t buf[MM_MSG_MAX_BYTES] __attribute__((aligned(8)));
    int got[MM_FD_COUNT], ngot = 0;
    if (k->registered) {
        if (send_hello(s, "fds", 8 * CHUNK) < 0 ||
            recv_within(s, buf, got, MM_FD_COUNT, &ngot, ANSWER_BOUND_MS) <= 0 ||
            ngot != MM_FD_COUNT)
            _exit(3);
        for (int i = 0; i < ngot; i++)
            close(got[i]);
        mm_msg_install_t m;
        uint32_t len = install_init(&m, 0, 2, 4, 2);
        if (mm__send_msg(s, &m, len, NULL, 0) < 0 ||
            recv_within(s, buf, got, MM_FD_COUNT, &ngot, ANSWER_BOUND_MS) <= 0)
            _exit(4);
    }
    static uint8_t msg[4096] __attribute__((aligned(8)));
    size_t len = 0;
    memset(msg, 0, sizeof msg);
    if (k->type == MM_MSG_HELLO) {
        hello_init((mm_msg_hello_t *)msg, "fds", 8 * CHUNK);
        len = sizeof(mm_msg_hello_t);
    } else if (k->type == MM_MSG_INSTALL) {
        len = install_init((mm_msg_install_t *)msg, 2, 1, 4, 5);
    } else if (k->type == MM_MSG_BYE) {
        mm__msg_init((mm_msg_hdr_t *)msg, MM_MSG_BYE, sizeof(mm_msg_bye_t), 6);
        len = sizeof(mm_msg_bye_t);
    } else if (k->type == MM_MSG_ERROR) {
        len = sizeof msg; /* over the largest message */
        mm__msg_init((mm_msg_hdr_t *)msg, MM_MSG_INSTALL, (uint32_t)len, 8);
    }
    int fds[253];
    make_fds(fds, k->nfds, s);
    int err = send_with_fds(s, msg, len, fds, k->nfds);
    for (int i = 0; i < k->nfds; i++)
        close(fds[i]);
    if (err < 0)
        _exit(5);
    int32_t status = 0;
    atomic_store(&r->closed, dropped_within(s, DROP_BOUND_MS, &status));
    atomic_store(&r->status, status);
    atomic_store(&r->done, 1);
    close(s);
}

Test(hostile, fds_passed_with_a_message_are_refused_and_never_leak, .timeout = 60)
{
    start_daemon("64M");
    mm_client_t *good = open_client("good", 8 << 20, 0);
    void *g[2];
    alloc_chunks(good, 1, g);
    sleep_ms(200);
    status_answers("before");
    int before = daemon_fd_count();

    /* Every hostile client lives in a child, so that the daemon forgets
     * even the ones it keeps (a registered client whose socket closed)
     * when the child exits. */
    fd_result_t *res = shared_page(FD_CASES * sizeof *res);
    pid_t pid = fork_child();
    if (pid == 0) {
        for (size_t i = 0; i < FD_CASES; i++)
            run_fd_case(&fd_cases[i], &res[i]);
        _exit(0);
    }
    int st = reap_child(pid, 40000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the hostile child ran every case (0x%x)", st);
    for (size_t i = 0; i < FD_CASES; i++) {
        const fd_case_t *k = &fd_cases[i];
        cr_assert(atomic_load(&res[i].done), "%s: ran", k->what);
        int status = atomic_load(&res[i].status);
        cr_log_info("%s: %s, error %d (%s)", k->what,
                    atomic_load(&res[i].closed) ? "dropped" : "kept", status,
                    status ? mm_strerror(status) : "none");
        if (k->must_drop)
            cr_expect(atomic_load(&res[i].closed), "%s: the daemon closed the connection", k->what);
        if (k->type != 0)
            cr_expect_lt(status, 0, "%s: an error answer", k->what);
    }

    /* The daemon holds no fd more than before: neither those passed nor any
     * of the clients' (all gone with the child). */
    int after = daemon_fd_count();
    for (int i = 0; i < 100 && after > before; i++, sleep_ms(50))
        after = daemon_fd_count();
    if (after != before)
        log_daemon_fds();
    cr_assert_eq(after, before, "the daemon's fds: %d before, %d after", before, after);
    cr_assert_eq(status_field("client_count"), 1, "only the good client is left");
    void *q;
    cr_assert_eq(mm_alloc(good, CHUNK, CHUNK, &q), 0, "the good client is still served");
    munmap(res, FD_CASES * sizeof *res);
    mm_client_close(good);
    daemon_survived();
}

/* ---- 6. A client maps only its own region ----------------------------------- */

static void fd_link(int fd, char *out, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, out, cap - 1);
    cr_assert_gt(n, 0, "%s: %s", path, strerror(errno));
    out[n] = '\0';
}

/* In a child: map the region with one page past its end and touch there. */
static void touch_past_the_end(int region_fd, uint64_t region_bytes, off_t offset)
{
    signal(SIGBUS, SIG_DFL); /* a sanitizer's handler would exit instead */
    size_t len = (size_t)(region_bytes - (uint64_t)offset) + FRAME;
    volatile uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, region_fd, offset);
    if (p == MAP_FAILED)
        _exit(errno == EINVAL ? 20 : 21);
    p[len - FRAME] = 1; /* past the end: SIGBUS */
    _exit(0);
}

Test(hostile, a_client_reaches_only_its_own_region, .timeout = 60)
{
    start_daemon("256M");
    raw_client_t a, b;
    raw_open(&a, "a", 8 * CHUNK);
    raw_open(&b, "b", 4 * CHUNK);
    cr_assert_neq(a.id, b.id);

    /* Sizes and identities of what each was given. */
    struct stat sa[MM_FD_COUNT], sb[MM_FD_COUNT];
    for (int i = 0; i < MM_FD_COUNT; i++) {
        cr_assert_eq(fstat(a.fds[i], &sa[i]), 0);
        cr_assert_eq(fstat(b.fds[i], &sb[i]), 0);
    }
    cr_assert_eq((uint64_t)sa[MM_FD_REGION].st_size, 8 * CHUNK, "a's region is 16 MiB");
    cr_assert_eq((uint64_t)sb[MM_FD_REGION].st_size, 4 * CHUNK, "b's region is 8 MiB");
    cr_assert_eq((uint64_t)sa[MM_FD_SHARED].st_size, a.shared_bytes);
    cr_assert_eq((uint64_t)sb[MM_FD_SHARED].st_size, b.shared_bytes);
    cr_assert_eq(a.shared_bytes, mm_shared_bytes(8));
    for (int i = MM_FD_REGION; i <= MM_FD_SHARED; i++)
        for (int j = MM_FD_REGION; j <= MM_FD_SHARED; j++)
            cr_assert(sa[i].st_ino != sb[j].st_ino || sa[i].st_dev != sb[j].st_dev,
                      "a's memfd %d and b's memfd %d are different files", i, j);
    /* Eventfds share one anonymous inode: compare the open files. */
    for (int i = MM_FD_DOORBELL_TO_CLIENT; i <= MM_FD_DOORBELL_TO_HOST; i++) {
        for (int j = MM_FD_DOORBELL_TO_CLIENT; j <= MM_FD_DOORBELL_TO_HOST; j++) {
            long same = syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a.fds[i], b.fds[j]);
            if (same < 0 && errno == ENOSYS)
                break; /* no kcmp in this kernel */
            cr_assert_neq(same, 0, "a's doorbell %d and b's doorbell %d are different files", i, j);
        }
    }
    char link[256], want[64];
    snprintf(want, sizeof want, "/memfd:mm-region-%u", a.id);
    fd_link(a.fds[MM_FD_REGION], link, sizeof link);
    cr_assert(strncmp(link, want, strlen(want)) == 0, "a's region is its own: %s", link);
    snprintf(want, sizeof want, "/memfd:mm-shared-%u", a.id);
    fd_link(a.fds[MM_FD_SHARED], link, sizeof link);
    cr_assert(strncmp(link, want, strlen(want)) == 0, "a's shared state is its own: %s", link);
    for (int i = MM_FD_DOORBELL_TO_CLIENT; i <= MM_FD_DOORBELL_TO_HOST; i++) {
        fd_link(a.fds[i], link, sizeof link);
        cr_assert(strncmp(link, "socket:[", 8) == 0, "doorbell %d is a socket end of its own: %s",
                  i, link);
    }

    /* Chunk numbers name chunks of one's own region only. */
    int32_t status;
    uint32_t granted;
    const uint32_t outside[] = {8, 9, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        cr_assert_eq(raw_install(&a, outside[i], 1, &status, &granted), MM_MSG_ERROR,
                     "chunk %u is outside a's region", outside[i]);
        cr_assert_eq(status, -EINVAL);
    }
    cr_assert_eq(raw_install(&a, 0, 2, &status, &granted), MM_MSG_INSTALL_REPLY,
                 "a is still served after the refusals");
    cr_assert_eq(granted, 2);
    cr_assert_eq(raw_install(&b, 0, 1, &status, &granted), MM_MSG_INSTALL_REPLY);
    cr_assert_eq(granted, 1);

    /* Writing all of a's region through what a holds leaves b untouched. */
    uint8_t *pa = mmap(NULL, 8 * CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED, a.fds[MM_FD_REGION], 0);
    cr_assert_neq(pa, MAP_FAILED);
    memset(pa, 0xa5, 2 * CHUNK);
    static uint8_t page[FRAME];
    memset(page, 0x5a, sizeof page);
    cr_assert_eq(pwrite(a.fds[MM_FD_REGION], page, sizeof page, 8 * CHUNK), -1,
                 "a write past the end of a's region fails");
    cr_assert_eq(errno, EPERM, "the region cannot grow: %s", strerror(errno));
    cr_assert_eq(kernel_resident(b.fds[MM_FD_REGION]), 0, "nothing of b's became resident");
    uint8_t *pb = mmap(NULL, 4 * CHUNK, PROT_READ, MAP_SHARED, b.fds[MM_FD_REGION], 0);
    cr_assert_neq(pb, MAP_FAILED);
    cr_assert_eq(pb[0] | pb[CHUNK - 1], 0, "b's granted chunk reads zeros");
    munmap(pb, 4 * CHUNK);
    cr_assert_eq(pread(a.fds[MM_FD_REGION], page, sizeof page, 8 * CHUNK), 0,
                 "reading past a's end gives nothing");

    /* Mapping past the end: the page past the region faults with SIGBUS,
     * from offset 0 and from the last page. */
    const off_t offsets[] = {0, (off_t)(8 * CHUNK - FRAME)};
    for (size_t i = 0; i < 2; i++) {
        pid_t pid = fork_child();
        if (pid == 0)
            touch_past_the_end(a.fds[MM_FD_REGION], 8 * CHUNK, offsets[i]);
        int st = reap_child(pid, 10000);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS,
                  "touching past the region (map offset %lld) is SIGBUS (status 0x%x)",
                  (long long)offsets[i], st);
    }
    /* A mapping that starts past the end has no page to give either. */
    pid_t pid = fork_child();
    if (pid == 0) {
        signal(SIGBUS, SIG_DFL);
        volatile uint8_t *p =
            mmap(NULL, FRAME, PROT_READ, MAP_SHARED, a.fds[MM_FD_REGION], (off_t)(8 * CHUNK));
        if (p == MAP_FAILED)
            _exit(20);
        (void)p[0];
        _exit(0);
    }
    int st = reap_child(pid, 10000);
    cr_assert((WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS) ||
                  (WIFEXITED(st) && WEXITSTATUS(st) == 20),
              "a mapping past the end is refused or faults (status 0x%x)", st);

    /* An unprivileged process cannot reach the daemon's fds (every
     * client's region) through /proc. */
    if (geteuid() == 0) {
        pid = fork_child();
        if (pid == 0) {
            /* Learn the fd numbers as root, then try them as nobody. */
            char path[64];
            int nums[1024], nnums = 0;
            snprintf(path, sizeof path, "/proc/%d/fd", (int)daemon_pid());
            DIR *d = opendir(path);
            if (!d)
                _exit(30);
            for (struct dirent *e; (e = readdir(d)) && nnums < 1024;)
                if (e->d_name[0] != '.')
                    nums[nnums++] = atoi(e->d_name);
            closedir(d);
            if (nnums < 4 || setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                _exit(31);
            for (int i = 0; i < nnums; i++) {
                char fpath[96];
                snprintf(fpath, sizeof fpath, "%s/%d", path, nums[i]);
                int fd = open(fpath, O_RDONLY | O_CLOEXEC);
                if (fd >= 0 || errno != EACCES)
                    _exit(32);
            }
            _exit(0);
        }
        st = reap_child(pid, 10000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "nobody cannot open the daemon's fds through /proc (status 0x%x)", st);
    }
    munmap(pa, 8 * CHUNK);
    cr_assert_eq(client_field(a.id, "granted_bytes"), 2 * CHUNK);
    cr_assert_eq(client_field(b.id, "granted_bytes"), CHUNK);
    raw_bye(&a);
    raw_bye(&b);
    daemon_survived();
}

/* ---- 7. The admin socket for the unprivileged ------------------------------- */

enum {
    ADMIN_REFUSED_EACCES = 10,
    ADMIN_REFUSED_BY_DAEMON = 11,
    ADMIN_SERVED = 12,
    ADMIN_CANNOT_DROP = 13,
    ADMIN_CONNECT_FAILED = 14,
    ADMIN_NO_CLEAR_REPLY = 15,
    ADMIN_CLOSED = 16, /* closed without an answer: also a refusal */
};

/* In a child: become nobody and send one request line; the exit code says
 * what happened. */
static int ask_as_nobody(const char *req)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
            _exit(ADMIN_CANNOT_DROP);
        char *reply = NULL;
        int err = admin_ask(daemon_.admin_sock, req, ANSWER_BOUND_MS, &reply);
        if (err == -EACCES)
            _exit(ADMIN_REFUSED_EACCES);
        if (err < 0)
            _exit(ADMIN_CONNECT_FAILED);
        if (reply[0] == '\0')
            _exit(ADMIN_CLOSED);
        if (strstr(reply, "\"error\"") && strstr(reply, "permission denied"))
            _exit(ADMIN_REFUSED_BY_DAEMON);
        _exit(strstr(reply, "\"error\"") ? ADMIN_NO_CLEAR_REPLY : ADMIN_SERVED);
    }
    int st = reap_child(pid, 10000);
    cr_assert(WIFEXITED(st), "the child exited (status 0x%x)", st);
    return WEXITSTATUS(st);
}

Test(hostile, an_unprivileged_user_cannot_change_anything_through_the_admin_socket, .timeout = 60)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to switch to uid 65534 (nobody)");
    start_daemon("64M");
    mm_client_t *c = open_client("target", 16 << 20, 0);
    void *p[4];
    alloc_chunks(c, 4, p);
    cr_assert_eq(mm_free(c, p[3], CHUNK), 0);
    uint32_t id = mm_client_id(c);
    char set_req[64], reclaim_req[64];
    snprintf(set_req, sizeof set_req, "set %u max=2M min=1M weight=1 target=2M\n", id);
    snprintf(reclaim_req, sizeof reclaim_req, "reclaim %u 8M\n", id);
    const char *reqs[] = {"capacity 1M\n", "capacity 2M\n", set_req, reclaim_req, "clients\n"};

    /* Through the socket file as the daemon made it, then with the file and
     * its directory open to all, so that only the daemon's own check is
     * left. */
    for (int open_to_all = 0; open_to_all < 2; open_to_all++) {
        if (open_to_all) {
            cr_assert_eq(chmod(daemon_.dir, 0755), 0);
            cr_assert_eq(chmod(daemon_.admin_sock, 0666), 0);
        }
        for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
            int how = ask_as_nobody(reqs[i]);
            if (open_to_all)
                cr_assert(how == ADMIN_REFUSED_BY_DAEMON || how == ADMIN_CLOSED,
                          "the daemon refuses nobody's '%.*s' (child said %d)",
                          (int)strcspn(reqs[i], "\n"), reqs[i], how);
            else
                cr_assert(how == ADMIN_REFUSED_EACCES || how == ADMIN_REFUSED_BY_DAEMON ||
                              how == ADMIN_CLOSED,
                          "nobody's '%.*s' is refused (child said %d)", (int)strcspn(reqs[i], "\n"),
                          reqs[i], how);
        }
    }
    /* Nothing changed. */
    cr_assert_eq(status_field("capacity_bytes"), 64u << 20, "capacity unchanged");
    json_t *e = client_entry(id);
    cr_assert_not_null(e);
    cr_assert_eq(mm__bench_json_u64(e, "max_bytes"), 16u << 20, "limit unchanged");
    cr_assert_eq(mm__bench_json_u64(e, "weight"), 100, "weight unchanged");
    cr_assert_eq(mm__bench_json_u64(e, "target_pinned"), 0, "target not pinned");
    cr_assert_eq(mm__bench_json_u64(e, "granted_bytes"), 4 * CHUNK, "nothing reclaimed");
    cr_assert_eq(mm__bench_json_u64(e, "revoked_bytes"), 0, "nothing asked");
    json_decref(e);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(((unsigned char *)p[i])[7], i + 1, "the client's chunk %d is intact", i);
    mm_client_close(c);
    daemon_survived();
}

/* ---- 8. Never answering while touching memory -------------------------------- */

typedef struct toucher {
    _Atomic int ready;
    _Atomic int stop;
    _Atomic uint64_t passes; /* writes over the whole region */
    _Atomic uint32_t id;
} toucher_t;

#define TOUCHER_REGION_CHUNKS 16
#define TOUCHER_HELD_CHUNKS   12
/* The forced steps (host paging of a client that let its deadline lapse:
 * copy, store, sync, punch) run on the event loop in batches; on the
 * development machine a batch held the loop up to 160 ms. A daemon that
 * stopped serving would never answer: the bound only has to tell the two
 * apart. */
#define FORCED_RTT_BOUND_MS 500.0

/*
 * The uncooperative client: holds 12 chunks of data, never answers a
 * revocation (no thread, no dispatch), and keeps writing to every page of
 * its region, the chunks the host took or never granted included. When the
 * daemon pages it out (it offered a userfaultfd, as libmm does) it faults
 * its pages straight back. On stop it checks that the data of its 12 chunks
 * is intact: exit 0 if so.
 */
static void toucher_main(toucher_t *t)
{
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = "toucher";
    o.max_bytes = TOUCHER_REGION_CHUNKS * CHUNK;
    mm_client_t *c = NULL;
    if (mm_client_open(daemon_.sock, &o, &c) < 0)
        _exit(2);
    uint8_t *base = mm_client_base(c);
    for (uint32_t i = 0; i < TOUCHER_HELD_CHUNKS; i++) {
        void *p;
        if (mm_alloc(c, CHUNK, CHUNK, &p) < 0 || p != base + (size_t)i * CHUNK)
            _exit(3);
    }
    atomic_store(&t->id, mm_client_id(c));
    atomic_store(&t->ready, 1);
    uint8_t v = 0;
    while (!atomic_load(&t->stop)) {
        v++;
        for (size_t off = 0; off < TOUCHER_REGION_CHUNKS * CHUNK; off += FRAME) {
            size_t chunk = off / CHUNK;
            /* Its own data: a pattern it can check. Elsewhere: anything. */
            base[off] = chunk < TOUCHER_HELD_CHUNKS ? (uint8_t)(chunk + 1) : v;
        }
        atomic_fetch_add(&t->passes, 1);
    }
    for (size_t off = 0; off < TOUCHER_HELD_CHUNKS * CHUNK; off += FRAME)
        if (base[off] != (uint8_t)(off / CHUNK + 1))
            _exit(4);
    _exit(0);
}

Test(hostile, a_client_that_never_answers_and_keeps_touching_does_not_stall_others, .timeout = 60)
{
    start_daemon("64M");
    toucher_t *t = shared_page(sizeof *t);
    pid_t pid = fork_child();
    if (pid == 0)
        toucher_main(t);
    for (int i = 0; i < 1000 && !atomic_load(&t->ready); i++)
        sleep_ms(10);
    cr_assert(atomic_load(&t->ready), "the toucher holds its memory");
    uint32_t tid = atomic_load(&t->id);

    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = "good";
    o.max_bytes = 32 << 20;
    o.flags = MM_CLIENT_THREAD; /* answers with 0: it has nothing to spare */
    mm_client_t *good = NULL;
    cr_assert_eq(mm_client_open(daemon_.sock, &o, &good), 0);
    void *g[16];
    alloc_chunks(good, 4, g);

    /* 24M held and 8M more touched without a grant, by one that will not
     * answer; 8M held by one that does. Squeeze to 24M. */
    set_capacity("24M");
    double cpu0 = daemon_cpu_ms();
    static double rtt[4096];
    size_t n = 0, got = 4, refused = 0;
    double worst_status = 0;
    uint64_t t0 = mm__now_ns();
    while (ms_since(t0) < 2500 && n < 4096) {
        /* A round trip for the good client: an install (granted or not). */
        void *p;
        uint64_t s0 = mm__now_ns();
        int err = mm_alloc(good, CHUNK, CHUNK, &p);
        rtt[n++] = ms_since(s0);
        cr_assert(err == 0 || err == -ENOMEM, "an answer, not a failure: %s", mm_strerror(err));
        if (err == 0 && got < 16) {
            memset(p, (int)(got + 1), FRAME);
            g[got++] = p;
        } else if (err == 0) {
            cr_assert_eq(mm_free(good, p, CHUNK), 0);
        } else {
            refused++;
        }
        double ms = status_answers("while the toucher ignores its revocation");
        worst_status = ms > worst_status ? ms : worst_status;
        sleep_ms(20);
    }
    double window_ms = ms_since(t0);
    double cpu_pct = 100.0 * (daemon_cpu_ms() - cpu0) / window_ms;
    double med = quantile(rtt, n, 0.5), p99 = quantile(rtt, n, 0.99);
    uint64_t missed = client_field(tid, "missed_deadlines");
    uint64_t touched = client_field(tid, "touched_reclaimed");
    cr_log_info("uncooperative toucher (%llu passes): good client's install round trip median "
                "%.3f ms p99 %.3f ms (%zu, %zu refused, holds %zu chunks); slowest status "
                "%.1f ms; daemon CPU %.1f%%; toucher missed %llu deadlines, touched %llu "
                "reclaimed chunks",
                (unsigned long long)atomic_load(&t->passes), med, p99, n, refused, got,
                worst_status, cpu_pct, (unsigned long long)missed, (unsigned long long)touched);
    cr_assert_geq(missed, 1, "the toucher's missed deadline is counted");
    cr_assert_lt(p99, FORCED_RTT_BOUND_MS, "the good client's round trips stay short (%.1f ms)",
                 p99);
    for (size_t i = 0; i < got; i++)
        cr_assert_eq(((unsigned char *)g[i])[0], i + 1, "the good client's chunk %zu", i);
    cr_assert_eq(client_field(mm_client_id(good), "revoked_bytes"), 0,
                 "the good client, at its share, gave nothing");

    atomic_store(&t->stop, 1);
    int st = reap_child(pid, 10000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "the toucher's own data is intact: nothing it holds was taken unasked (0x%x)", st);
    munmap(t, sizeof *t);
    mm_client_close(good);
    daemon_survived();
}
