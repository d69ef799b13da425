/*
 * The client registry and each client's life: accept, hello (creating and
 * sealing its region and shared state), install requests, doorbells, and
 * removal when its process dies or it says goodbye. Clients live in a liburcu
 * lock-free hash table keyed by id; they are freed after an RCU grace period.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "platform.h"
#include "wire.h"

/* liburcu publishes a node with barriers in inline assembly, which
 * ThreadSanitizer cannot see: say what they do, in TSan builds only. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define published(c)  __tsan_release(c)
#define subscribed(c) __tsan_acquire(c)
#else
#define published(c)  ((void)(c))
#define subscribed(c) ((void)(c))
#endif

/* Messages handled per wakeup before others get their turn. */
#define MESSAGES_PER_EVENT 16

static unsigned long hash_id(uint32_t id)
{
    return (unsigned long)(id * 0x9e3779b97f4a7c15ull);
}

static int match_id(struct cds_lfht_node *node, const void *key)
{
    return caa_container_of(node, mm_host_client_t, node)->id == *(const uint32_t *)key;
}

int mm__registry_init(mm_server_t *s)
{
    s->registry = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    return s->registry ? 0 : -ENOMEM;
}

static void free_client(struct rcu_head *head)
{
    mm_host_client_t *c = caa_container_of(head, mm_host_client_t, rcu);
    free(c->reclaimed);
    mm__baseline_fini(c);
    free(c->paging_chunks);
    free(c);
}

void mm__registry_fini(mm_server_t *s)
{
    if (!s->registry)
        return;
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    rcu_read_lock();
    for_each_client(s, iter, c)
    {
        /* On shutdown the clients keep their memory: their mappings hold
         * it, and a later daemon takes them back (restart.c). What was in
         * flight is finished first (paged pages put back, frozen clients
         * thawed), so the record left behind is the whole truth. */
        cds_lfht_del(s->registry, &c->node);
        mm__paging_shutdown(s, c);
        (void)mm__state_save(s, c);
        if (c->sock >= 0) {
            /* Best effort: a client that misses it sees the hangup. */
            mm_msg_stopping_t m;
            mm__msg_init(&m.hdr, MM_MSG_STOPPING, sizeof m, 0);
            (void)mm__send_msg(c->sock, &m, sizeof m, NULL, 0);
        }
        if (c->shared)
            munmap(c->shared, c->shared_bytes);
        int fds[] = {c->region_fd, c->shared_fd,      c->sock,
                     c->pidfd,     c->bell_to_client, c->bell_to_host};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        call_rcu(&c->rcu, free_client);
    }
    rcu_read_unlock();
    rcu_barrier();
    cds_lfht_destroy(s->registry, NULL);
    s->registry = NULL;
}

void mm__registry_add(mm_server_t *s, mm_host_client_t *c)
{
    published(c);
    cds_lfht_add(s->registry, hash_id(c->id), &c->node);
    s->nclients++;
}

void mm__registry_del(mm_server_t *s, mm_host_client_t *c)
{
    cds_lfht_del(s->registry, &c->node);
    s->nclients--;
    call_rcu(&c->rcu, free_client);
}

mm_host_client_t *mm__client_find(mm_server_t *s, const char *key)
{
    char *end;
    unsigned long id = strtoul(key, &end, 10);
    struct cds_lfht_iter iter;
    mm_host_client_t *c;
    if (*key && *end == '\0' && id <= UINT32_MAX) {
        uint32_t k = (uint32_t)id;
        cds_lfht_lookup(s->registry, hash_id(k), match_id, &k, &iter);
        struct cds_lfht_node *node = cds_lfht_iter_get_node(&iter);
        c = node ? caa_container_of(node, mm_host_client_t, node) : NULL;
        if (c)
            subscribed(c);
        return c;
    }
    for_each_client(s, iter, c)
    {
        subscribed(c);
        if (strcmp(c->name, key) == 0)
            return c;
    }
    return NULL;
}

int mm__watch(mm_server_t *s, int fd, mm_watch_t *w, enum mm_watch_kind kind, mm_host_client_t *c)
{
    *w = (mm_watch_t){kind, c};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

void mm__unwatch(mm_server_t *s, int *fd)
{
    if (*fd < 0)
        return;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, *fd, NULL);
    close(*fd);
    *fd = -1;
}

int mm__client_accept(mm_server_t *s, int sock)
{
    mm_host_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->sock = sock;
    c->pidfd = c->region_fd = c->shared_fd = c->bell_to_client = c->bell_to_host = -1;
    c->client_bells[0] = c->client_bells[1] = -1;
    c->uffd = -1;
    int err = mm__peer_identity(sock, &c->pid, &c->uid, &c->gid, &c->pidfd);
    if (err < 0) {
        log_warn("refusing a client without a pidfd: %s", strerror(-err));
        free(c);
        return err;
    }
    c->id = s->next_id++;
    c->state = MM_CLIENT_CONNECTING;
    err = mm__watch(s, sock, &c->w_sock, MM_WATCH_CLIENT_SOCK, c);
    if (err == 0)
        err = mm__watch(s, c->pidfd, &c->w_pid, MM_WATCH_CLIENT_PID, c);
    if (err < 0) {
        c->sock = -1; /* the caller closes it */
        mm__unwatch(s, &c->pidfd);
        free(c);
        return err;
    }
    log_debug("client %u: connected, pid %d uid %u", c->id, (int)c->pid, (unsigned)c->uid);
    return 0;
}

void mm__send_error(mm_host_client_t *c, uint32_t seq, int status, const char *fmt, ...)
{
    mm_msg_error_t e = {0};
    mm__msg_init(&e.hdr, MM_MSG_ERROR, sizeof e, seq);
    e.status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.text, sizeof e.text, fmt, ap);
    va_end(ap);
    /* Best effort: a client that cannot take the reply is dropped anyway. */
    (void)mm__send_msg(c->sock, &e, sizeof e, NULL, 0);
}

void mm__close_client_bells(mm_host_client_t *c)
{
    for (int i = 0; i < 2; i++)
        if (c->client_bells[i] >= 0) {
            close(c->client_bells[i]);
            c->client_bells[i] = -1;
        }
}

void mm__client_remove(mm_server_t *s, mm_host_client_t *c, const char *why)
{
    if (c->state == MM_CLIENT_GONE)
        return;
    if (c->state == MM_CLIENT_RECOVERING) {
        mm__restart_client_died(s, c);
        return;
    }
    bool registered = c->state == MM_CLIENT_REGISTERED;
    log_info("client %u (%s, pid %d): removed: %s", c->id, c->name[0] ? c->name : "-", (int)c->pid,
             why);
    mm__unwatch(s, &c->sock);
    mm__unwatch(s, &c->pidfd);
    mm__unwatch(s, &c->bell_to_host);
    mm__paging_release(s, c);
    if (registered) {
        mm__state_forget(s, c->id);
        /* Its memory returns to the pool at once. */
        int err = mm__punch(c->region_fd, 0, c->region_bytes);
        if (err < 0)
            log_warn("client %u: punching its region: %s", c->id, strerror(-err));
    }
    if (c->shared)
        munmap(c->shared, c->shared_bytes);
    int fds[] = {c->region_fd, c->shared_fd, c->bell_to_client};
    for (size_t i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    mm__close_client_bells(c);
    c->state = MM_CLIENT_GONE;
    if (registered)
        mm__registry_del(s, c);
    else
        call_rcu(&c->rcu, free_client);
    if (registered)
        mm__policy_update(s);
}

/* Create the client's region and shared state, sealed, and map the state. */
static int create_memory(mm_host_client_t *c)
{
    char name[64];
    snprintf(name, sizeof name, "mm-region-%u", c->id);
    c->region_fd = mm__memfd_create_sealed(name, c->region_bytes);
    if (c->region_fd < 0)
        return c->region_fd;
    snprintf(name, sizeof name, "mm-shared-%u", c->id);
    c->shared_bytes = mm_shared_bytes(c->chunk_count);
    c->shared_fd = mm__memfd_create_sealed(name, c->shared_bytes);
    if (c->shared_fd < 0)
        return c->shared_fd;
    c->shared = mmap(NULL, c->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->shared_fd, 0);
    if (c->shared == MAP_FAILED) {
        c->shared = NULL;
        return -errno;
    }
    c->ctl = c->shared;
    struct stat rst, sst;
    if (fstat(c->region_fd, &rst) < 0 || fstat(c->shared_fd, &sst) < 0)
        return -errno;
    /* What a restarted daemon checks the fds the client brings back by. */
    c->region_dev = rst.st_dev;
    c->region_ino = rst.st_ino;
    c->shared_dev = sst.st_dev;
    c->shared_ino = sst.st_ino;
    mm__frames_format(c->shared, c->region_bytes, c->chunk_count);
    int err = mm__frames_view(&c->frames, c->shared, c->shared_bytes, c->region_bytes);
    if (err < 0)
        return err;
    /* Every chunk starts taken back: the client installs what it needs. */
    size_t words = (c->chunk_count + 63) / 64;
    c->reclaimed = calloc(words, sizeof *c->reclaimed);
    if (!c->reclaimed)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->chunk_count; i++)
        host_set_reclaimed(c, i, true);
    /* Each doorbell is a socketpair: the client gets its own end, so it
     * cannot make the daemon's end block (an eventfd shares one open file,
     * whose O_NONBLOCK the client could clear). */
    err = mm__doorbell_pair(&c->bell_to_client, &c->client_bells[0]);
    if (err == 0)
        err = mm__doorbell_pair(&c->bell_to_host, &c->client_bells[1]);
    return err;
}

/* The client's NUMA pool: the node it asked for, or the pool with the most
 * room left. */
static int choose_pool(mm_server_t *s, mm_host_client_t *c, int node)
{
    if (node >= 0) {
        c->pool = mm__numa_pool(&s->numa, node);
        c->numa_node = node;
        c->node_strict = true;
        return c->pool < 0 ? -EINVAL : 0;
    }
    int64_t best_room = INT64_MIN;
    for (int i = 0; i < s->numa.nnodes; i++) {
        int64_t room = (int64_t)mm__numa_pool_capacity(&s->numa, i, s->capacity_bytes) -
                       (int64_t)mm__pool_resident(s, i);
        if (room > best_room) {
            best_room = room;
            c->pool = i;
        }
    }
    c->node_strict = false;
    c->numa_node = s->numa.node_id[c->pool];
    return 0;
}

/* Bind the region to its pool's node. A preference that cannot be set only
 * costs locality; a node the client asked for must hold. */
static int bind_region(mm_server_t *s, mm_host_client_t *c)
{
    int err = mm__numa_bind(&s->numa, c->region_fd, c->region_bytes, c->numa_node, c->node_strict);
    if (err < 0 && !c->node_strict) {
        log_warn("client %u: cannot prefer node %d: %s", c->id, s->numa.node_id[c->pool],
                 strerror(-err));
        err = 0;
    }
    return err;
}

static int handle_hello(mm_server_t *s, mm_host_client_t *c, const mm_msg_hello_t *m)
{
    if (m->max_bytes % MM_CHUNK_SIZE) {
        mm__send_error(c, m->hdr.seq, -EINVAL, "max_bytes must be a multiple of 2 MiB");
        return -EINVAL;
    }
    memcpy(c->name, m->name, sizeof c->name);
    c->kind = m->kind;
    c->region_bytes = m->max_bytes;
    c->chunk_count = (uint32_t)(m->max_bytes / MM_CHUNK_SIZE);
    /* The client's reservation and weight are requests, capped by what the
     * admin lets clients ask for; mmctl set overrides both. */
    c->max_bytes = m->max_bytes;
    c->min_bytes =
        m->min_bytes < s->cfg.max_client_min_bytes ? m->min_bytes : s->cfg.max_client_min_bytes;
    c->weight = m->weight < s->cfg.max_client_weight ? m->weight : s->cfg.max_client_weight;
    int err = choose_pool(s, c, m->numa_node);
    if (err < 0) {
        mm__send_error(c, m->hdr.seq, err, "no NUMA node %d with memory here", m->numa_node);
        return err;
    }
    err = create_memory(c);
    if (err == 0)
        err = mm__baseline_init(c, (m->flags & MM_HELLO_DRIVER_MASK) >> MM_HELLO_DRIVER_SHIFT);
    if (err == 0)
        err = bind_region(s, c);
    if (err < 0) {
        log_warn("client %u: cannot create its memory: %s", c->id, strerror(-err));
        mm__send_error(c, m->hdr.seq, err, "cannot create the region: %s", strerror(-err));
        return err;
    }
    mm_msg_hello_reply_t r = {0};
    mm__msg_init(&r.hdr, MM_MSG_HELLO_REPLY, sizeof r, m->hdr.seq);
    r.client_id = c->id;
    r.region_bytes = c->region_bytes;
    r.shared_bytes = c->shared_bytes;
    r.chunk_count = c->chunk_count;
    int fds[MM_FD_COUNT] = {c->region_fd, c->shared_fd, c->client_bells[0], c->client_bells[1]};
    err = mm__send_msg(c->sock, &r, sizeof r, fds, MM_FD_COUNT);
    mm__close_client_bells(c); /* the client holds them now */
    if (err == 0)
        err = mm__client_publish(s, c);
    if (err < 0)
        return err;
    log_info("client %u (%s, pid %d): registered, region %llu MiB, driver %s", c->id, c->name,
             (int)c->pid, (unsigned long long)(c->region_bytes >> 20), mm__driver_name(c->driver));
    mm__policy_update(s);
    return 0;
}

int mm__client_publish(mm_server_t *s, mm_host_client_t *c)
{
    int err = mm__watch(s, c->bell_to_host, &c->w_bell, MM_WATCH_CLIENT_BELL, c);
    if (err < 0)
        return err;
    c->start_time = mm__process_start_time(c->pid);
    c->state = MM_CLIENT_REGISTERED;
    mm__registry_add(s, c);
    /* A client without a record would be lost to a restarted daemon. */
    if (mm__state_save(s, c) < 0)
        log_warn("client %u (%s): not recoverable after a daemon restart", c->id, c->name);
    return 0;
}

static int handle_install(mm_server_t *s, mm_host_client_t *c, const mm_msg_install_t *m)
{
    if (m->slot > MM_RESERVER_SLOTS) {
        mm__send_error(c, m->hdr.seq, -EINVAL, "reservation slot %u out of range", m->slot);
        return 0;
    }
    for (uint32_t i = 0; i < m->count; i++) {
        if (m->chunks[i] >= c->chunk_count) {
            mm__send_error(c, m->hdr.seq, -EINVAL, "chunk %u outside the region", m->chunks[i]);
            return 0;
        }
    }
    mm_msg_install_reply_t r;
    int n = mm__install(s, c, m->slot, m->chunks, m->count, r.chunks);
    r.status = n < 0 ? n : 0;
    r.count = n < 0 ? 0 : (uint32_t)n;
    mm__msg_init(&r.hdr, MM_MSG_INSTALL_REPLY, mm__msg_install_length(r.count), m->hdr.seq);
    return mm__send_msg(c->sock, &r, r.hdr.length, NULL, 0);
}

/* Handle one checked message. Returns < 0 to drop the client. */
static int handle_message(mm_server_t *s, mm_host_client_t *c, const void *buf, int type)
{
    const mm_msg_hdr_t *hdr = buf;
    switch (type) {
    case MM_MSG_HELLO:
        if (c->state != MM_CLIENT_CONNECTING)
            break;
        return handle_hello(s, c, buf);
    case MM_MSG_INSTALL:
        if (c->state != MM_CLIENT_REGISTERED)
            break;
        return handle_install(s, c, buf);
    case MM_MSG_BYE:
        mm__client_remove(s, c, "said goodbye");
        return 0;
    case MM_MSG_BALLOON_INFLATE:
    case MM_MSG_BALLOON_DEFLATE:
    case MM_MSG_FPR_REPORT:
    case MM_MSG_VMEM_PLUG:
    case MM_MSG_VMEM_UNPLUG:
        if (c->state != MM_CLIENT_REGISTERED)
            break;
        return mm__baseline_message(s, c, buf, type);
    default:
        break;
    }
    mm__send_error(c, hdr->seq, -EPROTO, "unexpected %s message", mm__msg_type_name(hdr->type));
    return -EPROTO;
}

/* The socket closed. A registered client lives on until its pidfd says it
 * died: its memory is in use by its mappings. */
static void on_hangup(mm_server_t *s, mm_host_client_t *c)
{
    if (c->state != MM_CLIENT_REGISTERED) {
        mm__client_remove(s, c, "closed before hello");
        return;
    }
    log_info("client %u (%s): socket closed; kept until its process exits", c->id, c->name);
    mm__unwatch(s, &c->sock);
}

static void reject(mm_server_t *s, mm_host_client_t *c, const void *buf, size_t len, int err)
{
    const mm_msg_hdr_t *hdr = buf;
    if (err == -EPROTONOSUPPORT)
        mm__send_error(c, hdr->seq, err, "mmsrv speaks protocol version %u; the client sent %u",
                       MM_PROTO_VERSION, hdr->version);
    else
        mm__send_error(c, len >= sizeof *hdr ? hdr->seq : 0, err, "malformed message: %s",
                       strerror(-err));
    char why[96];
    snprintf(why, sizeof why, "bad message (%s)", strerror(-err));
    mm__client_remove(s, c, why);
}

/* A paging offer: kept if the fd is a userfaultfd; a refused one only means
 * the client is frozen rather than paged if it ever misses a deadline. */
static void on_paging_offer(mm_server_t *s, mm_host_client_t *c, const mm_msg_paging_t *m, int fd)
{
    int err =
        c->state == MM_CLIENT_REGISTERED ? mm__paging_offer(s, c, fd, m->region_addr) : -EPROTO;
    if (err < 0) {
        log_warn("client %u (%s): paging offer refused: %s", c->id, c->name, strerror(-err));
        close(fd);
    }
}

void mm__client_on_message(mm_server_t *s, mm_host_client_t *c)
{
    union {
        mm_msg_hdr_t hdr;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    for (int i = 0; i < MESSAGES_PER_EVENT && c->state != MM_CLIENT_GONE && c->sock >= 0; i++) {
        int fds[3], nfds = 0;
        /* A paging offer carries one fd, a reconnect two or three; a
         * message with others is refused and its fds closed. */
        ssize_t n = mm__recv_msg(c->sock, u.buf, sizeof u.buf, fds, 3, &nfds);
        if (n == -EAGAIN)
            return;
        if (n == 0 || n == -ECONNRESET) {
            for (int k = 0; n == 0 && k < nfds; k++)
                close(fds[k]);
            on_hangup(s, c);
            return;
        }
        if (n < 0) {
            memset(&u.hdr, 0, sizeof u.hdr);
            reject(s, c, u.buf, 0, (int)n);
            return;
        }
        int type = mm__msg_check(u.buf, (size_t)n);
        int want = type == MM_MSG_PAGING ? 1
                   : type == MM_MSG_RECONNECT
                       ? 2 + (int)(((const mm_msg_reconnect_t *)u.buf)->flags & MM_RECONNECT_UFFD)
                       : 0;
        if (type >= 0 && nfds != want)
            type = -EBADMSG; /* an fd where none belongs, or none where one does */
        if (type < 0) {
            for (int k = 0; k < nfds; k++)
                close(fds[k]);
            reject(s, c, u.buf, (size_t)n, type);
            return;
        }
        if (type == MM_MSG_RECONNECT) {
            if (c->state != MM_CLIENT_CONNECTING) {
                for (int k = 0; k < nfds; k++)
                    close(fds[k]);
                reject(s, c, u.buf, (size_t)n, -EPROTO);
                return;
            }
            if (mm__restart_reconnect(s, c, (const mm_msg_reconnect_t *)u.buf, fds, nfds) < 0) {
                mm__client_remove(s, c, "reconnect refused");
                return;
            }
            continue;
        }
        if (type == MM_MSG_PAGING) {
            on_paging_offer(s, c, (const mm_msg_paging_t *)u.buf, fds[0]);
            continue;
        }
        if (handle_message(s, c, u.buf, type) < 0) {
            mm__client_remove(s, c, "request failed");
            return;
        }
    }
}

void mm__client_on_bell(mm_server_t *s, mm_host_client_t *c)
{
    if (c->state != MM_CLIENT_REGISTERED)
        return;
    /* A client ringing non-stop costs one read and one compare per ring. */
    (void)mm__doorbell_drain(c->bell_to_host);
    if (!c->revoke_pending && !c->revoke_missed)
        return;
    uint64_t acked = atomic_load_explicit(&c->ctl->ack_seq, memory_order_acquire);
    if (acked != c->revoke_seq)
        return;
    /* The client's word is only a claim: what counts is what st_blocks
     * dropped by since the request, capped at the claim and at what was
     * asked. A late answer still counts. An answer that gave nothing marks
     * the client as having nothing until its holding changes, so that a
     * client claiming much and giving nothing is not asked again at once. */
    uint64_t claimed = atomic_load_explicit(&c->ctl->ack_bytes, memory_order_relaxed);
    /* What it freed for this request may still be resident: take its free
     * chunks first, as much as it claims to have given. */
    (void)mm__reclaim_own(s, c, claimed < c->revoke_bytes ? claimed : c->revoke_bytes);
    mm__refresh_resident(c);
    uint64_t dropped = c->revoke_resident_at_post > c->resident_bytes
                           ? c->revoke_resident_at_post - c->resident_bytes
                           : 0;
    uint64_t given = claimed < dropped ? claimed : dropped;
    if (given > c->revoke_bytes)
        given = c->revoke_bytes;
    c->revoke_pending = false;
    c->revoke_missed = false;
    c->revoke_empty = given == 0;
    c->revoked_bytes_total += given;
    c->last_answer_ns = mm__now_ns() - c->revoke_posted_ns;
    mm__ladder_observe(&s->ladder, MM_STEP_REVOCATION, c->last_answer_ns, given);
    log_debug("client %u: revocation %llu answered, %llu bytes given", c->id,
              (unsigned long long)acked, (unsigned long long)given);
    if (given > 0)
        mm__reclaim(s);
}
