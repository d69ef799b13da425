/*
 * NUMA pools with libnuma (see pools.h).
 */
#include "pools.h"

#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>

#include <mm/protocol.h>

void mm__numa_init(mm_numa_t *n)
{
    n->nnodes = 1;
    n->node_id[0] = 0;
    n->share[0] = 1.0;
    n->bindable = numa_available() >= 0;
    if (!n->bindable)
        return;
    /* Node sizes only weigh the nodes against each other: some virtual
     * machines report sizes that do not add up to the machine's memory. */
    double total = 0;
    long long size[MM_NUMA_MAX_NODES];
    int count = 0;
    for (int node = 0; node <= numa_max_node() && count < MM_NUMA_MAX_NODES; node++) {
        long long bytes = numa_node_size64(node, NULL);
        if (bytes <= 0)
            continue; /* a node without memory has no pool */
        n->node_id[count] = node;
        size[count++] = bytes;
        total += (double)bytes;
    }
    if (count == 0 || total <= 0)
        return;
    n->nnodes = count;
    for (int i = 0; i < count; i++)
        n->share[i] = (double)size[i] / total;
}

int mm__numa_pool(const mm_numa_t *n, int node)
{
    for (int i = 0; i < n->nnodes; i++)
        if (n->node_id[i] == node)
            return i;
    return -1;
}

uint64_t mm__numa_pool_capacity(const mm_numa_t *n, int pool, uint64_t capacity_bytes)
{
    if (n->nnodes == 1)
        return capacity_bytes;
    double bytes = (double)capacity_bytes * n->share[pool];
    return (uint64_t)bytes & ~(uint64_t)(MM_CHUNK_SIZE - 1);
}

int mm__numa_bind(const mm_numa_t *n, int fd, uint64_t bytes, int node, bool strict)
{
    if (!n->bindable || node < 0 || node >= 64 * 16)
        return 0;
    /* mbind works on a mapping; on shmem it sets the file's shared policy,
     * which outlives this short PROT_NONE mapping. */
    void *p = mmap(NULL, bytes, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    unsigned long mask[16] = {0};
    mask[node / 64] = 1ul << (node % 64);
    int err = mbind(p, bytes, strict ? MPOL_BIND : MPOL_PREFERRED, mask, 64 * 16 + 1, 0);
    err = err < 0 ? -errno : 0;
    munmap(p, bytes);
    return err;
}
