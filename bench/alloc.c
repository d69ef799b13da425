/* Placeholder replaced by the alloc benchmark. */
#include <errno.h>

#include "bench.h"

int mm__bench_alloc(const mm_bench_opts_t *opts, mm_results_t *res)
{
    (void)opts;
    (void)res;
    return -ENOSYS;
}
