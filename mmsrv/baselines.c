/*
 * The host side of the guest model's baseline memory drivers (see
 * docs/baselines.md): what QEMU's virtio-balloon device (with free page
 * reporting) and virtio-mem device do with a guest's requests.
 *
 * - balloon: each inflated frame number is discarded on its own, 4 KiB at a
 *   time, as QEMU's balloon_inflate_page() calls ram_block_discard_range()
 *   per page; deflate only updates the record (QEMU's madvise(WILLNEED)
 *   has nothing to prefetch on a punched memfd).
 * - free page reporting: each reported block is discarded with its own call.
 * - virtio-mem: plug is refused past the requested size (the device's NACK);
 *   unplug discards the blocks' range with one call.
 *
 * The driver's target (what the admin set with mmctl balloon / virtio-mem)
 * is the client's target: it is published like any target and rings the
 * guest, as the device's config-change interrupt does. Every field of a
 * request is checked against the client's region: a frame or block outside
 * it, a block not 2 MiB aligned or a batch over its limit is refused with one
 * log line and an error reply; the daemon never trusts the guest's word.
 *
 * Threads: the event-loop thread only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "log.h"
#include "platform.h"
#include "wire.h"

const char *mm__driver_name(uint32_t driver)
{
    static const char *const names[MM_DRIVER_COUNT] = {
        [MM_DRIVER_MM] = "mm",
        [MM_DRIVER_BALLOON] = "balloon",
        [MM_DRIVER_FPR] = "fpr",
        [MM_DRIVER_VIRTIO_MEM] = "virtio-mem",
    };
    return driver < MM_DRIVER_COUNT ? names[driver] : "?";
}

static bool bit_get(const uint64_t *map, uint64_t i)
{
    return (map[i / 64] >> (i % 64)) & 1;
}

static void bit_set(uint64_t *map, uint64_t i, bool on)
{
    if (on)
        map[i / 64] |= 1ull << (i % 64);
    else
        map[i / 64] &= ~(1ull << (i % 64));
}

int mm__baseline_init(mm_host_client_t *c, uint32_t driver)
{
    c->driver = driver;
    c->driver_target_bytes = c->region_bytes;
    uint64_t frames = (uint64_t)c->chunk_count * MM_CHUNK_FRAMES;
    if (driver == MM_DRIVER_BALLOON)
        c->ballooned = calloc((frames + 63) / 64, sizeof *c->ballooned);
    if (driver == MM_DRIVER_VIRTIO_MEM)
        c->unplugged = calloc((c->chunk_count + 63) / 64, sizeof *c->unplugged);
    if ((driver == MM_DRIVER_BALLOON && !c->ballooned) ||
        (driver == MM_DRIVER_VIRTIO_MEM && !c->unplugged))
        return -ENOMEM;
    return 0;
}

void mm__baseline_fini(mm_host_client_t *c)
{
    free(c->ballooned);
    free(c->unplugged);
    c->ballooned = c->unplugged = NULL;
}

static int reply(mm_host_client_t *c, uint32_t seq, int status, uint64_t done)
{
    mm_msg_baseline_reply_t r = {.status = status, .done = done};
    mm__msg_init(&r.hdr, MM_MSG_BASELINE_REPLY, sizeof r, seq);
    return mm__send_msg(c->sock, &r, sizeof r, NULL, 0);
}

/* Refuse a request: one log line, and an error reply the guest sees. */
__attribute__((format(printf, 4, 5))) static int refuse(mm_host_client_t *c, uint32_t seq,
                                                        int status, const char *fmt, ...)
{
    mm_msg_error_t e = {.status = status};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.text, sizeof e.text, fmt, ap);
    va_end(ap);
    log_warn("client %u (%s): %s refused", c->id, c->name, e.text);
    mm__msg_init(&e.hdr, MM_MSG_ERROR, sizeof e, seq);
    return mm__send_msg(c->sock, &e, sizeof e, NULL, 0);
}

static void discard(mm_host_client_t *c, uint64_t off, uint64_t len)
{
    uint64_t t0 = mm__now_ns();
    int err = mm__punch(c->region_fd, off, len);
    c->baseline_discard_ns += mm__now_ns() - t0;
    c->baseline_discards++;
    if (err < 0)
        log_warn("client %u: discarding %llu bytes at %llu: %s", c->id, (unsigned long long)len,
                 (unsigned long long)off, strerror(-err));
    else
        c->baseline_discarded_bytes += len;
}

static int on_balloon(mm_host_client_t *c, const mm_msg_balloon_t *m, bool inflate)
{
    uint64_t frames = (uint64_t)c->chunk_count * MM_CHUNK_FRAMES, done = 0;
    for (uint32_t i = 0; i < m->count; i++)
        if (m->pfns[i] >= frames)
            return refuse(c, m->hdr.seq, -EINVAL, "balloon frame %u outside the region of %llu",
                          m->pfns[i], (unsigned long long)frames);
    for (uint32_t i = 0; i < m->count; i++) {
        uint32_t pfn = m->pfns[i];
        if (bit_get(c->ballooned, pfn) == inflate)
            continue; /* already in (or out of) the balloon: nothing to do */
        bit_set(c->ballooned, pfn, inflate);
        if (inflate)
            discard(c, (uint64_t)pfn * MM_FRAME_SIZE, MM_FRAME_SIZE);
        done++;
    }
    c->balloon_frames = inflate ? c->balloon_frames + done : c->balloon_frames - done;
    c->state_dirty = true; /* saved at the next tick: a lost inflate is only
                            * a deflate with nothing to do */
    return reply(c, m->hdr.seq, 0, done);
}

static int on_report(mm_host_client_t *c, const mm_msg_fpr_t *m)
{
    for (uint32_t i = 0; i < m->count; i++)
        if (m->addrs[i] + MM_CHUNK_SIZE > c->region_bytes)
            return refuse(c, m->hdr.seq, -EINVAL, "reported block at %llu outside the region",
                          (unsigned long long)m->addrs[i]);
    for (uint32_t i = 0; i < m->count; i++)
        discard(c, m->addrs[i], MM_CHUNK_SIZE);
    return reply(c, m->hdr.seq, 0, m->count);
}

static int on_vmem(mm_host_client_t *c, const mm_msg_vmem_t *m, bool plug)
{
    const char *what = plug ? "plug" : "unplug";
    if (m->addr / MM_CHUNK_SIZE + m->nb_blocks > c->chunk_count)
        return refuse(c, m->hdr.seq, -EINVAL,
                      "virtio-mem %s of %llu blocks at %llu: outside the "
                      "region",
                      what, (unsigned long long)m->nb_blocks, (unsigned long long)m->addr);
    uint32_t first = (uint32_t)(m->addr / MM_CHUNK_SIZE), n = (uint32_t)m->nb_blocks;
    /* Blocks already in the state asked for count as done: a request the
     * guest repeats after a daemon restart (whose record may be a tick
     * behind) is idempotent. */
    uint32_t change = 0;
    for (uint32_t i = first; i < first + n; i++)
        change += bit_get(c->unplugged, i) == plug;
    uint64_t plugged = c->region_bytes - c->unplugged_chunks * MM_CHUNK_SIZE;
    if (plug && plugged + (uint64_t)change * MM_CHUNK_SIZE > c->driver_target_bytes)
        return refuse(c, m->hdr.seq, -EAGAIN,
                      "virtio-mem plug of %u blocks past the requested "
                      "size",
                      n); /* the device's NACK */
    for (uint32_t i = first; i < first + n; i++)
        bit_set(c->unplugged, i, !plug);
    c->unplugged_chunks = plug ? c->unplugged_chunks - change : c->unplugged_chunks + change;
    c->state_dirty = true;
    if (!plug)
        discard(c, m->addr, (uint64_t)n * MM_CHUNK_SIZE);
    return reply(c, m->hdr.seq, 0, n);
}

int mm__baseline_message(mm_server_t *s, mm_host_client_t *c, const void *buf, int type)
{
    (void)s;
    const mm_msg_hdr_t *hdr = buf;
    bool balloon = type == MM_MSG_BALLOON_INFLATE || type == MM_MSG_BALLOON_DEFLATE;
    bool vmem = type == MM_MSG_VMEM_PLUG || type == MM_MSG_VMEM_UNPLUG;
    uint32_t want = balloon ? MM_DRIVER_BALLOON : vmem ? MM_DRIVER_VIRTIO_MEM : MM_DRIVER_FPR;
    if (c->driver != want)
        return refuse(c, hdr->seq, -EPROTO, "%s message from a guest of the %s driver",
                      mm__msg_type_name(hdr->type), mm__driver_name(c->driver));
    c->baseline_messages++;
    if (balloon)
        return on_balloon(c, buf, type == MM_MSG_BALLOON_INFLATE);
    if (vmem)
        return on_vmem(c, buf, type == MM_MSG_VMEM_PLUG);
    return on_report(c, buf);
}

int mm__baseline_set_target(mm_server_t *s, mm_host_client_t *c, uint32_t driver, uint64_t bytes,
                            char *why, size_t why_len)
{
    if (c->driver != driver) {
        snprintf(why, why_len, "client '%s' runs the %s driver, not %s", c->name,
                 mm__driver_name(c->driver), mm__driver_name(driver));
        return -EINVAL;
    }
    if (bytes > c->region_bytes) {
        snprintf(why, why_len, "%llu bytes is above the guest's RAM of %llu MiB",
                 (unsigned long long)bytes, (unsigned long long)(c->region_bytes >> 20));
        return -EINVAL;
    }
    if (driver == MM_DRIVER_VIRTIO_MEM && bytes % MM_CHUNK_SIZE) {
        snprintf(why, why_len, "the requested size must be a multiple of the 2 MiB block size");
        return -EINVAL;
    }
    /* The balloon counts in 4 KiB pages. */
    c->driver_target_bytes = bytes & ~(uint64_t)(MM_FRAME_SIZE - 1);
    c->state_dirty = true;
    log_info("client %u (%s): %s target %llu MiB", c->id, c->name, mm__driver_name(driver),
             (unsigned long long)(c->driver_target_bytes >> 20));
    mm__policy_update(s);
    return 0;
}
