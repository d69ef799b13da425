/*
 * Forced revocation (mmsrv/paging.c): a client that lets a revocation lapse
 * is paged out by the host through its userfaultfd, or frozen and paged when
 * it offered none; nothing it holds is lost, and writes during paging land.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"
#include "platform.h"
#include "wire.h"

#define MIB ((uint64_t)1 << 20)

static mm_proc_t hold_ = {.pid = 0, .out_fd = -1};

static void teardown(void)
{
    if (hold_.pid > 0) {
        mm__proc_signal(&hold_, SIGCONT);
        mm__proc_signal(&hold_, SIGKILL);
        mm__proc_wait(&hold_, 5000, NULL);
    }
    stop_daemon();
}

TestSuite(paging, .fini = teardown, .timeout = 90);

static void skip_without_uffd(void)
{
    if (geteuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0)
        cr_skip_test("host paging needs a full userfaultfd (root or /dev/userfaultfd)");
}

static void start_hold(const char *hold, bool host_paging)
{
    const char *args[] = {"--socket",
                          daemon_.sock,
                          "--name",
                          "hold",
                          "--hold",
                          hold,
                          "--free",
                          "0",
                          "--uncooperative",
                          host_paging ? NULL : "--no-host-paging",
                          NULL};
    cr_assert_eq(mm__bench_start_ready(&hold_, "mmhold", args), 0, "mmhold starts");
}

static void stop_hold_intact(void)
{
    bool intact = false;
    cr_assert_eq(mm__bench_hold_stop(&hold_, &intact), 0);
    hold_.pid = 0;
    cr_assert(intact, "mmhold verified every byte it held");
}

/* Wait until field of client id satisfies want (== or >=). */
static bool wait_field(uint32_t id, const char *key, uint64_t value, bool at_least, int ms)
{
    for (int t = 0; t < ms; t += 20) {
        uint64_t v = client_field(id, key);
        if (at_least ? v >= value : v == value)
            return true;
        sleep_ms(20);
    }
    return false;
}

Test(paging, an_uncooperative_client_is_paged_out_and_loses_nothing)
{
    skip_without_uffd();
    start_daemon("256M");
    start_hold("160M", true);
    uint32_t id = client_id_by_name("hold");
    cr_assert_eq(client_field(id, "host_paging"), 1, "mmhold offered its userfaultfd");
    uint64_t t0 = mm__bench_now_ns();
    set_capacity("64M");
    json_t *st = NULL;
    cr_assert_eq(mm__bench_wait_resident(&daemon_, 64 * MIB, 10000, &st), 0,
                 "resident bytes come under the capacity");
    json_decref(st);
    cr_log_info("under 64 MiB %.0f ms after the cut (deadline included)",
                (double)(mm__bench_now_ns() - t0) / 1e6);
    cr_assert_geq(client_field(id, "missed_deadlines"), 1);
    cr_assert_geq(client_field(id, "paged_bytes"), 90 * MIB);
    /* Step 4's histogram counts its batches and the bytes they wrote. */
    cr_assert_geq(ladder_field("host_paging", "count"), 1);
    cr_assert_geq(ladder_field("host_paging", "bytes"), client_field(id, "paged_out_bytes"));
    cr_assert_eq(ladder_field("freeze", "count"), 0);
    stop_hold_intact(); /* reads all 160 MiB: every page faults back */
}

Test(paging, the_daemon_stopping_puts_paged_pages_back)
{
    skip_without_uffd();
    start_daemon("256M");
    start_hold("96M", true);
    uint32_t id = client_id_by_name("hold");
    set_capacity("32M");
    cr_assert(wait_field(id, "paged_bytes", 60 * MIB, true, 10000));
    stop_daemon();
    stop_hold_intact();
}

typedef struct writer {
    volatile uint64_t *words;
    uint64_t pages;
    _Atomic bool stop;
    uint64_t last;
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    for (uint64_t v = 1; !atomic_load(&w->stop); v++) {
        for (uint64_t p = 0; p < w->pages; p++)
            w->words[p * (FRAME / 8)] = v;
        w->last = v;
    }
    return NULL;
}

Test(paging, writes_while_the_host_pages_are_never_lost)
{
    skip_without_uffd();
    start_daemon("256M");
    /* No thread: nobody answers revocations, so the host pages. */
    mm_client_t *c = open_client("writer", 128 * MIB, 0);
    void *chunks[32];
    alloc_chunks(c, 32, chunks); /* 64 MiB */
    writer_t w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        w[i] = (writer_t){.words = chunks[i * 16], .pages = 16 * CHUNK / FRAME};
        cr_assert_eq(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
    }
    uint32_t id = mm_client_id(c);
    set_capacity("16M");
    bool paged = wait_field(id, "paged_out_bytes", 32 * MIB, true, 15000);
    sleep_ms(500);
    for (int i = 0; i < 2; i++) {
        atomic_store(&w[i].stop, true);
        pthread_join(t[i], NULL);
    }
    cr_assert(paged, "the host paged the writers' memory");
    for (int i = 0; i < 2; i++)
        for (uint64_t p = 0; p < w[i].pages; p++)
            cr_assert_eq(w[i].words[p * (FRAME / 8)], w[i].last, "page %lu of writer %d",
                         (unsigned long)p, i);
    cr_log_info("paged out %lu MiB in total while two threads wrote",
                (unsigned long)(client_field(id, "paged_out_bytes") >> 20));
    mm_client_close(c);
}

Test(paging, a_client_without_userfaultfd_is_frozen_paged_and_thawed)
{
    start_daemon("256M");
    start_hold("128M", false);
    uint32_t id = client_id_by_name("hold");
    cr_assert_eq(client_field(id, "host_paging"), 0);
    set_capacity("48M");
    json_t *st = NULL;
    cr_assert_eq(mm__bench_wait_resident(&daemon_, 48 * MIB, 10000, &st), 0);
    json_decref(st);
    cr_assert_eq(client_field(id, "frozen"), 1);
    cr_assert_eq(proc_state(hold_.pid), 'T', "the client is stopped while its pages are out");
    cr_assert_geq(client_field(id, "paged_bytes"), 70 * MIB);
    cr_assert_geq(ladder_field("freeze", "count"), 1, "step 5 is counted as such");
    cr_assert_geq(ladder_field("freeze", "bytes"), 70 * MIB);
    cr_assert_eq(ladder_field("host_paging", "count"), 0);
    set_capacity("256M");
    cr_assert(wait_field(id, "frozen", 0, false, 5000), "thawed once memory is granted again");
    cr_assert_eq(client_field(id, "paged_bytes"), 0, "every page was put back");
    cr_assert_neq(proc_state(hold_.pid), 'T');
    stop_hold_intact();
}

/* The limit of SIGSTOP: any SIGCONT of the same user resumes the client.
 * The daemon notices at its next tick and puts the pages back at once; a
 * client that read its memory in between would have read zeros. */
Test(paging, a_sigcont_behind_the_daemons_back_is_noticed_and_repaired)
{
    start_daemon("256M");
    start_hold("96M", false);
    uint32_t id = client_id_by_name("hold");
    set_capacity("32M");
    cr_assert(wait_field(id, "paged_bytes", 50 * MIB, true, 10000));
    cr_assert_eq(kill(hold_.pid, SIGCONT), 0);
    cr_assert(wait_field(id, "early_thaws", 1, false, 5000), "the early thaw is noticed");
    /* Still over its target, it is frozen and paged again until memory is
     * granted: give it room, then it runs with every page back. */
    set_capacity("256M");
    cr_assert(wait_field(id, "frozen", 0, false, 5000));
    cr_assert(wait_field(id, "paged_bytes", 0, false, 5000), "its pages are put back");
    stop_hold_intact();
}

/* A paging offer whose fd is not a userfaultfd is refused; the client stays. */
Test(paging, a_forged_paging_offer_is_refused)
{
    start_daemon("256M");
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(daemon_.sock), sizeof a.sun_path);
    memcpy(a.sun_path, daemon_.sock, strlen(daemon_.sock) + 1);
    cr_assert_eq(connect(sock, (struct sockaddr *)&a, sizeof a), 0);
    mm_msg_hello_t h = {.max_bytes = 16 * MIB, .weight = 100, .numa_node = -1};
    snprintf(h.name, sizeof h.name, "forger");
    mm__msg_init(&h.hdr, MM_MSG_HELLO, sizeof h, 1);
    cr_assert_eq(mm__send_msg(sock, &h, sizeof h, NULL, 0), 0);
    union {
        mm_msg_hello_reply_t r;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    int fds[MM_FD_COUNT], nfds = 0;
    cr_assert_gt(mm__recv_msg(sock, u.buf, sizeof u.buf, fds, MM_FD_COUNT, &nfds), 0);
    cr_assert_eq(u.r.status, 0);
    cr_assert_eq(nfds, MM_FD_COUNT);
    int not_uffd = mm__doorbell_create();
    mm_msg_paging_t m = {.region_addr = 0x7f0000000000ull};
    mm__msg_init(&m.hdr, MM_MSG_PAGING, sizeof m, 2);
    cr_assert_eq(mm__send_msg(sock, &m, sizeof m, &not_uffd, 1), 0);
    sleep_ms(200);
    uint32_t id = client_id_by_name("forger");
    cr_assert_neq(id, 0, "the client is still served");
    cr_assert_eq(client_field(id, "host_paging"), 0, "the forged fd was refused");
    /* A second fd on an install is not a paging offer: that client goes. */
    mm_msg_bye_t bye;
    mm__msg_init(&bye.hdr, MM_MSG_BYE, sizeof bye, 3);
    cr_assert_eq(mm__send_msg(sock, &bye, sizeof bye, &not_uffd, 1), 0);
    sleep_ms(200);
    cr_assert_eq(client_id_by_name("forger"), 0,
                 "a message with an fd where none belongs drops it");
    close(not_uffd);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    close(sock);
}
