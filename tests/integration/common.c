/*
 * Helpers shared by the integration tests (see common.h).
 */
#include "common.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <time.h>

mm_bench_daemon_t daemon_;

void start_daemon(const char *capacity)
{
    const char *level = getenv("MM_TEST_LOG");
    cr_assert_eq(mm__bench_daemon_start(&daemon_, capacity, level ? level : "warn"), 0,
                 "mmsrv starts");
}

void stop_daemon(void)
{
    mm__bench_daemon_stop(&daemon_);
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

mm_client_t *open_client(const char *name, uint64_t max_bytes, unsigned flags)
{
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = max_bytes;
    o.flags = flags;
    mm_client_t *c = NULL;
    int err = mm_client_open(daemon_.sock, &o, &c);
    cr_assert_eq(err, 0, "client opens: %s", mm_strerror(err));
    return c;
}
