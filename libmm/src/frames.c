/*
 * The shared frame allocator (contract in frames.h, layout in <mm/protocol.h>).
 *
 * State is one 32-bit word per 2 MiB chunk (free count, flags, reserver, pins,
 * generation) and one bit per 4 KiB frame (1 = allocated), both living in the
 * shared-state memfd that the host daemon and an untrusted client map. The
 * chunk word changes only by compare-and-swap, so its fields change together
 * and a stale writer fails on the generation that every reclaim and install
 * raises. The ordering rules that make the host's reclaim safe without a lock:
 *
 *   - an allocation lowers the free count (one CAS that also fails on a
 *     RECLAIMED chunk) before it sets frame bits;
 *   - a free clears frame bits before it raises the count;
 *
 * so at every instant zero_bits >= free (per chunk), and free == 512 means no
 * frame of the chunk is allocated or about to be. The host reclaims only then.
 *
 * Reservations: each client thread reserves one chunk (reserver = its slot) and
 * allocates there first, from the bitmap word where it last found room. A
 * reserved chunk that becomes full stays reserved (it costs nothing: the host
 * cannot take a full chunk anyway, and the next allocation that does not fit
 * drops it). The host may steal reservations.
 *
 * The hot path (a run inside one bitmap word of the thread's reserved chunk,
 * and its free) is one CAS on the chunk word and one on the bitmap word, with
 * no scan, no division and no call out of this file.
 *
 * Every loop is bounded: CAS loops by MM_FRAMES_MAX_RETRIES (a failed CAS means
 * another writer succeeded, so honest contention stays far below the bound),
 * scans by the chunk count.
 */
#include "frames.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
/* The hot path is inlined into mm__frames_alloc; the rare paths stay out. */
#define hot_inline __attribute__((always_inline)) inline
#define cold_path  __attribute__((noinline, cold))

/* ---- Atomic wrappers: the name says the memory order ------------------- */

/* Type-generic over the 32-bit chunk words and the 64-bit bitmap words. */
#define load_acquire(p)     atomic_load_explicit((p), memory_order_acquire)
#define store_release(p, v) atomic_store_explicit((p), (v), memory_order_release)
#define store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
/* Strong CAS: a spurious failure would only burn one of our bounded retries. */
#define cas_acq_rel(p, e, d)                                                                       \
    atomic_compare_exchange_strong_explicit((p), (e), (d), memory_order_acq_rel,                   \
                                            memory_order_acquire)
#define fetch_and_acq_rel(p, v) atomic_fetch_and_explicit((p), (v), memory_order_acq_rel)

/* ---- Chunk words and bitmaps ------------------------------------------- */

#define FULL_WORD          (~(uint64_t)0)
#define CHUNK_FRAMES_SHIFT (MM_CHUNK_SHIFT - MM_FRAME_SHIFT) /* 9 */
#define BITMAP_WORD_MASK   (MM_CHUNK_BITMAP_WORDS - 1u)

_Static_assert(MM_CHUNK_FRAMES == 1u << CHUNK_FRAMES_SHIFT, "chunk frames by shift");
_Static_assert((MM_CHUNK_BITMAP_WORDS & BITMAP_WORD_MASK) == 0, "bitmap words by mask");

static inline _Atomic uint32_t *chunk_word(const mm_frames_t *f, uint32_t chunk)
{
    return &f->chunk_words[chunk];
}

static inline _Atomic uint64_t *bitmap_word(const mm_frames_t *f, uint32_t chunk, uint32_t w)
{
    return &f->bitmaps[((uint64_t)chunk << 3) + w];
}

_Static_assert(MM_CHUNK_BITMAP_WORDS == 1u << 3, "bitmap_word shifts by 3");

/* The generation field of w plus one (wrapping inside its 8 bits). */
static inline uint32_t next_gen(uint32_t w)
{
    return (uint32_t)((mm_cw_gen(w) + 1u) << MM_CW_GEN_SHIFT);
}

/* The canonical word of a chunk the host holds: all free, nothing else set. */
static inline uint32_t reclaimed_word(uint32_t gen_bits)
{
    return gen_bits | MM_CW_RECLAIMED | MM_CHUNK_FRAMES;
}

/* Bits [lo, hi) of a bitmap word, 0 <= lo < hi <= 64. */
static inline uint64_t range_mask(uint32_t lo, uint32_t hi)
{
    uint64_t upto = hi >= 64 ? FULL_WORD : ((uint64_t)1 << hi) - 1;
    return upto & ~(((uint64_t)1 << lo) - 1);
}

/* Offset of the bitmaps: right after the chunk words, on a cache line. */
static uint64_t bitmap_offset_for(uint32_t chunk_count)
{
    return (MM_CONTROL_BYTES + (uint64_t)chunk_count * sizeof(uint32_t) + 63) & ~(uint64_t)63;
}

static inline bool is_pow2(uint32_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

/* ---- Chunk word updates (client side) ---------------------------------- */

/*
 * Take nframes of chunk's free count and make slot its reserver, in one CAS.
 * Refuses RECLAIMED, DISCARDABLE (its content may be dropped, so no new data
 * goes there) and impossible words, and chunks reserved by another slot.
 * *was_ours tells whether slot had reserved the chunk already; *was_free is
 * the count before. Returns 0 or -ENOSPC.
 */
static hot_inline int reserve_frames(const mm_frames_t *f, uint32_t chunk, uint32_t slot,
                                     uint32_t nframes, bool *was_ours, uint32_t *was_free)
{
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    uint32_t slot_bits = slot << MM_CW_RESERVER_SHIFT;

    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        uint32_t res = w & MM_CW_RESERVER_MASK;
        uint32_t free_frames = mm_cw_free(w);
        if ((w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) || free_frames > MM_CHUNK_FRAMES ||
            free_frames < nframes || (res != 0 && res != slot_bits))
            return -ENOSPC;
        /* free >= nframes: no borrow out of the count field. */
        uint32_t nw = ((w & ~MM_CW_RESERVER_MASK) | slot_bits) - nframes;
        if (likely(cas_acq_rel(cw, &w, nw))) {
            *was_ours = res == slot_bits;
            *was_free = free_frames;
            return 0;
        }
    }
    return -ENOSPC;
}

/*
 * Raise chunk's free count by nframes, after their bits were cleared, and
 * clear the reserver in the same CAS if it is drop_slot (0: keep it). A
 * RECLAIMED word belongs to the host and is never written here; a count that
 * would pass 512 means the metadata is corrupt. Returns 0 or -EIO.
 */
static hot_inline int raise_free_drop(const mm_frames_t *f, uint32_t chunk, uint32_t nframes,
                                      uint32_t drop_slot)
{
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);

    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if ((w & MM_CW_RECLAIMED) || mm_cw_free(w) + nframes > MM_CHUNK_FRAMES)
            return -EIO;
        uint32_t nw = w + nframes;
        if (drop_slot != 0 && mm_cw_reserver(w) == drop_slot)
            nw &= ~MM_CW_RESERVER_MASK;
        if (likely(cas_acq_rel(cw, &w, nw)))
            return 0;
    }
    return -EIO;
}

static inline int raise_free(const mm_frames_t *f, uint32_t chunk, uint32_t nframes)
{
    return raise_free_drop(f, chunk, nframes, 0);
}

/* Clear chunk's reserver if it is still slot; anything else is left alone. */
static void drop_reservation(const mm_frames_t *f, uint32_t chunk, uint32_t slot)
{
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);

    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if ((w & MM_CW_RECLAIMED) || mm_cw_reserver(w) != slot)
            return;
        if (cas_acq_rel(cw, &w, w & ~MM_CW_RESERVER_MASK))
            return;
    }
}

/* ---- Frame bits -------------------------------------------------------- */

/* Bit p of the result is set iff bits p .. p+n-1 of word are all clear. */
static inline uint64_t run_starts(uint64_t word, uint32_t n)
{
    uint64_t runs = ~word;
    uint32_t len = 1;

    while (len < n) {
        uint32_t step = len < n - len ? len : n - len;
        runs &= runs >> step;
        len += step;
    }
    return runs;
}

/* Bit p set for every p that is a multiple of 1 << i (i = 0..6). */
static const uint64_t align_patterns[7] = {
    FULL_WORD,
    0x5555555555555555ull,
    0x1111111111111111ull,
    0x0101010101010101ull,
    0x0001000100010001ull,
    0x0000000100000001ull,
    1,
};

/* True if any frame bit of the chunk is clear. */
static bool chunk_has_clear_bit(const mm_frames_t *f, uint32_t chunk)
{
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        if (load_acquire(bitmap_word(f, chunk, w)) != FULL_WORD)
            return true;
    return false;
}

/*
 * Clear the bits [first_bit, first_bit + nbits) of chunk that this thread set.
 * Used only to roll back a claim, before the count is given back.
 */
static void unmark_bits(const mm_frames_t *f, uint32_t chunk, uint32_t first_bit, uint32_t nbits)
{
    uint32_t end = first_bit + nbits;

    for (uint32_t b = first_bit; b < end;) {
        uint32_t w = b / 64, lo = b % 64;
        uint32_t hi = end - w * 64 < 64 ? end - w * 64 : 64;
        fetch_and_acq_rel(bitmap_word(f, chunk, w), ~range_mask(lo, hi));
        b = w * 64 + hi;
    }
}

/*
 * Set the bits [first_bit, first_bit + nbits) of chunk, each word by one CAS
 * that requires its bits clear. All or nothing: on a set bit the words
 * already marked are rolled back and false is returned.
 */
static bool mark_bits(const mm_frames_t *f, uint32_t chunk, uint32_t first_bit, uint32_t nbits)
{
    uint32_t end = first_bit + nbits;

    for (uint32_t b = first_bit; b < end;) {
        uint32_t w = b / 64, lo = b % 64;
        uint32_t hi = end - w * 64 < 64 ? end - w * 64 : 64;
        uint64_t mask = range_mask(lo, hi);
        _Atomic uint64_t *bw = bitmap_word(f, chunk, w);
        uint64_t cur = load_acquire(bw);
        bool done = false;
        for (int i = 0; i < MM_FRAMES_MAX_RETRIES && !(cur & mask); i++) {
            if ((done = cas_acq_rel(bw, &cur, cur | mask)))
                break;
        }
        if (!done) {
            unmark_bits(f, chunk, first_bit, b - first_bit);
            return false;
        }
        b = w * 64 + hi;
    }
    return true;
}

/*
 * Claim a run of n <= 64 clear bits in one bitmap word at offsets whose bit
 * is set in pattern, by one CAS. Returns the offset or -1 (no such run).
 */
static hot_inline int claim_in_word(_Atomic uint64_t *bw, uint32_t n, uint64_t pattern)
{
    uint64_t cur = load_acquire(bw);
    uint64_t ones = n >= 64 ? FULL_WORD : ((uint64_t)1 << n) - 1;

    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        uint64_t starts = run_starts(cur, n) & pattern;
        if (!starts)
            return -1;
        uint32_t off = (uint32_t)__builtin_ctzll(starts);
        if (likely(cas_acq_rel(bw, &cur, cur | (ones << off))))
            return (int)off;
    }
    return -1;
}

/*
 * One pass over the chunk for a run of n <= 64 frames inside one bitmap word,
 * at a chunk offset that is a multiple of align. Starts at the word *hint
 * names (wrapping) and leaves there the word it claimed in. Returns the run's
 * first bit or -1.
 */
static hot_inline int claim_small_pass(const mm_frames_t *f, uint32_t chunk, uint32_t n,
                                       uint32_t align, uint32_t *hint)
{
    _Atomic uint64_t *bm = bitmap_word(f, chunk, 0);

    if (likely(align <= 64)) {
        uint64_t pattern = align_patterns[__builtin_ctz(align)];
        uint32_t first = *hint & BITMAP_WORD_MASK;
        for (uint32_t i = 0; i < MM_CHUNK_BITMAP_WORDS; i++) {
            uint32_t w = (first + i) & BITMAP_WORD_MASK;
            int off = claim_in_word(&bm[w], n, pattern);
            if (likely(off >= 0)) {
                *hint = w;
                return (int)(w * 64) + off;
            }
        }
        return -1;
    }
    /* A multiple of align > 64 is bit 0 of every (align / 64)-th word. */
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w += align >> 6) {
        if (claim_in_word(&bm[w], n, 1) == 0) {
            *hint = w;
            return (int)(w * 64);
        }
    }
    return -1;
}

/*
 * One pass over the chunk for a run of n > 64 frames: it starts on a 64-frame
 * boundary that is a multiple of align and takes whole words plus the low
 * bits of a last one. Returns the run's first bit or -1.
 */
static int claim_large_pass(const mm_frames_t *f, uint32_t chunk, uint32_t n, uint32_t align)
{
    uint32_t span = (n + 63) / 64;
    uint32_t word_step = align > 64 ? align / 64 : 1;

    for (uint32_t s = 0; s + span <= MM_CHUNK_BITMAP_WORDS; s += word_step) {
        /* Cheap look first so that a busy first word costs no CAS. */
        if (load_acquire(bitmap_word(f, chunk, s)) != 0)
            continue;
        if (mark_bits(f, chunk, s * 64, n))
            return (int)(s * 64);
    }
    return -1;
}

/*
 * Set every bit of a chunk whose whole count (512) this thread has just taken.
 * While the count is ours no honest peer writes a bit of the chunk (no
 * allocator can take a frame, no frame is allocated to be freed, the host
 * reclaims only at 512), so plain stores do, after loads that check every bit
 * is clear. Returns 0, or -1 (nothing written) if a bit was set.
 */
static int claim_whole(const mm_frames_t *f, uint32_t chunk)
{
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        if (load_acquire(bitmap_word(f, chunk, w)) != 0)
            return -1;
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        store_release(bitmap_word(f, chunk, w), FULL_WORD);
    return 0;
}

/*
 * After a failed first pass (tried) or none: passes repeat only while no bit
 * of the chunk is clear. The count promises one, so that is a racing free or
 * corrupt metadata. Returns the first bit, -ENOSPC or -EIO.
 */
static cold_path int claim_run_slow(const mm_frames_t *f, uint32_t chunk, uint32_t n,
                                    uint32_t align, uint32_t *hint, bool tried)
{
    for (int pass = 0; pass < MM_FRAMES_MAX_RETRIES; pass++) {
        if (pass > 0 || !tried) {
            int bit = n <= 64 ? claim_small_pass(f, chunk, n, align, hint)
                              : claim_large_pass(f, chunk, n, align);
            if (bit >= 0)
                return bit;
        }
        if (chunk_has_clear_bit(f, chunk))
            return -ENOSPC;
    }
    return -EIO;
}

/*
 * Set the bits of a run of n frames in chunk, whose count this thread has
 * already taken (the count was was_free before it did). Returns the first
 * bit, -ENOSPC (fragmented: clear bits but no run) or -EIO.
 */
static hot_inline int claim_run(const mm_frames_t *f, uint32_t chunk, uint32_t n, uint32_t align,
                                uint32_t was_free, uint32_t *hint)
{
    if (likely(n <= 64)) {
        int bit = claim_small_pass(f, chunk, n, align, hint);
        if (likely(bit >= 0))
            return bit;
        return claim_run_slow(f, chunk, n, align, hint, true);
    }
    if (n == MM_CHUNK_FRAMES && was_free == MM_CHUNK_FRAMES && claim_whole(f, chunk) == 0)
        return 0;
    return claim_run_slow(f, chunk, n, align, hint, false);
}

/*
 * Reserve n frames of chunk for the thread's slot, then claim a run. If no
 * run is found the count is given back, and the reservation too if this call
 * made it, so that a chunk merely looked at is not left reserved.
 * Returns 0, -ENOSPC (try another chunk) or -EIO.
 */
static hot_inline int alloc_in_chunk(const mm_frames_t *f, mm_frames_thread_t *t, uint32_t chunk,
                                     uint32_t n, uint32_t align, uint64_t *frame_out)
{
    bool was_ours = false;
    uint32_t was_free = 0;
    int rc = reserve_frames(f, chunk, t->slot, n, &was_ours, &was_free);
    if (rc)
        return rc;
    int bit = claim_run(f, chunk, n, align, was_free, &t->hint);
    if (likely(bit >= 0)) {
        *frame_out = ((uint64_t)chunk << CHUNK_FRAMES_SHIFT) + (uint32_t)bit;
        return 0;
    }
    rc = raise_free_drop(f, chunk, n, was_ours ? 0 : t->slot);
    return rc ? rc : bit;
}

/*
 * Scan every chunk once from start for one to reserve. want_whole selects the
 * pass: first chunks already reserved for this slot (an install hands them
 * over that way) or partly used (so that wholly free chunks stay whole for the
 * host to take), then the other wholly free ones. skip just failed.
 */
static int scan_chunks(const mm_frames_t *f, mm_frames_thread_t *t, uint32_t n, uint32_t align,
                       uint32_t start, uint32_t skip, bool want_whole, uint64_t *frame_out)
{
    uint32_t count = f->chunk_count;

    for (uint32_t i = 0, c = start; i < count; i++, c = c + 1 == count ? 0 : c + 1) {
        uint32_t w = load_acquire(chunk_word(f, c));
        uint32_t free_frames = mm_cw_free(w), res = mm_cw_reserver(w);
        bool first_pass = free_frames < MM_CHUNK_FRAMES || res == t->slot;
        if (c == skip || (w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) || free_frames < n ||
            free_frames > MM_CHUNK_FRAMES || first_pass == want_whole ||
            (res != 0 && res != t->slot))
            continue;
        int rc = alloc_in_chunk(f, t, c, n, align, frame_out);
        if (rc == -ENOSPC)
            continue;
        if (rc == 0 && t->chunk != c) {
            if (t->chunk < count)
                drop_reservation(f, t->chunk, t->slot);
            t->chunk = c;
        }
        return rc;
    }
    return -ENOSPC;
}

/* Frames from a chunk another thread reserved (see frames.h). */
int mm__frames_borrow(mm_frames_t *f, mm_frames_thread_t *t, uint32_t n, uint32_t align,
                      uint64_t *frame_out)
{
    if (!f || !t || !frame_out || n - 1 >= MM_CHUNK_FRAMES || !is_pow2(align) ||
        align > MM_CHUNK_FRAMES)
        return -EINVAL;
    for (uint32_t c = 0; c < f->chunk_count; c++) {
        _Atomic uint32_t *cw = chunk_word(f, c);
        uint32_t w = load_acquire(cw);
        bool taken = false;
        for (int i = 0; i < MM_FRAMES_MAX_RETRIES && !taken; i++) {
            uint32_t res = mm_cw_reserver(w), free_frames = mm_cw_free(w);
            if ((w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) || res == 0 || res == t->slot ||
                free_frames < n || free_frames > MM_CHUNK_FRAMES)
                break;
            taken = cas_acq_rel(cw, &w, w - n);
        }
        if (!taken)
            continue;
        uint32_t hint = 0;
        int bit = claim_run(f, c, n, align, mm_cw_free(w), &hint);
        if (bit >= 0) {
            *frame_out = ((uint64_t)c << CHUNK_FRAMES_SHIFT) + (uint32_t)bit;
            return 0;
        }
        int rc = raise_free(f, c, n);
        if (rc)
            return rc;
    }
    return -ENOSPC;
}

/* Out of the hot path: the thread has no chunk, or its chunk had no room. */
static cold_path int alloc_slow(mm_frames_t *f, mm_frames_thread_t *t, uint32_t nframes,
                                uint32_t align, uint64_t *frame_out)
{
    if (f->chunk_count == 0)
        return -EINVAL;
    /* Threads without a chunk start apart, so that they do not collide. */
    uint32_t start = (uint32_t)((uint64_t)(t->slot - 1) * f->chunk_count / MM_RESERVER_SLOTS);
    uint32_t skip = UINT32_MAX;
    if (t->chunk < f->chunk_count) {
        /* Reclaimed, reserved by another, too full or fragmented: let go. */
        drop_reservation(f, t->chunk, t->slot);
        start = skip = t->chunk;
        t->chunk = UINT32_MAX;
    }
    int rc = scan_chunks(f, t, nframes, align, start, skip, false, frame_out);
    if (rc == -ENOSPC)
        rc = scan_chunks(f, t, nframes, align, start, skip, true, frame_out);
    return rc;
}

/*
 * The rest of a fast-path allocation whose count was taken from the thread's
 * own chunk but whose hint word had no run: the search of alloc_in_chunk.
 * Returns 0, -ENOSPC (count given back, reservation kept) or -EIO.
 */
static cold_path int alloc_own_rest(const mm_frames_t *f, mm_frames_thread_t *t, uint32_t chunk,
                                    uint32_t n, uint32_t align, uint32_t was_free,
                                    uint64_t *frame_out)
{
    int bit = claim_run(f, chunk, n, align, was_free, &t->hint);
    if (bit >= 0) {
        *frame_out = ((uint64_t)chunk << CHUNK_FRAMES_SHIFT) + (uint32_t)bit;
        return 0;
    }
    int rc = raise_free(f, chunk, n);
    return rc ? rc : bit;
}

/*
 * The hot path: a run of n <= 64 frames (align <= 64) in the thread's own
 * reserved chunk, tried in the hint word first. One check covers the flags
 * and the reserver; one unsigned compare covers n <= free <= 512. Returns 0,
 * -EIO, -ENOSPC (the chunk has no room: move on) or -EAGAIN (the fast path
 * does not apply; nothing was changed).
 */
static hot_inline int alloc_own(const mm_frames_t *f, mm_frames_thread_t *t, uint32_t chunk,
                                uint32_t n, uint32_t align, uint64_t *frame_out)
{
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    uint32_t own = t->slot << MM_CW_RESERVER_SHIFT;
    const uint32_t gate = MM_CW_RECLAIMED | MM_CW_DISCARDABLE | MM_CW_RESERVER_MASK;

    if (unlikely((w & gate) != own || mm_cw_free(w) - n > MM_CHUNK_FRAMES - n))
        return -EAGAIN;
    if (unlikely(!cas_acq_rel(cw, &w, w - n)))
        return -EAGAIN;

    uint32_t hint = t->hint & BITMAP_WORD_MASK;
    _Atomic uint64_t *bw = bitmap_word(f, chunk, hint);
    uint64_t cur = load_acquire(bw);
    uint64_t starts = run_starts(cur, n) & align_patterns[__builtin_ctz(align)];
    if (likely(starts)) {
        uint32_t off = (uint32_t)__builtin_ctzll(starts);
        uint64_t ones = n >= 64 ? FULL_WORD : ((uint64_t)1 << n) - 1;
        if (likely(cas_acq_rel(bw, &cur, cur | (ones << off)))) {
            *frame_out = ((uint64_t)chunk << CHUNK_FRAMES_SHIFT) + (hint << 6) + off;
            return 0;
        }
    }
    return alloc_own_rest(f, t, chunk, n, align, mm_cw_free(w), frame_out);
}

/* ---- Client API -------------------------------------------------------- */

int mm__frames_alloc(mm_frames_t *f, mm_frames_thread_t *t, uint32_t nframes, uint32_t align_frames,
                     uint64_t *frame_out)
{
    /* Unsigned wrap folds the zero checks into the range checks. */
    if (unlikely(!f || !t || !frame_out || nframes - 1 >= MM_CHUNK_FRAMES ||
                 !is_pow2(align_frames) || align_frames > MM_CHUNK_FRAMES ||
                 t->slot - 1 >= MM_RESERVER_SLOTS))
        return -EINVAL;

    uint32_t chunk = t->chunk;
    if (likely(chunk < f->chunk_count)) {
        int rc = -EAGAIN;
        if (likely(nframes <= 64 && align_frames <= 64))
            rc = alloc_own(f, t, chunk, nframes, align_frames, frame_out);
        if (rc == -EAGAIN)
            rc = alloc_in_chunk(f, t, chunk, nframes, align_frames, frame_out);
        if (likely(rc != -ENOSPC))
            return rc;
    }
    return alloc_slow(f, t, nframes, align_frames, frame_out);
}

/* Take all 512 frames of a wholly free, unreserved, granted chunk in one CAS. */
static int take_whole_chunk(const mm_frames_t *f, uint32_t chunk, uint32_t slot)
{
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);

    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if ((w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) || mm_cw_free(w) != MM_CHUNK_FRAMES ||
            (mm_cw_reserver(w) != 0 && mm_cw_reserver(w) != slot))
            return -EBUSY;
        /* The chunk is used up by the run: nobody keeps it reserved. */
        if (cas_acq_rel(cw, &w, (w - MM_CHUNK_FRAMES) & ~MM_CW_RESERVER_MASK))
            return 0;
    }
    return -EBUSY;
}

/*
 * Chunks must be unreserved or reserved for slot (a run installed for this
 * call comes back reserved for the caller, so the host leaves it alone until
 * it is claimed); the claim clears the reservation. Every chunk's whole count is taken first, the
 * tail chunk's too: were only tail_frames taken, another thread could claim the tail's bits before
 * they are set here. Then bits are set, and the rest of the tail chunk is given back. A failure
 * undoes what was done, bits before counts.
 */
int mm__frames_alloc_chunks(mm_frames_t *f, uint32_t first_chunk, uint32_t nchunks,
                            uint32_t tail_frames, uint32_t slot)
{
    if (!f || tail_frames >= MM_CHUNK_FRAMES || (nchunks == 0 && tail_frames == 0))
        return -EINVAL;
    uint32_t total = nchunks + (tail_frames ? 1u : 0u);
    if ((uint64_t)first_chunk + total > f->chunk_count)
        return -EINVAL;

    uint32_t taken = 0, marked = 0;
    int rc = 0;
    for (; taken < total; taken++)
        if ((rc = take_whole_chunk(f, first_chunk + taken, slot)))
            goto undo_counts;
    for (; marked < total; marked++) {
        uint32_t n = marked < nchunks ? MM_CHUNK_FRAMES : tail_frames;
        if (!mark_bits(f, first_chunk + marked, 0, n)) {
            rc = -EIO; /* the count said 512 free but a bit was set */
            goto undo_bits;
        }
    }
    /* Only our bits are set, so giving back the rest cannot pass 512. */
    if (tail_frames)
        raise_free(f, first_chunk + nchunks, MM_CHUNK_FRAMES - tail_frames);
    return 0;

undo_bits:
    while (marked-- > 0)
        unmark_bits(f, first_chunk + marked, 0, marked < nchunks ? MM_CHUNK_FRAMES : tail_frames);
undo_counts:
    while (taken-- > 0)
        if (raise_free(f, first_chunk + taken, MM_CHUNK_FRAMES))
            rc = -EIO;
    return rc;
}

/* A chunk a multi-chunk run may use: installable, or free and unclaimed. */
static bool run_candidate(const mm_frames_t *f, uint32_t chunk)
{
    uint32_t w = load_acquire(chunk_word(f, chunk));

    if (w & MM_CW_RECLAIMED)
        return true;
    return mm_cw_free(w) == MM_CHUNK_FRAMES && mm_cw_reserver(w) == 0 && !(w & MM_CW_DISCARDABLE) &&
           mm_cw_pins(w) == 0;
}

int mm__frames_find_run(const mm_frames_t *f, uint32_t nchunks, uint32_t hint,
                        uint32_t *first_chunk)
{
    if (!f || !first_chunk || nchunks == 0)
        return -EINVAL;
    uint32_t count = f->chunk_count;
    if (nchunks > count)
        return -ENOSPC;
    if (hint >= count)
        hint = 0;

    /* From hint to the end, then from 0 to where a run would reach hint. */
    uint32_t begin[2] = {hint, 0};
    uint32_t end[2] = {count, hint + nchunks - 1 < count ? hint + nchunks - 1 : count};
    for (int pass = 0; pass < (hint ? 2 : 1); pass++) {
        uint32_t run = 0;
        for (uint32_t c = begin[pass]; c < end[pass]; c++) {
            run = run_candidate(f, c) ? run + 1 : 0;
            if (run == nchunks) {
                *first_chunk = c + 1 - nchunks;
                return 0;
            }
        }
    }
    return -ENOSPC;
}

/* True if every frame of [first, first + n) has its bit set. */
static bool range_allocated(const mm_frames_t *f, uint64_t first, uint64_t n)
{
    uint64_t end = first + n;

    for (uint64_t b = first; b < end;) {
        uint64_t gw = b / 64;
        uint32_t lo = (uint32_t)(b % 64);
        uint32_t hi = end - gw * 64 < 64 ? (uint32_t)(end - gw * 64) : 64;
        uint64_t mask = range_mask(lo, hi);
        if ((load_acquire(&f->bitmaps[gw]) & mask) != mask)
            return false;
        b = gw * 64 + hi;
    }
    return true;
}

/*
 * Any range: checked first, so a plain bad free changes nothing. A double free
 * racing this one can still clear some bits first: then only the bits this
 * call really cleared are counted back, and -EINVAL is returned.
 */
static cold_path int free_range(mm_frames_t *f, uint64_t first_frame, uint64_t nframes)
{
    if (!range_allocated(f, first_frame, nframes))
        return -EINVAL;

    uint64_t end = first_frame + nframes;
    bool lost_race = false;
    int rc = 0;
    for (uint64_t b = first_frame; b < end;) {
        uint32_t chunk = (uint32_t)(b >> CHUNK_FRAMES_SHIFT);
        uint64_t chunk_end = (uint64_t)(chunk + 1) << CHUNK_FRAMES_SHIFT;
        uint32_t cleared = 0;
        for (; b < end && b < chunk_end;) {
            uint64_t gw = b / 64;
            uint32_t lo = (uint32_t)(b % 64);
            uint32_t hi = end - gw * 64 < 64 ? (uint32_t)(end - gw * 64) : 64;
            uint64_t mask = range_mask(lo, hi);
            uint64_t old = fetch_and_acq_rel(&f->bitmaps[gw], ~mask);
            cleared += (uint32_t)__builtin_popcountll(old & mask);
            lost_race |= (old & mask) != mask;
            b = gw * 64 + hi;
        }
        /* Bits of this chunk are clear: only now may its count rise. */
        if (cleared && raise_free(f, chunk, cleared))
            rc = -EIO;
    }
    if (rc)
        return rc;
    return lost_race ? -EINVAL : 0;
}

/*
 * A range inside one bitmap word (every run of up to 64 frames the allocator
 * hands out) is checked and cleared by one CAS, so a bad or racing double
 * free changes nothing; past the retry bound, free_range finishes the job.
 */
int mm__frames_free(mm_frames_t *f, uint64_t first_frame, uint64_t nframes)
{
    uint64_t total = f ? (uint64_t)f->chunk_count << CHUNK_FRAMES_SHIFT : 0;
    if (unlikely(!f || nframes == 0 || first_frame >= total || nframes > total - first_frame))
        return -EINVAL;

    uint32_t lo = (uint32_t)(first_frame & 63);
    if (unlikely(lo + nframes > 64))
        return free_range(f, first_frame, nframes);

    uint64_t mask = range_mask(lo, lo + (uint32_t)nframes);
    _Atomic uint64_t *bw = &f->bitmaps[first_frame >> 6];
    uint64_t cur = load_acquire(bw);
    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if (unlikely((cur & mask) != mask))
            return -EINVAL;
        if (likely(cas_acq_rel(bw, &cur, cur & ~mask)))
            return raise_free(f, (uint32_t)(first_frame >> CHUNK_FRAMES_SHIFT), (uint32_t)nframes);
    }
    return free_range(f, first_frame, nframes);
}

int mm__frames_claim(mm_frames_t *f, uint64_t frame)
{
    if (!f || frame >= (uint64_t)f->chunk_count * MM_CHUNK_FRAMES)
        return -EINVAL;
    uint32_t chunk = (uint32_t)(frame / MM_CHUNK_FRAMES), bit = (uint32_t)(frame % MM_CHUNK_FRAMES);
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    bool counted = false;
    for (int i = 0; i < MM_FRAMES_MAX_RETRIES && !counted; i++) {
        uint32_t free_frames = mm_cw_free(w);
        if ((w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) || free_frames == 0 ||
            free_frames > MM_CHUNK_FRAMES)
            return -EBUSY;
        counted = cas_acq_rel(cw, &w, w - 1);
    }
    if (!counted)
        return -EBUSY;
    if (mark_bits(f, chunk, bit, 1))
        return 0;
    /* Someone else's frame: give the count back (it was never ours). */
    (void)raise_free(f, chunk, 1);
    return -EBUSY;
}

void mm__frames_clear_reserver(mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return;
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    for (int i = 0; i < MM_FRAMES_MAX_RETRIES && (w & MM_CW_RESERVER_MASK); i++)
        if (!(w & MM_CW_RECLAIMED) && cas_acq_rel(cw, &w, w & ~MM_CW_RESERVER_MASK))
            return;
}

void mm__frames_unreserve(mm_frames_t *f, mm_frames_thread_t *t)
{
    if (!f || !t)
        return;
    if (t->chunk < f->chunk_count)
        drop_reservation(f, t->chunk, t->slot);
    t->chunk = UINT32_MAX;
}

/* ---- Host API ---------------------------------------------------------- */

/* The word allows reclaim: it says wholly free, unflagged, unpinned. */
static bool word_reclaimable(uint32_t w, bool steal_reserved)
{
    return mm_cw_free(w) == MM_CHUNK_FRAMES && !(w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) &&
           mm_cw_pins(w) == 0 && (mm_cw_reserver(w) == 0 || steal_reserved);
}

/*
 * The bitmap is read after the word: an honest allocation lowers the count
 * before it sets a bit, so a bit set after our read makes the CAS fail; a
 * client that sets bits without the count only loses its own frames.
 */
bool mm__frames_try_reclaim(mm_frames_t *f, uint32_t chunk, bool steal_reserved)
{
    if (!f || chunk >= f->chunk_count)
        return false;
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);

    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if (!word_reclaimable(w, steal_reserved))
            return false;
        for (uint32_t b = 0; b < MM_CHUNK_BITMAP_WORDS; b++)
            if (load_acquire(bitmap_word(f, chunk, b)) != 0)
                return false;
        if (cas_acq_rel(cw, &w, reclaimed_word(next_gen(w))))
            return true;
    }
    return false;
}

/*
 * The bitmap is cleared before the word is published with release order, so
 * an allocator that sees the new word sees clear bits. A plain store (not a
 * CAS) because the host owns a reclaimed chunk: no honest client writes it.
 */
void mm__frames_install(mm_frames_t *f, uint32_t chunk, uint32_t slot)
{
    if (!f || chunk >= f->chunk_count)
        return;
    if (slot > MM_RESERVER_SLOTS)
        slot = 0; /* not a slot: install unreserved rather than corrupt the word */
    for (uint32_t b = 0; b < MM_CHUNK_BITMAP_WORDS; b++)
        store_release(bitmap_word(f, chunk, b), 0);
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    store_release(cw, next_gen(w) | (slot << MM_CW_RESERVER_SHIFT) | MM_CHUNK_FRAMES);
}

/*
 * CAS first, like every host write; if the client keeps flipping the word
 * past the bound, a store ends it (the host owns a reclaimed chunk's word).
 * The bitmap is left alone: install clears it before the chunk is used.
 */
bool mm__frames_repair_reclaimed(mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return false;
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);

    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if (w == reclaimed_word(w & MM_CW_GEN_MASK))
            return false;
        if (cas_acq_rel(cw, &w, reclaimed_word(next_gen(w))))
            return true;
    }
    store_release(cw, reclaimed_word(next_gen(w)));
    return true;
}

uint32_t mm__frames_chunk_free(const mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return 0;
    uint32_t w = load_acquire(chunk_word(f, chunk));
    if ((w & MM_CW_RECLAIMED) || mm_cw_free(w) > MM_CHUNK_FRAMES)
        return 0;
    return mm_cw_free(w);
}

/* Out-of-range chunks are not reclaimed: they do not exist. */
bool mm__frames_chunk_reclaimed(const mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return false;
    return (load_acquire(chunk_word(f, chunk)) & MM_CW_RECLAIMED) != 0;
}

/* ---- Layout ------------------------------------------------------------ */

/*
 * Relaxed stores: nobody else maps the state yet; handing the fd over (a
 * syscall) orders them before any peer's reads. The bitmaps are not written
 * (the caller passes zeroed memory, and writing would make every page of a
 * fresh memfd resident).
 */
void mm__frames_format(void *shared, uint64_t region_bytes, uint32_t chunk_count)
{
    mm_control_t *ctl = shared;

    ctl->magic = MM_SHARED_MAGIC;
    ctl->layout_version = MM_LAYOUT_VERSION;
    ctl->chunk_count = chunk_count;
    ctl->reserved0 = 0;
    ctl->region_bytes = region_bytes;
    ctl->chunk_words_offset = MM_CONTROL_BYTES;
    ctl->bitmap_offset = bitmap_offset_for(chunk_count);
    ctl->shared_bytes = mm_shared_bytes(chunk_count);

    _Atomic uint32_t *words = (_Atomic uint32_t *)((char *)shared + MM_CONTROL_BYTES);
    for (uint32_t c = 0; c < chunk_count; c++)
        store_relaxed(&words[c], reclaimed_word(0));
}

/*
 * The geometry is copied out once and only the copy is checked and used, so
 * a peer rewriting the control block cannot change it between check and use.
 */
int mm__frames_view(mm_frames_t *f, void *shared, uint64_t shared_bytes, uint64_t region_bytes)
{
    if (!f || !shared || ((uintptr_t)shared % 64) != 0)
        return -EINVAL;
    if (shared_bytes < MM_CONTROL_BYTES)
        return -EPROTO;

    mm_control_t geo;
    memcpy(&geo, shared, offsetof(mm_control_t, pad0));
    uint64_t max_chunks = MM_REGION_MAX_BYTES / MM_CHUNK_SIZE;
    if (geo.magic != MM_SHARED_MAGIC || geo.layout_version != MM_LAYOUT_VERSION ||
        geo.chunk_count == 0 || geo.chunk_count > max_chunks)
        return -EPROTO;
    uint64_t chunks = geo.chunk_count;
    uint64_t bitmap_end = geo.bitmap_offset + chunks * MM_CHUNK_BITMAP_WORDS * 8;
    if (geo.region_bytes != region_bytes || region_bytes != chunks * MM_CHUNK_SIZE ||
        geo.shared_bytes != shared_bytes || shared_bytes != mm_shared_bytes(geo.chunk_count) ||
        geo.chunk_words_offset != MM_CONTROL_BYTES ||
        geo.bitmap_offset != bitmap_offset_for(geo.chunk_count) || bitmap_end > shared_bytes)
        return -EPROTO;

    f->chunk_words = (_Atomic uint32_t *)((char *)shared + geo.chunk_words_offset);
    f->bitmaps = (_Atomic uint64_t *)((char *)shared + geo.bitmap_offset);
    f->chunk_count = geo.chunk_count;
    return 0;
}

void mm__frames_view_raw(mm_frames_t *f, _Atomic uint32_t *chunk_words, _Atomic uint64_t *bitmaps,
                         uint32_t chunk_count)
{
    f->chunk_words = chunk_words;
    f->bitmaps = bitmaps;
    f->chunk_count = chunk_count;
}

/* ---- Discardable chunks ---------------------------------------------- */

int mm__frames_set_discardable(mm_frames_t *f, uint32_t chunk, bool on)
{
    if (!f || chunk >= f->chunk_count)
        return -EINVAL;
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if (w & MM_CW_RECLAIMED)
            return -ESTALE;
        if (mm_cw_free(w) != 0)
            return -EINVAL; /* only wholly allocated chunks hold a cache */
        uint32_t next = on ? w | MM_CW_DISCARDABLE : w & ~MM_CW_DISCARDABLE;
        if (next == w || cas_acq_rel(cw, &w, next))
            return 0;
    }
    return -EIO;
}

int mm__frames_pin(mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return -EINVAL;
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if (w & MM_CW_RECLAIMED)
            return -ESTALE;
        if (!(w & MM_CW_DISCARDABLE))
            return -EINVAL;
        if (mm_cw_pins(w) == MM_CW_PIN_MAX)
            return -EBUSY;
        if (cas_acq_rel(cw, &w, w + (1u << MM_CW_PIN_SHIFT)))
            return 0;
    }
    return -EBUSY;
}

void mm__frames_unpin(mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return;
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    /* A pinned chunk cannot be taken, so the pin is still there to drop. */
    for (int i = 0; i < MM_FRAMES_MAX_RETRIES && mm_cw_pins(w) > 0; i++)
        if (cas_acq_rel(cw, &w, w - (1u << MM_CW_PIN_SHIFT)))
            return;
}

bool mm__frames_try_discard(mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return false;
    _Atomic uint32_t *cw = chunk_word(f, chunk);
    uint32_t w = load_acquire(cw);
    for (int i = 0; i < MM_FRAMES_MAX_RETRIES; i++) {
        if ((w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) != MM_CW_DISCARDABLE ||
            mm_cw_pins(w) != 0 || mm_cw_free(w) > MM_CHUNK_FRAMES)
            return false;
        if (cas_acq_rel(cw, &w, reclaimed_word(next_gen(w))))
            return true;
    }
    return false;
}

bool mm__frames_chunk_discardable(const mm_frames_t *f, uint32_t chunk)
{
    if (!f || chunk >= f->chunk_count)
        return false;
    uint32_t w = load_acquire(chunk_word(f, chunk));
    return (w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) == MM_CW_DISCARDABLE;
}
