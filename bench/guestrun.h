/*
 * Guests for benchmarks: the one module that runs an mmguest (a guest-OS
 * model) with a memory driver and a workload against a benchmark daemon
 * (bench.h), reads its statistics, asks for a lower or higher memory size the
 * driver's way and waits until the guest's resident bytes (the daemon's
 * kernel-truth count) get there, then stops it and reports whether its data
 * stayed intact.
 *
 * The driver's way of asking (INTERFACES.md, mmctl):
 *   mm          `set NAME target=SIZE` (the shared paging interface);
 *   balloon     `balloon NAME SIZE`: the memory the guest keeps;
 *   virtio-mem  `virtio-mem NAME SIZE`: the requested (plugged) size;
 *   fpr         nothing to ask: free page reporting has no target, the
 *               guest reports free blocks by itself.
 *
 * An mm_guestrun_t owns its mmguest process and a scratch directory (on /tmp,
 * which must not be tmpfs: the guest's swap store refuses it) with the
 * guest's swap file and disk image, from a successful mm__guestrun_start()
 * until mm__guestrun_stop(). Not thread-safe: one thread drives a guest.
 */
#ifndef MM_BENCH_GUESTRUN_H
#define MM_BENCH_GUESTRUN_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "bench.h"

/* The drivers a guest may run, by their mmguest --driver names. */
extern const char *const mm__guestrun_drivers[];
#define MM_GUESTRUN_N_DRIVERS 4

/* What guest to run. */
typedef struct mm_guestrun_cfg {
    const char *driver;   /* "mm", "balloon", "fpr" or "virtio-mem" */
    const char *name;     /* client name, unique on the daemon */
    uint64_t ram_bytes;   /* guest-physical RAM */
    const char *workload; /* mmguest --workload SPEC */
    uint64_t swap_bytes;  /* swap device size; 0: no swap device */
    uint64_t cache_bytes; /* page-cache limit over a disk image; 0: no disk */
} mm_guestrun_cfg_t;

typedef struct mm_guestrun {
    mm_proc_t proc;
    char dir[64];    /* scratch directory, removed by mm__guestrun_stop() */
    char name[64];   /* the client's name on the daemon */
    char driver[16]; /* the driver it runs */
} mm_guestrun_t;

/*
 * Start mmguest against d with cfg and wait (up to 60 s) for its "ready".
 * -ENOTSUP when this mmguest does not know cfg->driver (it exits with status
 * 2 on a bad argument: reported by mmguest on stderr). On failure nothing is
 * left running and the scratch directory is gone.
 */
int mm__guestrun_start(mm_guestrun_t *g, const mm_bench_daemon_t *d, const mm_guestrun_cfg_t *cfg);

/* Ask the guest for its statistics (SIGUSR1) and parse the JSON line it
 * prints; on success the caller owns *stats. -ETIMEDOUT after 30 s. */
int mm__guestrun_stats(mm_guestrun_t *g, json_t **stats);

/* The guest's entry in the daemon's status; on success the caller owns
 * *entry. -ENOENT when the daemon does not list it. */
int mm__guestrun_client(const mm_guestrun_t *g, const mm_bench_daemon_t *d, json_t **entry);

/* Ask for a memory size of bytes the driver's way (see the top); a no-op
 * for fpr. The daemon's reply is dropped. */
int mm__guestrun_ask(const mm_guestrun_t *g, const mm_bench_daemon_t *d, uint64_t bytes);

/* Poll the daemon's status (every 1 ms) until the guest's resident bytes
 * are at most bytes (grow false) or at least bytes (grow true); *resident
 * gets the last count seen, also on -ETIMEDOUT after timeout_ms. */
int mm__guestrun_wait(const mm_guestrun_t *g, const mm_bench_daemon_t *d, uint64_t bytes, bool grow,
                      int timeout_ms, uint64_t *resident);

/* mm__guestrun_ask() then mm__guestrun_wait(); *ms is the time from the
 * request to the count that showed it (with a status poll's delay). */
int mm__guestrun_resize(const mm_guestrun_t *g, const mm_bench_daemon_t *d, uint64_t bytes,
                        bool grow, int timeout_ms, double *ms, uint64_t *resident);

/*
 * SIGTERM the guest, wait (up to 120 s, then kill) for its final JSON line
 * and its exit, and remove its scratch directory. *intact is true iff it
 * verified all its data (exit status 0). With final, the final statistics
 * line (with "data_intact") goes to *final, owned by the caller, or NULL if
 * it printed none. Always releases g.
 */
int mm__guestrun_stop(mm_guestrun_t *g, bool *intact, json_t **final);

#endif /* MM_BENCH_GUESTRUN_H */
