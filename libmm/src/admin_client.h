/*
 * The client end of mmsrv's admin socket, shared by mmctl and mmbench: send
 * one request line ("status\n", "capacity 1073741824\n", ...) and read the
 * daemon's one JSON reply to the end of the stream. Thread-safe.
 */
#ifndef MM_ADMIN_CLIENT_H
#define MM_ADMIN_CLIENT_H

/* Send req (ending in a newline) to the admin socket at path and read the
 * whole reply into a malloc'd NUL-terminated *out (the caller frees it).
 * A daemon that refuses the peer answers and closes: its answer is still
 * read. Negative errno when the socket cannot be reached. */
int mm__admin_request(const char *path, const char *req, char **out);

#endif /* MM_ADMIN_CLIENT_H */
