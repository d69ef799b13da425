/*
 * mm-gc-demo: a Boehm GC workload whose heap lives in mm frames.
 *
 * It opens a GC client (mm_gc_open, before GC_INIT), builds a live set of
 * --live bytes — a quarter as binary trees of checksummed nodes, the rest as
 * an object cache of checksummed atomic objects of mixed sizes — then
 * allocates --garbage bytes as objects just under 64 KiB (16 whole heap
 * blocks each) and drops every reference, so that all of the garbage lies in
 * whole free heap blocks. One GC_gcollect() makes libgc count it (and the
 * library report it to the host). It prints "ready" and waits for SIGTERM or
 * SIGINT; then it verifies every live object and exits 0 only if all are
 * intact. Revocations are answered by the library on libmm's thread, or,
 * with --uncooperative, never.
 *
 * The live set hangs from static roots (g_trees, g_cache): libgc scans the
 * program's data segment.
 */
#define GC_THREADS
#include <gc/gc.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mm/gc.h>

#define MIB        (1ull << 20)
#define TREE_DEPTH 12
#define TREE_NODES ((1u << TREE_DEPTH) - 1)
/* Just under 16 heap blocks: libgc adds a byte per object for interior
 * pointers, and a 64 KiB object would spill into a 17th block. */
#define GARBAGE_OBJ_BYTES (64u * 1024 - 64)

struct demo_opts {
    const char *socket;
    const char *name;
    uint64_t live_bytes;
    uint64_t garbage_bytes;
    uint64_t max_bytes;
    bool uncooperative;
};

struct node {
    struct node *left, *right;
    uint64_t value;
};

/* An atomic (pointer-free) cache object: n_words words of pattern. */
struct obj {
    uint64_t index;
    uint64_t n_words;
    uint64_t words[];
};

/* Roots. Invariant: g_trees[0..g_ntrees) and g_cache[0..g_nobjs) are set. */
static struct node **g_trees;
static size_t g_ntrees;
static struct obj **g_cache;
static size_t g_nobjs;

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t tree_value(size_t tree, uint64_t node)
{
    return splitmix64(((uint64_t)tree << 32) ^ node);
}

static uint64_t obj_word(uint64_t index, uint64_t word)
{
    return splitmix64((index << 24) ^ word ^ 0x5eedull);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mm-gc-demo --socket PATH [--name NAME] --live SIZE --garbage SIZE "
               "[--max SIZE] [--uncooperative]\n"
               "\n"
               "A Boehm GC heap in mm frames: build SIZE bytes of live binary trees and\n"
               "checksummed cache objects, then --garbage bytes of garbage in whole heap\n"
               "blocks, collect once, print \"ready\" and wait. The host may revoke the\n"
               "garbage. On SIGTERM or SIGINT, verify the live set; exit 0 if intact.\n"
               "\n"
               "  --socket PATH      the daemon's client socket\n"
               "  --name NAME        name shown by mmctl (default: pid-<pid>)\n"
               "  --live SIZE        live bytes to build and keep (e.g. 64M)\n"
               "  --garbage SIZE     bytes of garbage to leave in the heap (e.g. 256M)\n"
               "  --max SIZE         region size (default: 2 x (live + garbage), at least 64M)\n"
               "  --uncooperative    never answer the host's revocation requests\n"
               "  --help             show this help\n");
}

static int bad_arg(const char *what, const char *value)
{
    fprintf(stderr, "mm-gc-demo: %s '%s' (see --help)\n", what, value);
    return -EINVAL;
}

/* 0: run; 1: --help was shown; -EINVAL: bad arguments (said why). */
static int parse_args(int argc, char **argv, struct demo_opts *o)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"name", required_argument, NULL, 'n'},
        {"live", required_argument, NULL, 'l'},   {"garbage", required_argument, NULL, 'g'},
        {"max", required_argument, NULL, 'm'},    {"uncooperative", no_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    bool have_live = false, have_garbage = false;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            o->socket = optarg;
            break;
        case 'n':
            o->name = optarg;
            break;
        case 'l':
            if (mm_parse_size(optarg, &o->live_bytes) < 0)
                return bad_arg("bad size for --live", optarg);
            have_live = true;
            break;
        case 'g':
            if (mm_parse_size(optarg, &o->garbage_bytes) < 0)
                return bad_arg("bad size for --garbage", optarg);
            have_garbage = true;
            break;
        case 'm':
            if (mm_parse_size(optarg, &o->max_bytes) < 0 || o->max_bytes == 0)
                return bad_arg("bad size for --max", optarg);
            break;
        case 'u':
            o->uncooperative = true;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            return bad_arg("missing value for", argv[optind - 1]);
        default:
            return bad_arg("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_arg("unexpected argument", argv[optind]);
    if (!o->socket)
        return bad_arg("missing", "--socket");
    if (!have_live)
        return bad_arg("missing", "--live");
    if (!have_garbage)
        return bad_arg("missing", "--garbage");
    if (o->max_bytes == 0) {
        uint64_t want = 2 * (o->live_bytes + o->garbage_bytes);
        want = (want + 2 * MIB - 1) & ~(2 * MIB - 1);
        o->max_bytes = want < 64 * MIB ? 64 * MIB : want;
    }
    return 0;
}

static struct node *build_tree(size_t tree, int depth, uint64_t *counter)
{
    struct node *n = GC_MALLOC(sizeof *n);
    if (!n)
        return NULL;
    n->value = tree_value(tree, (*counter)++);
    if (depth > 1) {
        n->left = build_tree(tree, depth - 1, counter);
        n->right = build_tree(tree, depth - 1, counter);
        if (!n->left || !n->right)
            return NULL;
    }
    return n;
}

/* Preorder walk matching build_tree; counts bad nodes. */
static uint64_t check_tree(const struct node *n, size_t tree, int depth, uint64_t *counter)
{
    if (!n)
        return 1u << depth; /* a lost subtree: every node in it counts */
    uint64_t errors = n->value != tree_value(tree, (*counter)++);
    if (depth > 1) {
        errors += check_tree(n->left, tree, depth - 1, counter);
        errors += check_tree(n->right, tree, depth - 1, counter);
    }
    return errors;
}

static int build_live(uint64_t live_bytes)
{
    uint64_t tree_bytes = live_bytes / 4;
    g_ntrees = (size_t)(tree_bytes / (TREE_NODES * 32u));
    if (g_ntrees == 0 && live_bytes > 0)
        g_ntrees = 1;
    g_trees = GC_MALLOC((g_ntrees + 1) * sizeof *g_trees);
    if (!g_trees)
        return -ENOMEM;
    for (size_t t = 0; t < g_ntrees; t++) {
        uint64_t counter = 0;
        g_trees[t] = build_tree(t, TREE_DEPTH, &counter);
        if (!g_trees[t])
            return -ENOMEM;
    }

    uint64_t cache_bytes = live_bytes - tree_bytes;
    size_t cap = (size_t)(cache_bytes / 1024 + 16);
    g_cache = GC_MALLOC(cap * sizeof *g_cache);
    if (!g_cache)
        return -ENOMEM;
    uint64_t held = 0;
    for (size_t i = 0; i < cap && held < cache_bytes; i++) {
        uint64_t n_words = 14 + (splitmix64(i) % 8) * 32; /* 128 B .. 1.9 KiB */
        struct obj *o = GC_MALLOC_ATOMIC(sizeof *o + n_words * sizeof(uint64_t));
        if (!o)
            return -ENOMEM;
        o->index = i;
        o->n_words = n_words;
        for (uint64_t w = 0; w < n_words; w++)
            o->words[w] = obj_word(i, w);
        g_cache[i] = o;
        g_nobjs = i + 1;
        held += sizeof *o + n_words * sizeof(uint64_t);
    }
    return 0;
}

/* Garbage in whole heap blocks: all of it is reachable until the end, so
 * libgc cannot recycle it on the way, then every reference is dropped. */
static int build_garbage(uint64_t garbage_bytes)
{
    size_t n = (size_t)((garbage_bytes + GARBAGE_OBJ_BYTES - 1) / GARBAGE_OBJ_BYTES);
    if (n == 0)
        return 0;
    void **hold = GC_MALLOC(n * sizeof *hold);
    if (!hold)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint64_t *p = GC_MALLOC_ATOMIC(GARBAGE_OBJ_BYTES);
        if (!p)
            return -ENOMEM;
        p[0] = i;
        p[GARBAGE_OBJ_BYTES / sizeof *p - 1] = i;
        hold[i] = p;
    }
    /* GC_MALLOC is malloc-like: clear through volatile so these stores are
     * not deleted as dead. */
    void *volatile *clear = hold;
    for (size_t i = 0; i < n; i++)
        clear[i] = NULL;
    return 0;
}

static uint64_t verify(uint64_t *bytes)
{
    uint64_t errors = 0;
    *bytes = 0;
    for (size_t t = 0; t < g_ntrees; t++) {
        uint64_t counter = 0;
        errors += check_tree(g_trees[t], t, TREE_DEPTH, &counter);
        *bytes += (uint64_t)TREE_NODES * sizeof(struct node);
    }
    for (size_t i = 0; i < g_nobjs; i++) {
        const struct obj *o = g_cache[i];
        if (!o || o->index != i || o->n_words > 1024) {
            errors++;
            continue;
        }
        for (uint64_t w = 0; w < o->n_words; w++)
            errors += o->words[w] != obj_word(i, w);
        *bytes += sizeof *o + o->n_words * sizeof(uint64_t);
    }
    return errors;
}

static int stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    (void)sig;
    int saved = errno;
    ssize_t n = write(stop_pipe[1], "", 1); /* async-signal-safe */
    (void)n;                                /* a full pipe already says stop */
    errno = saved;
}

int main(int argc, char **argv)
{
    struct demo_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;

    /* SIGTERM and SIGINT go to a handler that writes a pipe, and the main
     * thread reads it: libgc unblocks both in threads it suspends for a
     * collection (GC_remove_allowed_signals), so they may arrive on any
     * thread, where blocking them for sigwait would not help. */
    if (pipe2(stop_pipe, O_CLOEXEC) < 0) {
        perror("mm-gc-demo: pipe");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    mm_client_opts_t copts;
    mm_client_opts_init(&copts);
    copts.name = o.name;
    copts.max_bytes = o.max_bytes;
    if (o.uncooperative)
        copts.flags |= MM_GC_NO_THREAD;
    mm_client_t *client = NULL;
    int err = mm_gc_open(o.socket, &copts, &client);
    if (err < 0) {
        fprintf(stderr, "mm-gc-demo: cannot register with mmsrv at %s: %s\n", o.socket,
                mm_strerror(err));
        return 1;
    }
    GC_INIT();
    GC_allow_register_threads(); /* libmm's thread joins the GC to answer */

    if (build_live(o.live_bytes) < 0 || build_garbage(o.garbage_bytes) < 0) {
        fprintf(stderr, "mm-gc-demo: out of memory: the host granted no more frames\n");
        return 1;
    }
    GC_gcollect();
    mm_gc_stats_t st;
    if (mm_gc_stats(&st) == 0)
        fprintf(stderr, "mm-gc-demo: live %llu heap %llu garbage %llu bytes, collection %.1f ms\n",
                (unsigned long long)st.live_bytes, (unsigned long long)st.heap_bytes,
                (unsigned long long)st.garbage_bytes, (double)st.last_collect_ns / 1e6);
    printf("ready\n");
    fflush(stdout);

    char byte;
    while (read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR)
        ;
    uint64_t bytes = 0;
    uint64_t errors = verify(&bytes);
    fprintf(stderr, "mm-gc-demo: verified %llu bytes, %llu errors\n", (unsigned long long)bytes,
            (unsigned long long)errors);
    return errors == 0 ? 0 : 1;
}
