/*
 * mm wire format and shared-state layout.
 *
 * This header is the contract between mmsrv and its clients: the messages on
 * the client socket (SOCK_SEQPACKET, fixed layouts, one protocol version) and
 * the layout of the shared-state memfd that both sides map (a control block
 * followed by the frame allocator's metadata). Everything a peer writes here
 * is untrusted by the other side: readers validate, writers only CAS.
 */
#ifndef MM_PROTOCOL_H
#define MM_PROTOCOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Geometry ---------------------------------------------------------- */

#define MM_FRAME_SHIFT        12
#define MM_FRAME_SIZE         (1u << MM_FRAME_SHIFT) /* 4 KiB */
#define MM_CHUNK_SHIFT        21
#define MM_CHUNK_SIZE         (1u << MM_CHUNK_SHIFT)          /* 2 MiB */
#define MM_CHUNK_FRAMES       (MM_CHUNK_SIZE / MM_FRAME_SIZE) /* 512 */
#define MM_CHUNK_BITMAP_WORDS (MM_CHUNK_FRAMES / 64)          /* 8 */

/* Largest region a client may ask for (1 TiB = 524,288 chunks). */
#define MM_REGION_MAX_BYTES (1ull << 40)

/* ---- Chunk word --------------------------------------------------------
 *
 * One 32-bit word per chunk, updated only by compare-and-swap so that all its
 * fields change together:
 *
 *   bits  0..9   free frames in the chunk (0..512; 513..1023 are impossible)
 *   bit  10      RECLAIMED: the host took the chunk back; allocation fails
 *   bit  11      DISCARDABLE: content may be dropped by the host
 *   bits 12..17  reserver: 0 = none, else the reservation slot (1..63)
 *   bits 18..23  pin count (readers of a discardable chunk, 0..63)
 *   bits 24..31  generation (mod 256), raised on every reclaim and install
 *
 * With one bit per frame that is 1 + 32/512 = 1.0625 bits of metadata per
 * 4 KiB frame. Why the widths: the count needs 10 bits (513 values). Slots
 * past 63 wrap (threads sharing a slot share its chunk; every count change is
 * still one CAS, so sharing costs contention, never correctness). A pin that
 * would pass 63 must be refused; that reader reads under a generation check. The
 * generation is only compared for equality across one short read: to be
 * fooled, 256 reclaims and installs of one chunk (each a host hole punch or a
 * client install round trip, 25 us or more) must fall inside it, so a reader
 * that may sleep that long (3 ms or more) pins instead.
 *
 * Invariant for an honest client: free == popcount(zero bits of the chunk's
 * frame bitmap) once no allocation or free is in flight. An allocation lowers
 * the count before it sets a bit; a free clears its bit before it raises the
 * count; so free == 512 means every bit is clear.
 */
#define MM_CW_FREE_MASK      0x3ffu
#define MM_CW_RECLAIMED      (1u << 10)
#define MM_CW_DISCARDABLE    (1u << 11)
#define MM_CW_RESERVER_SHIFT 12
#define MM_CW_RESERVER_MASK  (0x3fu << MM_CW_RESERVER_SHIFT)
#define MM_CW_PIN_SHIFT      18
#define MM_CW_PIN_MASK       (0x3fu << MM_CW_PIN_SHIFT)
#define MM_CW_PIN_MAX        63u
#define MM_CW_GEN_SHIFT      24
#define MM_CW_GEN_MASK       (0xffu << MM_CW_GEN_SHIFT)
#define MM_RESERVER_SLOTS    63u

_Static_assert(MM_CHUNK_FRAMES <= MM_CW_FREE_MASK, "the count field holds 0..512");
_Static_assert(MM_RESERVER_SLOTS == MM_CW_RESERVER_MASK >> MM_CW_RESERVER_SHIFT,
               "every slot fits the reserver field");
/* A sum of masks equals their union only when no two share a bit. */
_Static_assert((uint64_t)MM_CW_FREE_MASK + MM_CW_RECLAIMED + MM_CW_DISCARDABLE +
                       MM_CW_RESERVER_MASK + MM_CW_PIN_MASK + MM_CW_GEN_MASK ==
                   0xffffffffu,
               "the fields tile the word without overlap");

static inline uint32_t mm_cw_free(uint32_t w)
{
    return w & MM_CW_FREE_MASK;
}
static inline uint32_t mm_cw_reserver(uint32_t w)
{
    return (w & MM_CW_RESERVER_MASK) >> MM_CW_RESERVER_SHIFT;
}
static inline uint32_t mm_cw_pins(uint32_t w)
{
    return (w & MM_CW_PIN_MASK) >> MM_CW_PIN_SHIFT;
}
static inline uint32_t mm_cw_gen(uint32_t w)
{
    return w >> MM_CW_GEN_SHIFT;
}

/* ---- Control block -----------------------------------------------------
 *
 * The first 4 KiB of the shared state. The host writes the geometry once at
 * creation and the "host" section afterwards; the client writes only the
 * "client" section. Each side reads the other's section as untrusted input.
 */
#define MM_SHARED_MAGIC   0x4d4d5348u /* "MMSH" */
#define MM_LAYOUT_VERSION 2u          /* 2: 32-bit chunk words */
#define MM_CONTROL_BYTES  4096u

/* Reasons carried by a revocation request. */
enum mm_revoke_reason {
    MM_REVOKE_CAPACITY = 1, /* the host's capacity was lowered */
    MM_REVOKE_CLIENT = 2,   /* another client needs memory */
    MM_REVOKE_ADMIN = 3,    /* the administrator asked */
};

/* Pressure levels published by the host. */
enum mm_pressure {
    MM_PRESSURE_NONE = 0,
    MM_PRESSURE_LOW = 1, /* at or above target: do not grow */
    MM_PRESSURE_HIGH = 2 /* above target: give memory back */
};

typedef struct mm_control {
    /* Geometry, written by the host before the client maps the state. */
    uint32_t magic;
    uint32_t layout_version;
    uint32_t chunk_count;
    uint32_t reserved0;
    uint64_t region_bytes;
    uint64_t chunk_words_offset; /* from the start of the shared state: 32-bit words */
    uint64_t bitmap_offset;      /* MM_CHUNK_BITMAP_WORDS 64-bit words per chunk */
    uint64_t shared_bytes;
    uint8_t pad0[64 - 48];

    /* Host section. revoke_seq is written last, with release order. */
    _Atomic uint64_t target_bytes;
    _Atomic uint32_t pressure;
    uint32_t pad1;
    _Atomic uint64_t revoke_bytes;
    _Atomic uint64_t revoke_deadline_ns; /* CLOCK_MONOTONIC */
    _Atomic uint64_t revoke_reason;
    _Atomic uint64_t revoke_seq;
    uint8_t pad2[64 - 48];

    /* Client section: usage reports and the revocation answer. */
    _Atomic uint64_t owned_bytes;
    _Atomic uint64_t resident_bytes;
    _Atomic uint64_t free_bytes;
    _Atomic uint64_t discardable_bytes;
    _Atomic uint64_t live_bytes;      /* GC runtimes: live heap */
    _Atomic uint64_t heap_bytes;      /* GC runtimes: heap size */
    _Atomic uint64_t garbage_bytes;   /* reclaimable garbage */
    _Atomic uint64_t cost_ns_per_mib; /* cost of giving a MiB back */
    _Atomic uint64_t ack_bytes;       /* what the last answer gave */
    _Atomic uint64_t ack_seq;         /* written after ack_bytes */
    _Atomic uint64_t report_seq;      /* raised on every usage report */
} mm_control_t;

_Static_assert(sizeof(mm_control_t) <= MM_CONTROL_BYTES, "control block fits its page");
_Static_assert(offsetof(mm_control_t, target_bytes) == 64, "host section on its own line");
_Static_assert(offsetof(mm_control_t, owned_bytes) == 128, "client section on its own line");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic words are plain words");

_Static_assert(sizeof(_Atomic uint32_t) == 4, "chunk words are plain words");

/*
 * Size of the shared state for a region of chunk_count chunks: the control
 * block, one 32-bit word per chunk, the bitmaps on the next 64-byte boundary
 * (at most 60 bytes of padding, inside the rounding to a whole page).
 */
static inline uint64_t mm_shared_bytes(uint32_t chunk_count)
{
    uint64_t words = ((uint64_t)chunk_count * 4 + 63) & ~(uint64_t)63;
    uint64_t bitmaps = (uint64_t)chunk_count * MM_CHUNK_BITMAP_WORDS * 8;
    uint64_t total = MM_CONTROL_BYTES + words + bitmaps;
    return (total + MM_FRAME_SIZE - 1) & ~(uint64_t)(MM_FRAME_SIZE - 1);
}

/* ---- Messages ------------------------------------------------------------
 *
 * Every message starts with mm_msg_hdr. length is the whole message in bytes
 * and must equal what was received. A peer that sends another version gets
 * MM_MSG_ERROR with -EPROTONOSUPPORT and a text saying which versions exist.
 */
#define MM_MSG_MAGIC      0x4d4d5750u /* "MMWP" */
#define MM_PROTO_VERSION  1u
#define MM_NAME_MAX       32  /* including the terminating NUL */
#define MM_INSTALL_MAX    128 /* chunks in one install message */
#define MM_ERROR_TEXT_MAX 128

enum mm_msg_type {
    MM_MSG_HELLO = 1,         /* client -> host: register */
    MM_MSG_HELLO_REPLY = 2,   /* host -> client, with 4 fds */
    MM_MSG_INSTALL = 3,       /* client -> host: use these reclaimed chunks */
    MM_MSG_INSTALL_REPLY = 4, /* host -> client: the chunks granted */
    MM_MSG_BYE = 5,           /* client -> host: orderly close */
    MM_MSG_ERROR = 6,         /* host -> client: request refused */
    MM_MSG_PAGING = 7,        /* client -> host, with 1 fd: its userfaultfd */
    /* Baseline memory drivers of the guest model (docs/baselines.md). Each
     * request gets one MM_MSG_BASELINE_REPLY (or MM_MSG_ERROR). */
    MM_MSG_BALLOON_INFLATE = 16, /* client -> host: pages the balloon took */
    MM_MSG_BALLOON_DEFLATE = 17, /* client -> host: pages the balloon gave back */
    MM_MSG_FPR_REPORT = 18,      /* client -> host: free blocks to discard */
    MM_MSG_VMEM_PLUG = 19,       /* client -> host: plug blocks */
    MM_MSG_VMEM_UNPLUG = 20,     /* client -> host: unplug blocks (host discards) */
    MM_MSG_BASELINE_REPLY = 21,  /* host -> client */
    /* Surviving a daemon restart (numbers 8-15). */
    MM_MSG_RECONNECT = 8,       /* client -> host, with 2 or 3 fds: take me back */
    MM_MSG_RECONNECT_REPLY = 9, /* host -> client, with 2 fds: new doorbells */
    MM_MSG_STOPPING = 10,       /* host -> client: the daemon stops; reconnect later */
};

enum mm_client_kind {
    MM_KIND_RUNTIME = 0, /* a process, language runtime or library user */
    MM_KIND_GUEST = 1,   /* a guest-OS model */
};

typedef struct mm_msg_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length;
    uint32_t seq; /* echoed in the reply */
} mm_msg_hdr_t;

typedef struct mm_msg_hello {
    mm_msg_hdr_t hdr;
    char name[MM_NAME_MAX]; /* NUL-terminated, printable */
    uint64_t max_bytes;     /* region size asked for */
    uint64_t min_bytes;     /* reservation asked for */
    uint32_t weight;        /* share asked for, 1..10000 */
    uint32_t kind;          /* enum mm_client_kind */
    int32_t numa_node;      /* -1: any */
    uint32_t flags;         /* MM_HELLO_*; undefined bits must be 0 */
} mm_msg_hello_t;

/* hello.flags bits 8..11: the guest's memory driver (enum mm_driver). A
 * baseline driver's client gets none of mm's own reclaim steps. */
#define MM_HELLO_DRIVER_SHIFT 8
#define MM_HELLO_DRIVER_MASK  (0xfu << MM_HELLO_DRIVER_SHIFT)

enum mm_driver {
    MM_DRIVER_MM = 0,
    MM_DRIVER_BALLOON = 1,    /* virtio-balloon */
    MM_DRIVER_FPR = 2,        /* free page reporting */
    MM_DRIVER_VIRTIO_MEM = 3, /* virtio-mem */
    MM_DRIVER_COUNT = 4
};

/* Fds passed with a successful hello reply, in this order. */
enum {
    MM_FD_REGION = 0,
    MM_FD_SHARED = 1,
    MM_FD_DOORBELL_TO_CLIENT = 2, /* host rings, client reads */
    MM_FD_DOORBELL_TO_HOST = 3,   /* client rings, host reads */
    MM_FD_COUNT = 4
};

typedef struct mm_msg_hello_reply {
    mm_msg_hdr_t hdr;
    int32_t status; /* 0, or negative errno with no fds */
    uint32_t client_id;
    uint64_t region_bytes;
    uint64_t shared_bytes;
    uint32_t chunk_count;
    uint32_t reserved;
} mm_msg_hello_reply_t;

typedef struct mm_msg_install {
    mm_msg_hdr_t hdr;
    uint32_t slot;                   /* reservation slot the chunks come back reserved for */
    uint32_t count;                  /* 1..MM_INSTALL_MAX */
    uint32_t chunks[MM_INSTALL_MAX]; /* only count entries are sent */
} mm_msg_install_t;

typedef struct mm_msg_install_reply {
    mm_msg_hdr_t hdr;
    int32_t status; /* 0 if any chunk was granted, else why none was */
    uint32_t count; /* chunks granted, a prefix-ordered subset */
    uint32_t chunks[MM_INSTALL_MAX];
} mm_msg_install_reply_t;

typedef struct mm_msg_bye {
    mm_msg_hdr_t hdr;
} mm_msg_bye_t;

typedef struct mm_msg_error {
    mm_msg_hdr_t hdr;
    int32_t status;
    char text[MM_ERROR_TEXT_MAX]; /* NUL-terminated */
} mm_msg_error_t;

/*
 * The client's userfaultfd, for host paging (reclaim step 4), and the
 * address its region is mapped at in the client. No reply: the host checks
 * the fd and the mapping, and a client it cannot page is frozen instead.
 */
typedef struct mm_msg_paging {
    mm_msg_hdr_t hdr;
    uint64_t region_addr; /* 4 KiB-aligned */
    uint64_t flags;       /* none defined yet: must be 0 */
} mm_msg_paging_t;

/*
 * Balloon: frame numbers (4 KiB pages of the region) the balloon took
 * (inflate) or gives back (deflate), at most 256 per message as
 * virtio_balloon's VIRTIO_BALLOON_ARRAY_PFNS_MAX. The host discards each
 * inflated page on its own, as QEMU does.
 */
#define MM_BALLOON_PFNS_MAX 256
typedef struct mm_msg_balloon {
    mm_msg_hdr_t hdr;
    uint32_t count; /* 1..MM_BALLOON_PFNS_MAX */
    uint32_t reserved;
    uint32_t pfns[MM_BALLOON_PFNS_MAX]; /* only count entries are sent */
} mm_msg_balloon_t;

/* Free page reporting: free blocks of 2 MiB (region offsets, 2 MiB
 * aligned), at most 32 per report as Linux's PAGE_REPORTING_CAPACITY. */
#define MM_FPR_BLOCKS_MAX 32
typedef struct mm_msg_fpr {
    mm_msg_hdr_t hdr;
    uint32_t count; /* 1..MM_FPR_BLOCKS_MAX */
    uint32_t reserved;
    uint64_t addrs[MM_FPR_BLOCKS_MAX]; /* only count entries are sent */
} mm_msg_fpr_t;

/* virtio-mem: plug or unplug nb_blocks 2 MiB blocks from addr on, as the
 * device's VIRTIO_MEM_REQ_PLUG / _UNPLUG requests. */
typedef struct mm_msg_vmem {
    mm_msg_hdr_t hdr;
    uint64_t addr;      /* region offset, 2 MiB aligned */
    uint64_t nb_blocks; /* >= 1, inside the region */
} mm_msg_vmem_t;

typedef struct mm_msg_baseline_reply {
    mm_msg_hdr_t hdr;
    int32_t status; /* 0, or negative errno: nothing was done */
    uint32_t reserved;
    uint64_t done; /* pages or blocks the host handled */
} mm_msg_baseline_reply_t;

/*
 * A client whose daemon went away asks a new daemon on the same state
 * directory to take it back. Fds, in this order: its region, its shared
 * state, and (with MM_RECONNECT_UFFD) the userfaultfd it offered for host
 * paging. The daemon checks each fd against what its state directory
 * recorded for client_id (inode, size, seals, owner) and answers with
 * MM_MSG_RECONNECT_REPLY and two fresh doorbells (MM_FD_DOORBELL_TO_CLIENT,
 * MM_FD_DOORBELL_TO_HOST order), or MM_MSG_ERROR and no fds.
 */
#define MM_RECONNECT_UFFD 1u /* a userfaultfd follows the two memfds */

typedef struct mm_msg_reconnect {
    mm_msg_hdr_t hdr;
    uint32_t client_id;
    uint32_t flags;       /* MM_RECONNECT_UFFD or 0 */
    uint64_t region_addr; /* where the region is mapped (4 KiB-aligned) */
    uint64_t region_bytes;
    uint64_t shared_bytes;
} mm_msg_reconnect_t;

typedef struct mm_msg_reconnect_reply {
    mm_msg_hdr_t hdr;
    int32_t status; /* 0; errors come as MM_MSG_ERROR */
    uint32_t client_id;
} mm_msg_reconnect_reply_t;

/* The daemon is stopping in order: what it had in flight is finished or
 * rolled back, and the client may reconnect to the next one. */
typedef struct mm_msg_stopping {
    mm_msg_hdr_t hdr;
} mm_msg_stopping_t;

/* Room for the largest message either side sends. */
#define MM_MSG_MAX_BYTES sizeof(mm_msg_balloon_t)

_Static_assert(sizeof(mm_msg_hdr_t) == 16, "header layout");
_Static_assert(sizeof(mm_msg_hello_t) == 80, "hello layout");
_Static_assert(sizeof(mm_msg_hello_reply_t) == 48, "hello reply layout");
_Static_assert(offsetof(mm_msg_install_t, chunks) == 24, "install layout");
_Static_assert(offsetof(mm_msg_install_reply_t, chunks) == 24, "install reply layout");
_Static_assert(sizeof(mm_msg_error_t) == 148, "error layout");
_Static_assert(sizeof(mm_msg_paging_t) == 32, "paging layout");
_Static_assert(offsetof(mm_msg_balloon_t, pfns) == 24, "balloon layout");
_Static_assert(offsetof(mm_msg_fpr_t, addrs) == 24, "fpr layout");
_Static_assert(sizeof(mm_msg_vmem_t) == 32, "virtio-mem layout");
_Static_assert(sizeof(mm_msg_baseline_reply_t) == 32, "baseline reply layout");
_Static_assert(sizeof(mm_msg_balloon_t) >= sizeof(mm_msg_install_reply_t) &&
                   sizeof(mm_msg_balloon_t) >= sizeof(mm_msg_fpr_t),
               "MM_MSG_MAX_BYTES holds every message");
_Static_assert(sizeof(mm_msg_reconnect_t) == 48, "reconnect layout");
_Static_assert(sizeof(mm_msg_reconnect_reply_t) == 24, "reconnect reply layout");

#endif /* MM_PROTOCOL_H */
