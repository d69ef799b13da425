/*
 * stress_frames: a correctness stress test of the shared frame allocator
 * (libmm/src/frames.c), not a benchmark: its timings mean nothing.
 *
 * N client threads (default 4, argv[1] overrides) allocate runs of random
 * sizes and alignments, take whole-chunk runs, and free them, while two host
 * threads play the daemon: one reclaims wholly free chunks (try_reclaim with
 * steal), the other installs reclaimed ones again, reserved for a random
 * client slot or for none.
 * Seeds and per-thread op counts are fixed, so every run does the same work.
 * After each phase the threads are joined and the metadata is checked against
 * the threads' own records and a per-frame owner array:
 *
 *   - no frame is allocated (bit set or owned) in a chunk the host holds;
 *   - set bits == frames the threads hold (nothing lost, nothing twice);
 *   - every granted chunk's free count == its number of clear bits.
 *
 * Exit status 0 on success; otherwise a message on stderr and 1. Built as a
 * plain program so that it also runs under ThreadSanitizer.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frames.h"

#define CHUNKS        32
#define FRAMES        (CHUNKS * MM_CHUNK_FRAMES)
#define PHASES        5
#define OPS_PER_PHASE 60000 /* per client thread */
#define MAX_RUNS      256
#define MAX_THREADS   64

typedef struct shared {
    mm_frames_t f;
    _Atomic uint32_t owner[FRAMES]; /* 0 or the owning thread's id */
    _Atomic uint32_t errors;
    _Atomic uint32_t running; /* client threads still in the phase */
    uint32_t nthreads;
    /* The host's own record of each chunk, handed between its two threads:
     * GRANTED -> (reclaimer) HELD -> (installer) INSTALLING -> GRANTED. */
    _Atomic uint32_t host_state[CHUNKS];
    uint64_t reclaimer_rng, installer_rng;
    uint64_t reclaims, installs; /* each written by its own host thread */
} shared_t;

enum { GRANTED = 0, HELD = 1, INSTALLING = 2 };

typedef struct worker {
    shared_t *s;
    mm_frames_thread_t t;
    uint32_t id;
    uint64_t rng;
    uint64_t runs[MAX_RUNS][2]; /* first frame, frames */
    uint32_t nruns;
    uint64_t held_frames, max_frames, ops;
} worker_t;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void fail(shared_t *s, const char *what, uint64_t a, uint64_t b)
{
    if (atomic_fetch_add(&s->errors, 1) < 20)
        fprintf(stderr, "stress_frames: FAIL: %s (%llu, %llu)\n", what, (unsigned long long)a,
                (unsigned long long)b);
}

/* Record a run the allocator handed out; every frame must have been free. */
static void take_run(worker_t *w, uint64_t first, uint64_t n)
{
    for (uint64_t fr = first; fr < first + n; fr++) {
        uint32_t prev = atomic_exchange(&w->s->owner[fr], w->id);
        if (prev != 0)
            fail(w->s, "frame handed out twice (frame, previous owner)", fr, prev);
    }
    w->runs[w->nruns][0] = first;
    w->runs[w->nruns++][1] = n;
    w->held_frames += n;
}

static void free_run(worker_t *w, uint32_t i)
{
    uint64_t first = w->runs[i][0], n = w->runs[i][1];
    /* Owners first: once freed, another thread may get these frames. */
    for (uint64_t fr = first; fr < first + n; fr++)
        if (atomic_exchange(&w->s->owner[fr], 0) != w->id)
            fail(w->s, "freeing a frame this thread did not own", fr, w->id);
    int rc = mm__frames_free(&w->s->f, first, n);
    if (rc != 0)
        fail(w->s, "free failed (frame, -rc)", first, (uint64_t)-rc);
    w->held_frames -= n;
    w->runs[i][0] = w->runs[w->nruns - 1][0];
    w->runs[i][1] = w->runs[w->nruns - 1][1];
    w->nruns--;
}

static void alloc_small(worker_t *w, uint64_t r)
{
    static const uint32_t sizes[] = {1, 1, 1, 1, 2, 3, 4, 8, 16, 31, 64, 65, 100, 256, 512};
    uint32_t n = sizes[r % 15];
    uint32_t align = 1u << ((r >> 8) % 10); /* 1..512 */
    uint64_t first;
    int rc = mm__frames_alloc(&w->s->f, &w->t, n, align, &first);
    if (rc == -ENOSPC)
        return;
    if (rc != 0) {
        fail(w->s, "alloc failed (frames, -rc)", n, (uint64_t)-rc);
        return;
    }
    uint64_t chunk = first / MM_CHUNK_FRAMES;
    if (first % align || (n > 64 && first % 64) ||
        (n <= 64 && first / 64 != (first + n - 1) / 64) ||
        chunk != (first + n - 1) / MM_CHUNK_FRAMES || chunk >= CHUNKS)
        fail(w->s, "misplaced run (frame, frames)", first, n);
    take_run(w, first, n);
}

static void alloc_whole(worker_t *w, uint64_t r)
{
    uint32_t nchunks = 1 + (uint32_t)(r % 2), tail = (uint32_t)((r >> 4) % 3) * 100;
    uint32_t first;
    if (mm__frames_find_run(&w->s->f, nchunks + (tail ? 1 : 0), (uint32_t)(r >> 16) % CHUNKS,
                            &first) != 0)
        return;
    int rc = mm__frames_alloc_chunks(&w->s->f, first, nchunks, tail, w->t.slot);
    if (rc == -EBUSY) /* raced, or a reclaimed or reserved chunk in the run */
        return;
    if (rc != 0) {
        fail(w->s, "alloc_chunks failed (chunk, -rc)", first, (uint64_t)-rc);
        return;
    }
    take_run(w, (uint64_t)first * MM_CHUNK_FRAMES, (uint64_t)nchunks * MM_CHUNK_FRAMES + tail);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (int op = 0; op < OPS_PER_PHASE; op++, w->ops++) {
        uint64_t r = xorshift(&w->rng);
        if (r % 2048 == 0) { /* let go of everything: whole chunks for the host */
            while (w->nruns)
                free_run(w, 0);
        } else if (w->nruns > 0 &&
                   (w->nruns == MAX_RUNS || w->held_frames > w->max_frames || (r >> 20) % 2)) {
            free_run(w, (uint32_t)((r >> 24) % w->nruns));
        } else if ((r >> 32) % 64 == 0) {
            alloc_whole(w, r >> 36);
        } else {
            alloc_small(w, r >> 36);
        }
    }
    atomic_fetch_sub(&w->s->running, 1);
    return NULL;
}

/* Host, reclaimer: take wholly free chunks back, stealing reservations. */
static void *reclaimer_main(void *arg)
{
    shared_t *s = arg;
    while (atomic_load(&s->running) > 0) {
        uint32_t c = (uint32_t)(xorshift(&s->reclaimer_rng) % CHUNKS);
        if (atomic_load(&s->host_state[c]) == GRANTED && mm__frames_try_reclaim(&s->f, c, true)) {
            s->reclaims++;
            for (uint32_t fr = c * MM_CHUNK_FRAMES; fr < (c + 1) * MM_CHUNK_FRAMES; fr++)
                if (atomic_load(&s->owner[fr]) != 0)
                    fail(s, "host reclaimed an owned frame", fr, atomic_load(&s->owner[fr]));
            atomic_store(&s->host_state[c], HELD);
        }
        sched_yield();
    }
    return NULL;
}

/* Host, installer: give reclaimed chunks back, reserved for a slot or none. */
static void *installer_main(void *arg)
{
    shared_t *s = arg;
    while (atomic_load(&s->running) > 0) {
        uint32_t c = (uint32_t)(xorshift(&s->installer_rng) % CHUNKS);
        uint32_t held = HELD;
        if (xorshift(&s->installer_rng) % 2 &&
            atomic_compare_exchange_strong(&s->host_state[c], &held, INSTALLING)) {
            /* An honest client never writes a chunk the host holds. */
            if (mm__frames_repair_reclaimed(&s->f, c))
                fail(s, "client wrote a reclaimed chunk word", c, 0);
            uint32_t slot = (uint32_t)(xorshift(&s->installer_rng) % (s->nthreads + 1));
            mm__frames_install(&s->f, c, slot);
            s->installs++;
            atomic_store(&s->host_state[c], GRANTED);
        }
        sched_yield();
    }
    return NULL;
}

static bool bit_set(const shared_t *s, uint64_t frame)
{
    return (atomic_load(&s->f.bitmaps[frame / 64]) >> (frame % 64)) & 1;
}

/* Between phases, with every thread joined. */
static void verify(shared_t *s, worker_t *w, int phase)
{
    uint64_t recorded = 0, set_bits = 0;
    for (uint32_t i = 0; i < s->nthreads; i++)
        for (uint32_t r = 0; r < w[i].nruns; r++) {
            recorded += w[i].runs[r][1];
            for (uint64_t fr = w[i].runs[r][0]; fr < w[i].runs[r][0] + w[i].runs[r][1]; fr++)
                if (atomic_load(&s->owner[fr]) != w[i].id || !bit_set(s, fr))
                    fail(s, "held frame not owned or not set (frame, thread)", fr, w[i].id);
        }
    for (uint32_t c = 0; c < CHUNKS; c++) {
        uint32_t clear = 0;
        for (uint32_t fr = c * MM_CHUNK_FRAMES; fr < (c + 1) * MM_CHUNK_FRAMES; fr++) {
            bool bit = bit_set(s, fr);
            clear += !bit;
            set_bits += bit;
            if (bit != (atomic_load(&s->owner[fr]) != 0))
                fail(s, "bit and owner disagree (frame, phase)", fr, (uint64_t)phase);
        }
        bool held = atomic_load(&s->host_state[c]) == HELD;
        if (mm__frames_chunk_reclaimed(&s->f, c) != held)
            fail(s, "RECLAIMED flag differs from the host's record (chunk, phase)", c,
                 (uint64_t)phase);
        if (held && clear != MM_CHUNK_FRAMES)
            fail(s, "frame allocated in a reclaimed chunk (chunk, phase)", c, (uint64_t)phase);
        if (!held && mm__frames_chunk_free(&s->f, c) != clear)
            fail(s, "free count differs from clear bits (chunk, count)", c,
                 mm__frames_chunk_free(&s->f, c));
    }
    if (recorded != set_bits)
        fail(s, "frames held by threads vs set bits", recorded, set_bits);
}

static int run_phase(shared_t *s, worker_t *w)
{
    pthread_t threads[MAX_THREADS] = {0}, reclaimer, installer;
    atomic_store(&s->running, s->nthreads);
    for (uint32_t i = 0; i < s->nthreads; i++)
        if (pthread_create(&threads[i], NULL, worker_main, &w[i]) != 0)
            return -1;
    if (pthread_create(&reclaimer, NULL, reclaimer_main, s) != 0 ||
        pthread_create(&installer, NULL, installer_main, s) != 0)
        return -1;
    for (uint32_t i = 0; i < s->nthreads; i++)
        pthread_join(threads[i], NULL);
    pthread_join(reclaimer, NULL);
    pthread_join(installer, NULL);
    return 0;
}

static shared_t *setup(uint32_t nthreads, _Atomic uint32_t **words, _Atomic uint64_t **bitmaps)
{
    shared_t *s = calloc(1, sizeof(*s));
    *words = calloc(CHUNKS, sizeof(**words));
    *bitmaps = calloc((size_t)CHUNKS * MM_CHUNK_BITMAP_WORDS, sizeof(**bitmaps));
    if (!s || !*words || !*bitmaps) {
        free(s); /* main frees the arrays */
        return NULL;
    }
    mm__frames_view_raw(&s->f, *words, *bitmaps, CHUNKS);
    for (uint32_t c = 0; c < CHUNKS; c++) /* as formatted, then granted */
        mm__frames_install(&s->f, c, 0);
    s->nthreads = nthreads;
    s->reclaimer_rng = 0x9e3779b97f4a7c15ull;
    s->installer_rng = 0xd1b54a32d192ed03ull;
    return s;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 4;
    if (n < 1 || n > MAX_THREADS) {
        fprintf(stderr, "usage: %s [threads 1..%d]\n", argv[0], MAX_THREADS);
        return 2;
    }
    _Atomic uint32_t *words;
    _Atomic uint64_t *bitmaps;
    shared_t *s = setup((uint32_t)n, &words, &bitmaps);
    worker_t *w = calloc((size_t)n, sizeof(*w));
    if (!s || !w) {
        fprintf(stderr, "stress_frames: out of memory\n");
        free(w);
        free(bitmaps);
        free(words);
        free(s);
        return 1;
    }
    for (uint32_t i = 0; i < (uint32_t)n; i++)
        w[i] = (worker_t){.s = s,
                          .t = {.slot = i + 1, .chunk = UINT32_MAX},
                          .id = i + 1,
                          .rng = 0x2545f4914f6cdd1dull * (i + 1),
                          .max_frames = (uint64_t)FRAMES / (2 * (uint64_t)n)};

    uint64_t ops = 0;
    for (int phase = 0; phase < PHASES && atomic_load(&s->errors) == 0; phase++) {
        if (run_phase(s, w) != 0) {
            fprintf(stderr, "stress_frames: cannot start threads\n");
            return 1;
        }
        verify(s, w, phase);
    }
    for (uint32_t i = 0; i < (uint32_t)n; i++) {
        ops += w[i].ops;
        while (w[i].nruns) /* everything back: every granted chunk wholly free */
            free_run(&w[i], 0);
        mm__frames_unreserve(&s->f, &w[i].t);
    }
    verify(s, w, PHASES);
    for (uint32_t c = 0; c < CHUNKS; c++) /* installs may have left reservations */
        if (atomic_load(&s->host_state[c]) != HELD && !mm__frames_try_reclaim(&s->f, c, true))
            fail(s, "chunk not reclaimable after everything was freed", c, 0);

    uint32_t errors = atomic_load(&s->errors);
    if (errors == 0)
        printf("stress_frames: %llu ops, %llu reclaims, %llu installs: ok\n",
               (unsigned long long)ops, (unsigned long long)s->reclaims,
               (unsigned long long)s->installs);
    else
        fprintf(stderr, "stress_frames: %u failures\n", errors);
    free(w);
    free(bitmaps);
    free(words);
    free(s);
    return errors == 0 ? 0 : 1;
}
