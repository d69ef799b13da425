/*
 * Policy: who should hold how much. A pure function from inputs (capacity,
 * and per client its demand, reservation, limit and weight) to targets, kept
 * apart from the mechanism that enforces them.
 *
 * Targets are a weighted max-min fair share of capacity over demand, filled
 * like water: each client rises in proportion to its weight until it reaches
 * its demand or limit, and never stands below its reservation (a floor, not
 * an addition). Invariants on return: min(reservation, demand, limit) <=
 * target <= min(demand, limit), and sum(target) <= capacity unless
 * reservations alone exceed it.
 */
#ifndef MM_POLICY_H
#define MM_POLICY_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_policy_input {
    uint64_t demand_bytes; /* what the client holds or asks for */
    uint64_t min_bytes;    /* reservation */
    uint64_t max_bytes;    /* limit */
    uint32_t weight;       /* share when contended, >= 1 */
} mm_policy_input_t;

/*
 * Compute targets (n entries, chunk-aligned down except where that would
 * break a reservation) for capacity_bytes. Thread-safe, allocates nothing.
 */
void mm__policy_targets(uint64_t capacity_bytes, const mm_policy_input_t *in, size_t n,
                        uint64_t *target_out);

#endif /* MM_POLICY_H */
