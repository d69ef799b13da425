/*
 * mmrun: run an unmodified program as an mm client. It puts libmm-preload.so
 * (found next to mmrun's installed libraries) in front of LD_PRELOAD, passes
 * its requests to the preload through the environment (MM_SOCKET,
 * MM_RUN_NAME, MM_RUN_MIN, MM_RUN_MAX, MM_RUN_WEIGHT, MM_RUN_DEBUG), gives
 * jemalloc one automatic arena (MALLOC_CONF), and execs the program in its
 * own place, so the program keeps mmrun's pid, signals and exit status.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mm/mm.h>

#define PRELOAD_NAME "libmm-preload.so"
/* Options for jemalloc that go before the user's MALLOC_CONF (which thus
 * still wins): one automatic arena, and no separate arena for huge sizes,
 * so that the one arena the preload adopts serves every thread; no retained
 * growth, whose unused tails would sit resident in the region where a purge
 * never reaches them (measured: 62 of 142 MiB for 1 MiB values). */
#define JE_CONF "narenas:1,oversize_threshold:0,retain:false"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mmrun [--socket PATH] [--min SIZE] [--max SIZE] [--weight N] [--name NAME]\n"
            "             [--verbose] -- PROGRAM [ARGS...]\n"
            "Run an unmodified program as a client of mmsrv. A program dynamically linked\n"
            "against Boehm GC gets its GC heap in mm frames and answers revocations by\n"
            "collecting; one linked against jemalloc gets its arena's extents from mm\n"
            "frames and answers by purging; any other program registers and reports its\n"
            "resident anonymous memory. Without a daemon the program runs as usual, after\n"
            "one warning.\n"
            "  --socket PATH  the daemon's client socket (default: $MM_SOCKET, else %s)\n"
            "  --min SIZE     reservation asked for (capped by the admin's policy)\n"
            "  --max SIZE     region size: the most the heap takes from mm (default 1G)\n"
            "  --weight N     share asked for when memory is contended (default 100)\n"
            "  --name NAME    client name shown by mmctl (default: the program's name)\n"
            "  --verbose      say on stderr which runtime was found and the client's id\n"
            "  --help         this text\n"
            "Sizes: 4096, 512K, 200M, 4G. Programs it execs become clients of their own.\n",
            mm_default_socket());
}

static int bad(const char *what, const char *arg)
{
    fprintf(stderr, "mmrun: bad %s: %s (try --help)\n", what, arg);
    return 2;
}

/* Prepend value to the colon- or comma-separated list in variable name. */
static int prepend_env(const char *name, const char *value, char sep)
{
    const char *old = getenv(name);
    if (!old || !*old)
        return setenv(name, value, 1);
    size_t n = strlen(value) + 1 + strlen(old) + 1;
    char *buf = malloc(n);
    if (!buf)
        return -1;
    snprintf(buf, n, "%s%c%s", value, sep, old);
    int rc = setenv(name, buf, 1);
    free(buf);
    return rc;
}

/* libmm-preload.so: $MM_RUN_PRELOAD, else <prefix>/<libdir>/ next to
 * <prefix>/bin/mmrun (installed), else <build>/lib (build tree). */
static int find_preload(char *out, size_t cap)
{
    const char *env = getenv("MM_RUN_PRELOAD");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return access(out, R_OK) == 0 ? 0 : -errno;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -errno;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -ENOENT;
    *slash = '\0'; /* exe is now the bin directory */
    const char *const dirs[] = {MM_INSTALL_LIBDIR, "lib"};
    for (size_t i = 0; i < 2; i++) {
        int len = snprintf(out, cap, "%s/../%s/%s", exe, dirs[i], PRELOAD_NAME);
        if (len > 0 && (size_t)len < cap && access(out, R_OK) == 0)
            return 0;
    }
    return -ENOENT;
}

#if defined(__SANITIZE_ADDRESS__)
/* An AddressSanitizer build's preload is instrumented, and ASan insists on
 * its runtime coming first in the program's library list: put it there. */
extern void __asan_init(void);
static int prepend_sanitizer_runtime(void)
{
    Dl_info info;
    if (!dladdr((void *)__asan_init, &info) || !info.dli_fname || !strchr(info.dli_fname, '/'))
        return 0; /* linked statically: the program brings its own */
    return prepend_env("LD_PRELOAD", info.dli_fname, ':');
}
#else
static int prepend_sanitizer_runtime(void)
{
    return 0;
}
#endif

int main(int argc, char **argv)
{
    enum { OPT_SOCKET = 256, OPT_MIN, OPT_MAX, OPT_WEIGHT, OPT_NAME, OPT_VERBOSE, OPT_HELP };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"min", required_argument, NULL, OPT_MIN},
        {"max", required_argument, NULL, OPT_MAX},
        {"weight", required_argument, NULL, OPT_WEIGHT},
        {"name", required_argument, NULL, OPT_NAME},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *sock = NULL, *min = NULL, *max = NULL, *weight = NULL, *name = NULL;
    int verbose = 0, c;
    uint64_t size;
    opterr = 0;
    /* '+': stop at the program's name, whose own options are its business. */
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case OPT_SOCKET:
            if (!*optarg)
                return bad("socket path", optarg);
            sock = optarg;
            break;
        case OPT_MIN:
            if (mm_parse_size(optarg, &size) < 0)
                return bad("--min size", optarg);
            min = optarg;
            break;
        case OPT_MAX:
            if (mm_parse_size(optarg, &size) < 0 || size == 0 || size > MM_REGION_MAX_BYTES)
                return bad("--max size", optarg);
            max = optarg;
            break;
        case OPT_WEIGHT: {
            char *end;
            errno = 0;
            unsigned long w = strtoul(optarg, &end, 10);
            if (errno || *end || end == optarg || w == 0 || w > UINT32_MAX || optarg[0] == '-')
                return bad("--weight", optarg);
            weight = optarg;
            break;
        }
        case OPT_NAME:
            if (!*optarg || strlen(optarg) >= MM_NAME_MAX)
                return bad("--name (1 to 31 characters)", optarg);
            name = optarg;
            break;
        case OPT_VERBOSE:
            verbose = 1;
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            return bad("option", argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "mmrun: no program to run (try --help)\n");
        return 2;
    }

    char preload[PATH_MAX];
    int err = find_preload(preload, sizeof preload);
    if (err < 0) {
        fprintf(stderr, "mmrun: cannot find %s: %s\n", PRELOAD_NAME, strerror(-err));
        return 1;
    }
    /* The preload before the user's; a sanitizer build's runtime before both. */
    if (prepend_env("LD_PRELOAD", preload, ':') < 0 || prepend_sanitizer_runtime() < 0 ||
        prepend_env("MALLOC_CONF", JE_CONF, ',') < 0 ||
        (sock && setenv("MM_SOCKET", sock, 1) < 0) || (min && setenv("MM_RUN_MIN", min, 1) < 0) ||
        (max && setenv("MM_RUN_MAX", max, 1) < 0) ||
        (weight && setenv("MM_RUN_WEIGHT", weight, 1) < 0) ||
        (name && setenv("MM_RUN_NAME", name, 1) < 0) ||
        (verbose && setenv("MM_RUN_DEBUG", "1", 1) < 0)) {
        fprintf(stderr, "mmrun: cannot set the environment: %s\n", strerror(errno));
        return 1;
    }
    unsetenv("MM_RUN_QUIET"); /* a fresh tree gets its own warning */
    execvp(argv[optind], argv + optind);
    int e = errno;
    fprintf(stderr, "mmrun: %s: %s\n", argv[optind], strerror(e));
    return e == ENOENT ? 127 : 126;
}
