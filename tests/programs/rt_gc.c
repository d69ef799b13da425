/* workload.h over Boehm GC (linked with -lgc only). */
#define GC_THREADS /* gc.h then redirects pthread_create, so threads are registered */
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

int rt_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    return pthread_create(t, NULL, fn, arg);
}
int rt_thread_join(pthread_t t)
{
    return pthread_join(t, NULL);
}

int main(int argc, char **argv)
{
    return workload_main(argc, argv);
}
