/*
 * The admin socket: the management plane's end in the daemon. A connection
 * carries one request line ("status", "clients", "capacity SIZE") and gets
 * one JSON object back, after which the daemon closes it. Only root, the
 * daemon's own user and members of --admin-group are served; the check uses
 * the kernel's SO_PEERCRED, never anything the peer says.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mm/mm.h>

#include "daemon.h"
#include "log.h"
#include "platform.h"

#define REQUEST_MAX 1024

typedef struct admin_conn {
    mm_watch_t w; /* first: the watch is the connection */
    int fd;
    char in[REQUEST_MAX];
    size_t in_len;
    char *out;
    size_t out_len, out_off;
} admin_conn_t;

static const char *kind_name(uint32_t kind)
{
    return kind == MM_KIND_GUEST ? "guest" : "runtime";
}

static json_t *client_entry(const mm_host_client_t *c)
{
    mm_client_usage_t u;
    mm__client_usage(c, &u);
    json_t *o = json_pack(
        "{s:I, s:s, s:i, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
        " s:I, s:I, s:I, s:b, s:b, s:I, s:I, s:I}",
        "id", (json_int_t)c->id, "name", c->name, "pid", (int)c->pid, "kind", kind_name(c->kind),
        "driver", mm__driver_name(c->driver), "min_bytes", (json_int_t)c->min_bytes, "max_bytes",
        (json_int_t)c->max_bytes, "weight", (json_int_t)c->weight, "region_bytes",
        (json_int_t)c->region_bytes, "target_bytes", (json_int_t)c->target_bytes, "granted_bytes",
        (json_int_t)((uint64_t)c->granted_chunks * MM_CHUNK_SIZE), "owned_bytes",
        (json_int_t)u.owned_bytes, "resident_bytes", (json_int_t)c->resident_bytes, "free_bytes",
        (json_int_t)u.free_bytes, "missed_deadlines", (json_int_t)c->missed_deadlines,
        "reclaimed_bytes", (json_int_t)c->reclaimed_bytes_total, "touched_reclaimed",
        (json_int_t)c->touched_reclaimed, "revoked_bytes", (json_int_t)c->revoked_bytes_total,
        "connected", c->sock >= 0, "target_pinned", c->pinned, "idle_bytes",
        (json_int_t)c->idle_bytes, "discardable_bytes", (json_int_t)u.discardable_bytes,
        "discarded_bytes", (json_int_t)c->discarded_bytes_total);
    if (!o)
        return NULL;
    json_object_set_new(o, "node", json_integer(c->numa_node));
    if (c->driver == MM_DRIVER_BALLOON)
        json_object_set_new(o, "balloon_bytes",
                            json_integer((json_int_t)(c->balloon_frames * MM_FRAME_SIZE)));
    if (c->driver == MM_DRIVER_VIRTIO_MEM)
        json_object_set_new(
            o, "plugged_bytes",
            json_integer((json_int_t)(c->region_bytes - c->unplugged_chunks * MM_CHUNK_SIZE)));
    if (mm__is_baseline(c)) {
        json_object_set_new(o, "driver_requests", json_integer((json_int_t)c->baseline_messages));
        json_object_set_new(o, "driver_discarded_bytes",
                            json_integer((json_int_t)c->baseline_discarded_bytes));
        json_object_set_new(o, "driver_discards", json_integer((json_int_t)c->baseline_discards));
        json_object_set_new(o, "driver_discard_ns",
                            json_integer((json_int_t)c->baseline_discard_ns));
    }
    /* Host paging: what is in swap now, what was paged out ever, and
     * whether the client offered a userfaultfd at all. */
    json_object_set_new(o, "paged_bytes", json_integer((json_int_t)mm__paging_paged_bytes(c)));
    json_object_set_new(o, "paged_out_bytes", json_integer((json_int_t)c->paged_out_total));
    json_object_set_new(o, "host_paging", json_boolean(c->uffd >= 0));
    json_object_set_new(o, "frozen", json_boolean(c->frozen));
    json_object_set_new(o, "freezes", json_integer((json_int_t)c->freezes));
    json_object_set_new(o, "early_thaws", json_integer((json_int_t)c->early_thaws));
    json_object_set_new(o, "last_answer_ms", json_real((double)c->last_answer_ns / 1e6));
    /* The runtime's own report (untrusted: shown, and garbage only ever
     * counts against its own share). */
    const mm_control_t *ctl = c->ctl;
    json_object_set_new(
        o, "live_bytes",
        json_integer((json_int_t)atomic_load_explicit(&ctl->live_bytes, memory_order_relaxed)));
    json_object_set_new(
        o, "heap_bytes",
        json_integer((json_int_t)atomic_load_explicit(&ctl->heap_bytes, memory_order_relaxed)));
    json_object_set_new(
        o, "garbage_bytes",
        json_integer((json_int_t)atomic_load_explicit(&ctl->garbage_bytes, memory_order_relaxed)));
    json_object_set_new(o, "cost_ns_per_mib",
                        json_integer((json_int_t)atomic_load_explicit(&ctl->cost_ns_per_mib,
                                                                      memory_order_relaxed)));
    return o;
}

static json_t *clients_json(mm_server_t *s)
{
    json_t *list = json_array();
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    for_each_client(s, iter, c)
    {
        mm__refresh_resident(c);
        json_array_append_new(list, client_entry(c));
    }
    return list;
}

static json_t *nodes_json(mm_server_t *s)
{
    json_t *nodes = json_array();
    for (int i = 0; i < s->numa.nnodes; i++)
        json_array_append_new(
            nodes, json_pack("{s:i, s:I, s:I, s:I}", "node", s->numa.node_id[i], "capacity_bytes",
                             (json_int_t)mm__numa_pool_capacity(&s->numa, i, s->capacity_bytes),
                             "granted_bytes", (json_int_t)mm__pool_granted(s, i), "resident_bytes",
                             (json_int_t)mm__pool_resident(s, i)));
    return nodes;
}

static json_t *status_json(mm_server_t *s)
{
    json_t *clients = clients_json(s); /* refreshes residency first */
    json_t *nodes = nodes_json(s);
    /* Clients of an earlier daemon still to reconnect: their granted bytes
     * are in the totals (counted as held) until they do or are forgotten. */
    return json_pack("{s:I, s:o, s:I, s:I, s:I, s:I, s:o, s:o*}", "capacity_bytes",
                     (json_int_t)s->capacity_bytes, "nodes", nodes, "granted_bytes",
                     (json_int_t)mm__total_granted(s), "resident_bytes",
                     (json_int_t)mm__total_resident(s), "client_count", (json_int_t)s->nclients,
                     "recovering_clients", (json_int_t)s->nrecovering, "clients", clients, "ladder",
                     mm__ladder_json(&s->ladder));
}

static json_t *error_json(const char *fmt, const char *arg)
{
    char text[256];
    snprintf(text, sizeof text, fmt, arg);
    return json_pack("{s:s}", "error", text);
}

static json_t *do_capacity(mm_server_t *s, const char *arg)
{
    uint64_t bytes;
    if (!arg || mm_parse_size(arg, &bytes) < 0)
        return error_json("capacity needs a size like 512M, not '%s'", arg ? arg : "");
    if (bytes < MM_CHUNK_SIZE)
        return error_json("capacity %s is below one 2 MiB chunk", arg);
    uint64_t t0 = mm__now_ns();
    s->capacity_bytes = bytes;
    uint64_t taken = mm__reclaim(s);
    uint64_t ns = mm__now_ns() - t0;
    log_info("capacity set to %llu MiB: reclaimed %llu MiB in %.1f ms",
             (unsigned long long)(bytes >> 20), (unsigned long long)(taken >> 20),
             (double)ns / 1e6);
    return json_pack("{s:I, s:I, s:I, s:I, s:f}", "capacity_bytes", (json_int_t)bytes,
                     "reclaimed_bytes", (json_int_t)taken, "granted_bytes",
                     (json_int_t)mm__total_granted(s), "resident_bytes",
                     (json_int_t)mm__total_resident(s), "reclaim_ms", (double)ns / 1e6);
}

/* One key=value of `set`, checked against the client before anything is
 * changed. */
typedef struct settings {
    bool has_min, has_max, has_weight, has_target, target_auto;
    uint64_t min, max, target;
    uint32_t weight;
} settings_t;

static json_t *parse_setting(const mm_host_client_t *c, char *kv, settings_t *st)
{
    char *eq = strchr(kv, '=');
    if (!eq)
        return error_json("expected key=value, not '%s'", kv);
    *eq = '\0';
    const char *key = kv, *val = eq + 1;
    if (strcmp(key, "weight") == 0) {
        char *end;
        unsigned long w = strtoul(val, &end, 10);
        if (*val < '1' || *val > '9' || *end || w > 10000)
            return error_json("weight must be 1 to 10000, not '%s'", val);
        st->has_weight = true;
        st->weight = (uint32_t)w;
        return NULL;
    }
    if (strcmp(key, "target") == 0 && strcmp(val, "auto") == 0) {
        st->has_target = st->target_auto = true;
        return NULL;
    }
    uint64_t bytes;
    if (mm_parse_size(val, &bytes) < 0)
        return error_json("%s needs a size like 512M", key);
    if (strcmp(key, "min") == 0) {
        st->has_min = true;
        st->min = bytes;
    } else if (strcmp(key, "max") == 0) {
        if (bytes > c->region_bytes) {
            char text[160];
            snprintf(text, sizeof text, "max=%s is above the client's region of %llu MiB", val,
                     (unsigned long long)(c->region_bytes >> 20));
            return error_json("%s", text);
        }
        st->has_max = true;
        st->max = bytes;
    } else if (strcmp(key, "target") == 0) {
        st->has_target = true;
        st->target = bytes;
    } else {
        return error_json("unknown setting '%s' (min, max, weight, target)", key);
    }
    return NULL;
}

static json_t *do_set(mm_server_t *s, char *who, char **save)
{
    mm_host_client_t *c = who ? mm__client_find(s, who) : NULL;
    if (!c)
        return error_json("no client '%s'", who ? who : "");
    settings_t st = {0};
    int n = 0;
    for (char *kv; (kv = strtok_r(NULL, " \t", save)); n++) {
        json_t *err = parse_setting(c, kv, &st);
        if (err)
            return err;
    }
    if (n == 0)
        return error_json("set needs min=, max=, weight= or target=%s", "");
    uint64_t min = st.has_min ? st.min : c->min_bytes, max = st.has_max ? st.max : c->max_bytes;
    if (min > max)
        return error_json("min is above max%s", "");
    if (st.has_target && mm__is_baseline(c))
        return error_json("client '%s' runs a baseline driver: its target is set with balloon "
                          "or virtio-mem",
                          c->name);
    c->min_bytes = min;
    c->max_bytes = max;
    if (st.has_weight)
        c->weight = st.weight;
    if (st.has_target) {
        c->pinned = !st.target_auto;
        c->pinned_bytes = st.target_auto ? 0 : st.target;
    }
    (void)mm__state_save(s, c); /* a restarted daemon keeps the admin's word */
    log_info("client %u (%s): set min %llu MiB, max %llu MiB, weight %u, target %s", c->id, c->name,
             (unsigned long long)(min >> 20), (unsigned long long)(max >> 20), c->weight,
             c->pinned ? "pinned" : "auto");
    mm__reclaim(s); /* new targets, and memory back from whoever is above */
    return client_entry(c);
}

static json_t *do_reclaim(mm_server_t *s, const char *who, const char *size)
{
    mm_host_client_t *c = who ? mm__client_find(s, who) : NULL;
    uint64_t bytes, taken, asked;
    if (!c)
        return error_json("no client '%s'", who ? who : "");
    if (!size || mm_parse_size(size, &bytes) < 0 || bytes == 0)
        return error_json("reclaim needs a size like 64M, not '%s'", size ? size : "");
    if (mm__is_baseline(c))
        return error_json("client '%s' runs a baseline driver: use balloon or virtio-mem", c->name);
    mm__reclaim_from(s, c, bytes, &taken, &asked);
    return json_pack("{s:I, s:s, s:I, s:I, s:I}", "id", (json_int_t)c->id, "name", c->name,
                     "taken_bytes", (json_int_t)taken, "asked_bytes", (json_int_t)asked,
                     "granted_bytes", (json_int_t)((uint64_t)c->granted_chunks * MM_CHUNK_SIZE));
}

/* "balloon CLIENT SIZE" (the memory the guest keeps, as QEMU's monitor
 * command) and "virtio-mem CLIENT SIZE" (the requested size). */
static json_t *do_driver_target(mm_server_t *s, uint32_t driver, const char *who, const char *size)
{
    mm_host_client_t *c = who ? mm__client_find(s, who) : NULL;
    uint64_t bytes;
    char why[160];
    if (!c)
        return error_json("no client '%s'", who ? who : "");
    if (!size || mm_parse_size(size, &bytes) < 0 || bytes == 0)
        return error_json("%s needs a size like 512M", mm__driver_name(driver));
    if (mm__baseline_set_target(s, c, driver, bytes, why, sizeof why) < 0)
        return error_json("%s", why);
    return client_entry(c);
}

static json_t *execute(mm_server_t *s, char *line)
{
    char *save = NULL;
    char *cmd = strtok_r(line, " \t", &save);
    char *arg = strtok_r(NULL, " \t", &save);
    if (!cmd)
        return error_json("empty request%s", "");
    if (strcmp(cmd, "status") == 0)
        return status_json(s);
    if (strcmp(cmd, "clients") == 0)
        return json_pack("{s:o}", "clients", clients_json(s));
    if (strcmp(cmd, "capacity") == 0)
        return do_capacity(s, arg);
    if (strcmp(cmd, "set") == 0)
        return do_set(s, arg, &save);
    if (strcmp(cmd, "reclaim") == 0)
        return do_reclaim(s, arg, strtok_r(NULL, " \t", &save));
    if (strcmp(cmd, "balloon") == 0)
        return do_driver_target(s, MM_DRIVER_BALLOON, arg, strtok_r(NULL, " \t", &save));
    if (strcmp(cmd, "virtio-mem") == 0)
        return do_driver_target(s, MM_DRIVER_VIRTIO_MEM, arg, strtok_r(NULL, " \t", &save));
    return error_json("unknown request '%s'", cmd);
}

/* Is gid among pid's groups? Read from /proc: the kernel's own record. */
static bool in_group(pid_t pid, gid_t primary, gid_t gid)
{
    if (primary == gid)
        return true;
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    bool found = false;
    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "Groups:", 7) != 0)
            continue;
        char *save = NULL;
        for (char *t = strtok_r(line + 7, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save))
            if ((gid_t)strtoul(t, NULL, 10) == gid)
                found = true;
    }
    fclose(f);
    return found;
}

static bool privileged(mm_server_t *s, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    if (cred.uid == 0 || cred.uid == geteuid())
        return true;
    return s->cfg.has_admin_group && in_group(cred.pid, cred.gid, s->cfg.admin_gid);
}

static void conn_close(mm_server_t *s, admin_conn_t *a)
{
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, a->fd, NULL);
    close(a->fd);
    free(a->out);
    free(a);
}

/* Queue reply (taking it) and switch the connection to writing. */
static void conn_reply(mm_server_t *s, admin_conn_t *a, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    if (!text) {
        conn_close(s, a);
        return;
    }
    a->out_len = strlen(text) + 1;
    char *grown = realloc(text, a->out_len + 1);
    if (!grown) {
        free(text);
        conn_close(s, a);
        return;
    }
    a->out = grown;
    a->out[a->out_len - 1] = '\n';
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = &a->w};
    epoll_ctl(s->epfd, EPOLL_CTL_MOD, a->fd, &ev);
}

int mm__admin_accept(mm_server_t *s)
{
    for (;;) {
        int fd = accept4(s->admin_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return errno == EAGAIN ? 0 : -errno;
        admin_conn_t *a = calloc(1, sizeof *a);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = a};
        if (!a || epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            free(a);
            close(fd);
            continue;
        }
        a->w = (mm_watch_t){MM_WATCH_ADMIN_CONN, a};
        a->fd = fd;
        if (!privileged(s, fd)) {
            log_warn("admin: refused an unprivileged peer");
            conn_reply(s, a,
                       error_json("permission denied: the admin socket is for root%s",
                                  s->cfg.has_admin_group ? " and the admin group" : ""));
        }
    }
}

static void on_readable(mm_server_t *s, admin_conn_t *a)
{
    ssize_t n = read(a->fd, a->in + a->in_len, sizeof a->in - 1 - a->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(s, a);
        return;
    }
    a->in_len += (size_t)n;
    a->in[a->in_len] = '\0';
    char *nl = strchr(a->in, '\n');
    if (!nl) {
        if (a->in_len == sizeof a->in - 1)
            conn_reply(s, a, error_json("request longer than %s bytes", "1023"));
        return;
    }
    *nl = '\0';
    conn_reply(s, a, execute(s, a->in));
}

static void on_writable(mm_server_t *s, admin_conn_t *a)
{
    while (a->out_off < a->out_len) {
        ssize_t n = send(a->fd, a->out + a->out_off, a->out_len - a->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            break;
        }
        a->out_off += (size_t)n;
    }
    conn_close(s, a);
}

void mm__admin_on_event(mm_server_t *s, mm_watch_t *w, uint32_t events)
{
    admin_conn_t *a = w->owner;
    if (a->out)
        on_writable(s, a);
    else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(s, a);
}
