/*
 * mmctl: the management plane's command line. Sends one request line to the
 * daemon's admin socket and prints the JSON reply, as is with --json or as a
 * table otherwise. `metrics` prints the status reply as Prometheus text
 * (metrics.c); `top` asks for status again every interval and redraws it.
 *
 *   mmctl [--admin-socket PATH] [--json] status | clients | capacity SIZE
 *         | set CLIENT key=value... | reclaim CLIENT SIZE | balloon CLIENT SIZE
 *         | virtio-mem CLIENT SIZE | metrics
 *         | top [--interval MS] [--iterations N]
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mm/mm.h>

#include "admin_client.h"
#include "metrics.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mmctl [--admin-socket PATH] [--json] COMMAND\n"
            "commands:\n"
            "  status          capacity, totals and every client\n"
            "  clients         the clients only\n"
            "  capacity SIZE   set the bytes clients may hold resident (e.g. 4G)\n"
            "  set CLIENT key=value...  min=, max=, weight=, target=SIZE|auto\n"
            "  reclaim CLIENT SIZE      take SIZE back from a client now\n"
            "  balloon CLIENT SIZE      a balloon guest keeps SIZE: its balloon then holds\n"
            "                           RAM - SIZE, in 4 KiB pages (QEMU's balloon command)\n"
            "  virtio-mem CLIENT SIZE   a virtio-mem guest's requested (plugged) size, a\n"
            "                           multiple of the 2 MiB block\n"
            "  metrics         status as Prometheus text (format 0.0.4) on stdout,\n"
            "                  for node_exporter's textfile collector; --json ignored\n"
            "  top             live per-client view, sorted by resident bytes;\n"
            "                  plain snapshots when stdout is not a terminal\n"
            "    --interval MS     time between refreshes (default 1000)\n"
            "    --iterations N    stop after N snapshots (default: until SIGINT)\n"
            "The admin socket defaults to $MM_ADMIN_SOCKET or %s.\n",
            mm_default_admin_socket());
}

static const char *human(json_int_t bytes, char *buf, size_t cap)
{
    double v = (double)bytes;
    const char *unit = "B";
    if (v >= 1 << 30) {
        v /= 1 << 30;
        unit = "G";
    } else if (v >= 1 << 20) {
        v /= 1 << 20;
        unit = "M";
    } else if (v >= 1 << 10) {
        v /= 1 << 10;
        unit = "K";
    }
    snprintf(buf, cap, unit[0] == 'B' ? "%.0f%s" : "%.1f%s", v, unit);
    return buf;
}

static json_int_t field(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static void print_clients(json_t *clients)
{
    char b[6][32];
    printf("%-5s %-16s %-8s %9s %9s %9s %9s %9s %9s\n", "ID", "NAME", "PID", "TARGET", "GRANTED",
           "OWNED", "RESIDENT", "FREE", "RECLAIMED");
    size_t i;
    json_t *c;
    json_array_foreach(clients, i, c)
    {
        printf("%-5lld %-16s %-8lld %9s %9s %9s %9s %9s %9s\n", (long long)field(c, "id"),
               json_string_value(json_object_get(c, "name")), (long long)field(c, "pid"),
               human(field(c, "target_bytes"), b[0], 32),
               human(field(c, "granted_bytes"), b[1], 32), human(field(c, "owned_bytes"), b[2], 32),
               human(field(c, "resident_bytes"), b[3], 32), human(field(c, "free_bytes"), b[4], 32),
               human(field(c, "reclaimed_bytes"), b[5], 32));
    }
}

static void print_text(const char *cmd, json_t *reply)
{
    char b[4][32];
    if (strcmp(cmd, "status") == 0) {
        printf("capacity %s, granted %s, resident %s, %lld clients\n",
               human(field(reply, "capacity_bytes"), b[0], 32),
               human(field(reply, "granted_bytes"), b[1], 32),
               human(field(reply, "resident_bytes"), b[2], 32),
               (long long)json_array_size(json_object_get(reply, "clients")));
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(reply, "nodes"), i, n)
        {
            printf("node %lld: capacity %s, granted %s, resident %s\n", (long long)field(n, "node"),
                   human(field(n, "capacity_bytes"), b[0], 32),
                   human(field(n, "granted_bytes"), b[1], 32),
                   human(field(n, "resident_bytes"), b[2], 32));
        }
        print_clients(json_object_get(reply, "clients"));
    } else if (strcmp(cmd, "clients") == 0) {
        print_clients(json_object_get(reply, "clients"));
    } else if (strcmp(cmd, "set") == 0 || strcmp(cmd, "balloon") == 0 ||
               strcmp(cmd, "virtio-mem") == 0) {
        json_t *one = json_array();
        json_array_append(one, reply);
        print_clients(one);
        json_decref(one);
    } else if (strcmp(cmd, "reclaim") == 0) {
        printf("%s: took %s back at once, asked it for %s more; granted now %s\n",
               json_string_value(json_object_get(reply, "name")),
               human(field(reply, "taken_bytes"), b[0], 32),
               human(field(reply, "asked_bytes"), b[1], 32),
               human(field(reply, "granted_bytes"), b[2], 32));
    } else if (strcmp(cmd, "capacity") == 0) {
        printf("capacity set to %s: reclaimed %s in %.1f ms; granted %s, resident %s\n",
               human(field(reply, "capacity_bytes"), b[0], 32),
               human(field(reply, "reclaimed_bytes"), b[1], 32),
               json_number_value(json_object_get(reply, "reclaim_ms")),
               human(field(reply, "granted_bytes"), b[2], 32),
               human(field(reply, "resident_bytes"), b[3], 32));
    }
}

static void usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "mmctl: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

/* A `set` argument: key=value with a known key and a well-formed value. */
static void check_setting(const char *kv)
{
    const char *eq = strchr(kv, '=');
    uint64_t bytes;
    if (!eq)
        usage_error("set takes key=value arguments, not '%s'", kv);
    size_t klen = (size_t)(eq - kv);
    const char *val = eq + 1;
    if (klen == 6 && strncmp(kv, "weight", 6) == 0) {
        char *end;
        unsigned long w = strtoul(val, &end, 10);
        if (*val < '1' || *val > '9' || *end || w > 10000)
            usage_error("weight must be 1 to 10000: '%s'", kv);
    } else if ((klen == 3 && (strncmp(kv, "min", 3) == 0 || strncmp(kv, "max", 3) == 0)) ||
               (klen == 6 && strncmp(kv, "target", 6) == 0 && strcmp(val, "auto") != 0)) {
        if (mm_parse_size(val, &bytes) < 0)
            usage_error("'%s' needs a size like 512M", kv);
    } else if (!(klen == 6 && strncmp(kv, "target", 6) == 0)) {
        usage_error("unknown setting '%s' (min, max, weight, target)", kv);
    }
}

/* Build the request line; exits 2 on bad usage. */
static void build_request(int argc, char **argv, char *req, size_t cap)
{
    const char *cmd = argv[0];
    uint64_t bytes;
    if ((strcmp(cmd, "status") == 0 || strcmp(cmd, "clients") == 0) && argc == 1) {
        snprintf(req, cap, "%s\n", cmd);
        return;
    }
    if (strcmp(cmd, "capacity") == 0) {
        if (argc != 2 || mm_parse_size(argv[1], &bytes) < 0)
            usage_error("capacity needs one size like 4G, not '%s'", argc > 1 ? argv[1] : "");
        snprintf(req, cap, "capacity %llu\n", (unsigned long long)bytes);
        return;
    }
    if (strcmp(cmd, "reclaim") == 0) {
        if (argc != 3 || mm_parse_size(argv[2], &bytes) < 0 || bytes == 0)
            usage_error("reclaim needs a client and a size like 64M, not '%s'",
                        argc > 2 ? argv[2] : "");
        snprintf(req, cap, "reclaim %s %llu\n", argv[1], (unsigned long long)bytes);
        return;
    }
    if (strcmp(cmd, "balloon") == 0 || strcmp(cmd, "virtio-mem") == 0) {
        if (argc != 3 || mm_parse_size(argv[2], &bytes) < 0 || bytes == 0)
            usage_error(strcmp(cmd, "balloon") == 0
                            ? "balloon needs a client and a size like 512M, not '%s'"
                            : "virtio-mem needs a client and a size like 512M, not '%s'",
                        argc > 2 ? argv[2] : "");
        snprintf(req, cap, "%s %s %llu\n", cmd, argv[1], (unsigned long long)bytes);
        return;
    }
    if (strcmp(cmd, "set") == 0) {
        if (argc < 3)
            usage_error("set needs a client and key=value settings%s", "");
        size_t len = (size_t)snprintf(req, cap, "set %s", argv[1]);
        for (int i = 2; i < argc; i++) {
            check_setting(argv[i]);
            len += (size_t)snprintf(req + len, len < cap ? cap - len : 0, " %s", argv[i]);
        }
        if (len + 2 > cap)
            usage_error("set: too many settings%s", "");
        strcpy(req + len, "\n");
        return;
    }
    usage_error("unknown command or arguments '%s' (see --help)", cmd);
}

/* Ask the daemon at path for req and parse the reply into *reply (the
 * caller owns it; NULL if unreadable). When raw is not NULL, *raw gets the
 * reply's text as sent (the caller frees it), else it is freed here. Prints
 * why on failure and returns 1; returns 0 on a reply without "error". */
static int query(const char *path, const char *req, json_t **reply, char **raw)
{
    char *text = NULL;
    *reply = NULL;
    if (raw)
        *raw = NULL;
    int err = mm__admin_request(path, req, &text);
    if (err < 0) {
        fprintf(stderr, "mmctl: cannot reach mmsrv at %s: %s\n", path, mm_strerror(err));
        return 1;
    }
    json_error_t jerr;
    *reply = json_loads(text, 0, &jerr);
    if (raw)
        *raw = text;
    else
        free(text);
    if (!*reply) {
        fprintf(stderr, "mmctl: unreadable reply from mmsrv: %s\n", jerr.text);
        return 1;
    }
    json_t *error = json_object_get(*reply, "error");
    if (error) {
        fprintf(stderr, "mmctl: %s\n", json_string_value(error));
        return 1;
    }
    return 0;
}

static volatile sig_atomic_t top_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

/* Clients sorted by resident bytes, largest first; ties by id. */
static int by_resident(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t rx = field(x, "resident_bytes"), ry = field(y, "resident_bytes");
    if (rx != ry)
        return rx < ry ? 1 : -1;
    return field(x, "id") < field(y, "id") ? -1 : field(x, "id") > field(y, "id");
}

/* A client's name for the terminal: names come from clients, so control
 * characters (which could be escape sequences) are shown as '?'. */
static const char *printable(const char *name, char *buf, size_t cap)
{
    size_t n = 0;
    for (; name && *name && n + 1 < cap; name++)
        buf[n++] = (unsigned char)*name < 0x20 || *name == 0x7f ? '?' : *name;
    buf[n] = '\0';
    return buf;
}

static void print_top(json_t *st, int tty)
{
    char b[4][32], name[64], when[16];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%H:%M:%S", localtime_r(&now, &tm));
    json_t *clients = json_object_get(st, "clients");
    size_t n = json_array_size(clients), i;
    json_t **sorted = calloc(n ? n : 1, sizeof *sorted);
    if (!sorted) {
        fprintf(stderr, "mmctl: out of memory\n");
        exit(1);
    }
    for (i = 0; i < n; i++)
        sorted[i] = json_array_get(clients, i);
    qsort(sorted, n, sizeof *sorted, by_resident);

    if (tty)
        fputs("\033[H\033[2J", stdout); /* cursor home, clear screen */
    printf("mm top %s: capacity %s, granted %s, resident %s, %zu clients\n", when,
           human(field(st, "capacity_bytes"), b[0], 32),
           human(field(st, "granted_bytes"), b[1], 32),
           human(field(st, "resident_bytes"), b[2], 32), n);
    printf("%-24s %-5s %-8s %9s %9s %9s %7s\n", "NAME", "ID", "KIND", "TARGET", "RESIDENT", "PAGED",
           "MISSED");
    for (i = 0; i < n; i++) {
        json_t *c = sorted[i];
        const char *kind = json_string_value(json_object_get(c, "kind"));
        printf("%-24s %-5lld %-8s %9s %9s %9s %7lld\n",
               printable(json_string_value(json_object_get(c, "name")), name, 25),
               (long long)field(c, "id"), kind ? kind : "?",
               human(field(c, "target_bytes"), b[0], 32),
               human(field(c, "resident_bytes"), b[1], 32),
               human(field(c, "paged_bytes"), b[2], 32), (long long)field(c, "missed_deadlines"));
    }
    if (!tty)
        putchar('\n'); /* a blank line between snapshots */
    fflush(stdout);
    free(sorted);
}

/* `top`: status every interval_ms until SIGINT/SIGTERM or, when iterations
 * is above 0, that many snapshots. Returns the exit status. */
static int run_top(const char *path, long interval_ms, long iterations)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: the sleep ends at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int tty = isatty(STDOUT_FILENO);
    for (long k = 0; !top_stop && (iterations == 0 || k < iterations); k++) {
        if (k > 0) {
            struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
            while (!top_stop && nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
            if (top_stop)
                break;
        }
        json_t *st;
        int rc = query(path, "status\n", &st, NULL);
        if (rc != 0) {
            json_decref(st);
            return rc;
        }
        print_top(st, tty);
        json_decref(st);
    }
    return 0;
}

/* A --interval or --iterations value: a whole number from 1 to max. */
static long count_arg(const char *opt, const char *arg, long max)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < 1 || v > max) {
        fprintf(stderr, "mmctl: %s needs a whole number from 1 to %ld, not '%s'\n", opt, max, arg);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"admin-socket", required_argument, 0, 'a'},
                                             {"json", no_argument, 0, 'j'},
                                             {"help", no_argument, 0, 'h'},
                                             {"interval", required_argument, 0, 'i'},
                                             {"iterations", required_argument, 0, 'n'},
                                             {0, 0, 0, 0}};
    const char *path = NULL;
    int opt, as_json = 0, top_opts = 0;
    long interval_ms = 1000, iterations = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'a':
            path = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'i':
            interval_ms = count_arg("--interval", optarg, 3600000);
            top_opts = 1;
            break;
        case 'n':
            iterations = count_arg("--iterations", optarg, 1000000000);
            top_opts = 1;
            break;
        default:
            fprintf(stderr, "mmctl: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "mmctl: no command given (see --help)\n");
        return 2;
    }
    const char *cmd = argv[optind];
    int is_top = strcmp(cmd, "top") == 0, is_metrics = strcmp(cmd, "metrics") == 0;
    if ((is_top || is_metrics) && argc - optind != 1)
        usage_error("%s takes no arguments (see --help)", cmd);
    if (top_opts && !is_top)
        usage_error("--interval and --iterations are for top, not '%s'", cmd);
    if (!path)
        path = mm_default_admin_socket();
    if (is_top)
        return run_top(path, interval_ms, iterations);

    char req[1024];
    if (is_metrics)
        strcpy(req, "status\n");
    else
        build_request(argc - optind, argv + optind, req, sizeof req);
    json_t *reply;
    char *text;
    int rc = query(path, req, &reply, &text);
    if (rc == 0 && is_metrics) {
        int err = mm__metrics_write(stdout, reply);
        if (err == 0 && fflush(stdout) != 0)
            err = -EIO;
        if (err < 0) {
            fprintf(stderr, "mmctl: cannot write metrics: %s\n", mm_strerror(err));
            rc = 1;
        }
    } else if (rc == 0 && as_json) {
        fputs(text, stdout);
    } else if (rc == 0) {
        print_text(cmd, reply);
    }
    json_decref(reply);
    free(text);
    return rc;
}
