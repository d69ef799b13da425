/*
 * The swap store (contract in swapstore.h): a data file of fixed 4 KiB slots,
 * reserved with fallocate() at open, and an index file (PATH.idx) made of a
 * 32-byte header and one 16-byte record per slot {key, crc, seq} in host byte
 * order. Memory holds the authoritative bookkeeping under one mutex: key ->
 * slot (key_slot), slot -> {key, crc, seq} (slot) and a stack of free slots.
 * Page and record I/O run outside the mutex: a slot being written or cleared
 * is marked SLOT_BUSY, so that no other call can take or read it, and a put
 * writes its page into a fresh slot, so the key's earlier copy stays readable
 * (and stays stored if the put fails) until the new one is committed. Every
 * put takes a new sequence number (modulo 2^32); if a crash leaves two records
 * naming one key, the one with the later seq is the live one. A get checks,
 * after its read, that the slot still holds the same put of its key (same
 * slot, same seq), so it never hands out a page that a concurrent put or drop
 * recycled for another key.
 */
#include "swapstore.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <zlib.h>

/* ---- On-disk index layout ----------------------------------------------- */

#define IDX_MAGIC   UINT64_C(0x3149504157534d4d) /* "MMSWAPI1" in little-endian bytes */
#define IDX_VERSION 1u
#define IDX_SUFFIX  ".idx"
#define KEY_EMPTY   UINT64_MAX /* record.key of a slot that holds no page */

struct idx_header {
    uint64_t magic;
    uint32_t version;
    uint32_t page_bytes;
    uint64_t slots;
    uint32_t record_bytes;
    uint32_t reserved; /* zero */
};

struct idx_record {
    uint64_t key; /* KEY_EMPTY: no page */
    uint32_t crc; /* zlib crc32() of the page */
    uint32_t seq; /* the put that wrote it; later wins */
};

_Static_assert(sizeof(struct idx_header) == 32, "index header is 32 bytes");
_Static_assert(sizeof(struct idx_record) == 16, "index records are 16 bytes");

/* ---- In-memory bookkeeping ---------------------------------------------- */

/* slot_state.key values besides a key: keys are below max_keys <= 2^32 - 2. */
#define SLOT_FREE UINT32_MAX       /* on the free stack */
#define SLOT_BUSY (UINT32_MAX - 1) /* taken by a put or drop doing its I/O */
/* Limit on slots and max_keys, so that both sentinels above stay free. */
#define SWAP_MAX_COUNT (UINT64_C(0xffffffff) - 1)

struct slot_state {
    uint32_t key; /* the key stored here, SLOT_FREE or SLOT_BUSY */
    uint32_t crc;
    uint32_t seq;
};

/*
 * Invariants (under lock): used + nfree + busy == slots, where busy counts
 * slots whose key is SLOT_BUSY; key_slot[k] == i + 1 iff slot[i].key == k.
 */
struct mm_swap {
    int data_fd;
    int idx_fd;
    char *data_path;
    char *idx_path;
    uint64_t slots;
    uint64_t max_keys;

    pthread_mutex_t lock; /* guards every field below */
    /* key -> slot + 1, 0 for none: calloc() leaves untouched keys unbacked. */
    uint32_t *key_slot;
    struct slot_state *slot;
    uint32_t *free_stack; /* nfree entries used */
    uint64_t nfree;
    uint32_t next_seq;
    /* gets counts every page read back, bad_pages those of them that failed
     * their checksum. */
    mm_swap_stats_t stats;
};

/* ---- I/O helpers ---------------------------------------------------------- */

/* Write all of buf at off; a short write is -EIO (the disk took only part). */
static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    do
        n = pwrite(fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EIO;
}

/* Read all of buf from off; a short read is -EIO (the slot is inside the
 * file's reserved size, so it cannot end early). */
static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    do
        n = pread(fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EIO;
}

static uint64_t data_offset(uint32_t slot)
{
    return (uint64_t)slot * MM_SWAP_PAGE_BYTES;
}

static uint64_t record_offset(uint32_t slot)
{
    return sizeof(struct idx_header) + (uint64_t)slot * sizeof(struct idx_record);
}

static int write_record(mm_swap_t *s, uint32_t slot, uint64_t key, uint32_t crc, uint32_t seq)
{
    struct idx_record r = {.key = key, .crc = crc, .seq = seq};
    return pwrite_full(s->idx_fd, &r, sizeof r, record_offset(slot));
}

static uint32_t page_crc(const void *page)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), page, MM_SWAP_PAGE_BYTES);
}

/* Header and an empty record per slot, written in batches of 256 records. */
static int write_empty_index(mm_swap_t *s)
{
    struct idx_header h = {
        .magic = IDX_MAGIC,
        .version = IDX_VERSION,
        .page_bytes = MM_SWAP_PAGE_BYTES,
        .slots = s->slots,
        .record_bytes = sizeof(struct idx_record),
    };
    int err = pwrite_full(s->idx_fd, &h, sizeof h, 0);
    if (err < 0)
        return err;

    static const size_t batch = 256;
    struct idx_record *buf = malloc(batch * sizeof *buf);
    if (!buf)
        return -ENOMEM;
    for (size_t i = 0; i < batch; i++)
        buf[i] = (struct idx_record){.key = KEY_EMPTY};
    for (uint64_t first = 0; first < s->slots && err == 0; first += batch) {
        uint64_t n = s->slots - first < batch ? s->slots - first : batch;
        err = pwrite_full(s->idx_fd, buf, n * sizeof *buf, record_offset((uint32_t)first));
    }
    free(buf);
    return err;
}

/* ---- Bookkeeping (caller holds s->lock) ----------------------------------- */

static void push_free(mm_swap_t *s, uint32_t slot)
{
    s->slot[slot].key = SLOT_FREE;
    s->free_stack[s->nfree++] = slot;
}

/* The slot holding key, or -1. */
static int64_t lookup(const mm_swap_t *s, uint64_t key)
{
    uint32_t v = s->key_slot[key];
    return v == 0 ? -1 : (int64_t)v - 1;
}

/* ---- Open and close ------------------------------------------------------- */

static void free_store(mm_swap_t *s)
{
    free(s->free_stack);
    free(s->slot);
    free(s->key_slot);
    free(s->idx_path);
    free(s->data_path);
    free(s);
}

/* Memory for a store of slots pages and keys below max_keys, with its two
 * paths; files not open yet. */
static mm_swap_t *alloc_store(const char *path, uint64_t slots, uint64_t max_keys)
{
    mm_swap_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->data_fd = -1;
    s->idx_fd = -1;
    s->slots = slots;
    s->max_keys = max_keys;
    size_t len = strlen(path);
    s->data_path = strdup(path);
    s->idx_path = malloc(len + sizeof IDX_SUFFIX);
    s->key_slot = calloc(max_keys, sizeof *s->key_slot);
    s->slot = calloc(slots, sizeof *s->slot);
    s->free_stack = calloc(slots, sizeof *s->free_stack);
    if (!s->data_path || !s->idx_path || !s->key_slot || !s->slot || !s->free_stack) {
        free_store(s);
        return NULL;
    }
    memcpy(s->idx_path, path, len);
    memcpy(s->idx_path + len, IDX_SUFFIX, sizeof IDX_SUFFIX);
    return s;
}

/* Create (truncate) path for the store; -EXDEV on tmpfs or ramfs. */
static int create_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    struct statfs sfs;
    int err = 0;
    if (fstatfs(fd, &sfs) < 0)
        err = -errno;
    else if (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC)
        err = -EXDEV; /* swapping RAM into RAM gives nothing back */
    if (err < 0) {
        close(fd);
        unlink(path); /* ignored: we just created it, and report err */
        return err;
    }
    return fd;
}

int mm__swap_open(const char *path, uint64_t slots, uint64_t max_keys, mm_swap_t **out)
{
    if (!path || !out || slots == 0 || max_keys == 0 || slots > SWAP_MAX_COUNT ||
        max_keys > SWAP_MAX_COUNT)
        return -EINVAL;

    int err;
    mm_swap_t *s = alloc_store(path, slots, max_keys);
    if (!s)
        return -ENOMEM;

    s->data_fd = create_file(s->data_path);
    if (s->data_fd < 0) {
        err = s->data_fd;
        goto fail_mem;
    }
    if (fallocate(s->data_fd, 0, 0, (off_t)(slots * MM_SWAP_PAGE_BYTES)) < 0) {
        err = -errno;
        goto fail_data;
    }
    s->idx_fd = create_file(s->idx_path);
    if (s->idx_fd < 0) {
        err = s->idx_fd;
        goto fail_data;
    }
    err = write_empty_index(s);
    if (err < 0)
        goto fail_idx;
    err = -pthread_mutex_init(&s->lock, NULL);
    if (err < 0)
        goto fail_idx;

    /* Pushed high to low, so that puts fill the file from its start. */
    for (uint64_t i = slots; i-- > 0;)
        push_free(s, (uint32_t)i);
    s->stats.slots = slots;
    *out = s;
    return 0;

fail_idx:
    close(s->idx_fd);
    unlink(s->idx_path); /* ignored: best effort, err is what the caller needs */
fail_data:
    close(s->data_fd);
    unlink(s->data_path); /* ignored, as above */
fail_mem:
    free_store(s);
    return err;
}

/* Later of two sequence numbers taken modulo 2^32. */
static bool seq_after(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) > 0;
}

/* Rebuild memory's bookkeeping from the index file. */
static int load_index(mm_swap_t *s)
{
    struct idx_header h;
    struct stat st;
    int err = pread_full(s->idx_fd, &h, sizeof h, 0);
    if (err < 0)
        return err == -EIO ? -EBADMSG : err;
    if (h.magic != IDX_MAGIC || h.version != IDX_VERSION || h.page_bytes != MM_SWAP_PAGE_BYTES ||
        h.slots != s->slots || h.record_bytes != sizeof(struct idx_record) || h.reserved != 0)
        return -EBADMSG;
    if (fstat(s->data_fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size < s->slots * MM_SWAP_PAGE_BYTES)
        return -EBADMSG;
    struct idx_record buf[256];
    bool any = false;
    for (uint64_t first = 0; first < s->slots; first += 256) {
        uint64_t n = s->slots - first < 256 ? s->slots - first : 256;
        err = pread_full(s->idx_fd, buf, n * sizeof buf[0], record_offset((uint32_t)first));
        if (err < 0)
            return err == -EIO ? -EBADMSG : err;
        for (uint64_t i = 0; i < n; i++) {
            uint32_t slot = (uint32_t)(first + i);
            const struct idx_record *r = &buf[i];
            s->slot[slot].key = SLOT_FREE;
            if (r->key == KEY_EMPTY)
                continue;
            if (r->key >= s->max_keys)
                return -EBADMSG;
            int64_t old = lookup(s, r->key);
            if (old >= 0 && !seq_after(r->seq, s->slot[old].seq))
                continue; /* an older copy of the key: its slot stays free */
            if (old >= 0)
                s->slot[old].key = SLOT_FREE;
            else
                s->stats.used++;
            s->key_slot[r->key] = slot + 1;
            s->slot[slot] =
                (struct slot_state){.key = (uint32_t)r->key, .crc = r->crc, .seq = r->seq};
            if (!any || seq_after(r->seq + 1, s->next_seq))
                s->next_seq = r->seq + 1;
            any = true;
        }
    }
    for (uint64_t i = s->slots; i-- > 0;)
        if (s->slot[i].key == SLOT_FREE)
            s->free_stack[s->nfree++] = (uint32_t)i;
    return 0;
}

int mm__swap_reopen(const char *path, uint64_t slots, uint64_t max_keys, mm_swap_t **out)
{
    if (!path || !out || slots == 0 || max_keys == 0 || slots > SWAP_MAX_COUNT ||
        max_keys > SWAP_MAX_COUNT)
        return -EINVAL;
    mm_swap_t *s = alloc_store(path, slots, max_keys);
    if (!s)
        return -ENOMEM;
    int err = 0;
    s->data_fd = open(s->data_path, O_RDWR | O_CLOEXEC);
    if (s->data_fd < 0)
        err = -errno;
    if (err == 0) {
        s->idx_fd = open(s->idx_path, O_RDWR | O_CLOEXEC);
        if (s->idx_fd < 0)
            err = -errno;
    }
    if (err == 0)
        err = load_index(s);
    if (err == 0)
        err = -pthread_mutex_init(&s->lock, NULL);
    if (err < 0) {
        if (s->idx_fd >= 0)
            close(s->idx_fd);
        if (s->data_fd >= 0)
            close(s->data_fd);
        free_store(s);
        return err;
    }
    s->stats.slots = slots;
    *out = s;
    return 0;
}

void mm__swap_close(mm_swap_t *s, bool remove)
{
    if (!s)
        return;
    /* Close errors are ignored: durability is mm__swap_sync()'s to report. */
    close(s->idx_fd);
    close(s->data_fd);
    if (remove) {
        unlink(s->idx_path);
        unlink(s->data_path);
    }
    pthread_mutex_destroy(&s->lock);
    free_store(s);
}

/* ---- Pages ---------------------------------------------------------------- */

int mm__swap_put(mm_swap_t *s, uint64_t key, const void *page)
{
    if (!s || !page || key >= s->max_keys)
        return -EINVAL;
    uint32_t crc = page_crc(page);

    pthread_mutex_lock(&s->lock);
    if (s->nfree == 0) {
        pthread_mutex_unlock(&s->lock);
        return -ENOSPC;
    }
    uint32_t slot = s->free_stack[--s->nfree];
    s->slot[slot].key = SLOT_BUSY;
    uint32_t seq = s->next_seq++;
    pthread_mutex_unlock(&s->lock);

    /* The slot is ours alone now: write its page, then its record. */
    int err = pwrite_full(s->data_fd, page, MM_SWAP_PAGE_BYTES, data_offset(slot));
    if (err == 0) {
        err = write_record(s, slot, key, crc, seq);
        /* A failed record write may have left part of one: try once to empty
         * it. Ignored if that fails too: memory says the slot is free, and
         * the next put into it rewrites the record. */
        if (err < 0)
            (void)write_record(s, slot, KEY_EMPTY, 0, 0);
    }
    if (err < 0) {
        pthread_mutex_lock(&s->lock);
        push_free(s, slot);
        pthread_mutex_unlock(&s->lock);
        return err;
    }

    pthread_mutex_lock(&s->lock);
    int64_t old = lookup(s, key);
    s->key_slot[key] = slot + 1;
    s->slot[slot] = (struct slot_state){.key = (uint32_t)key, .crc = crc, .seq = seq};
    s->stats.puts++;
    if (old < 0)
        s->stats.used++;
    else
        s->slot[old].key = SLOT_BUSY; /* ours until its record is cleared */
    pthread_mutex_unlock(&s->lock);

    if (old >= 0) {
        /* Ignored on failure: the stale record names key with an earlier seq
         * than its live one, and the next put into the slot overwrites it. */
        (void)write_record(s, (uint32_t)old, KEY_EMPTY, 0, 0);
        pthread_mutex_lock(&s->lock);
        push_free(s, (uint32_t)old);
        pthread_mutex_unlock(&s->lock);
    }
    return 0;
}

int mm__swap_get(mm_swap_t *s, uint64_t key, void *page)
{
    if (!s || !page || key >= s->max_keys)
        return -EINVAL;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int64_t slot = lookup(s, key);
        struct slot_state st = slot >= 0 ? s->slot[slot] : (struct slot_state){0};
        pthread_mutex_unlock(&s->lock);
        if (slot < 0)
            return -ENOENT;

        int err = pread_full(s->data_fd, page, MM_SWAP_PAGE_BYTES, data_offset((uint32_t)slot));
        bool bad = err == 0 && page_crc(page) != st.crc;

        pthread_mutex_lock(&s->lock);
        /* Same slot and same seq: the bytes read are this put's, whatever
         * happened meanwhile. Otherwise the key was replaced or dropped and
         * the slot may hold another key's page: look again. A retry means a
         * put or drop of this key finished, so the loop makes progress. */
        bool same = lookup(s, key) == slot && s->slot[slot].seq == st.seq;
        if (same && err == 0) {
            s->stats.gets++;
            if (bad)
                s->stats.bad_pages++;
        }
        pthread_mutex_unlock(&s->lock);
        if (same && err == 0 && !bad)
            return 0;
        /* Never leave a damaged page or another key's bytes with the caller. */
        memset(page, 0, MM_SWAP_PAGE_BYTES);
        if (same)
            return err < 0 ? err : -EBADMSG;
    }
}

int mm__swap_drop(mm_swap_t *s, uint64_t key)
{
    if (!s || key >= s->max_keys)
        return -EINVAL;
    pthread_mutex_lock(&s->lock);
    int64_t slot = lookup(s, key);
    if (slot < 0) {
        pthread_mutex_unlock(&s->lock);
        return -ENOENT;
    }
    /* Detach first, so that no get reads the slot while its record goes. */
    struct slot_state st = s->slot[slot];
    s->key_slot[key] = 0;
    s->slot[slot].key = SLOT_BUSY;
    s->stats.used--;
    pthread_mutex_unlock(&s->lock);

    int err = write_record(s, (uint32_t)slot, KEY_EMPTY, 0, 0);

    pthread_mutex_lock(&s->lock);
    if (err < 0 && s->key_slot[key] == 0) {
        /* The record still names key: keep the page stored, as it was. */
        s->key_slot[key] = (uint32_t)slot + 1;
        s->slot[slot] = st;
        s->stats.used++;
    } else {
        push_free(s, (uint32_t)slot);
    }
    pthread_mutex_unlock(&s->lock);
    return err;
}

int mm__swap_sync(mm_swap_t *s)
{
    if (!s)
        return -EINVAL;
    /* Data before index, so that a durable record never names a page that
     * is not on disk yet. */
    if (fdatasync(s->data_fd) < 0 || fdatasync(s->idx_fd) < 0)
        return -errno;
    pthread_mutex_lock(&s->lock);
    s->stats.syncs++;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

bool mm__swap_has(mm_swap_t *s, uint64_t key)
{
    if (!s || key >= s->max_keys)
        return false;
    pthread_mutex_lock(&s->lock);
    bool has = lookup(s, key) >= 0;
    pthread_mutex_unlock(&s->lock);
    return has;
}

void mm__swap_stats(mm_swap_t *s, mm_swap_stats_t *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}

int mm__swap_locate(mm_swap_t *s, uint64_t key, int *fd, uint64_t *offset)
{
    if (!s || !fd || !offset || key >= s->max_keys)
        return -EINVAL;
    pthread_mutex_lock(&s->lock);
    int64_t slot = lookup(s, key);
    pthread_mutex_unlock(&s->lock);
    if (slot < 0)
        return -ENOENT;
    *fd = s->data_fd;
    *offset = data_offset((uint32_t)slot);
    return 0;
}
