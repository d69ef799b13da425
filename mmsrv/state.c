/*
 * The host's bookkeeping in the state directory: one record per client in
 * STATE_DIR/clients/ID, what a restarted daemon trusts about it (never the
 * shared memory, which the client writes). A record names the client's
 * process (pid, start time, uid), its two memfds (device, inode, sizes), its
 * policy settings, the last revocation sequence number, the chunks the host
 * took back and the chunks registered for host paging.
 *
 * Format (version 1, host byte order): a header {magic "MMCR", version,
 * header bytes, total bytes, CRC-32 of everything after the crc field}, a
 * fixed body, then two bitmaps of chunk_count bits each, in 64-bit words.
 * A record is replaced atomically: written to ID.tmp, then renamed over ID.
 * No fsync: the records only matter while the clients' memfds live, and
 * those do not survive a machine crash; a daemon crash leaves the page cache
 * (and so the renamed file) in place.
 *
 * Threads: the event-loop thread only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "daemon.h"
#include "log.h"

#define REC_MAGIC   0x52434d4du /* "MMCR" */
#define REC_VERSION 2u

enum { REC_UFFD = 1u << 0, REC_FROZEN = 1u << 1, REC_PINNED = 1u << 2, REC_SWAP = 1u << 3 };

struct rec_header {
    uint32_t magic;
    uint16_t version;
    uint16_t header_bytes;
    uint32_t total_bytes;
    uint32_t crc; /* of the bytes after this field */
};

struct rec_body {
    uint32_t id;
    uint32_t kind;
    uint32_t chunk_count;
    uint32_t flags; /* REC_* */
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
    uint32_t weight;
    uint64_t start_time;
    uint64_t region_dev, region_ino, region_bytes;
    uint64_t shared_dev, shared_ino, shared_bytes;
    uint64_t min_bytes, max_bytes, pinned_bytes;
    uint64_t revoke_seq;
    uint64_t region_addr;
    uint64_t paged_out_total;
    uint64_t missed_deadlines;
    uint64_t reclaimed_bytes_total;
    int32_t pool;
    int32_t numa_node;
    char name[MM_NAME_MAX];
    uint32_t driver; /* enum mm_driver */
    uint32_t reserved;
    uint64_t driver_target_bytes;
};

_Static_assert(sizeof(struct rec_header) == 16, "record header layout");
_Static_assert(sizeof(struct rec_body) == 208, "record body layout");

static size_t bitmap_words(uint32_t chunks)
{
    return ((size_t)chunks + 63) / 64;
}

/* A baseline driver's own bitmap, after the reclaimed and paging ones: the
 * balloon's frames (one bit per 4 KiB frame), virtio-mem's unplugged blocks. */
static size_t driver_words(uint32_t chunks, uint32_t driver)
{
    if (driver == MM_DRIVER_BALLOON)
        return (size_t)chunks * MM_CHUNK_FRAMES / 64;
    return driver == MM_DRIVER_VIRTIO_MEM ? bitmap_words(chunks) : 0;
}

static uint64_t *driver_bits(mm_host_client_t *c)
{
    return c->driver == MM_DRIVER_BALLOON ? c->ballooned : c->unplugged;
}

static size_t record_bytes(uint32_t chunks, uint32_t driver)
{
    return sizeof(struct rec_header) + sizeof(struct rec_body) +
           (2 * bitmap_words(chunks) + driver_words(chunks, driver)) * 8;
}

static uint32_t record_crc(const uint8_t *rec, size_t total)
{
    size_t skip = offsetof(struct rec_header, crc) + sizeof(uint32_t);
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), rec + skip, (uInt)(total - skip));
}

static void record_path(const mm_server_t *s, uint32_t id, const char *suffix, char *out,
                        size_t cap)
{
    snprintf(out, cap, "%s/clients/%u%s", s->cfg.state_dir, id, suffix);
}

int mm__state_open(mm_server_t *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/clients", s->cfg.state_dir);
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        log_error("cannot create %s: %s", path, strerror(errno));
        return -errno;
    }
    return 0;
}

uint64_t mm__process_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The name (field 2) may hold spaces and parentheses: count from its
     * last ')'. Field 22 is the 20th after it. */
    const char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long long start = 0;
    for (int field = 2; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    if (!p || sscanf(p + 1, "%llu", &start) != 1)
        return 0;
    return start;
}

int mm__state_save(mm_server_t *s, mm_host_client_t *c)
{
    size_t words = bitmap_words(c->chunk_count), total = record_bytes(c->chunk_count, c->driver);
    uint8_t *rec = calloc(1, total);
    if (!rec)
        return -ENOMEM;
    struct rec_header *h = (struct rec_header *)rec;
    struct rec_body *b = (struct rec_body *)(rec + sizeof *h);
    uint64_t *bits = (uint64_t *)(rec + sizeof *h + sizeof *b);
    *h = (struct rec_header){.magic = REC_MAGIC,
                             .version = REC_VERSION,
                             .header_bytes = sizeof *h,
                             .total_bytes = (uint32_t)total};
    *b = (struct rec_body){
        .id = c->id,
        .kind = c->kind,
        .chunk_count = c->chunk_count,
        .flags = (c->uffd >= 0 ? REC_UFFD : 0) | (c->frozen ? REC_FROZEN : 0) |
                 (c->pinned ? REC_PINNED : 0) | (c->swap || c->swap_kept ? REC_SWAP : 0),
        .pid = c->pid,
        .uid = c->uid,
        .gid = c->gid,
        .weight = c->weight,
        .start_time = c->start_time,
        .region_dev = c->region_dev,
        .region_ino = c->region_ino,
        .region_bytes = c->region_bytes,
        .shared_dev = c->shared_dev,
        .shared_ino = c->shared_ino,
        .shared_bytes = c->shared_bytes,
        .min_bytes = c->min_bytes,
        .max_bytes = c->max_bytes,
        .pinned_bytes = c->pinned_bytes,
        .revoke_seq = c->revoke_seq,
        .region_addr = c->region_addr,
        .paged_out_total = c->paged_out_total,
        .missed_deadlines = c->missed_deadlines,
        .reclaimed_bytes_total = c->reclaimed_bytes_total,
        .pool = c->pool,
        .numa_node = c->numa_node,
        .driver = c->driver,
        .driver_target_bytes = c->driver_target_bytes,
    };
    memcpy(b->name, c->name, sizeof b->name);
    memcpy(bits, c->reclaimed, words * 8);
    if (c->paging_chunks)
        memcpy(bits + words, c->paging_chunks, words * 8);
    if (driver_words(c->chunk_count, c->driver))
        memcpy(bits + 2 * words, driver_bits(c), driver_words(c->chunk_count, c->driver) * 8);
    h->crc = record_crc(rec, total);

    char tmp[4096], path[4096];
    record_path(s, c->id, ".tmp", tmp, sizeof tmp);
    record_path(s, c->id, "", path, sizeof path);
    int err = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = -errno;
    } else {
        ssize_t n = write(fd, rec, total);
        if (n != (ssize_t)total)
            err = n < 0 ? -errno : -EIO;
        if (close(fd) < 0 && err == 0)
            err = -errno;
        if (err == 0 && rename(tmp, path) < 0)
            err = -errno;
        if (err < 0)
            unlink(tmp); /* ignored: the old record, if any, is still whole */
    }
    free(rec);
    if (err < 0)
        log_error("client %u: cannot write its record %s: %s", c->id, path, strerror(-err));
    else
        c->state_dirty = false;
    return err;
}

void mm__state_forget(mm_server_t *s, uint32_t id)
{
    char path[4096];
    record_path(s, id, "", path, sizeof path);
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("client %u: cannot remove its record %s: %s", id, path, strerror(errno));
}

/* A client read_record built, dropped half-way. */
static void drop_read(mm_host_client_t *c)
{
    mm__baseline_fini(c);
    free(c->reclaimed);
    free(c->paging_chunks);
    free(c);
}

/* Read and check one record; a client in RECOVERING state, or NULL with
 * the reason in why. */
static mm_host_client_t *read_record(const char *path, uint32_t id, char *why, size_t cap)
{
    uint8_t *rec = NULL;
    mm_host_client_t *c = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(why, cap, "%s", strerror(errno));
        goto out;
    }
    size_t total = (size_t)st.st_size;
    size_t base = sizeof(struct rec_header) + sizeof(struct rec_body);
    if (total < base ||
        total > record_bytes(MM_REGION_MAX_BYTES / MM_CHUNK_SIZE, MM_DRIVER_BALLOON)) {
        snprintf(why, cap, "size %zu is no record's", total);
        goto out;
    }
    rec = malloc(total);
    if (!rec || read(fd, rec, total) != (ssize_t)total) {
        snprintf(why, cap, "cannot read it");
        goto out;
    }
    const struct rec_header *h = (const struct rec_header *)rec;
    const struct rec_body *b = (const struct rec_body *)(rec + sizeof *h);
    if (h->magic != REC_MAGIC || h->version != REC_VERSION || h->header_bytes != sizeof *h ||
        h->total_bytes != total) {
        snprintf(why, cap, "not a version %u record", REC_VERSION);
        goto out;
    }
    if (h->crc != record_crc(rec, total)) {
        snprintf(why, cap, "checksum mismatch");
        goto out;
    }
    if (b->id != id || b->chunk_count == 0 ||
        b->region_bytes != (uint64_t)b->chunk_count * MM_CHUNK_SIZE ||
        b->shared_bytes != mm_shared_bytes(b->chunk_count) || b->driver >= MM_DRIVER_COUNT ||
        b->driver_target_bytes > b->region_bytes ||
        total != record_bytes(b->chunk_count, b->driver) || b->pid <= 0 ||
        strnlen(b->name, sizeof b->name) == sizeof b->name) {
        snprintf(why, cap, "fields out of range");
        goto out;
    }
    size_t words = bitmap_words(b->chunk_count);
    const uint64_t *bits = (const uint64_t *)(rec + base);
    c = calloc(1, sizeof *c);
    if (c)
        c->reclaimed = malloc(words * 8);
    if (c)
        c->paging_chunks = calloc(words, 8);
    if (!c || !c->reclaimed || !c->paging_chunks) {
        if (c)
            drop_read(c);
        c = NULL;
        snprintf(why, cap, "out of memory");
        goto out;
    }
    memcpy(c->reclaimed, bits, words * 8);
    memcpy(c->paging_chunks, bits + words, words * 8);
    c->state = MM_CLIENT_RECOVERING;
    c->id = b->id;
    c->kind = b->kind;
    c->chunk_count = b->chunk_count;
    c->pid = b->pid;
    c->uid = b->uid;
    c->gid = b->gid;
    c->weight = b->weight;
    c->start_time = b->start_time;
    c->region_dev = b->region_dev;
    c->region_ino = b->region_ino;
    c->region_bytes = b->region_bytes;
    c->shared_dev = b->shared_dev;
    c->shared_ino = b->shared_ino;
    c->shared_bytes = b->shared_bytes;
    c->min_bytes = b->min_bytes;
    c->max_bytes = b->max_bytes;
    c->pinned = b->flags & REC_PINNED;
    c->pinned_bytes = b->pinned_bytes;
    c->revoke_seq = b->revoke_seq;
    c->region_addr = b->region_addr;
    c->paged_out_total = b->paged_out_total;
    c->missed_deadlines = b->missed_deadlines;
    c->reclaimed_bytes_total = b->reclaimed_bytes_total;
    c->frozen = b->flags & REC_FROZEN;
    c->swap_kept = b->flags & REC_SWAP;
    c->pool = b->pool;
    c->numa_node = b->numa_node;
    memcpy(c->name, b->name, sizeof c->name);
    c->sock = c->pidfd = c->region_fd = c->shared_fd = c->bell_to_client = c->bell_to_host = -1;
    c->client_bells[0] = c->client_bells[1] = -1;
    c->uffd = -1;
    /* Granted chunks follow from the reclaimed set. */
    uint32_t reclaimed = 0;
    for (uint32_t i = 0; i < c->chunk_count; i++)
        reclaimed += host_reclaimed(c, i);
    c->granted_chunks = c->chunk_count - reclaimed;
    /* A baseline guest's driver state: what its balloon holds or which
     * blocks are unplugged, so that deflate and plug go on where they were. */
    if (mm__baseline_init(c, b->driver) < 0) {
        drop_read(c);
        c = NULL;
        snprintf(why, cap, "out of memory");
        goto out;
    }
    c->driver_target_bytes = b->driver_target_bytes;
    size_t dw = driver_words(c->chunk_count, c->driver);
    if (dw) {
        uint64_t n = 0, *map = driver_bits(c);
        memcpy(map, bits + 2 * words, dw * 8);
        for (size_t i = 0; i < dw; i++)
            n += (uint64_t)__builtin_popcountll(map[i]);
        if (c->driver == MM_DRIVER_BALLOON)
            c->balloon_frames = n;
        else
            c->unplugged_chunks = n;
    }
out:
    if (fd >= 0)
        close(fd);
    free(rec);
    return c;
}

int mm__state_load(mm_server_t *s, void (*add)(mm_server_t *s, mm_host_client_t *c))
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/clients", s->cfg.state_dir);
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        unsigned long id = strtoul(e->d_name, &end, 10);
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || id == 0 || id > UINT32_MAX)
            continue;
        char path[4096], why[128] = "";
        record_path(s, (uint32_t)id, "", path, sizeof path);
        if (strcmp(end, ".tmp") == 0) {
            char tmp[4096];
            record_path(s, (uint32_t)id, ".tmp", tmp, sizeof tmp);
            unlink(tmp); /* a write the earlier daemon did not finish */
            continue;
        }
        if (*end)
            continue;
        mm_host_client_t *c = read_record(path, (uint32_t)id, why, sizeof why);
        if (!c) {
            char bad[4096];
            record_path(s, (uint32_t)id, ".bad", bad, sizeof bad);
            log_error("state record %s refused (%s); kept as %s", path, why, bad);
            if (rename(path, bad) < 0)
                log_error("cannot rename %s: %s", path, strerror(errno));
            continue;
        }
        add(s, c);
        n++;
    }
    closedir(d);
    return n;
}
