/*
 * Reclaim and install: the mechanism that enforces the policy's targets.
 *
 * The ladder, cheapest first (DESIGN.md section 5): step 1 takes wholly free
 * chunks by CAS, with no message to the client, merging adjacent chunks into
 * one punch and working on different regions in parallel on a small worker
 * pool; step 3 posts a revocation (bytes, reason, deadline) to clients still
 * over their target. Install hands reclaimed chunks back within the target.
 *
 * Threads: everything here runs on the event-loop thread, except reclaim
 * jobs, which workers run on one client each while the loop thread waits.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "platform.h"
#include "policy.h"

#define MAX_WORKERS   8
#define REFRESH_TICKS 10 /* residency, idle bytes and touches: once a second */
#define PSI_TICKS     10 /* read the host's memory pressure every second */

/* Revocation deadline: 250 ms plus 2 ms per MiB asked (2.3 s for 1 GiB). */
#define REVOKE_BASE_NS    250000000ull
#define REVOKE_NS_PER_MIB 2000000ull
/* A client that missed its deadline is forced only once it has given nothing
 * back for this long: a guest swapping on a loaded host frees in bursts, one
 * durable batch at a time, and freezing it mid-answer helps nobody. */
#define FORCE_STALL_NS 1000000000ull

typedef struct reclaim_job {
    mm_ladder_t *ladder;
    mm_host_client_t *client;
    uint32_t want_chunks;
    uint32_t taken_chunks; /* result */
} reclaim_job_t;

struct mm_reclaim_pool {
    pthread_t threads[MAX_WORKERS];
    unsigned nthreads;
    pthread_mutex_t lock; /* protects every field below */
    pthread_cond_t work;
    pthread_cond_t done;
    reclaim_job_t *jobs;
    size_t njobs, next, finished;
    bool stop;
};

static uint32_t chunks_of(uint64_t bytes)
{
    return (uint32_t)(bytes / MM_CHUNK_SIZE);
}
static uint32_t chunks_up(uint64_t bytes)
{
    return (uint32_t)((bytes + MM_CHUNK_SIZE - 1) / MM_CHUNK_SIZE);
}
/* What a client holds, by the kernel's count: capacity, targets and demand
 * are about resident memory (a runtime may keep frames it released). */
static uint64_t held_of(const mm_host_client_t *c)
{
    return c->resident_bytes;
}

static uint64_t granted_of(const mm_host_client_t *c)
{
    return (uint64_t)c->granted_chunks * MM_CHUNK_SIZE;
}

/* Punch chunks [first, first + n) of c's region in one call. */
static void punch_run(mm_host_client_t *c, uint32_t first, uint32_t n)
{
    int err = mm__punch(c->region_fd, (uint64_t)first * MM_CHUNK_SIZE, (uint64_t)n * MM_CHUNK_SIZE);
    if (err < 0)
        log_warn("client %u: punching chunks %u..%u: %s", c->id, first, first + n - 1,
                 strerror(-err));
    mm__paging_forget_chunks(c, first, n);
}

/* What a scan takes: step 1's free chunks (idle reservations only when
 * stealing), or step 2's unpinned discardable chunks. */
enum scan_kind { SCAN_FREE, SCAN_FREE_STEAL, SCAN_DISCARDABLE };

static bool take_chunk(mm_host_client_t *c, uint32_t i, enum scan_kind kind)
{
    if (kind == SCAN_DISCARDABLE)
        return mm__frames_try_discard(&c->frames, i);
    return mm__frames_try_reclaim(&c->frames, i, kind == SCAN_FREE_STEAL);
}

/* One scan: take up to want chunks of c, highest first (allocations grow
 * from the bottom), punching each adjacent run once. */
static uint32_t reclaim_scan(mm_ladder_t *l, mm_host_client_t *c, uint32_t want,
                             enum scan_kind kind)
{
    uint32_t taken = 0, run_first = 0, run_len = 0;
    uint64_t t0 = mm__now_ns();
    for (uint32_t i = c->chunk_count; i-- > 0 && taken < want;) {
        if (host_reclaimed(c, i) || !take_chunk(c, i, kind))
            continue;
        host_set_reclaimed(c, i, true);
        taken++;
        if (run_len && run_first == i + 1) {
            run_first = i;
            run_len++;
            continue;
        }
        if (run_len)
            punch_run(c, run_first, run_len);
        run_first = i;
        run_len = 1;
    }
    if (run_len)
        punch_run(c, run_first, run_len);
    c->granted_chunks -= taken;
    c->reclaimed_bytes_total += (uint64_t)taken * MM_CHUNK_SIZE;
    /* Saved by the next tick: until then the chunk words say RECLAIMED,
     * which a restarted daemon also takes as taken back. */
    if (taken)
        c->state_dirty = true;
    if (kind == SCAN_DISCARDABLE)
        c->discarded_bytes_total += (uint64_t)taken * MM_CHUNK_SIZE;
    /* A scan that found nothing did no step's work: not an observation. */
    if (taken > 0)
        mm__ladder_observe(l, kind == SCAN_DISCARDABLE ? MM_STEP_DISCARDABLE : MM_STEP_FREE,
                           mm__now_ns() - t0, (uint64_t)taken * MM_CHUNK_SIZE);
    return taken;
}

/* Steps 1 and 2 for one client, no message: unreserved free chunks, then
 * chunks idle threads keep reserved (they must not hide free memory), then
 * discardable chunks no reader pins. */
static uint32_t reclaim_client(mm_ladder_t *l, mm_host_client_t *c, uint32_t want)
{
    if (mm__is_baseline(c))
        return 0; /* a baseline guest's memory is its own: only its driver gives it */
    uint32_t taken = reclaim_scan(l, c, want, SCAN_FREE);
    if (taken < want)
        taken += reclaim_scan(l, c, want - taken, SCAN_FREE_STEAL);
    if (taken < want)
        taken += reclaim_scan(l, c, want - taken, SCAN_DISCARDABLE);
    if (taken > 0) {
        mm__refresh_resident(c);
        mm__refresh_idle(c);
    }
    return taken;
}

uint64_t mm__reclaim_own(mm_server_t *s, mm_host_client_t *c, uint64_t bytes)
{
    return (uint64_t)reclaim_client(&s->ladder, c, chunks_up(bytes)) * MM_CHUNK_SIZE;
}

static void run_job(reclaim_job_t *j)
{
    j->taken_chunks = reclaim_client(j->ladder, j->client, j->want_chunks);
}

static void *worker_main(void *arg)
{
    struct mm_reclaim_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->next >= p->njobs)
            pthread_cond_wait(&p->work, &p->lock);
        if (p->stop)
            break;
        reclaim_job_t *j = &p->jobs[p->next++];
        pthread_mutex_unlock(&p->lock);
        run_job(j);
        pthread_mutex_lock(&p->lock);
        if (++p->finished == p->njobs)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Run jobs, in parallel when there is more than one. */
static void run_jobs(mm_server_t *s, reclaim_job_t *jobs, size_t n)
{
    struct mm_reclaim_pool *p = s->pool;
    if (n == 1 || !p || p->nthreads == 0) {
        for (size_t i = 0; i < n; i++)
            run_job(&jobs[i]);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->jobs = jobs;
    p->njobs = n;
    p->next = p->finished = 0;
    pthread_cond_broadcast(&p->work);
    while (p->finished < p->njobs)
        pthread_cond_wait(&p->done, &p->lock);
    p->jobs = NULL;
    p->njobs = p->next = p->finished = 0;
    pthread_mutex_unlock(&p->lock);
}

int mm__reclaim_pool_start(mm_server_t *s)
{
    struct mm_reclaim_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (unsigned)cpus;
    for (unsigned i = 0; i < want; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
            break;
        p->nthreads++;
    }
    s->pool = p;
    return 0;
}

void mm__reclaim_pool_stop(mm_server_t *s)
{
    struct mm_reclaim_pool *p = s->pool;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p);
    s->pool = NULL;
}

/* The registered clients, in registry order; *n gets the count. The caller
 * frees the array. Loop thread only. */
static mm_host_client_t **client_list(mm_server_t *s, size_t *n)
{
    mm_host_client_t **list = calloc(s->nclients ? s->nclients : 1, sizeof(mm_host_client_t *));
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    *n = 0;
    if (!list)
        return NULL;
    for_each_client(s, iter, c) if (c->state == MM_CLIENT_REGISTERED && *n < s->nclients)
        list[(*n)++] = c;
    return list;
}

/* Granted or resident bytes of the clients in pool (ANY_POOL: all). */
#define ANY_POOL (-1)
static uint64_t sum_clients(mm_server_t *s, int pool, bool resident)
{
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    uint64_t sum = 0;
    for_each_client(s, iter, c)
    {
        if (pool == ANY_POOL || c->pool == pool)
            sum += resident ? c->resident_bytes : granted_of(c);
    }
    /* Clients of an earlier daemon that have not reconnected yet still hold
     * their memory: what they were granted is counted as held. */
    for (mm_host_client_t *r = s->recovering; r; r = r->next_recovering)
        if (pool == ANY_POOL || r->pool == pool)
            sum += granted_of(r);
    return sum;
}

uint64_t mm__total_granted(mm_server_t *s)
{
    return sum_clients(s, ANY_POOL, false);
}
uint64_t mm__total_resident(mm_server_t *s)
{
    return sum_clients(s, ANY_POOL, true);
}
uint64_t mm__pool_granted(mm_server_t *s, int pool)
{
    return sum_clients(s, pool, false);
}
uint64_t mm__pool_resident(mm_server_t *s, int pool)
{
    return sum_clients(s, pool, true);
}

void mm__refresh_resident(mm_host_client_t *c)
{
    int64_t r = mm__resident_bytes(c->region_fd);
    if (r < 0)
        return;
    if ((uint64_t)r != c->resident_bytes)
        c->revoke_empty = false; /* it changed: it may have something to give */
    c->resident_bytes = (uint64_t)r;
}

void mm__client_usage(const mm_host_client_t *c, mm_client_usage_t *u)
{
    uint64_t free_frames = 0, discardable = 0;
    for (uint32_t i = 0; i < c->chunk_count; i++) {
        if (host_reclaimed(c, i))
            continue;
        free_frames += mm__frames_chunk_free(&c->frames, i);
        discardable += mm__frames_chunk_discardable(&c->frames, i);
    }
    u->free_bytes = free_frames * MM_FRAME_SIZE;
    u->owned_bytes = granted_of(c) - u->free_bytes;
    u->discardable_bytes = discardable * MM_CHUNK_SIZE;
}

static void publish_target(mm_host_client_t *c, uint64_t target)
{
    uint32_t pressure = held_of(c) > target    ? MM_PRESSURE_HIGH
                        : held_of(c) == target ? MM_PRESSURE_LOW
                                               : MM_PRESSURE_NONE;
    uint32_t was = atomic_load_explicit(&c->ctl->pressure, memory_order_relaxed);
    /* Ring only for news the client must act on: a lower target or another
     * pressure level. A rise is read at its next look (an install's reply
     * already says what was granted), but for a baseline guest, whose
     * driver acts on every change as on the device's config interrupt. */
    bool ring = target < c->target_bytes || was != pressure ||
                (mm__is_baseline(c) && target != c->target_bytes);
    c->target_bytes = target;
    atomic_store_explicit(&c->ctl->target_bytes, target, memory_order_relaxed);
    atomic_store_explicit(&c->ctl->pressure, pressure, memory_order_release);
    if (ring)
        (void)mm__doorbell_ring(c->bell_to_client); /* a full doorbell is still rung */
}

void mm__policy_update(mm_server_t *s)
{
    size_t n;
    mm_host_client_t **list = client_list(s, &n);
    mm_policy_input_t *in = calloc(n ? n : 1, sizeof *in);
    uint64_t *target = calloc(n ? n : 1, sizeof *target);
    if (!list || !in || !target) {
        log_error("policy: out of memory; targets unchanged");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        mm_host_client_t *c = list[i];
        /* A frozen client still wants the pages the host took from it. */
        uint64_t frozen_out = c->frozen ? mm__paging_paged_bytes(c) : 0;
        /* A baseline guest's target is its driver's (baselines.c). */
        bool baseline = mm__is_baseline(c);
        in[i] = (mm_policy_input_t){.demand_bytes = held_of(c) + c->unmet_bytes + frozen_out,
                                    .idle_bytes = c->idle_bytes,
                                    .min_bytes = c->min_bytes,
                                    .max_bytes = c->max_bytes,
                                    .weight = c->weight,
                                    .pinned = c->pinned || baseline,
                                    .pinned_bytes =
                                        baseline ? c->driver_target_bytes : c->pinned_bytes};
    }
    mm__policy_targets(mm__policy_capacity(s->capacity_bytes, s->psi_some_avg10), s->cfg.idle_tax,
                       in, n, target);
    for (size_t i = 0; i < n; i++)
        publish_target(list[i], target[i]);
out:
    free(list);
    free(in);
    free(target);
}

void mm__refresh_idle(mm_host_client_t *c)
{
    mm_client_usage_t u;
    mm__client_usage(c, &u);
    /* Reported garbage is the client's word: it can only call its own owned
     * memory idle, which only lowers its own share. Discardable chunks are
     * clean caches, idle by definition. */
    uint64_t garbage = atomic_load_explicit(&c->ctl->garbage_bytes, memory_order_relaxed);
    uint64_t idle_owned =
        garbage > UINT64_MAX - u.discardable_bytes ? UINT64_MAX : garbage + u.discardable_bytes;
    c->idle_bytes = u.free_bytes + (idle_owned < u.owned_bytes ? idle_owned : u.owned_bytes);
}

/* Chunks by which resident bytes exceed capacity. Capacity is about
 * resident memory (DESIGN.md section 3): a runtime keeps frames it released,
 * and its pages are what the host must have. */
static uint32_t excess_chunks(mm_server_t *s)
{
    uint64_t resident = mm__total_resident(s);
    return resident > s->capacity_bytes ? chunks_up(resident - s->capacity_bytes) : 0;
}

/* Step 1, pass A: every client above its target gives its free chunks down
 * to the target, all regions in parallel. Skips `except`. */
static uint32_t reclaim_over_target(mm_server_t *s, mm_host_client_t *except)
{
    size_t n, njobs = 0;
    mm_host_client_t **list = client_list(s, &n);
    reclaim_job_t *jobs = calloc(n ? n : 1, sizeof *jobs);
    uint32_t taken = 0;
    if (!list || !jobs)
        goto out;
    for (size_t i = 0; i < n; i++) {
        mm_host_client_t *c = list[i];
        if (c == except || held_of(c) <= c->target_bytes)
            continue;
        jobs[njobs++] = (reclaim_job_t){&s->ladder, c, chunks_up(held_of(c) - c->target_bytes), 0};
    }
    run_jobs(s, jobs, njobs);
    for (size_t i = 0; i < njobs; i++)
        taken += jobs[i].taken_chunks;
out:
    free(list);
    free(jobs);
    return taken;
}

/* Step 1, pass B: capacity is still exceeded, so take free chunks from
 * anyone, most-over-target first. */
static uint32_t reclaim_any(mm_server_t *s, mm_host_client_t *except, uint32_t need)
{
    size_t n;
    mm_host_client_t **list = client_list(s, &n);
    uint32_t taken = 0;
    if (!list)
        return 0;
    /* Each client is visited once: reclaim_client takes all it can. */
    while (taken < need && n > 0) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++) {
            int64_t over_i = (int64_t)held_of(list[i]) - (int64_t)list[i]->target_bytes;
            int64_t over_b = (int64_t)held_of(list[best]) - (int64_t)list[best]->target_bytes;
            if (over_i > over_b)
                best = i;
        }
        if (list[best] != except)
            taken += reclaim_client(&s->ladder, list[best], need - taken);
        list[best] = list[--n];
    }
    free(list);
    return taken;
}

/* Post one revocation of bytes to c, with reason. */
static void post_revocation(mm_server_t *s, mm_host_client_t *c, uint64_t bytes, uint32_t reason,
                            uint64_t now)
{
    mm_control_t *ctl = c->ctl;
    c->revoke_seq++;
    /* Recorded before the client sees it, so that a restarted daemon never
     * posts a number the client has answered already. */
    (void)mm__state_save(s, c);
    c->revoke_bytes = bytes;
    c->revoke_posted_ns = now;
    c->progress_ns = now;
    mm__refresh_resident(c);
    c->revoke_resident_at_post = c->resident_bytes;
    c->revoke_deadline_ns = now + REVOKE_BASE_NS + (bytes >> 20) * REVOKE_NS_PER_MIB;
    c->revoke_pending = true;
    atomic_store_explicit(&ctl->revoke_bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&ctl->revoke_deadline_ns, c->revoke_deadline_ns, memory_order_relaxed);
    atomic_store_explicit(&ctl->revoke_reason, reason, memory_order_relaxed);
    atomic_store_explicit(&ctl->revoke_seq, c->revoke_seq, memory_order_release);
    (void)mm__doorbell_ring(c->bell_to_client);
    log_debug("client %u: revocation %llu of %llu bytes", c->id, (unsigned long long)c->revoke_seq,
              (unsigned long long)bytes);
}

/* The client's declared cost of giving memory back, for ordering only. */
static uint64_t declared_cost(const mm_host_client_t *c)
{
    return atomic_load_explicit(&c->ctl->cost_ns_per_mib, memory_order_relaxed);
}

/* Cheapest first; among equals, clients that answer before those that miss
 * deadlines. */
static int by_cost(const void *a, const void *b)
{
    const mm_host_client_t *x = *(mm_host_client_t *const *)a;
    const mm_host_client_t *y = *(mm_host_client_t *const *)b;
    uint64_t cx = declared_cost(x), cy = declared_cost(y);
    if (cx != cy)
        return cx < cy ? -1 : 1;
    return x->missed_deadlines < y->missed_deadlines   ? -1
           : x->missed_deadlines > y->missed_deadlines ? 1
                                                       : 0;
}

/*
 * Step 3: ask clients above target to give back the difference, cheapest
 * first by their declared cost, until what is asked covers what is needed
 * (capacity exceeded plus installs not granted). A client the admin pinned
 * below what it holds is always asked. One request per client at a time; a
 * missed deadline is counted at the tick, and that client is not asked again
 * until it answers late; one that answered "nothing more" is not asked again
 * until what it holds changes.
 */
static void post_revocations(mm_server_t *s, mm_host_client_t *except, uint32_t reason)
{
    size_t n, k = 0;
    mm_host_client_t **list = client_list(s, &n);
    if (!list)
        return;
    uint64_t need = (uint64_t)excess_chunks(s) * MM_CHUNK_SIZE, asked = 0;
    for (size_t i = 0; i < n; i++) {
        need += list[i]->unmet_bytes;
        mm_host_client_t *c = list[i];
        /* A client that let its last request lapse is left to the forced
         * steps: asking it again would only hold up the others. */
        if (mm__is_baseline(c))
            continue; /* never asked: the host has only the driver's own request */
        if (c != except && held_of(c) > c->target_bytes && !c->revoke_pending &&
            !c->revoke_missed && !c->revoke_empty)
            list[k++] = c;
        else if (c != except && c->revoke_pending && held_of(c) > c->target_bytes)
            asked += c->revoke_bytes; /* already on its way */
    }
    qsort(list, k, sizeof *list, by_cost);
    uint64_t now = mm__now_ns();
    for (size_t i = 0; i < k; i++) {
        mm_host_client_t *c = list[i];
        if (asked >= need && !c->pinned)
            continue;
        uint64_t bytes = held_of(c) - c->target_bytes;
        post_revocation(s, c, bytes, reason, now);
        asked += bytes;
    }
    free(list);
}

void mm__reclaim_from(mm_server_t *s, mm_host_client_t *c, uint64_t bytes, uint64_t *taken,
                      uint64_t *asked)
{
    uint32_t want = chunks_up(bytes);
    uint32_t got = reclaim_client(&s->ladder, c, want);
    *taken = (uint64_t)got * MM_CHUNK_SIZE;
    *asked = 0;
    if (got < want && !c->revoke_pending && !mm__is_baseline(c)) {
        *asked = (uint64_t)(want - got) * MM_CHUNK_SIZE;
        post_revocation(s, c, *asked, MM_REVOKE_ADMIN, mm__now_ns());
    }
    mm__policy_update(s);
}

uint64_t mm__reclaim(mm_server_t *s)
{
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    for_each_client(s, iter, c) mm__refresh_resident(c);
    mm__policy_update(s);
    uint32_t taken = reclaim_over_target(s, NULL);
    uint32_t need = excess_chunks(s);
    if (need > 0)
        taken += reclaim_any(s, NULL, need);
    mm__policy_update(s);
    post_revocations(s, NULL, excess_chunks(s) > 0 ? MM_REVOKE_CAPACITY : MM_REVOKE_CLIENT);
    if (taken)
        log_debug("reclaimed %u chunks (%llu MiB)", taken, (unsigned long long)taken * 2);
    return (uint64_t)taken * MM_CHUNK_SIZE;
}

int mm__install(mm_server_t *s, mm_host_client_t *c, uint32_t slot, const uint32_t *chunks,
                uint32_t n, uint32_t *out)
{
    uint32_t limit = chunks_of(c->max_bytes);
    if (c->granted_chunks >= limit)
        return -EDQUOT;
    uint32_t asked = 0;
    for (uint32_t i = 0; i < n; i++)
        asked += host_reclaimed(c, chunks[i]);
    if (asked == 0)
        return -EALREADY; /* all granted already, e.g. to another thread */
    c->unmet_bytes = (uint64_t)asked * MM_CHUNK_SIZE;
    mm__policy_update(s);
    /* Round what is held down: a chunk the client is populating right now
     * shows as part of one in st_blocks, and must not eat the grant. */
    uint32_t target = chunks_of(c->target_bytes), held = chunks_of(held_of(c));
    uint32_t allow = target > held ? target - held : 0;
    if (allow > asked)
        allow = asked;
    if (allow > limit - c->granted_chunks)
        allow = limit - c->granted_chunks;
    uint32_t cap = chunks_of(s->capacity_bytes), used = chunks_of(mm__total_resident(s));
    uint32_t room = cap > used ? cap - used : 0, taken = 0;
    if (room < allow) {
        taken = reclaim_over_target(s, c);
        if (room + taken < allow)
            taken += reclaim_any(s, c, allow - room - taken);
        room += taken;
    }
    /* The client's NUMA pool must have room too. */
    uint64_t pool_cap = mm__numa_pool_capacity(&s->numa, c->pool, s->capacity_bytes);
    uint64_t pool_used = mm__pool_resident(s, c->pool);
    uint32_t pool_room = pool_cap > pool_used ? chunks_of(pool_cap - pool_used) : 0;
    if (room > pool_room)
        room = pool_room;
    uint32_t grant = allow < room ? allow : room, k = 0;
    /* A VM's RAM is its own: the host cannot refuse a baseline guest a page
     * it touches (it made what room it could above). */
    if (mm__is_baseline(c))
        grant = asked < limit - c->granted_chunks ? asked : limit - c->granted_chunks;
    for (uint32_t i = 0; i < n && k < grant; i++) {
        if (!host_reclaimed(c, chunks[i]))
            continue; /* already granted, or asked twice */
        host_set_reclaimed(c, chunks[i], false);
        out[k++] = chunks[i];
    }
    /* The grant is recorded before the client can use it: a restarted
     * daemon then never takes back a chunk the client was given. A chunk
     * recorded as granted whose word still says RECLAIMED (a crash in
     * between) is taken back again at the restart: it is still free. */
    if (k > 0 && mm__state_save(s, c) < 0) {
        for (uint32_t i = 0; i < k; i++)
            host_set_reclaimed(c, out[i], true);
        return -EIO;
    }
    for (uint32_t i = 0; i < k; i++)
        mm__frames_install(&c->frames, out[i], slot);
    c->granted_chunks += k;
    /* The client populates what it was granted at once: count it resident
     * now, so that the next install does not hand out the same room; the
     * next refresh reads the kernel's own figure. */
    c->resident_bytes += (uint64_t)k * MM_CHUNK_SIZE;
    /* What was not granted stays in the client's demand until its next
     * install, so that others above their share are asked for it. */
    c->unmet_bytes = (uint64_t)(asked - k) * MM_CHUNK_SIZE;
    /* Demand moved from unmet to granted: the sum, and so every target, is
     * unchanged unless others gave chunks back; then recompute. */
    if (taken > 0)
        mm__policy_update(s);
    else
        publish_target(c, c->target_bytes);
    if (k < asked)
        post_revocations(s, c, MM_REVOKE_CLIENT);
    return k > 0 ? (int)k : -ENOMEM;
}

/* Reclaimed chunks the client touched anyway: re-punch them, count them, and
 * put back any chunk word it rewrote. One SEEK_DATA per reclaimed run. */
void mm__reclaim_check_touched(mm_host_client_t *c)
{
    uint32_t rewritten = 0, touched = 0;
    for (uint32_t i = 0; i < c->chunk_count;) {
        if (!host_reclaimed(c, i)) {
            i++;
            continue;
        }
        uint32_t j = i;
        while (j < c->chunk_count && host_reclaimed(c, j))
            rewritten += mm__frames_repair_reclaimed(&c->frames, j++);
        uint64_t off = (uint64_t)i * MM_CHUNK_SIZE, len = (uint64_t)(j - i) * MM_CHUNK_SIZE;
        if (mm__range_has_data(c->region_fd, off, len) > 0) {
            for (uint32_t k = i; k < j; k++) {
                if (mm__range_has_data(c->region_fd, (uint64_t)k * MM_CHUNK_SIZE, MM_CHUNK_SIZE) <=
                    0)
                    continue;
                c->touched_reclaimed++;
                touched++;
                punch_run(c, k, 1);
                mm__refresh_resident(c);
            }
        }
        i = j;
    }
    /* One line per look, however much a hostile client wrote. */
    if (touched)
        log_warn("client %u (%s): touched %u reclaimed chunks; punched again", c->id, c->name,
                 touched);
    if (rewritten)
        log_warn("client %u (%s): %u reclaimed chunk words rewritten; put back", c->id, c->name,
                 rewritten);
}

/* PSI "some avg10" of /proc/pressure/memory; 0 where the kernel has none. */
static double read_psi(void)
{
    FILE *f = fopen("/proc/pressure/memory", "re");
    double avg10 = 0;
    if (!f)
        return 0;
    if (fscanf(f, "some avg10=%lf", &avg10) != 1)
        avg10 = 0;
    fclose(f);
    return avg10;
}

/* Is a client above target that the ladder can still act on (not waiting for
 * an answer, not left to the forced steps)? */
static bool any_actionable_over_target(mm_server_t *s)
{
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    for_each_client(s, iter, c) if (!mm__is_baseline(c) && held_of(c) > c->target_bytes &&
                                    !c->revoke_pending && !c->revoke_missed &&
                                    !c->revoke_empty) return true;
    return false;
}

/*
 * The forced steps, for clients that let a revocation lapse and still hold
 * more than their target: host paging where the client offered a
 * userfaultfd, else freezing it (paging.c). At most a batch per client per
 * tick.
 */
static void force_revocation(mm_server_t *s)
{
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    for_each_client(s, iter, c)
    {
        mm__paging_tick(s, c);
        if (!c->revoke_missed)
            continue;
        /* A client still giving memory back is late, not unwilling: it is
         * left to finish until it stalls (FORCE_STALL_NS). Drops caused by
         * our own paging or freezing are not its progress. */
        uint64_t before = c->resident_bytes;
        uint64_t now = mm__now_ns();
        mm__refresh_resident(c);
        if (c->resident_bytes < before && !c->frozen && c->paged_out_total == 0)
            c->progress_ns = now;
        if (now - c->progress_ns < FORCE_STALL_NS || held_of(c) <= c->target_bytes)
            continue;
        if (mm__paging_force(s, c, held_of(c) - c->target_bytes) > 0)
            mm__policy_update(s);
    }
}

void mm__reclaim_tick(mm_server_t *s)
{
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    uint64_t now = mm__now_ns();
    s->ticks++;
    if (s->ticks % PSI_TICKS == 0)
        s->psi_some_avg10 = read_psi();
    for_each_client(s, iter, c)
    {
        if (c->revoke_pending && now > c->revoke_deadline_ns) {
            c->revoke_pending = false;
            c->revoke_missed = true;
            c->missed_deadlines++;
            log_info("client %u (%s): missed the deadline of revocation %llu", c->id, c->name,
                     (unsigned long long)c->revoke_seq);
        }
        /* Kernel truth costs a syscall per client: each client is looked at
         * once per REFRESH_TICKS, in turn, so that an idle daemon with many
         * clients stays idle. */
        if ((c->id + s->ticks) % REFRESH_TICKS == 0) {
            mm__refresh_resident(c);
            mm__refresh_idle(c);
            mm__reclaim_check_touched(c);
        } else if (c->resident_bytes > granted_of(c)) {
            /* More resident than granted (seen by any refresh, the admin's
             * included) can only be a touched reclaimed chunk: look now. */
            mm__reclaim_check_touched(c);
        }
        if (c->state_dirty)
            (void)mm__state_save(s, c);
    }
    mm__restart_tick(s);
    if (excess_chunks(s) > 0 || any_actionable_over_target(s))
        mm__reclaim(s);
    force_revocation(s);
}
