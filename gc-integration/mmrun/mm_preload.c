/*
 * libmm-preload: what mmrun puts in LD_PRELOAD to make an unmodified program
 * an mm client (see mmrun(1) and docs/mmrun.md for the contract).
 *
 * At load it looks at the program's runtime and attaches the matching
 * adapter, loaded with dlopen(RTLD_LOCAL) so that a program without that
 * runtime never loads it (nor libgc or jemalloc with it):
 *  - libgc (GC_init is defined): libmm-gc, whose mmap/madvise bodies serve
 *    libgc's heap from the client's region. This library's own mmap() and
 *    madvise() are the definitions ahead of the C library: they offer each
 *    call to libmm-gc's hooks with the caller's return address, and pass on
 *    what those do not take to the next definition (found from here with
 *    RTLD_NEXT, so the chain stays right also behind another interposer);
 *  - jemalloc (mallctl is defined): libmm-jemalloc adopts automatic arena 0
 *    (mmrun sets MALLOC_CONF=narenas:1,oversize_threshold:0 so that it is
 *    the only one);
 *  - neither: a plain client whose usage is the process's anonymous resident
 *    memory (RssAnon), reported every second; its heap stays its own.
 *
 * Fork: region mappings are MADV_DONTFORK. The prepare handler (registered
 * here before any adapter's, so that it runs last of them before the fork,
 * and after libgc's, which holds the GC lock) opens a pipe; the child handler
 * maps fresh private memory at the region's address and copies the region's
 * data extents (SEEK_DATA/SEEK_HOLE on its memfd) into it, then tells the
 * parent, whose parent handler waits for that before fork() returns. The
 * forking thread therefore cannot change the heap before the child has its
 * copy; other threads of the parent can (see the docs). The child is no
 * client: its adapters detach (libmm-gc) or fall back (libmm-jemalloc) and
 * new memory is ordinary memory. After exec, the inherited LD_PRELOAD makes
 * the new program a new client.
 *
 * If no daemon answers, one warning goes to stderr (once per process tree:
 * MM_RUN_QUIET is set for descendants) and the program runs without mm.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <mm/gc.h>
#include <mm/jemalloc.h>
#include <mm/mm.h>

#define EXPORT          __attribute__((visibility("default")))
#define REPORT_PERIOD_S 1

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*madvise_fn)(void *, size_t, int);
typedef int (*gc_mmap_fn)(const void *, void *, size_t, int, int, int, off_t, void **);
typedef int (*gc_madvise_fn)(const void *, void *, size_t, int, int *);

static mmap_fn real_mmap;
static madvise_fn real_madvise;
/* libmm-gc's hook bodies, published once its client is open. */
static _Atomic(gc_mmap_fn) g_gc_mmap;
static _Atomic(gc_madvise_fn) g_gc_madvise;

/* The client and its region (base 0: nothing to copy at fork). */
static mm_client_t *g_client;
static uintptr_t g_base;
static uint64_t g_bytes;
static int g_region_fd = -1;
/* Between prepare and parent/child; fork_lock keeps two threads forking at
 * once from sharing it (held from prepare to the parent or child handler). */
static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_fork_pipe[2] = {-1, -1};
static bool g_debug;

static const char *prog_name(void)
{
    extern char *program_invocation_short_name;
    return program_invocation_short_name;
}

__attribute__((format(printf, 1, 2))) static void debug(const char *fmt, ...)
{
    if (!g_debug)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mmrun[%ld] %s: ", (long)getpid(), prog_name());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- mmap/madvise: ahead of the C library, forwarded to libmm-gc -------- */

static void *pass_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (real_mmap)
        return real_mmap(addr, len, prot, flags, fd, off);
    long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    return r == -1 ? MAP_FAILED : (void *)r;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    gc_mmap_fn h = atomic_load_explicit(&g_gc_mmap, memory_order_acquire);
    void *p;
    if (h && h(__builtin_return_address(0), addr, len, prot, flags, fd, off, &p))
        return p;
    return pass_mmap(addr, len, prot, flags, fd, off);
}

EXPORT int madvise(void *addr, size_t len, int advice)
{
    gc_madvise_fn h = atomic_load_explicit(&g_gc_madvise, memory_order_acquire);
    int rc;
    if (h && h(__builtin_return_address(0), addr, len, advice, &rc))
        return rc;
    if (real_madvise)
        return real_madvise(addr, len, advice);
    return (int)syscall(SYS_madvise, addr, len, advice);
}

/* ---- fork ----------------------------------------------------------------- */

static void fork_prepare(void)
{
    pthread_mutex_lock(&fork_lock);
    if (g_base && pipe2(g_fork_pipe, O_CLOEXEC) < 0)
        g_fork_pipe[0] = g_fork_pipe[1] = -1; /* the child copies; nobody waits */
}

static void fork_parent(void)
{
    if (g_fork_pipe[0] < 0) {
        pthread_mutex_unlock(&fork_lock);
        return;
    }
    close(g_fork_pipe[1]);
    /* One byte when the child has its copy; EOF if it died first or if the
     * fork failed (then nobody else holds the write end). */
    char b;
    while (read(g_fork_pipe[0], &b, 1) < 0 && errno == EINTR)
        ;
    close(g_fork_pipe[0]);
    g_fork_pipe[0] = g_fork_pipe[1] = -1;
    pthread_mutex_unlock(&fork_lock);
}

/* Copy [off, off + len) of the region's memfd to base + off. */
static int copy_extent(uint64_t off, uint64_t len)
{
    while (len > 0) {
        ssize_t n = pread(g_region_fd, (char *)g_base + off, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

static int copy_region(void)
{
    void *p = pass_mmap((void *)g_base, g_bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if ((uintptr_t)p != g_base)
        return -EEXIST; /* an old kernel ignoring MAP_FIXED_NOREPLACE */
    off_t end = (off_t)g_bytes;
    for (off_t data = 0; data < end;) {
        data = lseek(g_region_fd, data, SEEK_DATA);
        if (data < 0)
            return errno == ENXIO ? 0 : -errno; /* ENXIO: no data past here */
        off_t hole = lseek(g_region_fd, data, SEEK_HOLE);
        if (hole < 0)
            return -errno;
        int err = copy_extent((uint64_t)data, (uint64_t)(hole - data));
        if (err < 0)
            return err;
        data = hole;
    }
    return 0;
}

static void fork_child(void)
{
    /* The forking thread took it in prepare and is this process's only one. */
    pthread_mutex_unlock(&fork_lock);
    g_client = NULL; /* the parent's, not ours: this process is no client */
    if (!g_base)
        return;
    int err = copy_region();
    if (err < 0) {
        /* Without its heap the child would fault on its first touch. */
        char msg[160];
        int n =
            snprintf(msg, sizeof msg, "mmrun: forked child %ld of %s cannot copy its heap: %s\n",
                     (long)getpid(), prog_name(), strerror(-err));
        if (write(STDERR_FILENO, msg, (size_t)n) < 0)
            _exit(127); /* nothing left to say it with */
        _exit(127);
    }
    g_base = 0;
    if (g_fork_pipe[1] >= 0) {
        char b = 1;
        if (write(g_fork_pipe[1], &b, 1) < 0)
            b = 0; /* the parent then sees EOF when we close: same effect */
        close(g_fork_pipe[0]);
        close(g_fork_pipe[1]);
        g_fork_pipe[0] = g_fork_pipe[1] = -1;
    }
}

/* ---- attaching ------------------------------------------------------------ */

/* dlopen name from this library's own directory (where mmrun's adapters are
 * installed next to it). */
static void *open_adapter(const char *name)
{
    Dl_info info;
    char path[4096];
    if (dladdr((void *)open_adapter, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        int dir = slash ? (int)(slash - info.dli_fname) : 0;
        snprintf(path, sizeof path, "%.*s/%s", dir, info.dli_fname, name);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
    }
    return dlopen(name, RTLD_NOW | RTLD_LOCAL);
}

static int attach_gc(const mm_client_opts_t *o)
{
    void *h = open_adapter("libmm-gc.so." MM_SOVERSION);
    if (!h)
        return -ELIBACC;
    int (*open_fn)(const char *, const mm_client_opts_t *, mm_client_t **) =
        (int (*)(const char *, const mm_client_opts_t *, mm_client_t **))dlsym(h, "mm_gc_open");
    gc_mmap_fn m = (gc_mmap_fn)dlsym(h, "mm_gc_mmap_hook");
    gc_madvise_fn a = (gc_madvise_fn)dlsym(h, "mm_gc_madvise_hook");
    if (!open_fn || !m || !a)
        return -ELIBACC;
    mm_client_opts_t go = *o;
    go.flags |= MM_GC_FALLBACK;
    int err = open_fn(NULL, &go, &g_client);
    if (err < 0)
        return err;
    atomic_store_explicit(&g_gc_madvise, a, memory_order_release);
    atomic_store_explicit(&g_gc_mmap, m, memory_order_release);
    return 0;
}

static int attach_jemalloc(const mm_client_opts_t *o)
{
    void *h = open_adapter("libmm-jemalloc.so." MM_SOVERSION);
    if (!h)
        return -ELIBACC;
    int (*open_fn)(const char *, const mm_client_opts_t *, mm_client_t **) =
        (int (*)(const char *, const mm_client_opts_t *, mm_client_t **))dlsym(h,
                                                                               "mm_jemalloc_open");
    int (*adopt)(mm_client_t *, unsigned) =
        (int (*)(mm_client_t *, unsigned))dlsym(h, "mm_jemalloc_adopt");
    int (*ctl)(const char *, void *, size_t *, void *, size_t) =
        (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
    if (!open_fn || !adopt || !ctl)
        return -ELIBACC;
    unsigned narenas = 0;
    size_t sz = sizeof narenas;
    if (ctl("opt.narenas", &narenas, &sz, NULL, 0) == 0 && narenas > 1)
        fprintf(stderr,
                "mmrun: %s: jemalloc has %u arenas (MALLOC_CONF narenas): only arena 0 takes "
                "its memory from mm\n",
                prog_name(), narenas);
    void (*close_fn)(mm_client_t *) = (void (*)(mm_client_t *))dlsym(h, "mm_jemalloc_close");
    mm_client_t *c = NULL;
    int err = open_fn(NULL, o, &c);
    if (err < 0)
        return err;
    err = adopt(c, 0);
    if (err < 0) {
        if (close_fn)
            close_fn(c);
        return err;
    }
    g_client = c;
    return 0;
}

/* The plain client's answer: its heap is not in the region, so it has
 * nothing to give; it says so with its current usage. */
static void report_rss(mm_client_t *c)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %llu kB", &kib) == 1)
            break;
    fclose(f);
    mm_usage_t u = {.live_bytes = kib << 10, .heap_bytes = kib << 10};
    (void)mm_report(c, &u); /* a missed report only leaves older figures */
}

static uint64_t plain_revoke(mm_client_t *c, const mm_revoke_request_t *req, void *arg)
{
    (void)req, (void)arg;
    report_rss(c);
    return 0;
}

static void *reporter(void *arg)
{
    mm_client_t *c = arg;
    for (;;) {
        report_rss(c);
        struct timespec ts = {REPORT_PERIOD_S, 0};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    return NULL;
}

static int attach_plain(const mm_client_opts_t *o)
{
    mm_client_opts_t po = *o;
    po.flags |= MM_CLIENT_THREAD;
    po.on_revoke = plain_revoke;
    int err = mm_client_open(NULL, &po, &g_client);
    if (err < 0)
        return err;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, reporter, g_client) != 0)
        report_rss(g_client); /* at least once */
    pthread_attr_destroy(&attr);
    return 0;
}

/* A size from the environment, or keep *out; a bad one is said and ignored. */
static void env_size(const char *name, uint64_t *out)
{
    const char *v = getenv(name);
    uint64_t x;
    if (!v || !*v)
        return;
    if (mm_parse_size(v, &x) == 0)
        *out = x;
    else
        fprintf(stderr, "mmrun: %s: ignoring %s=%s (not a size)\n", prog_name(), name, v);
}

__attribute__((constructor)) static void mm_preload_init(void)
{
    real_mmap = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
    real_madvise = (madvise_fn)dlsym(RTLD_NEXT, "madvise");
    g_debug = getenv("MM_RUN_DEBUG") != NULL;

    mm_client_opts_t o;
    mm_client_opts_init(&o);
    char name[MM_NAME_MAX];
    const char *n = getenv("MM_RUN_NAME");
    snprintf(name, sizeof name, "%s", n && *n ? n : prog_name());
    o.name = name;
    env_size("MM_RUN_MAX", &o.max_bytes);
    env_size("MM_RUN_MIN", &o.min_bytes);
    const char *w = getenv("MM_RUN_WEIGHT");
    if (w && *w) {
        char *end;
        unsigned long v = strtoul(w, &end, 10);
        if (*end == '\0' && v > 0 && v <= UINT32_MAX)
            o.weight = (uint32_t)v;
        else
            fprintf(stderr, "mmrun: %s: ignoring MM_RUN_WEIGHT=%s\n", prog_name(), w);
    }
    /* The name is the program's that mmrun started; a program it execs
     * registers under its own. */
    unsetenv("MM_RUN_NAME");
    /* Host paging would leave paged-out frames as holes in the memfd, which
     * a forked child's copy cannot see: a client that misses a deadline is
     * frozen (and restored before it runs again) instead. */
    o.flags |= MM_CLIENT_NO_HOST_PAGING;

    /* Before any adapter registers its own: see the file comment. */
    if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
        return; /* without memory even for that, stay out of the way */

    bool gc = dlsym(RTLD_DEFAULT, "GC_init") != NULL;
    bool je = dlsym(RTLD_DEFAULT, "mallctl") != NULL;
    const char *runtime = gc ? "boehm" : je ? "jemalloc" : "none";
    debug("runtime %s%s", runtime, gc && je ? " (its jemalloc is left alone)" : "");
    int err = gc ? attach_gc(&o) : je ? attach_jemalloc(&o) : attach_plain(&o);
    if (err < 0) {
        if (!getenv("MM_RUN_QUIET")) {
            const char *sock = getenv("MM_SOCKET");
            if (err == -ENOENT || err == -ECONNREFUSED)
                fprintf(stderr, "mmrun: no mm daemon at %s (%s): %s runs without mm\n",
                        sock && *sock ? sock : mm_default_socket(), mm_strerror(err), prog_name());
            else
                fprintf(stderr,
                        "mmrun: cannot attach %s to mm (runtime %s): %s; it runs without mm\n",
                        prog_name(), runtime, mm_strerror(err));
            setenv("MM_RUN_QUIET", "1", 1); /* one warning per process tree */
        }
        return;
    }
    if (gc || je) {
        g_base = (uintptr_t)mm_client_base(g_client);
        g_bytes = mm_client_region_bytes(g_client);
        g_region_fd = mm_client_region_fd(g_client);
    }
    debug("client %s, id %u", name, mm_client_id(g_client));
}
