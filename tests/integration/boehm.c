/*
 * Integration tests of mm-gc (gc-integration/boehm): a Boehm GC heap in mm
 * frames. Each test starts its own daemon. Some run the GC in this process
 * (mm_gc_open, then GC_INIT: this binary links libmm-gc before libgc, so
 * libgc's mmap/madvise calls reach its hooks); others run mm-gc-demo as a
 * child, which verifies its live set by checksum when stopped. Timeouts are
 * generous: this checks behaviour, mmbench measures speed.
 */
#define GC_THREADS
#include <gc/gc.h>

#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mm/gc.h>
#include <mm/mm.h>

#include "bench.h"
#include "common.h"
#include "procs.h"

#define MIB       (1ull << 20)
#define OBJ_BYTES (64u * 1024 - 64) /* 16 whole heap blocks each */

TestSuite(boehm, .fini = stop_daemon, .timeout = 120);

/* Roots for the in-process GC: libgc scans this binary's data segment. */
static uint64_t **g_live;
static size_t g_nlive;

static uint64_t word_of(size_t obj, size_t w)
{
    return (obj * 0x9e3779b97f4a7c15ull) ^ (w * 0xbf58476d1ce4e5b9ull) ^ 0x1234;
}

static int in_client_region(mm_client_t *c, const void *p)
{
    const char *b = mm_client_base(c);
    return (const char *)p >= b && (const char *)p < b + mm_client_region_bytes(c);
}

static int in_region(const void *p)
{
    return in_client_region(mm_gc_client(), p);
}

static counting_source_t g_counted; /* the attached source's state */

/* Open the GC client on the test's daemon, then start the GC. */
static mm_client_t *gc_start(const char *name, uint64_t max_bytes)
{
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = max_bytes;
    mm_client_t *c = NULL;
    int err = mm_gc_open(daemon_.sock, &o, &c);
    cr_assert_eq(err, 0, "mm_gc_open: %s", mm_strerror(err));
    GC_INIT();
    GC_allow_register_threads();
    return c;
}

/* Add n checksummed objects of OBJ_BYTES to the live set (root g_live). */
static void grow_live(size_t n)
{
    uint64_t **a = GC_MALLOC((g_nlive + n) * sizeof *a);
    cr_assert_not_null(a, "root array allocated");
    for (size_t i = 0; i < g_nlive; i++)
        a[i] = g_live[i];
    for (size_t i = g_nlive; i < g_nlive + n; i++) {
        uint64_t *p = GC_MALLOC_ATOMIC(OBJ_BYTES);
        cr_assert_not_null(p, "live object %zu allocated", i);
        for (size_t w = 0; w < OBJ_BYTES / 8; w++)
            p[w] = word_of(i, w);
        a[i] = p;
    }
    g_live = a;
    g_nlive += n;
}

static size_t live_errors(void)
{
    size_t errors = 0;
    for (size_t i = 0; i < g_nlive; i++)
        for (size_t w = 0; w < OBJ_BYTES / 8; w++)
            errors += g_live[i][w] != word_of(i, w);
    return errors;
}

/* n objects of garbage in whole heap blocks: all reachable while built, then
 * every reference dropped (through volatile: GC_MALLOC is malloc-like, and
 * the optimiser would delete the clearing stores). */
static void make_garbage(size_t n)
{
    void **hold = GC_MALLOC(n * sizeof *hold);
    cr_assert_not_null(hold);
    for (size_t i = 0; i < n; i++) {
        hold[i] = GC_MALLOC_ATOMIC(OBJ_BYTES);
        cr_assert_not_null(hold[i], "garbage object %zu allocated", i);
    }
    void *volatile *clear = hold;
    for (size_t i = 0; i < n; i++)
        clear[i] = NULL;
}

static uint64_t resident_now(void)
{
    mm_client_stats_t s;
    cr_assert_eq(mm_client_stats(mm_gc_client(), &s), 0);
    return s.resident_bytes;
}

/* mmctl capacity, tried up to three times: in the in-process tests a
 * collection on libmm's thread signals this (registered) thread while it
 * drives mmctl, and a setting is safe to repeat. */
static void set_capacity_bytes(uint64_t bytes)
{
    char size[32];
    snprintf(size, sizeof size, "%lluK", (unsigned long long)(bytes >> 10));
    const char *args[] = {"capacity", size, NULL};
    int err = 0;
    for (int i = 0; i < 3; i++)
        if ((err = mm__bench_ctl(&daemon_, args, NULL)) == 0)
            return;
    cr_assert_fail("mmctl capacity %s: %s", size, mm_strerror(err));
}

/* Poll this process's own residency (kernel truth, no mmctl) until it is
 * <= limit; 0, or -1 after timeout_ms. */
static int wait_resident_at_most(uint64_t limit, long timeout_ms)
{
    for (long ms = 0; ms <= timeout_ms; ms += 5) {
        if (resident_now() <= limit)
            return 0;
        sleep_ms(5);
    }
    return -1;
}

/* Poll a client field until it is <= limit; returns the ms it took or -1. */
static long wait_field_at_most(uint32_t id, const char *key, uint64_t limit, long timeout_ms)
{
    uint64_t t0 = mm__bench_now_ns();
    for (;;) {
        long ms = (long)((mm__bench_now_ns() - t0) / 1000000u);
        if (client_field(id, key) <= limit)
            return ms;
        if (ms > timeout_ms)
            return -1;
        sleep_ms(5);
    }
}

static void demo_start(mm_proc_t *p, const char *name, const char *live, const char *garbage)
{
    const char *args[] = {"--socket", daemon_.sock, "--name", name, "--live",
                          live,       "--garbage",  garbage,  NULL};
    cr_assert_eq(mm__bench_start_ready(p, "mm-gc-demo", args), 0, "mm-gc-demo gets ready");
}

Test(boehm, gc_heap_is_served_from_region_frames)
{
    start_daemon("512M");
    mm_client_t *c = gc_start("gc-heap", 256 * MIB);
    uint64_t owned0 = client_field(mm_client_id(c), "owned_bytes");
    grow_live(512); /* 32 MiB */
    for (size_t i = 0; i < g_nlive; i++)
        cr_assert(in_region(GC_base(g_live[i])), "object %zu lies in the region", i);
    cr_assert(in_region(g_live), "the root array lies in the region");
    mm_gc_stats_t s;
    cr_assert_eq(mm_gc_stats(&s), 0);
    cr_assert_geq(s.served_bytes, 32 * MIB, "the hooks served the heap (%llu bytes)",
                  (unsigned long long)s.served_bytes);
    uint64_t owned = client_field(mm_client_id(c), "owned_bytes");
    cr_assert_geq(owned, owned0 + 32 * MIB, "the host sees the heap as owned frames (%llu)",
                  (unsigned long long)owned);
    cr_assert_geq(resident_now(), 32 * MIB, "and as resident frames");
    cr_assert_eq(live_errors(), 0);
}

Test(boehm, mmap_of_other_callers_is_untouched)
{
    start_daemon("512M");
    gc_start("gc-other", 64 * MIB);
    uint64_t served = 0;
    mm_gc_stats_t s;
    cr_assert_eq(mm_gc_stats(&s), 0);
    served = s.served_bytes;
    void *p = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    cr_assert(!in_region(p), "a plain mmap from the test is outside the region");
    memset(p, 1, 4 * MIB);
    cr_assert_eq(madvise(p, 4 * MIB, MADV_DONTNEED), 0);
    cr_assert_eq(((unsigned char *)p)[12345], 0, "MADV_DONTNEED of private memory zeroes it");
    cr_assert_eq(munmap(p, 4 * MIB), 0);
    cr_assert_eq(mm_gc_stats(&s), 0);
    cr_assert_eq(s.served_bytes, served, "the hooks served nothing for the test's mmap");
    /* Neither MAP_PRIVATE nor MAP_SHARED: the kernel says EINVAL. */
    cr_assert_eq(mmap(NULL, 4096, PROT_READ, MAP_ANONYMOUS, -1, 0), MAP_FAILED,
                 "the real mmap's errors come through");
    cr_assert_eq(errno, EINVAL);
}

Test(boehm, revocation_returns_the_garbage_and_keeps_live_data)
{
    start_daemon("1G");
    mm_proc_t p;
    demo_start(&p, "demo-revoke", "32M", "128M");
    uint32_t id = client_id_by_name("demo-revoke");
    cr_assert_neq(id, 0, "the demo is listed");
    uint64_t resident = client_field(id, "resident_bytes");
    uint64_t garbage = client_field(id, "garbage_bytes");
    cr_assert_geq(garbage, 128 * MIB, "the host sees the garbage (%llu)",
                  (unsigned long long)garbage);
    /* Leave room for the live heap only: the host must ask for the garbage. */
    uint64_t t0 = mm__bench_now_ns();
    set_capacity_bytes(resident - garbage + 16 * MIB);
    uint64_t limit = resident - garbage * 8 / 10;
    long ms = wait_field_at_most(id, "resident_bytes", limit, 5000);
    double total_ms = (double)(mm__bench_now_ns() - t0) / 1e6;
    uint64_t after = client_field(id, "resident_bytes");
    cr_assert_geq(ms, 0, "resident fell from %llu to %llu, not to %llu",
                  (unsigned long long)resident, (unsigned long long)after,
                  (unsigned long long)limit);
    cr_log_info("boehm: garbage %llu MiB, residency dropped %llu MiB in %.0f ms",
                (unsigned long long)(garbage / MIB), (unsigned long long)((resident - after) / MIB),
                total_ms);
    /* The answer may come after the drop: the handler goes on collecting
     * until three calls give nothing more. */
    uint64_t revoked = 0;
    for (int i = 0; i < 500 && revoked == 0; i++, sleep_ms(10))
        revoked = client_field(id, "revoked_bytes");
    cr_assert_gt(revoked, 0, "the host counted the answer");
    bool intact = false;
    cr_assert_eq(mm__bench_hold_stop(&p, &intact), 0);
    cr_assert(intact, "mm-gc-demo verified its live set");
}

Test(boehm, grow_after_shrink_keeps_data)
{
    start_daemon("1G");
    gc_start("gc-grow", 512 * MIB);
    grow_live(128);     /* 8 MiB live */
    make_garbage(1024); /* 64 MiB garbage */
    GC_gcollect();
    mm_gc_stats_t s;
    cr_assert_eq(mm_gc_stats(&s), 0);
    cr_assert_geq(s.garbage_bytes, 64 * MIB);
    uint64_t resident = resident_now();

    /* The handler runs on libmm's thread, which joins the GC to collect. */
    set_capacity_bytes(resident - s.garbage_bytes + 8 * MIB);
    uint64_t limit = resident - s.garbage_bytes * 8 / 10;
    cr_assert_eq(wait_resident_at_most(limit, 5000), 0, "the revocation shrank the heap");
    cr_assert_eq(live_errors(), 0, "live data survived the shrink");
    /* The punches come before the handler returns: wait for its answer. */
    for (int i = 0; i < 1000 && mm_gc_stats(&s) == 0 && s.revocations == 0; i++)
        sleep_ms(5);
    cr_assert_geq(s.revocations, 1, "the handler answered");
    cr_assert_gt(s.unmapped_bytes, 0, "libgc unmapped blocks");

    set_capacity_bytes(1ull << 30);
    uint64_t shrunk = resident_now();
    grow_live(1024); /* 64 MiB more, in the released ranges or new ones */
    for (size_t i = 0; i < g_nlive; i++)
        cr_assert(in_region(GC_base(g_live[i])), "object %zu lies in the region", i);
    cr_assert_eq(live_errors(), 0, "old and new data intact after growing again");
    cr_assert_geq(resident_now(), shrunk + 60 * MIB, "the heap is resident again");
}

Test(boehm, a_runtime_that_cannot_give_enough_says_so)
{
    start_daemon("1G");
    mm_proc_t p;
    demo_start(&p, "demo-short", "64M", "16M");
    uint32_t id = client_id_by_name("demo-short");
    uint64_t resident = client_field(id, "resident_bytes");
    uint64_t garbage = client_field(id, "garbage_bytes");
    /* Below the live set: the host needs more than the garbage. */
    uint64_t capacity = 32 * MIB;
    uint64_t needed = resident - capacity;
    set_capacity_bytes(capacity);
    uint64_t revoked = 0;
    for (int i = 0; i < 500 && revoked == 0; i++) {
        sleep_ms(10);
        revoked = client_field(id, "revoked_bytes");
    }
    sleep_ms(300); /* later requests find nothing more to give */
    revoked = client_field(id, "revoked_bytes");
    uint64_t after = client_field(id, "resident_bytes");
    cr_log_info("boehm: needed %llu MiB, garbage %llu MiB, given %llu MiB",
                (unsigned long long)(needed / MIB), (unsigned long long)(garbage / MIB),
                (unsigned long long)(revoked / MIB));
    cr_assert_gt(revoked, 0, "the runtime answered with what it had");
    cr_assert_lt(revoked, needed, "and said it was less than needed");
    cr_assert_geq(revoked, garbage * 8 / 10, "it gave its garbage");
    cr_assert_gt(after, capacity, "the live heap stayed resident");
    bool intact = false;
    cr_assert_eq(mm__bench_hold_stop(&p, &intact), 0);
    cr_assert(intact, "mm-gc-demo verified its live set");
}

static uint64_t abs_diff(uint64_t a, uint64_t b)
{
    return a > b ? a - b : b - a;
}

Test(boehm, host_view_of_live_and_garbage_matches_the_runtime)
{
    start_daemon("1G");
    mm_client_t *c = gc_start("gc-view", 512 * MIB);
    uint32_t id = mm_client_id(c);
    grow_live(256);    /* 16 MiB */
    make_garbage(512); /* 32 MiB */
    GC_gcollect();
    mm_gc_stats_t s;
    cr_assert_eq(mm_gc_stats(&s), 0);
    uint64_t live = client_field(id, "live_bytes"), heap = client_field(id, "heap_bytes");
    uint64_t garbage = client_field(id, "garbage_bytes");
    cr_assert_leq(abs_diff(live, s.live_bytes), MIB, "live: host %llu, runtime %llu",
                  (unsigned long long)live, (unsigned long long)s.live_bytes);
    cr_assert_leq(abs_diff(heap, s.heap_bytes), MIB, "heap: host %llu, runtime %llu",
                  (unsigned long long)heap, (unsigned long long)s.heap_bytes);
    cr_assert_leq(abs_diff(garbage, s.garbage_bytes), MIB, "garbage: host %llu, runtime %llu",
                  (unsigned long long)garbage, (unsigned long long)s.garbage_bytes);
    cr_assert_geq(s.garbage_bytes, 32 * MIB, "the garbage is in whole free blocks");
    cr_assert_geq(s.live_bytes, 16 * MIB);
    cr_assert_gt(client_field(id, "cost_ns_per_mib"), 0, "a collection cost is declared");
    cr_assert_gt(s.collections, 0);
}

Test(boehm, explicit_shrink_drops_residency_by_the_garbage)
{
    start_daemon("1G");
    gc_start("gc-shrink", 256 * MIB);
    grow_live(64);
    make_garbage(512); /* 32 MiB */
    GC_gcollect();
    int64_t dropped = mm_gc_shrink();
    cr_assert_geq(dropped, (int64_t)(32 * MIB * 8 / 10), "dropped %lld", (long long)dropped);
    mm_gc_stats_t s;
    cr_assert_eq(mm_gc_stats(&s), 0);
    cr_assert_lt(s.garbage_bytes, MIB, "no mapped garbage left");
    cr_assert_eq(live_errors(), 0);
}

Test(boehm, a_forked_child_has_no_heap_and_passes_through)
{
    start_daemon("512M");
    mm_client_t *c = gc_start("gc-fork", 64 * MIB);
    grow_live(16);
    void *heap = g_live[0];
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int bad = 0;
        bad |= mm_gc_client() != NULL;
        /* The region is MADV_DONTFORK: nothing is mapped at the heap. */
        bad |= (msync((void *)((uintptr_t)heap & ~(uintptr_t)4095), 4096, MS_ASYNC) == 0) << 1;
        void *p = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        bad |= (p == MAP_FAILED) << 2;
        _exit(bad);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    cr_assert_eq(mm_gc_client(), c, "the parent stays attached");
    cr_assert_eq(live_errors(), 0, "the parent's heap is intact");
}

Test(boehm, open_refuses_misuse)
{
    start_daemon("512M");
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.max_bytes = 64 * MIB;
    o.on_revoke = (mm_revoke_fn)1;
    mm_client_t *c = NULL;
    cr_assert_eq(mm_gc_open(daemon_.sock, &o, &c), -EINVAL, "on_revoke belongs to the library");
    cr_assert_null(c);
    cr_assert_eq(mm_gc_stats(&(mm_gc_stats_t){0}), -ENOTCONN);
    cr_assert_eq(mm_gc_shrink(), -ENOTCONN);
    gc_start("gc-once", 64 * MIB);
    cr_assert_eq(mm_gc_open(daemon_.sock, NULL, &c), -EBUSY, "one GC client per process");
    mm_frame_source_t src = counting_source(&g_counted, NULL);
    cr_assert_eq(mm_gc_open_source(&src), -EBUSY, "nor a source beside the client");
    cr_assert_eq(g_counted.allocs + g_counted.releases + g_counted.residents, 0);
}

Test(boehm, a_frame_source_serves_the_heap_and_shrink_releases_through_it)
{
    start_daemon("1G");
    mm_client_t *c = open_client("gc-source", 256 * MIB, 0); /* the test's own */
    mm_frame_source_t src = counting_source(&g_counted, c);
    cr_assert_eq(mm_gc_open_source(&src), 0);
    memset(&src, 0, sizeof src); /* the library keeps its own copy */
    cr_assert_null(mm_gc_client(), "no GC client with a source");
    GC_INIT();
    grow_live(128);    /* 8 MiB */
    make_garbage(512); /* 32 MiB */
    GC_gcollect();

    uint64_t allocs = atomic_load(&g_counted.allocs);
    uint64_t served = atomic_load(&g_counted.alloc_bytes);
    cr_assert_gt(allocs, 0, "the heap came through the source's alloc");
    cr_assert_geq(served, 40 * MIB, "all of it (%llu bytes)", (unsigned long long)served);
    for (size_t i = 0; i < g_nlive; i++)
        cr_assert(in_client_region(c, GC_base(g_live[i])), "object %zu lies in the client", i);
    cr_assert(in_client_region(c, g_live), "the root array lies in the client");
    mm_gc_stats_t s;
    cr_assert_eq(mm_gc_stats(&s), 0);
    cr_assert_eq(s.served_bytes, served, "the hooks served what the source gave");
    cr_assert_geq(s.garbage_bytes, 32 * MIB);

    mm_client_stats_t before, after;
    cr_assert_eq(mm_client_stats(c, &before), 0);
    uint64_t releases = atomic_load(&g_counted.releases);
    uint64_t residents = atomic_load(&g_counted.residents);
    int64_t dropped = mm_gc_shrink();
    cr_assert_eq(mm_client_stats(c, &after), 0);
    cr_log_info("boehm source: shrink dropped %lld bytes in %llu releases", (long long)dropped,
                (unsigned long long)(atomic_load(&g_counted.releases) - releases));
    cr_assert_geq(dropped, (int64_t)(32 * MIB * 8 / 10), "dropped %lld", (long long)dropped);
    cr_assert_eq(dropped, (int64_t)before.resident_bytes - (int64_t)after.resident_bytes,
                 "the drop is what the source's residency fell by");
    cr_assert_gt(atomic_load(&g_counted.releases), releases, "the garbage went through release");
    cr_assert_geq(atomic_load(&g_counted.release_bytes), (uint64_t)dropped);
    cr_assert_geq(atomic_load(&g_counted.residents), residents + 2, "measured with the source");
    cr_assert_eq(atomic_load(&g_counted.frees), 0, "libgc keeps its ranges");
    cr_assert_eq(mm_gc_stats(&s), 0);
    cr_assert_eq(s.released_bytes, atomic_load(&g_counted.release_bytes));
    cr_assert_lt(s.garbage_bytes, MIB, "no mapped garbage left");
    cr_assert_eq(live_errors(), 0, "live data survived the shrink");
    /* The client and heap stay until exit: libgc may still touch its heap. */
}

Test(boehm, open_source_refuses_misuse)
{
    start_daemon("512M");
    mm_client_t *c = open_client("gc-source-misuse", 64 * MIB, 0);
    mm_frame_source_t good = counting_source(&g_counted, c), bad = good;
    cr_assert_eq(mm_gc_open_source(NULL), -EINVAL);
    bad.alloc = NULL;
    cr_assert_eq(mm_gc_open_source(&bad), -EINVAL, "alloc is needed");
    bad = good;
    bad.release = NULL;
    cr_assert_eq(mm_gc_open_source(&bad), -EINVAL, "release is needed");
    bad = good;
    bad.resident_bytes = NULL;
    cr_assert_eq(mm_gc_open_source(&bad), -EINVAL, "resident_bytes is needed");
    cr_assert_eq(mm_gc_stats(&(mm_gc_stats_t){0}), -ENOTCONN, "the refusals attached nothing");
    cr_assert_eq(mm_gc_shrink(), -ENOTCONN);

    bad = good;
    bad.free = NULL; /* libgc never frees: not needed */
    cr_assert_eq(mm_gc_open_source(&bad), 0);
    cr_assert_eq(mm_gc_open_source(&good), -EBUSY, "one source per process");
    mm_client_t *other = NULL;
    cr_assert_eq(mm_gc_open(daemon_.sock, NULL, &other), -EBUSY, "nor a client beside it");
    cr_assert_null(other);
    cr_assert_eq(mm_gc_stats(&(mm_gc_stats_t){0}), 0);
    cr_assert_eq(atomic_load(&g_counted.allocs) + atomic_load(&g_counted.releases) +
                     atomic_load(&g_counted.frees),
                 0, "no heap asked for before GC_INIT");

    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) /* a child detaches from the source, as from a client */
        _exit(mm_gc_stats(&(mm_gc_stats_t){0}) != -ENOTCONN || mm_gc_shrink() != -ENOTCONN);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    cr_assert_eq(mm_gc_stats(&(mm_gc_stats_t){0}), 0, "the parent stays attached");

    mm_gc_close();
    cr_assert_eq(mm_gc_stats(&(mm_gc_stats_t){0}), -ENOTCONN, "closed");
    cr_assert_null(mm_gc_client());
    mm_client_close(c); /* the source's memory stays the test's to close */
}

Test(boehm, demo_command_line)
{
    char prog[4096];
    cr_assert_eq(mm__bin_path("mm-gc-demo", prog, sizeof prog), 0);
    char *out = NULL;
    int st = 0;
    char *help[] = {prog, "--help", NULL};
    cr_assert_eq(mm__proc_run(help, &out, 10000, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--help exits 0");
    cr_assert_not_null(strstr(out, "usage: mm-gc-demo"));
    free(out);
    char *bad[] = {prog, "--socket", "/nonexistent", "--live", "lots", "--garbage", "1M", NULL};
    cr_assert_eq(mm__proc_run(bad, &out, 10000, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "a bad size exits 2");
    free(out);
    char *nod[] = {prog, "--socket", "/nonexistent/mm.sock", "--live", "1M", "--garbage",
                   "1M", NULL};
    cr_assert_eq(mm__proc_run(nod, &out, 10000, &st), 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "no daemon exits 1");
    free(out);
}
