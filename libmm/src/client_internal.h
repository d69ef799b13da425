/*
 * Calls of client.c that only the guest model's baseline drivers use: they
 * speak their own requests to the host (balloon page numbers, free page
 * reports, virtio-mem plug requests) and wake when the host rings.
 */
#ifndef MM_CLIENT_INTERNAL_H
#define MM_CLIENT_INTERNAL_H

#include <stdint.h>

#include <mm/mm.h>

#include "frames.h"

/*
 * Send req (its header's type and length filled; seq is set here) and wait
 * for the reply of type want, into reply (MM_MSG_MAX_BYTES). An error
 * message from the host becomes its negative status. Thread-safe: requests
 * on one client are serialised.
 */
int mm__client_call(mm_client_t *c, mm_msg_hdr_t *req, void *reply, uint16_t want);

/*
 * Call fn(arg) each time the host rings the client's doorbell (a new target,
 * another pressure level, a revocation), after any revocation was answered.
 * Runs on the library's thread (or in mm_client_dispatch); fn must not call
 * mm_client_dispatch. NULL removes the hook.
 */
void mm__client_on_bell(mm_client_t *c, void (*fn)(void *arg), void *arg);

/* Ask the host to install one reclaimed chunk, unreserved (a driver that
 * takes that very chunk next). 0, or the install's error. */
int mm__client_install(mm_client_t *c, uint32_t chunk);

/* The client's view of its frame allocator (frames.h), for drivers that
 * take given frames or chunks. Valid while the client is open. */
mm_frames_t *mm__client_frames(mm_client_t *c);

#endif /* MM_CLIENT_INTERNAL_H */
