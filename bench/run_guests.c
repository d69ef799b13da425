/*
 * `mmbench run` measurements (see run.h): one repetition of a guest scenario
 * on one system, the kernel's floor for the same bytes, and growth (mm and
 * floor).
 *
 * A guest repetition: a fresh daemon (capacity 4 GiB, more than the guests
 * hold, so that nothing is taken back before the host asks); the guests,
 * started through guestrun.c with the system as their driver; when the
 * scenario has a slowdown window, one window of workload rounds undisturbed
 * as the reference; then the host asks every guest to keep keep_bytes, the
 * driver's way, and waits until each guest's resident bytes (kernel truth in
 * the daemon's status) are at most that, or the deadline. ms runs from the
 * first request to the status that showed the last guest there;
 * taken_bytes is the drop in resident bytes by then. The window after the request
 * gives the slowdown: 1 - (rounds per second after) / (rounds per second
 * before), summed over guests. swap_out_bytes and swap_in_bytes are the
 * guests' own swap traffic plus the host's paging of them
 * (paged_out_bytes), from just before the request to the end of the window.
 * A guest the daemon froze is thawed (its RAM given back) before it is
 * counted; freezes says how often that happened. The guests then verify
 * all their data.
 */
#include "run.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "platform.h"

#define RUN_CAPACITY "4G"
/* ms for the guests to get there: a system that has not by then is
 * reported as not reached (and its time is the deadline). */
#define RESIZE_DEADLINE_QUICK 5000
#define RESIZE_DEADLINE       20000
#define MAX_GUESTS            8

void mm__run_sleep_until(uint64_t t_ns)
{
    uint64_t now = mm__bench_now_ns();

    if (now >= t_ns)
        return;
    struct timespec ts = {.tv_sec = (time_t)((t_ns - now) / 1000000000ull),
                          .tv_nsec = (long)((t_ns - now) % 1000000000ull)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* What the guests have done so far, summed. */
struct counts {
    double rounds, swap_out, swap_in, resident;
    uint64_t at_ns;
};

static int read_counts(mm_guestrun_t *g, int n, const mm_bench_daemon_t *d, struct counts *c)
{
    *c = (struct counts){0};
    for (int i = 0; i < n; i++) {
        json_t *st = NULL, *entry = NULL;
        int rc = mm__guestrun_stats(&g[i], &st);

        if (rc == 0)
            rc = mm__guestrun_client(&g[i], d, &entry);
        if (rc == 0) {
            c->rounds += (double)mm__bench_json_u64(st, "rounds");
            c->swap_out += (double)mm__bench_json_u64(st, "swap_out_bytes") +
                           (double)mm__bench_json_u64(entry, "paged_out_bytes");
            c->swap_in += (double)mm__bench_json_u64(st, "swap_in_bytes");
            c->resident += (double)mm__bench_json_u64(entry, "resident_bytes");
        }
        json_decref(st);
        json_decref(entry);
        if (rc < 0)
            return rc;
    }
    c->at_ns = mm__bench_now_ns();
    return 0;
}

static double rate(const struct counts *a, const struct counts *b)
{
    double s = (double)(b->at_ns - a->at_ns) / 1e9;

    return s > 0 ? (b->rounds - a->rounds) / s : 0;
}

/* Ask every guest for keep_bytes, then wait for all of them. */
static int resize_all(mm_guestrun_t *g, int n, const mm_bench_daemon_t *d, uint64_t keep_bytes,
                      int deadline_ms, run_guest_sample_t *s)
{
    uint64_t t0 = mm__bench_now_ns(), deadline = t0 + (uint64_t)deadline_ms * 1000000ull;
    int rc = 0;

    for (int i = 0; i < n && rc == 0; i++)
        rc = mm__guestrun_ask(&g[i], d, keep_bytes);
    double at_end = 0;
    bool reached = true;
    for (int i = 0; i < n && rc == 0; i++) {
        uint64_t now = mm__bench_now_ns(), resident = 0;
        int left = now < deadline ? (int)((deadline - now) / 1000000ull) : 0;

        rc = mm__guestrun_wait(&g[i], d, keep_bytes, false, left, &resident);
        if (rc == -ETIMEDOUT) {
            reached = false;
            rc = 0; /* the others are still counted, at once */
        }
        at_end += (double)resident;
    }
    s->ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    s->reached = rc == 0 && reached;
    s->resident_at_end = at_end;
    return rc;
}

int mm__run_thaw_frozen(mm_guestrun_t *g, int n, const mm_bench_daemon_t *d, uint64_t ram_bytes,
                        double *freezes)
{
    *freezes = 0;
    for (int i = 0; i < n; i++) {
        json_t *e = NULL;
        int rc = mm__guestrun_client(&g[i], d, &e);

        for (int t = 0; rc == 0 && t < 10000; t++) {
            if (t == 0)
                *freezes += (double)mm__bench_json_u64(e, "freezes");
            if (!json_is_true(json_object_get(e, "frozen")))
                break;
            if (t == 0)
                rc = mm__guestrun_ask(&g[i], d, ram_bytes);
            mm__run_sleep_until(mm__bench_now_ns() + 1000000ull);
            json_decref(e);
            e = NULL;
            if (rc == 0)
                rc = mm__guestrun_client(&g[i], d, &e);
        }
        bool still = json_is_true(json_object_get(e, "frozen"));
        json_decref(e);
        if (rc < 0)
            return rc;
        if (still)
            return -ETIMEDOUT;
    }
    return 0;
}

/* The daemon's time (ns) and bytes so far in reclaim steps 1 and 2, the
 * steps that take memory with no message: its status's "ladder". */
static int read_host_steps(const mm_bench_daemon_t *d, double *ns, double *bytes)
{
    json_t *st = NULL, *step;
    size_t i;
    int rc = mm__bench_ctl_status(d, &st);

    *ns = *bytes = 0;
    if (rc < 0)
        return rc;
    json_array_foreach(json_object_get(st, "ladder"), i, step)
    {
        const char *name = json_string_value(json_object_get(step, "step"));
        if (name && (strcmp(name, "free") == 0 || strcmp(name, "discardable") == 0)) {
            *ns += (double)mm__bench_json_u64(step, "sum_ns");
            *bytes += (double)mm__bench_json_u64(step, "bytes");
        }
    }
    json_decref(st);
    return 0;
}

static int measure(mm_guestrun_t *g, const mm_bench_daemon_t *d, const run_guest_scn_t *scn,
                   int deadline_ms, run_guest_sample_t *s)
{
    struct counts ref = {0}, before, after;
    int n = scn->guests, rc = 0;

    if (scn->window_ms > 0) {
        rc = read_counts(g, n, d, &ref);
        mm__run_sleep_until(ref.at_ns + (uint64_t)scn->window_ms * 1000000ull);
    }
    if (rc == 0)
        rc = read_counts(g, n, d, &before);
    double ns0 = 0, bytes0 = 0, ns1 = 0, bytes1 = 0;
    if (rc == 0)
        rc = read_host_steps(d, &ns0, &bytes0);
    if (rc == 0)
        rc = resize_all(g, n, d, scn->keep_bytes, deadline_ms, s);
    if (rc == 0)
        rc = read_host_steps(d, &ns1, &bytes1);
    if (rc < 0)
        return rc;
    s->daemon_ms = (ns1 - ns0) / 1e6;
    s->daemon_bytes = bytes1 - bytes0;
    mm__run_sleep_until(before.at_ns + (uint64_t)scn->window_ms * 1000000ull);
    rc = mm__run_thaw_frozen(g, n, d, scn->ram_bytes, &s->freezes);
    if (rc == 0)
        rc = read_counts(g, n, d, &after);
    if (rc < 0)
        return rc;
    s->taken_bytes =
        before.resident > s->resident_at_end ? before.resident - s->resident_at_end : 0;
    s->swap_out_bytes = after.swap_out - before.swap_out;
    s->swap_in_bytes = after.swap_in - before.swap_in;
    s->slowdown = NAN;
    if (scn->window_ms > 0 && rate(&ref, &before) > 0)
        s->slowdown = 1 - rate(&before, &after) / rate(&ref, &before);
    s->measured = true;
    return 0;
}

int mm__run_guest_rep(run_ctx_t *ctx, const run_guest_scn_t *scn, const char *system,
                      run_guest_sample_t *s)
{
    mm_guestrun_t g[MAX_GUESTS];
    mm_bench_daemon_t d;
    int started = 0, rc;

    *s = (run_guest_sample_t){.slowdown = NAN};
    if (scn->guests < 1 || scn->guests > MAX_GUESTS)
        return -EINVAL;
    rc = mm__bench_daemon_start(&d, RUN_CAPACITY, "warn");
    if (rc < 0)
        return rc;
    for (; started < scn->guests && rc == 0; started++) {
        char name[32];

        snprintf(name, sizeof(name), "%s-%s-%d", scn->name, system, started + 1);
        mm_guestrun_cfg_t cfg = {.driver = system,
                                 .name = name,
                                 .ram_bytes = scn->ram_bytes,
                                 .workload = scn->workload,
                                 .swap_bytes = scn->swap_bytes};
        rc = mm__guestrun_start(&g[started], &d, &cfg);
        if (rc < 0)
            break;
    }
    if (rc == 0) {
        s->ran = true;
        rc = measure(g, &d, scn, ctx->opts->quick ? RESIZE_DEADLINE_QUICK : RESIZE_DEADLINE, s);
    }
    s->intact = mm__run_stop_guests(g, started, &d) && s->ran;
    return rc;
}

bool mm__run_stop_guests(mm_guestrun_t *g, int n, mm_bench_daemon_t *d)
{
    bool intact = true;
    for (int i = 0; i < n; i++) {
        bool ok = false;
        int stop = mm__guestrun_stop(&g[i], &ok, NULL);

        intact = intact && stop == 0 && ok;
    }
    if (mm__bench_daemon_stop(d) < 0)
        fprintf(stderr, "mmbench run: mmsrv did not exit cleanly\n");
    return intact;
}

double mm__run_floor_punch_ms(uint64_t held_bytes, uint64_t taken_bytes)
{
    return mm__bench_punch_floor_ms(held_bytes, taken_bytes & ~(uint64_t)(MM_FRAME_SIZE - 1));
}

/* Write one byte in every frame: the first touch a program makes. */
static void touch(volatile uint8_t *p, uint64_t bytes)
{
    for (uint64_t off = 0; off < bytes; off += MM_FRAME_SIZE)
        p[off] = (uint8_t)(off >> 12);
}

int mm__run_grow_floor(uint64_t bytes, double *ms)
{
    int fd = mm__memfd_create_sealed("mmbench-grow-floor", bytes), rc;

    if (fd < 0)
        return fd;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        close(fd);
        return rc;
    }
    uint64_t t0 = mm__bench_now_ns();
    rc = mm__populate_write(p, bytes);
    touch(p, bytes);
    *ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    munmap(p, bytes);
    close(fd);
    return rc;
}

/* Set the target of the client called name (bytes, or auto when 0). */
static int set_target(const mm_bench_daemon_t *d, const char *name, uint64_t bytes)
{
    char request[128];
    json_t *reply;
    int rc;

    if (bytes == 0)
        snprintf(request, sizeof(request), "set %s target=auto\n", name);
    else
        snprintf(request, sizeof(request), "set %s target=%llu\n", name, (unsigned long long)bytes);
    rc = mm__bench_admin(d, request, &reply);
    if (rc == 0)
        json_decref(reply);
    return rc;
}

/* Hold n chunks, write them and free them: they stay resident, free. */
static int fill_and_free(mm_client_t *c, void **chunks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = mm_alloc(c, MM_CHUNK_SIZE, MM_CHUNK_SIZE, &chunks[i]);

        if (rc < 0)
            return rc;
        memset(chunks[i], 0x5a, MM_CHUNK_SIZE);
    }
    for (size_t i = 0; i < n; i++)
        mm_free(c, chunks[i], MM_CHUNK_SIZE); /* ours: cannot fail */
    return 0;
}

/* The timed part: take the chunks again (installs, populated by libmm) and
 * touch every frame. */
static int grow_timed(mm_client_t *c, void **chunks, size_t n, double *ms)
{
    uint64_t t0 = mm__bench_now_ns();
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = mm_alloc(c, MM_CHUNK_SIZE, MM_CHUNK_SIZE, &chunks[i]);
        if (rc == 0)
            touch(chunks[i], MM_CHUNK_SIZE);
    }
    *ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    return rc;
}

int mm__run_grow_mm(uint64_t bytes, double *ms)
{
    size_t n = (size_t)(bytes / MM_CHUNK_SIZE);
    void **chunks = calloc(n, sizeof(*chunks));
    mm_bench_daemon_t d;
    mm_client_t *c = NULL;
    mm_client_opts_t o;
    json_t *status = NULL;
    int rc;

    if (chunks == NULL)
        return -ENOMEM;
    rc = mm__bench_daemon_start(&d, RUN_CAPACITY, "warn");
    if (rc < 0)
        goto out_free;
    mm_client_opts_init(&o);
    o.name = "grow";
    o.max_bytes = bytes + MM_CHUNK_SIZE; /* room for the allocator's own chunk */
    rc = mm_client_open(d.sock, &o, &c);
    if (rc == 0)
        rc = fill_and_free(c, chunks, n);
    /* The host takes the free chunks back, then lets the client grow. */
    if (rc == 0)
        rc = set_target(&d, "grow", MM_CHUNK_SIZE);
    if (rc == 0)
        rc = mm__bench_wait_resident(&d, 2 * MM_CHUNK_SIZE, RESIZE_DEADLINE_QUICK, &status);
    json_decref(status);
    if (rc == 0)
        rc = set_target(&d, "grow", o.max_bytes);
    if (rc == 0)
        rc = grow_timed(c, chunks, n, ms);
    if (rc < 0)
        fprintf(stderr, "mmbench run: grow (mm): %s\n", mm_strerror(rc));
    if (c != NULL)
        mm_client_close(c);
    mm__bench_daemon_stop(&d);
out_free:
    free(chunks);
    return rc;
}
