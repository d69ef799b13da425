/*
 * Benchmark results: the rows every mmbench subcommand reports, the meta
 * block describing the machine and the run, the JSON file written for
 * --json and the short table printed to stdout (docs: INTERFACES.md,
 * "mmbench"). A row is {scenario, system, metric, value, unit} plus optional
 * extra keys. An mm_results_t owns copies of everything added to it. Not
 * thread-safe.
 */
#ifndef MM_BENCH_RESULTS_H
#define MM_BENCH_RESULTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

typedef struct mm_results mm_results_t;

/* What a row measures; the strings are copied when the row is added. */
typedef struct mm_result_row {
    const char *scenario;
    const char *system;
    const char *metric;
    const char *unit;
} mm_result_row_t;

/* An extra integer key of a row, such as "rep", "threads" or "bytes". */
typedef struct mm_result_key {
    const char *key;
    int64_t value;
} mm_result_key_t;

/* Start a result set for a run invoked as argv (copied into meta.args).
 * On success *out owns the set until mm__results_free(). -ENOMEM. */
int mm__results_new(int argc, char *const argv[], mm_results_t **out);

void mm__results_free(mm_results_t *r);

/* Add one row with value and n_extra extra keys (extra may be NULL when
 * n_extra is 0). -EINVAL on a missing name, -ENOMEM. */
int mm__results_add(mm_results_t *r, const mm_result_row_t *row, double value,
                    const mm_result_key_t *extra, size_t n_extra);

/* Add one row whose value is the median of n samples (n >= 1), with the
 * extra keys "min", "max" and "reps" besides the caller's. The samples are
 * not modified. -EINVAL when n is 0. */
int mm__results_add_median(mm_results_t *r, const mm_result_row_t *row, const double *samples,
                           size_t n, const mm_result_key_t *extra, size_t n_extra);

/* The median of n samples (mean of the middle two when n is even); 0 when
 * n is 0. The samples are not modified. */
double mm__results_median(const double *samples, size_t n);

/* Note that scenario could not be run on system, and why (copied); written
 * as {"scenario", "system", "reason"} in the file's "not_run" list, never as
 * a row with a value. -EINVAL, -ENOMEM. */
int mm__results_not_run(mm_results_t *r, const char *scenario, const char *system,
                        const char *reason);

/* The rows added so far (a jansson array of objects, borrowed: valid until
 * the next add or mm__results_free()) and the "not_run" notes (the same). */
const json_t *mm__results_rows(const mm_results_t *r);
const json_t *mm__results_notes(const mm_results_t *r);

/* The meta block as written to files (a new reference the caller owns), or
 * NULL without memory. */
json_t *mm__results_meta(const mm_results_t *r);

/* Write {"meta": {...}, "results": [...]} (plus "not_run": [...] when
 * there are notes) to path. -errno on failure; a
 * failed write may leave a partial file. */
int mm__results_write_json(const mm_results_t *r, const char *path);

/* Print the rows as an aligned table. */
void mm__results_print_table(const mm_results_t *r, FILE *f);

#endif /* MM_BENCH_RESULTS_H */
