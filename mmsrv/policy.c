/*
 * Policy: weighted max-min fair targets over demand (see policy.h).
 */
#include "policy.h"

#include <mm/protocol.h>

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* The most a client may be given: its demand, capped by its limit. */
static uint64_t ceiling(const mm_policy_input_t *in)
{
    return min_u64(in->demand_bytes, in->max_bytes);
}

void mm__policy_targets(uint64_t capacity_bytes, const mm_policy_input_t *in, size_t n,
                        uint64_t *target)
{
    uint64_t left = capacity_bytes;
    for (size_t i = 0; i < n; i++) {
        target[i] = min_u64(in[i].min_bytes, ceiling(&in[i]));
        left = left > target[i] ? left - target[i] : 0;
    }
    /* Water-filling: each round shares what is left among the clients still
     * below their ceiling, in proportion to weight. A round either satisfies
     * at least one client or hands out everything, so n + 1 rounds suffice. */
    for (size_t round = 0; round <= n && left > 0; round++) {
        uint64_t weights = 0;
        for (size_t i = 0; i < n; i++)
            if (target[i] < ceiling(&in[i]))
                weights += in[i].weight ? in[i].weight : 1;
        if (weights == 0)
            break;
        uint64_t handed = 0, pool = left;
        for (size_t i = 0; i < n; i++) {
            uint64_t room = ceiling(&in[i]) - target[i]; /* target <= ceiling */
            if (room == 0)
                continue;
            uint64_t w = in[i].weight ? in[i].weight : 1;
            /* share = pool * w / weights without overflowing 64 bits */
            uint64_t share = (uint64_t)(((unsigned __int128)pool * w) / weights);
            if (share == 0)
                share = min_u64(pool - handed, 1);
            uint64_t give = min_u64(min_u64(share, room), pool - handed);
            target[i] += give;
            handed += give;
        }
        left -= handed;
        if (handed == 0)
            break;
    }
    /* Targets are enforced in whole chunks: round down, but never below the
     * reservation the client was given. */
    for (size_t i = 0; i < n; i++) {
        uint64_t floor_bytes = min_u64(in[i].min_bytes, ceiling(&in[i]));
        uint64_t rounded = target[i] & ~(uint64_t)(MM_CHUNK_SIZE - 1);
        target[i] = rounded >= floor_bytes ? rounded : floor_bytes;
    }
}
