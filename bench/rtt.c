/* Placeholder replaced by the rtt benchmark. */
#include <errno.h>

#include "bench.h"

int mm__bench_rtt(const mm_bench_opts_t *opts, mm_results_t *res)
{
    (void)opts;
    (void)res;
    return -ENOSYS;
}
