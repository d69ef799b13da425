/*
 * The shared skeleton of the programs that tests/integration/mmrun.c runs
 * under mmrun. They know nothing of mm: each is an ordinary program built
 * against one runtime (Boehm GC, jemalloc, or the C library's malloc) and
 * linked with nothing of mm's.
 *
 * usage: PROG LIVE_MIB GARBAGE_MIB MODE
 *   Keeps LIVE_MIB of checksummed 64 KiB blocks, makes GARBAGE_MIB of
 *   garbage in 1 MiB blocks, then by MODE:
 *     wait   print "ready", wait for SIGTERM, verify every block, exit 0
 *            if all is intact (1 if not);
 *     threads  as fork, with the live blocks allocated by four threads;
 *     fork   fork first: the child verifies the parent's blocks, overwrites
 *            them, allocates LIVE_MIB more and verifies that, and exits 0 if
 *            all held; the parent checks the child's status and that its own
 *            blocks are untouched, then goes on as in wait;
 *     exec   start a copy of itself in wait mode (fork + exec), print
 *            "ready", and on SIGTERM pass it on, reap it, verify, exit;
 *     spawn  run a copy of itself in now mode (fork + exec), then verify
 *            and exit (0 if both were intact);
 *     now    verify and exit at once.
 * A runtime file defines the allocation calls below.
 */
#ifndef MM_TEST_WORKLOAD_H
#define MM_TEST_WORKLOAD_H

#include <pthread.h>
#include <stddef.h>

/* Start and join a thread the runtime knows of (a GC must see its stack). */
int rt_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);
int rt_thread_join(pthread_t t);
/* Runtime start-up (GC_INIT for libgc). */
void rt_init(void);
/* A block whose content the runtime keeps while it is referenced. */
void *rt_alloc(size_t bytes);
/* Drop a block: free() where there is one; for a GC, the caller forgets it. */
void rt_free(void *p);
/* Give garbage back where the runtime needs a call for it (nothing for a GC
 * collected on revocation). */
void rt_collect(void);

int workload_main(int argc, char **argv);

#endif
