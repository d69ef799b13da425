/* workload.h over malloc: jemalloc's when linked with -ljemalloc, else the
 * C library's. */
#include <stdlib.h>

#include "workload.h"

void rt_init(void)
{
}
void *rt_alloc(size_t bytes)
{
    return malloc(bytes);
}
void rt_free(void *p)
{
    free(p);
}
void rt_collect(void)
{
}

int main(int argc, char **argv)
{
    return workload_main(argc, argv);
}
