/*
 * The swap store: 4 KiB pages kept on disk under a caller's key, each with a
 * CRC-32 checksum, for the paging engine (pager.h). One data file holds the
 * pages, one slot each; an index file beside it (PATH.idx) holds one record
 * per slot: the key stored there (or none), the page's checksum and a
 * sequence number. The index is the store's own bookkeeping, never read from
 * memory a client can write.
 *
 * Durability: mm__swap_put() writes the page and its index record;
 * mm__swap_sync() makes every put before it durable (fdatasync of both
 * files). A caller drops the in-memory copy of a page only after the sync
 * that covers its put returned 0. mm__swap_get() verifies the checksum, so a
 * page damaged on disk is reported (-EBADMSG), never returned.
 *
 * Space: the data file is reserved with fallocate() when the store is opened
 * (a disk without room fails there, -ENOSPC), so a put fails only when every
 * slot is taken (-ENOSPC) or the disk reports an I/O error; in both cases the
 * page was not stored and the caller still has its copy. The store refuses
 * tmpfs and ramfs (-EXDEV): swapping RAM into RAM gives nothing back.
 *
 * Keys are integers below the max_keys given at open (a page number in the
 * space the caller pages: region frames, guest-virtual pages). A key is
 * stored at most once: putting a stored key again replaces its page.
 *
 * Thread safety: every call may be made from any thread; calls on distinct
 * keys run their I/O concurrently. mm__swap_close() is not concurrent with
 * anything.
 */
#ifndef MM_SWAPSTORE_H
#define MM_SWAPSTORE_H

#include <stdbool.h>
#include <stdint.h>

#define MM_SWAP_PAGE_BYTES 4096u

typedef struct mm_swap mm_swap_t;

typedef struct mm_swap_stats {
    uint64_t slots;     /* capacity in pages */
    uint64_t used;      /* pages stored now */
    uint64_t puts;      /* pages written, in total */
    uint64_t gets;      /* pages read back, in total */
    uint64_t bad_pages; /* gets that failed their checksum */
    uint64_t syncs;     /* fdatasync rounds */
} mm_swap_stats_t;

/*
 * Create (or truncate) the store at path with room for slots pages, for keys
 * below max_keys. On success *out owns both files' fds until
 * mm__swap_close(). Errors: -EINVAL (slots or max_keys 0 or too large),
 * -EXDEV (path is on tmpfs or ramfs), -ENOSPC (no room for the data file),
 * or the errno of open/fallocate. On failure nothing is left open and no
 * file is left behind.
 */
int mm__swap_open(const char *path, uint64_t slots, uint64_t max_keys, mm_swap_t **out);

/*
 * Open the store a crashed owner left at path (a daemon restarting), with
 * room for slots pages and keys below max_keys as it was created. The index
 * is read back: every record naming a key is a stored page (of two records
 * naming one key, the later seq wins; the other slot is freed); pages are
 * verified when they are read. -ENOENT: no store there; -EBADMSG: the index
 * is damaged, of another version, or of another size (refused, never
 * trusted); or the errno of open/read. On failure nothing is left open and
 * the files stay as they were.
 */
int mm__swap_reopen(const char *path, uint64_t slots, uint64_t max_keys, mm_swap_t **out);

/* Close the store; with remove, also unlink both files. */
void mm__swap_close(mm_swap_t *s, bool remove);

/*
 * Store the 4 KiB page under key (not durable until mm__swap_sync()).
 * -ENOSPC: every slot is taken; -EINVAL: key out of range; -EIO or the errno
 * of pwrite. On any error the page is not stored (an earlier copy under key,
 * if any, is kept).
 */
int mm__swap_put(mm_swap_t *s, uint64_t key, const void *page);

/* Make every put and drop before this call durable. */
int mm__swap_sync(mm_swap_t *s);

/*
 * Read key's page into page (4 KiB) and verify its checksum. -ENOENT: key is
 * not stored; -EBADMSG: the stored page fails its checksum (it stays stored,
 * so that nothing overwrites the evidence); -EIO or the errno of pread.
 */
int mm__swap_get(mm_swap_t *s, uint64_t key, void *page);

/* Forget key's page and free its slot. -ENOENT if key is not stored. */
int mm__swap_drop(mm_swap_t *s, uint64_t key);

/* True if key is stored. */
bool mm__swap_has(mm_swap_t *s, uint64_t key);

void mm__swap_stats(mm_swap_t *s, mm_swap_stats_t *out);

/* The data file's fd and the byte offset of key's slot in it (tests use it
 * to damage a stored page on purpose). -ENOENT if key is not stored. */
int mm__swap_locate(mm_swap_t *s, uint64_t key, int *fd, uint64_t *offset);

#endif /* MM_SWAPSTORE_H */
