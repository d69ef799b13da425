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

#include "config.h"
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
            "  --swap-dir DIR       where host paging keeps clients' pages; a disk,\n"
            "                       never tmpfs (default: the state directory)\n"
            "  --capacity SIZE      bytes clients may hold resident (default: MemAvailable)\n"
            "  --admin-group NAME   group allowed on the admin socket besides root\n"
            "  --idle-tax RATE      idle memory tax, 0 to 0.99 (default 0.75)\n"
            "  --max-client-reservation SIZE\n"
            "                       most a client may reserve for itself (default 0)\n"
            "  --max-client-weight N\n"
            "                       highest weight a client may ask for (default 100)\n"
            "  --grace SECONDS      how long clients of an earlier daemon on the same\n"
            "                       state directory have to reconnect (default 60)\n"
            "  --foreground         stay in the foreground\n"
            "  --log-level LEVEL    error, warn, info (default) or debug\n"
            "  --config FILE        settings file, key = value lines with the long\n"
            "                       option names as keys (default: " MM_DEFAULT_CONFIG
            " if it exists);\n"
            "                       the command line wins; SIGHUP reloads capacity,\n"
            "                       idle-tax, max-client-* and log-level from it\n"
            "  --check-config       check the options and the file, then exit\n"
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
    bool foreground, check_only, config_given;
    char socket_buf[4096], admin_buf[4096];
} options_t;

static const struct option longopts[] = {{"socket", required_argument, 0, 0},
                                         {"admin-socket", required_argument, 0, 0},
                                         {"state-dir", required_argument, 0, 0},
                                         {"swap-dir", required_argument, 0, 0},
                                         {"capacity", required_argument, 0, 0},
                                         {"admin-group", required_argument, 0, 0},
                                         {"log-level", required_argument, 0, 0},
                                         {"idle-tax", required_argument, 0, 0},
                                         {"max-client-reservation", required_argument, 0, 0},
                                         {"max-client-weight", required_argument, 0, 0},
                                         {"grace", required_argument, 0, 0},
                                         {"config", required_argument, 0, 'C'},
                                         {"foreground", no_argument, 0, 'f'},
                                         {"check-config", no_argument, 0, 'k'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};

/* One pass over argv. With settings false it only finds --config and the
 * flags; with settings true it applies the settings (after the file, so the
 * command line wins). */
static int scan_args(int argc, char **argv, options_t *o, bool settings)
{
    int opt, index = 0;
    char err[256];
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", longopts, &index)) != -1) {
        unsigned key;
        switch (opt) {
        case 0:
            if (!settings)
                break;
            if (mm__config_set(&o->cfg, longopts[index].name, optarg, &key, err, sizeof err) < 0)
                return bad_arg("--%s", err);
            if (key != MM_CFG_STARTUP_ONLY)
                o->cfg.cli_keys |= key;
            break;
        case 'C':
            o->cfg.config_path = optarg;
            o->config_given = true;
            break;
        case 'f':
            o->foreground = true;
            break;
        case 'k':
            o->check_only = true;
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

/* The config file (if any), then the command line over it. */
static int parse_args(int argc, char **argv, options_t *o)
{
    int rc = scan_args(argc, argv, o, false);
    if (rc != 0)
        return rc;
    if (!o->config_given && access(MM_DEFAULT_CONFIG, F_OK) == 0)
        o->cfg.config_path = MM_DEFAULT_CONFIG;
    if (o->cfg.config_path) {
        char err[512];
        if (mm__config_load(o->cfg.config_path, &o->cfg, ~0u, 0, err, sizeof err) < 0)
            return bad_arg("%s", err);
    }
    return scan_args(argc, argv, o, true);
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
    o.cfg.grace_s = 60;
    o.cfg.log_level = -1;
    int rc = parse_args(argc, argv, &o);
    if (rc == 0)
        rc = fill_defaults(&o);
    if (rc != 0)
        return rc;
    if (o.cfg.log_level >= 0)
        mm__log_set((enum mm_log_level)o.cfg.log_level);
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
