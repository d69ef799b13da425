/*
 * Integration tests of libmm-jemalloc: a jemalloc arena whose extents are mm
 * frames, against a throw-away daemon. The test process is the client
 * (jemalloc is its malloc, Criterion's included), or runs mm-je-demo.
 * Behaviour only; speed is measured by mmbench.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jemalloc/jemalloc.h>
#include <mm/jemalloc.h>
#include <mm/mm.h>

#include "common.h"
#include "procs.h"

#define MiB            ((size_t)1 << 20)
#define ARENA_FLAGS(a) (MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE)

TestSuite(jemalloc, .init = NULL, .fini = stop_daemon, .timeout = 120);

static mm_client_t *je_open(const char *name, uint64_t max_bytes, unsigned *arena)
{
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = max_bytes;
    mm_client_t *c = NULL;
    int err = mm_jemalloc_open(daemon_.sock, &o, &c);
    cr_assert_eq(err, 0, "jemalloc client opens: %s", mm_strerror(err));
    err = mm_jemalloc_arena(c, arena);
    cr_assert_eq(err, 0, "arena created: %s", mm_strerror(err));
    return c;
}

static bool inside(mm_client_t *c, const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)mm_client_base(c);
    return a >= b && a + n <= b + mm_client_region_bytes(c);
}

static uint64_t resident(mm_client_t *c)
{
    mm_client_stats_t s;
    cr_assert_eq(mm_client_stats(c, &s), 0);
    return s.resident_bytes;
}

/* n values of size bytes, each filled with a pattern of its index. */
static void fill(unsigned arena, void **v, size_t n, size_t size, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = mallocx(size, ARENA_FLAGS(arena));
        cr_assert_not_null(v[i], "value %zu of %zu allocated", i, n);
        memset(v[i], (int)((i + seed) & 0xff), size);
    }
}

static size_t damaged(void **v, size_t n, size_t size, unsigned seed)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = v[i];
        for (size_t j = 0; j < size; j += 997)
            if (p[j] != ((i + seed) & 0xff)) {
                bad++;
                break;
            }
    }
    return bad;
}

static void drop_all(void **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dallocx(v[i], MALLOCX_TCACHE_NONE);
}

static uint64_t held_by(counting_source_t *cs)
{
    return atomic_load(&cs->alloc_bytes) - atomic_load(&cs->free_bytes);
}

Test(jemalloc, arena_allocations_live_in_the_region_and_metadata_does_not)
{
    start_daemon("256M");
    unsigned a = 0, again = 0;
    mm_client_t *c = je_open("je-region", 128 * MiB, &a);
    cr_assert_eq(mm_jemalloc_arena(c, &again), 0);
    cr_assert_eq(again, a, "one arena per client");
    const size_t sizes[] = {16, 100, 4096, 40000, 3 * MiB, 9 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = mallocx(sizes[i], ARENA_FLAGS(a));
        cr_assert_not_null(p);
        cr_assert(inside(c, p, sizes[i]), "a %zu-byte allocation is in the region", sizes[i]);
        memset(p, 0x5a, sizes[i]);
        dallocx(p, MALLOCX_TCACHE_NONE);
    }
    mm_jemalloc_stats_t st;
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_gt(st.metadata_bytes, 0, "arena metadata in private memory");
    cr_assert_gt(st.alloc_calls, 0);
    cr_assert_eq(st.hook_errors, 0);
    cr_assert_eq(mm_jemalloc_set_default(a, 1), -ENOTSUP, "no process-wide default in 5.3");
    cr_assert_eq(mm_jemalloc_set_default(0, 0), -EINVAL, "arena 0 is not an mm arena");
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.on_revoke = (mm_revoke_fn)1;
    mm_client_t *bad = NULL;
    cr_assert_eq(mm_jemalloc_open(daemon_.sock, &o, &bad), -EINVAL, "the library owns on_revoke");
    mm_jemalloc_close(c);
}

Test(jemalloc, frees_then_purge_drop_residency)
{
    start_daemon("512M");
    unsigned a = 0;
    mm_client_t *c = je_open("je-purge", 256 * MiB, &a);
    enum { LIVE = 512, GARBAGE = 1536, SIZE = 32 << 10 }; /* 16 MiB live, 48 MiB garbage */
    static void *live[LIVE], *garbage[GARBAGE];
    fill(a, live, LIVE, SIZE, 1);
    fill(a, garbage, GARBAGE, SIZE, 7);
    drop_all(garbage, GARBAGE);
    mm_jemalloc_stats_t st;
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_geq(st.dirty_bytes, 40 * MiB, "freed values are dirty: %llu",
                  (unsigned long long)st.dirty_bytes);
    /* The host sees what jemalloc itself counts: active live, dirty garbage. */
    cr_assert_eq(mm_jemalloc_report(c), 0);
    uint32_t id = mm_client_id(c);
    cr_assert_eq(client_field(id, "live_bytes"), st.active_bytes);
    cr_assert_eq(client_field(id, "garbage_bytes"), st.dirty_bytes + st.muzzy_bytes);
    uint64_t before = resident(c);
    int64_t dropped = mm_jemalloc_purge();
    uint64_t after = resident(c);
    cr_log_info("purge: resident %llu -> %llu MiB, dropped %lld bytes",
                (unsigned long long)(before >> 20), (unsigned long long)(after >> 20),
                (long long)dropped);
    cr_assert_geq(dropped, (int64_t)(40 * MiB), "purge returned the garbage: %lld",
                  (long long)dropped);
    cr_assert_eq((uint64_t)dropped, before - after, "the drop is st_blocks truth");
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_eq(st.dirty_bytes, 0);
    cr_assert_eq(st.hook_errors, 0);
    cr_assert_eq(damaged(live, LIVE, SIZE, 1), 0, "live values intact");
    /* Reuse after the purge: frames come back, values still right. */
    fill(a, garbage, GARBAGE / 2, SIZE, 9);
    cr_assert_eq(damaged(garbage, GARBAGE / 2, SIZE, 9), 0);
    drop_all(garbage, GARBAGE / 2);
    drop_all(live, LIVE);
    mm_jemalloc_close(c);
}

/* Wait until the client answered `n` revocations and the host counted them. */
static void wait_revocations(mm_client_t *c, uint64_t n)
{
    mm_jemalloc_stats_t st = {0};
    for (int i = 0; i < 200; i++, sleep_ms(25)) {
        cr_assert_eq(mm_jemalloc_stats(&st), 0);
        if (st.revocations >= n)
            break;
    }
    cr_assert_geq(st.revocations, n, "revocation answered");
    (void)c;
}

Test(jemalloc, revocation_purges_the_arena_and_live_values_survive_then_grows_again)
{
    start_daemon("256M");
    unsigned a = 0;
    mm_client_t *c = je_open("je-revoke", 200 * MiB, &a);
    enum { LIVE = 1024, GARBAGE = 2048, SIZE = 32 << 10 }; /* 32 MiB live, 64 MiB garbage */
    static void *live[LIVE], *garbage[GARBAGE];
    fill(a, live, LIVE, SIZE, 3);
    fill(a, garbage, GARBAGE, SIZE, 5);
    drop_all(garbage, GARBAGE);
    cr_assert_eq(mm_jemalloc_report(c), 0);
    uint64_t before = resident(c);
    cr_assert_geq(before, 96 * MiB);

    set_capacity("48M"); /* the garbage is not free frames: the host must ask */
    wait_revocations(c, 1);
    uint32_t id = mm_client_id(c);
    uint64_t revoked = 0;
    for (int i = 0; i < 200 && revoked == 0; i++, sleep_ms(25))
        revoked = client_field(id, "revoked_bytes");
    uint64_t after = resident(c);
    mm_jemalloc_stats_t st;
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_log_info("revocation: resident %llu -> %llu MiB, acked %llu MiB, purge %llu us",
                (unsigned long long)(before >> 20), (unsigned long long)(after >> 20),
                (unsigned long long)(revoked >> 20), (unsigned long long)(st.last_purge_ns / 1000));
    cr_assert_geq(revoked, 48 * MiB, "the host was given the garbage back: %llu",
                  (unsigned long long)revoked);
    cr_assert_leq(after, 48 * MiB, "resident down to capacity: %llu", (unsigned long long)after);
    cr_assert_eq(st.dirty_bytes, 0, "no dirty pages left");
    cr_assert_eq(damaged(live, LIVE, SIZE, 3), 0, "live values intact");

    set_capacity("256M"); /* grow after shrink */
    fill(a, garbage, GARBAGE, SIZE, 11);
    cr_assert_geq(resident(c), 90 * MiB, "the arena grew again");
    cr_assert_eq(damaged(garbage, GARBAGE, SIZE, 11), 0);
    cr_assert_eq(damaged(live, LIVE, SIZE, 3), 0);
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_eq(st.hook_errors, 0);
    drop_all(garbage, GARBAGE);
    drop_all(live, LIVE);
    mm_jemalloc_close(c);
}

Test(jemalloc, a_heap_of_live_values_gives_less_than_asked)
{
    start_daemon("256M");
    unsigned a = 0;
    mm_client_t *c = je_open("je-full", 128 * MiB, &a);
    enum { LIVE = 1536, SIZE = 32 << 10 }; /* 48 MiB, all live */
    static void *live[LIVE];
    fill(a, live, LIVE, SIZE, 13);
    set_capacity("16M");
    wait_revocations(c, 1);
    mm_jemalloc_stats_t st;
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_log_info("asked %llu, given %llu", (unsigned long long)st.last_asked_bytes,
                (unsigned long long)st.last_given_bytes);
    cr_assert_gt(st.last_asked_bytes, 0);
    cr_assert_lt(st.last_given_bytes, st.last_asked_bytes, "it says it could not give enough");
    cr_assert_lt(client_field(mm_client_id(c), "revoked_bytes"), st.last_asked_bytes);
    cr_assert_eq(damaged(live, LIVE, SIZE, 13), 0, "live values intact");
    drop_all(live, LIVE);
    mm_jemalloc_close(c);
}

Test(jemalloc, an_alloc_hook_without_frames_makes_mallocx_return_null)
{
    start_daemon("8M");
    unsigned a = 0;
    mm_client_t *c = je_open("je-tiny", 8 * MiB, &a);
    cr_assert_null(mallocx(32 * MiB, ARENA_FLAGS(a)), "bigger than the region");
    static void *v[64];
    size_t n = 0;
    while (n < 64 && (v[n] = mallocx(MiB, ARENA_FLAGS(a))) != NULL)
        memset(v[n++], 1, MiB);
    cr_assert_lt(n, 64, "the region ran out");
    cr_assert_geq(n, 4, "but not before it held some: %zu MiB", n);
    mm_jemalloc_stats_t st;
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_gt(st.alloc_failures, 0);
    cr_assert_eq(st.hook_errors, 0);
    drop_all(v, n);
    cr_assert_geq(mm_jemalloc_purge(), 0);
    void *p = mallocx(MiB, ARENA_FLAGS(a));
    cr_assert_not_null(p, "memory is usable again after the frees");
    dallocx(p, MALLOCX_TCACHE_NONE);
    mm_jemalloc_close(c);
}

Test(jemalloc, a_source_arena_takes_frames_through_the_source_and_purge_gives_them_back)
{
    start_daemon("512M");
    mm_client_t *c = open_client("je-source", 256 * MiB, 0); /* the test's own */
    static counting_source_t cs;
    mm_frame_source_t src = counting_source(&cs, c);
    unsigned a = 0;
    int err = mm_jemalloc_arena_source(&src, &a);
    cr_assert_eq(err, 0, "source arena created: %s", mm_strerror(err));
    memset(&src, 0, sizeof src);                          /* the library keeps its own copy */
    enum { LIVE = 512, GARBAGE = 1536, SIZE = 32 << 10 }; /* 16 MiB live, 48 MiB garbage */
    static void *live[LIVE], *garbage[GARBAGE];
    fill(a, live, LIVE, SIZE, 21);
    fill(a, garbage, GARBAGE, SIZE, 23);
    cr_assert_gt(atomic_load(&cs.allocs), 0, "the arena grew through the source's alloc");
    cr_assert_geq(held_by(&cs), 64 * MiB, "with all its values: %llu",
                  (unsigned long long)held_by(&cs));
    for (size_t i = 0; i < LIVE; i++)
        cr_assert(inside(c, live[i], SIZE), "value %zu lies in the source's client", i);
    void *big = mallocx(9 * MiB, ARENA_FLAGS(a));
    cr_assert(big && inside(c, big, 9 * MiB), "a large value too");
    dallocx(big, MALLOCX_TCACHE_NONE);
    drop_all(garbage, GARBAGE);

    mm_jemalloc_stats_t st;
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_geq(st.dirty_bytes, 40 * MiB, "stats include the source arena: dirty %llu",
                  (unsigned long long)st.dirty_bytes);
    cr_assert_eq(st.frame_bytes, held_by(&cs), "the hooks hold what the source lent");
    uint64_t frees = atomic_load(&cs.frees), releases = atomic_load(&cs.releases);
    uint64_t residents = atomic_load(&cs.residents);
    uint64_t before = resident(c);
    int64_t dropped = mm_jemalloc_purge();
    uint64_t after = resident(c);
    cr_log_info("source purge: resident %llu -> %llu MiB, %llu frees, %llu releases",
                (unsigned long long)(before >> 20), (unsigned long long)(after >> 20),
                (unsigned long long)(atomic_load(&cs.frees) - frees),
                (unsigned long long)(atomic_load(&cs.releases) - releases));
    cr_assert_geq(dropped, (int64_t)(40 * MiB), "purge returned the garbage: %lld",
                  (long long)dropped);
    cr_assert_eq((uint64_t)dropped, before - after, "the drop is the source's residency");
    cr_assert_gt(atomic_load(&cs.frees), frees, "the garbage went back through free");
    cr_assert_gt(atomic_load(&cs.releases), releases, "after release");
    cr_assert_geq(atomic_load(&cs.residents), residents + 2, "measured with the source");
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_eq(st.dirty_bytes, 0);
    cr_assert_eq(st.hook_errors, 0);
    cr_assert_gt(st.purged_bytes, 0);
    cr_assert_eq(st.frame_bytes, held_by(&cs));
    cr_assert_eq(damaged(live, LIVE, SIZE, 21), 0, "live values intact");
    fill(a, garbage, GARBAGE / 2, SIZE, 25); /* grows again through the source */
    cr_assert_eq(damaged(garbage, GARBAGE / 2, SIZE, 25), 0);
    cr_assert_eq(damaged(live, LIVE, SIZE, 21), 0);
    drop_all(garbage, GARBAGE / 2);
    drop_all(live, LIVE);

    mm_jemalloc_arena_destroy(a);
    cr_assert_eq(held_by(&cs), 0, "destroying the arena gave every frame back");
    cr_assert_eq(mm_jemalloc_set_default(a, 0), -EINVAL, "the arena is gone");
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_eq(st.frame_bytes, 0, "and left the stats");
    mm_client_close(c);
}

Test(jemalloc, arena_source_refuses_misuse)
{
    start_daemon("256M");
    mm_client_t *c = open_client("je-source-misuse", 64 * MiB, 0);
    static counting_source_t cs;
    mm_frame_source_t good = counting_source(&cs, c), bad = good;
    unsigned a = 0;
    cr_assert_eq(mm_jemalloc_arena_source(NULL, &a), -EINVAL);
    cr_assert_eq(mm_jemalloc_arena_source(&good, NULL), -EINVAL);
    bad.alloc = NULL;
    cr_assert_eq(mm_jemalloc_arena_source(&bad, &a), -EINVAL, "alloc is needed");
    bad = good;
    bad.free = NULL;
    cr_assert_eq(mm_jemalloc_arena_source(&bad, &a), -EINVAL, "free is needed");
    bad = good;
    bad.release = NULL;
    cr_assert_eq(mm_jemalloc_arena_source(&bad, &a), -EINVAL, "release is needed");
    bad = good;
    bad.resident_bytes = NULL;
    cr_assert_eq(mm_jemalloc_arena_source(&bad, &a), -EINVAL, "resident_bytes is needed");

    /* A client arena is not destroyed by index: it goes with its client. */
    unsigned ca = 0;
    mm_client_t *owner = je_open("je-source-owner", 32 * MiB, &ca);
    mm_jemalloc_arena_destroy(ca);
    void *p = mallocx(4096, ARENA_FLAGS(ca));
    cr_assert(p && inside(owner, p, 4096), "the client's arena still serves");
    dallocx(p, MALLOCX_TCACHE_NONE);
    mm_jemalloc_close(owner);

    /* Source arenas count toward the clients' limit. */
    unsigned arenas[MM_JEMALLOC_MAX_CLIENTS];
    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++)
        cr_assert_eq(mm_jemalloc_arena_source(&good, &arenas[i]), 0, "source arena %zu", i);
    cr_assert_eq(mm_jemalloc_arena_source(&good, &a), -EMFILE);
    mm_client_t *extra = NULL;
    cr_assert_eq(mm_jemalloc_open(daemon_.sock, NULL, &extra), -EMFILE);
    cr_assert_eq(atomic_load(&cs.allocs) + atomic_load(&cs.frees) + atomic_load(&cs.releases) +
                     atomic_load(&cs.residents),
                 0, "creating arenas takes no frames, refusals call nothing");

    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        mm_jemalloc_arena_destroy(arenas[0]); /* does nothing in a child */
        unsigned x = 0;
        _exit(mm_jemalloc_arena_source(&good, &x) != -ECHILD);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "-ECHILD in a child (%#x)", status);

    for (size_t i = 0; i < MM_JEMALLOC_MAX_CLIENTS; i++)
        mm_jemalloc_arena_destroy(arenas[i]);
    cr_assert_eq(mm_jemalloc_arena_source(&good, &a), 0, "destroyed arenas free their slots");
    mm_jemalloc_arena_destroy(a);
    mm_client_close(c);
}

Test(jemalloc, a_forked_child_mallocs_outside_the_parent_heap)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_skip_test("AddressSanitizer replaces malloc, so the thread's default arena is not used");
#endif
    start_daemon("256M");
    unsigned a = 0;
    mm_client_t *c = je_open("je-fork", 64 * MiB, &a);
    cr_assert_eq(mm_jemalloc_set_default(a, 0), 0);
    enum { N = 256, SIZE = 8192 };
    static void *v[N];
    for (size_t i = 0; i < N; i++) {
        v[i] = malloc(SIZE); /* the thread's default: the mm arena, tcache on */
        cr_assert(inside(c, v[i], SIZE), "malloc uses the mm arena");
        memset(v[i], (int)(i & 0xff), SIZE);
    }
    for (size_t i = 0; i < N; i += 2)
        free(v[i]); /* some land in the tcache */
    uint64_t res_before = resident(c);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int bad = 0;
        for (int i = 0; i < 1000; i++) {
            size_t n = (size_t)(i % 7 == 0 ? 3 << 20 : 64 + i * 13);
            char *p = malloc(n);
            /* The region is not mapped here, so the kernel may reuse its
             * addresses: ask jemalloc which arena the memory came from. */
            unsigned from = a;
            size_t sz = sizeof from;
            if (!p || mallctl("arenas.lookup", &from, &sz, &p, sizeof p) != 0 || from == a)
                bad |= 1;
            else
                memset(p, 0x77, n);
            free(p);
        }
        unsigned cur = a;
        size_t sz = sizeof cur;
        if (mallctl("thread.arena", &cur, &sz, NULL, 0) != 0 || cur == a)
            bad |= 4; /* the child's thread went back to an ordinary arena */
        mm_jemalloc_stats_t st;
        if (mm_jemalloc_stats(&st) != -ECHILD || mm_jemalloc_purge() != -ECHILD)
            bad |= 2;
        _exit(bad);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child exited normally (status %#x)", status);
    cr_assert_eq(WEXITSTATUS(status), 0, "child malloc worked outside the mm heap (%d)",
                 WEXITSTATUS(status));
    for (size_t i = 1; i < N; i += 2) {
        const unsigned char *p = v[i];
        cr_assert(p[0] == (i & 0xff) && p[SIZE - 1] == (i & 0xff), "parent value %zu intact", i);
    }
    cr_assert_geq(resident(c), res_before, "the child punched nothing");
    void *p = malloc(SIZE);
    cr_assert(inside(c, p, SIZE), "the parent still allocates from the mm arena");
    free(p);
    for (size_t i = 1; i < N; i += 2)
        free(v[i]);
    mm_jemalloc_close(c);
}

Test(jemalloc, demo_gives_back_its_churn_and_verifies_its_values)
{
    start_daemon("256M");
    char prog[4096];
    cr_assert_eq(mm__bin_path("mm-je-demo", prog, sizeof prog), 0);
    char *argv[] = {prog,     "--socket", daemon_.sock, "--name", "je-demo",
                    "--live", "32M",      "--churn",    "64M",    NULL};
    mm_proc_t p;
    cr_assert_eq(mm__proc_spawn(&p, argv, true), 0);
    cr_assert_eq(mm__proc_wait_line(&p, "ready", 30000), 0, "demo is ready");
    uint32_t id = client_id_by_name("je-demo");
    cr_assert_neq(id, 0);
    uint64_t before = client_field(id, "resident_bytes");
    set_capacity("48M");
    uint64_t after = before;
    for (int i = 0; i < 200 && after > 48 * MiB; i++, sleep_ms(25))
        after = client_field(id, "resident_bytes");
    cr_log_info("demo: resident %llu -> %llu MiB, revoked %llu MiB",
                (unsigned long long)(before >> 20), (unsigned long long)(after >> 20),
                (unsigned long long)(client_field(id, "revoked_bytes") >> 20));
    cr_assert_leq(after, 48 * MiB, "the demo's churn came back: %llu", (unsigned long long)after);
    cr_assert_eq(mm__proc_signal(&p, SIGTERM), 0);
    int status = 0;
    cr_assert_eq(mm__proc_wait(&p, 30000, &status), 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "demo verified its values (%#x)",
              status);
}

Test(jemalloc, demo_command_line)
{
    char prog[4096];
    cr_assert_eq(mm__bin_path("mm-je-demo", prog, sizeof prog), 0);
    char *out = NULL;
    int status = 0;
    char *help[] = {prog, "--help", NULL};
    cr_assert_eq(mm__proc_run(help, &out, 10000, &status), 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert(strstr(out, "usage: mm-je-demo") != NULL);
    free(out);
    char *bad[] = {prog, "--live", "lots", NULL};
    cr_assert_eq(mm__proc_run(bad, &out, 10000, &status), 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "bad args: 2 (%#x)", status);
    free(out);
    char *nodaemon[] = {prog, "--socket", "/nonexistent/mm.sock", "--live", "1M", "--churn",
                        "1M", NULL};
    cr_assert_eq(mm__proc_run(nodaemon, &out, 10000, &status), 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "no daemon: 1 (%#x)", status);
    free(out);
}

Test(jemalloc, an_adopted_automatic_arena_serves_new_extents_from_frames)
{
    start_daemon("512M");
    /* An extent arena 0 made before adoption: it stays with the old hooks. */
    void *before = mallocx(2 * MiB, ARENA_FLAGS(0));
    cr_assert_not_null(before);
    memset(before, 0x11, 2 * MiB);

    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = "adopted";
    o.max_bytes = 128 * MiB;
    mm_client_t *c = NULL;
    cr_assert_eq(mm_jemalloc_open(daemon_.sock, &o, &c), 0);
    cr_assert_eq(mm_jemalloc_adopt(c, 100000), -EINVAL, "only automatic arenas");
    cr_assert_eq(mm_jemalloc_adopt(NULL, 0), -EINVAL);
    cr_assert_eq(mm_jemalloc_adopt(c, 0), 0);
    cr_assert_eq(mm_jemalloc_adopt(c, 0), -EBUSY, "once");
    unsigned other = 0;
    cr_assert_eq(mm_jemalloc_arena(c, &other), 0, "the adopted arena is the client's");
    cr_assert_eq(other, 0);

    /* jemalloc first reuses what it retained from the old hooks (with
     * opt.retain, a growth's unused tail: under 2 MiB here), then grows
     * through the new ones. */
    void *v[24];
    fill(0, v, 24, 1 * MiB, 3);
    size_t in_region = 0;
    for (size_t i = 0; i < 24; i++)
        in_region += inside(c, v[i], MiB);
    cr_assert_geq(in_region, 20, "new values are in the region (%zu of 24)", in_region);
    cr_assert(!inside(c, before, 2 * MiB));
    uint64_t full = resident(c);
    cr_assert_geq(full, 20 * MiB);

    /* Free the earlier extent and half the new ones: both kinds go back
     * through their own hooks, and a purge gives the frames back. */
    dallocx(before, MALLOCX_TCACHE_NONE);
    drop_all(v, 12);
    cr_assert_geq(mm_jemalloc_purge(), 0);
    uint64_t after = resident(c);
    cr_assert_leq(after + 6 * MiB, full, "frames came back: %llu -> %llu", (unsigned long long)full,
                  (unsigned long long)after);
    cr_assert_eq(damaged(v + 12, 12, MiB, 15), 0, "the rest is intact");
    mm_jemalloc_stats_t st;
    cr_assert_eq(mm_jemalloc_stats(&st), 0);
    cr_assert_eq(st.hook_errors, 0, "no extent of the old hooks reached libmm");
    cr_assert_eq(st.fallback_allocs, 0, "the host granted every frame asked for");
    drop_all(v + 12, 12);
    /* An adopted arena is never destroyed: the client stays open. */
}
