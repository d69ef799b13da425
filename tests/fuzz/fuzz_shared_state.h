/*
 * Input format of the fuzz_shared_state target, shared with make_corpus so
 * that the committed seeds and the target agree. Multi-byte values are
 * little-endian; an input that ends early reads zeros.
 *
 *   raw mode: byte 0 odd, then region_bytes (8 bytes), then a whole shared
 *       state (the rest of the input).
 *   ops mode: byte 0 even, then
 *       chunks (1 byte: 1 + b % FUZZ_MAX_CHUNKS),
 *       flags (1 byte: FUZZ_FLAG_*; bits 2..6 pick the thread's slot),
 *       if FUZZ_FLAG_GEOMETRY: 48 bytes that replace the control block's
 *           geometry (offsetof(mm_control_t, pad0)),
 *       if FUZZ_FLAG_VIEW_ARGS: 8 bytes that shorten the mapping size given
 *           to mm__frames_view (modulo the size + 1) and 8 bytes XORed into
 *           the region size given to it,
 *       then operations: one code byte (bits 0..6 modulo FUZZ_OPS pick the
 *           operation, bit 7 is FUZZ_OP_FLAG) and the operation's arguments.
 *
 * Arguments: a chunk number is 1 byte (below 0xf0: modulo the chunk count;
 * 0xf0..0xfe: count + (b & 15), past the end; 0xff: UINT32_MAX).
 */
#ifndef MM_FUZZ_SHARED_STATE_H
#define MM_FUZZ_SHARED_STATE_H

#define FUZZ_MAX_CHUNKS 32 /* ops mode: mm_shared_bytes(32) is 8 KiB */

#define FUZZ_FLAG_GEOMETRY  0x01u
#define FUZZ_FLAG_VIEW_ARGS 0x02u
#define FUZZ_FLAG_BAD_ARGS  0x80u /* also try mm__frames_view's argument checks */

#define FUZZ_OP_FLAG 0x80u

enum fuzz_op {
    FUZZ_OP_CLIENT_WORD,    /* chunk % count, value (4): store (FLAG: XOR) the word */
    FUZZ_OP_CLIENT_BITMAP,  /* chunk % count, word (1) % 8, value (8): store */
    FUZZ_OP_CLIENT_FILL,    /* chunk % count, b (1): every bitmap word 0, ~0 or b * 0x0101.. */
    FUZZ_OP_CLIENT_POKE,    /* offset (2) % mapping size, byte (1) */
    FUZZ_OP_RECLAIM,        /* chunk; FLAG: steal reservations */
    FUZZ_OP_DISCARD,        /* chunk */
    FUZZ_OP_INSTALL,        /* chunk, slot (1; 0xff: then 4 bytes of slot) */
    FUZZ_OP_REPAIR,         /* chunk */
    FUZZ_OP_QUERY,          /* chunk: chunk_free, chunk_reclaimed, chunk_discardable */
    FUZZ_OP_USAGE,          /* -: mmsrv's usage sum over every chunk */
    FUZZ_OP_ALLOC,          /* nframes (2) % 520, align (1: below 0xf0 1 << b % 10, else b) */
    FUZZ_OP_BORROW,         /* as FUZZ_OP_ALLOC */
    FUZZ_OP_FREE,           /* first frame (2), nframes (2) */
    FUZZ_OP_FREE_ALLOCATED, /* index (1) of one of the last 16 allocations */
    FUZZ_OP_ALLOC_CHUNKS,   /* first chunk, nchunks (1) % 4, tail (2) % 513, slot (1) % 64 */
    FUZZ_OP_FIND_RUN,       /* nchunks (1) % 6, hint chunk */
    FUZZ_OP_DISCARDABLE,    /* chunk; FLAG: on */
    FUZZ_OP_PIN,            /* chunk */
    FUZZ_OP_UNPIN,          /* chunk */
    FUZZ_OP_THREAD,         /* slot (1) % 65, chunk, hint (1); FLAG: unreserve instead */
    FUZZ_OPS
};

#endif /* MM_FUZZ_SHARED_STATE_H */
