/*
 * Integration tests of mmsrv with real clients: a daemon in its own temp
 * state directory per test, clients in this process (through libmm) or as
 * mmhold processes. Behaviour is asserted with generous timeouts; speed is
 * measured by mmbench, never here.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "bench.h"
#include "common.h"
#include "platform.h"
#include "wire.h"

/* Allocate n whole chunks, write to every page, return them in out. */
TestSuite(daemon, .init = NULL, .fini = stop_daemon, .timeout = 120);

Test(daemon, lowering_capacity_takes_free_chunks_without_a_client_message)
{
    start_daemon("512M");
    /* No background thread and no dispatch: the client never hears a word. */
    mm_client_t *c = open_client("quiet", 64 << 20, 0);
    void *p[20];
    alloc_chunks(c, 20, p);
    for (size_t i = 5; i < 20; i++)
        cr_assert_eq(mm_free(c, p[i], CHUNK), 0);
    mm_client_stats_t before, after;
    cr_assert_eq(mm_client_stats(c, &before), 0);
    cr_assert_eq(before.resident_bytes, 20 * CHUNK, "all 20 chunks resident before");

    set_capacity("10M");
    cr_assert_eq(mm_client_stats(c, &after), 0);
    cr_assert_eq(after.resident_bytes, 5 * CHUNK, "st_blocks dropped to the 5 used chunks");
    cr_assert_eq(after.granted_bytes, 5 * CHUNK);
    cr_assert_eq(after.owned_bytes, 5 * CHUNK);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(((unsigned char *)p[i])[CHUNK - 1], i + 1, "used chunk %zu intact", i);
    cr_assert_eq(client_field(mm_client_id(c), "reclaimed_bytes"), 15 * CHUNK);
    mm_client_close(c);
}

Test(daemon, release_keeps_ownership_and_drops_residency)
{
    start_daemon("512M");
    mm_client_t *c = open_client("releaser", 16 << 20, 0);
    void *p[2];
    alloc_chunks(c, 2, p);
    mm_client_stats_t s;
    cr_assert_eq(mm_release(c, p[1], CHUNK), 0);
    cr_assert_eq(mm_client_stats(c, &s), 0);
    cr_assert_eq(s.resident_bytes, CHUNK, "released chunk is no longer resident");
    cr_assert_eq(s.owned_bytes, 2 * CHUNK, "released chunk is still owned");
    cr_assert_eq(((unsigned char *)p[1])[100], 0, "a released page reads as zero");
    memset(p[1], 7, 4096); /* the owner may touch it again without a call */
    cr_assert_eq(mm_client_stats(c, &s), 0);
    cr_assert_eq(s.resident_bytes, CHUNK + 4096);
    cr_assert_eq(mm_free(c, p[1], CHUNK), 0, "a released range can still be freed");
    cr_assert_eq(mm_release(c, (char *)p[0] + 1, 4096), -EINVAL, "unaligned release refused");
    mm_client_close(c);
}

Test(daemon, touching_a_reclaimed_chunk_is_detected_and_punched_again)
{
    start_daemon("512M");
    mm_client_t *c = open_client("toucher", 16 << 20, 0);
    void *p[4];
    alloc_chunks(c, 4, p);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(mm_free(c, p[i], CHUNK), 0);
    set_capacity("2M"); /* the host keeps chunk 0 for it and takes 1..3 */
    mm_client_stats_t s;
    cr_assert_eq(mm_client_stats(c, &s), 0);
    cr_assert_eq(s.resident_bytes, CHUNK, "resident %llu", (unsigned long long)s.resident_bytes);
    memset(p[2], 1, 8192); /* a chunk the host took back, never installed */
    uint32_t id = mm_client_id(c);
    uint64_t touched = 0;
    for (int i = 0; i < 100 && touched == 0; i++, sleep_ms(50))
        touched = client_field(id, "touched_reclaimed");
    cr_assert_eq(touched, 1, "the daemon noticed the touch");
    cr_assert_eq(mm_client_stats(c, &s), 0);
    cr_assert_eq(s.resident_bytes, CHUNK, "and punched the chunk again");
    mm_client_close(c);
}

Test(daemon, kill_9_of_a_client_returns_its_memory)
{
    start_daemon("512M");
    mm_proc_t hold;
    cr_assert_eq(mm__bench_hold_start(&hold, &daemon_, "victim", "100M", "0"), 0);
    cr_assert_eq(status_field("resident_bytes"), 100u << 20);
    mm__proc_signal(&hold, SIGKILL);
    mm__proc_wait(&hold, 10000, NULL);
    uint64_t resident = UINT64_MAX, granted = UINT64_MAX;
    for (int i = 0; i < 100 && (resident || granted); i++, sleep_ms(50)) {
        resident = status_field("resident_bytes");
        granted = status_field("granted_bytes");
    }
    cr_assert_eq(resident, 0, "its pages are gone");
    cr_assert_eq(granted, 0, "and its grant returned to the pool");
}

Test(daemon, mmhold_data_stays_intact_through_a_cut)
{
    start_daemon("512M");
    mm_proc_t a, b;
    cr_assert_eq(mm__bench_hold_start(&a, &daemon_, "a", "200M", "150M"), 0);
    cr_assert_eq(mm__bench_hold_start(&b, &daemon_, "b", "200M", "150M"), 0);
    set_capacity("128M");
    json_t *st = NULL;
    cr_assert_eq(mm__bench_wait_resident(&daemon_, 128u << 20, 30000, &st), 0);
    json_decref(st);
    bool intact_a = false, intact_b = false;
    cr_assert_eq(mm__bench_hold_stop(&a, &intact_a), 0);
    cr_assert_eq(mm__bench_hold_stop(&b, &intact_b), 0);
    cr_assert(intact_a && intact_b, "both holders verified every byte");
}

Test(daemon, install_beyond_capacity_is_refused)
{
    start_daemon("8M");
    mm_client_t *c = open_client("greedy", 64 << 20, 0);
    void *p[5];
    alloc_chunks(c, 4, p);
    cr_assert_eq(mm_alloc(c, CHUNK, CHUNK, &p[4]), -ENOMEM, "a fifth chunk exceeds 8M");
    cr_assert_eq(status_field("granted_bytes"), 8u << 20);
    mm_client_close(c);
}

static int raw_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, daemon_.sock);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    cr_assert_geq(s, 0);
    cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof sa), 0);
    return s;
}

static void fill_hello(mm_msg_hello_t *m)
{
    memset(m, 0, sizeof *m);
    mm__msg_init(&m->hdr, MM_MSG_HELLO, sizeof *m, 1);
    strcpy(m->name, "raw");
    m->max_bytes = 4 * CHUNK;
    m->weight = 100;
    m->numa_node = -1;
}

/* Receive one message; returns its checked type. */
static int raw_recv(int s, void *buf, int *fds, int *nfds)
{
    ssize_t n = mm__recv_msg(s, buf, MM_MSG_MAX_BYTES, fds, MM_FD_COUNT, nfds);
    cr_assert_gt(n, 0, "a reply arrives");
    return mm__msg_check(buf, (size_t)n);
}

Test(daemon, another_protocol_version_gets_a_clear_error)
{
    start_daemon("64M");
    int s = raw_connect();
    mm_msg_hello_t m;
    fill_hello(&m);
    m.hdr.version = MM_PROTO_VERSION + 1;
    cr_assert_eq(mm__send_msg(s, &m, sizeof m, NULL, 0), 0);
    union {
        mm_msg_error_t e;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    int fds[MM_FD_COUNT], nfds = 0;
    cr_assert_eq(raw_recv(s, &u, fds, &nfds), MM_MSG_ERROR);
    cr_assert_eq(u.e.status, -EPROTONOSUPPORT);
    cr_assert(strstr(u.e.text, "protocol version") != NULL, "text says why: %s", u.e.text);
    close(s);
}

Test(daemon, malformed_messages_drop_only_that_client)
{
    start_daemon("64M");
    mm_client_t *good = open_client("good", 8 << 20, 0);
    const size_t sizes[] = {3, sizeof(mm_msg_hdr_t), sizeof(mm_msg_hello_t) + 1, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int s = raw_connect();
        uint8_t junk[4096];
        memset(junk, 0xa5, sizeof junk);
        cr_assert_eq(mm__send_msg(s, junk, sizes[i], NULL, 0), 0);
        uint8_t buf[MM_MSG_MAX_BYTES];
        ssize_t n;
        do { /* an error reply, then the close */
            int nfds;
            n = mm__recv_msg(s, buf, sizeof buf, NULL, 0, &nfds);
        } while (n > 0);
        cr_assert_eq(n, 0, "the daemon closed the bad client (size %zu)", sizes[i]);
        close(s);
    }
    void *p;
    cr_assert_eq(mm_alloc(good, 4096, 0, &p), 0, "the good client is still served");
    mm_client_close(good);
}

Test(daemon, a_client_cannot_reseal_grow_or_shrink_its_region)
{
    start_daemon("64M");
    int s = raw_connect();
    mm_msg_hello_t m;
    fill_hello(&m);
    cr_assert_eq(mm__send_msg(s, &m, sizeof m, NULL, 0), 0);
    uint8_t buf[MM_MSG_MAX_BYTES] __attribute__((aligned(8)));
    int fds[MM_FD_COUNT], nfds = 0;
    cr_assert_eq(raw_recv(s, buf, fds, &nfds), MM_MSG_HELLO_REPLY);
    cr_assert_eq(nfds, MM_FD_COUNT);
    for (int i = MM_FD_REGION; i <= MM_FD_SHARED; i++) {
        cr_assert_eq(fcntl(fds[i], F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
        cr_assert_eq(errno, EPERM, "no seal can be added");
        cr_assert_eq(ftruncate(fds[i], 1 << 30), -1);
        cr_assert_eq(errno, EPERM, "cannot grow");
        cr_assert_eq(ftruncate(fds[i], 4096), -1);
        cr_assert_eq(errno, EPERM, "cannot shrink");
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    close(s);
}

/* Gives back as many of its chunks as asked, from the top. */
typedef struct giver {
    void *chunks[8];
    int held;
} giver_t;

static uint64_t give_back(mm_client_t *c, const mm_revoke_request_t *req, void *arg)
{
    giver_t *g = arg;
    uint64_t given = 0;
    while (g->held > 0 && given < req->bytes) {
        cr_assert_eq(mm_free(c, g->chunks[--g->held], CHUNK), 0);
        given += CHUNK;
    }
    return given;
}

Test(daemon, revocations_go_cheapest_first_and_a_missed_deadline_is_counted)
{
    start_daemon("16M");
    giver_t g = {.held = 4};
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = "giver";
    o.max_bytes = 16 << 20;
    o.flags = MM_CLIENT_THREAD;
    o.on_revoke = give_back;
    o.revoke_arg = &g;
    mm_client_t *giver = NULL;
    cr_assert_eq(mm_client_open(daemon_.sock, &o, &giver), 0);
    alloc_chunks(giver, 4, g.chunks);
    mm_client_t *silent = open_client("silent", 16 << 20, 0);
    void *s[4];
    alloc_chunks(silent, 4, s); /* 16M granted: all of capacity */
    /* The silent one says it is cheaper, so it is asked first. */
    cr_assert_eq(mm_report(silent, &(mm_usage_t){.cost_ns_per_mib = 10}), 0);
    cr_assert_eq(mm_report(giver, &(mm_usage_t){.cost_ns_per_mib = 1000}), 0);

    mm_client_t *late = open_client("late", 16 << 20, 0);
    void *p;
    cr_assert_eq(mm_alloc(late, CHUNK, CHUNK, &p), -ENOMEM, "nothing free at first");
    uint32_t sid = mm_client_id(silent), gid = mm_client_id(giver);
    cr_assert_eq(client_field(gid, "revoked_bytes"), 0, "the dearer giver is not asked yet");
    uint64_t missed = 0;
    for (int i = 0; i < 100 && missed == 0; i++, sleep_ms(50))
        missed = client_field(sid, "missed_deadlines");
    cr_assert_geq(missed, 1, "the silent client's missed deadline is counted");
    /* Then the giver is asked, answers, and its chunk goes to the late one. */
    int err = -ENOMEM;
    for (int i = 0; i < 100 && err == -ENOMEM; i++, sleep_ms(50))
        err = mm_alloc(late, CHUNK, CHUNK, &p);
    cr_assert_eq(err, 0, "memory given back by the giver was granted: %s", mm_strerror(err));
    cr_assert_gt(client_field(gid, "revoked_bytes"), 0);
    mm_client_close(late);
    mm_client_close(silent);
    mm_client_close(giver);
}

Test(daemon, discardable_chunks_are_taken_without_a_message_unless_pinned)
{
    start_daemon("512M");
    mm_client_t *c = open_client("cache", 32 << 20, 0); /* never dispatches */
    void *p[6];
    alloc_chunks(c, 6, p);
    for (int i = 3; i < 6; i++)
        cr_assert_eq(mm_discardable(c, p[i], CHUNK, 1), 0);
    uint32_t id = mm_client_id(c);
    cr_assert_eq(client_field(id, "discardable_bytes"), 3 * CHUNK);
    cr_assert_eq(mm_discardable_pin(c, (char *)p[5] + 100), 0, "a reader holds chunk 5");

    set_capacity("8M"); /* 12M granted, all used or discardable */
    cr_assert_eq(client_field(id, "discarded_bytes"), 2 * CHUNK, "the two unpinned caches");
    cr_assert_eq(client_field(id, "granted_bytes"), 4 * CHUNK);
    cr_assert_eq(client_field(id, "revoked_bytes"), 0, "nobody was asked");
    cr_assert_eq(mm_discardable_pin(c, p[3]), -ESTALE, "the client learns chunk 3 is gone");
    cr_assert_eq(mm_free(c, p[3], CHUNK), -ESTALE, "and has nothing to free there");
    cr_assert_eq(((unsigned char *)p[5])[4096], 6, "the pinned cache is intact");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(((unsigned char *)p[i])[9], i + 1, "used chunk %d intact", i);

    mm_discardable_unpin(c, p[5]);
    set_capacity("6M"); /* now the unpinned chunk 5 may go */
    cr_assert_eq(client_field(id, "discarded_bytes"), 3 * CHUNK);
    cr_assert_eq(client_field(id, "discardable_bytes"), 0);
    mm_client_close(c);
}

/* Random words over a mapping, fixed seed: a hostile client's scribbling. */
static void scribble(volatile uint64_t *words, size_t n, uint64_t *seed, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < n; i++) {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            words[i] = *seed;
        }
    }
}

Test(daemon, a_client_scribbling_its_shared_state_harms_nobody_else)
{
    start_daemon("128M");
    mm_proc_t good;
    cr_assert_eq(mm__bench_hold_start(&good, &daemon_, "good", "32M", "8M"), 0);
    int s = raw_connect();
    mm_msg_hello_t m;
    fill_hello(&m);
    m.max_bytes = 32 * CHUNK;
    cr_assert_eq(mm__send_msg(s, &m, sizeof m, NULL, 0), 0);
    uint8_t buf[MM_MSG_MAX_BYTES] __attribute__((aligned(8)));
    int fds[MM_FD_COUNT], nfds = 0;
    cr_assert_eq(raw_recv(s, buf, fds, &nfds), MM_MSG_HELLO_REPLY);
    const mm_msg_hello_reply_t *r = (const void *)buf;
    size_t shared_bytes = r->shared_bytes;
    uint64_t *shared =
        mmap(NULL, shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[MM_FD_SHARED], 0);
    cr_assert_neq(shared, MAP_FAILED);
    uint8_t *region =
        mmap(NULL, 32 * CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED, fds[MM_FD_REGION], 0);
    cr_assert_neq(region, MAP_FAILED);
    memset(region, 0x5a, 8 * CHUNK); /* memory it was never granted */

    /* Scribble everything, doorbell included, while the host changes its
     * mind about capacity and serves the good client. */
    uint64_t seed = 0x1234567;
    const char *caps[] = {"64M", "48M", "96M", "40M", "128M"};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        scribble(shared, shared_bytes / 8, &seed, 3);
        (void)mm__doorbell_ring(fds[MM_FD_DOORBELL_TO_HOST]);
        set_capacity(caps[i]);
        uint64_t resident = status_field("resident_bytes");
        cr_assert_neq(resident, 0, "the daemon answers (capacity %s)", caps[i]);
        sleep_ms(150); /* a tick or two over the scribbled state */
    }
    uint32_t id = client_id_by_name("raw");
    cr_assert_neq(id, 0, "the scribbler is still a client");
    cr_assert_geq(client_field(id, "touched_reclaimed"), 1, "its stray writes were seen");
    cr_assert_leq(client_field(id, "resident_bytes"), client_field(id, "granted_bytes"),
                  "and punched again");
    bool intact = false;
    cr_assert_eq(mm__bench_hold_stop(&good, &intact), 0);
    cr_assert(intact, "the good client's data is intact");
    munmap(region, 32 * CHUNK);
    munmap(shared, shared_bytes);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    close(s);
}
