/*
 * mmhold: an example client that holds checksummed data.
 *
 * It registers with mmsrv, allocates --hold bytes in pieces of one chunk,
 * fills every 8-byte word with splitmix64(seed ^ word index), frees the last
 * whole chunks totalling --free so the host can take them, prints "ready"
 * and waits for SIGTERM or SIGINT. Then it reads back every word it still
 * holds and exits 0 only if all are intact. It answers revocations by saying
 * it has nothing more to give, or, with --uncooperative, never answers.
 * The hold is an array of pieces (struct hold); a piece's data stays valid
 * until it is freed.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mm/mm.h>

struct hold_opts {
    const char *socket;
    const char *name;
    uint64_t hold_bytes;
    uint64_t free_bytes;
    bool uncooperative;
    bool no_host_paging;
};

/* One allocation of at most a chunk; word_base is the global index of its
 * first 8-byte word, so the pattern does not depend on the address. */
struct piece {
    void *addr;
    size_t bytes;
    uint64_t word_base;
    bool freed;
};

/* Invariant: sum of pieces[i].bytes == hold_bytes rounded up to 4 KiB. */
struct hold {
    struct piece *pieces;
    size_t n_pieces;
    uint64_t seed;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mmhold --socket PATH [--name NAME] --hold SIZE --free SIZE "
               "[--uncooperative] [--no-host-paging]\n"
               "\n"
               "Allocate SIZE bytes from mmsrv, fill them with a checksummed pattern,\n"
               "free --free of them in whole 2 MiB chunks, print \"ready\" and wait.\n"
               "On SIGTERM or SIGINT, verify every byte still held; exit 0 if intact.\n"
               "\n"
               "  --socket PATH      the daemon's client socket\n"
               "  --name NAME        name shown by mmctl (default: pid-<pid>)\n"
               "  --hold SIZE        bytes to allocate and fill (e.g. 200M)\n"
               "  --free SIZE        bytes to free again, rounded down to whole chunks\n"
               "  --uncooperative    never answer the host's revocation requests\n"
               "  --no-host-paging   offer the host no userfaultfd: if it must force\n"
               "                     memory back, it freezes this process instead\n"
               "  --help             show this help\n");
}

static int bad_arg(const char *what, const char *value)
{
    fprintf(stderr, "mmhold: %s '%s' (see --help)\n", what, value);
    return -EINVAL;
}

static int parse_size_arg(const char *opt, const char *text, uint64_t *out)
{
    if (mm_parse_size(text, out) < 0)
        return bad_arg(opt, text);
    return 0;
}

static int check_opts(const struct hold_opts *o, bool have_hold, bool have_free)
{
    if (o->socket == NULL) {
        fprintf(stderr, "mmhold: --socket is required (see --help)\n");
        return -EINVAL;
    }
    if (!have_hold || !have_free) {
        fprintf(stderr, "mmhold: --hold and --free are required (see --help)\n");
        return -EINVAL;
    }
    if (o->hold_bytes == 0 || o->hold_bytes > MM_REGION_MAX_BYTES) {
        fprintf(stderr, "mmhold: --hold must be between 1 byte and 1T\n");
        return -EINVAL;
    }
    if (o->free_bytes > o->hold_bytes) {
        fprintf(stderr, "mmhold: --free is larger than --hold\n");
        return -EINVAL;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, -EINVAL on a bad argument (reported). */
static int parse_args(int argc, char **argv, struct hold_opts *o)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},  {"name", required_argument, NULL, 'n'},
        {"hold", required_argument, NULL, 'H'},    {"free", required_argument, NULL, 'f'},
        {"uncooperative", no_argument, NULL, 'u'}, {"no-host-paging", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    bool have_hold = false, have_free = false;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        int rc = 0;

        switch (c) {
        case 's':
            o->socket = optarg;
            break;
        case 'n':
            o->name = optarg;
            break;
        case 'H':
            rc = parse_size_arg("bad --hold size", optarg, &o->hold_bytes);
            have_hold = true;
            break;
        case 'f':
            rc = parse_size_arg("bad --free size", optarg, &o->free_bytes);
            have_free = true;
            break;
        case 'u':
            o->uncooperative = true;
            break;
        case 'P':
            o->no_host_paging = true;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            return bad_arg("missing value for", argv[optind - 1]);
        default:
            return bad_arg("unknown option", argv[optind - 1]);
        }
        if (rc < 0)
            return rc;
    }
    if (optind < argc)
        return bad_arg("unexpected argument", argv[optind]);
    return check_opts(o, have_hold, have_free);
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The revocation handler: every byte held is live data, nothing to give. */
static uint64_t on_revoke(mm_client_t *client, const mm_revoke_request_t *req, void *arg)
{
    (void)client;
    (void)req;
    (void)arg;
    return 0;
}

static int open_client(const struct hold_opts *o, mm_client_t **out)
{
    mm_client_opts_t copts;
    int rc;

    mm_client_opts_init(&copts);
    copts.name = o->name;
    copts.max_bytes = (o->hold_bytes + MM_CHUNK_SIZE - 1) / MM_CHUNK_SIZE * MM_CHUNK_SIZE;
    copts.flags = o->uncooperative ? 0 : MM_CLIENT_THREAD;
    if (o->no_host_paging)
        copts.flags |= MM_CLIENT_NO_HOST_PAGING;
    copts.on_revoke = on_revoke;
    rc = mm_client_open(o->socket, &copts, out);
    if (rc < 0)
        fprintf(stderr, "mmhold: cannot connect to %s: %s\n", o->socket, mm_strerror(rc));
    return rc;
}

static void fill_piece(const struct hold *h, const struct piece *pc)
{
    uint64_t *w = pc->addr;
    size_t n = pc->bytes / sizeof(*w);

    for (size_t i = 0; i < n; i++)
        w[i] = splitmix64(h->seed ^ (pc->word_base + i));
}

static uint64_t check_piece(const struct hold *h, const struct piece *pc)
{
    const volatile uint64_t *w = pc->addr;
    size_t n = pc->bytes / sizeof(*w);
    uint64_t errors = 0;

    for (size_t i = 0; i < n; i++)
        errors += w[i] != splitmix64(h->seed ^ (pc->word_base + i));
    return errors;
}

/* Allocate and fill the whole hold. On failure the pieces allocated so far
 * stay in h (freed with the client). */
static int hold_alloc(mm_client_t *client, struct hold *h, uint64_t hold_bytes)
{
    uint64_t total = (hold_bytes + MM_FRAME_SIZE - 1) / MM_FRAME_SIZE * MM_FRAME_SIZE;
    size_t n = (size_t)((total + MM_CHUNK_SIZE - 1) / MM_CHUNK_SIZE);
    uint64_t words = 0;

    h->pieces = calloc(n, sizeof(*h->pieces));
    if (h->pieces == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct piece *pc = &h->pieces[i];
        uint64_t left = total - (uint64_t)i * MM_CHUNK_SIZE;
        int rc;

        pc->bytes = left < MM_CHUNK_SIZE ? (size_t)left : MM_CHUNK_SIZE;
        rc = mm_alloc(client, pc->bytes, MM_CHUNK_SIZE, &pc->addr);
        if (rc < 0) {
            fprintf(stderr, "mmhold: cannot allocate chunk %zu of %zu: %s\n", i + 1, n,
                    mm_strerror(rc));
            return rc;
        }
        h->n_pieces = i + 1;
        pc->word_base = words;
        words += pc->bytes / sizeof(uint64_t);
        fill_piece(h, pc);
    }
    return 0;
}

/* Free the last whole-chunk pieces totalling free_bytes rounded down to
 * chunks; a smaller tail piece is not a whole chunk and stays held. */
static int hold_free(mm_client_t *client, struct hold *h, uint64_t free_bytes)
{
    uint64_t chunks = free_bytes / MM_CHUNK_SIZE;

    for (size_t i = h->n_pieces; i > 0 && chunks > 0; i--) {
        struct piece *pc = &h->pieces[i - 1];
        int rc;

        if (pc->bytes != MM_CHUNK_SIZE)
            continue;
        rc = mm_free(client, pc->addr, pc->bytes);
        if (rc < 0) {
            fprintf(stderr, "mmhold: cannot free a chunk: %s\n", mm_strerror(rc));
            return rc;
        }
        pc->freed = true;
        chunks--;
    }
    return 0;
}

static uint64_t hold_verify(const struct hold *h, uint64_t *bytes)
{
    uint64_t errors = 0;

    *bytes = 0;
    for (size_t i = 0; i < h->n_pieces; i++) {
        if (h->pieces[i].freed)
            continue;
        errors += check_piece(h, &h->pieces[i]);
        *bytes += h->pieces[i].bytes;
    }
    return errors;
}

/* Block SIGTERM and SIGINT in this thread and every thread started later
 * (libmm's), so that sigwait() is the only place they arrive. */
static int block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    return -pthread_sigmask(SIG_BLOCK, set, NULL);
}

static int wait_for_stop(const sigset_t *set)
{
    int sig;

    for (;;) {
        int rc = sigwait(set, &sig);

        if (rc == 0)
            return sig;
        if (rc != EINTR)
            return -rc;
    }
}

static int run(const struct hold_opts *o)
{
    struct hold h = {.seed = splitmix64((uint64_t)getpid())};
    mm_client_t *client;
    uint64_t bytes, errors;
    sigset_t set;
    int rc;

    if (block_signals(&set) < 0)
        return 1;
    if (open_client(o, &client) < 0)
        return 1;
    rc = hold_alloc(client, &h, o->hold_bytes);
    if (rc == 0)
        rc = hold_free(client, &h, o->free_bytes);
    if (rc == 0) {
        printf("ready\n");
        fflush(stdout);
        rc = wait_for_stop(&set);
    }
    if (rc < 0) {
        mm_client_close(client);
        free(h.pieces);
        return 1;
    }
    errors = hold_verify(&h, &bytes);
    fprintf(stderr, "mmhold: verified %llu bytes, %llu errors\n", (unsigned long long)bytes,
            (unsigned long long)errors);
    mm_client_close(client);
    free(h.pieces);
    return errors == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct hold_opts o = {0};
    int rc = parse_args(argc, argv, &o);

    if (rc < 0)
        return 2;
    if (rc > 0)
        return 0;
    return run(&o);
}
