/*
 * Integration tests of the management plane: limits, client requests capped
 * by admin policy, pinned targets and admin reclaim, through mmctl against a
 * daemon in its own temp state directory.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include <mm/mm.h>

#include "common.h"

TestSuite(admin, .fini = stop_daemon, .timeout = 120);

static int ctl(const char *const args[])
{
    return mm__bench_ctl(&daemon_, args, NULL);
}

static mm_client_t *open_asking(const char *name, uint64_t min, uint32_t weight)
{
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = 64 << 20;
    o.min_bytes = min;
    o.weight = weight;
    mm_client_t *c = NULL;
    cr_assert_eq(mm_client_open(daemon_.sock, &o, &c), 0);
    return c;
}

Test(admin, an_install_past_the_limit_fails_with_edquot)
{
    start_daemon("512M");
    mm_client_t *c = open_client("limited", 32 << 20, 0);
    const char *set[] = {"set", "limited", "max=4M", NULL};
    cr_assert_eq(ctl(set), 0);
    void *p[3];
    alloc_chunks(c, 2, p);
    cr_assert_eq(mm_alloc(c, CHUNK, CHUNK, &p[2]), -EDQUOT, "a third chunk is past max=4M");
    cr_assert_eq(client_field(mm_client_id(c), "granted_bytes"), 4u << 20);
    mm_client_close(c);
}

Test(admin, max_above_the_region_and_min_above_max_are_refused)
{
    start_daemon("512M");
    mm_client_t *c = open_client("small", 8 << 20, 0);
    const char *too_big[] = {"set", "small", "max=16M", NULL};
    cr_assert_eq(ctl(too_big), -EIO, "max above the 8M region is refused");
    const char *crossed[] = {"set", "small", "min=6M", "max=4M", NULL};
    cr_assert_eq(ctl(crossed), -EIO, "min above max is refused");
    cr_assert_eq(client_field(mm_client_id(c), "max_bytes"), 8u << 20, "nothing changed");
    cr_assert_eq(client_field(mm_client_id(c), "min_bytes"), 0);
    const char *nobody[] = {"set", "nobody", "weight=5", NULL};
    cr_assert_eq(ctl(nobody), -EIO, "an unknown client is refused");
    mm_client_close(c);
}

Test(admin, a_clients_own_requests_are_capped_by_default)
{
    start_daemon("512M");
    mm_client_t *c = open_asking("asker", 32 << 20, 5000);
    uint32_t id = mm_client_id(c);
    cr_assert_eq(client_field(id, "min_bytes"), 0, "no self-reservation by default");
    cr_assert_eq(client_field(id, "weight"), 100, "no weight above the default");
    const char *set[] = {"set", "asker", "min=32M", "weight=5000", NULL};
    cr_assert_eq(ctl(set), 0, "the admin may grant both");
    cr_assert_eq(client_field(id, "min_bytes"), 32u << 20);
    cr_assert_eq(client_field(id, "weight"), 5000);
    mm_client_close(c);
}

Test(admin, a_clients_own_requests_are_honoured_within_the_caps)
{
    const char *caps[] = {"--max-client-reservation", "16M", "--max-client-weight", "400", NULL};
    cr_assert_eq(mm__bench_daemon_start_with(&daemon_, "512M", "warn", caps), 0);
    mm_client_t *low = open_asking("low", 8 << 20, 300);
    mm_client_t *high = open_asking("high", 64 << 20, 900);
    cr_assert_eq(client_field(mm_client_id(low), "min_bytes"), 8u << 20);
    cr_assert_eq(client_field(mm_client_id(low), "weight"), 300);
    cr_assert_eq(client_field(mm_client_id(high), "min_bytes"), 16u << 20, "capped at 16M");
    cr_assert_eq(client_field(mm_client_id(high), "weight"), 400, "capped at 400");
    mm_client_close(low);
    mm_client_close(high);
}

Test(admin, a_pinned_target_takes_free_memory_back_and_auto_releases_it)
{
    start_daemon("512M");
    mm_client_t *c = open_client("pinned", 32 << 20, 0);
    void *p[8];
    alloc_chunks(c, 8, p);
    for (int i = 4; i < 8; i++)
        cr_assert_eq(mm_free(c, p[i], CHUNK), 0);
    uint32_t id = mm_client_id(c);
    const char *pin[] = {"set", "pinned", "target=8M", NULL};
    cr_assert_eq(ctl(pin), 0);
    cr_assert_eq(client_field(id, "target_bytes"), 8u << 20);
    cr_assert_eq(client_field(id, "granted_bytes"), 8u << 20, "the free chunks went back");
    cr_assert_eq(client_field(id, "target_pinned"), 1);
    void *q;
    cr_assert_eq(mm_alloc(c, CHUNK, CHUNK, &q), -ENOMEM, "no growth past a pinned target");
    const char *unpin[] = {"set", "pinned", "target=auto", NULL};
    cr_assert_eq(ctl(unpin), 0);
    cr_assert_eq(client_field(id, "target_pinned"), 0);
    cr_assert_eq(mm_alloc(c, CHUNK, CHUNK, &q), 0, "and it may grow again");
    mm_client_close(c);
}

Test(admin, reclaim_takes_free_chunks_at_once_and_asks_for_the_rest)
{
    start_daemon("512M");
    mm_client_t *c = open_client("victim", 32 << 20, 0);
    void *p[6];
    alloc_chunks(c, 6, p);
    cr_assert_eq(mm_free(c, p[5], CHUNK), 0);
    char *out = NULL;
    const char *args[] = {"--json", "reclaim", "victim", "6M", NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, &out), 0);
    json_t *reply = json_loads(out, 0, NULL);
    free(out);
    cr_assert_not_null(reply);
    cr_assert_eq(mm__bench_json_u64(reply, "taken_bytes"), CHUNK, "the free chunk at once");
    cr_assert_eq(mm__bench_json_u64(reply, "asked_bytes"), 2 * CHUNK, "the rest by asking");
    json_decref(reply);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(((unsigned char *)p[i])[7], i + 1, "used chunk %d intact", i);
    mm_client_close(c);
}
