/*
 * Policy: weighted max-min fair targets over demand, with an idle tax (see
 * policy.h).
 *
 * A water level L (charge per unit of weight) sets every target at once. A
 * client's charge for holding t bytes is t while t stays within its active
 * bytes, and each idle byte beyond costs k = 1 / (1 - tax); so at level L it
 * holds t(L) = clamp(charge^-1(weight * L), floor, ceiling), where floor is
 * the reservation (capped by demand and limit) and ceiling is min(demand,
 * limit). The sum grows with L, so the highest level whose sum fits capacity
 * is found by bisection. Levels are real numbers: integer levels would lose
 * up to a weight's worth of bytes per client to rounding.
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

/* Bytes a client holds when its charge is `charge`: active bytes 1:1, then
 * idle bytes at 1/k each. */
static long double bytes_for_charge(const mm_policy_input_t *in, long double charge, long double k)
{
    uint64_t idle = min_u64(in->idle_bytes, in->demand_bytes);
    long double active = (long double)(in->demand_bytes - idle);
    return charge <= active ? charge : active + (charge - active) / k;
}

static uint64_t target_at(const mm_policy_input_t *in, long double level, long double k)
{
    long double w = in->weight ? in->weight : 1;
    long double bytes = bytes_for_charge(in, w * level, k);
    uint64_t t = bytes >= (long double)ceiling_of(in) ? ceiling_of(in) : (uint64_t)bytes;
    return t > floor_of(in) ? t : floor_of(in);
}

/* Sum of the sharing clients' targets at level, saturating. */
static uint64_t sum_at(const mm_policy_input_t *in, size_t n, long double level, long double k)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i].pinned)
            continue;
        uint64_t t = target_at(&in[i], level, k);
        sum = sum > UINT64_MAX - t ? UINT64_MAX : sum + t;
    }
    return sum;
}

/* Highest level whose targets fit capacity. At level hi every client is at
 * its ceiling (weights >= 1, charges <= k * ceiling); 128 halvings of that
 * range leave far less than a byte. */
static long double fill_level(uint64_t capacity, const mm_policy_input_t *in, size_t n,
                              long double k)
{
    long double lo = 0, hi = 0;
    for (size_t i = 0; i < n; i++)
        if (!in[i].pinned && k * (long double)ceiling_of(&in[i]) > hi)
            hi = k * (long double)ceiling_of(&in[i]);
    if (sum_at(in, n, hi, k) <= capacity)
        return hi;
    for (int i = 0; i < 128; i++) {
        long double mid = (lo + hi) / 2;
        if (sum_at(in, n, mid, k) <= capacity)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

void mm__policy_targets(uint64_t capacity_bytes, double idle_tax, const mm_policy_input_t *in,
                        size_t n, uint64_t *target)
{
    double tax = idle_tax < 0 ? 0 : idle_tax > 0.99 ? 0.99 : idle_tax;
    long double k = 1.0L / (1.0L - (long double)tax);
    uint64_t shared = capacity_bytes;
    for (size_t i = 0; i < n; i++) {
        if (!in[i].pinned)
            continue;
        target[i] = min_u64(in[i].pinned_bytes, in[i].max_bytes);
        shared = shared > target[i] ? shared - target[i] : 0;
    }
    long double level = fill_level(shared, in, n, k);
    /* Targets are enforced in whole chunks: round down, but never below the
     * reservation. */
    for (size_t i = 0; i < n; i++) {
        if (in[i].pinned)
            continue;
        uint64_t rounded = target_at(&in[i], level, k) & ~(uint64_t)(MM_CHUNK_SIZE - 1);
        target[i] = rounded >= floor_of(&in[i]) ? rounded : floor_of(&in[i]);
    }
}

uint64_t mm__policy_capacity(uint64_t capacity_bytes, double psi_some_avg10)
{
    double stall = psi_some_avg10 < 0 ? 0 : psi_some_avg10 > 50 ? 50 : psi_some_avg10;
    long double kept = (long double)capacity_bytes * (1.0L - stall / 200.0L);
    return (uint64_t)kept & ~(uint64_t)(MM_CHUNK_SIZE - 1);
}
