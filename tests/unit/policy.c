/*
 * Unit tests for the target policy (mmsrv/policy.c): table-driven cases of
 * mm__policy_targets() with sizes in even MiB, so that fair shares land on
 * whole 2 MiB chunks, and a seeded sweep that checks the invariants policy.h
 * states (reservation-capped <= target <= min(demand, limit), chunk-aligned
 * unless held up by a reservation, sum within capacity when reservations fit).
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mm/protocol.h>

#include "policy.h"

#define MIB(x)   ((uint64_t)(x) << 20)
#define GIB(x)   ((uint64_t)(x) << 30)
#define NOLIMIT  UINT64_MAX
#define MAX_CASE 8
#define CHUNK    ((uint64_t)MM_CHUNK_SIZE)

/* One client: demand, reservation, limit, weight. */
#define C(d, lo, hi, w)                                                                            \
    {                                                                                              \
        .demand_bytes = (d), .min_bytes = (lo), .max_bytes = (hi), .weight = (w)                   \
    }

typedef struct policy_case {
    const char *what;
    uint64_t capacity;
    size_t n;
    mm_policy_input_t in[MAX_CASE];
    uint64_t want[MAX_CASE];
} policy_case_t;

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Run one case and compare every target exactly. */
static void check_case(const policy_case_t *c)
{
    uint64_t got[MAX_CASE];
    memset(got, 0xee, sizeof got);
    mm__policy_targets(c->capacity, MM_POLICY_IDLE_TAX, c->in, c->n, got);
    for (size_t i = 0; i < c->n; i++)
        cr_expect_eq(got[i], c->want[i], "%s: client %zu got %llu MiB + %llu, want %llu MiB",
                     c->what, i, (unsigned long long)(got[i] >> 20),
                     (unsigned long long)(got[i] & (MIB(1) - 1)),
                     (unsigned long long)(c->want[i] >> 20));
}

static void check_cases(const policy_case_t *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check_case(&cases[i]);
}

#define CHECK_CASES(table) check_cases((table), sizeof(table) / sizeof((table)[0]))

Test(policy, demand_given_when_one_client_under_capacity)
{
    static const policy_case_t cases[] = {
        {"small demand", MIB(1024), 1, {C(MIB(100), 0, NOLIMIT, 1)}, {MIB(100)}},
        {"demand equals capacity", MIB(512), 1, {C(MIB(512), 0, NOLIMIT, 7)}, {MIB(512)}},
        {"zero demand", MIB(512), 1, {C(0, 0, NOLIMIT, 1)}, {0}},
        {"demand past capacity", MIB(512), 1, {C(MIB(800), 0, NOLIMIT, 1)}, {MIB(512)}},
        {"with a reservation", MIB(1024), 1, {C(MIB(300), MIB(100), NOLIMIT, 1)}, {MIB(300)}},
    };
    CHECK_CASES(cases);
}

Test(policy, equal_split_when_two_equal_clients_over_capacity)
{
    static const policy_case_t cases[] = {
        {"two equal",
         MIB(100),
         2,
         {C(MIB(200), 0, NOLIMIT, 1), C(MIB(200), 0, NOLIMIT, 1)},
         {MIB(50), MIB(50)}},
        {"two equal, weight 100",
         GIB(4),
         2,
         {C(GIB(8), 0, NOLIMIT, 100), C(GIB(3), 0, NOLIMIT, 100)},
         {GIB(2), GIB(2)}},
        {"four equal",
         MIB(400),
         4,
         {C(MIB(400), 0, NOLIMIT, 5), C(MIB(400), 0, NOLIMIT, 5), C(MIB(400), 0, NOLIMIT, 5),
          C(MIB(400), 0, NOLIMIT, 5)},
         {MIB(100), MIB(100), MIB(100), MIB(100)}},
    };
    CHECK_CASES(cases);
}

Test(policy, weighted_split_when_weights_differ)
{
    static const policy_case_t cases[] = {
        {"1:3",
         MIB(200),
         2,
         {C(MIB(400), 0, NOLIMIT, 1), C(MIB(400), 0, NOLIMIT, 3)},
         {MIB(50), MIB(150)}},
        {"3:1 in the other order",
         MIB(200),
         2,
         {C(MIB(400), 0, NOLIMIT, 3), C(MIB(400), 0, NOLIMIT, 1)},
         {MIB(150), MIB(50)}},
        {"1:2:5",
         MIB(800),
         3,
         {C(GIB(1), 0, NOLIMIT, 1), C(GIB(1), 0, NOLIMIT, 2), C(GIB(1), 0, NOLIMIT, 5)},
         {MIB(100), MIB(200), MIB(500)}},
    };
    CHECK_CASES(cases);
}

/* Shares that are not whole chunks are rounded down, each by less than one
 * chunk: 1:3 of 100 MiB is 25 + 75, enforced as 24 + 74. */
Test(policy, weighted_split_rounded_down_when_share_not_chunk_aligned)
{
    mm_policy_input_t in[2] = {C(MIB(400), 0, NOLIMIT, 1), C(MIB(400), 0, NOLIMIT, 3)};
    uint64_t got[2];
    mm__policy_targets(MIB(100), MM_POLICY_IDLE_TAX, in, 2, got);
    const uint64_t ideal[2] = {MIB(25), MIB(75)};
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(got[i] % CHUNK, 0, "client %zu not chunk-aligned", i);
        cr_assert_leq(got[i], ideal[i], "client %zu", i);
        cr_assert_gt(got[i] + CHUNK, ideal[i], "client %zu lost more than a chunk", i);
    }
}

Test(policy, rest_goes_to_others_when_a_client_at_its_limit)
{
    static const policy_case_t cases[] = {
        {"one capped of three",
         MIB(310),
         3,
         {C(MIB(200), 0, MIB(50), 1), C(MIB(200), 0, NOLIMIT, 1), C(MIB(200), 0, NOLIMIT, 1)},
         {MIB(50), MIB(130), MIB(130)}},
        {"capped client with a big weight",
         MIB(200),
         2,
         {C(GIB(1), 0, MIB(20), 1000), C(GIB(1), 0, NOLIMIT, 1)},
         {MIB(20), MIB(180)}},
        {"limit below reservation",
         MIB(200),
         2,
         {C(MIB(200), MIB(100), MIB(40), 1), C(MIB(300), 0, NOLIMIT, 1)},
         {MIB(40), MIB(160)}},
        {"everyone capped, capacity left over",
         GIB(1),
         2,
         {C(MIB(500), 0, MIB(100), 1), C(MIB(500), 0, MIB(200), 1)},
         {MIB(100), MIB(200)}},
    };
    CHECK_CASES(cases);
}

/* Reservations are granted first; what is left is then shared by weight on
 * top of them. */
Test(policy, reservation_honoured_when_capacity_tight)
{
    static const policy_case_t cases[] = {
        {"reserved vs unreserved",
         MIB(200),
         2,
         {C(MIB(300), MIB(100), NOLIMIT, 1), C(MIB(300), 0, NOLIMIT, 1)},
         {MIB(100), MIB(100)}},
        {"reservation above the fair share",
         MIB(200),
         2,
         {C(MIB(300), MIB(150), NOLIMIT, 1), C(MIB(300), 0, NOLIMIT, 1)},
         {MIB(150), MIB(50)}},
        {"reservation equals capacity",
         MIB(100),
         2,
         {C(MIB(300), MIB(100), NOLIMIT, 1), C(MIB(300), 0, NOLIMIT, 100)},
         {MIB(100), 0}},
    };
    CHECK_CASES(cases);

    /* The brief form: min 100M, demand 300M, tight capacity, heavy rivals. */
    mm_policy_input_t in[3] = {C(MIB(300), MIB(100), NOLIMIT, 1), C(MIB(300), 0, NOLIMIT, 10000),
                               C(MIB(300), 0, NOLIMIT, 10000)};
    uint64_t got[3];
    mm__policy_targets(MIB(120), MM_POLICY_IDLE_TAX, in, 3, got);
    cr_assert_geq(got[0], MIB(100));
    cr_assert_leq(got[0] + got[1] + got[2], MIB(120));
}

/* Defined behaviour: when reservations alone exceed capacity, each client
 * still gets min(demand, reservation), so the sum of targets exceeds capacity
 * (admission is expected to keep reservations within capacity; the policy
 * does not take a reservation back). Nobody gets more than that. */
Test(policy, each_gets_capped_reservation_when_reservations_exceed_capacity)
{
    static const policy_case_t cases[] = {
        {"two reservations past capacity",
         MIB(100),
         3,
         {C(MIB(200), MIB(80), NOLIMIT, 1), C(MIB(50), MIB(80), NOLIMIT, 1),
          C(MIB(200), 0, NOLIMIT, 1)},
         {MIB(80), MIB(50), 0}},
        {"zero capacity",
         0,
         2,
         {C(MIB(200), MIB(10), NOLIMIT, 1), C(MIB(200), MIB(30), NOLIMIT, 1)},
         {MIB(10), MIB(30)}},
    };
    CHECK_CASES(cases);
}

Test(policy, demand_given_when_below_reservation)
{
    static const policy_case_t cases[] = {
        {"plenty of capacity", GIB(1), 1, {C(MIB(40), MIB(100), NOLIMIT, 1)}, {MIB(40)}},
        {"tight capacity", MIB(20), 1, {C(MIB(40), MIB(100), NOLIMIT, 1)}, {MIB(40)}},
        {"with a rival",
         MIB(100),
         2,
         {C(MIB(40), MIB(100), NOLIMIT, 1), C(MIB(500), 0, NOLIMIT, 1)},
         {MIB(40), MIB(60)}},
    };
    CHECK_CASES(cases);
}

/* A reservation is kept exactly even when it is not a whole chunk. */
Test(policy, unaligned_reservation_kept_when_rounding)
{
    static const policy_case_t cases[] = {
        {"3 MiB reserved", MIB(3), 1, {C(MIB(10), MIB(3), NOLIMIT, 1)}, {MIB(3)}},
        {"3 MiB demand under a reservation",
         MIB(100),
         1,
         {C(MIB(3), MIB(8), NOLIMIT, 1)},
         {MIB(3)}},
        {"unaligned demand without reservation", MIB(100), 1, {C(MIB(3), 0, NOLIMIT, 1)}, {MIB(2)}},
    };
    CHECK_CASES(cases);
}

Test(policy, nothing_written_when_no_clients)
{
    mm_policy_input_t in[1] = {C(MIB(10), 0, NOLIMIT, 1)};
    uint64_t out[1] = {12345};
    mm__policy_targets(GIB(1), MM_POLICY_IDLE_TAX, in, 0, out);
    cr_assert_eq(out[0], 12345);
    mm__policy_targets(GIB(1), MM_POLICY_IDLE_TAX, NULL, 0, NULL);
}

Test(policy, small_demand_satisfied_and_rest_shared_when_max_min_fair)
{
    static const policy_case_t cases[] = {
        {"one small, two big",
         MIB(100),
         3,
         {C(MIB(12), 0, NOLIMIT, 1), C(MIB(200), 0, NOLIMIT, 1), C(MIB(200), 0, NOLIMIT, 1)},
         {MIB(12), MIB(44), MIB(44)}},
        {"small one listed last",
         MIB(100),
         3,
         {C(MIB(200), 0, NOLIMIT, 1), C(MIB(200), 0, NOLIMIT, 1), C(MIB(12), 0, NOLIMIT, 1)},
         {MIB(44), MIB(44), MIB(12)}},
        {"cascade of small ones",
         MIB(122),
         4,
         {C(MIB(10), 0, NOLIMIT, 1), C(MIB(20), 0, NOLIMIT, 1), C(MIB(500), 0, NOLIMIT, 1),
          C(MIB(500), 0, NOLIMIT, 1)},
         {MIB(10), MIB(20), MIB(46), MIB(46)}},
        {"weighted small one",
         MIB(200),
         3,
         {C(MIB(20), 0, NOLIMIT, 8), C(MIB(500), 0, NOLIMIT, 1), C(MIB(500), 0, NOLIMIT, 1)},
         {MIB(20), MIB(90), MIB(90)}},
    };
    CHECK_CASES(cases);
}

Test(policy, no_overflow_when_sizes_are_huge)
{
    mm_policy_input_t in[2] = {C(UINT64_MAX, 0, NOLIMIT, 10000), C(UINT64_MAX, 0, NOLIMIT, 10000)};
    uint64_t got[2];
    uint64_t cap = UINT64_MAX & ~(CHUNK - 1);
    mm__policy_targets(cap, MM_POLICY_IDLE_TAX, in, 2, got);
    cr_assert_eq(got[0] % CHUNK, 0);
    cr_assert_leq(got[0], cap / 2);
    cr_assert_gt(got[0] + CHUNK, cap / 2);
    cr_assert_eq(got[0], got[1]);
}

/* ---- Invariants over a seeded sweep (a test, not a benchmark) ---------- */

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    /* xorshift64*: fixed seed, reproducible. */
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 0x2545f4914f6cdd1dull;
}

/* A size in 0..limit_mib MiB, sometimes unaligned by a few KiB. */
static uint64_t rnd_size(uint64_t limit_mib)
{
    uint64_t v = MIB(rnd() % (limit_mib + 1));
    if (rnd() % 4 == 0)
        v += (rnd() % 512) * MM_FRAME_SIZE;
    return v;
}

Test(policy, invariants_hold_when_inputs_random)
{
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 1 + rnd() % MAX_CASE;
        uint64_t cap = rnd_size(2048);
        mm_policy_input_t in[MAX_CASE] = {0};
        uint64_t floor_sum = 0;
        for (size_t i = 0; i < n; i++) {
            in[i].demand_bytes = rnd_size(1024);
            in[i].idle_bytes = rnd() % 2 ? rnd_size(1024) : 0; /* may exceed demand */
            in[i].min_bytes = rnd() % 3 == 0 ? rnd_size(256) : 0;
            in[i].max_bytes = rnd() % 3 == 0 ? rnd_size(1024) : NOLIMIT;
            in[i].weight = 1 + (uint32_t)(rnd() % 10000);
            floor_sum += min_u64(in[i].min_bytes, min_u64(in[i].demand_bytes, in[i].max_bytes));
        }
        uint64_t got[MAX_CASE];
        mm__policy_targets(cap, MM_POLICY_IDLE_TAX, in, n, got);

        uint64_t sum = 0;
        bool all_full = true;
        for (size_t i = 0; i < n; i++) {
            uint64_t ceil_i = min_u64(in[i].demand_bytes, in[i].max_bytes);
            uint64_t floor_i = min_u64(in[i].min_bytes, ceil_i);
            cr_assert_geq(got[i], floor_i, "iter %d client %zu below its reservation", iter, i);
            cr_assert_leq(got[i], ceil_i, "iter %d client %zu above demand or limit", iter, i);
            cr_assert(got[i] % CHUNK == 0 || got[i] == floor_i,
                      "iter %d client %zu: %llu neither aligned nor its reservation", iter, i,
                      (unsigned long long)got[i]);
            uint64_t full = ceil_i & ~(CHUNK - 1);
            if (got[i] < full && got[i] < ceil_i)
                all_full = false;
            sum += got[i];
        }
        if (floor_sum <= cap) {
            cr_assert_leq(sum, cap, "iter %d: targets %llu past capacity %llu", iter,
                          (unsigned long long)sum, (unsigned long long)cap);
            /* Work-conserving up to rounding: unless every client has all it
             * can take, less than a chunk per client stays unhanded. */
            if (!all_full)
                cr_assert_lt(cap - sum, n * CHUNK, "iter %d: %llu left unhanded", iter,
                             (unsigned long long)(cap - sum));
        } else {
            cr_assert_eq(sum, floor_sum, "iter %d: only reservations when they overflow", iter);
        }
    }
}

/* One client with idle memory: demand d, of which idle i. */
#define CI(d, i, w)                                                                                \
    {                                                                                              \
        .demand_bytes = (d), .idle_bytes = (i), .max_bytes = NOLIMIT, .weight = (w)                \
    }

Test(policy, idle_memory_taxed_first_when_contended)
{
    /* A uses all it holds, B uses 50 of 200: with the 0.75 tax an idle byte
     * counts 4x, so equal charges give A 130 and B 50 + 80/4 = 70. */
    mm_policy_input_t in[2] = {CI(MIB(200), 0, 1), CI(MIB(200), MIB(150), 1)};
    uint64_t got[2];
    mm__policy_targets(MIB(200), MM_POLICY_IDLE_TAX, in, 2, got);
    cr_assert_eq(got[0], MIB(130));
    cr_assert_eq(got[1], MIB(70));
    /* Without the tax the same clients split evenly. */
    mm__policy_targets(MIB(200), 0.0, in, 2, got);
    cr_assert_eq(got[0], MIB(100));
    cr_assert_eq(got[1], MIB(100));
}

Test(policy, idle_tax_never_takes_active_memory_before_idle)
{
    /* B's fair share lies inside its active memory: its idle is all gone and
     * the rest is shared 1:1. */
    mm_policy_input_t in[2] = {CI(MIB(400), 0, 1), CI(MIB(400), MIB(100), 1)};
    uint64_t got[2];
    mm__policy_targets(MIB(200), MM_POLICY_IDLE_TAX, in, 2, got);
    cr_assert_eq(got[0], MIB(100));
    cr_assert_eq(got[1], MIB(100));
}

Test(policy, no_tax_when_capacity_covers_demand)
{
    mm_policy_input_t in[2] = {CI(MIB(100), MIB(90), 1), CI(MIB(100), 0, 1)};
    uint64_t got[2];
    mm__policy_targets(MIB(512), MM_POLICY_IDLE_TAX, in, 2, got);
    cr_assert_eq(got[0], MIB(100), "idle memory is kept while nobody needs it");
    cr_assert_eq(got[1], MIB(100));
}

Test(policy, pinned_target_is_kept_and_the_rest_shared)
{
    mm_policy_input_t in[3] = {CI(MIB(400), 0, 1), CI(MIB(400), 0, 1), CI(MIB(400), 0, 1)};
    in[0].pinned = true;
    in[0].pinned_bytes = MIB(300); /* above its fair share: the admin's word */
    in[1].max_bytes = MIB(600);
    uint64_t got[3];
    mm__policy_targets(MIB(500), MM_POLICY_IDLE_TAX, in, 3, got);
    cr_assert_eq(got[0], MIB(300));
    cr_assert_eq(got[1], MIB(100));
    cr_assert_eq(got[2], MIB(100));
    in[0].pinned_bytes = 0; /* pinned at nothing */
    mm__policy_targets(MIB(500), MM_POLICY_IDLE_TAX, in, 3, got);
    cr_assert_eq(got[0], 0);
    cr_assert_eq(got[1], MIB(250));
    cr_assert_eq(got[2], MIB(250));
}

Test(policy, pinned_target_capped_by_the_limit)
{
    mm_policy_input_t in[1] = {CI(MIB(400), 0, 1)};
    in[0].pinned = true;
    in[0].pinned_bytes = MIB(300);
    in[0].max_bytes = MIB(200);
    uint64_t got[1];
    mm__policy_targets(MIB(500), MM_POLICY_IDLE_TAX, in, 1, got);
    cr_assert_eq(got[0], MIB(200));
}

Test(policy, capacity_shrinks_gently_under_memory_pressure)
{
    cr_assert_eq(mm__policy_capacity(GIB(1), 0), GIB(1), "no stall, no change");
    cr_assert_eq(mm__policy_capacity(GIB(1), 10), MIB(972), "10%% stall: 5%% less, chunk-aligned");
    cr_assert_eq(mm__policy_capacity(GIB(1), 50), MIB(768), "at most a quarter less");
    cr_assert_eq(mm__policy_capacity(GIB(1), 100), MIB(768));
    cr_assert_eq(mm__policy_capacity(GIB(1), -3), GIB(1), "a bad reading changes nothing");
}
