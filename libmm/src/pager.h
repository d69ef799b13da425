/*
 * The paging engine: user-space paging of shared-memory pages through one
 * userfaultfd and a checksummed swap store on disk (swapstore.h). The same
 * code serves a guest's own swap device and, later, the daemon's host
 * paging: whoever pages a page out owns a *route* (an address range and a
 * function) and the faults in that range come back to it.
 *
 * The owner's memory is seen two ways: as addresses in the address space the
 * userfaultfd belongs to (the owner's, which may be another process when the
 * fd was passed over a socket), and as bytes of the memfd behind them
 * (pread, fallocate). A page-out write-protects its pages first (userfaultfd
 * write-protect on shmem), copies them with pread, stores them, makes the
 * swap index durable, and only then lets the caller drop them (punch them,
 * or remap the addresses): a writer that arrives in between waits and never
 * writes into a copy already taken. A fill puts stored pages back with
 * UFFDIO_COPY, which maps them and wakes the faulting thread in one call.
 *
 * Faults: a full userfaultfd (kernel accesses fault too; user-mode-only
 * would turn a read() into an unmapped page into EFAULT), read by
 * mm__pager_dispatch() on the pager's own thread or on the caller's loop.
 * Write-protect faults are the engine's own business (a writer waiting for a
 * page-out); missing faults go to the route that covers the address. A route
 * that cannot bring a page back (its copy failed its checksum) poisons it:
 * the toucher gets SIGBUS, as on a machine-check, rather than wrong data.
 *
 * The pager neither owns the userfaultfd nor the swap store: the client keeps
 * its own reference to the fd, so that registrations outlive whoever paged.
 * Thread safety: every call may be made from any thread, except
 * mm__pager_destroy(). Route functions run on the dispatching thread with no
 * pager lock held; they may call every function here except destroy.
 */
#ifndef MM_PAGER_H
#define MM_PAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "swapstore.h"

typedef struct mm_pager mm_pager_t;

/* Open a full userfaultfd (non-blocking, close-on-exec) with the features
 * the engine needs (missing and write-protect faults on shmem, thread ids).
 * Returns the fd. -EPERM: only user-mode faults are allowed to this process
 * (it needs root, CAP_SYS_PTRACE or access to /dev/userfaultfd); -ENOTSUP:
 * the kernel lacks a feature. */
int mm__uffd_open(void);

/*
 * A route's answer to a missing page at addr (page-aligned; write: the
 * access was a write). It must resolve the fault — mm__pager_fill(),
 * mm__pager_zero(), or its own remap followed by mm__pager_wake() — and
 * return 0, or return a negative errno, after which the pager poisons the
 * page (the toucher gets SIGBUS) and counts a failed fault.
 */
typedef int (*mm_pager_missing_fn)(void *arg, uintptr_t addr, bool write);

/* A page-out's drop step for one run it stored (addr/len in the owner's
 * space, off in the memfd): punch it, or remap it. Runs with the run still
 * write-protected; an error keeps the pages where they are. */
typedef int (*mm_pager_drop_fn)(void *ctx, uintptr_t addr, uint64_t off, uint64_t len);

typedef struct mm_pager_stats {
    uint64_t missing_faults; /* routed to an owner */
    uint64_t wp_faults;      /* writers that waited for a page-out */
    uint64_t failed_faults;  /* pages poisoned */
    uint64_t pages_out;      /* stored and dropped */
    uint64_t pages_in;       /* put back from swap */
    uint64_t zero_fills;     /* missing pages that were never stored */
    uint64_t holes_skipped;  /* page-outs of pages that were not resident */
} mm_pager_stats_t;

/*
 * A pager over uffd (from mm__uffd_open(), or received from the owner) and
 * swap, both owned by the caller and outliving the pager. uffd may be -1 for
 * an owner that is stopped while its pages are copied (a frozen process):
 * page-outs then protect nothing, and there are no faults to handle (start,
 * register and the fills need a userfaultfd). On success *out is the pager.
 * No thread runs until mm__pager_start().
 */
int mm__pager_create(int uffd, mm_swap_t *swap, mm_pager_t **out);

/* Stop the pager's thread and free it. Registrations stay (they belong to
 * the fd); pages still stored stay in the swap store. */
void mm__pager_destroy(mm_pager_t *p);

/* Dispatch faults on a thread of the pager's own. */
int mm__pager_start(mm_pager_t *p);

/* Event-loop mode: the fd to poll (the userfaultfd) and the call that reads
 * and handles every fault waiting on it. */
int mm__pager_fd(const mm_pager_t *p);
int mm__pager_dispatch(mm_pager_t *p);

/* Send missing faults in [start, start+len) to fn(arg, ...). Routes must not
 * overlap (-EEXIST); at most 64 (-ENOSPC). */
int mm__pager_route(mm_pager_t *p, uintptr_t start, uint64_t len, mm_pager_missing_fn fn,
                    void *arg);

/*
 * Register [start, start+len) of the owner's space with the userfaultfd for
 * missing faults, and with wp also for write-protect faults (shmem and
 * anonymous mappings; a mapping replaced with MAP_FIXED must be registered
 * again).
 */
int mm__pager_register(mm_pager_t *p, uintptr_t start, uint64_t len, bool wp);
/* Undo a registration: faults in the range are the kernel's again. */
int mm__pager_unregister(mm_pager_t *p, uintptr_t start, uint64_t len);

/*
 * A copy that must not race the owner's writes: while [addr, addr+len) is
 * protected, writers wait (the range must be registered with wp).
 * mm__pager_unprotect() ends it and wakes them; after a remap it only
 * wakes. At most 128 protected ranges at once (-EBUSY).
 */
int mm__pager_protect(mm_pager_t *p, uintptr_t addr, uint64_t len);
void mm__pager_unprotect(mm_pager_t *p, uintptr_t addr, uint64_t len);

/*
 * Page out len bytes at addr, which are the bytes at off of memfd fd (all
 * 4 KiB multiples): protect them, copy the resident pages, store page i
 * under key first_key + i, make the index durable, call drop() for each run
 * of stored pages, unprotect. Pages that are holes in fd are skipped (not
 * resident: nothing to keep; a later touch reads zeros, as before). With
 * whole, holes are stored too (as zero pages), so that drop() gets the
 * range as one run. On success *paged_bytes (if not NULL) is what was
 * stored and dropped. On error the pages not dropped stay where they were and
 * none of them stays stored (runs dropped before a failing drop() stay
 * paged, counted in *paged_bytes): -ENOSPC (swap full), a swap I/O error, or
 * drop()'s error.
 */
int mm__pager_page_out(mm_pager_t *p, uintptr_t addr, int fd, uint64_t off, uint64_t len,
                       uint64_t first_key, bool whole, mm_pager_drop_fn drop, void *ctx,
                       uint64_t *paged_bytes);

/* One piece of a batched page-out: len bytes at addr, which are the bytes
 * at off of the memfd, stored under first_key onwards. */
typedef struct mm_pager_seg {
    uintptr_t addr;
    uint64_t off, len, first_key;
} mm_pager_seg_t;

#define MM_PAGER_MAX_SEGS 64

/* mm__pager_page_out() of up to MM_PAGER_MAX_SEGS segments of one memfd,
 * with one durable sync for all of them. */
int mm__pager_page_out_v(mm_pager_t *p, int fd, const mm_pager_seg_t *segs, size_t nsegs,
                         bool whole, mm_pager_drop_fn drop, void *ctx, uint64_t *paged_bytes);

/*
 * Put a missing run back: page i at addr from key first_key + i (verified),
 * a zero page where nothing is stored, with UFFDIO_COPY (maps the pages and
 * wakes whoever waits on them), then forget the keys. A page that is already
 * there is left as it is. -EBADMSG if a stored page fails its checksum
 * (nothing after it is filled; the caller poisons or reports).
 */
int mm__pager_fill(mm_pager_t *p, uintptr_t addr, uint64_t len, uint64_t first_key);

/* Read stored pages first_key .. first_key+n-1 into buf (verified; a key not
 * stored reads as zeros). -EBADMSG as above. */
int mm__pager_read(mm_pager_t *p, uint64_t first_key, uint64_t n, void *buf);

/* Forget stored pages first_key .. first_key+n-1 (those that are stored). */
void mm__pager_forget(mm_pager_t *p, uint64_t first_key, uint64_t n);

/* Map zero pages over a missing run; wake whoever waits on [addr, addr+len);
 * poison a run so that touching it raises SIGBUS. */
int mm__pager_zero(mm_pager_t *p, uintptr_t addr, uint64_t len);
int mm__pager_wake(mm_pager_t *p, uintptr_t addr, uint64_t len);
int mm__pager_poison(mm_pager_t *p, uintptr_t addr, uint64_t len);

void mm__pager_stats(mm_pager_t *p, mm_pager_stats_t *out);

#endif /* MM_PAGER_H */
