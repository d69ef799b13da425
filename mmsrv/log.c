/*
 * The daemon's log (see log.h). The level is set once at start-up, before
 * any thread runs.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static enum mm_log_level current = MM_LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};

int mm__log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -EINVAL;
}

void mm__log_set(enum mm_log_level level)
{
    current = level;
}

void mm__log(enum mm_log_level level, const char *fmt, ...)
{
    if (level > current)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "mmsrv: %s: %s\n", names[level], line);
}
