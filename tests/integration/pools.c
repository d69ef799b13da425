/*
 * Integration tests of the NUMA pools (mmsrv/pools.c): status shows each
 * node's capacity and use, a client may ask for a node, and its region's
 * memory policy says where its pages go. On a one-node machine there is one
 * pool, node 0.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <numa.h>
#include <numaif.h>

#include <mm/mm.h>

#include "common.h"

TestSuite(pools, .fini = stop_daemon, .timeout = 120);

static mm_client_t *open_on_node(const char *name, int node, int *err)
{
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = 16 << 20;
    o.numa_node = node;
    mm_client_t *c = NULL;
    *err = mm_client_open(daemon_.sock, &o, &c);
    return c;
}

Test(pools, status_shows_each_nodes_capacity_and_use)
{
    start_daemon("512M");
    mm_client_t *c = open_client("user", 16 << 20, 0);
    void *p[3];
    alloc_chunks(c, 3, p);
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0);
    json_t *nodes = json_object_get(st, "nodes");
    cr_assert(json_is_array(nodes) && json_array_size(nodes) >= 1, "a pool per node");
    uint64_t capacity = 0, granted = 0, resident = 0;
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        capacity += mm__bench_json_u64(n, "capacity_bytes");
        granted += mm__bench_json_u64(n, "granted_bytes");
        resident += mm__bench_json_u64(n, "resident_bytes");
    }
    cr_assert_leq(capacity, 512u << 20);
    cr_assert_gt(capacity, (512u << 20) - json_array_size(nodes) * CHUNK, "shares add up");
    cr_assert_eq(granted, 3 * CHUNK);
    cr_assert_eq(resident, mm__bench_json_u64(st, "resident_bytes"));
    json_decref(st);
    mm_client_close(c);
}

Test(pools, a_client_gets_the_node_it_asks_for_and_its_pages_are_bound_there)
{
    if (numa_available() < 0)
        cr_skip_test("no NUMA policy support on this machine");
    start_daemon("512M");
    int node = numa_node_of_cpu(0) < 0 ? 0 : numa_node_of_cpu(0), err;
    mm_client_t *strict = open_on_node("strict", node, &err);
    cr_assert_eq(err, 0, "node %d: %s", node, mm_strerror(err));
    mm_client_t *any = open_on_node("any", -1, &err);
    cr_assert_eq(err, 0);
    cr_assert_eq(client_field(mm_client_id(strict), "node"), (uint64_t)node);

    int mode = -1;
    unsigned long mask[16] = {0};
    cr_assert_eq(get_mempolicy(&mode, mask, 64 * 16, mm_client_base(strict), MPOL_F_ADDR), 0);
    cr_assert_eq(mode, MPOL_BIND, "asked for a node: bound to it");
    cr_assert(mask[node / 64] & (1ul << (node % 64)));
    cr_assert_eq(get_mempolicy(&mode, mask, 64 * 16, mm_client_base(any), MPOL_F_ADDR), 0);
    cr_assert_eq(mode, MPOL_PREFERRED, "asked for any: a preference only");
    mm_client_close(strict);
    mm_client_close(any);
}

Test(pools, a_node_without_memory_is_refused)
{
    start_daemon("512M");
    int err;
    mm_client_t *c = open_on_node("nowhere", 1000, &err);
    cr_assert_null(c);
    cr_assert_eq(err, -EINVAL);
}
