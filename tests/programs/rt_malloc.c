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

int rt_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    return pthread_create(t, NULL, fn, arg);
}
int rt_thread_join(pthread_t t)
{
    return pthread_join(t, NULL);
}
