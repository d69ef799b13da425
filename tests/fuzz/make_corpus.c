/*
 * Writes the seed corpus of the libFuzzer targets: valid messages of every
 * type (and a few near misses) for fuzz_wire, and for fuzz_shared_state
 * scripts over a formatted state (grant, allocate, free, reclaim, discard,
 * hostile rewrites) and two whole shared states. Deterministic, so that the
 * committed files can be regenerated and compared:
 *
 *   build-fuzz/bin/make_corpus tests/fuzz/corpus
 *
 * writes tests/fuzz/corpus/fuzz_wire/<name> and .../fuzz_shared_state/<name>
 * (the directories must exist). Exits non-zero on any error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mm/protocol.h>

#include "frames.h"
#include "fuzz_shared_state.h"
#include "wire.h"

#define MIB(x) ((uint64_t)(x) << 20)

static const char *out_dir;

static void write_seed(const char *target, const char *name, const void *bytes, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* ---- fuzz_wire ------------------------------------------------------------ */

static void wire_seeds(void)
{
    mm_msg_hello_t hello = {0};
    mm__msg_init(&hello.hdr, MM_MSG_HELLO, sizeof hello, 1);
    strcpy(hello.name, "seed-client");
    hello.max_bytes = MIB(256);
    hello.min_bytes = MIB(64);
    hello.weight = 100;
    hello.kind = MM_KIND_RUNTIME;
    hello.numa_node = -1;
    write_seed("fuzz_wire", "hello", &hello, sizeof hello);

    /* One chunk: the target formats and views its geometry. */
    mm_msg_hello_t guest = hello;
    strcpy(guest.name, "guest");
    guest.max_bytes = MM_CHUNK_SIZE;
    guest.min_bytes = 0;
    guest.kind = MM_KIND_GUEST;
    guest.numa_node = 0;
    write_seed("fuzz_wire", "hello_guest_1chunk", &guest, sizeof guest);

    mm_msg_hello_t balloon_guest = guest;
    strcpy(balloon_guest.name, "balloon-guest");
    balloon_guest.flags = MM_DRIVER_BALLOON << MM_HELLO_DRIVER_SHIFT;
    write_seed("fuzz_wire", "hello_guest_balloon", &balloon_guest, sizeof balloon_guest);

    mm_msg_balloon_t inflate = {.count = 3, .pfns = {1, 2, 511}};
    mm__msg_init(&inflate.hdr, MM_MSG_BALLOON_INFLATE, mm__msg_balloon_length(3), 5);
    write_seed("fuzz_wire", "balloon_inflate", &inflate, inflate.hdr.length);
    mm_msg_balloon_t full = {.count = MM_BALLOON_PFNS_MAX};
    for (uint32_t i = 0; i < MM_BALLOON_PFNS_MAX; i++)
        full.pfns[i] = i * 7;
    mm__msg_init(&full.hdr, MM_MSG_BALLOON_DEFLATE, mm__msg_balloon_length(MM_BALLOON_PFNS_MAX), 6);
    write_seed("fuzz_wire", "balloon_deflate_max", &full, full.hdr.length);

    mm_msg_fpr_t report = {.count = 2, .addrs = {0, 3 * (uint64_t)MM_CHUNK_SIZE}};
    mm__msg_init(&report.hdr, MM_MSG_FPR_REPORT, mm__msg_fpr_length(2), 7);
    write_seed("fuzz_wire", "fpr_report", &report, report.hdr.length);

    mm_msg_vmem_t unplug = {.addr = 4 * (uint64_t)MM_CHUNK_SIZE, .nb_blocks = 2};
    mm__msg_init(&unplug.hdr, MM_MSG_VMEM_UNPLUG, sizeof unplug, 8);
    write_seed("fuzz_wire", "vmem_unplug", &unplug, sizeof unplug);

    mm_msg_baseline_reply_t done = {.done = 2};
    mm__msg_init(&done.hdr, MM_MSG_BASELINE_REPLY, sizeof done, 8);
    write_seed("fuzz_wire", "baseline_reply", &done, sizeof done);

    mm_msg_hello_t old = hello;
    old.hdr.version = MM_PROTO_VERSION + 1;
    write_seed("fuzz_wire", "hello_other_version", &old, sizeof old);

    mm_msg_hello_reply_t reply = {0};
    mm__msg_init(&reply.hdr, MM_MSG_HELLO_REPLY, sizeof reply, 1);
    reply.client_id = 7;
    reply.region_bytes = MIB(256);
    reply.shared_bytes = mm_shared_bytes(128);
    reply.chunk_count = 128;
    write_seed("fuzz_wire", "hello_reply", &reply, sizeof reply);

    mm_msg_install_t install = {0};
    install.slot = 1;
    install.count = 1;
    install.chunks[0] = 5;
    mm__msg_init(&install.hdr, MM_MSG_INSTALL, mm__msg_install_length(1), 2);
    write_seed("fuzz_wire", "install_1", &install, install.hdr.length);

    install.count = MM_INSTALL_MAX;
    for (uint32_t i = 0; i < MM_INSTALL_MAX; i++)
        install.chunks[i] = i * 3;
    mm__msg_init(&install.hdr, MM_MSG_INSTALL, mm__msg_install_length(MM_INSTALL_MAX), 3);
    write_seed("fuzz_wire", "install_max", &install, install.hdr.length);

    mm_msg_install_reply_t granted = {0};
    granted.count = 2;
    granted.chunks[0] = 5;
    granted.chunks[1] = 6;
    mm__msg_init(&granted.hdr, MM_MSG_INSTALL_REPLY, mm__msg_install_length(2), 2);
    write_seed("fuzz_wire", "install_reply", &granted, granted.hdr.length);

    mm_msg_install_reply_t none = {0};
    none.status = -ENOMEM;
    mm__msg_init(&none.hdr, MM_MSG_INSTALL_REPLY, mm__msg_install_length(0), 4);
    write_seed("fuzz_wire", "install_reply_none", &none, none.hdr.length);

    mm_msg_bye_t bye = {0};
    mm__msg_init(&bye.hdr, MM_MSG_BYE, sizeof bye, 5);
    write_seed("fuzz_wire", "bye", &bye, sizeof bye);
    write_seed("fuzz_wire", "bye_truncated", &bye, sizeof bye - 4);

    mm_msg_error_t error = {0};
    mm__msg_init(&error.hdr, MM_MSG_ERROR, sizeof error, 2);
    error.status = -EINVAL;
    strcpy(error.text, "chunk 9 outside the region");
    write_seed("fuzz_wire", "error", &error, sizeof error);

    mm_msg_paging_t paging = {0};
    mm__msg_init(&paging.hdr, MM_MSG_PAGING, sizeof paging, 6);
    paging.region_addr = 0x7f0000000000ull;
    write_seed("fuzz_wire", "paging", &paging, sizeof paging);
}

/* ---- fuzz_shared_state ------------------------------------------------- */

typedef struct seed {
    uint8_t bytes[3 * 4096 + 64];
    size_t len;
} seed_t;

static void put(seed_t *s, uint64_t v, size_t n)
{
    if (s->len + n > sizeof s->bytes) {
        fprintf(stderr, "make_corpus: seed too long\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        s->bytes[s->len++] = (uint8_t)(v >> (8 * i));
}

/* Ops mode header: the chunk count (1..FUZZ_MAX_CHUNKS) and flags. */
static void ops_header(seed_t *s, uint32_t chunks, uint32_t flags)
{
    s->len = 0;
    put(s, 0, 1);
    put(s, chunks - 1, 1);
    put(s, flags, 1);
}

static void op(seed_t *s, enum fuzz_op code, uint32_t flag)
{
    put(s, (uint64_t)code | flag, 1);
}

static void ops_seeds(void)
{
    seed_t s;

    ops_header(&s, 3, 0);
    write_seed("fuzz_shared_state", "ops_formatted_only", s.bytes, s.len);

    /* Grant two chunks, allocate small, aligned and large runs, free them,
     * and let the host take the chunks back. */
    ops_header(&s, 3, 0);
    op(&s, FUZZ_OP_INSTALL, 0), put(&s, 0, 1), put(&s, 1, 1);
    op(&s, FUZZ_OP_INSTALL, 0), put(&s, 1, 1), put(&s, 0, 1);
    op(&s, FUZZ_OP_ALLOC, 0), put(&s, 1, 2), put(&s, 0, 1);
    op(&s, FUZZ_OP_ALLOC, 0), put(&s, 64, 2), put(&s, 6, 1);
    op(&s, FUZZ_OP_ALLOC, 0), put(&s, 300, 2), put(&s, 6, 1);
    op(&s, FUZZ_OP_QUERY, 0), put(&s, 0, 1);
    op(&s, FUZZ_OP_USAGE, 0);
    op(&s, FUZZ_OP_FREE_ALLOCATED, 0), put(&s, 0, 1);
    op(&s, FUZZ_OP_FREE_ALLOCATED, 0), put(&s, 1, 1);
    op(&s, FUZZ_OP_FREE_ALLOCATED, 0), put(&s, 2, 1);
    op(&s, FUZZ_OP_RECLAIM, 0), put(&s, 1, 1);
    op(&s, FUZZ_OP_RECLAIM, FUZZ_OP_FLAG), put(&s, 0, 1);
    op(&s, FUZZ_OP_REPAIR, 0), put(&s, 0, 1);
    op(&s, FUZZ_OP_USAGE, 0);
    write_seed("fuzz_shared_state", "ops_grant_alloc_free_reclaim", s.bytes, s.len);

    /* A whole-chunk run made discardable, pinned, then taken. */
    ops_header(&s, 3, 0);
    op(&s, FUZZ_OP_INSTALL, 0), put(&s, 2, 1), put(&s, 0, 1);
    op(&s, FUZZ_OP_FIND_RUN, 0), put(&s, 1, 1), put(&s, 0, 1);
    op(&s, FUZZ_OP_ALLOC_CHUNKS, 0), put(&s, 2, 1), put(&s, 1, 1), put(&s, 0, 2), put(&s, 0, 1);
    op(&s, FUZZ_OP_DISCARDABLE, FUZZ_OP_FLAG), put(&s, 2, 1);
    op(&s, FUZZ_OP_PIN, 0), put(&s, 2, 1);
    op(&s, FUZZ_OP_DISCARD, 0), put(&s, 2, 1);
    op(&s, FUZZ_OP_UNPIN, 0), put(&s, 2, 1);
    op(&s, FUZZ_OP_QUERY, 0), put(&s, 2, 1);
    op(&s, FUZZ_OP_DISCARD, 0), put(&s, 2, 1);
    op(&s, FUZZ_OP_INSTALL, 0), put(&s, 2, 1), put(&s, 0xff, 1), put(&s, 1000, 4);
    write_seed("fuzz_shared_state", "ops_discardable", s.bytes, s.len);

    /* A hostile client: words and bitmaps that lie, bytes poked into the
     * geometry after the view, chunk numbers past the end. */
    ops_header(&s, 4, 0);
    op(&s, FUZZ_OP_CLIENT_WORD, 0), put(&s, 0, 1), put(&s, MM_CHUNK_FRAMES, 4);
    op(&s, FUZZ_OP_CLIENT_FILL, 0), put(&s, 0, 1), put(&s, 1, 1);
    op(&s, FUZZ_OP_RECLAIM, 0), put(&s, 0, 1);
    op(&s, FUZZ_OP_CLIENT_FILL, 0), put(&s, 0, 1), put(&s, 0, 1);
    op(&s, FUZZ_OP_RECLAIM, 0), put(&s, 0, 1);
    op(&s, FUZZ_OP_CLIENT_WORD, FUZZ_OP_FLAG), put(&s, 1, 1), put(&s, 0x3ff, 4);
    op(&s, FUZZ_OP_QUERY, 0), put(&s, 1, 1);
    op(&s, FUZZ_OP_REPAIR, 0), put(&s, 1, 1);
    op(&s, FUZZ_OP_CLIENT_WORD, 0), put(&s, 2, 1), put(&s, MM_CW_DISCARDABLE | 700, 4);
    op(&s, FUZZ_OP_DISCARD, 0), put(&s, 2, 1);
    op(&s, FUZZ_OP_CLIENT_BITMAP, 0), put(&s, 3, 1), put(&s, 3, 1), put(&s, 0x8000000000000001, 8);
    op(&s, FUZZ_OP_CLIENT_POKE, 0), put(&s, offsetof(mm_control_t, chunk_count), 2),
        put(&s, 0xff, 1);
    op(&s, FUZZ_OP_RECLAIM, 0), put(&s, 0xff, 1);
    op(&s, FUZZ_OP_INSTALL, 0), put(&s, 0xf0, 1), put(&s, 1, 1);
    op(&s, FUZZ_OP_QUERY, 0), put(&s, 0xf1, 1);
    op(&s, FUZZ_OP_THREAD, 0), put(&s, 5, 1), put(&s, 3, 1), put(&s, 0, 1);
    op(&s, FUZZ_OP_ALLOC, 0), put(&s, 8, 2), put(&s, 3, 1);
    op(&s, FUZZ_OP_BORROW, 0), put(&s, 8, 2), put(&s, 3, 1);
    op(&s, FUZZ_OP_FREE, 0), put(&s, 5, 2), put(&s, 600, 2);
    op(&s, FUZZ_OP_THREAD, FUZZ_OP_FLAG);
    op(&s, FUZZ_OP_USAGE, 0);
    write_seed("fuzz_shared_state", "ops_hostile_client", s.bytes, s.len);

    /* The geometry given explicitly (as formatted) and the view's argument
     * checks, then one grant. */
    uint8_t fmt[8192] __attribute__((aligned(64))) = {0};
    mm__frames_format(fmt, 2 * (uint64_t)MM_CHUNK_SIZE, 2);
    ops_header(&s, 2, FUZZ_FLAG_GEOMETRY | FUZZ_FLAG_VIEW_ARGS | FUZZ_FLAG_BAD_ARGS);
    for (size_t i = 0; i < offsetof(mm_control_t, pad0); i++)
        put(&s, fmt[i], 1);
    put(&s, 0, 8);
    put(&s, 0, 8);
    op(&s, FUZZ_OP_INSTALL, 0), put(&s, 1, 1), put(&s, 2, 1);
    op(&s, FUZZ_OP_ALLOC, 0), put(&s, 512, 2), put(&s, 9, 1);
    write_seed("fuzz_shared_state", "ops_geometry_given", s.bytes, s.len);
}

/* Raw mode: region_bytes, then a whole shared state of chunks chunks, with
 * some chunks granted and used when used is set. */
static void raw_seed(const char *name, uint32_t chunks, int used)
{
    uint64_t shared_bytes = mm_shared_bytes(chunks),
             region_bytes = chunks * (uint64_t)MM_CHUNK_SIZE;
    void *shared = NULL;
    if (posix_memalign(&shared, 64, shared_bytes) != 0)
        exit(1);
    memset(shared, 0, shared_bytes);
    mm__frames_format(shared, region_bytes, chunks);
    if (used) {
        mm_frames_t f;
        mm_frames_thread_t t = {.slot = 1, .chunk = UINT32_MAX};
        uint64_t frame;
        if (mm__frames_view(&f, shared, shared_bytes, region_bytes) != 0)
            exit(1);
        mm__frames_install(&f, 0, 1);
        mm__frames_install(&f, 1, 0);
        if (mm__frames_alloc(&f, &t, 5, 1, &frame) || mm__frames_alloc(&f, &t, 100, 64, &frame) ||
            mm__frames_alloc_chunks(&f, 1, 1, 0, 0) || mm__frames_set_discardable(&f, 1, true))
            exit(1);
    }
    uint8_t *out = malloc(9 + shared_bytes);
    if (!out)
        exit(1);
    out[0] = 1;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(region_bytes >> (8 * i));
    memcpy(out + 9, shared, shared_bytes);
    write_seed("fuzz_shared_state", name, out, 9 + shared_bytes);
    free(out);
    free(shared);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (holding fuzz_wire/ and fuzz_shared_state/)\n",
                argv[0]);
        return 2;
    }
    out_dir = argv[1];
    wire_seeds();
    ops_seeds();
    raw_seed("raw_1chunk_formatted", 1, 0);
    raw_seed("raw_3chunks_in_use", 3, 1);
    return 0;
}
