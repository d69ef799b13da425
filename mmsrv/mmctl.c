/*
 * mmctl: the management plane's command line. Sends one request line to the
 * daemon's admin socket and prints the JSON reply, as is with --json or as a
 * table otherwise.
 *
 *   mmctl [--admin-socket PATH] [--json] status | clients | capacity SIZE
 *         | set CLIENT key=value... | reclaim CLIENT SIZE
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <mm/mm.h>

#include "admin_client.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mmctl [--admin-socket PATH] [--json] COMMAND\n"
            "commands:\n"
            "  status          capacity, totals and every client\n"
            "  clients         the clients only\n"
            "  capacity SIZE   set the bytes clients may hold resident (e.g. 4G)\n"
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
    } else if (strcmp(cmd, "set") == 0) {
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

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"admin-socket", required_argument, 0, 'a'},
                                             {"json", no_argument, 0, 'j'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *path = NULL;
    int opt, as_json = 0;
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
    char req[1024], *text = NULL;
    build_request(argc - optind, argv + optind, req, sizeof req);
    if (!path)
        path = mm_default_admin_socket();
    int err = mm__admin_request(path, req, &text);
    if (err < 0) {
        fprintf(stderr, "mmctl: cannot reach mmsrv at %s: %s\n", path, mm_strerror(err));
        return 1;
    }
    json_error_t jerr;
    json_t *reply = json_loads(text, 0, &jerr);
    if (!reply) {
        fprintf(stderr, "mmctl: unreadable reply from mmsrv: %s\n", jerr.text);
        free(text);
        return 1;
    }
    json_t *error = json_object_get(reply, "error");
    int rc = 0;
    if (error) {
        fprintf(stderr, "mmctl: %s\n", json_string_value(error));
        rc = 1;
    } else if (as_json) {
        fputs(text, stdout);
    } else {
        print_text(argv[optind], reply);
    }
    json_decref(reply);
    free(text);
    return rc;
}
