/*
 * Surviving a daemon restart (mmsrv/restart.c, mmsrv/state.c, libmm's
 * keeper): clients keep their data across kill -9 and an orderly stop, with
 * and without pages paged out; the fds they bring back are checked against
 * the state directory's record; a client that died meanwhile is cleaned up;
 * one that does not come back within the grace period is forgotten.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
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
static char link_[160];

static void teardown(void)
{
    if (hold_.pid > 0) {
        mm__proc_signal(&hold_, SIGKILL);
        mm__proc_wait(&hold_, 5000, NULL);
    }
    if (link_[0])
        unlink(link_);
    stop_daemon();
}

TestSuite(restart, .fini = teardown, .timeout = 120);

static void skip_without_uffd(void)
{
    if (geteuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0)
        cr_skip_test("host paging needs a full userfaultfd (root or /dev/userfaultfd)");
}

static void start_hold_with(const char *hold, const char *free_size, bool uncooperative,
                            bool host_paging)
{
    const char *args[12] = {"--socket", daemon_.sock, "--name", "hold",
                            "--hold",   hold,         "--free", free_size};
    int n = 8;
    if (uncooperative)
        args[n++] = "--uncooperative";
    if (!host_paging)
        args[n++] = "--no-host-paging";
    args[n] = NULL;
    cr_assert_eq(mm__bench_start_ready(&hold_, "mmhold", args), 0, "mmhold starts");
}

static void start_hold(const char *hold, const char *free_size, bool uncooperative)
{
    start_hold_with(hold, free_size, uncooperative, true);
}

static void stop_hold_intact(void)
{
    bool intact = false;
    cr_assert_eq(mm__bench_hold_stop(&hold_, &intact), 0);
    hold_.pid = 0;
    cr_assert(intact, "mmhold verified every byte it held");
}

static void crash_daemon(void)
{
    cr_assert_eq(mm__bench_daemon_kill(&daemon_, SIGKILL), 0, "mmsrv killed");
}

static void restart_daemon(const char *capacity, const char *grace)
{
    const char *level = getenv("MM_TEST_LOG");
    const char *extra[] = {"--grace", grace, NULL};
    cr_assert_eq(mm__bench_daemon_restart(&daemon_, capacity, level ? level : "warn", extra), 0,
                 "mmsrv starts again on the same state directory");
}

/* Wait until the daemon lists a client called name (it reconnected). */
static uint32_t wait_client(const char *name, int ms)
{
    for (int t = 0; t < ms; t += 50) {
        uint32_t id = client_id_by_name(name);
        if (id)
            return id;
        sleep_ms(50);
    }
    return 0;
}

static bool wait_field(uint32_t id, const char *key, uint64_t at_least, int ms)
{
    for (int t = 0; t < ms; t += 20) {
        uint64_t v = client_field(id, key);
        if (v != UINT64_MAX && v >= at_least)
            return true;
        sleep_ms(20);
    }
    return false;
}

/* Records in the state directory's clients/ (files named by a client id). */
static int records(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/clients", daemon_.dir);
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] >= '1' && e->d_name[0] <= '9' && !strchr(e->d_name, '.');
    if (d)
        closedir(d);
    return n;
}

Test(restart, data_intact_across_kill_9_and_accounting_rebuilt)
{
    start_daemon("512M");
    start_hold("64M", "16M", false);
    uint32_t id = client_id_by_name("hold");
    uint64_t granted = client_field(id, "granted_bytes");
    cr_assert_eq(records(), 1, "the client has a record");
    crash_daemon();
    restart_daemon("512M", "30");
    cr_assert_eq(wait_client("hold", 10000), id, "the client reconnected under its id");
    cr_assert_eq(client_field(id, "granted_bytes"), granted, "grants come from the record");
    cr_assert(wait_field(id, "resident_bytes", 48 * MIB, 5000), "residency read back");
    cr_assert_leq(client_field(id, "resident_bytes"), granted);
    stop_hold_intact();
}

Test(restart, paged_out_pages_come_back_after_kill_9)
{
    skip_without_uffd();
    start_daemon("256M");
    start_hold("96M", "0", true);
    uint32_t id = client_id_by_name("hold");
    cr_assert_eq(client_field(id, "host_paging"), 1, "mmhold offered its userfaultfd");
    set_capacity("32M");
    cr_assert(wait_field(id, "paged_bytes", 48 * MIB, 30000), "pages were paged out");
    crash_daemon();
    restart_daemon("256M", "30");
    cr_assert_eq(wait_client("hold", 10000), id, "the client reconnected");
    cr_assert_geq(client_field(id, "paged_bytes"), 48 * MIB, "the swap store was reopened");
    stop_hold_intact(); /* every paged page faults back through the new daemon */
}

static bool wait_connected(mm_client_t *c, int want, int ms)
{
    for (int t = 0; t < ms; t += 20) {
        if (mm_client_connected(c) == want)
            return true;
        sleep_ms(20);
    }
    return false;
}

/* A page touched while no daemon runs waits for the next one. */
typedef struct toucher {
    volatile uint8_t *p;
    size_t bytes;
    uint64_t sum;
    _Atomic bool done;
} toucher_t;

static void *touch(void *arg)
{
    toucher_t *t = arg;
    uint64_t sum = 0;
    for (size_t i = 0; i < t->bytes; i += FRAME)
        sum += t->p[i];
    t->sum = sum;
    atomic_store(&t->done, true);
    return NULL;
}

Test(restart, a_fault_while_no_daemon_runs_waits_for_the_next_one)
{
    skip_without_uffd();
    start_daemon("256M");
    mm_client_t *c = open_client("self", 64 * MIB, 0); /* never answers: paged */
    void *chunks[24];
    alloc_chunks(c, 24, chunks); /* chunk i filled with i + 1 */
    uint64_t want = 0;
    for (size_t i = 0; i < 24; i++)
        want += (uint64_t)(i + 1) * (CHUNK / FRAME);
    uint32_t id = mm_client_id(c);
    set_capacity("16M");
    cr_assert(wait_field(id, "paged_bytes", 16 * MIB, 30000), "pages were paged out");
    crash_daemon();
    cr_assert(wait_connected(c, 0, 5000), "the client saw the daemon go");
    toucher_t t = {.p = chunks[0], .bytes = 24 * CHUNK};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, touch, &t), 0);
    sleep_ms(500);
    cr_assert(!atomic_load(&t.done), "a paged page waits while no daemon runs");
    restart_daemon("256M", "30");
    pthread_join(th, NULL);
    cr_assert_eq(t.sum, want, "every page came back with its data");
    cr_assert_eq(mm_client_connected(c), 1, "reconnected");
    mm_client_close(c);
}

/* A reconnect message from this process for client id with the given fds;
 * the daemon's answer: 0, or the status of its error message. */
static int forged_reconnect(uint32_t id, uint64_t region_bytes, void *base, int region_fd,
                            int shared_fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(daemon_.sock), sizeof sa.sun_path);
    memcpy(sa.sun_path, daemon_.sock, strlen(daemon_.sock) + 1);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    cr_assert_geq(s, 0);
    cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof sa), 0);
    mm_msg_reconnect_t m = {.client_id = id,
                            .region_addr = (uintptr_t)base,
                            .region_bytes = region_bytes,
                            .shared_bytes = mm_shared_bytes((uint32_t)(region_bytes / CHUNK))};
    mm__msg_init(&m.hdr, MM_MSG_RECONNECT, sizeof m, 7);
    int fds[2] = {region_fd, shared_fd};
    cr_assert_eq(mm__send_msg(s, &m, sizeof m, fds, 2), 0);
    union {
        mm_msg_error_t e;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    int got[2], nfds = 0;
    ssize_t n = mm__recv_msg(s, u.buf, sizeof u.buf, got, 2, &nfds);
    for (int i = 0; i < nfds; i++)
        close(got[i]);
    close(s);
    cr_assert_gt(n, 0, "the daemon answers");
    int type = mm__msg_check(u.buf, (size_t)n);
    return type == MM_MSG_ERROR ? u.e.status : 0;
}

/* A client opened through a symlink to the daemon's socket: removing the
 * link keeps its keeper from reconnecting until the test allows it. */
static mm_client_t *open_linked(const char *name, uint64_t bytes)
{
    snprintf(link_, sizeof link_, "%s/link.sock", daemon_.dir);
    cr_assert_eq(symlink(daemon_.sock, link_), 0);
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = bytes;
    o.flags = MM_CLIENT_NO_HOST_PAGING;
    mm_client_t *c = NULL;
    cr_assert_eq(mm_client_open(link_, &o, &c), 0);
    return c;
}

Test(restart, a_forged_fd_is_refused_and_the_real_one_accepted)
{
    start_daemon("256M");
    mm_client_t *c = open_linked("real", 8 * MIB);
    void *p;
    cr_assert_eq(mm_alloc(c, CHUNK, CHUNK, &p), 0);
    memset(p, 0x5a, CHUNK);
    uint32_t id = mm_client_id(c);
    cr_assert_eq(unlink(link_), 0);
    crash_daemon();
    restart_daemon("256M", "30");
    /* Another memfd of the same size and seals: not the recorded region. */
    int forged = mm__memfd_create_sealed("forged", 8 * MIB);
    cr_assert_geq(forged, 0);
    int shared = mm__memfd_create_sealed("forged-shared", mm_shared_bytes(4));
    cr_assert_eq(forged_reconnect(id, 8 * MIB, mm_client_base(c), forged, mm_client_region_fd(c)),
                 -EBADF, "a region fd that is not the recorded one is refused");
    cr_assert_eq(forged_reconnect(id, 8 * MIB, mm_client_base(c), mm_client_region_fd(c), shared),
                 -EBADF, "a shared-state fd that is not the recorded one is refused");
    cr_assert_eq(
        forged_reconnect(id + 100, 8 * MIB, mm_client_base(c), mm_client_region_fd(c), shared),
        -ENOENT, "an id without a record is refused");
    close(forged);
    close(shared);
    cr_assert_eq(symlink(daemon_.sock, link_), 0);
    cr_assert(wait_connected(c, 1, 10000), "the real client reconnects within the grace period");
    cr_assert_eq(client_id_by_name("real"), id);
    for (size_t i = 0; i < CHUNK; i++)
        cr_assert_eq(((uint8_t *)p)[i], 0x5a);
    mm_client_close(c);
}

Test(restart, a_client_not_back_within_the_grace_period_is_forgotten)
{
    start_daemon("256M");
    mm_client_t *c = open_linked("late", 8 * MIB);
    void *p;
    cr_assert_eq(mm_alloc(c, CHUNK, CHUNK, &p), 0);
    cr_assert_eq(unlink(link_), 0);
    crash_daemon();
    restart_daemon("256M", "1");
    cr_assert_eq(status_field("recovering_clients"), 1, "it is waited for");
    cr_assert_eq(status_field("granted_bytes"), CHUNK, "its chunk is counted as held");
    sleep_ms(1600);
    cr_assert_eq(status_field("recovering_clients"), 0);
    cr_assert_eq(records(), 0, "its record is gone after the grace period");
    cr_assert_eq(symlink(daemon_.sock, link_), 0);
    cr_assert(wait_connected(c, -ENOENT, 10000), "the daemon refuses it: it runs unmanaged");
    cr_assert_eq(client_id_by_name("late"), 0);
    mm_client_close(c);
}

Test(restart, a_client_dead_during_the_outage_is_cleaned_up)
{
    start_daemon("256M");
    start_hold("32M", "0", false);
    crash_daemon();
    mm__proc_signal(&hold_, SIGKILL);
    mm__proc_wait(&hold_, 5000, NULL);
    hold_.pid = 0;
    restart_daemon("256M", "30");
    cr_assert_eq(records(), 0, "the dead client's record is removed");
    cr_assert_eq(client_id_by_name("hold"), 0);
    cr_assert_eq(status_field("granted_bytes"), 0, "nothing is counted for it");
}

Test(restart, an_orderly_stop_leaves_a_recoverable_state)
{
    skip_without_uffd();
    start_daemon("256M");
    start_hold("64M", "0", true);
    uint32_t id = client_id_by_name("hold");
    set_capacity("24M");
    cr_assert(wait_field(id, "paged_bytes", 16 * MIB, 30000), "pages were paged out");
    cr_assert_eq(mm__bench_daemon_kill(&daemon_, SIGTERM), 0, "mmsrv stops on SIGTERM");
    cr_assert_eq(records(), 1, "the record stays for the next daemon");
    restart_daemon("256M", "30");
    cr_assert_eq(wait_client("hold", 10000), id, "the client reconnected");
    cr_assert_eq(client_field(id, "paged_bytes"), 0, "the stop had put every page back");
    stop_hold_intact();
}

/* Start an mmguest "guest" of driver with a swap file in a new directory
 * (dir, swap filled in); its id. */
static uint32_t start_guest(const char *driver, char *dir, char *swap, size_t cap)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(swap, cap, "%s/swap", dir);
    const char *args[] = {"--socket",   daemon_.sock, "--name", "guest",  "--ram",
                          "64M",        "--driver",   driver,   "--swap", swap,
                          "--workload", "anon=16M",   NULL};
    cr_assert_eq(mm__bench_start_ready(&hold_, "mmguest", args), 0, "mmguest starts");
    uint32_t id = client_id_by_name("guest");
    cr_assert_neq(id, 0);
    return id;
}

/* Stop the guest, remove its files; the test fails unless it verified its
 * data. */
static void stop_guest_intact(const char *dir, const char *swap)
{
    bool intact = false;
    cr_assert_eq(mm__bench_hold_stop(&hold_, &intact), 0);
    hold_.pid = 0;
    unlink(swap);
    char idx[80];
    snprintf(idx, sizeof idx, "%s.idx", swap);
    unlink(idx);
    rmdir(dir);
    cr_assert(intact, "the guest verified its data and exited 0");
}

/* A guest model (its own userfaultfd for its swap, no host paging) is a
 * libmm client too: it keeps running its workload through the outage and
 * reconnects, and its data is intact. */
Test(restart, a_guest_keeps_running_and_reconnects)
{
    skip_without_uffd();
    start_daemon("512M");
    char dir[] = "/tmp/mm-restart-guest-XXXXXX", swap[64];
    uint32_t id = start_guest("mm", dir, swap, sizeof swap);
    crash_daemon();
    sleep_ms(500); /* rounds run on without a daemon */
    restart_daemon("512M", "30");
    cr_assert_eq(wait_client("guest", 10000), id, "the guest reconnected");
    stop_guest_intact(dir, swap);
}

/* A balloon guest's driver state is in its record: after kill -9 the new
 * daemon knows what the balloon holds, and deflate goes on from there. */
Test(restart, a_balloon_guest_keeps_its_balloon_across_kill_9)
{
    skip_without_uffd();
    start_daemon("512M");
    char dir[] = "/tmp/mm-restart-balloon-XXXXXX", swap[64];
    uint32_t id = start_guest("balloon", dir, swap, sizeof swap);
    const char *inflate[] = {"balloon", "guest", "32M", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, inflate, NULL), 0);
    cr_assert(wait_field(id, "balloon_bytes", 32 * MIB, 20000), "the balloon inflated");
    sleep_ms(300); /* the record is saved at the next tick */
    crash_daemon();
    restart_daemon("512M", "30");
    cr_assert_eq(wait_client("guest", 10000), id, "the guest reconnected");
    cr_assert_eq(client_field(id, "balloon_bytes"), 32 * MIB, "the balloon came from the record");
    const char *deflate[] = {"balloon", "guest", "64M", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, deflate, NULL), 0, "the target came from the record too");
    for (int t = 0; t < 20000 && client_field(id, "balloon_bytes") != 0; t += 20)
        sleep_ms(20);
    cr_assert_eq(client_field(id, "balloon_bytes"), 0, "the balloon deflated");
    stop_guest_intact(dir, swap);
}

Test(restart, a_damaged_record_is_refused_and_kept_aside)
{
    start_daemon("256M");
    start_hold("16M", "0", false);
    uint32_t id = client_id_by_name("hold");
    crash_daemon();
    char path[256], bad[300];
    snprintf(path, sizeof path, "%s/clients/%u", daemon_.dir, id);
    snprintf(bad, sizeof bad, "%s.bad", path);
    FILE *f = fopen(path, "r+");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 40, SEEK_SET), 0);
    cr_assert_eq(fputc('!', f), '!'); /* a byte of the body: the checksum fails */
    fclose(f);
    restart_daemon("256M", "30");
    cr_assert_eq(access(bad, F_OK), 0, "the record is kept as ID.bad");
    cr_assert_eq(records(), 0);
    sleep_ms(500);
    cr_assert_eq(client_id_by_name("hold"), 0, "the client is not taken back");
    stop_hold_intact(); /* its memory never depended on the daemon */
}

/* A client the dead daemon had frozen cannot reconnect by itself: the next
 * daemon puts its pages back from swap, continues it, and takes it back. */
Test(restart, a_client_frozen_by_the_dead_daemon_is_thawed_with_its_pages)
{
    start_daemon("256M");
    start_hold_with("96M", "0", true, false);
    uint32_t id = client_id_by_name("hold");
    cr_assert_eq(client_field(id, "host_paging"), 0);
    set_capacity("32M");
    cr_assert(wait_field(id, "paged_bytes", 32 * MIB, 30000), "it was frozen and paged out");
    cr_assert_eq(proc_state(hold_.pid), 'T');
    crash_daemon();
    cr_assert_eq(proc_state(hold_.pid), 'T', "still stopped while no daemon runs");
    restart_daemon("256M", "30");
    cr_assert_eq(wait_client("hold", 10000), id, "thawed, it reconnected");
    cr_assert_neq(proc_state(hold_.pid), 'T');
    cr_assert_eq(client_field(id, "paged_bytes"), 0, "its pages were put back");
    stop_hold_intact();
}

Test(restart, a_client_closed_during_the_outage_is_forgotten_at_once)
{
    start_daemon("256M");
    mm_client_t *c = open_linked("closed", 8 * MIB);
    cr_assert_eq(unlink(link_), 0);
    crash_daemon();
    mm_client_close(c); /* its goodbye reaches no daemon */
    restart_daemon("256M", "30");
    cr_assert_eq(records(), 0, "its process holds its region no more: forgotten");
}
