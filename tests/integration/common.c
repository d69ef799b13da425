/*
 * Helpers shared by the integration tests (see common.h).
 */
#include "common.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

mm_bench_daemon_t daemon_;

void start_daemon(const char *capacity)
{
    const char *level = getenv("MM_TEST_LOG");
    cr_assert_eq(mm__bench_daemon_start(&daemon_, capacity, level ? level : "warn"), 0,
                 "mmsrv starts");
}

void stop_daemon(void)
{
    mm__bench_daemon_stop(&daemon_);
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

mm_client_t *open_client(const char *name, uint64_t max_bytes, unsigned flags)
{
    mm_client_opts_t o;
    mm_client_opts_init(&o);
    o.name = name;
    o.max_bytes = max_bytes;
    o.flags = flags;
    mm_client_t *c = NULL;
    int err = mm_client_open(daemon_.sock, &o, &c);
    cr_assert_eq(err, 0, "client opens: %s", mm_strerror(err));
    return c;
}

void alloc_chunks(mm_client_t *c, size_t n, void **out)
{
    for (size_t i = 0; i < n; i++) {
        int err = mm_alloc(c, CHUNK, CHUNK, &out[i]);
        cr_assert_eq(err, 0, "chunk %zu allocated: %s", i, mm_strerror(err));
        memset(out[i], (int)(i + 1), CHUNK);
    }
}

/* The daemon's view of client id: a field of its entry in status. */
uint64_t client_field(uint32_t id, const char *key)
{
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "status answers");
    uint64_t v = UINT64_MAX;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(st, "clients"), i, c) if (mm__bench_json_u64(c, "id") == id)
        v = mm__bench_json_u64(c, key);
    json_decref(st);
    return v;
}

uint64_t status_field(const char *key)
{
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "status answers");
    uint64_t v = mm__bench_json_u64(st, key);
    json_decref(st);
    return v;
}

uint64_t ladder_field(const char *step, const char *key)
{
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "status answers");
    uint64_t v = UINT64_MAX;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(st, "ladder"), i, o)
    {
        const char *name = json_string_value(json_object_get(o, "step"));
        if (name && strcmp(name, step) == 0)
            v = mm__bench_json_u64(o, key);
    }
    json_decref(st);
    return v;
}

void set_capacity(const char *size)
{
    const char *args[] = {"capacity", size, NULL};
    cr_assert_eq(mm__bench_ctl(&daemon_, args, NULL), 0, "mmctl capacity %s", size);
}

uint32_t client_id_by_name(const char *name)
{
    json_t *st = NULL;
    cr_assert_eq(mm__bench_ctl_status(&daemon_, &st), 0, "status answers");
    uint32_t id = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(st, "clients"), i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            id = (uint32_t)mm__bench_json_u64(c, "id");
    }
    json_decref(st);
    return id;
}

static int count_alloc(void *arg, size_t bytes, size_t align, void **out)
{
    counting_source_t *cs = arg;
    atomic_fetch_add(&cs->allocs, 1);
    int err = mm_alloc(cs->client, bytes, align, out);
    if (err == 0)
        atomic_fetch_add(&cs->alloc_bytes, bytes);
    return err;
}

static int count_free(void *arg, void *addr, size_t bytes)
{
    counting_source_t *cs = arg;
    atomic_fetch_add(&cs->frees, 1);
    int err = mm_free(cs->client, addr, bytes);
    if (err == 0)
        atomic_fetch_add(&cs->free_bytes, bytes);
    return err;
}

static int count_release(void *arg, void *addr, size_t bytes)
{
    counting_source_t *cs = arg;
    atomic_fetch_add(&cs->releases, 1);
    int err = mm_release(cs->client, addr, bytes);
    if (err == 0)
        atomic_fetch_add(&cs->release_bytes, bytes);
    return err;
}

static int64_t count_resident(void *arg)
{
    counting_source_t *cs = arg;
    atomic_fetch_add(&cs->residents, 1);
    mm_client_stats_t s;
    int err = mm_client_stats(cs->client, &s);
    return err < 0 ? err : (int64_t)s.resident_bytes;
}

mm_frame_source_t counting_source(counting_source_t *cs, mm_client_t *c)
{
    memset(cs, 0, sizeof *cs);
    cs->client = c;
    return (mm_frame_source_t){
        .alloc = count_alloc,
        .free = count_free,
        .release = count_release,
        .resident_bytes = count_resident,
        .arg = cs,
    };
}

uint64_t pattern_word(uint64_t page, uint64_t i, uint64_t seed)
{
    return (page * 0x9e3779b97f4a7c15ull) ^ (i * 0xbf58476d1ce4e5b9ull) ^ seed;
}

void pattern_fill(uint8_t *p, uint64_t bytes, uint64_t seed)
{
    for (uint64_t pg = 0; pg < bytes / 4096; pg++) {
        uint64_t *w = (uint64_t *)(p + pg * 4096);
        for (uint64_t i = 0; i < 4096 / 8; i += 8)
            w[i] = pattern_word(pg, i, seed);
    }
}

uint64_t pattern_bad_pages(const uint8_t *p, uint64_t bytes, uint64_t seed)
{
    uint64_t bad = 0;
    for (uint64_t pg = 0; pg < bytes / 4096; pg++) {
        const uint64_t *w = (const uint64_t *)(p + pg * 4096);
        for (uint64_t i = 0; i < 4096 / 8; i += 8)
            if (w[i] != pattern_word(pg, i, seed)) {
                bad++;
                break;
            }
    }
    return bad;
}

void write_pattern_disk(const char *path, uint64_t bytes)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "disk image %s: %s", path, strerror(errno));
    uint8_t *buf = malloc(1 << 20);
    cr_assert_not_null(buf);
    for (uint64_t off = 0; off < bytes; off += 1 << 20) {
        pattern_fill(buf, 1 << 20, 77 + (off >> 20));
        cr_assert_eq(pwrite(fd, buf, 1 << 20, (off_t)off), (ssize_t)(1 << 20));
    }
    free(buf);
    fsync(fd);
    close(fd);
}

char proc_state(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    char state = '?';
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "State: %c", &state) == 1)
            break;
    if (f)
        fclose(f);
    return state;
}
