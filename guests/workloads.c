/*
 * mmguest's workloads (see workloads.h for the contract): the spec parser,
 * the disk image's pattern, and the four kinds of item.
 *
 * Every unit of data (an anonymous 4 KiB page, a GC object, a jemalloc
 * value) is filled from a per-unit base, base = mix(seed, unit, generation),
 * with word w = mix(base + w), so that its content depends on where it
 * belongs and not on its address. A side array in ordinary memory keeps each
 * unit's generation: a round rewrites a few units with the next generation,
 * so that the guest's swap and moves see data that changes. GC objects and
 * jemalloc values carry a header (index, generation, words) checked too.
 *
 * The GC item's roots are the statics g_gc_objs and g_gc_n (libgc scans the
 * program's data segment; the set itself lives in malloc memory, which libgc
 * does not scan). There is at most one GC and one jemalloc item per process,
 * so the shrink hooks' state is static as well: the hooks may run on the
 * guest's revocation thread until the guest closes, after the set is gone.
 */
#define GC_THREADS
#include <gc/gc.h>

#include "workloads.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jemalloc/jemalloc.h>
#include <mm/gc.h>
#include <mm/jemalloc.h>

#include "platform.h"

#define BLOCK_BYTES  4096u
#define BLOCK_WORDS  (BLOCK_BYTES / sizeof(uint64_t))
#define DISK_SEED    0x6d6d67756573746bull /* "mmguestk" */
#define WRITE_BLOCKS 256u                  /* 1 MiB per pwrite when creating a disk */
/* GC objects: 1..16 heap blocks less 64 bytes, so that each fills whole
 * blocks (libgc adds a byte per object for interior pointers). */
#define GC_OBJ_MIN (4096u - 64)
/* jemalloc values: 16 KiB .. 256 KiB in 16 KiB steps. */
#define JE_VAL_STEP (16u << 10)
/* A round rewrites 1/REWRITE_SHARE of an anon item's hot pages. */
#define REWRITE_SHARE 16u
/* A phase item grows and is verified in steps of this many bytes. */
#define PHASE_STEP (4u << 20)
/* Operation latency buckets: four per power of two of microseconds. */
#define OP_BUCKETS 104
/* Corruption reports written to stderr, at most. */
#define MAX_REPORTS 16

/* A GC object or jemalloc value: a header, then n_words of pattern. */
typedef struct obj {
    uint64_t index;
    uint64_t gen;
    uint64_t n_words;
    uint64_t words[];
} obj_t;

/* Invariant: 0 < hot <= pages or hot == 0; pages * 4 KiB <= alloc_bytes. */
typedef struct anon_item {
    uint8_t *base;
    uint64_t alloc_bytes; /* what mm__guest_anon_alloc gave (64 KiB pages) */
    uint64_t pages;       /* 4 KiB pages in use: SIZE rounded up */
    uint64_t hot;         /* pages [0, hot) are read every round */
    uint64_t next_write;  /* the next hot page a round rewrites */
    uint32_t *gen;        /* per page */
    uint64_t seed;
    bool temp; /* a temp= item: freed by mm__wl_free_temp (pages then 0) */
} anon_item_t;

/* Invariant: steps [0, n_held) are allocated (pages != 0), the rest not;
 * each step is an anonymous range whose every page is checked. */
typedef struct phase_item {
    anon_item_t *step; /* [steps] */
    uint64_t steps;    /* SIZE in PHASE_STEP units, rounded up */
    uint64_t n_held;
    uint64_t next_check; /* the held step the next round verifies */
    uint64_t period_ns, shift_ns;
    uint64_t seed;
} phase_item_t;

typedef struct cache_item {
    uint64_t blocks; /* blocks [0, blocks) are read every round */
} cache_item_t;

/* Invariant for gc and je: a slot is live iff its pointer is not NULL, and
 * then its object holds (index = slot, gen = gen[slot]). */
struct mm_wl {
    mm_guest_t *g;
    anon_item_t anon[MM_WL_MAX_ITEMS];
    size_t n_anon;
    cache_item_t cache[MM_WL_MAX_ITEMS];
    size_t n_cache;
    phase_item_t phase[MM_WL_MAX_ITEMS];
    size_t n_phase;
    uint64_t ops;   /* phase operations done */
    uint64_t op_hist[OP_BUCKETS];
    uint64_t *buf; /* one disk block */
    bool gc_on;
    uint32_t *gc_gen;
    uint64_t gc_seed;
    size_t gc_next;
    bool je_on;
    unsigned je_arena;
    obj_t **je_vals;
    uint32_t *je_gen;
    size_t je_n;
    uint64_t je_seed;
    size_t je_next;
};

/* The GC item's roots (see the file comment). */
static obj_t **g_gc_objs;
static size_t g_gc_n;

/* A shrink hook's switch; lock is held while the hook runs, so that after
 * hook_off() returns no hook call is in progress or starts its work. */
typedef struct hook {
    pthread_mutex_t lock;
    bool on;
} hook_t;

static hook_t g_gc_hook = {PTHREAD_MUTEX_INITIALIZER, false};
static hook_t g_je_hook = {PTHREAD_MUTEX_INITIALIZER, false};
static int g_reports;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t unit_base(uint64_t seed, uint64_t unit, uint64_t gen)
{
    return mix(seed ^ mix((unit << 24) ^ gen));
}

static void say(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || why_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A corruption report on stderr, the first MAX_REPORTS only. */
static void report(const char *fmt, ...)
{
    va_list ap;

    if (g_reports >= MAX_REPORTS)
        return;
    if (++g_reports == MAX_REPORTS) {
        fprintf(stderr, "mmguest: (further data errors are counted, not shown)\n");
        return;
    }
    va_start(ap, fmt);
    fputs("mmguest: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- The spec ------------------------------------------------------------ */

static const char *const kind_names[] = {"anon", "gc", "je", "cache", "free", "temp", "phase"};

static int parse_pct(const char *text, unsigned *out)
{
    char *end;
    unsigned long v;

    if (text[0] < '0' || text[0] > '9')
        return -EINVAL;
    errno = 0;
    v = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || v > 100)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

/* A phase item's options, "period=MS[:offset=PCT]" (opt, writable; NULL
 * when there were none). */
static int parse_phase(const char *name, char *opt, mm_wl_item_t *it, char *why, size_t why_len)
{
    char *end, *offset = opt ? strchr(opt, ':') : NULL;
    unsigned long ms;

    it->pct = 0;
    if (offset != NULL)
        *offset++ = '\0';
    if (opt == NULL || strncmp(opt, "period=", 7) != 0 || opt[7] < '0' || opt[7] > '9') {
        say(why, why_len, "workload item %s needs period=MS (e.g. phase=64M:period=4000)", name);
        return -EINVAL;
    }
    errno = 0;
    ms = strtoul(opt + 7, &end, 10);
    if (errno != 0 || *end != '\0' || ms < 100 || ms > 3600000) {
        say(why, why_len, "bad period '%s' in workload item %s (100 to 3600000 ms)", opt + 7, name);
        return -EINVAL;
    }
    it->period_ms = (uint32_t)ms;
    if (offset == NULL)
        return 0;
    if (strncmp(offset, "offset=", 7) != 0 || parse_pct(offset + 7, &it->pct) < 0) {
        say(why, why_len, "workload item %s takes offset=PCT (0 to 100) after the period, not '%s'",
            name, offset);
        return -EINVAL;
    }
    return 0;
}

/* One item, "name=SIZE[:key=PCT]", in a writable copy. */
static int parse_item(char *text, mm_wl_item_t *it, char *why, size_t why_len)
{
    static const char *const option_of[] = {"hot", "live", "live", NULL, NULL, NULL, NULL};
    char *eq = strchr(text, '='), *opt;
    int kind = -1;

    if (eq == NULL) {
        say(why, why_len, "workload item '%s' is not NAME=SIZE", text);
        return -EINVAL;
    }
    *eq = '\0';
    for (int k = 0; k < (int)(sizeof kind_names / sizeof kind_names[0]); k++)
        if (strcmp(text, kind_names[k]) == 0)
            kind = k;
    if (kind < 0) {
        say(why, why_len, "unknown workload '%s' (anon, gc, je, cache, free, temp or phase)", text);
        return -EINVAL;
    }
    it->kind = (mm_wl_kind_t)kind;
    it->pct = kind == MM_WL_GC || kind == MM_WL_JE ? 25 : kind == MM_WL_TEMP ? 0 : 100;
    opt = strchr(eq + 1, ':');
    if (opt != NULL)
        *opt++ = '\0';
    if (mm_parse_size(eq + 1, &it->bytes) < 0 || it->bytes == 0 ||
        it->bytes > MM_REGION_MAX_BYTES) {
        say(why, why_len, "bad size '%s' in workload item %s (e.g. 32M)", eq + 1, text);
        return -EINVAL;
    }
    if (kind == MM_WL_PHASE)
        return parse_phase(text, opt, it, why, why_len);
    if (opt == NULL)
        return 0;
    char *oeq = strchr(opt, '=');
    if (option_of[kind] == NULL) {
        say(why, why_len, "workload item %s takes no options, not '%s'", text, opt);
        return -EINVAL;
    }
    if (oeq == NULL || (size_t)(oeq - opt) != strlen(option_of[kind]) ||
        strncmp(opt, option_of[kind], (size_t)(oeq - opt)) != 0) {
        say(why, why_len, "workload item %s takes %s=PCT, not '%s'", text, option_of[kind], opt);
        return -EINVAL;
    }
    if (parse_pct(oeq + 1, &it->pct) < 0) {
        say(why, why_len, "bad percentage '%s' in workload item %s (0 to 100)", oeq + 1, text);
        return -EINVAL;
    }
    return 0;
}

int mm__wl_parse(const char *text, mm_wl_spec_t *out, char *why, size_t why_len)
{
    char *copy, *item, *next;
    int err = 0;

    memset(out, 0, sizeof *out);
    copy = strdup(text);
    if (copy == NULL) {
        say(why, why_len, "out of memory");
        return -ENOMEM;
    }
    for (item = copy; item != NULL && err == 0; item = next) {
        next = strchr(item, ',');
        if (next != NULL)
            *next++ = '\0';
        if (*item == '\0') {
            say(why, why_len, "empty item in workload '%s'", text);
            err = -EINVAL;
        } else if (out->n == MM_WL_MAX_ITEMS) {
            say(why, why_len, "more than %d workload items", MM_WL_MAX_ITEMS);
            err = -EINVAL;
        } else {
            err = parse_item(item, &out->items[out->n], why, why_len);
            if (err == 0) {
                mm_wl_kind_t k = out->items[out->n].kind;

                if ((k == MM_WL_GC || k == MM_WL_JE) && mm__wl_has(out, k)) {
                    say(why, why_len, "more than one %s item in the workload", kind_names[k]);
                    err = -EINVAL;
                }
                out->n++;
            }
        }
    }
    free(copy);
    return err;
}

bool mm__wl_has(const mm_wl_spec_t *spec, mm_wl_kind_t kind)
{
    for (size_t i = 0; i < spec->n; i++)
        if (spec->items[i].kind == kind)
            return true;
    return false;
}

uint64_t mm__wl_cache_bytes(const mm_wl_spec_t *spec)
{
    uint64_t most = 0;

    for (size_t i = 0; i < spec->n; i++)
        if (spec->items[i].kind == MM_WL_CACHE && spec->items[i].bytes > most)
            most = spec->items[i].bytes;
    return most;
}

uint64_t mm__wl_memory_bytes(const mm_wl_spec_t *spec)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < spec->n; i++)
        if (spec->items[i].kind != MM_WL_CACHE)
            sum += spec->items[i].bytes;
    return sum;
}

/* ---- The disk ------------------------------------------------------------ */

static uint64_t disk_word(uint64_t block, uint64_t w)
{
    return (block << 32) | (mix(DISK_SEED ^ (block << 9) ^ w) & 0xffffffffu);
}

static void disk_fill(uint64_t block, uint64_t *buf)
{
    for (uint64_t w = 0; w < BLOCK_WORDS; w++)
        buf[w] = disk_word(block, w);
}

/* Wrong words in a block read from the disk. */
static uint64_t disk_check(uint64_t block, const uint64_t *buf)
{
    uint64_t wrong = 0;

    for (uint64_t w = 0; w < BLOCK_WORDS; w++)
        wrong += buf[w] != disk_word(block, w);
    return wrong;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int disk_create(int fd, uint64_t blocks)
{
    uint64_t *buf = malloc((size_t)WRITE_BLOCKS * BLOCK_BYTES);
    int err = 0;

    if (buf == NULL)
        return -ENOMEM;
    for (uint64_t b = 0; b < blocks && err == 0; b += WRITE_BLOCKS) {
        uint64_t n = blocks - b < WRITE_BLOCKS ? blocks - b : WRITE_BLOCKS;

        for (uint64_t i = 0; i < n; i++)
            disk_fill(b + i, buf + i * BLOCK_WORDS);
        err = write_all(fd, buf, (size_t)(n * BLOCK_BYTES), (off_t)(b * BLOCK_BYTES));
    }
    free(buf);
    if (err == 0 && fsync(fd) < 0)
        err = -errno;
    return err;
}

static int disk_check_existing(const char *path, uint64_t bytes, char *why, size_t why_len)
{
    uint64_t block0[BLOCK_WORDS];
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int err = 0;

    if (fd < 0) {
        err = -errno;
        say(why, why_len, "cannot open disk %s: %s", path, strerror(-err));
        return err;
    }
    if (fstat(fd, &st) < 0) {
        err = -errno;
        say(why, why_len, "cannot stat disk %s: %s", path, strerror(-err));
    } else if (!S_ISREG(st.st_mode)) {
        say(why, why_len, "disk %s is not a regular file", path);
        err = -EINVAL;
    } else if ((uint64_t)st.st_size < BLOCK_BYTES ||
               (n = pread(fd, block0, sizeof block0, 0)) != (ssize_t)sizeof block0 ||
               disk_check(0, block0) != 0) {
        say(why, why_len, "disk %s exists and is not an mmguest disk image", path);
        err = -EINVAL;
    } else if ((uint64_t)st.st_size < bytes) {
        say(why, why_len, "disk %s holds %" PRIu64 " bytes, the guest needs %" PRIu64, path,
            (uint64_t)st.st_size, bytes);
        err = -EINVAL;
    }
    close(fd);
    return err;
}

int mm__wl_disk_prepare(const char *path, uint64_t bytes, char *why, size_t why_len)
{
    uint64_t blocks = (bytes + BLOCK_BYTES - 1) / BLOCK_BYTES;
    int fd, err;

    if (blocks == 0)
        blocks = 1;
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST)
        return disk_check_existing(path, blocks * BLOCK_BYTES, why, why_len);
    if (fd < 0) {
        err = -errno;
        say(why, why_len, "cannot create disk %s: %s", path, strerror(-err));
        return err;
    }
    err = disk_create(fd, blocks);
    close(fd);
    if (err < 0) {
        say(why, why_len, "cannot write disk %s: %s", path, strerror(-err));
        unlink(path); /* a partial image would fail the block check later anyway */
    }
    return err;
}

/* ---- Objects (GC and jemalloc) ------------------------------------------- */

static void obj_fill(obj_t *o, uint64_t seed, uint64_t index, uint64_t gen, uint64_t n_words)
{
    uint64_t base = unit_base(seed, index, gen);

    o->index = index;
    o->gen = gen;
    o->n_words = n_words;
    for (uint64_t w = 0; w < n_words; w++)
        o->words[w] = mix(base + w);
}

/* Wrong words of o (its header counts as one word each). */
static uint64_t obj_check(const obj_t *o, uint64_t seed, uint64_t index, uint64_t gen,
                          uint64_t n_words, const char *what)
{
    uint64_t base = unit_base(seed, index, gen), wrong = 0;

    if (o->index != index || o->gen != gen || o->n_words != n_words) {
        report("%s %" PRIu64 ": header says index %" PRIu64 " gen %" PRIu64 " words %" PRIu64
               ", expected %" PRIu64 " %" PRIu64 " %" PRIu64,
               what, index, o->index, o->gen, o->n_words, index, gen, n_words);
        return n_words + 3;
    }
    for (uint64_t w = 0; w < n_words; w++)
        wrong += o->words[w] != mix(base + w);
    if (wrong != 0)
        report("%s %" PRIu64 ": %" PRIu64 " of %" PRIu64 " words wrong", what, index, wrong,
               n_words);
    return wrong;
}

/* Live slot i of n with pct percent live, spread evenly. */
static bool is_live(uint64_t i, unsigned pct)
{
    return (i + 1) * pct / 100 > i * pct / 100;
}

static uint64_t gc_words(uint64_t seed, uint64_t index)
{
    uint64_t bytes = (1 + mix(seed ^ index) % 16) * 4096 - 64;

    return (bytes - sizeof(obj_t)) / sizeof(uint64_t);
}

static uint64_t je_words(uint64_t seed, uint64_t index)
{
    uint64_t bytes = (1 + mix(seed ^ index) % 16) * JE_VAL_STEP;

    return (bytes - sizeof(obj_t)) / sizeof(uint64_t);
}

static size_t obj_bytes(uint64_t n_words)
{
    return sizeof(obj_t) + (size_t)n_words * sizeof(uint64_t);
}

/* The next live slot from *next on (wrapping), or n if none. */
static size_t next_live(obj_t *const *slots, size_t n, size_t *next)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = (*next + k) % n;

        if (slots[i] != NULL) {
            *next = (i + 1) % n;
            return i;
        }
    }
    return n;
}

/* ---- Shrink hooks ---------------------------------------------------------- */

static void hook_set(hook_t *h, bool on)
{
    pthread_mutex_lock(&h->lock);
    h->on = on;
    pthread_mutex_unlock(&h->lock);
}

/*
 * The GC's answer to pressure, on the guest's revocation thread, which
 * libgc does not know: it joins the GC for the call only, as mm_gc.c's own
 * revocation handler does (a registered thread is stopped at every
 * collection, and must be unregistered before it exits).
 * GC_allow_register_threads() ran in mm__wl_start().
 */
static uint64_t gc_shrink(void *arg, uint64_t bytes)
{
    struct GC_stack_base sb;
    bool joined = false;
    int64_t dropped = 0;

    (void)arg;
    (void)bytes; /* mm_gc_shrink gives what it can; the guest asks others for the rest */
    pthread_mutex_lock(&g_gc_hook.lock);
    if (!g_gc_hook.on)
        goto out;
    if (!GC_thread_is_registered()) {
        if (GC_get_stack_base(&sb) != GC_SUCCESS)
            goto out;
        joined = GC_register_my_thread(&sb) == GC_SUCCESS;
        if (!joined)
            goto out;
    }
    dropped = mm_gc_shrink();
    if (joined)
        GC_unregister_my_thread();
out:
    pthread_mutex_unlock(&g_gc_hook.lock);
    return dropped > 0 ? (uint64_t)dropped : 0;
}

static uint64_t je_shrink(void *arg, uint64_t bytes)
{
    int64_t dropped = 0;

    (void)arg;
    (void)bytes; /* a purge gives every dirty page at once */
    pthread_mutex_lock(&g_je_hook.lock);
    if (g_je_hook.on)
        dropped = mm_jemalloc_purge();
    pthread_mutex_unlock(&g_je_hook.lock);
    return dropped > 0 ? (uint64_t)dropped : 0;
}

/* ---- Anonymous memory ------------------------------------------------------ */

static void anon_fill_page(anon_item_t *a, uint64_t page)
{
    uint64_t *w = (uint64_t *)(a->base + page * BLOCK_BYTES);
    uint64_t base = unit_base(a->seed, page, a->gen[page]);

    for (uint64_t i = 0; i < BLOCK_WORDS; i++)
        w[i] = mix(base + i);
}

static uint64_t anon_check_pages(const anon_item_t *a, size_t item, uint64_t from, uint64_t to)
{
    uint64_t errors = 0;

    for (uint64_t p = from; p < to; p++) {
        const volatile uint64_t *w = (const uint64_t *)(a->base + p * BLOCK_BYTES);
        uint64_t base = unit_base(a->seed, p, a->gen[p]), wrong = 0;

        for (uint64_t i = 0; i < BLOCK_WORDS; i++)
            wrong += w[i] != mix(base + i);
        if (wrong != 0)
            report("anon item %zu page %" PRIu64 ": %" PRIu64 " of %u words wrong (first %#" PRIx64
                   ", expected %#" PRIx64 ")",
                   item, p, wrong, (unsigned)BLOCK_WORDS, w[0], mix(base));
        errors += wrong;
    }
    return errors;
}

/* Allocate and fill bytes of guest anonymous memory as *a, pct of its pages
 * hot; on failure *a holds nothing. */
static int anon_make(mm_guest_t *g, anon_item_t *a, uint64_t bytes, unsigned pct, uint64_t seed)
{
    void *p = NULL;
    int err;

    a->pages = (bytes + BLOCK_BYTES - 1) / BLOCK_BYTES;
    a->alloc_bytes = (a->pages * BLOCK_BYTES + MM_GUEST_PAGE_BYTES - 1) / MM_GUEST_PAGE_BYTES *
                     MM_GUEST_PAGE_BYTES;
    a->hot = a->pages * pct / 100;
    if (a->hot == 0 && pct > 0)
        a->hot = 1;
    a->seed = seed;
    a->next_write = 0;
    a->gen = calloc((size_t)a->pages, sizeof *a->gen);
    err = a->gen ? mm__guest_anon_alloc(g, a->alloc_bytes, &p) : -ENOMEM;
    if (err < 0) {
        free(a->gen);
        *a = (anon_item_t){0};
        return err;
    }
    a->base = p;
    for (uint64_t pg = 0; pg < a->pages; pg++)
        anon_fill_page(a, pg);
    return 0;
}

/* Give *a's memory back (it then holds nothing). */
static int anon_unmake(mm_guest_t *g, anon_item_t *a)
{
    int err = a->alloc_bytes ? mm__guest_anon_free(g, a->base, a->alloc_bytes) : 0;

    free(a->gen);
    *a = (anon_item_t){0};
    return err;
}

static int anon_start(mm_wl_t *w, const mm_wl_item_t *it, size_t item, char *why, size_t why_len)
{
    int err = anon_make(w->g, &w->anon[w->n_anon], it->bytes, it->pct, mix(0xa11011ull + item));

    if (err < 0) {
        say(why, why_len, "cannot allocate %" PRIu64 " bytes of guest anonymous memory: %s",
            it->bytes, mm_strerror(err));
        return err;
    }
    w->n_anon++;
    return 0;
}

/* Verify a's hot pages and rewrite a share of them. */
static uint64_t anon_use(mm_guest_t *g, anon_item_t *a, size_t item)
{
    uint64_t errors, n;

    if (a->hot == 0)
        return 0;
    errors = anon_check_pages(a, item, 0, a->hot);
    n = a->hot / REWRITE_SHARE ? a->hot / REWRITE_SHARE : 1;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t p = (a->next_write + k) % a->hot;

        a->gen[p]++;
        anon_fill_page(a, p);
    }
    a->next_write = (a->next_write + n) % a->hot;
    mm__guest_anon_touched(g, a->base, a->hot * BLOCK_BYTES);
    return errors;
}

static uint64_t anon_round(mm_wl_t *w, size_t i)
{
    return anon_use(w->g, &w->anon[i], i);
}

/* ---- Phases ------------------------------------------------------------------ */

static int phase_start(mm_wl_t *w, const mm_wl_item_t *it, size_t item, char *why, size_t why_len)
{
    phase_item_t *ph = &w->phase[w->n_phase];

    ph->steps = (it->bytes + PHASE_STEP - 1) / PHASE_STEP;
    ph->step = calloc((size_t)ph->steps, sizeof *ph->step);
    if (ph->step == NULL) {
        say(why, why_len, "out of memory");
        return -ENOMEM;
    }
    ph->period_ns = (uint64_t)it->period_ms * 1000000u;
    ph->shift_ns = ph->period_ns * it->pct / 100;
    ph->seed = mix(0x9a5eull + item);
    w->n_phase++;
    return 0;
}

/* The steps phase item ph wants held at now_ns: it grows over the first
 * quarter of its period, holds in the second and holds nothing in the second
 * half. Periods follow the machine's monotonic clock, not the guest's start,
 * so that guests started one after another keep their offsets. */
static uint64_t phase_wanted(const phase_item_t *ph, uint64_t now_ns)
{
    uint64_t pos = (now_ns + ph->shift_ns) % ph->period_ns, quarter = ph->period_ns / 4;

    if (pos < quarter)
        return (ph->steps * pos + quarter - 1) / quarter;
    return pos < 2 * quarter ? ph->steps : 0;
}

static unsigned op_bucket(uint64_t ns)
{
    uint64_t us = ns / 1000;

    if (us < 4)
        return (unsigned)us;
    unsigned lg = 63u - (unsigned)__builtin_clzll(us);
    if (lg > 25)
        return OP_BUCKETS - 1;
    return 4 * lg + (unsigned)((us >> (lg - 2)) & 3) - 4;
}

/* The bucket's upper bound in microseconds (exclusive). */
static uint64_t op_bucket_upper_us(unsigned b)
{
    if (b < 4)
        return b + 1;
    return (uint64_t)(5 + b % 4) << (b / 4 - 1);
}

static void op_done(mm_wl_t *w, uint64_t t0_ns)
{
    w->ops++;
    w->op_hist[op_bucket(mm__now_ns() - t0_ns)]++;
}

/* Free what the phase no longer wants, grow to what it wants (one timed
 * operation per step), then verify one held step (one more). */
static uint64_t phase_round(mm_wl_t *w, size_t i)
{
    phase_item_t *ph = &w->phase[i];
    uint64_t wanted = phase_wanted(ph, mm__now_ns()), errors = 0;

    while (ph->n_held > wanted)
        if (anon_unmake(w->g, &ph->step[--ph->n_held]) < 0)
            errors++; /* the guest lost track of its own memory */
    while (ph->n_held < wanted) {
        uint64_t t0 = mm__now_ns();
        int err =
            anon_make(w->g, &ph->step[ph->n_held], PHASE_STEP, 100, ph->seed ^ mix(ph->n_held));

        if (err < 0) {
            report("phase item %zu: cannot grow by a step: %s", i, mm_strerror(err));
            break; /* tried again next round */
        }
        ph->n_held++;
        op_done(w, t0);
    }
    if (ph->n_held > 0) {
        uint64_t t0 = mm__now_ns();

        ph->next_check %= ph->n_held;
        errors += anon_use(w->g, &ph->step[ph->next_check++], i);
        op_done(w, t0);
    }
    return errors;
}

static uint64_t phase_verify(mm_wl_t *w, uint64_t *bytes)
{
    uint64_t errors = 0;

    for (size_t i = 0; i < w->n_phase; i++) {
        for (uint64_t s = 0; s < w->phase[i].n_held; s++) {
            anon_item_t *a = &w->phase[i].step[s];

            errors += anon_check_pages(a, i, 0, a->pages);
            *bytes += a->pages * BLOCK_BYTES;
        }
    }
    return errors;
}

const char *mm__wl_ops_json(const mm_wl_t *w, char *buf, size_t len)
{
    uint64_t seen = 0, p99_us = 0;
    size_t n;

    buf[0] = '\0';
    if (w == NULL || w->n_phase == 0 || len == 0)
        return buf;
    for (unsigned b = 0; b < OP_BUCKETS && w->ops > 0; b++) {
        seen += w->op_hist[b];
        if (seen * 100 >= w->ops * 99) {
            p99_us = op_bucket_upper_us(b);
            break;
        }
    }
    n = (size_t)snprintf(buf, len, ",\"ops\":%" PRIu64 ",\"op_p99_ms\":%.3f,\"op_hist\":[", w->ops,
                         (double)p99_us / 1000);
    for (unsigned b = 0; b < OP_BUCKETS && n < len; b++)
        if (w->op_hist[b] != 0)
            n += (size_t)snprintf(buf + n, len - n, "%s[%" PRIu64 ",%" PRIu64 "]",
                                  buf[n - 1] == '[' ? "" : ",", op_bucket_upper_us(b),
                                  w->op_hist[b]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
    return buf;
}

/* Take bytes of frames in whole chunks, write them and free them without
 * releasing their pages: they stay on the guest's free list, resident. */
static int free_start(mm_wl_t *w, const mm_wl_item_t *it, char *why, size_t why_len)
{
    uint64_t chunks = (it->bytes + MM_CHUNK_SIZE - 1) / MM_CHUNK_SIZE;
    void **held = calloc((size_t)chunks, sizeof *held);
    uint64_t n = 0;
    int err = held ? 0 : -ENOMEM;

    for (; err == 0 && n < chunks; n++) {
        err = mm__guest_frames_alloc(w->g, MM_CHUNK_SIZE, MM_CHUNK_SIZE, &held[n]);
        if (err < 0)
            break;
        memset(held[n], 0x5a, MM_CHUNK_SIZE);
    }
    for (uint64_t i = 0; i < n; i++)
        mm__guest_frames_free_resident(w->g, held[i], MM_CHUNK_SIZE);
    free(held);
    if (err < 0)
        say(why, why_len, "cannot set up %" PRIu64 " bytes of free memory: %s",
            chunks * MM_CHUNK_SIZE, mm_strerror(err));
    return err;
}

/* ---- The page cache -------------------------------------------------------- */

static int cache_start(mm_wl_t *w, const mm_wl_item_t *it, char *why, size_t why_len)
{
    cache_item_t *c = &w->cache[w->n_cache];
    uint64_t have = mm__guest_disk_blocks(w->g);

    c->blocks = (it->bytes + BLOCK_BYTES - 1) / BLOCK_BYTES;
    if (c->blocks > have) {
        say(why, why_len, "cache=%" PRIu64 " reads past the disk's %" PRIu64 " blocks", it->bytes,
            have);
        return -EINVAL;
    }
    w->n_cache++;
    return 0;
}

static uint64_t cache_read(mm_wl_t *w, size_t i)
{
    const cache_item_t *c = &w->cache[i];
    uint64_t errors = 0;

    for (uint64_t b = 0; b < c->blocks; b++) {
        int err = mm__guest_disk_read(w->g, b, w->buf);
        uint64_t wrong;

        if (err < 0) {
            report("cache item %zu: block %" PRIu64 " cannot be read: %s", i, b, mm_strerror(err));
            errors++;
            continue;
        }
        wrong = disk_check(b, w->buf);
        if (wrong != 0)
            report("cache item %zu block %" PRIu64 ": %" PRIu64
                   " of %u words wrong (first %#" PRIx64 ")",
                   i, b, wrong, (unsigned)BLOCK_WORDS, w->buf[0]);
        errors += wrong;
    }
    return errors;
}

/* ---- Boehm GC ---------------------------------------------------------------- */

static int gc_start(mm_wl_t *w, const mm_wl_item_t *it, char *why, size_t why_len)
{
    mm_frame_source_t src = mm__guest_anon_source(w->g);
    size_t cap = (size_t)(it->bytes / GC_OBJ_MIN + 1), n = 0;
    uint64_t total = 0;
    obj_t **all;
    int err;

    err = mm_gc_open_source(&src);
    if (err < 0) {
        say(why, why_len, "cannot serve libgc's heap from the guest: %s", mm_strerror(err));
        return err;
    }
    GC_INIT();
    /* The shrink hook's thread joins the GC when it runs. */
    GC_allow_register_threads();
    w->gc_on = true;
    w->gc_seed = mix(0x6cull);
    w->gc_gen = calloc(cap, sizeof *w->gc_gen);
    all = GC_MALLOC(cap * sizeof *all);
    if (w->gc_gen == NULL || all == NULL) {
        say(why, why_len, "out of memory for the GC's index");
        return -ENOMEM;
    }
    /* Every object stays reachable until all are made, so that none is
     * recycled on the way: the heap really grows to SIZE. */
    g_gc_objs = all;
    while (total < it->bytes && n < cap) {
        uint64_t words = gc_words(w->gc_seed, n);
        obj_t *o = GC_MALLOC_ATOMIC(obj_bytes(words));

        if (o == NULL) {
            say(why, why_len, "the GC heap cannot grow past %" PRIu64 " of %" PRIu64 " bytes",
                total, it->bytes);
            return -ENOMEM;
        }
        obj_fill(o, w->gc_seed, n, 0, words);
        all[n++] = o;
        g_gc_n = n;
        total += obj_bytes(words);
    }
    /* Drop the garbage. GC_MALLOC is malloc-like: clear through volatile so
     * that the stores are not deleted as dead. */
    obj_t *volatile *slots = all;
    for (size_t i = 0; i < n; i++)
        if (!is_live(i, it->pct))
            slots[i] = NULL;
    GC_gcollect();
    hook_set(&g_gc_hook, true);
    err = mm__guest_add_shrinker(w->g, gc_shrink, NULL);
    if (err < 0) {
        say(why, why_len, "cannot register the GC's shrink hook: %s", mm_strerror(err));
        return err;
    }
    return 0;
}

static uint64_t gc_verify(const mm_wl_t *w, uint64_t *bytes)
{
    uint64_t errors = 0;

    for (size_t i = 0; i < g_gc_n; i++) {
        const obj_t *o = g_gc_objs[i];
        uint64_t words = gc_words(w->gc_seed, i);

        if (o == NULL)
            continue;
        errors += obj_check(o, w->gc_seed, i, w->gc_gen[i], words, "gc object");
        *bytes += obj_bytes(words);
    }
    return errors;
}

/* Replace one live object by its next generation; the old one is garbage. */
static void gc_churn(mm_wl_t *w)
{
    size_t i = next_live(g_gc_objs, g_gc_n, &w->gc_next);
    uint64_t words;
    obj_t *o;

    if (i == g_gc_n)
        return;
    words = gc_words(w->gc_seed, i);
    o = GC_MALLOC_ATOMIC(obj_bytes(words));
    if (o == NULL)
        return; /* the guest is short of memory: keep the old one */
    obj_fill(o, w->gc_seed, i, w->gc_gen[i] + 1, words);
    w->gc_gen[i]++;
    g_gc_objs[i] = o;
}

/* ---- jemalloc ---------------------------------------------------------------- */

static int je_start(mm_wl_t *w, const mm_wl_item_t *it, char *why, size_t why_len)
{
    mm_frame_source_t src = mm__guest_anon_source(w->g);
    size_t cap = (size_t)(it->bytes / JE_VAL_STEP + 1), n = 0;
    int flags;
    uint64_t total = 0;
    int err;

    err = mm_jemalloc_arena_source(&src, &w->je_arena);
    if (err < 0) {
        say(why, why_len, "cannot create a jemalloc arena over the guest: %s", mm_strerror(err));
        return err;
    }
    w->je_on = true;
    flags = MALLOCX_ARENA(w->je_arena) | MALLOCX_TCACHE_NONE;
    w->je_seed = mix(0x6aull);
    w->je_vals = calloc(cap, sizeof *w->je_vals);
    w->je_gen = calloc(cap, sizeof *w->je_gen);
    if (w->je_vals == NULL || w->je_gen == NULL) {
        say(why, why_len, "out of memory for the jemalloc index");
        return -ENOMEM;
    }
    while (total < it->bytes && n < cap) {
        uint64_t words = je_words(w->je_seed, n);
        obj_t *o = mallocx(obj_bytes(words), flags);

        if (o == NULL) {
            say(why, why_len,
                "the jemalloc arena cannot grow past %" PRIu64 " of %" PRIu64 " bytes", total,
                it->bytes);
            return -ENOMEM;
        }
        obj_fill(o, w->je_seed, n, 0, words);
        w->je_vals[n++] = o;
        w->je_n = n;
        total += obj_bytes(words);
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_live(i, it->pct)) {
            dallocx(w->je_vals[i], MALLOCX_TCACHE_NONE);
            w->je_vals[i] = NULL;
        }
    }
    hook_set(&g_je_hook, true);
    err = mm__guest_add_shrinker(w->g, je_shrink, NULL);
    if (err < 0) {
        say(why, why_len, "cannot register jemalloc's shrink hook: %s", mm_strerror(err));
        return err;
    }
    return 0;
}

static uint64_t je_verify(const mm_wl_t *w, uint64_t *bytes)
{
    uint64_t errors = 0;

    for (size_t i = 0; i < w->je_n; i++) {
        uint64_t words = je_words(w->je_seed, i);

        if (w->je_vals[i] == NULL)
            continue;
        errors += obj_check(w->je_vals[i], w->je_seed, i, w->je_gen[i], words, "je value");
        *bytes += obj_bytes(words);
    }
    return errors;
}

static void je_churn(mm_wl_t *w)
{
    size_t i = next_live(w->je_vals, w->je_n, &w->je_next);
    uint64_t words;
    obj_t *o;

    if (i == w->je_n)
        return;
    words = je_words(w->je_seed, i);
    o = mallocx(obj_bytes(words), MALLOCX_ARENA(w->je_arena) | MALLOCX_TCACHE_NONE);
    if (o == NULL)
        return; /* the guest is short of memory: keep the old one */
    obj_fill(o, w->je_seed, i, w->je_gen[i] + 1, words);
    dallocx(w->je_vals[i], MALLOCX_TCACHE_NONE);
    w->je_gen[i]++;
    w->je_vals[i] = o;
}

/* ---- The set ----------------------------------------------------------------- */

struct blocking_call {
    void (*fn)(void *arg);
    void *arg;
};

static void *blocking_trampoline(void *arg)
{
    struct blocking_call *c = arg;

    c->fn(c->arg);
    return NULL;
}

void mm__wl_blocking(mm_wl_t *w, void (*fn)(void *arg), void *arg)
{
    struct blocking_call c = {fn, arg};

    if (w != NULL && w->gc_on)
        GC_do_blocking(blocking_trampoline, &c);
    else
        fn(arg);
}

int mm__wl_start(mm_guest_t *g, const mm_wl_spec_t *spec, mm_wl_t **out, char *why, size_t why_len)
{
    mm_wl_t *w = calloc(1, sizeof *w);
    int err = 0;

    if (w == NULL) {
        say(why, why_len, "out of memory");
        return -ENOMEM;
    }
    w->g = g;
    w->buf = malloc(BLOCK_BYTES);
    if (w->buf == NULL) {
        free(w);
        say(why, why_len, "out of memory");
        return -ENOMEM;
    }
    /* The GC first: libgc must be attached before anything else maps
     * memory through it. */
    for (size_t i = 0; i < spec->n && err == 0; i++)
        if (spec->items[i].kind == MM_WL_GC)
            err = gc_start(w, &spec->items[i], why, why_len);
    for (size_t i = 0; i < spec->n && err == 0; i++) {
        const mm_wl_item_t *it = &spec->items[i];

        switch (it->kind) {
        case MM_WL_ANON:
        case MM_WL_TEMP:
            err = anon_start(w, it, i, why, why_len);
            if (err == 0)
                w->anon[w->n_anon - 1].temp = it->kind == MM_WL_TEMP;
            break;
        case MM_WL_JE:
            err = je_start(w, it, why, why_len);
            break;
        case MM_WL_CACHE:
            err = cache_start(w, it, why, why_len);
            break;
        case MM_WL_PHASE:
            err = phase_start(w, it, i, why, why_len);
            break;
        case MM_WL_GC:
        case MM_WL_FREE:
            break;
        }
    }
    for (size_t i = 0; i < spec->n && err == 0; i++)
        if (spec->items[i].kind == MM_WL_FREE)
            err = free_start(w, &spec->items[i], why, why_len);
    if (err < 0) {
        mm__wl_stop(w);
        return err;
    }
    *out = w;
    return 0;
}

struct round_call {
    mm_wl_t *w;
    uint64_t errors;
};

/* Everything but the GC item, which touches GC objects. */
static void round_outside_gc(void *arg)
{
    struct round_call *r = arg;
    mm_wl_t *w = r->w;

    for (size_t i = 0; i < w->n_anon; i++)
        r->errors += anon_round(w, i);
    if (w->je_on && w->je_vals != NULL) {
        uint64_t bytes = 0;

        r->errors += je_verify(w, &bytes);
        je_churn(w);
    }
    for (size_t i = 0; i < w->n_cache; i++)
        r->errors += cache_read(w, i);
    for (size_t i = 0; i < w->n_phase; i++)
        r->errors += phase_round(w, i);
}

uint64_t mm__wl_round(mm_wl_t *w)
{
    struct round_call r = {w, 0};

    mm__wl_blocking(w, round_outside_gc, &r);
    if (w->gc_on && w->gc_gen != NULL) {
        uint64_t bytes = 0;

        r.errors += gc_verify(w, &bytes);
        gc_churn(w);
    }
    return r.errors;
}

struct verify_call {
    mm_wl_t *w;
    uint64_t errors, bytes;
};

static void verify_outside_gc(void *arg)
{
    struct verify_call *v = arg;
    mm_wl_t *w = v->w;

    for (size_t i = 0; i < w->n_anon; i++) {
        v->errors += anon_check_pages(&w->anon[i], i, 0, w->anon[i].pages);
        v->bytes += w->anon[i].pages * BLOCK_BYTES;
    }
    if (w->je_on && w->je_vals != NULL)
        v->errors += je_verify(w, &v->bytes);
    for (size_t i = 0; i < w->n_cache; i++) {
        v->errors += cache_read(w, i);
        v->bytes += w->cache[i].blocks * BLOCK_BYTES;
    }
    v->errors += phase_verify(w, &v->bytes);
}

uint64_t mm__wl_verify(mm_wl_t *w, uint64_t *bytes)
{
    struct verify_call v = {w, 0, 0};

    mm__wl_blocking(w, verify_outside_gc, &v);
    if (w->gc_on && w->gc_gen != NULL)
        v.errors += gc_verify(w, &v.bytes);
    *bytes = v.bytes;
    return v.errors;
}

static void free_temp(void *arg)
{
    struct verify_call *v = arg;

    for (size_t i = 0; i < v->w->n_anon; i++) {
        anon_item_t *a = &v->w->anon[i];

        if (!a->temp || a->pages == 0)
            continue;
        if (mm__guest_anon_free(v->w->g, a->base, a->alloc_bytes) < 0) {
            v->errors++;
            continue;
        }
        v->bytes += a->alloc_bytes;
        a->pages = a->hot = a->alloc_bytes = 0;
    }
}

uint64_t mm__wl_free_temp(mm_wl_t *w)
{
    struct verify_call v = {w, 0, 0};

    mm__wl_blocking(w, free_temp, &v);
    return v.bytes;
}

static void give_back(void *arg)
{
    mm_wl_t *w = arg;

    for (size_t i = 0; i < w->n_anon; i++) {
        anon_item_t *a = &w->anon[i];
        int err = a->alloc_bytes ? mm__guest_anon_free(w->g, a->base, a->alloc_bytes) : 0;

        if (err < 0) /* the guest's close takes it anyway */
            fprintf(stderr, "mmguest: cannot free anon item %zu: %s\n", i, mm_strerror(err));
        free(a->gen);
    }
    for (size_t i = 0; i < w->n_phase; i++) {
        phase_item_t *ph = &w->phase[i];

        while (ph->n_held > 0)
            if (anon_unmake(w->g, &ph->step[--ph->n_held]) < 0)
                fprintf(stderr, "mmguest: cannot free a step of phase item %zu\n", i);
        free(ph->step);
    }
    if (w->je_on)
        mm_jemalloc_arena_destroy(w->je_arena); /* every value goes with it */
}

void mm__wl_stop(mm_wl_t *w)
{
    if (w == NULL)
        return;
    hook_set(&g_gc_hook, false);
    hook_set(&g_je_hook, false);
    mm__wl_blocking(w, give_back, w);
    if (w->gc_on) {
        /* libgc keeps its heap: nothing touches a GC object from here on,
         * and the guest's close takes the memory. */
        g_gc_objs = NULL;
        g_gc_n = 0;
        mm_gc_close();
    }
    free(w->gc_gen);
    free(w->je_vals);
    free(w->je_gen);
    free(w->buf);
    free(w);
}
