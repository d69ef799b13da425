/*
 * Helpers shared by the integration tests: one throw-away daemon per test
 * (stopped by the suite's .fini), clients opened against it, short sleeps.
 */
#ifndef MM_TEST_COMMON_H
#define MM_TEST_COMMON_H

#include <stdatomic.h>
#include <sys/types.h>

#include <mm/mm.h>

#include "bench.h"

#define CHUNK ((size_t)MM_CHUNK_SIZE)
#define FRAME ((size_t)MM_FRAME_SIZE)

/* The test's daemon; its log level comes from $MM_TEST_LOG (default warn). */
extern mm_bench_daemon_t daemon_;

void start_daemon(const char *capacity);
void stop_daemon(void);
void sleep_ms(long ms);

/* Open a client on the test's daemon; the test fails if it cannot. */
mm_client_t *open_client(const char *name, uint64_t max_bytes, unsigned flags);

/* Allocate n whole chunks, write to every page, return them in out. */
void alloc_chunks(mm_client_t *c, size_t n, void **out);

/* A field of client id's entry in `mmctl --json status` (UINT64_MAX if the
 * client is not listed), and a top-level field. */
uint64_t client_field(uint32_t id, const char *key);
uint64_t status_field(const char *key);

/* A field of step's entry in status's "ladder" (UINT64_MAX if absent). */
uint64_t ladder_field(const char *step, const char *key);

/* The id of the client called name in status, 0 if none (ids start at 1). */
uint32_t client_id_by_name(const char *name);

/* mmctl capacity size; the test fails if it is refused. */
void set_capacity(const char *size);

/* A frame source over a client the test owns, standing in for a guest
 * model's memory (the runtime adapters' source seam): it counts its calls
 * and forwards them to libmm. */
typedef struct counting_source {
    mm_client_t *client;
    _Atomic uint64_t allocs, frees, releases, residents;
    _Atomic uint64_t alloc_bytes, free_bytes, release_bytes;
} counting_source_t;

/* Reset *cs to count calls over client c (may be NULL when no call is
 * expected) and return the source whose arg is cs. */
mm_frame_source_t counting_source(counting_source_t *cs, mm_client_t *c);

/* A checksummed pattern, one word in eight of every 4 KiB page, that
 * depends on the page's index and a seed: fill writes it, bad_pages counts
 * the pages where it is not intact. */
uint64_t pattern_word(uint64_t page, uint64_t i, uint64_t seed);
void pattern_fill(uint8_t *p, uint64_t bytes, uint64_t seed);
uint64_t pattern_bad_pages(const uint8_t *p, uint64_t bytes, uint64_t seed);

/* Create the disk image at path: bytes of the pattern, seed 77 + MiB index
 * for each MiB (what guest tests read back through the page cache). */
void write_pattern_disk(const char *path, uint64_t bytes);

/* The State letter of /proc/PID/status ('T' stopped, ...), '?' if none. */
char proc_state(pid_t pid);

#endif /* MM_TEST_COMMON_H */
