/*
 * Wire: building and checking client-socket messages. mm__msg_check() is the
 * only gate a received message passes; each type has an exact length (or a
 * length fixed by its count) and every field is range-checked.
 */
#include "wire.h"

#include <errno.h>
#include <string.h>

void mm__msg_init(mm_msg_hdr_t *hdr, uint16_t type, uint32_t length, uint32_t seq)
{
    hdr->magic = MM_MSG_MAGIC;
    hdr->version = MM_PROTO_VERSION;
    hdr->type = type;
    hdr->length = length;
    hdr->seq = seq;
}

uint32_t mm__msg_install_length(uint32_t count)
{
    return (uint32_t)(offsetof(mm_msg_install_t, chunks) + (size_t)count * sizeof(uint32_t));
}

/* A name is NUL-terminated inside its field, non-empty and printable ASCII. */
static int check_text(const char *text, size_t cap, int allow_empty)
{
    size_t n = strnlen(text, cap);
    if (n == cap || (n == 0 && !allow_empty))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (text[i] < 0x20 || text[i] > 0x7e)
            return -EINVAL;
    return 0;
}

static int check_hello(const mm_msg_hello_t *m)
{
    if (check_text(m->name, sizeof m->name, 0) < 0)
        return -EINVAL;
    if (m->max_bytes < MM_CHUNK_SIZE || m->max_bytes > MM_REGION_MAX_BYTES)
        return -EINVAL;
    if (m->min_bytes > m->max_bytes || m->weight < 1 || m->weight > 10000)
        return -EINVAL;
    if (m->kind > MM_KIND_GUEST || m->numa_node < -1 || m->numa_node > 1023)
        return -EINVAL;
    uint32_t driver = (m->flags & MM_HELLO_DRIVER_MASK) >> MM_HELLO_DRIVER_SHIFT;
    if ((m->flags & ~MM_HELLO_DRIVER_MASK) != 0 || driver >= MM_DRIVER_COUNT)
        return -EINVAL;
    /* Only a guest runs a memory driver other than mm's own. */
    if (driver != MM_DRIVER_MM && m->kind != MM_KIND_GUEST)
        return -EINVAL;
    return MM_MSG_HELLO;
}

static int check_counted(uint32_t count, uint32_t length, int allow_zero)
{
    if (count > MM_INSTALL_MAX || (count == 0 && !allow_zero))
        return -EINVAL;
    return length == mm__msg_install_length(count) ? 0 : -EPROTO;
}

uint32_t mm__msg_balloon_length(uint32_t count)
{
    return (uint32_t)(offsetof(mm_msg_balloon_t, pfns) + (size_t)count * sizeof(uint32_t));
}

uint32_t mm__msg_fpr_length(uint32_t count)
{
    return (uint32_t)(offsetof(mm_msg_fpr_t, addrs) + (size_t)count * sizeof(uint64_t));
}

/* A counted baseline message: count in 1..max, the length it implies. */
static int check_baseline_count(uint32_t count, uint32_t max, uint32_t length, uint32_t want)
{
    if (count == 0 || count > max)
        return -EINVAL;
    return length == want ? 0 : -EPROTO;
}

/* Length a message of this type must have, 0 for counted types, -1 unknown. */
static long fixed_length(uint16_t type)
{
    switch (type) {
    case MM_MSG_HELLO:
        return sizeof(mm_msg_hello_t);
    case MM_MSG_HELLO_REPLY:
        return sizeof(mm_msg_hello_reply_t);
    case MM_MSG_BYE:
        return sizeof(mm_msg_bye_t);
    case MM_MSG_ERROR:
        return sizeof(mm_msg_error_t);
    case MM_MSG_PAGING:
        return sizeof(mm_msg_paging_t);
    case MM_MSG_VMEM_PLUG:
    case MM_MSG_VMEM_UNPLUG:
        return sizeof(mm_msg_vmem_t);
    case MM_MSG_BASELINE_REPLY:
        return sizeof(mm_msg_baseline_reply_t);
    case MM_MSG_RECONNECT:
        return sizeof(mm_msg_reconnect_t);
    case MM_MSG_RECONNECT_REPLY:
        return sizeof(mm_msg_reconnect_reply_t);
    case MM_MSG_STOPPING:
        return sizeof(mm_msg_stopping_t);
    case MM_MSG_INSTALL:
    case MM_MSG_INSTALL_REPLY:
    case MM_MSG_BALLOON_INFLATE:
    case MM_MSG_BALLOON_DEFLATE:
    case MM_MSG_FPR_REPORT:
        return 0;
    default:
        return -1;
    }
}

int mm__msg_check(const void *buf, size_t len)
{
    const mm_msg_hdr_t *hdr = buf;
    if (len < sizeof *hdr || hdr->magic != MM_MSG_MAGIC || hdr->length != len)
        return -EBADMSG;
    if (hdr->version != MM_PROTO_VERSION)
        return -EPROTONOSUPPORT;
    long want = fixed_length(hdr->type);
    if (want < 0)
        return -EPROTO;
    if (want > 0 && (size_t)want != len)
        return -EPROTO;
    if (want == 0 && len < offsetof(mm_msg_install_t, chunks))
        return -EPROTO;
    int err = 0;
    switch (hdr->type) {
    case MM_MSG_HELLO:
        return check_hello(buf);
    case MM_MSG_INSTALL:
        err = check_counted(((const mm_msg_install_t *)buf)->count, hdr->length, 0);
        break;
    case MM_MSG_INSTALL_REPLY: {
        const mm_msg_install_reply_t *r = buf;
        err = r->status > 0 ? -EINVAL : check_counted(r->count, hdr->length, 1);
        break;
    }
    case MM_MSG_ERROR: {
        const mm_msg_error_t *e = buf;
        if (e->status >= 0 || check_text(e->text, sizeof e->text, 1) < 0)
            err = -EINVAL;
        break;
    }
    case MM_MSG_HELLO_REPLY:
        if (((const mm_msg_hello_reply_t *)buf)->status > 0)
            err = -EINVAL;
        break;
    case MM_MSG_PAGING: {
        const mm_msg_paging_t *m = buf;
        if (m->flags != 0 || m->region_addr % MM_FRAME_SIZE || m->region_addr == 0)
            err = -EINVAL;
        break;
    }
    case MM_MSG_BALLOON_INFLATE:
    case MM_MSG_BALLOON_DEFLATE: {
        uint32_t count = ((const mm_msg_balloon_t *)buf)->count;
        err = check_baseline_count(count, MM_BALLOON_PFNS_MAX, hdr->length,
                                   mm__msg_balloon_length(count));
        break;
    }
    case MM_MSG_FPR_REPORT: {
        const mm_msg_fpr_t *m = buf;
        err = check_baseline_count(m->count, MM_FPR_BLOCKS_MAX, hdr->length,
                                   mm__msg_fpr_length(m->count));
        for (uint32_t i = 0; err == 0 && i < m->count; i++)
            if (m->addrs[i] % MM_CHUNK_SIZE || m->addrs[i] >= MM_REGION_MAX_BYTES)
                err = -EINVAL;
        break;
    }
    case MM_MSG_VMEM_PLUG:
    case MM_MSG_VMEM_UNPLUG: {
        const mm_msg_vmem_t *m = buf;
        if (m->addr % MM_CHUNK_SIZE || m->addr >= MM_REGION_MAX_BYTES || m->nb_blocks == 0 ||
            m->nb_blocks > (MM_REGION_MAX_BYTES - m->addr) / MM_CHUNK_SIZE)
            err = -EINVAL;
        break;
    }
    case MM_MSG_BASELINE_REPLY:
        if (((const mm_msg_baseline_reply_t *)buf)->status > 0)
            err = -EINVAL;
        break;
    case MM_MSG_RECONNECT: {
        const mm_msg_reconnect_t *m = buf;
        if (m->client_id == 0 || (m->flags & ~MM_RECONNECT_UFFD) || m->region_addr == 0 ||
            m->region_addr % MM_FRAME_SIZE || m->region_bytes < MM_CHUNK_SIZE ||
            m->region_bytes > MM_REGION_MAX_BYTES || m->region_bytes % MM_CHUNK_SIZE ||
            m->shared_bytes != mm_shared_bytes((uint32_t)(m->region_bytes / MM_CHUNK_SIZE)))
            err = -EINVAL;
        break;
    }
    case MM_MSG_RECONNECT_REPLY:
        if (((const mm_msg_reconnect_reply_t *)buf)->status != 0)
            err = -EINVAL;
        break;
    default:
        break;
    }
    return err < 0 ? err : hdr->type;
}

const char *mm__msg_type_name(uint16_t type)
{
    static const char *const names[] = {
        [MM_MSG_HELLO] = "hello",
        [MM_MSG_HELLO_REPLY] = "hello-reply",
        [MM_MSG_INSTALL] = "install",
        [MM_MSG_INSTALL_REPLY] = "install-reply",
        [MM_MSG_BYE] = "bye",
        [MM_MSG_ERROR] = "error",
        [MM_MSG_PAGING] = "paging",
        [MM_MSG_BALLOON_INFLATE] = "balloon-inflate",
        [MM_MSG_BALLOON_DEFLATE] = "balloon-deflate",
        [MM_MSG_FPR_REPORT] = "fpr-report",
        [MM_MSG_VMEM_PLUG] = "virtio-mem-plug",
        [MM_MSG_VMEM_UNPLUG] = "virtio-mem-unplug",
        [MM_MSG_BASELINE_REPLY] = "baseline-reply",
        [MM_MSG_RECONNECT] = "reconnect",
        [MM_MSG_RECONNECT_REPLY] = "reconnect-reply",
        [MM_MSG_STOPPING] = "stopping",
    };
    if (type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    return "unknown";
}
