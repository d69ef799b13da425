/*
 * The daemon's log: one line per event on stderr, filtered by level.
 */
#ifndef MM_LOG_H
#define MM_LOG_H

enum mm_log_level { MM_LOG_ERROR = 0, MM_LOG_WARN = 1, MM_LOG_INFO = 2, MM_LOG_DEBUG = 3 };

/* The level "error", "warn", "info" or "debug" stands for, or -EINVAL;
 * and setting the level (at start-up or on the loop thread). */
int mm__log_parse_level(const char *name);
void mm__log_set(enum mm_log_level level);

void mm__log(enum mm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) mm__log(MM_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  mm__log(MM_LOG_WARN, __VA_ARGS__)
#define log_info(...)  mm__log(MM_LOG_INFO, __VA_ARGS__)
#define log_debug(...) mm__log(MM_LOG_DEBUG, __VA_ARGS__)

#endif /* MM_LOG_H */
