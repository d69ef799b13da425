/*
 * `mmbench soak [--minutes N]`: a long run of everything at once, checked at
 * the end. Not a speed measurement: its figures are counts of errors.
 *
 * One daemon (state in a temp directory, swap on the same disk) and
 * SOAK_WORKERS worker processes forked from mmbench, each driving up to
 * SOAK_SLOTS libmm clients of 8 MiB: at random they open clients (one in
 * four uncooperative: no thread, never answers a revocation, so the host
 * pages it out), allocate runs of frames and fill them with a checksummed
 * pattern, verify and free them, release them and reuse the range (as a
 * runtime reuses what it released), and close clients. Meanwhile mmbench
 * kills a random worker every few seconds (its clients die with it) and
 * starts another, changes the capacity every few seconds, and during the
 * first two thirds of the run kills the daemon (SIGKILL, every third time an
 * orderly SIGTERM) and starts a new one on the same state directory, whose
 * clients reconnect. Every verification counts a damaged allocation as a
 * data error, at once, in memory shared with mmbench, so a worker killed
 * later still has its errors counted.
 *
 * At the end the capacity is raised, clients the daemon froze (step 5:
 * their userfaultfd was refused) are given a reservation of their region so
 * that the daemon puts their pages back and thaws them, each worker verifies
 * every byte it
 * holds, reports its clients and stays idle; mmbench then compares the
 * daemon's status with the kernel's own figures, read through the workers'
 * fds (/proc/PID/fd): each region's st_blocks and the chunks its shared
 * chunk words show granted. It polls until they agree (10 s at most, as the
 * daemon refreshes residency in turns): a client the daemon does not list,
 * lists with other figures, or a client the daemon lists that no worker
 * holds, is an accounting error, and so is a client a restarted daemon did
 * not take back.
 *
 * daemon_rss_growth_bytes: VmRSS of the last daemon at the end minus its
 * VmRSS 5 s after it started (the last third of the run has no restart).
 */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#define SOAK_WORKERS     8
#define SOAK_SLOTS       32 /* clients per worker */
#define SOAK_ALLOCS      8  /* allocations per client */
#define SOAK_REGION      (8 * MM_MIB)
#define SOAK_MAX_ALLOC   (256 * 1024)
#define SOAK_CAP_MIN_MIB 384
#define SOAK_CAP_MAX_MIB 1024
#define SOAK_GRACE       "10"
#define SOAK_CHECK_MS    10000
#define SOAK_REPORT_MS   60000

/* Counters every worker adds to, in memory shared with mmbench. */
struct soak_shared {
    _Atomic uint64_t ops;
    _Atomic uint64_t clients;
    _Atomic uint64_t data_errors;
};

struct soak_alloc {
    uint8_t *p;
    size_t bytes;
    uint64_t seed;
};

struct soak_client {
    mm_client_t *c;
    struct soak_alloc a[SOAK_ALLOCS];
    int n;
};

static volatile sig_atomic_t worker_stop;

static void on_stop(int sig)
{
    (void)sig;
    worker_stop = 1;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* The pattern of an allocation: a xorshift stream from its seed. */
static void fill(struct soak_alloc *a)
{
    uint64_t s = a->seed, *w = (uint64_t *)a->p;
    for (size_t i = 0; i < a->bytes / 8; i++)
        w[i] = next_rand(&s);
}

static bool intact(const struct soak_alloc *a)
{
    uint64_t s = a->seed;
    const volatile uint64_t *w = (const uint64_t *)a->p;
    for (size_t i = 0; i < a->bytes / 8; i++)
        if (w[i] != next_rand(&s))
            return false;
    return true;
}

static void check(struct soak_shared *sh, const struct soak_alloc *a)
{
    if (!intact(a))
        atomic_fetch_add(&sh->data_errors, 1);
}

static void drop_alloc(struct soak_client *k, int i)
{
    k->a[i] = k->a[--k->n];
}

static void close_client(struct soak_shared *sh, struct soak_client *k)
{
    for (int i = 0; i < k->n; i++)
        check(sh, &k->a[i]);
    mm_client_close(k->c);
    memset(k, 0, sizeof *k);
}

static void open_client(struct soak_shared *sh, struct soak_client *k, const char *sock, int w,
                        int slot, uint64_t *rnd)
{
    mm_client_opts_t o;
    char name[32];
    mm_client_opts_init(&o);
    snprintf(name, sizeof name, "soak-%d-%d", w, slot);
    o.name = name;
    o.max_bytes = SOAK_REGION;
    /* One in four never answers: the host pages it out. */
    o.flags = next_rand(rnd) % 4 ? MM_CLIENT_THREAD : 0;
    if (mm_client_open(sock, &o, &k->c) == 0)
        atomic_fetch_add(&sh->clients, 1);
    else
        k->c = NULL; /* no daemon right now: tried again later */
}

/* One random operation on one slot. */
static void step(struct soak_shared *sh, struct soak_client *k, const char *sock, int w, int slot,
                 uint64_t *rnd)
{
    if (!k->c) {
        open_client(sh, k, sock, w, slot, rnd);
        return;
    }
    uint64_t r = next_rand(rnd) % 100;
    int i = k->n ? (int)(next_rand(rnd) % (uint64_t)k->n) : -1;
    if (r < 40 && k->n < SOAK_ALLOCS) {
        struct soak_alloc a;
        a.bytes = (size_t)(1 + next_rand(rnd) % (SOAK_MAX_ALLOC / MM_FRAME_SIZE)) * MM_FRAME_SIZE;
        a.seed = next_rand(rnd) | 1;
        void *p;
        if (mm_alloc(k->c, a.bytes, 0, &p) == 0) { /* -ENOMEM under pressure is normal */
            a.p = p;
            fill(&a);
            k->a[k->n++] = a;
        }
    } else if (r < 65 && i >= 0) {
        check(sh, &k->a[i]);
        if (mm_free(k->c, k->a[i].p, k->a[i].bytes) < 0)
            atomic_fetch_add(&sh->data_errors, 1); /* its own allocation: must free */
        drop_alloc(k, i);
    } else if (r < 80 && i >= 0) {
        /* Released, then reused in place without a call, as a runtime
         * reuses what it gave back. */
        check(sh, &k->a[i]);
        if (mm_release(k->c, k->a[i].p, k->a[i].bytes) == 0) {
            k->a[i].seed = next_rand(rnd) | 1;
            fill(&k->a[i]);
        }
    } else if (r < 97 && i >= 0) {
        check(sh, &k->a[i]);
    } else if (r >= 97) {
        close_client(sh, k);
    }
    atomic_fetch_add(&sh->ops, 1);
}

/* A worker: random steps until SIGUSR1, then verify everything, report
 * each client on out_fd, and wait for the word to close (a byte on in_fd,
 * or its end). */
static void worker_main(struct soak_shared *sh, const char *sock, int w, uint64_t seed, int in_fd,
                        int out_fd)
{
    static struct soak_client slots[SOAK_SLOTS];
    uint64_t rnd = seed | 1;
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGUSR1, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    while (!worker_stop) {
        int slot = (int)(next_rand(&rnd) % SOAK_SLOTS);
        step(sh, &slots[slot], sock, w, slot, &rnd);
        struct timespec ts = {0, (long)(1 + next_rand(&rnd) % 4) * 1000000L};
        nanosleep(&ts, NULL);
    }
    FILE *out = fdopen(out_fd, "w");
    for (int i = 0; i < SOAK_SLOTS; i++) {
        struct soak_client *k = &slots[i];
        mm_client_stats_t st;
        if (!k->c)
            continue;
        for (int j = 0; j < k->n; j++)
            check(sh, &k->a[j]);
        if (mm_client_connected(k->c) == 1 && mm_client_stats(k->c, &st) == 0)
            fprintf(out, "%u %d\n", mm_client_id(k->c), (int)getpid());
        else if (mm_client_connected(k->c) != 1)
            fprintf(out, "unmanaged\n");
    }
    fprintf(out, "end\n");
    fclose(out);
    char byte;
    while (read(in_fd, &byte, 1) < 0 && errno == EINTR)
        ;
    for (int i = 0; i < SOAK_SLOTS; i++)
        if (slots[i].c)
            close_client(sh, &slots[i]);
    _exit(0);
}

struct soak_worker {
    pid_t pid;
    int in_fd;  /* mmbench writes: close now */
    int out_fd; /* the worker's report */
};

static int spawn_worker(struct soak_worker *wk, struct soak_shared *sh, const char *sock, int w,
                        uint64_t seed)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(out, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return -errno;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return err;
    }
    if (pid == 0) {
        close(in[1]);
        close(out[0]);
        worker_main(sh, sock, w, seed, in[0], out[1]);
    }
    close(in[0]);
    close(out[1]);
    *wk = (struct soak_worker){pid, in[1], out[0]};
    return 0;
}

static void reap_worker(struct soak_worker *wk, int sig)
{
    if (wk->pid <= 0)
        return;
    if (sig)
        kill(wk->pid, sig);
    waitpid(wk->pid, NULL, 0);
    close(wk->in_fd);
    close(wk->out_fd);
    wk->pid = 0;
}

static uint64_t vm_rss(pid_t pid)
{
    char path[64], line[256];
    unsigned long long kib = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return (uint64_t)kib * 1024;
}

static void set_capacity(const mm_bench_daemon_t *d, uint64_t mib)
{
    char req[64];
    json_t *reply = NULL;
    snprintf(req, sizeof req, "capacity %llu\n", (unsigned long long)(mib * MM_MIB));
    if (mm__bench_admin(d, req, &reply) == 0)
        json_decref(reply);
}

/* Clients frozen by the daemon (uncooperative, over their target, their
 * userfaultfd refused) stay stopped while they hold more than their
 * target: before the final check each is given a reservation of its whole
 * region, which the daemon answers by putting its pages back and thawing
 * it. Nobody else may continue it (it would read holes where its pages
 * were). Returns the number still frozen after 20 s. */
static unsigned thaw_frozen(const mm_bench_daemon_t *d)
{
    unsigned frozen = 0;
    for (int round = 0; round < 100; round++) {
        json_t *st = NULL, *c;
        size_t i;
        if (mm__bench_ctl_status(d, &st) < 0)
            return frozen;
        frozen = 0;
        json_array_foreach(json_object_get(st, "clients"), i, c)
        {
            if (!mm__bench_json_u64(c, "frozen"))
                continue;
            char req[96];
            json_t *reply = NULL;
            snprintf(req, sizeof req, "set %llu min=%llu\n",
                     (unsigned long long)mm__bench_json_u64(c, "id"),
                     (unsigned long long)SOAK_REGION);
            if (mm__bench_admin(d, req, &reply) == 0)
                json_decref(reply);
            frozen++;
        }
        json_decref(st);
        if (frozen == 0)
            break;
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return frozen;
}

/* A worker's report: a client id and the worker's pid. */
struct soak_report {
    uint32_t id;
    pid_t pid;
};

/* The kernel's truth about a client, read through the worker's fds (the
 * memfds named mm-region-ID and mm-shared-ID): resident bytes of its
 * region (st_blocks) and the chunks its shared chunk words say are granted
 * (not RECLAIMED). -ENOENT if the worker holds no such memfds. */
static int live_view(const struct soak_report *r, uint64_t *resident, uint64_t *granted)
{
    char dir[64], region[64], shared[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)r->pid);
    snprintf(region, sizeof region, "/memfd:mm-region-%u ", r->id);
    snprintf(shared, sizeof shared, "/memfd:mm-shared-%u ", r->id);
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    int err = -ENOENT, found = 0;
    struct dirent *e;
    while (found != 3 && (e = readdir(d))) {
        char path[320], target[128];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        struct stat st;
        if (strncmp(target, region, strlen(region)) == 0 && stat(path, &st) == 0) {
            *resident = (uint64_t)st.st_blocks * 512;
            found |= 1;
        } else if (strncmp(target, shared, strlen(shared)) == 0) {
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || fstat(fd, &st) < 0) {
                if (fd >= 0)
                    close(fd);
                continue;
            }
            void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
            close(fd);
            if (m == MAP_FAILED)
                continue;
            const mm_control_t *ctl = m;
            uint32_t chunks = ctl->chunk_count;
            if (ctl->magic == MM_SHARED_MAGIC &&
                ctl->chunk_words_offset + (uint64_t)chunks * 4 <= (uint64_t)st.st_size) {
                const uint32_t *words =
                    (const uint32_t *)((const char *)m + ctl->chunk_words_offset);
                *granted = 0;
                for (uint32_t i = 0; i < chunks; i++)
                    *granted += words[i] & MM_CW_RECLAIMED ? 0 : MM_CHUNK_SIZE;
                found |= 2;
            }
            munmap(m, (size_t)st.st_size);
        }
    }
    closedir(d);
    if (found == 3)
        err = 0;
    return err;
}

static size_t read_reports(struct soak_worker *wk, struct soak_report *out, size_t cap,
                           uint64_t *unmanaged)
{
    struct pollfd p = {.fd = wk->out_fd, .events = POLLIN};
    if (poll(&p, 1, SOAK_REPORT_MS) != 1) {
        fprintf(stderr, "soak: worker %d did not report within %d s\n", (int)wk->pid,
                SOAK_REPORT_MS / 1000);
        (*unmanaged)++;
        return 0;
    }
    FILE *f = fdopen(dup(wk->out_fd), "r");
    char line[128];
    size_t n = 0;
    while (f && fgets(line, sizeof line, f) && strncmp(line, "end", 3) != 0) {
        unsigned id;
        int pid;
        if (strncmp(line, "unmanaged", 9) == 0)
            (*unmanaged)++;
        else if (n < cap && sscanf(line, "%u %d", &id, &pid) == 2)
            out[n++] = (struct soak_report){id, (pid_t)pid};
    }
    if (f)
        fclose(f);
    return n;
}

/* Accounting errors: reported clients the daemon shows otherwise, and
 * clients it lists that no worker holds. */
static uint64_t compare(const mm_bench_daemon_t *d, const struct soak_report *r, size_t n, bool say)
{
    json_t *st = NULL;
    if (mm__bench_ctl_status(d, &st) < 0)
        return n ? n : 1;
    json_t *clients = json_object_get(st, "clients"), *c;
    uint64_t errors = 0;
    size_t i, listed = json_array_size(clients);
    for (size_t k = 0; k < n; k++) {
        bool seen = false;
        json_array_foreach(clients, i, c) if (mm__bench_json_u64(c, "id") == r[k].id)
        {
            seen = true;
            uint64_t res = mm__bench_json_u64(c, "resident_bytes");
            uint64_t gr = mm__bench_json_u64(c, "granted_bytes");
            uint64_t live_res = 0, live_gr = 0;
            int err = live_view(&r[k], &live_res, &live_gr);
            if (err < 0 || res != live_res || gr != live_gr) {
                errors++;
                if (say)
                    fprintf(stderr,
                            "soak: client %u: daemon says %llu resident, %llu granted; the "
                            "kernel %llu resident, its chunk words %llu granted%s\n",
                            r[k].id, (unsigned long long)res, (unsigned long long)gr,
                            (unsigned long long)live_res, (unsigned long long)live_gr,
                            err < 0 ? " (its memfds not found)" : "");
            }
        }
        if (!seen && say)
            fprintf(stderr, "soak: client %u is not listed by the daemon\n", r[k].id);
        errors += !seen;
    }
    if (listed > n) {
        errors += listed - n;
        if (say)
            fprintf(stderr, "soak: the daemon lists %zu clients, the workers hold %zu\n", listed,
                    n);
    }
    json_decref(st);
    return errors;
}

static double now_s(void)
{
    return (double)mm__bench_now_ns() / 1e9;
}

int mm__bench_soak(const mm_bench_opts_t *opts, mm_results_t *res)
{
    double minutes = opts->minutes > 0 ? opts->minutes : (opts->quick ? 1 : 10);
    struct soak_shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return -errno;
    memset(sh, 0, sizeof *sh);
    mm_bench_daemon_t d;
    char cap[32];
    uint64_t cap_mib = SOAK_CAP_MAX_MIB;
    const char *extra[] = {"--grace", SOAK_GRACE, NULL};
    snprintf(cap, sizeof cap, "%lluM", (unsigned long long)cap_mib);
    int rc = mm__bench_daemon_start_with(
        &d, cap, getenv("MM_SOAK_LOG") ? getenv("MM_SOAK_LOG") : "warn", extra);
    if (rc < 0) {
        munmap(sh, sizeof *sh);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    printf("soak: %.1f minutes, %d workers of up to %d clients, daemon in %s\n", minutes,
           SOAK_WORKERS, SOAK_SLOTS, d.dir);
    fflush(stdout);

    uint64_t rnd = 0x9e3779b97f4a7c15ull, restarts = 0, worker_kills = 0;
    struct soak_worker wk[SOAK_WORKERS] = {0};
    for (int w = 0; w < SOAK_WORKERS && rc == 0; w++)
        rc = spawn_worker(&wk[w], sh, d.sock, w, next_rand(&rnd));
    double t0 = now_s(), end = t0 + minutes * 60, restart_until = t0 + minutes * 40;
    double next_cap = t0 + 3, next_kill = t0 + 5, next_restart = t0 + 10;
    double daemon_started = t0;
    uint64_t rss_base = 0;
    while (rc == 0 && now_s() < end) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        double t = now_s();
        if (!rss_base && t - daemon_started >= 5)
            rss_base = vm_rss(d.proc.pid);
        if (t >= next_cap) {
            cap_mib = SOAK_CAP_MIN_MIB + next_rand(&rnd) % (SOAK_CAP_MAX_MIB - SOAK_CAP_MIN_MIB);
            set_capacity(&d, cap_mib);
            next_cap = t + 2 + (double)(next_rand(&rnd) % 3000) / 1000;
        }
        if (t >= next_kill) {
            int w = (int)(next_rand(&rnd) % SOAK_WORKERS);
            reap_worker(&wk[w], SIGKILL);
            worker_kills++;
            rc = spawn_worker(&wk[w], sh, d.sock, w, next_rand(&rnd));
            next_kill = t + 3 + (double)(next_rand(&rnd) % 4000) / 1000;
        }
        if (t >= next_restart && t < restart_until) {
            int sig = restarts % 3 == 2 ? SIGTERM : SIGKILL;
            mm__bench_daemon_kill(&d, sig);
            struct timespec gap = {0, (long)(200 + next_rand(&rnd) % 800) * 1000000L};
            nanosleep(&gap, NULL);
            snprintf(cap, sizeof cap, "%lluM", (unsigned long long)cap_mib);
            rc = mm__bench_daemon_restart(
                &d, cap, getenv("MM_SOAK_LOG") ? getenv("MM_SOAK_LOG") : "warn", extra);
            restarts++;
            daemon_started = now_s();
            rss_base = 0;
            printf("soak: %.0f s: daemon %s and restarted (%llu ops, %llu clients so far)\n",
                   t - t0, sig == SIGKILL ? "killed" : "stopped", (unsigned long long)sh->ops,
                   (unsigned long long)sh->clients);
            fflush(stdout);
            next_restart = t + 10 + (double)(next_rand(&rnd) % 15000) / 1000;
        }
    }

    /* The end: room for everyone, every byte verified, accounts compared. */
    uint64_t accounting_errors = 0, unmanaged = 0;
    struct soak_report *reports = calloc(SOAK_WORKERS * SOAK_SLOTS, sizeof *reports);
    size_t nrep = 0;
    if (rc == 0 && reports) {
        set_capacity(&d, 2 * SOAK_CAP_MAX_MIB);
        unsigned frozen = thaw_frozen(&d);
        if (frozen)
            fprintf(stderr, "soak: %u clients stay frozen\n", frozen);
        for (int w = 0; w < SOAK_WORKERS; w++)
            kill(wk[w].pid, SIGUSR1);
        for (int w = 0; w < SOAK_WORKERS; w++)
            nrep +=
                read_reports(&wk[w], reports + nrep, SOAK_WORKERS * SOAK_SLOTS - nrep, &unmanaged);
        uint64_t deadline = mm__bench_now_ns() + SOAK_CHECK_MS * 1000000ull;
        do {
            accounting_errors = compare(&d, reports, nrep, false);
            if (accounting_errors == 0)
                break;
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        } while (mm__bench_now_ns() < deadline);
        if (accounting_errors)
            (void)compare(&d, reports, nrep, true);
        /* A client the daemon refused to take back is an error too. */
        accounting_errors += unmanaged;
        if (unmanaged)
            fprintf(stderr, "soak: %llu clients were not taken back after a restart\n",
                    (unsigned long long)unmanaged);
    }
    uint64_t rss_growth = 0, rss_end = d.proc.pid > 0 ? vm_rss(d.proc.pid) : 0;
    if (rss_base && rss_end > rss_base)
        rss_growth = rss_end - rss_base;
    for (int w = 0; w < SOAK_WORKERS; w++) {
        if (wk[w].pid > 0 && write(wk[w].in_fd, "x", 1) < 0)
            kill(wk[w].pid, SIGKILL); /* it cannot be told: it goes */
        reap_worker(&wk[w], 0);
    }
    free(reports);
    int stop_rc = mm__bench_daemon_stop(&d);
    if (rc == 0 && stop_rc < 0)
        fprintf(stderr, "mmbench soak: mmsrv did not stop cleanly\n");

    const mm_result_row_t rows[] = {
        {"soak", "mm", "clients_total", "count"},
        {"soak", "mm", "ops", "count"},
        {"soak", "mm", "daemon_restarts", "count"},
        {"soak", "mm", "data_errors", "count"},
        {"soak", "mm", "accounting_errors", "count"},
        {"soak", "mm", "daemon_rss_growth_bytes", "bytes"},
    };
    double values[] = {(double)sh->clients,     (double)sh->ops,           (double)restarts,
                       (double)sh->data_errors, (double)accounting_errors, (double)rss_growth};
    mm_result_key_t keys[] = {{"seconds", (int64_t)(minutes * 60)},
                              {"worker_kills", (int64_t)worker_kills}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        mm__results_add(res, &rows[i], values[i], keys, 2);
    bool failed = sh->data_errors != 0 || accounting_errors != 0;
    munmap(sh, sizeof *sh);
    if (rc < 0)
        return rc;
    return failed ? MM_BENCH_VERDICT_FAILED : 0;
}
