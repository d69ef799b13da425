/*
 * Unit tests for the shared frame allocator (libmm/src/frames.c). The
 * allocator only touches metadata, so each test formats a calloc'd shared
 * state and never maps a region. The concurrent test runs client threads
 * against a host thread that steals and reinstalls chunks, then checks the
 * bitmaps, counts and a per-frame owner record after joining.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frames.h"

typedef struct meta {
    void *mem;
    uint64_t bytes;
    uint32_t chunks;
    mm_frames_t f;
} meta_t;

static void meta_init(meta_t *m, uint32_t chunks)
{
    m->chunks = chunks;
    m->bytes = mm_shared_bytes(chunks);
    m->mem = aligned_alloc(MM_FRAME_SIZE, m->bytes);
    cr_assert_not_null(m->mem);
    memset(m->mem, 0, m->bytes);
    mm__frames_format(m->mem, (uint64_t)chunks * MM_CHUNK_SIZE, chunks);
    cr_assert_eq(mm__frames_view(&m->f, m->mem, m->bytes, (uint64_t)chunks * MM_CHUNK_SIZE), 0);
}

static void meta_fini(meta_t *m)
{
    free(m->mem);
}

/* Install every chunk for slot, as the host would after a grant. */
static void grant_all(meta_t *m, uint32_t slot)
{
    for (uint32_t c = 0; c < m->chunks; c++)
        mm__frames_install(&m->f, c, slot);
}

static uint32_t cw(const meta_t *m, uint32_t c)
{
    return atomic_load(&m->f.chunk_words[c]);
}
static void set_cw(meta_t *m, uint32_t c, uint32_t v)
{
    atomic_store(&m->f.chunk_words[c], v);
}

static uint64_t bm(const meta_t *m, uint32_t c, uint32_t w)
{
    return atomic_load(&m->f.bitmaps[(uint64_t)c * MM_CHUNK_BITMAP_WORDS + w]);
}

static void set_bm(meta_t *m, uint32_t c, uint32_t w, uint64_t v)
{
    atomic_store(&m->f.bitmaps[(uint64_t)c * MM_CHUNK_BITMAP_WORDS + w], v);
}

static bool frame_bit(const meta_t *m, uint64_t frame)
{
    return (atomic_load(&m->f.bitmaps[frame / 64]) >> (frame % 64)) & 1;
}

static uint32_t zero_bits(const meta_t *m, uint32_t c)
{
    uint32_t n = 0;
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        n += 64 - (uint32_t)__builtin_popcountll(bm(m, c, w));
    return n;
}

/* A word as a client-visible granted chunk: free count, reserver, gen. */
static uint32_t word_of(uint32_t free_frames, uint32_t reserver, uint32_t gen)
{
    return gen << MM_CW_GEN_SHIFT | reserver << MM_CW_RESERVER_SHIFT | free_frames;
}

static void *snapshot(const meta_t *m)
{
    void *s = malloc(m->bytes);
    cr_assert_not_null(s);
    memcpy(s, m->mem, m->bytes);
    return s;
}

static void assert_unchanged(const meta_t *m, void *snap)
{
    cr_assert_eq(memcmp(snap, m->mem, m->bytes), 0, "metadata changed");
    free(snap);
}

static mm_frames_thread_t thread_for(uint32_t slot)
{
    return (mm_frames_thread_t){.slot = slot, .chunk = UINT32_MAX};
}

/* ---- Layout ------------------------------------------------------------ */

Test(frames, format_marks_every_chunk_reclaimed_with_geometry)
{
    meta_t m;
    meta_init(&m, 5);
    const mm_control_t *ctl = m.mem;
    cr_assert_eq(ctl->magic, MM_SHARED_MAGIC);
    cr_assert_eq(ctl->layout_version, MM_LAYOUT_VERSION);
    cr_assert_eq(ctl->chunk_count, 5);
    cr_assert_eq(ctl->region_bytes, 5ull * MM_CHUNK_SIZE);
    cr_assert_eq(ctl->chunk_words_offset, MM_CONTROL_BYTES);
    cr_assert_eq(ctl->bitmap_offset, 4160); /* 4096 + 5 * 4 rounded up to 64 */
    cr_assert_eq(ctl->shared_bytes, mm_shared_bytes(5));
    for (uint32_t c = 0; c < 5; c++) {
        cr_assert_eq(cw(&m, c), MM_CW_RECLAIMED | MM_CHUNK_FRAMES);
        cr_assert(mm__frames_chunk_reclaimed(&m.f, c));
        cr_assert_eq(mm__frames_chunk_free(&m.f, c), 0);
    }
    meta_fini(&m);
}

Test(frames, shared_bytes_covers_rounded_bitmap_offset_for_any_count)
{
    for (uint64_t n = 1; n <= 1u << 19; n = n < 5000 ? n + 1 : n * 3 / 2) {
        uint64_t bitmap_offset = (MM_CONTROL_BYTES + n * 4 + 63) & ~63ull;
        uint64_t end = bitmap_offset + n * MM_CHUNK_BITMAP_WORDS * 8;
        cr_assert_leq(end, mm_shared_bytes((uint32_t)n), "chunk_count %llu", (unsigned long long)n);
    }
}

Test(frames, metadata_of_16_gib_region_is_at_most_1_1_bits_per_frame)
{
    uint32_t chunks = (uint32_t)((16ull << 30) / MM_CHUNK_SIZE);
    uint64_t frames = (uint64_t)chunks * MM_CHUNK_FRAMES;
    uint64_t meta_bytes = mm_shared_bytes(chunks) - MM_CONTROL_BYTES;
    cr_assert_eq(sizeof(*((mm_frames_t *)0)->chunk_words), 4, "32-bit chunk words");
    cr_assert_leq(meta_bytes * 8 * 10, frames * 11, "%llu bytes for %llu frames",
                  (unsigned long long)meta_bytes, (unsigned long long)frames);
}

Test(frames, chunk_word_fields_hold_their_ranges)
{
    uint32_t w = word_of(MM_CHUNK_FRAMES, MM_RESERVER_SLOTS, 255) | MM_CW_RECLAIMED |
                 MM_CW_DISCARDABLE | (MM_CW_PIN_MAX << MM_CW_PIN_SHIFT);
    cr_assert_eq(mm_cw_free(w), 512);
    cr_assert_eq(mm_cw_reserver(w), MM_RESERVER_SLOTS);
    cr_assert_eq(mm_cw_pins(w), MM_CW_PIN_MAX);
    cr_assert_eq(mm_cw_gen(w), 255);
    cr_assert_eq(mm_cw_free(word_of(0, MM_RESERVER_SLOTS, 255)), 0);
}

Test(frames, view_rejects_bad_geometry_with_eproto)
{
    meta_t m;
    meta_init(&m, 3);
    mm_control_t *ctl = m.mem;
    mm_frames_t v;
    uint64_t region = 3ull * MM_CHUNK_SIZE;

    ctl->magic ^= 1;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, region), -EPROTO, "bad magic");
    ctl->magic ^= 1;
    ctl->layout_version = MM_LAYOUT_VERSION + 1;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, region), -EPROTO, "bad version");
    ctl->layout_version = MM_LAYOUT_VERSION;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes - MM_FRAME_SIZE, region), -EPROTO,
                 "truncated mapping");
    cr_assert_eq(mm__frames_view(&v, m.mem, 100, region), -EPROTO, "smaller than control");
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, region + MM_CHUNK_SIZE), -EPROTO,
                 "region mismatch");
    ctl->chunk_count = 4;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, region), -EPROTO, "chunk count");
    ctl->chunk_count = 0;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, 0), -EPROTO, "zero chunks");
    ctl->chunk_count = 3;
    ctl->bitmap_offset += 64;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, region), -EPROTO, "bitmap offset");
    ctl->bitmap_offset -= 64;
    ctl->chunk_words_offset = 0;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, region), -EPROTO, "chunk words offset");
    ctl->chunk_words_offset = MM_CONTROL_BYTES;
    cr_assert_eq(mm__frames_view(&v, m.mem, m.bytes, region), 0);
    cr_assert_eq(v.chunk_count, 3);
    meta_fini(&m);
}

/* ---- Allocation and free ----------------------------------------------- */

Test(frames, alloc_single_frame_then_free_restores_chunk)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 1);
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame = UINT64_MAX;

    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_lt(frame, MM_CHUNK_FRAMES);
    cr_assert(frame_bit(&m, frame));
    cr_assert_eq(t.chunk, 0);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 0), 511);
    cr_assert_eq(mm_cw_reserver(cw(&m, 0)), 1);
    cr_assert_eq(mm__frames_free(&m.f, frame, 1), 0);
    cr_assert_not(frame_bit(&m, frame));
    cr_assert_eq(mm__frames_chunk_free(&m.f, 0), 512);
    meta_fini(&m);
}

Test(frames, alloc_rejects_bad_arguments_with_einval)
{
    meta_t m;
    meta_init(&m, 1);
    grant_all(&m, 0);
    mm_frames_thread_t t = thread_for(1);
    mm_frames_thread_t no_slot = thread_for(0);
    uint64_t frame;
    void *snap = snapshot(&m);

    cr_assert_eq(mm__frames_alloc(&m.f, &t, 0, 1, &frame), -EINVAL);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 513, 1, &frame), -EINVAL);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 3, &frame), -EINVAL);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 0, &frame), -EINVAL);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1024, &frame), -EINVAL);
    cr_assert_eq(mm__frames_alloc(&m.f, &no_slot, 1, 1, &frame), -EINVAL);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, NULL), -EINVAL);
    assert_unchanged(&m, snap);
    meta_fini(&m);
}

Test(frames, alloc_runs_are_aligned_disjoint_and_inside_one_chunk)
{
    static const uint32_t cases[][2] = {{1, 1},     {2, 2},     {8, 8},   {64, 64},  {100, 1},
                                        {100, 128}, {512, 512}, {3, 4},   {1, 256},  {33, 32},
                                        {200, 256}, {65, 1},    {7, 512}, {128, 64}, {1, 2}};
    const uint32_t chunks = 24;
    meta_t m;
    meta_init(&m, chunks);
    grant_all(&m, 0);
    mm_frames_thread_t t = thread_for(7);
    bool *mine = calloc((size_t)chunks * MM_CHUNK_FRAMES, 1);
    uint64_t runs[3 * 15][2];
    uint32_t nruns = 0;

    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            uint32_t n = cases[i][0], align = cases[i][1];
            uint64_t frame;
            cr_assert_eq(mm__frames_alloc(&m.f, &t, n, align, &frame), 0, "n=%u align=%u", n,
                         align);
            cr_assert_eq(frame % align, 0, "n=%u align=%u frame=%llu", n, align,
                         (unsigned long long)frame);
            if (n > 64)
                cr_assert_eq(frame % 64, 0);
            else
                cr_assert_eq(frame / 64, (frame + n - 1) / 64, "run crosses a word");
            cr_assert_eq(frame / MM_CHUNK_FRAMES, (frame + n - 1) / MM_CHUNK_FRAMES);
            for (uint64_t fr = frame; fr < frame + n; fr++) {
                cr_assert_not(mine[fr], "frame %llu handed out twice", (unsigned long long)fr);
                cr_assert(frame_bit(&m, fr));
                mine[fr] = true;
            }
            runs[nruns][0] = frame;
            runs[nruns++][1] = n;
        }
    }
    for (uint32_t c = 0; c < chunks; c++)
        cr_assert_eq(mm__frames_chunk_free(&m.f, c), zero_bits(&m, c));
    for (uint32_t i = 0; i < nruns; i++)
        cr_assert_eq(mm__frames_free(&m.f, runs[i][0], runs[i][1]), 0);
    for (uint32_t c = 0; c < chunks; c++)
        cr_assert_eq(mm__frames_chunk_free(&m.f, c), 512);
    free(mine);
    meta_fini(&m);
}

Test(frames, free_of_unallocated_frame_fails_with_einval_and_changes_nothing)
{
    meta_t m;
    meta_init(&m, 2);
    grant_all(&m, 0);
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 4, 4, &frame), 0);
    void *snap = snapshot(&m);

    cr_assert_eq(mm__frames_free(&m.f, frame + 4, 1), -EINVAL, "never allocated");
    cr_assert_eq(mm__frames_free(&m.f, frame, 5), -EINVAL, "range runs past the allocation");
    cr_assert_eq(mm__frames_free(&m.f, frame, 0), -EINVAL, "empty range");
    cr_assert_eq(mm__frames_free(&m.f, 2ull * MM_CHUNK_FRAMES, 1), -EINVAL, "outside region");
    cr_assert_eq(mm__frames_free(&m.f, frame, UINT64_MAX), -EINVAL, "overflowing range");
    assert_unchanged(&m, snap);

    cr_assert_eq(mm__frames_free(&m.f, frame, 4), 0);
    snap = snapshot(&m);
    cr_assert_eq(mm__frames_free(&m.f, frame, 4), -EINVAL, "double free");
    assert_unchanged(&m, snap);
    meta_fini(&m);
}

Test(frames, alloc_fails_with_enospc_when_every_chunk_is_reclaimed)
{
    meta_t m;
    meta_init(&m, 4);
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;

    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), -ENOSPC, "freshly formatted");
    grant_all(&m, 0);
    for (uint32_t c = 0; c < 4; c++)
        cr_assert(mm__frames_try_reclaim(&m.f, c, false));
    void *snap = snapshot(&m);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), -ENOSPC, "all taken back");
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 512, 1, &frame), -ENOSPC);
    assert_unchanged(&m, snap);
    meta_fini(&m);
}

Test(frames, install_brings_chunk_back_reserved_for_slot)
{
    meta_t m;
    meta_init(&m, 2);
    mm_frames_thread_t owner = thread_for(3), other = thread_for(4);
    uint64_t frame;

    set_bm(&m, 1, 5, 0xdead); /* client garbage in a reclaimed chunk's bitmap */
    mm__frames_install(&m.f, 1, 3);
    cr_assert_eq(cw(&m, 1), word_of(512, 3, 1));
    cr_assert_eq(bm(&m, 1, 5), 0, "install clears the bitmap");
    cr_assert_not(mm__frames_chunk_reclaimed(&m.f, 1));
    cr_assert_eq(mm__frames_chunk_free(&m.f, 1), 512);

    cr_assert_eq(mm__frames_alloc(&m.f, &other, 1, 1, &frame), -ENOSPC, "reserved for slot 3");
    cr_assert_eq(mm__frames_alloc(&m.f, &owner, 1, 1, &frame), 0);
    cr_assert_eq(frame / MM_CHUNK_FRAMES, 1);
    cr_assert_eq(owner.chunk, 1);
    cr_assert_not(mm__frames_try_reclaim(&m.f, 1, true), "a frame is allocated");
    meta_fini(&m);
}

Test(frames, alloc_starts_at_the_word_it_last_found_room_in)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 1);
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;

    for (uint32_t i = 0; i < 65; i++) {
        cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
        cr_assert_eq(frame, i, "lowest clear bit while word 0 has room");
    }
    cr_assert_eq(t.hint, 1);
    cr_assert_eq(mm__frames_free(&m.f, 3, 1), 0);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(frame, 65, "word 1 first, though word 0 has room again");
    for (uint32_t i = 66; i < MM_CHUNK_FRAMES; i++)
        cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(t.hint, 7);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(frame, 3, "the search wraps to word 0");
    cr_assert_eq(t.hint, 0);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 0), 0);

    t.hint = 0xdeadbeef; /* any hint is safe */
    cr_assert_eq(mm__frames_free(&m.f, 200, 1), 0);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(frame, 200);
    meta_fini(&m);
}

Test(frames, alloc_of_whole_chunk_sets_every_bit_and_free_clears_them)
{
    meta_t m;
    meta_init(&m, 3);
    grant_all(&m, 0);
    set_bm(&m, 0, 5, 2); /* chunk 0: count says 512 free, but a bit is set */
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;

    cr_assert_eq(mm__frames_alloc(&m.f, &t, 512, 512, &frame), 0);
    cr_assert_eq(frame, 512, "chunk 0 refused");
    cr_assert_eq(cw(&m, 0), word_of(512, 0, 1), "chunk 0 given back, unreserved");
    cr_assert_eq(bm(&m, 0, 5), 2, "and its bits untouched");
    cr_assert_eq(mm__frames_chunk_free(&m.f, 1), 0);
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        cr_assert_eq(bm(&m, 1, w), ~0ull);
    cr_assert_not(mm__frames_try_reclaim(&m.f, 1, true));
    cr_assert_eq(mm__frames_free(&m.f, frame, 512), 0);
    cr_assert_eq(zero_bits(&m, 1), 512);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 1), 512);
    cr_assert_eq(mm__frames_free(&m.f, frame, 512), -EINVAL, "double free");
    cr_assert_eq(mm__frames_chunk_free(&m.f, 1), 512);
    meta_fini(&m);
}

Test(frames, free_inside_one_word_is_all_or_nothing)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 1);
    mm_frames_thread_t t = thread_for(1);
    uint64_t a, b;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 8, 8, &a), 0);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 8, 8, &b), 0);
    cr_assert_eq(b, a + 8);
    cr_assert_eq(mm__frames_free(&m.f, a + 4, 4), 0, "part of a run");
    void *snap = snapshot(&m);
    cr_assert_eq(mm__frames_free(&m.f, a, 8), -EINVAL, "half of it freed already");
    cr_assert_eq(mm__frames_free(&m.f, a + 8, 16), -EINVAL, "past the second run");
    assert_unchanged(&m, snap);
    cr_assert_eq(mm__frames_free(&m.f, a, 4), 0);
    cr_assert_eq(mm__frames_free(&m.f, b, 8), 0);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 0), 512);
    meta_fini(&m);
}

/* ---- Host reclaim ------------------------------------------------------ */

Test(frames, try_reclaim_takes_free_chunk_and_raises_generation)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 0);
    cr_assert(mm__frames_try_reclaim(&m.f, 0, false));
    cr_assert_eq(cw(&m, 0), (2u << MM_CW_GEN_SHIFT) | MM_CW_RECLAIMED | 512);
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true), "already reclaimed");
    cr_assert_not(mm__frames_try_reclaim(&m.f, 1, true), "out of range");
    meta_fini(&m);
}

Test(frames, try_reclaim_refuses_chunk_with_allocated_frame)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 0);
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    mm__frames_unreserve(&m.f, &t);
    cr_assert_eq(mm_cw_reserver(cw(&m, 0)), 0);
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true));
    cr_assert_eq(mm__frames_free(&m.f, frame, 1), 0);
    cr_assert(mm__frames_try_reclaim(&m.f, 0, false));
    meta_fini(&m);
}

Test(frames, try_reclaim_takes_reserved_chunk_only_when_stealing)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 9);
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, false));
    cr_assert_eq(cw(&m, 0), word_of(512, 9, 1));
    cr_assert(mm__frames_try_reclaim(&m.f, 0, true));
    cr_assert_eq(mm_cw_reserver(cw(&m, 0)), 0);
    meta_fini(&m);
}

Test(frames, try_reclaim_refuses_discardable_or_pinned_chunk)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 0);
    uint32_t base = cw(&m, 0);
    set_cw(&m, 0, base | MM_CW_DISCARDABLE);
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true), "discardable");
    set_cw(&m, 0, base | (1u << MM_CW_PIN_SHIFT));
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true), "pinned");
    cr_assert_eq(cw(&m, 0), base | (1u << MM_CW_PIN_SHIFT));
    set_cw(&m, 0, base);
    cr_assert(mm__frames_try_reclaim(&m.f, 0, true));
    meta_fini(&m);
}

Test(frames, try_reclaim_refuses_impossible_count)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 0);
    set_cw(&m, 0, word_of(600, 0, 1));
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true));
    cr_assert_eq(mm__frames_chunk_free(&m.f, 0), 0, "impossible count reads as 0 free");
    set_cw(&m, 0, word_of(0x3ff, 0, 1));
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true));
    meta_fini(&m);
}

Test(frames, try_reclaim_refuses_full_count_with_set_bitmap_bit)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 0);
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++) {
        set_bm(&m, 0, w, 1ull << 63);
        cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true), "bit set in word %u", w);
        set_bm(&m, 0, w, 0);
    }
    cr_assert_eq(cw(&m, 0), word_of(512, 0, 1));
    cr_assert(mm__frames_try_reclaim(&m.f, 0, true));
    meta_fini(&m);
}

Test(frames, repair_reclaimed_restores_word_rewritten_by_client)
{
    meta_t m;
    meta_init(&m, 2);
    cr_assert_not(mm__frames_repair_reclaimed(&m.f, 0), "already canonical");
    set_cw(&m, 0, word_of(100, 7, 5)); /* client cleared RECLAIMED */
    cr_assert(mm__frames_repair_reclaimed(&m.f, 0));
    cr_assert_eq(cw(&m, 0), (6u << MM_CW_GEN_SHIFT) | MM_CW_RECLAIMED | 512);
    set_cw(&m, 1, MM_CW_RECLAIMED | 512 | MM_CW_DISCARDABLE | (3u << MM_CW_PIN_SHIFT));
    cr_assert(mm__frames_repair_reclaimed(&m.f, 1));
    cr_assert_eq(cw(&m, 1), (1u << MM_CW_GEN_SHIFT) | MM_CW_RECLAIMED | 512);
    cr_assert_not(mm__frames_repair_reclaimed(&m.f, 1));
    cr_assert_not(mm__frames_repair_reclaimed(&m.f, 2), "out of range");
    meta_fini(&m);
}

/* ---- Whole-chunk runs -------------------------------------------------- */

Test(frames, alloc_chunks_takes_whole_chunks_and_tail)
{
    meta_t m;
    meta_init(&m, 4);
    grant_all(&m, 0);
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 1, 2, 100, 1), 0);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 0), 512);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 1), 0);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 2), 0);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 3), 412);
    for (uint32_t c = 0; c < 4; c++)
        cr_assert_eq(mm__frames_chunk_free(&m.f, c), zero_bits(&m, c));
    cr_assert(frame_bit(&m, 3 * 512 + 99));
    cr_assert_not(frame_bit(&m, 3 * 512 + 100));

    /* The tail chunk stays usable by the small allocator. */
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(frame, 3 * 512 + 100, "partly used chunk first, lowest free frame");

    cr_assert_eq(mm__frames_free(&m.f, 512, 2 * 512 + 100), 0, "one free spans chunks");
    for (uint32_t c = 1; c < 3; c++)
        cr_assert_eq(mm__frames_chunk_free(&m.f, c), 512);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 3), 511);
    meta_fini(&m);
}

Test(frames, alloc_chunks_is_all_or_nothing)
{
    meta_t m;
    meta_init(&m, 7);
    grant_all(&m, 0);
    mm__frames_install(&m.f, 2, 5); /* reserved by a slot */
    cr_assert(mm__frames_try_reclaim(&m.f, 4, false));
    mm_frames_thread_t t = thread_for(5);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(frame / 512, 2, "the slot's own chunk");
    mm__frames_unreserve(&m.f, &t);
    mm__frames_install(&m.f, 3, 5);
    set_bm(&m, 6, 3, 1); /* count says 512 free, but a bit is set */
    void *snap = snapshot(&m);

    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 3, 0, 1), -EBUSY, "chunk 2 partly used");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 2, 1, 1), -EBUSY, "tail chunk partly used");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 3, 1, 0, 1), -EBUSY, "chunk 3 reserved");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 3, 0, 5, 1), -EBUSY, "reserved tail chunk");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 4, 1, 0, 1), -EBUSY, "chunk 4 reclaimed");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 5, 2, 0, 1), -EIO, "chunk 6 bitmap");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 5, 1, 300, 1), -EIO, "chunk 6 tail bitmap");
    assert_unchanged(&m, snap);
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 3, 1, 0, 5), 0, "the reserving slot may claim it");
    cr_assert_eq(mm_cw_reserver(atomic_load(&m.f.chunk_words[3])), 0, "and the claim unreserves");
    meta_fini(&m);
}

Test(frames, alloc_chunks_rejects_bad_arguments_with_einval)
{
    meta_t m;
    meta_init(&m, 3);
    grant_all(&m, 0);
    void *snap = snapshot(&m);
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 0, 0, 1), -EINVAL, "empty");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 1, 512, 1), -EINVAL, "tail of a whole chunk");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 2, 2, 0, 1), -EINVAL, "past the end");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 3, 1, 1), -EINVAL, "tail past the end");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, UINT32_MAX, 2, 0, 1), -EINVAL, "overflow");
    assert_unchanged(&m, snap);
    meta_fini(&m);
}

Test(frames, find_run_skips_used_chunks_and_wraps_from_hint)
{
    meta_t m;
    meta_init(&m, 10);
    grant_all(&m, 0);
    /* Chunks 0..9: 3 partly used, 6 reserved, 8 reclaimed; others free. */
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 3, 0, 1, 1), 0);
    mm__frames_install(&m.f, 6, 2);
    cr_assert(mm__frames_try_reclaim(&m.f, 8, false));
    uint32_t first = UINT32_MAX;

    cr_assert_eq(mm__frames_find_run(&m.f, 2, 0, &first), 0);
    cr_assert_eq(first, 0);
    cr_assert_eq(mm__frames_find_run(&m.f, 3, 0, &first), 0);
    cr_assert_eq(first, 0);
    cr_assert_eq(mm__frames_find_run(&m.f, 4, 0, &first), -ENOSPC);
    cr_assert_eq(mm__frames_find_run(&m.f, 3, 1, &first), 0, "reclaimed 8 is installable");
    cr_assert_eq(first, 7);
    cr_assert_eq(mm__frames_find_run(&m.f, 3, 9, &first), 0, "wraps to the start");
    cr_assert_eq(first, 0);
    cr_assert_eq(mm__frames_find_run(&m.f, 2, 5, &first), 0);
    cr_assert_eq(first, 7);
    cr_assert_eq(mm__frames_find_run(&m.f, 11, 0, &first), -ENOSPC);
    cr_assert_eq(mm__frames_find_run(&m.f, 0, 0, &first), -EINVAL);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(frame, 3 * 512 + 1, "partly used chunk preferred");
    meta_fini(&m);
}

Test(frames, exhaustion_then_free_then_alloc_again)
{
    const uint32_t chunks = 2, total = chunks * MM_CHUNK_FRAMES;
    meta_t m;
    meta_init(&m, chunks);
    grant_all(&m, 0);
    mm_frames_thread_t t = thread_for(1);
    bool *seen = calloc(total, 1);
    uint64_t frame;

    for (uint32_t i = 0; i < total; i++) {
        cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0, "alloc %u", i);
        cr_assert_lt(frame, total);
        cr_assert_not(seen[frame]);
        seen[frame] = true;
    }
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), -ENOSPC);
    cr_assert_eq(mm__frames_chunk_free(&m.f, 0) + mm__frames_chunk_free(&m.f, 1), 0);
    cr_assert_eq(mm__frames_free(&m.f, 777, 1), 0);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 2, 1, &frame), -ENOSPC, "one frame is no run of 2");
    cr_assert_eq(mm__frames_chunk_free(&m.f, 1), 1, "count given back");
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_eq(frame, 777);
    free(seen);
    meta_fini(&m);
}

Test(frames, alloc_gives_count_back_when_chunk_is_fragmented)
{
    meta_t m;
    meta_init(&m, 2);
    mm__frames_install(&m.f, 0, 1);
    /* Every other frame of chunk 0 allocated: 256 free, no run of 2. */
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        set_bm(&m, 0, w, 0x5555555555555555ull);
    set_cw(&m, 0, word_of(256, 1, 1));
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;

    cr_assert_eq(mm__frames_alloc(&m.f, &t, 2, 1, &frame), -ENOSPC);
    cr_assert_eq(cw(&m, 0), word_of(256, 1, 1), "count back, the slot's reservation kept");
    set_cw(&m, 0, word_of(256, 0, 1));
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 2, 1, &frame), -ENOSPC);
    cr_assert_eq(cw(&m, 0), word_of(256, 0, 1), "count back, no reservation left behind");
    mm__frames_install(&m.f, 1, 0);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 2, 1, &frame), 0);
    cr_assert_eq(frame / 512, 1);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0, "single frames still fit");
    cr_assert_eq(frame, 512 + 2, "stays in the reserved chunk");
    meta_fini(&m);
}

Test(frames, alloc_in_own_fragmented_chunk_gives_count_back_and_moves_on)
{
    meta_t m;
    meta_init(&m, 2);
    mm__frames_install(&m.f, 0, 1);
    mm__frames_install(&m.f, 1, 0);
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        set_bm(&m, 0, w, 0x5555555555555555ull);
    set_cw(&m, 0, word_of(256, 1, 1));
    mm_frames_thread_t t = {.slot = 1, .chunk = 0, .hint = 3};
    uint64_t frame;

    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0, "one frame fits");
    cr_assert_eq(frame, 3 * 64 + 1, "in the hint word");
    cr_assert_eq(mm__frames_free(&m.f, frame, 1), 0);
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 2, 2, &frame), 0);
    cr_assert_eq(frame / 512, 1, "no run of 2 in chunk 0");
    cr_assert_eq(cw(&m, 0), word_of(256, 0, 1), "count back, reservation dropped on moving");
    cr_assert_eq(t.chunk, 1);
    meta_fini(&m);
}

Test(frames, alloc_fails_with_eio_when_count_promises_frames_no_bit_has)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 1);
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        set_bm(&m, 0, w, ~0ull);
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), -EIO);
    cr_assert_eq(mm_cw_free(cw(&m, 0)), 512, "count given back");
    meta_fini(&m);
}

Test(frames, free_fails_with_eio_when_count_would_pass_512)
{
    meta_t m;
    meta_init(&m, 1);
    mm__frames_install(&m.f, 0, 0);
    set_bm(&m, 0, 0, 1); /* a bit set without its count taken */
    cr_assert_eq(mm__frames_free(&m.f, 0, 1), -EIO);
    cr_assert_eq(mm_cw_free(cw(&m, 0)), 512);
    meta_fini(&m);
}

Test(frames, alloc_moves_on_when_reserved_chunk_is_stolen)
{
    meta_t m;
    meta_init(&m, 2);
    grant_all(&m, 0);
    mm_frames_thread_t t = thread_for(2);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    uint32_t first_chunk = t.chunk;
    cr_assert_eq(mm__frames_free(&m.f, frame, 1), 0);
    cr_assert(mm__frames_try_reclaim(&m.f, first_chunk, true), "idle reservation stolen");
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), 0);
    cr_assert_neq(frame / 512, first_chunk);
    cr_assert_eq(t.chunk, frame / 512);
    cr_assert(mm__frames_chunk_reclaimed(&m.f, first_chunk));
    meta_fini(&m);
}

Test(frames, unreserve_drops_only_own_reservation)
{
    meta_t m;
    meta_init(&m, 2);
    mm__frames_install(&m.f, 0, 4);
    mm__frames_install(&m.f, 1, 5);
    mm_frames_thread_t t = {.slot = 4, .chunk = 1};
    mm__frames_unreserve(&m.f, &t);
    cr_assert_eq(t.chunk, UINT32_MAX);
    cr_assert_eq(mm_cw_reserver(cw(&m, 1)), 5, "another slot's reservation kept");
    t.chunk = 0;
    mm__frames_unreserve(&m.f, &t);
    cr_assert_eq(mm_cw_reserver(cw(&m, 0)), 0);
    meta_fini(&m);
}

/* ---- Concurrency ------------------------------------------------------- */

#define CC_CHUNKS       12
#define CC_THREADS      3
#define CC_OPS          100000
#define CC_MAX_RUNS     128
#define CC_MAX_FRAMES   700 /* per thread: about a third of the region for all */
#define CC_MIN_RECLAIMS 20

typedef struct cc_shared {
    meta_t m;
    _Atomic uint32_t owner[CC_CHUNKS * MM_CHUNK_FRAMES]; /* 0 or thread id */
    _Atomic uint32_t errors;
    atomic_bool stop;
    bool host_holds[CC_CHUNKS]; /* host's own record, host thread only */
    _Atomic uint64_t reclaims;
    uint64_t installs;
} cc_shared_t;

typedef struct cc_worker {
    cc_shared_t *s;
    uint32_t id;
    uint64_t rng;
    uint64_t runs[CC_MAX_RUNS][2];
    uint32_t nruns;
    uint32_t nframes;
} cc_worker_t;

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void cc_free_one(cc_worker_t *w)
{
    uint32_t i = (uint32_t)(xorshift(&w->rng) % w->nruns);
    uint64_t first = w->runs[i][0], n = w->runs[i][1];
    for (uint64_t fr = first; fr < first + n; fr++)
        if (atomic_exchange(&w->s->owner[fr], 0) != w->id)
            atomic_fetch_add(&w->s->errors, 1);
    if (mm__frames_free(&w->s->m.f, first, n) != 0)
        atomic_fetch_add(&w->s->errors, 1);
    w->nframes -= (uint32_t)n;
    w->runs[i][0] = w->runs[w->nruns - 1][0];
    w->runs[i][1] = w->runs[--w->nruns][1];
}

static void cc_alloc_one(cc_worker_t *w, mm_frames_thread_t *t)
{
    static const uint32_t sizes[] = {1, 1, 1, 2, 3, 8, 16, 64, 100, 512};
    uint64_t r = xorshift(&w->rng);
    uint32_t n = sizes[r % 10];
    uint32_t align = 1u << ((r >> 8) % 4);
    uint64_t first;
    int rc = mm__frames_alloc(&w->s->m.f, t, n, align, &first);
    if (rc == -ENOSPC)
        return;
    if (rc != 0 || first % align != 0) {
        atomic_fetch_add(&w->s->errors, 1);
        return;
    }
    for (uint64_t fr = first; fr < first + n; fr++)
        if (atomic_exchange(&w->s->owner[fr], w->id) != 0)
            atomic_fetch_add(&w->s->errors, 1); /* handed out twice */
    w->runs[w->nruns][0] = first;
    w->runs[w->nruns++][1] = n;
    w->nframes += n;
}

static void *cc_worker_main(void *arg)
{
    cc_worker_t *w = arg;
    mm_frames_thread_t t = thread_for(w->id);
    /* Run on past CC_OPS (boundedly) until the host has raced us a while. */
    for (int op = 0;
         op < CC_OPS || (op < 50 * CC_OPS && atomic_load(&w->s->reclaims) < CC_MIN_RECLAIMS);
         op++) {
        uint64_t r = xorshift(&w->rng);
        if (r % 1024 == 0) /* now and then let go of everything: whole free chunks */
            while (w->nruns)
                cc_free_one(w);
        bool do_free = w->nruns == CC_MAX_RUNS || w->nframes > CC_MAX_FRAMES ||
                       (w->nruns > 0 && (r >> 20) % 2);
        if (do_free)
            cc_free_one(w);
        else
            cc_alloc_one(w, &t);
    }
    mm__frames_unreserve(&w->s->m.f, &t);
    return NULL;
}

/* One host step: take a free chunk back, or install one the host holds. */
static void cc_host_step(cc_shared_t *s, uint64_t *rng)
{
    uint32_t c = (uint32_t)(xorshift(rng) % CC_CHUNKS);
    if (s->host_holds[c]) {
        if (xorshift(rng) % 2) {
            mm__frames_install(&s->m.f, c, (uint32_t)(xorshift(rng) % (CC_THREADS + 1)));
            s->host_holds[c] = false;
            s->installs++;
        }
    } else if (mm__frames_try_reclaim(&s->m.f, c, true)) {
        s->host_holds[c] = true;
        atomic_fetch_add(&s->reclaims, 1);
        /* Nobody can own a frame of a chunk the host just took. */
        for (uint32_t fr = c * MM_CHUNK_FRAMES; fr < (c + 1) * MM_CHUNK_FRAMES; fr++)
            if (atomic_load(&s->owner[fr]) != 0)
                atomic_fetch_add(&s->errors, 1);
    }
}

static void *cc_host_main(void *arg)
{
    cc_shared_t *s = arg;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    while (!atomic_load(&s->stop)) {
        cc_host_step(s, &rng);
        sched_yield();
    }
    return NULL;
}

/* After joining: bitmaps, counts, owners and thread records all agree. */
static void cc_check(cc_shared_t *s, cc_worker_t *w)
{
    uint64_t recorded = 0, set_bits = 0;
    for (uint32_t i = 0; i < CC_THREADS; i++)
        for (uint32_t r = 0; r < w[i].nruns; r++) {
            recorded += w[i].runs[r][1];
            for (uint64_t fr = w[i].runs[r][0]; fr < w[i].runs[r][0] + w[i].runs[r][1]; fr++)
                cr_assert_eq(atomic_load(&s->owner[fr]), w[i].id);
        }
    for (uint32_t c = 0; c < CC_CHUNKS; c++) {
        cr_assert_eq(mm__frames_chunk_reclaimed(&s->m.f, c), s->host_holds[c]);
        if (!s->host_holds[c])
            cr_assert_eq(mm__frames_chunk_free(&s->m.f, c), zero_bits(&s->m, c), "chunk %u", c);
        for (uint32_t fr = c * MM_CHUNK_FRAMES; fr < (c + 1) * MM_CHUNK_FRAMES; fr++) {
            bool bit = frame_bit(&s->m, fr);
            cr_assert_eq(bit, atomic_load(&s->owner[fr]) != 0, "frame %u", fr);
            cr_assert(!bit || !s->host_holds[c], "frame %u allocated in reclaimed chunk", fr);
            set_bits += bit;
        }
    }
    cr_assert_eq(recorded, set_bits, "no frame lost or handed out twice");
}

Test(frames, concurrent_alloc_free_with_host_reclaim_keeps_metadata_consistent, .timeout = 60)
{
    cc_shared_t *s = calloc(1, sizeof(*s));
    cc_worker_t *w = calloc(CC_THREADS, sizeof(*w));
    cr_assert(s && w);
    meta_init(&s->m, CC_CHUNKS);
    grant_all(&s->m, 0);
    pthread_t threads[CC_THREADS], host;
    for (uint32_t i = 0; i < CC_THREADS; i++) {
        w[i] = (cc_worker_t){.s = s, .id = i + 1, .rng = 0x1234567ull * (i + 1)};
        cr_assert_eq(pthread_create(&threads[i], NULL, cc_worker_main, &w[i]), 0);
    }
    cr_assert_eq(pthread_create(&host, NULL, cc_host_main, s), 0);
    for (uint32_t i = 0; i < CC_THREADS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&s->stop, true);
    pthread_join(host, NULL);

    cr_assert_eq(atomic_load(&s->errors), 0);
    cr_assert_geq(atomic_load(&s->reclaims), CC_MIN_RECLAIMS, "the host took chunks back");
    cc_check(s, w);
    for (uint32_t i = 0; i < CC_THREADS; i++)
        while (w[i].nruns)
            cc_free_one(&w[i]);
    cr_assert_eq(atomic_load(&s->errors), 0);
    for (uint32_t c = 0; c < CC_CHUNKS; c++)
        if (!s->host_holds[c])
            cr_assert_eq(cw(&s->m, c) & MM_CW_FREE_MASK, 512);
    cr_log_info("concurrent: %llu reclaims, %llu installs",
                (unsigned long long)atomic_load(&s->reclaims), (unsigned long long)s->installs);
    meta_fini(&s->m);
    free(w);
    free(s);
}

/* ---- Hostile metadata -------------------------------------------------- */

/*
 * A client may write anything into its metadata. The region's chunks come in
 * three kinds, so that some outcomes are known even while a peer scribbles:
 * 0..7 always have a set bit in every bitmap word (never reclaimable), 8..15
 * always have an impossible count (never reclaimable, never reported free),
 * 16..23 get anything at all.
 */
#define HM_CHUNKS      24
#define HM_SET_BITS    8  /* chunks below: every bitmap word has a set bit */
#define HM_BAD_COUNT   16 /* chunks below (and from HM_SET_BITS): free > 512 */
#define HM_ROUNDS      2000
#define HM_HOST_CALLS  200000
#define HM_MAX_CALL_NS 2000000000ull /* bounded work: far under, even when preempted */

/* A chunk word that is often nearly plausible. */
static uint32_t hostile_word(uint64_t r)
{
    uint32_t hi = (uint32_t)(r >> 32);
    switch (r % 5) {
    case 0:
        return hi;
    case 1: /* looks wholly free; sometimes reserved, flagged or pinned */
        return (hi & (MM_CW_GEN_MASK | MM_CW_RESERVER_MASK)) | MM_CHUNK_FRAMES |
               ((r >> 8) % 4 == 0 ? MM_CW_DISCARDABLE : 0) |
               ((r >> 10) % 4 == 0 ? 1u << MM_CW_PIN_SHIFT : 0);
    case 2: /* wholly free, unflagged, unpinned, unreserved */
        return (hi & MM_CW_GEN_MASK) | MM_CHUNK_FRAMES;
    case 3: /* an impossible count */
        return (hi & ~MM_CW_FREE_MASK) | (MM_CHUNK_FRAMES + 1 + (uint32_t)(r >> 12) % 511);
    default: /* a reclaimed word, canonical or not */
        return (hi & ~MM_CW_FREE_MASK) | MM_CW_RECLAIMED | ((r >> 8) % 2 ? MM_CHUNK_FRAMES : 0);
    }
}

static uint64_t hostile_bits(uint64_t r)
{
    switch (r % 4) {
    case 0:
        return 0;
    case 1:
        return 1ull << (r >> 58);
    case 2:
        return ~0ull;
    default:
        return r * 0x9e3779b97f4a7c15ull;
    }
}

/* What one scribble writes, keeping each chunk's kind. */
static uint32_t hostile_word_for(uint32_t c, uint64_t r)
{
    uint32_t w = hostile_word(r);
    if (c >= HM_SET_BITS && c < HM_BAD_COUNT)
        w = (w & ~MM_CW_FREE_MASK) | (MM_CHUNK_FRAMES + 1 + (uint32_t)(r >> 20) % 511);
    return w;
}

static uint64_t hostile_bits_for(uint32_t c, uint64_t r)
{
    uint64_t b = hostile_bits(r);
    return c < HM_SET_BITS ? b | 1ull << (r >> 52) % 64 : b;
}

/* Half of the chunks get a clear bitmap (as far as their kind allows). */
static void scribble_all(meta_t *m, uint64_t *rng)
{
    for (uint32_t c = 0; c < m->chunks; c++) {
        set_cw(m, c, hostile_word_for(c, xorshift(rng)));
        bool clear = xorshift(rng) % 2;
        for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++) {
            uint64_t r = xorshift(rng);
            set_bm(m, c, w, hostile_bits_for(c, clear ? r & ~3ull : r));
        }
    }
}

/* The client side on scribbled metadata: errors, never a frame outside. */
static void hostile_client_calls(meta_t *m, uint64_t *rng)
{
    uint64_t total = (uint64_t)m->chunks * MM_CHUNK_FRAMES;
    for (int i = 0; i < 4; i++) {
        uint64_t r = xorshift(rng);
        mm_frames_thread_t t = {.slot = 1 + (uint32_t)(r % MM_RESERVER_SLOTS),
                                .chunk = (uint32_t)(r >> 8) % (m->chunks + 2),
                                .hint = (uint32_t)(r >> 16)};
        uint32_t n = 1 + (uint32_t)(r >> 24) % 512, align = 1u << (r >> 40) % 10;
        uint64_t frame = UINT64_MAX;
        int rc = mm__frames_alloc(&m->f, &t, n, align, &frame);
        cr_assert(rc == 0 || rc == -ENOSPC || rc == -EIO, "alloc: %d", rc);
        if (rc == 0)
            cr_assert(frame < total && n <= total - frame && frame % align == 0, "frame %llu of %u",
                      (unsigned long long)frame, n);
        rc = mm__frames_free(&m->f, (r >> 32) % total, 1 + (r >> 48) % 600);
        cr_assert(rc == 0 || rc == -EINVAL || rc == -EIO, "free: %d", rc);
    }
}

Test(frames, host_refuses_impossible_values_in_scribbled_metadata)
{
    meta_t m;
    meta_init(&m, HM_CHUNKS);
    uint64_t rng = 0x5eedf00d1234567ull;
    uint32_t reclaimed = 0, refused_full_with_bit = 0;

    for (int round = 0; round < HM_ROUNDS; round++) {
        scribble_all(&m, &rng);
        hostile_client_calls(&m, &rng);
        for (uint32_t c = 0; c < HM_CHUNKS; c++) {
            uint32_t w = cw(&m, c), free_frames = mm_cw_free(w);
            bool clear = zero_bits(&m, c) == MM_CHUNK_FRAMES;
            bool valid = !(w & MM_CW_RECLAIMED) && free_frames <= MM_CHUNK_FRAMES;
            cr_assert_eq(mm__frames_chunk_free(&m.f, c), valid ? free_frames : 0, "word %#x", w);
            cr_assert_eq(mm__frames_chunk_reclaimed(&m.f, c), (w & MM_CW_RECLAIMED) != 0);

            bool steal = xorshift(&rng) % 2;
            bool expect = free_frames == MM_CHUNK_FRAMES &&
                          !(w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) && mm_cw_pins(w) == 0 &&
                          (mm_cw_reserver(w) == 0 || steal) && clear;
            refused_full_with_bit += !expect && !clear && free_frames == MM_CHUNK_FRAMES &&
                                     !(w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) &&
                                     mm_cw_pins(w) == 0;
            cr_assert_eq(mm__frames_try_reclaim(&m.f, c, steal), expect, "word %#x, clear %d", w,
                         clear);
            if (expect) {
                reclaimed++;
                cr_assert_eq(cw(&m, c), ((mm_cw_gen(w) + 1) & 0xff) << MM_CW_GEN_SHIFT |
                                            MM_CW_RECLAIMED | MM_CHUNK_FRAMES);
            } else {
                cr_assert_eq(cw(&m, c), w, "a refused chunk's word is left alone");
            }

            /* Whatever the client wrote, repair leaves the canonical word. */
            uint32_t before = cw(&m, c);
            bool changed = mm__frames_repair_reclaimed(&m.f, c);
            uint32_t after = cw(&m, c);
            cr_assert_eq(after & ~MM_CW_GEN_MASK, MM_CW_RECLAIMED | MM_CHUNK_FRAMES);
            cr_assert_eq(changed, before != after);
            cr_assert_eq(changed,
                         (before & ~MM_CW_GEN_MASK) != (MM_CW_RECLAIMED | MM_CHUNK_FRAMES));
        }
    }
    cr_assert_gt(reclaimed, 100, "the honest-looking chunks were taken");
    cr_assert_gt(refused_full_with_bit, 100, "full counts with set bits were met");
    meta_fini(&m);
}

typedef struct hm_shared {
    meta_t a;         /* the hostile client's metadata */
    cc_shared_t *b;   /* an honest client's, with its owner records */
    atomic_bool stop; /* the honest workers are done */
    atomic_bool host_done;
    _Atomic uint32_t errors;
    uint64_t max_call_ns; /* host thread only */
    uint64_t host_calls;
} hm_shared_t;

static uint64_t hm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *hm_scribbler_main(void *arg)
{
    hm_shared_t *s = arg;
    uint64_t rng = 0xbadc0ffee0ddf00dull;
    while (!atomic_load(&s->host_done)) {
        uint64_t r = xorshift(&rng);
        uint32_t c = (uint32_t)(r % HM_CHUNKS);
        if ((r >> 8) % 2)
            set_cw(&s->a, c, hostile_word_for(c, xorshift(&rng)));
        else
            set_bm(&s->a, c, (uint32_t)(r >> 16) % MM_CHUNK_BITMAP_WORDS,
                   hostile_bits_for(c, xorshift(&rng)));
    }
    return NULL;
}

/* One host call on the hostile region, checked where the outcome is known. */
static void hm_host_step(hm_shared_t *s, uint64_t *rng)
{
    uint64_t r = xorshift(rng);
    uint32_t c = (uint32_t)(r % HM_CHUNKS);
    bool never = c < HM_BAD_COUNT; /* set bits or impossible counts, always */
    uint64_t t0 = hm_now_ns();

    switch ((r >> 8) % 4) {
    case 0:
    case 1:
        if (mm__frames_try_reclaim(&s->a.f, c, (r >> 16) % 2) && never)
            atomic_fetch_add(&s->errors, 1);
        break;
    case 2: {
        uint32_t free_frames = mm__frames_chunk_free(&s->a.f, c);
        if (free_frames > MM_CHUNK_FRAMES || (c >= HM_SET_BITS && never && free_frames != 0))
            atomic_fetch_add(&s->errors, 1);
        break;
    }
    default: /* repair or install would end a chunk's kind: only the free-for-all ones */
        if (c >= HM_BAD_COUNT) {
            mm__frames_repair_reclaimed(&s->a.f, c);
            if ((r >> 16) % 2)
                mm__frames_install(&s->a.f, c, (uint32_t)(r >> 20) % 100);
        }
        break;
    }
    uint64_t ns = hm_now_ns() - t0;
    if (ns > s->max_call_ns)
        s->max_call_ns = ns;
    s->host_calls++;
}

static void *hm_host_main(void *arg)
{
    hm_shared_t *s = arg;
    uint64_t rng = 0x0123456789abcdefull, rng_b = 0x9e3779b97f4a7c15ull;
    for (uint64_t i = 0; i < HM_HOST_CALLS || !atomic_load(&s->stop); i++) {
        hm_host_step(s, &rng);
        if (i % 16 == 0) {
            cc_host_step(s->b, &rng_b);
            sched_yield();
        }
    }
    atomic_store(&s->host_done, true);
    return NULL;
}

Test(frames, host_calls_stay_bounded_while_a_peer_scribbles_and_other_clients_are_unharmed,
     .timeout = 120)
{
    hm_shared_t *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->b = calloc(1, sizeof(*s->b));
    cc_worker_t *w = calloc(CC_THREADS, sizeof(*w)); /* one runs; cc_check reads them all */
    cr_assert(s->b && w);
    meta_init(&s->a, HM_CHUNKS);
    uint64_t rng = 0x5eed5eed5eed5eedull;
    scribble_all(&s->a, &rng);
    meta_init(&s->b->m, CC_CHUNKS);
    grant_all(&s->b->m, 0);

    pthread_t scribbler, host, worker;
    *w = (cc_worker_t){.s = s->b, .id = 1, .rng = 0x1234567ull};
    cr_assert_eq(pthread_create(&scribbler, NULL, hm_scribbler_main, s), 0);
    cr_assert_eq(pthread_create(&worker, NULL, cc_worker_main, w), 0);
    cr_assert_eq(pthread_create(&host, NULL, hm_host_main, s), 0);
    pthread_join(worker, NULL);
    atomic_store(&s->stop, true);
    pthread_join(host, NULL);
    pthread_join(scribbler, NULL);

    cr_assert_eq(atomic_load(&s->errors), 0, "the host took or counted an impossible chunk");
    cr_assert_geq(s->host_calls, HM_HOST_CALLS);
    cr_assert_lt(s->max_call_ns, HM_MAX_CALL_NS, "one host call took %llu ns",
                 (unsigned long long)s->max_call_ns);
    /* The honest client beside it: nothing lost, nothing handed out twice. */
    cr_assert_eq(atomic_load(&s->b->errors), 0);
    cc_check(s->b, w);
    cr_log_info("hostile: %llu host calls, longest %llu ns; honest client: %llu reclaims",
                (unsigned long long)s->host_calls, (unsigned long long)s->max_call_ns,
                (unsigned long long)atomic_load(&s->b->reclaims));
    meta_fini(&s->a);
    meta_fini(&s->b->m);
    free(w);
    free(s->b);
    free(s);
}

/* ---- Discardable chunks ------------------------------------------------ */

Test(frames, discardable_needs_a_wholly_allocated_chunk)
{
    meta_t m;
    meta_init(&m, 2);
    grant_all(&m, 0);
    cr_assert_eq(mm__frames_set_discardable(&m.f, 0, true), -EINVAL, "a free chunk holds no cache");
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 1, 0, 0), 0);
    cr_assert_eq(mm__frames_set_discardable(&m.f, 0, true), 0);
    cr_assert(mm__frames_chunk_discardable(&m.f, 0));
    cr_assert_eq(mm__frames_set_discardable(&m.f, 0, false), 0);
    cr_assert_not(mm__frames_chunk_discardable(&m.f, 0));
    cr_assert_eq(mm__frames_set_discardable(&m.f, 2, true), -EINVAL, "past the end");
    meta_fini(&m);
}

Test(frames, a_pinned_discardable_chunk_is_not_discarded)
{
    meta_t m;
    meta_init(&m, 1);
    grant_all(&m, 0);
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 1, 0, 0), 0);
    cr_assert_eq(mm__frames_set_discardable(&m.f, 0, true), 0);
    cr_assert_not(mm__frames_try_reclaim(&m.f, 0, true), "step 1 never takes it");
    cr_assert_eq(mm__frames_pin(&m.f, 0), 0);
    cr_assert_eq(mm__frames_pin(&m.f, 0), 0);
    cr_assert_not(mm__frames_try_discard(&m.f, 0), "pinned twice");
    mm__frames_unpin(&m.f, 0);
    cr_assert_not(mm__frames_try_discard(&m.f, 0), "still pinned once");
    mm__frames_unpin(&m.f, 0);
    cr_assert(mm__frames_try_discard(&m.f, 0), "unpinned: the host takes it");
    cr_assert(mm__frames_chunk_reclaimed(&m.f, 0));
    cr_assert_eq(mm__frames_pin(&m.f, 0), -ESTALE, "the reader learns the content is gone");
    cr_assert_eq(mm__frames_set_discardable(&m.f, 0, false), -ESTALE);
    meta_fini(&m);
}

Test(frames, pins_stop_at_their_limit_and_plain_chunks_cannot_be_pinned)
{
    meta_t m;
    meta_init(&m, 2);
    grant_all(&m, 0);
    cr_assert_eq(mm__frames_alloc_chunks(&m.f, 0, 2, 0, 0), 0);
    cr_assert_eq(mm__frames_pin(&m.f, 1), -EINVAL, "not discardable");
    cr_assert_eq(mm__frames_set_discardable(&m.f, 0, true), 0);
    for (uint32_t i = 0; i < MM_CW_PIN_MAX; i++)
        cr_assert_eq(mm__frames_pin(&m.f, 0), 0);
    cr_assert_eq(mm__frames_pin(&m.f, 0), -EBUSY);
    cr_assert_eq(mm_cw_pins(cw(&m, 0)), MM_CW_PIN_MAX, "the count never wraps");
    meta_fini(&m);
}

Test(frames, allocation_never_uses_a_discardable_chunk)
{
    meta_t m;
    meta_init(&m, 1);
    grant_all(&m, 0);
    mm_frames_thread_t t = thread_for(1);
    uint64_t frame;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 512, 512, &frame), 0);
    cr_assert_eq(mm__frames_set_discardable(&m.f, 0, true), 0);
    cr_assert_eq(mm__frames_free(&m.f, 0, 1), 0, "a cache may shrink inside its chunk");
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 1, 1, &frame), -ENOSPC);
    meta_fini(&m);
}

Test(frames, borrow_takes_frames_from_another_threads_reserved_chunk)
{
    meta_t m;
    meta_init(&m, 2);
    grant_all(&m, 1); /* both chunks reserved for slot 1 */
    mm_frames_thread_t a = {.slot = 1, .chunk = UINT32_MAX}, b = {.slot = 2, .chunk = UINT32_MAX};
    uint64_t frame;
    for (int i = 0; i < 1024; i++)
        cr_assert_eq(mm__frames_alloc(&m.f, &a, 1, 1, &frame), 0);
    cr_assert_eq(mm__frames_free(&m.f, 704, 16), 0);
    cr_assert_eq(mm__frames_alloc(&m.f, &b, 16, 16, &frame), -ENOSPC,
                 "the freed frames lie in a chunk another thread reserved");
    cr_assert_eq(mm__frames_borrow(&m.f, &b, 16, 16, &frame), 0);
    cr_assert_eq(frame, 704);
    cr_assert(frame_bit(&m, frame));
    cr_assert_eq(mm_cw_reserver(cw(&m, 1)), 1, "the reservation is untouched");
    cr_assert_eq(mm__frames_borrow(&m.f, &b, 16, 1, &frame), -ENOSPC);
    cr_assert_eq(mm__frames_borrow(&m.f, &a, 1, 1, &frame), -ENOSPC,
                 "a thread does not borrow from its own chunks");
    meta_fini(&m);
}

/* ---- Taking given frames (virtio-mem's isolation) --------------------------- */

Test(frames, claim_takes_one_given_free_frame_and_nothing_else)
{
    meta_t m;
    meta_init(&m, 2);
    grant_all(&m, 0);
    mm_frames_thread_t t = {.slot = 3, .chunk = UINT32_MAX};
    uint64_t first;
    cr_assert_eq(mm__frames_alloc(&m.f, &t, 16, 16, &first), 0); /* reserves a chunk for slot 3 */
    uint32_t c = (uint32_t)(first / MM_CHUNK_FRAMES);
    uint64_t mine = (uint64_t)c * MM_CHUNK_FRAMES + 100;
    cr_assert_eq(mm__frames_claim(&m.f, mine), 0);
    cr_assert(frame_bit(&m, mine));
    cr_assert_eq(mm__frames_chunk_free(&m.f, c), MM_CHUNK_FRAMES - 17);
    cr_assert_eq(mm__frames_claim(&m.f, mine), -EBUSY, "already taken");
    cr_assert_eq(mm__frames_claim(&m.f, first), -EBUSY, "another allocation's frame");
    cr_assert_eq(mm__frames_chunk_free(&m.f, c), MM_CHUNK_FRAMES - 17,
                 "a refused claim changes nothing");
    cr_assert_eq(mm__frames_claim(&m.f, 2ull * MM_CHUNK_FRAMES), -EINVAL, "past the region");
    cr_assert_eq(mm_cw_reserver(cw(&m, c)), 3, "the reservation stays");
    mm__frames_clear_reserver(&m.f, c);
    cr_assert_eq(mm_cw_reserver(cw(&m, c)), 0);
    cr_assert_eq(mm__frames_free(&m.f, mine, 1), 0);
    cr_assert_eq(mm__frames_chunk_free(&m.f, c), MM_CHUNK_FRAMES - 16);
    cr_assert_eq(zero_bits(&m, c), MM_CHUNK_FRAMES - 16);
    meta_fini(&m);
}

Test(frames, claim_refuses_reclaimed_chunks)
{
    meta_t m;
    meta_init(&m, 1); /* every chunk starts reclaimed */
    cr_assert_eq(mm__frames_claim(&m.f, 5), -EBUSY);
    cr_assert_eq(cw(&m, 0), MM_CW_RECLAIMED | MM_CHUNK_FRAMES);
    mm__frames_clear_reserver(&m.f, 0);
    cr_assert_eq(cw(&m, 0), MM_CW_RECLAIMED | MM_CHUNK_FRAMES, "the host's word is left alone");
    meta_fini(&m);
}
