/*
 * mmsrv's settings: one table of keys shared by the command line, the config
 * file and SIGHUP reloads (see config.h).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mm/mm.h>

#include "log.h"

static int fail(char *err, size_t cap, const char *fmt, const char *arg)
{
    snprintf(err, cap, fmt, arg);
    return -EINVAL;
}

static int set_size(uint64_t *out, uint64_t min, const char *value)
{
    uint64_t v;
    if (mm_parse_size(value, &v) < 0 || v < min)
        return -EINVAL;
    *out = v;
    return 0;
}

/* idle-tax or max-client-weight. */
static int set_number(mm_server_config_t *cfg, const char *key, const char *value, char *err,
                      size_t cap)
{
    char *end;
    if (strcmp(key, "idle-tax") == 0) {
        double tax = strtod(value, &end);
        if (*value == '\0' || *end || !(tax >= 0 && tax <= 0.99))
            return fail(err, cap, "idle-tax must be a number from 0 to 0.99, not '%s'", value);
        cfg->idle_tax = tax;
        return 0;
    }
    unsigned long w = strtoul(value, &end, 10);
    if (*value < '1' || *value > '9' || *end || w > 10000)
        return fail(err, cap, "max-client-weight must be 1 to 10000, not '%s'", value);
    cfg->max_client_weight = (uint32_t)w;
    return 0;
}

int mm__config_set(mm_server_config_t *cfg, const char *key, const char *value, unsigned *key_out,
                   char *err, size_t cap)
{
    *key_out = MM_CFG_STARTUP_ONLY;
    if (strcmp(key, "socket") == 0) {
        cfg->socket_path = value;
    } else if (strcmp(key, "admin-socket") == 0) {
        cfg->admin_socket_path = value;
    } else if (strcmp(key, "state-dir") == 0) {
        cfg->state_dir = value;
    } else if (strcmp(key, "swap-dir") == 0) {
        cfg->swap_dir = value;
    } else if (strcmp(key, "grace") == 0) {
        char *end;
        unsigned long g = strtoul(value, &end, 10);
        if (*value < '0' || *value > '9' || *end || g > 86400)
            return fail(err, cap, "grace must be 0 to 86400 seconds, not '%s'", value);
        cfg->grace_s = (uint32_t)g;
    } else if (strcmp(key, "admin-group") == 0) {
        struct group *g = getgrnam(value);
        if (!g)
            return fail(err, cap, "admin-group: no group named '%s'", value);
        cfg->admin_gid = g->gr_gid;
        cfg->has_admin_group = true;
    } else if (strcmp(key, "capacity") == 0) {
        *key_out = MM_CFG_CAPACITY;
        if (set_size(&cfg->capacity_bytes, MM_CHUNK_SIZE, value) < 0)
            return fail(err, cap, "capacity needs a size of at least 2M, not '%s'", value);
    } else if (strcmp(key, "max-client-reservation") == 0) {
        *key_out = MM_CFG_MAX_CLIENT_MIN;
        if (set_size(&cfg->max_client_min_bytes, 0, value) < 0)
            return fail(err, cap, "max-client-reservation needs a size like 256M, not '%s'", value);
    } else if (strcmp(key, "idle-tax") == 0 || strcmp(key, "max-client-weight") == 0) {
        *key_out = key[0] == 'i' ? MM_CFG_IDLE_TAX : MM_CFG_MAX_CLIENT_WEIGHT;
        return set_number(cfg, key, value, err, cap);
    } else if (strcmp(key, "log-level") == 0) {
        *key_out = MM_CFG_LOG_LEVEL;
        int level = mm__log_parse_level(value);
        if (level < 0)
            return fail(err, cap, "log-level must be error, warn, info or debug, not '%s'", value);
        cfg->log_level = level;
    } else {
        return fail(err, cap, "unknown setting '%s'", key);
    }
    return 0;
}

/* Trim white space at both ends in place. */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* One line: blank, comment, or key = value. */
/* Strings from a file live as long as the daemon: kept on a list, so that
 * they stay reachable (and a leak checker sees them as such). Loop thread
 * or start-up only. */
typedef struct kept {
    struct kept *next;
    char text[];
} kept_t;
static kept_t *kept_strings;

static char *keep_string(const char *value)
{
    size_t n = strlen(value) + 1;
    kept_t *k = malloc(sizeof *k + n);
    if (!k)
        return NULL;
    memcpy(k->text, value, n);
    k->next = kept_strings;
    kept_strings = k;
    return k->text;
}

static int load_line(char *line, mm_server_config_t *cfg, unsigned allowed, unsigned skip,
                     char *err, size_t cap)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *text = trim(line);
    if (*text == '\0')
        return 0;
    char *eq = strchr(text, '=');
    if (!eq)
        return fail(err, cap, "expected key = value, not '%s'", text);
    *eq = '\0';
    char *key = trim(text), *value = trim(eq + 1);
    /* Check every key on a scratch copy; apply only what is allowed. */
    mm_server_config_t scratch = *cfg;
    unsigned which;
    int rc = mm__config_set(&scratch, key, value, &which, err, cap);
    if (rc < 0 || !(which & allowed) || (which & skip))
        return rc;
    if (which == MM_CFG_STARTUP_ONLY) {
        char *copy = keep_string(value);
        if (!copy)
            return fail(err, cap, "out of memory reading '%s'", key);
        return mm__config_set(cfg, key, copy, &which, err, cap);
    }
    *cfg = scratch;
    return 0;
}

int mm__config_load(const char *path, mm_server_config_t *cfg, unsigned allowed, unsigned skip,
                    char *err, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        snprintf(err, cap, "cannot read %s: %s", path, strerror(e));
        return -e;
    }
    char line[1024], why[256];
    int rc = 0;
    for (unsigned n = 1; rc == 0 && fgets(line, sizeof line, f); n++) {
        rc = load_line(line, cfg, allowed, skip, why, sizeof why);
        if (rc < 0)
            snprintf(err, cap, "%s:%u: %s", path, n, why);
    }
    fclose(f);
    return rc;
}
