/*
 * Unit tests for the swap store (libmm/src/swapstore.c): pages put, synced
 * and read back, replacement and drop, a full store, a page damaged on disk,
 * the index file's records, refusal of tmpfs, bad arguments, concurrent use
 * on disjoint keys, and removal of the files. Every test works in its own
 * temp directory under /tmp (made by setup, emptied and removed by teardown),
 * with stores of a few hundred pages at most.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <zlib.h>

#include "swapstore.h"

#define PAGE        MM_SWAP_PAGE_BYTES
#define RECORD      16u /* bytes of one index record {key, crc, seq} */
#define EMPTY_KEY   UINT64_MAX
#define THREADS     UINT64_C(4)
#define THREAD_KEYS UINT64_C(64)

/* The test's own directory and store path (Criterion forks per test). */
static char dir[64];
static char path[128];
static char idx_path[160];

static void setup(void)
{
    strcpy(dir, "/tmp/mm-swap-XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/swap", dir);
    snprintf(idx_path, sizeof idx_path, "%s.idx", path);
}

/* Entries of dir other than . and .. */
static int dir_entries(void)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void teardown(void)
{
    /* Ignored: either file may be gone already (close with remove). */
    unlink(idx_path);
    unlink(path);
    rmdir(dir);
}

static mm_swap_t *open_store(uint64_t slots, uint64_t max_keys)
{
    mm_swap_t *s = NULL;
    int err = mm__swap_open(path, slots, max_keys, &s);
    cr_assert_eq(err, 0, "mm__swap_open: %s", strerror(-err));
    cr_assert_not_null(s);
    return s;
}

/* A page whose every byte depends on key and version (xorshift64). */
static void fill_page(uint8_t *page, uint64_t key, uint64_t version)
{
    uint64_t x = (key + 1) * 0x9e3779b97f4a7c15u ^ (version + 1) * 0xbf58476d1ce4e5b9u;
    for (size_t i = 0; i < PAGE; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(page + i, &x, 8);
    }
}

static void put_page(mm_swap_t *s, uint64_t key, uint64_t version)
{
    uint8_t page[PAGE];
    fill_page(page, key, version);
    int err = mm__swap_put(s, key, page);
    cr_assert_eq(err, 0, "put key %llu: %s", (unsigned long long)key, strerror(-err));
}

static void expect_page(mm_swap_t *s, uint64_t key, uint64_t version)
{
    uint8_t want[PAGE], got[PAGE];
    fill_page(want, key, version);
    int err = mm__swap_get(s, key, got);
    cr_assert_eq(err, 0, "get key %llu: %s", (unsigned long long)key, strerror(-err));
    cr_assert_eq(memcmp(want, got, PAGE), 0, "key %llu: wrong bytes", (unsigned long long)key);
}

/* The slot that holds key, from its offset in the data file. */
static uint64_t slot_of(mm_swap_t *s, uint64_t key)
{
    int fd = -1;
    uint64_t off = 0;
    cr_assert_eq(mm__swap_locate(s, key, &fd, &off), 0);
    cr_assert_eq(off % PAGE, 0);
    return off / PAGE;
}

/* ---- Round trips ---------------------------------------------------------- */

Test(swapstore, pages_round_trip_when_put_and_synced, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(256, 1000);
    for (uint64_t k = 0; k < 200; k++)
        put_page(s, k * 5, 0);
    cr_assert_eq(mm__swap_sync(s), 0);
    for (uint64_t k = 0; k < 200; k++) {
        cr_assert(mm__swap_has(s, k * 5));
        expect_page(s, k * 5, 0);
    }
    cr_assert_not(mm__swap_has(s, 1));

    mm_swap_stats_t st;
    mm__swap_stats(s, &st);
    cr_assert_eq(st.slots, 256);
    cr_assert_eq(st.used, 200);
    cr_assert_eq(st.puts, 200);
    cr_assert_eq(st.gets, 200);
    cr_assert_eq(st.bad_pages, 0);
    cr_assert_eq(st.syncs, 1);
    mm__swap_close(s, true);
}

Test(swapstore, get_enoent_when_key_not_stored, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(8, 16);
    uint8_t page[PAGE];
    memset(page, 0xab, PAGE);
    cr_assert_eq(mm__swap_get(s, 3, page), -ENOENT);
    cr_assert_eq(page[0], 0xab, "a failed get left the caller's buffer alone");

    put_page(s, 3, 0);
    cr_assert_eq(mm__swap_drop(s, 3), 0);
    cr_assert_eq(mm__swap_get(s, 3, page), -ENOENT);
    cr_assert_eq(mm__swap_drop(s, 3), -ENOENT);
    int fd;
    uint64_t off;
    cr_assert_eq(mm__swap_locate(s, 3, &fd, &off), -ENOENT);
    cr_assert_not(mm__swap_has(s, 3));
    mm__swap_close(s, true);
}

Test(swapstore, put_replaces_page_when_key_put_again, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(8, 16);
    put_page(s, 7, 0);
    put_page(s, 7, 1);
    expect_page(s, 7, 1);

    mm_swap_stats_t st;
    mm__swap_stats(s, &st);
    cr_assert_eq(st.used, 1, "a replaced page frees its old slot");
    cr_assert_eq(st.puts, 2);
    mm__swap_close(s, true);
}

/* ---- A full store ----------------------------------------------------------- */

Test(swapstore, put_succeeds_when_drop_freed_a_slot_of_full_store, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(4, 16);
    for (uint64_t k = 0; k < 4; k++)
        put_page(s, k, 0);
    uint8_t page[PAGE];
    fill_page(page, 9, 0);
    cr_assert_eq(mm__swap_put(s, 9, page), -ENOSPC);

    cr_assert_eq(mm__swap_drop(s, 2), 0);
    put_page(s, 9, 0);
    expect_page(s, 9, 0);
    for (uint64_t k = 0; k < 4; k++)
        if (k != 2)
            expect_page(s, k, 0);
    mm__swap_close(s, true);
}

Test(swapstore, put_enospc_keeps_every_page_when_store_full, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(8, 64);
    for (uint64_t k = 0; k < 8; k++)
        put_page(s, k + 10, 0);
    uint8_t page[PAGE];
    fill_page(page, 40, 0);
    cr_assert_eq(mm__swap_put(s, 40, page), -ENOSPC);
    cr_assert_not(mm__swap_has(s, 40));
    /* Replacing needs a free slot too (the old copy stays until the new one
     * is written), so it also fails and keeps the old copy. */
    fill_page(page, 12, 1);
    cr_assert_eq(mm__swap_put(s, 12, page), -ENOSPC);

    cr_assert_eq(mm__swap_sync(s), 0);
    for (uint64_t k = 0; k < 8; k++)
        expect_page(s, k + 10, 0);
    mm_swap_stats_t st;
    mm__swap_stats(s, &st);
    cr_assert_eq(st.used, 8);
    cr_assert_eq(st.puts, 8);
    mm__swap_close(s, true);
}

/* ---- Damage on disk --------------------------------------------------------- */

Test(swapstore, get_ebadmsg_when_page_damaged_on_disk, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(16, 16);
    for (uint64_t k = 0; k < 6; k++)
        put_page(s, k, 0);
    cr_assert_eq(mm__swap_sync(s), 0);

    int fd = -1;
    uint64_t off = 0;
    cr_assert_eq(mm__swap_locate(s, 4, &fd, &off), 0);
    uint8_t byte;
    cr_assert_eq(pread(fd, &byte, 1, (off_t)(off + 1234)), 1);
    byte ^= 0x20;
    cr_assert_eq(pwrite(fd, &byte, 1, (off_t)(off + 1234)), 1);

    uint8_t damaged[PAGE], got[PAGE];
    fill_page(damaged, 4, 0);
    damaged[1234] ^= 0x20;
    cr_assert_eq(mm__swap_get(s, 4, got), -EBADMSG);
    cr_assert_neq(memcmp(got, damaged, PAGE), 0, "the damaged page reached the caller");
    cr_assert(mm__swap_has(s, 4), "a damaged page stays stored");
    cr_assert_eq(mm__swap_get(s, 4, got), -EBADMSG);

    mm_swap_stats_t st;
    mm__swap_stats(s, &st);
    cr_assert_eq(st.bad_pages, 2);
    for (uint64_t k = 0; k < 6; k++)
        if (k != 4)
            expect_page(s, k, 0);
    mm__swap_close(s, true);
}

/* ---- The index file --------------------------------------------------------- */

struct record {
    uint64_t key;
    uint32_t crc;
    uint32_t seq;
};

/* Record of slot from PATH.idx, whose header is whatever precedes slots
 * records at the end of the file. */
static struct record read_record(uint64_t slots, uint64_t slot)
{
    int fd = open(idx_path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "open %s: %s", idx_path, strerror(errno));
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    cr_assert_gt((uint64_t)sb.st_size, slots * RECORD, "index has room for a header");
    uint64_t header = (uint64_t)sb.st_size - slots * RECORD;
    cr_assert_leq(header, 4096, "index header of %llu bytes", (unsigned long long)header);
    struct record r;
    cr_assert_eq(pread(fd, &r, sizeof r, (off_t)(header + slot * RECORD)), (ssize_t)sizeof r);
    close(fd);
    return r;
}

Test(swapstore, index_records_match_when_synced, .init = setup, .fini = teardown)
{
    enum { SLOTS = 32 };
    mm_swap_t *s = open_store(SLOTS, 100);
    for (uint64_t slot = 0; slot < SLOTS; slot++)
        cr_assert_eq(read_record(SLOTS, slot).key, EMPTY_KEY, "slot %llu empty at open",
                     (unsigned long long)slot);

    put_page(s, 42, 0);
    put_page(s, 77, 0);
    cr_assert_eq(mm__swap_sync(s), 0);

    uint8_t page[PAGE];
    fill_page(page, 42, 0);
    uint64_t slot42 = slot_of(s, 42);
    struct record r = read_record(SLOTS, slot42);
    cr_assert_eq(r.key, 42);
    cr_assert_eq(r.crc, (uint32_t)crc32(0L, page, PAGE));
    uint32_t seq42 = r.seq;

    /* Replacing writes a new record with a later seq and clears the old. */
    put_page(s, 42, 1);
    cr_assert_eq(mm__swap_sync(s), 0);
    uint64_t slot42b = slot_of(s, 42);
    cr_assert_neq(slot42b, slot42);
    fill_page(page, 42, 1);
    r = read_record(SLOTS, slot42b);
    cr_assert_eq(r.key, 42);
    cr_assert_eq(r.crc, (uint32_t)crc32(0L, page, PAGE));
    cr_assert_gt(r.seq, seq42);
    cr_assert_eq(read_record(SLOTS, slot42).key, EMPTY_KEY);

    /* A drop clears its record. */
    uint64_t slot77 = slot_of(s, 77);
    cr_assert_eq(read_record(SLOTS, slot77).key, 77);
    cr_assert_eq(mm__swap_drop(s, 77), 0);
    cr_assert_eq(mm__swap_sync(s), 0);
    cr_assert_eq(read_record(SLOTS, slot77).key, EMPTY_KEY);
    mm__swap_close(s, true);
}

/* ---- Refusals ----------------------------------------------------------------- */

Test(swapstore, open_exdev_when_path_on_tmpfs, .init = setup, .fini = teardown)
{
    struct statfs sfs;
    if (statfs("/dev/shm", &sfs) != 0 || sfs.f_type != TMPFS_MAGIC)
        cr_skip_test("/dev/shm is not a tmpfs here");
    char shm_path[64], shm_idx[80];
    snprintf(shm_path, sizeof shm_path, "/dev/shm/mm-swap-test-%ld", (long)getpid());
    snprintf(shm_idx, sizeof shm_idx, "%s.idx", shm_path);

    mm_swap_t *s = NULL;
    cr_assert_eq(mm__swap_open(shm_path, 8, 8, &s), -EXDEV);
    cr_assert_null(s);
    cr_assert_neq(access(shm_path, F_OK), 0, "the data file was left behind");
    cr_assert_neq(access(shm_idx, F_OK), 0, "the index file was left behind");
}

Test(swapstore, calls_einval_when_arguments_bad, .init = setup, .fini = teardown)
{
    const uint64_t too_many = UINT64_C(0xffffffff); /* limit is 2^32 - 2 */
    mm_swap_t *s = NULL;
    cr_assert_eq(mm__swap_open(path, 0, 8, &s), -EINVAL);
    cr_assert_eq(mm__swap_open(path, 8, 0, &s), -EINVAL);
    cr_assert_eq(mm__swap_open(path, too_many, 8, &s), -EINVAL);
    cr_assert_eq(mm__swap_open(path, 8, too_many, &s), -EINVAL);
    cr_assert_eq(mm__swap_open(path, UINT64_MAX, 8, &s), -EINVAL);
    cr_assert_eq(mm__swap_open(NULL, 8, 8, &s), -EINVAL);
    cr_assert_eq(mm__swap_open(path, 8, 8, NULL), -EINVAL);
    cr_assert_null(s);
    cr_assert_eq(dir_entries(), 0, "a refused open created files");

    s = open_store(8, 16);
    uint8_t page[PAGE];
    fill_page(page, 0, 0);
    int fd;
    uint64_t off;
    cr_assert_eq(mm__swap_put(s, 16, page), -EINVAL);
    cr_assert_eq(mm__swap_put(s, UINT64_MAX, page), -EINVAL);
    cr_assert_eq(mm__swap_put(s, 1, NULL), -EINVAL);
    cr_assert_eq(mm__swap_get(s, 16, page), -EINVAL);
    cr_assert_eq(mm__swap_get(s, 1, NULL), -EINVAL);
    cr_assert_eq(mm__swap_drop(s, 16), -EINVAL);
    cr_assert_eq(mm__swap_locate(s, 16, &fd, &off), -EINVAL);
    cr_assert_not(mm__swap_has(s, 16));

    mm_swap_stats_t st;
    mm__swap_stats(s, &st);
    cr_assert_eq(st.used, 0);
    cr_assert_eq(st.puts, 0);
    mm__swap_close(s, true);
}

/* ---- Threads ---------------------------------------------------------------- */

struct worker {
    mm_swap_t *s;
    uint64_t first_key;
    int failures;
};

/* Put, read back, replace and drop this thread's own keys, many rounds. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint8_t want[PAGE], got[PAGE];
    for (uint64_t round = 0; round < 20; round++) {
        for (uint64_t i = 0; i < THREAD_KEYS; i++) {
            uint64_t key = w->first_key + i;
            fill_page(want, key, round);
            if (mm__swap_put(w->s, key, want) != 0)
                w->failures++;
        }
        for (uint64_t i = 0; i < THREAD_KEYS; i++) {
            uint64_t key = w->first_key + i;
            fill_page(want, key, round);
            if (mm__swap_get(w->s, key, got) != 0 || memcmp(want, got, PAGE) != 0)
                w->failures++;
            /* Drop every third key, so that slots move between threads. */
            if ((key + round) % 3 == 0 && mm__swap_drop(w->s, key) != 0)
                w->failures++;
        }
    }
    return NULL;
}

Test(swapstore, threads_verify_when_using_disjoint_keys, .init = setup, .fini = teardown,
     .timeout = 60)
{
    /* Room for every key plus one replacement in flight per thread. */
    mm_swap_t *s = open_store(THREADS * THREAD_KEYS + THREADS, THREADS * THREAD_KEYS);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.s = s, .first_key = (uint64_t)i * THREAD_KEYS};
        cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        cr_assert_eq(pthread_join(t[i], NULL), 0);
        cr_assert_eq(w[i].failures, 0, "thread %u: %d failures", i, w[i].failures);
    }
    cr_assert_eq(mm__swap_sync(s), 0);

    mm_swap_stats_t st;
    mm__swap_stats(s, &st);
    cr_assert_eq(st.puts, THREADS * THREAD_KEYS * 20);
    cr_assert_eq(st.bad_pages, 0);
    for (uint64_t key = 0; key < THREADS * THREAD_KEYS; key++) {
        if ((key + 19) % 3 == 0)
            cr_assert_not(mm__swap_has(s, key));
        else
            expect_page(s, key, 19);
    }
    mm__swap_close(s, true);
}

/* ---- Close ------------------------------------------------------------------ */

Test(swapstore, close_leaves_no_files_when_remove, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(8, 8);
    put_page(s, 1, 0);
    cr_assert_eq(dir_entries(), 2);
    mm__swap_close(s, true);
    cr_assert_eq(dir_entries(), 0);

    /* Without remove, both files stay. */
    s = open_store(8, 8);
    put_page(s, 1, 0);
    mm__swap_close(s, false);
    cr_assert_eq(access(path, F_OK), 0);
    cr_assert_eq(access(idx_path, F_OK), 0);
}

Test(swapstore, reopen_reads_back_what_a_crashed_owner_left, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(16, 64);
    for (uint64_t k = 0; k < 8; k++)
        put_page(s, k * 3, 1);
    put_page(s, 3, 2); /* replaced: the later put wins */
    cr_assert_eq(mm__swap_drop(s, 6), 0);
    cr_assert_eq(mm__swap_sync(s), 0);
    mm__swap_close(s, false); /* the owner is gone; the files stay */

    mm_swap_t *r = NULL;
    cr_assert_eq(mm__swap_reopen(path, 16, 64, &r), 0);
    mm_swap_stats_t st;
    mm__swap_stats(r, &st);
    cr_assert_eq(st.used, 7);
    for (uint64_t k = 0; k < 8; k++) {
        if (k == 2) {
            cr_assert_not(mm__swap_has(r, 6), "a dropped page stays dropped");
            continue;
        }
        expect_page(r, k * 3, k == 1 ? 2 : 1);
    }
    /* New pages go to the free slots only: nine fit, the tenth does not,
     * and every page read back above is still there. */
    for (uint64_t k = 40; k < 49; k++)
        put_page(r, k, 1);
    uint8_t page[PAGE];
    fill_page(page, 49, 1);
    cr_assert_eq(mm__swap_put(r, 49, page), -ENOSPC);
    for (uint64_t k = 0; k < 8; k++)
        if (k != 2)
            expect_page(r, k * 3, k == 1 ? 2 : 1);
    mm__swap_close(r, true);
}

Test(swapstore, reopen_refuses_a_damaged_or_foreign_index, .init = setup, .fini = teardown)
{
    mm_swap_t *s = open_store(16, 64);
    put_page(s, 5, 1);
    cr_assert_eq(mm__swap_sync(s), 0);
    mm__swap_close(s, false);
    mm_swap_t *r = NULL;
    cr_assert_eq(mm__swap_reopen(path, 32, 64, &r), -EBADMSG, "another size is refused");
    int fd = open(idx_path, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, "XXXX", 4, 0), 4);
    close(fd);
    cr_assert_eq(mm__swap_reopen(path, 16, 64, &r), -EBADMSG, "a damaged header is refused");
    cr_assert_null(r);
    unlink(idx_path);
    cr_assert_eq(mm__swap_reopen(path, 16, 64, &r), -ENOENT, "no index, no store");
}
