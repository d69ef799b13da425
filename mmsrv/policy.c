/*
 * Policy: weighted max-min fair targets over demand (see policy.h).
 *
 * A water level L (bytes per unit of weight) sets every target at once:
 * target_i(L) = clamp(weight_i * L, floor_i, ceiling_i), where floor_i is the
 * reservation (capped by demand and limit) and ceiling_i is min(demand,
 * limit). The sum grows with L, so the highest level whose sum fits capacity
 * is found by bisection. A reservation is a floor, not an addition: a client
 * whose fair share already exceeds its reservation gets no more for it.
 */
#include "policy.h"

#include <mm/protocol.h>

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static uint64_t ceiling_of(const mm_policy_input_t *in)
{
    return min_u64(in->demand_bytes, in->max_bytes);
}

static uint64_t floor_of(const mm_policy_input_t *in)
{
    return min_u64(in->min_bytes, ceiling_of(in));
}

/* A level is bytes per unit of weight, a real number: integer levels would
 * lose up to a weight's worth of bytes per client to rounding. */
static uint64_t target_at(const mm_policy_input_t *in, long double level)
{
    long double share = (long double)(in->weight ? in->weight : 1) * level;
    uint64_t t = share >= (long double)ceiling_of(in) ? ceiling_of(in) : (uint64_t)share;
    return t > floor_of(in) ? t : floor_of(in);
}

/* Sum of targets at level, saturating instead of overflowing. */
static uint64_t sum_at(const mm_policy_input_t *in, size_t n, long double level)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t t = target_at(&in[i], level);
        sum = sum > UINT64_MAX - t ? UINT64_MAX : sum + t;
    }
    return sum;
}

void mm__policy_targets(uint64_t capacity_bytes, const mm_policy_input_t *in, size_t n,
                        uint64_t *target)
{
    /* Bisect for the highest level that fits; at level hi every client is
     * at its ceiling (weights are >= 1). 128 halvings of a 64-bit range
     * leave far less than a byte. */
    long double lo = 0, hi = 0;
    for (size_t i = 0; i < n; i++)
        if ((long double)ceiling_of(&in[i]) > hi)
            hi = (long double)ceiling_of(&in[i]);
    if (sum_at(in, n, hi) <= capacity_bytes) {
        lo = hi;
    } else {
        for (int i = 0; i < 128; i++) {
            long double mid = (lo + hi) / 2;
            if (sum_at(in, n, mid) <= capacity_bytes)
                lo = mid;
            else
                hi = mid;
        }
    }
    /* Targets are enforced in whole chunks: round down, but never below the
     * reservation. */
    for (size_t i = 0; i < n; i++) {
        uint64_t rounded = target_at(&in[i], lo) & ~(uint64_t)(MM_CHUNK_SIZE - 1);
        target[i] = rounded >= floor_of(&in[i]) ? rounded : floor_of(&in[i]);
    }
}
