/*
 * Integration tests of libmm's public API (<mm/mm.h>) against a real mmsrv:
 * opening and its errors, allocation and free with their argument checks,
 * exhaustion, several threads on one client, event-loop dispatch of a
 * revocation, usage reports and fork. Each test starts its own daemon in a
 * temp state directory (stopped in the suite's .fini). Behaviour is asserted
 * with generous timeouts; speed is measured by mmbench, never here.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "bench.h"
#include "common.h"

/* The daemon's entry for client id in `mmctl --json status` (a new
 * reference the caller drops), or NULL if it is not listed. */
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

/* The name the daemon shows for client id, copied into buf. */
static void client_name(uint32_t id, char *buf, size_t cap)
{
    json_t *c = client_entry(id);
    cr_assert_not_null(c, "client %u is listed", id);
    const char *name = json_string_value(json_object_get(c, "name"));
    cr_assert_not_null(name, "client %u has a name", id);
    snprintf(buf, cap, "%s", name);
    json_decref(c);
}

static uint64_t owned_bytes(mm_client_t *c)
{
    mm_client_stats_t s;
    cr_assert_eq(mm_client_stats(c, &s), 0);
    return s.owned_bytes;
}

/* A temp directory for paths no daemon serves; the test removes it. */
static void make_tmpdir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/mm-client-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

TestSuite(client, .init = NULL, .fini = stop_daemon, .timeout = 120);

/* ---- Opening ------------------------------------------------------------ */

Test(client, open_fails_with_enoent_when_no_socket_file_exists)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/mm.sock", dir);
    mm_client_t *c = NULL;
    cr_expect_eq(mm_client_open(path, NULL, &c), -ENOENT);
    cr_expect_null(c, "*out untouched on failure");
    rmdir(dir);
}

Test(client, open_fails_with_econnrefused_when_nobody_listens)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/mm.sock", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    cr_assert_geq(s, 0);
    cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
    mm_client_t *c = NULL;
    /* Bound but not listening, then a stale socket file nobody owns. */
    cr_expect_eq(mm_client_open(path, NULL, &c), -ECONNREFUSED, "bound, not listening");
    close(s);
    cr_expect_eq(mm_client_open(path, NULL, &c), -ECONNREFUSED, "stale socket file");
    cr_expect_null(c);
    unlink(path);
    rmdir(dir);
}

Test(client, open_refuses_bad_region_sizes_with_einval)
{
    start_daemon("64M");
    mm_client_opts_t o;
    mm_client_t *c = NULL;
    mm_client_opts_init(&o);
    o.max_bytes = 0;
    cr_expect_eq(mm_client_open(daemon_.sock, &o, &c), -EINVAL, "max_bytes 0");
    o.max_bytes = MM_REGION_MAX_BYTES + 1;
    cr_expect_eq(mm_client_open(daemon_.sock, &o, &c), -EINVAL, "max_bytes over the limit");
    o.max_bytes = MM_REGION_MAX_BYTES * 2;
    cr_expect_eq(mm_client_open(daemon_.sock, &o, &c), -EINVAL, "max_bytes far over the limit");
    cr_expect_null(c);
    /* The daemon serves a good client afterwards. */
    c = open_client("after-bad", 4 << 20, 0);
    mm_client_close(c);
}

Test(client, open_with_null_opts_uses_defaults)
{
    start_daemon("64M");
    mm_client_t *c = NULL;
    int err = mm_client_open(daemon_.sock, NULL, &c);
    cr_assert_eq(err, 0, "opens with defaults: %s", mm_strerror(err));
    cr_expect_eq(mm_client_region_bytes(c), 1ull << 30, "default region is 1 GiB");
    cr_expect_not_null(mm_client_base(c));
    char name[64], want[64];
    client_name(mm_client_id(c), name, sizeof name);
    snprintf(want, sizeof want, "pid-%d", (int)getpid());
    cr_expect_str_eq(name, want, "default name");
    json_t *e = client_entry(mm_client_id(c));
    cr_assert_not_null(e);
    cr_expect_eq(mm__bench_json_u64(e, "weight"), 100, "default weight");
    cr_expect_eq(mm__bench_json_u64(e, "pid"), (uint64_t)getpid());
    json_decref(e);
    mm_client_stats_t s;
    cr_assert_eq(mm_client_stats(c, &s), 0);
    cr_expect_eq(s.region_bytes, 1ull << 30);
    cr_expect_eq(s.owned_bytes, 0, "a new client owns nothing");
    mm_client_close(c);
}

Test(client, open_truncates_a_long_name_and_refuses_an_unprintable_one)
{
    start_daemon("64M");
    const char *longname = "a-client-name-that-is-much-longer-than-thirty-one-chars";
    mm_client_t *c = open_client(longname, 4 << 20, 0);
    char name[64];
    client_name(mm_client_id(c), name, sizeof name);
    cr_expect_eq(strlen(name), MM_NAME_MAX - 1, "name cut to %d chars: '%s'", MM_NAME_MAX - 1,
                 name);
    cr_expect_eq(strncmp(name, longname, MM_NAME_MAX - 1), 0, "a prefix of the name: '%s'", name);
    mm_client_close(c);

    mm_client_opts_t o;
    mm_client_t *bad = NULL;
    mm_client_opts_init(&o);
    o.max_bytes = 4 << 20;
    o.name = "bad\nname";
    cr_expect_eq(mm_client_open(daemon_.sock, &o, &bad), -EINVAL, "control character refused");
    o.name = "";
    cr_expect_eq(mm_client_open(daemon_.sock, &o, &bad), -EINVAL, "empty name refused");
    cr_expect_null(bad);
}

/* ---- Allocation --------------------------------------------------------- */

Test(client, alloc_checks_size_and_alignment)
{
    start_daemon("64M");
    mm_client_t *c = open_client("checks", 16 << 20, 0);
    void *p = NULL;
    cr_expect_eq(mm_alloc(c, 0, 0, &p), -EINVAL, "size 0");
    cr_expect_eq(mm_alloc(c, 4097, 0, &p), -EINVAL, "size not a frame multiple");
    cr_expect_eq(mm_alloc(c, 100, 0, &p), -EINVAL, "size below a frame");
    cr_expect_eq(mm_alloc(c, FRAME, 3 * FRAME, &p), -EINVAL, "align not a power of two");
    cr_expect_eq(mm_alloc(c, FRAME, 2048, &p), -EINVAL, "align below a frame");
    cr_expect_eq(mm_alloc(c, FRAME, 1, &p), -EINVAL, "align of one byte");
    cr_expect_eq(mm_alloc(c, mm_client_region_bytes(c) + FRAME, 0, &p), -EINVAL,
                 "size over the region");
    cr_expect_eq(mm_alloc(c, 64 * CHUNK, 0, &p), -EINVAL, "size far over the region");
    cr_expect_null(p, "nothing handed out");
    cr_expect_eq(owned_bytes(c), 0);
    mm_client_close(c);
}

typedef struct shape {
    size_t bytes, align;
} shape_t;

Test(client, allocations_of_many_shapes_are_inside_aligned_disjoint_and_writable)
{
    start_daemon("256M");
    mm_client_t *c = open_client("shapes", 64 << 20, 0);
    const shape_t shapes[] = {
        {FRAME, 0},       {3 * FRAME, 8 * FRAME}, {64 * FRAME, 0},        {100 * FRAME, 0},
        {512 * FRAME, 0}, {513 * FRAME, 0},       {3 * CHUNK, 2 * CHUNK},
    };
    enum { N = sizeof shapes / sizeof shapes[0] };
    uint8_t *p[N];
    uintptr_t base = (uintptr_t)mm_client_base(c);
    uint64_t region = mm_client_region_bytes(c), sum = 0;
    cr_assert_eq(region, 64u << 20);
    for (size_t i = 0; i < N; i++) {
        void *q = NULL;
        int err = mm_alloc(c, shapes[i].bytes, shapes[i].align, &q);
        cr_assert_eq(err, 0, "shape %zu (%zu bytes) allocated: %s", i, shapes[i].bytes,
                     mm_strerror(err));
        p[i] = q;
        uintptr_t a = (uintptr_t)q;
        size_t align = shapes[i].align ? shapes[i].align : FRAME;
        cr_assert(a >= base && a + shapes[i].bytes <= base + region, "shape %zu inside the region",
                  i);
        cr_expect_eq(a % align, 0, "shape %zu's address aligned to %zu", i, align);
        memset(q, (int)(i + 1), shapes[i].bytes);
        sum += shapes[i].bytes;
    }
    for (size_t i = 0; i < N; i++)
        for (size_t j = i + 1; j < N; j++)
            cr_expect(p[i] + shapes[i].bytes <= p[j] || p[j] + shapes[j].bytes <= p[i],
                      "shapes %zu and %zu do not overlap", i, j);
    for (size_t i = 0; i < N; i++) {
        size_t bad = 0;
        for (size_t k = 0; k < shapes[i].bytes; k += 512)
            bad += p[i][k] != (uint8_t)(i + 1);
        bad += p[i][shapes[i].bytes - 1] != (uint8_t)(i + 1);
        cr_expect_eq(bad, 0, "shape %zu kept its pattern", i);
    }
    cr_expect_eq(owned_bytes(c), sum, "owned is the sum of the allocations");
    for (size_t i = 0; i < N; i++)
        cr_expect_eq(mm_free(c, p[i], shapes[i].bytes), 0, "shape %zu freed", i);
    cr_expect_eq(owned_bytes(c), 0, "all freed");
    mm_client_close(c);
}

/* Where the region lands depends on the process's other mappings. Clients are
 * opened until one region base is not 4 MiB-aligned (or TRIES of them, where
 * the kernel aligns them all); before each, a page is mapped just below the
 * last region, so that a next region placed below it moves by a page. Every
 * client must return aligned addresses. */
Test(client, alloc_aligns_the_address_wherever_the_region_is_mapped)
{
    start_daemon("256M");
    enum { TRIES = 8 };
    const shape_t shapes[] = {
        {3 * FRAME, 8 * FRAME}, {FRAME, 64 * FRAME}, {CHUNK, CHUNK}, {3 * CHUNK, 2 * CHUNK}};
    void *pads[TRIES];
    mm_client_t *c[TRIES];
    int n = 0;
    bool misaligned_base = false;
    while (n < TRIES && !misaligned_base) {
        uint8_t *hint = n ? (uint8_t *)mm_client_base(c[n - 1]) - FRAME : NULL;
        pads[n] = mmap(hint, FRAME, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0), -1, 0);
        if (pads[n] == MAP_FAILED) /* that page is taken: a page anywhere */
            pads[n] = mmap(NULL, FRAME, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(pads[n], MAP_FAILED);
        c[n] = open_client("aligned", 16 << 20, 0);
        misaligned_base = (uintptr_t)mm_client_base(c[n]) % (2 * CHUNK) != 0;
        n++;
    }
    for (int k = 0; k < n; k++) {
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            void *q = NULL;
            int err = mm_alloc(c[k], shapes[i].bytes, shapes[i].align, &q);
            cr_assert_eq(err, 0, "client %d shape %zu: %s", k, i, mm_strerror(err));
            cr_expect_eq((uintptr_t)q % shapes[i].align, 0,
                         "client %d: mm_alloc(%zu, align %zu) returned %p, not aligned "
                         "(region base %p)",
                         k, shapes[i].bytes, shapes[i].align, q, mm_client_base(c[k]));
        }
    }
    for (int k = 0; k < n; k++) {
        mm_client_close(c[k]);
        munmap(pads[k], FRAME);
    }
}

Test(client, free_refuses_ranges_that_are_not_allocated)
{
    start_daemon("64M");
    mm_client_t *c = open_client("frees", 16 << 20, 0);
    uint8_t *base = mm_client_base(c);
    uint64_t region = mm_client_region_bytes(c);
    void *p = NULL;
    cr_assert_eq(mm_alloc(c, 4 * FRAME, 0, &p), 0);
    uint8_t *q = p;
    cr_expect_eq(mm_free(c, base + region - 4 * FRAME, FRAME), -EINVAL, "never allocated");
    cr_expect_eq(mm_free(c, q + 4 * FRAME, FRAME), -EINVAL, "just past an allocation");
    cr_expect_eq(mm_free(c, q, 5 * FRAME), -EINVAL, "longer than the allocation");
    cr_expect_eq(mm_free(c, base - FRAME, FRAME), -EINVAL, "below the region");
    cr_expect_eq(mm_free(c, base + region, FRAME), -EINVAL, "above the region");
    cr_expect_eq(mm_free(c, base + region - FRAME, 2 * FRAME), -EINVAL, "across the region end");
    cr_expect_eq(mm_free(c, q + 1, FRAME), -EINVAL, "unaligned pointer");
    cr_expect_eq(mm_free(c, q, FRAME + 1), -EINVAL, "unaligned size");
    cr_expect_eq(mm_free(c, q, 0), -EINVAL, "size 0");
    cr_expect_eq(mm_free(c, NULL, FRAME), -EINVAL, "NULL");
    cr_expect_eq(owned_bytes(c), 4 * FRAME, "refused frees changed nothing");
    cr_expect_eq(mm_free(c, q + FRAME, FRAME), 0, "part of an allocation");
    cr_expect_eq(mm_free(c, q + FRAME, FRAME), -EINVAL, "double free of that part");
    cr_expect_eq(mm_free(c, q, 4 * FRAME), -EINVAL, "a range with a hole in it");
    cr_expect_eq(mm_free(c, q, FRAME), 0);
    cr_expect_eq(mm_free(c, q + 2 * FRAME, 2 * FRAME), 0);
    cr_expect_eq(mm_free(c, q, FRAME), -EINVAL, "double free");
    cr_expect_eq(owned_bytes(c), 0);
    mm_client_close(c);
}

Test(client, alloc_reports_enomem_when_the_region_is_full_and_recovers_after_a_free)
{
    start_daemon("64M");
    mm_client_t *c = open_client("filler", 8 << 20, 0);
    const size_t max = (8 << 20) / FRAME;
    void **frames = calloc(max + 1, sizeof *frames);
    cr_assert_not_null(frames);
    size_t n = 0;
    int err = 0;
    while (n <= max && (err = mm_alloc(c, FRAME, 0, &frames[n])) == 0)
        n++;
    cr_expect_eq(err, -ENOMEM, "the full region says ENOMEM: %s", mm_strerror(err));
    cr_expect_eq(n, max, "every frame of the region was handed out");
    cr_expect_eq(owned_bytes(c), (uint64_t)n * FRAME);
    cr_assert_gt(n, 10);
    cr_expect_eq(mm_free(c, frames[n / 2], FRAME), 0);
    void *again = NULL;
    cr_expect_eq(mm_alloc(c, FRAME, 0, &again), 0, "a freed frame can be had again");
    cr_expect_eq(again, frames[n / 2], "and it is the one freed");
    frames[n / 2] = again;
    cr_expect_eq(mm_alloc(c, FRAME, 0, &again), -ENOMEM, "full again");
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(mm_free(c, frames[i], FRAME), 0);
    cr_expect_eq(owned_bytes(c), 0);
    free(frames);
    mm_client_close(c);
}

/* ---- Threads ------------------------------------------------------------ */

/* Not a benchmark: fixed seeds, checks only. Each thread allocates and
 * frees single frames, fills each with its own byte and checks it before the
 * free; owner[] records which thread holds each frame, so a frame handed to
 * two threads at once is seen at once. Errors are counted (asserts are for
 * the main thread). */
#define THREADS        4
#define THREAD_OPS     20000
#define THREAD_MAX_HAD 256

typedef struct thread_ctx {
    mm_client_t *c;
    _Atomic uint8_t *owner; /* one entry per frame of the region */
    pthread_barrier_t *start;
    int id;
    uint64_t seed;
    unsigned alloc_errors, double_handouts, pattern_errors, free_errors, allocs;
    int first_alloc_error; /* the first error mm_alloc returned, or 0 */
    int first_error_op;    /* and the op number it happened at */
} thread_ctx_t;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void thread_free_one(thread_ctx_t *t, uint8_t *p)
{
    uint8_t mark = (uint8_t)(t->id + 1);
    size_t bad = 0;
    for (size_t k = 0; k < FRAME; k++)
        bad += p[k] != mark;
    t->pattern_errors += bad != 0;
    size_t idx = (size_t)(p - (uint8_t *)mm_client_base(t->c)) / FRAME;
    uint8_t was = atomic_exchange(&t->owner[idx], 0);
    t->double_handouts += was != mark;
    t->free_errors += mm_free(t->c, p, FRAME) != 0;
}

static void *thread_main(void *arg)
{
    thread_ctx_t *t = arg;
    uint8_t *had[THREAD_MAX_HAD];
    size_t n = 0;
    uint8_t mark = (uint8_t)(t->id + 1);
    pthread_barrier_wait(t->start); /* all threads' first allocations at once */
    for (int op = 0; op < THREAD_OPS; op++) {
        uint64_t r = xorshift(&t->seed);
        if (n < THREAD_MAX_HAD && (n == 0 || r % 3 != 0)) {
            void *q = NULL;
            int err = mm_alloc(t->c, FRAME, 0, &q);
            if (err != 0) {
                if (t->alloc_errors++ == 0) {
                    t->first_alloc_error = err;
                    t->first_error_op = op;
                }
                continue;
            }
            t->allocs++;
            size_t idx = (size_t)((uint8_t *)q - (uint8_t *)mm_client_base(t->c)) / FRAME;
            uint8_t was = atomic_exchange(&t->owner[idx], mark);
            t->double_handouts += was != 0;
            memset(q, mark, FRAME);
            had[n++] = q;
        } else {
            size_t k = (size_t)((r >> 8) % n);
            thread_free_one(t, had[k]);
            had[k] = had[--n];
        }
    }
    while (n > 0)
        thread_free_one(t, had[--n]);
    return NULL;
}

Test(client, threads_allocating_frames_never_share_one)
{
    start_daemon("256M");
    mm_client_t *c = open_client("threads", 64 << 20, 0);
    size_t nframes = mm_client_region_bytes(c) / FRAME;
    _Atomic uint8_t *owner = calloc(nframes, sizeof *owner);
    cr_assert_not_null(owner);
    thread_ctx_t ctx[THREADS];
    pthread_t th[THREADS];
    pthread_barrier_t start;
    cr_assert_eq(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++) {
        ctx[i] = (thread_ctx_t){.c = c,
                                .owner = owner,
                                .start = &start,
                                .id = i,
                                .seed = 0x9e3779b97f4a7c15ull * (i + 1)};
        cr_assert_eq(pthread_create(&th[i], NULL, thread_main, &ctx[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < THREADS; i++) {
        cr_expect_gt(ctx[i].allocs, 0, "thread %d allocated", i);
        cr_expect_eq(ctx[i].alloc_errors, 0,
                     "thread %d: %u of %u allocations failed, the first at op %d with %s", i,
                     ctx[i].alloc_errors, ctx[i].alloc_errors + ctx[i].allocs,
                     ctx[i].first_error_op, mm_strerror(ctx[i].first_alloc_error));
        cr_expect_eq(ctx[i].double_handouts, 0, "thread %d: frames held by two threads", i);
        cr_expect_eq(ctx[i].pattern_errors, 0, "thread %d: frames overwritten", i);
        cr_expect_eq(ctx[i].free_errors, 0, "thread %d: free errors", i);
    }
    cr_expect_eq(owned_bytes(c), 0, "every frame was freed");
    free(owner);
    mm_client_close(c);
}

/* ---- Event-loop mode ------------------------------------------------------ */

typedef struct revoke_log {
    int calls;
    mm_revoke_request_t req;
    uint64_t now_ns; /* when the handler ran */
    void *give;      /* the chunk it gives back */
    int free_rc;
} revoke_log_t;

static uint64_t log_revoke(mm_client_t *c, const mm_revoke_request_t *req, void *arg)
{
    revoke_log_t *l = arg;
    l->calls++;
    l->req = *req;
    l->now_ns = mm__bench_now_ns();
    if (l->calls > 1)
        return 0;
    l->free_rc = mm_free(c, l->give, CHUNK);
    return l->free_rc == 0 ? CHUNK : 0;
}

Test(client, dispatch_runs_the_revocation_handler_once_per_request)
{
    start_daemon("8M");
    revoke_log_t log = {0};
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = "looper";
    o.max_bytes = 16 << 20;
    o.on_revoke = log_revoke;
    o.revoke_arg = &log;
    mm_client_t *c = NULL;
    cr_assert_eq(mm_client_open(daemon_.sock, &o, &c), 0);
    void *chunks[4];
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(mm_alloc(c, CHUNK, CHUNK, &chunks[i]), 0, "chunk %d", i);
        memset(chunks[i], i + 1, CHUNK);
    }
    log.give = chunks[0];
    int fd = mm_client_fd(c);
    cr_assert_geq(fd, 0);
    /* The host also rings when it changes the target: no request yet. */
    cr_assert_eq(mm_client_dispatch(c), 0);
    cr_assert_eq(log.calls, 0, "no revocation before pressure");
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    mm_client_t *asker = open_client("asker", 16 << 20, 0);
    void *p = NULL;
    cr_assert_eq(mm_alloc(asker, CHUNK, CHUNK, &p), -ENOMEM, "capacity is all held");
    cr_assert_eq(poll(&pfd, 1, 5000), 1, "the doorbell rings within 5 s");
    cr_assert(pfd.revents & POLLIN);
    cr_assert_eq(mm_client_dispatch(c), 0);
    cr_assert_eq(log.calls, 1, "the handler ran once");
    cr_expect_gt(log.req.bytes, 0, "it asks for bytes");
    cr_expect_gt(log.req.seq, 0);
    cr_expect_gt(log.req.deadline_ns, log.now_ns, "the deadline was in the future");
    cr_expect_eq(log.req.reason, MM_REVOKE_CLIENT, "another client needs memory");
    cr_expect_eq(log.free_rc, 0, "the handler could free");
    cr_assert_eq(mm_client_dispatch(c), 0);
    cr_expect_eq(log.calls, 1, "no new request, no second call");

    /* What the handler gave reaches the other client. */
    int err = -ENOMEM;
    for (int i = 0; i < 100 && err == -ENOMEM; i++, sleep_ms(50))
        err = mm_alloc(asker, CHUNK, CHUNK, &p);
    cr_expect_eq(err, 0, "the chunk given back was granted: %s", mm_strerror(err));
    for (int i = 1; i < 4; i++)
        cr_expect_eq(((uint8_t *)chunks[i])[CHUNK - 1], i + 1, "chunk %d intact", i);
    mm_client_close(asker);
    mm_client_close(c);
}

/* ---- Reports ---------------------------------------------------------- */

Test(client, report_publishes_usage)
{
    start_daemon("64M");
    mm_client_t *c = open_client("reporter", 16 << 20, 0);
    void *p = NULL;
    cr_assert_eq(mm_alloc(c, CHUNK, 0, &p), 0);
    mm_usage_t u = {.live_bytes = 1 << 20,
                    .heap_bytes = 2 << 20,
                    .garbage_bytes = 1 << 20,
                    .cost_ns_per_mib = 1000};
    cr_expect_eq(mm_report(c, &u), 0);
    cr_expect_eq(mm_report(c, NULL), 0, "a report without usage");
    mm_client_stats_t s;
    cr_assert_eq(mm_client_stats(c, &s), 0);
    cr_expect_eq(s.owned_bytes, CHUNK);
    cr_expect_eq(s.region_bytes, 16u << 20);
    json_t *e = client_entry(mm_client_id(c));
    cr_expect_not_null(e, "the reporting client is still served");
    json_decref(e);
    mm_client_close(c);
}

/* ---- Fork --------------------------------------------------------------- */

Test(client, a_forked_child_does_not_inherit_the_region)
{
    start_daemon("64M");
    mm_client_t *c = open_client("forker", 16 << 20, 0);
    void *p = NULL;
    cr_assert_eq(mm_alloc(c, CHUNK, 0, &p), 0);
    memset(p, 0x5a, CHUNK);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_DUMPABLE, 0); /* no core file for the expected fault */
        signal(SIGSEGV, SIG_DFL);
        const volatile uint8_t *b = mm_client_base(c);
        _exit(b[0] == 0x5a ? 3 : 4); /* the region was still mapped */
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
              "the child faults on the region (status 0x%x)", st);
    size_t bad = 0;
    for (size_t k = 0; k < CHUNK; k += 64)
        bad += ((uint8_t *)p)[k] != 0x5a;
    cr_expect_eq(bad, 0, "the parent's data is intact");
    cr_expect_eq(((uint8_t *)mm_client_base(c))[0], 0x5a);
    void *q = NULL;
    cr_expect_eq(mm_alloc(c, CHUNK, 0, &q), 0, "the parent is still served");
    cr_expect_eq(owned_bytes(c), q ? 2 * CHUNK : CHUNK);
    mm_client_close(c);
}
