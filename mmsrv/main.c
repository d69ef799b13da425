/*
 * mmsrv: the host memory manager daemon. Parses its command line, finds its
 * defaults (capacity from MemAvailable, paths under the state directory),
 * goes to the background unless --foreground, and runs the server.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mm/mm.h>

#include "daemon.h"
#include "log.h"
#include "policy.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mmsrv [options]\n"
            "  --socket PATH        client socket (default: STATE_DIR/mm.sock)\n"
            "  --admin-socket PATH  admin socket (default: STATE_DIR/admin.sock)\n"
            "  --state-dir DIR      state directory (default: %s)\n"
            "  --capacity SIZE      bytes clients may hold resident (default: MemAvailable)\n"
            "  --admin-group NAME   group allowed on the admin socket besides root\n"
            "  --idle-tax RATE      idle memory tax, 0 to 0.99 (default 0.75)\n"
            "  --max-client-reservation SIZE\n"
            "                       most a client may reserve for itself (default 0)\n"
            "  --max-client-weight N\n"
            "                       highest weight a client may ask for (default 100)\n"
            "  --foreground         stay in the foreground\n"
            "  --log-level LEVEL    error, warn, info (default) or debug\n"
            "  --check-config       check the options and exit\n"
            "  --help               this text\n"
            "Sizes are written like 4096, 512K, 200M, 4G.\n",
            mm_default_state_dir());
}

static int bad_arg(const char *fmt, const char *arg)
{
    fprintf(stderr, "mmsrv: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 2;
}

/* MemAvailable from /proc/meminfo, in bytes; 0 if it cannot be read. */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[256];
    unsigned long long kib = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return (uint64_t)kib * 1024;
}

typedef struct options {
    mm_server_config_t cfg;
    bool foreground, check_only;
    char socket_buf[4096], admin_buf[4096];
} options_t;

static int parse_args(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {{"socket", required_argument, 0, 's'},
                                             {"admin-socket", required_argument, 0, 'a'},
                                             {"state-dir", required_argument, 0, 'd'},
                                             {"capacity", required_argument, 0, 'c'},
                                             {"admin-group", required_argument, 0, 'g'},
                                             {"foreground", no_argument, 0, 'f'},
                                             {"log-level", required_argument, 0, 'l'},
                                             {"check-config", no_argument, 0, 'k'},
                                             {"idle-tax", required_argument, 0, 'i'},
                                             {"max-client-reservation", required_argument, 0, 'R'},
                                             {"max-client-weight", required_argument, 0, 'W'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            o->cfg.socket_path = optarg;
            break;
        case 'a':
            o->cfg.admin_socket_path = optarg;
            break;
        case 'd':
            o->cfg.state_dir = optarg;
            break;
        case 'f':
            o->foreground = true;
            break;
        case 'k':
            o->check_only = true;
            break;
        case 'c':
            if (mm_parse_size(optarg, &o->cfg.capacity_bytes) < 0 ||
                o->cfg.capacity_bytes < MM_CHUNK_SIZE)
                return bad_arg("--capacity needs a size of at least 2M, not '%s'", optarg);
            break;
        case 'g': {
            struct group *g = getgrnam(optarg);
            if (!g)
                return bad_arg("--admin-group: no group named '%s'", optarg);
            o->cfg.admin_gid = g->gr_gid;
            o->cfg.has_admin_group = true;
            break;
        }
        case 'i': {
            char *end;
            o->cfg.idle_tax = strtod(optarg, &end);
            if (*optarg == '\0' || *end || !(o->cfg.idle_tax >= 0 && o->cfg.idle_tax <= 0.99))
                return bad_arg("--idle-tax must be a number from 0 to 0.99, not '%s'", optarg);
            break;
        }
        case 'R':
            if (mm_parse_size(optarg, &o->cfg.max_client_min_bytes) < 0)
                return bad_arg("--max-client-reservation needs a size like 256M, not '%s'", optarg);
            break;
        case 'W': {
            char *end;
            unsigned long w = strtoul(optarg, &end, 10);
            if (*optarg < '1' || *optarg > '9' || *end || w > 10000)
                return bad_arg("--max-client-weight must be 1 to 10000, not '%s'", optarg);
            o->cfg.max_client_weight = (uint32_t)w;
            break;
        }
        case 'l':
            if (mm__log_set_level(optarg) < 0)
                return bad_arg("--log-level must be error, warn, info or debug, not '%s'", optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return bad_arg("unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_arg("unexpected argument '%s'", argv[optind]);
    return 0;
}

static int fill_defaults(options_t *o)
{
    if (!o->cfg.state_dir)
        o->cfg.state_dir = mm_default_state_dir();
    if (!o->cfg.socket_path) {
        snprintf(o->socket_buf, sizeof o->socket_buf, "%s/mm.sock", o->cfg.state_dir);
        o->cfg.socket_path = o->socket_buf;
    }
    if (!o->cfg.admin_socket_path) {
        snprintf(o->admin_buf, sizeof o->admin_buf, "%s/admin.sock", o->cfg.state_dir);
        o->cfg.admin_socket_path = o->admin_buf;
    }
    if (!o->cfg.capacity_bytes) {
        o->cfg.capacity_bytes = mem_available() & ~(uint64_t)(MM_CHUNK_SIZE - 1);
        if (o->cfg.capacity_bytes < MM_CHUNK_SIZE) {
            fprintf(stderr, "mmsrv: cannot read MemAvailable; give --capacity\n");
            return 2;
        }
    }
    return 0;
}

/* Fork into the background; the parent exits once the child is ready (or
 * with the child's failure). Returns the fd the child writes when ready. */
static int daemonize(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid > 0) {
        char c;
        close(p[1]);
        exit(read(p[0], &c, 1) == 1 ? 0 : 1);
    }
    close(p[0]);
    if (setsid() < 0)
        return -errno;
    if (!freopen("/dev/null", "r", stdin) || !freopen("/dev/null", "w", stdout))
        return -errno;
    return p[1];
}

int main(int argc, char **argv)
{
    options_t o;
    memset(&o, 0, sizeof o);
    o.cfg.idle_tax = MM_POLICY_IDLE_TAX;
    o.cfg.max_client_weight = 100;
    int rc = parse_args(argc, argv, &o);
    if (rc == 0)
        rc = fill_defaults(&o);
    if (rc != 0)
        return rc;
    if (o.check_only) {
        printf("mmsrv: configuration ok: state dir %s, capacity %llu MiB\n", o.cfg.state_dir,
               (unsigned long long)(o.cfg.capacity_bytes >> 20));
        return 0;
    }
    int ready_fd = -1;
    if (!o.foreground) {
        ready_fd = daemonize();
        if (ready_fd < 0) {
            fprintf(stderr, "mmsrv: cannot go to the background: %s\n", strerror(-ready_fd));
            return 1;
        }
    }
    /* A peer that hangs up must cost an EPIPE, never the daemon. */
    signal(SIGPIPE, SIG_IGN);
    rcu_register_thread();
    mm_server_t s;
    int err = mm__server_init(&s, &o.cfg);
    if (err == 0)
        err = mm__server_run(&s, ready_fd);
    mm__server_fini(&s);
    rcu_unregister_thread();
    return err == 0 ? 0 : 1;
}
