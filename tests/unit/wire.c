/*
 * Unit tests for the client-socket message gate (libmm/src/wire.c) and the
 * small public helpers of libmm/src/util.c (mm_parse_size, mm_strerror).
 * Each test builds messages in an aligned, zeroed buffer larger than any
 * message, so that lengths past a type's size can be tried, and checks the
 * exact error mm__msg_check() documents for each kind of malformed input.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <mm/mm.h>

#include "wire.h"

/* Room for every message and for lengths a little past the largest. */
typedef union msg_buf {
    mm_msg_hdr_t hdr;
    mm_msg_hello_t hello;
    mm_msg_hello_reply_t hello_reply;
    mm_msg_install_t install;
    mm_msg_install_reply_t install_reply;
    mm_msg_bye_t bye;
    mm_msg_error_t error;
    unsigned char bytes[2 * MM_MSG_MAX_BYTES];
} msg_buf_t;

#define MIB(x) ((uint64_t)(x) << 20)

/* A hello every field of which is valid; returns its length. */
static size_t make_hello(msg_buf_t *b)
{
    memset(b, 0, sizeof *b);
    mm__msg_init(&b->hdr, MM_MSG_HELLO, sizeof(mm_msg_hello_t), 7);
    strcpy(b->hello.name, "test-client");
    b->hello.max_bytes = MIB(256);
    b->hello.min_bytes = MIB(64);
    b->hello.weight = 100;
    b->hello.kind = MM_KIND_RUNTIME;
    b->hello.numa_node = -1;
    b->hello.flags = 0;
    return sizeof(mm_msg_hello_t);
}

static size_t make_hello_reply(msg_buf_t *b)
{
    memset(b, 0, sizeof *b);
    mm__msg_init(&b->hdr, MM_MSG_HELLO_REPLY, sizeof(mm_msg_hello_reply_t), 7);
    b->hello_reply.status = 0;
    b->hello_reply.client_id = 3;
    b->hello_reply.region_bytes = MIB(256);
    b->hello_reply.shared_bytes = mm_shared_bytes(128);
    b->hello_reply.chunk_count = 128;
    return sizeof(mm_msg_hello_reply_t);
}

/* An install (or install reply) of count chunks whose length matches. */
static size_t make_install(msg_buf_t *b, uint16_t type, uint32_t count)
{
    memset(b, 0, sizeof *b);
    uint32_t len = mm__msg_install_length(count);
    mm__msg_init(&b->hdr, type, len, 9);
    b->install.slot = type == MM_MSG_INSTALL ? 1 : 0; /* a reply's status */
    b->install.count = count;
    /* Both counted layouts put count and chunks at the same offsets. */
    uint32_t *chunks = (uint32_t *)(b->bytes + offsetof(mm_msg_install_t, chunks));
    for (uint32_t i = 0; i < count; i++)
        chunks[i] = i;
    return len;
}

static size_t make_bye(msg_buf_t *b)
{
    memset(b, 0, sizeof *b);
    mm__msg_init(&b->hdr, MM_MSG_BYE, sizeof(mm_msg_bye_t), 11);
    return sizeof(mm_msg_bye_t);
}

static size_t make_error(msg_buf_t *b)
{
    memset(b, 0, sizeof *b);
    mm__msg_init(&b->hdr, MM_MSG_ERROR, sizeof(mm_msg_error_t), 7);
    b->error.status = -EPROTONOSUPPORT;
    strcpy(b->error.text, "this daemon speaks version 1");
    return sizeof(mm_msg_error_t);
}

/* ---- Valid messages ----------------------------------------------------- */

Test(wire, hello_accepted_when_valid)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    cr_assert_eq(len, 80);
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_HELLO);
}

Test(wire, hello_accepted_when_fields_at_their_bounds)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    b.hello.max_bytes = MM_CHUNK_SIZE;
    b.hello.min_bytes = MM_CHUNK_SIZE; /* min == max is allowed */
    b.hello.weight = 1;
    b.hello.kind = MM_KIND_GUEST;
    b.hello.numa_node = 0;
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_HELLO);

    b.hello.max_bytes = MM_REGION_MAX_BYTES;
    b.hello.min_bytes = 0;
    b.hello.weight = 10000;
    b.hello.numa_node = -1;
    memset(b.hello.name, 'x', MM_NAME_MAX - 1); /* longest name: 31 chars + NUL */
    b.hello.name[MM_NAME_MAX - 1] = '\0';
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_HELLO);

    b.hello.name[0] = ' '; /* space and tilde bound the printable range */
    b.hello.name[1] = '~';
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_HELLO);
}

Test(wire, hello_reply_accepted_when_valid)
{
    msg_buf_t b;
    size_t len = make_hello_reply(&b);
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_HELLO_REPLY);
    b.hello_reply.status = -ENOMEM; /* a refusal is a valid reply */
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_HELLO_REPLY);
}

Test(wire, install_accepted_when_count_is_one)
{
    msg_buf_t b;
    size_t len = make_install(&b, MM_MSG_INSTALL, 1);
    cr_assert_eq(len, 28);
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_INSTALL);
}

Test(wire, install_accepted_when_count_is_max)
{
    msg_buf_t b;
    size_t len = make_install(&b, MM_MSG_INSTALL, MM_INSTALL_MAX);
    cr_assert_eq(len, sizeof(mm_msg_install_t));
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_INSTALL);
}

Test(wire, install_reply_accepted_when_count_is_zero_one_or_max)
{
    msg_buf_t b;
    const uint32_t counts[] = {0, 1, 17, MM_INSTALL_MAX};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        size_t len = make_install(&b, MM_MSG_INSTALL_REPLY, counts[i]);
        cr_assert_eq(mm__msg_check(&b, len), MM_MSG_INSTALL_REPLY, "count %u", counts[i]);
    }
}

Test(wire, bye_accepted_when_valid)
{
    msg_buf_t b;
    size_t len = make_bye(&b);
    cr_assert_eq(len, 16);
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_BYE);
}

Test(wire, error_accepted_when_valid)
{
    msg_buf_t b;
    size_t len = make_error(&b);
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_ERROR);
    b.error.text[0] = '\0'; /* an empty text is allowed */
    cr_assert_eq(mm__msg_check(&b, len), MM_MSG_ERROR);
}

/* ---- Header errors ------------------------------------------------------ */

Test(wire, ebadmsg_when_shorter_than_header)
{
    msg_buf_t b;
    make_bye(&b);
    for (size_t len = 0; len < sizeof(mm_msg_hdr_t); len++) {
        b.hdr.length = (uint32_t)len;
        cr_assert_eq(mm__msg_check(&b, len), -EBADMSG, "len %zu", len);
    }
}

Test(wire, ebadmsg_when_magic_is_wrong)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    b.hdr.magic = 0x50574d4du; /* byte-swapped */
    cr_assert_eq(mm__msg_check(&b, len), -EBADMSG);
    b.hdr.magic = 0;
    cr_assert_eq(mm__msg_check(&b, len), -EBADMSG);
}

Test(wire, ebadmsg_when_length_field_differs_from_received)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    cr_assert_eq(mm__msg_check(&b, len - 1), -EBADMSG);
    cr_assert_eq(mm__msg_check(&b, len + 1), -EBADMSG);
    b.hdr.length = (uint32_t)len + 4;
    cr_assert_eq(mm__msg_check(&b, len), -EBADMSG);
    b.hdr.length = 0xffffffffu;
    cr_assert_eq(mm__msg_check(&b, len), -EBADMSG);

    len = make_install(&b, MM_MSG_INSTALL, 4);
    cr_assert_eq(mm__msg_check(&b, len + 4), -EBADMSG);
}

Test(wire, eprotonosupport_when_version_differs)
{
    msg_buf_t b;
    const uint16_t versions[] = {0, MM_PROTO_VERSION + 1, 0xffff};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        size_t len = make_hello(&b);
        b.hdr.version = versions[i];
        cr_assert_eq(mm__msg_check(&b, len), -EPROTONOSUPPORT, "version %u", versions[i]);
        len = make_bye(&b);
        b.hdr.version = versions[i];
        cr_assert_eq(mm__msg_check(&b, len), -EPROTONOSUPPORT, "version %u", versions[i]);
    }
}

Test(wire, eproto_when_type_is_unknown)
{
    msg_buf_t b;
    const uint16_t types[] = {0, MM_MSG_STOPPING + 1, 100, 0xffff};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        size_t len = make_bye(&b);
        b.hdr.type = types[i];
        cr_assert_eq(mm__msg_check(&b, len), -EPROTO, "type %u", types[i]);
    }
}

Test(wire, eproto_when_fixed_size_type_has_wrong_length)
{
    static const struct {
        uint16_t type;
        size_t size;
    } fixed[] = {
        {MM_MSG_HELLO, sizeof(mm_msg_hello_t)},
        {MM_MSG_HELLO_REPLY, sizeof(mm_msg_hello_reply_t)},
        {MM_MSG_BYE, sizeof(mm_msg_bye_t)},
        {MM_MSG_ERROR, sizeof(mm_msg_error_t)},
    };
    msg_buf_t b;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        /* A valid body, with the length (header and received) off. */
        switch (fixed[i].type) {
        case MM_MSG_HELLO:
            make_hello(&b);
            break;
        case MM_MSG_HELLO_REPLY:
            make_hello_reply(&b);
            break;
        case MM_MSG_BYE:
            make_bye(&b);
            break;
        default:
            make_error(&b);
            break;
        }
        const size_t lens[] = {sizeof(mm_msg_hdr_t), fixed[i].size - 1, fixed[i].size + 1,
                               fixed[i].size + 8, MM_MSG_MAX_BYTES};
        for (size_t j = 0; j < sizeof lens / sizeof lens[0]; j++) {
            /* Shorter than a header is -EBADMSG, tested above. */
            if (lens[j] == fixed[i].size || lens[j] < sizeof(mm_msg_hdr_t))
                continue;
            b.hdr.length = (uint32_t)lens[j];
            cr_assert_eq(mm__msg_check(&b, lens[j]), -EPROTO, "%s with length %zu",
                         mm__msg_type_name(fixed[i].type), lens[j]);
        }
    }
}

/* ---- Counted messages --------------------------------------------------- */

Test(wire, einval_when_install_count_is_zero)
{
    msg_buf_t b;
    size_t len = make_install(&b, MM_MSG_INSTALL, 0);
    cr_assert_eq(len, offsetof(mm_msg_install_t, chunks));
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, einval_when_install_count_exceeds_max)
{
    msg_buf_t b;
    /* Length that matches the count... */
    size_t len = make_install(&b, MM_MSG_INSTALL, MM_INSTALL_MAX + 1);
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
    /* ...and the largest legal length with a count past it. */
    len = make_install(&b, MM_MSG_INSTALL, MM_INSTALL_MAX);
    b.install.count = MM_INSTALL_MAX + 1;
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
    b.install.count = 0xffffffffu;
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, einval_when_install_reply_count_exceeds_max)
{
    msg_buf_t b;
    size_t len = make_install(&b, MM_MSG_INSTALL_REPLY, MM_INSTALL_MAX + 1);
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, einval_when_install_reply_status_is_positive)
{
    msg_buf_t b;
    size_t len = make_install(&b, MM_MSG_INSTALL_REPLY, 1);
    b.install.slot = 5; /* the reply's status: 0 or a negative errno only */
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, eproto_when_install_length_disagrees_with_count)
{
    msg_buf_t b;
    const uint16_t types[] = {MM_MSG_INSTALL, MM_MSG_INSTALL_REPLY};
    for (size_t t = 0; t < 2; t++) {
        size_t len = make_install(&b, types[t], 3);
        b.install.count = 2; /* one chunk more than counted */
        cr_assert_eq(mm__msg_check(&b, len), -EPROTO, "%s", mm__msg_type_name(types[t]));
        b.install.count = 4; /* one chunk fewer than counted */
        cr_assert_eq(mm__msg_check(&b, len), -EPROTO, "%s", mm__msg_type_name(types[t]));

        len = make_install(&b, types[t], 3);
        len += 2; /* not a whole number of chunks */
        b.hdr.length = (uint32_t)len;
        cr_assert_eq(mm__msg_check(&b, len), -EPROTO, "%s", mm__msg_type_name(types[t]));
    }
}

Test(wire, eproto_when_install_shorter_than_its_fixed_part)
{
    msg_buf_t b;
    const uint16_t types[] = {MM_MSG_INSTALL, MM_MSG_INSTALL_REPLY};
    for (size_t t = 0; t < 2; t++) {
        make_install(&b, types[t], 1);
        for (size_t len = sizeof(mm_msg_hdr_t); len < offsetof(mm_msg_install_t, chunks); len++) {
            b.hdr.length = (uint32_t)len;
            cr_assert_eq(mm__msg_check(&b, len), -EPROTO, "%s len %zu", mm__msg_type_name(types[t]),
                         len);
        }
    }
}

/* ---- Hello fields ------------------------------------------------------- */

Test(wire, einval_when_hello_name_is_unterminated)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    memset(b.hello.name, 'a', MM_NAME_MAX);
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, einval_when_hello_name_is_empty)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    memset(b.hello.name, 0, MM_NAME_MAX);
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, einval_when_hello_name_is_not_printable)
{
    static const char *const bad[] = {"tab\there",   "nl\n", "\x01", "del\x7f",
                                      "caf\xc3\xa9", "\x80", "\xff"};
    msg_buf_t b;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = make_hello(&b);
        memset(b.hello.name, 0, MM_NAME_MAX);
        strcpy(b.hello.name, bad[i]);
        cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "name #%zu", i);
    }
}

Test(wire, einval_when_hello_max_bytes_out_of_range)
{
    const uint64_t bad[] = {0, 1, MM_CHUNK_SIZE - 1, MM_REGION_MAX_BYTES + 1, UINT64_MAX};
    msg_buf_t b;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = make_hello(&b);
        b.hello.max_bytes = bad[i];
        b.hello.min_bytes = 0;
        cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "max_bytes %llu", (unsigned long long)bad[i]);
    }
}

Test(wire, einval_when_hello_min_exceeds_max)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    b.hello.min_bytes = b.hello.max_bytes + 1;
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
    b.hello.min_bytes = UINT64_MAX;
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, einval_when_hello_weight_out_of_range)
{
    const uint32_t bad[] = {0, 10001, UINT32_MAX};
    msg_buf_t b;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = make_hello(&b);
        b.hello.weight = bad[i];
        cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "weight %u", bad[i]);
    }
}

Test(wire, einval_when_hello_kind_out_of_range)
{
    const uint32_t bad[] = {MM_KIND_GUEST + 1, 1000, UINT32_MAX};
    msg_buf_t b;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = make_hello(&b);
        b.hello.kind = bad[i];
        cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "kind %u", bad[i]);
    }
}

Test(wire, einval_when_hello_numa_node_below_minus_one)
{
    const int32_t bad[] = {-2, -1000, INT32_MIN};
    msg_buf_t b;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = make_hello(&b);
        b.hello.numa_node = bad[i];
        cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "node %d", bad[i]);
    }
}

Test(wire, einval_when_hello_flags_nonzero)
{
    const uint32_t bad[] = {1, 0x80000000u, UINT32_MAX};
    msg_buf_t b;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = make_hello(&b);
        b.hello.flags = bad[i];
        cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "flags %#x", bad[i]);
    }
}

/* ---- Replies ------------------------------------------------------------ */

Test(wire, einval_when_error_status_not_negative)
{
    const int32_t bad[] = {0, 1, EINVAL, INT32_MAX};
    msg_buf_t b;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = make_error(&b);
        b.error.status = bad[i];
        cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "status %d", bad[i]);
    }
}

Test(wire, einval_when_error_text_unterminated_or_not_printable)
{
    msg_buf_t b;
    size_t len = make_error(&b);
    memset(b.error.text, 'e', MM_ERROR_TEXT_MAX);
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);

    len = make_error(&b);
    b.error.text[3] = '\n';
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

Test(wire, einval_when_hello_reply_status_positive)
{
    msg_buf_t b;
    size_t len = make_hello_reply(&b);
    b.hello_reply.status = 1;
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL);
}

/* ---- Names -------------------------------------------------------------- */

Test(wire, type_name_when_known_or_unknown)
{
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_HELLO), "hello");
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_HELLO_REPLY), "hello-reply");
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_INSTALL), "install");
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_INSTALL_REPLY), "install-reply");
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_BYE), "bye");
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_ERROR), "error");
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_PAGING), "paging");
    cr_assert_str_eq(mm__msg_type_name(0), "unknown");
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_STOPPING + 1), "unknown");
    cr_assert_str_eq(mm__msg_type_name(0xffff), "unknown");
}

Test(wire, install_length_when_count_given)
{
    cr_assert_eq(mm__msg_install_length(0), 24);
    cr_assert_eq(mm__msg_install_length(1), 28);
    cr_assert_eq(mm__msg_install_length(MM_INSTALL_MAX), sizeof(mm_msg_install_t));
}

/* ---- mm_parse_size and mm_strerror -------------------------------------- */

Test(util, parse_size_accepts_plain_and_suffixed_sizes)
{
    static const struct {
        const char *text;
        uint64_t want;
    } ok[] = {
        {"0", 0},
        {"4096", 4096},
        {"512K", 512ull << 10},
        {"512k", 512ull << 10},
        {"200M", 200ull << 20},
        {"4G", 4ull << 30},
        {"1T", 1ull << 40},
        {"2MiB", 2ull << 20},
        {"3GB", 3ull << 30},
        {"18446744073709551615", UINT64_MAX},
        {"16777215T", 16777215ull << 40}, /* largest count of TiB that fits */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 12345;
        cr_assert_eq(mm_parse_size(ok[i].text, &v), 0, "\"%s\"", ok[i].text);
        cr_assert_eq(v, ok[i].want, "\"%s\" gave %llu", ok[i].text, (unsigned long long)v);
    }
}

Test(util, parse_size_einval_when_junk_or_overflow)
{
    static const char *const bad[] = {
        "",
        "-1",
        "+1",
        "12Q",
        "1MX",
        "1MiBx",
        "K",
        "0x10",
        "1.5G",
        "99999999999999999999",  /* past 2^64 */
        "18446744073709551615T", /* fits alone, overflows with the suffix */
        "16777216T",             /* 2^24 TiB = 2^64 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 0;
        cr_assert_eq(mm_parse_size(bad[i], &v), -EINVAL, "\"%s\"", bad[i]);
    }
    uint64_t v = 0;
    cr_assert_eq(mm_parse_size(NULL, &v), -EINVAL);
}

/*
 * strtoull() skips leading white space and then accepts a minus sign, so the
 * leading-'-' check alone lets " -1" through as 2^64 - 1. Fails until
 * mm_parse_size() requires a digit first.
 */
Test(util, parse_size_einval_when_sign_follows_white_space)
{
    static const char *const bad[] = {" -1", "\t-4096", "\n-1", " +1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 0;
        cr_expect_eq(mm_parse_size(bad[i], &v), -EINVAL, "\"%s\" gave %llu", bad[i],
                     (unsigned long long)v);
    }
}

Test(util, strerror_gives_text_when_code_known_or_not)
{
    const int codes[] = {0,        -EINVAL,          -ENOMEM,       -ENOSPC,   -EPROTO,
                         -EBADMSG, -EPROTONOSUPPORT, -ECONNREFUSED, -EMSGSIZE, -123456,
                         1};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = mm_strerror(codes[i]);
        cr_assert_not_null(s, "code %d", codes[i]);
        cr_assert_gt(strlen(s), 0, "code %d", codes[i]);
    }
    cr_assert_str_neq(mm_strerror(-EINVAL), mm_strerror(-ENOMEM));
}

Test(wire, paging_offer_checks_its_address_and_flags)
{
    mm_msg_paging_t m = {.region_addr = 0x7f0000000000ull};
    mm__msg_init(&m.hdr, MM_MSG_PAGING, sizeof m, 9);
    cr_assert_eq(mm__msg_check(&m, sizeof m), MM_MSG_PAGING);
    m.flags = 1;
    cr_assert_eq(mm__msg_check(&m, sizeof m), -EINVAL, "no flags are defined");
    m.flags = 0;
    m.region_addr += 8;
    cr_assert_eq(mm__msg_check(&m, sizeof m), -EINVAL, "the region is page-aligned");
    m.region_addr = 0;
    cr_assert_eq(mm__msg_check(&m, sizeof m), -EINVAL);
    m.region_addr = 0x7f0000000000ull;
    m.hdr.length = sizeof m - 8;
    cr_assert_eq(mm__msg_check(&m, sizeof m - 8), -EPROTO);
}

/* ---- Baseline drivers' messages -------------------------------------------- */

Test(wire, hello_carries_a_guests_memory_driver)
{
    msg_buf_t b;
    size_t len = make_hello(&b);
    b.hello.kind = MM_KIND_GUEST;
    for (uint32_t d = 0; d < MM_DRIVER_COUNT; d++) {
        b.hello.flags = d << MM_HELLO_DRIVER_SHIFT;
        cr_assert_eq(mm__msg_check(&b, len), MM_MSG_HELLO, "driver %u", d);
    }
    b.hello.flags = (uint32_t)MM_DRIVER_COUNT << MM_HELLO_DRIVER_SHIFT;
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "no such driver");
    b.hello.kind = MM_KIND_RUNTIME;
    b.hello.flags = MM_DRIVER_BALLOON << MM_HELLO_DRIVER_SHIFT;
    cr_assert_eq(mm__msg_check(&b, len), -EINVAL, "only a guest runs a baseline driver");
}

Test(wire, balloon_batches_hold_1_to_256_frames)
{
    mm_msg_balloon_t m = {.count = MM_BALLOON_PFNS_MAX};
    mm__msg_init(&m.hdr, MM_MSG_BALLOON_INFLATE, mm__msg_balloon_length(MM_BALLOON_PFNS_MAX), 3);
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), MM_MSG_BALLOON_INFLATE);
    cr_assert_eq(m.hdr.length, MM_MSG_MAX_BYTES, "the largest message");
    m.count = MM_BALLOON_PFNS_MAX + 1;
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), -EINVAL, "a batch over 256");
    m.count = 0;
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), -EINVAL);
    m.count = 2;
    m.hdr.type = MM_MSG_BALLOON_DEFLATE;
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), -EPROTO, "the length says 256");
    m.hdr.length = mm__msg_balloon_length(2);
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), MM_MSG_BALLOON_DEFLATE);
}

Test(wire, free_page_reports_hold_up_to_32_aligned_blocks)
{
    mm_msg_fpr_t m = {.count = MM_FPR_BLOCKS_MAX};
    for (uint32_t i = 0; i < MM_FPR_BLOCKS_MAX; i++)
        m.addrs[i] = (uint64_t)i * MM_CHUNK_SIZE;
    mm__msg_init(&m.hdr, MM_MSG_FPR_REPORT, mm__msg_fpr_length(MM_FPR_BLOCKS_MAX), 3);
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), MM_MSG_FPR_REPORT);
    m.addrs[5] += MM_FRAME_SIZE;
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), -EINVAL, "a block not 2 MiB aligned");
    m.addrs[5] = MM_REGION_MAX_BYTES;
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), -EINVAL, "past any region");
    m.addrs[5] = 0;
    m.count = MM_FPR_BLOCKS_MAX + 1;
    cr_assert_eq(mm__msg_check(&m, m.hdr.length), -EINVAL, "more than 32 blocks");
}

Test(wire, virtio_mem_requests_are_whole_aligned_blocks)
{
    mm_msg_vmem_t m = {.addr = 2 * (uint64_t)MM_CHUNK_SIZE, .nb_blocks = 3};
    mm__msg_init(&m.hdr, MM_MSG_VMEM_UNPLUG, sizeof m, 3);
    cr_assert_eq(mm__msg_check(&m, sizeof m), MM_MSG_VMEM_UNPLUG);
    m.hdr.type = MM_MSG_VMEM_PLUG;
    cr_assert_eq(mm__msg_check(&m, sizeof m), MM_MSG_VMEM_PLUG);
    m.addr += MM_FRAME_SIZE;
    cr_assert_eq(mm__msg_check(&m, sizeof m), -EINVAL, "not 2 MiB aligned");
    m.addr = 0;
    m.nb_blocks = 0;
    cr_assert_eq(mm__msg_check(&m, sizeof m), -EINVAL);
    m.nb_blocks = UINT64_MAX;
    cr_assert_eq(mm__msg_check(&m, sizeof m), -EINVAL, "a range that would wrap");
    m.nb_blocks = 1;
    cr_assert_eq(mm__msg_check(&m, sizeof m - 8), -EBADMSG);
}

Test(wire, reconnect_checks_its_id_flags_address_and_geometry)
{
    mm_msg_reconnect_t m = {.client_id = 7,
                            .flags = MM_RECONNECT_UFFD,
                            .region_addr = 0x7f0000000000ull,
                            .region_bytes = 8u << 20,
                            .shared_bytes = mm_shared_bytes(4)};
    mm__msg_init(&m.hdr, MM_MSG_RECONNECT, sizeof m, 1);
    cr_assert_eq(mm__msg_check(&m, sizeof m), MM_MSG_RECONNECT);
    cr_assert_str_eq(mm__msg_type_name(MM_MSG_RECONNECT), "reconnect");
    mm_msg_reconnect_t bad = m;
    bad.client_id = 0;
    cr_assert_eq(mm__msg_check(&bad, sizeof bad), -EINVAL, "ids start at 1");
    bad = m;
    bad.flags = 2;
    cr_assert_eq(mm__msg_check(&bad, sizeof bad), -EINVAL, "an unknown flag");
    bad = m;
    bad.region_addr += 8;
    cr_assert_eq(mm__msg_check(&bad, sizeof bad), -EINVAL, "the region is page-aligned");
    bad = m;
    bad.region_bytes += MM_FRAME_SIZE;
    cr_assert_eq(mm__msg_check(&bad, sizeof bad), -EINVAL, "whole chunks");
    bad = m;
    bad.shared_bytes += MM_FRAME_SIZE;
    cr_assert_eq(mm__msg_check(&bad, sizeof bad), -EINVAL, "the shared state fits the region");
    bad = m;
    bad.region_bytes = MM_REGION_MAX_BYTES * 2;
    bad.shared_bytes = mm_shared_bytes((uint32_t)(bad.region_bytes / MM_CHUNK_SIZE));
    cr_assert_eq(mm__msg_check(&bad, sizeof bad), -EINVAL, "too large");
}

Test(wire, reconnect_reply_and_stopping_have_fixed_layouts)
{
    mm_msg_reconnect_reply_t r = {.status = 0, .client_id = 7};
    mm__msg_init(&r.hdr, MM_MSG_RECONNECT_REPLY, sizeof r, 1);
    cr_assert_eq(mm__msg_check(&r, sizeof r), MM_MSG_RECONNECT_REPLY);
    r.status = -EPERM;
    cr_assert_eq(mm__msg_check(&r, sizeof r), -EINVAL, "refusals come as error messages");
    mm_msg_stopping_t st;
    mm__msg_init(&st.hdr, MM_MSG_STOPPING, sizeof st, 0);
    cr_assert_eq(mm__msg_check(&st, sizeof st), MM_MSG_STOPPING);
    st.hdr.length = sizeof st + 4;
    cr_assert_eq(mm__msg_check(&st, sizeof st), -EBADMSG, "the length field must match");
}
