/*
 * mmbench internals: the subcommands' entry points and the harness they
 * share (harness.c) to run a throw-away daemon in a temp state directory,
 * mmhold clients against it, and mmctl calls against its admin socket.
 * A mm_bench_daemon_t owns its child process and its state directory until
 * mm__bench_daemon_stop(). Not thread-safe: one thread drives all children.
 */
#ifndef MM_BENCH_H
#define MM_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "procs.h"
#include "results.h"

#define MM_MIB (1024ull * 1024)

/* Options common to all subcommands. */
typedef struct mm_bench_opts {
    bool quick;            /* fewer or shorter repetitions */
    int reps;              /* repetitions asked for; 0: the subcommand's default */
    const char *threads;   /* --threads N,...: thread counts, or NULL */
    const char *scenarios; /* --scenario NAME,... (run), or NULL: all */
    const char *out_dir;   /* --out DIR (run), or NULL: the default */
    double minutes;        /* --minutes N (soak); 0: the subcommand's default */
} mm_bench_opts_t;

/* Subcommands: run, add rows to res, print what they do. 0 when every step
 * worked and the verdict is good; MM_BENCH_VERDICT_FAILED when everything
 * ran but data was damaged or a target missed (reported already); else a
 * negative errno. Rows measured before a failure stay in res. */
#define MM_BENCH_VERDICT_FAILED 1

int mm__bench_cut(const mm_bench_opts_t *opts, mm_results_t *res);
int mm__bench_gc(const mm_bench_opts_t *opts, mm_results_t *res);
int mm__bench_guests(const mm_bench_opts_t *opts, mm_results_t *res);
int mm__bench_demo(const mm_bench_opts_t *opts, mm_results_t *res);
int mm__bench_alloc(const mm_bench_opts_t *opts, mm_results_t *res);
int mm__bench_rtt(const mm_bench_opts_t *opts, mm_results_t *res);
/* The scale part of rtt alone (rows of scenario "scale"), for `run`. */
int mm__bench_scale(const mm_bench_opts_t *opts, mm_results_t *res);
int mm__bench_run(const mm_bench_opts_t *opts, mm_results_t *res);
/* 0 when list names only run's scenarios (comma-separated), else -EINVAL. */
int mm__bench_run_check_scenarios(const char *list);
int mm__bench_soak(const mm_bench_opts_t *opts, mm_results_t *res);

/* A daemon started in a fresh temp directory: dir/mm.sock and
 * dir/admin.sock. */
typedef struct mm_bench_daemon {
    char dir[64];
    char sock[128];
    char admin_sock[128];
    mm_proc_t proc;
} mm_bench_daemon_t;

/* Start `mmsrv --foreground --state-dir DIR --capacity capacity` (plus
 * --log-level log_level unless NULL) and wait until both sockets accept.
 * On failure nothing is left running and the directory is removed. */
int mm__bench_daemon_start(mm_bench_daemon_t *d, const char *capacity, const char *log_level);

/* The same with up to 8 more mmsrv arguments (extra is NULL-terminated). */
int mm__bench_daemon_start_with(mm_bench_daemon_t *d, const char *capacity, const char *log_level,
                                const char *const extra[]);

/* Send the daemon sig (SIGKILL: a crash; SIGTERM: an orderly stop) and
 * reap it (killed after 10 s), keeping its state directory, so that
 * mm__bench_daemon_restart() can start the next one there. */
int mm__bench_daemon_kill(mm_bench_daemon_t *d, int sig);

/* Start mmsrv again on d's state directory (its clients reconnect). On
 * failure nothing is left running and the directory stays. */
int mm__bench_daemon_restart(mm_bench_daemon_t *d, const char *capacity, const char *log_level,
                             const char *const extra[]);

/* SIGTERM the daemon, reap it (killed after 10 s) and remove its
 * directory. 0 if it exited with status 0. */
int mm__bench_daemon_stop(mm_bench_daemon_t *d);

/* Start `mmhold --socket SOCK --name name --hold hold --free free_size` and
 * wait up to 60 s for its "ready" line. On failure it is killed and
 * reaped. */
int mm__bench_hold_start(mm_proc_t *p, const mm_bench_daemon_t *d, const char *name,
                         const char *hold, const char *free_size);

/* Start one of mm's programs by name with args (NULL-terminated, at most
 * 22) and wait up to 60 s for its "ready" line; on failure it is killed and
 * reaped. */
int mm__bench_start_ready(mm_proc_t *p, const char *prog_name, const char *const args[]);

/* The floor of taking memory back: ms for one fallocate(PUNCH_HOLE) of
 * cut_bytes out of a populated memfd of held_bytes; < 0 if it failed. */
double mm__bench_punch_floor_ms(uint64_t held_bytes, uint64_t cut_bytes);

/* SIGTERM an mmhold (or any program that verifies its data on SIGTERM and
 * exits 0 when intact) and reap it (killed after 60 s); *intact is true iff
 * it exited with status 0, i.e. verified all its data. */
int mm__bench_hold_stop(mm_proc_t *p, bool *intact);

/* Run `mmctl --admin-socket ADMIN args...` (args NULL-terminated, at most
 * 12). With out, stdout is captured into a malloc'd string the caller
 * frees; without, it is inherited. -EIO if mmctl exits non-zero. */
int mm__bench_ctl(const mm_bench_daemon_t *d, const char *const args[], char **out);

/* One request line straight to the admin socket (no mmctl process, so that
 * timings carry no process start), its JSON reply parsed into *reply (the
 * caller owns it). An {"error": ...} reply is printed and is -EIO. */
int mm__bench_admin(const mm_bench_daemon_t *d, const char *request, json_t **reply);

/* The daemon's status (what `mmctl --json status` prints), through
 * mm__bench_admin(). On success the caller owns *status. */
int mm__bench_ctl_status(const mm_bench_daemon_t *d, json_t **status);

/* Poll status every 1 ms until resident_bytes <= limit_bytes; then *status
 * (owned by the caller) is the status that showed it. -ETIMEDOUT. */
int mm__bench_wait_resident(const mm_bench_daemon_t *d, uint64_t limit_bytes, int timeout_ms,
                            json_t **status);

/* An unsigned integer field of a JSON object (true counts as 1); 0 if
 * missing, false or negative. */
uint64_t mm__bench_json_u64(const json_t *obj, const char *key);

/* Remove dir and everything under it (best effort: what cannot be removed
 * is reported on stderr and skipped). */
void mm__bench_rm_rf(const char *dir);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t mm__bench_now_ns(void);

#endif /* MM_BENCH_H */
