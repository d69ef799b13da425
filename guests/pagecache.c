/*
 * The guest's page cache over a disk-image file: clean 4 KiB disk blocks held
 * in guest frames, the cheapest memory the guest can give back. It owns the
 * disk fd (read-only, O_DIRECT where the file system allows it, so that the
 * host's page cache holds no guest data outside the region) and a fixed table
 * of cache chunks (struct cache_chunk): 2 MiB of frames each, taken from the
 * guest's page allocator, holding up to 512 blocks. where[] maps a disk block
 * to its slot (chunk * 512 + slot). A chunk is allocated, evicted and freed
 * whole; its stamp orders the chunks for LRU eviction and for drops. Under the
 * mm driver every chunk is discardable, so the host may take it without
 * asking: each access to its frames happens under a pin, and a chunk found
 * taken (-ESTALE) is forgotten without freeing its frames, which are no longer
 * the guest's.
 *
 * Invariants, for each chunk c with c->addr != NULL:
 *   c->used == number of slots s with c->blocks[s] != NO_SLOT,
 *   where[c->blocks[s]] == index(c) * 512 + s for each such slot,
 * and cache_bytes == MM_CHUNK_SIZE * number of chunks with addr != NULL.
 *
 * Locking: cache.lock guards the chunk table, where[] and the clock. It is
 * taken before g->lock (mm__guest_frames_free runs under it) and is never held
 * across mm__guest_frames_alloc (which may reclaim, and reclaim takes it), nor
 * while the caller's buffer is touched (it may be guest-virtual memory whose
 * fault needs reclaim).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* A disk block is one frame. */
#define BLOCK_BYTES MM_FRAME_SIZE
/* An empty where[] entry or chunk slot. */
#define NO_SLOT UINT32_MAX
/* No chunk index. */
#define NO_CHUNK UINT32_MAX

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Disk ---------------------------------------------------------------- */

/* Read one block into dst, which is BLOCK_BYTES long and 4 KiB-aligned (as
 * O_DIRECT wants). Called with or without the cache lock. */
static int disk_pread(const page_cache_t *pc, void *dst, uint64_t block)
{
    off_t off = (off_t)(block * BLOCK_BYTES);
    ssize_t n;
    do
        n = pread(pc->disk_fd, dst, BLOCK_BYTES, off);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n != (ssize_t)BLOCK_BYTES)
        return -EIO; /* the file shrank under us */
    if (!pc->direct)
        /* Advice only: a failure leaves a copy in the host's cache, no more. */
        (void)posix_fadvise(pc->disk_fd, off, BLOCK_BYTES, POSIX_FADV_DONTNEED);
    return 0;
}

/* Open the disk read-only, O_DIRECT if the file system takes it both at open
 * and at read (some accept the flag and then fail every read with -EINVAL). */
static int disk_open(page_cache_t *pc, const char *path)
{
    _Alignas(BLOCK_BYTES) uint8_t probe[BLOCK_BYTES];

    pc->direct = true;
    pc->disk_fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (pc->disk_fd < 0 && errno == EINVAL) {
        pc->direct = false;
        pc->disk_fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (pc->disk_fd < 0)
        return -errno;

    /* SEEK_END gives the size of block devices too, where st_size is 0. */
    off_t end = lseek(pc->disk_fd, 0, SEEK_END);
    int err = end < 0 ? -errno : 0;
    pc->blocks = end < 0 ? 0 : (uint64_t)end / BLOCK_BYTES; /* a partial block is ignored */
    if (err == 0 && pc->blocks >= NO_SLOT)
        err = -EFBIG; /* chunk slots hold a block number as uint32, NO_SLOT excluded */
    if (err == 0 && pc->direct && pc->blocks > 0 && disk_pread(pc, probe, 0) == -EINVAL) {
        close(pc->disk_fd);
        pc->direct = false;
        pc->disk_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (pc->disk_fd < 0)
            return -errno;
    }
    if (err < 0) {
        close(pc->disk_fd);
        pc->disk_fd = -1;
    }
    return err;
}

/* ---- Chunks (all with the cache lock held) -------------------------------- */

/* Empty every slot of chunk idx and its where[] entries; the frames stay. */
static void chunk_forget(page_cache_t *pc, uint32_t idx)
{
    cache_chunk_t *c = &pc->chunks[idx];
    for (uint32_t s = 0; s < MM_CHUNK_FRAMES; s++) {
        if (c->blocks[s] != NO_SLOT)
            pc->where[c->blocks[s]] = NO_SLOT;
        c->blocks[s] = NO_SLOT;
    }
    c->used = 0;
}

static void chunk_clear(page_cache_t *pc, uint32_t idx)
{
    chunk_forget(pc, idx);
    cache_chunk_t *c = &pc->chunks[idx];
    c->addr = NULL;
    c->stamp = 0;
    c->discardable = false;
}

/* The host took chunk idx: its content is gone and its frames left the guest
 * without mm__guest_frames_free, so used_bytes drops here. */
static void chunk_lost(mm_guest_t *g, uint32_t idx)
{
    chunk_clear(&g->cache, idx);
    guest_count(&g->cache_lost_bytes, MM_CHUNK_SIZE);
    guest_count(&g->cache_bytes, -(int64_t)MM_CHUNK_SIZE);
    guest_count(&g->used_bytes, -(int64_t)MM_CHUNK_SIZE);
}

/*
 * Make chunk idx's frames safe to touch. 0: they stay the guest's until
 * chunk_unpin(); -ESTALE: the host took the chunk and it has been forgotten;
 * -EBUSY: too many readers, leave it be.
 */
static int chunk_pin(mm_guest_t *g, uint32_t idx)
{
    cache_chunk_t *c = &g->cache.chunks[idx];
    if (!c->discardable)
        return 0;
    int err = mm_discardable_pin(g->client, c->addr);
    if (err == 0 || err == -EBUSY)
        return err;
    /* -ESTALE: taken. -EINVAL: taken and granted again since (no longer
     * discardable), perhaps to other guest uses: either way not ours. */
    chunk_lost(g, idx);
    return -ESTALE;
}

static void chunk_unpin(mm_guest_t *g, uint32_t idx)
{
    cache_chunk_t *c = &g->cache.chunks[idx];
    if (c->discardable)
        mm_discardable_unpin(g->client, c->addr);
}

/* Give chunk idx's frames back to the page allocator. Returns the bytes
 * freed: MM_CHUNK_SIZE, or 0 when the host had taken the chunk. */
static uint64_t chunk_release(mm_guest_t *g, uint32_t idx)
{
    cache_chunk_t *c = &g->cache.chunks[idx];
    if (c->discardable) {
        /* Unmark under a pin: a pinned chunk cannot be taken, and once
         * unmarked it cannot be taken at all, so nothing can slip in between
         * the check and the free. */
        int err = mm_discardable_pin(g->client, c->addr);
        if (err == -ESTALE || err == -EINVAL) {
            chunk_lost(g, idx);
            return 0;
        }
        int unmark = mm_discardable(g->client, c->addr, MM_CHUNK_SIZE, 0);
        if (err == 0)
            mm_discardable_unpin(g->client, c->addr);
        if (unmark < 0) { /* only when unpinned (-EBUSY): taken meanwhile */
            chunk_lost(g, idx);
            return 0;
        }
    }
    mm__guest_frames_free(g, c->addr, MM_CHUNK_SIZE);
    chunk_clear(&g->cache, idx);
    guest_count(&g->cache_bytes, -(int64_t)MM_CHUNK_SIZE);
    return MM_CHUNK_SIZE;
}

/* The allocated chunk with the smallest stamp, or NO_CHUNK. */
static uint32_t chunk_lru(const page_cache_t *pc)
{
    uint32_t lru = NO_CHUNK;
    for (uint32_t i = 0; i < pc->max_chunks; i++)
        if (pc->chunks[i].addr && (lru == NO_CHUNK || pc->chunks[i].stamp < pc->chunks[lru].stamp))
            lru = i;
    return lru;
}

/*
 * Add a chunk. Drops the cache lock around the allocation, which may reclaim
 * (and so drop cache). 0: a chunk was installed; negative errno: none was
 * (the allocator's error, or -ENOSPC when the table filled meanwhile).
 */
static int cache_grow(mm_guest_t *g)
{
    page_cache_t *pc = &g->cache;
    void *addr;

    pthread_mutex_unlock(&pc->lock);
    int err = mm__guest_frames_alloc(g, MM_CHUNK_SIZE, MM_CHUNK_SIZE, &addr);
    pthread_mutex_lock(&pc->lock);
    if (err < 0)
        return err;

    /* A chunk still recorded at these frames was taken by the host and has
     * come back to the guest; forget it before anyone pins the new one. */
    uint32_t idx = NO_CHUNK;
    for (uint32_t i = 0; i < pc->max_chunks; i++) {
        if (pc->chunks[i].addr == addr)
            chunk_lost(g, i);
        if (!pc->chunks[i].addr && idx == NO_CHUNK)
            idx = i;
    }
    if (idx == NO_CHUNK) {
        mm__guest_frames_free(g, addr, MM_CHUNK_SIZE);
        return -ENOSPC;
    }

    cache_chunk_t *c = &pc->chunks[idx];
    c->addr = addr;
    memset(c->blocks, 0xff, sizeof c->blocks);
    c->used = 0;
    c->stamp = ++pc->clock;
    c->discardable = false;
    guest_count(&g->cache_bytes, MM_CHUNK_SIZE);
    /* Marked under the lock, after the forgetting above, so that no reader
     * of a forgotten chunk at the same frames can pin the new one. A failure
     * leaves an ordinary chunk that only the guest drops. */
    if (g->opts.driver == MM_GUEST_DRIVER_MM &&
        mm_discardable(g->client, addr, MM_CHUNK_SIZE, 1) == 0)
        c->discardable = true;
    return 0;
}

/*
 * Find an empty slot for a block, growing the cache or evicting the least
 * recently used chunk. 0: *idx and *slot name it; 1: a chunk was added with
 * the lock dropped, so look the block up again; -ENOMEM: no slot to be had.
 */
static int cache_slot(mm_guest_t *g, uint32_t *idx, uint32_t *slot)
{
    page_cache_t *pc = &g->cache;
    bool room = false;

    for (uint32_t i = 0; i < pc->max_chunks; i++) {
        cache_chunk_t *c = &pc->chunks[i];
        if (!c->addr) {
            room = true;
            continue;
        }
        if (c->used == MM_CHUNK_FRAMES)
            continue;
        for (uint32_t s = 0; s < MM_CHUNK_FRAMES; s++) {
            if (c->blocks[s] == NO_SLOT) {
                *idx = i;
                *slot = s;
                return 0;
            }
        }
    }
    if (room && cache_grow(g) == 0)
        return 1;

    /* Full, or no frames to grow by: evict in place. The frames are reused
     * as they are (a discardable chunk stays discardable); if the host took
     * them, the pin before the read finds out. */
    uint32_t lru = chunk_lru(pc);
    if (lru == NO_CHUNK)
        return -ENOMEM;
    chunk_forget(pc, lru);
    pc->chunks[lru].stamp = ++pc->clock;
    *idx = lru;
    *slot = 0;
    return 0;
}

/*
 * Read block through the cache into page (4 KiB-aligned, not guest memory).
 * Called with the lock held; may drop and retake it. 0: page holds the block;
 * -EBUSY or -ENOMEM: the cache cannot take it, read it uncached; other
 * negative errno: the disk's error.
 */
static int cache_read(mm_guest_t *g, uint64_t block, uint8_t *page)
{
    page_cache_t *pc = &g->cache;
    bool counted = false;

    for (;;) {
        uint32_t loc = pc->where[block];
        if (loc != NO_SLOT) {
            uint32_t idx = loc / MM_CHUNK_FRAMES;
            int err = chunk_pin(g, idx);
            if (err == 0) {
                cache_chunk_t *c = &pc->chunks[idx];
                memcpy(page, c->addr + (uint64_t)(loc % MM_CHUNK_FRAMES) * BLOCK_BYTES,
                       BLOCK_BYTES);
                chunk_unpin(g, idx);
                c->stamp = ++pc->clock;
                if (!counted)
                    guest_count(&g->cache_hits, 1);
                return 0;
            }
            if (err == -EBUSY)
                return err;
            /* -ESTALE: the chunk is forgotten; a miss after all. */
        }
        if (!counted) {
            guest_count(&g->cache_misses, 1);
            counted = true;
        }

        uint32_t idx, slot;
        int got = cache_slot(g, &idx, &slot);
        if (got < 0)
            return got;
        if (got > 0)
            continue; /* another thread may have cached the block meanwhile */

        int err = chunk_pin(g, idx);
        if (err == -ESTALE)
            continue;
        if (err < 0)
            return err;
        cache_chunk_t *c = &pc->chunks[idx];
        uint8_t *frame = c->addr + (uint64_t)slot * BLOCK_BYTES;
        err = disk_pread(pc, frame, block);
        if (err == 0) {
            c->blocks[slot] = (uint32_t)block;
            c->used++;
            c->stamp = ++pc->clock;
            pc->where[block] = idx * MM_CHUNK_FRAMES + slot;
            memcpy(page, frame, BLOCK_BYTES);
        }
        chunk_unpin(g, idx);
        return err; /* on an error the slot stays empty */
    }
}

/* ---- API ------------------------------------------------------------------ */

int mm__cache_init(mm_guest_t *g)
{
    page_cache_t *pc = &g->cache;

    memset(pc, 0, sizeof *pc);
    pc->disk_fd = -1;
    if (!g->opts.disk_path)
        return 0;
    if (g->opts.cache_bytes < MM_CHUNK_SIZE)
        return -EINVAL;
    uint64_t max_chunks = g->opts.cache_bytes / MM_CHUNK_SIZE;
    if (max_chunks > NO_SLOT / MM_CHUNK_FRAMES)
        return -EINVAL; /* where[] entries would not fit in 32 bits */

    int err = disk_open(pc, g->opts.disk_path);
    if (err < 0)
        return err;
    /* One entry even for an empty disk, so that where != NULL. */
    pc->where = calloc(pc->blocks ? pc->blocks : 1, sizeof *pc->where);
    pc->chunks = calloc(max_chunks, sizeof *pc->chunks);
    if (!pc->where || !pc->chunks) {
        err = -ENOMEM;
        goto fail;
    }
    memset(pc->where, 0xff, (pc->blocks ? pc->blocks : 1) * sizeof *pc->where);
    pc->max_chunks = (uint32_t)max_chunks;
    err = -pthread_mutex_init(&pc->lock, NULL);
    if (err < 0)
        goto fail;
    return 0;

fail:
    free(pc->chunks);
    free(pc->where);
    close(pc->disk_fd);
    memset(pc, 0, sizeof *pc);
    pc->disk_fd = -1;
    return err;
}

void mm__cache_fini(mm_guest_t *g)
{
    page_cache_t *pc = &g->cache;

    /* chunks is set exactly when init opened a disk (and the lock). */
    if (!pc->chunks)
        return;
    pthread_mutex_lock(&pc->lock);
    for (uint32_t i = 0; i < pc->max_chunks; i++)
        if (pc->chunks[i].addr)
            chunk_release(g, i);
    pthread_mutex_unlock(&pc->lock);
    pthread_mutex_destroy(&pc->lock);
    close(pc->disk_fd);
    free(pc->chunks);
    free(pc->where);
    memset(pc, 0, sizeof *pc);
    pc->disk_fd = -1;
}

uint64_t mm__cache_drop(mm_guest_t *g, uint64_t bytes)
{
    page_cache_t *pc = &g->cache;
    uint64_t freed = 0;

    if (!pc->chunks)
        return 0;
    pthread_mutex_lock(&pc->lock);
    /* Forget what the host took; that was not freed by this call. */
    for (uint32_t i = 0; i < pc->max_chunks; i++)
        if (pc->chunks[i].addr && pc->chunks[i].discardable && chunk_pin(g, i) == 0)
            chunk_unpin(g, i);
    while (freed < bytes) {
        uint32_t lru = chunk_lru(pc);
        if (lru == NO_CHUNK)
            break;
        freed += chunk_release(g, lru);
    }
    if (freed) {
        guest_count(&g->cache_dropped_bytes, (int64_t)freed);
        atomic_store_explicit(&g->last_cache_drop_ns, monotonic_ns(), memory_order_relaxed);
    }
    pthread_mutex_unlock(&pc->lock);
    return freed;
}

uint64_t mm__cache_drop_at(mm_guest_t *g, const void *addr)
{
    page_cache_t *pc = &g->cache;
    uint64_t freed = 0;

    if (!pc->chunks)
        return 0;
    pthread_mutex_lock(&pc->lock);
    for (uint32_t i = 0; i < pc->max_chunks && !freed; i++)
        if (pc->chunks[i].addr == addr)
            freed = chunk_release(g, i);
    if (freed)
        guest_count(&g->cache_dropped_bytes, (int64_t)freed);
    pthread_mutex_unlock(&pc->lock);
    return freed;
}

int mm__guest_disk_read(mm_guest_t *g, uint64_t block, void *buf)
{
    page_cache_t *pc = &g->cache;
    /* Data passes through here so that the caller's buffer, which may be
     * guest-virtual memory that faults, is never touched under the lock. */
    _Alignas(BLOCK_BYTES) uint8_t page[BLOCK_BYTES];

    if (!pc->chunks || block >= pc->blocks)
        return -ENXIO;
    if (!buf)
        return -EINVAL;
    pthread_mutex_lock(&pc->lock);
    int err = cache_read(g, block, page);
    pthread_mutex_unlock(&pc->lock);
    if (err == -EBUSY || err == -ENOMEM)
        err = disk_pread(pc, page, block); /* no slot: serve it uncached */
    if (err < 0)
        return err;
    memcpy(buf, page, BLOCK_BYTES);
    return 0;
}
