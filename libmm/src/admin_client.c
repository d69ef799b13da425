/*
 * The client end of the admin socket: one request line, one reply read to
 * the end (see admin_client.h).
 */
#include "admin_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int mm__admin_request(const char *path, const char *req, char **out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    int err = 0;
    if (!buf)
        err = -ENOMEM;
    else if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        err = -errno;
    /* A refusing daemon may answer and close before reading the request:
     * read its answer even when the send fails. */
    else if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
        err = -errno;
    while (err == 0) {
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                err = -ENOMEM;
                break;
            }
            buf = bigger;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno != EINTR)
            err = -errno;
        if (n == 0)
            break;
        if (n > 0)
            len += (size_t)n;
    }
    close(fd);
    if (err < 0) {
        free(buf);
        return err;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}
