/*
 * ladder: per-step counts, bytes and duration histograms of the reclaim
 * ladder (see ladder.h). The bounds are Prometheus's usual latency buckets
 * stretched down to 100 us, where a punch of a few chunks lands here.
 */
#include "ladder.h"

#include <stdatomic.h>

static const uint64_t bounds_ns[MM_LADDER_BUCKETS] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

static const char *const names[MM_STEP_COUNT] = {
    [MM_STEP_FREE] = "free",
    [MM_STEP_DISCARDABLE] = "discardable",
    [MM_STEP_REVOCATION] = "revocation",
    [MM_STEP_PAGING] = "host_paging",
    [MM_STEP_FREEZE] = "freeze",
};

const char *mm__ladder_step_name(enum mm_ladder_step step)
{
    return step < MM_STEP_COUNT ? names[step] : "unknown";
}

uint64_t mm__ladder_bound_ns(unsigned i)
{
    return i < MM_LADDER_BUCKETS ? bounds_ns[i] : UINT64_MAX;
}

void mm__ladder_observe(mm_ladder_t *l, enum mm_ladder_step step, uint64_t ns, uint64_t bytes)
{
    if (step >= MM_STEP_COUNT)
        return;
    mm_ladder_hist_t *h = &l->step[step];
    unsigned b = 0;
    while (b < MM_LADDER_BUCKETS && ns > bounds_ns[b])
        b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->bytes, bytes, memory_order_relaxed);
}

static json_t *step_json(mm_ladder_hist_t *h, const char *name)
{
    json_t *buckets = json_array();
    uint64_t cum = 0;
    for (unsigned b = 0; buckets && b < MM_LADDER_BUCKETS; b++) {
        cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
        json_array_append_new(buckets, json_pack("{s:I, s:I}", "le_ns", (json_int_t)bounds_ns[b],
                                                 "count", (json_int_t)cum));
    }
    /* The count is the buckets' sum as read here, so that the +Inf bucket
     * and the count always agree. */
    cum += atomic_load_explicit(&h->bucket[MM_LADDER_BUCKETS], memory_order_relaxed);
    return json_pack("{s:s, s:I, s:I, s:I, s:o*}", "step", name, "count", (json_int_t)cum, "sum_ns",
                     (json_int_t)atomic_load_explicit(&h->sum_ns, memory_order_relaxed), "bytes",
                     (json_int_t)atomic_load_explicit(&h->bytes, memory_order_relaxed), "buckets",
                     buckets);
}

json_t *mm__ladder_json(mm_ladder_t *l)
{
    json_t *a = json_array();
    for (unsigned s = 0; a && s < MM_STEP_COUNT; s++)
        json_array_append_new(a, step_json(&l->step[s], names[s]));
    return a;
}
