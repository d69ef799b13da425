/*
 * Stress test of the client registry (mmsrv/registry.c), not a benchmark:
 * reader threads look clients up by id and by name under rcu_read_lock, as
 * workers, stats and the admin path may, while the main thread plays the
 * event loop, adding and removing clients (removal frees them after an RCU
 * grace period). Fixed seeds. A reader must only ever see a live, consistent
 * client: the id and name it asked for, never freed memory (AddressSanitizer
 * and ThreadSanitizer builds run this too).
 *
 * Usage: stress_registry [readers] [rounds]
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "daemon.h"

#define LIVE_MAX 64

typedef struct shared {
    mm_server_t server;
    _Atomic bool stop;
    _Atomic uint32_t next_id; /* ids below this were added at some point */
    _Atomic uint64_t found, missed, errors;
} shared_t;

typedef struct reader {
    shared_t *sh;
    uint64_t seed;
} reader_t;

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One lookup by id or name; checks what it finds while still inside the
 * read-side section. */
static void look_up(shared_t *sh, uint64_t *seed)
{
    /* Recent ids: most of them are live, some were just removed. */
    uint32_t top = atomic_load(&sh->next_id);
    uint32_t span = top - 1 < 2 * LIVE_MAX ? top - 1 : 2 * LIVE_MAX;
    uint32_t id = span ? top - 1 - (uint32_t)(next_random(seed) % span) : 1;
    bool by_name = next_random(seed) & 1;
    char key[MM_NAME_MAX];
    snprintf(key, sizeof key, by_name ? "client-%u" : "%u", id);
    rcu_read_lock();
    mm_host_client_t *c = mm__client_find(&sh->server, key);
    if (c) {
        char want[MM_NAME_MAX];
        snprintf(want, sizeof want, "client-%u", id);
        if (c->id != id || strcmp(c->name, want) != 0)
            atomic_fetch_add(&sh->errors, 1);
        atomic_fetch_add(&sh->found, 1);
    } else {
        atomic_fetch_add(&sh->missed, 1);
    }
    rcu_read_unlock();
}

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    rcu_register_thread();
    while (!atomic_load(&r->sh->stop))
        look_up(r->sh, &r->seed);
    rcu_unregister_thread();
    return NULL;
}

static mm_host_client_t *new_client(uint32_t id)
{
    mm_host_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "stress_registry: out of memory\n");
        exit(1);
    }
    c->id = id;
    c->state = MM_CLIENT_REGISTERED;
    snprintf(c->name, sizeof c->name, "client-%u", id);
    return c;
}

/* The event loop's part: keep between 1 and LIVE_MAX clients, churning. */
static void churn(shared_t *sh, int rounds)
{
    mm_host_client_t *live[LIVE_MAX];
    int n = 0;
    uint64_t seed = 42;
    for (int i = 0; i < rounds; i++) {
        bool add = n == 0 || (n < LIVE_MAX && (next_random(&seed) & 1));
        rcu_read_lock(); /* the loop thread handles events inside one */
        if (add) {
            live[n++] = new_client(atomic_load(&sh->next_id));
            mm__registry_add(&sh->server, live[n - 1]);
            atomic_fetch_add(&sh->next_id, 1);
        } else {
            size_t k = (size_t)(next_random(&seed) % (uint64_t)n);
            mm__registry_del(&sh->server, live[k]);
            live[k] = live[--n];
        }
        rcu_read_unlock();
    }
    rcu_read_lock();
    while (n > 0)
        mm__registry_del(&sh->server, live[--n]);
    rcu_read_unlock();
}

int main(int argc, char **argv)
{
    int nreaders = argc > 1 ? atoi(argv[1]) : 3;
    int rounds = argc > 2 ? atoi(argv[2]) : 200000;
    if (nreaders < 1 || nreaders > 64 || rounds < 1) {
        fprintf(stderr, "usage: stress_registry [readers 1..64] [rounds]\n");
        return 2;
    }
    static shared_t sh;
    atomic_store(&sh.next_id, 1);
    rcu_register_thread();
    if (mm__registry_init(&sh.server) < 0) {
        fprintf(stderr, "stress_registry: cannot create the registry\n");
        return 1;
    }
    pthread_t threads[64];
    reader_t readers[64];
    for (int i = 0; i < nreaders; i++) {
        readers[i] = (reader_t){&sh, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
        pthread_create(&threads[i], NULL, reader_main, &readers[i]);
    }
    churn(&sh, rounds);
    atomic_store(&sh.stop, true);
    for (int i = 0; i < nreaders; i++)
        pthread_join(threads[i], NULL);
    mm__registry_fini(&sh.server);
    rcu_unregister_thread();
    uint64_t errors = atomic_load(&sh.errors);
    printf("stress_registry: %d rounds, %llu found, %llu missed, %llu errors: %s\n", rounds,
           (unsigned long long)atomic_load(&sh.found), (unsigned long long)atomic_load(&sh.missed),
           (unsigned long long)errors, errors ? "FAILED" : "ok");
    return errors ? 1 : 0;
}
