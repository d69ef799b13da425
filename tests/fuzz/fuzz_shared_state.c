/*
 * libFuzzer target for the host's side of a client's shared state
 * (libmm/src/frames.c): the control block, chunk words and frame bitmaps that
 * an untrusted client can rewrite at any time. The first input byte picks one
 * of two modes (input format in fuzz_shared_state.h):
 *
 *   raw (odd):  the rest of the input, after 8 bytes of region_bytes, is a
 *       whole shared state. mm__frames_view must refuse any geometry it does
 *       not fully check with -EPROTO and never write; a geometry it accepts
 *       must lie inside the buffer (an exact-size heap copy, so
 *       AddressSanitizer sees any access past it), and every host call on
 *       every chunk then runs with its postconditions checked.
 *   ops (even): mm__frames_format lays out 1..32 chunks, the input may
 *       overlay the geometry and shorten the mapping mm__frames_view is told
 *       about, then a script of operations runs: client writes of any bytes
 *       (chunk words, bitmaps, anything in the mapping), honest client calls
 *       (alloc, borrow, free, runs, discardable, pins), and the host calls
 *       mmsrv makes (mm__frames_try_reclaim, _try_discard, _install,
 *       _repair_reclaimed, _chunk_free, _chunk_reclaimed, _chunk_discardable),
 *       also on chunk numbers past the end.
 *
 * Host calls are checked exactly, single-threaded so that no CAS can fail:
 * the return value is what frames.h promises for the word and bitmap read
 * just before (a chunk reclaimed or discarded only with a valid count, no
 * pins, clear bits; chunk_free never above 512), the chunk's word afterwards
 * is what the call writes (the canonical RECLAIMED word of the next
 * generation, or install's word with its slot), and no other byte of the
 * mapping changes. Client calls must return one of their documented errors,
 * and an allocation must lie inside one granted chunk with its bits set.
 * Retry loops being bounded shows only as the absence of a libFuzzer timeout:
 * nothing here writes while a host call runs, so the paths taken when a peer
 * keeps a CAS failing are not reached (tests/stress/frames_stress.c races
 * honest clients with the host).
 *
 * A failed check prints what failed and aborts, which libFuzzer reports as a
 * crash with the input. Not thread-safe (one input at a time).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mm/protocol.h>

#include "frames.h"
#include "fuzz_shared_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_shared_state: %s:%d: check failed: %s\n", __FILE__, __LINE__,    \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_OPS    512 /* per input */
#define MAX_ALLOCS 16  /* allocations remembered for later frees */

/* ---- Input ------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader_t;

/* n (1..8) little-endian bytes; missing ones read as zero. */
static uint64_t take(reader_t *r, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = 0;
        if (r->left) {
            b = *r->p++;
            r->left--;
        }
        v |= b << (8 * i);
    }
    return v;
}

/* ---- The state under test and its expected copy ------------------------ */

typedef struct state {
    uint8_t *buf;    /* the mapping: an exact-size, 64-byte aligned heap block */
    size_t len;      /* its size */
    uint8_t *expect; /* what buf must hold after the host call being checked */
    mm_frames_t f;   /* the view the host built */
} state_t;

static uint32_t word(const state_t *s, uint32_t c)
{
    return atomic_load_explicit(&s->f.chunk_words[c], memory_order_relaxed);
}

static uint64_t bitmap(const state_t *s, uint32_t c, uint32_t w)
{
    return atomic_load_explicit(&s->f.bitmaps[(size_t)c * MM_CHUNK_BITMAP_WORDS + w],
                                memory_order_relaxed);
}

static bool bitmap_clear(const state_t *s, uint32_t c)
{
    for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
        if (bitmap(s, c, w))
            return false;
    return true;
}

/* Take the expected copy before a host call. */
static void snapshot(state_t *s)
{
    memcpy(s->expect, s->buf, s->len);
}

static void expect_word(state_t *s, uint32_t c, uint32_t w)
{
    size_t off = (size_t)((uint8_t *)&s->f.chunk_words[c] - s->buf);
    memcpy(s->expect + off, &w, sizeof w);
}

static void expect_bitmap_clear(state_t *s, uint32_t c)
{
    size_t off = (size_t)((uint8_t *)&s->f.bitmaps[(size_t)c * MM_CHUNK_BITMAP_WORDS] - s->buf);
    memset(s->expect + off, 0, MM_CHUNK_BITMAP_WORDS * sizeof(uint64_t));
}

/* The mapping holds exactly what was expected; names the first difference. */
static void verify(const state_t *s, const char *call, uint32_t chunk)
{
    if (memcmp(s->expect, s->buf, s->len) == 0)
        return;
    size_t off = 0;
    while (s->expect[off] == s->buf[off])
        off++;
    fprintf(stderr, "fuzz_shared_state: %s(chunk %u) changed byte %zu: 0x%02x, want 0x%02x\n", call,
            chunk, off, s->buf[off], s->expect[off]);
    abort();
}

/* The word mmsrv's reclaim and discard leave: all free, RECLAIMED, next
 * generation, nothing else. */
static uint32_t reclaimed_next(uint32_t w)
{
    return ((mm_cw_gen(w) + 1u) & 0xffu) << MM_CW_GEN_SHIFT | MM_CW_RECLAIMED | MM_CHUNK_FRAMES;
}

/* ---- Host calls, checked exactly --------------------------------------- */

static void host_query(state_t *s, uint32_t c)
{
    bool in = c < s->f.chunk_count;
    uint32_t w = in ? word(s, c) : 0;
    snapshot(s);
    uint32_t free_frames = mm__frames_chunk_free(&s->f, c);
    bool reclaimed = mm__frames_chunk_reclaimed(&s->f, c);
    bool discardable = mm__frames_chunk_discardable(&s->f, c);
    verify(s, "mm__frames_chunk_*", c);
    CHECK(free_frames <= MM_CHUNK_FRAMES);
    bool valid = in && !(w & MM_CW_RECLAIMED) && mm_cw_free(w) <= MM_CHUNK_FRAMES;
    CHECK(free_frames == (valid ? mm_cw_free(w) : 0));
    CHECK(reclaimed == (in && (w & MM_CW_RECLAIMED)));
    CHECK(discardable == (in && (w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) == MM_CW_DISCARDABLE));
}

/* What mmsrv's mm__client_usage sums: bounded by the region. */
static void host_usage(state_t *s)
{
    uint64_t free_frames = 0, discardable = 0;
    snapshot(s);
    for (uint32_t c = 0; c < s->f.chunk_count; c++) {
        free_frames += mm__frames_chunk_free(&s->f, c);
        discardable += mm__frames_chunk_discardable(&s->f, c);
    }
    verify(s, "usage", 0);
    CHECK(free_frames <= (uint64_t)s->f.chunk_count * MM_CHUNK_FRAMES);
    CHECK(discardable <= s->f.chunk_count);
}

static void host_reclaim(state_t *s, uint32_t c, bool steal)
{
    bool in = c < s->f.chunk_count;
    uint32_t w = in ? word(s, c) : 0;
    bool can = in && mm_cw_free(w) == MM_CHUNK_FRAMES &&
               !(w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) && mm_cw_pins(w) == 0 &&
               (mm_cw_reserver(w) == 0 || steal) && bitmap_clear(s, c);
    snapshot(s);
    bool took = mm__frames_try_reclaim(&s->f, c, steal);
    CHECK(took == can);
    if (took)
        expect_word(s, c, reclaimed_next(w));
    verify(s, "mm__frames_try_reclaim", c);
}

static void host_discard(state_t *s, uint32_t c)
{
    bool in = c < s->f.chunk_count;
    uint32_t w = in ? word(s, c) : 0;
    bool can = in && (w & (MM_CW_RECLAIMED | MM_CW_DISCARDABLE)) == MM_CW_DISCARDABLE &&
               mm_cw_pins(w) == 0 && mm_cw_free(w) <= MM_CHUNK_FRAMES;
    snapshot(s);
    bool took = mm__frames_try_discard(&s->f, c);
    CHECK(took == can);
    if (took)
        expect_word(s, c, reclaimed_next(w));
    verify(s, "mm__frames_try_discard", c);
}

static void host_install(state_t *s, uint32_t c, uint32_t slot)
{
    bool in = c < s->f.chunk_count;
    uint32_t w = in ? word(s, c) : 0;
    snapshot(s);
    mm__frames_install(&s->f, c, slot);
    if (in) {
        uint32_t kept = slot <= MM_RESERVER_SLOTS ? slot : 0;
        expect_bitmap_clear(s, c);
        expect_word(s, c,
                    ((mm_cw_gen(w) + 1u) & 0xffu) << MM_CW_GEN_SHIFT |
                        kept << MM_CW_RESERVER_SHIFT | MM_CHUNK_FRAMES);
    }
    verify(s, "mm__frames_install", c);
    if (in) {
        CHECK(mm__frames_chunk_free(&s->f, c) == MM_CHUNK_FRAMES);
        CHECK(!mm__frames_chunk_reclaimed(&s->f, c));
    }
}

static void host_repair(state_t *s, uint32_t c)
{
    bool in = c < s->f.chunk_count;
    uint32_t w = in ? word(s, c) : 0;
    bool canonical = w == ((w & MM_CW_GEN_MASK) | MM_CW_RECLAIMED | MM_CHUNK_FRAMES);
    snapshot(s);
    bool changed = mm__frames_repair_reclaimed(&s->f, c);
    CHECK(changed == (in && !canonical));
    if (changed)
        expect_word(s, c, reclaimed_next(w));
    verify(s, "mm__frames_repair_reclaimed", c);
    if (in)
        CHECK(mm__frames_chunk_reclaimed(&s->f, c));
}

/* Every host call on chunk c, as mmsrv's reclaim ladder and install make them. */
static void host_sweep_chunk(state_t *s, uint32_t c)
{
    host_query(s, c);
    host_reclaim(s, c, false);
    host_reclaim(s, c, true);
    host_discard(s, c);
    host_repair(s, c);
    host_query(s, c);
    host_install(s, c, c % (MM_RESERVER_SLOTS + 2));
    host_query(s, c);
}

/* ---- View ---------------------------------------------------------------- */

/*
 * Build the view over buf as if the mapping were shared_bytes long (never
 * more than s->len). Returns true with s->f set if the geometry was accepted,
 * after checking it lies inside the mapping.
 */
static bool view(state_t *s, uint64_t shared_bytes, uint64_t region_bytes)
{
    CHECK(shared_bytes <= s->len);
    snapshot(s);
    mm_frames_t f;
    int rc = mm__frames_view(&f, s->buf, shared_bytes, region_bytes);
    verify(s, "mm__frames_view", 0);
    if (rc != 0) {
        CHECK(rc == -EPROTO);
        return false;
    }
    uint64_t count = f.chunk_count;
    CHECK(count >= 1 && count <= MM_REGION_MAX_BYTES / MM_CHUNK_SIZE);
    CHECK(region_bytes == count * MM_CHUNK_SIZE);
    CHECK(shared_bytes == mm_shared_bytes(f.chunk_count));
    uint8_t *words = (uint8_t *)f.chunk_words, *bitmaps = (uint8_t *)f.bitmaps;
    CHECK(words == s->buf + MM_CONTROL_BYTES);
    CHECK(words + count * sizeof(uint32_t) <= bitmaps);
    CHECK((uintptr_t)bitmaps % 64 == 0);
    CHECK(bitmaps + count * MM_CHUNK_BITMAP_WORDS * sizeof(uint64_t) <= s->buf + shared_bytes);
    s->f = f;
    return true;
}

/* mm__frames_view's argument checks, which come before any geometry. */
static void view_bad_arguments(state_t *s)
{
    mm_frames_t f;
    CHECK(mm__frames_view(NULL, s->buf, s->len, 0) == -EINVAL);
    CHECK(mm__frames_view(&f, NULL, s->len, 0) == -EINVAL);
    CHECK(mm__frames_view(&f, s->buf + 8, s->len - 8, 0) == -EINVAL);
    CHECK(mm__frames_view(&f, s->buf, MM_CONTROL_BYTES - 1, 0) == -EPROTO);
}

static bool state_alloc(state_t *s, size_t len)
{
    void *buf = NULL, *expect = NULL;
    if (posix_memalign(&buf, 64, len ? len : 1) != 0)
        return false;
    expect = malloc(len ? len : 1);
    if (!expect) {
        free(buf);
        return false;
    }
    s->buf = buf;
    s->expect = expect;
    s->len = len;
    return true;
}

static void state_free(state_t *s)
{
    free(s->expect);
    free(s->buf);
}

/* ---- Raw mode -------------------------------------------------------------- */

static void fuzz_raw(reader_t *r)
{
    uint64_t region_bytes = take(r, 8);
    state_t s;
    CHECK(state_alloc(&s, r->left));
    memcpy(s.buf, r->p, r->left);
    if (view(&s, s.len, region_bytes)) {
        for (uint32_t c = 0; c < s.f.chunk_count; c++)
            host_sweep_chunk(&s, c);
        host_sweep_chunk(&s, s.f.chunk_count);
        host_sweep_chunk(&s, UINT32_MAX);
        host_usage(&s);
    }
    state_free(&s);
}

/* ---- Ops mode ---------------------------------------------------------- */

typedef struct run {
    uint64_t frame, n;
} run_t;

typedef struct script {
    state_t s;
    mm_frames_thread_t t;
    run_t allocs[MAX_ALLOCS];
    uint32_t nallocs;
} script_t;

/* A chunk number: mostly inside the region, sometimes just past it or huge. */
static uint32_t take_chunk(reader_t *r, uint32_t count)
{
    uint32_t b = (uint32_t)take(r, 1);
    if (b < 0xf0)
        return b % count;
    return b == 0xff ? UINT32_MAX : count + (b & 0xf);
}

/* An allocation that succeeded: inside one chunk that is not RECLAIMED, on
 * its alignment, every frame's bit set. */
static void check_run(script_t *sc, uint64_t frame, uint32_t n, uint32_t align)
{
    const state_t *s = &sc->s;
    uint64_t total = (uint64_t)s->f.chunk_count * MM_CHUNK_FRAMES;
    CHECK(n >= 1 && n <= MM_CHUNK_FRAMES && frame < total && n <= total - frame);
    uint32_t chunk = (uint32_t)(frame / MM_CHUNK_FRAMES), off = (uint32_t)(frame % MM_CHUNK_FRAMES);
    CHECK(off + n <= MM_CHUNK_FRAMES);
    CHECK(off % align == 0);
    CHECK(n <= 64 || off % 64 == 0);
    CHECK(!(word(s, chunk) & MM_CW_RECLAIMED));
    for (uint32_t i = 0; i < n; i++)
        CHECK(bitmap(s, chunk, (off + i) / 64) >> ((off + i) % 64) & 1);
    sc->allocs[sc->nallocs++ % MAX_ALLOCS] = (run_t){frame, n};
}

static void client_alloc(script_t *sc, reader_t *r, bool borrow)
{
    uint32_t n = (uint32_t)take(r, 2) % (MM_CHUNK_FRAMES + 8); /* 0 and > 512 are bad */
    uint32_t a = (uint32_t)take(r, 1);
    uint32_t align = a < 0xf0 ? 1u << (a % 10) : a; /* not a power of two, or > 512 */
    uint64_t frame = UINT64_MAX;
    int rc = borrow ? mm__frames_borrow(&sc->s.f, &sc->t, n, align, &frame)
                    : mm__frames_alloc(&sc->s.f, &sc->t, n, align, &frame);
    CHECK(rc == 0 || rc == -ENOSPC || rc == -EINVAL || rc == -EIO);
    bool args_ok = n >= 1 && n <= MM_CHUNK_FRAMES && align >= 1 && align <= MM_CHUNK_FRAMES &&
                   (align & (align - 1)) == 0 &&
                   (borrow || (sc->t.slot >= 1 && sc->t.slot <= MM_RESERVER_SLOTS));
    CHECK((rc == -EINVAL) == !args_ok);
    if (rc == 0)
        check_run(sc, frame, n, align);
}

static void client_free(script_t *sc, reader_t *r, bool allocated)
{
    uint64_t frame, n;
    if (allocated) {
        if (!sc->nallocs)
            return;
        run_t a = sc->allocs[take(r, 1) % (sc->nallocs < MAX_ALLOCS ? sc->nallocs : MAX_ALLOCS)];
        frame = a.frame;
        n = a.n;
    } else {
        frame = take(r, 2);
        n = take(r, 2);
    }
    int rc = mm__frames_free(&sc->s.f, frame, n);
    CHECK(rc == 0 || rc == -EINVAL || rc == -EIO);
}

static void client_alloc_chunks(script_t *sc, reader_t *r)
{
    uint32_t first = take_chunk(r, sc->s.f.chunk_count);
    uint32_t nchunks = (uint32_t)take(r, 1) % 4;
    uint32_t tail = (uint32_t)take(r, 2) % (MM_CHUNK_FRAMES + 1);
    uint32_t slot = (uint32_t)take(r, 1) % (MM_RESERVER_SLOTS + 1);
    int rc = mm__frames_alloc_chunks(&sc->s.f, first, nchunks, tail, slot);
    CHECK(rc == 0 || rc == -EBUSY || rc == -EINVAL || rc == -EIO);
    if (rc == 0) {
        for (uint32_t i = 0; i < nchunks; i++)
            CHECK(mm__frames_chunk_free(&sc->s.f, first + i) == 0);
        if (tail)
            CHECK(bitmap(&sc->s, first + nchunks, 0) & 1);
    }
}

static void client_find_run(script_t *sc, reader_t *r)
{
    uint32_t nchunks = (uint32_t)take(r, 1) % 6;
    uint32_t hint = take_chunk(r, sc->s.f.chunk_count);
    uint32_t first = UINT32_MAX;
    int rc = mm__frames_find_run(&sc->s.f, nchunks, hint, &first);
    CHECK(rc == 0 || rc == -ENOSPC || rc == -EINVAL);
    CHECK((rc == -EINVAL) == (nchunks == 0));
    if (rc != 0)
        return;
    CHECK(first < sc->s.f.chunk_count && nchunks <= sc->s.f.chunk_count - first);
    for (uint32_t c = first; c < first + nchunks; c++) {
        uint32_t w = word(&sc->s, c);
        CHECK((w & MM_CW_RECLAIMED) ||
              (mm_cw_free(w) == MM_CHUNK_FRAMES && mm_cw_reserver(w) == 0 &&
               !(w & MM_CW_DISCARDABLE) && mm_cw_pins(w) == 0));
    }
}

static void run_op(script_t *sc, reader_t *r)
{
    state_t *s = &sc->s;
    uint32_t count = s->f.chunk_count;
    uint32_t code = (uint32_t)take(r, 1);
    switch ((enum fuzz_op)((code & 0x7f) % FUZZ_OPS)) {
    case FUZZ_OP_CLIENT_WORD: {
        uint32_t c = (uint32_t)take(r, 1) % count;
        uint32_t v = (uint32_t)take(r, 4);
        uint32_t w = code & FUZZ_OP_FLAG ? word(s, c) ^ v : v;
        atomic_store_explicit(&s->f.chunk_words[c], w, memory_order_relaxed);
        break;
    }
    case FUZZ_OP_CLIENT_BITMAP: {
        uint32_t c = (uint32_t)take(r, 1) % count;
        uint32_t w = (uint32_t)take(r, 1) % MM_CHUNK_BITMAP_WORDS;
        atomic_store_explicit(&s->f.bitmaps[(size_t)c * MM_CHUNK_BITMAP_WORDS + w], take(r, 8),
                              memory_order_relaxed);
        break;
    }
    case FUZZ_OP_CLIENT_FILL: {
        uint32_t c = (uint32_t)take(r, 1) % count;
        uint64_t b = take(r, 1);
        uint64_t v = b == 0 ? 0 : b == 1 ? ~(uint64_t)0 : b * 0x0101010101010101ull;
        for (uint32_t w = 0; w < MM_CHUNK_BITMAP_WORDS; w++)
            atomic_store_explicit(&s->f.bitmaps[(size_t)c * MM_CHUNK_BITMAP_WORDS + w], v,
                                  memory_order_relaxed);
        break;
    }
    case FUZZ_OP_CLIENT_POKE: {
        size_t off = (size_t)take(r, 2) % s->len;
        s->buf[off] = (uint8_t)take(r, 1);
        break;
    }
    case FUZZ_OP_RECLAIM:
        host_reclaim(s, take_chunk(r, count), code & FUZZ_OP_FLAG);
        break;
    case FUZZ_OP_DISCARD:
        host_discard(s, take_chunk(r, count));
        break;
    case FUZZ_OP_INSTALL: {
        uint32_t c = take_chunk(r, count);
        uint32_t slot = (uint32_t)take(r, 1);
        if (slot == 0xff)
            slot = (uint32_t)take(r, 4);
        host_install(s, c, slot);
        break;
    }
    case FUZZ_OP_REPAIR:
        host_repair(s, take_chunk(r, count));
        break;
    case FUZZ_OP_QUERY:
        host_query(s, take_chunk(r, count));
        break;
    case FUZZ_OP_USAGE:
        host_usage(s);
        break;
    case FUZZ_OP_ALLOC:
        client_alloc(sc, r, false);
        break;
    case FUZZ_OP_BORROW:
        client_alloc(sc, r, true);
        break;
    case FUZZ_OP_FREE:
        client_free(sc, r, false);
        break;
    case FUZZ_OP_FREE_ALLOCATED:
        client_free(sc, r, true);
        break;
    case FUZZ_OP_ALLOC_CHUNKS:
        client_alloc_chunks(sc, r);
        break;
    case FUZZ_OP_FIND_RUN:
        client_find_run(sc, r);
        break;
    case FUZZ_OP_DISCARDABLE: {
        int rc = mm__frames_set_discardable(&s->f, take_chunk(r, count), code & FUZZ_OP_FLAG);
        CHECK(rc == 0 || rc == -EINVAL || rc == -ESTALE || rc == -EIO);
        break;
    }
    case FUZZ_OP_PIN: {
        int rc = mm__frames_pin(&s->f, take_chunk(r, count));
        CHECK(rc == 0 || rc == -EINVAL || rc == -ESTALE || rc == -EBUSY);
        break;
    }
    case FUZZ_OP_UNPIN:
        mm__frames_unpin(&s->f, take_chunk(r, count));
        break;
    case FUZZ_OP_THREAD:
        if (code & FUZZ_OP_FLAG) {
            mm__frames_unreserve(&s->f, &sc->t);
            CHECK(sc->t.chunk == UINT32_MAX);
        } else {
            sc->t.slot = (uint32_t)take(r, 1) % (MM_RESERVER_SLOTS + 2); /* 0 and 64 are bad */
            sc->t.chunk = take_chunk(r, count);
            sc->t.hint = (uint32_t)take(r, 1);
        }
        break;
    default:
        abort();
    }
}

static void fuzz_ops(reader_t *r)
{
    uint32_t chunks = 1 + (uint32_t)take(r, 1) % FUZZ_MAX_CHUNKS;
    uint32_t flags = (uint32_t)take(r, 1);
    uint64_t shared_bytes = mm_shared_bytes(chunks);
    uint64_t region_bytes = (uint64_t)chunks * MM_CHUNK_SIZE;
    script_t sc = {.t = {.slot = 1 + (flags >> 2 & 0x1f), .chunk = UINT32_MAX}};
    state_t *s = &sc.s;
    CHECK(state_alloc(s, shared_bytes));
    memset(s->buf, 0, s->len);
    mm__frames_format(s->buf, region_bytes, chunks);

    if (flags & FUZZ_FLAG_GEOMETRY) /* the geometry as the input has it */
        for (size_t i = 0; i < offsetof(mm_control_t, pad0); i++)
            s->buf[i] = (uint8_t)take(r, 1);
    uint64_t view_bytes = shared_bytes, view_region = region_bytes;
    if (flags &
        FUZZ_FLAG_VIEW_ARGS) { /* the daemon told a shorter mapping, or another region size */
        view_bytes -= take(r, 8) % (shared_bytes + 1);
        view_region ^= take(r, 8);
    }
    bool ok = view(s, view_bytes, view_region);
    if (!(flags & (FUZZ_FLAG_GEOMETRY | FUZZ_FLAG_VIEW_ARGS)))
        CHECK(ok && s->f.chunk_count == chunks);
    if (ok) {
        if (flags & FUZZ_FLAG_BAD_ARGS)
            view_bad_arguments(s);
        for (int i = 0; i < MAX_OPS && r->left; i++)
            run_op(&sc, r);
        host_usage(s);
    }
    state_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader_t r = {data, size};
    if (take(&r, 1) & 1)
        fuzz_raw(&r);
    else
        fuzz_ops(&r);
    return 0;
}
