/*
 * cmake --install puts everything where packagers and users expect it:
 * programs, libraries, headers, libmm.pc, the CMake package config, man
 * pages, the systemd unit and the example config; the man pages render
 * without warnings; and a small CMake project finds libmm with
 * find_package(libmm), links it (shared and static) and runs.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MM_BUILD_DIR
#error "MM_BUILD_DIR must be defined"
#endif

static char prefix[256];

/* Run a shell command; return its exit status, with its output in out. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n = 0, got;
    char scratch[4096];
    while ((got = fread(out && n + 1 < cap ? out + n : scratch, 1,
                        out && n + 1 < cap ? cap - n - 1 : sizeof scratch, p)) > 0)
        if (out && n + 1 < cap)
            n += got;
    if (out)
        out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void setup(void)
{
    snprintf(prefix, sizeof prefix, "/tmp/mm-install-XXXXXX");
    cr_assert_not_null(mkdtemp(prefix));
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, "cmake --install '%s' --prefix '%s/usr' 2>&1", MM_BUILD_DIR, prefix);
    int rc = run(cmd, out, sizeof out);
    cr_assert_eq(rc, 0, "cmake --install failed:\n%s", out);
}

static void teardown(void)
{
    char cmd[512];
    if (prefix[0] && strncmp(prefix, "/tmp/mm-install-", 16) == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", prefix);
        run(cmd, NULL, 0);
    }
}

TestSuite(install, .init = setup, .fini = teardown, .timeout = 120);

static void expect_file(const char *rel, int executable)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/usr/%s", prefix, rel);
    cr_expect_eq(stat(path, &st), 0, "missing after install: %s", rel);
    if (executable)
        cr_expect(access(path, X_OK) == 0, "not executable: %s", rel);
}

static const char *const man_pages[] = {"share/man/man8/mmsrv.8", "share/man/man8/mmctl.8",
                                        "share/man/man3/libmm.3", "share/man/man1/mmguest.1",
                                        "share/man/man1/mmrun.1"};

Test(install, everything_in_place)
{
    static const char *const programs[] = {"mmsrv",   "mmctl",   "mmhold",
                                           "mmbench", "mmguest", "mmrun"};
    char rel[256];
    for (size_t i = 0; i < sizeof programs / sizeof *programs; i++) {
        snprintf(rel, sizeof rel, "bin/%s", programs[i]);
        expect_file(rel, 1);
    }
    static const char *const files[] = {"lib/libmm.so",
                                        "lib/libmm.a",
                                        "include/mm/mm.h",
                                        "include/mm/protocol.h",
                                        "lib/pkgconfig/libmm.pc",
                                        "lib/cmake/libmm/libmmConfig.cmake",
                                        "lib/cmake/libmm/libmmConfigVersion.cmake",
                                        "lib/cmake/libmm/libmmTargets.cmake",
                                        "lib/libmm-preload.so",
                                        "lib/libmm-gc.so.0",
                                        "lib/libmm-jemalloc.so.0",
                                        "lib/systemd/system/mmsrv.service",
                                        "etc/mm/mmsrv.conf.example"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        expect_file(files[i], 0);
    for (size_t i = 0; i < sizeof man_pages / sizeof *man_pages; i++)
        expect_file(man_pages[i], 0);

    /* The unit runs the installed daemon in the foreground with the config. */
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd,
             "grep -E '^ExecStart=/.*/mmsrv --foreground --config /etc/mm/mmsrv.conf' "
             "'%s/usr/lib/systemd/system/mmsrv.service'",
             prefix);
    cr_expect_eq(run(cmd, out, sizeof out), 0, "mmsrv.service has no proper ExecStart");

    /* Every key of the example config, uncommented, is accepted by mmsrv
     * (admin-group needs a group that exists, so it stays out). */
    snprintf(
        cmd, sizeof cmd,
        "cd '%s' && mkdir -p st && sed -E 's/^#([a-z-]+ = )/\\1/' usr/etc/mm/mmsrv.conf.example"
        " | grep -v '^admin-group' > all.conf && grep -c '^[a-z]' all.conf &&"
        " usr/bin/mmsrv --config all.conf --state-dir \"$PWD/st\" --check-config 2>&1",
        prefix);
    int rc = run(cmd, out, sizeof out);
    cr_expect_eq(rc, 0, "mmsrv rejects the example config:\n%s", out);
    cr_expect(atoi(out) >= 9, "the example config documents too few keys:\n%s", out);
}

Test(install, man_pages_render)
{
    char out[256];
    if (run("command -v man", out, sizeof out) != 0) {
        cr_log_warn("man is not installed (apt-get install man-db): rendering not checked");
        return;
    }
    for (size_t i = 0; i < sizeof man_pages / sizeof *man_pages; i++) {
        char cmd[1024], text[65536];
        snprintf(cmd, sizeof cmd, "MANWIDTH=80 MANPAGER=cat man --warnings -l '%s/usr/%s' 2>&1",
                 prefix, man_pages[i]);
        int rc = run(cmd, text, sizeof text);
        cr_expect_eq(rc, 0, "man -l %s failed:\n%s", man_pages[i], text);
        cr_expect(strlen(text) > 500, "man -l %s rendered almost nothing", man_pages[i]);
        cr_expect(strcasestr(text, "warning") == NULL, "man -l %s warns:\n%s", man_pages[i], text);
    }
}

Test(install, installed_mmrun_finds_its_preload)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* An instrumented preload cannot go into an uninstrumented program. */
    cr_skip_test("a sanitizer build: mmrun's preload is checked by the plain build");
#endif
    /* The warning comes from the preload inside the program: seeing it
     * proves mmrun found the installed library and the program loaded it. */
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && usr/bin/mmrun --socket \"$PWD/none.sock\" -- /bin/echo ran 2>&1", prefix);
    int rc = run(cmd, out, sizeof out);
    cr_expect_eq(rc, 0, "mmrun /bin/echo failed:\n%s", out);
    cr_expect(strstr(out, "no mm daemon at") != NULL, "no warning from the preload:\n%s", out);
    cr_expect(strstr(out, "ran\n") != NULL, "the program did not run:\n%s", out);
}

Test(install, find_package_links_and_runs)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* The installed libraries carry the sanitizer's instrumentation; a plain
     * consumer cannot link or start with them. The plain build checks this. */
    cr_skip_test("a sanitizer build: the find_package consumer is checked by the plain build");
#endif
    char dir[512], path[600], cmd[2048], out[16384];
    snprintf(dir, sizeof dir, "%s/consumer", prefix);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/CMakeLists.txt", dir);
    write_file(path, "cmake_minimum_required(VERSION 3.16)\n"
                     "project(consumer C)\n"
                     "find_package(libmm 0.1 REQUIRED)\n"
                     "add_executable(use_shared main.c)\n"
                     "target_link_libraries(use_shared PRIVATE libmm::mm)\n"
                     "add_executable(use_static main.c)\n"
                     "target_link_libraries(use_static PRIVATE libmm::mm_static)\n");
    snprintf(path, sizeof path, "%s/main.c", dir);
    write_file(path, "#include <mm/mm.h>\n"
                     "int main(void)\n"
                     "{\n"
                     "    uint64_t v = 0;\n"
                     "    if (mm_parse_size(\"200M\", &v) != 0 || v != 200ull << 20)\n"
                     "        return 1;\n"
                     "    return mm_parse_size(\"junk\", &v) < 0 ? 0 : 1;\n"
                     "}\n");
    snprintf(cmd, sizeof cmd,
             "cd '%s' && cmake -S . -B build -DCMAKE_PREFIX_PATH='%s/usr' 2>&1 && "
             "cmake --build build 2>&1 && ./build/use_shared && ./build/use_static && "
             "ldd ./build/use_shared | grep -F '%s/usr/lib/libmm.so'",
             dir, prefix, prefix);
    int rc = run(cmd, out, sizeof out);
    cr_expect_eq(rc, 0, "find_package(libmm) consumer failed (%d):\n%s", rc, out);
}
