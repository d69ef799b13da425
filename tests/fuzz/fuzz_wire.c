/*
 * libFuzzer target for the client-socket message gate (libmm/src/wire.c).
 * Every input is used twice:
 *
 *   1. As received bytes: mm__msg_check() runs on an exact-size heap copy, so
 *      AddressSanitizer reports any read past what was received. A rejection
 *      must carry the error wire.h documents for the header's state; an
 *      accepted message is then read the way mmsrv (registry.c) and the client
 *      (client.c) read it after the check, asserting every field constraint the
 *      check promises (an install's count within 1..MM_INSTALL_MAX and its
 *      length exactly that count's, a hello whose size mm__frames_view accepts
 *      as a geometry, NUL-terminated printable texts).
 *   2. As field values: a message of the type the input picks is built valid
 *      from the input's bytes and must be accepted; then one thing about it,
 *      chosen by the input, is broken and the exact error wire.h documents for
 *      that must come back (so the gate rejects neither too little nor too
 *      much).
 *
 * A failed check prints what failed and aborts, which libFuzzer reports as a
 * crash with the input that caused it. Not thread-safe (libFuzzer runs one
 * input at a time).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mm/protocol.h>

#include "frames.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wire: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Every type wire.h knows. An accepted type missing here fails the target, so
 * that a new message type also gets its reads exercised here. */
static const uint16_t known_types[] = {
    MM_MSG_HELLO,
    MM_MSG_HELLO_REPLY,
    MM_MSG_INSTALL,
    MM_MSG_INSTALL_REPLY,
    MM_MSG_BYE,
    MM_MSG_ERROR,
    MM_MSG_PAGING,
    MM_MSG_BALLOON_INFLATE,
    MM_MSG_BALLOON_DEFLATE,
    MM_MSG_FPR_REPORT,
    MM_MSG_VMEM_PLUG,
    MM_MSG_VMEM_UNPLUG,
    MM_MSG_BASELINE_REPLY,
    MM_MSG_RECONNECT,
    MM_MSG_RECONNECT_REPLY,
    MM_MSG_STOPPING,
};
#define KNOWN_TYPES (sizeof known_types / sizeof known_types[0])

/* Room for every message and for lengths a little past the largest. */
typedef union msg_buf {
    mm_msg_hdr_t hdr;
    mm_msg_hello_t hello;
    mm_msg_hello_reply_t hello_reply;
    mm_msg_install_t install;
    mm_msg_install_reply_t install_reply;
    mm_msg_bye_t bye;
    mm_msg_error_t error;
    mm_msg_paging_t paging;
    mm_msg_balloon_t balloon;
    mm_msg_fpr_t fpr;
    mm_msg_vmem_t vmem;
    mm_msg_baseline_reply_t baseline_reply;
    mm_msg_reconnect_t reconnect;
    mm_msg_reconnect_reply_t reconnect_reply;
    mm_msg_stopping_t stopping;
    unsigned char bytes[MM_MSG_MAX_BYTES + 64];
} msg_buf_t;

/* Sink for values read only so that the reads happen. */
static volatile uint64_t sink;

/* ---- 1. Received bytes ------------------------------------------------- */

/* A text the check accepted: terminated inside cap, printable. */
static void check_text(const char *text, size_t cap, int allow_empty)
{
    size_t n = strnlen(text, cap);
    CHECK(n < cap);
    CHECK(n > 0 || allow_empty);
    for (size_t i = 0; i < n; i++)
        CHECK(text[i] >= 0x20 && text[i] <= 0x7e);
    /* What the daemon's and the client's logging do with it. */
    char line[MM_ERROR_TEXT_MAX + 16];
    CHECK(snprintf(line, sizeof line, "[%s]", text) == (int)n + 2);
}

/* The geometry mmsrv derives from a hello (handle_hello, create_memory) is one
 * mm__frames_view accepts; tried for real on regions of up to 64 chunks. */
static void check_hello_geometry(const mm_msg_hello_t *m)
{
    if (m->max_bytes % MM_CHUNK_SIZE)
        return; /* the daemon refuses it with -EINVAL */
    uint64_t chunks = m->max_bytes / MM_CHUNK_SIZE;
    CHECK(chunks >= 1 && chunks <= MM_REGION_MAX_BYTES / MM_CHUNK_SIZE);
    uint32_t count = (uint32_t)chunks;
    CHECK((uint64_t)count * MM_CHUNK_SIZE == m->max_bytes);
    if (count > 64)
        return;
    uint64_t shared_bytes = mm_shared_bytes(count);
    void *shared = NULL;
    CHECK(posix_memalign(&shared, 64, shared_bytes) == 0);
    memset(shared, 0, shared_bytes);
    mm__frames_format(shared, m->max_bytes, count);
    mm_frames_t f;
    CHECK(mm__frames_view(&f, shared, shared_bytes, m->max_bytes) == 0);
    CHECK(f.chunk_count == count);
    for (uint32_t c = 0; c < count; c++)
        CHECK(mm__frames_chunk_reclaimed(&f, c));
    free(shared);
}

static void read_hello(const mm_msg_hello_t *m, size_t len)
{
    CHECK(len == sizeof *m);
    check_text(m->name, sizeof m->name, 0);
    CHECK(m->max_bytes >= MM_CHUNK_SIZE && m->max_bytes <= MM_REGION_MAX_BYTES);
    CHECK(m->min_bytes <= m->max_bytes);
    CHECK(m->weight >= 1 && m->weight <= 10000);
    CHECK(m->kind == MM_KIND_RUNTIME || m->kind == MM_KIND_GUEST);
    CHECK(m->numa_node >= -1 && m->numa_node <= 1023);
    uint32_t driver = (m->flags & MM_HELLO_DRIVER_MASK) >> MM_HELLO_DRIVER_SHIFT;
    CHECK((m->flags & ~MM_HELLO_DRIVER_MASK) == 0 && driver < MM_DRIVER_COUNT);
    CHECK(driver == MM_DRIVER_MM || m->kind == MM_KIND_GUEST);
    /* handle_hello copies the name whole into the client record. */
    char name[MM_NAME_MAX];
    memcpy(name, m->name, sizeof name);
    check_text(name, sizeof name, 0);
    check_hello_geometry(m);
}

static void read_hello_reply(const mm_msg_hello_reply_t *r, size_t len)
{
    CHECK(len == sizeof *r);
    CHECK(r->status <= 0);
    sink = r->client_id + r->region_bytes + r->shared_bytes + r->chunk_count + r->reserved;
}

/* An install (client -> host) or install reply (host -> client). */
static void read_chunks(uint32_t count, const uint32_t *chunks, size_t len, uint32_t min_count)
{
    CHECK(count >= min_count && count <= MM_INSTALL_MAX);
    CHECK(len == mm__msg_install_length(count));
    CHECK(len == offsetof(mm_msg_install_t, chunks) + (size_t)count * sizeof(uint32_t));
    CHECK(len <= MM_MSG_MAX_BYTES);
    /* handle_install and mm__install read every entry; the client's
     * populate_chunks reads every granted one. */
    uint64_t sum = 0;
    for (uint32_t i = 0; i < count; i++)
        sum += chunks[i];
    sink = sum;
}

static void read_install(const mm_msg_install_t *m, size_t len)
{
    sink = m->slot; /* range-checked by handle_install, not by the gate */
    read_chunks(m->count, m->chunks, len, 1);
}

static void read_install_reply(const mm_msg_install_reply_t *r, size_t len)
{
    CHECK(r->status <= 0);
    read_chunks(r->count, r->chunks, len, 0);
}

static void read_error(const mm_msg_error_t *e, size_t len)
{
    CHECK(len == sizeof *e);
    CHECK(e->status < 0); /* round_trip returns it as the call's error */
    check_text(e->text, sizeof e->text, 1);
}

static void read_paging(const mm_msg_paging_t *m, size_t len)
{
    CHECK(len == sizeof *m);
    CHECK(m->flags == 0);
    CHECK(m->region_addr != 0 && m->region_addr % MM_FRAME_SIZE == 0);
}

/* Baseline requests: what mmsrv/baselines.c reads (every entry, checked
 * there against the sender's region). */
static void read_balloon(const mm_msg_balloon_t *m, size_t len)
{
    CHECK(m->count >= 1 && m->count <= MM_BALLOON_PFNS_MAX);
    CHECK(len == mm__msg_balloon_length(m->count) && len <= MM_MSG_MAX_BYTES);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m->count; i++)
        sum += m->pfns[i];
    sink = sum;
}

static void read_fpr(const mm_msg_fpr_t *m, size_t len)
{
    CHECK(m->count >= 1 && m->count <= MM_FPR_BLOCKS_MAX);
    CHECK(len == mm__msg_fpr_length(m->count) && len <= MM_MSG_MAX_BYTES);
    for (uint32_t i = 0; i < m->count; i++)
        CHECK(m->addrs[i] % MM_CHUNK_SIZE == 0 && m->addrs[i] < MM_REGION_MAX_BYTES);
}

static void read_vmem(const mm_msg_vmem_t *m, size_t len)
{
    CHECK(len == sizeof *m);
    CHECK(m->addr % MM_CHUNK_SIZE == 0 && m->nb_blocks >= 1);
    /* The range cannot wrap: addr / 2 MiB + nb_blocks is what the host adds. */
    CHECK(m->addr / MM_CHUNK_SIZE + m->nb_blocks <= MM_REGION_MAX_BYTES / MM_CHUNK_SIZE);
}

static void read_reconnect(const mm_msg_reconnect_t *m, size_t len)
{
    CHECK(len == sizeof *m);
    CHECK(m->client_id != 0 && (m->flags & ~MM_RECONNECT_UFFD) == 0);
    CHECK(m->region_addr != 0 && m->region_addr % MM_FRAME_SIZE == 0);
    CHECK(m->region_bytes >= MM_CHUNK_SIZE && m->region_bytes <= MM_REGION_MAX_BYTES &&
          m->region_bytes % MM_CHUNK_SIZE == 0);
    /* The daemon compares the geometry with its record of the client. */
    CHECK(m->shared_bytes == mm_shared_bytes((uint32_t)(m->region_bytes / MM_CHUNK_SIZE)));
}

static void read_accepted(const void *buf, size_t len, int type)
{
    const mm_msg_hdr_t *hdr = buf;
    CHECK(type == hdr->type);
    CHECK(hdr->magic == MM_MSG_MAGIC && hdr->version == MM_PROTO_VERSION);
    CHECK(hdr->length == len);
    CHECK(strcmp(mm__msg_type_name(hdr->type), "unknown") != 0);
    switch (type) {
    case MM_MSG_HELLO:
        read_hello(buf, len);
        break;
    case MM_MSG_HELLO_REPLY:
        read_hello_reply(buf, len);
        break;
    case MM_MSG_INSTALL:
        read_install(buf, len);
        break;
    case MM_MSG_INSTALL_REPLY:
        read_install_reply(buf, len);
        break;
    case MM_MSG_BYE:
        CHECK(len == sizeof(mm_msg_bye_t));
        break;
    case MM_MSG_ERROR:
        read_error(buf, len);
        break;
    case MM_MSG_PAGING:
        read_paging(buf, len);
        break;
    case MM_MSG_BALLOON_INFLATE:
    case MM_MSG_BALLOON_DEFLATE:
        read_balloon(buf, len);
        break;
    case MM_MSG_FPR_REPORT:
        read_fpr(buf, len);
        break;
    case MM_MSG_VMEM_PLUG:
    case MM_MSG_VMEM_UNPLUG:
        read_vmem(buf, len);
        break;
    case MM_MSG_BASELINE_REPLY:
        CHECK(len == sizeof(mm_msg_baseline_reply_t));
        CHECK(((const mm_msg_baseline_reply_t *)buf)->status <= 0);
        break;
    case MM_MSG_RECONNECT:
        read_reconnect(buf, len);
        break;
    case MM_MSG_RECONNECT_REPLY:
        CHECK(len == sizeof(mm_msg_reconnect_reply_t));
        CHECK(((const mm_msg_reconnect_reply_t *)buf)->status == 0);
        break;
    case MM_MSG_STOPPING:
        CHECK(len == sizeof(mm_msg_stopping_t));
        break;
    default:
        fprintf(stderr, "fuzz_wire: type %d accepted: add its reads to fuzz_wire.c\n", type);
        abort();
    }
}

/* The error must be the one wire.h documents for the header's state. */
static void check_rejected(const void *buf, size_t len, int err)
{
    CHECK(err == -EBADMSG || err == -EPROTONOSUPPORT || err == -EPROTO || err == -EINVAL);
    if (len < sizeof(mm_msg_hdr_t)) {
        CHECK(err == -EBADMSG);
        return;
    }
    const mm_msg_hdr_t *hdr = buf;
    bool bad_header = hdr->magic != MM_MSG_MAGIC || hdr->length != len;
    CHECK(bad_header == (err == -EBADMSG));
    if (bad_header)
        return;
    CHECK((hdr->version != MM_PROTO_VERSION) == (err == -EPROTONOSUPPORT));
    bool known = false;
    for (size_t i = 0; i < KNOWN_TYPES; i++)
        known |= hdr->type == known_types[i];
    if (!known && hdr->version == MM_PROTO_VERSION)
        CHECK(err == -EPROTO);
    /* The name table and the gate know the same types. */
    CHECK(known == (strcmp(mm__msg_type_name(hdr->type), "unknown") != 0));
    /* What mmsrv's reject() reads to answer. */
    sink = hdr->seq + hdr->version;
}

/* Check len bytes from an exact-size heap copy; the same answer twice. */
static int check_copy(const void *bytes, size_t len)
{
    void *buf = malloc(len ? len : 1); /* malloc's alignment suits every message */
    CHECK(buf);
    if (len)
        memcpy(buf, bytes, len);
    int type = mm__msg_check(buf, len);
    CHECK(mm__msg_check(buf, len) == type);
    if (type > 0)
        read_accepted(buf, len, type);
    else
        check_rejected(buf, len, type);
    free(buf);
    return type;
}

/* ---- 2. Field values ----------------------------------------------------- */

/* A printable character from any byte. */
static char printable(unsigned char b)
{
    return (char)(0x20 + b % 95);
}

/* Make b a valid message of type from the bytes already there; its length. */
static size_t make_valid(msg_buf_t *b, uint16_t type)
{
    size_t len = 0;
    switch (type) {
    case MM_MSG_HELLO: {
        mm_msg_hello_t *m = &b->hello;
        size_t n = 1 + (unsigned char)m->name[MM_NAME_MAX - 1] % (MM_NAME_MAX - 1);
        for (size_t i = 0; i < n; i++)
            m->name[i] = printable((unsigned char)m->name[i]);
        memset(m->name + n, 0, MM_NAME_MAX - n);
        m->max_bytes = MM_CHUNK_SIZE + m->max_bytes % (MM_REGION_MAX_BYTES - MM_CHUNK_SIZE + 1);
        m->min_bytes %= m->max_bytes + 1;
        m->weight = 1 + m->weight % 10000;
        m->kind %= MM_KIND_GUEST + 1;
        m->numa_node = (int32_t)((uint32_t)m->numa_node % 1025) - 1;
        m->flags =
            m->kind == MM_KIND_GUEST ? m->flags % MM_DRIVER_COUNT << MM_HELLO_DRIVER_SHIFT : 0;
        len = sizeof *m;
        break;
    }
    case MM_MSG_HELLO_REPLY:
        if (b->hello_reply.status > 0)
            b->hello_reply.status = -b->hello_reply.status;
        len = sizeof b->hello_reply;
        break;
    case MM_MSG_INSTALL:
        b->install.count = 1 + b->install.count % MM_INSTALL_MAX;
        len = mm__msg_install_length(b->install.count);
        break;
    case MM_MSG_INSTALL_REPLY:
        if (b->install_reply.status > 0)
            b->install_reply.status = -b->install_reply.status;
        b->install_reply.count %= MM_INSTALL_MAX + 1;
        len = mm__msg_install_length(b->install_reply.count);
        break;
    case MM_MSG_BYE:
        len = sizeof b->bye;
        break;
    case MM_MSG_ERROR: {
        mm_msg_error_t *e = &b->error;
        if (e->status >= 0)
            e->status = -1 - e->status;
        size_t n = (unsigned char)e->text[MM_ERROR_TEXT_MAX - 1] % MM_ERROR_TEXT_MAX;
        for (size_t i = 0; i < n; i++)
            e->text[i] = printable((unsigned char)e->text[i]);
        memset(e->text + n, 0, MM_ERROR_TEXT_MAX - n);
        len = sizeof *e;
        break;
    }
    case MM_MSG_PAGING:
        b->paging.region_addr &= ~(uint64_t)(MM_FRAME_SIZE - 1);
        if (b->paging.region_addr == 0)
            b->paging.region_addr = MM_FRAME_SIZE;
        b->paging.flags = 0;
        len = sizeof b->paging;
        break;
    case MM_MSG_BALLOON_INFLATE:
    case MM_MSG_BALLOON_DEFLATE:
        b->balloon.count = 1 + b->balloon.count % MM_BALLOON_PFNS_MAX;
        len = mm__msg_balloon_length(b->balloon.count);
        break;
    case MM_MSG_FPR_REPORT:
        b->fpr.count = 1 + b->fpr.count % MM_FPR_BLOCKS_MAX;
        for (uint32_t i = 0; i < b->fpr.count; i++)
            b->fpr.addrs[i] =
                b->fpr.addrs[i] % (MM_REGION_MAX_BYTES / MM_CHUNK_SIZE) * MM_CHUNK_SIZE;
        len = mm__msg_fpr_length(b->fpr.count);
        break;
    case MM_MSG_VMEM_PLUG:
    case MM_MSG_VMEM_UNPLUG: {
        uint64_t blocks = MM_REGION_MAX_BYTES / MM_CHUNK_SIZE;
        uint64_t first = b->vmem.addr % blocks;
        b->vmem.addr = first * MM_CHUNK_SIZE;
        b->vmem.nb_blocks = 1 + b->vmem.nb_blocks % (blocks - first);
        len = sizeof b->vmem;
        break;
    }
    case MM_MSG_BASELINE_REPLY:
        if (b->baseline_reply.status > 0)
            b->baseline_reply.status = -b->baseline_reply.status;
        len = sizeof b->baseline_reply;
        break;
    case MM_MSG_RECONNECT: {
        mm_msg_reconnect_t *m = &b->reconnect;
        if (m->client_id == 0)
            m->client_id = 1;
        m->flags &= MM_RECONNECT_UFFD;
        m->region_addr &= ~(uint64_t)(MM_FRAME_SIZE - 1);
        if (m->region_addr == 0)
            m->region_addr = MM_FRAME_SIZE;
        m->region_bytes =
            MM_CHUNK_SIZE * (1 + m->region_bytes % (MM_REGION_MAX_BYTES / MM_CHUNK_SIZE));
        m->shared_bytes = mm_shared_bytes((uint32_t)(m->region_bytes / MM_CHUNK_SIZE));
        len = sizeof *m;
        break;
    }
    case MM_MSG_RECONNECT_REPLY:
        b->reconnect_reply.status = 0;
        len = sizeof b->reconnect_reply;
        break;
    case MM_MSG_STOPPING:
        len = sizeof b->stopping;
        break;
    default:
        abort();
    }
    mm__msg_init(&b->hdr, type, (uint32_t)len, b->hdr.seq);
    return len;
}

/* Break one field of a valid message of type (sub picks which); returns
 * false for a type without such fields (a bye). */
static bool break_field(msg_buf_t *b, uint16_t type, uint32_t sub)
{
    uint32_t k = sub >> 4;
    switch (type) {
    case MM_MSG_HELLO: {
        mm_msg_hello_t *m = &b->hello;
        size_t n = strlen(m->name);
        switch (sub % 12) {
        case 0: /* unterminated */
            for (size_t i = n; i < MM_NAME_MAX; i++)
                m->name[i] = 'x';
            break;
        case 1: /* empty */
            m->name[0] = 0;
            break;
        case 2: /* a control or non-ASCII character */
            m->name[k % n] = (char)(k & 0x100 ? 0x7f + k % 0x81 : 1 + k % 0x1f);
            break;
        case 3:
            m->max_bytes = k % MM_CHUNK_SIZE;
            m->min_bytes = 0;
            break;
        case 4:
            m->max_bytes = MM_REGION_MAX_BYTES + 1 + k;
            break;
        case 5:
            m->min_bytes = m->max_bytes + 1 + k % 4096;
            break;
        case 6:
            m->weight = 0;
            break;
        case 7:
            m->weight = 10001 + k;
            break;
        case 8:
            m->kind = MM_KIND_GUEST + 1 + k;
            break;
        case 9:
            m->numa_node = -2 - (int32_t)(k % 1000000);
            break;
        case 10:
            m->numa_node = 1024 + (int32_t)(k % 1000000);
            break;
        default: {
            /* A bit outside the driver field, or a driver that does not
             * exist. */
            uint32_t bit = k % 32;
            m->flags = bit >= MM_HELLO_DRIVER_SHIFT && bit < MM_HELLO_DRIVER_SHIFT + 4
                           ? (MM_DRIVER_COUNT + k % (16 - MM_DRIVER_COUNT)) << MM_HELLO_DRIVER_SHIFT
                           : 1u << bit;
            break;
        }
        }
        return true;
    }
    case MM_MSG_HELLO_REPLY:
        b->hello_reply.status = 1 + (int32_t)(k % 1000000);
        return true;
    case MM_MSG_INSTALL:
        /* The count is checked before the length, so the length stays. */
        b->install.count = sub % 2 ? 0 : MM_INSTALL_MAX + 1 + k;
        return true;
    case MM_MSG_INSTALL_REPLY:
        if (sub % 2)
            b->install_reply.status = 1 + (int32_t)(k % 1000000);
        else
            b->install_reply.count = MM_INSTALL_MAX + 1 + k;
        return true;
    case MM_MSG_ERROR: {
        mm_msg_error_t *e = &b->error;
        size_t n = strlen(e->text);
        switch (sub % 3) {
        case 0:
            e->status = (int32_t)(k % 1000000);
            break;
        case 1:
            for (size_t i = n; i < MM_ERROR_TEXT_MAX; i++)
                e->text[i] = 'x';
            break;
        default:
            e->text[n ? k % n : 0] = (char)(k & 0x100 ? 0x7f + k % 0x81 : 1 + k % 0x1f);
            break;
        }
        return true;
    }
    case MM_MSG_BALLOON_INFLATE:
    case MM_MSG_BALLOON_DEFLATE:
        /* The count is checked before the length, so the length stays. */
        b->balloon.count = sub % 2 ? 0 : MM_BALLOON_PFNS_MAX + 1 + k;
        return true;
    case MM_MSG_FPR_REPORT:
        if (sub % 2)
            b->fpr.count = sub % 4 == 1 ? 0 : MM_FPR_BLOCKS_MAX + 1 + k;
        else
            b->fpr.addrs[k % b->fpr.count] |= 1 + k % (MM_CHUNK_SIZE - 1);
        return true;
    case MM_MSG_VMEM_PLUG:
    case MM_MSG_VMEM_UNPLUG:
        switch (sub % 3) {
        case 0:
            b->vmem.addr |= 1 + k % (MM_CHUNK_SIZE - 1);
            break;
        case 1:
            b->vmem.nb_blocks = 0;
            break;
        default:
            b->vmem.nb_blocks = MM_REGION_MAX_BYTES / MM_CHUNK_SIZE + 1 + k;
            break;
        }
        return true;
    case MM_MSG_BASELINE_REPLY:
        b->baseline_reply.status = 1 + (int32_t)(k % 1000000);
        return true;
    case MM_MSG_PAGING:
        switch (sub % 3) {
        case 0:
            b->paging.flags = 1ull << (k % 64);
            break;
        case 1:
            b->paging.region_addr |= 1 + k % (MM_FRAME_SIZE - 1);
            break;
        default:
            b->paging.region_addr = 0;
            break;
        }
        return true;
    case MM_MSG_RECONNECT:
        switch (sub % 5) {
        case 0:
            b->reconnect.client_id = 0;
            break;
        case 1:
            b->reconnect.flags |= 2u << (k % 31);
            break;
        case 2:
            b->reconnect.region_addr |= 1 + k % (MM_FRAME_SIZE - 1);
            break;
        case 3:
            b->reconnect.region_bytes += 1 + k % (MM_CHUNK_SIZE - 1);
            break;
        default:
            b->reconnect.shared_bytes += MM_FRAME_SIZE * (1 + k % 1000);
            break;
        }
        return true;
    case MM_MSG_RECONNECT_REPLY:
        b->reconnect_reply.status = 1 + (int32_t)(k % 1000000) * (sub % 2 ? 1 : -1);
        if (b->reconnect_reply.status == 0)
            b->reconnect_reply.status = 1;
        return true;
    default:
        return false;
    }
}

enum breakage {
    BREAK_NONE,
    BREAK_MAGIC,     /* -EBADMSG */
    BREAK_LENGTH,    /* the length field disagrees with what came: -EBADMSG */
    BREAK_TRUNCATED, /* fewer bytes came than the length says: -EBADMSG */
    BREAK_VERSION,   /* -EPROTONOSUPPORT */
    BREAK_TYPE,      /* unknown type: -EPROTO */
    BREAK_LONGER,    /* consistent header, too long for the type: -EPROTO */
    BREAK_SHORTER,   /* consistent header, too short for the type: -EPROTO */
    BREAK_FIELD,     /* a field out of range: -EINVAL */
    BREAKAGES
};

static void fuzz_built(const uint8_t *data, size_t size)
{
    if (size < 4)
        return;
    uint16_t type = known_types[data[0] % KNOWN_TYPES];
    enum breakage how = (enum breakage)(data[1] % BREAKAGES);
    uint32_t sub = (uint32_t)data[2] | (uint32_t)data[3] << 8;
    msg_buf_t b;
    memset(&b, 0, sizeof b);
    memcpy(b.bytes, data + 4, size - 4 < MM_MSG_MAX_BYTES ? size - 4 : MM_MSG_MAX_BYTES);

    size_t len = make_valid(&b, type);
    CHECK(check_copy(b.bytes, len) == type);

    int want = type;
    switch (how) {
    case BREAK_NONE:
        break;
    case BREAK_MAGIC:
        b.hdr.magic ^= 1u << sub % 32;
        want = -EBADMSG;
        break;
    case BREAK_LENGTH:
        b.hdr.length += 1 + sub;
        want = -EBADMSG;
        break;
    case BREAK_TRUNCATED:
        len -= 1 + sub % len;
        want = -EBADMSG;
        break;
    case BREAK_VERSION:
        b.hdr.version = (uint16_t)(MM_PROTO_VERSION + 1 + sub % 0xfffe);
        want = -EPROTONOSUPPORT;
        break;
    case BREAK_TYPE:
        b.hdr.type = sub % 2 ? 0 : (uint16_t)(0x8000 | sub);
        want = -EPROTO;
        break;
    case BREAK_LONGER:
        len += 1 + sub % 64;
        b.hdr.length = (uint32_t)len;
        want = -EPROTO;
        break;
    case BREAK_SHORTER:
        if (len == sizeof(mm_msg_hdr_t))
            return; /* a bye: nothing shorter has a header */
        len = sizeof(mm_msg_hdr_t) + sub % (len - sizeof(mm_msg_hdr_t));
        b.hdr.length = (uint32_t)len;
        want = -EPROTO;
        break;
    case BREAK_FIELD:
        if (break_field(&b, type, sub))
            want = -EINVAL;
        break;
    default:
        abort();
    }
    int got = check_copy(b.bytes, len);
    if (got != want) {
        fprintf(stderr, "fuzz_wire: %s message, breakage %d (sub %u): got %d, want %d\n",
                mm__msg_type_name(type), (int)how, (unsigned)sub, got, want);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_copy(data, size);
    fuzz_built(data, size);
    return 0;
}
