/*
 * The baseline drivers' common part: one thread per guest that runs the
 * driver's step() when the host rings (a changed target, as the device's
 * config-change interrupt), when the guest kicks it (a free, for free page
 * reporting) or when the wait step() asked for has passed; and the timed
 * request to the host that every driver uses.
 *
 * Locks: drv.lock is a leaf (nothing else is taken under it); step() runs
 * without it.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "client_internal.h"
#include "internal.h"
#include "platform.h"

static void on_bell(void *arg)
{
    mm__driver_kick(arg);
}

void mm__driver_kick(mm_guest_t *g)
{
    pthread_mutex_lock(&g->drv.lock);
    g->drv.kicked = true;
    pthread_cond_signal(&g->drv.wake);
    pthread_mutex_unlock(&g->drv.lock);
}

static void *driver_main(void *arg)
{
    mm_guest_t *g = arg;
    int64_t wait_ns = 0; /* look at the target once at start */
    for (;;) {
        pthread_mutex_lock(&g->drv.lock);
        if (wait_ns != 0 && !g->drv.kicked && !g->drv.stop) {
            if (wait_ns < 0) {
                pthread_cond_wait(&g->drv.wake, &g->drv.lock);
            } else {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t until =
                    (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + (uint64_t)wait_ns;
                ts.tv_sec = (time_t)(until / 1000000000ull);
                ts.tv_nsec = (long)(until % 1000000000ull);
                (void)pthread_cond_timedwait(&g->drv.wake, &g->drv.lock, &ts);
            }
        }
        bool stop = g->drv.stop;
        g->drv.kicked = false;
        pthread_mutex_unlock(&g->drv.lock);
        if (stop)
            return NULL;
        wait_ns = g->drv.ops->step(g);
    }
}

void mm__driver_init(mm_guest_t *g)
{
    pthread_mutex_init(&g->drv.lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->drv.wake, &ca);
    pthread_condattr_destroy(&ca);
}

void mm__driver_fini(mm_guest_t *g)
{
    pthread_cond_destroy(&g->drv.wake);
    pthread_mutex_destroy(&g->drv.lock);
}

int mm__driver_start(mm_guest_t *g)
{
    static const guest_driver_ops_t *const by_driver[] = {
        [MM_GUEST_DRIVER_BALLOON] = &mm__balloon_ops,
        [MM_GUEST_DRIVER_FPR] = &mm__fpr_ops,
        [MM_GUEST_DRIVER_VIRTIO_MEM] = &mm__vmem_ops,
    };
    if (g->opts.driver == MM_GUEST_DRIVER_MM)
        return 0;
    g->drv.ops = by_driver[g->opts.driver];
    int err = g->drv.ops->init(g);
    if (err < 0)
        return err;
    err = -pthread_create(&g->drv.thread, NULL, driver_main, g);
    if (err < 0) {
        g->drv.ops->fini(g);
        return err;
    }
    atomic_store_explicit(&g->drv.running, true, memory_order_release);
    mm__client_on_bell(g->client, on_bell, g);
    return 0;
}

void mm__driver_stop(mm_guest_t *g)
{
    if (atomic_load_explicit(&g->drv.running, memory_order_acquire)) {
        mm__client_on_bell(g->client, NULL, NULL);
        pthread_mutex_lock(&g->drv.lock);
        g->drv.stop = true;
        pthread_cond_signal(&g->drv.wake);
        pthread_mutex_unlock(&g->drv.lock);
        pthread_join(g->drv.thread, NULL);
        atomic_store_explicit(&g->drv.running, false, memory_order_release);
        g->drv.ops->fini(g);
    }
}

int64_t mm__driver_target(mm_guest_t *g)
{
    mm_client_stats_t st;
    int err = mm_client_stats(g->client, &st);
    if (err < 0)
        return err;
    return (int64_t)(st.target_bytes && st.target_bytes < g->opts.ram_bytes ? st.target_bytes
                                                                            : g->opts.ram_bytes);
}

int mm__driver_call(mm_guest_t *g, mm_msg_hdr_t *req, uint64_t *done)
{
    union {
        mm_msg_baseline_reply_t r;
        uint8_t buf[MM_MSG_MAX_BYTES];
    } u;
    uint64_t t0 = mm__now_ns();
    int err = mm__client_call(g->client, req, &u, MM_MSG_BASELINE_REPLY);
    guest_count(&g->driver_msg_ns, (int64_t)(mm__now_ns() - t0));
    guest_count(&g->driver_requests, 1);
    if (err == 0 && u.r.status < 0)
        err = u.r.status;
    if (done)
        *done = err == 0 ? u.r.done : 0;
    return err;
}
