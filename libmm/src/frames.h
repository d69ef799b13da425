/*
 * The shared frame allocator: lock-free operations on the chunk words and
 * frame bitmaps that live in a client's shared state (layout in
 * <mm/protocol.h>). The caller owns the memory; these functions only read and
 * CAS it. Client-side calls (alloc, free) and host-side calls (reclaim,
 * install, repair) may run concurrently from any threads and processes.
 *
 * Host-side calls treat the metadata as untrusted: every read is validated,
 * every retry loop is bounded, and nothing returned here is host bookkeeping
 * (the daemon keeps its own record of what it reclaimed and granted).
 */
#ifndef MM_FRAMES_H
#define MM_FRAMES_H

#include <stdbool.h>
#include <stdint.h>

#include <mm/protocol.h>

/* A view of the allocator metadata inside one shared-state mapping. */
typedef struct mm_frames {
    _Atomic uint32_t *chunk_words; /* chunk_count words */
    _Atomic uint64_t *bitmaps;     /* chunk_count * MM_CHUNK_BITMAP_WORDS */
    uint32_t chunk_count;
} mm_frames_t;

/*
 * Per-thread allocation state, owned by one thread: the reservation slot
 * (1..MM_RESERVER_SLOTS), the chunk the thread has reserved (UINT32_MAX:
 * none) and the bitmap word of that chunk where its last allocation found
 * room (a hint only: any value is safe, so zero-initialising it is enough).
 */
typedef struct mm_frames_thread {
    uint32_t slot;
    uint32_t chunk;
    uint32_t hint;
} mm_frames_thread_t;

/* Bounded retries for CAS loops on words the peer may be flipping. */
#define MM_FRAMES_MAX_RETRIES 64

/*
 * Host: write the control block geometry and mark every chunk RECLAIMED with
 * 512 free frames and clear bitmaps. shared must be mm_shared_bytes(chunks)
 * zeroed bytes.
 */
void mm__frames_format(void *shared, uint64_t region_bytes, uint32_t chunk_count);

/*
 * Either side: build a view over a mapped shared state of shared_bytes,
 * checking magic, version and that every offset and size lies inside the
 * mapping and matches region_bytes. -EPROTO on any mismatch.
 */
int mm__frames_view(mm_frames_t *f, void *shared, uint64_t shared_bytes, uint64_t region_bytes);

/* Build a view over raw metadata arrays (tests and benchmarks). */
void mm__frames_view_raw(mm_frames_t *f, _Atomic uint32_t *chunk_words, _Atomic uint64_t *bitmaps,
                         uint32_t chunk_count);

/*
 * Client: allocate nframes (1..512) contiguous frames aligned to align_frames
 * (a power of two, 1..512) inside one granted chunk. Tries the thread's
 * reserved chunk first, from its hint word on (while that chunk has room: one
 * CAS on the chunk word, one on a bitmap word, no scan), then reserves another
 * (one CAS reserves the chunk and takes the frames). Runs of more than 64
 * frames start on a 64-frame boundary; shorter ones lie inside one bitmap
 * word. On success *frame_out is the first frame's index in the region.
 * Thread-safe for distinct t; t belongs to the calling thread.
 * -ENOSPC: no granted chunk has such a run (the caller may install);
 * -EINVAL: bad arguments; -EIO: the metadata is inconsistent.
 */
int mm__frames_alloc(mm_frames_t *f, mm_frames_thread_t *t, uint32_t nframes, uint32_t align_frames,
                     uint64_t *frame_out);

/*
 * Client, last resort when nothing can be installed: nframes (1..512) from a
 * chunk another thread has reserved, without touching its reservation
 * (counts and bits change by CAS as always). Without it, frames freed into a
 * chunk reserved by a thread that no longer allocates are out of every other
 * thread's reach once the whole region is granted. -ENOSPC if none has room.
 */
int mm__frames_borrow(mm_frames_t *f, mm_frames_thread_t *t, uint32_t nframes,
                      uint32_t align_frames, uint64_t *frame_out);

/*
 * Client: take the whole-chunk run [first_chunk, first_chunk + nchunks) plus
 * tail_frames frames at the start of the following chunk (0..511), all of
 * which must be granted and wholly free, and unreserved or reserved for slot.
 * All or nothing: -EBUSY if any chunk is reclaimed, reserved by another slot
 * or not wholly free (nothing is kept); -EINVAL on bad arguments.
 */
int mm__frames_alloc_chunks(mm_frames_t *f, uint32_t first_chunk, uint32_t nchunks,
                            uint32_t tail_frames, uint32_t slot);

/*
 * Client: find nchunks adjacent chunks each either wholly free and
 * unreserved, or RECLAIMED (installable), starting the search at *hint.
 * On success *first_chunk is the first. -ENOSPC if none.
 */
int mm__frames_find_run(const mm_frames_t *f, uint32_t nchunks, uint32_t hint,
                        uint32_t *first_chunk);

/*
 * Client: free nframes frames starting at first_frame (may span chunks).
 * Clears the frame bits before raising each chunk's free count (a range
 * inside one bitmap word: one CAS on it, one on the chunk word).
 * -EINVAL if any frame in the range is not allocated (nothing is changed).
 */
int mm__frames_free(mm_frames_t *f, uint64_t first_frame, uint64_t nframes);

/*
 * Client: allocate one given frame if it is free (a chunk's frames taken one
 * by one, as virtio-mem's unplug isolates a block before it moves the used
 * frames out). Lowers the count first, then sets the bit, like any
 * allocation; whoever reserved the chunk keeps its reservation.
 * -EBUSY: the frame is in use, or its chunk is reclaimed or discardable;
 * -EINVAL: outside the region.
 */
int mm__frames_claim(mm_frames_t *f, uint64_t frame);

/* Client: clear chunk's reserver, whoever it is (a block whose every frame
 * a driver took leaves the allocator, reservations included). */
void mm__frames_clear_reserver(mm_frames_t *f, uint32_t chunk);

/* Client: drop the thread's reservation (thread exit, client close). */
void mm__frames_unreserve(mm_frames_t *f, mm_frames_thread_t *t);

/*
 * Host: take chunk back if it is wholly free: not RECLAIMED, not DISCARDABLE,
 * no pins, free == 512 and its bitmap all clear; reserved chunks only when
 * steal_reserved. One CAS sets RECLAIMED, clears the reserver and raises the
 * generation. Returns true if this call reclaimed it.
 */
bool mm__frames_try_reclaim(mm_frames_t *f, uint32_t chunk, bool steal_reserved);

/*
 * Host: hand a chunk the host had reclaimed back to the client, wholly free
 * and reserved for slot (0: unreserved). Clears its bitmap, then one store of
 * the chunk word (the host owns a reclaimed chunk's metadata; whatever the
 * client wrote there is overwritten).
 */
void mm__frames_install(mm_frames_t *f, uint32_t chunk, uint32_t slot);

/*
 * Host: force a chunk the host holds as reclaimed back to the RECLAIMED state
 * when the client rewrote its word. Returns true if the word had to change.
 */
bool mm__frames_repair_reclaimed(mm_frames_t *f, uint32_t chunk);

/* Either side: free frames of a chunk as its word says, validated (0 for a
 * reclaimed chunk or an impossible count). */
uint32_t mm__frames_chunk_free(const mm_frames_t *f, uint32_t chunk);

/* Either side: true if the chunk word says RECLAIMED. */
bool mm__frames_chunk_reclaimed(const mm_frames_t *f, uint32_t chunk);

/*
 * Discardable chunks: clean content the client can lose (step 2 of the
 * reclaim ladder). Client: mark or unmark a wholly allocated chunk (free ==
 * 0); -EINVAL if it is not, -ESTALE if the host already took it. A reader
 * pins the chunk while it reads: 0 means the content is there and stays until
 * the unpin; -ESTALE means the host discarded it (the frames are the host's
 * now: the client forgets them); -EBUSY means too many pins at once.
 */
int mm__frames_set_discardable(mm_frames_t *f, uint32_t chunk, bool on);
int mm__frames_pin(mm_frames_t *f, uint32_t chunk);
void mm__frames_unpin(mm_frames_t *f, uint32_t chunk);

/*
 * Host: take a discardable chunk that no reader pins: one CAS sets RECLAIMED
 * (all free, generation raised) so that a later pin fails. Returns true if
 * this call took it; its content may then be punched.
 */
bool mm__frames_try_discard(mm_frames_t *f, uint32_t chunk);

/* Either side: true if the chunk word says DISCARDABLE and not RECLAIMED. */
bool mm__frames_chunk_discardable(const mm_frames_t *f, uint32_t chunk);

#endif /* MM_FRAMES_H */
