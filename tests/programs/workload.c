/* The workload of workload.h, over whichever runtime is linked with it. */
#include "workload.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK       (64u << 10)
#define BIG         (1u << 20)
#define MAX_LIVE    4096 /* 256 MiB of blocks */
#define MAX_GARBAGE 256  /* MiB */

/* Static, so that a GC sees the blocks as referenced. */
static uint64_t *live[MAX_LIVE], *more[MAX_LIVE];
static size_t nlive;

static uint64_t word(size_t block, size_t i, uint64_t salt)
{
    uint64_t x = (block * 0x9e3779b97f4a7c15ull) ^ (i * 0xbf58476d1ce4e5b9ull) ^ salt;
    return x ^ (x >> 29);
}

static void fill(uint64_t *b, size_t block, uint64_t salt)
{
    for (size_t i = 0; i < BLOCK / 8; i++)
        b[i] = word(block, i, salt);
}

static size_t bad_blocks(uint64_t *const *blocks, size_t n, uint64_t salt)
{
    size_t bad = 0;
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < BLOCK / 8; i++)
            if (blocks[k][i] != word(k, i, salt)) {
                bad++;
                break;
            }
    return bad;
}

/* All of it is held at once, then dropped at once: garbage the runtime cannot
 * reuse for itself while it is made. */
static char *garbage[MAX_GARBAGE];

static void make_garbage(size_t mib)
{
    for (size_t i = 0; i < mib; i++) {
        garbage[i] = rt_alloc(BIG);
        if (!garbage[i]) {
            fprintf(stderr, "out of memory making garbage\n");
            exit(3);
        }
        memset(garbage[i], 0x5a, BIG); /* make it resident */
    }
    for (size_t i = 0; i < mib; i++) {
        rt_free(garbage[i]);
        ((char *volatile *)garbage)[i] = NULL; /* a store the optimiser keeps */
    }
    rt_collect();
}

/* The child's part of fork mode; returns its exit status. */
static int forked_child(void)
{
    if (bad_blocks(live, nlive, 0) != 0)
        return 10; /* the copy is not the parent's heap at the fork */
    for (size_t k = 0; k < nlive; k++)
        fill(live[k], k, 1); /* the parent must not see this */
    if (bad_blocks(live, nlive, 1) != 0)
        return 11;
    for (size_t k = 0; k < nlive; k++) {
        more[k] = rt_alloc(BLOCK);
        if (!more[k])
            return 12;
        fill(more[k], k, 2);
    }
    return bad_blocks(more, nlive, 2) == 0 ? 0 : 13;
}

#define NTHREADS 4

/* Thread t allocates and fills every NTHREADS-th live block from t on. */
static void *alloc_share(void *arg)
{
    size_t t = (size_t)arg;
    for (size_t k = t; k < nlive; k += NTHREADS) {
        live[k] = rt_alloc(BLOCK);
        if (!live[k])
            return (void *)1;
        fill(live[k], k, 0);
    }
    return NULL;
}

static int alloc_live(bool threaded)
{
    if (!threaded) {
        for (size_t k = 0; k < nlive; k++) {
            live[k] = rt_alloc(BLOCK);
            if (!live[k])
                return -1;
            fill(live[k], k, 0);
        }
        return 0;
    }
    pthread_t th[NTHREADS];
    for (size_t t = 0; t < NTHREADS; t++)
        if (rt_thread_create(&th[t], alloc_share, (void *)t) != 0)
            return -1;
    int rc = 0;
    for (size_t t = 0; t < NTHREADS; t++)
        if (rt_thread_join(th[t]) != 0)
            rc = -1;
    for (size_t k = 0; k < nlive; k++)
        if (!live[k])
            rc = -1;
    return rc;
}

int workload_main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s LIVE_MIB GARBAGE_MIB wait|fork|threads|exec|spawn|now\n",
                argv[0]);
        return 2;
    }
    size_t live_mib = strtoul(argv[1], NULL, 10), garbage_mib = strtoul(argv[2], NULL, 10);
    const char *mode = argv[3];
    if (live_mib * (1u << 20) / BLOCK > MAX_LIVE || garbage_mib > MAX_GARBAGE) {
        fprintf(stderr, "LIVE_MIB or GARBAGE_MIB too large\n");
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);

    rt_init();
    /* Live blocks interleaved with garbage, so that the runtime has to
     * keep one and may give the other back. */
    nlive = live_mib * (1u << 20) / BLOCK;
    if (alloc_live(strcmp(mode, "threads") == 0) < 0) {
        fprintf(stderr, "out of memory\n");
        return 3;
    }
    make_garbage(garbage_mib);

    pid_t other = 0;
    if (strcmp(mode, "fork") == 0 || strcmp(mode, "threads") == 0) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            return 4;
        if (pid == 0)
            _exit(forked_child());
        int st = 0;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "forked child failed: status %d\n", st);
            return 5;
        }
        printf("forked ok\n");
    } else if (strcmp(mode, "exec") == 0 || strcmp(mode, "spawn") == 0) {
        bool wait_mode = strcmp(mode, "exec") == 0;
        fflush(NULL);
        other = fork();
        if (other < 0)
            return 4;
        if (other == 0) {
            /* Its own program: the preload and the request come with the
             * environment; SIGTERM stays blocked across exec, so one sent
             * before the copy's main waits for it is not lost. */
            execl("/proc/self/exe", argv[0], "1", "0", wait_mode ? "wait" : "now", (char *)NULL);
            _exit(127);
        }
        if (!wait_mode) {
            int st = 0;
            if (waitpid(other, &st, 0) != other || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return 6;
            return bad_blocks(live, nlive, 0) == 0 ? 0 : 1;
        }
    } else if (strcmp(mode, "now") == 0) {
        return bad_blocks(live, nlive, 0) == 0 ? 0 : 1;
    } else if (strcmp(mode, "wait") != 0) {
        fprintf(stderr, "bad mode %s\n", mode);
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    int rc = 0;
    if (other > 0) {
        int st = 0;
        kill(other, SIGTERM);
        if (waitpid(other, &st, 0) != other || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = 6;
    }
    size_t bad = bad_blocks(live, nlive, 0);
    if (bad) {
        fprintf(stderr, "%zu of %zu blocks damaged\n", bad, nlive);
        return 1;
    }
    return rc;
}
