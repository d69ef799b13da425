/*
 * Small public helpers shared by the library and the programs: size parsing,
 * error names and the default state-directory and socket paths.
 */
#include <mm/mm.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

MM_EXPORT int mm_parse_size(const char *text, uint64_t *out)
{
    /* strtoull would skip white space and accept a sign: only digits lead. */
    if (!text || *text < '0' || *text > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    default:
        return -EINVAL;
    }
    if (*end && end[1] != '\0' && strcmp(end + 1, "iB") != 0 && strcmp(end + 1, "B") != 0)
        return -EINVAL;
    if (shift && v > (ULLONG_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

MM_EXPORT const char *mm_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case -ENOSPC:
        return "no free frames in the granted chunks";
    case -ENOMEM:
        return "the host granted no more memory (over target or capacity)";
    case -EDQUOT:
        return "over the client's limit";
    case -EPROTONOSUPPORT:
        return "the daemon speaks another protocol version";
    case -EPROTO:
        return "protocol error (malformed message or shared state)";
    case -EBADMSG:
        return "malformed message";
    case -ECONNREFUSED:
        return "no daemon is listening on the socket";
    case -ENOENT:
        return "no such socket or file";
    case -EPERM:
    case -EACCES:
        return "permission denied";
    case -EINVAL:
        return "invalid argument";
    case -EIO:
        return "inconsistent allocator metadata";
    case -ENOTCONN:
        return "not connected to the daemon";
    default:
        return err < 0 ? strerror(-err) : "unknown error";
    }
}

MM_EXPORT const char *mm_default_state_dir(void)
{
    static char dir[PATH_MAX];
    if (geteuid() == 0)
        return "/run/mm";
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/mm", xdg);
    else
        snprintf(dir, sizeof dir, "/tmp/mm-%u", (unsigned)geteuid());
    return dir;
}

static const char *default_path(const char *env, const char *leaf, char *buf, size_t cap)
{
    const char *v = getenv(env);
    if (v && *v)
        return v;
    snprintf(buf, cap, "%s/%s", mm_default_state_dir(), leaf);
    return buf;
}

MM_EXPORT const char *mm_default_socket(void)
{
    static char path[PATH_MAX];
    return default_path("MM_SOCKET", "mm.sock", path, sizeof path);
}

MM_EXPORT const char *mm_default_admin_socket(void)
{
    static char path[PATH_MAX];
    return default_path("MM_ADMIN_SOCKET", "admin.sock", path, sizeof path);
}
