/*
 * Policy: who should hold how much. Pure functions from inputs (capacity,
 * host memory pressure, and per client its demand, idle part, reservation,
 * limit, weight and any admin-pinned target) to targets, kept apart from the
 * mechanism that enforces them.
 *
 * Targets are a weighted max-min fair share of capacity over demand, filled
 * like water: each client rises in proportion to its weight until it reaches
 * its demand or limit, and never stands below its reservation (a floor, not
 * an addition). Idle memory — free frames, garbage, idle caches — is taxed as
 * in VMware ESX: with tax rate t, an idle byte counts 1 / (1 - t) times
 * against a client's share, so under contention idle memory goes first.
 * Pinned clients get their pinned target and are taken out of the sharing.
 *
 * Invariants on return, for a client that is not pinned: min(reservation,
 * demand, limit) <= target <= min(demand, limit); sum(target) <= capacity
 * unless reservations and pins alone exceed it.
 */
#ifndef MM_POLICY_H
#define MM_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ESX's default idle memory tax. */
#define MM_POLICY_IDLE_TAX 0.75

typedef struct mm_policy_input {
    uint64_t demand_bytes; /* what the client holds or asks for */
    uint64_t idle_bytes;   /* part of demand it holds but does not use */
    uint64_t min_bytes;    /* reservation */
    uint64_t max_bytes;    /* limit */
    uint32_t weight;       /* share when contended, >= 1 */
    bool pinned;           /* the admin fixed the target at pinned_bytes */
    uint64_t pinned_bytes;
} mm_policy_input_t;

/*
 * Compute targets (n entries, chunk-aligned down except where that would
 * break a reservation) for capacity_bytes with idle_tax in [0, 0.99].
 * Thread-safe, allocates nothing.
 */
void mm__policy_targets(uint64_t capacity_bytes, double idle_tax, const mm_policy_input_t *in,
                        size_t n, uint64_t *target_out);

/*
 * The capacity to share given the host's memory pressure: PSI "some avg10"
 * (percent of the last 10 s in which some task stalled on memory). A host
 * that stalls gets headroom back gently: capacity shrinks by half the stall
 * percentage, at most by a quarter (10% stall: 5% less). Chunk-aligned down.
 */
uint64_t mm__policy_capacity(uint64_t capacity_bytes, double psi_some_avg10);

#endif /* MM_POLICY_H */
