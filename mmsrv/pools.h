/*
 * NUMA pools: one per node with memory. Capacity is split among the nodes in
 * proportion to their memory; each client's region is bound to one node —
 * strictly (MPOL_BIND) when the client asked for that node, preferred
 * (MPOL_PREFERRED) on the node with the most room when it asked for any — so
 * that the host can account resident and granted bytes per node. A machine
 * without NUMA (or without libnuma support) has one pool, node 0.
 *
 * Loop thread only.
 */
#ifndef MM_POOLS_H
#define MM_POOLS_H

#include <stdbool.h>
#include <stdint.h>

#define MM_NUMA_MAX_NODES 64

typedef struct mm_numa {
    int nnodes;                      /* pools, >= 1 */
    int node_id[MM_NUMA_MAX_NODES];  /* kernel node number of each pool */
    double share[MM_NUMA_MAX_NODES]; /* of capacity, summing to 1 */
    bool bindable;                   /* libnuma says NUMA policy works */
} mm_numa_t;

/* Find the nodes with memory and their shares. Never fails: without NUMA
 * there is one pool. */
void mm__numa_init(mm_numa_t *n);

/* Pool index of a kernel node number, or -1 if it has no pool. */
int mm__numa_pool(const mm_numa_t *n, int node);

/* Capacity of pool i out of the whole capacity, chunk-aligned down. */
uint64_t mm__numa_pool_capacity(const mm_numa_t *n, int pool, uint64_t capacity_bytes);

/* Bind the memory of a region memfd to a kernel node: strictly, or as a
 * preference. The policy belongs to the file, so every mapping of it (the
 * client's) allocates there. 0, or a negative errno; a machine without NUMA
 * policy support returns 0 and binds nothing. */
int mm__numa_bind(const mm_numa_t *n, int fd, uint64_t bytes, int node, bool strict);

#endif /* MM_POOLS_H */
