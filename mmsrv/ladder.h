/*
 * ladder: what each step of the reclaim ladder (DESIGN.md section 5) did —
 * how often it ran, the bytes it took and how long its work lasted, as a
 * histogram with fixed bucket bounds (the Prometheus histogram model). One
 * mm_ladder_t per daemon, in mm_server_t. Observations are relaxed atomic
 * adds, so reclaim workers and the loop thread may record at once; a reader
 * (the status reply) may see one observation half added, which the next
 * reading corrects.
 */
#ifndef MM_LADDER_H
#define MM_LADDER_H

#include <jansson.h>
#include <stdint.h>

enum mm_ladder_step {
    MM_STEP_FREE,        /* 1: free chunks taken by the host (one scan's punches) */
    MM_STEP_DISCARDABLE, /* 2: discardable chunks taken (one scan's punches) */
    MM_STEP_REVOCATION,  /* 3: a revocation, from its posting to the answer */
    MM_STEP_PAGING,      /* 4: one batch of host paging through a userfaultfd */
    MM_STEP_FREEZE,      /* 5: one batch paged out of a frozen client */
    MM_STEP_COUNT
};

/* Upper bounds of the buckets in ns (100 us .. 10 s); +Inf is implied. */
#define MM_LADDER_BUCKETS 16

typedef struct mm_ladder_hist {
    _Atomic uint64_t sum_ns;                        /* their durations added */
    _Atomic uint64_t bytes;                         /* bytes the step took back, in all */
    _Atomic uint64_t bucket[MM_LADDER_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
} mm_ladder_hist_t;

typedef struct mm_ladder {
    mm_ladder_hist_t step[MM_STEP_COUNT];
} mm_ladder_t;

/* The step's name as shown in status and metrics ("free", "discardable",
 * "revocation", "host_paging", "freeze"). */
const char *mm__ladder_step_name(enum mm_ladder_step step);

/* Bucket bound i in ns (i < MM_LADDER_BUCKETS). */
uint64_t mm__ladder_bound_ns(unsigned i);

/* Record one run of step that lasted ns and took bytes. Any thread. */
void mm__ladder_observe(mm_ladder_t *l, enum mm_ladder_step step, uint64_t ns, uint64_t bytes);

/* The status reply's "ladder" array: per step {"step", "count", "sum_ns",
 * "bytes", "buckets": [{"le_ns", "count"} cumulative, one per bound]}.
 * NULL without memory. The caller owns the result. */
json_t *mm__ladder_json(mm_ladder_t *l);

#endif /* MM_LADDER_H */
