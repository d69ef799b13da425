/*
 * metrics: renders the daemon's `status` reply (the JSON that mmctl gets from
 * the admin socket) as Prometheus text exposition, format 0.0.4, for
 * node_exporter's textfile collector. Used by `mmctl metrics`; it reads only
 * the reply and holds no state of its own.
 */
#ifndef MM_METRICS_H
#define MM_METRICS_H

#include <jansson.h>
#include <stdio.h>

/* Write every mm_* family for status to out: a # HELP and a # TYPE line per
 * family, then its samples. A field the reply lacks (an older daemon) leaves
 * its sample out rather than printing a made-up value.
 * status: borrowed, not modified. out: the caller's stream, left open.
 * Returns 0, -EINVAL if status is not an object, or -EIO if out reports a
 * write error. Thread-safe as long as no one else writes to out. */
int mm__metrics_write(FILE *out, json_t *status);

/* Write s to out as a label value: backslash, double quote and newline
 * escaped as \\, \" and \n. Returns what fputs/fputc last returned. */
int mm__metrics_write_label(FILE *out, const char *s);

#endif /* MM_METRICS_H */
