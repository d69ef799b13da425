/*
 * Child programs for benchmarks and tests: start mm's programs (mmsrv, mmhold,
 * mmctl) so that they die with their parent (PR_SET_PDEATHSIG), wait for a
 * line they print, signal them, reap them with a timeout, and find them next
 * to the running binary. Not thread-safe: one thread drives its children.
 */
#ifndef MM_PROCS_H
#define MM_PROCS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct mm_proc {
    pid_t pid;  /* 0 once reaped */
    int out_fd; /* read end of the child's stdout, or -1 */
    char buf[4096];
    size_t buf_len; /* bytes read but not yet consumed as lines */
} mm_proc_t;

/* Start argv[0] (a path) with argv; its stdout is captured when
 * capture_stdout, otherwise inherited; stderr is inherited. The child gets
 * SIGKILL when the calling thread exits. */
int mm__proc_spawn(mm_proc_t *p, char *const argv[], bool capture_stdout);

/* Read the child's stdout until a line equal to line; -ETIMEDOUT, or -EPIPE
 * if the child closed stdout first. */
int mm__proc_wait_line(mm_proc_t *p, const char *line, int timeout_ms);

/* Read the child's next stdout line into out (NUL-terminated, without the
 * newline); a line longer than cap - 1 is cut to fit. -ETIMEDOUT, or -EPIPE
 * if the child closed stdout first. */
int mm__proc_read_line(mm_proc_t *p, char *out, size_t cap, int timeout_ms);

int mm__proc_signal(const mm_proc_t *p, int sig);

/* Reap the child; after timeout_ms it is killed with SIGKILL and reaped.
 * *status gets the waitpid status. -ETIMEDOUT if it had to be killed. */
int mm__proc_wait(mm_proc_t *p, int timeout_ms, int *status);

/* Run argv to completion, capturing stdout into a malloc'd NUL-terminated
 * *out (caller frees). Killed after timeout_ms. */
int mm__proc_run(char *const argv[], char **out, int timeout_ms, int *status);

/* Path of one of mm's programs: $MM_BIN_DIR/prog, else the directory of the
 * running executable. Returns a static buffer per call site's copy. */
int mm__bin_path(const char *prog, char *out, size_t cap);

/* Wait until a Unix socket at path accepts a connection. */
int mm__wait_socket(const char *path, int timeout_ms);

#endif /* MM_PROCS_H */
