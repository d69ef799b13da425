/*
 * `mmbench alloc`: what the shared frame allocator (libmm/src/frames.c) costs
 * per operation, how it scales with threads, and how much metadata it keeps.
 * A benchmark, not a test: it checks only that every call succeeds.
 * Correctness is proved by tests/unit/frames.c and tests/stress/.
 *
 * Scenario "alloc". Systems, all measured in one run, interleaved: each
 * repetition (5, --quick 3) runs every thread count (--threads N,..., default
 * 1..nproc) for every system, starting with a different system each time:
 *
 *   mm            the real allocator on metadata that mm__frames_format wrote
 *                 into an mmap'd shared state for a 16 GiB region, every chunk
 *                 granted and unreserved (no daemon, no region mapped). Each
 *                 thread's first allocation reserves a chunk (threads start
 *                 their search apart), and every later pair stays there: one
 *                 mm__frames_alloc of one frame and one mm__frames_free.
 *   mutex-bitmap  the same layout (32-bit chunk words, one bit per frame) and
 *                 the same search (the thread's reserved chunk first, from the
 *                 word where it last found room, lowest clear bit; else a scan
 *                 for partly used, then wholly free chunks), under one pthread
 *                 mutex.
 *   kernel-mmap   mmap of one page with MAP_POPULATE (the kernel allocates and
 *                 zeroes a frame) and munmap.
 *   floor         the four compare-and-swaps an mm pair needs (two on a
 *                 32-bit word, two on a 64-bit word) on the thread's own cache
 *                 line, with nothing else: the machine's floor for the pair.
 *
 * Each thread runs a warm-up, waits at a barrier so that all start together,
 * then times a fixed number of pairs (per system, below). Metrics, each with
 * the extra key "threads" where it has one:
 *
 *   alloc_free_ns        ns per alloc+free pair of one 4 KiB frame, per thread
 *                        (a repetition's value is the mean over its threads;
 *                        the row is the median over repetitions);
 *   chunk_alloc_free_ns  mm only: the same for 2 MiB (mm__frames_alloc of 512
 *                        frames, then their free);
 *   bits_per_frame       mm only: metadata bits per 4 KiB frame of a 16 GiB
 *                        region (mm_shared_bytes less the fixed 4 KiB control
 *                        block: chunk words and bitmaps), computed, not timed;
 *   speedup_vs_mutex_bitmap, speedup_vs_kernel_mmap, mm_vs_floor
 *                        mm only: ratios of alloc_free_ns (the median of the
 *                        per-repetition ratios);
 *   scaling_vs_1_thread  mm only, threads > 1 (when 1 is measured): aggregate
 *                        pairs per second at N threads over that at one.
 *
 * Targets (checked, and a miss makes the verdict fail): mm
 * alloc_free_ns <= 40 at one thread, speedup_vs_mutex_bitmap >= 3 at two
 * threads, bits_per_frame <= 1.1. Threads are not pinned; other load on the
 * machine inflates every system alike.
 */
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "frames.h"

#define ALLOC_REGION_BYTES (16ull << 30)
#define ALLOC_CHUNKS       ((uint32_t)(ALLOC_REGION_BYTES / MM_CHUNK_SIZE))
#define ALLOC_MAX_COUNTS   64 /* thread counts in one run */
#define ALLOC_MAX_THREADS  MM_RESERVER_SLOTS

#define TARGET_ALLOC_NS   40.0
#define TARGET_SPEEDUP    3.0
#define TARGET_SPEEDUP_AT 2
#define TARGET_BITS       1.1

enum alloc_system { SYS_MM, SYS_MUTEX, SYS_KERNEL, SYS_FLOOR, SYS_MM_CHUNK, N_SYSTEMS };

/* Timed pairs per thread (and warm-up pairs), per system; --quick divides by 4. */
static const struct {
    const char *system;
    const char *metric;
    uint64_t ops;
    uint64_t warmup;
} systems[N_SYSTEMS] = {
    [SYS_MM] = {"mm", "alloc_free_ns", 2000000, 200000},
    [SYS_MUTEX] = {"mutex-bitmap", "alloc_free_ns", 400000, 40000},
    [SYS_KERNEL] = {"kernel-mmap", "alloc_free_ns", 20000, 2000},
    [SYS_FLOOR] = {"floor", "alloc_free_ns", 2000000, 200000},
    [SYS_MM_CHUNK] = {"mm", "chunk_alloc_free_ns", 400000, 40000},
};

/* ---- mutex-bitmap: the same layout and search under one lock ----------- */

typedef struct mutex_bitmap {
    pthread_mutex_t lock; /* protects everything below */
    uint32_t *chunk_words;
    uint64_t *bitmaps;
    uint32_t chunk_count;
} mutex_bitmap_t;

/* Take the lowest clear bit of chunk c from the hint word on, if the chunk
 * word lets slot allocate there. Lock held. */
static bool mb_take(mutex_bitmap_t *a, mm_frames_thread_t *t, uint32_t c, uint64_t *frame)
{
    uint32_t w = a->chunk_words[c], res = mm_cw_reserver(w);

    if ((w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) || mm_cw_free(w) == 0 ||
        mm_cw_free(w) > MM_CHUNK_FRAMES || (res != 0 && res != t->slot))
        return false;
    for (uint32_t i = 0; i < MM_CHUNK_BITMAP_WORDS; i++) {
        uint32_t wi = (t->hint + i) % MM_CHUNK_BITMAP_WORDS;
        uint64_t *bw = &a->bitmaps[(uint64_t)c * MM_CHUNK_BITMAP_WORDS + wi];
        if (*bw == ~0ull)
            continue;
        uint32_t off = (uint32_t)__builtin_ctzll(~*bw);
        *bw |= 1ull << off;
        a->chunk_words[c] = ((w & ~MM_CW_RESERVER_MASK) | (t->slot << MM_CW_RESERVER_SHIFT)) - 1;
        t->hint = wi;
        *frame = (uint64_t)c * MM_CHUNK_FRAMES + (uint64_t)wi * 64 + off;
        return true;
    }
    return false;
}

/* The scan of frames.c: partly used or own chunks first, then wholly free
 * ones, from a start that depends on the slot. Lock held. */
static int mb_scan(mutex_bitmap_t *a, mm_frames_thread_t *t, uint64_t *frame)
{
    uint32_t count = a->chunk_count;
    uint32_t start = (uint32_t)((uint64_t)(t->slot - 1) * count / MM_RESERVER_SLOTS);

    for (int want_whole = 0; want_whole < 2; want_whole++) {
        for (uint32_t i = 0, c = start; i < count; i++, c = c + 1 == count ? 0 : c + 1) {
            uint32_t w = a->chunk_words[c];
            bool first_pass = mm_cw_free(w) < MM_CHUNK_FRAMES || mm_cw_reserver(w) == t->slot;
            if (first_pass == (bool)want_whole || !mb_take(a, t, c, frame))
                continue;
            if (t->chunk != c && t->chunk < count &&
                mm_cw_reserver(a->chunk_words[t->chunk]) == t->slot)
                a->chunk_words[t->chunk] &= ~MM_CW_RESERVER_MASK;
            t->chunk = c;
            return 0;
        }
    }
    return -ENOSPC;
}

static int mb_alloc(mutex_bitmap_t *a, mm_frames_thread_t *t, uint64_t *frame)
{
    int rc = 0;

    pthread_mutex_lock(&a->lock);
    if (t->chunk >= a->chunk_count || !mb_take(a, t, t->chunk, frame))
        rc = mb_scan(a, t, frame);
    pthread_mutex_unlock(&a->lock);
    return rc;
}

static int mb_free(mutex_bitmap_t *a, uint64_t frame)
{
    int rc = 0;

    pthread_mutex_lock(&a->lock);
    uint64_t *bw = &a->bitmaps[frame / 64], bit = 1ull << (frame % 64);
    uint32_t c = (uint32_t)(frame / MM_CHUNK_FRAMES);
    if (!(*bw & bit) || mm_cw_free(a->chunk_words[c]) >= MM_CHUNK_FRAMES) {
        rc = -EINVAL;
    } else {
        *bw &= ~bit;
        a->chunk_words[c]++;
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

/* ---- One measurement: N threads, one system ---------------------------- */

typedef struct alloc_run {
    enum alloc_system sys;
    uint64_t ops, warmup;
    pthread_barrier_t barrier;
    mm_frames_t frames; /* mm */
    mutex_bitmap_t mb;  /* mutex-bitmap */
    _Atomic uint32_t errors;
} alloc_run_t;

/* Per thread, on its own cache lines. */
typedef struct alloc_thread {
    _Alignas(64) alloc_run_t *run;
    uint32_t slot;
    uint64_t elapsed_ns;
    _Alignas(64) _Atomic uint32_t floor_word;
    _Atomic uint64_t floor_bits;
} alloc_thread_t;

static int pair_mm(alloc_run_t *r, mm_frames_thread_t *t, uint32_t nframes)
{
    uint64_t frame;
    int rc = mm__frames_alloc(&r->frames, t, nframes, 1, &frame);
    return rc ? rc : mm__frames_free(&r->frames, frame, nframes);
}

static int pair_mutex(alloc_run_t *r, mm_frames_thread_t *t)
{
    uint64_t frame;
    int rc = mb_alloc(&r->mb, t, &frame);
    return rc ? rc : mb_free(&r->mb, frame);
}

static int pair_kernel(void)
{
    void *p = mmap(NULL, MM_FRAME_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    return munmap(p, MM_FRAME_SIZE) == 0 ? 0 : -errno;
}

/* The four CASes of a pair, in the order mm does them. */
static int pair_floor(alloc_thread_t *th)
{
    uint32_t w = atomic_load_explicit(&th->floor_word, memory_order_acquire);
    atomic_compare_exchange_strong(&th->floor_word, &w, w - 1);
    uint64_t b = atomic_load_explicit(&th->floor_bits, memory_order_acquire);
    atomic_compare_exchange_strong(&th->floor_bits, &b, b | 1);
    b = atomic_load_explicit(&th->floor_bits, memory_order_acquire);
    atomic_compare_exchange_strong(&th->floor_bits, &b, b & ~1ull);
    w = atomic_load_explicit(&th->floor_word, memory_order_acquire);
    atomic_compare_exchange_strong(&th->floor_word, &w, w + 1);
    return 0;
}

static int one_pair(alloc_thread_t *th, mm_frames_thread_t *t)
{
    switch (th->run->sys) {
    case SYS_MM:
        return pair_mm(th->run, t, 1);
    case SYS_MM_CHUNK:
        return pair_mm(th->run, t, MM_CHUNK_FRAMES);
    case SYS_MUTEX:
        return pair_mutex(th->run, t);
    case SYS_KERNEL:
        return pair_kernel();
    default:
        return pair_floor(th);
    }
}

static void *alloc_thread_main(void *arg)
{
    alloc_thread_t *th = arg;
    alloc_run_t *r = th->run;
    mm_frames_thread_t t = {.slot = th->slot, .chunk = UINT32_MAX, .hint = 0};
    uint32_t errors = 0;

    for (uint64_t i = 0; i < r->warmup; i++)
        errors += one_pair(th, &t) != 0;
    pthread_barrier_wait(&r->barrier);
    uint64_t t0 = mm__bench_now_ns();
    for (uint64_t i = 0; i < r->ops; i++)
        errors += one_pair(th, &t) != 0;
    th->elapsed_ns = mm__bench_now_ns() - t0;
    if (r->sys == SYS_MM || r->sys == SYS_MM_CHUNK)
        mm__frames_unreserve(&r->frames, &t);
    if (errors)
        atomic_fetch_add(&r->errors, errors);
    return NULL;
}

/* Fresh metadata for a 16 GiB region, every chunk granted, unreserved. */
static int mm_setup(alloc_run_t *r, void **shared)
{
    uint64_t bytes = mm_shared_bytes(ALLOC_CHUNKS);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    mm__frames_format(p, ALLOC_REGION_BYTES, ALLOC_CHUNKS);
    int rc = mm__frames_view(&r->frames, p, bytes, ALLOC_REGION_BYTES);
    if (rc < 0) {
        munmap(p, bytes);
        return rc;
    }
    for (uint32_t c = 0; c < ALLOC_CHUNKS; c++)
        mm__frames_install(&r->frames, c, 0);
    *shared = p;
    return 0;
}

/* The same, for the mutex-bitmap baseline. */
static int mb_setup(mutex_bitmap_t *a)
{
    a->chunk_count = ALLOC_CHUNKS;
    a->chunk_words = calloc(ALLOC_CHUNKS, sizeof(*a->chunk_words));
    a->bitmaps = calloc((size_t)ALLOC_CHUNKS * MM_CHUNK_BITMAP_WORDS, sizeof(*a->bitmaps));
    if (!a->chunk_words || !a->bitmaps) {
        free(a->chunk_words);
        free(a->bitmaps);
        return -ENOMEM;
    }
    for (uint32_t c = 0; c < ALLOC_CHUNKS; c++)
        a->chunk_words[c] = MM_CHUNK_FRAMES;
    int rc = pthread_mutex_init(&a->lock, NULL);
    if (rc) {
        free(a->chunk_words);
        free(a->bitmaps);
        return -rc;
    }
    return 0;
}

static void mb_teardown(mutex_bitmap_t *a)
{
    pthread_mutex_destroy(&a->lock);
    free(a->chunk_words);
    free(a->bitmaps);
}

/* Run sys with nthreads threads; *ns_out is the mean ns per pair per thread. */
static int measure(enum alloc_system sys, uint32_t nthreads, bool quick, double *ns_out)
{
    alloc_run_t r = {.sys = sys,
                     .ops = systems[sys].ops / (quick ? 4 : 1),
                     .warmup = systems[sys].warmup / (quick ? 4 : 1)};
    alloc_thread_t *th = aligned_alloc(64, sizeof(*th) * nthreads);
    pthread_t *tids = calloc(nthreads, sizeof(*tids));
    void *shared = NULL;
    uint32_t started = 0;
    int rc = -ENOMEM;

    if (!th || !tids)
        goto out_free;
    if (sys == SYS_MM || sys == SYS_MM_CHUNK)
        rc = mm_setup(&r, &shared);
    else if (sys == SYS_MUTEX)
        rc = mb_setup(&r.mb);
    else
        rc = 0;
    if (rc < 0)
        goto out_free;
    rc = -pthread_barrier_init(&r.barrier, NULL, nthreads);
    if (rc < 0)
        goto out_teardown;
    for (; started < nthreads; started++) {
        memset(&th[started], 0, sizeof(th[started]));
        th[started].run = &r;
        th[started].slot = started + 1;
        int err = pthread_create(&tids[started], NULL, alloc_thread_main, &th[started]);
        if (err) {
            /* The started threads wait at the barrier for the others: they
             * cannot be joined, so this run ends the process. */
            fprintf(stderr, "mmbench alloc: cannot start thread %u: %s\n", started + 1,
                    strerror(err));
            exit(1);
        }
    }
    double sum = 0;
    for (uint32_t i = 0; i < nthreads; i++) {
        pthread_join(tids[i], NULL);
        sum += (double)th[i].elapsed_ns / (double)r.ops;
    }
    *ns_out = sum / nthreads;
    if (atomic_load(&r.errors)) {
        fprintf(stderr, "mmbench alloc: %s, %u threads: %u calls failed\n", systems[sys].system,
                nthreads, atomic_load(&r.errors));
        rc = -EIO;
    }
    pthread_barrier_destroy(&r.barrier);
out_teardown:
    if (shared)
        munmap(shared, mm_shared_bytes(ALLOC_CHUNKS));
    if (sys == SYS_MUTEX)
        mb_teardown(&r.mb);
out_free:
    free(tids);
    free(th);
    return rc;
}

/* ---- Options, rows, targets -------------------------------------------- */

/* "1,2,4" into counts; 1..ALLOC_MAX_THREADS each. Default: 1..nproc. */
static int parse_threads(const char *arg, uint32_t *counts, uint32_t *n)
{
    *n = 0;
    if (arg == NULL) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (cpus < 1)
            cpus = 1;
        for (long i = 1; i <= cpus && i <= ALLOC_MAX_THREADS; i++)
            counts[(*n)++] = (uint32_t)i;
        return 0;
    }
    for (const char *p = arg; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > ALLOC_MAX_THREADS || *n == ALLOC_MAX_COUNTS ||
            (*end != ',' && *end != '\0') || (*end == ',' && end[1] == '\0'))
            goto bad;
        counts[(*n)++] = (uint32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (*n > 0)
        return 0;
bad:
    fprintf(stderr, "mmbench alloc: bad --threads '%s' (want N,... with each N in 1..%u)\n", arg,
            ALLOC_MAX_THREADS);
    return -EINVAL;
}

/* samples[sys][count][rep] */
typedef struct alloc_samples {
    uint32_t counts[ALLOC_MAX_COUNTS];
    uint32_t ncounts;
    int reps;
    double *v;
} alloc_samples_t;

static double *sample(const alloc_samples_t *s, int sys, uint32_t ci, int rep)
{
    return &s->v[((size_t)sys * s->ncounts + ci) * (size_t)s->reps + (size_t)rep];
}

static int add_row(mm_results_t *res, const char *system, const char *metric, const char *unit,
                   const double *v, int reps, uint32_t threads)
{
    mm_result_key_t key = {"threads", threads};
    return mm__results_add_median(res, &(mm_result_row_t){"alloc", system, metric, unit}, v,
                                  (size_t)reps, &key, 1);
}

/* Rows for one thread count (c1: the index of one thread, or UINT32_MAX);
 * ratio is scratch room for reps values. */
static int report_count(mm_results_t *res, const alloc_samples_t *s, uint32_t ci, uint32_t c1,
                        double *ratio)
{
    uint32_t n = s->counts[ci];
    int reps = s->reps, rc = 0;

    for (int sys = 0; sys < N_SYSTEMS && rc == 0; sys++)
        rc = add_row(res, systems[sys].system, systems[sys].metric, "ns", sample(s, sys, ci, 0),
                     reps, n);
    static const struct {
        const char *metric;
        int over, under; /* ratio = over / under */
    } ratios[] = {
        {"speedup_vs_mutex_bitmap", SYS_MUTEX, SYS_MM},
        {"speedup_vs_kernel_mmap", SYS_KERNEL, SYS_MM},
        {"mm_vs_floor", SYS_MM, SYS_FLOOR},
    };
    for (size_t k = 0; k < sizeof(ratios) / sizeof(ratios[0]) && rc == 0; k++) {
        for (int i = 0; i < reps; i++)
            ratio[i] = *sample(s, ratios[k].over, ci, i) / *sample(s, ratios[k].under, ci, i);
        rc = add_row(res, "mm", ratios[k].metric, "ratio", ratio, reps, n);
    }
    if (rc == 0 && c1 != UINT32_MAX && n > 1) {
        /* Pairs per second: n threads at ns(n) each, over one at ns(1). */
        for (int i = 0; i < reps; i++)
            ratio[i] = n * *sample(s, SYS_MM, c1, i) / *sample(s, SYS_MM, ci, i);
        rc = add_row(res, "mm", "scaling_vs_1_thread", "ratio", ratio, reps, n);
    }
    return rc;
}

static bool check_target(const char *what, double value, double target, bool at_most)
{
    bool met = at_most ? value <= target : value >= target;
    fprintf(stderr, "mmbench alloc: target %s %s %.2f: %.2f, %s\n", what,
            at_most ? "<=" : ">=", target, value, met ? "met" : "NOT met");
    return met;
}

static int alloc_report(mm_results_t *res, const alloc_samples_t *s, bool *targets_met)
{
    uint32_t c1 = UINT32_MAX, c2 = UINT32_MAX;
    double *ratio = calloc((size_t)s->reps, sizeof(*ratio));
    int rc = 0;

    if (!ratio)
        return -ENOMEM;
    for (uint32_t ci = 0; ci < s->ncounts; ci++) {
        if (s->counts[ci] == 1 && c1 == UINT32_MAX)
            c1 = ci;
        if (s->counts[ci] == TARGET_SPEEDUP_AT && c2 == UINT32_MAX)
            c2 = ci;
    }
    for (uint32_t ci = 0; ci < s->ncounts && rc == 0; ci++)
        rc = report_count(res, s, ci, c1, ratio);

    uint64_t meta_bytes = mm_shared_bytes(ALLOC_CHUNKS) - MM_CONTROL_BYTES;
    uint64_t frames = (uint64_t)ALLOC_CHUNKS * MM_CHUNK_FRAMES;
    double bits = (double)(meta_bytes * 8) / (double)frames;
    if (rc == 0)
        rc = mm__results_add(res, &(mm_result_row_t){"alloc", "mm", "bits_per_frame", "bits"}, bits,
                             &(mm_result_key_t){"bytes", (int64_t)ALLOC_REGION_BYTES}, 1);

    *targets_met = check_target("bits_per_frame", bits, TARGET_BITS, true);
    if (c1 != UINT32_MAX)
        *targets_met &= check_target("mm alloc_free_ns at 1 thread",
                                     mm__results_median(sample(s, SYS_MM, c1, 0), (size_t)s->reps),
                                     TARGET_ALLOC_NS, true);
    if (c2 != UINT32_MAX) {
        for (int i = 0; i < s->reps; i++)
            ratio[i] = *sample(s, SYS_MUTEX, c2, i) / *sample(s, SYS_MM, c2, i);
        *targets_met &=
            check_target("speedup_vs_mutex_bitmap at 2 threads",
                         mm__results_median(ratio, (size_t)s->reps), TARGET_SPEEDUP, false);
    }
    free(ratio);
    return rc;
}

int mm__bench_alloc(const mm_bench_opts_t *opts, mm_results_t *res)
{
    alloc_samples_t s = {.reps = opts->reps > 0 ? opts->reps : opts->quick ? 3 : 5};
    int rc = parse_threads(opts->threads, s.counts, &s.ncounts);

    if (rc < 0)
        return rc;
    s.v = calloc((size_t)N_SYSTEMS * s.ncounts * (size_t)s.reps, sizeof(*s.v));
    if (!s.v)
        return -ENOMEM;
    for (int rep = 0; rep < s.reps && rc == 0; rep++) {
        for (uint32_t ci = 0; ci < s.ncounts && rc == 0; ci++) {
            for (int k = 0; k < N_SYSTEMS && rc == 0; k++) {
                int sys = (k + rep) % N_SYSTEMS; /* each rep starts with another system */
                rc = measure(sys, s.counts[ci], opts->quick, sample(&s, sys, ci, rep));
            }
            fprintf(stderr,
                    "mmbench alloc: rep %d/%d, %u threads: mm %.1f ns, mutex-bitmap %.1f ns, "
                    "kernel-mmap %.1f ns, floor %.1f ns, mm 2 MiB %.1f ns\n",
                    rep + 1, s.reps, s.counts[ci], *sample(&s, SYS_MM, ci, rep),
                    *sample(&s, SYS_MUTEX, ci, rep), *sample(&s, SYS_KERNEL, ci, rep),
                    *sample(&s, SYS_FLOOR, ci, rep), *sample(&s, SYS_MM_CHUNK, ci, rep));
        }
    }
    bool met = false;
    if (rc == 0)
        rc = alloc_report(res, &s, &met);
    free(s.v);
    if (rc < 0)
        return rc;
    return met ? 0 : MM_BENCH_VERDICT_FAILED;
}
