/* workload.h over Boehm GC (linked with -lgc only). */
#include <gc/gc.h>

#include "workload.h"

void rt_init(void)
{
    GC_INIT();
}
void *rt_alloc(size_t bytes)
{
    return GC_MALLOC_ATOMIC(bytes);
}
void rt_free(void *p)
{
    (void)p; /* forgotten: garbage for the next collection */
}
void rt_collect(void)
{
    GC_gcollect(); /* frees the blocks; unmapping them is the revocation's */
}

int main(int argc, char **argv)
{
    return workload_main(argc, argv);
}
