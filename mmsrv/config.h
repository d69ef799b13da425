/*
 * mmsrv's settings, from the command line and from a config file. The file
 * (--config FILE, default /etc/mm/mmsrv.conf when it exists) holds lines
 * "key = value" with the long option names as keys; '#' starts a comment.
 * The command line wins over the file. SIGHUP reloads the file's policy
 * settings: capacity, idle-tax, max-client-reservation, max-client-weight and
 * log-level (paths, sockets and the admin group need a restart).
 */
#ifndef MM_CONFIG_H
#define MM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon.h"

#define MM_DEFAULT_CONFIG "/etc/mm/mmsrv.conf"

/* Settings a reload may change. */
enum mm_config_key {
    MM_CFG_CAPACITY = 1u << 0,
    MM_CFG_IDLE_TAX = 1u << 1,
    MM_CFG_MAX_CLIENT_MIN = 1u << 2,
    MM_CFG_MAX_CLIENT_WEIGHT = 1u << 3,
    MM_CFG_LOG_LEVEL = 1u << 4,
    MM_CFG_RELOADABLE = 0x1f,
    MM_CFG_STARTUP_ONLY = 1u << 5, /* paths, sockets, admin group */
};

/*
 * Apply one setting by its long option name. Strings are kept as given
 * (the caller keeps value alive). *key_out names what was set. On a bad key
 * or value: -EINVAL and one line in err. Loop thread or start-up only.
 */
int mm__config_set(mm_server_config_t *cfg, const char *key, const char *value, unsigned *key_out,
                   char *err, size_t cap);

/*
 * Read path into cfg. Only the keys in `allowed` are applied (the others are
 * still checked); keys in `skip` (set on the command line) are left alone.
 * Strings taken from the file are copied and live as long as the process.
 * -ENOENT if the file is missing, -EINVAL with "FILE:LINE: why" in err.
 */
int mm__config_load(const char *path, mm_server_config_t *cfg, unsigned allowed, unsigned skip,
                    char *err, size_t cap);

#endif /* MM_CONFIG_H */
