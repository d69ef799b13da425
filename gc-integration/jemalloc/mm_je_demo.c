/*
 * mm-je-demo: a key-value cache whose values live in a jemalloc arena backed
 * by mm frames. It fills --live bytes of checksummed values, then churns
 * --churn bytes (allocated and freed, leaving the arena dirty pages the host
 * can take back through a revocation), prints "ready" and waits for SIGTERM or
 * SIGINT; then it verifies every live value and exits 0 only if all are
 * intact. The index is ordinary memory; only the values are in the arena.
 */
#include <mm/jemalloc.h>
#include <mm/mm.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jemalloc/jemalloc.h>

#define MIN_VALUE 256u
#define MAX_VALUE (32u << 10)

typedef struct value {
    uint64_t key;
    uint32_t len; /* payload bytes after the header */
    uint32_t sum; /* FNV-1a of the payload */
    unsigned char data[];
} value_t;

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint32_t fnv(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static value_t *make_value(unsigned arena, uint64_t key, uint64_t *seed)
{
    uint32_t len = MIN_VALUE + (uint32_t)(rng(seed) % (MAX_VALUE - MIN_VALUE));
    value_t *v = mallocx(sizeof *v + len, MALLOCX_ARENA(arena) | MALLOCX_TCACHE_NONE);
    if (!v)
        return NULL;
    v->key = key;
    v->len = len;
    uint64_t x = key * 0x9e3779b97f4a7c15ull + 1;
    for (uint32_t i = 0; i < len; i++)
        v->data[i] = (unsigned char)(rng(&x) >> 24);
    v->sum = fnv(v->data, len);
    return v;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mm-je-demo --socket PATH [--name NAME] --live SIZE --churn SIZE\n"
               "  Fill SIZE bytes of checksummed values in a jemalloc arena of mm frames,\n"
               "  churn (allocate and free) --churn bytes, print \"ready\", wait for\n"
               "  SIGTERM/SIGINT, verify every value; exit 0 iff all are intact.\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"name", required_argument, NULL, 'n'},
        {"live", required_argument, NULL, 'l'},   {"churn", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *sock = NULL, *name = "mm-je-demo";
    uint64_t live = 0, churn = 0;
    int have_live = 0, have_churn = 0, opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            sock = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'l':
        case 'c':
            if (mm_parse_size(optarg, opt == 'l' ? &live : &churn) < 0) {
                fprintf(stderr, "mm-je-demo: bad size '%s' (try 64M)\n", optarg);
                return 2;
            }
            *(opt == 'l' ? &have_live : &have_churn) = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "mm-je-demo: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || !sock || !have_live || !have_churn) {
        fprintf(stderr, "mm-je-demo: needs --socket PATH --live SIZE --churn SIZE (see --help)\n");
        return 2;
    }

    /* Block the signals before libmm starts its thread, then sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = live + churn + (64u << 20);
    mm_client_t *c = NULL;
    int err = mm_jemalloc_open(sock, &o, &c);
    if (err < 0) {
        fprintf(stderr, "mm-je-demo: cannot connect to mmsrv at %s: %s\n", sock, mm_strerror(err));
        return 1;
    }
    unsigned arena = 0;
    err = mm_jemalloc_arena(c, &arena);
    if (err < 0) {
        fprintf(stderr, "mm-je-demo: cannot create the arena: %s\n", mm_strerror(err));
        mm_client_close(c);
        return 1;
    }

    size_t cap = 1024, n = 0;
    value_t **vals = malloc(cap * sizeof *vals);
    uint64_t seed = 0x2545f4914f6cdd1dull, live_done = 0;
    int rc = 1;
    for (uint64_t key = 1; vals && live_done < live; key++) {
        if (n == cap) {
            value_t **grown = realloc(vals, 2 * cap * sizeof *vals);
            if (!grown)
                break;
            vals = grown;
            cap *= 2;
        }
        value_t *v = make_value(arena, key, &seed);
        if (!v)
            break;
        vals[n++] = v;
        live_done += sizeof *v + v->len;
    }
    if (!vals || live_done < live) {
        fprintf(stderr, "mm-je-demo: out of memory after %llu of %llu live bytes\n",
                (unsigned long long)live_done, (unsigned long long)live);
        goto out;
    }
    /* Churn in batches of up to 64 MiB: allocate, then free the whole batch. */
    enum { BATCH = 8192 };
    static value_t *batch[BATCH];
    uint64_t churned = 0, key = UINT64_C(1) << 40;
    while (churned < churn) {
        size_t k = 0;
        uint64_t in_batch = 0;
        while (k < BATCH && churned < churn && in_batch < (64u << 20)) {
            value_t *v = make_value(arena, key++, &seed);
            if (!v)
                break;
            batch[k++] = v;
            in_batch += sizeof *v + v->len;
            churned += sizeof *v + v->len;
        }
        for (size_t i = 0; i < k; i++)
            dallocx(batch[i], MALLOCX_TCACHE_NONE);
        if (k == 0) {
            fprintf(stderr, "mm-je-demo: out of memory while churning\n");
            goto out;
        }
    }
    (void)mm_jemalloc_report(c); /* tell the host what is garbage now */
    mm_jemalloc_stats_t st;
    if (mm_jemalloc_stats(&st) == 0)
        fprintf(stderr,
                "mm-je-demo: live %llu bytes in %zu values, churned %llu, active %llu, "
                "dirty %llu\n",
                (unsigned long long)live_done, n, (unsigned long long)churned,
                (unsigned long long)st.active_bytes, (unsigned long long)st.dirty_bytes);
    printf("ready\n");
    fflush(stdout);

    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    uint64_t verified = 0, errors = 0;
    for (size_t i = 0; i < n; i++) {
        const value_t *v = vals[i];
        if (v->key != i + 1 || v->len < MIN_VALUE || v->len >= MAX_VALUE ||
            fnv(v->data, v->len) != v->sum)
            errors++;
        else
            verified += sizeof *v + v->len;
    }
    fprintf(stderr, "mm-je-demo: verified %llu bytes, %llu errors\n", (unsigned long long)verified,
            (unsigned long long)errors);
    rc = errors == 0 ? 0 : 1;
out:
    free(vals);
    mm_jemalloc_close(c); /* destroys the arena and every value in it */
    return rc;
}
